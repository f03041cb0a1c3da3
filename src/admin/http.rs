//! The HTTP endpoints: `/metrics` (Prometheus text), `/livez`, `/readyz`, `/status` (JSON:
//! backends, roles, lag, pools).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::app::App;

/// The most HTTP connections served at once; past it, new ones are closed unread. Scrapers and
/// probes need a handful: the cap keeps a flood of idle connections from taking the file
/// descriptors the client listener and the pools need.
const MAX_CONNECTIONS: usize = 128;

/// How long a connection may take to send a request's headers, including the wait for the
/// next request on a kept-alive connection.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest one connection is served, whatever it does (a reader too slow to take a
/// response, a body that never ends).
const CONNECTION_LIMIT: Duration = Duration::from_secs(60);

/// Serves HTTP on `listener` until shutdown.
pub async fn serve(app: Arc<App>, listener: TcpListener) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "http accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = app.kill.cancelled() => return,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!("http: {MAX_CONNECTIONS} connections open, one more closed");
            continue;
        };
        let app = app.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(route(&app, req)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            let _ = tokio::time::timeout(CONNECTION_LIMIT, conn).await;
            drop(slot);
        });
    }
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("response")
}

fn route(app: &App, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/metrics" => {
            // (Read at the scrape: the pools keep the state, not a gauge.)
            let full = app.pools.stats().iter().filter(|p| p.server_full).count();
            app.metrics.pools_server_full.set(full as i64);
            reply(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                app.metrics.render(),
            )
        }
        "/livez" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => {
            let view = app.cluster.view();
            if app.shutting_down() {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "shutting down\n".into(),
                )
            } else if view.primary.is_some() {
                reply(StatusCode::OK, "text/plain", "ready\n".into())
            } else if view
                .backends
                .iter()
                .any(|b| b.is_eligible_replica(app.config.load().config.routing.max_replica_lag))
            {
                reply(
                    StatusCode::OK,
                    "text/plain",
                    "ready (no primary: reads only)\n".into(),
                )
            } else {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "no backend available\n".into(),
                )
            }
        }
        "/status" => reply(StatusCode::OK, "application/json", status_json(app)),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

/// The cluster and pools as JSON.
pub fn status_json(app: &App) -> String {
    let view = app.cluster.view();
    let backends: Vec<_> = view
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let role = b.role_label();
            let (lag_bytes, lag) = b.shown_lag();
            serde_json::json!({
                "name": &*b.name,
                "address": b.address,
                "up": b.up,
                "role": role,
                "primary": view.primary == Some(i),
                "timeline": b.timeline,
                "lsn": b.lsn.map(crate::cluster::lag::format_lsn),
                "lag_bytes": lag_bytes,
                "lag_ms": lag.map(|d| d.as_millis() as u64),
                "replay_paused": b.replay_paused,
                "receiver_streaming": b.shown_streaming(),
                "last_replay_ms": b.last_replay_ms,
                "outstanding": b.stats.outstanding.load(std::sync::atomic::Ordering::Relaxed),
                "probe_error": b.probe_error.as_deref(),
            })
        })
        .collect();
    let pools: Vec<_> = app
        .pools
        .stats()
        .into_iter()
        .map(|p| {
            serde_json::json!({
                "backend": &*p.key.backend,
                "user": p.key.user,
                "database": p.key.database,
                "size": p.size,
                "idle": p.idle.len(),
                "in_use": p.in_use,
                "opening": p.opening,
                "waiting": p.waiting,
                "server_full": p.server_full,
            })
        })
        .collect();
    serde_json::json!({
        "clients": app.metrics.clients.get(),
        "draining": app.shutting_down(),
        "paused": app.pause.paused().all,
        "paused_databases": app.pause.paused().databases,
        "disabled_databases": app.disabled.list(),
        "backends": backends,
        "pools": pools,
        "prepared_statements": app.statements.len(),
    })
    .to_string()
}
