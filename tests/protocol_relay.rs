//! The whole PostgreSQL protocol relayed through the proxy (issue "Foundation", points 7 and
//! 10): simple and extended queries (with pipelining), COPY both ways, asynchronous messages
//! (notices, notifications, parameter status), errors in and out of transactions, Terminate,
//! CancelRequest, and large results and values streamed with bounded proxy memory.
//!
//! Every test runs against the shared real cluster through a proxy of its own. tokio-postgres
//! is used where it can express the case; a small raw protocol client (below) where the exact
//! message sequence matters or tokio-postgres hides it. (COPY TO STDOUT and row streaming use
//! the raw client: tokio-postgres's `copy_out`/`query_raw` streams need the `futures` traits,
//! which are not among the crate's dependencies; COPY FROM STDIN uses tokio-postgres's
//! `BinaryCopyInWriter`.)

mod support;

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use support::proxy::Proxy;
use support::ready::{start_ready_proxy, start_ready_proxy_on};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::{AsyncMessage, NoTls, SimpleQueryMessage};

/// Longest any single wait may take.
const WAIT: Duration = Duration::from_secs(30);

// ----------------------------------------------------------------------------------------
// Helpers
// ----------------------------------------------------------------------------------------

/// `count(*)` of `table` through `client`, within 15 s: when the proxy's only server
/// connection is still held by another client, this fails instead of waiting for good.
async fn count_rows(client: &tokio_postgres::Client, table: &str) -> i64 {
    within(Duration::from_secs(15), "another client's query", async {
        client
            .query_one(&format!("select count(*) from {table}"), &[])
            .await
            .unwrap()
            .get(0)
    })
    .await
}

/// Awaits `fut`, panicking with `what` if it takes longer than `limit`.
async fn within<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

/// Upper bound of any one test, whatever it waits for.
const TEST_LIMIT: Duration = Duration::from_secs(150);

/// Runs a test body on a fresh multi-threaded runtime, failing it after [`TEST_LIMIT`].
fn bounded<F: Future<Output = ()>>(body: F) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        if tokio::time::timeout(TEST_LIMIT, body).await.is_err() {
            panic!("the test did not finish within {TEST_LIMIT:?}");
        }
    });
}

/// The SQLSTATE of a tokio-postgres error ("" when it has none).
fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code().map(|c| c.code().to_string()).unwrap_or_default()
}

/// Starts a proxy in front of the shared cluster with `extra` TOML appended, once it is ready.
fn proxy(extra: &str) -> Proxy {
    start_ready_proxy(support::proxy::ProxyOptions {
        extra_tables: extra.to_string(),
        ..Default::default()
    })
}

/// Connects through the proxy as the app user; the connection's error, if it fails, is
/// printed (tokio-postgres itself only reports "connection closed" to the caller).
async fn app_client(proxy: &Proxy) -> tokio_postgres::Client {
    let cs = format!(
        "{} connect_timeout=10",
        proxy.conn_string(APP_USER, APP_PASSWORD, APP_DB)
    );
    let (client, conn) = within(WAIT, "connect", tokio_postgres::connect(&cs, NoTls))
        .await
        .unwrap_or_else(|e| panic!("connect through the proxy: {e}\n{}", proxy.log_tail(50)));
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            eprintln!("tokio-postgres connection through the proxy failed: {e} ({e:?})");
        }
    });
    client
}

/// Drops `table` if it exists and creates it again with `columns`, through `client`.
async fn fresh_table(client: &tokio_postgres::Client, table: &str, columns: &str) {
    client
        .batch_execute(&format!(
            "drop table if exists {table}; create table {table} ({columns})"
        ))
        .await
        .unwrap_or_else(|e| panic!("creating {table}: {e}"));
}

/// Runs SQL directly on the primary (not through the proxy) as the app user.
async fn direct_primary() -> tokio_postgres::Client {
    let p = shared_cluster().primary();
    let cs = format!(
        "{} connect_timeout=10",
        p.conn_string(APP_USER, APP_PASSWORD, APP_DB)
    );
    let (c, conn) = within(WAIT, "direct connect", tokio_postgres::connect(&cs, NoTls))
        .await
        .expect("direct connection to the primary");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    c
}

/// Connects through the proxy with tokio-postgres and forwards the connection's asynchronous
/// messages (notices, notifications) to a channel.
async fn connect_with_messages(
    proxy: &Proxy,
) -> (
    tokio_postgres::Client,
    tokio::sync::mpsc::UnboundedReceiver<AsyncMessage>,
) {
    let cs = format!(
        "{} connect_timeout=10",
        proxy.conn_string(APP_USER, APP_PASSWORD, APP_DB)
    );
    let (client, mut conn) = within(WAIT, "connect", tokio_postgres::connect(&cs, NoTls))
        .await
        .unwrap_or_else(|e| panic!("connect through the proxy: {e}\n{}", proxy.log_tail(50)));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(m) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            match m {
                Ok(m) => {
                    let _ = tx.send(m);
                }
                Err(_) => break,
            }
        }
    });
    (client, rx)
}

/// A kB figure (`VmRSS`, `VmHWM`) from /proc/<pid>/status.
fn proc_kb(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/status: {e}"));
    for line in s.lines() {
        if let Some(rest) = line.strip_prefix(key).and_then(|r| r.strip_prefix(':')) {
            return rest
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("bad {key} line {line:?}"));
        }
    }
    panic!("no {key} in /proc/{pid}/status");
}

/// Deterministic, incompressible-ish bytes.
fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

// ----------------------------------------------------------------------------------------
// A raw protocol client
// ----------------------------------------------------------------------------------------

/// One backend message.
#[derive(Clone)]
struct Msg {
    tag: u8,
    body: bytes::Bytes,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.tag {
            b'E' | b'N' => write!(f, "{}{:?}", self.tag as char, self.fields()),
            b'C' => write!(f, "C({})", self.command_tag()),
            b'D' if self.body.len() < 200 => write!(f, "D{:?}", self.row()),
            b'S' => write!(f, "S{:?}", self.param()),
            b'Z' => write!(f, "Z({})", self.body[0] as char),
            t => write!(f, "{}[{} bytes]", t as char, self.body.len()),
        }
    }
}

fn split_cstr(b: &[u8]) -> (String, &[u8]) {
    let n = b
        .iter()
        .position(|&c| c == 0)
        .expect("NUL-terminated string");
    (String::from_utf8_lossy(&b[..n]).into_owned(), &b[n + 1..])
}

impl Msg {
    /// Fields of an ErrorResponse/NoticeResponse.
    fn fields(&self) -> HashMap<char, String> {
        let mut out = HashMap::new();
        let mut b = &self.body[..];
        while let Some((&t, rest)) = b.split_first() {
            if t == 0 {
                break;
            }
            let (s, rest) = split_cstr(rest);
            out.insert(t as char, s);
            b = rest;
        }
        out
    }

    fn code(&self) -> String {
        assert!(
            self.tag == b'E' || self.tag == b'N',
            "not an error: {self:?}"
        );
        self.fields().get(&'C').cloned().unwrap_or_default()
    }

    fn severity_of(&self) -> String {
        self.fields().get(&'V').cloned().unwrap_or_default()
    }

    fn command_tag(&self) -> String {
        split_cstr(&self.body).0
    }

    /// A DataRow's columns as text.
    fn row(&self) -> Vec<Option<String>> {
        let mut b = &self.body[..];
        let n = b.get_i16();
        (0..n)
            .map(|_| {
                let len = b.get_i32();
                if len < 0 {
                    None
                } else {
                    let v = String::from_utf8_lossy(&b[..len as usize]).into_owned();
                    b.advance(len as usize);
                    Some(v)
                }
            })
            .collect()
    }

    fn first(&self) -> String {
        self.row()[0].clone().unwrap_or_default()
    }

    fn param(&self) -> (String, String) {
        let (k, rest) = split_cstr(&self.body);
        (k, split_cstr(rest).0)
    }

    fn status(&self) -> char {
        assert_eq!(self.tag, b'Z', "not ReadyForQuery: {self:?}");
        self.body[0] as char
    }
}

/// Message tags as a string, e.g. "TDCZ", for comparing sequences.
fn tags(msgs: &[Msg]) -> String {
    msgs.iter().map(|m| m.tag as char).collect()
}

/// Tags without asynchronous messages (notices, parameter status).
fn sync_tags(msgs: &[Msg]) -> String {
    msgs.iter()
        .filter(|m| !matches!(m.tag, b'N' | b'S' | b'A'))
        .map(|m| m.tag as char)
        .collect()
}

/// The answer of a query cancelled while it ran: its error 57014 and ReadyForQuery, after its
/// RowDescription when the cancel came once it executed (it may come while it is planned:
/// `pg_stat_activity` shows a query active from before that).
fn assert_cancelled(msgs: &[Msg]) {
    let tags = sync_tags(msgs);
    assert!(tags == "TEZ" || tags == "EZ", "{msgs:?}");
    assert_eq!(msgs.iter().find(|m| m.tag == b'E').unwrap().code(), "57014");
}

fn rows(msgs: &[Msg]) -> Vec<String> {
    msgs.iter()
        .filter(|m| m.tag == b'D')
        .map(|m| m.first())
        .collect()
}

mod fe {
    //! Frontend message encoders.
    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }
    fn cstr(v: &mut Vec<u8>, s: &str) {
        v.extend_from_slice(s.as_bytes());
        v.push(0);
    }
    pub fn query(sql: &str) -> Vec<u8> {
        let mut b = Vec::new();
        cstr(&mut b, sql);
        msg(b'Q', &b)
    }
    pub fn parse(name: &str, sql: &str, types: &[u32]) -> Vec<u8> {
        let mut b = Vec::new();
        cstr(&mut b, name);
        cstr(&mut b, sql);
        b.extend_from_slice(&(types.len() as i16).to_be_bytes());
        for t in types {
            b.extend_from_slice(&t.to_be_bytes());
        }
        msg(b'P', &b)
    }
    /// Bind with text parameters and text results.
    pub fn bind(portal: &str, stmt: &str, params: &[Option<&[u8]>]) -> Vec<u8> {
        let mut b = Vec::new();
        cstr(&mut b, portal);
        cstr(&mut b, stmt);
        b.extend_from_slice(&0i16.to_be_bytes());
        values(&mut b, params);
        b.extend_from_slice(&0i16.to_be_bytes());
        msg(b'B', &b)
    }
    /// A count and length-prefixed values (-1 for NULL), as in Bind and FunctionCall.
    fn values(b: &mut Vec<u8>, vals: &[Option<&[u8]>]) {
        b.extend_from_slice(&(vals.len() as i16).to_be_bytes());
        for v in vals {
            match v {
                None => b.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(v) => {
                    b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    b.extend_from_slice(v);
                }
            }
        }
    }
    pub fn describe(kind: u8, name: &str) -> Vec<u8> {
        let mut b = vec![kind];
        cstr(&mut b, name);
        msg(b'D', &b)
    }
    pub fn execute(portal: &str, max_rows: i32) -> Vec<u8> {
        let mut b = Vec::new();
        cstr(&mut b, portal);
        b.extend_from_slice(&max_rows.to_be_bytes());
        msg(b'E', &b)
    }
    pub fn close(kind: u8, name: &str) -> Vec<u8> {
        let mut b = vec![kind];
        cstr(&mut b, name);
        msg(b'C', &b)
    }
    pub fn sync() -> Vec<u8> {
        msg(b'S', &[])
    }
    pub fn flush() -> Vec<u8> {
        msg(b'H', &[])
    }
    pub fn terminate() -> Vec<u8> {
        msg(b'X', &[])
    }
    pub fn copy_data(d: &[u8]) -> Vec<u8> {
        msg(b'd', d)
    }
    pub fn copy_done() -> Vec<u8> {
        msg(b'c', &[])
    }
    pub fn copy_fail(m: &str) -> Vec<u8> {
        let mut b = Vec::new();
        cstr(&mut b, m);
        msg(b'f', &b)
    }
    /// FunctionCall ('F') of the function with OID `oid`: binary arguments and result when
    /// `binary`, text otherwise.
    pub fn function_call(oid: u32, args: &[Option<&[u8]>], binary: bool) -> Vec<u8> {
        let code = i16::from(binary);
        let mut b = oid.to_be_bytes().to_vec();
        b.extend_from_slice(&1i16.to_be_bytes());
        b.extend_from_slice(&code.to_be_bytes());
        values(&mut b, args);
        b.extend_from_slice(&code.to_be_bytes());
        msg(b'F', &b)
    }
    /// Parse (unnamed) + Bind + Execute of `sql` with text parameters, no Sync.
    pub fn pbe(sql: &str, params: &[&str]) -> Vec<u8> {
        let mut v = parse("", sql, &[]);
        let ps: Vec<Option<&[u8]>> = params.iter().map(|p| Some(p.as_bytes())).collect();
        v.extend(bind("", "", &ps));
        v.extend(execute("", 0));
        v
    }
}

/// A protocol-level client connection.
struct Raw {
    s: TcpStream,
    buf: BytesMut,
    /// ParameterStatus values seen so far (greeting and later).
    params: HashMap<String, String>,
    /// BackendKeyData (pid, secret).
    key: (i32, i32),
}

impl Raw {
    /// Connects and logs in (SCRAM, md5, cleartext or trust) with extra startup parameters.
    async fn connect(
        addr: &str,
        user: &str,
        password: &str,
        db: &str,
        extra: &[(&str, &str)],
    ) -> Raw {
        let s = within(WAIT, "raw connect", TcpStream::connect(addr))
            .await
            .expect("raw connect");
        s.set_nodelay(true).ok();
        let mut r = Raw {
            s,
            buf: BytesMut::new(),
            params: HashMap::new(),
            key: (0, 0),
        };
        let mut out = BytesMut::new();
        let mut ps: Vec<(&str, &str)> = vec![("user", user), ("database", db)];
        ps.extend_from_slice(extra);
        postgres_protocol::message::frontend::startup_message(ps, &mut out).unwrap();
        r.send(&out).await;
        let mut scram: Option<postgres_protocol::authentication::sasl::ScramSha256> = None;
        loop {
            let m = r.recv().await;
            match m.tag {
                b'R' => {
                    let mut b = &m.body[..];
                    let code = b.get_i32();
                    let mut out = BytesMut::new();
                    match code {
                        0 => {}
                        3 => {
                            postgres_protocol::message::frontend::password_message(
                                password.as_bytes(),
                                &mut out,
                            )
                            .unwrap();
                        }
                        5 => {
                            let salt = [b[0], b[1], b[2], b[3]];
                            let h = postgres_protocol::authentication::md5_hash(
                                user.as_bytes(),
                                password.as_bytes(),
                                salt,
                            );
                            postgres_protocol::message::frontend::password_message(
                                h.as_bytes(),
                                &mut out,
                            )
                            .unwrap();
                        }
                        10 => {
                            let sc = postgres_protocol::authentication::sasl::ScramSha256::new(
                                password.as_bytes(),
                                postgres_protocol::authentication::sasl::ChannelBinding::unsupported(),
                            );
                            postgres_protocol::message::frontend::sasl_initial_response(
                                "SCRAM-SHA-256",
                                sc.message(),
                                &mut out,
                            )
                            .unwrap();
                            scram = Some(sc);
                        }
                        11 => {
                            let sc = scram.as_mut().expect("SASL continue without start");
                            sc.update(b).expect("SCRAM server-first");
                            postgres_protocol::message::frontend::sasl_response(
                                sc.message(),
                                &mut out,
                            )
                            .unwrap();
                        }
                        12 => {
                            scram
                                .take()
                                .expect("SASL final without start")
                                .finish(b)
                                .expect("SCRAM server signature");
                        }
                        c => panic!("unsupported authentication request {c}"),
                    }
                    if !out.is_empty() {
                        r.send(&out).await;
                    }
                }
                b'S' => {
                    let (k, v) = m.param();
                    r.params.insert(k, v);
                }
                b'K' => {
                    let mut b = &m.body[..];
                    r.key = (b.get_i32(), b.get_i32());
                }
                b'Z' => return r,
                b'E' => panic!("login failed: {m:?}"),
                b'N' => {}
                t => panic!("unexpected message {} during login", t as char),
            }
        }
    }

    async fn app(proxy: &Proxy) -> Raw {
        Raw::connect(&proxy.addr(), APP_USER, APP_PASSWORD, APP_DB, &[]).await
    }

    async fn send(&mut self, b: &[u8]) {
        within(WAIT, "raw send", self.s.write_all(b))
            .await
            .expect("raw send");
    }

    /// The next message, or `None` if none arrives within `limit`. Panics on EOF.
    async fn recv_within(&mut self, limit: Duration) -> Option<Msg> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.buf.len() >= 5 {
                let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]])
                    as usize;
                assert!(len >= 4, "bad message length {len}");
                if self.buf.len() > len {
                    let mut m = self.buf.split_to(1 + len);
                    let tag = m[0];
                    m.advance(5);
                    let msg = Msg {
                        tag,
                        body: m.freeze(),
                    };
                    if msg.tag == b'S' {
                        let (k, v) = msg.param();
                        self.params.insert(k, v);
                    }
                    return Some(msg);
                }
                self.buf.reserve((1 + len - self.buf.len()).min(8 << 20));
            }
            if self.buf.capacity() - self.buf.len() < 8192 {
                self.buf.reserve(64 * 1024);
            }
            match tokio::time::timeout_at(deadline, self.s.read_buf(&mut self.buf)).await {
                Err(_) => return None,
                Ok(Ok(0)) => panic!(
                    "connection closed by the proxy ({} bytes of a message buffered)",
                    self.buf.len()
                ),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("raw read failed: {e}"),
            }
        }
    }

    async fn recv(&mut self) -> Msg {
        match self.recv_within(WAIT).await {
            Some(m) => m,
            None => panic!("no message from the proxy within {WAIT:?}"),
        }
    }

    /// Messages up to and including the next ReadyForQuery.
    async fn until_ready(&mut self) -> Vec<Msg> {
        let mut v = Vec::new();
        loop {
            let m = self.recv().await;
            let z = m.tag == b'Z';
            v.push(m);
            if z {
                return v;
            }
        }
    }

    /// Every message until the peer closes the connection (panics if it stays open).
    async fn until_closed(&mut self) -> Vec<Msg> {
        let mut v = Vec::new();
        loop {
            if self.buf.len() >= 5 {
                let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]])
                    as usize;
                if self.buf.len() > len {
                    let mut m = self.buf.split_to(1 + len);
                    let tag = m[0];
                    m.advance(5);
                    v.push(Msg {
                        tag,
                        body: m.freeze(),
                    });
                    continue;
                }
            }
            match within(
                WAIT,
                "the connection closing",
                self.s.read_buf(&mut self.buf),
            )
            .await
            {
                Ok(0) => return v,
                Ok(_) => {}
                Err(e) => panic!("raw read failed: {e} (after {v:?})"),
            }
        }
    }

    /// Messages up to and including the `n`th ReadyForQuery.
    async fn until_ready_n(&mut self, n: usize) -> Vec<Vec<Msg>> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(self.until_ready().await);
        }
        out
    }

    /// A simple query and its whole response.
    async fn query(&mut self, sql: &str) -> Vec<Msg> {
        self.send(&fe::query(sql)).await;
        self.until_ready().await
    }

    /// A simple query that must succeed; returns the first column of its rows.
    async fn query_ok(&mut self, sql: &str) -> Vec<String> {
        let r = self.query(sql).await;
        assert!(
            r.iter().all(|m| m.tag != b'E'),
            "{sql}: unexpected error {r:?}"
        );
        rows(&r)
    }

    /// Nothing (not even an asynchronous message) arrives within `limit`.
    async fn assert_silent(&mut self, limit: Duration, context: &str) {
        if let Some(m) = self.recv_within(limit).await {
            panic!("{context}: unexpected message {m:?}");
        }
    }

    /// Waits for the proxy to close the connection.
    async fn expect_eof(&mut self, limit: Duration) {
        let mut b = [0u8; 1024];
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.s.read(&mut b)).await {
                Err(_) => panic!("the proxy did not close the connection within {limit:?}"),
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(_)) => {}
            }
        }
    }
}

/// Waits until a query starting with `sql` runs on the server `watcher` is connected to.
async fn wait_running(watcher: &tokio_postgres::Client, sql: &str) {
    let pattern = format!("{sql}%");
    within(WAIT, "the query to start", async {
        loop {
            let n: i64 = watcher
                .query_one(
                    "select count(*) from pg_stat_activity where state = 'active' \
                     and query like $1",
                    &[&pattern],
                )
                .await
                .unwrap()
                .get(0);
            if n == 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

/// Waits until a query containing `sql` runs on any node of the shared cluster (a read
/// may go to a replica).
async fn wait_running_anywhere(sql: &str) {
    let owned = sql.to_owned();
    let running = tokio::task::spawn_blocking(move || active_anywhere(&owned, WAIT))
        .await
        .unwrap();
    assert!(running, "{sql} never showed as running within {WAIT:?}");
}

/// Sends a CancelRequest for `key` to `addr` and waits for the proxy to close it.
async fn raw_cancel(addr: &str, key: (i32, i32)) {
    let mut s = within(WAIT, "cancel connect", TcpStream::connect(addr))
        .await
        .unwrap();
    let mut b = Vec::new();
    b.extend_from_slice(&16i32.to_be_bytes());
    b.extend_from_slice(&80877102i32.to_be_bytes());
    b.extend_from_slice(&key.0.to_be_bytes());
    b.extend_from_slice(&key.1.to_be_bytes());
    s.write_all(&b).await.unwrap();
    let mut sink = [0u8; 16];
    let _ = within(WAIT, "cancel connection close", s.read(&mut sink)).await;
}

// ----------------------------------------------------------------------------------------
// Simple query protocol
// ----------------------------------------------------------------------------------------

#[test]
fn simple_query_several_statements() {
    bounded(async {
        let proxy = proxy("");
        let client = app_client(&proxy).await;

        // tokio-postgres: every statement's rows and completions, in order.
        let msgs = within(
        WAIT,
        "multi-statement simple query",
        client.simple_query("select 1 as a; select 'two' as b, null::text as c; select g from generate_series(3, 5) g"),
    )
    .await
    .unwrap();
        let mut seen = Vec::new();
        for m in &msgs {
            match m {
                SimpleQueryMessage::Row(r) => {
                    let vals: Vec<Option<&str>> = (0..r.len()).map(|i| r.get(i)).collect();
                    seen.push(format!("{vals:?}"));
                }
                SimpleQueryMessage::CommandComplete(n) => seen.push(format!("complete {n}")),
                _ => {}
            }
        }
        assert_eq!(
            seen,
            vec![
                r#"[Some("1")]"#,
                "complete 1",
                r#"[Some("two"), None]"#,
                "complete 1",
                r#"[Some("3")]"#,
                r#"[Some("4")]"#,
                r#"[Some("5")]"#,
                "complete 3",
            ]
        );

        // DDL, writes and a read in one message: one implicit transaction, all visible after.
        client
        .batch_execute(
            "drop table if exists pr_simple; create table pr_simple (id int primary key, v text); \
             insert into pr_simple values (1, 'a'), (2, 'b'); update pr_simple set v = 'c' where id = 2; \
             select * from pr_simple",
        )
        .await
        .unwrap();
        let tp_rows = client
            .query("select id, v from pr_simple order by id", &[])
            .await
            .unwrap();
        let got: Vec<(i32, String)> = tp_rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        assert_eq!(got, vec![(1, "a".into()), (2, "c".into())]);

        // Raw: the exact message sequence of a multi-statement query, empty queries too.
        let mut raw = Raw::app(&proxy).await;
        let r = raw
            .query("select 1 as a; select 2 as b; select 3 as c")
            .await;
        assert_eq!(tags(&r), "TDCTDCTDCZ", "{r:?}");
        assert_eq!(rows(&r), vec!["1", "2", "3"]);
        assert_eq!(r.last().unwrap().status(), 'I');
        let r = raw.query("").await;
        assert_eq!(tags(&r), "IZ", "{r:?}");
        let r = raw.query(";").await;
        assert_eq!(tags(&r), "IZ", "{r:?}");
        let r = raw
            .query("insert into pr_simple values (3, 'x'); delete from pr_simple where id = 3")
            .await;
        assert_eq!(tags(&r), "CCZ", "{r:?}");
        assert_eq!(r[0].command_tag(), "INSERT 0 1");
        assert_eq!(r[1].command_tag(), "DELETE 1");
    });
}

#[test]
fn simple_query_error_in_the_middle_stops_the_rest() {
    bounded(async {
        let proxy = proxy("");
        let client = app_client(&proxy).await;
        client
            .batch_execute(
                "drop table if exists pr_midfail; drop sequence if exists pr_midfail_seq; \
             create table pr_midfail (id int); create sequence pr_midfail_seq",
            )
            .await
            .unwrap();

        let relayed_errors = || async {
            let mut n = 0.0;
            for (backend, _) in proxy.backends() {
                let series = format!("switchyard_server_errors_total{{backend=\"{backend}\"}}");
                n += proxy.metric(&series).await;
            }
            n
        };
        let errors_before = relayed_errors().await;
        // tokio-postgres reports the error.
        let e = within(
            WAIT,
            "failing multi-statement",
            client.simple_query(
                "insert into pr_midfail values (1); select 1/0; insert into pr_midfail values (3)",
            ),
        )
        .await
        .unwrap_err();
        assert_eq!(sqlstate(&e), "22012", "{e}");
        // Counted once, for the backend that sent it.
        assert_eq!(relayed_errors().await, errors_before + 1.0);
        // The implicit transaction was rolled back as a whole; the third statement never ran.
        let n: i64 = client
            .query_one("select count(*) from pr_midfail", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0);

        // Raw: exactly the first statement's result, the error, ReadyForQuery. A sequence (not
        // transactional) proves the third statement did not run.
        let mut raw = Raw::app(&proxy).await;
        let r = raw
            .query("select nextval('pr_midfail_seq'); select 1/0; select nextval('pr_midfail_seq')")
            .await;
        assert_eq!(tags(&r), "TDCEZ", "{r:?}");
        assert_eq!(rows(&r), vec!["1"]);
        assert_eq!(r[3].code(), "22012");
        assert_eq!(r[4].status(), 'I');
        let r = raw.query_ok("select nextval('pr_midfail_seq')").await;
        assert_eq!(
            r,
            vec!["2"],
            "the statement after the error must not have run"
        );
        // A syntax error fails the whole message before anything runs.
        let r = raw
            .query("select nextval('pr_midfail_seq'); selec 1; select 5")
            .await;
        assert_eq!(tags(&r), "EZ", "{r:?}");
        assert_eq!(r[0].code(), "42601");
        assert_eq!(
            raw.query_ok("select nextval('pr_midfail_seq')").await,
            vec!["3"]
        );
        // The connection stays usable.
        assert_eq!(raw.query_ok("select 42").await, vec!["42"]);
    });
}

// ----------------------------------------------------------------------------------------
// Extended query protocol and pipelining
// ----------------------------------------------------------------------------------------

#[test]
fn extended_pipelining_with_tokio_postgres() {
    bounded(async {
        let proxy = proxy("");
        let client = std::sync::Arc::new(app_client(&proxy).await);
        fresh_table(&client, "pr_pipe_tp", "id int primary key, v text").await;

        // join!: tokio-postgres sends all of these before reading any response.
        let c = &client;
        let (a, b, d, e, f, g, h, i) = within(WAIT, "joined queries", async {
            tokio::join!(
                c.query_one("select $1::int + 1", &[&1i32]),
                c.query_one("select $1::text || 'x'", &[&"a"]),
                c.execute("insert into pr_pipe_tp values ($1, $2)", &[&1i32, &"one"]),
                c.query_one("select 1/0", &[]),
                c.execute("insert into pr_pipe_tp values ($1, $2)", &[&2i32, &"two"]),
                c.query("select g from generate_series(1, $1) g", &[&1000i32]),
                c.execute("insert into pr_pipe_tp values ($1, $2)", &[&1i32, &"dup"]),
                c.query_one(
                    "select count(*) from pg_class where relname = $1",
                    &[&"pr_pipe_tp"]
                ),
            )
        })
        .await;
        assert_eq!(a.unwrap().get::<_, i32>(0), 2);
        assert_eq!(b.unwrap().get::<_, String>(0), "ax");
        // The two inserts of id 1 run in whichever order tokio-postgres sent them (join! does
        // not poll in a fixed order): one inserts, the other violates the key.
        let (first, dup) = match (d, h) {
            (Ok(n), Err(e)) | (Err(e), Ok(n)) => (n, e),
            (d, h) => panic!("inserts of the same key: {d:?} and {h:?}"),
        };
        assert_eq!(first, 1);
        assert_eq!(sqlstate(&dup), "23505");
        assert_eq!(sqlstate(&e.unwrap_err()), "22012");
        assert_eq!(f.unwrap(), 1);
        let g = g.unwrap();
        assert_eq!(g.len(), 1000);
        assert_eq!(g[999].get::<_, i32>(0), 1000);
        assert_eq!(i.unwrap().get::<_, i64>(0), 1);

        // A prepared statement executed by many concurrent tasks on one client.
        let stmt = client
            .prepare("insert into pr_pipe_tp values ($1, $2) returning id * 10")
            .await
            .unwrap();
        let read = client
            .prepare("select v from pr_pipe_tp where id = $1")
            .await
            .unwrap();
        let mut set = tokio::task::JoinSet::new();
        for k in 100..300i32 {
            let (c, stmt, read) = (client.clone(), stmt.clone(), read.clone());
            set.spawn(async move {
                let r = c.query_one(&stmt, &[&k, &format!("v{k}")]).await?;
                assert_eq!(r.get::<_, i32>(0), k * 10);
                let r = c.query_opt(&read, &[&k]).await?;
                // Written before on the same client: read-your-writes.
                assert_eq!(r.map(|r| r.get::<_, String>(0)), Some(format!("v{k}")));
                Ok::<_, tokio_postgres::Error>(())
            });
        }
        within(WAIT, "200 pipelined tasks", async {
            while let Some(r) = set.join_next().await {
                r.expect("task panicked").expect("query failed");
            }
        })
        .await;
        let n: i64 = client
            .query_one("select count(*) from pr_pipe_tp", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 202);

        // A transaction with pipelined statements inside.
        within(WAIT, "pipelined transaction", async {
            c.batch_execute("begin").await.unwrap();
            let (x, y, z) = tokio::join!(
                c.execute("update pr_pipe_tp set v = 'u' where id = $1", &[&1i32]),
                c.execute("update pr_pipe_tp set v = 'u' where id = $1", &[&2i32]),
                c.query_one("select count(*) from pr_pipe_tp where id < 3", &[]),
            );
            assert_eq!((x.unwrap(), y.unwrap()), (1, 1));
            assert_eq!(z.unwrap().get::<_, i64>(0), 2);
            let n: i64 = c
                .query_one("select count(*) from pr_pipe_tp where v = 'u'", &[])
                .await
                .unwrap()
                .get(0);
            assert_eq!(n, 2, "both updates visible inside the transaction");
            c.batch_execute("rollback").await.unwrap();
        })
        .await;
        let n: i64 = client
            .query_one("select count(*) from pr_pipe_tp where v = 'u'", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "the rolled-back updates must be gone");
    });
}

#[test]
fn raw_pipeline_many_messages_one_sync() {
    bounded(async {
        let proxy = proxy("");
        let setup = app_client(&proxy).await;
        fresh_table(&setup, "pr_rawpipe", "id int, v text").await;

        let mut raw = Raw::app(&proxy).await;
        // One named statement, 50 Bind/Describe/Execute, one Sync.
        let mut out = fe::parse("dbl", "select $1::int * 2 as d", &[]);
        for i in 0..50 {
            out.extend(fe::bind("", "dbl", &[Some(i.to_string().as_bytes())]));
            out.extend(fe::describe(b'P', ""));
            out.extend(fe::execute("", 0));
        }
        out.extend(fe::sync());
        raw.send(&out).await;
        let r = raw.until_ready().await;
        assert_eq!(tags(&r), format!("1{}Z", "2TDC".repeat(50)), "{r:?}");
        let want: Vec<String> = (0..50).map(|i| (i * 2).to_string()).collect();
        assert_eq!(rows(&r), want);
        assert_eq!(r.last().unwrap().status(), 'I');

        // Writes in one batch (one implicit transaction), with Describe of the statement,
        // unnamed statements re-parsed in between.
        let mut out = fe::parse("ins", "insert into pr_rawpipe values ($1, $2)", &[23, 25]);
        out.extend(fe::describe(b'S', "ins"));
        for i in 0..30 {
            let (a, b) = (i.to_string(), format!("v{i}"));
            out.extend(fe::bind(
                "",
                "ins",
                &[Some(a.as_bytes()), Some(b.as_bytes())],
            ));
            out.extend(fe::execute("", 0));
            if i % 10 == 0 {
                out.extend(fe::pbe("select count(*) from pr_rawpipe", &[]));
            }
        }
        out.extend(fe::sync());
        raw.send(&out).await;
        let r = raw.until_ready().await;
        // ParseComplete, ParameterDescription + NoData, then the executions.
        let mut want = String::from("1tn");
        for i in 0..30 {
            want.push_str("2C");
            if i % 10 == 0 {
                want.push_str("12DC");
            }
        }
        want.push('Z');
        assert_eq!(tags(&r), want, "{r:?}");
        // Counts seen inside the batch: 1, 11, 21 rows so far.
        assert_eq!(rows(&r), vec!["1", "11", "21"]);
        assert!(r
            .iter()
            .filter(|m| m.tag == b'C')
            .any(|m| m.command_tag() == "INSERT 0 1"));

        // Flush without Sync: responses come anyway.
        let mut out = fe::parse("", "select $1::text as t", &[]);
        out.extend(fe::describe(b'S', ""));
        out.extend(fe::flush());
        raw.send(&out).await;
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(raw.recv().await);
        }
        assert_eq!(tags(&got), "1tT", "{got:?}");
        let mut out = fe::bind("", "", &[Some(b"flushed")]);
        out.extend(fe::execute("", 0));
        out.extend(fe::sync());
        raw.send(&out).await;
        let r = raw.until_ready().await;
        assert_eq!(tags(&r), "2DCZ", "{r:?}");
        assert_eq!(rows(&r), vec!["flushed"]);

        // The named statement survives across batches (and across server connections).
        for i in 0..5 {
            let mut out = fe::bind("", "dbl", &[Some(i.to_string().as_bytes())]);
            out.extend(fe::execute("", 0));
            out.extend(fe::sync());
            raw.send(&out).await;
            let r = raw.until_ready().await;
            assert_eq!(tags(&r), "2DCZ", "{r:?}");
            assert_eq!(rows(&r), vec![(i * 2).to_string()]);
        }
        // Close it: later use fails like in PostgreSQL (26000), and the name can be reused.
        let mut out = fe::close(b'S', "dbl");
        out.extend(fe::sync());
        out.extend(fe::bind("", "dbl", &[Some(b"1")]));
        out.extend(fe::execute("", 0));
        out.extend(fe::sync());
        out.extend(fe::parse("dbl", "select $1::int * 3", &[]));
        out.extend(fe::bind("", "dbl", &[Some(b"5")]));
        out.extend(fe::execute("", 0));
        out.extend(fe::sync());
        raw.send(&out).await;
        let r = raw.until_ready_n(3).await;
        assert_eq!(tags(&r[0]), "3Z", "{:?}", r[0]);
        assert_eq!(tags(&r[1]), "EZ", "{:?}", r[1]);
        assert_eq!(r[1][0].code(), "26000");
        assert_eq!(tags(&r[2]), "12DCZ", "{:?}", r[2]);
        assert_eq!(rows(&r[2]), vec!["15"]);
    });
}

#[test]
fn raw_pipeline_several_syncs_in_flight() {
    bounded(async {
        let proxy = proxy("");
        let setup = app_client(&proxy).await;
        fresh_table(&setup, "pr_syncs", "id int").await;

        let mut raw = Raw::app(&proxy).await;
        // 40 requests, each its own Sync, reads and writes mixed, all sent before reading.
        let mut out = Vec::new();
        for i in 0..40 {
            if i % 3 == 0 {
                out.extend(fe::pbe(
                    "insert into pr_syncs values ($1::int)",
                    &[&i.to_string()],
                ));
            } else if i % 3 == 1 {
                out.extend(fe::pbe("select $1::int + 1000", &[&i.to_string()]));
            } else {
                out.extend(fe::query(&format!("select {i} as simple")));
                continue;
            }
            out.extend(fe::sync());
        }
        raw.send(&out).await;
        let all = within(WAIT, "40 responses", raw.until_ready_n(40)).await;
        for (i, r) in all.iter().enumerate() {
            match i % 3 {
                0 => {
                    assert_eq!(tags(r), "12CZ", "request {i}: {r:?}");
                    assert_eq!(r[2].command_tag(), "INSERT 0 1");
                }
                1 => {
                    assert_eq!(tags(r), "12DCZ", "request {i}: {r:?}");
                    assert_eq!(rows(r), vec![(i + 1000).to_string()]);
                }
                _ => {
                    assert_eq!(tags(r), "TDCZ", "request {i}: {r:?}");
                    assert_eq!(rows(r), vec![i.to_string()]);
                }
            }
            assert_eq!(r.last().unwrap().status(), 'I');
        }
        assert_eq!(
            raw.query_ok("select count(*) from pr_syncs").await,
            vec!["14"]
        );

        // Portals with a row limit: PortalSuspended, then the rest, within one transaction.
        let mut out = fe::query("begin");
        out.extend(fe::parse(
            "",
            "select g from generate_series(1, 2500) g",
            &[],
        ));
        out.extend(fe::bind("cur", "", &[]));
        out.extend(fe::execute("cur", 1000));
        out.extend(fe::flush());
        raw.send(&out).await;
        let r = raw.until_ready().await;
        assert_eq!(sync_tags(&r), "CZ", "{r:?}");
        assert_eq!(r.last().unwrap().status(), 'T');
        let mut got = Vec::new();
        loop {
            let m = raw.recv().await;
            let done = m.tag == b's';
            got.push(m);
            if done {
                break;
            }
        }
        assert_eq!(tags(&got), format!("12{}s", "D".repeat(1000)));
        let mut out = fe::execute("cur", 1000);
        out.extend(fe::execute("cur", 1000));
        out.extend(fe::sync());
        raw.send(&out).await;
        let r = raw.until_ready().await;
        let t = tags(&r);
        assert_eq!(
            t,
            format!("{}s{}CZ", "D".repeat(1000), "D".repeat(500)),
            "second and third Execute"
        );
        assert_eq!(r.last().unwrap().status(), 'T');
        assert_eq!(rows(&r).last().unwrap(), "2500");
        let r = raw.query("commit").await;
        assert_eq!(tags(&r), "CZ");
        assert_eq!(r[1].status(), 'I');
        let first: Vec<String> = rows(&got);
        assert_eq!(first[0], "1");
        assert_eq!(first[999], "1000");

        // The same outside a transaction block: the portal lives until Sync, also across a
        // Flush after which the client waits (nothing may end the implicit transaction early).
        let mut out = fe::parse("", "select g from generate_series(1, 30) g", &[]);
        out.extend(fe::bind("auto", "", &[]));
        out.extend(fe::execute("auto", 10));
        out.extend(fe::flush());
        raw.send(&out).await;
        let mut got = Vec::new();
        loop {
            let m = raw.recv().await;
            let done = m.tag == b's' || m.tag == b'E';
            got.push(m);
            if done {
                break;
            }
        }
        assert_eq!(tags(&got), format!("12{}s", "D".repeat(10)), "{got:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut out = fe::execute("auto", 10);
        out.extend(fe::flush());
        raw.send(&out).await;
        let mut got = Vec::new();
        loop {
            let m = raw.recv().await;
            let done = m.tag == b's' || m.tag == b'E';
            got.push(m);
            if done {
                break;
            }
        }
        assert_eq!(
            tags(&got),
            format!("{}s", "D".repeat(10)),
            "second Execute of a portal after Flush: {got:?}"
        );
        assert_eq!(rows(&got)[0], "11");
        let mut out = fe::execute("auto", 0);
        out.extend(fe::sync());
        raw.send(&out).await;
        let r = raw.until_ready().await;
        assert_eq!(tags(&r), format!("{}CZ", "D".repeat(10)), "{r:?}");
        assert_eq!(rows(&r).last().unwrap(), "30");
        assert_eq!(r.last().unwrap().status(), 'I');
    });
}

#[test]
fn raw_pipeline_errors_skip_to_sync() {
    bounded(async {
        let proxy = proxy("");
        let setup = app_client(&proxy).await;
        fresh_table(&setup, "pr_pipeerr", "id int primary key").await;

        let mut raw = Raw::app(&proxy).await;
        let mut out = Vec::new();
        // 1: ok, error, skipped (would insert), Sync.
        out.extend(fe::pbe("select 1", &[]));
        // (1/0 is folded while planning, so the error comes with Bind.)
        out.extend(fe::pbe("select 1/0", &[]));
        out.extend(fe::pbe("insert into pr_pipeerr values (99)", &[]));
        out.extend(fe::sync());
        // 2: fine again.
        out.extend(fe::pbe("select 2", &[]));
        out.extend(fe::sync());
        // 3: a Parse error of a named statement; its Bind is skipped.
        out.extend(fe::parse("bad", "selec 1", &[]));
        out.extend(fe::bind("", "bad", &[]));
        out.extend(fe::execute("", 0));
        out.extend(fe::sync());
        // 4: fine again.
        out.extend(fe::parse("good", "select 4", &[]));
        out.extend(fe::bind("", "good", &[]));
        out.extend(fe::execute("", 0));
        out.extend(fe::sync());
        // 5: Bind of a statement that does not exist.
        out.extend(fe::bind("", "nosuch", &[]));
        out.extend(fe::execute("", 0));
        out.extend(fe::sync());
        // 6: a duplicate statement name (42P05), the rest of the batch skipped.
        out.extend(fe::parse("dup", "select 6", &[]));
        out.extend(fe::parse("dup", "select 66", &[]));
        out.extend(fe::pbe("insert into pr_pipeerr values (98)", &[]));
        out.extend(fe::sync());
        // 7: a writes batch with a constraint violation: the whole batch is rolled back.
        out.extend(fe::pbe("insert into pr_pipeerr values (1)", &[]));
        out.extend(fe::pbe("insert into pr_pipeerr values (1)", &[]));
        out.extend(fe::sync());
        // 8: works.
        out.extend(fe::pbe("select count(*) from pr_pipeerr", &[]));
        out.extend(fe::sync());
        raw.send(&out).await;
        let r = within(WAIT, "8 syncs", raw.until_ready_n(8)).await;
        assert_eq!(tags(&r[0]), "12DC1EZ", "{:?}", r[0]);
        assert_eq!(r[0][5].code(), "22012");
        assert_eq!(tags(&r[1]), "12DCZ", "{:?}", r[1]);
        assert_eq!(rows(&r[1]), vec!["2"]);
        assert_eq!(tags(&r[2]), "EZ", "{:?}", r[2]);
        assert_eq!(r[2][0].code(), "42601");
        assert_eq!(tags(&r[3]), "12DCZ", "{:?}", r[3]);
        assert_eq!(rows(&r[3]), vec!["4"]);
        assert_eq!(tags(&r[4]), "EZ", "{:?}", r[4]);
        assert_eq!(r[4][0].code(), "26000");
        assert_eq!(tags(&r[5]), "1EZ", "{:?}", r[5]);
        assert_eq!(r[5][1].code(), "42P05");
        assert_eq!(tags(&r[6]), "12C12EZ", "{:?}", r[6]);
        assert_eq!(r[6][5].code(), "23505");
        assert_eq!(tags(&r[7]), "12DCZ", "{:?}", r[7]);
        assert_eq!(
            rows(&r[7]),
            vec!["0"],
            "skipped and rolled-back inserts must not exist"
        );
        for z in &r {
            assert_eq!(z.last().unwrap().status(), 'I');
        }
        // The good "dup" exists and answers 6.
        let mut out = fe::bind("", "dup", &[]);
        out.extend(fe::execute("", 0));
        out.extend(fe::sync());
        raw.send(&out).await;
        let r = raw.until_ready().await;
        assert_eq!(rows(&r), vec!["6"], "{r:?}");

        // Inside an explicit transaction: an error aborts it; later Syncs report 25P02 until
        // ROLLBACK.
        let mut out = fe::query("begin");
        out.extend(fe::pbe("insert into pr_pipeerr values (10)", &[]));
        out.extend(fe::sync());
        out.extend(fe::pbe("select 1/0", &[]));
        out.extend(fe::pbe("select 3", &[]));
        out.extend(fe::sync());
        out.extend(fe::pbe("select 4", &[]));
        out.extend(fe::sync());
        out.extend(fe::query("rollback"));
        out.extend(fe::pbe("select count(*) from pr_pipeerr", &[]));
        out.extend(fe::sync());
        raw.send(&out).await;
        let r = within(WAIT, "5 responses", raw.until_ready_n(5)).await;
        assert_eq!(tags(&r[0]), "CZ", "{:?}", r[0]);
        assert_eq!(r[0][1].status(), 'T');
        assert_eq!(tags(&r[1]), "12CZ", "{:?}", r[1]);
        assert_eq!(r[1][3].status(), 'T');
        assert_eq!(tags(&r[2]), "1EZ", "{:?}", r[2]);
        assert_eq!(r[2][1].code(), "22012");
        assert_eq!(r[2][2].status(), 'E');
        assert_eq!(tags(&r[3]), "EZ", "{:?}", r[3]);
        assert_eq!(r[3][0].code(), "25P02");
        assert_eq!(r[3][1].status(), 'E');
        assert_eq!(tags(&r[4]), "CZ", "{:?}", r[4]);
        assert_eq!(r[4][0].command_tag(), "ROLLBACK");
        assert_eq!(r[4][1].status(), 'I');
        let r = raw.until_ready().await;
        assert_eq!(rows(&r), vec!["0"]);
    });
}

#[test]
fn close_inside_a_failed_pipeline() {
    bounded(async {
        // psycopg's pipeline mode sends Close of an evicted prepared statement in the middle of a
        // batch. When an earlier statement fails, the server skips the Close (no CloseComplete)
        // and everything else up to Sync; afterwards requests and answers must line up again and
        // the connection must go back to the pool. (Recorded from a failing psycopg run.)
        let proxy = proxy("[pool]\nsize = 1\ncheckout_timeout = \"10s\"\n");
        let other = app_client(&proxy).await;
        fresh_table(&other, "pr_closepipe", "id int primary key").await;
        other
            .batch_execute("insert into pr_closepipe values (1)")
            .await
            .unwrap();
        let mut raw = Raw::app(&proxy).await;
        for k in 0..3 {
            let mut out = fe::parse(&format!("keep{k}"), &format!("select {k}"), &[]);
            out.extend(fe::sync());
            raw.send(&out).await;
            assert_eq!(tags(&raw.until_ready().await), "1Z");
        }
        let mut out = fe::parse("a", "insert into pr_closepipe values (1)", &[]);
        out.extend(fe::bind("", "a", &[]));
        out.extend(fe::describe(b'P', ""));
        out.extend(fe::execute("", 0));
        out.extend(fe::close(b'S', "keep0"));
        out.extend(fe::parse(
            "b",
            "insert into pr_closepipe values (5000)",
            &[],
        ));
        out.extend(fe::bind("", "b", &[]));
        out.extend(fe::describe(b'P', ""));
        out.extend(fe::execute("", 0));
        out.extend(fe::sync());
        raw.send(&out).await;
        let r = raw.until_ready().await;
        assert_eq!(tags(&r), "12nEZ", "{r:?}");
        assert_eq!(r[3].code(), "23505");
        // libpq leaves pipeline mode with another Sync (and a Flush).
        let mut out = fe::sync();
        out.extend(fe::flush());
        raw.send(&out).await;
        assert_eq!(tags(&raw.until_ready().await), "Z");
        let mut out = fe::parse(
            "c",
            "select count(*) from pr_closepipe where id = 5000",
            &[],
        );
        out.extend(fe::sync());
        raw.send(&out).await;
        assert_eq!(tags(&raw.until_ready().await), "1Z");
        let mut out = fe::bind("", "c", &[]);
        out.extend(fe::describe(b'P', ""));
        out.extend(fe::execute("", 0));
        out.extend(fe::sync());
        raw.send(&out).await;
        let r = raw.until_ready().await;
        assert_eq!(tags(&r), "2TDCZ", "{r:?}");
        assert_eq!(rows(&r), vec!["0"]);
        let mut out = fe::close(b'S', "keep1");
        out.extend(fe::sync());
        raw.send(&out).await;
        let r = raw.until_ready().await;
        assert_eq!(
            tags(&r),
            "3Z",
            "Close+Sync after the failed pipeline: {r:?}"
        );
        raw.assert_silent(Duration::from_millis(300), "after Close")
            .await;
        // "b" was never created, "a" was: both as in PostgreSQL.
        let mut out = fe::bind("", "b", &[]);
        out.extend(fe::execute("", 0));
        out.extend(fe::sync());
        out.extend(fe::describe(b'S', "keep2"));
        out.extend(fe::sync());
        raw.send(&out).await;
        let r = raw.until_ready_n(2).await;
        assert_eq!(tags(&r[0]), "EZ", "{:?}", r[0]);
        assert_eq!(r[0][0].code(), "26000");
        assert_eq!(tags(&r[1]), "tTZ", "{:?}", r[1]);
        // The only server connection is free for the other client.
        let n: i64 = within(
            Duration::from_secs(15),
            "other client after the pipeline",
            other.query_one("select count(*) from pr_closepipe", &[]),
        )
        .await
        .expect("the other client could not use the connection")
        .get(0);
        assert_eq!(n, 1);
    });
}

/// Names whose Parse, Close or both an earlier error made the server skip, in pipelined
/// batches, answer later as on a direct connection: a Close skipped after its statement's own
/// Parse failed brings back nothing, a name closed and parsed again behind a skipped Parse
/// stays, and a text whose Parse failed prepares on the connection later (its table created
/// meanwhile, behind the proxy's back). And a chain of statements that `EXECUTE` each other is
/// refused past its limit.
#[test]
fn skipped_parses_and_closes_leave_names_as_postgresql_does() {
    bounded(async {
        let proxy = proxy(
            "[routing]\nread_write_split = false\n[pool]\nsize = 1\ncheckout_timeout = \"20s\"\n",
        );
        let direct_addr = shared_cluster().primary().addr();
        let direct = direct_primary().await;
        // Message tags, error codes and rows of one answer.
        let summary = |r: &[Msg]| {
            let codes: Vec<String> = r
                .iter()
                .filter(|m| m.tag == b'E')
                .map(|m| m.code())
                .collect();
            format!("{} {codes:?} {:?}", tags(r), rows(r))
        };
        let mut answers = Vec::new();
        for addr in [direct_addr.clone(), proxy.addr()] {
            direct
                .batch_execute("drop table if exists pr_late")
                .await
                .unwrap();
            let mut raw = Raw::connect(&addr, APP_USER, APP_PASSWORD, APP_DB, &[]).await;
            let late = "select count(*) from pr_late";
            // Its own Parse fails; the Close behind a failing Bind is skipped.
            let mut out = fe::parse("s1", late, &[]);
            out.extend(fe::sync());
            out.extend(fe::bind("", "s1", &[]));
            out.extend(fe::execute("", 0));
            out.extend(fe::close(b'S', "s1"));
            out.extend(fe::sync());
            // A Parse skipped after an error, then the name closed and parsed again.
            out.extend(fe::parse("", "select 1/0", &[]));
            out.extend(fe::bind("", "", &[]));
            out.extend(fe::execute("", 0));
            out.extend(fe::parse("s3", "select 3", &[]));
            out.extend(fe::sync());
            out.extend(fe::close(b'S', "s3"));
            out.extend(fe::sync());
            out.extend(fe::parse("s3", "select 3", &[]));
            out.extend(fe::bind("", "s3", &[]));
            out.extend(fe::execute("", 0));
            out.extend(fe::sync());
            // The name s1 is free.
            out.extend(fe::parse("s1", "select 1", &[]));
            out.extend(fe::sync());
            raw.send(&out).await;
            let mut got: Vec<String> = Vec::new();
            for r in raw.until_ready_n(6).await {
                got.push(summary(&r));
            }
            direct
                .batch_execute("create table pr_late (id int)")
                .await
                .unwrap();
            let mut out = fe::bind("", "s3", &[]);
            out.extend(fe::execute("", 0));
            out.extend(fe::sync());
            out.extend(fe::parse("s2", late, &[]));
            out.extend(fe::bind("", "s2", &[]));
            out.extend(fe::execute("", 0));
            out.extend(fe::sync());
            // In a failed block: a Parse fails whatever its name (also one the connection has
            // prepared), except one that ends the block. (A name taken waits for what is in
            // flight before it: it may fail the block.)
            out.extend(fe::query("begin; select 1/0"));
            out.extend(fe::parse("s1", "select 1", &[]));
            out.extend(fe::sync());
            out.extend(fe::parse("s9", "select 3", &[]));
            out.extend(fe::sync());
            out.extend(fe::parse("rb", "rollback", &[]));
            out.extend(fe::bind("", "rb", &[]));
            out.extend(fe::execute("", 0));
            out.extend(fe::sync());
            out.extend(fe::bind("", "s9", &[]));
            out.extend(fe::execute("", 0));
            out.extend(fe::sync());
            // A Parse pipelined behind the ROLLBACK of a failed block is parsed after it.
            out.extend(fe::query("begin; select 1/0"));
            out.extend(fe::query("rollback"));
            out.extend(fe::parse("s10", "select 10", &[]));
            out.extend(fe::sync());
            raw.send(&out).await;
            for r in raw.until_ready_n(10).await {
                got.push(summary(&r));
            }
            answers.push(got);
        }
        assert_eq!(
            answers[0],
            [
                "EZ [\"42P01\"] []",
                "EZ [\"26000\"] []",
                "1EZ [\"22012\"] []",
                "3Z [] []",
                "12DCZ [] [\"3\"]",
                "1Z [] []",
                "2DCZ [] [\"3\"]",
                "12DCZ [] [\"0\"]",
                "CEZ [\"22012\"] []",
                "EZ [\"25P02\"] []",
                "EZ [\"25P02\"] []",
                "12CZ [] []",
                "EZ [\"26000\"] []",
                "CEZ [\"22012\"] []",
                "CZ [] []",
                "1Z [] []",
            ],
            "PostgreSQL answered otherwise than this test expects"
        );
        assert_eq!(
            answers[1], answers[0],
            "through the proxy (left) and directly (right)"
        );

        // EXECUTE of EXECUTE of ...: refused past the limit, what is within it runs.
        let mut raw = Raw::app(&proxy).await;
        let mut out = fe::parse("c0", "select 7", &[]);
        for i in 1..40 {
            out.extend(fe::parse(
                &format!("c{i}"),
                &format!("execute c{}", i - 1),
                &[],
            ));
        }
        out.extend(fe::sync());
        out.extend(fe::bind("", "c31", &[]));
        out.extend(fe::execute("", 0));
        out.extend(fe::sync());
        raw.send(&out).await;
        let r = raw.until_ready_n(2).await;
        assert_eq!(tags(&r[0]), format!("{}EZ", "1".repeat(32)), "{:?}", r[0]);
        assert_eq!(r[0][32].code(), "54001");
        assert_eq!(tags(&r[1]), "2DCZ", "{:?}", r[1]);
        assert_eq!(rows(&r[1]), ["7"]);
    });
}

/// A named Parse in the same batch as, and behind, the ROLLBACK TO SAVEPOINT, ROLLBACK or
/// COMMIT of a failed block is parsed after it, as PostgreSQL parses it: not refused with
/// 25P02 for the status the block had before the batch (which left the statement missing and,
/// after a savepoint, the whole transaction rolled back at its COMMIT). Also when the client
/// waits for the rollback's answer behind a Flush before sending the Parse.
#[test]
fn a_named_parse_behind_the_rollback_of_a_failed_block_is_parsed_after_it() {
    bounded(async {
        // (One server connection: the statement prepared for `s6` is on the one the failed
        // block runs on.)
        let proxy = proxy("[routing]\nread_write_split = false\n[pool]\nsize = 1\n");
        let direct_addr = shared_cluster().primary().addr();
        let direct = direct_primary().await;
        let summary = |r: &[Msg]| {
            let codes: Vec<String> = r
                .iter()
                .filter(|m| m.tag == b'E')
                .map(|m| m.code())
                .collect();
            let status = r.last().map(|m| m.status()).unwrap_or('?');
            format!("{} {codes:?} {:?} {status}", tags(r), rows(r))
        };
        let mut answers = Vec::new();
        for addr in [direct_addr.clone(), proxy.addr()] {
            direct
                .batch_execute("drop table if exists pr_rts; create table pr_rts (id int)")
                .await
                .unwrap();
            let mut raw = Raw::connect(&addr, APP_USER, APP_PASSWORD, APP_DB, &[]).await;
            let mut got: Vec<String> = Vec::new();
            // Each block fails first, its error answered: the batch behind it is looked at
            // with the block known to have failed.
            let failing = [
                "begin; insert into pr_rts values (42); savepoint a; select 1/0",
                "begin; select 1/0",
                "begin; select 1/0",
            ];
            // ROLLBACK TO SAVEPOINT, then a new named statement, one batch.
            let mut first = fe::parse("", "rollback to savepoint a", &[]);
            first.extend(fe::bind("", "", &[]));
            first.extend(fe::execute("", 0));
            first.extend(fe::parse("s1", "select $1::int", &[23]));
            first.extend(fe::bind("", "s1", &[Some(&b"5"[..])]));
            first.extend(fe::execute("", 0));
            first.extend(fe::sync());
            first.extend(fe::query("commit"));
            first.extend(fe::query("select count(*) from pr_rts where id = 42"));
            // ROLLBACK, then a named Parse, one batch; the statement is there after it.
            let mut second = fe::parse("", "rollback", &[]);
            second.extend(fe::bind("", "", &[]));
            second.extend(fe::execute("", 0));
            second.extend(fe::parse("s2", "select 2", &[]));
            second.extend(fe::sync());
            second.extend(fe::bind("", "s2", &[]));
            second.extend(fe::execute("", 0));
            second.extend(fe::sync());
            // COMMIT of a failed block (answered ROLLBACK), then a named Parse.
            let mut third = fe::parse("", "commit", &[]);
            third.extend(fe::bind("", "", &[]));
            third.extend(fe::execute("", 0));
            third.extend(fe::parse("s3", "select 3", &[]));
            third.extend(fe::bind("", "s3", &[]));
            third.extend(fe::execute("", 0));
            third.extend(fe::sync());
            for (fail, (batch, answers)) in
                failing.iter().zip([(first, 3), (second, 2), (third, 1)])
            {
                raw.send(&fe::query(fail)).await;
                got.push(summary(&raw.until_ready().await));
                raw.send(&batch).await;
                for r in raw.until_ready_n(answers).await {
                    got.push(summary(&r));
                }
            }
            // The rollback answered behind a Flush before the Parse is sent.
            let mut out =
                fe::query("begin; insert into pr_rts values (43); savepoint b; select 1/0");
            out.extend(fe::parse("", "rollback to savepoint b", &[]));
            out.extend(fe::bind("", "", &[]));
            out.extend(fe::execute("", 0));
            out.extend(fe::flush());
            raw.send(&out).await;
            got.push(summary(&raw.until_ready().await));
            let mut flushed = Vec::new();
            while flushed.len() < 3 {
                flushed.push(raw.recv().await);
            }
            got.push(tags(&flushed));
            let mut out = fe::parse("s4", "select 4", &[]);
            out.extend(fe::bind("", "s4", &[]));
            out.extend(fe::execute("", 0));
            out.extend(fe::sync());
            out.extend(fe::query("commit"));
            out.extend(fe::query("select count(*) from pr_rts where id = 43"));
            raw.send(&out).await;
            for r in raw.until_ready_n(3).await {
                got.push(summary(&r));
            }
            // A ROLLBACK bound but not yet executed ends nothing: the Parse behind it fails,
            // and its name stays free. (Also when the connection has the statement's text
            // prepared already, for another of the client's names.)
            let mut out = fe::parse("s6", "select 5", &[]);
            out.extend(fe::bind("", "s6", &[]));
            out.extend(fe::execute("", 0));
            out.extend(fe::sync());
            out.extend(fe::query("begin; select 1/0"));
            raw.send(&out).await;
            for r in raw.until_ready_n(2).await {
                got.push(summary(&r));
            }
            let mut out = fe::parse("", "rollback", &[]);
            out.extend(fe::bind("", "", &[]));
            out.extend(fe::parse("s5", "select 5", &[]));
            out.extend(fe::execute("", 0));
            out.extend(fe::sync());
            out.extend(fe::query("rollback"));
            out.extend(fe::parse("s5", "select 5", &[]));
            out.extend(fe::bind("", "s5", &[]));
            out.extend(fe::execute("", 0));
            out.extend(fe::sync());
            raw.send(&out).await;
            for r in raw.until_ready_n(3).await {
                got.push(summary(&r));
            }
            answers.push(got);
        }
        assert_eq!(
            answers[0],
            [
                "CCCEZ [\"22012\"] [] E",
                "12C12DCZ [] [\"5\"] T",
                "CZ [] [] I",
                "TDCZ [] [\"1\"] I",
                "CEZ [\"22012\"] [] E",
                "12C1Z [] [] I",
                "2DCZ [] [\"2\"] I",
                "CEZ [\"22012\"] [] E",
                "12C12DCZ [] [\"3\"] I",
                "CCCEZ [\"22012\"] [] E",
                "12C",
                "12DCZ [] [\"4\"] T",
                "CZ [] [] I",
                "TDCZ [] [\"1\"] I",
                "12DCZ [] [\"5\"] I",
                "CEZ [\"22012\"] [] E",
                "12EZ [\"25P02\"] [] E",
                "CZ [] [] I",
                "12DCZ [] [\"5\"] I",
            ],
            "PostgreSQL answered otherwise than this test expects"
        );
        assert_eq!(
            answers[1], answers[0],
            "through the proxy (left) and directly (right)"
        );
    });
}

/// The Close of a statement evicted from a server connection, skipped after an error in its
/// batch, is sent again: the connection never keeps more than `max_prepared_statements`.
#[test]
fn an_eviction_skipped_after_an_error_is_done_later() {
    bounded(async {
        let proxy = proxy(
            "[routing]\nread_write_split = false\n[pool]\nsize = 1\nmax_prepared_statements = 2\n",
        );
        let mut raw = Raw::app(&proxy).await;
        for (name, sql) in [("a", "select 'a'"), ("b", "select 'b'")] {
            let mut out = fe::parse(name, sql, &[]);
            out.extend(fe::sync());
            raw.send(&out).await;
            assert_eq!(tags(&raw.until_ready().await), "1Z");
        }
        // "c" evicts "a", in a batch an error ends first: the server skips both.
        let mut out = fe::parse("", "select 1/0", &[]);
        out.extend(fe::bind("", "", &[]));
        out.extend(fe::execute("", 0));
        out.extend(fe::parse("c", "select 'c'", &[]));
        out.extend(fe::sync());
        raw.send(&out).await;
        assert_eq!(tags(&raw.until_ready().await), "1EZ");
        let mut out = fe::parse("d", "select 'd'", &[]);
        out.extend(fe::sync());
        raw.send(&out).await;
        assert_eq!(tags(&raw.until_ready().await), "1Z");
        let n = raw
            .query_ok("select count(*) from pg_prepared_statements where from_sql = false")
            .await;
        assert_eq!(n, ["2"], "statements on the server connection");
    });
}

/// Polls (bounded) until this session's plain read runs on the replica (`replica_port`), i.e.
/// the proxy saw the replica replay every write of the user so far; returns what the scalar
/// query `sql` read there.
async fn until_read_on_replica(raw: &mut Raw, replica_port: u16, sql: &str) -> String {
    let q = format!("select inet_server_port() || ':' || ({sql})");
    within(
        WAIT,
        "a read of this user on the caught-up replica",
        async {
            loop {
                let got = raw.query_ok(&q).await.remove(0);
                let (port, value) = got.split_once(':').expect("port:value");
                if port == replica_port.to_string() {
                    return value.to_owned();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        },
    )
    .await
}

#[test]
fn pipelined_write_behind_a_read_is_tracked_for_read_your_writes() {
    bounded(async {
        // A write that arrives while the client's connection is busy with a read (pipelined)
        // runs on that connection without being routed. Its commit must still count for
        // read-your-writes. Own cluster: its replica's replay is paused while the write is
        // tested, so the replica surely lacks it; max_replica_lag is large so that the
        // paused replica still takes eventual reads (the proof that it is in use and stale).
        let cluster = own_cluster(1);
        let replica = &cluster.replicas()[0];
        let replica_port = replica.port();
        let proxy = start_ready_proxy_on(
            &cluster,
            support::proxy::ProxyOptions {
                extra_tables: "[routing]\nmax_replica_lag = \"1h\"\n".into(),
                ..Default::default()
            },
        );
        let blocking = |f: fn(&localpg::Node) -> Result<(), LocalPgError>| {
            tokio::task::block_in_place(|| f(replica).expect("pausing/resuming replay"))
        };
        let mut raw = Raw::app(&proxy).await;
        raw.query_ok("create table pr_ryw (id int)").await;
        raw.query_ok("insert into pr_ryw values (1)").await;
        // The proxy sees the replica caught up: this user's reads go there.
        assert_eq!(
            until_read_on_replica(&mut raw, replica_port, "select count(*) from pr_ryw").await,
            "1"
        );

        // Control: a plain write, then reads: never stale (replay paused: the replica lacks
        // the write for sure).
        blocking(localpg::Node::pause_replay);
        raw.query_ok("insert into pr_ryw values (2)").await;
        assert_eq!(raw.query_ok("select count(*) from pr_ryw").await, vec!["2"]);
        blocking(localpg::Node::resume_replay);
        assert_eq!(
            until_read_on_replica(&mut raw, replica_port, "select count(*) from pr_ryw").await,
            "2"
        );
        blocking(localpg::Node::pause_replay);

        // A read routed to the primary by hint, and a write pipelined right behind it.
        let mut out = fe::query("/* switchyard:primary */ select count(*) from pr_ryw");
        out.extend(fe::query("insert into pr_ryw values (3)"));
        raw.send(&out).await;
        let r = raw.until_ready_n(2).await;
        assert_eq!(rows(&r[0]), vec!["2"]);
        assert_eq!(r[1][0].command_tag(), "INSERT 0 1");
        // The same user reads: it must see its write (the replica cannot have it yet).
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(raw.query_ok("select count(*) from pr_ryw").await.remove(0));
        }
        let other = app_client(&proxy).await;
        let n: i64 = other
            .query_one("select count(*) from pr_ryw", &[])
            .await
            .unwrap()
            .get(0);
        // Proof that the replica is in use and stale: an eventual-consistency session reads
        // the old count there.
        let mut eventual = Raw::app(&proxy).await;
        eventual
            .query_ok("set switchyard.consistency = eventual")
            .await;
        let stale = eventual
            .query_ok("select count(*) from pr_ryw")
            .await
            .remove(0);
        assert_eq!(stale, "2", "the replica should still lack the last write");
        assert!(
            seen.iter().all(|v| v == "3"),
            "reads after a pipelined write saw {seen:?} (a stale replica)"
        );
        assert_eq!(
            n, 3,
            "another session of the same user read a stale replica"
        );

        // The same with the extended protocol (as tokio-postgres, JDBC, asyncpg pipeline):
        // a read sent to the primary (session override), an insert pipelined behind it.
        blocking(localpg::Node::resume_replay);
        assert_eq!(
            until_read_on_replica(&mut raw, replica_port, "select count(*) from pr_ryw").await,
            "3"
        );
        blocking(localpg::Node::pause_replay);
        let mut out = fe::query("set switchyard.route = primary");
        out.extend(fe::pbe("select count(*) from pr_ryw", &[]));
        out.extend(fe::sync());
        out.extend(fe::pbe("insert into pr_ryw values ($1::int)", &["4"]));
        out.extend(fe::sync());
        out.extend(fe::query("set switchyard.route = auto"));
        raw.send(&out).await;
        let r = raw.until_ready_n(4).await;
        assert_eq!(rows(&r[1]), vec!["3"], "{:?}", r[1]);
        assert_eq!(tags(&r[2]), "12CZ", "{:?}", r[2]);
        let mut seen = Vec::new();
        for _ in 0..3 {
            let mut out = fe::pbe("select count(*) from pr_ryw", &[]);
            out.extend(fe::sync());
            raw.send(&out).await;
            seen.push(rows(&raw.until_ready().await).remove(0));
        }
        let stale = eventual
            .query_ok("select count(*) from pr_ryw")
            .await
            .remove(0);
        assert_eq!(stale, "3", "the replica should still lack the last write");
        assert!(
            seen.iter().all(|v| v == "4"),
            "extended-protocol reads after a pipelined extended write saw {seen:?} (a stale \
             replica)"
        );
    });
}

#[test]
fn failed_parse_frees_the_name_within_a_pipeline() {
    bounded(async {
        // PostgreSQL: a Parse that fails creates nothing, so the next batch in the same pipeline
        // may use the name. The proxy must not decide "already exists" before the server has
        // answered the first Parse.
        let proxy = proxy("");
        let mut raw = Raw::app(&proxy).await;
        // Sequentially (each batch waits for its answer) ...
        let mut out = fe::parse("seq", "selec 1", &[]);
        out.extend(fe::sync());
        raw.send(&out).await;
        let r = raw.until_ready().await;
        assert_eq!(tags(&r), "EZ", "{r:?}");
        let mut out = fe::parse("seq", "select 1", &[]);
        out.extend(fe::bind("", "seq", &[]));
        out.extend(fe::execute("", 0));
        out.extend(fe::sync());
        raw.send(&out).await;
        let r = raw.until_ready().await;
        assert_eq!(tags(&r), "12DCZ", "{r:?}");
        // ... and pipelined (both batches sent before reading).
        let mut out = fe::parse("piped", "selec 1", &[]);
        out.extend(fe::bind("", "piped", &[]));
        out.extend(fe::execute("", 0));
        out.extend(fe::sync());
        out.extend(fe::parse("piped", "select 4", &[]));
        out.extend(fe::bind("", "piped", &[]));
        out.extend(fe::execute("", 0));
        out.extend(fe::sync());
        raw.send(&out).await;
        let r = raw.until_ready_n(2).await;
        assert_eq!(tags(&r[0]), "EZ", "{:?}", r[0]);
        assert_eq!(r[0][0].code(), "42601");
        assert_eq!(
            tags(&r[1]),
            "12DCZ",
            "Parse of a name whose earlier Parse failed in the same pipeline: {:?}",
            r[1]
        );
        assert_eq!(rows(&r[1]), vec!["4"]);
    });
}

/// Server connections that last a second (so a client's next request gets a new one, on
/// which its statements must be prepared anew), one at a time, everything on the primary.
fn short_lived_connections() -> Proxy {
    proxy("[pool]\nsize = 1\nmax_lifetime = \"1s\"\n[routing]\nread_write_split = false\n")
}

/// Waits until the pool's one idle connection was replaced (older than `max_lifetime`).
async fn outlive_the_connection() {
    tokio::time::sleep(Duration::from_millis(2500)).await;
}

/// Has `raw`'s client prepare `name` as `sql` (and run `use_it` as a query, unless empty, which
/// must return no row), then waits for its server connection to go: the client's next request
/// gets a connection that lacks the statement.
async fn prepared_before_a_new_connection(raw: &mut Raw, name: &str, sql: &str, use_it: &str) {
    let mut out = fe::parse(name, sql, &[]);
    out.extend(fe::sync());
    raw.send(&out).await;
    assert_eq!(tags(&raw.until_ready().await), "1Z");
    if !use_it.is_empty() {
        assert!(raw.query_ok(use_it).await.is_empty());
    }
    outlive_the_connection().await;
}

/// Has `raw`'s client prepare `name` as `select v from table` (running `use_it` as a query
/// too, unless empty), waits for its server connection to go, and drops the table: the
/// statement no longer prepares on the connection the client gets next.
async fn statement_of_a_dropped_table(raw: &mut Raw, name: &str, table: &str, use_it: &str) {
    let direct = direct_primary().await;
    fresh_table(&direct, table, "v int").await;
    prepared_before_a_new_connection(raw, name, &format!("select v from {table}"), use_it).await;
    direct
        .batch_execute(&format!("drop table {table}"))
        .await
        .unwrap();
}

#[test]
fn execute_of_a_statement_that_no_longer_prepares_gets_an_answer() {
    bounded(async {
        // SQL EXECUTE of a statement the client prepared with a Parse message, on a server
        // connection that lacks it: the proxy prepares it there first. When that fails (its
        // table is gone), the client still gets an error and ReadyForQuery, and the connection
        // goes on working (before, the server ignored the Query, waiting for a Sync, and the
        // client hung; so did the next client of that connection).
        let proxy = short_lived_connections();
        let mut raw = Raw::app(&proxy).await;
        statement_of_a_dropped_table(&mut raw, "s1", "pr_exec", "execute s1").await;
        let r = raw.query("execute s1").await;
        assert_eq!(tags(&r), "EZ", "{r:?}");
        assert_eq!(
            (r[0].code(), r[1].status()),
            ("42P01".into(), 'I'),
            "as directly"
        );
        assert_eq!(raw.query_ok("select 41 + 1").await, vec!["42"]);
        let other = app_client(&proxy).await;
        within(WAIT, "another client", other.simple_query("select 1"))
            .await
            .expect("another client on the pool's one connection");
    });
}

#[test]
fn a_statement_prepared_again_in_a_failed_batch_is_prepared_for_the_next() {
    bounded(async {
        // Two batches pipelined on a connection that lacks the client's statement: the first
        // fails before the proxy's Parse of it, which the server then skips; the second must
        // not count on it (it got 26000 "prepared statement does not exist").
        let proxy = short_lived_connections();
        let mut raw = Raw::app(&proxy).await;
        prepared_before_a_new_connection(&mut raw, "s2", "select 2", "").await;
        let mut out = fe::parse("", "select 1/(random() * 0)::int", &[]);
        out.extend(fe::bind("", "", &[]));
        out.extend(fe::execute("", 0));
        out.extend(fe::bind("", "s2", &[]));
        out.extend(fe::execute("", 0));
        out.extend(fe::sync());
        out.extend(fe::bind("", "s2", &[]));
        out.extend(fe::execute("", 0));
        out.extend(fe::sync());
        raw.send(&out).await;
        let r = raw.until_ready_n(2).await;
        assert_eq!(tags(&r[0]), "12EZ", "{:?}", r[0]);
        assert_eq!(r[0][2].code(), "22012");
        assert_eq!(tags(&r[1]), "2DCZ", "the second batch: {:?}", r[1]);
        assert_eq!(rows(&r[1]), vec!["2"]);
    });
}

#[test]
fn a_parse_failing_on_its_own_is_not_trusted_by_the_next_batch() {
    bounded(async {
        // Two names for one failing text, the second pipelined behind the first's Sync: as
        // on PostgreSQL each Parse fails (the proxy answered the second from the statement
        // it believed prepared, and the Bind then named a shared statement that did not
        // exist: 26000), and the name stays free. (Everything on the primary: the batches
        // of reads on replicas may each be routed afresh.)
        let proxy = proxy("[routing]\nread_write_split = false\n");
        let mut raw = Raw::app(&proxy).await;
        let bad = "select * from no_such_table_twice";
        let mut out = fe::parse("s1", bad, &[]);
        out.extend(fe::sync());
        out.extend(fe::parse("s2", bad, &[]));
        out.extend(fe::bind("", "s2", &[]));
        out.extend(fe::execute("", 0));
        out.extend(fe::sync());
        raw.send(&out).await;
        let r = raw.until_ready_n(2).await;
        for r in &r {
            assert_eq!(sync_tags(r), "EZ", "{r:?}");
            assert_eq!(r[0].code(), "42P01", "{r:?}");
        }
        let mut out = fe::parse("s2", "select 5", &[]);
        out.extend(fe::bind("", "s2", &[]));
        out.extend(fe::execute("", 0));
        out.extend(fe::sync());
        raw.send(&out).await;
        assert_eq!(rows(&raw.until_ready().await), ["5"]);
    });
}

#[test]
fn a_statement_whose_table_is_gone_fails_in_every_pipelined_batch() {
    bounded(async {
        // A statement prepared before its table was dropped, bound in two pipelined batches
        // on a new server connection: the proxy's Parse of it there fails, and the second
        // batch must not count on it (it bound a shared name the server did not have: 26000).
        let proxy = short_lived_connections();
        let mut raw = Raw::app(&proxy).await;
        statement_of_a_dropped_table(&mut raw, "x1", "pr_gone", "").await;
        let mut out = Vec::new();
        for _ in 0..2 {
            out.extend(fe::bind("", "x1", &[]));
            out.extend(fe::execute("", 0));
            out.extend(fe::sync());
        }
        raw.send(&out).await;
        for r in raw.until_ready_n(2).await {
            assert_eq!(sync_tags(&r), "EZ", "{r:?}");
            assert_eq!(r[0].code(), "42P01", "as directly: {r:?}");
        }
    });
}

#[test]
fn sql_execute_inside_a_failed_batch_is_skipped_with_it() {
    bounded(async {
        // SQL EXECUTE of the client's statement in a Query inside an extended batch, on a
        // connection that lacks the statement: the proxy prepares it there first, without
        // a Sync of its own (that Sync ended the server's skip after the batch's error, and
        // the client got a ReadyForQuery more than it asked for).
        let proxy = short_lived_connections();
        let mut raw = Raw::app(&proxy).await;
        prepared_before_a_new_connection(&mut raw, "e1", "select 42", "").await;
        let mut out = fe::bind("", "no_such_statement", &[]);
        out.extend(fe::execute("", 0));
        out.extend(fe::query("execute e1"));
        out.extend(fe::sync());
        raw.send(&out).await;
        let r = raw.until_ready().await;
        assert_eq!(sync_tags(&r), "EZ", "{r:?}");
        assert_eq!(r[0].code(), "26000");
        raw.assert_silent(Duration::from_millis(500), "after the batch's Sync")
            .await;
        // Not failed: the Query runs inside the batch, which goes on after it.
        outlive_the_connection().await;
        let mut out = fe::pbe("select 1", &[]);
        out.extend(fe::query("execute e1"));
        out.extend(fe::sync());
        raw.send(&out).await;
        let r = raw.until_ready_n(2).await;
        assert_eq!(rows(&r[0]), ["1", "42"], "{r:?}");
        assert_eq!(sync_tags(&r[1]), "Z", "{r:?}");
    });
}

#[test]
fn a_skipped_unnamed_parse_or_close_leaves_the_statement_before() {
    bounded(async {
        // As on PostgreSQL, an unnamed Parse (or a Close of the unnamed statement) that an
        // error earlier in its batch skips leaves the client the unnamed statement it had.
        // (The proxy ran the skipped Parse's text, or answered 26000.)
        let proxy = proxy("[routing]\nread_write_split = false\n");
        let mut raw = Raw::app(&proxy).await;
        let bind_run = || [fe::bind("", "", &[]), fe::execute("", 0), fe::sync()].concat();
        let mut out = fe::pbe("select 1", &[]);
        out.extend(fe::sync());
        raw.send(&out).await;
        assert_eq!(rows(&raw.until_ready().await), ["1"]);
        let failing =
            |then: Vec<u8>| [fe::bind("", "no_such_statement", &[]), then, fe::sync()].concat();
        // Pipelined: the Bind behind the skipped Parse.
        raw.send(&[failing(fe::parse("", "select 2", &[])), bind_run()].concat())
            .await;
        let r = raw.until_ready_n(2).await;
        assert_eq!(r[0][0].code(), "26000", "{r:?}");
        assert_eq!(rows(&r[1]), ["1"], "pipelined: {r:?}");
        // In a later round trip.
        raw.send(&failing(fe::parse("", "select 3", &[]))).await;
        assert_eq!(sync_tags(&raw.until_ready().await), "EZ");
        raw.send(&bind_run()).await;
        assert_eq!(rows(&raw.until_ready().await), ["1"], "after a round trip");
        // A skipped Close.
        raw.send(&failing(fe::close(b'S', ""))).await;
        assert_eq!(sync_tags(&raw.until_ready().await), "EZ");
        raw.send(&bind_run()).await;
        assert_eq!(
            rows(&raw.until_ready().await),
            ["1"],
            "after a skipped Close"
        );
    });
}

#[test]
fn a_statement_of_another_database_is_not_checked_against_this_ones() {
    bounded(async {
        // The same text prepared in two databases: the tables it names are others (other
        // OIDs), so after a schema change one database's row shape must not be held against
        // the other's (its Bind got 0A000 "cached plan must not change result type").
        let c = shared_cluster();
        tokio::task::block_in_place(|| {
            c.primary()
                .psql("DROP DATABASE IF EXISTS pr_other")
                .expect("second database");
            c.primary()
                .psql(&format!("CREATE DATABASE pr_other OWNER {APP_USER}"))
                .expect("second database");
            for db in [APP_DB, "pr_other"] {
                c.primary()
                    .psql_db(
                        db,
                        &format!(
                            "DROP TABLE IF EXISTS pr_shape; CREATE TABLE pr_shape (v int); \
                             ALTER TABLE pr_shape OWNER TO {APP_USER}"
                        ),
                    )
                    .expect("table");
            }
        });
        let proxy = short_lived_connections();
        let mut a = Raw::app(&proxy).await;
        let mut b = Raw::connect(&proxy.addr(), APP_USER, APP_PASSWORD, "pr_other", &[]).await;
        let mut out = fe::parse("s", "select v from pr_shape", &[]);
        out.extend(fe::describe(b'S', "s"));
        out.extend(fe::sync());
        a.send(&out).await;
        assert_eq!(tags(&a.until_ready().await), "1tTZ");
        b.send(&out).await;
        assert_eq!(tags(&b.until_ready().await), "1tTZ");
        // A schema change through the proxy, and b's next Bind on a new server connection.
        a.query_ok("create table if not exists pr_shape_ddl (v int)")
            .await;
        outlive_the_connection().await;
        let mut out = fe::bind("", "s", &[]);
        out.extend(fe::execute("", 0));
        out.extend(fe::sync());
        b.send(&out).await;
        let r = b.until_ready().await;
        assert_eq!(tags(&r), "2CZ", "{r:?}");
    });
}

#[test]
fn the_proxys_statement_names_are_not_the_clients() {
    bounded(async {
        // A client that finds another's shared statement name (`_sy…` in
        // pg_prepared_statements) cannot drop it from the connection (which would then fail
        // the owner's Bind with 26000) nor run it: 26000, as for any name it never prepared.
        let proxy = proxy("[pool]\nsize = 1\n[routing]\nread_write_split = false\n");
        let mut a = Raw::app(&proxy).await;
        let mut out = fe::parse("mine", "select 7", &[]);
        out.extend(fe::sync());
        a.send(&out).await;
        assert_eq!(tags(&a.until_ready().await), "1Z");
        let mut b = Raw::app(&proxy).await;
        let names = b
            .query_ok("select name from pg_prepared_statements where name like '\\_sy%'")
            .await;
        let shared = names
            .first()
            .expect("the shared name on the one connection")
            .clone();
        for sql in [format!("deallocate {shared}"), format!("execute {shared}")] {
            let r = b.query(&sql).await;
            assert_eq!(tags(&r), "EZ", "{sql}: {r:?}");
            assert_eq!(r[0].code(), "26000", "{sql}");
        }
        let mut out = fe::parse("", &format!("deallocate prepare {shared}"), &[]);
        out.extend(fe::bind("", "", &[]));
        out.extend(fe::execute("", 0));
        out.extend(fe::sync());
        b.send(&out).await;
        let r = b.until_ready().await;
        assert_eq!(tags(&r), "EZ", "{r:?}");
        assert_eq!(r[0].code(), "26000");
        let mut out = fe::bind("", "mine", &[]);
        out.extend(fe::execute("", 0));
        out.extend(fe::sync());
        a.send(&out).await;
        let r = a.until_ready().await;
        assert_eq!(tags(&r), "2DCZ", "the owner's statement: {r:?}");
    });
}

#[test]
fn a_query_too_large_to_inspect_is_not_streamed_onto_a_replica() {
    bounded(async {
        // A read (on a replica) with a write pipelined behind it that is larger than
        // max_message_size, so streamed without being inspected: it must wait for a server of
        // its own (the primary), not follow the read onto the replica (25006), and it may
        // change settings and state like any text the proxy cannot read.
        let proxy = start_ready_proxy(support::proxy::ProxyOptions {
            extra_top: "max_message_size = \"4kB\"\n".into(),
            extra_tables: "[routing]\nconsistency = \"eventual\"\n".into(),
            ..Default::default()
        });
        let direct = direct_primary().await;
        fresh_table(&direct, "pr_big", "v text").await;
        shared_cluster()
            .wait_replicas_caught_up(Duration::from_secs(20))
            .expect("replicas caught up");
        let mut raw = Raw::app(&proxy).await;
        let replicas: Vec<String> = shared_cluster()
            .replicas()
            .iter()
            .map(|n| n.port().to_string())
            .collect();
        // 64 kB arrives whole while the read runs; 1 MB does not (the proxy stops reading a
        // client with that much buffered): it must be taken up once the read is done.
        for len in [64 * 1024, 1 << 20] {
            let big = "z".repeat(len);
            let mut out = fe::query("select inet_server_port(), pg_sleep(0.2)");
            out.extend(fe::query(&format!("insert into pr_big values ('{big}')")));
            raw.send(&out).await;
            let r = raw.until_ready_n(2).await;
            assert_eq!(tags(&r[0]), "TDCZ", "the read: {:?}", r[0]);
            assert!(
                replicas.contains(&rows(&r[0])[0]),
                "the read ran on {:?}, not a replica {replicas:?}: nothing was checked",
                rows(&r[0])
            );
            assert_eq!(tags(&r[1]), "CZ", "the large write: {:?}", r[1]);
            let n: i64 = direct
                .query_one(
                    "select count(*) from pr_big where length(v) = $1",
                    &[&(len as i32)],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(n, 1);
        }
    });
}

#[test]
fn a_flush_on_a_replica_gets_its_answers_before_the_sync() {
    bounded(async {
        // A cursor read in pieces (Execute with a row count, then Flush: pg-cursor, psycopg's
        // pipeline, libpq's PQsendFlushRequest) on a replica: each piece is answered at its
        // Flush, not held back as a repeatable read's response until a Sync that the client
        // sends only once it has the rows.
        let proxy = proxy("");
        let replicas: Vec<String> = shared_cluster()
            .replicas()
            .iter()
            .map(|n| n.port().to_string())
            .collect();
        let mut raw = Raw::app(&proxy).await;
        raw.query_ok("set switchyard.route = replica").await;
        let mut out = fe::parse(
            "",
            "select inet_server_port()::text from generate_series(1, 3)",
            &[],
        );
        out.extend(fe::bind("", "", &[]));
        out.extend(fe::execute("", 2));
        out.extend(fe::flush());
        raw.send(&out).await;
        let mut got = Vec::new();
        while got.len() < 5 {
            match raw.recv_within(Duration::from_secs(10)).await {
                Some(m) => got.push(m),
                None => panic!("no answer to the Flush within 10 s: {got:?}"),
            }
        }
        assert_eq!(tags(&got), "12DDs", "{got:?}");
        let mut out = fe::execute("", 2);
        out.extend(fe::sync());
        raw.send(&out).await;
        let r = raw.until_ready().await;
        assert_eq!(tags(&r), "DCZ", "{r:?}");
        let port = String::from_utf8_lossy(&got[2].body[6..]).to_string();
        assert!(
            replicas.contains(&port),
            "the cursor ran on {port}, not a replica {replicas:?}: nothing was checked"
        );
    });
}

#[test]
fn a_close_skipped_after_an_error_keeps_the_statement() {
    bounded(async {
        // PostgreSQL skips everything after an error up to the Sync, a Close included: the
        // statement is still there, usable, and its name still taken.
        let proxy = proxy("");
        let mut raw = Raw::app(&proxy).await;
        let mut out = fe::parse("kept", "select 41 + 1", &[]);
        out.extend(fe::sync());
        raw.send(&out).await;
        assert_eq!(tags(&raw.until_ready().await), "1Z");
        let mut out = fe::bind("", "no_such_statement", &[]);
        out.extend(fe::close(b'S', "kept"));
        out.extend(fe::sync());
        raw.send(&out).await;
        let r = raw.until_ready().await;
        assert_eq!(tags(&r), "EZ", "{r:?}");
        assert_eq!(r[0].code(), "26000");
        let mut out = fe::bind("", "kept", &[]);
        out.extend(fe::execute("", 0));
        out.extend(fe::sync());
        raw.send(&out).await;
        let r = raw.until_ready().await;
        assert_eq!(
            tags(&r),
            "2DCZ",
            "the statement whose Close was skipped: {r:?}"
        );
        let mut out = fe::parse("kept", "select 2", &[]);
        out.extend(fe::sync());
        raw.send(&out).await;
        let r = raw.until_ready().await;
        assert_eq!(tags(&r), "EZ", "its name is still taken: {r:?}");
        assert_eq!(r[0].code(), "42P05");
        // A Close and a Parse of the name again in the skipped stretch (drivers re-prepare
        // this way): neither happened, the first statement is still the one.
        let mut out = fe::bind("", "no_such_statement", &[]);
        out.extend(fe::close(b'S', "kept"));
        out.extend(fe::parse("kept", "select 'replaced'", &[]));
        out.extend(fe::sync());
        raw.send(&out).await;
        assert_eq!(tags(&raw.until_ready().await), "EZ");
        let mut out = fe::bind("", "kept", &[]);
        out.extend(fe::execute("", 0));
        out.extend(fe::sync());
        raw.send(&out).await;
        let r = raw.until_ready().await;
        assert_eq!(tags(&r), "2DCZ", "{r:?}");
        assert_eq!(
            &r[1].body[6..],
            b"42",
            "the statement prepared first: {r:?}"
        );
    });
}

#[test]
fn commit_and_chain_opens_the_next_block() {
    bounded(async {
        // BEGIN, then COMMIT AND CHAIN with nothing between (answered by the proxy, the BEGIN
        // not sent yet): a new block is open, as on PostgreSQL, so a ROLLBACK undoes what
        // follows.
        let proxy = proxy("");
        let direct = direct_primary().await;
        fresh_table(&direct, "pr_chain", "v int").await;
        let mut raw = Raw::app(&proxy).await;
        raw.query_ok("begin").await;
        let r = raw.query("commit and chain").await;
        assert_eq!(tags(&r), "CZ", "{r:?}");
        assert_eq!(
            (r[0].command_tag().as_str(), r[1].status()),
            ("COMMIT", 'T')
        );
        raw.query_ok("insert into pr_chain values (1)").await;
        let r = raw.query("rollback and chain").await;
        assert_eq!(
            (r[0].command_tag().as_str(), r[1].status()),
            ("ROLLBACK", 'T')
        );
        raw.query_ok("insert into pr_chain values (2)").await;
        raw.query_ok("commit").await;
        let n: i64 = direct
            .query_one("select coalesce(sum(v), 0) from pr_chain", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            n, 2,
            "only the row inserted in the last chained block stays"
        );
    });
}

#[test]
fn flush_then_error_keeps_the_server_connection_until_sync() {
    bounded(async {
        // Clients such as asyncpg send Parse/Describe/Flush and wait for the answers before they
        // send Bind/Execute/Sync (or, after an error, Sync). Until that Sync the extended-protocol
        // batch is open on the server (an implicit transaction, portals, or the "skip to Sync"
        // state after an error), so the proxy must keep the server connection for this client.
        // Pool of one: another client in between would get the half-finished connection.
        let proxy = proxy(
            "[routing]\nread_write_split = false\n[pool]\nsize = 1\ncheckout_timeout = \"20s\"\n",
        );
        let other = app_client(&proxy).await;
        other.batch_execute("select 1").await.unwrap();
        let mut raw = Raw::app(&proxy).await;

        // An error answered before any Sync (asyncpg's prepare of a bad query).
        let mut out = fe::parse("", "select * from pr_no_such_table", &[]);
        out.extend(fe::describe(b'S', ""));
        out.extend(fe::flush());
        raw.send(&out).await;
        let m = within(Duration::from_secs(10), "error after Flush", raw.recv()).await;
        assert_eq!(m.tag, b'E', "{m:?}");
        assert_eq!(m.code(), "42P01");
        // Another client wants the (only) server connection meanwhile.
        let other_query = {
            let c = &other;
            async move {
                // One simple query, so it needs the connection once: with the extended
                // protocol it would need it twice, and this client's next batch (opened right
                // after its Sync) may legitimately take the connection in between.
                tokio::time::timeout(Duration::from_secs(12), c.simple_query("select 2")).await
            }
        };
        let (other_result, mine) = tokio::join!(other_query, async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            raw.send(&fe::sync()).await;
            let r = raw.until_ready().await;
            // The next statement of this client: must be answered, not swallowed by a server
            // still skipping to a Sync that already went elsewhere.
            let mut out = fe::parse("", "select 3", &[]);
            out.extend(fe::describe(b'S', ""));
            out.extend(fe::flush());
            raw.send(&out).await;
            let mut next = Vec::new();
            for _ in 0..3 {
                match raw.recv_within(Duration::from_secs(10)).await {
                    Some(m) => next.push(m),
                    None => break,
                }
            }
            (r, next)
        });
        let (r, next) = mine;
        assert_eq!(tags(&r), "Z", "{r:?}");
        assert_eq!(
            tags(&next),
            "1tT",
            "Parse/Describe/Flush after an earlier error+Sync got no answer: {next:?}"
        );
        let other_rows = other_result
            .expect("the other client's query hung (it got a connection still skipping to Sync?)")
            .expect("the other client's query failed");
        let value = other_rows.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        });
        assert_eq!(value.as_deref(), Some("2"));
        let mut out = fe::bind("", "", &[]);
        out.extend(fe::execute("", 0));
        out.extend(fe::sync());
        raw.send(&out).await;
        let r = raw.until_ready().await;
        assert_eq!(tags(&r), "2DCZ", "{r:?}");
    });
}

#[test]
fn flush_keeps_an_open_portal_until_sync() {
    bounded(async {
        // A portal read in steps with Flush, outside a transaction block: it lives until Sync,
        // even if another client wants the (only) server connection in between.
        let proxy = proxy(
            "[routing]\nread_write_split = false\n[pool]\nsize = 1\ncheckout_timeout = \"20s\"\n",
        );
        let other = app_client(&proxy).await;
        other.batch_execute("select 1").await.unwrap();
        let mut raw = Raw::app(&proxy).await;
        let mut out = fe::parse("", "select g from generate_series(1, 20) g", &[]);
        out.extend(fe::bind("steps", "", &[]));
        out.extend(fe::execute("steps", 10));
        out.extend(fe::flush());
        raw.send(&out).await;
        let mut first = Vec::new();
        for _ in 0..13 {
            first.push(raw.recv().await);
        }
        assert_eq!(tags(&first), format!("12{}s", "D".repeat(10)), "{first:?}");
        let other_query = {
            let c = &other;
            async move {
                tokio::time::timeout(Duration::from_secs(12), c.query_one("select 4", &[])).await
            }
        };
        let (other_result, r) = tokio::join!(other_query, async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let mut out = fe::execute("steps", 0);
            out.extend(fe::sync());
            raw.send(&out).await;
            raw.until_ready().await
        });
        assert_eq!(
            sync_tags(&r),
            format!("{}CZ", "D".repeat(10)),
            "the rest of a portal after Flush: {r:?}"
        );
        assert_eq!(rows(&r).last().map(String::as_str), Some("20"));
        let other_row = other_result
            .expect("other client hung")
            .expect("other client failed");
        assert_eq!(other_row.get::<_, i32>(0), 4);
    });
}

// ----------------------------------------------------------------------------------------
// COPY
// ----------------------------------------------------------------------------------------

#[test]
fn copy_in_and_out() {
    bounded(async {
        use tokio_postgres::binary_copy::BinaryCopyInWriter;
        use tokio_postgres::types::Type;
        let proxy = proxy("");
        let client = app_client(&proxy).await;
        fresh_table(&client, "pr_copy", "id int primary key, v text").await;

        // Raw text COPY FROM STDIN with rows split across CopyData messages at odd places.
        let mut raw = Raw::app(&proxy).await;
        raw.send(&fe::query("copy pr_copy (id, v) from stdin"))
            .await;
        let m = raw.recv().await;
        assert_eq!(m.tag, b'G', "CopyInResponse expected, got {m:?}");
        let mut data = Vec::new();
        for i in 100_000..100_500 {
            data.extend_from_slice(format!("{i}\ttext\\twith tab {i}\n").as_bytes());
        }
        let mut out = Vec::new();
        for (k, chunk) in data.chunks(37).enumerate() {
            out.extend(fe::copy_data(chunk));
            if k % 50 == 0 {
                raw.send(&std::mem::take(&mut out)).await;
            }
        }
        out.extend(fe::copy_done());
        raw.send(&out).await;
        let r = raw.until_ready().await;
        assert_eq!(tags(&r), "CZ", "{r:?}");
        assert_eq!(r[0].command_tag(), "COPY 500");
        assert_eq!(r[1].status(), 'I');
        assert_eq!(
            raw.query_ok("select v from pr_copy where id = 100123")
                .await,
            vec!["text\twith tab 100123"]
        );

        // Raw COPY TO STDOUT, of a table and of a query.
        let r = raw
            .query("copy (select id, v from pr_copy where id >= 100000 order by id) to stdout")
            .await;
        assert_eq!(r[0].tag, b'H', "CopyOutResponse expected: {:?}", &r[..1]);
        let mut got = Vec::new();
        for m in &r[1..] {
            if m.tag == b'd' {
                got.extend_from_slice(&m.body);
            }
        }
        assert_eq!(got, data, "COPY TO STDOUT returned other bytes");
        assert_eq!(
            sync_tags(&r),
            format!("H{}cCZ", "d".repeat(500)),
            "one CopyData per row, CopyDone, CommandComplete"
        );
        assert_eq!(r[r.len() - 2].command_tag(), "COPY 500");
        let r = raw.query("copy pr_copy to stdout (format csv)").await;
        let lines = r.iter().filter(|m| m.tag == b'd').count();
        assert_eq!(lines, 500);
        assert_eq!(r.last().unwrap().status(), 'I');

        // COPY inside an explicit transaction, then rolled back.
        let r = raw.query("begin").await;
        assert_eq!(r.last().unwrap().status(), 'T');
        raw.send(&fe::query("copy pr_copy (id, v) from stdin"))
            .await;
        assert_eq!(raw.recv().await.tag, b'G');
        let mut out = fe::copy_data(b"200000\tin txn\n");
        out.extend(fe::copy_done());
        raw.send(&out).await;
        let r = raw.until_ready().await;
        assert_eq!(tags(&r), "CZ", "{r:?}");
        assert_eq!(r[1].status(), 'T');
        assert_eq!(
            raw.query_ok("select count(*) from pr_copy where id = 200000")
                .await,
            vec!["1"]
        );
        raw.query_ok("rollback").await;
        assert_eq!(
            raw.query_ok("select count(*) from pr_copy where id = 200000")
                .await,
            vec!["0"]
        );

        // COPY through the extended protocol.
        let mut out = fe::parse("", "copy pr_copy (id, v) from stdin", &[]);
        out.extend(fe::bind("", "", &[]));
        out.extend(fe::execute("", 0));
        out.extend(fe::flush());
        raw.send(&out).await;
        let mut r = Vec::new();
        for _ in 0..3 {
            r.push(raw.recv().await);
        }
        assert_eq!(tags(&r), "12G", "{r:?}");
        let mut out = fe::copy_data(b"300000\textended\n300001\textended\n");
        out.extend(fe::copy_done());
        out.extend(fe::sync());
        raw.send(&out).await;
        let r = raw.until_ready().await;
        assert_eq!(tags(&r), "CZ", "{r:?}");
        assert_eq!(r[0].command_tag(), "COPY 2");

        // tokio-postgres COPY FROM STDIN (binary, extended protocol), 20000 rows.
        let n = within(WAIT, "binary copy in", async {
            let sink = client
                .copy_in("copy pr_copy (id, v) from stdin (format binary)")
                .await?;
            let w = BinaryCopyInWriter::new(sink, &[Type::INT4, Type::TEXT]);
            let mut w = std::pin::pin!(w);
            for i in 0..20000i32 {
                w.as_mut().write(&[&i, &format!("row {i}")]).await?;
            }
            w.finish().await
        })
        .await
        .unwrap();
        assert_eq!(n, 20000);
        // Checked from another client (the COPY client's own state is checked at the end).
        let checker = app_client(&proxy).await;
        let r = checker
            .query_one(
                "select count(*), sum(id)::bigint, max(v) from pr_copy where id < 100000",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(r.get::<_, i64>(0), 20000);
        assert_eq!(r.get::<_, i64>(1), 19999 * 20000 / 2);
        assert_eq!(r.get::<_, String>(2), "row 9999");

        // The tokio-postgres client that ran copy_in is still usable.
        let r = within(
            WAIT,
            "query on the copy_in client",
            client.query_one("select count(*) from pr_copy", &[]),
        )
        .await
        .expect("the client that ran copy_in must stay usable");
        assert_eq!(r.get::<_, i64>(0), 20502);
    });
}

/// PostgreSQL ignores a Sync or Flush sent during COPY FROM STDIN, so no ReadyForQuery is owed
/// for it: the client's next statement gets its answer and the server connection is free for
/// another client at once (a pool of one).
#[test]
fn sync_and_flush_during_copy_in_owe_nothing() {
    bounded(async {
        let proxy = proxy(
            "[routing]\nread_write_split = false\n[pool]\nsize = 1\ncheckout_timeout = \"20s\"\n",
        );
        let setup = app_client(&proxy).await;
        fresh_table(&setup, "pr_copysync", "id int").await;
        let mut raw = Raw::app(&proxy).await;
        for (round, begin) in [(1, ""), (2, "begin; ")] {
            raw.send(&fe::query(&format!("{begin}copy pr_copysync from stdin")))
                .await;
            let mut m = raw.recv().await;
            if !begin.is_empty() {
                assert_eq!(m.command_tag(), "BEGIN");
                m = raw.recv().await;
            }
            assert_eq!(m.tag, b'G', "CopyInResponse expected, got {m:?}");
            let mut out = fe::copy_data(b"1\n");
            out.extend(fe::sync());
            out.extend(fe::flush());
            out.extend(fe::copy_data(b"2\n"));
            out.extend(fe::sync());
            out.extend(fe::copy_done());
            raw.send(&out).await;
            let r = raw.until_ready().await;
            assert_eq!(tags(&r), "CZ", "{r:?}");
            assert_eq!(r[0].command_tag(), "COPY 2");
            if !begin.is_empty() {
                raw.query_ok("commit").await;
            }
            let count = raw.query_ok("select count(*) from pr_copysync").await;
            assert_eq!(count, [format!("{}", 2 * round)]);
            // The one server connection went back to the pool.
            let n = count_rows(&setup, "pr_copysync").await;
            assert_eq!(n, 2 * round);
        }
        // Extended-protocol COPY that fails on its data: the Sync the client sends after the
        // error is answered, and the session goes on. (The Sync sent with the Execute was
        // ignored: the batch is open until this one.)
        // As libpq ends it too: CopyDone and Sync.
        for end in [fe::sync(), [fe::copy_done(), fe::sync()].concat()] {
            let mut out = fe::parse("", "copy pr_copysync from stdin", &[]);
            out.extend(fe::bind("", "", &[]));
            out.extend(fe::execute("", 0));
            out.extend(fe::sync());
            raw.send(&out).await;
            let mut r = Vec::new();
            for _ in 0..3 {
                r.push(raw.recv().await);
            }
            assert_eq!(tags(&r), "12G", "{r:?}");
            raw.send(&fe::copy_data(b"not a number\n")).await;
            let e = raw.recv().await;
            assert_eq!(e.code(), "22P02", "{e:?}");
            raw.send(&end).await;
            assert_eq!(tags(&raw.until_ready().await), "Z");
        }
        let count = raw.query_ok("select count(*) from pr_copysync").await;
        assert_eq!(count, ["4"]);
        // A Sync and a Flush pipelined right behind a simple-query COPY, before the
        // CopyInResponse says it is one: the server ignores them as well, and a Sync sent
        // after the CopyDone is answered (with a second ReadyForQuery).
        let mut out = fe::query("copy pr_copysync from stdin");
        out.extend(fe::sync());
        out.extend(fe::flush());
        raw.send(&out).await;
        assert_eq!(raw.recv().await.tag, b'G');
        let mut out = fe::copy_data(b"5\n");
        out.extend(fe::copy_done());
        out.extend(fe::sync());
        raw.send(&out).await;
        let r = raw.until_ready().await;
        assert_eq!(tags(&r), "CZ", "{r:?}");
        assert_eq!(r[0].command_tag(), "COPY 1");
        assert_eq!(tags(&raw.until_ready().await), "Z");
        let count = raw.query_ok("select count(*) from pr_copysync").await;
        assert_eq!(count, ["5"]);
        // Nothing is owed any more: the one server connection goes back to the pool.
        let n = count_rows(&setup, "pr_copysync").await;
        assert_eq!(n, 5);
    });
}

/// A Query that changes settings and runs COPY FROM STDIN (`RESET ALL; COPY ...`, as a
/// script through `psql -c` may send): the proxy puts the client's startup values back after
/// a RESET with a query of its own, which must wait until the copy is over (the server would
/// take it for copy data and fail the copy). Also when the COPY fails before it begins.
#[test]
fn a_settings_change_beside_copy_from_stdin_waits_for_the_copy() {
    bounded(async {
        let proxy = proxy("[routing]\nread_write_split = false\n[pool]\nsize = 1\n");
        let setup = app_client(&proxy).await;
        fresh_table(&setup, "pr_copyreset", "id int").await;
        let mut raw = Raw::connect(
            &proxy.addr(),
            APP_USER,
            APP_PASSWORD,
            APP_DB,
            &[("application_name", "copy-loader")],
        )
        .await;
        raw.send(&fe::query("reset all; copy pr_copyreset from stdin"))
            .await;
        let mut m = raw.recv().await;
        while m.tag == b'S' {
            m = raw.recv().await;
        }
        assert_eq!(m.command_tag(), "RESET");
        let mut g = raw.recv().await;
        while g.tag == b'S' {
            g = raw.recv().await;
        }
        assert_eq!(g.tag, b'G', "CopyInResponse expected, got {g:?}");
        let mut out = fe::copy_data(b"1\n2\n");
        out.extend(fe::copy_done());
        raw.send(&out).await;
        // (The ParameterStatus of the RESET may come along: the value is put back after it.)
        let r = without_status(raw.until_ready().await);
        assert_eq!(tags(&r), "CZ", "{r:?}");
        assert_eq!(r[0].command_tag(), "COPY 2");
        // The startup value is back, as on a direct connection.
        let name = raw.query_ok("show application_name").await;
        assert_eq!(name, ["copy-loader"]);
        // A COPY that fails before it begins (after a COMMIT that kept the RESET), the client
        // pinned to its connection by a temporary table: the restore comes before the next
        // request.
        raw.query_ok("create temp table pr_copyreset_pin (i int)")
            .await;
        raw.send(&fe::query(
            "reset all; commit; copy no_such_table from stdin",
        ))
        .await;
        let r = without_status(raw.until_ready().await);
        assert_eq!(tags(&r), "CNCEZ", "{r:?}");
        assert_eq!(r[3].code(), "42P01");
        let name = raw.query_ok("show application_name").await;
        assert_eq!(name, ["copy-loader"]);
        let count = raw.query_ok("select count(*) from pr_copyreset").await;
        assert_eq!(count, ["2"]);
    });
}

/// The messages without ParameterStatus.
fn without_status(r: Vec<Msg>) -> Vec<Msg> {
    r.into_iter().filter(|m| m.tag != b'S').collect()
}

#[test]
fn copy_fail_and_copy_errors() {
    bounded(async {
        let proxy = proxy("");
        let setup = app_client(&proxy).await;
        fresh_table(&setup, "pr_copyfail", "id int primary key").await;
        let mut raw = Raw::app(&proxy).await;

        // CopyFail: the server ends the COPY with 57014 and the client's message.
        raw.send(&fe::query("copy pr_copyfail from stdin")).await;
        assert_eq!(raw.recv().await.tag, b'G');
        let mut out = fe::copy_data(b"1\n2\n");
        out.extend(fe::copy_fail("the client gave up"));
        raw.send(&out).await;
        let r = raw.until_ready().await;
        assert_eq!(tags(&r), "EZ", "{r:?}");
        assert_eq!(r[0].code(), "57014");
        assert!(
            r[0].fields()[&'M'].contains("the client gave up"),
            "{:?}",
            r[0]
        );
        assert_eq!(r[1].status(), 'I');
        assert_eq!(
            raw.query_ok("select count(*) from pr_copyfail").await,
            vec!["0"]
        );

        // Bad data in the middle: the server errors; the client (not yet aware) keeps sending
        // data and CopyDone, which are dropped. Exactly one error and one ReadyForQuery.
        raw.send(&fe::query("copy pr_copyfail from stdin")).await;
        assert_eq!(raw.recv().await.tag, b'G');
        let mut out = Vec::new();
        for i in 0..1000 {
            if i == 10 {
                out.extend(fe::copy_data(b"not a number\n"));
            } else {
                out.extend(fe::copy_data(format!("{i}\n").as_bytes()));
            }
        }
        raw.send(&out).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut out = Vec::new();
        for i in 1000..2000 {
            out.extend(fe::copy_data(format!("{i}\n").as_bytes()));
        }
        out.extend(fe::copy_done());
        raw.send(&out).await;
        let r = raw.until_ready().await;
        assert_eq!(tags(&r), "EZ", "{r:?}");
        assert_eq!(r[0].code(), "22P02");
        raw.assert_silent(Duration::from_millis(500), "after the failed COPY")
            .await;
        assert_eq!(
            raw.query_ok("select count(*) from pr_copyfail").await,
            vec!["0"]
        );

        // A failed COPY inside a transaction aborts it.
        raw.query_ok("begin").await;
        raw.query_ok("insert into pr_copyfail values (5000)").await;
        raw.send(&fe::query("copy pr_copyfail from stdin")).await;
        assert_eq!(raw.recv().await.tag, b'G');
        let mut out = fe::copy_data(b"5000\n");
        out.extend(fe::copy_done());
        raw.send(&out).await;
        let r = raw.until_ready().await;
        assert_eq!(tags(&r), "EZ", "{r:?}");
        assert_eq!(r[0].code(), "23505");
        assert_eq!(r[1].status(), 'E');
        let r = raw.query("select 1").await;
        assert_eq!(r[0].code(), "25P02");
        let r = raw.query("rollback").await;
        assert_eq!(r.last().unwrap().status(), 'I');

        // COPY of an unknown table: error before CopyInResponse; data the client sends anyway is
        // ignored.
        let mut out = fe::query("copy pr_no_such_table from stdin");
        out.extend(fe::copy_data(b"1\n"));
        out.extend(fe::copy_done());
        raw.send(&out).await;
        let r = raw.until_ready().await;
        assert_eq!(tags(&r), "EZ", "{r:?}");
        assert_eq!(r[0].code(), "42P01");
        raw.assert_silent(Duration::from_millis(300), "after the refused COPY")
            .await;

        // CopyFail through tokio-postgres's extended-protocol COPY path, via raw messages.
        let mut out = fe::parse("", "copy pr_copyfail from stdin", &[]);
        out.extend(fe::bind("", "", &[]));
        out.extend(fe::execute("", 0));
        out.extend(fe::sync());
        raw.send(&out).await;
        let mut r = Vec::new();
        for _ in 0..3 {
            r.push(raw.recv().await);
        }
        assert_eq!(tags(&r), "12G", "{r:?}");
        // Like libpq and tokio-postgres: the Sync sent with Execute is ignored in copy mode, so
        // another one follows CopyFail. Exactly one ReadyForQuery comes back.
        let mut out = fe::copy_fail("nope");
        out.extend(fe::sync());
        raw.send(&out).await;
        let r = raw.until_ready().await;
        assert_eq!(tags(&r), "EZ", "{r:?}");
        assert_eq!(r[0].code(), "57014");
        raw.assert_silent(Duration::from_millis(300), "after the failed extended COPY")
            .await;

        assert_eq!(raw.query_ok("select 7").await, vec!["7"]);
        assert_eq!(
            raw.query_ok("select count(*) from pr_copyfail").await,
            vec!["0"]
        );
    });
}

#[test]
fn extended_copy_gives_the_connection_back() {
    bounded(async {
        use tokio_postgres::binary_copy::BinaryCopyInWriter;
        use tokio_postgres::types::Type;
        // Pool of one: if the proxy loses track of where an extended-protocol COPY ends (the
        // Sync sent with Execute is ignored by the server in copy mode), the connection is never
        // given back and the other client starves.
        let proxy = proxy(
            "[routing]\nread_write_split = false\n[pool]\nsize = 1\ncheckout_timeout = \"3s\"\n",
        );
        let a = app_client(&proxy).await;
        let b = app_client(&proxy).await;
        fresh_table(&a, "pr_xcopy", "id int primary key").await;
        let check_b = |what: &'static str| {
            let b = &b;
            async move {
                let r = within(
                    Duration::from_secs(10),
                    what,
                    b.query_one("select count(*) from pr_xcopy", &[]),
                )
                .await;
                match r {
                    Ok(r) => r.get::<_, i64>(0),
                    Err(e) => panic!("{what}: the other client could not run a query: {e}"),
                }
            }
        };
        assert_eq!(check_b("before any COPY").await, 0);

        // Raw, the message pattern of libpq/tokio-postgres: a named statement, then
        // Bind/Execute/Sync, the data, CopyDone/Sync. The server answers one ReadyForQuery.
        let mut raw = Raw::app(&proxy).await;
        let mut out = fe::parse("cp", "copy pr_xcopy (id) from stdin", &[]);
        out.extend(fe::describe(b'S', "cp"));
        out.extend(fe::sync());
        raw.send(&out).await;
        let r = raw.until_ready().await;
        assert_eq!(tags(&r), "1tnZ", "{r:?}");
        let mut out = fe::bind("", "cp", &[]);
        out.extend(fe::execute("", 0));
        out.extend(fe::sync());
        raw.send(&out).await;
        let mut r = Vec::new();
        for _ in 0..2 {
            r.push(raw.recv().await);
        }
        assert_eq!(tags(&r), "2G", "{r:?}");
        let mut out = fe::copy_data(b"1000\n1001\n");
        out.extend(fe::copy_done());
        out.extend(fe::sync());
        raw.send(&out).await;
        let r = raw.until_ready().await;
        assert_eq!(tags(&r), "CZ", "{r:?}");
        assert_eq!(r[0].command_tag(), "COPY 2");
        raw.assert_silent(Duration::from_millis(300), "after the extended COPY")
            .await;
        // Closing the statement (as tokio-postgres does right after): CloseComplete, then
        // ReadyForQuery, in that order.
        let mut out = fe::close(b'S', "cp");
        out.extend(fe::sync());
        raw.send(&out).await;
        let r = raw.until_ready().await;
        assert_eq!(
            tags(&r),
            "3Z",
            "Close+Sync after an extended-protocol COPY: responses out of order: {r:?}"
        );
        raw.assert_silent(Duration::from_millis(300), "after Close")
            .await;
        assert_eq!(check_b("after a successful extended COPY").await, 2);

        // A failing one (duplicate key).
        let mut out = fe::parse("", "copy pr_xcopy (id) from stdin", &[]);
        out.extend(fe::bind("", "", &[]));
        out.extend(fe::execute("", 0));
        out.extend(fe::sync());
        raw.send(&out).await;
        let mut r = Vec::new();
        for _ in 0..3 {
            r.push(raw.recv().await);
        }
        assert_eq!(tags(&r), "12G", "{r:?}");
        let mut out = fe::copy_data(b"5\n1000\n");
        out.extend(fe::copy_done());
        out.extend(fe::sync());
        raw.send(&out).await;
        let r = raw.until_ready().await;
        assert_eq!(tags(&r), "EZ", "{r:?}");
        assert_eq!(r[0].code(), "23505");
        raw.assert_silent(Duration::from_millis(300), "after the failed COPY")
            .await;
        assert_eq!(check_b("after a failed extended COPY").await, 2);
        assert_eq!(
            raw.query_ok("select count(*) from pr_xcopy").await,
            vec!["2"]
        );
        drop(raw);

        // tokio-postgres COPY FROM STDIN, then more queries on the same client.
        let n = within(WAIT, "copy in", async {
            let sink = a
                .copy_in("copy pr_xcopy (id) from stdin (format binary)")
                .await?;
            let w = BinaryCopyInWriter::new(sink, &[Type::INT4]);
            let mut w = std::pin::pin!(w);
            for i in 0..100i32 {
                w.as_mut().write(&[&i]).await?;
            }
            w.finish().await
        })
        .await
        .unwrap();
        assert_eq!(n, 100);
        for _ in 0..3 {
            let r = within(
                WAIT,
                "query after copy_in",
                a.query_one("select count(*) from pr_xcopy", &[]),
            )
            .await
            .expect("the client that ran copy_in must stay usable");
            assert_eq!(r.get::<_, i64>(0), 102);
        }
        assert_eq!(check_b("after tokio-postgres copy_in").await, 102);
    });
}

// ----------------------------------------------------------------------------------------
// Asynchronous messages
// ----------------------------------------------------------------------------------------

#[test]
fn notices_reach_the_client() {
    bounded(async {
        let proxy = proxy("");
        let (client, mut msgs) = connect_with_messages(&proxy).await;
        within(
            WAIT,
            "DO block",
            client.batch_execute(
                "do $$ begin raise notice 'hello %', 42; raise warning 'careful'; end $$",
            ),
        )
        .await
        .unwrap();
        let mut got = Vec::new();
        while got.len() < 2 {
            match within(WAIT, "notice", msgs.recv()).await {
                Some(AsyncMessage::Notice(n)) => {
                    got.push((n.severity().to_string(), n.message().to_string()))
                }
                Some(_) => {}
                None => panic!("connection ended"),
            }
        }
        assert_eq!(
            got,
            vec![
                ("NOTICE".to_string(), "hello 42".to_string()),
                ("WARNING".to_string(), "careful".to_string())
            ]
        );

        // Raw: notices interleave with the response in server order.
        let mut raw = Raw::app(&proxy).await;
        let r = raw
        .query("do $$ begin raise notice 'first'; end $$; select 1; do $$ begin raise notice 'second'; end $$")
        .await;
        assert_eq!(tags(&r), "NCTDCNCZ", "{r:?}");
        assert_eq!(r[0].fields()[&'M'], "first");
        assert_eq!(r[0].code(), "00000");
        assert_eq!(r[5].fields()[&'M'], "second");
        // Notices from an extended-protocol statement, and from inside a transaction.
        raw.query_ok("begin").await;
        let mut out = fe::pbe(
            "select n from generate_series(1, 3) n, lateral (select 1) x where n > 0",
            &[],
        );
        out.extend(fe::pbe("do $$ begin raise notice 'ext'; end $$", &[]));
        out.extend(fe::sync());
        raw.send(&out).await;
        let r = raw.until_ready().await;
        assert_eq!(tags(&r), "12DDDC12NCZ", "{r:?}");
        assert_eq!(r[8].fields()[&'M'], "ext");
        raw.query_ok("commit").await;
    });
}

/// The next notification (channel, payload) on a message channel, within 10 s.
async fn recv_note(
    msgs: &mut tokio::sync::mpsc::UnboundedReceiver<AsyncMessage>,
    proxy: &Proxy,
) -> (String, String) {
    let fut = async {
        loop {
            match msgs.recv().await {
                Some(AsyncMessage::Notification(n)) => {
                    return (n.channel().to_string(), n.payload().to_string())
                }
                Some(_) => {}
                None => panic!("listener connection ended"),
            }
        }
    };
    match tokio::time::timeout(Duration::from_secs(10), fut).await {
        Ok(n) => n,
        Err(_) => {
            let log: Vec<String> = proxy
                .log()
                .lines()
                .filter(|l| !l.contains("monitor") && !l.contains("tokio_postgres"))
                .map(String::from)
                .collect();
            panic!(
                "no notification within 10 s; proxy log (without monitor lines):\n{}",
                log[log.len().saturating_sub(150)..].join("\n")
            )
        }
    }
}

#[test]
fn listen_notify_between_two_clients() {
    bounded(async {
        // Debug logging: a missed notification is reported with the proxy's log.
        let proxy = start_ready_proxy(support::proxy::ProxyOptions {
            env: vec![("RUST_LOG".into(), "switchyard=debug,info".into())],
            ..Default::default()
        });
        let (listener, mut msgs) = connect_with_messages(&proxy).await;
        listener.batch_execute("listen pr_chan").await.unwrap();
        let notifier = app_client(&proxy).await;

        // Delivered while the listener is idle.
        notifier
            .batch_execute("notify pr_chan, 'one'")
            .await
            .unwrap();
        assert_eq!(
            recv_note(&mut msgs, &proxy).await,
            ("pr_chan".into(), "one".into())
        );
        notifier
            .query("select pg_notify('pr_chan', $1)", &[&"two"])
            .await
            .unwrap();
        assert_eq!(
            recv_note(&mut msgs, &proxy).await,
            ("pr_chan".into(), "two".into())
        );
        // Rolled back: never delivered; committed: delivered once at commit.
        notifier
            .batch_execute("begin; notify pr_chan, 'rolled back'; rollback")
            .await
            .unwrap();
        notifier
            .batch_execute("begin; notify pr_chan, 'three'; notify pr_chan, 'four'; commit")
            .await
            .unwrap();
        assert_eq!(
            recv_note(&mut msgs, &proxy).await,
            ("pr_chan".into(), "three".into())
        );
        assert_eq!(
            recv_note(&mut msgs, &proxy).await,
            ("pr_chan".into(), "four".into())
        );
        // The listener keeps working for queries, and gets notifications sent meanwhile.
        let (r, _) = tokio::join!(listener.query_one("select pg_sleep(0.3), 5", &[]), async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            notifier
                .batch_execute("notify pr_chan, 'five'")
                .await
                .unwrap();
        });
        assert_eq!(r.unwrap().get::<_, i32>(1), 5);
        assert_eq!(
            recv_note(&mut msgs, &proxy).await,
            ("pr_chan".into(), "five".into())
        );
        // Other channels are not delivered; UNLISTEN stops delivery.
        notifier
            .batch_execute("notify pr_other_chan, 'x'")
            .await
            .unwrap();
        listener.batch_execute("unlisten pr_chan").await.unwrap();
        notifier
            .batch_execute("notify pr_chan, 'six'")
            .await
            .unwrap();
        listener.batch_execute("select 1").await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        while let Ok(m) = msgs.try_recv() {
            if let AsyncMessage::Notification(n) = m {
                panic!(
                    "unexpected notification {:?} {:?}",
                    n.channel(),
                    n.payload()
                );
            }
        }

        // Raw: NotificationResponse arrives unsolicited on an idle connection.
        let mut raw = Raw::app(&proxy).await;
        raw.query_ok("listen pr_chan2").await;
        notifier
            .batch_execute("notify pr_chan2, 'raw payload'")
            .await
            .unwrap();
        let m = raw.recv().await;
        assert_eq!(m.tag, b'A', "{m:?}");
        let mut b = &m.body[4..];
        let (chan, rest) = split_cstr(b);
        b = rest;
        let (payload, _) = split_cstr(b);
        assert_eq!(
            (chan.as_str(), payload.as_str()),
            ("pr_chan2", "raw payload")
        );
    });
}

#[test]
fn parameter_status_updates() {
    bounded(async {
        // Pool of one: both clients share a server connection, so settings must follow each
        // client and never leak to the other.
        let proxy = proxy("[pool]\nsize = 1\n");
        let mut a = Raw::connect(
            &proxy.addr(),
            APP_USER,
            APP_PASSWORD,
            APP_DB,
            &[("application_name", "pr_startup_a")],
        )
        .await;
        assert_eq!(
            a.params.get("application_name").map(String::as_str),
            Some("pr_startup_a"),
            "greeting: {:?}",
            a.params
        );
        for k in [
            "server_version",
            "client_encoding",
            "DateStyle",
            "integer_datetimes",
            "standard_conforming_strings",
            "TimeZone",
        ] {
            assert!(a.params.contains_key(k), "{k} missing from {:?}", a.params);
        }
        let mut b = Raw::connect(
            &proxy.addr(),
            APP_USER,
            APP_PASSWORD,
            APP_DB,
            &[("application_name", "pr_startup_b")],
        )
        .await;
        let b_datestyle = b.params["DateStyle"].clone();
        assert_ne!(b_datestyle, "SQL, DMY");

        let r = a.query("set application_name = 'pr_changed_a'").await;
        assert_eq!(sync_tags(&r), "CZ", "{r:?}");
        let reported: Vec<(String, String)> =
            r.iter().filter(|m| m.tag == b'S').map(Msg::param).collect();
        // The new value is reported last; a redundant report of A's own earlier value (the proxy
        // bringing a pooled connection in line) is harmless, anything else is not.
        assert_eq!(
            reported.last(),
            Some(&("application_name".to_string(), "pr_changed_a".to_string())),
            "{r:?}"
        );
        assert!(
            reported.iter().all(|(k, v)| k != "application_name"
                || v == "pr_changed_a"
                || v == "pr_startup_a"),
            "{r:?}"
        );
        assert_eq!(
            a.query_ok("show application_name").await,
            vec!["pr_changed_a"]
        );
        // B never sees A's value, neither as ParameterStatus nor in SHOW.
        let r = b.query("show application_name").await;
        assert_eq!(sync_tags(&r), "TDCZ", "{r:?}");
        assert_eq!(rows(&r), vec!["pr_startup_b"]);
        assert!(
            r.iter()
                .filter(|m| m.tag == b'S')
                .all(|m| m.param() != ("application_name".into(), "pr_changed_a".into())),
            "B got a ParameterStatus for someone else's change: {r:?}"
        );
        assert_eq!(b.params["application_name"], "pr_startup_b");
        // A's setting survives B's use of the shared connection.
        assert_eq!(
            a.query_ok("show application_name").await,
            vec!["pr_changed_a"]
        );
        assert_eq!(a.params["application_name"], "pr_changed_a");

        // Other reported settings.
        let r = a.query("set timezone = 'America/New_York'").await;
        assert!(
            r.iter()
                .any(|m| m.tag == b'S'
                    && m.param() == ("TimeZone".into(), "America/New_York".into())),
            "{r:?}"
        );
        let r = a.query("set datestyle = 'SQL, DMY'").await;
        assert!(
            r.iter()
                .any(|m| m.tag == b'S' && m.param() == ("DateStyle".into(), "SQL, DMY".into())),
            "{r:?}"
        );
        let b_tz = b.params["TimeZone"].clone();
        assert_ne!(b_tz, "America/New_York");
        assert_eq!(
            b.query_ok("show timezone").await,
            vec![b_tz.clone()],
            "B must keep its own time zone"
        );
        assert_eq!(b.params["TimeZone"], b_tz);
        assert_eq!(
            b.query_ok("show datestyle").await,
            vec![b_datestyle.clone()],
            "B must keep its own DateStyle"
        );
        assert_eq!(b.params["DateStyle"], b_datestyle);
        assert_eq!(a.query_ok("show timezone").await, vec!["America/New_York"]);

        // SET inside a rolled-back transaction: the client is told the value went back.
        a.query_ok("begin").await;
        a.query_ok("set application_name = 'pr_in_txn'").await;
        assert_eq!(a.params["application_name"], "pr_in_txn");
        a.query_ok("rollback").await;
        assert_eq!(
            a.params["application_name"], "pr_changed_a",
            "after ROLLBACK the client must learn the old value"
        );
        assert_eq!(
            a.query_ok("show application_name").await,
            vec!["pr_changed_a"]
        );
        // set_config through the extended protocol.
        let mut out = fe::pbe(
            "select set_config('application_name', $1, false)",
            &["pr_ext"],
        );
        out.extend(fe::sync());
        a.send(&out).await;
        let r = a.until_ready().await;
        assert!(r.iter().any(|m| m.tag == b'S'), "{r:?}");
        assert_eq!(a.params["application_name"], "pr_ext");
        assert_eq!(
            b.query_ok("show application_name").await,
            vec!["pr_startup_b"]
        );
        assert_eq!(a.query_ok("show application_name").await, vec!["pr_ext"]);
    });
}

#[ignore = "known limitation (README): RESET of a startup parameter and a read of it in the same multi-statement message"]
#[test]
fn reset_follows_the_client() {
    bounded(async {
        // Pool of one, two clients: each RESET must leave the client with what PostgreSQL would
        // give it (the startup value for startup parameters, else the server default), also
        // after the other client used the connection.
        let proxy = proxy("[pool]\nsize = 1\n");
        let mut a = Raw::connect(
            &proxy.addr(),
            APP_USER,
            APP_PASSWORD,
            APP_DB,
            &[("application_name", "pr_reset_a")],
        )
        .await;
        let mut b = Raw::connect(
            &proxy.addr(),
            APP_USER,
            APP_PASSWORD,
            APP_DB,
            &[("application_name", "pr_reset_b")],
        )
        .await;
        let default_work_mem = b.query_ok("show work_mem").await.remove(0);
        assert_ne!(default_work_mem, "7MB");

        // A setting that is not a startup parameter: SET, then RESET.
        a.query_ok("set work_mem = '7MB'").await;
        assert_eq!(a.query_ok("show work_mem").await, vec!["7MB"]);
        assert_eq!(
            b.query_ok("show work_mem").await,
            vec![default_work_mem.clone()]
        );
        assert_eq!(a.query_ok("show work_mem").await, vec!["7MB"]);
        a.query_ok("reset work_mem").await;
        assert_eq!(
            a.query_ok("show work_mem").await,
            vec![default_work_mem.clone()]
        );
        assert_eq!(
            b.query_ok("show work_mem").await,
            vec![default_work_mem.clone()]
        );
        assert_eq!(
            a.query_ok("show work_mem").await,
            vec![default_work_mem.clone()],
            "a setting RESET by the client came back after another client used the connection"
        );
        a.query_ok("set work_mem = '7MB'").await;
        a.query_ok("reset all").await;
        b.query_ok("select 1").await;
        assert_eq!(
            a.query_ok("show work_mem").await,
            vec![default_work_mem.clone()],
            "after RESET ALL"
        );

        // A startup parameter: RESET goes back to the value from the startup packet.
        a.query_ok("set application_name = 'pr_reset_changed'")
            .await;
        assert_eq!(a.params["application_name"], "pr_reset_changed");
        let r = a
            .query("reset application_name; show application_name")
            .await;
        assert_eq!(
            rows(&r),
            vec!["pr_reset_a"],
            "SHOW right after RESET of a startup parameter: {r:?}"
        );
        assert_eq!(
            a.params["application_name"], "pr_reset_a",
            "ParameterStatus after RESET of a startup parameter"
        );
        assert_eq!(
            a.query_ok("show application_name").await,
            vec!["pr_reset_a"]
        );
        b.query_ok("select 1").await;
        assert_eq!(
            a.query_ok("show application_name").await,
            vec!["pr_reset_a"]
        );
        assert_eq!(
            b.query_ok("show application_name").await,
            vec!["pr_reset_b"]
        );
    });
}

// ----------------------------------------------------------------------------------------
// Errors, transactions, Terminate
// ----------------------------------------------------------------------------------------

#[test]
fn errors_outside_and_inside_transactions() {
    bounded(async {
        let proxy = proxy("");
        let client = app_client(&proxy).await;
        fresh_table(&client, "pr_errs", "id int primary key, v text not null").await;

        // Outside a transaction: the error, then business as usual.
        let e = client.query("select 1/0", &[]).await.unwrap_err();
        assert_eq!(sqlstate(&e), "22012");
        client
            .execute("insert into pr_errs values (1, 'a')", &[])
            .await
            .unwrap();
        let e = client
            .execute("insert into pr_errs values (1, 'b')", &[])
            .await
            .unwrap_err();
        let db = e.as_db_error().expect("a server error");
        assert_eq!(db.code().code(), "23505");
        assert_eq!(db.constraint(), Some("pr_errs_pkey"));
        assert_eq!(db.table(), Some("pr_errs"));
        assert!(db.detail().unwrap_or("").contains("(id)=(1)"), "{db:?}");
        let e = client
            .query("select * from pr_nowhere", &[])
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&e), "42P01");
        assert_eq!(
            client
                .query_one("select 2", &[])
                .await
                .unwrap()
                .get::<_, i32>(0),
            2
        );

        // Inside: the transaction is aborted, every statement fails with 25P02 until ROLLBACK.
        client.batch_execute("begin").await.unwrap();
        client
            .execute("insert into pr_errs values (2, 'b')", &[])
            .await
            .unwrap();
        let e = client.query("select 1/0", &[]).await.unwrap_err();
        assert_eq!(sqlstate(&e), "22012");
        for _ in 0..2 {
            let e = client.query("select 1", &[]).await.unwrap_err();
            assert_eq!(sqlstate(&e), "25P02");
            let e = client.batch_execute("select 1").await.unwrap_err();
            assert_eq!(sqlstate(&e), "25P02");
        }
        client.batch_execute("rollback").await.unwrap();
        let n: i64 = client
            .query_one("select count(*) from pr_errs", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 1, "the aborted transaction's insert must be gone");

        // Raw: status bytes, COMMIT of a failed transaction reports ROLLBACK, savepoints.
        let mut raw = Raw::app(&proxy).await;
        let r = raw.query("select 1/0").await;
        assert_eq!(tags(&r), "EZ");
        assert_eq!(r[1].status(), 'I');
        let f = r[0].fields();
        assert_eq!(f[&'S'], "ERROR");
        assert_eq!(f[&'V'], "ERROR");
        assert_eq!(f[&'M'], "division by zero");
        let r = raw.query("select 1 from pr_errs where").await;
        assert_eq!(r[0].code(), "42601");
        assert!(
            r[0].fields().contains_key(&'P'),
            "position field: {:?}",
            r[0]
        );

        let r = raw.query("begin").await;
        assert_eq!(r[1].status(), 'T');
        // The first statement of the transaction fails (the proxy may have deferred BEGIN).
        let r = raw.query("selec 1").await;
        assert_eq!(tags(&r), "EZ", "{r:?}");
        assert_eq!(r[1].status(), 'E');
        let r = raw.query("insert into pr_errs values (3, 'c')").await;
        assert_eq!(r[0].code(), "25P02");
        assert_eq!(r[1].status(), 'E');
        let r = raw.query("commit").await;
        assert_eq!(tags(&r), "CZ", "{r:?}");
        assert_eq!(r[0].command_tag(), "ROLLBACK");
        assert_eq!(r[1].status(), 'I');

        let r = raw
            .query("begin; insert into pr_errs values (4, 'd'); savepoint s1")
            .await;
        assert_eq!(r.last().unwrap().status(), 'T', "{r:?}");
        let r = raw.query("insert into pr_errs values (5, null)").await;
        assert_eq!(r[0].code(), "23502");
        assert_eq!(r[1].status(), 'E');
        let r = raw.query("rollback to savepoint s1").await;
        assert_eq!(r.last().unwrap().status(), 'T', "{r:?}");
        raw.query_ok("insert into pr_errs values (6, 'f')").await;
        let r = raw.query("commit").await;
        assert_eq!(r[0].command_tag(), "COMMIT");
        assert_eq!(
            raw.query_ok("select string_agg(id::text, ',' order by id) from pr_errs")
                .await,
            vec!["1,4,6"]
        );

        // A statement error in a read-only transaction; the session stays usable.
        raw.query_ok("begin read only").await;
        let r = raw.query("insert into pr_errs values (7, 'g')").await;
        assert_eq!(r[0].code(), "25006");
        assert_eq!(r[1].status(), 'E');
        let r = raw.query("rollback").await;
        assert_eq!(r.last().unwrap().status(), 'I');
        assert_eq!(raw.query_ok("select 8").await, vec!["8"]);
    });
}

#[test]
fn terminate_closes_and_releases_the_server_connection() {
    bounded(async {
        // Pool of one: the next client can only run if the first one's connection came back
        // clean (its transaction rolled back, its lock released).
        let proxy = proxy("[pool]\nsize = 1\ncheckout_timeout = \"10s\"\n");
        let setup = app_client(&proxy).await;
        fresh_table(&setup, "pr_term", "id int").await;
        drop(setup);

        // Terminate while idle.
        let mut raw = Raw::app(&proxy).await;
        raw.query_ok("select 1").await;
        raw.send(&fe::terminate()).await;
        raw.expect_eof(Duration::from_secs(5)).await;

        // Terminate inside a transaction holding a lock.
        let mut raw = Raw::app(&proxy).await;
        raw.query_ok("begin").await;
        raw.query_ok("insert into pr_term values (1)").await;
        raw.query_ok("lock table pr_term in access exclusive mode")
            .await;
        raw.send(&fe::terminate()).await;
        raw.expect_eof(Duration::from_secs(5)).await;

        let other = app_client(&proxy).await;
        let started = Instant::now();
        within(
            Duration::from_secs(15),
            "next client after Terminate",
            async {
                other
                    .batch_execute(
                        "begin; set local lock_timeout = '2s'; lock table pr_term nowait; commit",
                    )
                    .await
                    .expect("the terminated client's lock must be gone");
            },
        )
        .await;
        let n: i64 = other
            .query_one("select count(*) from pr_term", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            n, 0,
            "the terminated client's transaction must be rolled back"
        );
        assert!(started.elapsed() < Duration::from_secs(10));

        // Terminate while a query runs: as PostgreSQL does, the query finishes and is
        // answered, then the connection closes; the pool recovers.
        let mut raw = Raw::app(&proxy).await;
        let mut out = fe::query("select pg_sleep(1)");
        out.extend(fe::terminate());
        raw.send(&out).await;
        let answered = raw.until_ready().await;
        assert!(
            answered.iter().any(|m| m.tag == b'C'),
            "the query sent before Terminate was not answered: {answered:?}"
        );
        raw.expect_eof(Duration::from_secs(5)).await;
        // Inside an extended-protocol batch without its Sync the server answers nothing
        // before the Sync: the proxy does not wait for answers, it closes.
        let mut raw = Raw::app(&proxy).await;
        let mut out = fe::parse("", "select pg_sleep(1)", &[]);
        out.extend(fe::bind("", "", &[]));
        out.extend(fe::execute("", 0));
        out.extend(fe::terminate());
        raw.send(&out).await;
        raw.expect_eof(Duration::from_secs(5)).await;
        // Nor in the middle of a COPY FROM STDIN, where the server waits for data.
        let mut raw = Raw::app(&proxy).await;
        raw.send(&fe::query("copy pr_term from stdin")).await;
        let g = raw.recv().await;
        assert_eq!(g.tag, b'G', "CopyInResponse: {g:?}");
        raw.send(&fe::terminate()).await;
        raw.expect_eof(Duration::from_secs(5)).await;
        // The same with the COPY and the Terminate in one packet (the copy starts after the
        // Terminate was read).
        let mut raw = Raw::app(&proxy).await;
        let mut out = fe::query("copy pr_term from stdin");
        out.extend(fe::terminate());
        raw.send(&out).await;
        raw.expect_eof(Duration::from_secs(5)).await;
        within(
            Duration::from_secs(15),
            "query after Terminate mid-query",
            async {
                other.query_one("select 1", &[]).await.unwrap();
            },
        )
        .await;

        // A client that vanishes without Terminate inside a transaction.
        let mut raw = Raw::app(&proxy).await;
        raw.query_ok("begin").await;
        raw.query_ok("insert into pr_term values (2)").await;
        raw.query_ok("lock table pr_term in access exclusive mode")
            .await;
        drop(raw);
        within(
            Duration::from_secs(15),
            "next client after disconnect",
            async {
                other
                    .batch_execute(
                        "begin; set local lock_timeout = '2s'; lock table pr_term nowait; commit",
                    )
                    .await
                    .expect("the vanished client's lock must be gone");
            },
        )
        .await;
        let n: i64 = other
            .query_one("select count(*) from pr_term", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0);

        // A write and Terminate in one packet: PostgreSQL runs the write before it reads the
        // Terminate, and so it must run through the proxy.
        let mut raw = Raw::app(&proxy).await;
        let mut out = fe::query("insert into pr_term values (3)");
        out.extend(fe::terminate());
        raw.send(&out).await;
        raw.expect_eof(Duration::from_secs(5)).await;
        let row_of = |id: i32| format!("select count(*) from pr_term where id = {id}");
        // Whether the row shows up within 15 s.
        let ran = |sql: String| {
            let other = &other;
            async move {
                let deadline = Instant::now() + Duration::from_secs(15);
                loop {
                    let n: i64 = other.query_one(&sql, &[]).await.unwrap().get(0);
                    if n == 1 || Instant::now() > deadline {
                        return n == 1;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        assert!(
            ran(row_of(3)).await,
            "the write sent with Terminate never ran\n{}",
            proxy.log_tail(20)
        );

        // The same write queued behind a read running on a replica, and the client closes its
        // socket right after the Terminate: PostgreSQL would still read and run the write.
        let mut raw = Raw::app(&proxy).await;
        let mut out = fe::query("/* switchyard:replica */ select pg_sleep(0.5)");
        out.extend(fe::query("insert into pr_term values (4)"));
        out.extend(fe::terminate());
        raw.send(&out).await;
        drop(raw);
        assert!(
            ran(row_of(4)).await,
            "a write queued before Terminate was lost when the client closed\n{}",
            proxy.log_tail(20)
        );
    });
}

/// A client that half-closes its connection (shuts down its sending side) and reads on gets the
/// answers to every whole message it sent, as from PostgreSQL, then the end of the connection:
/// a write among them commits and is answered. A batch without its Sync is not committed
/// (PostgreSQL ends its implicit transaction unfinished when the input ends).
#[test]
fn a_client_that_half_closes_gets_its_answers() {
    bounded(async {
        let proxy = proxy("");
        let setup = app_client(&proxy).await;
        fresh_table(&setup, "pr_half", "id int").await;

        // A read still running when the input ends, a write behind it, and the first bytes
        // of a message the input ends inside (dropped, as PostgreSQL drops it).
        let mut raw = Raw::app(&proxy).await;
        let mut out = fe::query("select pg_sleep(0.5), 'half'");
        out.extend(fe::query("insert into pr_half values (1)"));
        out.extend(&fe::query("insert into pr_half values (2)")[..7]);
        raw.send(&out).await;
        raw.s.shutdown().await.expect("half-close");
        let got = raw.until_closed().await;
        assert_eq!(sync_tags(&got), "TDCZCZ", "{got:?}\n{}", proxy.log_tail(20));
        assert_eq!(rows(&got), vec![""], "{got:?}");

        // An extended-protocol batch with its Sync.
        let mut raw = Raw::app(&proxy).await;
        let mut out = fe::parse("", "insert into pr_half values (3)", &[]);
        out.extend(fe::bind("", "", &[]));
        out.extend(fe::execute("", 0));
        out.extend(fe::sync());
        raw.send(&out).await;
        raw.s.shutdown().await.expect("half-close");
        let got = raw.until_closed().await;
        assert_eq!(sync_tags(&got), "12CZ", "{got:?}");

        // The same without its Sync.
        let mut raw = Raw::app(&proxy).await;
        let mut out = fe::parse("", "insert into pr_half values (4)", &[]);
        out.extend(fe::bind("", "", &[]));
        out.extend(fe::execute("", 0));
        raw.send(&out).await;
        raw.s.shutdown().await.expect("half-close");
        let got = raw.until_closed().await;
        assert!(got.iter().all(|m| m.tag != b'C'), "{got:?}");

        let ids: Vec<i32> = setup
            .query("select id from pr_half order by id", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(ids, vec![1, 3]);
    });
}

/// A client that closes its connection entirely in the middle of a large result is given up
/// at the first answer that cannot be written, as before the end of its input was read as a
/// half-close: its server connection is closed (the server process ends), not read to the
/// end of the result for nobody.
#[test]
fn a_client_gone_mid_result_is_not_read_to_the_end() {
    bounded(async {
        let proxy = proxy("[routing]\nread_write_split = false\n");
        let watcher = direct_primary().await;
        let sql = "select repeat('x', 100), g from generate_series(1, 300000000) g /* pr_gone */";
        let mut raw = Raw::app(&proxy).await;
        raw.send(&fe::query(sql)).await;
        // Rows are flowing.
        let first = raw.recv().await;
        assert_eq!(first.tag, b'T', "{first:?}");
        // Its input ends (read as a half-close, the answers going on), then it is gone.
        raw.s.shutdown().await.expect("half-close");
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(raw);
        let running = "select count(*) from pg_stat_activity \
                       where query like '%pr_gone%' and pid <> pg_backend_pid()";
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let n: i64 = watcher.query_one(running, &[]).await.unwrap().get(0);
            if n == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the query of a client that left still runs after 30 s\n{}",
                proxy.log_tail(20)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

// ----------------------------------------------------------------------------------------
// CancelRequest
// ----------------------------------------------------------------------------------------

#[test]
fn cancel_reaches_only_the_clients_query() {
    bounded(async {
        // Everything on the primary, two server connections: both sleeps share the pool.
        let proxy = proxy("[routing]\nread_write_split = false\n[pool]\nsize = 2\n");
        let a = std::sync::Arc::new(app_client(&proxy).await);
        let b = app_client(&proxy).await;
        let watcher = direct_primary().await;

        let a2 = a.clone();
        let a_task = tokio::spawn(async move {
            let t = Instant::now();
            let r = a2.query("select pg_sleep(30) /* pr_cancel_a */", &[]).await;
            (r.map(|_| ()), t.elapsed())
        });
        wait_running(&watcher, "select pg_sleep(30) /* pr_cancel_a */").await;
        let b_task = tokio::spawn(async move {
            let t = Instant::now();
            let r = b
                .query_one("select pg_sleep(3), 'b' /* pr_cancel_b */", &[])
                .await;
            (r.map(|r| r.get::<_, String>(1)), t.elapsed())
        });
        // Both run when the cancel comes.
        wait_running(&watcher, "select pg_sleep(3), 'b' /* pr_cancel_b */").await;
        within(WAIT, "cancel_query", a.cancel_token().cancel_query(NoTls))
            .await
            .expect("sending the cancel request");
        // Not cancelled, the sleep would end after 30 s, without an error.
        let (ra, _) = within(Duration::from_secs(60), "A after cancel", a_task)
            .await
            .unwrap();
        let e = ra.expect_err("A's query must be cancelled");
        assert_eq!(sqlstate(&e), "57014", "{e}");
        let (rb, eb) = within(WAIT, "B", b_task).await.unwrap();
        assert_eq!(
            rb.expect("B's query must not be cancelled"),
            "b",
            "B's result"
        );
        assert!(eb >= Duration::from_millis(2900), "B ran only {eb:?}");
        // A's connection is usable afterwards and a stray cancel hurts nobody.
        assert_eq!(
            a.query_one("select 3", &[]).await.unwrap().get::<_, i32>(0),
            3
        );
        within(WAIT, "idle cancel", a.cancel_token().cancel_query(NoTls))
            .await
            .unwrap();
        let r = within(
            WAIT,
            "query after an idle cancel",
            a.query_one("select pg_sleep(0.5), 4", &[]),
        )
        .await
        .expect("a cancel sent while idle must not hit a later query");
        assert_eq!(r.get::<_, i32>(1), 4);

        // A cancel with the right pid and a wrong secret is ignored: sent while the query
        // runs (and still runs after the proxy took the request), the query completes.
        let mut raw = Raw::app(&proxy).await;
        let sleeper = "select pg_sleep(5), 'survived' /* pr_wrong_key */";
        raw.send(&fe::query(sleeper)).await;
        wait_running(&watcher, sleeper).await;
        raw_cancel(&proxy.addr(), (raw.key.0, raw.key.1.wrapping_add(1))).await;
        let still: i64 = watcher
            .query_one(
                "select count(*) from pg_stat_activity where state = 'active' and query = $1",
                &[&sleeper],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            still, 1,
            "the query ended before the wrong-key cancel was taken: the check proves nothing"
        );
        let r = raw.until_ready().await;
        assert_eq!(tags(&r), "TDCZ", "{r:?}");
        // And with the right key it works (raw client, replica-routed read this time).
        drop(raw);
        let proxy2 = self::proxy("");
        let mut raw = Raw::app(&proxy2).await;
        let sleeper = "select pg_sleep(30) /* pr_cancel_raw */";
        raw.send(&fe::query(sleeper)).await;
        wait_running_anywhere(sleeper).await;
        raw_cancel(&proxy2.addr(), raw.key).await;
        // Not cancelled, the sleep would end after 30 s, without an error.
        let r = within(Duration::from_secs(60), "raw cancel", raw.until_ready()).await;
        assert_cancelled(&r);
        assert_eq!(raw.query_ok("select 5").await, vec!["5"]);
    });
}

/// A cancel request that reaches another switchyard process than its client's (a load
/// balancer's choice, or the kernel's under `so_reuseport`) is ignored there; with `[peering]`
/// that process hands it to its peers and it reaches the query. A request crosses one hop at
/// most, an unreachable peer does not stop the others, and the peering port takes nothing but
/// cancel requests.
#[test]
fn cancel_reaches_the_clients_process_through_a_peer() {
    bounded(async {
        let mut held: Vec<std::net::TcpListener> = (0..3)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let [pa, pb, dead] = [0, 1, 2].map(|i| held[i].local_addr().unwrap().port());
        // The peers' ports are freed for them to listen on; `dead` stays taken until every
        // proxy has its own ports (one got it as its http_listen), then refuses connections.
        let dead_port = held.pop();
        drop(held);
        // One list for every process: its own entry is skipped; `dead` refuses connections.
        let peers =
            format!("peers = [\"127.0.0.1:{pa}\", \"127.0.0.1:{pb}\", \"127.0.0.1:{dead}\"]\n");
        let a = proxy(&format!(
            "[routing]\nread_write_split = false\n[peering]\nlisten = \"127.0.0.1:{pa}\"\n{peers}"
        ));
        let b = proxy(&format!("[peering]\nlisten = \"127.0.0.1:{pb}\"\n{peers}"));
        let lone = proxy("");
        drop(dead_port);
        let series =
            |result: &str| format!("switchyard_cancel_requests_total{{result=\"{result}\"}}");

        let watcher = direct_primary().await;

        // Without peering, a process that did not issue the key ignores it.
        let mut raw = Raw::app(&a).await;
        let sql = "select pg_sleep(3), 'survived' /* pr_peer_lone */";
        raw.send(&fe::query(sql)).await;
        wait_running(&watcher, sql).await;
        raw_cancel(&lone.addr(), raw.key).await;
        let r = raw.until_ready().await;
        assert_eq!(tags(&r), "TDCZ", "{r:?}");
        assert_eq!(lone.metric(&series("unknown")).await, 1.0);

        // With it, that process forwards the key and the query is cancelled.
        let sql = "select pg_sleep(30) /* pr_peer_cancel */";
        raw.send(&fe::query(sql)).await;
        wait_running(&watcher, sql).await;
        raw_cancel(&b.addr(), raw.key).await;
        let r = within(
            Duration::from_secs(10),
            "cancel through a peer",
            raw.until_ready(),
        )
        .await;
        assert_cancelled(&r);
        assert_eq!(raw.query_ok("select 5").await, vec!["5"]);
        assert_eq!(b.metric(&series("to_peers")).await, 1.0);
        assert_eq!(b.metric(&series("unknown")).await, 0.0);
        assert_eq!(
            a.metric(&series("forwarded")).await,
            1.0,
            "placed by the client's process"
        );
        assert!(
            b.log()
                .contains("forwarding a cancel request to a peer failed"),
            "the unreachable peer is logged\n{}",
            b.log_tail(20)
        );

        // A key nobody issued goes to the peers once; the peer that gets it does not send it on.
        raw_cancel(&b.addr(), (12345, 678)).await;
        assert_eq!(b.metric(&series("to_peers")).await, 2.0);
        assert_eq!(a.metric(&series("peer_unknown")).await, 1.0);
        assert_eq!(a.metric(&series("to_peers")).await, 0.0, "one hop only");
        assert_eq!(
            b.metric(&series("peer_unknown")).await,
            0.0,
            "B skips its own entry, and A does not send the request on"
        );

        // The peering port answers anything else with an error that says what it is.
        let mut s = within(
            WAIT,
            "peering connect",
            TcpStream::connect(("127.0.0.1", pa)),
        )
        .await
        .unwrap();
        s.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
            .await
            .unwrap();
        let mut answer = Vec::new();
        within(WAIT, "peering port answer", s.read_to_end(&mut answer))
            .await
            .unwrap();
        assert_eq!(answer.first(), Some(&b'E'), "{answer:?}");
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.contains("08P01") && text.contains("peering port"),
            "{text}"
        );
    });
}

/// The peering port holds at most `max_client_connections` connections at once, each for a
/// short while: past that a connection is closed unread, and one that sends nothing gets
/// FATAL 08P01 after two seconds and frees its place.
#[test]
fn peering_port_is_bounded() {
    bounded(async {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let p = start_ready_proxy(support::proxy::ProxyOptions {
            extra_top: "max_client_connections = 2".into(),
            extra_tables: format!("[peering]\nlisten = \"127.0.0.1:{port}\"\n"),
            ..Default::default()
        });
        let unknown = "switchyard_cancel_requests_total{result=\"peer_unknown\"}";
        let mut cancel = vec![0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e];
        cancel.extend_from_slice(&12345i32.to_be_bytes());
        cancel.extend_from_slice(&678i32.to_be_bytes());
        let connect = || async {
            within(
                WAIT,
                "peering connect",
                TcpStream::connect(("127.0.0.1", port)),
            )
            .await
            .unwrap()
        };
        // Two silent connections take both places (accepted in the order they connected);
        // a third is closed unread. The places free up two seconds after they were taken:
        // should this test be stalled that long between its connects, it tries again.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let before = p.metric(unknown).await;
            let t = Instant::now();
            let silent = [connect().await, connect().await];
            let mut third = connect().await;
            third.write_all(&cancel).await.unwrap();
            let stalled = t.elapsed() > Duration::from_millis(1500);
            let mut sink = Vec::new();
            let _ = within(
                WAIT,
                "the third connection closed",
                third.read_to_end(&mut sink),
            )
            .await;
            assert!(sink.is_empty(), "{sink:?}");
            // The silent ones are told what the port is after their time, and closed.
            for mut s in silent {
                let mut answer = Vec::new();
                let _ = within(
                    WAIT,
                    "a silent connection closed",
                    s.read_to_end(&mut answer),
                )
                .await;
                assert!(
                    String::from_utf8_lossy(&answer).contains("08P01"),
                    "{answer:?}"
                );
            }
            if p.metric(unknown).await == before {
                break;
            }
            assert!(
                stalled && attempt < 3,
                "the third request was read although both places were taken"
            );
        }
        // Then a request is placed again.
        let before = p.metric(unknown).await;
        let mut s = connect().await;
        s.write_all(&cancel).await.unwrap();
        let mut sink = Vec::new();
        let _ = within(WAIT, "placed", s.read_to_end(&mut sink)).await;
        assert_eq!(p.metric(unknown).await, before + 1.0);
    });
}

// ----------------------------------------------------------------------------------------
// Large results and values: streamed, bounded proxy memory
// ----------------------------------------------------------------------------------------

/// Extra memory the proxy may use while relaying a large result or value.
const MEMORY_BUDGET_KB: u64 = 60 * 1024;

/// A client's name for a statement is kept apart from the Parse message that gave it: one
/// large text parsed under many names is kept once, not once per name.
#[test]
fn a_named_statement_does_not_keep_its_parse_message() {
    bounded(async {
        let proxy = proxy("");
        let pid = proxy.pid();
        let mut raw = Raw::app(&proxy).await;
        raw.query_ok("select 1").await;
        let base = proc_kb(pid, "VmRSS");
        // 1 MB of comment: 150 names would keep 150 MB if each kept its message.
        let text = format!("/* {} */ select 1", "x".repeat(1 << 20));
        for i in 0..150 {
            raw.send(&[fe::parse(&format!("big{i}"), &text, &[]), fe::sync()].concat())
                .await;
            assert_eq!(sync_tags(&raw.until_ready().await), "1Z");
        }
        let after = proc_kb(pid, "VmRSS");
        assert!(
            after.saturating_sub(base) < MEMORY_BUDGET_KB,
            "proxy RSS grew from {base} kB to {after} kB for 150 names of one statement"
        );
        raw.send(&[fe::bind("", "big149", &[]), fe::execute("", 0), fe::sync()].concat())
            .await;
        assert_eq!(rows(&raw.until_ready().await), ["1"]);
    });
}

#[test]
fn large_result_streams_with_bounded_memory() {
    bounded(async {
        let proxy = proxy("");
        let pid = proxy.pid();
        let mut raw = Raw::app(&proxy).await;
        raw.query_ok("select 1").await;
        let base = proc_kb(pid, "VmRSS");

        // ~230 MB of rows. The client does not read for a while: the proxy must not buffer.
        raw.send(&fe::query(
            "select g, repeat('x', 200) from generate_series(1, 1000000) g",
        ))
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let stalled = proc_kb(pid, "VmRSS");
        assert!(
            stalled.saturating_sub(base) < MEMORY_BUDGET_KB,
            "proxy RSS grew from {base} kB to {stalled} kB while the client was not reading"
        );
        let mut count = 0u64;
        let mut sum = 0u64;
        let t = Instant::now();
        loop {
            let m = raw.recv().await;
            match m.tag {
                b'T' => {}
                b'D' => {
                    let mut b = &m.body[..];
                    assert_eq!(b.get_i16(), 2);
                    let len = b.get_i32() as usize;
                    let g: u64 = std::str::from_utf8(&b[..len]).unwrap().parse().unwrap();
                    b.advance(len);
                    assert_eq!(b.get_i32(), 200);
                    sum += g;
                    count += 1;
                }
                b'C' => assert_eq!(m.command_tag(), "SELECT 1000000"),
                b'Z' => break,
                _ => panic!("unexpected {m:?}"),
            }
            assert!(t.elapsed() < Duration::from_secs(90), "too slow");
        }
        assert_eq!(count, 1_000_000);
        assert_eq!(sum, 1_000_000 * 1_000_001 / 2);

        // Same through the extended protocol with tokio-postgres (whole result at once).
        let client = app_client(&proxy).await;
        let rows = within(
            Duration::from_secs(60),
            "1M rows via tokio-postgres",
            client.query("select g from generate_series(1, 1000000) g", &[]),
        )
        .await
        .unwrap();
        assert_eq!(rows.len(), 1_000_000);
        assert_eq!(rows[999_999].get::<_, i32>(0), 1_000_000);
        drop(rows);

        let peak = proc_kb(pid, "VmHWM");
        assert!(
            peak.saturating_sub(base) < MEMORY_BUDGET_KB,
            "proxy peak RSS {peak} kB vs {base} kB before: it buffered the result"
        );
    });
}

#[test]
fn large_value_streams_with_bounded_memory() {
    bounded(async {
        use tokio_postgres::binary_copy::BinaryCopyInWriter;
        use tokio_postgres::types::Type;
        const SIZE: usize = 100 * 1024 * 1024;
        let proxy = proxy("");
        let pid = proxy.pid();
        let client = app_client(&proxy).await;
        client
            .batch_execute(
                "drop table if exists pr_big; create table pr_big (id int primary key, v bytea); \
             alter table pr_big alter column v set storage external",
            )
            .await
            .unwrap();
        client.query_one("select 1", &[]).await.unwrap();
        let base = proc_kb(pid, "VmRSS");
        let data = pseudo_random(SIZE, 7);

        // 100 MB as a bind parameter (a Bind message larger than max_message_size).
        let n = within(
            Duration::from_secs(90),
            "100 MB insert",
            client.execute("insert into pr_big values (1, $1)", &[&data]),
        )
        .await
        .unwrap();
        assert_eq!(n, 1);
        let hwm_insert = proc_kb(pid, "VmHWM");
        // Read back (a DataRow of 100 MB).
        let row = within(
            Duration::from_secs(90),
            "100 MB select",
            client.query_one("select v, length(v) from pr_big where id = 1", &[]),
        )
        .await
        .unwrap();
        assert_eq!(row.get::<_, i32>(1) as usize, SIZE);
        let back: Vec<u8> = row.get(0);
        assert!(back == data, "the value read back differs");
        drop((row, back));
        let hwm_select = proc_kb(pid, "VmHWM");

        // COPY TO STDOUT (raw): one CopyData message of 100 MB.
        let mut raw = Raw::app(&proxy).await;
        raw.send(&fe::query(
            "copy (select v from pr_big where id = 1) to stdout (format binary)",
        ))
        .await;
        let m = raw.recv().await;
        assert_eq!(m.tag, b'H', "{m:?}");
        let mut copied = Vec::new();
        loop {
            let m = within(Duration::from_secs(90), "copy out", raw.recv()).await;
            match m.tag {
                b'd' => copied.extend_from_slice(&m.body),
                b'c' => {}
                b'C' => assert_eq!(m.command_tag(), "COPY 1"),
                b'Z' => break,
                _ => panic!("unexpected {m:?}"),
            }
        }
        // Binary COPY: 11-byte signature, flags, extension length; then the tuple: field count,
        // length, bytes; then the -1 trailer.
        let mut b = &copied[19..];
        assert_eq!(b.get_i16(), 1);
        assert_eq!(b.get_i32() as usize, SIZE);
        assert!(b[..SIZE] == data[..], "COPY TO STDOUT returned other bytes");
        assert_eq!(&b[SIZE..], &[0xff, 0xff]);
        drop(copied);
        let hwm_copy_out = proc_kb(pid, "VmHWM");

        // COPY FROM STDIN: one CopyData message of 100 MB.
        let n = within(Duration::from_secs(90), "100 MB copy in", async {
            let sink = client
                .copy_in("copy pr_big (id, v) from stdin (format binary)")
                .await?;
            let w = BinaryCopyInWriter::new(sink, &[Type::INT4, Type::BYTEA]);
            let mut w = std::pin::pin!(w);
            w.as_mut().write(&[&2i32, &data]).await?;
            w.finish().await
        })
        .await
        .unwrap();
        assert_eq!(n, 1);
        let hwm_copy_in = proc_kb(pid, "VmHWM");
        for (what, hwm) in [
            ("insert via Bind", hwm_insert),
            ("select", hwm_select),
            ("COPY TO STDOUT", hwm_copy_out),
            ("COPY FROM STDIN", hwm_copy_in),
        ] {
            assert!(
                hwm.saturating_sub(base) < MEMORY_BUDGET_KB,
                "proxy peak RSS reached {hwm} kB (from {base} kB) by the end of the 100 MB {what}"
            );
        }
        // The bytes arrived intact (checked on the primary itself) ...
        let direct = direct_primary().await;
        let same: Option<bool> = direct
            .query_one(
                "select (select v from pr_big where id = 1) = (select v from pr_big where id = 2)",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(same, Some(true), "the value copied in differs");
        // ... and are visible through the proxy to the same user (read-your-writes) from another
        // client (the COPY client's own state is checked at the end).
        let checker = app_client(&proxy).await;
        let same: Option<bool> = checker
            .query_one(
                "select (select v from pr_big where id = 1) = (select v from pr_big where id = 2)",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            same,
            Some(true),
            "the COPYed row (None: not visible) read through the proxy by the same user"
        );
        within(
            WAIT,
            "query on the copy_in client",
            client.batch_execute("select 1"),
        )
        .await
        .expect("the client that ran copy_in must stay usable");
        checker.batch_execute("drop table pr_big").await.unwrap();
    });
}

/// Built-in function OIDs (fixed in PostgreSQL's catalog).
const INT4PL_OID: u32 = 177;
const SET_CONFIG_OID: u32 = 2078;
const PG_ADVISORY_LOCK_INT8_OID: u32 = 2880;

/// The value of a FunctionCallResponse ('V'): `None` for NULL.
fn function_result(m: &Msg) -> Option<Vec<u8>> {
    assert_eq!(m.tag, b'V', "not a FunctionCallResponse: {m:?}");
    let mut b = &m.body[..];
    let len = b.get_i32();
    (len >= 0).then(|| b[..len as usize].to_vec())
}

/// A FunctionCall of one of the database's own functions (by its OID) that changes settings
/// counts as a settings change, as a call by name does: the setting follows its client and
/// does not stay on the server connection for the next client.
#[test]
fn function_call_of_a_database_function_is_tracked() {
    bounded(async {
        let d = direct_primary().await;
        d.batch_execute(
            "CREATE OR REPLACE FUNCTION pr_fc_tenant(t text) RETURNS text LANGUAGE plpgsql AS \
             $$ BEGIN PERFORM set_config('app.fc_tenant', t, false); RETURN t; END $$",
        )
        .await
        .unwrap();
        let oid: u32 = d
            .query_one("SELECT 'pr_fc_tenant'::regproc::oid", &[])
            .await
            .unwrap()
            .get(0);
        let proxy = proxy("[pool]\nsize = 1\n");
        let mut raw = Raw::app(&proxy).await;
        raw.send(&fe::function_call(oid, &[Some(b"t1")], false))
            .await;
        let r = raw.until_ready().await;
        assert_eq!(sync_tags(&r), "VZ", "{r:?}");
        assert_eq!(function_result(&r[0]), Some(b"t1".to_vec()));
        let get = "SELECT coalesce(current_setting('app.fc_tenant', true), '')";
        let other = app_client(&proxy).await;
        for round in 0..3 {
            let seen: String = other.query_one(get, &[]).await.unwrap().get(0);
            assert_eq!(seen, "", "round {round}: the other client sees the setting");
            let r = raw.query(get).await;
            assert_eq!(rows(&r), vec!["t1"], "round {round}");
        }
        // set_config itself, of a custom setting: read back by the name in its argument.
        raw.send(&fe::function_call(
            SET_CONFIG_OID,
            &[Some(b"app.fc_direct"), Some(b"d1"), Some(b"false")],
            false,
        ))
        .await;
        let r = raw.until_ready().await;
        assert_eq!(sync_tags(&r), "VZ", "{r:?}");
        let get = "SELECT coalesce(current_setting('app.fc_direct', true), '')";
        for round in 0..3 {
            let seen: String = other.query_one(get, &[]).await.unwrap().get(0);
            assert_eq!(
                seen, "",
                "round {round}: the other client sees app.fc_direct"
            );
            let r = raw.query(get).await;
            assert_eq!(rows(&r), vec!["d1"], "round {round}");
        }
    });
}

#[test]
fn function_call_is_relayed_and_its_session_effects_tracked() {
    bounded(async {
        let proxy = proxy("");
        let mut raw = Raw::app(&proxy).await;

        // int4pl(2, 40) with binary arguments and result.
        raw.send(&fe::function_call(
            INT4PL_OID,
            &[Some(&2i32.to_be_bytes()), Some(&40i32.to_be_bytes())],
            true,
        ))
        .await;
        let r = raw.until_ready().await;
        assert_eq!(sync_tags(&r), "VZ", "{r:?}");
        assert_eq!(function_result(&r[0]), Some(42i32.to_be_bytes().to_vec()));
        assert_eq!(r.last().unwrap().status(), 'I');

        // A NULL argument to a strict function gives a NULL result.
        raw.send(&fe::function_call(INT4PL_OID, &[None, Some(b"1")], false))
            .await;
        let r = raw.until_ready().await;
        assert_eq!(sync_tags(&r), "VZ", "{r:?}");
        assert_eq!(function_result(&r[0]), None);

        // An OID that names no function: the server's error, and the session goes on.
        raw.send(&fe::function_call(4_000_000_000, &[], false))
            .await;
        let r = raw.until_ready().await;
        assert_eq!(sync_tags(&r), "EZ", "{r:?}");
        assert_eq!(r[0].code(), "42883", "{r:?}");
        let r = raw.query("select 'still here'").await;
        assert_eq!(rows(&r), vec!["still here"]);

        // Inside a transaction: the call runs on the transaction's connection, and the
        // transaction status is reported after it.
        let r = raw.query("begin").await;
        assert_eq!(r.last().unwrap().status(), 'T');
        let r = raw.query("select pg_backend_pid()::text").await;
        let txn_pid = rows(&r)[0].clone();
        raw.send(&fe::function_call(
            INT4PL_OID,
            &[Some(b"20"), Some(b"3")],
            false,
        ))
        .await;
        let r = raw.until_ready().await;
        assert_eq!(sync_tags(&r), "VZ", "{r:?}");
        assert_eq!(function_result(&r[0]), Some(b"23".to_vec()));
        assert_eq!(r.last().unwrap().status(), 'T');
        let r = raw.query("select pg_backend_pid()::text").await;
        assert_eq!(rows(&r), vec![txn_pid]);
        let r = raw.query("commit").await;
        assert_eq!(r.last().unwrap().status(), 'I');

        // set_config(..., false) through FunctionCall is a session setting like SET: it
        // follows this client to every server connection, and no other client sees it.
        raw.send(&fe::function_call(
            SET_CONFIG_OID,
            &[
                Some(b"application_name"),
                Some(b"via_fcall"),
                Some(b"false"),
            ],
            false,
        ))
        .await;
        let r = raw.until_ready().await;
        assert_eq!(sync_tags(&r), "VZ", "{r:?}");
        assert_eq!(function_result(&r[0]), Some(b"via_fcall".to_vec()));
        let mut others = Vec::new();
        for _ in 0..4 {
            others.push(app_client(&proxy).await);
        }
        for round in 0..6 {
            // Busy other clients take connections, so this client's next transactions land on
            // different ones.
            let mut busy = Vec::new();
            for c in &others {
                busy.push(c.simple_query("select pg_sleep(0.05)"));
            }
            let r = raw.query("show application_name").await;
            assert_eq!(rows(&r), vec!["via_fcall"], "round {round}");
            for b in busy {
                b.await.expect("other client's query");
            }
            for c in &others {
                let name: String = c
                    .query_one("show application_name", &[])
                    .await
                    .unwrap()
                    .get(0);
                assert_ne!(name, "via_fcall", "round {round}: the setting leaked");
            }
        }

        // A session advisory lock taken through FunctionCall pins the client to its server
        // connection: the lock stays, and the client keeps seeing the same backend.
        raw.send(&fe::function_call(
            PG_ADVISORY_LOCK_INT8_OID,
            &[Some(&7_340_001i64.to_be_bytes())],
            true,
        ))
        .await;
        let r = raw.until_ready().await;
        assert_eq!(sync_tags(&r), "VZ", "{r:?}");
        let r = raw.query("select pg_backend_pid()::text").await;
        let pinned = rows(&r)[0].clone();
        let held = "select count(*)::text from pg_locks \
                    where locktype = 'advisory' and objid = 7340001 and granted";
        for _ in 0..4 {
            let mut busy = Vec::new();
            for c in &others {
                busy.push(c.simple_query("select pg_sleep(0.02)"));
            }
            let r = raw.query("select pg_backend_pid()::text").await;
            assert_eq!(
                rows(&r),
                vec![pinned.clone()],
                "the client moved off its lock"
            );
            for b in busy {
                b.await.expect("other client's query");
            }
        }
        // Checked on the primary itself (a read through the proxy may go to a replica).
        let primary = direct_primary().await;
        let n: String = primary.query_one(held, &[]).await.unwrap().get(0);
        assert_eq!(n, "1", "the advisory lock must still be held by {pinned}");
        let (_, metrics) = proxy.http_get("/metrics").await;
        assert!(
            metrics.lines().any(|l| l
                .starts_with("switchyard_pinned_clients_total{reason=\"advisory_lock\"}")
                && !l.ends_with(" 0")),
            "pin not counted:\n{metrics}"
        );

        // The client leaves: its connection is reset before reuse, which releases the lock.
        drop(raw);
        let deadline = Instant::now() + WAIT;
        loop {
            let n: String = primary.query_one(held, &[]).await.unwrap().get(0);
            if n == "0" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the advisory lock outlived its client"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

/// A client that sends anything but copy data (or Sync, Flush) while the server reads COPY
/// FROM STDIN data breaks the protocol: as from PostgreSQL, the copy fails (08P01), the
/// connection ends with FATAL 08P01, and nothing was copied. The proxy's server connection,
/// left mid-copy, is given up, and the pool's one connection serves the next client. Before, a
/// Query sent into an extended-protocol COPY left the client waiting for good.
#[test]
fn a_protocol_violation_during_copy_in_ends_the_session_as_postgresql_does() {
    bounded(async {
        let proxy = proxy(
            "[routing]\nread_write_split = false\n[pool]\nsize = 1\ncheckout_timeout = \"20s\"\n",
        );
        let direct_addr = shared_cluster().primary().addr();
        let setup = app_client(&proxy).await;
        fresh_table(&setup, "pr_copyviolation", "id int").await;
        let simple = fe::query("copy pr_copyviolation from stdin");
        let extended = [fe::pbe("copy pr_copyviolation from stdin", &[]), fe::sync()].concat();
        let data = fe::copy_data(b"1\n");
        // (name, what starts the copy, what follows once it began (empty: all sent at once), the
        // type of the message out of place)
        let cases: [(&str, Vec<u8>, Vec<u8>, u8); 5] = [
            (
                "a Parse into a simple-query COPY",
                simple.clone(),
                [data.clone(), fe::pbe("select 1", &[]), fe::sync()].concat(),
                b'P',
            ),
            (
                "a Query into an extended COPY",
                extended.clone(),
                [data.clone(), fe::query("select 1"), fe::sync()].concat(),
                b'Q',
            ),
            (
                "a Parse into an extended COPY",
                extended.clone(),
                [data.clone(), fe::parse("s1", "select 1", &[]), fe::sync()].concat(),
                b'P',
            ),
            (
                "a FunctionCall into a simple-query COPY",
                simple.clone(),
                [data.clone(), fe::function_call(1299, &[], false)].concat(),
                b'F',
            ),
            (
                "a Query pipelined behind an extended COPY",
                [
                    extended.clone(),
                    data.clone(),
                    fe::query("select 1"),
                    fe::sync(),
                ]
                .concat(),
                vec![],
                b'Q',
            ),
        ];
        let summary = |r: &[Msg]| -> String {
            r.iter()
                .map(|m| match m.tag {
                    b'E' => format!("E({} {} {})", m.severity_of(), m.code(), m.fields()[&'M']),
                    t => (t as char).to_string(),
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        for (name, start, then, offender) in cases {
            let mut answers = Vec::new();
            for addr in [direct_addr.clone(), proxy.addr()] {
                let mut raw = Raw::connect(&addr, APP_USER, APP_PASSWORD, APP_DB, &[]).await;
                raw.send(&start).await;
                let mut r = Vec::new();
                if !then.is_empty() {
                    // Up to the CopyInResponse.
                    loop {
                        let m = raw.recv().await;
                        let g = m.tag == b'G';
                        r.push(m);
                        if g {
                            break;
                        }
                    }
                    raw.send(&then).await;
                }
                r.extend(raw.until_closed().await);
                answers.push(summary(&r));
            }
            let expected = format!(
                "E(ERROR 08P01 unexpected message type 0x{offender:02X} during COPY from stdin) \
                 E(FATAL 08P01 terminating connection because protocol synchronization was lost)"
            );
            assert!(
                answers[0].ends_with(&expected),
                "{name}: directly {}",
                answers[0]
            );
            assert_eq!(
                answers[1], answers[0],
                "{name}: through the proxy, then directly"
            );
            // Nothing was copied, and the one server connection serves the next client.
            let n = count_rows(&setup, "pr_copyviolation").await;
            assert_eq!(n, 0, "{name}");
        }
    });
}

/// A client may send a COPY FROM STDIN with its data and CopyDone before the CopyInResponse
/// comes back, and then its next request while the server still copies (a slow trigger
/// here). The CopyInResponse the proxy relays after the client's CopyDone does not make that
/// request (or a Sync) look like one sent into the copy: it runs, as on PostgreSQL.
#[test]
fn a_request_behind_a_copy_ended_ahead_of_its_response_is_not_taken_for_copy_data() {
    bounded(async {
        let proxy = proxy(
            "[routing]\nread_write_split = false\n[pool]\nsize = 1\ncheckout_timeout = \"20s\"\n",
        );
        let setup = app_client(&proxy).await;
        setup
            .batch_execute(
                "drop table if exists pr_slowcopy;
                 create table pr_slowcopy (id int);
                 create function pr_slowcopy_wait() returns trigger language plpgsql as
                   $$ begin perform pg_sleep(0.5); return new; end $$;
                 create trigger pr_slowcopy_wait before insert on pr_slowcopy
                   for each row execute function pr_slowcopy_wait();",
            )
            .await
            .unwrap();
        let mut raw = Raw::app(&proxy).await;
        // Simple protocol: the whole copy at once, then a Query while the row is inserted.
        let mut out = fe::query("copy pr_slowcopy from stdin");
        out.extend(fe::copy_data(b"1\n"));
        out.extend(fe::copy_done());
        raw.send(&out).await;
        assert_eq!(raw.recv().await.tag, b'G');
        raw.send(&fe::query("select 'next'")).await;
        let r = raw.until_ready().await;
        assert_eq!(tags(&r), "CZ", "{r:?}");
        assert_eq!(r[0].command_tag(), "COPY 1");
        let r = raw.until_ready().await;
        assert_eq!(rows(&r), ["next"], "{r:?}");
        // Extended protocol: Parse/Bind/Execute/Sync, data, CopyDone and Sync at once (the
        // first Sync is ignored by the server, the one after the CopyDone answered), then a
        // Sync sent while the row is inserted, answered too.
        let mut out = fe::pbe("copy pr_slowcopy from stdin", &[]);
        out.extend(fe::sync());
        out.extend(fe::copy_data(b"2\n"));
        out.extend(fe::copy_done());
        out.extend(fe::sync());
        raw.send(&out).await;
        for t in [b'1', b'2', b'G'] {
            assert_eq!(raw.recv().await.tag, t);
        }
        raw.send(&fe::sync()).await;
        let r = raw.until_ready().await;
        assert_eq!(tags(&r), "CZ", "{r:?}");
        assert_eq!(r[0].command_tag(), "COPY 1");
        assert_eq!(tags(&raw.until_ready().await), "Z");
        let count = raw.query_ok("select count(*) from pr_slowcopy").await;
        assert_eq!(count, ["2"]);
    });
}

/// A client that sends its COPY data and CopyDone right behind the COPY, before the server's
/// CopyInResponse comes back (as pgx does): the copy is over for it when that response is
/// relayed. Its Terminate right behind still lets the rows commit, as on a direct connection;
/// queries pipelined after it are answered; an extended batch ends with its Sync after the
/// copy (the connection goes back to the pool); a RESET in that batch gets its startup value
/// put back after the copy, not into it; a COPY hinted to a replica fails there cleanly.
#[test]
fn copy_data_sent_ahead_of_the_copy_in_response() {
    bounded(async {
        let proxy = proxy("[pool]\nsize = 1\n");
        let setup = app_client(&proxy).await;
        setup
            .batch_execute(
                "drop table if exists pr_ahead;
                 create table pr_ahead (i int);
                 create or replace function pr_ahead_slow() returns trigger language plpgsql
                   as $$ begin perform pg_sleep(0.01); return new; end $$;
                 create trigger pr_ahead_slow before insert on pr_ahead
                   for each row execute function pr_ahead_slow();",
            )
            .await
            .unwrap();
        let rows = |from: i32, to: i32| {
            let mut out = Vec::new();
            for i in from..to {
                out.extend(fe::copy_data(format!("{i}\n").as_bytes()));
            }
            out
        };
        let count = |c: tokio_postgres::Client| async move {
            let n: i64 = c
                .query_one("select count(*) from pr_ahead", &[])
                .await
                .unwrap()
                .get(0);
            (c, n)
        };

        // The COPY, its data, CopyDone and Terminate in one write, then the socket closes.
        let mut raw = Raw::app(&proxy).await;
        let mut out = fe::query("copy pr_ahead from stdin");
        out.extend(rows(0, 20));
        out.extend(fe::copy_done());
        out.extend(fe::terminate());
        raw.send(&out).await;
        drop(raw);
        let mut c = setup;
        let mut n = 0;
        for _ in 0..300 {
            (c, n) = count(c).await;
            if n == 20 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            n,
            20,
            "rows of a COPY sent with its Terminate\n{}",
            proxy.log_tail(20)
        );

        // Two queries pipelined after a COPY whose data went ahead of its CopyInResponse.
        let mut raw = Raw::app(&proxy).await;
        let mut out = fe::query("copy pr_ahead from stdin");
        out.extend(rows(20, 40));
        out.extend(fe::copy_done());
        raw.send(&out).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut out = fe::query("select 1");
        out.extend(fe::query("select 2"));
        raw.send(&out).await;
        let r = raw.until_ready_n(3).await;
        assert_eq!(tags(&r[0]), "GCZ", "{r:?}");
        assert_eq!(r[0][1].command_tag(), "COPY 20");
        assert_eq!(tags(&r[1]), "TDCZ", "{r:?}");
        assert_eq!(tags(&r[2]), "TDCZ", "{r:?}");

        // The extended protocol, all in one write: the Sync sent with the Execute is ignored
        // by the server, the one after the copy answered, and the batch is over.
        let mut out = fe::parse("", "copy pr_ahead from stdin", &[]);
        out.extend(fe::bind("", "", &[]));
        out.extend(fe::execute("", 0));
        out.extend(fe::sync());
        out.extend(rows(40, 60));
        out.extend(fe::copy_done());
        out.extend(fe::sync());
        raw.send(&out).await;
        let r = raw.until_ready().await;
        assert_eq!(tags(&r), "12GCZ", "{r:?}");
        raw.assert_silent(Duration::from_millis(300), "after the extended COPY")
            .await;
        // One server connection in the pool: another client gets it.
        let (c, n) = within(WAIT, "another client's query", count(c)).await;
        assert_eq!(n, 60);

        // A RESET in a batch that copies: the startup value is put back after the copy.
        let mut raw = Raw::connect(
            &proxy.addr(),
            APP_USER,
            APP_PASSWORD,
            APP_DB,
            &[("application_name", "ahead-app")],
        )
        .await;
        raw.query_ok("set application_name = 'changed'").await;
        let mut out = fe::parse("", "reset application_name", &[]);
        out.extend(fe::bind("", "", &[]));
        out.extend(fe::execute("", 0));
        out.extend(fe::parse("", "copy pr_ahead from stdin", &[]));
        out.extend(fe::bind("", "", &[]));
        out.extend(fe::execute("", 0));
        out.extend(fe::sync());
        out.extend(rows(60, 70));
        out.extend(fe::copy_done());
        out.extend(fe::sync());
        raw.send(&out).await;
        let r: Vec<Msg> = raw
            .until_ready()
            .await
            .into_iter()
            .filter(|m| m.tag != b'S')
            .collect();
        assert_eq!(tags(&r), "12C12GCZ", "{r:?}");
        assert_eq!(raw.query_ok("show application_name").await, ["ahead-app"]);
        let (c, n) = within(WAIT, "count", count(c)).await;
        assert_eq!(n, 70);

        // Hinted to a replica, with its data ahead: the replica refuses it, and the client
        // gets that error (the copy data went there: it is not repeated on the primary).
        let mut out = fe::query("/* switchyard:replica */ copy pr_ahead from stdin");
        out.extend(rows(70, 80));
        out.extend(fe::copy_done());
        raw.send(&out).await;
        let r = raw.until_ready().await;
        assert_eq!(tags(&r), "EZ", "{r:?}");
        assert_eq!(r[0].code(), "25006");
        assert_eq!(raw.query_ok("select 4").await, ["4"]);
        let (_, n) = within(WAIT, "count", count(c)).await;
        assert_eq!(n, 70);
    });
}

/// One answer as message types, command tags, SQLSTATEs (of errors and notices) and rows
/// (parameter statuses and notifications left out), for comparing a direct answer with the
/// proxy's.
fn outline(msgs: &[Msg]) -> String {
    msgs.iter()
        .filter(|m| !matches!(m.tag, b'S' | b'A'))
        .map(|m| match m.tag {
            b'C' => format!("C({})", m.command_tag()),
            b'E' | b'N' => format!("{}({})", m.tag as char, m.code()),
            b'D' => format!("D{:?}", m.row()),
            b'Z' => format!("Z({})", m.status()),
            t => (t as char).to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A message of type `tag` with the given body, however malformed.
fn junk(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// How many ReadyForQuery messages answer `request` (its Syncs and Queries).
fn readies(mut request: &[u8]) -> usize {
    let mut n = 0;
    while request.len() >= 5 {
        n += usize::from(matches!(request[0], b'S' | b'Q'));
        let len = u32::from_be_bytes([request[1], request[2], request[3], request[4]]) as usize;
        request = &request[1 + len..];
    }
    n
}

/// Sends each request in turn (a round trip each) directly and through the proxy, after
/// `setup` run directly; the outlines of the answers, direct first.
async fn direct_and_proxied(
    proxy: &Proxy,
    setup: &str,
    requests: &[Vec<u8>],
) -> (Vec<String>, Vec<String>) {
    let direct = direct_primary().await;
    let mut answers = Vec::new();
    for addr in [shared_cluster().primary().addr(), proxy.addr()] {
        direct.batch_execute(setup).await.unwrap();
        let mut raw = Raw::connect(&addr, APP_USER, APP_PASSWORD, APP_DB, &[]).await;
        let mut got = Vec::new();
        for r in requests {
            raw.send(r).await;
            for answer in raw.until_ready_n(readies(r)).await {
                got.push(outline(&answer));
            }
        }
        answers.push(got);
    }
    let proxied = answers.pop().unwrap();
    (answers.pop().unwrap(), proxied)
}

/// A Parse of the unnamed statement that fails leaves none (PostgreSQL drops the previous
/// one before parsing the new one): a later Bind or Describe of it gets 26000, rather than
/// run the statement before again (which repeated an INSERT).
#[test]
fn a_failed_unnamed_parse_leaves_no_unnamed_statement() {
    bounded(async {
        let proxy = proxy("");
        let cat = |parts: &[Vec<u8>]| parts.concat();
        let requests = [
            cat(&[
                fe::parse("", "insert into pr_unnamed values (1)", &[]),
                fe::bind("", "", &[]),
                fe::execute("", 0),
                fe::sync(),
            ]),
            // A syntax error, then a missing table.
            cat(&[
                fe::parse("", "insert into pr_unnamed values (2", &[]),
                fe::sync(),
            ]),
            cat(&[fe::bind("", "", &[]), fe::execute("", 0), fe::sync()]),
            cat(&[fe::describe(b'S', ""), fe::sync()]),
            cat(&[fe::parse("", "select 5", &[]), fe::sync()]),
            cat(&[
                fe::parse("", "insert into pr_missing values (3)", &[]),
                fe::sync(),
            ]),
            cat(&[fe::bind("", "", &[]), fe::execute("", 0), fe::sync()]),
            // Failing with a later unnamed Parse behind it in the batch (skipped).
            cat(&[fe::parse("", "select 6", &[]), fe::sync()]),
            cat(&[
                fe::parse("", "select 7 +", &[]),
                fe::parse("", "select 8", &[]),
                fe::sync(),
            ]),
            cat(&[fe::bind("", "", &[]), fe::execute("", 0), fe::sync()]),
            fe::query("select count(*) from pr_unnamed"),
            // Pipelined: a failing Parse, then in the next batch one that succeeds, a failing
            // Bind and a Parse skipped behind it: the one that succeeded stands.
            cat(&[
                fe::parse("", "select 1 +", &[]),
                fe::sync(),
                fe::parse("", "select $1::int", &[]),
                fe::bind("", "", &[]),
                fe::parse("", "select 3", &[]),
                fe::sync(),
                fe::bind("", "", &[Some(b"7")]),
                fe::execute("", 0),
                fe::sync(),
            ]),
            // Malformed (its parameter types cut short, or bytes after them): refused before
            // the unnamed statement is dropped.
            cat(&[fe::parse("", "select 9", &[]), fe::sync()]),
            cat(&[
                junk(b'P', b"\0select 1\0\0\x01"),
                fe::sync(),
                junk(b'P', b"\0select 2\0\0\0x"),
                fe::sync(),
                fe::bind("", "", &[]),
                fe::execute("", 0),
                fe::sync(),
            ]),
        ];
        let setup = "drop table if exists pr_unnamed; create table pr_unnamed (x int)";
        let (direct, proxied) = direct_and_proxied(&proxy, setup, &requests).await;
        assert_eq!(direct[2], "E(26000) Z(I)", "direct: {direct:?}");
        assert_eq!(direct[10], r#"T D[Some("1")] C(SELECT 1) Z(I)"#);
        assert_eq!(direct[13], r#"2 D[Some("7")] C(SELECT 1) Z(I)"#);
        assert_eq!(direct[17], r#"2 D[Some("9")] C(SELECT 1) Z(I)"#);
        assert_eq!(proxied, direct);
    });
}

/// An unnamed statement dropped (here by a Query) runs nothing when bound: its Bind gets
/// 26000, and a `DEALLOCATE ALL` it was leaves the client's statements be.
#[test]
fn a_dropped_unnamed_statement_does_nothing_when_bound() {
    bounded(async {
        let proxy = proxy("");
        let cat = |parts: &[Vec<u8>]| parts.concat();
        let requests = [
            cat(&[fe::parse("", "DEALLOCATE ALL", &[]), fe::sync()]),
            fe::query("select 1"),
            cat(&[fe::parse("s1", "select 'one'", &[]), fe::sync()]),
            cat(&[fe::bind("", "", &[]), fe::execute("", 0), fe::sync()]),
            cat(&[fe::bind("", "s1", &[]), fe::execute("", 0), fe::sync()]),
        ];
        let (direct, proxied) = direct_and_proxied(&proxy, "select 1", &requests).await;
        assert_eq!(direct[3], "E(26000) Z(I)", "direct: {direct:?}");
        assert_eq!(direct[4], r#"2 D[Some("one")] C(SELECT 1) Z(I)"#);
        assert_eq!(proxied, direct);
    });
}

/// `START TRANSACTION`, answered by the proxy (it sends it with the block's first
/// statement), gets PostgreSQL's tag for it, not `BEGIN`'s.
#[test]
fn start_transaction_is_answered_with_its_own_tag() {
    bounded(async {
        let proxy = proxy("");
        let requests: Vec<Vec<u8>> = [
            "start transaction",
            "commit",
            "START TRANSACTION READ ONLY;",
            "rollback",
            "/* first */ start transaction isolation level serializable",
            "select 1",
            "commit",
            "begin",
            "end",
            "begin work",
            "abort",
        ]
        .iter()
        .map(|q| fe::query(q))
        .collect();
        let (direct, proxied) = direct_and_proxied(&proxy, "select 1", &requests).await;
        assert_eq!(direct[0], "C(START TRANSACTION) Z(T)");
        assert_eq!(proxied, direct);
    });
}

/// A Describe or Close of a statement with bytes after its name is refused (08P01) before
/// anything is done, as PostgreSQL does: the statement stays.
#[test]
fn close_and_describe_with_bytes_after_the_name_change_nothing() {
    bounded(async {
        let proxy = proxy("");
        let cat = |parts: &[Vec<u8>]| parts.concat();
        let requests = [
            cat(&[fe::parse("s1", "select 1", &[]), fe::sync()]),
            cat(&[junk(b'C', b"Ss1\0junk"), fe::sync()]),
            cat(&[fe::bind("", "s1", &[]), fe::execute("", 0), fe::sync()]),
            cat(&[junk(b'D', b"Ss1\0junk"), fe::sync()]),
            cat(&[fe::parse("", "select 5", &[]), fe::sync()]),
            cat(&[junk(b'C', b"S\0junk"), fe::sync()]),
            cat(&[fe::bind("", "", &[]), fe::execute("", 0), fe::sync()]),
            cat(&[junk(b'C', b"Snope\0x"), fe::sync()]),
            cat(&[junk(b'D', b"P\0x"), fe::sync()]),
        ];
        let (direct, proxied) = direct_and_proxied(&proxy, "select 1", &requests).await;
        assert_eq!(direct[1], "E(08P01) Z(I)", "direct: {direct:?}");
        assert_eq!(direct[2], r#"2 D[Some("1")] C(SELECT 1) Z(I)"#);
        assert_eq!(direct[6], r#"2 D[Some("5")] C(SELECT 1) Z(I)"#);
        assert_eq!(proxied, direct);
    });
}

/// What only looks like a COMMIT or ROLLBACK (words after it PostgreSQL's grammar does not
/// take), or one bound without the parameters its statement declares, is not answered by the
/// proxy as the end of a block: the server answers it (a syntax error that fails the block
/// open, 08P01), as directly. The forms the grammar takes are.
#[test]
fn only_well_formed_transaction_ends_are_answered_by_the_proxy() {
    bounded(async {
        let proxy = proxy("");
        let cat = |parts: &[Vec<u8>]| parts.concat();
        let extended = |sql: &str| {
            cat(&[
                fe::parse("", sql, &[]),
                fe::bind("", "", &[]),
                fe::execute("", 0),
                fe::sync(),
            ])
        };
        let mut requests = Vec::new();
        for sql in [
            "COMMIT foo",
            "ROLLBACK x y",
            "COMMIT WORK WORK",
            "END TRANSACTION foo",
            "COMMIT \"PREPARED\" 'G'",
            "COMMIT AND NO",
            "ABORT AND CHAIN foo",
            "rollback work and no chain",
            "END TRANSACTION AND CHAIN",
        ] {
            requests.push(fe::query(sql));
            requests.push(extended(sql));
            // In a block whose BEGIN the proxy holds: a syntax error fails it.
            requests.push(fe::query("BEGIN"));
            requests.push(fe::query(sql));
            requests.push(fe::query("SELECT 1"));
            requests.push(fe::query("ROLLBACK"));
        }
        // Declared parameter types the Bind does not supply.
        requests.push(cat(&[fe::parse("c1", "COMMIT", &[23]), fe::sync()]));
        requests.push(cat(&[
            fe::bind("", "c1", &[]),
            fe::execute("", 0),
            fe::sync(),
        ]));
        requests.push(cat(&[fe::parse("", "ROLLBACK", &[23]), fe::sync()]));
        requests.push(cat(&[
            fe::bind("", "", &[]),
            fe::execute("", 0),
            fe::sync(),
        ]));
        let (direct, proxied) = direct_and_proxied(&proxy, "select 1", &requests).await;
        assert_eq!(direct[0], "E(42601) Z(I)", "direct: {direct:?}");
        assert_eq!(direct[4], "E(25P02) Z(E)", "direct: {direct:?}");
        assert_eq!(
            direct[42], "N(25P01) C(ROLLBACK) Z(I)",
            "direct: {direct:?}"
        );
        assert_eq!(direct[55], "E(08P01) Z(I)", "direct: {direct:?}");
        assert_eq!(proxied, direct);
    });
}

/// Two unnamed Parses an error makes the server skip (in one batch, or one in each of two
/// pipelined batches): the server keeps the statement it had before both. The proxy does not
/// know which one that was, so a later Bind of the unnamed statement fails (26000) or runs
/// that one; it never runs the first skipped Parse's statement, which the server never had.
#[test]
fn two_skipped_unnamed_parses_never_run_the_first_ones_statement() {
    bounded(async {
        let proxy = proxy("");
        let cat = |parts: &[Vec<u8>]| parts.concat();
        let skip_two = [
            cat(&[
                fe::bind("", "nosuch", &[]),
                fe::parse("", "select 'x1'", &[]),
                fe::parse("", "select 'y1'", &[]),
                fe::sync(),
            ]),
            cat(&[
                fe::bind("", "nosuch", &[]),
                fe::parse("", "select 'x2'", &[]),
                fe::sync(),
                fe::bind("", "nosuch", &[]),
                fe::parse("", "select 'y2'", &[]),
                fe::sync(),
            ]),
        ];
        for skipped in skip_two {
            let requests = [
                cat(&[fe::parse("", "select 'w'", &[]), fe::sync()]),
                skipped,
                cat(&[fe::bind("", "", &[]), fe::execute("", 0), fe::sync()]),
            ];
            let (direct, proxied) = direct_and_proxied(&proxy, "select 1", &requests).await;
            let last = direct.len() - 1;
            assert_eq!(direct[last], r#"2 D[Some("w")] C(SELECT 1) Z(I)"#);
            assert!(
                proxied[last] == direct[last] || proxied[last] == "E(26000) Z(I)",
                "{proxied:?}"
            );
        }
    });
}
