//! Repeating an autocommit read elsewhere: while such a request runs on a replica, the client's
//! request bytes are kept and the response is held back (up to a budget) until it completes.
//! If the replica fails first, or refuses it as a hot standby must (it was a write after all,
//! needs the primary, or the session is SERIALIZABLE), the response is
//! dropped and the request goes back to the front of the client's buffer, to be routed again;
//! the client never sees the failure.

use bytes::{Bytes, BytesMut};

/// Response bytes held back at most; past this the response streams and the request is no
/// longer repeatable.
pub(super) const HOLD_BUDGET: usize = 256 * 1024;

/// Most repetitions of one request (each goes to a backend not yet tried for it).
pub(super) const MAX_ATTEMPTS: u32 = 5;

/// Why a replica refused a read only the primary can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// The statement itself (a write after all, or a function that needs the primary): its
    /// text is remembered as needing the primary.
    Statement,
    /// The session's transactions are SERIALIZABLE: its reads stay on the primary.
    Session,
}

/// A repeatable request in flight.
#[derive(Default)]
pub(super) struct Retry {
    /// The client's request, as received.
    pub original: BytesMut,
    /// Statement names the request defined (undone before repeating).
    pub names: Vec<Bytes>,
    /// Response bytes not yet released to the client.
    pub held: BytesMut,
    /// Set once anything reached the client: no repeating after that.
    pub released: bool,
    /// Repeat on the primary when the request completes on the server: the replica refused
    /// it as a hot standby must (25006, 55000, 0A000), for this reason.
    pub rescue: Option<Refusal>,
}

/// Whether the request in flight is repeated elsewhere when its server connection is lost: its
/// response is still held back, attempts remain, and no message is half streamed to the server.
pub(super) fn repeats_on_loss(retry: Option<&Retry>, attempts: u32, pass_idle: bool) -> bool {
    retry.is_some_and(|r| r.holding()) && attempts < MAX_ATTEMPTS && pass_idle
}

impl Retry {
    /// Still repeatable.
    pub fn holding(&self) -> bool {
        !self.released
    }

    /// Adds response bytes; releases everything to `out` when over budget.
    pub fn hold(&mut self, bytes: BytesMut, out: &mut BytesMut) {
        if self.released {
            out.unsplit(bytes);
            return;
        }
        self.held.unsplit(bytes);
        if self.held.len() > HOLD_BUDGET {
            self.release_into(out);
        }
    }

    /// Sends what was held to `out`; the request can no longer be repeated.
    pub fn release_into(&mut self, out: &mut BytesMut) {
        self.released = true;
        out.unsplit(std::mem::take(&mut self.held));
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
}
