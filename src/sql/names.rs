//! The names routing and session tracking know by heart: built-in functions that must run on
//! the primary, functions whose calls change the session, statement keywords, and the settings
//! and system views that tell a primary from a standby. Lookups are cheap byte tests first,
//! and none allocates.

use super::lexer::{Token, TokenKind};
use super::{Effects, PinReason};

/// System views whose rows only the primary has (a standby shows its own, empty or other):
/// a read of one runs on the primary. `pg_locks` shows the server's locks, the session's
/// among them only on the primary. (Lengths 8, 17, 19 and 20: classify.rs `scan` relies on
/// them; plain.rs knows their last eight bytes.)
pub const PRIMARY_VIEWS: &[&str] = &[
    "pg_prepared_xacts",
    "pg_stat_replication",
    "pg_replication_slots",
    "pg_locks",
];

/// Defines [`BUILTIN_WRITE_FUNCTIONS`] and a `match` over the same names.
macro_rules! builtin_writes {
    ($($lit:literal),* $(,)?) => {
        /// The built-in functions that must run on the primary (see [`is_builtin_write`]).
        pub const BUILTIN_WRITE_FUNCTIONS: &[&str] = &[$($lit),*];

        #[inline]
        fn builtin_match(name: &str) -> Option<&'static str> {
            match name { $($lit => Some($lit),)* _ => None }
        }
    };
}

builtin_writes!(
    // sequences
    "nextval",
    "setval",
    "currval",
    "lastval",
    // a sequence's last value: a standby's is ahead of the primary's by the values the
    // primary logged in advance (up to 32)
    "pg_sequence_last_value",
    // the session's random number generator, seeded: the client is pinned (see
    // `call_effect`), and only on the primary can it write
    "setseed",
    // advisory locks (session and transaction level)
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_advisory_xact_lock",
    "pg_advisory_xact_lock_shared",
    "pg_advisory_unlock",
    "pg_advisory_unlock_shared",
    "pg_advisory_unlock_all",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
    "pg_try_advisory_xact_lock",
    "pg_try_advisory_xact_lock_shared",
    // notifications
    "pg_notify",
    // large objects
    "lo_create",
    "lo_creat",
    "lo_import",
    "lo_export",
    "lo_unlink",
    "lo_put",
    "lo_from_bytea",
    "lo_open",
    "lowrite",
    "lo_truncate",
    "lo_truncate64",
    // transaction ids
    "txid_current",
    "pg_current_xact_id",
    // a snapshot for other sessions to take with `SET TRANSACTION SNAPSHOT`, which runs on
    // the primary (a snapshot a replica exported is unknown there)
    "pg_export_snapshot",
    // WAL, backups, recovery
    "pg_switch_wal",
    "pg_create_restore_point",
    "pg_start_backup",
    "pg_stop_backup",
    "pg_backup_start",
    "pg_backup_stop",
    "pg_promote",
    "pg_current_wal_lsn",
    "pg_current_wal_insert_lsn",
    "pg_current_wal_flush_lsn",
    "pg_walfile_name",
    "pg_walfile_name_offset",
    "pg_logical_emit_message",
    // recovery control: sent to a replica it would pause or resume that replica's replay
    // (the session's primary refuses it, 55000). (What reads a standby's replay state,
    // `pg_last_wal_replay_lsn()` and the like, reads the replica the read runs on, as the
    // statistics views do.)
    "pg_wal_replay_pause",
    "pg_wal_replay_resume",
    // replication slots and origins
    "pg_create_physical_replication_slot",
    "pg_create_logical_replication_slot",
    "pg_copy_physical_replication_slot",
    "pg_copy_logical_replication_slot",
    "pg_drop_replication_slot",
    "pg_replication_slot_advance",
    "pg_logical_slot_get_changes",
    "pg_logical_slot_get_binary_changes",
    "pg_replication_origin_create",
    "pg_replication_origin_drop",
    "pg_replication_origin_advance",
    "pg_replication_origin_session_setup",
    "pg_replication_origin_session_reset",
    "pg_replication_origin_xact_setup",
    "pg_replication_origin_xact_reset",
    // the session's own process: the one its BackendKeyData names is on the primary (what
    // pg_cancel_backend, pg_terminate_backend and notifications are compared with)
    "pg_backend_pid",
    // what the views of [`PRIMARY_VIEWS`] read: the server's own locks and slots, and which
    // processes block one of the primary's
    "pg_lock_status",
    "pg_blocking_pids",
    "pg_safe_snapshot_blocking_pids",
    "pg_get_replication_slots",
    // whether the server is a standby: the session's is the primary (drivers asked for a
    // primary or a writable server check this)
    "pg_is_in_recovery",
    // server control
    "pg_cancel_backend",
    "pg_terminate_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_stat_reset",
    "pg_stat_reset_shared",
    "pg_stat_reset_single_table_counters",
    "pg_stat_reset_single_function_counters",
    "pg_stat_reset_slru",
    "pg_stat_reset_replication_slot",
    "pg_stat_reset_subscription_stats",
    "pg_import_system_collations",
    // index maintenance
    "brin_summarize_new_values",
    "brin_summarize_range",
    "brin_desummarize_range",
    "gin_clean_pending_list",
    // extensions; a named dblink connection pins the client to its server connection, which
    // must be the primary's (pinned to a replica, its writes would fail)
    "dblink_exec",
    "dblink_connect",
    "dblink_connect_u",
    "pg_file_write",
    "pg_file_rename",
    "pg_file_unlink",
    "pg_file_sync",
);

/// The built-in functions that must run on the primary (lower-case, unqualified name), or
/// `None`. Returns the `'static` name for [`Reason::WritingFunction`].
pub fn is_builtin_write(name: &str) -> Option<&'static str> {
    // Cheap filter first: most calls (count, sum, coalesce, ...) and keywords followed by `(`
    // (IN, AS, OVER, ...) are rejected on their first bytes.
    let b = name.as_bytes();
    let candidate = match b.first() {
        Some(b'p') => b.len() > 3 && b[1] == b'g' && b[2] == b'_',
        Some(b'l') => name == "lastval" || (b.len() > 5 && b[1] == b'o'),
        Some(b'n') => name == "nextval",
        Some(b's') => name == "setval" || name == "setseed",
        Some(b'c') => name == "currval",
        Some(b't') => name == "txid_current",
        Some(b'b') => name.starts_with("brin_"),
        Some(b'g') => name == "gin_clean_pending_list",
        Some(b'd') => name.starts_with("dblink_"),
        _ => false,
    };
    if !candidate {
        return None;
    }
    let hit = builtin_match(name);
    if hit.is_some() {
        return hit;
    }
    // Future members of the same families.
    if name.starts_with("pg_stat_reset") {
        return Some("pg_stat_reset*");
    }
    if name.starts_with("pg_create_") {
        return Some("pg_create_*");
    }
    None
}

/// The name of a function call as PostgreSQL resolves it (unquoted names folded to lower case,
/// quoted names verbatim), copied into `buf`. `None` if longer than an identifier can be.
pub(super) fn call_key<'b>(t: &Token<'_>, buf: &'b mut [u8; 64]) -> Option<&'b str> {
    let n;
    match t.kind {
        TokenKind::Ident => {
            let b = t.text.as_bytes();
            if b.len() > 63 {
                return None;
            }
            for (d, s) in buf.iter_mut().zip(b) {
                *d = s.to_ascii_lowercase();
            }
            n = b.len();
        }
        TokenKind::QuotedIdent => {
            let b = t.text.as_bytes();
            if b.first() != Some(&b'"') || b.len() < 2 {
                return None; // U&"..." names are not worth decoding
            }
            let body = &b[1..b.len() - 1];
            let mut j = 0;
            let mut i = 0;
            while i < body.len() {
                if j >= 63 {
                    return None;
                }
                buf[j] = body[i];
                j += 1;
                i += if body[i] == b'"' { 2 } else { 1 };
            }
            n = j;
        }
        _ => return None,
    }
    std::str::from_utf8(&buf[..n]).ok()
}

/// The statement keywords PostgreSQL knows, as they appear in reasons.
const STATEMENT_KEYWORDS: &[&str] = &[
    "ABORT",
    "ALTER",
    "ANALYZE",
    "ANALYSE",
    "BEGIN",
    "CALL",
    "CHECKPOINT",
    "CLOSE",
    "CLUSTER",
    "COMMENT",
    "COMMIT",
    "COPY",
    "CREATE",
    "DEALLOCATE",
    "DECLARE",
    "DELETE",
    "DISCARD",
    "DO",
    "DROP",
    "END",
    "EXECUTE",
    "EXPLAIN",
    "FETCH",
    "GRANT",
    "IMPORT",
    "INSERT",
    "LISTEN",
    "LOAD",
    "LOCK",
    "MERGE",
    "MOVE",
    "NOTIFY",
    "PREPARE",
    "REASSIGN",
    "REFRESH",
    "REINDEX",
    "RELEASE",
    "RESET",
    "REVOKE",
    "ROLLBACK",
    "SAVEPOINT",
    "SECURITY",
    "SELECT",
    "SET",
    "SHOW",
    "START",
    "TABLE",
    "TRUNCATE",
    "UNLISTEN",
    "UPDATE",
    "VACUUM",
    "VALUES",
    "WITH",
];

pub(super) fn statement_keyword(t: &Token<'_>) -> Option<&'static str> {
    if t.kind != TokenKind::Ident || t.text.len() > 10 || t.text.len() < 2 {
        return None;
    }
    STATEMENT_KEYWORDS
        .iter()
        .find(|k| k.len() == t.text.len() && k.eq_ignore_ascii_case(t.text))
        .copied()
}

/// What calling a function does to the session, whatever the routing lists say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CallEffect {
    /// Session state the proxy tracks (settings, sequence state).
    Session(Effects),
    /// State that cannot move to another server connection.
    Pin(PinReason),
}

/// The session effect of calling the function `key` (its name as PostgreSQL resolves it:
/// unquoted names folded to lower case), if any.
pub(super) fn call_effect(key: &str) -> Option<CallEffect> {
    let b = key.as_bytes();
    if b.len() == 7 && (key == "currval" || key == "lastval") {
        return Some(CallEffect::Session(Effects::SEQUENCE_STATE));
    }
    if key == "setseed" {
        return Some(CallEffect::Pin(PinReason::Seed));
    }
    if b.len() < 10 || !matches!(b[0], b's' | b'p' | b'd') {
        return None;
    }
    match key {
        "set_config" => Some(CallEffect::Session(Effects::SETTINGS)),
        "pg_terminate_backend" => Some(CallEffect::Session(Effects::TERMINATE)),
        "pg_advisory_lock"
        | "pg_advisory_lock_shared"
        | "pg_try_advisory_lock"
        | "pg_try_advisory_lock_shared" => Some(CallEffect::Pin(PinReason::AdvisoryLock)),
        "dblink_connect" | "dblink_connect_u" => Some(CallEffect::Pin(PinReason::Dblink)),
        "pg_backup_start" | "pg_start_backup" | "pg_replication_origin_session_setup" => {
            Some(CallEffect::Pin(PinReason::ServerSession))
        }
        _ => None,
    }
}

/// Functions of the list above that run on the primary for what they answer (the session's
/// process, whether the server is a standby, its WAL position, its locks and slots), writing
/// nothing: a read calling one is [`super::Reason::ServerRole`], not a write.
pub(super) const ASKING_FUNCTIONS: [&str; 11] = [
    "pg_backend_pid",
    "pg_is_in_recovery",
    "pg_current_wal_lsn",
    "pg_current_wal_insert_lsn",
    "pg_current_wal_flush_lsn",
    "pg_walfile_name",
    "pg_walfile_name_offset",
    "pg_lock_status",
    "pg_blocking_pids",
    "pg_safe_snapshot_blocking_pids",
    "pg_get_replication_slots",
];

/// Whether `text`, a question only the primary answers (see
/// [`super::Analysis::only_asks_the_primary`]), can hide no write: a `SHOW`, or a statement
/// without `FROM` (no view, whose body may call a function that writes) whose every call is
/// one of [`ASKING_FUNCTIONS`] or `current_setting` (no function of the database's own, known
/// to the proxy as volatile yet or not). Conservative: anything else stays a write.
pub fn plain_question(text: &[u8]) -> bool {
    let t = text.trim_ascii();
    if t.get(..4).is_some_and(|w| w.eq_ignore_ascii_case(b"show")) {
        return true;
    }
    let lower = t.to_ascii_lowercase();
    let word = |w: &[u8]| {
        lower.windows(w.len()).enumerate().any(|(i, s)| {
            s == w
                && (i == 0 || !is_word_byte(lower[i - 1]))
                && lower.get(i + w.len()).is_none_or(|&c| !is_word_byte(c))
        })
    };
    if word(b"from") {
        return false;
    }
    let calls = lower.iter().filter(|&&c| c == b'(').count();
    let allowed: usize = ASKING_FUNCTIONS
        .iter()
        .chain(&["current_setting"])
        .map(|name| {
            let call = format!("{name}(");
            lower
                .windows(call.len())
                .filter(|w| *w == call.as_bytes())
                .count()
        })
        .sum();
    calls == allowed
}

fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

/// The settings whose values tell a primary from a standby (a standby reports both "on"):
/// the client's session is the primary's, so reads of them go there.
const SERVER_ROLE_SETTINGS: [&str; 2] = ["transaction_read_only", "in_hot_standby"];

/// A call `name(arg ...` that reads what tells a primary from a standby:
/// `current_setting('transaction_read_only')` (or `in_hot_standby`; setting names are
/// case-insensitive), or `pg_show_all_settings()`, what `pg_settings` and `SHOW ALL` read.
/// A setting named otherwise than by a constant (a parameter, a column) is not recognised.
pub(super) fn server_role_call(name: &Token<'_>, arg: Option<&Token<'_>>) -> Option<&'static str> {
    if name.name_eq("pg_show_all_settings") {
        return Some("pg_show_all_settings");
    }
    if !name.name_eq("current_setting") {
        return None;
    }
    let value = arg?.string_value()?;
    SERVER_ROLE_SETTINGS
        .into_iter()
        .find(|s| value.eq_ignore_ascii_case(s))
}
