//! Pooling and transparency (issue "Foundation", points 5, 6 and 8): pools per (backend, user,
//! database) and their limits and timeouts, transaction and session pooling, session state
//! that follows a client across server connections (settings, prepared statements), state
//! that pins a client to its server connection, and server connections left dirty by clients
//! that vanish.
//!
//! Every test starts its own proxy against the shared cluster and uses its own tables, so the
//! tests can run in parallel. Most set `[routing] read_write_split = false`, so every request
//! runs on the primary and the reuse of server connections is deterministic; with
//! `[pool] size = 1` every client shares one server connection.

mod support;

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use postgres_protocol::message::frontend;
use support::proxy::{Proxy, ProxyOptions};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::{AsyncMessage, Client};

/// Longest wait for any single step; every await in these tests is bounded by it.
const STEP: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {STEP:?}: {what}"),
    }
}

/// A proxy in front of the shared cluster with `pool` as the `[pool]` table and no read/write
/// split (everything runs on the primary).
fn proxy(mode: &str, pool: &str) -> Proxy {
    proxy_with(
        mode,
        &format!("[routing]\nread_write_split = false\n\n[pool]\n{pool}\n"),
    )
}

fn proxy_with(mode: &str, extra_tables: &str) -> Proxy {
    Proxy::start_with(
        shared_cluster(),
        ProxyOptions {
            pool_mode: mode.into(),
            extra_tables: extra_tables.into(),
            ..Default::default()
        },
    )
}

/// A proxy reaching the primary through a fault-injecting relay (connections lost without a
/// word from the server: `relay.reset_all()`), with fast health checks.
fn relayed_proxy(mode: &str, pool: &str) -> (Proxy, support::relay::Relay) {
    let c = shared_cluster();
    let relay = support::relay::Relay::for_node(c.primary());
    let p = Proxy::start_with(
        c,
        ProxyOptions {
            pool_mode: mode.into(),
            backends: Some(vec![(c.primary().name().to_string(), relay.addr_string())]),
            extra_tables: format!(
                "[routing]\nread_write_split = false\n[pool]\n{pool}\n\
                 [health]\ninterval = \"200ms\"\n"
            ),
            ..Default::default()
        },
    );
    (p, relay)
}

/// Cuts every connection through `relay` (RST, the server says nothing) and waits for it.
async fn cut(relay: support::relay::Relay) -> support::relay::Relay {
    let reset = tokio::task::spawn_blocking(move || {
        relay.reset_all();
        relay
    });
    bounded("resetting the relay", reset).await.unwrap()
}

fn app_cs(p: &Proxy) -> String {
    format!(
        "{} connect_timeout=10",
        p.conn_string(APP_USER, APP_PASSWORD, APP_DB)
    )
}

async fn connect_cs(cs: &str) -> Client {
    let (client, conn) = bounded(
        "connect",
        tokio_postgres::connect(cs, tokio_postgres::NoTls),
    )
    .await
    .unwrap_or_else(|e| panic!("connecting with {cs:?}: {e} ({e:?})"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// Connects as the application user through the proxy.
async fn connect(p: &Proxy) -> Client {
    connect_cs(&app_cs(p)).await
}

/// Runs a simple query (bounded), returning the text rows or the error.
async fn try_simple(c: &Client, sql: &str) -> Result<Rows, tokio_postgres::Error> {
    Ok(text_rows(bounded(sql, c.simple_query(sql)).await?))
}

/// Runs a simple query that must succeed.
async fn q(c: &Client, sql: &str) -> Rows {
    match try_simple(c, sql).await {
        Ok(r) => r,
        Err(e) => panic!("{sql}: {e} ({e:?})"),
    }
}

/// The first column of the first row (NULL as "<null>").
async fn one(c: &Client, sql: &str) -> String {
    let rows = q(c, sql).await;
    let row = rows
        .first()
        .unwrap_or_else(|| panic!("{sql}: no rows returned"));
    row[0].clone().unwrap_or_else(|| "<null>".into())
}

async fn show(c: &Client, name: &str) -> String {
    one(c, &format!("SHOW {name}")).await
}

async fn backend_pid(c: &Client) -> i32 {
    one(c, "SELECT pg_backend_pid()").await.parse().unwrap()
}

fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code().map(|c| c.code().to_string()).unwrap_or_default()
}

/// Runs SQL as the superuser directly on the primary (not through the proxy).
fn su(sql: &str) -> String {
    tokio::task::block_in_place(|| {
        shared_cluster()
            .primary()
            .psql_db(APP_DB, sql)
            .unwrap_or_else(|e| panic!("superuser SQL failed: {e}"))
    })
}

/// Creates a table owned by the application user (dropping an old one).
fn create_table(name: &str, columns: &str) {
    su(&format!(
        "DROP TABLE IF EXISTS {name}; CREATE TABLE {name} ({columns}); \
         ALTER TABLE {name} OWNER TO {APP_USER}"
    ));
}

/// (idle, in_use) of the proxy's pool for app/app on the primary, from `/status`.
async fn pool_status(p: &Proxy) -> Option<(u64, u64)> {
    let v = p.status().await;
    let primary = shared_cluster().primary().name();
    v["pools"].as_array()?.iter().find_map(|pool| {
        (pool["backend"] == primary && pool["user"] == APP_USER && pool["database"] == APP_DB).then(
            || {
                (
                    pool["idle"].as_u64().expect("idle"),
                    pool["in_use"].as_u64().expect("in_use"),
                )
            },
        )
    })
}

/// Waits (bounded) until the pool status satisfies `pred`.
async fn wait_pool(p: &Proxy, what: &str, timeout: Duration, pred: impl Fn(u64, u64) -> bool) {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        last = pool_status(p).await.or(last);
        if let Some((idle, in_use)) = last {
            if pred(idle, in_use) {
                return;
            }
        }
        if Instant::now() >= deadline {
            panic!("pool status (idle, in_use) {last:?} after {timeout:?}: expected {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (bounded) until the server process `pid` has ended.
async fn wait_backend_gone(pid: i32) {
    let sql = format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}");
    wait_su(&sql, "0", Duration::from_secs(30)).await;
}

/// Terminates server process `pid` (a pooled connection) and waits until it has ended.
async fn kill_server(pid: i32) {
    su(&format!("SELECT pg_terminate_backend({pid})"));
    wait_backend_gone(pid).await;
}

/// Waits (bounded) until a server process runs a query starting with `text`; its pid.
async fn running(text: &str) -> i32 {
    let sql = format!(
        "SELECT coalesce(max(pid), 0) FROM pg_stat_activity WHERE query LIKE '{}%'",
        text.replace('\'', "''")
    );
    let deadline = Instant::now() + STEP;
    loop {
        let pid: i32 = su(&sql).parse().unwrap();
        if pid != 0 {
            return pid;
        }
        assert!(Instant::now() < deadline, "{text}: never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (bounded) until superuser SQL returns `want`.
async fn wait_su(sql: &str, want: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let got = su(sql);
        if got == want {
            return;
        }
        if Instant::now() >= deadline {
            panic!("{sql}: got {got:?}, expected {want:?} within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (bounded) until the proxy has `n` clients: the ones dropped have been processed
/// (their server connections returned and disowned).
async fn wait_clients(p: &Proxy, n: u64) {
    let deadline = Instant::now() + STEP;
    loop {
        let now = p.metric("switchyard_client_connections").await;
        if now == n as f64 {
            return;
        }
        if Instant::now() >= deadline {
            panic!("{now} clients connected after {STEP:?}, expected {n}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of one Prometheus series (`name{labels}`), 0 when absent.
/// Background clients hammering the same pool with transactions, prepared statements,
/// their own session settings and `DISCARD ALL`, checking their own results.
struct Churn {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Result<u64, String>>>,
}

fn churn(p: &Proxy, n: usize) -> Churn {
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = (0..n)
        .map(|i| {
            let cs = app_cs(p);
            let stop = stop.clone();
            tokio::spawn(async move {
                let res = tokio::time::timeout(Duration::from_secs(90), async {
                    churn_client(&cs, i, &stop).await
                })
                .await;
                res.unwrap_or_else(|_| Err(format!("churn client {i} ran too long")))
            })
        })
        .collect();
    Churn { stop, tasks }
}

async fn churn_client(cs: &str, i: usize, stop: &AtomicBool) -> Result<u64, String> {
    let op_timeout = Duration::from_secs(10);
    let (c, conn) = tokio_postgres::connect(cs, tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("churn {i} connect: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let name = format!("churn{i}");
    let set = format!("SET application_name = '{name}'");
    c.batch_execute(&set).await.map_err(|e| e.to_string())?;
    let mut ops = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let op = async {
            match ops % 6 {
                0 => {
                    c.batch_execute("BEGIN; SELECT pg_backend_pid(); COMMIT")
                        .await?;
                }
                1 => {
                    let st = c.prepare("SELECT $1::int4 + 1").await?;
                    let v: i32 = c.query_one(&st, &[&(ops as i32)]).await?.get(0);
                    if v != ops as i32 + 1 {
                        return Ok(Some(format!("prepared statement returned {v}")));
                    }
                }
                2 => {
                    let v: String = c
                        .query_one("SELECT current_setting('application_name')", &[])
                        .await?
                        .get(0);
                    if v != name {
                        return Ok(Some(format!("application_name is {v:?}, not {name:?}")));
                    }
                }
                3 => {
                    c.batch_execute("DISCARD ALL").await?;
                    c.batch_execute(&set).await?;
                }
                4 => {
                    let v: String = c.query_one("SELECT $1::text", &[&name]).await?.get(0);
                    if v != name {
                        return Ok(Some(format!("unnamed statement returned {v:?}")));
                    }
                }
                _ => {
                    c.batch_execute("BEGIN; SET LOCAL work_mem = '17MB'; SELECT 1; ROLLBACK")
                        .await?;
                }
            }
            Ok::<_, tokio_postgres::Error>(None)
        };
        match tokio::time::timeout(op_timeout, op).await {
            Ok(Ok(None)) => {}
            Ok(Ok(Some(wrong))) => return Err(format!("churn {i} op {ops}: {wrong}")),
            Ok(Err(e)) => return Err(format!("churn {i} op {ops}: {e} ({e:?})")),
            Err(_) => return Err(format!("churn {i} op {ops} timed out")),
        }
        ops += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(ops)
}

impl Churn {
    /// Stops the clients; panics if any failed; returns the operations done.
    async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        let mut total = 0;
        for t in self.tasks {
            match bounded("churn client", t).await {
                Ok(Ok(n)) => total += n,
                Ok(Err(e)) => panic!("a background client failed: {e}"),
                Err(e) => panic!("a background client panicked: {e}"),
            }
        }
        total
    }
}

// ---------------------------------------------------------------------------------------------
// A raw protocol client (for exact control of Parse/Bind/Execute/Sync and of the socket)
// ---------------------------------------------------------------------------------------------

type Msg = (u8, Vec<u8>);

struct Raw {
    s: TcpStream,
    rbuf: BytesMut,
    /// The process id of the client's BackendKeyData.
    key_pid: i32,
    /// The secret of the client's BackendKeyData.
    key_secret: i32,
}

impl Raw {
    /// Logs in (trust, cleartext or SCRAM) and reads up to the first ReadyForQuery.
    async fn connect(p: &Proxy, user: &str, password: &str, db: &str) -> Raw {
        let s = bounded("raw connect", TcpStream::connect(p.addr()))
            .await
            .expect("raw connect");
        s.set_nodelay(true).unwrap();
        let mut raw = Raw {
            s,
            rbuf: BytesMut::new(),
            key_pid: 0,
            key_secret: 0,
        };
        let mut out = BytesMut::new();
        frontend::startup_message([("user", user), ("database", db)], &mut out).unwrap();
        raw.send(&out).await;
        let mut scram: Option<postgres_protocol::authentication::sasl::ScramSha256> = None;
        loop {
            let (t, body) = raw.recv().await;
            match t {
                b'R' => {
                    let kind = i32::from_be_bytes(body[..4].try_into().unwrap());
                    let data = &body[4..];
                    let mut out = BytesMut::new();
                    match kind {
                        0 => continue,
                        3 => frontend::password_message(password.as_bytes(), &mut out).unwrap(),
                        10 => {
                            let s = postgres_protocol::authentication::sasl::ScramSha256::new(
                                password.as_bytes(),
                                postgres_protocol::authentication::sasl::ChannelBinding::unsupported(),
                            );
                            frontend::sasl_initial_response("SCRAM-SHA-256", s.message(), &mut out)
                                .unwrap();
                            scram = Some(s);
                        }
                        11 => {
                            let s = scram.as_mut().expect("SASL continue before start");
                            s.update(data).expect("SCRAM update");
                            frontend::sasl_response(s.message(), &mut out).unwrap();
                        }
                        12 => {
                            scram
                                .as_mut()
                                .expect("SASL final before start")
                                .finish(data)
                                .expect("SCRAM server signature");
                            continue;
                        }
                        other => panic!("unsupported authentication request {other}"),
                    }
                    raw.send(&out).await;
                }
                b'E' => panic!("raw login failed: {}", err_text(&body)),
                b'K' => {
                    raw.key_pid = i32::from_be_bytes(body[..4].try_into().unwrap());
                    raw.key_secret = i32::from_be_bytes(body[4..8].try_into().unwrap());
                }
                b'Z' => return raw,
                _ => {}
            }
        }
    }

    async fn app(p: &Proxy) -> Raw {
        Raw::connect(p, APP_USER, APP_PASSWORD, APP_DB).await
    }

    async fn send(&mut self, b: &[u8]) {
        bounded("raw write", self.s.write_all(b))
            .await
            .expect("raw write");
    }

    /// The next message; panics on EOF.
    async fn recv(&mut self) -> Msg {
        match self.try_recv().await {
            Some(m) => m,
            None => panic!("the proxy closed the raw connection"),
        }
    }

    /// The next message, `None` on EOF or reset.
    async fn try_recv(&mut self) -> Option<Msg> {
        loop {
            if self.rbuf.len() >= 5 {
                let len = i32::from_be_bytes(self.rbuf[1..5].try_into().unwrap()) as usize;
                if self.rbuf.len() > len {
                    let frame = self.rbuf.split_to(1 + len);
                    return Some((frame[0], frame[5..].to_vec()));
                }
            }
            match bounded("raw read", self.s.read_buf(&mut self.rbuf)).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Every message until the proxy closes the connection.
    async fn until_closed(&mut self) -> Vec<Msg> {
        let mut got = Vec::new();
        while let Some(m) = self.try_recv().await {
            got.push(m);
        }
        got
    }

    /// Sends `sql` (a long query, unique text), terminates the server process running it and
    /// returns what the client got until its connection closed.
    async fn killed_mid_request(&mut self, sql: &str) -> Vec<Msg> {
        let mut b = BytesMut::new();
        frontend::query(sql, &mut b).unwrap();
        self.send(&b).await;
        let pid = running(sql).await;
        kill_server(pid).await;
        self.until_closed().await
    }

    /// Messages up to and including the next ReadyForQuery.
    async fn until_ready(&mut self) -> Vec<Msg> {
        let mut msgs = Vec::new();
        loop {
            let m = self.recv().await;
            let done = m.0 == b'Z';
            msgs.push(m);
            if done {
                return msgs;
            }
        }
    }

    async fn roundtrip(&mut self, b: &[u8]) -> Vec<Msg> {
        self.send(b).await;
        self.until_ready().await
    }

    async fn simple(&mut self, sql: &str) -> Vec<Msg> {
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out).unwrap();
        self.roundtrip(&out).await
    }

    /// Sends a CancelRequest with this client's key to the proxy and waits until the proxy
    /// closes that connection (it has placed the request).
    async fn cancel(&self, p: &Proxy) {
        let mut s = bounded("cancel connect", TcpStream::connect(p.addr()))
            .await
            .expect("cancel connect");
        let mut b = BytesMut::new();
        frontend::cancel_request(self.key_pid, self.key_secret, &mut b);
        bounded("cancel write", s.write_all(&b))
            .await
            .expect("cancel write");
        let mut sink = [0u8; 16];
        while let Ok(n) = bounded("cancel close", s.read(&mut sink)).await {
            if n == 0 {
                break;
            }
        }
    }

    /// Closes the socket with a RST instead of a FIN.
    #[allow(deprecated)]
    fn reset(self) {
        let _ = self.s.set_linger(Some(Duration::ZERO));
        drop(self);
    }
}

fn m_parse(out: &mut BytesMut, name: &str, sql: &str) {
    frontend::parse(name, sql, std::iter::empty(), out).unwrap();
}

/// Bind with text parameters and text results.
fn m_bind(out: &mut BytesMut, portal: &str, stmt: &str, params: &[&str]) {
    let mut body = BytesMut::new();
    body.put_slice(portal.as_bytes());
    body.put_u8(0);
    body.put_slice(stmt.as_bytes());
    body.put_u8(0);
    body.put_i16(0);
    body.put_i16(params.len() as i16);
    for p in params {
        body.put_i32(p.len() as i32);
        body.put_slice(p.as_bytes());
    }
    body.put_i16(0);
    out.put_u8(b'B');
    out.put_i32(body.len() as i32 + 4);
    out.put_slice(&body);
}

fn m_execute(out: &mut BytesMut) {
    frontend::execute("", 0, out).unwrap();
}

fn m_describe(out: &mut BytesMut, name: &str) {
    frontend::describe(b'S', name, out).unwrap();
}

fn m_close(out: &mut BytesMut, name: &str) {
    frontend::close(b'S', name, out).unwrap();
}

fn m_sync(out: &mut BytesMut) {
    frontend::sync(out);
}

/// Bind (text params) + Execute + Sync of statement `stmt`.
fn bind_exec(stmt: &str, params: &[&str]) -> BytesMut {
    let mut out = BytesMut::new();
    m_bind(&mut out, "", stmt, params);
    m_execute(&mut out);
    m_sync(&mut out);
    out
}

fn parse_sync(name: &str, sql: &str) -> BytesMut {
    let mut out = BytesMut::new();
    m_parse(&mut out, name, sql);
    m_sync(&mut out);
    out
}

/// Prepares `name` on `x`'s connection (Parse, Sync): ParseComplete and ReadyForQuery.
async fn parsed(x: &mut Raw, name: &str, sql: &str) {
    assert_eq!(
        tags(&x.roundtrip(&parse_sync(name, sql)).await),
        "1Z",
        "Parse of {name:?}"
    );
}

fn err_field(body: &[u8], field: u8) -> Option<String> {
    let mut rest = body;
    while let Some((&t, r)) = rest.split_first() {
        if t == 0 {
            break;
        }
        let end = r.iter().position(|&b| b == 0)?;
        if t == field {
            return Some(String::from_utf8_lossy(&r[..end]).into_owned());
        }
        rest = &r[end + 1..];
    }
    None
}

fn err_text(body: &[u8]) -> String {
    format!(
        "{} {}: {}",
        err_field(body, b'S').unwrap_or_default(),
        err_field(body, b'C').unwrap_or_default(),
        err_field(body, b'M').unwrap_or_default()
    )
}

/// SQLSTATE of the first ErrorResponse.
fn error_code(msgs: &[Msg]) -> Option<String> {
    msgs.iter()
        .find(|(t, _)| *t == b'E')
        .and_then(|(_, b)| err_field(b, b'C'))
}

/// The message types, e.g. "12DCZ".
fn tags(msgs: &[Msg]) -> String {
    msgs.iter().map(|(t, _)| *t as char).collect()
}

fn data_rows(msgs: &[Msg]) -> Rows {
    msgs.iter()
        .filter(|(t, _)| *t == b'D')
        .map(|(_, b)| {
            let n = i16::from_be_bytes([b[0], b[1]]) as usize;
            let mut at = 2;
            (0..n)
                .map(|_| {
                    let len = i32::from_be_bytes(b[at..at + 4].try_into().unwrap());
                    at += 4;
                    if len < 0 {
                        None
                    } else {
                        let v = String::from_utf8_lossy(&b[at..at + len as usize]).into_owned();
                        at += len as usize;
                        Some(v)
                    }
                })
                .collect()
        })
        .collect()
}

/// The single value returned by a request, with a useful panic otherwise.
fn single(msgs: &[Msg], what: &str) -> String {
    if let Some(c) = error_code(msgs) {
        let e = msgs.iter().find(|(t, _)| *t == b'E').unwrap();
        panic!(
            "{what}: error {c}: {} (messages {})",
            err_text(&e.1),
            tags(msgs)
        );
    }
    let rows = data_rows(msgs);
    assert_eq!(
        rows.len(),
        1,
        "{what}: expected one row, got {rows:?} ({})",
        tags(msgs)
    );
    rows[0][0].clone().unwrap_or_else(|| "<null>".into())
}

/// Transaction status of the last ReadyForQuery.
fn ready_status(msgs: &[Msg]) -> char {
    let (t, b) = msgs.last().expect("no messages");
    assert_eq!(
        *t,
        b'Z',
        "last message is not ReadyForQuery: {}",
        tags(msgs)
    );
    b[0] as char
}

/// Type OIDs of a RowDescription.
fn row_types(msgs: &[Msg]) -> Vec<u32> {
    let (_, b) = msgs
        .iter()
        .find(|(t, _)| *t == b'T')
        .unwrap_or_else(|| panic!("no RowDescription in {}", tags(msgs)));
    let n = i16::from_be_bytes([b[0], b[1]]) as usize;
    let mut at = 2;
    let mut out = Vec::new();
    for _ in 0..n {
        let end = at + b[at..].iter().position(|&x| x == 0).unwrap();
        at = end + 1;
        // table oid (4), column (2), type oid (4), size (2), modifier (4), format (2)
        out.push(u32::from_be_bytes(b[at + 6..at + 10].try_into().unwrap()));
        at += 18;
    }
    out
}

const INT4_OID: u32 = 23;
const TEXT_OID: u32 = 25;

// ---------------------------------------------------------------------------------------------
// Pool size, modes, timeouts
// ---------------------------------------------------------------------------------------------

/// Transaction pooling: 10 clients doing transactions concurrently through a pool of 2 all
/// succeed, and between them they never use more than 2 server connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_share_a_small_transaction_pool() {
    let p = proxy("transaction", "size = 2");
    let cs = app_cs(&p);
    let mut tasks = Vec::new();
    for i in 0..10 {
        let cs = cs.clone();
        tasks.push(tokio::spawn(async move {
            let c = connect_cs(&cs).await;
            let mut pids = HashSet::new();
            for j in 0..10 {
                q(&c, "BEGIN").await;
                pids.insert(backend_pid(&c).await);
                q(&c, "SELECT pg_sleep(0.005)").await;
                assert_eq!(
                    one(&c, &format!("SELECT {i} * 100 + {j}")).await,
                    (i * 100 + j).to_string()
                );
                q(&c, "COMMIT").await;
                assert_eq!(one(&c, "SELECT 1 + 1").await, "2");
            }
            pids
        }));
    }
    let mut max_in_use = 0;
    let sampler_deadline = Instant::now() + Duration::from_secs(60);
    while tasks.iter().any(|t| !t.is_finished()) && Instant::now() < sampler_deadline {
        if let Some((idle, in_use)) = pool_status(&p).await {
            assert!(
                idle + in_use <= 2,
                "pool holds {idle} idle + {in_use} in use > size 2"
            );
            max_in_use = max_in_use.max(in_use);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut all = HashSet::new();
    for t in tasks {
        all.extend(bounded("client task", t).await.expect("a client failed"));
    }
    assert!(
        all.len() <= 2,
        "10 clients used {} server connections with pool size 2: {all:?}",
        all.len()
    );
    assert!(max_in_use <= 2);
    wait_pool(
        &p,
        "nothing in use once the clients are idle",
        STEP,
        |_, u| u == 0,
    )
    .await;
}

/// `[pool] affinity = false`: every transaction gets the most recently used idle connection,
/// whoever used it (PgBouncer's order), so interleaved clients run one after another on one
/// server process; a reload turning affinity on gives each client its own back again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_affinity_the_most_recently_used_connection_is_handed_out() {
    let p = proxy("transaction", "size = 3\naffinity = false");
    let a = connect(&p).await;
    let b = connect(&p).await;
    let c = connect(&p).await;
    // Each logged in on a server process of its own (three connections: see after the
    // reload); without affinity their transactions, one after another, all run on the one
    // checked in last.
    let mut used = HashSet::new();
    for client in [&a, &b, &c] {
        q(client, "BEGIN; SELECT 1; COMMIT").await;
        used.insert(backend_pid(client).await);
    }
    assert_eq!(used.len(), 1, "one connection for all: {used:?}");
    let last = backend_pid(&c).await;
    for round in 0..5 {
        for client in [&a, &b, &c] {
            q(client, "BEGIN; SELECT 1; COMMIT").await;
            assert_eq!(
                backend_pid(client).await,
                last,
                "round {round}: sequential transactions reuse the connection used last"
            );
        }
    }

    p.rewrite_config("[routing]\nread_write_split = false\n\n[pool]\nsize = 3\n");
    p.reload_ok().await;
    // With affinity each client keeps one connection; the three are different ones.
    let mut mine = Vec::new();
    for client in [&a, &b, &c] {
        mine.push(backend_pid(client).await);
    }
    for round in 0..5 {
        for (i, client) in [&c, &a, &b].into_iter().enumerate() {
            q(client, "BEGIN; SELECT 1; COMMIT").await;
            let want = mine[(i + 2) % 3];
            assert_eq!(
                backend_pid(client).await,
                want,
                "after the reload, round {round}"
            );
        }
    }
    assert_eq!(
        mine.iter().collect::<HashSet<_>>().len(),
        3,
        "after the reload each client has its own connection: {mine:?}"
    );
}

/// Transaction pooling with affinity: while the pool has room, each client gets its own server
/// connection back for every transaction (so server-session state no proxy can move stays
/// with it); a client that leaves frees its connection for the next client instead of the
/// pool growing; and under contention clients share without the pool exceeding its size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_client_keeps_its_server_connection_while_the_pool_has_room() {
    let p = proxy("transaction", "size = 3");
    let a = connect(&p).await;
    let b = connect(&p).await;
    let c = connect(&p).await;
    let first = [
        backend_pid(&a).await,
        backend_pid(&b).await,
        backend_pid(&c).await,
    ];
    assert_eq!(
        first.iter().collect::<HashSet<_>>().len(),
        3,
        "three clients, pool of three: three server connections {first:?}"
    );
    for round in 0..10 {
        // Interleaved transactions: with plain LIFO reuse the clients would rotate through
        // each other's connections.
        for (i, client) in [&c, &a, &b].into_iter().enumerate() {
            q(client, "BEGIN; SELECT 1; COMMIT").await;
            let want = first[(i + 2) % 3];
            assert_eq!(backend_pid(client).await, want, "round {round}");
        }
    }
    // A leaves: its connection goes to the next client; the pool does not grow.
    drop(a);
    wait_clients(&p, 2).await;
    let d = connect(&p).await;
    assert_eq!(
        backend_pid(&d).await,
        first[0],
        "the new client got the connection of the client that left"
    );
    assert_eq!(backend_pid(&b).await, first[1]);
    assert_eq!(backend_pid(&c).await, first[2]);
    wait_pool(&p, "three connections", STEP, |idle, in_use| {
        idle + in_use == 3
    })
    .await;

    // Contention: more clients than connections; all work, the pool stays at its size.
    let cs = app_cs(&p);
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let cs = cs.clone();
            tokio::spawn(async move {
                let c = connect_cs(&cs).await;
                for j in 0..20 {
                    assert_eq!(
                        one(&c, &format!("SELECT {i} * 100 + {j}")).await,
                        (i * 100 + j).to_string()
                    );
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while tasks.iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
        if let Some((idle, in_use)) = pool_status(&p).await {
            assert!(idle + in_use <= 3, "{idle} idle + {in_use} in use > size 3");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for t in tasks {
        bounded("client task", t).await.expect("a client failed");
    }
    assert_eq!(one(&b, "SELECT 1").await, "1");
    assert_eq!(one(&c, "SELECT 2").await, "2");
}

/// A client that leaves takes its settings with it: the idle connections it used are reset
/// (not closed) once nobody took them for a second, so `pg_stat_activity` shows no
/// `application_name` of a client that is gone. Covers a client that left between
/// transactions (its idle connection) and one that left inside a transaction block (rolled
/// back, then reset).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_left_leaves_no_settings_on_the_pool() {
    let p = proxy("transaction", "size = 3");
    let base = app_cs(&p);
    let idle = connect_cs(&format!(
        "{base} application_name=sy_left_idle options='-c work_mem=7MB'"
    ))
    .await;
    q(&idle, "SET statement_timeout = '42s'").await;
    let idle_pid = backend_pid(&idle).await;
    let in_txn = connect_cs(&format!("{base} application_name=sy_left_txn")).await;
    q(&in_txn, "BEGIN; SELECT 1").await;
    let txn_pid = backend_pid(&in_txn).await;
    assert_ne!(idle_pid, txn_pid, "pool of three: a connection each");
    let listed =
        "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'sy\\_left\\_%'";
    assert_eq!(
        su(listed),
        "2",
        "both clients' names are on their server connections"
    );
    drop(idle);
    drop(in_txn);
    wait_clients(&p, 0).await;
    wait_su(listed, "0", STEP).await;
    // Reset, not closed: both server processes are still there, idle, nameless.
    for pid in [idle_pid, txn_pid] {
        wait_su(
            &format!(
                "SELECT state || ':' || application_name FROM pg_stat_activity WHERE pid = {pid}"
            ),
            "idle:",
            STEP,
        )
        .await;
    }
    // The next client starts from the server's defaults on whichever connection it gets.
    let next = connect(&p).await;
    for _ in 0..3 {
        assert_ne!(show(&next, "work_mem").await, "7MB");
        assert_ne!(show(&next, "statement_timeout").await, "42s");
        assert_eq!(show(&next, "application_name").await, "");
    }
}

/// Session pooling: a client keeps one server connection (one backend pid) across
/// transactions while other clients work; each client has its own; and the next client on a
/// returned connection finds it reset.
/// With `standard_conforming_strings` off, `'x\\'` does not end where the classifier's lexer
/// (which assumes it on) would end it, so a `SET` can hide behind it. Such text is taken as
/// changing settings: the client's setting follows it, and never reaches the next client of
/// the pool's one connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_hidden_by_a_backslash_is_still_tracked() {
    let p = proxy("transaction", "size = 1");
    let a = connect_cs(&format!(
        "{} options='-c standard_conforming_strings=off'",
        app_cs(&p)
    ))
    .await;
    // To PostgreSQL: SELECT 'x'', '; SET application_name = 'hidden'; -- ...
    let sql = "SELECT 'x\\', '; SET application_name = 'hidden'; --'";
    let rows = q(&a, sql).await;
    assert_eq!(
        rows[0][0].as_deref(),
        Some("x', "),
        "read as PostgreSQL reads it"
    );
    assert_eq!(one(&a, "SHOW application_name").await, "hidden");
    let b = connect(&p).await;
    assert_eq!(
        one(&b, "SHOW application_name").await,
        "",
        "another client got the hidden setting"
    );
    assert_eq!(one(&a, "SHOW application_name").await, "hidden");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_keeps_one_server_connection_per_client() {
    // With reuse on: the next client gets the returned connection, reset.
    let p = proxy("session", "size = 3\nsession_reuse = true");
    let a = connect(&p).await;
    let b = connect(&p).await;
    let c = connect(&p).await;
    let mut first = Vec::new();
    for cl in [&a, &b, &c] {
        first.push(backend_pid(cl).await);
    }
    let distinct: HashSet<_> = first.iter().collect();
    assert_eq!(
        distinct.len(),
        3,
        "session clients share server connections: {first:?}"
    );
    for round in 0..5 {
        for (cl, pid) in [&a, &b, &c].into_iter().zip(&first) {
            q(cl, "BEGIN").await;
            assert_eq!(
                backend_pid(cl).await,
                *pid,
                "round {round}: backend changed"
            );
            q(cl, "COMMIT").await;
            assert_eq!(
                backend_pid(cl).await,
                *pid,
                "round {round}: backend changed"
            );
        }
    }
    q(&a, "SET search_path = sess_a, public").await;
    q(&a, "SET work_mem = '13MB'").await;
    q(&a, "CREATE TEMP TABLE pool_sess_tmp (x int)").await;
    q(&a, "PREPARE pool_sess_prep AS SELECT 1").await;
    drop(a);
    // The only free connection is a's (b and c hold theirs).
    let e = connect(&p).await;
    assert_eq!(show(&e, "search_path").await, "\"$user\", public");
    assert_ne!(show(&e, "work_mem").await, "13MB");
    assert_eq!(
        one(&e, "SELECT to_regclass('pg_temp.pool_sess_tmp') IS NULL").await,
        "t"
    );
    assert_eq!(
        one(
            &e,
            "SELECT count(*) FROM pg_prepared_statements WHERE name = 'pool_sess_prep'"
        )
        .await,
        "0"
    );
    // The reset above must have run on a's own server connection, handed on.
    let e_pid = backend_pid(&e).await;
    assert_eq!(
        e_pid,
        first[0],
        "with session_reuse the next client gets a's returned connection (b and c hold \
         {:?}), not a new one",
        &first[1..]
    );
    for (cl, pid) in [&b, &c].into_iter().zip(&first[1..]) {
        assert_eq!(backend_pid(cl).await, *pid);
    }
}

/// Session mode by default gives every client a server session nobody used before, as a
/// direct connection would: a leaving client's server connection is closed, not recycled, and
/// connections `min_size` opened ahead (never used) are handed out as they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_gives_each_client_a_fresh_server_session() {
    let p = proxy("session", "size = 2\nmin_size = 1");
    let a = connect(&p).await;
    let a_pid = backend_pid(&a).await;
    q(&a, "CREATE TEMP TABLE pool_fresh_tmp (x int)").await;
    drop(a);
    // a's backend goes away with it.
    wait_backend_gone(a_pid).await;
    for _ in 0..3 {
        let e = connect(&p).await;
        let e_pid = backend_pid(&e).await;
        assert_ne!(e_pid, a_pid, "a's server session was handed on");
        // A session nobody used: no temporary schema yet, nothing prepared.
        assert_eq!(
            one(
                &e,
                "SELECT count(*) FROM pg_namespace WHERE oid = pg_my_temp_schema()"
            )
            .await,
            "0"
        );
        drop(e);
        wait_backend_gone(e_pid).await;
    }
    assert!(
        p.metric("switchyard_server_discards_total{reason=\"session_ended\"}")
            .await
            >= 4.0,
        "closed sessions are counted"
    );
}

/// A login waiting for a slot of a full session pool whose client gives up (closes its
/// connection) leaves at once: its place under `max_client_connections` is freed, and it does
/// not take the slot when one comes free (before, it waited out `checkout_timeout`, then took
/// the slot first and opened a server session for nobody).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_given_up_while_waiting_for_a_session_slot_leaves_at_once() {
    let p = proxy("session", "size = 1\ncheckout_timeout = \"60s\"");
    let holder = connect(&p).await;
    wait_clients(&p, 1).await;
    let cs = p.conn_string(APP_USER, APP_PASSWORD, APP_DB);
    let waiting =
        tokio::spawn(async move { tokio_postgres::connect(&cs, tokio_postgres::NoTls).await });
    // Authenticated and counted, it waits for the slot the holder has.
    wait_clients(&p, 2).await;
    waiting.abort();
    let _ = waiting.await;
    wait_clients(&p, 1).await;
    // The slot goes to the next live login.
    let connects = format!(
        "switchyard_server_connects_total{{backend=\"{}\"}}",
        shared_cluster().primary().name()
    );
    let opened = p.metric(&connects).await;
    drop(holder);
    wait_clients(&p, 0).await;
    let next = connect(&p).await;
    assert_eq!(one(&next, "SELECT 1").await, "1");
    assert_eq!(
        p.metric(&connects).await,
        opened + 1.0,
        "server sessions opened for the next login"
    );
}

/// After a reload from transaction to session pooling, a new session client still gets a
/// server session nobody used, with the pool at its size and every idle connection one the
/// transaction-mode clients used: not one whose sequence state they left (`currval`, as on a
/// new server session, is not defined yet). One of the used connections makes room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_client_after_a_reload_from_transaction_pooling_gets_an_unused_session() {
    su(
        "DROP SEQUENCE IF EXISTS pool_mode_seq; CREATE SEQUENCE pool_mode_seq; \
        ALTER SEQUENCE pool_mode_seq OWNER TO app",
    );
    let p = proxy("transaction", "size = 3");
    // Three transactions at once: each of the pool's three connections serves one.
    let clients = [connect(&p).await, connect(&p).await, connect(&p).await];
    let mut used = HashSet::new();
    for c in &clients {
        q(c, "BEGIN").await;
        q(c, "SELECT nextval('pool_mode_seq')").await;
        used.insert(backend_pid(c).await);
    }
    assert_eq!(used.len(), 3, "{used:?}");
    for c in &clients {
        q(c, "COMMIT").await;
    }
    drop(clients);
    let text = p.config_text();
    p.write_raw_config(&text.replace("pool_mode = \"transaction\"", "pool_mode = \"session\""));
    p.reload_ok().await;

    let discards = "switchyard_server_discards_total{reason=\"unused_session\"}";
    let before = p.metric(discards).await;
    let s = connect(&p).await;
    let pid = backend_pid(&s).await;
    assert!(
        !used.contains(&pid),
        "a used server session ({pid}) was handed on"
    );
    let e = try_simple(&s, "SELECT currval('pool_mode_seq')")
        .await
        .expect_err("currval in a session nobody used");
    assert_eq!(sqlstate(&e), "55000", "{e:?}");
    assert_eq!(p.metric(discards).await, before + 1.0);
}

/// A reload that shrinks `[pool] size` closes the server connections above the new size:
/// the idle ones at once, the ones in use when their transactions end (not only once
/// `idle_timeout` has passed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_shrunk_by_a_reload_closes_the_connections_above_its_size() {
    let p = proxy("transaction", "size = 6\nidle_timeout = \"10min\"");
    let mut clients = Vec::new();
    let mut pids = Vec::new();
    for _ in 0..6 {
        let c = connect(&p).await;
        q(&c, "BEGIN").await;
        pids.push(backend_pid(&c).await);
        clients.push(c);
    }
    let list = pids
        .iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let alive = || {
        su(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE pid IN ({list})"
        ))
        .trim()
        .parse::<usize>()
        .unwrap()
    };
    assert_eq!(alive(), 6, "{pids:?}");
    // Three idle in the pool, three in use.
    for c in &clients[..3] {
        q(c, "COMMIT").await;
    }
    p.rewrite_config(
        "[routing]\nread_write_split = false\n\n[pool]\nsize = 2\nidle_timeout = \"10min\"\n",
    );
    p.reload_ok().await;
    assert!(
        wait_until(Duration::from_secs(20), || alive() == 3),
        "the idle connections above the new size were not closed: {} of 6 left",
        alive()
    );
    // The clients still in their transactions finish them; then two connections remain.
    for c in &clients[3..] {
        q(c, "SELECT 1").await;
        q(c, "COMMIT").await;
    }
    assert!(
        wait_until(Duration::from_secs(20), || alive() == 2),
        "the connections in use above the new size were kept: {} of 6 left",
        alive()
    );
    // The pool serves on, within its new size.
    for c in &clients {
        assert_eq!(one(c, "SELECT 'on'").await, "on");
    }
}

/// A lone BEGIN holds no server connection: the proxy answers it and sends it with the
/// transaction's first statement (one round trip less, and the connection serves others
/// meanwhile). The transaction is real all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_begin_holds_no_server_connection() {
    let p = proxy("transaction", "size = 1\ncheckout_timeout = \"1s\"");
    create_table("pool_deferred_t", "v int");
    let a = connect(&p).await;
    let b = connect(&p).await;
    for round in 0..3 {
        q(&a, "BEGIN").await;
        assert_eq!(one(&b, "SELECT 'b runs'").await, "b runs", "round {round}");
        let pid = backend_pid(&a).await;
        q(&a, "INSERT INTO pool_deferred_t VALUES (1)").await;
        assert_eq!(backend_pid(&a).await, pid, "round {round}: one transaction");
        q(&a, "ROLLBACK").await;
        assert_eq!(one(&b, "SELECT count(*) FROM pool_deferred_t").await, "0");
    }
    q(&a, "BEGIN").await;
    q(&a, "INSERT INTO pool_deferred_t VALUES (2)").await;
    q(&a, "COMMIT").await;
    assert_eq!(one(&b, "SELECT sum(v) FROM pool_deferred_t").await, "2");

    // A BEGIN the server could refuse is not answered by the proxy: the server refuses it at
    // once, and, as directly, the next statement commits on its own (had the proxy answered
    // "BEGIN", the client would believe it inside a transaction that ROLLBACK undoes).
    for (i, bad) in [
        "BEGIN ISOLATION LEVEL FOO",
        "BEGIN garbage",
        "BEGIN READ ONLY,",
    ]
    .into_iter()
    .enumerate()
    {
        let err = try_simple(&a, bad).await.expect_err(bad);
        assert_eq!(sqlstate(&err), "42601", "{bad}: {err:?}");
        let v = 10 + i;
        q(&a, &format!("INSERT INTO pool_deferred_t VALUES ({v})")).await;
        q(&a, "ROLLBACK").await;
        assert_eq!(
            one(
                &b,
                &format!("SELECT count(*) FROM pool_deferred_t WHERE v = {v}")
            )
            .await,
            "1",
            "after {bad:?}"
        );
    }
}

/// A Flush sent after a batch's Sync opens nothing: the client, idle after it, holds no
/// server connection (another client gets the pool's only one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_after_a_sync_holds_no_server_connection() {
    let p = proxy("transaction", "size = 1\ncheckout_timeout = \"3s\"");
    let mut a = raw_login(&p, &[]).await;
    let b = connect(&p).await;
    let mut out = BytesMut::new();
    m_parse(&mut out, "", "SELECT 1");
    m_bind(&mut out, "", "", &[]);
    m_execute(&mut out);
    m_sync(&mut out);
    frontend::flush(&mut out);
    a.raw.send(&out).await.unwrap();
    while bounded("a's batch", a.raw.frame()).await.tag != b'Z' {}
    assert_eq!(one(&b, "SELECT 'b runs'").await, "b runs");
    let (code, _, status) = raw_q(&mut a, "SELECT 2").await;
    assert_eq!((code.as_str(), status), ("", 'I'));
}

/// Logs in over the raw protocol (to see ReadyForQuery's transaction status, or to send bytes
/// that are not UTF-8), with `extra` startup parameters.
async fn raw_login(p: &Proxy, extra: &[(&str, &str)]) -> support::raw::Session {
    support::raw::login_app(&p.addr(), extra).await
}

/// Runs `sql` over the raw protocol: (SQLSTATE or "", command tags, transaction status).
async fn raw_q(s: &mut support::raw::Session, sql: &str) -> (String, Vec<String>, char) {
    let r = bounded(sql, s.raw.query(sql)).await;
    let code = r.error.as_ref().map(|e| e.code()).unwrap_or_default();
    (code, r.tags, r.status as char)
}

/// COMMIT, ROLLBACK, END and ABORT outside any transaction block are answered as PostgreSQL
/// answers them (WARNING 25P01 "there is no transaction in progress", then the tag), with no
/// server: while the only server connection is taken they do not wait for one (nor, with no
/// primary, for a primary). With `client_min_messages = error`, no warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_or_rollback_outside_a_block_needs_no_server() {
    use support::raw::Next;
    let p = proxy("transaction", "size = 1\ncheckout_timeout = \"1s\"");
    let mut a = raw_login(&p, &[]).await;
    let holder = connect(&p).await;
    q(&holder, "BEGIN").await;
    q(&holder, "SELECT 1").await;
    // Each answer: (notices as severity/code/message, tags, errors, status).
    async fn answer(
        s: &mut support::raw::Session,
        sql: &str,
    ) -> (Vec<String>, Vec<String>, Vec<String>, char) {
        let mut out = bytes::BytesMut::new();
        postgres_protocol::message::frontend::query(sql, &mut out).unwrap();
        s.raw.send(&out).await.unwrap();
        let (mut notices, mut tags, mut errors) = (vec![], vec![], vec![]);
        loop {
            match s.raw.next(STEP).await {
                Next::Frame(f) if f.tag == b'N' => {
                    notices.push(format!("{} {} {}", f.severity(), f.code(), f.message()))
                }
                Next::Frame(f) if f.tag == b'C' => {
                    tags.push(String::from_utf8_lossy(&f.body[..f.body.len() - 1]).into_owned())
                }
                Next::Frame(f) if f.is_error() => errors.push(f.code()),
                Next::Frame(f) if f.tag == b'Z' => {
                    return (notices, tags, errors, f.body[0] as char)
                }
                Next::Frame(_) => {}
                other => panic!("{sql}: {other:?}"),
            }
        }
    }
    let warning = vec!["WARNING 25P01 there is no transaction in progress".to_string()];
    for (sql, tag) in [
        ("COMMIT", "COMMIT"),
        ("rollback;", "ROLLBACK"),
        ("END", "COMMIT"),
        ("ABORT TRANSACTION", "ROLLBACK"),
    ] {
        assert_eq!(
            answer(&mut a, sql).await,
            (warning.clone(), vec![tag.to_string()], vec![], 'I'),
            "{sql}"
        );
    }
    // (SET needs a server: given back first.)
    q(&holder, "COMMIT").await;
    assert_eq!(
        raw_q(&mut a, "SET client_min_messages = error").await.2,
        'I'
    );
    q(&holder, "BEGIN").await;
    q(&holder, "SELECT 1").await;
    assert_eq!(
        answer(&mut a, "ROLLBACK").await,
        (vec![], vec!["ROLLBACK".to_string()], vec![], 'I')
    );
    q(&holder, "COMMIT").await;
}

/// The same through the extended protocol (a driver's prepared `rollback`, psycopg's
/// pipeline mode): a Bind and Execute of a statement that is a lone COMMIT or ROLLBACK, with
/// or without its unnamed Parse and a Describe of its portal, is answered with no server
/// while the only connection is taken; an unnamed one parsed so is the client's unnamed
/// statement afterwards, on a server too. `COMMIT AND CHAIN` is not answered so (PostgreSQL
/// refuses it outside a block): it waits for a server, here in vain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extended_commit_or_rollback_outside_a_block_needs_no_server() {
    let p = proxy("transaction", "size = 1\ncheckout_timeout = \"1s\"");
    let mut a = Raw::app(&p).await;
    parsed(&mut a, "rb", "ROLLBACK").await;
    parsed(&mut a, "cm", "commit").await;
    let holder = connect(&p).await;
    q(&holder, "BEGIN").await;
    q(&holder, "SELECT 1").await;
    // (Message types, command tags, SQLSTATE of an error.)
    let outline = |r: &[Msg]| {
        let cmd: Vec<String> = r
            .iter()
            .filter(|(t, _)| *t == b'C')
            .map(|(_, b)| String::from_utf8_lossy(&b[..b.len() - 1]).into_owned())
            .collect();
        (tags(r), cmd, error_code(r))
    };
    let done = |t: &str, cmd: &str| (t.to_string(), vec![cmd.to_string()], None);
    assert_eq!(
        outline(&a.roundtrip(&bind_exec("rb", &[])).await),
        done("2NCZ", "ROLLBACK")
    );
    let mut b = BytesMut::new();
    m_bind(&mut b, "", "cm", &[]);
    frontend::describe(b'P', "", &mut b).unwrap();
    m_execute(&mut b);
    m_sync(&mut b);
    assert_eq!(outline(&a.roundtrip(&b).await), done("2nNCZ", "COMMIT"));
    let mut b = BytesMut::new();
    m_parse(&mut b, "", "  rollback;");
    b.extend_from_slice(&bind_exec("", &[]));
    assert_eq!(outline(&a.roundtrip(&b).await), done("12NCZ", "ROLLBACK"));
    assert_eq!(
        outline(&a.roundtrip(&bind_exec("", &[])).await),
        done("2NCZ", "ROLLBACK")
    );
    let mut b = BytesMut::new();
    m_parse(&mut b, "", "COMMIT AND CHAIN");
    b.extend_from_slice(&bind_exec("", &[]));
    assert_eq!(error_code(&a.roundtrip(&b).await).as_deref(), Some("53300"));

    // Ending a block whose BEGIN the proxy holds (nothing ran in it): no warning; AND CHAIN
    // keeps a block open.
    let mut begin = BytesMut::new();
    frontend::query("BEGIN", &mut begin).unwrap();
    assert_eq!(tags(&a.roundtrip(&begin).await), "CZ");
    let mut b = BytesMut::new();
    m_parse(&mut b, "", "ROLLBACK AND CHAIN");
    b.extend_from_slice(&bind_exec("", &[]));
    let r = a.roundtrip(&b).await;
    assert_eq!(outline(&r), done("12CZ", "ROLLBACK"));
    assert_eq!(r.last().map(|(_, b)| b[0]), Some(b'T'));
    let r = a.roundtrip(&bind_exec("cm", &[])).await;
    assert_eq!(outline(&r), done("2CZ", "COMMIT"));
    assert_eq!(r.last().map(|(_, b)| b[0]), Some(b'I'));

    q(&holder, "COMMIT").await;
    // On a server, in a block: its unnamed statement is the ROLLBACK AND CHAIN parsed
    // above. (A Query would destroy it.)
    let mut b = BytesMut::new();
    m_parse(&mut b, "bg", "BEGIN");
    m_bind(&mut b, "", "bg", &[]);
    m_execute(&mut b);
    b.extend_from_slice(&bind_exec("", &[]));
    let r = a.roundtrip(&b).await;
    assert_eq!(
        outline(&r),
        (
            "12C2CZ".into(),
            vec!["BEGIN".into(), "ROLLBACK".into()],
            None
        )
    );
    assert_eq!(r.last().map(|(_, b)| b[0]), Some(b'T'));
    let mut b = BytesMut::new();
    frontend::query("ROLLBACK", &mut b).unwrap();
    assert_eq!(tags(&a.roundtrip(&b).await), "CZ");
    parsed(&mut a, "s", "SELECT 'x' || $1::text").await;
    assert_eq!(
        single(&a.roundtrip(&bind_exec("s", &["1"])).await, "s"),
        "x1"
    );
}

/// A transaction block that fails without a server fails as PostgreSQL's would. After a BEGIN
/// the proxy answered, no server for the first statement (53300) leaves the block failed
/// ("E"); a ROLLBACK ends it without a server; statements in the failed block are refused
/// (25P02) at once, as PostgreSQL refuses them, while no server is to be had as after; COMMIT
/// is answered ROLLBACK; nothing of it commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_that_fails_without_a_server_stays_failed() {
    let p = proxy("transaction", "size = 1\ncheckout_timeout = \"300ms\"");
    create_table("pool_failed_t", "v int");
    let holder = connect(&p).await;
    let mut a = raw_login(&p, &[]).await;
    let insert = "INSERT INTO pool_failed_t VALUES (1)";
    q(&holder, "BEGIN").await;
    q(&holder, "SELECT 1").await;

    assert_eq!(
        raw_q(&mut a, "BEGIN").await,
        ("".into(), vec!["BEGIN".into()], 'T')
    );
    let (code, _, status) = raw_q(&mut a, insert).await;
    assert_eq!((code.as_str(), status), ("53300", 'E'));
    assert_eq!(
        raw_q(&mut a, "ROLLBACK").await,
        ("".into(), vec!["ROLLBACK".into()], 'I'),
        "ROLLBACK of the failed block, answered while the only connection is still taken"
    );

    assert_eq!(raw_q(&mut a, "BEGIN").await.2, 'T');
    let (code, _, status) = raw_q(&mut a, insert).await;
    assert_eq!((code.as_str(), status), ("53300", 'E'));
    // (Not each after waiting for a server, to fail with 53300.)
    for sql in [
        insert,
        "SELECT 1",
        "/* c */ select 2; select 3",
        "; ; select 4",
    ] {
        let (code, _, status) = raw_q(&mut a, sql).await;
        assert_eq!(
            (code.as_str(), status),
            ("25P02", 'E'),
            "{sql} in the failed block, the only connection still taken"
        );
    }
    q(&holder, "COMMIT").await;
    // An empty Query is no statement to ignore: PostgreSQL answers it (EmptyQueryResponse),
    // the block still failed.
    assert_eq!(raw_q(&mut a, ";").await, ("".into(), vec![], 'E'));
    for sql in [insert, "SELECT 1"] {
        let (code, _, status) = raw_q(&mut a, sql).await;
        assert_eq!(
            (code.as_str(), status),
            ("25P02", 'E'),
            "{sql} in the failed block"
        );
    }
    assert_eq!(
        raw_q(&mut a, "COMMIT").await,
        ("".into(), vec!["ROLLBACK".into()], 'I')
    );
    assert_eq!(
        one(&holder, "SELECT count(*) FROM pool_failed_t").await,
        "0"
    );
    // And the client goes on normally.
    assert_eq!(
        raw_q(&mut a, insert).await,
        ("".into(), vec!["INSERT 0 1".into()], 'I')
    );
    assert_eq!(
        one(&holder, "SELECT count(*) FROM pool_failed_t").await,
        "1"
    );
}

/// The same through the extended protocol: in a block that failed without a server, a Parse
/// or a Bind of a statement that does not end the block is refused (25P02) at once and the
/// batch skipped to its Sync ("E"), while no server is to be had; a Bind of the client's
/// prepared ROLLBACK or COMMIT ends the block ("ROLLBACK", "I") without one. A statement whose
/// Parse was refused does not exist afterwards; nothing of the block commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extended_request_in_a_block_that_failed_without_a_server_is_refused_at_once() {
    let p = proxy("transaction", "size = 1\ncheckout_timeout = \"300ms\"");
    create_table("pool_failed_x", "v int");
    let mut a = Raw::app(&p).await;
    parsed(&mut a, "ins", "INSERT INTO pool_failed_x VALUES ($1::int)").await;
    parsed(&mut a, "rb", "ROLLBACK").await;
    parsed(&mut a, "cm", "COMMIT").await;
    parsed(&mut a, "rbc", "ROLLBACK AND CHAIN").await;
    let holder = connect(&p).await;
    q(&holder, "BEGIN").await;
    q(&holder, "SELECT 1").await;
    // (Message types, SQLSTATE of an error, transaction status.)
    let outline = |r: &[Msg]| {
        (
            tags(r),
            error_code(r),
            r.last().map_or('?', |(_, b)| b[0] as char),
        )
    };
    let refused = || ("EZ".to_string(), Some("25P02".to_string()), 'E');
    let cmd_tags = |r: &[Msg]| -> Vec<String> {
        r.iter()
            .filter(|(t, _)| *t == b'C')
            .map(|(_, b)| String::from_utf8_lossy(&b[..b.len() - 1]).into_owned())
            .collect()
    };
    for end in ["rb", "cm"] {
        assert_eq!(outline(&a.simple("BEGIN").await).2, 'T');
        let r = a.roundtrip(&bind_exec("ins", &["1"])).await;
        assert_eq!(outline(&r), ("EZ".into(), Some("53300".into()), 'E'));
        let mut unnamed = BytesMut::new();
        m_parse(&mut unnamed, "", "SELECT 1");
        unnamed.extend_from_slice(&bind_exec("", &[]));
        let mut described = BytesMut::new();
        m_parse(&mut described, "", "/* c */ select $1::int");
        m_describe(&mut described, "");
        m_sync(&mut described);
        for (what, batch) in [
            ("an unnamed Parse, Bind, Execute", unnamed),
            ("a Bind of a prepared INSERT", bind_exec("ins", &["2"])),
            ("a named Parse", parse_sync("newer", "SELECT 2")),
            ("a Parse and Describe", described),
        ] {
            assert_eq!(
                outline(&a.roundtrip(&batch).await),
                refused(),
                "{what} in the failed block, the only connection still taken"
            );
        }
        let r = a.roundtrip(&bind_exec(end, &[])).await;
        assert_eq!(
            (tags(&r), cmd_tags(&r), r.last().map(|(_, b)| b[0])),
            ("2CZ".into(), vec!["ROLLBACK".to_string()], Some(b'I')),
            "{end} ends the failed block, the only connection still taken"
        );
    }
    // Statements PostgreSQL refuses in a failed block though they begin like those that end
    // it, through the simple protocol: refused at once too.
    assert_eq!(
        outline(&a.simple("BEGIN ISOLATION LEVEL REPEATABLE READ").await).2,
        'T'
    );
    let r = a.roundtrip(&bind_exec("ins", &["1"])).await;
    assert_eq!(outline(&r).1.as_deref(), Some("53300"));
    for sql in ["COMMIT PREPARED 'g'", "PREPARE p AS SELECT 1"] {
        let r = a.simple(sql).await;
        assert_eq!(
            (tags(&r), error_code(&r), r.last().map(|(_, b)| b[0])),
            ("EZ".into(), Some("25P02".into()), Some(b'E')),
            "{sql} in the failed block, the only connection still taken"
        );
    }
    // A ROLLBACK AND CHAIN ends it at once and begins the next block, with the defaults as
    // PostgreSQL's (the failed block's modes were undone with it).
    let r = a.roundtrip(&bind_exec("rbc", &[])).await;
    assert_eq!(
        (tags(&r), cmd_tags(&r), r.last().map(|(_, b)| b[0])),
        ("2CZ".into(), vec!["ROLLBACK".to_string()], Some(b'T')),
        "ROLLBACK AND CHAIN ends the failed block, the only connection still taken"
    );
    q(&holder, "COMMIT").await;
    let r = a.simple("SHOW transaction_isolation").await;
    assert_eq!(
        (
            single(&r, "transaction_isolation"),
            r.last().map(|(_, b)| b[0])
        ),
        ("read committed".to_string(), Some(b'T')),
        "the chained block's modes"
    );
    assert_eq!(outline(&a.simple("ROLLBACK").await).2, 'I');
    // A block begun by a chain keeps the chain's modes through a failure, as PostgreSQL
    // gives them to it (not as settings made in it): a ROLLBACK AND CHAIN chains them again.
    q(&holder, "BEGIN").await;
    q(&holder, "SELECT 1").await;
    for sql in ["BEGIN ISOLATION LEVEL REPEATABLE READ", "COMMIT AND CHAIN"] {
        assert_eq!(outline(&a.simple(sql).await).2, 'T', "{sql}");
    }
    let r = a.roundtrip(&bind_exec("ins", &["1"])).await;
    assert_eq!(outline(&r).1.as_deref(), Some("53300"));
    let r = a.roundtrip(&bind_exec("rbc", &[])).await;
    assert_eq!(
        (tags(&r), r.last().map(|(_, b)| b[0])),
        ("2CZ".into(), Some(b'T')),
        "ROLLBACK AND CHAIN of a failed chained block"
    );
    q(&holder, "COMMIT").await;
    let r = a.simple("SHOW transaction_isolation").await;
    assert_eq!(
        single(&r, "transaction_isolation"),
        "repeatable read",
        "the modes of a failed chained block, chained again"
    );
    assert_eq!(outline(&a.simple("ROLLBACK").await).2, 'I');
    assert_eq!(
        one(&holder, "SELECT count(*) FROM pool_failed_x").await,
        "0"
    );
    // The refused Parse made no statement: its name is free.
    parsed(&mut a, "newer", "SELECT 3").await;
    let r = a.roundtrip(&bind_exec("ins", &["4"])).await;
    assert_eq!(outline(&r), ("2CZ".into(), None, 'I'));
    assert_eq!(
        one(&holder, "SELECT count(*) FROM pool_failed_x").await,
        "1"
    );
}

/// A transaction whose server connection is lost (without a word from the server: a crash, a
/// partition) fails: the client's next request gets 08006 with the block failed ("E"), later
/// ones 25P02, COMMIT is answered ROLLBACK, and nothing of it commits (a client that goes on
/// after an error must not see its later statements committed on their own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_whose_server_dies_stays_failed() {
    let (p, relay) = relayed_proxy("transaction", "size = 2");
    create_table("pool_lost_t", "v int");
    let check = connect(&p).await;
    let mut a = raw_login(&p, &[]).await;
    let insert = "INSERT INTO pool_lost_t VALUES (1)";
    assert_eq!(raw_q(&mut a, "BEGIN").await.2, 'T');
    assert_eq!(raw_q(&mut a, insert).await.2, 'T');
    let r = bounded("pid", a.raw.query("SELECT pg_backend_pid()")).await;
    let pid: i32 = r.scalar().parse().unwrap();
    let relay = cut(relay).await;
    // The server process notices its client is gone only when it reads or writes.
    kill_server(pid).await;
    let (code, _, status) = raw_q(&mut a, insert).await;
    assert_eq!((code.as_str(), status), ("08006", 'E'));
    let (code, _, status) = raw_q(&mut a, insert).await;
    assert_eq!((code.as_str(), status), ("25P02", 'E'));
    assert_eq!(
        raw_q(&mut a, "COMMIT").await,
        ("".into(), vec!["ROLLBACK".into()], 'I')
    );
    assert_eq!(one(&check, "SELECT count(*) FROM pool_lost_t").await, "0");
    assert_eq!(raw_q(&mut a, insert).await.2, 'I');
    assert_eq!(one(&check, "SELECT count(*) FROM pool_lost_t").await, "1");
    drop(relay);
}

/// A COMMIT whose server connection is lost while it runs fails (08006), but ends the block
/// all the same, as a failed COMMIT does in PostgreSQL: the client is not left in a failed
/// block ("E"), where its next statements would get 25P02 and its next COMMIT a ROLLBACK.
/// Through both protocols. (The COMMIT runs for seconds, in a deferred trigger, so that it is
/// in flight when the connection is cut; its server process is ended then, so nothing
/// commits.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_server_dies_ends_the_block() {
    let (p, relay) = relayed_proxy("transaction", "size = 2");
    create_table("pool_lost_commit_t", "v int");
    su(
        "CREATE OR REPLACE FUNCTION pool_slow_commit() RETURNS trigger LANGUAGE plpgsql AS \
        $$ BEGIN PERFORM pg_sleep(5); RETURN NULL; END $$; \
        CREATE CONSTRAINT TRIGGER slow AFTER INSERT ON pool_lost_commit_t \
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION pool_slow_commit()",
    );
    let check = connect(&p).await;
    let insert = "INSERT INTO pool_lost_commit_t VALUES (1)";
    // Cuts the server connection of process `pid` once it runs the COMMIT, and ends it.
    let cut_commit = |pid: i32, relay| async move {
        let running =
            format!("SELECT state || ':' || query FROM pg_stat_activity WHERE pid = {pid}");
        wait_su(&running, "active:COMMIT", STEP).await;
        let relay = cut(relay).await;
        kill_server(pid).await;
        relay
    };

    let mut a = raw_login(&p, &[]).await;
    assert_eq!(raw_q(&mut a, "BEGIN").await.2, 'T');
    assert_eq!(raw_q(&mut a, insert).await.2, 'T');
    let r = bounded("pid", a.raw.query("SELECT pg_backend_pid()")).await;
    let pid: i32 = r.scalar().parse().unwrap();
    let mut commit = bytes::BytesMut::new();
    postgres_protocol::message::frontend::query("COMMIT", &mut commit).unwrap();
    a.raw.send(&commit).await.unwrap();
    let relay = cut_commit(pid, relay).await;
    let r = bounded("COMMIT", a.raw.read_result("COMMIT")).await;
    let code = r.error.as_ref().map(|e| e.code()).unwrap_or_default();
    assert_eq!(
        (code.as_str(), r.status as char),
        ("08006", 'I'),
        "the lost COMMIT ends the block"
    );
    assert_eq!(
        raw_q(&mut a, "SELECT 1").await,
        ("".into(), vec!["SELECT 1".into()], 'I'),
        "the next statement runs on its own"
    );

    // The extended protocol: tokio-postgres's execute() sends the COMMIT as Parse, Describe,
    // Sync, then Bind, Execute, Sync.
    let c = connect(&p).await;
    q(&c, "BEGIN").await;
    q(&c, insert).await;
    let pid: i32 = one(&c, "SELECT pg_backend_pid()").await.parse().unwrap();
    let (e, relay) = tokio::join!(
        bounded("COMMIT", c.execute("COMMIT", &[])),
        cut_commit(pid, relay)
    );
    let e = e.expect_err("the COMMIT's server is gone");
    assert_eq!(e.code().map(|c| c.code()), Some("08006"), "{e:?}");
    assert_eq!(
        one(&c, "SELECT 1").await,
        "1",
        "after the lost COMMIT the client is in no block"
    );
    assert_eq!(
        one(&check, "SELECT count(*) FROM pool_lost_commit_t").await,
        "0"
    );
    drop(relay);
}

/// A transaction block the client began in the request whose server connection is lost (a
/// Query `BEGIN; INSERT ...; SELECT pg_sleep(...)`, or the same statements bound in one
/// extended batch, as pgjdbc sends them with autocommit off) has failed: the error comes with
/// ReadyForQuery "E", the client's next statements get 25P02, and its COMMIT is answered
/// ROLLBACK. Never does what the client sends next run on its own (it committed row by row).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_begun_in_the_request_lost_with_its_server_stays_failed() {
    let (p, relay) = relayed_proxy("transaction", "size = 2");
    create_table("pool_lost_begin_t", "v int");
    let check = connect(&p).await;
    let mut relay = relay;
    for extended in [false, true] {
        let mut a = raw_login(&p, &[]).await;
        let sleep = format!("SELECT pg_sleep(60) /* lost begin {extended} */");
        let mut b = BytesMut::new();
        if extended {
            for sql in ["BEGIN", "INSERT INTO pool_lost_begin_t VALUES (1)", &sleep] {
                m_parse(&mut b, "", sql);
                m_bind(&mut b, "", "", &[]);
                m_execute(&mut b);
            }
            m_sync(&mut b);
        } else {
            frontend::query(
                &format!("BEGIN; INSERT INTO pool_lost_begin_t VALUES (1); {sleep}"),
                &mut b,
            )
            .unwrap();
        }
        a.raw.send(&b).await.unwrap();
        // (pg_stat_activity shows the whole Query, or the statement the batch runs.)
        let pid = running(if extended {
            &sleep
        } else {
            "BEGIN; INSERT INTO pool_lost_begin_t"
        })
        .await;
        relay = cut(relay).await;
        kill_server(pid).await;
        let r = bounded("the lost request", a.raw.read_result("lost")).await;
        let code = r.error.as_ref().map(|e| e.code()).unwrap_or_default();
        assert_eq!(
            (code.as_str(), r.status as char),
            ("08006", 'E'),
            "extended: {extended}: the block the request began has failed"
        );
        assert_eq!(
            raw_q(&mut a, "INSERT INTO pool_lost_begin_t VALUES (2)").await,
            ("25P02".into(), vec![], 'E'),
            "extended: {extended}: a statement of the failed block"
        );
        assert_eq!(
            raw_q(&mut a, "COMMIT").await,
            ("".into(), vec!["ROLLBACK".into()], 'I'),
            "extended: {extended}: the failed block's COMMIT"
        );
        assert_eq!(
            raw_q(&mut a, "SELECT 1").await,
            ("".into(), vec!["SELECT 1".into()], 'I'),
        );
    }
    assert_eq!(
        one(&check, "SELECT count(*) FROM pool_lost_begin_t").await,
        "0",
        "nothing of the lost blocks committed"
    );
    // A block begun and ended by an earlier request of a pipeline: the request lost after it
    // fails on its own, outside any block.
    let mut a = raw_login(&p, &[]).await;
    let sleep = "SELECT pg_sleep(60) /* lost after a block */";
    let mut b = BytesMut::new();
    frontend::query(
        "BEGIN; INSERT INTO pool_lost_begin_t VALUES (3); COMMIT",
        &mut b,
    )
    .unwrap();
    frontend::query(sleep, &mut b).unwrap();
    a.raw.send(&b).await.unwrap();
    let pid = running(sleep).await;
    relay = cut(relay).await;
    kill_server(pid).await;
    let first = bounded("the block", a.raw.read_result("block")).await;
    assert!(
        first.error.is_none() && first.status == b'I',
        "{:?}",
        first.tags
    );
    let r = bounded("the lost request", a.raw.read_result("lost")).await;
    let code = r.error.as_ref().map(|e| e.code()).unwrap_or_default();
    assert_eq!((code.as_str(), r.status as char), ("08006", 'I'));
    assert_eq!(
        raw_q(&mut a, "SELECT 1").await,
        ("".into(), vec!["SELECT 1".into()], 'I'),
    );
    drop(relay);
}

/// The server process whose statement `sql` waits for a lock (bounded).
async fn waiting_for_lock(sql: &str) -> i32 {
    let waiting = format!(
        "SELECT coalesce(max(pid), 0) FROM pg_stat_activity \
         WHERE wait_event_type = 'Lock' AND query = '{sql}'"
    );
    let deadline = Instant::now() + STEP;
    loop {
        let pid: i32 = su(&waiting).parse().unwrap();
        if pid != 0 {
            return pid;
        }
        assert!(Instant::now() < deadline, "{sql}: never waited for a lock");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The server process a raw client's next statement runs on.
async fn raw_backend_pid(a: &mut Raw) -> i32 {
    data_rows(&a.simple("SELECT pg_backend_pid()").await)[0][0]
        .clone()
        .unwrap()
        .parse()
        .unwrap()
}

/// A server session ended (an administrator's `pg_terminate_backend`) while it runs the
/// proxy's own work ahead of a client's request (here the Parse that prepares the client's
/// statement on a connection that lacks it, waiting for a lock): the request never ran, and
/// the client, which was not using that session, keeps its own: an error for the request,
/// not the server's FATAL and a closed connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ended_before_the_request_ran_does_not_end_the_client() {
    let p = proxy("transaction", "size = 2");
    create_table("pool_fatal_own_t", "v int");
    let sql = "SELECT v FROM pool_fatal_own_t /* fatal own */";
    let mut a = Raw::app(&p).await;
    parsed(&mut a, "s", sql).await;
    assert_eq!(tags(&a.roundtrip(&bind_exec("s", &[])).await), "2CZ");
    let pid = raw_backend_pid(&mut a).await;
    // Between transactions: a's session goes on, on a connection without its statement.
    kill_server(pid).await;
    let locker = connect(&p).await;
    q(&locker, "BEGIN").await;
    q(
        &locker,
        "LOCK TABLE pool_fatal_own_t IN ACCESS EXCLUSIVE MODE",
    )
    .await;
    a.send(&bind_exec("s", &[])).await;
    let parsing = waiting_for_lock(sql).await;
    kill_server(parsing).await;
    let got = a.until_ready().await;
    let e = got
        .iter()
        .find(|(t, _)| *t == b'E')
        .unwrap_or_else(|| panic!("no error: {}", tags(&got)));
    assert_eq!(
        err_field(&e.1, b'S').as_deref(),
        Some("ERROR"),
        "{}",
        err_text(&e.1)
    );
    assert!(
        err_text(&e.1).contains("nothing of it ran"),
        "{}",
        err_text(&e.1)
    );
    assert_eq!(ready_status(&got), 'I');
    q(&locker, "COMMIT").await;
    // The client's session goes on, and so does its statement.
    assert_eq!(tags(&a.roundtrip(&bind_exec("s", &[])).await), "2CZ");

    // But when part of the client's batch ran before the proxy's own work (a block that
    // committed, then a Bind of a statement to prepare there), the client is never told that
    // nothing ran: it gets the server's FATAL, as connected directly.
    create_table("pool_fatal_own_u", "v int");
    let pid = raw_backend_pid(&mut a).await;
    kill_server(pid).await;
    q(&locker, "BEGIN").await;
    q(
        &locker,
        "LOCK TABLE pool_fatal_own_t IN ACCESS EXCLUSIVE MODE",
    )
    .await;
    let mut b = BytesMut::new();
    for sql in ["BEGIN", "INSERT INTO pool_fatal_own_u VALUES (1)", "COMMIT"] {
        m_parse(&mut b, "", sql);
        m_bind(&mut b, "", "", &[]);
        m_execute(&mut b);
    }
    m_bind(&mut b, "", "s", &[]);
    m_execute(&mut b);
    m_sync(&mut b);
    a.send(&b).await;
    let parsing = waiting_for_lock(sql).await;
    kill_server(parsing).await;
    assert_eq!(su("SELECT count(*) FROM pool_fatal_own_u"), "1");
    let mut fatal = None;
    while let Some(m) = bounded("the batch's answers", a.try_recv()).await {
        if m.0 == b'E' {
            assert!(
                !err_text(&m.1).contains("nothing of it ran"),
                "told nothing ran after its block committed: {}",
                err_text(&m.1)
            );
            fatal = Some(err_text(&m.1));
        }
    }
    assert!(
        fatal
            .as_deref()
            .is_some_and(|f| f.starts_with("FATAL 57P01")),
        "{fatal:?}"
    );
    q(&locker, "COMMIT").await;
}

/// A pool of 1 whose connection is held by an open transaction: another client's query fails
/// with SQLSTATE 53300 after checkout_timeout (not a hang), a new login fails the same way, and
/// the client stays usable once the connection is free again. checkout_timeout is 6 s, above
/// the default of 5 s, so that waiting at least 6 s proves the configured value applies;
/// nothing checks how soon after it the error comes (only that it comes, within 30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_timeout_fails_with_53300_instead_of_hanging() {
    let p = proxy("transaction", "size = 1\ncheckout_timeout = \"6s\"");
    let b = connect(&p).await;
    let a = connect(&p).await;
    q(&a, "BEGIN").await;
    q(&a, "SELECT 1").await;
    let hang = Duration::from_secs(30);

    let start = Instant::now();
    let err = tokio::time::timeout(hang, b.simple_query("SELECT 1"))
        .await
        .expect("the query hung instead of failing after checkout_timeout")
        .expect_err("a query got a server connection although the only one is in use");
    let waited = start.elapsed();
    assert_eq!(sqlstate(&err), "53300", "{err:?}");
    assert!(
        waited >= Duration::from_millis(5900),
        "failed after only {waited:?}, before checkout_timeout (6 s)"
    );

    // The same through the extended protocol.
    let err = tokio::time::timeout(hang, b.query_one("SELECT $1::int4", &[&1i32]))
        .await
        .expect("an extended-protocol query hung instead of failing after checkout_timeout")
        .expect_err("an extended-protocol query got a server connection");
    assert_eq!(sqlstate(&err), "53300", "{err:?}");

    let login = tokio::time::timeout(hang, p.try_connect(APP_USER, APP_PASSWORD, APP_DB))
        .await
        .expect("a login hung while the pool was exhausted");
    match login {
        Ok(_) => panic!("a login succeeded although the pool was exhausted"),
        Err(e) => assert_eq!(sqlstate(&e), "53300", "{e:?}"),
    }

    q(&a, "COMMIT").await;
    assert_eq!(one(&b, "SELECT 'after'").await, "after");
    assert!(
        p.metric("switchyard_errors_total{sqlstate=\"53300\"}")
            .await
            >= 1.0
    );
}

/// A client cancels its request while the request waits for a server connection (the pool's
/// two are held by open transactions). As PostgreSQL answers a statement cancelled while it is
/// blocked, the request fails with 57014 at once (long before `checkout_timeout`), nothing of
/// it runs, ever, and the client goes on. The same for an extended-protocol batch: its error,
/// then the ReadyForQuery of its Sync, the rest skipped. (The cancel used to find nothing
/// running and be dropped, and the INSERT committed once a connection was free.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_while_waiting_for_a_pool_connection_cancels_the_request() {
    create_table("pool_cancel_wait_t", "v text");
    let p = proxy("transaction", "size = 2\ncheckout_timeout = \"60s\"");
    let waiter = Arc::new(connect(&p).await);
    let mut raw = Raw::app(&p).await;
    let holders = [connect(&p).await, connect(&p).await];
    for h in &holders {
        q(h, "BEGIN").await;
        q(h, "SELECT 1").await;
    }
    let waits = format!(
        "switchyard_pool_waits_total{{backend=\"{}\"}}",
        shared_cluster().primary().name()
    );
    let before = p.metric(&waits).await;

    // The simple protocol.
    let w = waiter.clone();
    let insert = tokio::spawn(async move {
        w.simple_query("INSERT INTO pool_cancel_wait_t VALUES ('should-be-cancelled')")
            .await
    });
    // It waits for a connection (counted) before it is cancelled.
    p.wait_metric(&waits, before + 1.0, STEP).await;
    let start = Instant::now();
    bounded(
        "cancel",
        waiter.cancel_token().cancel_query(tokio_postgres::NoTls),
    )
    .await
    .expect("sending the cancel request");
    let e = bounded("the cancelled INSERT", insert)
        .await
        .unwrap()
        .expect_err("the cancelled INSERT ran");
    let took = start.elapsed();
    support::assert_cancelled(&e, "waiting for a pool connection");
    assert!(
        took < Duration::from_secs(10),
        "answered {took:?} after the cancel (checkout_timeout is 60 s)"
    );

    // An extended-protocol batch: the INSERT's error, then the Sync's ReadyForQuery; the
    // SELECT behind it in the batch is skipped, as PostgreSQL skips up to the Sync.
    let mut batch = BytesMut::new();
    m_parse(
        &mut batch,
        "",
        "INSERT INTO pool_cancel_wait_t VALUES ('also-cancelled')",
    );
    m_bind(&mut batch, "", "", &[]);
    m_execute(&mut batch);
    m_parse(&mut batch, "", "SELECT 'skipped'");
    m_bind(&mut batch, "", "", &[]);
    m_execute(&mut batch);
    m_sync(&mut batch);
    raw.send(&batch).await;
    p.wait_metric(&waits, before + 2.0, STEP).await;
    let start = Instant::now();
    raw.cancel(&p).await;
    let msgs = raw.until_ready().await;
    let took = start.elapsed();
    assert_eq!(tags(&msgs), "EZ", "{msgs:?}");
    assert_eq!(error_code(&msgs).as_deref(), Some("57014"));
    assert_eq!(ready_status(&msgs), 'I');
    assert!(
        took < Duration::from_secs(10),
        "answered {took:?} after the cancel (checkout_timeout is 60 s)"
    );

    // The connections come free: nothing cancelled runs, and both clients go on.
    for h in &holders {
        q(h, "COMMIT").await;
    }
    assert_eq!(
        one(&waiter, "SELECT count(*) FROM pool_cancel_wait_t").await,
        "0"
    );
    q(&waiter, "INSERT INTO pool_cancel_wait_t VALUES ('after')").await;
    let msgs = raw
        .simple("SELECT string_agg(v, ',') FROM pool_cancel_wait_t")
        .await;
    assert_eq!(single(&msgs, "the raw client after its cancel"), "after");
    // (Directly on the server too, a while later: nothing was left to run.)
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(su("SELECT count(*) FROM pool_cancel_wait_t"), "1");
    assert_eq!(
        p.metric("switchyard_cancel_requests_total{result=\"waiting\"}")
            .await,
        2.0,
        "both cancels counted as kept for a waiting request"
    );
    assert_eq!(
        p.metric("switchyard_cancel_requests_total{result=\"not_running\"}")
            .await,
        0.0
    );
}

/// idle_timeout closes idle server connections (they vanish from pg_stat_activity); min_size
/// connections are opened proactively and kept although idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_closes_connections_and_min_size_keeps_them() {
    // idle_timeout without min_size (5 s: the three connections are all idle before the
    // first may be closed).
    let p = proxy("transaction", "size = 4\nidle_timeout = \"5s\"");
    let clients = [connect(&p).await, connect(&p).await, connect(&p).await];
    let mut pids = Vec::new();
    for c in &clients {
        q(c, "BEGIN").await;
        pids.push(backend_pid(c).await);
    }
    assert_eq!(pids.iter().collect::<HashSet<_>>().len(), 3, "{pids:?}");
    for c in &clients {
        q(c, "COMMIT").await;
    }
    wait_pool(&p, "3 idle connections", STEP, |i, u| i == 3 && u == 0).await;
    wait_pool(
        &p,
        "idle connections closed after idle_timeout",
        Duration::from_secs(30),
        |i, _| i == 0,
    )
    .await;
    let list = pids
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(",");
    wait_su(
        &format!("SELECT count(*) FROM pg_stat_activity WHERE pid IN ({list})"),
        "0",
        STEP,
    )
    .await;
    // The clients still work (new server connections).
    for c in &clients {
        assert_eq!(one(c, "SELECT 'still here'").await, "still here");
    }
    drop(clients);
    drop(p);

    // min_size: opened without demand, and kept past idle_timeout.
    let p = proxy(
        "transaction",
        "size = 4\nmin_size = 2\nidle_timeout = \"1s\"",
    );
    let c0 = connect(&p).await; // creates the pool
    wait_pool(&p, "min_size connections opened", STEP, |i, _| i >= 2).await;
    let clients = [connect(&p).await, connect(&p).await, connect(&p).await, c0];
    for c in &clients {
        // (A lone BEGIN holds no server connection yet.)
        q(c, "BEGIN").await;
        q(c, "SELECT 1").await;
    }
    wait_pool(&p, "4 in use", STEP, |_, u| u == 4).await;
    for c in &clients {
        q(c, "COMMIT").await;
    }
    wait_pool(
        &p,
        "idle connections above min_size closed",
        STEP,
        |i, u| i == 2 && u == 0,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let s = pool_status(&p).await;
    assert_eq!(s, Some((2, 0)), "min_size connections were not kept");
}

/// A cancel that comes as the client's SET ends (too late for it: the SET succeeds) may land
/// on the proxy's reading back of the client's settings. That read is made again, and the
/// client is not pinned to its server connection for the rest of its session: with a pool of
/// one, every other client would then get 53300 (a reviewer's finding: such cancels pinned
/// a client within 1-7 rounds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_cancel_does_not_pin_a_client_whose_settings_were_being_read_back() {
    let p = proxy("transaction", "size = 1\ncheckout_timeout = \"3s\"");
    let b = connect(&p).await;
    let series = "switchyard_pinned_clients_total{reason=\"unread_settings\"}";
    let (mut cancelled, mut retried) = (0, 0.0);
    for i in 0..300u64 {
        let token = b.cancel_token();
        // The cancel goes out a little after the SET, at a different moment each round.
        let delay = Duration::from_micros((i * 37) % 900);
        let cancel = async move {
            tokio::time::sleep(delay).await;
            let _ = token.cancel_query(tokio_postgres::NoTls).await;
        };
        let set = format!("SET work_mem = '{}MB'", 4 + i % 8);
        let (r, ()) = tokio::join!(b.simple_query(&set), cancel);
        match r {
            Ok(_) => {}
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::QUERY_CANCELED) => {
                cancelled += 1
            }
            Err(e) => panic!("SET failed: {e}"),
        }
        retried = p.metric(series).await;
        if retried > 0.0 {
            break;
        }
    }
    assert_eq!(
        retried, 0.0,
        "a cancel that came too late pinned the client (after {cancelled} cancelled SETs)"
    );
    // The pool's one connection is free for another client.
    let a = connect(&p).await;
    q(&a, "SELECT 1").await;
    // And the client's settings are what it last set.
    let wm = b.simple_query("SHOW work_mem").await.unwrap();
    assert!(
        matches!(&wm[1], tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0).is_some_and(|v| v.ends_with("MB"))),
        "{wm:?}"
    );
}

/// max_lifetime = "0s": each server connection serves one transaction and is closed when
/// released, however quickly (the age check once missed a connection given back within the
/// coarse clock's step).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_max_lifetime_uses_each_server_connection_once() {
    let p = proxy("transaction", "size = 2\nmax_lifetime = \"0s\"");
    let c = connect(&p).await;
    let mut pids = std::collections::HashSet::new();
    for _ in 0..10 {
        assert!(
            pids.insert(backend_pid(&c).await),
            "a server connection served a second transaction: {pids:?}"
        );
    }
}

/// max_lifetime: a server connection older than it is replaced (new backend pid, the old
/// backend gone), but never in the middle of a transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_lifetime_replaces_server_connections() {
    let p = proxy("transaction", "size = 1\nmax_lifetime = \"1s\"");
    let c = connect(&p).await;
    let pid1 = backend_pid(&c).await;
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let pid2 = backend_pid(&c).await;
    assert_ne!(pid1, pid2, "the server connection outlived max_lifetime");
    wait_backend_gone(pid1).await;

    // A transaction longer than max_lifetime keeps its connection to the end.
    q(&c, "BEGIN").await;
    let pid3 = backend_pid(&c).await;
    q(&c, "SELECT pg_sleep(1.5)").await;
    assert_eq!(
        backend_pid(&c).await,
        pid3,
        "connection replaced inside a transaction"
    );
    q(&c, "COMMIT").await;
    let pid4 = backend_pid(&c).await;
    assert_ne!(
        pid3, pid4,
        "expired connection reused after the transaction"
    );
}

/// Pools are per (backend, user, database): exhausting app/app's pool of 1 does not affect
/// another user or another database, and /status lists the pools separately.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_are_per_user_and_database() {
    let p = proxy("transaction", "size = 1\ncheckout_timeout = \"500ms\"");
    let a = connect(&p).await;
    let a2 = connect(&p).await;
    let other = connect_cs(&format!(
        "{} connect_timeout=10",
        p.conn_string(OTHER_USER, OTHER_PASSWORD, APP_DB)
    ))
    .await;
    let other_db = connect_cs(&format!(
        "{} connect_timeout=10",
        p.conn_string(APP_USER, APP_PASSWORD, "postgres")
    ))
    .await;
    q(&a, "BEGIN").await;
    let a_pid = backend_pid(&a).await;
    let err = try_simple(&a2, "SELECT 1")
        .await
        .expect_err("app/app pool should be exhausted");
    assert_eq!(sqlstate(&err), "53300");
    assert_eq!(one(&other, "SELECT current_user::text").await, OTHER_USER);
    assert_ne!(backend_pid(&other).await, a_pid);
    assert_eq!(
        one(&other_db, "SELECT current_database()::text").await,
        "postgres"
    );
    assert_ne!(backend_pid(&other_db).await, a_pid);
    let v = p.status().await;
    let mut keys: Vec<(String, String)> = v["pools"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|pl| pl["backend"] == shared_cluster().primary().name())
        .map(|pl| {
            (
                pl["user"].as_str().unwrap().to_string(),
                pl["database"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            (APP_USER.to_string(), APP_DB.to_string()),
            (APP_USER.to_string(), "postgres".to_string()),
            (OTHER_USER.to_string(), APP_DB.to_string()),
        ],
        "{v:#}"
    );
    q(&a, "COMMIT").await;
    assert_eq!(one(&a2, "SELECT 'a2'").await, "a2");
}

// ---------------------------------------------------------------------------------------------
// Session settings in transaction pooling
// ---------------------------------------------------------------------------------------------

/// One client's SETs follow it onto the shared server connection and are never seen by
/// another client of the same pool (and they take effect: statement_timeout cancels).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_settings_follow_the_client_and_never_leak() {
    let p = proxy("transaction", "size = 1");
    let a = connect(&p).await;
    let b = connect(&p).await;
    let defaults = (
        show(&b, "search_path").await,
        show(&b, "statement_timeout").await,
        show(&b, "application_name").await,
    );
    q(&a, "SET search_path = pool_a_schema, public").await;
    q(&a, "SET statement_timeout = '1234ms'").await;
    q(&a, "SET application_name = 'client_a'").await;
    // Parameters reported to clients.
    q(&a, "SET TimeZone = 'Asia/Tokyo'").await;
    q(&a, "SET DateStyle = 'German'").await;
    let b_tz = show(&b, "TimeZone").await;
    let b_ds = show(&b, "DateStyle").await;
    assert_ne!(b_tz, "Asia/Tokyo");
    for round in 0..5 {
        assert_eq!(
            backend_pid(&a).await,
            backend_pid(&b).await,
            "size 1: one connection"
        );
        assert_eq!(
            (
                show(&b, "search_path").await,
                show(&b, "statement_timeout").await,
                show(&b, "application_name").await
            ),
            defaults,
            "round {round}: b sees a's settings"
        );
        assert_eq!(
            show(&a, "search_path").await,
            "pool_a_schema, public",
            "round {round}"
        );
        assert_eq!(
            show(&a, "statement_timeout").await,
            "1234ms",
            "round {round}"
        );
        assert_eq!(
            one(&a, "SELECT current_setting('application_name')").await,
            "client_a",
            "round {round}"
        );
        assert_eq!(show(&b, "TimeZone").await, b_tz, "round {round}");
        assert_eq!(show(&b, "DateStyle").await, b_ds, "round {round}");
        assert_eq!(show(&a, "TimeZone").await, "Asia/Tokyo", "round {round}");
        assert_eq!(show(&a, "DateStyle").await, "German, DMY", "round {round}");
        // Inside a transaction too.
        q(&b, "BEGIN").await;
        assert_eq!(
            show(&b, "application_name").await,
            defaults.2,
            "round {round}"
        );
        q(&b, "COMMIT").await;
    }
    // The settings are in force, not just displayed.
    let err = try_simple(&a, "SELECT pg_sleep(3)")
        .await
        .expect_err("a's statement_timeout did not apply");
    // 57014 proves statement_timeout applied (how soon is not this test's business).
    assert_eq!(sqlstate(&err), "57014", "{err:?}");
    q(&b, "SELECT pg_sleep(1.5)").await;
    // b's own settings don't reach a either.
    q(&b, "SET application_name = 'client_b'").await;
    assert_eq!(show(&a, "application_name").await, "client_a");
    assert_eq!(show(&b, "application_name").await, "client_b");
    // A new client on the same pool sees defaults.
    let c = connect(&p).await;
    assert_eq!(show(&c, "application_name").await, defaults.2);
    assert_eq!(show(&c, "search_path").await, defaults.0);
}

/// Custom (dotted) settings, as used for row-level security (`SET app.tenant_id = ...`), follow
/// their client onto other server connections and never reach another client of a shared
/// server connection. (Problems are collected so that one does not hide the other.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_settings_follow_the_client_and_never_leak() {
    let tenant = "SELECT coalesce(current_setting('app.tenant_id', true), '<unset>')";
    let unset = |v: &str| v == "<unset>" || v.is_empty();
    let mut problems = Vec::new();

    // Follows: a's server connection is terminated between rounds, so every round runs on
    // another one (the pool's affinity would otherwise give a the same one each time).
    let p2 = proxy("transaction", "size = 1");
    let a = connect(&p2).await;
    let h = connect(&p2).await;
    q(&a, "SET app.tenant_id = '42'").await;
    let mut pids = HashSet::new();
    for round in 0..4 {
        let pid = backend_pid(&a).await;
        pids.insert(pid);
        let seen = one(&a, tenant).await;
        if seen != "42" {
            problems.push(format!("round {round}: a's app.tenant_id is {seen:?} on another server connection, not \"42\""));
        }
        let other = one(&h, tenant).await;
        if !unset(&other) {
            problems.push(format!("round {round}: h sees a's app.tenant_id {other:?}"));
        }
        kill_server(pid).await;
    }
    assert_eq!(
        pids.len(),
        4,
        "a did not change server connection: {pids:?}"
    );
    // A reset custom setting, and one reset without ever being set, exist with an empty value
    // (SHOW answers '' instead of failing with "unrecognized configuration parameter"), on the
    // next server connection too.
    q(&a, "RESET app.tenant_id").await;
    q(&a, "RESET app.never_set").await;
    kill_server(backend_pid(&a).await).await;
    for name in ["app.tenant_id", "app.never_set"] {
        match try_simple(&a, &format!("SHOW {name}")).await {
            Ok(_) => {
                let v = show(&a, name).await;
                if !v.is_empty() {
                    problems.push(format!("after RESET, {name} is {v:?}, not ''"));
                }
            }
            Err(e) => problems.push(format!(
                "after RESET, SHOW {name} on another server connection failed: {e:?}"
            )),
        }
    }
    drop((a, h, p2));

    // Never leaks: one shared server connection.
    let p = proxy("transaction", "size = 1");
    let a = connect(&p).await;
    let b = connect(&p).await;
    assert_eq!(one(&b, tenant).await, "<unset>");
    q(&a, "SET app.tenant_id = '42'").await;
    q(&a, "SELECT set_config('app.user_id', 'alice', false)").await;
    for round in 0..3 {
        assert_eq!(
            backend_pid(&a).await,
            backend_pid(&b).await,
            "size 1: one connection"
        );
        let seen = one(&b, tenant).await;
        if !unset(&seen) {
            problems.push(format!(
                "round {round}: b sees a's app.tenant_id = {seen:?}"
            ));
        }
        let seen = one(
            &b,
            "SELECT coalesce(current_setting('app.user_id', true), '<unset>')",
        )
        .await;
        if !unset(&seen) {
            problems.push(format!("round {round}: b sees a's app.user_id = {seen:?}"));
        }
        q(&b, "SET app.tenant_id = '7'").await;
        let seen = one(&a, tenant).await;
        if seen != "42" {
            problems.push(format!(
                "round {round}: a's app.tenant_id is {seen:?} after b set its own"
            ));
        }
        q(&b, "RESET app.tenant_id").await;
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Settings made in another client encoding (LATIN1, where `é` is the byte 0xe9 and the text
/// is not UTF-8) are tracked like any others: they never reach the next client of the server
/// connection, and they follow their client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_in_another_client_encoding_are_tracked() {
    let p = proxy("transaction", "size = 1");
    let mut a = raw_login(&p, &[("client_encoding", "LATIN1")]).await;
    let b = connect(&p).await;
    let default_path = show(&b, "search_path").await;
    let tag = "SELECT coalesce(current_setting('app.tag', true), '<unset>')";
    bounded(
        "SET",
        a.raw.query_bytes(b"SET search_path = 'caf\xe9', public"),
    )
    .await;
    bounded("SET", a.raw.query_bytes(b"SET app.tag = 'caf\xe9'")).await;
    for round in 0..3 {
        assert_eq!(
            show(&b, "search_path").await,
            default_path,
            "round {round}: the LATIN1 client's search_path reached another client"
        );
        let other = one(&b, tag).await;
        assert!(
            other == "<unset>" || other.is_empty(),
            "round {round}: the LATIN1 client's app.tag reached another client: {other:?}"
        );
        let r = bounded("SHOW", a.raw.query_bytes(b"SHOW search_path")).await;
        assert_eq!(
            r.rows[0][0].as_deref(),
            Some(&b"\"caf\xe9\", public"[..]),
            "round {round}"
        );
        let r = bounded("tag", a.raw.query_bytes(tag.as_bytes())).await;
        assert_eq!(
            r.rows[0][0].as_deref(),
            Some(&b"caf\xe9"[..]),
            "round {round}"
        );
    }
}

/// Like PostgreSQL: a SET in a rolled-back transaction (or rolled back to a savepoint, or in
/// a failed transaction) does not stick, SET LOCAL ends with its transaction, and a SET in a
/// committed transaction sticks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolled_back_set_and_set_local_do_not_persist() {
    let p = proxy("transaction", "size = 1");
    let a = connect(&p).await;
    let b = connect(&p).await;
    let default = show(&b, "work_mem").await;
    assert_ne!(default, "7MB");

    q(&a, "BEGIN").await;
    q(&a, "SET work_mem = '7MB'").await;
    assert_eq!(show(&a, "work_mem").await, "7MB");
    q(&a, "ROLLBACK").await;
    assert_eq!(show(&b, "work_mem").await, default);
    assert_eq!(
        show(&a, "work_mem").await,
        default,
        "SET of a rolled-back transaction stuck"
    );

    q(&a, "BEGIN").await;
    q(&a, "SET LOCAL work_mem = '9MB'").await;
    assert_eq!(show(&a, "work_mem").await, "9MB");
    q(&a, "COMMIT").await;
    assert_eq!(show(&b, "work_mem").await, default);
    assert_eq!(
        show(&a, "work_mem").await,
        default,
        "SET LOCAL outlived its transaction"
    );

    q(&a, "BEGIN").await;
    q(&a, "SET work_mem = '8MB'").await;
    q(&a, "COMMIT").await;
    assert_eq!(show(&b, "work_mem").await, default, "a's SET leaked to b");
    assert_eq!(
        show(&a, "work_mem").await,
        "8MB",
        "SET of a committed transaction lost"
    );

    // A SET in a transaction that then fails.
    q(&a, "BEGIN").await;
    q(&a, "SET work_mem = '5MB'").await;
    assert!(try_simple(&a, "SELECT 1/0").await.is_err());
    q(&a, "ROLLBACK").await;
    assert_eq!(show(&b, "work_mem").await, default);
    assert_eq!(
        show(&a, "work_mem").await,
        "8MB",
        "SET of a failed transaction stuck"
    );

    // Rolled back to a savepoint.
    q(&a, "BEGIN").await;
    q(&a, "SAVEPOINT s").await;
    q(&a, "SET work_mem = '6MB'").await;
    q(&a, "ROLLBACK TO SAVEPOINT s").await;
    q(&a, "COMMIT").await;
    assert_eq!(show(&b, "work_mem").await, default);
    assert_eq!(
        show(&a, "work_mem").await,
        "8MB",
        "SET rolled back to a savepoint stuck"
    );

    // A SET in a multi-statement simple query.
    q(&a, "SET work_mem = '10MB'; SELECT 1").await;
    assert_eq!(show(&b, "work_mem").await, default);
    assert_eq!(show(&a, "work_mem").await, "10MB");
}

/// set_config(..., false), SET ... TO DEFAULT, RESET, RESET ALL and DISCARD ALL are tracked,
/// and startup parameters (application_name and options) are re-applied on every server
/// connection and are what RESET returns to, as in PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_forms_set_config_and_startup_parameters_are_tracked() {
    let p = proxy("transaction", "size = 1");
    let a = connect_cs(&format!(
        "{} application_name=start_a options='-c work_mem=3MB'",
        app_cs(&p)
    ))
    .await;
    let b = connect(&p).await;
    let default_wm = show(&b, "work_mem").await;
    let default_st = show(&b, "statement_timeout").await;
    assert_ne!(default_wm, "3MB");
    let check_b = |what: &'static str| {
        let b = &b;
        let default_wm = default_wm.clone();
        async move {
            assert_eq!(
                show(b, "application_name").await,
                "",
                "{what}: b sees a's application_name"
            );
            assert_eq!(
                show(b, "work_mem").await,
                default_wm,
                "{what}: b sees a's work_mem"
            );
        }
    };

    check_b("startup").await;
    assert_eq!(show(&a, "application_name").await, "start_a");
    assert_eq!(
        show(&a, "work_mem").await,
        "3MB",
        "startup options not applied"
    );
    check_b("startup").await;
    assert_eq!(
        show(&a, "work_mem").await,
        "3MB",
        "startup options not re-applied"
    );

    q(&a, "SELECT set_config('work_mem', '6MB', false)").await;
    check_b("set_config").await;
    assert_eq!(
        show(&a, "work_mem").await,
        "6MB",
        "set_config(..., false) not tracked"
    );

    q(&a, "SELECT set_config('work_mem', '14MB', true)").await;
    check_b("set_config local").await;
    assert_eq!(
        show(&a, "work_mem").await,
        "6MB",
        "set_config(..., true) persisted"
    );

    q(&a, "SET work_mem TO DEFAULT").await;
    check_b("SET TO DEFAULT").await;
    assert_eq!(
        show(&a, "work_mem").await,
        "3MB",
        "SET TO DEFAULT should return to the startup value"
    );

    q(&a, "SET work_mem = '11MB'").await;
    check_b("SET").await;
    assert_eq!(show(&a, "work_mem").await, "11MB");
    q(&a, "RESET work_mem").await;
    check_b("RESET").await;
    assert_eq!(
        show(&a, "work_mem").await,
        "3MB",
        "RESET should return to the startup value"
    );

    q(&a, "SET application_name = 'changed'").await;
    q(&a, "SET statement_timeout = '2s'").await;
    q(&a, "SET work_mem = '12MB'").await;
    check_b("SET x3").await;
    assert_eq!(show(&a, "application_name").await, "changed");
    q(&a, "RESET ALL").await;
    check_b("RESET ALL").await;
    assert_eq!(
        show(&a, "application_name").await,
        "start_a",
        "RESET ALL lost the startup value"
    );
    assert_eq!(
        show(&a, "work_mem").await,
        "3MB",
        "RESET ALL lost the startup value"
    );
    assert_eq!(show(&a, "statement_timeout").await, default_st);

    q(&a, "SET work_mem = '15MB'").await;
    q(&a, "SET search_path = discard_me").await;
    q(&a, "DISCARD ALL").await;
    check_b("DISCARD ALL").await;
    assert_eq!(
        show(&a, "work_mem").await,
        "3MB",
        "DISCARD ALL lost the startup value"
    );
    assert_eq!(show(&a, "search_path").await, "\"$user\", public");
    assert_eq!(show(&a, "application_name").await, "start_a");
}

/// RESET inside a transaction returns to the startup value, exactly as on a direct connection
/// to the server (checked side by side).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_inside_a_transaction_returns_to_the_startup_value() {
    async fn sequence(a: &Client) -> (String, String) {
        q(a, "BEGIN").await;
        q(a, "SET application_name = 'inside'").await;
        q(a, "RESET application_name").await;
        let app_name = show(a, "application_name").await;
        q(a, "SET work_mem = '20MB'").await;
        q(a, "RESET ALL").await;
        let wm = show(a, "work_mem").await;
        q(a, "COMMIT").await;
        (app_name, wm)
    }
    let startup = " application_name=start_tx options='-c work_mem=3MB'";
    let primary = shared_cluster().primary();
    let direct = connect_cs(&format!(
        "{}{startup}",
        primary.conn_string(APP_USER, APP_PASSWORD, APP_DB)
    ))
    .await;
    let expected = sequence(&direct).await;
    assert_eq!(
        expected,
        ("start_tx".to_string(), "3MB".to_string()),
        "PostgreSQL itself"
    );

    let p = proxy("transaction", "size = 1");
    let a = connect_cs(&format!("{}{startup}", app_cs(&p))).await;
    let b = connect(&p).await;
    q(&b, "SELECT 1").await;
    assert_eq!(
        sequence(&a).await,
        expected,
        "RESET inside a transaction did not return to the client's startup values"
    );
}

/// With the read/write split on (the default), reads run on replicas and the client's
/// settings follow it there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_follow_reads_to_replicas() {
    let p = proxy_with(
        "transaction",
        "[routing]\nconsistency = \"eventual\"\n\n[pool]\nsize = 1\n",
    );
    let a = connect(&p).await;
    let b = connect(&p).await;
    q(&a, "SET statement_timeout = '1234ms'").await;
    q(&a, "SET search_path = split_a, public").await;
    let mut on_replica = 0;
    for round in 0..6 {
        let r = q(
            &a,
            // (`pg_is_in_recovery()` itself runs on the primary: whether the session's server
            // is a standby is the primary's answer.)
            "SELECT current_setting('statement_timeout'), current_setting('search_path'), \
             pg_last_wal_replay_lsn() IS NOT NULL",
        )
        .await;
        assert_eq!(r[0][0].as_deref(), Some("1234ms"), "round {round}: {r:?}");
        assert_eq!(
            r[0][1].as_deref(),
            Some("split_a, public"),
            "round {round}: {r:?}"
        );
        if r[0][2].as_deref() == Some("t") {
            on_replica += 1;
        }
        let r = q(
            &b,
            "SELECT current_setting('statement_timeout'), current_setting('search_path')",
        )
        .await;
        assert_eq!(
            r[0][0].as_deref(),
            Some("0"),
            "round {round}: b sees a's settings"
        );
        assert_eq!(
            r[0][1].as_deref(),
            Some("\"$user\", public"),
            "round {round}"
        );
    }
    assert!(
        on_replica > 0,
        "no read ran on a replica: the test proves nothing"
    );
}

// ---------------------------------------------------------------------------------------------
// Prepared statements in transaction pooling
// ---------------------------------------------------------------------------------------------

/// A statement prepared once (extended protocol) keeps working on other server connections,
/// while other clients prepare, close and DISCARD ALL their own statements on the same pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_prepared_statements_follow_the_client() {
    let p = proxy("transaction", "size = 1");
    let a = connect(&p).await;
    let h = connect(&p).await;
    let st = bounded(
        "prepare",
        a.prepare("SELECT $1::int4 * 2, pg_backend_pid()"),
    )
    .await
    .unwrap();
    // Deterministic part: a and h share the one server connection, which is terminated now
    // and then (a's next transaction runs on a new one), and h's DISCARD ALL drops every
    // statement on it.
    let mut pids = HashSet::new();
    for i in 0..10i32 {
        if i % 3 == 2 {
            q(&h, "DISCARD ALL").await;
        }
        let row = bounded("execute", a.query_one(&st, &[&i])).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), i * 2);
        let pid = row.get::<_, i32>(1);
        pids.insert(pid);
        if i % 3 == 0 {
            kill_server(pid).await;
        }
    }
    assert_eq!(
        pids.len(),
        4,
        "the statement did not run on each new server connection: {pids:?}"
    );

    // With churn.
    let ch = churn(&p, 4);
    let st2 = bounded("prepare", a.prepare("SELECT $1::text || '!'"))
        .await
        .unwrap();
    for i in 0..40i32 {
        let row = bounded("execute", a.query_one(&st, &[&i])).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), i * 2);
        let s = format!("v{i}");
        let row = bounded("execute", a.query_one(&st2, &[&s])).await.unwrap();
        assert_eq!(row.get::<_, String>(0), format!("v{i}!"));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(ch.finish().await > 0);

    // DISCARD ALL by the client itself forgets its statements, like PostgreSQL.
    q(&a, "DISCARD ALL").await;
    let err = bounded("execute", a.query_one(&st2, &[&"x"]))
        .await
        .expect_err("a statement survived the client's DISCARD ALL");
    assert_eq!(sqlstate(&err), "26000", "{err:?}");
}

/// JDBC names every statement S_1, S_2, ... per connection: two clients whose S_1 are
/// different statements use them alternately on one shared server connection without
/// clashing; Close forgets only the client's own name; re-Parse of a live name fails with
/// 42P05 as in PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jdbc_style_statement_names_from_different_clients_do_not_clash() {
    let p = proxy("transaction", "size = 1");
    let mut x = Raw::app(&p).await;
    let mut y = Raw::app(&p).await;
    let r = x
        .roundtrip(&parse_sync("S_1", "SELECT 'x:' || $1::text"))
        .await;
    assert_eq!(tags(&r), "1Z", "{:?}", error_code(&r));
    let r = y
        .roundtrip(&parse_sync("S_1", "SELECT $1::int4 * 100"))
        .await;
    assert_eq!(tags(&r), "1Z", "{:?}", error_code(&r));
    for i in 0..6 {
        let r = x
            .roundtrip(&bind_exec("S_1", &[format!("k{i}").as_str()]))
            .await;
        assert_eq!(single(&r, "x S_1"), format!("x:k{i}"));
        let r = y
            .roundtrip(&bind_exec("S_1", &[i.to_string().as_str()]))
            .await;
        assert_eq!(single(&r, "y S_1"), (i * 100).to_string());
        let mut d = BytesMut::new();
        m_describe(&mut d, "S_1");
        m_sync(&mut d);
        let r = x.roundtrip(&d).await;
        assert_eq!(row_types(&r), vec![TEXT_OID], "x's S_1 described as y's");
        let r = y.roundtrip(&d).await;
        assert_eq!(row_types(&r), vec![INT4_OID], "y's S_1 described as x's");
    }
    // One round trip with Parse + Bind + Execute + Sync (JDBC's usual batch).
    let mut b = BytesMut::new();
    m_parse(&mut b, "S_2", "SELECT 'x2:' || $1::text");
    m_bind(&mut b, "", "S_2", &["a"]);
    m_execute(&mut b);
    m_sync(&mut b);
    let r = x.roundtrip(&b).await;
    assert_eq!(single(&r, "x S_2"), "x2:a");
    let mut b = BytesMut::new();
    m_parse(&mut b, "S_2", "SELECT 'y2:' || $1::text");
    m_bind(&mut b, "", "S_2", &["b"]);
    m_execute(&mut b);
    m_sync(&mut b);
    let r = y.roundtrip(&b).await;
    assert_eq!(single(&r, "y S_2"), "y2:b");

    // Parse of a name the client already uses: 42P05, and the old statement still works.
    let r = x.roundtrip(&parse_sync("S_1", "SELECT 'other'")).await;
    assert_eq!(error_code(&r).as_deref(), Some("42P05"), "{}", tags(&r));
    assert_eq!(ready_status(&r), 'I');
    let r = x.roundtrip(&bind_exec("S_1", &["still"])).await;
    assert_eq!(single(&r, "x S_1 after 42P05"), "x:still");

    // A Parse that fails does not create the statement: the name is free afterwards.
    let r = x.roundtrip(&parse_sync("S_9", "SELEC broken")).await;
    assert_eq!(error_code(&r).as_deref(), Some("42601"), "{}", tags(&r));
    let r = x.roundtrip(&parse_sync("S_9", "SELECT 'nine'")).await;
    assert_eq!(tags(&r), "1Z", "{:?}", error_code(&r));
    assert_eq!(
        single(&x.roundtrip(&bind_exec("S_9", &[])).await, "S_9"),
        "nine"
    );

    // Same name, same SQL in both clients: closing it in x does not affect y.
    let same = "SELECT $1::int4 + 7";
    parsed(&mut x, "S_3", same).await;
    parsed(&mut y, "S_3", same).await;
    let mut c = BytesMut::new();
    m_close(&mut c, "S_3");
    m_sync(&mut c);
    let r = x.roundtrip(&c).await;
    assert_eq!(tags(&r), "3Z");
    let r = x.roundtrip(&bind_exec("S_3", &["1"])).await;
    assert_eq!(
        error_code(&r).as_deref(),
        Some("26000"),
        "Bind after Close: {}",
        tags(&r)
    );
    assert_eq!(ready_status(&r), 'I');
    let r = y.roundtrip(&bind_exec("S_3", &["1"])).await;
    assert_eq!(single(&r, "y S_3 after x closed its S_3"), "8");
    // x may reuse the name for something else.
    parsed(&mut x, "S_3", "SELECT 'new' || $1::text").await;
    let r = x.roundtrip(&bind_exec("S_3", &["!"])).await;
    assert_eq!(single(&r, "x new S_3"), "new!");
    let r = y.roundtrip(&bind_exec("S_3", &["2"])).await;
    assert_eq!(single(&r, "y S_3"), "9");
    // Closing a statement that does not exist is not an error (PostgreSQL).
    let mut c = BytesMut::new();
    m_close(&mut c, "never_prepared");
    m_sync(&mut c);
    assert_eq!(tags(&x.roundtrip(&c).await), "3Z");
}

/// Two clients prepare the same SQL text under different search_paths (schema per tenant):
/// each statement reads its client's own table, as with direct connections, even when the
/// tables' column types differ.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_statement_text_under_different_search_paths() {
    su("DROP SCHEMA IF EXISTS pool_sp_a CASCADE; DROP SCHEMA IF EXISTS pool_sp_b CASCADE; \
        DROP SCHEMA IF EXISTS pool_sp_c CASCADE; \
        CREATE SCHEMA pool_sp_a AUTHORIZATION app; CREATE SCHEMA pool_sp_b AUTHORIZATION app; \
        CREATE SCHEMA pool_sp_c AUTHORIZATION app; \
        CREATE TABLE pool_sp_a.pool_sp_t (x int); INSERT INTO pool_sp_a.pool_sp_t VALUES (1); \
        CREATE TABLE pool_sp_c.pool_sp_t (x int); INSERT INTO pool_sp_c.pool_sp_t VALUES (3); \
        CREATE TABLE pool_sp_b.pool_sp_t (x text); INSERT INTO pool_sp_b.pool_sp_t VALUES ('bee'); \
        ALTER TABLE pool_sp_a.pool_sp_t OWNER TO app; ALTER TABLE pool_sp_b.pool_sp_t OWNER TO app; \
        ALTER TABLE pool_sp_c.pool_sp_t OWNER TO app");
    let p = proxy("transaction", "size = 1");
    let sql = "SELECT x FROM pool_sp_t";
    let mut clients = Vec::new();
    for schema in ["pool_sp_a", "pool_sp_c", "pool_sp_b"] {
        let mut c = Raw::app(&p).await;
        assert_eq!(
            error_code(&c.simple(&format!("SET search_path = {schema}")).await),
            None
        );
        clients.push(c);
    }
    for c in clients.iter_mut() {
        let r = c.roundtrip(&parse_sync("S_1", sql)).await;
        assert_eq!(tags(&r), "1Z", "{:?}", error_code(&r));
    }
    // Same column type (int): a and c.
    for round in 0..3 {
        for (i, want) in [(0, "1"), (1, "3")] {
            let r = clients[i].roundtrip(&bind_exec("S_1", &[])).await;
            assert_eq!(single(&r, &format!("round {round} client {i}")), want);
        }
    }
    // Different column type (text): b.
    for round in 0..3 {
        for (i, want) in [(0, "1"), (2, "bee")] {
            let r = clients[i].roundtrip(&bind_exec("S_1", &[])).await;
            assert_eq!(single(&r, &format!("round {round} client {i}")), want);
        }
    }
}

/// DEALLOCATE name, DEALLOCATE ALL and DISCARD ALL pipelined behind requests that fail a
/// block or open one: answered as PostgreSQL answers them (25P02, 25001), and the client's
/// statements stay, as on PostgreSQL. (The proxy decided when it read the command, before the
/// earlier answers came: it answered DEALLOCATE ALL itself in the failed block, and forgot
/// the statements each time.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_pipelined_behind_a_failure_keeps_the_statements() {
    let p = proxy("transaction", "size = 1");
    let mut x = Raw::app(&p).await;
    parsed(&mut x, "di", "SELECT 1").await;
    for command in ["DEALLOCATE ALL", "DEALLOCATE di", "DISCARD ALL"] {
        let mut b = BytesMut::new();
        for sql in ["BEGIN", "SELECT 1/0", command] {
            frontend::query(sql, &mut b).unwrap();
        }
        x.send(&b).await;
        x.until_ready().await;
        assert_eq!(error_code(&x.until_ready().await).as_deref(), Some("22012"));
        let r = x.until_ready().await;
        assert_eq!(
            error_code(&r).as_deref(),
            Some("25P02"),
            "{command}: {}",
            tags(&r)
        );
        assert_eq!(
            r.last().map(|m| m.1.clone()),
            Some(b"E".to_vec()),
            "{command}"
        );
        assert_eq!(tags(&x.simple("ROLLBACK").await), "CZ");
        let r = x.roundtrip(&bind_exec("di", &[])).await;
        assert_eq!(
            single(&r, &format!("di after {command} in a failed block")),
            "1"
        );
    }
    // DISCARD ALL behind an extended-protocol BEGIN: 25001, the statements stay.
    let mut b = BytesMut::new();
    m_parse(&mut b, "", "BEGIN");
    m_bind(&mut b, "", "", &[]);
    m_execute(&mut b);
    m_sync(&mut b);
    frontend::query("DISCARD ALL", &mut b).unwrap();
    x.send(&b).await;
    assert_eq!(error_code(&x.until_ready().await), None);
    let r = x.until_ready().await;
    assert_eq!(error_code(&r).as_deref(), Some("25001"), "{}", tags(&r));
    assert_eq!(tags(&x.simple("ROLLBACK").await), "CZ");
    let r = x.roundtrip(&bind_exec("di", &[])).await;
    assert_eq!(single(&r, "di after a failed DISCARD ALL"), "1");
}

/// DEALLOCATE name / DEALLOCATE ALL of protocol-level statements (as psycopg sends them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_of_protocol_statements() {
    let p = proxy("transaction", "size = 1");
    let mut x = Raw::app(&p).await;
    let mut y = Raw::app(&p).await;
    let mut b = BytesMut::new();
    m_parse(&mut b, "s_a", "SELECT 'a' || $1::text");
    m_parse(&mut b, "s_b", "SELECT 'b' || $1::text");
    m_parse(&mut b, "s_c", "SELECT 'c' || $1::text");
    m_sync(&mut b);
    assert_eq!(tags(&x.roundtrip(&b).await), "111Z");
    parsed(&mut y, "s_a", "SELECT 'ya' || $1::text").await;

    let r = x.simple("DEALLOCATE s_a").await;
    assert_eq!(error_code(&r), None, "DEALLOCATE s_a failed: {}", tags(&r));
    assert_eq!(tags(&r), "CZ");
    assert_eq!(single(&y.simple("SELECT 1").await, "y"), "1");
    let r = x.roundtrip(&bind_exec("s_a", &["1"])).await;
    assert_eq!(
        error_code(&r).as_deref(),
        Some("26000"),
        "s_a survived DEALLOCATE"
    );
    let r = x.roundtrip(&bind_exec("s_b", &["1"])).await;
    assert_eq!(single(&r, "s_b after DEALLOCATE s_a"), "b1");
    let r = y.roundtrip(&bind_exec("s_a", &["1"])).await;
    assert_eq!(single(&r, "y's s_a after x's DEALLOCATE s_a"), "ya1");
    // The name can be used again.
    parsed(&mut x, "s_a", "SELECT 'a2' || $1::text").await;
    assert_eq!(
        single(&x.roundtrip(&bind_exec("s_a", &["!"])).await, "new s_a"),
        "a2!"
    );
    // DEALLOCATE PREPARE form.
    let r = x.simple("DEALLOCATE PREPARE s_c").await;
    assert_eq!(error_code(&r), None, "{}", tags(&r));
    assert_eq!(
        error_code(&x.roundtrip(&bind_exec("s_c", &["1"])).await).as_deref(),
        Some("26000")
    );

    let r = x.simple("DEALLOCATE ALL").await;
    assert_eq!(error_code(&r), None, "DEALLOCATE ALL failed: {}", tags(&r));
    for name in ["s_a", "s_b"] {
        let r = x.roundtrip(&bind_exec(name, &["1"])).await;
        assert_eq!(
            error_code(&r).as_deref(),
            Some("26000"),
            "{name} survived DEALLOCATE ALL"
        );
    }
    let r = y.roundtrip(&bind_exec("s_a", &["2"])).await;
    assert_eq!(single(&r, "y's s_a after x's DEALLOCATE ALL"), "ya2");
    parsed(&mut x, "s_b", "SELECT 'b2' || $1::text").await;
    assert_eq!(
        single(&x.roundtrip(&bind_exec("s_b", &["?"])).await, "new s_b"),
        "b2?"
    );
    // DEALLOCATE of a name that does not exist: 26000 as in PostgreSQL.
    let r = x.simple("DEALLOCATE no_such_statement").await;
    assert_eq!(error_code(&r).as_deref(), Some("26000"), "{}", tags(&r));
    assert_eq!(ready_status(&r), 'I');
    // In a failed transaction block nothing runs, DEALLOCATE (ALL) included.
    x.simple("BEGIN").await;
    x.simple("SELECT 1/0").await;
    for sql in ["DEALLOCATE s_b", "DEALLOCATE ALL"] {
        let r = x.simple(sql).await;
        assert_eq!(
            error_code(&r).as_deref(),
            Some("25P02"),
            "{sql}: {}",
            tags(&r)
        );
        assert_eq!(ready_status(&r), 'E');
    }
    x.simple("ROLLBACK").await;
    let r = x.roundtrip(&bind_exec("s_b", &["!"])).await;
    assert_eq!(single(&r, "s_b after a failed block"), "b2!");
}

/// DEALLOCATE ALL and DISCARD ALL prepared by name (psycopg with `prepare_threshold=0` sends
/// every statement so): preparing one drops nothing; running it drops the client's statements,
/// as in PostgreSQL, and every statement of the server connection it ran on, so another
/// client's statements there are prepared again instead of found missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_all_prepared_by_name_keeps_other_clients_statements_working() {
    // One server connection: both clients use it.
    let p = proxy("transaction", "size = 1");
    for command in ["DEALLOCATE ALL", "DISCARD ALL"] {
        let mut x = Raw::app(&p).await;
        let mut y = Raw::app(&p).await;
        parsed(&mut x, "x_s", "SELECT 'x' || $1::text").await;
        parsed(&mut x, "dx", command).await;
        assert_eq!(
            single(
                &x.roundtrip(&bind_exec("x_s", &["1"])).await,
                "x_s after dx's Parse"
            ),
            "x1",
            "{command}"
        );
        parsed(&mut y, "y_s", "SELECT 'y' || $1::text").await;
        assert_eq!(
            single(&y.roundtrip(&bind_exec("y_s", &["1"])).await, "y_s"),
            "y1"
        );
        let r = x.roundtrip(&bind_exec("dx", &[])).await;
        assert_eq!(error_code(&r), None, "{command}: {}", tags(&r));
        for round in 0..2 {
            let r = y.roundtrip(&bind_exec("y_s", &["2"])).await;
            assert_eq!(
                single(&r, &format!("{command}: y_s after x's, round {round}")),
                "y2"
            );
        }
        for name in ["x_s", "dx"] {
            let r = x.roundtrip(&bind_exec(name, &["1"])).await;
            assert_eq!(
                error_code(&r).as_deref(),
                Some("26000"),
                "{command}: {name} survived it"
            );
        }
    }
}

/// The same for the unnamed statement: parsed, it forgets nothing (the client's statements
/// work on); run, it forgets every statement on the connection it runs on, and the unnamed
/// statement itself stays, as in PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_all_as_the_unnamed_statement_forgets_when_run() {
    let p = proxy("transaction", "size = 1");
    for command in ["DEALLOCATE ALL", "DISCARD ALL"] {
        let mut x = Raw::app(&p).await;
        let mut y = Raw::app(&p).await;
        parsed(&mut x, "x_s", "SELECT 'x' || $1::text").await;
        parsed(&mut x, "", command).await;
        assert_eq!(
            single(
                &x.roundtrip(&bind_exec("x_s", &["1"])).await,
                "x_s after the unnamed Parse"
            ),
            "x1",
            "{command}"
        );
        parsed(&mut y, "y_s", "SELECT 'y' || $1::text").await;
        assert_eq!(
            single(&y.roundtrip(&bind_exec("y_s", &["1"])).await, "y_s"),
            "y1"
        );
        for run in 0..2 {
            let r = x.roundtrip(&bind_exec("", &[])).await;
            assert_eq!(error_code(&r), None, "{command}, run {run}: {}", tags(&r));
        }
        for round in 0..2 {
            let r = y.roundtrip(&bind_exec("y_s", &["2"])).await;
            assert_eq!(
                single(&r, &format!("{command}: y_s after x's, round {round}")),
                "y2"
            );
        }
        let r = x.roundtrip(&bind_exec("x_s", &["1"])).await;
        assert_eq!(
            error_code(&r).as_deref(),
            Some("26000"),
            "{command}: x_s survived it"
        );
    }
}

/// `DEALLOCATE name` prepared under a name of its own, naming one of the client's protocol-level
/// statements: run, it drops that statement (the server knows it by its shared name), and run
/// again, it gets the server's 26000, as on PostgreSQL. Another client's statement of the same
/// text, shared on the same connection, works on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_by_name_prepared_under_a_name_drops_the_clients_statement() {
    let p = proxy("transaction", "size = 1");
    for (i, command) in ["DEALLOCATE x_s", "deallocate prepare \"x_s\""]
        .into_iter()
        .enumerate()
    {
        let mut x = Raw::app(&p).await;
        let mut y = Raw::app(&p).await;
        let text = format!("SELECT 'shared{i}' || $1::text");
        parsed(&mut x, "x_s", &text).await;
        parsed(&mut y, "y_s", &text).await;
        parsed(&mut x, "dn", command).await;
        let r = x.roundtrip(&bind_exec("dn", &[])).await;
        assert_eq!(error_code(&r), None, "{command}: {}", tags(&r));
        let r = x.roundtrip(&bind_exec("x_s", &["1"])).await;
        assert_eq!(
            error_code(&r).as_deref(),
            Some("26000"),
            "{command}: x_s survived it"
        );
        for round in 0..2 {
            let r = y.roundtrip(&bind_exec("y_s", &["2"])).await;
            assert_eq!(
                single(&r, &format!("{command}: y_s, round {round}")),
                format!("shared{i}2")
            );
        }
        let r = x.roundtrip(&bind_exec("dn", &[])).await;
        assert_eq!(
            error_code(&r).as_deref(),
            Some("26000"),
            "{command} run again: {}",
            tags(&r)
        );
        parsed(&mut x, "x_s", "SELECT 'again' || $1::text").await;
        assert_eq!(
            single(&x.roundtrip(&bind_exec("x_s", &["!"])).await, "new x_s"),
            "again!"
        );
    }
}

/// The same for a client pinned to its server connection (it made a temporary table), where
/// DEALLOCATE reaches the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_of_protocol_statements_while_pinned() {
    let p = proxy("transaction", "size = 2");
    let mut x = Raw::app(&p).await;
    let r = x.simple("CREATE TEMP TABLE pool_dealloc_tmp (x int)").await;
    assert_eq!(error_code(&r), None);
    let mut b = BytesMut::new();
    m_parse(&mut b, "s_d", "SELECT 'd' || $1::text");
    m_parse(&mut b, "s_e", "SELECT 'e' || $1::text");
    m_sync(&mut b);
    assert_eq!(tags(&x.roundtrip(&b).await), "11Z");
    assert_eq!(
        single(&x.roundtrip(&bind_exec("s_d", &["1"])).await, "s_d"),
        "d1"
    );

    let r = x.simple("DEALLOCATE s_d").await;
    assert_eq!(
        error_code(&r),
        None,
        "DEALLOCATE of a protocol-level statement failed on a pinned client: {}",
        r.iter()
            .find(|(t, _)| *t == b'E')
            .map(|(_, b)| err_text(b))
            .unwrap_or_default()
    );
    let r = x.roundtrip(&bind_exec("s_d", &["1"])).await;
    assert_eq!(
        error_code(&r).as_deref(),
        Some("26000"),
        "s_d survived DEALLOCATE"
    );
    parsed(&mut x, "s_d", "SELECT 'd2' || $1::text").await;
    assert_eq!(
        single(&x.roundtrip(&bind_exec("s_d", &["!"])).await, "new s_d"),
        "d2!"
    );

    let r = x.simple("DEALLOCATE ALL").await;
    assert_eq!(error_code(&r), None, "{}", tags(&r));
    let r = x.roundtrip(&bind_exec("s_e", &["1"])).await;
    assert_eq!(
        error_code(&r).as_deref(),
        Some("26000"),
        "s_e survived DEALLOCATE ALL"
    );
    // Re-preparing the same SQL under the same name works after DEALLOCATE ALL.
    parsed(&mut x, "s_e", "SELECT 'e' || $1::text").await;
    assert_eq!(
        single(
            &x.roundtrip(&bind_exec("s_e", &["2"])).await,
            "re-prepared s_e"
        ),
        "e2"
    );
    // The temporary table is still there (the client stayed on its connection).
    let r = x.simple("SELECT count(*) FROM pool_dealloc_tmp").await;
    assert_eq!(single(&r, "temp table"), "0");
}

/// `max_prepared_statements` bounds what one server connection keeps prepared: past it the
/// least recently used statement is closed there and prepared again when used, results stay
/// right; a statement whose portal is open in the current transaction is never closed; and
/// the proxy-wide registry counts what clients hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_connections_keep_a_bounded_number_of_prepared_statements() {
    let p = proxy("transaction", "size = 1\nmax_prepared_statements = 2");
    let mut a = connect(&p).await;
    let server_count = "SELECT count(*) FROM pg_prepared_statements WHERE name LIKE '_sy%'";
    let mut sts = Vec::new();
    for k in 0..5i32 {
        let sql = format!("SELECT $1::int4 * {k}, generate_series(1, 3)");
        sts.push(bounded("prepare", a.prepare(&sql)).await.unwrap());
    }
    for round in 0..3i32 {
        for (k, st) in sts.iter().enumerate() {
            let rows = bounded("execute", a.query(st, &[&round])).await.unwrap();
            assert_eq!(rows.len(), 3);
            assert_eq!(rows[0].get::<_, i32>(0), round * k as i32, "round {round}");
        }
        let n: i64 = one(&a, server_count).await.parse().unwrap();
        assert!(
            n <= 2,
            "round {round}: {n} statements prepared on the server connection"
        );
    }
    assert!(
        p.metric("switchyard_prepared_statement_evictions_total")
            .await
            > 0.0
    );
    assert_eq!(p.metric("switchyard_prepared_statements").await, 5.0);

    // A portal open in a transaction keeps its statement, however many others run meanwhile
    // (PostgreSQL 15 keeps a portal whose statement was closed; the protocol does not promise it).
    let tx = bounded("begin", a.transaction()).await.unwrap();
    let portal = bounded("bind", tx.bind(&sts[0], &[&7i32])).await.unwrap();
    let first = bounded("portal", tx.query_portal(&portal, 1))
        .await
        .unwrap();
    assert_eq!(first[0].get::<_, i32>(0), 0);
    for (k, st) in sts.iter().enumerate().skip(1) {
        let rows = bounded("execute", tx.query(st, &[&7i32])).await.unwrap();
        assert_eq!(rows[0].get::<_, i32>(0), 7 * k as i32);
    }
    let rest = bounded("portal", tx.query_portal(&portal, 10))
        .await
        .expect("the open portal's statement was closed under it");
    assert_eq!(rest.len(), 2);
    // The protocol says closing a statement closes its portals: nothing used in the open
    // transaction is closed, so the set exceeds the limit until the transaction ends.
    let in_tx = text_rows(
        bounded("count", tx.simple_query(server_count))
            .await
            .unwrap(),
    );
    assert_eq!(
        in_tx[0][0].as_deref(),
        Some("5"),
        "statements kept during the transaction"
    );
    drop(portal);
    bounded("commit", tx.commit()).await.unwrap();
    // Outside the transaction the limit applies again.
    bounded("execute", a.query(&sts[1], &[&1i32]))
        .await
        .unwrap();
    let n: i64 = one(&a, server_count).await.parse().unwrap();
    assert!(n <= 2, "after the transaction: {n} statements prepared");
}

/// asyncpg style: the unnamed statement is parsed and described in one round trip
/// (Parse + Describe + Sync) and bound and executed in the next, while other clients use the
/// shared server connection (and its unnamed statement) in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unnamed_statement_across_round_trips() {
    let p = proxy("transaction", "size = 1");
    let mut x = Raw::app(&p).await;
    let mut y = Raw::app(&p).await;
    for i in 0..5 {
        let mut b = BytesMut::new();
        m_parse(&mut b, "", "SELECT $1::int4 + 1");
        m_describe(&mut b, "");
        m_sync(&mut b);
        let r = x.roundtrip(&b).await;
        assert_eq!(tags(&r), "1tTZ", "{:?}", error_code(&r));
        assert_eq!(row_types(&r), vec![INT4_OID]);
        // y clobbers the server's unnamed statement, and runs a simple query.
        let mut b = BytesMut::new();
        m_parse(&mut b, "", "SELECT 'y' || $1::text");
        m_bind(&mut b, "", "", &["y"]);
        m_execute(&mut b);
        m_sync(&mut b);
        assert_eq!(single(&y.roundtrip(&b).await, "y unnamed"), "yy");
        assert_eq!(
            single(&y.simple("SELECT 'simple'").await, "y simple"),
            "simple"
        );
        let r = x
            .roundtrip(&bind_exec("", &[(i * 10).to_string().as_str()]))
            .await;
        assert_eq!(single(&r, "x unnamed after y"), (i * 10 + 1).to_string());
        // Executed again without a new Parse.
        let r = x.roundtrip(&bind_exec("", &["41"])).await;
        assert_eq!(single(&r, "x unnamed again"), "42");
    }
    // Parse + Sync, then y, then Describe + Bind + Execute + Sync.
    parsed(&mut x, "", "SELECT $1::text || '?'").await;
    assert_eq!(single(&y.simple("SELECT 2").await, "y"), "2");
    let mut b = BytesMut::new();
    m_describe(&mut b, "");
    m_bind(&mut b, "", "", &["q"]);
    m_execute(&mut b);
    m_sync(&mut b);
    let r = x.roundtrip(&b).await;
    assert_eq!(row_types(&r), vec![TEXT_OID]);
    assert_eq!(single(&r, "describe+bind"), "q?");
    // A simple query destroys the client's unnamed statement, as in PostgreSQL.
    assert_eq!(single(&x.simple("SELECT 3").await, "x simple"), "3");
    let r = x.roundtrip(&bind_exec("", &["1"])).await;
    assert_eq!(
        error_code(&r).as_deref(),
        Some("26000"),
        "unnamed statement survived a simple query: {}",
        tags(&r)
    );
    // Also one the proxy answers itself.
    for local in ["SHOW switchyard.route", "BEGIN"] {
        parsed(&mut x, "", "SELECT $1::text").await;
        assert_eq!(error_code(&x.simple(local).await), None, "{local}");
        let r = x.roundtrip(&bind_exec("", &["1"])).await;
        assert_eq!(
            error_code(&r).as_deref(),
            Some("26000"),
            "unnamed statement survived {local}: {}",
            tags(&r)
        );
    }
}

/// An error the proxy answers itself inside a batch (a named statement the client already
/// has: 42P05) ends the batch as PostgreSQL's own error would: what ran before it in the
/// batch's implicit transaction is rolled back, and an open transaction block fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_the_proxy_answers_fails_the_transaction() {
    create_table("pool_local_error", "v int");
    let p = proxy("transaction", "size = 2");
    let mut a = Raw::app(&p).await;
    parsed(&mut a, "s1", "SELECT 1").await;
    let mut b = BytesMut::new();
    m_parse(&mut b, "", "INSERT INTO pool_local_error VALUES (1)");
    m_bind(&mut b, "", "", &[]);
    m_execute(&mut b);
    m_parse(&mut b, "s1", "SELECT 1");
    m_bind(&mut b, "", "s1", &[]);
    m_execute(&mut b);
    m_sync(&mut b);
    let r = a.roundtrip(&b).await;
    assert_eq!(tags(&r), "12CEZ");
    assert_eq!(error_code(&r).as_deref(), Some("42P05"));
    assert_eq!(ready_status(&r), 'I');
    assert_eq!(
        su("SELECT count(*) FROM pool_local_error"),
        "0",
        "the batch's INSERT committed although the batch failed"
    );

    // Inside a transaction block: the block fails, and its COMMIT rolls back.
    assert_eq!(ready_status(&a.simple("BEGIN").await), 'T');
    assert_eq!(
        ready_status(&a.simple("INSERT INTO pool_local_error VALUES (2)").await),
        'T'
    );
    let r = a.roundtrip(&parse_sync("s1", "SELECT 1")).await;
    assert_eq!(error_code(&r).as_deref(), Some("42P05"));
    assert_eq!(ready_status(&r), 'E');
    let r = a.simple("SELECT 1").await;
    assert_eq!(error_code(&r).as_deref(), Some("25P02"));
    let r = a.simple("COMMIT").await;
    assert!(
        tags(&r).contains('C') && ready_status(&r) == 'I',
        "{}",
        tags(&r)
    );
    assert_eq!(su("SELECT count(*) FROM pool_local_error"), "0");
    // The statement is still the client's, and the session is fine.
    let r = a.roundtrip(&bind_exec("s1", &[])).await;
    assert_eq!(single(&r, "s1 after the failed block"), "1");
}

/// A `DISCARD ALL` that fails (in a transaction block, or in a multi-statement Query, which is
/// one) discards nothing: the client's statements are still there, as on PostgreSQL. And
/// preparing statements works after it, for this client and the next (were the proxy's view
/// of a connection's statements wrong, a shared name is closed before it is prepared).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_prepared_again_after_a_failed_discard_all() {
    let p = proxy("transaction", "size = 1");
    let text = "SELECT 'after a failed discard'";
    let mut a = Raw::app(&p).await;
    parsed(&mut a, "s1", text).await;
    assert_eq!(ready_status(&a.simple("BEGIN").await), 'T');
    let r = a.simple("DISCARD ALL").await;
    assert_eq!(error_code(&r).as_deref(), Some("25001"));
    a.simple("ROLLBACK").await;
    let r = a.simple("SELECT 1; DISCARD ALL").await;
    assert_eq!(error_code(&r).as_deref(), Some("25001"));
    let r = a.roundtrip(&bind_exec("s1", &[])).await;
    assert_eq!(
        single(&r, "s1 after failed DISCARD ALLs"),
        "after a failed discard"
    );
    let r = a.roundtrip(&parse_sync("s1", text)).await;
    assert_eq!(error_code(&r).as_deref(), Some("42P05"), "{}", tags(&r));
    // DEALLOCATE ALL in a block does discard them (not transactional), as on PostgreSQL.
    a.simple("BEGIN").await;
    assert!(error_code(&a.simple("DEALLOCATE ALL").await).is_none());
    a.simple("ROLLBACK").await;
    let r = a.roundtrip(&bind_exec("s1", &[])).await;
    assert_eq!(error_code(&r).as_deref(), Some("26000"), "{}", tags(&r));
    for (who, c) in [
        ("the same client", &mut a),
        ("another client", &mut Raw::app(&p).await),
    ] {
        let mut b = BytesMut::new();
        m_parse(&mut b, "s2", text);
        m_bind(&mut b, "", "s2", &[]);
        m_execute(&mut b);
        m_sync(&mut b);
        let r = c.roundtrip(&b).await;
        assert_eq!(single(&r, who), "after a failed discard", "{who}");
    }
}

/// Statements a client deallocates inside a transaction block are closed on the server at
/// once, as directly (`pg_prepared_statements` no longer lists them), a portal made from one
/// of them goes on working (neither Close nor `DEALLOCATE` ends portals), and a rollback does
/// not bring them back. In a failed block too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_deallocated_in_a_block_are_closed_at_once() {
    let p = proxy("transaction", "size = 2");
    let mut a = Raw::app(&p).await;
    let count = "SELECT count(*) FROM pg_prepared_statements";
    let mut b = BytesMut::new();
    m_parse(&mut b, "s1", "SELECT generate_series(1, 5) AS in_block");
    m_parse(&mut b, "s2", "SELECT 'dropped in a block'");
    m_sync(&mut b);
    assert_eq!(tags(&a.roundtrip(&b).await), "11Z");
    assert_eq!(single(&a.simple(count).await, "count"), "2");
    assert_eq!(ready_status(&a.simple("BEGIN").await), 'T');
    let mut b = BytesMut::new();
    m_bind(&mut b, "p1", "s1", &[]);
    frontend::execute("p1", 2, &mut b).unwrap();
    m_sync(&mut b);
    let r = a.roundtrip(&b).await;
    assert_eq!(tags(&r), "2DDsZ", "{:?}", error_code(&r));
    // Twice, as psycopg does: the second is answered by the proxy too, with the Closes of
    // the first's statements sent ahead of it.
    for _ in 0..2 {
        let r = a.simple("DEALLOCATE ALL").await;
        assert_eq!(error_code(&r), None, "{}", tags(&r));
    }
    assert_eq!(single(&a.simple(count).await, "count in the block"), "0");
    let mut b = BytesMut::new();
    frontend::execute("p1", 0, &mut b).unwrap();
    m_sync(&mut b);
    let r = a.roundtrip(&b).await;
    assert_eq!(error_code(&r), None, "{}", tags(&r));
    assert_eq!(data_rows(&r).len(), 3, "the portal's last three rows");
    parsed(&mut a, "s3", "SELECT 3").await;
    assert_eq!(single(&a.simple(count).await, "count"), "1");
    assert_eq!(ready_status(&a.simple("ROLLBACK").await), 'I');
    assert_eq!(single(&a.simple(count).await, "count after rollback"), "1");
    // In a failed block: Close of one statement, then the rest at the next request.
    assert_eq!(ready_status(&a.simple("BEGIN").await), 'T');
    assert_eq!(ready_status(&a.simple("SELECT 1/0").await), 'E');
    let mut b = BytesMut::new();
    m_close(&mut b, "s3");
    m_sync(&mut b);
    assert_eq!(tags(&a.roundtrip(&b).await), "3Z");
    assert_eq!(ready_status(&a.simple("ROLLBACK").await), 'I');
    assert_eq!(
        single(&a.simple(count).await, "count after the failed block"),
        "0"
    );
}

/// A Parse the proxy answers from a statement already prepared on the connection, skipped by
/// the server after an earlier error in the batch, does not define the client's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skipped_parse_of_a_prepared_statement_defines_nothing() {
    let p = proxy("transaction", "size = 1");
    let mut a = Raw::app(&p).await;
    parsed(&mut a, "s1", "SELECT 7").await;
    let mut b = BytesMut::new();
    m_bind(&mut b, "", "no_such_statement", &[]);
    m_parse(&mut b, "s2", "SELECT 7");
    m_sync(&mut b);
    let r = a.roundtrip(&b).await;
    assert_eq!(error_code(&r).as_deref(), Some("26000"), "{}", tags(&r));
    // s2 was never defined: parsing it now works, as on PostgreSQL.
    let r = a.roundtrip(&parse_sync("s2", "SELECT 7")).await;
    assert_eq!(tags(&r), "1Z", "{:?}", error_code(&r));
    assert_eq!(single(&a.roundtrip(&bind_exec("s2", &[])).await, "s2"), "7");
}

/// `DEALLOCATE name` sent through the extended protocol (psycopg does in pipeline mode) frees
/// the client's protocol-level statement, as on PostgreSQL; an unknown name fails as there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_through_the_extended_protocol() {
    let p = proxy("transaction", "size = 1");
    let mut a = Raw::app(&p).await;
    let dealloc = |name: &str| {
        let mut b = BytesMut::new();
        m_parse(&mut b, "", &format!("DEALLOCATE {name}"));
        m_bind(&mut b, "", "", &[]);
        m_execute(&mut b);
        m_sync(&mut b);
        b
    };
    for round in 0..2 {
        parsed(&mut a, "s1", "SELECT 5").await;
        let r = a.roundtrip(&dealloc("s1")).await;
        assert_eq!(tags(&r), "12CZ", "round {round}: {:?}", error_code(&r));
        let r = a.roundtrip(&bind_exec("s1", &[])).await;
        assert_eq!(error_code(&r).as_deref(), Some("26000"), "round {round}");
    }
    let r = a.roundtrip(&dealloc("s1")).await;
    assert_eq!(error_code(&r).as_deref(), Some("26000"));
    // Another client's statement of the same text is unaffected.
    let mut b = Raw::app(&p).await;
    parsed(&mut b, "t1", "SELECT 5").await;
    parsed(&mut a, "s1", "SELECT 5").await;
    let r = a.roundtrip(&dealloc("s1")).await;
    assert_eq!(
        tags(&r),
        "12CZ",
        "{:?}",
        r.iter().find(|m| m.0 == b'E').map(|m| err_text(&m.1))
    );
    assert_eq!(single(&b.roundtrip(&bind_exec("t1", &[])).await, "t1"), "5");
}

/// A Parse of the unnamed statement that the server skips (an earlier error in the batch)
/// leaves the server's unnamed statement as it was: the previous client's. The proxy must
/// not then let this client bind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skipped_unnamed_parse_never_exposes_another_clients_statement() {
    let p = proxy("transaction", "size = 1");
    let mut a = Raw::app(&p).await;
    let mut b = BytesMut::new();
    m_parse(&mut b, "", "SELECT 'the first client''s statement'");
    m_bind(&mut b, "", "", &[]);
    m_execute(&mut b);
    m_sync(&mut b);
    assert_eq!(
        single(&a.roundtrip(&b).await, "a"),
        "the first client's statement"
    );
    // (The first client stays connected: a connection its last client left is cleaned
    // with a simple query, which also destroys the unnamed statement.)
    let mut c = Raw::app(&p).await;
    let mut b = BytesMut::new();
    m_bind(&mut b, "", "no_such_statement", &[]);
    m_parse(&mut b, "", "SELECT 'mine'");
    m_sync(&mut b);
    let r = c.roundtrip(&b).await;
    assert_eq!(error_code(&r).as_deref(), Some("26000"), "{}", tags(&r));
    let r = c.roundtrip(&bind_exec("", &[])).await;
    assert_eq!(
        error_code(&r).as_deref(),
        Some("26000"),
        "the unnamed statement after a skipped Parse: {:?}",
        data_rows(&r)
    );
    drop(a);
}

/// The unnamed statement survives between round trips while the proxy runs its own queries
/// on the connection in between (here the commit-position read-back after a write, with
/// read/write splitting): they destroy the server's unnamed statement, which the proxy
/// then prepares again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unnamed_statement_survives_the_proxys_own_queries() {
    create_table("pool_unnamed_rt", "v int");
    let p = proxy_with("transaction", "[pool]\nsize = 1\n");
    let mut a = Raw::app(&p).await;
    for round in 0..3 {
        let mut b = BytesMut::new();
        m_parse(&mut b, "", "INSERT INTO pool_unnamed_rt VALUES (1)");
        m_describe(&mut b, "");
        m_sync(&mut b);
        let r = a.roundtrip(&b).await;
        assert_eq!(error_code(&r), None, "round {round}: {}", tags(&r));
        for _ in 0..2 {
            let r = a.roundtrip(&bind_exec("", &[])).await;
            assert_eq!(
                error_code(&r),
                None,
                "round {round}: executing the unnamed statement again: {}",
                tags(&r)
            );
        }
    }
    assert_eq!(su("SELECT count(*) FROM pool_unnamed_rt"), "6");
}

// ---------------------------------------------------------------------------------------------
// State that pins a client to its server connection
// ---------------------------------------------------------------------------------------------

/// Waits until the pool is idle, then holds every server connection of the pool (size 2) in
/// a transaction from fresh clients and runs `check` on each (the connections the pinned
/// client left behind must look new).
async fn check_every_connection(p: &Proxy, check: &str, want: &str) {
    wait_pool(p, "no connection in use", STEP, |_, u| u == 0).await;
    let c1 = connect(p).await;
    let c2 = connect(p).await;
    let mut pids = HashSet::new();
    for c in [&c1, &c2] {
        q(c, "BEGIN").await;
        pids.insert(backend_pid(c).await);
        assert_eq!(
            one(c, check).await,
            want,
            "{check} on a reused server connection"
        );
    }
    assert_eq!(pids.len(), 2);
    for c in [&c1, &c2] {
        q(c, "COMMIT").await;
    }
}

/// A temporary table pins the client: it uses it across many transactions while others churn
/// the pool; after it leaves, its server session ends (or, with `session_reuse`, is reset and
/// reused) and the pin was counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temp_table_pins_the_client_until_it_disconnects() {
    let p = proxy("transaction", "size = 2");
    let a = connect(&p).await;
    // Through the extended protocol (the statement is parsed, described, then executed).
    bounded(
        "create",
        a.execute("CREATE TEMP TABLE pool_pin_tmp (x int)", &[]),
    )
    .await
    .unwrap();
    let a_pid = backend_pid(&a).await;
    let ch = churn(&p, 3);
    for i in 0..15 {
        q(&a, &format!("INSERT INTO pool_pin_tmp VALUES ({i})")).await;
        q(&a, "BEGIN").await;
        q(
            &a,
            &format!("INSERT INTO pool_pin_tmp VALUES ({})", 100 + i),
        )
        .await;
        q(&a, "COMMIT").await;
        assert_eq!(backend_pid(&a).await, a_pid, "pinned client moved");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(one(&a, "SELECT count(*) FROM pool_pin_tmp").await, "30");
    assert!(ch.finish().await > 0);
    assert_eq!(
        p.metric("switchyard_pinned_clients_total{reason=\"temp_table\"}")
            .await,
        1.0
    );
    drop(a);
    // Its server session ends with it (a reset would leave the temporary schema behind).
    wait_backend_gone(a_pid).await;
    wait_su(
        "SELECT count(*) FROM pg_class WHERE relname = 'pool_pin_tmp'",
        "0",
        Duration::from_secs(10),
    )
    .await;
    check_every_connection(
        &p,
        "SELECT to_regclass('pg_temp.pool_pin_tmp') IS NULL",
        "t",
    )
    .await;
    assert!(
        p.metric("switchyard_server_discards_total{reason=\"session_ended\"}")
            .await
            >= 1.0
    );
    drop(p);

    // With session_reuse the connection is reset and handed on instead.
    let p = proxy("transaction", "size = 1\nsession_reuse = true");
    let a = connect(&p).await;
    q(&a, "CREATE TEMP TABLE pool_pin_tmp2 (x int)").await;
    let a_pid = backend_pid(&a).await;
    drop(a);
    wait_clients(&p, 0).await;
    let b = connect(&p).await;
    assert_eq!(
        backend_pid(&b).await,
        a_pid,
        "the reset connection was reused"
    );
    assert_eq!(
        one(&b, "SELECT to_regclass('pg_temp.pool_pin_tmp2') IS NULL").await,
        "t"
    );
}

/// With `session_reuse`, a server connection pinned by a replication origin set up in its
/// session is closed when its client leaves, not reset and handed on: `DISCARD ALL` leaves
/// the origin set up, and the next client would have its commits tagged with it. The origin
/// counts even as the client's second reason to be pinned (a temporary table came first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_reuse_hands_no_replication_origin_on() {
    let origin = "sy_pool_reuse_origin";
    let p = proxy("transaction", "size = 1\nsession_reuse = true");
    let cs = p.conn_string(SUPERUSER, SUPERUSER_PASSWORD, APP_DB);
    let a = connect_cs(&cs).await;
    q(&a, "CREATE TEMP TABLE pool_origin_tmp (x int)").await;
    q(
        &a,
        &format!(
            "SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin \
             WHERE roname = '{origin}'"
        ),
    )
    .await;
    q(
        &a,
        &format!("SELECT pg_replication_origin_create('{origin}')"),
    )
    .await;
    q(
        &a,
        &format!("SELECT pg_replication_origin_session_setup('{origin}')"),
    )
    .await;
    assert_eq!(
        one(&a, "SELECT pg_replication_origin_session_is_setup()::text").await,
        "true"
    );
    let a_pid = backend_pid(&a).await;
    drop(a);
    wait_clients(&p, 0).await;
    let b = connect_cs(&cs).await;
    assert_eq!(
        one(&b, "SELECT pg_replication_origin_session_is_setup()::text").await,
        "false",
        "the next client got the server session with the replication origin set up"
    );
    assert_ne!(backend_pid(&b).await, a_pid);
    wait_backend_gone(a_pid).await;
    q(
        &b,
        &format!("SELECT pg_replication_origin_drop('{origin}')"),
    )
    .await;
}

/// A named dblink connection or a replication origin made inside a `DO` block or one of the
/// database's functions (also one it calls) pins its client as the client's own call of
/// `dblink_connect` or `pg_replication_origin_session_setup` does: the client is counted as
/// pinned, and when it leaves its server connection is closed, in transaction pooling and in
/// session pooling with `session_reuse` alike. `DISCARD ALL` ends neither, and nothing after
/// the transaction looks for them: the next client on that server process would have the
/// dblink connection (logged in as someone else), or its commits tagged with the origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dblink_connection_or_origin_made_in_a_function_or_do_block_pins_its_client() {
    let cluster = shared_cluster();
    let dblink_cs = format!(
        "host=127.0.0.1 port={} user={APP_USER} password={APP_PASSWORD} dbname={APP_DB}",
        cluster.primary().port()
    );
    su(&format!(
        "CREATE EXTENSION IF NOT EXISTS dblink; \
        CREATE OR REPLACE FUNCTION sy_fn_origin(o text) RETURNS void LANGUAGE plpgsql AS \
        $$ BEGIN PERFORM pg_replication_origin_session_setup(o); END $$; \
        CREATE OR REPLACE FUNCTION sy_fn_origin_outer(o text) RETURNS void LANGUAGE sql AS \
        $$ SELECT sy_fn_origin(o) $$; \
        CREATE OR REPLACE FUNCTION sy_fn_dblink() RETURNS text LANGUAGE sql AS \
        $$ SELECT dblink_connect('sy_fn_c', '{dblink_cs}') $$"
    ));
    let origin_probe = "SELECT pg_replication_origin_session_is_setup()::text";
    let dblink_probe = "SELECT (dblink_get_connections() IS NOT NULL)::text";
    let mut problems = Vec::new();
    for (n, (mode, pool, reason, call)) in [
        (
            "transaction",
            "size = 1",
            "server_session",
            "DO $$ BEGIN PERFORM pg_replication_origin_session_setup('ORIGIN'); END $$".to_owned(),
        ),
        (
            "transaction",
            "size = 1",
            "server_session",
            "SELECT sy_fn_origin_outer('ORIGIN')".to_owned(),
        ),
        (
            "session",
            "size = 1\nsession_reuse = true",
            "server_session",
            "SELECT sy_fn_origin('ORIGIN')".to_owned(),
        ),
        (
            "transaction",
            "size = 1",
            "dblink",
            "SELECT sy_fn_dblink()".to_owned(),
        ),
        (
            "session",
            "size = 1\nsession_reuse = true",
            "dblink",
            format!("DO $$ BEGIN PERFORM dblink_connect('sy_do_c', '{dblink_cs}'); END $$"),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let case = format!("{mode}, {call}");
        let p = proxy(mode, pool);
        // A replication origin is a superuser's; the dblink connection is the application's.
        let (cs, probe) = if reason == "dblink" {
            (app_cs(&p), dblink_probe)
        } else {
            (
                p.conn_string(SUPERUSER, SUPERUSER_PASSWORD, APP_DB),
                origin_probe,
            )
        };
        let origin = format!("sy_pool_fn_origin_{n}");
        let drop_origin = format!(
            "SELECT count(pg_replication_origin_drop(roname)) FROM pg_replication_origin \
             WHERE roname = '{origin}'"
        );
        su(&drop_origin);
        su(&format!("SELECT pg_replication_origin_create('{origin}')"));
        let a = connect_cs(&cs).await;
        q(&a, &call.replace("ORIGIN", &origin)).await;
        if one(&a, probe).await != "true" {
            problems.push(format!("{case}: the call made nothing"));
        }
        let series = format!("switchyard_pinned_clients_total{{reason=\"{reason}\"}}");
        if p.metric(&series).await != 1.0 {
            problems.push(format!("{case}: the client was not counted as pinned"));
        }
        let a_pid = backend_pid(&a).await;
        drop(a);
        wait_clients(&p, 0).await;
        let b = connect_cs(&cs).await;
        if one(&b, probe).await != "false" {
            problems.push(format!(
                "{case}: the next client got a's server session state"
            ));
        }
        let b_pid = backend_pid(&b).await;
        drop(b);
        drop(p);
        wait_backend_gone(a_pid).await;
        wait_backend_gone(b_pid).await;
        su(&drop_origin);
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A session advisory lock pins the client: others can't take the lock meanwhile, and the
/// client can unlock it later; a lock still held when it disconnects is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advisory_lock_pins_the_client_until_it_disconnects() {
    const KEY: i64 = 77_001_234;
    let p = proxy("transaction", "size = 2");
    let a = connect(&p).await;
    let b = connect(&p).await;
    q(&a, &format!("SELECT pg_advisory_lock({KEY})")).await;
    let a_pid = backend_pid(&a).await;
    assert_eq!(
        p.metric("switchyard_pinned_clients_total{reason=\"advisory_lock\"}")
            .await,
        1.0
    );
    let ch = churn(&p, 2);
    for i in 0..10 {
        q(&b, "BEGIN").await;
        assert_eq!(
            one(&b, &format!("SELECT pg_try_advisory_xact_lock({KEY})")).await,
            "f",
            "round {i}: another client got the lock a holds"
        );
        q(&b, "COMMIT").await;
        assert_eq!(backend_pid(&a).await, a_pid, "pinned client moved");
    }
    assert!(ch.finish().await > 0);
    assert_eq!(
        one(&a, &format!("SELECT pg_advisory_unlock({KEY})")).await,
        "t"
    );
    q(&b, "BEGIN").await;
    assert_eq!(
        one(&b, &format!("SELECT pg_try_advisory_xact_lock({KEY})")).await,
        "t"
    );
    q(&b, "COMMIT").await;
    // Held when the client leaves: released by the reset.
    q(&a, &format!("SELECT pg_advisory_lock({KEY})")).await;
    drop(a);
    wait_su(
        &format!("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = {KEY}"),
        "0",
        Duration::from_secs(10),
    )
    .await;
    check_every_connection(
        &p,
        &format!("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = {KEY} AND pid = pg_backend_pid()"),
        "0",
    )
    .await;
}

/// LISTEN pins the client: it keeps receiving notifications sent later by other clients,
/// between and after its own queries, while others churn the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_pins_the_client_and_notifications_arrive() {
    let p = proxy("transaction", "size = 2");
    let (a, mut conn) = bounded(
        "connect",
        tokio_postgres::connect(&app_cs(&p), tokio_postgres::NoTls),
    )
    .await
    .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    let _ = tx.send(format!("{}:{}", n.channel(), n.payload()));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    let _ = tx.send(format!("connection error: {e}"));
                    return;
                }
                None => return,
            }
        }
    });
    q(&a, "LISTEN pool_chan").await;
    let a_pid = backend_pid(&a).await;
    let b = connect(&p).await;
    let ch = churn(&p, 2);
    for i in 0..6 {
        q(&b, &format!("NOTIFY pool_chan, 'n{i}'")).await;
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("notification n{i} never arrived"));
        assert_eq!(got.as_deref(), Some(format!("pool_chan:n{i}").as_str()));
        if i % 2 == 0 {
            assert_eq!(backend_pid(&a).await, a_pid, "listening client moved");
        }
        // Sent while a is in a transaction: delivered after it ends.
        if i == 3 {
            q(&a, "BEGIN").await;
            q(&b, "SELECT pg_notify('pool_chan', 'in_txn')").await;
            q(&a, "SELECT 1").await;
            q(&a, "COMMIT").await;
            let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("notification sent during a transaction never arrived");
            assert_eq!(got.as_deref(), Some("pool_chan:in_txn"));
        }
    }
    assert!(ch.finish().await > 0);
    assert_eq!(
        p.metric("switchyard_pinned_clients_total{reason=\"listen\"}")
            .await,
        1.0
    );
    drop(a);
    check_every_connection(&p, "SELECT count(*) FROM pg_listening_channels()", "0").await;
}

/// SQL-level PREPARE pins the client: EXECUTE works across transactions, other clients don't
/// see the statement, DEALLOCATE works, and it is gone after the client leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_prepare_pins_the_client_until_it_disconnects() {
    let p = proxy("transaction", "size = 2");
    let a = connect(&p).await;
    let b = connect(&p).await;
    q(&a, "PREPARE pool_sqlprep(int) AS SELECT $1 * 3").await;
    let a_pid = backend_pid(&a).await;
    let ch = churn(&p, 2);
    for i in 0..10 {
        assert_eq!(
            one(&a, &format!("EXECUTE pool_sqlprep({i})")).await,
            (i * 3).to_string()
        );
        q(&a, "BEGIN").await;
        assert_eq!(one(&a, "EXECUTE pool_sqlprep(1)").await, "3");
        q(&a, "COMMIT").await;
        let err = try_simple(&b, "EXECUTE pool_sqlprep(1)")
            .await
            .expect_err("another client executed a's SQL prepared statement");
        assert_eq!(sqlstate(&err), "26000");
        assert_eq!(backend_pid(&a).await, a_pid, "pinned client moved");
    }
    assert!(ch.finish().await > 0);
    assert_eq!(
        p.metric("switchyard_pinned_clients_total{reason=\"prepare\"}")
            .await,
        1.0
    );
    q(&a, "DEALLOCATE pool_sqlprep").await;
    let err = try_simple(&a, "EXECUTE pool_sqlprep(1)")
        .await
        .expect_err("DEALLOCATE did nothing");
    assert_eq!(sqlstate(&err), "26000");
    q(&a, "PREPARE pool_sqlprep(int) AS SELECT $1 * 4").await;
    assert_eq!(one(&a, "EXECUTE pool_sqlprep(2)").await, "8");
    drop(a);
    check_every_connection(
        &p,
        "SELECT count(*) FROM pg_prepared_statements WHERE name = 'pool_sqlprep'",
        "0",
    )
    .await;
}

/// DECLARE ... WITH HOLD pins the client: FETCH continues across transactions while others
/// churn the pool; the cursor is gone after the client leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_cursor_pins_the_client_until_it_disconnects() {
    let p = proxy("transaction", "size = 2");
    let a = connect(&p).await;
    let b = connect(&p).await;
    q(&a, "BEGIN").await;
    q(
        &a,
        "DECLARE pool_cur CURSOR WITH HOLD FOR SELECT g FROM generate_series(1, 100) g ORDER BY g",
    )
    .await;
    q(&a, "COMMIT").await;
    let a_pid = backend_pid(&a).await;
    let ch = churn(&p, 2);
    for i in 0..8 {
        let rows = q(&a, "FETCH 10 FROM pool_cur").await;
        let got: Vec<i32> = rows
            .iter()
            .map(|r| r[0].as_ref().unwrap().parse().unwrap())
            .collect();
        let want: Vec<i32> = (i * 10 + 1..=i * 10 + 10).collect();
        assert_eq!(got, want, "fetch {i}");
        let err = try_simple(&b, "FETCH 1 FROM pool_cur")
            .await
            .expect_err("another client fetched from a's cursor");
        assert_eq!(sqlstate(&err), "34000");
        assert_eq!(backend_pid(&a).await, a_pid, "pinned client moved");
    }
    assert!(ch.finish().await > 0);
    assert_eq!(
        p.metric("switchyard_pinned_clients_total{reason=\"hold_cursor\"}")
            .await,
        1.0
    );
    drop(a);
    check_every_connection(&p, "SELECT count(*) FROM pg_cursors", "0").await;
}

/// With the read/write split on, a pinned client's reads stay on its own connection on the
/// primary (its temporary table is only there).
/// A read that is true on a replica (not `pg_is_in_recovery()`, which runs on the primary).
const STANDBY_PROBE: &str = "SELECT pg_last_wal_replay_lsn() IS NOT NULL";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_client_reads_stay_on_its_connection_with_read_write_split() {
    let p = proxy_with(
        "transaction",
        "[routing]\nconsistency = \"eventual\"\n\n[pool]\nsize = 2\n",
    );
    let a = connect(&p).await;
    // Before pinning, plain reads go to replicas.
    let mut replica_reads = 0;
    for _ in 0..4 {
        if one(&a, STANDBY_PROBE).await == "t" {
            replica_reads += 1;
        }
    }
    assert!(replica_reads > 0, "reads never went to a replica");
    q(&a, "CREATE TEMP TABLE pool_split_tmp (x int)").await;
    q(&a, "INSERT INTO pool_split_tmp VALUES (1), (2)").await;
    let a_pid = backend_pid(&a).await;
    for i in 0..10 {
        assert_eq!(
            one(&a, "SELECT count(*) FROM pool_split_tmp").await,
            "2",
            "read {i}"
        );
        assert_eq!(one(&a, STANDBY_PROBE).await, "f", "read {i}");
        assert_eq!(backend_pid(&a).await, a_pid, "pinned client moved");
    }
}

// ---------------------------------------------------------------------------------------------
// Dirty server connections
// ---------------------------------------------------------------------------------------------

/// Checks from a raw client that the server connection it gets is clean: not in a
/// transaction, no leftover response.
async fn assert_clean_connection(p: &Proxy, what: &str) {
    let mut c = Raw::app(p).await;
    let r = c.simple("SELECT 'clean', now() = statement_timestamp(), pg_current_xact_id_if_assigned() IS NULL").await;
    assert_eq!(tags(&r), "TDCZ", "{what}: unexpected messages {}", tags(&r));
    assert_eq!(
        data_rows(&r),
        vec![vec![
            Some("clean".into()),
            Some("t".into()),
            Some("t".into())
        ]],
        "{what}: the server connection was still inside a transaction"
    );
    assert_eq!(ready_status(&r), 'I', "{what}");
}

/// A client that vanishes inside a transaction after an INSERT: the next client (already
/// waiting for the only server connection) doesn't see the row and is not inside that
/// transaction; the row is never committed. Once with a FIN, once with a RST.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_client_mid_transaction_is_rolled_back() {
    create_table("pool_vanish_txn", "id int");
    let p = proxy("transaction", "size = 1");
    for (round, rst) in [(1, false), (2, true)] {
        let b = connect(&p).await;
        let mut a = Raw::app(&p).await;
        assert_eq!(ready_status(&a.simple("BEGIN").await), 'T');
        let r = a
            .simple(&format!("INSERT INTO pool_vanish_txn VALUES ({round})"))
            .await;
        assert_eq!(error_code(&r), None);
        assert_eq!(ready_status(&r), 'T');
        // b waits for the connection a holds.
        let waiting = tokio::spawn(async move {
            let r = try_simple(
                &b,
                "SELECT count(*), now() = statement_timestamp(), \
                 pg_current_xact_id_if_assigned() IS NULL FROM pool_vanish_txn",
            )
            .await;
            (b, r)
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        if rst {
            a.reset();
        } else {
            drop(a);
        }
        let (b, r) = bounded("waiting client", waiting).await.unwrap();
        let r = r.unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(
            r,
            vec![vec![Some("0".into()), Some("t".into()), Some("t".into())]],
            "round {round}: the next client saw the vanished client's transaction"
        );
        assert_clean_connection(&p, "after a vanished transaction").await;
        q(&b, "BEGIN").await;
        q(&b, "COMMIT").await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(su("SELECT count(*) FROM pool_vanish_txn"), "0");
}

/// A client that vanishes in the middle of COPY FROM STDIN (once between rows, once in the
/// middle of a CopyData message): nothing is committed and the next client gets a clean
/// connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_client_mid_copy_is_not_handed_on_dirty() {
    create_table("pool_vanish_copy", "id int, v text");
    let p = proxy("transaction", "size = 1");
    for (round, partial) in [(1, false), (2, true)] {
        let b = connect(&p).await;
        let mut a = Raw::app(&p).await;
        let mut out = BytesMut::new();
        frontend::query("COPY pool_vanish_copy (id, v) FROM STDIN", &mut out).unwrap();
        a.send(&out).await;
        let (t, _) = a.recv().await;
        assert_eq!(t as char, 'G', "expected CopyInResponse");
        let mut out = BytesMut::new();
        for i in 0..100 {
            let row = format!("{i}\trow {i}\n");
            out.put_u8(b'd');
            out.put_i32(4 + row.len() as i32);
            out.put_slice(row.as_bytes());
        }
        if partial {
            out.put_u8(b'd');
            out.put_i32(4 + 100);
            out.put_slice(b"999\thalf a ");
        }
        a.send(&out).await;
        let waiting = tokio::spawn(async move {
            let r = try_simple(&b, "SELECT count(*) FROM pool_vanish_copy").await;
            (b, r)
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(a);
        let (b, r) = bounded("waiting client", waiting).await.unwrap();
        let r = r.unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(r, vec![vec![Some("0".into())]], "round {round}");
        assert_clean_connection(&p, "after a vanished COPY").await;
        // COPY still works for others.
        q(&b, "SELECT 1").await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(su("SELECT count(*) FROM pool_vanish_copy"), "0");
}

/// A client that vanishes in the middle of an extended-protocol batch, before its Sync: the
/// server keeps the batch's implicit transaction open (once after a success) or ignores
/// everything until a Sync (once after an error). Nothing of it commits and the next client
/// gets a clean connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_client_mid_batch_is_not_handed_on_dirty() {
    create_table("pool_vanish_batch", "v int");
    let p = proxy("transaction", "size = 1");
    for (round, fail) in [(1, false), (2, true)] {
        let b = connect(&p).await;
        let mut a = Raw::app(&p).await;
        let mut out = BytesMut::new();
        m_parse(&mut out, "", "INSERT INTO pool_vanish_batch VALUES (1)");
        m_bind(&mut out, "", "", &[]);
        m_execute(&mut out);
        if fail {
            m_parse(&mut out, "", "SELECT 1/0");
            m_bind(&mut out, "", "", &[]);
            m_execute(&mut out);
        }
        // Flush: the answers come without a Sync.
        out.put_u8(b'H');
        out.put_i32(4);
        a.send(&out).await;
        let last = if fail { b'E' } else { b'C' };
        while bounded("the batch's answers", a.recv()).await.0 != last {}
        drop(a);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            one(&b, "SELECT count(*) FROM pool_vanish_batch").await,
            "0",
            "round {round}: the next client ran inside the vanished client's batch"
        );
        assert_clean_connection(&p, "after a vanished batch").await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(su("SELECT count(*) FROM pool_vanish_batch"), "0");
}

/// The server connection is lost while the proxy still holds bytes for it (a COPY upload
/// that a partitioned server stopped reading): the client gets an error and a failed block,
/// not a hang, and nothing of the lost upload reaches the next server connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_lost_with_unsent_bytes_leaves_nothing_behind() {
    use support::relay::Mode;
    create_table("pool_lost_copy", "v text");
    let (p, relay) = relayed_proxy("transaction", "size = 2");
    let a = Arc::new(connect(&p).await);
    q(&a, "BEGIN").await;
    q(&a, "SELECT 1").await;
    let upload = {
        let a = a.clone();
        tokio::spawn(async move {
            use tokio_postgres::binary_copy::BinaryCopyInWriter;
            use tokio_postgres::types::Type;
            let sink = a
                .copy_in("COPY pool_lost_copy FROM STDIN (FORMAT binary)")
                .await?;
            let w = BinaryCopyInWriter::new(sink, &[Type::TEXT]);
            let mut w = std::pin::pin!(w);
            let value = "x".repeat(32 * 1024);
            for _ in 0..4096 {
                w.as_mut().write(&[&value]).await?;
            }
            w.finish().await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    relay.set_mode(Mode::Blackhole);
    // The upload fills the sockets, then the proxy's buffer towards the server.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let reset = tokio::task::spawn_blocking(move || {
        relay.reset_all();
        relay.set_mode(Mode::Pass);
        relay
    });
    let relay = bounded("resetting the relay", reset).await.unwrap();
    let err = bounded("the interrupted upload", upload)
        .await
        .unwrap()
        .expect_err("the upload survived a lost server connection");
    assert!(err.code().is_some(), "no SQLSTATE: {err:?}");
    assert_eq!(
        sqlstate(&try_simple(&a, "SELECT 1").await.unwrap_err()),
        "25P02"
    );
    q(&a, "ROLLBACK").await;
    assert_eq!(one(&a, "SELECT 'after'").await, "after");
    assert_eq!(one(&a, "SELECT count(*) FROM pool_lost_copy").await, "0");
    drop(relay);
}

/// A client that vanishes with most of a large result unread: the next client gets exactly
/// its own result, promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_client_with_unread_results_is_not_handed_on_dirty() {
    let p = proxy("transaction", "size = 1");
    let b = connect(&p).await;
    let mut a = Raw::app(&p).await;
    let mut out = BytesMut::new();
    frontend::query(
        "SELECT g, repeat('x', 2000) FROM generate_series(1, 30000) g",
        &mut out,
    )
    .unwrap();
    a.send(&out).await;
    // Read a little of the result.
    let mut got = 0;
    while got < 100 {
        let (t, _) = a.recv().await;
        if t == b'D' {
            got += 1;
        }
    }
    let waiting = tokio::spawn(async move {
        let start = Instant::now();
        let r = try_simple(&b, "SELECT 42").await;
        (b, r, start.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(a);
    let (b, r, took) = bounded("waiting client", waiting).await.unwrap();
    let r = r.expect("the next client's query failed");
    assert_eq!(
        r,
        vec![vec![Some("42".into())]],
        "the next client got someone else's rows"
    );
    // (try_simple bounds the wait: a next client that waits for good fails there.)
    eprintln!("the next client waited {took:?}");
    assert_clean_connection(&p, "after a vanished reader").await;
    assert_eq!(one(&b, "SELECT 'b ok'").await, "b ok");
    wait_su(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT g, repeat(''x'', 2000)%' AND state = 'active'",
        "0",
        Duration::from_secs(10),
    )
    .await;
}

/// Sequence state (`currval`, `lastval`) lives in the server session. With one shared server
/// connection, a client that reads it after its own transaction ended must never get another
/// client's value: it gets "not yet defined in this session" (55000), as a fresh session
/// would; within one transaction nextval and currval still agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn currval_never_returns_another_clients_value() {
    let p = proxy("transaction", "size = 1");
    let a = connect(&p).await;
    let b = connect(&p).await;
    q(
        &a,
        "DROP SEQUENCE IF EXISTS pool_seq; CREATE SEQUENCE pool_seq",
    )
    .await;
    assert_eq!(one(&a, "SELECT nextval('pool_seq')").await, "1");
    // B advances it on the same (only) server connection: that session's currval is now 2.
    assert_eq!(one(&b, "SELECT nextval('pool_seq')").await, "2");
    let e = try_simple(&a, "SELECT currval('pool_seq')")
        .await
        .expect_err("A must not see B's currval");
    assert_eq!(sqlstate(&e), "55000", "{e}");
    // Within one transaction the value is the client's own.
    q(&a, "BEGIN").await;
    assert_eq!(one(&a, "SELECT nextval('pool_seq')").await, "3");
    assert_eq!(one(&a, "SELECT currval('pool_seq')").await, "3");
    assert_eq!(one(&a, "SELECT lastval()").await, "3");
    q(&a, "COMMIT").await;
    // The same in one statement, and with the extended protocol.
    assert_eq!(
        one(&a, "SELECT nextval('pool_seq') + currval('pool_seq') * 0").await,
        "4"
    );
    assert_eq!(one(&b, "SELECT nextval('pool_seq')").await, "5");
    let e = a
        .query_one("SELECT lastval()", &[])
        .await
        .expect_err("A must not see B's lastval (extended protocol)");
    assert_eq!(sqlstate(&e), "55000", "{e}");
    // A's lastval cleared the connection: B's next read of sequence state in a new
    // transaction is "not yet defined" too, not a value left by anyone.
    let e = try_simple(&b, "SELECT currval('pool_seq')")
        .await
        .expect_err("B's state is gone with the connection's");
    assert_eq!(sqlstate(&e), "55000", "{e}");
    // Nobody else in between: A gets its connection back, and its value with it, across
    // transactions, as in a session of its own; its own DISCARD SEQUENCES clears it.
    assert_eq!(one(&a, "SELECT nextval('pool_seq')").await, "6");
    assert_eq!(one(&a, "SELECT currval('pool_seq')").await, "6");
    q(&a, "DISCARD SEQUENCES").await;
    let e = try_simple(&a, "SELECT currval('pool_seq')")
        .await
        .expect_err("DISCARD SEQUENCES forgets it");
    assert_eq!(sqlstate(&e), "55000", "{e}");
    q(&a, "DROP SEQUENCE pool_seq").await;
}

/// A connection whose last client left is handed on without that client's sequence state, so
/// the next client's first `currval` after its own `nextval` in an earlier transaction is its
/// own value (as in a new session), and a `currval` before any `nextval` is 55000.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn currval_works_across_transactions_on_a_connection_another_client_left() {
    let p = proxy("transaction", "size = 1");
    let x = connect(&p).await;
    q(
        &x,
        "DROP SEQUENCE IF EXISTS pool_seq3; CREATE SEQUENCE pool_seq3",
    )
    .await;
    assert_eq!(one(&x, "SELECT nextval('pool_seq3')").await, "1");
    let pid = backend_pid(&x).await;
    drop(x);
    wait_clients(&p, 0).await;
    let y = connect(&p).await;
    assert_eq!(backend_pid(&y).await, pid, "the same server connection");
    let e = try_simple(&y, "SELECT currval('pool_seq3')")
        .await
        .expect_err("Y must not see X's currval");
    assert_eq!(sqlstate(&e), "55000", "{e}");
    drop(y);
    wait_clients(&p, 0).await;
    let z = connect(&p).await;
    assert_eq!(one(&z, "SELECT nextval('pool_seq3')").await, "2");
    assert_eq!(one(&z, "SELECT currval('pool_seq3')").await, "2");
    assert_eq!(one(&z, "SELECT lastval()").await, "2");
    q(&z, "DROP SEQUENCE pool_seq3").await;
}

/// A client that reads sequence state gets its last server connection back when it is idle,
/// so `nextval` in one transaction and `currval` in the next agree, as in a session of its
/// own, even with other clients busy on other connections of the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn currval_follows_the_client_to_its_last_connection() {
    // A warm pool (as in production): other clients take the other idle connections first.
    let p = proxy("transaction", "size = 4\nmin_size = 4");
    let a = connect(&p).await;
    q(
        &a,
        "DROP SEQUENCE IF EXISTS pool_seq2; CREATE SEQUENCE pool_seq2",
    )
    .await;
    wait_pool(
        &p,
        "4 connections open",
        Duration::from_secs(30),
        |idle, in_use| idle + in_use >= 4,
    )
    .await;
    let others: Vec<Client> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(connect(&p).await);
        }
        v
    };
    // Mark A as a reader of sequence state (its first read is cleared: 55000).
    let _ = try_simple(&a, "SELECT currval('pool_seq2')").await;
    for i in 1..=20 {
        let v = one(&a, "SELECT nextval('pool_seq2')").await;
        // Others take and return connections in between (never the one A holds state on
        // while it is idle, unless it is the only one free).
        for o in &others {
            q(o, "SELECT 1").await;
        }
        assert_eq!(one(&a, "SELECT currval('pool_seq2')").await, v, "round {i}");
        assert_eq!(v, i.to_string());
    }
    q(&a, "DROP SEQUENCE pool_seq2").await;
}

/// An unnamed Parse skipped after an error in one pipelined batch does not undo the unnamed
/// statement a later batch parsed: binding it in a later round trip runs that one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skipped_unnamed_parse_leaves_a_later_batchs_statement() {
    let p = proxy("transaction", "size = 2");
    let mut a = Raw::app(&p).await;
    let mut b = BytesMut::new();
    m_parse(&mut b, "", "SELECT 1/0");
    m_bind(&mut b, "", "", &[]);
    m_execute(&mut b);
    m_parse(&mut b, "", "SELECT 2");
    m_sync(&mut b);
    m_parse(&mut b, "", "SELECT 3");
    m_bind(&mut b, "", "", &[]);
    m_execute(&mut b);
    m_sync(&mut b);
    a.send(&b).await;
    let first = a.until_ready().await;
    assert_eq!(
        error_code(&first).as_deref(),
        Some("22012"),
        "{}",
        tags(&first)
    );
    let second = a.until_ready().await;
    assert_eq!(data_rows(&second), vec![vec![Some("3".to_owned())]]);
    let third = a.roundtrip(&bind_exec("", &[])).await;
    assert_eq!(
        data_rows(&third),
        vec![vec![Some("3".to_owned())]],
        "{}",
        tags(&third)
    );
}

/// A later pipelined batch finds the client's statements as the earlier batch left them on
/// the server: a Parse that batch's error skipped defined nothing (the Bind fails as
/// PostgreSQL fails it, naming the client's statement), and a Close it skipped closed nothing
/// (the statement still runs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_batch_sees_what_an_earlier_failed_batch_skipped() {
    let p = proxy("transaction", "size = 2");
    let mut a = Raw::app(&p).await;
    let failing = |b: &mut BytesMut| {
        m_parse(b, "", "SELECT 1/0");
        m_bind(b, "", "", &[]);
        m_execute(b);
    };
    // A Parse skipped.
    let mut b = BytesMut::new();
    failing(&mut b);
    m_parse(&mut b, "skipped_s", "SELECT 2");
    m_sync(&mut b);
    b.extend_from_slice(&bind_exec("skipped_s", &[]));
    a.send(&b).await;
    let first = a.until_ready().await;
    assert_eq!(
        error_code(&first).as_deref(),
        Some("22012"),
        "{}",
        tags(&first)
    );
    let second = a.until_ready().await;
    assert_eq!(
        error_code(&second).as_deref(),
        Some("26000"),
        "{}",
        tags(&second)
    );
    let e = second.iter().find(|(t, _)| *t == b'E').unwrap();
    assert_eq!(
        err_text(&e.1),
        "ERROR 26000: prepared statement \"skipped_s\" does not exist"
    );
    // A Close skipped.
    let ok = a.roundtrip(&parse_sync("kept_s", "SELECT 5")).await;
    assert_eq!(tags(&ok), "1Z");
    let mut b = BytesMut::new();
    failing(&mut b);
    m_close(&mut b, "kept_s");
    m_sync(&mut b);
    b.extend_from_slice(&bind_exec("kept_s", &[]));
    a.send(&b).await;
    let first = a.until_ready().await;
    assert_eq!(
        error_code(&first).as_deref(),
        Some("22012"),
        "{}",
        tags(&first)
    );
    let second = a.until_ready().await;
    assert_eq!(
        data_rows(&second),
        vec![vec![Some("5".to_owned())]],
        "{}",
        tags(&second)
    );
}

/// A request the proxy answers itself, pipelined behind a transaction block's BEGIN still in
/// flight, reports the block's status ("T"), not the one before the BEGIN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_answer_behind_a_begin_in_flight_reports_the_block() {
    let p = proxy("transaction", "size = 2");
    let mut a = Raw::app(&p).await;
    let mut b = BytesMut::new();
    // Two statements: not a lone BEGIN the proxy could defer, so it goes to the server.
    frontend::query("BEGIN; SELECT pg_sleep(0.2)", &mut b).unwrap();
    frontend::query("SET switchyard.route = primary", &mut b).unwrap();
    a.send(&b).await;
    let first = a.until_ready().await;
    assert_eq!(ready_status(&first), 'T', "{}", tags(&first));
    let second = a.until_ready().await;
    assert_eq!(tags(&second), "CZ");
    assert_eq!(ready_status(&second), 'T');
    let r = a.simple("ROLLBACK").await;
    assert_eq!(ready_status(&r), 'I');
}

/// A server connection lost while a request the proxy answers itself waits behind a request
/// on that connection: the client still gets an answer to each (it waited forever before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_answer_behind_a_lost_request_is_still_answered() {
    let (p, relay) = relayed_proxy("transaction", "size = 2");
    let mut a = Raw::app(&p).await;
    let mut b = BytesMut::new();
    frontend::query("SELECT pg_sleep(60) /* lost behind */", &mut b).unwrap();
    frontend::query("SET switchyard.route = primary", &mut b).unwrap();
    a.send(&b).await;
    let pid = running("SELECT pg_sleep(60) /* lost behind */").await;
    let relay = cut(relay).await;
    kill_server(pid).await;
    let first = a.until_ready().await;
    // The client's session goes on (nothing but its server connection ended).
    assert_eq!(
        error_code(&first).as_deref(),
        Some("08006"),
        "{}",
        tags(&first)
    );
    let errors: Vec<_> = first.iter().filter(|(t, _)| *t == b'E').collect();
    assert_eq!(errors.len(), 1, "{}", tags(&first));
    assert_eq!(err_field(&errors[0].1, b'S').as_deref(), Some("ERROR"));
    let text = err_text(&errors[0].1);
    assert!(text.contains("connection was lost"), "{text}");
    assert_eq!(ready_status(&first), 'I');
    let second = a.until_ready().await;
    assert_eq!(ready_status(&second), 'I', "{}", tags(&second));
    let r = a.simple("SELECT 'still here'").await;
    assert_eq!(single(&r, "after the lost request"), "still here");
    drop(relay);
}

/// In transaction pooling, the server ends the session a client is using (an administrator's
/// `pg_terminate_backend`, as drivers' own tests do; a shutdown; an idle-in-transaction
/// timeout): as connected directly, the client gets the server's FATAL, then the end of its
/// connection, with a request in flight or a transaction open. A client whose connection was
/// only idle in the pool is not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_ending_the_session_in_use_ends_the_client_connection() {
    let p = proxy("transaction", "size = 4");
    let fatal_then_close = |got: &[Msg], what: &str| {
        let errors: Vec<_> = got.iter().filter(|(t, _)| *t == b'E').collect();
        assert_eq!(errors.len(), 1, "{what}: {}", tags(got));
        assert_eq!(
            err_field(&errors[0].1, b'S').as_deref(),
            Some("FATAL"),
            "{what}"
        );
        assert_eq!(
            err_field(&errors[0].1, b'C').as_deref(),
            Some("57P01"),
            "{what}"
        );
        assert!(
            !got.iter().any(|(t, _)| *t == b'Z'),
            "{what}: {}",
            tags(got)
        );
    };
    // A request in flight.
    let mut a = Raw::app(&p).await;
    let got = a
        .killed_mid_request("SELECT pg_sleep(60) /* txn ends */")
        .await;
    fatal_then_close(&got, "request in flight");
    // A transaction open, nothing in flight.
    let mut t = Raw::app(&p).await;
    assert_eq!(ready_status(&t.simple("BEGIN").await), 'T');
    let pid: i32 = single(&t.simple("SELECT pg_backend_pid()").await, "in a block")
        .parse()
        .unwrap();
    kill_server(pid).await;
    fatal_then_close(&t.until_closed().await, "transaction open");
    // Idle between transactions: its pooled connection ends, it goes on.
    let mut i = Raw::app(&p).await;
    let pid: i32 = single(&i.simple("SELECT pg_backend_pid()").await, "idle")
        .parse()
        .unwrap();
    kill_server(pid).await;
    let r = i.simple("SELECT 'idle client goes on'").await;
    assert_eq!(single(&r, "idle client"), "idle client goes on");
}

/// `switchyard_errors_total{sqlstate}` of `code`.
async fn errors_of(p: &Proxy, code: &str) -> f64 {
    p.metric(&format!("switchyard_errors_total{{sqlstate=\"{code}\"}}"))
        .await
}

/// The SQLSTATEs of the ErrorResponses in `msgs`.
fn error_codes(msgs: &[Msg]) -> Vec<String> {
    msgs.iter()
        .filter(|(t, _)| *t == b'E')
        .filter_map(|(_, b)| err_field(b, b'C'))
        .collect()
}

/// `errors_total` counts each error the proxy answers a client with once, as the client gets
/// it: a Parse of a statement name in use (42P05: alone, and queued behind the server's
/// answers), a `SET switchyard.*` it refuses (42704), a Bind of one of its own statement names
/// (26000). Not one the server's error before it in the batch made PostgreSQL skip, nor an
/// 08006 the client never got (it got the server's own FATAL: 57P01).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_total_counts_each_error_the_client_gets_once() {
    let p = proxy("transaction", "size = 2");
    let mut a = Raw::app(&p).await;
    let r = a.roundtrip(&parse_sync("S_1", "SELECT 1/$1::int4")).await;
    assert_eq!(error_codes(&r), Vec::<String>::new());

    let before = errors_of(&p, "42P05").await;
    let r = a.roundtrip(&parse_sync("S_1", "SELECT 2")).await;
    assert_eq!(error_codes(&r), ["42P05"]);
    assert_eq!(errors_of(&p, "42P05").await, before + 1.0, "alone");
    // Behind a Parse the server answers.
    let mut b = BytesMut::new();
    m_parse(&mut b, "S_2", "SELECT 'errors_total'");
    m_parse(&mut b, "S_1", "SELECT 3");
    m_sync(&mut b);
    let r = a.roundtrip(&b).await;
    assert_eq!(error_codes(&r), ["42P05"], "{}", tags(&r));
    assert_eq!(errors_of(&p, "42P05").await, before + 2.0, "queued");
    // Behind the server's error (division by zero): the server skips to the Sync, and the
    // client gets only that.
    let mut b = BytesMut::new();
    m_bind(&mut b, "", "S_1", &["0"]);
    m_execute(&mut b);
    m_parse(&mut b, "S_1", "SELECT 4");
    m_sync(&mut b);
    let r = a.roundtrip(&b).await;
    assert_eq!(error_codes(&r), ["22012"], "{}", tags(&r));
    assert_eq!(errors_of(&p, "42P05").await, before + 2.0, "skipped");

    let before = errors_of(&p, "42704").await;
    let r = a.simple("SET switchyard.bogus = 1").await;
    assert_eq!(error_codes(&r), ["42704"]);
    assert_eq!(errors_of(&p, "42704").await, before + 1.0);

    let before = errors_of(&p, "26000").await;
    let r = a.roundtrip(&bind_exec("_sy1", &[])).await;
    assert_eq!(error_codes(&r), ["26000"]);
    assert_eq!(errors_of(&p, "26000").await, before + 1.0);

    let lost = errors_of(&p, "08006").await;
    let got = a
        .killed_mid_request("SELECT pg_sleep(60) /* errors_total */")
        .await;
    assert_eq!(error_codes(&got), ["57P01"]);
    assert_eq!(
        errors_of(&p, "08006").await,
        lost,
        "an 08006 the client never got"
    );
}

/// Server connections lost without a word from the server: `errors_total{sqlstate="08006"}`
/// counts the 08006 errors the clients get, each once: the request after a transaction's
/// loss, the FATAL of a pinned client (not also the ERROR it is not sent), every request of a
/// pipeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_total_counts_each_08006_a_lost_connection_sends() {
    let (p, relay) = relayed_proxy("transaction", "size = 4");
    let up = format!(
        "switchyard_backend_up{{backend=\"{}\"}}",
        shared_cluster().primary().name()
    );
    // A transaction lost between its statements.
    let mut a = Raw::app(&p).await;
    assert_eq!(ready_status(&a.simple("BEGIN").await), 'T');
    let pid: i32 = single(&a.simple("SELECT pg_backend_pid()").await, "in a block")
        .parse()
        .unwrap();
    let before = errors_of(&p, "08006").await;
    let relay = cut(relay).await;
    kill_server(pid).await;
    let r = a.simple("SELECT 1").await;
    assert_eq!(error_codes(&r), ["08006"], "{}", tags(&r));
    assert_eq!(errors_of(&p, "08006").await, before + 1.0, "the lost block");
    assert_eq!(ready_status(&a.simple("ROLLBACK").await), 'I');
    p.wait_metric(&up, 1.0, STEP).await;

    // A pinned client (an advisory lock) loses its connection with one FATAL.
    let mut b = Raw::app(&p).await;
    let r = b.simple("SELECT pg_advisory_lock(4243)").await;
    assert_eq!(error_codes(&r), Vec::<String>::new());
    let mut q = BytesMut::new();
    let sql = "SELECT pg_sleep(60) /* pinned, cut */";
    frontend::query(sql, &mut q).unwrap();
    b.send(&q).await;
    let pid = running(sql).await;
    let before = errors_of(&p, "08006").await;
    let relay = cut(relay).await;
    let got = b.until_closed().await;
    assert_eq!(error_codes(&got), ["08006"], "{}", tags(&got));
    assert_eq!(
        errors_of(&p, "08006").await,
        before + 1.0,
        "the pinned client"
    );
    kill_server(pid).await;
    p.wait_metric(&up, 1.0, STEP).await;

    // Three requests in flight: each gets its error (those sent after the loss run).
    let mut c = Raw::app(&p).await;
    let mut q = BytesMut::new();
    for i in 0..3 {
        frontend::query(&format!("SELECT pg_sleep(2) /* pipelined {i} */"), &mut q).unwrap();
    }
    c.send(&q).await;
    let pid = running("SELECT pg_sleep(2) /* pipelined 0 */").await;
    let before = errors_of(&p, "08006").await;
    let relay = cut(relay).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.extend(c.until_ready().await);
    }
    let sent = error_codes(&got).iter().filter(|c| *c == "08006").count();
    assert!(sent >= 1, "{}", tags(&got));
    assert_eq!(
        errors_of(&p, "08006").await,
        before + sent as f64,
        "the pipeline's errors: {}",
        tags(&got)
    );
    kill_server(pid).await;
    drop(relay);
}

/// A server connection that holds a client's session (session pooling, or a client pinned
/// by an advisory lock) is lost: the client loses its connection, as it would connected
/// directly, instead of going on in a fresh server session without its lock or settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_session_connection_closes_its_client() {
    for (mode, setup) in [
        ("session", "SET application_name = 'lost session'"),
        ("transaction", "SELECT pg_advisory_lock(4242)"),
    ] {
        let p = proxy(mode, "size = 2");
        let mut a = Raw::app(&p).await;
        assert!(error_code(&a.simple(setup).await).is_none(), "{mode}");
        let pid: i32 = single(&a.simple("SELECT pg_backend_pid()").await, mode)
            .parse()
            .unwrap();
        kill_server(pid).await;
        let got = a.until_closed().await;
        // The server's own FATAL (57P01), once, then the end of the connection.
        let fatals: Vec<_> = got
            .iter()
            .filter(|(t, b)| *t == b'E' && err_field(b, b'S').as_deref() == Some("FATAL"))
            .map(|(_, b)| err_field(b, b'C'))
            .collect();
        assert_eq!(
            fatals,
            [Some("57P01".to_string())],
            "{mode}: expected the server's FATAL, then the connection closed; got {}",
            tags(&got)
        );
        assert!(!got.iter().any(|(t, _)| *t == b'D'), "{mode}");
    }
}

/// A message that fills the proxy's buffer towards the server (a 300 kB Bind) followed by more
/// in the same write (Execute, Sync): the rest is relayed once the buffer has room (it waited
/// forever: nothing new came from the client, and the server waits for the Sync).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_behind_one_that_fills_the_server_buffer_are_relayed() {
    let p = proxy("transaction", "size = 2");
    let mut a = Raw::app(&p).await;
    let big = "x".repeat(300_000);
    let mut b = BytesMut::new();
    m_parse(&mut b, "", "SELECT length($1::text)");
    m_bind(&mut b, "", "", &[&big]);
    m_execute(&mut b);
    m_sync(&mut b);
    let r = a.roundtrip(&b).await;
    assert_eq!(single(&r, "300 kB Bind"), "300000");
    // The same in a COPY: 4 MB of rows in one write, then CopyDone.
    create_table("pool_big_copy", "v text");
    let r = a.simple("SELECT 1").await;
    assert_eq!(single(&r, "between"), "1");
    let mut b = BytesMut::new();
    frontend::query("COPY pool_big_copy FROM STDIN", &mut b).unwrap();
    a.send(&b).await;
    assert_eq!(a.recv().await.0, b'G');
    let mut b = BytesMut::new();
    let row = format!("{}\n", "y".repeat(1000));
    for _ in 0..4000 {
        frontend::CopyData::new(row.as_bytes())
            .unwrap()
            .write(&mut b);
    }
    frontend::copy_done(&mut b);
    let r = a.roundtrip(&b).await;
    assert!(tags(&r).starts_with('C'), "{}", tags(&r));
    assert_eq!(su("SELECT count(*) FROM pool_big_copy"), "4000");
}

/// `BEGIN` then `PREPARE TRANSACTION` with nothing in between (psycopg2's tpc_begin and
/// tpc_prepare): PostgreSQL leaves an (empty) prepared transaction, which `COMMIT PREPARED`
/// then ends. The proxy, which defers a lone BEGIN, answered both itself: nothing was prepared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_transaction_is_prepared_on_the_server() {
    let p = proxy("transaction", "size = 2");
    let mut a = Raw::app(&p).await;
    assert_eq!(ready_status(&a.simple("BEGIN").await), 'T');
    let r = a.simple("PREPARE TRANSACTION 'pool_empty_2pc'").await;
    assert_eq!(tags(&r), "CZ", "{:?}", error_code(&r));
    assert_eq!(r[0].1, b"PREPARE TRANSACTION\0");
    assert_eq!(ready_status(&r), 'I');
    assert_eq!(
        su("SELECT count(*) FROM pg_prepared_xacts WHERE gid = 'pool_empty_2pc'"),
        "1"
    );
    let r = a.simple("COMMIT PREPARED 'pool_empty_2pc'").await;
    assert!(error_code(&r).is_none(), "{:?}", error_code(&r));
    assert_eq!(
        su("SELECT count(*) FROM pg_prepared_xacts WHERE gid = 'pool_empty_2pc'"),
        "0"
    );
}

/// A schema change sent through the proxy: a statement parsed after it sees the new schema,
/// as on PostgreSQL, although the same text was prepared before it on the same server
/// connection under the proxy's shared name (that one would fail with 0A000 "cached plan must
/// not change result type", or describe the old parameter types). A statement prepared before
/// the change fails as on PostgreSQL, and preparing it again works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_parsed_after_a_schema_change_see_it() {
    create_table("pool_ddl", "a int");
    su("INSERT INTO pool_ddl VALUES (1)");
    let p = proxy("transaction", "size = 1");
    let text = "SELECT * FROM pool_ddl";
    let mut a = Raw::app(&p).await;
    parsed(&mut a, "s1", text).await;
    assert_eq!(
        single(&a.roundtrip(&bind_exec("s1", &[])).await, "before"),
        "1"
    );
    let r = a
        .simple("ALTER TABLE pool_ddl ADD COLUMN b text DEFAULT 'new'")
        .await;
    assert!(error_code(&r).is_none(), "{:?}", error_code(&r));

    let mut b = Raw::app(&p).await;
    parsed(&mut b, "s1", text).await;
    let r = b.roundtrip(&bind_exec("s1", &[])).await;
    assert_eq!(error_code(&r), None, "{}", tags(&r));
    assert_eq!(
        data_rows(&r),
        vec![vec![Some("1".into()), Some("new".into())]]
    );

    // A's statement predates the change: PostgreSQL refuses it too.
    let r = a.roundtrip(&bind_exec("s1", &[])).await;
    assert_eq!(error_code(&r).as_deref(), Some("0A000"), "{}", tags(&r));
    let mut c = BytesMut::new();
    m_close(&mut c, "s1");
    m_parse(&mut c, "s1", text);
    m_bind(&mut c, "", "s1", &[]);
    m_execute(&mut c);
    m_sync(&mut c);
    let r = a.roundtrip(&c).await;
    assert_eq!(
        data_rows(&r),
        vec![vec![Some("1".into()), Some("new".into())]]
    );

    // Parameter types: inferred at Parse from the column, which a new table changes.
    create_table("pool_ddl_p", "v date");
    let ins = "INSERT INTO pool_ddl_p VALUES ($1)";
    let mut d = BytesMut::new();
    m_parse(&mut d, "ins", ins);
    m_describe(&mut d, "ins");
    m_sync(&mut d);
    let r = a.roundtrip(&d).await;
    assert_eq!(tags(&r), "1tnZ");
    let r = a
        .simple("DROP TABLE pool_ddl_p; CREATE TABLE pool_ddl_p (v int)")
        .await;
    assert!(error_code(&r).is_none(), "{:?}", error_code(&r));
    let r = b.roundtrip(&d).await;
    let (_, t) = r
        .iter()
        .find(|(t, _)| *t == b't')
        .expect("ParameterDescription");
    assert_eq!(
        u32::from_be_bytes(t[2..6].try_into().unwrap()),
        23,
        "int4 now"
    );
}

/// The process id a client is given is the server process's it logged in on, so
/// `pg_backend_pid()` agrees with it as connected directly: in session pooling, and in
/// transaction pooling while the pool has room (that process stays the client's). And
/// notifications carry the notifying client's: a LISTENing (pinned) client's own NOTIFY, and
/// another client's, whichever server connection it ran on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_process_id_a_client_is_given_matches_its_notifications() {
    for mode in ["session", "transaction"] {
        let p = proxy(mode, "size = 2");
        let mut a = Raw::app(&p).await;
        let backend: i32 = single(&a.simple("SELECT pg_backend_pid()").await, mode)
            .parse()
            .unwrap();
        assert_eq!(a.key_pid, backend, "{mode}: the server process's own id");
        a.simple("LISTEN pool_pid_channel").await;
        let r = a.simple("NOTIFY pool_pid_channel, 'hi'").await;
        let (_, n) = r
            .iter()
            .find(|(t, _)| *t == b'A')
            .unwrap_or_else(|| panic!("{mode}: no notification: {}", tags(&r)));
        assert_eq!(
            i32::from_be_bytes(n[..4].try_into().unwrap()),
            a.key_pid,
            "{mode}: the notification of its own NOTIFY"
        );
        // Another client's NOTIFY, in a transaction and on its own.
        let mut b = Raw::app(&p).await;
        for sql in [
            "BEGIN; NOTIFY pool_pid_channel, 'from b'; COMMIT",
            "NOTIFY pool_pid_channel, 'from b'",
        ] {
            assert_eq!(error_code(&b.simple(sql).await), None, "{mode}: {sql}");
            let deadline = Instant::now() + STEP;
            let n = loop {
                let r = a.simple("SELECT 1").await;
                if let Some((_, n)) = r.into_iter().find(|(t, _)| *t == b'A') {
                    break n;
                }
                assert!(Instant::now() < deadline, "{mode}: {sql}: no notification");
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            assert_eq!(
                i32::from_be_bytes(n[..4].try_into().unwrap()),
                b.key_pid,
                "{mode}: {sql}: the notifying client's process id"
            );
            assert_ne!(b.key_pid, a.key_pid);
        }
    }
}

/// A literal in a statement becomes a constant under the settings it is parsed with: two
/// clients in other time zones parsing one text get their own statements on a shared server
/// connection, also when the time zone was set earlier in the same transaction (not yet read
/// back by the proxy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_parsed_under_other_settings_are_not_shared() {
    let p = proxy("transaction", "size = 1");
    let sql = "SELECT extract(epoch FROM '2024-03-01 00:00'::timestamptz)::bigint";
    let (utc, tokyo, new_york) = (1_709_251_200i64, 1_709_218_800i64, 1_709_269_200i64);
    // (Statements are kept: tokio-postgres closes a dropped one, and the proxy with it.)
    async fn epoch(c: &Client, s: &tokio_postgres::Statement) -> i64 {
        let row = bounded("query", c.query_one(s, &[])).await.expect("query");
        row.get::<_, i64>(0)
    }
    let a = connect(&p).await;
    a.batch_execute("SET TimeZone = 'UTC'").await.unwrap();
    let sa = bounded("prepare", a.prepare(sql)).await.unwrap();
    assert_eq!(epoch(&a, &sa).await, utc);
    let b = connect(&p).await;
    b.batch_execute("SET TimeZone = 'Asia/Tokyo'")
        .await
        .unwrap();
    let sb = bounded("prepare", b.prepare(sql)).await.unwrap();
    assert_eq!(epoch(&b, &sb).await, tokyo, "a client in another time zone");
    let c = connect(&p).await;
    c.batch_execute("SET TimeZone = 'UTC'").await.unwrap();
    bounded(
        "begin",
        c.batch_execute("BEGIN; SET TimeZone = 'America/New_York'"),
    )
    .await
    .unwrap();
    let sc = bounded("prepare", c.prepare(sql)).await.unwrap();
    assert_eq!(
        epoch(&c, &sc).await,
        new_york,
        "a time zone set in the transaction"
    );
    c.batch_execute("COMMIT").await.unwrap();
    for _ in 0..2 {
        assert_eq!(epoch(&a, &sa).await, utc, "the first client again");
        assert_eq!(epoch(&b, &sb).await, tokyo, "the second client again");
        assert_eq!(epoch(&c, &sc).await, new_york, "the third client again");
    }
    // A custom setting changed in the transaction changes nothing a Parse depends on: the
    // statement is the first client's, prepared once on the connection.
    let d = connect(&p).await;
    d.batch_execute("SET TimeZone = 'UTC'").await.unwrap();
    bounded("begin", d.batch_execute("BEGIN; SET app.tenant = '1'"))
        .await
        .unwrap();
    let sd = bounded("prepare", d.prepare(sql)).await.unwrap();
    assert_eq!(epoch(&d, &sd).await, utc);
    let on_server = one(
        &d,
        &format!(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement = '{}'",
            sql.replace('\'', "''")
        ),
    )
    .await;
    d.batch_execute("COMMIT").await.unwrap();
    assert_eq!(
        on_server, "3",
        "one statement per time zone on the server connection"
    );
}

/// `UPDATE pg_settings` is a `set_config` (the view's rule): the setting follows its client
/// across transactions and never reaches another client sharing its server connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_of_pg_settings_is_a_session_setting() {
    let p = proxy("transaction", "size = 1");
    let a = connect(&p).await;
    let b = connect(&p).await;
    let default = one(&b, "SHOW work_mem").await;
    assert_ne!(default, "7MB");
    bounded(
        "update pg_settings",
        a.batch_execute("UPDATE pg_settings SET setting = '7MB' WHERE name = 'work_mem'"),
    )
    .await
    .expect("update pg_settings");
    for _ in 0..2 {
        assert_eq!(one(&b, "SHOW work_mem").await, default, "another client");
        assert_eq!(
            one(&a, "SHOW work_mem").await,
            "7MB",
            "the client that set it"
        );
    }
}

/// `pg_terminate_backend(pid)` sent through the proxy, of the pid a client was given, ends that
/// client with the FATAL a direct connection gets (57P01), in transaction pooling too, where
/// the client holds no server process between transactions: the pid in the text (simple
/// Query), as a binary parameter (tokio-postgres) and as a text one. A client of another role
/// stays (PostgreSQL refuses a non-superuser that too); a superuser ends anyone's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_terminate_backend_of_a_client_pid_ends_that_client() {
    let ended = |got: Vec<Msg>, what: &str| {
        assert_eq!(
            error_code(&got).as_deref(),
            Some("57P01"),
            "{what}: the client ends with the FATAL: {}",
            tags(&got)
        );
    };
    for mode in ["transaction", "session"] {
        let p = proxy(mode, "size = 6");
        let control = connect(&p).await;
        let mut victim = Raw::app(&p).await;
        let pid: i32 = single(&victim.simple("SELECT pg_backend_pid()").await, mode)
            .parse()
            .unwrap();
        assert_eq!(pid, victim.key_pid, "{mode}: the pid it was given");
        let sql = format!("SELECT pg_terminate_backend({pid})");
        assert_eq!(one(&control, &sql).await, "t", "{mode}");
        ended(victim.until_closed().await, &format!("{mode}: in the text"));

        // A call that never runs (no row qualifies) ends nobody.
        let mut spared = Raw::app(&p).await;
        let sql = format!(
            "SELECT pg_terminate_backend({}) FROM pg_stat_activity WHERE false",
            spared.key_pid
        );
        let r = bounded("a call under WHERE false", control.simple_query(&sql))
            .await
            .expect("the query runs");
        assert!(
            !r.iter()
                .any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_))),
            "{mode}: no row"
        );
        assert_eq!(
            single(&spared.simple("SELECT 1").await, mode),
            "1",
            "{mode}: a call that did not run"
        );

        let mut victim = Raw::app(&p).await;
        let row = bounded(
            "terminate by parameter",
            control.query_one("SELECT pg_terminate_backend($1)", &[&victim.key_pid]),
        )
        .await
        .expect("pg_terminate_backend($1)");
        assert!(row.get::<_, bool>(0), "{mode}: binary parameter");
        ended(
            victim.until_closed().await,
            &format!("{mode}: binary parameter"),
        );

        let mut victim = Raw::app(&p).await;
        let mut killer = Raw::app(&p).await;
        let mut b = BytesMut::new();
        m_parse(&mut b, "", "SELECT pg_terminate_backend($1::int4)");
        m_bind(&mut b, "", "", &[&victim.key_pid.to_string()]);
        m_execute(&mut b);
        m_sync(&mut b);
        let r = killer.roundtrip(&b).await;
        assert_eq!(error_code(&r), None, "{mode}: {}", tags(&r));
        ended(
            victim.until_closed().await,
            &format!("{mode}: text parameter"),
        );

        // Another role's client: refused by the server, and the proxy leaves it alone.
        let other_cs = p.conn_string(OTHER_USER, OTHER_PASSWORD, APP_DB);
        let mut other = Raw::connect(&p, OTHER_USER, OTHER_PASSWORD, APP_DB).await;
        let r = killer
            .simple(&format!("SELECT pg_terminate_backend({})", other.key_pid))
            .await;
        assert_eq!(
            error_code(&r).as_deref(),
            Some("42501"),
            "{mode}: {}",
            tags(&r)
        );
        assert_eq!(
            single(&other.simple("SELECT 1").await, mode),
            "1",
            "{mode}: {other_cs}"
        );
        // A superuser's.
        let admin = connect_cs(&p.conn_string(SUPERUSER, SUPERUSER_PASSWORD, APP_DB)).await;
        let sql = format!("SELECT pg_terminate_backend({})", other.key_pid);
        assert_eq!(one(&admin, &sql).await, "t", "{mode}: superuser");
        ended(
            other.until_closed().await,
            &format!("{mode}: by a superuser"),
        );
        // The killer, the control and the superuser go on.
        assert_eq!(
            single(&killer.simple("SELECT 2").await, mode),
            "2",
            "{mode}"
        );
        assert_eq!(one(&control, "SELECT 3").await, "3", "{mode}");
        assert_eq!(one(&admin, "SELECT 4").await, "4", "{mode}");
    }
}

/// SQL `EXECUTE` of a statement the client prepared with a Parse message, as PostgreSQL allows
/// (asyncpg's tests do it): in a simple Query, in an unnamed and in a named Parse, and again
/// after the server connection was replaced and after the statement was evicted there (the
/// proxy prepares it before what executes it); in both pool modes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_execute_of_a_protocol_level_statement() {
    for mode in ["transaction", "session"] {
        let p = proxy(mode, "size = 2\nmax_prepared_statements = 2");
        let mut a = Raw::app(&p).await;
        let mut b = BytesMut::new();
        m_parse(&mut b, "FooBar", "SELECT $1::int + 1");
        frontend::sync(&mut b);
        assert_eq!(tags(&a.roundtrip(&b).await), "1Z", "{mode}");
        let simple = |r: Vec<Msg>, what: &str| -> String {
            assert_eq!(error_code(&r), None, "{mode}: {what}: {}", tags(&r));
            single(&r, what)
        };
        // Quoted: its name as written; unquoted names fold to lower case, as on PostgreSQL.
        assert_eq!(
            simple(a.simple("EXECUTE \"FooBar\"(41)").await, "simple"),
            "42"
        );
        let r = a.simple("EXECUTE FooBar(41)").await;
        assert_eq!(
            error_code(&r).as_deref(),
            Some("26000"),
            "{mode}: folded name"
        );
        // Through Parse messages: unnamed, and named (then used later).
        let exec = |out: &mut BytesMut, name: &str, arg: &str| {
            m_parse(out, name, &format!("EXECUTE \"FooBar\"({arg})"));
            m_bind(out, "", name, &[]);
            m_execute(out);
            frontend::sync(out);
        };
        let mut b = BytesMut::new();
        exec(&mut b, "", "1");
        exec(&mut b, "via_exec", "2");
        let r = a.roundtrip(&b).await;
        assert_eq!(error_code(&r), None, "{mode}: {}", tags(&r));
        let r2 = a.until_ready().await;
        assert_eq!(error_code(&r2), None, "{mode}: {}", tags(&r2));
        assert_eq!(single(&r, "unnamed"), "2", "{mode}");
        assert_eq!(single(&r2, "named"), "3", "{mode}");
        if mode == "session" {
            continue;
        }
        // Other statements push FooBar out of the connection's two slots.
        for i in 0..3 {
            let mut b = BytesMut::new();
            m_parse(&mut b, &format!("other{i}"), &format!("SELECT {i}"));
            m_bind(&mut b, "", &format!("other{i}"), &[]);
            m_execute(&mut b);
            frontend::sync(&mut b);
            assert_eq!(error_code(&a.roundtrip(&b).await), None, "{mode}");
        }
        let use_named = |out: &mut BytesMut| {
            m_bind(out, "", "via_exec", &[]);
            m_execute(out);
            frontend::sync(out);
        };
        let mut b = BytesMut::new();
        use_named(&mut b);
        assert_eq!(single(&a.roundtrip(&b).await, "after eviction"), "3");
        // The unnamed statement kept, then its server connection replaced. (A simple query
        // destroys the unnamed statement: the pid is asked for first.)
        let pid: i32 = simple(a.simple("SELECT pg_backend_pid()").await, "pid")
            .parse()
            .unwrap();
        let mut b = BytesMut::new();
        m_parse(&mut b, "", "EXECUTE \"FooBar\"(9)");
        frontend::sync(&mut b);
        assert_eq!(tags(&a.roundtrip(&b).await), "1Z", "{mode}");
        kill_server(pid).await;
        let mut b = BytesMut::new();
        m_bind(&mut b, "", "", &[]);
        m_execute(&mut b);
        frontend::sync(&mut b);
        let r = a.roundtrip(&b).await;
        assert_eq!(single(&r, "unnamed on a new connection"), "10", "{mode}");
        let mut b = BytesMut::new();
        use_named(&mut b);
        assert_eq!(single(&a.roundtrip(&b).await, "named, new connection"), "3");
        assert_eq!(
            simple(a.simple("EXECUTE \"FooBar\"(0)").await, "simple"),
            "1"
        );
    }
}

/// A client that writes and leaves as soon as it has its answer, while the proxy still reads
/// the commit's position back (for read-your-writes), leaves its server connection to the pool:
/// it is not closed for being busy with the proxy's own query (every connect-write-leave
/// client cost a server connection, and a notification sent that way lost its sender's pid).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_writes_and_leaves_at_once_leaves_its_connection_pooled() {
    create_table("pool_write_leave", "v int");
    let p = proxy_with("transaction", "[pool]\nsize = 2\n");
    for _ in 0..10 {
        let mut a = Raw::app(&p).await;
        let r = a.simple("INSERT INTO pool_write_leave VALUES (1)").await;
        assert_eq!(error_code(&r), None, "{}", tags(&r));
        drop(a);
    }
    let mut b = Raw::app(&p).await;
    // (On the primary: another session's writes need not be on a replica yet.)
    let r = b
        .simple("/* switchyard:primary */ SELECT count(*) FROM pool_write_leave")
        .await;
    assert_eq!(single(&r, "count"), "10");
    let lost = "switchyard_server_discards_total{reason=\"client_left_mid_request\"}";
    assert_eq!(p.metric(lost).await, 0.0, "connections closed");
    let opened = p
        .metric("switchyard_server_connects_total{backend=\"pg0\"}")
        .await;
    assert!(
        opened <= 2.0,
        "{opened} server connections opened for pool size 2"
    );
}

/// `DROP DATABASE` of a database the proxy keeps idle connections to: they are closed first,
/// so it succeeds as it would connected directly (PostgreSQL refuses while others are
/// connected: test suites that create and drop their database through the proxy failed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_the_pool_holds_connections_to_can_be_dropped() {
    su("DROP DATABASE IF EXISTS pool_dropme");
    su(&format!("CREATE DATABASE pool_dropme OWNER {APP_USER}"));
    let p = proxy_with("transaction", "[pool]\nsize = 2\n");
    let mut a = Raw::connect(&p, APP_USER, APP_PASSWORD, "pool_dropme").await;
    let mut b = Raw::app(&p).await;
    // (On the primary: the replicas may not have replayed the CREATE DATABASE yet.)
    let r = a.simple("/* switchyard:primary */ SELECT 1").await;
    assert_eq!(single(&r, "in pool_dropme"), "1");
    drop(a);
    wait_clients(&p, 1).await;
    // One more that writes and leaves at once: its connection may still be busy with the
    // proxy's reading the commit position back when the DROP arrives (closed when done).
    let mut w = Raw::connect(&p, APP_USER, APP_PASSWORD, "pool_dropme").await;
    let r = w.simple("CREATE TABLE dropme_t (v int)").await;
    assert_eq!(error_code(&r), None, "{}", tags(&r));
    drop(w);
    let r = b.simple("DROP DATABASE pool_dropme").await;
    assert_eq!(error_code(&r), None, "{}", tags(&r));
    assert_eq!(
        su("SELECT count(*) FROM pg_database WHERE datname = 'pool_dropme'"),
        "0"
    );
}

/// The server process of a session-mode client ends during its request: the client gets the
/// server's FATAL and then the end of the connection, nothing else (an ERROR and a
/// ReadyForQuery after it made libpq and asyncpg believe the connection still usable).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_server_ends_mid_request_gets_only_the_fatal() {
    let p = proxy("session", "size = 2");
    let mut a = Raw::app(&p).await;
    let got = a
        .killed_mid_request("SELECT pg_sleep(60) /* session ends */")
        .await;
    // RowDescription (sent before the sleep, as PostgreSQL does), the FATAL, the close.
    assert_eq!(
        tags(&got),
        "TE",
        "expected the FATAL alone after the row description"
    );
    assert_eq!(err_field(&got[1].1, b'S').as_deref(), Some("FATAL"));
    assert_eq!(err_field(&got[1].1, b'C').as_deref(), Some("57P01"));
}

/// A statement the client described keeps its row shape. After a schema change that alters
/// it, its Bind on another server connection (where the proxy must prepare it anew) fails as
/// on PostgreSQL ("cached plan must not change result type", 0A000) instead of returning rows
/// of the new shape for the client to decode with the old one; after a schema change that
/// does not alter it, it runs there as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_described_statement_keeps_its_row_shape_on_another_connection() {
    let p = proxy("transaction", "size = 2");
    let a = connect(&p).await;
    let ddl = connect(&p).await;
    q(&ddl, "DROP TABLE IF EXISTS shape_t").await;
    q(&ddl, "CREATE TABLE shape_t (a int, b int)").await;
    q(&ddl, "INSERT INTO shape_t VALUES (1, 2)").await;
    let st = bounded("prepare", a.prepare("SELECT * FROM shape_t"))
        .await
        .unwrap();
    let rows = bounded("query", a.query(&st, &[])).await.unwrap();
    assert_eq!(rows[0].get::<_, i32>(1), 2);

    // A schema change that keeps the shape: the statement runs on a new connection.
    q(&ddl, "CREATE INDEX ON shape_t (a)").await;
    let before = backend_pid(&a).await;
    kill_server(before).await;
    let rows = bounded("query after CREATE INDEX", a.query(&st, &[]))
        .await
        .unwrap_or_else(|e| panic!("after a schema change that keeps the shape: {e:?}"));
    assert_eq!(rows[0].get::<_, i32>(1), 2);
    assert_ne!(
        backend_pid(&a).await,
        before,
        "a kept its server connection"
    );

    // One that changes it.
    q(&ddl, "ALTER TABLE shape_t ALTER COLUMN b TYPE text").await;
    kill_server(backend_pid(&a).await).await;
    match bounded("query after ALTER", a.query(&st, &[])).await {
        Ok(rows) => panic!(
            "the statement ran with a new row shape ({:?}) on another connection",
            rows[0].columns()
        ),
        Err(e) => {
            assert_eq!(sqlstate(&e), "0A000", "{e:?}");
            assert_eq!(
                e.as_db_error().map(|d| d.message()),
                Some("cached plan must not change result type"),
                "{e:?}"
            );
            // Drivers recognise it by its routine (asyncpg then prepares it again).
            assert_eq!(
                e.as_db_error().and_then(|d| d.routine()),
                Some("RevalidateCachedQuery"),
                "{e:?}"
            );
        }
    }
    // The client's next request works (the failed batch ended), and the statement prepared
    // again has the new shape.
    assert_eq!(one(&a, "SELECT 1").await, "1");
    let st = bounded("prepare again", a.prepare("SELECT * FROM shape_t"))
        .await
        .unwrap();
    let rows = bounded("query", a.query(&st, &[])).await.unwrap();
    assert_eq!(rows[0].get::<_, String>(1), "2");

    // A Describe of such a statement fails the same way (PostgreSQL revalidates it to
    // describe it).
    let mut r = raw_login(&p, &[]).await;
    let mut b = BytesMut::new();
    frontend::parse("s1", "SELECT * FROM shape_t", [], &mut b).unwrap();
    frontend::describe(b'S', "s1", &mut b).unwrap();
    frontend::sync(&mut b);
    r.raw.send(&b).await.unwrap();
    let (tags, error) = bounded("Parse/Describe", until_ready(&mut r.raw)).await;
    assert_eq!(tags, ['1', 't', 'T', 'Z'], "{error:?}");
    let pid: i32 = r
        .raw
        .query_ok("SELECT pg_backend_pid()")
        .await
        .scalar()
        .parse()
        .unwrap();
    q(&ddl, "ALTER TABLE shape_t ADD COLUMN c int").await;
    kill_server(pid).await;
    let mut b = BytesMut::new();
    frontend::describe(b'S', "s1", &mut b).unwrap();
    frontend::sync(&mut b);
    r.raw.send(&b).await.unwrap();
    let (tags, error) = bounded("Describe after ALTER", until_ready(&mut r.raw)).await;
    assert_eq!(tags, ['E', 'Z'], "{error:?}");
    let error = error.unwrap();
    assert_eq!(
        error.get(&'C').map(String::as_str),
        Some("0A000"),
        "{error:?}"
    );
    assert_eq!(
        error.get(&'R').map(String::as_str),
        Some("RevalidateCachedQuery"),
        "{error:?}"
    );
    assert_eq!(r.raw.query_ok("SELECT 1").await.scalar(), "1");
    q(&ddl, "DROP TABLE shape_t").await;
}

/// A statement the client described, bound after its own `SET search_path` on a server
/// connection that lacks it: PostgreSQL analyses it again under the new path (another table
/// of the same name), and fails the Bind with 0A000 when that changes its row type; so does
/// the proxy, which prepares it anew there. A parameter keeps the type it was described with.
/// With a path whose table has the same row type, it runs and reads that table, as on
/// PostgreSQL; back under the first path, it runs as described.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_described_statement_read_under_a_new_search_path_keeps_its_row_shape() {
    su("DROP SCHEMA IF EXISTS pool_rs_b CASCADE; DROP SCHEMA IF EXISTS pool_rs_c CASCADE; \
        DROP TABLE IF EXISTS pool_rs_t; \
        CREATE SCHEMA pool_rs_b AUTHORIZATION app; CREATE SCHEMA pool_rs_c AUTHORIZATION app; \
        CREATE TABLE pool_rs_t (a int, b int); INSERT INTO pool_rs_t VALUES (1, 2); \
        CREATE TABLE pool_rs_b.pool_rs_t (a text, other text); \
        INSERT INTO pool_rs_b.pool_rs_t VALUES ('1', 'bee'); \
        CREATE TABLE pool_rs_c.pool_rs_t (a int, b int); INSERT INTO pool_rs_c.pool_rs_t VALUES (3, 4); \
        ALTER TABLE pool_rs_t OWNER TO app; ALTER TABLE pool_rs_b.pool_rs_t OWNER TO app; \
        ALTER TABLE pool_rs_c.pool_rs_t OWNER TO app");
    let p = proxy("transaction", "size = 1");
    let a = connect(&p).await;
    let st = bounded("prepare", a.prepare("SELECT * FROM pool_rs_t"))
        .await
        .unwrap();
    let b_of = |rows: &[tokio_postgres::Row]| rows[0].get::<_, i32>(1);
    assert_eq!(b_of(&bounded("query", a.query(&st, &[])).await.unwrap()), 2);
    // Its parameter is an int4 (the client sends it so, in binary).
    let count = bounded(
        "prepare",
        a.prepare("SELECT count(*) FROM pool_rs_t WHERE a = $1"),
    )
    .await
    .unwrap();
    let counted = |rows: Vec<tokio_postgres::Row>| rows[0].get::<_, i64>(0);
    assert_eq!(
        counted(bounded("count", a.query(&count, &[&1i32])).await.unwrap()),
        1
    );

    // Another row type under the new path, on a new server connection.
    q(&a, "SET search_path = pool_rs_b, public").await;
    kill_server(backend_pid(&a).await).await;
    match bounded("query under pool_rs_b", a.query(&st, &[])).await {
        Ok(rows) => panic!(
            "the statement ran with a new row shape ({:?}) under the new search_path",
            rows[0].columns()
        ),
        Err(e) => {
            assert_eq!(sqlstate(&e), "0A000", "{e:?}");
            assert_eq!(
                e.as_db_error().and_then(|d| d.routine()),
                Some("RevalidateCachedQuery"),
                "{e:?}"
            );
        }
    }
    assert_eq!(one(&a, "SELECT 1").await, "1");
    // Again (as PostgreSQL, for as long as the path stays), also where the proxy knows the
    // answer without asking again.
    kill_server(backend_pid(&a).await).await;
    let again = bounded("query under pool_rs_b again", a.query(&st, &[])).await;
    assert_eq!(
        again.as_ref().err().map(sqlstate).as_deref(),
        Some("0A000"),
        "{again:?}"
    );
    // A parameter keeps the type of the statement's first Parse, as on PostgreSQL, which
    // finds no `text = integer` operator for the new path's column (42883); inferred again,
    // it would be text, and the client's binary int4 read as text.
    kill_server(backend_pid(&a).await).await;
    let typed = bounded("count under pool_rs_b", a.query(&count, &[&1i32])).await;
    assert_eq!(
        typed.as_ref().err().map(sqlstate).as_deref(),
        Some("42883"),
        "{typed:?}"
    );
    assert_eq!(one(&a, "SELECT 1").await, "1");

    // The same row type under another path: that table's rows.
    q(&a, "SET search_path = pool_rs_c, public").await;
    kill_server(backend_pid(&a).await).await;
    let rows = bounded("query under pool_rs_c", a.query(&st, &[]))
        .await
        .unwrap_or_else(|e| panic!("under a path with the same row type: {e:?}"));
    assert_eq!(b_of(&rows), 4, "the table the new path names");
    // That copy, read under the client's path, is not the statement another client shares
    // under the first path (on the same, only server connection).
    let other = connect(&p).await;
    let st2 = bounded("prepare", other.prepare("SELECT * FROM pool_rs_t"))
        .await
        .unwrap();
    let rows = bounded("another client's query", other.query(&st2, &[]))
        .await
        .unwrap();
    assert_eq!(b_of(&rows), 2, "another client read the copy of pool_rs_c");

    // Back under the first path: as described.
    q(&a, "RESET search_path").await;
    kill_server(backend_pid(&a).await).await;
    let rows = bounded("query back under public", a.query(&st, &[]))
        .await
        .unwrap_or_else(|e| panic!("back under the first path: {e:?}"));
    assert_eq!(b_of(&rows), 2);

    // A copy checked under a changed time zone (which PostgreSQL does not analyse again for)
    // is not recorded as the shared statement either: another client's Bind of the same text
    // there reads the literal under its own time zone, not under the first client's.
    let sql = "SELECT '2024-01-01 00:00'::timestamptz::text AS t";
    q(&a, "SET TimeZone = 'UTC'").await;
    q(&other, "SET TimeZone = 'UTC'").await;
    let lit = bounded("prepare", a.prepare(sql)).await.unwrap();
    let text = |rows: Vec<tokio_postgres::Row>| rows[0].get::<_, String>(0);
    assert_eq!(
        text(bounded("literal", a.query(&lit, &[])).await.unwrap()),
        "2024-01-01 00:00:00+00"
    );
    q(&a, "SET TimeZone = 'Asia/Tokyo'").await;
    kill_server(backend_pid(&a).await).await;
    bounded("literal under Tokyo", a.query(&lit, &[]))
        .await
        .unwrap();
    let lit2 = bounded("prepare", other.prepare(sql)).await.unwrap();
    assert_eq!(
        text(
            bounded("another client's literal", other.query(&lit2, &[]))
                .await
                .unwrap()
        ),
        "2024-01-01 00:00:00+00",
        "another client got the literal as read under the first client's time zone"
    );
}

/// A Bind, Execute and Sync of statement `name` (no Describe: the driver knows its shape).
async fn bind_execute(r: &mut support::raw::Raw, name: &str) -> (Vec<char>, Option<String>) {
    let mut b = BytesMut::new();
    m_bind(&mut b, "", name, &[]);
    frontend::execute("", 0, &mut b).unwrap();
    frontend::sync(&mut b);
    r.send(&b).await.unwrap();
    let (tags, error) = bounded("Bind/Execute", until_ready(r)).await;
    (tags, error.and_then(|e| e.get(&'C').cloned()))
}

/// The row shape a driver learned from a Describe of the portal (pgjdbc: Parse, Bind,
/// Describe portal, Execute; never a Describe of the statement) is kept as one learned from
/// the statement's: after a schema change that alters it, a Bind on another server connection
/// fails with 0A000 as on PostgreSQL, instead of returning rows the driver decodes with the
/// old types (`text` bytes read as a binary `int4`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_shape_learned_from_a_portal_describe_is_kept() {
    let p = proxy("transaction", "size = 2");
    let ddl = connect(&p).await;
    q(&ddl, "DROP TABLE IF EXISTS shape_portal_t").await;
    q(&ddl, "CREATE TABLE shape_portal_t (a int, b int)").await;
    q(&ddl, "INSERT INTO shape_portal_t VALUES (1, 2)").await;
    let mut r = raw_login(&p, &[]).await;
    let mut b = BytesMut::new();
    frontend::parse("S_1", "SELECT * FROM shape_portal_t", [], &mut b).unwrap();
    m_bind(&mut b, "", "S_1", &[]);
    frontend::describe(b'P', "", &mut b).unwrap();
    frontend::execute("", 0, &mut b).unwrap();
    frontend::sync(&mut b);
    r.raw.send(&b).await.unwrap();
    let (tags, error) = bounded("Parse/Bind/Describe/Execute", until_ready(&mut r.raw)).await;
    assert_eq!(tags, ['1', '2', 'T', 'D', 'C', 'Z'], "{error:?}");
    let pid: i32 = r
        .raw
        .query_ok("SELECT pg_backend_pid()")
        .await
        .scalar()
        .parse()
        .unwrap();
    q(&ddl, "ALTER TABLE shape_portal_t ALTER COLUMN b TYPE text").await;
    kill_server(pid).await;
    let (tags, code) = bind_execute(&mut r.raw, "S_1").await;
    assert_eq!(
        (tags, code.as_deref()),
        (vec!['E', 'Z'], Some("0A000")),
        "a Bind after the row shape changed, on another connection"
    );
    assert_eq!(r.raw.query_ok("SELECT 1").await.scalar(), "1");
    q(&ddl, "DROP TABLE shape_portal_t").await;
}

/// A client that holds its server connection (session pooling) keeps its statements' row
/// shapes too: a described statement evicted from the connection (past
/// `max_prepared_statements`) is prepared there again, and after a schema change that alters
/// it, its Bind fails with 0A000 as on PostgreSQL rather than returning rows of the new shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_connection_checks_the_row_shape_of_an_evicted_statement() {
    let p = proxy("session", "size = 3\nmax_prepared_statements = 2");
    let ddl = connect(&p).await;
    q(&ddl, "DROP TABLE IF EXISTS shape_evict_t").await;
    q(&ddl, "CREATE TABLE shape_evict_t (a int, b int)").await;
    q(&ddl, "INSERT INTO shape_evict_t VALUES (1, 2)").await;
    let mut r = raw_login(&p, &[]).await;
    let mut b = BytesMut::new();
    frontend::parse("s1", "SELECT * FROM shape_evict_t", [], &mut b).unwrap();
    frontend::describe(b'S', "s1", &mut b).unwrap();
    frontend::sync(&mut b);
    r.raw.send(&b).await.unwrap();
    let (tags, error) = bounded("Parse/Describe", until_ready(&mut r.raw)).await;
    assert_eq!(tags, ['1', 't', 'T', 'Z'], "{error:?}");
    assert_eq!(
        bind_execute(&mut r.raw, "s1").await,
        (vec!['2', 'D', 'C', 'Z'], None)
    );
    // Two more statements used: s1 is evicted from the connection.
    for (name, sql) in [("s2", "SELECT 2"), ("s3", "SELECT 3")] {
        let mut b = BytesMut::new();
        frontend::parse(name, sql, [], &mut b).unwrap();
        frontend::sync(&mut b);
        r.raw.send(&b).await.unwrap();
        bounded("Parse", until_ready(&mut r.raw)).await;
        assert_eq!(
            bind_execute(&mut r.raw, name).await,
            (vec!['2', 'D', 'C', 'Z'], None)
        );
    }
    let on_server = r
        .raw
        .query_ok("SELECT count(*) FROM pg_prepared_statements WHERE statement = 'SELECT * FROM shape_evict_t'")
        .await
        .scalar();
    assert_eq!(on_server, "0", "s1 was not evicted");
    q(&ddl, "ALTER TABLE shape_evict_t ALTER COLUMN b TYPE text").await;
    let (tags, code) = bind_execute(&mut r.raw, "s1").await;
    assert_eq!(
        (tags, code.as_deref()),
        (vec!['E', 'Z'], Some("0A000")),
        "a Bind of the evicted statement after the row shape changed"
    );
    assert_eq!(r.raw.query_ok("SELECT 1").await.scalar(), "1");
    q(&ddl, "DROP TABLE shape_evict_t").await;
}

/// A notification that reaches a LISTENing client's server connection while the proxy checks a
/// statement's row shape there (its own Parse and Describe, after a schema change) is the
/// client's: it arrives with the answer to the request that followed, not dropped. (The
/// proxy's Parse waits on a lock another session holds on the table, and the notification is
/// sent meanwhile: PostgreSQL delivers it just before that exchange's ReadyForQuery.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_sent_while_a_row_shape_is_checked_reach_the_listener() {
    let p = proxy("session", "size = 4\nmax_prepared_statements = 2");
    let ddl = connect(&p).await;
    let other = connect(&p).await;
    q(&ddl, "DROP TABLE IF EXISTS shape_notify_t").await;
    q(&ddl, "CREATE TABLE shape_notify_t (a int)").await;
    q(&ddl, "INSERT INTO shape_notify_t VALUES (7)").await;
    let mut r = raw_login(&p, &[]).await;
    r.raw.query_ok("LISTEN shape_chan").await;
    let mut b = BytesMut::new();
    frontend::parse("s1", "SELECT a FROM shape_notify_t", [], &mut b).unwrap();
    frontend::describe(b'S', "s1", &mut b).unwrap();
    frontend::sync(&mut b);
    r.raw.send(&b).await.unwrap();
    let (tags, error) = bounded("Parse/Describe", until_ready(&mut r.raw)).await;
    assert_eq!(tags, ['1', 't', 'T', 'Z'], "{error:?}");
    // Two more statements: s1 is evicted from the connection, so its next Bind after a
    // schema change has it prepared and described there first.
    for (name, sql) in [("s2", "SELECT 2"), ("s3", "SELECT 3")] {
        let mut b = BytesMut::new();
        frontend::parse(name, sql, [], &mut b).unwrap();
        frontend::sync(&mut b);
        r.raw.send(&b).await.unwrap();
        bounded("Parse", until_ready(&mut r.raw)).await;
    }
    // A schema change that leaves s1's rows as they were.
    q(&ddl, "DROP TABLE IF EXISTS shape_notify_other").await;
    q(&ddl, "CREATE TABLE shape_notify_other (a int)").await;
    q(&ddl, "BEGIN").await;
    q(&ddl, "LOCK TABLE shape_notify_t IN ACCESS EXCLUSIVE MODE").await;
    let mut b = BytesMut::new();
    m_bind(&mut b, "", "s1", &[]);
    frontend::execute("", 0, &mut b).unwrap();
    frontend::sync(&mut b);
    r.raw.send(&b).await.unwrap();
    // The proxy's Parse of s1 waits for the lock.
    let waiting = "SELECT count(*) FROM pg_locks WHERE NOT granted \
                   AND relation = 'shape_notify_t'::regclass";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while one(&other, waiting).await != "1" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the shape check never waited for the lock"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    q(&other, "NOTIFY shape_chan, 'during the check'").await;
    q(&ddl, "COMMIT").await;
    let mut tags = Vec::new();
    let mut payloads = Vec::new();
    loop {
        let f = r.raw.frame().await;
        tags.push(f.tag as char);
        if f.tag == b'A' {
            // Process id, channel, payload.
            let mut parts = f.body[4..].split(|&c| c == 0);
            assert_eq!(parts.next(), Some(&b"shape_chan"[..]));
            payloads.push(String::from_utf8_lossy(parts.next().unwrap()).into_owned());
        }
        if f.tag == b'Z' {
            break;
        }
    }
    assert_eq!(
        (tags, payloads),
        (
            vec!['A', '2', 'D', 'C', 'Z'],
            vec!["during the check".to_owned()]
        ),
        "the notification sent while the proxy checked s1's row shape"
    );
    q(&ddl, "DROP TABLE shape_notify_t, shape_notify_other").await;
}

/// Messages up to ReadyForQuery: their tags, and the fields of an ErrorResponse among them.
async fn until_ready(
    r: &mut support::raw::Raw,
) -> (Vec<char>, Option<std::collections::BTreeMap<char, String>>) {
    let mut tags = Vec::new();
    let mut error = None;
    loop {
        let f = r.frame().await;
        tags.push(f.tag as char);
        if f.is_error() {
            error = Some(f.fields());
        }
        if f.tag == b'Z' {
            return (tags, error);
        }
    }
}

/// The proxy's own queries on a connection just checked out (reading the database's volatile
/// functions after a schema change) destroy the server's unnamed statement, as any simple
/// query does: a client binding its unnamed statement in a later round trip still finds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unnamed_statement_survives_the_proxys_catalog_read() {
    let p = proxy("transaction", "size = 2");
    let ddl = connect(&p).await;
    let mut r = raw_login(&p, &[]).await;
    let mut b = BytesMut::new();
    frontend::parse("", "SELECT 41 + 1", [], &mut b).unwrap();
    frontend::sync(&mut b);
    r.raw.send(&b).await.unwrap();
    let (tags, error) = bounded("Parse", until_ready(&mut r.raw)).await;
    assert_eq!(tags, ['1', 'Z'], "{error:?}");
    // A schema change: the next checkout reads the volatile functions again.
    q(&ddl, "DROP TABLE IF EXISTS unnamed_catalog_t").await;
    q(&ddl, "CREATE TABLE unnamed_catalog_t (a int)").await;
    let mut b = BytesMut::new();
    frontend::bind(
        "",
        "",
        [],
        [],
        |_: (),
         _: &mut BytesMut|
         -> Result<postgres_protocol::IsNull, Box<dyn std::error::Error + Sync + Send>> {
            unreachable!()
        },
        [0i16],
        &mut b,
    )
    .map_err(|_| ())
    .unwrap();
    frontend::execute("", 0, &mut b).unwrap();
    frontend::sync(&mut b);
    r.raw.send(&b).await.unwrap();
    let (tags, error) = bounded("Bind of the unnamed statement", until_ready(&mut r.raw)).await;
    assert_eq!(tags, ['2', 'D', 'C', 'Z'], "{error:?}");
    q(&ddl, "DROP TABLE unnamed_catalog_t").await;
}

/// A prepared statement that sets a setting changes it every time it runs, not only in the
/// transaction that parsed it: drivers parse `SELECT set_config('app.tenant_id', $1, false)`
/// once and bind it again later. Each run's value follows its client and never reaches the
/// next client of the server connection (named statements through tokio-postgres, and the
/// unnamed statement bound again in a later transaction through the raw protocol).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_setting_change_is_tracked_at_every_run() {
    let p = proxy("transaction", "size = 1");
    let a = connect(&p).await;
    let b = connect(&p).await;
    let tenant = "SELECT coalesce(current_setting('app.tenant_id', true), '<unset>')";
    let unset = |v: &str| v == "<unset>" || v.is_empty();
    let mut problems = Vec::new();

    let st = a
        .prepare("SELECT set_config('app.tenant_id', $1, false)")
        .await
        .unwrap();
    for value in ["1", "2"] {
        a.query(&st, &[&value]).await.unwrap();
        let seen = one(&b, tenant).await;
        if !unset(&seen) {
            problems.push(format!(
                "named, run {value}: b sees a's app.tenant_id = {seen:?}"
            ));
        }
        let own = one(&a, tenant).await;
        if own != value {
            problems.push(format!("named, run {value}: a's app.tenant_id is {own:?}"));
        }
    }

    let mut r = Raw::app(&p).await;
    r.roundtrip(&parse_sync(
        "",
        "SELECT set_config('app.tenant_id', $1, false)",
    ))
    .await;
    // (A simple query destroys the unnamed statement: r reads its value at the end.)
    for value in ["3", "4"] {
        let got = r.roundtrip(&bind_exec("", &[value])).await;
        assert!(error_code(&got).is_none(), "{}", tags(&got));
        let seen = one(&b, tenant).await;
        if !unset(&seen) {
            problems.push(format!(
                "unnamed, run {value}: b sees r's app.tenant_id = {seen:?}"
            ));
        }
    }
    let own = single(&r.simple(tenant).await, "r's tenant");
    if own != "4" {
        problems.push(format!("unnamed: r's app.tenant_id is {own:?}"));
    }
    assert_eq!(one(&a, tenant).await, "2");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A function whose body changes a setting (`set_config(...)`, a PL/pgSQL `SET`, a dynamic
/// `EXECUTE 'SET ...'`) changes it for the session, like a `SET` sent by the client: in
/// transaction pooling the change follows its client and never reaches the next client of
/// the server connection. Functions created directly on the server (found in the catalog)
/// and through the proxy, called through the simple and the extended protocol; a procedure
/// and a `DO` block likewise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_changed_inside_functions_are_tracked() {
    su(
        "CREATE OR REPLACE FUNCTION sy_fn_tenant(t text) RETURNS void LANGUAGE plpgsql AS \
        $$ BEGIN PERFORM set_config('app.fn_tenant', t, false); END $$; \
        CREATE OR REPLACE FUNCTION sy_fn_dynamic(t text) RETURNS int LANGUAGE plpgsql AS \
        $$ BEGIN EXECUTE 'SET app.fn_dyn = ' || quote_literal(t); RETURN 1; END $$; \
        CREATE OR REPLACE PROCEDURE sy_pr_tenant(t text) LANGUAGE plpgsql AS \
        $$ BEGIN PERFORM set_config('app.fn_proc', t, false); END $$; \
        CREATE OR REPLACE FUNCTION sy_fn_std(t text) RETURNS text LANGUAGE sql \
        RETURN set_config('app.fn_std', t, false)",
    );
    let p = proxy("transaction", "size = 1");
    let a = connect(&p).await;
    let b = connect(&p).await;
    q(
        &a,
        "CREATE OR REPLACE FUNCTION sy_fn_path() RETURNS void LANGUAGE plpgsql AS \
         $$ BEGIN\n  SET search_path = sy_fn_schema, public;\nEND $$",
    )
    .await;
    let default_path = show(&b, "search_path").await;
    let get = |name: &str| format!("SELECT coalesce(current_setting('{name}', true), '<unset>')");
    let unset = |v: &str| v == "<unset>" || v.is_empty();
    let mut problems = Vec::new();

    q(&a, "SELECT sy_fn_tenant('5')").await;
    let seen = one(&b, &get("app.fn_tenant")).await;
    if !unset(&seen) {
        problems.push(format!(
            "catalog, simple: b sees a's app.fn_tenant = {seen:?}"
        ));
    }
    let own = one(&a, &get("app.fn_tenant")).await;
    if own != "5" {
        problems.push(format!("catalog, simple: a's app.fn_tenant is {own:?}"));
    }

    let st = a.prepare("SELECT sy_fn_tenant($1)").await.unwrap();
    for value in ["6", "7"] {
        a.query(&st, &[&value]).await.unwrap();
        let seen = one(&b, &get("app.fn_tenant")).await;
        if !unset(&seen) {
            problems.push(format!(
                "catalog, extended: b sees a's app.fn_tenant = {seen:?}"
            ));
        }
        let own = one(&a, &get("app.fn_tenant")).await;
        if own != value {
            problems.push(format!("catalog, extended: a's app.fn_tenant is {own:?}"));
        }
    }

    q(&a, "SELECT sy_fn_dynamic('d')").await;
    let seen = one(&b, &get("app.fn_dyn")).await;
    if !unset(&seen) {
        problems.push(format!("dynamic: b sees a's app.fn_dyn = {seen:?}"));
    }
    let own = one(&a, &get("app.fn_dyn")).await;
    if own != "d" {
        problems.push(format!("dynamic: a's app.fn_dyn is {own:?}"));
    }

    // A SQL-standard body (no `prosrc`), made through the proxy too.
    q(
        &a,
        "CREATE OR REPLACE FUNCTION sy_fn_atomic(t text) RETURNS text LANGUAGE sql \
         BEGIN ATOMIC SELECT set_config('app.fn_atomic', t, false); END",
    )
    .await;
    for (sql, name, value) in [
        ("CALL sy_pr_tenant('p')", "app.fn_proc", "p"),
        ("SELECT sy_fn_std('s')", "app.fn_std", "s"),
        ("SELECT sy_fn_atomic('t')", "app.fn_atomic", "t"),
        (
            "SELECT \"set_config\"('app.fn_quoted', 'q', false)",
            "app.fn_quoted",
            "q",
        ),
        (
            "SELECT set_config('app.fn$dollar', 'z', false)",
            "app.fn$dollar",
            "z",
        ),
        (
            "DO $$ BEGIN PERFORM set_config('app.fn_do', 'x', false); END $$",
            "app.fn_do",
            "x",
        ),
    ] {
        q(&a, sql).await;
        let seen = one(&b, &get(name)).await;
        if !unset(&seen) {
            problems.push(format!("{sql}: b sees a's {name} = {seen:?}"));
        }
        let own = one(&a, &get(name)).await;
        if own != value {
            problems.push(format!("{sql}: a's {name} is {own:?}"));
        }
    }

    q(&a, "SELECT sy_fn_path()").await;
    let seen = show(&b, "search_path").await;
    if seen != default_path {
        problems.push(format!("created here: b's search_path is {seen:?}"));
    }
    let own = show(&a, "search_path").await;
    if own != "sy_fn_schema, public" {
        problems.push(format!("created here: a's search_path is {own:?}"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A function that changes settings or keeps state only through the functions it calls (a
/// login function calling a tenant setter, at any depth, in plpgsql and SQL) has their
/// effects: the caller keeps its settings, the next client of the connection does not see
/// them, and state made that way pins the caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn effects_of_functions_a_function_calls_are_tracked() {
    su(
        "CREATE OR REPLACE FUNCTION sy_nest_set(t text) RETURNS void LANGUAGE plpgsql AS \
        $$ BEGIN PERFORM set_config('app.nest', t, false); END $$; \
        CREATE OR REPLACE FUNCTION sy_nest_mid(t text) RETURNS void LANGUAGE sql AS \
        $$ SELECT public.Sy_Nest_Set (t) $$; \
        CREATE OR REPLACE FUNCTION sy_nest_login(t text) RETURNS int LANGUAGE plpgsql AS \
        $$ BEGIN PERFORM sy_nest_mid(t); RETURN 1; END $$; \
        CREATE OR REPLACE FUNCTION sy_nest_tmp() RETURNS void LANGUAGE plpgsql AS \
        $$ BEGIN CREATE TEMP TABLE IF NOT EXISTS sy_nest_scratch (x int); END $$; \
        CREATE OR REPLACE FUNCTION sy_nest_prepare() RETURNS void LANGUAGE plpgsql AS \
        $$ BEGIN PERFORM sy_nest_tmp(); END $$",
    );
    let p = proxy("transaction", "size = 1");
    let a = connect(&p).await;
    let b = connect(&p).await;
    // Created through the proxy: calls the chain the catalog holds.
    q(
        &a,
        "CREATE OR REPLACE FUNCTION sy_nest_outer(t text) RETURNS void LANGUAGE plpgsql AS \
         $$ BEGIN PERFORM sy_nest_login(t || '!'); END $$",
    )
    .await;
    let get = "SELECT coalesce(current_setting('app.nest', true), '<unset>')";
    let unset = |v: &str| v == "<unset>" || v.is_empty();
    let mut problems = Vec::new();
    for (how, sql, value) in [
        ("two levels down", "SELECT sy_nest_login('n1')", "n1"),
        ("one level down", "SELECT sy_nest_mid('n2')", "n2"),
        ("created here", "SELECT sy_nest_outer('n3')", "n3!"),
    ] {
        q(&a, sql).await;
        let seen = one(&b, get).await;
        if !unset(&seen) {
            problems.push(format!("{how}: b sees a's app.nest = {seen:?}"));
        }
        let own = one(&a, get).await;
        if own != value {
            problems.push(format!("{how}: a's app.nest is {own:?}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // State made one call down pins the caller to its connection.
    let p = proxy("transaction", "size = 2");
    let a = connect(&p).await;
    let b = connect(&p).await;
    let c = connect(&p).await;
    q(&a, "SELECT sy_nest_prepare()").await;
    let probe = "SELECT (to_regclass('pg_temp.sy_nest_scratch') IS NOT NULL)::text";
    for round in 0..3 {
        for (name, other) in [("b", &b), ("c", &c)] {
            assert_eq!(
                one(other, probe).await,
                "false",
                "round {round}: {name} has a's table"
            );
        }
        assert_eq!(
            one(&a, probe).await,
            "true",
            "round {round}: a lost its table"
        );
    }
    assert_eq!(
        p.metric("switchyard_pinned_clients_total{reason=\"temp_table\"}")
            .await,
        1.0
    );
}

/// A statement a client prepared before the proxy knew that a function it calls changes
/// settings (the function was redefined on the server afterwards) counts as a settings change
/// at its next run once the proxy has read the catalog again: its setting follows its client
/// and does not reach the next client of the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_prepared_before_its_function_changed_settings_is_tracked() {
    su(
        "CREATE OR REPLACE FUNCTION sy_late(t text) RETURNS text LANGUAGE plpgsql AS \
        $$ BEGIN RETURN t; END $$",
    );
    let p = proxy("transaction", "size = 1");
    let a = connect(&p).await;
    let b = connect(&p).await;
    let st = a.prepare("SELECT sy_late($1)").await.unwrap();
    a.query(&st, &[&"before"]).await.unwrap();
    su(
        "CREATE OR REPLACE FUNCTION sy_late(t text) RETURNS text LANGUAGE plpgsql AS \
        $$ BEGIN PERFORM set_config('app.late', t, false); RETURN t; END $$",
    );
    // A schema change through the proxy: the catalog is read again at the next checkout.
    q(&b, "CREATE TABLE IF NOT EXISTS sy_late_bump (x int)").await;
    let get = "SELECT coalesce(current_setting('app.late', true), '<unset>')";
    for value in ["v1", "v2"] {
        a.query(&st, &[&value]).await.unwrap();
        let seen = one(&b, get).await;
        assert!(
            seen == "<unset>" || seen.is_empty(),
            "b sees a's app.late = {seen:?}"
        );
        assert_eq!(one(&a, get).await, value, "a's app.late");
    }
}

/// The same for the unnamed statement: bound again without a new Parse, and parsed again with
/// the same message (drivers send the same unnamed Parse for every run of a query), after the
/// function it calls learnt to change settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unnamed_statement_parsed_before_its_function_changed_settings_is_tracked() {
    let plain = |f: &str| {
        format!(
            "CREATE OR REPLACE FUNCTION {f}(t text) RETURNS text LANGUAGE plpgsql AS \
             $$ BEGIN RETURN t; END $$"
        )
    };
    let setter = |f: &str| {
        format!(
            "CREATE OR REPLACE FUNCTION {f}(t text) RETURNS text LANGUAGE plpgsql AS \
             $$ BEGIN PERFORM set_config('app.{f}', t, false); RETURN t; END $$"
        )
    };
    let p = proxy("transaction", "size = 1");
    let mut a = Raw::app(&p).await;
    let b = connect(&p).await;
    let mut bump = 0;
    for (f, reparse) in [("sy_late_rebind", false), ("sy_late_reparse", true)] {
        su(&plain(f));
        let mut parse = BytesMut::new();
        m_parse(&mut parse, "", &format!("SELECT {f}($1)"));
        let mut b1 = parse.clone();
        b1.extend_from_slice(&bind_exec("", &["before"]));
        assert_eq!(single(&a.roundtrip(&b1).await, f), "before");
        su(&setter(f));
        // A schema change through the proxy: the catalog is read again at the next checkout.
        bump += 1;
        q(
            &b,
            &format!("CREATE TABLE IF NOT EXISTS sy_late_bump{bump} (x int)"),
        )
        .await;
        let get = format!("SELECT coalesce(current_setting('app.{f}', true), '<unset>')");
        // a reads its own with a named statement: a simple query would end its unnamed one.
        let mine = format!("get_{f}");
        parsed(&mut a, &mine, &get).await;
        for value in ["v1", "v2"] {
            let mut m = if reparse {
                parse.clone()
            } else {
                BytesMut::new()
            };
            m.extend_from_slice(&bind_exec("", &[value]));
            assert_eq!(
                single(&a.roundtrip(&m).await, &format!("{f} {value}")),
                value
            );
            let seen = one(&b, &get).await;
            assert!(
                seen == "<unset>" || seen.is_empty(),
                "{f}: b sees a's app.{f} = {seen:?}"
            );
            let own = a.roundtrip(&bind_exec(&mine, &[])).await;
            assert_eq!(single(&own, &get), value, "{f}: a's own");
        }
    }
}

/// A role taken some way other than `SET ROLE` (`set_config('role', ...)` with a literal or
/// a parameter, a function that runs `SET ROLE`) is the session's identity like `SET ROLE`:
/// the client is pinned to its server connection, and no other client ever runs as that
/// role. A role taken inside a rolled-back transaction pins nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_taken_by_set_config_never_reaches_another_client() {
    su(&format!(
        "DO $$ BEGIN CREATE ROLE sy_priv NOLOGIN; \
         EXCEPTION WHEN duplicate_object THEN NULL; END $$; \
         GRANT sy_priv TO {APP_USER}; \
         CREATE OR REPLACE FUNCTION sy_fn_become() RETURNS void LANGUAGE plpgsql AS \
         $$ BEGIN SET ROLE sy_priv; END $$"
    ));
    let who = "SELECT current_user::text";
    let mut problems = Vec::new();
    for (how, sql, param) in [
        (
            "literal",
            "SELECT set_config('role', 'sy_priv', false)",
            None,
        ),
        (
            "parameter",
            "SELECT set_config($1, 'sy_priv', false)",
            Some("role"),
        ),
        ("function", "SELECT sy_fn_become()", None),
    ] {
        let p = proxy("transaction", "size = 2");
        let a = connect(&p).await;
        let b = connect(&p).await;
        let c = connect(&p).await;
        // Rolled back: nothing to pin.
        q(&a, "BEGIN").await;
        match param {
            Some(v) => drop(a.query(sql, &[&v]).await.unwrap()),
            None => drop(q(&a, sql).await),
        }
        q(&a, "ROLLBACK").await;
        if one(&b, who).await != APP_USER {
            problems.push(format!("{how}: b runs as another role after a's rollback"));
        }
        match param {
            Some(v) => drop(a.query(sql, &[&v]).await.unwrap()),
            None => drop(q(&a, sql).await),
        }
        // b and c share the one connection a did not keep.
        for round in 0..3 {
            for (name, other) in [("b", &b), ("c", &c)] {
                let seen = one(other, who).await;
                if seen != APP_USER {
                    problems.push(format!("{how}, round {round}: {name} runs as {seen}"));
                }
            }
            let own = one(&a, who).await;
            if own != "sy_priv" {
                problems.push(format!("{how}, round {round}: a runs as {own}"));
            }
        }
        // (A name passed as a parameter pins at once, for any setting: see
        // a_setting_named_by_a_parameter_pins_its_client.)
        let reason = if param.is_some() {
            "computed_setting"
        } else {
            "role"
        };
        let pins = p
            .metric(&format!(
                "switchyard_pinned_clients_total{{reason=\"{reason}\"}}"
            ))
            .await;
        if pins < 1.0 {
            problems.push(format!("{how}: no pin counted ({pins})"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A function or `DO` block whose `EXECUTE` runs a statement built as it runs
/// (`format('SET %I = %L', ...)`, `'SET ' || quote_ident(k) || ...`, a statement passed in)
/// may change any setting: the settings it changes follow its client to its next
/// transactions, and neither the next client of the connection nor a client that comes after
/// it left sees them. A role taken so (`format('SET %s %s', 'ROLE', r)`) pins the client, and
/// no other client ever runs as that role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_a_dynamic_execute_changes_never_reach_another_client() {
    // (Made before the proxy starts: it reads the catalog's functions at its first request.)
    su(&format!(
        "DO $$ BEGIN CREATE ROLE sy_dyn_role NOLOGIN; \
         EXCEPTION WHEN duplicate_object THEN NULL; END $$; \
         GRANT sy_dyn_role TO {APP_USER}; \
         CREATE OR REPLACE FUNCTION sy_dyn_set(k text, v text) RETURNS void LANGUAGE plpgsql AS \
         $$ BEGIN EXECUTE 'SET ' || quote_ident(k) || ' = ' || quote_literal(v); END $$; \
         CREATE OR REPLACE FUNCTION sy_dyn_run(stmt text) RETURNS void LANGUAGE plpgsql AS \
         $$ BEGIN EXECUTE stmt; END $$"
    ));
    let p = proxy("transaction", "size = 1");
    let a = connect(&p).await;
    let b = connect(&p).await;
    let names = [
        "statement_timeout",
        "lock_timeout",
        "idle_in_transaction_session_timeout",
    ];
    let mut defaults = Vec::new();
    for name in names {
        defaults.push(show(&b, name).await);
    }
    let mut problems = Vec::new();
    let mut mine: Vec<(&str, &str)> = Vec::new();
    for (sql, name, value) in [
        (
            "DO $$ BEGIN EXECUTE format('SET %I = %L', 'statement_timeout', '1234ms'); END $$",
            "statement_timeout",
            "1234ms",
        ),
        (
            "SELECT sy_dyn_set('lock_timeout', '4321ms')",
            "lock_timeout",
            "4321ms",
        ),
        (
            "SELECT sy_dyn_run('SET idle_in_transaction_session_timeout = ''55s''')",
            "idle_in_transaction_session_timeout",
            "55s",
        ),
    ] {
        q(&a, sql).await;
        mine.push((name, value));
        for (n, d) in names.iter().zip(&defaults) {
            let seen = show(&b, n).await;
            if &seen != d {
                problems.push(format!("{sql}: b sees {n} = {seen:?}"));
            }
        }
        // a's own settings, all made so far, in its next transactions.
        for (n, v) in &mine {
            let own = show(&a, n).await;
            if own != *v {
                problems.push(format!("{sql}: a's {n} is {own:?}"));
            }
        }
    }
    // After a left, a new client gets the connection's defaults.
    drop(a);
    wait_clients(&p, 1).await;
    let c = connect(&p).await;
    for (n, d) in names.iter().zip(&defaults) {
        let seen = show(&c, n).await;
        if &seen != d {
            problems.push(format!("after a left: c sees {n} = {seen:?}"));
        }
    }
    drop((b, c));

    // A role: the client is pinned; b and c share the one connection a did not keep.
    let p = proxy("transaction", "size = 2");
    let a = connect(&p).await;
    let b = connect(&p).await;
    let c = connect(&p).await;
    let who = "SELECT current_user::text";
    q(
        &a,
        "DO $$ DECLARE r text := 'sy_dyn_role'; \
         BEGIN EXECUTE format('SET %s %s', 'ROLE', r); END $$",
    )
    .await;
    for round in 0..3 {
        for (name, other) in [("b", &b), ("c", &c)] {
            let seen = one(other, who).await;
            if seen != APP_USER {
                problems.push(format!("role, round {round}: {name} runs as {seen}"));
            }
        }
        let own = one(&a, who).await;
        if own != "sy_dyn_role" {
            problems.push(format!("role, round {round}: a runs as {own}"));
        }
    }
    let pins = p
        .metric("switchyard_pinned_clients_total{reason=\"role\"}")
        .await;
    if pins < 1.0 {
        problems.push(format!("role: no pin counted ({pins})"));
    }
    drop(a);
    wait_clients(&p, 2).await;
    let d = connect(&p).await;
    for (name, other) in [("b", &b), ("c", &c), ("d", &d)] {
        let seen = one(other, who).await;
        if seen != APP_USER {
            problems.push(format!("role, after a left: {name} runs as {seen}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A session setting changed inside a transaction block is no query: `SET TRANSACTION
/// ISOLATION LEVEL` may still follow it, as connected directly (switchyard's own query that
/// puts startup values back runs only after statements that may reset one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_in_a_block_leaves_set_transaction_possible() {
    let p = proxy("transaction", "size = 2");
    let a = connect_cs(&format!("{} application_name=sy_iso", app_cs(&p))).await;
    q(&a, "BEGIN").await;
    q(&a, "SET statement_timeout = '1min'").await;
    q(&a, "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE").await;
    assert_eq!(show(&a, "transaction_isolation").await, "serializable");
    q(&a, "COMMIT").await;
    assert_eq!(show(&a, "statement_timeout").await, "1min");
    // A RESET still puts the startup value back at once.
    q(&a, "SET application_name = 'other'").await;
    q(&a, "RESET application_name").await;
    assert_eq!(show(&a, "application_name").await, "sy_iso");
}

/// A custom setting set with a name the statement does not write out (`set_config($1, $2,
/// false)`) cannot be read back (placeholders are read by name): its client is pinned, keeps
/// the setting, and no other client ever sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setting_named_by_a_parameter_pins_its_client() {
    // (Made before the proxy starts: it reads the catalog's functions at its first request.)
    su(
        "CREATE OR REPLACE FUNCTION sy_fn_computed(k text, v text) RETURNS void \
        LANGUAGE plpgsql AS $$ BEGIN PERFORM set_config('app.' || k, v, false); END $$",
    );
    let p = proxy("transaction", "size = 2");
    let a = connect(&p).await;
    let b = connect(&p).await;
    let c = connect(&p).await;
    drop(
        a.query(
            "SELECT set_config($1, $2, false)",
            &[&"app.sy_param_tenant", &"42"],
        )
        .await
        .unwrap(),
    );
    let seen = "SELECT coalesce(current_setting('app.sy_param_tenant', true), '')";
    let mut problems = Vec::new();
    // b and c share the one connection a did not keep.
    for round in 0..3 {
        for (name, other) in [("b", &b), ("c", &c)] {
            let v = one(other, seen).await;
            if !v.is_empty() {
                problems.push(format!("round {round}: {name} sees a's setting {v:?}"));
            }
        }
        let own = one(&a, seen).await;
        if own != "42" {
            problems.push(format!("round {round}: a lost its setting ({own:?})"));
        }
    }
    let pins = p
        .metric("switchyard_pinned_clients_total{reason=\"computed_setting\"}")
        .await;
    if pins < 1.0 {
        problems.push(format!("no pin counted ({pins})"));
    }
    drop(a);
    // Likewise a name built from pieces, and one a called function's body computes.
    for (sql, name, value) in [
        (
            "SELECT set_config('app.' || 'sy_cat_tenant', '43', false)",
            "app.sy_cat_tenant",
            "43",
        ),
        (
            "SELECT sy_fn_computed('sy_fn_computed', '44')",
            "app.sy_fn_computed",
            "44",
        ),
    ] {
        let a = connect(&p).await;
        q(&a, sql).await;
        let seen = format!("SELECT coalesce(current_setting('{name}', true), '')");
        for round in 0..3 {
            for (who, other) in [("b", &b), ("c", &c)] {
                let v = one(other, &seen).await;
                if !v.is_empty() {
                    problems.push(format!("{sql}, round {round}: {who} sees {v:?}"));
                }
            }
            let own = one(&a, &seen).await;
            if own != value {
                problems.push(format!(
                    "{sql}, round {round}: a lost its setting ({own:?})"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A table created without the word TEMP can still be temporary: `search_path` naming
/// `pg_temp` first, or `INTO pg_temp.t`. Its client is pinned like one that said TEMP, keeps
/// its table, and no other client gets a session holding it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_temporary_without_saying_so_pins_its_client() {
    let mut problems = Vec::new();
    for (how, create, table) in [
        (
            "search_path",
            "SET search_path = pg_temp, public; CREATE TABLE sy_tmp_path (a int)",
            "sy_tmp_path",
        ),
        (
            "select into",
            "SELECT 1 AS a INTO pg_temp.sy_tmp_into",
            "sy_tmp_into",
        ),
    ] {
        let p = proxy("transaction", "size = 2");
        let a = connect(&p).await;
        let b = connect(&p).await;
        let c = connect(&p).await;
        // Separate statements: the SET first, then the CREATE.
        for sql in create.split("; ") {
            q(&a, sql).await;
        }
        let has = format!("SELECT (to_regclass('pg_temp.{table}') IS NOT NULL)::text");
        for round in 0..3 {
            for (name, other) in [("b", &b), ("c", &c)] {
                if one(other, &has).await != "false" {
                    problems.push(format!(
                        "{how}, round {round}: {name} has a's temporary table"
                    ));
                }
            }
            if one(&a, &has).await != "true" {
                problems.push(format!("{how}, round {round}: a lost its temporary table"));
            }
        }
        let pins = p
            .metric("switchyard_pinned_clients_total{reason=\"temp_table\"}")
            .await;
        if pins < 1.0 {
            problems.push(format!("{how}: no pin counted ({pins})"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A function that leaves state in the session (a temporary table, a session advisory lock,
/// a `LISTEN`; also a `DO` block) pins its caller like the same statement sent directly: the
/// caller keeps seeing its state, and no other client gets it. A function whose temporary
/// table is gone at commit (`ON COMMIT DROP`) pins nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_a_function_leaves_in_the_session_pins_its_caller() {
    su(
        "CREATE OR REPLACE FUNCTION sy_fn_temp() RETURNS void LANGUAGE plpgsql AS \
        $$ BEGIN CREATE TEMP TABLE IF NOT EXISTS sy_fn_scratch (a int); END $$; \
        CREATE OR REPLACE FUNCTION sy_fn_temp_drop() RETURNS void LANGUAGE plpgsql AS \
        $$ BEGIN CREATE TEMP TABLE sy_fn_gone (a int) ON COMMIT DROP; END $$; \
        CREATE OR REPLACE FUNCTION sy_fn_lock(k bigint) RETURNS void LANGUAGE plpgsql AS \
        $$ BEGIN PERFORM pg_advisory_lock(k); END $$; \
        CREATE OR REPLACE FUNCTION sy_fn_listen() RETURNS void LANGUAGE plpgsql AS \
        $$ BEGIN EXECUTE 'LISTEN sy_fn_channel'; END $$",
    );
    let mut problems = Vec::new();
    for (reason, call, probe) in [
        (
            "temp_table",
            "SELECT sy_fn_temp()",
            "SELECT (to_regclass('pg_temp.sy_fn_scratch') IS NOT NULL)::text",
        ),
        (
            "advisory_lock",
            "SELECT sy_fn_lock(4242)",
            "SELECT (count(*) > 0)::text FROM pg_locks \
             WHERE locktype = 'advisory' AND pid = pg_backend_pid()",
        ),
        (
            "listen",
            "SELECT sy_fn_listen()",
            "SELECT (count(*) > 0)::text FROM pg_listening_channels()",
        ),
        (
            "advisory_lock",
            "DO $$ BEGIN PERFORM pg_advisory_lock(4243); END $$",
            "SELECT (count(*) > 0)::text FROM pg_locks \
             WHERE locktype = 'advisory' AND pid = pg_backend_pid()",
        ),
    ] {
        let p = proxy("transaction", "size = 2");
        let a = connect(&p).await;
        let b = connect(&p).await;
        let c = connect(&p).await;
        q(&a, "SELECT sy_fn_temp_drop()").await;
        q(&a, call).await;
        for round in 0..3 {
            for (name, other) in [("b", &b), ("c", &c)] {
                if one(other, probe).await != "false" {
                    problems.push(format!("{reason}, round {round}: {name} has a's state"));
                }
            }
            if one(&a, probe).await != "true" {
                problems.push(format!("{reason}, round {round}: a lost its state"));
            }
        }
        let series = |r: &str| format!("switchyard_pinned_clients_total{{reason=\"{r}\"}}");
        if p.metric(&series(reason)).await != 1.0 {
            problems.push(format!("{reason}: not one pin counted"));
        }
        if reason != "temp_table" && p.metric(&series("temp_table")).await != 0.0 {
            problems.push(format!("{reason}: ON COMMIT DROP pinned"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A new server process never has the id of a session that just ended, and drivers' pools
/// tell their connections apart by it (pgx's pool tests: a connection closed in a failed
/// transaction must come back as another process). So a client logging in gets a server
/// connection whose process id no client was given before, or a new one while the pool has
/// room; only a full pool (in transaction pooling: session pooling closes the connection of a
/// client that left) hands out an id given before, the one given out longest ago.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_does_not_get_the_process_id_of_one_that_just_left() {
    for mode in ["transaction", "session"] {
        let p = proxy(mode, "size = 3");
        let mut seen = Vec::new();
        for i in 0..3 {
            let mut c = Raw::app(&p).await;
            let backend: i32 = single(&c.simple("SELECT pg_backend_pid()").await, mode)
                .parse()
                .unwrap();
            assert_eq!(
                c.key_pid, backend,
                "{mode}: client {i}: the server process's own id"
            );
            assert!(
                !seen.contains(&c.key_pid),
                "{mode}: client {i} got the id of a client that left: {} in {seen:?}",
                c.key_pid
            );
            seen.push(c.key_pid);
            drop(c);
            // Until the proxy saw it leave (its connection is free again).
            let deadline = Instant::now() + STEP;
            while p.metric("switchyard_client_connections").await > 0.0 {
                assert!(
                    Instant::now() < deadline,
                    "{mode}: client {i} still counted"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let c = Raw::app(&p).await;
        if mode == "transaction" {
            // The pool is full now: the next client gets the id given out longest ago.
            assert_eq!(c.key_pid, seen[0], "{mode}: full pool: {seen:?}");
        } else {
            // Session pooling closes the connection of a client that left (session_reuse off).
            assert!(
                !seen.contains(&c.key_pid),
                "{mode}: {} in {seen:?}",
                c.key_pid
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// workers > 1
// ---------------------------------------------------------------------------------------------

/// Names of the threads of process `pid` (from /proc; empty if unreadable).
fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                .map(|n| n.trim().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `workers = 2` (the work-stealing runtime, two threads): real work through it, with the
/// read/write split on and a pool of 4 per server. 8 clients at once each run 25 rounds of a
/// transaction (prepared inserts, a prepared read inside it that must see the transaction's
/// own rows, commit; every fifth round rolled back instead) and, after each round, a prepared
/// read outside a transaction that must see exactly the client's committed rows
/// (read-your-writes, whichever server it runs on), with a per-client setting that must stay
/// the client's own; then pgbench (8 clients, extended protocol) runs transactions updating
/// counters and logging them, and the counts on the primary must add up exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_serve_concurrent_transactions_prepared_statements_and_pgbench() {
    create_table("pool_w2_rows", "client int, round int");
    create_table("pool_w2_counters", "id int PRIMARY KEY, n int NOT NULL");
    create_table("pool_w2_log", "id int");
    su("INSERT INTO pool_w2_counters SELECT g, 0 FROM generate_series(1, 20) g");
    let p = support::ready::start_ready_proxy(ProxyOptions {
        extra_top: "workers = 2\n".into(),
        extra_tables: "[pool]\nsize = 4\n".into(),
        ..Default::default()
    });
    // The runtime has its two worker threads (a single event loop has none).
    let workers = thread_names(p.pid())
        .iter()
        .filter(|n| n.starts_with("tokio-r"))
        .count();
    assert!(
        workers >= 2,
        "threads of the proxy: {:?}",
        thread_names(p.pid())
    );

    const CLIENTS: i32 = 8;
    const ROUNDS: i32 = 25;
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let c = connect(&p).await;
        tasks.push(tokio::spawn(async move {
            let app_name = format!("w2_client_{client}");
            c.batch_execute(&format!("SET application_name = '{app_name}'"))
                .await?;
            let insert = c
                .prepare("INSERT INTO pool_w2_rows VALUES ($1, $2)")
                .await?;
            let count = c
                .prepare("SELECT count(*) FROM pool_w2_rows WHERE client = $1")
                .await?;
            let mut committed = 0i64;
            let mut problems = Vec::new();
            for round in 0..ROUNDS {
                c.batch_execute("BEGIN").await?;
                c.execute(&insert, &[&client, &round]).await?;
                c.execute(&insert, &[&client, &-round]).await?;
                let inside: i64 = c.query_one(&count, &[&client]).await?.get(0);
                if inside != committed + 2 {
                    problems.push(format!(
                        "client {client} round {round}: {inside} rows inside its \
                         transaction, expected {}",
                        committed + 2
                    ));
                }
                if round % 5 == 4 {
                    c.batch_execute("ROLLBACK").await?;
                } else {
                    c.batch_execute("COMMIT").await?;
                    committed += 2;
                }
                let after: i64 = c.query_one(&count, &[&client]).await?.get(0);
                if after != committed {
                    problems.push(format!(
                        "client {client} round {round}: read {after} rows after the \
                         transaction, expected {committed}"
                    ));
                }
                let name: String = c
                    .query_one("SELECT current_setting('application_name')", &[])
                    .await?
                    .get(0);
                if name != app_name {
                    problems.push(format!(
                        "client {client} round {round}: application_name {name:?}"
                    ));
                }
            }
            Ok::<_, tokio_postgres::Error>((committed, problems))
        }));
    }
    let mut problems = Vec::new();
    for (client, t) in tasks.into_iter().enumerate() {
        let (committed, mut found) = tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .unwrap_or_else(|_| panic!("client {client} did not finish within 120 s"))
            .expect("client task panicked")
            .unwrap_or_else(|e| panic!("client {client}: {e} ({e:?})\n{}", p.log_tail(30)));
        problems.append(&mut found);
        let on_primary = su(&format!(
            "SELECT count(*) FROM pool_w2_rows WHERE client = {client}"
        ));
        if on_primary != committed.to_string() {
            problems.push(format!(
                "client {client}: {on_primary} rows on the primary, {committed} committed"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert_eq!(
        su("SELECT count(*) FROM pool_w2_rows"),
        (CLIENTS * (ROUNDS - ROUNDS / 5) * 2).to_string()
    );

    // pgbench: 8 clients, 2 threads, 150 transactions each, the extended protocol. (Not
    // `-M prepared` on a pool smaller than its clients: pgbench prepares each statement with a
    // synchronous PQprepare the first time it runs it, which blocks every client of that
    // pgbench thread; a client of the same thread holding a connection in its transaction
    // then cannot go on, and the prepare waits for a connection it holds: a deadlock of the
    // client's own making, as through PgBouncer.)
    counters_pgbench(&p, "pool_w2", "extended", 2);
    // Still serving, and nothing left in use.
    let c = connect(&p).await;
    assert_eq!(one(&c, "SELECT 'still here'").await, "still here");
    drop(c);
    p.wait_status("no server connection in use", STEP, |s| {
        s["pools"]
            .as_array()
            .is_some_and(|pools| pools.iter().all(|p| p["in_use"] == 0))
    })
    .await;
}

/// pgbench `-M prepared` (each statement prepared by name, Parse + Sync, the first time its
/// client runs it, inside the transaction) through a pool smaller than its clients (8 clients,
/// `size = 2`): every transaction goes through, and the counters and their log agree. One
/// pgbench thread per client: pgbench prepares with a synchronous PQprepare, which blocks
/// every client of its thread, so with fewer threads a client holding a connection in its
/// transaction would wait behind a prepare that waits for that connection (as through any
/// transaction pooler).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_prepared_transactions_on_a_pool_smaller_than_its_clients() {
    create_table("pool_pgp_counters", "id int PRIMARY KEY, n int NOT NULL");
    create_table("pool_pgp_log", "id int");
    su("INSERT INTO pool_pgp_counters SELECT g, 0 FROM generate_series(1, 20) g");
    let p = proxy("transaction", "size = 2\ncheckout_timeout = \"20s\"");
    counters_pgbench(&p, "pool_pgp", "prepared", 8);
}

/// pgbench through `p`: 8 clients, `threads` threads, 150 transactions each in protocol
/// `mode`, each a block that counts in `{tables}_counters` (20 rows of `id`, `n`) and logs in
/// `{tables}_log`. Every transaction must go through, and each counter agree with its log.
fn counters_pgbench(p: &Proxy, tables: &str, mode: &str, threads: usize) {
    use support::tools::{pg_command, run};
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("counters.sql");
    std::fs::write(
        &script,
        format!(
            "\\set id random(1, 20)\n\
             BEGIN;\n\
             UPDATE {tables}_counters SET n = n + 1 WHERE id = :id;\n\
             INSERT INTO {tables}_log VALUES (:id);\n\
             SELECT n FROM {tables}_counters WHERE id = :id;\n\
             END;\n"
        ),
    )
    .unwrap();
    let mut c = pg_command("pgbench", p.port());
    c.args(["-n", "-c", "8", "-t", "150", "-M", mode, "-f"])
        .arg(&script)
        .args(["-j", &threads.to_string()])
        .arg(APP_DB);
    let r = tokio::task::block_in_place(|| run(c, Duration::from_secs(300)));
    assert!(
        r.code == Some(0)
            && r.stdout
                .contains("number of transactions actually processed: 1200/1200"),
        "{}\n{}",
        r.describe(&format!("pgbench -M {mode}, {threads} threads")),
        p.log_tail(30)
    );
    assert_eq!(su(&format!("SELECT sum(n) FROM {tables}_counters")), "1200");
    assert_eq!(su(&format!("SELECT count(*) FROM {tables}_log")), "1200");
    assert_eq!(
        su(&format!(
            "SELECT count(*) FROM {tables}_counters c \
             WHERE n <> (SELECT count(*) FROM {tables}_log l WHERE l.id = c.id)"
        )),
        "0",
        "a counter disagrees with its log"
    );
}

/// A server with no connection slot left for the pool (here the role's `CONNECTION LIMIT 2`;
/// `max_connections`, or a database's limit, answer the same 53300) stops the pool growing
/// there: logins and transactions beyond the two connections wait for one to come back, as
/// they would for a pool of size 2, instead of failing with the server's refusal. Once
/// nothing comes back within checkout_timeout, the client gets 53300 with the server's own
/// words; and after the limit is lifted, the pool grows again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_free_slots_makes_clients_wait_for_the_pools_connections() {
    const ROLE: &str = "pool_slot_limited";
    const NONE: &str = "pool_slot_none";
    su(&format!(
        "DROP ROLE IF EXISTS {ROLE}; CREATE ROLE {ROLE} LOGIN PASSWORD 'limited' CONNECTION LIMIT 2;
         GRANT CONNECT ON DATABASE {APP_DB} TO {ROLE};
         DROP ROLE IF EXISTS {NONE}; CREATE ROLE {NONE} LOGIN PASSWORD 'limited' CONNECTION LIMIT 0;
         GRANT CONNECT ON DATABASE {APP_DB} TO {NONE}"
    ));
    let users = format!(
        "[[users]]\nname = \"{ROLE}\"\npassword = \"limited\"\n\n\
         [[users]]\nname = \"{NONE}\"\npassword = \"limited\"\n"
    );
    let p = proxy_with(
        "transaction",
        &format!(
            "[routing]\nread_write_split = false\n\n[pool]\nsize = 10\ncheckout_timeout = \"20s\"\n\n{users}"
        ),
    );
    let cs = format!(
        "{} connect_timeout=20",
        p.conn_string(ROLE, "limited", APP_DB)
    );
    // Six clients, three transactions each holding a connection for a while: at most two run
    // at a time, and all of them complete.
    let mut tasks = Vec::new();
    for i in 0..6 {
        let cs = cs.clone();
        tasks.push(tokio::spawn(async move {
            let (c, conn) = tokio_postgres::connect(&cs, tokio_postgres::NoTls)
                .await
                .map_err(|e| format!("client {i} login: {e}"))?;
            tokio::spawn(conn);
            for _ in 0..3 {
                c.batch_execute("BEGIN; SELECT pg_sleep(0.1); COMMIT")
                    .await
                    .map_err(|e| format!("client {i}: {e} ({:?})", e.code()))?;
            }
            Ok::<_, String>(())
        }));
    }
    for t in tasks {
        bounded("a client of the limited role", t)
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{e}"));
    }
    // One checkout at a time tried to open a third connection, with pauses in between
    // (each attempt costs the server a process start).
    let refused = p
        .metric(&format!(
            "switchyard_server_connect_errors_total{{backend=\"{}\"}}",
            shared_cluster().primary().name()
        ))
        .await;
    assert!(
        (1.0..=20.0).contains(&refused),
        "{refused} refused openings"
    );
    // A pool with no connection open has none to wait for: the server's refusal comes at
    // once, not after checkout_timeout (20 s).
    let started = Instant::now();
    match bounded(
        "a login of a role with no slot",
        p.try_connect(NONE, "limited", APP_DB),
    )
    .await
    {
        Ok(_) => panic!("a role with CONNECTION LIMIT 0 logged in"),
        Err(e) => assert_eq!(sqlstate(&e), "53300", "{e:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    // Both connections held in open transactions: a third client's login waits until
    // checkout_timeout, then fails with the server's refusal.
    let short = proxy_with(
        "transaction",
        &format!(
            "[routing]\nread_write_split = false\n\n[pool]\nsize = 10\ncheckout_timeout = \"1s\"\n\n{users}"
        ),
    );
    // (The first proxy's connections count against the limit too: close them, and wait
    // until the server has let them go.)
    drop(p);
    wait_su(
        &format!("SELECT count(*) FROM pg_stat_activity WHERE usename = '{ROLE}'"),
        "0",
        STEP,
    )
    .await;
    let cs = format!(
        "{} connect_timeout=20",
        short.conn_string(ROLE, "limited", APP_DB)
    );
    let a = connect_cs(&cs).await;
    let b = connect_cs(&cs).await;
    let c = connect_cs(&cs).await;
    q(&a, "BEGIN; SELECT 1").await;
    q(&b, "BEGIN; SELECT 1").await;
    let waited = Instant::now();
    let err = match bounded("a third login", short.try_connect(ROLE, "limited", APP_DB)).await {
        Ok(_) => panic!("a third login got a connection beyond the role's limit"),
        Err(e) => e,
    };
    assert!(
        waited.elapsed() >= Duration::from_millis(900),
        "{:?}",
        waited.elapsed()
    );
    assert_eq!(sqlstate(&err), "53300", "{err:?}");
    let db = err.as_db_error().expect("an error from the proxy");
    assert!(
        db.message().contains("too many connections for role"),
        "{}",
        db.message()
    );
    // The state shows: a gauge, and the pool's entry in /status.
    assert_eq!(short.metric("switchyard_pools_server_full").await, 1.0);
    let (_, status) = short.http_get("/status").await;
    assert!(status.contains("\"server_full\":true"), "{status}");
    // A logged-in client's query waits for one of the two as well, and gets it.
    let waiting = tokio::spawn(async move { c.simple_query("SELECT 'waited'").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "a query ran beyond the role's limit"
    );
    q(&b, "COMMIT").await;
    let r = bounded("the waiting query", waiting).await.unwrap();
    assert_eq!(text_rows(r.unwrap())[0][0].as_deref(), Some("waited"));
    q(&a, "COMMIT").await;

    // The limit lifted: the pool grows past two again (the next opening is tried within the
    // back-off, at most 2 s).
    su(&format!("ALTER ROLE {ROLE} CONNECTION LIMIT -1"));
    let mut more = Vec::new();
    for _ in 0..3 {
        let c = connect_cs(&cs).await;
        q(&c, "BEGIN; SELECT 1").await;
        more.push(c);
    }
    let seen = su(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = '{ROLE}'"
    ));
    assert!(seen.trim().parse::<u32>().unwrap() >= 3, "{seen}");
    for c in &more {
        q(c, "COMMIT").await;
    }
}

/// A statement's literals are read under the settings its Parse ran with (a time zone, a date
/// style), as PostgreSQL reads them once: a Parse inside a `SET LOCAL` is not the copy another
/// client with other settings gets, nor is a statement prepared again on a connection after
/// its client changed its settings (the client's own copy, under its new settings: a known
/// limitation); and in session pooling, where settings are not read back, a Parse after a
/// `SET` is analysed under it rather than answered from one analysed before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_are_shared_only_under_the_settings_they_were_parsed_with() {
    const Q: &str = "SELECT ('2024-01-01 00:00'::timestamptz)::text, ('01/02/2003'::date)::text";
    async fn run(c: &Client, st: &tokio_postgres::Statement) -> (String, String) {
        let row = bounded("execute", c.query_one(st, &[])).await.unwrap();
        (row.get(0), row.get(1))
    }
    let utc = ("2024-01-01 00:00:00+00".to_owned(), "2003-01-02".to_owned());
    // One server connection for both clients, and room for two statements on it.
    let p = proxy("transaction", "size = 1\nmax_prepared_statements = 2");
    let a = connect(&p).await;
    let b = connect(&p).await;
    for c in [&a, &b] {
        q(c, "SET timezone = 'UTC'; SET datestyle = 'ISO, MDY'").await;
    }

    q(
        &a,
        "BEGIN; SET LOCAL timezone = 'America/New_York'; SET LOCAL datestyle = 'ISO, DMY'",
    )
    .await;
    let local = bounded("prepare", a.prepare(Q)).await.unwrap();
    assert_eq!(
        run(&a, &local).await,
        ("2024-01-01 00:00:00-05".to_owned(), "2003-02-01".to_owned())
    );
    q(&a, "COMMIT").await;
    q(&b, "BEGIN").await;
    let shared = bounded("prepare", b.prepare(Q)).await.unwrap();
    assert_eq!(run(&b, &shared).await, utc, "B got A's SET LOCAL analysis");
    q(&b, "COMMIT").await;

    // A prepares the text under the same settings as B (one shared statement), a third
    // client's DISCARD ALL drops it from the connection, A changes its time zone and runs
    // it again: prepared again there, under A's settings now, for A alone.
    let mine = bounded("prepare", a.prepare(Q)).await.unwrap();
    assert_eq!(run(&a, &mine).await, utc);
    let c = connect(&p).await;
    q(&c, "DISCARD ALL").await;
    q(&a, "SET timezone = 'America/New_York'").await;
    let (mine_now, _) = run(&a, &mine).await;
    assert!(mine_now.ends_with("-05"), "{mine_now}");
    assert_eq!(
        run(&b, &shared).await,
        utc,
        "B got the copy A prepared again"
    );
    let again = bounded("prepare", b.prepare(Q)).await.unwrap();
    assert_eq!(run(&b, &again).await, utc);

    // Session pooling: the second Parse of the text, after a SET, is analysed under it.
    let p = proxy("session", "");
    let s = connect(&p).await;
    q(&s, "SET timezone = 'UTC'; SET datestyle = 'ISO, MDY'").await;
    let before = bounded("prepare", s.prepare(Q)).await.unwrap();
    assert_eq!(run(&s, &before).await, utc);
    q(
        &s,
        "SET timezone = 'Asia/Tokyo'; SET datestyle = 'ISO, DMY'",
    )
    .await;
    // (Not read back at the next transaction either.)
    q(&s, "SELECT 1").await;
    let after = bounded("prepare", s.prepare(Q)).await.unwrap();
    assert_eq!(
        run(&s, &after).await,
        ("2024-01-01 00:00:00+09".to_owned(), "2003-02-01".to_owned())
    );
    // The first statement keeps what its Parse read, as in PostgreSQL.
    assert_eq!(
        run(&s, &before).await,
        ("2024-01-01 09:00:00+09".to_owned(), "2003-01-02".to_owned())
    );
}

/// After an error in an extended-protocol batch PostgreSQL ignores every message up to the
/// batch's Sync, a simple Query among them too: that Query gets no answer of its own (no
/// ReadyForQuery), and the client gets the error and the Sync's ReadyForQuery, its
/// connection and the pool's going on as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_skips_a_query_sent_inside_its_batch() {
    let p = proxy("transaction", "size = 1");
    let mut a = Raw::app(&p).await;
    parsed(&mut a, "s2", "SELECT 2").await;
    let query = |out: &mut BytesMut, sql: &str| frontend::query(sql, out).unwrap();
    let no_portal = |out: &mut BytesMut| frontend::execute("p1", 0, out).unwrap();
    let mut batches = Vec::new();
    let mut b = BytesMut::new();
    no_portal(&mut b);
    m_parse(&mut b, "s3", "SELECT 1");
    query(&mut b, "SELECT 1");
    m_bind(&mut b, "", "s3", &[]);
    m_sync(&mut b);
    batches.push(("a Bind after it", b, "EZ", 'I'));
    let mut b = BytesMut::new();
    no_portal(&mut b);
    m_parse(&mut b, "s4", "SELECT 1");
    query(&mut b, "SELECT 1");
    m_describe(&mut b, "s4");
    m_sync(&mut b);
    batches.push(("a Describe after it", b, "EZ", 'I'));
    let mut b = BytesMut::new();
    no_portal(&mut b);
    query(&mut b, "SELECT 1");
    m_parse(&mut b, "s2", "SELECT 2");
    m_sync(&mut b);
    batches.push(("a Parse of a name the client has after it", b, "EZ", 'I'));
    let mut b = BytesMut::new();
    m_parse(&mut b, "", "BEGIN READ ONLY");
    m_bind(&mut b, "", "", &[]);
    m_execute(&mut b);
    m_parse(&mut b, "", "SELECT 1/0");
    m_bind(&mut b, "", "", &[]);
    m_execute(&mut b);
    query(&mut b, "SELECT 1");
    m_sync(&mut b);
    // (`1/0` fails at the Bind, where PostgreSQL plans the unnamed statement and folds it.)
    batches.push(("a block begun in the batch", b, "12C1EZ", 'E'));
    for (what, batch, want, status) in batches {
        let r = a.roundtrip(&batch).await;
        assert_eq!(
            (tags(&r), r.last().map_or('?', |(_, b)| b[0] as char)),
            (want.to_string(), status),
            "{what}"
        );
        if status == 'E' {
            assert_eq!(tags(&a.simple("ROLLBACK").await), "CZ");
        }
        // The statements the server skipped were not made; the connection answers, and
        // the pool's only one is free for another client.
        assert_eq!(single(&a.simple("SELECT 5").await, "after"), "5", "{what}");
        let mut other = Raw::app(&p).await;
        assert_eq!(
            single(&other.simple("SELECT 6").await, "other"),
            "6",
            "{what}"
        );
    }
    parsed(&mut a, "s3", "SELECT 3").await;
    parsed(&mut a, "s4", "SELECT 4").await;
    // In a block the server failed, a named Parse of several statements is refused for being
    // several (42601), and an empty one is taken, as PostgreSQL answers them; one statement
    // that does not end the block gets 25P02.
    assert_eq!(tags(&a.simple("BEGIN; SELECT 1/0").await), "CEZ");
    let r = a.roundtrip(&parse_sync("m", "SELECT 1; SELECT 2")).await;
    assert_eq!(error_code(&r).as_deref(), Some("42601"), "{}", tags(&r));
    assert_eq!(tags(&a.roundtrip(&parse_sync("e", "")).await), "1Z");
    let r = a.roundtrip(&parse_sync("o", "SELECT 1")).await;
    assert_eq!(error_code(&r).as_deref(), Some("25P02"), "{}", tags(&r));
    assert_eq!(tags(&a.simple("ROLLBACK").await), "CZ");
}

/// A constant that the output of `bytea` or `float8` makes text is folded into the plan the
/// server caches for a statement, under the `bytea_output` and `extra_float_digits` of its
/// first execution (their output functions are immutable): clients whose settings differ
/// there do not share the statement, each gets its own formatting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constants_folded_under_output_settings_are_not_shared() {
    const Q: &str = "SELECT decode('0102', 'hex')::text, (0.1::float8 + 0.2::float8)::text";
    async fn run(c: &Client, st: &tokio_postgres::Statement) -> (String, String) {
        let row = bounded("execute", c.query_one(st, &[])).await.unwrap();
        (row.get(0), row.get(1))
    }
    // One server connection for both clients.
    let p = proxy("transaction", "size = 1");
    let a = connect(&p).await;
    let b = connect(&p).await;
    q(&a, "SET bytea_output = escape; SET extra_float_digits = 0").await;
    let escaped = ("\\001\\002".to_owned(), "0.3".to_owned());
    let hex = ("\\x0102".to_owned(), "0.30000000000000004".to_owned());
    let st = bounded("prepare", a.prepare(Q)).await.unwrap();
    assert_eq!(run(&a, &st).await, escaped);
    let st = bounded("prepare", b.prepare(Q)).await.unwrap();
    assert_eq!(run(&b, &st).await, hex, "B got A's folded constants");
    // Each way round.
    let c = connect(&p).await;
    q(&c, "SET bytea_output = escape; SET extra_float_digits = 0").await;
    let st = bounded("prepare", c.prepare(&format!("{Q} /* c */")))
        .await
        .unwrap();
    let d = connect(&p).await;
    let std_ = bounded("prepare", d.prepare(&format!("{Q} /* c */")))
        .await
        .unwrap();
    assert_eq!(run(&d, &std_).await, hex);
    assert_eq!(run(&c, &st).await, escaped, "C got D's folded constants");
}

/// Statement names are told apart by their first 63 bytes, as PostgreSQL's table of prepared
/// statements compares them: a longer name that agrees with another there is that statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_names_are_compared_by_their_first_63_bytes() {
    let p = proxy("transaction", "size = 1");
    let mut x = Raw::app(&p).await;
    let long = "a".repeat(70);
    let same = format!("{}{}", "a".repeat(63), "b".repeat(7));
    parsed(&mut x, &long, "SELECT 1").await;
    let r = x.roundtrip(&parse_sync(&same, "SELECT 2")).await;
    assert_eq!(error_code(&r).as_deref(), Some("42P05"), "{}", tags(&r));
    assert_eq!(
        single(&x.roundtrip(&bind_exec(&same, &[])).await, "same"),
        "1"
    );
    assert_eq!(
        single(&x.roundtrip(&bind_exec(&"a".repeat(63), &[])).await, "63"),
        "1"
    );
    let mut b = BytesMut::new();
    m_close(&mut b, &same);
    m_sync(&mut b);
    assert_eq!(tags(&x.roundtrip(&b).await), "3Z");
    let r = x.roundtrip(&bind_exec(&long, &[])).await;
    assert_eq!(error_code(&r).as_deref(), Some("26000"), "{}", tags(&r));
    // SQL's EXECUTE and DEALLOCATE name it as the server cuts identifiers: 63 bytes.
    parsed(&mut x, &"c".repeat(64), "SELECT 3").await;
    let r = x.simple(&format!("EXECUTE {}", "c".repeat(63))).await;
    assert_eq!(single(&r, "EXECUTE"), "3");
    let r = x.simple(&format!("DEALLOCATE {}", "c".repeat(70))).await;
    assert_eq!(error_code(&r), None, "{}", tags(&r));
    let r = x.roundtrip(&bind_exec(&"c".repeat(64), &[])).await;
    assert_eq!(error_code(&r).as_deref(), Some("26000"), "{}", tags(&r));
}
