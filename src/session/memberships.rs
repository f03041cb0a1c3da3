//! Role membership for `hba_file`'s `+role` users and `samerole` databases: the roles a user
//! is a member of, read from a server's catalog at each login whose walk through the file
//! reaches a line that membership decides (a `GRANT` or `REVOKE` counts from the next login, as
//! in PostgreSQL).
//!
//! The query runs as the monitor's user (`[health]`), in its database, on one connection kept
//! for the purpose, to the primary (to another healthy server while there is none: a standby
//! has the same roles). The role name is a bound parameter, never part of the SQL text.

use tokio::sync::Mutex;

use super::Fatal;
use crate::app::App;
use crate::cluster::probe::{ProbeTarget, Prober};
use crate::config::Loaded;

/// The roles `$1` is a member of, directly or through other roles, itself included, as
/// PostgreSQL's `pg_hba.conf` matching counts them: membership only (a superuser is not
/// a member of every role here, and `NOINHERIT` does not matter). `UNION` ends cycles.
const MEMBERSHIP_SQL: &str = "WITH RECURSIVE m(oid) AS ( \
       SELECT oid FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) $1 \
       UNION SELECT a.roleid FROM pg_catalog.pg_auth_members a JOIN m \
         ON a.member OPERATOR(pg_catalog.=) m.oid) \
     SELECT r.rolname::text FROM pg_catalog.pg_roles r JOIN m \
       ON r.oid OPERATOR(pg_catalog.=) m.oid";

/// The connection the lookups share (opened at the first one).
#[derive(Default)]
pub struct Memberships {
    conn: Mutex<Option<Prober>>,
}

impl Memberships {
    /// The roles `role` is a member of, itself included (none when there is no such role).
    /// FATAL 57P03 when no server is up, 28000 when the lookup fails (the reason is logged).
    pub async fn of(&self, app: &App, config: &Loaded, role: &str) -> Result<Vec<String>, Fatal> {
        let result = self.read(app, config, role).await;
        let outcome = if result.is_ok() { "found" } else { "error" };
        app.metrics
            .hba_role_lookups
            .with_label_values(&[outcome])
            .inc();
        result
    }

    async fn read(&self, app: &App, config: &Loaded, role: &str) -> Result<Vec<String>, Fatal> {
        let target = target(app, config).await?;
        let mut conn = self.conn.lock().await;
        // Another server, or other credentials after a reload: another connection.
        if conn.as_ref().is_none_or(|p| !same(p.target(), &target)) {
            *conn = Some(Prober::new(target));
        }
        let prober = conn.as_mut().expect("set above");
        let rows = prober
            .query(MEMBERSHIP_SQL, &[&role])
            .await
            .map_err(|why| {
                tracing::warn!(role, reason = %why, "reading role membership for hba_file failed");
                Fatal::new(
                    "28000",
                    format!("could not read the role membership of \"{role}\""),
                )
            })?;
        Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
    }
}

/// Whether two targets are the same server, user and settings.
fn same(a: &ProbeTarget, b: &ProbeTarget) -> bool {
    a.address == b.address
        && a.user == b.user
        && a.password == b.password
        && a.database == b.database
        && a.timeout == b.timeout
        && std::sync::Arc::ptr_eq(&a.tls, &b.tls)
}

/// The server whose catalog is read ([`super::lookup::catalog_backend`]), logged in to as the
/// monitor is.
async fn target(app: &App, config: &Loaded) -> Result<ProbeTarget, Fatal> {
    let index = super::lookup::catalog_backend(app, config).await?;
    let view = app.cluster.view();
    let backend = view
        .backends
        .get(index)
        .ok_or_else(super::lookup::unavailable)?;
    let (user, password) = config.monitor_credentials();
    Ok(ProbeTarget {
        address: backend.address.clone(),
        user,
        password,
        database: config.config.health.database.clone(),
        timeout: config.config.health.timeout,
        tls: config.server_tls.clone(),
    })
}
