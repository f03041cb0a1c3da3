//! `hba_file`: client access rules in `pg_hba.conf` form, applied by the proxy (the servers see
//! only its address). The first matching line decides: `trust`, `peer` on the Unix-domain
//! socket, `password`, `md5`, `scram-sha-256`, `reject`, and no line at all, each with
//! PostgreSQL's messages and SQLSTATEs; the rules are read again on reload, and a file that
//! does not parse is rejected with the old rules kept. `+role`, `samerole`, `samehost`,
//! `samenet` and `@file` match as in PostgreSQL; `include` records and regular expressions as
//! in PostgreSQL 16.

mod support;

use std::path::Path;
use std::time::Duration;

use support::proxy::{Proxy, ProxyOptions};
use support::raw;
use support::*;

const STEP: Duration = Duration::from_secs(30);

/// Logs in with tokio-postgres; `Err` carries the SQLSTATE and message of a refusal.
async fn login(host: &str, port: u16, user: &str, password: &str, db: &str) -> Result<(), String> {
    let cs = format!(
        "host={host} port={port} user={user} password={password} dbname={db} connect_timeout=10"
    );
    match tokio::time::timeout(STEP, tokio_postgres::connect(&cs, tokio_postgres::NoTls)).await {
        Err(_) => panic!("login of {user} to {db} via {host} timed out"),
        Ok(Ok((client, conn))) => {
            tokio::spawn(conn);
            let v: String = client
                .query_one("SELECT current_user::text", &[])
                .await
                .map_err(|e| match e.as_db_error() {
                    Some(d) => format!("{} {}", d.code().code(), d.message()),
                    None => e.to_string(),
                })?
                .get(0);
            assert_eq!(v, user);
            Ok(())
        }
        Ok(Err(e)) => Err(match e.as_db_error() {
            Some(d) => format!("{} {}", d.code().code(), d.message()),
            None => e.to_string(),
        }),
    }
}

/// The first authentication request the proxy sends a TCP client (3 cleartext, 5 md5, 10
/// SASL), or the error it gets instead.
async fn first_auth_request(proxy: &Proxy, user: &str, db: &str) -> Result<i32, String> {
    let mut c = raw::Raw::connect(&proxy.addr()).await;
    c.send(&raw::startup_packet(
        raw::PROTO_3_0,
        &[("user", user), ("database", db)],
    ))
    .await
    .unwrap();
    let f = c.frame().await;
    match f.tag {
        b'R' => Ok(i32::from_be_bytes(f.body[..4].try_into().unwrap())),
        b'E' => Err(format!("{} {}", f.code(), f.message())),
        t => panic!("unexpected message {:?}", t as char),
    }
}

/// The name of the user this test runs as.
fn os_user() -> String {
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    switchyard::net::os_user_name(uid).expect("the test's own user has a name")
}

fn write_rules(path: &Path, os: &str) {
    std::fs::write(
        path,
        format!(
            "# TYPE  DATABASE  USER        ADDRESS       METHOD\n\
             local   all       \"{os}\"      peer\n\
             local   all       {APP_USER}  peer\n\
             local   all       all         trust\n\
             host    {APP_DB}  {PLAIN_USER} 127.0.0.1/32 password\n\
             host    {APP_DB}  {MD5_USER},{TRUST_USER} 127.0.0.1 255.255.255.255 md5\n\
             host    all       {OTHER_USER} 127.0.0.1/32 reject\n\
             host    {APP_DB}  {APP_USER},{SUPERUSER} 127.0.0.1/32 scram-sha-256\n\
             host    \"the db\" all        10.0.0.0/8    trust\n"
        ),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hba_rules_decide_who_logs_in_and_how() {
    let c = shared_cluster();
    let os = os_user();
    // The test's own OS user logs in by `peer`: it needs a role and a [[users]] entry (the
    // proxy logs in to the servers with its password).
    let mut users = String::new();
    if os != SUPERUSER && os != APP_USER {
        c.primary()
            .psql(&format!(
                "DO $$ BEGIN CREATE ROLE \"{os}\" LOGIN PASSWORD 'os-pw'; \
                 EXCEPTION WHEN duplicate_object THEN NULL; END $$"
            ))
            .unwrap();
        users = format!("[[users]]\nname = \"{os}\"\npassword = \"os-pw\"\n");
        // Reads may go to a replica: wait until the role is there too.
        c.wait_replicas_caught_up(STEP).unwrap();
    }
    let sock = tempfile::Builder::new()
        .prefix("sy-hba-")
        .tempdir_in("/tmp")
        .unwrap();
    let rules = sock.path().join("hba.conf");
    write_rules(&rules, &os);
    let idents = sock.path().join("ident.conf");
    std::fs::write(&idents, "").unwrap();
    let proxy = Proxy::start_with(
        c,
        ProxyOptions {
            extra_top: format!(
                "unix_socket_dir = \"{}\"\nhba_file = \"{}\"\nident_file = \"{}\"\n",
                sock.path().display(),
                rules.display(),
                idents.display()
            ),
            extra_tables: users,
            ..Default::default()
        },
    );
    let port = proxy.port();
    let dir = sock.path().to_str().unwrap().to_owned();
    let socket = sock.path().join(format!(".s.PGSQL.{port}"));
    assert!(wait_until(STEP, || socket.exists()));

    // On the socket: peer for the test's own user (no password needed), a peer line that
    // does not fit for app, trust for the rest (a wrong password does not matter).
    login(&dir, port, &os, "not-checked", APP_DB).await.unwrap();
    if os != APP_USER {
        let e = login(&dir, port, APP_USER, APP_PASSWORD, APP_DB)
            .await
            .unwrap_err();
        assert_eq!(
            e,
            format!("28000 Peer authentication failed for user \"{APP_USER}\"")
        );
    }
    login(&dir, port, OTHER_USER, "wrong", APP_DB)
        .await
        .unwrap();

    // Over TCP: each line's method, seen in the first request and in a real login.
    assert_eq!(first_auth_request(&proxy, PLAIN_USER, APP_DB).await, Ok(3));
    login("127.0.0.1", port, PLAIN_USER, PLAIN_PASSWORD, APP_DB)
        .await
        .unwrap();
    let e = login("127.0.0.1", port, PLAIN_USER, "wrong", APP_DB)
        .await
        .unwrap_err();
    assert_eq!(
        e,
        format!("28P01 password authentication failed for user \"{PLAIN_USER}\"")
    );
    assert_eq!(first_auth_request(&proxy, MD5_USER, APP_DB).await, Ok(5));
    login("127.0.0.1", port, MD5_USER, MD5_PASSWORD, APP_DB)
        .await
        .unwrap();
    // A user configured without a password (auth = "trust") on an md5 line: the md5 of an
    // empty password does not let it in (PostgreSQL never stores an empty one).
    let r = raw::login(
        &proxy.addr(),
        raw::PROTO_3_0,
        &[("user", TRUST_USER), ("database", APP_DB)],
        Some(""),
    )
    .await;
    let r = raw::refused(r, "md5 with an empty password");
    assert_eq!(r.auth, vec![5]);
    assert_eq!(r.error.code(), "28P01", "{}", r.error.message());
    // An empty password in clear text gets PostgreSQL's own refusal.
    let r = raw::login(
        &proxy.addr(),
        raw::PROTO_3_0,
        &[("user", PLAIN_USER), ("database", APP_DB)],
        Some(""),
    )
    .await;
    let r = raw::refused(r, "an empty clear-text password");
    assert_eq!(
        (r.error.code(), r.error.message()),
        ("28P01".into(), "empty password returned by client".into())
    );
    // md5 answers are read as PostgreSQL reads a password packet: an empty one is refused as
    // such, one not ending with its NUL (the right hash, even) or holding another is malformed.
    let salted = |salt: &[u8]| {
        postgres_protocol::authentication::md5_hash(
            MD5_USER.as_bytes(),
            MD5_PASSWORD.as_bytes(),
            salt.try_into().unwrap(),
        )
    };
    for (what, body, code, message) in [
        (
            "empty",
            Some(b"\0".to_vec()),
            "28P01",
            "empty password returned by client",
        ),
        (
            "without its NUL",
            None,
            "08P01",
            "invalid password packet size",
        ),
        (
            "two NULs",
            Some(b"md5\0\0".to_vec()),
            "08P01",
            "invalid password packet size",
        ),
    ] {
        let mut raw = raw::Raw::connect(&proxy.addr()).await;
        raw.send(&raw::startup_packet(
            raw::PROTO_3_0,
            &[("user", MD5_USER), ("database", APP_DB)],
        ))
        .await
        .unwrap();
        let f = raw.frame().await;
        assert_eq!((f.tag, &f.body[..4]), (b'R', &[0, 0, 0, 5][..]), "{what}");
        let body = body.unwrap_or_else(|| salted(&f.body[4..8]).into_bytes());
        let mut msg = vec![b'p'];
        msg.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        msg.extend_from_slice(&body);
        raw.send(&msg).await.unwrap();
        let e = raw.frame().await;
        assert_eq!(
            (e.code(), e.message()),
            (code.into(), message.into()),
            "{what}"
        );
    }
    assert_eq!(first_auth_request(&proxy, APP_USER, APP_DB).await, Ok(10));
    login("127.0.0.1", port, APP_USER, APP_PASSWORD, APP_DB)
        .await
        .unwrap();
    // `reject`, and no line for the database.
    let rejected = format!(
        "28000 pg_hba.conf rejects connection for host \"127.0.0.1\", user \"{OTHER_USER}\", database \"{APP_DB}\", no encryption"
    );
    assert_eq!(
        login("127.0.0.1", port, OTHER_USER, OTHER_PASSWORD, APP_DB).await,
        Err(rejected.clone())
    );
    assert_eq!(
        first_auth_request(&proxy, OTHER_USER, APP_DB).await,
        Err(rejected)
    );
    assert_eq!(
        login("127.0.0.1", port, APP_USER, APP_PASSWORD, "postgres").await,
        Err(format!(
            "28000 no pg_hba.conf entry for host \"127.0.0.1\", user \"{APP_USER}\", database \"postgres\", no encryption"
        ))
    );
    let refused = proxy
        .metric("switchyard_client_rejected_total{reason=\"hba\"}")
        .await;
    assert!(refused >= 3.0, "hba refusals counted: {refused}");

    // A reload reads the file again: `other` gets in.
    std::fs::write(
        &rules,
        format!("host all {OTHER_USER},{APP_USER} 127.0.0.1/32 scram-sha-256\n"),
    )
    .unwrap();
    proxy.reload_ok().await;
    login("127.0.0.1", port, OTHER_USER, OTHER_PASSWORD, APP_DB)
        .await
        .unwrap();
    login("127.0.0.1", port, APP_USER, APP_PASSWORD, "postgres")
        .await
        .unwrap();
    // No line for the socket any more.
    let e = login(&dir, port, OTHER_USER, OTHER_PASSWORD, APP_DB)
        .await
        .unwrap_err();
    assert_eq!(
        e,
        format!(
            "28000 no pg_hba.conf entry for host \"[local]\", user \"{OTHER_USER}\", database \"{APP_DB}\", no encryption"
        )
    );

    // A file that does not parse is rejected; the rules before stay.
    std::fs::write(&rules, "host all all 10.0.0.0/33 trust\n").unwrap();
    let errors = "switchyard_reloads_total{result=\"error\"}";
    let before = proxy.metric(errors).await;
    proxy.reload();
    proxy.wait_metric(errors, before + 1.0, STEP).await;
    assert!(
        proxy
            .log()
            .contains(&format!("{}:1: invalid CIDR mask", rules.display())),
        "{}",
        proxy.log_tail(10)
    );
    login("127.0.0.1", port, OTHER_USER, OTHER_PASSWORD, APP_DB)
        .await
        .unwrap();

    // `peer` with `map=`: the map pairs the socket's user with users, by name or by a
    // regular expression whose group is the user; without a pair, refused.
    std::fs::write(&rules, "local all all peer map=locals\n").unwrap();
    std::fs::write(
        &idents,
        format!("locals \"{os}\" {OTHER_USER}\nlocals /^({os})$ \\1\n"),
    )
    .unwrap();
    proxy.reload_ok().await;
    login(&dir, port, OTHER_USER, "not-checked", APP_DB)
        .await
        .unwrap();
    login(&dir, port, &os, "not-checked", APP_DB).await.unwrap();
    assert_eq!(
        login(&dir, port, PLAIN_USER, PLAIN_PASSWORD, APP_DB).await,
        Err(format!(
            "28000 Peer authentication failed for user \"{PLAIN_USER}\""
        ))
    );
    // With a map, only the map decides: the socket's own user name is not enough.
    std::fs::write(&idents, format!("locals \"{os}\" {OTHER_USER}\n")).unwrap();
    proxy.reload_ok().await;
    assert_eq!(
        login(&dir, port, &os, "not-checked", APP_DB).await,
        Err(format!(
            "28000 Peer authentication failed for user \"{os}\""
        ))
    );
}

/// `+role` users and `samerole` databases are decided by role membership read from the
/// primary's catalog at each login (a `REVOKE` counts from the next one); `samehost` and
/// `samenet` by this host's addresses (127.0.0.1 is one, in 127.0.0.0/8); `@file` lists are
/// read again on reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_membership_and_this_hosts_addresses_decide_lines() {
    let c = shared_cluster();
    // staff <- dba <- other: `other` is a member of staff through dba.
    c.primary()
        .psql(&format!(
            "DO $$ BEGIN CREATE ROLE hba_staff NOLOGIN; CREATE ROLE hba_dba NOLOGIN; \
             EXCEPTION WHEN duplicate_object THEN NULL; END $$; \
             GRANT hba_staff TO hba_dba; GRANT hba_dba TO {OTHER_USER}; \
             GRANT CONNECT ON DATABASE postgres TO hba_staff"
        ))
        .unwrap();
    if c.primary()
        .psql("SELECT 1 FROM pg_database WHERE datname = 'hba_staff'")
        .unwrap()
        .trim()
        .is_empty()
    {
        c.primary().psql("CREATE DATABASE hba_staff").unwrap();
    }
    c.wait_replicas_caught_up(STEP).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("hba.conf");
    let extra = dir.path().join("extra_users");
    std::fs::write(&extra, "# nobody yet\n").unwrap();
    std::fs::write(
        &rules,
        "host samerole all       127.0.0.1/32 password\n\
         host all      +hba_staff,@extra_users samehost scram-sha-256\n\
         host all      all       samenet      md5\n\
         host all      all       all          reject\n",
    )
    .unwrap();
    let proxy = Proxy::start_with(
        c,
        ProxyOptions {
            extra_top: format!("hba_file = \"{}\"\n", rules.display()),
            ..Default::default()
        },
    );
    let port = proxy.port();

    // A member of hba_staff (through hba_dba) connecting to the database named like it:
    // samerole. To another database: +hba_staff.
    assert_eq!(
        first_auth_request(&proxy, OTHER_USER, "hba_staff").await,
        Ok(3)
    );
    login("127.0.0.1", port, OTHER_USER, OTHER_PASSWORD, "hba_staff")
        .await
        .unwrap();
    assert_eq!(first_auth_request(&proxy, OTHER_USER, APP_DB).await, Ok(10));
    login("127.0.0.1", port, OTHER_USER, OTHER_PASSWORD, APP_DB)
        .await
        .unwrap();
    // Every role is a member of itself: app to the database app is samerole too.
    assert_eq!(first_auth_request(&proxy, APP_USER, APP_DB).await, Ok(3));
    // Not a member of either: samenet. A superuser is not a member of every role here.
    assert_eq!(first_auth_request(&proxy, MD5_USER, APP_DB).await, Ok(5));
    assert_eq!(
        first_auth_request(&proxy, SUPERUSER, "hba_staff").await,
        Ok(5)
    );
    login("127.0.0.1", port, MD5_USER, MD5_PASSWORD, APP_DB)
        .await
        .unwrap();
    assert_eq!(first_auth_request(&proxy, PLAIN_USER, APP_DB).await, Ok(5));
    let found = "switchyard_hba_role_lookups_total{result=\"found\"}";
    assert!(proxy.metric(found).await >= 6.0);

    // Membership is read at each login: revoked, `other` is no longer staff.
    c.primary()
        .psql(&format!("REVOKE hba_dba FROM {OTHER_USER}"))
        .unwrap();
    assert_eq!(
        first_auth_request(&proxy, OTHER_USER, "hba_staff").await,
        Ok(5)
    );
    assert_eq!(first_auth_request(&proxy, OTHER_USER, APP_DB).await, Ok(5));

    // The @file is read again on reload.
    std::fs::write(&extra, format!("{PLAIN_USER}\n")).unwrap();
    proxy.reload_ok().await;
    assert_eq!(first_auth_request(&proxy, PLAIN_USER, APP_DB).await, Ok(10));
    login("127.0.0.1", port, PLAIN_USER, PLAIN_PASSWORD, APP_DB)
        .await
        .unwrap();
    let errors = "switchyard_hba_role_lookups_total{result=\"error\"}";
    assert_eq!(proxy.metric(errors).await, 0.0);

    // A lookup that fails (the monitor's user may no longer read the catalog) refuses the
    // login with 57P03 and is counted; once it can read again, logins go on.
    c.primary()
        .psql("REVOKE SELECT ON pg_catalog.pg_auth_members FROM PUBLIC")
        .unwrap();
    let e = first_auth_request(&proxy, MD5_USER, APP_DB).await;
    c.primary()
        .psql("GRANT SELECT ON pg_catalog.pg_auth_members TO PUBLIC")
        .unwrap();
    assert_eq!(
        e,
        Err(format!(
            "57P03 could not read the role membership of \"{MD5_USER}\""
        ))
    );
    assert_eq!(proxy.metric(errors).await, 1.0);
    assert!(
        proxy.log().contains("permission denied"),
        "{}",
        proxy.log_tail(10)
    );
    assert_eq!(first_auth_request(&proxy, MD5_USER, APP_DB).await, Ok(5));
}

/// A line with a host name matches a client whose address resolves to that name and back
/// (127.0.0.1 is `localhost` in /etc/hosts), case-insensitively; `.suffix` matches names
/// ending so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_name_lines_match_the_clients_verified_name() {
    let c = shared_cluster();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("hba.conf");
    std::fs::write(
        &rules,
        format!(
            "host all {OTHER_USER} db.invalid trust\n\
             host all {OTHER_USER} LOCALHOST password\n\
             host all {MD5_USER}   .invalid trust\n\
             host all {MD5_USER}   .localhost trust\n\
             host all all all reject\n"
        ),
    )
    .unwrap();
    let proxy = Proxy::start_with(
        c,
        ProxyOptions {
            extra_top: format!("hba_file = \"{}\"\n", rules.display()),
            ..Default::default()
        },
    );
    assert_eq!(first_auth_request(&proxy, OTHER_USER, APP_DB).await, Ok(3));
    login(
        "127.0.0.1",
        proxy.port(),
        OTHER_USER,
        OTHER_PASSWORD,
        APP_DB,
    )
    .await
    .unwrap();
    // `.localhost` is a suffix: it does not match `localhost` itself. The name matched no
    // line, so it was not looked up forward; the log says what the lookup gave.
    assert_eq!(
        first_auth_request(&proxy, MD5_USER, APP_DB).await,
        Err(format!(
            "28000 pg_hba.conf rejects connection for host \"127.0.0.1\", user \"{MD5_USER}\", database \"{APP_DB}\", no encryption"
        ))
    );
    assert!(
        wait_until(STEP, || proxy
            .log()
            .contains("Some(Reversed(\"localhost\"))")),
        "{}",
        proxy.log_tail(10)
    );
}

/// PostgreSQL 16's forms: `include_dir`, `include` and `include_if_exists` records in both
/// files, regular expressions in the database and user fields, and `+role`, `all` and
/// regular expressions as an `ident_file` map's database user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn includes_and_regular_expressions_as_in_postgresql_16() {
    let c = shared_cluster();
    let os = os_user();
    c.primary()
        .psql(&format!(
            "DO $$ BEGIN CREATE ROLE hba16_ops NOLOGIN; \
             EXCEPTION WHEN duplicate_object THEN NULL; END $$; \
             GRANT hba16_ops TO {OTHER_USER}"
        ))
        .unwrap();
    let sock = tempfile::Builder::new()
        .prefix("sy-hba16-")
        .tempdir_in("/tmp")
        .unwrap();
    let p = sock.path();
    std::fs::create_dir(p.join("hba.d")).unwrap();
    std::fs::create_dir(p.join("ident.d")).unwrap();
    let rules = p.join("hba.conf");
    std::fs::write(
        &rules,
        "include_if_exists not-there.conf\ninclude_dir hba.d\nhost all all all reject\n",
    )
    .unwrap();
    std::fs::write(
        p.join("hba.d/10-local.conf"),
        "local all all peer map=locals\n",
    )
    .unwrap();
    // `/^ap` matches the database app; the quoted expression the user other only.
    std::fs::write(
        p.join("hba.d/20-tcp.conf"),
        format!(
            "host /^ap   {MD5_USER}      127.0.0.1/32 md5\n\
             host all    \"/^{OTHER_USER}$\" 127.0.0.1/32 password\n"
        ),
    )
    .unwrap();
    // Left out of include_dir: not named *.conf.
    std::fs::write(p.join("hba.d/30-off.conf.bak"), "host all all all trust\n").unwrap();
    let idents = p.join("ident.conf");
    std::fs::write(&idents, "include ident.d/maps\n").unwrap();
    std::fs::write(
        p.join("ident.d/maps"),
        format!("locals \"{os}\" +hba16_ops\nlocals \"{os}\" /^{MD5_USER}$\n"),
    )
    .unwrap();
    let proxy = Proxy::start_with(
        c,
        ProxyOptions {
            extra_top: format!(
                "unix_socket_dir = \"{}\"\nhba_file = \"{}\"\nident_file = \"{}\"\n",
                p.display(),
                rules.display(),
                idents.display()
            ),
            ..Default::default()
        },
    );
    let port = proxy.port();
    let dir = p.to_str().unwrap().to_owned();
    assert!(wait_until(STEP, || p
        .join(format!(".s.PGSQL.{port}"))
        .exists()));

    // Over TCP, the included lines in file-name order, then the configured file's reject.
    assert_eq!(first_auth_request(&proxy, MD5_USER, APP_DB).await, Ok(5));
    let rejected = |user: &str, db: &str| {
        Err(format!(
            "28000 pg_hba.conf rejects connection for host \"127.0.0.1\", user \"{user}\", database \"{db}\", no encryption"
        ))
    };
    assert_eq!(
        first_auth_request(&proxy, MD5_USER, "postgres").await,
        rejected(MD5_USER, "postgres")
    );
    assert_eq!(first_auth_request(&proxy, OTHER_USER, APP_DB).await, Ok(3));
    login("127.0.0.1", port, OTHER_USER, OTHER_PASSWORD, APP_DB)
        .await
        .unwrap();
    assert_eq!(
        first_auth_request(&proxy, PLAIN_USER, APP_DB).await,
        rejected(PLAIN_USER, APP_DB)
    );

    // On the socket, `peer` with the included map: a member of hba16_ops, and the user the
    // expression names, may log in as the socket's user; others may not.
    login(&dir, port, OTHER_USER, "not-checked", APP_DB)
        .await
        .unwrap();
    login(&dir, port, MD5_USER, "not-checked", APP_DB)
        .await
        .unwrap();
    assert_eq!(
        login(&dir, port, PLAIN_USER, "not-checked", APP_DB).await,
        Err(format!(
            "28000 Peer authentication failed for user \"{PLAIN_USER}\""
        ))
    );
    // Membership is read at each login that reaches the `+role` line.
    c.primary()
        .psql(&format!("REVOKE hba16_ops FROM {OTHER_USER}"))
        .unwrap();
    assert_eq!(
        login(&dir, port, OTHER_USER, "not-checked", APP_DB).await,
        Err(format!(
            "28000 Peer authentication failed for user \"{OTHER_USER}\""
        ))
    );
    // `all` lets the socket's user in as anybody; an error in an included file is reported
    // at the record that includes it, and the old rules stay.
    std::fs::write(p.join("ident.d/maps"), format!("locals \"{os}\" all\n")).unwrap();
    proxy.reload_ok().await;
    login(&dir, port, PLAIN_USER, "not-checked", APP_DB)
        .await
        .unwrap();
    std::fs::write(p.join("hba.d/20-tcp.conf"), "host all all all ldap\n").unwrap();
    let errors = "switchyard_reloads_total{result=\"error\"}";
    let before = proxy.metric(errors).await;
    proxy.reload();
    proxy.wait_metric(errors, before + 1.0, STEP).await;
    assert!(
        proxy.log().contains(&format!(
            "{}:2: {}:1: authentication method \"ldap\" is not supported",
            rules.display(),
            p.join("hba.d/20-tcp.conf").display()
        )),
        "{}",
        proxy.log_tail(10)
    );
    assert_eq!(first_auth_request(&proxy, MD5_USER, APP_DB).await, Ok(5));
}
