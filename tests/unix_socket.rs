//! Unix-domain sockets. Clients connect to `unix_socket_dir` (psql, pgbench, tokio-postgres
//! with a cancel request; the admin console lists them as `unix`). The socket file lives and
//! dies with its process: its mode, a second process on the same port, a file left behind by
//! a SIGKILL, removal on exit. Backends can be addressed by their socket directory (pools,
//! health probes, cancel requests; `[server_tls]` does not apply there, as in libpq).
//!
//! The cluster is shared; every test starts its own proxy and socket directory.

mod support;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::proxy::{Proxy, ProxyOptions};
use support::tools::{pg_command, run};
use support::*;

const STEP: Duration = Duration::from_secs(30);

/// A short directory for a socket (paths are limited to 107 bytes).
fn socket_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("sy-sock-")
        .tempdir_in("/tmp")
        .expect("socket dir")
}

fn socket_file(dir: &Path, port: u16) -> PathBuf {
    dir.join(format!(".s.PGSQL.{port}"))
}

/// Waits until the proxy has made its socket file.
fn wait_socket(path: &Path) {
    assert!(
        wait_until(STEP, || std::fs::metadata(path)
            .is_ok_and(|m| m.file_type().is_socket())),
        "no socket at {}",
        path.display()
    );
}

/// tokio-postgres over the proxy's socket in `dir`.
async fn connect_unix(dir: &Path, port: u16, db: &str) -> tokio_postgres::Client {
    let cs = format!(
        "host={} port={port} user={APP_USER} password={APP_PASSWORD} dbname={db} connect_timeout=10",
        dir.display()
    );
    let (client, conn) =
        tokio::time::timeout(STEP, tokio_postgres::connect(&cs, tokio_postgres::NoTls))
            .await
            .expect("connect over the unix socket in time")
            .unwrap_or_else(|e| panic!("connect over the unix socket: {e}"));
    tokio::spawn(conn);
    client
}

/// psql over the socket in `dir`: `-XAtc sql`, its stdout or a panic naming what failed.
fn psql_unix(dir: &Path, port: u16, sql: &str) -> String {
    let mut c = pg_command("psql", port);
    c.args(["-h", dir.to_str().unwrap(), "-d", APP_DB, "-XAtc", sql]);
    let r = run(c, STEP);
    assert_eq!(
        r.code,
        Some(0),
        "{}",
        r.describe("psql over the unix socket")
    );
    r.stdout.trim().to_owned()
}

/// Runs `sql` (a long sleep marked by a comment unique among the tests) on `client`, waits
/// until a server runs it, cancels it with a CancelRequest and checks that it fails with
/// 57014 in time; returns the client.
async fn cancel_running(
    client: tokio_postgres::Client,
    sql: &'static str,
) -> tokio_postgres::Client {
    let marker = sql
        .split("/* ")
        .nth(1)
        .and_then(|m| m.split(" */").next())
        .expect("a /* marker */ in the sleep");
    let token = client.cancel_token();
    let sleeper = tokio::spawn(async move {
        let r = client.simple_query(sql).await;
        (r, client)
    });
    assert!(
        tokio::task::spawn_blocking(move || active_anywhere(marker, STEP))
            .await
            .unwrap(),
        "the sleep never started"
    );
    token
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("the cancel request");
    let (r, client) = tokio::time::timeout(STEP, sleeper)
        .await
        .expect("the cancelled query ends")
        .unwrap();
    let e = r.expect_err("the sleep was cancelled");
    assert_eq!(
        e.code(),
        Some(&tokio_postgres::error::SqlState::QUERY_CANCELED),
        "{e}"
    );
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_use_the_unix_socket() {
    let sock = socket_dir();
    let dir = sock.path();
    let proxy = Proxy::start_with(
        shared_cluster(),
        ProxyOptions {
            extra_top: format!(
                "unix_socket_dir = \"{}\"\nunix_socket_mode = \"0770\"\n",
                dir.display()
            ),
            extra_tables: format!("[admin]\nusers = [\"{APP_USER}\"]\n"),
            ..Default::default()
        },
    );
    let port = proxy.port();
    let path = socket_file(dir, port);
    wait_socket(&path);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o770, "unix_socket_mode");

    // psql, simple protocol.
    assert_eq!(psql_unix(dir, port, "SELECT 'psql ' || 6 * 7"), "psql 42");

    // tokio-postgres: simple and extended protocol, COPY out, and a cancel request that
    // comes over the socket too.
    let client = connect_unix(dir, port, APP_DB).await;
    let rows = text_rows(client.simple_query("SELECT 1; SELECT 2").await.unwrap());
    assert_eq!(rows, vec![vec![Some("1".into())], vec![Some("2".into())]]);
    let st = client.prepare("SELECT $1::int + 1").await.unwrap();
    for i in 0..3 {
        let v: i32 = client.query_one(&st, &[&i]).await.unwrap().get(0);
        assert_eq!(v, i + 1);
    }
    let copied = {
        use futures_util::StreamExt;
        let out = client
            .copy_out("COPY (SELECT generate_series(1, 1000)) TO STDOUT")
            .await
            .unwrap();
        let mut out = std::pin::pin!(out);
        let mut bytes = Vec::new();
        while let Some(chunk) = out.next().await {
            bytes.extend_from_slice(&chunk.unwrap());
        }
        bytes
    };
    assert_eq!(copied.iter().filter(|&&b| b == b'\n').count(), 1000);

    let client = cancel_running(client, "SELECT /* unix-client-sleep */ pg_sleep(60)").await;
    // The session goes on.
    let rows = text_rows(client.simple_query("SELECT 'after'").await.unwrap());
    assert_eq!(rows, vec![vec![Some("after".into())]]);

    // The admin console (itself reached over the socket) lists the unix clients as such and
    // a TCP client by its address.
    let tcp = proxy.connect_app().await;
    let console = connect_unix(dir, port, "switchyard").await;
    let msgs = console.simple_query("SHOW CLIENTS").await.unwrap();
    let mut seen = Vec::new();
    for m in msgs {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
            seen.push((
                r.get("address").map(str::to_owned),
                r.get("port").map(str::to_owned),
                r.get("database").map(str::to_owned),
            ));
        }
    }
    let unix = |db: &str| (Some("unix".to_owned()), None, Some(db.to_owned()));
    assert!(seen.contains(&unix(APP_DB)), "{seen:?}");
    assert!(seen.contains(&unix("switchyard")), "{seen:?}");
    assert!(
        seen.iter()
            .any(|(a, p, _)| a.as_deref() == Some("127.0.0.1") && p.is_some()),
        "{seen:?}"
    );
    drop(tcp);

    // pgbench, extended protocol, 4 clients.
    let script = dir.join("bench.sql");
    std::fs::write(&script, "\\set x random(1, 1000)\nSELECT :x;\n").unwrap();
    let mut c = pg_command("pgbench", port);
    c.args([
        "-h",
        dir.to_str().unwrap(),
        "-n",
        "-M",
        "extended",
        "-c",
        "4",
        "-j",
        "2",
    ])
    .args(["-t", "100", "-f", script.to_str().unwrap(), APP_DB]);
    let r = run(c, Duration::from_secs(120));
    assert_eq!(
        r.code,
        Some(0),
        "{}",
        r.describe("pgbench over the unix socket")
    );
    assert!(
        r.stdout
            .contains("number of transactions actually processed: 400/400"),
        "{}",
        r.describe("pgbench over the unix socket")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_file_lives_with_its_process() {
    let sock = socket_dir();
    let dir = sock.path();
    let opts = ProxyOptions {
        // Lets a second process share the TCP port, so that the socket is what it trips on.
        extra_top: format!(
            "unix_socket_dir = \"{}\"\nso_reuseport = true\n",
            dir.display()
        ),
        ..Default::default()
    };
    let first = Proxy::start_with(shared_cluster(), opts.clone());
    let (port, http_port) = (first.port(), first.http_port());
    let path = socket_file(dir, port);
    wait_socket(&path);

    // A second process cannot take a socket a live one holds: it exits and says why,
    // before it shares the TCP port (where the kernel would queue clients for it).
    let lock = dir.join(format!(".s.PGSQL.{port}.lock"));
    assert_eq!(
        std::fs::read_to_string(&lock).unwrap(),
        format!("{}\n", first.pid())
    );
    let second = first.start_beside(true);
    let exit = second.wait_exit(STEP).expect("the second process exits");
    assert_eq!(exit.code(), Some(1), "{}", second.log_tail(20));
    assert!(
        second.log().contains(&format!(
            "cannot make the unix socket in {}: another process (PID {}) holds {}",
            dir.display(),
            first.pid(),
            lock.display()
        )),
        "{}",
        second.log_tail(20)
    );
    assert!(!second.log().contains("accepting connections"));
    assert_eq!(
        psql_unix(dir, port, "SELECT 'still the first'"),
        "still the first"
    );

    // SIGKILL leaves the files behind, with nothing accepting on the socket.
    first.signal(libc::SIGKILL);
    first.wait_exit(STEP).expect("killed");
    assert!(
        path.exists() && lock.exists(),
        "a killed process cannot remove its files"
    );
    assert!(std::os::unix::net::UnixStream::connect(&path).is_err());

    // The next process on that port replaces it and serves.
    let third =
        Proxy::start_backends_on(first.backends().to_vec(), opts, move || (port, http_port));
    assert!(
        wait_until(STEP, || third.log().contains("removed a stale socket file")
            && third.log().contains("removed a stale lock file")),
        "{}",
        third.log_tail(20)
    );
    assert_eq!(psql_unix(dir, port, "SELECT 'the third'"), "the third");

    // A clean exit removes the file.
    third.signal(libc::SIGTERM);
    let exit = third.wait_exit(STEP).expect("exits on SIGTERM");
    assert!(exit.success(), "{}", third.log_tail(20));
    assert!(!path.exists(), "socket file left after a clean exit");
    assert!(!lock.exists(), "lock file left after a clean exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_reached_by_their_socket_directory() {
    let c = shared_cluster();
    let backends: Vec<(String, String)> = c
        .nodes()
        .iter()
        .map(|n| {
            let dir = n.data_dir().display().to_string();
            (n.name().to_string(), format!("{dir}:{}", n.port()))
        })
        .collect();
    let names: Vec<String> = backends.iter().map(|(n, _)| n.clone()).collect();
    let primary = names[0].clone();
    // The servers run without TLS: over TCP, mode "require" would leave every backend
    // down. Over a socket it does not apply (libpq ignores sslmode there too).
    let proxy = Proxy::start_with(
        c,
        ProxyOptions {
            backends: Some(backends),
            extra_tables: "[health]\ninterval = \"200ms\"\n\n[server_tls]\nmode = \"require\"\n\n\
                           [routing]\nconsistency = \"eventual\"\n"
                .into(),
            ..Default::default()
        },
    );
    proxy
        .wait_status("every backend up, roles found", STEP, |s| {
            names.iter().all(|n| {
                s["backends"].as_array().is_some_and(|bs| {
                    bs.iter().any(|b| {
                        b["name"] == n.as_str()
                            && b["up"] == true
                            && b["primary"] == (*n == primary)
                            && b["role"] == if *n == primary { "primary" } else { "replica" }
                    })
                })
            })
        })
        .await;

    let client = proxy.connect_app().await;
    // Reads go to the replicas, over their sockets.
    let replica_ports: Vec<String> = c.nodes()[1..]
        .iter()
        .map(|n| n.port().to_string())
        .collect();
    for _ in 0..4 {
        let rows = text_rows(
            client
                .simple_query("SELECT current_setting('port')")
                .await
                .unwrap(),
        );
        let port = rows[0][0].clone().unwrap();
        assert!(replica_ports.contains(&port), "read served by port {port}");
    }
    // Writes go to the primary.
    client
        .batch_execute(
            "CREATE TABLE unix_backend_t (id int); INSERT INTO unix_backend_t VALUES (1)",
        )
        .await
        .unwrap();
    let rows = text_rows(
        client
            .simple_query(
                "BEGIN; SELECT count(*), current_setting('port') FROM unix_backend_t; COMMIT",
            )
            .await
            .unwrap(),
    );
    assert_eq!(
        rows,
        vec![vec![
            Some("1".into()),
            Some(c.nodes()[0].port().to_string())
        ]]
    );

    // Idle connections to a socket are checked at checkout without being thrown away:
    // transactions in a row reuse one.
    let connects = format!("switchyard_server_connects_total{{backend=\"{primary}\"}}");
    let before = proxy.metric(&connects).await;
    for _ in 0..20 {
        client
            .batch_execute("BEGIN; SELECT count(*) FROM unix_backend_t; COMMIT")
            .await
            .unwrap();
    }
    let opened = proxy.metric(&connects).await - before;
    assert!(
        opened <= 1.0,
        "{opened} connections opened for 20 transactions"
    );
    // One the server ended while it sat idle is noticed and replaced, not handed out.
    let ended = c.nodes()[0]
        .psql(&format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE usename = '{APP_USER}' AND state = 'idle' \
             AND backend_type = 'client backend' AND application_name <> 'switchyard-monitor'"
        ))
        .unwrap();
    assert_ne!(ended.trim(), "0", "no idle server connection to end");
    for _ in 0..3 {
        client
            .batch_execute("BEGIN; SELECT count(*) FROM unix_backend_t; COMMIT")
            .await
            .unwrap();
    }

    // A cancel request reaches the server over its socket.
    cancel_running(
        client,
        "BEGIN; SELECT /* unix-backend-sleep */ pg_sleep(60) FROM unix_backend_t; COMMIT",
    )
    .await;
    proxy
        .connect_app()
        .await
        .batch_execute("DROP TABLE unix_backend_t")
        .await
        .unwrap();
}

/// `unix_socket_group` with mode 0770: the socket file belongs to that group, so a user who is
/// not its owner connects as a member of the group and is refused (by the kernel, before the
/// proxy hears of it) without it. As root the test uses the `postgres` user and group (the
/// harness runs the servers as that user); otherwise it checks only the file's group, one of
/// the caller's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_group_decides_who_connects() {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;
    let sock = socket_dir();
    let dir = sock.path();
    // SAFETY: geteuid and getegid only return the process's ids.
    let (root, own_gid) = unsafe { (libc::geteuid() == 0, libc::getegid()) };
    let group = if root {
        "postgres".to_owned()
    } else {
        own_gid.to_string()
    };
    let proxy = Proxy::start_with(
        shared_cluster(),
        ProxyOptions {
            extra_top: format!(
                "unix_socket_dir = \"{}\"\nunix_socket_mode = \"0770\"\nunix_socket_group = \"{group}\"\n",
                dir.display()
            ),
            ..Default::default()
        },
    );
    let port = proxy.port();
    let path = socket_file(dir, port);
    wait_socket(&path);
    let meta = std::fs::metadata(&path).unwrap();
    let gid = switchyard::net::os_group_id(&group)
        .unwrap()
        .unwrap_or(own_gid);
    assert_eq!((meta.gid(), meta.mode() & 0o777), (gid, 0o770));
    if !root {
        return;
    }
    // The postgres user, with the postgres group and then with another (std drops the
    // supplementary groups when it sets the uid).
    let uid = {
        let r = run(
            {
                let mut c = std::process::Command::new("id");
                c.args(["-u", "postgres"]);
                c
            },
            STEP,
        );
        r.stdout
            .trim()
            .parse::<u32>()
            .expect("the postgres user's uid")
    };
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let psql_as = |gid: u32| {
        let mut c = pg_command("psql", port);
        c.args([
            "-h",
            dir.to_str().unwrap(),
            "-d",
            APP_DB,
            "-XAtc",
            "SELECT 'member'",
        ]);
        c.uid(uid).gid(gid).env("HOME", "/tmp");
        run(c, STEP)
    };
    let member = psql_as(gid);
    assert_eq!(
        (member.code, member.stdout.trim()),
        (Some(0), "member"),
        "{}",
        member.describe("psql as postgres:postgres")
    );
    let outsider = psql_as(65534);
    assert_ne!(
        outsider.code,
        Some(0),
        "{}",
        outsider.describe("psql as postgres:nogroup")
    );
    assert!(
        outsider.stderr.contains("Permission denied"),
        "{}",
        outsider.describe("psql as postgres:nogroup")
    );
}
