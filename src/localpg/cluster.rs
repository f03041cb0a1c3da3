//! A primary plus streaming replicas in one throwaway directory.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::binaries::PgBinaries;
use super::node::{Node, NodeEnv, StartFailure, START_TIMEOUT};
use super::util;
use super::*;

/// How many times a node's start is retried on a fresh port after "Address already in use".
const PORT_ATTEMPTS: usize = 5;

/// Options for [`LocalCluster::start`]. Build with `..Default::default()`.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Number of streaming replicas besides the primary (default 2).
    pub replicas: usize,
    /// Directory to put the cluster in (created if missing, removed on drop). Default: a new
    /// `switchyard-pg-XXXXXX` directory under `std::env::temp_dir()`. Keep it short: unix
    /// socket paths (`<dir>/pgN/.s.PGSQL.PORT`) are limited to 107 bytes.
    pub base_dir: Option<PathBuf>,
    /// Extra postgresql.conf lines, appended after the defaults (so they override them).
    pub extra_conf: Vec<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            replicas: 2,
            base_dir: None,
            extra_conf: Vec::new(),
        }
    }
}

/// A running primary (`pg0`) and replicas (`pg1`, `pg2`, ...) streaming from it, in a
/// throwaway directory.
///
/// Dropping it SIGKILLs every node and removes the directory. A watchdog process (`sh`,
/// in its own session) does the same if this process dies without dropping it (static
/// clusters, SIGKILL, abort): it waits for EOF on a pipe only this process holds.
#[derive(Debug)]
pub struct LocalCluster {
    dir: PathBuf,
    nodes: Vec<Node>,
    env: Arc<NodeEnv>,
    /// The watchdog; its stdin (the pipe) stays open as long as this struct lives.
    watchdog: Mutex<Option<Child>>,
    keep_dir: bool,
}

impl LocalCluster {
    /// Creates and starts the cluster (blocking): initdb + start the primary, create the
    /// roles and database from this module's constants, then for each replica
    /// `pg_basebackup -R -X stream -c fast`, start it, and wait until the primary's
    /// `pg_stat_replication` shows it streaming. Every wait is bounded; errors carry the
    /// tail of the server log. On error everything started so far is torn down.
    pub fn start(opts: ClusterOptions) -> Result<LocalCluster, LocalPgError> {
        let bins = PgBinaries::find()?;
        let run_as = util::run_as_for_current_user()?;
        let keep_dir = std::env::var_os("SWITCHYARD_KEEP_PGDIR").is_some_and(|v| v != "0");

        // A temp dir removes itself on an early error, until the watchdog owns it.
        let (dir, temp) = match &opts.base_dir {
            Some(d) => {
                std::fs::create_dir_all(d)
                    .map_err(|e| LocalPgError::io(format!("creating {}", d.display()), e))?;
                (d.clone(), None)
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("switchyard-pg-")
                    .tempdir_in(std::env::temp_dir())
                    .map_err(|e| LocalPgError::io("creating a temp dir", e))?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
        util::chown_tree(&dir, run_as)?;
        if run_as.is_some() {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755));
            check_traversable(&dir)?;
        }

        let env = Arc::new(NodeEnv { bins, run_as });
        let data_dirs: Vec<PathBuf> = (0..=opts.replicas)
            .map(|i| dir.join(format!("pg{i}")))
            .collect();
        let watchdog = spawn_watchdog(&dir, &data_dirs, keep_dir)?;
        if let Some(t) = temp {
            let _ = t.keep();
        }
        // From here on, Drop cleans up whatever was started if anything fails.
        let mut cluster = LocalCluster {
            dir,
            nodes: Vec::new(),
            env,
            watchdog: Mutex::new(Some(watchdog)),
            keep_dir,
        };
        cluster.init(&opts, &data_dirs)?;
        Ok(cluster)
    }

    fn init(&mut self, opts: &ClusterOptions, data_dirs: &[PathBuf]) -> Result<(), LocalPgError> {
        let t0 = Instant::now();
        let env = self.env.clone();
        let primary_dir = data_dirs[0].clone();

        let mut cmd = util::pg_command(&env.bins.bin("initdb"), env.run_as, &self.dir);
        cmd.arg("-D").arg(&primary_dir).args([
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--no-locale",
            "-E",
            "UTF8",
            "-N",
        ]);
        util::run_checked(cmd, Duration::from_secs(180))?;

        let conf = self.base_conf(opts);
        util::append_file(&primary_dir.join("postgresql.conf"), &conf)?;
        let hba = primary_dir.join("pg_hba.conf");
        std::fs::write(&hba, PG_HBA_CONF)
            .map_err(|e| LocalPgError::io(format!("writing {}", hba.display()), e))?;

        let primary = Node::new("pg0".into(), util::free_port()?, primary_dir, env.clone());
        primary.write_node_conf()?;
        self.nodes.push(primary);
        self.start_with_port_retry(0)?;
        self.bootstrap()?;
        tracing::debug!(elapsed = ?t0.elapsed(), "primary ready");

        for (i, data_dir) in data_dirs.iter().enumerate().skip(1) {
            let node = Node::new(
                format!("pg{i}"),
                util::free_port()?,
                data_dir.clone(),
                env.clone(),
            );
            node.basebackup_from(&self.nodes[0])?;
            self.nodes.push(node);
            self.start_with_port_retry(i)?;
        }
        for node in &self.nodes[1..] {
            node.wait_streaming_from(&self.nodes[0], START_TIMEOUT)?;
        }
        tracing::info!(
            dir = %self.dir.display(),
            nodes = ?self.nodes.iter().map(|n| (n.name().to_string(), n.port())).collect::<Vec<_>>(),
            elapsed = ?t0.elapsed(),
            "local PostgreSQL cluster ready"
        );
        Ok(())
    }

    /// postgresql.conf lines shared by every node.
    fn base_conf(&self, opts: &ClusterOptions) -> String {
        let major = self.env.bins.major_version().unwrap_or(15);
        let mut lines: Vec<String> = vec![
            "".into(),
            "# --- switchyard localpg ---".into(),
            "listen_addresses = '127.0.0.1'".into(),
            "fsync = off".into(),
            "synchronous_commit = off".into(),
            "full_page_writes = off".into(),
            "shared_buffers = 32MB".into(),
            "max_connections = 300".into(),
            // Two-phase commit through the proxy is tested (standbys need at least the
            // primary's value).
            "max_prepared_transactions = 10".into(),
            "wal_level = replica".into(),
            // Each streaming replica holds one sender, and a base backup takes two more.
            format!("max_wal_senders = {}", (opts.replicas + 4).max(10)),
            format!("max_replication_slots = {}", (opts.replicas + 4).max(10)),
            "hot_standby = on".into(),
            "hot_standby_feedback = on".into(),
            "wal_receiver_status_interval = 1s".into(),
            "logging_collector = off".into(),
            "log_min_messages = warning".into(),
        ];
        if major >= 13 {
            lines.push("wal_keep_size = 256MB".into());
        } else {
            lines.push("wal_keep_segments = 16".into());
        }
        if major >= 14 {
            lines.push("compute_query_id = on".into());
        }
        if self.env.bins.has_pg_stat_statements() {
            lines.push("shared_preload_libraries = 'pg_stat_statements'".into());
        }
        lines.extend(opts.extra_conf.iter().cloned());
        lines.push(String::new());
        lines.join("\n")
    }

    fn start_with_port_retry(&mut self, i: usize) -> Result<(), LocalPgError> {
        for attempt in 1..=PORT_ATTEMPTS {
            match self.nodes[i].start_inner(START_TIMEOUT) {
                Ok(()) => return Ok(()),
                Err(StartFailure::AddrInUse) if attempt < PORT_ATTEMPTS => {
                    let port = util::free_port()?;
                    tracing::debug!(node = self.nodes[i].name(), port, "port taken; retrying");
                    self.nodes[i].set_port(port)?;
                }
                Err(StartFailure::AddrInUse) => {
                    return Err(LocalPgError::Command {
                        what: format!("starting {}", self.nodes[i].name()),
                        detail: format!("no free port after {PORT_ATTEMPTS} attempts"),
                    })
                }
                Err(StartFailure::Other(e)) => return Err(e),
            }
        }
        unreachable!()
    }

    /// Roles, database and extensions; runs over the primary's unix socket (trust).
    fn bootstrap(&self) -> Result<(), LocalPgError> {
        let p = &self.nodes[0];
        let q = |s: &str| s.replace('\'', "''");
        p.psql(&format!(
            "SET password_encryption = 'scram-sha-256';
             ALTER ROLE {SUPERUSER} PASSWORD '{}';
             CREATE ROLE {APP_USER} LOGIN PASSWORD '{}';
             CREATE ROLE {PLAIN_USER} LOGIN PASSWORD '{}';
             CREATE ROLE {TRUST_USER} LOGIN;
             CREATE ROLE {OTHER_USER} LOGIN PASSWORD '{}';
             SET password_encryption = 'md5';
             CREATE ROLE {MD5_USER} LOGIN PASSWORD '{}';",
            q(SUPERUSER_PASSWORD),
            q(APP_PASSWORD),
            q(PLAIN_PASSWORD),
            q(OTHER_PASSWORD),
            q(MD5_PASSWORD),
        ))?;
        p.psql(&format!("CREATE DATABASE {APP_DB} OWNER {APP_USER}"))?;
        let ext = if self.env.bins.has_pg_stat_statements() {
            "CREATE EXTENSION IF NOT EXISTS pg_stat_statements;"
        } else {
            ""
        };
        for db in ["postgres", APP_DB] {
            p.psql_db(db, &format!("GRANT ALL ON SCHEMA public TO PUBLIC; {ext}"))?;
        }
        Ok(())
    }

    /// The initial primary (`pg0`). After a promotion use [`nodes`](Self::nodes) or
    /// [`current_primary`](Self::current_primary).
    pub fn primary(&self) -> &Node {
        &self.nodes[0]
    }

    /// The initial replicas (`pg1`..), as a slice of [`nodes`](Self::nodes).
    pub fn replicas(&self) -> &[Node] {
        &self.nodes[1..]
    }

    /// All nodes; index 0 is the initial primary.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The node named `name` ("pg0", ...).
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name() == name)
    }

    /// The cluster directory (holds `pg0/`, `pg1/`, ...).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The binaries the cluster runs.
    pub fn binaries(&self) -> &PgBinaries {
        &self.env.bins
    }

    /// The first running node that is not in recovery.
    pub fn current_primary(&self) -> Option<&Node> {
        self.nodes
            .iter()
            .find(|n| n.is_running() && matches!(n.try_is_in_recovery(), Ok(false)))
    }

    /// Waits until every running replica has replayed all WAL the current primary had
    /// generated when this was called (replica `pg_last_wal_replay_lsn()` >= primary
    /// `pg_current_wal_lsn()` after a synchronous commit flushed everything; see
    /// [`Node::flush_wal`]). Stopped/killed nodes are skipped; a paused replica makes it
    /// time out.
    pub fn wait_replicas_caught_up(&self, timeout: Duration) -> Result<(), LocalPgError> {
        let primary = self
            .current_primary()
            .ok_or_else(|| LocalPgError::Command {
                what: "wait_replicas_caught_up".into(),
                detail: "no running primary".into(),
            })?;
        // With synchronous_commit=off, pg_current_wal_lsn() may not include the latest
        // commits yet; flush_wal() forces them out and gives an exact target.
        let target = primary.flush_wal()?;
        let deadline = Instant::now() + timeout;
        for n in &self.nodes {
            if std::ptr::eq(n, primary) || !n.is_running() {
                continue;
            }
            if !n.try_is_in_recovery()? {
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            n.wait_replay(target, left).map_err(|e| match e {
                LocalPgError::Timeout { what, detail, .. } => LocalPgError::Timeout {
                    what,
                    secs: timeout.as_secs(),
                    detail,
                },
                e => e,
            })?;
        }
        Ok(())
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        // Disarm the watchdog first (SIGKILL; it runs no child process), so it never acts
        // on pid files we leave behind.
        let mut guard = self.watchdog.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(mut w) = guard.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        drop(guard);
        for n in &self.nodes {
            n.kill();
        }
        if self.keep_dir {
            eprintln!(
                "localpg: keeping {} (SWITCHYARD_KEEP_PGDIR)",
                self.dir.display()
            );
        } else if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.dir.display(), error = %e, "removing cluster dir");
            }
        }
    }
}

/// When we run as root and the servers as `postgres`, every ancestor of the cluster dir must
/// be searchable by others.
fn check_traversable(dir: &Path) -> Result<(), LocalPgError> {
    use std::os::unix::fs::PermissionsExt;
    for anc in dir.ancestors().skip(1) {
        if let Ok(m) = std::fs::metadata(anc) {
            if m.permissions().mode() & 0o001 == 0 {
                return Err(LocalPgError::Command {
                    what: "preparing the cluster directory".into(),
                    detail: format!(
                        "{} is not searchable by the postgres OS user (mode {:o}); \
                         choose a base_dir elsewhere (e.g. under /tmp)",
                        anc.display(),
                        m.permissions().mode() & 0o7777
                    ),
                });
            }
        }
    }
    Ok(())
}

/// The watchdog: `sh` in its own session, blocked reading a pipe from us. When the pipe
/// closes (we exited, however), it SIGKILLs each data dir's postmaster and its children,
/// removes their SysV shared memory segments and the cluster dir.
const WATCHDOG_SCRIPT: &str = r#"
dir="$1"; shift
while read -r _; do :; done
for d in "$@"; do
  pid=$(head -n 1 "$d/postmaster.pid" 2>/dev/null) || pid=
  case "$pid" in
    ''|*[!0-9]*) continue ;;
  esac
  # Only a process whose cwd is the data dir is that postmaster (stale pid files lie).
  if [ -d /proc/self ] && [ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" != "$d" ]; then
    continue
  fi
  # Backends setsid(), so kill the postmaster's children explicitly (stopped first so it
  # forks no more); they would also exit on their own once the postmaster is gone.
  kill -STOP "$pid" 2>/dev/null
  # (cat, not awk, reads the files: mawk stops at the first process that vanished.)
  for c in $(cat /proc/[0-9]*/stat 2>/dev/null | awk -v p="$pid" '$4 == p { print $1 }'); do
    kill -9 "$c" 2>/dev/null
  done
  kill -9 "$pid" 2>/dev/null
  # PostgreSQL leaves its small SysV segment behind when killed (line 7: "KEY ID").
  shmid=$(sed -n 7p "$d/postmaster.pid" 2>/dev/null | awk '{print $2}')
  if [ -n "$shmid" ]; then
    sleep 0.2
    ipcrm -m "$shmid" 2>/dev/null
  fi
done
if [ -z "$SWITCHYARD_WATCHDOG_KEEP" ]; then
  sleep 0.3 2>/dev/null || sleep 1
  rm -rf -- "$dir"
fi
"#;

fn spawn_watchdog(dir: &Path, data_dirs: &[PathBuf], keep: bool) -> Result<Child, LocalPgError> {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(WATCHDOG_SCRIPT)
        .arg("switchyard-localpg-watchdog")
        .arg(dir)
        .args(data_dirs)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .current_dir("/");
    if keep {
        cmd.env("SWITCHYARD_WATCHDOG_KEEP", "1");
    } else {
        cmd.env_remove("SWITCHYARD_WATCHDOG_KEEP");
    }
    // SAFETY: setsid is async-signal-safe. A new session keeps terminal signals (Ctrl-C,
    // SIGHUP on hangup) sent to our process group away from the watchdog.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
        .map_err(|e| LocalPgError::io("spawning the cluster watchdog (/bin/sh)", e))
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn f<T: Send + Sync>() {}
    f::<LocalCluster>();
    f::<Node>();
}
