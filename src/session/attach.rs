//! Server connections for a client: checking a connection out for a request (routing,
//! settings sync, sequence state), reading settings or the commit position back when a
//! transaction ends, giving the connection back, and handing it back clean when the client
//! leaves. (The first server contact at login is in login.rs; losing a connection, in
//! retry.rs.)

use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncReadExt;

use super::cancel;
use super::route::Target;
use super::{settings, Fatal, Pass, ReadBack, Session};
use crate::config::PoolMode;
use crate::net::Stream;
use crate::pool::{Pool, PoolSpec, Pooled};
use crate::protocol::{encode, tag, Header, TxnStatus};

/// How long a request waits for the monitor to publish the topology of a reload that removed
/// or moved the backend it was routed to.
pub(super) const TOPOLOGY_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Reads the primary's WAL position after a commit (for read-your-writes).
pub(super) const COMMIT_LSN_SQL: &str =
    "SELECT pg_catalog.pg_current_wal_insert_lsn()::pg_catalog.text";

/// What a request the client cancelled before it reached a server is answered (PostgreSQL's
/// own words for a cancelled statement).
pub(super) const CANCELLED: super::route::NoBackend =
    ("57014", "canceling statement due to user request");

/// How long reads avoid a replica a checkout could not reach.
pub(super) const UNREACHABLE_MS: u64 = 1000;

/// Whether a checkout's failure says the primary is down or restarting (`Some`: whether it
/// failed at once, refused or reset, rather than after the connect timeout): not a refused
/// login, a full server (53300) or pool, nor a protocol or TLS setup problem.
fn primary_outage(e: &crate::pool::PoolError) -> Option<bool> {
    use crate::pool::ConnectError as C;
    match e {
        crate::pool::PoolError::Connect(c) => match c {
            C::Io { .. } => Some(true),
            C::Timeout(_) => Some(false),
            // Shutting down, starting up, in crash recovery.
            C::Refused { code, .. } if code.starts_with("57P") => Some(true),
            // A forwarder in front of a server that is gone accepts, then closes.
            C::Tls {
                source: crate::net::tls::TlsConnectError::Io(_),
                ..
            } => Some(true),
            _ => None,
        },
        _ => None,
    }
}

impl Session {
    /// The pool for backend `index` in the current topology.
    pub(super) fn pool(&mut self, index: usize) -> Option<Arc<Pool>> {
        if self.current.view.topology != self.topology {
            for pool in self.pools.drain(..).flatten() {
                pool.disown(self.id);
            }
            self.topology = self.current.view.topology;
        }
        if let Some(slot) = self.pools.get_mut(index) {
            match slot {
                Some(p) if !p.is_retired() => return Some(p.clone()),
                // A reload retired it (its user's entry changed or went, the topology did
                // not): the session goes on with the pool its login now gets.
                Some(p) => {
                    p.disown(self.id);
                    *slot = None;
                }
                None => {}
            }
        }
        let view = self.current.view.clone();
        let b = view.backends.get(index)?;
        let config = self.app.config.load();
        // (None: a reload removed or moved the backend, and the monitor has not published
        // the new topology yet.)
        let pool = self.app.pools.get(PoolSpec {
            backend_index: index,
            backend_name: &b.name,
            address: &b.address,
            user: &self.user,
            database: &self.database,
            config: &config,
        })?;
        if self.pools.len() <= index {
            self.pools.resize(index + 1, None);
        }
        self.pools[index] = Some(pool.clone());
        Some(pool)
    }

    /// Waits up to `wait` for a topology newer than the session's current view; whether one
    /// came (the session's view is refreshed then).
    pub(super) async fn new_topology_within(&mut self, wait: std::time::Duration) -> bool {
        let topology = self.current.view.topology;
        let newer = self.app.cluster.wait_topology_after(topology, wait).await;
        self.current.refresh(&self.app);
        newer
    }

    /// The primary (backend `index`) could not be reached for a request nothing of which was
    /// sent: whether to route it again. A server just killed or restarting refuses
    /// connections for a while before the monitor has seen `fall` probes fail; a request
    /// waits for that word as it would wait for a primary once the server is known down, up
    /// to `primary_wait` since its first failed attempt: until the view no longer has that
    /// server as an up primary, or one `[health] interval` (a probe's time) has passed, so a
    /// restarted primary is tried again at that pace. `Some(false)`: the wait is used up;
    /// `None`: the client cancelled the request meanwhile.
    /// A connection attempt that took its whole timeout (`quick` false: a server that does
    /// not answer) is not made again at that pace: the request waits for the monitor.
    async fn await_primary_news(&mut self, index: usize, quick: bool) -> Option<bool> {
        let now = tokio::time::Instant::now();
        self.primary_unreachable_since.get_or_insert(now);
        let left = self.primary_wait_left();
        if left.is_zero() {
            return Some(false);
        }
        let pace = if quick {
            self.current.config.config.health.interval
        } else {
            left
        };
        let pause = now + left.min(pace);
        let same = |view: &crate::cluster::ClusterView| {
            view.primary == Some(index) && view.backends.get(index).is_some_and(|b| b.up)
        };
        let news = async {
            loop {
                let now = tokio::time::Instant::now();
                if now >= pause || !same(&self.app.cluster.view()) {
                    break;
                }
                self.app.cluster.changed(pause - now).await;
            }
        };
        tokio::select! {
            () = news => {}
            () = self.cancel.cancelled_unattached() => return None,
        }
        self.current.refresh(&self.app);
        Some(true)
    }

    /// How long the current request may still wait for a primary: `primary_wait`, less what
    /// it already waited for an unreachable one (see `await_primary_news`).
    pub(super) fn primary_wait_left(&self) -> std::time::Duration {
        let wait = self.current.config.config.routing.primary_wait;
        match self.primary_unreachable_since {
            Some(t) => wait.saturating_sub(t.elapsed()),
            None => wait,
        }
    }

    /// The request was not sent to backend `index`'s connection and goes to the routing again:
    /// one more attempt of its bounded number, and a read avoids that backend.
    fn route_again(&mut self, index: usize, target: Target) {
        self.retry_attempts += 1;
        if target == Target::Replica {
            self.avoid |= 1u64 << (index % 64);
        }
    }

    /// The admin console paused new transactions (of every database or of this client's): the
    /// request waits, unsent, until `RESUME`.
    /// A shutdown meanwhile ends the session (nothing of the request reached a server), and so
    /// does the client closing its connection (a login whose client timed out, a request
    /// given up): it leaves, and frees its place under `max_client_connections`, now rather
    /// than at `RESUME`. What the client sends meanwhile is kept for later (up to
    /// [`super::relay::OUT_HIGH`] bytes; past that it is not read, nor its leaving noticed).
    /// Returns `false` when the client cancelled the request meanwhile (see
    /// [`waiting_for_server`](Self::waiting_for_server); a login has none to cancel).
    pub(super) async fn wait_resumed(&mut self, client: &mut Stream) -> Result<bool, Fatal> {
        tracing::debug!(parent: &self.span, "paused: the request waits for RESUME");
        self.app.metrics.pause_waits.inc();
        // (Read into a buffer of its own, appended to the session's afterwards: see
        // `client_gone`.)
        let mut sent = BytesMut::new();
        let gone = client_gone(client, &mut sent);
        let r = tokio::select! {
            _ = self.app.pause.resumed(&self.database) => Ok(true),
            () = self.cancel.cancelled_unattached() => Ok(false),
            _ = self.app.shutdown.cancelled() => Err(Fatal::new(
                "57P01",
                "terminating connection because switchyard is shutting down",
            )),
            _ = self.cancel.kill.cancelled() => Err(Fatal::new(
                "57P01",
                "terminating connection due to administrator command",
            )),
            e = gone => {
                tracing::info!(parent: &self.span, "the client left while waiting for RESUME");
                Err(Fatal::Io(e))
            }
        };
        if !sent.is_empty() {
            self.client.rbuf.extend_from_slice(&sent);
        }
        r
    }

    /// The request at the front of the client buffer waits for a server connection from now
    /// until [`hold`](Self::hold) (or until it is answered without one): a cancel meanwhile
    /// ends the wait, and the request is answered as PostgreSQL answers a cancelled statement
    /// ([`fail_cancelled`](Self::fail_cancelled)) instead of running.
    fn waiting_for_server(&mut self) {
        self.cancel.waiting();
        self.between_servers = true;
    }

    /// The client cancelled its request before it reached a server: nothing of it ran.
    fn fail_cancelled(&mut self) {
        tracing::debug!(parent: &self.span, "the request was cancelled before it reached a server");
        self.fail_request(CANCELLED.0, CANCELLED.1);
    }

    /// Takes ownership of a checked-out connection.
    pub(super) fn hold(&mut self, mut p: Pooled) {
        self.server_fatal = None;
        self.fatal_unstarted = false;
        // Idle in the pool: no portal exists there.
        p.conn.prepared.mark_quiet();
        // (Or-ed: a connection given back unused for a PAUSE keeps what the first said.)
        self.cancelled_between |= self.cancel.set(cancel::Target {
            pool: p.pool().clone(),
            pid: p.conn.pid,
            secret: p.conn.secret,
            opened: p.conn.created,
            held: self.pool_mode == PoolMode::Session || self.pin.is_some(),
        });
        self.between_servers = false;
        if p.conn.holder.is_none() {
            let backend = p.pool().key.backend.clone();
            p.conn.holder = Some(self.app.pools.holders.register(backend, p.conn.pid));
        }
        if let Some(h) = &p.conn.holder {
            h.set(self.client_pid);
        }
        self.server = Some(p);
        self.claim_sequences();
    }

    /// Whether backend `index` of the view as it is now is still what a request was routed
    /// to: up, not fenced, and the primary if it went there as one. Asked once a checked-out
    /// connection is registered with its pool. The monitor publishes a failure or a fence
    /// before it severs the backend's connections, and a connection registered after that
    /// sever is not cut: either it is in the sever, or the view read here shows the change.
    pub(super) fn still_routable(&mut self, index: usize, backend: &str, target: Target) -> bool {
        self.current.refresh(&self.app);
        let view = &self.current.view;
        view.backends
            .get(index)
            .is_some_and(|b| &*b.name == backend && b.up && !b.fenced)
            && (target != Target::Primary || view.primary == Some(index))
    }

    /// Gives the connection just checked out back to its pool, nothing of the request sent.
    /// Unless taking it queued something unsent (clearing its sequence state): then the
    /// connection is not what it claims to be, and is closed (`reason`).
    fn give_back_unused(&mut self, reason: &'static str) {
        if self.swbuf.is_empty() && self.pending.is_empty() {
            self.release();
        } else {
            self.swbuf.clear();
            self.pending.abandon();
            self.discard_server(reason);
        }
    }

    /// Checks out a server connection for the request at the front of the client buffer. On
    /// failure the request is answered with an error and skipped; the client stays connected.
    pub(super) async fn attach(&mut self, client: &mut Stream) -> Result<(), Fatal> {
        if self.lost_txn {
            self.lost_txn = false;
            // The block is failed from now on, unless this request ends it: a COMMIT ends a
            // failed block in PostgreSQL too (a ROLLBACK never comes here: see `query`).
            self.aborted_txn = !self.front_ends_block();
            self.failed_chain = None;
            self.fail_request(
                "08006",
                "the server connection was lost; the transaction was rolled back",
            );
            return Ok(());
        }
        self.waiting_for_server();
        if self.app.pause.holds(&self.database) && !self.wait_resumed(client).await? {
            self.fail_cancelled();
            return Ok(());
        }
        self.current.refresh(&self.app);
        let decision = self.decide();
        self.force_primary = false;
        let (mut index, d) = match self.choose(decision).await {
            Ok(x) => x,
            Err((code, message)) => {
                self.fail_request(code, message);
                self.deferred_begin = None;
                return Ok(());
            }
        };
        if d.target == Target::Primary {
            // Waiting for a primary may have crossed a reload that renumbered the backends:
            // the index must be the primary of the view the pools are looked up in.
            self.current.refresh(&self.app);
            if self.current.view.primary.is_none() {
                // The primary went from the view after it was chosen (a reload that moved it
                // is published before its first probe; a read-your-writes wait came first):
                // the request waits for one, as it would have if there had been none then.
                let wait = self.primary_wait_left();
                tokio::select! {
                    _ = self.app.cluster.wait_primary(wait) => {}
                    () = self.cancel.cancelled_unattached() => {
                        self.fail_cancelled();
                        return Ok(());
                    }
                }
                self.current.refresh(&self.app);
            }
            match self.current.view.primary {
                Some(p) => index = p,
                None => {
                    let (code, message) = super::choose::NO_PRIMARY;
                    self.fail_request(code, message);
                    self.deferred_begin = None;
                    return Ok(());
                }
            }
        }
        let Some(pool) = self.pool(index) else {
            // The backend is gone from the configuration a reload just installed: route
            // again once the monitor publishes the topology it made (at once, normally).
            if self.retry_attempts < super::retry::MAX_ATTEMPTS
                && self.new_topology_within(TOPOLOGY_WAIT).await
            {
                // (One attempt more, but no backend avoided: `index` was the old view's.)
                self.retry_attempts += 1;
                return Ok(());
            }
            self.fail_request("57P03", "no server is available");
            return Ok(());
        };
        // (Biased: a connection at hand is taken without looking at the cancel slot.)
        let checkout = tokio::select! {
            biased;
            r = pool.checkout(self.id) => Some(r),
            () = self.cancel.cancelled_unattached() => None,
        };
        let Some(checkout) = checkout else {
            self.fail_cancelled();
            return Ok(());
        };
        match checkout {
            Ok(p) if !self.still_routable(index, &pool.key.backend, d.target) => {
                tracing::info!(parent: &self.span, backend = %pool.key.backend, "the server changed role or went away during the checkout: routing again");
                p.discard("role_changed", &self.app.metrics);
                return Ok(());
            }
            Ok(p) => self.hold(p),
            // The monitor declared the server down or fenced it while a connection was being
            // opened for this request (closed unused), or a reload replaced the pool (its
            // backend renamed, moved or removed): route it again, by the new view and pools (a
            // write waits for a primary as any other).
            Err(e @ (crate::pool::PoolError::Severed | crate::pool::PoolError::Closed))
                if self.retry_attempts < super::retry::MAX_ATTEMPTS =>
            {
                tracing::info!(parent: &self.span, backend = %pool.key.backend, error = %e, "the server or its pool went away during the checkout: routing again");
                self.route_again(index, d.target);
                return Ok(());
            }
            Err(e)
                if d.target == Target::Replica
                    && self.retry_attempts < super::retry::MAX_ATTEMPTS
                    && !e.is_refusal()
                    // A pool busy for all of `checkout_timeout` is overload, not an outage:
                    // waiting as long again elsewhere would hold the client for a multiple of
                    // it before its 53300.
                    && !matches!(
                        e,
                        crate::pool::PoolError::Timeout(_) | crate::pool::PoolError::Full { .. }
                    ) =>
            {
                // A replica that cannot be reached: the read goes elsewhere, and the next
                // reads for a second too.
                tracing::info!(parent: &self.span, backend = %pool.key.backend, error = %e, "replica unavailable: routing the read elsewhere");
                if let Some(b) = self.current.view.backends.get(index) {
                    let until = crate::pool::clock::now_ms() + UNREACHABLE_MS;
                    b.stats
                        .unreachable_until
                        .store(until, std::sync::atomic::Ordering::Relaxed);
                }
                self.app
                    .metrics
                    .retries
                    .with_label_values(&["replica_unavailable"])
                    .inc();
                self.route_again(index, d.target);
                return Ok(());
            }
            Err(e) => {
                if let Some(quick) = primary_outage(&e).filter(|_| d.target == Target::Primary) {
                    match self.await_primary_news(index, quick).await {
                        Some(true) => {
                            tracing::info!(parent: &self.span, backend = %pool.key.backend, error = %e, "primary unreachable: routing again after the monitor's next word on it");
                            return Ok(());
                        }
                        Some(false) => {}
                        None => {
                            self.fail_cancelled();
                            return Ok(());
                        }
                    }
                }
                tracing::warn!(parent: &self.span, error = %e, "server checkout failed");
                self.fail_request(e.sqlstate(), &e.client_message());
                self.deferred_begin = None;
                return Ok(());
            }
        }
        if self.app.pause.holds(&self.database) {
            // PAUSE came while this checkout was under way (and saw no connection held, or
            // sees this one now): give it back unused and wait.
            self.give_back_unused("paused_at_checkout");
            self.waiting_for_server();
            if !self.wait_resumed(client).await? {
                self.fail_cancelled();
            }
            return Ok(());
        }
        if std::mem::take(&mut self.cancelled_between) {
            // The client cancelled its request while it waited for this connection or was
            // being repeated: it is answered as its first server would have (nothing of it
            // was sent to this one).
            self.give_back_unused("cancelled_between_servers");
            self.fail_cancelled();
            return Ok(());
        }
        self.target = d.target;
        self.fresh_attach = true;
        self.ending_block = false;
        self.batch_ends_block = false;
        self.ended_block_last = false;
        self.backend_index = Some(index);
        if let Some(b) = self.current.view.backends.get(index) {
            b.stats
                .outstanding
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.app
            .metrics
            .count_routed(d.target == Target::Primary, d.reason);
        self.read_functions(index).await;
        self.check_statement_shapes().await;
        if self.server.as_ref().is_some_and(|p| p.conn.broken) {
            // A query of the proxy's own failed on the connection or outlived its timeout:
            // its answer may still come, ahead of anything sent now. Nothing of the client's
            // was sent, so the request goes to another connection (a bounded number of times).
            tracing::info!(parent: &self.span, backend = %pool.key.backend, "a setup query failed on the server connection just checked out: routing again");
            self.swbuf.clear();
            self.pending.abandon();
            self.discard_server("setup_failed");
            if self.retry_attempts >= super::retry::MAX_ATTEMPTS {
                self.fail_request("08006", "the server connection failed while it was set up");
                self.deferred_begin = None;
            } else {
                self.route_again(index, d.target);
            }
            return Ok(());
        }
        self.sync_settings();
        self.close_unheld_statements();
        if let Some(begin) = self.deferred_begin.take() {
            self.swbuf.extend_from_slice(&begin.frame);
            for _ in 0..begin.queries {
                self.pending.expect(
                    super::pending::Kind::Query,
                    super::pending::Mode::Swallow,
                    super::pending::Hook::None,
                );
            }
            // Open from the client's view since the proxy answered the BEGIN.
            self.txn = TxnStatus::InTransaction;
        }
        if std::mem::take(&mut self.aborted_txn) {
            // The client's block failed without a server: open one here and make it fail, so
            // that the server answers the rest of it as it would in the client's own (errors
            // 25P02, COMMIT answered ROLLBACK, the extended protocol included).
            self.own_query(
                "BEGIN; SELECT 'switchyard: this transaction failed earlier'::pg_catalog.int4",
                super::pending::Mode::Restore,
                super::pending::Hook::None,
            );
            self.txn = TxnStatus::Failed;
        }
        if d.write
            && d.target == Target::Primary
            && self.current.config.config.routing.read_write_split
        {
            self.wrote = true;
        }
        if d.retryable && d.target == Target::Replica {
            self.retry = Some(super::retry::Retry {
                may_write: d.write,
                ..Default::default()
            });
        }
        Ok(())
    }

    /// Whether a query the proxy sends now runs in a transaction of its own: no transaction
    /// open and nothing of the client's in flight (the proxy's own queries ahead of it are
    /// simple queries outside any block).
    pub(super) fn standalone(&self) -> bool {
        self.txn == TxnStatus::Idle && !self.pending.client_waiting()
    }

    /// Queues the settings difference between this client and the attached connection.
    pub(super) fn sync_settings(&mut self) {
        let standalone = self.standalone();
        let Some(p) = self.server.as_mut() else {
            return;
        };
        if settings::same(&self.desired, &p.conn.applied) {
            return;
        }
        let applied = std::mem::replace(&mut p.conn.applied, self.desired.clone());
        if let Some(sql) = self.desired.sync_sql(&applied, standalone) {
            self.own_query(
                &sql,
                super::pending::Mode::Swallow,
                super::pending::Hook::None,
            );
        }
    }

    /// Whether the request at the front of the client buffer is one statement that ends a
    /// transaction block without beginning another (`COMMIT`, `END`, `ROLLBACK`, `ABORT`,
    /// `PREPARE TRANSACTION`; not `AND CHAIN`).
    fn front_ends_block(&self) -> bool {
        self.front_statement_text()
            .is_some_and(|text| self.ends_block(text))
    }

    /// Whether `text` is one statement that ends a transaction block without beginning
    /// another (see [`Self::front_ends_block`]).
    pub(super) fn ends_block(&self, text: &[u8]) -> bool {
        let a = super::route::analyze(&self.app.classifier.load(), text, self.opaque_backslashes);
        a.statements == 1
            && matches!(
                a.txn,
                crate::sql::TxnControl::Commit
                    | crate::sql::TxnControl::Rollback
                    | crate::sql::TxnControl::PrepareTransaction
            )
            && !std::str::from_utf8(text).is_ok_and(crate::sql::chains)
    }

    /// Answers the request at the front of the client buffer with an error, without a server.
    /// Inside a transaction block (one the proxy answered BEGIN for, or one whose server was
    /// lost) the block is failed from then on, as PostgreSQL's would be. Counted in
    /// `errors_total` here.
    pub(super) fn fail_request(&mut self, code: &str, message: &str) {
        self.front_query = None;
        // The request is over: the next one may try every backend again.
        self.request_over();
        self.fail_held_block();
        let status = if self.aborted_txn {
            TxnStatus::Failed
        } else {
            TxnStatus::Idle
        };
        self.app.metrics.error(code);
        encode::error(&mut self.client.wbuf, "ERROR", code, message);
        let front = Header::peek(&self.client.rbuf, usize::MAX).ok().flatten();
        match front {
            Some(h) if h.tag == tag::QUERY || h.tag == tag::FUNCTION_CALL => {
                let have = self.client.rbuf.len().min(h.frame_len);
                self.client.rbuf.advance(have);
                if have < h.frame_len {
                    self.client_pass = Pass::Drop(h.frame_len - have);
                }
                encode::ready_for_query(&mut self.client.wbuf, status);
                self.txn = TxnStatus::Idle;
            }
            _ => self.skip_until_sync = true,
        }
    }

    /// After responses arrived: read settings or the commit position back, or give the
    /// connection back when the transaction is over.
    /// Returns whether the connection was released.
    pub(super) fn settle(&mut self) -> bool {
        let Some(p) = self.server.as_mut() else {
            return false;
        };
        let quiet = self.pending.is_empty()
            && !self.batch_open
            && !self.skip_until_sync
            && self.txn == TxnStatus::Idle
            && self.swbuf.is_empty()
            && self.client_pass == Pass::None
            && self.server_pass == 0;
        if !quiet {
            return false;
        }
        let pooled = self.pool_mode == PoolMode::Transaction && self.pin.is_none();
        let settings = self.capture && pooled;
        // Known again once read back, or when nothing changed them but for the transaction
        // (a `SET LOCAL`); not for a client whose settings are not read back (session
        // pooling, pinned), once it changed one: `desired` stays what it was, so its Parses
        // are shared with nobody from then on.
        self.settings_unread |= self.capture && !pooled;
        if settings || !self.settings_unread {
            self.context_unsettled = false;
        }
        self.capture = false;
        let state = std::mem::take(&mut self.check_state);
        let lsn = self.ryw.commit_pending() && !p.conn.broken;
        if settings || lsn {
            let sql = match (settings, lsn) {
                (true, true) => format!(
                    "{}; {}",
                    settings::capture_sql(&self.custom_names, &self.user.name, state),
                    COMMIT_LSN_SQL
                ),
                (true, false) => settings::capture_sql(&self.custom_names, &self.user.name, state),
                _ => COMMIT_LSN_SQL.to_owned(),
            };
            self.capturing = (settings, lsn);
            self.capture_state = state;
            self.own_query(
                &sql,
                super::pending::Mode::Capture,
                super::pending::Hook::None,
            );
            return false;
        }
        if !pooled {
            return false;
        }
        // The next request is routed afresh (it may be a read for a replica).
        self.release();
        true
    }

    /// Returns the server connection to its pool, or closes it when a cancel of the client's
    /// is on its way there or may be (one that could not be delivered). Returns whether one
    /// is: a request given up on that connection to run elsewhere is then cancelled rather
    /// than repeated (see `requeue_request`).
    pub(super) fn release(&mut self) -> bool {
        let Some(p) = self.server.take() else {
            return false;
        };
        self.detach_bookkeeping();
        if self.cancel.clear() {
            p.release();
            false
        } else {
            p.discard("cancel_in_flight", &self.app.metrics);
            true
        }
    }

    /// Closes the attached server connection (not fit for another client). Returns whether a
    /// cancel was on its way to it, as [`release`](Self::release) does.
    pub(super) fn discard_server(&mut self, reason: &str) -> bool {
        let Some(p) = self.server.take() else {
            return false;
        };
        self.detach_bookkeeping();
        let cancel_pending = !self.cancel.clear();
        p.discard(reason, &self.app.metrics);
        cancel_pending
    }

    /// Per-attachment state to clear when the server connection goes.
    pub(super) fn detach_bookkeeping(&mut self) {
        self.server_pass = 0;
        self.batch_open = false;
        self.bound_in_batch = false;
        self.executed_in_batch = false;
        self.flushed_batch = false;
        self.copy_in = false;
        self.read_back = ReadBack::Fine;
        self.capture_retries = 0;
        self.wrote = false;
        self.uncount_outstanding();
        self.ryw.end_commit(None);
    }

    /// This session's schema change is no longer in flight (its transaction ended, or its
    /// connection or the session did).
    pub(super) fn end_schema_change(&mut self) {
        if std::mem::take(&mut self.change_counted) {
            self.app.statements.end_change();
        }
    }

    /// Ends the attached backend's count of this session's request (also when the session's
    /// task dies: see `Drop for Session`).
    pub(super) fn uncount_outstanding(&mut self) {
        if let Some(i) = self.backend_index.take() {
            // The view the connection was attached under (stats counted in the same place).
            if let Some(b) = self.current.view.backends.get(i) {
                let _ = b.stats.outstanding.fetch_update(
                    std::sync::atomic::Ordering::Relaxed,
                    std::sync::atomic::Ordering::Relaxed,
                    |n| n.checked_sub(1),
                );
            }
        }
    }

    /// Ends the session: hands the server connection back clean, or closes it.
    pub(super) async fn finish(&mut self) {
        self.counted = None;
        let Some(mut p) = self.server.take() else {
            return;
        };
        p.conn.owner = 0;
        let cancel_done = self.cancel.clear();
        // An extended-protocol batch without its Sync leaves the server inside an implicit
        // transaction, or ignoring everything until a Sync after an error.
        let mid_batch = self.batch_open || self.skip_until_sync;
        // The client wrote and left before its commit's position was read back: the cleanup
        // below reads it, and the user's and the proxy's watermarks wait for it (the same
        // user's next connection must see that write). Given up if the connection is closed
        // unread instead.
        let mut lsn = self.captured_lsn.take();
        let commit = match (self.capturing.1, lsn) {
            // Not asked yet (the connection was not quiet since: a batch of the client's
            // open behind the commit): read on another connection to the primary.
            (false, _) => {
                if let Some(c) = self.ryw.hand_off() {
                    self.read_position_elsewhere(c);
                }
                None
            }
            // (Its answer is already here: the watermarks are raised now.)
            (true, Some(_)) => {
                if let Some(c) = self.ryw.hand_off() {
                    c.resolve(lsn);
                }
                None
            }
            (true, None) => self.ryw.hand_off(),
        };
        self.detach_bookkeeping();
        // Only the proxy's own queries after the client's last answer are in flight (reading a
        // commit's position or settings back: a client that writes and leaves at once): the
        // connection is fine once they are answered.
        let own_queries = self
            .pending
            .own_queries_only()
            .filter(|_| !mid_batch)
            .unwrap_or(0);
        let busy = (!self.pending.is_empty() && own_queries == 0)
            || mid_batch
            || self.client_pass != Pass::None
            || self.server_pass > 0
            || (!self.swbuf.is_empty() && own_queries == 0);
        if busy {
            if self.cancel.kill.is_cancelled() {
                // Ended by the proxy (`KILL`, `pg_terminate_backend`, a shutdown past its
                // timeout) while its request ran: as a terminated backend's, the statement
                // ends too (closing the socket stops it only once the server writes, and it
                // holds its locks meanwhile). (Not for a client that left on its own: connected
                // directly, its statement would run on.)
                // (Waited for, boundedly: a shutdown waits for the sessions, not for tasks
                // they would leave behind.)
                let (pid, secret) = (p.conn.pid, p.conn.secret);
                let open = crate::net::server_addr::open_plain(&p.pool().key.address);
                let limit = std::time::Duration::from_secs(1);
                if let Err(e) = super::cancel::cancel_over(open, pid, secret, limit, limit).await {
                    tracing::warn!(error = %e, "cancel request to server failed");
                }
            }
            p.discard("client_left_mid_request", &self.app.metrics);
            return;
        }
        if !cancel_done {
            p.discard("cancel_in_flight", &self.app.metrics);
            return;
        }
        let own_session = self.pool_mode == PoolMode::Session || self.pin.is_some();
        if own_session
            && (!self.app.config.load().config.pool.session_reuse || self.pin_outlives_reset)
        {
            // The server session was this client's alone (session mode, or pinned by state
            // that `DISCARD ALL` does not fully undo: a temporary schema, loaded libraries):
            // the next client gets a fresh one. With `session_reuse`, so does the next client
            // after one that left state `reset_query` does not clear at all and another
            // client must not inherit (a named dblink connection, a replication origin).
            if let Some(commit) = commit {
                let unsent = std::mem::take(&mut self.swbuf);
                let timeout = self.app.config.load().config.pool.connect_timeout;
                let metrics = self.app.metrics.clone();
                tokio::spawn(async move {
                    p.conn
                        .finish_queries(&unsent, own_queries, timeout, |row| {
                            commit_position(row, &mut lsn)
                        })
                        .await;
                    commit.resolve(lsn);
                    p.discard("session_ended", &metrics);
                });
                return;
            }
            p.discard("session_ended", &self.app.metrics);
            return;
        }
        let rollback = self.txn != TxnStatus::Idle;
        // Settings changed and not read back yet (the client left with the SET's answer, or
        // before the proxy's reading them back was answered): what the connection carries is
        // unknown. (A commit position's read-back changes nothing.)
        let lsn_only = own_queries == 1 && self.capturing == (false, true);
        let reset = self.pin.is_some()
            || self.pool_mode == PoolMode::Session
            || p.conn.needs_reset
            || self.capture
            || (own_queries > 0 && !lsn_only);
        if !rollback && !reset && own_queries == 0 {
            p.release();
            return;
        }
        let unsent = std::mem::take(&mut self.swbuf);
        let config = self.app.config.load_full();
        let metrics = self.app.metrics.clone();
        // Cleaning up costs round trips: do it off the client's task.
        tokio::spawn(async move {
            let timeout = config.config.pool.connect_timeout;
            if own_queries > 0 {
                let idle = p
                    .conn
                    .finish_queries(&unsent, own_queries, timeout, |row| {
                        commit_position(row, &mut lsn)
                    })
                    .await;
                if let Some(commit) = commit {
                    commit.resolve(lsn);
                }
                if !idle {
                    p.discard("client_left_mid_request", &metrics);
                    return;
                }
            }
            if rollback && !matches!(p.conn.simple_query("ROLLBACK", timeout).await, Ok(Ok(_))) {
                p.discard("rollback_failed", &metrics);
                return;
            }
            if reset {
                if !matches!(
                    p.conn
                        .simple_query(&config.config.pool.reset_query, timeout)
                        .await,
                    Ok(Ok(_))
                ) {
                    p.discard("reset_failed", &metrics);
                    return;
                }
                p.conn.prepared.clear();
                p.conn.unnamed_owner = None;
                p.conn.applied = Arc::default();
                p.conn.needs_reset = false;
            }
            p.release();
        });
    }
}

/// A commit position read back (a row of one column), as the relay reads it.
pub(super) fn commit_position(row: Vec<Option<String>>, lsn: &mut Option<u64>) {
    if let [Some(l)] = row.as_slice() {
        *lsn = crate::cluster::lag::parse_lsn(l).or(*lsn);
    }
}

/// Completes when the client closes its connection (or it fails) while a request or login of
/// its waits: what it sends meanwhile is kept in `rbuf` for later, up to
/// [`super::relay::OUT_HIGH`] bytes (past that it is not read, nor its leaving noticed).
/// `rbuf` is best a buffer of the wait's own, appended to the session's read buffer after:
/// reading into that one changes how it grows later, and a buffer grown for a large message
/// could then keep its memory (`tests/bad_input.rs`, `buffers_grown_...`).
pub(super) async fn client_gone(client: &mut Stream, rbuf: &mut BytesMut) -> std::io::Error {
    while rbuf.len() < super::relay::OUT_HIGH {
        rbuf.reserve(4096);
        match client.read_buf(rbuf).await {
            Ok(0) => return std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
            Ok(_) => {}
            Err(e) => return e,
        }
    }
    std::future::pending().await
}
