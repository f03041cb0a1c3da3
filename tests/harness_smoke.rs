//! Smoke tests for the test harness itself: local clusters, replication helpers, the
//! crash watchdog, the fault-injecting relay and the proxy config writer.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::relay::{Mode, Relay};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WATCHDOG_CHILD_ENV: &str = "SWITCHYARD_HARNESS_WATCHDOG_CHILD";

#[test]
fn binaries_are_found() {
    let b = PgBinaries::find().expect("PostgreSQL binaries");
    assert!(b.bin("initdb").exists(), "{b:?}");
    assert!(b.major_version().is_some(), "{b:?}");
}

#[tokio::test]
async fn shared_cluster_roles_and_replication() {
    let c = shared_cluster();
    assert_eq!(c.nodes().len(), 3);
    assert_eq!(c.replicas().len(), 2);
    let p = c.primary();
    assert_eq!(p.name(), "pg0");
    assert_eq!(p.addr(), format!("127.0.0.1:{}", p.port()));
    assert!(!p.is_in_recovery());
    for r in c.replicas() {
        assert!(r.is_in_recovery(), "{} should be in recovery", r.name());
    }
    let streaming = p
        .psql(
            "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming' ORDER BY 1",
        )
        .unwrap();
    assert_eq!(streaming, "pg1\npg2");

    // A write on the primary shows up on every replica.
    p.psql_db(
        APP_DB,
        "CREATE TABLE harness_smoke_t (id int PRIMARY KEY, v text); \
         INSERT INTO harness_smoke_t SELECT g, 'v' || g FROM generate_series(1, 100) g",
    )
    .unwrap();
    c.wait_replicas_caught_up(Duration::from_secs(30)).unwrap();
    for r in c.replicas() {
        assert_eq!(
            r.psql_db(APP_DB, "SELECT count(*) FROM harness_smoke_t")
                .unwrap(),
            "100"
        );
        assert!(r.replay_lsn().unwrap().is_some());
    }
    assert!(p.replay_lsn().unwrap().is_none());
    assert!(p.current_wal_lsn().unwrap() > Lsn(0));

    // Every role/auth method in pg_hba works over TCP, on primary and replica.
    let logins = [
        (APP_USER, APP_PASSWORD, APP_DB),
        (MD5_USER, MD5_PASSWORD, "postgres"),
        (PLAIN_USER, PLAIN_PASSWORD, "postgres"),
        (TRUST_USER, "", "postgres"),
        (OTHER_USER, OTHER_PASSWORD, APP_DB),
        (SUPERUSER, SUPERUSER_PASSWORD, "postgres"),
    ];
    for node in [p, &c.replicas()[0]] {
        for (user, password, db) in logins {
            let cs = node.conn_string(user, password, db);
            let (client, conn) = tokio_postgres::connect(&cs, tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("{cs}: {e}"));
            let h = tokio::spawn(conn);
            let row = client
                .query_one("SELECT current_user::text", &[])
                .await
                .unwrap();
            assert_eq!(row.get::<_, String>(0), user);
            drop(client);
            let _ = h.await;
        }
        // Wrong password is rejected.
        let cs = node.conn_string(APP_USER, "wrong", APP_DB);
        assert!(tokio_postgres::connect(&cs, tokio_postgres::NoTls)
            .await
            .is_err());
    }

    // The md5 role's password really is stored as md5.
    assert_eq!(
        p.psql(&format!(
            "SELECT left(rolpassword, 3) FROM pg_authid WHERE rolname = '{MD5_USER}'"
        ))
        .unwrap(),
        "md5"
    );
    // app can create tables in its database and in postgres.public.
    let (client, conn) = tokio_postgres::connect(
        &p.conn_string(APP_USER, APP_PASSWORD, "postgres"),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS harness_app_owned (x int)")
        .await
        .unwrap();

    if c.binaries().has_pg_stat_statements() {
        assert_eq!(
            p.psql("SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'")
                .unwrap(),
            "1"
        );
        assert_eq!(p.psql("SHOW compute_query_id").unwrap(), "on");
    }
    assert_eq!(p.psql("SHOW fsync").unwrap(), "off");
    assert_eq!(p.psql("SHOW max_connections").unwrap(), "300");
    assert_eq!(
        p.psql("SHOW unix_socket_directories").unwrap(),
        p.data_dir().to_string_lossy()
    );
    assert!(p.log_file().exists());
}

#[test]
fn pause_resume_kill_stop_restart() {
    let c = own_cluster(1);
    let p = c.primary();
    let r = &c.replicas()[0];
    p.psql("CREATE TABLE t (id int)").unwrap();
    c.wait_replicas_caught_up(Duration::from_secs(30)).unwrap();

    // Paused replay: the replica falls behind until resumed.
    r.pause_replay().unwrap();
    p.psql("INSERT INTO t VALUES (1)").unwrap();
    let err = c
        .wait_replicas_caught_up(Duration::from_millis(700))
        .unwrap_err();
    assert!(matches!(err, LocalPgError::Timeout { .. }), "{err}");
    assert_eq!(r.psql("SELECT count(*) FROM t").unwrap(), "0");
    r.resume_replay().unwrap();
    c.wait_replicas_caught_up(Duration::from_secs(30)).unwrap();
    assert_eq!(r.psql("SELECT count(*) FROM t").unwrap(), "1");

    // SIGKILL: the port closes; start brings it back as a streaming replica.
    let port = r.port();
    assert!(r.is_running());
    r.kill();
    assert!(!r.is_running());
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    p.psql("INSERT INTO t VALUES (2)").unwrap();
    // Stopped nodes are skipped by wait_replicas_caught_up.
    c.wait_replicas_caught_up(Duration::from_secs(5)).unwrap();
    r.start().unwrap();
    assert_eq!(r.port(), port);
    assert!(r.is_in_recovery());
    r.wait_streaming_from(p, Duration::from_secs(30)).unwrap();
    c.wait_replicas_caught_up(Duration::from_secs(30)).unwrap();
    assert_eq!(r.psql("SELECT count(*) FROM t").unwrap(), "2");

    // Kill and restart the primary too.
    p.kill();
    p.start().unwrap();
    assert!(!p.is_in_recovery());
    p.psql("INSERT INTO t VALUES (3)").unwrap();
    r.wait_streaming_from(p, Duration::from_secs(60)).unwrap();
    c.wait_replicas_caught_up(Duration::from_secs(30)).unwrap();
    assert_eq!(r.psql("SELECT count(*) FROM t").unwrap(), "3");

    // pg_ctl stop, then start.
    r.stop();
    assert!(!r.is_running());
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    r.start().unwrap();
    assert!(r.is_in_recovery());
    assert_eq!(r.psql("SELECT count(*) FROM t").unwrap(), "3");
}

#[test]
fn promote_follow_and_rebuild() {
    let c = own_cluster(2);
    let [pg0, pg1, pg2] = [&c.nodes()[0], &c.nodes()[1], &c.nodes()[2]];
    pg0.psql("CREATE TABLE f (id int)").unwrap();
    c.wait_replicas_caught_up(Duration::from_secs(30)).unwrap();

    pg0.kill();
    pg1.promote().unwrap();
    assert!(!pg1.is_in_recovery());
    assert_eq!(c.current_primary().map(|n| n.name()), Some("pg1"));
    pg1.psql("INSERT INTO f VALUES (1)").unwrap();

    pg2.follow(pg1).unwrap();
    pg2.wait_streaming_from(pg1, Duration::from_secs(60))
        .unwrap();
    pg0.rebuild_as_replica_of(pg1).unwrap();
    assert!(pg0.is_in_recovery());
    c.wait_replicas_caught_up(Duration::from_secs(30)).unwrap();
    for n in [pg0, pg2] {
        assert_eq!(
            n.psql("SELECT count(*) FROM f").unwrap(),
            "1",
            "{}",
            n.name()
        );
    }
}

/// Run as a child process by `watchdog_cleans_up_after_owner_is_sigkilled` (which passes
/// `--ignored`): starts a cluster and a proxy in front of it (kept in a `static`, as
/// startup_auth.rs and bad_input.rs keep theirs, so never dropped), reports them on stdout,
/// then waits to be killed. Ignored in a normal run, where it would check nothing.
#[test]
#[ignore = "helper process of watchdog_cleans_up_after_owner_is_sigkilled, which runs it"]
fn watchdog_child_process() {
    if std::env::var_os(WATCHDOG_CHILD_ENV).is_none() {
        return;
    }
    static PROXY: std::sync::OnceLock<support::proxy::Proxy> = std::sync::OnceLock::new();
    let c = LocalCluster::start(ClusterOptions {
        replicas: 1,
        ..Default::default()
    })
    .unwrap();
    let proxy = PROXY.get_or_init(|| support::proxy::Proxy::start(&c, ""));
    let pids: Vec<String> = c
        .nodes()
        .iter()
        .map(|n| n.pid().unwrap().to_string())
        .collect();
    let ports: Vec<String> = c.nodes().iter().map(|n| n.port().to_string()).collect();
    println!(
        "LOCALPG_READY {} {} {} {} {} {}",
        c.dir().display(),
        pids.join(","),
        ports.join(","),
        proxy.pid(),
        proxy.dir().display(),
        proxy.port()
    );
    use std::io::Write;
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(120));
}

/// Kills and reaps a child process when dropped (also when the test panics first).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // A child already reaped is not signalled again (std keeps its status).
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // A zombie waiting for a (container) init to reap it is gone for our purposes.
        Ok(s) => s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

fn children_of(parents: &[i32]) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok());
        if ppid.is_some_and(|pp| parents.contains(&pp)) {
            out.push(pid);
        }
    }
    out
}

/// A test process SIGKILLed while it owns a cluster and a proxy (in a `static`): the
/// watchdogs kill the postmasters, their children and the proxy, and remove the cluster's
/// and the proxy's directories.
#[test]
fn watchdog_cleans_up_after_owner_is_sigkilled() {
    let exe = std::env::current_exe().unwrap();
    let mut child = KillOnDrop(
        Command::new(exe)
            .args([
                "--exact",
                "watchdog_child_process",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(WATCHDOG_CHILD_ENV, "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest prints "test name ... " on the same line before the test's output.
            if let Some(i) = line.find("LOCALPG_READY ") {
                let _ = tx.send(line[i + "LOCALPG_READY ".len()..].trim().to_string());
            }
        }
    });
    let ready = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("child never reported its cluster");
    let f: Vec<&str> = ready.split(' ').collect();
    let dir = std::path::PathBuf::from(f[0]);
    let pids: Vec<i32> = f[1].split(',').map(|p| p.parse().unwrap()).collect();
    let mut ports: Vec<u16> = f[2].split(',').map(|p| p.parse().unwrap()).collect();
    let proxy_pid: i32 = f[3].parse().unwrap();
    let proxy_dir = std::path::PathBuf::from(f[4]);
    ports.push(f[5].parse().unwrap());
    assert!(dir.exists());
    assert!(proxy_dir.join("proxy.log").exists(), "{proxy_dir:?}");
    assert!(pids.iter().all(|p| !process_gone(*p)));
    assert!(!process_gone(proxy_pid));
    // The postmasters' children (backends, walsender/receiver, ...) must go too.
    let mut all = pids.clone();
    all.extend(children_of(&pids));
    assert!(all.len() > pids.len() + 4, "{all:?}");
    all.push(proxy_pid);

    // SIGKILL: no destructor runs in the child.
    child.0.kill().unwrap();
    child.0.wait().unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let alive: Vec<i32> = all.iter().copied().filter(|p| !process_gone(*p)).collect();
        let open: Vec<u16> = ports
            .iter()
            .copied()
            .filter(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok())
            .collect();
        if alive.is_empty() && open.is_empty() && !dir.exists() && !proxy_dir.exists() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after the owner was killed: processes alive {alive:?} (proxy {proxy_pid}), ports \
             open {open:?}, cluster dir exists: {}, proxy dir exists: {}",
            dir.exists(),
            proxy_dir.exists()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn echo_server() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let h = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (addr, h)
}

async fn roundtrip(s: &mut tokio::net::TcpStream, msg: &[u8]) {
    s.write_all(msg).await.unwrap();
    let mut got = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got))
        .await
        .expect("echo timed out")
        .unwrap();
    assert_eq!(got, msg);
}

/// Reads with a short timeout: `None` if nothing arrived, `Some(Ok(0))` on EOF.
async fn read_within(s: &mut tokio::net::TcpStream, ms: u64) -> Option<std::io::Result<usize>> {
    let mut buf = [0u8; 64];
    tokio::time::timeout(Duration::from_millis(ms), s.read(&mut buf))
        .await
        .ok()
}

#[tokio::test]
async fn relay_modes() {
    let (echo, _h) = echo_server().await;
    let relay = Relay::start(echo);
    assert_eq!(relay.mode(), Mode::Pass);
    let connect = || tokio::net::TcpStream::connect(relay.addr());

    // Pass.
    let mut a = connect().await.unwrap();
    roundtrip(&mut a, b"hello").await;

    // Blackhole: nothing moves on old or new connections...
    relay.set_mode(Mode::Blackhole);
    a.write_all(b"held").await.unwrap();
    assert!(read_within(&mut a, 300).await.is_none());
    let mut b = connect().await.unwrap();
    b.write_all(b"new").await.unwrap();
    assert!(read_within(&mut b, 300).await.is_none());
    // ...until it heals: held bytes are delivered late, like TCP after a partition.
    relay.set_mode(Mode::Pass);
    let mut got = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), a.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got, b"held");
    let mut got = [0u8; 3];
    tokio::time::timeout(Duration::from_secs(5), b.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got, b"new");

    // Refuse: new connections are closed at once; existing ones keep working.
    relay.set_mode(Mode::Refuse);
    // (The RST can even beat connect() to reporting success.)
    if let Ok(mut c) = connect().await {
        match read_within(&mut c, 2000).await {
            Some(Ok(0)) | Some(Err(_)) => {}
            other => panic!("refused connection should be closed, got {other:?}"),
        }
    }
    roundtrip(&mut a, b"still").await;
    relay.set_mode(Mode::Pass);

    // reset_all: every current connection is reset; new ones work.
    assert_eq!(relay.active_connections(), 2);
    relay.reset_all();
    assert_eq!(relay.active_connections(), 0);
    for s in [&mut a, &mut b] {
        match read_within(s, 2000).await {
            Some(Ok(0)) | Some(Err(_)) => {}
            other => panic!("reset connection should be closed, got {other:?}"),
        }
    }
    let mut d = connect().await.unwrap();
    roundtrip(&mut d, b"after reset").await;
    assert_eq!(relay.accepted(), 4);

    // Dropping the relay stops it: its connections close. (Not checked by connecting to its
    // port again: once freed, the port may already be another test's, run alongside.)
    drop(relay);
    match read_within(&mut d, 2000).await {
        Some(Ok(0)) | Some(Err(_)) => {}
        other => panic!("connection should be closed when the relay stops, got {other:?}"),
    }
}

#[tokio::test]
async fn relay_in_front_of_postgres() {
    let c = shared_cluster();
    let relay = Relay::for_node(c.primary());
    let cs = format!(
        "host=127.0.0.1 port={} user={APP_USER} password={APP_PASSWORD} dbname={APP_DB} \
         connect_timeout=5",
        relay.port()
    );
    let (client, conn) = tokio_postgres::connect(&cs, tokio_postgres::NoTls)
        .await
        .unwrap();
    let h = tokio::spawn(conn);
    let row = client.query_one("SELECT 1 + 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 2);
    relay.set_mode(Mode::Blackhole);
    let q = tokio::time::timeout(
        Duration::from_millis(500),
        client.query_one("SELECT 1", &[]),
    )
    .await;
    assert!(q.is_err(), "query through a blackholed relay should hang");
    relay.reset_all();
    let r = tokio::time::timeout(Duration::from_secs(5), h)
        .await
        .unwrap()
        .unwrap();
    assert!(r.is_err(), "connection should fail after reset");
}

#[test]
fn proxy_config_is_valid_toml() {
    use support::proxy::{render_config, ProxyOptions};
    let opts = ProxyOptions {
        extra_top: "log_level = \"debug\"".into(),
        extra_tables: "[pool]\nsize = 4\n".into(),
        ..Default::default()
    };
    let backends = vec![
        ("pg0".to_string(), "127.0.0.1:5000".to_string()),
        ("pg1".to_string(), "127.0.0.1:5001".to_string()),
    ];
    let text = render_config(6432, 8080, &backends, &opts);
    let v: toml::Value = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(v["listen"].as_str(), Some("127.0.0.1:6432"));
    assert_eq!(v["http_listen"].as_str(), Some("127.0.0.1:8080"));
    assert_eq!(v["pool_mode"].as_str(), Some("transaction"));
    assert_eq!(v["log_level"].as_str(), Some("debug"));
    assert_eq!(v["pool"]["size"].as_integer(), Some(4));
    let b = v["backends"].as_array().unwrap();
    assert_eq!(b.len(), 2);
    assert_eq!(b[1]["address"].as_str(), Some("127.0.0.1:5001"));
    let users = v["users"].as_array().unwrap();
    let find = |n: &str| {
        users
            .iter()
            .find(|u| u["name"].as_str() == Some(n))
            .unwrap()
    };
    assert_eq!(find(APP_USER)["password"].as_str(), Some(APP_PASSWORD));
    assert_eq!(find(MD5_USER)["auth"].as_str(), Some("md5"));
    assert_eq!(find(TRUST_USER)["auth"].as_str(), Some("trust"));
    assert!(find(TRUST_USER).get("password").is_none());
}

#[test]
fn http_response_parsing() {
    use support::proxy::parse_http_response;
    let r = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
    assert_eq!(parse_http_response(r).unwrap(), (200, "hello".into()));
    let r = b"HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\n\r\n\
              3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
    assert_eq!(parse_http_response(r).unwrap(), (503, "abcde".into()));
}

/// (idle + in use, size) of the proxy's pool for app/app on `backend`, from `/status`.
fn app_pool(status: &serde_json::Value, backend: &str) -> Option<u64> {
    status["pools"].as_array()?.iter().find_map(|p| {
        (p["backend"] == backend && p["user"] == APP_USER && p["database"] == APP_DB)
            .then(|| p["size"].as_u64())
            .flatten()
    })
}

/// The Proxy helper against the real binary: starts, serves a query and HTTP, applies a new
/// pool size on SIGHUP (seen in /status), stops on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_helper_end_to_end() {
    use support::proxy::Proxy;
    let c = shared_cluster();
    let proxy = Proxy::start(c, "[routing]\nread_write_split = false\n[pool]\nsize = 4\n");
    assert!(proxy.config_path().exists());
    let client = proxy.connect(APP_USER, APP_PASSWORD, APP_DB).await;
    let row = client.query_one("SELECT 40 + 2", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    let (status, _body) = proxy.http_get("/livez").await;
    assert_eq!(status, 200);
    let primary = c.primary().name();
    assert_eq!(app_pool(&proxy.status().await, primary), Some(4));
    proxy.rewrite_config("[routing]\nread_write_split = false\n[pool]\nsize = 5\n");
    proxy.reload_ok().await;
    proxy
        .wait_status("the pool resized to 5", Duration::from_secs(20), |s| {
            app_pool(s, primary) == Some(5)
        })
        .await;
    assert!(proxy.is_running());
    let row = client.query_one("SELECT 40 + 3", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 43);
    drop(client);
    proxy.signal(libc::SIGTERM);
    let exit = tokio::task::block_in_place(|| proxy.wait_exit(Duration::from_secs(30)));
    assert!(
        exit.is_some_and(|s| s.success()),
        "{exit:?}\n{}",
        proxy.log_tail(20)
    );
}

/// The proxy's ports are picked free but may be taken before it binds them: the harness then
/// starts it again on other ports, and takes it as ready only once this very process listens
/// (never another program on its port).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_start_retries_when_its_port_was_taken() {
    use support::proxy::{free_port_pair, process_listens_on, Proxy, ProxyOptions};
    let c = shared_cluster();
    // Another program on the first port the proxy is given.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap().port();
    let mut picks = 0;
    let backends = c
        .nodes()
        .iter()
        .map(|n| (n.name().to_string(), n.addr()))
        .collect();
    let proxy = tokio::task::block_in_place(|| {
        Proxy::start_backends_on(backends, ProxyOptions::default(), || {
            picks += 1;
            let (port, http_port) = free_port_pair();
            if picks == 1 {
                (taken, http_port)
            } else {
                (port, http_port)
            }
        })
    });
    assert_eq!(picks, 2, "the proxy was not started again on other ports");
    assert_ne!(proxy.port(), taken);
    assert_eq!(process_listens_on(proxy.pid(), proxy.port()), Some(true));
    assert_eq!(
        process_listens_on(proxy.pid(), proxy.http_port()),
        Some(true)
    );
    assert_eq!(process_listens_on(proxy.pid(), taken), Some(false));
    assert_eq!(
        process_listens_on(std::process::id(), taken),
        Some(true),
        "the squatter's own socket"
    );
    let client = proxy.connect(APP_USER, APP_PASSWORD, APP_DB).await;
    let row = client.query_one("SELECT 6 * 7", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    drop(squatter);
}
