//! Read-your-writes watermarks: the WAL position a read must see, per scope.
//!
//! When a write commits, the session reads the primary's WAL insert position (after the
//! client already has its answer, so off the critical path) and raises the watermarks of its
//! session, its user and the whole proxy. Between the commit reaching the client and that
//! position being known, `in_flight` is raised so reads in the same scope go to the primary.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use crate::config::RywScope;

/// One scope's watermark.
#[derive(Debug, Default)]
pub struct Watermark {
    lsn: AtomicU64,
    in_flight: AtomicUsize,
}

impl Watermark {
    /// The LSN reads must have replayed, or `None` when a commit's position is not yet known
    /// (then only the primary is safe).
    pub fn required(&self) -> Option<u64> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            None
        } else {
            Some(self.lsn.load(Ordering::Acquire))
        }
    }

    /// A commit was reported to the client; its position is being read.
    pub fn begin_commit(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    /// The commit's position is known (or `None`: lost, give up waiting for it).
    pub fn end_commit(&self, lsn: Option<u64>) {
        if let Some(l) = lsn {
            self.lsn.fetch_max(l, Ordering::AcqRel);
        }
        let _ = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
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
    pub session: Watermark,
    pub user: Arc<Watermark>,
    pub global: Arc<Watermark>,
}

impl Scopes {
    /// The watermark that governs reads under `scope`.
    pub fn for_reads(&self, scope: RywScope) -> &Watermark {
        match scope {
            RywScope::Session => &self.session,
            RywScope::User => &self.user,
            RywScope::Global => &self.global,
        }
    }

    /// A commit was reported to the client.
    pub fn begin_commit(&self) {
        self.session.begin_commit();
        self.user.begin_commit();
        self.global.begin_commit();
    }

    /// The commit position is known (or lost).
    pub fn end_commit(&self, lsn: Option<u64>) {
        self.session.end_commit(lsn);
        self.user.end_commit(lsn);
        self.global.end_commit(lsn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_in_flight_blocks_until_known() {
        let w = Watermark::default();
        assert_eq!(w.required(), Some(0));
        w.begin_commit();
        assert_eq!(w.required(), None);
        w.end_commit(Some(500));
        assert_eq!(w.required(), Some(500));
        w.begin_commit();
        w.end_commit(Some(100));
        assert_eq!(w.required(), Some(500), "watermarks never go back");
        w.end_commit(None);
        assert_eq!(w.required(), Some(500), "no underflow");
    }

    #[test]
    fn scopes_share_user_and_global() {
        let r = Ryw::default();
        let a = Scopes {
            session: Watermark::default(),
            user: r.user("u"),
            global: r.global(),
        };
        let b = Scopes {
            session: Watermark::default(),
            user: r.user("u"),
            global: r.global(),
        };
        let c = Scopes {
            session: Watermark::default(),
            user: r.user("v"),
            global: r.global(),
        };
        a.begin_commit();
        a.end_commit(Some(42));
        assert_eq!(b.for_reads(RywScope::User).required(), Some(42));
        assert_eq!(b.for_reads(RywScope::Session).required(), Some(0));
        assert_eq!(c.for_reads(RywScope::User).required(), Some(0));
        assert_eq!(c.for_reads(RywScope::Global).required(), Some(42));
    }
}
