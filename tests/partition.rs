//! Network failures between the proxy and its replicas, made with the fault-injecting relay:
//! a replica that silently stops answering (a partition), a replica whose connections are
//! reset, and losing both replicas at once. Reads keep working without client-visible errors;
//! the proxy stops using the lost servers and takes them back when they return.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use support::proxy::{Proxy, ProxyOptions};
use support::relay::{Mode, Relay};
use support::{own_cluster, LocalCluster};

/// A cluster whose replicas are reached through relays, and a proxy in front.
struct Setup {
    cluster: LocalCluster,
    relays: Vec<Relay>,
    proxy: Proxy,
}

fn setup() -> Setup {
    let cluster = own_cluster(2);
    let relays: Vec<Relay> = cluster.replicas().iter().map(Relay::for_node).collect();
    let mut backends = vec![(
        cluster.primary().name().to_string(),
        cluster.primary().addr(),
    )];
    for (n, r) in cluster.replicas().iter().zip(&relays) {
        backends.push((n.name().to_string(), r.addr_string()));
    }
    let proxy = Proxy::start_with(
        &cluster,
        ProxyOptions {
            backends: Some(backends),
            extra_tables:
                "[health]\ninterval = \"200ms\"\ntimeout = \"400ms\"\nfall = 2\nrise = 2\n\
                           [pool]\nconnect_timeout = \"1s\"\n\
                           [routing]\nconsistency = \"eventual\"\n"
                    .into(),
            ..Default::default()
        },
    );
    Setup {
        cluster,
        relays,
        proxy,
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
        .wait_status(&what, Duration::from_secs(20), |v| {
            v["backends"].as_array().is_some_and(|bs| {
                bs.iter()
                    .any(|b| b["name"] == name && b["up"].as_bool() == Some(up))
            })
        })
        .await;
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

    // Reads in flight when the replica stops answering: each runs long enough to be caught.
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let c = s.proxy.connect_app().await;
        tasks.push(tokio::spawn(async move {
            let row = c
                .query_one("SELECT inet_server_port(), pg_sleep(0.5)", &[])
                .await;
            row.map(|r| r.get::<_, i32>(0))
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.relays[0].set_mode(Mode::Blackhole);
    for t in tasks {
        let r = tokio::time::timeout(Duration::from_secs(30), t)
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

    wait_backend_up(&s.proxy, &lost_name, false).await;
    let seen = ports(&client, 20).await;
    assert!(
        !seen.contains(&lost),
        "the partitioned replica still gets reads: {seen:?}"
    );

    let (_, metrics) = s.proxy.http_get("/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("switchyard_retries_total{reason=\"server_lost\"}")),
        "retries were not counted:\n{metrics}"
    );

    // The partition heals: the replica is used again.
    s.relays[0].set_mode(Mode::Pass);
    wait_backend_up(&s.proxy, &lost_name, true).await;
    let deadline = Instant::now() + Duration::from_secs(20);
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

    // Connections reset mid-read on one replica, while the other is partitioned.
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let c = s.proxy.connect_app().await;
        tasks.push(tokio::spawn(async move {
            c.query_one("SELECT inet_server_port(), pg_sleep(0.4)", &[])
                .await
                .map(|r| r.get::<_, i32>(0))
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.relays[1].set_mode(Mode::Blackhole);
    s.relays[0].set_mode(Mode::Refuse);
    s.relays[0].reset_all();
    for t in tasks {
        let r = tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("read hung")
            .unwrap();
        r.expect("reads in flight on lost replicas must be repeated, not fail");
    }
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
