//! Which client holds which server process. In transaction pooling a client's NOTIFY runs on
//! whatever server connection it has at the time, so the notification a listener receives names
//! that server process; the listener must see the process id the notifying client was given
//! instead, as it would with PostgreSQL. Every server connection that served a client has an
//! entry here, keyed by backend and server pid, holding the issued pid of its latest client:
//! set with one atomic store per checkout, read only when a notification arrives. An entry
//! outlives its connection by [`AFTERLIFE`]: a notification is delivered when the listener's
//! transaction ends, by when the notifier's connection may be gone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long an entry is kept after its connection closed.
pub const AFTERLIFE: Duration = Duration::from_secs(600);

/// The latest client's pid, and when the connection closed.
type Entry = (Arc<AtomicI32>, Option<Instant>);
type Map = HashMap<(Arc<str>, i32), Entry>;

/// Sweeps never run below this size.
const MIN_SWEEP: usize = 1024;

/// All entries (one per server connection that has served a client).
pub struct Holders {
    map: Arc<Mutex<Map>>,
    /// Size at which the next registration sweeps (so sweeping stays amortised O(1)).
    sweep_at: AtomicUsize,
}

impl Default for Holders {
    fn default() -> Self {
        Holders {
            map: Arc::default(),
            sweep_at: AtomicUsize::new(MIN_SWEEP),
        }
    }
}

/// A server connection's entry; removed when the connection is dropped.
pub struct Holder {
    map: Arc<Mutex<Map>>,
    key: (Arc<str>, i32),
    client: Arc<AtomicI32>,
}

impl Holders {
    /// The entry of server process `pid` on `backend`.
    pub fn register(&self, backend: Arc<str>, pid: i32) -> Holder {
        let client = Arc::new(AtomicI32::new(0));
        let key = (backend, pid);
        let mut map = self.map.lock().expect("holders");
        if map.len() >= self.sweep_at.load(Ordering::Relaxed) {
            drop(map);
            self.sweep(Instant::now());
            map = self.map.lock().expect("holders");
            self.sweep_at
                .store((map.len() * 2).max(MIN_SWEEP), Ordering::Relaxed);
        }
        map.insert(key.clone(), (client.clone(), None));
        drop(map);
        Holder {
            map: self.map.clone(),
            key,
            client,
        }
    }

    /// Drops the entries of connections closed more than [`AFTERLIFE`] before `now`.
    fn sweep(&self, now: Instant) {
        let mut map = self.map.lock().expect("holders");
        map.retain(|_, (_, closed)| closed.is_none_or(|t| now.duration_since(t) < AFTERLIFE));
    }

    /// How many entries exist (tests).
    pub fn len(&self) -> usize {
        self.map.lock().expect("holders").len()
    }

    /// Whether no entry exists (tests).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Holder {
    /// The connection now serves the client given process id `client_pid`.
    pub fn set(&self, client_pid: i32) {
        self.client.store(client_pid, Ordering::Relaxed);
    }

    /// The issued pid of the client that last held server process `pid` on this entry's
    /// backend, if any did.
    pub fn client_of(&self, pid: i32) -> Option<i32> {
        let map = self.map.lock().expect("holders");
        let c = map
            .get(&(self.key.0.clone(), pid))?
            .0
            .load(Ordering::Relaxed);
        (c != 0).then_some(c)
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        if let Ok(mut map) = self.map.lock() {
            // (A newer connection may have the same pid already: the old process ended.)
            if let Some((c, closed)) = map.get_mut(&self.key) {
                if Arc::ptr_eq(c, &self.client) {
                    *closed = Some(Instant::now());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_server_pids_to_their_latest_client() {
        let h = Holders::default();
        let a = h.register("pg1".into(), 100);
        let b = h.register("pg1".into(), 200);
        let other = h.register("pg2".into(), 100);
        assert_eq!(a.client_of(200), None, "never held");
        b.set(7);
        a.set(9);
        other.set(11);
        assert_eq!(a.client_of(200), Some(7));
        assert_eq!(b.client_of(100), Some(9), "same backend only");
        assert_eq!(other.client_of(100), Some(11));
        assert_eq!(a.client_of(300), None);
        b.set(8);
        assert_eq!(a.client_of(200), Some(8));
        drop(b);
        assert_eq!(
            a.client_of(200),
            Some(8),
            "kept after its connection closed"
        );
        assert_eq!(h.len(), 3);
    }

    #[test]
    fn entries_of_closed_connections_go_after_their_afterlife() {
        let h = Holders::default();
        let a = h.register("pg1".into(), 100);
        drop(h.register("pg1".into(), 200));
        h.sweep(Instant::now());
        assert_eq!(h.len(), 2, "within its afterlife");
        h.sweep(Instant::now() + AFTERLIFE + Duration::from_secs(1));
        assert_eq!(h.len(), 1, "the closed one was dropped, the open one kept");
        assert_eq!(a.client_of(200), None);
        assert_eq!(a.client_of(100), None, "open, never held by a client");
    }

    #[test]
    fn an_old_entry_does_not_remove_a_newer_one_for_the_same_pid() {
        let h = Holders::default();
        let old = h.register("pg1".into(), 100);
        let new = h.register("pg1".into(), 100);
        new.set(5);
        drop(old);
        assert_eq!(new.client_of(100), Some(5));
        assert_eq!(
            h.map.lock().unwrap()[&("pg1".into(), 100)].1,
            None,
            "still open"
        );
    }
}
