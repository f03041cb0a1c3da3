//! API-level tests: the shape of [`Analysis`], `Display` of reasons, and a deterministic fuzz
//! over SQL fragments (no panics, splitter and analyser agree).

use super::*;

#[test]
fn reason_display() {
    let cases: &[(Reason, &str)] = &[
        (Reason::Empty, "empty"),
        (Reason::Read("SELECT"), "read: SELECT"),
        (Reason::Write("INSERT"), "write: INSERT"),
        (Reason::Locking("FOR UPDATE"), "locking clause FOR UPDATE"),
        (Reason::SelectInto, "SELECT INTO"),
        (Reason::DataModifyingCte, "data-modifying CTE"),
        (
            Reason::WritingFunction("nextval"),
            "writing function nextval",
        ),
        (Reason::TransactionControl, "transaction control"),
        (Reason::SessionCommand, "session command"),
        (Reason::Unparsable, "unparsable"),
        (
            Reason::Hint(Route::Primary),
            "hint /* switchyard:primary */",
        ),
        (
            Reason::Hint(Route::Replica),
            "hint /* switchyard:replica */",
        ),
        (Reason::MultiStatementWrite, "multi-statement with a write"),
        (Reason::Unrecognized, "unrecognized statement"),
    ];
    for (r, s) in cases {
        assert_eq!(r.to_string(), *s);
    }
    assert_eq!(Route::Primary.to_string(), "primary");
    assert_eq!(Route::Replica.as_str(), "replica");
}

#[test]
fn full_analysis_shape() {
    let c = Classifier::default();
    let a = c.analyze("/* switchyard:replica */ BEGIN READ ONLY; SET x.y = 1; LISTEN ch; SELECT 1");
    assert_eq!(
        a,
        Analysis {
            route: Route::Replica,
            reason: Reason::Hint(Route::Replica),
            hint: Some(Route::Replica),
            effects: Effects::SETTINGS | Effects::PIN,
            pin: Some(PinReason::Listen),
            txn: TxnControl::Begin { read_only: true },
            primary_only: true,
            deallocate: None,
            execute: None,
            switchyard: None,
            statements: 4,
        }
    );
    let a = c.analyze("");
    assert_eq!(a.route, Route::Replica);
    assert_eq!(a.reason, Reason::Empty);
    assert_eq!(a.statements, 0);
    assert!(a.effects.is_empty());
    assert_eq!(a.txn, TxnControl::None);
    assert!(a.is_read());
}

#[test]
fn analysis_borrows_from_input() {
    let c = Classifier::default();
    let sql = String::from("DEALLOCATE my_stmt");
    let a = c.analyze(&sql);
    match &a.deallocate {
        Some(Deallocate::Name(std::borrow::Cow::Borrowed(n))) => {
            assert_eq!(*n, "my_stmt");
            // the name points into `sql`
            let range = sql.as_ptr() as usize..sql.as_ptr() as usize + sql.len();
            assert!(range.contains(&(n.as_ptr() as usize)));
        }
        other => panic!("{other:?}"),
    }
}

/// A tiny deterministic PRNG (xorshift) so the fuzz needs no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

#[test]
fn fuzz_fragments() {
    const FRAGMENTS: &[&str] = &[
        "SELECT",
        "select",
        "INSERT",
        "INTO",
        "UPDATE",
        "DELETE",
        "FOR",
        "SHARE",
        "KEY",
        "NO",
        "WITH",
        "AS",
        "(",
        ")",
        "((",
        "))",
        ",",
        ";",
        ";;",
        ".",
        "::",
        "'",
        "''",
        "'x'",
        "E'",
        "E'\\''",
        "\\",
        "\"",
        "\"q\"",
        "\"\"",
        "$",
        "$$",
        "$a$",
        "$1",
        "$1$",
        "/*",
        "*/",
        "--",
        "\n",
        " ",
        "  ",
        "1",
        "1.5e3",
        ".5",
        "x",
        "t",
        "nextval",
        "set_config",
        "pg_advisory_lock",
        "EXPLAIN",
        "ANALYZE",
        "COPY",
        "TO",
        "STDOUT",
        "FROM",
        "BEGIN",
        "END",
        "CASE",
        "CREATE",
        "FUNCTION",
        "ATOMIC",
        "SET",
        "LOCAL",
        "switchyard",
        "DEALLOCATE",
        "ALL",
        "TEMP",
        "é",
        "U&'",
        "B'",
        "[",
        "]",
        "+",
        "-",
        "*",
        "/",
        "<>",
        "=",
        "TABLE",
        "VALUES",
        "SHOW",
        "LISTEN",
    ];
    let c = Classifier::new(&["f".into()], &["g".into()]);
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let mut sql = String::new();
    for _ in 0..5000 {
        sql.clear();
        let n = 1 + rng.next() % 24;
        for _ in 0..n {
            sql.push_str(rng.pick(FRAGMENTS));
            if rng.next().is_multiple_of(3) {
                sql.push(' ');
            }
        }
        let a = c.analyze(&sql);
        let split = split_statements(&sql).count() as u32;
        assert_eq!(a.statements, split, "{sql:?}");
        if a.statements == 0 {
            assert_eq!(a.reason, Reason::Empty, "{sql:?}");
        }
        // tokens tile the input
        for t in Lexer::new(&sql) {
            assert_eq!(&sql[t.offset..t.end()], t.text);
        }
        // a replica route always comes with a read reason (or a replica hint / empty)
        if a.route == Route::Replica {
            assert!(
                matches!(
                    a.reason,
                    Reason::Read(_) | Reason::Empty | Reason::Hint(Route::Replica)
                ),
                "{sql:?}: {:?}",
                a.reason
            );
        }
    }
}

#[test]
fn backslashes_are_opaque_with_escapes_in_plain_strings_or_ascii_trail_bytes() {
    use super::backslashes_are_opaque as opaque;
    assert!(!opaque("on", "UTF8"));
    assert!(!opaque("on", "LATIN1"));
    assert!(opaque("off", "UTF8"));
    assert!(opaque("on", "SJIS"));
    assert!(opaque("on", "gbk"));
    assert!(opaque("on", "BIG5"));
    let a = super::Analysis::opaque();
    assert_eq!(a.route, super::Route::Primary);
    assert!(a
        .effects
        .contains(super::Effects::SETTINGS | super::Effects::STATE));
}
