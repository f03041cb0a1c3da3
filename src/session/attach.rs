//! Server connections for a client: the first server contact at login, checking a
//! connection out for a request (routing, settings sync, sequence state), reading settings or
//! the commit position back when a transaction ends, giving the connection back, losing it
//! (retry or error), and handing it back clean when the client leaves.

use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::cancel;
use super::route::Target;
use super::{login, settings, Fatal, Pass, Session};
use crate::config::PoolMode;
use crate::pool::{Pool, PoolSpec, Pooled};
use crate::protocol::{encode, tag, Header, TxnStatus};

/// Reads the primary's WAL position after a commit (for read-your-writes).
const COMMIT_LSN_SQL: &str = "SELECT pg_current_wal_insert_lsn()::text";

impl Session {
    /// First server contact: validates database and startup settings on a real server and
    /// greets the client with that server's parameters.
    pub(super) async fn login(
        &mut self,
        client: &mut TcpStream,
        reg: &mut super::cancel::Registration,
    ) -> Result<(), Fatal> {
        let config = self.app.config.load_full();
        let wait = config.config.routing.primary_wait;
        let view = self.app.cluster.view();
        // Session mode keeps this connection for every statement: it must be the primary.
        // Transaction mode only needs a server that knows the database and the user.
        let any_up = || view.backends.iter().position(|b| b.up && !b.fenced);
        let found = if self.pool_mode == PoolMode::Session {
            view.primary
        } else {
            view.primary.or_else(any_up)
        };
        let index = match found {
            Some(i) => i,
            None => match self.app.cluster.wait_primary(wait).await {
                Some(i) => i,
                None => return Err(Fatal::new("57P03", "no database server is available")),
            },
        };
        drop(view);
        let pool = self
            .pool(index)
            .ok_or_else(|| Fatal::new("57P03", "no database server is available"))?;
        let mut p = pool
            .checkout(self.id)
            .await
            .map_err(|e| match e.sqlstate() {
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
            })?;
        if let Some(sql) = self.desired.sync_sql(&p.conn.applied, true) {
            match p
                .conn
                .simple_query(&sql, config.config.pool.connect_timeout)
                .await
            {
                Ok(Ok(_)) => p.conn.applied = self.desired.clone(),
                Ok(Err(e)) => {
                    p.release();
                    return Err(Fatal::new(e.code, e.message));
                }
                Err(_) => {
                    p.discard("setup_failed", &self.app.metrics);
                    return Err(Fatal::new(
                        "08006",
                        "could not set up the server connection",
                    ));
                }
            }
        }
        if self.app.cancels.adopt_pid(reg, p.conn.pid) {
            // The client is told the process id of the server process it logs in on. In
            // session pooling it keeps that process for its whole session; in transaction
            // pooling the process is its own (the pool's affinity) while the pool has room.
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
        let mut out = BytesMut::new();
        login::greeting(&mut out, &p.conn.params, reg.pid, reg.secret);
        if let Err(e) = client.write_all(&out).await {
            // The client left during its login: the connection goes back unused.
            p.release();
            return Err(Fatal::Io(e));
        }
        self.app.metrics.clients.inc();
        if self.pool_mode == PoolMode::Session {
            self.hold(p);
        } else {
            p.release();
        }
        Ok(())
    }

    /// The pool for backend `index` in the current topology.
    pub(super) fn pool(&mut self, index: usize) -> Option<Arc<Pool>> {
        if self.current.view.topology != self.topology {
            for pool in self.pools.drain(..).flatten() {
                pool.disown(self.id);
            }
            self.topology = self.current.view.topology;
        }
        if let Some(Some(p)) = self.pools.get(index) {
            return Some(p.clone());
        }
        let view = self.current.view.clone();
        let b = view.backends.get(index)?;
        let config = self.app.config.load();
        let pool = self.app.pools.get(PoolSpec {
            backend_index: index,
            backend_name: &b.name,
            address: &b.address,
            user: &self.user,
            database: &self.database,
            config: &config,
        });
        if self.pools.len() <= index {
            self.pools.resize(index + 1, None);
        }
        self.pools[index] = Some(pool.clone());
        Some(pool)
    }

    /// Takes ownership of a checked-out connection.
    fn hold(&mut self, mut p: Pooled) {
        self.server_fatal = None;
        // Idle in the pool: no portal exists there.
        p.conn.prepared.mark_quiet();
        self.cancel.set(cancel::Target {
            pool: p.pool().clone(),
            pid: p.conn.pid,
            secret: p.conn.secret,
        });
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

    /// Checks out a server connection for the request at the front of the client buffer. On
    /// failure the request is answered with an error and skipped; the client stays connected.
    pub(super) async fn attach(&mut self) -> Result<(), Fatal> {
        if self.lost_txn {
            self.lost_txn = false;
            self.aborted_txn = true;
            self.fail_request(
                "08006",
                "the server connection was lost; the transaction was rolled back",
            );
            return Ok(());
        }
        self.current.refresh(&self.app);
        // A failed transaction block is recreated on the primary, whatever comes next.
        self.force_primary |= self.aborted_txn;
        let decision = self.decide();
        self.force_primary = false;
        let (mut index, d) = match self.choose(decision).await {
            Ok(x) => x,
            Err((code, message)) => {
                self.app.metrics.error(code);
                self.fail_request(code, message);
                self.deferred_begin = None;
                return Ok(());
            }
        };
        if d.target == Target::Primary {
            // Waiting for a primary may have crossed a reload that renumbered the backends:
            // the index must be the primary of the view the pools are looked up in.
            self.current.refresh(&self.app);
            match self.current.view.primary {
                Some(p) => index = p,
                None => {
                    self.app.metrics.error("57P03");
                    self.fail_request("57P03", "no primary server is available");
                    self.deferred_begin = None;
                    return Ok(());
                }
            }
        }
        let Some(pool) = self.pool(index) else {
            self.fail_request("57P03", "no server is available");
            return Ok(());
        };
        match pool.checkout(self.id).await {
            Ok(p) => self.hold(p),
            Err(e)
                if d.target == Target::Replica
                    && self.retry_attempts < super::retry::MAX_ATTEMPTS
                    && !e.is_refusal() =>
            {
                // A replica that cannot be reached: the read goes elsewhere.
                tracing::info!(parent: &self.span, backend = %pool.key.backend, error = %e, "replica unavailable: routing the read elsewhere");
                self.app
                    .metrics
                    .retries
                    .with_label_values(&["replica_unavailable"])
                    .inc();
                self.retry_attempts += 1;
                self.avoid |= 1u64 << (index % 64);
                return Ok(());
            }
            Err(e) => {
                tracing::warn!(parent: &self.span, error = %e, "server checkout failed");
                self.app.metrics.error(e.sqlstate());
                self.fail_request(e.sqlstate(), &e.client_message());
                self.deferred_begin = None;
                return Ok(());
            }
        }
        self.target = d.target;
        self.fresh_attach = true;
        self.backend_index = Some(index);
        if let Some(b) = self.current.view.backends.get(index) {
            b.stats
                .outstanding
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.app
            .metrics
            .count_routed(d.target == Target::Primary, d.reason);
        self.read_functions().await;
        self.check_statement_shapes().await;
        self.sync_settings();
        self.close_unheld_statements();
        if let Some(begin) = self.deferred_begin.take() {
            self.swbuf.extend_from_slice(&begin.frame);
            self.pending.expect(
                super::pending::Kind::Query,
                super::pending::Mode::Swallow,
                super::pending::Hook::None,
            );
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
            self.retry = Some(super::retry::Retry::default());
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

    /// Answers the request at the front of the client buffer with an error, without a server.
    /// Inside a transaction block (one the proxy answered BEGIN for, or one whose server was
    /// lost) the block is failed from then on, as PostgreSQL's would be.
    pub(super) fn fail_request(&mut self, code: &str, message: &str) {
        self.front_query = None;
        // The request is over: the next one may try every backend again.
        self.retry_attempts = 0;
        self.avoid = 0;
        self.aborted_txn |= self.deferred_begin.take().is_some();
        let status = if self.aborted_txn {
            TxnStatus::Failed
        } else {
            TxnStatus::Idle
        };
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
            && self.txn == TxnStatus::Idle
            && self.swbuf.is_empty()
            && self.client_pass == Pass::None
            && self.server_pass == 0;
        if !quiet {
            return false;
        }
        let pooled = self.pool_mode == PoolMode::Transaction && self.pin.is_none();
        let settings = self.capture && pooled;
        self.capture = false;
        let lsn = self.commit_pending && !p.conn.broken;
        if settings || lsn {
            let sql = match (settings, lsn) {
                (true, true) => format!(
                    "{}; {}",
                    settings::capture_sql(&self.custom_names),
                    COMMIT_LSN_SQL
                ),
                (true, false) => settings::capture_sql(&self.custom_names),
                _ => COMMIT_LSN_SQL.to_owned(),
            };
            self.capturing = (settings, lsn);
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

    /// Returns the server connection to its pool.
    pub(super) fn release(&mut self) {
        let Some(p) = self.server.take() else {
            return;
        };
        self.detach_bookkeeping();
        if self.cancel.clear() {
            p.release();
        } else {
            p.discard("cancel_in_flight", &self.app.metrics);
        }
    }

    /// Closes the attached server connection (not fit for another client).
    pub(super) fn discard_server(&mut self, reason: &str) {
        let Some(p) = self.server.take() else {
            return;
        };
        self.detach_bookkeeping();
        self.cancel.clear();
        p.discard(reason, &self.app.metrics);
    }

    /// Per-attachment state to clear when the server connection goes.
    fn detach_bookkeeping(&mut self) {
        self.server_pass = 0;
        self.batch_open = false;
        self.wrote = false;
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
        if self.commit_pending {
            self.commit_pending = false;
            self.ryw.end_commit(None);
        }
    }

    /// The server connection failed: repeat a repeatable request elsewhere, else answer what
    /// the client still waits for with an error; drop the connection.
    pub(super) fn server_lost(&mut self, error: std::io::Error) {
        let Some(p) = self.server.take() else { return };
        self.cancel.clear();
        tracing::warn!(parent: &self.span, backend = %p.pool().key.backend, error = %error, "server connection lost");
        p.discard("server_lost", &self.app.metrics);
        // Bytes not yet written were for that connection only: what the client is told failed
        // must not run on the next one (and a full buffer would stop the relay for good).
        self.swbuf.clear();
        self.parse_wait_flushed = false;
        // Whether a pg_terminate_backend in flight ran is unknown: nobody is ended for it.
        self.terminates = None;
        if let Some(i) = self.backend_index {
            // A repeat of this request goes somewhere else.
            self.avoid |= 1u64 << (i % 64);
        }
        if self.commit_pending {
            // The commit reached the client; its position is unknown. Reads in scope go to the
            // primary until the next commit's position is known... give up waiting instead.
            self.commit_pending = false;
            self.ryw.end_commit(None);
        }
        self.detach_bookkeeping();
        let repeat = super::retry::repeats_on_loss(
            self.retry.as_ref(),
            self.retry_attempts,
            self.client_pass == Pass::None,
        );
        if repeat {
            self.app
                .metrics
                .retries
                .with_label_values(&["server_lost"])
                .inc();
            self.retry_attempts += 1;
            self.pending.abandon();
            self.requeue_request();
            self.txn = TxnStatus::Idle;
            return;
        }
        if let Some(mut r) = self.retry.take() {
            r.release_into(&mut self.client.wbuf);
        }
        if let Some(z) = self.held_ready.take() {
            // The client's statement completed; only the proxy's restore query behind it was
            // lost.
            self.client.wbuf.unsplit(z);
        }
        let open_batch = matches!(self.pending.last_kind(), Some(k) if !matches!(k, super::pending::Kind::Sync | super::pending::Kind::Query | super::pending::Kind::FunctionCall));
        let owed = self.pending.abandon();
        // A transaction block dies with its server: the client's block has failed.
        let in_block = self.txn != TxnStatus::Idle;
        let was_busy = owed > 0 || open_batch;
        if let Pass::Forward(n) = self.client_pass {
            self.client_pass = Pass::Drop(n);
        }
        if was_busy {
            self.app.metrics.error("08006");
            let why = match self.server_fatal.take() {
                Some((m, false)) => format!(": {m}"),
                _ => String::new(),
            };
            encode::error(
                &mut self.client.wbuf,
                "ERROR",
                "08006",
                &format!("the server connection was lost while running the request{why}"),
            );
            let status = if in_block {
                TxnStatus::Failed
            } else {
                TxnStatus::Idle
            };
            for _ in 0..owed {
                encode::ready_for_query(&mut self.client.wbuf, status);
            }
            if open_batch {
                self.skip_until_sync = true;
            }
            self.aborted_txn = in_block;
        } else if in_block {
            self.lost_txn = true;
        }
        self.txn = TxnStatus::Idle;
    }

    /// Puts the repeatable request back at the front of the client buffer, undoing what its
    /// first run recorded.
    pub(super) fn requeue_request(&mut self) {
        let Some(r) = self.retry.take() else { return };
        for n in &r.names {
            self.statements.remove(n);
        }
        self.front_query = None;
        let mut again = r.original;
        again.unsplit(std::mem::take(&mut self.client.rbuf));
        self.client.rbuf = again;
    }

    /// Ends the session: hands the server connection back clean, or closes it.
    pub(super) async fn finish(&mut self) {
        self.app.metrics.clients.dec();
        let Some(mut p) = self.server.take() else {
            return;
        };
        p.conn.owner = 0;
        let cancel_done = self.cancel.clear();
        // An extended-protocol batch without its Sync leaves the server inside an implicit
        // transaction, or ignoring everything until a Sync after an error.
        let mid_batch = self.batch_open || self.skip_until_sync;
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
            p.discard("client_left_mid_request", &self.app.metrics);
            return;
        }
        if !cancel_done {
            p.discard("cancel_in_flight", &self.app.metrics);
            return;
        }
        let own_session = self.pool_mode == PoolMode::Session || self.pin.is_some();
        if own_session && !self.app.config.load().config.pool.session_reuse {
            // The server session was this client's alone (session mode, or pinned by state
            // that `DISCARD ALL` does not fully undo: a temporary schema, loaded libraries):
            // the next client gets a fresh one.
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
            if own_queries > 0 && !p.conn.finish_queries(&unsent, own_queries, timeout).await {
                p.discard("client_left_mid_request", &metrics);
                return;
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
