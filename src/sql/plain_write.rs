//! The common single-row write — `UPDATE pgbench_accounts SET abalance = abalance + -4321
//! WHERE aid = 8237`, `INSERT INTO orders (user_id, status) VALUES ($1, 'new')` — recognised in
//! one pass over its bytes. It runs on the primary whatever it contains; all the full
//! classifier would still look for are calls with session effects (`set_config(`, `currval(`,
//! advisory locks: [`call_effect`]) and anything that makes the text more than one well-formed
//! statement. It spent more instructions on an `UPDATE` or `INSERT` than the proxy spends on
//! the rest of relaying it.
//!
//! Plain means: `INSERT`, `UPDATE` or `DELETE` and whitespace first, then ASCII words,
//! numbers, operators, punctuation, balanced parentheses, string constants and quoted
//! identifiers without a backslash or doubled quote inside (so that neither a prefix such as
//! `E'...'` nor `standard_conforming_strings` changes where they end), parameters `$n`, and
//! at most a trailing `;`. Left to the full classifier: comments (they may carry a routing
//! hint), dollar quoting, a letter right after a digit (`1e5`, `1abc`), a name before `(` that
//! is a function with session effects, anything non-ASCII, unbalanced or unterminated. Like
//! plain.rs, it may only ever answer what the full analysis would.

use super::names::call_effect;
use super::plain::one_statement;
use super::{Analysis, Effects, Reason, Route, TxnControl};

/// Byte classes of the scan.
const BAD: u8 = 0;
/// `[A-Za-z0-9_]`
const WORD: u8 = 1;
/// Whitespace.
const SPACE: u8 = 2;
/// Operators and punctuation that cannot start anything: `+ * < > = ~ ! @ # % ^ & | ` ? , . : [ ]`.
const SEP: u8 = 3;
/// `-` and `/`: an operator unless they start a comment.
const DASH_SLASH: u8 = 4;
const OPEN: u8 = 5;
const CLOSE: u8 = 6;
const SQUOTE: u8 = 7;
const DQUOTE: u8 = 8;
const DOLLAR: u8 = 9;

static CLASS: [u8; 256] = {
    let mut t = [BAD; 256];
    let mut c = 0;
    while c < 128 {
        let b = c as u8;
        t[c] = if b.is_ascii_alphanumeric() || b == b'_' {
            WORD
        } else {
            match b {
                b' ' | b'\t' | b'\n' | b'\r' => SPACE,
                b'+' | b'*' | b'<' | b'>' | b'=' | b'~' | b'!' | b'@' | b'#' | b'%' | b'^'
                | b'&' | b'|' | b'`' | b'?' | b',' | b'.' | b':' | b'[' | b']' => SEP,
                b'-' | b'/' => DASH_SLASH,
                b'(' => OPEN,
                b')' => CLOSE,
                b'\'' => SQUOTE,
                b'"' => DQUOTE,
                b'$' => DOLLAR,
                _ => BAD,
            }
        };
        c += 1;
    }
    t
};

/// The analysis of `sql` (the text of a query, not necessarily UTF-8) if it is a plain
/// `INSERT`, `UPDATE` or `DELETE`.
pub(super) fn plain_write(sql: &[u8]) -> Option<Analysis<'static>> {
    let (keyword, b) = match one_statement(sql) {
        [a, b, c, d, e, f, ws, rest @ ..] if CLASS[*ws as usize] == SPACE => {
            let head = [*a, *b, *c, *d, *e, *f];
            let keyword = if head.eq_ignore_ascii_case(b"update") {
                "UPDATE"
            } else if head.eq_ignore_ascii_case(b"insert") {
                "INSERT"
            } else if head.eq_ignore_ascii_case(b"delete") {
                "DELETE"
            } else {
                return None;
            };
            (keyword, rest)
        }
        _ => return None,
    };
    let n = b.len();
    let mut depth = 0u32;
    // The name (word or quoted identifier body) that only whitespace separates from here.
    let mut name: Option<(usize, usize, bool)> = None;
    let mut i = 0;
    while i < n {
        let c = b[i];
        match CLASS[c as usize] {
            WORD => {
                let start = i;
                let number = c.is_ascii_digit();
                i += 1;
                while i < n && CLASS[b[i] as usize] == WORD {
                    if number && !b[i].is_ascii_digit() {
                        return None;
                    }
                    i += 1;
                }
                if b[start..i].eq_ignore_ascii_case(b"pg_settings") {
                    // Written to, a session setting: left to the full analysis.
                    return None;
                }
                name = Some((start, i, false));
                continue;
            }
            SPACE => {}
            SEP => name = None,
            DASH_SLASH => {
                let next = b.get(i + 1).copied();
                if (c == b'-' && next == Some(b'-')) || (c == b'/' && next == Some(b'*')) {
                    return None;
                }
                name = None;
            }
            OPEN => {
                if let Some((from, to, quoted)) = name {
                    if has_effect(&b[from..to], quoted) {
                        return None;
                    }
                }
                depth += 1;
                name = None;
            }
            CLOSE => {
                depth = depth.checked_sub(1)?;
                name = None;
            }
            SQUOTE | DQUOTE => {
                let start = i + 1;
                i = start;
                loop {
                    let q = *b.get(i)?;
                    if q == c {
                        break;
                    }
                    if q == b'\\' || q >= 0x80 {
                        return None;
                    }
                    i += 1;
                }
                if b.get(i + 1) == Some(&c) {
                    return None; // '' or "" inside
                }
                if c == b'"' && &b[start..i] == b"pg_settings" {
                    return None;
                }
                name = (c == b'"').then_some((start, i, true));
            }
            DOLLAR => {
                // `$n`; `$$`, `$tag$` and `a$b` are left to the full classifier.
                if i > 0 && CLASS[b[i - 1] as usize] == WORD {
                    return None;
                }
                let digits = i + 1;
                i = digits;
                while i < n && b[i].is_ascii_digit() {
                    i += 1;
                }
                if i == digits || (i < n && CLASS[b[i] as usize] == WORD) {
                    return None;
                }
                name = None;
                continue;
            }
            _ => return None,
        }
        i += 1;
    }
    if depth != 0 {
        return None;
    }
    Some(Analysis {
        route: Route::Primary,
        reason: Reason::Write(keyword),
        hint: None,
        effects: Effects::NONE,
        pin: None,
        txn: TxnControl::None,
        primary_only: false,
        deallocate: None,
        execute: None,
        switchyard: None,
        statements: 1,
    })
}

/// Whether calling `name` (an unquoted word, or the body of a quoted identifier) has a session
/// effect. Names longer than PostgreSQL's identifiers are left to the full classifier too.
fn has_effect(name: &[u8], quoted: bool) -> bool {
    let mut buf = [0u8; 63];
    let Some(key) = buf.get_mut(..name.len()) else {
        return true;
    };
    key.copy_from_slice(name);
    if !quoted {
        key.make_ascii_lowercase();
    }
    // ASCII by construction.
    std::str::from_utf8(key).map_or(true, |k| call_effect(k).is_some())
}

#[cfg(test)]
mod tests {
    use super::super::corpus_tests::{
        agreeing_answers, corpus_records, corpus_statements, generated_statements,
    };
    use super::*;

    #[test]
    fn plain_writes_are_recognised_as_the_full_classifier_sees_them() {
        let recognised = [
            "UPDATE pgbench_accounts SET abalance = abalance + -4321 WHERE aid = 8237;",
            "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) \
             VALUES (7, 1, 8237, -4321, CURRENT_TIMESTAMP);",
            "insert into orders (user_id, status, total) values ($1, 'new', $2) returning id",
            "DELETE FROM sessions WHERE expires_at < now() - interval '1 day'",
            "UPDATE \"Users\" SET \"Name\" = $1, n = n / 2 WHERE \"Id\" = $2",
            "UPDATE t SET a = coalesce(b, c)::int, d = e[1], f = g || 'x' WHERE h <> 1.5 ;",
            "INSERT INTO t VALUES (1, 'it is', (SELECT max(x) FROM u), $10)",
            "DELETE\n\tFROM t WHERE a IN (1, 2, 3) AND b IS NOT NULL",
            "UPDATE t SET x = nextval('s')",
            "UPDATE t SET x = 1 - -1",
            "UPDATE t SET x = E'a' || U&'b' || B'01' || X'ff' WHERE U&\"c\" = 1",
        ];
        for sql in recognised {
            assert!(
                plain_write(sql.as_bytes()).is_some(),
                "{sql:?} not recognised"
            );
        }
        assert_eq!(agreeing_answers(plain_write, recognised), recognised.len());
    }

    #[test]
    fn everything_else_is_left_to_the_full_classifier() {
        for sql in [
            // writes to pg_settings are set_config calls
            "UPDATE pg_settings SET setting = 'x' WHERE name = 'search_path'",
            "update pg_catalog.\"pg_settings\" set setting = 'x' where name = 'role'",
            // calls with session effects, in every spelling
            "UPDATE t SET x = set_config('a.b', 'c', false)",
            "UPDATE t SET x = pg_catalog.SET_CONFIG ('a.b', 'c', false)",
            "UPDATE t SET x = \"set_config\"('a.b', 'c', false)",
            "INSERT INTO t VALUES (currval('s'))",
            "INSERT INTO t SELECT pg_advisory_lock(1)",
            "DELETE FROM t WHERE dblink_connect('x') = 'OK'",
            // comments, hints
            "/* switchyard:replica */ UPDATE t SET x = 1",
            "UPDATE t SET x = 1 -- c",
            "UPDATE t SET x = 1 /* c */",
            // several statements, unbalanced, unterminated
            "UPDATE t SET x = 1; SELECT 2",
            "UPDATE t SET x = 1;;",
            "UPDATE t SET x = (1",
            "UPDATE t SET x = 1)",
            "UPDATE t SET x = 'a",
            "UPDATE t SET \"x = 1",
            // strings and names the scan does not take apart
            "UPDATE t SET x = E'a\\'b'",
            "UPDATE t SET x = U&'\\0041'",
            "UPDATE t SET x = 'a\\'",
            "UPDATE t SET x = 'it''s'",
            "UPDATE t SET \"a\"\"b\" = 1",
            "UPDATE t SET \"a\\\" = 1",
            "UPDATE t SET x = U&\"set_config\"('a', 'b', false)",
            "UPDATE t SET x = $$a$$",
            "UPDATE t SET x = $a$b$a$",
            "UPDATE t SET x$1 = 1",
            "UPDATE t SET x = $1a",
            "UPDATE t SET x = 1e5",
            "UPDATE t SET x = 1set_config('a', 'b', false)",
            "UPDATE t SET x = 'é'",
            "UPDATE t SET x = {1}",
            // other statements
            "UPDATEt SET x = 1",
            "UPDATE",
            "WITH a AS (SELECT 1) UPDATE t SET x = 1",
            "SELECT 1",
            "MERGE INTO t USING u ON t.a = u.a WHEN MATCHED THEN DELETE",
        ] {
            assert_eq!(plain_write(sql.as_bytes()), None, "{sql:?}");
        }
        assert_eq!(plain_write(b"UPDATE t SET x = '\xe9'"), None);
    }

    /// Every statement of the SQL corpus the fast path accepts gets exactly the full analysis.
    #[test]
    fn agrees_with_the_full_classifier_on_the_corpus() {
        let text = corpus_statements();
        let accepted = agreeing_answers(plain_write, corpus_records(&text));
        assert!(accepted >= 10, "the corpus's plain writes: {accepted}");
    }

    /// Statements assembled from pieces that each stress one rule of the scan: wherever the
    /// fast path answers, it answers what the full classifier does.
    #[test]
    fn agrees_with_the_full_classifier_on_generated_statements() {
        let heads = [
            "UPDATE t SET x = ",
            "insert into t values (",
            "DELETE FROM t WHERE ",
        ];
        let pieces = [
            "1",
            "a",
            "b.c",
            " ",
            "\n",
            "(",
            ")",
            ",",
            "'s'",
            "''",
            "'",
            "\"Q\"",
            "\"",
            "$1",
            "$",
            "$$",
            "-",
            "--",
            "/",
            "/*",
            "*/",
            "*",
            ";",
            "::int",
            "1e",
            "e'x'",
            "&",
            "set_config",
            "currval",
            "pg_advisory_lock",
            "lastval",
            "now",
            "\\",
            "[1]",
            "é",
            "SELECT",
            "FOR",
            "UPDATE",
            "INTO",
        ];
        let statements = generated_statements(&heads, &pieces, 20_000);
        let accepted = agreeing_answers(plain_write, statements.iter().map(String::as_str));
        assert!(
            accepted > statements.len() / 20,
            "{accepted} of {} accepted",
            statements.len()
        );
    }
}
