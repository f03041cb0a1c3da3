//! `[auth_query]`: clients log in as roles that are not in `[[users]]`, with the passwords the
//! servers have for them, and switchyard logs in to the servers as those roles without knowing
//! their passwords (SCRAM keys from the client's proof, or the md5 hash).
//!
//! The shared cluster's pg_hba asks SCRAM of every role here, and md5 of the one role whose
//! password is stored as md5 (a line this file adds), so every server login below really
//! authenticates. Each test creates its own roles.

mod support;

use std::sync::OnceLock;
use std::time::Duration;

use support::proxy::{Proxy, ProxyOptions};
use support::ready::{start_ready_proxy, start_ready_proxy_on};
use support::*;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

/// Every client operation must finish within this.
const OP_TIMEOUT: Duration = Duration::from_secs(20);

/// The role whose password the primary stores as an md5 hash.
const MD5_ROLE: &str = "lookup_md5";

/// Awaits `fut`, panicking if it takes longer than [`OP_TIMEOUT`].
async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(OP_TIMEOUT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: no answer within {OP_TIMEOUT:?}"),
    }
}

/// The shared cluster, with pg_hba asking md5 of [`MD5_ROLE`] on every node.
fn cluster() -> &'static LocalCluster {
    static READY: OnceLock<()> = OnceLock::new();
    let c = shared_cluster();
    READY.get_or_init(|| {
        for node in c.nodes() {
            let hba = node.data_dir().join("pg_hba.conf");
            let old = std::fs::read_to_string(&hba).expect("reading pg_hba.conf");
            // Rewriting the file in place keeps its owner (the servers may run as postgres).
            std::fs::write(&hba, format!("host all {MD5_ROLE} 127.0.0.1/32 md5\n{old}"))
                .expect("writing pg_hba.conf");
            node.psql("SELECT pg_reload_conf()")
                .expect("reloading pg_hba.conf");
        }
    });
    c
}

/// Runs SQL on the primary as the superuser, and waits until the replicas replayed it.
fn on_primary(sql: &str) {
    let c = cluster();
    c.primary()
        .psql(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    c.wait_replicas_caught_up(Duration::from_secs(30))
        .expect("replicas catch up");
}

/// A proxy in `pool_mode` with `[auth_query]` as the superuser, plus `extra` TOML.
fn proxy(pool_mode: &str, extra: &str) -> Proxy {
    cluster();
    start_ready_proxy(ProxyOptions {
        pool_mode: pool_mode.into(),
        extra_tables: format!(
            "[health]\ninterval = \"200ms\"\n\n[auth_query]\nuser = \"postgres\"\n\n{extra}"
        ),
        ..Default::default()
    })
}

/// Connects through the proxy (any role name: no connection string quoting involved).
async fn connect(
    proxy: &Proxy,
    user: &str,
    password: &str,
    db: &str,
) -> Result<Client, tokio_postgres::Error> {
    within("connect", proxy.try_connect(user, password, db)).await
}

async fn login(proxy: &Proxy, user: &str, password: &str, db: &str) -> Client {
    connect(proxy, user, password, db)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "logging in as {user:?}: {e} ({e:?})\nproxy log:\n{}",
                proxy.log_tail(40)
            )
        })
}

/// The SQLSTATE and message of a refused login.
async fn refusal(proxy: &Proxy, user: &str, password: &str, db: &str) -> (String, String) {
    match connect(proxy, user, password, db).await {
        Ok(_) => panic!("{user:?} with password {password:?} logged in to {db}"),
        Err(e) => {
            let db = e
                .as_db_error()
                .unwrap_or_else(|| panic!("not a server error: {e:?}"));
            (db.code().code().to_string(), db.message().to_string())
        }
    }
}

async fn scalar(c: &Client, sql: &str) -> String {
    let rows = within(sql, c.simple_query(sql))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{sql}: no row"))
}

/// Server processes of `role` on the primary (over its unix socket).
fn sessions_of(role: &str) -> usize {
    let n = cluster()
        .primary()
        .psql(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = '{}'",
            role.replace('\'', "''")
        ))
        .expect("counting sessions");
    n.trim().parse().expect("a count")
}

/// Sends SIGHUP and waits until the proxy counts `nth` successful reloads.
async fn reload(proxy: &Proxy, nth: u32) {
    proxy.reload();
    proxy
        .wait_metric(
            "switchyard_reloads_total{result=\"ok\"}",
            f64::from(nth),
            OP_TIMEOUT,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_not_in_users_logs_in_with_the_password_the_servers_have() {
    on_primary(
        "CREATE ROLE lookup_scram LOGIN PASSWORD 'scram pass';
         CREATE ROLE lookup_nologin NOLOGIN PASSWORD 'nologin pass';
         CREATE ROLE lookup_expired LOGIN PASSWORD 'expired pass' VALID UNTIL '2001-01-01';
         CREATE ROLE lookup_nopass LOGIN;
         CREATE ROLE \"o'neil lookup\" LOGIN PASSWORD 'quote pass';",
    );
    let proxy = proxy("transaction", "");
    let found = "switchyard_auth_queries_total{result=\"found\"}";
    let unknown = "switchyard_auth_queries_total{result=\"unknown\"}";

    // The role logs in (SCRAM, checked against its verifier) and its statements run as it:
    // the proxy logged in to the primary as the role, from the keys the client's proof gave.
    let c = login(&proxy, "lookup_scram", "scram pass", APP_DB).await;
    assert_eq!(scalar(&c, "SELECT current_user").await, "lookup_scram");
    assert_eq!(scalar(&c, "SELECT session_user").await, "lookup_scram");
    assert_eq!(proxy.metric(found).await, 1.0);

    // Several transactions at once: each needs a server connection of its own, each opened
    // with those keys.
    let mut clients = vec![c];
    for _ in 0..3 {
        clients.push(login(&proxy, "lookup_scram", "scram pass", APP_DB).await);
    }
    for c in &clients {
        within("BEGIN", c.simple_query("BEGIN")).await.unwrap();
        assert_eq!(scalar(c, "SELECT current_user").await, "lookup_scram");
    }
    assert!(
        sessions_of("lookup_scram") >= 4,
        "four open transactions need four server sessions of the role"
    );
    for c in &clients {
        within("COMMIT", c.simple_query("COMMIT")).await.unwrap();
    }

    // A name that needs quoting is a parameter of the lookup, not SQL text.
    let c = login(&proxy, "o'neil lookup", "quote pass", APP_DB).await;
    assert_eq!(scalar(&c, "SELECT current_user").await, "o'neil lookup");

    // What PostgreSQL refuses, the proxy refuses, all alike (28P01, the same message, so that
    // role names cannot be told apart): a wrong password, an unknown role, a role that may not
    // log in, an expired password, no password.
    for (role, password) in [
        ("lookup_scram", "wrong pass"),
        ("lookup_nobody", "any pass"),
        ("lookup_nologin", "nologin pass"),
        ("lookup_expired", "expired pass"),
        ("lookup_nopass", ""),
    ] {
        let (code, message) = refusal(&proxy, role, password, APP_DB).await;
        assert_eq!(code, "28P01", "{role}: {message}");
        assert_eq!(
            message,
            format!("password authentication failed for user \"{role}\"")
        );
    }
    assert_eq!(proxy.metric(unknown).await, 4.0);

    // Authentication first, then the database: a wrong password to a missing database is
    // 28P01, the right one 3D000 (the server's own answer).
    let (code, _) = refusal(&proxy, "lookup_scram", "wrong pass", "no_such_db").await;
    assert_eq!(code, "28P01");
    let (code, message) = refusal(&proxy, "lookup_scram", "scram pass", "no_such_db").await;
    assert_eq!(code, SqlState::INVALID_CATALOG_NAME.code(), "{message}");

    // A configured user logs in as configured, without a lookup.
    let before = proxy.metric(found).await + proxy.metric(unknown).await;
    let c = login(&proxy, APP_USER, APP_PASSWORD, APP_DB).await;
    assert_eq!(scalar(&c, "SELECT current_user").await, APP_USER);
    assert_eq!(
        proxy.metric(found).await + proxy.metric(unknown).await,
        before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_with_an_md5_password_logs_in_with_md5_on_both_sides() {
    on_primary(&format!(
        "SET password_encryption = 'md5'; CREATE ROLE {MD5_ROLE} LOGIN PASSWORD 'md5 pass';"
    ));
    let proxy = proxy("session", "");
    // The client is asked for md5 (SCRAM cannot be checked against an md5 hash), and the
    // server's md5 challenge (pg_hba) is answered from the hash.
    let c = login(&proxy, MD5_ROLE, "md5 pass", APP_DB).await;
    assert_eq!(scalar(&c, "SELECT current_user").await, MD5_ROLE);
    let (code, _) = refusal(&proxy, MD5_ROLE, "md5 wrong", APP_DB).await;
    assert_eq!(code, "28P01");
    let r = support::raw::login(
        &proxy.addr(),
        support::raw::PROTO_3_0,
        &[("user", MD5_ROLE), ("database", APP_DB)],
        Some("md5 pass"),
    )
    .await;
    let s = support::raw::ok(r, "raw md5 login");
    assert_eq!(s.auth, vec![5, 0], "the client was asked for md5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_a_looked_up_role_run_on_replicas_in_split_mode() {
    on_primary("CREATE ROLE lookup_reader LOGIN PASSWORD 'reader pass';");
    let proxy = proxy("transaction", "[routing]\nread_write_split = true\n");
    let c = login(&proxy, "lookup_reader", "reader pass", APP_DB).await;
    // The replicas' pools log in with the same keys (a standby has the same verifier).
    let mut on_replica = 0;
    for _ in 0..10 {
        if scalar(&c, "SELECT pg_last_wal_replay_lsn() IS NOT NULL").await == "t" {
            on_replica += 1;
        }
    }
    assert_eq!(on_replica, 10, "reads ran on the replicas");
    let written = scalar(&c, "SELECT txid_current()::text").await;
    assert!(!written.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_password_counts_from_the_next_login() {
    on_primary("CREATE ROLE lookup_changing LOGIN PASSWORD 'first pass';");
    let proxy = proxy("transaction", "[pool]\nsize = 4\n");
    let a = login(&proxy, "lookup_changing", "first pass", APP_DB).await;
    let b = login(&proxy, "lookup_changing", "first pass", APP_DB).await;
    assert_eq!(scalar(&a, "SELECT 1").await, "1");

    on_primary("ALTER ROLE lookup_changing PASSWORD 'second pass';");
    // The old password no longer logs in.
    let (code, _) = refusal(&proxy, "lookup_changing", "first pass", APP_DB).await;
    assert_eq!(code, "28P01");
    // The pools' server connections end (on every server: reads go to the replicas): the next
    // one opened still has only the old password's keys, which the server refuses. The client
    // is told why, and stays.
    let terminate = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE usename = 'lookup_changing'";
    for node in cluster().nodes() {
        node.psql(terminate)
            .expect("ending the role's server sessions");
    }
    let count = "SELECT count(*) FROM pg_stat_activity WHERE usename = 'lookup_changing'";
    let none_left = || {
        cluster()
            .nodes()
            .iter()
            .all(|n| n.psql(count).is_ok_and(|c| c.trim() == "0"))
    };
    assert!(
        wait_until(Duration::from_secs(10), none_left),
        "the role's server sessions ended"
    );
    let e = within("query", a.simple_query("SELECT 1"))
        .await
        .expect_err("a new server connection with the old keys");
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("not a server error: {e:?}"));
    assert_eq!(db.code().code(), "28P01");
    assert!(
        db.message().contains("changed or expired on the server"),
        "{}",
        db.message()
    );
    // The new password logs in at once, and its keys serve the pool from then on.
    let c = login(&proxy, "lookup_changing", "second pass", APP_DB).await;
    assert_eq!(scalar(&a, "SELECT current_user").await, "lookup_changing");

    // Server connections opened from now on log in with the new password's keys: three
    // transactions at once need more than the one connection opened before the change.
    for client in [&a, &b, &c] {
        within("BEGIN", client.simple_query("BEGIN")).await.unwrap();
        assert_eq!(
            scalar(client, "SELECT current_user").await,
            "lookup_changing"
        );
    }
    for client in [&a, &b, &c] {
        within("COMMIT", client.simple_query("COMMIT"))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_that_fails_refuses_the_login_cleanly_and_a_definer_function_works() {
    on_primary(
        "CREATE ROLE lookup_fn LOGIN PASSWORD 'fn pass';
         CREATE FUNCTION public.switchyard_lookup(role text, OUT name text, OUT password text)
           RETURNS SETOF record LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog AS
           $$ SELECT rolname::text, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END
              FROM pg_authid WHERE rolname = role AND rolcanlogin $$;
         REVOKE ALL ON FUNCTION public.switchyard_lookup(text) FROM PUBLIC;
         GRANT EXECUTE ON FUNCTION public.switchyard_lookup(text) TO app;",
    );
    // The application user may not read pg_authid: the lookup fails, the login is refused
    // with a clear error, and the reason is logged.
    let denied = start_ready_proxy(ProxyOptions {
        extra_tables: "[auth_query]\nuser = \"app\"\n".into(),
        ..Default::default()
    });
    let (code, message) = refusal(&denied, "lookup_fn", "fn pass", APP_DB).await;
    assert_eq!(code, "28000");
    assert_eq!(
        message,
        "could not look up the password of role \"lookup_fn\""
    );
    assert_eq!(
        denied
            .metric("switchyard_auth_queries_total{result=\"error\"}")
            .await,
        1.0
    );
    assert!(
        denied.log().contains("auth_query failed") && denied.log().contains("42501"),
        "the log says why:\n{}",
        denied.log_tail(20)
    );
    // Other clients are not affected.
    let c = login(&denied, APP_USER, APP_PASSWORD, APP_DB).await;
    assert_eq!(scalar(&c, "SELECT 1").await, "1");

    // The same user calling a SECURITY DEFINER function that the superuser owns.
    let allowed = start_ready_proxy(ProxyOptions {
        extra_tables: "[auth_query]\nuser = \"app\"\n\
                       query = \"SELECT name, password FROM public.switchyard_lookup($1)\"\n"
            .into(),
        ..Default::default()
    });
    let c = login(&allowed, "lookup_fn", "fn pass", APP_DB).await;
    assert_eq!(scalar(&c, "SELECT current_user").await, "lookup_fn");

    // A client of the auth user left a search_path without `public` on the one server
    // connection the lookup can use: the lookup runs with the defaults, and finds the function.
    let shared = start_ready_proxy(ProxyOptions {
        extra_tables: "[pool]\nsize = 1\n\n[auth_query]\nuser = \"postgres\"\n\
                       query = \"SELECT name, password FROM switchyard_lookup($1)\"\n"
            .into(),
        ..Default::default()
    });
    let su = login(&shared, SUPERUSER, SUPERUSER_PASSWORD, "postgres").await;
    within("SET", su.simple_query("SET search_path = pg_catalog"))
        .await
        .unwrap();
    let c = login(&shared, "lookup_fn", "fn pass", APP_DB).await;
    assert_eq!(scalar(&c, "SELECT current_user").await, "lookup_fn");
    // The client's setting is still its own.
    assert_eq!(scalar(&su, "SHOW search_path").await, "pg_catalog");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_looked_up_sessions_and_switching_it_off_stops_new_logins() {
    on_primary("CREATE ROLE lookup_reload LOGIN PASSWORD 'reload pass';");
    let proxy = proxy("transaction", "");
    let c = login(&proxy, "lookup_reload", "reload pass", APP_DB).await;
    assert_eq!(scalar(&c, "SELECT current_user").await, "lookup_reload");

    // An unchanged configuration reloaded: the session and new logins go on.
    let config = proxy.config_text();
    reload(&proxy, 1).await;
    assert_eq!(scalar(&c, "SELECT current_user").await, "lookup_reload");
    login(&proxy, "lookup_reload", "reload pass", APP_DB).await;

    // [auth_query] removed: the role cannot log in any more, configured users still can.
    let without: String = config
        .split("[auth_query]")
        .next()
        .expect("config text")
        .to_string();
    proxy.write_raw_config(&without);
    reload(&proxy, 2).await;
    let (code, _) = refusal(&proxy, "lookup_reload", "reload pass", APP_DB).await;
    assert_eq!(code, "28P01");
    login(&proxy, APP_USER, APP_PASSWORD, APP_DB).await;
    // Its open session stays, and keeps running transactions (its pool, retired by the
    // reload, is replaced), through this reload and the next.
    assert_eq!(scalar(&c, "SELECT current_user").await, "lookup_reload");
    reload(&proxy, 3).await;
    assert_eq!(scalar(&c, "SELECT current_user").await, "lookup_reload");
}

/// `hba_file` lines for roles not in `[[users]]`: a `password` line gets the password in
/// clear text, checks it against the SCRAM verifier the servers have, and logs in to them
/// with it; a `trust` line cannot help a role whose verifier only a SCRAM exchange can use,
/// and says so; a role the lookup does not find is said not to exist, as by PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hba_lines_apply_to_looked_up_roles() {
    on_primary(
        "CREATE ROLE lookup_clear LOGIN PASSWORD 'clear pass'; \
         CREATE ROLE lookup_trusted LOGIN PASSWORD 'trusted pass';",
    );
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("hba.conf");
    std::fs::write(
        &rules,
        "host all lookup_clear 127.0.0.1/32 password\n\
         host all lookup_trusted,lookup_nobody 127.0.0.1/32 trust\n\
         host all all 127.0.0.1/32 scram-sha-256\n",
    )
    .unwrap();
    cluster();
    let proxy = start_ready_proxy(ProxyOptions {
        extra_top: format!("hba_file = {:?}\n", rules.display().to_string()),
        extra_tables: "[health]\ninterval = \"200ms\"\n\n[auth_query]\nuser = \"postgres\"\n"
            .into(),
        ..Default::default()
    });
    let r = support::raw::login(
        &proxy.addr(),
        support::raw::PROTO_3_0,
        &[("user", "lookup_clear"), ("database", APP_DB)],
        Some("clear pass"),
    )
    .await;
    let s = support::raw::ok(r, "a clear-text login of a looked-up role");
    assert_eq!(
        s.auth,
        vec![3, 0],
        "the client was asked for its password in clear text"
    );
    let c = login(&proxy, "lookup_clear", "clear pass", APP_DB).await;
    assert_eq!(scalar(&c, "SELECT current_user").await, "lookup_clear");
    let (code, _) = refusal(&proxy, "lookup_clear", "clear wrong", APP_DB).await;
    assert_eq!(code, "28P01");

    let (code, message) = refusal(&proxy, "lookup_trusted", "", APP_DB).await;
    assert_eq!(code, "28000", "{message}");
    assert!(
        message.contains("switchyard cannot log in to the servers as \"lookup_trusted\""),
        "{message}"
    );
    assert_eq!(
        refusal(&proxy, "lookup_nobody", "", APP_DB).await,
        (
            "28000".into(),
            "role \"lookup_nobody\" does not exist".into()
        )
    );
}

/// A lookup whose server connection fails (the server died, and the monitor has not seen it
/// down yet) is made once more on another server that is up; with none, the login is told to
/// try again (57P03, as when no server is up), not refused as if its role could not log in
/// (28000).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_whose_server_dies_goes_to_another_or_answers_57p03() {
    let c = own_cluster(1);
    c.primary()
        .psql(
            "SET password_encryption = 'scram-sha-256'; \
             CREATE ROLE lookup_lost LOGIN PASSWORD 'lost pass';",
        )
        .unwrap();
    c.wait_replicas_caught_up(Duration::from_secs(30))
        .expect("replicas catch up");
    // Probes far apart: the monitor does not see the servers die during the test.
    let proxy = start_ready_proxy_on(
        &c,
        ProxyOptions {
            extra_tables: "[health]\ninterval = \"10m\"\n\n[auth_query]\nuser = \"postgres\"\n"
                .into(),
            ..Default::default()
        },
    );
    let before = login(&proxy, "lookup_lost", "lost pass", APP_DB).await;
    assert_eq!(scalar(&before, "SELECT current_user").await, "lookup_lost");

    c.primary().kill();
    let after = login(&proxy, "lookup_lost", "lost pass", APP_DB).await;
    assert_eq!(scalar(&after, "SELECT current_user").await, "lookup_lost");
    assert!(
        proxy.log().contains("auth_query lookup lost its server"),
        "{}",
        proxy.log_tail(20)
    );

    c.replicas()[0].kill();
    let (code, message) = refusal(&proxy, "lookup_lost", "lost pass", APP_DB).await;
    assert_eq!(code, "57P03", "{message}\n{}", proxy.log_tail(20));
    assert_eq!(
        message,
        "could not look up the password of role \"lookup_lost\""
    );
}
