//! `[auth_query]`: the password the servers have for a role that is not in `[[users]]`.
//!
//! The lookup runs at every such login (a changed password counts at once), as the configured
//! `auth_query.user`, in `auth_query.database`, on the primary (on another healthy server while
//! there is none: a standby has the same roles). The role name is a bound parameter, never
//! part of the SQL text.

use std::sync::Arc;

use super::settings::Settings;
use super::Fatal;
use crate::app::App;
use crate::auth::StoredPassword;
use crate::config::{AuthQueryConfig, Loaded};
use crate::pool::PoolSpec;

/// The stored password of `role`, or `None` when it may not log in with one (no such role,
/// no password, expired, NOLOGIN: whatever the query says).
pub async fn password(
    app: &App,
    config: &Loaded,
    query: &AuthQueryConfig,
    role: &str,
) -> Result<Option<StoredPassword>, Fatal> {
    let result = run(app, config, query, role).await;
    let outcome = match &result {
        Ok(Some(_)) => "found",
        Ok(None) => "unknown",
        Err(_) => "error",
    };
    app.metrics.auth_queries.with_label_values(&[outcome]).inc();
    result
}

async fn run(
    app: &App,
    config: &Loaded,
    query: &AuthQueryConfig,
    role: &str,
) -> Result<Option<StoredPassword>, Fatal> {
    let auth_user = config
        .users
        .get(query.user.get_ref())
        .ok_or_else(|| Failure::Refused("auth_query.user is not configured".into()).fatal(role))?;
    let first = catalog_backend(app, config).await?;
    let failure = match run_on(app, config, query, auth_user, first, role).await {
        Ok(found) => return Ok(found),
        Err(failure) => failure,
    };
    // The server died or hangs, and the monitor has not seen it down yet: once more on another
    // server that is up (a standby has the same roles), as a login itself would go there.
    let failure = match (failure, other_backend(app, first)) {
        (Failure::Lost(why), Some(other)) => {
            tracing::info!(role, reason = %why, "auth_query lookup lost its server: trying another");
            match run_on(app, config, query, auth_user, other, role).await {
                Ok(found) => return Ok(found),
                Err(failure) => failure,
            }
        }
        (failure, _) => failure,
    };
    Err(failure.fatal(role))
}

/// Why a lookup failed.
enum Failure {
    /// The lookup says nothing of the role because its server connection failed, was lost or
    /// timed out, or none came (the server died or hangs, the pool is exhausted): the login
    /// may succeed in a moment, and is told so (57P03, as when no server is up).
    Lost(String),
    /// The lookup itself failed: the server refused `user`, the query failed, or its rows are
    /// not a lookup's. The login is refused (28000).
    Refused(String),
}

impl Failure {
    /// A server's error on the lookup connection: one that ends the connection (the server
    /// shuts down, is in recovery, the connection failed) is [`Failure::Lost`].
    fn of_server(code: &str, why: String) -> Failure {
        if code.starts_with("57P") || code.starts_with("08") {
            Failure::Lost(why)
        } else {
            Failure::Refused(why)
        }
    }

    /// The login's FATAL (the reason is logged).
    fn fatal(self, role: &str) -> Fatal {
        let (code, why) = match self {
            Failure::Lost(why) => ("57P03", why),
            Failure::Refused(why) => ("28000", why),
        };
        tracing::warn!(role, reason = %why, "auth_query failed");
        Fatal::new(
            code,
            format!("could not look up the password of role \"{role}\""),
        )
    }
}

/// Runs the lookup on backend `index`.
async fn run_on(
    app: &App,
    config: &Loaded,
    query: &AuthQueryConfig,
    auth_user: &crate::config::User,
    index: usize,
    role: &str,
) -> Result<Option<StoredPassword>, Failure> {
    let gone = || Failure::Lost("the server is no longer configured".into());
    let view = app.cluster.view();
    let backend = view.backends.get(index).ok_or_else(gone)?;
    let pool = app
        .pools
        .get(PoolSpec {
            backend_index: index,
            backend_name: &backend.name,
            address: &backend.address,
            user: auth_user,
            database: &query.database,
            config,
        })
        // (A reload just removed or moved it.)
        .ok_or_else(gone)?;
    drop(view);
    let mut p = pool.checkout(0).await.map_err(|e| {
        let why = format!("connecting as the auth_query user: {e}");
        if e.is_refusal() {
            Failure::Refused(why)
        } else {
            Failure::Lost(why)
        }
    })?;
    let timeout = config.config.pool.connect_timeout;
    // A client logged in as the auth user may have left its settings on this connection (a
    // statement_timeout, a search_path): the lookup runs with the defaults.
    if let Some(sql) = Settings::default().sync_sql(&p.conn.applied, true) {
        match p.conn.simple_query(&sql, timeout).await {
            Ok(Ok(_)) => p.conn.applied = Arc::default(),
            Ok(Err(e)) => {
                p.release();
                let why = format!("resetting settings: {} {}", e.code, e.message);
                return Err(Failure::of_server(&e.code, why));
            }
            Err(e) => {
                p.discard("auth_query_failed", &app.metrics);
                return Err(Failure::Lost(e.to_string()));
            }
        }
    }
    let rows = match p.conn.query_params(&query.query, &[role], timeout).await {
        Ok(Ok(rows)) => {
            p.release();
            rows
        }
        Ok(Err(e)) => {
            p.release();
            let why = format!("{} {}", e.code, e.message);
            return Err(Failure::of_server(&e.code, why));
        }
        Err(e) => {
            p.discard("auth_query_failed", &app.metrics);
            return Err(Failure::Lost(e.to_string()));
        }
    };
    password_of(&rows).map_err(Failure::Refused)
}

/// A server other than `failed` that is up and not fenced (the primary first).
fn other_backend(app: &App, failed: usize) -> Option<usize> {
    let view = app.cluster.view();
    view.primary.filter(|&i| i != failed).or_else(|| {
        view.backends
            .iter()
            .enumerate()
            .find(|(i, b)| *i != failed && b.up && !b.fenced)
            .map(|(i, _)| i)
    })
}

pub(super) fn unavailable() -> Fatal {
    Fatal::new("57P03", "no database server is available")
}

/// The backend whose catalog a login reads (roles, passwords): the primary, or another
/// healthy server while there is none (a standby has the same roles), waiting for a primary
/// up to `routing.primary_wait` when no server is up. FATAL 57P03 when none comes.
pub(super) async fn catalog_backend(app: &App, config: &Loaded) -> Result<usize, Fatal> {
    let view = app.cluster.view();
    let found = view
        .primary
        .or_else(|| view.backends.iter().position(|b| b.up && !b.fenced));
    drop(view);
    match found {
        Some(i) => Ok(i),
        None => app
            .cluster
            .wait_primary(config.config.routing.primary_wait)
            .await
            .ok_or_else(unavailable),
    }
}

/// The password in the lookup's rows: none, or one row whose last column is the password
/// (NULL or empty: the role may not log in with one).
fn password_of(rows: &[Vec<Option<String>>]) -> Result<Option<StoredPassword>, String> {
    match rows {
        [] => Ok(None),
        [row] => Ok(row
            .last()
            .cloned()
            .flatten()
            .filter(|p| !p.is_empty())
            .map(|p| StoredPassword::parse(&p))),
        _ => Err(format!(
            "the query returned {} rows; it must return at most one",
            rows.len()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cols: &[Option<&str>]) -> Vec<Option<String>> {
        cols.iter().map(|c| c.map(str::to_owned)).collect()
    }

    #[test]
    fn the_last_column_of_the_only_row_is_the_password() {
        assert_eq!(password_of(&[]), Ok(None));
        let md5 = "md5".to_owned() + &"ab".repeat(16);
        assert_eq!(
            password_of(&[row(&[Some("alice"), Some(&md5)])]),
            Ok(Some(StoredPassword::Md5("ab".repeat(16))))
        );
        assert_eq!(
            password_of(&[row(&[Some("clear")])]),
            Ok(Some(StoredPassword::Plain("clear".into())))
        );
        assert_eq!(password_of(&[row(&[Some("alice"), None])]), Ok(None));
        assert_eq!(password_of(&[row(&[Some("alice"), Some("")])]), Ok(None));
        assert_eq!(password_of(&[row(&[])]), Ok(None));
        assert!(password_of(&[row(&[Some("a")]), row(&[Some("b")])])
            .unwrap_err()
            .contains("2 rows"));
    }
}
