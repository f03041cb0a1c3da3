//! Raw protocol helpers: a client that speaks the wire protocol itself, so tests control every
//! byte and see every message (startup with any protocol version, SCRAM/md5/cleartext, framing
//! with timeouts). Shared by the startup, authentication and bad-input tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::{backend, frontend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Default bound of every network wait.
pub const IO: Duration = Duration::from_secs(10);
pub const PROTO_3_0: i32 = 3 << 16;

/// One backend message: tag and body (after the length).
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    pub tag: u8,
    pub body: Vec<u8>,
}

impl Frame {
    /// Fields of an ErrorResponse / NoticeResponse.
    pub fn fields(&self) -> BTreeMap<char, String> {
        let mut out = BTreeMap::new();
        let mut b = &self.body[..];
        while let Some((&f, rest)) = b.split_first() {
            if f == 0 {
                break;
            }
            let Some(nul) = rest.iter().position(|&c| c == 0) else {
                break;
            };
            out.insert(
                f as char,
                String::from_utf8_lossy(&rest[..nul]).into_owned(),
            );
            b = &rest[nul + 1..];
        }
        out
    }
    pub fn code(&self) -> String {
        self.fields().get(&'C').cloned().unwrap_or_default()
    }
    pub fn severity(&self) -> String {
        let f = self.fields();
        f.get(&'V').or(f.get(&'S')).cloned().unwrap_or_default()
    }
    pub fn message(&self) -> String {
        self.fields().get(&'M').cloned().unwrap_or_default()
    }
    pub fn is_error(&self) -> bool {
        self.tag == b'E'
    }
    /// The whole message as sent (tag, length, body), for `backend::Message::parse`.
    pub fn wire(&self) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_u8(self.tag);
        b.put_i32(self.body.len() as i32 + 4);
        b.extend_from_slice(&self.body);
        b
    }
    pub fn parse(&self) -> backend::Message {
        match backend::Message::parse(&mut self.wire()) {
            Ok(Some(m)) => m,
            Ok(None) => panic!("incomplete message {self:?}"),
            Err(e) => panic!("unparsable message {self:?}: {e}"),
        }
    }
    /// DataRow columns.
    pub fn data_row(&self) -> Vec<Option<Vec<u8>>> {
        assert_eq!(self.tag, b'D', "not a DataRow: {self:?}");
        let b = &self.body;
        let n = i16::from_be_bytes([b[0], b[1]]) as usize;
        let mut at = 2;
        let mut cols = Vec::new();
        for _ in 0..n {
            let len = i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
            at += 4;
            if len < 0 {
                cols.push(None);
            } else {
                cols.push(Some(b[at..at + len as usize].to_vec()));
                at += len as usize;
            }
        }
        cols
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.tag {
            b'E' | b'N' => write!(f, "{}{:?}", self.tag as char, self.fields()),
            _ => write!(
                f,
                "{}({} bytes: {:?})",
                self.tag as char,
                self.body.len(),
                String::from_utf8_lossy(&self.body[..self.body.len().min(80)])
            ),
        }
    }
}

/// What a bounded read found.
#[derive(Debug)]
pub enum Next {
    Frame(Frame),
    /// EOF or a connection error (reset).
    Closed(String),
    Timeout,
}

pub struct Raw {
    pub s: TcpStream,
    pub buf: BytesMut,
}

impl Raw {
    pub async fn connect(addr: &str) -> Raw {
        let s = tokio::time::timeout(IO, TcpStream::connect(addr))
            .await
            .unwrap_or_else(|_| panic!("connect to {addr} timed out"))
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        s.set_nodelay(true).ok();
        Raw {
            s,
            buf: BytesMut::new(),
        }
    }

    pub async fn send(&mut self, b: &[u8]) -> std::io::Result<()> {
        match tokio::time::timeout(IO, self.s.write_all(b)).await {
            Ok(r) => r,
            Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
        }
    }

    /// The next message, EOF, or a timeout after `within`.
    pub async fn next(&mut self, within: Duration) -> Next {
        let deadline = Instant::now() + within;
        loop {
            if self.buf.len() >= 5 {
                let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
                assert!(
                    (4..=(64 << 20)).contains(&len),
                    "the proxy sent a message with length {len} (tag {:?})",
                    self.buf[0] as char
                );
                let total = len as usize + 1;
                if self.buf.len() >= total {
                    let m = self.buf.split_to(total);
                    return Next::Frame(Frame {
                        tag: m[0],
                        body: m[5..].to_vec(),
                    });
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.s.read_buf(&mut self.buf)).await {
                Err(_) => return Next::Timeout,
                Ok(Ok(0)) => return Next::Closed("EOF".into()),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Next::Closed(e.to_string()),
            }
        }
    }

    /// The next message; panics on EOF or timeout.
    pub async fn frame(&mut self) -> Frame {
        match self.next(IO).await {
            Next::Frame(f) => f,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// Exactly one raw byte (SSLRequest answers), or `None` on timeout/EOF.
    pub async fn byte(&mut self, within: Duration) -> Option<u8> {
        if self.buf.is_empty() {
            let mut one = [0u8; 1];
            match tokio::time::timeout(within, self.s.read(&mut one)).await {
                Ok(Ok(1)) => return Some(one[0]),
                _ => return None,
            }
        }
        let b = self.buf[0];
        let _ = self.buf.split_to(1);
        Some(b)
    }

    /// Reads until the connection closes (panics if it stays open past `within`);
    /// returns the messages that came first.
    pub async fn expect_closed(&mut self, within: Duration, what: &str) -> Vec<Frame> {
        let deadline = Instant::now() + within;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Next::Frame(f) => got.push(f),
                Next::Closed(_) => return got,
                Next::Timeout => panic!(
                    "{what}: connection still open {within:?} later (messages so far: {got:?}, \
                     {} unparsed bytes)",
                    self.buf.len()
                ),
            }
        }
    }

    /// Runs a simple query and reads up to ReadyForQuery.
    pub async fn query(&mut self, sql: &str) -> QueryResult {
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out).unwrap();
        self.send(&out)
            .await
            .unwrap_or_else(|e| panic!("sending {sql:?}: {e}"));
        self.read_result(sql).await
    }

    /// Runs a simple query given as bytes (text in another client encoding) and reads up to
    /// ReadyForQuery.
    pub async fn query_bytes(&mut self, sql: &[u8]) -> QueryResult {
        let mut out = BytesMut::new();
        out.put_u8(b'Q');
        out.put_i32((4 + sql.len() + 1) as i32);
        out.put_slice(sql);
        out.put_u8(0);
        let what = String::from_utf8_lossy(sql).into_owned();
        self.send(&out)
            .await
            .unwrap_or_else(|e| panic!("sending {what:?}: {e}"));
        let r = self.read_result(&what).await;
        if let Some(e) = &r.error {
            panic!("{what:?} failed: {e:?}");
        }
        r
    }

    pub async fn read_result(&mut self, what: &str) -> QueryResult {
        let mut r = QueryResult::default();
        loop {
            let f = match self.next(IO).await {
                Next::Frame(f) => f,
                other => panic!("{what:?}: expected a response, got {other:?}"),
            };
            match f.tag {
                b'D' => r.rows.push(f.data_row()),
                b'E' if r.error.is_none() => r.error = Some(f),
                b'S' => {
                    if let backend::Message::ParameterStatus(p) = f.parse() {
                        r.params.push((
                            p.name().unwrap().to_string(),
                            p.value().unwrap().to_string(),
                        ));
                    }
                }
                b'C' => r
                    .tags
                    .push(String::from_utf8_lossy(&f.body[..f.body.len() - 1]).into_owned()),
                b'Z' => {
                    r.status = f.body[0];
                    return r;
                }
                _ => {}
            }
        }
    }

    /// Like `query` but panics on an error response.
    pub async fn query_ok(&mut self, sql: &str) -> QueryResult {
        let r = self.query(sql).await;
        if let Some(e) = &r.error {
            panic!("{sql:?} failed: {e:?}");
        }
        r
    }
}

#[derive(Debug, Default)]
pub struct QueryResult {
    pub rows: Vec<Vec<Option<Vec<u8>>>>,
    pub error: Option<Frame>,
    /// ParameterStatus messages that came with the response.
    pub params: Vec<(String, String)>,
    pub tags: Vec<String>,
    pub status: u8,
}

impl QueryResult {
    /// First column of the first row as (lossy) text.
    pub fn scalar(&self) -> String {
        let v = self.rows[0][0].as_ref().expect("NULL");
        String::from_utf8_lossy(v).into_owned()
    }
}

/// A StartupMessage with any protocol version.
/// Appends Parse, Bind and Execute of `sql` as the unnamed statement and portal (no
/// parameters, results in text): one statement of an extended-protocol batch.
pub fn parse_bind_execute(sql: &str, out: &mut BytesMut) {
    parse_bind_execute_as("", sql, out);
}

/// Parse of `sql` as the statement `name`, Bind of it to the unnamed portal, Execute.
pub fn parse_bind_execute_as(name: &str, sql: &str, out: &mut BytesMut) {
    frontend::parse(name, sql, std::iter::empty(), out).unwrap();
    frontend::bind(
        "",
        name,
        std::iter::empty(),
        std::iter::empty::<i32>(),
        |_: i32,
         _: &mut BytesMut|
         -> Result<postgres_protocol::IsNull, Box<dyn std::error::Error + Sync + Send>> {
            unreachable!()
        },
        std::iter::empty(),
        out,
    )
    .map_err(|_| ())
    .unwrap();
    frontend::execute("", 0, out).unwrap();
}

pub fn startup_packet(version: i32, params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&version.to_be_bytes());
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut p = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    p.extend_from_slice(&body);
    p
}

pub fn ssl_request() -> Vec<u8> {
    let mut b = BytesMut::new();
    frontend::ssl_request(&mut b);
    b.to_vec()
}

pub fn gssenc_request() -> Vec<u8> {
    let mut p = 8i32.to_be_bytes().to_vec();
    p.extend_from_slice(&80_877_104i32.to_be_bytes());
    p
}

/// A logged-in connection.
pub struct Session {
    pub raw: Raw,
    /// ParameterStatus values of the greeting.
    pub params: BTreeMap<String, String>,
    pub key: Option<(i32, i32)>,
    /// NegotiateProtocolVersion messages.
    pub negotiate: Vec<Frame>,
    /// Authentication request codes seen (10 SASL, 5 md5, 3 cleartext, 0 ok...).
    pub auth: Vec<i32>,
    /// NoticeResponse messages between AuthenticationOk and ReadyForQuery.
    pub notices: Vec<Frame>,
}

/// A refused login: the ErrorResponse and the connection (to check it closes).
pub struct Refused {
    pub error: Frame,
    pub raw: Raw,
    pub auth: Vec<i32>,
    pub negotiate: Vec<Frame>,
}

pub type LoginResult = Result<Session, Refused>;

/// Sends a StartupMessage (`params` must include `user`) and completes authentication
/// with `password` (SCRAM, md5 or cleartext as asked), then reads up to ReadyForQuery.
pub async fn login(
    addr: &str,
    version: i32,
    params: &[(&str, &str)],
    password: Option<&str>,
) -> LoginResult {
    let raw = Raw::connect(addr).await;
    login_on(raw, version, params, password).await
}

/// Like [`login`] on an already open connection (after an SSLRequest, say).
pub async fn login_on(
    mut raw: Raw,
    version: i32,
    params: &[(&str, &str)],
    password: Option<&str>,
) -> LoginResult {
    let user = params
        .iter()
        .find(|(k, _)| *k == "user")
        .map(|(_, v)| *v)
        .unwrap_or("");
    raw.send(&startup_packet(version, params))
        .await
        .expect("sending startup");
    let mut auth = Vec::new();
    let mut negotiate = Vec::new();
    let mut scram: Option<ScramSha256> = None;
    // Authentication.
    loop {
        let f = raw.frame().await;
        match f.tag {
            b'v' => {
                negotiate.push(f);
                continue;
            }
            b'N' => continue,
            b'E' => {
                return Err(Refused {
                    error: f,
                    raw,
                    auth,
                    negotiate,
                })
            }
            b'R' => {}
            _ => panic!("unexpected message during authentication: {f:?}"),
        }
        let code = i32::from_be_bytes([f.body[0], f.body[1], f.body[2], f.body[3]]);
        auth.push(code);
        let pw = || {
            password
                .expect("the server asked for a password")
                .as_bytes()
        };
        let mut out = BytesMut::new();
        match f.parse() {
            backend::Message::AuthenticationOk => break,
            backend::Message::AuthenticationCleartextPassword => {
                frontend::password_message(pw(), &mut out).unwrap()
            }
            backend::Message::AuthenticationMd5Password(b) => {
                let hash =
                    postgres_protocol::authentication::md5_hash(user.as_bytes(), pw(), b.salt());
                frontend::password_message(hash.as_bytes(), &mut out).unwrap();
            }
            backend::Message::AuthenticationSasl(_) => {
                let mechs: Vec<&[u8]> = f.body[4..]
                    .split(|&b| b == 0)
                    .filter(|m| !m.is_empty())
                    .collect();
                assert!(
                    mechs.contains(&&b"SCRAM-SHA-256"[..]),
                    "SASL mechanisms offered: {mechs:?}"
                );
                let s = ScramSha256::new(pw(), ChannelBinding::unsupported());
                frontend::sasl_initial_response("SCRAM-SHA-256", s.message(), &mut out).unwrap();
                scram = Some(s);
            }
            backend::Message::AuthenticationSaslContinue(b) => {
                let s = scram.as_mut().expect("SASL continue before SASL start");
                s.update(b.data()).expect("server-first-message");
                frontend::sasl_response(s.message(), &mut out).unwrap();
            }
            backend::Message::AuthenticationSaslFinal(b) => {
                let s = scram.as_mut().expect("SASL final before SASL start");
                s.finish(b.data())
                    .expect("the server's SCRAM signature must verify");
                continue;
            }
            _ => panic!("unsupported authentication request {code}"),
        }
        raw.send(&out).await.expect("sending auth response");
    }
    // Greeting.
    let mut params = BTreeMap::new();
    let mut key = None;
    let mut notices = Vec::new();
    loop {
        let f = raw.frame().await;
        match f.tag {
            b'S' => {
                if let backend::Message::ParameterStatus(p) = f.parse() {
                    params.insert(
                        p.name().unwrap().to_string(),
                        p.value().unwrap().to_string(),
                    );
                }
            }
            b'K' => {
                if let backend::Message::BackendKeyData(k) = f.parse() {
                    key = Some((k.process_id(), k.secret_key()));
                }
            }
            b'Z' => {
                assert_eq!(f.body, b"I", "ReadyForQuery after login must be idle");
                break;
            }
            b'N' => notices.push(f),
            b'v' => negotiate.push(f),
            b'E' => {
                return Err(Refused {
                    error: f,
                    raw,
                    auth,
                    negotiate,
                })
            }
            _ => panic!("unexpected message after AuthenticationOk: {f:?}"),
        }
    }
    Ok(Session {
        raw,
        params,
        key,
        negotiate,
        auth,
        notices,
    })
}

/// Logs in as the app user to its database (with `extra` startup parameters); panics when
/// refused or after [`IO`].
pub async fn login_app(addr: &str, extra: &[(&str, &str)]) -> Session {
    use switchyard::localpg::{APP_DB, APP_PASSWORD, APP_USER};
    let mut params = vec![("user", APP_USER), ("database", APP_DB)];
    params.extend_from_slice(extra);
    let login = login(addr, PROTO_3_0, &params, Some(APP_PASSWORD));
    match tokio::time::timeout(IO, login).await {
        Ok(r) => ok(r, "app login"),
        Err(_) => panic!("app login to {addr}: no answer within {IO:?}"),
    }
}

/// Unwraps a successful login.
pub fn ok(r: LoginResult, what: &str) -> Session {
    match r {
        Ok(s) => s,
        Err(r) => panic!("{what}: login refused: {:?}", r.error),
    }
}

/// Unwraps a refused login.
pub fn refused(r: LoginResult, what: &str) -> Refused {
    match r {
        Ok(s) => panic!(
            "{what}: login should have been refused, but succeeded (params {:?})",
            s.params
        ),
        Err(r) => r,
    }
}
