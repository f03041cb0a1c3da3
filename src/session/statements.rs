//! Named prepared statements across server connections.
//!
//! A client's `Parse` of a named statement is interned proxy-wide by (query, parameter types):
//! identical statements from any client share one server-side name (`_sy<id>`), so JDBC's
//! `S_1` from two clients never clash, and a server connection that already has a statement
//! prepared is not asked to prepare it again. Each server connection records which ids it has;
//! a client's Bind or Describe on a connection that lacks one prepares it there first.
//!
//! Bounded: the registry keeps a statement while some client has it prepared (entries nobody
//! holds are swept when the registry has doubled since the last sweep), and each server
//! connection keeps at most `max_prepared_statements` (pool/prepared.rs).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use prometheus::IntGauge;

/// Prefix of proxy-wide statement names; client names with it are refused as unknown.
pub const PREFIX: &[u8] = b"_sy";

/// One interned statement.
#[derive(Debug)]
pub struct Statement {
    /// Proxy-wide id.
    pub id: u64,
    /// The server-side name, `_sy<id>`.
    pub server_name: Bytes,
    /// Query text (without the NUL).
    pub query: Bytes,
    /// The raw parameter-type section of Parse (Int16 count, Int32 OIDs).
    pub types: Bytes,
    /// Whether it is a read by classification, its routing hint, and whether it is a read
    /// only the primary answers (classified once).
    pub route: std::sync::OnceLock<(bool, Option<crate::sql::Route>, bool)>,
    /// Its session effects, as classified when a client first parsed it: those of each run
    /// (settings it changes) apply at every Bind, not only at the Parse.
    pub effects: std::sync::OnceLock<crate::sql::Effects>,
    /// What its calls of the database's functions do to the session, as last found: the
    /// function list's generation << 16 | `Effects` bits. A Bind checks again when the list
    /// has changed since (a function it calls may have been learnt, or redefined, after the
    /// Parse). See session/functions.rs `statement_calls`.
    pub calls: std::sync::atomic::AtomicU64,
    /// The pid its `pg_terminate_backend(...)` call names, if any (found at its first Bind).
    pub terminate: std::sync::OnceLock<Option<crate::sql::TerminateArg>>,
    /// The statement its text runs (`EXECUTE _sy<id>`, see [`executing`]): prepared on a
    /// connection before this one is used there.
    pub depends: Option<Arc<Statement>>,
    /// The RowDescription (or NoData) message a client's Describe of it got first: the row
    /// shape clients that keep it decode results with. After a schema change, the proxy
    /// checks a connection's new copy against it (attach.rs `check_statement_shapes`).
    pub shape: std::sync::OnceLock<Bytes>,
    /// The parameter types a client's Describe of it got first (the ParameterDescription's
    /// body, laid out as Parse's type section): the types clients send their values in.
    /// PostgreSQL keeps a statement's parameter types from its first Parse; prepared anew
    /// elsewhere, it is parsed with these rather than left to infer them again (under a
    /// changed search_path or schema they could differ, and a value would be read as
    /// another type). See [`Statement::parse_types`].
    pub params: std::sync::OnceLock<Bytes>,
    /// The settings it was parsed under (see `Session::parse_context`): prepared again on
    /// a connection by a client whose settings now differ, it is that client's copy there,
    /// not the one shared under this name (see `Session::ensure_prepared`).
    pub context: Bytes,
    /// The registry's schema epoch it was interned in.
    epoch: u64,
    /// The registry still holds it (it was not swept or replaced since).
    in_registry: std::sync::atomic::AtomicBool,
}

impl Statement {
    /// Whether clients share it: it was parsed under settings known then (its context is
    /// `name=value` entries, each ending with a NUL), not under the `unsettled <n>` mark a
    /// session's unknown settings give, which no other Parse has.
    pub fn shared_context(&self) -> bool {
        self.context.is_empty() || self.context.ends_with(&[0])
    }

    /// The type section to prepare it anew with: the parameter types clients were told, when
    /// one described it, else those its Parse declared.
    pub fn parse_types(&self) -> &[u8] {
        self.params.get().unwrap_or(&self.types)
    }

    /// Interned before the schema last changed (by [`Registry::epoch`] `now`): a new Parse of
    /// its text may give another row shape.
    pub fn older_than(&self, now: u64) -> bool {
        self.epoch != now
    }

    /// Whether a client still has `s` (a server connection's weak reference) prepared: a
    /// strong reference beyond the registry's own. (Also dependent statements and a client's
    /// unnamed statement running it count: they prepare it when they run.)
    pub fn is_held(s: &std::sync::Weak<Statement>) -> bool {
        let refs = s.strong_count();
        match s.upgrade() {
            Some(st) => refs > usize::from(st.in_registry.load(Ordering::Acquire)),
            None => false,
        }
    }
}

/// (scope, query, parameter types, search_path).
type Key = (Bytes, Bytes, Bytes, Bytes);

/// The proxy-wide registry; looked up only when a client parses a named statement.
pub struct Registry {
    /// Keyed by (scope, query, parameter types, search_path at Parse time); the scope is
    /// the database and role (see [`scope`]).
    map: Mutex<HashMap<Key, Arc<Statement>>>,
    next: AtomicU64,
    /// Size at which the next sweep runs.
    sweep_at: AtomicUsize,
    /// Bytes of text the interned statements hold (changed under the map's lock).
    bytes: AtomicUsize,
    /// Bytes at which the next sweep runs, whatever the size: a few statements of megabytes
    /// each that no client holds any more must not stay until a thousand others came.
    sweep_bytes_at: AtomicUsize,
    /// Interned statements, for the metrics.
    gauge: Option<IntGauge>,
    /// Bumped when the schema may have changed: statements interned before are not handed to
    /// new Parses (their server-side copies keep the parameter and result types of their own
    /// Parse, as a client's own statement on PostgreSQL does; a new Parse must see the new
    /// schema, as it would on PostgreSQL).
    epoch: AtomicU64,
    /// Sessions whose schema change is in flight (sent, its transaction not yet seen to end):
    /// it may be committed on a server (and replayed on a replica) before the epoch moves.
    changing: AtomicUsize,
}

/// The scope statements are shared in: clients of one database logged in as one role
/// (`"$user"` in a search_path, and the tables and types a text names, depend on both).
pub fn scope(database: &str, user: &str) -> Bytes {
    Bytes::from(format!("{database}\0{user}"))
}

/// Sweeps never run below this size.
const MIN_SWEEP: usize = 1024;

/// Nor below this many bytes of statement text, unless [`MIN_SWEEP`] statements are interned.
const MIN_SWEEP_BYTES: usize = 16 << 20;

/// The bytes a statement keeps in the registry (its key shares them).
fn footprint(s: &Statement) -> usize {
    s.query.len() + s.types.len() + s.context.len()
}

/// The server-side name of statement `id`.
pub fn server_name(id: u64) -> String {
    format!("_sy{id}")
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new(None)
    }
}

impl Registry {
    /// An empty registry that reports its size to `gauge`.
    pub fn new(gauge: Option<IntGauge>) -> Registry {
        Registry {
            map: Mutex::default(),
            next: AtomicU64::new(0),
            sweep_at: AtomicUsize::new(MIN_SWEEP),
            bytes: AtomicUsize::new(0),
            sweep_bytes_at: AtomicUsize::new(MIN_SWEEP_BYTES),
            gauge,
            epoch: AtomicU64::new(0),
            changing: AtomicUsize::new(0),
        }
    }

    /// A number no other call returns (ids are drawn from the same count).
    pub fn unique(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The current schema epoch (see [`Registry::invalidate`]).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Whether a schema change is in flight (see [`Registry::begin_change`]): a server may
    /// have it committed already, so a statement prepared on a connection now may get a row
    /// shape other than the one its clients described.
    pub fn changing(&self) -> bool {
        self.changing.load(Ordering::Acquire) > 0
    }

    /// A session sent a schema change; [`Registry::end_change`] when its transaction is seen
    /// to end (or the session or its connection does).
    pub fn begin_change(&self) {
        self.changing.fetch_add(1, Ordering::AcqRel);
    }

    /// See [`Registry::begin_change`].
    pub fn end_change(&self) {
        let _ = self
            .changing
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// The schema may have changed (a DDL statement completed, or a server said a statement's
    /// result type changed): statements parsed from now on are parsed anew.
    pub fn invalidate(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        tracing::debug!("schema changed: statements parsed from now on are prepared anew");
    }

    /// The interned statement for (query, types) parsed under `search_path` (in one scope,
    /// for tests).
    #[cfg(test)]
    pub fn intern(&self, query: &[u8], types: &[u8], search_path: &[u8]) -> Arc<Statement> {
        self.intern_with(&Bytes::new(), query, types, search_path, None)
    }

    /// The interned statement for (query, types) parsed under the settings `context` (see
    /// `Session::parse_context`) in `scope` (see [`scope`]): the same text under another
    /// search_path, in another database or as another role may name other tables, so it is
    /// another statement (with its own row shape and session effects). `depends`: the statement a text made by [`executing`]
    /// runs (the same text always names the same statement).
    pub fn intern_with(
        &self,
        scope: &Bytes,
        query: &[u8],
        types: &[u8],
        context: &[u8],
        depends: Option<&Arc<Statement>>,
    ) -> Arc<Statement> {
        let key = (
            scope.clone(),
            Bytes::copy_from_slice(query),
            Bytes::copy_from_slice(types),
            Bytes::copy_from_slice(context),
        );
        let epoch = self.epoch.load(Ordering::Acquire);
        let mut map = self.map.lock().expect("registry");
        if let Some(s) = map.get(&key).filter(|s| s.epoch == epoch) {
            return s.clone();
        }
        let mut bytes = self.bytes.load(Ordering::Relaxed);
        if map.len() >= self.sweep_at.load(Ordering::Relaxed)
            || bytes + query.len() >= self.sweep_bytes_at.load(Ordering::Relaxed)
        {
            // Statements no client holds any more (closed, discarded, client gone). Server
            // connections may still have them; their limit closes them in time.
            map.retain(|_, s| {
                let keep = Arc::strong_count(s) > 1;
                if !keep {
                    s.in_registry.store(false, Ordering::Release);
                    bytes -= footprint(s);
                }
                keep
            });
            self.sweep_at
                .store((map.len() * 2).max(MIN_SWEEP), Ordering::Relaxed);
            self.sweep_bytes_at.store(
                (bytes.saturating_add(query.len()) * 2).max(MIN_SWEEP_BYTES),
                Ordering::Relaxed,
            );
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        // (The key's copies, shared: the text is kept once.)
        let s = Arc::new(Statement {
            id,
            server_name: Bytes::from(server_name(id)),
            query: key.1.clone(),
            types: key.2.clone(),
            route: std::sync::OnceLock::new(),
            effects: std::sync::OnceLock::new(),
            calls: std::sync::atomic::AtomicU64::new(0),
            terminate: std::sync::OnceLock::new(),
            depends: depends.cloned(),
            shape: std::sync::OnceLock::new(),
            params: std::sync::OnceLock::new(),
            context: key.3.clone(),
            epoch,
            in_registry: std::sync::atomic::AtomicBool::new(true),
        });
        bytes += footprint(&s);
        if let Some(old) = map.insert(key, s.clone()) {
            old.in_registry.store(false, Ordering::Release);
            bytes -= footprint(&old);
        }
        self.bytes.store(bytes, Ordering::Relaxed);
        if let Some(g) = &self.gauge {
            g.set(map.len() as i64);
        }
        s
    }

    /// Number of interned statements.
    pub fn len(&self) -> usize {
        self.map.lock().expect("registry").len()
    }

    /// Whether none are interned.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How many statements deep an `EXECUTE` of an `EXECUTE` of ... may go. Each level is a
/// recursion here (preparing what a statement runs first) and on the server; past this, a
/// Parse is refused as PostgreSQL refuses a statement that runs out of stack.
pub const MAX_CHAIN: usize = 32;

/// The longest statement name PostgreSQL tells apart (NAMEDATALEN - 1 bytes): its table of
/// prepared statements compares only that much of a name.
const NAME_MAX: usize = 63;

/// A client's named statements, by name as PostgreSQL compares names: two that agree in their
/// first 63 bytes are one statement.
#[derive(Default)]
pub struct Names(HashMap<Bytes, Arc<Statement>>);

/// Whether two statement names are one to PostgreSQL (see [`Names`]).
pub fn same_name(a: &[u8], b: &[u8]) -> bool {
    Names::key(a) == Names::key(b)
}

impl Names {
    fn key(name: &[u8]) -> &[u8] {
        &name[..name.len().min(NAME_MAX)]
    }

    pub fn get(&self, name: &[u8]) -> Option<&Arc<Statement>> {
        self.0.get(Self::key(name))
    }

    pub fn contains_key(&self, name: &[u8]) -> bool {
        self.0.contains_key(Self::key(name))
    }

    pub fn remove(&mut self, name: &[u8]) -> Option<Arc<Statement>> {
        self.0.remove(Self::key(name))
    }

    pub fn insert(&mut self, name: Bytes, statement: Arc<Statement>) -> Option<Arc<Statement>> {
        let name = name.slice(..name.len().min(NAME_MAX));
        self.0.insert(name, statement)
    }

    pub fn values(&self) -> impl Iterator<Item = &Arc<Statement>> {
        self.0.values()
    }

    pub fn clear(&mut self) {
        self.0.clear()
    }
}

/// The length of the chain of statements `stmt` runs through `EXECUTE`, itself included.
pub fn chain_len(stmt: &Statement) -> usize {
    std::iter::successors(Some(stmt), |s| s.depends.as_deref()).count()
}

/// `EXECUTE name ...` of a client's protocol-level statement, as its text is to reach the
/// server: the name (at `span` in `query`) replaced by the statement's shared one. PostgreSQL
/// lets SQL `EXECUTE` run a statement prepared with a Parse message (asyncpg's tests do).
/// (`None` if `span` is not within `query`.)
pub fn executing(query: &[u8], span: std::ops::Range<usize>, stmt: &Statement) -> Option<Vec<u8>> {
    let (before, after) = (query.get(..span.start)?, query.get(span.end..)?);
    let mut q = Vec::with_capacity(query.len() + stmt.server_name.len());
    q.extend_from_slice(before);
    q.extend_from_slice(&stmt.server_name);
    q.extend_from_slice(after);
    Some(q)
}

/// Splits a Parse body into (name, query, types section).
pub fn split_parse(body: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let (name, rest) = crate::protocol::read_cstr(body)?;
    let (query, types) = crate::protocol::read_cstr(rest)?;
    Some((name, query, types))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_shares_identical_statements() {
        let r = Registry::default();
        let a = r.intern(b"select $1", b"\0\x01\0\0\0\x17", b"");
        let b = r.intern(b"select $1", b"\0\x01\0\0\0\x17", b"");
        let c = r.intern(b"select $1", b"\0\0", b"");
        let d = r.intern(b"select $1", b"\0\0", b"tenant_a");
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, c.id);
        assert_ne!(c.id, d.id);
        assert_eq!(&a.server_name[..], format!("_sy{}", a.id).as_bytes());
        assert_eq!(r.len(), 3);
    }

    #[test]
    fn a_schema_change_makes_new_parses_new_statements() {
        let r = Registry::default();
        let a = r.intern(b"select * from t", b"", b"");
        assert_eq!(r.intern(b"select * from t", b"", b"").id, a.id);
        r.invalidate();
        let b = r.intern(b"select * from t", b"", b"");
        assert_ne!(b.id, a.id);
        assert_eq!(r.intern(b"select * from t", b"", b"").id, b.id);
        assert_eq!(r.len(), 1, "the old entry was replaced");
    }

    #[test]
    fn schema_changes_in_flight_are_counted() {
        let r = Registry::default();
        assert!(!r.changing());
        r.begin_change();
        r.begin_change();
        r.end_change();
        assert!(r.changing());
        r.end_change();
        assert!(!r.changing());
        // (An unmatched end does not wrap around.)
        r.end_change();
        assert!(!r.changing());
    }

    #[test]
    fn statements_nobody_holds_are_swept_once_the_registry_doubles() {
        let r = Registry::default();
        let held: Vec<_> = (0..10)
            .map(|i| r.intern(format!("select {i}").as_bytes(), b"", b""))
            .collect();
        for i in 10..MIN_SWEEP {
            drop(r.intern(format!("select {i}").as_bytes(), b"", b""));
        }
        assert_eq!(r.len(), MIN_SWEEP);
        let again = r.intern(b"select 0", b"", b"");
        assert_eq!(again.id, held[0].id, "a held statement is found, not swept");
        let new = r.intern(b"select new", b"", b"");
        assert_eq!(
            r.len(),
            11,
            "the sweep kept the 10 held statements and added one"
        );
        assert_ne!(new.id, held[9].id);
    }

    #[test]
    fn large_statements_nobody_holds_are_swept_by_their_bytes() {
        let r = Registry::default();
        let big = |i: usize| format!("select '{i}{}'", "x".repeat(1 << 20));
        let held = r.intern(big(0).as_bytes(), b"", b"");
        // The text is kept once: the statement's query is the key's.
        assert!(r
            .map
            .lock()
            .unwrap()
            .keys()
            .all(|k| k.1.as_ptr() == held.query.as_ptr()));
        for i in 1..100 {
            drop(r.intern(big(i).as_bytes(), b"", b""));
            let bytes = r.bytes.load(Ordering::Relaxed);
            assert!(
                bytes <= 2 * MIN_SWEEP_BYTES + (2 << 20),
                "{i}: {bytes} bytes of statements nobody holds kept"
            );
        }
        assert!(r.len() < 40, "{} statements kept", r.len());
        assert_eq!(
            r.intern(big(0).as_bytes(), b"", b"").id,
            held.id,
            "the held one stays"
        );
        // What the registry counts is what it holds.
        let counted: usize = r.map.lock().unwrap().values().map(|s| footprint(s)).sum();
        assert_eq!(r.bytes.load(Ordering::Relaxed), counted);
    }

    #[test]
    fn an_execute_names_the_shared_statement() {
        let r = Registry::default();
        let target = r.intern(b"select 1", b"", b"");
        let q = executing(b"/* x */ EXECUTE foobar(1)", 16..22, &target).unwrap();
        assert_eq!(q, format!("/* x */ EXECUTE _sy{}(1)", target.id).as_bytes());
        assert_eq!(
            executing(b"EXECUTE f", 8..12, &target),
            None,
            "a span past the end"
        );
        let s = r.intern_with(&Bytes::new(), &q, b"", b"", Some(&target));
        assert_eq!(s.depends.as_ref().map(|d| d.id), Some(target.id));
        assert_eq!(
            r.intern_with(&Bytes::new(), &q, b"", b"", Some(&target)).id,
            s.id
        );
        let elsewhere = scope("other_db", "app");
        assert_ne!(
            r.intern_with(&elsewhere, &q, b"", b"", Some(&target)).id,
            s.id,
            "another database's statement"
        );
    }

    #[test]
    fn parse_body_split() {
        assert_eq!(
            split_parse(b"s1\0select 1\0\0\0"),
            Some((&b"s1"[..], &b"select 1"[..], &b"\0\0"[..]))
        );
        assert_eq!(split_parse(b"s1\0select 1"), None);
    }
}
