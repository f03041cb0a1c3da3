//! The monitor: one probe task per backend (each with its own connection) feeding one
//! aggregator that applies thresholds, elects the primary, computes lag and publishes views.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::divergence::Divergence;
use super::health::{Change, Health, Observation, Role};
use super::lag::LsnHistory;
use super::probe::{ProbeError, ProbeTarget, Prober};

mod election;
use super::{BackendStats, BackendView, Cluster, ClusterView, Epoch};
use crate::config::Loaded;
use crate::metrics::Metrics;
use crate::pool::Pools;

/// Runs the monitor for one configuration; `restart` it on reload with the new config.
pub struct Monitor {
    cluster: Arc<Cluster>,
    metrics: Arc<Metrics>,
    pools: Arc<Pools>,
    /// Stats by backend name, kept across reloads.
    stats: HashMap<String, Arc<BackendStats>>,
    /// Each backend name's address, as last configured.
    addresses: HashMap<String, String>,
    /// Health by (name, address), kept across reloads for the server at the same address
    /// (renamed or not: the address is the server).
    carried: HashMap<(String, String), Health>,
    /// The primaries' timeline, kept across reloads.
    epoch: Epoch,
    /// The highest timeline a server was seen claiming the primary role on, kept across
    /// reloads (see [`Aggregator::claimed`]).
    claimed: u32,
    /// The last primary elected (name, address) and its timeline then, kept across reloads
    /// also while no primary is elected (see [`Aggregator::last_elected`]).
    last_elected: Option<((String, String), u32)>,
    /// The elected primary's address and WAL position history, kept across reloads (the new
    /// monitor goes on measuring lag against them: a replica far behind stays far behind).
    primary_address: Option<String>,
    history: Arc<Mutex<LsnHistory>>,
    /// Standbys found diverged, by (name, address), kept across reloads.
    diverged: std::collections::HashSet<(String, String)>,
    /// The running aggregator: its stop token and its task, which hands back each backend's
    /// health when stopped.
    running: Option<(CancellationToken, tokio::task::JoinHandle<Carried>)>,
    topology: u64,
}

/// What a stopped aggregator hands to the next one.
struct Carried {
    /// Each backend's health by (name, address).
    healths: HashMap<(String, String), Health>,
    /// See [`Aggregator::last_elected`], by (name, address).
    last_elected: Option<((String, String), u32)>,
    /// See [`Aggregator::claimed`].
    claimed: u32,
}

struct ProbeResult {
    index: usize,
    /// When the probe was sent: what it observed happened after this.
    sent: Instant,
    observation: Result<Observation, ProbeError>,
}

impl Monitor {
    /// A monitor publishing into `cluster`.
    pub fn new(cluster: Arc<Cluster>, metrics: Arc<Metrics>, pools: Arc<Pools>) -> Monitor {
        Monitor {
            cluster,
            metrics,
            pools,
            stats: HashMap::new(),
            addresses: HashMap::new(),
            carried: HashMap::new(),
            epoch: Epoch::default(),
            claimed: 0,
            last_elected: None,
            primary_address: None,
            history: Default::default(),
            diverged: Default::default(),
            running: None,
            topology: 0,
        }
    }

    /// (Re)starts probing the backends of `config`, stopping the previous probes. The first
    /// view with real probe results is published before this returns, or after one probe
    /// timeout at most, so clients are not admitted before the primary is known.
    pub async fn start(&mut self, config: &Loaded, stop: &CancellationToken) {
        if let Some((old, _)) = self.running.take() {
            old.cancel();
        }
        self.topology += 1;
        let token = stop.child_token();
        let c = &config.config;
        let (user, password) = config.monitor_credentials();
        let (tx, rx) = mpsc::channel(64);
        let mut names = Vec::new();
        let mut healths = Vec::new();
        let mut views = Vec::new();
        for (index, b) in c.backends.iter().enumerate() {
            let name = b.name.get_ref().clone();
            let address = b.address.get_ref().clone();
            let stats = self.stats.entry(name.clone()).or_default().clone();
            if self
                .addresses
                .insert(name.clone(), address.clone())
                .is_some_and(|was| was != address)
            {
                // Another server under the same name: what the old one replayed says
                // nothing of this one (read-your-writes would take it as replayed here).
                stats
                    .replay_lsn
                    .store(0, std::sync::atomic::Ordering::Release);
            }
            // (By address: a backend renamed in the reload is still the same server, and
            // goes on as it was rather than unknown until its first probe.)
            let health = self
                .carried
                .iter()
                .find(|((_, a), _)| *a == address)
                .map(|(_, h)| h.clone())
                .unwrap_or_default();
            views.push(BackendView {
                name: name.clone().into(),
                address: address.clone(),
                weight: b.weight,
                up: health.up,
                role: health.role,
                fenced: false,
                timeline: None,
                lsn: None,
                lag_bytes: None,
                lag: None,
                lag_at_least: false,
                beyond_history: false,
                replay_paused: false,
                last_replay_ms: None,
                receiver_streaming: false,
                duplicate_of: None,
                diverged: false,
                probe_error: None,
                stats,
            });
            healths.push(health);
            names.push((name, address.clone()));
            let target = ProbeTarget {
                address,
                user: user.clone(),
                password: password.clone(),
                database: c.health.database.clone(),
                timeout: c.health.timeout,
                tls: config.server_tls.clone(),
            };
            tokio::spawn(probe_loop(
                index,
                target,
                c.health.interval,
                tx.clone(),
                token.clone(),
            ));
        }
        drop(tx);
        let before = self.cluster.snapshot();
        let mut agg = Aggregator {
            cluster: self.cluster.clone(),
            metrics: self.metrics.clone(),
            pools: self.pools.clone(),
            names,
            healths,
            views,
            history: self.history.clone(),
            fall: c.health.fall,
            rise: c.health.rise,
            topology: self.topology,
            primary: None,
            epoch: self.epoch,
            claimed: self.claimed,
            to_sever: Vec::new(),
            same_as: vec![None; c.backends.len()],
            divergence: Divergence::new(c.backends.len()),
            last_elected: None,
            primary_seen: None,
            promoted: Vec::new(),
            last_error: vec![None; c.backends.len()],
            full_since: vec![None; c.backends.len()],
            full_grace: full_grace(c.health.interval.max(c.health.timeout), c.health.fall),
            failed_probe: None,
            stop: token.clone(),
        };
        // The primary elected before the reload, still configured at the same address: the
        // history goes on (electing it again is no change of primary). Without one (a reload
        // while the primary is down) it goes on too, so that replicas' lag keeps growing
        // from the last position seen; electing any primary then starts it afresh.
        agg.primary = self
            .primary_address
            .take()
            .and_then(|a| agg.names.iter().position(|(_, address)| *address == a));
        // The last primary elected, also when it is down now: back on the same timeline, it
        // is no change of primary.
        agg.last_elected = self
            .last_elected
            .as_ref()
            .and_then(|((_, a), t)| Some((agg.names.iter().position(|(_, b)| b == a)?, *t)));
        for (i, (_, address)) in agg.names.iter().enumerate() {
            if self.diverged.iter().any(|(_, a)| a == address) {
                agg.divergence.carry(i);
            }
        }
        // Publish the carried state at once so the topology (and pools keyed by it) is current.
        agg.publish();
        // A backend no longer configured leaves no health series behind (an up = 1 or a lag
        // frozen at its last value would read as a live server). After the new topology is
        // published, so the replaced aggregator cannot write them again.
        self.cluster.while_not_publishing(|| {
            for gone in before.backends.iter() {
                if agg.names.iter().any(|(n, _)| **n == *gone.name) {
                    continue;
                }
                let labels = [gone.name.as_ref()];
                let m = &self.metrics;
                for g in [
                    &m.backend_up,
                    &m.backend_role,
                    &m.replica_lag_bytes,
                    &m.replica_lag_ms,
                ] {
                    let _ = g.remove_label_values(&labels);
                }
                for kind in ProbeError::KINDS {
                    let _ = m.probe_errors.remove_label_values(&[labels[0], kind]);
                }
            }
        });
        let first_round = Arc::new(tokio::sync::Notify::new());
        let notify = first_round.clone();
        let expected = c.backends.len();
        let wait = first_round.notified();
        let task = tokio::spawn(agg.run(rx, expected, notify));
        let _ = tokio::time::timeout(c.health.timeout + c.health.timeout / 2, wait).await;
        self.running = Some((token, task));
    }

    /// Remembers health across a restart of the monitor (called before `start` on reload):
    /// each backend's state, its streaks of failed and good probes and its last observation,
    /// so that the new monitor elects the same primary, counts `fall` and `rise` on, and
    /// judges lag as the old one did until its own probes come in. (A reload used to start
    /// the streaks afresh: a server failing every probe never went down while reloads came
    /// more often than `fall` probes.)
    pub async fn carry_over(&mut self) {
        let mut back = None;
        if let Some((token, task)) = self.running.take() {
            token.cancel();
            // The aggregator stops at its next await; it holds nothing that could keep it.
            if let Ok(Ok(c)) = tokio::time::timeout(std::time::Duration::from_secs(5), task).await {
                back = Some(c);
            }
        }
        let view = self.cluster.snapshot();
        self.carried.clear();
        if view.epoch.timeline > self.epoch.timeline {
            self.epoch = view.epoch;
        }
        self.primary_address = view.primary.map(|i| view.backends[i].address.clone());
        let mut exact = HashMap::new();
        match back {
            Some(c) => {
                exact = c.healths;
                self.last_elected = c.last_elected;
                self.claimed = self.claimed.max(c.claimed);
            }
            None => {
                // (The aggregator did not stop in time: what the published view says.)
                if let Some(i) = view.primary {
                    let b = &view.backends[i];
                    let key = (b.name.to_string(), b.address.clone());
                    self.last_elected = Some((key, b.timeline.unwrap_or(0)));
                }
                self.claimed = self.claimed.max(self.epoch.timeline);
            }
        }
        self.diverged = view
            .backends
            .iter()
            .filter(|b| b.diverged)
            .map(|b| (b.name.to_string(), b.address.clone()))
            .collect();
        for b in &view.backends {
            let key = (b.name.to_string(), b.address.clone());
            if let Some(h) = exact.remove(&key) {
                self.carried.insert(key, h);
                continue;
            }
            let mut h = Health::carried(b.up, b.role);
            if b.role.is_some() {
                let primary = b.role == Some(Role::Primary);
                h.last = Some(Observation {
                    primary,
                    timeline: b.timeline,
                    current_lsn: b.lsn.filter(|_| primary),
                    receive_lsn: None,
                    replay_lsn: b.lsn.filter(|_| !primary),
                    replay_paused: b.replay_paused,
                    receiver_streaming: b.receiver_streaming,
                    last_replay_ms: b.last_replay_ms,
                    started_us: None,
                });
            }
            self.carried.insert(key, h);
        }
    }
}

async fn probe_loop(
    index: usize,
    target: ProbeTarget,
    interval: std::time::Duration,
    tx: mpsc::Sender<ProbeResult>,
    stop: CancellationToken,
) {
    let mut prober = Prober::new(target);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let sent = Instant::now();
        let observation = tokio::select! {
            _ = stop.cancelled() => return,
            o = prober.probe() => o,
        };
        if tx
            .send(ProbeResult {
                index,
                sent,
                observation,
            })
            .await
            .is_err()
        {
            return;
        }
    }
}

struct Aggregator {
    cluster: Arc<Cluster>,
    metrics: Arc<Metrics>,
    pools: Arc<Pools>,
    names: Vec<(String, String)>,
    healths: Vec<Health>,
    views: Vec<BackendView>,
    history: Arc<Mutex<LsnHistory>>,
    fall: u32,
    rise: u32,
    topology: u64,
    primary: Option<usize>,
    /// See [`ClusterView::epoch`].
    epoch: Epoch,
    /// The highest timeline a server was seen claiming the primary role on, from its first
    /// answer (before `rise` answers elect it): a promotion cannot be undone, so the primaries
    /// on older timelines stay untrusted also when the promoted server is lost before it was
    /// elected (else the old primary, still running, was elected again and took writes on
    /// the abandoned history).
    claimed: u32,
    /// Backends just fenced: connections to them are cut.
    to_sever: Vec<usize>,
    /// Of each backend, the one configured before it that reaches the same server.
    same_as: Vec<Option<usize>>,
    divergence: Divergence,
    /// The last primary elected, and its timeline then (kept while no primary is elected).
    last_elected: Option<(usize, u32)>,
    /// The last probe of the elected primary, or of a server promoted since (claiming the
    /// role on a newer timeline than the elected primaries'): which backend, when the probe
    /// was sent, and the position it reported. Standbys are judged diverged against it.
    primary_seen: Option<(usize, Instant, u64)>,
    /// Backends that just changed role from standby to primary.
    promoted: Vec<usize>,
    /// The last probe failure of each backend, while it fails: each new reason is logged
    /// once at warning level (a certificate or password problem must not hide in debug).
    last_error: Vec<Option<String>>,
    /// Since when each backend's probes have been refused for lack of connection slots, while
    /// they are: no news for up to `full_grace`, then failures (a server whose every slot is
    /// held by sessions stuck on hung storage refuses quickly, and is not a healthy one).
    full_since: Vec<Option<Instant>>,
    full_grace: std::time::Duration,
    /// The probe failure just applied, counted (`probe_errors_total`) when the view is
    /// published: (backend, kind).
    failed_probe: Option<(usize, &'static str)>,
    /// Cancelled when a reload restarts the monitor: from then on this aggregator's
    /// topology is the old one, and it must publish nothing more.
    stop: CancellationToken,
}

impl Aggregator {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<ProbeResult>,
        expected: usize,
        first_round: Arc<tokio::sync::Notify>,
    ) -> Carried {
        let mut seen = vec![false; expected];
        let mut announced = expected == 0;
        if announced {
            first_round.notify_one();
        }
        loop {
            let r = tokio::select! {
                _ = self.stop.cancelled() => break,
                r = rx.recv() => match r {
                    Some(r) => r,
                    None => break,
                },
            };
            let went_down = self.apply(r.index, r.sent, r.observation);
            if self.stop.is_cancelled() {
                break;
            }
            self.publish();
            if went_down {
                // Requests in flight there would wait for TCP to notice; fail them now so
                // repeatable reads move elsewhere and the rest get a clear error.
                self.pools.sever_backend(&self.names[r.index].0);
            }
            for i in std::mem::take(&mut self.promoted) {
                // Its connections were opened to a standby: they told their clients
                // `in_hot_standby = on`, which PostgreSQL corrects only after their next query,
                // and a client greeted with it (libpq's target_session_attrs) would refuse a
                // primary. Idle ones close now, ones in use when released.
                self.pools.reconnect_backend(&self.names[i].0);
            }
            for i in std::mem::take(&mut self.to_sever) {
                // A server no longer trusted as primary: what its connections would still
                // write (open transactions, pinned and session-mode clients) must not land.
                self.pools.sever_backend(&self.names[i].0);
            }
            if !announced {
                seen[r.index] = true;
                if seen.iter().all(|&s| s) {
                    announced = true;
                    first_round.notify_one();
                }
            }
        }
        let last_elected = self.last_elected.map(|(i, t)| (self.names[i].clone(), t));
        Carried {
            healths: self.names.into_iter().zip(self.healths).collect(),
            last_elected,
            claimed: self.claimed,
        }
    }

    /// Applies a probe result; returns whether the backend just went down.
    fn apply(
        &mut self,
        index: usize,
        sent: Instant,
        result: Result<Observation, ProbeError>,
    ) -> bool {
        let name = &self.names[index].0;
        self.views[index]
            .stats
            .replay_lsn
            .store(replayed(&result), std::sync::atomic::Ordering::Release);
        let h = &mut self.healths[index];
        let full = matches!(result, Err(ProbeError::Full(_) | ProbeError::Refused(_)));
        // A primary whose probes are refused their login keeps taking writes: it answered,
        // and taking it down would cut every connection writing to it. (A replica's lag is
        // not known meanwhile: it is taken down once the grace is over.)
        let refused_primary =
            matches!(result, Err(ProbeError::Refused(_))) && h.up && h.role == Some(Role::Primary);
        let full_for = match (&mut self.full_since[index], full) {
            (since, true) => Some(since.get_or_insert_with(Instant::now).elapsed()),
            (since, false) => {
                *since = None;
                None
            }
        };
        self.views[index].probe_error = result.as_ref().err().map(|e| e.reason().into());
        self.failed_probe = result.as_ref().err().map(|e| (index, e.kind()));
        let obs = match &result {
            Ok(o) => {
                self.last_error[index] = None;
                Some(*o)
            }
            Err(e) => {
                let reason = e.reason();
                if self.last_error[index].as_deref() != Some(reason) {
                    if matches!(e, ProbeError::Full(_)) {
                        tracing::warn!(backend = %name, error = %reason, "probe refused for lack of connection slots: the server is up, its state is kept as last seen (reserve connections for the [health] user)");
                    } else if matches!(e, ProbeError::Refused(_)) {
                        tracing::error!(backend = %name, error = %reason, "the server refused the monitor's login: check the [health] user, password and database; the server is up: a primary stays as last seen until a probe logs in (not followed through a failover meanwhile), any other server is taken down after the grace given to a full one");
                    } else {
                        tracing::warn!(backend = %name, error = %reason, "probe failed");
                    }
                    self.last_error[index] = Some(reason.to_owned());
                } else {
                    tracing::debug!(backend = %name, error = %reason, "probe failed");
                }
                if full_for.is_some_and(|d| d < self.full_grace) || refused_primary {
                    // No news: a full server is not a lost one (taking it down would cut
                    // every connection of the pools that fill it).
                    return false;
                }
                None
            }
        };
        let change = h.observe(obs, self.fall, self.rise);
        match change {
            Change::None => {}
            Change::WentUp => tracing::info!(backend = %name, role = ?h.role, "backend up"),
            Change::WentDown => {
                tracing::warn!(backend = %name, error = %result.as_ref().err().map(ProbeError::reason).unwrap_or(""), "backend down")
            }
            Change::RoleChanged(r) => {
                tracing::warn!(backend = %name, role = ?r, "backend changed role");
                if r == Role::Primary {
                    self.promoted.push(index);
                }
            }
        }
        if let (Some(o), true) = (obs, h.up) {
            if o.primary && self.primary == Some(index) {
                if let Some(lsn) = o.current_lsn {
                    lock(&self.history).record(Instant::now(), lsn);
                    self.primary_seen = Some((index, sent, lsn));
                }
            } else if o.primary && self.epoch.timeline > 0 && o.timeline > Some(self.epoch.timeline)
            {
                // Promoted after a primary was elected: its first answers, before `rise` elect
                // it and writes reach it, show about where its timeline began. A standby that
                // had replayed past that is on the old history (it stays behind the new
                // primary's position once that takes writes, and would look only lagging).
                if let Some(lsn) = o.current_lsn {
                    self.primary_seen = Some((index, sent, lsn));
                }
            }
        }
        if let Some(o) = obs {
            self.divergence.observed(index, Instant::now(), &o);
        }
        change == Change::WentDown
    }

    fn publish(&mut self) {
        self.find_duplicates();
        self.elect();
        let now = Instant::now();
        let history = lock(&self.history);
        let primary_lsn = history.latest();
        // With no primary up, replicas' lag is counted as of when a primary was last seen:
        // a replica a second behind then stays a second behind (and one stale then stays
        // stale), rather than falling further behind a server that takes no writes, whose
        // last position the replicas may never reach (the tail of WAL it did not send before
        // it died: counted against it, every replica would pass `max_replica_lag` and reads
        // would stop while they are up). In bytes, up to the most advanced live replica.
        let (as_of, reference) = match (self.primary, self.primary_seen) {
            (Some(_), _) => (now, None),
            (None, seen) => (
                seen.map_or(now, |(_, sent, _)| sent),
                (0..self.healths.len())
                    .filter(|&i| {
                        let h = &self.healths[i];
                        h.up && h.role == Some(Role::Replica) && !self.views[i].diverged
                    })
                    .filter_map(|i| {
                        let last = self.healths[i].last?;
                        last.replay_lsn.or(last.receive_lsn)
                    })
                    .max(),
            ),
        };
        for (i, v) in self.views.iter_mut().enumerate() {
            let h = &self.healths[i];
            v.up = h.up;
            v.role = h.role;
            if h.role != Some(Role::Primary) {
                v.fenced = false;
            }
            let last = h.last.unwrap_or_default();
            v.timeline = last.timeline;
            v.replay_paused = last.replay_paused;
            v.last_replay_ms = last.last_replay_ms;
            v.receiver_streaming = last.receiver_streaming;
            v.lsn = if last.primary {
                last.current_lsn
            } else {
                last.replay_lsn
            };
            if h.role == Some(Role::Replica) {
                let replay = last.replay_lsn.or(last.receive_lsn);
                let seen = self.primary_seen.map(|(_, sent, lsn)| (sent, lsn));
                let (diverged, found) = self.divergence.check(i, seen);
                if let Some(replayed) = found {
                    tracing::error!(backend = %v.name, replayed = %super::lag::format_lsn(replayed), primary_at = %seen.map(|(_, l)| super::lag::format_lsn(l)).unwrap_or_default(), "a standby has replayed past the primary's position: it is on another history (ahead of the server promoted in its place, or an old primary restarted as a standby without pg_rewind) and takes no reads until it is restarted");
                }
                v.diverged = diverged;
                v.lag_bytes = match (primary_lsn, replay) {
                    (Some(p), Some(r)) => Some(reference.map_or(p, |c| c.min(p)).saturating_sub(r)),
                    _ => None,
                };
                (v.lag, v.lag_at_least) = match (primary_lsn, replay) {
                    (Some(_), Some(r)) => {
                        let (lag, at_least) = history.time_lag(r, as_of);
                        (Some(lag), at_least)
                    }
                    _ => (None, false),
                };
                v.beyond_history = v.lag_at_least && history.trimmed();
            } else {
                v.diverged = false;
                v.lag_bytes = None;
                v.lag = None;
                v.lag_at_least = false;
                v.beyond_history = false;
            }
        }
        drop(history);
        let view = ClusterView {
            topology: self.topology,
            backends: self.views.clone(),
            primary: self.primary,
            primary_lsn,
            epoch: self.epoch,
        };
        // The metrics with the view, under the same lock, only if it is taken: a replaced
        // aggregator's last result must not bring back a removed backend's series.
        let failed = self.failed_probe.take();
        self.cluster.publish(view, || self.write_metrics(failed));
    }

    /// Each backend's health series, from the views just published, and the probe failure
    /// just applied.
    fn write_metrics(&self, failed: Option<(usize, &'static str)>) {
        if let Some((i, kind)) = failed {
            self.metrics
                .probe_errors
                .with_label_values(&[&self.views[i].name, kind])
                .inc();
        }
        for v in &self.views {
            let m = &self.metrics;
            m.backend_up.with_label_values(&[&v.name]).set(v.up as i64);
            let role = match (v.role, v.fenced) {
                _ if v.duplicate_of.is_some() => -3,
                (Some(Role::Primary), false) => 1,
                (Some(Role::Replica), _) if v.diverged => -4,
                (Some(Role::Replica), _) => 0,
                (Some(Role::Primary), true) => -2,
                (None, _) => -1,
            };
            m.backend_role.with_label_values(&[&v.name]).set(role);
            // A lag nobody knows (a primary, a server down, no primary to compare with) is no
            // series at all rather than a 0 that reads as "caught up".
            let labels = [v.name.as_ref()];
            let (lag_bytes, lag) = v.shown_lag();
            match lag_bytes {
                Some(b) => m
                    .replica_lag_bytes
                    .with_label_values(&labels)
                    .set(i64::try_from(b).unwrap_or(i64::MAX)),
                None => {
                    let _ = m.replica_lag_bytes.remove_label_values(&labels);
                }
            }
            match lag {
                Some(d) => m
                    .replica_lag_ms
                    .with_label_values(&labels)
                    .set(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
                None => {
                    let _ = m.replica_lag_ms.remove_label_values(&labels);
                }
            }
        }
    }
}

/// What a probe result says the backend has replayed, for read-your-writes: the position it
/// reported, or 0 (unknown) when the probe failed. Stored as it is, never merged with what was
/// known before: a standby restarted after a crash reopens from its last restartpoint, and one
/// rebuilt from an older backup starts further back still, below what it had replayed. A
/// failure counts as unknown even when the server only lacked a slot for the monitor: nothing
/// says it did not restart meanwhile (sessions waiting for a position read it directly).
fn replayed(result: &Result<Observation, ProbeError>) -> u64 {
    match result {
        Ok(o) => o.replay_lsn.unwrap_or(0),
        Err(_) => 0,
    }
}

/// How long probes refused for lack of connection slots count as no news: ten times `fall`
/// probes, at least 30 s.
fn full_grace(every: std::time::Duration, fall: u32) -> std::time::Duration {
    every
        .checked_mul(fall.saturating_mul(10))
        .unwrap_or(std::time::Duration::MAX)
        .max(std::time::Duration::from_secs(30))
}

/// The history's lock (a panic elsewhere while holding it leaves nothing half-updated that
/// matters: the samples are only ever appended or cleared).
fn lock(h: &Mutex<LsnHistory>) -> MutexGuard<'_, LsnHistory> {
    h.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_says_what_was_replayed_or_that_it_is_unknown() {
        let at = |lsn| {
            Ok(Observation {
                replay_lsn: Some(lsn),
                ..Default::default()
            })
        };
        assert_eq!(replayed(&at(1_000)), 1_000);
        // Lower than before (a restarted standby): taken as it is.
        assert_eq!(replayed(&at(400)), 400);
        assert_eq!(replayed(&Ok(Observation::default())), 0, "a primary");
        assert_eq!(replayed(&Err(ProbeError::Failed("refused".into()))), 0);
        assert_eq!(replayed(&Err(ProbeError::Full("53300".into()))), 0);
    }
}
