//! Replication lag without comparing two hosts' clocks: the monitor keeps a short history of
//! (local time, primary's current WAL LSN) and a replica's time lag is how long ago the primary
//! first reached the replica's replay LSN.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Samples of the primary's WAL position over time.
#[derive(Debug, Default, Clone)]
pub struct LsnHistory {
    samples: VecDeque<(Instant, u64)>,
    /// Old samples were dropped to stay within [`MAX_SAMPLES`]: a replica behind the oldest
    /// one kept is behind by more than the history tells.
    trimmed: bool,
}

/// How many samples to keep (at 1 s intervals, ten minutes).
const MAX_SAMPLES: usize = 600;

impl LsnHistory {
    /// Records the primary's current LSN observed at `at`.
    pub fn record(&mut self, at: Instant, lsn: u64) {
        if let Some(&(_, last)) = self.samples.back() {
            if lsn < last {
                // A new primary with a lower position: history no longer applies.
                self.clear();
            } else if lsn == last {
                return;
            }
        }
        self.samples.push_back((at, lsn));
        while self.samples.len() > MAX_SAMPLES {
            self.samples.pop_front();
            self.trimmed = true;
        }
    }

    /// The newest primary LSN known.
    pub fn latest(&self) -> Option<u64> {
        self.samples.back().map(|&(_, l)| l)
    }

    /// Time lag of a replica whose replay position is `replay` at `now`: zero when it has
    /// replayed everything the primary had; otherwise the age of the first sample beyond it.
    /// The flag says the lag is only a lower bound: the replica is behind even the oldest
    /// sample (the history began, or was cut, after the primary passed its position).
    pub fn time_lag(&self, replay: u64, now: Instant) -> (Duration, bool) {
        match self.samples.iter().position(|&(_, lsn)| lsn > replay) {
            None => (Duration::ZERO, false),
            Some(i) => (now.saturating_duration_since(self.samples[i].0), i == 0),
        }
    }

    /// Whether samples were dropped (see `trimmed`).
    pub fn trimmed(&self) -> bool {
        self.trimmed
    }

    /// Forgets everything (the primary changed).
    pub fn clear(&mut self) {
        self.samples.clear();
        self.trimmed = false;
    }
}

/// Parses PostgreSQL's `X/Y` LSN text form.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// Formats an LSN as PostgreSQL does.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_text_round_trip() {
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
        assert_eq!(parse_lsn("nope"), None);
    }

    #[test]
    fn time_lag_from_history() {
        let t0 = Instant::now();
        let mut h = LsnHistory::default();
        h.record(t0, 100);
        h.record(t0 + Duration::from_secs(1), 200);
        h.record(t0 + Duration::from_secs(2), 300);
        let now = t0 + Duration::from_secs(3);
        assert_eq!(h.time_lag(300, now), (Duration::ZERO, false));
        assert_eq!(h.time_lag(250, now), (Duration::from_secs(1), false));
        assert_eq!(h.time_lag(150, now), (Duration::from_secs(2), false));
        assert_eq!(h.time_lag(100, now), (Duration::from_secs(2), false));
        // Behind the oldest sample: at least that old, maybe much older.
        assert_eq!(h.time_lag(50, now), (Duration::from_secs(3), true));
        assert_eq!(h.latest(), Some(300));
    }

    #[test]
    fn time_lag_as_of_when_the_primary_was_last_seen() {
        let t0 = Instant::now();
        let mut h = LsnHistory::default();
        h.record(t0, 100);
        h.record(t0 + Duration::from_secs(1), 200);
        h.record(t0 + Duration::from_secs(2), 300);
        // The primary last seen at 2.5 s and lost: as of then, however long ago.
        let seen = t0 + Duration::from_millis(2500);
        assert_eq!(h.time_lag(300, seen), (Duration::ZERO, false));
        assert_eq!(h.time_lag(250, seen), (Duration::from_millis(500), false));
        assert_eq!(h.time_lag(150, seen), (Duration::from_millis(1500), false));
    }

    #[test]
    fn a_history_cut_to_size_says_so_until_cleared() {
        let t0 = Instant::now();
        let mut h = LsnHistory::default();
        for i in 0..MAX_SAMPLES as u64 {
            h.record(t0 + Duration::from_secs(i), 100 + i);
        }
        assert!(!h.trimmed(), "full, nothing dropped yet");
        h.record(
            t0 + Duration::from_secs(MAX_SAMPLES as u64),
            100 + MAX_SAMPLES as u64,
        );
        assert!(h.trimmed());
        h.record(t0 + Duration::from_secs(1000), 5);
        assert!(!h.trimmed(), "a new primary's history starts whole");
    }

    #[test]
    fn idle_primary_means_no_lag_and_regression_resets() {
        let t0 = Instant::now();
        let mut h = LsnHistory::default();
        h.record(t0, 100);
        h.record(t0 + Duration::from_secs(5), 100);
        assert_eq!(
            h.time_lag(100, t0 + Duration::from_secs(9)),
            (Duration::ZERO, false)
        );
        h.record(t0 + Duration::from_secs(6), 10);
        assert_eq!(h.latest(), Some(10));
        assert_eq!(
            h.time_lag(0, t0 + Duration::from_secs(7)),
            (Duration::from_secs(1), true)
        );
    }
}
