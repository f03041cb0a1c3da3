//! Starting a proxy and waiting until its monitor sees every backend up (the first health
//! probe can be slow on a loaded machine).
#![allow(dead_code)]

use super::proxy::Proxy;
use super::{shared_cluster, wait_until, LocalCluster};

/// GET /status on the proxy's HTTP port (blocking, 5 s timeout).
pub fn proxy_status(proxy: &Proxy) -> Option<serde_json::Value> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(
        &format!("127.0.0.1:{}", proxy.http_port()).parse().unwrap(),
        std::time::Duration::from_secs(5),
    )
    .ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    s.write_all(
        "GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
            .to_string()
            .as_bytes(),
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let (code, body) = super::proxy::parse_http_response(&buf).ok()?;
    if code != 200 {
        return None;
    }
    serde_json::from_str(&body).ok()
}

/// Starts a proxy in front of the shared cluster with `extra` TOML appended, and waits (up
/// to 60 s) until it knows the primary and sees every backend up, so that a slow first
/// health probe on a loaded machine does not fail the first write.
pub fn start_ready_proxy(opts: super::proxy::ProxyOptions) -> Proxy {
    start_ready_proxy_on(shared_cluster(), opts)
}

/// [`start_ready_proxy`] in front of any cluster.
pub fn start_ready_proxy_on(cluster: &LocalCluster, opts: super::proxy::ProxyOptions) -> Proxy {
    let proxy = Proxy::start_with(cluster, opts);
    let ok = wait_until(std::time::Duration::from_secs(60), || {
        !proxy.is_running()
            || proxy_status(&proxy).is_some_and(|v| {
                let b = v["backends"].as_array().cloned().unwrap_or_default();
                !b.is_empty()
                    && b.iter().all(|b| b["up"] == true)
                    && b.iter().any(|b| b["primary"] == true)
            })
    });
    assert!(
        proxy.is_running(),
        "the proxy exited right after starting:\n{}",
        proxy.log_tail(40)
    );
    assert!(
        ok,
        "the proxy did not see the primary and all replicas up within 60 s: {:?}\n{}",
        proxy_status(&proxy),
        proxy.log_tail(40)
    );
    proxy
}
