//! One probe of one backend over its own tokio-postgres connection.

use std::time::Duration;

use tokio_postgres::config::{SslMode, SslNegotiation};
use tokio_postgres::Client;

use super::health::Observation;
use super::lag::parse_lsn;
use crate::config::ChannelBinding;
use crate::net::server_addr::OpenError;
use crate::net::Stream;

/// How the monitor logs in.
#[derive(Debug, Clone)]
pub struct ProbeTarget {
    pub address: String,
    pub user: String,
    pub password: Option<String>,
    pub database: String,
    pub timeout: Duration,
    /// `[server_tls]`, as the pools use it.
    pub tls: std::sync::Arc<crate::net::tls::ServerTls>,
}

const PROBE_SQL: &str = "SELECT pg_is_in_recovery(), \
    CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END, \
    pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text, \
    CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END, \
    (SELECT status FROM pg_stat_wal_receiver LIMIT 1), \
    CASE WHEN pg_is_in_recovery() \
        THEN (SELECT received_tli FROM pg_stat_wal_receiver LIMIT 1) \
        ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END, \
    (extract(epoch FROM pg_last_xact_replay_timestamp()) * 1000)::bigint, \
    (extract(epoch FROM pg_postmaster_start_time()) * 1000000)::bigint";

/// Why a probe brought back no observation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeError {
    /// The server did not answer in time, refused the monitor, or answered wrongly: counts
    /// toward `fall`.
    Failed(String),
    /// The server answered, but had no connection slot for the monitor (53300: clients,
    /// the pools among them, fill `max_connections` or the role's connection limit). It is
    /// up: its state stays as last seen.
    Full(String),
    /// The server answered, but refused the monitor's login: its credentials, its database
    /// or its right to connect (28000, 28P01, 3D000, 42501), which a reload or a password
    /// changed on the server alone can make wrong. That is the configuration's fault, not
    /// the server's: it stays as last seen, its connections uncut, for as long as it lasts.
    Refused(String),
}

impl ProbeError {
    /// Every [`ProbeError::kind`].
    pub const KINDS: [&'static str; 3] = ["failed", "full", "login_refused"];

    /// The reason, for the log.
    pub fn reason(&self) -> &str {
        match self {
            ProbeError::Failed(r) | ProbeError::Full(r) | ProbeError::Refused(r) => r,
        }
    }

    /// Its kind, as `probe_errors_total` labels it.
    pub fn kind(&self) -> &'static str {
        match self {
            ProbeError::Failed(_) => Self::KINDS[0],
            ProbeError::Full(_) => Self::KINDS[1],
            ProbeError::Refused(_) => Self::KINDS[2],
        }
    }
}

/// A failed connect: why, and whether the server refused it for lack of connection slots.
#[derive(Debug)]
pub struct ConnectError {
    pub reason: String,
    pub full: bool,
    /// The server refused the login itself (see [`ProbeError::Refused`]).
    pub refused: bool,
}

impl From<ConnectError> for String {
    fn from(e: ConnectError) -> String {
        e.reason
    }
}

/// An error with its causes (tokio-postgres's own message is only the kind: "error
/// performing TLS handshake", "db error").
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// tokio-postgres learns a connection's channel-binding data only from its TLS connector,
/// while the probes' TLS is switchyard's own (the handshake the pools make, with `prefer`'s
/// fallback to plain text). This connector hands the finished stream over as it is: with
/// [`SslNegotiation::Direct`] tokio-postgres takes it without sending an SSLRequest first,
/// and reads the server certificate's hash from it to bind its SCRAM login.
struct Negotiated;

impl tokio_postgres::tls::TlsConnect<Stream> for Negotiated {
    type Stream = Stream;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Stream, std::convert::Infallible>>;

    fn connect(self, stream: Stream) -> Self::Future {
        std::future::ready(Ok(stream))
    }
}

impl tokio_postgres::tls::TlsStream for Stream {
    fn channel_binding(&self) -> tokio_postgres::tls::ChannelBinding {
        // Without a hash (no TLS, or a certificate whose signature algorithm has none:
        // Ed25519, RSA-PSS), tokio-postgres would answer a SCRAM-SHA-256-PLUS offer with an
        // unbound login, which a man in the middle relaying the exchange passes on; libpq
        // (and the pools, see `Binding::choose`) refuse it. Given a binding no certificate
        // matches, tokio-postgres takes the offer and the server refuses the login; a server
        // that offers no PLUS logs it in as before.
        tokio_postgres::tls::ChannelBinding::tls_server_end_point(
            self.server_end_point().unwrap_or_default(),
        )
    }
}

/// Opens the monitor's connection the way the pools open theirs (TLS as `[server_tls]`
/// says, `prefer` falling back to plain text after a failed handshake), then logs in with
/// tokio-postgres over it, with the pools' channel binding.
pub async fn connect(target: &ProbeTarget) -> Result<Connected, ConnectError> {
    let failed = |reason: String| ConnectError {
        reason,
        full: false,
        refused: false,
    };
    let nodelay = |tcp: &tokio::net::TcpStream| {
        let _ = tcp.set_nodelay(true);
    };
    let (stream, _) = crate::net::server_addr::open_server(&target.address, &target.tls, nodelay)
        .await
        .map_err(|e| match e {
            OpenError::Connect(e) => failed(format!("error connecting to server: {e}")),
            OpenError::Tls(e) => failed(with_causes(&e)),
        })?;
    let mut cfg = tokio_postgres::Config::new();
    cfg.user(&target.user)
        .dbname(&target.database)
        .application_name("switchyard-monitor")
        // A standby refuses every query when the default isolation is serializable
        // (`ALTER DATABASE ... SET default_transaction_isolation`, replicated to it): the
        // probes would find every replica down.
        .options("-c default_transaction_isolation=read\\ committed")
        .ssl_mode(if stream.is_tls() {
            SslMode::Require
        } else {
            SslMode::Disable
        })
        .ssl_negotiation(SslNegotiation::Direct)
        .channel_binding(match target.tls.channel_binding {
            ChannelBinding::Prefer => tokio_postgres::config::ChannelBinding::Prefer,
            ChannelBinding::Disable => tokio_postgres::config::ChannelBinding::Disable,
            ChannelBinding::Require => tokio_postgres::config::ChannelBinding::Require,
        });
    if let Some(p) = &target.password {
        cfg.password(p);
    }
    let (client, conn) = cfg.connect_raw(stream, Negotiated).await.map_err(|e| {
        use tokio_postgres::error::SqlState;
        let code = e.code();
        ConnectError {
            full: code == Some(&SqlState::TOO_MANY_CONNECTIONS),
            refused: code.is_some_and(|c| {
                c.code().starts_with("28")
                    || *c == SqlState::INVALID_CATALOG_NAME
                    || *c == SqlState::INSUFFICIENT_PRIVILEGE
            }),
            reason: with_causes(&e),
        }
    })?;
    let task = tokio::spawn(async move {
        let _ = conn.await;
    })
    .abort_handle();
    Ok(Connected { client, task })
}

/// A prober that keeps its connection between probes.
pub struct Prober {
    target: ProbeTarget,
    client: Option<Connected>,
}

/// The monitor's connection to one backend. Dropping it closes the socket at once, even with
/// a probe in flight on a server that stopped answering (tokio-postgres' connection task
/// would otherwise wait for that answer for as long as the socket stays open).
pub struct Connected {
    client: Client,
    task: tokio::task::AbortHandle,
}

impl Connected {
    pub fn client(&self) -> &Client {
        &self.client
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Prober {
    pub fn new(target: ProbeTarget) -> Prober {
        Prober {
            target,
            client: None,
        }
    }

    /// Probes once.
    pub async fn probe(&mut self) -> Result<Observation, ProbeError> {
        let rows = self.query(PROBE_SQL, &[]).await?;
        let row = rows
            .first()
            .ok_or_else(|| ProbeError::Failed("the probe returned no row".to_owned()))?;
        let in_recovery: bool = row.get(0);
        let lsn = |i: usize| {
            row.get::<_, Option<String>>(i)
                .as_deref()
                .and_then(parse_lsn)
        };
        let obs = Observation {
            primary: !in_recovery,
            timeline: row.get::<_, Option<i32>>(6).map(|t| t as u32),
            current_lsn: lsn(1),
            receive_lsn: lsn(2),
            replay_lsn: lsn(3),
            replay_paused: row.get(4),
            receiver_streaming: row.get::<_, Option<String>>(5).as_deref() == Some("streaming"),
            last_replay_ms: row.get(7),
            started_us: row.get(8),
        };
        Ok(obs)
    }

    /// Runs `sql` with text parameters on this connection (opened first when there is none),
    /// within the probe timeout. After a failure the connection is closed, and the next call
    /// opens another.
    pub async fn query(
        &mut self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, ProbeError> {
        let timeout = self.target.timeout;
        let run = async {
            if self.client.as_ref().is_none_or(|c| c.client.is_closed()) {
                self.client = Some(connect(&self.target).await.map_err(|e| {
                    if e.full {
                        ProbeError::Full(e.reason)
                    } else if e.refused {
                        ProbeError::Refused(e.reason)
                    } else {
                        ProbeError::Failed(e.reason)
                    }
                })?);
            }
            let client = &self.client.as_ref().expect("connected").client;
            client
                .query(sql, params)
                .await
                .map_err(|e| ProbeError::Failed(with_causes(&e)))
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(Ok(rows)) => Ok(rows),
            Ok(Err(e)) => {
                self.client = None;
                Err(e)
            }
            Err(_) => {
                self.client = None;
                Err(ProbeError::Failed(format!("timed out after {timeout:?}")))
            }
        }
    }

    /// The server this prober connects to, as whom and how.
    pub fn target(&self) -> &ProbeTarget {
        &self.target
    }
}
