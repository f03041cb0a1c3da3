//! Server connection pools, one per (backend, user, database). A gate bounds each pool (fair,
//! FIFO waiters, see gate.rs); idle connections sit in a vector, oldest checkin first. Checkout
//! takes a permit, then a connection chosen by affinity (see [`Conns::take`]); checkin returns
//! both.
//!
//! Affinity: every connection remembers the client that used it last, and a client gets its own
//! connection back while nobody else needs it. Transaction pooling then changes server sessions
//! only under contention, so whatever a server session keeps that no proxy can move (sequence
//! `currval`, a C function's static state, warm caches, the statements already prepared there)
//! stays with its client as long as the pool has room. The price is speed on a busy host: each
//! client's server process takes its turn, where handing out the most recently used connection
//! (`[pool] affinity = false`, PgBouncer's order) keeps fewer of them running, in warmer CPU
//! caches.

pub(crate) mod clock;
mod conns;
mod full;
mod gate;
pub mod holders;
mod maintain;
pub mod prepared;
mod registry;
pub mod server;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::{Histogram, IntCounter, IntGauge};

pub use conns::SocketGuard;
pub use registry::{PoolSpec, PoolStats, Pools};
pub use server::{ConnectError, ConnectParams, ServerConn};

pub use conns::Use;
use conns::{Conns, Opening, Socket, Take};
use gate::{Gate, GateError, Permit};

use crate::config::PoolConfig;
use crate::metrics::Metrics;

/// Identifies a pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// Backend name.
    pub backend: Arc<str>,
    /// Backend address (a changed address is a new pool).
    pub address: String,
    /// Login user.
    pub user: String,
    /// Database.
    pub database: String,
}

/// Why a checkout failed.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// No connection became free within `checkout_timeout`.
    #[error("no server connection available within {0:?} (pool exhausted)")]
    Timeout(Duration),
    /// Opening a new connection failed.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The pool was retired (backend removed or changed).
    #[error("pool closed")]
    Closed,
    /// The backend was declared down (or fenced) while the connection was being opened.
    #[error("the server was declared down while a connection to it was being opened")]
    Severed,
    /// The server has no connection slot left (it said `message`, 53300) and none of the
    /// pool's own connections came back within `checkout_timeout`.
    #[error("the server has no connection slot left ({message}) and no pool connection came back within {timeout:?}")]
    Full { message: String, timeout: Duration },
}

impl PoolError {
    /// SQLSTATE for the client.
    pub fn sqlstate(&self) -> &str {
        match self {
            PoolError::Timeout(_) | PoolError::Full { .. } => "53300",
            PoolError::Connect(e) => e.sqlstate(),
            PoolError::Closed | PoolError::Severed => "08006",
        }
    }

    /// True when a server refused the login (bad database, role, password): retrying
    /// elsewhere would not help.
    pub fn is_refusal(&self) -> bool {
        matches!(self, PoolError::Connect(e) if e.is_refusal())
    }

    /// Message safe to show a client.
    pub fn client_message(&self) -> String {
        match self {
            PoolError::Timeout(d) => format!(
                "no server connection available within {d:?}: too many clients for the pool"
            ),
            PoolError::Connect(e) => e.client_message(),
            PoolError::Full { message, .. } => message.clone(),
            PoolError::Closed => "server pool closed".into(),
            PoolError::Severed => "the database server was declared unavailable".into(),
        }
    }
}

/// Timeouts and limits a pool reads at checkout; replaced on reload.
#[derive(Debug, Clone)]
pub struct Tuning {
    pub checkout_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_lifetime: Duration,
    pub min_size: usize,
    /// `[pool] affinity`: a client gets its own connection back while nobody else needs it.
    pub affinity: bool,
}

impl From<&PoolConfig> for Tuning {
    fn from(c: &PoolConfig) -> Self {
        Tuning {
            checkout_timeout: c.checkout_timeout,
            idle_timeout: c.idle_timeout,
            max_lifetime: c.max_lifetime,
            min_size: c.min_size,
            affinity: c.affinity,
        }
    }
}

/// Metric children resolved once per pool.
struct PoolMetrics {
    idle: IntGauge,
    active: IntGauge,
    connects: IntCounter,
    connect_errors: IntCounter,
    waits: IntCounter,
    wait_seconds: Histogram,
    transactions: IntCounter,
    queries: IntCounter,
    tls_ok: IntCounter,
    tls_errors: IntCounter,
    /// `server_discards_total{reason="unused_session"}`: closed to make room for a new
    /// connection for a session-mode login ([`Use::OwnSession`]).
    replaced: IntCounter,
}

/// A checkout's wait (for a slot of the pool, for a full server's connections, or both),
/// counted in `pool_waits_total` when it begins and observed in `pool_wait_seconds` once,
/// when the checkout ends (with a connection, an error, or dropped), so that the histogram
/// counts every wait whatever its outcome. Its length runs from its beginning to the end of
/// its last part (a checkout dropped while it waits: to then).
struct Wait<'a> {
    seconds: &'a Histogram,
    start: Instant,
    end: Option<Instant>,
}

impl<'a> Wait<'a> {
    fn begin(metrics: &'a PoolMetrics) -> Self {
        metrics.waits.inc();
        Wait {
            seconds: &metrics.wait_seconds,
            start: Instant::now(),
            end: None,
        }
    }

    /// A part of the wait ended (the checkout may wait again).
    fn ended(&mut self) {
        self.end = Some(Instant::now());
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        let end = self.end.unwrap_or_else(Instant::now);
        self.seconds
            .observe(end.saturating_duration_since(self.start).as_secs_f64());
    }
}

/// How long [`Pool::cancel_running`] waits for the cancels to be taken, and then for the
/// cancelled connections to end.
const CANCEL_WAIT: Duration = Duration::from_secs(2);

/// One pool.
pub struct Pool {
    /// Its identity.
    pub key: PoolKey,
    /// Backend index in the view the pool was made for.
    pub backend: usize,
    connect: Mutex<ConnectParams>,
    tuning: Mutex<Tuning>,
    /// Idle connections, and the sockets of connections in use.
    conns: Arc<Mutex<Conns>>,
    permits: Arc<Gate>,
    size: AtomicUsize,
    /// The pool was retired (its gate is closed too, failing checkouts).
    is_retired: AtomicBool,
    /// Woken when the pool is severed: connections being opened are given up.
    severed: tokio::sync::Notify,
    /// Connections opened at or before this time ([`clock`] ms; 0: none) are closed when
    /// checked in (their database is being dropped).
    close_opened_until: AtomicU64,
    /// A task is opening connections up to `min_size` (see [`maintain`](Self::maintain)).
    refilling: AtomicBool,
    /// A checkout got a connection from the pool (since it was made, or since the server
    /// refused a `min_size` connection): only then is it refilled to `min_size`, so that a
    /// pool a client made for a database or role the server does not know (or no longer
    /// knows) opens nothing by itself (see [`maintain`](Self::maintain)).
    refill_armed: AtomicBool,
    /// No refill before this time ([`clock`] ms): the last one failed (see
    /// [`refill`](Self::refill)).
    refill_after: AtomicU64,
    /// How long the last failed refill made the next wait ([`clock`] ms; 0: it did not fail).
    refill_backoff: AtomicU64,
    /// Its database was `KILL`ed: no connection is kept (checked in, reset, refilled) until
    /// `RESUME` (see [`Pools::kill_database`]).
    closed: AtomicBool,
    /// Checkouts waiting for one of the pool's connections to come back from a server with no
    /// slot left (they hold a permit meanwhile, so the gate does not count them).
    full_waiting: AtomicUsize,
    /// A connection was ever opened (the server knows the database and the role).
    ever_opened: AtomicBool,
    /// Since when ([`clock`] ms) the pool has had no connection and nobody using it (0:
    /// it has); see [`Pools::maintain_loop`].
    unused_since: AtomicU64,
    metrics: PoolMetrics,
}

/// A checked-out connection; return it with [`Pool::checkin`] or drop it to close it.
pub struct Pooled {
    /// The connection.
    pub conn: Box<ServerConn>,
    permit: Permit,
    pool: Held,
}

/// The pool a checked-out connection came from. It counts the connection active until the
/// connection is released, discarded or dropped (a session that timed out or died).
struct Held(Arc<Pool>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.metrics.active.dec();
    }
}

impl Pooled {
    /// The pool it came from.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool.0
    }

    /// Returns the connection to its pool (or closes it when it must not be reused).
    pub fn release(self) {
        let pool = self.pool.0.clone();
        pool.checkin(self);
    }

    /// Closes the connection, counting why.
    pub fn discard(mut self, reason: &str, metrics: &Metrics) {
        metrics.server_discards.with_label_values(&[reason]).inc();
        self.conn.terminate();
        drop(self.permit);
    }
}

impl Pool {
    fn new(
        key: PoolKey,
        backend: usize,
        connect: ConnectParams,
        size: usize,
        tuning: Tuning,
        metrics: &Metrics,
    ) -> Pool {
        let name = &*key.backend;
        Pool {
            metrics: PoolMetrics {
                idle: metrics.server_conns.with_label_values(&[name, "idle"]),
                active: metrics.server_conns.with_label_values(&[name, "active"]),
                connects: metrics.server_connects.with_label_values(&[name]),
                connect_errors: metrics.server_connect_errors.with_label_values(&[name]),
                waits: metrics.pool_waits.with_label_values(&[name]),
                wait_seconds: metrics.pool_wait_seconds.with_label_values(&[name]),
                transactions: metrics.transactions.with_label_values(&[name]),
                queries: metrics.queries.with_label_values(&[name]),
                tls_ok: metrics.tls_handshakes.with_label_values(&["server", "ok"]),
                tls_errors: metrics
                    .tls_handshakes
                    .with_label_values(&["server", "error"]),
                replaced: metrics
                    .server_discards
                    .with_label_values(&["unused_session"]),
            },
            key,
            backend,
            connect: Mutex::new(connect),
            tuning: Mutex::new(tuning),
            conns: Arc::new(Mutex::new(Conns::default())),
            permits: Gate::new(size),
            size: AtomicUsize::new(size),
            is_retired: AtomicBool::new(false),
            severed: tokio::sync::Notify::new(),
            close_opened_until: AtomicU64::new(0),
            refilling: AtomicBool::new(false),
            refill_armed: AtomicBool::new(false),
            refill_after: AtomicU64::new(0),
            refill_backoff: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            full_waiting: AtomicUsize::new(0),
            ever_opened: AtomicBool::new(false),
            unused_since: AtomicU64::new(0),
        }
    }

    /// Takes a connection for client `owner` (0 for the proxy's own use), waiting up to
    /// `checkout_timeout` for a free slot. When the server has no connection slot left
    /// (53300: its `max_connections`, or the role's or database's limit), the pool stops
    /// growing there (see [`Conns::full`]): the checkout waits for one of the pool's
    /// connections to come back, within the same `checkout_timeout` counted from its first
    /// wait, while one checkout at a time tries to open another now and then. A checkout
    /// that finds nothing open or being opened, and has not waited, fails at once with the
    /// server's 53300.
    pub async fn checkout(self: &Arc<Self>, owner: u64) -> Result<Pooled, PoolError> {
        self.checkout_for(owner, Use::Request).await
    }

    /// [`checkout`](Self::checkout) for a client's login, whose process id will be the
    /// server process's: prefers a connection whose id no client was given yet, then a new
    /// one while the pool has room, so that a client does not get the id of one that just
    /// left (as a new server process never would).
    /// With `own_session` (a session-mode client, `session_reuse = false`), only a
    /// connection that never served a client, or a new one ([`Use::OwnSession`]).
    pub async fn checkout_login(
        self: &Arc<Self>,
        owner: u64,
        own_session: bool,
    ) -> Result<Pooled, PoolError> {
        let use_ = if own_session {
            Use::OwnSession
        } else {
            Use::Login
        };
        self.checkout_for(owner, use_).await
    }

    async fn checkout_for(self: &Arc<Self>, owner: u64, use_: Use) -> Result<Pooled, PoolError> {
        // When this checkout began to wait ([`clock`] ms), for a slot of the pool or for a
        // connection to come back from a full server: `checkout_timeout` counts from there.
        let mut waiting_since = None;
        // This checkout's wait, counted once and observed once, whatever its outcome.
        let mut wait = None;
        let permit = match self.permits.try_acquire() {
            Ok(p) => p,
            Err(GateError::Closed) => return Err(PoolError::Closed),
            Err(_) => {
                let wait = wait.insert(Wait::begin(&self.metrics));
                waiting_since = Some(clock::now_ms());
                let timeout = self.tuning.lock().expect("tuning").checkout_timeout;
                // Retiring the pool closes the gate, which ends this wait too.
                let acquired = self.permits.acquire(timeout).await;
                wait.ended();
                match acquired {
                    Ok(p) => p,
                    Err(GateError::Closed) => return Err(PoolError::Closed),
                    // (Its server was declared down while it waited.)
                    Err(GateError::Interrupted) => return Err(PoolError::Severed),
                    Err(_) => return Err(PoolError::Timeout(timeout)),
                }
            }
        };
        let (max_lifetime, affinity) = {
            let t = self.tuning.lock().expect("tuning");
            (clock::ms(t.max_lifetime), t.affinity)
        };
        let size = self.size.load(Ordering::Relaxed);
        // Whether this checkout waited for a full server's connections already.
        let mut waited_full = false;
        loop {
            let take = self
                .conns
                .lock()
                .expect("conns")
                .take(owner, size, use_, affinity);
            let mut conn = match take {
                Take::Idle(mut conn) => {
                    self.metrics.idle.dec();
                    if conn.is_dead()
                        || clock::outlived(clock::now_ms(), conn.created, max_lifetime)
                    {
                        conn.terminate();
                        continue;
                    }
                    conn
                }
                Take::Open => {
                    let slot = Opening(self.conns.clone());
                    let started = clock::now_ms();
                    let conn = self.open().await;
                    drop(slot);
                    match conn {
                        Err(PoolError::Connect(e)) if e.sqlstate() == "53300" => {
                            let timeout = self.tuning.lock().expect("tuning").checkout_timeout;
                            let mut c = self.conns.lock().expect("conns");
                            c.server_full(e.client_message(), started, clock::ms(timeout) / 2);
                            if c.sockets.is_empty() && c.opening == 0 && !waited_full {
                                // None of the pool's to wait for: the server's refusal (a
                                // read goes to another server).
                                return Err(PoolError::Connect(e));
                            }
                            drop(c);
                            tracing::info!(backend = %self.key.backend, user = %self.key.user, database = %self.key.database, "the server has no connection slot left: waiting for the pool's own connections ({})", e.client_message());
                            continue;
                        }
                        Ok(mut conn)
                            if conn.created <= self.close_opened_until.load(Ordering::Relaxed) =>
                        {
                            // Opened with the settings of before a reload that changed
                            // `[server_tls]` (or a `RECONNECT`): not to be used.
                            conn.terminate();
                            continue;
                        }
                        conn => conn?,
                    }
                }
                Take::Replace(mut conn) => {
                    self.metrics.idle.dec();
                    self.metrics.replaced.inc();
                    conn.terminate();
                    continue;
                }
                Take::Wait(until) => {
                    // One checkout, one wait counted (it may have waited for a slot first, or
                    // here before).
                    let wait = wait.get_or_insert_with(|| Wait::begin(&self.metrics));
                    let returned = self
                        .wait_returned(until, &mut waiting_since, &mut waited_full)
                        .await;
                    wait.ended();
                    returned?;
                    continue;
                }
            };
            if conn.owner != owner {
                conn.previous_owner = std::mem::replace(&mut conn.owner, owner);
            }
            if !self.refill_armed.load(Ordering::Relaxed) {
                self.refill_armed.store(true, Ordering::Relaxed);
            }
            self.metrics.active.inc();
            return Ok(Pooled {
                conn,
                permit,
                pool: Held(self.clone()),
            });
        }
    }

    /// Forgets that `owner` used any of the idle connections: the client left. (Settings it
    /// left on them are reset by [`maintain`](Self::maintain) if nobody takes them first.)
    pub fn disown(&self, owner: u64) {
        let mut c = self.conns.lock().expect("conns");
        for conn in c.idle.iter_mut().filter(|x| x.owner == owner) {
            conn.owner = 0;
        }
    }

    /// Registers a new connection's socket, unless the pool was severed since `severs` (when
    /// its opening began): then it returns false, and the connection must not be used.
    fn register(&self, conn: &mut ServerConn, severs: u64) -> bool {
        // A fresh connection always has its socket.
        let Some(fd) = conn.stream.fd() else {
            return true;
        };
        let mut c = self.conns.lock().expect("conns");
        if c.severs != severs {
            return false;
        }
        c.sockets.insert(
            fd,
            Socket {
                opened: conn.created,
                key: (conn.pid, conn.secret),
            },
        );
        drop(c);
        conn.socket = Some(SocketGuard {
            conns: self.conns.clone(),
            fd,
        });
        true
    }

    /// Fails every in-flight request on this pool's connections at once (their reads see EOF)
    /// and closes the idle ones: the backend was declared down. Checkouts waiting for a slot
    /// fail too ([`PoolError::Severed`]: their requests are routed again), instead of being
    /// handed the slots the severed connections give back and opening connections there.
    pub fn sever(&self) {
        self.shut_down(libc::SHUT_RDWR);
    }

    /// Ends every connection's server session after what was sent on it: the sending side of
    /// each socket is shut down, so the server runs and answers what it has (a write in
    /// flight finishes and its answer reaches the client) and then, reading the end of its
    /// input, ends the session (an open transaction rolls back). Nothing more can be sent on
    /// them. Idle connections close at once and checkouts waiting for a slot fail, as in
    /// [`sever`](Self::sever). For a server a reload no longer names: nothing is in doubt
    /// that was not already sent.
    pub fn end_sessions(&self) {
        self.shut_down(libc::SHUT_WR);
    }

    /// After [`end_sessions`](Self::end_sessions), when `shutdown_timeout` has passed: asks
    /// the server to cancel the statements still running on this pool's connections (closing
    /// a socket stops a statement only once it writes: it would run on, holding its locks, and
    /// an autocommit write would commit after its client was told the connection failed),
    /// then waits up to [`CANCEL_WAIT`] for those connections to end (their input was shut
    /// down, so the server ends each session once it has answered: the client gets the
    /// cancel's 57014). The caller severs what is left.
    pub async fn cancel_running(&self) {
        let keys: Vec<(i32, i32)> = {
            let c = self.conns.lock().expect("conns");
            c.sockets.values().map(|s| s.key).collect()
        };
        if keys.is_empty() {
            return;
        }
        tracing::warn!(
            backend = %self.key.address,
            connections = keys.len(),
            "shutdown_timeout over: cancelling what still runs on a server no longer configured"
        );
        let mut cancels = tokio::task::JoinSet::new();
        for (pid, secret) in keys {
            let address = self.key.address.clone();
            cancels.spawn(async move {
                let open = crate::net::server_addr::open_plain(&address);
                let sent = crate::session::cancel::cancel_over(
                    open,
                    pid,
                    secret,
                    CANCEL_WAIT,
                    CANCEL_WAIT,
                );
                if let Err(e) = sent.await {
                    tracing::warn!(error = %e, pid, "cancel request to server failed");
                }
            });
        }
        while cancels.join_next().await.is_some() {}
        let until = Instant::now() + CANCEL_WAIT;
        while Instant::now() < until && !self.conns.lock().expect("conns").sockets.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn shut_down(&self, how: libc::c_int) {
        self.permits.interrupt();
        let idle = {
            let mut c = self.conns.lock().expect("conns");
            c.severs += 1;
            for &fd in c.sockets.keys() {
                // SAFETY: the fd belongs to a live connection: guards remove it under this lock
                // before their socket closes. shutdown(2) only changes socket state.
                unsafe {
                    libc::shutdown(fd, how);
                }
            }
            std::mem::take(&mut c.idle)
        };
        self.severed.notify_waiters();
        for mut conn in idle {
            self.metrics.idle.dec();
            conn.terminate();
        }
    }

    async fn open(&self) -> Result<Box<ServerConn>, PoolError> {
        let params = self.connect.lock().expect("connect").clone();
        // (Made before `severs` is read: a sever after that read wakes it.)
        let severed = self.severed.notified();
        let severs = self.conns.lock().expect("conns").severs;
        // A connection counts as open from when its opening began: one whose settings were
        // taken before its pool's connections were marked to close (see
        // [`close_open`](Self::close_open)) is among those marked.
        let began = clock::now_ms();
        // A server declared down (or fenced, or no longer configured) while the connection
        // is being opened: given up at once rather than after the connect timeout (a
        // partitioned server accepts and never answers), and the request routed again.
        let opened = tokio::select! {
            biased;
            () = severed => return Err(PoolError::Severed),
            r = ServerConn::connect(&params, self.backend) => r,
        };
        match opened {
            Ok(mut c) => {
                c.created = began;
                self.metrics.connects.inc();
                self.conns.lock().expect("conns").slot_freed(true);
                self.ever_opened.store(true, Ordering::Relaxed);
                if c.stream.is_tls() {
                    self.metrics.tls_ok.inc();
                } else if c.tls_fell_back {
                    self.metrics.tls_errors.inc();
                }
                let mut c = Box::new(c);
                if !self.register(&mut c, severs) {
                    // Opened to a server the monitor has since declared down or fenced: what
                    // it would carry (a write to a fenced old primary) must not run there.
                    c.terminate();
                    return Err(PoolError::Severed);
                }
                Ok(c)
            }
            Err(e) => {
                self.metrics.connect_errors.inc();
                // A refused login or TLS setup is a configuration or security matter the
                // operator must see (the client is told less); an outage, or a server that is
                // busy or starting, is the health probes' to report.
                if matches!(e, ConnectError::Tls { .. }) || e.sqlstate().starts_with("28") {
                    tracing::warn!(backend = %self.key.backend, user = %self.key.user, "server connection refused: {e}");
                } else {
                    tracing::debug!(backend = %self.key.backend, "server connection failed: {e}");
                }
                if matches!(e, ConnectError::Tls { .. }) {
                    self.metrics.tls_errors.inc();
                }
                Err(e.into())
            }
        }
    }

    /// Returns a connection.
    pub fn checkin(&self, mut p: Pooled) {
        let max_lifetime = clock::ms(self.tuning.lock().expect("tuning").max_lifetime);
        let now = clock::now_ms();
        if p.conn.broken
            || p.conn.needs_reset
            || clock::outlived(now, p.conn.created, max_lifetime)
            || p.conn.created <= self.close_opened_until.load(Ordering::Relaxed)
        {
            p.conn.terminate();
        } else {
            p.conn.idle_since = now;
            self.park(p.conn);
        }
        drop(p.permit);
    }

    /// Puts a connection among the idle ones, or closes it if the pool was retired meanwhile,
    /// its database was `KILL`ed, a reload shrank the pool below the connections open, or it
    /// was open when the pool's connections were marked to close (checked under the lock
    /// [`retire`](Self::retire) and [`close_open`](Self::close_open) drain the idle list
    /// under, so that no connection can land in a pool nobody will look at again, nor survive
    /// a `RECONNECT`, a promotion or a `DROP DATABASE` because it was being reset or opened
    /// at the time).
    fn park(&self, mut c: Box<ServerConn>) {
        let mut conns = self.conns.lock().expect("conns");
        if self.is_retired.load(Ordering::Relaxed)
            || self.closed.load(Ordering::Relaxed)
            || c.created <= self.close_opened_until.load(Ordering::Relaxed)
            // (This connection is among the sockets.)
            || conns.sockets.len() + conns.opening > self.size.load(Ordering::Relaxed)
        {
            drop(conns);
            c.terminate();
            return;
        }
        conns.idle.push(c);
        if conns.full.is_some() {
            conns.returned.notify_waiters();
        }
        drop(conns);
        self.metrics.idle.inc();
    }

    /// Counts a request (a simple query, Sync or function call) sent on this pool.
    pub fn count_request(&self) {
        self.metrics.queries.inc();
    }

    /// Counts transactions of clients that ended on this pool's connections (autocommit
    /// statements included); the proxy's own use of a connection (a login, a lookup, a
    /// commit position read back) is not one.
    pub fn count_transactions(&self, n: u64) {
        self.metrics.transactions.inc_by(n);
    }

    /// Changes the pool size (reload). Shrunk, the pool closes its idle connections above
    /// the new size at once, the least recently used first, and the ones in use above it
    /// when they are checked in ([`park`](Self::park)).
    fn resize(&self, size: usize) {
        let old = self.size.swap(size, Ordering::AcqRel);
        if size > old {
            self.permits.add(size - old);
        } else if size < old {
            self.permits.remove(old - size);
            let excess: Vec<_> = {
                let mut conns = self.conns.lock().expect("conns");
                let over = (conns.sockets.len() + conns.opening).saturating_sub(size);
                let n = over.min(conns.idle.len());
                conns.idle.drain(..n).collect()
            };
            for mut c in excess {
                self.metrics.idle.dec();
                c.terminate();
            }
        }
    }

    /// Whether a reload retired it (its sessions look their pool up again).
    pub fn is_retired(&self) -> bool {
        self.is_retired.load(Ordering::Relaxed)
    }

    fn retire(&self) {
        self.permits.close();
        let drained: Vec<_> = {
            let mut conns = self.conns.lock().expect("conns");
            self.is_retired.store(true, Ordering::Relaxed);
            conns.returned.notify_waiters();
            std::mem::take(&mut conns.idle)
        };
        for mut c in drained {
            self.metrics.idle.dec();
            c.terminate();
        }
    }

    /// When the last [`Pools::reconnect`] or the like marked the connections open then
    /// ([`clock`] milliseconds; 0: never).
    pub fn closing_mark(&self) -> u64 {
        self.close_opened_until.load(Ordering::Relaxed)
    }

    /// How many of the connections open now were marked to close when released (opened
    /// before the last [`Pools::reconnect`] or the like): in use by a client, being reset
    /// after one, or serving the proxy itself.
    pub fn marked_open(&self) -> usize {
        let until = self.closing_mark();
        let c = self.conns.lock().expect("conns");
        c.sockets.values().filter(|s| s.opened <= until).count()
    }

    /// Closes the connections open now: the idle ones at once, the ones in use when they are
    /// checked in (the pool stays in use).
    fn close_open(&self) {
        let idle = {
            let mut conns = self.conns.lock().expect("conns");
            self.close_opened_until
                .store(clock::now_ms(), Ordering::Relaxed);
            std::mem::take(&mut conns.idle)
        };
        for mut c in idle {
            self.metrics.idle.dec();
            c.terminate();
        }
    }

    /// Keeps no connection from now on (its database was `KILL`ed), closing the open ones as
    /// [`close_open`](Self::close_open) does: the idle ones at once, the others when checked
    /// in, and any a checkout, a reset or a refill under way opens or gives back later; or
    /// (`false`, `RESUME`) keeps them again.
    fn set_closed(&self, closed: bool) {
        // Set before close_open takes the lock that park() decides under: a connection parked
        // after that sees the flag, one parked before is among the idle ones closed.
        self.closed.store(closed, Ordering::Relaxed);
        if closed {
            self.close_open();
        }
    }

    /// Idle connection count (for status pages and tests).
    pub fn idle_count(&self) -> usize {
        self.conns.lock().expect("conns").idle.len()
    }

    /// No connection is open, being opened or checked out.
    fn is_empty(&self) -> bool {
        let c = self.conns.lock().expect("conns");
        c.idle.is_empty()
            && c.sockets.is_empty()
            && c.opening == 0
            && self.permits.available() >= self.size.load(Ordering::Relaxed)
    }
}
