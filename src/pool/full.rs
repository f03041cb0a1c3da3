//! A server with no connection slot left for a pool (53300 when a connection opens: its
//! `max_connections`, or the role's or the database's `CONNECTION LIMIT`): the pool stops
//! growing there. Checkouts take its idle connections or wait for one to come back, within
//! `checkout_timeout`, while one at a time tries to open another after a pause that doubles
//! with each refusal; a connection opening or closing wakes the waiters, and a refusal is
//! forgotten after a while.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::conns::{Conns, Take};
use super::{clock, ConnectError, Pool, PoolError};

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
    pub(crate) fn refused_lately(&self) -> bool {
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
    pub(super) fn open_or_wait(&mut self) -> Option<Take> {
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

impl Pool {
    /// Waits, with the server full and nothing idle, until a connection comes back, opens or
    /// closes, or until `until` (when the next opening may be tried). A checkout that has not
    /// waited yet, in a pool with no connection open or being opened, has nothing to wait
    /// for: it fails at once with the server's refusal. Otherwise the wait fails once
    /// `checkout_timeout` has passed since `since` (set here if the checkout did not wait
    /// before).
    pub(super) async fn wait_returned(
        &self,
        until: u64,
        since: &mut Option<u64>,
        waited: &mut bool,
    ) -> Result<(), PoolError> {
        let now = clock::now_ms();
        let timeout = self.tuning.lock().expect("tuning").checkout_timeout;
        let deadline = *since.get_or_insert(now) + clock::ms(timeout);
        let returned = self.conns.lock().expect("conns").returned.clone();
        let notified = returned.notified();
        tokio::pin!(notified);
        // Registered before the look below: what comes back after it wakes this wait.
        notified.as_mut().enable();
        {
            let c = self.conns.lock().expect("conns");
            if self.is_retired.load(Ordering::Relaxed) {
                return Err(PoolError::Closed);
            }
            let Some(f) = c.full.as_ref() else {
                return Ok(());
            };
            if !c.idle.is_empty() || (c.opening == 0 && now >= f.until) {
                // Something came back, or the next opening may be tried.
                return Ok(());
            }
            if c.sockets.is_empty() && c.opening == 0 && !*waited {
                return Err(PoolError::Connect(ConnectError::Refused {
                    address: self.key.address.clone(),
                    severity: "FATAL".into(),
                    code: "53300".into(),
                    message: f.message.clone(),
                }));
            }
            if now >= deadline {
                return Err(PoolError::Full {
                    message: f.message.clone(),
                    timeout,
                });
            }
        }
        *waited = true;
        let wake = until.min(deadline).saturating_sub(now).max(1);
        // Counted among the pool's waiting checkouts meanwhile (it holds a permit: the gate
        // does not count it).
        self.full_waiting.fetch_add(1, Ordering::Relaxed);
        let _counted = FullWaiter(self);
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(Duration::from_millis(wake)) => {}
        }
        Ok(())
    }
}

/// A checkout counted in [`Pool::full_waiting`] until dropped (also when the checkout is).
struct FullWaiter<'a>(&'a Pool);

impl Drop for FullWaiter<'_> {
    fn drop(&mut self) {
        self.0.full_waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::super::conns::{Socket, Use};
    use super::*;

    fn full(c: &Conns) -> &Full {
        c.full.as_ref().expect("full")
    }

    #[test]
    fn a_full_server_makes_checkouts_wait_with_one_try_at_a_time() {
        let mut c = Conns::default();
        assert!(matches!(c.take(1, 10, Use::Request, true), Take::Open));
        c.opening -= 1;
        // Two connections open, in use; the server refuses a third.
        c.sockets.insert(7, Socket::default());
        c.sockets.insert(8, Socket::default());
        let t0 = clock::now_ms();
        c.server_full("too many connections for role \"x\"".into(), t0, 2000);
        let until = match c.take(1, 10, Use::Request, true) {
            Take::Wait(until) => until,
            _ => panic!("a checkout opened while the server is full"),
        };
        assert!(matches!(c.take(2, 10, Use::Login, true), Take::Wait(u) if u == until));
        // Without affinity too (nothing idle: the same wait).
        assert!(matches!(c.take(3, 10, Use::Request, false), Take::Wait(u) if u == until));
        // The pause over, one checkout tries again; while it does, the others wait.
        c.full.as_mut().unwrap().until = 0;
        assert!(matches!(c.take(1, 10, Use::Request, true), Take::Open));
        assert_eq!(c.opening, 1);
        assert!(matches!(c.take(2, 10, Use::Request, true), Take::Wait(_)));
        c.full.as_mut().unwrap().until = 0;
        assert!(
            matches!(c.take(3, 10, Use::Request, true), Take::Wait(_)),
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
        assert!(matches!(c.take(1, 10, Use::Request, true), Take::Open));
        c.opening -= 1;
        // Refill stays off while refusals are recent; an old refusal is forgotten, and the
        // pool grows as usual again.
        assert!(c.refused_lately());
        c.full.as_mut().unwrap().refused_at = clock::now_ms().saturating_sub(FULL_FORGET_MS + 1);
        c.full.as_mut().unwrap().until = u64::MAX;
        assert!(!c.refused_lately());
        assert!(matches!(c.take(1, 10, Use::Request, true), Take::Open));
        assert!(c.full.is_none());
    }
}
