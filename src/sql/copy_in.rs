//! Whether Query text runs a `COPY ... FROM STDIN`: the server then reads nothing but copy
//! data until the client ends the copy, so the proxy must not queue its own query behind it.
//! Only looked at for Queries that also change settings (where the proxy would queue one).

use super::lexer::Lexer;

/// Whether a statement of `sql` is `COPY ... FROM STDIN` (outside strings and comments).
pub fn copies_from_stdin(sql: &str) -> bool {
    let mut starts = true;
    let mut copy = false;
    let mut after_from = false;
    for t in Lexer::new(sql).filter(|t| !t.is_comment()) {
        if t.is_punct(b';') {
            (starts, copy, after_from) = (true, false, false);
            continue;
        }
        if starts {
            copy = t.is_kw("copy");
            starts = false;
            continue;
        }
        if copy && after_from && t.is_kw("stdin") {
            return true;
        }
        after_from = copy && t.is_kw("from");
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_copy_from_stdin_among_statements() {
        for yes in [
            "COPY t FROM STDIN",
            "set search_path to s; copy t (a, b) from stdin with (format csv)",
            "RESET ALL; /* load */ COPY s.t FROM\n  STDIN;",
        ] {
            assert!(copies_from_stdin(yes), "{yes}");
        }
        for no in [
            "COPY t TO STDOUT",
            "COPY (SELECT 'from stdin') TO STDOUT",
            "SET x = 1; SELECT 'COPY t FROM STDIN'",
            "-- COPY t FROM STDIN\nSELECT 1",
            "COPY t FROM '/tmp/f'",
            "SELECT stdin FROM t",
        ] {
            assert!(!copies_from_stdin(no), "{no}");
        }
    }
}
