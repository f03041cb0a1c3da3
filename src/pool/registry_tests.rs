//! Unit tests of the pool registry (registry.rs).

use super::*;
use crate::pool::conns::Socket;
use crate::pool::{ConnectError, PoolError};

/// Two backends nothing listens on, `min_size = 1`.
fn config() -> Arc<crate::config::Loaded> {
    config_with(
        "[[backends]]\nname = \"pg2\"\naddress = \"127.0.0.1:2\"\n",
        "127.0.0.1:1",
    )
}

/// Backend `pg1` at `pg1`, then `backends`; `min_size = 1`.
fn config_with(backends: &str, pg1: &str) -> Arc<crate::config::Loaded> {
    let text = format!(
        r#"
listen = "127.0.0.1:6432"
http_listen = "127.0.0.1:9930"

[[backends]]
name = "pg1"
address = "{pg1}"

{backends}

[[users]]
name = "app"
password = "app"

[pool]
min_size = 1
"#
    );
    Arc::new(crate::config::parse(&text, "t.toml").expect("config"))
}

/// The pool of backend `backend` of `config` (as a session that read it asks).
fn get(
    pools: &Pools,
    config: &crate::config::Loaded,
    backend: usize,
    db: &str,
) -> Option<Arc<Pool>> {
    let b = &config.config.backends[backend];
    let name: Arc<str> = b.name.get_ref().as_str().into();
    pools.get(PoolSpec {
        backend_index: backend,
        backend_name: &name,
        address: b.address.get_ref(),
        user: &config.users["app"],
        database: db,
        config,
    })
}

fn pool(pools: &Pools, config: &crate::config::Loaded, backend: usize, db: &str) -> Arc<Pool> {
    get(pools, config, backend, db).expect("a configured backend's pool")
}

#[test]
fn a_pool_for_a_backend_a_reload_removed_or_moved_is_not_made_again() {
    let config = config();
    let pools = pools(&config);
    let moved = pool(&pools, &config, 0, "app");
    let removed = pool(&pools, &config, 1, "app");
    // The reload: pg1 moved, pg2 removed.
    let reloaded = config_with("", "127.0.0.1:3");
    pools.reconfigure(&reloaded);
    assert!(moved.is_retired() && removed.is_retired());
    // A session still routing by the topology before the reload (the monitor has not
    // published the new one yet) gets no pool for either: none is made again.
    for backend in [0, 1] {
        assert!(
            get(&pools, &config, backend, "app").is_none(),
            "backend {backend}'s retired pool was made again"
        );
    }
    assert!(pools.stats().is_empty());
    let now = pool(&pools, &reloaded, 0, "app");
    assert_eq!(now.key.address, "127.0.0.1:3");
}

fn pools(config: &Arc<crate::config::Loaded>) -> Pools {
    let pools = Pools::new(Arc::new(Metrics::new()));
    pools.reconfigure(config);
    pools
}

#[tokio::test]
async fn a_pool_no_checkout_got_a_connection_from_is_not_refilled_and_is_forgotten() {
    // A client named a database the server does not have: its login failed, and the pool
    // made for it must not open connections every second, nor stay.
    let config = config();
    let pools = pools(&config);
    let p = pool(&pools, &config, 0, "typo");
    p.maintain(true);
    assert!(!p.refilling.load(Ordering::Relaxed), "refilled");
    drop(p);
    pools.prune(crate::pool::clock::now_ms());
    assert!(pools.stats().is_empty(), "the unused pool stayed");
}

#[tokio::test]
async fn a_refill_under_way_does_not_keep_an_unused_pool() {
    let config = config();
    let pools = pools(&config);
    let p = pool(&pools, &config, 0, "app");
    p.refill_armed.store(true, Ordering::Relaxed);
    p.maintain(true);
    assert!(p.refilling.load(Ordering::Relaxed), "no refill began");
    drop(p);
    // (The refill's task has not run yet: it holds the pool, and opens nothing.)
    pools.prune(crate::pool::clock::now_ms());
    assert!(pools.stats().is_empty(), "the refill's task kept the pool");
}

#[test]
fn failed_refills_pause_longer_each_time_and_a_refusal_stops_them() {
    let config = config();
    let pools = pools(&config);
    let p = pool(&pools, &config, 0, "app");
    p.refill_armed.store(true, Ordering::Relaxed);
    let now = crate::pool::clock::now_ms();
    assert!(p.refill_due(now));
    let refused = |code: &str| {
        PoolError::Connect(ConnectError::Refused {
            address: "127.0.0.1:1".into(),
            severity: "FATAL".into(),
            code: code.into(),
            message: "no".into(),
        })
    };
    // An outage: the pause doubles, up to a minute.
    let lost = || {
        PoolError::Connect(ConnectError::Io {
            address: "127.0.0.1:1".into(),
            source: std::io::ErrorKind::ConnectionRefused.into(),
        })
    };
    let mut pauses = Vec::new();
    for _ in 0..8 {
        p.refill_failed(&lost(), now);
        pauses.push(p.refill_backoff.load(Ordering::Relaxed));
    }
    assert_eq!(pauses, [1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000]);
    assert!(!p.refill_due(crate::pool::clock::now_ms()));
    assert!(p.refill_due(crate::pool::clock::now_ms() + 60_001));
    // No slot left on the server: the pool is server_full, as after a checkout's refusal.
    p.refill_failed(&refused("53300"), now);
    assert!(p.conns.lock().unwrap().refused_lately());
    assert!(p.refill_due(crate::pool::clock::now_ms() + 60_001));
    // The database is gone (or the role's password changed): no refill until a checkout
    // gets a connection again.
    p.refill_failed(&refused("3D000"), now);
    assert!(!p.refill_due(u64::MAX));
    p.refill_armed.store(true, Ordering::Relaxed);
    p.refill_failed(&refused("28P01"), now);
    assert!(!p.refill_due(u64::MAX));
}

#[test]
fn a_killed_database_keeps_no_connection_until_resumed() {
    let config = config();
    let pools = pools(&config);
    let app = pool(&pools, &config, 0, "app");
    let other = pool(&pools, &config, 0, "other");
    for p in [&app, &other] {
        p.refill_armed.store(true, Ordering::Relaxed);
    }
    let now = crate::pool::clock::now_ms();
    assert_eq!(pools.kill_database("app"), 1);
    assert!(app.closed.load(Ordering::Relaxed) && !app.refill_due(now));
    assert!(!other.closed.load(Ordering::Relaxed) && other.refill_due(now));
    assert!(
        app.closing_mark() > 0,
        "its open connections were not closed"
    );
    // A pool made for it afterwards (another backend) is closed as well.
    let later = pool(&pools, &config, 1, "app");
    assert!(later.closed.load(Ordering::Relaxed));
    pools.resume(Some("other"));
    assert!(
        app.closed.load(Ordering::Relaxed),
        "another database's RESUME"
    );
    pools.resume(None);
    assert!(!app.closed.load(Ordering::Relaxed) && !later.closed.load(Ordering::Relaxed));
    assert!(app.refill_due(now));
    pools.kill_database("app");
    pools.resume(Some("app"));
    assert!(!app.closed.load(Ordering::Relaxed));
}

#[tokio::test]
async fn a_checkout_waiting_for_a_full_servers_connections_is_counted_waiting() {
    let config = config();
    let pools = pools(&config);
    let p = pool(&pools, &config, 0, "app");
    {
        // One connection open (in use), the server refused another just now.
        let mut c = p.conns.lock().unwrap();
        c.sockets.insert(-7, Socket::default());
        c.server_full("too many".into(), crate::pool::clock::now_ms(), 2000);
        c.full.as_mut().unwrap().until = u64::MAX;
    }
    let waiter = tokio::spawn({
        let p = p.clone();
        async move { p.checkout(1).await.map(|_| ()) }
    });
    for _ in 0..100 {
        tokio::task::yield_now().await;
        if p.full_waiting.load(Ordering::Relaxed) > 0 {
            break;
        }
    }
    let stats = pools.stats();
    assert_eq!((stats[0].waiting, stats[0].in_use), (1, 1));
    waiter.abort();
    let _ = waiter.await;
    assert_eq!(
        pools.stats()[0].waiting,
        0,
        "an abandoned checkout still counted"
    );
}

/// `pool_waits_total` and `pool_wait_seconds`'s count for `p`'s backend.
fn waits(p: &Pool) -> (u64, u64) {
    (
        p.metrics.waits.get(),
        p.metrics.wait_seconds.get_sample_count(),
    )
}

#[tokio::test]
async fn a_wait_for_a_slot_is_observed_whatever_its_outcome() {
    let config = config();
    let pools = pools(&config);
    let p = pool(&pools, &config, 0, "app");
    p.tuning.lock().unwrap().checkout_timeout = Duration::from_millis(20);
    // Every slot taken (by a checkout that has its connection).
    let held: Vec<_> = std::iter::from_fn(|| p.permits.try_acquire().ok()).collect();
    assert!(!held.is_empty());
    assert!(matches!(p.checkout(1).await, Err(PoolError::Timeout(_))));
    assert_eq!(waits(&p), (1, 1), "a wait that timed out");
    assert!(p.metrics.wait_seconds.get_sample_sum() >= 0.015);
    // One abandoned while it waits (its client left).
    let waiter = tokio::spawn({
        let p = p.clone();
        async move { p.checkout(2).await.map(|_| ()) }
    });
    for _ in 0..100 {
        tokio::task::yield_now().await;
        if p.metrics.waits.get() == 2 {
            break;
        }
    }
    waiter.abort();
    let _ = waiter.await;
    assert_eq!(waits(&p), (2, 2), "a wait abandoned");
    // One the server's going down interrupts.
    p.tuning.lock().unwrap().checkout_timeout = Duration::from_secs(10);
    let waiter = tokio::spawn({
        let p = p.clone();
        async move { p.checkout(3).await.map(|_| ()) }
    });
    for _ in 0..100 {
        tokio::task::yield_now().await;
        if p.metrics.waits.get() == 3 {
            break;
        }
    }
    p.sever();
    assert!(matches!(waiter.await.unwrap(), Err(PoolError::Severed)));
    assert_eq!(waits(&p), (3, 3), "a wait interrupted");
}

#[tokio::test]
async fn a_wait_for_a_full_servers_connections_is_observed_when_it_times_out() {
    let config = config();
    let pools = pools(&config);
    let p = pool(&pools, &config, 0, "app");
    p.tuning.lock().unwrap().checkout_timeout = Duration::from_millis(30);
    {
        // One connection open (in use), the server refused another just now.
        let mut c = p.conns.lock().unwrap();
        c.sockets.insert(-7, Socket::default());
        c.server_full("too many".into(), crate::pool::clock::now_ms(), 2000);
        c.full.as_mut().unwrap().until = u64::MAX;
    }
    assert!(matches!(p.checkout(1).await, Err(PoolError::Full { .. })));
    assert_eq!(waits(&p), (1, 1));
    assert!(p.metrics.wait_seconds.get_sample_sum() >= 0.025);
}

/// A configuration with users `app` and, when given its password, `app2`.
fn config_with_app2(app2: Option<&str>) -> Arc<crate::config::Loaded> {
    let app2 = app2.map_or(String::new(), |p| {
        format!("[[users]]\nname = \"app2\"\npassword = \"{p}\"\n")
    });
    let text = format!(
        r#"
listen = "127.0.0.1:6432"
http_listen = "127.0.0.1:9930"

[[backends]]
name = "pg1"
address = "127.0.0.1:1"

[[users]]
name = "app"
password = "app"

{app2}
"#
    );
    Arc::new(crate::config::parse(&text, "t.toml").expect("config"))
}

#[test]
fn the_pools_of_a_user_a_reload_removed_log_in_as_last_configured() {
    let first = config_with_app2(Some("old"));
    let pools = pools(&first);
    // A session of app2 logged in under the first configuration: its record says "old".
    let login = first.users["app2"].clone();
    let get_app2 = |config: &crate::config::Loaded| {
        let b = &config.config.backends[0];
        let name: Arc<str> = b.name.get_ref().as_str().into();
        pools
            .get(PoolSpec {
                backend_index: 0,
                backend_name: &name,
                address: b.address.get_ref(),
                user: &login,
                database: "app",
                config,
            })
            .expect("a pool")
    };
    let credential = |p: &Arc<Pool>| match &p.connect.lock().expect("connect").credential {
        crate::auth::ServerCredential::Password(p) => format!("{p:?}"),
        _ => "not a password".to_string(),
    };
    let before = get_app2(&first);
    assert!(credential(&before).contains("\"old\""));
    // Its password changed, then it was removed.
    let changed = config_with_app2(Some("new"));
    pools.reconfigure(&changed);
    assert!(credential(&get_app2(&changed)).contains("\"new\""));
    let removed = config_with_app2(None);
    pools.reconfigure(&removed);
    assert!(before.is_retired());
    // The pool its session makes again logs in with the password last configured.
    let again = get_app2(&removed);
    assert!(
        credential(&again).contains("\"new\""),
        "{}",
        credential(&again)
    );
    // Configured again: as now configured.
    let back = config_with_app2(Some("third"));
    pools.reconfigure(&back);
    assert!(credential(&get_app2(&back)).contains("\"third\""));
}
