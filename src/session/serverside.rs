//! Server → client: scan server messages in the read buffer, relay runs of them without
//! copying, drop the answers to the proxy's own messages, hold back a repeatable read's
//! response, and keep the bookkeeping (transaction status, parameters, prepared statements,
//! settings and commit-position read-backs) up to date.

use bytes::{Buf, Bytes, BytesMut};

use super::pending::{Hook, Kind, Mode};
use super::retry::Refusal;
use super::route::Target;
use super::settings::Settings;
use super::{Fatal, Pass, ReadBack, Session};
use crate::pool::server::parse_data_row;
use crate::protocol::{tag, ErrorFields, Header, TxnStatus};
use crate::sql::{Effects, PinReason};

/// How many times in a row a read-back of the client's settings that a cancel hit is made
/// again before the client is pinned instead.
const CAPTURE_RETRIES: u8 = 3;

/// Server messages are trusted up to PostgreSQL's own limit.
const MAX_SERVER_MESSAGE: usize = (1 << 30) + 64;

/// Why a hot standby did not run a read: refused it as one that only the primary can run, by
/// SQLSTATE (and, for 0A000, which is also "cached plan must not change result type" and
/// others, the routine), or cancelled it for a conflict with recovery.
fn refused_by_standby(f: &ErrorFields) -> Option<Refusal> {
    match f.code {
        // "canceling statement due to conflict with recovery": 40001 (the only serialization
        // failure a standby's reads can get: it runs nothing SERIALIZABLE), or 40P01 for a
        // buffer pin deadlock with the startup process, which an advisory-lock deadlock
        // between two readers (DeadLockReport) is not. Raised while processing interrupts
        // (ProcessInterrupts; ProcessRecoveryConflictInterrupt from PostgreSQL 17). Only an
        // ERROR: a FATAL one ends the connection, and a lost connection is repeated anyway.
        "40001" | "40P01"
            if f.severity == "ERROR"
                && (f.routine.starts_with("ProcessRecoveryConflict")
                    || f.routine == "ProcessInterrupts"
                    || (f.routine.is_empty() && f.code == "40001")) =>
        {
            Some(Refusal::Conflict)
        }
        // "cannot execute ... in a read-only transaction": a write after all.
        "25006" => Some(Refusal::Statement),
        // "recovery is in progress" (pg_current_wal_lsn() and other WAL control functions).
        "55000" => Some(Refusal::Statement),
        // "cannot use serializable mode in a hot standby": every statement of a session whose
        // transactions default to SERIALIZABLE.
        "0A000"
            if f.routine == "GetSerializableTransactionSnapshot"
                || (f.routine.is_empty() && f.message.contains("serializable")) =>
        {
            Some(Refusal::Session)
        }
        // "cannot access temporary or unlogged relations during recovery": an unlogged table
        // (a standby has none of its rows), planned in get_relation_info, or copied out by
        // `COPY t TO STDOUT` (BeginCopyTo). (A temporary table is the session's: its reads
        // already run where it was made.)
        "0A000"
            if f.routine == "get_relation_info"
                || ((f.routine == "BeginCopyTo" || f.routine.is_empty())
                    && f.message.contains("unlogged relations")) =>
        {
            Some(Refusal::Statement)
        }
        // "could not open file": the same unlogged table read without the planner, by a
        // PostgreSQL whose BeginCopyTo does not check (15.18's `COPY t TO STDOUT` reaches
        // for the table's main fork, which a standby does not have: it has only the init
        // fork). Repeated on the primary, as any read would be after a broken replica's error.
        "58P01" if f.severity == "ERROR" && f.routine == "mdopenfork" => Some(Refusal::Statement),
        _ => None,
    }
}

/// Whether `request` (a client's messages, whole) ends with a Query or a Sync: a request
/// complete.
fn ends_request(request: &[u8]) -> bool {
    let mut at = 0;
    let mut last = None;
    while let Ok(Some(h)) = Header::peek(&request[at..], usize::MAX) {
        if request.len() < at + h.frame_len {
            return false;
        }
        last = Some(h.tag);
        at += h.frame_len;
    }
    at == request.len() && matches!(last, Some(tag::QUERY | tag::SYNC))
}

/// See [`Session::note_reported`] (apart, for the borrow of the server connection).
fn note_reported(
    reported: &mut (String, String),
    opaque_backslashes: &mut bool,
    name: &[u8],
    value: &[u8],
) {
    let value = String::from_utf8_lossy(value);
    match name {
        b"standard_conforming_strings" => reported.0 = value.into_owned(),
        b"client_encoding" => reported.1 = value.into_owned(),
        _ => return,
    }
    *opaque_backslashes = crate::sql::backslashes_are_opaque(&reported.0, &reported.1);
}

impl Session {
    /// A parameter the server reported: `standard_conforming_strings` and `client_encoding`
    /// decide how the client's backslashes are read.
    pub(super) fn note_reported(&mut self, name: &[u8], value: &[u8]) {
        note_reported(
            &mut self.reported,
            &mut self.opaque_backslashes,
            name,
            value,
        );
    }

    /// Relays what the server sent.
    pub(super) fn process_server(&mut self) -> Result<(), Fatal> {
        let releasable = self.releasable();
        let Some(p) = self.server.as_mut() else {
            return Ok(());
        };
        let conn = &mut p.conn;
        // What this call produces for the client, in order: straight into the client's output
        // buffer unless a repeatable read's response is being held back (whether one is does
        // not change within this call).
        let direct = self.retry.is_none();
        let mut out = if direct {
            std::mem::take(&mut self.client.wbuf)
        } else {
            BytesMut::new()
        };
        // Bytes at the front of conn.rbuf already scanned and to be relayed.
        let mut run = 0usize;
        // A replica refused the client's statement when it could no longer be repeated.
        let mut refused_late = false;
        let flush = |run: &mut usize, rbuf: &mut BytesMut, out: &mut BytesMut| {
            if *run > 0 {
                super::relay::move_bytes(out, rbuf, *run);
                *run = 0;
            }
        };
        let mut request_done = false;
        let mut resync = false;
        // The settings read back show the session's role or authorization changed.
        let mut identity_changed = false;
        // The read-back found state in the session that cannot move (why).
        let mut kept_state: Option<PinReason> = None;
        let mut own_failure = None;
        let mut position_unread = None;
        // What errors did to the client's unnamed statement, in order (applied after the
        // loop, which holds the connection).
        let mut unnamed_outcomes: Vec<UnnamedOutcome> = Vec::new();
        // Errors relayed to the client, and its transactions ended it is told of (counted per
        // backend after the loop).
        let mut errors = 0u64;
        let mut transactions = 0u64;
        loop {
            while let Some(b) = self.pending.pop_synthetic() {
                if b.first() == Some(&tag::ERROR_RESPONSE) {
                    // An error of the proxy's own, its turn come (see `respond_error`).
                    let code = b.get(5..).map_or("", |body| ErrorFields::parse(body).code);
                    self.app.metrics.error(code);
                }
                flush(&mut run, &mut conn.rbuf, &mut out);
                let start = out.len();
                out.extend_from_slice(&b);
                // Its status is the one the requests before it left.
                super::pending::restamp_ready(&mut out[start..], self.txn);
            }
            let avail = conn.rbuf.len() - run;
            if self.server_pass > 0 {
                let n = self.server_pass.min(avail);
                if n == 0 {
                    break;
                }
                run += n;
                self.server_pass -= n;
                continue;
            }
            let h = match Header::peek(&conn.rbuf[run..], MAX_SERVER_MESSAGE) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => {
                    conn.broken = true;
                    if direct {
                        self.client.wbuf = out;
                    }
                    return Err(Fatal::new(
                        "08P01",
                        format!("invalid message from server: {e}"),
                    ));
                }
            };
            let rescuing = self.retry.as_ref().is_some_and(|r| r.rescue.is_some());
            if avail < h.frame_len {
                let streamable = matches!(h.tag, tag::DATA_ROW | tag::COPY_DATA)
                    && self.pending.front_mode() == Mode::Forward
                    && !rescuing;
                if !streamable {
                    break;
                }
                if self.retry.as_ref().is_some_and(|r| {
                    r.holding()
                        && r.held.len() + out.len() + run + h.frame_len <= super::retry::HOLD_BUDGET
                }) {
                    // A repeatable read's response that still fits what is held back: wait
                    // for the rest of the row rather than give up repeating it.
                    break;
                }
                // A large row or copy chunk: relay it as it arrives (too big to hold back).
                if let Some(r) = self.retry.as_mut() {
                    flush(&mut run, &mut conn.rbuf, &mut out);
                    r.hold(std::mem::take(&mut out), &mut self.client.wbuf);
                    r.release_into(&mut self.client.wbuf);
                }
                self.pending.on_server(h.tag);
                self.server_pass = h.frame_len;
                continue;
            }
            if h.tag == tag::DATA_ROW && !rescuing && self.pending.front_mode() == Mode::Forward {
                // The bulk of a result: a row for the client completes nothing and changes
                // nothing (what matching it would conclude, found without matching).
                run += h.frame_len;
                continue;
            }
            let m = self.pending.on_server(h.tag);
            if matches!(m.completed, Some((Kind::Execute, Mode::Forward))) {
                self.client_ran = true;
            }
            if h.tag == tag::NOTIFICATION_RESPONSE && h.frame_len >= 9 {
                // A notification names the process id the notifying client was given, as
                // PostgreSQL's would name its process: this client's own (its NOTIFY ran on
                // this connection), or another's that held the notifying server process.
                let at = run + 5..run + 9;
                if let Ok(pid) = <[u8; 4]>::try_from(&conn.rbuf[at.clone()]) {
                    let pid = i32::from_be_bytes(pid);
                    let client = if pid == conn.pid {
                        Some(self.client_pid)
                    } else {
                        conn.holder.as_ref().and_then(|h| h.client_of(pid))
                    };
                    if let Some(c) = client {
                        conn.rbuf[at].copy_from_slice(&c.to_be_bytes());
                    }
                }
            }
            if let Some(id) = m.shape_of.filter(|_| {
                matches!(
                    h.tag,
                    tag::ROW_DESCRIPTION | tag::NO_DATA | tag::PARAMETER_DESCRIPTION
                )
            }) {
                // The row shape and parameter types the client now knows its statement by.
                if let Some(s) = self.statements.values().find(|s| s.id == id) {
                    if h.tag == tag::PARAMETER_DESCRIPTION {
                        let _ = s.params.set(Bytes::copy_from_slice(
                            &conn.rbuf[run + 5..run + h.frame_len],
                        ));
                    } else {
                        let _ = s
                            .shape
                            .set(Bytes::copy_from_slice(&conn.rbuf[run..run + h.frame_len]));
                    }
                }
            }
            let body = &conn.rbuf[run + 5..run + h.frame_len];
            let mut forward = m.forward && !rescuing;
            // The first part of a split Query failed: PostgreSQL would not run the rest.
            self.drop_split_rest |= m.split_failed;
            self.split_rest_due |= m.split_done;
            match h.tag {
                tag::COPY_IN_RESPONSE | tag::COPY_BOTH_RESPONSE if m.forward => {
                    // An Execute's COPY: the Syncs sent with it were ignored (see
                    // `Pending::on_server`), so its batch is open until the one after the copy.
                    let execute = self.pending.front_kind() == Some(Kind::Execute);
                    if m.copy_ended {
                        // The client sent its data and CopyDone (or CopyFail) right behind
                        // the request: it is past the copy, and past the batch if its Sync
                        // after the copy came too.
                        self.batch_open |= execute && !self.pending.synced_after_copy();
                    } else {
                        self.copy_in = true;
                        self.batch_open |= execute;
                    }
                }
                tag::COMMAND_COMPLETE | tag::PORTAL_SUSPENDED if m.forward => {
                    if let Some((_, ran)) = self.terminates.as_mut() {
                        *ran |= body != b"SELECT 0\0";
                    }
                }
                tag::READY_FOR_QUERY => {
                    self.copy_in = false;
                    if let Some(s) = body.first().and_then(|&b| TxnStatus::from_byte(b)) {
                        self.txn = s;
                        if s == TxnStatus::Idle && self.schema_changed {
                            // The schema change is committed (or rolled back): statements
                            // parsed from now on see it.
                            self.app.statements.invalidate();
                            self.schema_changed = !self.pending.is_empty();
                            if !self.schema_changed && std::mem::take(&mut self.change_counted) {
                                // (Session::end_schema_change, apart for the borrow of the
                                // connection.)
                                self.app.statements.end_change();
                            }
                        }
                        if s == TxnStatus::Idle && self.wrote && m.forward {
                            // The client learns of the commit with this message: until its WAL
                            // position is known, reads in scope must not use a replica. One
                            // count covers the commits of pipelined requests: the position is
                            // read back once the connection is quiet, after all of them.
                            self.ryw.begin_commit(self.current.view.epoch);
                            self.wrote = false;
                        }
                    }
                    request_done = self.pending.is_empty();
                    self.client_ran = false;
                    // (The request that began a block is answered: `txn` says it now.)
                    self.request_begins = self.request_begins.filter(|&n| n > 1).map(|n| n - 1);
                    if request_done {
                        self.ending_block = false;
                        self.request_begins = None;
                    }
                    // (Not the ReadyForQuery of a read the replica refused: the client has
                    // the one of its repeat, counted where it ran.)
                    transactions += u64::from(forward && self.txn == TxnStatus::Idle);
                    if m.forward {
                        // The client's pg_terminate_backend ran (see terminate_client).
                        if let Some((pid, true)) = self.terminates.take() {
                            let (user, su, span) = (&self.user.name, self.superuser, &self.span);
                            if self.app.cancels.terminate(pid, user, su) {
                                tracing::info!(parent: span, pid, "client ended by pg_terminate_backend");
                            }
                        }
                    }
                }
                tag::PARAMETER_STATUS => {
                    if m.forward {
                        // The client's own SET or RESET: the admin console lists it.
                        if let Some(name) = body.strip_prefix(b"application_name\0") {
                            let name = name.strip_suffix(b"\0").unwrap_or(name);
                            self.cancel
                                .set_application_name(&String::from_utf8_lossy(name));
                        }
                    }
                    if forward {
                        // Told with the ReadyForQuery, if it still differs then.
                        self.reports.note(body);
                        forward = false;
                    }
                    let b = body.to_vec();
                    conn.note_parameter(&b);
                    if let Some((name, rest)) = crate::protocol::read_cstr(&b) {
                        let value = crate::protocol::read_cstr(rest).map_or(&b""[..], |v| v.0);
                        note_reported(
                            &mut self.reported,
                            &mut self.opaque_backslashes,
                            name,
                            value,
                        );
                    }
                }
                tag::ERROR_RESPONSE => {
                    if m.forward {
                        // (Whatever failed, the client's pg_terminate_backend did not run,
                        // and a COPY FROM STDIN is over.)
                        self.terminates = None;
                        self.copy_in = false;
                    }
                    let f = ErrorFields::parse(body);
                    if f.routine == "RevalidateCachedQuery" {
                        // "cached plan must not change result type": the schema changed
                        // behind the proxy's back (DDL not sent through it). The client
                        // gets the error as from PostgreSQL; its next Parse gets a new
                        // statement.
                        self.app.statements.invalidate();
                    }
                    if !m.forward && m.mode != Mode::Restore {
                        own_failure = Some(format!("{} {}", f.code, f.message));
                        if m.mode == Mode::Capture && f.severity == "ERROR" {
                            // The proxy's reading back of the client's settings failed (a
                            // statement_timeout or a cancel of the client's own hit it): what
                            // they are is unknown. (A failed query leaves the connection as it
                            // was; its ReadyForQuery may come in a later read.)
                            self.read_back = if f.code == "57014" {
                                ReadBack::Cancelled
                            } else {
                                ReadBack::Failed
                            };
                        } else {
                            conn.broken = true;
                        }
                    }
                    if f.severity == "FATAL" || f.severity == "PANIC" {
                        conn.broken = true;
                        if releasable {
                            // The server ended the session the client was using (an
                            // administrator's pg_terminate_backend, a shutdown, an idle
                            // transaction timeout): as connected directly, the client gets
                            // the FATAL and loses its connection (relay.rs) when it was
                            // using it (a request in flight, a transaction open). Not when
                            // its read is repeated elsewhere (it never hears of this server),
                            // nor when only the proxy's own query ran there: also when the
                            // client's request waited behind it (the server ends the session
                            // before it reads the next message: the request never ran, and
                            // the client is told so with an error, its session kept).
                            let repeats = super::retry::repeats_on_loss(
                                self.retry.as_ref(),
                                self.retry_attempts,
                                self.client_pass == Pass::None,
                            );
                            // (The entry at the head says whose work it ended: an error of
                            // the proxy's own Parse of the client's statement is forwarded,
                            // but the client's Bind behind it has not run.)
                            let own = m.mode != Mode::Forward && !self.client_ran;
                            let using = self.txn != TxnStatus::Idle
                                || (!own && self.pending.client_waiting());
                            forward = using && !repeats && !rescuing;
                            self.fatal_unstarted = own && self.txn == TxnStatus::Idle;
                        }
                        self.server_fatal = Some((f.message.to_string(), forward));
                    }
                    let may_write = self.retry.as_ref().is_some_and(|r| r.may_write);
                    let refused = refused_by_standby(&f).filter(|r| {
                        m.forward
                            && self.target == Target::Replica
                            && match r {
                                // Refused before anything ran (the transaction's snapshot).
                                Refusal::Session => true,
                                // What a hint sent there although it may write is not repeated:
                                // the statements before the refused one ran, and what they did
                                // outside the database (a dblink_exec) would be done twice.
                                Refusal::Statement => !may_write,
                                // A read cancelled again and again gets its error in the end.
                                Refusal::Conflict => {
                                    self.retry_attempts + 1 < super::retry::MAX_ATTEMPTS
                                        && !may_write
                                }
                            }
                    });
                    if refused == Some(Refusal::Session) {
                        self.replica_refused = true;
                    }
                    if refused.is_some() {
                        // (Not while the client waits on a Flush: the repeat would wait for
                        // the replica's ReadyForQuery, which comes only after the client's
                        // Sync. Its error is the client's, as connected to the replica.)
                        if let Some(r) = self.retry.as_mut().filter(|r| r.holding() && !r.streaming)
                        {
                            // A read only the primary can run: nothing reached the client, so
                            // run it there once the replica is done with it.
                            r.rescue = refused;
                            forward = false;
                        } else if refused == Some(Refusal::Statement) {
                            // Too late to repeat (rows reached the client): it gets the error,
                            // as connected to the replica, but the statement is remembered,
                            // so that it runs on the primary from now on.
                            refused_late = true;
                        }
                    }
                    // What reaches the client: not a refusal or a lost session its read is
                    // repeated for, but the FATAL of a session it was using.
                    if forward {
                        errors += 1;
                    }
                }
                tag::DATA_ROW if m.capture => {
                    let cols = parse_data_row(body);
                    match cols.as_slice() {
                        [Some(lsn)] => self.captured_lsn = crate::cluster::lag::parse_lsn(lsn),
                        [Some(k), Some(v)] => self.captured.push((k.clone(), v.clone())),
                        _ => {}
                    }
                }
                _ => {}
            }
            if m.awaiting_sync {
                // Mirror the server: what the client sends before its Sync is discarded (and
                // answered by nobody), so the proxy must not expect or synthesize answers.
                self.skip_until_sync = true;
            }
            if m.skipped {
                // The client's latest unnamed Parse or Close skipped, its unnamed Parse that
                // failed.
                let (mut unnamed_skipped, mut unnamed_failed) = (None, None);
                // Undone latest first (a Close then a Parse of the same name: the Parse's
                // statement goes, then the closed one comes back).
                for hook in self.pending.take_skipped().into_iter().rev() {
                    match hook {
                        Hook::Parse { id, name } => {
                            conn.prepared.remove(id);
                            if !name.is_empty() {
                                if self.statements.get(&name).is_some_and(|s| s.id == id) {
                                    self.statements.remove(&name);
                                }
                                self.pending.forget_closes(&name, id, false);
                            }
                        }
                        Hook::CachedParse { id, name } => {
                            if self.statements.get(&name).is_some_and(|s| s.id == id) {
                                self.statements.remove(&name);
                            }
                            self.pending.forget_closes(&name, id, true);
                        }
                        Hook::Closed {
                            name,
                            statement,
                            on_server,
                        } if !self.statements.contains_key(&name) => {
                            // The server skipped the Close: the statement is still there
                            // (and on this connection, if it was closed here).
                            if on_server {
                                conn.prepared
                                    .insert(&statement.0, self.app.statements.changing());
                            }
                            self.statements.insert(name, statement.0);
                        }
                        Hook::Evicted { id } => conn.prepared.orphan(id),
                        Hook::UnnamedParse { client, seq } => {
                            // The server's unnamed statement is whatever it was before, unless
                            // a later Parse (of a later batch) is on its way.
                            if conn.unnamed_owner == Some((self.id, seq)) {
                                conn.unnamed_owner = None;
                            }
                            if client && self.unnamed_seq == seq {
                                unnamed_skipped = Some(seq);
                            } else if client {
                                // An earlier one of the client's, skipped (in this batch or an
                                // earlier one): the statement the Parse after it replaced was
                                // never the server's. Which one the server kept is not known
                                // here: should that later Parse be skipped too, the client has
                                // none (a Bind of it fails rather than run the wrong one).
                                if let Some(b) =
                                    self.unnamed_before.as_mut().filter(|b| b.seq == seq + 1)
                                {
                                    b.frame = None;
                                    b.depends = None;
                                }
                            }
                        }
                        Hook::UnnamedParseFailed { seq } => {
                            if conn.unnamed_owner == Some((self.id, seq)) {
                                conn.unnamed_owner = None;
                            }
                            unnamed_failed = Some(seq);
                        }
                        _ => {}
                    }
                }
                match (unnamed_failed, unnamed_skipped) {
                    (Some(seq), later) => unnamed_outcomes.push(UnnamedOutcome::Failed {
                        seq,
                        later_skipped: later.is_some(),
                    }),
                    (None, Some(seq)) => unnamed_outcomes.push(UnnamedOutcome::Skipped(seq)),
                    (None, None) => {}
                }
            }
            match m.completed {
                Some((_, Mode::Forward)) if m.hold_ready && h.tag == tag::READY_FOR_QUERY => {
                    self.held_ready = Some(BytesMut::from(&conn.rbuf[run..run + h.frame_len]));
                    forward = false;
                }
                Some((_, Mode::Restore)) => {
                    if let Some(z) = self.held_ready.take() {
                        flush(&mut run, &mut conn.rbuf, &mut out);
                        self.reports.tell(&mut out);
                        out.extend_from_slice(&z);
                    }
                }
                _ => {}
            }
            if let Some((Kind::Query, Mode::Capture)) = m.completed {
                let (settings, lsn) = std::mem::take(&mut self.capturing);
                let read_back = std::mem::take(&mut self.read_back);
                if settings
                    && read_back == ReadBack::Cancelled
                    && self.capture_retries < CAPTURE_RETRIES
                {
                    // A cancel of the client's that came as its statement ended (too late
                    // to cancel it: the client has its success) landed on the read-back. The
                    // cancel is spent: read again rather than pin the client for the rest of
                    // its session (each such pin holds a pool slot).
                    self.captured.clear();
                    self.capture_retries += 1;
                    self.capture = true;
                    self.check_state = self.capture_state;
                } else if settings && read_back != ReadBack::Fine {
                    self.capture_retries = 0;
                    // The settings stay unknown: the client keeps this connection, which has
                    // them, rather than have them replaced by what was partly read.
                    self.captured.clear();
                    self.pin_unread_settings = true;
                } else if settings {
                    self.capture_retries = 0;
                    let (state, rows): (Vec<_>, Vec<_>) = std::mem::take(&mut self.captured)
                        .into_iter()
                        .partition(|(k, _)| k == super::settings::STATE_ROW);
                    identity_changed = rows
                        .iter()
                        .any(|(k, _)| super::settings::IDENTITY.contains(&k.as_str()));
                    kept_state = state.into_iter().find_map(|(_, v)| {
                        [
                            PinReason::TempTable,
                            PinReason::AdvisoryLock,
                            PinReason::Listen,
                        ]
                        .into_iter()
                        .find(|r| r.as_str() == v)
                    });
                    let observed = Settings::from_rows(rows);
                    let path = self.desired.0.get("search_path").cloned();
                    self.desired = self.app.settings.intern(self.startup.overlay(&observed));
                    self.path_moved |= self.desired.0.get("search_path") != path.as_ref();
                    // Whether reads may use a replica again is for the new settings to say.
                    self.replica_refused = false;
                    conn.applied = self.app.settings.intern(observed);
                    // If the connection stays (a request is already waiting), it must carry the
                    // client's settings exactly.
                    resync = true;
                }
                if lsn {
                    match self.captured_lsn.take() {
                        Some(l) => self.ryw.end_commit(Some(l)),
                        // The read failed (the client's cancel landed on it): read on
                        // another connection, below.
                        None => position_unread = self.ryw.hand_off(),
                    }
                }
            }
            if forward && h.tag == tag::READY_FOR_QUERY && self.reports.pending() {
                flush(&mut run, &mut conn.rbuf, &mut out);
                self.reports.tell(&mut out);
            }
            if forward {
                run += h.frame_len;
            } else {
                flush(&mut run, &mut conn.rbuf, &mut out);
                conn.rbuf.advance(h.frame_len);
            }
        }
        flush(&mut run, &mut conn.rbuf, &mut out);
        if transactions > 0 {
            p.pool().count_transactions(transactions);
        }
        if errors > 0 {
            self.app
                .metrics
                .server_errors
                .with_label_values(&[&p.pool().key.backend])
                .inc_by(errors);
        }
        if refused_late {
            // (Only a request kept whole: the rest of a batch the client sent after its first
            // rows were released is not in `original`, and the refused statement may be there.)
            if let Some(r) = self.retry.as_ref().filter(|r| ends_request(&r.original)) {
                self.remember_refused(&r.original);
            }
        }
        for outcome in unnamed_outcomes {
            match outcome {
                UnnamedOutcome::Failed { seq, later_skipped } => {
                    self.unnamed_parse_failed(seq, later_skipped)
                }
                UnnamedOutcome::Skipped(seq) => self.give_unnamed_back(seq),
            }
        }
        match self.retry.as_mut() {
            Some(r) => r.hold(out, &mut self.client.wbuf),
            None => self.client.wbuf = out,
        }
        if let Some(e) = own_failure {
            tracing::warn!(parent: &self.span, error = %e, "the proxy's own query failed on the server");
        }
        if let Some(commit) = position_unread {
            self.read_position_elsewhere(commit);
        }
        if identity_changed {
            // Another client must never run as the role this one took; nor can the role
            // follow this client (switching to it needs its privileges on the new session).
            self.apply_effects(Effects::NONE, Some(PinReason::Role.as_str()));
        }
        if std::mem::take(&mut self.pin_unread_settings) {
            self.apply_effects(Effects::NONE, Some("unread_settings"));
        }
        if let Some(reason) = kept_state {
            // Made inside a function: the client keeps its connection, as if it had made it
            // itself (and no other client gets that state).
            self.apply_effects(Effects::NONE, Some(reason.as_str()));
        }
        if resync {
            self.sync_settings();
        }
        if request_done {
            match self.retry.take() {
                Some(r) if r.rescue == Some(Refusal::Conflict) && r.holding() => {
                    self.rescue_conflict(r)
                }
                Some(r) if r.rescue.is_some() && r.holding() => {
                    self.request_over();
                    self.rescue_on_primary(r);
                }
                r => {
                    self.request_over();
                    if let Some(mut r) = r {
                        r.release_into(&mut self.client.wbuf);
                    }
                }
            }
        }
        Ok(())
    }

    /// A replica cancelled a read for a conflict with recovery: run it again, on another
    /// server if the routing has one (the replica may be replaying more of what it was in
    /// the way of), else on the same replica.
    fn rescue_conflict(&mut self, r: super::retry::Retry) {
        self.app
            .metrics
            .retries
            .with_label_values(&["recovery_conflict"])
            .inc();
        tracing::info!(parent: &self.span, "a replica cancelled a read for a conflict with recovery: repeating it");
        self.retry_attempts += 1;
        if let Some(i) = self.backend_index {
            self.conflicted |= 1u64 << (i % 64);
        }
        self.requeue(r);
    }

    /// A replica refused a read: remember the statement if it was the reason, and run it on
    /// the primary.
    fn rescue_on_primary(&mut self, r: super::retry::Retry) {
        if r.rescue == Some(Refusal::Statement) {
            self.remember_refused(&r.original);
        }
        self.app
            .metrics
            .retries
            .with_label_values(&[match r.rescue {
                Some(Refusal::Session) => "serializable",
                _ => "read_only_violation",
            }])
            .inc();
        tracing::debug!(parent: &self.span, "a replica refused a read: repeating it on the primary");
        self.requeue(r);
        self.force_primary = true;
    }

    /// Remembers the statement of a request a replica refused as needing the primary: a
    /// Query's text, or the one statement a batch parses or binds. (Of a batch of several
    /// statements, which one was refused is not known here: none is remembered, rather than
    /// every client's use of the others sent to the primary; the batch is repeated there each
    /// time.)
    fn remember_refused(&self, request: &[u8]) {
        let mut one: Option<&[u8]> = None;
        let mut at = 0;
        while let Ok(Some(h)) = Header::peek(&request[at..], usize::MAX) {
            let Some(body) = request.get(at + 5..at + h.frame_len) else {
                return;
            };
            let text = match h.tag {
                tag::QUERY => Some(body),
                tag::PARSE => super::statements::split_parse(body).map(|p| p.1),
                tag::BIND => crate::protocol::read_cstr(body)
                    .and_then(|(_, rest)| crate::protocol::read_cstr(rest))
                    .and_then(|(name, _)| {
                        if name.is_empty() {
                            let p = self.unnamed.as_ref()?;
                            super::statements::split_parse(&p[5..]).map(|p| p.1)
                        } else {
                            self.statements.get(name).map(|s| &s.query[..])
                        }
                    }),
                _ => None,
            };
            if let Some(t) = text.map(super::route::query_bytes) {
                match one {
                    Some(o) if o != t => return,
                    _ => one = Some(t),
                }
            }
            at += h.frame_len;
        }
        if let Some(t) = one {
            self.app.write_cache.insert(t);
        }
    }

    /// Gives the server connection up and puts the refused request back in front of the
    /// client's buffer, to be routed again (or answered as cancelled: a cancel of it was on
    /// its way to that server, or could not be delivered there).
    fn requeue(&mut self, r: super::retry::Retry) {
        self.retry = Some(r);
        let cancel_pending = if self.txn == TxnStatus::Idle {
            self.release()
        } else {
            // The refused Query had opened a block there ("BEGIN; SELECT ..."): the connection
            // is not for anyone else, and the client's transaction starts over.
            let cancel_pending = self.discard_server("refused_in_block");
            self.txn = TxnStatus::Idle;
            cancel_pending
        };
        self.requeue_request(cancel_pending);
    }
}

/// What one error did to the client's unnamed statement.
enum UnnamedOutcome {
    /// Its unnamed Parse `seq` failed; `later_skipped`: a later one of its batch, the client's
    /// latest, was skipped.
    Failed { seq: u64, later_skipped: bool },
    /// Its latest unnamed Parse or Close, `seq`, was skipped.
    Skipped(u64),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(severity: &str, code: &str, routine: &str, message: &str) -> Option<Refusal> {
        refused_by_standby(&ErrorFields {
            severity,
            code,
            message,
            routine,
        })
    }

    #[test]
    fn recovery_conflicts_are_told_from_other_failures() {
        let conflict = Some(Refusal::Conflict);
        // PostgreSQL 15 and 16 (ProcessInterrupts), 17 on (its own routine).
        assert_eq!(refusal("ERROR", "40001", "ProcessInterrupts", ""), conflict);
        assert_eq!(
            refusal("ERROR", "40001", "ProcessRecoveryConflictInterrupt", ""),
            conflict
        );
        // A buffer pin deadlock with the startup process.
        assert_eq!(refusal("ERROR", "40P01", "ProcessInterrupts", ""), conflict);
        // A server that does not say where: a standby's reads get no other 40001.
        assert_eq!(refusal("ERROR", "40001", "", ""), conflict);
        // Two readers deadlocked on advisory locks: the client's own doing.
        assert_eq!(refusal("ERROR", "40P01", "DeadLockReport", ""), None);
        assert_eq!(refusal("ERROR", "40P01", "", ""), None);
        // A conflict that ended the session: the lost connection is repeated as such.
        assert_eq!(refusal("FATAL", "40001", "ProcessInterrupts", ""), None);
        // A user's cancel and a statement timeout come from the same routine.
        assert_eq!(refusal("ERROR", "57014", "ProcessInterrupts", ""), None);
        // The refusals a hot standby must make.
        assert_eq!(
            refusal("ERROR", "25006", "PreventCommandIfReadOnly", ""),
            Some(Refusal::Statement)
        );
        assert_eq!(
            refusal("ERROR", "0A000", "GetSerializableTransactionSnapshot", ""),
            Some(Refusal::Session)
        );
        assert_eq!(refusal("ERROR", "0A000", "RevalidateCachedQuery", ""), None);
        assert_eq!(
            refusal("ERROR", "0A000", "get_relation_info", ""),
            Some(Refusal::Statement)
        );
        assert_eq!(
            refusal(
                "ERROR",
                "0A000",
                "",
                "cannot access temporary or unlogged relations during recovery"
            ),
            Some(Refusal::Statement)
        );
        assert_eq!(
            refusal(
                "ERROR",
                "58P01",
                "mdopenfork",
                "could not open file \"base/16389/16473\": No such file or directory"
            ),
            Some(Refusal::Statement)
        );
        assert_eq!(refusal("ERROR", "58P01", "pg_read_file", ""), None);
    }

    /// A request kept whole ends with its Query or Sync; a batch whose Sync (or any part)
    /// came after the request stopped being kept does not.
    #[test]
    fn only_whole_requests_end_with_a_query_or_sync() {
        use crate::protocol::encode;
        let mut q = BytesMut::new();
        encode::query(&mut q, "SELECT 1");
        assert!(ends_request(&q));
        let mut batch = BytesMut::new();
        encode::parse(&mut batch, b"", b"SELECT 1", &[0, 0]);
        assert!(!ends_request(&batch), "no Sync yet");
        encode::empty(&mut batch, tag::SYNC);
        assert!(ends_request(&batch));
        assert!(!ends_request(&batch[..batch.len() - 2]), "cut short");
        assert!(!ends_request(b""));
    }
}
