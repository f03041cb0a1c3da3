//! Repeating an autocommit read elsewhere: while such a request runs on a replica, the client's
//! request bytes are kept and the response is held back (up to a budget) until it completes.
//! If the replica fails first, refuses it as a hot standby must (it was a write after all,
//! needs the primary, or the session is SERIALIZABLE), or cancels it for a conflict with
//! recovery, the response is dropped and the request goes back to the front of the client's
//! buffer, to be routed again; the client never sees the failure. A lost server connection whose request cannot be
//! repeated answers what the client still waits for with an error instead.

use bytes::{Bytes, BytesMut};

use super::attach::COMMIT_LSN_SQL;
use super::Pass;
use crate::protocol::{encode, TxnStatus};

/// Response bytes held back at most; past this the response streams and the request is no
/// longer repeatable.
pub(super) const HOLD_BUDGET: usize = 256 * 1024;

/// Most repetitions of one request (each goes to a backend not yet tried for it).
pub(super) const MAX_ATTEMPTS: u32 = 5;

/// Why a replica did not run a read it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// The statement itself (a write after all, or a function that needs the primary): its
    /// text is remembered as needing the primary, where it runs again.
    Statement,
    /// The session's transactions are SERIALIZABLE: its reads stay on the primary.
    Session,
    /// The replica cancelled it for a conflict with recovery (replaying a lock, a vacuum's
    /// cleanup or a dropped tablespace it was in the way of): it runs again on another
    /// server, or on the same replica when the routing has no other.
    Conflict,
}

/// A repeatable request in flight.
#[derive(Default)]
pub(super) struct Retry {
    /// The client's request, as received.
    pub original: BytesMut,
    /// Statement names the request defined (undone before repeating).
    pub names: Vec<Bytes>,
    /// Statements the request closed (brought back before repeating).
    pub closed: Vec<(Bytes, std::sync::Arc<super::statements::Statement>)>,
    /// Response bytes not yet released to the client.
    pub held: BytesMut,
    /// Set once anything reached the client: no repeating after that.
    pub released: bool,
    /// The client asked for the answers as they come (a Flush): none is held back, and the
    /// first to reach the client sets `released`.
    pub streaming: bool,
    /// Repeat when the request completes on the server: the replica refused it as a hot
    /// standby must (25006, 55000, 0A000: on the primary) or cancelled it for a conflict with
    /// recovery (40001: elsewhere), for this reason.
    pub rescue: Option<Refusal>,
    /// Sent to a replica by a hint although it may write (not a read as classified): a
    /// recovery conflict does not repeat it (what it does outside the database, a volatile
    /// function's call out, would run again).
    pub may_write: bool,
}

/// Whether the request in flight is repeated elsewhere when its server connection is lost: its
/// response is still held back, attempts remain, no message is half streamed to the server,
/// and it is a read (not a hinted statement that may write: what it did outside the database
/// before the server went would be done again).
pub(super) fn repeats_on_loss(retry: Option<&Retry>, attempts: u32, pass_idle: bool) -> bool {
    retry.is_some_and(|r| r.holding() && !r.may_write) && attempts < MAX_ATTEMPTS && pass_idle
}

impl Retry {
    /// Still repeatable.
    pub fn holding(&self) -> bool {
        !self.released
    }

    /// Adds response bytes; releases everything to `out` when over budget, unless the server
    /// already refused the request, which is then repeated: what is held is never sent (and
    /// nothing more is added, the relay drops the rest of the response). The bytes read with
    /// the refusal may cross the budget; released, they would reach the client without the
    /// error and ReadyForQuery the relay dropped, and the client would wait for ever.
    pub fn hold(&mut self, bytes: BytesMut, out: &mut BytesMut) {
        if self.released || (self.streaming && !bytes.is_empty() && self.rescue.is_none()) {
            self.released = true;
            out.unsplit(bytes);
            return;
        }
        self.held.unsplit(bytes);
        if self.held.len() > HOLD_BUDGET && self.rescue.is_none() {
            self.release_into(out);
        }
    }

    /// The client asks for the answers so far (a Flush): what is held goes to `out`, and
    /// what comes later goes as it comes. Until something reaches the client, the request
    /// can still be repeated (a server lost before it answered the Flush).
    /// (Nothing while a refusal is being repeated: what is held is never sent.)
    pub fn flush_into(&mut self, out: &mut BytesMut) {
        if self.rescue.is_some() {
            return;
        }
        if self.held.is_empty() {
            self.streaming = true;
        } else {
            self.release_into(out);
        }
    }

    /// Sends what was held to `out`; the request can no longer be repeated.
    pub fn release_into(&mut self, out: &mut BytesMut) {
        self.released = true;
        out.unsplit(std::mem::take(&mut self.held));
    }
}

impl super::Session {
    /// The request is over (answered, or failed for good): the next one may try every backend
    /// again, as many times.
    pub(super) fn request_over(&mut self) {
        if std::mem::take(&mut self.between_servers) {
            self.cancel.end_wait();
        }
        self.cancelled_between = false;
        self.retry_attempts = 0;
        self.primary_unreachable_since = None;
        self.avoid = 0;
        self.conflicted = 0;
    }

    /// The server connection failed: repeat a repeatable request elsewhere, else answer what
    /// the client still waits for with an error (unless not `answer`: the client's connection
    /// ends instead); drop the connection.
    pub(super) fn server_lost(&mut self, error: std::io::Error, answer: bool) {
        let Some(p) = self.server.take() else { return };
        // Settings a statement changed were being read back: what the client's session has
        // now is unknown (its next connection would silently lack them), so it ends (see
        // relay.rs), as it would have with its own server.
        self.settings_lost = std::mem::take(&mut self.capturing).0;
        // (A cancel on its way to the connection, or not delivered: see `requeue_request`.)
        let cancel_pending = !self.cancel.clear();
        self.reports.forget();
        tracing::warn!(parent: &self.span, backend = %p.pool().key.backend, error = %error, "server connection lost");
        p.discard("server_lost", &self.app.metrics);
        // Bytes not yet written were for that connection only: what the client is told failed
        // must not run on the next one (and a full buffer would stop the relay for good).
        self.swbuf.clear();
        self.parse_wait_flushed = false;
        // Whether a pg_terminate_backend in flight ran is unknown: nobody is ended for it.
        self.terminates = None;
        if let Some(i) = self.backend_index {
            // A repeat of this request goes somewhere else.
            self.avoid |= 1u64 << (i % 64);
        }
        // A commit reached the client and the connection reading its position back is gone:
        // the position is read on another connection to the primary. Until then reads in
        // scope stay on the primary.
        let commit = self.ryw.hand_off();
        if std::mem::take(&mut self.schema_changed) {
            // Whether its schema change committed is unknown: statements parsed from now on
            // are parsed anew, as after one that did.
            self.app.statements.invalidate();
            self.end_schema_change();
        }
        self.detach_bookkeeping();
        if let Some(commit) = commit {
            // (After the bookkeeping, which counts in the view the connection was attached
            // under.)
            self.read_position_elsewhere(commit);
        }
        let repeat = super::retry::repeats_on_loss(
            self.retry.as_ref(),
            self.retry_attempts,
            self.client_pass == Pass::None,
        );
        if repeat {
            self.app
                .metrics
                .retries
                .with_label_values(&["server_lost"])
                .inc();
            self.retry_attempts += 1;
            self.pending.abandon();
            self.requeue_request(cancel_pending);
            self.txn = TxnStatus::Idle;
            self.request_begins = None;
            return;
        }
        if let Some(mut r) = self.retry.take() {
            r.release_into(&mut self.client.wbuf);
        }
        // The request is answered (with the error below): the next one may try every backend.
        self.request_over();
        if let Some(z) = self.held_ready.take() {
            // The client's statement completed; only the proxy's restore query behind it was
            // lost.
            self.client.wbuf.unsplit(z);
        }
        // A request the proxy split after the end of a read-only block on a replica (see
        // `split_after_block_end`) is one request to the client: the Sync that split its
        // batch gets no ReadyForQuery of its own (the batch is the client's, still open: the
        // rest of it is skipped up to its Sync), and the rest of a split Query is not run
        // (the error ends the Query, as PostgreSQL's first error does).
        let (split_sync, split_query) = self.pending.splits();
        self.drop_split_rest |= split_query;
        let open_batch = split_sync
            || matches!(self.pending.last_kind(), Some(k) if !matches!(k, super::pending::Kind::Sync | super::pending::Kind::Query | super::pending::Kind::FunctionCall));
        let owed = self.pending.abandon() - usize::from(split_sync);
        // A transaction block dies with its server: the client's block has failed. Unless
        // the request lost ends the block (a COMMIT, ROLLBACK or PREPARE TRANSACTION, sent
        // last): whether it ran or not, the block is over once it is answered, as a COMMIT
        // that fails in PostgreSQL ends the block too (a client that then begins anew must
        // not find itself in a failed block).
        // (Or the client began one in the requests lost: the server may have run its BEGIN,
        // its answer not yet read; then what the client sends next must not run outside it.)
        let in_block = self.txn != TxnStatus::Idle || self.request_begins.take().is_some();
        let block_ends =
            in_block && (owed > 0 || split_sync) && std::mem::take(&mut self.ending_block);
        let was_busy = owed > 0 || open_batch;
        if let Pass::Forward(n) = self.client_pass {
            self.client_pass = Pass::Drop(n);
        }
        if was_busy {
            // (Unless the client's connection ends instead: nothing is sent, nor counted.)
            if answer {
                let why = match self.server_fatal.take() {
                    Some((m, false)) => format!(": {m}"),
                    _ => String::new(),
                };
                let unknown = if block_ends {
                    " (whether the transaction committed is not known)"
                } else {
                    ""
                };
                let message = if std::mem::take(&mut self.fatal_unstarted) {
                    format!("the server connection ended before the request was run{why}; nothing of it ran")
                } else {
                    format!(
                        "the server connection was lost while running the request{why}{unknown}"
                    )
                };
                // Every request in flight fails, each as PostgreSQL fails one (an error, then
                // the ReadyForQuery of its Sync or Query): a pipelined request answered by a
                // bare ReadyForQuery would read as one whose messages produced nothing.
                for i in 1..=owed {
                    // (A Sync of the proxy's ends the block, not one of these.)
                    let ends = block_ends && !split_sync && i == owed;
                    let status = if in_block && !ends {
                        TxnStatus::Failed
                    } else {
                        TxnStatus::Idle
                    };
                    self.app.metrics.error("08006");
                    encode::error(&mut self.client.wbuf, "ERROR", "08006", &message);
                    encode::ready_for_query(&mut self.client.wbuf, status);
                }
                if open_batch {
                    // (Its ReadyForQuery answers the client's Sync, when it comes.)
                    self.app.metrics.error("08006");
                    encode::error(&mut self.client.wbuf, "ERROR", "08006", &message);
                    self.skip_until_sync = true;
                }
            }
            self.aborted_txn = in_block && !block_ends;
            self.failed_chain = None;
        } else if in_block {
            self.lost_txn = true;
        }
        self.txn = TxnStatus::Idle;
        self.fatal_unstarted = false;
    }

    /// Reads the position of a commit that reached the client on another connection to the
    /// primary (the connection that was to read it is gone, or its read failed: the client's
    /// cancel landed on it). Until then reads in its scope stay on the primary; given up if
    /// the primary changed since or cannot be read.
    pub(super) fn read_position_elsewhere(&mut self, commit: crate::ryw::CommitInFlight) {
        self.current.refresh(&self.app);
        let primary = self.current.view.primary;
        let pool = primary
            .filter(|_| self.current.view.epoch.timeline == commit.epoch().timeline)
            .and_then(|i| self.pool(i));
        let timeout = self.current.config.config.pool.connect_timeout;
        tokio::spawn(async move {
            let mut lsn = None;
            if let Some(pool) = pool {
                if let Ok(mut p) = pool.checkout(0).await {
                    if let Ok(Ok(rows)) = p.conn.simple_query(COMMIT_LSN_SQL, timeout).await {
                        for row in rows {
                            super::attach::commit_position(row, &mut lsn);
                        }
                    }
                    p.release();
                }
            }
            commit.resolve(lsn);
        });
    }

    /// Puts the repeatable request back at the front of the client buffer, undoing what its
    /// first run recorded. `cancelled`: the client's cancel of it was on its way to the server
    /// it ran on (or could not be delivered there) when it was given up.
    pub(super) fn requeue_request(&mut self, cancelled: bool) {
        let Some(r) = self.retry.take() else { return };
        // A cancel from now until the request is attached again is not lost, nor one that
        // came before and may not have reached the server lost.
        self.cancel.between_servers(cancelled);
        self.between_servers = true;
        for n in &r.names {
            self.statements.remove(n);
        }
        for (n, s) in r.closed.into_iter().rev() {
            self.statements.insert(n, s);
        }
        self.front_query = None;
        // The first run's server skipping to a Sync (after an error or a FATAL in the batch)
        // says nothing of the repeat: its messages all go to the new server.
        self.skip_until_sync = false;
        let mut again = r.original;
        again.unsplit(std::mem::take(&mut self.client.rbuf));
        self.client.rbuf = again;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_until_budget() {
        let mut r = Retry::default();
        let mut out = BytesMut::new();
        r.hold(BytesMut::from(&b"abc"[..]), &mut out);
        assert!(out.is_empty() && r.holding());
        r.hold(BytesMut::from(&vec![0u8; HOLD_BUDGET][..]), &mut out);
        assert!(!r.holding());
        assert_eq!(out.len(), HOLD_BUDGET + 3);
        r.hold(BytesMut::from(&b"z"[..]), &mut out);
        assert_eq!(out.len(), HOLD_BUDGET + 4);
    }

    #[test]
    fn only_reads_are_repeated_when_their_server_is_lost() {
        let read = Retry::default();
        assert!(repeats_on_loss(Some(&read), 0, true));
        assert!(!repeats_on_loss(Some(&read), MAX_ATTEMPTS, true));
        assert!(!repeats_on_loss(Some(&read), 0, false));
        let hinted = Retry {
            may_write: true,
            ..Retry::default()
        };
        assert!(!repeats_on_loss(Some(&hinted), 0, true));
    }

    #[test]
    fn a_refused_request_stays_held_past_the_budget() {
        let mut r = Retry::default();
        let mut out = BytesMut::new();
        r.hold(BytesMut::from(&vec![0u8; HOLD_BUDGET - 10][..]), &mut out);
        // The refusal came in the same read as the rows that cross the budget.
        r.rescue = Some(Refusal::Conflict);
        r.hold(BytesMut::from(&vec![0u8; 100][..]), &mut out);
        assert!(r.holding() && out.is_empty());
    }
}
