//! The admin console: a client that logs in to the `[admin]` database talks to switchyard
//! itself, in the simple or the extended query protocol (the latter's steps are in
//! [`super::extended`]), and no server is involved. Commands are in [`super::commands`], what
//! they list in [`super::views`].

use std::collections::HashMap;

use bytes::BytesMut;

use super::commands::{self, Command, CommandError};
use super::table::{self, Value};
use super::views;
use crate::app::App;
use crate::config::AdminAccess;
use crate::net::{self, Stream};
use crate::protocol::{encode, tag, Header, TxnStatus};
use crate::session::cancel::Registration;
use crate::session::Fatal;
use tokio_util::sync::CancellationToken;

/// The largest message the console reads (its commands are one line).
const MAX_MESSAGE: usize = 1 << 20;

/// Answers are written out once this much is queued, so a pipeline or a Query of many
/// `SHOW`s is answered in pieces instead of piling up in memory.
const OUT_FLUSH: usize = 64 * 1024;

/// How long a console client gets to take each [`OUT_FLUSH`] bytes of its answers; one that
/// does not read for that long is closed.
const WRITE_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// How long a write still gets once the session is ended (`KILL`) or switchyard starts
/// shutting down: the answer of a `KILL` of itself or of `SHUTDOWN` still goes out whole to a
/// client that reads it.
const STOPPING_WRITE_LIMIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The PostgreSQL version the console reports (drivers check it), before its own name.
const REPORTED_VERSION: &str = "15.0";

/// One console connection.
pub struct Console<'a> {
    app: &'a App,
    /// The user logged in (its access is looked up in the configuration in effect at each
    /// command).
    user: String,
    /// Prepared statements by name.
    pub(super) statements: HashMap<Vec<u8>, Command>,
    /// Bound portals by name: the command and each column's format (true: binary).
    pub(super) portals: HashMap<Vec<u8>, (Command, Vec<bool>)>,
    /// An extended-protocol message failed: the rest is discarded until Sync.
    skipping: bool,
    /// Ends this session (`KILL` of its process id; the proxy's own kill switch).
    kill: CancellationToken,
    /// A `KILL` of this session cut a command's wait (`PAUSE`, `WAIT_CLOSE`) short: nothing
    /// more is run or answered, the session ends.
    pub(super) ended: bool,
    pub(super) out: BytesMut,
}

/// Serves a console client that logged in as `user` with `access`, from its greeting until it
/// leaves (or the proxy shuts down, or an admin `KILL`s it).
pub async fn run(
    app: &App,
    stream: &mut Stream,
    mut buf: BytesMut,
    user: &str,
    application_name: &str,
    reg: &Registration,
) -> Result<(), Fatal> {
    let mut c = Console {
        app,
        user: user.to_owned(),
        statements: HashMap::new(),
        portals: HashMap::new(),
        skipping: false,
        kill: reg.slot.kill.clone(),
        ended: false,
        out: BytesMut::new(),
    };
    greeting(&mut c.out, user, application_name, reg.pid, reg.secret);
    loop {
        if !c.out.is_empty() && (!has_message(&buf) || c.out.len() >= OUT_FLUSH) {
            write_out(app, reg, stream, &mut c.out).await?;
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
            tag::QUERY => c.query(body, stream, reg).await?,
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
        if c.ended {
            write_out(app, reg, stream, &mut c.out).await?;
            return Err(Fatal::new(
                "57P01",
                "terminating connection due to administrator command",
            ));
        }
    }
}

/// Writes `out` to the client and empties it, [`OUT_FLUSH`] bytes at a time, each within
/// [`WRITE_LIMIT`], and within [`STOPPING_WRITE_LIMIT`] of a `KILL` of the session or the
/// start of a shutdown: a client that does not read its answers is not waited for past
/// those (as the relay does not wait for one; a Query of many `SHOW`s answers more than
/// the socket buffers hold). Cut short, the session ends without a word (the client holds
/// part of a message).
async fn write_out(
    app: &App,
    reg: &Registration,
    stream: &mut Stream,
    out: &mut BytesMut,
) -> Result<(), Fatal> {
    let stopping = async {
        tokio::select! {
            _ = reg.slot.kill.cancelled() => {}
            _ = app.shutdown.cancelled() => {}
        }
        tokio::time::sleep(STOPPING_WRITE_LIMIT).await;
    };
    let write = async {
        for chunk in out.chunks(OUT_FLUSH) {
            match tokio::time::timeout(WRITE_LIMIT, net::send_all(stream, chunk)).await {
                Ok(r) => r.map_err(Fatal::Io)?,
                Err(_) => {
                    return Err(Fatal::protocol_silent(
                        "the console client did not read its answers in time",
                    ))
                }
            }
        }
        Ok(())
    };
    let written = tokio::select! {
        biased;
        r = write => r,
        _ = stopping => Err(Fatal::protocol_silent(
            "the console session ended (KILL or shutdown) while its answers were being written",
        )),
    };
    out.clear();
    written
}

/// `wait`'s outcome, or `None` when `kill` fires first.
async fn until_killed<T>(
    kill: &CancellationToken,
    wait: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        biased;
        _ = kill.cancelled() => None,
        t = wait => Some(t),
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
pub(super) enum Outcome {
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
    /// A simple Query: every statement in turn, stopping at the first error. Answers are
    /// written out as they pass `OUT_FLUSH`, and the other tasks get a turn between
    /// statements: one Query may hold many thousands of them.
    async fn query(
        &mut self,
        body: &[u8],
        stream: &mut Stream,
        reg: &Registration,
    ) -> Result<(), Fatal> {
        self.portals.clear();
        // One NUL-terminated string, as PostgreSQL reads it (a NUL inside would end the
        // string early, and cut the text echoed into an error's fields).
        let Some(text) = body.strip_suffix(&[0]).filter(|t| !t.contains(&0)) else {
            self.error(&CommandError::new("08P01", "invalid message format"));
            encode::ready_for_query(&mut self.out, TxnStatus::Idle);
            return Ok(());
        };
        let statements = match std::str::from_utf8(text) {
            Ok(t) => commands::statements(t),
            Err(_) => {
                self.error(&CommandError::new(
                    "22021",
                    "invalid byte sequence for encoding \"UTF8\"",
                ));
                encode::ready_for_query(&mut self.out, TxnStatus::Idle);
                return Ok(());
            }
        };
        if statements.is_empty() {
            encode::empty(&mut self.out, tag::EMPTY_QUERY);
        }
        for s in &statements {
            let run = match commands::parse(s) {
                Ok(cmd) => self.run(&cmd).await.map(|o| (cmd, o)),
                Err(e) => Err(e),
            };
            match run {
                Ok(_) if self.ended => return Ok(()),
                Ok((cmd, outcome)) => {
                    if let (Outcome::Rows(_), Some(columns)) = (&outcome, cmd.columns()) {
                        table::row_description(&mut self.out, columns, &[]);
                    }
                    self.complete(&cmd, outcome, &[]);
                }
                Err(e) => {
                    self.error(&e);
                    break;
                }
            }
            if self.out.len() >= OUT_FLUSH {
                write_out(self.app, reg, stream, &mut self.out).await?;
            }
            tokio::task::yield_now().await;
        }
        encode::ready_for_query(&mut self.out, TxnStatus::Idle);
        Ok(())
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

    /// Rows (without their description) and CommandComplete, or EmptyQueryResponse.
    pub(super) fn complete(&mut self, cmd: &Command, outcome: Outcome, formats: &[bool]) {
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
                if *cmd == Command::Empty {
                    encode::empty(&mut self.out, tag::EMPTY_QUERY);
                } else {
                    encode::command_complete(&mut self.out, cmd.tag());
                }
            }
        }
    }

    /// Carries a command out, if this user may by the configuration in effect now (a reload
    /// may have changed what it may do since it logged in).
    pub(super) async fn run(&mut self, cmd: &Command) -> Result<Outcome, CommandError> {
        let access =
            (self.app.config.load().config.admin.as_ref()).and_then(|a| a.access(&self.user));
        let Some(access) = access else {
            if matches!(cmd, Command::Set | Command::Empty) {
                return Ok(Outcome::Done(None));
            }
            return Err(CommandError::new(
                "42501",
                format!(
                    "permission denied for the admin console: user \"{}\" is no longer in [admin] users or stats_users",
                    self.user
                ),
            ));
        };
        if access == AdminAccess::Stats && !cmd.only_looks() {
            return Err(CommandError::new(
                "42501",
                format!(
                    "permission denied: {} is for the users in [admin] users",
                    cmd.tag()
                ),
            ));
        }
        match cmd {
            Command::Show(show) => Ok(Outcome::Rows(views::rows(self.app, *show))),
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
                if self.app.cancels.terminate(*pid, "", true) {
                    tracing::info!(pid, "client ended from the admin console");
                    Ok(Outcome::Done(None))
                } else {
                    Err(CommandError::new(
                        "42704",
                        format!("no client has process id {pid}"),
                    ))
                }
            }
            Command::KillDatabase(db) => {
                self.not_the_console(db)?;
                self.app.pause.pause(Some(db));
                self.publish_pause();
                let ended = self.app.cancels.terminate_database(db);
                // Closed until RESUME: not only the connections open now, but also any a
                // checkout under way or a min_size refill opens meanwhile.
                self.app.pools.kill_database(db);
                tracing::warn!(
                    database = %db,
                    clients = ended,
                    "KILL from the admin console: database paused, its clients ended, its server connections closed"
                );
                Ok(Outcome::Done(notice(format!(
                    "{ended} client(s) ended; new logins and transactions on \"{db}\" wait for RESUME"
                ))))
            }
            Command::Disable(db) => {
                self.not_the_console(db)?;
                Ok(self.set_disabled(db, true))
            }
            Command::Enable(db) => Ok(self.set_disabled(db, false)),
            Command::Pause(db) => {
                if let Some(db) = db {
                    // (The console's logins are never paused: it would show as paused and
                    // hold nothing.)
                    self.not_the_console(db)?;
                }
                let waited = until_killed(&self.kill, self.pause(db.as_deref())).await;
                self.ended = waited.is_none();
                Ok(Outcome::Done(waited.flatten()))
            }
            Command::WaitClose(db) => {
                let waited = until_killed(&self.kill, self.wait_close(db.as_deref())).await;
                self.ended = waited.is_none();
                Ok(Outcome::Done(waited.flatten()))
            }
            Command::Resume(db) => match self.app.pause.resume(db.as_deref()) {
                Ok(changed) => {
                    self.app.pools.resume(db.as_deref());
                    self.publish_pause();
                    if changed {
                        tracing::warn!(database = db.as_deref(), "resumed from the admin console");
                    }
                    Ok(Outcome::Done(if changed {
                        None
                    } else {
                        notice("not paused")
                    }))
                }
                Err(crate::pause::ResumeRefused) => Err(CommandError::new(
                    "55000",
                    "every database is paused: RESUME without a database name resumes them",
                )),
            },
            Command::Reconnect(db) => {
                let pools = match db {
                    None => self.app.pools.reconnect(),
                    Some(db) => self.app.pools.close_for_database(db),
                };
                tracing::info!(
                    pools,
                    database = db.as_deref(),
                    "RECONNECT from the admin console"
                );
                Ok(Outcome::Done(notice(format!(
                    "{pools} pool(s): idle server connections closed, the others close when released"
                ))))
            }
            Command::Shutdown => {
                tracing::info!("SHUTDOWN from the admin console: draining");
                self.app.begin_shutdown();
                Ok(Outcome::Done(None))
            }
            Command::Set | Command::Empty => Ok(Outcome::Done(None)),
        }
    }

    /// Holds new transactions (of every database, or of `database`), then waits (up to
    /// `shutdown_timeout`) until no client of those is in one. Clients that keep their server
    /// connection between transactions (session pooling, pinned) are not waited for. Returns
    /// a notice when some transactions are still open. Paused already, it waits all the same
    /// (a script repeats PAUSE until no transaction is open).
    async fn pause(&self, database: Option<&str>) -> Option<Notice> {
        let changed = self.app.pause.pause(database);
        if changed {
            self.publish_pause();
            tracing::warn!(
                database,
                "paused from the admin console: new transactions wait for RESUME"
            );
        }
        match self.drain(database).await {
            None if !changed => notice("already paused"),
            outcome => outcome,
        }
    }

    /// Waits (up to `shutdown_timeout`) until no client of `database` (or of any) is in a
    /// transaction; a warning naming those still in one. A `RESUME` meanwhile (from another
    /// session) ends the wait: a notice says so.
    async fn drain(&self, database: Option<&str>) -> Option<Notice> {
        let app = self.app;
        let grace = app.config.load().config.shutdown_timeout;
        let deadline = tokio::time::Instant::now() + grace;
        let mut changes = app.pause.subscribe();
        loop {
            // (Subscribed before looking: a RESUME after the look wakes the wait below.)
            if !app.pause.covers(database) {
                return notice(
                    "not paused any more: RESUME was run before the open transactions ended",
                );
            }
            let open = app.cancels.in_transaction(database);
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
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_millis(20)) => {}
                _ = changes.changed() => {}
            }
        }
    }

    /// `KILL` and `DISABLE` of the console's own database would lock the operators out, and
    /// `PAUSE` of it would do nothing.
    fn not_the_console(&self, database: &str) -> Result<(), CommandError> {
        let config = self.app.config.load();
        match &config.config.admin {
            Some(admin) if admin.database == database => Err(CommandError::new(
                "55000",
                format!("\"{database}\" is the admin console's database"),
            )),
            _ => Ok(()),
        }
    }

    /// `DISABLE db` (`on`) or `ENABLE db`; a notice when that changes nothing.
    fn set_disabled(&self, db: &str, on: bool) -> Outcome {
        let disabled = &self.app.disabled;
        let changed = if on {
            disabled.disable(db)
        } else {
            disabled.enable(db)
        };
        let n = disabled.list().len();
        self.app.metrics.disabled_databases.set(n as i64);
        if !changed {
            return Outcome::Done(notice(if on {
                "already disabled"
            } else {
                "not disabled"
            }));
        }
        if on {
            tracing::warn!(database = %db, "DISABLE from the admin console: new logins are refused");
        } else {
            tracing::warn!(database = %db, "ENABLE from the admin console: logins are accepted again");
        }
        Outcome::Done(None)
    }

    /// Waits (up to `shutdown_timeout`, or until switchyard starts shutting down) until no
    /// server connection (of `database`) that a `RECONNECT` marked to close is open; a notice
    /// says how many are, and which clients hold some, when it stops waiting before that.
    async fn wait_close(&self, database: Option<&str>) -> Option<Notice> {
        let app = self.app;
        let grace = app.config.load().config.shutdown_timeout;
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let open = app.pools.marked_open(database);
            if open == 0 {
                return None;
            }
            let shutting_down = app.shutting_down();
            if tokio::time::Instant::now() >= deadline || shutting_down {
                let holders: Vec<String> = app
                    .cancels
                    .clients()
                    .into_iter()
                    .filter(|c| database.is_none_or(|db| c.info.database == db))
                    .filter(|c| {
                        c.target
                            .as_ref()
                            .is_some_and(|t| t.opened <= t.pool.closing_mark())
                    })
                    .map(|c| c.pid.to_string())
                    .collect();
                let when = if shutting_down {
                    "switchyard is shutting down".to_owned()
                } else {
                    format!("waited {grace:?}")
                };
                return Some((
                    "WARNING",
                    "01000",
                    format!(
                        "{when}: {open} server connection(s) to close are still open (held by \
                         the clients with process ids [{}]); they close when released",
                        holders.join(", ")
                    ),
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// The pause gauges follow what is paused.
    fn publish_pause(&self) {
        let p = self.app.pause.paused();
        self.app.metrics.paused.set(i64::from(p.all));
        self.app
            .metrics
            .paused_databases
            .set(p.databases.len() as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffered_message_is_whole_only_with_all_its_bytes() {
        assert!(has_message(b"S\0\0\0\x04"));
        assert!(!has_message(b"Q\0\0\0\x09SHO"));
        assert!(!has_message(b"Q\0"));
    }
}
