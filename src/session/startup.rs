//! The first packets of a connection: TLS negotiation (an SSLRequest, or a TLS handshake
//! straight away), GSS refusal, a CancelRequest, and the StartupMessage.

use bytes::BytesMut;

use super::Fatal;
use crate::app::App;
use crate::config::ClientTlsMode;
use crate::net::tls::{ClientTls, TlsPeer};
use crate::net::{self, Stream};
use crate::protocol::startup::{self, Initial, Startup};

/// Outcome of reading the first packets.
pub enum First {
    /// A normal client, and what its TLS handshake established (channel binding data, a
    /// client certificate).
    Startup(Startup, TlsPeer),
    /// A cancel request (place it with [`super::cancel::place`], then close the connection).
    Cancel { pid: i32, secret: i32 },
}

/// Reads packets until a StartupMessage or a CancelRequest. An SSLRequest gets `S` and a TLS
/// handshake when `[tls]` is configured, `N` otherwise and always on a Unix-domain socket
/// or a connection already encrypted (as PostgreSQL answers there); GSS encryption is
/// refused. Each may be asked once (GSS encryption not after TLS was negotiated), as
/// PostgreSQL's `ProcessStartupPacket` allows: asked again, it is read as a startup packet
/// of an unknown protocol version.
pub async fn read_startup(
    app: &App,
    stream: &mut Stream,
    buf: &mut BytesMut,
) -> Result<First, Fatal> {
    let mut peer = TlsPeer::default();
    let local = stream.is_unix();
    let tls = app.config.load().tls.clone().filter(|_| !local);
    if let Some(tls) = tls.filter(|_| buf.is_empty()) {
        if starts_tls(stream).await? {
            // PostgreSQL 17's `sslnegotiation=direct`: the handshake at once, no SSLRequest.
            // As PostgreSQL, only for a client that names the protocol in ALPN (so that a TLS
            // client meant for another service cannot be mistaken for one).
            peer = handshake(app, stream, &tls).await?;
            if !peer.alpn {
                app.metrics.rejected("no_alpn");
                return Err(Fatal::protocol_silent(
                    "direct TLS connection without the ALPN protocol \"postgresql\"",
                ));
            }
        }
    }
    // Whether an SSLRequest, a GSSENCRequest was answered (a direct TLS handshake counts as
    // neither).
    let (mut ssl_done, mut gss_done) = (false, false);
    loop {
        net::fill_to(stream, buf, 4).await.map_err(Fatal::Io)?;
        let len = startup::declared_len([buf[0], buf[1], buf[2], buf[3]])
            .map_err(|e| Fatal::protocol_silent(e.to_string()))?;
        net::fill_to(stream, buf, len).await.map_err(Fatal::Io)?;
        let packet = buf.split_to(len);
        match startup::parse(&packet) {
            Ok(Initial::SslRequest) if ssl_done => return Err(unsupported(1234, 5679)),
            Ok(Initial::GssEncRequest) if gss_done => return Err(unsupported(1234, 5680)),
            Ok(kind @ (Initial::SslRequest | Initial::GssEncRequest)) => {
                if !buf.is_empty() {
                    // Data pipelined after an encryption request would be a downgrade attack
                    // vector (CVE-2021-23214); PostgreSQL refuses it too.
                    return Err(Fatal::protocol(if kind == Initial::SslRequest {
                        "received unencrypted data after SSL request"
                    } else {
                        "received unencrypted data after GSSAPI encryption request"
                    }));
                }
                let tls = app.config.load().tls.clone();
                match tls.filter(|_| !local && !stream.is_tls()) {
                    Some(tls) if kind == Initial::SslRequest => {
                        peer = start_tls(app, stream, &tls).await?;
                        // GSS encryption is not negotiable inside TLS.
                        gss_done = true;
                    }
                    _ => net::send_all(stream, b"N").await.map_err(Fatal::Io)?,
                }
                if kind == Initial::SslRequest {
                    ssl_done = true;
                } else {
                    // (An SSLRequest may follow a refused GSSENCRequest.)
                    (ssl_done, gss_done) = (false, true);
                }
            }
            Ok(Initial::Cancel { pid, secret }) => return Ok(First::Cancel { pid, secret }),
            Ok(Initial::Startup(s)) => return Ok(First::Startup(s, peer)),
            Err(startup::StartupError::UnsupportedProtocol(major, minor)) => {
                return Err(unsupported(major, minor))
            }
            Err(e) => return Err(Fatal::protocol(e.to_string())),
        }
    }
}

/// The database a startup packet asks for, as PostgreSQL reads it: `database`, else the user
/// name, cut to 63 bytes. `None` without a user name.
pub fn requested_database(s: &Startup) -> Option<&str> {
    let user = s.param("user").filter(|u| !u.is_empty())?;
    Some(startup::name_cut(
        s.param("database")
            .filter(|d| !d.is_empty())
            .unwrap_or(user),
    ))
}

/// PostgreSQL's FATAL for a startup packet of a protocol version it does not speak.
fn unsupported(major: impl std::fmt::Display, minor: impl std::fmt::Display) -> Fatal {
    Fatal::new(
        "0A000",
        format!("unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.0"),
    )
}

/// Refuses a plain-text login over TCP when `[tls] mode = "require"` (a Unix-domain socket
/// never leaves the host: PostgreSQL's `hostssl` lines do not apply to it either).
pub fn check_encrypted(app: &App, stream: &Stream) -> Result<(), Fatal> {
    let required = app
        .config
        .load()
        .tls
        .as_ref()
        .is_some_and(|t| t.mode == ClientTlsMode::Require);
    if required && !stream.is_tls() && !stream.is_unix() {
        app.metrics.rejected("no_tls");
        return Err(Fatal::new(
            "28000",
            "this server accepts only encrypted connections (SSL off): connect with sslmode=require",
        ));
    }
    Ok(())
}

/// Whether a plain connection's first byte opens a TLS handshake record. A packet of the
/// startup phase never starts so: its first byte is the high byte of a short length.
async fn starts_tls(stream: &Stream) -> Result<bool, Fatal> {
    const TLS_HANDSHAKE_RECORD: u8 = 0x16;
    let Stream::Plain(tcp) = stream else {
        return Ok(false);
    };
    let mut first = [0u8; 1];
    let n = tcp.peek(&mut first).await.map_err(Fatal::Io)?;
    Ok(n == 1 && first[0] == TLS_HANDSHAKE_RECORD)
}

/// Answers an SSLRequest with `S` and runs the handshake: `stream` is TLS from here on.
async fn start_tls(app: &App, stream: &mut Stream, tls: &ClientTls) -> Result<TlsPeer, Fatal> {
    net::send_all(stream, b"S").await.map_err(Fatal::Io)?;
    handshake(app, stream, tls).await
}

/// Runs the server side of a TLS handshake on a plain connection, counting its outcome.
async fn handshake(app: &App, stream: &mut Stream, tls: &ClientTls) -> Result<TlsPeer, Fatal> {
    let Some(tcp) = stream.take_plain() else {
        return Err(Fatal::protocol_silent(
            "connection gone before the TLS handshake",
        ));
    };
    let result = tls.accept(tcp).await;
    let outcome = if result.is_ok() { "ok" } else { "error" };
    app.metrics
        .tls_handshakes
        .with_label_values(&["client", outcome])
        .inc();
    let (tls_stream, peer) =
        result.map_err(|e| Fatal::protocol_silent(format!("TLS handshake failed: {e}")))?;
    *stream = tls_stream;
    Ok(peer)
}
