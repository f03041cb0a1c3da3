//! The admin console: a client that logs in to the `[admin]` database talks to switchyard
//! itself, in the simple or the extended query protocol, and no server is involved. Commands
//! are in [`super::commands`], what they list in [`super::views`].

use std::collections::HashMap;

use bytes::{BufMut, BytesMut};

use super::commands::{self, Command, CommandError};
use super::table::{self, Value};
use super::views;
use crate::app::App;
use crate::config::AdminAccess;
use crate::net::{self, Stream};
use crate::protocol::frame::{read_cstr, read_i16, read_i32};
use crate::protocol::{encode, tag, Header, TxnStatus};
use crate::session::cancel::Registration;
use crate::session::Fatal;

/// The largest message the console reads (its commands are one line).
const MAX_MESSAGE: usize = 1 << 20;

/// Prepared statements and portals one console connection may keep.
const MAX_NAMED: usize = 1000;

/// The PostgreSQL version the console reports (drivers check it), before its own name.
const REPORTED_VERSION: &str = "15.0";

/// One console connection.
pub struct Console<'a> {
    app: &'a App,
    access: AdminAccess,
    /// Prepared statements by name.
    statements: HashMap<Vec<u8>, Command>,
    /// Bound portals by name: the command and each column's format (true: binary).
    portals: HashMap<Vec<u8>, (Command, Vec<bool>)>,
    /// An extended-protocol message failed: the rest is discarded until Sync.
    skipping: bool,
    out: BytesMut,
}

/// Serves a console client that logged in as `user` with `access`, from its greeting until it
/// leaves (or the proxy shuts down, or an admin `KILL`s it).
pub async fn run(
    app: &App,
    stream: &mut Stream,
    mut buf: BytesMut,
    user: &str,
    application_name: &str,
    access: AdminAccess,
    reg: &Registration,
) -> Result<(), Fatal> {
    let mut c = Console {
        app,
        access,
        statements: HashMap::new(),
        portals: HashMap::new(),
        skipping: false,
        out: BytesMut::new(),
    };
    greeting(&mut c.out, user, application_name, reg.pid, reg.secret);
    loop {
        if !c.out.is_empty() && !has_message(&buf) {
            net::send_all(stream, &c.out).await.map_err(Fatal::Io)?;
            c.out.clear();
        }
        let (t, frame) = tokio::select! {
            r = net::read_message(stream, &mut buf, MAX_MESSAGE) => r.map_err(|e| match e.kind() {
                std::io::ErrorKind::InvalidData => Fatal::protocol(e.to_string()),
                _ => Fatal::Io(e),
            })?,
            _ = reg.slot.kill.cancelled() => return Err(Fatal::new(
                "57P01",
                "terminating connection due to administrator command",
            )),
            _ = app.shutdown.cancelled() => return Err(Fatal::new(
                "57P01",
                "terminating connection because switchyard is shutting down",
            )),
        };
        let body = &frame[crate::protocol::HEADER_LEN..];
        if c.skipping && t != tag::SYNC && t != tag::TERMINATE {
            continue;
        }
        match t {
            tag::QUERY => c.query(body).await,
            tag::PARSE => c.step(|c| c.parse(body)),
            tag::BIND => c.step(|c| c.bind(body)),
            tag::DESCRIBE => c.step(|c| c.describe(body)),
            tag::EXECUTE => {
                if let Err(e) = c.execute(body).await {
                    c.fail(&e);
                }
            }
            tag::CLOSE => c.step(|c| c.close(body)),
            tag::SYNC => {
                c.skipping = false;
                c.portals.clear();
                encode::ready_for_query(&mut c.out, TxnStatus::Idle);
            }
            tag::FLUSH => {}
            tag::FUNCTION_CALL => {
                c.error(&CommandError::new(
                    "0A000",
                    "the admin console has no functions to call",
                ));
                encode::ready_for_query(&mut c.out, TxnStatus::Idle);
            }
            // Outside COPY these are ignored, as PostgreSQL ignores them.
            tag::COPY_DATA | tag::COPY_DONE | tag::COPY_FAIL => {}
            tag::TERMINATE => return Ok(()),
            other => {
                return Err(Fatal::protocol(format!(
                    "invalid frontend message type {other}"
                )))
            }
        }
    }
}

/// Whether `buf` holds a whole message already (then answers wait for it: one write).
fn has_message(buf: &[u8]) -> bool {
    matches!(Header::peek(buf, usize::MAX), Ok(Some(h)) if buf.len() >= h.frame_len)
}

/// ParameterStatus values a driver needs, BackendKeyData, ReadyForQuery.
fn greeting(out: &mut BytesMut, user: &str, application_name: &str, pid: i32, secret: i32) {
    let version = format!("{REPORTED_VERSION} ({})", views::version());
    let params = [
        ("server_version", version.as_str()),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("IntervalStyle", "postgres"),
        ("TimeZone", "UTC"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("is_superuser", "off"),
        ("session_authorization", user),
        ("application_name", application_name),
    ];
    for (k, v) in params {
        encode::parameter_status(out, k, v);
    }
    encode::backend_key_data(out, pid, secret);
    encode::ready_for_query(out, TxnStatus::Idle);
}

/// What a command produced.
enum Outcome {
    /// Rows in the command's columns.
    Rows(Vec<Vec<Value>>),
    /// Done, with a notice for the client.
    Done(Option<Notice>),
}

/// A NoticeResponse: severity, SQLSTATE, message.
type Notice = (&'static str, &'static str, String);

/// A notice of severity NOTICE.
fn notice(message: impl Into<String>) -> Option<Notice> {
    Some(("NOTICE", "00000", message.into()))
}

impl Console<'_> {
    /// A simple Query: every statement in turn, stopping at the first error.
    async fn query(&mut self, body: &[u8]) {
        self.portals.clear();
        let text = body.strip_suffix(&[0]).unwrap_or(body);
        let statements = match std::str::from_utf8(text) {
            Ok(t) => commands::statements(t),
            Err(_) => {
                self.error(&CommandError::new(
                    "22021",
                    "invalid byte sequence for encoding \"UTF8\"",
                ));
                encode::ready_for_query(&mut self.out, TxnStatus::Idle);
                return;
            }
        };
        if statements.is_empty() {
            encode::empty(&mut self.out, tag::EMPTY_QUERY);
        }
        for s in &statements {
            let run = match commands::parse(s) {
                Ok(cmd) => self.run(cmd).await.map(|o| (cmd, o)),
                Err(e) => Err(e),
            };
            match run {
                Ok((cmd, outcome)) => {
                    if let (Outcome::Rows(_), Some(columns)) = (&outcome, cmd.columns()) {
                        table::row_description(&mut self.out, columns, &[]);
                    }
                    self.complete(cmd, outcome, &[]);
                }
                Err(e) => {
                    self.error(&e);
                    break;
                }
            }
        }
        encode::ready_for_query(&mut self.out, TxnStatus::Idle);
    }

    /// Runs an extended-protocol step; a failure is answered and starts skipping until Sync.
    fn step(&mut self, f: impl FnOnce(&mut Self) -> Result<(), CommandError>) {
        if let Err(e) = f(self) {
            self.fail(&e);
        }
    }

    fn fail(&mut self, e: &CommandError) {
        self.error(e);
        self.skipping = true;
    }

    fn error(&mut self, e: &CommandError) {
        self.app.metrics.error(e.code);
        encode::error(&mut self.out, "ERROR", e.code, &e.message);
    }

    /// Parse: the statement is parsed now and run at each Execute of a portal bound to it.
    fn parse(&mut self, body: &[u8]) -> Result<(), CommandError> {
        let malformed = || CommandError::new("08P01", "invalid Parse message");
        let (name, rest) = read_cstr(body).ok_or_else(malformed)?;
        let (query, _types) = read_cstr(rest).ok_or_else(malformed)?;
        let text = std::str::from_utf8(query).map_err(|_| {
            CommandError::new("22021", "invalid byte sequence for encoding \"UTF8\"")
        })?;
        let cmd = match commands::statements(text).as_slice() {
            [] => Command::Empty,
            [one] => commands::parse(one)?,
            _ => {
                return Err(CommandError::new(
                    "42601",
                    "cannot insert multiple commands into a prepared statement",
                ))
            }
        };
        if !name.is_empty() {
            if self.statements.contains_key(name) {
                return Err(CommandError::new(
                    "42P05",
                    format!(
                        "prepared statement \"{}\" already exists",
                        String::from_utf8_lossy(name)
                    ),
                ));
            }
            if self.statements.len() >= MAX_NAMED {
                return Err(too_many());
            }
        }
        self.statements.insert(name.to_vec(), cmd);
        encode::empty(&mut self.out, tag::PARSE_COMPLETE);
        Ok(())
    }

    fn bind(&mut self, body: &[u8]) -> Result<(), CommandError> {
        let malformed = || CommandError::new("08P01", "invalid Bind message");
        let (portal, rest) = read_cstr(body).ok_or_else(malformed)?;
        let (statement, rest) = read_cstr(rest).ok_or_else(malformed)?;
        let cmd = *self
            .statements
            .get(statement)
            .ok_or_else(|| no_statement(statement))?;
        let (params, result_formats) = bind_shape(rest).ok_or_else(malformed)?;
        if params > 0 {
            return Err(CommandError::new(
                "08P01",
                format!(
                    "bind message supplies {params} parameters, but prepared statement \"{}\" requires 0",
                    String::from_utf8_lossy(statement)
                ),
            ));
        }
        let columns = cmd.columns().map_or(0, <[_]>::len);
        let formats =
            table::formats(&result_formats, columns).map_err(|m| CommandError::new("08P01", m))?;
        if !portal.is_empty() && self.portals.len() >= MAX_NAMED {
            return Err(too_many());
        }
        self.portals.insert(portal.to_vec(), (cmd, formats));
        encode::empty(&mut self.out, tag::BIND_COMPLETE);
        Ok(())
    }

    fn describe(&mut self, body: &[u8]) -> Result<(), CommandError> {
        let (&kind, name) = body
            .split_first()
            .ok_or_else(|| CommandError::new("08P01", "invalid Describe message"))?;
        let name = name.strip_suffix(&[0]).unwrap_or(name);
        let (cmd, formats) = match kind {
            b'S' => {
                let cmd = *self
                    .statements
                    .get(name)
                    .ok_or_else(|| no_statement(name))?;
                // No parameters, then the columns in text format.
                encode::message(&mut self.out, tag::PARAMETER_DESCRIPTION, |b| b.put_i16(0));
                (cmd, Vec::new())
            }
            b'P' => self
                .portals
                .get(name)
                .cloned()
                .ok_or_else(|| no_portal(name))?,
            other => {
                return Err(CommandError::new(
                    "08P01",
                    format!("invalid DESCRIBE message subtype {other}"),
                ))
            }
        };
        match cmd.columns() {
            Some(columns) => table::row_description(&mut self.out, columns, &formats),
            None => encode::empty(&mut self.out, tag::NO_DATA),
        }
        Ok(())
    }

    /// Execute: all rows at once (the console's results are small; a row limit is ignored).
    async fn execute(&mut self, body: &[u8]) -> Result<(), CommandError> {
        let (name, _max_rows) = read_cstr(body)
            .and_then(|(n, r)| Some((n, read_i32(r)?.0)))
            .ok_or_else(|| CommandError::new("08P01", "invalid Execute message"))?;
        let (cmd, formats) = self
            .portals
            .get(name)
            .cloned()
            .ok_or_else(|| no_portal(name))?;
        let outcome = self.run(cmd).await?;
        self.complete(cmd, outcome, &formats);
        Ok(())
    }

    fn close(&mut self, body: &[u8]) -> Result<(), CommandError> {
        let (&kind, name) = body
            .split_first()
            .ok_or_else(|| CommandError::new("08P01", "invalid Close message"))?;
        let name = name.strip_suffix(&[0]).unwrap_or(name);
        // Closing what does not exist is not an error.
        match kind {
            b'S' => drop(self.statements.remove(name)),
            b'P' => drop(self.portals.remove(name)),
            other => {
                return Err(CommandError::new(
                    "08P01",
                    format!("invalid CLOSE message subtype {other}"),
                ))
            }
        }
        encode::empty(&mut self.out, tag::CLOSE_COMPLETE);
        Ok(())
    }

    /// Rows (without their description) and CommandComplete, or EmptyQueryResponse.
    fn complete(&mut self, cmd: Command, outcome: Outcome, formats: &[bool]) {
        match outcome {
            Outcome::Rows(rows) => {
                let columns = cmd.columns().unwrap_or(&[]);
                for row in &rows {
                    table::data_row(&mut self.out, columns, row, formats);
                }
                encode::command_complete(&mut self.out, "SHOW");
            }
            Outcome::Done(notice) => {
                if let Some((severity, code, n)) = notice {
                    encode::error_fields(&mut self.out, tag::NOTICE_RESPONSE, severity, code, &n);
                }
                if cmd == Command::Empty {
                    encode::empty(&mut self.out, tag::EMPTY_QUERY);
                } else {
                    encode::command_complete(&mut self.out, cmd.tag());
                }
            }
        }
    }

    /// Carries a command out, if this user may.
    async fn run(&mut self, cmd: Command) -> Result<Outcome, CommandError> {
        if self.access == AdminAccess::Stats && !cmd.only_looks() {
            return Err(CommandError::new(
                "42501",
                format!(
                    "permission denied: {} is for the users in [admin] users",
                    cmd.tag()
                ),
            ));
        }
        match cmd {
            Command::Show(show) => Ok(Outcome::Rows(views::rows(self.app, show))),
            Command::Reload => match self.app.reloads.request().await {
                Ok(changes) => Ok(Outcome::Done(notice(format!(
                    "configuration reloaded: {changes} change(s)"
                )))),
                Err(e) => Err(CommandError::new(
                    "F0000",
                    format!("reload rejected, the previous configuration stays: {e}"),
                )),
            },
            Command::Kill(pid) => {
                if self.app.cancels.terminate(pid, "", true) {
                    tracing::info!(pid, "client ended from the admin console");
                    Ok(Outcome::Done(None))
                } else {
                    Err(CommandError::new(
                        "42704",
                        format!("no client has process id {pid}"),
                    ))
                }
            }
            Command::Pause => Ok(Outcome::Done(self.pause().await)),
            Command::Resume => {
                let changed = self.app.pause.set(false);
                self.app.metrics.paused.set(0);
                if changed {
                    tracing::warn!("resumed from the admin console");
                }
                Ok(Outcome::Done(if changed {
                    None
                } else {
                    notice("not paused")
                }))
            }
            Command::Shutdown => {
                tracing::info!("SHUTDOWN from the admin console: draining");
                self.app.begin_shutdown();
                Ok(Outcome::Done(None))
            }
            Command::Set | Command::Empty => Ok(Outcome::Done(None)),
        }
    }

    /// Holds new transactions, then waits (up to `shutdown_timeout`) until no client is in
    /// one. Clients that keep their server connection between transactions (session pooling,
    /// pinned) are not waited for. Returns a notice when some transactions are still open.
    async fn pause(&self) -> Option<Notice> {
        let app = self.app;
        if !app.pause.set(true) {
            return notice("already paused");
        }
        app.metrics.paused.set(1);
        tracing::warn!("paused from the admin console: new transactions wait for RESUME");
        let grace = app.config.load().config.shutdown_timeout;
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let open: Vec<i32> = app
                .cancels
                .clients()
                .into_iter()
                .filter(|c| c.target.as_ref().is_some_and(|t| !t.held))
                .map(|c| c.pid)
                .collect();
            if open.is_empty() {
                return None;
            }
            if tokio::time::Instant::now() >= deadline || app.shutting_down() {
                let pids: Vec<String> = open.iter().map(i32::to_string).collect();
                tracing::warn!(clients = ?open, "PAUSE: transactions still open after the grace period");
                return Some(("WARNING", "01000", format!(
                    "paused, but {} client(s) still in a transaction after {grace:?} (process ids {}): \
                     their transactions go on, new ones wait for RESUME",
                    open.len(),
                    pids.join(", ")
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

/// The parameter count and result format codes of a Bind message after its two names.
fn bind_shape(rest: &[u8]) -> Option<(usize, Vec<i16>)> {
    let (n, mut b) = read_i16(rest)?;
    for _ in 0..n.max(0) {
        b = read_i16(b)?.1;
    }
    let (params, mut b) = read_i16(b)?;
    for _ in 0..params.max(0) {
        let (len, r) = read_i32(b)?;
        b = r.get(usize::try_from(len).unwrap_or(0)..)?;
    }
    let (n, mut b) = read_i16(b)?;
    let mut formats = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n.max(0) {
        let (f, r) = read_i16(b)?;
        formats.push(f);
        b = r;
    }
    Some((params.max(0) as usize, formats))
}

fn no_statement(name: &[u8]) -> CommandError {
    CommandError::new(
        "26000",
        format!(
            "prepared statement \"{}\" does not exist",
            String::from_utf8_lossy(name)
        ),
    )
}

fn no_portal(name: &[u8]) -> CommandError {
    CommandError::new(
        "34000",
        format!(
            "portal \"{}\" does not exist",
            String::from_utf8_lossy(name)
        ),
    )
}

fn too_many() -> CommandError {
    CommandError::new(
        "53400",
        format!("the admin console keeps at most {MAX_NAMED} prepared statements and portals"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_shape_reads_parameters_and_result_formats() {
        // No parameter formats, no parameters, one result format (binary).
        assert_eq!(bind_shape(b"\0\0\0\0\0\x01\0\x01"), Some((0, vec![1])));
        // One parameter format, two parameters (one NULL), no result formats.
        let msg = b"\0\x01\0\0\0\x02\0\0\0\x011\xff\xff\xff\xff\0\0";
        assert_eq!(bind_shape(msg), Some((2, vec![])));
        assert_eq!(bind_shape(b"\0\0\0\x01\0\0\0\x05ab"), None);
        assert_eq!(bind_shape(b""), None);
    }

    #[test]
    fn a_buffered_message_is_whole_only_with_all_its_bytes() {
        assert!(has_message(b"S\0\0\0\x04"));
        assert!(!has_message(b"Q\0\0\0\x09SHO"));
        assert!(!has_message(b"Q\0"));
    }
}
