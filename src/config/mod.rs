//! Configuration: a typed TOML schema, validated as a whole before anything binds a port, and
//! handed out as an immutable snapshot (`Arc<Loaded>`) that a reload replaces.

pub mod duration;
mod schema;
#[cfg(test)]
mod tests;
mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use duration::LagLimit;
pub use schema::*;

use crate::auth::{ScramSecret, ServerCredential, StoredPassword};

/// A configuration error: where it is and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// TOML syntax or schema error (unknown key, wrong type, bad duration); the message from
    /// the TOML parser names the line and the key.
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    /// A value that parses but is not acceptable.
    #[error("{origin}:{line}: {key}: {message}")]
    Invalid {
        origin: String,
        line: usize,
        key: String,
        message: String,
    },
}

/// A validated configuration plus what is derived from it once per load.
#[derive(Debug)]
pub struct Loaded {
    /// The parsed file.
    pub config: Config,
    /// `listen`, resolved.
    pub listen: SocketAddr,
    /// `http_listen`, resolved; `None` when disabled.
    pub http_listen: Option<SocketAddr>,
    /// `peering.listen`, resolved; `None` without `[peering]`.
    pub peer_listen: Option<SocketAddr>,
    /// Users by name, with their verifiers precomputed (SCRAM key derivation is slow on
    /// purpose, so it happens here and not per login).
    pub users: HashMap<String, Arc<User>>,
    /// `[tls]` loaded: the certificate and key clients negotiate with.
    pub tls: Option<Arc<crate::net::tls::ClientTls>>,
    /// `[server_tls]` loaded.
    pub server_tls: Arc<crate::net::tls::ServerTls>,
}

/// A configured user with derived secrets.
#[derive(Debug)]
pub struct User {
    /// The configuration entry.
    pub config: UserConfig,
    /// The login name.
    pub name: String,
    /// The client-facing password as stored.
    pub stored: StoredPassword,
    /// SCRAM verifier for client logins, when one can be derived.
    pub scram: Option<ScramSecret>,
    /// What the proxy logs in to the servers with as this user.
    pub server: ServerCredential,
    /// Looked up with `[auth_query]` at login, not configured.
    pub looked_up: bool,
}

impl User {
    /// A role looked up with `[auth_query]`, which its client proved it may log in as:
    /// `stored` is what the lookup returned, `server` what its login gave to log in to the
    /// servers with. Pool size and consistency are the defaults.
    pub fn looked_up(name: &str, stored: StoredPassword, server: ServerCredential) -> User {
        let auth = match stored {
            StoredPassword::Md5(_) => AuthMethod::Md5,
            _ => AuthMethod::ScramSha256,
        };
        User {
            config: UserConfig {
                name: toml::Spanned::new(0..0, name.to_owned()),
                password: None,
                auth,
                server_password: None,
                pool_size: None,
                consistency: None,
            },
            name: name.to_owned(),
            stored,
            scram: None,
            server,
            looked_up: true,
        }
    }

    /// The pool size for this user.
    pub fn pool_size(&self, pool: &PoolConfig) -> usize {
        self.config.pool_size.unwrap_or(pool.size)
    }
}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse(&text, &path.display().to_string())
}

/// Parses and validates config text; `origin` names it in errors.
pub fn parse(text: &str, origin: &str) -> Result<Loaded, ConfigError> {
    let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
        origin: origin.to_owned(),
        message: e.to_string().trim_end().to_owned(),
    })?;
    Validator { text, origin }.validate(config)
}

struct Validator<'a> {
    text: &'a str,
    origin: &'a str,
}

impl Validator<'_> {
    fn err(&self, span: std::ops::Range<usize>, key: &str, message: String) -> ConfigError {
        let line = if span.end == 0 {
            0
        } else {
            self.text[..span.start.min(self.text.len())]
                .matches('\n')
                .count()
                + 1
        };
        ConfigError::Invalid {
            origin: self.origin.to_owned(),
            line,
            key: key.to_owned(),
            message,
        }
    }

    /// An address to listen on: `IP:port`.
    fn socket_addr(
        &self,
        value: &toml::Spanned<String>,
        key: &str,
    ) -> Result<SocketAddr, ConfigError> {
        value.get_ref().parse::<SocketAddr>().map_err(|_| {
            self.err(
                value.span(),
                key,
                format!("{:?} is not an IP:port address", value.get_ref()),
            )
        })
    }

    fn validate(&self, config: Config) -> Result<Loaded, ConfigError> {
        let listen = self.socket_addr(&config.listen, "listen")?;
        let http_listen = match config.http_listen.get_ref().as_str() {
            "" => None,
            _ => Some(self.socket_addr(&config.http_listen, "http_listen")?),
        };
        self.validate_backends(&config)?;
        let users = self.validate_users(&config)?;
        let at_top = 0..0;
        let p = &config.pool;
        if p.size == 0 {
            return Err(self.err(at_top, "pool.size", "must be at least 1".into()));
        }
        if p.min_size > p.size {
            return Err(self.err(at_top, "pool.min_size", "must not exceed pool.size".into()));
        }
        if p.max_prepared_statements == 0 {
            return Err(self.err(
                at_top,
                "pool.max_prepared_statements",
                "must be at least 1".into(),
            ));
        }
        if config.max_client_connections == 0 {
            return Err(self.err(
                at_top,
                "max_client_connections",
                "must be at least 1".into(),
            ));
        }
        if config.max_message_size < 1024 {
            return Err(self.err(at_top, "max_message_size", "must be at least 1kB".into()));
        }
        let h = &config.health;
        if h.fall == 0 || h.rise == 0 {
            return Err(self.err(
                at_top,
                "health.fall",
                "fall and rise must be at least 1".into(),
            ));
        }
        if h.interval.is_zero() || h.timeout.is_zero() {
            return Err(self.err(
                at_top,
                "health.interval",
                "interval and timeout must be positive".into(),
            ));
        }
        if let Some(u) = &h.user {
            if h.password.is_none() && !users.contains_key(u) {
                return Err(self.err(
                    at_top,
                    "health.user",
                    format!("{u:?} is not a configured user and health.password is not set"),
                ));
            }
        }
        if let Some(a) = &config.auth_query {
            let name = a.user.get_ref();
            if !users.contains_key(name) {
                return Err(self.err(
                    a.user.span(),
                    "auth_query.user",
                    format!("{name:?} is not a configured user"),
                ));
            }
            if a.query.trim().is_empty() || !a.query.contains("$1") {
                return Err(self.err(
                    a.user.span(),
                    "auth_query.query",
                    "must take the role name as $1".into(),
                ));
            }
            if a.database.is_empty() {
                return Err(self.err(
                    a.user.span(),
                    "auth_query.database",
                    "must not be empty".into(),
                ));
            }
        }
        if let Some(a) = &config.admin {
            self.validate_admin(a, &users, config.auth_query.is_some())?;
        }
        let (tls, server_tls) = self.validate_tls(&config)?;
        let peer_listen = match &config.peering {
            Some(p) => Some(self.validate_peering(p, listen, http_listen)?),
            None => None,
        };
        Ok(Loaded {
            config,
            listen,
            http_listen,
            peer_listen,
            users,
            tls,
            server_tls,
        })
    }

    /// `[peering]`: its own address, not one of the other listeners', and the peers'.
    fn validate_peering(
        &self,
        p: &PeeringConfig,
        listen: SocketAddr,
        http_listen: Option<SocketAddr>,
    ) -> Result<SocketAddr, ConfigError> {
        let own = self.socket_addr(&p.listen, "peering.listen")?;
        // Two addresses on one port clash when either is a wildcard.
        let clash = |other: SocketAddr| {
            other.port() == own.port()
                && (other.ip() == own.ip()
                    || other.ip().is_unspecified()
                    || own.ip().is_unspecified())
        };
        if own.port() == 0 {
            return Err(self.err(
                p.listen.span(),
                "peering.listen",
                "needs a fixed port: the peers list it".into(),
            ));
        }
        if clash(listen) || http_listen.is_some_and(clash) {
            return Err(self.err(
                p.listen.span(),
                "peering.listen",
                format!("{own} is the port of `listen` or `http_listen`: the peers' cancel requests need a port of their own"),
            ));
        }
        for (i, peer) in p.peers.iter().enumerate() {
            check_host_port(peer.get_ref())
                .map_err(|m| self.err(peer.span(), "peering.peers", m))?;
            if p.peers[..i].iter().any(|q| q.get_ref() == peer.get_ref()) {
                return Err(self.err(
                    peer.span(),
                    "peering.peers",
                    format!("{:?} is listed twice", peer.get_ref()),
                ));
            }
        }
        Ok(own)
    }

    /// `[admin]`: its users must be able to log in (a configured user, or any role when
    /// `[auth_query]` looks passwords up).
    fn validate_admin(
        &self,
        a: &AdminConfig,
        users: &HashMap<String, Arc<User>>,
        looked_up: bool,
    ) -> Result<(), ConfigError> {
        if a.database.is_empty() {
            return Err(self.err(0..0, "admin.database", "must not be empty".into()));
        }
        for (key, names) in [
            ("admin.users", &a.users),
            ("admin.stats_users", &a.stats_users),
        ] {
            for n in names {
                let name = n.get_ref();
                if name.is_empty() || (!looked_up && !users.contains_key(name)) {
                    return Err(self.err(
                        n.span(),
                        key,
                        format!("{name:?} is not a configured user"),
                    ));
                }
            }
        }
        Ok(())
    }

    fn validate_backends(&self, config: &Config) -> Result<(), ConfigError> {
        if config.backends.is_empty() {
            return Err(self.err(
                0..0,
                "backends",
                "at least one [[backends]] entry is required".into(),
            ));
        }
        let mut names = HashMap::new();
        let mut addrs = HashMap::new();
        for b in &config.backends {
            let name = b.name.get_ref();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
            {
                return Err(self.err(
                    b.name.span(),
                    "backends.name",
                    format!(
                        "{name:?} must be non-empty and use only letters, digits, '_', '-', '.'"
                    ),
                ));
            }
            if names.insert(name.clone(), ()).is_some() {
                return Err(self.err(
                    b.name.span(),
                    "backends.name",
                    format!("duplicate backend name {name:?}"),
                ));
            }
            let addr = b.address.get_ref();
            if let Err(m) = check_host_port(addr) {
                return Err(self.err(b.address.span(), "backends.address", m));
            }
            if addrs.insert(addr.clone(), ()).is_some() {
                return Err(self.err(
                    b.address.span(),
                    "backends.address",
                    format!("duplicate backend address {addr:?}"),
                ));
            }
        }
        Ok(())
    }

    fn validate_users(&self, config: &Config) -> Result<HashMap<String, Arc<User>>, ConfigError> {
        if config.users.is_empty() {
            return Err(self.err(
                0..0,
                "users",
                "at least one [[users]] entry is required".into(),
            ));
        }
        let mut users = HashMap::new();
        for u in &config.users {
            let name = u.name.get_ref().clone();
            let span = u.name.span();
            if name.is_empty() {
                return Err(self.err(span, "users.name", "must not be empty".into()));
            }
            if users.contains_key(&name) {
                return Err(self.err(span, "users.name", format!("duplicate user {name:?}")));
            }
            let stored = StoredPassword::parse(u.password.as_deref().unwrap_or(""));
            let scram = match u.auth {
                AuthMethod::Trust => None,
                AuthMethod::Cert if config.tls.as_ref().is_some_and(|t| t.ca.is_some()) => None,
                AuthMethod::Cert => {
                    return Err(self.err(
                        span,
                        "users.auth",
                        format!(
                            "user {name:?}: auth = \"cert\" needs [tls] with `ca`, the authorities client certificates must chain to"
                        ),
                    ));
                }
                _ if u.password.is_none() => {
                    return Err(self.err(
                        span,
                        "users.password",
                        format!(
                            "user {name:?} needs a password unless auth = \"trust\" or \"cert\""
                        ),
                    ));
                }
                AuthMethod::Md5 if matches!(stored, StoredPassword::Scram(_)) => {
                    return Err(self.err(
                        span,
                        "users.auth",
                        format!(
                            "user {name:?}: md5 logins cannot be checked against a SCRAM verifier"
                        ),
                    ));
                }
                AuthMethod::Md5 => None,
                AuthMethod::ScramSha256 => match stored.scram_secret() {
                    Some(s) => Some(s),
                    None => {
                        return Err(self.err(span, "users.auth", format!("user {name:?}: SCRAM logins cannot be checked against an md5 hash; use auth = \"md5\"")));
                    }
                },
            };
            if u.pool_size == Some(0) {
                return Err(self.err(span, "users.pool_size", "must be at least 1".into()));
            }
            users.insert(
                name.clone(),
                Arc::new(User {
                    config: u.clone(),
                    name,
                    stored,
                    scram,
                    server: ServerCredential::from_password(u.server_password()),
                    looked_up: false,
                }),
            );
        }
        Ok(users)
    }
}

/// Checks `host:port` syntax (host may be a name, an IPv4 address or a bracketed IPv6 address).
fn check_host_port(addr: &str) -> Result<(), String> {
    if addr.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(format!("{addr:?} is not host:port"));
    };
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/' || c == ':') {
        return Err(format!("{addr:?} has an invalid host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("{addr:?} has an invalid port")),
    }
}

impl Loaded {
    /// Human summary for `switchyard check`.
    pub fn describe(&self) -> String {
        let c = &self.config;
        let mut s = String::new();
        use std::fmt::Write;
        let _ = writeln!(
            s,
            "listen {} (pool_mode {:?}{})",
            self.listen,
            c.pool_mode,
            if c.so_reuseport {
                ", so_reuseport: shared with other processes"
            } else {
                ""
            }
        );
        match self.http_listen {
            Some(a) => {
                let _ = writeln!(s, "http {a}: /metrics /livez /readyz /status");
            }
            None => s.push_str("http disabled\n"),
        }
        if let (Some(a), Some(p)) = (self.peer_listen, &c.peering) {
            let _ = writeln!(
                s,
                "peering {a}: cancel requests this process did not issue go to {} peer(s)",
                p.peers
                    .iter()
                    .filter(|x| !crate::peering::is_self(a, x.get_ref()))
                    .count()
            );
        }
        match &c.tls {
            Some(t) => {
                let _ = writeln!(
                    s,
                    "client TLS {:?} with certificate {}",
                    t.mode,
                    t.cert.get_ref()
                );
                if let Some(ca) = &t.ca {
                    let _ = writeln!(
                        s,
                        "client certificates {:?} from authorities in {}{}",
                        t.client_cert,
                        ca.get_ref(),
                        t.crl
                            .as_ref()
                            .map(|c| format!(", revocation lists in {}", c.get_ref()))
                            .unwrap_or_default()
                    );
                }
            }
            None => s.push_str("client TLS off (SSLRequest answered N)\n"),
        }
        let _ = writeln!(
            s,
            "server TLS {:?}{}{}",
            c.server_tls.mode,
            c.server_tls
                .cert
                .as_ref()
                .map(|c| format!(" presenting certificate {}", c.get_ref()))
                .unwrap_or_default(),
            match c.server_tls.binding() {
                ChannelBinding::Disable => ", without channel binding",
                ChannelBinding::Prefer => "",
                ChannelBinding::Require => ", channel binding required",
            }
        );
        match &c.admin {
            Some(a) => {
                let names = |v: &[toml::Spanned<String>]| {
                    v.iter()
                        .map(|n| n.get_ref().as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let _ = writeln!(
                    s,
                    "admin console: database {} (users: {}; stats users: {})",
                    a.database,
                    names(&a.users),
                    names(&a.stats_users)
                );
            }
            None => s.push_str("admin console off\n"),
        }
        for b in &c.backends {
            let _ = writeln!(
                s,
                "backend {} at {} (weight {}; role discovered by probing)",
                b.name.get_ref(),
                b.address.get_ref(),
                b.weight
            );
        }
        let mut names: Vec<_> = self.users.keys().collect();
        names.sort();
        for n in names {
            let u = &self.users[n];
            let _ = writeln!(
                s,
                "user {} auth {:?}, pool size {}",
                n,
                u.config.auth,
                u.pool_size(&c.pool)
            );
        }
        if let Some(a) = &c.auth_query {
            let _ = writeln!(
                s,
                "other roles: password looked up as user {} in database {}",
                a.user.get_ref(),
                a.database
            );
        }
        let _ = writeln!(
            s,
            "pools: size {} min {} checkout_timeout {:?} idle_timeout {:?} max_lifetime {:?} \
             max_prepared_statements {}",
            c.pool.size,
            c.pool.min_size,
            c.pool.checkout_timeout,
            c.pool.idle_timeout,
            c.pool.max_lifetime,
            c.pool.max_prepared_statements
        );
        if c.pool_mode == PoolMode::Session {
            let _ = writeln!(
                s,
                "session mode: {}",
                if c.pool.session_reuse {
                    "server connections recycled between clients (session_reuse)"
                } else {
                    "a fresh server session per client"
                }
            );
        }
        let _ = writeln!(
            s,
            "routing: split {} consistency {:?} max_replica_lag {} primary_reads {:?} balance {:?}",
            c.routing.read_write_split,
            c.routing.consistency,
            c.routing.max_replica_lag,
            c.routing.primary_reads,
            c.routing.balance
        );
        let _ = writeln!(
            s,
            "health: every {:?}, timeout {:?}, fall {} rise {}",
            c.health.interval, c.health.timeout, c.health.fall, c.health.rise
        );
        s
    }

    /// The credentials the health monitor uses: (user, password).
    pub fn monitor_credentials(&self) -> (String, Option<String>) {
        let h = &self.config.health;
        let user = h
            .user
            .clone()
            .unwrap_or_else(|| self.config.users[0].name.get_ref().clone());
        let password = h.password.clone().or_else(|| {
            self.users
                .get(&user)
                .and_then(|u| u.config.server_password().map(str::to_owned))
        });
        (user, password)
    }

    /// What a reload from `self` to `new` changes, one line each; settings that need a restart
    /// are flagged.
    pub fn diff(&self, new: &Loaded) -> Vec<String> {
        let (a, b) = (&self.config, &new.config);
        let mut out = Vec::new();
        if self.listen != new.listen
            || self.http_listen != new.http_listen
            || a.workers != b.workers
            || a.so_reuseport != b.so_reuseport
        {
            out.push(
                "listen/http_listen/workers/so_reuseport changed: takes effect after a restart"
                    .into(),
            );
        }
        if a.pool_mode != b.pool_mode {
            out.push(format!(
                "pool_mode {:?} -> {:?} (new clients)",
                a.pool_mode, b.pool_mode
            ));
        }
        if a.pool != b.pool {
            out.push("[pool] changed".into());
        }
        if a.health != b.health {
            out.push("[health] changed".into());
        }
        if a.routing != b.routing {
            out.push("[routing] changed".into());
        }
        if a.backends != b.backends {
            out.push("[[backends]] changed".into());
        }
        if a.auth_query != b.auth_query {
            out.push("[auth_query] changed".into());
        }
        if a.tls != b.tls {
            out.push("[tls] changed (new client connections)".into());
        } else if a.tls.is_some() {
            out.push("[tls] certificate files read again (new client connections)".into());
        }
        let peers = |c: &Config| c.peering.as_ref().map(|p| p.peers.clone());
        if self.peer_listen != new.peer_listen {
            out.push(
                "peering.listen changed: its listener after a restart (forwarding to peers: next cancel request)"
                    .into(),
            );
        } else if peers(a) != peers(b) {
            out.push("peering.peers changed (next cancel request)".into());
        }
        if a.admin != b.admin {
            out.push("[admin] changed (new console connections)".into());
        }
        if a.server_tls != b.server_tls {
            out.push("[server_tls] changed (new server connections)".into());
        }
        for (name, u) in &new.users {
            match self.users.get(name) {
                None => out.push(format!("user {name} added")),
                Some(old) if old.config != u.config => out.push(format!("user {name} changed")),
                _ => {}
            }
        }
        for name in self.users.keys() {
            if !new.users.contains_key(name) {
                out.push(format!("user {name} removed"));
            }
        }
        out
    }
}

/// Where `switchyard run` looks when `--config` is not given.
pub fn default_path() -> PathBuf {
    PathBuf::from("config/switchyard.toml")
}
