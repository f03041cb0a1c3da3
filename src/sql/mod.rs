//! SQL analysis for routing: a real (allocation-free) lexer and the per-query decisions the
//! proxy needs.
//!
//! * [`lexer`]: an iterator of [`Token`]s borrowing from the input (comments, every kind of
//!   quoting, dollar-quoted bodies, numbers, operators, punctuation, identifiers).
//! * [`split_statements`]: splits a query string on top-level `;`.
//! * [`Classifier::analyze`]: one pass per statement over the tokens, producing an
//!   [`Analysis`]: where the string may run in autocommit ([`Route`] and [`Reason`]), the
//!   routing hint, the session effects ([`Effects`], [`PinReason`]), transaction control
//!   ([`TxnControl`]), and the `DEALLOCATE` / `SET switchyard.*` commands the proxy handles
//!   itself.
//!
//! # Routing contract
//!
//! [`Route::Replica`] is returned only for reads:
//!
//! * `SELECT` (also parenthesised, and set operations), `WITH ... SELECT` (also `RECURSIVE`),
//!   `VALUES`, `TABLE x`, `SHOW x`;
//! * `EXPLAIN` of `SELECT`/`WITH`/`VALUES`/`TABLE`/`INSERT`/`UPDATE`/`DELETE`/`MERGE` without
//!   `ANALYZE` (the statement is only planned), and `EXPLAIN ANALYZE` of a read;
//! * `COPY table TO STDOUT` and `COPY (read) TO STDOUT`.
//!
//! A read still goes to the primary when it contains, outside strings, comments and quoted
//! identifiers: a locking clause (`FOR UPDATE`, `FOR NO KEY UPDATE`, `FOR SHARE`,
//! `FOR KEY SHARE`), `SELECT ... INTO`, a data-modifying CTE, or a call of a function that must
//! run on the primary (see [`Classifier`]). Everything else goes to the primary; a
//! multi-statement string goes to a replica only if every statement would; a string the lexer
//! cannot make sense of (unterminated quote, comment or dollar quote, unbalanced parentheses)
//! goes to the primary as "unparsable". An empty string (only whitespace, comments, `;`) is
//! routed to a replica with reason "empty".
//!
//! A hint in the leading comments, `/* switchyard:primary */` or `/* switchyard:replica */`
//! (also as a `--` comment), is reported in [`Analysis::hint`] and overrides the route (reason
//! "hint ..."), except for empty and unparsable strings. Whether to honour it is the proxy's
//! decision.
//!
//! # Allocation
//!
//! `analyze` does not allocate, except when it returns a `DEALLOCATE` name or a
//! `switchyard.*` name/value that needs case folding or unquoting (returned as `Cow::Owned`).
//! Names configured in [`Classifier::new`] are interned once for the `'static` reasons.

mod begin;
pub mod classify;
mod copy_in;
mod effects;
mod functions;
pub mod lexer;
pub mod names;
mod plain;
mod plain_write;
mod split;
mod terminate;

#[cfg(test)]
mod classify_tests;
#[cfg(test)]
mod corpus_tests;
#[cfg(test)]
mod effects_tests;
#[cfg(test)]
mod lexer_tests;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::fmt;

pub use begin::{begin_modes, chains, exits_failed_block, set_transaction_modes, BeginModes};
pub use classify::Classifier;
pub use copy_in::copies_from_stdin;
pub use effects::{dropped_database, of_function_call};
pub use functions::{
    body_keeps_state, body_pin, body_sets_settings, called_names, calls_any, stable_body_effects,
    volatile_functions_defined, Defined,
};
pub use lexer::{Lexer, StrKind, Token, TokenKind, Unterminated};
pub use split::split_statements;
pub use terminate::{terminate_arg, TerminateArg};

/// Where a statement string must run (in autocommit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    Primary,
    Replica,
}

impl Route {
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Primary => "primary",
            Route::Replica => "replica",
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a string got its [`Route`]. The `&'static str` payloads are upper-case statement
/// keywords (`"SELECT"`, `"INSERT"`), locking clauses (`"FOR UPDATE"`) or lower-case function
/// names (`"nextval"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Nothing to run: "empty".
    Empty,
    /// A read: "read: SELECT".
    Read(&'static str),
    /// A statement that writes or otherwise needs the primary: "write: INSERT".
    Write(&'static str),
    /// A read with a locking clause: "locking clause FOR UPDATE".
    Locking(&'static str),
    /// `SELECT ... INTO` creates a table: "SELECT INTO".
    SelectInto,
    /// `WITH x AS (INSERT/UPDATE/DELETE/MERGE ...)`: "data-modifying CTE".
    DataModifyingCte,
    /// A read of a view only the primary fills: "primary-only view pg_prepared_xacts".
    PrimaryView(&'static str),
    /// A call of a function that must run on the primary: "writing function nextval".
    WritingFunction(&'static str),
    /// A read of what tells a primary from a standby (`SHOW transaction_read_only`,
    /// `in_hot_standby` or `ALL`; `current_setting()` of the first two, `pg_settings`,
    /// `pg_show_all_settings()`, `pg_is_in_recovery()`): the client's session is the
    /// primary's, and a replica would answer "on" (drivers asked for a writable server check
    /// this); or of what else only the primary answers for the session without writing
    /// (`pg_backend_pid()`, `pg_current_wal_lsn()`: names.rs `ASKING_FUNCTIONS`): "server role
    /// transaction_read_only".
    ServerRole(&'static str),
    /// BEGIN/START/COMMIT/END/ROLLBACK/ABORT/SAVEPOINT/RELEASE/PREPARE TRANSACTION/...:
    /// "transaction control".
    TransactionControl,
    /// SET/RESET/DISCARD/DEALLOCATE/PREPARE/EXECUTE/LISTEN/UNLISTEN/DECLARE/FETCH/MOVE/CLOSE/
    /// LOAD: "session command".
    SessionCommand,
    /// Unterminated quote/comment or unbalanced parentheses: "unparsable".
    Unparsable,
    /// A leading routing hint: "hint /* switchyard:primary */".
    Hint(Route),
    /// Several statements, the first a read and a later one not: "multi-statement with a
    /// write".
    MultiStatementWrite,
    /// The first word is not a statement PostgreSQL knows: "unrecognized statement".
    Unrecognized,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Empty => f.write_str("empty"),
            Reason::Read(k) => write!(f, "read: {k}"),
            Reason::Write(k) => write!(f, "write: {k}"),
            Reason::Locking(k) => write!(f, "locking clause {k}"),
            Reason::SelectInto => f.write_str("SELECT INTO"),
            Reason::DataModifyingCte => f.write_str("data-modifying CTE"),
            Reason::WritingFunction(n) => write!(f, "writing function {n}"),
            Reason::PrimaryView(n) => write!(f, "primary-only view {n}"),
            Reason::ServerRole(n) => write!(f, "server role {n}"),
            Reason::TransactionControl => f.write_str("transaction control"),
            Reason::SessionCommand => f.write_str("session command"),
            Reason::Unparsable => f.write_str("unparsable"),
            Reason::Hint(r) => write!(f, "hint /* switchyard:{r} */"),
            Reason::MultiStatementWrite => f.write_str("multi-statement with a write"),
            Reason::Unrecognized => f.write_str("unrecognized statement"),
        }
    }
}

/// Session effects of a query string, as bit flags (hand-written; union over all statements).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Effects(u16);

impl Effects {
    /// No effects.
    pub const NONE: Effects = Effects(0);
    /// May change session-level settings: `SET` (not `SET LOCAL`, not `SET TRANSACTION`),
    /// `SET SESSION CHARACTERISTICS`, `RESET`, `DISCARD ALL`, a `set_config(` call anywhere.
    pub const SETTINGS: Effects = Effects(1);
    /// Creates state that cannot move between server connections (see [`PinReason`]).
    pub const PIN: Effects = Effects(2);
    /// `DISCARD ALL` alone in its Query (elsewhere it fails: it cannot run in a transaction
    /// block, and a multi-statement Query is one): clears the prepared statements.
    pub const DISCARD_ALL: Effects = Effects(4);
    /// Reads the session's sequence state: a `currval(` or `lastval(` call.
    pub const SEQUENCE_STATE: Effects = Effects(8);
    /// Clears the session's sequence state: `DISCARD SEQUENCES`, `DISCARD ALL`.
    pub const SEQUENCE_RESET: Effects = Effects(16);
    /// `DEALLOCATE ALL`: clears the prepared statements (also inside a transaction block).
    pub const DEALLOCATE_ALL: Effects = Effects(32);
    /// Changes the schema (`CREATE` but of temporary objects, `ALTER`, `DROP`, `IMPORT
    /// FOREIGN SCHEMA`): a statement parsed before it may describe its parameters or results
    /// wrongly, so one parsed after it must be parsed anew.
    pub const SCHEMA: Effects = Effects(64);
    /// Calls `pg_terminate_backend(`: when its argument is a literal or a parameter
    /// ([`terminate_arg`]), the proxy ends its own client of that pid too.
    pub const TERMINATE: Effects = Effects(128);
    /// A `DO` block, or a call of one of the database's own functions (found by the session
    /// from the catalog), whose body may leave state in the server session (a temporary
    /// table, a session advisory lock, a `LISTEN`): after its transaction the proxy looks for
    /// such state, and pins the client if there is some.
    pub const STATE: Effects = Effects(256);
    /// `COPY ... FROM STDIN`: the server takes copy data from the client, and ignores its
    /// Syncs, until the client ends the copy.
    pub const COPY_IN: Effects = Effects(512);
    /// A named protocol-level statement whose text is `DEALLOCATE name`: when it runs, `name`
    /// is one of the client's statements, which the server knows by another name (set by the
    /// session, not by [`analyze`]).
    pub const DEALLOCATE_NAME: Effects = Effects(1024);
    /// May change settings for the rest of its transaction: `SET LOCAL` (not of the
    /// transaction's modes or constraints), a `DO` block whose body runs `SET LOCAL`. What a
    /// Parse after it in the transaction is analysed under is not the session's settings.
    pub const LOCAL_SETTINGS: Effects = Effects(2048);
    /// `RESET ALL` (as `DISCARD ALL`, outside a transaction block): every setting back to
    /// its default, the proxy's own `switchyard.*` too.
    pub const RESET_ALL: Effects = Effects(4096);

    pub const fn empty() -> Self {
        Effects(0)
    }
    pub const fn bits(self) -> u16 {
        self.0
    }
    pub const fn from_bits_truncate(bits: u16) -> Self {
        Effects(bits & 2047)
    }
    /// Whether all flags of `other` are set in `self`.
    pub const fn contains(self, other: Effects) -> bool {
        self.0 & other.0 == other.0
    }
    /// Whether any flag of `other` is set in `self`.
    pub const fn intersects(self, other: Effects) -> bool {
        self.0 & other.0 != 0
    }
    pub const fn union(self, other: Effects) -> Self {
        Effects(self.0 | other.0)
    }
    /// The flags of `self` that `other` does not have.
    pub const fn difference(self, other: Effects) -> Self {
        Effects(self.0 & !other.0)
    }
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub fn insert(&mut self, other: Effects) {
        self.0 |= other.0;
    }
    pub fn remove(&mut self, other: Effects) {
        self.0 &= !other.0;
    }
}

impl std::ops::BitOr for Effects {
    type Output = Effects;
    fn bitor(self, rhs: Effects) -> Effects {
        self.union(rhs)
    }
}

impl std::ops::BitOrAssign for Effects {
    fn bitor_assign(&mut self, rhs: Effects) {
        self.insert(rhs);
    }
}

impl fmt::Debug for Effects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("Effects(NONE)");
        }
        f.write_str("Effects(")?;
        let mut first = true;
        for (flag, name) in [
            (Effects::SETTINGS, "SETTINGS"),
            (Effects::PIN, "PIN"),
            (Effects::DISCARD_ALL, "DISCARD_ALL"),
            (Effects::SEQUENCE_STATE, "SEQUENCE_STATE"),
            (Effects::SEQUENCE_RESET, "SEQUENCE_RESET"),
            (Effects::DEALLOCATE_ALL, "DEALLOCATE_ALL"),
            (Effects::COPY_IN, "COPY_IN"),
            (Effects::SCHEMA, "SCHEMA"),
            (Effects::TERMINATE, "TERMINATE"),
            (Effects::STATE, "STATE"),
            (Effects::DEALLOCATE_NAME, "DEALLOCATE_NAME"),
            (Effects::LOCAL_SETTINGS, "LOCAL_SETTINGS"),
            (Effects::RESET_ALL, "RESET_ALL"),
        ] {
            if self.contains(flag) {
                if !first {
                    f.write_str(" | ")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        f.write_str(")")
    }
}

/// Why a query pins its client to one server connection (first reason found).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PinReason {
    /// `CREATE TEMP TABLE/VIEW/SEQUENCE` (not `ON COMMIT DROP`), `SELECT ... INTO TEMP`,
    /// objects created in `pg_temp`.
    TempTable,
    /// Session-level advisory locks: `pg_advisory_lock[_shared]`,
    /// `pg_try_advisory_lock[_shared]`.
    AdvisoryLock,
    /// `LISTEN`.
    Listen,
    /// SQL-level `PREPARE name AS ...`.
    Prepare,
    /// `DECLARE ... WITH HOLD`.
    HoldCursor,
    /// `SET [SESSION] ROLE`, `SET [SESSION] SESSION AUTHORIZATION`.
    Role,
    /// `LOAD 'library'`.
    Load,
    /// `dblink_connect[_u](...)` (a named dblink connection lives in the server session).
    Dblink,
    /// A non-exclusive backup (`pg_backup_start`, `pg_start_backup`) or a replication origin
    /// (`pg_replication_origin_session_setup`): its end must run in the same server session.
    ServerSession,
    /// `SET seed`, `setseed()`: what `random()` returns next is the server session's.
    Seed,
}

impl PinReason {
    /// Every reason.
    pub const ALL: [PinReason; 10] = [
        PinReason::TempTable,
        PinReason::AdvisoryLock,
        PinReason::Listen,
        PinReason::Prepare,
        PinReason::HoldCursor,
        PinReason::Role,
        PinReason::Load,
        PinReason::Dblink,
        PinReason::ServerSession,
        PinReason::Seed,
    ];

    /// A metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            PinReason::TempTable => "temp_table",
            PinReason::AdvisoryLock => "advisory_lock",
            PinReason::Listen => "listen",
            PinReason::Prepare => "prepare",
            PinReason::HoldCursor => "hold_cursor",
            PinReason::Role => "role",
            PinReason::Load => "load",
            PinReason::Dblink => "dblink",
            PinReason::ServerSession => "server_session",
            PinReason::Seed => "seed",
        }
    }
}

impl fmt::Display for PinReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Transaction control done by the FIRST statement of a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TxnControl {
    /// Not transaction control (also `SAVEPOINT`, `RELEASE`, `ROLLBACK TO`, `COMMIT PREPARED`,
    /// `ROLLBACK PREPARED`).
    #[default]
    None,
    /// `BEGIN` / `START TRANSACTION`; `read_only` when the modes include `READ ONLY`.
    Begin { read_only: bool },
    /// `SET TRANSACTION ... READ ONLY` (also `SET [LOCAL] transaction_read_only = on`).
    SetTransactionReadOnly,
    /// `SET TRANSACTION ... READ WRITE` or `... ISOLATION LEVEL SERIALIZABLE` (also
    /// `SET [LOCAL] transaction_read_only = off`, `transaction_isolation = serializable`):
    /// modes a hot standby refuses.
    SetTransactionReadWrite,
    /// `COMMIT` / `END` (also `... AND CHAIN`).
    Commit,
    /// `PREPARE TRANSACTION 'gid'`: ends the transaction block, leaving it prepared (an empty
    /// one too: it must reach the server).
    PrepareTransaction,
    /// `ROLLBACK` / `ABORT` (not `ROLLBACK TO SAVEPOINT`).
    Rollback,
}

/// Whether a backslash in a client's text may not mean what the lexer takes it to mean: with
/// `standard_conforming_strings` off, `'...'` strings take backslash escapes; in the client
/// encodings whose multibyte characters may end in the byte of `\\` (SJIS, BIG5, GBK, UHC,
/// GB18030, JOHAB), the server reads that byte as part of a character, the lexer (seeing
/// the bytes, not the characters) as an escape. Either way a quote could end a string where
/// the lexer sees none, and hide a statement from it.
pub fn backslashes_are_opaque(standard_conforming_strings: &str, client_encoding: &str) -> bool {
    const TWO_BYTE_ASCII_TRAIL: [&str; 7] = [
        "SJIS",
        "SHIFT_JIS_2004",
        "BIG5",
        "GBK",
        "UHC",
        "GB18030",
        "JOHAB",
    ];
    standard_conforming_strings.eq_ignore_ascii_case("off")
        || TWO_BYTE_ASCII_TRAIL
            .iter()
            .any(|e| e.eq_ignore_ascii_case(client_encoding))
}

/// A whole-string `DEALLOCATE [PREPARE] name` or `DEALLOCATE [PREPARE] ALL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deallocate<'a> {
    /// The statement name, unquoted / case-folded per SQL identifier rules.
    Name(Cow<'a, str>),
    All,
}

/// A whole-string `EXECUTE name [(arguments)]`: the prepared statement's name (unquoted /
/// case-folded) and where it is written in the text (to name it otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Execute<'a> {
    pub name: Cow<'a, str>,
    pub span: std::ops::Range<usize>,
}

/// A whole-string `SET [SESSION] switchyard.<name> {=|TO} <value>`,
/// `RESET switchyard.<name>` (also `SET switchyard.<name> TO DEFAULT`),
/// `SET LOCAL switchyard.<name> ...` or `SHOW switchyard.<name>`. Names are case-folded;
/// values are unquoted (identifiers are case-folded, string constants kept as written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwitchyardCommand<'a> {
    Set {
        name: Cow<'a, str>,
        value: Cow<'a, str>,
    },
    Reset {
        name: Cow<'a, str>,
    },
    /// `SET LOCAL`, which the proxy refuses: its settings are the session's.
    SetLocal {
        name: Cow<'a, str>,
    },
    Show {
        name: Cow<'a, str>,
    },
}

/// The analysis of one query string (one simple-query message or one Parse).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Analysis<'a> {
    /// Where this string must run if in autocommit.
    pub route: Route,
    /// Why.
    pub reason: Reason,
    /// The routing hint among the leading comments, if any.
    pub hint: Option<Route>,
    /// Union of the effects of all statements.
    pub effects: Effects,
    /// The first pin reason found, if any (then `effects` contains [`Effects::PIN`]).
    pub pin: Option<PinReason>,
    /// Transaction control done by the first statement.
    pub txn: TxnControl,
    /// Some statement needs the primary even in a read-only transaction: a hot standby
    /// refuses it though a read-only transaction allows it (`LOCK` in a mode above
    /// `ROW EXCLUSIVE`, `NOTIFY`, `LISTEN`, `PREPARE TRANSACTION`, `CLUSTER`, `REINDEX`,
    /// `ANALYZE`, `SET TRANSACTION SNAPSHOT`), or only the primary answers it for the session
    /// (a function that must run there, a view only it fills, what tells it from a standby).
    pub primary_only: bool,
    /// Set when the whole string is one `DEALLOCATE`.
    pub deallocate: Option<Deallocate<'a>>,
    /// Set when the whole string is one `EXECUTE`.
    pub execute: Option<Execute<'a>>,
    /// Set when the whole string is one `SET/RESET/SHOW switchyard.*`.
    pub switchyard: Option<SwitchyardCommand<'a>>,
    /// Number of non-empty statements.
    pub statements: u32,
}

impl Analysis<'_> {
    /// The same analysis, owning what it borrowed from the text.
    /// What is assumed of a text whose backslashes the lexer cannot interpret (see
    /// [`backslashes_are_opaque`]): it may write, change settings and leave session state
    /// anywhere, so it runs on the primary and the proxy reads back what it did.
    pub fn opaque() -> Analysis<'static> {
        Analysis {
            route: Route::Primary,
            reason: Reason::Unparsable,
            hint: None,
            effects: Effects::SETTINGS | Effects::STATE,
            pin: None,
            txn: TxnControl::None,
            primary_only: true,
            deallocate: None,
            execute: None,
            switchyard: None,
            statements: 2,
        }
    }

    pub fn into_owned(self) -> Analysis<'static> {
        let own = |c: Cow<'_, str>| Cow::Owned(c.into_owned());
        Analysis {
            route: self.route,
            reason: self.reason,
            hint: self.hint,
            effects: self.effects,
            pin: self.pin,
            txn: self.txn,
            primary_only: self.primary_only,
            deallocate: self.deallocate.map(|d| match d {
                Deallocate::Name(n) => Deallocate::Name(own(n)),
                Deallocate::All => Deallocate::All,
            }),
            execute: self.execute.map(|e| Execute {
                name: own(e.name),
                span: e.span,
            }),
            switchyard: self.switchyard.map(|c| match c {
                SwitchyardCommand::Set { name, value } => SwitchyardCommand::Set {
                    name: own(name),
                    value: own(value),
                },
                SwitchyardCommand::Reset { name } => SwitchyardCommand::Reset { name: own(name) },
                SwitchyardCommand::SetLocal { name } => {
                    SwitchyardCommand::SetLocal { name: own(name) }
                }
                SwitchyardCommand::Show { name } => SwitchyardCommand::Show { name: own(name) },
            }),
            statements: self.statements,
        }
    }

    /// The metrics label of [`Analysis::pin`].
    pub fn pin_reason(&self) -> Option<&'static str> {
        self.pin.map(PinReason::as_str)
    }

    /// Whether the string may run on a replica (in autocommit).
    pub fn is_read(&self) -> bool {
        self.route == Route::Replica
    }

    /// Whether the string is one `SET`/`RESET` of settings: it needs the session's server but
    /// changes no data (so it is not a write for read-your-writes).
    pub fn only_sets_settings(&self) -> bool {
        self.statements == 1
            && self.reason == Reason::SessionCommand
            && Effects(self.effects.0 & !Effects::RESET_ALL.0) == Effects::SETTINGS
            && self.hint.is_none()
    }

    /// Whether the string is one read that only the primary answers for the session (what
    /// tells it from a standby, a view only it fills): it runs there, but writes nothing (so
    /// it is not a write for read-your-writes).
    pub fn only_asks_the_primary(&self) -> bool {
        self.statements == 1
            && self.route == Route::Primary
            && matches!(self.reason, Reason::ServerRole(_) | Reason::PrimaryView(_))
            && self.effects == Effects::NONE
            && self.pin.is_none()
            && self.hint.is_none()
    }
}

/// `"replica\t<reason>"` or `"primary\t<reason>"`, for `switchyard classify SQL...`.
pub fn classify_line(c: &Classifier, sql: &str) -> String {
    let a = c.analyze(sql);
    format!("{}\t{}", a.route, a.reason)
}
