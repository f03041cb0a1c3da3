//! The process a `pg_terminate_backend(...)` call names, when the text says it outright: an
//! integer constant or a parameter (`$n`, bound later). Only statements whose analysis has
//! [`Effects::TERMINATE`](super::Effects::TERMINATE) are looked at, so this pass runs rarely.

use super::lexer::{Lexer, Token, TokenKind};

/// The argument of the first `pg_terminate_backend(` call with a plain one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TerminateArg {
    /// `pg_terminate_backend(12345)`.
    Pid(i32),
    /// `pg_terminate_backend($n)`: parameter `n` (1-based) of the Bind.
    Param(usize),
}

/// Finds `[pg_catalog.]pg_terminate_backend(<integer> | $n [::type] {) | ,})` outside strings
/// and comments. A computed argument (a column, an expression) names no pid the proxy knows.
pub fn terminate_arg(sql: &str) -> Option<TerminateArg> {
    let mut toks = Lexer::new(sql).filter(|t| !t.is_comment());
    while let Some(t) = toks.next() {
        if !t.name_eq("pg_terminate_backend") {
            continue;
        }
        let mut la = toks.clone();
        if !la.next().is_some_and(|t| t.is_punct(b'(')) {
            continue;
        }
        let Some(arg) = la.next().and_then(|a| value(&a)) else {
            continue;
        };
        let mut after = la.next();
        if after.is_some_and(|t| t.kind == TokenKind::Operator && t.text == "::") {
            // A cast to a type name: `$1::int4`, `$1::integer`, `12::pg_catalog.int4`.
            after = la.find(|t| !(t.is_name() || t.is_punct(b'.')));
        }
        if after.is_some_and(|t| t.is_punct(b')') || t.is_punct(b',')) {
            return Some(arg);
        }
    }
    None
}

fn value(t: &Token<'_>) -> Option<TerminateArg> {
    match t.kind {
        TokenKind::Number => t.text.parse().ok().map(TerminateArg::Pid),
        TokenKind::Param => t.text[1..]
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .map(TerminateArg::Param),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{terminate_arg, TerminateArg::*};

    #[test]
    fn plain_arguments_are_found() {
        for (sql, want) in [
            ("select pg_terminate_backend(12345)", Some(Pid(12345))),
            ("SELECT PG_TERMINATE_BACKEND( 7 )", Some(Pid(7))),
            (
                "select pg_catalog.pg_terminate_backend(42, 1000)",
                Some(Pid(42)),
            ),
            ("SELECT pg_terminate_backend($1)", Some(Param(1))),
            ("SELECT pg_terminate_backend($2::int4)", Some(Param(2))),
            (
                "SELECT pg_terminate_backend(9::pg_catalog.int4)",
                Some(Pid(9)),
            ),
            (
                "select /* c */ pg_terminate_backend /* c */ (5)",
                Some(Pid(5)),
            ),
            ("select 1; select pg_terminate_backend(3)", Some(Pid(3))),
        ] {
            assert_eq!(terminate_arg(sql), want, "{sql}");
        }
    }

    #[test]
    fn computed_or_quoted_arguments_name_no_pid() {
        for sql in [
            "select pg_terminate_backend(pid) from pg_stat_activity",
            "select pg_terminate_backend(1 + 2)",
            "select pg_terminate_backend(-1)",
            "select pg_terminate_backend(99999999999)",
            "select pg_terminate_backend(1.5)",
            "select 'pg_terminate_backend(1)'",
            "select 1 -- pg_terminate_backend(1)",
            "select pg_terminate_backend",
            "select pg_terminate_backend($0)",
        ] {
            assert_eq!(terminate_arg(sql), None, "{sql}");
        }
    }
}
