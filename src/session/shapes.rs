//! Row shapes of prepared statements across a schema change.
//!
//! A client that described its statement decodes later results with the row shape it got
//! then. On PostgreSQL, a statement whose result type a schema change altered fails its next
//! Bind with "cached plan must not change result type" (0A000), and drivers prepare it again.
//! A statement the proxy prepares on demand on another server connection is parsed anew there
//! and would return the new shape without a word (a driver decoding `text` as `int4`).
//!
//! So after a schema change the proxy has seen (registry epoch), when the request a
//! connection was just attached for binds such a statement (described by the client, interned
//! before the change, not on that connection), the proxy prepares and describes it there
//! first, one round trip, and answers the Bind (or Describe) with PostgreSQL's error if the
//! shape differs.
//! A request starting outside a transaction on a connection the client holds (session
//! pooling, a pinned client) is checked the same way: a statement evicted there since is
//! prepared again. A Describe of a portal bound from a statement whose shape is not known yet
//! records it as a Describe of the statement does (pgjdbc describes only portals).
//! Likewise after the client changed the settings a Parse is analysed under (its
//! `search_path`) since it described a statement: PostgreSQL analyses the statement again under
//! the new path, and fails its Bind with the same error if the row type changed; the proxy,
//! preparing it anew on a connection that lacks it, checks that copy the same way.
//! Costs nothing until a schema change or such a settings change: one comparison per attach,
//! and per request on a held connection; after one, the requests are scanned for such Binds.

use std::sync::Arc;

use bytes::BytesMut;

use super::statements::Statement;
use super::{settings, Session};
use crate::pool::server::Asides;
use crate::protocol::{encode, read_cstr, tag, Header, TxnStatus};

/// Client messages of a request looked at for Binds and Describes.
const SCAN_MAX: usize = 256;

/// Whether two RowDescription messages describe the same row type, as PostgreSQL compares a
/// statement's result before and after a schema change: column names, types, lengths and
/// modifiers. Not the table and column each came from: a table dropped and created again
/// with the same columns gives the same rows.
fn same_row_type(a: &[u8], b: &[u8]) -> bool {
    fn columns(m: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
        let body = m.get(5..)?;
        let (n, mut rest) = body.split_first_chunk::<2>()?;
        let mut out = Vec::with_capacity(u16::from_be_bytes(*n).into());
        for _ in 0..u16::from_be_bytes(*n) {
            let (name, after) = read_cstr(rest)?;
            // table OID (4), column number (2), then type OID (4), length (2), modifier (4),
            // then the format code (2).
            let field = after.get(..18)?;
            out.push((name, &field[6..16]));
            rest = &after[18..];
        }
        Some(out)
    }
    a == b || matches!((columns(a), columns(b)), (Some(x), Some(y)) if x == y)
}

impl Session {
    /// Whether a request is about to begin on a connection the client holds (session pooling,
    /// a pinned client) after a schema change: statements evicted from the connection since
    /// are prepared there again, and checked as on a connection just attached.
    pub(super) fn shapes_due(&self) -> bool {
        // (The registry's shared counters last: in transaction pooling, per relay pass, the
        // first test is false.)
        !self.releasable()
            && self.server.is_some()
            && self.txn == TxnStatus::Idle
            && self.pending.is_empty()
            && !self.batch_open
            && self.client_has_request()
            && (self.stale_shapes
                || self.path_moved
                || self.app.statements.epoch() != self.shapes_epoch
                || self.app.statements.changing())
    }

    /// See the module documentation. Runs on a connection just checked out: nothing was sent
    /// to it yet (what the proxy queued for it goes after this exchange, whose answers are read
    /// here).
    pub(super) async fn check_statement_shapes(&mut self) {
        self.changed_shapes.clear();
        let now = self.app.statements.epoch();
        if now != self.shapes_epoch {
            self.shapes_epoch = now;
            self.stale_shapes = self
                .statements
                .values()
                .any(|s| s.shape.get().is_some() && s.older_than(now));
            self.path_shapes.1.clear();
        }
        // While a schema change is in flight, a server may have it committed before the
        // epoch moves: every statement a client described is checked where it is not known
        // to have been prepared before the change (a copy prepared meanwhile is checked too).
        let changing = self.app.statements.changing();
        if !(self.stale_shapes || changing || self.path_moved) || self.txn != TxnStatus::Idle {
            return;
        }
        // The client's search_path, when it moved since the login and is known now: a
        // statement described under another path is read under this one where it is prepared
        // anew (see `Session::ensure_prepared`), and checked once per path.
        let path = self.current_path();
        let moved = |s: &Statement| {
            path.as_ref().is_some_and(|p| {
                s.shared_context()
                    && super::parse::context_value(&s.context, "search_path")
                        != p.as_deref().map(str::as_bytes)
            })
        };
        let Some(p) = self.server.as_mut() else {
            return;
        };
        let mut check: Vec<Arc<Statement>> = Vec::new();
        let buf = &self.client.rbuf[..];
        let mut at = 0;
        for _ in 0..SCAN_MAX {
            let Ok(Some(h)) = Header::peek(&buf[at..], usize::MAX) else {
                break;
            };
            if buf.len() < at + h.frame_len {
                break;
            }
            let body = &buf[at + 5..at + h.frame_len];
            let name = match h.tag {
                tag::BIND => read_cstr(body)
                    .and_then(|(_portal, rest)| read_cstr(rest))
                    .map(|(name, _)| name),
                tag::DESCRIBE if body.first() == Some(&b'S') => {
                    read_cstr(&body[1..]).map(|(name, _)| name)
                }
                _ => None,
            };
            if let Some(s) = name.and_then(|n| self.statements.get(n)) {
                let stale = changing || s.older_than(now);
                if s.shape.get().is_some()
                    && (stale || moved(s))
                    && s.depends.is_none()
                    && !check.iter().any(|c| c.id == s.id)
                    && !p.conn.prepared.trusted(s.id)
                {
                    // (What was found is of this epoch: its change cleared the rest.)
                    let known = path
                        .as_ref()
                        .filter(|p| !changing && self.path_shapes.0 == **p)
                        .and_then(|_| self.path_shapes.1.get(&s.id));
                    match known {
                        Some(true) => {}
                        Some(false) => {
                            if !self.changed_shapes.contains(&s.id) {
                                self.changed_shapes.push(s.id);
                            }
                        }
                        None => check.push(s.clone()),
                    }
                }
            }
            at += h.frame_len;
        }
        if check.is_empty() {
            return;
        }
        // The connection may be one the client LISTENs on: what it is notified of meanwhile
        // is its own, and relayed as the rest of what the server sends.
        let mut notifications = BytesMut::new();
        self.prepare_checked(check, &mut notifications).await;
        if let Some(p) = self.server.as_mut() {
            crate::pool::server::put_back(&mut p.conn.rbuf, notifications);
        }
    }

    /// Prepares and describes the statements of [`Session::check_statement_shapes`] on the
    /// attached connection, noting those whose row shape changed.
    async fn prepare_checked(&mut self, check: Vec<Arc<Statement>>, notifications: &mut BytesMut) {
        let Some(p) = self.server.as_mut() else {
            return;
        };
        let timeout = self.current.config.config.pool.connect_timeout;
        // The text means what it means under the client's settings (search_path).
        if !settings::same(&self.desired, &p.conn.applied) {
            if let Some(sql) = self.desired.sync_sql(&p.conn.applied, true) {
                let asides = Asides {
                    notices: None,
                    notifications: Some(&mut *notifications),
                };
                if !matches!(
                    p.conn.simple_query_noting(&sql, timeout, asides).await,
                    Ok(Ok(_))
                ) {
                    return;
                }
            }
            p.conn.applied = self.desired.clone();
        }
        // (Not while a schema change is in flight: its end moves the epoch, which forgets
        // what was found per path, but a server may have it committed before.)
        let path = self
            .current_path()
            .filter(|_| !self.app.statements.changing());
        for s in check {
            // (A copy read under the client's changed settings is not the statement shared
            // under this name: the Bind prepares it again, unrecorded.)
            let shared_here = !s.shared_context() || self.parses_under(&s.context);
            let p = self.server.as_mut().expect("attached");
            match p
                .conn
                .prepare_described(
                    &s.server_name,
                    &s.query,
                    s.parse_types(),
                    timeout,
                    notifications,
                )
                .await
            {
                Ok(Ok(shape)) if s.shape.get().is_some_and(|old| same_row_type(old, &shape)) => {
                    if shared_here {
                        p.conn.prepared.insert(&s, self.app.statements.changing());
                        self.evict_prepared();
                    } else {
                        // The name there is this client's reading now, not the shared one.
                        p.conn.prepared.remove(s.id);
                    }
                    if let Some(path) = &path {
                        self.found_under(path, s.id, true);
                    }
                }
                Ok(Ok(_)) => {
                    // Not left prepared there with the new shape (nor recorded as prepared:
                    // a client that knows the old one would get rows of the new).
                    p.conn.prepared.remove(s.id);
                    tracing::debug!(parent: &self.span, statement = s.id, "row shape changed since the client described its statement");
                    self.changed_shapes.push(s.id);
                    self.close_before_parse(&s);
                    if let Some(path) = &path {
                        self.found_under(path, s.id, false);
                    }
                }
                // Not prepared there (and the name closed): the Bind prepares it again, and
                // reports the error.
                Ok(Err(_)) => {
                    p.conn.prepared.remove(s.id);
                }
                // The relay finds the connection broken.
                Err(_) => return,
            }
        }
    }

    /// Notes whether statement `id` keeps its row shape under `path`.
    fn found_under(&mut self, path: &Option<String>, id: u64, same: bool) {
        if self.path_shapes.0 != *path {
            self.path_shapes = (path.clone(), Default::default());
        }
        self.path_shapes.1.insert(id, same);
    }

    /// The client's `search_path` (`Some(None)`: not set), when it moved since the login and
    /// the settings are known now.
    fn current_path(&self) -> Option<Option<String>> {
        (self.path_moved && !self.context_unsettled)
            .then(|| self.desired.0.get("search_path").cloned())
    }

    /// If the client's statement `name` changed its row shape since the client described it
    /// (found by [`Session::check_statement_shapes`] for this request), answers its Bind or
    /// Describe as PostgreSQL does and returns true. (Drivers know the error by its routine:
    /// asyncpg then prepares the statement again.)
    pub(super) fn fail_changed_shape(&mut self, name: &[u8]) -> bool {
        let changed = !self.changed_shapes.is_empty()
            && self
                .statements
                .get(name)
                .is_some_and(|s| self.changed_shapes.contains(&s.id));
        if changed {
            let mut b = BytesMut::new();
            encode::error_with(
                &mut b,
                tag::ERROR_RESPONSE,
                "ERROR",
                "0A000",
                "cached plan must not change result type",
                &[(b'F', "plancache.c"), (b'R', "RevalidateCachedQuery")],
            );
            self.respond_batch_error_message(b, "0A000");
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::same_row_type;

    /// A RowDescription of `(name, table OID, type OID)` columns.
    fn desc(cols: &[(&str, u32, u32)]) -> Vec<u8> {
        let mut body = (cols.len() as u16).to_be_bytes().to_vec();
        for (name, table, ty) in cols {
            body.extend_from_slice(name.as_bytes());
            body.push(0);
            body.extend_from_slice(&table.to_be_bytes());
            body.extend_from_slice(&1u16.to_be_bytes());
            body.extend_from_slice(&ty.to_be_bytes());
            body.extend_from_slice(&4i16.to_be_bytes());
            body.extend_from_slice(&(-1i32).to_be_bytes());
            body.extend_from_slice(&0u16.to_be_bytes());
        }
        let mut m = vec![b'T'];
        m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        m.extend_from_slice(&body);
        m
    }

    #[test]
    fn row_types_compare_as_postgresql_compares_them() {
        let old = desc(&[("id", 16384, 23), ("v", 16384, 25)]);
        // The same columns of a table created again: the same row type.
        assert!(same_row_type(
            &old,
            &desc(&[("id", 16999, 23), ("v", 16999, 25)])
        ));
        // Another type, another name, another column count: not.
        assert!(!same_row_type(
            &old,
            &desc(&[("id", 16384, 25), ("v", 16384, 25)])
        ));
        assert!(!same_row_type(
            &old,
            &desc(&[("id", 16384, 23), ("w", 16384, 25)])
        ));
        assert!(!same_row_type(&old, &desc(&[("id", 16384, 23)])));
        let no_data = b"n\0\0\0\x04".to_vec();
        assert!(same_row_type(&no_data, &no_data));
        assert!(!same_row_type(&old, &no_data));
        // A truncated message is compared whole.
        assert!(!same_row_type(&old, &old[..old.len() - 1]));
    }
}
