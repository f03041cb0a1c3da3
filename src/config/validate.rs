//! Checks a parsed configuration and builds what the proxy runs from ([`Loaded`]): every error
//! names its key and line.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;

use toml_edit::{ImDocument, Item, Key, TableLike, Value};

use super::*;

pub(super) struct Validator<'a> {
    pub(super) text: &'a str,
    pub(super) origin: &'a str,
    /// The text as the TOML parser reads it, with the place of every key.
    doc: Option<ImDocument<&'a str>>,
}

impl<'a> Validator<'a> {
    pub(super) fn new(text: &'a str, origin: &'a str) -> Self {
        let doc = ImDocument::parse(text).ok();
        Validator { text, origin, doc }
    }

    pub(super) fn err(&self, span: Range<usize>, key: &str, message: String) -> ConfigError {
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

    /// Where a key without a span of its own is written, for [`err`](Self::err) to name its
    /// line: `key` in `table` (`""`: the top level), else the line that opens the table (a
    /// value taken from defaults), else nowhere (`0..0`). Found in the document as the TOML
    /// parser read it, so inline tables (`pool = { size = 0 }`) and dotted keys
    /// (`pool.size = 0`) are found too.
    pub(super) fn key_at(&self, table: &str, key: &str) -> Range<usize> {
        let Some(root) = self.doc.as_ref().map(|d| d.as_table()) else {
            return 0..0;
        };
        if table.is_empty() {
            return root.key(key).and_then(Key::span).unwrap_or(0..0);
        }
        let Some((name, item)) = root.get_key_value(table) else {
            return 0..0;
        };
        item.as_table_like()
            .and_then(|t| t.key(key))
            .and_then(Key::span)
            .or_else(|| name.span())
            .unwrap_or(0..0)
    }

    /// Where `key` is written in the `[[users]]` entry whose name is at `name` (else the name's
    /// line).
    fn user_key_at(&self, name: Range<usize>, key: &str) -> Range<usize> {
        let users = self.doc.as_ref().and_then(|d| d.as_table().get("users"));
        let entries: Vec<&dyn TableLike> = match users {
            Some(Item::ArrayOfTables(a)) => a.iter().map(|t| t as &dyn TableLike).collect(),
            Some(Item::Value(Value::Array(a))) => a
                .iter()
                .filter_map(|v| v.as_inline_table().map(|t| t as &dyn TableLike))
                .collect(),
            _ => Vec::new(),
        };
        entries
            .into_iter()
            .find(|t| t.get("name").and_then(Item::span) == Some(name.clone()))
            .and_then(|t| t.key(key))
            .and_then(Key::span)
            .unwrap_or(name)
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

    pub(super) fn validate(&self, config: Config) -> Result<Loaded, ConfigError> {
        let listen = self.socket_addr(&config.listen, "listen")?;
        let http_listen = match config.http_listen.get_ref().as_str() {
            "" => None,
            _ => Some(self.socket_addr(&config.http_listen, "http_listen")?),
        };
        if let Some(h) = http_listen {
            // (Port 0: each gets a port of its own. An unspecified IPv6 address takes IPv4 too.)
            let any_of = |a: SocketAddr, b: SocketAddr| {
                a.ip().is_unspecified() && (a.is_ipv6() || b.is_ipv4())
            };
            let clash = h.port() == listen.port()
                && h.port() != 0
                && (h.ip() == listen.ip() || any_of(h, listen) || any_of(listen, h));
            if clash {
                // (With so_reuseport both would bind, and the kernel would split connections
                // between the two.)
                return Err(self.err(
                    config.http_listen.span(),
                    "http_listen",
                    format!(
                        "{h} is the port of `listen`: the HTTP endpoints need a port of their own"
                    ),
                ));
            }
        }
        let unix_socket = self.validate_unix_socket(&config, listen.port())?;
        let hba = match &config.hba_file {
            Some(path) => Some(Arc::new(self.read_hba(path)?)),
            None => None,
        };
        self.validate_backends(&config)?;
        let users = self.validate_users(&config)?;
        let p = &config.pool;
        let at = |table: &str, key: &str| self.key_at(table, key);
        if p.size == 0 {
            return Err(self.err(at("pool", "size"), "pool.size", "must be at least 1".into()));
        }
        if p.min_size > p.size {
            return Err(self.err(
                at("pool", "min_size"),
                "pool.min_size",
                "must not exceed pool.size".into(),
            ));
        }
        if p.max_prepared_statements == 0 {
            return Err(self.err(
                at("pool", "max_prepared_statements"),
                "pool.max_prepared_statements",
                "must be at least 1".into(),
            ));
        }
        if p.connect_timeout.is_zero() {
            // (Every server connection and the proxy's own queries would fail at once.)
            return Err(self.err(
                at("pool", "connect_timeout"),
                "pool.connect_timeout",
                "must be positive".into(),
            ));
        }
        if p.checkout_timeout.is_zero() {
            // (Every checkout that has to wait would fail at once; PgBouncer's 0 for its
            // `query_wait_timeout` means no limit, which a reader of the file may expect.)
            return Err(self.err(
                at("pool", "checkout_timeout"),
                "pool.checkout_timeout",
                "must be positive (0 would fail every wait for a connection at once; there is no \
                 \"no limit\")"
                    .into(),
            ));
        }
        if config.startup_timeout.is_zero() {
            // (Every client would time out before its startup packet.)
            return Err(self.err(
                at("", "startup_timeout"),
                "startup_timeout",
                "must be positive".into(),
            ));
        }
        if !(1..=10_000_000).contains(&config.max_client_connections) {
            return Err(self.err(
                at("", "max_client_connections"),
                "max_client_connections",
                "must be from 1 to 10,000,000".into(),
            ));
        }
        if config.max_message_size < 1024 {
            return Err(self.err(
                at("", "max_message_size"),
                "max_message_size",
                "must be at least 1kB".into(),
            ));
        }
        if config.workers > 1024 {
            // (Each is an operating-system thread, started at once.)
            return Err(self.err(
                at("", "workers"),
                "workers",
                "must be from 0 to 1024".into(),
            ));
        }
        if p.reset_query.trim().is_empty() {
            return Err(self.err(
                at("pool", "reset_query"),
                "pool.reset_query",
                "must not be empty: it cleans a server session before another client gets it"
                    .into(),
            ));
        }
        if p.tcp_keepalive > std::time::Duration::from_secs(32_767) {
            // (Linux refuses a longer idle time, and the kernel's default, 2 h, would apply.)
            return Err(self.err(
                at("pool", "tcp_keepalive"),
                "pool.tcp_keepalive",
                "must be at most 32767s (9h 6m 7s), the longest idle time Linux takes".into(),
            ));
        }
        let h = &config.health;
        for (key, zero) in [
            ("fall", h.fall == 0),
            ("rise", h.rise == 0),
            ("interval", h.interval.is_zero()),
            ("timeout", h.timeout.is_zero()),
        ] {
            if zero {
                let what = if key == "fall" || key == "rise" {
                    "must be at least 1"
                } else {
                    "must be positive"
                };
                return Err(self.err(at("health", key), &format!("health.{key}"), what.into()));
            }
        }
        for (key, empty) in [
            ("user", h.user.as_deref() == Some("")),
            ("database", h.database.is_empty()),
        ] {
            if empty {
                return Err(self.err(
                    at("health", key),
                    &format!("health.{key}"),
                    "must not be empty".into(),
                ));
            }
        }
        if let Some(u) = &h.user {
            if u.len() > NAME_MAX {
                return Err(self.err(at("health", "user"), "health.user", too_long(u)));
            }
            if h.password.is_none() && !users.contains_key(u) {
                return Err(self.err(
                    at("health", "user"),
                    "health.user",
                    format!("{u:?} is not a configured user and health.password is not set"),
                ));
            }
        }
        let monitor = h.user.as_ref().unwrap_or(config.users[0].name.get_ref());
        let monitor_password = h.password.is_some()
            || users
                .get(monitor)
                .is_some_and(|u| u.config.server_password().is_some());
        if !monitor_password {
            tracing::warn!(
                user = %monitor,
                "the health monitor has no password to log in with: set [health] password, or the user's server_password (its password is a SCRAM verifier, or it has none); a server that asks for one refuses every probe, and the backends are taken down"
            );
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
                    at("auth_query", "query"),
                    "auth_query.query",
                    "must take the role name as $1".into(),
                ));
            }
            if a.database.is_empty() {
                return Err(self.err(
                    at("auth_query", "database"),
                    "auth_query.database",
                    "must not be empty".into(),
                ));
            }
        }
        if let Some(a) = &config.admin {
            self.validate_admin(a, &users, config.auth_query.is_some())?;
        }
        let (tls, server_tls) = self.validate_tls(&config)?;
        if let (Some(h), Some(path)) = (&hba, &config.hba_file) {
            let has_ca = config.tls.as_ref().is_some_and(|t| t.ca.is_some());
            if let Some(at) = h.cert_line().filter(|_| !has_ca) {
                return Err(self.err(
                    path.span(),
                    "hba_file",
                    format!(
                        "{}: cert authentication needs [tls] with `ca`, the authorities client certificates must chain to",
                        at.in_file(path.get_ref())
                    ),
                ));
            }
        }
        let ident = match &config.ident_file {
            Some(path) => Some(Arc::new(self.read_ident(path)?)),
            None => None,
        };
        if let (Some(h), Some(path)) = (&hba, &config.hba_file) {
            for (at, map) in h.maps() {
                match &ident {
                    None => {
                        return Err(self.err(
                            path.span(),
                            "hba_file",
                            format!(
                                "{}: map={map} needs `ident_file`, the file of user-name maps",
                                at.in_file(path.get_ref())
                            ),
                        ))
                    }
                    Some(i) if !i.has_map(map) => tracing::warn!(
                        hba_file = %path.get_ref(),
                        line = %at,
                        map,
                        "ident_file has no line for this map: it lets nobody in"
                    ),
                    Some(_) => {}
                }
            }
        }
        let peer_listen = match &config.peering {
            Some(p) => Some(self.validate_peering(p, listen, http_listen)?),
            None => None,
        };
        Ok(Loaded {
            config,
            listen,
            http_listen,
            peer_listen,
            unix_socket,
            hba,
            ident,
            users,
            tls,
            server_tls,
        })
    }

    /// Reads and parses `ident_file`; an error names the file's line.
    fn read_ident(
        &self,
        path: &toml::Spanned<String>,
    ) -> Result<crate::auth::ident::IdentMap, ConfigError> {
        crate::auth::ident::IdentMap::read(std::path::Path::new(path.get_ref()))
            .map_err(|e| self.file_error(path, "ident_file", e))
    }

    /// Reads and parses `hba_file`; an error names the file's line.
    fn read_hba(&self, path: &toml::Spanned<String>) -> Result<crate::auth::hba::Hba, ConfigError> {
        crate::auth::hba::Hba::read(std::path::Path::new(path.get_ref()))
            .map_err(|e| self.file_error(path, "hba_file", e))
    }

    /// The error of a file a key names: its line (0: the file could not be read) and what.
    fn file_error(
        &self,
        path: &toml::Spanned<String>,
        key: &str,
        (line, m): (usize, String),
    ) -> ConfigError {
        let at = match line {
            0 => format!("cannot read {:?}: {m}", path.get_ref()),
            n => format!("{}:{n}: {m}", path.get_ref()),
        };
        self.err(path.span(), key, at)
    }

    /// `unix_socket_dir` (absolute, short enough for a socket path), `unix_socket_mode` and
    /// `unix_socket_group` (a group that exists, or a number, as PostgreSQL reads it).
    fn validate_unix_socket(
        &self,
        config: &Config,
        port: u16,
    ) -> Result<Option<super::UnixSocketSpec>, ConfigError> {
        let mode = config.unix_socket_mode.get_ref();
        let mode = u32::from_str_radix(mode, 8)
            .ok()
            .filter(|m| *m <= 0o777 && !mode.is_empty() && mode.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| {
                self.err(
                    config.unix_socket_mode.span(),
                    "unix_socket_mode",
                    format!("{mode:?} is not a file mode in octal, like \"0777\" or \"0770\""),
                )
            })?;
        let group = config.unix_socket_group.get_ref();
        let group = match group.parse::<u32>() {
            _ if group.is_empty() => None,
            Ok(gid) => Some(gid),
            Err(_) => match crate::net::os_group_id(group) {
                Ok(Some(gid)) => Some(gid),
                Ok(None) => {
                    return Err(self.err(
                        config.unix_socket_group.span(),
                        "unix_socket_group",
                        format!("group {group:?} does not exist"),
                    ))
                }
                Err(e) => {
                    return Err(self.err(
                        config.unix_socket_group.span(),
                        "unix_socket_group",
                        format!("could not look up group {group:?}: {e}"),
                    ))
                }
            },
        };
        let dir = config.unix_socket_dir.get_ref();
        if dir.is_empty() {
            return Ok(None);
        }
        let bad = |m: String| self.err(config.unix_socket_dir.span(), "unix_socket_dir", m);
        if dir.starts_with('@') {
            return Err(bad(format!(
                "{dir:?}: abstract unix sockets (@name) are not supported; give a directory"
            )));
        }
        if !dir.starts_with('/') {
            return Err(bad(format!("{dir:?} is not an absolute path")));
        }
        // The port as bound: any when `listen` says 0.
        let port = if port == 0 { u16::MAX } else { port };
        let longest = crate::net::server_addr::socket_path(dir.as_ref(), port);
        if longest.as_os_str().len() > crate::net::server_addr::MAX_SOCKET_PATH {
            return Err(bad(format!(
                "{dir:?} is too long: the socket path {} would exceed {} bytes",
                longest.display(),
                crate::net::server_addr::MAX_SOCKET_PATH
            )));
        }
        Ok(Some(super::UnixSocketSpec {
            dir: dir.into(),
            mode,
            group,
        }))
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
            // The clients' port (or the HTTP one) listed as a peer: cancel requests forwarded
            // there would be forwarded again, as a client's are.
            let listener = peer
                .get_ref()
                .parse::<SocketAddr>()
                .is_ok_and(|a| a == listen || Some(a) == http_listen);
            if listener {
                return Err(self.err(
                    peer.span(),
                    "peering.peers",
                    format!(
                        "{:?} is this process's `listen` or `http_listen`: peers are listed by their `peering.listen`",
                        peer.get_ref()
                    ),
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
            return Err(self.err(
                self.key_at("admin", "database"),
                "admin.database",
                "must not be empty".into(),
            ));
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
            // The same server named twice: one socket written with and without its port.
            let same = match crate::net::server_addr::Endpoint::parse(addr) {
                Err(m) => return Err(self.err(b.address.span(), "backends.address", m)),
                Ok(crate::net::server_addr::Endpoint::Unix(path)) => path.display().to_string(),
                Ok(crate::net::server_addr::Endpoint::Tcp { address, .. }) => address.to_owned(),
            };
            if addrs.insert(same, ()).is_some() {
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
            if name.len() > NAME_MAX {
                return Err(self.err(span, "users.name", too_long(&name)));
            }
            let stored = StoredPassword::parse(u.password.as_deref().unwrap_or(""));
            // With `hba_file` its lines choose the method of each login, so `auth` says
            // nothing: every password that can check a SCRAM login gets a verifier.
            let by_hba = config.hba_file.is_some();
            let scram = match u.auth {
                _ if by_hba => u.password.as_ref().and_then(|_| stored.scram_secret()),
                AuthMethod::Trust => None,
                AuthMethod::Cert if config.tls.as_ref().is_some_and(|t| t.ca.is_some()) => None,
                AuthMethod::Cert => {
                    return Err(self.err(
                        self.user_key_at(span, "auth"),
                        "users.auth",
                        format!(
                            "user {name:?}: auth = \"cert\" needs [tls] with `ca`, the authorities client certificates must chain to"
                        ),
                    ));
                }
                _ if u.password.is_none() => {
                    return Err(self.err(
                        self.user_key_at(span, "auth"),
                        "users.password",
                        format!(
                            "user {name:?} needs a password unless auth = \"trust\" or \"cert\""
                        ),
                    ));
                }
                // (No password at all: nothing could prove it, as PostgreSQL's `''`.)
                _ if u.password.as_deref() == Some("") => {
                    return Err(self.err(
                        self.user_key_at(span, "password"),
                        "users.password",
                        format!(
                            "user {name:?}: an empty password is no password; give one, or auth = \"trust\" or \"cert\""
                        ),
                    ));
                }
                AuthMethod::Md5 if matches!(stored, StoredPassword::Scram(_)) => {
                    return Err(self.err(
                        self.user_key_at(span, "password"),
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
                        return Err(self.err(self.user_key_at(span, "password"), "users.auth", format!("user {name:?}: SCRAM logins cannot be checked against an md5 hash; use auth = \"md5\"")));
                    }
                },
            };
            if u.pool_size == Some(0) {
                return Err(self.err(
                    self.user_key_at(span, "pool_size"),
                    "users.pool_size",
                    "must be at least 1".into(),
                ));
            }
            // An md5 hash answers the servers' md5 requests as it is; a SCRAM verifier answers
            // nothing (`server_password` is needed then, unless the servers trust the user).
            let server = match (&u.server_password, &stored) {
                (None, StoredPassword::Md5(hex)) => ServerCredential::Md5(hex.clone()),
                _ => ServerCredential::from_password(u.server_password()),
            };
            users.insert(
                name.clone(),
                Arc::new(User {
                    config: u.clone(),
                    name,
                    stored,
                    scram,
                    server,
                    looked_up: false,
                }),
            );
        }
        Ok(users)
    }
}

/// Checks `host:port` syntax (host may be a name, an IPv4 address or a bracketed IPv6 address).
/// The longest role name PostgreSQL keeps (NAMEDATALEN - 1 bytes).
const NAME_MAX: usize = 63;

fn too_long(name: &str) -> String {
    format!(
        "{name:?} is {} bytes long: PostgreSQL keeps role names to 63 bytes, and cuts a client's \
         to that before it looks for it, so it could never log in",
        name.len()
    )
}

fn check_host_port(addr: &str) -> Result<(), String> {
    if let Ok(a) = addr.parse::<SocketAddr>() {
        return match a.port() {
            0 => Err(format!("{addr:?} has an invalid port")),
            _ => Ok(()),
        };
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
