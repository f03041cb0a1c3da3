//! Read/write splitting through the proxy, against a real primary and two streaming replicas
//! (the shared cluster: nothing here pauses, stops or kills a node).
//!
//! Where a statement ran is proven with `inet_server_port()`, compared with the nodes' ports.
//! Every test starts its own proxy (so read-your-writes state, the learned-writes cache and
//! metrics are its own) with a fast health check interval.

mod support;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use support::proxy::Proxy;
use support::*;
use tokio_postgres::{Client, SimpleQueryMessage};

/// Health check settings used by every proxy here.
const HEALTH: &str = "[health]\ninterval = \"200ms\"\n";

/// Every client operation must finish within this.
const OP_TIMEOUT: Duration = Duration::from_secs(20);

/// Number of reads used to check that reads spread over the replicas.
const READS: usize = 40;

// ---------------------------------------------------------------------------------------------
// helpers

/// The cluster's ports: (primary, [replica1, replica2]).
struct Ports {
    primary: u16,
    replicas: Vec<u16>,
}

impl Ports {
    fn of(c: &LocalCluster) -> Ports {
        Ports {
            primary: c.primary().port(),
            replicas: c.replicas().iter().map(|n| n.port()).collect(),
        }
    }

    fn is_replica(&self, port: u16) -> bool {
        self.replicas.contains(&port)
    }

    fn name(&self, port: u16) -> String {
        if port == self.primary {
            format!("primary ({port})")
        } else if let Some(i) = self.replicas.iter().position(|&p| p == port) {
            format!("replica {} ({port})", i + 1)
        } else {
            format!("unknown server ({port})")
        }
    }
}

/// Awaits `fut`, panicking if it takes longer than [`OP_TIMEOUT`].
async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(OP_TIMEOUT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: no answer within {OP_TIMEOUT:?}"),
    }
}

/// Rows of a simple query as text (NULL as `None`).
async fn rows(c: &Client, sql: &str) -> Vec<Vec<Option<String>>> {
    let msgs = within(sql, c.simple_query(sql))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e} ({e:?})"));
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect()
}

/// The first column of the first row of a simple query.
async fn value(c: &Client, sql: &str) -> Option<String> {
    let r = rows(c, sql).await;
    assert!(!r.is_empty(), "{sql}: no row");
    r[0][0].clone()
}

/// Runs a simple query whose first column of the first row is `inet_server_port()`.
async fn port(c: &Client, sql: &str) -> u16 {
    let v = value(c, sql).await;
    v.as_deref()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{sql}: first column is not a port: {v:?}"))
}

/// Runs a simple query that must fail; returns its SQLSTATE.
async fn error_code(c: &Client, sql: &str) -> String {
    match within(sql, c.simple_query(sql)).await {
        Ok(m) => panic!("{sql}: expected an error, got {} messages", m.len()),
        Err(e) => e
            .code()
            .map(|s| s.code().to_string())
            .unwrap_or_else(|| panic!("{sql}: failed without a SQLSTATE: {e} ({e:?})")),
    }
}

async fn execute(c: &Client, sql: &str) {
    within(sql, c.batch_execute(sql))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e} ({e:?})"));
}

/// Counts how often each port answered.
fn tally(ports: &[u16], p: &Ports) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for &x in ports {
        *m.entry(p.name(x)).or_insert(0) += 1;
    }
    m
}

/// Asserts that every read ran on a replica and that both replicas served some.
fn assert_spread_over_replicas(what: &str, got: &[u16], p: &Ports) {
    let t = tally(got, p);
    assert!(
        got.iter().all(|&x| p.is_replica(x)),
        "{what}: every autocommit read should run on a replica; got {t:?}"
    );
    for &r in &p.replicas {
        assert!(
            got.contains(&r),
            "{what}: reads should spread over both replicas, {} got none of {}: {t:?}",
            p.name(r),
            got.len()
        );
    }
}

/// The value of a Prometheus sample line `name{labels} value` (0 when absent).
/// The routing and retry counters, for failure messages.
async fn routing_metrics(proxy: &Proxy) -> String {
    let (_, body) = within("GET /metrics", proxy.http_get("/metrics")).await;
    body.lines()
        .filter(|l| {
            l.starts_with("switchyard_routed_total") || l.starts_with("switchyard_retries_total")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

const READ_ONLY_VIOLATIONS: &str = "switchyard_retries_total{reason=\"read_only_violation\"}";

async fn status(proxy: &Proxy) -> serde_json::Value {
    within("GET /status", proxy.status()).await
}

/// Waits (bounded) until the proxy's monitor sees pg0 as the primary and pg1, pg2 as up
/// replicas.
async fn wait_cluster_ready(proxy: &Proxy) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let s = status(proxy).await;
        let ok = s["backends"].as_array().is_some_and(|bs| {
            bs.len() == 3
                && bs.iter().all(|b| {
                    let primary = b["name"] == "pg0";
                    b["up"] == true
                        && b["primary"] == primary
                        && b["role"] == if primary { "primary" } else { "replica" }
                })
        });
        if ok {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("the proxy's monitor never saw the cluster as expected: {s:#}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Tables, a sequence, a writing function and one only a primary can run, created once in the shared cluster's app
/// database (owned by the app user) and replicated before any test uses them.
fn shared_schema() -> &'static LocalCluster {
    static SCHEMA: OnceLock<()> = OnceLock::new();
    let c = shared_cluster();
    SCHEMA.get_or_init(|| {
        c.primary()
            .psql_db(
                APP_DB,
                "SET ROLE app;
                 CREATE TABLE routing_t (id serial PRIMARY KEY, v text);
                 INSERT INTO routing_t (v) SELECT 'seed' || g FROM generate_series(1, 5) g;
                 CREATE SEQUENCE routing_seq;
                 CREATE TABLE routing_log (id serial PRIMARY KEY, port int, tag text);
                 CREATE FUNCTION routing_writer(tag text) RETURNS int LANGUAGE plpgsql VOLATILE AS $$
                 BEGIN
                     INSERT INTO routing_log (port, tag) VALUES (inet_server_port(), tag);
                     RETURN inet_server_port();
                 END
                 $$;
                 CREATE FUNCTION routing_wal_position() RETURNS pg_lsn LANGUAGE sql
                     AS 'SELECT pg_current_wal_lsn()';",
            )
            .expect("creating the routing test schema");
        c.wait_replicas_caught_up(Duration::from_secs(60))
            .expect("replicas catching up with the routing test schema");
    });
    c
}

/// Starts a proxy in front of the shared cluster with `routing` as the `[routing]` table
/// body, and waits until its monitor knows the cluster.
async fn start_proxy(routing: &str) -> (&'static LocalCluster, Proxy, Ports) {
    let c = tokio::task::spawn_blocking(shared_schema).await.unwrap();
    let extra = format!("{HEALTH}\n[routing]\n{routing}\n");
    // ROUTING_PROXY_LOG sets the proxy's RUST_LOG (default info), for debugging.
    let opts = support::proxy::ProxyOptions {
        extra_tables: extra,
        env: vec![(
            "RUST_LOG".into(),
            std::env::var("ROUTING_PROXY_LOG").unwrap_or_else(|_| "info".into()),
        )],
        ..Default::default()
    };
    let proxy = tokio::task::spawn_blocking(move || Proxy::start_with(c, opts))
        .await
        .unwrap();
    wait_cluster_ready(&proxy).await;
    (c, proxy, Ports::of(c))
}

/// `READS` reads of `sql` (its first column is the port): half on one reused connection,
/// half on a fresh connection each.
async fn many_reads(proxy: &Proxy, sql: &str) -> Vec<u16> {
    let mut got = Vec::with_capacity(READS);
    let reused = proxy.connect_app().await;
    for _ in 0..READS / 2 {
        got.push(port(&reused, sql).await);
    }
    for _ in 0..READS - READS / 2 {
        let fresh = within("connect", proxy.connect_app()).await;
        got.push(port(&fresh, sql).await);
    }
    got
}

// ---------------------------------------------------------------------------------------------
// reads

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventual_reads_spread_over_both_replicas() {
    let (_c, proxy, p) = start_proxy("consistency = \"eventual\"").await;
    let got = many_reads(&proxy, "SELECT inet_server_port()").await;
    assert_spread_over_replicas("consistency = eventual", &got, &p);

    // Reads of a table spread too.
    let got = many_reads(
        &proxy,
        "SELECT inet_server_port(), count(*) FROM routing_t WHERE v IS NOT NULL",
    )
    .await;
    assert_spread_over_replicas("table read, consistency = eventual", &got, &p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventual_reads_right_after_a_write_go_to_replicas() {
    let (_c, proxy, p) = start_proxy("consistency = \"eventual\"").await;
    // Writes made through this proxy do not pull eventual reads to the primary, not even
    // the read sent the moment the write's answer arrived.
    let c = proxy.connect_app().await;
    let mut after = Vec::new();
    for i in 0..10 {
        let w = port(
            &c,
            &format!(
                "INSERT INTO routing_t (v) VALUES ('eventual{i}') RETURNING inet_server_port()"
            ),
        )
        .await;
        assert_eq!(w, p.primary, "the write should run on the primary");
        for _ in 0..2 {
            after.push(port(&c, "SELECT inet_server_port()").await);
        }
    }
    assert!(
        after.iter().all(|&x| p.is_replica(x)),
        "under consistency = eventual, reads right after a write should still run on \
         replicas: {:?}",
        tally(&after, &p)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_consistency_reads_spread_when_no_write_is_recent() {
    let (c, proxy, p) = start_proxy("").await;
    // No write went through this proxy yet.
    let got = many_reads(&proxy, "SELECT inet_server_port()").await;
    assert_spread_over_replicas("default consistency, no write yet", &got, &p);

    // A write, then (once both replicas have replayed it and the monitor saw that) reads
    // go back to the replicas.
    let client = proxy.connect_app().await;
    let w = port(
        &client,
        "INSERT INTO routing_t (v) VALUES ('ryw') RETURNING inet_server_port()",
    )
    .await;
    assert_eq!(w, p.primary, "the write should run on the primary");
    // Where both replicas are once they have replayed the write (and anything else written
    // meanwhile); reads spread again once the monitor has seen both get there.
    let replayed = tokio::task::spawn_blocking(move || {
        c.wait_replicas_caught_up(Duration::from_secs(30))
            .expect("replicas catching up");
        c.replicas()
            .iter()
            .map(|n| {
                n.replay_lsn()
                    .expect("replay position")
                    .expect("a replica")
                    .0
            })
            .min()
            .unwrap()
    })
    .await
    .unwrap();
    proxy
        .wait_status(
            "both replicas' positions past the write",
            Duration::from_secs(30),
            |s| {
                let replicas: Vec<&serde_json::Value> = s["backends"]
                    .as_array()
                    .map(|bs| bs.iter().filter(|b| b["name"] != "pg0").collect())
                    .unwrap_or_default();
                replicas.len() == 2
                    && replicas.iter().all(|b| {
                        b["lsn"]
                            .as_str()
                            .and_then(|l| l.parse::<Lsn>().ok())
                            .is_some_and(|l| l.0 >= replayed)
                    })
            },
        )
        .await;
    let got = many_reads(&proxy, "SELECT inet_server_port()").await;
    assert_spread_over_replicas("default consistency, write replayed everywhere", &got, &p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_statement_queries() {
    let (_c, proxy, p) = start_proxy("consistency = \"eventual\"").await;
    let c = proxy.connect_app().await;
    // All reads: a replica, one server for the whole string.
    for _ in 0..10 {
        let r = rows(&c, "SELECT inet_server_port(); SELECT inet_server_port()").await;
        assert_eq!(r.len(), 2);
        let a: u16 = r[0][0].as_deref().unwrap().parse().unwrap();
        let b: u16 = r[1][0].as_deref().unwrap().parse().unwrap();
        assert!(
            p.is_replica(a),
            "read-only multi-statement ran on {}",
            p.name(a)
        );
        assert_eq!(a, b, "one query string runs on one server");
    }
    // A read followed by a write: the whole string is a write.
    let before = proxy.metric(READ_ONLY_VIOLATIONS).await;
    for _ in 0..5 {
        let r = rows(
            &c,
            "SELECT inet_server_port(); INSERT INTO routing_t (v) VALUES ('multi')",
        )
        .await;
        let a: u16 = r[0][0].as_deref().unwrap().parse().unwrap();
        assert_eq!(
            a,
            p.primary,
            "a multi-statement query with a write ran on {}",
            p.name(a)
        );
    }
    assert_eq!(
        proxy.metric(READ_ONLY_VIOLATIONS).await,
        before,
        "the multi-statement write should have been routed to the primary, not rescued"
    );
}

// ---------------------------------------------------------------------------------------------
// writes and transactions

/// A monitor user whose default isolation is serializable (set on the role or the database,
/// replicated to the standbys, which refuse every query under it) still sees the replicas up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_are_seen_up_when_the_default_isolation_is_serializable() {
    let c = tokio::task::spawn_blocking(|| {
        let c = shared_schema();
        c.primary()
            .psql(
                "DO $$ BEGIN
                     IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'serial_monitor') THEN
                         CREATE ROLE serial_monitor LOGIN PASSWORD 'sm';
                     END IF;
                 END $$;
                 ALTER ROLE serial_monitor SET default_transaction_isolation = 'serializable'",
            )
            .expect("creating serial_monitor");
        c.wait_replicas_caught_up(Duration::from_secs(60))
            .expect("replicas catching up");
        c
    })
    .await
    .unwrap();
    let opts = support::proxy::ProxyOptions {
        extra_tables:
            "[health]\ninterval = \"200ms\"\nuser = \"serial_monitor\"\npassword = \"sm\"\n".into(),
        ..Default::default()
    };
    let proxy = tokio::task::spawn_blocking(move || Proxy::start_with(c, opts))
        .await
        .unwrap();
    wait_cluster_ready(&proxy).await;
}

/// A server configured twice, by two addresses (`localhost` and `127.0.0.1`), is one server:
/// its first entry takes its traffic, the second none. The primary named twice is not two
/// primaries on one timeline (both fenced, every write refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_configured_twice_is_used_once() {
    let c = tokio::task::spawn_blocking(shared_schema).await.unwrap();
    let p = Ports::of(c);
    let backends = vec![
        ("pg0".to_owned(), format!("127.0.0.1:{}", p.primary)),
        ("pg1".to_owned(), format!("127.0.0.1:{}", p.replicas[0])),
        ("pg1b".to_owned(), format!("localhost:{}", p.replicas[0])),
        ("pg0b".to_owned(), format!("localhost:{}", p.primary)),
        ("pg2".to_owned(), format!("127.0.0.1:{}", p.replicas[1])),
    ];
    let opts = support::proxy::ProxyOptions {
        extra_tables: format!("{HEALTH}\n[routing]\nconsistency = \"eventual\"\n"),
        ..Default::default()
    };
    let proxy = tokio::task::spawn_blocking(move || Proxy::start_backends(backends, opts))
        .await
        .unwrap();
    let want = [
        ("pg0", "primary"),
        ("pg1", "replica"),
        ("pg1b", "duplicate"),
        ("pg0b", "duplicate"),
        ("pg2", "replica"),
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let s = status(&proxy).await;
        let roles: Vec<(String, String)> = s["backends"]
            .as_array()
            .map(|bs| {
                bs.iter()
                    .map(|b| {
                        (
                            b["name"].as_str().unwrap_or("").to_owned(),
                            b["role"].as_str().unwrap_or("").to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        if roles.iter().map(|(n, r)| (n.as_str(), r.as_str())).eq(want) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the monitor never saw pg0b and pg1b as pg0 and pg1 again: {s:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let c = proxy.connect_app().await;
    for _ in 0..3 {
        let got = port(
            &c,
            "INSERT INTO routing_t (v) VALUES ('twice') RETURNING inet_server_port()",
        )
        .await;
        assert_eq!(got, p.primary, "the write ran on {}", p.name(got));
    }
    let got = many_reads(&proxy, "SELECT inet_server_port()").await;
    assert_spread_over_replicas("a replica configured twice", &got, &p);
    for (name, used) in [
        ("pg0", true),
        ("pg1", true),
        ("pg1b", false),
        ("pg0b", false),
    ] {
        let n = proxy
            .metric(&format!("switchyard_queries_total{{backend=\"{name}\"}}"))
            .await;
        assert_eq!(n > 0.0, used, "{name} ran {n} queries");
    }
    assert_eq!(
        proxy
            .metric("switchyard_backend_role{backend=\"pg0b\"}")
            .await,
        -3.0
    );
    assert_eq!(
        proxy
            .metric("switchyard_backend_role{backend=\"pg0\"}")
            .await,
        1.0
    );
    let log = proxy.log();
    assert!(
        log.contains("reaches the same server as another backend"),
        "no error names the duplicate: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_run_on_the_primary() {
    let (_c, proxy, p) = start_proxy("consistency = \"eventual\"").await;
    let c = proxy.connect_app().await;
    let before = proxy.metric(READ_ONLY_VIOLATIONS).await;
    let writes = [
        "INSERT INTO routing_t (v) VALUES ('w') RETURNING inet_server_port()",
        "insert into routing_t (v) select 'w2' returning inet_server_port()",
        "UPDATE routing_t SET v = v WHERE id = (SELECT min(id) FROM routing_t) RETURNING inet_server_port()",
        "DELETE FROM routing_t WHERE v = 'no such value' OR id = (SELECT max(id) FROM routing_t WHERE v = 'w') RETURNING inet_server_port()",
        "SELECT inet_server_port() FROM routing_t ORDER BY id LIMIT 1 FOR UPDATE",
        "SELECT inet_server_port() FROM routing_t ORDER BY id LIMIT 1 FOR NO KEY UPDATE",
        "SELECT inet_server_port() FROM routing_t ORDER BY id LIMIT 1 FOR SHARE",
        "SELECT inet_server_port() FROM routing_t ORDER BY id LIMIT 1 FOR KEY SHARE",
        "select inet_server_port() from routing_t r order by id limit 1 for update of r skip locked",
        "SELECT inet_server_port(), nextval('routing_seq')",
        "SELECT inet_server_port(), setval('routing_seq', 100)",
        // The session's own process: the one its BackendKeyData names, which a later
        // pg_cancel_backend or pg_terminate_backend (on the primary) must find.
        "SELECT inet_server_port(), pg_backend_pid()",
        "WITH x AS (INSERT INTO routing_t (v) VALUES ('cte') RETURNING 1) SELECT inet_server_port() FROM x",
        "WITH x AS (UPDATE routing_t SET v = v WHERE id = (SELECT min(id) FROM routing_t) RETURNING 1) SELECT inet_server_port() FROM x",
        "WITH x AS (DELETE FROM routing_t WHERE v = 'cte' RETURNING 1) SELECT inet_server_port() FROM (SELECT count(*) FROM x) s",
    ];
    for sql in writes {
        for _ in 0..3 {
            let got = port(&c, sql).await;
            assert_eq!(got, p.primary, "{sql} ran on {}", p.name(got));
        }
    }
    // Same on fresh connections (no session history).
    for sql in writes {
        let fresh = proxy.connect_app().await;
        let got = port(&fresh, sql).await;
        assert_eq!(
            got,
            p.primary,
            "{sql} (fresh connection) ran on {}",
            p.name(got)
        );
    }
    assert_eq!(
        proxy.metric(READ_ONLY_VIOLATIONS).await,
        before,
        "every write should have been routed to the primary directly, none rescued after a \
         replica refused it (25006)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_transactions_run_on_the_primary() {
    let (_c, proxy, p) = start_proxy("consistency = \"eventual\"").await;
    let c = proxy.connect_app().await;
    let begins = [
        "BEGIN",
        "START TRANSACTION",
        "BEGIN READ WRITE",
        "BEGIN ISOLATION LEVEL REPEATABLE READ",
        "begin transaction",
    ];
    for begin in begins {
        for with_write in [false, true] {
            execute(&c, begin).await;
            let mut seen = Vec::new();
            let mut pids = Vec::new();
            let r = rows(&c, "SELECT inet_server_port(), pg_backend_pid()").await;
            seen.push(r[0][0].as_deref().unwrap().parse::<u16>().unwrap());
            pids.push(r[0][1].clone());
            if with_write {
                seen.push(
                    port(
                        &c,
                        "INSERT INTO routing_t (v) VALUES ('txn') RETURNING inet_server_port()",
                    )
                    .await,
                );
            }
            let r = rows(&c, "SELECT inet_server_port(), pg_backend_pid()").await;
            seen.push(r[0][0].as_deref().unwrap().parse::<u16>().unwrap());
            pids.push(r[0][1].clone());
            execute(&c, "COMMIT").await;
            assert!(
                seen.iter().all(|&x| x == p.primary),
                "{begin} ... COMMIT (with write: {with_write}) ran on {:?}",
                tally(&seen, &p)
            );
            assert!(
                pids.windows(2).all(|w| w[0] == w[1]),
                "{begin}: one transaction, one server connection: {pids:?}"
            );
        }
    }
    // Through tokio-postgres' transaction API (extended protocol inside).
    let mut c2 = proxy.connect_app().await;
    let t = within("begin", c2.transaction()).await.unwrap();
    let a: i32 = t
        .query_one("SELECT inet_server_port()", &[])
        .await
        .unwrap()
        .get(0);
    let b: i32 = t
        .query_one(
            "INSERT INTO routing_t (v) VALUES ($1) RETURNING inet_server_port()",
            &[&"ext-txn"],
        )
        .await
        .unwrap()
        .get(0);
    within("commit", t.commit()).await.unwrap();
    assert_eq!((a as u16, b as u16), (p.primary, p.primary));
}

/// Each way of starting a read-only transaction; the transaction must run on one replica.
async fn check_read_only_transaction(c: &Client, p: &Ports, what: &str, start: &[&str]) -> u16 {
    for s in start {
        execute(c, s).await;
    }
    // The transaction's first statement decides where it runs: a plain read (one asking for
    // the session's process would take the transaction to the primary: see
    // a_read_only_transaction_asking_for_its_process_runs_on_the_primary).
    let mut seen = vec![port(c, "SELECT inet_server_port()").await];
    let mut pids = Vec::new();
    for i in 0..5 {
        let r = rows(
            c,
            "SELECT inet_server_port(), pg_backend_pid(), current_setting('transaction_read_only')",
        )
        .await;
        seen.push(r[0][0].as_deref().unwrap().parse::<u16>().unwrap());
        pids.push(r[0][1].clone());
        assert_eq!(
            r[0][2].as_deref(),
            Some("on"),
            "{what}: statement {i} is not in a read-only transaction"
        );
        if i == 2 {
            // Something heavier in between.
            let n = value(c, "SELECT count(*) FROM routing_t").await;
            assert!(n.is_some());
        }
    }
    execute(c, "COMMIT").await;
    assert!(
        p.is_replica(seen[0]),
        "{what}: a read-only transaction should run on a replica, ran on {:?}",
        tally(&seen, p)
    );
    assert!(
        seen.iter().all(|&x| x == seen[0]) && pids.iter().all(|x| *x == pids[0]),
        "{what}: a read-only transaction must stay on one replica connection: ports {:?}, pids {pids:?}",
        tally(&seen, p)
    );
    seen[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_transactions_stay_on_one_replica() {
    let (_c, proxy, p) = start_proxy("").await;
    let c = proxy.connect_app().await;
    let variants: [(&str, &[&str]); 6] = [
        ("BEGIN READ ONLY", &["BEGIN READ ONLY"]),
        (
            "START TRANSACTION READ ONLY",
            &["START TRANSACTION READ ONLY"],
        ),
        (
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY",
            &["BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"],
        ),
        (
            "begin transaction read only",
            &["begin transaction read only"],
        ),
        (
            "BEGIN + SET TRANSACTION READ ONLY",
            &["BEGIN", "SET TRANSACTION READ ONLY"],
        ),
        (
            "START TRANSACTION + SET TRANSACTION READ ONLY",
            &["START TRANSACTION", "set transaction read only"],
        ),
    ];
    for (what, start) in variants {
        for _ in 0..4 {
            check_read_only_transaction(&c, &p, what, start).await;
        }
    }

    // A write inside a read-only transaction fails as PostgreSQL says (not moved elsewhere),
    // and the session goes on.
    execute(&c, "BEGIN READ ONLY").await;
    let code = error_code(&c, "INSERT INTO routing_t (v) VALUES ('ro')").await;
    assert_eq!(code, "25006", "a write in a read-only transaction");
    execute(&c, "ROLLBACK").await;

    // tokio-postgres' read-only transaction (extended protocol statements inside).
    let mut c2 = proxy.connect_app().await;
    for _ in 0..3 {
        let t = within(
            "start read only",
            c2.build_transaction().read_only(true).start(),
        )
        .await
        .unwrap();
        let mut seen = Vec::new();
        for _ in 0..4 {
            let r: i32 = t
                .query_one("SELECT inet_server_port()", &[])
                .await
                .unwrap()
                .get(0);
            seen.push(r as u16);
        }
        within("commit", t.commit()).await.unwrap();
        assert!(
            p.is_replica(seen[0]) && seen.iter().all(|&x| x == seen[0]),
            "extended-protocol read-only transaction: {:?}",
            tally(&seen, &p)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_transaction_read_only_session_runs_transactions_on_a_replica() {
    let (_c, proxy, p) = start_proxy("").await;
    let c = proxy.connect_app().await;
    execute(&c, "SET default_transaction_read_only = on").await;
    assert_eq!(
        value(&c, "SHOW default_transaction_read_only")
            .await
            .as_deref(),
        Some("on")
    );
    for what in ["BEGIN", "START TRANSACTION"] {
        for _ in 0..3 {
            check_read_only_transaction(
                &c,
                &p,
                &format!("SET default_transaction_read_only = on; {what}"),
                &[what],
            )
            .await;
        }
    }
}

/// A BEGIN is answered by the proxy and sent with the first statement only when the server
/// cannot refuse it there: a hot standby refuses SERIALIZABLE and READ WRITE, so such
/// transactions run on the primary whatever else makes them read-only, and a malformed BEGIN
/// is answered by the server at once. (No writes here: they would delay other tests' reads.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn begins_a_replica_would_refuse_run_on_the_primary() {
    let (_c, proxy, p) = start_proxy("consistency = \"eventual\"").await;
    let c = proxy.connect_app().await;
    let serializable: [&[&str]; 4] = [
        &["BEGIN ISOLATION LEVEL SERIALIZABLE, READ ONLY"],
        &["START TRANSACTION READ ONLY ISOLATION LEVEL SERIALIZABLE"],
        &[
            "BEGIN ISOLATION LEVEL SERIALIZABLE",
            "SET TRANSACTION READ ONLY",
        ],
        &[
            "BEGIN",
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY",
        ],
    ];
    for start in serializable {
        for _ in 0..3 {
            for sql in start {
                execute(&c, sql).await;
            }
            let seen = port(&c, "SELECT inet_server_port()").await;
            assert_eq!(
                value(&c, "SHOW transaction_isolation").await.as_deref(),
                Some("serializable"),
                "{start:?}"
            );
            execute(&c, "COMMIT").await;
            assert_eq!(seen, p.primary, "{start:?} ran on {}", p.name(seen));
        }
    }
    execute(&c, "SET default_transaction_read_only = on").await;
    for _ in 0..3 {
        execute(&c, "BEGIN READ WRITE").await;
        let seen = port(&c, "SELECT inet_server_port()").await;
        assert_eq!(
            value(&c, "SHOW transaction_read_only").await.as_deref(),
            Some("off")
        );
        execute(&c, "COMMIT").await;
        assert_eq!(seen, p.primary, "BEGIN READ WRITE ran on {}", p.name(seen));
    }
    // The same said by the transaction's first statement (older Rails sets the isolation so),
    // or by a later statement of its first request (a replica refused that one: 0A000 "cannot
    // set transaction read-write mode during recovery").
    for first in [
        "SET TRANSACTION READ WRITE",
        "set local transaction_read_only = off",
        "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        "SET LOCAL transaction_isolation = 'serializable'",
        "SET LOCAL statement_timeout = '5s'; SET TRANSACTION READ WRITE",
        "SET LOCAL lock_timeout = '1s'; SET LOCAL transaction_read_only = off",
        "SET CONSTRAINTS ALL DEFERRED; SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
    ] {
        execute(&c, "BEGIN").await;
        execute(&c, first).await;
        let seen = port(&c, "SELECT inet_server_port()").await;
        execute(&c, "COMMIT").await;
        assert_eq!(seen, p.primary, "BEGIN; {first} ran on {}", p.name(seen));
    }
    execute(&c, "RESET default_transaction_read_only").await;
    // A BEGIN the server refuses is answered by the server (pooling.rs checks what follows).
    for bad in [
        "BEGIN ISOLATION LEVEL FOO",
        "BEGIN garbage",
        "BEGIN READ ONLY,",
    ] {
        assert_eq!(error_code(&c, bad).await, "42601", "{bad}");
    }
    // State that pins the client, made first in a read-only transaction: on a replica it would
    // keep the client there, where its writes fail.
    let d = proxy.connect_app().await;
    execute(&d, "BEGIN READ ONLY").await;
    execute(
        &d,
        "DECLARE sy_held CURSOR WITH HOLD FOR SELECT inet_server_port()",
    )
    .await;
    execute(&d, "COMMIT").await;
    let held = port(&d, "FETCH sy_held").await;
    assert_eq!(
        held,
        p.primary,
        "a WITH HOLD cursor ran on {}",
        p.name(held)
    );
    let after = port(&d, "SELECT inet_server_port() FROM pg_class LIMIT 1").await;
    assert_eq!(
        after,
        p.primary,
        "the pinned client reads on {}",
        p.name(after)
    );
}

/// A SET changes no data: a read right after it is not held back for read-your-writes, while
/// a read right after a write is (with the health probe 30 s away and no polling of a
/// replica's replay position, `ryw_wait = 0`, the replicas' last seen positions stay behind
/// the primary's, which the test moves on first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_is_not_a_write_for_read_your_writes() {
    let c = tokio::task::spawn_blocking(shared_schema).await.unwrap();
    let opts = support::proxy::ProxyOptions {
        extra_tables: "[health]\ninterval = \"30s\"\n[routing]\nryw_wait = \"0ms\"\n".into(),
        ..Default::default()
    };
    let proxy = tokio::task::spawn_blocking(move || Proxy::start_with(c, opts))
        .await
        .unwrap();
    wait_cluster_ready(&proxy).await;
    let p = Ports::of(c);
    tokio::task::spawn_blocking(move || {
        c.primary()
            .psql_db(APP_DB, "INSERT INTO routing_t (v) VALUES ('ryw set')")
            .expect("a write on the primary")
    })
    .await
    .unwrap();
    let s = proxy.connect_app().await;
    for sql in ["SET application_name = 'ryw'", "RESET application_name"] {
        execute(&s, sql).await;
        let seen = port(&s, "SELECT inet_server_port()").await;
        assert!(
            p.is_replica(seen),
            "a read right after {sql:?} ran on {}",
            p.name(seen)
        );
    }
    execute(&s, "INSERT INTO routing_t (v) VALUES ('ryw write')").await;
    let r = rows(
        &s,
        "SELECT inet_server_port(), count(*) FROM routing_t WHERE v = 'ryw write'",
    )
    .await;
    let seen: u16 = r[0][0].as_deref().unwrap().parse().unwrap();
    assert_eq!(
        seen,
        p.primary,
        "a read right after a write ran on {}",
        p.name(seen)
    );
    assert_eq!(r[0][1].as_deref(), Some("1"), "the read missed the write");
}

/// A read that changes settings (`SELECT set_config(...)`) runs where a `SET` runs, on the
/// primary: on a replica, a role taken that way would pin the client there and its writes
/// would fail. A text that changes a setting and writes is a write for read-your-writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_that_change_settings_run_on_the_primary() {
    let (_c, proxy, p) = start_proxy("consistency = \"eventual\"").await;
    let s = proxy.connect_app().await;
    let r = rows(
        &s,
        "SELECT set_config('app.sy_route', 'x', false), inet_server_port()",
    )
    .await;
    let seen: u16 = r[0][1].as_deref().unwrap().parse().unwrap();
    assert_eq!(seen, p.primary, "set_config ran on {}", p.name(seen));
    // A role taken so pins the client: on the primary, where it can still write.
    execute(&s, "SELECT set_config('role', current_user, false)").await;
    execute(
        &s,
        "INSERT INTO routing_t (v) VALUES ('role by set_config')",
    )
    .await;
    let seen = port(&s, "SELECT inet_server_port()").await;
    assert_eq!(seen, p.primary, "a pinned client read on {}", p.name(seen));
    // Other reads still go to the replicas.
    let other = proxy.connect_app().await;
    let seen = port(&other, "SELECT inet_server_port()").await;
    assert!(p.is_replica(seen), "a plain read ran on {}", p.name(seen));
}

/// A hot standby refuses every statement of a SERIALIZABLE transaction, reads included
/// (0A000). A session whose transactions default to SERIALIZABLE reads on the primary and never
/// sees that refusal: set by the session itself (`SET`, `SET SESSION CHARACTERISTICS`, startup
/// options), the proxy knows it at once; set as a database default, which the proxy does not
/// see, the first refused read is repeated on the primary and the rest go there directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serializable_sessions_read_on_the_primary() {
    let (c, proxy, p) = start_proxy("consistency = \"eventual\"").await;
    warm_up(&proxy, &p).await;
    let on_primary = |what: &str, seen: u16| {
        assert_eq!(seen, p.primary, "{what} ran on {}", p.name(seen));
    };
    const REFUSED: &str = "switchyard_retries_total{reason=\"serializable\"}";
    let start = proxy.metric(REFUSED).await;
    for set in [
        "SET default_transaction_isolation = 'serializable'",
        "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
    ] {
        let s = proxy.connect_app().await;
        execute(&s, set).await;
        for _ in 0..3 {
            on_primary(set, port(&s, "SELECT inet_server_port()").await);
            execute(&s, "BEGIN READ ONLY").await;
            on_primary(set, port(&s, "SELECT inet_server_port()").await);
            assert_eq!(
                value(&s, "SHOW transaction_isolation").await.as_deref(),
                Some("serializable")
            );
            execute(&s, "COMMIT").await;
        }
        // A level named in the BEGIN overrides the default: a replica can run it.
        execute(&s, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await;
        let seen = port(&s, "SELECT inet_server_port()").await;
        execute(&s, "COMMIT").await;
        assert!(
            p.is_replica(seen),
            "{set}: a REPEATABLE READ read-only transaction ran on {}",
            p.name(seen)
        );
        // Back to the server's default: reads use the replicas again.
        execute(&s, "RESET default_transaction_isolation").await;
        let seen = port(&s, "SELECT inet_server_port()").await;
        assert!(
            p.is_replica(seen),
            "{set}, then RESET: a read ran on {}",
            p.name(seen)
        );
    }

    // Replica connections left defaulting to SERIALIZABLE serve other clients next: the
    // proxy's own cleanup and settings queries must work on them (the log check at the end).
    for _ in 0..4 {
        let s = proxy.connect_app().await;
        execute(&s, "SET default_transaction_isolation = 'serializable'").await;
        execute(&s, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await;
        port(&s, "SELECT inet_server_port()").await;
        execute(&s, "COMMIT").await;
        drop(s);
        let t = proxy.connect_app().await;
        let seen = port(&t, "SELECT inet_server_port()").await;
        assert!(
            p.is_replica(seen),
            "a read after them ran on {}",
            p.name(seen)
        );
    }

    let cs = format!(
        "{} options='-c default_transaction_isolation=serializable'",
        proxy.conn_string(APP_USER, APP_PASSWORD, APP_DB)
    );
    let (s, conn) = within(
        "connect",
        tokio_postgres::connect(&cs, tokio_postgres::NoTls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    for _ in 0..3 {
        on_primary(
            "startup options",
            port(&s, "SELECT inet_server_port()").await,
        );
    }
    assert_eq!(
        proxy.metric(REFUSED).await,
        start,
        "a session's own SERIALIZABLE default is known without asking a replica\n{}",
        routing_metrics(&proxy).await
    );

    // A database default: the proxy learns it from the first refusal, which the client never
    // sees.
    tokio::task::spawn_blocking(move || {
        c.primary()
            .psql("CREATE DATABASE routing_serial OWNER app")
            .and_then(|_| {
                c.primary().psql(
                    "ALTER DATABASE routing_serial SET default_transaction_isolation = 'serializable'",
                )
            })
            .expect("creating a database that defaults to SERIALIZABLE");
        c.wait_replicas_caught_up(Duration::from_secs(60))
            .expect("replicas catching up with the new database");
    })
    .await
    .unwrap();
    let s = proxy
        .connect(APP_USER, APP_PASSWORD, "routing_serial")
        .await;
    for _ in 0..3 {
        on_primary(
            "database default",
            port(&s, "SELECT inet_server_port()").await,
        );
    }
    execute(&s, "BEGIN READ ONLY").await;
    on_primary(
        "database default, read-only transaction",
        port(&s, "SELECT inet_server_port()").await,
    );
    execute(&s, "COMMIT").await;
    let after = proxy.metric(REFUSED).await;
    assert_eq!(
        after,
        start + 1.0,
        "one refused read, repeated on the primary; later reads went there directly\n{}",
        routing_metrics(&proxy).await
    );
    // Setting a replica connection's settings (the startup ones, at least application_name)
    // must work whatever its default isolation level.
    let log = proxy.log();
    assert!(
        !log.contains("the proxy's own query failed"),
        "a settings sync failed on a server:\n{log}"
    );
}

// ---------------------------------------------------------------------------------------------
// hints and session settings

async fn replica_hinted_reads(c: &Client, p: &Ports, what: &str) {
    let mut seen = Vec::new();
    for _ in 0..10 {
        seen.push(port(c, "/* switchyard:replica */ SELECT inet_server_port()").await);
    }
    assert!(
        seen.iter().all(|&x| p.is_replica(x)),
        "replica hint ({what}): {:?}",
        tally(&seen, p)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_hints() {
    let (_c, proxy, p) = start_proxy("").await;
    let c = proxy.connect_app().await;
    replica_hinted_reads(&c, &p, "default consistency").await;
    for _ in 0..10 {
        let got = port(&c, "/* switchyard:primary */ SELECT inet_server_port()").await;
        assert_eq!(got, p.primary, "primary hint ran on {}", p.name(got));
    }
    // Hints work under other consistency levels too.
    execute(&c, "SET switchyard.consistency = eventual").await;
    for _ in 0..5 {
        let got = port(&c, "/* switchyard:primary */ SELECT inet_server_port()").await;
        assert_eq!(
            got,
            p.primary,
            "primary hint (eventual) ran on {}",
            p.name(got)
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    replica_hinted_reads(&c, &p, "eventual").await;
    execute(&c, "SET switchyard.consistency = primary").await;
    replica_hinted_reads(&c, &p, "consistency = primary").await;
    // Extended protocol carries the hint in the Parse (still under consistency = primary,
    // which would send an unhinted read to the primary).
    for _ in 0..5 {
        let got: i32 = within(
            "hinted prepared read",
            c.query_one("/* switchyard:replica */ SELECT inet_server_port()", &[]),
        )
        .await
        .unwrap()
        .get(0);
        assert!(
            p.is_replica(got as u16),
            "replica hint (extended protocol, consistency = primary) ran on {}",
            p.name(got as u16)
        );
    }
    // The unhinted read, for contrast: on the primary.
    let got: i32 = within(
        "unhinted prepared read",
        c.query_one("SELECT inet_server_port()", &[]),
    )
    .await
    .unwrap()
    .get(0);
    assert_eq!(got as u16, p.primary, "consistency = primary, no hint");
    execute(&c, "RESET switchyard.consistency").await;
    for _ in 0..5 {
        let got: i32 = within(
            "hinted prepared read",
            c.query_one("/* switchyard:primary */ SELECT inet_server_port()", &[]),
        )
        .await
        .unwrap()
        .get(0);
        assert_eq!(
            got as u16,
            p.primary,
            "primary hint (extended protocol) ran on {}",
            p.name(got as u16)
        );
    }
}

/// A statement a replica hint sent to a replica although it writes is not run again on the
/// primary when the replica refuses it (25006): the statements before it in the request ran
/// there, and what they did outside the database would be done twice. The client gets the
/// error, as connected to the replica directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hinted_write_a_replica_refuses_is_not_run_again_on_the_primary() {
    let (c, proxy, p) = start_proxy("").await;
    static DBLINK: OnceLock<()> = OnceLock::new();
    tokio::task::spawn_blocking(move || {
        DBLINK.get_or_init(|| {
            c.primary()
                .psql_db(APP_DB, "CREATE EXTENSION IF NOT EXISTS dblink")
                .expect("CREATE EXTENSION dblink");
            c.wait_replicas_caught_up(Duration::from_secs(60))
                .expect("replicas catching up with dblink");
        });
    })
    .await
    .unwrap();
    let client = proxy.connect_app().await;
    let tag = "hinted_dblink";
    let n0 = count_log(tag).await;
    // On the replica: the dblink_exec writes on the primary through its own connection, then
    // the INSERT is refused.
    let sql = format!(
        "/* switchyard:replica */ SELECT dblink_exec('host=127.0.0.1 port={} user={APP_USER} \
         password={APP_PASSWORD} dbname={APP_DB}', 'INSERT INTO routing_log (port, tag) \
         VALUES (0, ''{tag}'')'); INSERT INTO routing_t (v) VALUES ('{tag}')",
        p.primary
    );
    assert_eq!(error_code(&client, &sql).await, "25006");
    assert_eq!(
        count_log(tag).await,
        n0 + 1,
        "the dblink_exec before the refused INSERT ran more than once"
    );
}

/// A statement a replica hint sent there although it writes, whose server session is ended
/// (`pg_terminate_backend`) while it runs: it is not repeated, and the client gets the
/// server's FATAL (57P01) as connected directly, not a connection closed without a word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hinted_write_whose_session_is_terminated_gets_the_fatal() {
    let (c, proxy, _) = start_proxy("").await;
    let client = proxy.connect_app().await;
    let marker = "hinted_fatal_marker";
    let sql = format!(
        "/* switchyard:replica */ SELECT pg_sleep(30) /* {marker} */; \
         INSERT INTO routing_t (v) VALUES ('{marker}')"
    );
    let running = tokio::spawn(async move {
        let r = client.simple_query(&sql).await;
        (client, r)
    });
    // End the statement's server session on whichever replica runs it.
    let deadline = std::time::Instant::now() + OP_TIMEOUT;
    'found: loop {
        for node in c.replicas() {
            let cs = node.conn_string(APP_USER, APP_PASSWORD, APP_DB);
            let (direct, conn) = within(
                "connect",
                tokio_postgres::connect(&cs, tokio_postgres::NoTls),
            )
            .await
            .unwrap();
            tokio::spawn(conn);
            let ended = value(
                &direct,
                &format!(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                     WHERE query LIKE '%{marker} */;%' AND pid <> pg_backend_pid()"
                ),
            )
            .await;
            if ended.as_deref() != Some("0") {
                break 'found;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the hinted statement never ran on a replica"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (client, r) = within("the terminated statement", running).await.unwrap();
    let e = r.expect_err("a statement whose session was terminated cannot succeed");
    assert_eq!(
        e.code().map(|s| s.code()),
        Some("57P01"),
        "the client should get the server's FATAL: {e} ({e:?})"
    );
    // (The client's connection task notices the end a moment after the error.)
    let deadline = std::time::Instant::now() + OP_TIMEOUT;
    while !client.is_closed() {
        assert!(
            std::time::Instant::now() < deadline,
            "the session ends with its server's"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_switchyard_route() {
    let (_c, proxy, p) = start_proxy("").await;
    let c = proxy.connect_app().await;
    assert_eq!(
        value(&c, "SHOW switchyard.route").await.as_deref(),
        Some("auto")
    );

    execute(&c, "SET switchyard.route = primary").await;
    assert_eq!(
        value(&c, "SHOW switchyard.route").await.as_deref(),
        Some("primary")
    );
    for _ in 0..10 {
        let got = port(&c, "SELECT inet_server_port()").await;
        assert_eq!(
            got,
            p.primary,
            "route = primary: a read ran on {}",
            p.name(got)
        );
    }
    let got: i32 = c
        .query_one("SELECT inet_server_port()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(got as u16, p.primary, "route = primary, extended protocol");

    // route = replica, under consistency = primary (which alone would send reads to the
    // primary): the route wins.
    execute(&c, "SET switchyard.consistency = primary").await;
    execute(&c, "SET switchyard.route TO 'replica'").await;
    assert_eq!(
        value(&c, "SHOW switchyard.route").await.as_deref(),
        Some("replica")
    );
    let mut seen = Vec::new();
    for _ in 0..10 {
        seen.push(port(&c, "SELECT inet_server_port()").await);
    }
    let got: i32 = within(
        "read, route = replica",
        c.query_one("SELECT inet_server_port()", &[]),
    )
    .await
    .unwrap()
    .get(0);
    seen.push(got as u16);
    assert!(
        seen.iter().all(|&x| p.is_replica(x)),
        "route = replica (consistency = primary): {:?}",
        tally(&seen, &p)
    );
    execute(&c, "RESET switchyard.consistency").await;

    execute(&c, "SET switchyard.route = auto").await;
    assert_eq!(
        value(&c, "SHOW switchyard.route").await.as_deref(),
        Some("auto")
    );
    let mut seen = Vec::new();
    for _ in 0..20 {
        seen.push(port(&c, "SELECT inet_server_port()").await);
    }
    assert_spread_over_replicas("route = auto", &seen, &p);
    let w = port(
        &c,
        "INSERT INTO routing_t (v) VALUES ('auto') RETURNING inet_server_port()",
    )
    .await;
    assert_eq!(w, p.primary, "route = auto: a write ran on {}", p.name(w));

    // RESET goes back to auto.
    execute(&c, "SET switchyard.route = primary").await;
    execute(&c, "RESET switchyard.route").await;
    assert_eq!(
        value(&c, "SHOW switchyard.route").await.as_deref(),
        Some("auto")
    );

    // A bad value is refused with 22023 and changes nothing.
    execute(&c, "SET switchyard.route = primary").await;
    assert_eq!(
        error_code(&c, "SET switchyard.route = sideways").await,
        "22023"
    );
    assert_eq!(
        value(&c, "SHOW switchyard.route").await.as_deref(),
        Some("primary"),
        "a refused SET must not change the route"
    );
    let got = port(&c, "SELECT inet_server_port()").await;
    assert_eq!(got, p.primary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_switchyard_consistency() {
    let (_c, proxy, p) = start_proxy("").await;
    let c = proxy.connect_app().await;
    assert_eq!(
        value(&c, "SHOW switchyard.consistency").await.as_deref(),
        Some("read_your_writes"),
        "the default consistency"
    );
    for v in ["eventual", "primary", "read_your_writes"] {
        execute(&c, &format!("SET switchyard.consistency = {v}")).await;
        assert_eq!(
            value(&c, "SHOW switchyard.consistency").await.as_deref(),
            Some(v)
        );
    }
    execute(&c, "SET switchyard.consistency = 'primary'").await;
    for _ in 0..10 {
        let got = port(&c, "SELECT inet_server_port()").await;
        assert_eq!(
            got,
            p.primary,
            "consistency = primary: a read ran on {}",
            p.name(got)
        );
    }
    execute(&c, "SET switchyard.consistency = eventual").await;
    let mut seen = Vec::new();
    for _ in 0..20 {
        seen.push(port(&c, "SELECT inet_server_port()").await);
    }
    assert_spread_over_replicas("consistency = eventual", &seen, &p);

    for bad in [
        "SET switchyard.consistency = strong",
        "SET switchyard.consistency = ''",
    ] {
        assert_eq!(error_code(&c, bad).await, "22023", "{bad}");
    }
    assert_eq!(
        value(&c, "SHOW switchyard.consistency").await.as_deref(),
        Some("eventual"),
        "a refused SET must not change the consistency"
    );
    // The session is still usable after the errors.
    let got = port(&c, "SELECT inet_server_port()").await;
    assert!(p.is_replica(got));

    // Per session: another connection has the default.
    let other = proxy.connect_app().await;
    assert_eq!(
        value(&other, "SHOW switchyard.consistency")
            .await
            .as_deref(),
        Some("read_your_writes")
    );
}

/// `SET LOCAL switchyard.*` is refused (0A000): the proxy's settings last for the session, and
/// taken as `SET` it outlived the transaction that asked for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_local_switchyard_is_refused() {
    let (_c, proxy, p) = start_proxy("consistency = \"eventual\"").await;
    let c = proxy.connect_app().await;
    for sql in [
        "SET LOCAL switchyard.route = primary",
        "set local switchyard.consistency to 'primary'",
        "SET LOCAL switchyard.route TO DEFAULT",
    ] {
        assert_eq!(error_code(&c, sql).await, "0A000", "{sql}");
    }
    assert_eq!(
        value(&c, "SHOW switchyard.route").await.as_deref(),
        Some("auto")
    );
    assert_eq!(
        value(&c, "SHOW switchyard.consistency").await.as_deref(),
        Some("eventual")
    );
    let on = port(&c, "SELECT inet_server_port()").await;
    assert!(
        p.is_replica(on),
        "a read after the refusal ran on {}",
        p.name(on)
    );
}

/// `primary_reads = "include"`: the primary is one of the read targets, with the replicas
/// (with the default, "fallback", reads stay off it while a replica is eligible: the tests
/// above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_reads_include_puts_the_primary_among_the_read_targets() {
    let (_c, proxy, p) =
        start_proxy("consistency = \"eventual\"\nprimary_reads = \"include\"").await;
    let c = proxy.connect_app().await;
    let mut seen = Vec::new();
    let all =
        |seen: &[u16]| seen.contains(&p.primary) && p.replicas.iter().all(|r| seen.contains(r));
    for _ in 0..200 {
        seen.push(port(&c, "SELECT inet_server_port()").await);
        if all(&seen) {
            break;
        }
    }
    assert!(
        all(&seen),
        "primary_reads = include: reads should reach the primary and both replicas: {:?}",
        tally(&seen, &p)
    );
    // Writes still go to the primary only.
    for _ in 0..3 {
        let w = port(
            &c,
            "INSERT INTO routing_t (v) VALUES ('include') RETURNING inet_server_port()",
        )
        .await;
        assert_eq!(w, p.primary, "a write ran on {}", p.name(w));
    }
}

/// A role created for the per-user override tests (its own `[[users]]` entry).
const OVERRIDE_USER: &str = "routing_override";
const OVERRIDE_PASSWORD: &str = "override-pw";

/// Creates [`OVERRIDE_USER`] in the shared cluster once, replicated before use.
fn override_user() -> &'static LocalCluster {
    static USER: OnceLock<()> = OnceLock::new();
    let c = shared_schema();
    USER.get_or_init(|| {
        c.primary()
            .psql(&format!(
                "SET password_encryption = 'scram-sha-256';
                 CREATE ROLE {OVERRIDE_USER} LOGIN PASSWORD '{OVERRIDE_PASSWORD}';"
            ))
            .expect("creating the override role");
        c.wait_replicas_caught_up(Duration::from_secs(60))
            .expect("replicas catching up with the override role");
    });
    c
}

/// `[[users]] consistency` overrides `[routing] consistency` for that user's sessions (as
/// their default: `SET switchyard.consistency` still changes it); other users keep the
/// proxy's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_consistency_override() {
    tokio::task::spawn_blocking(override_user).await.unwrap();
    let (_c, proxy, p) = start_proxy(&format!(
        "consistency = \"eventual\"\n\n[[users]]\nname = \"{OVERRIDE_USER}\"\n\
         password = \"{OVERRIDE_PASSWORD}\"\nconsistency = \"primary\"\n"
    ))
    .await;
    let u = within(
        "connect",
        proxy.connect(OVERRIDE_USER, OVERRIDE_PASSWORD, APP_DB),
    )
    .await;
    assert_eq!(
        value(&u, "SHOW switchyard.consistency").await.as_deref(),
        Some("primary"),
        "the user's own default"
    );
    let mut seen = Vec::new();
    for _ in 0..10 {
        seen.push(port(&u, "SELECT inet_server_port()").await);
        let fresh = within(
            "connect",
            proxy.connect(OVERRIDE_USER, OVERRIDE_PASSWORD, APP_DB),
        )
        .await;
        seen.push(port(&fresh, "SELECT inet_server_port()").await);
    }
    assert!(
        seen.iter().all(|&x| x == p.primary),
        "consistency = primary for {OVERRIDE_USER}: its reads should all run on the primary: \
         {:?}",
        tally(&seen, &p)
    );
    // The app user keeps [routing] consistency = eventual.
    let app = proxy.connect_app().await;
    assert_eq!(
        value(&app, "SHOW switchyard.consistency").await.as_deref(),
        Some("eventual")
    );
    let got = many_reads(&proxy, "SELECT inet_server_port()").await;
    assert_spread_over_replicas("another user, consistency = eventual", &got, &p);
    // A session of the user may still choose otherwise.
    execute(&u, "SET switchyard.consistency = eventual").await;
    let mut seen = Vec::new();
    for _ in 0..20 {
        seen.push(port(&u, "SELECT inet_server_port()").await);
    }
    assert_spread_over_replicas("the override user after SET eventual", &seen, &p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchyard_settings_never_reach_postgres() {
    // Statements of OTHER_USER are logged by every node (log_statement = all for that role
    // only), so the servers' logs show whatever the proxy sent them.
    let c = tokio::task::spawn_blocking(|| {
        let c = shared_schema();
        c.primary()
            .psql(&format!(
                "ALTER ROLE {OTHER_USER} SET log_statement = 'all'"
            ))
            .expect("ALTER ROLE ... SET log_statement");
        c.wait_replicas_caught_up(Duration::from_secs(30))
            .expect("replicas catching up");
        c
    })
    .await
    .unwrap();
    let extra = format!("{HEALTH}\n[routing]\nconsistency = \"eventual\"\n");
    let proxy = tokio::task::spawn_blocking(move || Proxy::start(c, &extra))
        .await
        .unwrap();
    wait_cluster_ready(&proxy).await;
    let p = Ports::of(c);
    let client = proxy.connect(OTHER_USER, OTHER_PASSWORD, APP_DB).await;
    // Logged by the servers: proves logging works for this role.
    let marker = format!("routing_marker_{}", std::process::id());
    let got = port(
        &client,
        &format!("/* switchyard:primary */ SELECT inet_server_port(), '{marker}'"),
    )
    .await;
    assert_eq!(got, p.primary);

    let commands = [
        "SET switchyard.consistency = eventual",
        "SET switchyard.route = replica",
        "SHOW switchyard.route",
        "SHOW switchyard.consistency",
        "SET switchyard.route TO primary",
        "RESET switchyard.route",
        "set switchyard.consistency to 'read_your_writes'",
        "RESET switchyard.consistency",
    ];
    for sql in commands {
        rows(&client, sql).await;
    }
    // An unknown switchyard.* name: the proxy refuses it (PostgreSQL would accept it as a
    // placeholder setting).
    let code = error_code(&client, "SET switchyard.nonsense = 1").await;
    assert_eq!(code, "42704", "SET switchyard.<unknown>");
    // Bad values and commands inside a transaction are answered by the proxy too.
    assert_eq!(
        error_code(&client, "SET switchyard.route = nowhere").await,
        "22023"
    );
    execute(&client, "BEGIN").await;
    execute(&client, "SET switchyard.consistency = primary").await;
    let got = port(&client, "SELECT inet_server_port()").await;
    execute(&client, "SET switchyard.route = replica").await;
    execute(&client, "COMMIT").await;
    assert_eq!(
        got, p.primary,
        "a read-write transaction runs on the primary"
    );

    // The server sessions the proxy used know nothing of switchyard.* either.
    let probe = "SELECT inet_server_port(), current_setting('switchyard.route', true), \
                 current_setting('switchyard.consistency', true), \
                 current_setting('switchyard.nonsense', true)";
    let mut seen = Vec::new();
    for route in ["replica", "primary"] {
        execute(&client, &format!("SET switchyard.route = {route}")).await;
        for _ in 0..8 {
            let r = rows(&client, probe).await;
            let port: u16 = r[0][0].as_deref().unwrap().parse().unwrap();
            seen.push(port);
            assert!(
                r[0][1..]
                    .iter()
                    .all(|v| v.as_deref().unwrap_or("").is_empty()),
                "a switchyard.* setting reached PostgreSQL on {}: {:?}",
                p.name(port),
                r[0]
            );
        }
    }
    assert!(seen.contains(&p.primary) && seen.iter().any(|&x| p.is_replica(x)));
    // RESET ALL and DISCARD ALL put them back too, as every session setting (a pool that
    // runs DISCARD ALL on a returned connection must not hand on a route to the replicas).
    execute(&client, "RESET switchyard.consistency").await;
    let default_consistency = value(&client, "SHOW switchyard.consistency").await;
    for reset in ["RESET ALL", "DISCARD ALL", "reset /* x */ all"] {
        execute(&client, "SET switchyard.route = replica").await;
        execute(&client, "SET switchyard.consistency = primary").await;
        execute(&client, reset).await;
        assert_eq!(
            value(&client, "SHOW switchyard.route").await.as_deref(),
            Some("auto"),
            "{reset}"
        );
        assert_eq!(
            value(&client, "SHOW switchyard.consistency").await,
            default_consistency,
            "{reset}"
        );
    }
    drop(client);

    // The logs: the marker is there (logging works), no SET/RESET/SHOW switchyard.* is.
    let logs: Vec<(String, String)> = c
        .nodes()
        .iter()
        .map(|n| {
            let text = std::fs::read(n.log_file())
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            (n.name().to_string(), text)
        })
        .collect();
    assert!(
        logs.iter().any(|(_, l)| l.contains(&marker)),
        "the marker statement should be in the primary's log (log_statement = all)"
    );
    for (name, log) in &logs {
        let leaked: Vec<&str> = log
            .lines()
            .filter(|l| {
                let l = l.to_ascii_lowercase();
                [
                    "set switchyard.",
                    "reset switchyard.",
                    "show switchyard.",
                    "set local switchyard.",
                ]
                .iter()
                .any(|k| l.contains(k))
            })
            .collect();
        assert!(
            leaked.is_empty(),
            "switchyard.* commands reached PostgreSQL ({name}):\n{}",
            leaked.join("\n")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// extended protocol

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_reads_and_writes() {
    let (_c, proxy, p) = start_proxy("consistency = \"eventual\"").await;
    let c = proxy.connect_app().await;

    // Unprepared (tokio-postgres prepares an unnamed-then-named statement per call).
    let mut seen = Vec::new();
    for _ in 0..READS / 2 {
        let r: i32 = within(
            "query_one",
            c.query_one("SELECT inet_server_port() WHERE $1::int > 0", &[&1i32]),
        )
        .await
        .unwrap()
        .get(0);
        seen.push(r as u16);
    }
    // One prepared statement executed many times (it must follow the session to each replica).
    let st = within("prepare", c.prepare("SELECT inet_server_port(), $1::text"))
        .await
        .unwrap();
    for i in 0..READS / 2 {
        let r = within("query_one", c.query_one(&st, &[&format!("x{i}")]))
            .await
            .unwrap();
        let port: i32 = r.get(0);
        let echo: String = r.get(1);
        assert_eq!(echo, format!("x{i}"));
        seen.push(port as u16);
    }
    assert_spread_over_replicas("extended protocol reads", &seen, &p);

    // Writes, prepared or not, go to the primary.
    let before = proxy.metric(READ_ONLY_VIOLATIONS).await;
    let ins = within(
        "prepare insert",
        c.prepare("INSERT INTO routing_t (v) VALUES ($1) RETURNING inet_server_port()"),
    )
    .await
    .unwrap();
    for i in 0..10 {
        let r: i32 = within("insert", c.query_one(&ins, &[&format!("ext{i}")]))
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            r as u16,
            p.primary,
            "prepared INSERT ran on {}",
            p.name(r as u16)
        );
    }
    let writes = [
        "SELECT inet_server_port() FROM routing_t WHERE id > $1 ORDER BY id LIMIT 1 FOR UPDATE",
        "SELECT inet_server_port() FROM routing_t WHERE id > $1 ORDER BY id LIMIT 1 FOR NO KEY UPDATE",
        "SELECT inet_server_port() WHERE nextval('routing_seq') > $1::int",
        "WITH x AS (INSERT INTO routing_t (v) VALUES ('extcte') RETURNING id) SELECT inet_server_port() FROM x WHERE id > $1",
    ];
    for sql in writes {
        for _ in 0..3 {
            let r: i32 = within(sql, c.query_one(sql, &[&0i32]))
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .get(0);
            assert_eq!(r as u16, p.primary, "{sql} ran on {}", p.name(r as u16));
        }
    }
    let n = within(
        "execute",
        c.execute(
            "UPDATE routing_t SET v = v WHERE v = $1",
            &[&"no such value"],
        ),
    )
    .await
    .unwrap();
    assert_eq!(n, 0);
    assert_eq!(
        proxy.metric(READ_ONLY_VIOLATIONS).await,
        before,
        "extended-protocol writes should be routed to the primary, not rescued"
    );
    // Reads still go to replicas afterwards (eventual).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r: i32 = c
        .query_one("SELECT inet_server_port()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(p.is_replica(r as u16));
}

// ---------------------------------------------------------------------------------------------
// a "read" that writes

/// Gives the proxy's pools a server connection on each replica (with the settings every
/// tokio-postgres client starts with), so later requests need no settings sync first.
async fn warm_up(proxy: &Proxy, p: &Ports) {
    let c = proxy.connect_app().await;
    let mut seen = Vec::new();
    for _ in 0..40 {
        seen.push(port(&c, "SELECT inet_server_port()").await);
        if p.replicas.iter().all(|r| seen.contains(r)) {
            return;
        }
    }
    panic!("reads never reached both replicas: {:?}", tally(&seen, p));
}

/// A connection of the app user straight to the shared cluster's primary (not through the
/// proxy).
async fn direct_primary() -> Client {
    let cs = shared_cluster()
        .primary()
        .conn_string(APP_USER, APP_PASSWORD, APP_DB);
    let (direct, conn) = within(
        "connect",
        tokio_postgres::connect(&cs, tokio_postgres::NoTls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    direct
}

/// Rows of routing_log with `tag`, read directly on the primary (not through the proxy).
async fn count_log(tag: &str) -> i64 {
    let direct = direct_primary().await;
    value(
        &direct,
        &format!("SELECT count(*) FROM routing_log WHERE tag = '{tag}'"),
    )
    .await
    .unwrap()
    .parse()
    .unwrap()
}

/// Eventual consistency, with the schema's functions that write (`routing_writer`) or need
/// the primary (`routing_wal_position`) listed as reads: volatile, they would run on the
/// primary; listed, they reach a replica, which refuses them: the rescue paths.
const RESCUE: &str =
    "consistency = \"eventual\"\nread_functions = [\"routing_writer\", \"routing_wal_position\"]";

/// A read that calls one of the database's own volatile functions runs on the primary (it may
/// write, or keep session state in the server process); one calling a `STABLE` function runs
/// on a replica, unless that function takes a session advisory lock (PostgreSQL lets a
/// `STABLE` function call one): the lock is the session's, held on the primary, where the
/// client's own unlock finds it and other sessions wait for it. Functions created directly on
/// the primary are learnt from the catalog; one created through the proxy counts at once (its
/// session's next read may call it: with eventual consistency, on a replica that has not
/// replayed it yet, it would not even exist).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_calling_volatile_functions_run_on_the_primary() {
    let c = tokio::task::spawn_blocking(shared_schema).await.unwrap();
    tokio::task::spawn_blocking(move || {
        c.primary()
            .psql_db(
                APP_DB,
                "SET ROLE app;
                 CREATE OR REPLACE FUNCTION routing_volatile_port() RETURNS int LANGUAGE sql
                     AS 'SELECT inet_server_port()';
                 CREATE OR REPLACE FUNCTION routing_stable_port() RETURNS int STABLE
                     LANGUAGE sql AS 'SELECT inet_server_port()';
                 CREATE OR REPLACE FUNCTION routing_stable_temp() RETURNS int STABLE
                     LANGUAGE plpgsql AS $$DECLARE temp int; BEGIN
                     EXECUTE format('SELECT %s', 'inet_server_port()') INTO temp;
                     RETURN temp; END$$;
                 CREATE OR REPLACE FUNCTION routing_stable_lock() RETURNS int STABLE
                     LANGUAGE sql AS 'SELECT inet_server_port() FROM pg_advisory_lock(4343)';",
            )
            .expect("creating functions");
        c.wait_replicas_caught_up(Duration::from_secs(60))
            .expect("replicas catching up")
    })
    .await
    .unwrap();
    let (_c, proxy, p) = start_proxy("consistency = \"eventual\"").await;
    let client = proxy.connect_app().await;
    execute(&client, "SELECT 1").await;
    for _ in 0..4 {
        let got = port(&client, "SELECT routing_volatile_port()").await;
        assert_eq!(got, p.primary, "a volatile function ran on {}", p.name(got));
        for f in ["routing_stable_port", "routing_stable_temp"] {
            let got = port(&client, &format!("SELECT {f}()")).await;
            assert!(p.is_replica(got), "{f}() ran on {}", p.name(got));
        }
    }
    let r = within(
        "extended",
        client.query_one("SELECT routing_volatile_port(), $1::int", &[&1i32]),
    )
    .await
    .unwrap();
    let got = r.get::<_, i32>(0) as u16;
    assert_eq!(got, p.primary, "extended protocol: ran on {}", p.name(got));

    execute(&client, "DROP FUNCTION IF EXISTS routing_made_here()").await;
    execute(
        &client,
        "CREATE FUNCTION routing_made_here() RETURNS int LANGUAGE sql AS 'SELECT inet_server_port()'",
    )
    .await;
    let got = port(&client, "SELECT routing_made_here()").await;
    assert_eq!(
        got,
        p.primary,
        "a function created through the proxy ran on {}",
        p.name(got)
    );
    execute(&client, "DROP FUNCTION routing_made_here()").await;

    let locker = proxy.connect_app().await;
    let got = port(&locker, "SELECT routing_stable_lock()").await;
    assert_eq!(
        got,
        p.primary,
        "the locking function ran on {}",
        p.name(got)
    );
    let other = direct_primary().await;
    assert_eq!(
        value(&other, "SELECT pg_try_advisory_lock(4343)")
            .await
            .as_deref(),
        Some("f"),
        "another session on the primary took the lock the client holds"
    );
    assert_eq!(
        value(&locker, "SELECT pg_advisory_unlock(4343)")
            .await
            .as_deref(),
        Some("t"),
        "the client's unlock did not find its lock"
    );
}

/// A read that turns out to write only after more of its rows reached the client than can be
/// held back (past 256 kB) cannot be repeated: the client gets the replica's 25006, as
/// connected to it. But the statement is remembered, and runs on the primary from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_refused_too_late_to_repeat_runs_on_the_primary_next_time() {
    let (_c, proxy, p) = start_proxy(RESCUE).await;
    warm_up(&proxy, &p).await;
    let c = proxy.connect_app().await;
    let n0 = count_log("late").await;
    let sql = "SELECT repeat('x', 1000) FROM generate_series(1, 400) \
               UNION ALL SELECT routing_writer('late')::text";
    assert_eq!(error_code(&c, sql).await, "25006");
    for _ in 0..2 {
        let r = rows(&c, sql).await;
        assert_eq!(r.len(), 401, "every row, the writer's last");
        let got: u16 = r[400][0].as_deref().unwrap().parse().unwrap();
        assert_eq!(got, p.primary, "ran on {}", p.name(got));
    }
    assert_eq!(count_log("late").await, n0 + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_that_writes_is_rescued_on_the_primary() {
    let (_c, proxy, p) = start_proxy(RESCUE).await;
    warm_up(&proxy, &p).await;
    let c = proxy.connect_app().await;
    let before = proxy.metric(READ_ONLY_VIOLATIONS).await;
    let n0 = count_log("simple").await;

    // The classifier cannot know routing_writer(tag) writes: a replica refuses it with 25006
    // and the proxy runs it again on the primary; the client sees only the success.
    let got = port(&c, "SELECT routing_writer('simple')").await;
    assert_eq!(
        got,
        p.primary,
        "the writing function's result comes from {}",
        p.name(got)
    );
    let after = proxy.metric(READ_ONLY_VIOLATIONS).await;
    assert!(
        after >= before + 1.0,
        "{READ_ONLY_VIOLATIONS} should have increased: {before} -> {after}\n{}",
        routing_metrics(&proxy).await
    );
    assert_eq!(
        count_log("simple").await,
        n0 + 1,
        "the function ran once with effect"
    );

    // Remembered: the same statement goes to the primary at once next time.
    for _ in 0..3 {
        let got = port(&c, "SELECT routing_writer('simple')").await;
        assert_eq!(got, p.primary);
    }
    let again = proxy.metric(READ_ONLY_VIOLATIONS).await;
    assert_eq!(
        again, after,
        "a statement that turned out to write should be remembered and sent to the primary"
    );
    assert_eq!(count_log("simple").await, n0 + 4);

    // On fresh connections too, with other statement texts (each rescued once).
    for i in 0..3 {
        let fresh = proxy.connect_app().await;
        let got = port(
            &fresh,
            &format!("SELECT routing_writer('simple') AS fresh{i}"),
        )
        .await;
        assert_eq!(got, p.primary);
    }
    assert_eq!(count_log("simple").await, n0 + 7);
}

/// A raw-protocol session of the app user through `proxy`, logged in.
async fn raw_app_session(proxy: &Proxy) -> support::raw::Session {
    support::raw::login_app(&proxy.addr(), &[]).await
}

/// The sum of every sample of the family whose lines begin with `prefix`.
async fn metric_sum(proxy: &Proxy, prefix: &str) -> f64 {
    let (_, body) = within("GET /metrics", proxy.http_get("/metrics")).await;
    body.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A read a replica refused (25006) and the primary ran is one transaction, counted where it
/// ran, and no server error: the client saw neither the replica's error nor its
/// ReadyForQuery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rescued_read_counts_one_transaction_and_no_server_error() {
    let (_c, proxy, p) = start_proxy(RESCUE).await;
    warm_up(&proxy, &p).await;
    let c = proxy.connect_app().await;
    let errors = "switchyard_server_errors_total{";
    let transactions = "switchyard_transactions_total{";
    let before = (
        proxy.metric(READ_ONLY_VIOLATIONS).await,
        metric_sum(&proxy, errors).await,
        metric_sum(&proxy, transactions).await,
    );
    let got = port(&c, "SELECT routing_writer('counted once')").await;
    assert_eq!(got, p.primary, "answered by {}", p.name(got));
    let after = (
        proxy.metric(READ_ONLY_VIOLATIONS).await,
        metric_sum(&proxy, errors).await,
        metric_sum(&proxy, transactions).await,
    );
    assert_eq!(
        (after.0 - before.0, after.1 - before.1, after.2 - before.2),
        (1.0, 0.0, 1.0),
        "(retries, server errors, transactions) for one rescued read\n{}",
        routing_metrics(&proxy).await
    );
}

/// A read only the primary can answer, which the classifier cannot know (a function calling
/// `pg_current_wal_lsn()`; a hot standby says 55000, "recovery is in progress"): the client gets
/// the primary's answer, and the statement goes there directly afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_the_primary_can_answer_is_rescued_on_the_primary() {
    let (_c, proxy, p) = start_proxy(RESCUE).await;
    warm_up(&proxy, &p).await;
    let c = proxy.connect_app().await;
    let sql = "SELECT inet_server_port(), routing_wal_position()";
    let before = proxy.metric(READ_ONLY_VIOLATIONS).await;
    for _ in 0..4 {
        let got = port(&c, sql).await;
        assert_eq!(got, p.primary, "{sql} answered by {}", p.name(got));
    }
    assert_eq!(
        proxy.metric(READ_ONLY_VIOLATIONS).await,
        before + 1.0,
        "refused once by a replica, then remembered\n{}",
        routing_metrics(&proxy).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_that_writes_is_rescued_on_the_primary_extended_protocol() {
    let (_c, proxy, p) = start_proxy(RESCUE).await;
    warm_up(&proxy, &p).await;
    let c = proxy.connect_app().await;
    let before = proxy.metric(READ_ONLY_VIOLATIONS).await;
    let n0 = count_log("extended").await;
    for i in 0..3 {
        let r = within(
            "extended writer",
            c.query_one("SELECT routing_writer('extended'), $1::int", &[&i]),
        )
        .await
        .unwrap_or_else(|e| panic!("extended-protocol read that writes failed: {e} ({e:?})"));
        let got: i32 = r.get(0);
        assert_eq!(got as u16, p.primary, "ran on {}", p.name(got as u16));
        assert_eq!(r.get::<_, i32>(1), i);
    }
    let after = proxy.metric(READ_ONLY_VIOLATIONS).await;
    assert!(
        after >= before + 1.0,
        "{READ_ONLY_VIOLATIONS} should have increased: {before} -> {after}\n{}",
        routing_metrics(&proxy).await
    );
    assert_eq!(
        count_log("extended").await,
        n0 + 3,
        "each call ran once with effect"
    );
    // A cursor-style batch with a Flush before its Sync, all in one write: the client waits
    // for the whole answer, which is held back as without the Flush, and the read is rescued
    // (before, the Flush let the replica's 25006 through).
    let mut s = raw_app_session(&proxy).await;
    let refusals = proxy.metric(READ_ONLY_VIOLATIONS).await;
    let mut out = bytes::BytesMut::new();
    raw::parse_bind_execute("SELECT routing_writer('extended') AS flushed", &mut out);
    postgres_protocol::message::frontend::flush(&mut out);
    postgres_protocol::message::frontend::sync(&mut out);
    s.raw.send(&out).await.unwrap();
    let r = s.raw.read_result("a read that writes, with a Flush").await;
    assert!(r.error.is_none(), "a Flush before the Sync: {:?}", r.error);
    let got: u16 = r.scalar().parse().expect("a port");
    assert_eq!(got, p.primary, "with a Flush: ran on {}", p.name(got));
    assert_eq!(
        proxy.metric(READ_ONLY_VIOLATIONS).await,
        refusals + 1.0,
        "with a Flush: refused by a replica once, then run on the primary"
    );
    assert_eq!(count_log("extended").await, n0 + 4, "the call with a Flush");
    // The connection is still in a sane state (reads right after a write are the subject of
    // eventual_reads_right_after_a_write_go_to_replicas).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r: i32 = c
        .query_one("SELECT inet_server_port()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(p.is_replica(r as u16));
}

/// The port in the first column of a simple query's first row, or the query's error.
async fn simple_port(c: &Client, sql: &str) -> Result<u16, tokio_postgres::Error> {
    within(sql, c.simple_query(sql)).await.map(|m| {
        text_rows(m)[0][0]
            .as_deref()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{sql}: first column is not a port"))
    })
}

/// The same rescue when the proxy first has to bring the replica connection's settings in
/// line with the client's: on a brand-new proxy (first server connection of the pool), and
/// for a client that changed a setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_that_writes_is_rescued_when_the_server_connection_needs_a_settings_sync() {
    let (_c, proxy, p) = start_proxy(RESCUE).await;
    let before = proxy.metric(READ_ONLY_VIOLATIONS).await;
    let n0 = count_log("sync").await;
    let mut failures = Vec::new();
    let mut wrong = Vec::new();
    let mut check = |what: String, r: Result<u16, tokio_postgres::Error>| match r {
        Ok(at) if at == p.primary => {}
        Ok(at) => wrong.push(format!("{what}: answered by {}", p.name(at))),
        Err(e) => failures.push(format!("{what}: {:?} {e}", e.code().map(|c| c.code()))),
    };

    // 1. The very first statement through a new proxy (its replica pools are empty).
    let c = proxy.connect_app().await;
    check(
        "first statement through a new proxy".into(),
        simple_port(&c, "SELECT routing_writer('sync') AS cold").await,
    );

    // 2. A client whose session settings differ from the pooled connections'. Every
    // statement text is new, so none is known to need the primary yet: each reaches a
    // replica, is refused there and is rerun on the primary.
    warm_up(&proxy, &p).await;
    for i in 0..4 {
        let c = proxy.connect_app().await;
        execute(&c, &format!("SET work_mem = '{}kB'", 4096 + i)).await;
        // Let the proxy finish with the primary (settings read-back) first.
        tokio::time::sleep(Duration::from_millis(200)).await;
        check(
            format!("after SET work_mem (attempt {i})"),
            simple_port(&c, &format!("SELECT routing_writer('sync') AS synced{i}")).await,
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let r = within(
            "extended writer",
            c.query_one(
                &format!("SELECT routing_writer('sync'), $1::int AS extended{i}"),
                &[&i],
            ),
        )
        .await;
        check(
            format!("after SET work_mem, extended protocol (attempt {i})"),
            r.map(|r| r.get::<_, i32>(0) as u16),
        );
    }
    assert!(
        failures.is_empty() && wrong.is_empty(),
        "a read that writes must be rerun on the primary transparently:\n{}",
        failures
            .iter()
            .chain(&wrong)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Each of the 9 statements reached a replica and was rescued, running once with effect.
    let after = proxy.metric(READ_ONLY_VIOLATIONS).await;
    assert_eq!(
        after,
        before + 9.0,
        "each statement should have been refused by a replica and rescued once\n{}",
        routing_metrics(&proxy).await
    );
    assert_eq!(
        count_log("sync").await,
        n0 + 9,
        "each call ran once with effect"
    );
}

// ---------------------------------------------------------------------------------------------
// pinned sessions

/// After `pin_sql`, every read in the session runs on the primary, on the same server
/// connection.
async fn check_pinned(proxy: &Proxy, p: &Ports, pin_sql: &str, check_sql: Option<&str>) {
    let c = proxy.connect_app().await;
    // Unpinned reads go to replicas first (eventual).
    let first = port(&c, "SELECT inet_server_port()").await;
    assert!(p.is_replica(first), "{pin_sql}: before pinning");
    execute(&c, pin_sql).await;
    let mut seen = Vec::new();
    let mut pids = Vec::new();
    for i in 0..10 {
        let r = rows(&c, "SELECT inet_server_port(), pg_backend_pid()").await;
        seen.push(r[0][0].as_deref().unwrap().parse::<u16>().unwrap());
        pids.push(r[0][1].clone());
        if i % 3 == 0 {
            if let Some(sql) = check_sql {
                rows(&c, sql).await;
            }
        }
    }
    for _ in 0..3 {
        let r: i32 = c
            .query_one("SELECT inet_server_port()", &[])
            .await
            .unwrap()
            .get(0);
        seen.push(r as u16);
    }
    assert!(
        seen.iter().all(|&x| x == p.primary),
        "after `{pin_sql}` the session must stay on the primary: {:?}",
        tally(&seen, p)
    );
    assert!(
        pids.iter().all(|x| *x == pids[0]),
        "after `{pin_sql}` the session must keep its server connection: {pids:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temp_table_pins_the_session_to_the_primary() {
    let (_c, proxy, p) = start_proxy("consistency = \"eventual\"").await;
    check_pinned(
        &proxy,
        &p,
        "CREATE TEMP TABLE routing_tmp (a int); INSERT INTO routing_tmp VALUES (1)",
        Some("SELECT count(*) FROM routing_tmp"),
    )
    .await;
    // Other sessions are not pinned.
    let other = proxy.connect_app().await;
    let mut seen = Vec::new();
    for _ in 0..10 {
        seen.push(port(&other, "SELECT inet_server_port()").await);
    }
    assert!(
        seen.iter().all(|&x| p.is_replica(x)),
        "another session should not be pinned: {:?}",
        tally(&seen, &p)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_session_state_pins_the_session_to_the_primary() {
    let (_c, proxy, p) = start_proxy("consistency = \"eventual\"").await;
    check_pinned(&proxy, &p, "SELECT pg_advisory_lock(4242)", None).await;
    check_pinned(&proxy, &p, "LISTEN routing_channel", None).await;
    check_pinned(
        &proxy,
        &p,
        "PREPARE routing_q AS SELECT inet_server_port()",
        Some("EXECUTE routing_q"),
    )
    .await;
    check_pinned(
        &proxy,
        &p,
        "DECLARE routing_cur CURSOR WITH HOLD FOR SELECT g FROM generate_series(1, 100) g",
        Some("FETCH 1 FROM routing_cur"),
    )
    .await;
}

/// A Query a hint sent to a replica that opened a transaction block there ("BEGIN; SELECT a
/// function that writes") and that the replica refused fails as it would on the replica (a
/// hinted request that is not a read is not run again elsewhere: see
/// a_hinted_write_a_replica_refuses_is_not_run_again_on_the_primary); after the client's
/// ROLLBACK, the replica's connection, left in that failed block, is not handed to the next
/// read dirty (one connection per pool here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_read_that_opened_a_block_leaves_no_dirty_replica_connection() {
    let (_c, proxy, p) = start_proxy("consistency = \"eventual\"\n\n[pool]\nsize = 1").await;
    warm_up(&proxy, &p).await;
    let c = proxy.connect_app().await;
    let before = proxy.metric(READ_ONLY_VIOLATIONS).await;
    let sql = "/* switchyard:replica */ BEGIN; SELECT inet_server_port(), routing_writer('block')";
    assert_eq!(error_code(&c, sql).await, "25006");
    assert_eq!(proxy.metric(READ_ONLY_VIOLATIONS).await, before);
    rows(&c, "ROLLBACK").await;
    // Both replicas serve reads again, on their one connection each (ties are broken at
    // random: read until both answered).
    let mut seen = Vec::new();
    for _ in 0..60 {
        seen.push(port(&c, "/* switchyard:replica */ SELECT inet_server_port()").await);
        if p.replicas.iter().all(|r| seen.contains(r)) {
            break;
        }
    }
    assert!(
        p.replicas.iter().all(|r| seen.contains(r)),
        "reads on {:?}",
        tally(&seen, &p)
    );
}

/// A read of a view only the primary fills (pg_prepared_xacts: psycopg2's tpc_recover) runs
/// there, not on a replica, which shows its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_views_only_the_primary_fills_run_there() {
    let (_c, proxy, p) = start_proxy("consistency = \"eventual\"").await;
    warm_up(&proxy, &p).await;
    let c = proxy.connect_app().await;
    for sql in [
        "SELECT inet_server_port(), count(*) FROM pg_prepared_xacts",
        "SELECT inet_server_port(), count(*) FROM pg_stat_replication",
    ] {
        for _ in 0..4 {
            let got = port(&c, sql).await;
            assert_eq!(got, p.primary, "{sql} ran on {}", p.name(got));
        }
    }
}

/// Whether the server is a standby is the primary's answer: a client's session through the
/// proxy is the primary's. A replica answers `transaction_read_only = on`, and drivers asked
/// for a writable server (tokio-postgres, pgjdbc and pgx with `target_session_attrs` or
/// `targetServerType`) check exactly this after connecting and refuse the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn questions_that_tell_a_primary_from_a_standby_are_answered_by_the_primary() {
    let (_c, proxy, p) = start_proxy("consistency = \"eventual\"").await;
    warm_up(&proxy, &p).await;
    let c = proxy.connect_app().await;
    // Reads still spread: the same session's plain reads reach the replicas.
    let reads: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..8 {
            v.push(port(&c, "SELECT inet_server_port()").await);
        }
        v
    };
    assert!(
        reads.iter().any(|&r| p.is_replica(r)),
        "no read reached a replica: {reads:?}"
    );
    for (sql, want) in [
        ("SHOW transaction_read_only", "off"),
        ("show In_Hot_Standby", "off"),
        ("SELECT pg_is_in_recovery()::text", "false"),
        ("SELECT current_setting('transaction_read_only')", "off"),
        ("SELECT current_setting('in_hot_standby')", "off"),
        (
            "SELECT setting FROM pg_settings WHERE name = 'transaction_read_only'",
            "off",
        ),
        (
            "SELECT setting FROM pg_show_all_settings() WHERE name = 'in_hot_standby'",
            "off",
        ),
    ] {
        for _ in 0..8 {
            assert_eq!(value(&c, sql).await.as_deref(), Some(want), "{sql}");
        }
    }
    // The extended protocol's statements are routed the same way.
    let stmt = c.prepare("SHOW transaction_read_only").await.unwrap();
    for _ in 0..8 {
        let row = within("query", c.query_one(&stmt, &[])).await.unwrap();
        assert_eq!(row.get::<_, &str>(0), "off");
    }
    // A driver asked for a writable server accepts every connection.
    for _ in 0..8 {
        let cs = format!(
            "{} target_session_attrs=read-write connect_timeout=10",
            proxy.conn_string(localpg::APP_USER, localpg::APP_PASSWORD, localpg::APP_DB)
        );
        let (client, conn) = within(
            "connect",
            tokio_postgres::connect(&cs, tokio_postgres::NoTls),
        )
        .await
        .unwrap_or_else(|e| panic!("target_session_attrs=read-write refused: {e}"));
        tokio::spawn(conn);
        drop(client);
    }
    // Those that can hide no write (no view, no function of the database's own) run on the
    // primary as reads, not writes (whose commits the user's reads would wait for on the
    // replicas), through the extended protocol too, unnamed and named (tokio-postgres names
    // them).
    let writes = || metric_sum(&proxy, "switchyard_routed_total{reason=\"write\"");
    let answers = || metric_sum(&proxy, "switchyard_routed_total{reason=\"primary_answer\"");
    let (writes_before, answers_before) = (writes().await, answers().await);
    for sql in [
        "SHOW transaction_read_only",
        "SELECT pg_is_in_recovery()::text",
        "SELECT current_setting('in_hot_standby')",
    ] {
        value(&c, sql).await;
    }
    for _ in 0..4 {
        let row = within(
            "query",
            c.query_one("SELECT pg_is_in_recovery(), pg_backend_pid()", &[]),
        )
        .await
        .unwrap();
        assert!(!row.get::<_, bool>(0));
    }
    let mut s = raw_app_session(&proxy).await;
    let mut out = bytes::BytesMut::new();
    raw::parse_bind_execute("SELECT pg_current_wal_lsn()::text", &mut out);
    postgres_protocol::message::frontend::sync(&mut out);
    s.raw.send(&out).await.unwrap();
    let r = s.raw.read_result("an unnamed question").await;
    assert!(r.error.is_none(), "{:?}", r.error);
    assert_eq!(writes().await, writes_before, "questions counted as writes");
    assert!(
        answers().await >= answers_before + 3.0 + 4.0 + 1.0,
        "{} questions routed as such",
        answers().await - answers_before
    );
    // Inside a read-only transaction on a replica, the replica answers (it is the server).
    execute(&c, "BEGIN READ ONLY").await;
    let on = port(&c, "SELECT inet_server_port()").await;
    assert!(p.is_replica(on), "BEGIN READ ONLY ran on {}", p.name(on));
    assert_eq!(
        value(&c, "SHOW transaction_read_only").await.as_deref(),
        Some("on")
    );
    execute(&c, "COMMIT").await;
}

/// A temporary table or a LISTEN a replica refused, in a read-only transaction that runs
/// there (the first refused on the primary as well in such a transaction), pins the client
/// to nothing:
/// after the ROLLBACK its writes run on the primary. (They got 25006 for the rest of the
/// session, the client pinned to the replica's connection.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_replica_refuses_in_a_read_only_transaction_pins_nothing() {
    let (_c, proxy, p) = start_proxy("consistency = \"eventual\"").await;
    warm_up(&proxy, &p).await;
    let c = proxy.connect_app().await;
    execute(&c, "CREATE TABLE IF NOT EXISTS ro_refused (id int)").await;
    let pins = || async {
        proxy
            .metric("switchyard_pinned_clients_total{reason=\"temp_table\"}")
            .await
            + proxy
                .metric("switchyard_pinned_clients_total{reason=\"listen\"}")
                .await
    };
    let pins_before = pins().await;
    for refused in ["CREATE TEMP TABLE ro_tmp (a int)", "LISTEN ro_channel"] {
        execute(&c, "BEGIN READ ONLY").await;
        let on = port(&c, "SELECT inet_server_port()").await;
        assert!(p.is_replica(on), "BEGIN READ ONLY ran on {}", p.name(on));
        // (A standby refuses both; a primary refuses the first in a read-only transaction
        // too, but would run the LISTEN: a LISTEN after the first request of a read-only
        // transaction on a replica fails, see the README.)
        let code = error_code(&c, refused).await;
        assert_eq!(code, "25006", "{refused}");
        execute(&c, "ROLLBACK").await;
        execute(&c, "INSERT INTO ro_refused VALUES (1)").await;
        assert_eq!(
            value(&c, "SELECT pg_is_in_recovery()").await.as_deref(),
            Some("f"),
            "after {refused}"
        );
    }
    assert_eq!(
        pins().await,
        pins_before,
        "pinned for what a replica refused"
    );
}

/// A client pinned to a replica (a session advisory lock taken after the first statement of a
/// read-only transaction there, see the README) gets 25006 for its writes, as connected to
/// the replica; the proxy does not then try to read a commit position there (which a standby
/// refuses: a warning per write in the log).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_pinned_to_a_replica_reads_no_commit_position_there() {
    let (_c, proxy, p) = start_proxy("consistency = \"eventual\"").await;
    warm_up(&proxy, &p).await;
    let c = proxy.connect_app().await;
    execute(&c, "BEGIN READ ONLY").await;
    let on = port(&c, "SELECT inet_server_port()").await;
    assert!(p.is_replica(on), "BEGIN READ ONLY ran on {}", p.name(on));
    execute(&c, "SELECT pg_advisory_lock(4545)").await;
    execute(&c, "COMMIT").await;
    for _ in 0..3 {
        assert_eq!(
            error_code(
                &c,
                "INSERT INTO routing_log (port, tag) VALUES (0, 'pinned')"
            )
            .await,
            "25006"
        );
    }
    assert_eq!(port(&c, "SELECT inet_server_port()").await, on);
    execute(&c, "SELECT pg_advisory_unlock(4545)").await;
    let log = proxy.log();
    assert!(
        !log.contains("the proxy's own query failed"),
        "{}",
        proxy.log_tail(20)
    );
}

/// A read-only transaction runs on a replica, unless its first statement asks what only the
/// primary answers for the session: `pg_backend_pid()` (the process the client's cancel key
/// names, which lib/pq's `TestPing` then terminates), whether the server is a standby, a view
/// only the primary fills. Then the whole transaction runs on the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_transaction_asking_for_its_process_runs_on_the_primary() {
    let (_c, proxy, p) = start_proxy("consistency = \"eventual\"").await;
    warm_up(&proxy, &p).await;
    let c = proxy.connect_app().await;
    for first in [
        "SELECT pg_backend_pid(), inet_server_port()",
        "SELECT pg_is_in_recovery(), inet_server_port()",
        "SELECT count(*), inet_server_port() FROM pg_prepared_xacts",
    ] {
        execute(&c, "BEGIN READ ONLY").await;
        let r = rows(&c, first).await;
        let on: u16 = r[0][1].as_deref().unwrap().parse().unwrap();
        assert_eq!(on, p.primary, "{first} ran on {}", p.name(on));
        let then = port(&c, "SELECT inet_server_port()").await;
        assert_eq!(then, p.primary, "{first}: the transaction moved");
        execute(&c, "COMMIT").await;
    }
    // The extended protocol's first statement too.
    execute(&c, "BEGIN READ ONLY").await;
    let row = within(
        "query",
        c.query_one("SELECT inet_server_port()::int4, pg_backend_pid()", &[]),
    )
    .await
    .unwrap();
    let on = row.get::<_, i32>(0) as u16;
    assert_eq!(on, p.primary, "extended: ran on {}", p.name(on));
    execute(&c, "COMMIT").await;
    // A statement prepared before the transaction, bound as its first statement.
    let stmt = within(
        "prepare",
        c.prepare("SELECT inet_server_port()::int4, pg_backend_pid()"),
    )
    .await
    .unwrap();
    for _ in 0..2 {
        execute(&c, "BEGIN READ ONLY").await;
        let row = within("query", c.query_one(&stmt, &[])).await.unwrap();
        let on = row.get::<_, i32>(0) as u16;
        assert_eq!(on, p.primary, "prepared earlier: ran on {}", p.name(on));
        execute(&c, "COMMIT").await;
    }
    // Other read-only transactions still run on a replica.
    execute(&c, "BEGIN READ ONLY").await;
    let on = port(&c, "SELECT inet_server_port()").await;
    assert!(
        p.is_replica(on),
        "plain read-only transaction ran on {}",
        p.name(on)
    );
    execute(&c, "COMMIT").await;
}

/// A read-only transaction whose first request has a statement a hot standby refuses though a
/// read-only transaction allows it (`LOCK` in a mode above `ROW EXCLUSIVE`, `NOTIFY`), or asks
/// what only the primary answers in a statement after its first, runs on the primary: on a
/// replica it failed with 25006.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_transaction_a_standby_would_refuse_runs_on_the_primary() {
    let (_c, proxy, p) = start_proxy("consistency = \"eventual\"").await;
    warm_up(&proxy, &p).await;
    let c = proxy.connect_app().await;
    for first in [
        "LOCK TABLE routing_t IN SHARE MODE",
        "LOCK TABLE routing_t",
        "NOTIFY sy_ch",
        "SELECT 1; SELECT pg_backend_pid()",
    ] {
        execute(&c, "BEGIN READ ONLY").await;
        execute(&c, first).await;
        let on = port(&c, "SELECT inet_server_port()").await;
        execute(&c, "COMMIT").await;
        assert_eq!(on, p.primary, "{first} ran on {}", p.name(on));
    }
    // A lock a standby grants leaves the transaction on a replica.
    execute(&c, "BEGIN READ ONLY").await;
    execute(&c, "LOCK TABLE routing_t IN ACCESS SHARE MODE").await;
    let on = port(&c, "SELECT inet_server_port()").await;
    execute(&c, "COMMIT").await;
    assert!(p.is_replica(on), "ACCESS SHARE ran on {}", p.name(on));
}

/// A hot standby has no rows of an unlogged table and refuses to read one (0A000, "cannot
/// access temporary or unlogged relations during recovery"): such a read runs on the primary,
/// in the simple and the extended protocol, and once refused goes there directly, also as
/// the first statement of a read-only transaction. Every read of one failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_an_unlogged_table_run_on_the_primary() {
    let (cluster, proxy, p) = start_proxy("consistency = \"eventual\"").await;
    warm_up(&proxy, &p).await;
    let c = proxy.connect_app().await;
    execute(&c, "CREATE UNLOGGED TABLE routing_unlogged (v int)").await;
    execute(&c, "INSERT INTO routing_unlogged VALUES (1), (2)").await;
    // (The replicas must know the table, to refuse reading it.)
    tokio::task::spawn_blocking(move || cluster.wait_replicas_caught_up(Duration::from_secs(60)))
        .await
        .unwrap()
        .expect("replicas catching up");
    let simple = "SELECT count(*), inet_server_port() FROM routing_unlogged";
    let extended = "SELECT count(*)::int, inet_server_port() FROM routing_unlogged WHERE v > $1";
    let refused = "switchyard_retries_total{reason=\"read_only_violation\"}";
    let mut learned = 0.0;
    for round in 0..3 {
        let r = rows(&c, simple).await;
        assert_eq!(r[0][0].as_deref(), Some("2"), "simple, round {round}");
        assert_eq!(r[0][1].as_deref(), Some(p.primary.to_string().as_str()));
        let row = within("extended read", c.query_one(extended, &[&0i32]))
            .await
            .unwrap_or_else(|e| panic!("extended, round {round}: {e}"));
        assert_eq!(
            (row.get::<_, i32>(0), row.get::<_, i32>(1)),
            (2, p.primary as i32)
        );
        // The table copied out (refused in BeginCopyTo rather than by the planner).
        let copied = within("COPY TO STDOUT", async {
            use futures_util::StreamExt;
            let out = c.copy_out("COPY routing_unlogged TO STDOUT").await?;
            let mut out = std::pin::pin!(out);
            let mut bytes = Vec::new();
            while let Some(chunk) = out.next().await {
                bytes.extend_from_slice(&chunk?);
            }
            Ok::<_, tokio_postgres::Error>(bytes)
        })
        .await
        .unwrap_or_else(|e| panic!("COPY of the unlogged table, round {round}: {e} ({e:?})"));
        assert_eq!(copied, b"1\n2\n", "round {round}");
        if round == 0 {
            learned = proxy.metric(refused).await;
            assert!(
                learned >= 3.0,
                "the replica's refusals were not counted: {learned}"
            );
        }
    }
    assert_eq!(
        proxy.metric(refused).await,
        learned,
        "reads a replica refused before were sent to one again"
    );
    execute(&c, "BEGIN READ ONLY").await;
    let r = rows(&c, simple).await;
    execute(&c, "COMMIT").await;
    assert_eq!(r[0][0].as_deref(), Some("2"), "in a read-only transaction");
    // Other reads still run on the replicas.
    let on = port(&c, "SELECT inet_server_port()").await;
    assert!(p.is_replica(on), "a plain read ran on {}", p.name(on));
}

/// A seeded random generator (`SET seed`, `setseed()`) is the server session's: the client is
/// pinned to its server connection on the primary, and `random()` gives what it gives
/// connected directly. Split, each `random()` ran on some replica with another generator.
/// A sequence's last value is the primary's (a standby's is ahead by what the primary
/// logged in advance).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_random_generator_and_a_sequences_last_value_are_the_sessions() {
    let (cluster, proxy, p) = start_proxy("consistency = \"eventual\"").await;
    warm_up(&proxy, &p).await;
    let direct = direct_primary().await;
    for seed in ["SET seed TO 0.5", "SELECT setseed(0.25)"] {
        let c = proxy.connect_app().await;
        let mut want = Vec::new();
        let mut got = Vec::new();
        execute(&direct, seed).await;
        execute(&c, seed).await;
        for _ in 0..4 {
            want.push(value(&direct, "SELECT random()").await);
            got.push(value(&c, "SELECT random()").await);
        }
        assert_eq!(got, want, "{seed}: random() after it");
        let on = port(&c, "SELECT inet_server_port()").await;
        assert_eq!(
            on,
            p.primary,
            "{seed}: the client's reads ran on {}",
            p.name(on)
        );
    }
    let c = proxy.connect_app().await;
    execute(&c, "CREATE SEQUENCE IF NOT EXISTS routing_seq").await;
    for _ in 0..3 {
        execute(&c, "SELECT nextval('routing_seq')").await;
    }
    tokio::task::spawn_blocking(move || cluster.wait_replicas_caught_up(Duration::from_secs(60)))
        .await
        .unwrap()
        .expect("replicas catching up");
    let want = value(&direct, "SELECT pg_sequence_last_value('routing_seq')").await;
    for _ in 0..4 {
        assert_eq!(
            value(&c, "SELECT pg_sequence_last_value('routing_seq')").await,
            want
        );
    }
}

/// `BEGIN` and `SET TRANSACTION READ ONLY` sent as two requests make a read-only transaction
/// whose next request is looked at as after `BEGIN READ ONLY`: one a standby refuses, or one
/// asking what only the primary answers, takes it to the primary. The SET went to a replica at
/// once, and with it the transaction: a `PREPARE` there left the client pinned to the
/// replica, and every later write failed with 25006.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_transaction_begun_in_two_requests_looks_at_the_next_one() {
    let (_c, proxy, p) = start_proxy("consistency = \"eventual\"").await;
    warm_up(&proxy, &p).await;
    let c = proxy.connect_app().await;
    for next in [
        "LOCK TABLE routing_t IN SHARE MODE",
        "NOTIFY sy_ch",
        "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        "SET TRANSACTION READ WRITE",
        "SELECT pg_export_snapshot()",
        "PREPARE sy_two_requests AS SELECT 1",
    ] {
        // (A PREPARE pins its client: it gets one of its own.)
        let pins = next.starts_with("PREPARE");
        let own = if pins {
            Some(proxy.connect_app().await)
        } else {
            None
        };
        let c = own.as_ref().unwrap_or(&c);
        execute(c, "BEGIN").await;
        execute(c, "SET TRANSACTION READ ONLY").await;
        execute(c, next).await;
        let on = port(c, "SELECT inet_server_port()").await;
        execute(c, "COMMIT").await;
        assert_eq!(
            on,
            p.primary,
            "BEGIN; SET TRANSACTION READ ONLY; {next} ran on {}",
            p.name(on)
        );
        if pins {
            // The statement prepared there is the client's, and its writes go on.
            assert_eq!(
                value(c, "EXECUTE sy_two_requests").await.as_deref(),
                Some("1")
            );
            execute(c, "INSERT INTO routing_t (v) VALUES ('two requests')").await;
        }
    }
    // A plain read still runs on a replica, read-only, also with an isolation level given.
    for set in [
        "SET TRANSACTION READ ONLY",
        "set transaction isolation level repeatable read, read only;",
    ] {
        execute(&c, "BEGIN").await;
        execute(&c, set).await;
        let on = port(&c, "SELECT inet_server_port()").await;
        assert_eq!(
            value(&c, "SHOW transaction_read_only").await.as_deref(),
            Some("on"),
            "{set}"
        );
        execute(&c, "COMMIT").await;
        assert!(
            p.is_replica(on),
            "BEGIN; {set}; a read ran on {}",
            p.name(on)
        );
    }
    // After a BEGIN a standby refuses (SERIALIZABLE, READ WRITE), the SET does not make the
    // transaction a replica's: it runs on the primary, as PostgreSQL takes it there.
    for (begin, set) in [
        (
            "BEGIN ISOLATION LEVEL SERIALIZABLE",
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
        ),
        ("BEGIN READ WRITE", "SET TRANSACTION READ ONLY"),
    ] {
        execute(&c, begin).await;
        execute(&c, set).await;
        let on = port(&c, "SELECT inet_server_port()").await;
        assert_eq!(
            value(&c, "SHOW transaction_read_only").await.as_deref(),
            Some("on"),
            "{begin}; {set}"
        );
        execute(&c, "COMMIT").await;
        assert_eq!(
            on,
            p.primary,
            "{begin}; {set}; a read ran on {}",
            p.name(on)
        );
    }
    // Nor does one after `SET switchyard.route = primary` inside the block.
    execute(&c, "BEGIN").await;
    execute(&c, "SET switchyard.route = primary").await;
    execute(&c, "SET TRANSACTION READ ONLY").await;
    let on = port(&c, "SELECT inet_server_port()").await;
    execute(&c, "COMMIT").await;
    execute(&c, "RESET switchyard.route").await;
    assert_eq!(
        on,
        p.primary,
        "routed to the primary in the block, ran on {}",
        p.name(on)
    );
    // Ended with nothing run, or rolled back after a read, the session goes on.
    execute(&c, "BEGIN").await;
    execute(&c, "SET TRANSACTION READ ONLY").await;
    execute(&c, "COMMIT").await;
    execute(&c, "BEGIN").await;
    execute(&c, "SET TRANSACTION READ ONLY").await;
    let code = error_code(&c, "INSERT INTO routing_t (v) VALUES ('ro')").await;
    assert_eq!(code, "25006", "a write in the read-only transaction");
    execute(&c, "ROLLBACK").await;
    execute(&c, "INSERT INTO routing_t (v) VALUES ('after')").await;
}

/// `consistency = primary` ("reads on the primary") and a primary hint, on the BEGIN or on the
/// transaction's first statement, hold for read-only transactions too: they ran on a replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_transactions_follow_consistency_primary_and_primary_hints() {
    let (_c, proxy, p) = start_proxy("consistency = \"eventual\"").await;
    warm_up(&proxy, &p).await;
    let c = proxy.connect_app().await;
    for _ in 0..3 {
        execute(&c, "/* switchyard:primary */ BEGIN READ ONLY").await;
        let on = port(&c, "SELECT inet_server_port()").await;
        execute(&c, "COMMIT").await;
        assert_eq!(on, p.primary, "a hinted BEGIN ran on {}", p.name(on));
        execute(&c, "BEGIN READ ONLY").await;
        let on = port(&c, "/* switchyard:primary */ SELECT inet_server_port()").await;
        let then = port(&c, "SELECT inet_server_port()").await;
        execute(&c, "COMMIT").await;
        assert_eq!(
            on,
            p.primary,
            "a hinted first statement ran on {}",
            p.name(on)
        );
        assert_eq!(then, p.primary, "the hinted transaction moved");
    }
    execute(&c, "SET switchyard.consistency = primary").await;
    for start in [
        &["BEGIN READ ONLY"][..],
        &["START TRANSACTION READ ONLY"],
        &["BEGIN", "SET TRANSACTION READ ONLY"],
    ] {
        for sql in start {
            execute(&c, sql).await;
        }
        let on = port(&c, "SELECT inet_server_port()").await;
        execute(&c, "COMMIT").await;
        assert_eq!(
            on,
            p.primary,
            "consistency = primary: {start:?} ran on {}",
            p.name(on)
        );
    }
    // Without either, read-only transactions still run on a replica.
    execute(&c, "SET switchyard.consistency = eventual").await;
    execute(&c, "BEGIN READ ONLY").await;
    let on = port(&c, "SELECT inet_server_port()").await;
    execute(&c, "COMMIT").await;
    assert!(
        p.is_replica(on),
        "a read-only transaction ran on {}",
        p.name(on)
    );
}

/// A snapshot exported by one session (`pg_export_snapshot()`, in a read-only transaction too)
/// is taken by another's read-only transaction (`SET TRANSACTION SNAPSHOT`, pg_dump's
/// parallel jobs): both run on the primary, where the snapshot is (a replica answered 22023,
/// invalid snapshot identifier).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exported_snapshot_is_taken_on_the_primary() {
    let (_c, proxy, p) = start_proxy("consistency = \"eventual\"").await;
    warm_up(&proxy, &p).await;
    let a = proxy.connect_app().await;
    let b = proxy.connect_app().await;
    for export in [
        "BEGIN ISOLATION LEVEL REPEATABLE READ",
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
    ] {
        execute(&a, export).await;
        let r = rows(&a, "SELECT pg_export_snapshot(), inet_server_port()").await;
        let id = r[0][0].clone().expect("a snapshot id");
        let on: u16 = r[0][1].as_deref().unwrap().parse().unwrap();
        assert_eq!(on, p.primary, "{export}: exported on {}", p.name(on));
        execute(&b, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await;
        execute(&b, &format!("SET TRANSACTION SNAPSHOT '{id}'")).await;
        let on = port(&b, "SELECT inet_server_port()").await;
        execute(&b, "COMMIT").await;
        execute(&a, "COMMIT").await;
        assert_eq!(on, p.primary, "{export}: imported on {}", p.name(on));
    }
}

/// Requests pipelined right behind the end of a read-only transaction on a replica are routed
/// afresh: an INSERT sent with the COMMIT ran on the replica and failed (25006), whether the
/// end came as a Query or through the extended protocol (Parse, Bind, Execute, Sync, as
/// drivers send it). After `COMMIT AND CHAIN` they stay in the new transaction, on the same
/// replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_pipelined_behind_the_end_of_a_replica_transaction_runs_on_the_primary() {
    let (_c, proxy, p) = start_proxy("consistency = \"eventual\"").await;
    warm_up(&proxy, &p).await;
    let c = proxy.connect_app().await;
    let insert = "INSERT INTO routing_t (v) VALUES ('pipelined') RETURNING inet_server_port()";
    for extended in [false, true] {
        for end in ["COMMIT", "ROLLBACK", "END"] {
            execute(&c, "BEGIN READ ONLY").await;
            let on = port(&c, "SELECT inet_server_port()").await;
            assert!(p.is_replica(on), "the transaction ran on {}", p.name(on));
            let (ended, inserted) = pipelined(&c, extended, end, insert).await;
            ended.unwrap_or_else(|e| panic!("{end} (extended: {extended}): {e}"));
            let at = inserted.unwrap_or_else(|e| {
                panic!("an INSERT behind {end} (extended: {extended}): {e} ({e:?})")
            });
            assert_eq!(
                at,
                p.primary,
                "an INSERT behind {end} (extended: {extended}) ran on {}",
                p.name(at)
            );
        }
        execute(&c, "BEGIN READ ONLY").await;
        let on = port(&c, "SELECT inet_server_port()").await;
        let (chained, read) = pipelined(
            &c,
            extended,
            "COMMIT AND CHAIN",
            "SELECT inet_server_port()",
        )
        .await;
        chained.expect("COMMIT AND CHAIN");
        let at = read.expect("a read in the chained transaction");
        execute(&c, "COMMIT").await;
        assert_eq!(
            at,
            on,
            "the chained transaction (extended: {extended}) moved to {}",
            p.name(at)
        );
    }
}

/// A write in the same request as the end of a read-only transaction on a replica, after it
/// (`COMMIT; INSERT ...` as one Query, or one extended batch with a single Sync, also one
/// that begins the transaction too), runs on the primary, as it runs directly: it ran on the
/// replica and failed (25006). The client gets one answer per request as from PostgreSQL, and
/// when something before the end fails, nothing after it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_after_the_end_of_a_replica_transaction_in_the_same_request_runs_on_the_primary() {
    use postgres_protocol::message::frontend;

    let (_c, proxy, p) = start_proxy("consistency = \"eventual\"").await;
    warm_up(&proxy, &p).await;
    let mut s = raw_app_session(&proxy).await;
    let port_of = |row: &Vec<Option<Vec<u8>>>| -> u16 {
        String::from_utf8_lossy(row[0].as_ref().expect("a port"))
            .parse()
            .expect("a port")
    };
    let insert = |mark: &str| {
        format!("INSERT INTO routing_t (v) VALUES ('{mark}') RETURNING inet_server_port()")
    };
    // One extended batch of `statements`, each Parse/Bind/Execute, and one Sync.
    let batch = |statements: &[&str]| {
        let mut out = bytes::BytesMut::new();
        for sql in statements {
            raw::parse_bind_execute(sql, &mut out);
        }
        frontend::sync(&mut out);
        out
    };
    for extended in [false, true] {
        for (end, ends) in [
            ("COMMIT", &["COMMIT"][..]),
            ("ROLLBACK", &["ROLLBACK"]),
            ("COMMIT AND CHAIN; COMMIT", &["COMMIT", "COMMIT"]),
        ] {
            let what = format!("{end}; INSERT (extended: {extended})");
            let begin = s.raw.query_ok("BEGIN READ ONLY").await;
            assert_eq!(begin.status, b'T');
            let on = port_of(&s.raw.query_ok("SELECT inet_server_port()").await.rows[0]);
            assert!(p.is_replica(on), "the transaction ran on {}", p.name(on));
            let write = insert(&format!("same request {extended} {end}"));
            let r = if extended {
                let mut statements: Vec<&str> = end.split("; ").collect();
                statements.push(&write);
                s.raw.send(&batch(&statements)).await.unwrap();
                s.raw.read_result(&what).await
            } else {
                s.raw.query(&format!("{end}; {write}")).await
            };
            assert!(r.error.is_none(), "{what}: {:?}", r.error);
            let mut tags = ends.to_vec();
            tags.push("INSERT 0 1");
            assert_eq!(r.tags, tags, "{what}");
            assert_eq!(r.status, b'I', "{what}");
            let at = port_of(&r.rows[0]);
            assert_eq!(at, p.primary, "{what}: the INSERT ran on {}", p.name(at));
            // Nothing more came: the next request gets its own answer.
            assert_eq!(s.raw.query_ok("SELECT 7").await.scalar(), "7", "{what}");
        }
        // A failure before the end: the rest of the request does not run, as in PostgreSQL.
        let mark = format!("not after a failure {extended}");
        s.raw.query_ok("BEGIN READ ONLY").await;
        s.raw.query_ok("SELECT inet_server_port()").await;
        let write = insert(&mark);
        let r = if extended {
            s.raw
                .send(&batch(&["SELECT 1/0", "COMMIT", &write]))
                .await
                .unwrap();
            s.raw.read_result("failing batch").await
        } else {
            s.raw.query(&format!("SELECT 1/0; COMMIT; {write}")).await
        };
        let code = r.error.as_ref().map(|e| e.code());
        assert_eq!(code.as_deref(), Some("22012"), "extended: {extended}");
        assert!(r.tags.is_empty(), "extended: {extended}: {:?}", r.tags);
        assert_eq!(r.status, b'E', "extended: {extended}");
        assert_eq!(s.raw.query_ok("ROLLBACK").await.tags, ["ROLLBACK"]);
        let count = s
            .raw
            .query_ok(&format!(
                "/* switchyard:primary */ SELECT count(*) FROM routing_t WHERE v = '{mark}'"
            ))
            .await;
        assert_eq!(count.scalar(), "0", "extended: {extended}");
    }
    // A whole read-only transaction and a write after it in one batch.
    let write = insert("whole batch");
    s.raw
        .send(&batch(&[
            "BEGIN READ ONLY",
            "SELECT inet_server_port()",
            "COMMIT",
            &write,
        ]))
        .await
        .unwrap();
    let r = s.raw.read_result("whole batch").await;
    assert!(r.error.is_none(), "whole batch: {:?}", r.error);
    assert_eq!(r.tags, ["BEGIN", "SELECT 1", "COMMIT", "INSERT 0 1"]);
    assert_eq!(r.status, b'I');
    let at = port_of(&r.rows[1]);
    assert_eq!(at, p.primary, "the INSERT ran on {}", p.name(at));
    assert_eq!(s.raw.query_ok("SELECT 8").await.scalar(), "8");
    // The end of the block answered (the client flushed after it and read the answers) before
    // the rest of its batch comes, which closes a statement prepared in the block and writes:
    // the write runs on the primary. (Before, the end was told from the answers still due,
    // none by then: the write ran on the replica and failed, 25006.)
    // (A batch that runs `name` in the block, then one that ends the block with a COMMIT.)
    let in_block_then_commit = |name: &str| {
        let mut out = bytes::BytesMut::new();
        raw::parse_bind_execute_as(name, "SELECT inet_server_port()", &mut out);
        postgres_protocol::message::frontend::sync(&mut out);
        raw::parse_bind_execute("COMMIT", &mut out);
        out
    };
    for close in [true, false] {
        let what = format!("the rest of the batch after the end was answered (Close: {close})");
        s.raw.query_ok("BEGIN READ ONLY").await;
        s.raw.query_ok("SELECT inet_server_port()").await;
        let mut out = in_block_then_commit("in_block");
        postgres_protocol::message::frontend::flush(&mut out);
        s.raw.send(&out).await.unwrap();
        let first = s.raw.read_result(&what).await;
        assert!(first.error.is_none(), "{what}: {:?}", first.error);
        assert_eq!(first.status, b'T', "{what}");
        loop {
            match s.raw.next(Duration::from_secs(30)).await {
                raw::Next::Frame(f) if f.tag == b'C' => break,
                raw::Next::Frame(f) if f.tag == b'1' || f.tag == b'2' => {}
                other => panic!("{what}: the COMMIT's answer, got {other:?}"),
            }
        }
        let mut out = bytes::BytesMut::new();
        if close {
            postgres_protocol::message::frontend::close(b'S', "in_block", &mut out).unwrap();
        }
        raw::parse_bind_execute(&insert(&what), &mut out);
        postgres_protocol::message::frontend::sync(&mut out);
        s.raw.send(&out).await.unwrap();
        let r = s.raw.read_result(&what).await;
        assert!(r.error.is_none(), "{what}: {:?}", r.error);
        assert_eq!(r.tags, ["INSERT 0 1"], "{what}");
        assert_eq!(r.status, b'I', "{what}");
        let at = port_of(&r.rows[0]);
        assert_eq!(at, p.primary, "{what}: the INSERT ran on {}", p.name(at));
    }
    // The same sent in one write: the end was told from the answers still due, and when all
    // of those had come in one read by the time the Close was looked at (it waits for the
    // answer to the Parse of the statement it closes), the write followed the Close on the
    // replica and failed (25006): in about half the rounds on a loaded machine, none on an
    // idle one.
    for round in 0..10 {
        let what = format!("a Close after the end in one write, round {round}");
        s.raw.query_ok("BEGIN READ ONLY").await;
        s.raw.query_ok("SELECT inet_server_port()").await;
        let mut out = in_block_then_commit("in_block_once");
        postgres_protocol::message::frontend::close(b'S', "in_block_once", &mut out).unwrap();
        raw::parse_bind_execute(&insert(&what), &mut out);
        postgres_protocol::message::frontend::sync(&mut out);
        s.raw.send(&out).await.unwrap();
        let first = s.raw.read_result(&what).await;
        assert!(first.error.is_none(), "{what}: {:?}", first.error);
        assert_eq!(first.status, b'T', "{what}");
        let r = s.raw.read_result(&what).await;
        assert!(r.error.is_none(), "{what}: {:?}", r.error);
        assert_eq!(r.tags, ["COMMIT", "INSERT 0 1"], "{what}");
        assert_eq!(r.status, b'I', "{what}");
        let at = port_of(&r.rows[0]);
        assert_eq!(at, p.primary, "{what}: the INSERT ran on {}", p.name(at));
    }
    assert_eq!(s.raw.query_ok("SELECT 9").await.scalar(), "9");
}

/// `first` and `second` pipelined (the second sent before the first is answered), as Queries
/// or through the extended protocol (`query_typed`: Parse, Bind, Describe, Execute, Sync);
/// the port in the second's first column.
async fn pipelined(
    c: &Client,
    extended: bool,
    first: &str,
    second: &str,
) -> (
    Result<(), tokio_postgres::Error>,
    Result<u16, tokio_postgres::Error>,
) {
    within("pipelined", async {
        if extended {
            let (a, b) = tokio::join!(c.query_typed(first, &[]), c.query_typed(second, &[]));
            (a.map(|_| ()), b.map(|rows| rows[0].get::<_, i32>(0) as u16))
        } else {
            let (a, b) = tokio::join!(c.simple_query(first), c.simple_query(second));
            let port = |msgs: Vec<SimpleQueryMessage>| {
                msgs.iter()
                    .find_map(|m| match m {
                        SimpleQueryMessage::Row(r) => r.get(0).and_then(|v| v.parse().ok()),
                        _ => None,
                    })
                    .expect("a row with a port")
            };
            (a.map(|_| ()), b.map(port))
        }
    })
    .await
}

/// A read-only transaction begun through the extended protocol (`BEGIN READ ONLY` as a Parse,
/// or the Bind of a statement prepared from it, as psycopg and pgjdbc send it) runs on a
/// replica, as one begun with a Query; a plain `BEGIN` that way runs on the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_transaction_begun_through_the_extended_protocol_runs_on_a_replica() {
    let (_c, proxy, p) = start_proxy("consistency = \"eventual\"").await;
    warm_up(&proxy, &p).await;
    let c = proxy.connect_app().await;
    let port_typed = |rows: Vec<tokio_postgres::Row>| rows[0].get::<_, i32>(0) as u16;
    let begin = c.prepare("BEGIN READ ONLY").await.expect("prepare");
    for named in [false, true] {
        if named {
            c.execute(&begin, &[])
                .await
                .expect("BEGIN READ ONLY, named");
        } else {
            c.query_typed("BEGIN READ ONLY", &[])
                .await
                .expect("BEGIN READ ONLY");
        }
        let on = port_typed(
            c.query_typed("SELECT inet_server_port()", &[])
                .await
                .expect("read"),
        );
        let again = port_typed(
            c.query_typed("SELECT inet_server_port()", &[])
                .await
                .expect("read"),
        );
        c.query_typed("COMMIT", &[]).await.expect("COMMIT");
        assert!(
            p.is_replica(on),
            "the read-only transaction (named: {named}) ran on {}",
            p.name(on)
        );
        assert_eq!(on, again, "the transaction moved");
    }
    c.query_typed("BEGIN", &[]).await.expect("BEGIN");
    let on = port_typed(
        c.query_typed("SELECT inet_server_port()", &[])
            .await
            .expect("read"),
    );
    c.query_typed("COMMIT", &[]).await.expect("COMMIT");
    assert_eq!(on, p.primary, "a plain BEGIN ran on {}", p.name(on));
}

/// A read whose replica pool stays busy for all of `checkout_timeout` fails with 53300, as a
/// write on a busy primary pool does: overload is not an outage, and waiting as long again on
/// the primary would hold the client for a multiple of the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_replica_pool_fails_the_read_with_53300() {
    let c = tokio::task::spawn_blocking(shared_schema).await.unwrap();
    let replica_port = c.replicas()[0].port();
    // The primary and one replica: the replica's only connection is easy to hold.
    let backends = vec![
        ("pg0".to_string(), c.primary().addr()),
        ("pg1".to_string(), c.replicas()[0].addr()),
    ];
    let opts = support::proxy::ProxyOptions {
        extra_tables: format!(
            "{HEALTH}\n[routing]\nconsistency = \"eventual\"\n\
             [pool]\nsize = 1\ncheckout_timeout = \"2s\"\n"
        ),
        backends: Some(backends),
        ..Default::default()
    };
    let proxy = tokio::task::spawn_blocking(move || Proxy::start_with(c, opts))
        .await
        .unwrap();
    proxy
        .wait_status("pg0 primary, pg1 replica", Duration::from_secs(30), |s| {
            s["backends"].as_array().is_some_and(|b| {
                b.iter().any(|x| x["name"] == "pg0" && x["primary"] == true)
                    && b.iter()
                        .any(|x| x["name"] == "pg1" && x["role"] == "replica" && x["up"] == true)
            })
        })
        .await;
    let holder = proxy.connect_app().await;
    execute(&holder, "BEGIN READ ONLY").await;
    let held = port(&holder, "SELECT inet_server_port()").await;
    assert_eq!(
        held, replica_port,
        "the read-only block runs on the replica"
    );

    let reader = proxy.connect_app().await;
    let e = within(
        "a read on a busy replica pool",
        reader.simple_query("SELECT 1"),
    )
    .await
    .expect_err("a read got the replica's only connection, or ran elsewhere");
    assert_eq!(e.code().map(|c| c.code()), Some("53300"), "{e}");

    execute(&holder, "COMMIT").await;
    assert_eq!(
        port(&reader, "SELECT inet_server_port()").await,
        replica_port
    );
}

/// Parse and Describe of `sql` as `name`, then Flush (asyncpg's and postgres.js's prepare).
fn flushed_parse(name: &str, sql: &str) -> bytes::BytesMut {
    let mut out = bytes::BytesMut::new();
    postgres_protocol::message::frontend::parse(name, sql, std::iter::empty(), &mut out).unwrap();
    postgres_protocol::message::frontend::describe(b'S', name, &mut out).unwrap();
    postgres_protocol::message::frontend::flush(&mut out);
    out
}
/// [`flushed_parse`], sent; reads the answers.
async fn prepare_flushed(raw: &mut support::raw::Raw, name: &str, sql: &str) {
    raw.send(&flushed_parse(name, sql)).await.unwrap();
    for want in [b'1', b't'] {
        let f = raw.frame().await;
        assert_eq!(f.tag, want, "{sql}: {:?}", f.fields());
    }
    let f = raw.frame().await;
    assert!(matches!(f.tag, b'T' | b'n'), "{sql}: {:?}", f.fields());
}
/// Bind, Execute and Sync of statement `name` (no parameters, text results).
fn bound(name: &str) -> bytes::BytesMut {
    let mut out = bytes::BytesMut::new();
    postgres_protocol::message::frontend::bind(
        "",
        name,
        std::iter::empty(),
        std::iter::empty::<i32>(),
        |_: i32,
         _: &mut bytes::BytesMut|
         -> Result<postgres_protocol::IsNull, Box<dyn std::error::Error + Sync + Send>> {
            unreachable!()
        },
        std::iter::empty(),
        &mut out,
    )
    .map_err(|_| ())
    .unwrap();
    postgres_protocol::message::frontend::execute("", 0, &mut out).unwrap();
    postgres_protocol::message::frontend::sync(&mut out);
    out
}
/// [`bound`], run: the first column of the first row, a port.
async fn run_bound(raw: &mut support::raw::Raw, name: &str, what: &str) -> u16 {
    raw.send(&bound(name)).await.unwrap();
    let r = raw.read_result(what).await;
    assert!(r.error.is_none(), "{what}: {:?}", r.error);
    assert_eq!(r.status, b'I', "{what}");
    r.scalar().parse().expect("a port")
}

/// A batch that binds and executes nothing before its Flush (asyncpg's Parse, Describe, Flush,
/// then Bind, Execute, Sync once it has the answers) is routed by what it parses: a read's runs
/// on a replica. It went to the primary, counted as a write (so the user's other sessions'
/// reads waited for its "commit"). What follows it there that is not a read (a write bound, or
/// a Query, before the Sync) moves it to the primary, where it runs. And a write's batch ended
/// by a Query rather than a Sync has its commit's position read back once answered: it stayed
/// in flight for as long as the client stayed, and every read of the user's other sessions
/// went to the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_runs_nothing_before_its_flush_is_routed_by_what_it_parses() {
    use postgres_protocol::message::frontend;

    let (_c, proxy, p) = start_proxy("").await;
    warm_up(&proxy, &p).await;
    let mut s = raw_app_session(&proxy).await;
    for name in ["", "sy_flushed_read"] {
        prepare_flushed(&mut s.raw, name, "SELECT inet_server_port()").await;
        let on = run_bound(&mut s.raw, name, "a flushed read").await;
        assert!(
            p.is_replica(on),
            "a flushed read ({name:?}) ran on {}",
            p.name(on)
        );
    }
    // A Parse of a name the client has (asyncpg preparing "foobar" twice): its error comes
    // at once, before any Sync (it was held back with the read, for ever).
    s.raw
        .send(&flushed_parse("sy_flushed_read", "SELECT 1"))
        .await
        .unwrap();
    let f = s.raw.frame().await;
    assert_eq!(
        (f.tag, f.code()),
        (b'E', "42P05".to_owned()),
        "{:?}",
        f.fields()
    );
    let mut sync = bytes::BytesMut::new();
    frontend::sync(&mut sync);
    s.raw.send(&sync).await.unwrap();
    assert_eq!(s.raw.read_result("Sync after 42P05").await.status, b'I');
    // A write bound after a flushed read, before the Sync: moved to the primary.
    let write = "INSERT INTO routing_t (v) VALUES ('after a flush') RETURNING inet_server_port()";
    prepare_flushed(&mut s.raw, "sy_flushed_write", write).await;
    s.raw.send(&sync).await.unwrap();
    assert_eq!(s.raw.read_result("Sync").await.status, b'I');
    for _ in 0..2 {
        prepare_flushed(&mut s.raw, "", "SELECT inet_server_port()").await;
        let on = run_bound(
            &mut s.raw,
            "sy_flushed_write",
            "a write after a flushed read",
        )
        .await;
        assert_eq!(
            on,
            p.primary,
            "a write after a flushed read ran on {}",
            p.name(on)
        );
    }
    // The same sent before the answers to the flushed read came (a client that does not wait
    // for them): it waits for them, then moves. (Whether the proxy read the two parts apart
    // depends on timing: the gaps vary.)
    for round in 0..40u64 {
        let first = flushed_parse("", "SELECT inet_server_port()");
        let mut rest = bytes::BytesMut::new();
        raw::parse_bind_execute(write, &mut rest);
        frontend::sync(&mut rest);
        s.raw.send(&first).await.unwrap();
        tokio::time::sleep(Duration::from_micros(round * 40)).await;
        s.raw.send(&rest).await.unwrap();
        let r = s
            .raw
            .read_result("a write pipelined past a flushed read")
            .await;
        assert!(r.error.is_none(), "round {round}: {:?}", r.error);
        let on: u16 = r.scalar().parse().unwrap();
        assert_eq!(
            on,
            p.primary,
            "round {round}: the write ran on {}",
            p.name(on)
        );
    }
    // A write sent as a Query after a flushed read (asyncpg's copy_records_to_table).
    prepare_flushed(&mut s.raw, "", "SELECT 1").await;
    let r = s.raw.query(write).await;
    assert!(
        r.error.is_none(),
        "a Query after a flushed read: {:?}",
        r.error
    );
    let on: u16 = r.scalar().parse().unwrap();
    assert_eq!(
        on,
        p.primary,
        "a Query after a flushed read ran on {}",
        p.name(on)
    );

    // A statement the connection already has, parsed (answered by the proxy itself), then
    // described and synced (tokio-postgres's prepare): a read, not moved, not a write. A
    // flushed batch sent to a replica by a hint: not a write there either (its commit
    // position was read on the replica, and failed).
    let writes = || metric_sum(&proxy, "switchyard_routed_total{reason=\"write\"");
    let before = writes().await;
    for i in 0..4 {
        let mut out = bytes::BytesMut::new();
        let name = format!("sy_cached_{i}");
        frontend::parse(
            &name,
            "SELECT inet_server_port()",
            std::iter::empty(),
            &mut out,
        )
        .unwrap();
        frontend::describe(b'S', &name, &mut out).unwrap();
        frontend::sync(&mut out);
        s.raw.send(&out).await.unwrap();
        let r = s.raw.read_result("a cached Parse, Describe, Sync").await;
        assert!(r.error.is_none(), "{:?}", r.error);
        // (nextval() is not a read: the replica refuses it, and the client gets that.)
        let hinted = format!("/* switchyard:replica */ SELECT nextval('routing_seq') /* {i} */");
        prepare_flushed(&mut s.raw, "", &hinted).await;
        s.raw.send(&bound("")).await.unwrap();
        let r = s.raw.read_result("a hinted flushed batch").await;
        let code = r.error.as_ref().map(|e| e.code());
        assert_eq!(code.as_deref(), Some("25006"), "not on a replica?");
    }
    assert_eq!(writes().await, before, "reads counted as writes");
    assert!(
        !proxy.log().contains("the proxy's own query failed"),
        "{}",
        proxy.log_tail(20)
    );

    // A flushed write's batch, ended by a Query that writes: the commit's position is read,
    // and the user's reads elsewhere go to replicas again while this client stays.
    prepare_flushed(&mut s.raw, "", write).await;
    let r = s.raw.query(write).await;
    assert!(
        r.error.is_none(),
        "a Query after a flushed write: {:?}",
        r.error
    );
    assert_eq!(r.status, b'I');
    let other = proxy.connect_app().await;
    let in_flight = || {
        metric_sum(
            &proxy,
            "switchyard_routed_total{reason=\"ryw_commit_in_flight\"",
        )
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let before = in_flight().await;
        port(&other, "SELECT inet_server_port()").await;
        if in_flight().await == before {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the commit stayed in flight: the user's reads still go to the primary"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The session goes on.
    assert_eq!(s.raw.query_ok("SELECT 7").await.scalar(), "7");
}

/// A read prepared with Parse, Describe, Flush and then run with Bind, Execute, Sync
/// (asyncpg's and postgres.js's first use of a statement, and every use with their statement
/// caches off) is repeated like any autocommit read when its replica refuses it or its server
/// session ends before the answer: the client got 0A000 or 08006 once the Parse and Describe
/// answers had reached it. It is repeated without those answers (the client has them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_prepared_with_a_flush_is_repeated_when_its_replica_refuses_or_fails() {
    let (c, proxy, p) = start_proxy("consistency = \"eventual\"").await;
    warm_up(&proxy, &p).await;
    let setup = proxy.connect_app().await;
    execute(&setup, "DROP TABLE IF EXISTS routing_unlogged_flush").await;
    execute(
        &setup,
        "CREATE UNLOGGED TABLE routing_unlogged_flush (v int)",
    )
    .await;
    execute(
        &setup,
        "INSERT INTO routing_unlogged_flush VALUES (1), (2), (3)",
    )
    .await;
    let cluster = c;
    tokio::task::spawn_blocking(move || cluster.wait_replicas_caught_up(Duration::from_secs(60)))
        .await
        .unwrap()
        .expect("replicas catching up");
    let mut s = raw_app_session(&proxy).await;
    // A replica refuses it (an unlogged table): it runs on the primary, unnamed as
    // postgres.js's `prepare: false` sends every query, then named.
    for (i, name) in ["", "", "sy_flush_unlogged"].into_iter().enumerate() {
        let sql = format!(
            "SELECT count(*)::int * 0 + inet_server_port() FROM routing_unlogged_flush WHERE {i} >= 0"
        );
        prepare_flushed(&mut s.raw, name, &sql).await;
        let on = run_bound(&mut s.raw, name, "a read of an unlogged table").await;
        assert_eq!(on, p.primary, "{name:?} {i}: ran on {}", p.name(on));
    }
    // Its server session ends while it runs on a replica: it runs elsewhere.
    let sleep = "SELECT inet_server_port() FROM pg_sleep(2) WHERE 'flush-repeat' <> ''";
    prepare_flushed(&mut s.raw, "", sleep).await;
    s.raw.send(&bound("")).await.unwrap();
    let terminate = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                     WHERE query LIKE '%flush-repeat%' AND pid <> pg_backend_pid()";
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let ended = loop {
        let cluster = c;
        let ended = tokio::task::spawn_blocking(move || {
            cluster
                .replicas()
                .iter()
                .find(|r| r.psql_db(APP_DB, terminate).is_ok_and(|n| n.trim() == "1"))
                .map(|r| r.port())
        })
        .await
        .unwrap();
        if let Some(port) = ended {
            break port;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the read never ran on a replica"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let r = s.raw.read_result("a read whose server session ended").await;
    assert!(r.error.is_none(), "{:?}", r.error);
    assert_eq!(r.status, b'I');
    let on: u16 = r.scalar().parse().unwrap();
    assert_ne!(on, ended, "repeated on the replica whose session ended");
    assert!(
        proxy.log().contains("server connection lost"),
        "{}",
        proxy.log_tail(20)
    );
    execute(&setup, "DROP TABLE routing_unlogged_flush").await;
}

/// A schema change committed on the servers before the proxy has its answer (a Query that
/// commits it and then runs on; a replica replaying it before the primary's answer arrives)
/// is in flight: a statement a client described before it, prepared meanwhile on a
/// connection that has the change, gets its row shape checked, and fails as on PostgreSQL
/// (0A000) rather than return rows of the new type for the client to decode as the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_described_before_a_schema_change_in_flight_is_checked() {
    use postgres_protocol::message::frontend;

    let (c, proxy, p) = start_proxy("consistency = \"eventual\"").await;
    warm_up(&proxy, &p).await;
    let d = proxy.connect_app().await;
    execute(&d, "DROP FUNCTION IF EXISTS shape_race_f(int)").await;
    execute(
        &d,
        "CREATE FUNCTION shape_race_f(int) RETURNS int STABLE LANGUAGE sql AS 'SELECT $1'",
    )
    .await;
    // The change, sent and not committed.
    execute(
        &d,
        "BEGIN; DROP FUNCTION shape_race_f(int); \
         CREATE FUNCTION shape_race_f(int) RETURNS bigint STABLE LANGUAGE sql \
         AS 'SELECT $1::bigint'",
    )
    .await;
    // A client prepares and describes a statement on the primary (in a block of its own),
    // seeing the function as it was.
    let mut s = raw_app_session(&proxy).await;
    s.raw.query_ok("BEGIN").await;
    prepare_flushed(&mut s.raw, "sy_shape_race", "SELECT shape_race_f(100) AS v").await;
    let mut out = bytes::BytesMut::new();
    frontend::sync(&mut out);
    s.raw.send(&out).await.unwrap();
    assert_eq!(s.raw.read_result("Sync").await.status, b'T');
    s.raw.query_ok("COMMIT").await;
    // The change commits; its Query runs on for a while before the proxy has the answer.
    let committing = tokio::spawn(async move {
        let r = d
            .simple_query("COMMIT; SELECT pg_sleep(4)")
            .await
            .map(|_| ());
        (d, r)
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let replayed = tokio::task::spawn_blocking(move || {
            c.replicas().iter().all(|r| {
                r.psql_db(
                    APP_DB,
                    "SELECT prorettype::regtype FROM pg_proc WHERE proname = 'shape_race_f'",
                )
                .is_ok_and(|t| t.trim() == "bigint")
            })
        })
        .await
        .unwrap();
        if replayed {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the replicas never replayed the change"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !committing.is_finished(),
        "the change's Query ended too soon"
    );
    // The statement runs on a replica, where it was never prepared: as on PostgreSQL, the
    // change of its result type is an error, not rows of another type.
    s.raw.send(&bound("sy_shape_race")).await.unwrap();
    let r = s.raw.read_result("a Bind after the change committed").await;
    assert_eq!(
        r.error.as_ref().map(|e| e.code()).as_deref(),
        Some("0A000"),
        "rows {:?}",
        r.rows
    );
    let (d, done) = within("the change's Query", committing).await.unwrap();
    done.unwrap();
    // Prepared again, it runs.
    s.raw.query_ok("DEALLOCATE ALL").await;
    prepare_flushed(&mut s.raw, "sy_shape_race", "SELECT shape_race_f(100) AS v").await;
    let mut out = bound("sy_shape_race");
    out.truncate(0);
    frontend::sync(&mut out);
    s.raw.send(&out).await.unwrap();
    s.raw.read_result("Sync").await;
    let r = {
        s.raw.send(&bound("sy_shape_race")).await.unwrap();
        s.raw
            .read_result("a Bind of the statement prepared again")
            .await
    };
    assert!(r.error.is_none(), "{:?}", r.error);
    assert_eq!(r.scalar(), "100");
    execute(&d, "DROP FUNCTION shape_race_f(int)").await;
}

/// A replica that refuses a Parse, Describe, Flush (asyncpg's prepare) for the session's
/// SERIALIZABLE default, set on its role where the proxy does not see it: the client, waiting
/// on its Flush, gets the replica's error (0A000), as before; it waited for ever for a repeat
/// that waited for its Sync. Its later reads run on the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_while_the_client_waits_on_a_flush_reaches_it() {
    let c = tokio::task::spawn_blocking(|| {
        let c = shared_schema();
        c.primary()
            .psql(&format!(
                "DO $$ BEGIN
                     IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'serial_app') THEN
                         CREATE ROLE serial_app LOGIN PASSWORD 'sa';
                     END IF;
                 END $$;
                 ALTER ROLE serial_app SET default_transaction_isolation = 'serializable';
                 GRANT ALL ON DATABASE {APP_DB} TO serial_app"
            ))
            .expect("creating serial_app");
        c.wait_replicas_caught_up(Duration::from_secs(60))
            .expect("replicas catching up");
        c
    })
    .await
    .unwrap();
    let extra = format!(
        "{HEALTH}\n[routing]\nconsistency = \"eventual\"\n\n[[users]]\nname = \"serial_app\"\npassword = \"sa\"\n"
    );
    let proxy = tokio::task::spawn_blocking(move || Proxy::start(c, &extra))
        .await
        .unwrap();
    wait_cluster_ready(&proxy).await;
    let p = Ports::of(c);
    let params = [("user", "serial_app"), ("database", APP_DB)];
    let addr = proxy.addr();
    let login = support::raw::login(&addr, support::raw::PROTO_3_0, &params, Some("sa"));
    let mut s = match login.await {
        Ok(s) => s,
        Err(r) => panic!("login refused: {:?}", r.error),
    };
    s.raw
        .send(&flushed_parse("", "SELECT inet_server_port()"))
        .await
        .unwrap();
    let f = s.raw.frame().await;
    assert_eq!(
        (f.tag, f.code()),
        (b'E', "0A000".to_owned()),
        "{:?}",
        f.fields()
    );
    let mut sync = bytes::BytesMut::new();
    postgres_protocol::message::frontend::sync(&mut sync);
    s.raw.send(&sync).await.unwrap();
    assert_eq!(s.raw.read_result("Sync").await.status, b'I');
    prepare_flushed(&mut s.raw, "", "SELECT inet_server_port()").await;
    let on = run_bound(&mut s.raw, "", "a read after the refusal").await;
    assert_eq!(on, p.primary, "ran on {}", p.name(on));
}

/// A batch that parses the unnamed statement and binds it (node-postgres's every query with
/// parameters) is routed by the statement it parses, not by the unnamed statement the client
/// had before: a read after a write went to the primary, counted as a write (holding the
/// user's other sessions' reads there for read-your-writes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_parsed_unnamed_after_an_unnamed_write_runs_on_a_replica() {
    use postgres_protocol::message::frontend;

    let (_c, proxy, p) = start_proxy("consistency = \"eventual\"").await;
    warm_up(&proxy, &p).await;
    let mut s = raw_app_session(&proxy).await;
    let writes = || metric_sum(&proxy, "switchyard_routed_total{reason=\"write\"");
    for round in 0..3 {
        let mut out = bytes::BytesMut::new();
        raw::parse_bind_execute(
            "INSERT INTO routing_t (v) VALUES ('unnamed') RETURNING inet_server_port()",
            &mut out,
        );
        frontend::sync(&mut out);
        s.raw.send(&out).await.unwrap();
        let r = s.raw.read_result("an unnamed write").await;
        assert!(r.error.is_none(), "round {round}: {:?}", r.error);
        assert_eq!(r.scalar(), p.primary.to_string(), "round {round}");
        let before = writes().await;
        let mut out = bytes::BytesMut::new();
        raw::parse_bind_execute("SELECT inet_server_port()", &mut out);
        frontend::sync(&mut out);
        s.raw.send(&out).await.unwrap();
        let r = s.raw.read_result("an unnamed read").await;
        assert!(r.error.is_none(), "round {round}: {:?}", r.error);
        let on: u16 = r.scalar().parse().unwrap();
        assert!(
            p.is_replica(on),
            "round {round}: a read parsed after an unnamed write ran on {}",
            p.name(on)
        );
        assert_eq!(
            writes().await,
            before,
            "round {round}: the read counted as a write"
        );
    }
}
