//! What the console's `SHOW` commands list, read from the running proxy: the cluster view,
//! the pools, the client registry, the metrics and the configuration.

use std::sync::atomic::Ordering;

use prometheus::core::Collector;
use prometheus::IntCounterVec;

use super::commands::{Show, HELP};
use super::table::{boolean, int, text, Value};
use crate::app::App;
use crate::net::listener::Peer;
use crate::pool::clock;

/// The rows of `SHOW <show>`, in the columns [`super::commands::Command::columns`] names.
pub fn rows(app: &App, show: Show) -> Vec<Vec<Value>> {
    match show {
        Show::Help => HELP.iter().map(|(c, d)| vec![text(*c), text(*d)]).collect(),
        Show::Version => vec![vec![text(version())]],
        Show::Config => app
            .config
            .load()
            .describe()
            .lines()
            .map(|l| vec![text(l)])
            .collect(),
        Show::Backends => backends(app),
        Show::Pools => pools(app),
        Show::Clients => clients(app),
        Show::Servers => servers(app),
    }
}

/// `switchyard x.y.z`.
pub fn version() -> String {
    format!("switchyard {}", env!("CARGO_PKG_VERSION"))
}

fn backends(app: &App) -> Vec<Vec<Value>> {
    let view = app.cluster.view();
    let m = &app.metrics;
    view.backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let role = b.role_label();
            let name = &*b.name;
            let (lag_bytes, lag) = b.shown_lag();
            vec![
                text(&*b.name),
                text(b.address.as_str()),
                text(role),
                boolean(b.up),
                boolean(view.primary == Some(i)),
                int(b.weight),
                b.timeline.map(int).unwrap_or_default(),
                b.lsn.map(crate::cluster::lag::format_lsn),
                lag_bytes.map(|n| int(n as i64)).unwrap_or_default(),
                lag.map(|d| int(d.as_millis() as i64)).unwrap_or_default(),
                boolean(b.replay_paused),
                int(b.stats.outstanding.load(Ordering::Relaxed) as i64),
                int(counted(&m.transactions, name)),
                int(counted(&m.queries, name)),
                int(counted(&m.server_connects, name)),
                int(counted(&m.server_connect_errors, name)),
                int(counted(&m.pool_waits, name)),
                b.probe_error.as_deref().map(str::to_owned),
            ]
        })
        .collect()
}

/// Backend `name`'s count in `counter` (one label, `backend`), 0 when it has no series: read
/// without making one (a backend shown once would otherwise keep zero-valued series of
/// its own, after a reload removed it too).
fn counted(counter: &IntCounterVec, name: &str) -> i64 {
    counter
        .collect()
        .iter()
        .flat_map(|f| f.get_metric())
        .find(|s| s.get_label().iter().any(|l| l.get_value() == name))
        .map_or(0, |s| s.get_counter().get_value() as i64)
}

fn pools(app: &App) -> Vec<Vec<Value>> {
    let paused = app.pause.paused();
    let disabled = app.disabled.list();
    app.pools
        .stats()
        .into_iter()
        .map(|p| {
            let held = paused.holds(&p.key.database);
            let closed = disabled.contains(&p.key.database);
            vec![
                text(&*p.key.backend),
                text(p.key.user),
                text(p.key.database),
                int(p.size as i64),
                int(p.in_use as i64),
                int(p.idle.len() as i64),
                int(p.opening as i64),
                int(p.waiting as i64),
                boolean(p.server_full),
                boolean(held),
                boolean(closed),
            ]
        })
        .collect()
}

fn clients(app: &App) -> Vec<Vec<Value>> {
    app.cancels
        .clients()
        .into_iter()
        .map(|c| {
            let state = match (&c.target, c.info.console) {
                (_, true) => "console",
                (Some(_), _) => "active",
                (None, _) if c.waiting => "waiting",
                (None, _) => "idle",
            };
            vec![
                int(c.pid),
                text(&*c.user),
                text(c.info.database),
                text(match c.info.peer {
                    Peer::Tcp(a) => a.ip().to_string(),
                    Peer::Unix => "unix".into(),
                }),
                match c.info.peer {
                    Peer::Tcp(a) => int(a.port()),
                    Peer::Unix => Value::default(),
                },
                boolean(c.info.tls),
                text(c.info.application_name),
                text(state),
                c.target
                    .as_ref()
                    .map(|t| text(&*t.pool.key.backend))
                    .unwrap_or_default(),
                c.target.as_ref().map(|t| int(t.pid)).unwrap_or_default(),
                int(c.info.since.elapsed().as_secs() as i64),
            ]
        })
        .collect()
}

/// Idle connections from the pools, and those serving clients from the client registry. (A
/// connection the proxy itself uses at the moment, to log a client in or to reset it, is in
/// neither: `SHOW POOLS` counts it in `in_use`.)
fn servers(app: &App) -> Vec<Vec<Value>> {
    let now = clock::now_ms();
    let seconds = |since: u64| int((now.saturating_sub(since) / 1000) as i64);
    let mut rows = Vec::new();
    for p in app.pools.stats() {
        for (pid, opened, idle_since) in p.idle {
            rows.push(vec![
                text(&*p.key.backend),
                text(p.key.user.as_str()),
                text(p.key.database.as_str()),
                int(pid),
                text("idle"),
                None,
                seconds(opened),
                seconds(idle_since),
            ]);
        }
    }
    for c in app.cancels.clients() {
        let Some(t) = c.target else { continue };
        let key = &t.pool.key;
        rows.push(vec![
            text(&*key.backend),
            text(key.user.as_str()),
            text(key.database.as_str()),
            int(t.pid),
            text("active"),
            int(c.pid),
            seconds(t.opened),
            None,
        ]);
    }
    rows
}
