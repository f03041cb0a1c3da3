//! The daemon: bind, start the monitor, accept clients (bounded admission), and the one
//! shutdown path: SIGTERM/SIGINT stop accepting, in-flight transactions get
//! `shutdown_timeout`, then everything closes. SIGHUP reloads the configuration.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use crate::app::App;
use crate::cluster::{Cluster, ClusterView, Monitor};
use crate::config::{self, Loaded};
use crate::metrics::Metrics;
use crate::net::listener::{Peer, UnixSocket};
use crate::net::Stream;
use crate::protocol::encode;

/// How many connections past `max_client_connections` may be heard out at once (each for up
/// to a few seconds: its startup packet, a TLS handshake, a cancel request to place); past
/// that, one is refused without reading it.
const TURN_AWAY_SLOTS: usize = 256;

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot make the unix socket in {dir}: {source}")]
    BindUnix { dir: String, source: std::io::Error },
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// The signals the daemon acts on, taken over as soon as it starts binding: one that arrives
/// while it starts (the cluster probed first, for up to `health.timeout`) waits for the loop
/// that handles them, rather than ending the process (SIGHUP's default action).
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}

/// A bound, not yet running proxy.
pub struct Server {
    app: Arc<App>,
    listener: TcpListener,
    /// `unix_socket_dir`'s socket.
    unix: Option<UnixSocket>,
    http: Option<TcpListener>,
    /// `peering.listen`: cancel requests from other switchyard processes.
    peering: Option<TcpListener>,
    monitor: Monitor,
    config_path: Option<PathBuf>,
    signals: Signals,
}

impl Server {
    /// Binds the listeners for `config` (nothing is accepted until [`Server::run`]).
    pub async fn bind(config: Loaded, config_path: Option<PathBuf>) -> Result<Server, RunError> {
        let signals = Signals::install().map_err(RunError::Signals)?;
        // The peering port first: a process that cannot have it fails before it shares
        // (so_reuseport) the other addresses, where the kernel would queue clients for it.
        let peering = match config.peer_listen {
            Some(addr) => Some(
                crate::net::listen(addr, false)
                    .map_err(|source| RunError::Bind { addr, source })?,
            ),
            None => None,
        };
        // The unix socket next, for the same reason (it is never shared), when its name is
        // known before `listen` is bound (not port 0).
        let bind_unix = |port: u16| match &config.unix_socket {
            Some(u) => UnixSocket::bind(&u.dir, port, u.mode, u.group)
                .map(Some)
                .map_err(|source| RunError::BindUnix {
                    dir: u.dir.display().to_string(),
                    source,
                }),
            None => Ok(None),
        };
        let mut unix = match config.listen.port() {
            0 => None,
            port => bind_unix(port)?,
        };
        // Then HTTP: once clients can connect, /metrics and /readyz answer too.
        let reuse_port = config.config.so_reuseport;
        let http = match config.http_listen {
            Some(addr) => Some(
                crate::net::listen(addr, reuse_port)
                    .map_err(|source| RunError::Bind { addr, source })?,
            ),
            None => None,
        };
        let listener =
            crate::net::listen(config.listen, reuse_port).map_err(|source| RunError::Bind {
                addr: config.listen,
                source,
            })?;
        if config.listen.port() == 0 {
            unix = bind_unix(listener.local_addr().map_or(0, |a| a.port()))?;
        }
        let metrics = Arc::new(Metrics::new());
        let cluster = Arc::new(Cluster::new(ClusterView::default()));
        let pools = Arc::new(crate::pool::Pools::new(metrics.clone()));
        let monitor = Monitor::new(cluster.clone(), metrics.clone(), pools.clone());
        let app = App::new(config, cluster, pools, metrics);
        if let Some(addr) = peering.as_ref().and_then(|l| l.local_addr().ok()) {
            let _ = app.peer_listen.set(addr);
        }
        let open_files = crate::net::fd_limit::raise();
        let _ = app.client_room.set(crate::net::fd_limit::client_room(
            open_files,
            TURN_AWAY_SLOTS,
        ));
        warn_if_short_of_files(&app);
        Ok(Server {
            app,
            listener,
            unix,
            http,
            peering,
            monitor,
            config_path,
            signals,
        })
    }

    /// The shared state (tests and the demo use it to trigger shutdown).
    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// The bound client address.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.listener.local_addr().expect("bound")
    }

    /// The bound HTTP address, if `http_listen` is set.
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        self.http.as_ref().and_then(|h| h.local_addr().ok())
    }

    /// Runs until shutdown completes.
    pub async fn run(mut self) {
        let app = self.app.clone();
        let config = app.config.load_full();
        // (The addresses bound: with port 0 in the configuration, the ports the system chose.)
        let listen = self.local_addr();
        let http = self.http_addr();
        // Probes go on through a shutdown's drain: a server failing meanwhile is still noticed
        // (its requests failed at once, a fenced primary cut off) until connections are killed.
        self.monitor.start(&config, &app.kill).await;
        let view = app.cluster.view();
        match view.primary {
            Some(p) => tracing::info!(primary = %view.backends[p].name, "cluster probed"),
            None => tracing::warn!(
                "no primary found yet; writes wait up to routing.primary_wait for one"
            ),
        }
        drop(view);
        tokio::spawn(
            app.pools
                .clone()
                .maintain_loop(app.cluster.clone(), app.kill.clone()),
        );
        if let Some(http) = self.http.take() {
            tokio::spawn(crate::admin::serve(app.clone(), http));
        }
        if let Some(peering) = self.peering.take() {
            // Until the process ends: the cancels of clients still draining arrive here too.
            tokio::spawn(crate::peering::serve(app.clone(), peering));
        }
        tokio::spawn(signals(
            app.clone(),
            self.signals,
            self.monitor,
            self.config_path.clone(),
        ));
        let http = http.map(|a| a.to_string()).unwrap_or_else(|| "off".into());
        match &self.unix {
            Some(u) => tracing::info!(
                %listen,
                %http,
                unix_socket = %u.path().display(),
                "switchyard accepting connections"
            ),
            None => tracing::info!(%listen, %http, "switchyard accepting connections"),
        }
        let tracker = TaskTracker::new();
        let client_room = app.client_room.get().copied().unwrap_or(usize::MAX);
        let turn_away_slots = Arc::new(tokio::sync::Semaphore::new(TURN_AWAY_SLOTS));
        let mut flood_refusal = BytesMut::new();
        encode::error(
            &mut flood_refusal,
            "FATAL",
            "53300",
            "sorry, too many clients already",
        );
        let console_reserve =
            Arc::new(tokio::sync::Semaphore::new(crate::session::CONSOLE_RESERVE));
        // (PostgreSQL's period for the same.)
        let mut touch = tokio::time::interval(Duration::from_secs(58 * 60));
        touch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let unix = async {
                match &self.unix {
                    Some(u) => u.accept().await,
                    None => std::future::pending().await,
                }
            };
            let accepted = tokio::select! {
                r = self.listener.accept() => r.map(|(tcp, peer)| (Stream::Plain(tcp), Peer::Tcp(peer))),
                r = unix => r.map(|s| (Stream::Unix(s), Peer::Unix)),
                _ = app.shutdown.cancelled() => break,
                _ = touch.tick() => {
                    if let Some(u) = &self.unix {
                        u.touch();
                    }
                    continue;
                }
            };
            let (stream, peer) = match accepted {
                Ok(s) => s,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            let c = app.config.load();
            if let Some(tcp) = stream.tcp() {
                crate::net::configure(tcp, c.config.pool.tcp_keepalive);
            }
            if app.metrics.clients.get() as usize >= c.config.max_client_connections
                || tracker.len() >= (c.config.max_client_connections * 2).min(client_room)
            {
                match turn_away_slots.clone().try_acquire_owned() {
                    Ok(slot) => {
                        let app = app.clone();
                        let (tracker, reserve) = (tracker.clone(), console_reserve.clone());
                        tokio::spawn(async move {
                            let reserved =
                                crate::session::turn_away(app.clone(), stream, &reserve).await;
                            drop(slot);
                            if let Some(r) = reserved {
                                let session = crate::session::run_reserved(app, r, peer);
                                tracker.track_future(session).await;
                            }
                        });
                    }
                    Err(_) => {
                        // A flood past the limit: no reads, no handshakes, refused at once,
                        // here (a fresh socket takes the few bytes): a task per refusal held
                        // its descriptor until it ran, and a flood accepted faster than they
                        // ran took the descriptors the pools need ("Too many open files").
                        app.metrics.rejected("max_clients");
                        app.metrics.error("53300");
                        let mut stream = stream;
                        stream.write_now(&flood_refusal);
                    }
                }
                continue;
            }
            tracker.spawn(crate::session::run(app.clone(), stream, peer));
        }
        drop(self.listener);
        drop(self.unix.take());
        tracker.close();
        let grace = app.config.load().config.shutdown_timeout;
        tracing::info!(
            clients = tracker.len(),
            ?grace,
            "shutting down: waiting for transactions to finish"
        );
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!(
                clients = tracker.len(),
                "grace period over: closing remaining connections"
            );
        }
        app.kill.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(2), tracker.wait()).await;
        app.pools.close_idle();
        tracing::info!("shutdown complete");
    }
}

/// Sends a connection FATAL `code` (plain or TLS, whatever `stream` is), giving it a second.
pub(crate) async fn refuse<W: tokio::io::AsyncWrite + Unpin>(
    mut stream: W,
    code: &str,
    message: &str,
) {
    let mut out = BytesMut::new();
    encode::error(&mut out, "FATAL", code, message);
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        crate::net::send_all(&mut stream, &out),
    )
    .await;
}

/// Signal handling: SIGTERM/SIGINT start shutdown; SIGHUP reloads.
async fn signals(app: Arc<App>, signals: Signals, mut monitor: Monitor, path: Option<PathBuf>) {
    let Signals {
        mut term,
        mut int,
        mut hup,
    } = signals;
    let Some(mut asked) = app.reloads.take_receiver() else {
        tracing::error!("reload requests already taken");
        return;
    };
    let on_term = |app: &App| {
        tracing::info!("SIGTERM: draining");
        app.begin_shutdown();
    };
    let on_int = |app: &App| {
        if app.shutting_down() {
            tracing::info!("second SIGINT: closing now");
            app.kill.cancel();
        } else {
            tracing::info!("SIGINT: draining");
            app.begin_shutdown();
        }
    };
    loop {
        let reply = tokio::select! {
            Some(reply) = asked.recv() => Some(reply),
            _ = term.recv() => { on_term(&app); continue; }
            _ = int.recv() => { on_int(&app); continue; }
            _ = hup.recv() => None,
            _ = app.kill.cancelled() => return,
        };
        let Some(p) = &path else {
            match reply {
                Some(reply) => {
                    let _ = reply.send(Err(
                        "switchyard was started without a configuration file".into()
                    ));
                }
                None => tracing::warn!("SIGHUP ignored: no configuration file"),
            }
            continue;
        };
        // The stop signals are heard while a reload runs: reading its files can hang (a
        // file on hung storage, a FIFO), and draining or closing must not wait for that.
        let reloading = reload(&app, &mut monitor, p);
        tokio::pin!(reloading);
        let outcome = loop {
            tokio::select! {
                outcome = &mut reloading => break outcome,
                _ = term.recv() => on_term(&app),
                _ = int.recv() => on_int(&app),
                _ = app.kill.cancelled() => return,
            }
        };
        if let Some(reply) = reply {
            let _ = reply.send(outcome);
        }
    }
}

/// Says so when the open-file limit leaves room for fewer client connections than
/// `max_client_connections`: those past it are refused (53300) all the same.
fn warn_if_short_of_files(app: &App) {
    let room = app.client_room.get().copied().unwrap_or(usize::MAX);
    let max = app.config.load().config.max_client_connections;
    if room < max {
        tracing::warn!(
            max_client_connections = max,
            room,
            "the open-file limit leaves room for fewer client connections than \
             max_client_connections (a quarter of it is kept for server connections): clients \
             past that are refused with 53300; raise the limit (ulimit -n, systemd's \
             LimitNOFILE=) or lower max_client_connections"
        );
    }
}

/// Re-reads the configuration; an invalid file is rejected and the old one stays. Returns the
/// number of changes, or the error.
pub async fn reload(
    app: &App,
    monitor: &mut Monitor,
    path: &std::path::Path,
) -> Result<usize, String> {
    // Off the event loop: loading reads files and derives the SCRAM verifiers of clear-text
    // passwords (a few milliseconds each), which would stall every client meanwhile.
    let owned = path.to_path_buf();
    let loaded = tokio::task::spawn_blocking(move || config::load(&owned))
        .await
        .map_err(|e| e.to_string())?;
    let mut new = match loaded {
        Ok(c) => c,
        Err(e) => {
            app.metrics.reloads.with_label_values(&["error"]).inc();
            tracing::error!(error = %e, "reload rejected: keeping the previous configuration");
            return Err(e.to_string());
        }
    };
    let old = app.config.load_full();
    new.keep_verifiers(&old);
    let changes = old.diff(&new);
    new.keep_restart_only(&old);
    let restart_monitor = old.config.backends != new.config.backends
        || old.config.health != new.config.health
        || old.config.users != new.config.users
        // TLS for the probes: a changed mode, or the authorities or the certificate files
        // read again (renewed in place under the same names).
        || old.config.server_tls != new.config.server_tls
        || new.config.server_tls.ca.is_some()
        || new.config.server_tls.cert.is_some();
    for c in &changes {
        tracing::info!(change = %c, "reload");
    }
    let more_clients = new.config.max_client_connections > old.config.max_client_connections;
    app.install(new);
    if more_clients {
        warn_if_short_of_files(app);
    }
    if restart_monitor {
        monitor.carry_over().await;
        let cfg = app.config.load_full();
        monitor.start(&cfg, &app.kill).await;
    }
    app.metrics.reloads.with_label_values(&["ok"]).inc();
    tracing::info!(changes = changes.len(), "configuration reloaded");
    Ok(changes.len())
}
