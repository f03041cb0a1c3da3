//! What switchyard knows of each database's own functions: the names of the volatile ones
//! (`pg_proc.provolatile = 'v'`, created after `initdb`: by users and extensions; procedures
//! too, which `CALL` runs on the primary anyway). A read that
//! calls one runs on the primary, as Pgpool-II does: a volatile function may write (which a
//! replica refuses, and the statement could be repeated on the primary only until rows reached
//! the client) or change session state a replica's process would keep (a C function's static
//! variable, a setting made by `set_config` inside it), so it runs where the session's writes
//! run. Functions declared `STABLE` or `IMMUTABLE` stay on replicas; `routing.read_functions`
//! sends a volatile one there anyway.
//!
//! A function whose body may change session settings (`set_config(...)`, a `SET` statement:
//! see [`crate::sql::body_sets_settings`]) is noted with the custom setting names its body
//! names. In transaction pooling a call of one counts as a settings change: the session's
//! settings are read back after its transaction, so they follow the client to its next
//! server connection and never reach the next client of this one.
//!
//! The list is read from the catalog on a connection a session has just checked out: the
//! first time a database is used, after a schema change seen through switchyard, and when the
//! list is older than [`MAX_AGE_MS`] (functions created elsewhere). A `CREATE FUNCTION` sent
//! through switchyard adds its function at once, so its session's next read already knows it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

/// A list older than this is read again.
pub const MAX_AGE_MS: u64 = 30_000;

/// A failed read is tried again after this long.
const RETRY_MS: u64 = 1_000;

/// The catalog query (in a READ COMMITTED transaction of its own: a hot standby refuses a
/// snapshot to a session whose transactions default to SERIALIZABLE): each volatile
/// function's name, and its body when that mentions `set_config` or `SET`/`RESET` (the
/// body is then examined by [`crate::sql::body_sets_settings`]).
pub const VOLATILE_FUNCTIONS_SQL: &str = "SET TRANSACTION ISOLATION LEVEL READ COMMITTED; \
     SELECT proname, CASE WHEN prosrc ~* E'set_config|\\\\m(re)?set\\\\M' THEN prosrc END \
     FROM pg_catalog.pg_proc WHERE provolatile = 'v' AND prokind IN ('f', 'p') AND oid >= 16384";

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

/// A volatile function, as read from the catalog or from a `CREATE FUNCTION`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function {
    /// Its name (as in `pg_proc.proname`).
    pub name: String,
    /// When its body may change session settings: the custom (dotted) setting names the body
    /// names (others are found in `pg_settings`).
    pub settings: Option<Vec<String>>,
}

/// What is known of a database's volatile functions at one time.
#[derive(Default)]
struct Known {
    /// Every volatile function's name.
    volatile: HashSet<Box<str>>,
    /// Those whose body may change settings → the custom setting names it names.
    settings: HashMap<Box<str>, Vec<String>>,
}

impl Known {
    fn add(&mut self, f: &Function) {
        self.volatile.insert(f.name.as_str().into());
        if let Some(names) = &f.settings {
            let known = self.settings.entry(f.name.as_str().into()).or_default();
            for n in names {
                if !known.contains(n) {
                    known.push(n.clone());
                }
            }
        }
    }
}

/// One database's volatile functions.
#[derive(Default)]
pub struct DbFunctions {
    known: ArcSwap<Known>,
    /// Functions `CREATE FUNCTION`s through switchyard made volatile: kept across reads of the
    /// catalog (one may have begun before such a function was committed), never dropped.
    created: Mutex<Vec<Function>>,
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
        let known = self.known.load();
        if known.volatile.is_empty() || !text.contains(&b'(') {
            return false;
        }
        crate::sql::calls_any(&String::from_utf8_lossy(text), |n| {
            known.volatile.contains(n)
                && !exempt
                    .iter()
                    .any(|e| e == n || e.rsplit_once('.').is_some_and(|(_, b)| b == n))
        })
    }

    /// When the query text `text` calls a function whose body may change session settings:
    /// the custom setting names those bodies name.
    pub fn settings_calls(&self, text: &[u8]) -> Option<Vec<String>> {
        let known = self.known.load();
        if known.settings.is_empty() || !text.contains(&b'(') {
            return None;
        }
        let mut found: Option<Vec<String>> = None;
        crate::sql::calls_any(&String::from_utf8_lossy(text), |n| {
            if let Some(names) = known.settings.get(n) {
                found
                    .get_or_insert_with(Vec::new)
                    .extend(names.iter().cloned());
            }
            false
        });
        found
    }

    /// Adds the functions a statement just sent creates as volatile.
    pub fn add_created(&self, functions: Vec<Function>) {
        if functions.is_empty() {
            return;
        }
        let mut created = self.created.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.known.load();
        let mut known = Known {
            volatile: old.volatile.clone(),
            settings: old.settings.clone(),
        };
        for f in functions {
            known.add(&f);
            created.push(f);
        }
        self.known.store(Arc::new(known));
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

    /// Ends a read begun at schema `epoch`: `functions` when it succeeded.
    pub fn finish_read(&self, functions: Option<Vec<Function>>, epoch: u64, now_ms: u64) {
        if let Some(functions) = functions {
            let created = self.created.lock().unwrap_or_else(|e| e.into_inner());
            let mut known = Known::default();
            for f in functions.iter().chain(created.iter()) {
                known.add(f);
            }
            self.known.store(Arc::new(known));
            self.read_epoch.store(epoch + 1, Ordering::Release);
            self.read_at.store(now_ms, Ordering::Relaxed);
        }
        self.reading.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(name: &str) -> Function {
        Function {
            name: name.into(),
            settings: None,
        }
    }

    #[test]
    fn reads_are_due_first_after_a_schema_change_and_when_old() {
        let f = DbFunctions::default();
        assert!(!f.calls_volatile(b"SELECT 1", &[]));
        assert!(f.begin_read(0, 1_000));
        assert!(!f.begin_read(0, 1_000), "one reader at a time");
        f.finish_read(Some(vec![plain("f")]), 0, 1_000);
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
        f.add_created(vec![plain("made_here")]);
        assert!(f.begin_read(0, 10));
        f.finish_read(Some(vec![]), 0, 10);
        assert!(f.calls_volatile(b"SELECT made_here()", &[]));
        assert!(f.begin_read(1, 20), "a schema change is read at once");
        f.finish_read(Some(vec![plain("other")]), 1, 20);
        assert!(f.calls_volatile(b"SELECT made_here()", &[]));
        assert!(f.calls_volatile(b"SELECT other()", &[]));
        assert!(!f.calls_volatile(b"SELECT made_here", &[]), "not a call");
    }

    #[test]
    fn calls_of_functions_that_change_settings_are_found() {
        let f = DbFunctions::default();
        assert!(f.begin_read(0, 10));
        f.finish_read(
            Some(vec![
                plain("plain"),
                Function {
                    name: "tenant".into(),
                    settings: Some(vec!["app.tenant".into()]),
                },
                Function {
                    name: "path".into(),
                    settings: Some(vec![]),
                },
                Function {
                    name: "tenant".into(),
                    settings: Some(vec!["app.user".into(), "app.tenant".into()]),
                },
            ]),
            0,
            10,
        );
        assert_eq!(f.settings_calls(b"SELECT plain(1)"), None);
        assert_eq!(f.settings_calls(b"SELECT tenant"), None, "not a call");
        assert_eq!(
            f.settings_calls(b"SELECT s.tenant(1)").unwrap(),
            ["app.tenant", "app.user"]
        );
        assert_eq!(
            f.settings_calls(b"SELECT path()").unwrap(),
            Vec::<String>::new()
        );
        assert!(f.calls_volatile(b"SELECT path()", &[]));
        f.add_created(vec![Function {
            name: "made".into(),
            settings: Some(vec!["app.m".into()]),
        }]);
        assert_eq!(
            f.settings_calls(b"SELECT made(), plain()").unwrap(),
            ["app.m"]
        );
        assert!(f.begin_read(1, 20));
        f.finish_read(Some(vec![]), 1, 20);
        assert_eq!(
            f.settings_calls(b"SELECT made()").unwrap(),
            ["app.m"],
            "kept"
        );
        assert_eq!(f.settings_calls(b"SELECT tenant(1)"), None, "dropped");
    }
}
