//! A `COMMIT` or `ROLLBACK` sent through the extended protocol while no transaction is open
//! (a connection pool's ROLLBACK on taking a connection back, a driver's statement cache
//! running its prepared `rollback`), or ending a block whose `BEGIN` the proxy answered and
//! holds (nothing ran in it yet), or one that failed without a server: answered by the proxy,
//! as the same statement in a Query is (see `handle_query`), so it waits for no server, and
//! for no primary during a failover.

use bytes::{Buf, Bytes, BytesMut};

use super::Session;
use crate::protocol::{encode, read_cstr, tag, Header};
use crate::sql::TxnControl;

/// The messages of a batch answered here, in this order: an unnamed Parse (optional), a Bind,
/// a Describe of its portal (optional), an Execute of it, and the Sync.
const MAX_MESSAGES: usize = 5;

impl Session {
    /// With no server attached and no block open but one the proxy holds the BEGIN of, or
    /// one that [failed without a server](Self::failed_without_server), whether the buffered
    /// batch at the front of the client's buffer (up to its Sync, all of it here) only runs a
    /// `COMMIT` or `ROLLBACK` of a statement with no parameters: then it is answered as
    /// PostgreSQL answers it (outside a block, its warning 25P01 included; in a failed block,
    /// `ROLLBACK` for a `COMMIT` too; `AND CHAIN` only ending a block, the one the proxy holds
    /// the BEGIN of or the failed one) and consumed. An unnamed Parse in it becomes the client's unnamed statement,
    /// prepared on a server when next used.
    pub(super) fn answer_lone_end(&mut self) -> bool {
        let failed = self.failed_without_server();
        if !(self.nothing_on_a_server() || failed) || self.skip_until_sync || self.retry.is_some() {
            return false;
        }
        let Some(batch) = self.lone_end_batch() else {
            return false;
        };
        // `AND CHAIN` with no block open is refused by the server; ending a held block, the
        // held BEGIN (with its modes) stands for the new one, and ending a failed block, the
        // one `chain_failed_block` gives (the defaults, or a failed chain's modes).
        let in_block = self.deferred_begin.is_some();
        if batch.chains && !in_block && !failed {
            return false;
        }
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
        if !in_block && !failed {
            self.warn_no_transaction(&mut b);
        }
        let commits = batch.commit && !failed;
        encode::command_complete(&mut b, if commits { "COMMIT" } else { "ROLLBACK" });
        if !batch.chains {
            self.deferred_begin = None;
        } else if failed {
            self.chain_failed_block();
        } else if let Some(d) = self.deferred_begin.as_mut() {
            d.chain();
        }
        self.aborted_txn = false;
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
                    // At most one parameter format, no parameters, result formats, nothing
                    // after them (else PostgreSQL refuses the message: the server answers).
                    let count = |b: &[u8], at: usize| {
                        b.get(at..at + 2)
                            .map(|c| usize::from(u16::from_be_bytes([c[0], c[1]])))
                    };
                    let formats = count(rest, 0)?;
                    let at = 2 + 2 * formats;
                    if formats > 1 || count(rest, at)? != 0 {
                        return None;
                    }
                    let results = count(rest, at + 2)?;
                    if rest.len() != at + 4 + 2 * results {
                        return None;
                    }
                    // The statement's text, and its declared parameter types: none.
                    let (t, types) = match (stmt.is_empty(), &parse) {
                        (true, Some((_, q))) => (*q, &[0u8, 0][..]),
                        (false, Some(_)) => return None,
                        (true, None) => {
                            let frame = self.unnamed.as_ref()?;
                            let (_, q, types) = super::statements::split_parse(&frame[5..])?;
                            (q, types)
                        }
                        (false, None) => {
                            let s = self.statements.get(stmt)?;
                            (&s.query[..], &s.types[..])
                        }
                    };
                    if !may_end(t) || types != [0, 0] {
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
                    let (commit, chains) = self.lone_end_kind(text?)?;
                    return Some(LoneEnd {
                        len: off + 5,
                        parse: parse.map(|(f, _)| f),
                        describes,
                        commit,
                        chains,
                    });
                }
                _ => return None,
            }
        }
        None
    }

    /// For a lone `COMMIT`/`END` or `ROLLBACK`/`ABORT`: whether it commits, and whether it
    /// ends `AND CHAIN`.
    fn lone_end_kind(&self, text: &[u8]) -> Option<(bool, bool)> {
        let a = super::route::analyze(&self.app.classifier.load(), text, self.opaque_backslashes);
        if a.statements != 1 {
            return None;
        }
        let commit = match a.txn {
            TxnControl::Commit => true,
            TxnControl::Rollback => false,
            _ => return None,
        };
        let chains = crate::sql::chains(std::str::from_utf8(text).ok()?);
        Some((commit, chains))
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
    /// `AND CHAIN`.
    chains: bool,
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
