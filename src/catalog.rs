//! What switchyard knows of each database's own functions: the names of the volatile ones
//! (`pg_proc.provolatile = 'v'`, created after `initdb`: by users and extensions). A read that
//! calls one runs on the primary, as Pgpool-II does: a volatile function may write (which a
//! replica refuses, and the statement could be repeated on the primary only until rows reached
//! the client) or change session state a replica's process would keep (a C function's static
//! variable, a setting made by `set_config` inside it), so it runs where the session's writes
//! run. Functions declared `STABLE` or `IMMUTABLE` stay on replicas; `routing.read_functions`
//! sends a volatile one there anyway.
//!
//! The names are read from the catalog on a connection a session has just checked out: the
//! first time a database is used, after a schema change seen through switchyard, and when the
//! list is older than [`MAX_AGE_MS`] (functions created elsewhere). A `CREATE FUNCTION` sent
//! through switchyard adds its name at once, so its session's next read already knows it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

/// A list older than this is read again.
pub const MAX_AGE_MS: u64 = 30_000;

/// A failed read is tried again after this long.
const RETRY_MS: u64 = 1_000;

/// The catalog query (in a READ COMMITTED transaction of its own: a hot standby refuses a
/// snapshot to a session whose transactions default to SERIALIZABLE).
pub const VOLATILE_FUNCTIONS_SQL: &str = "SET TRANSACTION ISOLATION LEVEL READ COMMITTED; \
     SELECT DISTINCT proname FROM pg_catalog.pg_proc \
     WHERE provolatile = 'v' AND prokind = 'f' AND oid >= 16384";

/// Every database's [`DbFunctions`].
#[derive(Default)]
pub struct Catalogs {
    dbs: Mutex<HashMap<String, Arc<DbFunctions>>>,
}

impl Catalogs {
    /// Database `db`'s functions (an empty list, to be read, the first time).
    pub fn of(&self, db: &str) -> Arc<DbFunctions> {
        let mut dbs = self.dbs.lock().unwrap_or_else(|e| e.into_inner());
        dbs.entry(db.to_owned()).or_default().clone()
    }
}

/// One database's volatile functions.
#[derive(Default)]
pub struct DbFunctions {
    /// The names (as in `pg_proc.proname`).
    volatile: ArcSwap<HashSet<Box<str>>>,
    /// Names `CREATE FUNCTION`s through switchyard made volatile: kept across reads of the
    /// catalog (one may have begun before such a function was committed), never dropped.
    created: Mutex<HashSet<Box<str>>>,
    /// The statement registry's schema epoch + 1 when the list was last read (0: never).
    read_epoch: AtomicU64,
    /// When it was last read (`pool::clock::now_ms`).
    read_at: AtomicU64,
    /// When a read last began (0: never).
    tried_at: AtomicU64,
    /// A session is reading it now.
    reading: AtomicBool,
}

impl DbFunctions {
    /// Whether the query text `text` calls one of the volatile functions, other than those
    /// `exempt` names (`routing.read_functions`: `name` or `schema.name`).
    /// (Before the list is first read, only the functions created through switchyard are
    /// known.)
    pub fn calls_volatile(&self, text: &[u8], exempt: &[String]) -> bool {
        let set = self.volatile.load();
        if set.is_empty() || !text.contains(&b'(') {
            return false;
        }
        crate::sql::calls_any(&String::from_utf8_lossy(text), |n| {
            set.contains(n)
                && !exempt
                    .iter()
                    .any(|e| e == n || e.rsplit_once('.').is_some_and(|(_, b)| b == n))
        })
    }

    /// Adds the functions a statement just sent creates as volatile.
    pub fn add_created(&self, names: Vec<String>) {
        if names.is_empty() {
            return;
        }
        let mut created = self.created.lock().unwrap_or_else(|e| e.into_inner());
        let mut set = HashSet::clone(&self.volatile.load());
        for n in names {
            created.insert(n.clone().into_boxed_str());
            set.insert(n.into_boxed_str());
        }
        self.volatile.store(Arc::new(set));
    }

    /// Whether the list should be read now (schema `epoch` of the statement registry), and if
    /// so, claims the reading (the caller must then call [`DbFunctions::finish_read`]).
    pub fn begin_read(&self, epoch: u64, now_ms: u64) -> bool {
        let due = self.read_epoch.load(Ordering::Acquire) != epoch + 1
            || now_ms.saturating_sub(self.read_at.load(Ordering::Relaxed)) > MAX_AGE_MS;
        let tried = self.tried_at.load(Ordering::Relaxed);
        let backoff = tried != 0 && now_ms.saturating_sub(tried) < RETRY_MS && {
            // (Only after a failure: a schema change is read at once.)
            self.read_at.load(Ordering::Relaxed) < tried
        };
        if !due || backoff || self.reading.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.tried_at.store(now_ms.max(1), Ordering::Relaxed);
        true
    }

    /// Ends a read begun at schema `epoch`: `names` when it succeeded.
    pub fn finish_read(&self, names: Option<Vec<String>>, epoch: u64, now_ms: u64) {
        if let Some(names) = names {
            let created = self.created.lock().unwrap_or_else(|e| e.into_inner());
            let mut set: HashSet<Box<str>> =
                names.into_iter().map(String::into_boxed_str).collect();
            set.extend(created.iter().cloned());
            self.volatile.store(Arc::new(set));
            self.read_epoch.store(epoch + 1, Ordering::Release);
            self.read_at.store(now_ms, Ordering::Relaxed);
        }
        self.reading.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_due_first_after_a_schema_change_and_when_old() {
        let f = DbFunctions::default();
        assert!(!f.calls_volatile(b"SELECT 1", &[]));
        assert!(f.begin_read(0, 1_000));
        assert!(!f.begin_read(0, 1_000), "one reader at a time");
        f.finish_read(Some(vec!["f".into()]), 0, 1_000);
        assert!(!f.begin_read(0, 2_000), "fresh");
        assert!(f.calls_volatile(b"SELECT f(1)", &[]));
        assert!(!f.calls_volatile(b"SELECT g(1)", &[]));
        assert!(!f.calls_volatile(b"SELECT f(1)", &["f".into()]));
        assert!(!f.calls_volatile(b"SELECT f(1)", &["public.f".into()]));
        assert!(f.begin_read(1, 2_000), "a schema change since");
        f.finish_read(None, 1, 2_000);
        assert!(
            !f.begin_read(1, 2_500),
            "a failed read is not retried at once"
        );
        assert!(f.begin_read(1, 3_001), "but after a while");
        f.finish_read(Some(vec![]), 1, 2_000);
        assert!(!f.begin_read(1, 2_000 + MAX_AGE_MS));
        assert!(f.begin_read(1, 2_001 + MAX_AGE_MS), "old");
        f.finish_read(Some(vec![]), 1, 3_000);
    }

    #[test]
    fn created_functions_survive_reads_of_the_catalog() {
        let f = DbFunctions::default();
        f.add_created(vec!["made_here".into()]);
        assert!(f.begin_read(0, 10));
        f.finish_read(Some(vec![]), 0, 10);
        assert!(f.calls_volatile(b"SELECT made_here()", &[]));
        assert!(f.begin_read(1, 20), "a schema change is read at once");
        f.finish_read(Some(vec!["other".into()]), 1, 20);
        assert!(f.calls_volatile(b"SELECT made_here()", &[]));
        assert!(f.calls_volatile(b"SELECT other()", &[]));
        assert!(!f.calls_volatile(b"SELECT made_here", &[]), "not a call");
    }
}
