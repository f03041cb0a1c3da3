//! Function names in SQL text, for routing by what the database says of its own functions:
//! which functions a statement calls, which functions a `CREATE FUNCTION` or `ALTER
//! FUNCTION` makes volatile, and whether a function's body may change session settings.

use super::lexer::{Lexer, StrKind, Token, TokenKind};
use super::names::{call_effect, CallEffect};
use super::PinReason;

/// Whether `sql` calls a function whose name (as PostgreSQL resolves it: unquoted names
/// folded to lower case; the schema is ignored) `listed` accepts: a name followed by `(`.
/// (Keywords and type names followed by `(` are offered too; no function is named so.)
pub fn calls_any(sql: &str, mut listed: impl FnMut(&str) -> bool) -> bool {
    let mut prev: Option<Token<'_>> = None;
    for t in Lexer::new(sql).filter(|t| !t.is_comment()) {
        if t.is_punct(b'(') {
            if let Some(name) = prev.as_ref().and_then(Token::ident_value) {
                if listed(&name) {
                    return true;
                }
            }
        }
        prev = Some(t);
    }
    false
}

/// The names of the functions `body` (a function's source) calls, each once (as
/// [`calls_any`] sees calls).
pub fn called_names(body: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    calls_any(body, |n| {
        if !names.iter().any(|m| m == n) {
            names.push(n.to_owned());
        }
        false
    });
    names
}

/// A function a `CREATE FUNCTION` or `ALTER FUNCTION` makes volatile.
#[derive(Debug, PartialEq, Eq)]
pub struct Defined {
    /// Its name as PostgreSQL resolves it, without the schema.
    pub name: String,
    /// The body a `CREATE FUNCTION` gives it (`AS '...'`, its first string for C functions;
    /// a SQL-standard body, `RETURN ...` or `BEGIN ATOMIC ... END`, as written).
    pub body: Option<String>,
}

/// The functions `sql` creates or alters as volatile: `CREATE [OR REPLACE] FUNCTION name`
/// (or `PROCEDURE`) without `IMMUTABLE` or `STABLE` (volatile is the default), and `ALTER
/// FUNCTION name ... VOLATILE`.
pub fn volatile_functions_defined(sql: &str) -> Vec<Defined> {
    let toks: Vec<Token<'_>> = Lexer::new(sql).filter(|t| !t.is_comment()).collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let starts = (toks[i].is_kw("function") || toks[i].is_kw("procedure"))
            && i > 0
            && (toks[i - 1].is_kw("create")
                || toks[i - 1].is_kw("replace")
                || toks[i - 1].is_kw("alter"));
        if !starts {
            i += 1;
            continue;
        }
        let alter = toks[i - 1].is_kw("alter");
        // The name: the last part of `a.b.c`.
        let mut j = i + 1;
        let mut name = None;
        while let Some(t) = toks.get(j) {
            match t.ident_value() {
                Some(v) if t.is_name() => name = Some(v.into_owned()),
                _ => break,
            }
            if toks.get(j + 1).is_some_and(|t| t.is_punct(b'.')) {
                j += 2;
            } else {
                j += 1;
                break;
            }
        }
        // The rest of the statement, outside parentheses (a body is one string token).
        let mut depth = 0usize;
        let mut volatile = !alter;
        let mut body = None;
        while let Some(t) = toks.get(j) {
            if t.is_punct(b'(') {
                depth += 1;
            } else if t.is_punct(b')') {
                depth = depth.saturating_sub(1);
            } else if depth == 0 {
                if t.is_punct(b';') {
                    break;
                }
                if t.is_kw("immutable") || t.is_kw("stable") {
                    volatile = false;
                } else if t.is_kw("volatile") {
                    volatile = true;
                } else if body.is_none() && j > 0 && toks[j - 1].is_kw("as") {
                    body = t.string_value().map(|b| b.into_owned());
                } else if body.is_none()
                    && (t.is_kw("return")
                        || (t.is_kw("begin") && toks.get(j + 1).is_some_and(|n| n.is_kw("atomic"))))
                {
                    // A SQL-standard body (PostgreSQL 14), kept as written: to the end of the
                    // text (a `BEGIN ATOMIC` body holds `;`s; more than the body is only more
                    // to look at).
                    body = Some(sql[t.offset..].to_owned());
                }
            }
            j += 1;
        }
        if let Some(name) = name.filter(|_| volatile) {
            out.push(Defined { name, body });
        }
        i = j;
    }
    out
}

/// Whether a function body (`pg_proc.prosrc` of a SQL or PL/pgSQL function) may change a
/// session setting when it runs: it calls `set_config(`, or has a `SET` or `RESET`
/// statement other than `SET LOCAL`, `SET TRANSACTION` and `SET CONSTRAINTS` (one that
/// begins the body, follows `;` or begins a block or branch), also as the text of a string
/// (`EXECUTE 'SET ...'`, and the head of one whose name is put in later: `'SET %I = %L'`,
/// `'SET '`), or it runs a statement that is not one constant string (see
/// [`executes_dynamic`]). A setting made so outlives the call, like a `SET` sent by the
/// client.
pub fn body_sets_settings(body: &str) -> bool {
    sets_settings(body, BODY)
}

/// Whether a function body (a `DO` block's) runs `SET LOCAL`: the settings of the rest of
/// its transaction may differ from the session's.
pub fn body_sets_local_settings(body: &str) -> bool {
    let toks: Vec<Token<'_>> = Lexer::new(body).filter(|t| !t.is_comment()).collect();
    toks.windows(2)
        .enumerate()
        .any(|(i, w)| w[0].is_kw("set") && w[1].is_kw("local") && starts_statement(&toks, i))
}

/// Whether a function body may leave state in the server session that outlives its
/// transaction and cannot follow a client to another connection: it creates a temporary
/// object, takes a session-level advisory lock, or runs `LISTEN` (also in a constant
/// `EXECUTE '...'`), or it runs a statement that is not one constant string (see
/// [`executes_dynamic`]). Whether it did is checked after the call's transaction.
pub fn body_keeps_state(body: &str) -> bool {
    keeps_state(body, BODY)
}

/// The pin a function body (a function's source, a `DO` block's) makes when it runs: it calls
/// `dblink_connect[_u]` (a named dblink connection, [`PinReason::Dblink`]), `pg_backup_start`
/// or `pg_start_backup` (a non-exclusive backup) or `pg_replication_origin_session_setup`
/// ([`PinReason::ServerSession`]), also in a string (`EXECUTE 'SELECT dblink_connect(...)'`,
/// the template of a `format`). Such state lives in the server session, `DISCARD ALL` does
/// not end it and nothing after the transaction looks for it, so the body counts as the
/// client's own call of the function would (see [`super::names::call_effect`]): its caller is
/// pinned at once, and its connection is closed, not reset, when it leaves. (A name the body
/// computes, `EXECUTE 'SELECT dblink_' || f || '(...)'`, is not seen; advisory locks, which
/// `DISCARD ALL` ends and the state check finds, are [`body_keeps_state`]'s.)
pub fn body_pin(body: &str) -> Option<PinReason> {
    pin_of(body, BODY)
}

/// The depth [`sets_settings`] and [`keeps_state`] are given for a body (a function's source,
/// a `DO` block's); each string they look into is looked at one level down, as the text of a
/// statement (SQL, where `EXECUTE name` runs a prepared statement).
const BODY: u8 = 2;

/// Whether the token at `i` begins a statement of a body: it is the first, or follows `;` or
/// a word that begins a block, branch or loop.
fn starts_statement(toks: &[Token<'_>], i: usize) -> bool {
    i == 0 || {
        let p = &toks[i - 1];
        p.is_punct(b';') || ["begin", "then", "else", "loop"].iter().any(|k| p.is_kw(k))
    }
}

/// Whether a body (`toks`, without comments) has an `EXECUTE` whose statement is not one
/// constant string: PL/pgSQL's `EXECUTE` (a statement of its own, or after `RETURN QUERY`,
/// `FOR ... IN` or `OPEN ... FOR`) of `format(...)`, a concatenation, a variable, a call.
/// Which statement that runs is known only when it runs (`'SE' || 'T ROLE x'`), so it may set
/// any setting or keep any state. One constant string (`EXECUTE 'SELECT 1' INTO x USING y`) is
/// not counted here: the string is looked at as the statement it is. (In a SQL function's
/// body, `EXECUTE name` runs a prepared statement, which may call `set_config` too: it counts
/// as well. `GRANT EXECUTE ON`, a trigger's `EXECUTE FUNCTION` are at no such place.)
fn executes_dynamic(toks: &[Token<'_>]) -> bool {
    toks.iter().enumerate().any(|(i, t)| {
        let placed = || {
            starts_statement(toks, i) || ["query", "in", "for"].iter().any(|k| toks[i - 1].is_kw(k))
        };
        if !(t.is_kw("execute") && placed()) {
            return false;
        }
        match toks.get(i + 1) {
            None => false,
            // (`REVOKE GRANT OPTION FOR EXECUTE ON FUNCTION ...`.)
            Some(n) if n.is_kw("on") => false,
            Some(n) if read_as_written(n) => !toks.get(i + 2).is_none_or(|e| {
                e.is_punct(b';') || ["into", "using", "loop"].iter().any(|k| e.is_kw(k))
            }),
            Some(_) => true,
        }
    })
}

/// Whether `t` is a string constant whose value [`Token::string_value`] gives as the server
/// reads it: not `U&'...'`, nor `E'...'` with an octal, hex or Unicode escape (which it does
/// not decode: `E'\123ET ROLE x'` is `SET ROLE x`).
fn read_as_written(t: &Token<'_>) -> bool {
    match t.kind {
        TokenKind::String(StrKind::Standard | StrKind::Dollar | StrKind::National) => true,
        TokenKind::String(StrKind::Escape) => !t.text.as_bytes().windows(2).any(|w| {
            w[0] == b'\\' && (w[1].is_ascii_digit() || matches!(w[1], b'x' | b'u' | b'U'))
        }),
        _ => false,
    }
}

/// Whether the text after a `SET` or `RESET` that begins a string (`rest`, its next token not
/// a name) is the head of a statement whose setting's name is put in later: nothing but space
/// (`'SET ' || quote_ident(k)`), a `format` placeholder (`'SET %I = %L'`, `'SET %1$s'`) or an
/// open quote (`'SET "' || k`). A bare word (`'reset'`, a value) or a message (`'Set % rows'`,
/// `'Set-up'`) is not one.
fn name_put_in_later(rest: &str) -> bool {
    let r = rest.trim_start();
    (r.is_empty() && !rest.is_empty())
        || r.starts_with('"')
        || r.strip_prefix('%')
            .is_some_and(|f| f.starts_with(|c: char| c.is_ascii_alphanumeric()))
}

fn keeps_state(body: &str, depth: u8) -> bool {
    let toks: Vec<Token<'_>> = Lexer::new(body).filter(|t| !t.is_comment()).collect();
    if depth == BODY && executes_dynamic(&toks) {
        return true;
    }
    toks.iter().enumerate().any(|(i, t)| {
        let next = toks.get(i + 1);
        let call = next.is_some_and(|n| n.is_punct(b'('));
        if t.is_kw("temp") || t.is_kw("temporary") || t.is_kw("listen") {
            return true;
        }
        // A temporary schema named (`CREATE TABLE pg_temp.t`, `SET search_path = pg_temp`).
        if t.ident_value().is_some_and(|v| {
            let v = v.to_ascii_lowercase();
            v == "pg_temp" || v.starts_with("pg_temp_")
        }) {
            return true;
        }
        if call && SESSION_LOCKS.iter().any(|f| t.is_kw(f)) {
            return true;
        }
        // (Only a string that reads as a statement: `EXECUTE 'CREATE TEMP TABLE ...'`.)
        depth > 0
            && t.string_value().is_some_and(|v| {
                let head = v.trim_start().to_ascii_lowercase();
                ["create", "listen", "select"]
                    .iter()
                    .any(|k| head.starts_with(k))
                    && keeps_state(&v, depth - 1)
            })
    })
}

/// The functions that take a session-level advisory lock (one that outlives the transaction).
const SESSION_LOCKS: [&str; 4] = [
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
];

/// What the body of a function declared `STABLE` or `IMMUTABLE` may do to the session:
/// (whether it may change settings, whether it may leave state). PostgreSQL runs such a
/// function's statements read-only (a `SET`, `LISTEN` or `CREATE TEMP TABLE` in it fails),
/// but they may call functions: `set_config(` changes a setting, and a session advisory lock
/// outlives the call, also when called in a constant string the body executes. (A statement
/// it computes, `EXECUTE format(...)`, is not looked into, unlike a volatile function's: a
/// query such a function builds is most often a read, which would otherwise take it off the
/// replicas.)
pub fn stable_body_effects(body: &str) -> (bool, bool) {
    let mut found = (false, false);
    stable_effects(body, BODY, &mut found);
    found
}

fn stable_effects(body: &str, depth: u8, found: &mut (bool, bool)) {
    let toks: Vec<Token<'_>> = Lexer::new(body).filter(|t| !t.is_comment()).collect();
    for (i, t) in toks.iter().enumerate() {
        if toks.get(i + 1).is_some_and(|n| n.is_punct(b'(')) {
            found.0 |= t.is_kw("set_config");
            found.1 |= SESSION_LOCKS.iter().any(|f| t.is_kw(f));
        } else if depth > 0 {
            // (Only a string that reads as a query: `EXECUTE 'SELECT pg_advisory_lock(1)'`.)
            if let Some(v) = t.string_value() {
                let head = v.trim_start().to_ascii_lowercase();
                if head.starts_with("select") || head.starts_with("with") {
                    stable_effects(&v, depth - 1, found);
                }
            }
        }
    }
}

fn pin_of(body: &str, depth: u8) -> Option<PinReason> {
    let toks: Vec<Token<'_>> = Lexer::new(body).filter(|t| !t.is_comment()).collect();
    toks.iter().enumerate().find_map(|(i, t)| {
        if toks.get(i + 1).is_some_and(|n| n.is_punct(b'(')) {
            let pin = t.ident_value().and_then(|n| match call_effect(&n) {
                Some(CallEffect::Pin(p @ (PinReason::Dblink | PinReason::ServerSession))) => {
                    Some(p)
                }
                _ => None,
            });
            if pin.is_some() {
                return pin;
            }
        }
        // (Only a string that names one is looked into as a statement.)
        let v = t.string_value().filter(|_| depth > 0)?;
        let lower = v.to_ascii_lowercase();
        [
            "dblink_connect",
            "start_backup",
            "backup_start",
            "origin_session_setup",
        ]
        .iter()
        .any(|n| lower.contains(n))
        .then(|| pin_of(&v, depth - 1))
        .flatten()
    })
}

fn sets_settings(body: &str, depth: u8) -> bool {
    let toks: Vec<Token<'_>> = Lexer::new(body).filter(|t| !t.is_comment()).collect();
    if depth == BODY && executes_dynamic(&toks) {
        return true;
    }
    toks.iter().enumerate().any(|(i, t)| {
        let next = toks.get(i + 1);
        if t.is_kw("set_config") && next.is_some_and(|n| n.is_punct(b'(')) {
            return true;
        }
        if (t.is_kw("set") || t.is_kw("reset")) && starts_statement(&toks, i) {
            return match next {
                Some(n) if n.is_name() => {
                    !(t.is_kw("set")
                        && (n.is_kw("local") || n.is_kw("transaction") || n.is_kw("constraints")))
                }
                // (In a string only: a body's own `SET` always names its setting.)
                _ => depth < BODY && name_put_in_later(&body[t.end()..]),
            };
        }
        depth > 0
            && t.string_value().is_some_and(|v| {
                let v = v.trim_start().to_ascii_lowercase();
                (v.starts_with("set") || v.starts_with("reset") || v.contains("set_config"))
                    && sets_settings(&v, depth - 1)
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A STABLE function's statements are read-only: only its calls of `set_config` and of
    /// the session advisory locks (also in a constant string it executes) change the session;
    /// words such as `temp`, `SET` or a dynamic `EXECUTE` are no sign of it.
    #[test]
    fn stable_bodies_change_the_session_only_through_calls() {
        for (body, want) in [
            ("SELECT 1 FROM pg_advisory_lock(42)", (false, true)),
            (
                "BEGIN PERFORM pg_catalog.PG_TRY_ADVISORY_LOCK_SHARED(1, 2); END",
                (false, true),
            ),
            ("SELECT set_config('app.x', $1, false)", (true, false)),
            (
                "BEGIN EXECUTE 'SELECT pg_advisory_lock(7)'; END",
                (false, true),
            ),
            (
                "BEGIN EXECUTE ' select set_config(''a.b'', ''1'', false)'; END",
                (true, false),
            ),
            ("SELECT pg_advisory_xact_lock(1)", (false, false)),
            ("SELECT temp FROM readings WHERE city = $1", (false, false)),
            (
                "BEGIN RETURN QUERY EXECUTE format('SELECT * FROM %I', t); END",
                (false, false),
            ),
            (
                "-- pg_advisory_lock(1)\nSELECT 'set_config(x)'",
                (false, false),
            ),
        ] {
            assert_eq!(stable_body_effects(body), want, "{body}");
        }
    }

    #[test]
    fn calls_are_found_by_resolved_name() {
        let set = ["f", "Mixed"];
        let listed = |n: &str| set.contains(&n);
        assert!(calls_any("SELECT f(1)", listed));
        assert!(calls_any("SELECT s.F (1)", listed));
        assert!(calls_any("SELECT \"Mixed\"()", listed));
        assert!(!calls_any("SELECT mixed()", listed), "unquoted: folded");
        assert!(!calls_any("SELECT f", listed), "not a call");
        assert!(!calls_any("SELECT 'f(1)', g(2) /* f() */", listed));
        assert!(calls_any(
            "SELECT * FROM t WHERE x = ANY(SELECT f(y) FROM u)",
            listed
        ));
    }

    #[test]
    fn volatile_definitions_are_found() {
        let v = volatile_functions_defined;
        let v = |sql: &str| -> Vec<String> { v(sql).into_iter().map(|d| d.name).collect() };
        assert_eq!(
            v("CREATE FUNCTION set_ttdummy(int4) RETURNS int4 AS '/x/regress.so' LANGUAGE C STRICT"),
            ["set_ttdummy"]
        );
        assert_eq!(
            v("create or replace function s.\"Tenant\"(x int) returns void language sql as $$ select set_config('a.b', x::text, false) $$"),
            ["Tenant"]
        );
        assert!(
            v("CREATE FUNCTION f(int) RETURNS int IMMUTABLE LANGUAGE sql AS 'select $1'")
                .is_empty()
        );
        assert!(v(
            "CREATE FUNCTION f() RETURNS TABLE (stable int) STABLE LANGUAGE sql AS 'select 1'"
        )
        .is_empty());
        assert!(
            v("CREATE FUNCTION f() RETURNS int LANGUAGE sql STABLE AS $$ select 1 $$").is_empty()
        );
        assert_eq!(v("ALTER FUNCTION f(int) VOLATILE"), ["f"]);
        assert!(v("ALTER FUNCTION f(int) STABLE").is_empty());
        assert!(v("ALTER FUNCTION f(int) OWNER TO x").is_empty());
        assert_eq!(
            v("CREATE FUNCTION a() RETURNS int STABLE LANGUAGE sql AS 'select 1'; CREATE FUNCTION b() RETURNS int LANGUAGE sql AS 'select 1'"),
            ["b"]
        );
        assert!(v("SELECT 'create function f()'").is_empty());
        assert!(v("CREATE TABLE function_t (a int)").is_empty());
    }

    #[test]
    fn bodies_of_definitions_are_kept() {
        assert_eq!(
            volatile_functions_defined(
                "CREATE FUNCTION t(x int) RETURNS void LANGUAGE sql AS $b$ SELECT 1 $b$ STRICT"
            ),
            [Defined {
                name: "t".into(),
                body: Some(" SELECT 1 ".into())
            }]
        );
        // SQL-standard bodies, as written.
        assert_eq!(
            volatile_functions_defined(
                "CREATE FUNCTION s(t text) RETURNS text LANGUAGE sql RETURN set_config('a.b', t, false)"
            ),
            [Defined {
                name: "s".into(),
                body: Some("RETURN set_config('a.b', t, false)".into())
            }]
        );
        assert_eq!(
            volatile_functions_defined(
                "CREATE PROCEDURE p() LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END"
            ),
            [Defined {
                name: "p".into(),
                body: Some("BEGIN ATOMIC SELECT 1; SELECT 2; END".into())
            }]
        );
        assert_eq!(
            volatile_functions_defined("ALTER FUNCTION t(int) VOLATILE"),
            [Defined {
                name: "t".into(),
                body: None
            }]
        );
    }

    #[test]
    fn bodies_that_may_keep_session_state_are_found() {
        for body in [
            "BEGIN CREATE TEMP TABLE t (a int); END",
            "CREATE TEMPORARY TABLE IF NOT EXISTS t AS SELECT 1",
            "BEGIN PERFORM pg_advisory_lock(42); END",
            "SELECT pg_catalog.pg_try_advisory_lock_shared(1, 2)",
            "BEGIN LISTEN jobs; END",
            "BEGIN EXECUTE 'LISTEN ' || quote_ident(ch); END",
            "BEGIN CREATE TABLE pg_temp.t (a int); END",
            "SELECT 1 INTO pg_temp_4.t",
        ] {
            assert!(body_keeps_state(body), "{body}");
        }
        for body in [
            "SELECT 1",
            "BEGIN PERFORM pg_advisory_xact_lock(42); UPDATE t SET a = 1; END",
            "BEGIN PERFORM pg_notify('jobs', 'x'); END",
            "SELECT 'a temporary note' -- temp",
        ] {
            assert!(!body_keeps_state(body), "{body}");
        }
    }

    /// A body that calls a function pinning its caller for good (as the client's own call
    /// would), with the reason; also in a string it runs or builds a statement from.
    #[test]
    fn bodies_that_pin_their_callers_are_found() {
        use PinReason::*;
        for (body, pin) in [
            ("SELECT dblink_connect('c2', 'dbname=x')", Dblink),
            (
                "BEGIN PERFORM public.dblink_connect_u('c', 'dbname=x'); END",
                Dblink,
            ),
            (
                "BEGIN RETURN pg_backup_start('x', true); END",
                ServerSession,
            ),
            (
                "SELECT pg_catalog.PG_START_BACKUP('x', false, false)",
                ServerSession,
            ),
            (
                "BEGIN PERFORM pg_replication_origin_session_setup(o); END",
                ServerSession,
            ),
            ("RETURN dblink_connect('c', $1)", Dblink),
            (
                "BEGIN EXECUTE 'SELECT dblink_connect($1, $2)' USING n, c; END",
                Dblink,
            ),
            (
                "BEGIN EXECUTE format('SELECT dblink_connect(%L, %L)', n, c); END",
                Dblink,
            ),
            (
                "BEGIN EXECUTE $x$DO $y$BEGIN PERFORM pg_backup_start('l'); END$y$$x$; END",
                ServerSession,
            ),
        ] {
            assert_eq!(body_pin(body), Some(pin), "{body}");
        }
        for body in [
            "SELECT 1",
            "BEGIN PERFORM dblink_exec('c', 'SELECT 1'); PERFORM dblink_disconnect('c'); END",
            "SELECT dblink('dbname=x', 'SELECT 1')",
            "BEGIN PERFORM pg_backup_stop(); PERFORM pg_replication_origin_session_reset(); END",
            "SELECT pg_advisory_lock(1)",
            "SELECT dblink_connect -- dblink_connect('c', 'x')",
            "BEGIN RAISE NOTICE 'call dblink_connect first'; END",
            // (A name computed as the body runs is not seen.)
            "BEGIN EXECUTE 'SELECT dblink_' || f || '($1, $2)'; END",
        ] {
            assert_eq!(body_pin(body), None, "{body}");
        }
    }

    #[test]
    fn bodies_that_change_settings_are_found() {
        for body in [
            "SELECT set_config('app.tenant', $1::text, false)",
            "BEGIN PERFORM pg_catalog.set_config('app.tenant', x::text, false); END",
            "SET search_path = a, b; SELECT 1",
            "BEGIN\n  SET work_mem = '8MB';\nEND",
            "BEGIN IF x THEN RESET app.tenant; END IF; END",
            "BEGIN EXECUTE 'SET app.tenant = ' || quote_literal(x); END",
            "BEGIN EXECUTE format($f$select set_config(%L, %L, false)$f$, k, v); END",
            "DECLARE n int; BEGIN FOR i IN 1..3 LOOP SET SESSION app.n = 1; END LOOP; END",
        ] {
            assert!(body_sets_settings(body), "{body}");
        }
        for body in [
            "SELECT 1",
            "UPDATE t SET x = 1 WHERE y = 2",
            "BEGIN UPDATE t\n SET x = 1; INSERT INTO u VALUES (1) ON CONFLICT (a) DO UPDATE SET b = 2; END",
            "BEGIN SET LOCAL work_mem = '8MB'; SET TRANSACTION READ ONLY; SET CONSTRAINTS ALL DEFERRED; END",
            "SELECT 'no set_config here', 'reset', 'set' -- set_config(",
            "set_limit",
            "BEGIN EXECUTE 'UPDATE t SET x = 1'; END",
        ] {
            assert!(!body_sets_settings(body), "{body}");
        }
    }

    /// An `EXECUTE` of anything but one constant string may run any statement: it may change
    /// settings and keep state. One constant string is looked at as the statement it is.
    #[test]
    fn dynamic_execute_may_change_settings_and_keep_state() {
        for body in [
            "BEGIN EXECUTE format('SET %I = %L', k, v); END",
            "DECLARE r text := 'x'; BEGIN EXECUTE format('SET %s %s', 'ROLE', r); END",
            "begin execute 'SET ' || quote_ident(k) || ' = ' || quote_literal(v); end",
            "BEGIN EXECUTE 'SE' || 'T ROLE x'; END",
            "DECLARE stmt text; BEGIN stmt := current_setting('app.stmt'); EXECUTE stmt; END",
            "BEGIN IF a THEN EXECUTE q; ELSE EXECUTE f(a) INTO b; END IF; END",
            "BEGIN LOOP EXECUTE $1; EXIT; END LOOP; END",
            "BEGIN RETURN QUERY EXECUTE format('SELECT * FROM %I', t); END",
            "BEGIN FOR r IN EXECUTE q LOOP NULL; END LOOP; END",
            "BEGIN OPEN c FOR EXECUTE q; END",
            "BEGIN EXECUTE ('SET ROLE x'); END",
            "BEGIN EXECUTE 'SET ROLE ' 'x'; END",
            "BEGIN EXECUTE E'\\123ET ROLE x'; END",
            "BEGIN EXECUTE U&'\\0053ET ROLE x'; END",
            "BEGIN EXECUTE format('CREATE TEMP TABLE %I (a int)', t); END",
            "BEGIN EXECUTE 'LIS' || 'TEN ' || ch; END",
            "BEGIN EXECUTE format('SELECT pg_advisory_%s(%s)', 'lock', k); END",
            // (A SQL function running a prepared statement, which may call set_config.)
            "EXECUTE p(1)",
        ] {
            assert!(body_sets_settings(body), "{body}");
            assert!(body_keeps_state(body), "{body}");
        }
        // The head of a SET whose name is put in later, wherever the string goes.
        for body in [
            "DECLARE s text := format('SET %I = %L', k, v); BEGIN PERFORM run(s); END",
            "BEGIN PERFORM run('SET ' || k || ' = 1'); END",
            "BEGIN PERFORM run('RESET %1$I'); END",
            "BEGIN PERFORM run('SET \"' || k || '\" = 1'); END",
        ] {
            assert!(body_sets_settings(body), "{body}");
        }
        for body in [
            "BEGIN EXECUTE 'SELECT 1'; END",
            "BEGIN EXECUTE 'SELECT count(*) FROM t' INTO n USING x; END",
            "BEGIN RETURN QUERY EXECUTE 'select a, b from t where c = $1' USING c; END",
            "BEGIN FOR r IN EXECUTE $q$select 1$q$ LOOP NULL; END LOOP; END",
            "BEGIN EXECUTE E'SELECT \\'a\\''; END",
            "SELECT a FROM t WHERE b = $1",
            "BEGIN UPDATE t SET state = 'reset'; RAISE NOTICE 'Set % rows', n; END",
            "BEGIN RAISE NOTICE 'set'; RAISE NOTICE 'Set-up done'; END",
            "BEGIN GRANT EXECUTE ON FUNCTION f() TO x; END",
            "REVOKE GRANT OPTION FOR EXECUTE ON FUNCTION f() FROM x",
            "BEGIN CREATE TRIGGER t AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION f(); END",
            "SELECT execute FROM t",
        ] {
            assert!(!body_sets_settings(body), "{body}");
            assert!(!body_keeps_state(body), "{body}");
        }
    }
}
