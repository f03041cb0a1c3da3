//! Small helpers shared by the cluster and node code: running commands (as the `postgres` OS
//! user when we are root), free ports, log tails, and a tiny readiness probe.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use super::LocalPgError;

/// The OS user server binaries run as; `None` means "as ourselves".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

/// When the effective uid is 0, returns the `postgres` user's uid/gid (PostgreSQL refuses to
/// run as root); otherwise `None`.
pub(crate) fn run_as_for_current_user() -> Result<Option<RunAs>, LocalPgError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    lookup_user("postgres").map(Some).ok_or_else(|| {
        LocalPgError::NoServerUser(
            "running as root, but there is no `postgres` OS user to run the server as \
             (PostgreSQL refuses to run as root). Install PostgreSQL from packages \
             (`apt-get update && apt-get install postgresql` on Debian creates the user) or create one: \
             `useradd --system --create-home postgres`"
                .to_string(),
        )
    })
}

fn lookup_user(name: &str) -> Option<RunAs> {
    let cname = std::ffi::CString::new(name).ok()?;
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the duration of the call; buf is large enough for
    // ordinary passwd entries (ERANGE just yields None).
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc == 0 && !result.is_null() {
        return Some(RunAs {
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
        });
    }
    // Fallback: parse /etc/passwd (e.g. static builds without NSS).
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 4 && f[0] == name {
            Some(RunAs {
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
            })
        } else {
            None
        }
    })
}

/// Recursively chowns `path` to the run-as user (no-op when not root).
pub(crate) fn chown_tree(path: &Path, run_as: Option<RunAs>) -> Result<(), LocalPgError> {
    let Some(u) = run_as else { return Ok(()) };
    fn walk(p: &Path, u: RunAs) -> std::io::Result<()> {
        std::os::unix::fs::lchown(p, Some(u.uid), Some(u.gid))?;
        let meta = std::fs::symlink_metadata(p)?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(p)? {
                walk(&entry?.path(), u)?;
            }
        }
        Ok(())
    }
    walk(path, u).map_err(|e| LocalPgError::io(format!("chown {}", path.display()), e))
}

/// A `Command` for a PostgreSQL binary: runs as the `postgres` user when we are root, with
/// PG* environment variables cleared (so the caller's PGHOST/PGPORT/... can't redirect it),
/// in `cwd` (the postgres user may not be able to read our working directory).
pub(crate) fn pg_command(program: &Path, run_as: Option<RunAs>, cwd: &Path) -> Command {
    let mut cmd = Command::new(program);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PG") {
            cmd.env_remove(&k);
        }
    }
    cmd.env("PGCONNECT_TIMEOUT", "10");
    cmd.current_dir(cwd);
    if let Some(u) = run_as {
        cmd.uid(u.uid).gid(u.gid);
        // (std also drops root's supplementary groups when uid is set.)
        // root's HOME is unreadable for the postgres user; libpq looks for ~/.pgpass there.
        cmd.env("HOME", cwd);
    }
    cmd
}

/// Describes a command for error messages.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        let a = a.to_string_lossy();
        if a.contains(' ') || a.is_empty() {
            s.push_str(&format!("'{a}'"));
        } else {
            s.push_str(&a);
        }
    }
    s
}

/// Runs `cmd` to completion with captured stdout/stderr, killing it after `timeout`.
pub(crate) fn run_with_timeout(
    mut cmd: Command,
    timeout: Duration,
) -> Result<Output, LocalPgError> {
    let what = describe(&cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| LocalPgError::io(format!("spawning `{what}`"), e))?;
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let status = match wait_timeout(&mut child, timeout) {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = err_t.join().unwrap_or_default();
            return Err(LocalPgError::Timeout {
                what: format!("`{what}`"),
                secs: timeout.as_secs(),
                detail: format!("\nstderr: {}", String::from_utf8_lossy(&stderr).trim()),
            });
        }
    };
    Ok(Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    })
}

/// Like [`run_with_timeout`] but a non-zero exit is an error carrying stdout+stderr.
pub(crate) fn run_checked(cmd: Command, timeout: Duration) -> Result<Output, LocalPgError> {
    let what = describe(&cmd);
    let out = run_with_timeout(cmd, timeout)?;
    if !out.status.success() {
        return Err(LocalPgError::Command {
            what: format!("`{what}`"),
            detail: format!(
                "{}\nstdout: {}\nstderr: {}",
                out.status,
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(out)
}

/// Polls `child` until it exits or `timeout` passes.
pub(crate) fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(_) => return None,
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// A port that was free a moment ago on 127.0.0.1.
pub(crate) fn free_port() -> Result<u16, LocalPgError> {
    let l = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| LocalPgError::io("binding 127.0.0.1:0 to find a free port", e))?;
    let port = l
        .local_addr()
        .map_err(|e| LocalPgError::io("local_addr", e))?
        .port();
    Ok(port)
}

/// The last `lines` lines of a file (empty string if unreadable).
pub(crate) fn tail_file(path: &Path, lines: usize) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return String::new();
    };
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    all[start..].join("\n")
}

/// Quotes a value for postgresql.conf.
pub(crate) fn conf_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Quotes a value for a libpq connection string when needed.
pub(crate) fn conninfo_value(s: &str) -> String {
    if !s.is_empty() && !s.contains([' ', '\'', '\\', '=']) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

/// Appends `text` to a file.
pub(crate) fn append_file(path: &Path, text: &str) -> Result<(), LocalPgError> {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| LocalPgError::io(format!("opening {}", path.display()), e))?;
    f.write_all(text.as_bytes())
        .map_err(|e| LocalPgError::io(format!("writing {}", path.display()), e))
}

/// Outcome of a protocol-level readiness probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Probe {
    /// Nothing listening (or the connection broke).
    NoResponse,
    /// The server answered but rejected the connection (e.g. "the database system is
    /// starting up"); carries the message.
    Rejecting(String),
    /// The server asked for authentication or accepted us: it accepts connections.
    Accepting,
}

/// Sends a StartupMessage for user postgres / db postgres to 127.0.0.1:`port` and classifies
/// the first reply, like `pg_isready` does (without spawning a process).
pub(crate) fn probe(port: u16) -> Probe {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return Probe::NoResponse;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
    let mut body = Vec::new();
    body.extend_from_slice(&196608i32.to_be_bytes());
    for kv in [
        "user",
        "postgres",
        "database",
        "postgres",
        "application_name",
        "localpg-probe",
    ] {
        body.extend_from_slice(kv.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut msg = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    msg.extend_from_slice(&body);
    if s.write_all(&msg).is_err() {
        return Probe::NoResponse;
    }
    let mut head = [0u8; 5];
    if s.read_exact(&mut head).is_err() {
        return Probe::NoResponse;
    }
    match head[0] {
        b'R' => Probe::Accepting,
        b'E' => {
            let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]).max(4) as usize;
            let mut rest = vec![0u8; (len - 4).min(64 * 1024)];
            let _ = s.read_exact(&mut rest);
            let msg = rest
                .split(|b| *b == 0)
                .filter(|f| f.first() == Some(&b'M'))
                .map(|f| String::from_utf8_lossy(&f[1..]).into_owned())
                .next()
                .unwrap_or_else(|| "connection rejected".to_string());
            Probe::Rejecting(msg)
        }
        _ => Probe::NoResponse,
    }
}

/// Whether anything accepts TCP connections on 127.0.0.1:`port`.
pub(crate) fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    )
    .is_ok()
}

/// Whether a process (or, for negative values, a process group) still exists.
pub(crate) fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence/permission.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The postmaster pid from `<data_dir>/postmaster.pid`, if present.
pub(crate) fn read_postmaster_pid(data_dir: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok().filter(|p| *p > 0)
}

/// Whether the postmaster of `data_dir` says (in `postmaster.pid`) that it accepts
/// connections on `port`: what a probe of the port alone cannot tell apart from another
/// server that took the port first.
pub(crate) fn postmaster_accepting(data_dir: &Path, port: u16) -> bool {
    let Ok(text) = std::fs::read_to_string(data_dir.join("postmaster.pid")) else {
        return false;
    };
    let lines: Vec<&str> = text.lines().collect();
    // Line 4: the port; line 8 (from PostgreSQL 10 on): the status, "ready", or "standby"
    // in hot standby.
    lines.get(3).is_some_and(|p| p.trim() == port.to_string())
        && lines
            .get(7)
            .is_none_or(|s| matches!(s.trim(), "ready" | "standby"))
}

/// Whether `pid` runs in `data_dir` (postgres chdirs into its data dir), so a pid read from
/// a possibly stale postmaster.pid is really that postmaster. Without /proc, trusts the pid.
pub(crate) fn is_postmaster_of(pid: i32, data_dir: &Path) -> bool {
    if !Path::new("/proc/self").exists() {
        return pid_alive(pid);
    }
    match std::fs::read_link(format!("/proc/{pid}/cwd")) {
        Ok(cwd) => cwd == data_dir || std::fs::canonicalize(data_dir).is_ok_and(|d| d == cwd),
        Err(_) => false,
    }
}

/// Removes the SysV shared memory segment recorded in `<data_dir>/postmaster.pid` (line 7:
/// "KEY ID") if nothing is attached to it any more. PostgreSQL only removes it on a clean
/// shutdown, so every SIGKILLed postmaster would otherwise leak one (56 bytes, but they count
/// against the kernel's segment limit).
pub(crate) fn remove_orphaned_shm(data_dir: &Path) {
    let Ok(text) = std::fs::read_to_string(data_dir.join("postmaster.pid")) else {
        return;
    };
    let Some(id) = text
        .lines()
        .nth(6)
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse::<libc::c_int>().ok())
    else {
        return;
    };
    // SAFETY: shmid_ds is plain data; shmctl only writes into it.
    unsafe {
        let mut ds: libc::shmid_ds = std::mem::zeroed();
        if libc::shmctl(id, libc::IPC_STAT, &mut ds) == 0 && ds.shm_nattch == 0 {
            libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut());
        }
    }
}
