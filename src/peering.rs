//! Cancel requests shared between switchyard processes (`[peering]`, PgBouncer's `peers`).
//!
//! A client cancels its query by opening a new connection, which a load balancer, or the
//! kernel under `so_reuseport`, may hand to another process than the one serving the client.
//! That process does not know the key, so it sends the request on to every peer's
//! `peering.listen` port, where each places it as if it had arrived on its own `listen`. What
//! arrives on that port is never sent on again: a request crosses one hop at most, however
//! the peers list each other, and no bits of the cancel key are spent on routing (its pid
//! and secret stay as random as PostgreSQL's own).

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::app::App;
use crate::protocol::{encode, startup};
use crate::session::cancel::{send_cancel, CancelOutcome};

/// How long a peer's connection may take to deliver its one request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends a cancel request this process did not issue to every peer, at once, and returns
/// when each has placed it or failed (its connection waits meanwhile, as a client's cancel
/// waits until PostgreSQL has signalled the backend). Returns how many peers took it.
pub async fn forward(app: &App, pid: i32, secret: i32) -> usize {
    let config = app.config.load_full();
    let Some(p) = &config.config.peering else {
        return 0;
    };
    let own = config.peer_listen;
    let mut sends = tokio::task::JoinSet::new();
    for peer in &p.peers {
        let address = peer.get_ref().clone();
        if own.is_some() && address.parse().ok() == own {
            continue;
        }
        sends.spawn(async move {
            let r = send_cancel(&address, pid, secret).await;
            (address, r)
        });
    }
    let mut took = 0;
    while let Some(done) = sends.join_next().await {
        match done {
            Ok((_, Ok(()))) => took += 1,
            Ok((peer, Err(e))) => {
                tracing::warn!(%peer, error = %e, "forwarding a cancel request to a peer failed")
            }
            Err(e) => tracing::warn!(error = %e, "cancel forwarding task failed"),
        }
    }
    took
}

/// Serves the peers' cancel requests on `listener` until the proxy stops.
pub async fn serve(app: Arc<App>, listener: TcpListener) {
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "peering accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = app.kill.cancelled() => return,
        };
        tokio::spawn(place(app.clone(), stream));
    }
}

/// Reads one CancelRequest from a peer and places it here. Anything else gets a FATAL that
/// says what this port is (a client pointed at it by mistake learns why it cannot log in).
async fn place(app: Arc<App>, mut stream: TcpStream) {
    // The whole first packet, whatever it is (bounded as a client's is), so that the answer
    // is not lost to a reset over unread bytes.
    let read = tokio::time::timeout(READ_TIMEOUT, async {
        let mut head = [0u8; 4];
        stream.read_exact(&mut head).await?;
        let Ok(len) = startup::declared_len(head) else {
            return Ok(None);
        };
        let mut packet = vec![0u8; len];
        packet[..4].copy_from_slice(&head);
        stream.read_exact(&mut packet[4..]).await?;
        Ok::<_, std::io::Error>(Some(packet))
    })
    .await;
    let parsed = match read {
        Ok(Ok(packet)) => packet.and_then(|p| startup::parse(&p).ok()),
        _ => return,
    };
    let Some(startup::Initial::Cancel { pid, secret }) = parsed else {
        let mut out = BytesMut::new();
        encode::error(
            &mut out,
            "FATAL",
            "08P01",
            "this is a switchyard peering port: it takes only cancel requests from other switchyard processes",
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&out)).await;
        return;
    };
    let outcome = app.cancels.cancel(pid, secret).await;
    app.metrics
        .cancels
        .with_label_values(&[match outcome {
            CancelOutcome::Unknown => "peer_unknown",
            _ => outcome.label(),
        }])
        .inc();
}
