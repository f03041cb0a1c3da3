//! Shared integration-test harness. Each `tests/*.rs` does `mod support;`.
//!
//! - [`shared_cluster`]: one primary + 2 replicas per test binary, for tests that only read
//!   and write (never kill, stop, promote or pause a node).
//! - [`own_cluster`]: a private cluster for destructive tests; dropped at the end of the test
//!   (also when it panics).
//! - [`proxy::Proxy`]: runs the built `switchyard` binary against a cluster.
//! - [`relay::Relay`]: a fault-injecting TCP relay.
//! - [`tools`]: psql, pgbench and other commands, bounded in time.
#![allow(dead_code, unused_imports)]

pub mod proxy;
pub mod raw;
pub mod ready;
pub mod relay;
pub mod tools;

use std::sync::OnceLock;

pub use switchyard::localpg;
pub use switchyard::localpg::*;

static SHARED: OnceLock<Result<LocalCluster, String>> = OnceLock::new();

/// One cluster (primary + 2 replicas) per test binary, started on first use. Never dropped:
/// its watchdog removes it when the test process exits. Don't kill/stop/promote/pause its
/// nodes; use [`own_cluster`] for that.
pub fn shared_cluster() -> &'static LocalCluster {
    init_tracing();
    match SHARED
        .get_or_init(|| LocalCluster::start(ClusterOptions::default()).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => panic!("starting the shared test cluster failed: {e}"),
    }
}

/// A private cluster with `replicas` replicas; stopped and removed when dropped.
pub fn own_cluster(replicas: usize) -> LocalCluster {
    own_cluster_with(ClusterOptions {
        replicas,
        ..Default::default()
    })
}

/// A private cluster with custom options.
pub fn own_cluster_with(opts: ClusterOptions) -> LocalCluster {
    init_tracing();
    LocalCluster::start(opts).unwrap_or_else(|e| panic!("starting a test cluster failed: {e}"))
}

/// Installs a `tracing` subscriber that writes through the test harness's capture
/// (filter from `RUST_LOG`, default `warn`). Safe to call many times.
pub fn init_tracing() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

/// Polls `f` every 20 ms until it returns true or `timeout` passes; returns the last result.
pub fn wait_until(timeout: std::time::Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Rows of a simple query as text columns (`None` for NULL).
pub type Rows = Vec<Vec<Option<String>>>;

/// The rows of a tokio-postgres simple query's messages.
pub fn text_rows(msgs: Vec<tokio_postgres::SimpleQueryMessage>) -> Rows {
    msgs.into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
            }
            _ => None,
        })
        .collect()
}

/// Waits (blocking, up to `within`) until a statement whose text contains `text` is active
/// on some node of the shared cluster (a read may run on a replica); whether it was seen.
pub fn active_anywhere(text: &str, within: std::time::Duration) -> bool {
    let seen = format!(
        "select count(*) from pg_stat_activity where state = 'active' \
         and pid <> pg_backend_pid() and strpos(query, '{}') > 0",
        text.replace('\'', "''")
    );
    wait_until(within, || {
        shared_cluster()
            .nodes()
            .iter()
            .any(|n| n.psql(&seen).is_ok_and(|n| n == "1"))
    })
}

/// Asserts that `e` is PostgreSQL's answer to a cancelled statement: 57014, "canceling
/// statement due to user request".
pub fn assert_cancelled(e: &tokio_postgres::Error, context: &str) {
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("not a server error ({context}): {e:?}"));
    assert_eq!(
        (db.code().code(), db.message()),
        ("57014", "canceling statement due to user request"),
        "{e:?} ({context})"
    );
}
