//! Which backend serves a routing decision: the primary (waiting a while for one during a
//! failover), or a replica among the eligible ones (balanced, fresh enough for the session's
//! consistency, waiting briefly for one to replay the session's last commit).

use std::time::{Duration, Instant};

use super::attach::CANCELLED;
use super::route::{Decision, NoBackend, Target};
use super::Session;
use crate::balance::{self, Candidate};
use crate::cluster::{BackendView, ClusterView, Role};
use crate::config::{Consistency, PrimaryReads, RoutingConfig};

/// The backends (a bit each) a checkout could not reach within the last
/// [`super::attach::UNREACHABLE_MS`].
pub(super) fn unreachable(view: &ClusterView) -> u64 {
    let now = crate::pool::clock::now_ms();
    let mut bits = 0u64;
    for (i, b) in view.backends.iter().enumerate() {
        if b.stats
            .unreachable_until
            .load(std::sync::atomic::Ordering::Relaxed)
            > now
        {
            bits |= 1u64 << (i % 64);
        }
    }
    bits
}

/// No primary for a request that needs one.
pub(super) const NO_PRIMARY: NoBackend = ("57P03", "no primary server is available");

/// A read found no replica to run on, and no primary to fall back to either.
const NO_SERVER_FOR_READ: NoBackend = (
    "57P03",
    "no server is available: no replica can take the read and no primary is known",
);

/// What [`Session::choose_replica`] found.
enum Replica {
    /// This backend, for this decision.
    Chosen(usize, Decision),
    /// The read goes to the primary, for this reason.
    Primary(&'static str),
}

impl Session {
    /// Chooses the backend for a decision: `Ok((index, decision as taken))`.
    pub(super) async fn choose(&mut self, d: Decision) -> Result<(usize, Decision), NoBackend> {
        if d.target == Target::Primary {
            if let Some(i) = self.current.view.primary {
                return Ok((
                    i,
                    Decision {
                        retryable: false,
                        ..d
                    },
                ));
            }
        }
        let config = self.current.config.clone();
        let routing = &config.config.routing;
        let view = self.current.view.clone();
        if d.target == Target::Replica {
            match self.choose_replica(&view, routing, d).await? {
                Replica::Chosen(index, d) => return Ok((index, d)),
                Replica::Primary(reason) => {
                    let d = Decision {
                        target: Target::Primary,
                        reason,
                        ..d
                    };
                    // With no replica and no primary either, say so: "no primary" alone
                    // reads as if the read needed one.
                    return self
                        .primary(&view, self.primary_wait_left(), d)
                        .await
                        .map_err(|e| match (e, reason) {
                            (NO_PRIMARY, "no_replica") => NO_SERVER_FOR_READ,
                            (e, _) => e,
                        });
                }
            }
        }
        self.primary(&view, self.primary_wait_left(), d).await
    }

    /// Chooses a replica for a read (or the primary, when `routing.primary_reads` lets reads
    /// run there): among the eligible backends not tried yet, balanced, fresh enough for the
    /// session's consistency; or says why the read goes to the primary instead.
    async fn choose_replica(
        &mut self,
        view: &ClusterView,
        routing: &RoutingConfig,
        d: Decision,
    ) -> Result<Replica, NoBackend> {
        let mut candidates = std::mem::take(&mut self.candidates);
        candidates.clear();
        let chosen = self
            .choose_replica_among(view, routing, d, &mut candidates)
            .await;
        self.candidates = candidates;
        chosen
    }

    /// [`choose_replica`](Self::choose_replica), listing the candidates in `candidates`
    /// (empty), and then the fresh enough ones after them.
    async fn choose_replica_among(
        &mut self,
        view: &ClusterView,
        routing: &RoutingConfig,
        d: Decision,
        candidates: &mut Vec<Candidate>,
    ) -> Result<Replica, NoBackend> {
        let mut skip = self.avoid | self.conflicted | unreachable(view);
        loop {
            for (i, b) in view.backends.iter().enumerate() {
                let primary_ok =
                    routing.primary_reads == PrimaryReads::Include && view.primary == Some(i);
                let tried = skip & (1u64 << (i % 64)) != 0;
                if (b.is_eligible_replica(routing.max_replica_lag) || primary_ok) && !tried {
                    candidates.push(candidate(i, b));
                }
            }
            // A replica that cancelled the read for a conflict with recovery runs it again
            // when nothing else may.
            if candidates.is_empty()
                && routing.primary_reads == PrimaryReads::Never
                && skip != self.avoid
            {
                skip = self.avoid;
                continue;
            }
            break;
        }
        // An explicit choice of a replica (hint or SET switchyard.route) is honoured as is, and
        // a failed block reads nothing.
        let explicit = d.reason == "hint_replica" || d.reason == "failed_block";
        let required = match self.consistency {
            Consistency::ReadYourWrites if !explicit => {
                self.ryw.for_reads(routing.ryw_scope).required(view.epoch)
            }
            _ => Some(0),
        };
        if candidates.is_empty() {
            // (A failed block reads nothing: it may be recreated on the primary.)
            if routing.primary_reads == PrimaryReads::Never && d.reason != "failed_block" {
                return Err((
                    "57P03",
                    "no replica is available for reads (routing.primary_reads = \"never\")",
                ));
            }
            return Ok(Replica::Primary("no_replica"));
        }
        // With no primary up, the session's writes that no replica has are on no server that
        // can be read (lost with the primary, unless it comes back): the most advanced
        // replica is as fresh as a read can be, rather than waiting for a primary and
        // failing read after read for as long as there is none.
        let no_primary = view.primary.is_none();
        let Some(required) = required else {
            if no_primary {
                let most = most_advanced(candidates, |i| replayed(view, i));
                let best = balance::pick(routing.balance, most, &self.app.rr, rand::random())
                    .expect("candidates");
                return Ok(Replica::Chosen(best, d));
            }
            return Ok(Replica::Primary("ryw_commit_in_flight"));
        };
        let listed = candidates.len();
        for i in 0..listed {
            let c = candidates[i];
            if replayed(view, c.index) >= required || Some(c.index) == view.primary {
                candidates.push(c);
            }
        }
        let fresh = &candidates[listed..];
        if !fresh.is_empty() {
            let index = balance::pick(routing.balance, fresh, &self.app.rr, rand::random())
                .expect("candidates");
            let target = if Some(index) == view.primary {
                Target::Primary
            } else {
                Target::Replica
            };
            return Ok(Replica::Chosen(index, Decision { target, ..d }));
        }
        // No replica has replayed the session's last write yet: wait a little for the most
        // advanced one, asking it directly (the monitor's view is up to an interval old). Of
        // several as advanced, the balance strategy chooses: only the one asked has its
        // position refreshed, so always taking the same one (the last, as `max_by_key` does)
        // kept it the only fresh one, and it took nearly every read.
        let most = most_advanced(candidates, |i| replayed(view, i));
        let best =
            balance::pick(routing.balance, most, &self.app.rr, rand::random()).expect("candidates");
        // (With no primary, after the wait too: a replica about to replay the write gets it.)
        if self
            .wait_replayed(view, best, required, routing.ryw_wait)
            .await?
            || no_primary
        {
            return Ok(Replica::Chosen(best, d));
        }
        Ok(Replica::Primary("ryw_replica_behind"))
    }

    /// The primary for a decision, waiting up to `wait` for one (a cancel ends the wait).
    async fn primary(
        &self,
        view: &ClusterView,
        wait: Duration,
        d: Decision,
    ) -> Result<(usize, Decision), NoBackend> {
        let index = match view.primary {
            Some(p) => Some(p),
            None => tokio::select! {
                i = self.app.cluster.wait_primary(wait) => i,
                () = self.cancel.cancelled_unattached() => return Err(CANCELLED),
            },
        };
        match index {
            Some(i) => Ok((
                i,
                Decision {
                    target: Target::Primary,
                    retryable: false,
                    ..d
                },
            )),
            None => Err(NO_PRIMARY),
        }
    }

    /// Polls a replica's replay position until it reaches `lsn` (`Ok(true)`) or `wait` passes
    /// (`Ok(false)`), or the client cancels the request. `index` is the replica's place in
    /// `view`, the view its pool is looked up in: the published view may have been renumbered
    /// by a reload since.
    async fn wait_replayed(
        &mut self,
        view: &ClusterView,
        index: usize,
        lsn: u64,
        wait: Duration,
    ) -> Result<bool, NoBackend> {
        if wait.is_zero() {
            return Ok(false);
        }
        let Some(pool) = self.pool(index) else {
            return Ok(false);
        };
        let deadline = Instant::now() + wait;
        let checkout = tokio::select! {
            // (The client's own connection if idle, as the read's checkout would take it:
            // the read takes it back next.)
            r = tokio::time::timeout(wait, pool.checkout(self.id)) => r,
            () = self.cancel.cancelled_unattached() => return Err(CANCELLED),
        };
        let p = match checkout {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                if !e.is_refusal()
                    && !matches!(
                        e,
                        crate::pool::PoolError::Timeout(_)
                            | crate::pool::PoolError::Full { .. }
                            | crate::pool::PoolError::Severed
                            | crate::pool::PoolError::Closed
                    )
                {
                    // Not reachable (refused, reset: a replica just killed): the reads that
                    // follow avoid it for a second, as when a read's own checkout fails,
                    // rather than each trying to connect until the monitor sees it down.
                    if let Some(b) = view.backends.get(index) {
                        let until = crate::pool::clock::now_ms() + super::attach::UNREACHABLE_MS;
                        b.stats
                            .unreachable_until
                            .store(until, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                return Ok(false);
            }
            Err(_) => return Ok(false),
        };
        let stats = view.backends.get(index).map(|b| b.stats.clone());
        // A probe's answer may take longer than the read waits (a busy replica): the probes
        // run in their own task, which reads a late answer to its end and hands the
        // connection back clean, rather than closing it for another to be opened. One that
        // does not answer within the connect timeout is closed.
        let answer = self.current.config.config.pool.connect_timeout.max(wait);
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(probe_replay(
            p,
            lsn,
            deadline,
            answer,
            stats,
            self.app.clone(),
            tx,
        ));
        tokio::select! {
            r = tokio::time::timeout_at(deadline.into(), rx) => Ok(matches!(r, Ok(Ok(true)))),
            () = self.cancel.cancelled_unattached() => Err(CANCELLED),
        }
    }
}

/// Reads a replica's replay position on `p` until it reaches `lsn` (then sends true), the
/// `deadline` passes or the waiting read gave up (false), then hands the connection back.
/// Each probe's answer is read to its end (up to `answer`), also after the read stopped
/// waiting for it.
async fn probe_replay(
    mut p: crate::pool::Pooled,
    lsn: u64,
    deadline: Instant,
    answer: Duration,
    stats: Option<std::sync::Arc<crate::cluster::BackendStats>>,
    app: std::sync::Arc<crate::app::App>,
    tx: tokio::sync::oneshot::Sender<bool>,
) {
    let mut ok = false;
    loop {
        match p
            .conn
            .simple_query(
                "SELECT pg_catalog.pg_last_wal_replay_lsn()::pg_catalog.text",
                answer,
            )
            .await
        {
            Ok(Ok(rows)) => {
                let replay = rows
                    .first()
                    .and_then(|r| r.first().cloned().flatten())
                    .as_deref()
                    .and_then(crate::cluster::lag::parse_lsn)
                    .unwrap_or(0);
                if let Some(s) = &stats {
                    // As read, also when lower than what was known (a restarted standby):
                    // storing over a newer read or probe only makes the next read wait.
                    s.replay_lsn
                        .store(replay, std::sync::atomic::Ordering::Release);
                }
                if replay >= lsn {
                    ok = true;
                    break;
                }
            }
            _ => break,
        }
        if Instant::now() + Duration::from_millis(2) > deadline || tx.is_closed() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Back in the pool first: the read that waited takes it next. One that stopped waiting
    // does not take it, and its client may have left meanwhile (a session that leaves
    // disowns only the connections idle then): it goes back as nobody's.
    let (pool, owner) = (p.pool().clone(), p.conn.owner);
    let given_up = tx.is_closed();
    if given_up {
        p.conn.owner = 0;
    }
    if p.conn.broken {
        p.discard("ryw_probe_failed", &app.metrics);
    } else {
        p.release();
    }
    if tx.send(ok).is_err() && !given_up {
        // (It gave up in the moment between.)
        pool.disown(owner);
    }
}

fn candidate(index: usize, b: &BackendView) -> Candidate {
    Candidate {
        index,
        weight: b.weight,
        outstanding: b
            .stats
            .outstanding
            .load(std::sync::atomic::Ordering::Relaxed),
    }
}

/// Appends to `candidates` those of them that have replayed the most (`replayed` of their
/// index), and returns these.
fn most_advanced(candidates: &mut Vec<Candidate>, replayed: impl Fn(usize) -> u64) -> &[Candidate] {
    let listed = candidates.len();
    let most = candidates.iter().map(|c| replayed(c.index)).max();
    for i in 0..listed {
        if Some(replayed(candidates[i].index)) == most {
            candidates.push(candidates[i]);
        }
    }
    &candidates[listed..]
}

fn replayed(view: &ClusterView, index: usize) -> u64 {
    let b = &view.backends[index];
    if b.role == Some(Role::Primary) {
        u64::MAX
    } else {
        b.replay_lsn()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Balance;
    use std::sync::atomic::AtomicUsize;

    fn listed(indexes: &[usize]) -> Vec<Candidate> {
        indexes
            .iter()
            .map(|&index| Candidate {
                index,
                weight: 1,
                outstanding: 0,
            })
            .collect()
    }

    fn indexes(cs: &[Candidate]) -> Vec<usize> {
        cs.iter().map(|c| c.index).collect()
    }

    #[test]
    fn the_most_advanced_replicas_are_all_of_those_as_advanced() {
        let replayed = |i: usize| [0, 500, 300, 500][i];
        let mut cs = listed(&[0, 1, 2, 3]);
        assert_eq!(indexes(most_advanced(&mut cs, replayed)), [1, 3]);
        let mut cs = listed(&[0, 2]);
        assert_eq!(indexes(most_advanced(&mut cs, replayed)), [2]);
    }

    /// Read-your-writes reads with no replica known to have replayed the write: the replicas
    /// as advanced share them (failover review: the last listed took nearly all).
    #[test]
    fn replicas_as_advanced_share_the_reads_that_wait_for_one() {
        let rr = AtomicUsize::new(0);
        let mut got = [0; 3];
        for n in 0..100u64 {
            let mut cs = listed(&[0, 1, 2]);
            let most = most_advanced(&mut cs, |i| [700, 300, 700][i]);
            let best = balance::pick(Balance::RoundRobin, most, &rr, n).expect("candidates");
            got[best] += 1;
        }
        assert_eq!(got, [50, 0, 50]);
    }
}
