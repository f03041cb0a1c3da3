//! Running PostgreSQL's client programs (psql, pgbench) and other commands from tests,
//! bounded in time, with their output kept for the failure message.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use switchyard::localpg::*;

/// What a finished (or killed) process left.
#[derive(Debug)]
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Ran {
    pub fn describe(&self, what: &str) -> String {
        format!(
            "{what}: exit {:?} after {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code,
            self.elapsed,
            tail(&self.stdout, 60),
            tail(&self.stderr, 60)
        )
    }
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs `cmd` with stdin closed, collecting its output; kills it after `limit`.
pub fn run(mut cmd: Command, limit: Duration) -> Ran {
    let t = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let ho = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let he = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let mut killed = false;
    let status = loop {
        if let Some(s) = child.try_wait().expect("waiting for a child") {
            break s;
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            killed = true;
            break child.wait().expect("waiting for a killed child");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = String::from_utf8_lossy(&ho.join().unwrap()).into_owned();
    let mut stderr = String::from_utf8_lossy(&he.join().unwrap()).into_owned();
    if killed {
        stderr.push_str(&format!("\n[killed after {limit:?}]"));
    }
    Ran {
        code: if killed { None } else { status.code() },
        stdout,
        stderr,
        elapsed: t.elapsed(),
    }
}

/// A PostgreSQL client program: the cluster's bindir first, then `$PATH`. Panics with a
/// clear message when missing.
pub fn pg_tool(name: &str) -> PathBuf {
    let found = match PgBinaries::find() {
        Ok(b) if name == "psql" => Some(b.psql()),
        Ok(b) => Some(b.bin(name)),
        Err(_) => None,
    };
    if let Some(p) = found.filter(|p| p.exists()) {
        return p;
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&paths) {
            let p = d.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "`{name}` not found (neither in the PostgreSQL bindir nor in $PATH): \
         install the PostgreSQL client tools (scripts/deps.sh does)"
    );
}

/// A client command against 127.0.0.1:`port` as the app user (password via PGPASSWORD).
pub fn pg_command(tool: &str, port: u16) -> Command {
    let mut c = Command::new(pg_tool(tool));
    c.env("PGPASSWORD", APP_PASSWORD)
        .env("PGCONNECT_TIMEOUT", "10")
        .env("PGAPPNAME", "switchyard-clients-test")
        .env_remove("PGSERVICE")
        .env_remove("PGOPTIONS")
        .env("PGTZ", "UTC")
        .env("PGDATESTYLE", "ISO, MDY")
        .env("LC_ALL", "C")
        .env("HOME", std::env::temp_dir())
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", APP_USER]);
    c
}

/// The project's Python venv interpreter with psycopg and asyncpg. Panics with a clear
/// message when missing.
pub fn venv_python() -> PathBuf {
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        py.exists(),
        "{} is missing: run scripts/deps.sh to create the venv with psycopg and asyncpg",
        py.display()
    );
    let r = run(
        {
            let mut c = Command::new(&py);
            c.args(["-c", "import psycopg, asyncpg"]);
            c
        },
        Duration::from_secs(60),
    );
    assert_eq!(
        r.code,
        Some(0),
        "{}",
        r.describe("the venv lacks psycopg or asyncpg: run scripts/deps.sh")
    );
    py
}

/// A program under tests/py.
pub fn py_script(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/py")
        .join(name);
    assert!(p.exists(), "{} missing", p.display());
    p
}
