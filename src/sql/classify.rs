//! Routing: which statements may run on a replica.
//!
//! Each statement is looked at twice, cheaply: its first few tokens decide the kind of
//! statement (read, `EXPLAIN`, `COPY`, session command, transaction control, write), then one
//! scan over all its tokens finds what makes a read unsafe for a replica (locking clauses,
//! `SELECT ... INTO`, data-modifying CTEs, calls of writing functions) and the effects that can
//! occur anywhere (`set_config(`, advisory locks). Neither pass allocates.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

use super::effects::{self, StmtOut};
use super::lexer::{Token, TokenKind};
use super::names::{
    call_effect, call_key, is_builtin_write, server_role_call, statement_keyword, CallEffect,
    PRIMARY_VIEWS,
};
use super::split::{STok, Stmt};
use super::{Analysis, Effects, PinReason, Reason, Route};

/// A function name from the configuration, lower case, possibly schema-qualified.
#[derive(Debug, Clone)]
struct FnName {
    schema: Option<&'static str>,
    name: &'static str,
}

/// Classifies query strings. Built once from the configuration; cheap to share.
///
/// Function calls (an identifier, possibly schema-qualified or quoted, followed by `(`) are
/// matched against, in order:
///
/// 1. `read_functions`: treated as harmless, even if listed below;
/// 2. the built-in list of functions that must run on the primary ([`is_builtin_write`]):
///    sequence manipulation (`nextval`, `setval`, and `currval`/`lastval` which depend on a
///    `nextval` in the same session), advisory locks, `pg_notify`, large-object writes,
///    xid assignment, WAL/backup/replication-slot/origin control, server signalling and
///    statistics resets, BRIN/GIN maintenance, `dblink_exec`, `dblink_connect[_u]`,
///    `pg_current_wal_*lsn`;
/// 3. `write_functions`.
///
/// A configured name without a schema matches the function in any schema; `schema.name`
/// matches only that schema. Built-in names match in any schema. Any other function is
/// assumed harmless: a function that writes fails on a replica with SQLSTATE 25006 and the
/// proxy re-runs the statement on the primary.
#[derive(Debug, Clone, Default)]
pub struct Classifier {
    write_functions: Vec<FnName>,
    read_functions: Vec<FnName>,
    /// The analysis of each of [`TXN_WORDS`] alone, made by the full classifier when this one
    /// is built (a transaction of an OLTP client sends them as often as anything else).
    txn_words: Vec<(&'static str, Analysis<'static>)>,
}

/// Statements of one word that begin or end a transaction.
const TXN_WORDS: [&str; 5] = ["begin", "commit", "end", "rollback", "abort"];

/// Interns configured names so that [`Reason::WritingFunction`] can carry a `&'static str`.
/// Each distinct name is leaked once, however often the configuration is reloaded.
fn intern(s: &str) -> &'static str {
    static POOL: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut pool = POOL
        .get_or_init(|| Mutex::new(HashSet::new()))
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(&s) = pool.get(s) {
        return s;
    }
    let leaked: &'static str = Box::leak(s.to_owned().into_boxed_str());
    pool.insert(leaked);
    leaked
}

fn parse_fn_name(s: &str) -> Option<FnName> {
    let s = s.trim().trim_end_matches("()");
    if s.is_empty() {
        return None;
    }
    let unquote = |p: &str| -> String {
        let p = p.trim();
        if p.len() >= 2 && p.starts_with('"') && p.ends_with('"') {
            p[1..p.len() - 1].replace("\"\"", "\"")
        } else {
            p.to_ascii_lowercase()
        }
    };
    match s.rsplit_once('.') {
        Some((schema, name)) => Some(FnName {
            schema: Some(intern(&unquote(schema))),
            name: intern(&unquote(name)),
        }),
        None => Some(FnName {
            schema: None,
            name: intern(&unquote(s)),
        }),
    }
}

/// What the head of a statement says it is.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Empty,
    /// A read, subject to the token scan.
    Read(&'static str),
    /// `EXPLAIN` without `ANALYZE` of a plannable statement: nothing is executed.
    ExplainPlain,
    /// `COPY`: a read if `TO STDOUT` and (for the query form) the query is a read.
    Copy {
        inner_read: bool,
    },
    /// `CREATE ...`; `temp` for `CREATE TEMP TABLE/VIEW/SEQUENCE`.
    Create {
        temp: bool,
    },
    /// Needs the primary.
    Primary(Reason),
}

/// What the token scan found in one statement.
#[derive(Debug, Default)]
struct Features {
    dml_top: Option<&'static str>,
    dml_nested: bool,
    locking: Option<&'static str>,
    select_into: bool,
    write_fn: Option<&'static str>,
    primary_view: Option<&'static str>,
    /// A read of a setting that tells a primary from a standby.
    server_role: Option<&'static str>,
    on_commit_drop: bool,
    pg_temp: bool,
    copy_to_stdout: Option<bool>,
}

#[derive(Clone, Copy, Default)]
struct ScanMode {
    read: bool,
    copy: bool,
    create: bool,
}

/// The outcome for one statement.
#[derive(Debug, Clone)]
pub(crate) struct StmtResult<'a> {
    pub route: Route,
    pub reason: Reason,
    pub out: StmtOut<'a>,
    pub empty: bool,
    pub unparsable: bool,
    /// See [`Analysis::primary_only`].
    pub primary_only: bool,
}

#[inline]
fn is_read_start(t: &Token<'_>) -> Option<&'static str> {
    if t.kind != TokenKind::Ident {
        return None;
    }
    match t.text.len() {
        4 if t.is_kw("with") => Some("WITH"),
        5 if t.is_kw("table") => Some("TABLE"),
        6 if t.is_kw("select") => Some("SELECT"),
        6 if t.is_kw("values") => Some("VALUES"),
        _ => None,
    }
}

#[inline]
fn opt_kw(t: &Option<STok<'_>>, k: &str) -> bool {
    t.as_ref().is_some_and(|t| t.is_kw(k))
}

/// The offset in `text` of offset `at` of `String::from_utf8_lossy(text)`, which replaced each
/// invalid sequence of `text` by one U+FFFD (3 bytes). `None` inside such a replacement or
/// past the end.
fn offset_before_lossy(text: &[u8], at: usize) -> Option<usize> {
    let (mut lossy, mut original) = (0, 0);
    for chunk in text.utf8_chunks() {
        let valid = chunk.valid().len();
        if at <= lossy + valid {
            return Some(original + (at - lossy));
        }
        lossy += valid;
        original += valid;
        if !chunk.invalid().is_empty() {
            if at < lossy + 3 {
                return None;
            }
            lossy += 3;
            original += chunk.invalid().len();
        }
    }
    (at == lossy).then_some(original)
}

impl Classifier {
    /// `write_functions`: functions (lower case, optionally `schema.name`) that must run on the
    /// primary in addition to the built-in list. `read_functions`: functions that are harmless
    /// even if they are in the built-in list or in `write_functions`.
    pub fn new(write_functions: &[String], read_functions: &[String]) -> Self {
        let mut c = Classifier {
            write_functions: write_functions
                .iter()
                .filter_map(|s| parse_fn_name(s))
                .collect(),
            read_functions: read_functions
                .iter()
                .filter_map(|s| parse_fn_name(s))
                .collect(),
            txn_words: Vec::new(),
        };
        c.txn_words = TXN_WORDS.iter().map(|w| (*w, c.analyze_full(w))).collect();
        c
    }

    /// The analysis of the commonest statements, found without the full classifier: a plain
    /// `SELECT` (see plain.rs), a plain `INSERT`, `UPDATE` or `DELETE` (plain_write.rs) or one
    /// of [`TXN_WORDS`].
    fn shortcut(&self, text: &[u8]) -> Option<Analysis<'static>> {
        if let Some(a) = super::plain::plain_select(text) {
            return Some(a);
        }
        if let Some(a) = super::plain_write::plain_write(text) {
            return Some(a);
        }
        let s = super::plain::one_statement(text);
        if s.len() > 8 {
            return None;
        }
        self.txn_words
            .iter()
            .find(|(w, _)| s.eq_ignore_ascii_case(w.as_bytes()))
            .map(|(_, a)| a.clone())
    }

    /// Analyse a query string (one or more statements). See the module documentation.
    pub fn analyze<'a>(&self, sql: &'a str) -> Analysis<'a> {
        self.shortcut(sql.as_bytes())
            .unwrap_or_else(|| self.analyze_full(sql))
    }

    /// [`Classifier::analyze`] of query text as received, not validated as UTF-8 yet: the
    /// shortcuts take ASCII only, and text in another client encoding (LATIN1, ...) is analysed
    /// with its foreign bytes replaced, which keeps the structure the analysis looks at (the
    /// keywords, quotes and punctuation are ASCII in every encoding PostgreSQL accepts from a
    /// client). The span of an `EXECUTE` name found then is mapped back to `text`.
    pub fn analyze_text<'a>(&self, text: &'a [u8]) -> Analysis<'a> {
        if let Some(a) = self.shortcut(text) {
            return a;
        }
        match std::str::from_utf8(text) {
            Ok(sql) => self.analyze_full(sql),
            Err(_) => self.analyze_lossy(text),
        }
    }

    /// [`Classifier::analyze_text`] of text that is not UTF-8.
    fn analyze_lossy(&self, text: &[u8]) -> Analysis<'static> {
        let mut a = self
            .analyze_full(&String::from_utf8_lossy(text))
            .into_owned();
        if let Some(e) = &mut a.execute {
            let start = offset_before_lossy(text, e.span.start);
            let end = offset_before_lossy(text, e.span.end);
            match (start, end) {
                (Some(s), Some(t)) => e.span = s..t,
                _ => a.execute = None,
            }
        }
        a
    }

    /// [`Classifier::analyze`] without the shortcut for plain `SELECT`s.
    pub(crate) fn analyze_full<'a>(&self, sql: &'a str) -> Analysis<'a> {
        let hint = leading_hint(sql);
        let mut statements = 0u32;
        let mut first: Option<StmtResult<'a>> = None;
        let mut later_primary = false;
        let mut unparsable = false;
        let mut effects = Effects::NONE;
        let mut pin = None;
        let mut primary_only = false;
        let mut pos = 0usize;
        loop {
            let mut st = Stmt::new(sql, pos);
            let r = self.analyze_stmt(&mut st);
            let advanced = st.end > pos;
            pos = st.end;
            if !r.empty {
                statements += 1;
                unparsable |= r.unparsable;
                effects |= r.out.effects;
                primary_only |= r.primary_only;
                if pin.is_none() {
                    pin = r.out.pin;
                }
                match first {
                    None => first = Some(r),
                    Some(_) => later_primary |= r.route == Route::Primary,
                }
            }
            if st.eof || !advanced {
                break;
            }
        }
        let Some(first) = first else {
            return Analysis {
                route: Route::Replica,
                reason: Reason::Empty,
                hint,
                effects,
                pin,
                txn: Default::default(),
                primary_only,
                deallocate: None,
                execute: None,
                switchyard: None,
                statements: 0,
            };
        };
        let (mut route, mut reason) = (first.route, first.reason);
        if unparsable {
            route = Route::Primary;
            reason = Reason::Unparsable;
        } else if let Some(h) = hint {
            route = h;
            reason = Reason::Hint(h);
        } else if route == Route::Replica && later_primary {
            route = Route::Primary;
            reason = Reason::MultiStatementWrite;
        }
        let single = statements == 1;
        if !single {
            // It fails there (a multi-statement Query is an implicit transaction block).
            effects.remove(Effects::DISCARD_ALL);
        }
        let out = first.out;
        Analysis {
            route,
            reason,
            hint,
            effects,
            pin,
            txn: out.txn,
            primary_only: primary_only || unparsable,
            deallocate: if single { out.deallocate } else { None },
            execute: if single { out.execute } else { None },
            switchyard: if single { out.switchyard } else { None },
            statements,
        }
    }

    /// Analyse the statement `st` is positioned at, consuming it.
    pub(crate) fn analyze_stmt<'a>(&self, st: &mut Stmt<'a>) -> StmtResult<'a> {
        let mut out = StmtOut::default();
        let mut head = st.clone();
        let kind = match head.next() {
            None => Kind::Empty,
            Some(t) => self.head_kind(t, head, &mut out),
        };
        let mode = ScanMode {
            read: matches!(kind, Kind::Read(_) | Kind::Copy { .. }),
            copy: matches!(kind, Kind::Copy { .. }),
            create: matches!(kind, Kind::Create { .. }),
        };
        let f = self.scan(st, mode, &mut out);
        st.drain();
        let unparsable = st.unparsable;
        let empty = st.count == 0 && !unparsable;
        if let Kind::Create { temp } = kind {
            if (temp || f.pg_temp) && !f.on_commit_drop {
                out.pin(PinReason::TempTable);
            }
            if !temp && !f.pg_temp {
                out.effects.insert(Effects::SCHEMA);
                // Still perhaps temporary: `search_path` may name `pg_temp` first, or a
                // function or `DO` body create one. The session's state is looked at after it.
                out.effects.insert(Effects::STATE);
            }
        }
        // (Of reads only: a write fails in a read-only transaction wherever it runs.)
        let primary_only = out.standby_refuses
            || (mode.read
                && (f.write_fn.is_some() || f.primary_view.is_some() || f.server_role.is_some()));
        let (route, reason) = match kind {
            Kind::Empty => (Route::Replica, Reason::Empty),
            Kind::Read(k) => read_outcome(&f, k),
            Kind::ExplainPlain => {
                // Nothing is executed: no effects either.
                out.effects = Effects::NONE;
                out.pin = None;
                (Route::Replica, Reason::Read("EXPLAIN"))
            }
            Kind::Copy { inner_read } => {
                if inner_read && f.copy_to_stdout == Some(true) {
                    read_outcome(&f, "COPY")
                } else {
                    (Route::Primary, Reason::Write("COPY"))
                }
            }
            Kind::Create { .. } => (Route::Primary, Reason::Write("CREATE")),
            Kind::Primary(r) => (Route::Primary, r),
        };
        let primary_only = primary_only
            || matches!(
                reason,
                Reason::WritingFunction(_) | Reason::PrimaryView(_) | Reason::ServerRole(_)
            );
        StmtResult {
            route,
            reason,
            out,
            empty,
            unparsable,
            primary_only,
        }
    }

    /// Decide the kind of statement from its first token(s). `rest` is positioned after
    /// `first`. Records head-level effects in `out`.
    fn head_kind<'a>(&self, first: STok<'a>, mut rest: Stmt<'a>, out: &mut StmtOut<'a>) -> Kind {
        if first.is_punct(b'(') {
            // (SELECT ...), ((VALUES ...)) UNION ...
            let mut t = rest.next();
            while t.as_ref().is_some_and(|t| t.is_punct(b'(')) {
                t = rest.next();
            }
            return match t.as_ref().and_then(|t| is_read_start(t)) {
                Some(k) => Kind::Read(k),
                None => match t.as_ref().and_then(|t| statement_keyword(t)) {
                    Some(k) => Kind::Primary(Reason::Write(k)),
                    None => Kind::Primary(Reason::Unrecognized),
                },
            };
        }
        let Some(k) = statement_keyword(&first) else {
            return Kind::Primary(Reason::Unrecognized);
        };
        match k {
            "SELECT" | "VALUES" | "TABLE" | "WITH" => Kind::Read(k),
            "SHOW" => {
                let role = rest.peek().and_then(|t| {
                    ["transaction_read_only", "in_hot_standby", "all"]
                        .into_iter()
                        .find(|n| t.name_eq(n))
                });
                if let Some(n) = role {
                    return Kind::Primary(Reason::ServerRole(n));
                }
                effects::show_head(rest, out);
                Kind::Read(k)
            }
            "EXPLAIN" => self.explain_kind(rest, out),
            "COPY" => {
                let inner_read = match rest.next() {
                    Some(t) if t.is_punct(b'(') => {
                        let mut t = rest.next();
                        while t.as_ref().is_some_and(|t| t.is_punct(b'(')) {
                            t = rest.next();
                        }
                        t.as_ref().and_then(|t| is_read_start(t)).is_some()
                    }
                    Some(_) => true,
                    None => false,
                };
                Kind::Copy { inner_read }
            }
            "BEGIN" | "START" | "COMMIT" | "END" | "ROLLBACK" | "ABORT" | "SAVEPOINT"
            | "RELEASE" => {
                effects::transaction_head(k, rest, out);
                Kind::Primary(Reason::TransactionControl)
            }
            // `PREPARE TRANSACTION 'gid'`; `PREPARE transaction AS ...` names a statement.
            "PREPARE"
                if {
                    let mut r = rest.clone();
                    opt_kw(&r.next(), "transaction")
                        && r.next()
                            .is_some_and(|t| matches!(t.kind, TokenKind::String(_)))
                } =>
            {
                effects::transaction_head(k, rest, out);
                Kind::Primary(Reason::TransactionControl)
            }
            "SET" | "RESET" | "DISCARD" | "DEALLOCATE" | "PREPARE" | "EXECUTE" | "LISTEN"
            | "UNLISTEN" | "DECLARE" | "FETCH" | "MOVE" | "CLOSE" | "LOAD" => {
                Kind::Primary(effects::session_head(k, rest, out))
            }
            "CREATE" => Kind::Create {
                temp: effects::create_is_temp(rest),
            },
            // Allowed in a read-only transaction, refused by a hot standby.
            "LOCK" => {
                out.standby_refuses = effects::lock_refused_on_standby(rest);
                Kind::Primary(Reason::Write(k))
            }
            "NOTIFY" | "CLUSTER" | "REINDEX" | "ANALYZE" | "ANALYSE" | "VACUUM" => {
                out.standby_refuses = true;
                Kind::Primary(Reason::Write(k))
            }
            "ALTER" | "DROP" | "IMPORT" => {
                out.effects.insert(Effects::SCHEMA);
                Kind::Primary(Reason::Write(k))
            }
            "DO" => {
                // The block runs like a function's body: a setting it changes, or state it
                // leaves in the session, outlives it; a call in it that pins (a named dblink
                // connection, a backup, a replication origin) pins as the client's own would.
                for body in rest.filter_map(|t| t.string_value()) {
                    if super::functions::body_sets_settings(&body) {
                        out.effects.insert(Effects::SETTINGS);
                    }
                    if super::functions::body_sets_local_settings(&body) {
                        out.effects.insert(Effects::LOCAL_SETTINGS);
                    }
                    if super::functions::body_keeps_state(&body) {
                        out.effects.insert(Effects::STATE);
                    }
                    if let Some(p) = super::functions::body_pin(&body) {
                        out.pin(p);
                    }
                }
                Kind::Primary(Reason::Write(k))
            }
            _ => Kind::Primary(Reason::Write(k)),
        }
    }

    /// `EXPLAIN [ANALYZE] [VERBOSE] stmt` or `EXPLAIN (option [value], ...) stmt`.
    fn explain_kind<'a>(&self, mut rest: Stmt<'a>, out: &mut StmtOut<'a>) -> Kind {
        let mut analyze = false;
        let mut t = rest.next();
        if t.as_ref().is_some_and(|t| t.is_punct(b'(')) {
            // options
            loop {
                let Some(name) = rest.next() else {
                    return Kind::Primary(Reason::Unparsable);
                };
                if name.is_punct(b')') {
                    break;
                }
                if name.is_punct(b',') {
                    continue;
                }
                // (An option name may be quoted: `("analyze")` is ANALYZE.)
                let is_analyze = name.name_eq("analyze") || name.name_eq("analyse");
                // optional value
                let mut value_true = true;
                if let Some(v) = rest.peek() {
                    if !v.is_punct(b',') && !v.is_punct(b')') {
                        rest.next();
                        value_true = !is_false_value(&v);
                    }
                }
                if is_analyze {
                    analyze = value_true;
                }
            }
            t = rest.next();
        } else {
            while let Some(x) = t.as_ref() {
                if x.is_kw("analyze") || x.is_kw("analyse") {
                    analyze = true;
                } else if !x.is_kw("verbose") {
                    break;
                }
                t = rest.next();
            }
        }
        let Some(inner) = t else {
            return Kind::Primary(Reason::Write("EXPLAIN"));
        };
        if analyze {
            // PostgreSQL's grammar has no EXPLAIN of an EXPLAIN: it is refused, wherever it
            // runs. Not looked into either: each level would recurse, and a client's
            // `EXPLAIN ANALYZE ` repeated 300,000 times would overflow the stack.
            if inner.is_kw("explain") {
                return Kind::Primary(Reason::Write("EXPLAIN"));
            }
            return match self.head_kind(inner, rest, out) {
                Kind::ExplainPlain | Kind::Empty | Kind::Copy { .. } => {
                    Kind::Primary(Reason::Write("EXPLAIN"))
                }
                k => k,
            };
        }
        let plannable = inner.is_punct(b'(')
            || is_read_start(&inner).is_some()
            || inner.is_kw("insert")
            || inner.is_kw("update")
            || inner.is_kw("delete")
            || inner.is_kw("merge");
        if plannable {
            Kind::ExplainPlain
        } else if inner.is_kw("execute") {
            Kind::Primary(Reason::SessionCommand)
        } else {
            Kind::Primary(Reason::Write("EXPLAIN"))
        }
    }

    /// One pass over all tokens of the statement.
    fn scan<'a>(&self, st: &mut Stmt<'a>, mode: ScanMode, out: &mut StmtOut<'a>) -> Features {
        let mut f = Features::default();
        // the three previous significant tokens, most recent first
        let mut p1: Option<Token<'a>> = None;
        let mut p2: Option<Token<'a>> = None;
        let mut p3: Option<Token<'a>> = None;
        while let Some(t) = st.next() {
            match t.kind {
                TokenKind::Ident => {
                    let after_dot = p1.is_some_and(|p| p.is_punct(b'.'));
                    match t.text.len() {
                        2 if mode.copy
                            && t.depth == 0
                            && f.copy_to_stdout.is_none()
                            && t.is_kw("to") =>
                        {
                            f.copy_to_stdout = Some(opt_kw(&st.peek(), "stdout"));
                        }
                        3 if mode.read && f.locking.is_none() && t.is_kw("for") => {
                            f.locking = locking_clause(st.clone());
                        }
                        8 | 17 | 19 | 20 if mode.read && f.primary_view.is_none() => {
                            f.primary_view = PRIMARY_VIEWS.iter().copied().find(|v| t.name_eq(v));
                        }
                        11 if t.name_eq("pg_settings") => {
                            if mode.read {
                                f.server_role = Some("pg_settings");
                            } else {
                                // `UPDATE pg_settings SET setting = ...` is a `set_config`
                                // (the view's rule): a session setting.
                                out.effects.insert(Effects::SETTINGS);
                            }
                        }
                        4 if mode.read && !after_dot && t.is_kw("into") => {
                            let after_dml =
                                p1.is_some_and(|p| p.is_kw("insert") || p.is_kw("merge"));
                            if !after_dml {
                                f.select_into = true;
                                let mut la = st.clone();
                                let mut n = la.next();
                                if opt_kw(&n, "local") || opt_kw(&n, "global") {
                                    n = la.next();
                                }
                                if opt_kw(&n, "temp") || opt_kw(&n, "temporary") {
                                    out.pin(PinReason::TempTable);
                                } else {
                                    // `INTO pg_temp.t`, or `pg_temp` first in `search_path`.
                                    out.effects.insert(Effects::STATE);
                                }
                            }
                        }
                        4 if mode.copy
                            && t.depth == 0
                            && f.copy_to_stdout.is_none()
                            && t.is_kw("from") =>
                        {
                            f.copy_to_stdout = Some(false);
                            if opt_kw(&st.peek(), "stdin") {
                                out.effects.insert(Effects::COPY_IN);
                            }
                        }
                        4 if mode.create
                            && t.depth == 0
                            && t.is_kw("drop")
                            && p1.is_some_and(|p| p.is_kw("commit"))
                            && p2.is_some_and(|p| p.is_kw("on")) =>
                        {
                            f.on_commit_drop = true;
                        }
                        5 | 6 if mode.read && !after_dot => {
                            let dml = if t.is_kw("insert") {
                                Some("INSERT")
                            } else if t.is_kw("delete") {
                                Some("DELETE")
                            } else if t.is_kw("merge") {
                                Some("MERGE")
                            } else if t.is_kw("update") {
                                let locking = p1.is_some_and(|p| p.is_kw("for"))
                                    || (p1.is_some_and(|p| p.is_kw("key"))
                                        && p2.is_some_and(|p| p.is_kw("no")));
                                if locking {
                                    None
                                } else {
                                    Some("UPDATE")
                                }
                            } else {
                                None
                            };
                            if let Some(d) = dml {
                                if t.depth == 0 {
                                    if f.dml_top.is_none() {
                                        f.dml_top = Some(d);
                                    }
                                } else {
                                    f.dml_nested = true;
                                }
                            }
                        }
                        _ => {}
                    }
                }
                // The same views named in double quotes (as exactly so spelt): their lengths
                // with the quotes, checked first (an ORM quotes every name).
                TokenKind::QuotedIdent if matches!(t.text.len(), 10 | 13 | 19 | 21 | 22) => {
                    if mode.read && f.primary_view.is_none() {
                        f.primary_view = PRIMARY_VIEWS.iter().copied().find(|v| t.name_eq(v));
                    }
                    if t.name_eq("pg_settings") {
                        if mode.read {
                            f.server_role = Some("pg_settings");
                        } else {
                            out.effects.insert(Effects::SETTINGS);
                        }
                    }
                }
                TokenKind::Punct => match t.text.as_bytes()[0] {
                    b'(' => {
                        if let Some(name) = p1.filter(|p| p.is_name()) {
                            let schema = if p2.is_some_and(|p| p.is_punct(b'.')) {
                                p3.filter(|p| p.is_name())
                            } else {
                                None
                            };
                            self.call(schema.as_ref(), &name, &mut f, out);
                            if mode.read && f.server_role.is_none() {
                                f.server_role = server_role_call(&name, st.peek().as_deref());
                            }
                        }
                    }
                    b'.' if mode.create && p1.as_ref().is_some_and(is_temp_schema) => {
                        f.pg_temp = true;
                    }
                    _ => {}
                },
                _ => {}
            }
            p3 = p2;
            p2 = p1;
            p1 = Some(t.tok);
        }
        f
    }

    /// A function call `schema.name(`.
    fn call(
        &self,
        schema: Option<&Token<'_>>,
        name: &Token<'_>,
        f: &mut Features,
        out: &mut StmtOut<'_>,
    ) {
        let mut buf = [0u8; 64];
        let Some(key) = call_key(name, &mut buf) else {
            return;
        };
        // Effects, whatever the routing lists say.
        match call_effect(key) {
            Some(CallEffect::Session(e)) => out.effects.insert(e),
            Some(CallEffect::Pin(p)) => out.pin(p),
            None => {}
        }
        if f.write_fn.is_some() {
            return;
        }
        let matches = |n: &FnName| -> bool {
            n.name == key
                && match (n.schema, schema) {
                    (None, _) => true,
                    (Some(s), Some(t)) => t.name_eq(s),
                    (Some(_), None) => false,
                }
        };
        if !self.read_functions.is_empty() && self.read_functions.iter().any(matches) {
            return;
        }
        if let Some(w) = is_builtin_write(key) {
            if super::names::ASKING_FUNCTIONS.contains(&w)
                && !self.write_functions.iter().any(matches)
            {
                // Runs on the primary for what it answers, writing nothing (unless the
                // configuration says it writes: a wrapper of the same name, say).
                f.server_role = f.server_role.or(Some(w));
            } else {
                f.write_fn = Some(w);
            }
            return;
        }
        if let Some(n) = self.write_functions.iter().find(|n| matches(n)) {
            f.write_fn = Some(n.name);
        }
    }
}

/// The route for a read given what the scan found.
fn read_outcome(f: &Features, k: &'static str) -> (Route, Reason) {
    if let Some(d) = f.dml_top {
        (Route::Primary, Reason::Write(d))
    } else if let Some(l) = f.locking {
        (Route::Primary, Reason::Locking(l))
    } else if f.select_into {
        (Route::Primary, Reason::SelectInto)
    } else if f.dml_nested {
        (Route::Primary, Reason::DataModifyingCte)
    } else if let Some(w) = f.write_fn {
        (Route::Primary, Reason::WritingFunction(w))
    } else if let Some(v) = f.primary_view {
        (Route::Primary, Reason::PrimaryView(v))
    } else if let Some(s) = f.server_role {
        (Route::Primary, Reason::ServerRole(s))
    } else {
        (Route::Replica, Reason::Read(k))
    }
}

/// After `FOR`: `UPDATE`, `NO KEY UPDATE`, `SHARE`, `KEY SHARE`.
fn locking_clause(mut la: Stmt<'_>) -> Option<&'static str> {
    let a = la.next()?;
    if a.is_kw("update") {
        return Some("FOR UPDATE");
    }
    if a.is_kw("share") {
        return Some("FOR SHARE");
    }
    if a.is_kw("no") {
        let b = la.next()?;
        let c = la.next()?;
        if b.is_kw("key") && c.is_kw("update") {
            return Some("FOR NO KEY UPDATE");
        }
        return None;
    }
    if a.is_kw("key") && opt_kw(&la.next(), "share") {
        return Some("FOR KEY SHARE");
    }
    None
}

fn is_false_value(t: &Token<'_>) -> bool {
    let v = match t.kind {
        TokenKind::String(_) => t.string_value().unwrap_or_default(),
        _ => std::borrow::Cow::Borrowed(t.text),
    };
    ["false", "off", "0", "no"]
        .iter()
        .any(|x| v.trim().eq_ignore_ascii_case(x))
}

/// A `switchyard:primary` / `switchyard:replica` hint among the comments before the first
/// significant token.
fn leading_hint(sql: &str) -> Option<Route> {
    let mut hint = None;
    for t in super::lexer::Lexer::new(sql) {
        let body = match t.kind {
            TokenKind::BlockComment => &t.text[2..t.text.len() - 2],
            TokenKind::LineComment => &t.text[2..],
            _ => break,
        };
        if hint.is_none() {
            hint = parse_hint(body);
        }
    }
    hint
}

fn parse_hint(body: &str) -> Option<Route> {
    let b = body.trim();
    let prefix = "switchyard";
    if b.len() <= prefix.len()
        || !b
            .get(..prefix.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
    {
        return None;
    }
    let rest = b[prefix.len()..].trim_start();
    let rest = rest.strip_prefix(':')?.trim();
    if rest.eq_ignore_ascii_case("primary") {
        Some(Route::Primary)
    } else if rest.eq_ignore_ascii_case("replica") {
        Some(Route::Replica)
    } else {
        None
    }
}

/// `pg_temp`, or a session's own temporary schema by its real name (`pg_temp_3`).
fn is_temp_schema(t: &Token<'_>) -> bool {
    t.ident_value().is_some_and(|v| {
        let v = v.to_ascii_lowercase();
        v == "pg_temp"
            || v.strip_prefix("pg_temp_")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })
}
