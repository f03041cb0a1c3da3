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
/// Longest such pause (and at most half of `checkout_timeout`, so that a checkout waiting for
/// the pool's connections sees at least one more try).
const FULL_BACKOFF_MAX_MS: u64 = 2000;
/// A refusal older than this is forgotten: the pool grows as usual again.
const FULL_FORGET_MS: u64 = 10_000;
/// After one of the pool's connections closes, the next try waits this long (the server
/// process may take a moment to exit and free its slot).
const FULL_AFTER_CLOSE_MS: u64 = 50;

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
    /// the role's or the database's connection limit): for a while, checkouts take the
    /// pool's idle connections or wait for one to come back, and one at a time tries to open
    /// another now and then.
    pub(super) full: Option<Full>,
    /// Woken when, with `full` set, a connection comes back idle, opens or closes.
    pub(super) returned: Arc<Notify>,
}

/// The state of a pool whose server has no connection slot left for it.
pub(super) struct Full {
    /// When ([`clock`] ms) the next opening may be tried.
    pub until: u64,
    /// How long the one after a failure waits.
    pub backoff: u64,
    /// When the server last refused ([`clock`] ms).
    pub refused_at: u64,
    /// What the server said.
    pub message: String,
}

/// With the server full, what a checkout that found no connection of its own does.
enum FullGate {
    /// Nothing known against opening: open as usual.
    Off,
    /// Take an idle connection (another client's).
    UseIdle,
    /// Try to open one (nobody else is trying).
    Probe,
    /// Wait for a connection to come back, at most until then ([`clock`] ms).
    Wait(u64),
}

impl Conns {
    /// The server refused an opening begun at `started` for want of slots: openings wait,
    /// twice as long as after the last refusal unless that one came while this opening was
    /// under way (concurrent refusals count once); at most `max_backoff`.
    pub(super) fn server_full(&mut self, message: String, started: u64, max_backoff: u64) {
        let now = clock::now_ms();
        let max_backoff = max_backoff.clamp(1, FULL_BACKOFF_MAX_MS);
        let backoff = match &self.full {
            Some(f) if started < f.refused_at => f.backoff,
            Some(f) => (f.backoff * 2).min(max_backoff),
            None => FULL_BACKOFF_MS.min(max_backoff),
        };
        self.full = Some(Full {
            until: now + backoff,
            backoff,
            refused_at: now,
            message,
        });
    }

    /// A connection opened (the server had a slot: the next may be tried at once, the pauses
    /// start over), or one closed (its slot frees up shortly): whoever waits looks again.
    pub(super) fn slot_freed(&mut self, opened: bool) {
        if let Some(f) = self.full.as_mut() {
            if opened {
                f.until = 0;
                f.backoff = FULL_BACKOFF_MS;
            } else {
                f.until = f.until.min(clock::now_ms() + FULL_AFTER_CLOSE_MS);
            }
            self.returned.notify_waiters();
        }
    }

    /// Whether the server refused a connection lately (no refill to `min_size` meanwhile).
    pub(super) fn refused_lately(&self) -> bool {
        self.full
            .as_ref()
            .is_some_and(|f| clock::now_ms() < f.refused_at + FULL_FORGET_MS)
    }

    /// What a checkout that found no connection of its own does while the server is full.
    fn full_gate(&mut self) -> FullGate {
        let Some(f) = self.full.as_mut() else {
            return FullGate::Off;
        };
        let now = clock::now_ms();
        if self.opening == 0 && now >= f.refused_at + FULL_FORGET_MS {
            // No refusal for a while.
            self.full = None;
            return FullGate::Off;
        }
        if !self.idle.is_empty() {
            return FullGate::UseIdle;
        }
        if self.opening > 0 {
            // Someone is opening one: its end (a connection, or another refusal) decides.
            return FullGate::Wait(now + f.backoff);
        }
        if now >= f.until {
            // (While it tries, `opening` makes the others wait.)
            return FullGate::Probe;
        }
        FullGate::Wait(f.until)
    }

    /// Opens, or takes an idle connection (`None`), or waits, as [`full_gate`] says, when the
    /// pool has room to grow.
    fn open_or_wait(&mut self) -> Option<Take> {
        match self.full_gate() {
            FullGate::Off | FullGate::Probe => {
                self.opening += 1;
                Some(Take::Open)
            }
            FullGate::UseIdle => None,
            FullGate::Wait(until) => Some(Take::Wait(until)),
        }
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
            if let Some(t) = self.open_or_wait() {
                return t;
            }
        }
        Take::Idle(self.idle.remove(0))
    }

    fn take_for_login(&mut self, size: usize) -> Take {
        if let Some(i) = self.idle.iter().rposition(|c| c.owner == 0 && c.told == 0) {
            return Take::Idle(self.idle.remove(i));
        }
        if self.idle.is_empty() || self.sockets.len() + self.opening < size {
            if let Some(t) = self.open_or_wait() {
                return t;
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

    fn full(c: &Conns) -> &Full {
        c.full.as_ref().expect("full")
    }

    #[test]
    fn a_full_server_makes_checkouts_wait_with_one_try_at_a_time() {
        let mut c = Conns::default();
        assert!(matches!(c.take(1, 10, false), Take::Open));
        c.opening -= 1;
        // Two connections open, in use; the server refuses a third.
        c.sockets.insert(7, 0);
        c.sockets.insert(8, 0);
        let t0 = clock::now_ms();
        c.server_full("too many connections for role \"x\"".into(), t0, 2000);
        let until = match c.take(1, 10, false) {
            Take::Wait(until) => until,
            _ => panic!("a checkout opened while the server is full"),
        };
        assert!(matches!(c.take(2, 10, true), Take::Wait(u) if u == until));
        // The pause over, one checkout tries again; while it does, the others wait.
        c.full.as_mut().unwrap().until = 0;
        assert!(matches!(c.take(1, 10, false), Take::Open));
        assert_eq!(c.opening, 1);
        assert!(matches!(c.take(2, 10, false), Take::Wait(_)));
        c.full.as_mut().unwrap().until = 0;
        assert!(
            matches!(c.take(3, 10, false), Take::Wait(_)),
            "two tries at once"
        );
        // It failed as well: the pause doubles; a refusal of an opening begun before the
        // last refusal (concurrent ones) does not double it again.
        c.opening -= 1;
        let started = clock::now_ms();
        c.server_full("again".into(), started, 2000);
        assert_eq!(full(&c).backoff, 2 * FULL_BACKOFF_MS);
        c.server_full("concurrent".into(), started.saturating_sub(1), 2000);
        assert_eq!(full(&c).backoff, 2 * FULL_BACKOFF_MS);
        // The pause never exceeds the cap given (half the checkout timeout).
        for _ in 0..10 {
            c.server_full("more".into(), clock::now_ms() + 1, 300);
        }
        assert_eq!(full(&c).backoff, 300);
        // A connection closing frees a slot on the server shortly: the next try comes soon.
        c.sockets.remove(&8);
        c.slot_freed(false);
        assert!(full(&c).until <= clock::now_ms() + FULL_AFTER_CLOSE_MS);
        // One opened: the next may try at once, the pauses start over.
        c.slot_freed(true);
        assert_eq!((full(&c).until, full(&c).backoff), (0, FULL_BACKOFF_MS));
        assert!(matches!(c.take(1, 10, false), Take::Open));
        c.opening -= 1;
        // Refill stays off while refusals are recent; an old refusal is forgotten, and the
        // pool grows as usual again.
        assert!(c.refused_lately());
        c.full.as_mut().unwrap().refused_at = clock::now_ms().saturating_sub(FULL_FORGET_MS + 1);
        c.full.as_mut().unwrap().until = u64::MAX;
        assert!(!c.refused_lately());
        assert!(matches!(c.take(1, 10, false), Take::Open));
        assert!(c.full.is_none());
    }
}
