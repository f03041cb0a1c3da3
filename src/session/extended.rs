//! The extended query protocol from the client after Parse (parse.rs): Bind, Describe and
//! Close, with the client's statements prepared on demand on whichever server connection it
//! has, and closed there when no client holds them any more.

use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};

use super::pending::{Hook, Kind, Mode};
use super::route::Target;
use super::statements::{self, Statement};
use super::{Fatal, Session};
use crate::protocol::{encode, read_cstr, tag, Header, TxnStatus};
use crate::sql::{Effects, TerminateArg};

/// A statement a Bind names: its server-side name, and the client's statement behind it
/// (`None` for the unnamed statement and for names only the server knows).
type Prepared = (Bytes, Option<Arc<Statement>>);

impl Session {
    /// Closes `stmt`'s shared name on the attached connection ahead of preparing it there.
    /// The proxy prepares only what it believes the connection lacks, but the server may
    /// still hold it: after a `DISCARD ALL` that failed, or an eviction the server skipped
    /// after an error. A Parse would then fail with 42P05 for every client using it on that
    /// connection; a Close of a name that does not exist is no error.
    pub(super) fn close_before_parse(&mut self, stmt: &Statement) {
        encode::describe_or_close(&mut self.swbuf, tag::CLOSE, b'S', &stmt.server_name);
        self.pending.expect(Kind::Close, Mode::Swallow, Hook::None);
    }

    /// Makes sure the statement a Bind/Describe names exists on the attached connection and
    /// returns the name to use there. `None` when the proxy already answered with an error.
    pub(super) fn prepare_for_use(&mut self, name: &[u8]) -> Result<Option<Bytes>, Fatal> {
        Ok(self
            .prepare_statement(name)?
            .map(|(server_name, _)| server_name))
    }

    /// [`prepare_for_use`](Self::prepare_for_use), also returning the client's named statement
    /// if it is one the proxy knows.
    fn prepare_statement(&mut self, name: &[u8]) -> Result<Option<Prepared>, Fatal> {
        if name.is_empty() {
            let owner = (self.id, self.unnamed_seq);
            // Also when the Parse that made it the client's is unanswered in an earlier
            // pipelined batch: an error there would leave the server with whatever unnamed
            // statement it had before, another client's perhaps.
            let replay = self.server.as_ref().expect("attached").conn.unnamed_owner != Some(owner)
                || (!self.pending.is_empty()
                    && self
                        .pending
                        .parse_unsettled(|h| matches!(h, Hook::UnnamedParse { .. })));
            if let Some(d) = self.unnamed_depends.clone().filter(|_| replay) {
                self.ensure_prepared(&d);
            }
            let conn = &mut self.server.as_mut().expect("attached").conn;
            if replay {
                match &self.unnamed {
                    Some(parse) => {
                        self.swbuf.extend_from_slice(parse);
                        self.pending.expect(
                            Kind::Parse,
                            Mode::Swallow,
                            Hook::UnnamedParse {
                                client: false,
                                seq: owner.1,
                            },
                        );
                        conn.unnamed_owner = Some(owner);
                    }
                    None => {
                        // The client has no unnamed statement: make sure the server has none
                        // either, so it answers with the right error.
                        encode::describe_or_close(&mut self.swbuf, tag::CLOSE, b'S', b"");
                        self.pending.expect(Kind::Close, Mode::Swallow, Hook::None);
                        conn.unnamed_owner = None;
                    }
                }
            }
            return Ok(Some((Bytes::new(), None)));
        }
        let Some(stmt) = self.statements.get(name).cloned() else {
            if name.starts_with(statements::PREFIX) {
                let msg = format!(
                    "prepared statement \"{}\" does not exist",
                    String::from_utf8_lossy(name)
                );
                self.respond_batch_error("26000", &msg);
                return Ok(None);
            }
            // Unknown to the proxy: the server will say it does not exist (or it is a SQL-level
            // PREPARE on a pinned connection).
            return Ok(Some((Bytes::copy_from_slice(name), None)));
        };
        self.ensure_prepared(&stmt);
        Ok(Some((stmt.server_name.clone(), Some(stmt))))
    }

    /// The client closed `stmt` (its name is already forgotten): whether to close it on the
    /// attached connection too, as PostgreSQL would (then forgotten there). Not when no
    /// connection is attached or the statement is not prepared on it, nor while another of
    /// the client's names is the same statement.
    pub(super) fn close_on_server(&mut self, stmt: &Statement) -> bool {
        !self.statements.values().any(|o| o.id == stmt.id)
            && self
                .server
                .as_mut()
                .is_some_and(|p| p.conn.prepared.remove(stmt.id))
    }

    pub(super) fn ensure_prepared(&mut self, stmt: &Arc<Statement>) {
        if let Some(d) = &stmt.depends {
            // (Also when `stmt` is there: its dependency may have been evicted since.)
            self.ensure_prepared(d);
        }
        self.note_quiet();
        let conn = &mut self.server.as_mut().expect("attached").conn;
        let present = conn.prepared.touch(stmt.id);
        // Prepared by a Parse still unanswered in an earlier pipelined batch: an error in
        // that batch would skip it, so this batch prepares it again (a Close and Parse of
        // the same text, harmless when the first one succeeds).
        let unsettled = present
            && !self.pending.is_empty()
            && self
                .pending
                .parse_unsettled(|h| matches!(h, Hook::Parse { id, .. } if *id == stmt.id));
        if !present || unsettled {
            if !present {
                if stmt.shared_context() && !self.parses_under(&stmt.context) {
                    // The client's settings changed since its Parse (or are not known now):
                    // the server would analyse the text under settings other than those the
                    // shared statement stands for (a time zone, a date style, a search_path
                    // its literals and names were read with). Prepared for this use only, and
                    // not recorded: whoever uses the name on this connection next prepares
                    // it again (closed first), so no other client runs this copy. (A
                    // statement parsed under settings not known is shared with nobody: its
                    // copy is recorded as usual.)
                    self.close_before_parse(stmt);
                    encode::parse(
                        &mut self.swbuf,
                        &stmt.server_name,
                        &stmt.query,
                        stmt.parse_types(),
                    );
                    self.pending.expect(Kind::Parse, Mode::Swallow, Hook::None);
                    return;
                }
                let changing = self.app.statements.changing();
                let conn = &mut self.server.as_mut().expect("attached").conn;
                conn.prepared.insert(stmt, changing);
                self.evict_prepared();
            }
            self.close_before_parse(stmt);
            encode::parse(
                &mut self.swbuf,
                &stmt.server_name,
                &stmt.query,
                stmt.parse_types(),
            );
            self.pending.expect(
                Kind::Parse,
                Mode::Swallow,
                Hook::Parse {
                    id: stmt.id,
                    name: Bytes::new(),
                },
            );
        }
    }

    /// Nothing is in flight outside a transaction: no portal exists on the server connection,
    /// so no statement used so far is needed by one, and any may be evicted (the limit is
    /// enforced here too, for a set that grew while statements were protected).
    pub(super) fn note_quiet(&mut self) {
        if self.txn == TxnStatus::Idle && self.pending.is_empty() && !self.bound_in_batch {
            if let Some(p) = self.server.as_mut() {
                p.conn.prepared.mark_quiet();
                if p.conn.prepared.len() > self.max_prepared {
                    self.evict_prepared();
                }
            }
        }
    }

    /// Closes the statements no client has prepared any more on the connection just attached
    /// (ahead of the request, with a Flush that makes the server answer them), the
    /// first time this client gets it and after the client dropped statements: a client then
    /// sees in `pg_prepared_statements` what it prepared (and what clients connected now
    /// did), not what it deallocated or clients long gone left behind, and a server session
    /// does not keep plans nobody can use. A client getting its own connection back costs
    /// nothing. Inside a transaction block too, as `DEALLOCATE` would: closing a statement
    /// leaves the portals made from it open (PostgreSQL's Close and `DEALLOCATE` both only
    /// drop the statement, and neither is undone by a rollback), and a failed block accepts
    /// Close.
    pub(super) fn close_unheld_statements(&mut self) {
        let Some(p) = self.server.as_mut() else {
            return;
        };
        if p.conn.swept_for == self.id && !self.sweep_statements {
            return;
        }
        p.conn.swept_for = self.id;
        self.sweep_statements = false;
        let mut closed = false;
        for id in p.conn.prepared.take_unheld() {
            let name = statements::server_name(id);
            encode::describe_or_close(&mut self.swbuf, tag::CLOSE, b'S', name.as_bytes());
            self.pending.expect(Kind::Close, Mode::Swallow, Hook::None);
            closed = true;
        }
        if closed {
            // Answered now, whatever follows: the request may be one the proxy answers itself
            // (a `DEALLOCATE`), which sends the server nothing to make it answer.
            encode::empty(&mut self.swbuf, tag::FLUSH);
        }
    }

    /// Closes the least recently used statements on the attached connection while it holds
    /// more than `max_prepared_statements` (the server keeps each one's plan in memory).
    pub(super) fn evict_prepared(&mut self) {
        let max = self.max_prepared;
        let Some(p) = self.server.as_mut() else {
            return;
        };
        while let Some(id) = p.conn.prepared.evict(max) {
            let name = statements::server_name(id);
            encode::describe_or_close(&mut self.swbuf, tag::CLOSE, b'S', name.as_bytes());
            self.pending
                .expect(Kind::Close, Mode::Swallow, Hook::Evicted { id });
            self.app.metrics.prepared_evictions.inc();
        }
    }

    pub(super) fn handle_bind(&mut self, h: Header) -> Result<(), Fatal> {
        self.in_place(h.frame_len, Self::bind)
    }

    /// Handles the message at the front of the client buffer read in place (the buffer is set
    /// aside meanwhile, so names can be borrowed from it); it is consumed whatever the outcome.
    fn in_place<R>(&mut self, len: usize, f: impl FnOnce(&mut Self, &[u8]) -> R) -> R {
        let mut rbuf = std::mem::take(&mut self.client.rbuf);
        let result = f(self, &rbuf[..len]);
        rbuf.advance(len);
        self.client.rbuf = rbuf;
        result
    }

    fn bind(&mut self, frame: &[u8]) -> Result<(), Fatal> {
        let parsed = read_cstr(&frame[5..])
            .and_then(|(portal, rest)| read_cstr(rest).map(|(name, rest)| (portal, name, rest)));
        let Some((portal, name, rest)) = parsed else {
            // As PostgreSQL answers it: an error, the batch skipped up to its Sync.
            self.respond_batch_error("08P01", "invalid string in message");
            return Ok(());
        };
        if self.fail_changed_shape(name) {
            return Ok(());
        }
        let Some((mut server_name, stmt)) = self.prepare_statement(name)? else {
            return Ok(());
        };
        if let Some(s) = stmt.as_ref().filter(|s| {
            s.effects
                .get()
                .is_some_and(|e| e.contains(Effects::DEALLOCATE_NAME))
        }) {
            if let Some(n) = self.bind_deallocate(s) {
                server_name = n;
            }
        }
        // A portal may exist from here to the Sync (an Execute with a row limit, a Flush).
        self.bound_in_batch = true;
        self.note_bind_effects(name, stmt.as_deref());
        // (A batch on a replica may begin its read-only transaction too.)
        if self.txn != TxnStatus::Idle || self.target == Target::Replica {
            self.batch_ends_block |= self.bound_ends_block(name, stmt.as_deref());
        }
        if self.txn == TxnStatus::Idle
            && self.request_begins.is_none()
            && self.bound_begins_block(name, stmt.as_deref())
        {
            // (Answered by the ReadyForQuery of this batch's Sync, after those owed now.)
            self.request_begins = Some(self.pending.readies_due() + 1);
        }
        if let Some(arg) = self.terminate_arg_of(name, stmt.as_deref()) {
            let pid = match arg {
                TerminateArg::Pid(pid) => Some(pid),
                TerminateArg::Param(n) => bind_int_param(rest, n),
            };
            if let Some(pid) = pid {
                self.terminate_client(pid);
            }
        }
        // A driver that describes the portal rather than the statement (pgjdbc) learns the
        // row shape from its answer: recorded as the statement's (see shapes.rs).
        self.shape_portal = stmt
            .filter(|s| s.shape.get().is_none())
            .map(|s| (Bytes::copy_from_slice(portal), s.id));
        if server_name.as_ref() == name {
            self.swbuf.extend_from_slice(frame);
        } else {
            encode::bind_renamed(&mut self.swbuf, portal, &server_name, rest);
        }
        self.pending.expect(Kind::Bind, Mode::Forward, Hook::None);
        Ok(())
    }

    /// A Bind of the client's statement `DEALLOCATE n`, prepared under a name of its own, where
    /// `n` is one of the client's protocol-level statements: the server knows that one by its
    /// shared name, so what is bound instead is a `DEALLOCATE` of that name (prepared on
    /// this connection, with the statement it drops). The client's `n` is gone from here on,
    /// and the connection is known not to have the shared statement any more (it is prepared
    /// again when used). The name of the statement to bind, or `None` to bind the client's
    /// as it is (`n` is not the client's: the server answers, 26000 or a SQL-level `PREPARE`'s
    /// `DEALLOCATE`; or the block failed, and the server answers 25P02).
    fn bind_deallocate(&mut self, stmt: &Statement) -> Option<Bytes> {
        if self.txn == TxnStatus::Failed {
            return None;
        }
        let a = super::route::analyze(&self.app.classifier.load(), &stmt.query, false);
        let Some(crate::sql::Deallocate::Name(n)) = a.deallocate else {
            return None;
        };
        let target = self.statements.get(n.as_bytes()).cloned()?;
        self.ensure_prepared(&target);
        let text = format!(
            "DEALLOCATE {}",
            String::from_utf8_lossy(&target.server_name)
        );
        let dealloc = self.app.statements.intern_with(
            &self.statement_scope,
            text.as_bytes(),
            &stmt.types,
            &[],
            None,
        );
        dealloc.effects.get_or_init(|| Effects::NONE);
        self.ensure_prepared(&dealloc);
        self.statements.remove(n.as_bytes());
        if let Some(p) = self.server.as_mut() {
            p.conn.prepared.remove(target.id);
        }
        Some(dealloc.server_name.clone())
    }

    /// The text of the client's statement `name` (`stmt`, when the proxy knows it; the
    /// unnamed statement's from its Parse), if known.
    fn bound_text<'a>(&'a self, name: &[u8], stmt: Option<&'a Statement>) -> Option<&'a [u8]> {
        match stmt {
            Some(s) => Some(&s.query[..]),
            None if name.is_empty() => self
                .unnamed
                .as_ref()
                .and_then(|frame| statements::split_parse(&frame[5..]))
                .map(|(_, q, _)| q),
            None => None,
        }
    }

    /// Whether the client's statement `name` (`stmt`, when the proxy knows it) ends the
    /// transaction block on its own (`COMMIT`, `ROLLBACK`, `PREPARE TRANSACTION`, not `AND
    /// CHAIN`): the requests behind its batch are then routed afresh, as behind such a Query.
    fn bound_ends_block(&self, name: &[u8], stmt: Option<&Statement>) -> bool {
        let Some(text) = self.bound_text(name, stmt) else {
            return false;
        };
        // (Every Bind in a transaction comes here: only a text whose first word may end a
        // block is examined further.)
        let (word, n) = first_word(text);
        if !matches!(
            &word[..n],
            b"commit" | b"end" | b"rollback" | b"abort" | b"prepare"
        ) {
            return false;
        }
        self.ends_block(text)
    }

    /// Whether the client's statement `name` (`stmt`) begins a transaction block (`BEGIN`,
    /// `START TRANSACTION`): if its server connection is lost before the batch is answered,
    /// the client's block has failed (see `server_lost`).
    fn bound_begins_block(&self, name: &[u8], stmt: Option<&Statement>) -> bool {
        self.bound_text(name, stmt).is_some_and(|text| {
            let (word, n) = first_word(text);
            matches!(&word[..n], b"begin" | b"start")
        })
    }

    /// What the `pg_terminate_backend(...)` call of the client's statement `name` (`stmt`,
    /// when the proxy knows it) names, if it calls one with a plain argument.
    fn terminate_arg_of(&self, name: &[u8], stmt: Option<&Statement>) -> Option<TerminateArg> {
        let text = |q: &[u8]| {
            std::str::from_utf8(q)
                .ok()
                .and_then(crate::sql::terminate_arg)
        };
        match stmt {
            Some(s) => *s.terminate.get_or_init(|| text(&s.query)),
            None if name.is_empty() && self.unnamed_effects.0.contains(Effects::TERMINATE) => {
                let frame = self.unnamed.as_ref()?;
                statements::split_parse(&frame[5..]).and_then(|(_, q, _)| text(q))
            }
            None => None,
        }
    }

    pub(super) fn handle_describe_or_close(&mut self, h: Header, kind: Kind) -> Result<(), Fatal> {
        // A portal (as in every extended query's Describe) goes to the server unchanged.
        let frame = &self.client.rbuf[..h.frame_len];
        if self.server.is_some() && frame.get(5) == Some(&b'P') && frame[6..].contains(&0) {
            let hook = match self.shape_portal.take() {
                Some((portal, id))
                    if kind == Kind::Describe
                        && frame[6..].starts_with(&portal)
                        && frame.get(6 + portal.len()) == Some(&0) =>
                {
                    Hook::Shape { id }
                }
                _ => Hook::None,
            };
            self.forward(h.frame_len);
            self.pending.expect(kind, Mode::Forward, hook);
            return Ok(());
        }
        self.in_place(h.frame_len, |s, frame| s.describe_or_close(frame, kind))
    }

    fn describe_or_close(&mut self, frame: &[u8], kind: Kind) -> Result<(), Fatal> {
        let body = &frame[5..];
        // A malformed one is answered as PostgreSQL answers it: an error, the batch skipped up
        // to its Sync.
        let Some(&which) = body.first() else {
            self.respond_batch_error("08P01", "no data left in message");
            return Ok(());
        };
        let Some((name, rest)) = body.get(1..).and_then(read_cstr) else {
            self.respond_batch_error("08P01", "invalid string in message");
            return Ok(());
        };
        if !rest.is_empty() {
            // Bytes after the name: PostgreSQL refuses the message before looking at it.
            self.respond_batch_error("08P01", "invalid message format");
            return Ok(());
        }
        let t = if kind == Kind::Describe {
            tag::DESCRIBE
        } else {
            tag::CLOSE
        };
        if which != b'S' && which != b'P' {
            let what = if kind == Kind::Describe {
                "DESCRIBE"
            } else {
                "CLOSE"
            };
            self.respond_batch_error("08P01", &format!("invalid {what} message subtype {which}"));
            return Ok(());
        }
        if kind == Kind::Close && which == b'S' && !name.is_empty() {
            // The client's name is forgotten. On the attached connection the statement is
            // closed too (the server's answer is the client's), as on PostgreSQL, unless
            // another of the client's names is the same statement; other clients prepare it
            // there again when they need it. Else it goes (if no other client has it) ahead
            // of the client's next request, see `close_unheld_statements`.
            let stmt = self.statements.remove(name);
            if let (Some(s), Some(r)) = (&stmt, self.retry.as_mut()) {
                // Back if the request is repeated: its Bind may come before this Close. (One
                // the request defined itself is simply undone.)
                if !r.names.iter().any(|n| statements::same_name(n, name)) {
                    r.closed.push((Bytes::copy_from_slice(name), s.clone()));
                }
            }
            // Back as well if an error before the Close makes the server skip it.
            let hook = |on_server| {
                stmt.as_ref().map_or(Hook::None, |s| Hook::Closed {
                    name: Bytes::copy_from_slice(name),
                    statement: super::pending::ClosedStatement(s.clone()),
                    on_server,
                })
            };
            let (on_server, not) = (hook(true), hook(false));
            match stmt.filter(|s| self.close_on_server(s)) {
                Some(s) => {
                    encode::describe_or_close(&mut self.swbuf, tag::CLOSE, b'S', &s.server_name);
                    self.pending.expect(Kind::Close, Mode::Forward, on_server);
                }
                None => {
                    self.sweep_statements = true;
                    let mut b = BytesMut::new();
                    encode::empty(&mut b, tag::CLOSE_COMPLETE);
                    self.respond_undoable(b, not);
                }
            }
            return Ok(());
        }
        if self.server.is_none() {
            // Close of a portal or the unnamed statement with no server: nothing exists.
            if which == b'S' {
                self.forget_unnamed();
            }
            let mut b = BytesMut::new();
            encode::empty(&mut b, tag::CLOSE_COMPLETE);
            self.respond(b);
            return Ok(());
        }
        let mut hook = Hook::None;
        if which == b'P' || kind == Kind::Close {
            if kind == Kind::Close && which == b'S' {
                // Given back if an error before it makes the server skip it.
                self.keep_unnamed_before();
                self.forget_unnamed();
                hook = Hook::UnnamedParse {
                    client: true,
                    seq: self.unnamed_seq,
                };
            }
            self.swbuf.extend_from_slice(frame);
        } else {
            if self.fail_changed_shape(name) {
                return Ok(());
            }
            let Some((server_name, stmt)) = self.prepare_statement(name)? else {
                return Ok(());
            };
            // (Not from a copy prepared for this client under other settings than the
            // statement's: its shape and parameter types are this client's reading only.)
            if let Some(s) = stmt.filter(|s| {
                s.shape.get().is_none() && (!s.shared_context() || self.parses_under(&s.context))
            }) {
                hook = Hook::Shape { id: s.id };
            }
            if server_name.as_ref() == name {
                self.swbuf.extend_from_slice(frame);
            } else {
                encode::describe_or_close(&mut self.swbuf, t, b'S', &server_name);
            }
        }
        self.pending.expect(kind, Mode::Forward, hook);
        Ok(())
    }
}

/// The first word of a statement's text (up to 9 letters, lowercased) and its length, after
/// white space and comments (`--` to the end of the line, `/* */` nested as PostgreSQL
/// nests them).
fn first_word(text: &[u8]) -> ([u8; 9], usize) {
    let mut start = 0;
    loop {
        match &text[start..] {
            [b, ..] if b.is_ascii_whitespace() => start += 1,
            [b'-', b'-', rest @ ..] => {
                start = text.len() - rest.len();
                start += rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            }
            [b'/', b'*', ..] => {
                let mut depth = 0usize;
                let mut i = start;
                while i < text.len() {
                    if text[i..].starts_with(b"/*") {
                        depth += 1;
                        i += 2;
                    } else if text[i..].starts_with(b"*/") {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                start = i;
            }
            _ => break,
        }
    }
    let mut word = [0u8; 9];
    let mut n = 0;
    for &b in text[start..].iter().take(word.len()) {
        if !b.is_ascii_alphabetic() {
            break;
        }
        word[n] = b.to_ascii_lowercase();
        n += 1;
    }
    (word, n)
}

/// Parameter `n` (1-based) of a Bind message as a process id, from `rest` (the message after
/// the portal and statement names): text or binary `int4`/`int8`, else `None`.
fn bind_int_param(rest: &[u8], n: usize) -> Option<i32> {
    match crate::protocol::frame::bind_param(rest, n)? {
        (0, Some(v)) => std::str::from_utf8(v).ok()?.trim().parse().ok(),
        (1, Some(v)) => match v.len() {
            // int2 (psycopg binds a small int so), int4, int8
            2 => Some(i16::from_be_bytes(v.try_into().ok()?).into()),
            4 => Some(i32::from_be_bytes(v.try_into().ok()?)),
            8 => i32::try_from(i64::from_be_bytes(v.try_into().ok()?)).ok(),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{bind_int_param, first_word};

    #[test]
    fn the_first_word_comes_after_comments() {
        for (text, want) in [
            (&b"BEGIN"[..], &b"begin"[..]),
            (b"  start transaction", b"start"),
            (b"/* x */ BEGIN", b"begin"),
            (b"/* a /* nested */ b */begin", b"begin"),
            (b"-- note\n  Commit", b"commit"),
            (b"-- only a comment", b""),
            (b"/* unterminated", b""),
            (b"1", b""),
        ] {
            let (w, n) = first_word(text);
            assert_eq!(&w[..n], want, "{:?}", String::from_utf8_lossy(text));
        }
    }

    /// The part of a Bind after its two names.
    fn bind_rest(formats: &[i16], params: &[Option<&[u8]>]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&(formats.len() as i16).to_be_bytes());
        for f in formats {
            b.extend_from_slice(&f.to_be_bytes());
        }
        b.extend_from_slice(&(params.len() as i16).to_be_bytes());
        for p in params {
            match p {
                Some(v) => {
                    b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    b.extend_from_slice(v);
                }
                None => b.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        b.extend_from_slice(&0i16.to_be_bytes());
        b
    }

    #[test]
    fn bind_parameters_are_read_as_pids() {
        let text = bind_rest(&[], &[Some(b"12345")]);
        assert_eq!(bind_int_param(&text, 1), Some(12345));
        let bin4 = bind_rest(&[1], &[Some(&77i32.to_be_bytes())]);
        assert_eq!(bind_int_param(&bin4, 1), Some(77));
        let bin2 = bind_rest(&[1], &[Some(&8727i16.to_be_bytes())]);
        assert_eq!(
            bind_int_param(&bin2, 1),
            Some(8727),
            "int2: psycopg's small ints"
        );
        let bin8 = bind_rest(&[1], &[Some(&78i64.to_be_bytes())]);
        assert_eq!(bind_int_param(&bin8, 1), Some(78));
        let mixed = bind_rest(&[0, 1], &[Some(b"x"), Some(&9i32.to_be_bytes())]);
        assert_eq!(bind_int_param(&mixed, 2), Some(9));
        assert_eq!(bind_int_param(&mixed, 1), None, "not a number");
        let null = bind_rest(&[], &[None, Some(b"5")]);
        assert_eq!(bind_int_param(&null, 1), None);
        assert_eq!(bind_int_param(&null, 2), Some(5));
        assert_eq!(bind_int_param(&null, 3), None, "no such parameter");
        let big = bind_rest(&[1], &[Some(&(1i64 << 40).to_be_bytes())]);
        assert_eq!(bind_int_param(&big, 1), None);
        assert_eq!(bind_int_param(&text[..5], 1), None, "truncated");
    }
}
