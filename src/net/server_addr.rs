//! Where a server listens, as a backend's `address` names it: `host:port` over TCP, or the
//! directory of a Unix-domain socket with an optional `:port`, as libpq reads `host=/dir
//! port=N` (the socket is `/dir/.s.PGSQL.N`, port 5432 when none is given).

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tokio::net::{TcpStream, UnixStream};

use super::tls::{ServerTls, TlsConnectError};
use super::Stream;

/// PostgreSQL's port when a socket directory names none.
pub const DEFAULT_PORT: u16 = 5432;

/// Longest socket path the kernel takes (`sun_path` holds 108 bytes, NUL included).
pub const MAX_SOCKET_PATH: usize = 107;

/// A parsed backend address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint<'a> {
    /// `host:port`; `host` is what TLS checks (`verify-full`).
    Tcp { address: &'a str, host: &'a str },
    /// The socket file itself.
    Unix(PathBuf),
}

/// The socket file PostgreSQL (and switchyard's `unix_socket_dir`) makes for `port` in `dir`.
pub fn socket_path(dir: &Path, port: u16) -> PathBuf {
    dir.join(format!(".s.PGSQL.{port}"))
}

impl<'a> Endpoint<'a> {
    /// Reads a backend address; the error says what is wrong with it.
    pub fn parse(address: &'a str) -> Result<Endpoint<'a>, String> {
        if address.starts_with('/') {
            // A directory may hold ':' itself: only digits after the last one are a port.
            let (dir, port) = match address.rsplit_once(':') {
                Some((dir, port))
                    if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) =>
                {
                    match port.parse::<u16>() {
                        Ok(p) if p > 0 => (dir, p),
                        _ => return Err(format!("{address:?} has an invalid port")),
                    }
                }
                _ => (address, DEFAULT_PORT),
            };
            let path = socket_path(Path::new(dir), port);
            if path.as_os_str().len() > MAX_SOCKET_PATH {
                return Err(format!(
                    "{address:?}: the socket path {path:?} is longer than {MAX_SOCKET_PATH} bytes"
                ));
            }
            return Ok(Endpoint::Unix(path));
        }
        if address.starts_with('@') {
            // (libpq reads `@name` as a socket in the abstract namespace.)
            return Err(format!(
                "{address:?}: abstract unix sockets (@name) are not supported; give the server a \
                 socket directory (unix_socket_directories) or a TCP address"
            ));
        }
        if let Ok(a) = address.parse::<SocketAddr>() {
            if a.port() == 0 {
                return Err(format!("{address:?} has an invalid port"));
            }
            let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
            return Ok(Endpoint::Tcp { address, host });
        }
        let Some((host, port)) = address.rsplit_once(':') else {
            return Err(format!(
                "{address:?} is not host:port (or a socket directory, starting with '/')"
            ));
        };
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/' || c == ':') {
            return Err(format!("{address:?} has an invalid host"));
        }
        match port.parse::<u16>() {
            Ok(p) if p > 0 => Ok(Endpoint::Tcp { address, host }),
            _ => Err(format!("{address:?} has an invalid port")),
        }
    }
}

/// Why [`open_server`] failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// No connection: refused, unreachable, no such socket.
    #[error("{0}")]
    Connect(io::Error),
    /// Connected, but TLS could not be set up as `[server_tls]` asks.
    #[error(transparent)]
    Tls(TlsConnectError),
}

/// Opens a connection to the server at `address`. Over TCP, `tune` is applied to each socket
/// and TLS is set up as `[server_tls]` says (`prefer` falling back to plain text on a new
/// connection after a failed handshake; the `bool` says it fell back). Over a Unix-domain
/// socket the connection is never encrypted: libpq ignores `sslmode` there, and PostgreSQL
/// refuses TLS on one.
pub async fn open_server(
    address: &str,
    tls: &ServerTls,
    tune: impl Fn(&TcpStream),
) -> Result<(Stream, bool), OpenError> {
    let endpoint = Endpoint::parse(address)
        .map_err(|m| OpenError::Connect(io::Error::new(io::ErrorKind::InvalidInput, m)))?;
    match endpoint {
        Endpoint::Unix(path) => {
            let s = UnixStream::connect(path)
                .await
                .map_err(OpenError::Connect)?;
            Ok((Stream::Unix(s), false))
        }
        Endpoint::Tcp { address, host } => {
            let open = || async {
                let tcp = TcpStream::connect(address).await?;
                tune(&tcp);
                Ok(tcp)
            };
            let tcp = open().await.map_err(OpenError::Connect)?;
            tls.connect_or_fall_back(tcp, host, open)
                .await
                .map_err(OpenError::Tls)
        }
    }
}

/// Connects to `address` without TLS (a cancel request: PostgreSQL reads one unencrypted).
pub async fn open_plain(address: &str) -> io::Result<Stream> {
    match Endpoint::parse(address).map_err(|m| io::Error::new(io::ErrorKind::InvalidInput, m))? {
        Endpoint::Unix(path) => Ok(Stream::Unix(UnixStream::connect(path).await?)),
        Endpoint::Tcp { address, .. } => Ok(Stream::Plain(TcpStream::connect(address).await?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix(p: &str) -> Endpoint<'static> {
        Endpoint::Unix(PathBuf::from(p))
    }

    #[test]
    fn socket_directories_take_libpq_port_rules() {
        assert_eq!(
            Endpoint::parse("/run/postgresql"),
            Ok(unix("/run/postgresql/.s.PGSQL.5432"))
        );
        assert_eq!(Endpoint::parse("/tmp:5433"), Ok(unix("/tmp/.s.PGSQL.5433")));
        // A ':' inside the directory is part of it unless digits follow the last one.
        assert_eq!(
            Endpoint::parse("/srv/a:b"),
            Ok(unix("/srv/a:b/.s.PGSQL.5432"))
        );
        assert_eq!(
            Endpoint::parse("/srv/a:b:6000"),
            Ok(unix("/srv/a:b/.s.PGSQL.6000"))
        );
        assert!(Endpoint::parse("/tmp:0")
            .unwrap_err()
            .contains("invalid port"));
        assert!(Endpoint::parse("/tmp:70000")
            .unwrap_err()
            .contains("invalid port"));
        let long = format!("/{}", "d".repeat(100));
        assert!(Endpoint::parse(&long)
            .unwrap_err()
            .contains("longer than 107"));
    }

    #[test]
    fn tcp_addresses_name_their_host() {
        assert_eq!(
            Endpoint::parse("db.example:5432"),
            Ok(Endpoint::Tcp {
                address: "db.example:5432",
                host: "db.example"
            })
        );
        assert_eq!(
            Endpoint::parse("[::1]:5432"),
            Ok(Endpoint::Tcp {
                address: "[::1]:5432",
                host: "[::1]"
            })
        );
        for bad in [
            "localhost",
            "a b:1",
            ":5432",
            "h:0",
            "h:x",
            "h/x:1",
            "relative/dir",
            "@abstract:5432",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
