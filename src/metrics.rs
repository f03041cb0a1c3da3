//! The Prometheus registry and the metric set. One `Metrics` value is created at start and
//! passed as a handle; hot-path counters are resolved to concrete children once (per backend or
//! per pool) so that counting is a single atomic add.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// All metrics, registered in `registry`.
pub struct Metrics {
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// Client connections logged in now.
    pub clients: IntGauge,
    /// Client connections accepted since start.
    pub clients_total: IntCounter,
    /// Client connections refused, by reason (`max_clients`, `no_tls`, `no_alpn`,
    /// `client_cert`, `not_admin`, `disabled`, `hba`). Failed logins count in `errors_total` by SQLSTATE.
    pub clients_rejected: IntCounterVec,
    /// Server connections open now, by backend and state (`idle`, `active`).
    pub server_conns: IntGaugeVec,
    /// Server connections opened, by backend.
    pub server_connects: IntCounterVec,
    /// Failed server connection attempts, by backend.
    pub server_connect_errors: IntCounterVec,
    /// Requests (simple queries and extended-protocol Syncs) sent, by backend.
    pub queries: IntCounterVec,
    /// Transactions completed on a pooled connection (server connection released), by backend.
    pub transactions: IntCounterVec,
    /// Errors the proxy itself answered a client with, by SQLSTATE.
    pub errors: IntCounterVec,
    /// ErrorResponses relayed from servers, by backend.
    pub server_errors: IntCounterVec,
    /// Checkouts that had to wait for a server connection.
    pub pool_waits: IntCounterVec,
    /// Checkout wait time, by backend.
    pub pool_wait_seconds: HistogramVec,
    /// Clients pinned to a server connection, by reason.
    pub pins: IntCounterVec,
    /// Server connections closed instead of being reused, by reason.
    pub server_discards: IntCounterVec,
    /// Named prepared statements interned proxy-wide.
    pub prepared_statements: IntGauge,
    /// Prepared statements closed on a server connection that held too many.
    pub prepared_evictions: IntCounter,
    /// Config reloads by result (`ok`, `error`).
    pub reloads: IntCounterVec,
    /// 1 while the admin console's `PAUSE` holds every database's new transactions, else 0.
    pub paused: IntGauge,
    /// Pools whose server refused a connection for lack of slots within the last 10 s (set
    /// when `/metrics` is read).
    pub pools_server_full: IntGauge,
    /// Databases paused one by one (`PAUSE db`).
    pub paused_databases: IntGauge,
    /// Databases that refuse new logins (`DISABLE db`).
    pub disabled_databases: IntGauge,
    /// Requests that waited for the admin console's `RESUME`.
    pub pause_waits: IntCounter,
    /// `[auth_query]` lookups by result (`found`, `unknown`, `error`).
    pub auth_queries: IntCounterVec,
    /// Role-membership reads for `hba_file`'s `+role` and `samerole` by result (`found`,
    /// `error`).
    pub hba_role_lookups: IntCounterVec,
    /// Cancel requests by result (`forwarded`, `not_running`, `failed`, `between_servers`,
    /// `waiting`, `unknown`; see README).
    pub cancels: IntCounterVec,
    /// TLS handshakes by side (`client`: clients of the proxy, `server`: the proxy's server
    /// connections) and result (`ok`, `error`).
    pub tls_handshakes: IntCounterVec,
    /// Backend health as seen by the monitor (1 up, 0 down).
    pub backend_up: IntGaugeVec,
    /// Backend role (1 primary, 0 replica, -1 unknown, -2 fenced: claims the primary role and
    /// takes nothing, -3 a duplicate of an earlier entry, -4 a diverged standby).
    pub backend_role: IntGaugeVec,
    /// Health probes that failed, by backend and kind (`failed`, `full`: no connection slot
    /// for the monitor, `login_refused`: the server refused the monitor's login).
    pub probe_errors: IntCounterVec,
    /// Replication lag of replicas in bytes (no series while unknown).
    pub replica_lag_bytes: IntGaugeVec,
    /// Replication lag of replicas in milliseconds.
    pub replica_lag_ms: IntGaugeVec,
    /// Reads routed, by destination role.
    pub routed: IntCounterVec,
    /// Requests transparently repeated on another server, by reason.
    pub retries: IntCounterVec,
    /// `routed` children for the known reasons, resolved once: (reason, primary, replica).
    routed_known: Vec<(&'static str, IntCounter, IntCounter)>,
}

/// Routing reasons, resolved to counters at start (others are looked up by label).
const ROUTE_REASONS: &[&str] = &[
    "read",
    "write",
    "setting",
    "transaction",
    "read_only_transaction",
    "no_split",
    "pinned",
    "retry_on_primary",
    "unknown",
    "hint_primary",
    "hint_replica",
    "consistency_primary",
    "primary_answer",
    "serializable",
    "no_replica",
    "ryw_commit_in_flight",
    "ryw_replica_behind",
];

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(format!("switchyard_{name}"), help).expect("metric");
    r.register(Box::new(c.clone())).expect("register");
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(format!("switchyard_{name}"), help).expect("metric");
    r.register(Box::new(g.clone())).expect("register");
    g
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c =
        IntCounterVec::new(Opts::new(format!("switchyard_{name}"), help), labels).expect("metric");
    r.register(Box::new(c.clone())).expect("register");
    c
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g =
        IntGaugeVec::new(Opts::new(format!("switchyard_{name}"), help), labels).expect("metric");
    r.register(Box::new(g.clone())).expect("register");
    g
}

impl Metrics {
    /// Counts a client connection refused for `reason` (`client_rejected_total`).
    pub fn rejected(&self, reason: &str) {
        self.clients_rejected.with_label_values(&[reason]).inc();
    }

    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let r = Registry::new();
        let clients = gauge(&r, "client_connections", "Client connections logged in now");
        let clients_total = counter(
            &r,
            "client_connections_total",
            "Client connections accepted",
        );
        let pool_wait_seconds = HistogramVec::new(
            HistogramOpts::new(
                "switchyard_pool_wait_seconds",
                "Time clients waited for a server connection",
            )
            .buckets(vec![0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]),
            &["backend"],
        )
        .expect("metric");
        r.register(Box::new(pool_wait_seconds.clone()))
            .expect("register");
        let routed = counter_vec(
            &r,
            "routed_total",
            "Requests routed, by target role and reason",
            &["target", "reason"],
        );
        let routed_known = ROUTE_REASONS
            .iter()
            .map(|&reason| {
                (
                    reason,
                    routed.with_label_values(&["primary", reason]),
                    routed.with_label_values(&["replica", reason]),
                )
            })
            .collect();
        Metrics {
            routed_known,
            clients,
            clients_total,
            clients_rejected: counter_vec(
                &r,
                "client_rejected_total",
                "Client connections refused",
                &["reason"],
            ),
            server_conns: gauge_vec(
                &r,
                "server_connections",
                "Server connections open now",
                &["backend", "state"],
            ),
            server_connects: counter_vec(
                &r,
                "server_connects_total",
                "Server connections opened",
                &["backend"],
            ),
            server_connect_errors: counter_vec(
                &r,
                "server_connect_errors_total",
                "Failed server connection attempts",
                &["backend"],
            ),
            queries: counter_vec(
                &r,
                "queries_total",
                "Requests sent to servers (simple queries and Syncs)",
                &["backend"],
            ),
            transactions: counter_vec(
                &r,
                "transactions_total",
                "Transactions completed on pooled connections",
                &["backend"],
            ),
            errors: counter_vec(
                &r,
                "errors_total",
                "Errors the proxy answered clients with",
                &["sqlstate"],
            ),
            server_errors: counter_vec(
                &r,
                "server_errors_total",
                "ErrorResponses relayed from servers",
                &["backend"],
            ),
            pool_waits: counter_vec(
                &r,
                "pool_waits_total",
                "Checkouts that waited for a server connection",
                &["backend"],
            ),
            pool_wait_seconds,
            pins: counter_vec(
                &r,
                "pinned_clients_total",
                "Clients pinned to one server connection",
                &["reason"],
            ),
            pools_server_full: gauge(
                &r,
                "pools_server_full",
                "Pools whose server refused a connection for lack of slots within the last 10 s",
            ),
            paused: gauge(
                &r,
                "paused",
                "1 while every database's new transactions wait for the admin console's RESUME",
            ),
            paused_databases: gauge(
                &r,
                "paused_databases",
                "Databases whose new transactions wait for the admin console's RESUME (PAUSE db)",
            ),
            disabled_databases: gauge(
                &r,
                "disabled_databases",
                "Databases that refuse new logins (the admin console's DISABLE db)",
            ),
            pause_waits: counter(
                &r,
                "pause_waits_total",
                "Requests that waited for the admin console's RESUME",
            ),
            server_discards: counter_vec(
                &r,
                "server_discards_total",
                "Server connections closed instead of reused",
                &["reason"],
            ),
            prepared_statements: gauge(
                &r,
                "prepared_statements",
                "Named prepared statements interned proxy-wide",
            ),
            prepared_evictions: counter(
                &r,
                "prepared_statement_evictions_total",
                "Prepared statements closed on a server connection past max_prepared_statements",
            ),
            reloads: counter_vec(&r, "reloads_total", "Configuration reloads", &["result"]),
            auth_queries: counter_vec(
                &r,
                "auth_queries_total",
                "Password lookups of roles not in [[users]] (auth_query)",
                &["result"],
            ),
            hba_role_lookups: counter_vec(
                &r,
                "hba_role_lookups_total",
                "Role-membership reads for hba_file lines with +role or samerole",
                &["result"],
            ),
            cancels: counter_vec(&r, "cancel_requests_total", "Cancel requests", &["result"]),
            tls_handshakes: counter_vec(
                &r,
                "tls_handshakes_total",
                "TLS handshakes with clients and servers",
                &["side", "result"],
            ),
            backend_up: gauge_vec(
                &r,
                "backend_up",
                "Backend health (1 up, 0 down)",
                &["backend"],
            ),
            backend_role: gauge_vec(
                &r,
                "backend_role",
                "Backend role (1 primary, 0 replica, -1 unknown, -2 fenced primary, -3 a server configured twice, -4 a diverged standby)",
                &["backend"],
            ),
            probe_errors: counter_vec(
                &r,
                "probe_errors_total",
                "Health probes that failed, by kind (failed, full, login_refused)",
                &["backend", "kind"],
            ),
            replica_lag_bytes: gauge_vec(
                &r,
                "replica_lag_bytes",
                "Replica replay lag in WAL bytes",
                &["backend"],
            ),
            replica_lag_ms: gauge_vec(
                &r,
                "replica_lag_milliseconds",
                "Replica replay lag in milliseconds",
                &["backend"],
            ),
            routed: routed.clone(),
            retries: counter_vec(
                &r,
                "retries_total",
                "Requests repeated on another server",
                &["reason"],
            ),
            registry: r,
        }
        .with_known_labels()
    }

    /// Every known label of the labelled counters at 0, so that a series exists (and a
    /// `rate()` over it is 0, not absent) before its first event, as `routed_total`'s do.
    fn with_known_labels(self) -> Metrics {
        let known: [(&IntCounterVec, &[&str]); 4] = [
            (
                &self.retries,
                &[
                    "server_lost",
                    "replica_unavailable",
                    "read_only_violation",
                    "serializable",
                    "recovery_conflict",
                ],
            ),
            (
                &self.clients_rejected,
                &[
                    "max_clients",
                    "no_tls",
                    "no_alpn",
                    "client_cert",
                    "not_admin",
                    "disabled",
                    "hba",
                ],
            ),
            (
                &self.cancels,
                &[
                    "forwarded",
                    "not_running",
                    "failed",
                    "between_servers",
                    "waiting",
                    "unknown",
                    "to_peers",
                ],
            ),
            (
                &self.pins,
                &[
                    crate::session::settings::COMPUTED_SETTING,
                    "unread_settings",
                ],
            ),
        ];
        for (vec, labels) in known {
            for l in labels {
                vec.with_label_values(&[l]);
            }
        }
        for p in crate::sql::PinReason::ALL {
            self.pins.with_label_values(&[p.as_str()]);
        }
        self
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// Counts a routing decision (a handful of atomic adds, no lock for known reasons).
    pub fn count_routed(&self, primary: bool, reason: &'static str) {
        match self.routed_known.iter().find(|(r, _, _)| *r == reason) {
            Some((_, p, r)) => {
                if primary {
                    p.inc()
                } else {
                    r.inc()
                }
            }
            None => self
                .routed
                .with_label_values(&[if primary { "primary" } else { "replica" }, reason])
                .inc(),
        }
    }

    /// Counts an error the proxy sent to a client.
    pub fn error(&self, sqlstate: &str) {
        self.errors.with_label_values(&[sqlstate]).inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// A logged-in client, counted in `switchyard_clients` for as long as this lives: a session
/// that ends in any way (a panic included) uncounts itself, so the count that admission
/// compares with `max_client_connections` cannot drift upwards.
pub struct CountedClient(IntGauge);

impl CountedClient {
    /// Counts one more client in `clients`.
    pub fn new(clients: &IntGauge) -> CountedClient {
        clients.inc();
        CountedClient(clients.clone())
    }

    /// Counts one more client unless that makes more than `max`. (Two clients racing for the
    /// last place may both be refused; never are more than `max` counted by this.)
    pub fn admit(clients: &IntGauge, max: usize) -> Option<CountedClient> {
        let c = CountedClient::new(clients);
        (clients.get() as usize <= max).then_some(c)
    }
}

impl Drop for CountedClient {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_limit() {
        let m = Metrics::new();
        let a = CountedClient::admit(&m.clients, 2).expect("first");
        let b = CountedClient::admit(&m.clients, 2).expect("second");
        assert!(CountedClient::admit(&m.clients, 2).is_none());
        assert_eq!(m.clients.get(), 2, "a refused client is not counted");
        drop(a);
        let c = CountedClient::admit(&m.clients, 2).expect("a place came free");
        drop((b, c));
        assert_eq!(m.clients.get(), 0);
    }

    #[test]
    fn renders_with_prefix() {
        let m = Metrics::new();
        m.clients.inc();
        m.error("53300");
        let text = m.render();
        assert!(text.contains("switchyard_client_connections 1"), "{text}");
        assert!(
            text.contains("switchyard_errors_total{sqlstate=\"53300\"} 1"),
            "{text}"
        );
        // Known labels exist before their first event.
        for series in [
            "switchyard_retries_total{reason=\"server_lost\"} 0",
            "switchyard_client_rejected_total{reason=\"hba\"} 0",
            "switchyard_cancel_requests_total{result=\"forwarded\"} 0",
            "switchyard_pinned_clients_total{reason=\"seed\"} 0",
            "switchyard_pinned_clients_total{reason=\"computed_setting\"} 0",
        ] {
            assert!(text.contains(series), "{series}\n{text}");
        }
    }
}
