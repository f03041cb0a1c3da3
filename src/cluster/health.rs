//! The per-backend health state machine: consecutive agreeing probes flip state, with explicit
//! thresholds (`fall` failures mark a backend down, `rise` successes mark it up or confirm a
//! role change). Pure, so it is tested without a network.

/// What a backend says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Not in recovery: accepts writes.
    Primary,
    /// In recovery (streaming replica or standby).
    Replica,
}

/// One successful probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Observation {
    /// `pg_is_in_recovery()` was false.
    pub primary: bool,
    /// Timeline: a primary's from the WAL file it writes (a promoted server's new timeline at
    /// once, where `pg_control_checkpoint()` shows it only after the end-of-recovery
    /// checkpoint, which can take minutes); a replica's from its WAL receiver, when readable
    /// (`pg_monitor`).
    pub timeline: Option<u32>,
    /// `pg_current_wal_lsn()` on a primary.
    pub current_lsn: Option<u64>,
    /// `pg_last_wal_receive_lsn()` on a replica.
    pub receive_lsn: Option<u64>,
    /// `pg_last_wal_replay_lsn()` on a replica.
    pub replay_lsn: Option<u64>,
    /// Replay is paused (`pg_get_wal_replay_pause_state() <> 'not paused'`).
    pub replay_paused: bool,
    /// The WAL receiver is streaming (replicas).
    pub receiver_streaming: bool,
    /// `pg_last_xact_replay_timestamp()` in ms since the epoch, by the replica's own clock
    /// (reported for operators; lag never compares it with another host's clock).
    pub last_replay_ms: Option<i64>,
    /// `pg_postmaster_start_time()` in µs since the epoch: two backends reporting the same
    /// are one server configured twice (by two addresses).
    pub started_us: Option<i64>,
}

impl Observation {
    /// The role this observation shows.
    pub fn role(&self) -> Role {
        if self.primary {
            Role::Primary
        } else {
            Role::Replica
        }
    }
}

/// The state of one backend as the monitor believes it.
#[derive(Debug, Clone, Default)]
pub struct Health {
    /// Believed reachable and working.
    pub up: bool,
    /// Believed role; `None` until the first successful probe.
    pub role: Option<Role>,
    /// The most recent successful observation.
    pub last: Option<Observation>,
    /// Whether any probe has completed (the first one sets state without thresholds).
    pub probed: bool,
    good_streak: u32,
    bad_streak: u32,
    role_streak: u32,
}

/// What an observation changed, for logging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    None,
    WentUp,
    WentDown,
    RoleChanged(Role),
}

impl Health {
    /// State carried over a monitor restart: believed up/role, streaks reset.
    pub fn carried(up: bool, role: Option<Role>) -> Health {
        Health {
            up,
            role,
            probed: true,
            ..Default::default()
        }
    }

    /// Applies a probe result with thresholds `fall` and `rise`.
    pub fn observe(&mut self, result: Option<Observation>, fall: u32, rise: u32) -> Change {
        let first = !self.probed;
        self.probed = true;
        match result {
            None => {
                self.good_streak = 0;
                self.role_streak = 0;
                self.bad_streak = self.bad_streak.saturating_add(1);
                if self.up && (self.bad_streak >= fall || first) {
                    self.up = false;
                    return Change::WentDown;
                }
                Change::None
            }
            Some(obs) => {
                self.bad_streak = 0;
                self.good_streak = self.good_streak.saturating_add(1);
                self.last = Some(obs);
                let observed = obs.role();
                if !self.up {
                    if first || self.good_streak >= rise {
                        self.up = true;
                        self.role = Some(observed);
                        self.role_streak = 0;
                        return Change::WentUp;
                    }
                    return Change::None;
                }
                if self.role == Some(observed) {
                    self.role_streak = 0;
                    return Change::None;
                }
                self.role_streak += 1;
                if self.role.is_none() || self.role_streak >= rise {
                    self.role = Some(observed);
                    self.role_streak = 0;
                    return Change::RoleChanged(observed);
                }
                Change::None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(primary: bool) -> Option<Observation> {
        Some(Observation {
            primary,
            ..Default::default()
        })
    }

    #[test]
    fn first_probe_sets_state_at_once() {
        let mut h = Health::default();
        assert_eq!(h.observe(obs(true), 3, 2), Change::WentUp);
        assert!(h.up);
        assert_eq!(h.role, Some(Role::Primary));
        let mut d = Health::default();
        assert_eq!(d.observe(None, 3, 2), Change::None);
        assert!(!d.up);
    }

    #[test]
    fn fall_needs_consecutive_failures() {
        let mut h = Health::default();
        h.observe(obs(false), 3, 2);
        assert_eq!(h.observe(None, 3, 2), Change::None);
        assert_eq!(h.observe(None, 3, 2), Change::None);
        assert_eq!(
            h.observe(obs(false), 3, 2),
            Change::None,
            "a success resets the streak"
        );
        assert_eq!(h.observe(None, 3, 2), Change::None);
        assert_eq!(h.observe(None, 3, 2), Change::None);
        assert_eq!(h.observe(None, 3, 2), Change::WentDown);
        assert!(!h.up);
    }

    #[test]
    fn rise_needs_consecutive_successes() {
        let mut h = Health::default();
        h.observe(None, 1, 2);
        assert_eq!(h.observe(obs(false), 1, 2), Change::None);
        assert_eq!(h.observe(None, 1, 2), Change::None);
        assert_eq!(h.observe(obs(false), 1, 2), Change::None);
        assert_eq!(h.observe(obs(false), 1, 2), Change::WentUp);
    }

    #[test]
    fn role_change_needs_rise_agreeing_probes() {
        let mut h = Health::default();
        h.observe(obs(false), 3, 2);
        assert_eq!(h.observe(obs(true), 3, 2), Change::None);
        assert_eq!(h.role, Some(Role::Replica));
        assert_eq!(
            h.observe(obs(false), 3, 2),
            Change::None,
            "disagreeing probe resets"
        );
        assert_eq!(h.observe(obs(true), 3, 2), Change::None);
        assert_eq!(
            h.observe(obs(true), 3, 2),
            Change::RoleChanged(Role::Primary)
        );
        assert_eq!(h.role, Some(Role::Primary));
    }
}
