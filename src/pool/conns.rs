//! A pool's connections and the policy that picks one: the idle list with its affinity
//! ([`Conns::take`]), the count of connections being opened, and the registry of open
//! sockets a backend declared down is severed through.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::{clock, ServerConn};

/// First pause before opening again after the server said it has no slot left.
const FULL_BACKOFF_MS: u64 = 100;
/// Longest such pause.
const FULL_BACKOFF_MAX_MS: u64 = 2000;

/// A pool's connections: idle ones, and the socket of every open one (so that a backend the
/// monitor declared down can have every in-flight request on it failed at once, instead of
/// each waiting for TCP to notice). Sockets are registered when a connection opens and removed
/// when it closes, so checkout and checkin only move a pointer.
#[derive(Default)]
pub(super) struct Conns {
    /// Boxed so a checkout or checkin moves a pointer, not the whole connection state.
    #[allow(clippy::vec_box)]
    pub(super) idle: Vec<Box<ServerConn>>,
    /// Each open connection's socket, with when it was opened ([`clock`] milliseconds).
    pub(super) sockets: HashMap<RawFd, u64>,
    /// Connections being opened (counted against the pool size with `sockets`).
    pub(super) opening: usize,
    /// How many times the pool was severed: a connection whose opening began before the
    /// latest sever is not registered (it may reach a server declared down or fenced).
    pub(super) severs: u64,
    /// The server refused a new connection for want of slots (53300: `max_connections`, or
    /// the role's or the database's connection limit): until one opens again, checkouts take
    /// the pool's idle connections, waiting for one to come back, and only one tries to open
    /// another now and then.
    pub(super) full: Option<Full>,
    /// Woken when, with `full` set, a connection comes back idle or one closes (a slot on the
    /// server is free).
    pub(super) returned: Arc<Notify>,
}

/// The state of a pool whose server has no connection slot left for it.
pub(super) struct Full {
    /// When ([`clock`] ms) the next opening may be tried.
    pub until: u64,
    /// How long the one after waits.
    pub backoff: u64,
    /// What the server said.
    pub message: String,
}

impl Conns {
    /// The server refused an opening for want of slots: openings wait, longer each time.
    pub(super) fn server_full(&mut self, message: String) {
        let backoff = self.full.as_ref().map_or(FULL_BACKOFF_MS, |f| {
            (f.backoff * 2).min(FULL_BACKOFF_MAX_MS)
        });
        self.full = Some(Full {
            until: clock::now_ms() + backoff,
            backoff,
            message,
        });
    }

    /// A connection opened, or one closed (a slot is free): whoever waits looks again.
    pub(super) fn slot_freed(&mut self, opened: bool) {
        if let Some(f) = self.full.as_mut() {
            if opened {
                self.full = None;
            } else {
                f.until = 0;
            }
            self.returned.notify_waiters();
        }
    }

    /// With the server full: take an idle connection (`None`), open one now (a probe; others
    /// wait until the next), or wait until the returned time. With no connection open, none
    /// can come back: open (and fail as the server says, unless a slot freed up).
    fn open_while_full(&mut self) -> Option<Take> {
        let f = self.full.as_mut()?;
        if !self.idle.is_empty() {
            return None;
        }
        let now = clock::now_ms();
        if now < f.until && !self.sockets.is_empty() {
            return Some(Take::Wait(f.until));
        }
        f.until = now + f.backoff;
        self.opening += 1;
        Some(Take::Open)
    }
}

/// What checkout does when the client's own connection is not idle.
pub(super) enum Take {
    /// This idle connection.
    Idle(Box<ServerConn>),
    /// Open a new connection (the caller holds an [`Opening`] slot).
    Open,
    /// The server has no slot left and nothing is idle: wait for a connection to come back
    /// (see [`Conns::returned`]), at most until this time ([`clock`] ms), then look again.
    Wait(u64),
}

impl Conns {
    /// Picks a connection for `owner` (0: nobody in particular): its own idle one; else the
    /// most recently used idle one that no connected client owns; else a new one while the
    /// pool has room; else the idle one unused the longest (its client is the least likely
    /// to be back soon). For a `login`, a free connection whose process id was given to a
    /// client before comes after a new one, and among those the one given out longest ago.
    pub(super) fn take(&mut self, owner: u64, size: usize, login: bool) -> Take {
        if login {
            return self.take_for_login(size);
        }
        let mut free = None;
        for (i, c) in self.idle.iter().enumerate().rev() {
            if owner != 0 && c.owner == owner {
                return Take::Idle(self.idle.remove(i));
            }
            if c.owner == 0 && free.is_none() {
                free = Some(i);
                if owner == 0 {
                    break;
                }
            }
        }
        if let Some(i) = free {
            return Take::Idle(self.idle.remove(i));
        }
        if self.idle.is_empty() || self.sockets.len() + self.opening < size {
            if let Some(t) = self.open_while_full() {
                return t;
            }
            if self.full.is_none() {
                self.opening += 1;
                return Take::Open;
            }
        }
        Take::Idle(self.idle.remove(0))
    }

    fn take_for_login(&mut self, size: usize) -> Take {
        if let Some(i) = self.idle.iter().rposition(|c| c.owner == 0 && c.told == 0) {
            return Take::Idle(self.idle.remove(i));
        }
        if self.idle.is_empty() || self.sockets.len() + self.opening < size {
            if let Some(t) = self.open_while_full() {
                return t;
            }
            if self.full.is_none() {
                self.opening += 1;
                return Take::Open;
            }
        }
        let oldest = self
            .idle
            .iter()
            .enumerate()
            .filter(|(_, c)| c.owner == 0)
            .min_by_key(|(_, c)| c.told)
            .map_or(0, |(i, _)| i);
        Take::Idle(self.idle.remove(oldest))
    }
}

/// A connection being opened; holds its place in the pool's count until it is registered.
pub(super) struct Opening(pub(super) Arc<Mutex<Conns>>);

impl Drop for Opening {
    fn drop(&mut self) {
        if let Ok(mut c) = self.0.lock() {
            c.opening -= 1;
        }
    }
}

/// Registration of an open connection's socket; removed when the connection is dropped.
pub struct SocketGuard {
    pub(super) conns: Arc<Mutex<Conns>>,
    pub(super) fd: RawFd,
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        if let Ok(mut c) = self.conns.lock() {
            c.sockets.remove(&self.fd);
            c.slot_freed(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_server_makes_checkouts_wait_with_one_probe_at_a_time() {
        let mut c = Conns::default();
        assert!(matches!(c.take(1, 10, false), Take::Open));
        c.opening -= 1;
        // Two connections open, in use; the server refuses a third.
        c.sockets.insert(7, 0);
        c.sockets.insert(8, 0);
        c.server_full("too many connections for role \"x\"".into());
        let until = match c.take(1, 10, false) {
            Take::Wait(until) => until,
            _ => panic!("a checkout opened while the server is full"),
        };
        assert!(matches!(c.take(2, 10, true), Take::Wait(u) if u == until));
        // The pause over, one checkout tries again; the next waits for the one after.
        c.full.as_mut().unwrap().until = 0;
        assert!(matches!(c.take(1, 10, false), Take::Open));
        assert_eq!(c.opening, 1);
        assert!(matches!(c.take(2, 10, false), Take::Wait(_)));
        // It failed as well: the pause doubles.
        c.opening -= 1;
        c.server_full("again".into());
        assert_eq!(c.full.as_ref().unwrap().backoff, 2 * FULL_BACKOFF_MS);
        // A connection closing frees a slot on the server: try at once.
        c.sockets.remove(&8);
        c.slot_freed(false);
        assert!(matches!(c.take(1, 10, false), Take::Open));
        c.opening -= 1;
        // One opened: the pool grows as usual again.
        c.slot_freed(true);
        assert!(c.full.is_none());
        assert!(matches!(c.take(1, 10, false), Take::Open));
        c.opening -= 1;
        // With none of its connections open, a full pool has nothing to wait for.
        c.sockets.clear();
        c.server_full("none".into());
        assert!(matches!(c.take(1, 10, false), Take::Open));
    }
}
