//! Cancel keys: the proxy gives each client its own BackendKeyData and maps it to whatever
//! server connection that client is using at the moment, so a CancelRequest reaches the server
//! running that client's query and nothing else. The same registry ends a client whose pid
//! a `pg_terminate_backend` call through the proxy names ([`CancelRegistry::terminate`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::pool::Pool;

/// Where a client's query is running now.
#[derive(Clone)]
pub struct Target {
    /// The pool (for the server address).
    pub pool: Arc<Pool>,
    /// The server's process id and secret.
    pub pid: i32,
    pub secret: i32,
    /// When that server connection was opened ([`crate::pool::clock`] milliseconds).
    pub opened: u64,
    /// The client keeps it between transactions (session pooling, or pinned).
    pub held: bool,
}

/// What the admin console shows of a client; fixed at login.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// The database it asked for.
    pub database: String,
    /// Its address.
    pub peer: crate::net::listener::Peer,
    /// Whether its connection is encrypted.
    pub tls: bool,
    /// `application_name` from its startup packet (the admin console shows the current one).
    pub application_name: String,
    /// When it connected.
    pub since: std::time::Instant,
    /// A console connection rather than a client of the servers.
    pub console: bool,
}

/// One client as the admin console lists it.
pub struct ClientRow {
    /// The process id the client was given.
    pub pid: i32,
    /// Its user.
    pub user: Arc<str>,
    /// Fixed facts.
    pub info: ClientInfo,
    /// The server connection it holds now, if any.
    pub target: Option<Target>,
    /// Its request waits for a server connection (a pool slot, a primary, `RESUME`) or is
    /// on its way to another server.
    pub waiting: bool,
}

/// One client's slot.
pub struct CancelSlot {
    state: Mutex<SlotState>,
    /// The client's user (who may end it, see [`CancelRegistry::terminate`]).
    user: Arc<str>,
    /// For the admin console.
    info: ClientInfo,
    /// Ends the client's session (a child of the proxy's own kill switch).
    pub kill: CancellationToken,
    /// `kill` was cancelled for this client alone (read without the token's lock).
    killed: AtomicBool,
    /// Where the client's request stands while it has no server connection: [`IDLE`],
    /// [`WAITING`] or [`BETWEEN`], with [`CANCELLED`] once a cancel came meanwhile. An atomic,
    /// not in `state`: a request marks itself waiting each time it needs a server, and takes
    /// no lock for it (the slot's lock is taken once the connection is attached, which reads
    /// and resets this under it).
    unattached: AtomicU8,
    /// Wakes a wait of the request's ([`cancelled_unattached`](Self::cancelled_unattached))
    /// when a cancel comes.
    cancelled: tokio::sync::Notify,
}

/// No request is waiting for a server: a cancel has nothing to do (as PostgreSQL ignores one
/// for an idle session).
const IDLE: u8 = 0;
/// The request waits for a server connection: a slot of the pool, a primary
/// (`primary_wait`), a replica to replay its session's last commit (`ryw_wait`), a `RESUME`.
const WAITING: u8 = 1;
/// The request goes to another server (its first one failed or refused it).
const BETWEEN: u8 = 2;
/// Flag: a cancel came while [`WAITING`] or [`BETWEEN`]; the request is answered as
/// cancelled instead of being sent.
const CANCELLED: u8 = 4;

#[derive(Default)]
struct SlotState {
    /// The server connection the client uses now.
    target: Option<Target>,
    /// A cancel is being delivered to this server process (its pid and secret). A session
    /// giving that connection up meanwhile discards it rather than hand it to another client,
    /// whose query the stray cancel could hit.
    delivering: Option<(i32, i32)>,
    /// A cancel whose delivery failed or timed out after it may have been sent: it may still
    /// reach this server process, so its connection is discarded when given up too.
    stray: Option<(i32, i32)>,
    /// The `application_name` the client set since its startup, if it did.
    application_name: Option<String>,
}

impl CancelSlot {
    /// Whether this client was ended by [`CancelRegistry::terminate`].
    #[inline]
    pub fn killed(&self) -> bool {
        self.killed.load(Ordering::Acquire)
    }

    /// Ends the client's session.
    fn end(&self) {
        self.killed.store(true, Ordering::Release);
        self.kill.cancel();
    }

    /// Records the server connection the client now uses. Returns whether a cancel came
    /// while the request waited for it ([`waiting`](Self::waiting)) or was between servers
    /// ([`between_servers`](Self::between_servers)): the request is to be answered as
    /// cancelled instead of sent.
    pub fn set(&self, t: Target) -> bool {
        let mut s = self.state.lock().expect("cancel slot");
        s.target = Some(t);
        // (Under the lock: a cancel sees either this connection or the request unattached.)
        self.unattached.swap(IDLE, Ordering::AcqRel) & CANCELLED != 0
    }

    /// The client's request waits for a server connection: a cancel until [`set`](Self::set)
    /// or [`end_wait`](Self::end_wait) is kept, and ends the wait
    /// ([`cancelled_unattached`](Self::cancelled_unattached)). A request already waiting or
    /// between servers keeps what it has (a cancel that came meanwhile included). No lock: it
    /// runs for every request that needs a server.
    #[inline]
    pub fn waiting(&self) {
        let _ =
            self.unattached
                .compare_exchange(IDLE, WAITING, Ordering::AcqRel, Ordering::Relaxed);
    }

    /// The client's request goes to another server (its first one failed or refused it): a
    /// cancel until [`set`](Self::set) or [`end_wait`](Self::end_wait) is kept. `cancelled`:
    /// one came already, for the server connection lost (on its way there, or not delivered):
    /// the request is answered as cancelled rather than run again.
    pub fn between_servers(&self, cancelled: bool) {
        let state = if cancelled {
            BETWEEN | CANCELLED
        } else {
            BETWEEN
        };
        self.unattached.store(state, Ordering::Release);
    }

    /// The request that waited for a server or was between servers is over without reaching
    /// one (answered with an error, cancelled ones included): a cancel from now on finds it
    /// idle.
    pub fn end_wait(&self) {
        self.unattached.store(IDLE, Ordering::Release);
    }

    /// Whether a cancel came for the request while it had no server connection.
    pub fn cancelled_while_unattached(&self) -> bool {
        self.unattached.load(Ordering::Acquire) & CANCELLED != 0
    }

    /// Completes once a cancel came for the request while it had no server connection (at
    /// once if one came already): a wait of the request's selects on it to end early. Cancel
    /// safe.
    pub async fn cancelled_unattached(&self) {
        loop {
            let notified = self.cancelled.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the flag is read: a cancel after the read wakes it.
            notified.as_mut().enable();
            if self.cancelled_while_unattached() {
                return;
            }
            notified.await;
        }
    }

    /// The client keeps its server connection between transactions from now on (pinned).
    pub fn mark_held(&self) {
        if let Some(t) = self.state.lock().expect("cancel slot").target.as_mut() {
            t.held = true;
        }
    }

    /// The client's `application_name` is now `name` (a `SET`, a `RESET`).
    pub fn set_application_name(&self, name: &str) {
        self.state.lock().expect("cancel slot").application_name = Some(name.to_owned());
    }

    /// The client gives its server connection up. Returns `false` when a cancel is on its way
    /// to that connection, or may be: it must not serve anyone else.
    pub fn clear(&self) -> bool {
        let mut s = self.state.lock().expect("cancel slot");
        let Some(t) = s.target.take() else {
            return s.delivering.is_none();
        };
        let process = Some((t.pid, t.secret));
        // (A stray cancel for a connection given up before was dealt with then.)
        let stray = std::mem::take(&mut s.stray) == process;
        !(stray || s.delivering == process)
    }
}

/// Marks a slot as delivering a cancel to a server process until dropped; `landed: false`
/// leaves it marked as a possible stray.
struct Delivering<'a> {
    slot: &'a CancelSlot,
    process: (i32, i32),
    landed: bool,
}

impl Drop for Delivering<'_> {
    fn drop(&mut self) {
        if let Ok(mut s) = self.slot.state.lock() {
            if s.delivering == Some(self.process) {
                s.delivering = None;
            }
            // (A connection the client already gave up was discarded then: `delivering`
            // named it.)
            let current = s.target.as_ref().map(|t| (t.pid, t.secret));
            if !self.landed && current == Some(self.process) {
                s.stray = Some(self.process);
            }
        }
    }
}

/// Issued pid → (secret, the client's slot).
type KeyMap = HashMap<i32, (i32, Arc<CancelSlot>)>;

/// All clients' cancel keys.
#[derive(Default)]
pub struct CancelRegistry {
    map: Arc<Mutex<KeyMap>>,
}

/// Removes the client's key when its session ends.
pub struct Registration {
    map: Arc<Mutex<KeyMap>>,
    /// The key handed to the client.
    pub pid: i32,
    pub secret: i32,
    /// The client's slot.
    pub slot: Arc<CancelSlot>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.map.lock().expect("cancels").remove(&self.pid);
    }
}

/// Issued pids that are not a server's start here: above Linux's largest process id
/// (`PID_MAX_LIMIT`, 2^22), so no server process can have one.
const ISSUED_MIN: i32 = 1 << 22;

impl CancelRegistry {
    /// Issues a fresh random key for a new client of `user`, described by `info`; `kill` is
    /// the proxy's kill switch, which ends this client too.
    pub fn register(
        &self,
        user: Arc<str>,
        info: ClientInfo,
        kill: &CancellationToken,
    ) -> Registration {
        let slot = Arc::new(CancelSlot {
            state: Mutex::default(),
            user,
            info,
            kill: kill.child_token(),
            killed: AtomicBool::new(false),
            unattached: AtomicU8::new(IDLE),
            cancelled: tokio::sync::Notify::new(),
        });
        let mut map = self.map.lock().expect("cancels");
        loop {
            let pid = (rand::random::<i32>() & 0x7fff_ffff) | ISSUED_MIN;
            if map.contains_key(&pid) {
                continue;
            }
            let secret = rand::random::<i32>();
            map.insert(pid, (secret, slot.clone()));
            return Registration {
                map: self.map.clone(),
                pid,
                secret,
                slot,
            };
        }
    }

    /// Makes `pid` the client's key (its server process's own, when it keeps that server for
    /// its whole session), unless another client's key is that number. Returns whether it did.
    pub fn adopt_pid(&self, reg: &mut Registration, pid: i32) -> bool {
        let mut map = self.map.lock().expect("cancels");
        if pid <= 0 || map.contains_key(&pid) {
            return false;
        }
        if let Some(entry) = map.remove(&reg.pid) {
            map.insert(pid, entry);
            reg.pid = pid;
        }
        reg.pid == pid
    }

    /// The process ids (in order) of the clients of `database` (or of any) in a transaction
    /// now: holding a server connection they give back when it ends (not session-pooled or
    /// pinned). For `PAUSE`, which asks every 20 ms: no row is copied.
    pub fn in_transaction(&self, database: Option<&str>) -> Vec<i32> {
        let slots: Vec<(i32, Arc<CancelSlot>)> = {
            let map = self.map.lock().expect("cancels");
            map.iter()
                .filter(|(_, (_, slot))| database.is_none_or(|db| slot.info.database == db))
                .map(|(pid, (_, slot))| (*pid, slot.clone()))
                .collect()
        };
        let mut open: Vec<i32> = slots
            .into_iter()
            .filter(|(_, slot)| {
                let state = slot.state.lock().expect("cancel slot");
                state.target.as_ref().is_some_and(|t| !t.held)
            })
            .map(|(pid, _)| pid)
            .collect();
        open.sort_unstable();
        open
    }

    /// `pg_terminate_backend(pid)` went through the proxy from a client of `user` (a
    /// `superuser` or not): the client that was given `pid` ends as a direct connection
    /// would, if `user` may end it (PostgreSQL lets a role signal its own sessions, and
    /// superusers any). Returns whether a client was ended.
    pub fn terminate(&self, pid: i32, user: &str, superuser: bool) -> bool {
        let map = self.map.lock().expect("cancels");
        match map.get(&pid) {
            Some((_, slot)) if superuser || *slot.user == *user => {
                slot.end();
                true
            }
            _ => false,
        }
    }

    /// Ends every client of `database` (the admin console's `KILL db`; console sessions are
    /// not clients of a database). Returns how many.
    pub fn terminate_database(&self, database: &str) -> usize {
        let map = self.map.lock().expect("cancels");
        let mut ended = 0;
        for (_, slot) in map.values() {
            if !slot.info.console && slot.info.database == database {
                slot.end();
                ended += 1;
            }
        }
        ended
    }

    /// Every registered client, ordered by process id (for the admin console).
    pub fn clients(&self) -> Vec<ClientRow> {
        let slots: Vec<(i32, Arc<CancelSlot>)> = {
            let map = self.map.lock().expect("cancels");
            map.iter()
                .map(|(pid, (_, slot))| (*pid, slot.clone()))
                .collect()
        };
        let mut rows: Vec<ClientRow> = slots
            .into_iter()
            .map(|(pid, slot)| {
                let state = slot.state.lock().expect("cancel slot");
                let mut info = slot.info.clone();
                if let Some(name) = &state.application_name {
                    info.application_name.clone_from(name);
                }
                ClientRow {
                    pid,
                    user: slot.user.clone(),
                    info,
                    target: state.target.clone(),
                    waiting: slot.unattached.load(Ordering::Acquire) & !CANCELLED != IDLE,
                }
            })
            .collect();
        rows.sort_by_key(|r| r.pid);
        rows
    }

    /// Delivers a client's CancelRequest to the server running its query. Unknown keys and
    /// wrong secrets are ignored (as PostgreSQL does): another process may have issued them
    /// (see [`crate::peering`]).
    pub async fn cancel(&self, pid: i32, secret: i32) -> CancelOutcome {
        let slot = {
            let map = self.map.lock().expect("cancels");
            match map.get(&pid) {
                Some((s, slot)) if *s == secret => slot.clone(),
                _ => return CancelOutcome::Unknown,
            }
        };
        let t = {
            let mut s = slot.state.lock().expect("cancel slot");
            let Some(t) = s.target.clone() else {
                // (Under the lock: `set` reads the flag under it.)
                let before =
                    slot.unattached
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                            (u != IDLE).then_some(u | CANCELLED)
                        });
                drop(s);
                return match before {
                    Ok(u) => {
                        slot.cancelled.notify_waiters();
                        if u & BETWEEN != 0 {
                            CancelOutcome::Deferred
                        } else {
                            CancelOutcome::Waiting
                        }
                    }
                    Err(_) => CancelOutcome::NotRunning,
                };
            };
            // One cancel at a time per server process: a second one while the first is on its
            // way has nothing more to do (the query it would cancel is the one being
            // cancelled). One for the connection the client moved on to is delivered.
            if s.delivering == Some((t.pid, t.secret)) {
                return CancelOutcome::NotRunning;
            }
            s.delivering = Some((t.pid, t.secret));
            t
        };
        let mut delivering = Delivering {
            slot: &slot,
            process: (t.pid, t.secret),
            landed: false,
        };
        // Waiting for the server to close keeps the target connection out of other clients'
        // hands until the backend was signalled.
        match cancel_over(
            crate::net::server_addr::open_plain(&t.pool.key.address),
            t.pid,
            t.secret,
            SERVER_LIMIT,
            SERVER_LIMIT,
        )
        .await
        {
            Ok(()) => {
                delivering.landed = true;
                CancelOutcome::Sent
            }
            Err(e) => {
                // (Whether it was sent before the failure is not known.)
                tracing::warn!(error = %e, "cancel request to server failed");
                CancelOutcome::Failed
            }
        }
    }
}

/// Places a client's CancelRequest: with the server running that client's query, or, for a
/// key this process did not issue, with its peers (see [`crate::peering`]).
pub async fn place(app: &crate::app::App, pid: i32, secret: i32) {
    let outcome = app.cancels.cancel(pid, secret).await;
    let label = if outcome == CancelOutcome::Unknown
        && crate::peering::forward(app, pid, secret).await > 0
    {
        "to_peers"
    } else {
        outcome.label()
    };
    app.metrics.cancels.with_label_values(&[label]).inc();
}

/// What became of a CancelRequest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// Sent to the server running the client's query.
    Sent,
    /// The key is a client's of this process, and nothing was sent: it runs no query, or a
    /// cancel is already on its way.
    NotRunning,
    /// The key is a client's of this process, and sending to its server failed.
    Failed,
    /// The key is a client's of this process whose request is between two servers (being
    /// repeated): it is answered as cancelled instead of being sent again.
    Deferred,
    /// The key is a client's of this process whose request waits for a server connection (a
    /// full pool, a primary, a replica to replay, a `RESUME`): the wait ends, and the request
    /// is answered as cancelled without being sent.
    Waiting,
    /// Not a key this process issued (or its secret is wrong).
    Unknown,
}

impl CancelOutcome {
    /// The `cancel_requests_total` label.
    pub fn label(self) -> &'static str {
        match self {
            CancelOutcome::Sent => "forwarded",
            CancelOutcome::NotRunning => "not_running",
            CancelOutcome::Failed => "failed",
            CancelOutcome::Deferred => "between_servers",
            CancelOutcome::Waiting => "waiting",
            CancelOutcome::Unknown => "unknown",
        }
    }
}

/// How long a cancel request to a server may take, connecting included.
pub const SERVER_LIMIT: Duration = Duration::from_secs(5);

/// Sends a CancelRequest for `(pid, secret)` to `address` and waits until the other end
/// closes the connection: a PostgreSQL server does once it has signalled the backend, a
/// switchyard peer once it has placed the request. Fails after `connect` without a
/// connection, or `limit` in all.
pub async fn send_cancel(
    address: impl tokio::net::ToSocketAddrs,
    pid: i32,
    secret: i32,
    connect: Duration,
    limit: Duration,
) -> std::io::Result<()> {
    cancel_over(TcpStream::connect(address), pid, secret, connect, limit).await
}

/// [`send_cancel`] over the connection `open` makes (a server's address may be a Unix-domain
/// socket).
pub(crate) async fn cancel_over<S: AsyncRead + AsyncWrite + Unpin>(
    open: impl std::future::Future<Output = std::io::Result<S>>,
    pid: i32,
    secret: i32,
    connect: Duration,
    limit: Duration,
) -> std::io::Result<()> {
    let send = async {
        let mut s = tokio::time::timeout(connect, open).await.map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no connection within {connect:?}"),
            )
        })??;
        let mut buf = BytesMut::new();
        postgres_protocol::message::frontend::cancel_request(pid, secret, &mut buf);
        s.write_all(&buf).await?;
        let mut sink = [0u8; 64];
        while s.read(&mut sink).await? > 0 {}
        Ok(())
    };
    tokio::time::timeout(limit, send).await.unwrap_or_else(|_| {
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {limit:?}"),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration(registry: &CancelRegistry) -> Registration {
        let info = ClientInfo {
            database: "db".into(),
            peer: crate::net::listener::Peer::Unix,
            tls: false,
            application_name: String::new(),
            since: std::time::Instant::now(),
            console: false,
        };
        registry.register("u".into(), info, &CancellationToken::new())
    }

    #[tokio::test]
    async fn a_cancel_while_waiting_for_a_server_is_kept_and_wakes_the_wait() {
        let registry = CancelRegistry::default();
        let reg = registration(&registry);
        let slot = reg.slot.clone();
        // Idle: nothing to cancel, and nothing is remembered for the next request.
        assert_eq!(
            registry.cancel(reg.pid, reg.secret).await,
            CancelOutcome::NotRunning
        );
        slot.waiting();
        assert!(!slot.cancelled_while_unattached());
        let wait = tokio::spawn({
            let slot = slot.clone();
            async move { slot.cancelled_unattached().await }
        });
        tokio::task::yield_now().await;
        assert_eq!(
            registry.cancel(reg.pid, reg.secret).await,
            CancelOutcome::Waiting
        );
        tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .expect("woken")
            .expect("wait");
        // Marking it waiting again (routed again) keeps the cancel.
        slot.waiting();
        assert!(slot.cancelled_while_unattached());
        // Answered without a server: the next request starts clean.
        slot.end_wait();
        assert!(!slot.cancelled_while_unattached());
        assert_eq!(
            registry.cancel(reg.pid, reg.secret).await,
            CancelOutcome::NotRunning
        );
        slot.waiting();
        assert!(!slot.cancelled_while_unattached());
    }

    #[tokio::test]
    async fn a_cancel_while_between_servers_is_told_apart_and_read_when_attached() {
        let registry = CancelRegistry::default();
        let reg = registration(&registry);
        let slot = reg.slot.clone();
        slot.between_servers(false);
        // (A request being repeated stays so when it waits for its next server.)
        slot.waiting();
        assert_eq!(
            registry.cancel(reg.pid, reg.secret).await,
            CancelOutcome::Deferred
        );
        assert!(slot.cancelled_while_unattached());
        slot.end_wait();
        slot.waiting();
        // Wrong secrets are ignored, whatever the state.
        assert_eq!(
            registry.cancel(reg.pid, reg.secret.wrapping_add(1)).await,
            CancelOutcome::Unknown
        );
        assert!(!slot.cancelled_while_unattached());
    }
}
