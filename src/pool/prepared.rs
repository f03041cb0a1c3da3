//! The proxy-wide prepared statements that exist on one server connection, bounded: past the
//! limit the least recently used one is closed, except statements used since the connection
//! was last quiet (outside a transaction with nothing in flight): a portal made from one of
//! those may still be open, and the protocol says closing a statement closes its portals.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use crate::session::statements::Statement;

/// Statement ids prepared on a server connection, with when each was last used.
#[derive(Debug, Default)]
pub struct Prepared {
    /// Statement id → use stamp, the statement (to tell whether any client still has it), and
    /// whether it was prepared while a schema change was in flight (its row shape is then
    /// checked before a client that described it uses it: see session/shapes.rs).
    used: HashMap<u64, (u64, Weak<Statement>, bool)>,
    /// Advances on every use.
    clock: u64,
    /// Stamp when the connection was last quiet: later uses are protected from eviction.
    batch_start: u64,
    /// Evicted statements whose Close an error before it made the server skip: still there,
    /// closed at the next eviction.
    orphans: Vec<u64>,
}

impl Prepared {
    /// Whether `id` is prepared here; marks it used.
    pub fn touch(&mut self, id: u64) -> bool {
        self.clock += 1;
        match self.used.get_mut(&id) {
            Some((stamp, _, _)) => {
                *stamp = self.clock;
                true
            }
            None => false,
        }
    }

    /// Whether `id` is prepared here and was not while a schema change was in flight; marks
    /// it used.
    pub fn trusted(&mut self, id: u64) -> bool {
        self.touch(id) && self.used.get(&id).is_some_and(|(_, _, suspect)| !suspect)
    }

    /// Records `stmt` as prepared (and used now), `suspect` if a schema change is in flight.
    /// False if it already was.
    pub fn insert(&mut self, stmt: &Arc<Statement>, suspect: bool) -> bool {
        self.clock += 1;
        self.used
            .insert(stmt.id, (self.clock, Arc::downgrade(stmt), suspect))
            .is_none()
    }

    /// Removes the statements no client has prepared any more and returns their ids (for
    /// the caller to close on the server).
    pub fn take_unheld(&mut self) -> Vec<u64> {
        let gone: Vec<u64> = self
            .used
            .iter()
            .filter(|(_, (_, s, _))| !Statement::is_held(s))
            .map(|(&id, _)| id)
            .collect();
        for id in &gone {
            self.used.remove(id);
        }
        gone
    }

    /// Forgets `id` (its Parse failed, or it is being closed). False if it was not here.
    pub fn remove(&mut self, id: u64) -> bool {
        self.used.remove(&id).is_some()
    }

    /// The server skipped the Close of evicted statement `id`: it is closed again at the next
    /// eviction, unless prepared here again meanwhile.
    pub fn orphan(&mut self, id: u64) {
        if !self.used.contains_key(&id) {
            self.orphans.push(id);
        }
    }

    /// Forgets everything (the server session was reset).
    pub fn clear(&mut self) {
        self.orphans.clear();
        self.used.clear();
    }

    /// Number of statements prepared here.
    pub fn len(&self) -> usize {
        self.used.len()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.used.is_empty()
    }

    /// The connection is quiet: no portal exists, every statement used so far may go.
    pub fn mark_quiet(&mut self) {
        self.batch_start = self.clock;
    }

    /// While more than `max` are prepared, removes the least recently used one not used since
    /// the connection was last quiet and returns its id (for the caller to close on the
    /// server).
    pub fn evict(&mut self, max: usize) -> Option<u64> {
        while let Some(id) = self.orphans.pop() {
            if !self.used.contains_key(&id) {
                return Some(id);
            }
        }
        if self.used.len() <= max {
            return None;
        }
        let (&id, _) = self
            .used
            .iter()
            .filter(|(_, (stamp, _, _))| *stamp <= self.batch_start)
            .min_by_key(|(_, (stamp, _, _))| *stamp)?;
        self.used.remove(&id);
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::statements::Registry;

    /// Statements with ids 1..=9 (`v[id - 1]`), kept alive by `v`.
    fn statements(r: &Registry) -> Vec<Arc<Statement>> {
        let v: Vec<_> = (1..=9)
            .map(|i| r.intern(format!("select {i}").as_bytes(), b"", b""))
            .collect();
        assert!(v.iter().enumerate().all(|(i, s)| s.id == i as u64 + 1));
        v
    }

    #[test]
    fn copies_prepared_during_a_schema_change_are_not_trusted() {
        let r = Registry::default();
        let v = statements(&r);
        let mut p = Prepared::default();
        p.insert(&v[0], false);
        p.insert(&v[1], true);
        assert!(p.trusted(1));
        assert!(!p.trusted(2) && p.touch(2), "present, not trusted");
        assert!(!p.trusted(3), "absent");
        // Checked again, with no change in flight: trusted.
        assert!(!p.insert(&v[1], false));
        assert!(p.trusted(2));
    }

    #[test]
    fn evicts_least_recently_used_beyond_the_limit() {
        let r = Registry::default();
        let v = statements(&r);
        let mut p = Prepared::default();
        for id in 1..=3 {
            assert!(p.insert(&v[id as usize - 1], false));
        }
        p.mark_quiet();
        assert!(p.touch(1));
        assert!(!p.touch(9));
        assert_eq!(p.evict(3), None, "at the limit nothing goes");
        p.mark_quiet();
        assert!(p.insert(&v[4 - 1], false));
        assert_eq!(p.evict(3), Some(2), "2 is the least recently used");
        assert_eq!(p.evict(3), None);
        assert_eq!(p.len(), 3);
        assert!(p.touch(1) && p.touch(3) && p.touch(4) && !p.touch(2));
    }

    #[test]
    fn a_skipped_close_is_sent_again_at_the_next_eviction() {
        let r = Registry::default();
        let v = statements(&r);
        let mut p = Prepared::default();
        for id in 1..=3 {
            p.insert(&v[id as usize - 1], false);
        }
        p.mark_quiet();
        p.insert(&v[4 - 1], false);
        assert_eq!(p.evict(3), Some(1));
        // Its Close was skipped: closed again first thing next time, even under the limit.
        p.orphan(1);
        assert_eq!(p.evict(3), Some(1));
        assert_eq!(p.evict(3), None);
        // Unless prepared again meanwhile (then it is as the server has it), or reset.
        p.orphan(1);
        p.insert(&v[1 - 1], false);
        assert_eq!(p.evict(9), None);
        p.orphan(2);
        assert_eq!(p.evict(9), None, "2 is prepared: no orphan");
        p.mark_quiet();
        assert_eq!(p.evict(2), Some(2));
        p.orphan(2);
        p.clear();
        assert_eq!(p.evict(9), None);
    }

    #[test]
    fn never_evicts_what_the_current_batch_uses() {
        let r = Registry::default();
        let v = statements(&r);
        let mut p = Prepared::default();
        p.insert(&v[1 - 1], false);
        p.insert(&v[2 - 1], false);
        // Same batch: both protected, the set grows past the limit for now.
        assert_eq!(p.evict(1), None);
        assert_eq!(p.len(), 2);
        p.mark_quiet();
        p.insert(&v[3 - 1], false);
        assert_eq!(p.evict(1), Some(1));
        assert_eq!(p.evict(1), Some(2));
        assert_eq!(p.evict(1), None, "3 belongs to the current batch");
        p.remove(3);
        assert!(p.is_empty());
        p.insert(&v[5 - 1], false);
        p.clear();
        assert!(p.is_empty());
    }

    #[test]
    fn statements_no_client_holds_are_taken_out() {
        let r = Registry::default();
        let mut v = statements(&r);
        let mut p = Prepared::default();
        for s in &v[..3] {
            p.insert(s, false);
        }
        // Clients hold 1 and 2 (a second reference each, as a client's map would); 3 is only
        // in the registry.
        let held: Vec<_> = v[..2].to_vec();
        v.truncate(0);
        let mut gone = p.take_unheld();
        gone.sort();
        assert_eq!(gone, [3]);
        assert_eq!(p.len(), 2);
        drop(held);
        let mut gone = p.take_unheld();
        gone.sort();
        assert_eq!(gone, [1, 2]);
        assert!(p.is_empty());
    }
}
