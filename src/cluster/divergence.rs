//! Standbys that left the primary's history. A standby that was ahead of the server promoted
//! in its place (asynchronous replication), or an old primary restarted as a standby without
//! `pg_rewind`, cannot follow the new timeline: PostgreSQL logs "new timeline forked off
//! current database system timeline before current recovery point" and the server stays in
//! hot standby, answering reads from a history the primary does not have. Its replay position
//! is then beyond the primary's, which a standby of that primary can never be (it replays only
//! what the primary has written), so the time lag would read as zero.

use std::time::Instant;

use super::health::Observation;

/// What is known of each backend for telling a standby on another history.
#[derive(Debug, Default)]
pub struct Divergence {
    seen: Vec<Seen>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    /// When its last probe answer arrived: what it reported happened before.
    at: Option<Instant>,
    /// Its postmaster's start time as last reported.
    started_us: Option<i64>,
    diverged: bool,
}

impl Divergence {
    pub fn new(backends: usize) -> Divergence {
        Divergence {
            seen: vec![Seen::default(); backends],
        }
    }

    /// Backend `i` was found diverged before (a reload restarts the monitor).
    pub fn carry(&mut self, i: usize) {
        self.seen[i].diverged = true;
    }

    /// Notes a probe answer from backend `i` that arrived `at`. A restarted server (rewound,
    /// or recreated from a base backup) or one that became a primary is judged afresh.
    pub fn observed(&mut self, i: usize, at: Instant, o: &Observation) {
        let s = &mut self.seen[i];
        if o.primary || (s.started_us.is_some() && s.started_us != o.started_us) {
            s.diverged = false;
        }
        s.started_us = o.started_us;
        s.at = Some(at);
    }

    /// Whether standby `i`, which last reported having replayed up to `replay`, is on another
    /// history than the primary last seen at `primary` (when that probe was sent, and the
    /// position it reported): it is once the primary, asked after the standby answered, was
    /// behind the standby. It stays so until the server restarts. Returns (diverged, found
    /// just now).
    pub fn check(
        &mut self,
        i: usize,
        replay: Option<u64>,
        primary: Option<(Instant, u64)>,
    ) -> (bool, bool) {
        let s = &mut self.seen[i];
        let mut now = false;
        if let (Some(at), Some(r), Some((sent, lsn))) = (s.at, replay, primary) {
            if sent > at && r > lsn && !s.diverged {
                s.diverged = true;
                now = true;
            }
        }
        (s.diverged, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn standby(started: i64) -> Observation {
        Observation {
            started_us: Some(started),
            ..Default::default()
        }
    }

    #[test]
    fn a_standby_ahead_of_a_primary_asked_after_it_is_diverged_until_it_restarts() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_millis(10);
        let mut d = Divergence::new(2);
        d.observed(1, t0, &standby(5));
        // The primary was asked before the standby answered: it may have written more since.
        assert_eq!(
            d.check(1, Some(200), Some((t0 - Duration::from_millis(1), 100))),
            (false, false)
        );
        // Asked after: a standby of it cannot be ahead of it.
        assert_eq!(d.check(1, Some(200), Some((later, 100))), (true, true));
        // Sticky, even once the primary has written past that position.
        d.observed(1, later, &standby(5));
        assert_eq!(
            d.check(1, Some(200), Some((later + later.duration_since(t0), 300))),
            (true, false)
        );
        // Restarted (rewound): judged afresh.
        d.observed(1, later, &standby(6));
        assert_eq!(d.check(1, Some(200), Some((later, 300))), (false, false));
    }

    #[test]
    fn a_standby_behind_or_level_with_the_primary_is_not_diverged() {
        let t0 = Instant::now();
        let mut d = Divergence::new(1);
        d.observed(0, t0, &standby(5));
        let after = Some((t0 + Duration::from_millis(1), 100));
        assert_eq!(d.check(0, Some(100), after), (false, false));
        assert_eq!(d.check(0, Some(50), after), (false, false));
        assert_eq!(d.check(0, None, after), (false, false));
        assert_eq!(d.check(0, Some(500), None), (false, false));
    }

    #[test]
    fn a_promoted_standby_is_judged_afresh() {
        let t0 = Instant::now();
        let mut d = Divergence::new(1);
        d.carry(0);
        assert_eq!(d.check(0, Some(1), None), (true, false));
        d.observed(
            0,
            t0,
            &Observation {
                primary: true,
                ..standby(5)
            },
        );
        assert_eq!(d.check(0, Some(1), None), (false, false));
    }
}
