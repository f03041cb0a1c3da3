//! Servers failing in ways the failover and partition tests do not make: a replica that
//! refuses new sessions while it shuts down, a primary connection lost in the middle of a row,
//! a transaction block lost with its server while the client sat idle in it, a replica
//! cancelling a read for a conflict with recovery, two primaries on one timeline, and a replica
//! killed while reads wait for it to replay their writes. Each test has its own cluster.

mod support;

use std::time::{Duration, Instant};

use support::proxy::ProxyOptions;
use support::raw::{login, PROTO_3_0};
use support::ready::start_ready_proxy_on;
use support::relay::Relay;
use support::*;

const STEP: Duration = Duration::from_secs(30);

/// Reads refused by a replica that no longer takes new sessions (a smart shutdown waiting for
/// its last session: FATAL 57P03 "the database system is shutting down") run elsewhere; the
/// replica's health probe, an existing session, keeps it up meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_refused_by_a_replica_shutting_down_run_elsewhere() {
    let cluster = tokio::task::spawn_blocking(|| own_cluster(1))
        .await
        .unwrap();
    let opts = ProxyOptions {
        extra_tables: "[health]\ninterval = \"200ms\"\n[routing]\nconsistency = \"eventual\"\n"
            .into(),
        ..Default::default()
    };
    let proxy = {
        let c = &cluster;
        tokio::task::block_in_place(|| start_ready_proxy_on(c, opts))
    };
    let replica = &cluster.replicas()[0];
    let primary_port = cluster.primary().port() as i32;

    // A session that keeps the smart shutdown waiting.
    let conn = replica.conn_string(APP_USER, APP_PASSWORD, APP_DB);
    let (held, task) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .expect("direct connection to the replica");
    let task = tokio::spawn(task);
    held.simple_query("SELECT 1").await.unwrap();
    // SIGTERM: smart shutdown.
    let pid = replica.pid().expect("replica postmaster pid");
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + STEP;
    loop {
        match tokio_postgres::connect(&conn, tokio_postgres::NoTls).await {
            Err(e) if e.code().map(|c| c.code()) == Some("57P03") => break,
            Ok((c, t)) => {
                drop(c);
                drop(t);
            }
            Err(e) => panic!("a new session on the replica failed otherwise: {e}"),
        }
        assert!(
            Instant::now() < deadline,
            "the replica still takes new sessions"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = proxy.status().await;
    assert!(
        status["backends"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["name"] == replica.name() && b["up"] == true),
        "the replica must still be up for the proxy, or no read would try it: {status}"
    );

    let before = proxy
        .metric("switchyard_retries_total{reason=\"replica_unavailable\"}")
        .await;
    let client = proxy.connect_app().await;
    for _ in 0..5 {
        let port: i32 = client
            .query_one("SELECT inet_server_port()", &[])
            .await
            .expect("a read refused by a replica shutting down must run elsewhere")
            .get(0);
        assert_eq!(port, primary_port);
    }
    let after = proxy
        .metric("switchyard_retries_total{reason=\"replica_unavailable\"}")
        .await;
    assert!(
        after > before,
        "no read was routed to the replica shutting down: the test proves nothing"
    );

    drop(held);
    let _ = tokio::time::timeout(STEP, task).await;
}

/// A cluster with its primary reached through a relay, and a proxy in front.
fn behind_relay() -> (LocalCluster, Relay, support::proxy::Proxy) {
    let cluster = own_cluster(0);
    let relay = Relay::for_node(cluster.primary());
    let proxy = start_ready_proxy_on(
        &cluster,
        ProxyOptions {
            backends: Some(vec![(
                cluster.primary().name().to_string(),
                relay.addr_string(),
            )]),
            ..Default::default()
        },
    );
    (cluster, relay, proxy)
}

/// The server connection dies while a row larger than any buffer is half relayed: the client
/// loses its connection, as it would connected directly. Anything appended after the half
/// row (an error, ReadyForQuery) would be read as the rest of the row, and a driver would
/// wait for ever for bytes that never come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_lost_in_the_middle_of_a_row_ends_the_client_connection() {
    use tokio::io::AsyncReadExt;

    let (_cluster, relay, proxy) = tokio::task::spawn_blocking(behind_relay).await.unwrap();
    let params = [("user", APP_USER), ("database", APP_DB)];
    let mut s = match login(&proxy.addr(), PROTO_3_0, &params, Some(APP_PASSWORD)).await {
        Ok(s) => s,
        Err(r) => panic!("login refused: {:?}", r.error),
    };
    // 60 MB: more than the socket buffers along the way hold, so the row cannot have left
    // the server entirely while the client reads only its start.
    const LEN: usize = 60_000_000;
    let mut q = bytes::BytesMut::new();
    postgres_protocol::message::frontend::query(&format!("SELECT repeat('x', {LEN})"), &mut q)
        .unwrap();
    s.raw.send(&q).await.unwrap();
    let described = s.raw.frame().await;
    assert_eq!(described.tag, b'T', "RowDescription first: {described:?}");
    // Read the start of the DataRow (header, then a megabyte of it).
    let buf = &mut s.raw.buf;
    let deadline = Instant::now() + STEP;
    while buf.len() < (1 << 20) {
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, s.raw.s.read_buf(buf))
            .await
            .expect("the row did not start arriving")
            .unwrap();
        assert!(n > 0, "the connection closed before the row");
    }
    assert_eq!(buf[0], b'D', "a DataRow");
    let declared = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize + 1;
    assert!(declared > LEN);

    relay.reset_all();

    // The rest: whatever was in flight, then EOF; never a complete row.
    let mut got = buf.len();
    buf.clear();
    let deadline = Instant::now() + STEP;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let read = tokio::time::timeout(left, s.raw.s.read_buf(buf)).await;
        match read {
            Err(_) => panic!(
                "the client connection stayed open after {got} of the row's {declared} bytes: \
                 a driver would wait for the rest for ever"
            ),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                got += n;
                buf.clear();
            }
        }
    }
    assert!(
        got < declared,
        "the whole row arrived ({got} bytes): the server was not lost mid-row"
    );
    // Other clients carry on.
    let client = proxy.connect_app().await;
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
}

/// A query of the proxy's own on the connection it just checked out for a client (here the
/// read of the database's volatile functions, made to wait by a lock on `pg_proc`) outlives
/// its timeout: the connection is closed unused and the client's query runs on another. Sent
/// behind the late answer on the same connection, the query would get that answer as its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setup_query_past_its_timeout_leaves_its_connection_unused() {
    let cluster = tokio::task::spawn_blocking(|| own_cluster(0))
        .await
        .unwrap();
    let proxy = start_ready_proxy_on(
        &cluster,
        ProxyOptions {
            extra_tables: "[pool]\nconnect_timeout = \"1s\"\n".into(),
            ..Default::default()
        },
    );
    let client = proxy.connect_app().await;
    let cs = cluster
        .primary()
        .conn_string(SUPERUSER, SUPERUSER_PASSWORD, APP_DB);
    let (locker, conn) = tokio_postgres::connect(&cs, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    locker
        .batch_execute("BEGIN; LOCK TABLE pg_catalog.pg_proc IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let query = tokio::spawn(async move {
        let rows = client
            .simple_query("SELECT 'mine' AS answer")
            .await
            .map(text_rows);
        (client, rows)
    });
    // The read waits for the lock past its timeout (a second); then its answer comes.
    assert!(
        wait_until(STEP, || {
            cluster
                .primary()
                .psql(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE wait_event_type = 'Lock' AND query LIKE '%pg_proc%'",
                )
                .is_ok_and(|n| n.trim() == "1")
        }),
        "the proxy's read of pg_proc never waited for the lock"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    locker.batch_execute("COMMIT").await.unwrap();
    let (client, rows) = tokio::time::timeout(STEP, query)
        .await
        .expect("the query got no answer")
        .unwrap();
    assert_eq!(rows.unwrap(), vec![vec![Some("mine".to_owned())]]);
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    assert_eq!(
        proxy
            .metric("switchyard_server_discards_total{reason=\"setup_failed\"}")
            .await,
        1.0
    );
}

/// The server connection is lost while a client has two extended-protocol batches in flight
/// (the first one running): each fails, with an error and then its ReadyForQuery, as
/// PostgreSQL answers a failed batch. A bare ReadyForQuery for the second would tell a
/// pipelining driver that its messages produced nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_batch_in_flight_fails_when_the_server_is_lost() {
    use postgres_protocol::message::frontend;

    let (cluster, relay, proxy) = tokio::task::spawn_blocking(behind_relay).await.unwrap();
    let params = [("user", APP_USER), ("database", APP_DB)];
    let mut s = match login(&proxy.addr(), PROTO_3_0, &params, Some(APP_PASSWORD)).await {
        Ok(s) => s,
        Err(r) => panic!("login refused: {:?}", r.error),
    };
    let mut out = bytes::BytesMut::new();
    for sql in [
        "SELECT pg_sleep(60) /* first batch */",
        "INSERT INTO nowhere VALUES (1) /* second batch */",
    ] {
        raw::parse_bind_execute(sql, &mut out);
        frontend::sync(&mut out);
    }
    s.raw.send(&out).await.unwrap();
    assert!(
        wait_until(STEP, || {
            cluster
            .primary()
            .psql("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%first batch%' AND state = 'active' AND pid <> pg_backend_pid()")
            .is_ok_and(|n| n.trim() == "1")
        }),
        "the first batch never ran"
    );
    relay.reset_all();
    let mut tags = Vec::new();
    let mut codes = Vec::new();
    while tags.iter().filter(|t| **t == 'Z').count() < 2 {
        let f = tokio::time::timeout(STEP, s.raw.frame())
            .await
            .expect("the batches got no answer");
        if f.tag == b'E' {
            codes.push(f.code());
        }
        tags.push(f.tag as char);
    }
    // (ParseComplete and BindComplete wait in the server's buffer while the first runs.)
    assert_eq!(tags, ['E', 'Z', 'E', 'Z'], "{codes:?}");
    assert_eq!(codes, ["08006", "08006"]);
}

/// A transaction block whose server connection is lost while the client is idle in it: the
/// client's ROLLBACK is answered ROLLBACK (the block is gone either way); a COMMIT is told the
/// block was lost, never that it committed, and ends it; nothing of it is in the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_lost_with_its_server_ends_cleanly() {
    let (_cluster, relay, proxy) = tokio::task::spawn_blocking(behind_relay).await.unwrap();
    let client = proxy.connect_app().await;
    client
        .batch_execute("CREATE TABLE lost_block (v int)")
        .await
        .unwrap();
    const LOST: &str = "switchyard_server_discards_total{reason=\"server_lost\"}";

    let before = proxy.metric(LOST).await;
    client
        .batch_execute("BEGIN; INSERT INTO lost_block VALUES (1)")
        .await
        .unwrap();
    relay.reset_all();
    proxy.wait_metric(LOST, before + 1.0, STEP).await;
    client
        .batch_execute("ROLLBACK")
        .await
        .expect("ROLLBACK of a block lost with its server");

    // The failed COMMIT ends the block, as PostgreSQL's COMMIT of a failed block does: the
    // next statement runs (it got 25P02 until a ROLLBACK). Through both protocols.
    for (v, extended) in [(2, false), (3, true)] {
        let before = proxy.metric(LOST).await;
        client
            .batch_execute(&format!("BEGIN; INSERT INTO lost_block VALUES ({v})"))
            .await
            .unwrap();
        relay.reset_all();
        proxy.wait_metric(LOST, before + 1.0, STEP).await;
        let e = if extended {
            client.execute("COMMIT", &[]).await.map(drop)
        } else {
            client.batch_execute("COMMIT").await
        }
        .expect_err("COMMIT of a block lost with its server must fail");
        assert_eq!(
            e.code().map(|c| c.code()),
            Some("08006"),
            "COMMIT of a lost block (extended: {extended}): {e}"
        );
        client
            .batch_execute("SELECT 1")
            .await
            .unwrap_or_else(|e| panic!("after the failed COMMIT (extended: {extended}): {e}"));
    }

    let n: i64 = client
        .query_one("SELECT count(*) FROM lost_block", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "nothing of a lost block may have committed");
}

/// Runs a read that sleeps on the replica through `proxy`, and while it runs there, takes an
/// ACCESS EXCLUSIVE lock on its table on the primary: replaying the lock, the replica (with
/// `max_standby_streaming_delay = 0`) cancels the read for a conflict with recovery (40001).
/// `hint_and_call`: a comment in front and a call in the select list. Returns the port of the
/// server that answered the read (or the error) and the retry counter's rise.
async fn read_through_a_recovery_conflict(
    cluster: &LocalCluster,
    proxy: &support::proxy::Proxy,
    table: &str,
    simple: bool,
    hint_and_call: (&str, &str),
) -> (Result<i32, tokio_postgres::Error>, f64) {
    const RETRIES: &str = "switchyard_retries_total{reason=\"recovery_conflict\"}";
    let primary = cluster.primary();
    let replica = &cluster.replicas()[0];
    primary
        .psql_db(
            APP_DB,
            &format!(
                "CREATE TABLE {table} (v int); INSERT INTO {table} VALUES (1); \
                 GRANT SELECT ON {table} TO {APP_USER}"
            ),
        )
        .unwrap();
    let lsn = primary.flush_wal().unwrap();
    replica.wait_replay(lsn, STEP).unwrap();

    let before = proxy.metric(RETRIES).await;
    let client = proxy.connect_app().await;
    let (hint, call) = hint_and_call;
    let sql = format!(
        "{hint}SELECT inet_server_port() AS port, pg_sleep(2){call} \
         FROM (SELECT count(*) FROM {table}) s"
    );
    let read = {
        let sql = sql.clone();
        tokio::spawn(async move {
            let port: i32 = if simple {
                let rows = text_rows(client.simple_query(&sql).await?);
                rows[0][0].as_deref().unwrap().parse().unwrap()
            } else {
                client.query_one(sql.as_str(), &[]).await?.get(0)
            };
            Ok::<i32, tokio_postgres::Error>(port)
        })
    };
    let seen = format!(
        "select count(*) from pg_stat_activity where state = 'active' \
         and pid <> pg_backend_pid() and strpos(query, 'FROM {table}') > 0"
    );
    let replica_seen = tokio::task::block_in_place(|| {
        wait_until(STEP, || replica.psql(&seen).is_ok_and(|n| n == "1"))
    });
    assert!(replica_seen, "the read never ran on the replica");
    primary
        .psql_db(
            APP_DB,
            &format!("BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE; COMMIT"),
        )
        .unwrap();
    let port = tokio::time::timeout(STEP, read)
        .await
        .expect("the read did not finish")
        .unwrap();
    (port, proxy.metric(RETRIES).await - before)
}

/// A read a replica cancels for a conflict with recovery (40001, "canceling statement due
/// to conflict with recovery") runs again elsewhere and the client never sees the error: on
/// another server when the routing has one (here the primary, `primary_reads = "fallback"`),
/// else on the same replica again (`primary_reads = "never"`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_cancelled_for_a_recovery_conflict_run_again() {
    let cluster = tokio::task::spawn_blocking(|| {
        own_cluster_with(switchyard::localpg::ClusterOptions {
            replicas: 1,
            extra_conf: vec!["max_standby_streaming_delay = 0".into()],
            ..Default::default()
        })
    })
    .await
    .unwrap();
    let primary_port = cluster.primary().port() as i32;
    let replica_port = cluster.replicas()[0].port() as i32;
    for (primary_reads, simple) in [("fallback", false), ("never", true)] {
        let opts = ProxyOptions {
            extra_tables: format!(
                "[routing]\nconsistency = \"eventual\"\nprimary_reads = \"{primary_reads}\"\n"
            ),
            ..Default::default()
        };
        let proxy = {
            let c = &cluster;
            tokio::task::block_in_place(|| start_ready_proxy_on(c, opts))
        };
        let table = format!("conflict_{primary_reads}");
        let (port, retries) =
            read_through_a_recovery_conflict(&cluster, &proxy, &table, simple, ("", "")).await;
        let port =
            port.expect("a read a replica cancelled for a conflict with recovery must be repeated");
        assert_eq!(
            retries, 1.0,
            "primary_reads = {primary_reads}: one repeat for the conflict"
        );
        let expected = if primary_reads == "never" {
            replica_port
        } else {
            primary_port
        };
        assert_eq!(
            port, expected,
            "primary_reads = {primary_reads}: the read ran again on the wrong server"
        );
    }

    // Sent to a replica by a hint although it calls a volatile function (which may do
    // anything, outside the database too): not repeated, the client gets the 40001.
    let opts = ProxyOptions {
        extra_tables: "[routing]\nconsistency = \"eventual\"\n".into(),
        ..Default::default()
    };
    let proxy = {
        let c = &cluster;
        tokio::task::block_in_place(|| start_ready_proxy_on(c, opts))
    };
    let client = proxy.connect_app().await;
    client
        .batch_execute(
            "CREATE FUNCTION conflict_volatile() RETURNS int VOLATILE LANGUAGE sql AS 'SELECT 1'",
        )
        .await
        .unwrap();
    let lsn = tokio::task::block_in_place(|| cluster.primary().flush_wal().unwrap());
    tokio::task::block_in_place(|| cluster.replicas()[0].wait_replay(lsn, STEP).unwrap());
    let (got, retries) = read_through_a_recovery_conflict(
        &cluster,
        &proxy,
        "conflict_hinted",
        false,
        ("/* switchyard:replica */ ", ", conflict_volatile()"),
    )
    .await;
    let e = got.expect_err("a hinted call of a volatile function was repeated");
    assert_eq!(e.code().map(|c| c.code()), Some("40001"), "{e}");
    assert_eq!(retries, 0.0);
}

/// Two servers claiming to be primary on the same timeline (here a second cluster added by a
/// reload, as after a split brain) cannot be told apart: neither is trusted. Writes of a
/// connected client fail cleanly with 57P03, new logins are refused with 57P03, `/readyz` says
/// not ready (a load balancer takes this proxy out) while `/livez` stays up; once one of them
/// stops, the other is elected and writes go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_primaries_on_one_timeline_are_fenced_until_one_stops() {
    let (a, b) = tokio::task::spawn_blocking(|| (own_cluster(0), own_cluster(0)))
        .await
        .unwrap();
    let opts = ProxyOptions {
        extra_tables: "[health]\ninterval = \"200ms\"\nfall = 2\nrise = 1\n\
                       [routing]\nprimary_wait = \"300ms\"\n"
            .into(),
        ..Default::default()
    };
    let only_a = vec![("a".to_string(), a.primary().addr())];
    let proxy =
        tokio::task::spawn_blocking(move || support::proxy::Proxy::start_backends(only_a, opts))
            .await
            .unwrap();
    let role = |s: &serde_json::Value, name: &str| {
        s["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == name)
            .map(|x| x["role"].clone())
            .unwrap_or_default()
    };
    proxy
        .wait_status("a primary", STEP, |s| role(s, "a") == "primary")
        .await;
    let client = proxy.connect_app().await;
    client
        .batch_execute("CREATE TABLE before_b (v int)")
        .await
        .unwrap();

    proxy.rewrite_backends(&[
        ("a".to_string(), a.primary().addr()),
        ("b".to_string(), b.primary().addr()),
    ]);
    proxy.reload_ok().await;
    let status = proxy
        .wait_status("both fenced", STEP, |s| {
            role(s, "a") == "fenced" && role(s, "b") == "fenced"
        })
        .await;
    assert!(
        status["backends"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["primary"] == false && x["up"] == true),
        "both up, neither elected: {status}"
    );
    let (code, body) = proxy.http_get("/readyz").await;
    assert_eq!(code, 503, "/readyz with only fenced servers: {body}");
    let (code, _) = proxy.http_get("/livez").await;
    assert_eq!(code, 200, "/livez");

    let e = client
        .batch_execute("CREATE TABLE fenced_write (v int)")
        .await
        .expect_err("a write with only fenced servers");
    assert_eq!(e.code().map(|c| c.code()), Some("57P03"), "{e}");
    // A new session has no server to start on.
    let Err(e) = proxy.try_connect(APP_USER, APP_PASSWORD, APP_DB).await else {
        panic!("a login with only fenced servers succeeded");
    };
    assert_eq!(e.code().map(|c| c.code()), Some("57P03"), "{e}");
    let exists = "SELECT count(*) FROM pg_class WHERE relname = 'fenced_write'";
    for c in [&a, &b] {
        let n = tokio::task::block_in_place(|| c.primary().psql_db(APP_DB, exists).unwrap());
        assert_eq!(n, "0", "the write reached a fenced server");
    }

    tokio::task::block_in_place(|| b.primary().kill());
    proxy
        .wait_status("a elected once b stopped", STEP, |s| {
            role(s, "a") == "primary"
        })
        .await;
    let (code, body) = proxy.http_get("/readyz").await;
    assert_eq!(code, 200, "/readyz with a primary: {body}");
    client
        .batch_execute("CREATE TABLE fenced_write (v int)")
        .await
        .expect("a write once one primary is left");
    let n = tokio::task::block_in_place(|| a.primary().psql_db(APP_DB, exists).unwrap());
    assert_eq!(n, "1", "the write ran on the server left");
}

/// A replica killed while reads must wait for it to replay their user's last write: the read
/// that finds it refusing connections goes to the primary, and the reads after it avoid the
/// replica for a second, as after a read's own failed checkout, rather than each connecting
/// there again until the monitor declares it down (here after ten seconds of failed probes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_waiting_for_a_killed_replica_do_not_each_connect_to_it() {
    let cluster = tokio::task::spawn_blocking(|| own_cluster(1))
        .await
        .unwrap();
    let opts = ProxyOptions {
        extra_tables: "[health]\ninterval = \"200ms\"\nfall = 50\n".into(),
        ..Default::default()
    };
    let proxy = {
        let c = &cluster;
        tokio::task::block_in_place(|| start_ready_proxy_on(c, opts))
    };
    let replica = &cluster.replicas()[0];
    let client = proxy.connect_app().await;
    client
        .batch_execute("CREATE TABLE killed_ryw (v int)")
        .await
        .unwrap();
    let errors = format!(
        "switchyard_server_connect_errors_total{{backend=\"{}\"}}",
        replica.name()
    );
    tokio::task::block_in_place(|| replica.kill());
    let before = proxy.metric(&errors).await;
    let t0 = Instant::now();
    let mut reads = 0u32;
    while reads < 60 && t0.elapsed() < STEP {
        let step = async {
            client
                .batch_execute("INSERT INTO killed_ryw VALUES (1)")
                .await?;
            client
                .query_one("SELECT count(*) FROM killed_ryw", &[])
                .await
        };
        tokio::time::timeout(STEP, step)
            .await
            .expect("a write and read timed out")
            .unwrap_or_else(|e| panic!("a read after the replica was killed failed: {e:?}"));
        reads += 1;
    }
    let errs = proxy.metric(&errors).await - before;
    // About one a second (and one from the pool's first checkout); each read was one before.
    let allowed = 2.0 * t0.elapsed().as_secs_f64() + 3.0;
    assert!(
        errs <= allowed,
        "{errs} connection attempts to the killed replica for {reads} reads in {:?}\n{}",
        t0.elapsed(),
        proxy.log_tail(20)
    );
}
