//! Hostile and broken clients: garbage instead of a startup packet, 2 GB length headers,
//! truncated messages, unknown message types, silent clients, malformed SCRAM. Each must get a
//! clean error or a disconnect (never a hang), the proxy must keep running with bounded memory,
//! and a client connected before must keep working.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use support::proxy::{Proxy, ProxyOptions};
use support::*;

/// One proxy for the whole file: a 1 s startup timeout, and one server connection per
/// (backend, user, database) so a server connection left in a bad state would be handed to
/// the next client at once.
fn proxy() -> &'static Proxy {
    static P: OnceLock<Proxy> = OnceLock::new();
    P.get_or_init(|| {
        Proxy::start_with(
            shared_cluster(),
            ProxyOptions {
                extra_top: "startup_timeout = \"1s\"\n".into(),
                extra_tables: "[pool]\nsize = 1\n".into(),
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
use support::raw::{login, Frame, Raw, PROTO_3_0};

fn app_params() -> Vec<(&'static str, &'static str)> {
    vec![("user", APP_USER), ("database", APP_DB)]
}

/// Resident memory of a process, in bytes.
/// A proxy of its own with default settings (for tests whose memory use, or memory checks,
/// must not meet the shared proxy's).
async fn own_proxy() -> Proxy {
    own_proxy_with("").await
}

/// [`own_proxy`] with the top-level settings `top`.
async fn own_proxy_with(top: &'static str) -> Proxy {
    let opts = ProxyOptions {
        extra_top: top.into(),
        ..Default::default()
    };
    tokio::task::spawn_blocking(|| Proxy::start_with(shared_cluster(), opts))
        .await
        .unwrap()
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/status: {e}"));
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS line");
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("VmRSS value");
    kb * 1024
}

/// A client connected before the bad input, running queries in the background the whole time
/// (autocommit reads and read-write transactions); `finish` checks it never failed.
struct Witness {
    client: Arc<tokio_postgres::Client>,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

impl Witness {
    async fn start() -> Witness {
        let client = Arc::new(
            within(
                "witness login",
                Duration::from_secs(20),
                proxy().connect_app(),
            )
            .await,
        );
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let task = {
            let (c, stop, ok) = (client.clone(), stop.clone(), ok.clone());
            tokio::spawn(async move {
                let mut i: i32 = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let sql = if i % 3 == 0 {
                        // A read-write transaction: the primary.
                        "BEGIN; SELECT txid_current(); COMMIT"
                    } else {
                        "SELECT 1"
                    };
                    tokio::time::timeout(raw::IO, c.batch_execute(sql))
                        .await
                        .map_err(|_| format!("witness query {i} ({sql}) timed out"))?
                        .map_err(|e| format!("witness query {i} ({sql}) failed: {e}"))?;
                    ok.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Ok(())
            })
        };
        Witness {
            client,
            stop,
            ok,
            task,
        }
    }

    /// Stops the background loop; asserts it never failed and made progress, that the witness
    /// still answers correctly, that new clients get in, and that the proxy still runs.
    async fn finish(self, what: &str) {
        let p = proxy();
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.stop.store(true, Ordering::Relaxed);
        let r = within("witness loop", Duration::from_secs(15), self.task)
            .await
            .unwrap();
        if let Err(e) = r {
            panic!(
                "{what}: a client connected before was disturbed: {e}\nproxy log:\n{}",
                p.log_tail(40)
            );
        }
        assert!(
            self.ok.load(Ordering::Relaxed) >= 2,
            "{what}: the witness made no progress"
        );
        let row = within(
            "witness query",
            raw::IO,
            self.client.query_one("SELECT $1::int + 1", &[&41i32]),
        )
        .await
        .unwrap_or_else(|e| panic!("{what}: witness query failed: {e}"));
        assert_eq!(row.get::<_, i32>(0), 42);
        let mut s = raw::ok(
            within(
                "fresh login",
                Duration::from_secs(20),
                login(&p.addr(), PROTO_3_0, &app_params(), Some(APP_PASSWORD)),
            )
            .await,
            &format!("{what}: a fresh login"),
        );
        let r = s.raw.query_ok("BEGIN; SELECT 'fresh'; COMMIT").await;
        assert_eq!(r.scalar(), "fresh");
        assert!(p.is_running(), "{what}: the proxy exited");
    }
}

/// After bad input, the connection must close within `d`, and anything the proxy said first
/// must be FATAL ErrorResponses. Returns their SQLSTATEs.
async fn closed_with_fatal_only(conn: &mut Raw, d: Duration, what: &str) -> Vec<String> {
    let frames = conn.expect_closed(d, what).await;
    for f in &frames {
        assert!(
            f.is_error() && f.severity() == "FATAL",
            "{what}: unexpected message before the close: {f:?}"
        );
    }
    frames.iter().map(|f| f.code()).collect()
}

/// The connection must get exactly one FATAL with `code`, then close.
async fn fatal_then_closed(conn: &mut Raw, code: &str, what: &str) -> Frame {
    let frames = conn.expect_closed(Duration::from_secs(5), what).await;
    assert!(
        frames.len() == 1 && frames[0].is_error(),
        "{what}: expected one ErrorResponse then a close, got {frames:?}"
    );
    let f = frames.into_iter().next().unwrap();
    assert_eq!(
        (f.severity().as_str(), f.code().as_str()),
        ("FATAL", code),
        "{what}: {f:?}"
    );
    f
}

/// Sends bytes, ignoring errors (the proxy may already have closed the connection).
async fn send_lossy(conn: &mut Raw, b: &[u8]) {
    let _ = conn.send(b).await;
}

/// A raw client logged in as `app` to the primary itself (what PostgreSQL does).
async fn logged_in_directly() -> Raw {
    let addr = shared_cluster().primary().addr();
    raw::ok(
        login(&addr, PROTO_3_0, &app_params(), Some(APP_PASSWORD)).await,
        "direct login",
    )
    .raw
}

/// A logged-in raw client as `app`.
async fn logged_in(what: &str) -> Raw {
    let s = raw::ok(
        login(
            &proxy().addr(),
            PROTO_3_0,
            &app_params(),
            Some(APP_PASSWORD),
        )
        .await,
        what,
    );
    s.raw
}

fn header(tag: u8, len: u32) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&len.to_be_bytes());
    v
}

/// Deterministic junk.
fn junk(n: usize, mut seed: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as u8
        })
        .collect()
}

#[derive(Clone, Copy, Debug)]
enum Expect {
    /// Closed; if anything is said first, only FATALs.
    Close,
    /// Exactly one FATAL with this SQLSTATE, then closed.
    Fatal(&'static str),
}

async fn run_case(addr: String, name: &'static str, bytes: Vec<u8>, expect: Expect) {
    let mut conn = Raw::connect(&addr).await;
    send_lossy(&mut conn, &bytes).await;
    match expect {
        Expect::Close => {
            let codes = closed_with_fatal_only(&mut conn, Duration::from_secs(5), name).await;
            eprintln!("{name}: closed after {codes:?}");
        }
        Expect::Fatal(code) => {
            fatal_then_closed(&mut conn, code, name).await;
        }
    }
}

// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_instead_of_a_startup_packet() {
    let p = proxy();
    let witness = Witness::start().await;
    let mut unterminated = raw::startup_packet(PROTO_3_0, &app_params());
    // Drop the final terminator but keep the length right.
    unterminated.pop();
    let n = unterminated.len() as i32;
    unterminated[..4].copy_from_slice(&n.to_be_bytes());
    let mut ssl_then_startup = raw::ssl_request();
    ssl_then_startup.extend_from_slice(&raw::startup_packet(PROTO_3_0, &app_params()));
    let mut non_utf8 = raw::startup_packet(PROTO_3_0, &[("user", "app"), ("database", "x")]);
    let at = non_utf8.len() - 3;
    non_utf8[at] = 0xff;
    let mut bad_version = 8i32.to_be_bytes().to_vec();
    bad_version.extend_from_slice(&0x1234_5678i32.to_be_bytes());

    let cases: Vec<(&'static str, Vec<u8>, Expect)> = vec![
        (
            "HTTP request",
            b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
            Expect::Close,
        ),
        (
            "TLS ClientHello (direct SSL)",
            [
                &[0x16u8, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc][..],
                &junk(508, 1),
            ]
            .concat(),
            Expect::Close,
        ),
        ("length 3", vec![0, 0, 0, 3], Expect::Close),
        ("length 0", vec![0, 0, 0, 0, 1, 2, 3, 4], Expect::Close),
        ("length 7", vec![0, 0, 0, 7, 0, 3, 0], Expect::Close),
        (
            "negative length",
            vec![0xff, 0xff, 0xff, 0xf0, 0, 3, 0, 0],
            Expect::Close,
        ),
        ("random bytes", junk(4096, 7), Expect::Close),
        ("protocol 4660.22136", bad_version, Expect::Fatal("0A000")),
        (
            "unterminated parameters",
            unterminated,
            Expect::Fatal("08P01"),
        ),
        ("non-UTF-8 parameter", non_utf8, Expect::Fatal("08P01")),
        (
            "SSLRequest with pipelined plaintext",
            ssl_then_startup,
            Expect::Fatal("08P01"),
        ),
    ];
    let mut set = tokio::task::JoinSet::new();
    for (name, bytes, expect) in cases {
        set.spawn(run_case(p.addr(), name, bytes, expect));
    }
    while let Some(r) = within("garbage cases", Duration::from_secs(30), set.join_next()).await {
        r.unwrap();
    }
    witness.finish("garbage instead of a startup packet").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gigabyte_lengths_are_refused_without_allocating() {
    let p = proxy();
    let witness = Witness::start().await;
    let pid = p.pid();
    let before = rss_bytes(pid);

    // As a startup packet length: closed (PostgreSQL closes silently too).
    for first in [
        [0x7fu8, 0xff, 0xff, 0xff],
        [0x80, 0, 0, 0],
        [0, 0x98, 0x96, 0x81],
    ] {
        let mut conn = Raw::connect(&p.addr()).await;
        send_lossy(&mut conn, &first).await;
        send_lossy(&mut conn, &junk(64 << 10, 3)).await;
        closed_with_fatal_only(&mut conn, Duration::from_secs(5), "huge startup length").await;
    }

    // As a regular message after login: FATAL 08P01, then closed.
    let mut set = tokio::task::JoinSet::new();
    for i in 0..8u64 {
        set.spawn(async move {
            let mut conn = logged_in("login before the huge header").await;
            let mut msg = header(b'Q', 0x7fff_ffff);
            msg.extend_from_slice(b"SELECT 1;");
            msg.extend_from_slice(&junk(64 << 10, i));
            send_lossy(&mut conn, &msg).await;
            fatal_then_closed(&mut conn, "08P01", "Q with length 0x7fffffff").await;
        });
    }
    while let Some(r) = within("huge headers", Duration::from_secs(30), set.join_next()).await {
        r.unwrap();
    }
    for (name, msg, code) in [
        ("Q with length -1", header(b'Q', 0xffff_ffff), "08P01"),
        ("Q with length 3", header(b'Q', 3), "08P01"),
        ("Q with length 0", header(b'Q', 0), "08P01"),
        (
            "P with length 0x7fffffff",
            header(b'P', 0x7fff_ffff),
            "08P01",
        ),
        (
            "B with length 0x7fffffff",
            header(b'B', 0x7fff_ffff),
            "08P01",
        ),
        (
            "d with length 0x7fffffff",
            header(b'd', 0x7fff_ffff),
            "08P01",
        ),
    ] {
        let mut conn = logged_in(name).await;
        send_lossy(&mut conn, &msg).await;
        send_lossy(&mut conn, &junk(4096, 9)).await;
        fatal_then_closed(&mut conn, code, name).await;
    }
    // A Parse too big to buffer (over max_message_size, under the protocol limit): refused.
    let mut conn = logged_in("P of 256 MB").await;
    send_lossy(&mut conn, &header(b'P', 256 << 20)).await;
    send_lossy(&mut conn, &junk(64 << 10, 11)).await;
    let frames = conn
        .expect_closed(Duration::from_secs(5), "P of 256 MB")
        .await;
    assert!(
        frames.len() == 1
            && frames[0].severity() == "FATAL"
            && ["54000", "08P01"].contains(&frames[0].code().as_str()),
        "P of 256 MB: expected one FATAL (54000 or 08P01) then a close, got {frames:?}"
    );

    // As a SASL response length during SCRAM.
    let mut conn = Raw::connect(&p.addr()).await;
    conn.send(&raw::startup_packet(PROTO_3_0, &app_params()))
        .await
        .unwrap();
    let f = conn.frame().await;
    assert_eq!(
        (f.tag, &f.body[..4]),
        (b'R', &10i32.to_be_bytes()[..]),
        "{f:?}"
    );
    send_lossy(&mut conn, &header(b'p', 0x7fff_ffff)).await;
    send_lossy(&mut conn, &junk(64 << 10, 5)).await;
    fatal_then_closed(
        &mut conn,
        "08P01",
        "SASLInitialResponse with length 0x7fffffff",
    )
    .await;

    let after = rss_bytes(pid);
    eprintln!(
        "proxy VmRSS before {} kB, after {} kB",
        before / 1024,
        after / 1024
    );
    assert!(
        after < before + (50 << 20),
        "proxy memory grew from {} MB to {} MB after 2 GB length headers",
        before >> 20,
        after >> 20
    );
    witness.finish("2 GB lengths").await;
}

/// A Bind over `max_message_size` streams once its names are known (only the statement name
/// is rewritten); one whose names have not ended by then is refused, not buffered on up to the
/// protocol's 1 GB limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bind_whose_names_never_end_is_refused() {
    // A proxy of its own: this one buffers up to max_message_size, which the memory checks of
    // the tests sharing the other one would see.
    let p = own_proxy().await;
    let mut conn = raw::ok(
        login(&p.addr(), PROTO_3_0, &app_params(), Some(APP_PASSWORD)).await,
        "endless Bind names",
    )
    .raw;
    send_lossy(&mut conn, &header(b'B', 256 << 20)).await;
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..72 {
        send_lossy(&mut conn, &chunk).await;
    }
    // (The FATAL may be lost to the reset that closing with unread bytes causes.)
    let frames = conn
        .expect_closed(Duration::from_secs(10), "a Bind whose names never end")
        .await;
    assert!(
        frames.len() <= 1
            && frames
                .iter()
                .all(|f| f.severity() == "FATAL" && f.code() == "54000"),
        "expected at most one FATAL 54000, then a close: {frames:?}"
    );
}

/// A client that asks for a 200 MB result and doesn't read it: the proxy must not buffer the
/// result (backpressure to the server), and must clean up when the client goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_does_not_make_the_proxy_buffer() {
    let p = proxy();
    let witness = Witness::start().await;
    let pid = p.pid();
    let before = rss_bytes(pid);
    // Another user: its own pool, so the stalled server connection blocks nobody else.
    let mut s = raw::ok(
        login(
            &p.addr(),
            PROTO_3_0,
            &[("user", OTHER_USER), ("database", APP_DB)],
            Some(OTHER_PASSWORD),
        )
        .await,
        "slow reader login",
    );
    let mut q = bytes::BytesMut::new();
    postgres_protocol::message::frontend::query(
        "SELECT repeat('x', 1048576) FROM generate_series(1, 200)",
        &mut q,
    )
    .unwrap();
    s.raw.send(&q).await.unwrap();
    let mut peak = 0;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(rss_bytes(pid));
    }
    eprintln!(
        "proxy VmRSS before {} kB, peak while the client did not read {} kB",
        before / 1024,
        peak / 1024
    );
    assert!(
        peak < before + (50 << 20),
        "the proxy buffered a result the client did not read: VmRSS {} MB -> {} MB",
        before >> 20,
        peak >> 20
    );
    // The data is all there when the client does read (a few rows of it).
    let mut rows = 0;
    while rows < 5 {
        match s.raw.next(raw::IO).await {
            raw::Next::Frame(f) if f.tag == b'D' => {
                assert_eq!(f.data_row()[0].as_ref().map(|v| v.len()), Some(1 << 20));
                rows += 1;
            }
            raw::Next::Frame(f) if f.tag == b'T' => {}
            other => panic!("slow reader: expected rows, got {other:?}"),
        }
    }
    drop(s);
    // Its server connection is not handed out mid-result: the same user works again.
    let mut s2 = raw::ok(
        login(
            &p.addr(),
            PROTO_3_0,
            &[("user", OTHER_USER), ("database", APP_DB)],
            Some(OTHER_PASSWORD),
        )
        .await,
        "login after the slow reader left",
    );
    for _ in 0..3 {
        let r = s2
            .raw
            .query_ok("SELECT 'after', count(*) FROM generate_series(1, 3)")
            .await;
        assert_eq!(r.rows.len(), 1);
        assert_eq!(r.scalar(), "after");
        let r = s2.raw.query_ok("BEGIN; SELECT 'tx'; COMMIT").await;
        assert_eq!(r.scalar(), "tx");
    }
    witness.finish("slow reader").await;
}

/// A query larger than `max_message_size` (64 MB) streams through to the server without the
/// proxy holding it in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_larger_than_max_message_size_streams_through() {
    let p = proxy();
    let witness = Witness::start().await;
    let pid = p.pid();
    let mut s = raw::ok(
        login(
            &p.addr(),
            PROTO_3_0,
            &[("user", OTHER_USER), ("database", APP_DB)],
            Some(OTHER_PASSWORD),
        )
        .await,
        "big query login",
    );
    let before = rss_bytes(pid);
    let n: usize = 80 << 20;
    let head = b"SELECT length('";
    let tail = b"')\0";
    let mut msg = header(b'Q', (4 + head.len() + n + tail.len()) as u32);
    msg.extend_from_slice(head);
    let sampler = {
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (peak2, stop2) = (peak.clone(), stop.clone());
        let h = tokio::spawn(async move {
            while !stop2.load(Ordering::Relaxed) {
                peak2.fetch_max(rss_bytes(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        (peak, stop, h)
    };
    s.raw.send(&msg).await.unwrap();
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..(n >> 20) {
        within(
            "sending the big query",
            Duration::from_secs(30),
            s.raw.send(&chunk),
        )
        .await
        .unwrap();
    }
    s.raw.send(tail).await.unwrap();
    let r = within(
        "big query result",
        Duration::from_secs(60),
        s.raw.read_result("big query"),
    )
    .await;
    sampler.1.store(true, Ordering::Relaxed);
    sampler.2.await.unwrap();
    assert!(r.error.is_none(), "{:?}", r.error);
    assert_eq!(r.scalar(), n.to_string());
    let peak = sampler.0.load(Ordering::Relaxed);
    eprintln!(
        "proxy VmRSS before {} kB, peak while streaming an 80 MB query {} kB",
        before / 1024,
        peak / 1024
    );
    assert!(
        peak < before + (50 << 20),
        "the proxy held an 80 MB query in memory: VmRSS {} MB -> {} MB",
        before >> 20,
        peak >> 20
    );
    let r = s.raw.query_ok("SELECT 'still fine'").await;
    assert_eq!(r.scalar(), "still fine");
    witness.finish("80 MB query").await;
}

/// Truncated messages followed by a close, in every phase; the server connection a truncated
/// request was being streamed to must not be handed to anyone else, and a transaction the
/// client left open must not keep its locks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_messages_then_close() {
    let p = proxy();
    let witness = Witness::start().await;
    let addr = p.addr();

    // Startup packet cut short.
    for (declared, sent) in [(200usize, 50usize), (9999, 9998), (8, 4)] {
        let mut conn = Raw::connect(&addr).await;
        let mut b = (declared as i32).to_be_bytes().to_vec();
        b.extend_from_slice(&PROTO_3_0.to_be_bytes());
        b.extend_from_slice(&junk(sent.saturating_sub(8), 1));
        b.truncate(sent);
        send_lossy(&mut conn, &b).await;
        drop(conn);
    }
    // SASLInitialResponse cut short.
    {
        let mut conn = Raw::connect(&addr).await;
        conn.send(&raw::startup_packet(PROTO_3_0, &app_params()))
            .await
            .unwrap();
        let f = conn.frame().await;
        assert_eq!(f.tag, b'R');
        let mut b = header(b'p', 100);
        b.extend_from_slice(b"SCRAM-");
        send_lossy(&mut conn, &b).await;
        drop(conn);
    }
    // A query cut short after login.
    {
        let mut conn = logged_in("truncated Q").await;
        let mut b = header(b'Q', 100);
        b.extend_from_slice(b"SELECT 1 ");
        send_lossy(&mut conn, &b).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(conn);
    }
    // A query too large to buffer, streamed to a server, cut short: that server connection
    // is mid-message and must be thrown away.
    for _ in 0..2 {
        let mut conn = logged_in("truncated streamed Q").await;
        let mut b = header(b'Q', 100 << 20);
        b.extend_from_slice(b"SELECT '");
        b.extend_from_slice(&vec![b'x'; 256 << 10]);
        send_lossy(&mut conn, &b).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(conn);
        // With one server connection per backend, a reused half-fed connection would make
        // these hang or fail.
        let w = &witness.client;
        for i in 0..3 {
            within(
                "transaction after a truncated streamed query",
                raw::IO,
                w.batch_execute("BEGIN; SELECT txid_current(); COMMIT"),
            )
            .await
            .unwrap_or_else(|e| panic!("transaction {i} after a truncated streamed query: {e}"));
        }
    }
    // The same inside a transaction that holds a lock.
    witness
        .client
        .batch_execute("CREATE TABLE IF NOT EXISTS bad_input_locked (id int)")
        .await
        .unwrap();
    {
        let mut conn = logged_in("truncated Q in a transaction").await;
        conn.query_ok("BEGIN").await;
        conn.query_ok("LOCK TABLE bad_input_locked IN ACCESS EXCLUSIVE MODE")
            .await;
        let mut b = header(b'Q', 100);
        b.extend_from_slice(b"SELECT 1 ");
        send_lossy(&mut conn, &b).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(conn);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = within(
            "lock after the client left",
            raw::IO,
            witness.client.batch_execute(
                "BEGIN; LOCK TABLE bad_input_locked IN ACCESS EXCLUSIVE MODE NOWAIT; COMMIT",
            ),
        )
        .await;
        match r {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => {
                eprintln!("lock still held: {e}");
                let _ = witness.client.batch_execute("ROLLBACK").await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!(
                "the transaction of a client that left mid-message still holds its lock: {e}"
            ),
        }
    }
    witness.finish("truncated messages").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_message_types_after_login() {
    let witness = Witness::start().await;
    for (name, msg) in [
        ("type 'y'", header(b'y', 4)),
        ("type 0", header(0, 4)),
        ("backend type 'Z'", [&header(b'Z', 5)[..], b"I"].concat()),
        (
            "password message after login",
            [&header(b'p', 8)[..], b"pass"].concat(),
        ),
    ] {
        let mut conn = logged_in(name).await;
        // A normal query first, so the client is past the first request.
        let r = conn.query_ok("SELECT 1").await;
        assert_eq!(r.scalar(), "1");
        send_lossy(&mut conn, &msg).await;
        fatal_then_closed(&mut conn, "08P01", name).await;
    }
    // Also in the middle of a transaction: closed, and its transaction doesn't linger.
    let mut conn = logged_in("unknown type in a transaction").await;
    conn.query_ok("BEGIN").await;
    conn.query_ok("SELECT txid_current()").await;
    send_lossy(&mut conn, &header(b'y', 4)).await;
    fatal_then_closed(&mut conn, "08P01", "unknown type in a transaction").await;
    witness.finish("unknown message types").await;
}

/// PostgreSQL rejects an unknown message type as soon as it reads the type byte, without
/// waiting for the body its length announces: so must the proxy (else a confused client, e.g.
/// one that sends a second startup packet, hangs instead of getting an error).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_message_type_is_refused_before_its_body_arrives() {
    let witness = Witness::start().await;
    for (name, msg) in [
        (
            "startup packet after login",
            raw::startup_packet(PROTO_3_0, &app_params()),
        ),
        ("type 'y' announcing 1 MB", header(b'y', 1 << 20)),
    ] {
        // What PostgreSQL itself does.
        let mut direct = logged_in_directly().await;
        send_lossy(&mut direct, &msg).await;
        fatal_then_closed(
            &mut direct,
            "08P01",
            &format!("{name}, direct to PostgreSQL"),
        )
        .await;

        let mut conn = logged_in(name).await;
        let r = conn.query_ok("SELECT 1").await;
        assert_eq!(r.scalar(), "1");
        send_lossy(&mut conn, &msg).await;
        fatal_then_closed(&mut conn, "08P01", name).await;
    }
    witness
        .finish("unknown message type with a long body")
        .await;
}

/// A client that connects and says nothing (or stops half-way through startup or
/// authentication) is closed with an error once `startup_timeout` (1 s) passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_clients_are_closed_after_the_startup_timeout() {
    let p = proxy();
    let witness = Witness::start().await;
    let addr = p.addr();
    let mut set = tokio::task::JoinSet::new();
    for phase in [
        "nothing",
        "half a startup packet",
        "SSLRequest only",
        "startup, no password",
    ] {
        let addr = addr.clone();
        set.spawn(async move {
            let mut conn = Raw::connect(&addr).await;
            let t = Instant::now();
            match phase {
                "nothing" => {}
                "half a startup packet" => {
                    let s = raw::startup_packet(PROTO_3_0, &app_params());
                    conn.send(&s[..s.len() / 2]).await.unwrap();
                }
                "SSLRequest only" => {
                    conn.send(&raw::ssl_request()).await.unwrap();
                    assert_eq!(conn.byte(raw::IO).await, Some(b'N'));
                }
                _ => {
                    conn.send(&raw::startup_packet(PROTO_3_0, &app_params()))
                        .await
                        .unwrap();
                    let f = conn.frame().await;
                    assert_eq!(f.tag, b'R', "{f:?}");
                }
            }
            // The 1 s startup_timeout is the contract: closed after it (not before), and
            // within 15 s (generous on a loaded machine).
            let frames = conn.expect_closed(Duration::from_secs(20), phase).await;
            let took = t.elapsed();
            assert!(
                took >= Duration::from_millis(700),
                "{phase}: closed after {took:?}, before the 1 s startup timeout"
            );
            assert!(
                took <= Duration::from_secs(15),
                "{phase}: closed only after {took:?}, with a 1 s startup timeout"
            );
            assert!(
                frames.len() == 1 && frames[0].is_error(),
                "{phase}: expected one ErrorResponse before the close, got {frames:?}"
            );
            assert_eq!(
                (frames[0].severity().as_str(), frames[0].code().as_str()),
                ("FATAL", "08006"),
                "{phase}: {:?}",
                frames[0]
            );
        });
    }
    while let Some(r) = within("silent clients", Duration::from_secs(20), set.join_next()).await {
        r.unwrap();
    }
    witness.finish("silent clients").await;
}

// ------------------------------------------------------------------------------------------
// Malformed SCRAM
// ------------------------------------------------------------------------------------------

/// Connects, sends a startup packet for `user` and reads the AuthenticationSASL request.
async fn scram_start(user: &str) -> Raw {
    let mut conn = Raw::connect(&proxy().addr()).await;
    conn.send(&raw::startup_packet(
        PROTO_3_0,
        &[("user", user), ("database", APP_DB)],
    ))
    .await
    .unwrap();
    let f = conn.frame().await;
    assert!(
        f.tag == b'R' && f.body[..4] == 10i32.to_be_bytes(),
        "{user}: expected AuthenticationSASL, got {f:?}"
    );
    conn
}

/// A SASLInitialResponse with the given mechanism and data (None: length -1).
fn sasl_initial(mechanism: &str, data: Option<&[u8]>) -> Vec<u8> {
    let mut body = mechanism.as_bytes().to_vec();
    body.push(0);
    match data {
        None => body.extend_from_slice(&(-1i32).to_be_bytes()),
        Some(d) => {
            body.extend_from_slice(&(d.len() as i32).to_be_bytes());
            body.extend_from_slice(d);
        }
    }
    let mut m = header(b'p', body.len() as u32 + 4);
    m.extend_from_slice(&body);
    m
}

fn sasl_response(data: &[u8]) -> Vec<u8> {
    let mut m = header(b'p', data.len() as u32 + 4);
    m.extend_from_slice(data);
    m
}

/// Runs a correct client-first with `password`; returns the connection and the client-final
/// message the client would send.
async fn scram_to_final(user: &str, password: &str) -> (Raw, String) {
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
    let mut conn = scram_start(user).await;
    let mut s = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
    conn.send(&sasl_initial("SCRAM-SHA-256", Some(s.message())))
        .await
        .unwrap();
    let f = conn.frame().await;
    assert!(
        f.tag == b'R' && f.body[..4] == 11i32.to_be_bytes(),
        "{user}: expected AuthenticationSASLContinue, got {f:?}"
    );
    s.update(&f.body[4..]).expect("server-first-message");
    let fin = String::from_utf8(s.message().to_vec()).unwrap();
    (conn, fin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_scram_exchanges_are_refused_cleanly() {
    let witness = Witness::start().await;
    let outcomes: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut set = tokio::task::JoinSet::new();

    // Broken client-first messages, for a real user and an unknown one alike.
    let firsts: Vec<(&'static str, Vec<u8>)> = vec![
        (
            "garbage client-first",
            sasl_initial("SCRAM-SHA-256", Some(b"garbage")),
        ),
        (
            "mechanism not offered",
            sasl_initial("SCRAM-SHA-1", Some(b"n,,n=,r=abcdefghijklmnop")),
        ),
        (
            "channel binding without TLS",
            sasl_initial(
                "SCRAM-SHA-256",
                Some(b"p=tls-server-end-point,,n=,r=abcdefghijklmnop"),
            ),
        ),
        // Not supported, as PostgreSQL answers it (0A000).
        (
            "authorization identity",
            sasl_initial("SCRAM-SHA-256", Some(b"n,a=postgres,n=,r=abcdefghijklmnop")),
        ),
        (
            "mandatory extension",
            sasl_initial("SCRAM-SHA-256", Some(b"n,,m=ext,n=,r=abcdefghijklmnop")),
        ),
        // Challenged with an empty SASLContinue first, as PostgreSQL does.
        (
            "no data (length -1), then garbage",
            [
                sasl_initial("SCRAM-SHA-256", None),
                sasl_response(b"garbage"),
            ]
            .concat(),
        ),
        (
            "no data (length -1), then nothing",
            [sasl_initial("SCRAM-SHA-256", None), sasl_response(b"")].concat(),
        ),
        ("empty data", sasl_initial("SCRAM-SHA-256", Some(b""))),
        (
            "missing nonce",
            sasl_initial("SCRAM-SHA-256", Some(b"n,,n=")),
        ),
        ("data length beyond the message", {
            let mut m = header(b'p', 4 + 14 + 4 + 5);
            m.extend_from_slice(b"SCRAM-SHA-256\0");
            m.extend_from_slice(&100i32.to_be_bytes());
            m.extend_from_slice(b"n,,n=");
            m
        }),
        (
            "mechanism not NUL-terminated",
            [&header(b'p', 4 + 5)[..], b"SCRAM"].concat(),
        ),
        ("a query instead of SASLInitialResponse", {
            let mut m = header(b'Q', 4 + 9);
            m.extend_from_slice(b"SELECT 1\0");
            m
        }),
    ];
    for user in [APP_USER, "no_such_scram_user"] {
        for (name, msg) in firsts.clone() {
            let outcomes = outcomes.clone();
            set.spawn(async move {
                let what = format!("{name} ({user})");
                let mut conn = scram_start(user).await;
                send_lossy(&mut conn, &msg).await;
                if name.starts_with("no data") {
                    let c = conn.frame().await;
                    assert_eq!((c.tag, &c.body[..]), (b'R', &[0, 0, 0, 11][..]), "{what}");
                }
                let code = match name {
                    "authorization identity" | "mandatory extension" => "0A000",
                    _ => "08P01",
                };
                let f = fatal_then_closed(&mut conn, code, &what).await;
                outcomes.lock().unwrap().push(format!("{what}: {f:?}"));
            });
        }
    }

    // Broken client-final messages.
    type Mangle = fn(&str) -> Vec<u8>;
    let finals: Vec<(
        &'static str,
        &'static str,
        &'static str,
        Mangle,
        &'static str,
    )> = vec![
        (
            "wrong proof",
            APP_USER,
            "wrong-password",
            |m| sasl_response(m.as_bytes()),
            "28P01",
        ),
        (
            "wrong proof, unknown user",
            "no_such_scram_user",
            "whatever",
            |m| sasl_response(m.as_bytes()),
            "28P01",
        ),
        (
            "tampered nonce",
            APP_USER,
            APP_PASSWORD,
            |m| {
                let (before, after) = m.split_once(",r=").unwrap();
                let (nonce, rest) = after.split_once(',').unwrap();
                let mut n = nonce.to_string();
                n.replace_range(n.len() - 2.., "AA");
                sasl_response(format!("{before},r={n},{rest}").as_bytes())
            },
            "08P01",
        ),
        (
            "proof of the wrong length",
            APP_USER,
            APP_PASSWORD,
            |m| {
                let (before, _) = m.split_once(",p=").unwrap();
                sasl_response(format!("{before},p=AAAA").as_bytes())
            },
            "08P01",
        ),
        (
            "proof not base64",
            APP_USER,
            APP_PASSWORD,
            |m| {
                let (before, _) = m.split_once(",p=").unwrap();
                sasl_response(format!("{before},p=!!!!not*base64!!!!").as_bytes())
            },
            "08P01",
        ),
        (
            "wrong channel-binding echo",
            APP_USER,
            APP_PASSWORD,
            |m| sasl_response(m.replacen("c=biws", "c=eSws", 1).as_bytes()),
            "08P01",
        ),
        (
            "garbage client-final",
            APP_USER,
            APP_PASSWORD,
            |_| sasl_response(b"hello"),
            "08P01",
        ),
        (
            "empty client-final",
            APP_USER,
            APP_PASSWORD,
            |_| sasl_response(b""),
            "08P01",
        ),
        (
            "a query instead of SASLResponse",
            APP_USER,
            APP_PASSWORD,
            |_| {
                let mut m = header(b'Q', 4 + 9);
                m.extend_from_slice(b"SELECT 1\0");
                m
            },
            "08P01",
        ),
    ];
    for (name, user, password, mangle, code) in finals {
        let outcomes = outcomes.clone();
        set.spawn(async move {
            let (mut conn, fin) = scram_to_final(user, password).await;
            send_lossy(&mut conn, &mangle(&fin)).await;
            let f = fatal_then_closed(&mut conn, code, name).await;
            if code == "28P01" {
                assert!(f.message().contains(user), "{name}: {f:?}");
            }
            outcomes.lock().unwrap().push(format!("{name}: {f:?}"));
        });
    }
    while let Some(r) = within("SCRAM cases", Duration::from_secs(60), set.join_next()).await {
        r.unwrap();
    }
    for o in outcomes.lock().unwrap().iter() {
        eprintln!("{o}");
    }
    // The correct exchange still works.
    let (mut conn, fin) = scram_to_final(APP_USER, APP_PASSWORD).await;
    conn.send(&sasl_response(fin.as_bytes())).await.unwrap();
    let f = conn.frame().await;
    assert!(
        f.tag == b'R' && f.body[..4] == 12i32.to_be_bytes(),
        "expected AuthenticationSASLFinal, got {f:?}"
    );
    let f = conn.frame().await;
    assert!(
        f.tag == b'R' && f.body[..4] == 0i32.to_be_bytes(),
        "expected AuthenticationOk, got {f:?}"
    );
    witness.finish("malformed SCRAM").await;
}

/// A client that pipelines requests the proxy answers itself and reads none of the answers:
/// the proxy stops reading it (as PostgreSQL does) instead of buffering the answers, and the
/// answers are all there, in order, when the client reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_local_answers_do_not_make_the_proxy_buffer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A proxy of its own (its memory is measured).
    let p = own_proxy().await;
    let pid = p.pid();
    let conn = raw::ok(
        login(&p.addr(), PROTO_3_0, &app_params(), Some(APP_PASSWORD)).await,
        "unread local answers",
    )
    .raw;
    assert!(conn.buf.is_empty());
    let before = rss_bytes(pid);
    let (mut rd, mut wr) = conn.s.into_split();
    // 1.5 M queries (54 MB) answered by the proxy itself: 22 MB of answers.
    const PER_CHUNK: usize = 10_000;
    const CHUNKS: usize = 150;
    let writer = tokio::spawn(async move {
        let mut chunk = bytes::BytesMut::new();
        for _ in 0..PER_CHUNK {
            postgres_protocol::message::frontend::query(
                "SET switchyard.route = primary",
                &mut chunk,
            )
            .unwrap();
        }
        for _ in 0..CHUNKS {
            wr.write_all(&chunk).await?;
        }
        Ok::<_, std::io::Error>(wr)
    });
    let mut peak = 0;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(rss_bytes(pid));
        if writer.is_finished() {
            break;
        }
    }
    eprintln!(
        "proxy VmRSS before {} kB, peak while the client did not read {} kB",
        before / 1024,
        peak / 1024
    );
    assert!(
        peak < before + (12 << 20),
        "the proxy buffered answers the client did not read: VmRSS {} MB -> {} MB",
        before >> 20,
        peak >> 20
    );
    // Every answer arrives: CommandComplete "SET", ReadyForQuery "I", 1.5 M times.
    let want = PER_CHUNK * CHUNKS;
    let mut buf = bytes::BytesMut::with_capacity(1 << 20);
    let (mut complete, mut ready) = (0usize, 0usize);
    let deadline = Instant::now() + Duration::from_secs(120);
    while ready < want {
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, rd.read_buf(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{ready} of {want} answers after 120 s"))
            .expect("read");
        assert!(n > 0, "the proxy closed after {ready} of {want} answers");
        while buf.len() >= 5 {
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if buf.len() < len + 1 {
                break;
            }
            let m = buf.split_to(len + 1);
            match (m[0], &m[5..]) {
                (b'C', b"SET\0") if complete == ready => complete += 1,
                (b'Z', b"I") if complete == ready + 1 => ready += 1,
                (t, body) => panic!(
                    "answer {ready}: unexpected {:?} {:?}",
                    t as char,
                    String::from_utf8_lossy(body)
                ),
            }
        }
    }
    writer.await.unwrap().expect("writer");
}

/// A session ended while a row is being streamed to it (here: the shutdown's grace period
/// runs out) is closed between two messages or not told at all: a FATAL written after part of
/// a row would be read as the rest of its value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ended_mid_row_is_closed_without_a_fatal_inside_the_row() {
    let p = own_proxy_with("shutdown_timeout = \"1s\"\n").await;
    let mut s = raw::ok(
        login(&p.addr(), PROTO_3_0, &app_params(), Some(APP_PASSWORD)).await,
        "login",
    )
    .raw;
    let mut q = bytes::BytesMut::new();
    postgres_protocol::message::frontend::query("SELECT repeat('x', 100000000)", &mut q).unwrap();
    s.send(&q).await.unwrap();
    // The row header, then a slow reader: 64 kB every 10 ms.
    let mut got = Vec::new();
    let mut chunk = vec![0u8; 65536];
    let mut signalled = false;
    let started = Instant::now();
    loop {
        use tokio::io::AsyncReadExt;
        let n = match tokio::time::timeout(Duration::from_secs(20), s.s.read(&mut chunk)).await {
            Ok(Ok(n)) => n,
            Ok(Err(_)) => 0,
            Err(_) => panic!("the session neither sent nor closed for 20 s"),
        };
        if n == 0 {
            break;
        }
        got.extend_from_slice(&chunk[..n]);
        if !signalled && got.len() > 1 << 20 {
            // Mid-row: the grace period ends 1 s from now, with the row far from sent.
            p.signal(libc::SIGTERM);
            signalled = true;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "still reading after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(signalled, "the result ended before the row was under way");
    // T, then D: everything after the row's header up to the end is the value's 'x's.
    let t_len = u32::from_be_bytes(got[1..5].try_into().unwrap()) as usize;
    let d = &got[1 + t_len..];
    assert_eq!(d[0], b'D', "expected the row after the row description");
    let value = &d[1 + 4 + 2 + 4..];
    assert!(
        value.len() < 100_000_000,
        "the whole row was sent: the session was not ended mid-row"
    );
    let bad = value.iter().position(|&b| b != b'x');
    assert_eq!(
        bad,
        None,
        "bytes other than the value inside the row, from offset {:?}: {:?}",
        bad,
        bad.map(|i| String::from_utf8_lossy(&value[i..(i + 80).min(value.len())]).into_owned())
    );
}

/// Close, Describe, Execute, Flush, Sync and Terminate longer than PostgreSQL reads them (a
/// body over 10,000 bytes) end the session at their header, as they end it directly; and a
/// message that is not streamed through is held to `max_message_size` whether it arrives whole
/// or in pieces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_lengths_are_checked_at_their_header() {
    let witness = Witness::start().await;
    for t in [b'C', b'D', b'E', b'H', b'S', b'X'] {
        let name = format!("{:?} announcing 20,000 bytes", t as char);
        let mut direct = logged_in_directly().await;
        send_lossy(&mut direct, &header(t, 20_004)).await;
        direct
            .expect_closed(Duration::from_secs(5), &format!("{name}, direct"))
            .await;
        let mut conn = logged_in(&name).await;
        send_lossy(&mut conn, &header(t, 20_004)).await;
        fatal_then_closed(&mut conn, "08P01", &name).await;
    }
    witness
        .finish("short messages announcing long bodies")
        .await;

    let p = own_proxy_with("max_message_size = \"16kB\"\n").await;
    let mut parse = bytes::BytesMut::new();
    let sql = format!("SELECT '{}'", "x".repeat(20_000));
    postgres_protocol::message::frontend::parse("", &sql, [], &mut parse).unwrap();
    for pieces in [false, true] {
        let what = if pieces { "in two pieces" } else { "whole" };
        let mut conn = raw::ok(
            login(&p.addr(), PROTO_3_0, &app_params(), Some(APP_PASSWORD)).await,
            "login",
        )
        .raw;
        if pieces {
            send_lossy(&mut conn, &parse[..100]).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            send_lossy(&mut conn, &parse[100..]).await;
        } else {
            send_lossy(&mut conn, &parse).await;
        }
        fatal_then_closed(
            &mut conn,
            "54000",
            &format!("a 20 kB Parse {what}, max_message_size 16 kB"),
        )
        .await;
    }
}

/// A connection that once received a large message does not keep a buffer of its size: eight
/// idle clients that each sent a 40 MB query hold no 40 MB each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffers_grown_for_a_large_message_are_given_back() {
    let p = own_proxy().await;
    let pid = p.pid();
    let sql = format!("SELECT length('{}')", "x".repeat(40 << 20));
    let mut q = bytes::BytesMut::new();
    postgres_protocol::message::frontend::query(&sql, &mut q).unwrap();
    drop(sql);
    let mut idle = Vec::new();
    let before = rss_bytes(pid);
    for i in 0..8 {
        let mut s = raw::ok(
            login(&p.addr(), PROTO_3_0, &app_params(), Some(APP_PASSWORD)).await,
            "login",
        )
        .raw;
        s.send(&q).await.unwrap();
        let r = within(
            "the 40 MB query's answer",
            Duration::from_secs(60),
            s.read_result("40 MB query"),
        )
        .await;
        assert_eq!(r.scalar(), (40 << 20).to_string(), "client {i}");
        idle.push(s);
    }
    // (Freed memory is given back to the system: allocations this large are mapped.)
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_bytes(pid);
    eprintln!(
        "proxy VmRSS before {} MB, with 8 idle clients that each sent 40 MB: {} MB",
        before >> 20,
        after >> 20
    );
    assert!(
        after < before + (100 << 20),
        "idle clients keep the memory of their large messages: VmRSS {} MB -> {} MB",
        before >> 20,
        after >> 20
    );
    for s in &mut idle {
        assert_eq!(s.query_ok("SELECT 1").await.scalar(), "1");
    }
}

/// A Parse, Bind, Describe or Close that breaks the message format is answered as PostgreSQL
/// answers it: ERROR 08P01, the batch skipped up to its Sync, a failed transaction block if
/// one was open; the session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_extended_messages_fail_the_batch_not_the_session() {
    let sync = [b'S', 0, 0, 0, 4];
    let frame = |tag: u8, body: &[u8]| {
        let mut m = vec![tag];
        m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    };
    let cases: [(&str, Vec<u8>); 5] = [
        ("Describe of kind X", frame(b'D', b"X\0")),
        ("Close of kind X", frame(b'C', b"X\0")),
        ("Describe without a name's end", frame(b'D', b"Sab")),
        ("Parse without a query's end", frame(b'P', b"ab\0c")),
        ("Bind without a statement name's end", frame(b'B', b"\0st")),
    ];
    let direct_addr = shared_cluster().primary().addr();
    for (what, msg) in &cases {
        for in_block in [false, true] {
            let mut got = Vec::new();
            for addr in [direct_addr.clone(), proxy().addr()] {
                let mut s = raw::ok(
                    login(&addr, PROTO_3_0, &app_params(), Some(APP_PASSWORD)).await,
                    what,
                )
                .raw;
                if in_block {
                    s.query_ok("BEGIN").await;
                }
                let mut m = msg.clone();
                m.extend_from_slice(&sync);
                s.send(&m).await.unwrap();
                let r = s.read_result(what).await;
                let code = r.error.as_ref().map(|e| (e.severity(), e.code()));
                // The session goes on (in a failed block: ROLLBACK ends it).
                let after = if in_block {
                    s.query("SELECT 1").await.error.map(|e| e.code())
                } else {
                    None
                };
                if in_block {
                    s.query_ok("ROLLBACK").await;
                }
                let r2 = s.query_ok("SELECT 'on'").await;
                got.push((code, r.status, after, r2.scalar()));
            }
            assert_eq!(
                got[1], got[0],
                "{what} (in a block: {in_block}): through switchyard vs directly"
            );
            assert_eq!(
                got[0].0.as_ref().map(|(_, c)| c.as_str()),
                Some("08P01"),
                "{what}"
            );
        }
    }
}

/// Sockets that connect and say nothing cannot take the file descriptors the pools need. With
/// an open-file limit of 1024 and 1,100 such sockets held open, clients logged in before them
/// go on, their pool opening server connections; the sockets past the share of the limit
/// kept for clients are refused at once (53300). Before, every one was accepted (up to twice
/// `max_client_connections`) and new server connections failed with "Too many open files".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_do_not_take_the_descriptors_the_pools_need() {
    let opts = ProxyOptions {
        extra_top: "startup_timeout = \"60s\"\n".into(),
        extra_tables: "[pool]\nsize = 8\nidle_timeout = \"1s\"\n".into(),
        open_files: Some(1024),
        ..Default::default()
    };
    let p = tokio::task::spawn_blocking(|| Proxy::start_with(shared_cluster(), opts))
        .await
        .unwrap();
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(p.connect_app().await);
    }
    // The pools' connections close once idle, so that the reads below open new ones.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = metric_sum(&p, "switchyard_server_connections{").await;
        if n == 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{n} server connections still open"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let refused = "switchyard_client_rejected_total{reason=\"max_clients\"}";
    let before = p.metric(refused).await;
    let mut silent = Vec::new();
    for _ in 0..1100 {
        let c = tokio::time::timeout(
            Duration::from_secs(3),
            tokio::net::TcpStream::connect(p.addr()),
        )
        .await;
        if let Ok(Ok(s)) = c {
            silent.push(s);
        }
    }
    // The limit leaves clients 1024 - 256 - 256 - 256 = 256 places, and 256 more are heard out
    // before being refused: the rest is refused at once.
    p.wait_metric(refused, before + 500.0, Duration::from_secs(30))
        .await;

    let connects = "switchyard_server_connects_total{";
    let opened = metric_sum(&p, connects).await;
    let mut reads = tokio::task::JoinSet::new();
    for c in clients {
        reads.spawn(async move {
            let r = c.simple_query("SELECT pg_sleep(0.5)").await.map(|_| ());
            (c, r)
        });
    }
    let mut clients = Vec::new();
    while let Some(r) = within("the reads", Duration::from_secs(60), reads.join_next()).await {
        let (c, r) = r.unwrap();
        r.unwrap_or_else(|e| {
            panic!(
                "a logged-in client's read during the flood: {e:?}\n{}",
                p.log_tail(20)
            )
        });
        clients.push(c);
    }
    assert!(
        metric_sum(&p, connects).await > opened,
        "the reads opened no server connection: the test proves nothing"
    );
    assert!(
        !p.log().contains("Too many open files"),
        "{}",
        p.log_tail(20)
    );

    // Once the sockets are gone, new clients log in again.
    drop(silent);
    let c = within("a login after the flood", Duration::from_secs(30), async {
        loop {
            match p.try_connect(APP_USER, APP_PASSWORD, APP_DB).await {
                Ok(c) => break c,
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    })
    .await;
    c.simple_query("SELECT 1").await.unwrap();
    drop(clients);
}

/// The sum of the `/metrics` series starting with `prefix` (every backend's, say).
async fn metric_sum(p: &Proxy, prefix: &str) -> f64 {
    let (_, body) = p.http_get("/metrics").await;
    body.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
