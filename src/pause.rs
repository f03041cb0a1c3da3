//! The admin console's holds on databases. `PAUSE` and `RESUME`, for every database or for
//! some: new transactions and logins wait, unsent, until they are resumed. Sessions read one
//! flag (anything paused?) per server checkout; only then do they look at which databases,
//! and only a session that waits subscribes to the channel. `DISABLE` and `ENABLE` one
//! database: its new logins are refused ([`Disabled`], looked at once per login).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// What is paused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Paused {
    /// Every database.
    pub all: bool,
    /// These databases (besides `all`).
    pub databases: BTreeSet<String>,
}

impl Paused {
    /// Whether a transaction on `database` waits.
    pub fn holds(&self, database: &str) -> bool {
        self.all || self.databases.contains(database)
    }

    fn any(&self) -> bool {
        self.all || !self.databases.is_empty()
    }
}

/// Why a `RESUME` of one database cannot be done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeRefused;

pub struct Pause {
    /// `state.any()`, for the per-checkout check.
    any: AtomicBool,
    state: Mutex<Paused>,
    /// Bumped at every change; waiting sessions look again.
    tx: tokio::sync::watch::Sender<u64>,
}

impl Default for Pause {
    fn default() -> Self {
        Pause {
            any: AtomicBool::new(false),
            state: Mutex::default(),
            tx: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl Pause {
    /// Whether anything is paused now.
    #[inline]
    pub fn is_on(&self) -> bool {
        // SeqCst on both sides: a session sets its server connection, then reads this; PAUSE
        // sets this, then reads the connections. One of the two sees the other.
        self.any.load(Ordering::SeqCst)
    }

    /// Whether a transaction on `database` waits now.
    #[inline]
    pub fn holds(&self, database: &str) -> bool {
        self.is_on() && self.state.lock().expect("pause").holds(database)
    }

    /// What is paused now.
    pub fn paused(&self) -> Paused {
        self.state.lock().expect("pause").clone()
    }

    /// Pauses every database (`None`) or one; returns whether that changed anything.
    pub fn pause(&self, database: Option<&str>) -> bool {
        self.change(|p| match database {
            None => !std::mem::replace(&mut p.all, true),
            Some(_) if p.all => false,
            Some(db) => p.databases.insert(db.to_owned()),
        })
    }

    /// Resumes everything (`None`: also the databases paused one by one) or one database;
    /// returns whether that changed anything. One database cannot be resumed while every
    /// database is paused.
    pub fn resume(&self, database: Option<&str>) -> Result<bool, ResumeRefused> {
        let mut refused = false;
        let changed = self.change(|p| match database {
            None => {
                let was = p.any();
                *p = Paused::default();
                was
            }
            Some(_) if p.all => {
                refused = true;
                false
            }
            Some(db) => p.databases.remove(db),
        });
        if refused {
            Err(ResumeRefused)
        } else {
            Ok(changed)
        }
    }

    fn change(&self, f: impl FnOnce(&mut Paused) -> bool) -> bool {
        let mut p = self.state.lock().expect("pause");
        let changed = f(&mut p);
        self.any.store(p.any(), Ordering::SeqCst);
        drop(p);
        if changed {
            self.tx.send_modify(|v| *v += 1);
        }
        changed
    }

    /// Whether what a `PAUSE` of `database` (every one: `None`) paused is paused still.
    pub fn covers(&self, database: Option<&str>) -> bool {
        let p = self.state.lock().expect("pause");
        match database {
            None => p.all,
            Some(db) => p.holds(db),
        }
    }

    /// Changes from now on (each `PAUSE` or `RESUME` that changed something marks it changed).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.tx.subscribe()
    }

    /// Returns once transactions on `database` no longer wait.
    pub async fn resumed(&self, database: &str) {
        let mut rx = self.tx.subscribe();
        // Subscribed before looking: a change after the look wakes the wait.
        while self.holds(database) {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
}

/// The databases that `DISABLE` closed to new logins.
#[derive(Default)]
pub struct Disabled(Mutex<BTreeSet<String>>);

impl Disabled {
    /// Closes `database` to new logins; returns whether it was open.
    pub fn disable(&self, database: &str) -> bool {
        self.0.lock().expect("disabled").insert(database.to_owned())
    }

    /// Opens `database` to new logins again; returns whether it was closed.
    pub fn enable(&self, database: &str) -> bool {
        self.0.lock().expect("disabled").remove(database)
    }

    /// Whether logins to `database` are refused.
    pub fn refuses(&self, database: &str) -> bool {
        self.0.lock().expect("disabled").contains(database)
    }

    /// The disabled databases, in order.
    pub fn list(&self) -> BTreeSet<String> {
        self.0.lock().expect("disabled").clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disabled_database_refuses_logins_until_enabled() {
        let d = Disabled::default();
        assert!(!d.refuses("app"));
        assert!(d.disable("app"));
        assert!(!d.disable("app"), "already disabled");
        assert!(d.refuses("app") && !d.refuses("other"));
        assert_eq!(d.list().into_iter().collect::<Vec<_>>(), ["app"]);
        assert!(!d.enable("other"));
        assert!(d.enable("app"));
        assert!(!d.refuses("app") && d.list().is_empty());
    }

    #[test]
    fn databases_pause_alone_or_all_together() {
        let p = Pause::default();
        assert!(!p.is_on() && !p.holds("app"));
        assert!(p.pause(Some("app")));
        assert!(!p.pause(Some("app")), "already paused");
        assert!(p.is_on() && p.holds("app") && !p.holds("other"));
        assert_eq!(p.resume(Some("other")), Ok(false));
        assert_eq!(p.resume(Some("app")), Ok(true));
        assert!(!p.is_on());

        assert!(p.pause(Some("app")));
        assert!(p.pause(None));
        assert!(p.holds("other"));
        assert!(
            !p.pause(Some("other")),
            "covered by the pause of everything"
        );
        assert_eq!(p.resume(Some("app")), Err(ResumeRefused));
        assert_eq!(p.resume(None), Ok(true));
        assert!(
            !p.is_on() && !p.holds("app"),
            "RESUME resumes every database"
        );
        assert_eq!(p.resume(None), Ok(false));
    }

    #[tokio::test]
    async fn a_waiting_session_goes_on_when_its_database_resumes() {
        let p = std::sync::Arc::new(Pause::default());
        p.pause(Some("app"));
        p.pause(Some("other"));
        let waiter = tokio::spawn({
            let p = p.clone();
            async move { p.resumed("app").await }
        });
        tokio::task::yield_now().await;
        p.resume(Some("other")).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "another database's RESUME");
        p.resume(Some("app")).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("resumed")
            .unwrap();
    }
}
