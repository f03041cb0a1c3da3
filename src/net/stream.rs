//! A connection's byte stream: plain TCP, TLS over TCP once a client or server agreed to
//! it, or a Unix-domain socket (never encrypted, as in PostgreSQL). The relay reads and
//! writes through [`Stream`] without knowing which; a plain stream costs one branch per call.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// A client or server connection.
pub enum Stream {
    /// Unencrypted.
    Plain(TcpStream),
    /// TLS: accepted from a client, or opened to a server.
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
    /// A Unix-domain socket: a local client, or a server's socket directory.
    Unix(UnixStream),
    /// A TLS handshake took the socket and failed: every call fails.
    Gone,
}

impl Stream {
    /// The TCP socket underneath (`None` for a Unix-domain socket, or once gone).
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Stream::Plain(s) => Some(s),
            Stream::Tls(s) => Some(s.get_ref().0),
            Stream::Unix(_) | Stream::Gone => None,
        }
    }

    /// The socket's file descriptor (`None` once gone).
    pub fn fd(&self) -> Option<RawFd> {
        match self {
            Stream::Unix(s) => Some(s.as_raw_fd()),
            _ => self.tcp().map(|t| t.as_raw_fd()),
        }
    }

    /// Whether this is a Unix-domain socket.
    pub fn is_unix(&self) -> bool {
        matches!(self, Stream::Unix(_))
    }

    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// The `tls-server-end-point` hash of the certificate a server presented on a TLS
    /// connection switchyard opened (for SCRAM channel binding); `None` otherwise, or when
    /// the certificate's signature names no hash.
    pub fn server_end_point(&self) -> Option<Vec<u8>> {
        let Stream::Tls(s) = self else { return None };
        let tokio_rustls::TlsStream::Client(c) = &**s else {
            return None;
        };
        let cert = c.get_ref().1.peer_certificates()?.first()?;
        super::end_point::tls_server_end_point(cert)
    }

    /// Takes the plain socket out for a TLS handshake (leaving [`Stream::Gone`]).
    pub fn take_plain(&mut self) -> Option<TcpStream> {
        match std::mem::replace(self, Stream::Gone) {
            Stream::Plain(s) => Some(s),
            other => {
                *self = other;
                None
            }
        }
    }

    /// Whether bytes or EOF wait on an idle connection (which expects none): a server's FATAL
    /// after an administrator ended it, a closed socket. Looks without reading (TLS records
    /// must stay intact) and costs no system call while tokio has seen no readiness event.
    pub fn has_unsolicited_input(&self) -> bool {
        // rustls wants to read unless it holds decrypted bytes not taken yet, or the peer
        // said goodbye (close_notify).
        if let Stream::Tls(s) = self {
            if !s.get_ref().1.wants_read() {
                return true;
            }
        }
        let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        let peeked = match self {
            Stream::Unix(u) => u.try_io(Interest::READABLE, || {
                socket2::SockRef::from(u).peek(&mut probe)
            }),
            _ => match self.tcp() {
                Some(tcp) => tcp.try_io(Interest::READABLE, || {
                    socket2::SockRef::from(tcp).peek(&mut probe)
                }),
                None => return true,
            },
        };
        match peeked {
            Ok(_) => true,
            Err(e) => e.kind() != io::ErrorKind::WouldBlock,
        }
    }

    /// Ends a TLS session as PostgreSQL does before it closes the socket, with a
    /// `close_notify` alert, waiting up to `within` for it to be sent (libpq 17's cancel API
    /// takes an end without one for a failed cancel). Nothing for a plain socket, which its
    /// close ends.
    pub async fn close_tls(&mut self, within: std::time::Duration) {
        if let Stream::Tls(s) = self {
            let _ =
                tokio::time::timeout(within, tokio::io::AsyncWriteExt::shutdown(&mut **s)).await;
        }
    }

    /// Writes `data` if the socket takes it now, without waiting (a best-effort goodbye).
    pub fn write_now(&mut self, data: &[u8]) {
        match self {
            Stream::Plain(s) => {
                let _ = s.try_write(data);
            }
            Stream::Unix(s) => {
                let _ = s.try_write(data);
            }
            Stream::Tls(s) => {
                let mut cx = Context::from_waker(Waker::noop());
                let _ = Pin::new(&mut **s).poll_write(&mut cx, data);
                let _ = Pin::new(&mut **s).poll_flush(&mut cx);
            }
            Stream::Gone => {}
        }
    }
}

fn gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "connection lost in a TLS handshake",
    )
}

impl AsyncRead for Stream {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }
}

impl AsyncWrite for Stream {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(_) | Stream::Unix(_) => Poll::Ready(Ok(())),
            Stream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
            Stream::Gone => Poll::Ready(Ok(())),
        }
    }
}
