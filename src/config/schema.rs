//! The TOML schema. Every field is documented with its default; `config/switchyard.toml` is
//! the annotated example. Unknown keys are errors everywhere (`deny_unknown_fields`).

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::duration::{self, LagLimit};

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address clients connect to. Default `"127.0.0.1:6432"`.
    #[serde(default = "d::listen")]
    pub listen: Spanned<String>,
    /// Address of the HTTP endpoints (`/metrics`, `/livez`, `/readyz`, `/status`); `""`
    /// disables them. Default `"127.0.0.1:9930"`.
    #[serde(default = "d::http_listen")]
    pub http_listen: Spanned<String>,
    /// Directory of a Unix-domain socket clients may connect to as well,
    /// `.s.PGSQL.<port of listen>` (the file libpq looks for with `host=<dir>`). Default `""`:
    /// none. Changing it needs a restart.
    #[serde(default = "d::empty")]
    pub unix_socket_dir: Spanned<String>,
    /// Permissions of that socket file, in octal. Default `"0777"`.
    #[serde(default = "d::unix_socket_mode")]
    pub unix_socket_mode: Spanned<String>,
    /// Group owning that socket file, by name or number (with a mode like `"0770"`, only its
    /// members connect). Default `""`: the process's own group.
    #[serde(default = "d::empty")]
    pub unix_socket_group: Spanned<String>,
    /// A file in `pg_hba.conf` form that decides which clients may log in, from where, and
    /// with which method (it then replaces `[[users]] auth`). Read again on reload. Default:
    /// none (every `[[users]]` entry logs in from anywhere with its `auth`).
    #[serde(default)]
    pub hba_file: Option<Spanned<String>>,
    /// A file in `pg_ident.conf` form: the user-name maps `hba_file` lines name with `map=`.
    /// Read again on reload. Default: none (a `map=` option is then a configuration error).
    #[serde(default)]
    pub ident_file: Option<Spanned<String>>,
    /// `"transaction"` (default): a server connection is held only for a transaction.
    /// `"session"`: for the client's whole connection.
    #[serde(default)]
    pub pool_mode: PoolMode,
    /// Client connections admitted at once; more get SQLSTATE 53300. Default 10000.
    #[serde(default = "d::max_clients")]
    pub max_client_connections: usize,
    /// How long SIGTERM/SIGINT waits for in-flight transactions before closing. Default `"30s"`.
    #[serde(
        default = "d::shutdown_timeout",
        deserialize_with = "duration::deserialize"
    )]
    pub shutdown_timeout: Duration,
    /// A client must finish startup and authentication within this. Default `"10s"`.
    #[serde(
        default = "d::startup_timeout",
        deserialize_with = "duration::deserialize"
    )]
    pub startup_timeout: Duration,
    /// Largest client message buffered whole (bytes or `"64MB"`); COPY data, Bind parameters
    /// and the text of a long Query stream through regardless (see `streamable`). Default `"64MB"`.
    #[serde(
        default = "d::max_message_size",
        deserialize_with = "duration::deserialize_bytes"
    )]
    pub max_message_size: u64,
    /// Threads that run client connections. 1 (default): a single event loop, fastest when the
    /// proxy shares a small machine; N: a work-stealing pool of N threads; 0: one per CPU.
    /// Changing it needs a restart.
    #[serde(default = "d::workers")]
    pub workers: usize,
    /// SO_REUSEPORT on `listen` and `http_listen`: several switchyard processes may listen on
    /// the same address, the kernel spreading new connections among them (one per core; or a
    /// new version started beside the old, which then drains on SIGTERM). Default false: a
    /// second process on the same address fails to start. Changing it needs a restart.
    #[serde(default)]
    pub so_reuseport: bool,
    /// Server connection pools.
    #[serde(default)]
    pub pool: PoolConfig,
    /// Backend health checks.
    #[serde(default)]
    pub health: HealthConfig,
    /// Read/write routing.
    #[serde(default)]
    pub routing: RoutingConfig,
    /// The PostgreSQL servers. Roles are discovered, never configured.
    #[serde(default)]
    pub backends: Vec<BackendConfig>,
    /// Users clients may log in as.
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// Roles not in `[[users]]` log in with the password the servers have for them.
    /// Default: absent (only `[[users]]` log in).
    pub auth_query: Option<AuthQueryConfig>,
    /// TLS towards clients. Default: absent (SSLRequest is answered `N`).
    pub tls: Option<TlsConfig>,
    /// TLS towards the servers. Default: mode `"prefer"`.
    #[serde(default)]
    pub server_tls: ServerTlsConfig,
    /// The admin console. Default: absent (no console; every database name goes to the
    /// servers).
    pub admin: Option<AdminConfig>,
    /// Cancel requests shared with other switchyard processes. Default: absent (a cancel key
    /// this process did not issue is ignored).
    pub peering: Option<PeeringConfig>,
}

/// `[peering]`: several switchyard processes (one host with `so_reuseport`, or hosts behind a
/// load balancer) forward each other the cancel requests they cannot place. A cancel request
/// opens a new connection, which may reach another process than the one whose client sent the
/// query; a process that did not issue the key sends it to every peer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeeringConfig {
    /// This process's own `IP:port` for cancel requests from its peers (only those: nothing
    /// received there is forwarded again). Each process needs its own. Changing it needs a
    /// restart.
    pub listen: Spanned<String>,
    /// The peers' `peering.listen` addresses (`host:port`). This process's own may be among
    /// them (one list for every process); it is skipped. Default none.
    #[serde(default)]
    pub peers: Vec<Spanned<String>>,
}

/// `[admin]`: the admin console, reached by connecting to the database `database` with any
/// PostgreSQL client (`psql -d switchyard`, then `SHOW POOLS`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Users who may run every console command (`RELOAD`, `KILL` and the `SHOW`s). Default
    /// none.
    #[serde(default)]
    pub users: Vec<Spanned<String>>,
    /// Users who may run the `SHOW` commands only. Default none.
    #[serde(default)]
    pub stats_users: Vec<Spanned<String>>,
    /// The database name that means the console. Default `"switchyard"`.
    #[serde(default = "d::admin_database")]
    pub database: String,
}

/// What a console user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminAccess {
    /// `SHOW` only.
    Stats,
    /// Everything.
    Admin,
}

impl AdminConfig {
    /// What `user` may do on the console (`None`: it may not connect).
    pub fn access(&self, user: &str) -> Option<AdminAccess> {
        if self.users.iter().any(|u| u.get_ref() == user) {
            Some(AdminAccess::Admin)
        } else if self.stats_users.iter().any(|u| u.get_ref() == user) {
            Some(AdminAccess::Stats)
        } else {
            None
        }
    }
}

/// `[tls]`: clients may (or must) encrypt their connections. The files are read at start and
/// at every reload, so a renewed certificate takes effect with SIGHUP.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, the proxy's own certificate first. Required.
    pub cert: Spanned<String>,
    /// PEM private key of that certificate. Required.
    pub key: Spanned<String>,
    /// `"allow"` (default): clients choose; `"require"`: a client that does not ask for TLS is
    /// refused (28000). Cancel requests are taken either way.
    #[serde(default)]
    pub mode: ClientTlsMode,
    /// PEM file of the certificate authorities whose client certificates are accepted: when
    /// set, clients are asked for a certificate, and one that does not chain to these (or is
    /// revoked in `crl`) fails the handshake. Required by `client_cert` and `auth = "cert"`.
    pub ca: Option<Spanned<String>>,
    /// PEM file of certificate revocation lists for client certificates (needs `ca`).
    pub crl: Option<Spanned<String>>,
    /// Which clients must present a certificate from `ca`: `"optional"` (default: only users
    /// with `auth = "cert"`), `"verify-ca"` (every client), `"verify-full"` (every client,
    /// and its certificate's common name must be the user name).
    #[serde(default)]
    pub client_cert: ClientCertMode,
}

/// `[tls] client_cert`: PostgreSQL's `clientcert` option of `pg_hba.conf`, for every client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientCertMode {
    /// Asked for when `ca` is set, required only by `auth = "cert"`.
    #[default]
    Optional,
    /// Every client presents a certificate that chains to `ca`.
    VerifyCa,
    /// And its common name is the user name.
    VerifyFull,
}

/// Whether clients must use TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientTlsMode {
    /// Plain and TLS connections are both accepted.
    #[default]
    Allow,
    /// Only TLS connections may log in.
    Require,
}

/// `[server_tls]`: how the proxy's connections to the servers (pools and health checks) are
/// encrypted; the modes mean what libpq's `sslmode` means.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerTlsConfig {
    /// `"disable"`, `"prefer"` (default: TLS when the server offers it, unverified),
    /// `"require"` (TLS or no connection, unverified), `"verify-ca"` (the certificate must
    /// chain to `ca`), `"verify-full"` (and name the host of the backend's `address`).
    pub mode: ServerTlsMode,
    /// PEM file of the certificate authorities `verify-ca` and `verify-full` accept.
    pub ca: Option<Spanned<String>>,
    /// PEM certificate chain the proxy presents to servers that ask for a client certificate
    /// (`clientcert=verify-ca` in their `pg_hba.conf`); with `key`.
    pub cert: Option<Spanned<String>>,
    /// PEM private key of `cert`.
    pub key: Option<Spanned<String>>,
    /// SCRAM channel binding of the logins to servers over TLS (the pools' and the health
    /// probes'), as libpq's `channel_binding`: `"prefer"` (default: bind when the server
    /// offers SCRAM-SHA-256-PLUS), `"require"` (a server that does not prove it holds its
    /// certificate's key this way is not used) or `"disable"`.
    pub channel_binding: Option<Spanned<ChannelBinding>>,
}

impl ServerTlsConfig {
    /// `channel_binding` as given, or its default.
    pub fn binding(&self) -> ChannelBinding {
        self.channel_binding
            .as_ref()
            .map_or_else(ChannelBinding::default, |b| *b.get_ref())
    }
}

/// `[server_tls] channel_binding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelBinding {
    /// Bind when the server offers it.
    #[default]
    Prefer,
    /// Never bind.
    Disable,
    /// Only logins bound to the server's certificate: no login over plain text, nor one the
    /// server accepts without SCRAM-SHA-256-PLUS (trust, password, md5, unbound SCRAM).
    Require,
}

/// libpq's `sslmode` values that apply to a proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServerTlsMode {
    /// Never.
    Disable,
    /// When the server offers it.
    #[default]
    Prefer,
    /// Always, without checking the certificate.
    Require,
    /// Always, with a certificate from `ca`.
    VerifyCa,
    /// Always, with a certificate from `ca` for the backend's host name.
    VerifyFull,
}

/// `[auth_query]`: clients may log in as roles that are not in `[[users]]`. At each such login
/// the proxy looks the role's password up on the servers (as PgBouncer's `auth_user` and
/// `auth_query` do), checks the client against it, and logs in to the servers as that role
/// with what the client's login proved.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthQueryConfig {
    /// The `[[users]]` entry the proxy logs in as to run `query`. Required.
    pub user: Spanned<String>,
    /// The lookup, with the role name as `$1`: no row for an unknown role, else one row whose
    /// last column is the password as `pg_authid.rolpassword` stores it (NULL: no login).
    /// Default: `pg_authid`, which only a superuser may read; see the README for a
    /// `SECURITY DEFINER` function that other users may call.
    #[serde(default = "d::auth_query")]
    pub query: String,
    /// The database `query` runs in. Default `"postgres"`.
    #[serde(default = "d::auth_database")]
    pub database: String,
}

/// How long a client keeps a server connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// Per transaction (and per autocommit statement).
    #[default]
    Transaction,
    /// For the whole client session.
    Session,
}

/// `[pool]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Server connections per (backend, user, database). Default 20.
    pub size: usize,
    /// Connections kept open per pool even when idle. Default 0.
    pub min_size: usize,
    /// Longest wait for a server connection; then SQLSTATE 53300. Default `"5s"`.
    #[serde(deserialize_with = "duration::deserialize")]
    pub checkout_timeout: Duration,
    /// Idle server connections above `min_size` close after this. Default `"10m"`.
    #[serde(deserialize_with = "duration::deserialize")]
    pub idle_timeout: Duration,
    /// Server connections are replaced after this age (when idle). Default `"1h"`.
    #[serde(deserialize_with = "duration::deserialize")]
    pub max_lifetime: Duration,
    /// TCP connect plus server authentication must finish within this. Default `"5s"`.
    #[serde(deserialize_with = "duration::deserialize")]
    pub connect_timeout: Duration,
    /// TCP keepalive idle time on server and client sockets. Default `"30s"`.
    #[serde(deserialize_with = "duration::deserialize")]
    pub tcp_keepalive: Duration,
    /// Run on a server connection before another client gets it, when the previous client
    /// left session state behind (pinned clients; session mode with `session_reuse`).
    /// Default `"DISCARD ALL"`.
    pub reset_query: String,
    /// Hand a server connection that held one client's session (session mode, or a client
    /// pinned in transaction mode) to the next client after `reset_query`. Off by default:
    /// such a connection is closed when its client leaves, so each session-mode client gets
    /// a server session nobody else used (connections opened ahead by `min_size` included),
    /// exactly as if it had connected directly; a reused one still differs in what `DISCARD
    /// ALL` cannot reset (loaded libraries, the temporary schema, session statistics).
    /// Default `false`.
    pub session_reuse: bool,
    /// Proxy-wide prepared statements kept on one server connection; past it the least
    /// recently used one is closed there (and prepared again when a client uses it).
    /// Default `200`.
    pub max_prepared_statements: usize,
    /// Transaction pooling gives a client its own server connection back while nobody else
    /// needs it, so server-session state no proxy can move (`currval`, a C function's static
    /// variables, `pg_backend_pid()`) stays with it. `false`: the most recently used idle
    /// connection, whoever used it, as PgBouncer does: can be faster for short reads on a busy
    /// host (fewer server processes take turns, so PostgreSQL runs in warmer CPU caches).
    /// Default `true`.
    pub affinity: bool,
}

/// `[health]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Time between probes of each backend. Default `"1s"`.
    #[serde(deserialize_with = "duration::deserialize")]
    pub interval: Duration,
    /// A probe (connect plus query) slower than this fails. Default `"1s"`.
    #[serde(deserialize_with = "duration::deserialize")]
    pub timeout: Duration,
    /// Consecutive failed probes that mark a backend down. Default 3.
    pub fall: u32,
    /// Consecutive good probes that mark it up (and confirm a role change). Default 2.
    pub rise: u32,
    /// User the monitor logs in as. Default: the first `[[users]]` entry.
    pub user: Option<String>,
    /// Its password. Default: that user's `server_password` or `password`.
    pub password: Option<String>,
    /// Database the monitor connects to. Default `"postgres"`.
    pub database: String,
}

/// `[routing]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// Send reads to replicas. Default true.
    pub read_write_split: bool,
    /// Replicas further behind than this take no reads: a time (`"10s"`) or WAL bytes
    /// (`"16MB"`, or an integer). Default `"10s"`.
    pub max_replica_lag: LagLimit,
    /// Whether the primary serves reads. Default `"fallback"`.
    pub primary_reads: PrimaryReads,
    /// Default consistency of reads. Default `"read_your_writes"`.
    pub consistency: Consistency,
    /// Whose writes a read must see under read_your_writes. Default `"user"`.
    pub ryw_scope: RywScope,
    /// How long a read waits for a replica to replay a needed write before going to the
    /// primary. Default `"20ms"`.
    #[serde(deserialize_with = "duration::deserialize")]
    pub ryw_wait: Duration,
    /// Replica selection. Default `"least_outstanding"`.
    pub balance: Balance,
    /// Functions that write (added to the built-in list). Default empty.
    pub write_functions: Vec<String>,
    /// Functions known to be read-only, overriding the write list. Default empty.
    pub read_functions: Vec<String>,
    /// How long a write waits for a primary to appear before failing. Default `"5s"`.
    #[serde(deserialize_with = "duration::deserialize")]
    pub primary_wait: Duration,
}

/// `routing.primary_reads`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrimaryReads {
    /// Only when no replica is eligible.
    #[default]
    Fallback,
    /// Always one of the read targets.
    Include,
    /// Never for load; reads fail when no replica is eligible. A read-your-writes read no
    /// replica has replayed the client's write for within `ryw_wait` still runs there.
    Never,
}

/// A consistency level for reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    /// Reads see every write committed earlier in the scope.
    #[default]
    ReadYourWrites,
    /// Any replica within the lag limit.
    Eventual,
    /// Reads on the primary.
    Primary,
}

/// `routing.ryw_scope`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RywScope {
    /// All connections of the same user.
    #[default]
    User,
    /// The client connection only.
    Session,
    /// Every write through this proxy.
    Global,
}

/// `routing.balance`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Fewest in-flight requests, ties at random.
    #[default]
    LeastOutstanding,
    /// In turn.
    RoundRobin,
    /// At random, by weight.
    Random,
}

/// `[[backends]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// Unique name, used in logs and metrics.
    pub name: Spanned<String>,
    /// `host:port`.
    pub address: Spanned<String>,
    /// Relative share of reads. Default 1.
    #[serde(default = "d::weight")]
    pub weight: u32,
}

/// How clients authenticate as a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum AuthMethod {
    /// SCRAM-SHA-256 (default).
    #[default]
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    /// MD5 challenge-response.
    #[serde(rename = "md5")]
    Md5,
    /// No password.
    #[serde(rename = "trust")]
    Trust,
    /// A TLS client certificate from `[tls] ca` whose common name is the user name, and no
    /// password (PostgreSQL's `cert` method).
    #[serde(rename = "cert")]
    Cert,
}

/// `[[users]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// Login name, also used to log in to the servers.
    pub name: Spanned<String>,
    /// Password clients must give: plain text, or a PostgreSQL `md5…`/`SCRAM-SHA-256$…`
    /// verifier. Required unless `auth = "trust"` or `"cert"`.
    pub password: Option<String>,
    /// `"scram-sha-256"` (default), `"md5"`, `"trust"` or `"cert"`.
    #[serde(default)]
    pub auth: AuthMethod,
    /// Password for the servers, when it differs or `password` is a verifier.
    pub server_password: Option<String>,
    /// This user's pool size, overriding `pool.size`.
    pub pool_size: Option<usize>,
    /// This user's read consistency, overriding `routing.consistency`.
    pub consistency: Option<Consistency>,
}

impl UserConfig {
    /// The clear-text password the proxy uses towards servers, if any: `server_password`,
    /// else `password` unless that is an md5 hash or a SCRAM verifier (never sent as a
    /// password: a server asking for one in clear text would learn the verifier, and no
    /// server takes it).
    pub fn server_password(&self) -> Option<&str> {
        self.server_password
            .as_deref()
            .or(self.password.as_deref().filter(|p| {
                matches!(
                    crate::auth::StoredPassword::parse(p),
                    crate::auth::StoredPassword::Plain(_)
                )
            }))
    }
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            size: 20,
            min_size: 0,
            checkout_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            connect_timeout: Duration::from_secs(5),
            tcp_keepalive: Duration::from_secs(30),
            reset_query: "DISCARD ALL".into(),
            session_reuse: false,
            max_prepared_statements: 200,
            affinity: true,
        }
    }
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            fall: 3,
            rise: 2,
            user: None,
            password: None,
            database: "postgres".into(),
        }
    }
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            read_write_split: true,
            max_replica_lag: LagLimit::Time(Duration::from_secs(10)),
            primary_reads: PrimaryReads::default(),
            consistency: Consistency::default(),
            ryw_scope: RywScope::default(),
            ryw_wait: Duration::from_millis(20),
            balance: Balance::default(),
            write_functions: Vec::new(),
            read_functions: Vec::new(),
            primary_wait: Duration::from_secs(5),
        }
    }
}

/// Defaults that serde needs as functions.
mod d {
    use super::*;

    pub fn admin_database() -> String {
        "switchyard".into()
    }

    pub fn auth_query() -> String {
        "SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END \
         FROM pg_catalog.pg_authid WHERE rolname = $1 AND rolcanlogin"
            .into()
    }
    pub fn auth_database() -> String {
        "postgres".into()
    }

    pub fn listen() -> Spanned<String> {
        Spanned::new(0..0, "127.0.0.1:6432".into())
    }
    pub fn http_listen() -> Spanned<String> {
        Spanned::new(0..0, "127.0.0.1:9930".into())
    }
    /// An empty string (`unix_socket_dir`, `unix_socket_group`: none).
    pub fn empty() -> Spanned<String> {
        Spanned::new(0..0, String::new())
    }
    pub fn unix_socket_mode() -> Spanned<String> {
        Spanned::new(0..0, "0777".into())
    }
    pub fn max_clients() -> usize {
        10_000
    }
    pub fn shutdown_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn startup_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn max_message_size() -> u64 {
        64 << 20
    }
    pub fn weight() -> u32 {
        1
    }
    pub fn workers() -> usize {
        1
    }
}
