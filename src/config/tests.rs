use super::*;

const MINIMAL: &str = r#"
listen = "127.0.0.1:6432"
http_listen = "127.0.0.1:9930"
pool_mode = "transaction"   # or "session"

[[backends]]
name = "pg1"
address = "127.0.0.1:5432"

[[backends]]
name = "pg2"
address = "127.0.0.1:5433"

[[users]]
name = "app"
password = "app"
"#;

fn err(text: &str) -> String {
    parse(text, "t.toml").unwrap_err().to_string()
}

#[test]
fn minimal_file_from_the_issue_loads_with_defaults() {
    let l = parse(MINIMAL, "t.toml").unwrap();
    assert_eq!(l.listen.port(), 6432);
    assert_eq!(l.config.pool.size, 20);
    assert!(l.config.pool.affinity);
    assert_eq!(l.config.pool_mode, PoolMode::Transaction);
    assert_eq!(l.config.health.fall, 3);
    assert_eq!(
        l.config.routing.ryw_wait,
        std::time::Duration::from_millis(20)
    );
    let app = &l.users["app"];
    assert_eq!(app.config.auth, AuthMethod::ScramSha256);
    assert!(app.scram.is_some());
    assert_eq!(l.monitor_credentials(), ("app".into(), Some("app".into())));
}

#[test]
fn example_config_in_repo_is_valid() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/switchyard.toml"
    ))
    .unwrap();
    parse(&text, "switchyard.toml").unwrap();
}

#[test]
fn unknown_key_names_key_and_line() {
    let e = err(&format!("{MINIMAL}\n[pool]\nsizee = 3\n"));
    assert!(e.contains("sizee") && e.contains("line 19"), "{e}");
}

#[test]
fn bad_duration_is_reported() {
    let e = err(&format!("{MINIMAL}\n[pool]\ncheckout_timeout = \"soon\"\n"));
    assert!(
        e.contains("checkout_timeout") || e.contains("invalid duration"),
        "{e}"
    );
    assert!(e.contains("line 19"), "{e}");
}

#[test]
fn duplicate_backend_names_and_bad_addresses() {
    let dup = MINIMAL.replace("name = \"pg2\"", "name = \"pg1\"");
    let e = err(&dup);
    assert!(
        e.contains("t.toml:11") && e.contains("duplicate backend name"),
        "{e}"
    );
    let bad = MINIMAL.replace("127.0.0.1:5433", "127.0.0.1:99999");
    let e = err(&bad);
    assert!(e.contains("t.toml:12") && e.contains("invalid port"), "{e}");
    let e = err(&MINIMAL.replace("listen = \"127.0.0.1:6432\"", "listen = \"nowhere\""));
    assert!(e.contains("t.toml:2: listen"), "{e}");
}

#[test]
fn users_are_checked() {
    let e = err(&format!(
        "{MINIMAL}\n[[users]]\nname = \"app\"\npassword = \"x\"\n"
    ));
    assert!(e.contains("duplicate user"), "{e}");
    let e = err(&format!("{MINIMAL}\n[[users]]\nname = \"b\"\n"));
    assert!(e.contains("needs a password"), "{e}");
    let ok = parse(
        &format!("{MINIMAL}\n[[users]]\nname = \"b\"\nauth = \"trust\"\n"),
        "t",
    )
    .unwrap();
    assert!(ok.users["b"].scram.is_none());
    // An empty password is none: a SCRAM or md5 user with one is refused (a verifier for ''
    // would let anyone in who sends an empty password), a trusted one is not.
    for auth in ["", "auth = \"md5\"\n", "auth = \"scram-sha-256\"\n"] {
        let text = format!("{MINIMAL}\n[[users]]\nname = \"b\"\n{auth}password = \"\"\n");
        let e = err(&text);
        assert!(
            e.contains(&format!("t.toml:{}", line_of(&text, "password = \"\"")))
                && e.contains("users.password")
                && e.contains("an empty password is no password"),
            "{auth}: {e}"
        );
    }
    let ok = parse(
        &format!("{MINIMAL}\n[[users]]\nname = \"b\"\nauth = \"trust\"\npassword = \"\"\n"),
        "t",
    )
    .unwrap();
    assert!(ok.users["b"].scram.is_none());
    let e = err(&format!(
        "{MINIMAL}\n[[users]]\nname = \"b\"\nauth = \"kerberos\"\npassword = \"x\"\n"
    ));
    assert!(e.contains("kerberos"), "{e}");
}

#[test]
fn pool_bounds() {
    let e = err(&format!("{MINIMAL}\n[pool]\nsize = 2\nmin_size = 3\n"));
    assert!(e.contains("pool.min_size"), "{e}");
    let e = err(&format!("{MINIMAL}\n[pool]\nsize = 0\n"));
    assert!(e.contains("pool.size"), "{e}");
    for n in ["0", "4611686018427387904"] {
        let e = err(&format!("max_client_connections = {n}\n{MINIMAL}"));
        assert!(e.contains("max_client_connections"), "{n}: {e}");
    }
}

/// Values that load but could not work: more threads than a process should start, no reset
/// between clients, a keepalive Linux refuses, port 0 on a server's or peer's address, role
/// names PostgreSQL never keeps whole.
#[test]
fn values_that_cannot_work_are_refused() {
    for (text, key) in [
        (format!("workers = 1025\n{MINIMAL}"), "workers"),
        (
            format!("workers = 9223372036854775807\n{MINIMAL}"),
            "workers",
        ),
        (
            format!("{MINIMAL}\n[pool]\nreset_query = \"  \"\n"),
            "pool.reset_query",
        ),
        (
            format!("{MINIMAL}\n[pool]\nreset_query = \"\"\n"),
            "pool.reset_query",
        ),
        (
            format!("{MINIMAL}\n[pool]\ntcp_keepalive = \"10h\"\n"),
            "pool.tcp_keepalive",
        ),
        (MINIMAL.replace("127.0.0.1:5433", "127.0.0.1:0"), "backends"),
        (MINIMAL.replace("127.0.0.1:5433", "[::1]:0"), "backends"),
        (
            format!(
                "{MINIMAL}\n[peering]\nlisten = \"127.0.0.1:7000\"\npeers = [\"127.0.0.1:0\"]\n"
            ),
            "peering.peers",
        ),
        (
            format!(
                "{MINIMAL}\n[[users]]\nname = \"{}\"\npassword = \"x\"\n",
                "v".repeat(64)
            ),
            "users.name",
        ),
        (
            format!(
                "{MINIMAL}\n[health]\nuser = \"{}\"\npassword = \"x\"\n",
                "v".repeat(64)
            ),
            "health.user",
        ),
    ] {
        let e = err(&text);
        assert!(e.contains(key), "{key}: {e}");
    }
    for ok in [
        format!("workers = 1024\n{MINIMAL}"),
        format!("{MINIMAL}\n[pool]\ntcp_keepalive = \"9h\"\n"),
        format!(
            "{MINIMAL}\n[[users]]\nname = \"{}\"\npassword = \"x\"\n",
            "v".repeat(63)
        ),
    ] {
        parse(&ok, "t").unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
}

/// The line `needle` first appears on.
fn line_of(text: &str, needle: &str) -> usize {
    1 + text[..text.find(needle).expect("needle")]
        .matches('\n')
        .count()
}

#[test]
fn checks_without_a_span_name_the_key_and_its_line() {
    for (text, needle, key) in [
        (
            format!("{MINIMAL}\n[pool]\n# comment\nsize = 0\n"),
            "size = 0",
            "pool.size",
        ),
        (
            format!("{MINIMAL}\n[pool]\nsize = 2\nmin_size = 3\n"),
            "min_size",
            "pool.min_size",
        ),
        (
            format!("{MINIMAL}\n[pool]\nconnect_timeout = \"0s\"\n"),
            "connect_timeout",
            "pool.connect_timeout",
        ),
        (
            format!("{MINIMAL}\n[pool]\ncheckout_timeout = \"0ms\"\n"),
            "checkout_timeout",
            "pool.checkout_timeout",
        ),
        (
            format!("startup_timeout = \"0ms\"\n{MINIMAL}"),
            "startup_timeout",
            "startup_timeout",
        ),
        (
            format!("{MINIMAL}\n[health]\nfall = 2\nrise = 0\n"),
            "rise",
            "health.rise",
        ),
        (
            format!("{MINIMAL}\n[health]\ninterval = \"1s\"\ntimeout = \"0s\"\n"),
            "timeout",
            "health.timeout",
        ),
        (
            format!("{MINIMAL}\n[[users]]\nname = \"b\"\npassword = \"b\"\npool_size = 0\n"),
            "pool_size",
            "users.pool_size",
        ),
        (
            format!("max_message_size = 10\n{MINIMAL}"),
            "max_message_size",
            "max_message_size",
        ),
        (
            format!("{MINIMAL}\n[health]\nuser = \"\"\npassword = \"x\"\n"),
            "user = \"\"",
            "health.user",
        ),
        (
            format!("{MINIMAL}\n[health]\ndatabase = \"\"\n"),
            "database",
            "health.database",
        ),
        // Inline tables, dotted keys and inline arrays of tables, as the TOML parser reads them.
        (
            format!("pool = {{ idle_timeout = \"1m\", size = 0 }}\n{MINIMAL}"),
            "size = 0",
            "pool.size",
        ),
        (
            format!("pool.size = 0\n{MINIMAL}"),
            "pool.size",
            "pool.size",
        ),
        (
            format!("users = [\n  {{ name = \"a\", password = \"a\" }},\n  {{ name = \"b\", password = \"b\", pool_size = 0 }},\n]\n{}", MINIMAL.replace("[[users]]\nname = \"app\"\npassword = \"app\"\n", "")),
            "pool_size",
            "users.pool_size",
        ),
        (
            format!("{MINIMAL}\n[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\nclient_cert = \"verify-ca\"\n"),
            "client_cert",
            "tls.client_cert",
        ),
    ] {
        let e = err(&text);
        let line = line_of(&text, needle);
        assert!(
            e.starts_with(&format!("t.toml:{line}: {key}:")),
            "{key}: expected line {line}: {e}"
        );
    }
}

/// A duration too long to add to the clock (it would panic where it is used) is refused where
/// it is written.
#[test]
fn durations_past_a_century_are_refused() {
    for text in [
        format!("{MINIMAL}\n[health]\ntimeout = \"400000000000y\"\n"),
        format!("shutdown_timeout = \"500y\"\n{MINIMAL}"),
        format!("{MINIMAL}\n[routing]\nprimary_wait = \"300000000000y\"\n"),
    ] {
        let e = err(&text);
        let line = line_of(&text, "y\"");
        assert!(
            e.contains(&format!("line {line}")) && e.contains("too long"),
            "{text}: {e}"
        );
    }
}

#[test]
fn http_listen_needs_a_port_of_its_own() {
    for http in ["127.0.0.1:6432", "0.0.0.0:6432"] {
        let text = MINIMAL.replace("127.0.0.1:9930", http);
        let e = err(&text);
        assert!(
            e.starts_with(&format!(
                "t.toml:{}: http_listen:",
                line_of(&text, "http_listen")
            )),
            "{http}: {e}"
        );
    }
    for (listen, http) in [
        ("127.0.0.1:6432", "127.0.0.2:6432"),
        ("127.0.0.1:0", "127.0.0.1:0"),
        ("0.0.0.0:6432", "[::1]:6432"),
    ] {
        let text = MINIMAL
            .replace("127.0.0.1:9930", http)
            .replace("127.0.0.1:6432", listen);
        parse(&text, "t.toml").unwrap_or_else(|e| panic!("{listen} and {http}: {e}"));
    }
    let text = MINIMAL
        .replace("127.0.0.1:9930", "0.0.0.0:6432")
        .replace("127.0.0.1:6432", "[::]:6432");
    assert!(err(&text).contains("http_listen"), "[::] takes IPv4 too");
}

#[test]
fn a_verifier_is_never_sent_to_the_servers_as_a_password() {
    let md5 = "md50123456789abcdef0123456789abcdef";
    let scram = "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$\
                 WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:\
                 wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";
    let with = |password: &str, auth: &str| {
        MINIMAL.replace(
            "password = \"app\"",
            &format!("password = \"{password}\"\nauth = \"{auth}\""),
        )
    };
    let l = parse(&with(md5, "md5"), "t.toml").unwrap();
    assert!(
        matches!(&l.users["app"].server, ServerCredential::Md5(h) if h == &md5[3..]),
        "an md5 hash answers md5 requests: {:?}",
        l.users["app"].server
    );
    assert_eq!(l.monitor_credentials().1, None);
    let l = parse(&with(scram, "scram-sha-256"), "t.toml").unwrap();
    assert!(
        matches!(l.users["app"].server, ServerCredential::None),
        "{:?}",
        l.users["app"].server
    );
    assert_eq!(l.monitor_credentials().1, None);
    let text = with(scram, "scram-sha-256").replace(
        "auth = \"scram-sha-256\"",
        "auth = \"scram-sha-256\"\nserver_password = \"s\"",
    );
    let l = parse(&text, "t.toml").unwrap();
    assert!(matches!(&l.users["app"].server, ServerCredential::Password(p) if p == "s"));
    assert_eq!(l.monitor_credentials().1.as_deref(), Some("s"));
}

#[test]
fn lag_limit_accepts_time_or_bytes() {
    let l = parse(
        &format!("{MINIMAL}\n[routing]\nmax_replica_lag = \"16MB\"\n"),
        "t",
    )
    .unwrap();
    assert_eq!(l.config.routing.max_replica_lag, LagLimit::Bytes(16 << 20));
    let l = parse(
        &format!("{MINIMAL}\n[routing]\nmax_replica_lag = \"2s\"\n"),
        "t",
    )
    .unwrap();
    assert_eq!(
        l.config.routing.max_replica_lag,
        LagLimit::Time(std::time::Duration::from_secs(2))
    );
}

#[test]
fn diff_lists_changes() {
    let a = parse(MINIMAL, "t").unwrap();
    let b = parse(
        &format!("{MINIMAL}\n[[users]]\nname = \"b\"\nauth = \"trust\"\n[pool]\nsize = 5\n"),
        "t",
    )
    .unwrap();
    let d = a.diff(&b);
    assert!(d.contains(&"user b added".to_string()), "{d:?}");
    assert!(d.contains(&"[pool] changed".to_string()), "{d:?}");
    assert!(a.diff(&parse(MINIMAL, "t").unwrap()).is_empty());
    // Top-level limits a reload applies are named too (a reload of only those is no
    // "0 changes").
    let c = parse(
        &format!("max_client_connections = 7\nshutdown_timeout = \"9s\"\n{MINIMAL}"),
        "t",
    )
    .unwrap();
    assert_eq!(
        a.diff(&c),
        [
            "max_client_connections changed (new logins and the peering port's limit)",
            "shutdown_timeout changed (the next drain or PAUSE)",
        ]
    );
}

#[test]
fn so_reuseport_is_off_unless_set_and_needs_a_restart() {
    let off = parse(MINIMAL, "t").unwrap();
    assert!(!off.config.so_reuseport);
    let on = parse(&format!("so_reuseport = true\n{MINIMAL}"), "t").unwrap();
    assert!(on.config.so_reuseport);
    assert!(on.describe().contains("so_reuseport"), "{}", on.describe());
    let d = off.diff(&on);
    assert!(
        d.iter()
            .any(|l| l.contains("so_reuseport") && l.contains("restart")),
        "{d:?}"
    );
    let e = err(&format!("so_reuseport = \"yes\"\n{MINIMAL}"));
    assert!(e.contains("so_reuseport") && e.contains("line 1,"), "{e}");
}

#[test]
fn peering_takes_its_own_port_and_the_peers_addresses() {
    let peering = "[peering]\nlisten = \"127.0.0.1:7001\"\npeers = [\"127.0.0.1:7001\", \"10.0.0.2:7001\", \"pg-proxy-3:7001\"]\n";
    let off = parse(MINIMAL, "t").unwrap();
    assert!(off.peer_listen.is_none());
    assert!(!off.describe().contains("peering"));
    let on = parse(&format!("{MINIMAL}\n{peering}"), "t").unwrap();
    assert_eq!(on.peer_listen, Some("127.0.0.1:7001".parse().unwrap()));
    assert!(
        on.describe().contains(
            "peering 127.0.0.1:7001: cancel requests this process did not issue go to 2 peer(s)"
        ),
        "its own address is not a peer: {}",
        on.describe()
    );
    let d = off.diff(&on);
    assert!(
        d.iter()
            .any(|l| l.contains("peering.listen") && l.contains("restart")),
        "{d:?}"
    );
    let fewer = parse(
        &format!("{MINIMAL}\n[peering]\nlisten = \"127.0.0.1:7001\"\n"),
        "t",
    )
    .unwrap();
    assert_eq!(
        on.diff(&fewer),
        vec!["peering.peers changed (next cancel request)".to_string()]
    );

    let e = err(&format!(
        "{MINIMAL}\n[peering]\nlisten = \"localhost:7001\"\n"
    ));
    assert!(
        e.contains("peering.listen") && e.contains("not an IP:port") && e.contains(":19:"),
        "{e}"
    );
    let e = err(&format!(
        "{MINIMAL}\n[peering]\nlisten = \"127.0.0.1:6432\"\n"
    ));
    assert!(
        e.contains("peering.listen") && e.contains("port of their own"),
        "{e}"
    );
    let e = err(&format!(
        "{MINIMAL}\n[peering]\nlisten = \"127.0.0.1:7001\"\npeers = [\n  \"10.0.0.2:7001\",\n  \"10.0.0.3\",\n]\n"
    ));
    assert!(
        e.contains("peering.peers") && e.contains("10.0.0.3") && e.contains(":22:"),
        "{e}"
    );
    let e = err(&format!(
        "{MINIMAL}\n[peering]\nlisten = \"0.0.0.0:9930\"\n"
    ));
    assert!(
        e.contains("port of `listen` or `http_listen`"),
        "a wildcard on http_listen's port: {e}"
    );
    let e = err(&format!("{MINIMAL}\n[peering]\nlisten = \"127.0.0.1:0\"\n"));
    assert!(
        e.contains("peering.listen") && e.contains("fixed port"),
        "{e}"
    );
    let e = err(&format!(
        "{MINIMAL}\n[peering]\nlisten = \"127.0.0.1:7001\"\npeers = [\"a:1\", \"b:1\", \"a:1\"]\n"
    ));
    assert!(
        e.contains("\"a:1\" is listed twice") && e.contains(":20:"),
        "{e}"
    );
    let e = err(&format!(
        "{MINIMAL}\n[peering]\nlisten = \"127.0.0.1:7001\"\npeers = [\"127.0.0.1:6432\"]\n"
    ));
    assert!(
        e.contains("peering.peers") && e.contains("is this process's `listen`"),
        "the clients' port as a peer: {e}"
    );
    let e = err(&format!("{MINIMAL}\n[peering]\npeers = []\n"));
    assert!(e.contains("listen"), "{e}");
    let e = err(&format!(
        "{MINIMAL}\n[peering]\nlisten = \"127.0.0.1:7001\"\npeer = []\n"
    ));
    assert!(e.contains("peer"), "unknown key: {e}");
}

#[test]
fn auth_query_names_a_configured_user_and_takes_the_role_as_a_parameter() {
    let l = parse(
        &format!("{MINIMAL}\n[auth_query]\nuser = \"app\"\n"),
        "t.toml",
    )
    .unwrap();
    let a = l.config.auth_query.as_ref().expect("auth_query");
    assert_eq!(a.database, "postgres");
    assert!(a.query.contains("pg_catalog.pg_authid") && a.query.contains("$1"));
    assert!(l
        .describe()
        .contains("other roles: password looked up as user app in database postgres"));
    assert!(parse(MINIMAL, "t.toml")
        .unwrap()
        .config
        .auth_query
        .is_none());

    let e = err(&format!("{MINIMAL}\n[auth_query]\nuser = \"nobody\"\n"));
    assert!(
        e.contains("t.toml:19: auth_query.user") && e.contains("\"nobody\""),
        "{e}"
    );
    let e = err(&format!(
        "{MINIMAL}\n[auth_query]\nuser = \"app\"\nquery = \"SELECT 'x'\"\n"
    ));
    assert!(
        e.contains("auth_query.query: must take the role name as $1"),
        "{e}"
    );
    let e = err(&format!(
        "{MINIMAL}\n[auth_query]\nuser = \"app\"\ndatabase = \"\"\n"
    ));
    assert!(e.contains("auth_query.database"), "{e}");
    let e = err(&format!(
        "{MINIMAL}\n[auth_query]\nuser = \"app\"\nauth_user = \"app\"\n"
    ));
    assert!(e.contains("auth_user"), "{e}");
    let e = err(&format!("{MINIMAL}\n[auth_query]\nquery = \"SELECT $1\"\n"));
    assert!(e.contains("user"), "{e}");

    // A reload that switches it on says so.
    let on = parse(
        &format!("{MINIMAL}\n[auth_query]\nuser = \"app\"\n"),
        "t.toml",
    )
    .unwrap();
    let off = parse(MINIMAL, "t.toml").unwrap();
    assert!(off.diff(&on).contains(&"[auth_query] changed".to_string()));
    assert!(on.diff(&on).is_empty());
}

#[test]
fn tls_files_are_read_and_checked_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = |f: &str| dir.path().join(f).display().to_string();
    let issue = |name: &str| {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(path(&format!("{name}.crt")), cert.pem()).unwrap();
        std::fs::write(path(&format!("{name}.key")), key.serialize_pem()).unwrap();
    };
    issue("one");
    issue("two");
    std::fs::write(path("empty.crt"), "not a certificate\n").unwrap();
    let tls = |cert: &str, key: &str, more: &str| {
        format!(
            "{MINIMAL}\n[tls]\ncert = {:?}\nkey = {:?}\n{more}",
            path(cert),
            path(key)
        )
    };

    let l = parse(&tls("one.crt", "one.key", ""), "t.toml").unwrap();
    let t = l.tls.as_ref().expect("client TLS loaded");
    assert_eq!(t.mode, ClientTlsMode::Allow);
    assert_eq!(l.server_tls.mode, ServerTlsMode::Prefer);
    assert!(
        l.describe().contains("client TLS Allow"),
        "{}",
        l.describe()
    );
    let plain = parse(MINIMAL, "t.toml").unwrap();
    assert!(plain.tls.is_none());
    assert!(plain
        .diff(&l)
        .iter()
        .any(|c| c.starts_with("[tls] changed")));
    let strict = parse(&tls("one.crt", "one.key", "mode = \"require\"\n"), "t.toml").unwrap();
    assert_eq!(strict.tls.as_ref().unwrap().mode, ClientTlsMode::Require);

    let e = err(&tls("missing.crt", "one.key", ""));
    assert!(
        e.contains("t.toml:19: tls.cert") && e.contains("missing.crt"),
        "{e}"
    );
    let e = err(&tls("empty.crt", "one.key", ""));
    assert!(
        e.contains("tls.cert") && e.contains("no PEM certificate"),
        "{e}"
    );
    let e = err(&tls("one.crt", "two.key", ""));
    assert!(
        e.contains("t.toml:20: tls.key") && e.contains("does not fit"),
        "{e}"
    );
    // An X.509 v1 certificate (`openssl x509 -req` without `-extfile`) with its own key:
    // refused as what it is, not as a key that does not fit.
    std::fs::write(path("v1.crt"), V1_CERT).unwrap();
    std::fs::write(path("v1.key"), V1_KEY).unwrap();
    let e = err(&tls("v1.crt", "v1.key", ""));
    assert!(
        e.contains("t.toml:19: tls.cert") && e.contains("is an X.509 v1 certificate"),
        "{e}"
    );
    assert!(!e.contains("does not fit"), "{e}");
    let e = err(&tls("one.crt", "missing.key", ""));
    assert!(e.contains("tls.key") && e.contains("missing.key"), "{e}");
    let e = err(&tls("one.crt", "one.key", "mode = \"sometimes\"\n"));
    assert!(e.contains("sometimes") && e.contains("mode"), "{e}");
    let e = err(&format!("{MINIMAL}\n[tls]\ncert = {:?}\n", path("one.crt")));
    assert!(e.contains("key"), "{e}");

    let e = err(&format!(
        "{MINIMAL}\n[server_tls]\nmode = \"verify-full\"\n"
    ));
    assert!(
        e.contains("server_tls.mode") && e.contains("needs `ca`"),
        "{e}"
    );
    let e = err(&format!(
        "{MINIMAL}\n[server_tls]\nmode = \"verify-ca\"\nca = {:?}\n",
        path("missing.crt")
    ));
    assert!(e.contains("t.toml:20: server_tls.ca"), "{e}");
    for mode in ["require", "prefer"] {
        let e = err(&format!(
            "{MINIMAL}\n[server_tls]\nmode = \"{mode}\"\nca = {:?}\n",
            path("one.crt")
        ));
        assert!(
            e.contains("server_tls.ca") && e.contains("is not checked"),
            "a CA that {mode} would ignore: {e}"
        );
    }
    let e = err(&format!("{MINIMAL}\n[server_tls]\nmode = \"allow\"\n"));
    assert!(e.contains("allow"), "{e}");
    let l = parse(
        &format!(
            "{MINIMAL}\n[server_tls]\nmode = \"verify-full\"\nca = {:?}\n",
            path("one.crt")
        ),
        "t.toml",
    )
    .unwrap();
    assert_eq!(l.server_tls.mode, ServerTlsMode::VerifyFull);
    assert!(plain
        .diff(&l)
        .contains(&"[server_tls] changed (new server connections)".to_string()));
}

#[test]
fn client_and_server_certificate_keys_are_checked_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = |f: &str| dir.path().join(f).display().to_string();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&key).unwrap();
    std::fs::write(path("ca.crt"), ca.pem()).unwrap();
    std::fs::write(path("ca.key"), key.serialize_pem()).unwrap();
    std::fs::write(path("junk.crl"), "not a CRL\n").unwrap();
    let tls = |more: &str| {
        format!(
            "{MINIMAL}\n[tls]\ncert = {:?}\nkey = {:?}\n{more}",
            path("ca.crt"),
            path("ca.key")
        )
    };
    let l = parse(
        &tls(&format!(
            "ca = {:?}\nclient_cert = \"verify-full\"\n",
            path("ca.crt")
        )),
        "t.toml",
    )
    .unwrap();
    assert_eq!(
        l.tls.as_ref().unwrap().client_cert,
        ClientCertMode::VerifyFull
    );
    assert!(
        l.describe()
            .contains("client certificates VerifyFull from authorities in"),
        "{}",
        l.describe()
    );
    let e = err(&tls("client_cert = \"verify-ca\"\n"));
    assert!(
        e.contains("tls.client_cert") && e.contains("needs `ca`"),
        "{e}"
    );
    let e = err(&tls(&format!("crl = {:?}\n", path("junk.crl"))));
    assert!(
        e.contains("t.toml:21: tls.crl") && e.contains("needs `ca`"),
        "{e}"
    );
    let e = err(&tls(&format!(
        "ca = {:?}\ncrl = {:?}\n",
        path("ca.crt"),
        path("junk.crl")
    )));
    assert!(
        e.contains("t.toml:22: tls.crl") && e.contains("no PEM"),
        "{e}"
    );
    std::fs::write(
        path("bad.crl"),
        "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
    )
    .unwrap();
    let e = err(&tls(&format!(
        "ca = {:?}\ncrl = {:?}\n",
        path("ca.crt"),
        path("bad.crl")
    )));
    assert!(
        e.contains("t.toml:22: tls.crl") && e.contains("unusable"),
        "{e}"
    );
    let e = err(&tls(&format!("ca = {:?}\n", path("missing.crt"))));
    assert!(
        e.contains("t.toml:21: tls.ca") && e.contains("missing.crt"),
        "{e}"
    );
    let e = err(&tls("client_cert = \"always\"\n"));
    assert!(e.contains("always"), "{e}");

    // auth = "cert" needs the authorities, and no password.
    let cert_user = "\n[[users]]\nname = \"carol\"\nauth = \"cert\"\n";
    let e = err(&format!("{MINIMAL}{cert_user}"));
    assert!(
        e.contains("users.auth") && e.contains("needs [tls] with `ca`"),
        "{e}"
    );
    let l = parse(
        &format!(
            "{}{cert_user}",
            tls(&format!("ca = {:?}\n", path("ca.crt")))
        ),
        "t.toml",
    )
    .unwrap();
    assert_eq!(l.users["carol"].config.auth, AuthMethod::Cert);

    // The proxy's own certificate towards servers.
    let server = |more: &str| format!("{MINIMAL}\n[server_tls]\n{more}");
    let l = parse(
        &server(&format!(
            "cert = {:?}\nkey = {:?}\n",
            path("ca.crt"),
            path("ca.key")
        )),
        "t.toml",
    )
    .unwrap();
    assert!(
        l.describe().contains("presenting certificate"),
        "{}",
        l.describe()
    );
    let e = err(&server(&format!("cert = {:?}\n", path("ca.crt"))));
    assert!(
        e.contains("server_tls.key") && e.contains("needs `key`"),
        "{e}"
    );
    let e = err(&server(&format!("key = {:?}\n", path("ca.key"))));
    assert!(
        e.contains("server_tls.cert") && e.contains("needs `cert`"),
        "{e}"
    );
    let e = err(&server(&format!(
        "cert = {:?}\nkey = {:?}\n",
        path("missing.crt"),
        path("ca.key")
    )));
    assert!(e.contains("t.toml:19: server_tls.cert"), "{e}");
    let e = err(&server(&format!(
        "mode = \"disable\"\ncert = {:?}\nkey = {:?}\n",
        path("ca.crt"),
        path("ca.key")
    )));
    assert!(
        e.contains("server_tls.cert") && e.contains("disable"),
        "{e}"
    );

    // Channel binding of the logins to servers: preferred unless set (or without TLS).
    use crate::config::ChannelBinding;
    let binding = |extra: &str| {
        parse(&server(extra), "t.toml")
            .unwrap()
            .server_tls
            .channel_binding
    };
    assert_eq!(binding(""), ChannelBinding::Prefer);
    assert_eq!(
        binding("channel_binding = \"disable\"\n"),
        ChannelBinding::Disable
    );
    assert_eq!(
        binding("channel_binding = \"require\"\n"),
        ChannelBinding::Require
    );
    assert_eq!(binding("mode = \"disable\"\n"), ChannelBinding::Disable);
    let text = server("mode = \"disable\"\nchannel_binding = \"require\"\n");
    let line = 1 + text
        .lines()
        .position(|l| l.starts_with("channel_binding"))
        .unwrap();
    let e = err(&text);
    assert!(
        e.starts_with(&format!("t.toml:{line}: server_tls.channel_binding:"))
            && e.contains("needs TLS"),
        "{e}"
    );
    let e = err(&server("channel_binding = \"always\"\n"));
    assert!(e.contains("channel_binding"), "{e}");
}

#[test]
fn admin_console_users_must_be_able_to_log_in() {
    let l = parse(
        &format!("{MINIMAL}\n[admin]\nusers = [\"app\"]\n"),
        "t.toml",
    )
    .unwrap();
    let a = l.config.admin.as_ref().expect("admin");
    assert_eq!(a.database, "switchyard");
    assert_eq!(a.access("app"), Some(AdminAccess::Admin));
    assert_eq!(a.access("other"), None);
    assert!(l
        .describe()
        .contains("admin console: database switchyard (users: app; stats users: )"));
    assert!(parse(MINIMAL, "t.toml")
        .unwrap()
        .describe()
        .contains("admin console off"));

    let e = err(&format!("{MINIMAL}\n[admin]\nstats_users = [\"nobody\"]\n"));
    assert!(
        e.contains("t.toml:19: admin.stats_users") && e.contains("\"nobody\""),
        "{e}"
    );
    let e = err(&format!(
        "{MINIMAL}\n[admin]\nusers = [\"app\"]\ndatabase = \"\"\n"
    ));
    assert!(e.contains("admin.database: must not be empty"), "{e}");
    let e = err(&format!("{MINIMAL}\n[admin]\nadmins = [\"app\"]\n"));
    assert!(e.contains("admins"), "{e}");
    // With [auth_query], any role may be named: its password is looked up at login.
    let l = parse(
        &format!("{MINIMAL}\n[auth_query]\nuser = \"app\"\n[admin]\nstats_users = [\"monitor\"]\n"),
        "t.toml",
    )
    .unwrap();
    assert_eq!(
        l.config.admin.as_ref().unwrap().access("monitor"),
        Some(AdminAccess::Stats)
    );
    let off = parse(MINIMAL, "t.toml").unwrap();
    assert!(off
        .diff(&l)
        .contains(&"[admin] changed (console logins and open console sessions)".to_string()));
}

#[test]
fn unix_socket_settings_are_checked() {
    let l = parse(
        &format!("unix_socket_dir = \"/run/sy\"\nunix_socket_mode = \"0770\"\n{MINIMAL}"),
        "t.toml",
    )
    .unwrap();
    assert_eq!(
        l.unix_socket,
        Some(crate::config::UnixSocketSpec {
            dir: "/run/sy".into(),
            mode: 0o770,
            group: None
        })
    );
    assert!(
        l.describe()
            .contains("unix socket /run/sy/.s.PGSQL.6432 (mode 0770)"),
        "{}",
        l.describe()
    );
    assert_eq!(parse(MINIMAL, "t.toml").unwrap().unix_socket, None);

    let e = err(&format!("unix_socket_dir = \"run/sy\"\n{MINIMAL}"));
    assert!(
        e.contains("t.toml:1: unix_socket_dir") && e.contains("absolute"),
        "{e}"
    );
    let e = err(&format!("unix_socket_dir = \"@sy\"\n{MINIMAL}"));
    assert!(
        e.contains("t.toml:1: unix_socket_dir") && e.contains("abstract"),
        "{e}"
    );
    let long = format!("/{}", "d".repeat(95));
    let e = err(&format!("unix_socket_dir = \"{long}\"\n{MINIMAL}"));
    assert!(
        e.contains("unix_socket_dir") && e.contains("107 bytes"),
        "{e}"
    );
    for bad in ["999", "", "0x1ff", "01777", "rw", "+777"] {
        let e = err(&format!("unix_socket_mode = \"{bad}\"\n{MINIMAL}"));
        assert!(
            e.contains("unix_socket_mode") && e.contains("octal"),
            "{bad}: {e}"
        );
    }
    // A group by number, as PostgreSQL takes it, or by name (every system has "root", 0).
    for (group, gid) in [("4242", 4242), ("root", 0)] {
        let l = parse(
            &format!("unix_socket_dir = \"/run/sy\"\nunix_socket_group = \"{group}\"\n{MINIMAL}"),
            "t.toml",
        )
        .unwrap();
        assert_eq!(l.unix_socket.as_ref().unwrap().group, Some(gid), "{group}");
        assert!(
            l.describe().contains(&format!("(mode 0777, group {gid})")),
            "{}",
            l.describe()
        );
    }
    let e = err(&format!(
        "unix_socket_dir = \"/run/sy\"\nunix_socket_group = \"no-such-group-here\"\n{MINIMAL}"
    ));
    assert!(
        e.contains("t.toml:2: unix_socket_group")
            && e.contains("group \"no-such-group-here\" does not exist"),
        "{e}"
    );
}

#[test]
fn backends_may_be_socket_directories() {
    let text = MINIMAL.replace("\"127.0.0.1:5433\"", "\"/var/run/postgresql:5433\"");
    let l = parse(&text, "t.toml").unwrap();
    assert_eq!(
        l.config.backends[1].address.get_ref(),
        "/var/run/postgresql:5433"
    );
    let twice = format!(
        "{}\n[[backends]]\nname = \"pg3\"\naddress = \"/var/run/postgresql\"\n",
        text.replace(
            "\"/var/run/postgresql:5433\"",
            "\"/var/run/postgresql:5432\""
        )
    );
    let e = err(&twice);
    assert!(e.contains("duplicate backend address"), "{e}");
    let text = MINIMAL.replace("\"127.0.0.1:5433\"", "\"/var/run/postgresql:0\"");
    let e = err(&text);
    assert!(
        e.contains("t.toml:12: backends.address") && e.contains("invalid port"),
        "{e}"
    );
}

#[test]
fn hba_file_is_read_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hba.conf");
    std::fs::write(
        &path,
        "local all all trust\nhost all app 10.0.0.0/8 scram-sha-256\n",
    )
    .unwrap();
    let text = format!("hba_file = {:?}\n{MINIMAL}", path.display().to_string());
    let l = parse(&text, "t.toml").unwrap();
    assert_eq!(l.hba.as_ref().map(|h| h.len()), Some(2));
    assert!(l.describe().contains("(2 rule(s))"), "{}", l.describe());
    assert!(
        !l.describe().contains("role membership"),
        "{}",
        l.describe()
    );
    std::fs::write(&path, "host samerole all 10.0.0.0/8 trust\n").unwrap();
    let l = parse(&text, "t.toml").unwrap();
    assert!(
        l.describe()
            .contains("role membership read at login as app ([health] user)"),
        "{}",
        l.describe()
    );
    std::fs::write(
        &path,
        "local all all trust\nhost all app 10.0.0.0/8 scram-sha-256\n",
    )
    .unwrap();
    assert!(parse(MINIMAL, "t.toml").unwrap().hba.is_none());

    std::fs::write(
        &path,
        "local all all trust\nhost all app 10.0.0.0/8 kerberos\n",
    )
    .unwrap();
    let e = err(&text);
    assert!(
        e.contains("t.toml:1: hba_file")
            && e.contains(&format!(
                "{}:2: invalid authentication method \"kerberos\"",
                path.display()
            )),
        "{e}"
    );
    let missing = format!("hba_file = \"/nonexistent/hba.conf\"\n{MINIMAL}");
    let e = err(&missing);
    assert!(e.contains("hba_file") && e.contains("cannot read"), "{e}");
}

#[test]
fn ident_file_gives_the_maps_hba_lines_name() {
    let dir = tempfile::tempdir().unwrap();
    let hba = dir.path().join("hba.conf");
    let ident = dir.path().join("ident.conf");
    std::fs::write(&hba, "local all all trust\nlocal all all peer map=ops\n").unwrap();
    std::fs::write(&ident, "ops root postgres\nops /^(.*)$ \\1\n").unwrap();
    let p = |s: &std::path::Path| format!("{:?}", s.display().to_string());
    let without = format!("hba_file = {}\n{MINIMAL}", p(&hba));
    let e = err(&without);
    assert!(
        e.contains(&format!("{}:2: map=ops needs `ident_file`", hba.display())),
        "{e}"
    );
    let with = format!("ident_file = {}\n{without}", p(&ident));
    let l = parse(&with, "t.toml").unwrap();
    assert!(l
        .ident
        .as_ref()
        .is_some_and(|i| i.permits("ops", "root", "postgres", None) == Ok(true)));
    assert!(l.describe().contains("user-name maps"), "{}", l.describe());
    assert!(
        !l.describe().contains("+role map lines"),
        "{}",
        l.describe()
    );
    std::fs::write(&ident, "ops root +admins\n").unwrap();
    let d = parse(&with, "t.toml").unwrap().describe();
    assert!(d.contains("+role map lines: role membership read"), "{d}");
    // A line of an included file is named by that file and line.
    let more = dir.path().join("more.conf");
    std::fs::write(&more, "local all all trust\nlocal all all peer map=ops\n").unwrap();
    std::fs::write(&hba, "local all all trust\ninclude more.conf\n").unwrap();
    let e = err(&without);
    assert!(
        e.contains(&format!("{}:2: map=ops needs `ident_file`", more.display())),
        "{e}"
    );
    std::fs::write(&hba, "local all all trust\nlocal all all peer map=ops\n").unwrap();
    std::fs::write(&ident, "ops root postgres\nops /^(.*)$ \\1\n").unwrap();
    // A changed map is a change a reload reports.
    std::fs::write(&ident, "ops root postgres\n").unwrap();
    let l2 = parse(&with, "t.toml").unwrap();
    assert!(l
        .diff(&l2)
        .iter()
        .any(|d| d.contains("ident_file maps changed")));
    std::fs::write(&ident, "ops /a( postgres\n").unwrap();
    let e = err(&with);
    assert!(
        e.contains("t.toml:1: ident_file")
            && e.contains(&format!(
                "{}:1: invalid regular expression",
                ident.display()
            )),
        "{e}"
    );
    let missing = format!("ident_file = \"/nonexistent/ident.conf\"\n{MINIMAL}");
    let e = err(&missing);
    assert!(e.contains("ident_file") && e.contains("cannot read"), "{e}");
}

#[test]
fn with_hba_file_users_are_not_checked_against_their_auth() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hba.conf");
    std::fs::write(&path, "host all all all scram-sha-256\n").unwrap();
    let verifier = crate::auth::ScramSecret::from_password("pw", b"salt", 16).to_string();
    let users = format!(
        "\n[[users]]\nname = \"md5-with-verifier\"\npassword = \"{verifier}\"\nauth = \"md5\"\n\
         \n[[users]]\nname = \"nopassword\"\nauth = \"md5\"\n"
    );
    let with = format!(
        "hba_file = {:?}\n{MINIMAL}{users}",
        path.display().to_string()
    );
    let l = parse(&with, "t.toml").unwrap();
    // Every password that can check a SCRAM login has a verifier, whatever `auth` says.
    assert!(l.users["md5-with-verifier"].scram.is_some());
    assert!(l.users["app"].scram.is_some());
    assert!(l.users["nopassword"].scram.is_none());
    // Without hba_file the same users are refused.
    assert!(err(&format!("{MINIMAL}{users}")).contains("users.auth"));

    // cert lines need client certificates to be asked for.
    std::fs::write(&path, "# certs\nhostssl all all all cert\n").unwrap();
    let e = err(&with);
    assert!(
        e.contains(&format!(
            "{}:2: cert authentication needs [tls] with `ca`",
            path.display()
        )),
        "{e}"
    );
}

/// A self-signed X.509 v1 certificate for 127.0.0.1 (P-256; `openssl req -new` then
/// `openssl x509 -req -signkey`, no extensions) and its key.
const V1_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBJDCBywIUfnhrIgqpLzB8ZmoYglfzgp2fyfgwCgYIKoZIzj0EAwIwFDESMBAG
A1UEAwwJMTI3LjAuMC4xMCAXDTI2MTIwNjEwMTgwMloYDzIxMjYxMTEyMTAxODAy
WjAUMRIwEAYDVQQDDAkxMjcuMC4wLjEwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNC
AAQl9KOAyG7iZMperQuKzDwNI1pNcq7IM6TdS2r60beBcXClXUV8ie9eUBs+jBIL
vBzabSb9+ItFNQa6DQ6H3oMnMAoGCCqGSM49BAMCA0gAMEUCIAQMnDNm8nl4ygAw
4ZUHJJ+hINzvYNA1PLwwJ5jYNB82AiEAwgu0U6gV6yJVIZAHZPB6QX3vBRM7XhNF
Ptgo/bj2tjY=
-----END CERTIFICATE-----
";
const V1_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgC4Q3N/O1NtqlBGDJ
5Bz15G1j7C4IyYuPp1DBfwqB61KhRANCAAQl9KOAyG7iZMperQuKzDwNI1pNcq7I
M6TdS2r60beBcXClXUV8ie9eUBs+jBILvBzabSb9+ItFNQa6DQ6H3oMn
-----END PRIVATE KEY-----
";

#[test]
fn a_reload_names_each_backend_it_changes() {
    let a = parse(MINIMAL, "t").unwrap();
    let backends = |list: &str| {
        let mut text = MINIMAL.split("[[backends]]").next().unwrap().to_owned();
        for b in list.split(';') {
            let (name, rest) = b.split_once('@').unwrap();
            let (port, weight) = rest.split_once('*').unwrap_or((rest, "1"));
            text += &format!(
                "[[backends]]\nname = \"{name}\"\naddress = \"127.0.0.1:{port}\"\nweight = {weight}\n"
            );
        }
        text += "[[users]]\nname = \"app\"\npassword = \"app\"\n";
        parse(&text, "t").unwrap()
    };
    assert!(a.diff(&backends("pg1@5432;pg2@5433")).is_empty());
    assert_eq!(
        a.diff(&backends("main@5432;pg2@5434;pg3@5435*3")),
        [
            "backend pg1 renamed to main (127.0.0.1:5432)",
            "backend pg2 moved from 127.0.0.1:5433 to 127.0.0.1:5434",
            "backend pg3 added (127.0.0.1:5435)",
        ]
    );
    assert_eq!(
        a.diff(&backends("pg1@5432*2")),
        [
            "backend pg1 weight 1 -> 2",
            "backend pg2 removed (127.0.0.1:5433)"
        ]
    );
    assert_eq!(
        a.diff(&backends("pg2@5433;pg1@5432")),
        ["[[backends]] order changed"]
    );
    // Names swapped between the two servers: each is moved, not renamed.
    assert_eq!(
        a.diff(&backends("pg2@5432;pg1@5433")),
        [
            "backend pg2 moved from 127.0.0.1:5433 to 127.0.0.1:5432",
            "backend pg1 moved from 127.0.0.1:5432 to 127.0.0.1:5433",
        ]
    );
}
