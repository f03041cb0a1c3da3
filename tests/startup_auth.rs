//! Client-facing startup and authentication through the proxy, against a real cluster:
//! protocol versions, SSL/GSS refusal, SCRAM/md5/trust client auth and every backend auth
//! method, ParameterStatus and BackendKeyData, startup settings (including `options`) that must
//! behave exactly as on a direct connection even on a shared pool of one, error SQLSTATEs of
//! bad logins, and the client admission limit.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use support::proxy::{Proxy, ProxyOptions};
use support::*;

/// Unknown to the servers, configured in the proxy.
const GHOST_USER: &str = "ghost_user";
const GHOST_PASSWORD: &str = "ghostpass";

/// The proxy most tests share: one server connection per (backend, user, database), so
/// clients with different settings take turns on the same server connections.
fn main_proxy() -> &'static Proxy {
    static P: OnceLock<Proxy> = OnceLock::new();
    P.get_or_init(|| {
        Proxy::start_with(
            shared_cluster(),
            ProxyOptions {
                extra_tables: format!(
                    "[pool]\nsize = 1\n\n[[users]]\nname = \"{GHOST_USER}\"\npassword = \"{GHOST_PASSWORD}\"\n"
                ),
                ..Default::default()
            },
        )
    })
}

/// Bounded wait on any future.
async fn within<T>(what: &str, d: Duration, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(d, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {d:?}: {what}"),
    }
}

use support::raw;
use support::raw::{login, PROTO_3_0};

/// A refused login must be a FATAL ErrorResponse with `code`, followed by the connection
/// closing.
async fn assert_refused(r: raw::LoginResult, code: &str, what: &str) -> raw::Frame {
    let mut refused = raw::refused(r, what);
    assert_eq!(
        refused.error.code(),
        code,
        "{what}: wrong SQLSTATE: {:?}",
        refused.error
    );
    assert_eq!(
        refused.error.severity(),
        "FATAL",
        "{what}: {:?}",
        refused.error
    );
    let after = refused
        .raw
        .expect_closed(Duration::from_secs(5), what)
        .await;
    assert!(
        after.is_empty(),
        "{what}: messages after the FATAL: {after:?}"
    );
    refused.error
}

fn db_code(e: &tokio_postgres::Error) -> Option<String> {
    e.as_db_error().map(|d| d.code().code().to_string())
}

fn app_params() -> Vec<(&'static str, &'static str)> {
    vec![("user", APP_USER), ("database", APP_DB)]
}

// ------------------------------------------------------------------------------------------
// Authentication
// ------------------------------------------------------------------------------------------

/// Every configured user logs in through the proxy: client-side SCRAM (default), md5 and trust,
/// and server-side SCRAM, md5, cleartext `password` and trust (from the harness pg_hba), on the
/// primary (explicit transaction) and on replicas (autocommit reads).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_auth_method_works_through_the_proxy() {
    let proxy = main_proxy();
    let users: [(&str, &str); 6] = [
        (APP_USER, APP_PASSWORD),
        (MD5_USER, MD5_PASSWORD),
        (PLAIN_USER, PLAIN_PASSWORD),
        (TRUST_USER, ""),
        (OTHER_USER, OTHER_PASSWORD),
        (SUPERUSER, SUPERUSER_PASSWORD),
    ];
    for (user, password) in users {
        let mut client = within(
            &format!("login as {user}"),
            Duration::from_secs(20),
            proxy.connect(user, password, APP_DB),
        )
        .await;
        for round in 0..3 {
            // Autocommit reads (replicas, or the primary).
            let row = within(
                "autocommit read",
                raw::IO,
                client.query_one(
                    "SELECT current_user::text, current_database()::text, $1::int + 1",
                    &[&round],
                ),
            )
            .await
            .unwrap_or_else(|e| panic!("{user}: autocommit read failed: {e}"));
            assert_eq!(row.get::<_, String>(0), user);
            assert_eq!(row.get::<_, String>(1), APP_DB);
            assert_eq!(row.get::<_, i32>(2), round + 1);
            // An explicit read-write transaction (the primary).
            let tx = within("BEGIN", raw::IO, client.transaction())
                .await
                .unwrap_or_else(|e| panic!("{user}: BEGIN failed: {e}"));
            let row = within(
                "read in transaction",
                raw::IO,
                tx.query_one(
                    "SELECT current_user::text, pg_is_in_recovery(), txid_current() > 0",
                    &[],
                ),
            )
            .await
            .unwrap_or_else(|e| panic!("{user}: query in transaction failed: {e}"));
            assert_eq!(row.get::<_, String>(0), user);
            assert!(
                !row.get::<_, bool>(1),
                "{user}: a read-write transaction ran on a replica"
            );
            within("COMMIT", raw::IO, tx.commit())
                .await
                .unwrap_or_else(|e| panic!("{user}: COMMIT failed: {e}"));
        }
        drop(client);
    }

    // What the proxy itself asks each kind of client for: SCRAM by default (whatever the
    // server-side method is), md5 when configured, nothing for trust.
    let cases: [(&str, Option<&str>, i32); 4] = [
        (APP_USER, Some(APP_PASSWORD), 10),
        (PLAIN_USER, Some(PLAIN_PASSWORD), 10),
        (MD5_USER, Some(MD5_PASSWORD), 5),
        (TRUST_USER, None, 0),
    ];
    for (user, password, first_request) in cases {
        let mut s = raw::ok(
            login(
                &proxy.addr(),
                PROTO_3_0,
                &[("user", user), ("database", APP_DB)],
                password,
            )
            .await,
            user,
        );
        assert_eq!(
            s.auth.first(),
            Some(&first_request),
            "{user}: authentication requests {:?}",
            s.auth
        );
        assert_eq!(*s.auth.last().unwrap(), 0, "{user}: {:?}", s.auth);
        let r = s.raw.query_ok("SELECT current_user").await;
        assert_eq!(r.scalar(), user);
    }

    // Wrong passwords are refused for each client-side method.
    for (user, method) in [
        (APP_USER, "scram"),
        (PLAIN_USER, "scram"),
        (MD5_USER, "md5"),
    ] {
        let e = assert_refused(
            login(
                &proxy.addr(),
                PROTO_3_0,
                &[("user", user), ("database", APP_DB)],
                Some("definitely-wrong"),
            )
            .await,
            "28P01",
            &format!("{user} ({method}) with a wrong password"),
        )
        .await;
        assert!(
            e.message().contains(user),
            "message should name the user: {e:?}"
        );
        let err = proxy
            .try_connect(user, "definitely-wrong", APP_DB)
            .await
            .err()
            .unwrap_or_else(|| panic!("{user}: tokio-postgres login with a wrong password worked"));
        assert_eq!(db_code(&err).as_deref(), Some("28P01"), "{user}: {err:?}");
    }
}

/// Bad logins get PostgreSQL's SQLSTATEs (and are closed), while a client that is already
/// connected keeps running queries the whole time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_logins_get_the_right_errors_and_leave_others_alone() {
    let proxy = main_proxy();
    let c = shared_cluster();
    let witness = Arc::new(proxy.connect_app().await);
    let ok_count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bg = {
        let (w, n, stop) = (witness.clone(), ok_count.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i: i32 = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let row = tokio::time::timeout(raw::IO, w.query_one("SELECT $1::int * 2", &[&i]))
                    .await
                    .map_err(|_| format!("witness query {i} timed out"))?
                    .map_err(|e| format!("witness query {i} failed: {e}"))?;
                if row.get::<_, i32>(0) != i * 2 {
                    return Err(format!("witness query {i}: wrong answer"));
                }
                n.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok::<(), String>(())
        })
    };

    let addr = proxy.addr();
    // Unknown user: the proxy runs a (mock) SCRAM exchange first, like PostgreSQL, so the
    // user's non-existence is not revealed before the password check.
    let r = login(
        &addr,
        PROTO_3_0,
        &[("user", "no_such_user"), ("database", APP_DB)],
        Some("whatever"),
    )
    .await;
    if let Err(refused) = &r {
        assert_eq!(
            refused.auth.first(),
            Some(&10),
            "an unknown user must get a SASL exchange before the refusal (auth requests {:?})",
            refused.auth
        );
    }
    let e = assert_refused(r, "28P01", "unknown user").await;
    assert!(e.message().contains("no_such_user"), "{e:?}");

    // The same from a real client library.
    for (user, password, db, code) in [
        ("no_such_user", "whatever", APP_DB, "28P01"),
        (APP_USER, "wrong", APP_DB, "28P01"),
        (APP_USER, APP_PASSWORD, "no_such_database", "3D000"),
    ] {
        let err = within(
            "bad login",
            Duration::from_secs(20),
            proxy.try_connect(user, password, db),
        )
        .await
        .err()
        .unwrap_or_else(|| panic!("login as {user}/{db} should fail"));
        let dbe = err
            .as_db_error()
            .unwrap_or_else(|| panic!("{user}/{db}: expected an ErrorResponse, got {err:?}"));
        assert_eq!(
            (dbe.code().code(), dbe.severity()),
            (code, "FATAL"),
            "{user}/{db}: {dbe:?}\nproxy log:\n{}",
            proxy.log_tail(30)
        );
    }

    // Unknown database: the server's own error, as on a direct connection.
    let direct = assert_refused(
        login(
            &c.primary().addr(),
            PROTO_3_0,
            &[("user", APP_USER), ("database", "no_such_database")],
            Some(APP_PASSWORD),
        )
        .await,
        "3D000",
        "unknown database, direct",
    )
    .await;
    let via = assert_refused(
        login(
            &addr,
            PROTO_3_0,
            &[("user", APP_USER), ("database", "no_such_database")],
            Some(APP_PASSWORD),
        )
        .await,
        "3D000",
        "unknown database via the proxy",
    )
    .await;
    assert_eq!(via.message(), direct.message());
    // Each of those logins made a pool for the database it named; pools no connection ever
    // opened in are forgotten once nobody uses them (any name a client gives would otherwise
    // stay listed, and be looked after each second, for as long as the process runs).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (code, body) = proxy.http_get("/status").await;
        assert_eq!(code, 200, "{body}");
        if !body.contains("no_such_database") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a pool for a database that does not exist is still listed: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        proxy.http_get("/status").await.1.contains(APP_DB),
        "the pool in use is kept"
    );

    // No user name at all.
    assert_refused(
        login(&addr, PROTO_3_0, &[("database", APP_DB)], Some("x")).await,
        "28000",
        "startup packet without user",
    )
    .await;
    // Replication connections are not proxied.
    let r = login(
        &addr,
        PROTO_3_0,
        &[
            ("user", APP_USER),
            ("database", APP_DB),
            ("replication", "true"),
        ],
        Some(APP_PASSWORD),
    )
    .await;
    let refused = raw::refused(r, "replication connection");
    assert_eq!(
        (refused.error.severity(), refused.error.code()),
        ("FATAL".into(), "0A000".into()),
        "{:?}",
        refused.error
    );
    // Read as PostgreSQL reads it: a boolean in any of its spellings, or `database`.
    for (value, code) in [
        ("database", Some("0A000")),
        ("maybe", Some("22023")),
        ("FALSE", None),
        ("of", None),
    ] {
        let r = login(
            &addr,
            PROTO_3_0,
            &[
                ("user", APP_USER),
                ("database", APP_DB),
                ("replication", value),
            ],
            Some(APP_PASSWORD),
        )
        .await;
        match code {
            Some(code) => {
                let refused = raw::refused(r, value);
                assert_eq!(
                    refused.error.code(),
                    code,
                    "replication={value}: {:?}",
                    refused.error
                );
            }
            None => {
                raw::ok(r, value);
            }
        }
    }

    // A burst of concurrent bad logins.
    let mut set = tokio::task::JoinSet::new();
    for i in 0..12 {
        let addr = addr.clone();
        set.spawn(async move {
            let (user, pw) = if i % 2 == 0 {
                (APP_USER, "nope")
            } else {
                ("nobody_here", "nope")
            };
            let r = login(
                &addr,
                PROTO_3_0,
                &[("user", user), ("database", APP_DB)],
                Some(pw),
            )
            .await;
            let e = raw::refused(r, "burst").error;
            e.code()
        });
    }
    while let Some(code) = within("burst", Duration::from_secs(30), set.join_next()).await {
        assert_eq!(code.unwrap(), "28P01");
    }

    // The witness never noticed (and keeps going for a while longer).
    let seen = ok_count.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(10);
    while ok_count.load(Ordering::Relaxed) < seen + 5
        && Instant::now() < deadline
        && !bg.is_finished()
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    within("witness loop", Duration::from_secs(15), bg)
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        ok_count.load(Ordering::Relaxed) >= seen + 5,
        "witness made too little progress ({} queries before, {} after)",
        seen,
        ok_count.load(Ordering::Relaxed)
    );
    let tx_ok = witness
        .batch_execute("BEGIN; SELECT txid_current(); COMMIT")
        .await;
    assert!(tx_ok.is_ok(), "{tx_ok:?}");
    // And good logins still work.
    let fresh = proxy.connect_app().await;
    assert_eq!(
        fresh
            .query_one("SELECT 7", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        7
    );
    assert!(proxy.is_running());
}

/// Without a `database` parameter the database is the user name, as in PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_defaults_to_the_user_name() {
    let proxy = main_proxy();
    for (user, password) in [(APP_USER, APP_PASSWORD), (SUPERUSER, SUPERUSER_PASSWORD)] {
        let mut s = raw::ok(
            login(&proxy.addr(), PROTO_3_0, &[("user", user)], Some(password)).await,
            user,
        );
        let r = s
            .raw
            .query_ok("SELECT current_database()::text || '/' || current_user::text")
            .await;
        assert_eq!(r.scalar(), format!("{user}/{user}"));
        let r = s
            .raw
            .query_ok("BEGIN; SELECT current_database(); COMMIT")
            .await;
        assert_eq!(r.scalar(), user);
    }
}

/// A user configured in the proxy (password right) whose role does not exist on the servers:
/// FATAL 28000, and the proxy keeps serving others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_missing_on_the_server_gets_28000() {
    let proxy = main_proxy();
    let witness = proxy.connect_app().await;
    let e = assert_refused(
        login(
            &proxy.addr(),
            PROTO_3_0,
            &[("user", GHOST_USER), ("database", APP_DB)],
            Some(GHOST_PASSWORD),
        )
        .await,
        "28000",
        "user missing on the server (raw)",
    )
    .await;
    eprintln!("{e:?}");
    let err = within(
        "ghost login",
        Duration::from_secs(20),
        proxy.try_connect(GHOST_USER, GHOST_PASSWORD, APP_DB),
    )
    .await
    .expect_err("a user missing on the server logged in");
    assert_eq!(db_code(&err).as_deref(), Some("28000"), "{err:?}");
    let row = witness.query_one("SELECT 3", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 3);
}

// ------------------------------------------------------------------------------------------
// Protocol versions, SSL/GSS requests
// ------------------------------------------------------------------------------------------

/// Protocol 2.0 and 4.0 get FATAL 0A000; 3.2 (newer libpq) and unknown `_pq_.` options get
/// NegotiateProtocolVersion exactly as the server would send it, and the connection works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_versions_are_negotiated_like_postgres() {
    let proxy = main_proxy();
    let c = shared_cluster();
    let direct = c.primary().addr();
    let addr = proxy.addr();

    // PostgreSQL answers protocol 1.0/2.0 in the old message format; the proxy answers in the
    // 3.0 format that every current client reads.
    for (version, name) in [
        (2 << 16, "2.0"),
        (1 << 16, "1.0"),
        (4 << 16, "4.0"),
        (0x1234 << 16, "4660.0"),
    ] {
        let p = assert_refused(
            login(&addr, version, &app_params(), Some(APP_PASSWORD)).await,
            "0A000",
            &format!("protocol {name} via the proxy"),
        )
        .await;
        if version >= 3 << 16 {
            let d = assert_refused(
                login(&direct, version, &app_params(), Some(APP_PASSWORD)).await,
                "0A000",
                &format!("protocol {name}, direct"),
            )
            .await;
            eprintln!("protocol {name}: direct {d:?}, proxy {p:?}");
        }
    }

    #[allow(clippy::type_complexity)]
    let cases: [(i32, &[(&str, &str)], &str); 3] = [
        ((3 << 16) | 2, &[], "3.2"),
        ((3 << 16) | 2, &[("_pq_.made_up_option", "1")], "3.2 + _pq_"),
        (3 << 16, &[("_pq_.made_up_option", "on")], "3.0 + _pq_"),
    ];
    for (version, extra, name) in cases {
        let mut params = app_params();
        params.extend_from_slice(extra);
        let d = raw::ok(
            login(&direct, version, &params, Some(APP_PASSWORD)).await,
            &format!("{name} direct"),
        );
        let mut p = raw::ok(
            login(&addr, version, &params, Some(APP_PASSWORD)).await,
            &format!("{name} via the proxy"),
        );
        assert_eq!(
            p.negotiate.len(),
            1,
            "{name}: expected one NegotiateProtocolVersion, got {:?}",
            p.negotiate
        );
        assert_eq!(
            p.negotiate, d.negotiate,
            "{name}: NegotiateProtocolVersion differs from the server's"
        );
        let body = &p.negotiate[0].body;
        // PostgreSQL sends the whole version number (3.0 = 0x00030000) here, and libpq 18
        // reads it so: a value below 3.0 makes it abort the connection.
        assert_eq!(
            i32::from_be_bytes([body[0], body[1], body[2], body[3]]),
            3 << 16,
            "{name}: NegotiateProtocolVersion must carry protocol 3.0 as PostgreSQL sends it"
        );
        assert!(p.key.is_some(), "{name}: no BackendKeyData");
        let r = p.raw.query_ok("SELECT 40 + 2").await;
        assert_eq!(r.scalar(), "42");
        let r = p
            .raw
            .query_ok("BEGIN; SELECT txid_current() > 0; COMMIT")
            .await;
        assert_eq!(r.scalar(), "t");
    }
    // Plain 3.0 gets no NegotiateProtocolVersion.
    let s = raw::ok(
        login(&addr, PROTO_3_0, &app_params(), Some(APP_PASSWORD)).await,
        "3.0",
    );
    assert!(s.negotiate.is_empty(), "{:?}", s.negotiate);
}

/// A `MakeTlsConnect` that makes tokio-postgres send SSLRequest (like libpq's
/// `sslmode=prefer`) but can't actually do TLS: the session only works if the proxy answers
/// `N`.
#[derive(Clone, Copy)]
struct PretendTls;

#[derive(Debug)]
struct PretendTlsError;

impl std::fmt::Display for PretendTlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the server accepted TLS, which this test client cannot do")
    }
}

impl std::error::Error for PretendTlsError {}

impl<S> tokio_postgres::tls::MakeTlsConnect<S> for PretendTls {
    type Stream = tokio_postgres::tls::NoTlsStream;
    type TlsConnect = PretendTls;
    type Error = PretendTlsError;
    fn make_tls_connect(&mut self, _: &str) -> Result<PretendTls, PretendTlsError> {
        Ok(PretendTls)
    }
}

impl<S> tokio_postgres::tls::TlsConnect<S> for PretendTls {
    type Stream = tokio_postgres::tls::NoTlsStream;
    type Error = PretendTlsError;
    type Future = std::future::Ready<Result<tokio_postgres::tls::NoTlsStream, PretendTlsError>>;
    fn connect(self, _: S) -> Self::Future {
        std::future::ready(Err(PretendTlsError))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_and_gssenc_requests_are_answered_n() {
    let proxy = main_proxy();
    let addr = proxy.addr();

    for (name, requests) in [
        ("SSLRequest", vec![raw::ssl_request()]),
        ("GSSENCRequest", vec![raw::gssenc_request()]),
        (
            "GSSENCRequest then SSLRequest",
            vec![raw::gssenc_request(), raw::ssl_request()],
        ),
        (
            "SSLRequest then GSSENCRequest",
            vec![raw::ssl_request(), raw::gssenc_request()],
        ),
    ] {
        let mut conn = raw::Raw::connect(&addr).await;
        for req in &requests {
            conn.send(req).await.unwrap();
            let b = conn.byte(raw::IO).await;
            assert_eq!(b, Some(b'N'), "{name}: answer");
            // Exactly one byte: nothing else may follow before the client speaks again.
            match conn.next(Duration::from_millis(300)).await {
                raw::Next::Timeout => {}
                other => panic!("{name}: unexpected data after 'N': {other:?}"),
            }
        }
        let mut s = raw::ok(
            raw::login_on(conn, PROTO_3_0, &app_params(), Some(APP_PASSWORD)).await,
            name,
        );
        let r = s.raw.query_ok("SELECT 'plain text works'").await;
        assert_eq!(r.scalar(), "plain text works", "{name}");
    }

    // Each may be asked once, as PostgreSQL allows: asked again, it reads as a startup packet
    // of an unknown protocol version (rather than be answered for ever).
    for (name, requests, version) in [
        (
            "SSLRequest twice",
            vec![raw::ssl_request(), raw::ssl_request()],
            "1234.5679",
        ),
        (
            "GSSENCRequest twice",
            vec![raw::gssenc_request(), raw::gssenc_request()],
            "1234.5680",
        ),
        (
            "GSSENCRequest, SSLRequest, GSSENCRequest",
            vec![
                raw::gssenc_request(),
                raw::ssl_request(),
                raw::gssenc_request(),
            ],
            "1234.5680",
        ),
    ] {
        let mut conn = raw::Raw::connect(&addr).await;
        let (last, answered) = requests.split_last().unwrap();
        for req in answered {
            conn.send(req).await.unwrap();
            assert_eq!(conn.byte(raw::IO).await, Some(b'N'), "{name}: answer");
        }
        conn.send(last).await.unwrap();
        let f = conn.frame().await;
        assert!(f.is_error(), "{name}: {f:?}");
        assert_eq!(
            (f.code().as_str(), f.severity().as_str()),
            ("0A000", "FATAL"),
            "{name}: {f:?}"
        );
        assert!(f.message().contains(version), "{name}: {f:?}");
    }

    // A client library with sslmode=prefer sends SSLRequest and falls back to plain text.
    let cs = format!(
        "{} sslmode=prefer connect_timeout=10",
        proxy.conn_string(APP_USER, APP_PASSWORD, APP_DB)
    );
    let (client, conn) = within(
        "sslmode=prefer connect",
        Duration::from_secs(20),
        tokio_postgres::connect(&cs, PretendTls),
    )
    .await
    .unwrap_or_else(|e| panic!("sslmode=prefer through the proxy failed: {e}"));
    tokio::spawn(conn);
    let row = client.query_one("SELECT 1 + 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 2);
    // sslmode=require must fail on the client side: the proxy said no to TLS.
    let cs = format!(
        "{} sslmode=require connect_timeout=10",
        proxy.conn_string(APP_USER, APP_PASSWORD, APP_DB)
    );
    let r = within(
        "sslmode=require connect",
        Duration::from_secs(20),
        tokio_postgres::connect(&cs, PretendTls),
    )
    .await;
    let err = r
        .err()
        .expect("sslmode=require must fail against a proxy without TLS");
    assert!(
        err.to_string().contains("TLS") || err.to_string().contains("tls"),
        "{err}"
    );
}

// ------------------------------------------------------------------------------------------
// ParameterStatus, BackendKeyData
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greeting_matches_a_direct_connection_and_each_client_has_its_own_key() {
    let proxy = main_proxy();
    let c = shared_cluster();
    let mut params = app_params();
    params.push(("application_name", "sy_greeting_probe"));
    let direct = raw::ok(
        login(&c.primary().addr(), PROTO_3_0, &params, Some(APP_PASSWORD)).await,
        "direct",
    );
    let a = raw::ok(
        login(&proxy.addr(), PROTO_3_0, &params, Some(APP_PASSWORD)).await,
        "proxy",
    );
    for k in [
        "server_version",
        "server_encoding",
        "client_encoding",
        "DateStyle",
        "TimeZone",
        "integer_datetimes",
        "standard_conforming_strings",
        "application_name",
        "IntervalStyle",
        "is_superuser",
        "session_authorization",
    ] {
        assert!(
            a.params.contains_key(k),
            "the proxy did not report {k}: {:?}",
            a.params
        );
    }
    assert_eq!(a.params["application_name"], "sy_greeting_probe");
    assert_eq!(
        a.params, direct.params,
        "ParameterStatus via the proxy differs from a direct connection to the primary"
    );

    // BackendKeyData: a key per client. (Its pid is the server process's the client logged in
    // on, which pg_backend_pid() agrees with while the pool has room: pooling.rs checks that
    // with a proxy of its own; this one is shared by the file's tests.)
    let b = raw::ok(
        login(&proxy.addr(), PROTO_3_0, &params, Some(APP_PASSWORD)).await,
        "proxy 2",
    );
    let (ka, kb) = (a.key.expect("no key"), b.key.expect("no key"));
    assert_ne!(ka.0, kb.0, "two clients got the same BackendKeyData pid");
    assert_ne!(ka, kb);
}

/// PostgreSQL truncates an `application_name` of 64 bytes or more with a notice during
/// startup (tokio-postgres's own `notices` test expects it). Through the proxy the greeting
/// carries the same notice, also for a client whose pooled server connection already has the
/// setting, and the same truncated ParameterStatus.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_of_applying_startup_settings_arrive_as_on_a_direct_connection() {
    let proxy = main_proxy();
    let c = shared_cluster();
    let long = "n".repeat(65);
    let mut params = app_params();
    params.push(("application_name", &long));
    let summary = |s: &raw::Session| -> Vec<(String, String)> {
        s.notices.iter().map(|n| (n.code(), n.message())).collect()
    };
    let direct = raw::ok(
        login(&c.primary().addr(), PROTO_3_0, &params, Some(APP_PASSWORD)).await,
        "direct",
    );
    let want = summary(&direct);
    assert_eq!(want.len(), 1, "direct: {want:?}");
    assert_eq!(want[0].0, "42622", "direct: {want:?}");
    assert_eq!(direct.params["application_name"], "n".repeat(63));
    // The pool has one server connection. A client with the same name and a search_path
    // leaves it behind; each next client logs in on the connection the one before left with
    // this very name, and gets the notice, and none of the leaver's other settings.
    let mut leaver = params.clone();
    leaver.push(("search_path", "sy_left_behind"));
    let mut lv = raw::ok(
        login(&proxy.addr(), PROTO_3_0, &leaver, Some(APP_PASSWORD)).await,
        "leaver",
    );
    let path = lv
        .raw
        .query_ok("SELECT current_setting('search_path')")
        .await
        .scalar();
    assert_eq!(path, "sy_left_behind", "the leaver's own setting");
    // It says goodbye (a client that vanishes gets its connection reset).
    lv.raw.send(b"X\0\0\0\x04").await.expect("Terminate");
    lv.raw
        .expect_closed(Duration::from_secs(10), "after Terminate")
        .await;
    for i in 0..2 {
        let mut s = raw::ok(
            login(&proxy.addr(), PROTO_3_0, &params, Some(APP_PASSWORD)).await,
            "proxy",
        );
        assert_eq!(summary(&s), want, "client {i} through the proxy");
        let path = s
            .raw
            .query_ok("SELECT current_setting('search_path')")
            .await
            .scalar();
        assert_eq!(
            path, "\"$user\", public",
            "client {i}: the leaver's setting"
        );
        assert_eq!(
            s.params["application_name"],
            direct.params["application_name"]
        );
    }
    // A setting that raises no notice raises none through the proxy either.
    let mut quiet = app_params();
    quiet.push(("application_name", "sy_quiet"));
    let s = raw::ok(
        login(&proxy.addr(), PROTO_3_0, &quiet, Some(APP_PASSWORD)).await,
        "proxy, quiet",
    );
    assert!(s.notices.is_empty(), "{:?}", summary(&s));
}

// ------------------------------------------------------------------------------------------
// Startup settings
// ------------------------------------------------------------------------------------------

/// Settings and value renderings a session's settings affect.
const PROBE_SQL: &str = "SELECT current_setting('application_name'), \
    current_setting('client_encoding'), current_setting('DateStyle'), \
    current_setting('TimeZone'), current_setting('search_path'), \
    current_setting('statement_timeout'), current_setting('work_mem'), \
    current_setting('lock_timeout'), current_setting('extra_float_digits'), \
    current_setting('IntervalStyle'), \
    '2024-03-05 13:14:15.5+00'::timestamptz::text, '2024-03-05'::date::text, \
    '1 day 02:03:04'::interval::text, (1::float8 / 3)::text, chr(233)";

type Row = Vec<Option<Vec<u8>>>;

fn show_row(r: &Row) -> Vec<String> {
    r.iter()
        .map(|c| match c {
            None => "NULL".into(),
            Some(b) => match std::str::from_utf8(b) {
                Ok(s) => s.to_string(),
                Err(_) => format!("{b:02x?}"),
            },
        })
        .collect()
}

async fn probe(s: &mut raw::Session, what: &str) -> Row {
    let r = s.raw.query(PROBE_SQL).await;
    if let Some(e) = r.error {
        panic!("{what}: probe failed: {e:?}");
    }
    assert_eq!(r.rows.len(), 1, "{what}");
    r.rows.into_iter().next().unwrap()
}

/// One client's expected state: a direct connection with the same startup packet, given
/// the same SETs.
struct Profile {
    name: &'static str,
    params: Vec<(&'static str, &'static str)>,
    direct: raw::Session,
    proxied: raw::Session,
    /// ParameterStatus as the client knows it (greeting + later messages).
    seen: BTreeMap<String, String>,
    direct_seen: BTreeMap<String, String>,
}

impl Profile {
    async fn new(name: &'static str, extra: &[(&'static str, &'static str)]) -> Profile {
        let c = shared_cluster();
        let mut params = app_params();
        params.extend_from_slice(extra);
        let direct = raw::ok(
            login(&c.primary().addr(), PROTO_3_0, &params, Some(APP_PASSWORD)).await,
            &format!("{name}: direct login"),
        );
        let proxied = raw::ok(
            login(&main_proxy().addr(), PROTO_3_0, &params, Some(APP_PASSWORD)).await,
            &format!("{name}: login through the proxy"),
        );
        Profile {
            name,
            params,
            seen: proxied.params.clone(),
            direct_seen: direct.params.clone(),
            direct,
            proxied,
        }
    }

    /// Runs `sql` on both connections; the outcome (rows, error code, ParameterStatus) must
    /// be the same.
    async fn both(&mut self, sql: &str) -> raw::QueryResult {
        let d = self.direct.raw.query(sql).await;
        let p = self.proxied.raw.query(sql).await;
        assert_eq!(
            p.error.as_ref().map(|e| e.code()),
            d.error.as_ref().map(|e| e.code()),
            "{}: {sql:?}: error differs (proxy {:?}, direct {:?})",
            self.name,
            p.error,
            d.error
        );
        assert_eq!(
            p.rows.iter().map(show_row).collect::<Vec<_>>(),
            d.rows.iter().map(show_row).collect::<Vec<_>>(),
            "{}: {sql:?}: rows differ (left: proxy, right: direct)",
            self.name
        );
        assert_eq!(
            p.status, d.status,
            "{}: {sql:?}: transaction status",
            self.name
        );
        // The same ParameterStatus messages, no more: PostgreSQL 14 and later report a
        // value once it changed, not each step of the proxy's work (pgjdbc closes its
        // connection on a client_encoding other than UTF8, however short-lived).
        let (mut ps, mut ds) = (p.params.clone(), d.params.clone());
        ps.sort();
        ds.sort();
        assert_eq!(
            ps, ds,
            "{}: {sql:?}: ParameterStatus through the proxy (left) and direct (right)",
            self.name
        );
        for (k, v) in &p.params {
            self.seen.insert(k.clone(), v.clone());
        }
        for (k, v) in &d.params {
            self.direct_seen.insert(k.clone(), v.clone());
        }
        p
    }

    /// The probe, autocommit (any server) and in a read-write transaction (the primary),
    /// through the proxy, against the direct connection's answer.
    async fn check(&mut self, round: usize) {
        let what = format!("{} round {round}", self.name);
        let truth = probe(&mut self.direct, &what).await;
        let auto = probe(&mut self.proxied, &what).await;
        assert_eq!(
            show_row(&auto),
            show_row(&truth),
            "{what}: autocommit probe through the proxy (left) differs from direct (right); \
             startup params {:?}",
            self.params
        );
        for sql in ["SHOW DateStyle", "SHOW search_path", "SHOW TimeZone"] {
            self.both(sql).await;
        }
        let r = self.proxied.raw.query_ok("BEGIN").await;
        assert_eq!(r.status, b'T');
        let in_tx = probe(&mut self.proxied, &what).await;
        let w = self
            .proxied
            .raw
            .query_ok("SELECT pg_is_in_recovery(), txid_current() > 0")
            .await;
        assert_eq!(
            show_row(&w.rows[0]),
            ["f", "t"],
            "{what}: not on the primary"
        );
        let r = self.proxied.raw.query_ok("COMMIT").await;
        assert_eq!(r.status, b'I');
        assert_eq!(
            show_row(&in_tx),
            show_row(&truth),
            "{what}: probe in a transaction through the proxy (left) differs from direct \
             (right); startup params {:?}",
            self.params
        );
    }
}

/// Startup parameters and `options` take effect exactly as on a direct connection, across
/// many transactions on a pool of one server connection per backend shared with clients that
/// use other settings; SET/RESET in the session are carried along; ParameterStatus stays the
/// client's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_settings_behave_as_on_a_direct_connection_on_a_shared_pool() {
    main_proxy();
    let mut a = Profile::new(
        "A",
        &[
            ("application_name", "sy_client_a"),
            ("client_encoding", "LATIN1"),
            ("DateStyle", "SQL, DMY"),
            ("TimeZone", "America/New_York"),
            ("search_path", "sy_a, public"),
            ("extra_float_digits", "-5"),
            ("IntervalStyle", "postgres_verbose"),
            ("options", "-c statement_timeout=1234 -c work_mem=5MB"),
        ],
    )
    .await;
    let mut b = Profile::new(
        "B",
        &[
            ("application_name", "sy_client_b"),
            ("client_encoding", "UTF8"),
            ("DateStyle", "German"),
            ("TimeZone", "Asia/Tokyo"),
            ("search_path", "sy_b"),
            ("extra_float_digits", "0"),
            ("IntervalStyle", "iso_8601"),
            (
                "options",
                "-c statement_timeout=4321 --work-mem=7MB -clock_timeout=2500",
            ),
        ],
    )
    .await;
    // Server defaults only.
    let mut c = Profile::new("C", &[]).await;

    // The settings really differ from each other (else the test proves nothing).
    assert_eq!(a.proxied.params["client_encoding"], "LATIN1");
    assert_eq!(a.proxied.params["DateStyle"], "SQL, DMY");
    assert_eq!(b.proxied.params["DateStyle"], "German, DMY");
    assert_eq!(b.proxied.params["IntervalStyle"], "iso_8601");
    assert_eq!(a.proxied.params["TimeZone"], "America/New_York");
    for p in [&a, &b, &c] {
        assert_eq!(
            p.proxied.params, p.direct.params,
            "{}: greeting ParameterStatus differs from a direct connection",
            p.name
        );
    }
    let a_row = probe(&mut a.direct, "A").await;
    assert_eq!(a_row[14].as_deref(), Some(&[0xe9u8][..]), "LATIN1 é");
    assert_eq!(a_row[5].as_deref(), Some(&b"1234ms"[..]));
    let b_row = probe(&mut b.direct, "B").await;
    assert_eq!(b_row[14].as_deref(), Some(&[0xc3u8, 0xa9][..]), "UTF8 é");
    assert_eq!(b_row[7].as_deref(), Some(&b"2500ms"[..]));
    assert_eq!(b_row[6].as_deref(), Some(&b"7MB"[..]));

    for round in 0..4 {
        let order: [usize; 3] = match round % 3 {
            0 => [0, 1, 2],
            1 => [2, 0, 1],
            _ => [1, 2, 0],
        };
        for i in order {
            let p = match i {
                0 => &mut a,
                1 => &mut b,
                _ => &mut c,
            };
            p.check(round).await;
        }
        match round {
            0 => {
                // A SET is the client's, reported to it, and follows it.
                let r = a.both("SET application_name = 'sy_client_a_renamed'").await;
                assert!(
                    r.params
                        .contains(&("application_name".into(), "sy_client_a_renamed".into())),
                    "SET application_name must be reported with ParameterStatus: {:?}",
                    r.params
                );
                c.both("SET search_path = sy_c, public").await;
                c.both("SET DateStyle = 'Postgres, YMD'").await;
            }
            1 => {
                c.both("RESET search_path").await;
                b.both("SET TimeZone = 'UTC'").await;
                // A rolled back SET is undone on a direct connection: also through the proxy.
                b.both("BEGIN").await;
                b.both("SET extra_float_digits = 3").await;
                b.both("ROLLBACK").await;
            }
            2 => {
                c.both("RESET ALL").await;
                a.both("SET IntervalStyle = 'sql_standard'").await;
            }
            _ => {}
        }
    }
    for p in [&a, &b, &c] {
        assert_eq!(
            p.seen, p.direct_seen,
            "{}: the parameters the client was told about (greeting + ParameterStatus) differ \
             from a direct connection's",
            p.name
        );
    }

    // statement_timeout from `options` is enforced for A, and only for A, on the shared
    // primary connection.
    a.proxied.raw.query_ok("BEGIN").await;
    let r = a.proxied.raw.query("SELECT pg_sleep(3)").await;
    // 57014 is the proof that statement_timeout applied (how soon is not this test's).
    let e = r
        .error
        .expect("A's statement_timeout=1234 did not cancel pg_sleep(3)");
    assert_eq!(e.code(), "57014", "{e:?}");
    a.proxied.raw.query("ROLLBACK").await;
    for (p, secs) in [(&mut c, "1.6"), (&mut b, "1.6")] {
        p.proxied.raw.query_ok("BEGIN").await;
        let r = p
            .proxied
            .raw
            .query(&format!(
                "SELECT pg_sleep({secs}), current_setting('statement_timeout')"
            ))
            .await;
        assert!(
            r.error.is_none(),
            "{}: another client's statement_timeout leaked onto its server connection: {:?}",
            p.name,
            r.error
        );
        p.proxied.raw.query_ok("COMMIT").await;
    }
}

/// PostgreSQL applies startup parameters after the `options` switches: a parameter given both
/// ways ends up with the startup parameter's value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_parameter_wins_over_options_like_postgres() {
    main_proxy();
    let mut p = Profile::new(
        "both ways",
        &[
            ("application_name", "from_startup_param"),
            (
                "options",
                "-c application_name=from_options -c work_mem=3MB",
            ),
            ("work_mem", "6MB"),
        ],
    )
    .await;
    let d = p
        .direct
        .raw
        .query_ok("SELECT current_setting('application_name'), current_setting('work_mem')")
        .await;
    assert_eq!(show_row(&d.rows[0]), ["from_startup_param", "6MB"]);
    for _ in 0..2 {
        p.check(0).await;
    }
    assert_eq!(p.proxied.params, p.direct.params);
}

/// PostgreSQL's short `options` switches (`-e`, `-f`, `-S`, grouped or not) set what they stand
/// for, as on a direct connection, across transactions on the shared pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_switches_behave_like_postgres() {
    main_proxy();
    let sql = "SELECT current_setting('DateStyle'), current_setting('enable_seqscan'), \
               current_setting('enable_hashjoin'), current_setting('work_mem'), \
               current_setting('enable_nestloop')";
    let mut p = Profile::new(
        "switches",
        &[(
            "options",
            "-e -fs -S 2048 -fhOn -c enable_nestloop=off -c _pq_.x=1",
        )],
    )
    .await;
    let mut q = Profile::new("grouped", &[("options", "-eS4MB -fn")]).await;
    // Another style on the same pooled connections in between: `-e` changes only the order,
    // from the server's default (ISO), not from what the connection had.
    let mut r = Profile::new("sql style", &[("DateStyle", "SQL, YMD")]).await;
    let d = p.direct.raw.query_ok(sql).await;
    assert_eq!(
        show_row(&d.rows[0]),
        ["ISO, DMY", "off", "off", "2MB", "off"],
        "the switches do not do what this test expects on the server itself"
    );
    for round in 0..2 {
        for x in [&mut p, &mut q] {
            r.check(round).await;
            x.both(sql).await;
            x.check(round).await;
        }
        // A custom setting named like a protocol option is a setting in `options`.
        let r = p.both("SELECT current_setting('_pq_.x')").await;
        assert_eq!(r.scalar(), "1");
    }
    assert_eq!(p.proxied.params, p.direct.params);
    assert_eq!(q.proxied.params, q.direct.params);
}

/// The startup packet of the RESET tests.
const RESET_PROFILE: [(&str, &str); 5] = [
    ("application_name", "sy_reset"),
    ("client_encoding", "LATIN1"),
    ("DateStyle", "SQL, YMD"),
    ("TimeZone", "Australia/Sydney"),
    ("options", "-c statement_timeout=2345 -c work_mem=9MB"),
];

/// RESET (one setting or ALL) and DISCARD ALL go back to the values from the startup packet,
/// as on a direct connection, even though the server connection in use was set up by the
/// proxy, with another client using the same server connections in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_returns_to_startup_values_like_postgres() {
    main_proxy();
    let mut p = Profile::new("reset", &RESET_PROFILE).await;
    let mut other = Profile::new("reset-neighbour", &[("DateStyle", "ISO, DMY")]).await;
    p.check(0).await;
    for sql in [
        "SET DateStyle = 'German'",
        "SET work_mem = '11MB'",
        "RESET DateStyle",
        "RESET work_mem",
        "SET TimeZone = 'UTC'",
        "SET application_name = 'sy_reset_changed'",
        "RESET ALL",
        "SET DateStyle = 'Postgres'",
        "DISCARD ALL",
    ] {
        p.both(sql).await;
        other.check(1).await;
        p.check(1).await;
    }
    // Inside a transaction: what the statement after the RESET sees.
    let settings = "SELECT current_setting('DateStyle'), current_setting('TimeZone'), \
                    current_setting('statement_timeout'), current_setting('work_mem'), \
                    current_setting('application_name')";
    for reset in ["RESET DateStyle", "RESET ALL"] {
        p.both("SET DateStyle = 'German'").await;
        p.both("BEGIN").await;
        p.both("SELECT txid_current() > 0").await;
        p.both(reset).await;
        p.both(settings).await;
        p.both("COMMIT").await;
        p.check(2).await;
    }
}

/// The statement right after a RESET (sent before the RESET's answer arrived, as pipelining
/// clients do) runs with the client's startup settings, as on a direct connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_right_after_reset_keeps_the_startup_settings() {
    main_proxy();
    let settings = "SELECT current_setting('DateStyle'), current_setting('TimeZone'), \
                    current_setting('statement_timeout'), current_setting('work_mem'), \
                    current_setting('application_name')";
    for reset in ["RESET ALL", "RESET DateStyle", "DISCARD ALL"] {
        let mut p = Profile::new("reset-pipelined", &RESET_PROFILE).await;
        p.both("SET DateStyle = 'German'").await;
        let mut results = Vec::new();
        for s in [&mut p.direct, &mut p.proxied] {
            let mut out = bytes::BytesMut::new();
            for sql in [reset, settings] {
                postgres_protocol::message::frontend::query(sql, &mut out).unwrap();
            }
            s.raw.send(&out).await.unwrap();
            let first = s.raw.read_result(reset).await;
            assert!(first.error.is_none(), "{reset}: {:?}", first.error);
            let second = s.raw.read_result(settings).await;
            assert!(second.error.is_none(), "{:?}", second.error);
            results.push(show_row(&second.rows[0]));
        }
        assert_eq!(
            results[1], results[0],
            "statement pipelined after {reset:?}: through the proxy (left) vs direct (right)"
        );
    }
}

/// After RESET ALL the client has been told (ParameterStatus) the values the server really
/// uses for it: the startup values, as on a direct connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameter_status_after_reset_all_matches_a_direct_connection() {
    main_proxy();
    let mut p = Profile::new("reset-status", &RESET_PROFILE).await;
    p.both("SET DateStyle = 'German'").await;
    p.both("RESET ALL").await;
    // At once: a client's next statement does not wait for the proxy to catch up.
    p.check(0).await;
    assert_eq!(
        p.seen, p.direct_seen,
        "ParameterStatus the client was told about (left) differs from a direct connection's \
         (right) after RESET ALL"
    );
}

/// Invalid startup settings are refused with the server's FATAL and SQLSTATE, and the
/// connection the proxy tried them on stays usable for others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_startup_settings_get_the_servers_error() {
    let proxy = main_proxy();
    let c = shared_cluster();
    #[allow(clippy::type_complexity)]
    let cases: [(&[(&str, &str)], Option<&str>); 15] = [
        (&[("DateStyle", "garbage")], Some("22023")),
        (&[("TimeZone", "Mars/Olympus_Mons")], Some("22023")),
        (&[("extra_float_digits", "99")], Some("22023")),
        (&[("options", "-c work_mem=lots")], Some("22023")),
        (&[("no_such_setting_xyz", "1")], Some("42704")),
        (&[("options", "-c work_mem")], None),
        (&[("options", "--not-a-switch")], None),
        (&[("options", "-x")], Some("42601")),
        (&[("options", "-fq")], Some("42601")),
        (&[("options", "-e -S")], Some("42601")),
        (&[("options", "-e stray")], Some("42601")),
        (&[("options", "-S lots")], Some("22023")),
        (&[("options", "-d 9")], Some("42501")),
        (&[("options", "-c database=postgres")], Some("42704")),
        (&[("options", "-c User=app")], Some("42704")),
    ];
    let mut mismatches = Vec::new();
    for (extra, expected) in cases {
        let mut params = app_params();
        params.extend_from_slice(extra);
        let d = raw::refused(
            login(&c.primary().addr(), PROTO_3_0, &params, Some(APP_PASSWORD)).await,
            &format!("{extra:?} direct"),
        );
        assert_eq!(
            d.error.severity(),
            "FATAL",
            "direct {extra:?}: {:?}",
            d.error
        );
        if let Some(code) = expected {
            assert_eq!(d.error.code(), code, "direct {extra:?}: {:?}", d.error);
        }
        let mut r = raw::refused(
            login(&proxy.addr(), PROTO_3_0, &params, Some(APP_PASSWORD)).await,
            &format!("{extra:?} via the proxy"),
        );
        assert_eq!(r.error.severity(), "FATAL", "{extra:?}: {:?}", r.error);
        let after = r
            .raw
            .expect_closed(Duration::from_secs(5), &format!("{extra:?}"))
            .await;
        assert!(
            after.is_empty(),
            "{extra:?}: messages after the FATAL: {after:?}"
        );
        eprintln!("{extra:?}: direct {:?}; proxy {:?}", d.error, r.error);
        if r.error.code() != d.error.code() {
            mismatches.push(format!(
                "{extra:?}: proxy {} ({:?}), server {} ({:?})",
                r.error.code(),
                r.error.message(),
                d.error.code(),
                d.error.message()
            ));
        }
    }
    // The pool is fine and a default client gets defaults.
    let mut p = Profile::new("after invalid", &[]).await;
    p.check(0).await;
    assert!(
        mismatches.is_empty(),
        "invalid startup settings got a different SQLSTATE than from the server:\n{}",
        mismatches.join("\n")
    );
}

/// A SASLInitialResponse without data (length -1) gets an empty challenge, answered with
/// client-first-message in a SASLResponse, as PostgreSQL does; with a mechanism not offered it
/// is refused the way the server refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_initial_response_without_data_is_challenged_like_postgres() {
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
    use postgres_protocol::message::{backend, frontend};
    let c = shared_cluster();
    let proxy = main_proxy();

    /// Logs in with an empty SASLInitialResponse for `mechanism`; the ErrorResponse if refused.
    async fn login_without_initial_data(addr: &str, mechanism: &str) -> Option<raw::Frame> {
        let mut r = raw::Raw::connect(addr).await;
        r.send(&raw::startup_packet(PROTO_3_0, &app_params()))
            .await
            .unwrap();
        let f = r.frame().await;
        assert!(
            matches!(f.parse(), backend::Message::AuthenticationSasl(_)),
            "{addr}: {f:?}"
        );
        let mut out = bytes::BytesMut::new();
        let mut body = mechanism.as_bytes().to_vec();
        body.push(0);
        body.extend_from_slice(&(-1i32).to_be_bytes());
        out.extend_from_slice(b"p");
        out.extend_from_slice(&(4 + body.len() as i32).to_be_bytes());
        out.extend_from_slice(&body);
        r.send(&out).await.unwrap();
        let f = r.frame().await;
        match f.parse() {
            backend::Message::AuthenticationSaslContinue(b) => {
                assert!(b.data().is_empty(), "{addr}: challenge {:?}", b.data());
            }
            backend::Message::ErrorResponse(_) => return Some(f),
            _ => panic!("{addr}: {f:?}"),
        }
        let mut scram = ScramSha256::new(APP_PASSWORD.as_bytes(), ChannelBinding::unsupported());
        out.clear();
        frontend::sasl_response(scram.message(), &mut out).unwrap();
        r.send(&out).await.unwrap();
        let f = r.frame().await;
        let backend::Message::AuthenticationSaslContinue(b) = f.parse() else {
            panic!("{addr}: server-first expected: {f:?}");
        };
        scram.update(b.data()).expect("server-first-message");
        out.clear();
        frontend::sasl_response(scram.message(), &mut out).unwrap();
        r.send(&out).await.unwrap();
        let f = r.frame().await;
        let backend::Message::AuthenticationSaslFinal(b) = f.parse() else {
            panic!("{addr}: server-final expected: {f:?}");
        };
        scram.finish(b.data()).expect("the server's signature");
        loop {
            let f = r.frame().await;
            match f.tag {
                b'Z' => break,
                b'E' => return Some(f),
                _ => {}
            }
        }
        let q = r.query_ok("SELECT current_user").await;
        assert_eq!(q.scalar(), APP_USER, "{addr}");
        None
    }

    for addr in [c.primary().addr(), proxy.addr()] {
        let refused = within(
            "login without initial data",
            Duration::from_secs(30),
            login_without_initial_data(&addr, "SCRAM-SHA-256"),
        )
        .await;
        assert!(refused.is_none(), "{addr}: {refused:?}");
    }
    let d = login_without_initial_data(&c.primary().addr(), "NOT-A-MECHANISM")
        .await
        .expect("the server refuses an unknown mechanism");
    let p = login_without_initial_data(&proxy.addr(), "NOT-A-MECHANISM")
        .await
        .expect("the proxy refuses an unknown mechanism");
    assert_eq!((p.severity(), p.code()), (d.severity(), d.code()));
}

// ------------------------------------------------------------------------------------------
// Admission
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_client_connections_bounds_clients() {
    const MAX: usize = 3;
    let c = shared_cluster();
    let proxy = tokio::task::block_in_place(|| {
        Proxy::start_with(
            c,
            ProxyOptions {
                extra_top: format!("max_client_connections = {MAX}\n"),
                ..Default::default()
            },
        )
    });
    let mut clients = Vec::new();
    for i in 0..MAX {
        let cl = within(
            "admitted login",
            Duration::from_secs(20),
            proxy.try_connect(APP_USER, APP_PASSWORD, APP_DB),
        )
        .await
        .unwrap_or_else(|e| panic!("client {i} of {MAX} refused: {e:?}"));
        clients.push(cl);
    }
    // One more: a clean FATAL 53300, for a library client and a raw one.
    let err = within(
        "login past the limit",
        Duration::from_secs(20),
        proxy.try_connect(APP_USER, APP_PASSWORD, APP_DB),
    )
    .await
    .expect_err("a client past max_client_connections was admitted");
    let dbe = err
        .as_db_error()
        .unwrap_or_else(|| panic!("expected an ErrorResponse past the limit, got {err:?}"));
    assert_eq!((dbe.code().code(), dbe.severity()), ("53300", "FATAL"));
    let r = login(&proxy.addr(), PROTO_3_0, &app_params(), Some(APP_PASSWORD)).await;
    assert_refused(r, "53300", "raw login past the limit").await;
    // Refused logins with bad passwords don't count either way.
    for _ in 0..3 {
        let r = login(&proxy.addr(), PROTO_3_0, &app_params(), Some("bad")).await;
        let e = raw::refused(r, "bad password at the limit").error;
        assert!(matches!(e.code().as_str(), "53300" | "28P01"), "{e:?}");
    }
    // A cancel request past the limit is still placed (PostgreSQL, too, takes them past
    // max_connections): cancelling matters most when a proxy is full.
    let rejected = "switchyard_client_rejected_total{reason=\"max_clients\"}";
    let rejected_before = proxy.metric(rejected).await;
    assert!(rejected_before >= 2.0, "the refused logins are counted");
    let token = clients[0].cancel_token();
    let query = clients[0].simple_query("SELECT pg_sleep(30)");
    let cancel = async {
        loop {
            // Until the query runs: a cancel before that has nothing to cancel.
            tokio::time::sleep(Duration::from_millis(300)).await;
            token
                .cancel_query(tokio_postgres::NoTls)
                .await
                .expect("sending a cancel request past the limit");
        }
    };
    let r = within(
        "a query cancelled while full",
        Duration::from_secs(20),
        async {
            tokio::select! {
                r = query => r,
                _ = cancel => unreachable!(),
            }
        },
    )
    .await;
    let e = r.expect_err("the query must be cancelled");
    assert_eq!(db_code(&e).as_deref(), Some("57014"), "{e:?}");
    // Counted once the server closed the cancel connection, which may be after the client
    // saw its query fail.
    proxy
        .wait_metric(
            "switchyard_cancel_requests_total{result=\"forwarded\"}",
            1.0,
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(
        proxy.metric(rejected).await,
        rejected_before,
        "a cancel request is not a refused client"
    );
    // The admitted clients work.
    for cl in &clients {
        let row = within("admitted query", raw::IO, cl.query_one("SELECT 5", &[]))
            .await
            .unwrap();
        assert_eq!(row.get::<_, i32>(0), 5);
    }
    // One leaves: a new client gets in (once the proxy noticed).
    drop(clients.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    let newcomer = loop {
        match within(
            "login after one left",
            Duration::from_secs(20),
            proxy.try_connect(APP_USER, APP_PASSWORD, APP_DB),
        )
        .await
        {
            Ok(cl) => break cl,
            Err(e) if db_code(&e).as_deref() == Some("53300") && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no client admitted after one disconnected: {e:?}"),
        }
    };
    assert_eq!(
        newcomer
            .query_one("SELECT 6", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        6
    );
    // Full again.
    let err = within(
        "login past the limit again",
        Duration::from_secs(20),
        proxy.try_connect(APP_USER, APP_PASSWORD, APP_DB),
    )
    .await
    .expect_err("admitted past the limit after a reconnect");
    assert_eq!(db_code(&err).as_deref(), Some("53300"), "{err:?}");
    for cl in clients.iter().chain(std::iter::once(&newcomer)) {
        let row = within("admitted query", raw::IO, cl.query_one("SELECT 8", &[]))
            .await
            .unwrap();
        assert_eq!(row.get::<_, i32>(0), 8);
    }
    drop(clients);
    drop(newcomer);
    // Clients that connect together all pass the first check at once (nobody is logged in
    // yet): the limit still holds when they finish logging in.
    let deadline = Instant::now() + Duration::from_secs(20);
    while proxy.metric("switchyard_client_connections").await > 0.0 {
        assert!(
            Instant::now() < deadline,
            "the clients that left are still counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let conn = proxy.conn_string(APP_USER, APP_PASSWORD, APP_DB);
    let burst: Vec<_> = (0..MAX * 3)
        .map(|_| {
            let conn = conn.clone();
            tokio::spawn(async move {
                let r = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await;
                r.map(|(client, task)| (client, tokio::spawn(task)))
            })
        })
        .collect();
    let mut admitted = Vec::new();
    for t in burst {
        match within("a login of the burst", Duration::from_secs(30), t)
            .await
            .unwrap()
        {
            Ok(c) => admitted.push(c),
            Err(e) => assert_eq!(db_code(&e).as_deref(), Some("53300"), "{e:?}"),
        }
    }
    assert!(
        (1..=MAX).contains(&admitted.len()),
        "{} of {} clients connecting together were admitted, the limit is {MAX}",
        admitted.len(),
        MAX * 3
    );
    drop(admitted);
    tokio::task::block_in_place(|| drop(proxy));
}

/// A user name longer than PostgreSQL keeps (63 bytes) logs in as its first 63 bytes, as it
/// does connected directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_user_names_are_cut_like_postgres() {
    let long = "u".repeat(63);
    let given = format!("{long}xyz");
    let l = long.clone();
    let proxy = tokio::task::spawn_blocking(move || {
        let c = shared_cluster();
        c.primary()
            .psql(&format!(
                "DO $$ BEGIN
                     IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{l}') THEN
                         CREATE ROLE {l} LOGIN PASSWORD 'lp';
                     END IF;
                 END $$"
            ))
            .expect("creating the role");
        c.wait_replicas_caught_up(Duration::from_secs(60))
            .expect("replicas catching up");
        Proxy::start_with(
            c,
            ProxyOptions {
                extra_tables: format!("[[users]]\nname = \"{l}\"\npassword = \"lp\"\n"),
                ..Default::default()
            },
        )
    })
    .await
    .unwrap();
    let params = [("user", given.as_str()), ("database", APP_DB)];
    let mut direct = raw::ok(
        login(
            &shared_cluster().primary().addr(),
            PROTO_3_0,
            &params,
            Some("lp"),
        )
        .await,
        "direct login with a 66-byte user name",
    );
    let mut through = raw::ok(
        login(&proxy.addr(), PROTO_3_0, &params, Some("lp")).await,
        "login through switchyard with a 66-byte user name",
    );
    for s in [&mut direct, &mut through] {
        let r = s.raw.query_ok("SELECT current_user::text").await;
        assert_eq!(r.scalar(), long);
    }
}

/// The salt switchyard's SCRAM exchange gives `user` (from server-first-message).
async fn scram_salt(proxy: &Proxy, user: &str) -> String {
    let mut conn = raw::Raw::connect(&proxy.addr()).await;
    conn.send(&raw::startup_packet(
        PROTO_3_0,
        &[("user", user), ("database", APP_DB)],
    ))
    .await
    .unwrap();
    let f = conn.frame().await;
    assert_eq!(
        (f.tag, &f.body[..4]),
        (b'R', &10i32.to_be_bytes()[..]),
        "{user}: SASL"
    );
    let first = b"n,,n=,r=clientnonce";
    let mut body = b"SCRAM-SHA-256\0".to_vec();
    body.extend_from_slice(&(first.len() as i32).to_be_bytes());
    body.extend_from_slice(first);
    let mut m = vec![b'p'];
    m.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    m.extend_from_slice(&body);
    conn.send(&m).await.unwrap();
    let f = conn.frame().await;
    assert_eq!(
        (f.tag, &f.body[..4]),
        (b'R', &11i32.to_be_bytes()[..]),
        "{user}: continue"
    );
    let server_first = String::from_utf8(f.body[4..].to_vec()).unwrap();
    server_first
        .split(',')
        .find_map(|a| a.strip_prefix("s="))
        .expect("a salt")
        .to_owned()
}

/// A reload does not change a configured user's SCRAM salt (its verifier is derived again
/// only when its password changes): a salt that changed at every reload, while an unknown
/// user's never does, would tell which users exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_scram_salts() {
    let proxy = tokio::task::spawn_blocking(|| {
        Proxy::start_with(shared_cluster(), ProxyOptions::default())
    })
    .await
    .unwrap();
    let before = (
        scram_salt(&proxy, APP_USER).await,
        scram_salt(&proxy, "nobody_here").await,
    );
    // The same configuration, read again.
    proxy.reload_ok().await;
    let after = (
        scram_salt(&proxy, APP_USER).await,
        scram_salt(&proxy, "nobody_here").await,
    );
    assert_eq!(before, after, "(configured user, unknown user) salts");
}
