//! Session settings that follow a client across server connections in transaction pooling.
//!
//! A client's *desired* settings are its startup parameters overlaid with the settings it
//! changed in its session (read back from the server after any statement that may change them,
//! so rollbacks, failed SETs, `RESET ALL` and `DISCARD ALL` are all accounted for exactly).
//! Each server connection remembers what is *applied* on it; before a client's request runs on
//! a connection whose applied settings differ, the proxy sends the difference as one query.

use std::collections::BTreeMap;
use std::sync::Arc;

/// Setting name (lower case) → value, as PostgreSQL accepts it in `set_config`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Settings(pub BTreeMap<String, String>);

/// Shares one allocation among equal settings, so the per-transaction check "does this
/// connection carry this client's settings?" is usually a pointer comparison.
#[derive(Default)]
pub struct Interner {
    set: std::sync::Mutex<std::collections::HashSet<Arc<Settings>>>,
}

/// Distinct settings kept before the interner starts over (equality still works after).
const INTERNER_MAX: usize = 10_000;

impl Interner {
    /// The shared copy of `s`.
    pub fn intern(&self, s: Settings) -> Arc<Settings> {
        let mut set = self.set.lock().expect("interner");
        if let Some(a) = set.get(&s) {
            return a.clone();
        }
        if set.len() >= INTERNER_MAX {
            set.clear();
        }
        let a = Arc::new(s);
        set.insert(a.clone());
        a
    }
}

/// Query that reads back the settings a session changed. Custom (dotted) settings are
/// placeholders that `pg_settings` does not list; they are read by name, and one that exists
/// with an empty value (after `RESET`, which creates it) is kept: `SHOW` of it answers '' where
/// an undefined one fails, so it is created on the client's next connections too. Values come back as
/// the hex of their UTF-8 bytes, whatever the session's `client_encoding` (the server
/// connection speaks the client's, which may be LATIN1): see [`Settings::from_rows`].
///
/// The session's identity comes back too when it changed: `role` when not `none`, and
/// `session_authorization` when not `user`, the user the connection logged in as. Neither
/// can move to another connection (a change pins the client, see [`IDENTITY`]); a change
/// made some way the proxy does not parse as `SET ROLE` (`set_config('role', $1, false)`, a
/// function's body) is found here.
///
/// With `state`, rows `(`[`STATE_ROW`]`, reason)` say the session keeps state that cannot move
/// (a temporary object, a session advisory lock, a `LISTEN`), for [`crate::sql::PinReason`]
/// labels `temp_table`, `advisory_lock` and `listen`.
pub fn capture_sql(custom: &std::collections::BTreeSet<String>, user: &str, state: bool) -> String {
    let mut sql = format!(
        "SELECT name, pg_catalog.encode(pg_catalog.convert_to(setting, 'UTF8'), 'hex') \
         FROM pg_catalog.pg_settings WHERE source OPERATOR(pg_catalog.=) 'session' \
         UNION ALL SELECT n, pg_catalog.encode(pg_catalog.convert_to(\
         pg_catalog.current_setting(n), 'UTF8'), 'hex') \
         FROM (VALUES ('role'::pg_catalog.text, 'none'::pg_catalog.text), \
         ('session_authorization', {})) AS i(n, initial) \
         WHERE pg_catalog.current_setting(n) OPERATOR(pg_catalog.<>) initial",
        literal(user)
    );
    if !custom.is_empty() {
        let names: Vec<String> = custom.iter().map(|n| literal(n)).collect();
        sql.push_str(&format!(
            " UNION ALL SELECT n, pg_catalog.encode(pg_catalog.convert_to(\
             pg_catalog.current_setting(n, true), 'UTF8'), 'hex') \
             FROM pg_catalog.unnest(ARRAY[{}]::pg_catalog.text[]) AS n \
             WHERE pg_catalog.current_setting(n, true) IS NOT NULL",
            names.join(", ")
        ));
    }
    if state {
        sql.push_str(
            " UNION ALL SELECT '_sy.state', 'temp_table' WHERE EXISTS (SELECT FROM \
             pg_catalog.pg_class WHERE relnamespace OPERATOR(pg_catalog.=) \
             pg_catalog.pg_my_temp_schema()) \
             UNION ALL SELECT '_sy.state', 'advisory_lock' WHERE EXISTS (SELECT FROM \
             pg_catalog.pg_locks WHERE locktype OPERATOR(pg_catalog.=) 'advisory' \
             AND pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid()) \
             UNION ALL SELECT '_sy.state', 'listen' WHERE EXISTS \
             (SELECT FROM pg_catalog.pg_listening_channels())",
        );
    }
    sql
}

/// The name of [`capture_sql`]'s rows that report session state.
pub const STATE_ROW: &str = "_sy.state";

/// A query that puts back startup values that a `RESET` (or `RESET ALL`, `DISCARD ALL`,
/// `SET ... TO DEFAULT`) just replaced with the server connection's defaults: on a direct
/// connection those return to the startup values, and on a pooled one they must too, at once,
/// not only when the transaction ends. Settings the session set itself are left alone.
pub fn restore_sql(startup: &Settings) -> Option<String> {
    if startup.0.is_empty() {
        return None;
    }
    let rows: Vec<String> = startup
        .0
        .iter()
        .map(|(k, v)| format!("({}, {})", literal(k), literal(v)))
        .collect();
    Some(format!(
        "SELECT pg_catalog.set_config(s.k, s.v, false) FROM (VALUES {}) AS s(k, v) \
         JOIN pg_catalog.pg_settings p ON pg_catalog.lower(p.name) OPERATOR(pg_catalog.=) s.k \
         WHERE p.source OPERATOR(pg_catalog.<>) 'session'",
        rows.join(", ")
    ))
}

/// Whether a statement that changes settings may also put one back to its default (`RESET`,
/// `DISCARD`, `SET ... TO DEFAULT`, `SET TIME ZONE LOCAL`): only then does [`restore_sql`]
/// run after it. (It is a query: in a transaction block it would take the transaction's
/// snapshot, after which `SET TRANSACTION ISOLATION LEVEL` fails.)
pub fn may_reset(sql: &str) -> bool {
    let mut after_zone = false;
    crate::sql::Lexer::new(sql)
        .filter(|t| !t.is_comment())
        .any(|t| {
            let resets = t.is_kw("reset")
                || t.is_kw("discard")
                || t.is_kw("default")
                || (t.is_kw("local") && after_zone)
                // (In a string: a DO block's body, a dynamic EXECUTE.)
                || t.string_value().is_some_and(|v| may_reset(&v));
            after_zone = t.is_kw("zone");
            resets
        })
}

/// The custom setting names a function body (SQL or PL/pgSQL), or a statement that may
/// change settings, sets or resets: as [`custom_names`] finds them in it and in its string
/// literals (a `DO` block's body, `EXECUTE 'SET app.x = ' ...`).
pub fn body_custom_names(body: &str) -> Vec<String> {
    let mut names = custom_names(body);
    for t in crate::sql::Lexer::new(body) {
        if let Some(v) = t.string_value() {
            for n in custom_names(&v) {
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
    }
    names
}

/// Dotted (custom) setting names a statement sets or resets: `SET [SESSION|LOCAL] a.b ...`,
/// `RESET a.b`, `set_config('a.b', ...)`. Lower-cased; other names are tracked through
/// `pg_settings`. (Names switchyard cannot track are left out: see
/// [`computes_setting_name`].)
pub fn custom_names(sql: &str) -> Vec<String> {
    let mut names = dotted_names(sql);
    names.retain(|n| valid_name(n));
    names
}

/// [`custom_names`], those switchyard cannot track included.
fn dotted_names(sql: &str) -> Vec<String> {
    let mut toks = crate::sql::lexer::Ahead::new(sql);
    let mut out = Vec::new();
    while let Some(t) = toks.at(0) {
        if t.is_kw("set") || t.is_kw("reset") {
            let mut j = 1;
            if toks
                .at(j)
                .is_some_and(|t| t.is_kw("session") || t.is_kw("local"))
            {
                j += 1;
            }
            let mut name = String::new();
            while let Some(tok) = toks.at(j) {
                match tok.ident_value() {
                    Some(v) if tok.is_name() => name.push_str(&v),
                    _ => break,
                }
                if toks.at(j + 1).is_some_and(|t| t.is_punct(b'.')) {
                    name.push('.');
                    j += 2;
                } else {
                    break;
                }
            }
            if name.contains('.') {
                out.push(name.to_ascii_lowercase());
            }
        } else if is_set_config(&t) && toks.at(1).is_some_and(|t| t.is_punct(b'(')) {
            if let Some(v) = toks.at(2).and_then(|t| t.string_value()) {
                if v.contains('.') {
                    out.push(v.to_ascii_lowercase());
                }
            }
        }
        toks.advance();
    }
    out
}

/// Whether a statement that changes settings may change one a Parse depends on (see
/// `Session::parse_context`): not `SET app.tenant = ...` nor `set_config('app.x', ...)`, the
/// settings applications change in every transaction.
pub fn may_change_parse(sql: &str) -> bool {
    // (Words of the settings a Parse depends on, of the statements that set them another
    // way, of RESET and DISCARD, of a role change, which changes what `$user` names in the
    // search_path, and of a dynamic EXECUTE in a DO block, which may run any of those.)
    const WORDS: [&str; 20] = [
        "search_path",
        "schema",
        "time",
        "zone",
        "date",
        "interval",
        "encoding",
        "names",
        "conforming",
        "backslash",
        "null",
        "xml",
        "monetary",
        "bytea",
        "float",
        "reset",
        "discard",
        "role",
        "authorization",
        "execute",
    ];
    let lower = sql.to_ascii_lowercase();
    WORDS.iter().any(|w| lower.contains(w)) || computes_setting_name(sql)
}

/// The settings a statement's meaning depends on as it is parsed (see
/// `Session::parse_context`): the search_path names its tables, types and functions; literals
/// become constants under the time zone (and its abbreviations), date and interval styles,
/// encoding, string syntax, array and XML input settings. And as it is planned: the output
/// functions of `bytea` and the floating-point and geometric types are immutable though they
/// follow `bytea_output` and `extra_float_digits`, so a constant such as
/// `decode('0102', 'hex')::text` is folded into the plan the server caches for the statement
/// under the settings of its first execution.
pub const PARSE_SETTINGS: [&str; 14] = [
    "timezone_abbreviations",
    "array_nulls",
    "xmloption",
    "search_path",
    "timezone",
    "datestyle",
    "intervalstyle",
    "client_encoding",
    "standard_conforming_strings",
    "backslash_quote",
    "transform_null_equals",
    "lc_monetary",
    "bytea_output",
    "extra_float_digits",
];

/// Whether a text running `SET LOCAL` may change a setting a Parse depends on: each `SET
/// LOCAL` names its setting (not `statement_timeout`, `work_mem`, ...), while a `DO` block
/// (whose body is a string) is judged by its words, as [`may_change_parse`].
pub fn local_may_change_parse(sql: &str) -> bool {
    // (Besides the settings a Parse reads, the forms that set them, or what `$user` names
    // in the search_path, another way.)
    const OTHER_FORMS: [&str; 5] = ["time", "schema", "names", "role", "session"];
    if crate::sql::Lexer::new(sql)
        .filter(|t| !t.is_comment())
        .any(|t| t.is_kw("do"))
    {
        return may_change_parse(sql);
    }
    let mut toks = crate::sql::lexer::Ahead::new(sql);
    while let Some(t) = toks.at(0) {
        if t.is_kw("set")
            && toks.at(1).is_some_and(|t| t.is_kw("local"))
            && toks.at(2).is_some_and(|t| {
                PARSE_SETTINGS
                    .iter()
                    .chain(&OTHER_FORMS)
                    .any(|n| t.name_eq(n))
            })
        {
            return true;
        }
        toks.advance();
    }
    false
}

/// Whether a statement (or a function body) calls `set_config` with a name that is not
/// written in it as one string (`$1`, a column, `'app.' || $1`), or with a custom name
/// switchyard cannot track: a custom setting set that way cannot be read back (they are read
/// by name), so the client is pinned instead (`computed_setting`).
pub fn computes_setting_name(sql: &str) -> bool {
    let mut toks = crate::sql::lexer::Ahead::new(sql);
    while let Some(t) = toks.at(0) {
        if is_set_config(&t) && toks.at(1).is_some_and(|t| t.is_punct(b'(')) {
            if toks.at(2).is_none_or(|t| t.string_value().is_none()) {
                return true;
            }
            // The string, cast to a type or not (`'app.x'::text`, as the server prints a
            // function's SQL-standard body), then the next argument.
            let mut k = 3;
            if toks.at(k).is_some_and(|t| t.text == "::") {
                k += 2;
                while toks.at(k).is_some_and(|t| t.is_punct(b'.')) {
                    k += 2;
                }
            }
            if !toks.at(k).is_some_and(|t| t.is_punct(b',')) {
                return true;
            }
        }
        toks.advance();
    }
    dotted_names(sql).iter().any(|n| !valid_name(n))
}

/// The first argument of a FunctionCall message's body (after the function's OID), as text;
/// `None` when null or not readable.
pub fn function_call_first_arg(body: &[u8]) -> Option<String> {
    let mut b = body.get(4..)?;
    let take = |b: &mut &[u8], n: usize| -> Option<Vec<u8>> {
        let (head, rest) = (b.get(..n)?.to_vec(), b.get(n..)?);
        *b = rest;
        Some(head)
    };
    let i16_at = |v: Vec<u8>| i16::from_be_bytes([v[0], v[1]]);
    let formats = i16_at(take(&mut b, 2)?);
    take(&mut b, 2 * usize::try_from(formats).ok()?)?;
    if i16_at(take(&mut b, 2)?) < 1 {
        return None;
    }
    let len = take(&mut b, 4)?;
    let len = usize::try_from(i32::from_be_bytes([len[0], len[1], len[2], len[3]])).ok()?;
    String::from_utf8(take(&mut b, len)?).ok()
}

/// What a `set_config` FunctionCall sets.
#[derive(Debug, PartialEq, Eq)]
pub enum CallSetting {
    /// A custom setting, read back by this name.
    Custom(String),
    /// Another setting (found in `pg_settings`).
    Builtin,
    /// One that cannot be tracked (the client is pinned).
    Untracked,
}

/// What the `set_config` FunctionCall whose message body is `body` sets.
pub fn function_call_setting(body: &[u8]) -> CallSetting {
    match function_call_first_arg(body) {
        Some(n) if !n.contains('.') => CallSetting::Builtin,
        Some(n) if valid_name(&n) => CallSetting::Custom(n.to_ascii_lowercase()),
        _ => CallSetting::Untracked,
    }
}

/// `set_config`, quoted or not.
fn is_set_config(t: &crate::sql::Token<'_>) -> bool {
    t.name_eq("set_config")
}

/// The pin reason for [`computes_setting_name`].
pub const COMPUTED_SETTING: &str = "computed_setting";

/// Startup parameters that are not settings.
const NOT_SETTINGS: &[&str] = &["user", "database", "options", "replication"];

/// Settings that are the session's identity: changed, they pin the client to its server
/// connection (see [`capture_sql`]).
pub const IDENTITY: &[&str] = &["role", "session_authorization"];

/// Settings PostgreSQL manages itself or that the proxy must not copy between sessions.
const UNCOPYABLE: &[&str] = &[
    "is_superuser",
    "session_authorization",
    "role",
    "transaction_isolation",
    "transaction_read_only",
    "transaction_deferrable",
];

impl Settings {
    /// Builds the startup settings: those `options` made (parsed), then the startup
    /// parameters, which win as PostgreSQL applies them after. Among the parameters, the
    /// startup packet's own fields (`user`, `database`, ...) and protocol options (`_pq_.*`)
    /// are skipped; named in `options` the former are refused, as no setting has their name.
    /// Names that are not plain identifiers are refused (they end up in SQL).
    pub fn from_startup<'a>(
        options: impl IntoIterator<Item = (&'a str, &'a str)>,
        params: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Settings, String> {
        let unrecognized = |k: &str| format!("unrecognized configuration parameter \"{k}\"");
        let mut s = Settings::default();
        for (k, v) in options {
            let name = k.to_ascii_lowercase();
            if NOT_SETTINGS.contains(&name.as_str()) || !valid_name(k) {
                return Err(unrecognized(k));
            }
            s.0.insert(name, v.to_owned());
        }
        for (k, v) in params {
            if NOT_SETTINGS.contains(&k) || k.starts_with("_pq_.") {
                continue;
            }
            if !valid_name(k) {
                return Err(unrecognized(k));
            }
            s.0.insert(k.to_ascii_lowercase(), v.to_owned());
        }
        Ok(s)
    }

    /// Builds settings from rows of [`capture_sql`]: (name, hex of the value's UTF-8).
    pub fn from_rows(rows: impl IntoIterator<Item = (String, String)>) -> Settings {
        Settings(
            rows.into_iter()
                .filter(|(k, _)| {
                    valid_name(k) && !UNCOPYABLE.contains(&k.to_ascii_lowercase().as_str())
                })
                .filter_map(|(k, v)| Some((k.to_ascii_lowercase(), unhex(&v)?)))
                .collect(),
        )
    }

    /// `self` overlaid with `over`.
    pub fn overlay(&self, over: &Settings) -> Settings {
        let mut s = self.clone();
        for (k, v) in &over.0 {
            s.0.insert(k.clone(), v.clone());
        }
        s
    }

    /// SQL that turns a connection with `applied` settings into one with `self`, or `None`
    /// when they already agree. `standalone`: it runs outside any transaction block, so its
    /// own transaction can be made READ COMMITTED: the `SELECT` needs a snapshot, which a hot
    /// standby refuses when the connection's transactions default to SERIALIZABLE (the
    /// setting this may be about to undo, or a role or database default).
    pub fn sync_sql(&self, applied: &Settings, standalone: bool) -> Option<String> {
        let mut sets = Vec::new();
        let mut resets = Vec::new();
        for (k, v) in &self.0 {
            if applied.0.get(k) != Some(v) {
                sets.push(format!(
                    "pg_catalog.set_config({}, {}, false)",
                    literal(k),
                    literal(v)
                ));
            }
        }
        for k in applied.0.keys() {
            if !self.0.contains_key(k) {
                resets.push(format!("RESET {}", ident(k)));
            }
        }
        if sets.is_empty() && resets.is_empty() {
            return None;
        }
        let mut sql = String::new();
        if !sets.is_empty() {
            if standalone {
                sql.push_str("SET TRANSACTION ISOLATION LEVEL READ COMMITTED; ");
            }
            let style = self.0.get("datestyle");
            if style.is_some() && style != applied.0.get("datestyle") {
                // A DateStyle may give only the output format or only the field order
                // (`euro`, `DMY`), keeping the other from the value it replaces. A client's
                // startup value replaced the server's default, so it does here too, whatever
                // the connection had before.
                sql.push_str("RESET datestyle; ");
            }
            sql.push_str("SELECT ");
            sql.push_str(&sets.join(", "));
        }
        for r in resets {
            if !sql.is_empty() {
                sql.push_str("; ");
            }
            sql.push_str(&r);
        }
        Some(sql)
    }
}

/// Whether two shared settings are the same, cheaply when they are the same allocation.
pub fn same(a: &Arc<Settings>, b: &Arc<Settings>) -> bool {
    Arc::ptr_eq(a, b) || a == b
}

/// A setting name switchyard tracks: PostgreSQL's (letters, digits, `_`, `$` and `.`, of any
/// length), ASCII only (the SQL switchyard sends stays ASCII in every client encoding).
fn valid_name(k: &str) -> bool {
    !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'$')
}

/// The text whose UTF-8 bytes `hex` spells (bytes that are not UTF-8, possible only in a
/// SQL_ASCII database, replaced: the setting is still known to be there, so it is reset before
/// another client uses the connection).
fn unhex(hex: &str) -> Option<String> {
    let digit = |c: u8| (c as char).to_digit(16);
    let bytes = hex
        .as_bytes()
        .chunks(2)
        .map(|p| match p {
            [h, l] => Some((digit(*h)? * 16 + digit(*l)?) as u8),
            _ => None,
        })
        .collect::<Option<Vec<u8>>>()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// A string constant safe whatever `standard_conforming_strings` and `client_encoding` are:
/// text that is not ASCII is spelled as its UTF-8 bytes, which the server converts.
fn literal(s: &str) -> String {
    if !s.is_ascii() {
        let hex: String = s.bytes().map(|b| format!("{b:02x}")).collect();
        return format!("pg_catalog.convert_from(pg_catalog.decode('{hex}', 'hex'), 'UTF8')");
    }
    let mut out = String::with_capacity(s.len() + 4);
    out.push_str("E'");
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A setting name for RESET: dotted names keep their dots (they are validated identifiers).
fn ident(k: &str) -> String {
    k.split('.')
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(pairs: &[(&str, &str)]) -> Settings {
        Settings(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn startup_filters_and_lowercases() {
        let st = Settings::from_startup(
            [("Work_Mem", "1MB"), ("_pq_.y", "2"), ("DateStyle", "SQL")],
            [
                ("user", "u"),
                ("database", "d"),
                ("options", "-c x=1"),
                ("DateStyle", "ISO"),
                ("_pq_.x", "1"),
                ("application_name", "a"),
            ],
        )
        .unwrap();
        assert_eq!(
            st,
            s(&[
                ("_pq_.y", "2"),
                ("application_name", "a"),
                ("datestyle", "ISO"),
                ("work_mem", "1MB")
            ])
        );
        let none: [(&str, &str); 0] = [];
        assert!(Settings::from_startup(none, [("x; drop table t", "1")]).is_err());
        assert!(Settings::from_startup([("x; drop table t", "1")], none).is_err());
        assert!(Settings::from_startup([("Database", "d")], none).is_err());
    }

    #[test]
    fn sync_sql_sets_and_resets_only_differences() {
        let desired = s(&[("a", "1"), ("b", "it's"), ("c", "3")]);
        let applied = s(&[("a", "1"), ("c", "4"), ("my.d", "x")]);
        assert_eq!(
            desired.sync_sql(&applied, false).unwrap(),
            "SELECT pg_catalog.set_config(E'b', E'it''s', false), pg_catalog.set_config(E'c', E'3', false); RESET \"my\".\"d\""
        );
        assert_eq!(
            desired.sync_sql(&applied, true).unwrap(),
            "SET TRANSACTION ISOLATION LEVEL READ COMMITTED; SELECT pg_catalog.set_config(E'b', E'it''s', false), pg_catalog.set_config(E'c', E'3', false); RESET \"my\".\"d\""
        );
        assert_eq!(desired.sync_sql(&desired, true), None);
        // A DateStyle is applied from the server's default, as a partial one (`euro`) keeps
        // the rest of the value it replaces.
        assert_eq!(
            s(&[("a", "1"), ("datestyle", "euro")])
                .sync_sql(&s(&[("datestyle", "SQL, MDY")]), true)
                .unwrap(),
            "SET TRANSACTION ISOLATION LEVEL READ COMMITTED; RESET datestyle; SELECT pg_catalog.set_config(E'a', E'1', false), pg_catalog.set_config(E'datestyle', E'euro', false)"
        );
        assert_eq!(
            s(&[("a", "1"), ("datestyle", "euro")])
                .sync_sql(&s(&[("datestyle", "euro")]), false)
                .unwrap(),
            "SELECT pg_catalog.set_config(E'a', E'1', false)"
        );
        assert_eq!(
            Settings::default()
                .sync_sql(&s(&[("a", "1")]), true)
                .unwrap(),
            "RESET \"a\""
        );
        assert_eq!(
            s(&[("a", "x\\y")])
                .sync_sql(&Settings::default(), false)
                .unwrap(),
            "SELECT pg_catalog.set_config(E'a', E'x\\\\y', false)"
        );
        assert_eq!(
            s(&[("a", "caf\u{e9}'")])
                .sync_sql(&Settings::default(), false)
                .unwrap(),
            "SELECT pg_catalog.set_config(E'a', pg_catalog.convert_from(pg_catalog.decode('636166c3a927', 'hex'), 'UTF8'), false)"
        );
    }

    #[test]
    fn a_function_calls_setting_name_is_read() {
        // OID, one format (text), three arguments, result format.
        let mut b = 2078u32.to_be_bytes().to_vec();
        b.extend_from_slice(&[0, 1, 0, 0, 0, 3]);
        for arg in [&b"App.X"[..], b"v", b"false"] {
            b.extend_from_slice(&(arg.len() as i32).to_be_bytes());
            b.extend_from_slice(arg);
        }
        b.extend_from_slice(&[0, 0]);
        assert_eq!(
            function_call_setting(&b),
            CallSetting::Custom("app.x".into())
        );
        let mut plain = b.clone();
        plain.splice(14..19, b"datestyle"[..5].iter().copied());
        assert_eq!(function_call_setting(&plain), CallSetting::Builtin);
        // A null name, or a truncated message: not trackable.
        let mut null = 2078u32.to_be_bytes().to_vec();
        null.extend_from_slice(&[0, 0, 0, 3, 255, 255, 255, 255]);
        assert_eq!(function_call_setting(&null), CallSetting::Untracked);
        assert_eq!(function_call_setting(&b[..12]), CallSetting::Untracked);
    }

    #[test]
    fn statements_that_may_put_settings_back_are_found() {
        for sql in [
            "RESET ALL",
            "reset timezone",
            "DISCARD ALL",
            "SET datestyle TO DEFAULT",
            "SET TIME ZONE LOCAL",
            "DO $$ BEGIN EXECUTE 'RESET app.x'; END $$",
        ] {
            assert!(may_reset(sql), "{sql}");
        }
        for sql in [
            "SET statement_timeout = '1min'",
            "SET LOCAL statement_timeout = 0",
            "SET default_transaction_isolation = 'serializable'",
            "SELECT set_config('app.x', 'y', false)",
        ] {
            assert!(!may_reset(sql), "{sql}");
        }
    }

    #[test]
    fn statements_that_may_change_what_a_parse_depends_on_are_found() {
        for sql in [
            "SET search_path = a, public",
            "SET ROLE x",
            "DO $$ BEGIN EXECUTE current_setting('app.stmt'); END $$",
            "SET bytea_output = escape",
            "SELECT set_config('extra_float_digits', '0', false)",
        ] {
            assert!(may_change_parse(sql), "{sql}");
        }
        for sql in [
            "SET app.tenant = '5'",
            "DO $$ BEGIN PERFORM set_config('app.tenant', '5', false); END $$",
        ] {
            assert!(!may_change_parse(sql), "{sql}");
        }
    }

    #[test]
    fn setting_names_not_written_are_found() {
        assert!(computes_setting_name("SELECT set_config($1, $2, false)"));
        assert!(computes_setting_name(
            "SELECT pg_catalog.set_config(k, v, false) FROM jsonb_each_text($1)"
        ));
        assert!(!computes_setting_name(
            "SELECT set_config('app.t', $1, false)"
        ));
        assert!(!computes_setting_name("SELECT 'set_config(x'"));
        assert!(!computes_setting_name("SELECT set_config"));
        // A name built from pieces; a quoted call; a custom name switchyard cannot track.
        assert!(computes_setting_name(
            "SELECT set_config('app.' || $1, $2, false)"
        ));
        assert!(computes_setting_name(
            "SELECT \"set_config\"(k, 'v', false)"
        ));
        assert!(computes_setting_name(
            "SELECT set_config('app.größe', 'x', false)"
        ));
        assert!(!computes_setting_name(
            "SELECT set_config('search_path', 'x', false)"
        ));
        assert!(!computes_setting_name(
            "SELECT set_config('app.a$b', 'x', false)"
        ));
        assert!(computes_setting_name("SET app.größe = 'x'"));
        assert!(!computes_setting_name("SET app.size = 'x'"));
        assert!(!computes_setting_name(
            "RETURN set_config('app.fn'::text, t, false)"
        ));
        assert!(!computes_setting_name(
            "SELECT set_config('app.fn'::pg_catalog.text, t, false)"
        ));
        assert!(computes_setting_name(
            "SELECT set_config('app.'::text || t, 'v', false)"
        ));
    }

    #[test]
    fn custom_names_are_found() {
        assert_eq!(
            custom_names("SET app.tenant_id = '1'; reset \"My\".x; select set_config('app.user', 'a', false); SET search_path = x; SET LOCAL a.b TO 1"),
            vec!["app.tenant_id", "my.x", "app.user", "a.b"]
        );
        assert!(custom_names("select 'set a.b = 1'").is_empty());
        assert_eq!(
            custom_names(
                "SELECT \"set_config\"('app.q', 'a', false), set_config('app.a$b', 'c', false)"
            ),
            vec!["app.q", "app.a$b"]
        );
    }

    #[test]
    fn capture_and_restore_sql() {
        let mut names = std::collections::BTreeSet::new();
        assert!(!capture_sql(&names, "app", false).contains("unnest"));
        assert!(capture_sql(&names, "app", false).contains("('session_authorization', E'app')"));
        assert!(!capture_sql(&names, "app", false).contains(STATE_ROW));
        assert!(capture_sql(&names, "app", true).contains("pg_listening_channels"));
        names.insert("app.x".to_string());
        assert!(capture_sql(&names, "app", false).contains("ARRAY[E'app.x']"));
        assert_eq!(restore_sql(&Settings::default()), None);
        let r = restore_sql(&s(&[("datestyle", "SQL, YMD")])).unwrap();
        assert!(
            r.contains("(E'datestyle', E'SQL, YMD')")
                && r.contains("source OPERATOR(pg_catalog.<>) 'session'"),
            "{r}"
        );
    }

    #[test]
    fn set_local_of_a_setting_parses_depend_on() {
        for sql in [
            "SET LOCAL timezone = 'UTC'",
            "BEGIN; set local TIME ZONE 'UTC'",
            "SET LOCAL datestyle = 'ISO, DMY'",
            "SET LOCAL search_path = s",
            "set local role app",
            "DO $$BEGIN SET LOCAL timezone = 'UTC'; END$$",
        ] {
            assert!(local_may_change_parse(sql), "{sql}");
        }
        for sql in [
            "SET LOCAL statement_timeout = 0",
            "BEGIN; SET LOCAL lock_timeout = '1s'; SET LOCAL work_mem = '8MB'",
            "SET LOCAL idle_in_transaction_session_timeout = 0",
            "DO $$BEGIN SET LOCAL work_mem = '8MB'; END$$",
        ] {
            assert!(!local_may_change_parse(sql), "{sql}");
        }
    }

    #[test]
    fn overlay_and_rows() {
        let st = s(&[("datestyle", "ISO"), ("application_name", "x")]);
        let hex = |v: &str| v.bytes().map(|b| format!("{b:02x}")).collect::<String>();
        let rows = Settings::from_rows(vec![
            ("DateStyle".into(), hex("ISO, MDY")),
            ("role".into(), hex("r")),
            ("app.x".into(), "636166c3a9".into()),
            ("app.odd".into(), "636".into()),
            ("app.latin1".into(), "63e9".into()),
            ("app.bad".into(), "6x".into()),
        ]);
        assert_eq!(
            st.overlay(&rows),
            s(&[
                ("app.latin1", "c\u{fffd}"),
                ("app.x", "caf\u{e9}"),
                ("application_name", "x"),
                ("datestyle", "ISO, MDY")
            ])
        );
    }

    #[test]
    fn custom_names_of_function_bodies_include_dynamic_ones() {
        assert_eq!(
            body_custom_names(
                "BEGIN PERFORM set_config('app.a', x, false); SET app.b = 1; \
                 EXECUTE 'SET app.c = ' || quote_literal(x); EXECUTE 'RESET app.a'; END"
            ),
            ["app.a", "app.b", "app.c"]
        );
        assert!(body_custom_names("BEGIN SET search_path = x; END").is_empty());
    }
}
