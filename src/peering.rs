//! Cancel requests shared between switchyard processes (`[peering]`, PgBouncer's `peers`).
//!
//! A client cancels its query by opening a new connection, which a load balancer, or the
//! kernel under `so_reuseport`, may hand to another process than the one serving the client.
//! That process does not know the key, so it sends the request on to every peer's
//! `peering.listen` port, where each places it as if it had arrived on its own `listen`. What
//! arrives on that port is never sent on again: a request crosses one hop at most, however
//! the peers list each other, and no bits of the cancel key are spent on routing (its pid
//! and secret stay as random as PostgreSQL's own).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use crate::app::App;
use crate::protocol::startup;
use crate::session::cancel::{send_cancel, CancelOutcome, SERVER_LIMIT};

/// How long a peer's connection may take to deliver its one request (a peer sends it as
/// soon as it is connected).
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// How long connecting to a peer may take.
const PEER_CONNECT: Duration = Duration::from_secs(1);
/// How long a peer may take to answer: longer than it may wait for its server itself, so
/// that a slow server is not mistaken for an unreachable peer.
const PEER_LIMIT: Duration = Duration::from_secs(SERVER_LIMIT.as_secs() + 2);

/// Sends a cancel request this process did not issue to every peer, at once, and returns
/// when each has closed the connection (having placed it, or found the key unknown too) or
/// failed. The client's connection waits meanwhile, as a cancel sent to PostgreSQL waits
/// until the backend was signalled. Returns how many peers took the request.
pub async fn forward(app: &App, pid: i32, secret: i32) -> usize {
    let config = app.config.load_full();
    let Some(p) = &config.config.peering else {
        return 0;
    };
    let Some(_in_flight) = InFlight::claim(pid, secret) else {
        // The same key again while its own forward is still under way: a peer list that
        // names a process's client port brought it back. Sent on again, it would go round.
        tracing::warn!(
            "a cancel request came back while it was being forwarded: not forwarded again (does \
             a [peering] peers entry name a `listen` port instead of a `peering.listen`?)"
        );
        return 0;
    };
    let own = app.peer_listen.get().copied();
    let mut sends = tokio::task::JoinSet::new();
    for peer in &p.peers {
        let address = peer.get_ref().clone();
        if own.is_some_and(|own| is_self(own, &address)) {
            continue;
        }
        sends.spawn(async move {
            if address.parse::<SocketAddr>().is_ok() {
                let r = send_cancel(&address, pid, secret, PEER_CONNECT, PEER_LIMIT).await;
                return (address, Some(r));
            }
            // A host name: resolved once, here, both to skip this process and to connect.
            let addrs = match resolve(&address).await {
                Ok(a) => a,
                Err(e) => return (address, Some(Err(e))),
            };
            if own.is_some_and(|own| addrs.iter().any(|&a| is_self_addr(own, a))) {
                return (address, None);
            }
            let r = send_cancel(&addrs[..], pid, secret, PEER_CONNECT, PEER_LIMIT).await;
            (address, Some(r))
        });
    }
    let mut took = 0;
    while let Some(done) = sends.join_next().await {
        match done {
            Ok((_, None)) => {}
            Ok((_, Some(Ok(())))) => took += 1,
            Ok((peer, Some(Err(e)))) => {
                tracing::warn!(%peer, error = %e, "forwarding a cancel request to a peer failed")
            }
            Err(e) => tracing::warn!(error = %e, "cancel forwarding task failed"),
        }
    }
    took
}

/// How many forwards [`InFlight`] tracks at most; past that, more go untracked (forwarded
/// all the same), so a flood of unknown keys cannot stop anyone's forwards.
const IN_FLIGHT_MAX: usize = 4096;

/// A key being forwarded now. A request crosses one hop when the peers are listed by their
/// `peering.listen`; a list naming client ports would send it round, and it would come back
/// while its own forward is still under way (that waits for every peer): such a return is
/// not forwarded again. A client's later cancel of the same session's next query is.
struct InFlight(Option<(i32, i32)>);

impl InFlight {
    fn keys() -> std::sync::MutexGuard<'static, std::collections::HashSet<(i32, i32)>> {
        use std::sync::{Mutex, OnceLock};
        static KEYS: OnceLock<Mutex<std::collections::HashSet<(i32, i32)>>> = OnceLock::new();
        KEYS.get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// `None` if the key is being forwarded already.
    fn claim(pid: i32, secret: i32) -> Option<InFlight> {
        let mut keys = Self::keys();
        if keys.contains(&(pid, secret)) {
            return None;
        }
        if keys.len() >= IN_FLIGHT_MAX {
            return Some(InFlight(None));
        }
        keys.insert((pid, secret));
        Some(InFlight(Some((pid, secret))))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(key) = self.0 {
            Self::keys().remove(&key);
        }
    }
}

/// Peer host names being resolved at once, at most (each holds a blocking thread, and a
/// lookup given up on still runs until the resolver returns).
const MAX_LOOKUPS: usize = 8;

static LOOKUPS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_LOOKUPS);

/// The addresses of a `host:port` peer entry, within [`PEER_CONNECT`], by at most
/// [`MAX_LOOKUPS`] lookups at once: while the resolver is slow, unknown cancel keys do not
/// pile up blocking threads (past that, the entry is skipped for this request).
async fn resolve(peer: &str) -> std::io::Result<Vec<SocketAddr>> {
    resolve_within(&LOOKUPS, peer).await
}

async fn resolve_within(
    lookups: &'static tokio::sync::Semaphore,
    peer: &str,
) -> std::io::Result<Vec<SocketAddr>> {
    use std::net::ToSocketAddrs;
    let permit = lookups.try_acquire().map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::WouldBlock,
            format!("more than {MAX_LOOKUPS} peer names being resolved at once"),
        )
    })?;
    let query = peer.to_owned();
    let task = tokio::task::spawn_blocking(move || {
        // (Held until the resolver returns, even after the forward stopped waiting.)
        let _permit = permit;
        query.to_socket_addrs().map(Iterator::collect::<Vec<_>>)
    });
    let addrs: Vec<SocketAddr> = tokio::time::timeout(PEER_CONNECT, task)
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("name not resolved within {PEER_CONNECT:?}"),
            )
        })?
        .map_err(std::io::Error::other)??;
    if addrs.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the name has no address",
        ));
    }
    Ok(addrs)
}

/// Whether the entry `peer`, an IP address and port, is this process (see
/// [`is_self_addr`]). A host name is not resolved here: [`forward`] resolves it.
pub fn is_self(own: SocketAddr, peer: &str) -> bool {
    peer.parse::<SocketAddr>()
        .is_ok_and(|addr| is_self_addr(own, addr))
}

/// Whether a peer at `addr` is this process, whose peering port is bound to `own`: the same
/// address, or, bound to a wildcard (`0.0.0.0:6442`), the same port on an address of this
/// host (binding a socket to an address succeeds only on a host that has it). `[::]` takes
/// IPv4 connections too, unless the host makes IPv6 sockets IPv6-only.
fn is_self_addr(own: SocketAddr, addr: SocketAddr) -> bool {
    addr == own
        || (own.ip().is_unspecified()
            && addr.port() == own.port()
            && (addr.is_ipv4() == own.is_ipv4() || (own.is_ipv6() && !ipv6_only()))
            && std::net::UdpSocket::bind((addr.ip(), 0)).is_ok())
}

/// Whether IPv6 sockets bound to `[::]` take only IPv6 (Linux `net.ipv6.bindv6only`; off by
/// default, and then they take IPv4 connections too).
fn ipv6_only() -> bool {
    static ONLY: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ONLY.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/net/ipv6/bindv6only").is_ok_and(|v| v.trim() == "1")
    })
}

/// Serves the peers' cancel requests on `listener` until the proxy stops. At most
/// `max_client_connections` (as the configuration says now: a reload changes it) are handled
/// at once; connections past that are closed unread (their cancel is lost, as one sent to a
/// PostgreSQL server at its connection limit).
pub async fn serve(app: Arc<App>, listener: TcpListener) {
    let busy = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "peering accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = app.kill.cancelled() => return,
        };
        let Some(slot) = Busy::take(&busy, app.config.load().config.max_client_connections) else {
            tracing::debug!("peering port busy: connection closed");
            continue;
        };
        let app = app.clone();
        tokio::spawn(async move {
            place(&app, stream).await;
            drop(slot);
        });
    }
}

/// One of the connections the peering port handles at once.
struct Busy(Arc<std::sync::atomic::AtomicUsize>);

impl Busy {
    /// A place among `max`, if one is free (only the accept loop takes places).
    fn take(count: &Arc<std::sync::atomic::AtomicUsize>, max: usize) -> Option<Busy> {
        use std::sync::atomic::Ordering;
        (count.load(Ordering::Acquire) < max).then(|| {
            count.fetch_add(1, Ordering::AcqRel);
            Busy(count.clone())
        })
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Reads one CancelRequest from a peer and places it here. Anything else gets a FATAL that
/// says what this port is (a client pointed at it by mistake learns why it cannot log in).
async fn place(app: &App, mut stream: TcpStream) {
    let Some(startup::Initial::Cancel { pid, secret }) =
        crate::net::read_initial(&mut stream, READ_TIMEOUT).await
    else {
        crate::server::refuse(
            stream,
            "08P01",
            "this is a switchyard peering port: it takes only cancel requests from other switchyard processes",
        )
        .await;
        return;
    };
    let outcome = app.cancels.cancel(pid, secret).await;
    app.metrics
        .cancels
        .with_label_values(&[match outcome {
            CancelOutcome::Unknown => "peer_unknown",
            _ => outcome.label(),
        }])
        .inc();
}

#[cfg(test)]
mod tests {
    use super::{ipv6_only, is_self, is_self_addr, resolve, resolve_within, Busy, InFlight};

    #[test]
    fn a_key_is_not_forwarded_again_while_its_forward_is_under_way() {
        let (pid, secret) = (-17, 0x5eed_1234);
        let first = InFlight::claim(pid, secret).expect("the first forward");
        assert!(InFlight::claim(pid, secret).is_none(), "it came back");
        assert!(InFlight::claim(pid, secret + 1).is_some(), "another key");
        drop(first);
        assert!(
            InFlight::claim(pid, secret).is_some(),
            "a later cancel of the same key"
        );
    }

    #[test]
    fn a_process_knows_its_own_entry() {
        let own = "127.0.0.1:7001".parse().unwrap();
        assert!(is_self(own, "127.0.0.1:7001"));
        assert!(!is_self(own, "127.0.0.1:7002"));
        assert!(!is_self(own, "127.0.0.2:7001"), "another loopback address");
        assert!(!is_self(own, "localhost:7001"), "names are not resolved");
        let wildcard = "0.0.0.0:7001".parse().unwrap();
        assert!(
            is_self(wildcard, "127.0.0.1:7001"),
            "an address of this host"
        );
        assert!(!is_self(wildcard, "127.0.0.1:7002"));
        assert!(
            !is_self(wildcard, "192.0.2.1:7001"),
            "TEST-NET-1: not this host's"
        );
        assert!(!is_self(wildcard, "[::1]:7001"), "another family");
        // `[::]` takes IPv4 connections too (unless the host says IPv6-only).
        let dual = "[::]:7001".parse().unwrap();
        assert_eq!(is_self(dual, "127.0.0.1:7001"), !ipv6_only());
        assert!(!is_self(dual, "127.0.0.1:7002"));
        assert!(
            !is_self(dual, "192.0.2.1:7001"),
            "TEST-NET-1: not this host's"
        );
    }

    #[tokio::test]
    async fn a_host_name_entry_is_resolved() {
        let names_self = |own: &str, peer: &'static str| {
            let own: std::net::SocketAddr = own.parse().unwrap();
            async move {
                let addrs = resolve(peer).await.expect("localhost resolves");
                addrs.iter().any(|&a| is_self_addr(own, a))
            }
        };
        assert!(names_self("127.0.0.1:7001", "localhost:7001").await);
        assert!(!names_self("127.0.0.1:7001", "localhost:7002").await);
        assert!(names_self("0.0.0.0:7001", "localhost:7001").await);
        assert!(resolve("no-such-host.invalid:7001").await.is_err());
    }

    #[tokio::test]
    async fn lookups_past_the_bound_are_refused_at_once() {
        static NONE_FREE: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(0);
        let e = resolve_within(&NONE_FREE, "localhost:7001")
            .await
            .expect_err("no lookup may start");
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "{e}");
        static ONE_FREE: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);
        resolve_within(&ONE_FREE, "localhost:7001")
            .await
            .expect("one lookup");
        assert_eq!(ONE_FREE.available_permits(), 1, "its place is given back");
    }

    #[test]
    fn the_peering_port_takes_as_many_as_the_limit_says_now() {
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let a = Busy::take(&count, 2).expect("first");
        let b = Busy::take(&count, 2).expect("second");
        assert!(Busy::take(&count, 2).is_none());
        let c = Busy::take(&count, 3).expect("a reload raised the limit");
        assert!(Busy::take(&count, 1).is_none(), "a reload lowered it");
        drop((a, b, c));
        assert!(Busy::take(&count, 1).is_some());
    }
}
