//! Process lifecycle (issue "Foundation"): graceful shutdown on SIGTERM/SIGINT (stop
//! accepting, let in-flight transactions finish within `shutdown_timeout`, FATAL 57P01 to idle
//! clients, exit 0), the cut-off when a transaction outlasts `shutdown_timeout`, configuration
//! reload on SIGHUP (users, pool size, invalid files rejected), and `switchyard check` /
//! `switchyard run` on invalid files.
//!
//! Every test starts its own proxy (the cluster is shared), with its own tables and roles.

mod support;

use std::future::Future;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use support::proxy::{render_config, Proxy, ProxyOptions};
use support::*;
use tokio::task::JoinHandle;
use tokio_postgres::Client;

const STEP: Duration = Duration::from_secs(20);

async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {STEP:?}: {what}"),
    }
}

const NO_SPLIT: &str = "[routing]\nread_write_split = false\n";

fn proxy(extra_top: &str, extra_tables: &str) -> Proxy {
    Proxy::start_with(
        shared_cluster(),
        ProxyOptions {
            extra_top: extra_top.into(),
            extra_tables: extra_tables.into(),
            ..Default::default()
        },
    )
}

/// Connects and returns the client with the handle of its connection task (whose result
/// tells how the connection ended).
async fn connect_as(
    p: &Proxy,
    user: &str,
    password: &str,
) -> Result<(Client, JoinHandle<Result<(), tokio_postgres::Error>>), tokio_postgres::Error> {
    let cs = format!(
        "{} connect_timeout=10",
        p.conn_string(user, password, APP_DB)
    );
    let (client, conn) = bounded(
        "connect",
        tokio_postgres::connect(&cs, tokio_postgres::NoTls),
    )
    .await?;
    Ok((client, tokio::spawn(conn)))
}

async fn connect(p: &Proxy) -> (Client, JoinHandle<Result<(), tokio_postgres::Error>>) {
    connect_as(p, APP_USER, APP_PASSWORD)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}\n{}", p.log_tail(40)))
}

async fn try_simple(c: &Client, sql: &str) -> Result<Rows, tokio_postgres::Error> {
    Ok(text_rows(bounded(sql, c.simple_query(sql)).await?))
}

async fn q(c: &Client, sql: &str) -> Rows {
    try_simple(c, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e} ({e:?})"))
}

async fn one(c: &Client, sql: &str) -> String {
    q(c, sql).await[0][0].clone().unwrap_or_default()
}

fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code().map(|c| c.code().to_string()).unwrap_or_default()
}

fn su(sql: &str) -> String {
    tokio::task::block_in_place(|| {
        shared_cluster()
            .primary()
            .psql_db(APP_DB, sql)
            .unwrap_or_else(|e| panic!("superuser SQL failed: {e}"))
    })
}

fn create_table(name: &str) {
    su(&format!(
        "DROP TABLE IF EXISTS {name}; CREATE TABLE {name} (id int); \
         ALTER TABLE {name} OWNER TO {APP_USER}"
    ));
}

/// Waits until the reload counter for `result` reaches `n`.
async fn wait_reloads(p: &Proxy, result: &str, n: f64) {
    let series = format!("switchyard_reloads_total{{result=\"{result}\"}}");
    let deadline = Instant::now() + STEP;
    loop {
        let v = p.metric(&series).await;
        if v >= n {
            assert_eq!(v, n, "{series}");
            return;
        }
        if Instant::now() >= deadline {
            panic!("{series} is {v}, expected {n}\nlog:\n{}", p.log_tail(40));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How a client connection task ended, waiting at most `within`.
async fn ended(
    h: JoinHandle<Result<(), tokio_postgres::Error>>,
    within: Duration,
) -> Result<(), tokio_postgres::Error> {
    match tokio::time::timeout(within, h).await {
        Ok(r) => r.expect("connection task panicked"),
        Err(_) => panic!("the client connection was not closed within {within:?}"),
    }
}

/// Runs blocking harness calls (waits, psql) without stalling the runtime.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

fn refuses_connections(addr: &str) -> bool {
    std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_millis(300))
        .is_err()
}

// ---------------------------------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------------------------------

/// SIGTERM or SIGINT: new connections are refused, an idle client gets FATAL 57P01 at once, an
/// open transaction can still run statements and commit, then its client is closed too, and
/// the process exits 0 without waiting for the rest of shutdown_timeout (120 s: an exit within
/// 60 s of the COMMIT is proof enough).
async fn graceful_shutdown(sig: i32, table: &str) {
    create_table(table);
    let p = proxy("shutdown_timeout = \"120s\"", NO_SPLIT);
    let (idle, idle_conn) = connect(&p).await;
    assert_eq!(one(&idle, "SELECT 'idle'").await, "idle");
    let (busy, busy_conn) = connect(&p).await;
    q(&busy, "BEGIN").await;
    q(&busy, &format!("INSERT INTO {table} VALUES (1)")).await;

    p.signal(sig);

    let err = ended(idle_conn, STEP)
        .await
        .expect_err("the idle client's connection ended without an error");
    assert_eq!(sqlstate(&err), "57P01", "idle client: {err:?}");
    assert!(idle.is_closed());

    assert!(
        blocking(|| wait_until(STEP, || refuses_connections(&p.addr()))),
        "new connections still accepted after the signal"
    );
    let (code, body) = p.http_get("/readyz").await;
    assert_eq!(code, 503, "/readyz while draining: {body}");

    // The drain has begun (no new connections): the transaction goes on.
    q(&busy, &format!("INSERT INTO {table} VALUES (2)")).await;
    let commit = try_simple(&busy, "COMMIT").await;
    // Problems are collected so that one does not hide the others.
    let mut problems = Vec::new();
    let rows = su(&format!("SELECT count(*) FROM {table}"));
    if rows != "2" {
        problems.push(format!(
            "the in-flight transaction did not commit (rows: {rows})"
        ));
    }
    match commit {
        Ok(_) => {
            let err = ended(busy_conn, STEP)
                .await
                .expect_err("the busy client's connection ended without an error");
            if sqlstate(&err) != "57P01" {
                problems.push(format!(
                    "busy client closed after COMMIT with {err:?}, not 57P01"
                ));
            }
        }
        Err(e) => problems.push(format!(
            "COMMIT of the in-flight transaction during shutdown was answered with an error \
             ({} {e}) although the transaction {} committed",
            sqlstate(&e),
            if rows == "2" { "was" } else { "was not" }
        )),
    }
    match blocking(|| p.wait_exit(Duration::from_secs(60))) {
        None => problems.push(format!(
            "the proxy did not exit within 60 s of the last transaction's end (it waits for \
             the whole shutdown_timeout of 120 s although no client is left?)\n{}",
            p.log_tail(40)
        )),
        Some(status) if !status.success() => {
            problems.push(format!("exit status {status}\n{}", p.log_tail(40)))
        }
        Some(_) => {}
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_transactions_then_exits_zero() {
    graceful_shutdown(libc::SIGTERM, "lc_drain_term").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_drains_transactions_then_exits_zero() {
    graceful_shutdown(libc::SIGINT, "lc_drain_int").await;
}

/// During a shutdown, a client that sends its next request as soon as it has the answer of the
/// COMMIT ending its transaction begins no new transaction: the request is answered FATAL
/// 57P01 and nothing of it runs. With reads split the proxy reads the commit's position back
/// after the COMMIT's answer, so the request arrives before the client's session is done
/// with. Several rounds, each its own proxy: the request's timing varies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_right_after_the_last_commit_of_a_drain_is_refused() {
    let table = "lc_after_last_commit";
    create_table(table);
    for round in 0..3 {
        let p = proxy("shutdown_timeout = \"120s\"", "");
        let mut c = support::raw::login_app(&p.addr(), &[]).await;
        assert_eq!(c.raw.query_ok("BEGIN").await.status, b'T');
        let insert = format!("INSERT INTO {table} VALUES ({round})");
        assert_eq!(c.raw.query_ok(&insert).await.status, b'T');
        p.signal(libc::SIGTERM);
        assert!(
            blocking(|| wait_until(STEP, || refuses_connections(&p.addr()))),
            "new connections still accepted after the signal"
        );
        assert_eq!(c.raw.query_ok("COMMIT").await.status, b'I');
        let mut next = bytes::BytesMut::new();
        postgres_protocol::message::frontend::query(
            &format!("INSERT INTO {table} VALUES (100 + {round})"),
            &mut next,
        )
        .unwrap();
        c.raw.send(&next).await.expect("send the next request");
        let got = match c.raw.next(STEP).await {
            support::raw::Next::Frame(f) => f,
            other => panic!("round {round}: no answer to the request: {other:?}"),
        };
        assert_eq!(
            (got.tag, got.severity(), got.code()),
            (b'E', "FATAL".to_string(), "57P01".to_string()),
            "round {round}: the request after the last COMMIT: {got:?}\n{}",
            p.log_tail(20)
        );
        c.raw.expect_closed(STEP, "after the FATAL").await;
        assert!(blocking(|| p.wait_exit(STEP)).is_some(), "no exit");
    }
    assert_eq!(
        su(&format!(
            "SELECT string_agg(id::text, ',' ORDER BY id) FROM {table}"
        )),
        "0,1,2",
        "only the transactions open at the signal committed"
    );
}

/// During a shutdown, a read-only block on a replica ended by a Query that goes on to write
/// (`COMMIT; INSERT ...`, split by the proxy so that the write runs on the primary) runs
/// whole, and its client then gets FATAL 57P01. The block changed a setting, so the proxy
/// reads the settings back between the two parts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_request_in_flight_at_a_shutdown_runs_whole() {
    let table = "lc_split_at_shutdown";
    create_table(table);
    let p = proxy("shutdown_timeout = \"120s\"", "");
    // Both replicas up in the proxy's view, so that the block runs on one.
    p.wait_status("three backends up", STEP, |v| {
        v["backends"]
            .as_array()
            .is_some_and(|bs| bs.len() == 3 && bs.iter().all(|b| b["up"] == true))
    })
    .await;
    let mut c = support::raw::login_app(&p.addr(), &[]).await;
    assert_eq!(c.raw.query_ok("BEGIN READ ONLY").await.status, b'T');
    let port = c.raw.query_ok("SELECT inet_server_port()").await.scalar();
    assert_ne!(
        port,
        shared_cluster().primary().port().to_string(),
        "the read-only block runs on a replica"
    );
    c.raw.query_ok("SET application_name = 'lc_split'").await;
    p.signal(libc::SIGTERM);
    assert!(
        blocking(|| wait_until(STEP, || refuses_connections(&p.addr()))),
        "new connections still accepted after the signal"
    );
    let r = c
        .raw
        .query(&format!("COMMIT; INSERT INTO {table} VALUES (7)"))
        .await;
    assert!(r.error.is_none(), "{r:?}\n{}", p.log_tail(20));
    assert_eq!(r.tags, ["COMMIT", "INSERT 0 1"], "{r:?}");
    assert_eq!(r.status, b'I');
    let after = c.raw.expect_closed(STEP, "after the request").await;
    assert!(
        after.first().is_some_and(|f| f.code() == "57P01"),
        "{after:?}"
    );
    assert_eq!(
        su(&format!("SELECT count(*) FROM {table} WHERE id = 7")),
        "1"
    );
}

/// Whether the table has no row and no server session still runs an INSERT into it.
fn nothing_left_of(table: &str) -> bool {
    su(&format!("SELECT count(*) FROM {table}")) == "0"
        && su(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'INSERT INTO {table}%'"
        )) == "0"
}

/// A transaction that outlasts shutdown_timeout is cut off: its client is told 57P01 (the
/// server session's end, as from `pg_terminate_backend`), nothing of it commits, and the
/// process exits after the timeout (not before it; within 30 s of a 1 s timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_outlasting_shutdown_timeout_is_cut_off() {
    let table = "lc_cutoff";
    create_table(table);
    let p = proxy("shutdown_timeout = \"1s\"", NO_SPLIT);
    let (busy, busy_conn) = connect(&p).await;
    q(&busy, "BEGIN").await;
    q(&busy, &format!("INSERT INTO {table} VALUES (1)")).await;
    let t0 = Instant::now();
    p.signal(libc::SIGTERM);
    let status = blocking(|| p.wait_exit(Duration::from_secs(30))).unwrap_or_else(|| {
        panic!(
            "the proxy did not exit within 30 s of a 1 s shutdown_timeout\n{}",
            p.log_tail(40)
        )
    });
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "exited after {took:?}, before shutdown_timeout"
    );
    eprintln!("cut-off exit status: {status}");
    let err = ended(busy_conn, STEP).await.expect_err(
        "the client of the cut-off transaction saw its connection end without an error",
    );
    assert_eq!(
        sqlstate(&err),
        "57P01",
        "what the client of the cut-off transaction was told: {err:?}"
    );
    assert!(busy.is_closed());
    assert!(
        blocking(|| wait_until(STEP, || nothing_left_of(table))),
        "the cut-off transaction left a row or a server session behind"
    );
}

/// README: "a second SIGINT closes at once". With a transaction open and a 120 s
/// shutdown_timeout, the first SIGINT starts the drain (the transaction goes on); the second
/// ends it: the client gets 57P01, nothing of its transaction commits, and the process exits
/// (within 60 s, far from the 120 s the drain would wait).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigint_closes_at_once() {
    let table = "lc_second_int";
    create_table(table);
    let p = proxy("shutdown_timeout = \"120s\"", NO_SPLIT);
    let (busy, busy_conn) = connect(&p).await;
    q(&busy, "BEGIN").await;
    q(&busy, &format!("INSERT INTO {table} VALUES (1)")).await;
    // And a client whose request is running.
    let (sleeper, sleeper_conn) = connect(&p).await;
    let sleeping = tokio::spawn(async move {
        let r = try_simple(&sleeper, "SELECT pg_sleep(90) /* lc_second_int sleeper */").await;
        (sleeper, r)
    });
    assert!(blocking(|| wait_until(STEP, || su(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%lc_second_int sleeper%' \
         AND pid <> pg_backend_pid()"
    )
    .trim()
        == "1")));

    p.signal(libc::SIGINT);
    // Signals of one kind that arrive together are delivered once: the second SIGINT goes
    // only after the first was handled (the listener is closed).
    assert!(
        blocking(|| wait_until(STEP, || refuses_connections(&p.addr()))),
        "new connections still accepted after the first SIGINT"
    );
    // Draining, not closing: the transaction goes on.
    q(&busy, &format!("INSERT INTO {table} VALUES (2)")).await;
    assert!(p.is_running());

    p.signal(libc::SIGINT);
    let err = ended(busy_conn, STEP).await.expect_err(
        "the client in a transaction saw its connection end without an error after the \
         second SIGINT",
    );
    assert_eq!(sqlstate(&err), "57P01", "{err:?}");
    // (The FATAL answers the request the client waits on; then its connection ends.)
    let (_, r) = tokio::time::timeout(STEP, sleeping)
        .await
        .expect("the request running at the second SIGINT got no answer")
        .unwrap();
    let err = r.expect_err("the request running at the second SIGINT completed");
    assert_eq!(sqlstate(&err), "57P01", "{err:?}");
    let _ = ended(sleeper_conn, STEP).await;
    su("SELECT pg_cancel_backend(pid) FROM pg_stat_activity \
        WHERE query LIKE '%lc_second_int sleeper%' AND pid <> pg_backend_pid()");
    let status = blocking(|| p.wait_exit(Duration::from_secs(60))).unwrap_or_else(|| {
        panic!(
            "the proxy still runs 60 s after the second SIGINT (shutdown_timeout 120 s)\n{}",
            p.log_tail(40)
        )
    });
    eprintln!("exit status after the second SIGINT: {status}");
    assert!(
        blocking(|| wait_until(STEP, || nothing_left_of(table))),
        "the transaction cut by the second SIGINT left a row or a server session behind"
    );
}

/// A reload whose file read hangs (a FIFO nobody writes, as a file on hung storage) does not
/// keep the stop signals waiting: SIGTERM still drains and the process exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_is_heard_while_a_reload_hangs_reading_its_file() {
    let p = proxy("", NO_SPLIT);
    let (c, _conn) = connect(&p).await;
    assert_eq!(one(&c, "SELECT 1").await, "1");
    let path = p.config_path().to_path_buf();
    std::fs::remove_file(&path).unwrap();
    let fifo = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0, "mkfifo");
    p.signal(libc::SIGHUP);
    // The reload is reading (blocked on the FIFO) before the stop signal comes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(p.is_running());
    p.signal(libc::SIGTERM);
    let status = blocking(|| p.wait_exit(Duration::from_secs(30)));
    // Unblock the reader whatever happened, so nothing stays behind.
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path);
    assert!(
        status.is_some(),
        "the proxy still runs 30 s after SIGTERM, a reload hanging on its file\n{}",
        p.log_tail(20)
    );
}

/// Waits until `p` logs that it accepts clients; panics if it exits first.
fn wait_accepting(p: &Proxy) {
    let up = blocking(|| {
        wait_until(Duration::from_secs(30), || {
            !p.is_running() || p.log().contains("switchyard accepting connections")
        })
    });
    assert!(
        up && p.is_running(),
        "the second switchyard did not start:\n{}",
        p.log_tail(30)
    );
}

/// `so_reuseport = true`: a second switchyard starts on the same address (with its own HTTP
/// port, or sharing that too), the kernel spreads new clients over both, and the old one's
/// SIGTERM hands the address over: its clients are told it is shutting down, the other's go
/// on, and every client connecting after it exited reaches the other. (Connections the kernel
/// queued on the old listener as it closed are not tested: see the README on
/// `tcp_migrate_req`.) Without `so_reuseport`, a second process on the address fails to
/// start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn so_reuseport_lets_a_second_process_share_and_take_over_the_address() {
    let old = proxy("so_reuseport = true", NO_SPLIT);
    let new = old.start_beside(true);
    wait_accepting(&new);
    let same_http = old.start_beside(false);
    wait_accepting(&same_http);
    drop(same_http);

    let mut clients = Vec::new();
    for _ in 0..24 {
        let (c, conn) = connect(&old).await;
        assert_eq!(one(&c, "SELECT 1").await, "1");
        clients.push((c, conn));
    }
    let total = "switchyard_client_connections_total";
    let on_old = old.metric(total).await;
    let on_new = new.metric(total).await;
    assert_eq!(on_old + on_new, 24.0, "old {on_old}, new {on_new}");
    assert!(
        on_old > 0.0 && on_new > 0.0,
        "the kernel sent every client to one process: old {on_old}, new {on_new}"
    );

    old.signal(libc::SIGTERM);
    let status = blocking(|| old.wait_exit(Duration::from_secs(30)))
        .unwrap_or_else(|| panic!("the old switchyard did not exit\n{}", old.log_tail(30)));
    assert!(status.success(), "{status}\n{}", old.log_tail(30));
    let mut going_on = 0;
    for (c, _) in &clients {
        match try_simple(c, "SELECT 2").await {
            Ok(rows) => {
                assert_eq!(rows, vec![vec![Some("2".to_owned())]]);
                going_on += 1;
            }
            Err(e) => assert!(
                c.is_closed() || sqlstate(&e) == "57P01",
                "a client of the old process: {e:?}"
            ),
        }
    }
    assert_eq!(going_on as f64, on_new, "the new process's clients go on");
    for i in 0..24 {
        let (c, _) = connect_as(&new, APP_USER, APP_PASSWORD)
            .await
            .unwrap_or_else(|e| panic!("connection {i} after the handover: {e}"));
        assert_eq!(one(&c, "SELECT 3").await, "3");
    }
    assert_eq!(new.metric(total).await, on_new + 24.0);

    // The default: the address is this process's alone.
    let alone = proxy("", NO_SPLIT);
    let second = alone.start_beside(true);
    let status = blocking(|| second.wait_exit(Duration::from_secs(30))).unwrap_or_else(|| {
        panic!(
            "a second process shared the address\n{}",
            second.log_tail(30)
        )
    });
    assert!(!status.success());
    assert!(
        second.log().contains("Address already in use"),
        "{}",
        second.log_tail(10)
    );

    // With `[peering]` each process needs a peering port of its own: a second process started
    // with the same file exits 1 naming it, and the first goes on.
    let peer_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let peered = proxy(
        "so_reuseport = true",
        &format!("{NO_SPLIT}[peering]\nlisten = \"127.0.0.1:{peer_port}\"\n"),
    );
    let twin = peered.start_beside(true);
    let status = blocking(|| twin.wait_exit(Duration::from_secs(30))).unwrap_or_else(|| {
        panic!(
            "a second process took the peering port\n{}",
            twin.log_tail(30)
        )
    });
    assert!(!status.success());
    assert!(
        twin.log()
            .contains(&format!("cannot listen on 127.0.0.1:{peer_port}")),
        "{}",
        twin.log_tail(10)
    );
    let (c, _) = connect(&peered).await;
    assert_eq!(one(&c, "SELECT 4").await, "4");
}

// ---------------------------------------------------------------------------------------------
// Reload
// ---------------------------------------------------------------------------------------------

/// SIGHUP with a new [[users]] entry: the new user can log in, and a client connected before
/// (even inside a transaction across the reload) keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_a_user_without_dropping_clients() {
    su("DROP ROLE IF EXISTS lc_newuser; CREATE ROLE lc_newuser LOGIN PASSWORD 'lc_pw'");
    let p = proxy("", NO_SPLIT);
    let (old, old_conn) = connect(&p).await;
    let (idle, _idle_conn) = connect(&p).await;
    match connect_as(&p, "lc_newuser", "lc_pw").await {
        Ok(_) => panic!("an unconfigured user logged in"),
        Err(e) => assert!(sqlstate(&e).starts_with("28"), "unconfigured user: {e:?}"),
    }
    q(&old, "BEGIN").await;
    let pid: String = one(&old, "SELECT pg_backend_pid()").await;

    p.rewrite_config(&format!(
        "{NO_SPLIT}\n[[users]]\nname = \"lc_newuser\"\npassword = \"lc_pw\"\n"
    ));
    p.reload();
    wait_reloads(&p, "ok", 1.0).await;

    let (new, _new_conn) = connect_as(&p, "lc_newuser", "lc_pw")
        .await
        .unwrap_or_else(|e| panic!("the added user cannot log in: {e}\n{}", p.log_tail(40)));
    assert_eq!(one(&new, "SELECT current_user::text").await, "lc_newuser");
    // The transaction opened before the reload goes on, on the same server connection.
    assert_eq!(one(&old, "SELECT pg_backend_pid()").await, pid);
    q(&old, "COMMIT").await;
    assert_eq!(one(&old, "SELECT 'old ok'").await, "old ok");
    assert_eq!(one(&idle, "SELECT 'idle ok'").await, "idle ok");
    assert!(!old_conn.is_finished());
    // The old users still log in.
    let (again, _c) = connect(&p).await;
    assert_eq!(one(&again, "SELECT 1").await, "1");
    assert!(p.is_running());
}

/// Where a read ran (the server's port), from `/status`-independent SQL.
async fn read_port(c: &Client) -> u16 {
    one(c, "SELECT inet_server_port()")
        .await
        .parse()
        .expect("a port")
}

/// Waits (bounded) until `/status` lists exactly `names`, each up.
async fn wait_backends_up(p: &Proxy, names: &[&str]) {
    p.wait_status(&format!("exactly {names:?} up"), STEP, |v| {
        v["backends"].as_array().is_some_and(|bs| {
            bs.len() == names.len()
                && bs
                    .iter()
                    .all(|b| b["up"] == true && names.contains(&b["name"].as_str().unwrap_or("")))
        })
    })
    .await;
}

/// SIGHUP with a replica added, then another removed: reads reach the added one and no
/// longer the removed one, which leaves no health series behind, a client pinned there loses
/// its connection, and a client connected throughout keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_and_removes_replicas() {
    let c = shared_cluster();
    let entry = |n: &support::localpg::Node| (n.name().to_string(), n.addr());
    let (primary, r1, r2) = (
        entry(c.primary()),
        entry(&c.replicas()[0]),
        entry(&c.replicas()[1]),
    );
    let p = Proxy::start_backends(
        vec![primary.clone(), r1.clone()],
        ProxyOptions {
            extra_tables: "[health]\ninterval = \"200ms\"\n[routing]\nconsistency = \"eventual\"\n"
                .into(),
            ..Default::default()
        },
    );
    wait_backends_up(&p, &[&primary.0, &r1.0]).await;
    let (client, _conn) = connect(&p).await;
    let port = |e: &(String, String)| e.1.rsplit_once(':').unwrap().1.parse::<u16>().unwrap();
    assert_eq!(
        read_port(&client).await,
        port(&r1),
        "a read before the reload"
    );

    // Added: reads spread over both replicas, the new one included.
    p.rewrite_backends(&[primary.clone(), r1.clone(), r2.clone()]);
    p.reload_ok().await;
    wait_backends_up(&p, &[&primary.0, &r1.0, &r2.0]).await;
    let deadline = Instant::now() + STEP;
    while read_port(&client).await != port(&r2) {
        assert!(
            Instant::now() < deadline,
            "no read reached the added replica\n{}",
            p.log_tail(30)
        );
    }
    let up = |name: &str| format!("switchyard_backend_up{{backend=\"{name}\"}} 1");
    let (_, metrics) = p.http_get("/metrics").await;
    assert!(
        metrics.contains(&up(&r1.0)) && metrics.contains(&up(&r2.0)),
        "{metrics}"
    );

    // A client pinned to r1 (SQL PREPARE in a read-only transaction that ran there).
    let (pinned, _pinned_conn) = connect(&p).await;
    let deadline = Instant::now() + STEP;
    loop {
        q(&pinned, "BEGIN READ ONLY").await;
        if read_port(&pinned).await == port(&r1) {
            break;
        }
        q(&pinned, "ROLLBACK").await;
        assert!(
            Instant::now() < deadline,
            "no read-only transaction reached r1"
        );
    }
    q(&pinned, "PREPARE lc_pin AS SELECT inet_server_port()").await;
    q(&pinned, "COMMIT").await;
    assert_eq!(one(&pinned, "EXECUTE lc_pin").await, port(&r1).to_string());

    // Removed: no read runs there any more, and its series are gone.
    p.rewrite_backends(&[primary.clone(), r2.clone()]);
    p.reload_ok().await;
    wait_backends_up(&p, &[&primary.0, &r2.0]).await;
    // The pinned client's connection there is cut: it runs nothing more on a server the
    // configuration no longer names (an old primary there would take its writes unfenced).
    let after = try_simple(&pinned, "EXECUTE lc_pin").await;
    assert!(
        after.is_err(),
        "a client pinned to the removed replica still ran there: {after:?}"
    );
    for _ in 0..30 {
        assert_eq!(
            read_port(&client).await,
            port(&r2),
            "a read after the removal"
        );
    }
    let (_, metrics) = p.http_get("/metrics").await;
    let gone = format!("backend=\"{}\"", r1.0);
    let stale: Vec<&str> = metrics
        .lines()
        .filter(|l| {
            l.contains(&gone)
                && (l.starts_with("switchyard_backend_") || l.starts_with("switchyard_replica_lag"))
        })
        .collect();
    assert!(
        stale.is_empty(),
        "health series of the removed backend: {stale:?}"
    );
    assert!(metrics.contains(&up(&r2.0)), "{metrics}");
    assert_eq!(one(&client, "SELECT 41 + 1").await, "42");
}

/// SIGHUP that moves the primary to another address (another relay in front of the same
/// server) while requests run there, held on a lock: an autocommit write in flight finishes
/// and is answered (its outcome known, not cut halfway), as does a pinned client's statement,
/// whose session then ends (nothing more runs on a server the configuration no longer names:
/// its next statement fails); a transaction open there rolls back, its COMMIT fails;
/// a statement still running there after `shutdown_timeout` is cut; writes reach the primary
/// by its new address, and no connection is left through the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_moves_the_primary_lets_the_requests_in_flight_finish() {
    use support::relay::Relay;
    let c = shared_cluster();
    create_table("lc_moved");
    create_table("lc_moved_open");
    let (old, new) = (Relay::for_node(c.primary()), Relay::for_node(c.primary()));
    let p = Proxy::start_backends(
        vec![("pg1".into(), old.addr_string())],
        ProxyOptions {
            extra_top: "shutdown_timeout = \"5s\"\n".into(),
            extra_tables: format!("{NO_SPLIT}[health]\ninterval = \"200ms\"\n"),
            ..Default::default()
        },
    );
    wait_backends_up(&p, &["pg1"]).await;
    let (writer, _writer_conn) = connect(&p).await;
    let (pinned, pinned_conn) = connect(&p).await;
    let (open, _open_conn) = connect(&p).await;
    q(&pinned, "SELECT pg_advisory_lock(4711)").await;
    q(&open, "BEGIN").await;
    q(&open, "INSERT INTO lc_moved_open VALUES (3)").await;
    // A statement that does not end in time is cancelled on the server after
    // `shutdown_timeout` (cutting the connection alone would leave it running there for its
    // 30 s, holding its locks), and its client gets the cancel's error.
    let (sleeper, _sleeper_conn) = connect(&p).await;
    q(&sleeper, "BEGIN").await;
    let sleep = tokio::spawn(async move {
        let t0 = Instant::now();
        let r = sleeper
            .simple_query("SELECT pg_sleep(30) AS lc_sleeper")
            .await;
        (t0.elapsed(), r.map(|_| ()))
    });

    // A session holding the table's lock directly: the two requests wait for it.
    let (holder, holder_conn) = bounded(
        "direct connect",
        tokio_postgres::connect(
            &format!(
                "{} connect_timeout=10",
                c.primary().conn_string(APP_USER, APP_PASSWORD, APP_DB)
            ),
            tokio_postgres::NoTls,
        ),
    )
    .await
    .expect("direct connection");
    tokio::spawn(holder_conn);
    q(&holder, "BEGIN").await;
    q(&holder, "LOCK TABLE lc_moved IN ACCESS EXCLUSIVE MODE").await;
    let write = tokio::spawn(async move {
        let r = writer.simple_query("INSERT INTO lc_moved VALUES (1)").await;
        (writer, r)
    });
    let read = tokio::spawn(async move {
        let r = pinned
            .simple_query("SELECT count(*) AS lc_pinned_read FROM lc_moved")
            .await;
        (pinned, r)
    });
    for text in [
        "INSERT INTO lc_moved VALUES (1)",
        "lc_pinned_read",
        "lc_sleeper",
    ] {
        assert!(
            blocking(|| active_anywhere(text, STEP)),
            "{text} never ran\n{}",
            p.log_tail(30)
        );
    }

    p.rewrite_backends(&[("pg1".into(), new.addr_string())]);
    p.reload_ok().await;
    q(&holder, "COMMIT").await;

    let (writer, wrote) = bounded("the write in flight", write).await.expect("join");
    wrote.unwrap_or_else(|e| {
        panic!(
            "the write in flight at the reload failed: {e:?}\n{}",
            p.log_tail(30)
        )
    });
    let (pinned, counted) = bounded("the pinned read in flight", read)
        .await
        .expect("join");
    // (0 or 1: the write waited for the same lock.)
    let counted =
        text_rows(counted.unwrap_or_else(|e| panic!("the pinned read in flight failed: {e:?}")));
    assert!(
        counted == [[Some("0".to_string())]] || counted == [[Some("1".to_string())]],
        "the pinned read's answer: {counted:?}"
    );
    // Its session ended after it: it runs nothing more there, nor anywhere as if nothing
    // happened (its advisory lock is gone).
    let after = try_simple(&pinned, "SELECT 1").await;
    assert!(after.is_err(), "the pinned client went on: {after:?}");
    ended(pinned_conn, STEP).await.ok();
    // The open transaction's server session ended too: its COMMIT fails (the client goes on,
    // as after any server lost in a transaction block).
    let commit = try_simple(&open, "COMMIT").await;
    assert!(
        commit.is_err(),
        "the open transaction committed: {commit:?}"
    );
    assert_eq!(one(&open, "SELECT 'after'").await, "after");

    let (slept, r) = bounded("the statement that does not end", sleep)
        .await
        .expect("join");
    let e = r.expect_err(&format!(
        "the statement still running there after shutdown_timeout: after {slept:?}"
    ));
    assert_cancelled(&e, "the statement outlasting shutdown_timeout");
    let count_sleepers = "SELECT count(*) FROM pg_stat_activity \
         WHERE strpos(query, 'lc_sleeper') > 0 AND pid <> pg_backend_pid()";
    assert!(
        blocking(|| wait_until(Duration::from_secs(10), || su(count_sleepers) == "0")),
        "the statement still runs on the server\n{}",
        p.log_tail(30)
    );

    q(&writer, "INSERT INTO lc_moved VALUES (2)").await;
    assert_eq!(
        su("SELECT string_agg(id::text, ',' ORDER BY id) FROM lc_moved"),
        "1,2",
        "the rows: the write in flight and the one after the reload"
    );
    assert_eq!(
        su("SELECT count(*) FROM lc_moved_open"),
        "0",
        "the open transaction's row"
    );
    assert!(
        wait_until(Duration::from_secs(45), || old.active_connections() == 0),
        "{} connections left through the old address\n{}",
        old.active_connections(),
        p.log_tail(30)
    );
}

/// SIGHUP with a user's new `server_password` (rotated on the server too): a client that
/// logged in before the reload and then needs a pool that did not exist yet (its first read
/// on a replica) connects with the new password, not the one of its login time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_server_password_reaches_pools_created_later() {
    su("DROP ROLE IF EXISTS lc_rotated; CREATE ROLE lc_rotated LOGIN PASSWORD 'lc_old'");
    let user = |server_pw: &str| {
        format!(
            "[health]\ninterval = \"200ms\"\n[routing]\nconsistency = \"eventual\"\n\
             [[users]]\nname = \"lc_rotated\"\npassword = \"lc_client\"\n\
             server_password = \"{server_pw}\"\n"
        )
    };
    let p = proxy("", &user("lc_old"));
    let c = shared_cluster();
    let replicas: Vec<String> = c.replicas().iter().map(|n| n.port().to_string()).collect();
    // Both replicas up in the proxy's view, so that reads go there.
    p.wait_status("three backends up", STEP, |v| {
        v["backends"]
            .as_array()
            .is_some_and(|bs| bs.len() == 3 && bs.iter().all(|b| b["up"] == true))
    })
    .await;
    let (client, _conn) = connect_as(&p, "lc_rotated", "lc_client")
        .await
        .unwrap_or_else(|e| panic!("login: {e}\n{}", p.log_tail(40)));

    su("ALTER ROLE lc_rotated PASSWORD 'lc_new'");
    blocking(|| c.wait_replicas_caught_up(STEP)).expect("replicas caught up");
    p.rewrite_config(&user("lc_new"));
    p.reload();
    wait_reloads(&p, "ok", 1.0).await;

    let port = try_simple(&client, "SELECT inet_server_port()::text")
        .await
        .unwrap_or_else(|e| panic!("a read after the reload: {e}\n{}", p.log_tail(40)));
    let port = port[0][0].clone().unwrap();
    assert!(
        replicas.contains(&port),
        "the read ran on {port}, not a replica {replicas:?}: nothing was checked"
    );
}

/// SIGHUP with a different [pool] size: a pool of 1 held by an open transaction makes other
/// clients wait and fail (53300); grown to 2 they get a connection; shrunk back to 1 they
/// wait again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_changes_the_pool_size() {
    let pool =
        |size: usize| format!("{NO_SPLIT}\n[pool]\nsize = {size}\ncheckout_timeout = \"500ms\"\n");
    let p = proxy("", &pool(1));
    let (a, _ac) = connect(&p).await;
    let (b, _bc) = connect(&p).await;
    q(&a, "BEGIN").await;
    q(&a, "SELECT 1").await;
    let err = try_simple(&b, "SELECT 1")
        .await
        .expect_err("pool of 1 should be exhausted");
    assert_eq!(sqlstate(&err), "53300");

    p.rewrite_config(&pool(2));
    p.reload();
    wait_reloads(&p, "ok", 1.0).await;
    assert_eq!(
        try_simple(&b, "SELECT 'grown'")
            .await
            .unwrap_or_else(|e| panic!("pool not grown by the reload: {e}"))[0][0]
            .as_deref(),
        Some("grown")
    );

    p.rewrite_config(&pool(1));
    p.reload();
    wait_reloads(&p, "ok", 2.0).await;
    let err = try_simple(&b, "SELECT 1")
        .await
        .expect_err("pool not shrunk by the reload: a holds the only connection");
    assert_eq!(sqlstate(&err), "53300");
    q(&a, "COMMIT").await;
    assert_eq!(one(&b, "SELECT 'after'").await, "after");
    assert_eq!(one(&a, "SELECT 'a after'").await, "a after");
}

/// SIGHUP with an invalid file (unknown key): rejected with a log line naming the problem,
/// counted as an error, and the old configuration stays in force (same pool size, clients
/// and logins work); a later valid file is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rejects_an_invalid_config_and_keeps_the_old_one() {
    let good = format!("{NO_SPLIT}\n[pool]\nsize = 3\ncheckout_timeout = \"500ms\"\n");
    let p = proxy("", &good);
    let (c, c_conn) = connect(&p).await;
    assert_eq!(one(&c, "SELECT 1").await, "1");

    // Also shrinks the pool to 1: must not happen.
    p.rewrite_config(&format!(
        "{NO_SPLIT}\n[pool]\nsize = 1\ncheckout_timeout = \"500ms\"\nbogus_pool_key = 1\n"
    ));
    p.reload();
    wait_reloads(&p, "error", 1.0).await;
    assert_eq!(
        p.metric("switchyard_reloads_total{result=\"ok\"}").await,
        0.0
    );
    // The log entry (it may span several lines) says the reload was rejected and why.
    let log = p.log();
    let at = log
        .find("reload rejected")
        .or_else(|| log.find("rejected"))
        .unwrap_or_else(|| {
            panic!(
                "no log line says the reload was rejected\n{}",
                p.log_tail(40)
            )
        });
    let entry: String = log[at..].chars().take(1500).collect();
    assert!(
        entry.contains("bogus_pool_key"),
        "the rejection does not name the unknown key: {entry}"
    );
    assert!(p.is_running());

    // Old config in force: three transactions at once fit in the pool.
    assert_eq!(one(&c, "SELECT 'still'").await, "still");
    let (d, _dc) = connect(&p).await;
    let (e, _ec) = connect(&p).await;
    for cl in [&c, &d, &e] {
        q(cl, "BEGIN").await;
        q(cl, "SELECT 1").await;
    }
    for cl in [&c, &d, &e] {
        q(cl, "COMMIT").await;
    }
    assert!(!c_conn.is_finished());

    // A valid file is accepted afterwards.
    p.rewrite_config(&good);
    p.reload();
    wait_reloads(&p, "ok", 1.0).await;
    assert_eq!(one(&c, "SELECT 'ok'").await, "ok");
}

// ---------------------------------------------------------------------------------------------
// switchyard check / run
// ---------------------------------------------------------------------------------------------

/// Runs the switchyard binary (bounded); returns (exit code, stdout, stderr).
async fn switchyard(args: &[&str]) -> (Option<i32>, String, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("switchyard {args:?} did not finish in 30 s"))
    .expect("running switchyard");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn check(path: &Path) -> (Option<i32>, String, String) {
    switchyard(&["check", "--config", path.to_str().unwrap()]).await
}

/// A config with known line numbers (see the comments) for the error tests.
fn base_config() -> Vec<String> {
    [
        "# lifecycle test config",           // 1
        "# line numbers matter",             // 2
        "listen = \"127.0.0.1:16432\"",      // 3
        "http_listen = \"127.0.0.1:19930\"", // 4
        "shutdown_timeout = \"5s\"",         // 5
        "",                                  // 6
        "[pool]",                            // 7
        "size = 4",                          // 8
        "checkout_timeout = \"1s\"",         // 9
        "",                                  // 10
        "[[backends]]",                      // 11
        "name = \"pg0\"",                    // 12
        "address = \"127.0.0.1:5432\"",      // 13
        "",                                  // 14
        "[[backends]]",                      // 15
        "name = \"pg1\"",                    // 16
        "address = \"127.0.0.1:5433\"",      // 17
        "",                                  // 18
        "[[users]]",                         // 19
        "name = \"app\"",                    // 20
        "password = \"app\"",                // 21
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn with_line(line: usize, text: &str) -> String {
    let mut lines = base_config();
    lines[line - 1] = text.to_string();
    lines.join("\n") + "\n"
}

fn mentions_line(msg: &str, line: usize) -> bool {
    msg.contains(&format!("line {line}")) || msg.contains(&format!(":{line}:"))
}

/// `switchyard check` on valid files: exit 0 and a description (a generated file, and the
/// repository's annotated example).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_accepts_valid_configs_and_describes_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.toml");
    std::fs::write(&path, base_config().join("\n") + "\n").unwrap();
    let (code, out, err) = check(&path).await;
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    for want in [
        "127.0.0.1:16432",
        "pg0",
        "127.0.0.1:5432",
        "pg1",
        "app",
        "valid",
    ] {
        assert!(out.contains(want), "description lacks {want:?}:\n{out}");
    }

    // The harness's generated config.
    let opts = ProxyOptions {
        extra_tables: "[pool]\nsize = 4\nidle_timeout = \"30s\"\n".into(),
        ..Default::default()
    };
    let backends = vec![("b1".to_string(), "127.0.0.1:5999".to_string())];
    std::fs::write(&path, render_config(16433, 19931, &backends, &opts)).unwrap();
    let (code, out, err) = check(&path).await;
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("b1"), "{out}");

    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/switchyard.toml");
    let (code, out, err) = check(&repo).await;
    assert_eq!(
        code,
        Some(0),
        "config/switchyard.toml\nstdout:\n{out}\nstderr:\n{err}"
    );
    assert!(out.contains("valid"), "{out}");
}

/// `switchyard check` says what `run` would warn about a valid file: here, an `hba_file` line
/// whose `map=` the `ident_file` has no line for (it lets nobody in).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_prints_the_warnings_run_would_log() {
    let dir = tempfile::tempdir().unwrap();
    let hba = dir.path().join("hba.conf");
    let ident = dir.path().join("ident.conf");
    std::fs::write(&hba, "local all all peer map=nomap\n").unwrap();
    std::fs::write(&ident, "othermap root app\n").unwrap();
    let mut lines = base_config();
    lines.insert(
        5,
        format!(
            "hba_file = {:?}\nident_file = {:?}",
            hba.to_str().unwrap(),
            ident.to_str().unwrap()
        ),
    );
    let path = dir.path().join("warn.toml");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let (code, out, err) = check(&path).await;
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("lets nobody in"), "stderr:\n{err}");
}

/// `switchyard check` on invalid files: exit 2 and an error naming the key and its line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_rejects_invalid_configs_naming_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, usize, &str, &[&str]); 5] = [
        ("unknown key", 9, "bogus_key = 1", &["bogus_key"]),
        (
            "bad duration",
            9,
            "checkout_timeout = \"soon\"",
            &["checkout_timeout", "soon"],
        ),
        (
            "bad listen address",
            3,
            "listen = \"not an address\"",
            &["listen"],
        ),
        (
            "bad backend address",
            17,
            "address = \"127.0.0.1:notaport\"",
            &["address"],
        ),
        (
            "duplicate backend name",
            16,
            "name = \"pg0\"",
            &["duplicate", "pg0"],
        ),
    ];
    for (what, line, text, wants) in cases {
        let path = dir.path().join(format!("{}.toml", what.replace(' ', "_")));
        std::fs::write(&path, with_line(line, text)).unwrap();
        let (code, out, err) = check(&path).await;
        assert_eq!(code, Some(2), "{what}: stdout:\n{out}\nstderr:\n{err}");
        let msg = format!("{out}\n{err}");
        for w in wants {
            assert!(
                msg.contains(w),
                "{what}: the error does not mention {w:?}:\n{msg}"
            );
        }
        assert!(
            mentions_line(&msg, line),
            "{what}: the error does not name line {line}:\n{msg}"
        );
        assert!(!out.contains("is valid"), "{what}: {out}");
    }
    // A file that does not exist.
    let (code, out, err) = check(&dir.path().join("missing.toml")).await;
    assert_eq!(code, Some(2), "missing file: {out}\n{err}");
}

/// `switchyard run` with an invalid file exits 2 before binding anything: with its listen
/// port taken by someone else it still reports the config error (a valid file on the same
/// taken port fails differently, at bind time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_an_invalid_config_exits_2_without_binding() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let http_port = http.local_addr().unwrap().port();
    drop(http);
    let dir = tempfile::tempdir().unwrap();
    let mut lines = base_config();
    lines[2] = format!("listen = \"127.0.0.1:{port}\"");
    lines[3] = format!("http_listen = \"127.0.0.1:{http_port}\"");
    let valid = lines.join("\n") + "\n";
    let invalid = valid.replace("size = 4", "size = 4\nbogus_key = true");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, &invalid).unwrap();
    let (code, out, err) = switchyard(&["run", "--config", bad.to_str().unwrap()]).await;
    assert_eq!(code, Some(2), "stdout:\n{out}\nstderr:\n{err}");
    assert!(format!("{out}{err}").contains("bogus_key"), "{out}\n{err}");

    let good = dir.path().join("good.toml");
    std::fs::write(&good, &valid).unwrap();
    let (code, out, err) = switchyard(&["run", "--config", good.to_str().unwrap()]).await;
    assert_ne!(
        code,
        Some(2),
        "a bind failure reported as a config error:\n{out}\n{err}"
    );
    assert_ne!(
        code,
        Some(0),
        "ran although its port is taken:\n{out}\n{err}"
    );
    drop(taken);
}

/// A SIGHUP while the daemon starts (probing the cluster first, here for `health.timeout` on
/// a server that does not answer) does not end the process, as the signal's default action
/// would: it reloads once the daemon runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sighup_while_starting_reloads_once_running() {
    let c = shared_cluster();
    let hole = support::relay::Relay::for_node(c.primary());
    hole.set_mode(support::relay::Mode::Blackhole);
    let p = Proxy::start_backends(
        vec![
            ("pg0".into(), c.primary().addr()),
            ("pg9".into(), hole.addr_string()),
        ],
        ProxyOptions {
            extra_tables: format!("{NO_SPLIT}\n[health]\ntimeout = \"5s\"\n"),
            ..Default::default()
        },
    );
    p.reload();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        p.is_running(),
        "a SIGHUP while starting ended the process\n{}",
        p.log_tail(20)
    );
    wait_reloads(&p, "ok", 1.0).await;
    let (client, _conn) = connect(&p).await;
    assert_eq!(one(&client, "SELECT 'up'").await, "up");
}

/// A reload that replaces a pool (its backend renamed) while a request waits for one of its
/// connections: nothing of the request was sent, so it runs on the new pool rather than
/// failing with "server pool closed".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_waiting_on_a_pool_a_reload_replaces_runs_on_the_new_one() {
    let c = shared_cluster();
    let p = Proxy::start_backends(
        vec![("pg0".into(), c.primary().addr())],
        ProxyOptions {
            extra_tables: format!("{NO_SPLIT}\n[pool]\nsize = 1\ncheckout_timeout = \"30s\"\n"),
            ..Default::default()
        },
    );
    let (holder, _h) = connect(&p).await;
    let (waiter, _w) = connect(&p).await;
    q(&holder, "BEGIN").await;
    assert_eq!(one(&holder, "SELECT 'held'").await, "held");
    let queued = tokio::spawn(async move { try_simple(&waiter, "SELECT 'queued'").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !queued.is_finished(),
        "the second request did not wait for the pool"
    );
    p.rewrite_backends(&[("pg0-renamed".into(), c.primary().addr())]);
    p.reload();
    wait_reloads(&p, "ok", 1.0).await;
    q(&holder, "COMMIT").await;
    let rows = bounded("the queued request", queued)
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("the queued request failed: {e}\n{}", p.log_tail(20)));
    assert_eq!(rows, vec![vec![Some("queued".to_string())]]);
}
