//! TLS towards clients (`[tls]`) and towards the servers (`[server_tls]`), with a certificate
//! authority and certificates made by rcgen for each run: psql, pgbench and tokio-postgres
//! (through tokio-postgres-rustls) as clients, PostgreSQL with `ssl = on` as the server.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use support::proxy::{Proxy, ProxyOptions};
use support::ready::{start_ready_proxy, start_ready_proxy_on};
use support::tools::*;
use support::*;

/// A certificate authority and the files of one certificate it signed.
struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
    /// Where its certificate is (PEM).
    ca_file: PathBuf,
}

impl Pki {
    /// A new authority named `name`, its certificate written to `<dir>/<name>.crt`.
    fn new(dir: &Path, name: &str) -> Pki {
        Pki::signing_with(dir, name, &rcgen::PKCS_ECDSA_P256_SHA256)
    }

    /// [`Pki::new`] with a key of `alg`, which then signs the certificates it issues.
    fn signing_with(dir: &Path, name: &str, alg: &'static rcgen::SignatureAlgorithm) -> Pki {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate_for(alg).expect("CA key");
        let ca = CertifiedIssuer::self_signed(p, key).expect("CA certificate");
        let ca_file = dir.join(format!("{name}.crt"));
        std::fs::write(&ca_file, ca.pem()).expect("writing the CA");
        Pki { ca, ca_file }
    }

    fn ca_file(&self) -> PathBuf {
        self.ca_file.clone()
    }

    /// A certificate for `names` (DNS names or IP addresses) signed by this authority:
    /// `(cert file, key file)` as `<file>.crt` and `.key` (mode 0600) beside the authority's.
    fn issue(&self, file: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("leaf params");
        p.distinguished_name.push(DnType::CommonName, names[0]);
        self.sign(file, p)
    }

    /// A client certificate whose subject's common name is `cn`, with serial number
    /// `serial` (for a revocation list): `(cert file, key file)` beside the authority's.
    fn issue_client(&self, file: &str, cn: &str, serial: u64) -> (PathBuf, PathBuf) {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("client params");
        p.distinguished_name.push(DnType::CommonName, cn);
        p.serial_number = Some(serial.into());
        self.sign(file, p)
    }

    /// Signs `p` with a new key; writes both beside the authority's certificate.
    fn sign(&self, file: &str, p: CertificateParams) -> (PathBuf, PathBuf) {
        let dir = self.ca_file.parent().expect("a directory");
        let key = KeyPair::generate().expect("leaf key");
        let cert = p.signed_by(&key, &self.ca).expect("leaf certificate");
        let (c, k) = (
            dir.join(format!("{file}.crt")),
            dir.join(format!("{file}.key")),
        );
        std::fs::write(&c, cert.pem()).expect("writing the certificate");
        write_private(&k, &key.serialize_pem());
        (c, k)
    }

    /// A revocation list of this authority naming the certificates with these serial
    /// numbers, written to `<file>.crl` beside the authority's.
    /// A revocation list of `revoked` serial numbers, to be replaced by `next_update` (a
    /// year).
    fn revocation_list(&self, file: &str, revoked: &[u64], next_update: i32) -> PathBuf {
        let crl = rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2020, 1, 1),
            next_update: rcgen::date_time_ymd(next_update, 1, 1),
            crl_number: 1u64.into(),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|&n| rcgen::RevokedCertParams {
                    serial_number: n.into(),
                    revocation_time: rcgen::date_time_ymd(2021, 1, 1),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&self.ca)
        .expect("revocation list");
        let path = self.ca_file.with_file_name(format!("{file}.crl"));
        std::fs::write(&path, crl.pem().expect("CRL PEM")).expect("writing the CRL");
        path
    }

    /// rustls client settings that trust this authority only.
    fn client_config(&self) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).expect("CA into the store");
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
    }
}

/// Writes `text` to a file only its owner may read (PostgreSQL insists on it for a key).
fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("writing a key");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
}

fn toml_path(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// `[tls]` with the given certificate and mode.
fn tls_table(cert: &Path, key: &Path, mode: &str) -> String {
    format!(
        "[tls]\ncert = {}\nkey = {}\nmode = \"{mode}\"\n",
        toml_path(cert),
        toml_path(key)
    )
}

/// The client-side files every test here uses: one authority, one proxy certificate for
/// 127.0.0.1.
struct ClientSide {
    _dir: tempfile::TempDir,
    pki: Pki,
    cert: PathBuf,
    key: PathBuf,
}

fn client_side() -> ClientSide {
    let dir = tempfile::Builder::new()
        .prefix("switchyard-tls-")
        .tempdir()
        .expect("temp dir");
    let pki = Pki::new(dir.path(), "proxy-ca");
    let (cert, key) = pki.issue("proxy", &["127.0.0.1", "localhost"]);
    ClientSide {
        _dir: dir,
        pki,
        cert,
        key,
    }
}

/// psql on the proxy with libpq's `sslmode` (and the authority for the verify modes).
fn psql(proxy: &Proxy, sslmode: &str, root: Option<&Path>, sql: &str) -> Ran {
    let mut c = pg_command("psql", proxy.port());
    c.env("PGSSLMODE", sslmode);
    if let Some(r) = root {
        c.env("PGSSLROOTCERT", r);
    }
    c.args([
        "-X",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        APP_DB,
        "-c",
        sql,
    ]);
    run(c, Duration::from_secs(60))
}

/// psql over TLS (`verify-full` against `root`) with `channel_binding=require`: libpq logs in
/// only with SCRAM-SHA-256-PLUS bound to the certificate it verified.
fn psql_bound(proxy: &Proxy, root: &Path, sql: &str) -> Ran {
    let mut c = pg_command("psql", proxy.port());
    c.env("PGSSLMODE", "verify-full")
        .env("PGSSLROOTCERT", root)
        .env("PGCHANNELBINDING", "require")
        .args(["-X", "-A", "-t", "-d", APP_DB, "-c", sql]);
    run(c, Duration::from_secs(60))
}

/// tokio-postgres through the proxy over TLS, trusting `pki`, with channel binding required
/// (tokio-postgres-rustls gives it the certificate's `tls-server-end-point` hash).
async fn tls_client(proxy: &Proxy, pki: &Pki) -> tokio_postgres::Client {
    let mut cfg: tokio_postgres::Config = proxy
        .conn_string(APP_USER, APP_PASSWORD, APP_DB)
        .parse()
        .expect("conn string");
    cfg.ssl_mode(tokio_postgres::config::SslMode::Require)
        .channel_binding(tokio_postgres::config::ChannelBinding::Require);
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(pki.client_config());
    let (client, conn) = cfg
        .connect(tls)
        .await
        .expect("TLS connect through the proxy");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_get_the_configured_certificate_and_every_message_type_over_tls() {
    let files = client_side();
    let proxy = start_ready_proxy(ProxyOptions {
        extra_tables: tls_table(&files.cert, &files.key, "allow"),
        ..Default::default()
    });
    let ca = files.pki.ca_file();

    // libpq verifies the chain and the address (an IP SAN) against our authority.
    let r = psql(&proxy, "verify-full", Some(&ca), "select 'over ' || 'tls'");
    assert_eq!(r.code, Some(0), "{}", r.describe("psql verify-full"));
    assert_eq!(r.stdout.trim(), "over tls");
    let mut c = pg_command("psql", proxy.port());
    c.env("PGSSLMODE", "verify-full")
        .env("PGSSLROOTCERT", &ca)
        .args(["-X", "-d", APP_DB, "-c", "\\conninfo"]);
    let r = run(c, Duration::from_secs(60));
    assert!(
        r.code == Some(0) && r.stdout.contains("SSL connection"),
        "{}",
        r.describe("psql \\conninfo")
    );
    // Another authority's certificate is not the one libpq was told to trust.
    let other = Pki::new(files._dir.path(), "other-ca");
    let r = psql(&proxy, "verify-full", Some(&other.ca_file()), "select 1");
    assert_ne!(r.code, Some(0), "{}", r.describe("psql with a foreign CA"));
    // SCRAM-SHA-256-PLUS: the proof is bound to the certificate libpq verified.
    let r = psql_bound(&proxy, &ca, "select 'bound'");
    assert_eq!(
        r.code,
        Some(0),
        "{}",
        r.describe("psql channel_binding=require")
    );
    assert_eq!(r.stdout.trim(), "bound");
    // "allow": plain clients still log in.
    let r = psql(&proxy, "disable", None, "select 'plain'");
    assert_eq!(r.code, Some(0), "{}", r.describe("psql sslmode=disable"));
    assert_eq!(r.stdout.trim(), "plain");

    let client = tls_client(&proxy, &files.pki).await;
    // Simple and extended protocol, a statement reused across transactions.
    let rows = client.simple_query("select 1; select 2").await.unwrap();
    assert_eq!(
        text_rows(rows),
        vec![vec![Some("1".to_string())], vec![Some("2".to_string())]]
    );
    let stmt = client.prepare("select $1::int * 2").await.unwrap();
    for i in 0..20 {
        let v: i32 = client.query_one(&stmt, &[&i]).await.unwrap().get(0);
        assert_eq!(v, i * 2);
    }
    // Large values both ways: many TLS records, writes the socket takes only in part.
    let big = "x".repeat(12 << 20);
    let echoed: String = client
        .query_one("select $1::text", &[&big])
        .await
        .unwrap()
        .get(0);
    assert_eq!(echoed.len(), big.len());
    assert!(echoed == big, "the 12 MB value changed on the way");
    let n: i64 = client
        .query_one("select count(*) from generate_series(1, 300000)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 300_000);
    let rows = client
        .query(
            "select g, md5(g::text) from generate_series(1, 50000) g",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 50_000);
    assert_eq!(rows[49_999].get::<_, String>(1).len(), 32);
    // COPY in and out.
    client
        .batch_execute("drop table if exists tls_copy; create table tls_copy (id int, v text)")
        .await
        .unwrap();
    {
        use futures_util::SinkExt;
        let sink = client.copy_in("copy tls_copy from stdin").await.unwrap();
        futures_util::pin_mut!(sink);
        let mut data = String::new();
        for i in 0..40_000 {
            data.push_str(&format!("{i}\trow number {i}\n"));
        }
        sink.send(bytes::Bytes::from(data)).await.unwrap();
        assert_eq!(sink.finish().await.unwrap(), 40_000);
    }
    let out = {
        use futures_util::TryStreamExt;
        let stream = client
            .copy_out("copy (select * from tls_copy order by id) to stdout")
            .await
            .unwrap();
        let chunks: Vec<bytes::Bytes> = stream.try_collect().await.unwrap();
        chunks.iter().map(|c| c.len()).sum::<usize>()
    };
    assert!(out > 40_000 * 10, "COPY TO STDOUT sent {out} bytes");
    // A cancel request over TLS reaches the query (sent once it runs).
    let config = files.pki.client_config();
    let (client, e) = cancel_running(client, "SELECT pg_sleep(30.3)", |token| {
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(config.clone());
        async move { token.cancel_query(tls).await }
    })
    .await;
    assert_eq!(e.code().map(|c| c.code()), Some("57014"), "{e}");
    let v: i32 = client.query_one("select 7", &[]).await.unwrap().get(0);
    assert_eq!(v, 7);
    client.batch_execute("drop table tls_copy").await.unwrap();

    // pgbench: concurrent TLS clients.
    let script = files._dir.path().join("bench.sql");
    std::fs::write(&script, "\\set v random(1, 1000)\nselect :v::int + 1;\n").unwrap();
    let mut c = pg_command("pgbench", proxy.port());
    c.env("PGSSLMODE", "require")
        .args([
            "-n", "-c", "8", "-j", "2", "-t", "200", "-M", "extended", "-f",
        ])
        .arg(&script)
        .arg(APP_DB);
    let r = run(c, Duration::from_secs(120));
    assert!(
        r.code == Some(0)
            && r.stdout
                .contains("number of transactions actually processed: 1600/1600"),
        "{}\n{}",
        r.describe("pgbench over TLS"),
        proxy.log_tail(20)
    );

    // No session is resumed (a resumed one would carry its first client certificate
    // unchecked): a client that keeps sessions gets a full handshake every time, TLS 1.3 and 1.2.
    for versions in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(files.pki.ca.der().clone()).unwrap();
        let config = Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_protocol_versions(&[versions])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
        );
        for round in 0..2 {
            let kind = tls_login_handshake(&proxy.addr(), config.clone()).await;
            assert_eq!(
                kind,
                Some(rustls::HandshakeKind::Full),
                "{versions:?} connection {round}"
            );
        }
    }

    let ok = proxy
        .metric("switchyard_tls_handshakes_total{result=\"ok\",side=\"client\"}")
        .await;
    // psql ×2, tokio-postgres, its cancel request, pgbench's 8 clients.
    assert!(ok >= 12.0, "client handshakes counted: {ok}");
}

/// An SSLRequest, a handshake with `config` (which keeps what the server offers to resume),
/// a startup packet and the server's first answer (which brings TLS 1.3 session tickets, if
/// any, to the client); the handshake's kind.
async fn tls_login_handshake(
    addr: &str,
    config: Arc<rustls::ClientConfig>,
) -> Option<rustls::HandshakeKind> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let step = Duration::from_secs(10);
    let mut tcp = tokio::time::timeout(step, tokio::net::TcpStream::connect(addr))
        .await
        .unwrap()
        .unwrap();
    tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .unwrap();
    assert_eq!(
        tokio::time::timeout(step, tcp.read_u8())
            .await
            .unwrap()
            .unwrap(),
        b'S'
    );
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio::time::timeout(
        step,
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .unwrap()
    .unwrap();
    let kind = tls.get_ref().1.handshake_kind();
    let mut startup = Vec::new();
    for kv in [APP_USER, "user", APP_DB, "database"].chunks(2) {
        startup.extend_from_slice(kv[1].as_bytes());
        startup.push(0);
        startup.extend_from_slice(kv[0].as_bytes());
        startup.push(0);
    }
    startup.push(0);
    let mut packet = ((startup.len() + 8) as i32).to_be_bytes().to_vec();
    packet.extend_from_slice(&196608i32.to_be_bytes());
    packet.extend_from_slice(&startup);
    tls.write_all(&packet).await.unwrap();
    let first = tokio::time::timeout(step, tls.read_u8())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first, b'R', "an authentication request");
    kind
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_mode_refuses_plain_clients_and_survives_bad_handshakes() {
    let files = client_side();
    let proxy = start_ready_proxy(ProxyOptions {
        extra_tables: tls_table(&files.cert, &files.key, "require"),
        ..Default::default()
    });
    let r = psql(&proxy, "disable", None, "select 1");
    assert_eq!(
        r.code,
        Some(2),
        "{}",
        r.describe("plain psql in require mode")
    );
    assert!(
        r.stderr.contains("accepts only encrypted connections"),
        "{}",
        r.describe("plain psql in require mode")
    );
    let e = tokio_postgres::connect(
        &proxy.conn_string(APP_USER, APP_PASSWORD, APP_DB),
        tokio_postgres::NoTls,
    )
    .await
    .err()
    .expect("a plain connection is refused");
    assert_eq!(e.code().map(|c| c.code()), Some("28000"), "{e}");
    // libpq's default (prefer) negotiates TLS and gets in.
    let r = psql(&proxy, "prefer", None, "select 'prefer'");
    assert_eq!(r.code, Some(0), "{}", r.describe("psql sslmode=prefer"));

    // A client that answers `S` with garbage instead of a ClientHello, and one that leaves
    // in the middle of a handshake: closed, counted, nobody else affected.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for garbage in [&b"GET / HTTP/1.1\r\n\r\n"[..], &b"\x16\x03\x01"[..]] {
        let mut s = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
        s.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
            .await
            .unwrap();
        let mut answer = [0u8; 1];
        s.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"S");
        s.write_all(garbage).await.unwrap();
        if garbage.len() == 3 {
            drop(s);
            continue;
        }
        // Closed (with or without a TLS alert first), not left hanging.
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut rest))
            .await
            .expect("the proxy closes a failed handshake")
            .ok();
    }
    let client = tls_client(&proxy, &files.pki).await;
    let v: i32 = client.query_one("select 41 + 1", &[]).await.unwrap().get(0);
    assert_eq!(v, 42);
    proxy
        .wait_metric(
            "switchyard_tls_handshakes_total{result=\"error\",side=\"client\"}",
            2.0,
            Duration::from_secs(20),
        )
        .await;
    let refused = proxy
        .metric("switchyard_client_rejected_total{reason=\"no_tls\"}")
        .await;
    assert!(refused >= 2.0, "plain clients refused: {refused}");
}

/// A Unix-domain socket never leaves the host: its clients are not offered TLS (an SSLRequest
/// gets `N`, as from PostgreSQL), and neither `mode = "require"` nor `client_cert` refuses
/// them, as PostgreSQL's `hostssl` lines (and their `clientcert`) do not apply to `local`
/// connections. TCP clients still need TLS and a certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_clients_are_not_offered_tls() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let files = client_side();
    let sock = tempfile::Builder::new()
        .prefix("sy-sock-")
        .tempdir_in("/tmp")
        .expect("socket dir");
    let proxy = start_ready_proxy(ProxyOptions {
        extra_top: format!("unix_socket_dir = {}\n", toml_path(sock.path())),
        extra_tables: format!(
            "{}ca = {}\nclient_cert = \"verify-ca\"\n",
            tls_table(&files.cert, &files.key, "require"),
            toml_path(&files.pki.ca_file())
        ),
        ..Default::default()
    });
    let path = sock.path().join(format!(".s.PGSQL.{}", proxy.port()));
    assert!(wait_until(Duration::from_secs(30), || path.exists()));

    // An SSLRequest, then the login goes on unencrypted.
    let mut s = tokio::net::UnixStream::connect(&path).await.unwrap();
    s.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .unwrap();
    let mut answer = [0u8; 1];
    s.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"N");
    let mut startup = Vec::new();
    startup.extend_from_slice(&196608i32.to_be_bytes());
    for kv in ["user", APP_USER, "database", APP_DB] {
        startup.extend_from_slice(kv.as_bytes());
        startup.push(0);
    }
    startup.push(0);
    let mut packet = ((startup.len() + 4) as i32).to_be_bytes().to_vec();
    packet.extend_from_slice(&startup);
    s.write_all(&packet).await.unwrap();
    let mut head = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(20), s.read_exact(&mut head))
        .await
        .expect("an answer to the startup packet")
        .unwrap();
    // AuthenticationSASL (R, code 10), not a FATAL asking for encryption.
    assert_eq!((head[0], &head[5..9]), (b'R', &10i32.to_be_bytes()[..]));
    drop(s);

    // libpq ignores sslmode on a socket; the proxy lets it in under mode = "require".
    let mut c = pg_command("psql", proxy.port());
    c.env("PGSSLMODE", "require").args([
        "-h",
        sock.path().to_str().unwrap(),
        "-XAt",
        "-d",
        APP_DB,
        "-c",
        "select 'local'",
    ]);
    let r = run(c, Duration::from_secs(60));
    assert_eq!(r.code, Some(0), "{}", r.describe("psql over the socket"));
    assert_eq!(r.stdout.trim(), "local");
    // Over TCP a plain client is still refused, and one without a certificate too.
    let r = psql(&proxy, "disable", None, "select 1");
    assert!(
        r.stderr.contains("accepts only encrypted connections"),
        "{}",
        r.describe("plain psql over TCP")
    );
    let r = psql(&proxy, "require", None, "select 1");
    assert!(
        r.stderr
            .contains("connection requires a valid client certificate"),
        "{}",
        r.describe("psql over TLS without a certificate")
    );
}

/// Runs `sql` (a long sleep, its text unique among the tests) on `client`, waits until the
/// server shows it running, then cancels it with `cancel`, once (again only should it still
/// run 10 s later): a cancel sent in a loop could outlive the query and hit the next one.
/// Returns the client and the query's error.
async fn cancel_running<F, Fut>(
    client: tokio_postgres::Client,
    sql: &'static str,
    cancel: F,
) -> (tokio_postgres::Client, tokio_postgres::Error)
where
    F: Fn(tokio_postgres::CancelToken) -> Fut,
    Fut: std::future::Future<Output = Result<(), tokio_postgres::Error>>,
{
    let token = client.cancel_token();
    let query = tokio::spawn(async move {
        let r = client.simple_query(sql).await;
        (client, r)
    });
    let running =
        tokio::task::spawn_blocking(move || active_anywhere(sql, Duration::from_secs(20)))
            .await
            .unwrap();
    assert!(running, "{sql} never showed as running");
    let cancelled = async {
        loop {
            cancel(token.clone())
                .await
                .expect("sending the cancel request");
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
    };
    let done = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::select! {
            r = query => r.unwrap(),
            _ = cancelled => unreachable!(),
        }
    })
    .await
    .expect("the query is cancelled within seconds");
    let (client, r) = done;
    let e = match r {
        Ok(_) => panic!("{sql} completed: the cancel request did not reach it"),
        Err(e) => e,
    };
    (client, e)
}

/// Past `max_client_connections`, a TLS client is refused over TLS (after its startup packet,
/// as PostgreSQL refuses one past `max_connections`), and a cancel request sent over TLS is
/// placed, not refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_proxy_refuses_and_cancels_over_tls() {
    let files = client_side();
    let proxy = start_ready_proxy(ProxyOptions {
        extra_top: "max_client_connections = 1\n".into(),
        extra_tables: tls_table(&files.cert, &files.key, "allow"),
        ..Default::default()
    });
    let client = tls_client(&proxy, &files.pki).await;
    let rejected = "switchyard_client_rejected_total{reason=\"max_clients\"}";

    // A second TLS client: its handshake completes and its login gets FATAL 53300 as an
    // ErrorResponse (an error in answer to its SSLRequest would not be one).
    let mut cfg: tokio_postgres::Config = proxy
        .conn_string(APP_USER, APP_PASSWORD, APP_DB)
        .parse()
        .expect("conn string");
    cfg.ssl_mode(tokio_postgres::config::SslMode::Require);
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(files.pki.client_config());
    let e = tokio::time::timeout(Duration::from_secs(20), cfg.connect(tls))
        .await
        .expect("a refusal, not a hang")
        .err()
        .expect("a TLS client past max_client_connections was admitted");
    let dbe = e
        .as_db_error()
        .unwrap_or_else(|| panic!("expected an ErrorResponse over TLS, got {e:?}"));
    assert_eq!((dbe.code().code(), dbe.severity()), ("53300", "FATAL"));
    let r = psql(&proxy, "require", None, "select 1");
    assert!(
        r.code == Some(2) && r.stderr.contains("too many clients"),
        "{}",
        r.describe("psql sslmode=require past the limit")
    );
    proxy
        .wait_metric(rejected, 2.0, Duration::from_secs(20))
        .await;
    let handshakes = "switchyard_tls_handshakes_total{result=\"ok\",side=\"client\"}";
    let handshakes_before = proxy.metric(handshakes).await;

    // The admitted client's query, cancelled over TLS while the proxy is full.
    let config = files.pki.client_config();
    let (client, e) = cancel_running(client, "SELECT pg_sleep(30.1)", |token| {
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(config.clone());
        async move { token.cancel_query(tls).await }
    })
    .await;
    assert_eq!(e.code().map(|c| c.code()), Some("57014"), "{e}");
    let after = proxy.metric(handshakes).await;
    assert!(
        after > handshakes_before,
        "the cancel request came over TLS: {handshakes_before} -> {after}"
    );
    assert_eq!(
        proxy.metric(rejected).await,
        2.0,
        "a cancel request is not a refused client"
    );
    let v: i32 = client.query_one("select 8", &[]).await.unwrap().get(0);
    assert_eq!(v, 8);
}

/// A local relay that opens each connection to `target` with direct TLS, as PostgreSQL 17's
/// `sslnegotiation=direct` does (its ClientHello first, no SSLRequest), and carries a plain
/// client's bytes through it. Returns its address.
async fn direct_tls_relay(target: String, config: rustls::ClientConfig) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    tokio::spawn(async move {
        while let Ok((mut plain, _)) = listener.accept().await {
            let (connector, target) = (connector.clone(), target.clone());
            tokio::spawn(async move {
                let Ok(tcp) = tokio::net::TcpStream::connect(&target).await else {
                    return;
                };
                let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
                let Ok(mut tls) = connector.connect(name, tcp).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut plain, &mut tls).await;
            });
        }
    });
    addr
}

/// A TLS connection ends as PostgreSQL ends one, with a `close_notify` alert: a client that
/// reads to the end finds a clean end, after a cancel request and after a refused login.
/// libpq 17's cancel API (psycopg's `cancel_safe()`) reported every cancel sent over TLS as
/// failed ("SSL error: unexpected eof while reading"), though it was placed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_connections_end_with_a_close_notify() {
    use postgres_protocol::message::frontend;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let files = client_side();
    let proxy = start_ready_proxy(ProxyOptions {
        extra_tables: tls_table(&files.cert, &files.key, "require"),
        ..Default::default()
    });
    let mut config = files.pki.client_config();
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    for what in ["a cancel request", "a login refused"] {
        let tcp = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut tls = connector.connect(name, tcp).await.expect("a TLS handshake");
        let mut out = bytes::BytesMut::new();
        if what == "a cancel request" {
            // (A key nobody holds: placed nowhere.)
            frontend::cancel_request(4711, 42, &mut out);
        } else {
            // (Protocol 9.0: refused at once.)
            out.extend_from_slice(&[0, 0, 0, 8, 0, 9, 0, 0]);
        }
        tls.write_all(&out).await.unwrap();
        tls.flush().await.unwrap();
        let mut rest = Vec::new();
        let end = tokio::time::timeout(Duration::from_secs(20), tls.read_to_end(&mut rest))
            .await
            .unwrap_or_else(|_| panic!("{what}: the connection stayed open"));
        assert!(
            end.is_ok(),
            "{what}: the connection ended without a close_notify: {end:?}"
        );
        if what == "a login refused" {
            assert_eq!(rest.first(), Some(&b'E'), "{what}: {rest:?}");
        }
    }
}

/// Direct TLS: a client that opens with its ClientHello and names `postgresql` in ALPN logs
/// in, queries and cancels without an SSLRequest; one without that ALPN is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_tls_clients_skip_the_ssl_request() {
    let files = client_side();
    // `require`: a plain session would be refused, so one that works is encrypted.
    let proxy = start_ready_proxy(ProxyOptions {
        extra_tables: tls_table(&files.cert, &files.key, "require"),
        ..Default::default()
    });
    let handshakes = "switchyard_tls_handshakes_total{result=\"ok\",side=\"client\"}";
    let before = proxy.metric(handshakes).await;
    let mut config = files.pki.client_config();
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    let relay = direct_tls_relay(proxy.addr(), config).await;
    // A plain tokio-postgres login through a relay, bounded.
    let login = |relay: String| async move {
        let (host, port) = relay.rsplit_once(':').unwrap();
        let conn_string = format!(
            "host={host} port={port} user={APP_USER} password={APP_PASSWORD} dbname={APP_DB}"
        );
        tokio::time::timeout(
            Duration::from_secs(20),
            tokio_postgres::connect(&conn_string, tokio_postgres::NoTls),
        )
        .await
        .expect("a login or a refusal, not a hang")
    };
    let (client, conn) = login(relay.clone())
        .await
        .unwrap_or_else(|e| panic!("login over direct TLS: {e:?}\n{}", proxy.log_tail(20)));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let v: i32 = client.query_one("select 6 * 7", &[]).await.unwrap().get(0);
    assert_eq!(v, 42);
    // Its cancel request goes the same way (the token names the relay's address).
    let (client, e) = cancel_running(client, "SELECT pg_sleep(30.2)", |token| async move {
        token.cancel_query(tokio_postgres::NoTls).await
    })
    .await;
    assert_eq!(e.code().map(|c| c.code()), Some("57014"), "{e}");
    let after = proxy.metric(handshakes).await;
    assert!(
        after >= before + 2.0,
        "direct handshakes: {before} -> {after}"
    );

    // Without ALPN: the handshake completes, then the connection is closed unanswered.
    let no_alpn = direct_tls_relay(proxy.addr(), files.pki.client_config()).await;
    let r = login(no_alpn).await;
    assert!(r.is_err(), "a direct TLS client without ALPN was let in");
    let ok = wait_until(Duration::from_secs(20), || {
        proxy.log().contains("without the ALPN protocol")
    });
    assert!(ok, "the refusal is logged:\n{}", proxy.log_tail(20));
    proxy
        .wait_metric(
            "switchyard_client_rejected_total{reason=\"no_alpn\"}",
            1.0,
            Duration::from_secs(20),
        )
        .await;

    // Inside a direct TLS session, an SSLRequest and a GSSENCRequest get `N`, as PostgreSQL
    // 17 answers them, and the login goes on; each asked again is a startup packet of an
    // unknown protocol version.
    for (request, version) in [
        (support::raw::ssl_request(), "1234.5679"),
        (support::raw::gssenc_request(), "1234.5680"),
    ] {
        let mut raw = support::raw::Raw::connect(&relay).await;
        raw.send(&request).await.unwrap();
        assert_eq!(raw.byte(support::raw::IO).await, Some(b'N'), "{version}");
        let mut again = support::raw::Raw::connect(&relay).await;
        again.send(&request).await.unwrap();
        assert_eq!(again.byte(support::raw::IO).await, Some(b'N'), "{version}");
        again.send(&request).await.unwrap();
        let f = again.frame().await;
        assert!(f.is_error(), "{f:?}");
        assert_eq!(
            (f.code().as_str(), f.severity().as_str()),
            ("0A000", "FATAL"),
            "{f:?}"
        );
        assert!(f.message().contains(version), "{f:?}");
        let params = [("user", APP_USER), ("database", APP_DB)];
        let s =
            support::raw::login_on(raw, support::raw::PROTO_3_0, &params, Some(APP_PASSWORD)).await;
        let mut s = support::raw::ok(s, version);
        assert_eq!(s.raw.query_ok("SELECT 8").await.scalar(), "8");
    }
    // The session that got in is unaffected.
    let v: i32 = client.query_one("select 7", &[]).await.unwrap().get(0);
    assert_eq!(v, 7);
}

/// Whether the proxy's connection (the one running this query) is encrypted, as the server
/// sees it.
/// A PostgreSQL with `ssl = on` (no replicas), its certificate for 127.0.0.1 signed by `pki`.
/// The files live in the cluster's directory, which the harness hands to the `postgres` user
/// when running as root.
struct SslServer {
    cluster: LocalCluster,
    pki: Pki,
    base: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// [`SslServer`], with more `postgresql.conf` lines made from its authority.
fn ssl_server(more_conf: impl FnOnce(&Pki) -> Vec<String>) -> SslServer {
    let base = tempfile::Builder::new()
        .prefix("sy-tls-")
        .tempdir()
        .expect("temp dir")
        .keep();
    let pki = Pki::new(&base, "server-ca");
    let (cert, key) = pki.issue("server", &["127.0.0.1"]);
    let mut extra_conf = vec![
        "ssl = on".into(),
        format!("ssl_cert_file = '{}'", cert.display()),
        format!("ssl_key_file = '{}'", key.display()),
    ];
    extra_conf.extend(more_conf(&pki));
    let cluster = own_cluster_with(ClusterOptions {
        replicas: 0,
        base_dir: Some(base.clone()),
        extra_conf,
    });
    SslServer {
        cluster,
        pki,
        base,
        cert,
        key,
    }
}

/// No server passes the proxy's checks: its log says `why` (the probes fail), and a client is
/// told no server is up (57P03).
async fn assert_no_usable_server(proxy: &Proxy, why: &str) {
    assert!(
        wait_until(Duration::from_secs(30), || proxy.log().contains(why)),
        "log lacks {why:?}:\n{}",
        proxy.log_tail(30)
    );
    let Err(e) = proxy.try_connect(APP_USER, APP_PASSWORD, APP_DB).await else {
        panic!("the login succeeded though {why:?}");
    };
    assert_eq!(e.code().map(|c| c.code()), Some("57P03"), "{e}");
}

async fn server_side_ssl(client: &tokio_postgres::Client) -> bool {
    client
        .query_one(
            "select ssl from pg_stat_ssl where pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_connections_use_tls_as_the_mode_says() {
    let SslServer {
        cluster,
        pki,
        base,
        cert,
        key,
    } = ssl_server(|_| Vec::new());
    let ca = pki.ca_file();
    let server_tls = |mode: &str, ca: Option<&Path>| {
        let mut t = format!("[server_tls]\nmode = \"{mode}\"\n");
        if let Some(ca) = ca {
            t.push_str(&format!("ca = {}\n", toml_path(ca)));
        }
        t
    };
    let monitor_ssl = || {
        cluster
            .primary()
            .psql(
                "select coalesce(bool_and(s.ssl), false) from pg_stat_ssl s \
                 join pg_stat_activity a using (pid) \
                 where a.application_name = 'switchyard-monitor'",
            )
            .unwrap()
    };

    for (mode, ca, expect) in [
        ("disable", None, false),
        ("prefer", None, true),
        ("require", None, true),
        ("verify-ca", Some(ca.as_path()), true),
        ("verify-full", Some(ca.as_path()), true),
    ] {
        let proxy = start_ready_proxy_on(
            &cluster,
            ProxyOptions {
                extra_tables: server_tls(mode, ca),
                ..Default::default()
            },
        );
        let client = proxy.connect_app().await;
        assert_eq!(server_side_ssl(&client).await, expect, "mode {mode}");
        assert_eq!(
            monitor_ssl(),
            if expect { "t" } else { "f" },
            "monitor, mode {mode}"
        );
        if expect {
            let n = proxy
                .metric("switchyard_tls_handshakes_total{result=\"ok\",side=\"server\"}")
                .await;
            assert!(n >= 1.0, "server handshakes counted in mode {mode}: {n}");
        }
        // Large values both ways over the server connection.
        let big = "y".repeat(6 << 20);
        let echoed: String = client
            .query_one("select $1::text", &[&big])
            .await
            .unwrap()
            .get(0);
        assert!(
            echoed == big,
            "mode {mode}: the 6 MB value changed on the way"
        );
        // The server ends the pooled session while it is idle (its FATAL arrives encrypted):
        // the next transaction gets a working connection.
        let ended = cluster
            .primary()
            .psql(
                "select count(pg_terminate_backend(pid)) from pg_stat_activity \
                 where usename = 'app' and application_name <> 'switchyard-monitor'",
            )
            .unwrap();
        assert_ne!(ended, "0", "mode {mode}: no server session to end");
        assert!(
            wait_until(Duration::from_secs(20), || cluster
                .primary()
                .psql(
                    "select count(*) from pg_stat_activity \
                     where usename = 'app' and application_name <> 'switchyard-monitor'"
                )
                .unwrap()
                == "0"),
            "mode {mode}: the ended sessions linger"
        );
        assert_eq!(
            server_side_ssl(&client).await,
            expect,
            "mode {mode}, new connection"
        );
        drop(client);
    }
    // Without a [server_tls] table: prefer.
    let proxy = start_ready_proxy_on(&cluster, ProxyOptions::default());
    assert!(server_side_ssl(&proxy.connect_app().await).await);
    drop(proxy);

    // The server's certificate now names another host: verify-ca still accepts it (the chain
    // is checked, not the name), verify-full does not.
    let (other_cert, other_key) = pki.issue("renamed", &["db.example"]);
    std::fs::write(&cert, std::fs::read(&other_cert).unwrap()).unwrap();
    std::fs::write(&key, std::fs::read(&other_key).unwrap()).unwrap();
    cluster.primary().psql("select pg_reload_conf()").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let proxy = start_ready_proxy_on(
        &cluster,
        ProxyOptions {
            extra_tables: server_tls("verify-ca", Some(&ca)),
            ..Default::default()
        },
    );
    assert!(server_side_ssl(&proxy.connect_app().await).await);
    drop(proxy);
    let proxy_with = |tables: String| {
        Proxy::start_with(
            &cluster,
            ProxyOptions {
                extra_tables: tables,
                ..Default::default()
            },
        )
    };
    assert_no_usable_server(
        &proxy_with(server_tls("verify-full", Some(&ca))),
        "not valid for name",
    )
    .await;
    let foreign = Pki::new(&base, "foreign-ca");
    assert_no_usable_server(
        &proxy_with(server_tls("verify-ca", Some(&foreign.ca_file()))),
        "UnknownIssuer",
    )
    .await;

    // A server whose TLS rustls cannot speak (TLS 1.1 at most): the handshake fails. `prefer`
    // goes on in plain text over a new connection, as libpq does, for the pools and the
    // monitor alike; `require` refuses the server.
    let primary = cluster.primary();
    primary
        .psql("ALTER SYSTEM SET ssl_min_protocol_version = 'TLSv1'")
        .unwrap();
    primary
        .psql("ALTER SYSTEM SET ssl_max_protocol_version = 'TLSv1.1'")
        .unwrap();
    primary.stop();
    primary
        .start()
        .expect("restarting the primary with TLS 1.1 at most");
    let proxy = start_ready_proxy_on(
        &cluster,
        ProxyOptions {
            extra_tables: server_tls("prefer", None),
            ..Default::default()
        },
    );
    assert!(
        !server_side_ssl(&proxy.connect_app().await).await,
        "prefer after a failed handshake"
    );
    assert_eq!(monitor_ssl(), "f", "the monitor after a failed handshake");
    assert!(
        proxy.log().contains("going on without TLS"),
        "{}",
        proxy.log_tail(20)
    );
    let failed = proxy
        .metric("switchyard_tls_handshakes_total{result=\"error\",side=\"server\"}")
        .await;
    assert!(failed >= 1.0, "failed server handshakes counted: {failed}");
    drop(proxy);
    assert_no_usable_server(
        &proxy_with(server_tls("require", None)),
        "TLS handshake failed",
    )
    .await;

    // A server without TLS: `require` refuses it, `prefer` goes on unencrypted.
    let plain = shared_cluster();
    let proxy = Proxy::start_with(
        plain,
        ProxyOptions {
            extra_tables: format!(
                "{}[routing]\nprimary_wait = \"1s\"\n",
                server_tls("require", None)
            ),
            ..Default::default()
        },
    );
    assert_no_usable_server(&proxy, "server does not support TLS").await;
    drop(proxy);
    let proxy = start_ready_proxy_on(plain, ProxyOptions::default());
    assert!(!server_side_ssl(&proxy.connect_app().await).await);
}

/// A reload that makes `[server_tls]` ask for TLS closes the plain-text server connections
/// opened before it: idle ones at once, one in use when its transaction ends. Every later
/// transaction, also of a client connected across the reload, runs encrypted, and so do the
/// `[auth_query]` lookups and the `hba_file` `+role` membership lookups: no plain-text
/// connection of the proxy's is left on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_asks_for_tls_closes_plain_server_connections() {
    let SslServer { cluster, pki, .. } = ssl_server(|_| Vec::new());
    let primary = cluster.primary();
    primary
        .psql(
            "SET password_encryption = 'scram-sha-256'; \
             CREATE ROLE tls_member; \
             CREATE ROLE tls_lookup LOGIN PASSWORD 'lookup pass' IN ROLE tls_member; \
             GRANT ALL ON DATABASE postgres TO tls_lookup",
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("hba.conf");
    std::fs::write(
        &rules,
        "host all +tls_member 127.0.0.1/32 scram-sha-256\n\
         host all all 127.0.0.1/32 scram-sha-256\n",
    )
    .unwrap();
    let tables = |server_tls: &str| {
        format!(
            "[health]\ninterval = \"200ms\"\n\n[auth_query]\nuser = \"postgres\"\n\n{server_tls}"
        )
    };
    let proxy = start_ready_proxy_on(
        &cluster,
        ProxyOptions {
            extra_top: format!("hba_file = {}\n", toml_path(&rules)),
            extra_tables: tables("[server_tls]\nmode = \"disable\"\n"),
            ..Default::default()
        },
    );
    let plain_connections = || {
        primary
            .psql(
                "select count(*) from pg_stat_ssl s join pg_stat_activity a using (pid) \
                 where a.client_addr is not null and not s.ssl",
            )
            .unwrap()
    };
    let stayed = proxy.connect_app().await;
    assert!(!server_side_ssl(&stayed).await, "before the reload");
    let looked_up = proxy.connect("tls_lookup", "lookup pass", "postgres").await;
    assert!(!server_side_ssl(&looked_up).await, "before the reload");
    // A transaction open across the reload keeps its connection until it ends.
    let in_transaction = proxy.connect_app().await;
    in_transaction.batch_execute("BEGIN").await.unwrap();
    assert!(!server_side_ssl(&in_transaction).await);
    assert_ne!(
        plain_connections(),
        "0",
        "no plain-text connection before the reload"
    );

    proxy.rewrite_config(&tables(&format!(
        "[server_tls]\nmode = \"verify-full\"\nca = {}\n",
        toml_path(&pki.ca_file())
    )));
    proxy.reload_ok().await;
    assert!(
        !server_side_ssl(&in_transaction).await,
        "the open transaction keeps its server connection"
    );
    in_transaction.batch_execute("COMMIT").await.unwrap();
    for client in [&stayed, &looked_up, &in_transaction] {
        for _ in 0..5 {
            assert!(
                server_side_ssl(client).await,
                "a transaction after the reload"
            );
        }
    }
    // New logins: the lookup and the membership lookup run on new connections too.
    let new_login = proxy.connect("tls_lookup", "lookup pass", "postgres").await;
    assert!(server_side_ssl(&new_login).await);
    assert!(
        wait_until(Duration::from_secs(20), || plain_connections() == "0"),
        "plain-text connections left after the reload: {}",
        primary
            .psql(
                "select string_agg(a.usename || ' ' || a.application_name || ' ' || \
                 left(a.query, 40), '; ') from pg_stat_ssl s join pg_stat_activity a \
                 using (pid) where a.client_addr is not null and not s.ssl"
            )
            .unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_reads_renewed_certificate_files() {
    let files = client_side();
    let proxy = start_ready_proxy(ProxyOptions {
        extra_tables: tls_table(&files.cert, &files.key, "require"),
        ..Default::default()
    });
    let old_ca = files.pki.ca_file();
    let r = psql(&proxy, "verify-full", Some(&old_ca), "select 'first'");
    assert_eq!(r.code, Some(0), "{}", r.describe("psql before the renewal"));
    let session = tls_client(&proxy, &files.pki).await;

    // The certificate is renewed by another authority: new connections get it after SIGHUP.
    // This one signs with ECDSA P-384 and SHA-384, which the channel binding hash follows.
    let renewed = Pki::signing_with(
        files._dir.path(),
        "renewed-ca",
        &rcgen::PKCS_ECDSA_P384_SHA384,
    );
    let (cert, key) = renewed.issue("renewed", &["127.0.0.1"]);
    std::fs::copy(&cert, &files.cert).unwrap();
    std::fs::copy(&key, &files.key).unwrap();
    proxy.reload_ok().await;
    let r = psql(
        &proxy,
        "verify-full",
        Some(&renewed.ca_file()),
        "select 'renewed'",
    );
    assert_eq!(r.code, Some(0), "{}", r.describe("psql after the renewal"));
    assert_eq!(r.stdout.trim(), "renewed");
    let r = psql_bound(&proxy, &renewed.ca_file(), "select 'bound'");
    assert_eq!(
        r.code,
        Some(0),
        "{}",
        r.describe("psql channel_binding=require after the renewal (SHA-384)")
    );
    let bound = tls_client(&proxy, &renewed).await;
    let v: i32 = bound.query_one("select 6", &[]).await.unwrap().get(0);
    assert_eq!(v, 6);
    let r = psql(&proxy, "verify-full", Some(&old_ca), "select 1");
    assert_ne!(
        r.code,
        Some(0),
        "{}",
        r.describe("the old authority after the renewal")
    );
    // The session opened before goes on.
    let v: i32 = session.query_one("select 5", &[]).await.unwrap().get(0);
    assert_eq!(v, 5);

    // A broken key file: the reload is rejected and the renewed certificate stays in use.
    std::fs::write(&files.key, "not a key\n").unwrap();
    proxy.reload();
    proxy
        .wait_metric(
            "switchyard_reloads_total{result=\"error\"}",
            1.0,
            Duration::from_secs(20),
        )
        .await;
    assert!(proxy.log().contains("tls.key"), "{}", proxy.log_tail(10));
    let r = psql(
        &proxy,
        "verify-full",
        Some(&renewed.ca_file()),
        "select 'kept'",
    );
    assert_eq!(
        r.code,
        Some(0),
        "{}",
        r.describe("psql after a rejected reload")
    );

    // A CancelRequest in plain text is still taken in require mode (PostgreSQL takes them
    // before any encryption or authentication): an unknown key is counted, not refused.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let refused_before = proxy
        .metric("switchyard_client_rejected_total{reason=\"no_tls\"}")
        .await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let mut cancel = vec![0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e];
    cancel.extend_from_slice(&12345i32.to_be_bytes());
    cancel.extend_from_slice(&678i32.to_be_bytes());
    s.write_all(&cancel).await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut rest))
        .await
        .expect("the proxy closes a cancel connection")
        .unwrap();
    assert!(rest.is_empty(), "a cancel request gets no answer: {rest:?}");
    proxy
        .wait_metric(
            "switchyard_cancel_requests_total{result=\"unknown\"}",
            1.0,
            Duration::from_secs(20),
        )
        .await;
    let refused_after = proxy
        .metric("switchyard_client_rejected_total{reason=\"no_tls\"}")
        .await;
    assert_eq!(refused_before, refused_after);
}

/// psql as `user` over TLS (`verify-full` against `root`) with a client certificate (`cert`:
/// its certificate and key files) and a password, or none of either (`-w`: never prompt).
fn psql_cert(
    proxy: &Proxy,
    user: &str,
    root: &Path,
    cert: Option<&(PathBuf, PathBuf)>,
    password: Option<&str>,
) -> Ran {
    let mut c = pg_command("psql", proxy.port());
    c.env("PGSSLMODE", "verify-full")
        .env("PGSSLROOTCERT", root)
        .env_remove("PGPASSWORD");
    if let Some((crt, key)) = cert {
        c.env("PGSSLCERT", crt).env("PGSSLKEY", key);
    }
    if let Some(p) = password {
        c.env("PGPASSWORD", p);
    }
    c.args([
        "-U",
        user,
        "-w",
        "-X",
        "-A",
        "-t",
        "-d",
        APP_DB,
        "-c",
        "select current_user",
    ]);
    run(c, Duration::from_secs(60))
}

/// `hba_file` lines with `clientcert=`: `verify-full` needs a certificate naming the user on
/// top of the password, `verify-ca` any certificate from `[tls] ca`; a `cert` line logs in by
/// the certificate alone; plain clients fall through to a `host` line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hba_lines_require_client_certificates() {
    let files = client_side();
    let root = files.pki.ca_file();
    let app = files.pki.issue_client("hba-app", APP_USER, 21);
    let other = files.pki.issue_client("hba-other", "someone-else", 22);
    let rules = files._dir.path().join("hba.conf");
    std::fs::write(
        &rules,
        format!(
            "hostssl {APP_DB} {APP_USER} 127.0.0.1/32 scram-sha-256 clientcert=verify-full\n\
             hostssl {APP_DB} {OTHER_USER} 127.0.0.1/32 scram-sha-256 clientcert=verify-ca\n\
             hostssl {APP_DB} {MD5_USER} 127.0.0.1/32 cert\n\
             hostssl {APP_DB} {PLAIN_USER} 127.0.0.1/32 cert map=services\n\
             hostssl {APP_DB} {TRUST_USER} 127.0.0.1/32 cert clientname=DN map=subjects\n\
             hostnossl all all 127.0.0.1/32 scram-sha-256\n"
        ),
    )
    .unwrap();
    // A `cert` line with `map=`: the map decides which names log in as whom.
    let idents = files._dir.path().join("ident.conf");
    std::fs::write(
        &idents,
        // (Quoted: a comma would end the field, as in PostgreSQL.)
        "services /^svc-([a-z_]+)$ \\1\nsubjects \"/^CN=([a-z_]+),OU=db,O=Example$\" \\1\n",
    )
    .unwrap();
    let proxy = start_ready_proxy(ProxyOptions {
        extra_top: format!(
            "hba_file = {}\nident_file = {}\n",
            toml_path(&rules),
            toml_path(&idents)
        ),
        extra_tables: format!(
            "{}ca = {}\n",
            tls_table(&files.cert, &files.key, "allow"),
            toml_path(&root)
        ),
        ..Default::default()
    });
    let ok = |r: &Ran, user: &str, what: &str| {
        assert_eq!(r.code, Some(0), "{}", r.describe(what));
        assert_eq!(r.stdout.trim(), user, "{}", r.describe(what));
    };
    let refused = |r: &Ran, message: &str, what: &str| {
        assert_eq!(r.code, Some(2), "{}", r.describe(what));
        assert!(r.stderr.contains(message), "{}", r.describe(what));
    };
    // verify-full: the certificate must name the user, and the password is still asked.
    let r = psql_cert(&proxy, APP_USER, &root, None, Some(APP_PASSWORD));
    refused(
        &r,
        "connection requires a valid client certificate",
        "app, no certificate",
    );
    let r = psql_cert(&proxy, APP_USER, &root, Some(&other), Some(APP_PASSWORD));
    refused(
        &r,
        &format!("password authentication failed for user \"{APP_USER}\""),
        "app, another's certificate",
    );
    let r = psql_cert(&proxy, APP_USER, &root, Some(&app), Some("wrong"));
    refused(
        &r,
        "password authentication failed",
        "app, its certificate, a wrong password",
    );
    let r = psql_cert(&proxy, APP_USER, &root, Some(&app), Some(APP_PASSWORD));
    ok(&r, APP_USER, "app, its certificate and password");
    // verify-ca: any certificate from the authority, with the password.
    let r = psql_cert(&proxy, OTHER_USER, &root, None, Some(OTHER_PASSWORD));
    refused(
        &r,
        "connection requires a valid client certificate",
        "other, no certificate",
    );
    let r = psql_cert(
        &proxy,
        OTHER_USER,
        &root,
        Some(&other),
        Some(OTHER_PASSWORD),
    );
    ok(&r, OTHER_USER, "other, a certificate from the authority");
    // cert: the certificate alone, naming the user.
    let md5_cert = files.pki.issue_client("hba-md5", MD5_USER, 23);
    let r = psql_cert(&proxy, MD5_USER, &root, Some(&md5_cert), None);
    ok(&r, MD5_USER, "md5_user by certificate");
    let r = psql_cert(&proxy, MD5_USER, &root, Some(&app), None);
    refused(
        &r,
        &format!("certificate authentication failed for user \"{MD5_USER}\""),
        "md5_user with app's certificate",
    );
    // A certificate and the user it asks for: let in, or refused as `cert` refuses.
    let by_cert = |cert: &(PathBuf, PathBuf), user: &str, let_in: bool, what: &str| {
        let r = psql_cert(&proxy, user, &root, Some(cert), None);
        if let_in {
            ok(&r, user, what);
        } else {
            let m = format!("certificate authentication failed for user \"{user}\"");
            refused(&r, &m, what);
        }
    };
    let service = files
        .pki
        .issue_client("hba-svc", &format!("svc-{PLAIN_USER}"), 24);
    by_cert(
        &service,
        PLAIN_USER,
        true,
        "a certificate the map pairs with plain_user",
    );
    // With a map, a certificate naming the user itself is not enough.
    let own = files.pki.issue_client("hba-plain", PLAIN_USER, 25);
    by_cert(
        &own,
        PLAIN_USER,
        false,
        "plain_user's own name, not in the map",
    );
    // clientname=DN: the map sees the whole subject, the last name first (RFC 2253).
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(DnType::OrganizationName, "Example");
    p.distinguished_name
        .push(DnType::OrganizationalUnitName, "db");
    p.distinguished_name.push(DnType::CommonName, TRUST_USER);
    let subject = files.pki.sign("hba-dn", p);
    by_cert(
        &subject,
        TRUST_USER,
        true,
        "a subject the map pairs with trust_user",
    );
    // The common name alone is not the subject the map asks for.
    let cn_only = files.pki.issue_client("hba-cn", TRUST_USER, 26);
    by_cert(
        &cn_only,
        TRUST_USER,
        false,
        "a subject the map does not list",
    );
    // Plain clients match the hostnossl line.
    let r = psql(&proxy, "disable", None, "select current_user");
    assert_eq!(r.code, Some(0), "{}", r.describe("plain psql"));
}

/// `clientname=DN` is a line's own: under `[tls] client_cert = "verify-full"`, a line with
/// `clientname=DN` and no check of its own leaves the global check on the common name; a
/// line's own `clientcert=verify-full clientname=DN` compares the whole subject.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clientname_dn_applies_to_its_own_lines_check_only() {
    let files = client_side();
    let root = files.pki.ca_file();
    let rules = files._dir.path().join("hba.conf");
    std::fs::write(
        &rules,
        format!(
            "hostssl {APP_DB} {APP_USER} 127.0.0.1/32 scram-sha-256 clientname=DN\n\
             hostssl {APP_DB} {OTHER_USER} 127.0.0.1/32 scram-sha-256 clientcert=verify-full clientname=DN\n"
        ),
    )
    .unwrap();
    let proxy = start_ready_proxy(ProxyOptions {
        extra_top: format!("hba_file = {}\n", toml_path(&rules)),
        extra_tables: format!(
            "{}ca = {}\nclient_cert = \"verify-full\"\n",
            tls_table(&files.cert, &files.key, "allow"),
            toml_path(&root)
        ),
        ..Default::default()
    });
    let app = files.pki.issue_client("dn-app", APP_USER, 31);
    let r = psql_cert(&proxy, APP_USER, &root, Some(&app), Some(APP_PASSWORD));
    assert_eq!(
        r.code,
        Some(0),
        "{}",
        r.describe("app: the global check, by CN")
    );
    assert_eq!(r.stdout.trim(), APP_USER);
    // The subject of other's certificate is `CN=other`, not `other`.
    let other = files.pki.issue_client("dn-other", OTHER_USER, 32);
    let r = psql_cert(
        &proxy,
        OTHER_USER,
        &root,
        Some(&other),
        Some(OTHER_PASSWORD),
    );
    assert_eq!(
        r.code,
        Some(2),
        "{}",
        r.describe("other: the line's check, by DN")
    );
    assert!(
        r.stderr.contains(&format!(
            "password authentication failed for user \"{OTHER_USER}\""
        )),
        "{}",
        r.describe("other: the line's check, by DN")
    );
}

/// `[tls] ca`: clients are asked for a certificate from that authority. A user with `auth =
/// "cert"` logs in with one whose common name is its name and no password; `crl` revokes
/// certificates; `client_cert = "verify-full"` requires every client's certificate, naming
/// it, on top of its password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_log_users_in_and_are_checked() {
    let files = client_side();
    let dir = files._dir.path();
    let root = files.pki.ca_file();
    let carol = files.pki.issue_client("carol", "carol", 10);
    let app = files.pki.issue_client("app-client", APP_USER, 11);
    let revoked = files.pki.issue_client("carol-revoked", "carol", 12);
    let crl = files.pki.revocation_list("clients", &[12], 2099);
    let foreign = Pki::new(dir, "foreign-ca").issue_client("carol-foreign", "carol", 10);
    shared_cluster()
        .primary()
        .psql("CREATE ROLE carol LOGIN PASSWORD 'carol-on-the-server'")
        .unwrap();
    // Reads go to the replicas: they must know the role before carol's first login.
    shared_cluster()
        .wait_replicas_caught_up(Duration::from_secs(60))
        .unwrap();
    let tables = |client_cert: &str| {
        format!(
            "{}ca = {}\ncrl = {}\nclient_cert = \"{client_cert}\"\n\n\
             [[users]]\nname = \"carol\"\nauth = \"cert\"\n\
             server_password = \"carol-on-the-server\"\n",
            tls_table(&files.cert, &files.key, "allow"),
            toml_path(&root),
            toml_path(&crl),
        )
    };
    let proxy = start_ready_proxy(ProxyOptions {
        extra_tables: tables("optional"),
        ..Default::default()
    });
    let ok = |r: &Ran, who: &str, what: &str| {
        assert!(
            r.code == Some(0) && r.stdout.trim() == who,
            "{}\n{}",
            r.describe(what),
            proxy.log_tail(20)
        );
    };
    let refused = |r: &Ran, why: &str, what: &str| {
        assert!(
            r.code != Some(0) && r.stderr.contains(why),
            "expected {why:?}\n{}",
            r.describe(what)
        );
    };

    // auth = "cert": the certificate is the login, no password asked for.
    let r = psql_cert(&proxy, "carol", &root, Some(&carol), None);
    ok(&r, "carol", "carol with her certificate");
    let r = psql_cert(&proxy, "carol", &root, Some(&app), None);
    refused(
        &r,
        "certificate authentication failed for user \"carol\"",
        "carol with app's certificate",
    );
    assert!(
        proxy
            .log()
            .contains("the client certificate's name is not the user name"),
        "{}",
        proxy.log_tail(20)
    );
    let r = psql_cert(&proxy, "carol", &root, None, Some("carol-on-the-server"));
    refused(
        &r,
        "connection requires a valid client certificate",
        "carol without a certificate",
    );
    let mut plain = pg_command("psql", proxy.port());
    plain
        .env("PGSSLMODE", "disable")
        .args(["-U", "carol", "-w", "-X", "-d", APP_DB, "-c", "select 1"]);
    refused(
        &run(plain, Duration::from_secs(60)),
        "connection requires a valid client certificate",
        "carol in plain text",
    );
    // The handshake itself refuses a revoked certificate and one of another authority.
    let r = psql_cert(&proxy, "carol", &root, Some(&revoked), None);
    refused(&r, "revoked", "carol with a revoked certificate");
    let r = psql_cert(&proxy, "carol", &root, Some(&foreign), None);
    refused(
        &r,
        "unknown ca",
        "carol with another authority's certificate",
    );
    // Password users go on as before, with a certificate or without.
    let r = psql_cert(&proxy, APP_USER, &root, None, Some(APP_PASSWORD));
    ok(&r, APP_USER, "app with its password");
    let r = psql_cert(&proxy, APP_USER, &root, Some(&carol), Some(APP_PASSWORD));
    ok(
        &r,
        APP_USER,
        "app with its password and carol's certificate",
    );
    let rejected = proxy
        .metric("switchyard_client_rejected_total{reason=\"client_cert\"}")
        .await;
    assert_eq!(rejected, 3.0, "carol's three refused logins");

    // verify-full for everybody: a certificate naming the user, and the password.
    proxy.rewrite_config(&tables("verify-full"));
    proxy.reload_ok().await;
    let r = psql_cert(&proxy, APP_USER, &root, Some(&app), Some(APP_PASSWORD));
    ok(&r, APP_USER, "app with its certificate and password");
    let r = psql_cert(&proxy, APP_USER, &root, None, Some(APP_PASSWORD));
    refused(
        &r,
        "connection requires a valid client certificate",
        "app without a certificate under verify-full",
    );
    let r = psql_cert(&proxy, APP_USER, &root, Some(&carol), Some(APP_PASSWORD));
    refused(
        &r,
        "password authentication failed for user \"app\"",
        "app with carol's certificate under verify-full",
    );
    let r = psql_cert(&proxy, APP_USER, &root, Some(&app), Some("wrong"));
    refused(
        &r,
        "password authentication failed for user \"app\"",
        "app's certificate with a wrong password",
    );
    let r = psql_cert(&proxy, "carol", &root, Some(&carol), None);
    ok(&r, "carol", "carol under verify-full");

    // A revocation list past its next update is no longer to be trusted: as PostgreSQL
    // (OpenSSL), every client certificate is refused until a fresh one is in place.
    std::fs::copy(files.pki.revocation_list("stale", &[12], 2021), &crl).unwrap();
    proxy.reload_ok().await;
    let r = psql_cert(&proxy, "carol", &root, Some(&carol), None);
    assert!(
        r.code != Some(0),
        "{}",
        r.describe("carol under a stale revocation list")
    );
    let r = psql_cert(&proxy, APP_USER, &root, Some(&app), Some(APP_PASSWORD));
    assert!(
        r.code != Some(0),
        "{}",
        r.describe("app under a stale revocation list")
    );
}

/// `[server_tls] cert` and `key`: the proxy presents its own certificate to servers that
/// require one (`clientcert=verify-ca` in `pg_hba.conf`), from the pools and the health
/// probes alike; without it such a server refuses the proxy and stays down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_that_require_a_client_certificate_get_the_proxys() {
    let SslServer { cluster, pki, .. } =
        ssl_server(|pki| vec![format!("ssl_ca_file = '{}'", pki.ca_file().display())]);
    let (proxy_cert, proxy_key) = pki.issue_client("switchyard-client", "switchyard", 20);
    // TCP logins need TLS and a certificate from the authority, on top of their method.
    let hba = cluster.primary().data_dir().join("pg_hba.conf");
    let text = std::fs::read_to_string(&hba).unwrap();
    let required: String = text
        .lines()
        .map(|l| match l.strip_prefix("host all ") {
            Some(rest) => format!("hostssl all {rest} clientcert=verify-ca\n"),
            None => format!("{l}\n"),
        })
        .collect();
    assert!(required.contains("clientcert"), "{required}");
    std::fs::write(&hba, required).unwrap();
    cluster.primary().psql("select pg_reload_conf()").unwrap();

    let server_tls = |identity: bool| {
        let mut t = "[server_tls]\nmode = \"require\"\n".to_string();
        if identity {
            t.push_str(&format!(
                "cert = {}\nkey = {}\n",
                toml_path(&proxy_cert),
                toml_path(&proxy_key)
            ));
        }
        format!("{t}[routing]\nprimary_wait = \"1s\"\n")
    };
    // Without a certificate: the monitor's logins are refused, the server stays down.
    let proxy = Proxy::start_with(
        &cluster,
        ProxyOptions {
            extra_tables: server_tls(false),
            ..Default::default()
        },
    );
    assert_no_usable_server(&proxy, "connection requires a valid client certificate").await;
    drop(proxy);

    // With one: pools and monitor log in, and the server saw the proxy's certificate.
    let proxy = start_ready_proxy_on(
        &cluster,
        ProxyOptions {
            extra_tables: server_tls(true),
            ..Default::default()
        },
    );
    let client = proxy.connect_app().await;
    let row = client
        .query_one(
            "select ssl, client_dn from pg_stat_ssl where pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));
    assert_eq!(
        row.get::<_, Option<String>>(1).as_deref(),
        Some("/CN=switchyard")
    );
    let monitor = cluster
        .primary()
        .psql(
            "select string_agg(distinct s.client_dn, ',') from pg_stat_ssl s \
             join pg_stat_activity a using (pid) \
             where a.application_name = 'switchyard-monitor'",
        )
        .unwrap();
    assert_eq!(monitor, "/CN=switchyard", "the monitor's certificate");
}

/// A man in the middle between the proxy and a PostgreSQL with `ssl = on`: it answers the
/// proxy's SSLRequest itself, terminates that TLS with its own certificate, opens its own TLS
/// connection to the server (trusting `server_ca`), and passes the bytes on. Returns its
/// address; it stops with the test's runtime.
async fn tls_interceptor(server: String, own: &Pki, server_ca: &Pki) -> String {
    let (cert, key) = own.issue("interceptor", &["127.0.0.1"]);
    let chain = rustls::pki_types::CertificateDer::pem_file_iter(&cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&key).unwrap();
    use rustls::pki_types::pem::PemObject;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap(),
    ));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(server_ca.client_config()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
        while let Ok((mut front, _)) = listener.accept().await {
            let (acceptor, connector, server) =
                (acceptor.clone(), connector.clone(), server.clone());
            tokio::spawn(async move {
                let mut first = [0u8; 8];
                if front.read_exact(&mut first).await.is_err() || first != SSL_REQUEST {
                    return Ok(());
                }
                front.write_all(b"S").await?;
                let mut front = acceptor.accept(front).await?;
                let mut back = tokio::net::TcpStream::connect(&server).await?;
                back.write_all(&SSL_REQUEST).await?;
                if back.read_u8().await? != b'S' {
                    return Ok(());
                }
                let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
                let mut back = connector.connect(name, back).await?;
                tokio::io::copy_bidirectional(&mut front, &mut back).await?;
                Ok::<_, std::io::Error>(())
            });
        }
    });
    addr
}

/// The SCRAM logins over TLS of the pools and of the health probes bind to the server's
/// certificate (SCRAM-SHA-256-PLUS, as libpq does by default): a man in the middle that
/// terminates TLS with its own certificate cannot pass them on, even where `[server_tls]` does
/// not check certificates. With `channel_binding = "disable"` it can, which shows it is the
/// binding that stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_binding_stops_a_man_in_the_middle_of_server_logins() {
    let SslServer {
        cluster, pki, base, ..
    } = ssl_server(|_| Vec::new());
    let interceptor = tls_interceptor(
        cluster.primary().addr(),
        &Pki::new(&base, "interceptor-ca"),
        &pki,
    )
    .await;
    let through = |binding: &str| ProxyOptions {
        backends: Some(vec![("pg0".into(), interceptor.clone())]),
        extra_tables: format!(
            "[server_tls]\nmode = \"require\"\nchannel_binding = \"{binding}\"\n"
        ),
        ..Default::default()
    };

    // The server refuses the probes' logins through the interceptor: the backend is down.
    let proxy = Proxy::start_with(&cluster, through("prefer"));
    assert_no_usable_server(&proxy, "SCRAM channel binding check failed").await;
    drop(proxy);
    // With the health probes logging in as a role the server trusts (no SCRAM, nothing to
    // bind), the backend is up through the interceptor: the pools' own logins are refused.
    let mut trusting = through("prefer");
    trusting
        .extra_tables
        .push_str(&format!("\n[health]\nuser = \"{TRUST_USER}\"\n"));
    let proxy = start_ready_proxy_on(&cluster, trusting);
    let Err(e) = proxy.try_connect(APP_USER, APP_PASSWORD, APP_DB).await else {
        panic!("a login went through a man in the middle of a bound SCRAM exchange");
    };
    let message = e.as_db_error().map(|d| d.message().to_owned());
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("SCRAM channel binding check failed")),
        "{e:?}\n{}",
        proxy.log_tail(20)
    );
    drop(proxy);

    // An interceptor whose certificate's signature algorithm gives no binding hash
    // (Ed25519): the logins are refused all the same, never made unbound.
    let ed = tls_interceptor(
        cluster.primary().addr(),
        &Pki::signing_with(&base, "interceptor-ed", &rcgen::PKCS_ED25519),
        &pki,
    )
    .await;
    let through_ed = |health: &str| ProxyOptions {
        backends: Some(vec![("pg0".into(), ed.clone())]),
        extra_tables: format!("[server_tls]\nmode = \"prefer\"\n{health}"),
        ..Default::default()
    };
    let proxy = Proxy::start_with(&cluster, through_ed(""));
    assert_no_usable_server(&proxy, "SCRAM channel binding check failed").await;
    drop(proxy);
    let proxy = start_ready_proxy_on(
        &cluster,
        through_ed(&format!("[health]\nuser = \"{TRUST_USER}\"\n")),
    );
    let Err(e) = proxy.try_connect(APP_USER, APP_PASSWORD, APP_DB).await else {
        panic!("a login went unbound through a man in the middle without a binding hash");
    };
    assert!(
        e.as_db_error()
            .is_some_and(|d| d.message().contains("cannot be made")),
        "{e:?}"
    );
    assert!(
        proxy.log().contains("no channel-binding hash"),
        "{}",
        proxy.log_tail(20)
    );
    drop(proxy);

    // Without binding, the interceptor reads and passes on everything.
    let proxy = start_ready_proxy_on(&cluster, through("disable"));
    assert!(server_side_ssl(&proxy.connect_app().await).await);
    drop(proxy);

    // Straight to the server, bound: the login works.
    let proxy = start_ready_proxy_on(
        &cluster,
        ProxyOptions {
            extra_tables: "[server_tls]\nmode = \"require\"\n".into(),
            ..Default::default()
        },
    );
    assert!(server_side_ssl(&proxy.connect_app().await).await);
}

/// `channel_binding = "require"`: only logins bound to the server's certificate are used. A
/// SCRAM role over TLS logs in; a role the server asks for an md5 password, or trusts, does
/// not, though the server would let it in; over plain text no health probe logs in, so no
/// server is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_binding_require_uses_only_bound_server_logins() {
    let SslServer { cluster, .. } = ssl_server(|_| Vec::new());
    let proxy = start_ready_proxy_on(
        &cluster,
        ProxyOptions {
            extra_tables: "[server_tls]\nmode = \"require\"\nchannel_binding = \"require\"\n"
                .into(),
            ..Default::default()
        },
    );
    assert!(server_side_ssl(&proxy.connect_app().await).await);
    for (user, password, why) in [
        (
            MD5_USER,
            MD5_PASSWORD,
            "channel binding required, but the server asked for a password",
        ),
        (
            TRUST_USER,
            "",
            "channel binding required, but the server accepted the login without a bound SCRAM exchange",
        ),
    ] {
        let Err(e) = proxy.try_connect(user, password, "postgres").await else {
            panic!("{user} logged in without channel binding");
        };
        let db = e.as_db_error().unwrap_or_else(|| panic!("{user}: {e:?}"));
        assert_eq!(db.code().code(), "08006", "{user}: {db:?}");
        assert!(db.message().contains("channel_binding"), "{user}: {db:?}");
        assert!(
            wait_until(Duration::from_secs(10), || proxy.log().contains(why)),
            "log lacks {why:?}:\n{}",
            proxy.log_tail(20)
        );
    }
    drop(proxy);

    // A server without TLS (the shared cluster), reached in `prefer` mode: plain text, so the
    // probes' logins cannot bind and no server is up.
    let proxy = Proxy::start_with(
        shared_cluster(),
        ProxyOptions {
            extra_tables: "[server_tls]\nmode = \"prefer\"\nchannel_binding = \"require\"\n".into(),
            ..Default::default()
        },
    );
    assert_no_usable_server(&proxy, "server did not use channel binding").await;
    drop(proxy);
}

/// psycopg 3 (libpq's TLS) and asyncpg (its own protocol code on Python's ssl module) run
/// their whole client programs over TLS, against a proxy that refuses plain connections.
#[test]
fn python_drivers_run_over_tls() {
    let files = client_side();
    let proxy = start_ready_proxy(ProxyOptions {
        extra_tables: tls_table(&files.cert, &files.key, "require"),
        ..Default::default()
    });
    let dsn = format!(
        "postgresql://{APP_USER}:{APP_PASSWORD}@127.0.0.1:{}/{APP_DB}?sslmode=require",
        proxy.port()
    );
    for script in ["psycopg_client.py", "asyncpg_client.py"] {
        let mut c = std::process::Command::new(venv_python());
        c.arg(py_script(script))
            .arg(&dsn)
            .env("PYTHONUNBUFFERED", "1");
        let r = run(c, Duration::from_secs(240));
        let last = r.stdout.lines().last().unwrap_or("").trim().to_string();
        assert!(
            r.code == Some(0) && last == "ok",
            "{}\n{}",
            r.describe(&format!("{script} over TLS")),
            proxy.log_tail(20)
        );
    }
}
