//! Read-your-writes watermarks: the WAL position a read must see, per scope.
//!
//! When a write commits, the session reads the primary's WAL insert position (after the
//! client already has its answer, so off the critical path) and raises the watermarks of its
//! session, its user and the whole proxy. Between the commit reaching the client and that
//! position being known, `in_flight` is raised so reads in the same scope go to the primary.
//!
//! A watermark remembers the timeline its position was recorded on. After a failover, a
//! position from the old timeline past where the new primary began is a write lost with the
//! old primary: no server will ever replay it, and waiting for it would send the scope's reads
//! to the primary for good. Such a position is lowered to where the new timeline began.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use crate::cluster::Epoch;
use crate::config::RywScope;

/// One scope's watermark.
#[derive(Debug, Default)]
pub struct Watermark {
    /// The position and the timeline it was recorded on, changed under one lock: a new
    /// timeline's commit must never be lowered as an old timeline's position.
    at: Mutex<Position>,
    /// Copies of `at` for readers (lock-free while the timeline is current): the position,
    /// then the timeline, stored in that order.
    lsn: AtomicU64,
    timeline: AtomicU32,
    in_flight: AtomicUsize,
}

#[derive(Debug, Default, Clone, Copy)]
struct Position {
    lsn: u64,
    /// The timeline (and its start) `lsn` was recorded on.
    epoch: Epoch,
}

impl Position {
    /// Moves a position recorded on an older timeline onto `epoch`'s: lowered to where that
    /// timeline began when it is past it.
    fn settle(&mut self, epoch: Epoch) {
        if self.epoch.timeline < epoch.timeline {
            self.lsn = self.lsn.min(epoch.start_lsn);
            self.epoch = epoch;
        }
    }

    /// Raises the position to `lsn`, read from the primary of `epoch`.
    fn raise(&mut self, lsn: u64, epoch: Epoch) {
        self.settle(epoch);
        // Read on an older timeline than one already seen (the commit's answer came from the
        // old primary, the failover was noticed meanwhile): lowered the same way.
        let lsn = if epoch.timeline < self.epoch.timeline {
            lsn.min(self.epoch.start_lsn)
        } else {
            lsn
        };
        self.lsn = self.lsn.max(lsn);
    }
}

impl Watermark {
    /// The LSN reads must have replayed, or `None` when a commit's position is not yet known
    /// (then only the primary is safe).
    pub fn required(&self, epoch: Epoch) -> Option<u64> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        if self.timeline.load(Ordering::Acquire) < epoch.timeline {
            let mut at = self.lock();
            at.settle(epoch);
            self.publish(&at);
        }
        Some(self.lsn.load(Ordering::Acquire))
    }

    /// A commit was reported to the client; its position is being read.
    pub fn begin_commit(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    /// The commit's position is known, read from the primary of `epoch` (the view when the
    /// commit was reported), or `None`: lost, give up waiting for it.
    pub fn end_commit(&self, lsn: Option<u64>, epoch: Epoch) {
        if let Some(l) = lsn {
            let mut at = self.lock();
            at.raise(l, epoch);
            self.publish(&at);
        }
        let _ = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// Makes `at` (locked) what readers see.
    fn publish(&self, at: &Position) {
        self.lsn.store(at.lsn, Ordering::Release);
        self.timeline.store(at.epoch.timeline, Ordering::Release);
    }

    /// The position (nothing panics while holding it).
    fn lock(&self) -> MutexGuard<'_, Position> {
        self.at.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// All watermarks.
#[derive(Default)]
pub struct Ryw {
    users: RwLock<HashMap<String, Arc<Watermark>>>,
    global: Arc<Watermark>,
}

impl Ryw {
    /// The watermark of a user (created on first use).
    pub fn user(&self, name: &str) -> Arc<Watermark> {
        if let Some(w) = self.users.read().expect("ryw").get(name) {
            return w.clone();
        }
        self.users
            .write()
            .expect("ryw")
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    /// The proxy-wide watermark.
    pub fn global(&self) -> Arc<Watermark> {
        self.global.clone()
    }
}

/// A session's three watermarks.
pub struct Scopes {
    pub session: Arc<Watermark>,
    pub user: Arc<Watermark>,
    pub global: Arc<Watermark>,
    /// The cluster's epoch when the pending commit was reported (its position is read there).
    commit_epoch: Epoch,
    /// A commit was reported to the client and its position is not known yet: counted once
    /// in each watermark, however many commits it stands for, until [`Scopes::end_commit`]
    /// (or the session's end) uncounts it.
    pending: bool,
}

impl Scopes {
    /// A session's watermarks: its own, and the shared ones of its user and of the proxy.
    pub fn new(ryw: &Ryw, user: &str) -> Scopes {
        Scopes {
            session: Arc::default(),
            user: ryw.user(user),
            global: ryw.global(),
            commit_epoch: Epoch::default(),
            pending: false,
        }
    }

    /// The watermark that governs reads under `scope`.
    pub fn for_reads(&self, scope: RywScope) -> &Watermark {
        match scope {
            RywScope::Session => &self.session,
            RywScope::User => &self.user,
            RywScope::Global => &self.global,
        }
    }

    /// A commit was reported to the client, with the cluster on `epoch`. While an earlier
    /// one's position is still unknown, this one joins it: the position read back for them
    /// is read after both.
    pub fn begin_commit(&mut self, epoch: Epoch) {
        if std::mem::replace(&mut self.pending, true) {
            return;
        }
        self.commit_epoch = epoch;
        self.session.begin_commit();
        self.user.begin_commit();
        self.global.begin_commit();
    }

    /// Whether a commit's position is waited for.
    pub fn commit_pending(&self) -> bool {
        self.pending
    }

    /// The pending commit's position is known, or `None`: lost (nothing pending: no-op).
    pub fn end_commit(&mut self, lsn: Option<u64>) {
        if !std::mem::take(&mut self.pending) {
            return;
        }
        let epoch = self.commit_epoch;
        self.session.end_commit(lsn, epoch);
        self.user.end_commit(lsn, epoch);
        self.global.end_commit(lsn, epoch);
    }
}

impl Scopes {
    /// Hands the pending commit over to whoever learns its position otherwise: the cleanup
    /// after a client that wrote and left before the position was read back, or the health
    /// probes after the connection reading it was lost. The watermarks stay waiting for it.
    pub fn hand_off(&mut self) -> Option<CommitInFlight> {
        if !std::mem::take(&mut self.pending) {
            return None;
        }
        Some(CommitInFlight {
            session: self.session.clone(),
            user: self.user.clone(),
            global: self.global.clone(),
            epoch: self.commit_epoch,
            ended: false,
        })
    }
}

/// A commit whose position is still being read, outliving its session (see
/// [`Scopes::hand_off`]). Dropped without [`CommitInFlight::resolve`], it is given up.
pub struct CommitInFlight {
    session: Arc<Watermark>,
    user: Arc<Watermark>,
    global: Arc<Watermark>,
    epoch: Epoch,
    ended: bool,
}

impl CommitInFlight {
    /// The cluster's epoch when the commit was reported.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The position is known (or `None`: lost).
    pub fn resolve(mut self, lsn: Option<u64>) {
        self.end(lsn);
    }

    fn end(&mut self, lsn: Option<u64>) {
        if !std::mem::replace(&mut self.ended, true) {
            self.session.end_commit(lsn, self.epoch);
            self.user.end_commit(lsn, self.epoch);
            self.global.end_commit(lsn, self.epoch);
        }
    }
}

impl Drop for CommitInFlight {
    fn drop(&mut self) {
        self.end(None);
    }
}

impl Drop for Scopes {
    /// A session that ends (or whose task dies) with a commit pending must not hold its
    /// user's and the proxy's reads on the primary for good.
    fn drop(&mut self) {
        self.end_commit(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const E1: Epoch = Epoch {
        timeline: 1,
        start_lsn: 0,
    };

    #[test]
    fn a_commit_handed_off_still_raises_the_shared_watermarks() {
        let ryw = Ryw::default();
        let mut s = Scopes::new(&ryw, "app");
        s.begin_commit(E1);
        let c = s.hand_off().expect("pending");
        drop(s);
        let user = ryw.user("app");
        assert_eq!(
            user.required(E1),
            None,
            "still waited for after the session"
        );
        assert_eq!(ryw.global().required(E1), None);
        c.resolve(Some(700));
        assert_eq!(user.required(E1), Some(700));
        assert_eq!(ryw.global().required(E1), Some(700));

        let mut s = Scopes::new(&ryw, "app");
        assert!(s.hand_off().is_none(), "nothing pending");
        s.begin_commit(E1);
        drop(s.hand_off());
        assert_eq!(user.required(E1), Some(700), "given up when dropped");
        drop(s);
        assert_eq!(user.required(E1), Some(700));
    }

    #[test]
    fn commit_in_flight_blocks_until_known() {
        let w = Watermark::default();
        assert_eq!(w.required(E1), Some(0));
        w.begin_commit();
        assert_eq!(w.required(E1), None);
        w.end_commit(Some(500), E1);
        assert_eq!(w.required(E1), Some(500));
        w.begin_commit();
        w.end_commit(Some(100), E1);
        assert_eq!(w.required(E1), Some(500), "watermarks never go back");
        w.end_commit(None, E1);
        assert_eq!(w.required(E1), Some(500), "no underflow");
    }

    #[test]
    fn scopes_share_user_and_global() {
        let r = Ryw::default();
        let mut a = Scopes::new(&r, "u");
        let b = Scopes::new(&r, "u");
        let c = Scopes::new(&r, "v");
        a.begin_commit(E1);
        a.end_commit(Some(42));
        assert_eq!(b.for_reads(RywScope::User).required(E1), Some(42));
        assert_eq!(b.for_reads(RywScope::Session).required(E1), Some(0));
        assert_eq!(c.for_reads(RywScope::User).required(E1), Some(0));
        assert_eq!(c.for_reads(RywScope::Global).required(E1), Some(42));
    }

    #[test]
    fn pipelined_commits_are_counted_once_and_a_session_end_uncounts_them() {
        let r = Ryw::default();
        let mut a = Scopes::new(&r, "u");
        let other = Scopes::new(&r, "u");
        // Two requests commit before the position is read back once for both.
        a.begin_commit(E1);
        a.begin_commit(E1);
        assert!(a.commit_pending());
        assert_eq!(other.for_reads(RywScope::User).required(E1), None);
        a.end_commit(Some(7));
        assert!(!a.commit_pending());
        assert_eq!(other.for_reads(RywScope::User).required(E1), Some(7));
        assert_eq!(other.for_reads(RywScope::Global).required(E1), Some(7));
        a.end_commit(None);
        assert_eq!(other.for_reads(RywScope::Global).required(E1), Some(7));
        // A session gone with a commit pending does not hold the shared scopes.
        a.begin_commit(E1);
        assert_eq!(other.for_reads(RywScope::Global).required(E1), None);
        drop(a);
        assert_eq!(other.for_reads(RywScope::User).required(E1), Some(7));
        assert_eq!(other.for_reads(RywScope::Global).required(E1), Some(7));
    }

    #[test]
    fn a_position_lost_with_the_old_primary_is_lowered_to_the_new_timeline_start() {
        let w = Watermark::default();
        w.begin_commit();
        w.end_commit(Some(9_000), E1);
        // The new primary began at 5_000: the write at 9_000 on timeline 1 never reached it.
        let e2 = Epoch {
            timeline: 2,
            start_lsn: 5_000,
        };
        assert_eq!(w.required(e2), Some(5_000));
        // Commits on the new timeline raise it as usual, even past the old position...
        w.begin_commit();
        w.end_commit(Some(6_000), e2);
        assert_eq!(w.required(e2), Some(6_000));
        w.begin_commit();
        w.end_commit(Some(12_000), e2);
        assert_eq!(
            w.required(e2),
            Some(12_000),
            "never lowered again on its own timeline"
        );
        // A position below the new timeline's start is history the new primary has: kept.
        let v = Watermark::default();
        v.begin_commit();
        v.end_commit(Some(4_000), E1);
        assert_eq!(v.required(e2), Some(4_000));
        // A commit read on the old timeline that completes after the failover was seen (its
        // answer came from the old primary): lowered like the rest.
        let u = Watermark::default();
        u.begin_commit();
        u.end_commit(Some(9_000), E1);
        assert_eq!(u.required(e2), Some(5_000));
        u.begin_commit();
        u.end_commit(Some(9_500), E1);
        assert_eq!(u.required(e2), Some(5_000));
        // An unknown start (u64::MAX) lowers nothing.
        let unknown = Epoch {
            timeline: 3,
            start_lsn: u64::MAX,
        };
        assert_eq!(u.required(unknown), Some(5_000));
    }
}
