//! The common query — one `SELECT` of plain words, such as
//! `SELECT abalance FROM pgbench_accounts WHERE aid = 4711` or, in a Parse, `... WHERE aid = $1`
//! — recognised in one pass over its bytes. Its analysis is always the same (a read with no
//! session effects), and the full classifier would spend most of a relayed transaction's
//! instructions re-deriving it.
//!
//! Plain means: nothing but words, numbers, parameters `$n`, whitespace, `, . = < > * +` and at
//! most a trailing `;`, numbers of digits only (PostgreSQL splits `1for` into `1 for`), and
//! neither `INTO` nor `FOR` among the words. So no parenthesis (no function call, no
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

/// The last eight bytes of the views read on the primary (names.rs `PRIMARY_VIEWS`, and
/// `pg_settings`, which shows whether the server is a standby), as [`folded`] reads them: a
/// word ending so is left to the full classifier.
const PRIMARY_VIEW_ENDS: [u64; 5] = [
    folded(*b"ed_xacts"),
    folded(*b"lication"),
    folded(*b"on_slots"),
    folded(*b"pg_locks"),
    folded(*b"settings"),
];

/// Eight word bytes read as one number, case folded: setting each byte's 0x20 bit maps an
/// upper-case letter to its lower case, and no two word bytes (letters, digits, `_`) to the
/// same value.
const fn folded(b: [u8; 8]) -> u64 {
    u64::from_be_bytes(b) | 0x2020_2020_2020_2020
}

/// Whether a word (letters, digits and `_`, as [`MAP`] reads them) leaves a `SELECT` plain: a
/// number is digits only (PostgreSQL reads `1for` as `1 for`, `1into` as `1 into`, and `1e5`
/// as a number; the full classifier knows which), and the word is neither `INTO` (`SELECT ...
/// INTO` creates a table) nor `FOR` (the locking clauses need the primary), nor ends as a
/// view read on the primary does.
fn plain_word(w: &[u8]) -> bool {
    if w[0].is_ascii_digit() {
        return w.iter().all(u8::is_ascii_digit);
    }
    match w.len() {
        3 => !w.eq_ignore_ascii_case(b"for"),
        4 => !w.eq_ignore_ascii_case(b"into"),
        l if l >= 8 => {
            // (Only a view's end is eight bytes or longer; they all end in `s` or `n`.)
            let end: [u8; 8] = w[l - 8..].try_into().expect("eight bytes");
            !matches!(w[l - 1] | 0x20, b's' | b'n') || !PRIMARY_VIEW_ENDS.contains(&folded(end))
        }
        _ => true,
    }
}

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
    // Word by word: a word's bytes are passed over in a tight loop, and the word looked at
    // once it ends. (The tests in the order of how common each byte is: word bytes first.)
    let n = rest.len();
    let mut i = 0;
    // Whether the byte before `i` is a word byte.
    let mut after_word = false;
    // Where the last number (a word of digits) ended.
    let mut number_end = usize::MAX;
    while i < n {
        let m = MAP[rest[i] as usize];
        if m >= b'0' {
            let start = i;
            i += 1;
            while i < n && MAP[rest[i] as usize] >= b'0' {
                i += 1;
            }
            let w = &rest[start..i];
            if !plain_word(w) {
                return None;
            }
            if w[0].is_ascii_digit() {
                number_end = i;
            } else if start >= 1 && number_end == start - 1 && rest[start - 1] == b'.' {
                // A word right after `1.`: `1.e5for` is the number `1.e5` and then `for` to
                // PostgreSQL 14 and the full classifier (later versions refuse it); `1._for`
                // is the number `1._` and then `for` to the full classifier.
                return None;
            }
            after_word = true;
            continue;
        }
        if m == PARAM {
            // `$n` after a separator; not `a$b`, `$$`, `$tag$` or `$` alone. (The number
            // after it is a word, digits only.)
            if after_word || !rest.get(i + 1).is_some_and(u8::is_ascii_digit) {
                return None;
            }
        } else if m != 0 {
            return None;
        }
        after_word = false;
        i += 1;
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
            "SELECT c1x, t2_y FROM s3a.t4b WHERE _1a = 5",
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
            "SELECT * FROM t WHERE a = 1.e5for update",
            "SELECT 1.e5into x",
            "SELECT 1.E5FOR UPDATE",
            "SELECT 1._for update",
            "SELECT 1_000",
            "SELECT x FROM t WHERE y = 0x1F",
            "SELECT x FROM pg_catalog.PG_SETTINGS",
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
            "x1y",
            "1_0",
            "1.e5for",
            "1.",
            "e5",
            " pg_locks",
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
