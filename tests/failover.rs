//! Consistency and failover through the proxy: each test has its own primary + 2 replicas
//! (it pauses replay, stops, kills or promotes nodes) and its own proxy with fast health
//! checks. Where a statement ran is proven with `inet_server_port()`; the monitor's view is
//! awaited through `/status` rather than with blind sleeps.

mod support;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::proxy::Proxy;
use support::*;
use tokio_postgres::{Client, SimpleQueryMessage};

/// Health checks: every 200 ms, down after 3 failures, up after 2 successes.
const INTERVAL: Duration = Duration::from_millis(200);
const FALL: u32 = 3;
const RISE: u32 = 2;

/// Every client operation must finish within this.
const OP_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// helpers

struct Ports {
    /// By node name.
    by_name: BTreeMap<String, u16>,
}

impl Ports {
    fn of(c: &LocalCluster) -> Ports {
        Ports {
            by_name: c
                .nodes()
                .iter()
                .map(|n| (n.name().to_string(), n.port()))
                .collect(),
        }
    }

    fn port(&self, name: &str) -> u16 {
        self.by_name[name]
    }

    fn name(&self, port: u16) -> String {
        self.by_name
            .iter()
            .find(|(_, &p)| p == port)
            .map(|(n, _)| format!("{n} ({port})"))
            .unwrap_or_else(|| format!("unknown server ({port})"))
    }

    fn tally(&self, ports: &[u16]) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for &p in ports {
            *m.entry(self.name(p)).or_insert(0) += 1;
        }
        m
    }
}

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(OP_TIMEOUT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: no answer within {OP_TIMEOUT:?}"),
    }
}

/// Rows of a simple query as text, or the error.
async fn try_rows(
    c: &Client,
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>, tokio_postgres::Error> {
    let msgs = within(sql, c.simple_query(sql)).await?;
    Ok(msgs
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect())
}

async fn rows(c: &Client, sql: &str) -> Vec<Vec<Option<String>>> {
    try_rows(c, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e} ({e:?})"))
}

/// `(port, second column)` of a query whose first column is `inet_server_port()`.
async fn port_and(c: &Client, sql: &str) -> (u16, Option<String>) {
    let r = rows(c, sql).await;
    assert!(!r.is_empty(), "{sql}: no row");
    let port = r[0][0]
        .as_deref()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{sql}: first column is not a port: {:?}", r[0]));
    (port, r[0].get(1).cloned().flatten())
}

async fn port(c: &Client, sql: &str) -> u16 {
    port_and(c, sql).await.0
}

fn code(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|s| s.code().to_string())
        .unwrap_or_else(|| format!("(no SQLSTATE: {e})"))
}

async fn execute(c: &Client, sql: &str) {
    within(sql, c.batch_execute(sql))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e} ({e:?})"));
}

async fn status(proxy: &Proxy) -> serde_json::Value {
    within("GET /status", proxy.status()).await
}

/// The `/status` entry of backend `name`.
fn backend<'a>(s: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    s["backends"]
        .as_array()
        .and_then(|bs| bs.iter().find(|b| b["name"] == name))
        .unwrap_or_else(|| panic!("no backend {name} in /status: {s}"))
}

/// Pauses replay on both replicas and waits until the proxy has seen it.
async fn pause_replicas(c: &Arc<LocalCluster>, proxy: &Proxy) {
    blocking({
        let c = c.clone();
        move || {
            for r in c.replicas() {
                r.pause_replay().expect("pause_replay");
            }
        }
    })
    .await;
    wait_replay_paused(proxy).await;
}

/// Waits until the proxy has seen replay paused on both replicas.
async fn wait_replay_paused(proxy: &Proxy) {
    wait_status(
        proxy,
        "replay paused on pg1 and pg2",
        Duration::from_secs(30),
        |s| {
            backend(s, "pg1")["replay_paused"] == true && backend(s, "pg2")["replay_paused"] == true
        },
    )
    .await;
}

/// Polls `/status` until `pred` holds; returns the time it took. Panics after `timeout`.
async fn wait_status(
    proxy: &Proxy,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> Duration {
    let t0 = Instant::now();
    loop {
        let s = status(proxy).await;
        if pred(&s) {
            return t0.elapsed();
        }
        if t0.elapsed() >= timeout {
            panic!("waited {timeout:?} for the proxy's monitor to see {what}; /status: {s:#}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `pg0` primary, `pg1`/`pg2` replicas, all up.
fn cluster_ready(s: &serde_json::Value) -> bool {
    ["pg0", "pg1", "pg2"].iter().all(|n| {
        let b = backend(s, n);
        let primary = *n == "pg0";
        b["up"] == true
            && b["primary"] == primary
            && b["role"] == if primary { "primary" } else { "replica" }
    })
}

/// A private cluster with table `f (id int primary key, v text)` owned by the app user, and a
/// proxy with fast health checks plus `routing` (the `[routing]` table's body).
async fn setup(routing: &str) -> (Arc<LocalCluster>, Proxy, Ports) {
    setup_with(&format!("rise = {RISE}"), routing).await
}

/// [`setup`] with `health` as the `[health]` lines besides the interval (and `fall`, unless
/// they set it).
async fn setup_with(health: &str, routing: &str) -> (Arc<LocalCluster>, Proxy, Ports) {
    let c = tokio::task::spawn_blocking(|| {
        let c = own_cluster(2);
        c.primary()
            .psql_db(
                APP_DB,
                "SET ROLE app; CREATE TABLE f (id int PRIMARY KEY, v text); \
                 INSERT INTO f VALUES (0, 'seed')",
            )
            .expect("creating table f");
        c.wait_replicas_caught_up(Duration::from_secs(60))
            .expect("replicas catching up");
        Arc::new(c)
    })
    .await
    .unwrap();
    // (`fall` is FALL unless `health` says otherwise.)
    let fall = if health.contains("fall =") {
        String::new()
    } else {
        format!("fall = {FALL}\n")
    };
    let extra = format!(
        "[health]\ninterval = \"{}ms\"\n{fall}{health}\n\n[routing]\n{routing}\n",
        INTERVAL.as_millis()
    );
    let c2 = c.clone();
    // FAILOVER_PROXY_LOG sets the proxy's RUST_LOG (default info), for debugging.
    let opts = support::proxy::ProxyOptions {
        extra_tables: extra,
        env: vec![(
            "RUST_LOG".into(),
            std::env::var("FAILOVER_PROXY_LOG").unwrap_or_else(|_| "info".into()),
        )],
        ..Default::default()
    };
    let proxy = tokio::task::spawn_blocking(move || Proxy::start_with(&c2, opts))
        .await
        .unwrap();
    wait_status(
        &proxy,
        "pg0 as primary and pg1, pg2 as replicas",
        Duration::from_secs(30),
        cluster_ready,
    )
    .await;
    let ports = Ports::of(&c);
    (c, proxy, ports)
}

/// Promotes pg1 once the replicas have caught up, SIGKILLing the primary first if asked;
/// returns when the promotion was done.
async fn promote_pg1(c: &Arc<LocalCluster>, kill_primary: bool) -> Instant {
    let c = c.clone();
    blocking(move || {
        c.wait_replicas_caught_up(Duration::from_secs(30)).unwrap();
        if kill_primary {
            c.primary().kill();
        }
        c.replicas()[0].promote().expect("promoting pg1");
        Instant::now()
    })
    .await
}

/// A client of the proxy that speaks the protocol itself, logged in as the app user.
async fn raw_app(proxy: &Proxy) -> support::raw::Raw {
    support::raw::login_app(&proxy.addr(), &[]).await.raw
}

/// Runs a blocking node operation off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// The value of one `/metrics` series, `None` when the proxy exports no such series.
async fn series(proxy: &Proxy, name: &str) -> Option<f64> {
    let (_, body) = proxy.http_get("/metrics").await;
    body.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// Roles and lags as `/metrics` shows them: `switchyard_backend_role` of each backend, and
/// whether a `switchyard_replica_lag_bytes` series exists for it (only while its lag is known).
async fn roles_and_lags(proxy: &Proxy) -> Vec<(String, Option<f64>, bool)> {
    let mut out = Vec::new();
    for b in ["pg0", "pg1", "pg2"] {
        let role = series(
            proxy,
            &format!("switchyard_backend_role{{backend=\"{b}\"}}"),
        )
        .await;
        let lag = series(
            proxy,
            &format!("switchyard_replica_lag_bytes{{backend=\"{b}\"}}"),
        )
        .await
        .is_some();
        out.push((b.to_string(), role, lag));
    }
    out
}

async fn wait_reads_reach(proxy: &Proxy, p: &Ports, want: &[&str], timeout: Duration) {
    let c = proxy.connect_app().await;
    let t0 = Instant::now();
    let mut seen = Vec::new();
    loop {
        if let Ok(r) = try_rows(&c, "SELECT inet_server_port()").await {
            seen.push(r[0][0].as_deref().unwrap().parse::<u16>().unwrap());
        }
        if want.iter().all(|n| seen.contains(&p.port(n))) {
            return;
        }
        if t0.elapsed() > timeout {
            panic!(
                "reads did not reach {want:?} within {timeout:?}: {:?}",
                p.tally(&seen)
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// read-your-writes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_with_replay_paused_everywhere() {
    let (c, proxy, p) = setup("").await;
    // Both replicas stop replaying: nothing written from now on is visible there.
    pause_replicas(&c, &proxy).await;

    let writer = proxy.connect_app().await;
    let other = proxy.connect_app().await;
    let eventual = proxy.connect_app().await;
    execute(&eventual, "SET switchyard.consistency = eventual").await;

    // A writer that leaves at once (its Terminate in the same packet as its write): the
    // commit position is still being read back when its session ends, and is handed on, so
    // the same user's next read still sees the write.
    for i in 301..=303 {
        let mut raw = raw_app(&proxy).await;
        let mut out = bytes::BytesMut::new();
        postgres_protocol::message::frontend::query(
            &format!("INSERT INTO f VALUES ({i}, 'left')"),
            &mut out,
        )
        .unwrap();
        postgres_protocol::message::frontend::terminate(&mut out);
        raw.send(&out).await.unwrap();
        let frames = raw.expect_closed(OP_TIMEOUT, "a writer that left").await;
        assert!(
            frames.iter().any(|f| f.tag == b'C'),
            "the write did not complete: {frames:?}"
        );
        let (at, n) = port_and(
            &other,
            &format!("SELECT inet_server_port(), count(*) FROM f WHERE id = {i}"),
        )
        .await;
        assert_eq!(
            n.as_deref(),
            Some("1"),
            "read-your-writes: the write of a session that left at once was not seen by \
             another session of the same user (read ran on {})",
            p.name(at)
        );
        // (The replicas take reads meanwhile: the read above had one to avoid.)
        let (at, _) = port_and(&eventual, "SELECT inet_server_port(), 1").await;
        assert_ne!(
            at,
            p.port("pg0"),
            "consistency = eventual read on the primary"
        );
    }

    for i in 1..=5 {
        let w = port(
            &writer,
            &format!("INSERT INTO f VALUES ({i}, 'w') RETURNING inet_server_port()"),
        )
        .await;
        assert_eq!(w, p.port("pg0"), "write {i} ran on {}", p.name(w));
        let probe = format!("SELECT inet_server_port(), count(*) FROM f WHERE id = {i}");

        // Same session, at once.
        let (at, n) = port_and(&writer, &probe).await;
        assert_eq!(
            n.as_deref(),
            Some("1"),
            "read-your-writes: the writing session did not see write {i} (read ran on {})",
            p.name(at)
        );
        // Another session of the same user (user scope is the default).
        let (at, n) = port_and(&other, &probe).await;
        assert_eq!(
            n.as_deref(),
            Some("1"),
            "read-your-writes: another session of the same user did not see write {i} \
             (read ran on {})",
            p.name(at)
        );
        // Extended protocol too.
        let row = within(
            "extended read",
            other.query_one(
                "SELECT inet_server_port(), count(*) FROM f WHERE id = $1",
                &[&i],
            ),
        )
        .await
        .unwrap();
        assert_eq!(
            row.get::<_, i64>(1),
            1,
            "read-your-writes (extended protocol): write {i} not seen (read ran on {})",
            p.name(row.get::<_, i32>(0) as u16)
        );
        // A session under eventual consistency reads from a (paused) replica.
        let (at, n) = port_and(&eventual, &probe).await;
        assert!(
            at != p.port("pg0"),
            "consistency = eventual: the read should run on a replica, ran on {}",
            p.name(at)
        );
        assert_eq!(
            n.as_deref(),
            Some("0"),
            "a replica with replay paused cannot have write {i} (read ran on {})",
            p.name(at)
        );
    }

    // A write followed at once by a read in an eventual session: the read goes to a replica
    // and does not see the write.
    let mut wrong = Vec::new();
    for i in 101..=105 {
        let w = port(
            &eventual,
            &format!("INSERT INTO f VALUES ({i}, 'e') RETURNING inet_server_port()"),
        )
        .await;
        assert_eq!(w, p.port("pg0"));
        let (at, n) = port_and(
            &eventual,
            &format!("SELECT inet_server_port(), count(*) FROM f WHERE id = {i}"),
        )
        .await;
        if at == p.port("pg0") || n.as_deref() != Some("0") {
            wrong.push(format!(
                "write {i}: read ran on {} and saw {n:?} rows",
                p.name(at)
            ));
        }
    }
    // (Checked at the end, so that the rest runs too.)

    // Replay resumes: read-your-writes keeps holding while replicas serve reads again.
    blocking({
        let c = c.clone();
        move || {
            for r in c.replicas() {
                r.resume_replay().expect("resume_replay");
            }
        }
    })
    .await;
    for i in 201..=220 {
        port(
            &writer,
            &format!("INSERT INTO f VALUES ({i}, 'r') RETURNING inet_server_port()"),
        )
        .await;
        let (at, n) = port_and(
            &other,
            &format!("SELECT inet_server_port(), count(*) FROM f WHERE id = {i}"),
        )
        .await;
        assert_eq!(
            n.as_deref(),
            Some("1"),
            "read-your-writes after resume: write {i} not seen by another session (read on {})",
            p.name(at)
        );
    }
    // And with nothing new written, reads are back on the replicas.
    let t0 = Instant::now();
    loop {
        let at = port(&other, "SELECT inet_server_port()").await;
        if at != p.port("pg0") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "reads never went back to the replicas after replay resumed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        wrong.is_empty(),
        "consistency = eventual: a read right after the session's own write should run on \
         a replica (and not see the write):\n{}",
        wrong.join("\n")
    );
}

/// `[routing]` for the scope test: lag never excludes the paused replicas, plus `scope`.
fn scope_routing(scope: &str) -> String {
    format!("max_replica_lag = \"1h\"\n{scope}")
}

/// Rewrites the config with the usual health checks and `routing`, and reloads it.
async fn reload_routing(proxy: &Proxy, routing: &str) {
    proxy.rewrite_config(&format!(
        "[health]\ninterval = \"{}ms\"\nfall = {FALL}\nrise = {RISE}\n\n[routing]\n{routing}\n",
        INTERVAL.as_millis()
    ));
    within("reload", proxy.reload_ok()).await;
}

/// Inserts row `id` of `f` (through `c`), checking it ran on the primary.
async fn write_row(c: &Client, p: &Ports, id: i32) {
    let w = port(
        c,
        &format!("INSERT INTO f VALUES ({id}, 'scope') RETURNING inet_server_port()"),
    )
    .await;
    assert_eq!(w, p.port("pg0"), "write {id} ran on {}", p.name(w));
}

/// Whether `c` sees row `id` of `f`, and the port of the server it read on.
async fn sees(c: &Client, id: i32) -> (bool, u16) {
    let (at, n) = port_and(
        c,
        &format!("SELECT inet_server_port(), count(*) FROM f WHERE id = {id}"),
    )
    .await;
    (n.as_deref() == Some("1"), at)
}

/// `ryw_scope`: whose writes a read must see. `user` (the default): the writer's other
/// sessions (a pinned one's too), not other users'; `global`: every session's, any user's;
/// `session`: only the writing session's. Replay is paused on both replicas, so a read sent to a replica cannot
/// see a write made since; the scope is changed by reloads, which keep the recorded writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_scope_user_global_and_session() {
    let (c, proxy, p) = setup(&scope_routing("")).await;
    // (Pinned before replay pauses: its pinning statement's position is replayed.)
    let pinned = proxy.connect_app().await;
    execute(&pinned, "SELECT pg_advisory_lock(42)").await;
    blocking({
        let c = c.clone();
        move || {
            c.primary()
                .psql_db(APP_DB, &format!("GRANT SELECT ON f TO {OTHER_USER}"))
                .expect("granting");
            c.wait_replicas_caught_up(Duration::from_secs(60))
                .expect("replicas catching up");
            for r in c.replicas() {
                r.pause_replay().expect("pause_replay");
            }
        }
    })
    .await;
    wait_replay_paused(&proxy).await;
    let writer = proxy.connect_app().await;
    let same_user = proxy.connect_app().await;
    let other_user = within("connect", proxy.connect(OTHER_USER, OTHER_PASSWORD, APP_DB)).await;
    // user (the default). A pinned client's writes count too (its requests run on its own
    // connection, never routed).
    write_row(&pinned, &p, 10).await;
    let (seen, at) = sees(&same_user, 10).await;
    assert!(
        seen,
        "scope user: another session of the user did not see a pinned session's write (read \
         on {})",
        p.name(at)
    );
    write_row(&writer, &p, 1).await;
    let (seen, at) = sees(&same_user, 1).await;
    assert!(
        seen,
        "scope user: another session of the writer's user did not see its write (read on {})",
        p.name(at)
    );
    let (seen, at) = sees(&other_user, 1).await;
    assert!(
        !seen && at != p.port("pg0"),
        "scope user: another user's read should not wait for the write (read on {}, saw it: {seen})",
        p.name(at)
    );
    // global.
    reload_routing(&proxy, &scope_routing("ryw_scope = \"global\"")).await;
    write_row(&writer, &p, 2).await;
    let (seen, at) = sees(&other_user, 2).await;
    assert!(
        seen,
        "scope global: another user did not see the write (read on {})",
        p.name(at)
    );
    let (seen, at) = sees(&same_user, 2).await;
    assert!(
        seen,
        "scope global: another session did not see the write (read on {})",
        p.name(at)
    );

    // session.
    reload_routing(&proxy, &scope_routing("ryw_scope = \"session\"")).await;
    write_row(&writer, &p, 3).await;
    let (seen, at) = sees(&writer, 3).await;
    assert!(
        seen,
        "scope session: the writing session did not see its own write (read on {})",
        p.name(at)
    );
    let (seen, at) = sees(&same_user, 3).await;
    assert!(
        !seen && at != p.port("pg0"),
        "scope session: another session of the same user should not wait for the write (read \
         on {}, saw it: {seen})",
        p.name(at)
    );
    let (seen, at) = sees(&other_user, 3).await;
    assert!(
        !seen && at != p.port("pg0"),
        "scope session: another user's read should not wait for the write (read on {}, saw it: \
         {seen})",
        p.name(at)
    );
}

/// A read sent to the primary by a hint is not a write: it must not raise the user's
/// read-your-writes position (which would keep the user's reads off replicas that are
/// behind only on other people's writes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_hinted_read_does_not_raise_the_read_your_writes_position() {
    let (c, proxy, p) = setup("").await;
    blocking({
        let c = c.clone();
        move || {
            for r in c.replicas() {
                r.pause_replay().expect("pause_replay");
            }
            // Someone else writes directly on the primary: the replicas are behind, but this
            // proxy's users wrote nothing.
            c.primary()
                .psql_db(APP_DB, "INSERT INTO f VALUES (1, 'direct')")
                .unwrap();
        }
    })
    .await;
    wait_status(
        &proxy,
        "pg1 and pg2 paused and behind",
        Duration::from_secs(30),
        |s| {
            ["pg1", "pg2"].iter().all(|n| {
                let b = backend(s, n);
                b["replay_paused"] == true && b["lag_bytes"].as_u64().unwrap_or(0) > 0
            })
        },
    )
    .await;
    let a = proxy.connect_app().await;
    let b = proxy.connect_app().await;
    let before = port(&b, "SELECT inet_server_port()").await;
    assert_ne!(
        before,
        p.port("pg0"),
        "no write went through the proxy: reads should use the replicas"
    );
    for _ in 0..3 {
        let at = port(&a, "/* switchyard:primary */ SELECT inet_server_port()").await;
        assert_eq!(at, p.port("pg0"));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut seen = Vec::new();
    for _ in 0..10 {
        seen.push(port(&b, "SELECT inet_server_port()").await);
    }
    assert!(
        !seen.contains(&p.port("pg0")),
        "after primary-hinted reads (no write), the user's reads should stay on replicas: {:?}",
        p.tally(&seen)
    );
}

/// The `/status` position of backend `name` (`None` while unknown).
fn lsn_of(s: &serde_json::Value, name: &str) -> Option<Lsn> {
    backend(s, name)["lsn"]
        .as_str()
        .and_then(|l| l.parse().ok())
}

/// A standby that comes back from a crash behind what it had replayed (hot standby reopens
/// from its last restartpoint, and its commits are now applied an hour late) is trusted only
/// as far as it says: a session's read-your-writes read does not go there for a write it had
/// replayed before. (The highest position it was ever seen at was kept, so the read ran on it
/// and missed the write.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_restarted_behind_a_write_it_had_replayed_is_not_read_for_it() {
    let (c, proxy, p) = setup(&scope_routing("ryw_scope = \"session\"")).await;
    blocking({
        let c = c.clone();
        move || {
            // Only pg2 is to have the write; pg1 stops replaying before it.
            c.replicas()[0].pause_replay().expect("pausing pg1");
            // A restartpoint on pg2 before the write: its crash recovery replays from there.
            c.primary().psql("CHECKPOINT").expect("checkpoint on pg0");
            let at = c.primary().flush_wal().expect("flushing pg0's WAL");
            let pg2 = &c.replicas()[1];
            pg2.wait_replay(at, Duration::from_secs(30))
                .expect("pg2 replaying the checkpoint");
            pg2.psql("CHECKPOINT").expect("restartpoint on pg2");
        }
    })
    .await;
    wait_status(&proxy, "pg1 paused", Duration::from_secs(30), |s| {
        backend(s, "pg1")["replay_paused"] == true
    })
    .await;
    let a = proxy.connect_app().await;
    write_row(&a, &p, 1).await;
    // (The insert position: commits are asynchronous in these clusters, so the written one
    // may not have the write's commit yet.)
    let after_write: Lsn = blocking({
        let c = c.clone();
        move || c.primary().psql("SELECT pg_current_wal_insert_lsn()")
    })
    .await
    .expect("pg0's position")
    .parse()
    .expect("an LSN");
    wait_status(&proxy, "pg2 past the write", Duration::from_secs(30), |s| {
        lsn_of(s, "pg2").is_some_and(|l| l >= after_write)
    })
    .await;
    // pg2 crashes and restarts, applying commits an hour after they were made: it is back
    // in hot standby without the write's commit.
    blocking({
        let c = c.clone();
        move || {
            let pg2 = &c.replicas()[1];
            pg2.psql("ALTER SYSTEM SET recovery_min_apply_delay = '1h'")
                .expect("delaying pg2");
            pg2.kill();
            pg2.start().expect("restarting pg2");
        }
    })
    .await;
    wait_status(
        &proxy,
        &format!("pg2 up again, behind the write's {after_write}"),
        Duration::from_secs(30),
        |s| {
            let b = backend(s, "pg2");
            b["up"] == true
                && b["role"] == "replica"
                && lsn_of(s, "pg2").is_some_and(|l| l < after_write)
        },
    )
    .await;
    // pg2 takes the reads that need nothing it lacks (it is not out for its lag)...
    wait_reads_reach(&proxy, &p, &["pg2"], Duration::from_secs(30)).await;
    // ...but not the writing session's.
    let mut stale = Vec::new();
    for _ in 0..10 {
        let (seen, at) = sees(&a, 1).await;
        if !seen {
            stale.push(p.name(at));
        }
    }
    let s = status(&proxy).await;
    assert!(
        stale.is_empty(),
        "read-your-writes: the writing session missed its write in {} of 10 reads, on {stale:?} \
         (pg2 is back at {:?}, behind the write's {after_write})",
        stale.len(),
        lsn_of(&s, "pg2").map(|l| l.to_string())
    );
}

/// The database's volatile functions are read again every 30 s, but not on a replica behind
/// the primary: a function created directly on the primary while replay is paused is missing
/// there, and a list read there passed for fresh for 30 s more (again and again while the
/// replica stayed behind), so reads calling the function kept going to replicas after they
/// caught up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_volatile_functions_are_not_read_again_on_a_replica_behind() {
    let (c, proxy, p) = setup("consistency = \"eventual\"\nmax_replica_lag = \"1h\"").await;
    let client = proxy.connect_app().await;
    // The first read of the list, wherever it runs: every server is caught up.
    let first = port(&client, "SELECT inet_server_port()").await;
    let read_at = Instant::now();
    assert_ne!(first, p.port("pg0"), "an eventual read ran on the primary");
    pause_replicas(&c, &proxy).await;
    blocking({
        let c = c.clone();
        move || {
            c.primary()
                .psql_db(
                    APP_DB,
                    "SET ROLE app; CREATE FUNCTION vnow() RETURNS int LANGUAGE sql VOLATILE \
                     AS 'SELECT inet_server_port()'",
                )
                .expect("creating vnow() on pg0")
        }
    })
    .await;
    // The list falls due while every read lands on a paused replica.
    tokio::time::sleep(
        (read_at + Duration::from_secs(31)).saturating_duration_since(Instant::now()),
    )
    .await;
    for _ in 0..20 {
        let at = port(&client, "SELECT inet_server_port()").await;
        assert_ne!(at, p.port("pg0"), "an eventual read ran on the primary");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    blocking({
        let c = c.clone();
        move || {
            for r in c.replicas() {
                r.resume_replay().expect("resume_replay");
            }
            c.wait_replicas_caught_up(Duration::from_secs(30))
                .expect("replicas catching up");
        }
    })
    .await;
    // Caught up, a replica reads the list at its next checkout: vnow() is soon known, long
    // before the 30 s a list read on the paused replica would have passed for fresh.
    let t0 = Instant::now();
    let mut seen = Vec::new();
    loop {
        let at = port(&client, "SELECT vnow()").await;
        seen.push(at);
        if at == p.port("pg0") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "vnow(), volatile, still ran on replicas {:?} after they caught up ({:?} since the \
             first read of the list)",
            p.tally(&seen),
            read_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..5 {
        let at = port(&client, "SELECT vnow()").await;
        assert_eq!(at, p.port("pg0"), "vnow() ran on {}", p.name(at));
    }
}

// ---------------------------------------------------------------------------------------------
// lag

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_replica_gets_no_reads_until_it_catches_up() {
    let (c, proxy, p) = setup("max_replica_lag = \"1s\"").await;
    wait_reads_reach(&proxy, &p, &["pg1", "pg2"], Duration::from_secs(30)).await;

    // pg1 stops replaying while the primary keeps writing (directly, not through the proxy).
    blocking({
        let c = c.clone();
        move || c.replicas()[0].pause_replay().expect("pause_replay")
    })
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let stop = stop.clone();
        let written = written.clone();
        let cs = c.primary().conn_string(APP_USER, APP_PASSWORD, APP_DB);
        tokio::spawn(async move {
            let (client, conn) = tokio_postgres::connect(&cs, tokio_postgres::NoTls)
                .await
                .expect("connecting to the primary");
            tokio::spawn(conn);
            let mut i = 1000;
            while !stop.load(Ordering::Relaxed) {
                client
                    .batch_execute(&format!("INSERT INTO f VALUES ({i}, 'lag')"))
                    .await
                    .expect("writing on the primary");
                written.fetch_add(1, Ordering::Relaxed);
                i += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let took = wait_status(
        &proxy,
        "pg1 more than 1 s behind",
        Duration::from_secs(30),
        |s| backend(s, "pg1")["lag_ms"].as_u64().unwrap_or(0) > 1000,
    )
    .await;
    eprintln!("pg1 reported over the lag limit after {took:?}");
    // Now pg1 gets no reads; pg2 (fresh) gets them all.
    let reused = proxy.connect_app().await;
    let mut seen = Vec::new();
    for i in 0..30 {
        let at = if i % 2 == 0 {
            port(&reused, "SELECT inet_server_port()").await
        } else {
            let fresh = proxy.connect_app().await;
            port(&fresh, "SELECT inet_server_port()").await
        };
        seen.push(at);
    }
    let s = status(&proxy).await;
    assert!(
        seen.iter().all(|&x| x == p.port("pg2")),
        "with pg1 lagging (lag_ms {}), reads should all go to pg2: {:?}",
        backend(&s, "pg1")["lag_ms"],
        p.tally(&seen)
    );

    // Replay resumes: pg1 catches up and gets reads again (the primary keeps writing).
    blocking({
        let c = c.clone();
        move || c.replicas()[0].resume_replay().expect("resume_replay")
    })
    .await;
    wait_status(
        &proxy,
        "pg1 within the lag limit again",
        Duration::from_secs(30),
        |s| {
            let b = backend(s, "pg1");
            b["replay_paused"] == false && b["lag_ms"].as_u64().is_some_and(|l| l < 1000)
        },
    )
    .await;
    wait_reads_reach(&proxy, &p, &["pg1", "pg2"], Duration::from_secs(30)).await;
    stop.store(true, Ordering::Relaxed);
    within("writer task", writer).await.unwrap();
    assert!(written.load(Ordering::Relaxed) > 10);
}

// ---------------------------------------------------------------------------------------------
// a replica goes away and comes back

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_replica_stops_getting_reads_and_gets_them_back_after_start() {
    let (c, proxy, p) = setup("").await;
    wait_reads_reach(&proxy, &p, &["pg1", "pg2"], Duration::from_secs(30)).await;
    let lags = roles_and_lags(&proxy).await;
    let want = |b: &str, role: f64, lag: bool| (b.to_string(), Some(role), lag);
    assert_eq!(
        lags,
        [
            want("pg0", 1.0, false),
            want("pg1", 0.0, true),
            want("pg2", 0.0, true)
        ],
        "/metrics: the primary has no lag series, both replicas one"
    );
    let reused = proxy.connect_app().await;
    // Give the pools a connection to pg1 (they go stale when it stops).
    for _ in 0..10 {
        port(&reused, "SELECT inet_server_port()").await;
    }
    // Reads in flight when pg1 stops: its server processes end with a FATAL (a fast shutdown);
    // the reads are repeated on another server and their clients never hear of it.
    let sleeper = "SELECT inet_server_port(), pg_sleep(2) /* in flight at the stop */";
    let mut in_flight = Vec::new();
    for _ in 0..6 {
        let client = proxy.connect_app().await;
        in_flight.push(tokio::spawn(async move {
            let r = client.query_one(sleeper, &[]).await;
            r.map(|row| row.get::<_, i32>(0) as u16)
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = blocking({
            let c = c.clone();
            move || {
                c.replicas()[0].psql(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE query LIKE '%in flight at the stop%' AND pid <> pg_backend_pid()",
                )
            }
        })
        .await
        .expect("pg_stat_activity on pg1");
        if n.trim() != "0" {
            break;
        }
        assert!(Instant::now() < deadline, "no read in flight on pg1");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let stopped_at = blocking({
        let c = c.clone();
        move || {
            c.replicas()[0].stop();
            Instant::now()
        }
    })
    .await;
    // The monitor's view, polled on the side: when is pg1 marked down?
    let http = proxy.http_port();
    let marked_down = tokio::spawn(async move {
        loop {
            let (_, body) = support::proxy::http_get(http, "/status")
                .await
                .expect("GET /status");
            let s: serde_json::Value = serde_json::from_str(&body).expect("/status JSON");
            if backend(&s, "pg1")["up"] == false {
                return Some(stopped_at.elapsed());
            }
            if stopped_at.elapsed() > Duration::from_secs(60) {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    // Reads go on meanwhile; errors in this window are reported, not failed, but a read that
    // gets no answer within OP_TIMEOUT is a failure (checked at the end).
    let mut reused = reused;
    let mut window_errors = Vec::new();
    let mut hangs = Vec::new();
    while !marked_down.is_finished() {
        let sent_at = stopped_at.elapsed();
        match tokio::time::timeout(OP_TIMEOUT, reused.simple_query("SELECT inet_server_port()"))
            .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                window_errors.push(format!("{:?} {}: {e}", stopped_at.elapsed(), code(&e)))
            }
            Err(_) => {
                hangs.push(format!(
                    "a read sent {sent_at:?} after pg1 stopped got no answer within \
                     {OP_TIMEOUT:?}"
                ));
                reused = proxy.connect_app().await;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (i, read) in in_flight.into_iter().enumerate() {
        let r = tokio::time::timeout(Duration::from_secs(30), read)
            .await
            .expect("a read in flight at the stop never got an answer")
            .unwrap();
        match r {
            Ok(port) => assert_ne!(port, p.port("pg1"), "read {i} answered by the stopped pg1"),
            Err(e) => panic!(
                "read {i} in flight when pg1 stopped failed: {e} ({})",
                code(&e)
            ),
        }
    }
    let took = marked_down.await.unwrap();
    let Some(took) = took else {
        panic!(
            "pg1 was never marked down after it stopped: {:#}",
            status(&proxy).await
        );
    };
    eprintln!(
        "pg1 marked down {took:?} after it stopped; read errors meanwhile: {window_errors:?}; \
         hung reads: {hangs:?}"
    );

    let lags = roles_and_lags(&proxy).await;
    assert_eq!(
        lags[1],
        want("pg1", 0.0, false),
        "/metrics: a replica down keeps its last role and has no lag series"
    );
    assert_eq!(
        series(&proxy, "switchyard_backend_up{backend=\"pg1\"}").await,
        Some(0.0)
    );

    // From now on: no read error, and nothing is even tried on pg1.
    let unavailable = "switchyard_retries_total{reason=\"replica_unavailable\"}";
    let lost = "switchyard_retries_total{reason=\"server_lost\"}";
    let (u0, l0) = (proxy.metric(unavailable).await, proxy.metric(lost).await);
    let mut seen = Vec::new();
    let mut errors = Vec::new();
    for i in 0..40 {
        let fresh;
        let client = if i % 2 == 0 {
            &reused
        } else {
            fresh = proxy.connect_app().await;
            &fresh
        };
        match try_rows(client, "SELECT inet_server_port()").await {
            Ok(r) => seen.push(r[0][0].as_deref().unwrap().parse::<u16>().unwrap()),
            Err(e) => errors.push(format!("read {i}: {}: {e}", code(&e))),
        }
    }
    assert!(
        errors.is_empty(),
        "reads failed after pg1 was marked down:\n{}",
        errors.join("\n")
    );
    assert!(
        seen.iter().all(|&x| x == p.port("pg2")),
        "with pg1 down, reads should go to pg2: {:?}",
        p.tally(&seen)
    );
    let (u1, l1) = (proxy.metric(unavailable).await, proxy.metric(lost).await);
    assert_eq!(
        (u1, l1),
        (u0, l0),
        "once pg1 is marked down the proxy should not try it (retries counted)"
    );

    // pg1 starts again: it is marked up (rise x interval) and gets reads back.
    blocking({
        let c = c.clone();
        move || c.replicas()[0].start().expect("starting pg1 again")
    })
    .await;
    let took = wait_status(&proxy, "pg1 up again", Duration::from_secs(30), |s| {
        backend(s, "pg1")["up"] == true && backend(s, "pg1")["role"] == "replica"
    })
    .await;
    eprintln!("pg1 marked up {took:?} after the poll started");
    wait_reads_reach(&proxy, &p, &["pg1", "pg2"], Duration::from_secs(30)).await;
    // The reused client connection survived all of it.
    port(&reused, "SELECT inet_server_port()").await;
    assert!(
        hangs.is_empty(),
        "reads must never hang while a replica goes down (they are retried elsewhere):\n{}",
        hangs.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// the primary goes away

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promoted_replica_becomes_the_write_target() {
    let (c, proxy, p) = setup("").await;
    let mut client = proxy.connect_app().await;
    let w = port(
        &client,
        "INSERT INTO f VALUES (1, 'before') RETURNING inet_server_port()",
    )
    .await;
    assert_eq!(w, p.port("pg0"));

    // The primary dies; pg1 is promoted by someone else (not the proxy).
    let promoted_at = promote_pg1(&c, true).await;

    // Writes succeed on pg1 within a bounded time, without restarting the proxy.
    let limit = Duration::from_secs(30);
    let mut errors = Vec::new();
    let mut reconnects = 0;
    let mut i = 2;
    let at = loop {
        let sql = format!("INSERT INTO f VALUES ({i}, 'after') RETURNING inet_server_port()");
        i += 1;
        match try_rows(&client, &sql).await {
            Ok(r) => break r[0][0].as_deref().unwrap().parse::<u16>().unwrap(),
            Err(e) => {
                errors.push(format!("{:?}: {}: {e}", promoted_at.elapsed(), code(&e)));
                if client.is_closed() {
                    reconnects += 1;
                    client = proxy.connect_app().await;
                }
            }
        }
        assert!(
            promoted_at.elapsed() < limit,
            "no write succeeded within {limit:?} of the promotion; errors:\n{}\n/status: {:#}",
            errors.join("\n"),
            status(&proxy).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "first write after the promotion succeeded {:?} after it ({} errors before, {reconnects} \
         reconnects): {errors:?}",
        promoted_at.elapsed(),
        errors.len()
    );
    assert_eq!(
        at,
        p.port("pg1"),
        "the write after the promotion ran on {}",
        p.name(at)
    );
    let s = status(&proxy).await;
    assert_eq!(backend(&s, "pg1")["primary"], true, "{s:#}");
    // (pg1, on a new timeline, can win before the dead pg0 is marked down: fenced meanwhile.)
    wait_status(
        &proxy,
        "pg0 down",
        INTERVAL * FALL + Duration::from_secs(30),
        |s| backend(s, "pg0")["up"] == false,
    )
    .await;

    // More writes, on old and new connections, all on pg1; the data is there.
    let fresh = proxy.connect_app().await;
    for (k, cl) in [&client, &fresh].into_iter().enumerate() {
        for j in 0..3 {
            let id = 100 + k * 10 + j;
            let w = port(
                cl,
                &format!("INSERT INTO f VALUES ({id}, 'new') RETURNING inet_server_port()"),
            )
            .await;
            assert_eq!(w, p.port("pg1"), "write {id} ran on {}", p.name(w));
        }
    }
    let n = rows(
        &fresh,
        "/* switchyard:primary */ SELECT count(*) FROM f WHERE v IN ('before', 'new')",
    )
    .await;
    assert_eq!(n[0][0].as_deref(), Some("7"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_lost_with_the_old_primary_does_not_keep_reads_off_the_replicas() {
    let (c, proxy, p) = setup("").await;
    // pg2 streams from pg1 (cascading): it has exactly what pg1 has, and follows it onto the
    // new timeline after the promotion. pg1 then stops, so what pg0 writes next reaches
    // neither.
    blocking({
        let c = c.clone();
        move || {
            let (pg1, pg2) = (&c.replicas()[0], &c.replicas()[1]);
            pg2.follow(pg1).expect("pg2 following pg1");
            pg2.wait_streaming_from(pg1, Duration::from_secs(30))
                .expect("pg2 streaming from pg1");
            pg1.stop();
        }
    })
    .await;
    wait_status(
        &proxy,
        "pg1 down",
        INTERVAL * FALL + Duration::from_secs(30),
        |s| backend(s, "pg1")["up"] == false,
    )
    .await;

    // The app's write (about 1 MB of WAL) commits on pg0 only: the app user's read-your-writes
    // position is now past anything pg1 has.
    let client = proxy.connect_app().await;
    let w = port(
        &client,
        "INSERT INTO f SELECT g, repeat('x', 100) FROM generate_series(1000, 9000) g \
         RETURNING inet_server_port()",
    )
    .await;
    assert_eq!(w, p.port("pg0"));
    let lost_at = blocking({
        let c = c.clone();
        move || {
            let lsn = c.primary().current_wal_lsn().expect("pg0's position");
            // pg0 dies with the write; pg1 comes back and is promoted without it.
            c.primary().kill();
            let pg1 = &c.replicas()[0];
            pg1.start().expect("starting pg1");
            pg1.promote().expect("promoting pg1");
            lsn
        }
    })
    .await;
    let new_at = blocking({
        let c = c.clone();
        move || c.replicas()[0].current_wal_lsn().expect("pg1's position")
    })
    .await;
    assert!(
        lost_at.0 > new_at.0,
        "the scenario needs the lost write's position ({lost_at:?}) past the new primary's \
         ({new_at:?})"
    );
    wait_status(
        &proxy,
        "pg1 primary, pg2 its replica, pg0 down",
        Duration::from_secs(30),
        |s| {
            backend(s, "pg1")["primary"] == true
                && backend(s, "pg2")["up"] == true
                && backend(s, "pg2")["role"] == "replica"
                && backend(s, "pg0")["up"] == false
        },
    )
    .await;
    let lost = rows(
        &client,
        "/* switchyard:primary */ SELECT count(*) FROM f WHERE id >= 1000",
    )
    .await;
    assert_eq!(
        lost[0][0].as_deref(),
        Some("0"),
        "the write was lost with pg0"
    );

    // The app's reads go to pg2 again once it has replayed the new primary's start (before,
    // they waited for a position no server will ever reach and went to the primary for good).
    let t0 = Instant::now();
    let mut seen = Vec::new();
    while !seen.contains(&p.port("pg2")) {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the app's reads stayed off pg2: {:?}; /status: {:#}",
            p.tally(&seen),
            status(&proxy).await
        );
        seen.push(port(&client, "SELECT inet_server_port()").await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And a new write on the new timeline still keeps its own reads consistent.
    port(
        &client,
        "INSERT INTO f VALUES (20000, 'tl2') RETURNING inet_server_port()",
    )
    .await;
    let r = rows(&client, "SELECT count(*) FROM f WHERE id = 20000").await;
    assert_eq!(
        r[0][0].as_deref(),
        Some("1"),
        "read right after the write sees it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_primary_writes_fail_cleanly_and_reads_go_on() {
    let (c, proxy, p) = setup("primary_wait = \"1s\"").await;
    let client = proxy.connect_app().await;
    port(&client, "SELECT inet_server_port()").await;

    blocking({
        let c = c.clone();
        move || c.primary().stop()
    })
    .await;
    wait_status(
        &proxy,
        "no primary",
        INTERVAL * FALL + Duration::from_secs(30),
        |s| {
            backend(s, "pg0")["up"] == false
                && s["backends"]
                    .as_array()
                    .is_some_and(|bs| bs.iter().all(|b| b["primary"] == false))
        },
    )
    .await;

    // Writes wait primary_wait (1 s) for a primary before failing: the answer comes no
    // sooner (how much later is the machine's business; every wait is bounded by OP_TIMEOUT).
    let wait = Duration::from_secs(1);
    // Simple protocol.
    for sql in [
        "INSERT INTO f VALUES (1, 'x')",
        "UPDATE f SET v = 'y' WHERE id = 0",
        "SELECT nextval('f_seq_does_not_matter')",
    ] {
        let t0 = Instant::now();
        let r = try_rows(&client, sql).await;
        let took = t0.elapsed();
        match r {
            Ok(_) => panic!("{sql}: succeeded without a primary"),
            Err(e) => assert_eq!(code(&e), "57P03", "{sql}: {e}"),
        }
        assert!(
            took >= wait,
            "{sql}: failed after {took:?}, without waiting primary_wait ({wait:?})"
        );
    }
    // Extended protocol.
    let t0 = Instant::now();
    let r = within(
        "extended write",
        client.execute("INSERT INTO f VALUES ($1, 'x')", &[&2i32]),
    )
    .await;
    let took = t0.elapsed();
    match r {
        Ok(_) => panic!("extended-protocol write succeeded without a primary"),
        Err(e) => assert_eq!(code(&e), "57P03", "extended-protocol write: {e}"),
    }
    assert!(
        took >= wait,
        "extended write failed after {took:?}, without waiting primary_wait ({wait:?})"
    );
    // A read-write transaction.
    execute(&client, "BEGIN").await;
    let t0 = Instant::now();
    match try_rows(&client, "INSERT INTO f VALUES (3, 'x')").await {
        Ok(_) => panic!("a write in a transaction succeeded without a primary"),
        Err(e) => assert_eq!(code(&e), "57P03", "write in a transaction: {e}"),
    }
    let took = t0.elapsed();
    assert!(
        took >= wait,
        "write in a transaction failed after {took:?}, without waiting primary_wait ({wait:?})"
    );
    let _ = try_rows(&client, "ROLLBACK").await;

    // Reads work on the replicas, on this connection and on new ones.
    let mut seen = Vec::new();
    for i in 0..20 {
        let fresh;
        let cl = if i % 2 == 0 {
            &client
        } else {
            fresh = proxy.connect_app().await;
            &fresh
        };
        let (at, n) = port_and(
            cl,
            "SELECT inet_server_port(), count(*) FROM f WHERE id = 0",
        )
        .await;
        assert_eq!(n.as_deref(), Some("1"));
        seen.push(at);
    }
    assert!(
        seen.iter()
            .all(|&x| x == p.port("pg1") || x == p.port("pg2")),
        "reads without a primary: {:?}",
        p.tally(&seen)
    );
    let row = within(
        "extended read",
        client.query_one("SELECT inet_server_port()", &[]),
    )
    .await
    .expect("extended-protocol read without a primary");
    let at = row.get::<_, i32>(0) as u16;
    assert!(at == p.port("pg1") || at == p.port("pg2"));
}

/// A replica promoted while the old primary still runs (split brain, as when the old primary
/// was only cut off from whoever promoted): the promoted one is on a new timeline and wins at
/// once (not after its end-of-recovery checkpoint), the old one is fenced and its connections
/// cut, so a transaction open there never commits; a reload keeps that choice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_replica_wins_over_the_old_primary_still_running() {
    let (c, proxy, p) = setup("").await;
    let client = proxy.connect_app().await;
    // The client with the open transaction speaks the protocol itself: what it is told about
    // its COMMIT (the command tag included) matters.
    let mut open = raw_app(&proxy).await;
    open.query_ok("BEGIN").await;
    let w = open
        .query_ok(
            "INSERT INTO f VALUES (1, 'open on the old primary') RETURNING inet_server_port()",
        )
        .await
        .scalar();
    assert_eq!(w, p.port("pg0").to_string());
    // A pooled connection to pg1 while it is a standby: it told its clients
    // `in_hot_standby = on`, so it must not outlive the promotion.
    let mut standby_pid = None;
    for _ in 0..50 {
        let (port, pid) = port_and(
            &client,
            "/* switchyard:replica */ SELECT inet_server_port(), pg_backend_pid()",
        )
        .await;
        if port == p.port("pg1") {
            standby_pid = pid;
            break;
        }
    }
    let standby_pid = standby_pid.expect("no replica-hinted read reached pg1");

    let promoted_at = promote_pg1(&c, false).await;
    let split = |s: &serde_json::Value| {
        backend(s, "pg1")["primary"] == true
            && backend(s, "pg0")["role"] == "fenced"
            && backend(s, "pg0")["up"] == true
    };
    wait_status(
        &proxy,
        "pg1 primary, pg0 fenced",
        Duration::from_secs(20),
        split,
    )
    .await;
    eprintln!(
        "pg1 elected {:?} after its promotion",
        promoted_at.elapsed()
    );
    let gone = {
        let c = c.clone();
        blocking(move || {
            let alive = format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {standby_pid}");
            wait_until(Duration::from_secs(20), || {
                c.replicas()[0].psql(&alive).is_ok_and(|n| n == "0")
            })
        })
        .await
    };
    assert!(
        gone,
        "the idle connection opened to pg1 while it was a standby outlived its promotion"
    );
    let role = |b: &'static str| {
        let proxy = &proxy;
        async move {
            series(
                proxy,
                &format!("switchyard_backend_role{{backend=\"{b}\"}}"),
            )
            .await
        }
    };
    assert_eq!(
        (role("pg0").await, role("pg1").await),
        (Some(-2.0), Some(1.0)),
        "/metrics: the fenced old primary and the new one"
    );
    let mut i = 2;
    let mut write = || {
        i += 1;
        format!("INSERT INTO f VALUES ({i}, 'new') RETURNING inet_server_port()")
    };
    for _ in 0..3 {
        let w = port(&client, &write()).await;
        assert_eq!(w, p.port("pg1"), "a write ran on {}", p.name(w));
    }
    // The transaction open on pg0 lost its connection: the client is told its COMMIT did not
    // commit (an error such as 08006 or 25P02, or the tag ROLLBACK), and it commits nowhere.
    let r = within("COMMIT", open.query("COMMIT")).await;
    let told = match &r.error {
        Some(e) => format!("error {} ({})", e.code(), e.message()),
        None => format!("tags {:?}", r.tags),
    };
    let refused = r
        .error
        .as_ref()
        .is_some_and(|e| e.code().starts_with("08") || e.code() == "25P02");
    assert!(
        refused || (r.error.is_none() && r.tags == ["ROLLBACK"]),
        "the COMMIT of a transaction whose server connection was cut must not report success: \
         {told}"
    );
    assert!(
        !r.tags.iter().any(|t| t == "COMMIT"),
        "a COMMIT reported as done: {told}"
    );
    eprintln!("the COMMIT of the cut transaction was answered: {told}");
    let (on_old, on_new) = blocking({
        let c = c.clone();
        move || {
            let q = "SELECT count(*) FROM f WHERE id = 1";
            (
                c.primary().psql_db(APP_DB, q).unwrap(),
                c.replicas()[0].psql_db(APP_DB, q).unwrap(),
            )
        }
    })
    .await;
    assert_eq!(on_old, "0", "the old primary committed a transaction");
    assert_eq!(
        on_new, "0",
        "the cut transaction's row reached the new primary"
    );
    // The client goes on (ending its failed block first, if the answer left one open): its
    // next statement runs on the new primary.
    if r.status == b'E' {
        within("ROLLBACK", open.query_ok("ROLLBACK")).await;
    }
    let w = within(
        "a write after the cut",
        open.query_ok("INSERT INTO f VALUES (2, 'after the cut') RETURNING inet_server_port()"),
    )
    .await
    .scalar();
    assert_eq!(w, p.port("pg1").to_string(), "the write after the cut");

    // A reload that restarts the monitor (a [health] change) keeps pg1 and the fence.
    proxy.rewrite_config(&format!(
        "[health]\ninterval = \"{}ms\"\nfall = {FALL}\nrise = {RISE}\ntimeout = \"900ms\"\n",
        INTERVAL.as_millis()
    ));
    proxy.reload_ok().await;
    for _ in 0..20 {
        let s = status(&proxy).await;
        assert!(split(&s), "after the reload: {s:#}");
        let w = port(&client, &write()).await;
        assert_eq!(
            w,
            p.port("pg1"),
            "a write after the reload ran on {}",
            p.name(w)
        );
        tokio::time::sleep(INTERVAL / 2).await;
    }
}

/// A standby that replayed more than the server promoted in its place (asynchronous
/// replication: the promoted one was behind) cannot follow the new timeline, and stays in hot
/// standby on the old history, with rows the new primary does not have. Its replay position is
/// beyond the new primary's, so its lag reads as zero: it must take no reads all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_ahead_of_the_promoted_one_takes_no_reads() {
    let (c, proxy, p) = setup("consistency = \"eventual\"").await;
    let lost_at = {
        let c = c.clone();
        blocking(move || {
            // pg1 stops behind; pg2 goes on receiving rows the old primary then takes away.
            c.replicas()[0].stop();
            let end = lose_rows_on_pg0(&c);
            c.replicas()[0].start().expect("starting pg1");
            c.replicas()[0].promote().expect("promoting pg1");
            end
        })
        .await
    };
    eprintln!("pg2 replayed {lost_at:?}, which pg1 never had");
    pg2_diverged_and_unread(&proxy, &p).await;
    assert!(
        proxy
            .log()
            .contains("a standby has replayed past the primary's position"),
        "no error names the diverged standby"
    );
}

/// The same under writes (failover review): pg1, promoted, takes writes before it is elected,
/// so its position is past pg2's by the time it is. Compared only with the elected primary's
/// position, pg2 was kept as a replica with a lag, and read with the lost rows until that lag
/// passed `max_replica_lag` (here never). pg1's first answers as a primary, before any write,
/// show about where its timeline began: pg2 had replayed past that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_ahead_of_the_promoted_one_is_diverged_though_the_new_primary_writes_past_it() {
    // pg1 is elected only after 15 agreeing answers (3 s).
    let (c, proxy, p) = setup_with(
        "rise = 15",
        "consistency = \"eventual\"\nmax_replica_lag = \"1h\"",
    )
    .await;
    let lost_at = {
        let c = c.clone();
        blocking(move || {
            // pg1 stays up as a standby but receives nothing more; pg2 goes on receiving rows
            // the old primary then takes away.
            let pg1 = &c.replicas()[0];
            pg1.psql("ALTER SYSTEM SET primary_conninfo = ''").unwrap();
            pg1.psql("SELECT pg_reload_conf()").unwrap();
            let detached = wait_until(Duration::from_secs(30), || {
                pg1.psql("SELECT count(*) FROM pg_stat_wal_receiver")
                    .is_ok_and(|n| n == "0")
            });
            assert!(detached, "pg1's WAL receiver did not stop");
            lose_rows_on_pg0(&c)
        })
        .await
    };
    // The monitor has seen pg2 past where pg1's timeline will begin. (Without this, on a fast
    // machine pg1 could be promoted and take its writes before any probe answer of pg2's
    // showing the lost rows came in ahead of a probe of pg1's: nothing then tells the two
    // histories apart, the limit README states.)
    wait_status(
        &proxy,
        "pg2 past the lost rows",
        Duration::from_secs(20),
        |s| lsn_of(s, "pg2").is_some_and(|l| l >= lost_at),
    )
    .await;
    {
        let c = c.clone();
        blocking(move || c.replicas()[0].promote().expect("promoting pg1")).await;
    }
    // Its first answer as a primary, on its new timeline, has come in; it is not elected yet.
    wait_status(&proxy, "pg1 on timeline 2", Duration::from_secs(20), |s| {
        backend(s, "pg1")["timeline"] == 2
    })
    .await;
    let pg1_at = {
        let c = c.clone();
        blocking(move || {
            let pg1 = &c.replicas()[0];
            pg1.psql_db(
                APP_DB,
                "SET ROLE app; \
                 INSERT INTO f SELECT g, 'new' FROM generate_series(100001, 160000) g",
            )
            .expect("writing on pg1");
            pg1.flush_wal().expect("pg1's position")
        })
        .await
    };
    assert!(
        pg1_at > lost_at,
        "pg1 ({pg1_at:?}) must be past what pg2 replayed ({lost_at:?}) before it is elected"
    );
    let s = status(&proxy).await;
    assert_ne!(
        backend(&s, "pg1")["primary"],
        true,
        "pg1 was elected before it wrote past pg2: {s:#}"
    );
    pg2_diverged_and_unread(&proxy, &p).await;
}

/// Waits until pg1 is the primary and pg2 diverged (in `/metrics` too); then no read sees the
/// rows lost with the old primary (every read runs on pg1).
async fn pg2_diverged_and_unread(proxy: &Proxy, p: &Ports) {
    wait_status(
        proxy,
        "pg1 primary, pg2 diverged",
        Duration::from_secs(30),
        |s| backend(s, "pg1")["primary"] == true && backend(s, "pg2")["role"] == "diverged",
    )
    .await;
    assert_eq!(
        proxy
            .metric("switchyard_backend_role{backend=\"pg2\"}")
            .await,
        -4.0,
        "/metrics shows the diverged standby as such"
    );
    let client = proxy.connect_app().await;
    for _ in 0..20 {
        let rows = rows(
            &client,
            "SELECT inet_server_port(), count(*) FROM f WHERE v = 'lost'",
        )
        .await;
        let at: u16 = rows[0][0].as_deref().unwrap().parse().unwrap();
        assert_eq!(
            (p.name(at), rows[0][1].as_deref()),
            (p.name(p.port("pg1")), Some("0")),
            "a read ran on a server holding the old primary's lost rows"
        );
    }
}

/// Writes rows on pg0 that pg2 replays (pg1, stopped or detached, does not), then SIGKILLs
/// pg0: the rows are lost with it. Returns pg0's position after them.
fn lose_rows_on_pg0(c: &LocalCluster) -> switchyard::localpg::Lsn {
    c.primary()
        .psql_db(
            APP_DB,
            "SET ROLE app; INSERT INTO f SELECT g, 'lost' FROM generate_series(1, 20000) g",
        )
        .expect("writing on pg0");
    // (The commit flushed, should the cluster commit asynchronously.)
    let end = c.primary().flush_wal().expect("pg0's position");
    c.replicas()[1]
        .wait_replay(end, Duration::from_secs(60))
        .expect("pg2 replaying pg0's rows");
    c.primary().kill();
    end
}

/// SIGKILLs pg1 (the first replica's postmaster) and waits until the proxy sees it down.
async fn kill_pg1(c: &Arc<LocalCluster>, proxy: &Proxy) {
    {
        let c = c.clone();
        blocking(move || c.replicas()[0].kill()).await;
    }
    wait_status(proxy, "pg1 down", Duration::from_secs(20), |s| {
        backend(s, "pg1")["up"] == false
    })
    .await;
}

/// A standby seen promoted while the old primary still runs is elected only once `rise`
/// answers agree, but from its first answer on the old primary is not trusted: a write waits
/// for the new primary instead of landing on the old history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_stop_going_to_the_old_primary_as_soon_as_a_promotion_is_seen() {
    // pg1 is elected only after 50 agreeing answers (10 s).
    let (c, proxy, p) = setup_with("rise = 50", "primary_wait = \"60s\"").await;
    let client = proxy.connect_app().await;
    promote_pg1(&c, false).await;
    // Its first answer as a primary, on its new timeline, has come in.
    wait_status(&proxy, "pg1 on timeline 2", Duration::from_secs(20), |s| {
        backend(s, "pg1")["timeline"] == 2
    })
    .await;
    let w = port(
        &client,
        "INSERT INTO f VALUES (7, 'after the promotion') RETURNING inet_server_port()",
    )
    .await;
    assert_eq!(w, p.port("pg1"), "the write ran on {}", p.name(w));
    let on_pg0 = {
        let c = c.clone();
        blocking(move || {
            c.primary()
                .psql_db(APP_DB, "SELECT count(*) FROM f WHERE id = 7")
                .expect("reading pg0")
        })
        .await
    };
    assert_eq!(on_pg0, "0", "the write landed on the old primary too");
}

/// In the moments after the primary is lost, before the monitor has seen it down, a client
/// that connects in transaction pooling logs in on a replica (a login needs a server, not the
/// primary) and reads; a write fails at once with a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_right_after_the_primary_is_lost_goes_to_a_replica() {
    // The primary is seen down only after 100 failed probes (20 s).
    let (c, proxy, p) = setup_with(
        &format!("fall = 100\nrise = {RISE}"),
        // (A write waits this long for the monitor's word on the primary it cannot reach.)
        "consistency = \"eventual\"\nprimary_wait = \"1s\"",
    )
    .await;
    {
        let c = c.clone();
        blocking(move || c.primary().kill()).await;
    }
    for i in 0..5 {
        let client = proxy
            .try_connect(APP_USER, APP_PASSWORD, APP_DB)
            .await
            .unwrap_or_else(|e| panic!("login {i} after the primary was lost: {e}"));
        let at = port(&client, "SELECT inet_server_port()").await;
        assert_ne!(at, p.port("pg0"), "login {i} read on {}", p.name(at));
        if i == 0 {
            let e = within(
                "a write",
                client.simple_query("INSERT INTO f VALUES (10, 'lost') RETURNING 1"),
            )
            .await
            .expect_err("a write with the primary lost");
            assert!(code(&e).starts_with("08") || code(&e) == "57P03", "{e}");
        }
    }
    // All of it before the monitor saw the primary down.
    assert_eq!(
        backend(&status(&proxy).await, "pg0")["up"],
        true,
        "the logins were not made in the moments before the primary was seen down"
    );
}

/// A replica lost but not yet seen down (`fall` probes) is tried by one read, not by every
/// read: a checkout that cannot reach it keeps the next reads away from it for a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_stop_trying_a_lost_replica_before_it_is_seen_down() {
    // pg1 is seen down only after 100 failed probes (20 s).
    let (c, proxy, p) = setup_with(
        &format!("fall = 100\nrise = {RISE}"),
        "consistency = \"eventual\"",
    )
    .await;
    let client = proxy.connect_app().await;
    {
        let c = c.clone();
        blocking(move || c.replicas()[0].kill()).await;
    }
    let errors = r#"switchyard_server_connect_errors_total{backend="pg1"}"#;
    let before = proxy.metric(errors).await;
    let t0 = Instant::now();
    for _ in 0..100 {
        let at = port(&client, "SELECT inet_server_port()").await;
        assert_ne!(at, p.port("pg1"));
    }
    let tried = proxy.metric(errors).await - before;
    let seconds = t0.elapsed().as_secs_f64();
    assert_eq!(
        backend(&status(&proxy).await, "pg1")["up"],
        true,
        "the reads were not made before pg1 was seen down"
    );
    // About one attempt per second of reading (and not one for every other read).
    assert!(
        tried <= seconds.ceil() + 2.0,
        "{tried} connects to the lost replica during {seconds:.1} s of reads"
    );
}

/// A transaction block whose server connection was lost with the primary fails as a block
/// does: its next statements get 25P02 at once, not after waiting `primary_wait` for a
/// primary (the block is recreated, failed, on any server that serves reads), and a ROLLBACK
/// ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_lost_with_the_primary_fails_at_once() {
    let (c, proxy, p) = setup_with(
        &format!("rise = {RISE}"),
        "consistency = \"eventual\"\nprimary_wait = \"60s\"",
    )
    .await;
    let client = proxy.connect_app().await;
    execute(&client, "BEGIN").await;
    execute(&client, "INSERT INTO f VALUES (11, 'in the block')").await;
    {
        let c = c.clone();
        blocking(move || c.primary().kill()).await;
    }
    wait_status(&proxy, "pg0 down", Duration::from_secs(20), |s| {
        backend(s, "pg0")["up"] == false
    })
    .await;
    // The loss itself is reported once (08006), then the block is failed.
    let mut codes = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let e = within(
            "a statement in the lost block",
            client.simple_query("SELECT 1"),
        )
        .await
        .expect_err("a statement in a lost block");
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "a statement in the lost block waited {:?} ({e})",
            t.elapsed()
        );
        codes.push(code(&e));
    }
    assert_eq!(codes.last().map(String::as_str), Some("25P02"), "{codes:?}");
    execute(&client, "ROLLBACK").await;
    let at = port(&client, "SELECT inet_server_port()").await;
    assert_ne!(at, p.port("pg0"), "the read after the ROLLBACK");
}

/// A write that finds the primary refusing connections (killed, and not yet seen down by the
/// monitor, or restarting) waits for it as it would wait for a primary during a failover: it
/// runs once the server is back, instead of failing with 08006 at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_cannot_reach_the_primary_waits_for_it() {
    let (c, proxy, p) = setup("primary_wait = \"60s\"").await;
    let client = Arc::new(proxy.connect_app().await);
    execute(&client, "INSERT INTO f VALUES (21, 'before')").await;
    const CONNECT_ERRORS: &str = "switchyard_server_connect_errors_total{backend=\"pg0\"}";
    let before = series(&proxy, CONNECT_ERRORS).await.unwrap_or(0.0);
    {
        let c = c.clone();
        blocking(move || c.primary().kill()).await;
    }
    let write = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .simple_query("INSERT INTO f VALUES (22, 'while down')")
                .await
                .map(drop)
        }
    });
    // It tried the server and failed (the old behaviour answered 08006 right then).
    proxy
        .wait_metric(CONNECT_ERRORS, before + 1.0, OP_TIMEOUT)
        .await;
    assert!(
        !write.is_finished(),
        "the write was answered while the primary was down: {:?}",
        write.await
    );
    {
        let c = c.clone();
        blocking(move || c.primary().start().expect("restarting pg0")).await;
    }
    within("the write made while pg0 was down", write)
        .await
        .unwrap()
        .expect("a write made while the primary restarted");
    let (at, v) = port_and(&client, "SELECT inet_server_port(), v FROM f WHERE id = 22").await;
    assert_eq!(v.as_deref(), Some("while down"), "read on {}", p.name(at));
}

/// A replica down shows no lag and no streaming WAL receiver in `/status`, as `/metrics` has
/// no lag series for it: its last lag would go on growing with the primary's writes and read
/// as a replica that still replays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_down_shows_no_lag_in_status() {
    let (c, proxy, _) = setup("").await;
    wait_status(&proxy, "pg1's lag known", Duration::from_secs(20), |s| {
        backend(s, "pg1")["lag_bytes"].is_u64()
    })
    .await;
    kill_pg1(&c, &proxy).await;
    // The primary moves on.
    let client = proxy.connect_app().await;
    within(
        "a write",
        client.simple_query("INSERT INTO f VALUES (1, 'moves the primary on')"),
    )
    .await
    .expect("the write");
    tokio::time::sleep(INTERVAL * 3).await;
    let s = status(&proxy).await;
    let b = backend(&s, "pg1");
    assert!(
        b["lag_bytes"].is_null() && b["lag_ms"].is_null() && b["receiver_streaming"] == false,
        "pg1 down: {b:#}"
    );
    assert!(
        backend(&s, "pg2")["lag_bytes"].is_u64(),
        "pg2, up, lost its lag: {s:#}"
    );
}

/// A promotion cannot be undone: when the promoted standby is lost before `rise` answers
/// elected it, the old primary (still running, on the older timeline) stays fenced, and
/// writes fail cleanly instead of landing on the abandoned history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_lost_before_it_is_elected_keeps_the_old_primary_fenced() {
    // pg1 would be elected only after 50 agreeing answers (10 s).
    let (c, proxy, _) = setup_with("rise = 50", "primary_wait = \"1s\"").await;
    let client = proxy.connect_app().await;
    promote_pg1(&c, false).await;
    wait_status(&proxy, "pg1 on timeline 2", Duration::from_secs(20), |s| {
        backend(s, "pg1")["timeline"] == 2
    })
    .await;
    kill_pg1(&c, &proxy).await;
    // Long enough for several elections without pg1.
    tokio::time::sleep(INTERVAL * 5).await;
    let s = status(&proxy).await;
    assert!(
        ["pg0", "pg1", "pg2"]
            .iter()
            .all(|b| backend(&s, b)["primary"] == false),
        "a primary was elected after the promoted standby was lost: {s:#}"
    );
    let e = within(
        "a write with no primary",
        client.simple_query(
            "INSERT INTO f VALUES (8, 'after the loss') RETURNING inet_server_port()",
        ),
    )
    .await
    .expect_err("a write with only the old primary left must fail");
    assert_eq!(code(&e), "57P03", "{e}");
    let on_pg0 = {
        let c = c.clone();
        blocking(move || {
            c.primary()
                .psql_db(APP_DB, "SELECT count(*) FROM f WHERE id = 8")
                .expect("reading pg0")
        })
        .await
    };
    assert_eq!(on_pg0, "0", "the write landed on the old primary");
}

/// A reload that gives the monitor a wrong password (or a password rotated on the server
/// alone) makes every probe's login fail with 28P01. The server answered: the primary is not
/// taken down, and the connections in use there are not cut (an open transaction commits,
/// writes go on), while the log says what is wrong. Replicas, whose lag is then unknown, go
/// down once the grace a full server gets is over. Before, every backend went down after
/// `fall` probes and the clients' requests in flight failed with 08006.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_login_refused_by_the_primary_does_not_take_it_down() {
    let (c, proxy, p) = setup("").await;
    let client = proxy.connect_app().await;
    execute(&client, "BEGIN").await;
    let w = port(
        &client,
        "INSERT INTO f VALUES (11, 'open') RETURNING inet_server_port()",
    )
    .await;
    assert_eq!(w, p.port("pg0"));
    let good = proxy.config_text();
    assert!(good.contains("[health]\n"), "{good}");
    proxy.write_raw_config(&good.replacen(
        "[health]\n",
        &format!("[health]\nuser = \"{APP_USER}\"\npassword = \"wrong\"\n"),
        1,
    ));
    proxy.reload_ok().await;
    // The monitor's open connections logged in with the old password: end them.
    tokio::task::block_in_place(|| {
        c.primary()
            .psql_db(
                APP_DB,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE application_name = 'switchyard-monitor'",
            )
            .unwrap()
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while !proxy.log().contains("refused the monitor's login") {
        assert!(
            Instant::now() < deadline,
            "no probe was refused:\n{}",
            proxy.log_tail(30)
        );
        tokio::time::sleep(INTERVAL).await;
    }
    // Past the grace a server refusing the monitor a slot gets (at least 30 s), each probe
    // refused: the primary stays.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(36) {
        let s = status(&proxy).await;
        let pg0 = backend(&s, "pg0");
        assert!(
            pg0["up"] == true && pg0["role"] == "primary",
            "pg0 taken down for refusing the monitor's login: {s:#}\n{}",
            proxy.log_tail(20)
        );
        tokio::time::sleep(INTERVAL * 2).await;
    }
    // The replicas' lag is not known meanwhile: they are down by now, and reads run on the
    // primary.
    let s = status(&proxy).await;
    for r in ["pg1", "pg2"] {
        assert_eq!(backend(&s, r)["up"], false, "{r}: {s:#}");
    }
    // Why is shown (`/status`; SHOW BACKENDS shows the same) and counted (`/metrics`), for an alert.
    let why = backend(&s, "pg0")["probe_error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(why.contains("password authentication failed"), "{s:#}");
    let refused = "switchyard_probe_errors_total{backend=\"pg0\",kind=\"login_refused\"}";
    assert!(proxy.metric(refused).await >= 10.0, "{refused}");
    execute(&client, "COMMIT").await;
    assert_eq!(port(&client, "SELECT inet_server_port()").await, w);
    execute(&client, "INSERT INTO f VALUES (12, 'after')").await;
    let n = tokio::task::block_in_place(|| {
        c.primary()
            .psql_db(APP_DB, "SELECT count(*) FROM f WHERE id IN (11, 12)")
            .unwrap()
    });
    assert_eq!(n, "2", "the open transaction or the next write was lost");
    // The right password back: probes log in again.
    proxy.write_raw_config(&good);
    proxy.reload_ok().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = status(&proxy).await;
        if backend(&s, "pg0")["probe_error"].is_null() && backend(&s, "pg1")["up"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "probes still fail: {s:#}");
        tokio::time::sleep(INTERVAL).await;
    }
}

/// A primary that refuses the monitor's connection for lack of slots (53300: the role's
/// connection limit, or `max_connections`, filled by clients) is up, not lost: it is not taken
/// down, and the connections in use there are not cut (an open transaction commits). Not for
/// ever: past ten times `fall` probes, at least 30 s, the refusals count as failures (a server
/// whose every slot is held by sessions stuck on hung storage must go down), and once a slot
/// is free again it comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_too_full_for_the_monitor_stays_up() {
    let (c, proxy, p) = setup("").await;
    let client = proxy.connect_app().await;
    execute(&client, "BEGIN").await;
    let w = port(
        &client,
        "INSERT INTO f VALUES (9, 'open') RETURNING inet_server_port()",
    )
    .await;
    assert_eq!(w, p.port("pg0"));
    let admin = {
        let cs = c
            .primary()
            .conn_string(SUPERUSER, SUPERUSER_PASSWORD, APP_DB);
        let (a, conn) = within(
            "connect to pg0",
            tokio_postgres::connect(&cs, tokio_postgres::NoTls),
        )
        .await
        .expect("connecting to pg0");
        tokio::spawn(conn);
        a
    };
    let app_sessions = "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'";
    let n: i64 = within("count", admin.query_one(app_sessions, &[]))
        .await
        .unwrap()
        .get(0);
    // Every slot of the role is taken: the monitor's own one (it logs in as the first user)
    // goes to a direct connection.
    execute(&admin, &format!("ALTER ROLE app CONNECTION LIMIT {n}")).await;
    let mut held = Vec::new();
    let app_cs = c.primary().conn_string(APP_USER, APP_PASSWORD, APP_DB);
    let full_from = Instant::now();
    let deadline = full_from + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "the monitor kept its slot");
        execute(
            &admin,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'switchyard-monitor'",
        )
        .await;
        if let Ok((h, conn)) = tokio_postgres::connect(&app_cs, tokio_postgres::NoTls).await {
            tokio::spawn(conn);
            held.push(h);
        }
        let monitor: i64 = within(
            "count",
            admin.query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'switchyard-monitor'",
                &[],
            ),
        )
        .await
        .unwrap()
        .get(0);
        if monitor == 0 && !held.is_empty() {
            break;
        }
    }
    // Many probes' time: each one refused.
    let t0 = Instant::now();
    while t0.elapsed() < INTERVAL * (FALL * 4) {
        let s = status(&proxy).await;
        assert_eq!(
            backend(&s, "pg0")["up"],
            true,
            "pg0 taken down for refusing the monitor a slot: {s:#}\n{}",
            proxy.log_tail(20)
        );
        tokio::time::sleep(INTERVAL / 2).await;
    }
    assert!(
        proxy.log_tail(200).contains("lack of connection slots"),
        "the refused probes were not noticed:\n{}",
        proxy.log_tail(30)
    );
    execute(&client, "COMMIT").await;
    let n: String = within(
        "count",
        admin.query_one("SELECT count(*)::text FROM f WHERE id = 9", &[]),
    )
    .await
    .unwrap()
    .get(0);
    assert_eq!(n, "1", "the open transaction did not commit");
    // Still full (the pool keeps its connections): down after the grace, not before.
    wait_status(&proxy, "pg0 down", Duration::from_secs(90), |s| {
        backend(s, "pg0")["up"] == false
    })
    .await;
    let after = full_from.elapsed();
    assert!(
        after >= Duration::from_secs(25),
        "pg0 went down {after:?} after its slots filled, before the 30 s grace"
    );
    drop(held);
    execute(&admin, "ALTER ROLE app CONNECTION LIMIT -1").await;
    wait_status(&proxy, "pg0 up again", Duration::from_secs(30), |s| {
        backend(s, "pg0")["up"] == true
    })
    .await;
}

/// A replica far behind stays far behind when the primary restarts: its lag history goes on
/// (it was counted only as far behind as the time since the restart, and took reads for up to
/// `max_replica_lag` whatever it really lagged), also across a reload while the primary is
/// down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_replica_takes_no_reads_when_the_primary_comes_back() {
    let (c, proxy, p) = setup("consistency = \"eventual\"\nmax_replica_lag = \"3s\"").await;
    {
        let c = c.clone();
        blocking(move || {
            // pg2 applies each commit 60 s after it was made.
            let pg2 = &c.replicas()[1];
            pg2.psql("ALTER SYSTEM SET recovery_min_apply_delay = '60s'")
                .expect("delaying pg2");
            pg2.psql("SELECT pg_reload_conf()").expect("reloading pg2");
        })
        .await;
    }
    // Commits every 200 ms (on pg0 directly) until pg2 is seen more than 3 s behind.
    let mut id = 100;
    let behind = |s: &serde_json::Value| {
        backend(s, "pg2")["lag_ms"]
            .as_u64()
            .is_some_and(|l| l > 3500)
    };
    let t0 = Instant::now();
    while !behind(&status(&proxy).await) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "pg2 never fell behind"
        );
        id += 1;
        let c = c.clone();
        blocking(move || {
            c.primary()
                .psql_db(
                    APP_DB,
                    &format!("SET ROLE app; INSERT INTO f VALUES ({id}, 'w')"),
                )
                .expect("writing on pg0")
        })
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The primary restarts: lost (down), then back.
    {
        let c = c.clone();
        blocking(move || c.primary().stop()).await;
    }
    wait_status(&proxy, "pg0 down", Duration::from_secs(20), |s| {
        backend(s, "pg0")["up"] == false
    })
    .await;
    // A reload that restarts the monitor (a [health] change) while no primary is elected
    // keeps the history too: pg0 back on its timeline is no new primary.
    proxy.rewrite_config(&format!(
        "[health]\ninterval = \"{}ms\"\nfall = {FALL}\nrise = {RISE}\ntimeout = \"900ms\"\n\n\
         [routing]\nconsistency = \"eventual\"\nmax_replica_lag = \"3s\"\n",
        INTERVAL.as_millis()
    ));
    within("reload", proxy.reload_ok()).await;
    {
        let c = c.clone();
        blocking(move || c.primary().start().expect("starting pg0")).await;
    }
    wait_status(&proxy, "pg0 primary again", Duration::from_secs(30), |s| {
        backend(s, "pg0")["primary"] == true
    })
    .await;
    let client = proxy.connect_app().await;
    let mut got = Vec::new();
    for _ in 0..30 {
        got.push(port(&client, "SELECT inet_server_port()").await);
    }
    let s = status(&proxy).await;
    assert!(
        !got.contains(&p.port("pg2")),
        "pg2, 60 s behind, took reads right after the primary came back: {:?} (lag_ms {})",
        p.tally(&got),
        backend(&s, "pg2")["lag_ms"]
    );
}

/// A reload that renames the primary (same address) keeps its role and history: no "new
/// primary", no moment without one. One that moves it to another address starts it unknown
/// until its probes answer; a read-your-writes read whose wait for a replica ends meanwhile
/// goes to the primary and waits for it (up to `primary_wait`), as a write would, rather than
/// failing with 57P03 (a reviewer saw such reads fail at every rename or move of the primary
/// under load).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_renames_or_moves_the_primary_fails_no_read() {
    let routing = "max_replica_lag = \"1h\"\nryw_wait = \"3s\"\nprimary_wait = \"30s\"\n";
    let (c, proxy, p) = setup(routing).await;
    pause_replicas(&c, &proxy).await;
    let new_primaries = |log: &str| log.matches("new primary").count();
    let before = new_primaries(&proxy.log());
    let mut backends = proxy.backends().to_vec();
    assert_eq!(backends[0].0, "pg0");
    backends[0].0 = "main".into();
    proxy.rewrite_backends(&backends);
    within("reload", proxy.reload_ok()).await;
    wait_status(&proxy, "main as primary", Duration::from_secs(30), |s| {
        backend(s, "main")["primary"] == true
    })
    .await;
    // (Several probe rounds: an election would have happened by now.)
    tokio::time::sleep(INTERVAL * 5).await;
    let log = proxy.log();
    assert_eq!(
        new_primaries(&log),
        before,
        "renaming the primary was taken for a new primary:\n{}",
        proxy.log_tail(30)
    );

    // Moved behind a relay that answers nothing yet.
    let relay = support::relay::Relay::for_node(c.primary());
    relay.set_mode(support::relay::Mode::Blackhole);
    let writer = Arc::new(proxy.connect_app().await);
    write_row(&writer, &p, 7).await;
    // (The commit position is read back after the write's answer.)
    tokio::time::sleep(Duration::from_millis(300)).await;
    let read = tokio::spawn({
        let writer = writer.clone();
        async move {
            let t0 = Instant::now();
            let r = tokio::time::timeout(
                Duration::from_secs(60),
                writer.simple_query("SELECT inet_server_port(), count(*) FROM f WHERE id = 7"),
            )
            .await;
            (r, t0.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    backends[0].1 = relay.addr_string();
    proxy.rewrite_backends(&backends);
    within("reload", proxy.reload_ok()).await;
    // The read's wait for a replica (3 s) ends while the moved primary is unknown.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        !read.is_finished(),
        "the read did not wait for the moved primary"
    );
    relay.set_mode(support::relay::Mode::Pass);
    let (r, took) = within("the read", read).await.unwrap();
    let rows = r
        .expect("the read hung")
        .unwrap_or_else(|e| panic!("the read failed once the primary moved: {} ({e})", code(&e)));
    let row = rows
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((r.get(0).unwrap().to_owned(), r.get(1).map(str::to_owned)))
            }
            _ => None,
        })
        .expect("a row");
    assert_eq!(
        row.0,
        p.port("pg0").to_string(),
        "the read ran elsewhere after {took:?}"
    );
    assert_eq!(
        row.1.as_deref(),
        Some("1"),
        "the read did not see the write"
    );
}

/// The primary lost with a tail of writes no replica received (their WAL receivers cut first):
/// reads go on on the replicas. The writing client's reads do not wait for a primary to show
/// its writes (nothing that can be read has them), and the replicas' lag is counted as of when
/// the primary was last seen, not up to now against its last position, which no replica will
/// reach: past `max_replica_lag` they still take every read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_on_after_the_primary_is_lost_with_writes_no_replica_has() {
    let (c, proxy, p) = setup("max_replica_lag = \"5s\"").await;
    {
        let c = c.clone();
        blocking(move || {
            for r in c.replicas() {
                r.psql("ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port=1'")
                    .expect("cutting replication");
                r.psql("SELECT pg_reload_conf()").expect("reloading");
            }
        })
        .await;
    }
    wait_status(
        &proxy,
        "replicas not streaming",
        Duration::from_secs(30),
        |s| {
            ["pg1", "pg2"]
                .iter()
                .all(|r| backend(s, r)["receiver_streaming"] == false)
        },
    )
    .await;
    let writer = proxy.connect_app().await;
    for id in 600..605 {
        execute(&writer, &format!("INSERT INTO f VALUES ({id}, 'tail')")).await;
    }
    // The monitor has seen the primary past both replicas.
    wait_status(&proxy, "replicas behind", Duration::from_secs(20), |s| {
        ["pg1", "pg2"]
            .iter()
            .all(|r| backend(s, r)["lag_bytes"].as_u64().is_some_and(|b| b > 0))
    })
    .await;
    {
        let c = c.clone();
        blocking(move || c.primary().kill()).await;
    }
    wait_status(&proxy, "pg0 down", Duration::from_secs(20), |s| {
        backend(s, "pg0")["up"] == false
    })
    .await;
    let replicas = [p.port("pg1"), p.port("pg2")];
    let t0 = Instant::now();
    let read = port(&writer, "SELECT inet_server_port() FROM f LIMIT 1").await;
    assert!(replicas.contains(&read), "read on {read}");
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "the writer's read waited {:?} for a primary",
        t0.elapsed()
    );
    // Past `max_replica_lag` since the primary was lost.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let s = status(&proxy).await;
    for client in [&writer, &proxy.connect_app().await] {
        for _ in 0..5 {
            let read = port(client, "SELECT inet_server_port()").await;
            assert!(replicas.contains(&read), "read on {read}: {s:#}");
        }
    }
    for r in ["pg1", "pg2"] {
        assert!(
            backend(&s, r)["lag_ms"].as_u64().is_some_and(|l| l < 5000),
            "{r}: {s:#}"
        );
    }
}
