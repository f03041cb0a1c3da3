//! A client leaving: what it sent before its Terminate runs and is answered before its
//! session ends, as PostgreSQL reads and runs everything before a Terminate (a write sent
//! with it keeps its read-your-writes position), also when the client closed its connection
//! right after it, or ended its input without one.

use super::{Pass, Session};
use crate::protocol::{tag, Header};

/// Where a client is in leaving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Leaving {
    /// It is not: read and written as usual.
    No,
    /// It closed its connection with a Terminate still queued behind other requests, or its
    /// input ended (a Terminate is put after its last whole message): those run, and the
    /// Terminate ends the session.
    Closed,
    /// Its Terminate was read behind requests still being answered: they are answered (and
    /// their commits' positions read back) before the session ends.
    Terminated,
}

impl Leaving {
    /// Nothing more is read from the client, and a client that no longer reads is not an
    /// error.
    pub(super) fn is_leaving(self) -> bool {
        self != Leaving::No
    }
}

impl Session {
    /// Whether a Terminate arrives behind requests the server will answer without more from the
    /// client: not inside a batch without its Sync (the server answers nothing until it), nor
    /// while it copies data in from the client.
    pub(super) fn answers_due_before_terminate(&self) -> bool {
        self.answers_due()
            && !self.batch_open
            && !self.skip_until_sync
            && !self.copy_in
            && self.client_pass == Pass::None
    }

    /// Whether a complete Terminate is among the client's buffered messages.
    pub(super) fn terminate_buffered(&self) -> bool {
        let rbuf = &self.client.rbuf;
        let mut at = match self.client_pass {
            Pass::None => 0,
            Pass::Forward(n) | Pass::Drop(n) => n,
        };
        while let Ok(Some(h)) = Header::peek(rbuf.get(at..).unwrap_or_default(), usize::MAX) {
            if rbuf.len() < at + h.frame_len {
                return false;
            }
            if h.tag == tag::TERMINATE {
                return true;
            }
            at += h.frame_len;
        }
        false
    }

    /// The client's input ended without a Terminate (it half-closed its connection, or closed
    /// it): PostgreSQL runs and answers every whole message it read before the end, then ends
    /// the session, so the end counts as a Terminate after the last whole message (a part of
    /// one is dropped). Whether it could: not when the end cuts a message already being passed
    /// to the server.
    pub(super) fn end_input(&mut self) -> bool {
        let rbuf = &mut self.client.rbuf;
        let mut at = match self.client_pass {
            Pass::None => 0,
            Pass::Forward(n) | Pass::Drop(n) => n,
        };
        if at > rbuf.len() {
            return false;
        }
        while let Ok(Some(h)) = Header::peek(&rbuf[at..], usize::MAX) {
            if rbuf.len() < at + h.frame_len {
                break;
            }
            at += h.frame_len;
        }
        rbuf.truncate(at);
        rbuf.extend_from_slice(&[tag::TERMINATE, 0, 0, 0, 4]);
        true
    }

    /// Whether the server still owes the client answers.
    pub(super) fn answers_due(&self) -> bool {
        self.server.is_some() && self.pending.client_waiting()
    }

    /// Writes what the client sent before its Terminate and the server has not got yet (a
    /// Query and Terminate in one packet): PostgreSQL runs such a request before it reads the
    /// Terminate, so an `INSERT` sent and left at once is not lost. For a Terminate that cannot
    /// wait for the answers (see [`answers_due_before_terminate`](Self::answers_due_before_terminate)):
    /// the connection is then closed by [`finish`](Self::finish), as one with a request in flight.
    pub(super) async fn send_before_terminate(&mut self) {
        let Some(p) = self.server.as_mut().filter(|_| !self.swbuf.is_empty()) else {
            return;
        };
        let timeout = self.current.config.config.pool.connect_timeout;
        let sent = crate::net::send_all(&mut p.conn.stream, &self.swbuf);
        if matches!(tokio::time::timeout(timeout, sent).await, Ok(Ok(()))) {
            self.swbuf.clear();
        }
    }
}
