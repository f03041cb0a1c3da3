//! A client's life before the relay: the first packets (TLS negotiation, GSS refusal, cancel,
//! startup), authentication against the configured users (or a role's server password,
//! looked up with `[auth_query]`), and the first server contact that validates the database
//! and startup settings and yields the ParameterStatus values the client sees.

use std::sync::Arc;

use bytes::BytesMut;

use super::access;
use super::lookup;
use super::settings::Settings;
use super::Fatal;
use crate::app::App;
use crate::auth::hba::{self, Method};
use crate::auth::ident::IdentMap;
use crate::auth::{self, ScramServer, ServerCredential, StoredPassword};
use crate::config::{AuthMethod, ClientCertMode, ClientTlsMode, Loaded, PoolMode, User};
use crate::net::listener::Peer;
use crate::net::tls::{ClientTls, TlsPeer};
use crate::net::{self, Stream};
use crate::pool::Pooled;
use crate::protocol::options;
use crate::protocol::startup::{self, Initial, Startup};
use crate::protocol::{encode, tag};

/// What the startup phase produced.
pub struct Login {
    /// The authenticated user.
    pub user: Arc<User>,
    /// The database asked for.
    pub database: String,
    /// Settings from the startup packet (including `options`).
    pub startup: Settings,
}

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

/// Validates the startup packet and authenticates the client.
pub async fn authenticate(
    app: &App,
    stream: &mut Stream,
    buf: &mut BytesMut,
    s: &Startup,
    peer: TlsPeer,
    from: Peer,
) -> Result<Login, Fatal> {
    let mut out = BytesMut::new();
    let unsupported: Vec<&str> = s
        .params
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| k.starts_with("_pq_."))
        .collect();
    if s.minor > 0 || !unsupported.is_empty() {
        // The field is the newest protocol version supported (3.0), as PostgreSQL sends it.
        encode::negotiate_protocol_version(&mut out, 3 << 16, &unsupported);
    }
    // Names cut to what PostgreSQL keeps of them (63 bytes), as it cuts them before anything
    // else: a longer name logs in as its first 63 bytes.
    let user_name = s.param("user").filter(|u| !u.is_empty()).ok_or_else(|| {
        Fatal::new(
            "28000",
            "no PostgreSQL user name specified in startup packet",
        )
    })?;
    let user_name = startup::name_cut(user_name);
    // As PostgreSQL reads it: a boolean, or `database` (logical replication).
    match s.param("replication").map(|r| (r, startup::parse_bool(r))) {
        None | Some((_, Some(false))) => {}
        Some((_, Some(true))) => {
            return Err(Fatal::new(
                "0A000",
                "switchyard does not proxy replication connections",
            ))
        }
        Some(("database", None)) => {
            return Err(Fatal::new(
                "0A000",
                "switchyard does not proxy replication connections",
            ))
        }
        Some((r, None)) => {
            return Err(Fatal::new(
                "22023",
                format!("invalid value for parameter \"replication\": \"{r}\""),
            ))
        }
    }
    let database = requested_database(s).unwrap_or(user_name).to_owned();
    let config = app.config.load_full();
    // As PostgreSQL: the host-based rules before the startup options are applied.
    let hba = match &config.hba {
        Some(hba) => {
            Some(access::decide(app, &config, hba, stream, from, user_name, &database).await?)
        }
        None => None,
    };
    let hba_method = hba.as_ref().map(|d| d.method);
    // PostgreSQL applies `options` switches first and then the startup parameters, so a
    // parameter given both ways takes the startup parameter's value.
    let options = match s.param("options") {
        Some(opts) => options::parse_options(opts).map_err(|m| Fatal::new("42601", m))?,
        None => Vec::new(),
    };
    let settings = Settings::from_startup(
        options.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        s.params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    )
    .map_err(|m| Fatal::new("42704", m))?;
    let configured = config.users.get(user_name).cloned();
    // Client certificates first, as PostgreSQL checks `clientcert` before the method.
    let cert_auth = match hba_method {
        Some(m) => m == Method::Cert,
        None => configured
            .as_ref()
            .is_some_and(|u| u.config.auth == AuthMethod::Cert),
    };
    // Not on the unix socket, which is never encrypted (as `clientcert` is an option of
    // PostgreSQL's `hostssl` lines only).
    let client_cert = config
        .tls
        .as_ref()
        .filter(|_| !stream.is_unix())
        .map_or(ClientCertMode::Optional, |t| t.client_cert);
    // An `hba_file` line's `clientcert=` adds to it (its lines are `hostssl` ones).
    let client_cert = match hba.as_ref().and_then(|d| d.clientcert) {
        Some(hba::CertCheck::VerifyFull) => ClientCertMode::VerifyFull,
        Some(hba::CertCheck::VerifyCa) if client_cert == ClientCertMode::Optional => {
            ClientCertMode::VerifyCa
        }
        _ => client_cert,
    };
    if (cert_auth || client_cert != ClientCertMode::Optional) && peer.cert.is_none() {
        app.metrics.rejected("client_cert");
        return Err(Fatal::new(
            "28000",
            "connection requires a valid client certificate",
        ));
    }
    // A role not in [[users]]: its password as the servers have it (auth_query), if on.
    let looked_up = match (&configured, &config.config.auth_query) {
        (None, Some(query)) => lookup::password(app, &config, query, user_name).await?,
        _ => None,
    };
    let stored = configured
        .as_ref()
        .map(|u| &u.stored)
        .or(looked_up.as_ref());
    let check = match (hba_method, &configured, stored) {
        (Some(Method::Trust | Method::Cert), _, _) => Check::Trust,
        (Some(Method::Peer), _, _) => {
            let map = usermap(&config, hba.as_ref());
            access::check_peer(app, &config, stream, user_name, map).await?;
            Check::Trust
        }
        (Some(Method::Password), _, stored) => Check::Cleartext(stored),
        // md5 with a password stored as a SCRAM verifier runs SCRAM, as in PostgreSQL.
        (Some(Method::Md5), _, Some(s @ (StoredPassword::Md5(_) | StoredPassword::Plain(_)))) => {
            Check::Md5(s)
        }
        (Some(_), Some(u), _) => Check::Scram(u.scram.clone()),
        (Some(_), None, s) => Check::Scram(s.and_then(StoredPassword::scram_secret)),
        (None, Some(u), _) => match u.config.auth {
            AuthMethod::Trust | AuthMethod::Cert => Check::Trust,
            AuthMethod::Md5 => Check::Md5(&u.stored),
            AuthMethod::ScramSha256 => Check::Scram(u.scram.clone()),
        },
        (None, None, Some(stored @ StoredPassword::Md5(_))) => Check::Md5(stored),
        (None, None, Some(stored)) => Check::Scram(stored.scram_secret()),
        (None, None, None) => Check::Scram(None),
    };
    let failed = || {
        Fatal::new(
            "28P01",
            format!("password authentication failed for user \"{user_name}\""),
        )
    };
    let limit = 8192;
    let mut proven = None;
    let mut cleartext = None;
    // How PostgreSQL words a failure of this method (`auth_failed`), for the certificate check
    // after it.
    let method_failed = match (&check, hba_method) {
        (Check::Trust, Some(Method::Peer)) => Fatal::new(
            "28000",
            format!("Peer authentication failed for user \"{user_name}\""),
        ),
        (Check::Trust, _) => Fatal::new(
            "28000",
            format!("\"trust\" authentication failed for user \"{user_name}\""),
        ),
        _ => failed(),
    };
    match check {
        Check::Trust => {}
        Check::Cleartext(stored) => {
            encode::auth_cleartext(&mut out);
            send(stream, &mut out).await?;
            let body = read_password(stream, buf, limit).await?;
            let given = body
                .strip_suffix(&[0])
                .filter(|p| !p.contains(&0))
                .ok_or_else(|| Fatal::protocol("invalid password packet size"))?;
            // PostgreSQL refuses an empty password whatever is stored.
            if given.is_empty() {
                return Err(Fatal::new("28P01", "empty password returned by client"));
            }
            // (Stored passwords are text: a password that is not UTF-8 matches none.)
            let given = std::str::from_utf8(given).map_err(|_| failed())?;
            if !cleartext_matches(stored, user_name, given).await {
                return Err(failed());
            }
            cleartext = Some(given.to_owned());
        }
        Check::Md5(stored) => {
            let salt: [u8; 4] = rand::random();
            encode::auth_md5(&mut out, salt);
            send(stream, &mut out).await?;
            let body = read_password(stream, buf, limit).await?;
            let response = body.strip_suffix(&[0]).unwrap_or(&body);
            if !auth::md5_challenge_response_ok(stored, user_name, salt, response) {
                return Err(failed());
            }
        }
        Check::Scram(secret) => {
            let scram = match secret {
                Some(secret) => ScramServer::new(secret),
                None => ScramServer::new_mock(user_name, &app.mock_secret),
            };
            let mut scram = scram.with_channel_binding(peer.end_point.clone());
            encode::auth_sasl(&mut out, scram.mechanisms());
            send(stream, &mut out).await?;
            let body = read_password(stream, buf, limit).await?;
            let (mechanism, data) =
                auth::parse_sasl_initial(&body).map_err(|e| scram_fatal(e, user_name))?;
            let later;
            let data = match data {
                Some(data) => data,
                None => {
                    // No initial response: an empty challenge, answered with what it would
                    // have carried (PostgreSQL's `scram_exchange`).
                    scram
                        .select(mechanism)
                        .map_err(|e| scram_fatal(e, user_name))?;
                    encode::auth_sasl_continue(&mut out, &[]);
                    send(stream, &mut out).await?;
                    later = read_password(stream, buf, limit).await?;
                    &later[..]
                }
            };
            let first = scram
                .client_first(mechanism, data)
                .map_err(|e| scram_fatal(e, user_name))?;
            encode::auth_sasl_continue(&mut out, &first);
            send(stream, &mut out).await?;
            let body = read_password(stream, buf, limit).await?;
            let last = scram
                .client_final(&body)
                .map_err(|e| scram_fatal(e, user_name))?;
            encode::auth_sasl_final(&mut out, &last);
            proven = scram.proven_keys();
        }
    }
    if cert_auth || client_cert == ClientCertMode::VerifyFull {
        // The subject's common name, or its whole DN on an `hba_file` line with
        // `clientname=DN`, for that line's own check (`cert`, `clientcert=verify-full`; not
        // `[tls] client_cert`'s).
        let by_dn = hba.as_ref().is_some_and(|d| {
            d.clientname == hba::CertName::Dn
                && (cert_auth || d.clientcert == Some(hba::CertCheck::VerifyFull))
        });
        let name = peer.cert.as_ref().and_then(|c| {
            if by_dn {
                c.dn.as_deref()
            } else {
                c.cn.as_deref()
            }
        });
        // A `cert` line's `map=` pairs names; otherwise the name must be the user's.
        let named = match (name, usermap(&config, hba.as_ref()).filter(|_| cert_auth)) {
            (Some(name), Some(map)) => access::mapped(app, &config, map, name, user_name).await?,
            (name, _) => name == Some(user_name),
        };
        if !named {
            tracing::warn!(
                user = user_name,
                certificate_name = ?name,
                clientname = if by_dn { "DN" } else { "CN" },
                "the client certificate's name is not the user name"
            );
            app.metrics.rejected("client_cert");
            if cert_auth {
                return Err(Fatal::new(
                    "28000",
                    format!("certificate authentication failed for user \"{user_name}\""),
                ));
            }
            // As PostgreSQL: the mismatch is for the log; the client learns only that its
            // login failed, as it would for a wrong password (telling the two apart would
            // confirm the password to a holder of any certificate from the authority).
            tracing::warn!(
                user = user_name,
                "certificate validation (clientcert=verify-full) failed: name mismatch"
            );
            return Err(method_failed);
        }
    }
    let user = match (configured, looked_up) {
        (Some(u), _) => u,
        (None, Some(stored)) => {
            // The servers take what the client proved: the password's SCRAM keys, its md5
            // hash, or a clear-text password the lookup returned.
            let server = match (&stored, proven) {
                _ if cleartext.is_some() => {
                    ServerCredential::Password(cleartext.take().unwrap_or_default())
                }
                (StoredPassword::Plain(p), _) => ServerCredential::Password(p.clone()),
                (StoredPassword::Md5(hex), _) => ServerCredential::Md5(hex.clone()),
                (StoredPassword::Scram(_), Some(keys)) => ServerCredential::Scram(keys),
                // Let in without a SCRAM exchange (an `hba_file` trust, peer or cert line):
                // the verifier cannot answer the servers.
                (StoredPassword::Scram(_), None) if hba_method.is_some() => {
                    return Err(Fatal::new(
                        "28000",
                        format!(
                            "switchyard cannot log in to the servers as \"{user_name}\": [auth_query] returned a SCRAM verifier, which only a SCRAM login can use"
                        ),
                    ))
                }
                (StoredPassword::Scram(_), None) => return Err(failed()),
            };
            let user = Arc::new(User::looked_up(user_name, stored, server));
            app.pools.learn(user.clone());
            user
        }
        // Let in by an `hba_file` line without a password: said as PostgreSQL says it.
        (None, None)
            if matches!(
                hba_method,
                Some(Method::Trust | Method::Peer | Method::Cert)
            ) =>
        {
            return Err(Fatal::new(
                "28000",
                format!("role \"{user_name}\" does not exist"),
            ))
        }
        (None, None) => return Err(failed()),
    };
    encode::auth_ok(&mut out);
    send(stream, &mut out).await?;
    Ok(Login {
        user,
        database,
        startup: settings,
    })
}

/// How a client proves who it is.
enum Check<'a> {
    /// No exchange (`trust`, `peer`, and `cert`, whose certificate is checked on its own).
    Trust,
    /// The password in clear text, checked against this one (none: always refused).
    Cleartext(Option<&'a StoredPassword>),
    /// An md5 challenge, checked against this password.
    Md5(&'a StoredPassword),
    /// A SCRAM-SHA-256 exchange with this verifier; a mock one that fails without.
    Scram(Option<auth::ScramSecret>),
}

fn scram_fatal(e: auth::AuthError, user: &str) -> Fatal {
    if e.is_protocol_violation() {
        Fatal::new("08P01", e.to_string())
    } else {
        Fatal::new(
            "28P01",
            format!("password authentication failed for user \"{user}\""),
        )
    }
}

async fn send(stream: &mut Stream, out: &mut BytesMut) -> Result<(), Fatal> {
    net::send_all(stream, out).await.map_err(Fatal::Io)?;
    out.clear();
    Ok(())
}

/// Reads a PasswordMessage-family message (`p`) and returns its body.
async fn read_password(
    stream: &mut Stream,
    buf: &mut BytesMut,
    limit: usize,
) -> Result<BytesMut, Fatal> {
    let (t, mut frame) =
        net::read_message(stream, buf, limit)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::InvalidData => Fatal::protocol(e.to_string()),
                _ => Fatal::Io(e),
            })?;
    if t != tag::PASSWORD {
        return Err(Fatal::protocol(format!(
            "expected password response, got message type {:?}",
            t as char
        )));
    }
    Ok(frame.split_off(5))
}

/// Whether applying `settings` makes PostgreSQL raise a notice: an `application_name` of
/// NAMEDATALEN (64) bytes or more is truncated with one ("identifier ... will be truncated").
fn raises_notice(settings: &Settings) -> bool {
    settings
        .0
        .get("application_name")
        .is_some_and(|v| v.len() >= 64)
}

/// Encodes the greeting after authentication: ParameterStatus for every reported parameter,
/// BackendKeyData, ReadyForQuery.
pub fn greeting(out: &mut BytesMut, params: &[(String, String)], pid: i32, secret: i32) {
    for (k, v) in params {
        encode::parameter_status(out, k, v);
    }
    encode::backend_key_data(out, pid, secret);
    encode::ready_for_query(out, crate::protocol::TxnStatus::Idle);
}

impl super::Session {
    /// The admin console's `DISABLE` closed the database to new logins: refused as
    /// PostgreSQL refuses a database that does not allow connections.
    fn refuse_if_disabled(&self) -> Result<(), Fatal> {
        if !self.app.disabled.refuses(&self.database) {
            return Ok(());
        }
        self.app.metrics.rejected("disabled");
        Err(Fatal::new(
            "55000",
            format!(
                "database \"{}\" is not currently accepting connections",
                self.database
            ),
        ))
    }

    /// The backend to log in on, in the session's view. Session mode keeps this connection
    /// for every statement: it must be the primary. Transaction mode only needs a server that
    /// knows the database and the user: the primary, or any other up when the primary could
    /// not be reached (`avoid`, a bit per backend tried) or there is none.
    fn login_backend(&self, avoid: u64) -> Option<usize> {
        let view = &self.current.view;
        let untried = |i: usize| avoid & (1u64 << (i % 64)) == 0;
        // (Starting from a place of the session's own: such logins spread over the servers.)
        let n = view.backends.len();
        let any_up = || {
            (0..n)
                .map(|k| (k + self.id as usize) % n)
                .find(|&i| view.backends[i].up && !view.backends[i].fenced && untried(i))
        };
        match self.pool_mode {
            PoolMode::Session => view.primary,
            PoolMode::Transaction => view.primary.filter(|&p| untried(p)).or_else(any_up),
        }
    }

    /// The backend to log in on and a connection checked out of its pool, waiting up to
    /// `primary_wait` for a primary when there is none. In transaction mode a server that
    /// cannot be reached (down, but not yet seen down by the monitor) is avoided: the login
    /// goes on to another that is up, so clients that connect for each request keep reading
    /// in the moments after the primary is lost.
    async fn login_checkout(&mut self, avoid: &mut u64) -> Result<(usize, Pooled), Fatal> {
        // Servers another checkout could not reach just now are not tried first.
        self.current.refresh(&self.app);
        let recent = super::choose::unreachable(&self.current.view);
        if self.pool_mode == PoolMode::Transaction && self.login_backend(*avoid | recent).is_some()
        {
            *avoid |= recent;
        }
        loop {
            let (index, pool) = self.login_pool(*avoid).await?;
            match pool.checkout_login(self.id).await {
                Ok(p) => return Ok((index, p)),
                Err(e)
                    if self.pool_mode == PoolMode::Transaction
                        && unreachable(&e)
                        && self.login_backend(*avoid | 1u64 << (index % 64)).is_some() =>
                {
                    tracing::info!(parent: &self.span, backend = %pool.key.backend, error = %e, "server unavailable: logging in on another");
                    *avoid |= 1u64 << (index % 64);
                    if let Some(b) = self.current.view.backends.get(index) {
                        let until = crate::pool::clock::now_ms() + super::attach::UNREACHABLE_MS;
                        b.stats
                            .unreachable_until
                            .store(until, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                Err(e) => return Err(self.login_refused(&e)),
            }
        }
    }

    /// The backend to log in on (see [`login_backend`](Self::login_backend)) and its pool.
    async fn login_pool(&mut self, avoid: u64) -> Result<(usize, Arc<crate::pool::Pool>), Fatal> {
        self.current.refresh(&self.app);
        let wait = self.current.config.config.routing.primary_wait;
        let mut found = self.login_backend(avoid);
        if found.is_none() && self.app.cluster.wait_primary(wait).await.is_some() {
            self.current.refresh(&self.app);
            found = self.login_backend(avoid);
        }
        let mut index =
            found.ok_or_else(|| Fatal::new("57P03", "no database server is available"))?;
        let mut pool = self.pool(index);
        if pool.is_none() && self.new_topology_within(super::attach::TOPOLOGY_WAIT).await {
            // A reload removed or moved the backend: log in by the topology it made.
            index = self
                .login_backend(avoid)
                .ok_or_else(|| Fatal::new("57P03", "no database server is available"))?;
            pool = self.pool(index);
        }
        let pool = pool.ok_or_else(|| Fatal::new("57P03", "no database server is available"))?;
        Ok((index, pool))
    }

    /// Applies the client's startup settings to the connection it logs in on; the notices
    /// that raises. PostgreSQL sends the notices that applying the startup settings raises (a
    /// truncated application_name) during startup: they are relayed in the greeting. A setting
    /// known to raise one is applied again even on a connection that already has it.
    async fn apply_startup_settings(&self, p: &mut Pooled) -> Result<BytesMut, SetupFailed> {
        let mut notices = BytesMut::new();
        let mut applied = std::borrow::Cow::Borrowed(&*p.conn.applied);
        if raises_notice(&self.desired) {
            // (Only that setting: what else the connection has is reset or kept as usual.)
            applied.to_mut().0.remove("application_name");
        }
        let Some(sql) = self.desired.sync_sql(&applied, true) else {
            return Ok(notices);
        };
        let timeout = self.current.config.config.pool.connect_timeout;
        match p
            .conn
            .simple_query_noting(&sql, timeout, Some(&mut notices))
            .await
        {
            Ok(Ok(_)) => {
                p.conn.applied = self.desired.clone();
                Ok(notices)
            }
            Ok(Err(e)) => Err(SetupFailed::Refused(e)),
            Err(_) => Err(SetupFailed::NoAnswer),
        }
    }

    /// The client's error for a failed login checkout.
    fn login_refused(&self, e: &crate::pool::PoolError) -> Fatal {
        match e.sqlstate() {
            // The client proved its identity to the proxy; the server does not know this role
            // (or has another password for it): a configuration mismatch, not a bad password.
            "28P01" | "28000" => Fatal::new(
                "28000",
                format!(
                    "the database server refused role \"{}\": {}",
                    self.user.name,
                    e.client_message()
                ),
            ),
            code => Fatal::new(code, e.client_message()),
        }
    }

    /// First server contact: validates database and startup settings on a real server and
    /// greets the client with that server's parameters.
    pub(super) async fn login(
        &mut self,
        client: &mut Stream,
        reg: &mut super::cancel::Registration,
    ) -> Result<(), Fatal> {
        self.refuse_if_disabled()?;
        // Counted from here (waiting out a PAUSE and for a server included), as PostgreSQL
        // counts a backend from its start: clients that got past admission together while
        // others were logging in cannot add up to more than the limit.
        let max = self.current.config.config.max_client_connections;
        match crate::metrics::CountedClient::admit(&self.app.metrics.clients, max) {
            Some(c) => self.counted = Some(c),
            None => {
                self.app.metrics.rejected("max_clients");
                return Err(Fatal::new("53300", "sorry, too many clients already"));
            }
        }
        if self.app.pause.holds(&self.database) {
            self.wait_resumed(client).await?;
            self.refuse_if_disabled()?;
        }
        // Session mode keeps this connection for every statement: it must still be the
        // primary's once checked out. Transaction mode only needs a server that serves.
        let target = match self.pool_mode {
            PoolMode::Session => super::route::Target::Primary,
            PoolMode::Transaction => super::route::Target::Replica,
        };
        let mut rerouted = 0;
        let mut avoid = 0u64;
        let (mut p, notices) = loop {
            // (The waits above may have crossed a reload that renumbered the backends:
            // login_checkout reads the view the pools are looked up in.)
            let (index, mut p) = self.login_checkout(&mut avoid).await?;
            if self.app.pause.holds(&self.database) {
                // PAUSE came while this login waited for a server (and, not holding one yet,
                // was not waited for): nothing is run on the server until RESUME.
                p.release();
                self.wait_resumed(client).await?;
                self.refuse_if_disabled()?;
                continue;
            }
            if !self.still_routable(index, &p.pool().key.backend, target) {
                p.discard("role_changed", &self.app.metrics);
                rerouted += 1;
                if rerouted == 3 {
                    return Err(Fatal::new("57P03", "no database server is available"));
                }
                continue;
            }
            match self.apply_startup_settings(&mut p).await {
                Ok(notices) => break (p, notices),
                Err(SetupFailed::Refused(e)) => {
                    p.release();
                    return Err(Fatal::new(e.code, e.message));
                }
                Err(SetupFailed::NoAnswer) => {
                    p.discard("setup_failed", &self.app.metrics);
                    // The server stopped answering (lost, and not yet seen so by the
                    // monitor): in transaction mode another one greets the client.
                    avoid |= 1u64 << (index % 64);
                    rerouted += 1;
                    if self.pool_mode == PoolMode::Session
                        || rerouted == 3
                        || self.login_backend(avoid).is_none()
                    {
                        return Err(Fatal::new(
                            "08006",
                            "could not set up the server connection",
                        ));
                    }
                }
            }
        };
        if self.app.cancels.adopt_pid(reg, p.conn.pid) {
            p.conn.told = crate::pool::clock::now_ms().max(1);
            // The client is told the process id of the server process it logs in on. In
            // session pooling it keeps that process for its whole session; in transaction
            // pooling the process is its own (the pool's affinity) while the pool has room.
            // Either way pg_backend_pid(), notifications and pg_terminate_backend agree with
            // the BackendKeyData. (Another client's key with that number: a random one, above
            // any process id.)
            self.client_pid = reg.pid;
        }
        self.superuser = p
            .conn
            .params
            .iter()
            .any(|(k, v)| k == "is_superuser" && v == "on");
        let mut out = notices;
        greeting(&mut out, &p.conn.params, reg.pid, reg.secret);
        self.reports = super::reports::Reports::greeted(&p.conn.params);
        for (name, value) in &p.conn.params {
            self.note_reported(name.as_bytes(), value.as_bytes());
        }
        if let Err(e) = net::send_all(client, &out).await {
            // The client left during its login: the connection goes back unused.
            p.release();
            return Err(Fatal::Io(e));
        }
        if self.pool_mode == PoolMode::Session {
            self.hold(p);
        } else {
            p.release();
        }
        Ok(())
    }
}

/// The `ident_file` map the deciding `hba_file` line names (`map=`), with the file.
fn usermap<'a>(
    config: &'a Loaded,
    hba: Option<&'a hba::Decision>,
) -> Option<(&'a IdentMap, &'a str)> {
    let map = hba?.map.as_deref()?;
    Some((config.ident.as_deref()?, map))
}

/// Whether `given`, a password sent in clear text, is the one `stored`. Against a SCRAM
/// verifier that takes its key derivation, as many rounds as the verifier says: run off the
/// event loop (every other client waits on it otherwise), and refused past
/// [`MAX_ITERATIONS`](crate::auth::secret::MAX_ITERATIONS) (a role can store any count with
/// `ALTER ROLE ... PASSWORD 'SCRAM-SHA-256$2000000000:...'`, and each login attempt would
/// cost minutes of CPU).
async fn cleartext_matches(stored: Option<&StoredPassword>, user: &str, given: &str) -> bool {
    use crate::auth::secret::MAX_ITERATIONS;
    match stored {
        None => false,
        Some(StoredPassword::Scram(s)) if s.iterations > MAX_ITERATIONS => {
            tracing::warn!(
                user,
                iterations = s.iterations,
                max = MAX_ITERATIONS,
                "the role's SCRAM verifier asks for more iterations than switchyard derives: password login refused"
            );
            false
        }
        Some(s @ StoredPassword::Scram(_)) => {
            let (s, user, given) = (s.clone(), user.to_owned(), given.to_owned());
            tokio::task::spawn_blocking(move || s.matches_cleartext(&user, &given))
                .await
                .unwrap_or(false)
        }
        Some(s) => s.matches_cleartext(user, given),
    }
}

/// Why the client's startup settings could not be applied at login.
enum SetupFailed {
    /// The server refused one (its error goes to the client).
    Refused(crate::pool::server::ServerError),
    /// The server did not answer in time, or the connection failed.
    NoAnswer,
}

/// Whether a failed login checkout says the server cannot be reached (down, not yet seen so
/// by the monitor; declared down or replaced meanwhile), so that another may greet the
/// client: not a refusal of the role or database (any server would refuse it), nor a pool
/// busy for all of `checkout_timeout` or a server at its connection limit (overload).
fn unreachable(e: &crate::pool::PoolError) -> bool {
    !e.is_refusal()
        && !matches!(
            e,
            crate::pool::PoolError::Timeout(_) | crate::pool::PoolError::Full { .. }
        )
}

#[cfg(test)]
mod cleartext_tests {
    use super::*;
    use crate::auth::secret::ScramSecret;

    #[tokio::test]
    async fn cleartext_against_a_scram_verifier() {
        let v = |i: u32| StoredPassword::Scram(ScramSecret::from_password("pw", b"salt", i));
        assert!(cleartext_matches(Some(&v(4096)), "u", "pw").await);
        assert!(!cleartext_matches(Some(&v(4096)), "u", "other").await);
        assert!(!cleartext_matches(None, "u", "pw").await);
        // A verifier asking for two billion rounds is refused at once, not derived.
        let mut huge = ScramSecret::from_password("pw", b"salt", 1);
        huge.iterations = 2_000_000_000;
        let huge = StoredPassword::Scram(huge);
        let check = cleartext_matches(Some(&huge), "u", "pw");
        let r = tokio::time::timeout(std::time::Duration::from_secs(5), check).await;
        assert_eq!(r, Ok(false));
    }
}
