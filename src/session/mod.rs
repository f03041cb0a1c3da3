//! One client connection: startup and authentication (`login`), then the relay loop
//! (`relay`), which forwards requests to a server connection it checks out per transaction
//! (or per session) and relays responses back.

mod access;
mod attach;
mod authenticate;
pub mod cancel;
mod choose;
mod client;
mod current;
mod extended;
mod functions;
mod leaving;
mod login;
mod lone_end;
mod lookup;
mod memberships;
mod parse;
pub mod pending;
mod query;
mod relay;
mod reports;
mod retry;
pub mod route;
mod sequences;
mod serverside;
pub mod settings;
mod shapes;
mod split;
mod startup;
pub mod statements;

pub use memberships::Memberships;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::net::listener::Peer;
use crate::net::Stream;

use crate::app::App;
use crate::config::{PoolMode, User};
use crate::pool::{Pool, Pooled};
use crate::protocol::{encode, TxnStatus};
use pending::Pending;
use settings::Settings;
use statements::Statement;

/// An error that ends a client connection, with what the client is told.
#[derive(Debug)]
pub enum Fatal {
    /// The socket failed or closed; nothing can be sent.
    Io(std::io::Error),
    /// Send `FATAL` with this SQLSTATE and message, then close.
    Client { code: String, message: String },
    /// A protocol violation too early for an ErrorResponse to make sense: log and close.
    Silent(String),
}

impl Fatal {
    /// A FATAL with SQLSTATE `code`.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Fatal {
        Fatal::Client {
            code: code.into(),
            message: message.into(),
        }
    }

    /// A protocol violation (08P01).
    pub fn protocol(message: impl Into<String>) -> Fatal {
        Fatal::new("08P01", message)
    }

    /// A protocol violation answered by closing the connection only.
    pub fn protocol_silent(message: impl Into<String>) -> Fatal {
        Fatal::Silent(message.into())
    }
}

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// The client's unnamed statement kept while an unnamed Parse or Close replacing it is
/// unanswered (see `Session::unnamed_before`).
#[derive(Debug)]
struct UnnamedBefore {
    /// The unnamed-statement sequence number of the Parse or Close that replaced it.
    seq: u64,
    frame: Option<Bytes>,
    effects: (crate::sql::Effects, Option<&'static str>),
    generation: u64,
    deallocates: bool,
    depends: Option<Arc<Statement>>,
}

/// How many connections to the admin console's database may log in past
/// `max_client_connections` at once (as PostgreSQL reserves connections for superusers): an
/// operator can still run `RESUME` or `KILL` when clients fill the proxy.
pub const CONSOLE_RESERVE: usize = 3;

/// A connection past `max_client_connections` let in to the admin console on a reserved
/// place (held until it leaves), its startup packet read.
pub struct Reserved {
    stream: Stream,
    buf: BytesMut,
    startup: crate::protocol::startup::Startup,
    tls: crate::net::tls::TlsPeer,
    _place: tokio::sync::OwnedSemaphorePermit,
}

/// Answers a connection past `max_client_connections` with FATAL 53300 once it has sent its
/// startup packet (over TLS when it asked for it), as PostgreSQL answers one past
/// `max_connections`. A cancel request, plain or over TLS, is placed instead: cancelling a
/// query matters most when the proxy is full. A login to the admin console's database takes
/// one of `reserve`'s places when one is free, and is returned to be run as any login. The
/// whole exchange gets [`TURN_AWAY_LIMIT`].
pub async fn turn_away(
    app: Arc<App>,
    mut stream: Stream,
    reserve: &Arc<tokio::sync::Semaphore>,
) -> Option<Reserved> {
    let mut buf = BytesMut::new();
    let first = tokio::time::timeout(
        TURN_AWAY_LIMIT,
        startup::read_startup(&app, &mut stream, &mut buf),
    )
    .await;
    match first {
        Ok(Ok(startup::First::Cancel { pid, secret })) => {
            cancel::place(&app, pid, secret).await;
            stream.close_tls(CLOSE_WAIT).await;
            return None;
        }
        Ok(Ok(startup::First::Startup(startup, tls))) => {
            let console = app.config.load().config.admin.as_ref().is_some_and(|a| {
                startup::requested_database(&startup).is_some_and(|d| d == a.database)
            });
            if console {
                if let Ok(place) = reserve.clone().try_acquire_owned() {
                    tracing::info!(
                        "admin console login past max_client_connections: on a reserved place"
                    );
                    return Some(Reserved {
                        stream,
                        buf,
                        startup,
                        tls,
                        _place: place,
                    });
                }
            }
        }
        Ok(Err(Fatal::Silent(why))) => {
            // A failed handshake, a TLS client of another protocol: closed unanswered, as
            // when there is room.
            tracing::info!("connection past max_client_connections closed: {why}");
            return None;
        }
        Ok(Err(Fatal::Io(_))) => return None,
        _ => {}
    }
    app.metrics.rejected("max_clients");
    app.metrics.error("53300");
    crate::server::refuse(&mut stream, "53300", "sorry, too many clients already").await;
    stream.close_tls(CLOSE_WAIT).await;
    None
}

/// How long a connection past `max_client_connections` gets to say what it wants (its TLS
/// handshake included) before it is refused.
const TURN_AWAY_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs a console login [`turn_away`] let in on a reserved place, to completion.
pub async fn run_reserved(app: Arc<App>, reserved: Reserved, peer: Peer) {
    let Reserved {
        stream,
        buf,
        startup,
        tls,
        _place,
    } = reserved;
    serve(app, stream, peer, Some((startup, tls, buf))).await;
}

/// Runs one client connection to completion.
pub async fn run(app: Arc<App>, stream: Stream, peer: Peer) {
    serve(app, stream, peer, None).await;
}

/// A startup packet already read (by [`turn_away`]), what its TLS handshake established, and
/// the bytes that followed it.
type ReadFirst = (
    crate::protocol::startup::Startup,
    crate::net::tls::TlsPeer,
    BytesMut,
);

/// Runs one client connection to completion, from its startup packet when `first` has it.
async fn serve(app: Arc<App>, mut stream: Stream, peer: Peer, first: Option<ReadFirst>) {
    use tracing::Instrument;
    let id = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!("client", id, %peer, user = tracing::field::Empty);
    // Startup runs inside the span; the relay loop does not (entering a span on every poll
    // costs more than the relay's own work per message), its events name the span as parent.
    let result = match start(app.clone(), &mut stream, id, peer, span.clone(), first)
        .instrument(span.clone())
        .await
    {
        Ok(Some(Started::Session(mut session, registration))) => {
            let result = session.relay(&mut stream).await;
            session.finish().await;
            drop(registration);
            result
        }
        Ok(Some(Started::Console(console))) => {
            console
                .run(&app, &mut stream)
                .instrument(span.clone())
                .await
        }
        Ok(None) => Ok(()),
        Err(f) => Err(f),
    };
    if let Err(f) = result {
        let _g = span.enter();
        match f {
            Fatal::Io(e) => tracing::debug!(error = %e, "client connection closed"),
            Fatal::Silent(m) => tracing::info!(reason = %m, "closing client connection"),
            Fatal::Client { code, message } => {
                // (A login refused, or a session ended: KILL, a shutdown, a lost server.)
                tracing::info!(sqlstate = %code, %message, "client connection ended with FATAL");
                app.metrics.error(&code);
                let mut out = BytesMut::new();
                encode::error(&mut out, "FATAL", &code, &message);
                let _ = tokio::time::timeout(
                    std::time::Duration::from_secs(1),
                    crate::net::send_all(&mut stream, &out),
                )
                .await;
            }
        }
    }
    stream.close_tls(CLOSE_WAIT).await;
}

/// How long a TLS connection's `close_notify` may wait to be sent (to a client that reads
/// nothing more) before the socket closes anyway.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// What a logged-in client goes on to.
enum Started {
    /// The relay to the servers.
    Session(Box<Session>, cancel::Registration),
    /// The admin console.
    Console(ConsoleClient),
}

/// A client logged in to the admin console.
struct ConsoleClient {
    login: authenticate::Login,
    registration: cancel::Registration,
    buf: BytesMut,
}

impl ConsoleClient {
    async fn run(self, app: &App, stream: &mut Stream) -> Result<(), Fatal> {
        let application_name = self
            .login
            .startup
            .0
            .get("application_name")
            .map_or("", String::as_str);
        tracing::info!("admin console session");
        let _counted = crate::metrics::CountedClient::new(&app.metrics.clients);
        crate::admin::console::run(
            app,
            stream,
            self.buf,
            &self.login.user.name,
            application_name,
            &self.registration,
        )
        .await
    }
}

/// Startup, authentication and the first server contact: a logged-in session (or console
/// client), or `None` for a cancel request.
async fn start(
    app: Arc<App>,
    stream: &mut Stream,
    id: u64,
    peer: Peer,
    span: tracing::Span,
    first: Option<ReadFirst>,
) -> Result<Option<Started>, Fatal> {
    let config = app.config.load_full();
    let reserved = first.is_some();
    let (first, mut buf) = match first {
        Some((s, tls, buf)) => (Some(startup::First::Startup(s, tls)), buf),
        None => (None, BytesMut::with_capacity(1024)),
    };
    let deadline = config.config.startup_timeout;
    let login = tokio::time::timeout(deadline, async {
        let first = match first {
            Some(f) => f,
            None => startup::read_startup(&app, stream, &mut buf).await?,
        };
        match first {
            startup::First::Cancel { pid, secret } => Ok(Err((pid, secret))),
            startup::First::Startup(s, tls_peer) => {
                startup::check_encrypted(&app, stream)?;
                Ok(Ok(authenticate::authenticate(
                    &app, stream, &mut buf, &s, tls_peer, peer,
                )
                .await?))
            }
        }
    })
    .await
    .map_err(|_| {
        Fatal::new(
            "08006",
            "startup timeout: authentication not completed in time",
        )
    })??;
    let login = match login {
        Ok(login) => login,
        Err((pid, secret)) => {
            // Not under the startup deadline: placing it waits for the server, or for the
            // peers, each bounded on its own. The connection closes when it is placed.
            cancel::place(&app, pid, secret).await;
            return Ok(None);
        }
    };
    span.record("user", login.user.name.as_str());
    let console = config
        .config
        .admin
        .as_ref()
        .filter(|a| a.database == login.database)
        .map(|a| a.access(&login.user.name));
    if reserved && console.is_none() {
        // Let in past max_client_connections for the console, which a reload turned off or
        // moved meanwhile.
        app.metrics.rejected("max_clients");
        return Err(Fatal::new("53300", "sorry, too many clients already"));
    }
    if console == Some(None) {
        app.metrics.rejected("not_admin");
        return Err(Fatal::new(
            "42501",
            format!(
                "permission denied for the admin console: user \"{}\" is not in [admin] users or stats_users",
                login.user.name
            ),
        ));
    }
    let info = cancel::ClientInfo {
        database: login.database.clone(),
        peer,
        tls: stream.is_tls(),
        application_name: login
            .startup
            .0
            .get("application_name")
            .cloned()
            .unwrap_or_default(),
        since: std::time::Instant::now(),
        console: console.is_some(),
    };
    let mut reg = app
        .cancels
        .register(Arc::from(login.user.name.as_str()), info, &app.kill);
    if let Some(Some(_)) = console {
        app.metrics.clients_total.inc();
        return Ok(Some(Started::Console(ConsoleClient {
            login,
            registration: reg,
            buf,
        })));
    }
    let login_consistency = login
        .user
        .config
        .consistency
        .unwrap_or(config.config.routing.consistency);
    let user_name = login.user.name.clone();
    let startup = app.settings.intern(login.startup);
    let functions = app.catalogs.of(&login.database);
    let statement_scope = statements::scope(&login.database, &user_name);
    let mut session = Session {
        id,
        client_pid: reg.pid,
        app: app.clone(),
        current: current::Current::new(&app),
        pool_mode: config.config.pool_mode,
        max_message: config.config.max_message_size as usize,
        max_prepared: config.config.pool.max_prepared_statements,
        user: login.user,
        database: login.database,
        client: Side {
            rbuf: buf,
            wbuf: BytesMut::new(),
        },
        server: None,
        swbuf: BytesMut::new(),
        pending: Pending::default(),
        statements: Default::default(),
        sweep_statements: false,
        functions,
        shapes_epoch: 0,
        stale_shapes: false,
        path_moved: false,
        path_shapes: Default::default(),
        changed_shapes: Vec::new(),
        shape_portal: None,
        unnamed: None,
        unnamed_effects: Default::default(),
        unnamed_generation: 0,
        unnamed_deallocates: false,
        unnamed_depends: None,
        unnamed_seq: 0,
        unnamed_before: None,
        desired: startup.clone(),
        startup,
        capture: false,
        check_state: false,
        captured: Vec::new(),
        pin: None,
        pin_outlives_reset: false,
        reads_sequences: false,
        seq_epoch: 0,
        skip_until_sync: false,
        parse_wait_flushed: false,
        txn: TxnStatus::Idle,
        server_pass: 0,
        client_cut: false,
        input_ended: false,
        client_pass: Pass::None,
        lost_txn: false,
        request_begins: None,
        client_ran: false,
        aborted_txn: false,
        replica_refused: false,
        schema_changed: false,
        change_counted: false,
        server_fatal: None,
        fatal_unstarted: false,
        pools: Vec::new(),
        topology: 0,
        cancel: reg.slot.clone(),
        superuser: false,
        terminates: None,
        draining: false,
        route_override: None,
        consistency: login_consistency,
        deferred_begin: None,
        failed_chain: None,
        force_primary: false,
        wrote: false,
        ryw: crate::ryw::Scopes::new(&app.ryw, &user_name),
        counted: None,
        pin_unread_settings: false,
        read_back: ReadBack::Fine,
        capture_retries: 0,
        capture_state: false,
        synthetic_flushed: false,
        reported: ("on".into(), "UTF8".into()),
        reports: Default::default(),
        opaque_backslashes: false,
        bound_in_batch: false,
        executed_in_batch: false,
        flushed_batch: false,
        statement_scope,
        target: route::Target::Primary,
        backend_index: None,
        retry: None,
        between_servers: false,
        cancelled_between: false,
        retry_attempts: 0,
        primary_unreachable_since: None,
        capturing: (false, false),
        settings_lost: false,
        captured_lsn: None,
        front_query: None,
        custom_names: Default::default(),
        restore_sql: None,
        restore_pending: false,
        restore_after_copy: RestoreAfterCopy::No,
        batch_copies_in: false,
        held_ready: None,
        avoid: 0,
        candidates: Vec::new(),
        conflicted: 0,
        fresh_attach: false,
        ending_block: false,
        batch_ends_block: false,
        ended_block_last: false,
        split_first: false,
        drain_due: false,
        split_rest_due: false,
        drop_split_rest: false,
        copy_ended_since_request: false,
        batch_open: false,
        leaving: leaving::Leaving::No,
        copy_in: false,
        context_unsettled: false,
        settings_unread: false,
        span,
    };
    session.restore_sql = settings::restore_sql(&session.startup).map(Into::into);
    session.login(stream, &mut reg).await?;
    app.metrics.clients_total.inc();
    Ok(Some(Started::Session(Box::new(session), reg)))
}

impl Drop for Session {
    /// The client is gone (however it ended): its idle server connections are anybody's.
    fn drop(&mut self) {
        self.uncount_outstanding();
        if self.schema_changed {
            // Left with its schema change in flight: whether it committed (a COMMIT sent
            // before leaving) is not known, so statements parsed from now on are parsed anew.
            self.app.statements.invalidate();
        }
        self.end_schema_change();
        for pool in self.pools.iter().flatten() {
            pool.disown(self.id);
        }
    }
}

/// Where the query putting the startup settings back goes when the request that reset them
/// also copies from STDIN: not into the copy (the server would take it for copy data, and
/// fail the copy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RestoreAfterCopy {
    No,
    /// Right behind the client's CopyDone or CopyFail: a Query's copy, after which the server
    /// finishes the Query.
    Query,
    /// With the client's first Sync after its CopyDone or CopyFail: an extended batch's copy,
    /// after which the server takes nothing but that Sync.
    Batch,
}

/// Buffers of one side of the relay.
struct Side {
    /// Bytes read and not yet handled.
    rbuf: BytesMut,
    /// Bytes to write to this side.
    wbuf: BytesMut,
}

/// A client message being streamed through in pieces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    None,
    /// This many more bytes go to the server as they arrive.
    Forward(usize),
    /// This many more bytes are dropped (the message was refused mid-stream).
    Drop(usize),
}

/// How the proxy's reading back of a client's settings went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum ReadBack {
    #[default]
    Fine,
    /// The server answered it with an error: the settings are unknown.
    Failed,
    /// ... a cancel (57014): the client's, come too late for its own statement.
    Cancelled,
}

/// The state of one logged-in client.
struct Session {
    /// Process-unique id (logs, unnamed statement ownership).
    id: u64,
    /// Whether the server said the client's role is a superuser at login (`is_superuser`).
    superuser: bool,
    /// The pid a `pg_terminate_backend` call in flight names (see `terminate_client`), and
    /// whether its statement has returned a row (a call under `WHERE false` runs nowhere).
    terminates: Option<(i32, bool)>,
    /// The process id this client was given (BackendKeyData).
    client_pid: i32,
    app: Arc<App>,
    /// The configuration and cluster view requests are routed by.
    current: current::Current,
    pool_mode: PoolMode,
    /// Largest client message buffered whole.
    max_message: usize,
    /// `[pool] max_prepared_statements` when the client connected.
    max_prepared: usize,
    user: Arc<User>,
    database: String,
    client: Side,
    /// The server connection in use, if any.
    server: Option<Pooled>,
    /// Bytes to write to the server.
    swbuf: BytesMut,
    /// Responses still expected from the server, in order.
    pending: Pending,
    /// The client's named prepared statements (client name → interned statement).
    statements: statements::Names,
    /// The client dropped statements: the next connection attached closes those no client
    /// has any more (see `close_unheld_statements`).
    sweep_statements: bool,
    /// The database's volatile functions (catalog.rs).
    functions: Arc<crate::catalog::DbFunctions>,
    /// The statement registry's epoch when `stale_shapes` was found (shapes.rs).
    shapes_epoch: u64,
    /// Some statement the client described was interned before the schema last changed.
    stale_shapes: bool,
    /// The client's `search_path` changed since it logged in (as read back): a statement
    /// it described under another path names other tables where it is prepared anew
    /// (shapes.rs).
    path_moved: bool,
    /// Whether such a statement (id) keeps its row shape under the path it is for (shapes.rs),
    /// as found since the schema last changed. Only the latest path's: a client that moves
    /// through many keeps no more than its statements.
    path_shapes: (Option<String>, std::collections::HashMap<u64, bool>),
    /// Statements whose row shape changed, found for the current request (shapes.rs).
    changed_shapes: Vec<u64>,
    /// The portal the client's last Bind made from a statement whose row shape is not
    /// recorded yet, and that statement: a Describe of the portal records it (shapes.rs).
    shape_portal: Option<(Bytes, u64)>,
    /// The client's unnamed statement: its whole Parse message, to replay on another server.
    unnamed: Option<Bytes>,
    /// Session effects and pin reason of `unnamed` (valid while it is `Some`).
    unnamed_effects: (crate::sql::Effects, Option<&'static str>),
    /// The [`crate::catalog`] generation of the function list `unnamed_effects` counted the
    /// calls of the database's functions with (the list changes: they are counted again).
    unnamed_generation: u64,
    /// The unnamed statement is a `DEALLOCATE` or an `EXECUTE`: what it does depends on the
    /// client's statements at the time, so a repeat of it is analysed again.
    unnamed_deallocates: bool,
    /// The statement `unnamed` runs (`EXECUTE` of a client's statement): prepared on a server
    /// connection before `unnamed` is replayed there.
    unnamed_depends: Option<Arc<Statement>>,
    /// Counts the client's unnamed Parses (ownership check on the server connection).
    unnamed_seq: u64,
    /// The client's unnamed statement as it was before its latest unnamed Parse or Close:
    /// given back if the server skips that one (an error earlier in its batch), as
    /// PostgreSQL keeps the statement it had.
    unnamed_before: Option<UnnamedBefore>,
    /// Settings from startup.
    startup: Arc<Settings>,
    /// Startup settings overlaid with the session's own changes.
    desired: Arc<Settings>,
    /// A statement in the current transaction may have changed settings: read them back when
    /// it ends.
    capture: bool,
    /// A statement in the current transaction called a function that may keep state in the
    /// session: the read-back looks for such state too (and pins the client if there is some).
    check_state: bool,
    /// Rows of a settings read-back in progress.
    captured: Vec<(String, String)>,
    /// Pinned to its server connection, and why.
    pin: Option<&'static str>,
    /// Pinned (for whatever first reason) by server-session state that `reset_query` does
    /// not undo (a named `dblink` connection, a replication origin or a backup set up in the
    /// session): its server connection is closed when it leaves, `session_reuse` or not.
    pin_outlives_reset: bool,
    /// The client reads its sequence state (`currval`/`lastval`): a server connection it gets
    /// in transaction pooling that holds another client's is cleared first (`DISCARD
    /// SEQUENCES`), so it reads "not yet defined in this session", never a foreign value.
    reads_sequences: bool,
    /// Counts the client's own `DISCARD SEQUENCES`/`ALL` (sequence state before the last one
    /// is not the client's any more).
    seq_epoch: u64,
    /// An error was reported within an extended-protocol batch: drop messages until Sync.
    skip_until_sync: bool,
    /// A Flush was sent for the answer a held-back Parse waits for.
    parse_wait_flushed: bool,
    /// Transaction status last reported to the client.
    txn: TxnStatus,
    /// Bytes of a server message being relayed in pieces.
    server_pass: usize,
    /// A flush to the client was cut short (it did not read in time): it has part of a
    /// message, and no FATAL can follow.
    client_cut: bool,
    /// The client's input ended without a Terminate (see `leaving::end_input`): its answers
    /// are written while it reads them (a half-closed connection), but once a write fails it
    /// is gone, and what it asked for is given up as when a client closes mid-request.
    input_ended: bool,
    /// A client message being relayed in pieces.
    client_pass: Pass,
    /// The server died inside a transaction: the next request gets an error.
    lost_txn: bool,
    /// A request in flight begins a transaction block (its Query's first statement, or a
    /// statement bound in its batch, is `BEGIN`): until its ReadyForQuery says so, `txn`
    /// does not show it, and a server lost meanwhile fails the block the client began. The
    /// number of ReadyForQuery messages still to come up to that request's.
    request_begins: Option<usize>,
    /// A client's Execute completed since the last ReadyForQuery: a FATAL now ends a batch
    /// part of which ran (see `fatal_unstarted`).
    client_ran: bool,
    /// The client's transaction block failed and no server holds it (its server connection
    /// was lost, or none could be had for the first statement after a BEGIN the proxy
    /// answered). As in PostgreSQL's failed block, ReadyForQuery says "E" and nothing runs
    /// until the client ends the block: a lone COMMIT or ROLLBACK is answered "ROLLBACK" here,
    /// and anything else gets a server whose transaction is made to fail first (attach.rs), so
    /// that it answers everything exactly as PostgreSQL would.
    aborted_txn: bool,
    /// The block that failed without a server was begun by a chain the proxy answered: the
    /// BEGIN of that chain, which a `ROLLBACK AND CHAIN` of it chains again
    /// (`chain_failed_block`).
    failed_chain: Option<route::DeferredBegin>,
    /// A replica refused one of this session's reads as a hot standby must (0A000: the
    /// session's transactions are SERIALIZABLE by a role, database or server default, which
    /// the proxy does not see): its reads run on the primary until its settings change.
    replica_refused: bool,
    /// A statement that changes the schema was sent: once its transaction is over, the
    /// registry's statements are invalidated (statements.rs).
    schema_changed: bool,
    /// `schema_changed` is counted among the registry's changes in flight (see
    /// [`statements::Registry::begin_change`]).
    change_counted: bool,
    /// The attached server connection sent a FATAL (it is ending): its message, and whether
    /// it was relayed (the client's own session ends with it) or not (transaction pooling:
    /// the client goes on, and the error it gets for the lost request says why).
    server_fatal: Option<(String, bool)>,
    /// That FATAL came while the proxy's own query ahead of the client's request ran, outside
    /// a transaction: the request never ran (see `server_lost`).
    fatal_unstarted: bool,
    /// Pools by backend index for the current topology.
    pools: Vec<Option<Arc<Pool>>>,
    topology: u64,
    cancel: Arc<cancel::CancelSlot>,
    /// Shutdown started: close as soon as no transaction is open.
    draining: bool,
    /// `SET switchyard.route`: forced route, `None` for automatic.
    route_override: Option<crate::sql::Route>,
    /// Read consistency (user default, `SET switchyard.consistency`).
    consistency: crate::config::Consistency,
    /// A `BEGIN` answered by the proxy and not yet sent: the next statement decides where the
    /// transaction runs. (message, read only)
    deferred_begin: Option<route::DeferredBegin>,
    /// Route the next request to the primary (a replica could not run it).
    force_primary: bool,
    /// The current request or transaction on the primary may write.
    wrote: bool,
    /// The scope of the statements it prepares (see [`statements::scope`]).
    statement_scope: Bytes,
    /// A Bind was sent in the open extended batch: its portal may still exist on the server
    /// (so no statement may be evicted until the Sync).
    bound_in_batch: bool,
    /// An Execute was sent in the open extended batch: in a failed block, what it ran ended
    /// the failure if it was answered without an error (see `handle_parse`).
    executed_in_batch: bool,
    /// The client's last message was a Flush in an open batch that bound nothing (asyncpg's
    /// Parse, Describe, Flush): what it sends next is looked at for where the batch belongs
    /// (see `leave_for_next_request`).
    flushed_batch: bool,
    /// The server's `standard_conforming_strings` and `client_encoding` as last reported to
    /// the client (ParameterStatus).
    reported: (String, String),
    /// The ParameterStatus values the client knows, and the changes it is still to be told.
    reports: reports::Reports,
    /// A backslash in the client's text is opaque to the lexer under those (see
    /// [`crate::sql::backslashes_are_opaque`]).
    opaque_backslashes: bool,
    /// Reading the client's settings back failed: pin it (see `process_server`).
    pin_unread_settings: bool,
    /// How the read-back under way went (its ReadyForQuery is still to come).
    read_back: ReadBack,
    /// Read-backs made again in a row because a cancel hit them (see `process_server`).
    capture_retries: u8,
    /// Whether the read-back under way also reads session state (`check_state`).
    capture_state: bool,
    /// A Flush was sent because the proxy's own answers piled up (see `process_client`).
    synthetic_flushed: bool,
    /// Counts the client in `switchyard_clients` from its login on.
    counted: Option<crate::metrics::CountedClient>,
    /// Read-your-writes watermarks of this session, its user and the proxy.
    ryw: crate::ryw::Scopes,
    /// What the attached server was chosen as.
    target: route::Target,
    /// Backend index of the attached server (outstanding-request accounting).
    backend_index: Option<usize>,
    /// The retryable request in flight on a replica, if any.
    retry: Option<retry::Retry>,
    /// The request waits for a server connection, or was put back to be repeated, and has not
    /// reached a server since (see [`cancel::CancelSlot::waiting`] and
    /// [`cancel::CancelSlot::between_servers`]).
    between_servers: bool,
    /// A cancel came while the request waited for a server or was between servers: answer it
    /// as cancelled.
    cancelled_between: bool,
    /// Repetitions of the current request.
    retry_attempts: u32,
    /// When the current request first found the primary unreachable (see
    /// `await_primary_news`).
    primary_unreachable_since: Option<tokio::time::Instant>,
    /// The read-back in flight reads (settings, commit position).
    capturing: (bool, bool),
    /// The server connection was lost while the settings were read back (see
    /// `server_lost`).
    settings_lost: bool,
    /// Commit position read back.
    captured_lsn: Option<u64>,
    /// Analysis of the Query at the front of the client buffer: (buffer address, length, info).
    front_query: Option<(usize, usize, query::QueryInfo)>,
    /// Custom (dotted) settings the client has touched; read back by name.
    custom_names: std::collections::BTreeSet<String>,
    /// Puts startup values back after a RESET (see `settings::restore_sql`).
    restore_sql: Option<Arc<str>>,
    /// A Parse with settings effects was sent: restore after the batch's Sync.
    restore_pending: bool,
    /// The restore query is owed after a request that also ran COPY FROM STDIN: see
    /// [`RestoreAfterCopy`].
    restore_after_copy: RestoreAfterCopy,
    /// A statement bound in the open extended batch copies from STDIN.
    batch_copies_in: bool,
    /// A ReadyForQuery held back until the restore query behind it completes.
    held_ready: Option<BytesMut>,
    /// The client's span, parent of the relay's log events.
    span: tracing::Span,
    /// Backends (bit per index) that failed the current request: a repeat avoids them.
    avoid: u64,
    /// Room for the replicas a read may go to, kept between requests (no allocation per
    /// read): see `choose_replica`.
    candidates: Vec<crate::balance::Candidate>,
    /// Replicas (bit per index) that cancelled the current request for a conflict with
    /// recovery: a repeat avoids them while the routing has another server for it.
    conflicted: u64,
    /// The server was just attached for the request at the front of the client buffer.
    fresh_attach: bool,
    /// A request that ends the transaction block (`COMMIT`, `ROLLBACK`, `PREPARE TRANSACTION`,
    /// not `AND CHAIN`) was sent and is not answered yet: on a replica, what the client sent
    /// behind it is routed afresh once it is (see `leave_for_next_request`); if the server
    /// connection is lost meanwhile, the block is over all the same (see `server_lost`).
    ending_block: bool,
    /// A statement bound in the open extended batch ends the transaction block: its Sync
    /// sets `ending_block`.
    batch_ends_block: bool,
    /// The last message sent in the open batch was an Execute while `batch_ends_block` (the
    /// block's end, run): what the client sends next in the batch is split from it (see
    /// `split_after_block_end`). (Not told by what answers are due: those may all be in.)
    ended_block_last: bool,
    /// The Query at the front of the client buffer is the first part of one split after the
    /// end of a read-only transaction on a replica (see `split_query_after_block_end`).
    split_first: bool,
    /// A shutdown found the client between transactions while the proxy's own queries after
    /// its last one still ran: its session ends once they are answered, and no request it
    /// sends meanwhile runs (relay.rs).
    drain_due: bool,
    /// The first part of the client's split request (split.rs) is answered and the rest is
    /// not sent yet: the client, owed its ReadyForQuery, is not between requests.
    split_rest_due: bool,
    /// That first part failed: the rest of the Query, next in the client buffer, is dropped
    /// unanswered (PostgreSQL stops a Query at its first error).
    drop_split_rest: bool,
    /// A CopyDone/CopyFail was sent after the last Execute or Query, either of which may start
    /// a COPY FROM STDIN (tells which Syncs the server ignores during the copy).
    copy_ended_since_request: bool,
    /// Extended-protocol messages were sent without their Sync yet.
    batch_open: bool,
    /// Whether the client is leaving with requests still to run or answer.
    leaving: leaving::Leaving,
    /// The client's messages are copy data: the server began a COPY FROM STDIN
    /// (CopyInResponse or CopyBothResponse relayed) that the client has not ended. (A client
    /// that sends its data and CopyDone right behind the request ends the copy before the
    /// server's response says it began: see `Pending::end_copy_ahead`.)
    copy_in: bool,
    /// A statement that may change a setting a Parse depends on ran since the settings were
    /// last read back (see `parse_context`).
    context_unsettled: bool,
    /// Settings changed and not read back since (session pooling, a pinned client: nothing
    /// reads them back), so `desired` no longer says what a Parse is analysed under.
    settings_unread: bool,
}
