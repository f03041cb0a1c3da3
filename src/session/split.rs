//! A request that ends a read-only transaction on a replica and goes on after that (`COMMIT;
//! INSERT ...` in one Query, or `COMMIT` then a write before one Sync) is split right after
//! the end: the rest is then routed afresh, as a request sent behind it would be, rather than
//! fail on the replica. The client still gets one answer for its one request (see the hooks
//! `SplitFirst` and `SplitSync` in `pending.rs`, and `server_lost` for a split whose server is
//! lost).

use bytes::BytesMut;

use super::pending::{Hook, Kind, Mode};
use super::route::Target;
use super::Session;
use crate::protocol::{encode, tag, Header, TxnStatus};

impl Session {
    /// Whether a block-ending statement executed in the open batch of a read-only transaction
    /// on a replica is the last thing sent: then the batch is ended there with a Sync of the
    /// proxy's own, so that what the client sends after it (a write, say) is routed afresh
    /// once it is answered, as behind a Sync of the client's, rather than fail on the replica.
    pub(super) fn split_after_block_end(&mut self, h: Header) {
        if matches!(h.tag, tag::SYNC | tag::FLUSH) {
            return;
        }
        // (Sent after the end, this message is the last one sent from now on.)
        let ended_last = std::mem::take(&mut self.ended_block_last);
        if !self.batch_ends_block
            || !ended_last
            || self.server.is_none()
            || self.target != Target::Replica
            || !self.releasable()
        {
            return;
        }
        encode::empty(&mut self.swbuf, tag::SYNC);
        // (Forward: to the rest of the proxy, the client's requests so far end here.)
        self.pending
            .expect(Kind::Sync, Mode::Forward, Hook::SplitSync);
        self.ending_block = true;
        self.batch_ends_block = false;
        self.batch_open = false;
        self.bound_in_batch = false;
    }

    /// A Query (at the front of the client buffer, frame `h`) in a transaction block on a
    /// replica that ends the block and has more statements after that (`COMMIT; INSERT ...`)
    /// is split into two Queries there, the first marked [`split_first`](Self::split_first):
    /// the rest is then routed afresh once the first is answered, as a Query sent after it
    /// would be (on the replica, a write would fail). Returns whether it was split.
    pub(super) fn split_query_after_block_end(&mut self, h: Header) -> bool {
        if self.server.is_none()
            || self.target != Target::Replica
            || self.txn == TxnStatus::Idle
            || !self.releasable()
            || self.opaque_backslashes
        {
            return false;
        }
        let text = super::route::query_bytes(&self.client.rbuf[5..h.frame_len]);
        let Ok(sql) = std::str::from_utf8(text) else {
            return false;
        };
        let at = {
            let classifier = self.app.classifier.load();
            let a = super::route::analyze(&classifier, text, false);
            if a.statements < 2
                || a.execute.is_some()
                || a.effects.contains(crate::sql::Effects::SETTINGS)
            {
                return false;
            }
            drop(classifier);
            let mut parts = crate::sql::split_statements(sql).peekable();
            let mut at = None;
            while let Some(part) = parts.next() {
                if parts.peek().is_some() && self.ends_block(part.as_bytes()) {
                    at = Some(part.as_ptr() as usize - sql.as_ptr() as usize + part.len());
                    break;
                }
            }
            match at {
                Some(at) => at,
                None => return false,
            }
        };
        let rest = sql[at..].trim_start_matches(|c: char| c == ';' || c.is_whitespace());
        let mut frames = BytesMut::with_capacity(h.frame_len + 6 + self.client.rbuf.len());
        for part in [&sql[..at], rest] {
            encode::message(&mut frames, tag::QUERY, |b| {
                b.extend_from_slice(part.as_bytes());
                b.extend_from_slice(&[0]);
            });
        }
        frames.extend_from_slice(&self.client.rbuf[h.frame_len..]);
        self.client.rbuf = frames;
        self.split_first = true;
        true
    }
}
