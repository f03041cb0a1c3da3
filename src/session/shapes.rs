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
//! Costs nothing until a schema change: one comparison per attach.

use std::sync::Arc;

use bytes::BytesMut;

use super::statements::Statement;
use super::{settings, Session};
use crate::protocol::{encode, read_cstr, tag, Header, TxnStatus};

/// Client messages of a request looked at for Binds and Describes.
const SCAN_MAX: usize = 256;

impl Session {
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
        }
        if !self.stale_shapes || self.txn != TxnStatus::Idle {
            return;
        }
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
                if s.shape.get().is_some()
                    && s.older_than(now)
                    && s.depends.is_none()
                    && !check.iter().any(|c| c.id == s.id)
                    && !p.conn.prepared.touch(s.id)
                {
                    check.push(s.clone());
                }
            }
            at += h.frame_len;
        }
        if check.is_empty() {
            return;
        }
        let timeout = self.current.config.config.pool.connect_timeout;
        // The text means what it means under the client's settings (search_path).
        if !settings::same(&self.desired, &p.conn.applied) {
            if let Some(sql) = self.desired.sync_sql(&p.conn.applied, true) {
                if !matches!(p.conn.simple_query(&sql, timeout).await, Ok(Ok(_))) {
                    return;
                }
            }
            p.conn.applied = self.desired.clone();
        }
        for s in check {
            let p = self.server.as_mut().expect("attached");
            match p
                .conn
                .prepare_described(&s.server_name, &s.query, &s.types, timeout)
                .await
            {
                Ok(Ok(shape)) if s.shape.get() == Some(&shape) => {
                    p.conn.prepared.insert(&s);
                    self.evict_prepared();
                }
                Ok(Ok(_)) => {
                    tracing::debug!(parent: &self.span, statement = s.id, "row shape changed since the client described its statement");
                    self.changed_shapes.push(s.id);
                    // Not left prepared there with the new shape (nor recorded as prepared:
                    // a client that knows the old one would get rows of the new).
                    self.close_before_parse(&s);
                }
                // Not prepared there: the Bind prepares it again, and reports the error.
                Ok(Err(_)) => {}
                // The relay finds the connection broken.
                Err(_) => return,
            }
        }
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
            self.respond_batch_error_message(b);
        }
        changed
    }
}
