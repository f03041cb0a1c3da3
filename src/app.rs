//! The handles every task shares, passed explicitly (no global state): configuration snapshot,
//! cluster view, pools, metrics, statement registry, cancel registry, shutdown tokens.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use crate::cluster::Cluster;
use crate::config::Loaded;
use crate::metrics::Metrics;
use crate::pool::Pools;
use crate::session::cancel::CancelRegistry;
use crate::session::statements::Registry;
use crate::sql::Classifier;

/// Shared state of one running proxy.
pub struct App {
    /// The current configuration (replaced on reload).
    pub config: ArcSwap<Loaded>,
    /// How many times `config` was replaced (sessions compare it to keep their own copy).
    config_version: std::sync::atomic::AtomicU64,
    /// The classifier built from the current configuration.
    pub classifier: ArcSwap<Classifier>,
    /// The cluster view.
    pub cluster: Arc<Cluster>,
    /// Server connection pools.
    pub pools: Arc<Pools>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Interned prepared statements.
    pub statements: Registry,
    /// Client cancel keys.
    pub cancels: CancelRegistry,
    /// Fired on SIGTERM/SIGINT (by [`App::begin_shutdown`]): stop accepting, finish
    /// transactions, then close.
    pub shutdown: CancellationToken,
    /// Set with `shutdown`: sessions read this flag on every wakeup instead of the token,
    /// whose check takes a lock.
    shutting_down: std::sync::atomic::AtomicBool,
    /// Fired when the shutdown grace period ends: close everything now.
    pub kill: CancellationToken,
    /// Random secret for fake SCRAM exchanges with unknown users.
    pub mock_secret: [u8; 32],
    /// Read-your-writes watermarks.
    pub ryw: crate::ryw::Ryw,
    /// Statements that wrote although classified as reads.
    pub write_cache: crate::session::route::WriteCache,
    /// Each database's volatile functions.
    pub catalogs: crate::catalog::Catalogs,
    /// Role membership read for `hba_file` lines that need it.
    pub memberships: crate::session::Memberships,
    /// Round-robin position.
    pub rr: std::sync::atomic::AtomicUsize,
    /// Shared copies of session settings.
    pub settings: crate::session::settings::Interner,
    /// Reloads asked for by the admin console, carried out by the task that handles SIGHUP.
    pub reloads: Reloads,
    /// The admin console's `PAUSE`: new transactions wait until `RESUME`.
    pub pause: crate::pause::Pause,
    /// The address the peering port is bound to (set once at start; a reload does not
    /// move it).
    pub peer_listen: std::sync::OnceLock<std::net::SocketAddr>,
    /// How many client connections the open-file limit leaves room for
    /// ([`crate::net::fd_limit::client_room`]), set when the listeners are bound.
    pub client_room: std::sync::OnceLock<usize>,
    /// The admin console's `DISABLE`: databases that refuse new logins.
    pub disabled: crate::pause::Disabled,
}

/// Where a reload's outcome goes: the number of changes, or why the file was rejected.
pub type ReloadReply = tokio::sync::oneshot::Sender<Result<usize, String>>;

/// The admin console's way to the reload that SIGHUP runs (one task owns the monitor that a
/// reload restarts).
pub struct Reloads {
    tx: tokio::sync::mpsc::UnboundedSender<ReloadReply>,
    rx: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<ReloadReply>>>,
}

impl Default for Reloads {
    fn default() -> Self {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        Reloads {
            tx,
            rx: std::sync::Mutex::new(Some(rx)),
        }
    }
}

impl Reloads {
    /// Reloads the configuration file and waits for the outcome.
    pub async fn request(&self) -> Result<usize, String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(tx)
            .map_err(|_| "switchyard is shutting down".to_owned())?;
        rx.await
            .unwrap_or_else(|_| Err("switchyard is shutting down".into()))
    }

    /// The receiving end, for the one task that carries reloads out.
    pub fn take_receiver(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<ReloadReply>> {
        self.rx.lock().expect("reloads").take()
    }
}

impl App {
    /// Builds the shared state for a configuration.
    pub fn new(
        config: Loaded,
        cluster: Arc<Cluster>,
        pools: Arc<Pools>,
        metrics: Arc<Metrics>,
    ) -> Arc<App> {
        let classifier = classifier_for(&config);
        let config = Arc::new(config);
        // (The pools know the configuration from the start: a reload compares with it.)
        pools.reconfigure(&config);
        Arc::new(App {
            config: ArcSwap::new(config),
            config_version: Default::default(),
            classifier: ArcSwap::from_pointee(classifier),
            cluster,
            pools,
            statements: Registry::new(Some(metrics.prepared_statements.clone())),
            metrics,
            cancels: CancelRegistry::default(),
            shutdown: CancellationToken::new(),
            shutting_down: Default::default(),
            kill: CancellationToken::new(),
            mock_secret: rand::random(),
            ryw: Default::default(),
            write_cache: Default::default(),
            catalogs: Default::default(),
            memberships: Default::default(),
            rr: Default::default(),
            settings: Default::default(),
            reloads: Default::default(),
            pause: Default::default(),
            disabled: Default::default(),
            peer_listen: Default::default(),
            client_room: Default::default(),
        })
    }

    /// Starts a graceful shutdown.
    pub fn begin_shutdown(&self) {
        self.shutting_down
            .store(true, std::sync::atomic::Ordering::Release);
        self.shutdown.cancel();
    }

    /// Whether a graceful shutdown has started (lock-free).
    pub fn shutting_down(&self) -> bool {
        self.shutting_down
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Installs a new configuration (after it validated). It is published before the pools
    /// are reconfigured: a pool made meanwhile by another worker thread gets the new settings
    /// from the snapshot, from the reconfiguration, or (made after it, by a session that read
    /// the old snapshot) from the copy the reconfiguration left the pools; never only the
    /// old ones.
    ///
    /// A changed `[server_tls]` closes the server connections opened under the old one: the
    /// pools' (idle ones at once, ones in use when released), among them those `[auth_query]`
    /// looks passwords up on, and the `hba_file` membership lookups' connection. A server
    /// connection that does not meet `[server_tls]` is never used; one opened in plain text
    /// before a reload that asks for TLS would otherwise serve on until `max_lifetime`.
    pub fn install(&self, config: Loaded) {
        let server_tls_changed = self.config.load().config.server_tls != config.config.server_tls;
        self.classifier.store(Arc::new(classifier_for(&config)));
        let config = Arc::new(config);
        self.config.store(config.clone());
        self.pools.reconfigure(&config);
        if server_tls_changed {
            self.pools.reconnect();
            self.memberships.close();
        }
        self.config_version
            .fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    /// How many configurations were installed after the first.
    pub fn config_version(&self) -> u64 {
        self.config_version
            .load(std::sync::atomic::Ordering::Acquire)
    }
}

fn classifier_for(config: &Loaded) -> Classifier {
    let r = &config.config.routing;
    Classifier::new(&r.write_functions, &r.read_functions)
}
