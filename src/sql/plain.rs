//! The common query — one `SELECT` of plain words, such as
//! `SELECT abalance FROM pgbench_accounts WHERE aid = 4711` or, in a Parse, `... WHERE aid = $1`
//! — recognised in one pass over its bytes. Its analysis is always the same (a read with no
//! session effects), and the full classifier would spend most of a relayed transaction's
//! instructions re-deriving it.
//!
//! Plain means: nothing but words, numbers, parameters `$n`, whitespace, `, . = < > * +` and at
//! most a trailing `;`, no letter right after a digit (PostgreSQL splits `1for` into `1 for`),
//! and neither `INTO` nor `FOR` among the words. So no parenthesis (no function call, no
//! subquery), quote, comment, cast, operator that could hide one, `SELECT ... INTO` or locking
//! clause. Anything else goes to the full classifier, as does anything this module is unsure
//! of: it may only ever answer what the full analysis would.

use super::{Analysis, Effects, Reason, Route, TxnControl};

/// `sql` without surrounding whitespace and one trailing `;`.
pub(super) fn one_statement(sql: &[u8]) -> &[u8] {
    let s = sql.trim_ascii();
    s.strip_suffix(b";").map_or(s, <[u8]>::trim_ascii_end)
}

/// What each byte value reads as in the scan over what follows `SELECT`: a word byte as its
/// lowercase self (`0` or above), a separator (whitespace, `, . = < > * +`) as 0, `$` as
/// [`PARAM`], anything else as [`BAD`].
static MAP: [u8; 256] = {
    let mut t = [BAD; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        if b.is_ascii_alphanumeric() || b == b'_' {
            t[c] = b.to_ascii_lowercase();
        } else if matches!(
            b,
            b' ' | b'\t' | b'\n' | b'\r' | b',' | b'.' | b'=' | b'<' | b'>' | b'*' | b'+'
        ) {
            t[c] = 0;
        } else if b == b'$' {
            t[c] = PARAM;
        }
        c += 1;
    }
    t
};

/// Not allowed in a plain `SELECT`. (Below `b'0'`, as everything but a word byte.)
const BAD: u8 = 2;

/// `$`, allowed as the start of a parameter `$n` after a separator.
const PARAM: u8 = 1;

/// Words that change what a `SELECT` does (`SELECT ... INTO` creates a table, `FOR UPDATE`
/// and the other locking clauses need the primary), as the scan's last bytes hold them when
/// they end a word: a separator, then the word.
const FOR: u64 = u64::from_be_bytes([0, 0, 0, 0, 0, b'f', b'o', b'r']);
const INTO: u64 = u64::from_be_bytes([0, 0, 0, 0, b'i', b'n', b't', b'o']);

/// The last eight bytes of the views read on the primary (names.rs `PRIMARY_VIEWS`, and
/// `pg_settings`, which shows whether the server is a standby): a word ending so is left to
/// the full classifier.
const PRIMARY_VIEW_ENDS: [u64; 5] = [
    u64::from_be_bytes(*b"ed_xacts"),
    u64::from_be_bytes(*b"lication"),
    u64::from_be_bytes(*b"on_slots"),
    u64::from_be_bytes(*b"pg_locks"),
    u64::from_be_bytes(*b"settings"),
];

/// The analysis of `sql` (the text of a query, not necessarily UTF-8) if it is a plain
/// `SELECT`. A plain `SELECT` is ASCII, so the text need not be validated first.
pub(super) fn plain_select(sql: &[u8]) -> Option<Analysis<'static>> {
    let rest = match one_statement(sql) {
        [a, b, c, d, e, f, ws, rest @ ..]
            if [*a, *b, *c, *d, *e, *f].eq_ignore_ascii_case(b"select")
                && ws.is_ascii_whitespace() =>
        {
            rest
        }
        _ => return None,
    };
    // The last eight mapped bytes (a separator before `rest`): at each separator, the word
    // just ended is in the low bytes, a separator before it.
    let mut last: u64 = 0;
    // (Only a word ending in `r`, `o`, `n` or `s` can be one of them.)
    let special = |last: u64| {
        matches!(last as u8, b'r' | b'o' | b'n' | b's')
            && (last & 0xffff_ffff == FOR
                || last & 0xff_ffff_ffff == INTO
                || PRIMARY_VIEW_ENDS.contains(&last))
    };
    // (The tests in the order of how common each byte is: word bytes first.)
    for (i, &c) in rest.iter().enumerate() {
        let m = MAP[c as usize];
        if m >= b'0' {
            if m >= b'_' && (last as u8).is_ascii_digit() {
                // A letter right after a digit: PostgreSQL reads `1for` as `1 for` and `1into`
                // as `1 into` (and `1e5` as a number); the full classifier knows which.
                return None;
            }
        } else if m == 0 {
            if special(last) {
                return None;
            }
        } else if m == PARAM {
            // `$n` after a separator; not `a$b`, `$$`, `$tag$` or `$` alone.
            if last as u8 != 0 || !rest.get(i + 1).is_some_and(u8::is_ascii_digit) {
                return None;
            }
        } else {
            return None;
        }
        last = (last << 8) | u64::from(m);
    }
    if special(last) {
        return None;
    }
    Some(Analysis {
        route: Route::Replica,
        reason: Reason::Read("SELECT"),
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

#[cfg(test)]
mod tests {
    use super::super::corpus_tests::{
        agreeing_answers, corpus_records, corpus_statements, generated_statements,
    };
    use super::*;

    #[test]
    fn views_only_the_primary_fills_are_left_to_the_full_classifier() {
        for sql in [
            "SELECT gid FROM pg_prepared_xacts",
            "select * from pg_catalog.pg_stat_replication",
            "SELECT slot_name FROM pg_replication_slots",
            "SELECT * FROM pg_catalog.PG_LOCKS WHERE granted",
        ] {
            assert!(plain_select(sql.as_bytes()).is_none(), "{sql}");
        }
        assert!(plain_select(b"SELECT gid FROM prepared").is_some());
    }

    #[test]
    fn plain_selects_are_recognised_as_the_full_classifier_sees_them() {
        let recognised = [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 4711",
            "select abalance from pgbench_accounts where aid = 4711;",
            "  SELECT\n a.x, b.y FROM s.a, b WHERE a.id = b.id AND a.v >= 1.5 ORDER BY 1  ;  ",
            "SELECT 1",
            "SELECT * FROM t",
            "SELECT x FROM t WHERE y <> 2 LIMIT 10 OFFSET 5",
            "SELECT forward, intox, info FROM t",
            "SELECT 1 UNION SELECT 2",
            "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
            "SELECT $1, $2 , $10",
        ];
        for sql in recognised {
            assert!(
                plain_select(sql.as_bytes()).is_some(),
                "{sql:?} not recognised"
            );
        }
        assert_eq!(agreeing_answers(plain_select, recognised), recognised.len());
    }

    #[test]
    fn everything_else_is_left_to_the_full_classifier() {
        for sql in [
            "SELECT nextval('s')",
            "SELECT * FROM t FOR UPDATE",
            "SELECT * FROM t for share",
            "SELECT x FROM t WHERE a.b = 1 FOR",
            "SELECT * FROM t WHERE a = 1for update",
            "SELECT 1into x",
            "SELECT 1e5",
            "SELECT x INTO",
            "SELECT x INTO y FROM t",
            "SELECT 'a'",
            "SELECT \"x\" FROM t",
            "SELECT 1; SELECT 2",
            "SELECT 1;;",
            "/* switchyard:primary */ SELECT 1",
            "-- c\nSELECT 1",
            "SELECT x::int FROM t",
            "SELECT $",
            "SELECT $$x$$",
            "SELECT $a$x$a$",
            "SELECT a$1 FROM t",
            "SELECT $1a",
            "SELECT $1for update",
            "SELECT x FROM t WHERE y = $",
            "SELECT x FROM t WHERE y = -1",
            "SELECTx FROM t",
            "SELECT",
            "UPDATE t SET x = 1",
            "SELECT x FROM t WHERE y = 1 -- c",
            "SELECT é FROM t",
        ] {
            assert_eq!(plain_select(sql.as_bytes()), None, "{sql:?}");
        }
        // Not UTF-8 at all.
        assert_eq!(plain_select(b"SELECT \xff FROM t"), None);
        assert_eq!(plain_select(b"SELECT x FROM t\xc3"), None);
    }

    /// Statements assembled from pieces that each stress one rule of the scan: wherever the
    /// fast path answers, it answers what the full classifier does.
    #[test]
    fn agrees_with_the_full_classifier_on_generated_statements() {
        let heads = ["SELECT ", "select a", "SELECT x FROM t WHERE y = "];
        let pieces = [
            "1",
            "a",
            " ",
            "\n",
            ",",
            ".",
            "=",
            "<",
            "*",
            "+",
            "$1",
            "$",
            "$$",
            "for",
            " for",
            " FOR UPDATE",
            "into",
            " INTO ",
            "1e5",
            "1for",
            "(",
            "'s'",
            "-",
            "--",
            ";",
            "é",
            "\t",
            "x$1",
            " from t",
            "forx",
            " intox",
        ];
        let statements = generated_statements(&heads, &pieces, 20_000);
        let accepted = agreeing_answers(plain_select, statements.iter().map(String::as_str));
        assert!(
            accepted > statements.len() / 20,
            "{accepted} of {} accepted",
            statements.len()
        );
    }

    /// Every statement of the SQL corpus the fast path accepts gets exactly the full analysis.
    #[test]
    fn agrees_with_the_full_classifier_on_the_corpus() {
        let text = corpus_statements();
        let accepted = agreeing_answers(plain_select, corpus_records(&text));
        assert!(accepted >= 20, "the corpus's plain SELECTs: {accepted}");
    }
}
