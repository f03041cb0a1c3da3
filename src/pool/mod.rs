//! Server connection pools, one per (backend, user, database). A gate bounds each pool (fair,
//! FIFO waiters, see gate.rs); idle connections sit in a vector, oldest checkin first. Checkout
//! takes a permit, then a connection chosen by affinity (see [`Conns::take`]); checkin returns
//! both.
//!
//! Affinity: every connection remembers the client that used it last, and a client gets its own
//! connection back while nobody else needs it. Transaction pooling then changes server sessions
//! only under contention, so whatever a server session keeps that no proxy can move (sequence
//! `currval`, a C function's static state, warm caches, the statements already prepared there)
//! stays with its client as long as the pool has room.

pub(crate) mod clock;
mod gate;
pub mod holders;
mod maintain;
pub mod prepared;
pub mod server;

use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use prometheus::{Histogram, IntCounter, IntGauge};
use tokio_util::sync::CancellationToken;

pub use server::{ConnectError, ConnectParams, ServerConn};

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
}

impl PoolError {
    /// SQLSTATE for the client.
    pub fn sqlstate(&self) -> &str {
        match self {
            PoolError::Timeout(_) => "53300",
            PoolError::Connect(e) => e.sqlstate(),
            PoolError::Closed => "08006",
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
            PoolError::Closed => "server pool closed".into(),
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
}

impl From<&PoolConfig> for Tuning {
    fn from(c: &PoolConfig) -> Self {
        Tuning {
            checkout_timeout: c.checkout_timeout,
            idle_timeout: c.idle_timeout,
            max_lifetime: c.max_lifetime,
            min_size: c.min_size,
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
}

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
    /// Connections opened at or before this time ([`clock`] ms; 0: none) are closed when
    /// checked in (their database is being dropped).
    close_opened_until: AtomicU64,
    metrics: PoolMetrics,
}

/// A pool's connections: idle ones, and the socket of every open one (so that a backend the
/// monitor declared down can have every in-flight request on it failed at once, instead of
/// each waiting for TCP to notice). Sockets are registered when a connection opens and removed
/// when it closes, so checkout and checkin only move a pointer.
#[derive(Default)]
pub struct Conns {
    /// Boxed so a checkout or checkin moves a pointer, not the whole connection state.
    #[allow(clippy::vec_box)]
    idle: Vec<Box<ServerConn>>,
    /// Each open connection's socket, with when it was opened ([`clock`] milliseconds).
    sockets: HashMap<RawFd, u64>,
    /// Connections being opened (counted against the pool size with `sockets`).
    opening: usize,
}

/// What checkout does when the client's own connection is not idle.
enum Take {
    /// This idle connection.
    Idle(Box<ServerConn>),
    /// Open a new connection (the caller holds an [`Opening`] slot).
    Open,
}

impl Conns {
    /// Picks a connection for `owner` (0: nobody in particular): its own idle one; else the
    /// most recently used idle one that no connected client owns; else a new one while the
    /// pool has room; else the idle one unused the longest (its client is the least likely
    /// to be back soon). For a `login`, a free connection whose process id was given to a
    /// client before comes after a new one, and among those the one given out longest ago.
    fn take(&mut self, owner: u64, size: usize, login: bool) -> Take {
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
            self.opening += 1;
            return Take::Open;
        }
        Take::Idle(self.idle.remove(0))
    }

    fn take_for_login(&mut self, size: usize) -> Take {
        if let Some(i) = self.idle.iter().rposition(|c| c.owner == 0 && c.told == 0) {
            return Take::Idle(self.idle.remove(i));
        }
        if self.idle.is_empty() || self.sockets.len() + self.opening < size {
            self.opening += 1;
            return Take::Open;
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
struct Opening(Arc<Mutex<Conns>>);

impl Drop for Opening {
    fn drop(&mut self) {
        if let Ok(mut c) = self.0.lock() {
            c.opening -= 1;
        }
    }
}

/// Registration of an open connection's socket; removed when the connection is dropped.
pub struct SocketGuard {
    conns: Arc<Mutex<Conns>>,
    fd: RawFd,
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        if let Ok(mut c) = self.conns.lock() {
            c.sockets.remove(&self.fd);
        }
    }
}

/// A checked-out connection; return it with [`Pool::checkin`] or drop it to close it.
pub struct Pooled {
    /// The connection.
    pub conn: Box<ServerConn>,
    permit: Permit,
    pool: Arc<Pool>,
}

impl Pooled {
    /// The pool it came from.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// Returns the connection to its pool (or closes it when it must not be reused).
    pub fn release(self) {
        let pool = self.pool.clone();
        pool.checkin(self);
    }

    /// Closes the connection, counting why.
    pub fn discard(mut self, reason: &str, metrics: &Metrics) {
        metrics.server_discards.with_label_values(&[reason]).inc();
        self.conn.terminate();
        self.pool.metrics.active.dec();
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
            },
            key,
            backend,
            connect: Mutex::new(connect),
            tuning: Mutex::new(tuning),
            conns: Arc::new(Mutex::new(Conns::default())),
            permits: Gate::new(size),
            size: AtomicUsize::new(size),
            is_retired: AtomicBool::new(false),
            close_opened_until: AtomicU64::new(0),
        }
    }

    /// Takes a connection for client `owner` (0 for the proxy's own use), waiting up to
    /// `checkout_timeout` for a free slot.
    pub async fn checkout(self: &Arc<Self>, owner: u64) -> Result<Pooled, PoolError> {
        self.checkout_for(owner, false).await
    }

    /// [`checkout`](Self::checkout) for a client's login, whose process id will be the
    /// server process's: prefers a connection whose id no client was given yet, then a new
    /// one while the pool has room, so that a client does not get the id of one that just
    /// left (as a new server process never would).
    pub async fn checkout_login(self: &Arc<Self>, owner: u64) -> Result<Pooled, PoolError> {
        self.checkout_for(owner, true).await
    }

    async fn checkout_for(self: &Arc<Self>, owner: u64, login: bool) -> Result<Pooled, PoolError> {
        let permit = match self.permits.try_acquire() {
            Ok(p) => p,
            Err(GateError::Closed) => return Err(PoolError::Closed),
            Err(_) => {
                self.metrics.waits.inc();
                let timeout = self.tuning.lock().expect("tuning").checkout_timeout;
                let start = Instant::now();
                // Retiring the pool closes the gate, which ends this wait too.
                let p = match self.permits.acquire(timeout).await {
                    Ok(p) => p,
                    Err(GateError::Closed) => return Err(PoolError::Closed),
                    Err(_) => return Err(PoolError::Timeout(timeout)),
                };
                self.metrics
                    .wait_seconds
                    .observe(start.elapsed().as_secs_f64());
                p
            }
        };
        let max_lifetime = clock::ms(self.tuning.lock().expect("tuning").max_lifetime);
        let size = self.size.load(Ordering::Relaxed);
        loop {
            let take = self.conns.lock().expect("conns").take(owner, size, login);
            let mut conn = match take {
                Take::Idle(mut conn) => {
                    self.metrics.idle.dec();
                    if conn.is_dead() || clock::now_ms().saturating_sub(conn.created) > max_lifetime
                    {
                        conn.terminate();
                        continue;
                    }
                    conn
                }
                Take::Open => {
                    let slot = Opening(self.conns.clone());
                    let conn = self.open().await;
                    drop(slot);
                    conn?
                }
            };
            if conn.owner != owner {
                conn.previous_owner = std::mem::replace(&mut conn.owner, owner);
            }
            self.metrics.active.inc();
            return Ok(Pooled {
                conn,
                permit,
                pool: self.clone(),
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

    fn register(&self, conn: &mut ServerConn) {
        // A fresh connection always has its socket.
        let Some(fd) = conn.stream.tcp().map(|t| t.as_raw_fd()) else {
            return;
        };
        self.conns
            .lock()
            .expect("conns")
            .sockets
            .insert(fd, conn.created);
        conn.socket = Some(SocketGuard {
            conns: self.conns.clone(),
            fd,
        });
    }

    /// Fails every in-flight request on this pool's connections at once (their reads see EOF)
    /// and closes the idle ones: the backend was declared down.
    pub fn sever(&self) {
        let idle = {
            let mut c = self.conns.lock().expect("conns");
            for &fd in c.sockets.keys() {
                // SAFETY: the fd belongs to a live connection: guards remove it under this lock
                // before their socket closes. shutdown(2) only changes socket state.
                unsafe {
                    libc::shutdown(fd, libc::SHUT_RDWR);
                }
            }
            std::mem::take(&mut c.idle)
        };
        for mut conn in idle {
            self.metrics.idle.dec();
            conn.terminate();
        }
    }

    async fn open(&self) -> Result<Box<ServerConn>, PoolError> {
        let params = self.connect.lock().expect("connect").clone();
        match ServerConn::connect(&params, self.backend).await {
            Ok(c) => {
                self.metrics.connects.inc();
                if c.stream.is_tls() {
                    self.metrics.tls_ok.inc();
                } else if c.tls_fell_back {
                    self.metrics.tls_errors.inc();
                }
                let mut c = Box::new(c);
                self.register(&mut c);
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
        self.metrics.active.dec();
        self.metrics.transactions.inc();
        let max_lifetime = clock::ms(self.tuning.lock().expect("tuning").max_lifetime);
        let now = clock::now_ms();
        if p.conn.broken
            || p.conn.needs_reset
            || now.saturating_sub(p.conn.created) > max_lifetime
            || p.conn.created <= self.close_opened_until.load(Ordering::Relaxed)
        {
            p.conn.terminate();
        } else {
            p.conn.idle_since = now;
            self.park(p.conn);
        }
        drop(p.permit);
    }

    /// Puts a connection among the idle ones, or closes it if the pool was retired meanwhile
    /// (checked under the lock [`retire`](Self::retire) drains the idle list under, so that no
    /// connection can land in a pool nobody will look at again).
    fn park(&self, mut c: Box<ServerConn>) {
        let mut conns = self.conns.lock().expect("conns");
        if self.is_retired.load(Ordering::Relaxed) {
            drop(conns);
            c.terminate();
            return;
        }
        conns.idle.push(c);
        drop(conns);
        self.metrics.idle.inc();
    }

    /// Counts a request (a simple query, Sync or function call) sent on this pool.
    pub fn count_request(&self) {
        self.metrics.queries.inc();
    }

    /// Changes the pool size (reload).
    fn resize(&self, size: usize) {
        let old = self.size.swap(size, Ordering::AcqRel);
        if size > old {
            self.permits.add(size - old);
        } else if size < old {
            self.permits.remove(old - size);
        }
    }

    fn retire(&self) {
        self.permits.close();
        let drained: Vec<_> = {
            let mut conns = self.conns.lock().expect("conns");
            self.is_retired.store(true, Ordering::Relaxed);
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
        c.sockets
            .values()
            .filter(|&&opened| opened <= until)
            .count()
    }

    /// Closes the connections open now: the idle ones at once, the ones in use when they are
    /// checked in (the pool stays in use).
    fn close_open(&self) {
        self.close_opened_until
            .store(clock::now_ms(), Ordering::Relaxed);
        let idle = std::mem::take(&mut self.conns.lock().expect("conns").idle);
        for mut c in idle {
            self.metrics.idle.dec();
            c.terminate();
        }
    }

    /// Idle connection count (for status pages and tests).
    pub fn idle_count(&self) -> usize {
        self.conns.lock().expect("conns").idle.len()
    }
}

/// All pools.
pub struct Pools {
    map: RwLock<HashMap<PoolKey, Arc<Pool>>>,
    /// Roles looked up with `[auth_query]`, as their latest login left them (the credential
    /// the servers take for them changes with their password).
    looked_up: RwLock<HashMap<String, Arc<crate::config::User>>>,
    metrics: Arc<Metrics>,
    /// Which client each server process serves (notifications name the notifier's pid).
    pub holders: holders::Holders,
}

/// What a pool needs from config to be created.
pub struct PoolSpec<'a> {
    pub backend_index: usize,
    pub backend_name: &'a Arc<str>,
    pub address: &'a str,
    pub user: &'a crate::config::User,
    pub database: &'a str,
    pub config: &'a crate::config::Loaded,
}

impl Pools {
    /// An empty set of pools.
    pub fn new(metrics: Arc<Metrics>) -> Pools {
        Pools {
            map: RwLock::new(HashMap::new()),
            looked_up: RwLock::new(HashMap::new()),
            metrics,
            holders: holders::Holders::default(),
        }
    }

    /// The pool for a (backend, user, database), created on first use.
    pub fn get(&self, spec: PoolSpec<'_>) -> Arc<Pool> {
        let key = PoolKey {
            backend: spec.backend_name.clone(),
            address: spec.address.to_owned(),
            user: spec.user.name.clone(),
            database: spec.database.to_owned(),
        };
        if let Some(p) = self.map.read().expect("pools").get(&key) {
            return p.clone();
        }
        let mut map = self.map.write().expect("pools");
        map.entry(key.clone())
            .or_insert_with(|| {
                let c = &spec.config.config;
                // The user as now configured (the session's record is from its login, before
                // any reload that changed its server password or pool size), or as the latest
                // login of a looked-up role left it.
                let latest = self.user_now(&spec.user.name, spec.config);
                let user = latest.as_deref().unwrap_or(spec.user);
                let connect = connect_params(spec.address, user, spec.database, spec.config);
                Arc::new(Pool::new(
                    key,
                    spec.backend_index,
                    connect,
                    user.pool_size(&c.pool),
                    Tuning::from(&c.pool),
                    &self.metrics,
                ))
            })
            .clone()
    }

    /// A user as it is now: configured, or looked up (while `[auth_query]` is on and no
    /// `[[users]]` entry has the name).
    fn user_now(
        &self,
        name: &str,
        config: &crate::config::Loaded,
    ) -> Option<Arc<crate::config::User>> {
        if let Some(u) = config.users.get(name) {
            return Some(u.clone());
        }
        config.config.auth_query.as_ref()?;
        self.looked_up.read().expect("looked up").get(name).cloned()
    }

    /// Records what a looked-up role's login proved: its pools log in to the servers with it
    /// from now on (a client that logs in after its password changed brings the new one).
    pub fn learn(&self, user: Arc<crate::config::User>) {
        let name = user.name.clone();
        let same = |known: &HashMap<String, Arc<crate::config::User>>| {
            known.get(&name).is_some_and(|u| u.server == user.server)
        };
        // The same password logs in with the same keys: most logins change nothing.
        if same(&self.looked_up.read().expect("looked up")) {
            return;
        }
        let mut known = self.looked_up.write().expect("looked up");
        if same(&known) {
            return;
        }
        known.insert(name.clone(), user.clone());
        drop(known);
        for pool in self.map.read().expect("pools").values() {
            if pool.key.user == name {
                pool.connect.lock().expect("connect").credential = user.server.clone();
            }
        }
    }

    /// Applies a new configuration: resizes pools, updates credentials and timeouts, retires
    /// pools whose backend or user is gone.
    pub fn reconfigure(&self, config: &crate::config::Loaded) {
        if config.config.auth_query.is_none() {
            self.looked_up.write().expect("looked up").clear();
        } else {
            // A role now in [[users]] logs in as configured.
            self.looked_up
                .write()
                .expect("looked up")
                .retain(|name, _| !config.users.contains_key(name));
        }
        let mut map = self.map.write().expect("pools");
        map.retain(|key, pool| {
            let backend_ok = config.config.backends.iter().any(|b| {
                b.name.get_ref().as_str() == &*key.backend && b.address.get_ref() == &key.address
            });
            let user = self.user_now(&key.user, config);
            let Some(user) = user.filter(|_| backend_ok) else {
                pool.retire();
                return false;
            };
            pool.resize(user.pool_size(&config.config.pool));
            *pool.tuning.lock().expect("tuning") = Tuning::from(&config.config.pool);
            *pool.connect.lock().expect("connect") =
                connect_params(&key.address, &user, &key.database, config);
            true
        });
    }

    /// Runs maintenance every second until `stop`.
    pub async fn maintain_loop(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let pools: Vec<_> = self.map.read().expect("pools").values().cloned().collect();
            for p in pools {
                p.maintain().await;
            }
        }
    }

    /// Fails in-flight requests on every pool of a backend the monitor declared down.
    pub fn sever_backend(&self, backend: &str) {
        let pools: Vec<_> = self
            .map
            .read()
            .expect("pools")
            .values()
            .filter(|p| &*p.key.backend == backend)
            .cloned()
            .collect();
        for p in pools {
            p.sever();
        }
    }

    /// Closes the connections to `database` on every backend, idle ones at once, ones in use
    /// (a departed client's, finishing the proxy's own query) when checked in (before a client
    /// drops it: PostgreSQL refuses `DROP DATABASE` while others stay connected to it).
    /// Returns the pools touched.
    pub fn close_for_database(&self, database: &str) -> usize {
        self.close_open_where(|k| k.database == database)
    }

    /// Closes every connection open now, idle ones at once, ones in use when released (the
    /// admin console's `RECONNECT`: new server sessions pick up changed role or database
    /// settings, a new server certificate, a restarted extension). Returns the pools touched.
    pub fn reconnect(&self) -> usize {
        self.close_open_where(|_| true)
    }

    fn close_open_where(&self, which: impl Fn(&PoolKey) -> bool) -> usize {
        let pools: Vec<_> = self
            .map
            .read()
            .expect("pools")
            .values()
            .filter(|p| which(&p.key))
            .cloned()
            .collect();
        for p in &pools {
            p.close_open();
        }
        pools.len()
    }

    /// The connections marked to close when released (see [`Pool::marked_open`]) that are
    /// still open, in every pool or in `database`'s.
    pub fn marked_open(&self, database: Option<&str>) -> usize {
        self.map
            .read()
            .expect("pools")
            .values()
            .filter(|p| database.is_none_or(|db| p.key.database == db))
            .map(|p| p.marked_open())
            .sum()
    }

    /// Closes every idle connection (shutdown).
    pub fn close_idle(&self) {
        for p in self.map.read().expect("pools").values() {
            p.retire();
        }
    }

    /// A snapshot of every pool, ordered by key (for `/status` and the admin console).
    pub fn stats(&self) -> Vec<PoolStats> {
        let mut out: Vec<PoolStats> = self
            .map
            .read()
            .expect("pools")
            .values()
            .map(|p| {
                let waiting = p.permits.waiting();
                // One consistent snapshot (permits alone double-count a connection that is
                // being checked in or out).
                let c = p.conns.lock().expect("conns");
                PoolStats {
                    key: p.key.clone(),
                    size: p.size.load(Ordering::Relaxed),
                    idle: c
                        .idle
                        .iter()
                        .map(|x| (x.pid, x.created, x.idle_since))
                        .collect(),
                    in_use: c.sockets.len() - c.idle.len(),
                    opening: c.opening,
                    waiting,
                }
            })
            .collect();
        out.sort_by(|a, b| {
            (&a.key.backend, &a.key.user, &a.key.database).cmp(&(
                &b.key.backend,
                &b.key.user,
                &b.key.database,
            ))
        });
        out
    }
}

/// One pool at one moment.
pub struct PoolStats {
    /// Its identity.
    pub key: PoolKey,
    /// Its size limit.
    pub size: usize,
    /// Its idle connections: (server process id, opened, idle since), [`clock`] milliseconds.
    pub idle: Vec<(i32, u64, u64)>,
    /// Connections checked out.
    pub in_use: usize,
    /// Connections being opened.
    pub opening: usize,
    /// Checkouts waiting for a connection.
    pub waiting: usize,
}

fn connect_params(
    address: &str,
    user: &crate::config::User,
    database: &str,
    config: &crate::config::Loaded,
) -> ConnectParams {
    let pool = &config.config.pool;
    ConnectParams {
        address: address.to_owned(),
        user: user.name.clone(),
        credential: user.server.clone(),
        database: database.to_owned(),
        timeout: pool.connect_timeout,
        keepalive: pool.tcp_keepalive,
        tls: config.server_tls.clone(),
        derived: Default::default(),
    }
}
