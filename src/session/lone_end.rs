//! A lone `COMMIT` or `ROLLBACK` sent through the extended protocol while no transaction is
//! open (a connection pool's ROLLBACK on taking a connection back, a driver's statement cache
//! running its prepared `rollback`): answered by the proxy, as the same statement in a Query
//! is (see `handle_query`), so it waits for no server, and for no primary during a failover.

use bytes::{Buf, Bytes, BytesMut};

use super::Session;
use crate::protocol::{encode, read_cstr, tag, Header};
use crate::sql::TxnControl;

/// The messages of a batch answered here, in this order: an unnamed Parse (optional), a Bind,
/// a Describe of its portal (optional), an Execute of it, and the Sync.
const MAX_MESSAGES: usize = 5;

impl Session {
    /// With no server attached and no block open, whether the buffered batch at the front of
    /// the client's buffer (up to its Sync, all of it here) only runs a `COMMIT` or
    /// `ROLLBACK` (no `AND CHAIN`, no parameters): then it is answered as PostgreSQL answers
    /// it outside a block (its warning 25P01 included) and consumed. An unnamed Parse in it
    /// becomes the client's unnamed statement, prepared on a server when next used.
    pub(super) fn answer_lone_end(&mut self) -> bool {
        if !self.outside_any_block() || self.skip_until_sync || self.retry.is_some() {
            return false;
        }
        let Some(batch) = self.lone_end_batch() else {
            return false;
        };
        let mut b = BytesMut::new();
        if let Some(parse) = &batch.parse {
            encode::empty(&mut b, tag::PARSE_COMPLETE);
            self.unnamed = Some(parse.clone());
            self.unnamed_effects = (crate::sql::Effects::NONE, None);
            self.unnamed_deallocates = false;
            self.unnamed_depends = None;
            self.unnamed_generation = self.functions.generation();
            // Under a number of its own: no server connection has it.
            self.unnamed_seq += 1;
        }
        encode::empty(&mut b, tag::BIND_COMPLETE);
        if batch.describes {
            encode::empty(&mut b, tag::NO_DATA);
        }
        if !self.warnings_muted() {
            encode::error_fields(
                &mut b,
                tag::NOTICE_RESPONSE,
                "WARNING",
                "25P01",
                "there is no transaction in progress",
            );
        }
        encode::command_complete(&mut b, if batch.commit { "COMMIT" } else { "ROLLBACK" });
        self.client.rbuf.advance(batch.len);
        self.respond(b);
        self.respond_ready();
        true
    }

    /// The batch at the front of the client's buffer, if it is one [`answer_lone_end`]
    /// answers. (Most batches are told apart by their first bytes: a Parse's text or the
    /// statement a Bind names not starting like `COMMIT`, `END`, `ROLLBACK` or `ABORT`.)
    fn lone_end_batch(&self) -> Option<LoneEnd> {
        let buf = &self.client.rbuf[..];
        let mut off = 0;
        let mut parse: Option<(Bytes, &[u8])> = None;
        let mut portal: Option<&[u8]> = None;
        let mut text: Option<&[u8]> = None;
        let mut describes = false;
        for i in 0..MAX_MESSAGES {
            let h = Header::peek(&buf[off..], usize::MAX).ok()??;
            let frame = buf.get(off..off + h.frame_len)?;
            let body = &frame[5..];
            off += h.frame_len;
            match (h.tag, i, portal.is_some()) {
                (tag::PARSE, 0, _) => {
                    let (name, query, types) = super::statements::split_parse(body)?;
                    if !name.is_empty() || types != [0, 0] || !may_end(query) {
                        return None;
                    }
                    parse = Some((Bytes::copy_from_slice(frame), query));
                }
                (tag::BIND, _, false) => {
                    let (p, rest) = read_cstr(body)?;
                    let (stmt, rest) = read_cstr(rest)?;
                    // Parameter formats, then no parameters.
                    let formats = usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?]));
                    let at = 2 + 2 * formats;
                    if rest.get(at..at + 2)? != [0, 0] {
                        return None;
                    }
                    let t = match (stmt.is_empty(), &parse) {
                        (true, Some((_, q))) => q,
                        (false, Some(_)) => return None,
                        (true, None) => {
                            let frame = self.unnamed.as_ref()?;
                            super::statements::split_parse(&frame[5..])?.1
                        }
                        (false, None) => &self.statements.get(stmt)?.query[..],
                    };
                    if !may_end(t) {
                        return None;
                    }
                    text = Some(t);
                    portal = Some(p);
                }
                (tag::DESCRIBE, _, true) if !describes => {
                    let (_, rest) = body.split_first().filter(|(kind, _)| **kind == b'P')?;
                    let (name, rest) = read_cstr(rest)?;
                    if Some(name) != portal || !rest.is_empty() {
                        return None;
                    }
                    describes = true;
                }
                (tag::EXECUTE, _, true) => {
                    let (name, rest) = read_cstr(body)?;
                    if Some(name) != portal || rest.len() != 4 {
                        return None;
                    }
                    // The Sync must follow.
                    let h = Header::peek(&buf[off..], usize::MAX).ok()??;
                    if h.tag != tag::SYNC || h.frame_len != 5 || buf.len() < off + 5 {
                        return None;
                    }
                    let commit = self.lone_end_kind(text?)?;
                    return Some(LoneEnd {
                        len: off + 5,
                        parse: parse.map(|(f, _)| f),
                        describes,
                        commit,
                    });
                }
                _ => return None,
            }
        }
        None
    }

    /// `Some(true)` for a lone `COMMIT`/`END`, `Some(false)` for a lone `ROLLBACK`/`ABORT`
    /// (neither `AND CHAIN`), else `None`.
    fn lone_end_kind(&self, text: &[u8]) -> Option<bool> {
        let a = super::route::analyze(&self.app.classifier.load(), text, self.opaque_backslashes);
        if a.statements != 1 {
            return None;
        }
        let commit = match a.txn {
            TxnControl::Commit => true,
            TxnControl::Rollback => false,
            _ => return None,
        };
        let chains = std::str::from_utf8(text).map_or(true, crate::sql::chains);
        (!chains).then_some(commit)
    }
}

/// What [`Session::lone_end_batch`] found.
struct LoneEnd {
    /// Bytes of the batch, its Sync included.
    len: usize,
    /// Its unnamed Parse, if it has one.
    parse: Option<Bytes>,
    /// Whether it describes its portal.
    describes: bool,
    /// `COMMIT` rather than `ROLLBACK`.
    commit: bool,
}

/// Whether `text` may be a `COMMIT`, `END`, `ROLLBACK` or `ABORT`, by its first letter after
/// blanks (a comment before it, rare, is left to the server).
fn may_end(text: &[u8]) -> bool {
    matches!(
        text.iter()
            .find(|b| !b.is_ascii_whitespace())
            .map(u8::to_ascii_lowercase),
        Some(b'c' | b'e' | b'r' | b'a')
    )
}
