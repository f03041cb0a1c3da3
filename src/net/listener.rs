//! Where clients come from: the TCP address `listen`, or the Unix-domain socket switchyard
//! makes in `unix_socket_dir` at start (`.s.PGSQL.<port>`, the name libpq looks for) and
//! removes when it exits.

use std::fmt;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::{UnixListener, UnixStream};

use super::server_addr::socket_path;

/// A client's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Tcp(std::net::SocketAddr),
    /// A Unix-domain socket (shown as PostgreSQL logs it).
    Unix,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Tcp(a) => a.fmt(f),
            Peer::Unix => f.write_str("[local]"),
        }
    }
}

/// The listening Unix-domain socket; its file goes with it (unless another process has
/// replaced the file since).
#[derive(Debug)]
pub struct UnixSocket {
    listener: UnixListener,
    path: PathBuf,
    /// The file's (device, inode), to remove only our own.
    file: (u64, u64),
}

impl UnixSocket {
    /// Makes `dir/.s.PGSQL.<port>` with permissions `mode`. A socket file left there by a
    /// process that died (nothing accepts on it) is replaced; one that a live process
    /// listens on, or a file that is not a socket, is an error.
    pub fn bind(dir: &Path, port: u16, mode: u32) -> io::Result<UnixSocket> {
        let path = socket_path(dir, port);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if !m.file_type().is_socket() => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ));
            }
            Ok(_) => match std::os::unix::net::UnixStream::connect(&path) {
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!("another process listens on {}", path.display()),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    match std::fs::remove_file(&path) {
                        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                        _ => tracing::info!(path = %path.display(), "removed a stale socket file"),
                    }
                }
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("{} exists and cannot be checked: {e}", path.display()),
                    ));
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = UnixListener::bind(&path)?;
        let made = (|| {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
            std::fs::metadata(&path)
        })();
        let meta = match made {
            Ok(m) => m,
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
        };
        Ok(UnixSocket {
            listener,
            path,
            file: (meta.dev(), meta.ino()),
        })
    }

    /// The socket file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next client.
    pub async fn accept(&self) -> io::Result<UnixStream> {
        self.listener.accept().await.map(|(s, _)| s)
    }
}

impl Drop for UnixSocket {
    fn drop(&mut self) {
        let ours =
            std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.file);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_socket_file_is_made_replaced_when_stale_and_removed() {
        let dir = std::env::temp_dir().join(format!("sy-unix-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = socket_path(&dir, 7);

        let first = UnixSocket::bind(&dir, 7, 0o770).unwrap();
        assert_eq!(first.path(), path);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o770);
        // A live listener keeps its file.
        let e = UnixSocket::bind(&dir, 7, 0o777).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
        assert!(path.exists());
        // A socket left behind without a listener (a process that was killed) is replaced.
        let stale = std::os::unix::net::UnixListener::bind(socket_path(&dir, 8)).unwrap();
        drop(stale);
        assert!(socket_path(&dir, 8).exists());
        let second = UnixSocket::bind(&dir, 8, 0o777).unwrap();
        drop(second);
        assert!(!socket_path(&dir, 8).exists());
        // A file that is not a socket is never removed.
        std::fs::write(socket_path(&dir, 9), b"keep").unwrap();
        assert!(UnixSocket::bind(&dir, 9, 0o777).is_err());
        assert_eq!(std::fs::read(socket_path(&dir, 9)).unwrap(), b"keep");
        // A file replaced under a listener is not removed with it.
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"new").unwrap();
        drop(first);
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
