//! The relay loop: wait for bytes from either side, move complete (or streamable) messages
//! through, check a server connection out when a request needs one and back in when its
//! transaction ends (attach.rs). All waiting is in one poll function so that reads and writes in both
//! directions progress together (a large pipeline cannot deadlock) and buffers stay bounded.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::client::Step;
use super::leaving::Leaving;
use super::{Fatal, Pass, Session};
use crate::net::Stream;
use crate::protocol::{tag, Header, TxnStatus};

/// Stop reading from one side while the buffer towards the other holds this much.
pub(super) const OUT_HIGH: usize = 256 * 1024;
/// Read granularity.
const READ_RESERVE: usize = 16 * 1024;
/// A read buffer larger than this is given up once empty.
const READ_KEEP: usize = 1024 * 1024;
/// Output buffers up to this capacity are kept between writes (no allocation per request);
/// runs of bytes longer than this move between buffers without copying.
const KEEP: usize = 64 * 1024;

/// The shutdown signals a relay waits for.
struct Stop {
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    kill: Pin<Box<WaitForCancellationFutureOwned>>,
    /// `shutdown` was polled once (its waker is registered).
    armed: bool,
    /// `kill` (the client's own, a child of the proxy's) was polled once.
    kill_armed: bool,
}

/// What woke the relay.
#[derive(Default)]
struct Events {
    client_data: bool,
    client_closed: bool,
    /// The client's input ended (it half-closed its connection, or closed it cleanly), rather
    /// than failed.
    client_ended: bool,
    server_data: bool,
    server_failed: Option<std::io::Error>,
    shutdown: bool,
    kill: bool,
    server_drained: bool,
    /// The server buffer, full, has room again while client messages wait in the client
    /// buffer (processing them stopped when it filled; no new client bytes need arrive).
    server_room: bool,
}

impl Session {
    /// Whether the message at the front of the client buffer is one too large to buffer whole
    /// (streamed once it has a server), not being streamed yet: while it waits for its
    /// server, no more of it is read. (Not a Bind whose names are not all here yet: they are
    /// read, up to `max_message_size`, which refuses names that never end.)
    fn holds_large_message(&self) -> bool {
        if self.client_pass != Pass::None {
            return false;
        }
        match Header::peek(&self.client.rbuf, usize::MAX) {
            Ok(Some(h)) if h.frame_len > self.max_message => match h.tag {
                tag::QUERY => true,
                tag::BIND => crate::protocol::read_cstr(&self.client.rbuf[5..])
                    .and_then(|(_, rest)| crate::protocol::read_cstr(rest))
                    .is_some(),
                _ => false,
            },
            _ => false,
        }
    }

    /// Whether a shutdown is under way and the client is between transactions, with every
    /// request it sent answered (the proxy's own queries after them may still run): its
    /// session ends.
    fn drain_boundary(&self) -> bool {
        // (`draining` is set only when the relay sees the shutdown with nothing pending.)
        (self.draining || self.app.shutting_down())
            && self.pending.own_queries_only().is_some()
            && !self.split_rest_due
            && self.txn == TxnStatus::Idle
            && self.client_pass == Pass::None
            // Nor in the middle of what the client sees as open: an extended batch (a
            // suspended portal), a BEGIN the proxy has not sent yet, a failed block.
            && !self.batch_open
            && !self.skip_until_sync
            && self.deferred_begin.is_none()
            && !self.aborted_txn
    }

    /// Whether the next client message is already complete in the buffer.
    pub(super) fn client_has_request(&self) -> bool {
        matches!(Header::peek(&self.client.rbuf, usize::MAX), Ok(Some(h)) if self.client.rbuf.len() >= h.frame_len)
    }

    /// The relay loop; returns when the client leaves. A FATAL it ends with is told only
    /// between two messages: after what is buffered for the client, and not once the client
    /// missed some of that (it did not read it in time) or in the middle of a message being
    /// streamed to it, where the FATAL's bytes would be read as the rest of a row.
    pub(super) async fn relay(&mut self, client: &mut Stream) -> Result<(), Fatal> {
        match self.relay_loop(client).await {
            Err(Fatal::Client { code, message }) => {
                let whole = self.flush_client(client).await && self.server_pass == 0;
                Err(if whole && !self.client_cut {
                    Fatal::Client { code, message }
                } else {
                    Fatal::protocol_silent(message)
                })
            }
            r => r,
        }
    }

    async fn relay_loop(&mut self, client: &mut Stream) -> Result<(), Fatal> {
        let mut stop = Stop {
            shutdown: Box::pin(self.app.shutdown.clone().cancelled_owned()),
            kill: Box::pin(self.cancel.kill.clone().cancelled_owned()),
            armed: false,
            kill_armed: false,
        };
        loop {
            loop {
                if self.drain_due && self.client.rbuf.first() != Some(&tag::TERMINATE) {
                    // The client's last transaction ended during a shutdown, and the proxy's
                    // own queries after it (reading the commit's position back) were still
                    // running: what the client sent meanwhile (as soon as it had its COMMIT's
                    // answer) begins no new transaction. It waits for them, then the session
                    // ends.
                    if !self.pending.is_empty() {
                        break;
                    }
                    self.flush_client(client).await;
                    return Err(Fatal::new(
                        "57P01",
                        "terminating connection due to administrator command",
                    ));
                }
                if self.shapes_due() {
                    self.check_statement_shapes().await;
                    if self.server.as_ref().is_some_and(|p| p.conn.broken) {
                        // The check's exchange failed or outlived its timeout: its answers may
                        // still come, ahead of anything sent now. The connection was the
                        // client's session (session pooling, pinned).
                        self.flush_client(client).await;
                        return Err(Fatal::new(
                            "08006",
                            "the server connection holding this session was lost",
                        ));
                    }
                }
                let step = match self.process_client() {
                    Ok(step) => step,
                    Err(f) => {
                        // What the servers answered before it is the client's, and any error
                        // the refusal comes with.
                        self.flush_client(client).await;
                        if self.server_pass > 0 {
                            // In the middle of a message to the client: whatever followed would
                            // be read as its rest.
                            return Err(match f {
                                Fatal::Client { message, .. } => Fatal::protocol_silent(message),
                                f => f,
                            });
                        }
                        return Err(f);
                    }
                };
                match step {
                    Step::Idle => break,
                    Step::NeedServer => self.attach(client).await?,
                    Step::Terminate if self.answers_due_before_terminate() => {
                        // As PostgreSQL runs and answers what came before a Terminate, the
                        // requests in flight finish here, not on a connection given up (a
                        // write and its commit position, which the same user's next reads
                        // must see). Anything after the Terminate is nothing.
                        self.leaving = Leaving::Terminated;
                        self.client.rbuf.clear();
                        break;
                    }
                    Step::Terminate => {
                        self.send_before_terminate().await;
                        let _ = crate::net::send_all(client, &self.client.wbuf).await;
                        return Ok(());
                    }
                }
            }
            if self.settle() && (self.client_has_request() || self.holds_large_message()) {
                // The next request was waiting for this connection to go: route it now.
                continue;
            }
            if self.leaving == Leaving::Terminated
                && (self.copy_in || (!self.client_has_request() && !self.answers_due()))
            {
                // What came before the client's Terminate is answered (a commit position read
                // back is left to the cleanup, as when any client leaves). Or a COPY FROM
                // STDIN sent with the Terminate started: the server waits for data that will
                // never come, and the connection is given up.
                self.flush_client(client).await;
                return Ok(());
            }
            if self.drain_boundary() {
                if self.pending.is_empty() {
                    // Everything the client asked for is answered (a COMMIT's result
                    // included): deliver it, then say goodbye.
                    self.flush_client(client).await;
                    return Err(Fatal::new(
                        "57P01",
                        "terminating connection due to administrator command",
                    ));
                }
                // Only the proxy's own queries are left: the session ends once they are
                // answered (see the start of the loop).
                self.drain_due = true;
            }
            let ev = self.wait(client, &mut stop).await;
            if ev.kill {
                self.flush_client(client).await;
                return Err(Fatal::new(
                    "57P01",
                    "terminating connection due to administrator command",
                ));
            }
            if ev.shutdown {
                self.draining = true;
            }
            if let Some(e) = ev.server_failed {
                // Relay what arrived before the failure, then answer the rest.
                self.process_server()?;
                let relayed = matches!(self.server_fatal, Some((_, true)));
                // A row or copy chunk half relayed: whatever followed would be read as its
                // rest (a driver waiting for bytes that never come, or out of sync).
                let mid_message = self.server_pass > 0;
                if self.server.is_some() && (relayed || mid_message || !self.releasable()) {
                    // The connection was this client's session (session pooling, or pinned
                    // state): it cannot go on elsewhere as if nothing happened (its SET ROLE,
                    // locks, temporary tables, LISTENs are gone). Or the server ended the
                    // session the client was using and the client has its FATAL. As
                    // PostgreSQL's own client would, it loses its connection.
                    // Nothing after what the server sent (an ERROR and ReadyForQuery for the
                    // lost request would tell drivers the connection lives on).
                    if relayed {
                        // The FATAL may still be held with the answer before it, for a repeat
                        // that does not come (a hinted statement that may write, attempts used
                        // up): the client gets it, as connected directly.
                        if let Some(mut r) = self.retry.take() {
                            r.release_into(&mut self.client.wbuf);
                        }
                    }
                    let sent = self.client.wbuf.len();
                    self.server_lost(e, false);
                    self.client.wbuf.truncate(sent);
                    self.flush_client(client).await;
                    if relayed {
                        // The client has the server's own FATAL: it ends here, as it would.
                        return Err(Fatal::protocol_silent("server session ended"));
                    }
                    if mid_message {
                        // Its connection ends mid-message, as a direct one would.
                        return Err(Fatal::protocol_silent(
                            "server connection lost in the middle of a message",
                        ));
                    }
                    return Err(Fatal::new(
                        "08006",
                        "the server connection holding this session was lost",
                    ));
                }
                self.server_lost(e, true);
                if self.settings_lost {
                    self.flush_client(client).await;
                    return Err(Fatal::new(
                        "08006",
                        "the server connection was lost before the settings the last statement changed were read back",
                    ));
                }
            } else if ev.server_data {
                self.process_server()?;
            }
            if ev.client_closed {
                if self.leaving.is_leaving() {
                    return Ok(());
                }
                // The client sent its last requests and Terminate, and closed without waiting
                // (its requests queued behind one still running): PostgreSQL reads and runs
                // everything before the Terminate, and so does the proxy. So it does up to the
                // end of a client's input without a Terminate (a client that half-closes its
                // connection and reads the answers gets them).
                let ends_here = self.terminate_buffered()
                    || (ev.client_ended && {
                        self.input_ended = self.end_input();
                        self.input_ended
                    });
                if !ends_here {
                    return Ok(());
                }
                self.leaving = Leaving::Closed;
            }
            let _ = ev.client_data;
        }
    }

    /// Writes what is buffered for the client (bounded: a client that does not read is not
    /// waited for long); whether all of it was written (else `client_cut` is set).
    async fn flush_client(&mut self, client: &mut Stream) -> bool {
        if self.client.wbuf.is_empty() {
            return true;
        }
        let sent = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            crate::net::send_all(client, &self.client.wbuf),
        )
        .await;
        self.client.wbuf.clear();
        let whole = matches!(sent, Ok(Ok(_)));
        self.client_cut |= !whole;
        whole
    }

    /// Waits until something can be done, writing buffered bytes meanwhile.
    async fn wait(&mut self, client: &mut Stream, stop: &mut Stop) -> Events {
        std::future::poll_fn(|cx| self.poll_io(cx, client, stop)).await
    }

    fn poll_io(
        &mut self,
        cx: &mut Context<'_>,
        client: &mut Stream,
        stop: &mut Stop,
    ) -> Poll<Events> {
        let mut ev = Events::default();
        // Writes first: they make room for reads.
        if let Err(()) = write_to(cx, client, &mut self.client.wbuf) {
            if !self.leaving.is_leaving() || self.input_ended {
                ev.client_closed = true;
                return Poll::Ready(ev);
            }
            // A client that left after its Terminate: its requests still finish.
            self.client.wbuf.clear();
        }
        if let Some(p) = self.server.as_mut() {
            let had_output = !self.swbuf.is_empty();
            let was_full = self.swbuf.len() >= OUT_HIGH;
            if write_to(cx, &mut p.conn.stream, &mut self.swbuf).is_err() {
                ev.server_failed = Some(std::io::Error::new(
                    std::io::ErrorKind::BrokenPipe,
                    "write to server failed",
                ));
                return Poll::Ready(ev);
            }
            // Everything queued reached the server and no answer is due: the connection may now
            // be quiet enough to release, which a held-back request is waiting for. (With
            // answers due, their arrival wakes the relay anyway.)
            ev.server_drained = had_output && self.swbuf.is_empty() && self.pending.is_empty();
            ev.server_room =
                was_full && self.swbuf.len() < OUT_HIGH && !self.client.rbuf.is_empty();
            if self.client.wbuf.len() < OUT_HIGH {
                match read_from(cx, &mut p.conn.stream, &mut p.conn.rbuf) {
                    Poll::Ready(Ok(0)) => {
                        ev.server_failed = Some(std::io::ErrorKind::UnexpectedEof.into())
                    }
                    Poll::Ready(Ok(_)) => ev.server_data = true,
                    Poll::Ready(Err(e)) => ev.server_failed = Some(e),
                    Poll::Pending => {}
                }
            }
        }
        // Not while the client leaves the proxy's own answers unread (as PostgreSQL stops
        // reading a client that does not read).
        if !self.leaving.is_leaving()
            && self.swbuf.len() < OUT_HIGH
            && self.client.wbuf.len() < OUT_HIGH
            && self.pending.synthetic_bytes() < OUT_HIGH
            && (self.client.rbuf.len() < OUT_HIGH
                || !(self.client_has_request() || self.holds_large_message()))
        {
            match read_from(cx, client, &mut self.client.rbuf) {
                Poll::Ready(Ok(0)) => {
                    ev.client_closed = true;
                    ev.client_ended = true;
                }
                Poll::Ready(Err(_)) => ev.client_closed = true,
                Poll::Ready(Ok(_)) => ev.client_data = true,
                Poll::Pending => {}
            }
        }
        // Shutdown only matters between requests. Its future is polled once to register this
        // task's waker (the task is the same on every later poll), then again only once the
        // lock-free flag says it fired: the token's own check takes a lock.
        if !self.draining && self.pending.is_empty() && (!stop.armed || self.app.shutting_down()) {
            stop.armed = true;
            if stop.shutdown.as_mut().poll(cx).is_ready() {
                ev.shutdown = true;
            }
        }
        // The kill switch likewise: the proxy's fires only during a shutdown (a second SIGINT,
        // with requests running or not), the client's own (pg_terminate_backend of its pid,
        // see cancel.rs) sets a flag first.
        if !stop.kill_armed || self.draining || self.cancel.killed() || self.app.shutting_down() {
            stop.kill_armed = true;
            if stop.kill.as_mut().poll(cx).is_ready() {
                ev.kill = true;
            }
        }
        if ev.client_data
            || ev.client_closed
            || ev.server_data
            || ev.server_drained
            || ev.server_room
            || ev.server_failed.is_some()
            || ev.shutdown
            || ev.kill
        {
            Poll::Ready(ev)
        } else {
            Poll::Pending
        }
    }
}

/// [`write_some`] on a connection of either kind. Each kind gets its own copy of the
/// generic code: a plain socket's path is what it was before TLS existed, without a flush.
fn write_to(cx: &mut Context<'_>, s: &mut Stream, buf: &mut BytesMut) -> Result<(), ()> {
    match s {
        Stream::Plain(t) => write_some(cx, t, buf),
        Stream::Unix(u) => write_some(cx, u, buf),
        Stream::Tls(t) => write_tls(cx, &mut **t, buf),
        Stream::Gone => Err(()),
    }
}

/// [`write_some`], then a flush of what TLS held back: it may take all of `buf` while the
/// socket takes only part of the records, and the relay writes again only when it has more
/// to write or is woken (a pending flush registers the waker).
fn write_tls<W: AsyncWrite + Unpin>(
    cx: &mut Context<'_>,
    w: &mut W,
    buf: &mut BytesMut,
) -> Result<(), ()> {
    write_some(cx, w, buf)?;
    match Pin::new(&mut *w).poll_flush(cx) {
        Poll::Ready(Err(_)) => Err(()),
        _ => Ok(()),
    }
}

/// [`read_some`] on a connection of either kind.
fn read_from(
    cx: &mut Context<'_>,
    s: &mut Stream,
    buf: &mut BytesMut,
) -> Poll<std::io::Result<usize>> {
    match s {
        Stream::Plain(t) => read_some(cx, t, buf),
        Stream::Unix(u) => read_some(cx, u, buf),
        Stream::Tls(t) => read_some(cx, &mut **t, buf),
        Stream::Gone => Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
    }
}

/// Writes as much of `buf` as the socket takes now. `Err` when the peer is gone.
fn write_some<W: AsyncWrite + Unpin>(
    cx: &mut Context<'_>,
    w: &mut W,
    buf: &mut BytesMut,
) -> Result<(), ()> {
    if buf.is_empty() {
        // Nothing to write. What emptied it, the write below, let large memory go; a buffer
        // cleared otherwise (a request given up) lets it go here if it shows more than KEEP
        // (a slice of the other side's read buffer is handed over only when larger than
        // that; one cleared after part of it was written is let go at the next write).
        if buf.capacity() > KEEP {
            *buf = BytesMut::new();
        }
        return Ok(());
    }
    while !buf.is_empty() {
        match Pin::new(&mut *w).poll_write(cx, buf) {
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Err(()),
            Poll::Ready(Ok(n)) => buf.advance(n),
            Poll::Pending => return Ok(()),
        }
    }
    // Written to its end, the buffer shows only the room after what it held; reclaiming
    // takes back the room before it, and fails for a slice of the other side's read buffer
    // (a long message handed over while that buffer still holds more). Let go of an
    // allocation larger than KEEP, whatever part of it the buffer shows, and of such a slice,
    // so that the other side's buffer holds its memory alone and can give it up. A small
    // buffer of our own is kept, however exactly the message filled it: no allocation per
    // request.
    buf.clear();
    if buf.try_reclaim(KEEP + 1) || !buf.try_reclaim(1) {
        *buf = BytesMut::new();
    }
    Ok(())
}

/// Moves the first `n` bytes of `src` to the end of `dst`: copied when short (cheaper than
/// sharing the allocation, and `dst` keeps its own memory), handed over when long.
pub(super) fn move_bytes(dst: &mut BytesMut, src: &mut BytesMut, n: usize) {
    if n <= KEEP {
        dst.extend_from_slice(&src[..n]);
        src.advance(n);
    } else if dst.is_empty() {
        *dst = src.split_to(n);
        if src.is_empty() {
            // Nothing after it was read yet: `src` lets go of the allocation at once, and
            // `dst` frees it once written, however `src` grew to hold it (a view of its
            // tail would keep it alive, and reclaiming it depends on how it grew).
            *src = BytesMut::new();
        }
    } else {
        dst.unsplit(src.split_to(n));
    }
}

/// Reads what is available into `buf`. An empty buffer that grew for one large message lets
/// go of its memory (else every connection would keep its largest message's size for life).
fn read_some<R: AsyncRead + Unpin>(
    cx: &mut Context<'_>,
    r: &mut R,
    buf: &mut BytesMut,
) -> Poll<std::io::Result<usize>> {
    if buf.capacity() - buf.len() < READ_RESERVE / 4 {
        // (When the buffer holds its allocation alone, this takes it all back: the capacity
        // then shows how large it grew.)
        buf.reserve(READ_RESERVE);
    }
    if buf.is_empty() && buf.capacity() > READ_KEEP {
        *buf = BytesMut::with_capacity(READ_RESERVE);
    }
    tokio_util::io::poll_read_buf(Pin::new(r), cx, buf)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use tokio::io::AsyncReadExt;

    use super::*;

    /// A TLS pair over an in-memory pipe that holds only `pipe` bytes.
    async fn tls_pair(
        pipe: usize,
    ) -> (
        tokio_rustls::server::TlsStream<tokio::io::DuplexStream>,
        tokio_rustls::client::TlsStream<tokio::io::DuplexStream>,
    ) {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca =
            rcgen::CertifiedIssuer::self_signed(ca, rcgen::KeyPair::generate().unwrap()).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["proxy.test".to_string()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            )
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let (a, b) = tokio::io::duplex(pipe);
        let name = rustls::pki_types::ServerName::try_from("proxy.test").unwrap();
        let (s, c) = tokio::join!(
            tokio_rustls::TlsAcceptor::from(Arc::new(server)).accept(a),
            tokio_rustls::TlsConnector::from(Arc::new(client)).connect(name, b)
        );
        (s.unwrap(), c.unwrap())
    }

    /// TLS may take a write whole and send only part of its records while the socket is
    /// full; the relay stops writing once its buffer is empty, so `write_tls` must flush
    /// (and be woken to flush again) or the end of a response never leaves.
    #[test]
    fn write_tls_delivers_everything_with_a_slow_reader() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (mut server, mut client) = tls_pair(4096).await;
            let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
            let mut buf = BytesMut::from(&payload[..]);
            let done = AtomicBool::new(false);
            // The relay: writes whenever polled, and is polled again only when woken.
            let writer = std::future::poll_fn(|cx| {
                write_tls(cx, &mut server, &mut buf).expect("peer present");
                if done.load(Ordering::Relaxed) {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            });
            let reader = async {
                let mut got = Vec::new();
                let mut chunk = vec![0u8; 1000];
                while got.len() < payload.len() {
                    let n = client.read(&mut chunk).await.unwrap();
                    assert!(n > 0, "EOF after {} bytes", got.len());
                    got.extend_from_slice(&chunk[..n]);
                    // A slow client: the pipe fills up again and again.
                    tokio::task::yield_now().await;
                }
                done.store(true, Ordering::Relaxed);
                got
            };
            let (_, got) = tokio::time::timeout(std::time::Duration::from_secs(10), async {
                tokio::join!(writer, reader)
            })
            .await
            .expect("every byte arrives");
            assert!(got == payload, "the bytes changed on the way");
        });
    }

    /// Writes all of `buf` to a sink that takes everything.
    fn write_all(buf: &mut BytesMut) -> Vec<u8> {
        let mut sink = Vec::new();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        write_some(&mut cx, &mut sink, buf).expect("a Vec takes everything");
        assert!(buf.is_empty());
        sink
    }

    /// A short request or response copied into an output buffer leaves it holding its memory
    /// once written, even when it filled the buffer exactly: the next one is copied in
    /// without an allocation.
    #[test]
    fn short_messages_reuse_the_output_buffer() {
        let message = [7u8; 55];
        let mut out = BytesMut::new();
        for _ in 0..3 {
            let mut read = BytesMut::from(&message[..]);
            move_bytes(&mut out, &mut read, message.len());
            let at = out.as_ptr();
            assert_eq!(write_all(&mut out), message);
            assert!(
                out.capacity() >= message.len(),
                "the buffer let go of its memory"
            );
            let mut read = BytesMut::from(&message[..]);
            move_bytes(&mut out, &mut read, message.len());
            assert_eq!(out.as_ptr(), at, "the next message was copied elsewhere");
            out.clear();
        }
    }

    /// A long message handed over from a read buffer that holds more is a slice of that
    /// buffer: once written it is let go, and the read buffer holds its allocation alone again.
    /// A buffer of our own that grew past KEEP is let go as well.
    #[test]
    fn long_messages_and_grown_buffers_are_let_go_once_written() {
        let mut read = BytesMut::with_capacity(4 * KEEP);
        read.extend_from_slice(&[1u8; 3 * KEEP]);
        let mut out = BytesMut::new();
        move_bytes(&mut out, &mut read, 2 * KEEP);
        write_all(&mut out);
        assert_eq!(
            out.capacity(),
            0,
            "the written slice still shares the read buffer"
        );
        read.clear();
        assert!(
            read.try_reclaim(4 * KEEP),
            "the read buffer is still shared"
        );

        // (Written to its end, it shows only the few bytes after what it held.)
        let mut out = BytesMut::with_capacity(2 * KEEP + 100);
        out.extend_from_slice(&[3u8; 2 * KEEP + 10]);
        write_all(&mut out);
        assert_eq!(out.capacity(), 0, "a grown buffer kept its memory");
    }
}
