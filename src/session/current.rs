//! A session's own copy of the configuration and the cluster view, refreshed only when either
//! changed: every request is routed by them, and comparing two version counters costs less
//! than loading the shared pointers each time.

use std::sync::Arc;

use crate::app::App;
use crate::cluster::ClusterView;
use crate::config::Loaded;

/// The configuration and cluster view as of the last [`Current::refresh`].
pub(super) struct Current {
    pub config: Arc<Loaded>,
    pub view: Arc<ClusterView>,
    /// (configuration version, cluster version) they were loaded at.
    seen: (u64, u64),
}

impl Current {
    pub fn new(app: &App) -> Current {
        let seen = (app.config_version(), app.cluster.version());
        Current {
            config: app.config.load_full(),
            view: app.cluster.snapshot(),
            seen,
        }
    }

    /// Reloads whatever was replaced since. The versions are read before the values, and
    /// are bumped after a value is stored, so what is kept is never older than what they say.
    pub fn refresh(&mut self, app: &App) {
        let now = (app.config_version(), app.cluster.version());
        if now == self.seen {
            return;
        }
        if now.0 != self.seen.0 {
            self.config = app.config.load_full();
        }
        if now.1 != self.seen.1 {
            self.view = app.cluster.snapshot();
        }
        self.seen = now;
    }
}
