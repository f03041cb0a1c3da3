//! The election of the primary among the servers claiming the role, and the backends that
//! reach one server twice.

use super::{lock, Aggregator};
use crate::cluster::health::{Health, Role};
use crate::cluster::Epoch;
use std::time::Instant;

impl Aggregator {
    /// Elects the primary: of the servers up and not in recovery, the one on the highest
    /// timeline (a promotion starts a new one), if it is alone there and not below a timeline
    /// a primary was already seen on. Two on the same timeline cannot be told apart (a
    /// configuration error, or a server restarted without `standby.signal`): neither gets
    /// traffic until one of them stops claiming the role.
    pub(super) fn elect(&mut self) {
        // A server whose last answer says it is a standby claims nothing, whatever `rise`
        // says of its role (its timeline is then the one it receives).
        let claims_now = |i: usize| {
            let h = &self.healths[i];
            h.up && self.same_as[i].is_none() && h.last.is_some_and(|o| o.primary)
        };
        let candidates: Vec<usize> = (0..self.healths.len())
            .filter(|&i| claims_now(i) && self.healths[i].role == Some(Role::Primary))
            .collect();
        let timeline = |i: usize| self.healths[i].last.and_then(|o| o.timeline).unwrap_or(0);
        let top = candidates.iter().map(|&i| timeline(i)).max();
        // A standby seen promoted (not in recovery, on a newer timeline) is not elected before
        // `rise` answers agree, but a promotion cannot be undone: the primaries on older
        // timelines are not trusted from its first answer on (writes wait for the new one
        // rather than land on the old history).
        let promoted = (0..self.healths.len())
            .filter(|&i| claims_now(i))
            .map(timeline)
            .max()
            .unwrap_or(0);
        // While no primary is elected (at start, or after the primary was lost), a standby
        // streaming a newer timeline proves a promotion happened after every primary on an
        // older one: the promoted server's own probe may have failed, or not come in yet,
        // leaving only the old primary to claim the role. (Not once a primary is elected: a
        // standby of another cluster, or one left on an abandoned timeline, must not fence
        // it.)
        let streamed = if self.primary.is_none() {
            (0..self.healths.len())
                .filter(|&i| {
                    let h = &self.healths[i];
                    h.up && h.role == Some(Role::Replica)
                        && h.last.is_some_and(|o| o.receiver_streaming)
                })
                .map(timeline)
                .max()
                .unwrap_or(0)
        } else {
            0
        };
        self.claimed = self.claimed.max(promoted);
        let floor = self.epoch.timeline.max(streamed).max(self.claimed);

        let claims: Vec<(usize, u32)> = candidates.iter().map(|&i| (i, timeline(i))).collect();
        let winner = elected(&claims, floor);
        if let Some(w) = winner.filter(|&w| timeline(w) > self.epoch.timeline) {
            self.epoch = Epoch {
                timeline: timeline(w),
                start_lsn: self.healths[w]
                    .last
                    .and_then(|o| o.current_lsn)
                    .unwrap_or(u64::MAX),
            };
        }
        if winner != self.primary {
            match winner {
                Some(w) if self.last_elected == Some((w, timeline(w))) => {
                    // The primary back after an outage or a restart, on the same timeline:
                    // the history goes on (a replica far behind stays far behind, rather than
                    // counted only as far behind as the time since the restart). Should its
                    // position have gone back, recording it starts the history afresh.
                    tracing::warn!(backend = %self.names[w].0, timeline = timeline(w), "primary back");
                    self.primary_seen = None;
                    if let Some(lsn) = self.healths[w].last.and_then(|o| o.current_lsn) {
                        lock(&self.history).record(Instant::now(), lsn);
                    }
                }
                Some(w) => {
                    tracing::warn!(backend = %self.names[w].0, timeline = timeline(w), "new primary");
                    // (Its own probes from before the election stay: see `apply`.)
                    self.primary_seen = self.primary_seen.filter(|&(i, _, _)| i == w);
                    self.last_elected = Some((w, timeline(w)));
                    // Positions from another timeline history mean nothing now.
                    for v in &self.views {
                        v.stats
                            .replay_lsn
                            .store(0, std::sync::atomic::Ordering::Release);
                    }
                    lock(&self.history).clear();
                    if let Some(lsn) = self.healths[w].last.and_then(|o| o.current_lsn) {
                        lock(&self.history).record(Instant::now(), lsn);
                    }
                }
                // The history stays: replicas' lag goes on growing from the last position
                // the primary was seen at, so a stale one does not become eligible.
                None => tracing::warn!("no primary available"),
            }
        }
        for &c in &candidates {
            let fenced = Some(c) != winner;
            if fenced && !self.views[c].fenced {
                let (name, t) = (&self.names[c].0, timeline(c));
                if t < top.unwrap_or(0) || t < floor {
                    tracing::error!(backend = %name, timeline = t, primary_timeline = floor.max(top.unwrap_or(0)), standby_timeline = streamed, "a server on an older timeline than a primary was seen on, or a standby streams, claims to be primary (an old primary back after a failover): fenced, its connections cut");
                } else {
                    tracing::error!(backend = %name, timeline = t, "several servers claim to be primary on the same timeline: none is trusted (fenced) until only one does");
                }
                self.to_sever.push(c);
            }
            self.views[c].fenced = fenced;
        }
        self.primary = winner;
    }

    /// Finds the backends that reach a server configured before them: the same primary
    /// under two addresses would otherwise be two primaries on one timeline, both fenced.
    pub(super) fn find_duplicates(&mut self) {
        for (i, now) in same_servers(&self.healths).into_iter().enumerate() {
            if now == self.same_as[i] {
                continue;
            }
            let name = &self.names[i].0;
            match now {
                Some(j) => {
                    tracing::error!(backend = %name, address = %self.names[i].1, same_as = %self.names[j].0, "reaches the same server as another backend (the same postmaster start time): it takes no traffic; configure each server once")
                }
                None => {
                    tracing::info!(backend = %name, "no longer reaches the same server as another backend")
                }
            }
            self.same_as[i] = now;
            self.views[i].duplicate_of = now.map(|j| self.views[j].name.clone());
            // (Not a candidate any more: the election would leave a fence from before.)
            self.views[i].fenced &= now.is_none();
        }
    }
}

/// Of each backend, the first one before it that is up and reports the same postmaster start
/// time: the same server, reached by another address.
fn same_servers(healths: &[Health]) -> Vec<Option<usize>> {
    let started = |h: &Health| h.last.filter(|_| h.up).and_then(|o| o.started_us);
    (0..healths.len())
        .map(|i| {
            let s = started(&healths[i])?;
            (0..i).find(|&j| started(&healths[j]) == Some(s))
        })
        .collect()
}

/// Of the servers claiming the primary role, as (index, timeline): the one on the highest
/// timeline (a promotion starts a new one), if it is alone there and not below `floor` (the
/// timeline a primary was already seen on, or one a standby receives). Two on the same
/// timeline cannot be told apart: neither is trusted.
fn elected(claims: &[(usize, u32)], floor: u32) -> Option<usize> {
    let top = claims.iter().map(|&(_, t)| t).max()?;
    if top < floor {
        return None;
    }
    let mut at_top = claims.iter().filter(|&&(_, t)| t == top);
    match (at_top.next(), at_top.next()) {
        (Some(&(i, _)), None) => Some(i),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{elected, same_servers, Health};
    use crate::cluster::health::Observation;

    #[test]
    fn backends_reporting_one_start_time_are_one_server() {
        let h = |up: bool, started: Option<i64>| {
            let mut h = Health::default();
            h.up = up;
            h.last = Some(Observation {
                started_us: started,
                ..Default::default()
            });
            h
        };
        let hs = [
            h(true, Some(7)),
            h(true, Some(8)),
            h(true, Some(7)),
            h(false, Some(8)),
            h(true, None),
            h(true, None),
            h(true, Some(7)),
        ];
        assert_eq!(
            same_servers(&hs),
            [None, None, Some(0), None, None, None, Some(0)]
        );
    }

    #[test]
    fn the_one_primary_is_elected() {
        assert_eq!(elected(&[(1, 1)], 0), Some(1));
        assert_eq!(elected(&[], 0), None);
    }

    #[test]
    fn a_promotion_wins_over_the_old_primary_still_running() {
        assert_eq!(elected(&[(0, 1), (2, 2)], 1), Some(2));
        assert_eq!(elected(&[(0, 3), (2, 2)], 0), Some(0));
    }

    #[test]
    fn two_primaries_on_one_timeline_are_both_refused() {
        assert_eq!(elected(&[(0, 2), (1, 2)], 0), None);
        // Even with an older one beside them.
        assert_eq!(elected(&[(0, 2), (1, 2), (2, 1)], 0), None);
    }

    #[test]
    fn an_old_primary_back_alone_is_not_elected() {
        // The new primary is down; the old one is back on the timeline before it.
        assert_eq!(elected(&[(0, 1)], 2), None);
        assert_eq!(elected(&[(0, 2)], 2), Some(0));
    }

    #[test]
    fn a_standby_on_a_newer_timeline_disqualifies_an_older_primary() {
        // At start, the promoted server's first probe failed: only the old primary claims
        // the role, but a standby already streams the promoted one's timeline.
        let streamed = 2;
        assert_eq!(elected(&[(0, 1)], streamed), None);
    }
}
