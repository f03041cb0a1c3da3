//! A pool's upkeep, run every second by [`Pools::maintain_loop`](super::Pools::maintain_loop):
//! closing connections idle too long or too old, opening connections up to `min_size` (in a
//! pool a checkout got a connection from, with a growing pause after failures), and resetting
//! the settings clients that left put on idle connections.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::gate::Permit;
use super::server::ServerConn;
use super::{clock, Pool, PoolError};

/// How long an idle connection no client owns keeps the settings of the client that left it
/// before [`Pool::maintain`] resets them.
const SETTINGS_LINGER_MS: u64 = 1000;

/// The pause before refilling again after the first failed `min_size` connection (doubled
/// with each failure in a row, up to [`REFILL_BACKOFF_MAX_MS`]).
const REFILL_BACKOFF_MS: u64 = 1000;
/// The longest pause between failing refills.
const REFILL_BACKOFF_MAX_MS: u64 = 60_000;

/// The pause after a failed refill, given the one after the failure before it (0: none).
fn refill_backoff(last: u64) -> u64 {
    if last == 0 {
        REFILL_BACKOFF_MS
    } else {
        last.saturating_mul(2).min(REFILL_BACKOFF_MAX_MS)
    }
}

impl Pool {
    /// Closes idle connections past `idle_timeout` (above `min_size`) or `max_lifetime`,
    /// resets the settings clients that left put on idle ones (see
    /// [`clear_settings_left`](Self::clear_settings_left)), and opens connections up to
    /// `min_size` (see [`refill`](Self::refill)). Nothing here waits for a server: one that
    /// stopped answering holds up no other pool's upkeep.
    pub(super) fn maintain(self: &Arc<Self>, refill: bool) {
        let t = self.tuning.lock().expect("tuning").clone();
        let mut closed = Vec::new();
        {
            let mut conns = self.conns.lock().expect("conns");
            let idle = &mut conns.idle;
            let in_use = self
                .size
                .load(Ordering::Relaxed)
                .saturating_sub(self.permits.available());
            let mut keep = t.min_size.saturating_sub(in_use);
            // Closed connections are dropped after the lock is released: dropping one takes
            // the lock to unregister its socket.
            let now = clock::now_ms();
            for mut c in std::mem::take(idle) {
                let expired =
                    clock::outlived(now, c.created, clock::ms(t.max_lifetime)) || c.is_dead();
                let stale = now.saturating_sub(c.idle_since) > clock::ms(t.idle_timeout);
                if expired || (stale && keep == 0) {
                    closed.push(c);
                } else {
                    keep = keep.saturating_sub(1);
                    idle.push(c);
                }
            }
        }
        for mut c in closed {
            self.metrics.idle.dec();
            c.terminate();
        }
        self.clear_settings_left();
        if refill
            && self.refill_due(clock::now_ms())
            && self.open_count() < t.min_size
            && !self.refilling.swap(true, Ordering::AcqRel)
        {
            let pool = self.clone();
            tokio::spawn(async move {
                pool.refill(t.min_size).await;
                pool.refilling.store(false, Ordering::Release);
            });
        }
    }

    /// Whether [`maintain`](Self::maintain) may refill the pool to `min_size` at `now`: a
    /// checkout got a connection from it (the server takes the database and the role) and
    /// the server has not refused a `min_size` connection since, its database is not
    /// `KILL`ed, and the pause after a failed refill is over.
    pub(super) fn refill_due(&self, now: u64) -> bool {
        self.refill_armed.load(Ordering::Relaxed)
            && !self.closed.load(Ordering::Relaxed)
            && now >= self.refill_after.load(Ordering::Relaxed)
    }

    /// A `min_size` connection failed to open (an opening begun at `started`): the next
    /// refill waits, twice as long as after the last failure (see [`refill_backoff`]). A
    /// server with no slot left makes the pool `server_full` as a checkout's refusal does; a
    /// server that refuses the login (a database dropped, a role's password changed) stops
    /// refills until a checkout gets a connection again.
    pub(super) fn refill_failed(&self, e: &PoolError, started: u64) {
        let now = clock::now_ms();
        match e {
            PoolError::Connect(c) if c.sqlstate() == "53300" => {
                let timeout = self.tuning.lock().expect("tuning").checkout_timeout;
                self.conns.lock().expect("conns").server_full(
                    c.client_message(),
                    started,
                    clock::ms(timeout) / 2,
                );
            }
            e if e.is_refusal() => self.refill_armed.store(false, Ordering::Relaxed),
            _ => {}
        }
        let backoff = refill_backoff(self.refill_backoff.load(Ordering::Relaxed));
        self.refill_backoff.store(backoff, Ordering::Relaxed);
        self.refill_after.store(now + backoff, Ordering::Relaxed);
    }

    /// Connections open or being opened: idle ones, and those holding a slot.
    fn open_count(&self) -> usize {
        self.conns.lock().expect("conns").idle.len()
            + self
                .size
                .load(Ordering::Relaxed)
                .saturating_sub(self.permits.available())
    }

    /// Opens connections, one at a time, until `min_size` are open; stops at the first
    /// failure (see [`refill_failed`](Self::refill_failed) for when it tries again).
    async fn refill(&self, min_size: usize) {
        for _ in self.open_count()..min_size {
            if self.closed.load(Ordering::Relaxed) {
                break;
            }
            let Ok(permit) = self.permits.try_acquire() else {
                break;
            };
            // Counted as being opened, as a checkout's new connection is: a checkout deciding
            // meanwhile whether the pool has room for one more must see it.
            let slot = {
                let mut c = self.conns.lock().expect("conns");
                // (Nor while the server has no slot left: checkouts probe it.)
                if c.sockets.len() + c.opening >= self.size.load(Ordering::Relaxed)
                    || c.refused_lately()
                {
                    break;
                }
                c.opening += 1;
                super::conns::Opening(self.conns.clone())
            };
            let started = clock::now_ms();
            let opened = self.open().await;
            drop(slot);
            match opened {
                Ok(mut c) => {
                    self.refill_backoff.store(0, Ordering::Relaxed);
                    c.idle_since = clock::now_ms();
                    self.park(c);
                }
                Err(e) => {
                    tracing::debug!(pool = ?self.key, error = %e, "min_size connection failed");
                    self.refill_failed(&e, started);
                    drop(permit);
                    break;
                }
            }
            drop(permit);
        }
    }

    /// Resets to the server's defaults the idle connections whose client left settings on
    /// them (`application_name`, a `SET`) and nobody took for [`SETTINGS_LINGER_MS`], off
    /// this task, while the pool has free slots: an unowned connection then carries no
    /// client's settings, and `pg_stat_activity` shows no `application_name` of a client that
    /// is gone. One taken sooner gets its next client's settings instead, so clients that
    /// connect for each request cost nothing more.
    fn clear_settings_left(self: &Arc<Self>) {
        let now = clock::now_ms();
        let taken: Vec<(Box<ServerConn>, Permit)> = {
            let mut conns = self.conns.lock().expect("conns");
            let mut taken = Vec::new();
            let mut i = 0;
            while i < conns.idle.len() {
                let c = &conns.idle[i];
                if c.owner != 0
                    || c.applied.0.is_empty()
                    || now.saturating_sub(c.idle_since) < SETTINGS_LINGER_MS
                {
                    i += 1;
                    continue;
                }
                let Ok(permit) = self.permits.try_acquire() else {
                    break;
                };
                taken.push((conns.idle.remove(i), permit));
            }
            taken
        };
        if taken.is_empty() {
            return;
        }
        let timeout = self.connect.lock().expect("connect").timeout;
        for (mut conn, permit) in taken {
            self.metrics.idle.dec();
            self.metrics.active.inc();
            let pool = self.clone();
            tokio::spawn(async move {
                let reset = crate::session::settings::Settings::default()
                    .sync_sql(&conn.applied, true)
                    .unwrap_or_default();
                let done = matches!(conn.simple_query(&reset, timeout).await, Ok(Ok(_)));
                pool.metrics.active.dec();
                if done && !conn.broken {
                    conn.applied = Arc::default();
                    pool.park(conn);
                } else {
                    conn.terminate();
                }
                drop(permit);
            });
        }
    }
}
