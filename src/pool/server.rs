//! One server connection: the socket, its read buffer, and what the proxy knows about the
//! session state on it (reported parameters, applied settings, prepared statements).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use postgres_protocol::message::frontend;
use tokio::net::TcpStream;

use crate::auth::scram_client::Binding;
use crate::auth::{DerivedKeys, ScramKeysClient, ServerCredential};
use crate::config::ChannelBinding;
use crate::net::server_addr::OpenError;
use crate::net::Stream;
use crate::protocol::{self, tag, ErrorFields, TxnStatus};
use crate::session::settings::Settings;

/// Largest server message accepted during startup and in setup queries.
const MAX_SETUP_MESSAGE: usize = 1 << 20;

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct ConnectParams {
    /// `host:port`.
    pub address: String,
    /// Login user.
    pub user: String,
    /// What to answer the server's authentication request with.
    pub credential: ServerCredential,
    /// Database name.
    pub database: String,
    /// Connect plus authentication deadline.
    pub timeout: Duration,
    /// TCP keepalive idle time.
    pub keepalive: Duration,
    /// `[server_tls]` as loaded.
    pub tls: Arc<crate::net::tls::ServerTls>,
    /// SCRAM keys derived from the password, kept for the pool's next connections.
    pub derived: DerivedKeys,
}

/// Why a server connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TCP or I/O failure.
    #[error("cannot connect to {address}: {source}")]
    Io { address: String, source: io::Error },
    /// Deadline passed.
    #[error("connecting to {0} timed out")]
    Timeout(String),
    /// The server refused us with an ErrorResponse (e.g. 3D000 unknown database, 28P01).
    #[error("server {address} refused the connection: {code} {message}")]
    Refused {
        address: String,
        severity: String,
        code: String,
        message: String,
    },
    /// The server asked for something we cannot do.
    #[error("server {address}: {message}")]
    Protocol { address: String, message: String },
    /// TLS as `[server_tls]` asks for it could not be set up (no TLS on the server, a
    /// certificate that does not verify).
    #[error("server {address}: {source}")]
    Tls {
        address: String,
        source: crate::net::tls::TlsConnectError,
    },
}

impl ConnectError {
    /// SQLSTATE to report to a client whose login needed this connection.
    pub fn sqlstate(&self) -> &str {
        match self {
            ConnectError::Refused { code, .. } => code,
            ConnectError::Io { .. } | ConnectError::Timeout(_) => "08006",
            ConnectError::Protocol { .. } => "08P01",
            ConnectError::Tls { .. } => "08006",
        }
    }

    /// Message safe to show a client (no addresses of internal servers).
    pub fn client_message(&self) -> String {
        match self {
            ConnectError::Refused { message, .. } => message.clone(),
            ConnectError::Io { .. } | ConnectError::Timeout(_) => {
                "could not connect to the database server".into()
            }
            ConnectError::Protocol { .. } => {
                "the database server spoke an unexpected protocol".into()
            }
            ConnectError::Tls {
                source: crate::net::tls::TlsConnectError::Unbound(_),
                ..
            } => "the database server's login was not bound to its TLS certificate, \
                  which [server_tls] channel_binding = \"require\" demands"
                .into(),
            ConnectError::Tls {
                source: crate::net::tls::TlsConnectError::Unbindable(_),
                ..
            } => "the database server offered a login bound to its TLS certificate that \
                  cannot be made (a man in the middle may be relaying it)"
                .into(),
            // The connection failed before any TLS was spoken (a forwarder in front of a
            // server that is gone accepts, then closes): an outage like any other.
            ConnectError::Tls {
                source: crate::net::tls::TlsConnectError::Io(e),
                ..
            } if !matches!(
                e.kind(),
                io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput
            ) =>
            {
                "could not connect to the database server".into()
            }
            ConnectError::Tls { .. } => {
                "could not set up an encrypted connection to the database server".into()
            }
        }
    }

    /// True when the server itself said no, or its TLS does not satisfy `[server_tls]` (a
    /// configuration problem, not an outage). A server starting up, shutting down, in
    /// recovery or at its connection limit (57P0x, 53xxx, 08xxx) is an outage: another
    /// server may well take the request.
    pub fn is_refusal(&self) -> bool {
        if let ConnectError::Refused { code, .. } = self {
            return !["57P", "53", "08"].iter().any(|c| code.starts_with(c));
        }
        matches!(
            self,
            ConnectError::Tls {
                source: crate::net::tls::TlsConnectError::Unsupported(_)
                    | crate::net::tls::TlsConnectError::Handshake(_)
                    | crate::net::tls::TlsConnectError::Unbound(_)
                    | crate::net::tls::TlsConnectError::Unbindable(_),
                ..
            }
        )
    }
}

/// The outcome of an exchange outside the relay, bounded by a timeout: an I/O error or the
/// timeout leaves the connection `broken` (its state is unknown).
fn exchange_result<T>(
    broken: &mut bool,
    r: Result<io::Result<T>, tokio::time::error::Elapsed>,
) -> io::Result<T> {
    match r {
        Ok(r) => {
            if r.is_err() {
                *broken = true;
            }
            r
        }
        Err(_) => {
            *broken = true;
            Err(io::ErrorKind::TimedOut.into())
        }
    }
}

/// An owned copy of an ErrorResponse for setup queries.
#[derive(Debug, Clone)]
pub struct ServerError {
    pub severity: String,
    pub code: String,
    pub message: String,
}

impl From<ErrorFields<'_>> for ServerError {
    fn from(f: ErrorFields<'_>) -> Self {
        ServerError {
            severity: f.severity.into(),
            code: f.code.into(),
            message: f.message.into(),
        }
    }
}

/// Whose sequence state (`currval`, `lastval`) a server connection holds.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum SeqState {
    /// None: no client has used the connection.
    #[default]
    Clean,
    /// Only this client's, since its `epoch`-th `DISCARD SEQUENCES`.
    Only { client: u64, epoch: u64 },
    /// Possibly several clients'.
    Mixed,
}

/// Where an exchange of the proxy's own ([`ServerConn::simple_query`] and its kin) keeps the
/// asynchronous messages the server sends meanwhile; dropped where not given.
#[derive(Default)]
pub struct Asides<'a> {
    /// NoticeResponse messages, whole.
    pub notices: Option<&'a mut BytesMut>,
    /// NotificationResponse messages, whole: on a connection a LISTENing client holds, they
    /// are that client's.
    pub notifications: Option<&'a mut BytesMut>,
}

/// Puts the notifications an exchange of the proxy's own read back in front of what the
/// connection still has buffered, for the relay to pass on as if just read.
pub fn put_back(rbuf: &mut BytesMut, mut notifications: BytesMut) {
    if !notifications.is_empty() {
        notifications.extend_from_slice(rbuf);
        *rbuf = notifications;
    }
}

/// An authenticated server connection, idle or in use.
pub struct ServerConn {
    /// The socket's registration with its pool. First field: dropped (unregistered) before
    /// `stream` closes the fd, so the pool never shuts down a reused descriptor number.
    pub socket: Option<super::SocketGuard>,
    /// The socket, plain or TLS.
    pub stream: Stream,
    /// Bytes read from the server and not yet handled.
    pub rbuf: BytesMut,
    /// Index of the backend in the cluster view this connection belongs to.
    pub backend: usize,
    /// Server process id and cancel key (BackendKeyData).
    pub pid: i32,
    pub secret: i32,
    /// Current values of the parameters the server reports (ParameterStatus).
    pub params: Vec<(String, String)>,
    /// Session settings currently applied on this connection.
    pub applied: Arc<Settings>,
    /// Proxy-wide statement ids prepared on this connection.
    pub prepared: super::prepared::Prepared,
    /// Who owns the unnamed prepared statement here: (client id, that client's parse counter).
    pub unnamed_owner: Option<(u64, u64)>,
    /// A previous client left session state (temp tables, SQL PREPAREs…): reset before reuse.
    pub needs_reset: bool,
    /// The client that used it last, while connected (0: none); see the pool's affinity.
    pub owner: u64,
    /// The owner before `owner` got it (0: the connection was free then).
    pub previous_owner: u64,
    /// When its process id was last given to a client at login ([`super::clock`]
    /// milliseconds; 0: never).
    pub told: u64,
    /// The client for which it last closed the statements no client has any more (0: none).
    pub swept_for: u64,
    /// Whose sequence state it holds.
    pub seq: SeqState,
    /// Opened at ([`super::clock`] milliseconds).
    pub created: u64,
    /// Checked in at (for idle timeout; [`super::clock`] milliseconds).
    pub idle_since: u64,
    /// Set when the connection must not be reused (protocol confusion, failed setup query).
    pub broken: bool,
    /// Its entry among the server processes serving clients (made when it first serves one).
    pub holder: Option<super::holders::Holder>,
    /// The TLS handshake failed and `[server_tls] mode = "prefer"` went on unencrypted.
    pub tls_fell_back: bool,
}

impl ServerConn {
    /// Connects and authenticates, returning a connection ready for queries.
    pub async fn connect(p: &ConnectParams, backend: usize) -> Result<ServerConn, ConnectError> {
        match tokio::time::timeout(p.timeout, Self::connect_inner(p, backend)).await {
            Ok(r) => r,
            Err(_) => Err(ConnectError::Timeout(p.address.clone())),
        }
    }

    async fn connect_inner(p: &ConnectParams, backend: usize) -> Result<ServerConn, ConnectError> {
        let io_err = |source| ConnectError::Io {
            address: p.address.clone(),
            source,
        };
        let tune = |tcp: &TcpStream| crate::net::configure_server(tcp, p.keepalive);
        let (stream, tls_fell_back) =
            crate::net::server_addr::open_server(&p.address, &p.tls, tune)
                .await
                .map_err(|e| match e {
                    OpenError::Connect(source) => io_err(source),
                    OpenError::Tls(source) => ConnectError::Tls {
                        address: p.address.clone(),
                        source,
                    },
                })?;
        let mut conn = ServerConn {
            stream,
            rbuf: BytesMut::with_capacity(8192),
            backend,
            pid: 0,
            secret: 0,
            params: Vec::new(),
            applied: Arc::new(Settings::default()),
            prepared: Default::default(),
            unnamed_owner: None,
            needs_reset: false,
            seq: SeqState::Clean,
            owner: 0,
            previous_owner: 0,
            told: 0,
            swept_for: 0,
            created: super::clock::now_ms(),
            idle_since: super::clock::now_ms(),
            broken: false,
            holder: None,
            socket: None,
            tls_fell_back,
        };
        let mut out = BytesMut::new();
        let params = [("user", p.user.as_str()), ("database", p.database.as_str())];
        frontend::startup_message(params.iter().copied(), &mut out).map_err(io_err)?;
        crate::net::send_all(&mut conn.stream, &out)
            .await
            .map_err(io_err)?;
        conn.authenticate(p).await?;
        conn.read_until_ready(p).await?;
        Ok(conn)
    }

    /// A login the proxy cannot complete with the credential it has: reported like the
    /// server's own refusal (a configuration or password problem, not an outage).
    fn refused_by_us(p: &ConnectParams, code: &str, message: String) -> ConnectError {
        ConnectError::Refused {
            address: p.address.clone(),
            severity: "FATAL".into(),
            code: code.into(),
            message,
        }
    }

    fn protocol_err(p: &ConnectParams, message: impl Into<String>) -> ConnectError {
        ConnectError::Protocol {
            address: p.address.clone(),
            message: message.into(),
        }
    }

    async fn next(&mut self, p: &ConnectParams) -> Result<(u8, BytesMut), ConnectError> {
        crate::net::read_message(&mut self.stream, &mut self.rbuf, MAX_SETUP_MESSAGE)
            .await
            .map_err(|source| ConnectError::Io {
                address: p.address.clone(),
                source,
            })
    }

    fn refused(p: &ConnectParams, frame: &[u8]) -> ConnectError {
        let f = ErrorFields::parse(&frame[5..]);
        ConnectError::Refused {
            address: p.address.clone(),
            severity: f.severity.into(),
            code: f.code.into(),
            message: f.message.into(),
        }
    }

    async fn send(&mut self, p: &ConnectParams, buf: &[u8]) -> Result<(), ConnectError> {
        crate::net::send_all(&mut self.stream, buf)
            .await
            .map_err(|source| ConnectError::Io {
                address: p.address.clone(),
                source,
            })
    }

    async fn authenticate(&mut self, p: &ConnectParams) -> Result<(), ConnectError> {
        let mut scram: Option<ScramKeysClient> = None;
        loop {
            let (t, frame) = self.next(p).await?;
            match t {
                tag::ERROR_RESPONSE => return Err(Self::refused(p, &frame)),
                tag::AUTHENTICATION => {}
                tag::NEGOTIATE_PROTOCOL_VERSION | tag::NOTICE_RESPONSE => continue,
                other => {
                    return Err(Self::protocol_err(
                        p,
                        format!(
                            "unexpected message {:?} during authentication",
                            other as char
                        ),
                    ))
                }
            }
            let body = &frame[5..];
            if body.len() < 4 {
                return Err(Self::protocol_err(p, "short authentication message"));
            }
            let kind = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
            let data = &body[4..];
            let cannot = |method: &str| {
                let have = match &p.credential {
                    ServerCredential::None => "no password is configured",
                    ServerCredential::Password(_) => "a password is configured",
                    ServerCredential::Md5(_) => "only the md5 hash of its password is known",
                    ServerCredential::Scram(_) => "only the SCRAM keys of its password are known",
                };
                Self::refused_by_us(
                    p,
                    "28000",
                    format!(
                        "server asks for {method} authentication for user \"{}\", and {have}",
                        p.user
                    ),
                )
            };
            let require = p.tls.channel_binding == ChannelBinding::Require;
            let unbound = |why: &'static str| ConnectError::Tls {
                address: p.address.clone(),
                source: crate::net::tls::TlsConnectError::Unbound(why),
            };
            let mut out = BytesMut::new();
            match kind {
                0 if require && !scram.as_ref().is_some_and(|s| s.bound()) => {
                    return Err(unbound(
                        "the server accepted the login without a bound SCRAM exchange",
                    ))
                }
                0 => return Ok(()),
                3 | 5 if require => {
                    return Err(unbound(
                        "the server asked for a password, not for SCRAM-SHA-256-PLUS",
                    ))
                }
                3 => match &p.credential {
                    ServerCredential::Password(pw) => {
                        frontend::password_message(pw.as_bytes(), &mut out).expect("encode")
                    }
                    _ => return Err(cannot("clear-text password")),
                },
                5 => {
                    let salt: [u8; 4] = data
                        .get(..4)
                        .and_then(|s| s.try_into().ok())
                        .ok_or_else(|| Self::protocol_err(p, "short md5 salt"))?;
                    let hash = match &p.credential {
                        ServerCredential::Password(pw) => {
                            postgres_protocol::authentication::md5_hash(
                                p.user.as_bytes(),
                                pw.as_bytes(),
                                salt,
                            )
                        }
                        ServerCredential::Md5(hex) => crate::auth::md5_response(hex, salt),
                        _ => return Err(cannot("md5")),
                    };
                    frontend::password_message(hash.as_bytes(), &mut out).expect("encode");
                }
                10 => {
                    let offers = |name: &[u8]| data.split(|&b| b == 0).any(|m| m == name);
                    if !offers(b"SCRAM-SHA-256") {
                        return Err(Self::protocol_err(
                            p,
                            "server offers no supported SASL mechanism",
                        ));
                    }
                    let s = match &p.credential {
                        ServerCredential::Password(pw) => {
                            ScramKeysClient::from_password(pw, p.derived.clone())
                        }
                        ServerCredential::Scram(keys) => ScramKeysClient::new(keys.clone()),
                        _ => return Err(cannot("SCRAM-SHA-256")),
                    };
                    let (mechanism, binding) = Binding::choose(
                        self.stream.is_tls(),
                        p.tls.channel_binding == ChannelBinding::Disable,
                        self.stream.server_end_point(),
                        offers(b"SCRAM-SHA-256-PLUS"),
                    )
                    .map_err(|why| ConnectError::Tls {
                        address: p.address.clone(),
                        source: crate::net::tls::TlsConnectError::Unbindable(why),
                    })?;
                    if require && !matches!(binding, Binding::EndPoint(_)) {
                        return Err(unbound(if self.stream.is_tls() {
                            "the server did not offer SCRAM-SHA-256-PLUS, or its certificate's \
                             signature algorithm has no binding hash"
                        } else {
                            "the connection is not encrypted"
                        }));
                    }
                    let mut s = s.with_binding(binding);
                    let first = s.client_first();
                    frontend::sasl_initial_response(mechanism, &first, &mut out).expect("encode");
                    scram = Some(s);
                }
                11 => {
                    // (The keys are derived off the event loop every client shares.)
                    if let Some(s) = scram.as_ref() {
                        s.derive_ahead(data).await;
                    }
                    let message = match scram.as_mut() {
                        Some(s) => s.server_first(data).map_err(|e| match e {
                            crate::auth::AuthError::WrongPassword => Self::refused_by_us(
                                p,
                                "28P01",
                                format!(
                                    "the server no longer accepts the password role \"{}\" \
                                     logged in with (it changed or expired on the server since \
                                     its client logged in)",
                                    p.user
                                ),
                            ),
                            e => Self::protocol_err(p, format!("SCRAM: {e}")),
                        })?,
                        None => {
                            return Err(Self::protocol_err(p, "SASL continue without SASL start"))
                        }
                    };
                    frontend::sasl_response(&message, &mut out).expect("encode");
                }
                12 => {
                    let checked = match scram.as_mut() {
                        Some(s) => s.server_final(data).map_err(|e| e.to_string()),
                        None => return Err(Self::protocol_err(p, "SASL final without SASL start")),
                    };
                    checked.map_err(|e| {
                        Self::protocol_err(p, format!("SCRAM server signature: {e}"))
                    })?;
                    continue;
                }
                other => {
                    return Err(Self::protocol_err(
                        p,
                        format!("unsupported authentication request {other}"),
                    ))
                }
            }
            self.send(p, &out).await?;
        }
    }

    async fn read_until_ready(&mut self, p: &ConnectParams) -> Result<(), ConnectError> {
        loop {
            let (t, frame) = self.next(p).await?;
            let body = &frame[5..];
            match t {
                tag::PARAMETER_STATUS => self.note_parameter(body),
                tag::BACKEND_KEY_DATA if body.len() >= 8 => {
                    self.pid = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                    self.secret = i32::from_be_bytes([body[4], body[5], body[6], body[7]]);
                }
                tag::READY_FOR_QUERY => return Ok(()),
                tag::ERROR_RESPONSE => return Err(Self::refused(p, &frame)),
                tag::NOTICE_RESPONSE | tag::NEGOTIATE_PROTOCOL_VERSION => {}
                other => {
                    return Err(Self::protocol_err(
                        p,
                        format!("unexpected message {:?} during startup", other as char),
                    ))
                }
            }
        }
    }

    /// Records a ParameterStatus body (name, value).
    pub fn note_parameter(&mut self, body: &[u8]) {
        let Some((name, rest)) = protocol::read_cstr(body) else {
            return;
        };
        let Some((value, _)) = protocol::read_cstr(rest) else {
            return;
        };
        let (Ok(name), Ok(value)) = (std::str::from_utf8(name), std::str::from_utf8(value)) else {
            return;
        };
        match self.params.iter_mut().find(|(k, _)| k == name) {
            Some(slot) => value.clone_into(&mut slot.1),
            None => self.params.push((name.to_owned(), value.to_owned())),
        }
    }

    /// Runs a simple query to completion outside the relay (setup and cleanup), returning the
    /// text of every data row's columns, or the first error. Not cancel safe. (Like any simple
    /// query, it destroys the server's unnamed statement.)
    pub async fn simple_query(
        &mut self,
        sql: &str,
        timeout: Duration,
    ) -> io::Result<Result<Vec<Vec<Option<String>>>, ServerError>> {
        self.simple_query_noting(sql, timeout, Asides::default())
            .await
    }

    /// [`Self::simple_query`], keeping the asynchronous messages the server sent meanwhile
    /// where `asides` says.
    pub async fn simple_query_noting(
        &mut self,
        sql: &str,
        timeout: Duration,
        asides: Asides<'_>,
    ) -> io::Result<Result<Vec<Vec<Option<String>>>, ServerError>> {
        let mut out = BytesMut::new();
        protocol::encode::query(&mut out, sql);
        self.exchange(&out, timeout, asides).await
    }

    /// Runs `sql` with text parameters in the extended protocol (the unnamed statement), to
    /// completion outside the relay, as [`Self::simple_query`] does. The values never become
    /// part of the SQL text.
    pub async fn query_params(
        &mut self,
        sql: &str,
        params: &[&str],
        timeout: Duration,
    ) -> io::Result<Result<Vec<Vec<Option<String>>>, ServerError>> {
        let mut out = BytesMut::new();
        let encoded = frontend::parse("", sql, std::iter::empty(), &mut out)
            .and_then(|()| {
                frontend::bind(
                    "",
                    "",
                    std::iter::empty::<i16>(),
                    params.iter(),
                    |p, buf| {
                        buf.put_slice(p.as_bytes());
                        Ok(postgres_protocol::IsNull::No)
                    },
                    std::iter::empty::<i16>(),
                    &mut out,
                )
                .map_err(|e| match e {
                    frontend::BindError::Conversion(e) => io::Error::other(e),
                    frontend::BindError::Serialization(e) => e,
                })
            })
            .and_then(|()| frontend::execute("", 0, &mut out));
        encoded?;
        frontend::sync(&mut out);
        self.exchange(&out, timeout, Asides::default()).await
    }

    /// Sends `out` and reads to ReadyForQuery: the data rows' columns as text, or the first
    /// error; notices and notifications go where `asides` says.
    async fn exchange(
        &mut self,
        out: &[u8],
        timeout: Duration,
        asides: Asides<'_>,
    ) -> io::Result<Result<Vec<Vec<Option<String>>>, ServerError>> {
        let Asides {
            mut notices,
            mut notifications,
        } = asides;
        self.unnamed_owner = None;
        let fut = async {
            crate::net::send_all(&mut self.stream, out).await?;
            let mut rows = Vec::new();
            let mut error = None;
            loop {
                let (t, frame) =
                    crate::net::read_message(&mut self.stream, &mut self.rbuf, 64 << 20).await?;
                let body = &frame[5..];
                match t {
                    tag::DATA_ROW => rows.push(parse_data_row(body)),
                    tag::ERROR_RESPONSE if error.is_none() => {
                        error = Some(ServerError::from(ErrorFields::parse(body)))
                    }
                    tag::PARAMETER_STATUS => self.note_parameter(body),
                    tag::NOTICE_RESPONSE => {
                        if let Some(n) = notices.as_deref_mut() {
                            n.extend_from_slice(&frame);
                        }
                    }
                    tag::NOTIFICATION_RESPONSE => {
                        if let Some(n) = notifications.as_deref_mut() {
                            n.extend_from_slice(&frame);
                        }
                    }
                    tag::READY_FOR_QUERY => {
                        if body.first().and_then(|&b| TxnStatus::from_byte(b))
                            != Some(TxnStatus::Idle)
                        {
                            self.broken = true;
                        }
                        return Ok(match error {
                            Some(e) => Err(e),
                            None => Ok(rows),
                        });
                    }
                    tag::COPY_IN_RESPONSE | tag::COPY_OUT_RESPONSE | tag::COPY_BOTH_RESPONSE => {
                        self.broken = true;
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "setup query entered COPY",
                        ));
                    }
                    _ => {}
                }
            }
        };
        let r = tokio::time::timeout(timeout, fut).await;
        exchange_result(&mut self.broken, r)
    }

    /// Prepares statement `name` anew (closing a copy the connection may hold) and describes
    /// it, outside the relay, on an idle connection: returns the RowDescription or NoData
    /// message, or the server's error (the statement is then not prepared). Notifications
    /// the server sends meanwhile (a LISTENing client's) are appended to `notifications`.
    /// Not cancel safe.
    pub async fn prepare_described(
        &mut self,
        name: &[u8],
        query: &[u8],
        types: &[u8],
        timeout: Duration,
        notifications: &mut BytesMut,
    ) -> io::Result<Result<bytes::Bytes, ServerError>> {
        use protocol::encode;
        let fut = async {
            let mut out = BytesMut::new();
            encode::describe_or_close(&mut out, tag::CLOSE, b'S', name);
            encode::parse(&mut out, name, query, types);
            encode::describe_or_close(&mut out, tag::DESCRIBE, b'S', name);
            encode::empty(&mut out, tag::SYNC);
            crate::net::send_all(&mut self.stream, &out).await?;
            let mut shape = None;
            let mut error = None;
            loop {
                let (t, frame) =
                    crate::net::read_message(&mut self.stream, &mut self.rbuf, 64 << 20).await?;
                match t {
                    tag::ROW_DESCRIPTION | tag::NO_DATA => shape = Some(frame.freeze()),
                    tag::NOTIFICATION_RESPONSE => notifications.extend_from_slice(&frame),
                    tag::ERROR_RESPONSE if error.is_none() => {
                        error = Some(ServerError::from(ErrorFields::parse(&frame[5..])))
                    }
                    tag::PARAMETER_STATUS => self.note_parameter(&frame[5..]),
                    tag::READY_FOR_QUERY => {
                        if frame.get(5).and_then(|&b| TxnStatus::from_byte(b))
                            != Some(TxnStatus::Idle)
                        {
                            self.broken = true;
                        }
                        return Ok(match (error, shape) {
                            (None, Some(shape)) => Ok(shape),
                            (Some(e), _) => Err(e),
                            (None, None) => Err(ServerError {
                                severity: "ERROR".into(),
                                code: "08P01".into(),
                                message: "no row description for a described statement".into(),
                            }),
                        });
                    }
                    _ => {}
                }
            }
        };
        let r = tokio::time::timeout(timeout, fut).await;
        exchange_result(&mut self.broken, r)
    }

    /// Sends `unsent` (the rest of requests already begun) and reads the answers to `queries`
    /// simple queries sent before, passing their rows to `on_row` and discarding the rest.
    /// Returns whether the connection ended up idle outside a transaction, ready for another
    /// client.
    pub async fn finish_queries(
        &mut self,
        unsent: &[u8],
        queries: usize,
        timeout: Duration,
        mut on_row: impl FnMut(Vec<Option<String>>),
    ) -> bool {
        let fut = async {
            crate::net::send_all(&mut self.stream, unsent).await?;
            let mut idle = true;
            for _ in 0..queries {
                loop {
                    let (t, frame) =
                        crate::net::read_message(&mut self.stream, &mut self.rbuf, 64 << 20)
                            .await?;
                    match t {
                        tag::PARAMETER_STATUS => self.note_parameter(&frame[5..]),
                        tag::DATA_ROW => on_row(parse_data_row(&frame[5..])),
                        tag::READY_FOR_QUERY => {
                            idle = frame.get(5).and_then(|&b| TxnStatus::from_byte(b))
                                == Some(TxnStatus::Idle);
                            break;
                        }
                        tag::COPY_IN_RESPONSE
                        | tag::COPY_OUT_RESPONSE
                        | tag::COPY_BOTH_RESPONSE => {
                            return Ok::<bool, io::Error>(false);
                        }
                        _ => {}
                    }
                }
            }
            Ok(idle)
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(Ok(true)) => true,
            _ => {
                self.broken = true;
                false
            }
        }
    }

    /// Whether the socket shows signs of death while idle (EOF or unsolicited bytes, e.g. a
    /// FATAL from an administrator's pg_terminate_backend). Costs no syscall when tokio has
    /// seen no readiness event on the socket.
    pub fn is_dead(&mut self) -> bool {
        if self.broken || !self.rbuf.is_empty() {
            return true;
        }
        self.stream.has_unsolicited_input()
    }

    /// Sends Terminate (best effort, no waiting) before the connection is dropped.
    pub fn terminate(&mut self) {
        let mut out = BytesMut::new();
        out.put_u8(b'X');
        out.put_i32(4);
        self.stream.write_now(&out);
    }
}

/// Columns of a DataRow body as text (`None` for NULL); malformed rows yield what parsed.
pub fn parse_data_row(mut body: &[u8]) -> Vec<Option<String>> {
    let mut cols = Vec::new();
    if body.len() < 2 {
        return cols;
    }
    let n = body.get_i16();
    for _ in 0..n {
        if body.len() < 4 {
            break;
        }
        let len = body.get_i32();
        if len < 0 {
            cols.push(None);
            continue;
        }
        let len = len as usize;
        if body.len() < len {
            break;
        }
        cols.push(Some(String::from_utf8_lossy(&body[..len]).into_owned()));
        body.advance(len);
    }
    cols
}

#[cfg(test)]
mod tests {
    use super::ConnectError;

    fn refused(code: &str) -> ConnectError {
        ConnectError::Refused {
            address: "127.0.0.1:5432".into(),
            severity: "FATAL".into(),
            code: code.into(),
            message: "no".into(),
        }
    }

    #[test]
    fn a_connection_closed_before_tls_is_a_failed_connection() {
        use crate::net::tls::TlsConnectError;
        let tls = |source| ConnectError::Tls {
            address: "127.0.0.1:5432".into(),
            source,
        };
        let io = |kind| std::io::Error::new(kind, "x");
        for kind in [
            std::io::ErrorKind::UnexpectedEof,
            std::io::ErrorKind::ConnectionReset,
        ] {
            assert_eq!(
                tls(TlsConnectError::Io(io(kind))).client_message(),
                "could not connect to the database server"
            );
        }
        // (An answer to SSLRequest that is neither S nor N, a host that is no TLS name.)
        for e in [
            TlsConnectError::Io(io(std::io::ErrorKind::InvalidData)),
            TlsConnectError::Io(io(std::io::ErrorKind::InvalidInput)),
            TlsConnectError::Handshake(io(std::io::ErrorKind::UnexpectedEof)),
        ] {
            assert_eq!(
                tls(e).client_message(),
                "could not set up an encrypted connection to the database server"
            );
        }
    }

    #[test]
    fn an_outage_is_not_a_refusal() {
        for code in ["57P03", "57P01", "53300", "08006"] {
            assert!(!refused(code).is_refusal(), "{code}");
        }
        for code in ["28P01", "28000", "3D000", "42501"] {
            assert!(refused(code).is_refusal(), "{code}");
        }
    }
}
