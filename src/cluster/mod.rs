//! The cluster: which backends exist, which are up, which one is primary, how far behind each
//! replica is. The monitor publishes an immutable `ClusterView` that readers load without
//! locking (`arc_swap`); the hot path never waits on the monitor.

mod divergence;
pub mod health;
pub mod lag;
mod monitor;
pub mod probe;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::Notify;

pub use health::Role;
pub use monitor::Monitor;

use crate::config::LagLimit;

/// Per-backend counters that outlive views (shared by name across reloads).
#[derive(Debug, Default)]
pub struct BackendStats {
    /// Requests in flight on this backend (for least-outstanding balancing).
    pub outstanding: AtomicUsize,
    /// Replay position as last read: set by each of the monitor's probes (0, unknown, when one
    /// fails: a server that restarts, or is rebuilt from an older backup, may come back
    /// behind what it had replayed), and by a session reading it while it waits for a
    /// read-your-writes position (fresher than the view between probes). Never only raised:
    /// a position that went back must not be trusted past the next read.
    pub replay_lsn: AtomicU64,
    /// Until when (coarse clock, ms) reads avoid it: a checkout could not reach it. Until the
    /// monitor sees it down (`fall` probes), every read would otherwise try it first.
    pub unreachable_until: AtomicU64,
}

/// One backend in a view.
#[derive(Debug, Clone)]
pub struct BackendView {
    /// Configured name.
    pub name: Arc<str>,
    /// `host:port`.
    pub address: String,
    /// Read weight.
    pub weight: u32,
    /// Reachable and answering probes (after thresholds).
    pub up: bool,
    /// Role after thresholds; `None` before the first successful probe.
    pub role: Option<Role>,
    /// Claims to be primary but is not the elected one (a server on a higher timeline claims it
    /// too, or one on the same timeline: then neither is trusted): no traffic.
    pub fenced: bool,
    /// Timeline, when known.
    pub timeline: Option<u32>,
    /// WAL position: current (primary) or replayed (replica).
    pub lsn: Option<u64>,
    /// Replay lag behind the primary in bytes (replicas, when a primary is known).
    pub lag_bytes: Option<u64>,
    /// Replay lag in time, estimated from the primary's LSN history (kept when the primary is
    /// lost, so a replica's lag goes on growing until a new primary is elected).
    pub lag: Option<Duration>,
    /// `lag` is only a lower bound: the replica is behind every position in the history (it
    /// was already behind when the history began, at the proxy's start or an election).
    pub lag_at_least: bool,
    /// Behind even the oldest position of a history that was cut to its size: how far behind
    /// is not known, so the replica takes no reads (whatever `max_replica_lag` is).
    pub beyond_history: bool,
    /// Replay paused on this replica.
    pub replay_paused: bool,
    /// Commit time of the last replayed transaction (replica's clock, ms since the epoch).
    pub last_replay_ms: Option<i64>,
    /// The WAL receiver is streaming.
    pub receiver_streaming: bool,
    /// The backend configured before this one that reaches the same server (the same
    /// postmaster start time), under another address: this one takes no traffic.
    pub duplicate_of: Option<Arc<str>>,
    /// A standby on another history than the primary's (see `divergence.rs`): no reads.
    pub diverged: bool,
    /// Why the last probe failed, while probes fail (also while the server is still up: a
    /// full server, a login the server refuses, fewer failures than `fall`).
    pub probe_error: Option<Arc<str>>,
    /// Live counters.
    pub stats: Arc<BackendStats>,
}

impl BackendView {
    /// Its role as `/status` and the admin console name it: `primary`, `replica`, `fenced`
    /// (claims the primary role and takes nothing), `duplicate` (a server configured before
    /// it, under another address; takes nothing), `diverged` (a standby on another history
    /// than the primary's; takes nothing) or `unknown` (not probed yet).
    pub fn role_label(&self) -> &'static str {
        match (self.role, self.fenced) {
            _ if self.duplicate_of.is_some() => "duplicate",
            (_, true) => "fenced",
            (Some(Role::Replica), _) if self.diverged => "diverged",
            (Some(Role::Primary), _) => "primary",
            (Some(Role::Replica), _) => "replica",
            (None, _) => "unknown",
        }
    }

    /// The replay lag as shown (`/metrics`, `/status`, the admin console), in bytes and in
    /// time: none for a server down rather than its last lag, which goes on growing with the
    /// primary's position and reads as a replica that still replays.
    pub fn shown_lag(&self) -> (Option<u64>, Option<Duration>) {
        if self.up {
            (self.lag_bytes, self.lag)
        } else {
            (None, None)
        }
    }

    /// Whether its WAL receiver streams as shown: not for a server down (what its last probe
    /// said is not so any more).
    pub fn shown_streaming(&self) -> bool {
        self.up && self.receiver_streaming
    }

    /// This replica's replay position as last read (0: unknown). Not `lsn`: that is the last
    /// successful probe's, kept while later probes fail, and can be higher than what a
    /// restarted server has replayed.
    pub fn replay_lsn(&self) -> u64 {
        self.stats.replay_lsn.load(Ordering::Acquire)
    }

    /// Whether this backend may serve reads given the lag limit.
    pub fn is_eligible_replica(&self, limit: LagLimit) -> bool {
        if !self.up
            || self.fenced
            || self.role != Some(Role::Replica)
            || self.duplicate_of.is_some()
            || self.diverged
        {
            return false;
        }
        match limit {
            LagLimit::Bytes(max) => self.lag_bytes.is_none_or(|b| b <= max),
            // Behind the whole history, only a paused replica is known not to be catching up.
            LagLimit::Time(max) => self.lag.is_none_or(|t| {
                t <= max && !(self.lag_at_least && self.replay_paused) && !self.beyond_history
            }),
        }
    }
}

/// An immutable snapshot of the cluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    /// Bumped when the set of backends changes (config reload); pools are keyed by it.
    pub topology: u64,
    /// The backends, in configuration order.
    pub backends: Vec<BackendView>,
    /// Index of the elected primary, if any.
    pub primary: Option<usize>,
    /// The primary's newest WAL position seen by the monitor.
    pub primary_lsn: Option<u64>,
    /// The primaries' timeline and where its first primary began.
    pub epoch: Epoch,
}

/// The timeline primaries are on, and where the first primary on it began.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Epoch {
    /// The highest timeline a primary was seen on: a server claiming to be primary on a
    /// lower one is a stale old primary and is never elected.
    pub timeline: u32,
    /// The first primary seen on `timeline`: its WAL position then (`u64::MAX` when unknown).
    /// A position recorded on an older timeline beyond it belongs to history the new primary
    /// never had (writes lost with the old primary): no server will ever replay it.
    pub start_lsn: u64,
}

impl ClusterView {
    /// Index of a backend by name.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.backends.iter().position(|b| &*b.name == name)
    }
}

/// Shared handle to the current view.
pub struct Cluster {
    view: ArcSwap<ClusterView>,
    changed: Notify,
    version: AtomicU64,
    /// Held while publishing, so that a view of an older topology (an aggregator a reload
    /// just replaced, finishing a probe result) never replaces a newer one.
    publishing: std::sync::Mutex<()>,
}

impl Cluster {
    /// A cluster with an initial (unprobed) view.
    pub fn new(view: ClusterView) -> Cluster {
        Cluster {
            view: ArcSwap::from_pointee(view),
            changed: Notify::new(),
            version: AtomicU64::new(0),
            publishing: std::sync::Mutex::new(()),
        }
    }

    /// Runs `f` while no view is being published.
    pub fn while_not_publishing<R>(&self, f: impl FnOnce() -> R) -> R {
        let _one = self.publishing.lock().unwrap_or_else(|e| e.into_inner());
        f()
    }

    /// The current view (lock-free).
    pub fn view(&self) -> arc_swap::Guard<Arc<ClusterView>> {
        self.view.load()
    }

    /// The current view as an owned `Arc`.
    pub fn snapshot(&self) -> Arc<ClusterView> {
        self.view.load_full()
    }

    /// Publishes a new view, runs `then` (under the same lock) and wakes waiters; a view of
    /// an older topology than the current one is dropped, and `then` not run.
    pub fn publish(&self, view: ClusterView, then: impl FnOnce()) {
        let _one = self.publishing.lock().unwrap_or_else(|e| e.into_inner());
        if view.topology < self.view.load().topology {
            return;
        }
        self.view.store(Arc::new(view));
        then();
        self.version.fetch_add(1, Ordering::Release);
        self.changed.notify_waiters();
    }

    /// Waits up to `timeout` until a view of a topology newer than `topology` is published
    /// (a reload's); whether one was.
    pub async fn wait_topology_after(&self, topology: u64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // (Created before the look: a publish after it wakes this wait.)
            let notified = self.changed.notified();
            if self.view().topology > topology {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.view().topology > topology;
            }
        }
    }

    /// Waits up to `timeout` until a primary is known; returns its index.
    pub async fn wait_primary(&self, timeout: Duration) -> Option<usize> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            if let Some(p) = self.view().primary {
                return Some(p);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.view().primary;
            }
        }
    }

    /// Waits for the next published view, up to `timeout`.
    pub async fn changed(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.changed.notified()).await;
    }

    /// How many views have been published.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(lsn: Option<u64>) -> BackendView {
        BackendView {
            name: "r".into(),
            address: "localhost:5432".into(),
            weight: 1,
            up: true,
            role: Some(Role::Replica),
            fenced: false,
            timeline: Some(1),
            lsn,
            lag_bytes: Some(0),
            lag: Some(Duration::ZERO),
            lag_at_least: false,
            beyond_history: false,
            replay_paused: false,
            last_replay_ms: None,
            receiver_streaming: true,
            duplicate_of: None,
            diverged: false,
            probe_error: None,
            stats: Arc::default(),
        }
    }

    #[test]
    fn a_replay_position_that_went_back_is_believed() {
        // The view's position is the last successful probe's, 1000; since then the server
        // restarted: a failed probe made it unknown, and the next one read 400.
        let b = replica(Some(1_000));
        b.stats.replay_lsn.store(0, Ordering::Release);
        assert_eq!(b.replay_lsn(), 0, "unknown, not the view's older 1000");
        b.stats.replay_lsn.store(400, Ordering::Release);
        assert_eq!(b.replay_lsn(), 400);
        // A session's direct read between probes is newer than the view.
        b.stats.replay_lsn.store(1_200, Ordering::Release);
        assert_eq!(b.replay_lsn(), 1_200);
    }
}
