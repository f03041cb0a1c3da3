//! Sequence state (`currval`, `lastval`) under transaction pooling. It lives in the server
//! session, where no statement can move it. A client gets the server connection it used last
//! while nobody else needs it (`[pool] affinity`, the default); a client that reads sequence
//! state and gets another connection gets it cleared with `DISCARD SEQUENCES` first, so it
//! reads "not yet defined in this session" (55000) rather than another client's value.
//! Each connection records whose state it holds ([`SeqState`]); clients that never read it
//! cost nothing beyond that mark.

use super::Session;
use crate::config::PoolMode;
use crate::pool::server::SeqState;
use crate::protocol::TxnStatus;
use crate::sql::Effects;

impl Session {
    /// Marks the just-attached connection with this client's use of it, clearing it first when
    /// the client reads sequence state and the connection holds someone else's.
    ///
    /// A free connection (its last client left) that holds sequence state is cleared for
    /// every client, so a later first `currval` finds only the client's own state there: the
    /// `DISCARD SEQUENCES` rides ahead of the client's request and happens about once per
    /// client connection. A connection taken from a client still connected (contention) is
    /// cleared only for clients that read sequence state, so busy pools pay nothing.
    pub(super) fn claim_sequences(&mut self) {
        let me = self.seq_mark();
        let movable = self.sequences_movable();
        let clear = self.reads_sequences && movable;
        let Some(p) = self.server.as_mut() else {
            return;
        };
        let was_free = p.conn.previous_owner == 0;
        match p.conn.seq {
            SeqState::Clean => p.conn.seq = me,
            s if s == me => {}
            _ if clear || (was_free && movable) => self.discard_sequences(),
            _ => p.conn.seq = SeqState::Mixed,
        }
    }

    /// Sequence effects of a message about to be forwarded.
    pub(super) fn note_sequence_effects(&mut self, effects: Effects) {
        if effects.contains(Effects::SEQUENCE_RESET) {
            // The client's sequence state is gone; what other connections hold of it is stale.
            // This one holds only the client's (new) state if it held only the client's before.
            let before = self.seq_mark();
            self.seq_epoch += 1;
            let after = self.seq_mark();
            if let Some(p) = self.server.as_mut() {
                let was_mine = p.conn.seq == SeqState::Clean || p.conn.seq == before;
                p.conn.seq = if was_mine { after } else { SeqState::Mixed };
            }
        }
        if effects.contains(Effects::SEQUENCE_STATE) && !self.reads_sequences {
            // From now on every connection this client gets holds only its own sequence
            // state (see `claim_sequences`). This one too, unless the client already ran
            // something on it in this transaction (a nextval there must stay visible).
            self.reads_sequences = true;
            let fresh = self.txn == TxnStatus::Idle && !self.pending.client_waiting();
            let mine = self
                .server
                .as_ref()
                .is_some_and(|p| p.conn.seq == self.seq_mark());
            if fresh && !mine && self.server.is_some() && self.sequences_movable() {
                self.discard_sequences();
            }
        }
    }

    /// The mark of a connection that holds only this client's sequence state.
    fn seq_mark(&self) -> SeqState {
        SeqState::Only {
            client: self.id,
            epoch: self.seq_epoch,
        }
    }

    /// Whether the client's transactions move between server connections.
    fn sequences_movable(&self) -> bool {
        self.pin.is_none() && self.pool_mode == PoolMode::Transaction
    }

    /// Clears the attached connection's sequence state before what the client sends next.
    fn discard_sequences(&mut self) {
        let me = self.seq_mark();
        let Some(p) = self.server.as_mut() else {
            return;
        };
        p.conn.seq = me;
        // DISCARD needs a snapshot, which a hot standby refuses when the connection's
        // transactions default to SERIALIZABLE (see settings::sync_sql).
        let sql = if self.standalone() {
            "SET TRANSACTION ISOLATION LEVEL READ COMMITTED; DISCARD SEQUENCES"
        } else {
            "DISCARD SEQUENCES"
        };
        self.own_query(
            sql,
            super::pending::Mode::Swallow,
            super::pending::Hook::None,
        );
    }
}
