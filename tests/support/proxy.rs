//! Runs the built `switchyard` binary (`switchyard run --config <file>`) against a cluster.

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use switchyard::localpg::{self, LocalCluster};

/// What to put in the generated config besides backends and users.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// `pool_mode = "..."` (default "transaction").
    pub pool_mode: String,
    /// Top-level TOML keys, inserted before the first table.
    pub extra_top: String,
    /// TOML appended at the end (tables such as `[pool]`, more `[[users]]`).
    pub extra_tables: String,
    /// `(name, "host:port")` backends to use instead of the cluster's nodes (e.g. relays in
    /// front of them). `None`: one backend per node, named like the node.
    pub backends: Option<Vec<(String, String)>>,
    /// Extra environment variables for the proxy process.
    pub env: Vec<(String, String)>,
    /// The proxy process's limit on open files (soft and hard), when not inherited.
    pub open_files: Option<u64>,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            pool_mode: "transaction".into(),
            extra_top: String::new(),
            extra_tables: String::new(),
            backends: None,
            env: Vec::new(),
            open_files: None,
        }
    }
}

/// A running proxy process. Dropping it sends SIGTERM, waits up to 10 s, then SIGKILLs; if
/// the test is panicking, the last 100 lines of the proxy's log go to stderr.
pub struct Proxy {
    child: Mutex<Child>,
    exit: Mutex<Option<ExitStatus>>,
    /// `sh` holding a pipe from us: SIGKILLs the proxy if the test process dies.
    watchdog: Mutex<Option<Child>>,
    port: u16,
    http_port: u16,
    dir: tempfile::TempDir,
    config_path: PathBuf,
    log_path: PathBuf,
    opts: Mutex<ProxyOptions>,
    backends: Vec<(String, String)>,
}

impl Proxy {
    /// Starts the proxy with default options plus `extra` TOML appended at the end
    /// (e.g. `"[pool]\nsize = 4\n"`). Panics (with the proxy's log) if it doesn't come up.
    pub fn start(cluster: &LocalCluster, extra: &str) -> Proxy {
        Self::start_with(
            cluster,
            ProxyOptions {
                extra_tables: extra.to_string(),
                ..Default::default()
            },
        )
    }

    /// Starts the proxy and waits (30 s) until its listen port accepts TCP connections.
    pub fn start_with(cluster: &LocalCluster, opts: ProxyOptions) -> Proxy {
        let backends = opts.backends.clone().unwrap_or_else(|| {
            cluster
                .nodes()
                .iter()
                .map(|n| (n.name().to_string(), n.addr()))
                .collect()
        });
        Self::start_backends(backends, opts)
    }

    /// Starts the proxy with explicit `(name, address)` backends (no cluster needed).
    pub fn start_backends(backends: Vec<(String, String)>, opts: ProxyOptions) -> Proxy {
        Self::start_backends_on(backends, opts, free_port_pair)
    }

    /// [`start_backends`](Self::start_backends) on the `(port, http_port)` pairs `ports`
    /// gives. The ports are free when picked but another process may take one before the
    /// proxy binds it: when the proxy exits at startup because an address is in use, it is
    /// started again on the next pair (up to [`SPAWN_ATTEMPTS`] times). It is ready once this
    /// very process listens on both ports (read from /proc, so that another program on a
    /// port is never taken for it).
    pub fn start_backends_on(
        backends: Vec<(String, String)>,
        opts: ProxyOptions,
        mut ports: impl FnMut() -> (u16, u16),
    ) -> Proxy {
        for attempt in 1..=SPAWN_ATTEMPTS {
            let (port, http_port) = ports();
            let proxy = Self::spawn(backends.clone(), opts.clone(), port, http_port);
            match proxy.wait_listening(Duration::from_secs(30)) {
                Ok(()) => return proxy,
                Err(Startup::AddrInUse) if attempt < SPAWN_ATTEMPTS => {
                    eprintln!(
                        "switchyard could not listen on {port} or {http_port} (address in use): \
                         retrying on other ports"
                    );
                    drop(proxy);
                }
                Err(Startup::AddrInUse) => panic!(
                    "switchyard found its ports in use {SPAWN_ATTEMPTS} times\nlog:\n{}",
                    proxy.log_tail(100)
                ),
                Err(Startup::Failed(why)) => panic!("{why}"),
            }
        }
        unreachable!()
    }

    /// Another switchyard with this one's configuration and client port (which only
    /// `so_reuseport` lets two processes share), and its own HTTP port when `own_http`. Not
    /// waited for: it may fail to start.
    pub fn start_beside(&self, own_http: bool) -> Proxy {
        let http_port = if own_http {
            let l = TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().unwrap().port()
        } else {
            self.http_port
        };
        let opts = self.opts.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Self::spawn(self.backends.clone(), opts, self.port, http_port)
    }

    /// The process, started with a config for these ports.
    fn spawn(
        backends: Vec<(String, String)>,
        opts: ProxyOptions,
        port: u16,
        http_port: u16,
    ) -> Proxy {
        let dir = tempfile::Builder::new()
            .prefix("switchyard-proxy-")
            .tempdir()
            .expect("creating proxy temp dir");
        let config_path = dir.path().join("switchyard.toml");
        let log_path = dir.path().join("proxy.log");
        std::fs::write(
            &config_path,
            render_config(port, http_port, &backends, &opts),
        )
        .expect("writing proxy config");

        let log = std::fs::File::create(&log_path).expect("creating proxy log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
        cmd.arg("run")
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        if let Some(n) = opts.open_files {
            use std::os::unix::process::CommandExt;
            let lim = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            // SAFETY: only setrlimit (async-signal-safe) runs between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", env!("CARGO_BIN_EXE_switchyard")));
        let watchdog = spawn_kill_on_exit_watchdog(child.id(), dir.path());

        Proxy {
            child: Mutex::new(child),
            exit: Mutex::new(None),
            watchdog: Mutex::new(watchdog),
            port,
            http_port,
            dir,
            config_path,
            log_path,
            opts: Mutex::new(opts),
            backends,
        }
    }

    /// Waits until this process listens on both its ports (tests go to /status or /metrics
    /// first thing). `AddrInUse` when it exited because an address was taken.
    fn wait_listening(&self, timeout: Duration) -> Result<(), Startup> {
        let deadline = Instant::now() + timeout;
        let pid = self.pid();
        loop {
            if let Some(status) = self.try_exit_status() {
                let log = self.log();
                if log.contains("Address already in use") {
                    return Err(Startup::AddrInUse);
                }
                return Err(Startup::Failed(format!(
                    "switchyard exited during startup with {status}\nconfig:\n{}\nlog:\n{}",
                    std::fs::read_to_string(&self.config_path).unwrap_or_default(),
                    self.log_tail(100)
                )));
            }
            let ours = |port: u16| match process_listens_on(pid, port) {
                Some(ours) => ours,
                // No /proc to read: a TCP connection is the best evidence there is.
                None => std::net::TcpStream::connect_timeout(
                    &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                    Duration::from_millis(200),
                )
                .is_ok(),
            };
            if ours(self.port) && ours(self.http_port) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Startup::Failed(format!(
                    "switchyard did not listen on {} (http {}) within {timeout:?}\nlog:\n{}",
                    self.addr(),
                    self.http_port,
                    self.log_tail(100)
                )));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn lock_child(&self) -> MutexGuard<'_, Child> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn try_exit_status(&self) -> Option<ExitStatus> {
        let mut exit = self.exit.lock().unwrap_or_else(|e| e.into_inner());
        if exit.is_none() {
            if let Ok(Some(s)) = self.lock_child().try_wait() {
                *exit = Some(s);
            }
        }
        *exit
    }

    /// The proxy's PostgreSQL port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The admin/metrics HTTP port on 127.0.0.1.
    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// "127.0.0.1:PORT".
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.lock_child().id()
    }

    /// The backends written into the config, `(name, address)`.
    pub fn backends(&self) -> &[(String, String)] {
        &self.backends
    }

    /// "host=127.0.0.1 port=PORT user=.. password=.. dbname=.." (password left out when
    /// empty).
    pub fn conn_string(&self, user: &str, password: &str, db: &str) -> String {
        let mut s = format!("host=127.0.0.1 port={} user={user}", self.port);
        if !password.is_empty() {
            s.push_str(&format!(" password={password}"));
        }
        s.push_str(&format!(" dbname={db}"));
        s
    }

    /// Connects through the proxy (NoTls, 10 s connect timeout) and spawns the connection
    /// task. Panics with the proxy's log on failure; see [`try_connect`](Self::try_connect).
    pub async fn connect(&self, user: &str, password: &str, db: &str) -> tokio_postgres::Client {
        match self.try_connect(user, password, db).await {
            Ok(c) => c,
            Err(e) => panic!(
                "connecting to the proxy as {user}/{db} failed: {e} ({:?})\nproxy log:\n{}",
                e,
                self.log_tail(50)
            ),
        }
    }

    /// Like [`connect`](Self::connect) but returns the error.
    pub async fn try_connect(
        &self,
        user: &str,
        password: &str,
        db: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        self.try_connect_as(user, password, db, None).await
    }

    /// [`try_connect`](Self::try_connect) with an `application_name`. The names go into a
    /// `tokio_postgres::Config`, so any role or database name works without quoting.
    pub async fn try_connect_as(
        &self,
        user: &str,
        password: &str,
        db: &str,
        application_name: Option<&str>,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let mut cfg = tokio_postgres::Config::new();
        // An empty password too: a server that asks for one gets it (and refuses it).
        cfg.host("127.0.0.1")
            .port(self.port)
            .user(user)
            .password(password)
            .dbname(db)
            .connect_timeout(Duration::from_secs(10));
        if let Some(name) = application_name {
            cfg.application_name(name);
        }
        let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    /// Connects as the application user to the application database.
    pub async fn connect_app(&self) -> tokio_postgres::Client {
        self.connect(localpg::APP_USER, localpg::APP_PASSWORD, localpg::APP_DB)
            .await
    }

    /// Path of the config file the proxy was started with.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The proxy's temp dir (config and log live here).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Rewrites the config file with `extra` as the trailing TOML (replacing what was
    /// appended before; ports, backends and users stay). Call [`reload`](Self::reload) after.
    pub fn rewrite_config(&self, extra: &str) {
        let mut opts = self.opts.lock().unwrap_or_else(|e| e.into_inner());
        opts.extra_tables = extra.to_string();
        let text = render_config(self.port, self.http_port, &self.backends, &opts);
        self.write_config_atomically(&text);
    }

    /// Rewrites the config file with these backends instead of the ones it was started with
    /// (the rest as last rendered). Call [`reload`](Self::reload) after.
    pub fn rewrite_backends(&self, backends: &[(String, String)]) {
        let opts = self.opts.lock().unwrap_or_else(|e| e.into_inner());
        let text = render_config(self.port, self.http_port, backends, &opts);
        self.write_config_atomically(&text);
    }

    /// Replaces the whole config file with `text` (for tests of bad configs and reloads).
    pub fn write_raw_config(&self, text: &str) {
        self.write_config_atomically(text);
    }

    /// The config text as last rendered.
    pub fn config_text(&self) -> String {
        std::fs::read_to_string(&self.config_path).unwrap_or_default()
    }

    fn write_config_atomically(&self, text: &str) {
        let tmp = self.config_path.with_extension("toml.new");
        let mut f = std::fs::File::create(&tmp).expect("writing new config");
        f.write_all(text.as_bytes()).expect("writing new config");
        f.sync_all().ok();
        std::fs::rename(&tmp, &self.config_path).expect("renaming new config");
    }

    /// SIGHUP: reload the config.
    pub fn reload(&self) {
        self.signal(libc::SIGHUP);
    }

    /// Sends signal `sig` (e.g. `libc::SIGTERM`) to the proxy process.
    pub fn signal(&self, sig: i32) {
        if self.try_exit_status().is_some() {
            return;
        }
        let pid = self.lock_child().id() as i32;
        // SAFETY: plain kill(2) on our own, not yet reaped, child.
        unsafe {
            libc::kill(pid, sig);
        }
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub fn wait_exit(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_exit_status() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&self) -> bool {
        self.try_exit_status().is_none()
    }

    /// Everything the proxy wrote to stdout/stderr so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log_path).unwrap_or_default()).into_owned()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Path of the log file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// `GET /status` as JSON (panics unless 200 and JSON).
    pub async fn status(&self) -> serde_json::Value {
        let (code, body) = self.http_get("/status").await;
        assert_eq!(code, 200, "GET /status: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("/status is not JSON: {e}: {body}"))
    }

    /// Polls `/status` until `pred` holds (returning it), every 50 ms; panics with the last
    /// status after `within`, naming `what`.
    pub async fn wait_status(
        &self,
        what: &str,
        within: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + within;
        loop {
            let s = self.status().await;
            if pred(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "/status never showed {what} within {within:?}: {s:#}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET path` on the HTTP port (HTTP/1.1, `Connection: close`, 10 s timeout); returns
    /// the status code and the body (chunked encoding decoded). Panics on I/O errors.
    pub async fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.http_port, path)
            .await
            .unwrap_or_else(|e| panic!("GET {path} on 127.0.0.1:{}: {e}", self.http_port))
    }

    /// The value of one series of `/metrics` (e.g. `switchyard_errors_total{sqlstate="53300"}`),
    /// 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let (code, body) = self.http_get("/metrics").await;
        assert_eq!(code, 200, "GET /metrics: {body}");
        body.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.strip_prefix(' '))
                    .and_then(|v| v.trim().parse::<f64>().ok())
            })
            .unwrap_or(0.0)
    }

    /// SIGHUP, then waits (20 s) until the proxy has accepted one more reload.
    pub async fn reload_ok(&self) {
        let series = "switchyard_reloads_total{result=\"ok\"}";
        let before = self.metric(series).await;
        self.reload();
        self.wait_metric(series, before + 1.0, Duration::from_secs(20))
            .await;
    }

    /// Waits until the metric `series` reaches `at_least`; panics with the log tail after
    /// `within`.
    pub async fn wait_metric(&self, series: &str, at_least: f64, within: Duration) {
        let deadline = Instant::now() + within;
        while self.metric(series).await < at_least {
            assert!(
                Instant::now() < deadline,
                "{series} did not reach {at_least} within {within:?}:\n{}",
                self.log_tail(20)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Disarm the watchdog first, so it can never signal a reaped (reused) pid.
        if let Some(mut w) = self
            .watchdog
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = w.kill();
            let _ = w.wait();
        }
        if self.try_exit_status().is_none() {
            self.signal(libc::SIGTERM);
            if self.wait_exit(Duration::from_secs(10)).is_none() {
                eprintln!("switchyard did not exit within 10 s of SIGTERM; killing it");
                let mut c = self.lock_child();
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "----- last 100 lines of the switchyard log ({}) -----\n{}\n----- end of switchyard log -----",
                self.log_path.display(),
                self.log_tail(100)
            );
        }
    }
}

fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The TOML config: top-level keys, `[[backends]]`, `[[users]]`, then `extra_tables`.
pub fn render_config(
    port: u16,
    http_port: u16,
    backends: &[(String, String)],
    opts: &ProxyOptions,
) -> String {
    use localpg::*;
    let mut s = String::new();
    s.push_str(&format!("listen = \"127.0.0.1:{port}\"\n"));
    s.push_str(&format!("http_listen = \"127.0.0.1:{http_port}\"\n"));
    s.push_str(&format!("pool_mode = {}\n", toml_str(&opts.pool_mode)));
    if !opts.extra_top.is_empty() {
        s.push_str(&opts.extra_top);
        if !opts.extra_top.ends_with('\n') {
            s.push('\n');
        }
    }
    for (name, addr) in backends {
        s.push_str(&format!(
            "\n[[backends]]\nname = {}\naddress = {}\n",
            toml_str(name),
            toml_str(addr)
        ));
    }
    let users: [(&str, Option<&str>, Option<&str>); 6] = [
        (APP_USER, Some(APP_PASSWORD), None),
        (MD5_USER, Some(MD5_PASSWORD), Some("md5")),
        (PLAIN_USER, Some(PLAIN_PASSWORD), None),
        (TRUST_USER, None, Some("trust")),
        (OTHER_USER, Some(OTHER_PASSWORD), None),
        (SUPERUSER, Some(SUPERUSER_PASSWORD), None),
    ];
    for (name, password, auth) in users {
        s.push_str(&format!("\n[[users]]\nname = {}\n", toml_str(name)));
        if let Some(p) = password {
            s.push_str(&format!("password = {}\n", toml_str(p)));
        }
        if let Some(a) = auth {
            s.push_str(&format!("auth = {}\n", toml_str(a)));
        }
    }
    if !opts.extra_tables.is_empty() {
        s.push('\n');
        s.push_str(&opts.extra_tables);
        if !opts.extra_tables.ends_with('\n') {
            s.push('\n');
        }
    }
    s
}

/// `sh` in its own session that, once our end of its stdin closes (i.e. when the test process
/// exits without dropping the Proxy, as with one kept in a `static`), SIGKILLs `pid` and
/// removes the proxy's temp dir `dir` (config and log).
fn spawn_kill_on_exit_watchdog(pid: u32, dir: &Path) -> Option<Child> {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(
            "while read -r _; do :; done; kill -9 \"$1\" 2>/dev/null; \
             sleep 0.2 2>/dev/null || sleep 1; rm -rf -- \"$2\"",
        )
        .arg("switchyard-proxy-watchdog")
        .arg(pid.to_string())
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .current_dir("/");
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    cmd.spawn().ok()
}

/// How many times [`Proxy::start_backends_on`] starts the proxy when its ports were taken.
pub const SPAWN_ATTEMPTS: usize = 5;

/// Why a started proxy is not ready.
enum Startup {
    /// It exited because an address it was to listen on is in use.
    AddrInUse,
    /// Anything else (the message says what).
    Failed(String),
}

/// Two distinct ports that were free a moment ago on 127.0.0.1.
pub fn free_port_pair() -> (u16, u16) {
    // Hold both at once so they differ.
    let a = TcpListener::bind("127.0.0.1:0").expect("free port");
    let b = TcpListener::bind("127.0.0.1:0").expect("free port");
    (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    )
}

/// Whether process `pid` has a TCP socket listening on `port` (IPv4 or IPv6), from
/// /proc/net/tcp{,6} and /proc/`pid`/fd. `None` when /proc cannot tell (not Linux, or not
/// readable).
pub fn process_listens_on(pid: u32, port: u16) -> Option<bool> {
    let mut inodes = Vec::new();
    let mut readable = false;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        readable = true;
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            if f.len() < 10 || f[3] != "0A" {
                continue;
            }
            let local_port = f[1]
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) {
                inodes.push(format!("socket:[{}]", f[9]));
            }
        }
    }
    if !readable {
        return None;
    }
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
    }))
}

/// A minimal HTTP/1.1 GET against 127.0.0.1:`port`.
pub async fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: switchyard-tests\r\n\
             Accept: */*\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "HTTP GET timed out"))??;
    parse_http_response(&buf)
}

/// Parses a complete HTTP/1.1 response: (status, body).
pub fn parse_http_response(buf: &[u8]) -> std::io::Result<(u16, String)> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of HTTP headers"))?;
    let head = String::from_utf8_lossy(&buf[..split]);
    let mut body = &buf[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(&format!("bad status line {status_line:?}")))?;
    let mut chunked = false;
    let mut content_length: Option<usize> = None;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            let v = v.trim();
            if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
                chunked = true;
            } else if k == "content-length" {
                content_length = v.parse().ok();
            }
        }
    }
    let body = if chunked {
        let mut out = Vec::new();
        loop {
            let nl = body
                .windows(2)
                .position(|w| w == b"\r\n")
                .ok_or_else(|| bad("truncated chunk size"))?;
            let size_str = String::from_utf8_lossy(&body[..nl]);
            let size = usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| bad("bad chunk size"))?;
            body = &body[nl + 2..];
            if size == 0 {
                break;
            }
            if body.len() < size {
                return Err(bad("truncated chunk"));
            }
            out.extend_from_slice(&body[..size]);
            body = &body[(size + 2).min(body.len())..];
        }
        out
    } else {
        let n = content_length.unwrap_or(body.len()).min(body.len());
        body[..n].to_vec()
    };
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
