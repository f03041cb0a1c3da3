//! Every pool, by (backend, user, database): created on first use, reconfigured on reload,
//! severed, closed and reported on as a whole.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{holders, ConnectParams, Pool, PoolKey, Tuning};
use crate::metrics::Metrics;

/// How long a pool that had connections is kept with none and nobody using it (one of a
/// database clients stopped using; PgBouncer's `autodb_idle_timeout` is the same hour).
const UNUSED_POOL_MS: u64 = 3_600_000;

/// All pools.
pub struct Pools {
    map: RwLock<HashMap<PoolKey, Arc<Pool>>>,
    /// Roles looked up with `[auth_query]`, as their latest login left them (the credential
    /// the servers take for them changes with their password).
    looked_up: RwLock<HashMap<String, Arc<crate::config::User>>>,
    /// Users a reload removed from `[[users]]`, as last configured: their sessions go on, and
    /// the pools they make again log in to the servers as the configuration last said (not
    /// with the password of the session's login, changed since, perhaps).
    removed: RwLock<HashMap<String, Arc<crate::config::User>>>,
    metrics: Arc<Metrics>,
    /// The configuration the latest [`reconfigure`](Pools::reconfigure) applied (set and read
    /// under the map's write lock): a pool created after it takes these settings even for a
    /// session that read the configuration before the reload.
    latest: std::sync::Mutex<Option<Arc<crate::config::Loaded>>>,
    /// Which client each server process serves (notifications name the notifier's pid).
    pub holders: holders::Holders,
    /// The databases `KILL`ed and not resumed since: their pools keep no connection (see
    /// [`Pools::kill_database`]).
    killed: RwLock<BTreeSet<String>>,
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
            removed: RwLock::new(HashMap::new()),
            metrics,
            latest: std::sync::Mutex::new(None),
            holders: holders::Holders::default(),
            killed: RwLock::new(BTreeSet::new()),
        }
    }

    /// The pool for a (backend, user, database), created on first use; `None` for a backend
    /// the latest configuration does not have at that address: a session still routing by
    /// the topology from before a reload that removed or moved it (until the monitor
    /// publishes the new one) must not bring back a pool that reload retired, which nothing
    /// would retire again. It routes again by the new topology.
    pub fn get(&self, spec: PoolSpec<'_>) -> Option<Arc<Pool>> {
        let key = PoolKey {
            backend: spec.backend_name.clone(),
            address: spec.address.to_owned(),
            user: spec.user.name.clone(),
            database: spec.database.to_owned(),
        };
        if let Some(p) = self.map.read().expect("pools").get(&key) {
            return Some(p.clone());
        }
        let mut map = self.map.write().expect("pools");
        let latest = self.latest.lock().expect("latest").clone();
        let config = latest.as_deref().unwrap_or(spec.config);
        if !configured(config, &key) {
            return None;
        }
        let pool = map
            .entry(key.clone())
            .or_insert_with(|| {
                let c = &config.config;
                // The user as now configured (the session's record is from its login, before
                // any reload that changed its server password or pool size), as the latest
                // login of a looked-up role left it, or as last configured before a reload
                // removed it.
                let latest = self.user_last(&spec.user.name, config);
                let user = latest.as_deref().unwrap_or(spec.user);
                let connect = connect_params(spec.address, user, spec.database, config);
                let pool = Pool::new(
                    key,
                    spec.backend_index,
                    connect,
                    user.pool_size(&c.pool),
                    Tuning::from(&c.pool),
                    &self.metrics,
                );
                // (Read under the map's write lock, which kill_database waits for before it
                // looks at the pools: a pool made meanwhile is closed one way or the other.)
                if self.killed.read().expect("killed").contains(spec.database) {
                    pool.closed.store(true, Ordering::Relaxed);
                }
                Arc::new(pool)
            })
            .clone();
        Some(pool)
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

    /// A user as last known: as now ([`user_now`](Self::user_now)), or as last configured
    /// before a reload removed it.
    fn user_last(
        &self,
        name: &str,
        config: &crate::config::Loaded,
    ) -> Option<Arc<crate::config::User>> {
        self.user_now(name, config)
            .or_else(|| self.removed.read().expect("removed").get(name).cloned())
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
    /// pools whose backend or user is gone. A server no longer configured at all (its address
    /// in no backend) is no longer probed (nor fenced, should it be an old primary): its
    /// connections in use end after what was sent on them, so that pinned and session-mode
    /// clients do not go on writing there, while a write in flight is answered rather than
    /// cut with its outcome unknown. A backend only renamed keeps them until they are
    /// released.
    pub fn reconfigure(&self, config: &Arc<crate::config::Loaded>) {
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
        let previous = self.latest.lock().expect("latest").replace(config.clone());
        {
            let mut removed = self.removed.write().expect("removed");
            removed.retain(|name, _| !config.users.contains_key(name));
            if let Some(previous) = previous {
                for (name, user) in &previous.users {
                    if !config.users.contains_key(name) {
                        removed.insert(name.clone(), user.clone());
                    }
                }
            }
        }
        map.retain(|key, pool| {
            let backend_ok = configured(config, key);
            let user = self.user_now(&key.user, config);
            let Some(user) = user.filter(|_| backend_ok) else {
                pool.retire();
                let address_gone = !config
                    .config
                    .backends
                    .iter()
                    .any(|b| b.address.get_ref() == &key.address);
                if address_gone {
                    pool.end_sessions();
                    // What still runs there after `shutdown_timeout` (a statement that does
                    // not end, a server that does not answer: nothing probes it now) is
                    // cancelled on the server, then cut.
                    if let Ok(rt) = tokio::runtime::Handle::try_current() {
                        let (pool, grace) = (pool.clone(), config.config.shutdown_timeout);
                        rt.spawn(async move {
                            tokio::time::sleep(grace).await;
                            pool.cancel_running().await;
                            pool.sever();
                        });
                    }
                }
                return false;
            };
            pool.resize(user.pool_size(&config.config.pool));
            *pool.tuning.lock().expect("tuning") = Tuning::from(&config.config.pool);
            *pool.connect.lock().expect("connect") =
                connect_params(&key.address, &user, &key.database, config);
            true
        });
    }

    /// Runs maintenance every second until `stop`, and forgets unused pools (see
    /// [`Pools::prune`]). Pools of a backend that is down or fenced in `cluster`'s view are
    /// not refilled to `min_size`: connections to a fenced old primary are what must not
    /// exist, and ones to a server that is down would fail.
    pub async fn maintain_loop(
        self: Arc<Self>,
        cluster: Arc<crate::cluster::Cluster>,
        stop: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let pools: Vec<_> = self.map.read().expect("pools").values().cloned().collect();
            let view = cluster.view();
            for p in &pools {
                // (By address too: a pool a session made for a backend's old address, with
                // the topology before a reload that moved it, is not refilled there.)
                let serving = view.backends.iter().any(|b| {
                    b.name == p.key.backend && b.address == p.key.address && b.up && !b.fenced
                });
                p.maintain(serving);
            }
            drop(pools);
            self.prune(super::clock::now_ms());
        }
    }

    /// Forgets the pools nobody uses that have no connection: at once when no connection
    /// to their database ever opened (a client that named a database that does not exist,
    /// or a role the server refuses), otherwise after [`UNUSED_POOL_MS`]. Pools are made for
    /// whatever database name a client that logged in to switchyard gives, so without this
    /// the list (and the upkeep of every pool each second) would grow without bound.
    fn prune(&self, now: u64) {
        let mut map = self.map.write().expect("pools");
        map.retain(|_, pool| {
            // Sessions, checked-out connections and upkeep tasks hold their own references;
            // under the write lock nobody can take one from the map. A refill's task is not
            // a use (a refill opening a connection leaves the pool not empty).
            let refill = usize::from(pool.refilling.load(Ordering::Acquire));
            if Arc::strong_count(pool) > 1 + refill || !pool.is_empty() {
                pool.unused_since.store(0, Ordering::Relaxed);
                return true;
            }
            let since = match pool.unused_since.load(Ordering::Relaxed) {
                0 => {
                    pool.unused_since.store(now.max(1), Ordering::Relaxed);
                    now
                }
                t => t,
            };
            let limit = if pool.ever_opened.load(Ordering::Relaxed) {
                UNUSED_POOL_MS
            } else {
                0
            };
            if now.saturating_sub(since) < limit {
                return true;
            }
            pool.retire();
            false
        });
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

    /// [`close_for_database`](Self::close_for_database) before a `DROP DATABASE` sent
    /// through switchyard: the pools of `database` are not refilled to `min_size` either
    /// until a checkout gets a connection from them again (the `DROP` failed and clients
    /// went on), so that none opens between this and the `DROP`.
    pub fn close_for_dropping(&self, database: &str) -> usize {
        self.close_open_where_then(
            |k| k.database == database,
            |p| {
                p.refill_armed.store(false, Ordering::Relaxed);
            },
        )
    }

    /// The admin console's `KILL db`: the pools of `database` keep no connection until
    /// [`resume`](Self::resume): the open ones close (idle ones at once, the others when
    /// released), and whatever is opened or given back later (a checkout that was waiting
    /// for a slot, a `min_size` refill, a reset) is closed too. Returns the pools touched.
    pub fn kill_database(&self, database: &str) -> usize {
        // The map, then the set, as get() takes them; both held throughout, so that a pool
        // made meanwhile and a RESUME at the same time see one order of events.
        let map = self.map.read().expect("pools");
        let mut killed = self.killed.write().expect("killed");
        killed.insert(database.to_owned());
        let mut n = 0;
        for p in map.values().filter(|p| p.key.database == database) {
            p.set_closed(true);
            n += 1;
        }
        n
    }

    /// `RESUME db` (or `RESUME`, `None`: every database): the pools of the database (of
    /// every database) `KILL`ed keep connections again.
    pub fn resume(&self, database: Option<&str>) {
        let map = self.map.read().expect("pools");
        let mut killed = self.killed.write().expect("killed");
        match database {
            Some(db) => {
                killed.remove(db);
            }
            None => killed.clear(),
        }
        for p in map.values() {
            if !killed.contains(&p.key.database) {
                p.set_closed(false);
            }
        }
    }

    /// Closes every connection open now, idle ones at once, ones in use when released (the
    /// admin console's `RECONNECT`: new server sessions pick up changed role or database
    /// settings, a new server certificate, a restarted extension). Returns the pools touched.
    pub fn reconnect(&self) -> usize {
        self.close_open_where(|_| true)
    }

    /// Closes the connections to `backend` open now, idle ones at once, ones in use when
    /// released (the server was promoted: see the cluster monitor).
    pub fn reconnect_backend(&self, backend: &str) -> usize {
        self.close_open_where(|k| &*k.backend == backend)
    }

    fn close_open_where(&self, which: impl Fn(&PoolKey) -> bool) -> usize {
        self.close_open_where_then(which, |_| {})
    }

    fn close_open_where_then(
        &self,
        which: impl Fn(&PoolKey) -> bool,
        then: impl Fn(&Pool),
    ) -> usize {
        let pools: Vec<_> = self
            .map
            .read()
            .expect("pools")
            .values()
            .filter(|p| which(&p.key))
            .cloned()
            .collect();
        for p in &pools {
            then(p);
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
                // Waiting for a slot, or (holding one) for a connection to come back from a
                // server with no slot left.
                let waiting = p.permits.waiting() + p.full_waiting.load(Ordering::Relaxed);
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
                    server_full: c.refused_lately(),
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
    /// The server refused one of its connections for lack of slots within the last 10 s (its
    /// checkouts wait for its own connections meanwhile).
    pub server_full: bool,
}

/// Whether `config` has the backend of `key` (its name at its address).
fn configured(config: &crate::config::Loaded, key: &PoolKey) -> bool {
    config
        .config
        .backends
        .iter()
        .any(|b| b.name.get_ref().as_str() == &*key.backend && b.address.get_ref() == &key.address)
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

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
