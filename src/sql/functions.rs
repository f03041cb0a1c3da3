//! Function names in SQL text, for routing by what the database says of its own functions:
//! which functions a statement calls, and which functions a `CREATE FUNCTION` or `ALTER
//! FUNCTION` makes volatile.

use super::lexer::{Lexer, Token};

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

/// The functions `sql` creates or alters as volatile: `CREATE [OR REPLACE] FUNCTION name`
/// without `IMMUTABLE` or `STABLE` (volatile is the default), and `ALTER FUNCTION name ...
/// VOLATILE`. Names as PostgreSQL resolves them, without their schema.
pub fn volatile_functions_defined(sql: &str) -> Vec<String> {
    let toks: Vec<Token<'_>> = Lexer::new(sql).filter(|t| !t.is_comment()).collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let starts = toks[i].is_kw("function")
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
                }
            }
            j += 1;
        }
        if let Some(n) = name.filter(|_| volatile) {
            out.push(n);
        }
        i = j;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
