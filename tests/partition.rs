//! Network failures between the proxy and its servers, made with the fault-injecting relay:
//! a replica that silently stops answering (a partition), a replica whose connections are
//! reset, losing both replicas at once, a replica lost after part of a read's answer reached
//! the client, and a partitioned primary. Reads keep working without client-visible errors
//! where they can be repeated; the proxy stops using the lost servers and takes them back
//! when they return.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use support::proxy::{Proxy, ProxyOptions};
use support::raw::{self, Next};
use support::ready::start_ready_proxy_on;
use support::relay::{Mode, Relay};
use support::{own_cluster, LocalCluster, Node, APP_DB, APP_PASSWORD, APP_USER};

const SERVER_LOST: &str = "switchyard_retries_total{reason=\"server_lost\"}";

/// A cluster whose replicas (and, if asked, primary) are reached through relays, and a proxy
/// in front.
struct Setup {
    cluster: LocalCluster,
    relays: Vec<Relay>,
    /// The primary's relay, when the primary is reached through one.
    primary_relay: Option<Relay>,
    proxy: Proxy,
}

fn setup() -> Setup {
    setup_with(false, "consistency = \"eventual\"\n")
}

/// A private cluster with relays in front of the replicas (and of the primary when
/// `relay_primary`), and a proxy with `routing` as its `[routing]` table, started once its
/// monitor sees every backend up. Health probes time out after 2 s (a loaded machine must
/// not lose a server to one slow probe); a partitioned server is still marked down within
/// a few seconds.
fn setup_with(relay_primary: bool, routing: &str) -> Setup {
    setup_tables(
        2,
        relay_primary,
        format!(
            "[health]\ninterval = \"200ms\"\ntimeout = \"2s\"\nfall = 2\nrise = 2\n\
             [pool]\nconnect_timeout = \"3s\"\n\
             [routing]\n{routing}\n"
        ),
    )
}

/// A private cluster of a primary and `replicas` replicas behind relays (and the primary
/// behind one when `relay_primary`), and a proxy with `extra_tables`, started once its
/// monitor sees every backend up.
fn setup_tables(replicas: usize, relay_primary: bool, extra_tables: String) -> Setup {
    let cluster = own_cluster(replicas);
    let relays: Vec<Relay> = cluster.replicas().iter().map(Relay::for_node).collect();
    let primary_relay = relay_primary.then(|| Relay::for_node(cluster.primary()));
    let mut backends = vec![(
        cluster.primary().name().to_string(),
        primary_relay
            .as_ref()
            .map(Relay::addr_string)
            .unwrap_or_else(|| cluster.primary().addr()),
    )];
    for (n, r) in cluster.replicas().iter().zip(&relays) {
        backends.push((n.name().to_string(), r.addr_string()));
    }
    let proxy = start_ready_proxy_on(
        &cluster,
        ProxyOptions {
            backends: Some(backends),
            extra_tables,
            ..Default::default()
        },
    );
    Setup {
        cluster,
        relays,
        primary_relay,
        proxy,
    }
}

/// How many statements containing `marker` run on `node` now (asked directly, not through
/// the proxy or a relay).
async fn running_on(node: &Node, marker: &str) -> i64 {
    activity_on(node, marker, false).await
}

/// How many statements containing `marker` are in `pg_sleep` on `node` now.
async fn sleeping_on(node: &Node, marker: &str) -> i64 {
    activity_on(node, marker, true).await
}

async fn activity_on(node: &Node, marker: &str, sleeping: bool) -> i64 {
    let cs = node.conn_string(support::SUPERUSER, support::SUPERUSER_PASSWORD, "postgres");
    let (c, conn) = tokio::time::timeout(
        Duration::from_secs(20),
        tokio_postgres::connect(&cs, tokio_postgres::NoTls),
    )
    .await
    .expect("connecting to a node timed out")
    .unwrap_or_else(|e| panic!("connecting to {}: {e}", node.name()));
    tokio::spawn(conn);
    let row = tokio::time::timeout(
        Duration::from_secs(20),
        c.query_one(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE state = 'active' AND query LIKE '%' || $1 || '%' \
             AND ($2 = false OR wait_event = 'PgSleep') AND pid <> pg_backend_pid()",
            &[&marker, &sleeping],
        ),
    )
    .await
    .expect("pg_stat_activity timed out")
    .unwrap_or_else(|e| panic!("pg_stat_activity on {}: {e}", node.name()));
    row.get(0)
}

/// Waits (bounded) until `pred` holds for the counts of statements containing `marker` on
/// each of `nodes`; returns those counts.
async fn wait_running(
    nodes: &[Node],
    marker: &str,
    what: &str,
    pred: impl Fn(&[i64]) -> bool,
) -> Vec<i64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut counts = Vec::new();
        for n in nodes {
            counts.push(running_on(n, marker).await);
        }
        if pred(&counts) {
            return counts;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: never seen in pg_stat_activity (counts per node: {counts:?})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn port_of_read(client: &tokio_postgres::Client, sql: &str) -> i32 {
    let row = tokio::time::timeout(Duration::from_secs(30), client.query_one(sql, &[]))
        .await
        .expect("read timed out")
        .unwrap_or_else(|e| panic!("read {sql:?} failed: {e}"));
    row.get(0)
}

/// Runs `n` reads on fresh connections of a shared client and returns the ports that served.
async fn ports(client: &tokio_postgres::Client, n: usize) -> HashSet<i32> {
    let mut seen = HashSet::new();
    for _ in 0..n {
        seen.insert(port_of_read(client, "SELECT inet_server_port()").await);
    }
    seen
}

async fn wait_backend_up(proxy: &Proxy, name: &str, up: bool) {
    let what = format!("backend {name} up={up}");
    proxy
        .wait_status(&what, Duration::from_secs(30), |v| {
            v["backends"].as_array().is_some_and(|bs| {
                bs.iter()
                    .any(|b| b["name"] == name && b["up"].as_bool() == Some(up))
            })
        })
        .await;
}

/// Starts `n` reads of `sql` (first column: the port), each on its own client connection,
/// once all are connected.
async fn start_reads(
    proxy: &Proxy,
    n: usize,
    sql: &'static str,
) -> Vec<tokio::task::JoinHandle<Result<i32, tokio_postgres::Error>>> {
    let mut clients = Vec::new();
    for _ in 0..n {
        clients.push(proxy.connect_app().await);
    }
    clients
        .into_iter()
        .map(|c| {
            tokio::spawn(async move { c.query_one(sql, &[]).await.map(|r| r.get::<_, i32>(0)) })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_survive_a_partitioned_replica() {
    let s = tokio::task::spawn_blocking(setup).await.unwrap();
    let client = s.proxy.connect_app().await;
    let replica_ports: HashSet<i32> = s
        .cluster
        .replicas()
        .iter()
        .map(|n| n.port() as i32)
        .collect();
    let lost = s.cluster.replicas()[0].port() as i32;
    let lost_name = s.cluster.replicas()[0].name().to_string();

    let seen = ports(&client, 30).await;
    assert_eq!(
        seen, replica_ports,
        "reads should spread over both replicas first"
    );

    // Reads in flight when the replica stops answering: the partition begins once all of them
    // run, some on the replica about to be lost (they sleep long enough to be caught there).
    let retried = s.proxy.metric(SERVER_LOST).await;
    let marker = "partitioned replica probe";
    let tasks = start_reads(
        &s.proxy,
        6,
        "SELECT inet_server_port(), pg_sleep(5) /* partitioned replica probe */",
    )
    .await;
    let counts = wait_running(
        s.cluster.replicas(),
        marker,
        "6 reads running, at least one on the replica to be lost",
        |c| c[0] >= 1 && c.iter().sum::<i64>() == 6,
    )
    .await;
    s.relays[0].set_mode(Mode::Blackhole);
    for t in tasks {
        let r = tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("read hung")
            .unwrap();
        let port = r.expect(
            "a read in flight on the partitioned replica must be repeated elsewhere, not fail",
        );
        assert_ne!(
            port, lost,
            "a read cannot have completed on the partitioned replica"
        );
    }
    // Each read caught on the lost replica was repeated (and counted).
    let now = s.proxy.metric(SERVER_LOST).await;
    assert!(
        now >= retried + counts[0] as f64,
        "{} reads were in flight on the partitioned replica, but {SERVER_LOST} went from \
         {retried} to {now}",
        counts[0]
    );

    wait_backend_up(&s.proxy, &lost_name, false).await;
    let seen = ports(&client, 20).await;
    assert!(
        !seen.contains(&lost),
        "the partitioned replica still gets reads: {seen:?}"
    );

    // The partition heals: the replica is used again.
    s.relays[0].set_mode(Mode::Pass);
    wait_backend_up(&s.proxy, &lost_name, true).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if ports(&client, 20).await.contains(&lost) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the healed replica never got reads back"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_survive_losing_both_replicas_and_writes_go_on() {
    let s = tokio::task::spawn_blocking(setup).await.unwrap();
    let client = s.proxy.connect_app().await;
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS part_t (v int)")
        .await
        .unwrap();
    let primary = s.cluster.primary().port() as i32;

    // Connections reset mid-read on one replica, while the other is partitioned; the faults
    // begin once every read runs on a replica.
    let retried = s.proxy.metric(SERVER_LOST).await;
    let tasks = start_reads(
        &s.proxy,
        6,
        "SELECT inet_server_port(), pg_sleep(5) /* both replicas lost probe */",
    )
    .await;
    wait_running(
        s.cluster.replicas(),
        "both replicas lost probe",
        "6 reads running on the replicas",
        |c| c.iter().sum::<i64>() == 6,
    )
    .await;
    s.relays[1].set_mode(Mode::Blackhole);
    s.relays[0].set_mode(Mode::Refuse);
    s.relays[0].reset_all();
    for t in tasks {
        let r = tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("read hung")
            .unwrap();
        let port = r.expect("reads in flight on lost replicas must be repeated, not fail");
        assert_eq!(
            port, primary,
            "with both replicas lost, a repeated read can only have run on the primary"
        );
    }
    let now = s.proxy.metric(SERVER_LOST).await;
    assert!(
        now >= retried + 6.0,
        "6 reads were in flight on the lost replicas, but {SERVER_LOST} went from {retried} \
         to {now}"
    );
    for n in s.cluster.replicas() {
        wait_backend_up(&s.proxy, n.name(), false).await;
    }
    // Capacity shrinks, nothing breaks: reads fall back to the primary, writes work.
    assert_eq!(ports(&client, 10).await, HashSet::from([primary]));
    for i in 0..5 {
        client
            .execute("INSERT INTO part_t VALUES ($1)", &[&i])
            .await
            .expect("write with both replicas lost");
    }
    let n: i64 = client
        .query_one("SELECT count(*) FROM part_t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 5);
}

/// The columns of a DataRow, or `None` if it is malformed (column lengths past its end).
fn data_row(f: &raw::Frame) -> Option<Vec<Option<Vec<u8>>>> {
    let b = &f.body;
    let n = i16::from_be_bytes([*b.first()?, *b.get(1)?]) as usize;
    let mut at = 2;
    let mut cols = Vec::new();
    for _ in 0..n {
        let len = i32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?);
        at += 4;
        if len < 0 {
            cols.push(None);
        } else {
            cols.push(Some(b.get(at..at + len as usize)?.to_vec()));
            at += len as usize;
        }
    }
    (at == b.len()).then_some(cols)
}

/// A raw-protocol session of the app user.
async fn login_app(proxy: &Proxy) -> raw::Session {
    raw::ok(
        raw::login(
            &proxy.addr(),
            raw::PROTO_3_0,
            &[("user", APP_USER), ("database", APP_DB)],
            Some(APP_PASSWORD),
        )
        .await,
        "login",
    )
}

/// Sends a simple Query without reading its answer.
async fn send_query(r: &mut raw::Raw, sql: &str) {
    let mut out = bytes::BytesMut::new();
    postgres_protocol::message::frontend::query(sql, &mut out).unwrap();
    r.send(&out).await.expect("sending a query");
}

/// Reads a large read's answer (rows of `g, port, ...`) up to ReadyForQuery, each message
/// within 60 s: the rows as (g, port), and the other messages after the row description.
/// Panics on a malformed row or a silence, with what came so far.
async fn read_rows(r: &mut raw::Raw, what: &str) -> (Vec<(i64, u16)>, Vec<raw::Frame>) {
    let text = |v: &Option<Vec<u8>>| String::from_utf8_lossy(v.as_deref().unwrap()).into_owned();
    let mut rows: Vec<(i64, u16)> = Vec::new();
    let mut after = Vec::new();
    loop {
        let f = match r.next(Duration::from_secs(60)).await {
            Next::Frame(f) => f,
            other => panic!(
                "{what}: expected a message, got {other:?} after {} rows (from ports {:?}) and \
                 {after:?}",
                rows.len(),
                rows.iter().map(|r| r.1).collect::<HashSet<u16>>()
            ),
        };
        match f.tag {
            b'T' => {}
            b'D' => {
                let row = data_row(&f).unwrap_or_else(|| {
                    panic!(
                        "{what}: a malformed DataRow after {} rows: {} bytes: {:?}",
                        rows.len(),
                        f.body.len(),
                        String::from_utf8_lossy(&f.body)
                    )
                });
                rows.push((
                    text(&row[0]).parse().unwrap(),
                    text(&row[1]).parse().unwrap(),
                ));
            }
            b'Z' => {
                after.push(f);
                return (rows, after);
            }
            _ => after.push(f),
        }
    }
}

/// A replica read whose answer outgrew what the proxy holds back (256 kB) has reached the
/// client in part: if its replica is lost then, the read cannot be repeated (the client would
/// get the first rows twice). The client gets the rows it got, then 08006, and goes on; or,
/// when the connection was lost in the middle of a row (PostgreSQL sends in 8 kB pieces, so
/// usually), loses its connection after the rows it got, as connected directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_lost_after_part_of_its_answer_was_sent_fails_and_is_not_repeated() {
    let s = tokio::task::spawn_blocking(setup).await.unwrap();
    let retried = s.proxy.metric(SERVER_LOST).await;
    let lost_errors = "switchyard_errors_total{sqlstate=\"08006\"}";
    let errors = s.proxy.metric(lost_errors).await;
    let mut sess = login_app(&s.proxy).await;
    // Rows of about 1 kB; row 600 sleeps, so about 600 kB (more than the 256 kB held back)
    // leave the server before it stops sending.
    send_query(
        &mut sess.raw,
        "SELECT g, inet_server_port(), repeat('x', 1000), \
         pg_sleep(CASE WHEN g = 600 THEN 30 ELSE 0 END) \
         FROM generate_series(1, 1200) g /* large read */",
    )
    .await;

    let text = |v: &Option<Vec<u8>>| String::from_utf8_lossy(v.as_deref().unwrap()).into_owned();
    let mut got: Vec<i64> = Vec::new();
    let mut server_port = None;
    let mut after = Vec::new();
    let mut lost = false;
    let mut closed = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let f = match sess.raw.next(left).await {
            Next::Frame(f) => f,
            Next::Closed(_) if lost => {
                closed = true;
                break;
            }
            other => panic!(
                "the large read: expected a response, got {other:?} after {} rows",
                got.len()
            ),
        };
        match f.tag {
            b'T' => {}
            b'D' => {
                let row = data_row(&f).unwrap_or_else(|| {
                    panic!(
                        "a malformed DataRow after {} rows: {} bytes: {:?}",
                        got.len(),
                        f.body.len(),
                        String::from_utf8_lossy(&f.body)
                    )
                });
                got.push(text(&row[0]).parse().unwrap());
                let port: u16 = text(&row[1]).parse().unwrap();
                server_port.get_or_insert(port);
                // 300 rows (over 300 kB) reached the client: the proxy no longer holds the
                // answer. The replica serving it is lost now.
                if got.len() == 300 && !lost {
                    let i = s
                        .cluster
                        .replicas()
                        .iter()
                        .position(|n| n.port() == port)
                        .unwrap_or_else(|| panic!("the large read ran on port {port}, no replica"));
                    s.relays[i].reset_all();
                    lost = true;
                }
            }
            b'Z' => {
                after.push(f);
                break;
            }
            _ => after.push(f),
        }
    }
    assert!(lost, "the read ended before 300 rows arrived: {after:?}");
    let want: Vec<i64> = (1..=got.len() as i64).collect();
    assert!(
        got == want,
        "the rows must come once each, in order, with no repeat of the start ({} rows: first \
         {:?}, last {:?})",
        got.len(),
        &got[..got.len().min(5)],
        &got[got.len().saturating_sub(5)..]
    );
    assert!(
        got.len() < 1200,
        "the read cannot have completed: its replica was lost during pg_sleep"
    );
    assert!(
        !after.iter().any(|f| f.tag == b'C'),
        "the lost read must not complete: {after:?}"
    );
    assert_eq!(
        s.proxy.metric(SERVER_LOST).await,
        retried,
        "a read whose answer was partly sent must not be repeated"
    );
    if closed {
        // Lost mid-row: nothing but the rest of the stream came after the last whole row
        // (bytes of the cut row stay unparsed), and other sessions carry on. No 08006 was
        // sent, and none is counted.
        assert!(after.is_empty(), "nothing may follow a cut row: {after:?}");
        assert_eq!(s.proxy.metric(lost_errors).await, errors);
        let mut again = login_app(&s.proxy).await;
        let r = again.raw.query_ok("SELECT 41 + 1").await;
        assert_eq!(r.scalar(), "42");
        return;
    }
    let codes: Vec<String> = after
        .iter()
        .filter(|f| f.is_error())
        .map(|f| f.code())
        .collect();
    assert_eq!(
        codes,
        ["08006"],
        "a read lost after part of its answer reached the client must fail with 08006: \
         {after:?}"
    );
    assert_eq!(s.proxy.metric(lost_errors).await, errors + 1.0);
    assert_eq!(
        after.last().map(|f| f.body.clone()),
        Some(b"I".to_vec()),
        "ReadyForQuery after the error: idle"
    );
    // The client goes on.
    let r = sess.raw.query_ok("SELECT 41 + 1").await;
    assert_eq!(r.scalar(), "42");
}

/// A replica read whose answer stays under what the proxy holds back (256 kB; here about
/// 100 kB of 1 kB rows, more than one network read) is repeated on the other replica when
/// its replica is lost before the answer is complete: the client gets every row once and no
/// error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_lost_before_its_held_answer_was_sent_is_repeated() {
    let s = tokio::task::spawn_blocking(setup).await.unwrap();
    let retried = s.proxy.metric(SERVER_LOST).await;
    let mut sess = login_app(&s.proxy).await;
    // Row 100 sleeps: the rows before it (about 100 kB) leave the server first.
    send_query(
        &mut sess.raw,
        "SELECT g, inet_server_port(), repeat('x', 1000), \
         pg_sleep(CASE WHEN g = 100 THEN 10 ELSE 0 END) \
         FROM generate_series(1, 120) g /* held read */",
    )
    .await;
    // Lose the replica once the read sleeps there, its first rows sent.
    let deadline = Instant::now() + Duration::from_secs(30);
    let i = loop {
        let mut sleeping = Vec::new();
        for n in s.cluster.replicas() {
            sleeping.push(sleeping_on(n, "held read").await);
        }
        if let Some(i) = sleeping.iter().position(|&n| n == 1) {
            break i;
        }
        assert!(
            Instant::now() < deadline,
            "the read never slept on a replica"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let node = &s.cluster.replicas()[i];
    s.relays[i].reset_all();

    let (rows, after) = read_rows(&mut sess.raw, "the held read").await;
    let gs: Vec<i64> = rows.iter().map(|r| r.0).collect();
    let errors: Vec<&raw::Frame> = after.iter().filter(|f| f.is_error()).collect();
    assert!(
        errors.is_empty(),
        "a read lost before any of its (held) answer reached the client must be repeated, not \
         fail: {errors:?} (after {} rows)",
        gs.len()
    );
    assert_eq!(
        gs,
        (1..=120).collect::<Vec<i64>>(),
        "every row once, in order"
    );
    assert!(
        rows.iter().all(|r| r.1 != node.port()),
        "the answer must come whole from the replica that completed it"
    );
    assert!(
        s.proxy.metric(SERVER_LOST).await > retried,
        "the repeat was not counted in {SERVER_LOST}"
    );
}

/// With reads split, a Query that ends a read-only transaction on a replica and writes after
/// that (`COMMIT; INSERT ...`) is split after its COMMIT (the write runs on the primary). If
/// the replica is lost while that COMMIT runs, the client gets one error and one
/// ReadyForQuery for its one Query, the block is over, and the write after it does not run:
/// PostgreSQL runs nothing of a Query after its first error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_query_whose_replica_is_lost_is_answered_once_and_not_run_on() {
    use postgres_protocol::message::frontend;
    let s = tokio::task::spawn_blocking(setup).await.unwrap();
    s.proxy
        .connect_app()
        .await
        .batch_execute("CREATE TABLE IF NOT EXISTS part_split (v int)")
        .await
        .unwrap();
    let insert = "INSERT INTO part_split VALUES (1)";
    // The same as one extended batch: Parse, Bind, Execute of each, then one Sync.
    let mut batch = bytes::BytesMut::new();
    for sql in ["COMMIT", insert] {
        raw::parse_bind_execute(sql, &mut batch);
    }
    frontend::sync(&mut batch);
    let mut query = bytes::BytesMut::new();
    frontend::query(&format!("COMMIT; {insert}"), &mut query).unwrap();

    for (form, request) in [("Query", query), ("extended batch", batch)] {
        let mut sess = login_app(&s.proxy).await;
        sess.raw.query_ok("BEGIN READ ONLY").await;
        let port: u16 = sess
            .raw
            .query_ok("SELECT inet_server_port()")
            .await
            .scalar()
            .parse()
            .unwrap();
        let i = s
            .cluster
            .replicas()
            .iter()
            .position(|n| n.port() == port)
            .expect("the read-only transaction runs on a replica");
        s.relays[i].set_mode(Mode::Blackhole);
        sess.raw.send(&request).await.unwrap();
        // (The COMMIT reaches the relay, which holds it.)
        tokio::time::sleep(Duration::from_millis(500)).await;
        s.relays[i].reset_all();
        s.relays[i].set_mode(Mode::Pass);

        let mut got = Vec::new();
        loop {
            match sess.raw.next(Duration::from_secs(30)).await {
                Next::Frame(f) if f.tag == b'Z' => {
                    got.push(f);
                    break;
                }
                Next::Frame(f) => got.push(f),
                other => panic!("{form}: expected its answer, got {other:?} after {got:?}"),
            }
        }
        let codes: Vec<String> = got
            .iter()
            .filter(|f| f.is_error())
            .map(|f| f.code())
            .collect();
        assert_eq!(codes, ["08006"], "{form}: {got:?}");
        assert_eq!(got.last().unwrap().body, b"I", "{form}: the block is over");
        match sess.raw.next(Duration::from_secs(2)).await {
            Next::Timeout => {}
            other => {
                panic!("{form}: one ReadyForQuery for one request, then nothing: got {other:?}")
            }
        }
        let rows = tokio::task::block_in_place(|| {
            s.cluster
                .primary()
                .psql_db(APP_DB, "SELECT count(*) FROM part_split")
                .unwrap()
        });
        assert_eq!(rows, "0", "{form}: the INSERT after the lost COMMIT ran");
        assert_eq!(
            sess.raw.query_ok("SELECT 1").await.scalar(),
            "1",
            "{form}: the client goes on"
        );
    }
}

/// `primary_reads = "never"`: with no replica up, reads fail (57P03, as writes without a
/// primary do) rather than run on the primary; writes go on; reads come back with a replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_reads_never_fails_reads_without_a_replica() {
    let s = tokio::task::spawn_blocking(|| {
        setup_with(
            false,
            "consistency = \"eventual\"\nprimary_reads = \"never\"\n",
        )
    })
    .await
    .unwrap();
    let client = s.proxy.connect_app().await;
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS part_never (v int)")
        .await
        .unwrap();
    let replica_ports: HashSet<i32> = s
        .cluster
        .replicas()
        .iter()
        .map(|n| n.port() as i32)
        .collect();
    // Both replicas up: reads on them (never on the primary).
    let deadline = Instant::now() + Duration::from_secs(30);
    while ports(&client, 10).await != replica_ports {
        assert!(
            Instant::now() < deadline,
            "reads never spread over both replicas"
        );
    }

    for r in &s.relays {
        r.set_mode(Mode::Refuse);
        r.reset_all();
    }
    for n in s.cluster.replicas() {
        wait_backend_up(&s.proxy, n.name(), false).await;
    }
    for sql in [
        "SELECT inet_server_port()",
        "SELECT count(*) FROM part_never",
    ] {
        let simple = tokio::time::timeout(Duration::from_secs(30), client.simple_query(sql))
            .await
            .expect("read timed out");
        let e = simple
            .err()
            .unwrap_or_else(|| panic!("{sql}: a read ran with no replica up"));
        assert_eq!(
            e.code().map(|c| c.code()),
            Some("57P03"),
            "{sql}: simple protocol: {e}"
        );
        let ext = tokio::time::timeout(Duration::from_secs(30), client.query_one(sql, &[]))
            .await
            .expect("read timed out");
        let e = ext
            .err()
            .unwrap_or_else(|| panic!("{sql}: a read ran with no replica up (extended)"));
        assert_eq!(
            e.code().map(|c| c.code()),
            Some("57P03"),
            "{sql}: extended protocol: {e}"
        );
    }
    // Writes do not need a replica; the session is still usable.
    for i in 0..3 {
        client
            .execute("INSERT INTO part_never VALUES ($1)", &[&i])
            .await
            .expect("write with no replica up");
    }
    let n: i64 = client
        .query_one(
            "/* switchyard:primary */ SELECT count(*) FROM part_never",
            &[],
        )
        .await
        .expect("a primary-hinted read")
        .get(0);
    assert_eq!(n, 3);

    // A replica back: reads work again, on it.
    s.relays[0].set_mode(Mode::Pass);
    let back = s.cluster.replicas()[0].name().to_string();
    wait_backend_up(&s.proxy, &back, true).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = tokio::time::timeout(
            Duration::from_secs(30),
            client.query_one("SELECT inet_server_port()", &[]),
        )
        .await
        .expect("read timed out");
        match r {
            Ok(row) => {
                let at: i32 = row.get(0);
                assert_eq!(
                    at,
                    s.cluster.replicas()[0].port() as i32,
                    "the only replica up should serve the read"
                );
                break;
            }
            Err(e) => assert!(
                Instant::now() < deadline,
                "reads never worked again with {back} back: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A primary partitioned with a write in flight (no RST, no FIN: the request just gets no
/// answer): once the monitor declares it down, the client gets 08006 in bounded time
/// rather than waiting forever, and goes on; writes work again once the partition heals.
/// Then every server is lost: a read and a write each get 57P03 saying what is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_in_flight_on_a_partitioned_primary_fails_in_bounded_time() {
    let s = tokio::task::spawn_blocking(|| setup_with(true, ""))
        .await
        .unwrap();
    let primary_name = s.cluster.primary().name().to_string();
    let client = s.proxy.connect_app().await;
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS part_w (v int)")
        .await
        .unwrap();
    let writer = s.proxy.connect_app().await;
    let write = tokio::spawn(async move {
        let r = writer
            .simple_query(
                "INSERT INTO part_w SELECT 1 FROM pg_sleep(20) /* write in the partition */",
            )
            .await
            .map(|_| ());
        (writer, r)
    });
    wait_running(
        std::slice::from_ref(s.cluster.primary()),
        "write in the partition",
        "the write running on the primary",
        |c| c[0] == 1,
    )
    .await;
    s.primary_relay.as_ref().unwrap().set_mode(Mode::Blackhole);

    let (writer, r) = tokio::time::timeout(Duration::from_secs(60), write)
        .await
        .expect("a write in flight on a partitioned primary got no answer within 60 s")
        .unwrap();
    let e = r.expect_err("the write's answer cannot have crossed the partition");
    assert_eq!(e.code().map(|c| c.code()), Some("08006"), "{e}");

    // The partition heals: the same client writes again.
    s.primary_relay.as_ref().unwrap().set_mode(Mode::Pass);
    wait_backend_up(&s.proxy, &primary_name, true).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::time::timeout(
            Duration::from_secs(30),
            writer.simple_query("INSERT INTO part_w VALUES (2)"),
        )
        .await
        .expect("write timed out")
        {
            Ok(_) => break,
            Err(e) => assert!(
                Instant::now() < deadline,
                "no write succeeded after the partition healed: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Every server lost: a read has no replica and no primary to fall back to, and says so
    // rather than blaming the primary alone; a write says there is no primary.
    for r in s.relays.iter().chain(s.primary_relay.iter()) {
        r.set_mode(Mode::Refuse);
        r.reset_all();
    }
    wait_backend_up(&s.proxy, &primary_name, false).await;
    for n in s.cluster.replicas() {
        wait_backend_up(&s.proxy, n.name(), false).await;
    }
    for (sql, message) in [
        (
            "SELECT 1",
            "no server is available: no replica can take the read and no primary is known",
        ),
        (
            "INSERT INTO part_w VALUES (3)",
            "no primary server is available",
        ),
    ] {
        let e = tokio::time::timeout(Duration::from_secs(60), client.simple_query(sql))
            .await
            .expect("no answer with every server lost")
            .expect_err("a statement ran with every server lost");
        let db = e.as_db_error().unwrap_or_else(|| panic!("{sql}: {e}"));
        assert_eq!(
            (db.code().code(), db.message()),
            ("57P03", message),
            "{sql}"
        );
    }
}

/// A private cluster of a primary alone, reached through a relay, and a proxy in front that
/// declares a server down after two failed probes of 200 ms, waits `primary_wait` for a
/// primary, and gives a connection 60 s to open.
async fn primary_behind_relay(primary_wait: &str) -> (LocalCluster, String, Relay, Proxy) {
    let cluster = tokio::task::spawn_blocking(|| own_cluster(0))
        .await
        .unwrap();
    let primary = cluster.primary().name().to_string();
    let relay = Relay::for_node(cluster.primary());
    let proxy = start_ready_proxy_on(
        &cluster,
        ProxyOptions {
            backends: Some(vec![(primary.clone(), relay.addr_string())]),
            extra_tables: format!(
                "[health]\ninterval = \"200ms\"\ntimeout = \"1s\"\nfall = 2\nrise = 2\n\
                 [pool]\nconnect_timeout = \"60s\"\n\
                 [routing]\nprimary_wait = \"{primary_wait}\"\n"
            ),
            ..Default::default()
        },
    );
    (cluster, primary, relay, proxy)
}

/// Ends the app user's server sessions on the primary (the pool's idle connections, and the
/// monitor's), and waits until none is left, so that the next request opens a connection.
fn end_app_sessions(cluster: &LocalCluster) {
    cluster
        .primary()
        .psql(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{APP_USER}'"
        ))
        .unwrap();
    assert!(support::wait_until(Duration::from_secs(30), || cluster
        .primary()
        .psql(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = '{APP_USER}'"
        ))
        .is_ok_and(|n| n.trim() == "0")));
}

/// A write whose server connection is still being opened (the primary partitioned) when the
/// monitor declares the primary down: the connection, once open, is closed unused, and the
/// write is routed again by the new view: it waits for the primary to be back and runs there
/// once, instead of failing with 08006.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_connection_opened_after_its_server_went_down_is_routed_again() {
    let (cluster, primary, relay, proxy) = primary_behind_relay("60s").await;
    let client = proxy.connect_app().await;
    client
        .batch_execute("CREATE TABLE sev_w (v int)")
        .await
        .unwrap();
    // The pool's idle connection ends, so that the write opens a new one.
    end_app_sessions(&cluster);
    let accepted = relay.accepted();
    relay.set_mode(Mode::Blackhole);
    let write = tokio::spawn(async move {
        let r = client.batch_execute("INSERT INTO sev_w VALUES (1)").await;
        (client, r)
    });
    // The write's connection waits in the partition while the monitor gives up on the primary.
    assert!(support::wait_until(Duration::from_secs(30), || relay
        .accepted()
        > accepted));
    wait_backend_up(&proxy, &primary, false).await;
    relay.set_mode(Mode::Pass);
    let (client, r) = tokio::time::timeout(Duration::from_secs(90), write)
        .await
        .expect("the write got no answer")
        .unwrap();
    r.expect("the write was routed again once the primary was back");
    let n: i64 = client
        .query_one("SELECT count(*) FROM sev_w", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

/// A write whose server connection is being opened into a partition that lasts: when the
/// monitor declares the primary down, the opening is given up at once (not after all of
/// `connect_timeout`, 60 s here) and the write is routed again, waits `primary_wait` for a
/// primary and fails with 57P03, nothing of it having run. So is a login, which then gets
/// the primary back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_being_opened_into_a_partition_is_given_up_when_its_server_goes_down() {
    let (cluster, primary, relay, proxy) = primary_behind_relay("8s").await;
    let client = proxy.connect_app().await;
    client
        .batch_execute("CREATE TABLE sev_open (v int)")
        .await
        .unwrap();
    // The pool's idle connection ends, so that the write opens a new one.
    end_app_sessions(&cluster);
    let accepted = relay.accepted();
    relay.set_mode(Mode::Blackhole);
    let write = tokio::spawn(async move {
        let r = client
            .batch_execute("INSERT INTO sev_open VALUES (1)")
            .await;
        (client, r)
    });
    assert!(support::wait_until(Duration::from_secs(30), || relay
        .accepted()
        > accepted));
    wait_backend_up(&proxy, &primary, false).await;
    let down = Instant::now();
    let (client, r) = tokio::time::timeout(Duration::from_secs(90), write)
        .await
        .expect("the write got no answer")
        .unwrap();
    let waited = down.elapsed();
    let e = r.expect_err("the write ran on a partitioned primary");
    assert_eq!(
        e.code().map(|c| c.code()),
        Some("57P03"),
        "{e:?}\n{}",
        proxy.log_tail(20)
    );
    // (primary_wait is 8 s; the connect timeout 60 s.)
    assert!(
        waited < Duration::from_secs(30),
        "the write was answered {waited:?} after its server went down\n{}",
        proxy.log_tail(20)
    );
    relay.set_mode(Mode::Pass);
    wait_backend_up(&proxy, &primary, true).await;
    let n: i64 = client
        .query_one("SELECT count(*) FROM sev_open", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "the failed write ran");

    // A login whose connection is being opened into a partition when the primary is
    // declared down is placed again by the new view: it waits for a primary (the partition
    // heals at once), rather than failing with 08006.
    end_app_sessions(&cluster);
    let accepted = relay.accepted();
    relay.set_mode(Mode::Blackhole);
    let cs = format!(
        "{} connect_timeout=90",
        proxy.conn_string(APP_USER, APP_PASSWORD, APP_DB)
    );
    let login = tokio::spawn(async move {
        let (c, conn) = tokio_postgres::connect(&cs, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        c.query_one("SELECT 1", &[]).await.map(|_| ())
    });
    assert!(support::wait_until(Duration::from_secs(30), || relay
        .accepted()
        > accepted));
    wait_backend_up(&proxy, &primary, false).await;
    relay.set_mode(Mode::Pass);
    tokio::time::timeout(Duration::from_secs(90), login)
        .await
        .expect("the login got no answer")
        .unwrap()
        .unwrap_or_else(|e| panic!("the login failed: {e:?}\n{}", proxy.log_tail(20)));
}

/// A read that waits `ryw_wait` for a replica to replay its user's last write, whose probe of
/// the replica's position gets no answer in that time (the replica partitioned for a moment,
/// as a busy one is slow): the read goes to the primary when the wait ends, and the probe's
/// late answer is read once it comes, so the replica's connection goes back to the pool,
/// instead of being closed for another to be opened (`ryw_probe_failed`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_answer_to_a_replay_probe_keeps_its_connection() {
    let s = tokio::task::spawn_blocking(|| {
        setup_tables(
            1,
            false,
            "[health]\ninterval = \"200ms\"\ntimeout = \"2s\"\nfall = 10\nrise = 1\n\
             [routing]\nryw_wait = \"50ms\"\n"
                .into(),
        )
    })
    .await
    .unwrap();
    let replica = &s.cluster.replicas()[0];
    let (primary_port, replica_port) = (
        i32::from(s.cluster.primary().port()),
        i32::from(replica.port()),
    );
    let client = s.proxy.connect_app().await;
    client
        .batch_execute("CREATE TABLE ryw_late (v int)")
        .await
        .unwrap();
    let on_replica = || async {
        let deadline = Instant::now() + Duration::from_secs(30);
        while port_of_read(&client, "SELECT inet_server_port()").await != replica_port {
            assert!(Instant::now() < deadline, "no read reached the replica");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    // The replica's pool has a connection.
    on_replica().await;
    let discards = "switchyard_server_discards_total{reason=\"ryw_probe_failed\"}";
    let behind = "switchyard_routed_total{reason=\"ryw_replica_behind\",target=\"primary\"}";
    let before = (s.proxy.metric(discards).await, s.proxy.metric(behind).await);

    s.relays[0].set_mode(Mode::Blackhole);
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.proxy.metric(behind).await == before.1 {
        assert!(
            Instant::now() < deadline,
            "no read waited for the replica\n{}",
            s.proxy.log_tail(20)
        );
        client
            .batch_execute("INSERT INTO ryw_late VALUES (1)")
            .await
            .unwrap();
        assert_eq!(
            port_of_read(&client, "SELECT inet_server_port()").await,
            primary_port,
            "a read after the write, with the replica's probe unanswered"
        );
    }
    s.relays[0].set_mode(Mode::Pass);
    // The late answer read, the connection is back among the idle ones, not closed.
    let idle = format!(
        "switchyard_server_connections{{backend=\"{}\",state=\"idle\"}}",
        replica.name()
    );
    s.proxy
        .wait_metric(&idle, 1.0, Duration::from_secs(30))
        .await;
    assert_eq!(
        s.proxy.metric(discards).await,
        before.0,
        "the replica's connection was closed\n{}",
        s.proxy.log_tail(20)
    );
    on_replica().await;
}

/// Reloads come more often than `fall` probes while a replica refuses every connection: the
/// failed probes still add up across them (each reload restarts the monitor), and the replica
/// goes down. Before, each reload started the count afresh and the replica stayed up, taking
/// reads, for as long as reloads kept coming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_probes_add_up_across_reloads() {
    let health = |timeout: &str| {
        format!("[health]\ninterval = \"250ms\"\ntimeout = \"{timeout}\"\nfall = 8\nrise = 2\n")
    };
    let extra = health("2s");
    let s = tokio::task::spawn_blocking(move || setup_tables(1, false, extra))
        .await
        .unwrap();
    let (cluster, relay, proxy) = (&s.cluster, &s.relays[0], &s.proxy);
    let replica = cluster.replicas()[0].name().to_string();

    relay.set_mode(Mode::Refuse);
    relay.reset_all();
    // Each reload changes `[health]`, which restarts the monitor: at most about two probes
    // fail between two reloads, far from `fall = 8`.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut reloads = 0;
    loop {
        let status = proxy.status().await;
        let up = status["backends"]
            .as_array()
            .and_then(|bs| bs.iter().find(|b| b["name"] == replica.as_str()))
            .and_then(|b| b["up"].as_bool());
        if up == Some(false) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a replica refusing every probe stayed up through {reloads} reloads: {status}"
        );
        proxy.rewrite_config(&health(if reloads % 2 == 0 { "1900ms" } else { "2s" }));
        proxy.reload_ok().await;
        reloads += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        reloads >= 2,
        "the replica went down before the reloads began"
    );
}

/// A client cancels its read while the read is between two servers: its replica was lost and
/// the repeat waits for a connection to the other replica, which does not answer. The cancel
/// is not dropped for finding nothing running: the read is answered as cancelled (57014)
/// instead of running to its end on the server it lands on next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_while_a_read_is_being_repeated_cancels_it() {
    // A replica that stops answering stays up for a long while (fall = 50), and opening a
    // connection to it waits 8 s: the repeat's window.
    let s = tokio::task::spawn_blocking(|| {
        setup_tables(
            2,
            false,
            "[health]\ninterval = \"200ms\"\ntimeout = \"2s\"\nfall = 50\nrise = 2\n\
             [pool]\nconnect_timeout = \"8s\"\n[routing]\nconsistency = \"eventual\"\n"
                .into(),
        )
    })
    .await
    .unwrap();
    let (cluster, relays, proxy) = (&s.cluster, &s.relays, &s.proxy);
    let client = proxy.connect_app().await;
    let cancel = client.cancel_token();
    let marker = "cancel between servers";
    let read = tokio::spawn(async move {
        client
            .simple_query("SELECT pg_sleep(20) /* cancel between servers */")
            .await
    });
    let counts = wait_running(
        cluster.replicas(),
        marker,
        "the read running on a replica",
        |c| c.iter().sum::<i64>() == 1,
    )
    .await;
    let (lost, other) = if counts[0] == 1 { (0, 1) } else { (1, 0) };
    let repeats = proxy.metric(SERVER_LOST).await;
    // The other replica takes no new connection (the read's pool there has none yet), then
    // the read's replica connection is cut: the read is repeated, and waits to connect.
    relays[other].set_mode(Mode::Blackhole);
    relays[lost].reset_all();
    proxy
        .wait_metric(SERVER_LOST, repeats + 1.0, Duration::from_secs(30))
        .await;
    cancel
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("sending the cancel request");
    let r = tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("the read hung")
        .unwrap();
    let e = r.expect_err("a read cancelled while being repeated ran to its end");
    assert_eq!(
        e.code().map(|s| s.code()),
        Some("57014"),
        "the cancelled read should fail as cancelled: {e} ({e:?})"
    );
    let deferred = proxy
        .metric("switchyard_cancel_requests_total{result=\"between_servers\"}")
        .await;
    assert_eq!(
        deferred, 1.0,
        "the cancel was counted as kept between servers"
    );
    relays[other].set_mode(Mode::Pass);

    // A cancel that came before the loss and could not reach the read's replica (it had
    // stopped answering): the read is not run again elsewhere either.
    let client = proxy.connect_app().await;
    let cancel = client.cancel_token();
    let read = tokio::spawn(async move {
        client
            .simple_query("SELECT pg_sleep(20) /* cancel before the loss */")
            .await
    });
    let counts = wait_running(
        cluster.replicas(),
        "cancel before the loss",
        "the second read running on a replica",
        |c| c.iter().sum::<i64>() == 1,
    )
    .await;
    let on = if counts[0] == 1 { 0 } else { 1 };
    let failed = "switchyard_cancel_requests_total{result=\"failed\"}";
    let failures = proxy.metric(failed).await;
    relays[on].set_mode(Mode::Blackhole);
    let sent = tokio::spawn(async move { cancel.cancel_query(tokio_postgres::NoTls).await });
    proxy
        .wait_metric(failed, failures + 1.0, Duration::from_secs(30))
        .await;
    let repeats = proxy.metric(SERVER_LOST).await;
    relays[on].reset_all();
    let r = tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("the read hung")
        .unwrap();
    let e = r.expect_err("a read whose cancel could not be delivered ran again elsewhere");
    assert_eq!(
        e.code().map(|s| s.code()),
        Some("57014"),
        "the read cancelled before its server was lost should fail as cancelled: {e} ({e:?})"
    );
    assert_eq!(
        proxy.metric(SERVER_LOST).await,
        repeats + 1.0,
        "the read's loss was met with a repeat (answered as cancelled)"
    );
    relays[on].set_mode(Mode::Pass);
    let _ = sent.await;
}

/// A client cancels a read that a replica then refuses (an unlogged table, which a standby
/// cannot read): the cancel could not be delivered (the replica had stopped answering), so it
/// may still reach that server. The refused read is answered as cancelled (57014) instead of
/// being run again on the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_refused_while_its_cancel_is_undelivered_is_cancelled() {
    let s = tokio::task::spawn_blocking(|| {
        setup_tables(
            1,
            false,
            "[health]\ninterval = \"200ms\"\ntimeout = \"2s\"\nfall = 50\nrise = 2\n\
             [routing]\nconsistency = \"eventual\"\n"
                .into(),
        )
    })
    .await
    .unwrap();
    let (cluster, relays, proxy) = (&s.cluster, &s.relays, &s.proxy);
    let setup = proxy.connect_app().await;
    setup
        .batch_execute("CREATE UNLOGGED TABLE refused_cancelled (v int)")
        .await
        .unwrap();
    tokio::task::block_in_place(|| cluster.wait_replicas_caught_up(Duration::from_secs(30)))
        .expect("the replica replaying the table's creation");
    let client = proxy.connect_app().await;
    // The client's connection to the replica, kept for its next read.
    let replica = cluster.replicas()[0].port() as i32;
    assert_eq!(
        port_of_read(&client, "SELECT inet_server_port()").await,
        replica,
        "the first read ran on the replica"
    );
    let cancel = client.cancel_token();
    relays[0].set_mode(Mode::Blackhole);
    let read = tokio::spawn(async move {
        client
            .simple_query("SELECT count(*) FROM refused_cancelled /* refused, cancelled */")
            .await
    });
    let failed = "switchyard_cancel_requests_total{result=\"failed\"}";
    let refused = "switchyard_retries_total{reason=\"read_only_violation\"}";
    let (failures, refusals) = (proxy.metric(failed).await, proxy.metric(refused).await);
    // The read waits in the partition; its cancel cannot reach the replica either.
    let sent = tokio::spawn(async move { cancel.cancel_query(tokio_postgres::NoTls).await });
    proxy
        .wait_metric(failed, failures + 1.0, Duration::from_secs(30))
        .await;
    // The partition heals: the replica gets the read, refuses it.
    relays[0].set_mode(Mode::Pass);
    let r = tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("the read hung")
        .unwrap();
    assert_eq!(
        proxy.metric(refused).await,
        refusals + 1.0,
        "the replica refused the read"
    );
    let e = r.expect_err("a read refused while its cancel was undelivered ran on the primary");
    support::assert_cancelled(&e, "the read refused while its cancel was undelivered");
    let _ = sent.await;
}

/// A read waiting for a slot of a replica's pool when the replica is partitioned is routed
/// again once the monitor declares the replica down, at once: before, it was handed the slot
/// the severed connections gave back and opened a connection into the partition, waiting all
/// of `connect_timeout` (or failing with 53300 after `checkout_timeout`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_waiting_for_a_partitioned_replica_is_routed_again() {
    let s = tokio::task::spawn_blocking(|| {
        setup_tables(
            1,
            false,
            "[health]\ninterval = \"200ms\"\ntimeout = \"2s\"\nfall = 2\nrise = 2\n\
             [pool]\nsize = 1\nconnect_timeout = \"40s\"\ncheckout_timeout = \"60s\"\n\
             [routing]\nconsistency = \"eventual\"\n"
                .into(),
        )
    })
    .await
    .unwrap();
    let replica = &s.cluster.replicas()[0];
    let primary = s.cluster.primary().port() as i32;
    // The replica's only connection is held by a long read...
    let holder = start_reads(
        &s.proxy,
        1,
        "SELECT inet_server_port(), pg_sleep(5) /* holds the replica's slot */",
    )
    .await;
    wait_running(
        std::slice::from_ref(replica),
        "holds the replica's slot",
        "the long read on the replica",
        |c| c[0] == 1,
    )
    .await;
    // ... so the next read waits for it.
    let waits = format!(
        "switchyard_pool_waits_total{{backend=\"{}\"}}",
        replica.name()
    );
    let before = s.proxy.metric(&waits).await;
    let waiting = start_reads(&s.proxy, 1, "SELECT inet_server_port()").await;
    s.proxy
        .wait_metric(&waits, before + 1.0, Duration::from_secs(30))
        .await;
    s.relays[0].set_mode(Mode::Blackhole);
    let t0 = Instant::now();
    for t in waiting.into_iter().chain(holder) {
        let port = tokio::time::timeout(Duration::from_secs(90), t)
            .await
            .expect("read hung")
            .unwrap()
            .expect("reads must survive the partitioned replica");
        assert_eq!(port, primary, "only the primary is left to read on");
    }
    wait_backend_up(&s.proxy, replica.name(), false).await;
    let waited = t0.elapsed();
    // (Down within fall probes of 2 s each; a connection into the partition takes 40 s.)
    assert!(
        waited < Duration::from_secs(25),
        "the waiting read took {waited:?} after the partition began\n{}",
        s.proxy.log_tail(20)
    );
}

/// A write waiting out `primary_wait` for a primary (the only one partitioned and seen down)
/// is cancelled by its client's cancel request: it is answered 57014 at once, not after the
/// wait, and it does not run when the primary comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_while_a_write_waits_for_a_primary_cancels_it() {
    let s = tokio::task::spawn_blocking(|| {
        setup_tables(
            0,
            true,
            "[health]\ninterval = \"200ms\"\ntimeout = \"2s\"\nfall = 2\nrise = 2\n\
             [pool]\nconnect_timeout = \"3s\"\n[routing]\nprimary_wait = \"60s\"\n"
                .into(),
        )
    })
    .await
    .unwrap();
    let relay = s.primary_relay.as_ref().expect("the primary's relay");
    let primary = s.cluster.primary().name().to_string();
    let client = s.proxy.connect_app().await;
    client
        .batch_execute("CREATE TABLE pw_cancel (v text)")
        .await
        .unwrap();
    // (Answered only once the session state the CREATE may have changed was read back: a
    // server lost during that read-back would end the client's connection.)
    client.batch_execute("SELECT 1").await.unwrap();
    relay.set_mode(Mode::Blackhole);
    relay.reset_all();
    wait_backend_up(&s.proxy, &primary, false).await;

    let cancel = client.cancel_token();
    let waiting = "switchyard_cancel_requests_total{result=\"waiting\"}";
    let write = tokio::spawn(async move {
        let r = client
            .simple_query("INSERT INTO pw_cancel VALUES ('should be cancelled')")
            .await;
        (client, r)
    });
    // A cancel that comes before the write waits finds the client idle and is dropped (as
    // PostgreSQL drops one for an idle session): cancel until one lands in the wait.
    let t0 = Instant::now();
    while !write.is_finished() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no cancel ended the wait for a primary\n{}",
            s.proxy.log_tail(20)
        );
        cancel
            .cancel_query(tokio_postgres::NoTls)
            .await
            .expect("sending the cancel request");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (client, r) = write.await.unwrap();
    let e = r.expect_err("the cancelled write ran");
    support::assert_cancelled(&e, "waiting for a primary");
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "answered {:?} after the first cancel (primary_wait is 60 s)",
        t0.elapsed()
    );
    assert_eq!(s.proxy.metric(waiting).await, 1.0);

    // The primary comes back: the cancelled write never runs, and the client goes on.
    relay.set_mode(Mode::Pass);
    wait_backend_up(&s.proxy, &primary, true).await;
    client
        .batch_execute("INSERT INTO pw_cancel VALUES ('after')")
        .await
        .expect("a write once the primary is back");
    let rows = client
        .query_one("SELECT string_agg(v, ',') FROM pw_cancel", &[])
        .await
        .unwrap();
    assert_eq!(rows.get::<_, Option<String>>(0).as_deref(), Some("after"));
}
