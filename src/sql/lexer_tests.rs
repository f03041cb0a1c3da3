//! Lexer and splitter tests.

use super::lexer::{Lexer, StrKind, TokenKind as K, Unterminated as U};
use super::split_statements;

fn kinds(sql: &str) -> Vec<(K, &str)> {
    Lexer::new(sql).map(|t| (t.kind, t.text)).collect()
}

#[test]
fn token_table() {
    use K::*;
    let s = |k| String(k);
    let cases: &[(&str, &[(K, &str)])] = &[
        ("", &[]),
        ("   \n\t ", &[]),
        ("SELECT 1", &[(Ident, "SELECT"), (Number, "1")]),
        (
            "select a,b from t;",
            &[
                (Ident, "select"),
                (Ident, "a"),
                (Punct, ","),
                (Ident, "b"),
                (Ident, "from"),
                (Ident, "t"),
                (Punct, ";"),
            ],
        ),
        // comments
        ("-- hi\nx", &[(LineComment, "-- hi"), (Ident, "x")]),
        ("--\r\nx", &[(LineComment, "--"), (Ident, "x")]),
        ("a--b", &[(Ident, "a"), (LineComment, "--b")]),
        ("/* c */x", &[(BlockComment, "/* c */"), (Ident, "x")]),
        (
            "/* a /* b */ c */x",
            &[(BlockComment, "/* a /* b */ c */"), (Ident, "x")],
        ),
        ("/*/ x */y", &[(BlockComment, "/*/ x */"), (Ident, "y")]),
        ("/**/", &[(BlockComment, "/**/")]),
        ("/* x", &[(Unterminated(U::BlockComment), "/* x")]),
        (
            "/* /* x */",
            &[(Unterminated(U::BlockComment), "/* /* x */")],
        ),
        // quoted identifiers
        (r#""a""b""#, &[(QuotedIdent, r#""a""b""#)]),
        (
            r#""select" "from""#,
            &[(QuotedIdent, r#""select""#), (QuotedIdent, r#""from""#)],
        ),
        (r#""x"#, &[(Unterminated(U::QuotedIdent), r#""x"#)]),
        (
            r#"U&"d\0061t\+000061""#,
            &[(QuotedIdent, r#"U&"d\0061t\+000061""#)],
        ),
        // strings
        ("'it''s'", &[(s(StrKind::Standard), "'it''s'")]),
        ("'a\\'", &[(s(StrKind::Standard), "'a\\'")]),
        ("''", &[(s(StrKind::Standard), "''")]),
        ("'x", &[(Unterminated(U::String), "'x")]),
        ("'it''", &[(Unterminated(U::String), "'it''")]),
        ("E'\\''", &[(s(StrKind::Escape), "E'\\''")]),
        (
            "e'a\\\\' x",
            &[(s(StrKind::Escape), "e'a\\\\'"), (Ident, "x")],
        ),
        ("E'\\'", &[(Unterminated(U::String), "E'\\'")]),
        ("E'a''b'", &[(s(StrKind::Escape), "E'a''b'")]),
        ("U&'d\\0061t'", &[(s(StrKind::Unicode), "U&'d\\0061t'")]),
        (
            "u&'x' UESCAPE '!'",
            &[
                (s(StrKind::Unicode), "u&'x'"),
                (Ident, "UESCAPE"),
                (s(StrKind::Standard), "'!'"),
            ],
        ),
        ("B'1010'", &[(s(StrKind::Bit), "B'1010'")]),
        ("x'ff'", &[(s(StrKind::Hex), "x'ff'")]),
        ("N'abc'", &[(s(StrKind::National), "N'abc'")]),
        ("be'x'", &[(Ident, "be"), (s(StrKind::Standard), "'x'")]),
        ("u & 1", &[(Ident, "u"), (Operator, "&"), (Number, "1")]),
        // dollar quotes
        ("$$a;b$$", &[(s(StrKind::Dollar), "$$a;b$$")]),
        ("$f$ $$ ' $f$", &[(s(StrKind::Dollar), "$f$ $$ ' $f$")]),
        ("$a$x$b$y$a$", &[(s(StrKind::Dollar), "$a$x$b$y$a$")]),
        ("$_1$x$_1$", &[(s(StrKind::Dollar), "$_1$x$_1$")]),
        ("$$x", &[(Unterminated(U::DollarString), "$$x")]),
        ("$q$x$Q$", &[(Unterminated(U::DollarString), "$q$x$Q$")]),
        ("$1", &[(Param, "$1")]),
        (
            "$12::int",
            &[(Param, "$12"), (Operator, "::"), (Ident, "int")],
        ),
        ("$1$", &[(Param, "$1"), (Other, "$")]),
        ("a$$b$$", &[(Ident, "a$$b$$")]),
        ("x$1", &[(Ident, "x$1")]),
        ("$ a", &[(Other, "$"), (Ident, "a")]),
        ("$a b", &[(Other, "$"), (Ident, "a"), (Ident, "b")]),
        // numbers
        ("42", &[(Number, "42")]),
        ("3.14", &[(Number, "3.14")]),
        (".5", &[(Number, ".5")]),
        ("5.", &[(Number, "5.")]),
        ("1e10", &[(Number, "1e10")]),
        ("1.5E-3", &[(Number, "1.5E-3")]),
        ("1e", &[(Number, "1"), (Ident, "e")]),
        ("0x1F", &[(Number, "0x1F")]),
        ("0o17", &[(Number, "0o17")]),
        ("0b101", &[(Number, "0b101")]),
        ("1_000_000", &[(Number, "1_000_000")]),
        ("1..10", &[(Number, "1"), (Punct, "."), (Number, ".10")]),
        ("t.a", &[(Ident, "t"), (Punct, "."), (Ident, "a")]),
        ("t.*", &[(Ident, "t"), (Punct, "."), (Operator, "*")]),
        // operators and punctuation
        ("a<>b", &[(Ident, "a"), (Operator, "<>"), (Ident, "b")]),
        ("a>=-1", &[(Ident, "a"), (Operator, ">=-"), (Number, "1")]),
        ("a||b", &[(Ident, "a"), (Operator, "||"), (Ident, "b")]),
        (
            "j->>'k'",
            &[
                (Ident, "j"),
                (Operator, "->>"),
                (s(StrKind::Standard), "'k'"),
            ],
        ),
        (
            "a+-- c\n1",
            &[
                (Ident, "a"),
                (Operator, "+"),
                (LineComment, "-- c"),
                (Number, "1"),
            ],
        ),
        (
            "a*/* c */1",
            &[
                (Ident, "a"),
                (Operator, "*"),
                (BlockComment, "/* c */"),
                (Number, "1"),
            ],
        ),
        (
            "x::text",
            &[(Ident, "x"), (Operator, "::"), (Ident, "text")],
        ),
        (
            "f(a := 1)",
            &[
                (Ident, "f"),
                (Punct, "("),
                (Ident, "a"),
                (Operator, ":="),
                (Number, "1"),
                (Punct, ")"),
            ],
        ),
        (
            "f(a => 1)",
            &[
                (Ident, "f"),
                (Punct, "("),
                (Ident, "a"),
                (Operator, "=>"),
                (Number, "1"),
                (Punct, ")"),
            ],
        ),
        (
            "a[1:2]",
            &[
                (Ident, "a"),
                (Punct, "["),
                (Number, "1"),
                (Punct, ":"),
                (Number, "2"),
                (Punct, "]"),
            ],
        ),
        (
            "?| @> <@ #-",
            &[
                (Operator, "?|"),
                (Operator, "@>"),
                (Operator, "<@"),
                (Operator, "#-"),
            ],
        ),
        ("\\x", &[(Other, "\\"), (Ident, "x")]),
        // identifiers
        ("_a1$", &[(Ident, "_a1$")]),
        ("café", &[(Ident, "café")]),
        ("ÉTÉ.x", &[(Ident, "ÉTÉ"), (Punct, "."), (Ident, "x")]),
    ];
    for (sql, want) in cases {
        assert_eq!(kinds(sql), want.to_vec(), "lexing {sql:?}");
    }
}

#[test]
fn offsets_cover_input() {
    let sql = "SELECT /* c */ 'a' || $$b$$, \"q\" FROM t -- x\n;";
    for t in Lexer::new(sql) {
        assert_eq!(&sql[t.offset..t.end()], t.text);
    }
}

#[test]
fn keyword_helpers() {
    let t = Lexer::new("SeLeCt").next().unwrap();
    assert!(t.is_kw("select"));
    assert!(!t.is_kw("selec"));
    let q = Lexer::new("\"select\"").next().unwrap();
    assert!(!q.is_kw("select"));
    assert!(q.name_eq("select"));
    let q = Lexer::new("\"Select\"").next().unwrap();
    assert!(!q.name_eq("select"));
    let q = Lexer::new("\"a\"\"b\"").next().unwrap();
    assert!(q.name_eq("a\"b"));
    assert_eq!(q.ident_value().unwrap(), "a\"b");
    let i = Lexer::new("MyName").next().unwrap();
    assert_eq!(i.ident_value().unwrap(), "myname");
    assert!(i.name_eq("myname"));
}

#[test]
fn string_values() {
    let v = |s: &str| {
        Lexer::new(s)
            .next()
            .unwrap()
            .string_value()
            .unwrap()
            .into_owned()
    };
    assert_eq!(v("'it''s'"), "it's");
    assert_eq!(v("'a\\b'"), "a\\b");
    assert_eq!(v("E'it\\'s'"), "it's");
    assert_eq!(v("E'a\\nb'"), "a\nb");
    assert_eq!(v("E'a''b'"), "a'b");
    assert_eq!(v("$$x y$$"), "x y");
    assert_eq!(v("$tag$x $$ y$tag$"), "x $$ y");
    assert_eq!(v("N'n'"), "n");
    assert_eq!(v("''"), "");
}

#[test]
fn never_panics_on_prefixes() {
    // Every prefix (at char boundaries) of tricky input lexes without panicking and the tokens
    // tile the non-whitespace input.
    let sql =
        "SELECT E'\\'', $a$ $$ $a$, U&\"x\", /* /* */ */ 1.5e-3, $1, x'0f', \"a\"\"b\" -- c\n;é";
    for (i, _) in sql.char_indices().chain(std::iter::once((sql.len(), ' '))) {
        let p = &sql[..i];
        for t in Lexer::new(p) {
            assert_eq!(&p[t.offset..t.end()], t.text);
        }
        let _ = split_statements(p).count();
    }
}

#[test]
fn split_table() {
    let cases: &[(&str, &[&str])] = &[
        ("", &[]),
        (";;", &[]),
        ("SELECT 1", &["SELECT 1"]),
        ("SELECT 1;", &["SELECT 1"]),
        ("SELECT 1; SELECT 2", &["SELECT 1", "SELECT 2"]),
        ("SELECT ';'; SELECT 2", &["SELECT ';'", "SELECT 2"]),
        ("SELECT \";\"; x", &["SELECT \";\"", "x"]),
        ("SELECT $$;$$; x", &["SELECT $$;$$", "x"]),
        ("SELECT /* ; */ 1; -- ;\n x", &["SELECT /* ; */ 1", "-- ;\n x"]),
        ("SELECT 1; -- trailing", &["SELECT 1"]),
        ("SELECT E'\\';'; x", &["SELECT E'\\';'", "x"]),
        (
            "CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO a VALUES (1); INSERT INTO b VALUES (2)); SELECT 1",
            &[
                "CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO a VALUES (1); INSERT INTO b VALUES (2))",
                "SELECT 1",
            ],
        ),
        (
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT CASE WHEN true THEN 2 END; END; SELECT 3",
            &[
                "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT CASE WHEN true THEN 2 END; END",
                "SELECT 3",
            ],
        ),
        (
            "create or replace procedure p() begin atomic insert into t values (1); end; begin; commit",
            &[
                "create or replace procedure p() begin atomic insert into t values (1); end",
                "begin",
                "commit",
            ],
        ),
        ("BEGIN; SELECT 1; END;", &["BEGIN", "SELECT 1", "END"]),
        ("SELECT 'x", &["SELECT 'x"]),
        ("SELECT 1; /* open", &["SELECT 1", "/* open"]),
    ];
    for (sql, want) in cases {
        let got: Vec<&str> = split_statements(sql).collect();
        assert_eq!(got, want.to_vec(), "splitting {sql:?}");
    }
}

#[test]
fn ahead_looks_ahead_past_comments_and_moves_on() {
    let mut a = super::lexer::Ahead::new("SET /* c */ a -- d\n . b = 1");
    fn text(t: Option<super::lexer::Token<'_>>) -> Option<&str> {
        t.map(|t| t.text)
    }
    assert_eq!(text(a.at(3)), Some("b"));
    assert_eq!(text(a.at(0)), Some("SET"));
    a.advance();
    assert_eq!(text(a.at(0)), Some("a"));
    assert_eq!(text(a.at(1)), Some("."));
    a.advance();
    a.advance();
    a.advance();
    assert_eq!(text(a.at(0)), Some("="));
    // Moving on past what was never looked at reads it from the lexer.
    let mut b = super::lexer::Ahead::new("x y z");
    b.advance();
    b.advance();
    assert_eq!(text(b.at(0)), Some("z"));
    assert_eq!(text(b.at(1)), None);
    b.advance();
    assert_eq!(text(b.at(0)), None);
}
