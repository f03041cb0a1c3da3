//! The proxy-wide prepared statements that exist on one server connection, bounded: past the
//! limit the least recently used one is closed, except statements used since the connection
//! was last quiet (outside a transaction with nothing in flight): a portal made from one of
//! those may still be open, and the protocol says closing a statement closes its portals.

use std::collections::HashMap;

/// Statement ids prepared on a server connection, with when each was last used.
#[derive(Debug, Default)]
pub struct Prepared {
    /// Statement id → use stamp.
    used: HashMap<u64, u64>,
    /// Advances on every use.
    clock: u64,
    /// Stamp when the connection was last quiet: later uses are protected from eviction.
    batch_start: u64,
}

impl Prepared {
    /// Whether `id` is prepared here; marks it used.
    pub fn touch(&mut self, id: u64) -> bool {
        self.clock += 1;
        match self.used.get_mut(&id) {
            Some(stamp) => {
                *stamp = self.clock;
                true
            }
            None => false,
        }
    }

    /// Records `id` as prepared (and used now). False if it already was.
    pub fn insert(&mut self, id: u64) -> bool {
        self.clock += 1;
        self.used.insert(id, self.clock).is_none()
    }

    /// Forgets `id` (its Parse failed, or it is being closed). False if it was not here.
    pub fn remove(&mut self, id: u64) -> bool {
        self.used.remove(&id).is_some()
    }

    /// Forgets everything (the server session was reset).
    pub fn clear(&mut self) {
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
        if self.used.len() <= max {
            return None;
        }
        let (&id, _) = self
            .used
            .iter()
            .filter(|(_, &stamp)| stamp <= self.batch_start)
            .min_by_key(|(_, &stamp)| stamp)?;
        self.used.remove(&id);
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_beyond_the_limit() {
        let mut p = Prepared::default();
        for id in 1..=3 {
            assert!(p.insert(id));
        }
        p.mark_quiet();
        assert!(p.touch(1));
        assert!(!p.touch(9));
        assert_eq!(p.evict(3), None, "at the limit nothing goes");
        p.mark_quiet();
        assert!(p.insert(4));
        assert_eq!(p.evict(3), Some(2), "2 is the least recently used");
        assert_eq!(p.evict(3), None);
        assert_eq!(p.len(), 3);
        assert!(p.touch(1) && p.touch(3) && p.touch(4) && !p.touch(2));
    }

    #[test]
    fn never_evicts_what_the_current_batch_uses() {
        let mut p = Prepared::default();
        p.insert(1);
        p.insert(2);
        // Same batch: both protected, the set grows past the limit for now.
        assert_eq!(p.evict(1), None);
        assert_eq!(p.len(), 2);
        p.mark_quiet();
        p.insert(3);
        assert_eq!(p.evict(1), Some(1));
        assert_eq!(p.evict(1), Some(2));
        assert_eq!(p.evict(1), None, "3 belongs to the current batch");
        p.remove(3);
        assert!(p.is_empty());
        p.insert(5);
        p.clear();
        assert!(p.is_empty());
    }
}
