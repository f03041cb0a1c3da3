//! Server → client: scan server messages in the read buffer, relay runs of them without
//! copying, drop the answers to the proxy's own messages, and keep the bookkeeping (transaction
//! status, parameters, prepared statements, settings read-back) up to date.

use std::sync::Arc;

use bytes::{Buf, BytesMut};

use super::pending::{Hook, Kind, Mode};
use super::settings::Settings;
use super::{Fatal, Session};
use crate::pool::server::parse_data_row;
use crate::protocol::{tag, ErrorFields, Header, TxnStatus};

/// Server messages are trusted up to PostgreSQL's own limit.
const MAX_SERVER_MESSAGE: usize = (1 << 30) + 64;

impl Session {
    /// Relays what the server sent.
    pub(super) fn process_server(&mut self) -> Result<(), Fatal> {
        let Some(p) = self.server.as_mut() else { return Ok(()) };
        let conn = &mut p.conn;
        let out = &mut self.client.wbuf;
        // Bytes at the front of conn.rbuf already scanned and to be relayed.
        let mut run = 0usize;
        let flush = |run: &mut usize, rbuf: &mut BytesMut, out: &mut BytesMut| {
            if *run > 0 {
                out.unsplit(rbuf.split_to(*run));
                *run = 0;
            }
        };
        loop {
            while let Some(b) = self.pending.pop_synthetic() {
                flush(&mut run, &mut conn.rbuf, out);
                out.extend_from_slice(&b);
            }
            let avail = conn.rbuf.len() - run;
            if self.server_pass > 0 {
                let n = self.server_pass.min(avail);
                if n == 0 {
                    break;
                }
                run += n;
                self.server_pass -= n;
                continue;
            }
            let h = match Header::peek(&conn.rbuf[run..], MAX_SERVER_MESSAGE) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => {
                    conn.broken = true;
                    return Err(Fatal::new("08P01", format!("invalid message from server: {e}")));
                }
            };
            if avail < h.frame_len {
                let streamable = matches!(h.tag, tag::DATA_ROW | tag::COPY_DATA) && self.pending.front_mode() == Mode::Forward;
                if !streamable {
                    break;
                }
                // A large row or copy chunk: relay it as it arrives.
                self.pending.on_server(h.tag);
                self.server_pass = h.frame_len;
                continue;
            }
            let m = self.pending.on_server(h.tag);
            let body = &conn.rbuf[run + 5..run + h.frame_len];
            match h.tag {
                tag::READY_FOR_QUERY => {
                    if let Some(s) = body.first().and_then(|&b| TxnStatus::from_byte(b)) {
                        self.txn = s;
                    }
                }
                tag::PARAMETER_STATUS => {
                    let b = body.to_vec();
                    conn.note_parameter(&b);
                }
                tag::ERROR_RESPONSE => {
                    let f = ErrorFields::parse(body);
                    if !m.forward {
                        tracing::warn!(sqlstate = f.code, message = f.message, "the proxy's own query failed on the server");
                        conn.broken = true;
                    }
                    if f.severity == "FATAL" || f.severity == "PANIC" {
                        conn.broken = true;
                    }
                }
                tag::DATA_ROW if m.capture => {
                    let mut cols = parse_data_row(body).into_iter();
                    if let (Some(Some(k)), Some(Some(v))) = (cols.next(), cols.next()) {
                        self.captured.push((k, v));
                    }
                }
                _ => {}
            }
            for hook in m.skipped {
                if let Hook::Parse { id, name } = hook {
                    conn.prepared.remove(&id);
                    if !name.is_empty() && self.statements.get(&name).is_some_and(|s| s.id == id) {
                        self.statements.remove(&name);
                    }
                }
            }
            if let Some((Kind::Query, Mode::Capture, _)) = m.completed {
                let observed = Settings::from_rows(std::mem::take(&mut self.captured));
                self.desired = Arc::new(self.startup.overlay(&observed));
                conn.applied = Arc::new(observed);
            }
            if m.forward {
                run += h.frame_len;
            } else {
                flush(&mut run, &mut conn.rbuf, out);
                conn.rbuf.advance(h.frame_len);
            }
        }
        flush(&mut run, &mut conn.rbuf, out);
        Ok(())
    }
}
