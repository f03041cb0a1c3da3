//! One PostgreSQL server (postmaster) of a [`LocalCluster`](super::LocalCluster).

use std::fmt;
use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::binaries::PgBinaries;
use super::util::{self, Probe, RunAs};
use super::{LocalPgError, SUPERUSER};

/// How long a node may take to start accepting connections.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one psql invocation may take.
const PSQL_TIMEOUT: Duration = Duration::from_secs(120);

/// What every node of a cluster shares.
#[derive(Debug)]
pub(crate) struct NodeEnv {
    pub bins: PgBinaries,
    pub run_as: Option<RunAs>,
}

/// A WAL position (`pg_lsn`), e.g. `0/3000148`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl FromStr for Lsn {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (hi, lo) = s.split_once('/').ok_or_else(|| format!("bad LSN {s:?}"))?;
        let hi = u64::from_str_radix(hi, 16).map_err(|_| format!("bad LSN {s:?}"))?;
        let lo = u64::from_str_radix(lo, 16).map_err(|_| format!("bad LSN {s:?}"))?;
        if hi > u32::MAX as u64 || lo > u32::MAX as u64 {
            return Err(format!("bad LSN {s:?}"));
        }
        Ok(Lsn((hi << 32) | lo))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// Why a start attempt failed; `AddrInUse` lets the cluster retry on another port.
#[derive(Debug)]
pub(crate) enum StartFailure {
    AddrInUse,
    Other(LocalPgError),
}

impl From<LocalPgError> for StartFailure {
    fn from(e: LocalPgError) -> Self {
        StartFailure::Other(e)
    }
}

/// One PostgreSQL server. Shared as `&Node` by tests, so the running postmaster (`Child`)
/// sits behind a mutex. All methods block.
///
/// Each postmaster runs in its own process group (so a Ctrl-C in the terminal doesn't reach
/// it); [`kill`](Node::kill) SIGKILLs it and all its children.
#[derive(Debug)]
pub struct Node {
    name: String,
    port: u16,
    data_dir: PathBuf,
    env: Arc<NodeEnv>,
    child: Mutex<Option<Child>>,
}

impl Node {
    pub(crate) fn new(name: String, port: u16, data_dir: PathBuf, env: Arc<NodeEnv>) -> Node {
        Node {
            name,
            port,
            data_dir,
            env,
            child: Mutex::new(None),
        }
    }

    /// "pg0", "pg1", ...
    pub fn name(&self) -> &str {
        &self.name
    }

    /// TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// "127.0.0.1:PORT".
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The data directory; also the unix socket directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// `<data_dir>/server.log`: the postmaster's stdout+stderr (appended across restarts).
    pub fn log_file(&self) -> PathBuf {
        self.data_dir.join("server.log")
    }

    /// The last `lines` lines of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        util::tail_file(&self.log_file(), lines)
    }

    /// "host=127.0.0.1 port=PORT user=USER password=PASSWORD dbname=DB" (values quoted when
    /// needed; `password=` is left out when `password` is empty).
    pub fn conn_string(&self, user: &str, password: &str, db: &str) -> String {
        let mut s = format!(
            "host=127.0.0.1 port={} user={}",
            self.port,
            util::conninfo_value(user)
        );
        if !password.is_empty() {
            s.push_str(&format!(" password={}", util::conninfo_value(password)));
        }
        s.push_str(&format!(" dbname={}", util::conninfo_value(db)));
        s
    }

    /// The postmaster's pid, if this Node started it and it is still running.
    pub fn pid(&self) -> Option<u32> {
        let mut guard = self.lock_child();
        let c = guard.as_mut()?;
        match c.try_wait() {
            Ok(None) => Some(c.id()),
            _ => None,
        }
    }

    /// Whether the postmaster this Node started is still running.
    pub fn is_running(&self) -> bool {
        self.pid().is_some()
    }

    /// Whether `standby.signal` exists, i.e. the node starts as a replica.
    pub fn is_configured_as_replica(&self) -> bool {
        self.data_dir.join("standby.signal").exists()
    }

    fn lock_child(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set_port(&mut self, port: u16) -> Result<(), LocalPgError> {
        self.port = port;
        util::append_file(
            &self.data_dir.join("postgresql.conf"),
            &format!("\n# node {}\nport = {port}\n", self.name),
        )
    }

    /// Node-specific postgresql.conf lines (appended after the shared settings; the last
    /// occurrence of a setting wins, which matters for replicas that copied the primary's).
    pub(crate) fn write_node_conf(&self) -> Result<(), LocalPgError> {
        util::append_file(
            &self.data_dir.join("postgresql.conf"),
            &format!(
                "\n# node {}\nport = {}\nunix_socket_directories = {}\n",
                self.name,
                self.port,
                util::conf_quote(&self.data_dir.to_string_lossy())
            ),
        )
    }

    /// Starts the postmaster (after a stop/kill, or the first time) and waits until it
    /// accepts connections; a replica (one with `standby.signal`) must also report
    /// `pg_is_in_recovery()`. Does nothing if it is already running.
    pub fn start(&self) -> Result<(), LocalPgError> {
        match self.start_inner(START_TIMEOUT) {
            Ok(()) => Ok(()),
            Err(StartFailure::AddrInUse) => Err(LocalPgError::Command {
                what: format!("starting {}", self.name),
                detail: format!(
                    "port {} is already in use\n--- {} ---\n{}",
                    self.port,
                    self.log_file().display(),
                    self.log_tail(30)
                ),
            }),
            Err(StartFailure::Other(e)) => Err(e),
        }
    }

    pub(crate) fn start_inner(&self, timeout: Duration) -> Result<(), StartFailure> {
        {
            let mut guard = self.lock_child();
            if let Some(c) = guard.as_mut() {
                if matches!(c.try_wait(), Ok(None)) {
                    return Ok(());
                }
            }
            *guard = None;
            let log_path = self.log_file();
            let log = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .map_err(|e| LocalPgError::io(format!("opening {}", log_path.display()), e))?;
            if let Some(u) = self.env.run_as {
                let _ = std::os::unix::fs::chown(&log_path, Some(u.uid), Some(u.gid));
            }
            let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
            let log2 = log
                .try_clone()
                .map_err(|e| LocalPgError::io("dup log fd", e))?;
            let mut cmd = util::pg_command(
                &self.env.bins.bin("postgres"),
                self.env.run_as,
                &self.data_dir,
            );
            cmd.arg("-D")
                .arg(&self.data_dir)
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log2)
                .process_group(0);
            let child = cmd
                .spawn()
                .map_err(|e| LocalPgError::io(format!("spawning postgres for {}", self.name), e))?;
            tracing::debug!(node = %self.name, pid = child.id(), port = self.port, "started postmaster");
            *guard = Some(child);
            drop(guard);
            self.wait_ready(timeout, log_start)
        }
    }

    fn wait_ready(&self, timeout: Duration, log_start: u64) -> Result<(), StartFailure> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let mut guard = self.lock_child();
                let exited = match guard.as_mut() {
                    Some(c) => c.try_wait().ok().flatten(),
                    None => None,
                };
                if let Some(status) = exited {
                    *guard = None;
                    let log = std::fs::read(self.log_file()).unwrap_or_default();
                    let new_log =
                        String::from_utf8_lossy(&log[(log_start as usize).min(log.len())..])
                            .into_owned();
                    if new_log.contains("Address already in use") {
                        return Err(StartFailure::AddrInUse);
                    }
                    return Err(StartFailure::Other(LocalPgError::Command {
                        what: format!("starting {} (port {})", self.name, self.port),
                        detail: format!(
                            "postgres exited with {status}\n--- {} ---\n{}",
                            self.log_file().display(),
                            self.log_tail(30)
                        ),
                    }));
                }
            }
            let last = util::probe(self.port);
            if last == Probe::Accepting && util::postmaster_accepting(&self.data_dir, self.port) {
                break;
            }
            if Instant::now() >= deadline {
                return Err(StartFailure::Other(self.timeout_error(
                    "the server to accept connections",
                    timeout,
                    &format!("last probe: {last:?}"),
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if self.is_configured_as_replica() {
            // Accepting connections with standby.signal means hot standby; double-check.
            loop {
                match self.try_is_in_recovery() {
                    Ok(true) => break,
                    Ok(false) => {
                        return Err(StartFailure::Other(LocalPgError::Command {
                            what: format!("starting replica {}", self.name),
                            detail: "it has standby.signal but is not in recovery".into(),
                        }))
                    }
                    Err(e) if Instant::now() >= deadline => return Err(StartFailure::Other(e)),
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        }
        Ok(())
    }

    pub(crate) fn timeout_error(&self, what: &str, timeout: Duration, extra: &str) -> LocalPgError {
        LocalPgError::Timeout {
            what: format!("{} on {} (port {})", what, self.name, self.port),
            secs: timeout.as_secs(),
            detail: format!(
                "\n{extra}\n--- tail of {} ---\n{}",
                self.log_file().display(),
                self.log_tail(30)
            ),
        }
    }

    /// SIGKILLs the postmaster and every backend/auxiliary process (pid from the Child,
    /// else from `postmaster.pid`), reaps it, waits (bounded, 10 s) until they are gone and
    /// the port refuses connections, and removes the shared memory segment PostgreSQL
    /// leaves behind. No-op if it isn't running.
    pub fn kill(&self) {
        let mut guard = self.lock_child();
        // Only a child not yet reaped keeps its pid: once `try_wait` (in `pid`) has reaped
        // an exited postmaster, the pid may already belong to another process.
        if guard
            .as_mut()
            .is_some_and(|c| !matches!(c.try_wait(), Ok(None)))
        {
            *guard = None;
        }
        let ours = guard.as_ref().map(|c| c.id() as i32);
        let pid = ours.or_else(|| {
            util::read_postmaster_pid(&self.data_dir)
                .filter(|pid| util::is_postmaster_of(*pid, &self.data_dir))
        });
        let Some(pid) = pid else { return };
        // Backends call setsid(), so they are not in the postmaster's process group: stop
        // the postmaster (so it forks no more), SIGKILL its children, then itself.
        // SAFETY: plain kill(2) calls.
        unsafe {
            libc::kill(pid, libc::SIGSTOP);
        }
        let children = child_pids(pid);
        unsafe {
            for c in &children {
                libc::kill(*c, libc::SIGKILL);
            }
            libc::kill(pid, libc::SIGKILL);
        }
        if let Some(mut c) = guard.take() {
            let _ = c.wait();
        }
        drop(guard);
        tracing::debug!(node = %self.name, pid, children = children.len(), "killed postmaster");
        let deadline = Instant::now() + Duration::from_secs(10);
        // Backends detach shared memory as they die; a restart fails while any survives.
        while Instant::now() < deadline && children.iter().any(|c| live_process(*c)) {
            std::thread::sleep(Duration::from_millis(5));
        }
        while Instant::now() < deadline && util::port_open(self.port) {
            std::thread::sleep(Duration::from_millis(20));
        }
        util::remove_orphaned_shm(&self.data_dir);
    }

    /// `pg_ctl stop -m fast -w`; then reaps the postmaster. Falls back to [`kill`](Node::kill)
    /// if pg_ctl fails. No-op if it isn't running.
    pub fn stop(&self) {
        let mut guard = self.lock_child();
        let running = match guard.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        };
        if !running && util::read_postmaster_pid(&self.data_dir).is_none() {
            *guard = None;
            return;
        }
        let mut cmd = util::pg_command(
            &self.env.bins.bin("pg_ctl"),
            self.env.run_as,
            &self.data_dir,
        );
        cmd.args(["stop", "-m", "fast", "-w", "-t", "60", "-D"])
            .arg(&self.data_dir);
        let res = util::run_checked(cmd, Duration::from_secs(70));
        match res {
            Ok(_) => {
                if let Some(mut c) = guard.take() {
                    if util::wait_timeout(&mut c, Duration::from_secs(10)).is_none() {
                        let _ = c.kill();
                        let _ = c.wait();
                    }
                }
            }
            Err(e) => {
                tracing::warn!(node = %self.name, error = %e, "pg_ctl stop failed; killing");
                drop(guard);
                self.kill();
            }
        }
    }

    /// `pg_ctl promote -w`: the replica leaves recovery and becomes a primary.
    pub fn promote(&self) -> Result<(), LocalPgError> {
        let mut cmd = util::pg_command(
            &self.env.bins.bin("pg_ctl"),
            self.env.run_as,
            &self.data_dir,
        );
        cmd.args(["promote", "-w", "-t", "60", "-D"])
            .arg(&self.data_dir);
        util::run_checked(cmd, Duration::from_secs(70)).map_err(|e| self.with_log(e))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.try_is_in_recovery()? {
            if Instant::now() >= deadline {
                return Err(self.timeout_error(
                    "promotion to finish",
                    Duration::from_secs(30),
                    "still in recovery",
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn with_log(&self, e: LocalPgError) -> LocalPgError {
        match e {
            LocalPgError::Command { what, detail } => LocalPgError::Command {
                what,
                detail: format!(
                    "{detail}\n--- tail of {} ---\n{}",
                    self.log_file().display(),
                    self.log_tail(30)
                ),
            },
            other => other,
        }
    }

    /// Runs SQL as the superuser in database `postgres`; see [`psql_db`](Node::psql_db).
    pub fn psql(&self, sql: &str) -> Result<String, LocalPgError> {
        self.psql_db("postgres", sql)
    }

    /// Runs `psql -X -A -t -q -v ON_ERROR_STOP=1 -h <data_dir> -p PORT -U postgres -d DB -c SQL`
    /// (over the unix socket in the data dir, where pg_hba trusts everyone, so it works
    /// before any password is set; as the `postgres` OS user when we are root) and returns
    /// its trimmed stdout: rows one per line, columns separated by `|`, NULL as empty.
    /// Several `;`-separated statements run as one implicit transaction. Errors carry
    /// psql's stderr.
    pub fn psql_db(&self, db: &str, sql: &str) -> Result<String, LocalPgError> {
        let mut cmd = util::pg_command(&self.env.bins.psql(), self.env.run_as, &self.data_dir);
        cmd.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.data_dir)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", SUPERUSER, "-d", db, "-c", sql]);
        let out = util::run_with_timeout(cmd, PSQL_TIMEOUT).map_err(|e| LocalPgError::Sql {
            node: self.name.clone(),
            sql: sql.to_string(),
            detail: e.to_string(),
        })?;
        if !out.status.success() {
            return Err(LocalPgError::Sql {
                node: self.name.clone(),
                sql: sql.to_string(),
                detail: format!(
                    "psql {}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// `SELECT pg_is_in_recovery()`.
    pub fn try_is_in_recovery(&self) -> Result<bool, LocalPgError> {
        Ok(self.psql("SELECT pg_is_in_recovery()")? == "t")
    }

    /// `SELECT pg_is_in_recovery()`. Panics if the query fails (test helper); use
    /// [`try_is_in_recovery`](Node::try_is_in_recovery) to handle errors.
    pub fn is_in_recovery(&self) -> bool {
        match self.try_is_in_recovery() {
            Ok(b) => b,
            Err(e) => panic!("is_in_recovery on {}: {e}", self.name),
        }
    }

    /// `SELECT pg_wal_replay_pause()` (replica only). Returns once the pause is requested;
    /// replay stops at the next record boundary.
    pub fn pause_replay(&self) -> Result<(), LocalPgError> {
        self.psql("SELECT pg_wal_replay_pause()").map(|_| ())
    }

    /// `SELECT pg_wal_replay_resume()` (replica only).
    pub fn resume_replay(&self) -> Result<(), LocalPgError> {
        self.psql("SELECT pg_wal_replay_resume()").map(|_| ())
    }

    /// `pg_last_wal_replay_lsn()`: `None` on a primary that never was in recovery.
    pub fn replay_lsn(&self) -> Result<Option<Lsn>, LocalPgError> {
        let s = self.psql("SELECT pg_last_wal_replay_lsn()")?;
        self.parse_lsn_opt(&s)
    }

    /// `pg_current_wal_lsn()` on a primary; on a replica (where that function errors) the
    /// last replayed LSN.
    pub fn current_wal_lsn(&self) -> Result<Lsn, LocalPgError> {
        let s = self.psql(
            "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() \
             ELSE pg_current_wal_lsn() END",
        )?;
        self.parse_lsn_opt(&s)?.ok_or_else(|| LocalPgError::Sql {
            node: self.name.clone(),
            sql: "current_wal_lsn".into(),
            detail: "NULL LSN".into(),
        })
    }

    /// On a primary: commits a WAL-writing transaction with `synchronous_commit = on`
    /// (which flushes all WAL inserted so far, including other sessions' asynchronous commits) and returns
    /// `pg_current_wal_lsn()` afterwards: a position every replica can reach exactly.
    pub fn flush_wal(&self) -> Result<Lsn, LocalPgError> {
        // The transaction must write WAL itself for its commit to be synchronous; a
        // transactional logical message is the cheapest such record (no table involved).
        self.psql(
            "SET synchronous_commit = on; \
             SELECT pg_logical_emit_message(true, 'localpg', 'flush')",
        )?;
        let s = self.psql("SELECT pg_current_wal_lsn()")?;
        self.parse_lsn_opt(&s)?.ok_or_else(|| LocalPgError::Sql {
            node: self.name.clone(),
            sql: "pg_current_wal_lsn()".into(),
            detail: "NULL LSN".into(),
        })
    }

    fn parse_lsn_opt(&self, s: &str) -> Result<Option<Lsn>, LocalPgError> {
        if s.is_empty() {
            return Ok(None);
        }
        s.parse().map(Some).map_err(|e| LocalPgError::Sql {
            node: self.name.clone(),
            sql: "parse LSN".into(),
            detail: e,
        })
    }

    /// Waits until this replica's replayed LSN is at least `target`.
    pub fn wait_replay(&self, target: Lsn, timeout: Duration) -> Result<(), LocalPgError> {
        let deadline = Instant::now() + timeout;
        let sql = format!("SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn");
        loop {
            if self.psql(&sql)? == "t" {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let have = self
                    .replay_lsn()
                    .ok()
                    .flatten()
                    .map(|l| l.to_string())
                    .unwrap_or_else(|| "?".into());
                return Err(self.timeout_error(
                    &format!("replay to reach {target}"),
                    timeout,
                    &format!("replayed up to {have}"),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `primary`'s `pg_stat_replication` shows this node (by application_name)
    /// in state `streaming`.
    pub fn wait_streaming_from(
        &self,
        primary: &Node,
        timeout: Duration,
    ) -> Result<(), LocalPgError> {
        let deadline = Instant::now() + timeout;
        let sql = format!(
            "SELECT count(*) FROM pg_stat_replication WHERE application_name = '{}' \
             AND state = 'streaming'",
            self.name
        );
        loop {
            if primary.psql(&sql)? != "0" {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let state = primary
                    .psql("SELECT application_name || ':' || state FROM pg_stat_replication")
                    .unwrap_or_default();
                return Err(self.timeout_error(
                    &format!("streaming replication from {}", primary.name),
                    timeout,
                    &format!(
                        "{}'s pg_stat_replication: [{}]\n--- tail of {}'s log ---\n{}",
                        primary.name,
                        state.replace('\n', ", "),
                        primary.name,
                        primary.log_tail(15)
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The `primary_conninfo` this node uses to follow `primary`.
    fn primary_conninfo(&self, primary: &Node) -> String {
        format!(
            "host=127.0.0.1 port={} user={} application_name={}",
            primary.port, SUPERUSER, self.name
        )
    }

    /// Points this running replica at another primary (e.g. after a promotion):
    /// `ALTER SYSTEM SET primary_conninfo` + `pg_reload_conf()`. The replica follows the
    /// new timeline (recovery_target_timeline=latest) if it hasn't replayed past the fork.
    pub fn follow(&self, primary: &Node) -> Result<(), LocalPgError> {
        let ci = self.primary_conninfo(primary).replace('\'', "''");
        self.psql(&format!("ALTER SYSTEM SET primary_conninfo = '{ci}'"))?;
        self.psql("SELECT pg_reload_conf()")?;
        Ok(())
    }

    /// Stops this node, wipes its data directory, takes a fresh
    /// `pg_basebackup -R -X stream -c fast` from `primary`, starts it and waits until it is
    /// streaming. Use it to turn an old primary into a replica of the promoted one.
    pub fn rebuild_as_replica_of(&self, primary: &Node) -> Result<(), LocalPgError> {
        self.kill();
        if self.data_dir.exists() {
            std::fs::remove_dir_all(&self.data_dir).map_err(|e| {
                LocalPgError::io(format!("removing {}", self.data_dir.display()), e)
            })?;
        }
        self.basebackup_from(primary)?;
        self.start()?;
        self.wait_streaming_from(primary, START_TIMEOUT)
    }

    /// Creates this (non-existent) data dir as a copy of `primary` configured as a replica.
    pub(crate) fn basebackup_from(&self, primary: &Node) -> Result<(), LocalPgError> {
        let mut cmd = util::pg_command(
            &self.env.bins.bin("pg_basebackup"),
            self.env.run_as,
            self.data_dir.parent().unwrap_or(Path::new("/")),
        );
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args(["-h", "127.0.0.1", "-p"])
            .arg(primary.port.to_string())
            .args(["-U", SUPERUSER, "-R", "-X", "stream", "-c", "fast", "-N"]);
        util::run_checked(cmd, Duration::from_secs(300)).map_err(|e| primary.with_log(e))?;
        // The primary's log came along; start this node's own.
        let _ = std::fs::remove_file(self.log_file());
        // -R wrote a primary_conninfo into postgresql.auto.conf; replace it with ours, which
        // carries application_name so pg_stat_replication can tell replicas apart.
        let auto = self.data_dir.join("postgresql.auto.conf");
        let text = std::fs::read_to_string(&auto).unwrap_or_default();
        let mut kept: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("primary_conninfo"))
            .map(|l| format!("{l}\n"))
            .collect();
        kept.push_str(&format!(
            "primary_conninfo = {}\n",
            util::conf_quote(&self.primary_conninfo(primary))
        ));
        std::fs::write(&auto, kept)
            .map_err(|e| LocalPgError::io(format!("writing {}", auto.display()), e))?;
        if let Some(u) = self.env.run_as {
            let _ = std::os::unix::fs::chown(&auto, Some(u.uid), Some(u.gid));
        }
        self.write_node_conf()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.lock_child().is_some() {
            self.kill();
        }
    }
}

/// Pids whose parent is `ppid` (Linux /proc; empty elsewhere).
fn child_pids(ppid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ..."; comm may contain spaces, so split after the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let parent: i32 = rest
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if parent == ppid {
            out.push(pid);
        }
    }
    out
}

/// Whether `pid` exists and is not a zombie.
fn live_process(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| {
                let st = rest.trim_start();
                !(st.starts_with('Z') || st.starts_with('X'))
            })
            .unwrap_or(false),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::Lsn;

    #[test]
    fn lsn_roundtrip_and_order() {
        let a: Lsn = "0/3000148".parse().unwrap();
        assert_eq!(a.0, 0x3000148);
        assert_eq!(a.to_string(), "0/3000148");
        let b: Lsn = "1/0".parse().unwrap();
        assert!(b > a);
        assert_eq!(b.to_string(), "1/0");
        assert!("nope".parse::<Lsn>().is_err());
        assert!("0/XYZ".parse::<Lsn>().is_err());
    }
}
