//! Role membership for `hba_file`'s `+role` users and `samerole` databases: the roles a user
//! is a member of, read from a server's catalog at each login whose walk through the file
//! reaches a line that membership decides (a `GRANT` or `REVOKE` counts from the next login, as
//! in PostgreSQL).
//!
//! The query runs as the monitor's user (`[health]`), in its database, on the primary (on
//! another healthy server while there is none: a standby has the same roles), over one
//! connection that concurrent logins share (tokio-postgres pipelines their queries), with the
//! statement prepared once per connection. Each lookup has the monitor's probe timeout; one
//! that fails or times out closes the connection, and the next lookup opens another. The role
//! name is a bound parameter, never part of the SQL text.

use std::sync::Arc;

use tokio::time::Instant;

use super::Fatal;
use crate::app::App;
use crate::cluster::probe::{self, Connected, ProbeTarget};
use crate::config::Loaded;

/// The roles `$1` is a member of, directly or through other roles, itself included, as
/// PostgreSQL's `pg_hba.conf` matching counts them: membership only (a superuser is not
/// a member of every role here, and `NOINHERIT` does not matter). `UNION` ends cycles.
const MEMBERSHIP_SQL: &str = "WITH RECURSIVE m(oid) AS ( \
       SELECT oid FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) $1 \
       UNION SELECT a.roleid FROM pg_catalog.pg_auth_members a JOIN m \
         ON a.member OPERATOR(pg_catalog.=) m.oid) \
     SELECT r.rolname::pg_catalog.text FROM pg_catalog.pg_roles r JOIN m \
       ON r.oid OPERATOR(pg_catalog.=) m.oid";

/// The lookups' connection, shared by concurrent logins.
#[derive(Default)]
pub struct Memberships {
    shared: std::sync::Mutex<Option<Arc<Shared>>>,
    /// Held while a connection is opened, so that logins arriving meanwhile wait for that one
    /// instead of opening their own.
    opening: tokio::sync::Mutex<()>,
}

struct Shared {
    target: ProbeTarget,
    conn: Connected,
    lookup: tokio_postgres::Statement,
}

impl Memberships {
    /// The roles `role` is a member of, itself included (none when there is no such role).
    /// FATAL 57P03 when no server is up or the lookup fails (the reason is logged).
    pub async fn of(&self, app: &App, config: &Loaded, role: &str) -> Result<Vec<String>, Fatal> {
        let target = target(app, config).await?;
        let result = self.read(target, role).await;
        let outcome = if result.is_ok() { "found" } else { "error" };
        app.metrics
            .hba_role_lookups
            .with_label_values(&[outcome])
            .inc();
        result.map_err(|why| {
            tracing::warn!(role, reason = %why, "reading role membership for hba_file failed");
            Fatal::new(
                "57P03",
                format!("could not read the role membership of \"{role}\""),
            )
        })
    }

    async fn read(&self, target: ProbeTarget, role: &str) -> Result<Vec<String>, String> {
        let timeout = target.timeout;
        let deadline = Instant::now() + timeout;
        let shared = tokio::time::timeout_at(deadline, self.connection(target))
            .await
            .map_err(|_| format!("no connection within {timeout:?}"))??;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&role];
        let query = shared.conn.client().query(&shared.lookup, &params);
        match tokio::time::timeout_at(deadline, query).await {
            Ok(Ok(rows)) => rows
                .iter()
                .map(|r| r.try_get::<_, String>(0).map_err(|e| e.to_string()))
                .collect(),
            Ok(Err(e)) => {
                self.forget(&shared);
                Err(probe::with_causes(&e))
            }
            Err(_) => {
                self.forget(&shared);
                Err(format!("no answer within {timeout:?}"))
            }
        }
    }

    /// The shared connection to `target`, opened (and the lookup prepared) when there is none
    /// or it is to another server, as another user, or closed.
    async fn connection(&self, target: ProbeTarget) -> Result<Arc<Shared>, String> {
        if let Some(s) = self.current(&target) {
            return Ok(s);
        }
        let _opening = self.opening.lock().await;
        if let Some(s) = self.current(&target) {
            return Ok(s);
        }
        let conn = probe::connect(&target).await?;
        let lookup = conn
            .client()
            .prepare(MEMBERSHIP_SQL)
            .await
            .map_err(|e| probe::with_causes(&e))?;
        let s = Arc::new(Shared {
            target,
            conn,
            lookup,
        });
        *self.shared.lock().expect("not poisoned") = Some(s.clone());
        Ok(s)
    }

    fn current(&self, target: &ProbeTarget) -> Option<Arc<Shared>> {
        let shared = self.shared.lock().expect("not poisoned");
        shared
            .as_ref()
            .filter(|s| same(&s.target, target) && !s.conn.client().is_closed())
            .cloned()
    }

    /// Drops the shared connection (it closes when the last lookup on it ends): the next
    /// lookup opens another, with the settings then configured (`[server_tls]` changed).
    pub fn close(&self) {
        self.shared.lock().expect("not poisoned").take();
    }

    /// Drops `s` as the shared connection (it closes when the last lookup on it ends).
    fn forget(&self, s: &Arc<Shared>) {
        let mut shared = self.shared.lock().expect("not poisoned");
        if shared.as_ref().is_some_and(|c| Arc::ptr_eq(c, s)) {
            *shared = None;
        }
    }
}

/// Whether two targets are the same server, user and settings.
fn same(a: &ProbeTarget, b: &ProbeTarget) -> bool {
    a.address == b.address
        && a.user == b.user
        && a.password == b.password
        && a.database == b.database
        && a.timeout == b.timeout
        && Arc::ptr_eq(&a.tls, &b.tls)
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
