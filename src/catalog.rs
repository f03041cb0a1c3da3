//! What switchyard knows of each database's own functions: the names of the volatile ones
//! (`pg_proc.provolatile = 'v'`, created after `initdb`: by users and extensions; procedures
//! too, which `CALL` runs on the primary anyway). A read that
//! calls one runs on the primary, as Pgpool-II does: a volatile function may write (which a
//! replica refuses, and the statement could be repeated on the primary only until rows reached
//! the client) or change session state a replica's process would keep (a C function's static
//! variable, a setting made by `set_config` inside it), so it runs where the session's writes
//! run. Functions declared `STABLE` or `IMMUTABLE` stay on replicas, but for those whose body
//! calls `set_config` or takes a session advisory lock, which PostgreSQL lets such a function
//! do (see [`crate::sql::stable_body_effects`]), or calls a function with such effects: they
//! are listed with the volatile ones. `routing.read_functions` sends a listed one there anyway.
//!
//! A function whose body may change session settings (`set_config(...)`, a `SET` statement:
//! see [`crate::sql::body_sets_settings`]) is noted with the custom setting names its body
//! names. In transaction pooling a call of one counts as a settings change: the session's
//! settings are read back after its transaction, so they follow the client to its next
//! server connection and never reach the next client of this one. A function whose body may
//! leave state in the session (a temporary table, a session advisory lock, `LISTEN`: see
//! [`crate::sql::body_keeps_state`]) is noted too: after a call of one, the session is
//! checked for such state, and a client that has some is pinned to its connection. A
//! function whose body calls `dblink_connect[_u]`, `pg_backup_start`, `pg_start_backup` or
//! `pg_replication_origin_session_setup` (see [`crate::sql::body_pin`]) pins its caller at
//! once, as the client's own call of that function does: that state is not looked for after
//! the transaction, and `DISCARD ALL` does not end it. A function whose body calls such a
//! function (at any depth: `login()` calling `set_tenant()` calling `set_config`) has the
//! effects of the ones it calls.
//!
//! The list is read from the catalog on a connection a session has just checked out: the
//! first time a database is used, after a schema change seen through switchyard, and when the
//! list is older than [`MAX_AGE_MS`] (functions created elsewhere). A `CREATE FUNCTION` sent
//! through switchyard adds its function at once, so its session's next read already knows it.
//!
//! A read that falls due is made on the primary, or on a replica that has replayed the
//! primary's position as the monitor last saw it when the list fell due: a replica further
//! behind (replay paused, lagging) lacks the functions created since, and what it read would
//! pass for fresh for [`MAX_AGE_MS`] more, again and again while it stays behind. The list
//! stays due until such a server is checked out. Only the first read of a database runs
//! wherever its first checkout lands (a list without the newest functions beats none); read
//! on a server not known to be caught up, it falls due again after [`RETRY_MS`].

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::sql::{Effects, PinReason};

/// A list older than this is read again.
pub const MAX_AGE_MS: u64 = 30_000;

/// A failed read is tried again after this long, and so is one made on a server that may be
/// behind the primary.
pub const RETRY_MS: u64 = 1_000;

/// The catalog query (in a READ COMMITTED transaction of its own: a hot standby refuses a
/// snapshot to a session whose transactions default to SERIALIZABLE): each volatile
/// function's name, its body when that may matter (below), its OID (for FunctionCall
/// messages, which name a function by OID) and its volatility; and the same of each
/// function declared `STABLE` or `IMMUTABLE` whose body matters (one may call `set_config`
/// or take an advisory lock: see [`crate::sql::stable_body_effects`]). The body matters when it mentions `set_config`,
/// `SET`/`RESET`, temporary objects, advisory locks, `LISTEN`, `EXECUTE` (a dynamic one may
/// run any statement: `EXECUTE stmt`) or a function that pins (`dblink_connect`,
/// `pg_backup_start`, `pg_start_backup`, `..._origin_session_setup`), or calls (by a name
/// followed by `(`) a function whose body matters, at any depth. Such a body is then examined
/// by [`crate::sql::body_sets_settings`], [`crate::sql::body_keeps_state`],
/// [`crate::sql::body_pin`] and for the functions it calls ([`crate::sql::called_names`]);
/// the server only narrows down which bodies are sent. A SQL-standard body (`RETURN ...`, `BEGIN ATOMIC ... END`, PostgreSQL 14)
/// leaves `prosrc` empty: its function's whole definition stands in for it.
pub const VOLATILE_FUNCTIONS_SQL: &str = "SET TRANSACTION ISOLATION LEVEL READ COMMITTED; \
     WITH RECURSIVE f AS (SELECT oid, proname, provolatile, CASE WHEN prosrc OPERATOR(pg_catalog.=) '' \
         THEN pg_catalog.pg_get_functiondef(oid) ELSE prosrc END AS prosrc FROM pg_catalog.pg_proc \
       WHERE prokind OPERATOR(pg_catalog.=) ANY ('{f,p}'::pg_catalog.\"char\"[]) \
         AND oid OPERATOR(pg_catalog.>=) 16384), \
     calls AS (SELECT DISTINCT f.oid, pg_catalog.lower(m[1]) AS callee FROM f, \
       pg_catalog.regexp_matches(f.prosrc, E'\"?([[:alpha:]_][[:alnum:]_$]*)\"?\\\\s*\\\\(', 'g') AS m), \
     matters(name) AS ( \
       SELECT pg_catalog.lower(proname) FROM f WHERE prosrc OPERATOR(pg_catalog.~*) \
         E'set_config|\\\\m(re)?set\\\\M|(\\\\m|_)temp|advisory_lock|\\\\mlisten\\\\M|\\\\mexecute\\\\M\
         |dblink_connect|pg_backup_start|pg_start_backup|origin_session_setup' \
       UNION SELECT pg_catalog.lower(f.proname) FROM f \
         JOIN calls c ON c.oid OPERATOR(pg_catalog.=) f.oid \
         JOIN matters ON matters.name OPERATOR(pg_catalog.=) c.callee) \
     SELECT proname, CASE WHEN pg_catalog.lower(proname) OPERATOR(pg_catalog.=) ANY \
       (SELECT name FROM matters) \
       THEN prosrc END, oid::pg_catalog.text, provolatile::pg_catalog.text FROM f \
     WHERE provolatile OPERATOR(pg_catalog.=) 'v' \
       OR pg_catalog.lower(proname) OPERATOR(pg_catalog.=) ANY (SELECT name FROM matters)";

/// The server a read of the list would run on, for what it can see of the primary's latest
/// changes (asked only when a read is due).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    /// The primary: it has everything.
    Primary,
    /// A replica that has replayed up to `replayed` (0: unknown), with the primary last seen
    /// at `primary` (`None`: no primary seen yet).
    Replica { replayed: u64, primary: Option<u64> },
}

/// A read of the list claimed by [`DbFunctions::begin_read`], to be ended with
/// [`DbFunctions::finish_read`].
#[derive(Debug)]
pub struct Read {
    /// The statement registry's schema epoch when it began.
    epoch: u64,
    /// When it began (`pool::clock::now_ms`).
    at_ms: u64,
    /// It runs on a server known to have what the primary had when the list fell due.
    current: bool,
}

/// Every database's [`DbFunctions`].
#[derive(Default)]
pub struct Catalogs {
    dbs: Mutex<HashMap<String, Arc<DbFunctions>>>,
}

impl Catalogs {
    /// Database `db`'s functions (an empty list, to be read, the first time).
    pub fn of(&self, db: &str) -> Arc<DbFunctions> {
        let mut dbs = self.dbs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = dbs.get(db) {
            return f.clone();
        }
        // Any name a client gives gets an entry: those of databases never read (that do not
        // exist, or whose clients the servers refused) go when nobody holds them any more.
        dbs.retain(|_, f| Arc::strong_count(f) > 1 || f.read_at.load(Ordering::Relaxed) != 0);
        dbs.entry(db.to_owned()).or_default().clone()
    }
}

/// A volatile function, as read from the catalog or from a `CREATE FUNCTION`; or one declared
/// `STABLE` or `IMMUTABLE` whose body may change settings or leave state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function {
    /// Its name (as in `pg_proc.proname`).
    pub name: String,
    /// Declared volatile (`pg_proc.provolatile = 'v'`).
    pub volatile: bool,
    /// When its body may change session settings: the custom (dotted) setting names the body
    /// names (others are found in `pg_settings`).
    pub settings: Option<Vec<String>>,
    /// Its body may leave state in the session (a temporary table, a session advisory lock,
    /// `LISTEN`).
    pub state: bool,
    /// Its body sets a setting whose name it computes (its callers are pinned: see
    /// `settings::computes_setting_name`).
    pub computes_name: bool,
    /// Its body calls a function that pins its caller for good (see
    /// [`crate::sql::body_pin`]).
    pub pin: Option<PinReason>,
    /// The names of the functions its body calls (as [`crate::sql::called_names`] finds them).
    pub calls: Vec<String>,
    /// Its OID (0 when not read from the catalog).
    pub oid: u32,
}

impl Function {
    /// Adds what another definition under the same name does (an application that redefines
    /// a function again and again keeps one entry).
    fn merge(&mut self, other: Function) {
        self.volatile |= other.volatile;
        self.state |= other.state;
        self.computes_name |= other.computes_name;
        self.pin = self.pin.or(other.pin);
        if let Some(names) = other.settings {
            let mine = self.settings.get_or_insert_with(Vec::new);
            for n in names {
                if !mine.contains(&n) {
                    mine.push(n);
                }
            }
        }
        for c in other.calls {
            if !self.calls.contains(&c) {
                self.calls.push(c);
            }
        }
        if other.oid != 0 {
            self.oid = other.oid;
        }
    }
}

/// What calls of the database's functions in a statement may do to the session.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Calls {
    /// Some called function may change settings.
    pub settings: bool,
    /// The custom setting names the bodies of those name.
    pub names: Vec<String>,
    /// Some called function may leave state in the session.
    pub state: bool,
    /// Some called function sets a setting whose name it computes.
    pub computes_name: bool,
    /// Some called function pins its caller for good (the first such reason found).
    pub pin: Option<PinReason>,
}

impl Calls {
    /// As statement effects: [`Effects::SETTINGS`], [`Effects::STATE`], [`Effects::PIN`]
    /// (whose reason is [`Calls::pin`]).
    pub fn effects(&self) -> Effects {
        let mut e = Effects::NONE;
        if self.settings {
            e |= Effects::SETTINGS;
        }
        if self.state {
            e |= Effects::STATE;
        }
        if self.pin.is_some() {
            e |= Effects::PIN;
        }
        e
    }

    /// Adds what `other` does; whether that added anything.
    fn merge(&mut self, other: &Calls) -> bool {
        let before = (
            self.settings,
            self.state,
            self.computes_name,
            self.pin,
            self.names.len(),
        );
        self.settings |= other.settings;
        self.state |= other.state;
        self.computes_name |= other.computes_name;
        self.pin = self.pin.or(other.pin);
        for n in &other.names {
            if !self.names.contains(n) {
                self.names.push(n.clone());
            }
        }
        before
            != (
                self.settings,
                self.state,
                self.computes_name,
                self.pin,
                self.names.len(),
            )
    }
}

/// What is known of a database's volatile functions at one time.
#[derive(Default, Clone)]
struct Known {
    /// Every volatile function's name, and that of every other function whose body may change
    /// settings, keep session state or pin, directly or through the functions it calls: a
    /// call of one runs on the primary.
    volatile: HashSet<Box<str>>,
    /// Those whose body may change settings, keep session state or pin, directly or through
    /// the functions it calls → what calls of them do.
    effects: HashMap<Box<str>, Calls>,
    /// The functions whose bodies call functions: name, names called.
    callers: HashMap<Box<str>, Vec<Box<str>>>,
    /// Names by OID.
    by_oid: HashMap<u32, Box<str>>,
}

impl Known {
    /// `functions` with the effects of the functions they call.
    fn of<'a>(functions: impl IntoIterator<Item = &'a Function>) -> Known {
        let mut known = Known::default();
        known.add_all(functions);
        known
    }

    fn add_all<'a>(&mut self, functions: impl IntoIterator<Item = &'a Function>) {
        for f in functions {
            self.add(f);
        }
        self.propagate();
    }

    fn add(&mut self, f: &Function) {
        if f.volatile {
            self.volatile.insert(f.name.as_str().into());
        }
        if f.oid != 0 {
            self.by_oid.insert(f.oid, f.name.as_str().into());
        }
        if !f.calls.is_empty() {
            let calls = f.calls.iter().map(|c| Box::<str>::from(c.as_str()));
            let known = self.callers.entry(f.name.as_str().into()).or_default();
            for c in calls {
                if !known.contains(&c) {
                    known.push(c);
                }
            }
        }
        if f.settings.is_none() && !f.state && f.pin.is_none() {
            return;
        }
        let direct = Calls {
            settings: f.settings.is_some(),
            names: f.settings.clone().unwrap_or_default(),
            state: f.state,
            computes_name: f.computes_name,
            pin: f.pin,
        };
        self.effects
            .entry(f.name.as_str().into())
            .or_default()
            .merge(&direct);
    }

    /// Gives each caller the effects of the functions it calls, until nothing changes (the
    /// effects only grow, so chains of any depth and recursion end).
    fn propagate(&mut self) {
        let Known {
            effects, callers, ..
        } = self;
        let mut changed = true;
        while changed {
            changed = false;
            for (caller, called) in callers.iter() {
                for c in called {
                    if c == caller {
                        continue;
                    }
                    let Some(callee) = effects.get(c).cloned() else {
                        continue;
                    };
                    changed |= effects.entry(caller.clone()).or_default().merge(&callee);
                }
            }
        }
        // (A function declared STABLE whose effects are the session's runs where the
        // session's writes run, as a volatile one does.)
        self.volatile.extend(effects.keys().cloned());
    }
}

/// One database's volatile functions.
#[derive(Default)]
pub struct DbFunctions {
    known: ArcSwap<Known>,
    /// `known` lists volatile functions / functions with session effects: checked first, so
    /// a statement in a database without any costs one relaxed load, not an `ArcSwap` load.
    any_volatile: AtomicBool,
    any_effects: AtomicBool,
    /// Which list `known` is: a number no other publication of any database's list had (so
    /// a cache of what a statement's calls do can tell a new list from an old one).
    generation: AtomicU64,
    /// Functions `CREATE FUNCTION`s through switchyard made volatile: kept across reads of the
    /// catalog (one may have begun before such a function was committed), never dropped; one
    /// entry per name, what each definition under it did merged.
    created: Mutex<Vec<Function>>,
    /// The statement registry's schema epoch + 1 when the list was last read (0: never).
    read_epoch: AtomicU64,
    /// When it was last read (`pool::clock::now_ms`).
    read_at: AtomicU64,
    /// The last read ran on a server not known to be caught up (the first read of the
    /// database, on a replica behind): the list is due again after [`RETRY_MS`].
    read_behind: AtomicBool,
    /// The primary's WAL position when the list fell due, as the first checkout on a replica
    /// to see it due found it in its view (0: not recorded; 1: due while no primary position
    /// was known). A replica reads the list only once it has replayed that far.
    due_lsn: AtomicU64,
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
        if !self.any_volatile.load(Ordering::Relaxed) {
            return false;
        }
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

    /// What the query text `text` does to the session through calls of functions whose body
    /// may change settings or keep session state (`None`: no such call).
    pub fn session_calls(&self, text: &[u8]) -> Option<Calls> {
        if !self.any_effects.load(Ordering::Relaxed) {
            return None;
        }
        let known = self.known.load();
        if known.effects.is_empty() || !text.contains(&b'(') {
            return None;
        }
        let mut found: Option<Calls> = None;
        crate::sql::calls_any(&String::from_utf8_lossy(text), |n| {
            if let Some(c) = known.effects.get(n) {
                let f = found.get_or_insert_with(Calls::default);
                f.settings |= c.settings;
                f.state |= c.state;
                f.computes_name |= c.computes_name;
                f.pin = f.pin.or(c.pin);
                f.names.extend(c.names.iter().cloned());
            }
            false
        });
        found
    }

    /// Whether some known function changes settings or keeps state (one relaxed load).
    pub fn any_effects(&self) -> bool {
        self.any_effects.load(Ordering::Relaxed)
    }

    /// Which list of functions is known now (see the field).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// What a FunctionCall of the function with OID `oid` does to the session (`None`: it
    /// neither changes settings nor keeps state, or it is not known).
    pub fn oid_calls(&self, oid: u32) -> Option<Calls> {
        if !self.any_effects.load(Ordering::Relaxed) {
            return None;
        }
        let known = self.known.load();
        known.effects.get(known.by_oid.get(&oid)?).cloned()
    }

    /// Adds the functions a statement just sent creates as volatile.
    pub fn add_created(&self, functions: Vec<Function>) {
        if functions.is_empty() {
            return;
        }
        let mut created = self.created.lock().unwrap_or_else(|e| e.into_inner());
        let mut known = Known::clone(&self.known.load());
        known.add_all(&functions);
        for f in functions {
            match created.iter_mut().find(|c| c.name == f.name) {
                Some(c) => c.merge(f),
                None => created.push(f),
            }
        }
        self.publish(known);
    }

    /// Makes `known` the list sessions see.
    fn publish(&self, known: Known) {
        static GENERATIONS: AtomicU64 = AtomicU64::new(1);
        self.generation.store(
            GENERATIONS.fetch_add(1, Ordering::Relaxed),
            Ordering::Relaxed,
        );
        self.any_volatile
            .store(!known.volatile.is_empty(), Ordering::Relaxed);
        self.any_effects
            .store(!known.effects.is_empty(), Ordering::Relaxed);
        self.known.store(Arc::new(known));
    }

    /// Whether the list should be read now (schema `epoch` of the statement registry) on the
    /// connection just checked out to `server` (asked only when a read is due), and if so,
    /// claims the reading (the caller must then call [`DbFunctions::finish_read`]). When no
    /// read is due this costs a few relaxed atomic loads and comparisons (every checkout).
    pub fn begin_read(
        &self,
        epoch: u64,
        now_ms: u64,
        server: impl FnOnce() -> Server,
    ) -> Option<Read> {
        let age = now_ms.saturating_sub(self.read_at.load(Ordering::Relaxed));
        let due = self.read_epoch.load(Ordering::Acquire) != epoch + 1
            || age > MAX_AGE_MS
            || (age > RETRY_MS && self.read_behind.load(Ordering::Relaxed));
        let tried = self.tried_at.load(Ordering::Relaxed);
        let backoff = tried != 0 && now_ms.saturating_sub(tried) < RETRY_MS && {
            // (Only after a failure: a schema change is read at once.)
            self.read_at.load(Ordering::Relaxed) < tried
        };
        if !due || backoff {
            return None;
        }
        let current = match server() {
            Server::Primary => true,
            Server::Replica { replayed, primary } => {
                let wanted = primary.unwrap_or(0).max(1);
                let wanted = match self.due_lsn.compare_exchange(
                    0,
                    wanted,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => wanted,
                    Err(recorded) => recorded,
                };
                replayed >= wanted
            }
        };
        let first = self.read_at.load(Ordering::Relaxed) == 0;
        if (!current && !first) || self.reading.swap(true, Ordering::AcqRel) {
            return None;
        }
        self.tried_at.store(now_ms.max(1), Ordering::Relaxed);
        Some(Read {
            epoch,
            at_ms: now_ms,
            current,
        })
    }

    /// Ends `read`: `functions` when it succeeded.
    pub fn finish_read(&self, functions: Option<Vec<Function>>, read: Read) {
        if let Some(functions) = functions {
            let created = self.created.lock().unwrap_or_else(|e| e.into_inner());
            self.publish(Known::of(functions.iter().chain(created.iter())));
            self.read_epoch.store(read.epoch + 1, Ordering::Release);
            self.read_at.store(read.at_ms.max(1), Ordering::Relaxed);
            self.read_behind.store(!read.current, Ordering::Relaxed);
            // The next time it falls due, the primary's position then is the one to have
            // (also after a first read behind: the position recorded for that one is old by
            // the time the list falls due again, and a replica paused since may have it).
            self.due_lsn.store(0, Ordering::Release);
        }
        self.reading.store(false, Ordering::Release);
    }
}

#[cfg(test)]
#[path = "catalog_tests.rs"]
mod tests;
