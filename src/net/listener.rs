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
/// replaced the file since), and so does its lock file.
#[derive(Debug)]
pub struct UnixSocket {
    listener: UnixListener,
    path: PathBuf,
    /// The file's (device, inode), to remove only our own.
    file: (u64, u64),
    /// Dropped after the socket file is removed.
    _lock: LockFile,
}

impl UnixSocket {
    /// Makes `dir/.s.PGSQL.<port>` with permissions `mode` (and owned by group `group`, when
    /// given), holding `.s.PGSQL.<port>.lock` as
    /// PostgreSQL does (its process id on the first line): a live process holding it, a
    /// PostgreSQL server included, is an error; a lock left by a process that died is taken
    /// over, and then so is its socket file. A file there that is not a socket is an error.
    pub fn bind(dir: &Path, port: u16, mode: u32, group: Option<u32>) -> io::Result<UnixSocket> {
        let path = socket_path(dir, port);
        let mut lock = path.clone().into_os_string();
        lock.push(".lock");
        let lock = LockFile::take(PathBuf::from(lock))?;
        match std::fs::symlink_metadata(&path) {
            Ok(m) if !m.file_type().is_socket() => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ));
            }
            Ok(_) => {
                // The lock is ours, but a process that keeps none (PgBouncer, an older
                // switchyard) may still accept on the file: never displace one.
                if accepts(&path)? {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!("another process listens on {}", path.display()),
                    ));
                }
                match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => tracing::info!(path = %path.display(), "removed a stale socket file"),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        // Bind, set the group and the mode, then listen: no client connects before they hold.
        let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
        socket.bind(&socket2::SockAddr::unix(&path)?)?;
        let ready = (|| {
            if let Some(gid) = group {
                std::os::unix::fs::chown(&path, None, Some(gid)).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!(
                            "could not set the group of {} to {gid}: {e}",
                            path.display()
                        ),
                    )
                })?;
            }
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
            let meta = std::fs::metadata(&path)?;
            socket.listen(1024)?;
            socket.set_nonblocking(true)?;
            Ok::<_, io::Error>(meta)
        })();
        let meta = match ready {
            Ok(m) => m,
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
        };
        let listener = UnixListener::from_std(std::os::unix::net::UnixListener::from(socket))?;
        Ok(UnixSocket {
            listener,
            path,
            file: (meta.dev(), meta.ino()),
            _lock: lock,
        })
    }

    /// The socket file.
    /// Sets the socket file's and the lock file's times to now, as PostgreSQL does every 58
    /// minutes, so that a cleaner of old files in `/tmp` leaves them alone.
    pub fn touch(&self) {
        for p in [&self.path, &self._lock.path] {
            let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) else {
                continue;
            };
            // SAFETY: a NUL-terminated path; null times mean now.
            let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), std::ptr::null(), 0) };
            if rc != 0 {
                tracing::debug!(path = %p.display(), error = %io::Error::last_os_error(), "could not touch the unix socket's file");
            }
        }
    }

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

/// A socket's lock file, in PostgreSQL's form: the holder's process id on the first line
/// (PostgreSQL refuses a socket whose lock a live process holds, and so does switchyard).
#[derive(Debug)]
struct LockFile {
    path: PathBuf,
}

impl LockFile {
    fn take(path: PathBuf) -> io::Result<LockFile> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let own = std::process::id() as i32;
        // Twice at most: once more after removing a stale lock.
        for _ in 0..2 {
            let created = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path);
            match created {
                Ok(mut f) => {
                    let written = writeln!(f, "{own}").and_then(|_| f.sync_all());
                    if let Err(e) = written {
                        let _ = std::fs::remove_file(&path);
                        return Err(e);
                    }
                    return Ok(LockFile { path });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                // Gone meanwhile: try again.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("cannot read the lock file {}: {e}", path.display()),
                    ))
                }
            };
            match text.lines().next().map(|l| l.trim().parse::<i32>()) {
                Some(Ok(pid)) if pid > 0 && !ancestors(own).contains(&pid) && alive(pid) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!(
                            "another process (PID {pid}) holds {}: is another switchyard or PostgreSQL using this socket?",
                            path.display()
                        ),
                    ));
                }
                Some(Ok(pid)) if pid > 0 => {
                    // Its holder is gone (or it is this very process's, left from before).
                    match std::fs::remove_file(&path) {
                        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                        _ => {
                            tracing::info!(path = %path.display(), pid, "removed a stale lock file")
                        }
                    }
                }
                _ => {
                    // Empty or garbled: maybe a process writing it right now (PostgreSQL
                    // refuses such a file too).
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!(
                            "{} holds no process id: remove it if no process is starting on this socket",
                            path.display()
                        ),
                    ));
                }
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{} keeps being taken by another process", path.display()),
        ))
    }
}

impl Drop for LockFile {
    fn drop(&mut self) {
        let own = std::process::id().to_string();
        let ours = std::fs::read_to_string(&self.path)
            .is_ok_and(|t| t.lines().next().map(str::trim) == Some(own.as_str()));
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Whether something accepts connections on the socket file `path`, asked without blocking
/// (a listener whose queue is full counts).
fn accepts(path: &Path) -> io::Result<bool> {
    let probe = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
    probe.set_nonblocking(true)?;
    match probe.connect(&socket2::SockAddr::unix(path)?) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(true),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("{} exists and cannot be checked: {e}", path.display()),
        )),
    }
}

/// Whether process `pid` exists (a process of another user counts: signalling it is merely
/// not permitted), as PostgreSQL checks a lock file's holder.
/// This process and its parent: a lock file naming either is stale, as PostgreSQL judges it
/// (in a container restarted with the same process ids, the process that wrote it is gone
/// and its id now names this process or the one that started it).
fn ancestors(own: i32) -> [i32; 2] {
    // SAFETY: getppid cannot fail.
    [own, unsafe { libc::getppid() }]
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock_of(dir: &Path, port: u16) -> PathBuf {
        dir.join(format!(".s.PGSQL.{port}.lock"))
    }

    #[tokio::test]
    async fn socket_and_lock_files_are_made_taken_over_when_stale_and_removed() {
        let dir = std::env::temp_dir().join(format!("sy-unix-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = socket_path(&dir, 7);

        let first = UnixSocket::bind(&dir, 7, 0o770, None).unwrap();
        assert_eq!(first.path(), path);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o770);
        let own = format!("{}\n", std::process::id());
        assert_eq!(std::fs::read_to_string(lock_of(&dir, 7)).unwrap(), own);

        // A lock a live process holds (a child of this one stands for another switchyard,
        // or PostgreSQL) stops a bind, and nothing of its holder's is touched.
        let mut other = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        std::fs::write(
            lock_of(&dir, 8),
            format!("{}\n/some/data/dir\n", other.id()),
        )
        .unwrap();
        let held = std::os::unix::net::UnixListener::bind(socket_path(&dir, 8)).unwrap();
        let e = UnixSocket::bind(&dir, 8, 0o777, None).unwrap_err();
        let _ = other.kill();
        let _ = other.wait();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
        assert!(
            e.to_string()
                .contains(&format!("(PID {}) holds", other.id())),
            "{e}"
        );
        assert!(socket_path(&dir, 8).exists());
        drop(held);

        // A lock of a process that is gone is taken over, and its socket file replaced.
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let gone_pid = gone.id();
        gone.wait().unwrap();
        std::fs::write(lock_of(&dir, 8), format!("{gone_pid}\n")).unwrap();
        let second = UnixSocket::bind(&dir, 8, 0o777, None).unwrap();
        assert_eq!(std::fs::read_to_string(lock_of(&dir, 8)).unwrap(), own);
        drop(second);
        assert!(!socket_path(&dir, 8).exists());
        assert!(!lock_of(&dir, 8).exists());

        // A lock naming this process's parent is stale, as PostgreSQL judges it (a container
        // restarted with the same process ids).
        for pid in &ancestors(std::process::id() as i32)[1..] {
            assert!(alive(*pid), "{pid}");
            std::fs::write(lock_of(&dir, 13), format!("{pid}\n")).unwrap();
            let third = UnixSocket::bind(&dir, 13, 0o777, None)
                .unwrap_or_else(|e| panic!("a lock naming an ancestor ({pid}): {e}"));
            assert_eq!(std::fs::read_to_string(lock_of(&dir, 13)).unwrap(), own);
            drop(third);
        }

        // A listener that keeps no lock (PgBouncer, an older switchyard) is not displaced
        // either, and the lock taken for the check is given back.
        let other = std::os::unix::net::UnixListener::bind(socket_path(&dir, 11)).unwrap();
        let e = UnixSocket::bind(&dir, 11, 0o777, None).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
        assert!(e.to_string().contains("another process listens on"), "{e}");
        assert!(socket_path(&dir, 11).exists() && !lock_of(&dir, 11).exists());
        drop(other);

        // An empty lock (a process may be writing it) is left alone.
        std::fs::write(lock_of(&dir, 10), "").unwrap();
        let e = UnixSocket::bind(&dir, 10, 0o777, None).unwrap_err();
        assert!(e.to_string().contains("holds no process id"), "{e}");

        // A file that is not a socket is never removed.
        std::fs::write(socket_path(&dir, 9), b"keep").unwrap();
        assert!(UnixSocket::bind(&dir, 9, 0o777, None).is_err());
        assert_eq!(std::fs::read(socket_path(&dir, 9)).unwrap(), b"keep");
        assert!(!lock_of(&dir, 9).exists(), "a failed bind keeps no lock");

        // Touched, both files are new again.
        for p in [&path, &lock_of(&dir, 7)] {
            let aged = std::process::Command::new("touch")
                .args(["-m", "-d", "@1000000"])
                .arg(p)
                .status()
                .unwrap();
            assert!(aged.success());
            let age = std::fs::symlink_metadata(p)
                .unwrap()
                .modified()
                .unwrap()
                .elapsed();
            assert!(age.is_ok_and(|a| a > std::time::Duration::from_secs(3600)));
        }
        first.touch();
        for p in [&path, &lock_of(&dir, 7)] {
            let age = std::fs::symlink_metadata(p)
                .unwrap()
                .modified()
                .unwrap()
                .elapsed();
            assert!(
                age.is_ok_and(|a| a < std::time::Duration::from_secs(60)),
                "{}",
                p.display()
            );
        }

        // A socket file replaced under a listener is not removed with it.
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"new").unwrap();
        drop(first);
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert!(!lock_of(&dir, 7).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn the_socket_gets_its_group_before_clients_can_connect() {
        use std::os::unix::fs::MetadataExt;
        let dir = std::env::temp_dir().join(format!("sy-unix-group-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Root may give it any group; anyone else one of their own.
        // SAFETY: geteuid and getegid only return the process's ids.
        let (root, own) = unsafe { (libc::geteuid() == 0, libc::getegid()) };
        let gid = if root { 4242 } else { own };
        let s = UnixSocket::bind(&dir, 12, 0o770, Some(gid)).unwrap();
        let meta = std::fs::metadata(s.path()).unwrap();
        assert_eq!((meta.gid(), meta.mode() & 0o777), (gid, 0o770));
        drop(s);
        if !root {
            // A group the process is not in: refused, and nothing is left behind.
            let e = UnixSocket::bind(&dir, 12, 0o770, Some(4242)).unwrap_err();
            assert!(e.to_string().contains("could not set the group"), "{e}");
            assert!(!socket_path(&dir, 12).exists() && !lock_of(&dir, 12).exists());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
