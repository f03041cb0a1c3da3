//! Client → server: each client message is forwarded as is where possible (zero copy: the
//! bytes move from the client's read buffer to the server's write buffer), rewritten where the
//! proxy renames prepared statements, or answered by the proxy itself.

use bytes::{Buf, Bytes, BytesMut};

use super::pending::{Hook, Kind, Mode};
use super::route::Target;
use super::{Fatal, Pass, RestoreAfterCopy, Session};
use crate::protocol::{encode, read_cstr, tag, Header, TxnStatus};
use crate::sql::{Effects, PinReason};

/// What the relay loop should do next.
pub(super) enum Step {
    /// Nothing more to do with the client's bytes for now.
    Idle,
    /// The next message needs a server connection.
    NeedServer,
    /// The client said goodbye.
    Terminate,
}

/// Message types a client may send after startup.
fn is_frontend_tag(t: u8) -> bool {
    matches!(
        t,
        tag::QUERY
            | tag::PARSE
            | tag::BIND
            | tag::DESCRIBE
            | tag::EXECUTE
            | tag::CLOSE
            | tag::SYNC
            | tag::FLUSH
            | tag::FUNCTION_CALL
            | tag::TERMINATE
            | tag::COPY_DATA
            | tag::COPY_DONE
            | tag::COPY_FAIL
    )
}

/// What a client may send while the server reads COPY FROM STDIN data (a Terminate ends the
/// session anyway; Sync and Flush are ignored by the server).
fn during_copy_in(t: u8) -> bool {
    matches!(
        t,
        tag::COPY_DATA | tag::COPY_DONE | tag::COPY_FAIL | tag::SYNC | tag::FLUSH | tag::TERMINATE
    )
}

/// A statement name no client or proxy uses: a Bind of it fails (see
/// [`Session::respond_batch_error`]).
const FAIL_STATEMENT: &[u8] = b"switchyard: failed batch";

/// PostgreSQL's own message size ceiling; beyond it the length is garbage.
const MAX_PROTOCOL_MESSAGE: usize = 1 << 30;

impl Session {
    /// Handles complete client messages until the buffer runs dry, the server buffer is full,
    /// or a message needs a server connection.
    pub(super) fn process_client(&mut self) -> Result<Step, Fatal> {
        loop {
            if self.swbuf.len() >= super::relay::OUT_HIGH {
                return Ok(Step::Idle);
            }
            if self.pending.synthetic_bytes() >= super::relay::OUT_HIGH {
                // Its own answers wait behind the server's: make the server send what it
                // holds (a batch without Sync or Flush yet would otherwise keep them waiting).
                if self.server.is_some()
                    && self.client_pass == Pass::None
                    && !std::mem::replace(&mut self.synthetic_flushed, true)
                {
                    encode::empty(&mut self.swbuf, tag::FLUSH);
                }
                return Ok(Step::Idle);
            }
            self.synthetic_flushed = false;
            match self.client_pass {
                Pass::Forward(n) | Pass::Drop(n) => {
                    let k = n.min(self.client.rbuf.len());
                    if k == 0 {
                        return Ok(Step::Idle);
                    }
                    if matches!(self.client_pass, Pass::Forward(_)) {
                        super::relay::move_bytes(&mut self.swbuf, &mut self.client.rbuf, k);
                    } else {
                        self.client.rbuf.advance(k);
                    }
                    self.client_pass = match (self.client_pass, n - k) {
                        (_, 0) => Pass::None,
                        (Pass::Forward(_), r) => Pass::Forward(r),
                        (_, r) => Pass::Drop(r),
                    };
                    continue;
                }
                Pass::None => {}
            }
            let h = match Header::peek(&self.client.rbuf, MAX_PROTOCOL_MESSAGE) {
                Ok(Some(h)) => h,
                Ok(None) => return Ok(Step::Idle),
                Err(e) => return Err(Fatal::protocol(format!("invalid message from client: {e}"))),
            };
            if !is_frontend_tag(h.tag) {
                // Refuse at once, as PostgreSQL does, rather than waiting for a body that may
                // never come.
                return Err(Fatal::protocol(format!(
                    "invalid frontend message type {}",
                    h.tag
                )));
            }
            // Lengths refused from the header, before the body is read: PostgreSQL's limit
            // for the messages that carry a few names at most (`PQ_SMALL_MESSAGE_LIMIT`), and
            // `max_message_size` for every message that is not streamed through, complete or
            // not.
            let body = h.frame_len - 5;
            if body > SMALL_MESSAGE_LIMIT && is_small(h.tag) {
                return Err(Fatal::protocol("invalid message length"));
            }
            if h.frame_len > self.max_message && !streamable(h.tag) {
                return Err(Fatal::new(
                    "54000",
                    format!(
                        "message of {} bytes exceeds max_message_size ({} bytes)",
                        h.frame_len, self.max_message
                    ),
                ));
            }
            if self.client_in_copy() && !during_copy_in(h.tag) {
                // As PostgreSQL answers it: the copy fails, and the session ends (the client
                // and the server no longer agree on what the bytes that follow are). The
                // server connection, mid-copy, is given up (`finish`).
                self.app.metrics.error("08P01");
                encode::error(
                    &mut self.client.wbuf,
                    "ERROR",
                    "08P01",
                    &format!(
                        "unexpected message type 0x{:02X} during COPY from stdin",
                        h.tag
                    ),
                );
                return Err(Fatal::protocol(
                    "terminating connection because protocol synchronization was lost",
                ));
            }
            let have = self.client.rbuf.len();
            if have < h.frame_len {
                match self.start_streaming(h)? {
                    Some(step) => return Ok(step),
                    None => continue,
                }
            }
            if let Some(step) = self.handle(h)? {
                return Ok(step);
            }
        }
    }

    /// A message not yet complete: stream it if it may be large, else wait for the rest.
    /// Returns `None` when streaming started (the loop continues).
    fn start_streaming(&mut self, h: Header) -> Result<Option<Step>, Fatal> {
        // (A message too large not to stream was refused at its header.)
        let streams = h.tag == tag::COPY_DATA || h.frame_len > self.max_message;
        if !streams {
            return Ok(Some(Step::Idle));
        }
        if self.skip_until_sync && h.tag != tag::COPY_DATA {
            self.client_pass = Pass::Drop(h.frame_len);
            return Ok(None);
        }
        if self.server.is_none() {
            if h.tag == tag::COPY_DATA {
                // Copy data outside COPY is ignored, as PostgreSQL does.
                self.client_pass = Pass::Drop(h.frame_len);
                return Ok(None);
            }
            return Ok(Some(Step::NeedServer));
        }
        if h.tag != tag::COPY_DATA && self.leave_for_next_request() {
            // (A request of its own, behind one on a replica: it needs a server routed for it,
            // the primary, as it cannot be inspected.)
            return Ok(Some(Step::Idle));
        }
        if let Some(mut r) = self.retry.take() {
            // Streamed requests are not kept, so they cannot be repeated.
            r.release_into(&mut self.client.wbuf);
        }
        match h.tag {
            tag::QUERY => {
                // Too large to inspect: route it as is and assume it may change settings and
                // leave session state.
                self.capture = true;
                self.context_unsettled = true;
                self.check_state = true;
                self.forget_unnamed();
                self.copy_ended_since_request = false;
                self.query_ends_batch();
                self.pending.expect(Kind::Query, Mode::Forward, Hook::None);
            }
            tag::BIND => {
                // Only the statement name needs rewriting; the parameters stream through.
                let body = &self.client.rbuf[5..];
                let Some((portal, name)) =
                    read_cstr(body).and_then(|(portal, rest)| Some((portal, read_cstr(rest)?.0)))
                else {
                    // Its names are not all here yet: wait for them, within the size any
                    // message may be buffered to.
                    if self.client.rbuf.len() > self.max_message {
                        return Err(Fatal::new(
                            "54000",
                            format!(
                                "message of {} bytes exceeds max_message_size ({} bytes)",
                                h.frame_len, self.max_message
                            ),
                        ));
                    }
                    return Ok(Some(Step::Idle));
                };
                let prefix = 5 + portal.len() + 1 + name.len() + 1;
                let (portal, name) = (Bytes::copy_from_slice(portal), Bytes::copy_from_slice(name));
                let stmt = self.statements.get(&name).cloned();
                let Some(server_name) = self.prepare_for_use(&name)? else {
                    return Ok(None);
                };
                self.note_bind_effects(&name, stmt.as_deref());
                let new_len = h.frame_len - name.len() + server_name.len();
                let mut head = BytesMut::with_capacity(prefix + 8);
                head.extend_from_slice(&[tag::BIND]);
                head.extend_from_slice(&((new_len - 1) as i32).to_be_bytes());
                head.extend_from_slice(&portal);
                head.extend_from_slice(&[0]);
                head.extend_from_slice(&server_name);
                head.extend_from_slice(&[0]);
                self.swbuf.extend_from_slice(&head);
                self.client.rbuf.advance(prefix);
                self.client_pass = Pass::Forward(h.frame_len - prefix);
                self.pending.expect(Kind::Bind, Mode::Forward, Hook::None);
                self.batch_open = true;
                self.bound_in_batch = true;
                return Ok(None);
            }
            _ => {}
        }
        self.client_pass = Pass::Forward(h.frame_len);
        Ok(None)
    }

    /// Whether the client's messages now are inside a COPY FROM STDIN (see `copy_in`).
    fn client_in_copy(&self) -> bool {
        self.copy_in && self.server.is_some()
    }

    /// Handles one complete message. `Some(step)` stops the loop.
    fn handle(&mut self, h: Header) -> Result<Option<Step>, Fatal> {
        let needs_server = match h.tag {
            tag::TERMINATE => return Ok(Some(Step::Terminate)),
            tag::SYNC | tag::FLUSH if self.client_in_copy() => {
                // The server ignores both during COPY FROM STDIN (for clients that send them
                // after every Execute): passed on, with no answer owed.
                self.forward(h.frame_len);
                return Ok(None);
            }
            tag::SYNC | tag::FLUSH | tag::CLOSE => false,
            tag::COPY_DATA | tag::COPY_DONE | tag::COPY_FAIL => {
                if self.server.is_none() {
                    self.client.rbuf.advance(h.frame_len);
                    return Ok(None);
                }
                if let Some(mut r) = self.retry.take() {
                    // Copy data went to this server: the request cannot be repeated.
                    r.release_into(&mut self.client.wbuf);
                }
                if h.tag != tag::COPY_DATA {
                    self.copy_ended_since_request = true;
                    if self.copy_in {
                        self.copy_in = false;
                    } else {
                        // Sent before the server's CopyInResponse came back.
                        self.pending.end_copy_ahead();
                    }
                }
                self.forward(h.frame_len);
                if h.tag != tag::COPY_DATA {
                    match std::mem::replace(&mut self.restore_after_copy, RestoreAfterCopy::No) {
                        // The server runs it once the Query's copy (and the rest of it) is
                        // over.
                        RestoreAfterCopy::Query => self.restore_startup_settings(),
                        RestoreAfterCopy::Batch => self.restore_pending = true,
                        RestoreAfterCopy::No => {}
                    }
                }
                return Ok(None);
            }
            tag::QUERY
            | tag::PARSE
            | tag::BIND
            | tag::DESCRIBE
            | tag::EXECUTE
            | tag::FUNCTION_CALL => true,
            other => {
                return Err(Fatal::protocol(format!(
                    "invalid frontend message type {}",
                    other
                )));
            }
        };
        if needs_server
            && std::mem::replace(&mut self.restore_after_copy, RestoreAfterCopy::No)
                != RestoreAfterCopy::No
            && self.server.is_some()
        {
            // The Query's COPY never began (it failed first): the restore goes ahead of this
            // request. (A connection handed back meanwhile gets the settings anew anyway.)
            self.restore_startup_settings();
        }
        if self.skip_until_sync && h.tag != tag::SYNC {
            if h.tag == tag::FLUSH {
                // The client waits for the answers so far, the error among them (PostgreSQL
                // sends an error at once): a read held back to be repeated is let go. (An
                // error the proxy answers itself, a Parse of a name the client has, left
                // asyncpg waiting for ever after a Parse, Describe, Flush sent to a replica.)
                // Not a read the replica refused, which is repeated on the primary: the client
                // gets the repeat's answers instead.
                if let Some(r) = self.retry.as_mut().filter(|r| r.rescue.is_none()) {
                    r.release_into(&mut self.client.wbuf);
                }
            }
            // Still part of the request: repeated with it (the server skipped it too).
            if let Some(r) = self.retry.as_mut().filter(|r| r.holding()) {
                r.original
                    .extend_from_slice(&self.client.rbuf[..h.frame_len]);
            }
            self.client.rbuf.advance(h.frame_len);
            return Ok(None);
        }
        let awaits = match h.tag {
            tag::PARSE => self.parse_awaits_earlier(h),
            tag::BIND | tag::DESCRIBE | tag::CLOSE => self.statement_awaits_earlier(h),
            _ => false,
        };
        if awaits {
            // Whether the name is taken depends on how the server answers the earlier Parse
            // of it: wait for that answer (a Flush makes the server send it before Sync).
            if !std::mem::replace(&mut self.parse_wait_flushed, true) {
                encode::empty(&mut self.swbuf, tag::FLUSH);
            }
            return Ok(Some(Step::Idle));
        }
        self.parse_wait_flushed = false;
        if h.tag == tag::QUERY && std::mem::take(&mut self.drop_split_rest) {
            // The rest of a split Query whose first part failed: not run, as PostgreSQL runs
            // nothing after a Query's first error (the client has its ReadyForQuery).
            self.client.rbuf.advance(h.frame_len);
            return Ok(None);
        }
        if h.tag == tag::QUERY && self.split_query_after_block_end(h) {
            return Ok(None);
        }
        self.split_after_block_end(h);
        if self.leave_for_next_request() {
            return Ok(Some(Step::Idle));
        }
        self.split_rest_due = false;
        if self.sweep_statements && self.server.is_some() && self.between_requests() {
            // The client dropped statements and its next request follows on the connection it
            // has: those no client has any more are closed ahead of it.
            self.close_unheld_statements();
        }
        if let Some(r) = self.retry.as_mut().filter(|r| r.holding()) {
            r.original
                .extend_from_slice(&self.client.rbuf[..h.frame_len]);
        }
        if self.server.is_some()
            && matches!(
                h.tag,
                tag::PARSE | tag::BIND | tag::DESCRIBE | tag::EXECUTE | tag::CLOSE
            )
        {
            // An extended-protocol batch is open until its Sync: the server connection holds
            // its portals and error state until then. (A Flush alone opens nothing: after a
            // Sync, it would have kept the connection from an idle client.)
            self.batch_open = true;
        }
        if h.tag == tag::QUERY {
            return self.handle_query(h);
        }
        if needs_server && self.server.is_none() {
            if matches!(h.tag, tag::PARSE | tag::BIND) {
                if self.answer_lone_end() {
                    return Ok(None);
                }
                if self.ignored_in_failed_block(h) {
                    // As PostgreSQL drops the unnamed statement before it refuses a Parse.
                    if h.tag == tag::PARSE && self.client.rbuf.get(5) == Some(&0) {
                        self.forget_unnamed();
                    }
                    self.client.rbuf.advance(h.frame_len);
                    self.respond_batch_error(
                        "25P02",
                        "current transaction is aborted, commands ignored until end of transaction block",
                    );
                    return Ok(None);
                }
            }
            return Ok(Some(Step::NeedServer));
        }
        match h.tag {
            tag::PARSE => self.handle_parse(h)?,
            tag::BIND => self.handle_bind(h)?,
            tag::DESCRIBE => self.handle_describe_or_close(h, Kind::Describe)?,
            tag::CLOSE => self.handle_describe_or_close(h, Kind::Close)?,
            tag::EXECUTE => {
                self.executed_in_batch = true;
                self.ended_block_last = self.batch_ends_block;
                self.forward(h.frame_len);
                self.copy_ended_since_request = false;
                self.pending
                    .expect(Kind::Execute, Mode::Forward, Hook::None);
            }
            tag::FUNCTION_CALL => {
                let body = &self.client.rbuf[5..h.frame_len];
                let oid = body
                    .get(..4)
                    .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                let (builtin, pin) = crate::sql::of_function_call(oid);
                let mut pin = pin.map(|p| p.as_str());
                // set_config(text, text, boolean): its name, as a custom one is read back
                // by name (one that cannot be pins the client).
                if oid == 2078 {
                    use super::settings::CallSetting;
                    match super::settings::function_call_setting(body) {
                        CallSetting::Custom(name) => {
                            self.custom_names.insert(name);
                        }
                        CallSetting::Builtin => {}
                        CallSetting::Untracked => pin = Some(super::settings::COMPUTED_SETTING),
                    }
                }
                let effects = builtin | self.oid_effects(oid);
                self.context_unsettled |= effects.contains(Effects::SETTINGS);
                self.apply_effects(effects, pin);
                self.forward(h.frame_len);
                self.count_request();
                self.pending
                    .expect(Kind::FunctionCall, Mode::Forward, Hook::None);
            }
            tag::SYNC => {
                self.skip_until_sync = false;
                self.shape_portal = None;
                let copies = std::mem::take(&mut self.batch_copies_in);
                if self.server.is_some() {
                    self.forward(h.frame_len);
                    self.count_request();
                    let restore = if copies {
                        // Not into the batch's copy: after it (or before the next request,
                        // should the copy never begin).
                        if std::mem::take(&mut self.restore_pending) {
                            self.restore_after_copy = RestoreAfterCopy::Batch;
                        }
                        false
                    } else {
                        std::mem::take(&mut self.restore_pending) && self.restore_sql.is_some()
                    };
                    let hook = if restore {
                        Hook::HoldReady
                    } else if self.copy_ended_since_request {
                        Hook::AfterCopyEnd
                    } else {
                        Hook::None
                    };
                    self.pending.expect(Kind::Sync, Mode::Forward, hook);
                    // The batch ends a read-only transaction on a replica: what follows it
                    // is routed afresh once it is answered (see `leave_for_next_request`).
                    self.ending_block |= std::mem::take(&mut self.batch_ends_block);
                    self.ended_block_last = false;
                    self.batch_open = false;
                    self.bound_in_batch = false;
                    self.executed_in_batch = false;
                    self.flushed_batch = false;
                    if restore {
                        self.restore_startup_settings();
                    }
                } else {
                    self.client.rbuf.advance(h.frame_len);
                    self.respond_ready();
                }
            }
            tag::FLUSH => {
                if self.server.is_some() {
                    if let Some(r) = self.retry.as_mut() {
                        // The client asks for the answers so far (a cursor's rows before its
                        // Sync): once it has any, the request cannot be repeated. Not when it
                        // sent its Sync with the Flush: it waits for the whole answer then,
                        // which is held back as without the Flush (and the read can still be
                        // repeated elsewhere).
                        if !sync_follows(&self.client.rbuf[h.frame_len..]) {
                            r.flush_into(&mut self.client.wbuf);
                        }
                    }
                    self.flushed_batch = self.batch_open && !self.bound_in_batch;
                    self.forward(h.frame_len);
                } else {
                    self.client.rbuf.advance(h.frame_len);
                }
            }
            _ => unreachable!(),
        }
        Ok(None)
    }

    /// At the start of a request on an attached connection it may not belong on: whether
    /// to wait until that connection goes (then the request is routed afresh).
    fn leave_for_next_request(&mut self) -> bool {
        if self.flushed_batch
            && self.server.is_some()
            && !matches!(self.client.rbuf.first(), Some(&(tag::SYNC | tag::FLUSH)))
        {
            if self.batch_open
                && !self.bound_in_batch
                && self.txn == TxnStatus::Idle
                && self.pool_mode == crate::config::PoolMode::Transaction
                && self.current.config.config.routing.read_write_split
            {
                // What the client sends after a Flush in a batch that ran nothing (asyncpg's
                // Parse, Describe, Flush), before its Sync: the batch was routed by what it
                // parsed. A write (or a statement for the primary) that follows it on a replica
                // moves it, once the answers so far are in: a Sync of the proxy's own ends it
                // there (nothing ran in it), and this is routed afresh, its statements
                // prepared again where it goes. On the primary, whether it may write is told
                // now, for read-your-writes.
                let d = self.route_front();
                if self.target == Target::Replica
                    && d.target == Target::Primary
                    && self.pin.is_none()
                {
                    let quiet = self.pending.is_empty()
                        && self.swbuf.is_empty()
                        && self.client_pass == Pass::None
                        && self.server_pass == 0;
                    if quiet {
                        encode::empty(&mut self.swbuf, tag::SYNC);
                        self.pending.expect(Kind::Sync, Mode::Swallow, Hook::None);
                        self.batch_open = false;
                        self.flushed_batch = false;
                    }
                    // (Looked at again when the answers are in: an error among them skips
                    // this, as the server would, up to the client's Sync.)
                    return true;
                }
                if self.target == Target::Primary {
                    self.wrote |= d.write;
                }
                if self.target == Target::Replica
                    && d.retryable
                    && self.pending.is_empty()
                    && self.retry.as_ref().is_none_or(|r| !r.holding())
                {
                    // Nothing ran yet: what runs now (asyncpg's and postgres.js's Bind,
                    // Execute, Sync after their Parse, Describe, Flush) is an autocommit read
                    // like any, its answers held back and repeated elsewhere if the replica
                    // fails or refuses it (a write after all, an unlogged table) before they
                    // reach the client. The answers the client has are not repeated: where
                    // it is repeated, the statement is prepared anew for it.
                    self.retry = Some(super::retry::Retry {
                        may_write: d.write,
                        ..Default::default()
                    });
                }
            }
            self.flushed_batch = false;
        }
        // A request sent behind one that ends a read-only transaction on a replica belongs
        // to no transaction yet: it waits for that one's answer, then is routed (a write
        // sent right after the COMMIT ran on the replica and failed).
        let block_ends_on_replica = self.ending_block
            && self.target == Target::Replica
            && !self.pending.is_empty()
            && self.between_requests();
        if self.pin.is_some()
            && self.server.is_some()
            && self.target == Target::Primary
            && self.pool_mode == crate::config::PoolMode::Transaction
            && self.current.config.config.routing.read_write_split
            && self.at_request_boundary()
        {
            // A pinned client's requests run on its own connection, never routed: whether
            // one may write is still told, so that its commit's position is read back for the
            // reads of its read-your-writes scope (its user's other sessions, everyone's).
            // (Not on a replica, which refuses a write and has no such position.)
            self.wrote |= self.route_front().write;
        }
        if self.server.is_some()
            && !std::mem::take(&mut self.fresh_attach)
            && self.releasable()
            && (self.at_request_boundary() || block_ends_on_replica)
        {
            // The next request may need another server: on a replica it waits for the current
            // one to finish (one request at a time), and on the primary it waits when only the
            // proxy's own read-backs are outstanding (so a read after a write is routed, not
            // stuck on the primary). Requests pipelined behind a client request on the primary
            // follow it there.
            if self.target == Target::Replica || !self.pending.client_waiting() {
                self.fresh_attach = false;
                return true;
            }
            self.wrote = self.current.config.config.routing.read_write_split;
        }
        false
    }

    /// Whether the requests sent so far are complete from the client's side and no transaction
    /// is open, so the next message starts a new, separately routed request.
    fn at_request_boundary(&self) -> bool {
        self.txn == TxnStatus::Idle && self.between_requests()
    }

    /// Whether the next client message starts a request of its own (in or out of a
    /// transaction block): what the proxy sends now is answered before it, whatever the
    /// server makes of the requests ahead. (Not while the server skips the client's messages
    /// up to its Sync after an error: a simple Query sent in the batch, which ended it in the
    /// proxy's view, was skipped too, and the batch goes on to that Sync.)
    fn between_requests(&self) -> bool {
        !self.batch_open
            && !self.skip_until_sync
            && matches!(
                self.pending.last_kind(),
                Some(Kind::Sync | Kind::Query | Kind::FunctionCall) | None
            )
    }

    /// Whether the server connection goes back to the pool between transactions.
    pub(super) fn releasable(&self) -> bool {
        self.pool_mode == crate::config::PoolMode::Transaction && self.pin.is_none()
    }

    /// Moves one whole message to the server unchanged.
    pub(super) fn forward(&mut self, len: usize) {
        super::relay::move_bytes(&mut self.swbuf, &mut self.client.rbuf, len);
    }

    /// Sends bytes to the client in order with whatever responses are still due.
    pub(super) fn respond(&mut self, bytes: BytesMut) {
        self.respond_undoable(bytes, Hook::None);
    }

    /// Like [`respond`](Self::respond), with what to undo if an error before it in the same
    /// batch means the server would not have answered it.
    pub(super) fn respond_undoable(&mut self, bytes: BytesMut, hook: Hook) {
        if !self.pending.is_empty() {
            self.pending.synthetic(bytes.freeze(), hook);
        } else if let Some(r) = self.retry.as_mut() {
            // Part of a repeatable request's answer: held back with the rest of it.
            r.hold(bytes, &mut self.client.wbuf);
        } else {
            self.client.wbuf.extend_from_slice(&bytes);
        }
    }

    /// [`respond`](Self::respond) with `b`, an ErrorResponse of the proxy's own (SQLSTATE
    /// `code`), counted in `errors_total` once it is the client's: now, or, queued behind
    /// answers of the server, when its turn comes (`process_server`). One an error of the
    /// server before it in the batch skips is never sent (PostgreSQL would not have raised
    /// it), nor counted.
    pub(super) fn respond_error(&mut self, b: BytesMut, code: &str) {
        if self.pending.is_empty() {
            self.app.metrics.error(code);
        }
        self.respond(b);
    }

    pub(super) fn respond_ready(&mut self) {
        let mut b = BytesMut::new();
        let status = if self.server.is_some() {
            self.txn
        } else if self.deferred_begin.is_some() {
            TxnStatus::InTransaction
        } else if self.aborted_txn {
            TxnStatus::Failed
        } else {
            TxnStatus::Idle
        };
        encode::ready_for_query(&mut b, status);
        self.respond(b);
    }

    /// Reports an error inside an extended-protocol batch and skips to its Sync. The server
    /// is made to fail too (a Bind of a statement that cannot exist, its error dropped), so
    /// that, as in PostgreSQL, the error rolls back the batch's implicit transaction or fails
    /// the client's transaction block.
    pub(super) fn respond_batch_error(&mut self, code: &str, message: &str) {
        let mut b = BytesMut::new();
        encode::error(&mut b, "ERROR", code, message);
        self.respond_batch_error_message(b, code);
    }

    /// [`respond_batch_error`](Self::respond_batch_error) with an ErrorResponse message made
    /// by the caller (SQLSTATE `code`).
    pub(super) fn respond_batch_error_message(&mut self, b: BytesMut, code: &str) {
        self.respond_error(b, code);
        self.skip_until_sync = true;
        if self.server.is_some() {
            // Portal "", statement FAIL_STATEMENT, no formats, parameters or result formats.
            encode::bind_renamed(&mut self.swbuf, b"", FAIL_STATEMENT, &[0; 6]);
            self.pending.expect(Kind::Bind, Mode::Restore, Hook::None);
        } else {
            // A block the proxy answered BEGIN for fails all the same (see `fail_request`).
            self.fail_held_block();
        }
    }

    /// The proxy's own simple query on the attached connection (it destroys the server's
    /// unnamed statement, as any simple query does).
    pub(super) fn own_query(&mut self, sql: &str, mode: Mode, hook: Hook) {
        encode::query(&mut self.swbuf, sql);
        self.pending.expect(Kind::Query, mode, hook);
        if let Some(p) = self.server.as_mut() {
            p.conn.unnamed_owner = None;
        }
    }

    /// Keeps the client's unnamed statement as it is, before an unnamed Parse or Close (the
    /// next unnamed sequence number) replaces it. (No allocation: shared handles.)
    pub(super) fn keep_unnamed_before(&mut self) {
        self.unnamed_before = Some(super::UnnamedBefore {
            seq: self.unnamed_seq + 1,
            frame: self.unnamed.clone(),
            effects: self.unnamed_effects,
            generation: self.unnamed_generation,
            deallocates: self.unnamed_deallocates,
            depends: self.unnamed_depends.clone(),
        });
    }

    /// The client's unnamed Parse `seq` failed: PostgreSQL dropped the unnamed statement before
    /// parsing it, so when that Parse is the client's latest, or a later one in its batch was
    /// skipped (`later_skipped`), the client has none. One in a later batch stands; should
    /// that one be skipped, what comes back is none if it came right after the failed one
    /// (what it replaced is the failed one's), else what it replaced.
    pub(super) fn unnamed_parse_failed(&mut self, seq: u64, later_skipped: bool) {
        match self.unnamed_before.as_mut() {
            Some(b) if b.seq == seq + 1 && !later_skipped => {
                b.frame = None;
                b.depends = None;
            }
            Some(b) if b.seq > seq + 1 && !later_skipped => {}
            _ => self.unnamed_before = None,
        }
        if self.unnamed_seq == seq || later_skipped {
            self.forget_unnamed();
        }
    }

    /// The server skipped the unnamed Parse or Close `seq`, the client's latest: its unnamed
    /// statement is the one before, if kept (else it has none it can rely on). Under a new
    /// sequence number, so it is prepared again before it is used: the server's own unnamed
    /// statement may be another client's.
    pub(super) fn give_unnamed_back(&mut self, seq: u64) {
        match self.unnamed_before.take().filter(|b| b.seq == seq) {
            Some(b) => {
                self.unnamed = b.frame;
                self.unnamed_effects = b.effects;
                self.unnamed_generation = b.generation;
                self.unnamed_deallocates = b.deallocates;
                self.unnamed_depends = b.depends;
            }
            None => {
                self.unnamed = None;
                self.unnamed_depends = None;
            }
        }
        self.unnamed_seq += 1;
    }

    /// The client no longer has an unnamed statement: no server connection holds it.
    pub(super) fn forget_unnamed(&mut self) {
        self.unnamed = None;
        self.unnamed_depends = None;
        // (A Bind of the unnamed statement now fails: nothing of the old one runs.)
        self.unnamed_effects = (Effects::NONE, None);
        self.unnamed_deallocates = false;
        self.unnamed_seq += 1;
        if let Some(p) = self.server.as_mut() {
            p.conn.unnamed_owner = None;
        }
    }

    /// Whether `pin`, the reason a Query about to run pins the client, is state a standby
    /// refuses to make (a temporary table, a `LISTEN`) while the Query runs on a replica: it
    /// fails there (as it would in the read-only transaction that brought it there), leaving
    /// nothing to pin the client to that server for. (Not so for a Parse: a standby parses
    /// the statement, and a Bind of it may run it later where it succeeds.)
    pub(super) fn refused_by_standby(&self, pin: Option<&'static str>) -> bool {
        self.server.is_some()
            && self.target == Target::Replica
            && pin.is_some_and(|r| {
                r == PinReason::TempTable.as_str() || r == PinReason::Listen.as_str()
            })
    }

    /// Session effects of the message about to be forwarded (called before it is queued).
    pub(super) fn apply_effects(&mut self, effects: Effects, pin: Option<&'static str>) {
        if effects.contains(Effects::SETTINGS) {
            self.capture = true;
        }
        if effects.contains(Effects::STATE) {
            self.capture = true;
            self.check_state = true;
        }
        if effects.contains(Effects::SCHEMA) {
            self.schema_changed = true;
            if !std::mem::replace(&mut self.change_counted, true) {
                self.app.statements.begin_change();
            }
            // This session sees the change at once: what it parses from now on is prepared
            // anew (a statement interned before would still carry, say, a dropped type's
            // id). Others see it once it commits (invalidated again then).
            self.app.statements.invalidate();
        }
        self.note_sequence_effects(effects);
        if (effects.contains(Effects::RESET_ALL) && self.txn != TxnStatus::Failed)
            || (effects.contains(Effects::DISCARD_ALL) && self.txn == TxnStatus::Idle)
        {
            // (switchyard.* are answered by the proxy: the server's RESET ALL cannot reach them.)
            self.route_override = None;
            self.consistency = self
                .user
                .config
                .consistency
                .unwrap_or(self.app.config.load().config.routing.consistency);
        }
        if let Some(reason) = pin {
            // (Whether or not an earlier reason pinned the client already.)
            self.pin_outlives_reset |= matches!(reason, "dblink" | "server_session");
            if self.pin.is_none() {
                tracing::debug!(parent: &self.span, reason, "client pinned to its server connection");
                self.app.metrics.pins.with_label_values(&[reason]).inc();
                self.pin = Some(reason);
                self.cancel.mark_held();
            }
            if let Some(p) = self.server.as_mut() {
                p.conn.needs_reset = true;
            }
        }
        if self.forgets_statements(effects) {
            self.forget_statements();
            // (A simple query drops the unnamed statement whatever it runs.)
            self.forget_unnamed();
        }
    }

    /// Whether a DISCARD ALL or DEALLOCATE ALL among `effects` runs: DISCARD ALL fails in a
    /// transaction block; nothing runs in a failed one.
    pub(super) fn forgets_statements(&self, effects: Effects) -> bool {
        (effects.contains(Effects::DISCARD_ALL) && self.txn == TxnStatus::Idle)
            || (effects.contains(Effects::DEALLOCATE_ALL) && self.txn != TxnStatus::Failed)
    }

    /// The client's named statements are gone, and the attached connection has none left.
    /// (Should the command fail all the same, the server keeps statements the proxy now
    /// believes gone: every statement it prepares again is closed first, see
    /// `close_before_parse`.)
    pub(super) fn forget_statements(&mut self) {
        self.statements.clear();
        if let Some(p) = self.server.as_mut() {
            p.conn.prepared.clear();
        }
    }

    pub(super) fn restore_startup_settings(&mut self) {
        if let Some(sql) = self.restore_sql.clone() {
            self.own_query(&sql, Mode::Restore, Hook::None);
        }
    }

    pub(super) fn count_request(&self) {
        if let Some(p) = &self.server {
            p.pool().count_request();
        }
    }
}

/// PostgreSQL's limit on the body of the messages that carry a few names at most.
const SMALL_MESSAGE_LIMIT: usize = 10_000;

/// Close, Describe, Execute, Flush, Sync and Terminate: read with `PQ_SMALL_MESSAGE_LIMIT`
/// by PostgreSQL (`SocketBackend`), which logs "invalid message length" and ends the session
/// past it.
fn is_small(t: u8) -> bool {
    matches!(
        t,
        tag::CLOSE | tag::DESCRIBE | tag::EXECUTE | tag::FLUSH | tag::SYNC | tag::TERMINATE
    )
}

/// The messages relayed in pieces when larger than `max_message_size` (copy data whatever
/// its size): the proxy needs only their start.
fn streamable(t: u8) -> bool {
    matches!(t, tag::COPY_DATA | tag::QUERY | tag::BIND)
}

/// Whether the whole messages at the start of `buf` include a Sync.
fn sync_follows(buf: &[u8]) -> bool {
    let mut at = 0;
    while let Ok(Some(h)) = Header::peek(&buf[at..], usize::MAX) {
        if buf.len() - at < h.frame_len {
            return false;
        }
        if h.tag == tag::SYNC {
            return true;
        }
        at += h.frame_len;
    }
    false
}
