//! Parse messages from the client: named statements interned proxy-wide and prepared on the
//! client's server connection (or answered from it when it has them already), the unnamed
//! one tracked per client, and the session effects of what is parsed (settings a statement
//! changes count again at each Bind of it).

use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};

use super::pending::{Hook, Kind, Mode};
use super::statements::{self, Statement};
use super::{Fatal, Session};
use crate::protocol::{encode, read_cstr, tag, Header, TxnStatus};
use crate::sql::Effects;

/// The effects of a statement that drops every prepared statement of the server session.
const FORGETS_ALL: Effects = Effects::DISCARD_ALL.union(Effects::DEALLOCATE_ALL);

impl Session {
    /// A named Parse whose name an earlier, still unanswered Parse of this client took (if
    /// that one fails, the name is free again, as on the server), or whose name is taken, or
    /// in a failed block (a ROLLBACK may be on its way), while answers are due: it waits for
    /// them.
    pub(super) fn parse_awaits_earlier(&self, h: Header) -> bool {
        let Some((name, _)) = read_cstr(&self.client.rbuf[5..h.frame_len]) else {
            return false;
        };
        // (Also when the client closed it since: if the earlier Parse fails, the name was
        // never taken, and the undoing of it must not meet a statement made after. And a
        // name taken, for whatever is in flight may fail a transaction block, where the
        // Parse gets 25P02 rather than 42P05.)
        !name.is_empty()
            && !self.pending.is_empty()
            && (self.statements.contains_key(name)
                || self.txn == TxnStatus::Failed
                || self.pending.parse_outstanding(name)
                || self.pending.name_unsettled(name))
    }

    /// A Bind, or a Describe or Close of a statement, naming one whose Parse or Close an
    /// earlier pipelined batch still awaits: whether that one happened decides what this one
    /// finds (an error there makes the server skip it), so it waits for the answer.
    pub(super) fn statement_awaits_earlier(&self, h: Header) -> bool {
        if self.pending.is_empty() {
            return false;
        }
        let body = &self.client.rbuf[5..h.frame_len];
        let name = match h.tag {
            tag::BIND => read_cstr(body).and_then(|(_, rest)| read_cstr(rest)),
            _ => match body.split_first() {
                Some((b'S', rest)) => read_cstr(rest),
                _ => None,
            },
        };
        let Some((name, _)) = name else {
            return false;
        };
        if name.is_empty() {
            // The client's unnamed Parse or Close, unanswered in an earlier batch, may be
            // skipped after an error there, leaving the statement before it: which one this
            // runs is known from the answer.
            return h.tag != tag::CLOSE
                && self
                    .unnamed_before
                    .as_ref()
                    .is_some_and(|b| b.seq == self.unnamed_seq)
                && self.pending.parse_unsettled(
                    |h| matches!(h, Hook::UnnamedParse { client: true, seq } if *seq == self.unnamed_seq),
                );
        }
        // Or, for a Bind or Describe, whose statement a Parse in an earlier batch is still
        // preparing on this connection: if that Parse fails (on its own: its table dropped
        // since the client's Parse), the connection does not have it, and this batch must
        // prepare it again to get the server's own answer.
        self.pending.name_unsettled(name)
            || (h.tag != tag::CLOSE
                && self.pending.parses_queued()
                && self.statements.get(name).is_some_and(|s| {
                    self.pending
                        .parse_answer_due(|h| matches!(h, Hook::Parse { id, .. } if *id == s.id))
                }))
    }

    pub(super) fn handle_parse(&mut self, h: Header) -> Result<(), Fatal> {
        // Drivers send the same unnamed statement over and over: the same message as the
        // previous unnamed Parse has the same effects, found without parsing it again (and
        // without keeping another copy of it).
        if self.client.rbuf.get(5) == Some(&0) {
            // (Before anything below changes it.)
            self.keep_unnamed_before();
        }
        let (effects, pin) = self.unnamed_effects;
        let repeat = self.client.rbuf.get(5) == Some(&0)
            && self.unnamed.as_deref() == Some(&self.client.rbuf[..h.frame_len])
            && !effects.contains(Effects::SETTINGS)
            && !self.unnamed_deallocates;
        if repeat {
            self.apply_effects(effects.difference(FORGETS_ALL), pin);
            self.forward(h.frame_len);
            self.note_unnamed_parse();
            return Ok(());
        }
        let frame = Bytes::copy_from_slice(&self.client.rbuf[..h.frame_len]);
        self.client.rbuf.advance(h.frame_len);
        let Some((name, query, types)) = statements::split_parse(&frame[5..]) else {
            // As PostgreSQL answers it: an error, the batch skipped up to its Sync.
            self.respond_batch_error("08P01", "invalid string in message");
            return Ok(());
        };
        // Its parameter types, counted, and nothing after them: else PostgreSQL refuses the
        // message before looking at it (the unnamed statement stays).
        match types {
            [hi, lo, rest @ ..]
                if rest.len() >= 4 * usize::from(u16::from_be_bytes([*hi, *lo])) =>
            {
                if rest.len() > 4 * usize::from(u16::from_be_bytes([*hi, *lo])) {
                    self.respond_batch_error("08P01", "invalid message format");
                    return Ok(());
                }
            }
            _ => {
                self.respond_batch_error("08P01", "insufficient data left in message");
                return Ok(());
            }
        }
        let mut deallocate = None;
        // `EXECUTE name` of one of the client's statements: (the text naming the shared
        // statement, that statement).
        let mut executes = None;
        let (mut effects, pin) = match &self.unnamed {
            // (A repeat that changes settings: its custom names are read again below.)
            Some(prev) if name.is_empty() && prev[..] == frame[..] && !self.unnamed_deallocates => {
                self.unnamed_effects
            }
            _ => {
                let c = self.app.classifier.load();
                let a = super::route::analyze(&c, query, self.opaque_backslashes);
                if name.is_empty() {
                    self.unnamed_deallocates = a.deallocate.is_some() || a.execute.is_some();
                }
                if let Some(e) = &a.execute {
                    if let Some(s) = self.statements.get(e.name.as_bytes()) {
                        if statements::chain_len(s) >= statements::MAX_CHAIN {
                            // PostgreSQL would run out of stack running it.
                            self.respond_batch_error(
                                "54001",
                                "statement nesting too deep: EXECUTE of statements that EXECUTE",
                            );
                            return Ok(());
                        }
                        executes =
                            statements::executing(query, e.span.clone(), s).map(|q| (q, s.clone()));
                    }
                }
                let foreign = match (&a.deallocate, &a.execute) {
                    (Some(crate::sql::Deallocate::Name(n)), _) => self.foreign_shared_name(n),
                    (_, Some(e)) => self.foreign_shared_name(&e.name),
                    _ => None,
                };
                if let Some(n) = foreign {
                    let msg = format!("prepared statement \"{n}\" does not exist");
                    self.respond_batch_error("26000", &msg);
                    return Ok(());
                }
                let mut effects = a.effects;
                match &a.deallocate {
                    Some(crate::sql::Deallocate::Name(n)) if name.is_empty() => {
                        deallocate = self
                            .statements
                            .get(n.as_bytes())
                            .map(|s| (n.to_string(), s.clone()));
                    }
                    // Which statement it names is known when it runs (see `bind_deallocate`).
                    Some(crate::sql::Deallocate::Name(_)) => effects |= Effects::DEALLOCATE_NAME,
                    _ => {}
                }
                (effects, a.pin_reason())
            }
        };
        let generation = self.functions.generation();
        effects |= self.function_effects(query);
        if name.is_empty() {
            self.unnamed_generation = generation;
        }
        if let Some((client_name, stmt)) = deallocate {
            // `DEALLOCATE name` of one of the client's protocol-level statements (psycopg
            // sends it this way in pipeline mode): the server knows the statement by its
            // shared name. Prepared there if need be, it is deallocated there under that name
            // (the connection prepares it again when it is next needed) and the client's name
            // is free.
            self.ensure_prepared(&stmt);
            self.statements.remove(client_name.as_bytes());
            if let Some(p) = self.server.as_mut() {
                p.conn.prepared.remove(stmt.id);
            }
            let text = format!("DEALLOCATE {}", String::from_utf8_lossy(&stmt.server_name));
            let mut rewritten = BytesMut::new();
            encode::parse(&mut rewritten, b"", text.as_bytes(), types);
            self.unnamed_effects = (effects, pin);
            self.forward_unnamed_parse(rewritten.freeze(), None);
            return Ok(());
        }
        if name.is_empty() {
            self.unnamed_effects = (effects, pin);
        }
        if effects.contains(Effects::SETTINGS) {
            self.note_settings_statement(query);
        } else if effects.contains(Effects::LOCAL_SETTINGS) {
            self.note_local_settings(query);
        }
        if effects.contains(Effects::SCHEMA) {
            self.note_created_functions(query);
        }
        // A DEALLOCATE ALL or DISCARD ALL forgets the prepared statements when it runs, on
        // the connection it runs on (see `note_bind_effects`), not when it is parsed.
        self.apply_effects(effects.difference(FORGETS_ALL), pin);
        let (query, depends) = match &executes {
            Some((text, target)) => {
                // The statement it runs exists on this connection first.
                self.ensure_prepared(target);
                (&text[..], Some(target))
            }
            None => (query, None),
        };
        if name.is_empty() {
            let frame = match depends {
                Some(_) => {
                    let mut b = BytesMut::new();
                    encode::parse(&mut b, b"", query, types);
                    b.freeze()
                }
                None => frame.clone(),
            };
            self.forward_unnamed_parse(frame, depends.cloned());
            return Ok(());
        }
        if self.txn == TxnStatus::Failed
            && !self.executed_in_batch
            && !self.ends_a_block(query)
            && super::route::analyze(&self.app.classifier.load(), query, self.opaque_backslashes)
                .statements
                == 1
        {
            // As PostgreSQL answers a Parse in a failed block (before looking at its name),
            // not from the statements the connection has. (Not when the batch executed
            // something before it: answered without an error, that was a ROLLBACK, a ROLLBACK
            // TO SAVEPOINT or a COMMIT, which ended the failure before this Parse; the status
            // reported after it comes only with the batch's ReadyForQuery. Parses wait for
            // the answers due first: see `parse_awaits_earlier`. A Bind alone ends nothing.
            // Nor an empty text, which PostgreSQL takes there, nor several statements, which
            // it refuses first for being several: the server answers those.)
            self.respond_batch_error(
                "25P02",
                "current transaction is aborted, commands ignored until end of transaction block",
            );
            return Ok(());
        }
        if self.statements.contains_key(name) {
            let msg = format!(
                "prepared statement \"{}\" already exists",
                String::from_utf8_lossy(name)
            );
            self.respond_batch_error("42P05", &msg);
            return Ok(());
        }
        // A text whose backslashes this session's settings make opaque is analysed apart (see
        // route::analyze): its statement is not the same as another session's of that text.
        let scope = if self.opaque_backslashes && query.contains(&b'\\') {
            let mut s = BytesMut::from(&self.statement_scope[..]);
            s.extend_from_slice(b"\0opaque backslashes");
            s.freeze()
        } else {
            self.statement_scope.clone()
        };
        let context = self.parse_context();
        let stmt = self
            .app
            .statements
            .intern_with(&scope, query, types, &context, depends);
        stmt.effects.get_or_init(|| effects);
        // (A copy: a slice would keep the whole Parse message, query text and all, for as
        // long as the client has the statement.)
        let client_name = Bytes::copy_from_slice(name);
        self.statements.insert(client_name.clone(), stmt.clone());
        if let Some(r) = self.retry.as_mut() {
            r.names.push(client_name.clone());
        }
        self.note_quiet();
        // A Parse of it still unanswered in an earlier batch may fail on its own (its table
        // dropped): this one is sent too, to get the server's own answer, rather than
        // answered from what the connection may not have after all.
        let due = self
            .pending
            .parse_answer_due(|h| matches!(h, Hook::Parse { id, .. } if *id == stmt.id));
        let conn = &mut self.server.as_mut().expect("attached").conn;
        if conn.prepared.touch(stmt.id) && !due {
            let mut b = BytesMut::new();
            encode::empty(&mut b, tag::PARSE_COMPLETE);
            self.respond_undoable(
                b,
                Hook::CachedParse {
                    id: stmt.id,
                    name: client_name,
                },
            );
        } else {
            if conn.prepared.insert(&stmt, self.app.statements.changing()) {
                self.evict_prepared();
            }
            self.close_before_parse(&stmt);
            encode::parse(&mut self.swbuf, &stmt.server_name, &stmt.query, &stmt.types);
            self.pending.expect(
                Kind::Parse,
                Mode::Forward,
                Hook::Parse {
                    id: stmt.id,
                    name: client_name,
                },
            );
        }
        Ok(())
    }

    /// Sends the client's unnamed Parse on and records it as the unnamed statement (which
    /// runs statement `depends`, if given).
    fn forward_unnamed_parse(&mut self, frame: Bytes, depends: Option<Arc<Statement>>) {
        self.swbuf.extend_from_slice(&frame);
        self.unnamed = Some(frame);
        self.unnamed_depends = depends;
        self.note_unnamed_parse();
    }

    /// The unnamed statement (`self.unnamed`) was just sent to the attached connection.
    fn note_unnamed_parse(&mut self) {
        self.unnamed_seq += 1;
        let owner = (self.id, self.unnamed_seq);
        if let Some(p) = self.server.as_mut() {
            p.conn.unnamed_owner = Some(owner);
        }
        self.pending.expect(
            Kind::Parse,
            Mode::Forward,
            Hook::UnnamedParse {
                client: true,
                seq: owner.1,
            },
        );
    }

    /// Whether `query` may be parsed in a failed transaction block: its first statement is
    /// one PostgreSQL runs there ([`crate::sql::exits_failed_block`]).
    pub(super) fn ends_a_block(&self, query: &[u8]) -> bool {
        crate::sql::exits_failed_block(&String::from_utf8_lossy(query))
    }

    /// The settings a statement's meaning depends on, as it is parsed now: the search_path
    /// names its tables, types and functions; literals become constants under the time zone
    /// (and its abbreviations), date and interval styles, encoding, string syntax, array and
    /// XML input settings. Two clients' Parses of one text share a server-side statement only
    /// when these agree. While a statement that may have changed one of them is not read back
    /// yet, the settings are not known: the statement is shared with nobody.
    pub(super) fn parse_context(&self) -> Vec<u8> {
        let mut c = self.settled_context();
        if self.context_unsettled {
            c.extend_from_slice(format!("unsettled {}", self.app.statements.unique()).as_bytes());
        }
        c
    }

    /// Whether a Parse now is analysed under `context`: the settings are known, and the same.
    pub(super) fn parses_under(&self, context: &[u8]) -> bool {
        !self.context_unsettled && self.settled_context() == context
    }

    /// [`parse_context`](Self::parse_context) from the settings as last known.
    pub(super) fn settled_context(&self) -> Vec<u8> {
        context_of(&self.desired)
    }
    /// A statement that may change session settings is about to run (parsed, or bound
    /// again): they are read back when its transaction ends, with the custom names its text
    /// sets, and startup values a `RESET` in it replaced are put back at its Sync.
    fn note_settings_statement(&mut self, query: &[u8]) {
        let text = String::from_utf8_lossy(query);
        for n in super::settings::body_custom_names(&text) {
            self.custom_names.insert(n);
        }
        if super::settings::computes_setting_name(&text) {
            self.apply_effects(Effects::NONE, Some(super::settings::COMPUTED_SETTING));
        }
        let called = self.function_effects(query);
        self.context_unsettled |=
            called.contains(Effects::SETTINGS) || super::settings::may_change_parse(&text);
        self.restore_pending |=
            called.contains(Effects::SETTINGS) || super::settings::may_reset(&text);
        self.capture = true;
    }

    /// A Bind of statement `name` (`stmt`, when it is one of the client's named statements)
    /// runs it again: its settings changes apply to this run too (a driver parses `SELECT
    /// set_config('app.tenant', $1, false)` once and binds it in every later transaction).
    pub(super) fn note_bind_effects(&mut self, name: &[u8], stmt: Option<&Statement>) {
        let effects = match stmt {
            // With what its calls do by the functions known now (learnt since its Parse, too).
            Some(s) => {
                let called = self.statement_calls(s);
                // A pin its calls make was made at its Parse, unless what pins was learnt
                // since (the list is cached without the reason: found again, once).
                if called.contains(Effects::PIN) && !self.pin_outlives_reset {
                    let calls = self.functions.session_calls(&s.query);
                    self.note_calls(calls);
                }
                s.effects.get().copied().unwrap_or(Effects::NONE) | called
            }
            None if name.is_empty() => self.unnamed_effects.0 | self.unnamed_calls(),
            None => Effects::NONE,
        };
        if effects.contains(Effects::STATE) {
            self.apply_effects(Effects::STATE, None);
        }
        if (stmt.is_some() || name.is_empty()) && self.forgets_statements(effects) {
            // Run on this connection, it drops every named statement there, other clients'
            // shared ones too: the connection is known to have none left (they are prepared
            // again when used), and the client's are gone, as in PostgreSQL. The unnamed
            // statement stays (it is the one running).
            self.forget_statements();
        }
        self.batch_copies_in |= effects.contains(Effects::COPY_IN);
        if !effects.intersects(Effects::SETTINGS | Effects::LOCAL_SETTINGS) {
            return;
        }
        let query = match stmt {
            Some(s) => Some(s.query.clone()),
            None => self.unnamed.as_ref().and_then(|frame| {
                statements::split_parse(&frame[5..]).map(|(_, q, _)| frame.slice_ref(q))
            }),
        };
        if let Some(q) = query {
            if effects.contains(Effects::SETTINGS) {
                self.note_settings_statement(&q);
            } else {
                self.note_local_settings(&q);
            }
        }
    }

    /// A `SET LOCAL` (or a `DO` block running one) is about to run: until its transaction
    /// ends, a Parse is analysed under settings the proxy does not know, when it sets one a
    /// Parse depends on (see `parse_context`).
    fn note_local_settings(&mut self, query: &[u8]) {
        self.context_unsettled |=
            super::settings::local_may_change_parse(&String::from_utf8_lossy(query));
    }

    /// What the unnamed statement's calls of the database's functions do, counted again when
    /// the function list changed since its Parse (a function it calls was redefined, or read
    /// from the catalog since): kept in its effects from then on.
    fn unnamed_calls(&mut self) -> Effects {
        let generation = self.functions.generation();
        if generation == self.unnamed_generation {
            return Effects::NONE;
        }
        self.unnamed_generation = generation;
        let Some(frame) = self.unnamed.clone() else {
            return Effects::NONE;
        };
        let Some((_, query, _)) = statements::split_parse(&frame[5..]) else {
            return Effects::NONE;
        };
        let effects = self.function_effects(query);
        self.unnamed_effects.0 |= effects;
        effects
    }
}

/// The value of setting `key` in a parse context (see [`context_of`]), if it has one.
pub(super) fn context_value<'a>(context: &'a [u8], key: &str) -> Option<&'a [u8]> {
    context
        .split(|&b| b == 0)
        .find_map(|e| e.strip_prefix(key.as_bytes())?.strip_prefix(b"="))
}

/// The parse context (see [`Session::parse_context`]) of `settings`.
pub(super) fn context_of(settings: &super::settings::Settings) -> Vec<u8> {
    let mut c = Vec::new();
    for k in super::settings::PARSE_SETTINGS {
        if let Some(v) = settings.0.get(k) {
            c.extend_from_slice(k.as_bytes());
            c.push(b'=');
            c.extend_from_slice(v.as_bytes());
            c.push(0);
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::context_value;

    #[test]
    fn a_parse_context_gives_each_value_by_its_whole_key() {
        let c = b"search_path=a, b\0timezone=UTC\0";
        assert_eq!(context_value(c, "search_path"), Some(&b"a, b"[..]));
        assert_eq!(context_value(c, "timezone"), Some(&b"UTC"[..]));
        assert_eq!(context_value(c, "datestyle"), None);
        // Not a key that only begins another.
        assert_eq!(context_value(c, "time"), None);
        assert_eq!(context_value(b"", "search_path"), None);
    }
}
