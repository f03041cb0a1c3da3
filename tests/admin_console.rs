//! The admin console (`[admin]`): a client that connects to the database `switchyard` talks to
//! the proxy itself. `SHOW BACKENDS | POOLS | CLIENTS | SERVERS | CONFIG | VERSION | HELP`
//! answer from the running proxy, in the simple and the extended protocol (text and binary
//! results); `RELOAD`, `KILL`, `PAUSE`, `DISABLE` and the rest are for `[admin] users` only;
//! other users are refused.
//!
//! Every test starts its own proxy against the shared cluster.

mod support;

use std::future::Future;
use std::time::Duration;

use support::proxy::{Proxy, ProxyOptions};
use support::ready::start_ready_proxy;
use support::tools::{pg_command, run};
use support::*;
use tokio_postgres::{Client, SimpleQueryMessage};

/// Longest wait for any single step.
const STEP: Duration = Duration::from_secs(20);

async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {STEP:?}: {what}"),
    }
}

/// A proxy with the console on: `app` is an admin, `other` may only look.
fn proxy() -> Proxy {
    proxy_with_top("")
}

/// [`proxy`] with top-level keys `top` (e.g. `shutdown_timeout`).
fn proxy_with_top(top: &str) -> Proxy {
    start_ready_proxy(ProxyOptions {
        extra_top: top.into(),
        extra_tables: format!(
            "[health]\ninterval = \"200ms\"\n\n[admin]\nusers = [\"{APP_USER}\"]\n\
             stats_users = [\"{OTHER_USER}\"]\n"
        ),
        ..Default::default()
    })
}

async fn connect(proxy: &Proxy, user: &str, password: &str, db: &str, app: &str) -> Client {
    try_connect(proxy, user, password, db, app)
        .await
        .unwrap_or_else(|e| panic!("{user}@{db}: {e}\n{}", proxy.log_tail(30)))
}

async fn try_connect(
    proxy: &Proxy,
    user: &str,
    password: &str,
    db: &str,
    app: &str,
) -> Result<Client, tokio_postgres::Error> {
    bounded(
        "connect",
        proxy.try_connect_as(user, password, db, Some(app)),
    )
    .await
}

/// The console as the admin user.
async fn console(proxy: &Proxy) -> Client {
    connect(proxy, APP_USER, APP_PASSWORD, "switchyard", "ops").await
}

/// A row by column name.
type Row = std::collections::HashMap<String, Option<String>>;

/// Rows of a simple query, by column name.
async fn show(c: &Client, sql: &str) -> Vec<Row> {
    let msgs = bounded(sql, c.simple_query(sql))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    msgs.into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                r.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, col)| (col.name().to_owned(), r.get(i).map(str::to_owned)))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// The rows of `sql` once `ok` holds for them (polled for up to [`STEP`]).
async fn until(c: &Client, sql: &str, ok: impl Fn(&[Row]) -> bool) -> Vec<Row> {
    let deadline = std::time::Instant::now() + STEP;
    loop {
        let rows = show(c, sql).await;
        if ok(&rows) {
            return rows;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{sql}: not as expected within {STEP:?}: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A raw login of the app user to its database, in a task: whether it completed.
fn spawn_login(proxy: &Proxy) -> tokio::task::JoinHandle<bool> {
    let addr = proxy.addr();
    tokio::spawn(async move {
        use support::raw::{login, PROTO_3_0};
        let params = [("user", APP_USER), ("database", APP_DB)];
        login(&addr, PROTO_3_0, &params, Some(APP_PASSWORD))
            .await
            .is_ok()
    })
}

/// The SQLSTATE of a failed statement.
async fn sqlstate(c: &Client, sql: &str) -> String {
    match bounded(sql, c.simple_query(sql)).await {
        Ok(_) => panic!("{sql} succeeded"),
        Err(e) => e
            .as_db_error()
            .unwrap_or_else(|| panic!("{sql}: not a server error: {e:?}"))
            .code()
            .code()
            .to_owned(),
    }
}

fn get<'a>(row: &'a Row, col: &str) -> &'a str {
    row.get(col)
        .unwrap_or_else(|| panic!("no column {col} in {row:?}"))
        .as_deref()
        .unwrap_or("NULL")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_backends_pools_clients_and_servers() {
    let proxy = proxy();
    let cluster = shared_cluster();
    let admin = console(&proxy).await;

    // A client in the middle of a transaction holds a server connection.
    let busy = connect(&proxy, APP_USER, APP_PASSWORD, APP_DB, "busy-client").await;
    bounded("begin", busy.batch_execute("BEGIN")).await.unwrap();
    let row = bounded(
        "pids",
        busy.query_one(
            "SELECT pg_backend_pid(), (SELECT count(*) FROM pg_stat_activity WHERE pid = pg_backend_pid())",
            &[],
        ),
    )
    .await
    .unwrap();
    let client_pid: i32 = row.get(0);

    // Backends: every node, the primary elected, the replicas streaming with a known lag.
    let backends = show(&admin, "SHOW BACKENDS").await;
    assert_eq!(backends.len(), cluster.nodes().len(), "{backends:?}");
    let primary = cluster.primary().name();
    for b in &backends {
        assert_eq!(get(b, "up"), "t", "{b:?}");
        if get(b, "name") == primary {
            assert_eq!(
                (get(b, "role"), get(b, "elected")),
                ("primary", "t"),
                "{b:?}"
            );
            assert_eq!(get(b, "lag_bytes"), "NULL", "{b:?}");
            // The one transaction there is still open (logins count none).
            assert_eq!(get(b, "transactions"), "0", "{b:?}");
        } else {
            assert_eq!(
                (get(b, "role"), get(b, "elected")),
                ("replica", "f"),
                "{b:?}"
            );
            assert_ne!(get(b, "lag_bytes"), "NULL", "{b:?}");
        }
        assert!(get(b, "lsn").contains('/'), "{b:?}");
        assert_eq!(get(b, "probe_error"), "NULL", "{b:?}");
    }

    // Pools: the busy client's, with its connection in use.
    let pools = show(&admin, "SHOW POOLS").await;
    let pool = pools
        .iter()
        .find(|p| {
            get(p, "backend") == primary
                && get(p, "user") == APP_USER
                && get(p, "database") == APP_DB
        })
        .unwrap_or_else(|| panic!("no pool of {APP_USER}/{APP_DB} on {primary}: {pools:?}"));
    assert_eq!(get(pool, "size"), "20", "{pool:?}");
    assert!(get(pool, "in_use").parse::<i64>().unwrap() >= 1, "{pool:?}");
    assert_eq!(get(pool, "waiting"), "0", "{pool:?}");
    assert_eq!(get(pool, "server_full"), "f", "{pool:?}");

    // Clients: the busy one (active, on the primary, with the pid it was given) and the
    // console itself.
    let clients = show(&admin, "SHOW CLIENTS").await;
    let me = clients
        .iter()
        .find(|c| get(c, "application_name") == "busy-client")
        .unwrap_or_else(|| panic!("busy client not listed: {clients:?}"));
    assert_eq!(get(me, "pid"), client_pid.to_string(), "{me:?}");
    assert_eq!(get(me, "state"), "active", "{me:?}");
    assert_eq!(get(me, "backend"), primary, "{me:?}");
    assert_eq!(get(me, "database"), APP_DB, "{me:?}");
    assert_eq!(get(me, "address"), "127.0.0.1", "{me:?}");
    assert_eq!(get(me, "tls"), "f", "{me:?}");
    let server_pid = get(me, "server_pid").to_owned();
    assert_ne!(server_pid, "NULL");
    let ops = clients
        .iter()
        .find(|c| get(c, "application_name") == "ops")
        .unwrap_or_else(|| panic!("console client not listed: {clients:?}"));
    assert_eq!(
        (get(ops, "state"), get(ops, "database")),
        ("console", "switchyard")
    );

    // The server process serving the busy client is really there, doing its transaction.
    let state = cluster
        .primary()
        .psql(&format!(
            "SELECT state FROM pg_stat_activity WHERE pid = {server_pid}"
        ))
        .unwrap();
    assert_eq!(state.trim(), "idle in transaction", "server {server_pid}");

    // Servers: that connection, active for that client.
    let servers = show(&admin, "SHOW SERVERS").await;
    let s = servers
        .iter()
        .find(|s| get(s, "pid") == server_pid)
        .unwrap_or_else(|| panic!("server {server_pid} not listed: {servers:?}"));
    assert_eq!(get(s, "state"), "active", "{s:?}");
    assert_eq!(get(s, "client_pid"), client_pid.to_string(), "{s:?}");
    assert_eq!(get(s, "idle_seconds"), "NULL", "{s:?}");

    // Once the transaction ends (and the proxy read its commit position), the client is idle
    // and its connection back in the pool.
    bounded("commit", busy.batch_execute("COMMIT"))
        .await
        .unwrap();
    let clients = until(&admin, "SHOW CLIENTS", |rows| {
        rows.iter()
            .any(|c| get(c, "application_name") == "busy-client" && get(c, "state") == "idle")
    })
    .await;
    let me = clients
        .iter()
        .find(|c| get(c, "application_name") == "busy-client")
        .unwrap();
    assert_eq!(get(me, "backend"), "NULL", "{me:?}");
    let servers = until(&admin, "SHOW SERVERS", |rows| {
        rows.iter()
            .any(|s| get(s, "pid") == server_pid && get(s, "state") == "idle")
    })
    .await;
    let s = servers
        .iter()
        .find(|s| get(s, "pid") == server_pid)
        .unwrap();
    assert_eq!(get(s, "client_pid"), "NULL", "{s:?}");

    // The application_name a client sets later is the one listed, and a RESET brings back
    // the one of its startup.
    let named = |rows: &[Row], name: &str| {
        rows.iter()
            .any(|c| get(c, "pid") == client_pid.to_string() && get(c, "application_name") == name)
    };
    bounded(
        "rename",
        busy.batch_execute("SET application_name = 'renamed-client'"),
    )
    .await
    .unwrap();
    until(&admin, "SHOW CLIENTS", |rows| named(rows, "renamed-client")).await;
    bounded("reset", busy.batch_execute("RESET application_name"))
        .await
        .unwrap();
    until(&admin, "SHOW CLIENTS", |rows| named(rows, "busy-client")).await;
    // Session pooling tracks it the same way.
    let session_proxy = start_ready_proxy(ProxyOptions {
        pool_mode: "session".into(),
        extra_tables: format!("[admin]\nusers = [\"{APP_USER}\"]\n"),
        ..Default::default()
    });
    let held = connect(&session_proxy, APP_USER, APP_PASSWORD, APP_DB, "held").await;
    bounded(
        "rename in session mode",
        held.batch_execute("BEGIN; SET application_name = 'renamed-held'; COMMIT"),
    )
    .await
    .unwrap();
    let session_admin = console(&session_proxy).await;
    until(&session_admin, "SHOW CLIENTS", |rows| {
        rows.iter()
            .any(|c| get(c, "application_name") == "renamed-held")
    })
    .await;
    drop((held, session_admin, session_proxy));

    // Version, help, config; several statements in one query.
    let msgs = bounded("multi", admin.simple_query("SHOW VERSION; SHOW HELP;"))
        .await
        .unwrap();
    let rows = text_rows(msgs);
    assert_eq!(
        rows[0][0].as_deref(),
        Some(format!("switchyard {}", env!("CARGO_PKG_VERSION")).as_str())
    );
    assert!(
        rows.iter().any(|r| r[0].as_deref() == Some("SHOW POOLS")),
        "{rows:?}"
    );
    let config = show(&admin, "show config").await;
    assert!(
        config
            .iter()
            .any(|r| get(r, "setting").starts_with("pools: size 20")),
        "{config:?}"
    );
    assert!(
        config
            .iter()
            .any(|r| get(r, "setting").contains("admin console: database switchyard")),
        "{config:?}"
    );

    // Errors are statement errors: the session goes on. SET is accepted and ignored.
    assert_eq!(sqlstate(&admin, "SELECT 1").await, "42601");
    assert_eq!(sqlstate(&admin, "SHOW nothing").await, "42704");
    assert_eq!(sqlstate(&admin, "KILL x y").await, "42601");
    assert_eq!(sqlstate(&admin, "KILL 12").await, "42704");
    bounded("set", admin.simple_query("SET application_name = 'x'"))
        .await
        .unwrap();
    // An empty query: EmptyQueryResponse, which tokio-postgres reports as a command of no rows.
    let empty = bounded("empty", admin.simple_query("")).await.unwrap();
    assert!(
        matches!(empty.as_slice(), [SimpleQueryMessage::CommandComplete(0)]),
        "{}",
        empty.len()
    );
    assert_eq!(show(&admin, "SHOW VERSION").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_answers_the_extended_protocol_in_text_and_binary() {
    let proxy = proxy();
    let admin = console(&proxy).await;
    let _client = connect(&proxy, APP_USER, APP_PASSWORD, APP_DB, "typed").await;
    // tokio-postgres prepares, describes and binds with binary results: int8 and bool
    // columns arrive as such.
    let stmt = bounded("prepare", admin.prepare("SHOW BACKENDS"))
        .await
        .unwrap();
    assert!(stmt.params().is_empty());
    assert_eq!(stmt.columns()[0].name(), "name");
    assert_eq!(
        stmt.columns()[3].type_(),
        &tokio_postgres::types::Type::BOOL
    );
    for _ in 0..3 {
        let rows = bounded("query", admin.query(&stmt, &[])).await.unwrap();
        assert_eq!(rows.len(), shared_cluster().nodes().len());
        let elected: Vec<bool> = rows.iter().map(|r| r.get("elected")).collect();
        assert_eq!(elected.iter().filter(|e| **e).count(), 1, "{elected:?}");
        for r in &rows {
            let weight: i64 = r.get("weight");
            let up: bool = r.get("up");
            assert_eq!((weight, up), (1, true));
        }
    }
    let rows = bounded("clients", admin.query("SHOW CLIENTS", &[]))
        .await
        .unwrap();
    let typed = rows
        .iter()
        .find(|r| r.get::<_, String>("application_name") == "typed")
        .expect("the client named typed");
    assert!(typed.get::<_, i64>("pid") > 0);
    assert!(typed.get::<_, i64>("port") > 0);
    assert!(typed.get::<_, Option<i64>>("server_pid").is_none());
    assert!(!typed.get::<_, bool>("tls"));

    // A command without rows, and errors in the extended protocol (then Sync recovers).
    let err = bounded("bad", admin.query("SHOW nothing", &[]))
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("42704"), "{err:?}");
    let err = bounded("multi", admin.prepare("SHOW POOLS; SHOW CLIENTS"))
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("42601"), "{err:?}");
    assert_eq!(
        bounded("set", admin.execute("SET x = 1", &[]))
            .await
            .unwrap(),
        0
    );
    let rows = bounded("pools", admin.query("SHOW POOLS", &[]))
        .await
        .unwrap();
    assert!(
        rows.iter().all(|r| r.get::<_, i64>("size") == 20),
        "{rows:?}"
    );

    // psql with two commands, unaligned rows: exit 0 and the pool and version in its output.
    let mut psql = pg_command("psql", proxy.port());
    psql.args([
        "-d",
        "switchyard",
        "-X",
        "-A",
        "-t",
        "-F",
        "|",
        "-c",
        "SHOW POOLS",
        "-c",
        "SHOW VERSION",
    ]);
    let out = run(psql, STEP);
    assert_eq!(out.code, Some(0), "{}", out.describe("psql SHOW POOLS"));
    assert!(
        out.stdout.contains(&format!("|{APP_USER}|{APP_DB}|20|")),
        "{}",
        out.describe("psql SHOW POOLS")
    );
    assert!(out.stdout.contains("switchyard "), "{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admin_users_reload_and_kill_and_only_console_users_connect() {
    let proxy = proxy();
    let admin = console(&proxy).await;

    // A user in neither list is refused at login, after authenticating.
    let err = try_connect(&proxy, MD5_USER, MD5_PASSWORD, "switchyard", "x")
        .await
        .expect_err("md5_user got into the console");
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "42501", "{db:?}");
    assert!(db.message().contains("[admin]"), "{db:?}");
    // A wrong password is still a wrong password.
    let err = try_connect(&proxy, APP_USER, "wrong", "switchyard", "x")
        .await
        .expect_err("a wrong password got in");
    assert_eq!(err.code().map(|c| c.code()), Some("28P01"));

    // A stats user looks, but may not act.
    let viewer = connect(&proxy, OTHER_USER, OTHER_PASSWORD, "switchyard", "viewer").await;
    let clients = show(&viewer, "SHOW CLIENTS").await;
    assert!(
        clients
            .iter()
            .any(|c| get(c, "application_name") == "viewer" && get(c, "user") == OTHER_USER),
        "{clients:?}"
    );
    assert_eq!(
        show(&viewer, "SHOW BACKENDS").await.len(),
        shared_cluster().nodes().len()
    );
    assert_eq!(sqlstate(&viewer, "RELOAD").await, "42501");
    assert_eq!(sqlstate(&viewer, "KILL 1").await, "42501");

    // KILL ends a client as pg_terminate_backend would.
    let victim = connect(&proxy, APP_USER, APP_PASSWORD, APP_DB, "victim").await;
    let pid: i32 = bounded("pid", victim.query_one("SELECT pg_backend_pid()", &[]))
        .await
        .unwrap()
        .get(0);
    bounded("kill", admin.simple_query(&format!("KILL {pid}")))
        .await
        .unwrap();
    let err = bounded("after kill", victim.simple_query("SELECT 1"))
        .await
        .expect_err("the killed client went on");
    assert!(
        err.code().map(|c| c.code()) == Some("57P01") || err.is_closed(),
        "{err:?}"
    );
    until(&admin, "SHOW CLIENTS", |rows| {
        !rows.iter().any(|c| get(c, "application_name") == "victim")
    })
    .await;
    // ... and the statement it was running ends with it, on whichever server ran it, as
    // pg_terminate_backend's does (closing the socket alone left it running, locks and all,
    // until it next wrote).
    let sleeper = connect(&proxy, APP_USER, APP_PASSWORD, APP_DB, "sleeper").await;
    let pid: i32 = bounded("pid", sleeper.query_one("SELECT pg_backend_pid()", &[]))
        .await
        .unwrap()
        .get(0);
    let sleeping = tokio::spawn(async move { sleeper.simple_query("SELECT pg_sleep(61.5)").await });
    let running = || {
        shared_cluster()
            .nodes()
            .iter()
            .map(|n| {
                n.psql(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE query = 'SELECT pg_sleep(61.5)' AND state = 'active'",
                )
                .unwrap()
            })
            .filter(|c| c != "0")
            .count()
    };
    assert!(wait_until(STEP, || running() == 1), "the sleep never ran");
    bounded("kill", admin.simple_query(&format!("KILL {pid}")))
        .await
        .unwrap();
    bounded("the killed sleep", sleeping)
        .await
        .unwrap()
        .expect_err("the killed client's statement completed");
    assert!(
        wait_until(STEP, || running() == 0),
        "the killed client's statement still runs on its server"
    );

    // RELOAD applies a changed file and says so; a broken file is rejected and the old
    // configuration stays.
    proxy.rewrite_config(&format!(
        "[health]\ninterval = \"200ms\"\n\n[pool]\nsize = 7\n\n[admin]\nusers = [\"{APP_USER}\"]\n\
         stats_users = [\"{OTHER_USER}\"]\n"
    ));
    bounded("reload", admin.simple_query("RELOAD"))
        .await
        .unwrap();
    let config = show(&admin, "SHOW CONFIG").await;
    assert!(
        config
            .iter()
            .any(|r| get(r, "setting").starts_with("pools: size 7")),
        "{config:?}"
    );
    let _c = connect(&proxy, APP_USER, APP_PASSWORD, APP_DB, "after-reload").await;
    let pools = show(&admin, "SHOW POOLS").await;
    assert!(
        pools
            .iter()
            .any(|p| get(p, "user") == APP_USER && get(p, "size") == "7"),
        "{pools:?}"
    );
    proxy.write_raw_config("listen = 5\n");
    let err = bounded("bad reload", admin.simple_query("RELOAD"))
        .await
        .expect_err("a broken file was accepted");
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "F0000", "{db:?}");
    assert!(db.message().contains("listen"), "{db:?}");
    let config = show(&admin, "SHOW CONFIG").await;
    assert!(config
        .iter()
        .any(|r| get(r, "setting").starts_with("pools: size 7")));
    assert!(
        proxy
            .metric("switchyard_reloads_total{result=\"error\"}")
            .await
            >= 1.0
    );
    assert!(
        proxy
            .metric("switchyard_reloads_total{result=\"ok\"}")
            .await
            >= 1.0
    );

    // A changed listen address waits for a restart: the configuration in effect still says
    // the address the proxy listens on, and the log names the key.
    proxy.rewrite_config(&format!(
        "[health]\ninterval = \"200ms\"\n\n[pool]\nsize = 7\n\n[admin]\nusers = [\"{APP_USER}\"]\n\
         stats_users = [\"{OTHER_USER}\"]\n"
    ));
    let text = proxy.config_text();
    let listen = format!("listen = \"127.0.0.1:{}\"", proxy.port());
    assert!(text.contains(&listen), "{text}");
    let other = support::proxy::free_port_pair().0;
    proxy.write_raw_config(&text.replace(&listen, &format!("listen = \"127.0.0.1:{other}\"")));
    bounded("reload", admin.simple_query("RELOAD"))
        .await
        .unwrap();
    let config = show(&admin, "SHOW CONFIG").await;
    let running = format!("listen 127.0.0.1:{} ", proxy.port());
    assert!(
        config
            .iter()
            .any(|r| get(r, "setting").starts_with(&running)),
        "{running}: {config:?}"
    );
    assert!(
        proxy
            .log()
            .contains("listen changed: takes effect after a restart"),
        "{}",
        proxy.log_tail(10)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_console_does_not_hold_up_shutdown() {
    let proxy = proxy_with_top("shutdown_timeout = \"120s\"");
    let admin = console(&proxy).await;
    assert!(!show(&admin, "SHOW BACKENDS").await.is_empty());
    proxy.signal(libc::SIGTERM);
    // The grace period is 120 s; a console session must not use it up (an exit within 60 s
    // is proof enough).
    let status = tokio::task::block_in_place(|| proxy.wait_exit(Duration::from_secs(60)));
    assert!(
        status.is_some_and(|s| s.success()),
        "exit: {status:?}\n{}",
        proxy.log_tail(20)
    );
    let err = bounded("after shutdown", admin.simple_query("SHOW POOLS"))
        .await
        .expect_err("the console outlived the proxy");
    assert!(
        err.code().map(|c| c.code()) == Some("57P01") || err.is_closed(),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_from_the_console_drains_as_sigterm_does() {
    // Exiting within 60 s of the COMMIT shows it did not wait for the 120 s grace period.
    let proxy = proxy_with_top("shutdown_timeout = \"120s\"");
    let viewer = connect(&proxy, OTHER_USER, OTHER_PASSWORD, "switchyard", "viewer").await;
    assert_eq!(sqlstate(&viewer, "SHUTDOWN").await, "42501");
    let busy = connect(&proxy, APP_USER, APP_PASSWORD, APP_DB, "busy").await;
    bounded("begin", busy.batch_execute("BEGIN; SELECT 1"))
        .await
        .unwrap();

    let admin = console(&proxy).await;
    bounded("shutdown", admin.simple_query("SHUTDOWN"))
        .await
        .unwrap();
    // No new clients; the open transaction still ends as the client says.
    assert!(
        wait_until(STEP, || std::net::TcpStream::connect(proxy.addr()).is_err()),
        "still accepting connections after SHUTDOWN"
    );
    bounded("commit", busy.batch_execute("COMMIT"))
        .await
        .unwrap();
    let status = tokio::task::block_in_place(|| proxy.wait_exit(Duration::from_secs(60)));
    assert!(
        status.is_some_and(|s| s.success()),
        "exit: {status:?}\n{}",
        proxy.log_tail(20)
    );
    assert!(proxy.log().contains("SHUTDOWN from the admin console"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_replaces_server_connections_as_they_are_released() {
    // WAIT_CLOSE gives up after shutdown_timeout: 3 s at first (for the check that it waits
    // while a marked connection is held), then 120 s.
    let proxy = proxy_with_top("shutdown_timeout = \"3s\"");
    let admin = console(&proxy).await;
    let idle = connect(&proxy, APP_USER, APP_PASSWORD, APP_DB, "reconnect-idle").await;
    bounded("select", idle.simple_query("SELECT 1"))
        .await
        .unwrap();
    let busy = connect(&proxy, APP_USER, APP_PASSWORD, APP_DB, "reconnect-busy").await;
    bounded("begin", busy.batch_execute("BEGIN; SELECT 1"))
        .await
        .unwrap();
    let clients = show(&admin, "SHOW CLIENTS").await;
    let busy_row = clients
        .iter()
        .find(|c| get(c, "application_name") == "reconnect-busy")
        .expect("the busy client");
    let held = get(busy_row, "server_pid").to_owned();
    let busy_pid = get(busy_row, "pid").to_owned();
    let before = until(&admin, "SHOW SERVERS", |rows| {
        rows.iter().any(|s| get(s, "state") == "idle")
    })
    .await;
    let idle_before: Vec<String> = before
        .iter()
        .filter(|s| get(s, "state") == "idle")
        .map(|s| get(s, "pid").to_owned())
        .collect();

    assert_eq!(
        sqlstate(
            &connect(&proxy, OTHER_USER, OTHER_PASSWORD, "switchyard", "v").await,
            "RECONNECT"
        )
        .await,
        "42501"
    );
    bounded("reconnect", admin.simple_query("RECONNECT"))
        .await
        .unwrap();
    // The idle connections are closed at once; the one in a transaction stays until released.
    let after = show(&admin, "SHOW SERVERS").await;
    for pid in &idle_before {
        assert!(
            !after.iter().any(|s| get(s, "pid") == pid),
            "idle server {pid} survived RECONNECT: {after:?}"
        );
    }
    assert!(
        after
            .iter()
            .any(|s| get(s, "pid") == held && get(s, "state") == "active"),
        "the busy client's server went during its transaction: {after:?}"
    );
    // WAIT_CLOSE does not return while the marked connection is in use: it gives up after
    // shutdown_timeout (3 s) with a warning counting it and naming its client.
    let mut psql = pg_command("psql", proxy.port());
    psql.args([
        "-d",
        "switchyard",
        "-X",
        "-v",
        "ON_ERROR_STOP=1",
        "-c",
        &format!("WAIT_CLOSE {APP_DB}"),
    ]);
    let out = tokio::task::block_in_place(|| run(psql, Duration::from_secs(60)));
    let what = out.describe("psql WAIT_CLOSE while the marked connection is held");
    assert_eq!(out.code, Some(0), "{what}");
    assert!(
        out.stderr.contains("WARNING")
            && out
                .stderr
                .contains("1 server connection(s) to close are still open")
            && out.stderr.contains(&format!("[{busy_pid}]")),
        "WAIT_CLOSE returned while a marked connection was in use, without its warning \
         (busy client {busy_pid}): {what}"
    );
    assert!(
        out.elapsed >= Duration::from_millis(2900),
        "WAIT_CLOSE gave up before shutdown_timeout: {what}"
    );
    assert!(
        show(&admin, "SHOW SERVERS")
            .await
            .iter()
            .any(|s| get(s, "pid") == held && get(s, "state") == "active"),
        "the busy client's server went during its transaction"
    );

    // With a long shutdown_timeout, WAIT_CLOSE returns once the marked connection is closed:
    // after the COMMIT (without a warning).
    let text = proxy
        .config_text()
        .replace("shutdown_timeout = \"3s\"", "shutdown_timeout = \"120s\"");
    assert!(text.contains("\"120s\""));
    proxy.write_raw_config(&text);
    proxy.reload_ok().await;
    let waiter = {
        // Connected before, so that the command goes as soon as it is spawned.
        let c = console(&proxy).await;
        tokio::spawn(async move { c.simple_query(&format!("WAIT_CLOSE {APP_DB}")).await })
    };
    bounded("commit", busy.batch_execute("COMMIT"))
        .await
        .unwrap();
    // (Far less than 120 s: WAIT_CLOSE did not wait for its timeout.)
    tokio::time::timeout(Duration::from_secs(60), waiter)
        .await
        .expect("WAIT_CLOSE did not return within 60 s of the COMMIT")
        .unwrap()
        .expect("WAIT_CLOSE");
    let servers = show(&admin, "SHOW SERVERS").await;
    assert!(
        !servers.iter().any(|s| get(s, "pid") == held),
        "WAIT_CLOSE returned before {held} was closed: {servers:?}"
    );
    assert!(
        wait_until(STEP, || shared_cluster()
            .primary()
            .psql(&format!(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = {held}"
            ))
            .unwrap()
            == "0"),
        "server process {held} still runs after its release"
    );
    // Both clients go on, on new server connections.
    for c in [&idle, &busy] {
        let rows = bounded("after", c.simple_query("SELECT 7")).await.unwrap();
        assert_eq!(text_rows(rows), vec![vec![Some("7".to_owned())]]);
    }

    // RECONNECT of one database closes only its connections; WAIT_CLOSE of one with none in
    // use returns at once.
    let other = connect(
        &proxy,
        APP_USER,
        APP_PASSWORD,
        "postgres",
        "reconnect-other",
    )
    .await;
    bounded("other", other.simple_query("SELECT 1"))
        .await
        .unwrap();
    let idle_of = |rows: &[Row], db: &str| -> Vec<String> {
        rows.iter()
            .filter(|s| get(s, "state") == "idle" && get(s, "database") == db)
            .map(|s| get(s, "pid").to_owned())
            .collect()
    };
    let before = until(&admin, "SHOW SERVERS", |rows| {
        !idle_of(rows, APP_DB).is_empty() && !idle_of(rows, "postgres").is_empty()
    })
    .await;
    bounded(
        "reconnect postgres",
        admin.simple_query("RECONNECT postgres"),
    )
    .await
    .unwrap();
    let after = show(&admin, "SHOW SERVERS").await;
    let pids =
        |rows: &[Row]| -> Vec<String> { rows.iter().map(|s| get(s, "pid").to_owned()).collect() };
    let after_pids = pids(&after);
    for pid in idle_of(&before, "postgres") {
        assert!(
            !after_pids.contains(&pid),
            "postgres' idle {pid} survived: {after:?}"
        );
    }
    for pid in idle_of(&before, APP_DB) {
        assert!(
            after_pids.contains(&pid),
            "{APP_DB}'s idle {pid} was closed: {after:?}"
        );
    }
    bounded(
        "wait_close postgres",
        admin.simple_query("WAIT_CLOSE postgres"),
    )
    .await
    .unwrap();
}

/// A message of `tag` with `body`.
fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// Parse of `sql` as statement `name`.
fn parse(name: &str, sql: &str) -> Vec<u8> {
    msg(b'P', format!("{name}\0{sql}\0\0\0").as_bytes())
}

/// Bind of portal `portal` to statement `stmt` with `params` text parameters and
/// `formats` result format codes.
fn bind(portal: &str, stmt: &str, params: &[&str], formats: &[i16]) -> Vec<u8> {
    let mut b = format!("{portal}\0{stmt}\0").into_bytes();
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&(params.len() as i16).to_be_bytes());
    for p in params {
        b.extend_from_slice(&(p.len() as i32).to_be_bytes());
        b.extend_from_slice(p.as_bytes());
    }
    b.extend_from_slice(&(formats.len() as i16).to_be_bytes());
    for f in formats {
        b.extend_from_slice(&f.to_be_bytes());
    }
    msg(b'B', &b)
}

fn execute(portal: &str) -> Vec<u8> {
    let mut b = format!("{portal}\0").into_bytes();
    b.extend_from_slice(&0i32.to_be_bytes());
    msg(b'E', &b)
}

/// The tags of the messages up to ReadyForQuery, with the SQLSTATE of each ErrorResponse.
async fn tags_until_ready(raw: &mut support::raw::Raw) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let f = raw.frame().await;
        out.push(match f.tag {
            b'E' => format!("E{}", f.code()),
            b'C' => format!("C{}", String::from_utf8_lossy(&f.body[..f.body.len() - 1])),
            t => (t as char).to_string(),
        });
        if f.tag == b'Z' {
            return out;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_type_gets_the_answer_postgresql_would_give() {
    use support::raw::{login, ok, PROTO_3_0};
    let proxy = proxy();
    let params = [("user", APP_USER), ("database", "switchyard")];
    let mut s = ok(
        login(&proxy.addr(), PROTO_3_0, &params, Some(APP_PASSWORD)).await,
        "console login",
    );
    let version = format!("15.0 (switchyard {})", env!("CARGO_PKG_VERSION"));
    assert_eq!(s.params.get("server_version"), Some(&version));
    assert_eq!(
        s.params.get("client_encoding").map(String::as_str),
        Some("UTF8")
    );
    assert!(s.key.is_some());
    let raw = &mut s.raw;

    // Simple protocol: an empty query, a SHOW, an error that stops the statements after it.
    raw.send(&msg(b'Q', b"\0")).await.unwrap();
    assert_eq!(tags_until_ready(raw).await, ["I", "Z"]);
    raw.send(&msg(b'Q', b"SHOW VERSION\0")).await.unwrap();
    assert_eq!(tags_until_ready(raw).await, ["T", "D", "CSHOW", "Z"]);
    raw.send(&msg(b'Q', b"SET a = 1; SHOW x; SHOW VERSION\0"))
        .await
        .unwrap();
    assert_eq!(tags_until_ready(raw).await, ["CSET", "E42704", "Z"]);
    // A NUL inside the text, or none at its end: not one string, as PostgreSQL refuses it
    // (the text is not echoed into the error, where it would cut the fields short).
    for body in [&b"XX\0\0YY\0"[..], b"KILL \"a\0b\"\0", b"SHOW VERSION"] {
        raw.send(&msg(b'Q', body)).await.unwrap();
        assert_eq!(tags_until_ready(raw).await, ["E08P01", "Z"], "{body:?}");
    }

    // Extended protocol, pipelined: a statement described, bound and executed; then an
    // error, after which everything up to Sync is skipped.
    let mut batch = parse("s1", "SHOW HELP");
    batch.extend(msg(b'D', b"Ss1\0"));
    batch.extend(bind("", "s1", &[], &[]));
    batch.extend(msg(b'D', b"P\0"));
    batch.extend(execute(""));
    batch.extend(parse("s2", "SHOW nothing"));
    batch.extend(bind("", "s1", &[], &[]));
    batch.extend(execute(""));
    batch.extend(msg(b'S', b""));
    raw.send(&batch).await.unwrap();
    let got = tags_until_ready(raw).await;
    let help = raw.query_ok("SHOW HELP").await.rows.len();
    assert!(help >= 9, "{help} commands");
    let mut want = vec!["1", "t", "T", "2", "T"];
    want.extend(std::iter::repeat_n("D", help));
    want.extend(["CSHOW", "E42704", "Z"]);
    assert_eq!(got, want);

    // Binary results of int8 and bool columns; Flush answers without a Sync.
    let mut batch = parse("", "SHOW BACKENDS");
    batch.extend(bind("", "", &[], &[1]));
    batch.extend(execute(""));
    batch.extend(msg(b'H', b""));
    raw.send(&batch).await.unwrap();
    assert_eq!(raw.frame().await.tag, b'1');
    assert_eq!(raw.frame().await.tag, b'2');
    let row = raw.frame().await;
    assert_eq!(row.tag, b'D');
    let values = row.data_row();
    assert_eq!(
        values[3].as_deref(),
        Some(&[1u8][..]),
        "up = true, one byte"
    );
    assert_eq!(
        values[5].as_deref(),
        Some(&1i64.to_be_bytes()[..]),
        "weight = 1"
    );
    raw.send(&msg(b'S', b"")).await.unwrap();
    let rest = tags_until_ready(raw).await;
    assert_eq!(rest.last().map(String::as_str), Some("Z"));
    assert!(rest.contains(&"CSHOW".to_string()), "{rest:?}");

    // Statement bookkeeping: a duplicate name, a parameter, a closed statement.
    let mut batch = parse("s1", "SHOW POOLS");
    batch.extend(msg(b'S', b""));
    batch.extend(bind("", "s1", &["1"], &[]));
    batch.extend(msg(b'S', b""));
    batch.extend(msg(b'C', b"Ss1\0"));
    batch.extend(bind("", "s1", &[], &[]));
    batch.extend(msg(b'S', b""));
    batch.extend(parse("", "SHOW POOLS; SHOW CLIENTS"));
    batch.extend(msg(b'S', b""));
    raw.send(&batch).await.unwrap();
    assert_eq!(tags_until_ready(raw).await, ["E42P05", "Z"]);
    assert_eq!(tags_until_ready(raw).await, ["E08P01", "Z"]);
    assert_eq!(tags_until_ready(raw).await, ["3", "E26000", "Z"]);
    assert_eq!(tags_until_ready(raw).await, ["E42601", "Z"]);

    // As PostgreSQL: a named portal bound again before it is closed (42P03; the unnamed one
    // is replaced), a Describe or Close name with a NUL inside (08P01, the name not echoed),
    // a result format code other than 0 and 1 (22023).
    let mut batch = parse("s3", "SHOW VERSION");
    batch.extend(bind("", "s3", &[], &[]));
    batch.extend(bind("", "s3", &[], &[]));
    batch.extend(bind("p1", "s3", &[], &[]));
    batch.extend(bind("p1", "s3", &[], &[]));
    batch.extend(msg(b'S', b""));
    batch.extend(msg(b'D', b"Pa\0b\0"));
    batch.extend(msg(b'S', b""));
    batch.extend(msg(b'C', b"Sa\0b\0"));
    batch.extend(msg(b'S', b""));
    batch.extend(bind("", "s3", &[], &[2]));
    batch.extend(msg(b'S', b""));
    raw.send(&batch).await.unwrap();
    assert_eq!(
        tags_until_ready(raw).await,
        ["1", "2", "2", "2", "E42P03", "Z"]
    );
    for _ in 0..2 {
        let e = raw.frame().await;
        assert_eq!((e.tag, e.code()), (b'E', "08P01".to_owned()), "{e:?}");
        assert_eq!(e.message(), "invalid message format");
        assert_eq!(tags_until_ready(raw).await, ["Z"]);
    }
    assert_eq!(tags_until_ready(raw).await, ["E22023", "Z"]);

    // A function call is refused; COPY messages outside COPY are ignored.
    raw.send(&msg(b'F', b"\0\0\0\x01\0\0\0\0\0\0"))
        .await
        .unwrap();
    assert_eq!(tags_until_ready(raw).await, ["E0A000", "Z"]);
    let mut batch = msg(b'd', b"stray");
    batch.extend(msg(b'c', b""));
    batch.extend(msg(b'Q', b"SHOW VERSION\0"));
    raw.send(&batch).await.unwrap();
    assert_eq!(tags_until_ready(raw).await, ["T", "D", "CSHOW", "Z"]);

    // An unknown message type ends the connection with 08P01, as PostgreSQL does.
    raw.send(&msg(b'Y', b"")).await.unwrap();
    let last = raw.expect_closed(STEP, "after an unknown message").await;
    assert_eq!(last.len(), 1, "{last:?}");
    assert_eq!(
        (last[0].severity(), last[0].code()),
        ("FATAL".into(), "08P01".into())
    );

    // Terminate closes quietly; the console goes on serving others.
    let mut s = ok(
        login(&proxy.addr(), PROTO_3_0, &params, Some(APP_PASSWORD)).await,
        "console login",
    );
    s.raw.send(&msg(b'X', b"")).await.unwrap();
    assert!(s
        .raw
        .expect_closed(STEP, "after Terminate")
        .await
        .is_empty());
    let admin = console(&proxy).await;
    assert_eq!(show(&admin, "SHOW VERSION").await.len(), 1);
}

/// Writes `INSERT INTO sw` until `stop`, each in autocommit (`txn` false) or as two inserts in
/// a transaction that sleeps in between (`txn` true); returns (rows written, errors).
async fn writer(
    client: Client,
    first: i32,
    txn: bool,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (Vec<i32>, Vec<String>) {
    let (mut written, mut errors) = (Vec::new(), Vec::new());
    let mut i = first;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let sql = if txn {
            format!(
                "BEGIN; INSERT INTO sw VALUES ({i}, inet_server_port()); SELECT pg_sleep(0.2); \
                 INSERT INTO sw VALUES ({}, inet_server_port()); COMMIT",
                i + 1
            )
        } else {
            format!("INSERT INTO sw VALUES ({i}, inet_server_port())")
        };
        // Writes wait while paused: a generous bound.
        match tokio::time::timeout(Duration::from_secs(90), client.batch_execute(&sql)).await {
            Ok(Ok(())) => written.extend(if txn { vec![i, i + 1] } else { vec![i] }),
            Ok(Err(e)) => errors.push(format!("{i}: {e}")),
            Err(_) => errors.push(format!("{i}: no answer within 90 s")),
        }
        i += 2;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (written, errors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_switchover_resume_loses_no_write_and_shows_no_error() {
    let cluster = std::sync::Arc::new(
        tokio::task::spawn_blocking(|| own_cluster(1))
            .await
            .unwrap(),
    );
    let c2 = cluster.clone();
    let proxy = tokio::task::spawn_blocking(move || {
        support::ready::start_ready_proxy_on(
            &c2,
            ProxyOptions {
                extra_tables: format!(
                    "[health]\ninterval = \"200ms\"\n\n[admin]\nusers = [\"{APP_USER}\"]\n"
                ),
                ..Default::default()
            },
        )
    })
    .await
    .unwrap();
    let (old, new) = (cluster.primary(), &cluster.replicas()[0]);
    let admin = console(&proxy).await;
    let setup = proxy.connect_app().await;
    bounded(
        "table",
        setup.batch_execute("CREATE TABLE sw (i int PRIMARY KEY, port int)"),
    )
    .await
    .unwrap();

    // Two clients write all along: one in autocommit, one in transactions that take 200 ms.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let auto = tokio::spawn(writer(proxy.connect_app().await, 0, false, stop.clone()));
    let txns = tokio::spawn(writer(
        proxy.connect_app().await,
        1_000_001,
        true,
        stop.clone(),
    ));
    let count = |node: &Node| {
        node.psql_db(APP_DB, "SELECT count(*) FROM sw")
            .map(|s| s.trim().parse::<i64>().unwrap_or(-1))
            .unwrap_or(-1)
    };
    assert!(
        wait_until(STEP, || count(old) >= 20),
        "no writes before PAUSE"
    );

    // PAUSE returns once no transaction is open; from then on nothing reaches a server.
    bounded("pause", admin.simple_query("PAUSE")).await.unwrap();
    let clients = show(&admin, "SHOW CLIENTS").await;
    assert!(
        clients.iter().all(|c| get(c, "state") != "active"),
        "a transaction is open after PAUSE: {clients:?}"
    );
    let before = count(old);
    // Once the writers wait for RESUME (counted), nothing of theirs has run meanwhile.
    proxy
        .wait_metric("switchyard_pause_waits_total", 2.0, STEP)
        .await;
    assert_eq!(count(old), before, "a write ran while paused");
    assert_eq!(proxy.metric("switchyard_paused").await, 1.0);

    // The planned switchover: the primary stops, the replica is promoted, switchyard follows.
    let c3 = cluster.clone();
    tokio::task::spawn_blocking(move || {
        c3.primary().stop();
        c3.replicas()[0].promote().expect("promoting the replica");
    })
    .await
    .unwrap();
    until(&admin, "SHOW BACKENDS", |rows| {
        rows.iter()
            .any(|b| get(b, "name") == new.name() && get(b, "elected") == "t")
    })
    .await;

    // RESUME: the waiting writes go on, on the new primary, and none failed.
    bounded("resume", admin.simple_query("RESUME"))
        .await
        .unwrap();
    assert!(
        wait_until(STEP, || count(new) >= before + 20),
        "writes did not resume on {}",
        new.name()
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (auto_rows, auto_errors) = auto.await.unwrap();
    let (txn_rows, txn_errors) = txns.await.unwrap();
    assert!(
        auto_errors.is_empty(),
        "autocommit writer saw errors: {auto_errors:?}"
    );
    assert!(
        txn_errors.is_empty(),
        "transaction writer saw errors: {txn_errors:?}"
    );
    // Every acknowledged row is on the new primary, exactly once.
    let rows = new
        .psql_db(APP_DB, "SELECT count(*), count(DISTINCT i) FROM sw")
        .unwrap();
    let want = auto_rows.len() + txn_rows.len();
    assert_eq!(
        rows.trim(),
        format!("{want}|{want}"),
        "rows on {}",
        new.name()
    );
    let last = new
        .psql_db(APP_DB, "SELECT port FROM sw ORDER BY i DESC LIMIT 1")
        .unwrap();
    assert_eq!(
        last.trim(),
        new.port().to_string(),
        "the last write's server"
    );
    assert_eq!(proxy.metric("switchyard_paused").await, 0.0);
    // RESUME again says so, and changes nothing.
    let again = bounded("resume", admin.simple_query("RESUME"))
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_warns_about_a_transaction_that_stays_open_and_holds_what_comes_after() {
    use support::raw::{login, ok, PROTO_3_0};
    let proxy = start_ready_proxy(ProxyOptions {
        extra_top: "shutdown_timeout = \"1s\"\n".into(),
        extra_tables: format!("[admin]\nusers = [\"{APP_USER}\"]\n"),
        ..Default::default()
    });
    let open = connect(&proxy, APP_USER, APP_PASSWORD, APP_DB, "open-txn").await;
    bounded("begin", open.batch_execute("BEGIN")).await.unwrap();
    let pid: i32 = bounded("pid", open.query_one("SELECT pg_backend_pid()", &[]))
        .await
        .unwrap()
        .get(0);

    // PAUSE waits for the open transaction up to shutdown_timeout (1 s here), then says
    // which client is still in one.
    let params = [("user", APP_USER), ("database", "switchyard")];
    let mut s = ok(
        login(&proxy.addr(), PROTO_3_0, &params, Some(APP_PASSWORD)).await,
        "console login",
    );
    let started = std::time::Instant::now();
    s.raw.send(&msg(b'Q', b"PAUSE\0")).await.unwrap();
    let warning = s.raw.frame().await;
    assert_eq!(warning.tag, b'N', "{warning:?}");
    assert_eq!(
        (warning.severity(), warning.code()),
        ("WARNING".into(), "01000".into())
    );
    assert!(
        warning.message().contains(&pid.to_string()),
        "{}",
        warning.message()
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(tags_until_ready(&mut s.raw).await, ["CPAUSE", "Z"]);
    // PAUSE again (a script that repeats it until no warning comes): it waits and warns the
    // same, the transaction being still open, rather than report success at once.
    s.raw.send(&msg(b'Q', b"PAUSE\0")).await.unwrap();
    let again = s.raw.frame().await;
    assert_eq!(
        (again.tag, again.severity(), again.code()),
        (b'N', "WARNING".into(), "01000".into()),
        "{again:?}"
    );
    assert!(again.message().contains(&pid.to_string()), "{again:?}");
    assert_eq!(tags_until_ready(&mut s.raw).await, ["CPAUSE", "Z"]);

    // That transaction goes on to its end; the next one waits, as does a new login.
    bounded("in txn", open.batch_execute("SELECT 1; COMMIT"))
        .await
        .unwrap();
    let waits = proxy.metric("switchyard_pause_waits_total").await;
    let next = tokio::spawn(async move { open.query_one("SELECT 42::int4", &[]).await });
    let newcomer = spawn_login(&proxy);
    // Both reached the proxy and wait for RESUME (counted): neither may be through.
    proxy
        .wait_metric("switchyard_pause_waits_total", waits + 2.0, STEP)
        .await;
    assert!(!next.is_finished(), "a transaction began while paused");
    assert!(!newcomer.is_finished(), "a login completed while paused");
    // SHOW CLIENTS says both wait, the login too (it showed the login idle).
    let viewer = console(&proxy).await;
    let clients = show(&viewer, "SHOW CLIENTS").await;
    let waiting = clients
        .iter()
        .filter(|c| get(c, "state") == "waiting")
        .count();
    assert_eq!(waiting, 2, "{clients:?}");

    s.raw.send(&msg(b'Q', b"RESUME\0")).await.unwrap();
    assert_eq!(tags_until_ready(&mut s.raw).await, ["CRESUME", "Z"]);
    let row = bounded("next", next)
        .await
        .unwrap()
        .expect("the held query");
    assert_eq!(row.get::<_, i32>(0), 42);
    assert!(
        bounded("newcomer", newcomer).await.unwrap(),
        "the held login failed"
    );

    // Resuming what is not paused, or pausing twice, says so.
    s.raw.send(&msg(b'Q', b"RESUME\0")).await.unwrap();
    let n = s.raw.frame().await;
    assert_eq!((n.tag, n.message()), (b'N', "not paused".to_owned()));
    assert_eq!(tags_until_ready(&mut s.raw).await, ["CRESUME", "Z"]);
}

/// The console, and a client of `app` (named `app-db`) and one of `postgres`, each having run
/// a query.
async fn two_databases(proxy: &Proxy) -> (Client, Client, Client) {
    let admin = console(proxy).await;
    let app_client = connect(proxy, APP_USER, APP_PASSWORD, APP_DB, "app-db").await;
    let other_db = connect(proxy, APP_USER, APP_PASSWORD, "postgres", "postgres-db").await;
    for c in [&app_client, &other_db] {
        bounded("warm", c.batch_execute("SELECT 1")).await.unwrap();
    }
    (admin, app_client, other_db)
}

/// `PAUSE db` holds that database's transactions and logins only; `RESUME db` lets them go
/// on. `RESUME` alone resumes everything; one database cannot be resumed out of a pause of
/// every database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_of_one_database_holds_only_its_clients() {
    let proxy = proxy();
    let (admin, app_client, other_db) = two_databases(&proxy).await;

    bounded("pause app", admin.simple_query(&format!("PAUSE {APP_DB}")))
        .await
        .unwrap();
    assert_eq!(proxy.metric("switchyard_paused_databases").await, 1.0);
    assert_eq!(proxy.metric("switchyard_paused").await, 0.0);
    let pools = show(&admin, "SHOW POOLS").await;
    for p in &pools {
        let expect = if get(p, "database") == APP_DB {
            "t"
        } else {
            "f"
        };
        assert_eq!(get(p, "paused"), expect, "{p:?}");
    }
    let (_, status) = proxy.http_get("/status").await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["paused_databases"], serde_json::json!([APP_DB]));

    // The other database's client goes on; the paused one's next transaction and a new login
    // to that database wait.
    let v: i32 = bounded("other db", other_db.query_one("SELECT 7::int4", &[]))
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, 7);
    let waits = proxy.metric("switchyard_pause_waits_total").await;
    let held = tokio::spawn(async move { app_client.query_one("SELECT 8::int4", &[]).await });
    let newcomer = spawn_login(&proxy);
    // Both reached the proxy and wait for RESUME (counted): neither may be through.
    proxy
        .wait_metric("switchyard_pause_waits_total", waits + 2.0, STEP)
        .await;
    assert!(
        !held.is_finished(),
        "a transaction on the paused database ran"
    );
    assert!(
        !newcomer.is_finished(),
        "a login to the paused database completed"
    );
    let other_login = connect(&proxy, APP_USER, APP_PASSWORD, "postgres", "late").await;
    bounded("late", other_login.batch_execute("SELECT 1"))
        .await
        .unwrap();

    // Resuming another database changes nothing; a pause of everything cannot be resumed
    // database by database.
    bounded("resume postgres", admin.simple_query("RESUME postgres"))
        .await
        .unwrap();
    assert!(!held.is_finished(), "another database's RESUME let it go");
    bounded("pause all", admin.simple_query("PAUSE"))
        .await
        .unwrap();
    assert_eq!(proxy.metric("switchyard_paused").await, 1.0);
    assert_eq!(sqlstate(&admin, &format!("RESUME {APP_DB}")).await, "55000");
    bounded("resume all", admin.simple_query("RESUME"))
        .await
        .unwrap();
    let row = bounded("held", held)
        .await
        .unwrap()
        .expect("the held query");
    assert_eq!(row.get::<_, i32>(0), 8);
    assert!(
        bounded("newcomer", newcomer).await.unwrap(),
        "the held login failed"
    );
    assert_eq!(proxy.metric("switchyard_paused_databases").await, 0.0);
    assert_eq!(proxy.metric("switchyard_paused").await, 0.0);
}

/// A request waiting out a PAUSE is cancelled by its client: it fails with 57014 at once (as
/// PostgreSQL answers a statement cancelled while blocked), does not run at RESUME, and the
/// client goes on. (The cancel used to find nothing running and be dropped, and the INSERT
/// committed at RESUME.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_while_waiting_out_a_pause_cancels_the_request() {
    let table = "console_cancel_paused_t";
    tokio::task::spawn_blocking(move || {
        shared_cluster()
            .primary()
            .psql_db(
                APP_DB,
                &format!(
                    "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (v text); \
                     ALTER TABLE {table} OWNER TO {APP_USER}"
                ),
            )
            .expect("creating the table")
    })
    .await
    .unwrap();
    let proxy = proxy();
    let admin = console(&proxy).await;
    let client = std::sync::Arc::new(connect(&proxy, APP_USER, APP_PASSWORD, APP_DB, "w").await);
    bounded("pause", admin.simple_query("PAUSE")).await.unwrap();
    let waits = proxy.metric("switchyard_pause_waits_total").await;
    let c = client.clone();
    let insert = tokio::spawn(async move {
        c.simple_query(&format!(
            "INSERT INTO {table} VALUES ('should-be-cancelled')"
        ))
        .await
    });
    proxy
        .wait_metric("switchyard_pause_waits_total", waits + 1.0, STEP)
        .await;
    // SHOW CLIENTS tells the held request from an idle client.
    let rows = show(&admin, "SHOW CLIENTS").await;
    let held = rows
        .iter()
        .find(|c| get(c, "application_name") == "w")
        .unwrap_or_else(|| panic!("the held client is not listed: {rows:?}"));
    assert_eq!(get(held, "state"), "waiting", "{held:?}");
    let start = std::time::Instant::now();
    bounded(
        "cancel",
        client.cancel_token().cancel_query(tokio_postgres::NoTls),
    )
    .await
    .expect("sending the cancel request");
    // (Bounded well below STEP: a cancel that is not taken waits for RESUME.)
    let e = tokio::time::timeout(Duration::from_secs(10), insert)
        .await
        .expect("the INSERT was not answered within 10 s of its cancel")
        .unwrap()
        .expect_err("the cancelled INSERT ran");
    support::assert_cancelled(&e, &format!("after {:?}", start.elapsed()));
    bounded("resume", admin.simple_query("RESUME"))
        .await
        .unwrap();
    // (On the primary itself: a replica may not have the new table yet.)
    let on_primary = move |sql: String| {
        tokio::task::spawn_blocking(move || {
            shared_cluster()
                .primary()
                .psql_db(APP_DB, &sql)
                .expect("superuser SQL on the primary")
        })
    };
    let count = format!("SELECT count(*) FROM {table}");
    assert_eq!(
        on_primary(count.clone()).await.unwrap(),
        "0",
        "the cancelled INSERT ran"
    );
    bounded(
        "insert after",
        client.simple_query(&format!("INSERT INTO {table} VALUES ('after')")),
    )
    .await
    .expect("the client's next request after its cancel");
    assert_eq!(on_primary(count).await.unwrap(), "1");
    assert_eq!(
        proxy
            .metric("switchyard_cancel_requests_total{result=\"waiting\"}")
            .await,
        1.0
    );
}

/// The SQLSTATE and message of a refused login.
async fn refused_login(proxy: &Proxy, db: &str) -> (String, String) {
    match try_connect(proxy, APP_USER, APP_PASSWORD, db, "refused").await {
        Ok(_) => panic!("a login to {db} was let in"),
        Err(e) => {
            let db_error = e
                .as_db_error()
                .unwrap_or_else(|| panic!("login to {db}: not a server error: {e:?}"));
            (
                db_error.code().code().to_owned(),
                db_error.message().to_owned(),
            )
        }
    }
}

/// `DISABLE db` refuses that database's new logins (PostgreSQL's own error) and nothing
/// else; `ENABLE db` lets them in. `KILL db` ends its clients, idle or in a transaction, closes
/// its server connections and holds new logins until `RESUME db`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_refuses_a_databases_logins_and_kill_ends_its_clients() {
    let proxy = proxy();
    let (admin, app_client, other_db) = two_databases(&proxy).await;

    // DISABLE: new logins to that database are refused as PostgreSQL refuses a database
    // that does not allow connections; its connected client and other databases go on.
    bounded("disable", admin.simple_query(&format!("DISABLE {APP_DB}")))
        .await
        .unwrap();
    let (code, message) = refused_login(&proxy, APP_DB).await;
    assert_eq!(code, "55000", "{message}");
    assert_eq!(
        message,
        format!("database \"{APP_DB}\" is not currently accepting connections")
    );
    assert_eq!(
        proxy
            .metric("switchyard_client_rejected_total{reason=\"disabled\"}")
            .await,
        1.0
    );
    assert_eq!(proxy.metric("switchyard_disabled_databases").await, 1.0);
    let (_, status) = proxy.http_get("/status").await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["disabled_databases"], serde_json::json!([APP_DB]));
    for p in show(&admin, "SHOW POOLS").await {
        let expect = if get(&p, "database") == APP_DB {
            "t"
        } else {
            "f"
        };
        assert_eq!(get(&p, "disabled"), expect, "{p:?}");
    }
    bounded("still served", app_client.batch_execute("SELECT 1"))
        .await
        .expect("a connected client of a disabled database goes on");
    let late = connect(&proxy, APP_USER, APP_PASSWORD, "postgres", "late").await;
    bounded("late", late.batch_execute("SELECT 1"))
        .await
        .unwrap();
    // The console's own database cannot be closed; a stats user may not close any.
    assert_eq!(sqlstate(&admin, "DISABLE switchyard").await, "55000");
    assert_eq!(sqlstate(&admin, "KILL switchyard").await, "55000");
    // Nor paused (it would show as paused and hold nothing).
    assert_eq!(sqlstate(&admin, "PAUSE switchyard").await, "55000");
    assert_eq!(proxy.metric("switchyard_paused_databases").await, 0.0);
    let looker = connect(&proxy, OTHER_USER, OTHER_PASSWORD, "switchyard", "v").await;
    assert_eq!(sqlstate(&looker, "ENABLE postgres").await, "42501");
    assert_eq!(sqlstate(&looker, "KILL postgres").await, "42501");

    bounded("enable", admin.simple_query(&format!("ENABLE {APP_DB}")))
        .await
        .unwrap();
    assert_eq!(proxy.metric("switchyard_disabled_databases").await, 0.0);
    let back = connect(&proxy, APP_USER, APP_PASSWORD, APP_DB, "back").await;
    bounded("back", back.batch_execute("SELECT 1"))
        .await
        .unwrap();

    // KILL: the database's clients end, in a transaction or not, and its server connections
    // close; new logins wait for RESUME; the other database is untouched.
    bounded("begin", app_client.batch_execute("BEGIN; SELECT 1"))
        .await
        .unwrap();
    let server_pid = show(&admin, "SHOW CLIENTS")
        .await
        .iter()
        .find(|c| get(c, "application_name") == "app-db")
        .map(|c| get(c, "server_pid").to_owned())
        .expect("the client in a transaction");
    assert_ne!(server_pid, "NULL");
    bounded("kill", admin.simple_query(&format!("KILL {APP_DB}")))
        .await
        .unwrap();
    for (name, c) in [("in a transaction", &app_client), ("idle", &back)] {
        assert!(
            bounded("killed", c.simple_query("SELECT 1")).await.is_err(),
            "the {name} client of the killed database was not ended"
        );
    }
    let pools = until(&admin, "SHOW POOLS", |rows| {
        rows.iter()
            .filter(|p| get(p, "database") == APP_DB)
            .all(|p| get(p, "in_use") == "0" && get(p, "idle") == "0")
    })
    .await;
    assert!(
        pools
            .iter()
            .any(|p| get(p, "database") == APP_DB && get(p, "paused") == "t"),
        "{pools:?}"
    );
    assert!(
        wait_until(STEP, || shared_cluster()
            .primary()
            .psql(&format!(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = {server_pid}"
            ))
            .unwrap()
            == "0"),
        "server process {server_pid} still runs after KILL"
    );
    until(&admin, "SHOW CLIENTS", |rows| {
        !rows.iter().any(|c| get(c, "database") == APP_DB)
    })
    .await;
    let v = bounded("other db", other_db.simple_query("SELECT 7"))
        .await
        .expect("the other database's client goes on");
    assert_eq!(text_rows(v), vec![vec![Some("7".to_owned())]]);

    let waits = proxy.metric("switchyard_pause_waits_total").await;
    let newcomer = spawn_login(&proxy);
    proxy
        .wait_metric("switchyard_pause_waits_total", waits + 1.0, STEP)
        .await;
    assert!(
        !newcomer.is_finished(),
        "a login to the killed database completed before RESUME"
    );
    bounded("resume", admin.simple_query(&format!("RESUME {APP_DB}")))
        .await
        .unwrap();
    assert!(
        bounded("newcomer", newcomer).await.unwrap(),
        "the held login failed after RESUME"
    );
}

/// A proxy with the console on (`app` is an admin) in front of the shared cluster's primary
/// alone (backend `pg0`), with `pool` as its `[pool]` table.
fn primary_proxy(pool: &str) -> Proxy {
    start_ready_proxy(ProxyOptions {
        backends: Some(vec![("pg0".into(), shared_cluster().primary().addr())]),
        extra_tables: format!(
            "[pool]\n{pool}\n\n[health]\ninterval = \"200ms\"\n\n[admin]\nusers = [\"{APP_USER}\"]\n"
        ),
        ..Default::default()
    })
}

/// A new empty database `db` owned by the app user, on the primary (dropped first if a run
/// before left it).
fn throwaway_database(db: &str) {
    let primary = shared_cluster().primary();
    primary
        .psql(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .unwrap();
    primary
        .psql(&format!("CREATE DATABASE {db} OWNER {APP_USER}"))
        .unwrap();
}

/// The server processes connected to `db`, counted on the primary itself.
fn server_sessions(db: &str) -> u32 {
    shared_cluster()
        .primary()
        .psql(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}'"
        ))
        .unwrap()
        .parse()
        .unwrap()
}

/// After `KILL db`, the database has no server session and can be dropped, also a couple of
/// maintenance rounds (one a second) later.
async fn stays_closed(db: &str) {
    assert!(
        wait_until(STEP, || server_sessions(db) == 0),
        "{} server session(s) to {db} after KILL",
        server_sessions(db)
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        server_sessions(db),
        0,
        "server sessions to {db} were opened after KILL"
    );
}

/// `KILL db` keeps the database's server connections closed until `RESUME db`, though
/// `min_size` asks for some: the pool is not refilled meanwhile, and the database can be
/// dropped (what KILL is for). After `RESUME`, `min_size` applies again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_keeps_a_databases_connections_closed_whatever_min_size_says() {
    let db = "sy_kill_min_size";
    throwaway_database(db);
    let proxy = primary_proxy("size = 4\nmin_size = 2");
    let admin = console(&proxy).await;
    let opened = |what: &'static str| {
        assert!(
            wait_until(STEP, || server_sessions(db) >= 2),
            "{what}: min_size connections not opened ({})",
            server_sessions(db)
        );
    };
    let c = connect(&proxy, APP_USER, APP_PASSWORD, db, "min").await;
    bounded("warm", c.batch_execute("SELECT 1")).await.unwrap();
    opened("first");
    bounded("kill", admin.simple_query(&format!("KILL {db}")))
        .await
        .unwrap();
    stays_closed(db).await;

    bounded("resume", admin.simple_query(&format!("RESUME {db}")))
        .await
        .unwrap();
    let c = connect(&proxy, APP_USER, APP_PASSWORD, db, "min").await;
    bounded("again", c.batch_execute("SELECT 1")).await.unwrap();
    opened("after RESUME");
    bounded("kill", admin.simple_query(&format!("KILL {db}")))
        .await
        .unwrap();
    stays_closed(db).await;
    shared_cluster()
        .primary()
        .psql(&format!("DROP DATABASE {db}"))
        .expect("DROP DATABASE after KILL");
}

/// A client that was waiting for a slot of its database's pool when `KILL db` came gets the
/// slot of a client KILL ended, and a connection opened after the KILL for it: that
/// connection is closed too, not kept idle (where it would stop a `DROP DATABASE`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_closes_the_connection_a_waiting_checkout_opens() {
    let db = "sy_kill_waiting";
    throwaway_database(db);
    let proxy = primary_proxy("size = 1\ncheckout_timeout = \"30s\"");
    let admin = console(&proxy).await;
    let holder = connect(&proxy, APP_USER, APP_PASSWORD, db, "holder").await;
    let waiter = connect(&proxy, APP_USER, APP_PASSWORD, db, "waiter").await;
    for c in [&holder, &waiter] {
        bounded("warm", c.batch_execute("SELECT 1")).await.unwrap();
    }
    bounded("begin", holder.batch_execute("BEGIN; SELECT 1"))
        .await
        .unwrap();
    let waiting = tokio::spawn(async move { waiter.simple_query("SELECT 2").await });
    until(&admin, "SHOW POOLS", |rows| {
        rows.iter()
            .any(|p| get(p, "database") == db && get(p, "waiting") == "1")
    })
    .await;
    bounded("kill", admin.simple_query(&format!("KILL {db}")))
        .await
        .unwrap();
    assert!(
        bounded("waiter", waiting).await.unwrap().is_err(),
        "the waiting client of the killed database was not ended"
    );
    stays_closed(db).await;
    shared_cluster()
        .primary()
        .psql(&format!("DROP DATABASE {db}"))
        .expect("DROP DATABASE after KILL");
}

/// A login (by a user switchyard knows) to a database the server does not have leaves no pool
/// behind that `min_size` would have open connections, failing, every second: the pool is
/// gone from `SHOW POOLS` and the server connection errors stop growing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_to_a_missing_database_leaves_no_pool_connecting_again() {
    let proxy = primary_proxy("min_size = 1");
    let admin = console(&proxy).await;
    let (code, message) = refused_login(&proxy, "sy_no_such_db").await;
    assert_eq!(code, "3D000", "{message}");
    until(&admin, "SHOW POOLS", |rows| {
        !rows.iter().any(|p| get(p, "database") == "sy_no_such_db")
    })
    .await;
    let series = "switchyard_server_connect_errors_total{backend=\"pg0\"}";
    let errors = proxy.metric(series).await;
    assert!(errors >= 1.0, "the login's own failure was not counted");
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert_eq!(
        proxy.metric(series).await,
        errors,
        "connections to the missing database went on being tried"
    );
}

/// A login waiting for a server connection when PAUSE comes (it holds none yet, so PAUSE does
/// not wait for it) runs nothing on the server until RESUME, though it gets its connection
/// once the transaction PAUSE waited for ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_waiting_for_a_connection_when_pause_comes_waits_for_resume() {
    let proxy = start_ready_proxy(ProxyOptions {
        backends: Some(vec![("pg0".into(), shared_cluster().primary().addr())]),
        extra_top: "shutdown_timeout = \"20s\"\n".into(),
        extra_tables: format!(
            "[pool]\nsize = 1\ncheckout_timeout = \"30s\"\n\n[admin]\nusers = [\"{APP_USER}\"]\n"
        ),
        ..Default::default()
    });
    let holder = connect(&proxy, APP_USER, APP_PASSWORD, APP_DB, "holder").await;
    bounded("begin", holder.batch_execute("BEGIN; SELECT 1"))
        .await
        .unwrap();
    let admin = console(&proxy).await;
    let newcomer = spawn_login(&proxy);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !newcomer.is_finished(),
        "the login did not wait for the pool"
    );
    let pause = tokio::spawn(async move { admin.simple_query("PAUSE").await.map(|_| admin) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !pause.is_finished(),
        "PAUSE did not wait for the open transaction"
    );
    bounded("commit", holder.batch_execute("COMMIT"))
        .await
        .unwrap();
    let admin = bounded("pause", pause).await.unwrap().expect("PAUSE");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!newcomer.is_finished(), "a login went on while paused");
    bounded("resume", admin.simple_query("RESUME"))
        .await
        .unwrap();
    assert!(
        bounded("newcomer", newcomer).await.unwrap(),
        "the held login failed\n{}",
        proxy.log_tail(20)
    );
}

/// `switchyard_transactions_total` counts the clients' transactions (an autocommit statement
/// is one), not the proxy's own use of a connection: a login alone counts none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_total_counts_client_transactions_only() {
    async fn total(proxy: &Proxy) -> f64 {
        let (_, body) = proxy.http_get("/metrics").await;
        body.lines()
            .filter(|l| l.starts_with("switchyard_transactions_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    }
    let proxy = proxy();
    let client = connect(&proxy, APP_USER, APP_PASSWORD, APP_DB, "counted").await;
    assert_eq!(total(&proxy).await, 0.0, "a login counted as a transaction");
    for sql in ["SELECT 1", "SELECT 2", "BEGIN; SELECT 3; COMMIT"] {
        bounded(sql, client.batch_execute(sql)).await.unwrap();
    }
    // (A Query message of several statements is one transaction when it holds a block.)
    assert_eq!(total(&proxy).await, 3.0);
}

/// Clients waiting out a PAUSE fill `max_client_connections` (the operator who paused having
/// left): the admin user still reaches the console, on one of its reserved places (3, then
/// 53300), and a client that gave up waiting and closed its connection leaves at once, not at
/// RESUME.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_that_fills_the_proxy_leaves_the_console_reachable() {
    let proxy = start_ready_proxy(ProxyOptions {
        extra_top: "max_client_connections = 2\n".into(),
        extra_tables: format!("[admin]\nusers = [\"{APP_USER}\"]\n"),
        ..Default::default()
    });
    let clients = "switchyard_client_connections";
    let admin = console(&proxy).await;
    show(&admin, "PAUSE").await;
    drop(admin);
    metric_becomes(&proxy, clients, 0.0).await;
    // Two logins authenticate and wait for RESUME, counted: the proxy is full.
    let waiting = [spawn_login(&proxy), spawn_login(&proxy)];
    proxy.wait_metric(clients, 2.0, STEP).await;
    let full = try_connect(&proxy, APP_USER, APP_PASSWORD, APP_DB, "late").await;
    assert_eq!(
        full.err().and_then(|e| e.code().cloned()),
        Some(tokio_postgres::error::SqlState::TOO_MANY_CONNECTIONS)
    );

    // The console is reachable on its reserved places, three at once.
    let mut consoles = Vec::new();
    for _ in 0..3 {
        consoles.push(console(&proxy).await);
    }
    let fourth = try_connect(&proxy, APP_USER, APP_PASSWORD, "switchyard", "ops").await;
    assert_eq!(
        fourth.err().and_then(|e| e.code().cloned()),
        Some(tokio_postgres::error::SqlState::TOO_MANY_CONNECTIONS),
        "the console's reserve is not bounded"
    );
    let of_app = |rows: &[Row]| {
        rows.iter()
            .filter(|r| r["database"].as_deref() == Some(APP_DB))
            .count()
    };
    let admin = &consoles[0];
    assert_eq!(of_app(&show(admin, "SHOW CLIENTS").await), 2);

    // The waiting clients give up (their sockets close): they leave while still paused.
    for w in &waiting {
        w.abort();
    }
    until(admin, "SHOW CLIENTS", |rows| of_app(rows) == 0).await;
    metric_becomes(&proxy, clients, 3.0).await;
    show(admin, "RESUME").await;
    drop(consoles);
    metric_becomes(&proxy, clients, 0.0).await;
    let app = connect(&proxy, APP_USER, APP_PASSWORD, APP_DB, "after").await;
    bounded("after resume", app.simple_query("SELECT 1"))
        .await
        .unwrap();
}

/// Waits (up to [`STEP`]) until metric `series` is `value`.
async fn metric_becomes(proxy: &Proxy, series: &str, value: f64) {
    let deadline = std::time::Instant::now() + STEP;
    loop {
        let now = proxy.metric(series).await;
        if now == value {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{series} is {now}, not {value}, after {STEP:?}\n{}",
            proxy.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A console client (a stats user is enough) that sends one Query of many `SHOW HELP`s and
/// never reads its answers: a `KILL` of it ends it, and so does a shutdown, which then does
/// not wait out `shutdown_timeout` (60 s here; an exit within 20 s is proof enough).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_that_does_not_read_ends_at_kill_and_shutdown() {
    use support::raw::{login, ok, PROTO_3_0};
    let proxy = proxy_with_top("shutdown_timeout = \"60s\"");
    let stuck = || async {
        let params = [("user", OTHER_USER), ("database", "switchyard")];
        let mut s = ok(
            login(&proxy.addr(), PROTO_3_0, &params, Some(OTHER_PASSWORD)).await,
            "stats console login",
        );
        // About 900 kB of Query (under the console's 1 MB limit), far more of answers.
        let mut text = "SHOW HELP;".repeat(90_000).into_bytes();
        text.push(0);
        s.raw.send(&msg(b'Q', &text)).await.unwrap();
        s
    };
    let first = stuck().await;
    let pid = first.key.expect("a process id").0;
    let admin = console(&proxy).await;
    let listed = |rows: &[Row]| rows.iter().any(|r| r["pid"] == Some(pid.to_string()));
    until(&admin, "SHOW CLIENTS", listed).await;
    // Its answers fill the socket buffers, and the console waits for the client to read.
    tokio::time::sleep(Duration::from_secs(2)).await;
    show(&admin, &format!("KILL {pid}")).await;
    until(&admin, "SHOW CLIENTS", |rows| !listed(rows)).await;
    drop(first);
    drop(admin);

    let _second = stuck().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.signal(libc::SIGTERM);
    let status = tokio::task::block_in_place(|| proxy.wait_exit(Duration::from_secs(20)));
    assert!(
        status.is_some_and(|s| s.success()),
        "exit: {status:?}\n{}",
        proxy.log_tail(20)
    );
}

/// A PAUSE waiting for an open transaction (the grace period 60 s) returns at once, with a
/// notice and no warning, when another console runs RESUME; and a KILL of the console that
/// waits in PAUSE ends it at once (57P01).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_pause_ends_at_resume_and_at_kill() {
    use support::raw::{login, ok, PROTO_3_0};
    let proxy = proxy_with_top("shutdown_timeout = \"60s\"");
    let open = connect(&proxy, APP_USER, APP_PASSWORD, APP_DB, "open-txn").await;
    bounded("begin", open.batch_execute("BEGIN; SELECT 1"))
        .await
        .unwrap();
    let params = [("user", APP_USER), ("database", "switchyard")];
    let mut first = ok(
        login(&proxy.addr(), PROTO_3_0, &params, Some(APP_PASSWORD)).await,
        "console login",
    );
    let other = console(&proxy).await;

    first.raw.send(&msg(b'Q', b"PAUSE\0")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    show(&other, "RESUME").await;
    let started = std::time::Instant::now();
    let n = bounded("notice", first.raw.frame()).await;
    assert_eq!(
        (n.tag, n.severity(), n.code()),
        (b'N', "NOTICE".to_owned(), "00000".to_owned()),
        "{n:?}"
    );
    assert!(n.message().contains("RESUME"), "{}", n.message());
    assert_eq!(tags_until_ready(&mut first.raw).await, ["CPAUSE", "Z"]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    // PAUSE again, then KILL of that console from the other.
    first.raw.send(&msg(b'Q', b"PAUSE\0")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = first.key.expect("a process id").0;
    show(&other, &format!("KILL {pid}")).await;
    let fatal = bounded("fatal", first.raw.frame()).await;
    assert_eq!(
        (fatal.tag, fatal.severity(), fatal.code()),
        (b'E', "FATAL".to_owned(), "57P01".to_owned()),
        "{fatal:?}"
    );
    first.raw.expect_closed(STEP, "the killed console").await;

    // The pause it set holds until RESUME; the transaction goes on meanwhile.
    show(&other, "RESUME").await;
    bounded("commit", open.batch_execute("COMMIT"))
        .await
        .unwrap();
}

/// What a console user may do follows the configuration in effect at each command: a reload
/// that makes an admin a stats user, and drops a stats user, changes their open sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_access_follows_a_reload() {
    let proxy = proxy();
    let admin = console(&proxy).await;
    let viewer = connect(&proxy, OTHER_USER, OTHER_PASSWORD, "switchyard", "viewer").await;
    show(&viewer, "SHOW POOLS").await;
    proxy.rewrite_config(&format!(
        "[health]\ninterval = \"200ms\"\n\n[admin]\nusers = []\nstats_users = [\"{APP_USER}\"]\n"
    ));
    proxy.reload_ok().await;
    assert_eq!(sqlstate(&admin, "PAUSE").await, "42501");
    assert_eq!(show(&admin, "SHOW VERSION").await.len(), 1);
    assert_eq!(sqlstate(&viewer, "SHOW POOLS").await, "42501");
    assert_eq!(proxy.metric("switchyard_paused").await, 0.0);
}
