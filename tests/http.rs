//! The HTTP listener's limits: a connection that sends nothing is closed, and connections
//! past the cap are closed unread while the others are served. (What the endpoints answer is
//! tested where each feature is.)

mod support;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::proxy::ProxyOptions;
use support::ready::start_ready_proxy;

/// The listener's cap (src/admin/http.rs).
const MAX_CONNECTIONS: usize = 128;

async fn open(port: u16) -> TcpStream {
    tokio::time::timeout(
        Duration::from_secs(10),
        TcpStream::connect(("127.0.0.1", port)),
    )
    .await
    .expect("connect timed out")
    .expect("connect")
}

/// Reads until EOF; `None` if the connection stays open `within`.
async fn eof_within(s: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let mut buf = [0u8; 4096];
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_nothing_is_closed() {
    let proxy = tokio::task::spawn_blocking(|| start_ready_proxy(ProxyOptions::default()))
        .await
        .unwrap();
    let mut s = open(proxy.http_port()).await;
    // Half a request line, then nothing: a slow client holding a descriptor.
    s.write_all(b"GET /metr").await.unwrap();
    let got = eof_within(&mut s, Duration::from_secs(60)).await;
    assert!(
        got.is_some(),
        "an HTTP connection that never finished its request was still open after 60 s"
    );
    let (code, _) = proxy.http_get("/livez").await;
    assert_eq!(code, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_closed_unread() {
    let proxy = tokio::task::spawn_blocking(|| start_ready_proxy(ProxyOptions::default()))
        .await
        .unwrap();
    let port = proxy.http_port();
    let mut held = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        held.push(open(port).await);
    }
    // One more is accepted by the kernel and closed by the proxy at once (long before the
    // header timeout would close the others).
    let mut extra = open(port).await;
    let got = eof_within(&mut extra, Duration::from_secs(5))
        .await
        .expect("a connection past the cap was kept open");
    assert!(
        got.is_empty(),
        "it was closed unread, not answered: {got:?}"
    );
    // The ones within the cap are served.
    let last = held.last_mut().unwrap();
    last.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = eof_within(last, Duration::from_secs(20))
        .await
        .expect("a connection within the cap was not answered");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    // Once they are gone, new ones are served again.
    drop(held);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok((200, _)) = support::proxy::http_get(port, "/livez").await {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the listener did not recover after the connections closed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
