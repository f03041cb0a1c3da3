//! The first server contact of a client: it validates the database and startup settings
//! and yields the ParameterStatus values the client sees (the greeting).

use std::sync::Arc;

use bytes::BytesMut;

use super::settings::Settings;
use super::Fatal;
use crate::config::PoolMode;
use crate::net::{self, Stream};
use crate::pool::Pooled;
use crate::protocol::encode;

/// Whether applying `settings` makes PostgreSQL raise a notice: an `application_name` of
/// NAMEDATALEN (64) bytes or more is truncated with one ("identifier ... will be truncated").
fn raises_notice(settings: &Settings) -> bool {
    settings
        .0
        .get("application_name")
        .is_some_and(|v| v.len() >= 64)
}

/// Encodes the greeting after authentication: ParameterStatus for every reported parameter,
/// BackendKeyData, ReadyForQuery.
pub fn greeting(out: &mut BytesMut, params: &[(String, String)], pid: i32, secret: i32) {
    for (k, v) in params {
        encode::parameter_status(out, k, v);
    }
    encode::backend_key_data(out, pid, secret);
    encode::ready_for_query(out, crate::protocol::TxnStatus::Idle);
}

impl super::Session {
    /// The admin console's `DISABLE` closed the database to new logins: refused as
    /// PostgreSQL refuses a database that does not allow connections.
    fn refuse_if_disabled(&self) -> Result<(), Fatal> {
        if !self.app.disabled.refuses(&self.database) {
            return Ok(());
        }
        self.app.metrics.rejected("disabled");
        Err(Fatal::new(
            "55000",
            format!(
                "database \"{}\" is not currently accepting connections",
                self.database
            ),
        ))
    }

    /// The backend to log in on, in the session's view. Session mode keeps this connection
    /// for every statement: it must be the primary. Transaction mode only needs a server that
    /// knows the database and the user: the primary, or any other up when the primary could
    /// not be reached (`avoid`, a bit per backend tried) or there is none.
    fn login_backend(&self, avoid: u64) -> Option<usize> {
        let view = &self.current.view;
        let untried = |i: usize| avoid & (1u64 << (i % 64)) == 0;
        // (Starting from a place of the session's own: such logins spread over the servers.)
        let n = view.backends.len();
        let any_up = || {
            (0..n)
                .map(|k| (k + self.id as usize) % n)
                .find(|&i| view.backends[i].up && !view.backends[i].fenced && untried(i))
        };
        match self.pool_mode {
            PoolMode::Session => view.primary,
            PoolMode::Transaction => view.primary.filter(|&p| untried(p)).or_else(any_up),
        }
    }

    /// The backend to log in on and a connection checked out of its pool, waiting up to
    /// `primary_wait` for a primary when there is none. In transaction mode a server that
    /// cannot be reached (down, but not yet seen down by the monitor) is avoided: the login
    /// goes on to another that is up, so clients that connect for each request keep reading
    /// in the moments after the primary is lost.
    async fn login_checkout(&mut self, avoid: &mut u64) -> Result<(usize, Pooled), Fatal> {
        // Servers another checkout could not reach just now are not tried first.
        self.current.refresh(&self.app);
        let recent = super::choose::unreachable(&self.current.view);
        if self.pool_mode == PoolMode::Transaction && self.login_backend(*avoid | recent).is_some()
        {
            *avoid |= recent;
        }
        let mut rerouted = 0;
        loop {
            let (index, pool) = self.login_pool(*avoid).await?;
            // A session-mode client's server session is its own, as a direct connection's
            // would be, unless `session_reuse` lets it reuse one reset with DISCARD ALL.
            let own_session = self.pool_mode == PoolMode::Session
                && !self.current.config.config.pool.session_reuse;
            match pool.checkout_login(self.id, own_session).await {
                Ok(p) => return Ok((index, p)),
                Err(e)
                    if self.pool_mode == PoolMode::Transaction
                        && unreachable(&e)
                        && self.login_backend(*avoid | 1u64 << (index % 64)).is_some() =>
                {
                    tracing::info!(parent: &self.span, backend = %pool.key.backend, error = %e, "server unavailable: logging in on another");
                    *avoid |= 1u64 << (index % 64);
                    if let Some(b) = self.current.view.backends.get(index) {
                        let until = crate::pool::clock::now_ms() + super::attach::UNREACHABLE_MS;
                        b.stats
                            .unreachable_until
                            .store(until, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                // The server was declared down (or fenced) while the login's connection was
                // being opened, or a reload replaced its pool: the login is placed again by
                // the view published since (waiting for a primary as any login).
                Err(e @ (crate::pool::PoolError::Severed | crate::pool::PoolError::Closed))
                    if rerouted < super::retry::MAX_ATTEMPTS =>
                {
                    tracing::info!(parent: &self.span, backend = %pool.key.backend, error = %e, "the server or its pool went away during the login's checkout: placing it again");
                    rerouted += 1;
                }
                Err(e) => return Err(self.login_refused(&e)),
            }
        }
    }

    /// [`login_checkout`](Self::login_checkout), given up when the client closes its
    /// connection meanwhile (its connect timeout fired while the login waited for a slot of a
    /// full pool, or for a primary): it leaves at once, freeing its place under
    /// `max_client_connections`, instead of taking the next free slot and opening a server
    /// session for a client that is gone. What the client sends meanwhile is kept.
    async fn login_checkout_watched(
        &mut self,
        client: &mut Stream,
        avoid: &mut u64,
    ) -> Result<(usize, Pooled), Fatal> {
        // (Read into a buffer of its own: the session's read buffer is not touched unless
        // the client sent something.)
        let mut sent = BytesMut::new();
        let r = tokio::select! {
            r = self.login_checkout(avoid) => r,
            e = super::attach::client_gone(client, &mut sent) => {
                tracing::info!(parent: &self.span, "the client left while its login waited for a server connection");
                Err(Fatal::Io(e))
            }
        };
        if !sent.is_empty() {
            self.client.rbuf.extend_from_slice(&sent);
        }
        r
    }

    /// The backend to log in on (see [`login_backend`](Self::login_backend)) and its pool.
    async fn login_pool(&mut self, avoid: u64) -> Result<(usize, Arc<crate::pool::Pool>), Fatal> {
        self.current.refresh(&self.app);
        let wait = self.current.config.config.routing.primary_wait;
        let mut found = self.login_backend(avoid);
        if found.is_none() && self.app.cluster.wait_primary(wait).await.is_some() {
            self.current.refresh(&self.app);
            found = self.login_backend(avoid);
        }
        let mut index =
            found.ok_or_else(|| Fatal::new("57P03", "no database server is available"))?;
        let mut pool = self.pool(index);
        if pool.is_none() && self.new_topology_within(super::attach::TOPOLOGY_WAIT).await {
            // A reload removed or moved the backend: log in by the topology it made.
            index = self
                .login_backend(avoid)
                .ok_or_else(|| Fatal::new("57P03", "no database server is available"))?;
            pool = self.pool(index);
        }
        let pool = pool.ok_or_else(|| Fatal::new("57P03", "no database server is available"))?;
        Ok((index, pool))
    }

    /// Applies the client's startup settings to the connection it logs in on; the notices
    /// that raises. PostgreSQL sends the notices that applying the startup settings raises (a
    /// truncated application_name) during startup: they are relayed in the greeting. A setting
    /// known to raise one is applied again even on a connection that already has it.
    async fn apply_startup_settings(&self, p: &mut Pooled) -> Result<BytesMut, SetupFailed> {
        let mut notices = BytesMut::new();
        let mut applied = std::borrow::Cow::Borrowed(&*p.conn.applied);
        if raises_notice(&self.desired) {
            // (Only that setting: what else the connection has is reset or kept as usual.)
            applied.to_mut().0.remove("application_name");
        }
        let Some(sql) = self.desired.sync_sql(&applied, true) else {
            return Ok(notices);
        };
        let timeout = self.current.config.config.pool.connect_timeout;
        match p
            .conn
            .simple_query_noting(
                &sql,
                timeout,
                crate::pool::server::Asides {
                    notices: Some(&mut notices),
                    notifications: None,
                },
            )
            .await
        {
            Ok(Ok(_)) => {
                p.conn.applied = self.desired.clone();
                Ok(notices)
            }
            Ok(Err(e)) => Err(SetupFailed::Refused(e)),
            Err(_) => Err(SetupFailed::NoAnswer),
        }
    }

    /// The client's error for a failed login checkout.
    fn login_refused(&self, e: &crate::pool::PoolError) -> Fatal {
        match e.sqlstate() {
            // The client proved its identity to the proxy; the server does not know this role
            // (or has another password for it): a configuration mismatch, not a bad password.
            "28P01" | "28000" => Fatal::new(
                "28000",
                format!(
                    "the database server refused role \"{}\": {}",
                    self.user.name,
                    e.client_message()
                ),
            ),
            code => Fatal::new(code, e.client_message()),
        }
    }

    /// First server contact: validates database and startup settings on a real server and
    /// greets the client with that server's parameters.
    pub(super) async fn login(
        &mut self,
        client: &mut Stream,
        reg: &mut super::cancel::Registration,
    ) -> Result<(), Fatal> {
        self.refuse_if_disabled()?;
        // Counted from here (waiting out a PAUSE and for a server included), as PostgreSQL
        // counts a backend from its start: clients that got past admission together while
        // others were logging in cannot add up to more than the limit.
        let max = self.current.config.config.max_client_connections;
        match crate::metrics::CountedClient::admit(&self.app.metrics.clients, max) {
            Some(c) => self.counted = Some(c),
            None => {
                self.app.metrics.rejected("max_clients");
                return Err(Fatal::new("53300", "sorry, too many clients already"));
            }
        }
        // Waiting (for RESUME, for a pool slot, for a primary) until greeted, as SHOW CLIENTS
        // says. (No cancel can come: the client has no key yet.)
        self.cancel.waiting();
        if self.app.pause.holds(&self.database) {
            self.wait_resumed(client).await?;
            self.refuse_if_disabled()?;
        }
        // Session mode keeps this connection for every statement: it must still be the
        // primary's once checked out. Transaction mode only needs a server that serves.
        let target = match self.pool_mode {
            PoolMode::Session => super::route::Target::Primary,
            PoolMode::Transaction => super::route::Target::Replica,
        };
        let mut rerouted = 0;
        let mut avoid = 0u64;
        let (index, mut p, notices) = loop {
            // (The waits above may have crossed a reload that renumbered the backends:
            // login_checkout reads the view the pools are looked up in.)
            let (index, mut p) = self.login_checkout_watched(client, &mut avoid).await?;
            if self.app.pause.holds(&self.database) {
                // PAUSE came while this login waited for a server (and, not holding one yet,
                // was not waited for): nothing is run on the server until RESUME.
                p.release();
                self.wait_resumed(client).await?;
                self.refuse_if_disabled()?;
                continue;
            }
            if !self.still_routable(index, &p.pool().key.backend, target) {
                p.discard("role_changed", &self.app.metrics);
                rerouted += 1;
                if rerouted == 3 {
                    return Err(Fatal::new("57P03", "no database server is available"));
                }
                continue;
            }
            match self.apply_startup_settings(&mut p).await {
                Ok(notices) => break (index, p, notices),
                Err(SetupFailed::Refused(e)) => {
                    p.release();
                    return Err(Fatal::new(e.code, e.message));
                }
                Err(SetupFailed::NoAnswer) => {
                    p.discard("setup_failed", &self.app.metrics);
                    // The server stopped answering (lost, and not yet seen so by the
                    // monitor): in transaction mode another one greets the client.
                    avoid |= 1u64 << (index % 64);
                    rerouted += 1;
                    if self.pool_mode == PoolMode::Session
                        || rerouted == 3
                        || self.login_backend(avoid).is_none()
                    {
                        return Err(Fatal::new(
                            "08006",
                            "could not set up the server connection",
                        ));
                    }
                }
            }
        };
        self.cancel.end_wait();
        if self.app.cancels.adopt_pid(reg, p.conn.pid) {
            p.conn.told = crate::pool::clock::now_ms().max(1);
            // The client is told the process id of the server process it logs in on. In
            // session pooling it keeps that process for its whole session; in transaction
            // pooling the process is its own (`[pool] affinity`, the default) while the pool
            // has room.
            // Either way pg_backend_pid(), notifications and pg_terminate_backend agree with
            // the BackendKeyData. (Another client's key with that number: a random one, above
            // any process id.)
            self.client_pid = reg.pid;
        }
        self.superuser = p
            .conn
            .params
            .iter()
            .any(|(k, v)| k == "is_superuser" && v == "on");
        let mut out = notices;
        greeting(&mut out, &p.conn.params, reg.pid, reg.secret);
        self.reports = super::reports::Reports::greeted(&p.conn.params);
        for (name, value) in &p.conn.params {
            self.note_reported(name.as_bytes(), value.as_bytes());
        }
        if let Err(e) = net::send_all(client, &out).await {
            // The client left during its login: the connection goes back unused.
            p.release();
            return Err(Fatal::Io(e));
        }
        if self.pool_mode == PoolMode::Session {
            self.hold(p);
            // With `session_reuse` the connection goes to the next client unless this one
            // made state `DISCARD ALL` does not end, also in one of the database's functions:
            // the functions' list is read as a transaction-mode checkout reads it.
            if self.current.config.config.pool.session_reuse {
                self.read_functions(index).await;
            }
        } else {
            p.release();
        }
        Ok(())
    }
}

/// Why the client's startup settings could not be applied at login.
enum SetupFailed {
    /// The server refused one (its error goes to the client).
    Refused(crate::pool::server::ServerError),
    /// The server did not answer in time, or the connection failed.
    NoAnswer,
}

/// Whether a failed login checkout says the server cannot be reached (down, not yet seen so
/// by the monitor; declared down or replaced meanwhile), so that another may greet the
/// client: not a refusal of the role or database (any server would refuse it), nor a pool
/// busy for all of `checkout_timeout` or a server at its connection limit (overload).
fn unreachable(e: &crate::pool::PoolError) -> bool {
    // (Not a pool severed or retired meanwhile: the login is placed again by the new view.)
    !e.is_refusal()
        && !matches!(
            e,
            crate::pool::PoolError::Timeout(_)
                | crate::pool::PoolError::Full { .. }
                | crate::pool::PoolError::Severed
                | crate::pool::PoolError::Closed
        )
}
