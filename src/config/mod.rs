//! Configuration: a typed TOML schema, validated as a whole before anything binds a port, and
//! handed out as an immutable snapshot (`Arc<Loaded>`) that a reload replaces.

pub mod duration;
mod schema;
#[cfg(test)]
mod tests;
mod tls;
mod validate;

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
    #[error("{origin}{}: {key}: {message}", on_line(.line))]
    Invalid {
        origin: String,
        /// 0: written nowhere (a required entry that is missing).
        line: usize,
        key: String,
        message: String,
    },
}

/// `:line`, or nothing for line 0 (nowhere).
fn on_line(line: &usize) -> String {
    match line {
        0 => String::new(),
        n => format!(":{n}"),
    }
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
    /// `unix_socket_dir`, `unix_socket_mode` and `unix_socket_group`; `None` when there is no
    /// socket.
    pub unix_socket: Option<UnixSocketSpec>,
    /// `hba_file`, read and parsed.
    pub hba: Option<Arc<crate::auth::hba::Hba>>,
    /// `ident_file`, read and parsed.
    pub ident: Option<Arc<crate::auth::ident::IdentMap>>,
    /// Users by name, with their verifiers precomputed (SCRAM key derivation is slow on
    /// purpose, so it happens here and not per login).
    pub users: HashMap<String, Arc<User>>,
    /// `[tls]` loaded: the certificate and key clients negotiate with.
    pub tls: Option<Arc<crate::net::tls::ClientTls>>,
    /// `[server_tls]` loaded.
    pub server_tls: Arc<crate::net::tls::ServerTls>,
}

/// The Unix-domain socket clients may connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixSocketSpec {
    /// The directory of `.s.PGSQL.<port>`.
    pub dir: std::path::PathBuf,
    /// The socket file's permissions.
    pub mode: u32,
    /// The group id owning it; `None`: the process's.
    pub group: Option<u32>,
}

/// A configured user with derived secrets.
#[derive(Debug, Clone)]
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
    validate::Validator::new(text, origin).validate(config)
}

impl Loaded {
    /// Keeps what a reload cannot change, as it runs (the listeners, the worker threads), so
    /// that what the configuration in effect says (`SHOW CONFIG`) is true until a restart.
    /// Call after [`Loaded::diff`], which reports the changes that wait for it.
    pub fn keep_restart_only(&mut self, old: &Loaded) {
        self.listen = old.listen;
        self.http_listen = old.http_listen;
        self.peer_listen = old.peer_listen;
        self.unix_socket.clone_from(&old.unix_socket);
        self.config.workers = old.config.workers;
        self.config.so_reuseport = old.config.so_reuseport;
    }

    /// Keeps the SCRAM verifiers `old` derived for the users whose password is unchanged.
    /// Each load derives a clear-text password's verifier with a fresh random salt: a salt
    /// that changed at every reload, while an unknown user's (the mock exchange's) never
    /// does, would tell which users exist, as it never changes in PostgreSQL either.
    pub fn keep_verifiers(&mut self, old: &Loaded) {
        for (name, user) in self.users.iter_mut() {
            let Some(was) = old.users.get(name) else {
                continue;
            };
            if was.config.password == user.config.password
                && was.scram.is_some()
                && user.scram.is_some()
            {
                let mut kept = User::clone(user);
                kept.scram = was.scram.clone();
                *user = Arc::new(kept);
            }
        }
    }

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
        if let Some(u) = &self.unix_socket {
            let path = match self.listen.port() {
                0 => format!("{}/.s.PGSQL.<the port listen gets>", u.dir.display()),
                port => crate::net::server_addr::socket_path(&u.dir, port)
                    .display()
                    .to_string(),
            };
            let group = u.group.map(|g| format!(", group {g}")).unwrap_or_default();
            let _ = writeln!(s, "unix socket {path} (mode {:04o}{group})", u.mode);
        }
        if let (Some(h), Some(path)) = (&self.hba, &c.hba_file) {
            let _ = writeln!(
                s,
                "client access decided by {} ({} rule(s))",
                path.get_ref(),
                h.len()
            );
            if h.uses_roles() {
                let _ = writeln!(
                    s,
                    "  +role/samerole lines: role membership read at login as {} ([health] user)",
                    self.monitor_credentials().0
                );
            }
        }
        if let (Some(path), Some(i)) = (&c.ident_file, &self.ident) {
            let _ = writeln!(s, "user-name maps (map=) from {}", path.get_ref());
            if i.uses_roles() {
                let _ = writeln!(
                    s,
                    "  +role map lines: role membership read at login as {} ([health] user)",
                    self.monitor_credentials().0
                );
            }
        }
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
             max_prepared_statements {} affinity {}",
            c.pool.size,
            c.pool.min_size,
            c.pool.checkout_timeout,
            c.pool.idle_timeout,
            c.pool.max_lifetime,
            c.pool.max_prepared_statements,
            c.pool.affinity
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
        let restart_only: Vec<&str> = [
            ("listen", self.listen != new.listen),
            ("http_listen", self.http_listen != new.http_listen),
            (
                "unix_socket_dir/unix_socket_mode/unix_socket_group",
                self.unix_socket != new.unix_socket,
            ),
            ("workers", a.workers != b.workers),
            ("so_reuseport", a.so_reuseport != b.so_reuseport),
        ]
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect();
        if !restart_only.is_empty() {
            out.push(format!(
                "{} changed: takes effect after a restart (SHOW CONFIG shows what runs)",
                restart_only.join(", ")
            ));
        }
        if a.pool_mode != b.pool_mode {
            out.push(format!(
                "pool_mode {:?} -> {:?} (new clients)",
                a.pool_mode, b.pool_mode
            ));
        }
        for (key, changed, when) in [
            (
                "max_client_connections",
                a.max_client_connections != b.max_client_connections,
                "new logins and the peering port's limit",
            ),
            (
                "startup_timeout",
                a.startup_timeout != b.startup_timeout,
                "new connections",
            ),
            (
                "shutdown_timeout",
                a.shutdown_timeout != b.shutdown_timeout,
                "the next drain or PAUSE",
            ),
            (
                "max_message_size",
                a.max_message_size != b.max_message_size,
                "new clients",
            ),
        ] {
            if changed {
                out.push(format!("{key} changed ({when})"));
            }
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
            let changes = backend_changes(&a.backends, &b.backends);
            if changes.is_empty() {
                out.push("[[backends]] order changed".into());
            }
            out.extend(changes);
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
        if a.hba_file != b.hba_file {
            out.push("hba_file changed (new logins)".into());
        } else if self.hba != new.hba {
            out.push("hba_file rules changed (new logins)".into());
        }
        if a.ident_file != b.ident_file {
            out.push("ident_file changed (new logins)".into());
        } else if self.ident != new.ident {
            out.push("ident_file maps changed (new logins)".into());
        }
        if a.admin != b.admin {
            out.push("[admin] changed (console logins and open console sessions)".into());
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

/// Each backend a reload adds, removes, renames (the same address under another name), moves
/// (the same name at another address) or weighs differently, one line each.
fn backend_changes(old: &[BackendConfig], new: &[BackendConfig]) -> Vec<String> {
    let name = |b: &BackendConfig| b.name.get_ref().clone();
    let address = |b: &BackendConfig| b.address.get_ref().clone();
    let mut out = Vec::new();
    for b in new {
        let (n, at) = (name(b), address(b));
        match old.iter().find(|o| name(o) == n) {
            Some(o) if address(o) != at => {
                out.push(format!("backend {n} moved from {} to {at}", address(o)));
            }
            Some(o) if o.weight != b.weight => {
                out.push(format!("backend {n} weight {} -> {}", o.weight, b.weight));
            }
            Some(_) => {}
            None => match old
                .iter()
                .find(|o| address(o) == at && !new.iter().any(|x| name(x) == name(o)))
            {
                Some(o) => out.push(format!("backend {} renamed to {n} ({at})", name(o))),
                None => out.push(format!("backend {n} added ({at})")),
            },
        }
    }
    for o in old {
        let (n, at) = (name(o), address(o));
        let kept = new.iter().any(|b| name(b) == n);
        let renamed = new
            .iter()
            .any(|b| address(b) == at && !old.iter().any(|x| name(x) == name(b)));
        if !kept && !renamed {
            out.push(format!("backend {n} removed ({at})"));
        }
    }
    out
}
