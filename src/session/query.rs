//! The simple Query path: each Query is analysed once (before a server is attached for it:
//! the analysis also routes it), answered by the proxy where it can be (`SET/SHOW
//! switchyard.*`, `DEALLOCATE` of a protocol-level statement, a lone `BEGIN` deferred until
//! the transaction's first statement, a block that failed without a server) and otherwise
//! forwarded with its session effects applied.

use bytes::{Buf, Bytes, BytesMut};

use super::client::Step;
use super::pending::{Hook, Kind, Mode};
use super::statements;
use super::{Fatal, Session};
use crate::config::{Consistency, PoolMode};
use crate::protocol::{encode, read_cstr, tag, Header, TxnStatus};
use crate::sql::{Deallocate, Effects, Route, SwitchyardCommand, TxnControl};

/// What the proxy needs to know about a simple Query, kept between routing and forwarding so
/// the SQL is lexed once.
#[derive(Debug, Clone, Copy)]
pub(super) struct QueryInfo {
    pub read: bool,
    /// One `SET`/`RESET` of settings (see [`crate::sql::Analysis::only_sets_settings`]).
    pub setting: bool,
    /// One read only the primary answers (see
    /// [`crate::sql::Analysis::only_asks_the_primary`]).
    pub asks_primary: bool,
    pub hint: Option<Route>,
    pub txn: TxnControl,
    pub statements: u32,
    pub effects: Effects,
    pub pin: Option<&'static str>,
    /// `EXECUTE` of one of the client's protocol-level statements (renamed on the way).
    pub execute: bool,
}

impl QueryInfo {
    /// What the analysis `a` of Query text `text` says.
    pub(super) fn of(c: &crate::sql::Classifier, text: &[u8], a: &crate::sql::Analysis) -> Self {
        QueryInfo {
            read: super::route::underlying_read(c, text, a),
            setting: a.only_sets_settings(),
            asks_primary: a.only_asks_the_primary(),
            hint: a.hint,
            txn: a.txn,
            statements: a.statements,
            effects: a.effects,
            pin: a.pin_reason(),
            execute: false,
        }
    }
}

impl Session {
    /// `name` if it is one of the proxy's shared statement names that the client has not
    /// prepared under that name itself.
    pub(super) fn foreign_shared_name(&self, name: &str) -> Option<String> {
        let shared = name
            .as_bytes()
            .strip_prefix(statements::PREFIX)
            .is_some_and(|n| !n.is_empty() && n.iter().all(u8::is_ascii_digit));
        (shared && !self.statements.contains_key(name.as_bytes())).then(|| name.to_owned())
    }

    pub(super) fn handle_query(&mut self, h: Header) -> Result<Option<Step>, Fatal> {
        if let Some(info) = self.front_query_info(h.frame_len) {
            // Analysed already, before a server was attached for it (attaching may also have
            // failed over without a server yet: then try again).
            if self.server.is_none() {
                return Ok(Some(Step::NeedServer));
            }
            self.front_query = None;
            return Ok(self.forward_query(h, info));
        }
        let body = &self.client.rbuf[5..h.frame_len];
        let text = super::route::query_bytes(body);
        let classifier = self.app.classifier.load();
        let a = super::route::analyze(&classifier, text, self.opaque_backslashes);
        let forgets = a.deallocate.is_some()
            || a.effects
                .intersects(Effects::DISCARD_ALL | Effects::DEALLOCATE_ALL);
        if forgets && self.server.is_some() && !self.pending.is_empty() {
            // Whether it runs, and so whether the client's statements are gone, depends on how
            // the requests ahead of it end (an error fails their block, a BEGIN opens one):
            // it waits for their answers (a Flush makes the server send those of an open
            // batch).
            if self.batch_open && !std::mem::replace(&mut self.parse_wait_flushed, true) {
                encode::empty(&mut self.swbuf, tag::FLUSH);
            }
            return Ok(Some(Step::Idle));
        }
        // Protocol-level statements are the proxy's: DEALLOCATE of one is answered here (also
        // when pinned; SQL-level PREPAREs of a pinned client go to its server).
        // (In a failed transaction block the server answers, with 25P02.)
        let failed_block = self.txn == TxnStatus::Failed || self.aborted_txn;
        // In session pooling the server session is the client's own: DEALLOCATE ALL goes
        // there (as when pinned) and clears what the connection has.
        let own_session = self.pin.is_some() || self.pool_mode == PoolMode::Session;
        let local = match (&a.deallocate, own_session) {
            _ if failed_block => None,
            (Some(Deallocate::All), false) => Some(None),
            (Some(Deallocate::Name(n)), _) if self.statements.contains_key(n.as_bytes()) => {
                Some(Some(Bytes::copy_from_slice(n.as_bytes())))
            }
            _ => None,
        };
        // The proxy's own shared names (`_sy…`) are not the client's to run or drop: dropped,
        // another client's statement would be gone from a connection believed to hold it.
        let foreign = match (&a.deallocate, &a.execute) {
            (Some(Deallocate::Name(n)), _) => self.foreign_shared_name(n),
            (_, Some(e)) => self.foreign_shared_name(&e.name),
            _ => None,
        };
        if let Some(name) = foreign.filter(|_| !failed_block) {
            drop(classifier);
            self.client.rbuf.advance(h.frame_len);
            let mut b = BytesMut::new();
            let msg = format!("prepared statement \"{name}\" does not exist");
            encode::error(&mut b, "ERROR", "26000", &msg);
            self.respond_error(b, "26000");
            self.respond_ready();
            return Ok(None);
        }
        let info = QueryInfo {
            execute: a
                .execute
                .as_ref()
                .is_some_and(|e| !failed_block && self.statements.contains_key(e.name.as_bytes())),
            ..QueryInfo::of(&classifier, text, &a)
        };
        let command = a.switchyard.as_ref().map(|c| match c {
            SwitchyardCommand::Set { name, value } => (0u8, name.to_string(), value.to_string()),
            SwitchyardCommand::Reset { name } => (1, name.to_string(), String::new()),
            SwitchyardCommand::Show { name } => (2, name.to_string(), String::new()),
            SwitchyardCommand::SetLocal { name } => (3, name.to_string(), String::new()),
        });
        // A lone BEGIN the server cannot refuse (see sql/begin.rs) may be deferred; not one
        // hinted to the primary, where its transaction runs whatever its first statement.
        let deferrable_begin = (matches!(a.txn, TxnControl::Begin { .. })
            && a.statements == 1
            && a.hint != Some(Route::Primary))
        .then(|| {
            std::str::from_utf8(text)
                .ok()
                .and_then(crate::sql::begin_modes)
        })
        .flatten();
        // A lone `SET TRANSACTION` making a held block read-only (see `hold_set_transaction`).
        // (Not after a BEGIN a standby refuses, SERIALIZABLE or READ WRITE: sent with it, the
        // SET would not make a replica's transaction of it.)
        let held_set_transaction = (self.server.is_none()
            && self.deferred_begin.as_ref().is_some_and(|b| {
                b.modes.serializable != Some(true) && b.modes.read_only != Some(false)
            })
            && a.statements == 1
            && a.txn == TxnControl::SetTransactionReadOnly)
            .then(|| {
                std::str::from_utf8(text)
                    .ok()
                    .and_then(crate::sql::set_transaction_modes)
            })
            .flatten()
            .filter(|m| m.read_only == Some(true) && m.serializable != Some(true));
        if self.lost_txn
            && self.server.is_none()
            && a.txn == TxnControl::Rollback
            && a.statements == 1
        {
            // The block died with its server connection while the client was idle in it: its
            // ROLLBACK is answered as in any failed block. (A COMMIT is told the block was
            // lost first: see `attach`.)
            self.lost_txn = false;
            self.aborted_txn = true;
            self.failed_chain = None;
        }
        let ends_deferred =
            matches!(a.txn, TxnControl::Commit | TxnControl::Rollback) && a.statements == 1;
        let ends_block =
            ends_deferred || (a.txn == TxnControl::PrepareTransaction && a.statements == 1);
        let is_commit = a.txn == TxnControl::Commit;
        // `COMMIT AND CHAIN` / `ROLLBACK AND CHAIN`: a new block begins at once, with the
        // same characteristics. (Asked only when the proxy may answer it itself.)
        let chained = ends_deferred
            && self.server.is_none()
            && (self.deferred_begin.is_some() || self.aborted_txn)
            && std::str::from_utf8(text)
                .ok()
                .is_some_and(crate::sql::chains);
        // (Not `AND CHAIN`: outside a block PostgreSQL refuses it.)
        let alone_outside_block = ends_deferred
            && self.outside_any_block()
            && !std::str::from_utf8(text).is_ok_and(crate::sql::chains);
        if a.statements == 1 && a.reason == crate::sql::Reason::Write("DROP") {
            if let Some(db) = std::str::from_utf8(text)
                .ok()
                .and_then(crate::sql::dropped_database)
            {
                // Idle pooled connections to it would make PostgreSQL refuse (and none is
                // opened for min_size meanwhile).
                self.app.pools.close_for_dropping(&db);
            }
        }
        // In a block that failed without a server, a query whose first statement does not end
        // the block (nor roll back to a savepoint) is ignored by PostgreSQL with 25P02: it is
        // answered so here, at once, rather than after waiting for a connection to recreate
        // the failed block on (a pool that is full would make each such statement wait for
        // its `checkout_timeout` and fail with 53300). As with a Parse in a block the server
        // failed (parse.rs), a syntax error in it gets 25P02 too. (Empty statements are
        // passed over, as PostgreSQL does; an empty Query goes to the server.)
        let ignored_in_failed_block = self.aborted_txn
            && self.server.is_none()
            && !self.lost_txn
            && a.statements > 0
            && !self.ends_a_block(text);
        drop(classifier);
        // Any simple query destroys the unnamed statement, the ones answered here included.
        self.forget_unnamed();
        if let Some((kind, name, value)) = command {
            self.client.rbuf.advance(h.frame_len);
            let mut b = BytesMut::new();
            match self.switchyard_command(kind, &name, &value, &mut b) {
                Ok(()) => self.respond(b),
                Err((code, message)) => {
                    b.clear();
                    encode::error(&mut b, "ERROR", code, &message);
                    self.respond_error(b, code);
                }
            }
            self.respond_ready();
            return Ok(None);
        }
        if self.server.is_none() && self.aborted_txn && ends_block {
            // The end of a block that failed without a server: PostgreSQL answers COMMIT (and
            // PREPARE TRANSACTION) in a failed block with ROLLBACK too.
            self.client.rbuf.advance(h.frame_len);
            self.aborted_txn = false;
            if chained {
                self.chain_failed_block();
            }
            let mut b = BytesMut::new();
            encode::command_complete(&mut b, "ROLLBACK");
            self.respond(b);
            self.respond_ready();
            return Ok(None);
        }
        if ignored_in_failed_block {
            self.client.rbuf.advance(h.frame_len);
            let mut b = BytesMut::new();
            encode::error(
                &mut b,
                "ERROR",
                "25P02",
                "current transaction is aborted, commands ignored until end of transaction block",
            );
            self.respond_error(b, "25P02");
            self.respond_ready();
            return Ok(None);
        }
        if self.server.is_none() && self.deferred_begin.is_some() && ends_deferred {
            // BEGIN ... COMMIT with nothing in between: no server needed. (Not BEGIN ...
            // PREPARE TRANSACTION: that leaves a prepared transaction, empty or not.)
            self.client.rbuf.advance(h.frame_len);
            match self.deferred_begin.as_mut() {
                // (Chained, the deferred BEGIN with its modes stands for the new block.)
                Some(d) if chained => d.chain(),
                _ => self.deferred_begin = None,
            }
            let mut b = BytesMut::new();
            encode::command_complete(&mut b, if is_commit { "COMMIT" } else { "ROLLBACK" });
            self.respond(b);
            self.respond_ready();
            return Ok(None);
        }
        if alone_outside_block {
            // COMMIT or ROLLBACK with no transaction open: PostgreSQL only warns that there is
            // none. Answered here, it waits for no server (a pool's ROLLBACK on giving a
            // connection back goes on while there is no primary) and costs no round trip.
            self.client.rbuf.advance(h.frame_len);
            let mut b = BytesMut::new();
            self.warn_no_transaction(&mut b);
            encode::command_complete(&mut b, if is_commit { "COMMIT" } else { "ROLLBACK" });
            self.respond(b);
            self.respond_ready();
            return Ok(None);
        }
        if held_set_transaction.is_some_and(|m| self.hold_set_transaction(m, h.frame_len)) {
            return Ok(None);
        }
        if let Some(modes) = deferrable_begin.filter(|_| {
            self.server.is_none() && self.deferred_begin.is_none() && self.can_defer_begin()
        }) {
            // Where the transaction runs depends on its first statement (SET TRANSACTION READ
            // ONLY makes it a replica's): answer BEGIN now, send it with that statement.
            // Without splitting this still saves a round trip per transaction.
            let frame = self.client.rbuf.split_to(h.frame_len).freeze();
            let tag = begin_tag(super::route::query_bytes(&frame[5..]));
            self.deferred_begin = Some(super::route::DeferredBegin {
                frame,
                queries: 1,
                modes,
                chained_from: None,
            });
            let mut b = BytesMut::new();
            encode::command_complete(&mut b, tag);
            self.respond(b);
            self.respond_ready();
            return Ok(None);
        }
        if let Some(name) = local {
            // Protocol-level statements are shared server-side: the client's names are
            // forgotten. `DEALLOCATE name` also closes the statement on the attached
            // connection, as Close does (see `close_on_server`).
            let all = name.is_none();
            match name {
                Some(n) => {
                    if let Some(stmt) = self.statements.remove(&n) {
                        if self.close_on_server(&stmt) {
                            self.client.rbuf.advance(h.frame_len);
                            let sql = format!(
                                "DEALLOCATE {}",
                                String::from_utf8_lossy(&stmt.server_name)
                            );
                            encode::query(&mut self.swbuf, &sql);
                            self.count_request();
                            self.pending.expect(Kind::Query, Mode::Forward, Hook::None);
                            return Ok(None);
                        }
                    }
                }
                None => self.statements.clear(),
            }
            // What no client has now is closed ahead of the client's next request (on this
            // connection, or the next one attached), see `close_unheld_statements`.
            self.sweep_statements = true;
            self.client.rbuf.advance(h.frame_len);
            let mut b = BytesMut::new();
            encode::command_complete(&mut b, if all { "DEALLOCATE ALL" } else { "DEALLOCATE" });
            self.respond(b);
            self.respond_ready();
            return Ok(None);
        }
        if self.server.is_none() {
            self.front_query = Some((self.client.rbuf.as_ptr() as usize, h.frame_len, info));
            return Ok(Some(Step::NeedServer));
        }
        Ok(self.forward_query(h, info))
    }

    fn forward_query(&mut self, h: Header, info: QueryInfo) -> Option<Step> {
        if info.effects.contains(Effects::TERMINATE) {
            let text = super::route::query_bytes(&self.client.rbuf[5..h.frame_len]);
            let arg = std::str::from_utf8(text)
                .ok()
                .and_then(crate::sql::terminate_arg);
            if let Some(crate::sql::TerminateArg::Pid(pid)) = arg {
                self.terminate_client(pid);
            }
        }
        let calls = self
            .functions
            .session_calls(super::route::query_bytes(&self.client.rbuf[5..h.frame_len]));
        let called = self.note_calls(calls);
        let effects = info.effects | called;
        let settings = effects.contains(Effects::SETTINGS);
        if settings {
            self.context_unsettled |= called.contains(Effects::SETTINGS)
                || super::settings::may_change_parse(&String::from_utf8_lossy(
                    super::route::query_bytes(&self.client.rbuf[5..h.frame_len]),
                ));
        } else if effects.contains(Effects::LOCAL_SETTINGS) {
            // (A `SET LOCAL` too: a Parse later in its transaction is analysed under it.)
            self.context_unsettled |=
                super::settings::local_may_change_parse(&String::from_utf8_lossy(
                    super::route::query_bytes(&self.client.rbuf[5..h.frame_len]),
                ));
        }
        let mut pin = info.pin;
        if settings && self.note_custom_names(h.frame_len) {
            pin = pin.or(Some(super::settings::COMPUTED_SETTING));
        }
        if info.effects.contains(Effects::SCHEMA) {
            self.note_created_functions(super::route::query_bytes(
                &self.client.rbuf[5..h.frame_len],
            ));
        }
        let restore = settings
            && self.restore_sql.is_some()
            && (called.contains(Effects::SETTINGS)
                || super::settings::may_reset(&String::from_utf8_lossy(
                    super::route::query_bytes(&self.client.rbuf[5..h.frame_len]),
                )));
        // Not behind a COPY FROM STDIN: the server would take the query for copy data and
        // fail the copy. It follows the client's CopyDone or CopyFail instead.
        let after_copy = restore
            && crate::sql::copies_from_stdin(&String::from_utf8_lossy(super::route::query_bytes(
                &self.client.rbuf[5..h.frame_len],
            )));
        let pin = pin.filter(|_| !self.refused_by_standby(pin));
        self.apply_effects(effects, pin);
        if matches!(info.txn, TxnControl::Begin { .. }) && self.request_begins.is_none() {
            self.request_begins = Some(self.pending.readies_due() + 1);
        }
        self.shape_portal = None;
        let split_first = std::mem::take(&mut self.split_first);
        self.ending_block = split_first
            || info.statements == 1
                && matches!(
                    info.txn,
                    TxnControl::Commit | TxnControl::Rollback | TxnControl::PrepareTransaction
                )
                && !std::str::from_utf8(super::route::query_bytes(
                    &self.client.rbuf[5..h.frame_len],
                ))
                .is_ok_and(crate::sql::chains);
        if info.execute {
            self.forward_execute(h.frame_len);
        } else {
            self.forward(h.frame_len);
        }
        self.count_request();
        self.forget_unnamed();
        self.copy_ended_since_request = false;
        self.query_ends_batch();
        self.pending.expect(
            Kind::Query,
            Mode::Forward,
            if split_first {
                Hook::SplitFirst
            } else if restore && !after_copy {
                Hook::HoldReady
            } else {
                Hook::None
            },
        );
        if after_copy {
            self.restore_after_copy = super::RestoreAfterCopy::Query;
        } else if restore {
            self.restore_startup_settings();
        }
        None
    }

    /// A Query sent inside an extended-protocol batch (asyncpg's Parse, Describe, Flush before
    /// it): the server runs it as part of the batch's implicit transaction and ends that with
    /// it, as a Sync would (unless an error skips it, see `Pending::on_server`).
    pub(super) fn query_ends_batch(&mut self) {
        if self.batch_open {
            self.batch_open = false;
            self.bound_in_batch = false;
            self.executed_in_batch = false;
            self.flushed_batch = false;
            self.ending_block |= std::mem::take(&mut self.batch_ends_block);
        }
    }

    /// Sends the Query at the front, `EXECUTE` of one of the client's protocol-level
    /// statements, as `EXECUTE` of its shared name, prepared on this connection first.
    fn forward_execute(&mut self, len: usize) {
        let frame = self.client.rbuf.split_to(len).freeze();
        let text = super::route::query_bytes(&frame[5..]);
        let target = self
            .app
            .classifier
            .load()
            .analyze_text(text)
            .execute
            .and_then(|e| {
                let s = self.statements.get(e.name.as_bytes())?;
                Some((statements::executing(text, e.span, s)?, s.clone()))
            });
        match target {
            Some((sql, stmt)) => {
                let queued = self.pending.len();
                self.ensure_prepared(&stmt);
                if self.pending.len() != queued && !self.batch_open {
                    // The statement is prepared here first, with extended-protocol messages:
                    // a Sync of the proxy's own ends them, so that if that Parse fails (the
                    // server then ignores everything up to a Sync) the Query still runs and
                    // gets its answer, instead of being ignored with the client waiting.
                    // Not inside the client's own batch (no Sync of its yet): there a Sync
                    // would end the batch early, with a ReadyForQuery the client does not
                    // expect, the end of a skip the server owes an earlier error, and the
                    // commit of the batch's implicit transaction. The batch's Sync ends
                    // the Parse instead, and an error before it skips the Query, as
                    // PostgreSQL skips a Query in a failed batch.
                    encode::empty(&mut self.swbuf, tag::SYNC);
                    self.pending
                        .expect(Kind::Sync, Mode::Swallow, Hook::ReprepareSync);
                }
                encode::message(&mut self.swbuf, tag::QUERY, |b| {
                    b.extend_from_slice(&sql);
                    b.extend_from_slice(&[0]);
                });
            }
            // (Analysed as such when it arrived: not reached.)
            None => self.swbuf.extend_from_slice(&frame),
        }
    }

    /// Records the custom settings named by the message at the front (a Query or a Parse);
    /// true when it also sets one whose name it does not write out (see
    /// [`super::settings::computes_setting_name`]).
    fn note_custom_names(&mut self, frame_len: usize) -> bool {
        let body = &self.client.rbuf[5..frame_len];
        let sql = if self.client.rbuf[0] == tag::PARSE {
            statements::split_parse(body)
                .map(|(_, q, _)| super::route::query_text(q))
                .unwrap_or_default()
        } else {
            super::route::query_text(body)
        };
        for n in super::settings::body_custom_names(&sql) {
            self.custom_names.insert(n);
        }
        super::settings::computes_setting_name(&sql)
    }

    /// After a statement that may have RESET settings: put startup values back at once.
    /// The cached analysis of the Query at the front of the buffer, if it is that one.
    pub(super) fn front_query_info(&self, frame_len: usize) -> Option<QueryInfo> {
        match self.front_query {
            Some((at, len, info))
                if at == self.client.rbuf.as_ptr() as usize && len == frame_len =>
            {
                Some(info)
            }
            _ => None,
        }
    }

    /// A `pg_terminate_backend(pid)` is on its way to the server: once it has run (the
    /// request's ReadyForQuery without an error before it), the proxy's client that was given
    /// `pid` ends too: the server ends the process only, and in transaction pooling that client
    /// may have none, or another. (Not before: the server would find the process gone and
    /// answer `false`.) Not in a failed block, where nothing runs, nor when the statement
    /// returned no row (`... WHERE false`, a filter on `pg_stat_activity`), where no call ran.
    pub(super) fn terminate_client(&mut self, pid: i32) {
        if self.txn != TxnStatus::Failed {
            self.terminates = Some((pid, false));
        }
    }

    /// Whether a lone BEGIN may be answered before choosing a server: in transaction pooling
    /// it is sent with the transaction's first statement, which decides where the transaction
    /// runs (with read/write splitting) and saves a round trip to the server and the time the
    /// server connection would sit idle in between.
    fn can_defer_begin(&self) -> bool {
        self.pool_mode == crate::config::PoolMode::Transaction
            && self.pin.is_none()
            && self.route_override.is_none()
    }

    /// A lone `SET TRANSACTION` making a held block read-only (and not SERIALIZABLE), right
    /// after its BEGIN: held with the BEGIN and answered here, so that the block's next
    /// request decides where it runs, as it does after `BEGIN READ ONLY` (a first request a
    /// standby refuses, or one asking what only the primary answers, takes it to the
    /// primary). Sent to the replica at once, it committed the block there whatever came
    /// next: a `PREPARE` then left the client pinned to the replica, its writes failing.
    fn hold_set_transaction(&mut self, modes: crate::sql::BeginModes, len: usize) -> bool {
        let Some(begin) = self.deferred_begin.as_mut() else {
            return false;
        };
        let mut frame = BytesMut::with_capacity(begin.frame.len() + len);
        frame.extend_from_slice(&begin.frame);
        frame.extend_from_slice(&self.client.rbuf[..len]);
        self.client.rbuf.advance(len);
        begin.frame = frame.freeze();
        begin.queries += 1;
        begin.modes.read_only = Some(true);
        begin.modes.serializable = modes.serializable.or(begin.modes.serializable);
        let mut b = BytesMut::new();
        encode::command_complete(&mut b, "SET");
        self.respond(b);
        self.respond_ready();
        true
    }

    /// Between transactions in transaction pooling: no block open (nor one the proxy answered
    /// BEGIN for, nor one that failed or was lost), nothing in flight, no server held.
    pub(super) fn outside_any_block(&self) -> bool {
        self.deferred_begin.is_none() && self.nothing_on_a_server()
    }

    /// No server connection attached or needed by what the client has open: at most a block
    /// whose BEGIN the proxy answered and holds (`deferred_begin`).
    pub(super) fn nothing_on_a_server(&self) -> bool {
        self.server.is_none()
            && self.pool_mode == PoolMode::Transaction
            && self.pin.is_none()
            && self.txn == TxnStatus::Idle
            && !self.aborted_txn
            && !self.lost_txn
            && !self.batch_open
            && self.pending.is_empty()
    }

    /// A block the proxy held the BEGIN of fails (a request in it could not be run): from now
    /// on it [failed without a server](Self::failed_without_server).
    pub(super) fn fail_held_block(&mut self) {
        if let Some(held) = self.deferred_begin.take() {
            self.aborted_txn = true;
            self.failed_chain = held.chained_from.map(|b| *b);
        }
    }

    /// A `ROLLBACK AND CHAIN` (or `COMMIT AND CHAIN`) ended a block that failed without a
    /// server: the next block begins with the session's defaults, as PostgreSQL begins it
    /// (modes set in the failed block were undone with it: PostgreSQL 15 chains `read
    /// committed` after a failed `BEGIN ISOLATION LEVEL REPEATABLE READ`), or, when the
    /// failed block was itself begun by a chain the proxy answered, with that chain's modes,
    /// which PostgreSQL keeps ([`DeferredBegin::chained_from`]).
    pub(super) fn chain_failed_block(&mut self) {
        let mut begin = self
            .failed_chain
            .take()
            .unwrap_or_else(super::route::DeferredBegin::plain);
        begin.chain();
        self.deferred_begin = Some(begin);
    }

    /// The client's transaction block failed without a server (no connection for a statement
    /// in it: 53300; or the one it had was lost and the client was told): no server holds it,
    /// and what ends it or is refused in it needs none.
    pub(super) fn failed_without_server(&self) -> bool {
        self.server.is_none() && self.aborted_txn && !self.lost_txn && self.retry.is_none()
    }

    /// In a block that [failed without a server](Self::failed_without_server), whether the
    /// Parse or Bind at the front of the client buffer is one PostgreSQL refuses there with
    /// 25P02 (its statement does not end the block): a Parse of a statement, or a Bind of a
    /// statement the client has, that is not a COMMIT, ROLLBACK (to a savepoint too) or
    /// PREPARE TRANSACTION. It is answered so at once, as such a Query is (`handle_query`),
    /// rather than after waiting for a connection to recreate the failed block on. (A syntax
    /// error in the Parse, or a Bind with a wrong number of parameters, gets 25P02 too, where
    /// PostgreSQL reports those first.)
    pub(super) fn ignored_in_failed_block(&self, h: Header) -> bool {
        if !self.failed_without_server() {
            return false;
        }
        let body = &self.client.rbuf[5..h.frame_len];
        let text = match h.tag {
            tag::PARSE => match super::statements::split_parse(body) {
                // (A malformed one is left to the server to refuse.)
                Some((_, query, [hi, lo, rest @ ..]))
                    if rest.len() == 4 * usize::from(u16::from_be_bytes([*hi, *lo])) =>
                {
                    query
                }
                _ => return false,
            },
            tag::BIND => {
                let Some((_, rest)) = read_cstr(body) else {
                    return false;
                };
                let Some((name, _)) = read_cstr(rest) else {
                    return false;
                };
                // (One the client does not have: the server's error, 26000, comes first.)
                let stmt = if name.is_empty() {
                    self.unnamed
                        .as_ref()
                        .and_then(|f| super::statements::split_parse(&f[5..]))
                        .map(|(_, q, _)| q)
                } else {
                    self.statements.get(name).map(|s| &s.query[..])
                };
                match stmt {
                    Some(q) => q,
                    None => return false,
                }
            }
            _ => return false,
        };
        // (An empty statement is no command to refuse: PostgreSQL parses it. Several are
        // refused first for being several.)
        let a = super::route::analyze(&self.app.classifier.load(), text, self.opaque_backslashes);
        a.statements == 1 && !self.ends_a_block(text)
    }

    /// PostgreSQL's warning for a COMMIT or ROLLBACK with no transaction open, unless the
    /// client keeps warnings from it.
    pub(super) fn warn_no_transaction(&self, b: &mut BytesMut) {
        if !self.warnings_muted() {
            encode::error_fields(
                b,
                tag::NOTICE_RESPONSE,
                "WARNING",
                "25P01",
                "there is no transaction in progress",
            );
        }
    }

    /// Whether the client's `client_min_messages` (as far as the proxy knows it: from its
    /// startup packet or its own `SET`s) keeps warnings from it.
    fn warnings_muted(&self) -> bool {
        self.desired
            .0
            .get("client_min_messages")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("error"))
    }

    /// `SET/RESET/SHOW switchyard.<name>` (kind 0/1/2) and `SET LOCAL` (3), answered by the
    /// proxy.
    fn switchyard_command(
        &mut self,
        kind: u8,
        name: &str,
        value: &str,
        out: &mut BytesMut,
    ) -> Result<(), (&'static str, String)> {
        let default_consistency = self
            .user
            .config
            .consistency
            .unwrap_or(self.app.config.load().config.routing.consistency);
        match (kind, name) {
            (0, "route") => {
                self.route_override = match value.to_ascii_lowercase().as_str() {
                    "primary" => Some(Route::Primary),
                    "replica" => Some(Route::Replica),
                    "auto" | "default" => None,
                    _ => return Err(("22023", format!("invalid value for parameter \"switchyard.route\": \"{value}\" (use primary, replica or auto)"))),
                };
                encode::command_complete(out, "SET");
            }
            (0, "consistency") => {
                self.consistency = match value.to_ascii_lowercase().as_str() {
                    "read_your_writes" => Consistency::ReadYourWrites,
                    "eventual" => Consistency::Eventual,
                    "primary" => Consistency::Primary,
                    "default" => default_consistency,
                    _ => return Err(("22023", format!("invalid value for parameter \"switchyard.consistency\": \"{value}\" (use read_your_writes, eventual or primary)"))),
                };
                encode::command_complete(out, "SET");
            }
            (1, "route") => {
                self.route_override = None;
                encode::command_complete(out, "RESET");
            }
            (1, "consistency") => {
                self.consistency = default_consistency;
                encode::command_complete(out, "RESET");
            }
            (3, "route") | (3, "consistency") => {
                // It would have to end with the transaction, and a transaction's route is
                // chosen before its statements run; refused, not taken for the session's.
                return Err((
                    "0A000",
                    format!("SET LOCAL is not supported for \"switchyard.{name}\": use SET, which lasts for the session"),
                ));
            }
            (2, "route") | (2, "consistency") => {
                let v = if name == "route" {
                    match self.route_override {
                        None => "auto",
                        Some(Route::Primary) => "primary",
                        Some(Route::Replica) => "replica",
                    }
                } else {
                    match self.consistency {
                        Consistency::ReadYourWrites => "read_your_writes",
                        Consistency::Eventual => "eventual",
                        Consistency::Primary => "primary",
                    }
                };
                let col = format!("switchyard.{name}");
                encode::row_description_text(out, &[&col]);
                encode::data_row_text(out, &[v]);
                encode::command_complete(out, "SHOW");
            }
            _ => {
                return Err((
                    "42704",
                    format!("unrecognized configuration parameter \"switchyard.{name}\""),
                ))
            }
        }
        Ok(())
    }
}

/// The command tag PostgreSQL answers a transaction-starting statement with: `START
/// TRANSACTION` for that one, `BEGIN` for `BEGIN` (and `BEGIN WORK`, `BEGIN TRANSACTION`).
fn begin_tag(query: &[u8]) -> &'static str {
    let text = String::from_utf8_lossy(query);
    let start = crate::sql::Lexer::new(&text)
        .find(|t| !t.is_comment())
        .is_some_and(|t| t.is_kw("start"));
    if start {
        "START TRANSACTION"
    } else {
        "BEGIN"
    }
}
