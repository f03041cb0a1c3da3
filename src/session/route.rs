//! Where the next request goes: the routing rules (classification, transactions, hints,
//! session overrides, consistency). Which backend then serves it is choose.rs.

use bytes::Bytes;

use super::Session;
use crate::config::Consistency;
use crate::protocol::{read_cstr, tag, Header};
use crate::sql::{BeginModes, Route, TxnControl};

/// The kind of server a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    Primary,
    Replica,
}

/// A routing decision for one request (or one transaction).
#[derive(Debug, Clone, Copy)]
pub(super) struct Decision {
    pub target: Target,
    /// May write: its commit position must be tracked for read-your-writes.
    pub write: bool,
    /// An autocommit read: may be repeated elsewhere if its server fails before answering.
    pub retryable: bool,
    /// Metrics label.
    pub reason: &'static str,
}

impl Decision {
    fn primary(write: bool, reason: &'static str) -> Decision {
        Decision {
            target: Target::Primary,
            write,
            retryable: false,
            reason,
        }
    }
    fn replica(retryable: bool, reason: &'static str) -> Decision {
        Decision {
            target: Target::Replica,
            write: false,
            retryable,
            reason,
        }
    }
}

/// Why no backend could be chosen: (SQLSTATE, message).
pub(super) type NoBackend = (&'static str, &'static str);

impl Session {
    /// Whether sessions default to read-only transactions.
    pub(super) fn default_read_only(&self) -> bool {
        self.desired
            .0
            .get("default_transaction_read_only")
            .is_some_and(|v| matches!(v.as_str(), "on" | "true" | "1" | "yes"))
    }

    /// Whether the session's transactions are SERIALIZABLE unless they say otherwise. A hot
    /// standby refuses every statement of such a session, reads included (0A000).
    fn serializable_default(&self) -> bool {
        self.replica_refused
            || self
                .desired
                .0
                .get("default_transaction_isolation")
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("serializable"))
    }

    /// Whether a transaction begun with `modes` may run on a replica: READ ONLY given (or
    /// made so by a `SET TRANSACTION` first: `later_read_only`), or no access mode and
    /// `default_transaction_read_only` on; never SERIALIZABLE (given, or the session's
    /// default), which a hot standby refuses, nor READ WRITE given, which it refuses too
    /// (the BEGIN saying so is sent as it is).
    fn begin_on_replica(&self, modes: BeginModes, later_read_only: bool) -> bool {
        let read_only = match modes.read_only {
            Some(given) => given,
            None => self.default_read_only() || later_read_only,
        };
        read_only
            && !modes
                .serializable
                .unwrap_or_else(|| self.serializable_default())
    }

    /// Decides the route of the request at the front of the client buffer.
    pub(super) fn decide(&self) -> Decision {
        let config = &self.current.config;
        if self.pool_mode == crate::config::PoolMode::Session
            || !config.config.routing.read_write_split
        {
            return Decision::primary(true, "no_split");
        }
        if self.pin.is_some() {
            return Decision::primary(true, "pinned");
        }
        self.route_front()
    }

    /// The route of the request at the front of the client buffer for a client not pinned
    /// (with reads split, in transaction pooling).
    pub(super) fn route_front(&self) -> Decision {
        if self.force_primary {
            return Decision::primary(true, "retry_on_primary");
        }
        if self.aborted_txn {
            // A block that failed without a server (its connection lost) is recreated, failed,
            // on whichever server serves reads: nothing in it runs (25P02 up to its end), so it
            // needs no primary, which may be the server just lost. (Not for an end that chains
            // a new transaction, `ROLLBACK AND CHAIN`: that one may write.)
            let chains = self
                .front_statement_text()
                .and_then(|t| std::str::from_utf8(t).ok())
                .is_some_and(crate::sql::chains);
            if !chains {
                return Decision::replica(false, "failed_block");
            }
            return Decision::primary(true, "transaction");
        }
        if let Some(begin) = &self.deferred_begin {
            // (`SET switchyard.route = primary` may come after the BEGIN it answered.)
            let ro = self.begin_on_replica(begin.modes, self.front_is_set_transaction_read_only())
                && self.route_override != Some(Route::Primary)
                && !self.front_asks_the_primary();
            return if !ro {
                Decision::primary(true, "transaction")
            } else if self.consistency == Consistency::Primary {
                // Its reads are the session's reads, which this consistency keeps on the primary.
                Decision::primary(false, "consistency_primary")
            } else {
                Decision::replica(false, "read_only_transaction")
            };
        }
        let Ok(Some(h)) = Header::peek(&self.client.rbuf, usize::MAX) else {
            return Decision::primary(true, "unknown");
        };
        let (read, hint, txn, setting, asks_primary) = match h.tag {
            tag::QUERY if self.client.rbuf.len() >= h.frame_len => {
                let text = query_bytes(&self.client.rbuf[5..h.frame_len]);
                let info = match self.front_query_info(h.frame_len) {
                    Some(i) => i,
                    None => {
                        let classifier = self.app.classifier.load();
                        let a = analyze(&classifier, text, self.opaque_backslashes);
                        super::query::QueryInfo::of(&classifier, text, &a)
                    }
                };
                // (A BEGIN the server could refuse is left to the primary, which answers it.)
                let txn = match info.txn {
                    TxnControl::Begin { .. } if info.statements == 1 => std::str::from_utf8(text)
                        .ok()
                        .and_then(crate::sql::begin_modes)
                        .map(|modes| self.begin_on_replica(modes, false)),
                    _ => None,
                };
                // (A read that pins the client, should the classifier let one through, goes to
                // the primary: pinned to a replica, the client's writes would fail there.)
                let read = info.read
                    && info.pin.is_none()
                    && !self.app.write_cache.contains(text)
                    && !self.calls_volatile(text);
                // A read that changes settings (`SELECT set_config(...)`) goes where a `SET`
                // goes: on a replica, a role taken that way would pin the client there, and
                // its writes would fail. (A text that also writes stays a write.)
                let setting =
                    info.setting || (read && info.effects.contains(crate::sql::Effects::SETTINGS));
                let asks = info.asks_primary
                    && crate::sql::names::plain_question(text)
                    && !self.app.write_cache.contains(text)
                    && !self.calls_volatile(text);
                (read, info.hint, txn, setting, asks)
            }
            tag::PARSE
            | tag::BIND
            | tag::DESCRIBE
            | tag::EXECUTE
            | tag::SYNC
            | tag::FLUSH
            | tag::CLOSE => {
                let (read, hint, asks) = self.batch_is_read().unwrap_or((false, None, false));
                // A read-only transaction begun through the extended protocol runs on a
                // replica, as one begun with a Query does (its first statement is not looked
                // at: the BEGIN goes to the server at once, not answered by the proxy).
                let txn = match h.tag {
                    tag::PARSE | tag::BIND if self.txn == crate::protocol::TxnStatus::Idle => self
                        .front_extended_begin()
                        .map(|modes| self.begin_on_replica(modes, false)),
                    _ => None,
                };
                (read, hint, txn, false, asks)
            }
            _ => (false, None, None, false, false),
        };
        let autocommit = self.txn == crate::protocol::TxnStatus::Idle;
        if let Some(forced) = self.route_override.or(hint) {
            return match forced {
                Route::Primary => Decision::primary(!read, "hint_primary"),
                Route::Replica => Decision {
                    write: !read,
                    ..Decision::replica(autocommit && txn.is_none(), "hint_replica")
                },
            };
        }
        if let Some(read_only) = txn {
            return if !read_only {
                Decision::primary(true, "transaction")
            } else if self.consistency == Consistency::Primary {
                Decision::primary(false, "consistency_primary")
            } else {
                Decision::replica(false, "read_only_transaction")
            };
        }
        if setting && autocommit {
            // The session's settings live on the primary's side too; no data changes.
            return Decision::primary(false, "setting");
        }
        if asks_primary && autocommit {
            // What only the primary answers (`pg_is_in_recovery()`, `SHOW
            // transaction_read_only`, `pg_locks`): it runs there, and writes nothing, so the
            // user's reads need not wait for its "commit" to reach the replicas.
            return Decision::primary(false, "primary_answer");
        }
        if !read || !autocommit {
            return Decision::primary(true, if read { "transaction" } else { "write" });
        }
        if self.consistency == Consistency::Primary {
            return Decision::primary(false, "consistency_primary");
        }
        if self.serializable_default() {
            return Decision::primary(false, "serializable");
        }
        Decision::replica(true, "read")
    }

    /// Whether the request at the front of the client buffer (a read-only transaction's
    /// first statement: a Query, a Parse, or the Bind of a statement prepared earlier) asks
    /// what only the primary answers for the
    /// session: its server process (`pg_backend_pid()`, the process its cancel key names),
    /// whether the server is a standby, a view only the primary fills. The transaction then
    /// runs there: on a replica the answers would be the replica's. So it does when a
    /// standby would refuse the request, or it is hinted `/* switchyard:primary */`.
    fn front_asks_the_primary(&self) -> bool {
        let Some(text) = self.front_statement_text() else {
            return false;
        };
        if self.app.write_cache.contains(text) {
            // A replica refused it before.
            return true;
        }
        let a = analyze(&self.app.classifier.load(), text, self.opaque_backslashes);
        // (A first statement that changes settings, `set_config('role', ...)` say, or leaves
        // session state, a `WITH HOLD` cursor, a `PREPARE`, could leave the session pinned to
        // the replica, where its later writes fail. A mode a standby refuses fails there, as
        // does a statement it refuses in any transaction. Every statement of the request
        // counts, not only its first.)
        a.effects.contains(crate::sql::Effects::SETTINGS)
            || a.pin.is_some()
            || a.txn == TxnControl::SetTransactionReadWrite
            || a.primary_only
            || a.hint == Some(Route::Primary)
    }

    /// The text of the statement the message at the front of the client buffer runs: a
    /// Query's, a Parse's, or the statement a Bind names (when the proxy knows it).
    pub(super) fn front_statement_text(&self) -> Option<&[u8]> {
        let h = Header::peek(&self.client.rbuf, usize::MAX).ok()??;
        let body = self.client.rbuf.get(5..h.frame_len)?;
        let text = match h.tag {
            tag::QUERY => body,
            tag::PARSE => super::statements::split_parse(body)?.1,
            tag::BIND => {
                let (_, rest) = read_cstr(body)?;
                let (name, _) = read_cstr(rest)?;
                if name.is_empty() {
                    let p = self.unnamed.as_ref()?;
                    super::statements::split_parse(&p[5..])?.1
                } else {
                    &self.statements.get(name)?.query[..]
                }
            }
            _ => return None,
        };
        Some(query_bytes(text))
    }

    /// The modes of the lone `BEGIN` (or `START TRANSACTION`) that the Parse or Bind at the
    /// front of an extended-protocol batch runs, if it runs one (psycopg's and pgjdbc's
    /// `BEGIN READ ONLY`). (Only a text starting with the word is examined further: this runs
    /// for every batch.)
    fn front_extended_begin(&self) -> Option<crate::sql::BeginModes> {
        let text = self.front_statement_text()?;
        let start = text.iter().position(|b| !b.is_ascii_whitespace())?;
        let word = text.get(start..start + 5)?;
        if !word.eq_ignore_ascii_case(b"begin") && !word.eq_ignore_ascii_case(b"start") {
            return None;
        }
        crate::sql::begin_modes(std::str::from_utf8(text).ok()?)
    }

    fn front_is_set_transaction_read_only(&self) -> bool {
        let Ok(Some(h)) = Header::peek(&self.client.rbuf, usize::MAX) else {
            return false;
        };
        if h.tag != tag::QUERY || self.client.rbuf.len() < h.frame_len {
            return false;
        }
        let text = query_bytes(&self.client.rbuf[5..h.frame_len]);
        // A hot standby refuses SERIALIZABLE: such a transaction stays on the primary.
        let serializable = text
            .windows(12)
            .any(|w| w.eq_ignore_ascii_case(b"serializable"));
        !serializable
            && analyze(&self.app.classifier.load(), text, self.opaque_backslashes).txn
                == TxnControl::SetTransactionReadOnly
    }

    /// Scans an extended-protocol batch up to its Sync: `Some(true)` when every statement it
    /// binds or parses is a read, `None` when the batch is not complete in the buffer. A
    /// batch that binds and executes nothing before a Flush that ends the buffer (asyncpg's
    /// Parse, Describe, Flush: the client waits for the answers) is looked at as far as it
    /// goes: what it parses decides, and what the client sends after its answers is looked
    /// at again (see `leave_for_next_request`).
    /// The third value: some statement is one that only the primary answers, and none
    /// writes (see [`crate::sql::Analysis::only_asks_the_primary`]).
    fn batch_is_read(&self) -> Option<(bool, Option<Route>, bool)> {
        let buf = &self.client.rbuf[..];
        let mut at = 0;
        let mut saw_statement = false;
        // (Whether the last message was a Flush; whether the batch parsed the unnamed
        // statement, which its Binds of it then run, not the one the client had.)
        let (mut flushed, mut parsed_unnamed) = (false, false);
        // (Whether it binds or executes anything.)
        let mut runs = false;
        let mut asks = false;
        // (Under a replica hint a statement that is not a read goes on: the batch runs there,
        // but is not a read.)
        let mut all_read = true;
        let mut hint = None;
        let classifier = self.app.classifier.load();
        loop {
            let h = match Header::peek(&buf[at..], usize::MAX).ok()? {
                Some(h) if buf.len() - at >= h.frame_len => h,
                // (More of it to come.)
                _ => {
                    return (!runs && flushed && at == buf.len()).then_some((all_read, hint, asks))
                }
            };
            flushed = h.tag == tag::FLUSH;
            let body = &buf[at + 5..at + h.frame_len];
            match h.tag {
                tag::PARSE => {
                    let (name, query, _) = super::statements::split_parse(body)?;
                    parsed_unnamed |= name.is_empty();
                    let text = query_bytes(query);
                    let a = analyze(&classifier, text, self.opaque_backslashes);
                    hint = hint.or(a.hint);
                    // (A statement that changes settings runs on the primary, see `decide`.)
                    let read = underlying_read(&classifier, text, &a)
                        && !a
                            .effects
                            .intersects(crate::sql::Effects::SETTINGS | crate::sql::Effects::PIN)
                        && !self.calls_volatile(text)
                        && !self.app.write_cache.contains(text);
                    if !read && hint != Some(Route::Replica) {
                        let asking = a.only_asks_the_primary()
                            && crate::sql::names::plain_question(text)
                            && !self.calls_volatile(text)
                            && !self.app.write_cache.contains(text);
                        if !asking {
                            return Some((false, hint, false));
                        }
                        asks = true;
                    }
                    all_read &= read;
                    saw_statement = true;
                }
                tag::BIND => {
                    runs = true;
                    let (_, rest) = read_cstr(body)?;
                    let (name, _) = read_cstr(rest)?;
                    let classify = |query: &[u8]| {
                        let text = query_bytes(query);
                        let a = analyze(&classifier, text, self.opaque_backslashes);
                        (
                            underlying_read(&classifier, text, &a)
                                && !a.effects.intersects(
                                    crate::sql::Effects::SETTINGS | crate::sql::Effects::PIN,
                                ),
                            a.hint,
                            a.only_asks_the_primary() && crate::sql::names::plain_question(text),
                        )
                    };
                    // (The classification of a statement is kept with it; whether it calls
                    // one of the database's volatile functions is asked each time: the list
                    // changes.)
                    // (Nor is whether a replica refused it: see `WriteCache`.)
                    let volatile = |query: &[u8]| {
                        let text = query_bytes(query);
                        self.calls_volatile(text) || self.app.write_cache.contains(text)
                    };
                    let (read, h, asking) = if name.is_empty() && parsed_unnamed {
                        // (Checked at its Parse.)
                        (true, None, false)
                    } else if name.is_empty() {
                        match &self.unnamed {
                            Some(parse) => {
                                let query = super::statements::split_parse(&parse[5..])?.1;
                                let (read, h, asking) = classify(query);
                                let volatile = volatile(query);
                                (read && !volatile, h, asking && !volatile)
                            }
                            // Parsed earlier in this batch (already checked) or nothing at all.
                            None => (saw_statement, None, false),
                        }
                    } else {
                        match self.statements.get(name) {
                            Some(s) => {
                                let (read, h, asking) = *s.route.get_or_init(|| classify(&s.query));
                                let volatile = volatile(&s.query);
                                (read && !volatile, h, asking && !volatile)
                            }
                            None => (saw_statement, None, false),
                        }
                    };
                    hint = hint.or(h);
                    if !read && hint != Some(Route::Replica) {
                        if !asking {
                            return Some((false, hint, false));
                        }
                        asks = true;
                    }
                    all_read &= read;
                    saw_statement = true;
                }
                tag::EXECUTE => runs = true,
                tag::DESCRIBE | tag::FLUSH | tag::CLOSE => {}
                tag::SYNC => return Some((saw_statement && all_read, hint, asks)),
                _ => return Some((false, hint, false)),
            }
            at += h.frame_len;
        }
    }
}

/// The classifier's analysis of a client's Query or Parse text, or [`Analysis::opaque`] when
/// the text has a backslash the session's settings make opaque to the lexer
/// (`opaque_backslashes`, see [`crate::sql::backslashes_are_opaque`]).
///
/// [`Analysis::opaque`]: crate::sql::Analysis::opaque
pub(super) fn analyze<'a>(
    classifier: &crate::sql::Classifier,
    text: &'a [u8],
    opaque_backslashes: bool,
) -> crate::sql::Analysis<'a> {
    let a = classifier.analyze_text(text);
    if opaque_backslashes && text.contains(&b'\\') {
        // (What an `EXECUTE` or `DEALLOCATE` names comes before any string: still the name.)
        return crate::sql::Analysis {
            execute: a.execute,
            deallocate: a.deallocate,
            ..crate::sql::Analysis::opaque()
        };
    }
    a
}

/// Whether `sql` is a read by its classification alone: a routing hint overrides the route,
/// but whether the statement may write (and so needs its commit position tracked) does not
/// change with a hint.
pub(super) fn underlying_read(
    classifier: &crate::sql::Classifier,
    text: &[u8],
    a: &crate::sql::Analysis<'_>,
) -> bool {
    if a.hint.is_none() {
        return a.route == Route::Replica;
    }
    let sql = String::from_utf8_lossy(text);
    let start = crate::sql::Lexer::new(&sql)
        .find(|t| !t.is_comment())
        .map(|t| t.offset)
        .unwrap_or(sql.len());
    classifier.analyze(&sql[start..]).route == Route::Replica
}

/// The SQL text of a Query body or Parse query; text that is not UTF-8 (a client encoding
/// such as LATIN1) with the foreign bytes replaced, which keeps the statement's structure.
pub(super) fn query_text(body: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(query_bytes(body))
}

/// The SQL text of a Query body or Parse query, not validated as UTF-8.
pub(super) fn query_bytes(body: &[u8]) -> &[u8] {
    body.strip_suffix(&[0]).unwrap_or(body)
}

/// A bounded set of statement texts that a replica refused although classified as reads
/// (they write after all, call what only the primary runs, or read an unlogged table): they
/// run on the primary from then on, as Queries, as Parses and bound.
#[derive(Default)]
pub struct WriteCache {
    set: std::sync::Mutex<std::collections::HashSet<u64>>,
    /// Lets the common case (nothing learned) skip the lock.
    used: std::sync::atomic::AtomicBool,
}

/// Entries kept before the cache starts over.
const WRITE_CACHE_MAX: usize = 10_000;

impl WriteCache {
    fn key(sql: &[u8]) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        sql.hash(&mut h);
        h.finish()
    }

    /// Whether `sql` is known to write.
    pub fn contains(&self, sql: &[u8]) -> bool {
        if !self.used.load(std::sync::atomic::Ordering::Relaxed) {
            return false;
        }
        // (Hashed before the lock is taken: held only for the lookup.)
        let key = Self::key(sql);
        self.set
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&key)
    }

    /// Remembers `sql` as a write.
    pub fn insert(&self, sql: &[u8]) {
        let key = Self::key(sql);
        let mut set = self.set.lock().unwrap_or_else(|e| e.into_inner());
        if set.len() >= WRITE_CACHE_MAX {
            set.clear();
        }
        set.insert(key);
        self.used.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A BEGIN answered by the proxy, sent with the transaction's first statement.
pub(super) struct DeferredBegin {
    /// Its request bytes: the BEGIN's Query, then any `SET TRANSACTION` Queries held with it.
    pub frame: Bytes,
    /// How many Queries `frame` holds.
    pub queries: usize,
    /// What it asks for (where the transaction may run).
    pub modes: BeginModes,
    /// The block was begun by a `COMMIT AND CHAIN` or `ROLLBACK AND CHAIN` the proxy answered:
    /// the BEGIN as it was then. PostgreSQL gives a chained block its modes directly (not
    /// as settings made in it), so they outlive the block's failure, unlike a `SET
    /// TRANSACTION` made in it: a `ROLLBACK AND CHAIN` of the failed block chains them again.
    pub chained_from: Option<Box<DeferredBegin>>,
}

impl DeferredBegin {
    /// A plain `BEGIN`, the session's defaults.
    pub fn plain() -> Self {
        let mut frame = bytes::BytesMut::new();
        crate::protocol::encode::message(&mut frame, crate::protocol::tag::QUERY, |b| {
            b.extend_from_slice(b"BEGIN\0")
        });
        DeferredBegin {
            frame: frame.freeze(),
            queries: 1,
            modes: BeginModes::default(),
            chained_from: None,
        }
    }

    /// The block ends `AND CHAIN`: this BEGIN now stands for the next block, as it is now.
    pub fn chain(&mut self) {
        self.chained_from = Some(Box::new(DeferredBegin {
            frame: self.frame.clone(),
            queries: self.queries,
            modes: self.modes,
            chained_from: None,
        }));
    }
}
