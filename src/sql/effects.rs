//! Session effects and transaction control of session/transaction statements: `SET`, `RESET`,
//! `SHOW`, `DISCARD`, `DEALLOCATE`, `LISTEN`, `PREPARE`, `DECLARE`, `LOAD`, `BEGIN`,
//! `START TRANSACTION`, `COMMIT`, `ROLLBACK`, ..., and the `switchyard.*` commands.
//!
//! These functions look at the head of one statement (a clone of its token stream, positioned
//! after the first keyword) and record what they find in a [`StmtOut`]. Effects that can occur
//! anywhere in a statement (`set_config(...)`, advisory locks, `SELECT ... INTO TEMP`) are found
//! by the token scan in [`super::classify`].

use std::borrow::Cow;

use super::lexer::TokenKind;
use super::split::{STok, Stmt};
use super::{Deallocate, Effects, Execute, PinReason, Reason, SwitchyardCommand, TxnControl};

/// What one statement does to the session.
#[derive(Debug, Clone, Default)]
pub(crate) struct StmtOut<'a> {
    pub txn: TxnControl,
    pub effects: Effects,
    pub pin: Option<PinReason>,
    pub deallocate: Option<Deallocate<'a>>,
    pub execute: Option<Execute<'a>>,
    pub switchyard: Option<SwitchyardCommand<'a>>,
    /// A hot standby refuses it, though a read-only transaction allows it (see
    /// [`super::Analysis::primary_only`]).
    pub standby_refuses: bool,
}

impl<'a> StmtOut<'a> {
    #[inline]
    pub fn pin(&mut self, p: PinReason) {
        self.effects.insert(Effects::PIN);
        if self.pin.is_none() {
            self.pin = Some(p);
        }
    }
}

#[inline]
fn kw(t: &Option<STok<'_>>, k: &str) -> bool {
    t.as_ref().is_some_and(|t| t.is_kw(k))
}

/// Transaction control statements. `first` is the upper-case statement keyword; `rest` is
/// positioned after it.
pub(crate) fn transaction_head<'a>(first: &'static str, mut rest: Stmt<'a>, out: &mut StmtOut<'a>) {
    match first {
        "BEGIN" | "START" => {
            if first == "START" && !kw(&rest.peek(), "transaction") {
                return;
            }
            // modes: ISOLATION LEVEL ..., READ ONLY, READ WRITE, [NOT] DEFERRABLE
            let mut read_only = false;
            let mut prev_read = false;
            for t in rest.by_ref() {
                if prev_read {
                    if t.is_kw("only") {
                        read_only = true;
                    } else if t.is_kw("write") {
                        read_only = false;
                    }
                }
                prev_read = t.is_kw("read");
            }
            out.txn = TxnControl::Begin { read_only };
        }
        "COMMIT" | "END" | "ROLLBACK" | "ABORT" => {
            // PostgreSQL's grammar (TransactionStmt): the keyword, [WORK | TRANSACTION],
            // [AND [NO] CHAIN]. Anything else is another statement (`COMMIT PREPARED 'gid'`,
            // `ROLLBACK [WORK] TO [SAVEPOINT] name`) or one the server refuses (a syntax
            // error, which fails an open block): not the end of a block.
            let mut t = rest.next();
            if kw(&t, "work") || kw(&t, "transaction") {
                t = rest.next();
            }
            if kw(&t, "and") {
                t = rest.next();
                if kw(&t, "no") {
                    t = rest.next();
                }
                if !kw(&t, "chain") {
                    return;
                }
                t = rest.next();
            }
            if t.is_some() {
                return;
            }
            out.txn = if matches!(first, "COMMIT" | "END") {
                TxnControl::Commit
            } else {
                TxnControl::Rollback
            };
        }
        "PREPARE" => {
            // PREPARE TRANSACTION 'gid' ends the transaction block (not on a standby).
            out.txn = TxnControl::PrepareTransaction;
            out.standby_refuses = true;
        }
        _ => {}
    }
}

/// Session statements. Returns the reason to report (always [`Reason::SessionCommand`] today).
pub(crate) fn session_head<'a>(
    first: &'static str,
    mut rest: Stmt<'a>,
    out: &mut StmtOut<'a>,
) -> Reason {
    match first {
        "SET" => set_head(rest, out),
        "RESET" => {
            out.effects.insert(Effects::SETTINGS);
            if kw(&rest.peek(), "all") {
                out.effects.insert(Effects::RESET_ALL);
            }
            if let Some(name) = switchyard_name(&mut rest) {
                if rest.next().is_none() {
                    out.switchyard = Some(SwitchyardCommand::Reset { name });
                }
            }
        }
        "DISCARD" => match rest.next() {
            t if kw(&t, "all") => out
                .effects
                .insert(Effects::SETTINGS | Effects::DISCARD_ALL | Effects::SEQUENCE_RESET),
            t if kw(&t, "sequences") => out.effects.insert(Effects::SEQUENCE_RESET),
            _ => {}
        },
        "DEALLOCATE" => deallocate_head(rest, out),
        "EXECUTE" => {
            if let Some(t) = rest.next().filter(|t| t.is_name()) {
                out.execute = t.ident_value().map(|name| Execute {
                    name,
                    span: t.offset..t.end(),
                });
            }
        }
        "LISTEN" => {
            out.pin(PinReason::Listen);
            out.standby_refuses = true;
        }
        "PREPARE" => out.pin(PinReason::Prepare),
        "LOAD" => out.pin(PinReason::Load),
        "DECLARE" => {
            // DECLARE name [BINARY] [ASENSITIVE|INSENSITIVE] [[NO] SCROLL] CURSOR
            //   [{WITH|WITHOUT} HOLD] FOR query
            let mut prev_with = false;
            for t in rest.by_ref() {
                if t.is_kw("for") {
                    break;
                }
                if prev_with && t.is_kw("hold") {
                    out.pin(PinReason::HoldCursor);
                    break;
                }
                prev_with = t.is_kw("with");
            }
        }
        _ => {}
    }
    Reason::SessionCommand
}

/// `SHOW switchyard.name` (whole statement).
pub(crate) fn show_head<'a>(mut rest: Stmt<'a>, out: &mut StmtOut<'a>) {
    if let Some(name) = switchyard_name(&mut rest) {
        if rest.next().is_none() {
            out.switchyard = Some(SwitchyardCommand::Show { name });
        }
    }
}

fn set_head<'a>(mut rest: Stmt<'a>, out: &mut StmtOut<'a>) {
    let Some(mut t) = rest.next() else { return };
    let mut local = false;
    if t.is_kw("local") {
        local = true;
        let Some(n) = rest.next() else { return };
        t = n;
    } else if t.is_kw("session") {
        let next = rest.peek();
        if kw(&next, "characteristics") {
            // SET SESSION CHARACTERISTICS AS TRANSACTION ...: session defaults.
            out.effects.insert(Effects::SETTINGS);
            return;
        }
        if kw(&next, "authorization") {
            out.effects.insert(Effects::SETTINGS);
            out.pin(PinReason::Role);
            return;
        }
        let Some(n) = rest.next() else { return };
        t = n;
    }
    if t.is_kw("transaction") {
        if kw(&rest.peek(), "snapshot") {
            // SET TRANSACTION SNAPSHOT 'id': a snapshot another session exported, on the
            // primary (a standby knows none of the primary's).
            out.standby_refuses = true;
            return;
        }
        // SET [SESSION|LOCAL] TRANSACTION modes: this transaction only.
        let (mut prev_read, mut read_only, mut standby_refuses) = (false, false, false);
        for m in rest.by_ref() {
            read_only |= prev_read && m.is_kw("only");
            standby_refuses |= (prev_read && m.is_kw("write")) || m.is_kw("serializable");
            prev_read = m.is_kw("read");
        }
        if standby_refuses {
            // (Also when not the first statement of its request: see `standby_refuses`.)
            out.standby_refuses = true;
            out.txn = TxnControl::SetTransactionReadWrite;
        } else if read_only {
            out.txn = TxnControl::SetTransactionReadOnly;
        }
        return;
    }
    if t.is_kw("constraints") {
        return; // transaction-local
    }
    if local {
        out.effects.insert(Effects::LOCAL_SETTINGS);
    }
    if t.name_eq("seed") {
        // `SET [LOCAL] seed`: the generator's state outlives the transaction either way.
        out.effects.insert(Effects::SETTINGS);
        out.pin(PinReason::Seed);
        return;
    }
    if t.is_kw("role") || (t.is_kw("session") && kw(&rest.peek(), "authorization")) {
        if !local {
            out.effects.insert(Effects::SETTINGS);
            out.pin(PinReason::Role);
        }
        return;
    }
    if !local {
        out.effects.insert(Effects::SETTINGS);
    }
    // transaction_read_only, transaction_isolation
    let read_only = t.name_eq("transaction_read_only");
    if read_only || t.name_eq("transaction_isolation") {
        let mut v = rest.clone();
        let mut sep = v.next();
        if sep.as_ref().is_some_and(|s| s.is_kw("to") || s.text == "=") {
            sep = v.next();
        }
        if let Some(val) = sep {
            out.txn = match (read_only, is_true_value(&val)) {
                (true, true) => TxnControl::SetTransactionReadOnly,
                (true, false) => TxnControl::SetTransactionReadWrite,
                (false, _) if value_is(&val, "serializable") => TxnControl::SetTransactionReadWrite,
                (false, _) => TxnControl::None,
            };
            out.standby_refuses = out.txn == TxnControl::SetTransactionReadWrite;
        }
        return;
    }
    // SET [SESSION|LOCAL] switchyard.name {=|TO} value
    let mut r = Stmt::clone(&rest);
    let Some(name) = switchyard_name_from(t, &mut r) else {
        return;
    };
    let Some(sep) = r.next() else { return };
    if !(sep.is_kw("to") || (sep.kind == TokenKind::Operator && sep.text == "=")) {
        return;
    }
    let Some(val) = r.next() else { return };
    if r.next().is_some() {
        return; // lists and other forms are not ours
    }
    if local {
        out.switchyard = Some(SwitchyardCommand::SetLocal { name });
        return;
    }
    let value: Cow<'a, str> = match val.kind {
        // (`TO DEFAULT` is a SET, tagged so; its value means the default as `RESET` does.)
        TokenKind::Ident if val.is_kw("default") => Cow::Borrowed("default"),
        TokenKind::Ident | TokenKind::QuotedIdent => match val.ident_value() {
            Some(v) => v,
            None => return,
        },
        TokenKind::String(_) => match val.string_value() {
            Some(v) => v,
            None => return,
        },
        TokenKind::Number => Cow::Borrowed(val.text),
        _ => return,
    };
    out.switchyard = Some(SwitchyardCommand::Set { name, value });
}

fn is_true_value(t: &STok<'_>) -> bool {
    ["on", "true", "1", "yes", "t", "y"]
        .iter()
        .any(|x| value_is(t, x))
}

/// Whether a setting's value token (a word or a string) is `expected`, in any case.
fn value_is(t: &STok<'_>, expected: &str) -> bool {
    let v: Cow<'_, str> = match t.kind {
        TokenKind::String(_) => t.string_value().unwrap_or(Cow::Borrowed("")),
        _ => Cow::Borrowed(t.text),
    };
    v.trim().eq_ignore_ascii_case(expected)
}

/// Reads `switchyard . name` (or `"switchyard.name"`) from the stream.
fn switchyard_name<'a>(rest: &mut Stmt<'a>) -> Option<Cow<'a, str>> {
    let t = rest.next()?;
    switchyard_name_from(t, rest)
}

fn switchyard_name_from<'a>(t: STok<'a>, rest: &mut Stmt<'a>) -> Option<Cow<'a, str>> {
    if t.name_eq("switchyard") {
        let dot = rest.next()?;
        if !dot.is_punct(b'.') {
            return None;
        }
        let n = rest.next()?;
        if !n.is_name() {
            return None;
        }
        return n.ident_value();
    }
    if t.kind == TokenKind::QuotedIdent {
        let v = t.ident_value()?;
        let prefix = "switchyard.";
        if v.len() > prefix.len()
            && v.get(..prefix.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
        {
            return Some(match v {
                Cow::Borrowed(s) => Cow::Borrowed(&s[prefix.len()..]),
                Cow::Owned(s) => Cow::Owned(s[prefix.len()..].to_string()),
            });
        }
    }
    None
}

fn deallocate_head<'a>(mut rest: Stmt<'a>, out: &mut StmtOut<'a>) {
    let Some(mut t) = rest.next() else { return };
    // DEALLOCATE PREPARE x; but `DEALLOCATE prepare` names a statement called "prepare".
    if t.is_kw("prepare") {
        if let Some(n) = rest.next() {
            t = n;
        }
    }
    let whole = rest.next().is_none();
    if t.is_kw("all") {
        out.effects.insert(Effects::DEALLOCATE_ALL);
        if whole {
            out.deallocate = Some(Deallocate::All);
        }
    } else if whole && t.is_name() {
        out.deallocate = t.ident_value().map(Deallocate::Name);
    }
}

/// Whether a hot standby refuses `LOCK [TABLE] name [, ...] [IN mode MODE] [NOWAIT]`
/// (`rest` after `LOCK`): it takes no lock above `ROW EXCLUSIVE`, and without `IN` the mode
/// is `ACCESS EXCLUSIVE`.
pub(crate) fn lock_refused_on_standby(mut rest: Stmt<'_>) -> bool {
    if !rest.any(|t| t.depth == 0 && t.is_kw("in")) {
        return true;
    }
    let (a, b) = (rest.next(), rest.next());
    let allowed = (kw(&a, "access") && kw(&b, "share"))
        || (kw(&a, "row") && (kw(&b, "share") || kw(&b, "exclusive")));
    !allowed
}

/// `CREATE [OR REPLACE] [GLOBAL|LOCAL] {TEMP|TEMPORARY} [RECURSIVE] {TABLE|VIEW|SEQUENCE}`:
/// whether the statement creates a temporary relation (before looking at `ON COMMIT DROP`).
pub(crate) fn create_is_temp(mut rest: Stmt<'_>) -> bool {
    let mut t = rest.next();
    if kw(&t, "or") {
        rest.next(); // REPLACE
        t = rest.next();
    }
    if kw(&t, "global") || kw(&t, "local") {
        t = rest.next();
    }
    if !(kw(&t, "temp") || kw(&t, "temporary")) {
        return false;
    }
    t = rest.next();
    if kw(&t, "recursive") || kw(&t, "unlogged") {
        t = rest.next();
    }
    kw(&t, "table") || kw(&t, "view") || kw(&t, "sequence")
}

/// Session effects of a protocol-level FunctionCall ('F') of the built-in function with this
/// OID. Built-in OIDs are fixed in PostgreSQL's catalog (`pg_proc.dat`), the same in every
/// release: `set_config` changes settings; the session-level advisory lock functions pin.
/// Other built-in functions (large objects' `lo_*` among them, which only live within a
/// transaction) have no session effect. (The database's own functions are looked up in the
/// catalog: [`crate::catalog::DbFunctions::oid_calls`].)
pub fn of_function_call(oid: u32) -> (Effects, Option<PinReason>) {
    match oid {
        // set_config(text, text, boolean)
        2078 => (Effects::SETTINGS, None),
        // pg_advisory_lock, _shared, pg_try_advisory_lock, _shared: (bigint) and (int, int)
        2880..=2883 | 2886..=2889 => (Effects::PIN, Some(PinReason::AdvisoryLock)),
        _ => (Effects::NONE, None),
    }
}

/// The database a lone `DROP DATABASE [IF EXISTS] name [[WITH] (...)]` drops (it waits for,
/// then refuses, other connections to it: the proxy's idle ones are closed first).
pub fn dropped_database(sql: &str) -> Option<String> {
    let mut st = Stmt::new(sql, 0);
    let first = st.next();
    if !(kw(&first, "drop") && kw(&st.next(), "database")) {
        return None;
    }
    let mut name = st.next()?;
    if name.is_kw("if") {
        if !kw(&st.next(), "exists") {
            return None;
        }
        name = st.next()?;
    }
    if !name.is_name() {
        return None;
    }
    name.ident_value().map(Cow::into_owned)
}
