//! The `BEGIN` and `START TRANSACTION` statements the proxy may answer itself before the
//! transaction has a server (it sends them later, together with the transaction's first
//! statement): only those PostgreSQL cannot refuse, checked against its grammar
//! (`gram.y`: `BEGIN [WORK | TRANSACTION] [mode [[,] mode ...]]`, `START TRANSACTION [...]`).
//! A refused `BEGIN` sent that way would leave the first statement running outside the
//! transaction the client believes it opened, committing on its own; anything this module
//! does not accept is sent at once, and the server answers it.

use super::lexer::{Lexer, Token};

/// What a `BEGIN` that the server cannot refuse asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BeginModes {
    /// `READ ONLY` (true) or `READ WRITE` (false), if given.
    pub read_only: Option<bool>,
    /// `ISOLATION LEVEL SERIALIZABLE` (true; a hot standby refuses it) or another level
    /// (false), if given.
    pub serializable: Option<bool>,
}

/// Whether `sql` (a `COMMIT`, `END`, `ROLLBACK` or `ABORT`) ends with `AND CHAIN`, which
/// starts a new transaction at once (`AND NO CHAIN` does not).
pub fn chains(sql: &str) -> bool {
    let words: Vec<Token<'_>> = Lexer::new(sql)
        .filter(|t| !t.is_comment() && !t.is_punct(b';'))
        .collect();
    match words.as_slice() {
        [.., and, chain] => and.is_kw("and") && chain.is_kw("chain"),
        _ => false,
    }
}

/// Whether the first statement of `sql` is one PostgreSQL runs in a failed transaction block
/// (its `IsTransactionExitStmt`): `COMMIT`/`END`, `ROLLBACK`/`ABORT` (`ROLLBACK TO SAVEPOINT`
/// too) or `PREPARE TRANSACTION 'gid'`, not `COMMIT PREPARED`, `ROLLBACK PREPARED` nor SQL
/// `PREPARE`. Any other is refused there with 25P02.
pub fn exits_failed_block(sql: &str) -> bool {
    let mut words = Lexer::new(sql)
        .filter(|t| !t.is_comment())
        .skip_while(|t| t.is_punct(b';'));
    let Some(first) = words.next() else {
        return false;
    };
    if first.is_kw("end") || first.is_kw("abort") {
        return true;
    }
    if first.is_kw("commit") || first.is_kw("rollback") {
        return !words.next().is_some_and(|t| t.is_kw("prepared"));
    }
    // (`PREPARE transaction AS ...` prepares a statement named "transaction".)
    first.is_kw("prepare")
        && words.next().is_some_and(|t| t.is_kw("transaction"))
        && words.next().is_some_and(|t| t.string_value().is_some())
}

/// The modes of `sql` if it is one well-formed `BEGIN` or `START TRANSACTION` (comments and a
/// trailing `;` allowed) that names each kind of mode at most once.
pub fn begin_modes(sql: &str) -> Option<BeginModes> {
    let mut words = Lexer::new(sql).filter(|t| !t.is_comment());
    let mut next = move || words.next();
    let first = next()?;
    let t = if first.is_kw("begin") {
        match next() {
            Some(w) if w.is_kw("work") || w.is_kw("transaction") => next(),
            other => other,
        }
    } else if first.is_kw("start") && next()?.is_kw("transaction") {
        next()
    } else {
        return None;
    };
    modes_list(t, next)
}

/// The modes of `sql` if it is one well-formed `SET TRANSACTION` (a trailing `;` allowed; no
/// comment, which may hold a routing hint) that names each kind of mode at most once.
pub fn set_transaction_modes(sql: &str) -> Option<BeginModes> {
    if Lexer::new(sql).any(|t| t.is_comment()) {
        return None;
    }
    let mut words = Lexer::new(sql);
    let mut next = move || words.next();
    if !next()?.is_kw("set") || !next()?.is_kw("transaction") {
        return None;
    }
    let first = next()?;
    modes_list(Some(first), next)
}

/// A transaction's mode list, from its first word `t` on (`next` gives the words after it).
fn modes_list<'a>(
    mut t: Option<Token<'a>>,
    mut next: impl FnMut() -> Option<Token<'a>>,
) -> Option<BeginModes> {
    let mut m = BeginModes::default();
    let mut deferrable = false;
    let mut items = 0;
    let mut after_comma = false;
    while let Some(w) = t {
        let kw = |t: Option<Token<'_>>, k: &str| t.is_some_and(|t| t.is_kw(k));
        if w.is_punct(b';') {
            // The end: nothing may follow.
            return (!after_comma && next().is_none()).then_some(m);
        }
        if w.is_punct(b',') {
            if items == 0 || after_comma {
                return None;
            }
            after_comma = true;
            t = next();
            continue;
        }
        if w.is_kw("isolation") {
            if m.serializable.is_some() || !kw(next(), "level") {
                return None;
            }
            let level = next()?;
            m.serializable = Some(level.is_kw("serializable"));
            if level.is_kw("repeatable") {
                if !kw(next(), "read") {
                    return None;
                }
            } else if level.is_kw("read") {
                let which = next()?;
                if !which.is_kw("committed") && !which.is_kw("uncommitted") {
                    return None;
                }
            } else if !level.is_kw("serializable") {
                return None;
            }
        } else if w.is_kw("read") {
            let which = next()?;
            let ro = if which.is_kw("only") {
                true
            } else if which.is_kw("write") {
                false
            } else {
                return None;
            };
            if m.read_only.replace(ro).is_some() {
                return None;
            }
        } else if w.is_kw("deferrable") || w.is_kw("not") {
            if deferrable || (w.is_kw("not") && !kw(next(), "deferrable")) {
                return None;
            }
            deferrable = true;
        } else {
            return None;
        }
        items += 1;
        after_comma = false;
        t = next();
    }
    (!after_comma).then_some(m)
}

#[cfg(test)]
mod tests {

    #[test]
    fn and_chain_is_found() {
        for sql in [
            "COMMIT AND CHAIN",
            "end and chain;",
            "ROLLBACK AND /* x */ CHAIN -- y",
        ] {
            assert!(chains(sql), "{sql}");
        }
        for sql in [
            "COMMIT",
            "COMMIT AND NO CHAIN",
            "ROLLBACK; -- and chain",
            "abort",
        ] {
            assert!(!chains(sql), "{sql}");
        }
    }
    use super::*;

    #[test]
    fn what_a_failed_block_runs_is_told_apart() {
        for sql in [
            "COMMIT",
            "end work",
            "/* c */ ROLLBACK TO SAVEPOINT s",
            "rollback and chain; select 1",
            "ABORT",
            "PREPARE TRANSACTION 'g'",
            "; COMMIT",
            "COMMIT; PREPARED",
        ] {
            assert!(exits_failed_block(sql), "{sql}");
        }
        for sql in [
            "",
            ";",
            "SELECT 1; COMMIT",
            "COMMIT PREPARED 'g'",
            "rollback prepared 'g'",
            "PREPARE p AS SELECT 1",
            "PREPARE transaction AS SELECT 1",
            "PREPARE; TRANSACTION 'g'",
            "SAVEPOINT s",
            "RELEASE s",
        ] {
            assert!(!exits_failed_block(sql), "{sql}");
        }
    }

    #[test]
    fn set_transaction_modes_are_read() {
        let ro = BeginModes {
            read_only: Some(true),
            ..Default::default()
        };
        assert_eq!(set_transaction_modes("SET TRANSACTION READ ONLY"), Some(ro));
        assert_eq!(
            set_transaction_modes("set transaction read only;"),
            Some(ro)
        );
        assert_eq!(
            set_transaction_modes("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"),
            Some(BeginModes {
                serializable: Some(false),
                ..ro
            })
        );
        assert_eq!(
            set_transaction_modes("SET TRANSACTION READ ONLY ISOLATION LEVEL SERIALIZABLE"),
            Some(BeginModes {
                serializable: Some(true),
                ..ro
            })
        );
        for sql in [
            "SET TRANSACTION",
            "SET TRANSACTION SNAPSHOT '00000003-0000001B-1'",
            "SET TRANSACTION READ ONLY /* switchyard:primary */",
            "-- x\nSET TRANSACTION READ ONLY",
            "SET TRANSACTION READ ONLY; SELECT 1",
            "SET TRANSACTION READ ONLY, READ WRITE",
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
            "SET LOCAL transaction_read_only = on",
            "BEGIN READ ONLY",
        ] {
            assert_eq!(set_transaction_modes(sql), None, "{sql}");
        }
    }

    #[test]
    fn well_formed_begins_are_accepted() {
        let plain = BeginModes::default();
        let ro = BeginModes {
            read_only: Some(true),
            ..plain
        };
        for (sql, want) in [
            ("BEGIN", plain),
            ("begin;", plain),
            (" BEGIN WORK ; ", plain),
            ("BEGIN TRANSACTION", plain),
            ("START TRANSACTION", plain),
            ("/* c */ BEGIN -- c\n", plain),
            ("BEGIN READ ONLY", ro),
            ("START TRANSACTION READ ONLY, DEFERRABLE", ro),
            (
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ WRITE",
                BeginModes {
                    read_only: Some(false),
                    serializable: Some(false),
                },
            ),
            (
                "begin isolation level read committed, not deferrable",
                BeginModes {
                    serializable: Some(false),
                    ..plain
                },
            ),
            (
                "BEGIN ISOLATION LEVEL READ UNCOMMITTED",
                BeginModes {
                    serializable: Some(false),
                    ..plain
                },
            ),
            (
                "BEGIN TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE",
                BeginModes {
                    read_only: Some(true),
                    serializable: Some(true),
                },
            ),
        ] {
            assert_eq!(begin_modes(sql), Some(want), "{sql:?}");
        }
    }

    #[test]
    fn anything_the_server_could_refuse_is_not() {
        for sql in [
            "BEGIN ISOLATION LEVEL FOO",
            "BEGIN garbage",
            "BEGIN READ",
            "BEGIN READ ONLY,",
            "BEGIN , READ ONLY",
            "BEGIN READ ONLY,, DEFERRABLE",
            "BEGIN READ ONLY READ WRITE",
            "BEGIN ISOLATION LEVEL SERIALIZABLE ISOLATION LEVEL READ COMMITTED",
            "BEGIN DEFERRABLE NOT DEFERRABLE",
            "BEGIN NOT READ ONLY",
            "BEGIN ISOLATION SERIALIZABLE",
            "BEGIN ISOLATION LEVEL REPEATABLE",
            "BEGIN ISOLATION LEVEL READ",
            "BEGIN WORK WORK",
            "BEGIN; SELECT 1",
            "BEGIN;;",
            "BEGIN (",
            "BEGIN 'x'",
            "BEGIN \"read\" only",
            "START",
            "START WORK",
            "BEGIN /* unterminated",
            "COMMIT",
            "",
        ] {
            assert_eq!(begin_modes(sql), None, "{sql:?}");
        }
    }
}
