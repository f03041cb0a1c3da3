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
    let failed = |why: String| {
        tracing::warn!(role, reason = %why, "auth_query failed");
        Fatal::new(
            "28000",
            format!("could not look up the password of role \"{role}\""),
        )
    };
    let auth_user = config
        .users
        .get(query.user.get_ref())
        .ok_or_else(|| failed("auth_query.user is not configured".into()))?;
    let index = catalog_backend(app, config).await?;
    let view = app.cluster.view();
    let backend = view.backends.get(index).ok_or_else(unavailable)?;
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
        .ok_or_else(unavailable)?;
    drop(view);
    let mut p = pool
        .checkout(0)
        .await
        .map_err(|e| failed(format!("connecting as the auth_query user: {e}")))?;
    let timeout = config.config.pool.connect_timeout;
    // A client logged in as the auth user may have left its settings on this connection (a
    // statement_timeout, a search_path): the lookup runs with the defaults.
    if let Some(sql) = Settings::default().sync_sql(&p.conn.applied, true) {
        match p.conn.simple_query(&sql, timeout).await {
            Ok(Ok(_)) => p.conn.applied = Arc::default(),
            Ok(Err(e)) => {
                p.release();
                return Err(failed(format!(
                    "resetting settings: {} {}",
                    e.code, e.message
                )));
            }
            Err(e) => {
                p.discard("auth_query_failed", &app.metrics);
                return Err(failed(e.to_string()));
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
            return Err(failed(format!("{} {}", e.code, e.message)));
        }
        Err(e) => {
            p.discard("auth_query_failed", &app.metrics);
            return Err(failed(e.to_string()));
        }
    };
    password_of(&rows).map_err(failed)
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
