//! Standbys that left the primary's history. A standby that was ahead of the server promoted
//! in its place (asynchronous replication), or an old primary restarted as a standby without
//! `pg_rewind`, cannot follow the new timeline: PostgreSQL logs "new timeline forked off
//! current database system timeline before current recovery point" and the server stays in
//! hot standby, answering reads from a history the primary does not have. Its replay position
//! is then beyond the primary's, which a standby of that primary can never be (it replays only
//! what the primary has written), so the time lag would read as zero.
//!
//! The comparison must be with the primary's position *at the time* the standby answered: once
//! the new primary takes writes it soon passes the diverged standby, whose position then looks
//! like a lag. So a standby's answer is compared with a primary probe sent after it arrived,
//! and its last few answers are kept ([`KEPT`]): the probe that matters most is a newly
//! promoted server's first, which shows the position its timeline began near, before writes
//! reach it, and it may be out for several of the standby's probe intervals (a server ending
//! recovery on a loaded machine answers late), each bringing a newer answer.

use std::time::Instant;

use super::health::Observation;

/// What is known of each backend for telling a standby on another history.
#[derive(Debug, Default)]
pub struct Divergence {
    seen: Vec<Seen>,
}

/// A standby's answers kept: its positions over the last few probe intervals.
const KEPT: usize = 8;

#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    /// Its last [`KEPT`] probe answers since it started, the latest first.
    answers: [Option<Answer>; KEPT],
    /// Its postmaster's start time as last reported.
    started_us: Option<i64>,
    diverged: bool,
}

/// One probe answer of a backend.
#[derive(Debug, Clone, Copy)]
struct Answer {
    /// When it arrived: what it reported happened before.
    at: Instant,
    /// The position it had replayed (received, when replay is not known); none from a primary.
    replay: Option<u64>,
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
    /// or recreated from a base backup) or one that became a primary is judged afresh: what
    /// it had replayed before says nothing of it now.
    pub fn observed(&mut self, i: usize, at: Instant, o: &Observation) {
        let s = &mut self.seen[i];
        let restarted = s.started_us.is_some() && s.started_us != o.started_us;
        if o.primary || restarted {
            s.diverged = false;
            s.answers = [None; KEPT];
        }
        s.started_us = o.started_us;
        let replay = (!o.primary)
            .then(|| o.replay_lsn.or(o.receive_lsn))
            .flatten();
        s.answers.rotate_right(1);
        s.answers[0] = Some(Answer { at, replay });
    }

    /// Whether standby `i` is on another history than the primary probed at `primary` (when
    /// that probe was sent, and the position it reported): it is once it had replayed past
    /// that position in an answer that arrived before the probe was sent. It stays so until
    /// the server restarts. Returns whether it is diverged and, when that was found just now,
    /// the position it had replayed.
    pub fn check(&mut self, i: usize, primary: Option<(Instant, u64)>) -> (bool, Option<u64>) {
        let s = &mut self.seen[i];
        let mut found = None;
        if let Some((sent, lsn)) = primary.filter(|_| !s.diverged) {
            // (Its latest answer that came in before the probe was sent.)
            let before = s.answers.iter().flatten().find(|a| a.at < sent);
            found = before.and_then(|a| a.replay).filter(|&replay| replay > lsn);
            s.diverged = found.is_some();
        }
        (s.diverged, found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn standby(started: i64, replay: u64) -> Observation {
        Observation {
            started_us: Some(started),
            replay_lsn: Some(replay),
            ..Default::default()
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_standby_ahead_of_a_primary_asked_after_it_is_diverged_until_it_restarts() {
        let t0 = Instant::now();
        let later = t0 + ms(10);
        let mut d = Divergence::new(2);
        d.observed(1, t0, &standby(5, 200));
        // The primary was asked before the standby answered: it may have written more since.
        assert_eq!(d.check(1, Some((t0 - ms(1), 100))), (false, None));
        // Asked after: a standby of it cannot be ahead of it.
        assert_eq!(d.check(1, Some((later, 100))), (true, Some(200)));
        // Sticky, even once the primary has written past that position.
        d.observed(1, later, &standby(5, 200));
        assert_eq!(d.check(1, Some((later + ms(10), 300))), (true, None));
        // Restarted (rewound): judged afresh, and what it had replayed before is forgotten.
        d.observed(1, later + ms(20), &standby(6, 50));
        assert_eq!(d.check(1, Some((later + ms(30), 100))), (false, None));
    }

    #[test]
    fn a_standby_behind_or_level_with_the_primary_is_not_diverged() {
        let t0 = Instant::now();
        let after = Some((t0 + ms(1), 100));
        for replay in [100, 50] {
            let mut d = Divergence::new(1);
            d.observed(0, t0, &standby(5, replay));
            assert_eq!(d.check(0, after), (false, None));
        }
        let mut d = Divergence::new(1);
        d.observed(0, t0, &Observation::default());
        assert_eq!(d.check(0, after), (false, None), "replay unknown");
        d.observed(0, t0, &standby(5, 500));
        assert_eq!(d.check(0, None), (false, None), "no primary");
    }

    /// A new primary's first probe shows where its timeline began, before writes reach it.
    /// The standby's answer that came in while that probe was out is newer than the probe:
    /// the one before it is what the primary's position is compared with.
    #[test]
    fn a_standby_past_where_a_new_primary_began_is_diverged_though_it_answered_since() {
        let t0 = Instant::now();
        let (first_probe, answered_since) = (t0 + ms(5), t0 + ms(8));
        let mut d = Divergence::new(1);
        d.observed(0, t0, &standby(5, 200));
        d.observed(0, answered_since, &standby(5, 200));
        assert_eq!(d.check(0, Some((first_probe, 150))), (true, Some(200)));
    }

    /// The new primary's first probe was out for several of the standby's answers: the one
    /// from before it is still kept.
    #[test]
    fn a_slow_first_probe_of_a_new_primary_still_finds_the_standby_ahead() {
        let t0 = Instant::now();
        let mut d = Divergence::new(1);
        d.observed(0, t0, &standby(5, 200));
        let first_probe = t0 + ms(1);
        for n in 2..=KEPT as u64 {
            d.observed(0, t0 + ms(n), &standby(5, 200));
        }
        assert_eq!(d.check(0, Some((first_probe, 150))), (true, Some(200)));
    }

    /// A standby that follows the new primary passes where it began only after it began: its
    /// answer from before the primary's probe was behind it.
    #[test]
    fn a_standby_that_caught_up_with_a_new_primary_since_its_probe_is_not_diverged() {
        let t0 = Instant::now();
        let (first_probe, answered_since) = (t0 + ms(5), t0 + ms(8));
        let mut d = Divergence::new(1);
        d.observed(0, t0, &standby(5, 100));
        d.observed(0, answered_since, &standby(5, 200));
        assert_eq!(d.check(0, Some((first_probe, 150))), (false, None));
        // (Both answers after the probe: not judged by it.)
        let mut d = Divergence::new(1);
        d.observed(0, answered_since, &standby(5, 200));
        d.observed(0, answered_since + ms(1), &standby(5, 200));
        assert_eq!(d.check(0, Some((first_probe, 150))), (false, None));
    }

    #[test]
    fn a_promoted_standby_is_judged_afresh() {
        let t0 = Instant::now();
        let mut d = Divergence::new(1);
        d.carry(0);
        assert_eq!(d.check(0, None), (true, None));
        d.observed(
            0,
            t0,
            &Observation {
                primary: true,
                ..standby(5, 1)
            },
        );
        assert_eq!(d.check(0, Some((t0 + ms(1), 0))), (false, None));
    }
}
