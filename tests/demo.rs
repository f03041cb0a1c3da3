//! `switchyard demo`, the README's first command, as a user runs it: the commands it prints
//! work as printed (the application's, over TCP and over the unix socket, and the admin
//! console's), its metrics URL answers, the superuser's password is not the well-known one,
//! and SIGTERM removes everything it made.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::proxy::{free_port_pair, http_get};
use support::tools::{pg_tool, run};

/// The demo process; SIGKILLed on drop if still running (its cluster's own watchdog then
/// stops the servers and removes their directory).
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// What the demo printed, line by line, until `Press Ctrl-C`.
fn wait_banner(lines: &mpsc::Receiver<String>, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(l) => {
                let done = l.starts_with("Press Ctrl-C");
                seen.push(l);
                if done {
                    return seen;
                }
            }
            Err(e) => panic!("the demo printed no banner ({e}); it printed:\n{seen:#?}"),
        }
    }
}

/// The text between the first pair of double quotes on the line starting with `label`.
fn quoted(banner: &[String], label: &str) -> String {
    let line = banner
        .iter()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no {label:?} line in {banner:#?}"));
    line.split('"')
        .nth(1)
        .unwrap_or_else(|| panic!("no quoted text in {line:?}"))
        .to_string()
}

fn psql(conninfo: &str, sql: &str) -> support::tools::Ran {
    let mut c = Command::new(pg_tool("psql"));
    c.env("PGCONNECT_TIMEOUT", "10")
        .env_remove("PGPASSWORD")
        .env_remove("PGSERVICE")
        .env("HOME", std::env::temp_dir())
        .args([
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            conninfo,
            "-c",
            sql,
        ]);
    run(c, Duration::from_secs(60))
}

#[test]
fn the_demo_runs_as_printed_and_removes_everything_on_sigterm() {
    support::init_tracing();
    let (port, http_port) = free_port_pair();
    let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["demo", "--replicas", "1", "--port"])
        .arg(port.to_string())
        .arg("--http-port")
        .arg(http_port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting switchyard demo");
    let mut demo = Demo(child);
    let out = demo.0.stdout.take().expect("stdout");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let banner = wait_banner(&lines, Duration::from_secs(240));

    // The application's command, over TCP and over the unix socket: a write and its read.
    let app = quoted(&banner, "Connect:");
    let r = psql(
        &app,
        "CREATE TABLE demo_t (i int); INSERT INTO demo_t VALUES (42)",
    );
    assert_eq!(
        r.code,
        Some(0),
        "{}",
        r.describe("the printed psql command")
    );
    let local = quoted(&banner, "Local:");
    let r = psql(&local, "SELECT i FROM demo_t");
    assert_eq!(
        r.code,
        Some(0),
        "{}",
        r.describe("the printed unix-socket command")
    );
    assert_eq!(r.stdout.trim(), "42");

    // The admin console's command lists both servers.
    let admin = quoted(&banner, "Admin:");
    let r = psql(&admin, "SHOW BACKENDS");
    assert_eq!(
        r.code,
        Some(0),
        "{}",
        r.describe("the printed admin command")
    );
    assert!(
        r.stdout.contains("pg0") && r.stdout.contains("pg1"),
        "SHOW BACKENDS: {}",
        r.stdout
    );
    // The superuser's well-known test password works neither through the proxy nor directly.
    let node = banner
        .iter()
        .find_map(|l| l.trim().strip_prefix("pg0 at "))
        .unwrap_or_else(|| panic!("no pg0 line in {banner:#?}"))
        .to_string();
    let pg_port = node
        .split_whitespace()
        .next()
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("no port in {node:?}"));
    for p in [port, pg_port] {
        let r = psql(
            &format!("host=127.0.0.1 port={p} user=postgres password=postgres dbname=postgres"),
            "SELECT 1",
        );
        assert_ne!(
            r.code,
            Some(0),
            "the superuser logged in with password `postgres` on port {p}"
        );
        assert!(
            r.stderr.contains("password authentication failed"),
            "{}",
            r.describe("superuser with the test password")
        );
    }
    // The configuration holds that password: only its owner may read it.
    let config = banner
        .iter()
        .find_map(|l| l.strip_prefix("Config:"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no Config line in {banner:#?}"))
        .to_string();
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(&config)
            .expect("the printed config file")
            .permissions()
            .mode()
    };
    assert_eq!(mode & 0o077, 0, "{config} is mode {mode:o}");

    // The metrics URL answers.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (status, body) = rt
        .block_on(http_get(http_port, "/metrics"))
        .expect("GET /metrics");
    assert_eq!(status, 200);
    assert!(body.contains("switchyard_client_connections"), "{body}");

    // SIGTERM: the demo exits cleanly and leaves nothing behind.
    let dir = std::path::Path::new(&config)
        .parent()
        .expect("config dir")
        .to_path_buf();
    assert!(dir.exists());
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe {
        libc::kill(demo.0.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(s) = demo.0.try_wait().expect("waiting for the demo") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the demo did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "the demo exited with {status}");
    assert!(!dir.exists(), "{} is left behind", dir.display());
    for p in [port, pg_port] {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", p)).is_err(),
            "something still listens on port {p}"
        );
    }
}
