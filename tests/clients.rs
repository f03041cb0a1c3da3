//! Real clients through the proxy (issue "Foundation", points 7 and 10): psql, pgbench,
//! psycopg 3, asyncpg, pgjdbc, node-postgres and postgres.js, against the shared cluster.
//!
//! Each client also runs directly against the primary first, as a control: a script that
//! fails there is broken itself, and psql's output through the proxy must equal its output
//! against PostgreSQL. Missing tools fail the test with a message (scripts/deps.sh installs
//! them); nothing is skipped silently.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::proxy::Proxy;
use support::ready::start_ready_proxy;
use support::tools::*;
use support::*;

// ----------------------------------------------------------------------------------------
// Helpers
// ----------------------------------------------------------------------------------------

/// A URI DSN for the app user at `host:port`.
fn dsn(port: u16) -> String {
    format!("postgresql://{APP_USER}:{APP_PASSWORD}@127.0.0.1:{port}/{APP_DB}")
}

/// Runs a driver test program; asserts it exits 0 with "ok" as its last line.
fn run_ok(cmd: Command, limit: Duration, what: &str) -> Ran {
    let r = run(cmd, limit);
    let last = r.stdout.lines().last().unwrap_or("").trim().to_string();
    assert!(r.code == Some(0) && last == "ok", "{}", r.describe(what));
    r
}

/// Runs a tests/py script with the DSN; asserts it exits 0 with "ok" as its last line.
fn run_py(script: &str, port: u16, what: &str, limit: Duration) -> Ran {
    run_py_with(script, port, &[], what, limit)
}

/// [`run_py`] with more arguments after the DSN.
fn run_py_with(script: &str, port: u16, args: &[&str], what: &str, limit: Duration) -> Ran {
    let mut cmd = Command::new(venv_python());
    cmd.arg(py_script(script)).arg(dsn(port)).args(args);
    cmd.env("PYTHONUNBUFFERED", "1");
    run_ok(cmd, limit, &format!("{script} {args:?} {what}"))
}

/// The arguments the Java and Node test programs take: host, port, database, user, password.
fn client_args(port: u16) -> [String; 5] {
    [
        "127.0.0.1".into(),
        port.to_string(),
        APP_DB.into(),
        APP_USER.into(),
        APP_PASSWORD.into(),
    ]
}

/// Runs a driver program directly against the primary (the control: a program that fails
/// there is broken itself), then through a proxy whose pool has two server connections (the
/// programs open more client connections than that, so statements and settings must move).
fn control_then_through_a_small_pool(client: fn(u16, &str) -> Ran) {
    client(primary_port(), "(control: directly against the primary)");
    let proxy = start_ready_proxy(support::proxy::ProxyOptions {
        extra_tables: "[pool]\nsize = 2\n".into(),
        ..Default::default()
    });
    let r = std::panic::catch_unwind(|| client(proxy.port(), "through the proxy"));
    if let Err(e) = r {
        eprintln!("proxy log:\n{}", proxy.log_tail(40));
        std::panic::resume_unwind(e);
    }
}

fn ready_proxy() -> Proxy {
    start_ready_proxy(support::proxy::ProxyOptions::default())
}

fn primary_port() -> u16 {
    shared_cluster().primary().port()
}

// ----------------------------------------------------------------------------------------
// psql
// ----------------------------------------------------------------------------------------

const PSQL_SCRIPT: &str = r#"
drop table if exists cl_psql;
create table cl_psql (id int primary key, v text);
\copy cl_psql from stdin
1	one
2	two
3	three
\.
select 'count', count(*) from cl_psql;
select 'multi-a' \; select 'multi-b' \; select 'multi-c';
insert into cl_psql values (4, 'four'); insert into cl_psql values (5, 'five');
select 'agg', string_agg(v, ',' order by id) from cl_psql;
\copy (select id, v from cl_psql where id <= 2 order by id) to stdout
\copy (select id, v from cl_psql where id >= 4 order by id) to stdout with (format csv, header)
begin;
insert into cl_psql values (6, 'six');
savepoint s1;
\set ON_ERROR_STOP 0
insert into cl_psql values (6, 'dup');
select 'aborted';
\set ON_ERROR_STOP 1
rollback to savepoint s1;
commit;
\set ON_ERROR_STOP 0
select 1/0;
select 'after-error' \; select 1/0 \; select 'never';
\set ON_ERROR_STOP 1
select 'count', count(*) from cl_psql;
select 42 as answer \gset
\echo answer :answer
set application_name = 'psql-through-proxy';
show application_name;
prepare cl_p(int) as select $1 * 2;
execute cl_p(21);
deallocate cl_p;
select 'copied-back', count(*) from cl_psql where v in ('one', 'two', 'three');
\echo done
"#;

const PSQL_STOP_SCRIPT: &str = r#"
select 'before';
select 'in-multi' \; select 1/0 \; select 'skipped-in-multi';
select 'after';
"#;

/// Runs psql with a script file on `port`.
fn psql_script(port: u16, script: &Path) -> Ran {
    let mut c = pg_command("psql", port);
    c.args([
        "-X",
        "-q",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        APP_DB,
        "-f",
    ])
    .arg(script);
    run(c, Duration::from_secs(60))
}

#[test]
fn psql_script_through_the_proxy() {
    shared_cluster();
    let proxy = ready_proxy();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script.sql");
    std::fs::write(&script, PSQL_SCRIPT).unwrap();

    let drop_table = || {
        shared_cluster()
            .primary()
            .psql_db(APP_DB, "drop table if exists cl_psql")
            .unwrap();
    };
    drop_table();
    let direct = psql_script(primary_port(), &script);
    assert_eq!(
        direct.code,
        Some(0),
        "{}",
        direct.describe("control: psql directly against the primary")
    );
    drop_table();
    let via = psql_script(proxy.port(), &script);
    assert_eq!(
        via.code,
        Some(0),
        "{}\nproxy log:\n{}",
        via.describe("psql through the proxy"),
        proxy.log_tail(30)
    );
    let expected_stdout = "\
count|3
multi-a
multi-b
multi-c
agg|one,two,three,four,five
1\tone
2\ttwo
id,v
4,four
5,five
after-error
count|6
answer 42
psql-through-proxy
42
copied-back|3
done
";
    assert_eq!(
        via.stdout,
        expected_stdout,
        "{}",
        via.describe("psql output")
    );
    assert_eq!(
        via.stdout, direct.stdout,
        "psql output through the proxy differs from PostgreSQL's"
    );
    assert_eq!(
        via.stderr, direct.stderr,
        "psql errors through the proxy differ from PostgreSQL's"
    );
    for needle in [
        "duplicate key value violates unique constraint \"cl_psql_pkey\"",
        "current transaction is aborted, commands ignored until end of transaction block",
        "division by zero",
        "NOTICE:  table \"cl_psql\" does not exist, skipping",
    ] {
        assert!(
            via.stderr.contains(needle),
            "missing {needle:?} in\n{}",
            via.stderr
        );
    }
    assert_eq!(
        via.stderr.matches("division by zero").count(),
        2,
        "{}",
        via.stderr
    );

    // ON_ERROR_STOP: psql stops at the first error with exit status 3.
    let stop = dir.path().join("stop.sql");
    std::fs::write(&stop, PSQL_STOP_SCRIPT).unwrap();
    let direct = psql_script(primary_port(), &stop);
    let via = psql_script(proxy.port(), &stop);
    assert_eq!(via.code, Some(3), "{}", via.describe("psql ON_ERROR_STOP"));
    assert_eq!(
        via.stdout,
        "before\nin-multi\n",
        "{}",
        via.describe("psql ON_ERROR_STOP")
    );
    assert!(via.stderr.contains("division by zero"), "{}", via.stderr);
    assert_eq!(
        (via.code, &via.stdout, &via.stderr),
        (direct.code, &direct.stdout, &direct.stderr)
    );

    // Interactive-style input on stdin with \copy ... from pstdin is not needed; but a
    // large \copy out through the proxy is.
    let mut c = pg_command("psql", proxy.port());
    c.args([
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        APP_DB,
        "-c",
        "\\copy (select g, repeat('y', 50) from generate_series(1, 200000) g) to stdout",
    ]);
    let r = run(c, Duration::from_secs(60));
    assert_eq!(r.code, Some(0), "{}", r.describe("psql large \\copy out"));
    assert_eq!(r.stdout.lines().count(), 200_000);
    assert!(r.stdout.ends_with(&format!("200000\t{}\n", "y".repeat(50))));
}

// ----------------------------------------------------------------------------------------
// pgbench
// ----------------------------------------------------------------------------------------

/// A pgbench summary line value, e.g. "number of failed transactions".
fn pgbench_value(out: &str, key: &str) -> Option<String> {
    out.lines()
        .find_map(|l| l.trim().strip_prefix(key))
        .map(|rest| rest.trim_start_matches(':').trim().to_string())
}

#[test]
fn pgbench_all_protocols() {
    let cluster = shared_cluster();
    let proxy = ready_proxy();
    let port = proxy.port();

    // Initialise through the proxy: DDL, client-side COPY, VACUUM, primary keys.
    let mut c = pg_command("pgbench", port);
    c.args(["-i", "-s", "1", "-q", APP_DB]);
    let r = run(c, Duration::from_secs(90));
    assert_eq!(
        r.code,
        Some(0),
        "{}\nproxy log:\n{}",
        r.describe("pgbench -i through the proxy"),
        proxy.log_tail(30)
    );

    let primary = cluster.primary();
    let q = |sql: &str| -> String {
        primary
            .psql_db(APP_DB, sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    };
    assert_eq!(q("select count(*) from pgbench_accounts"), "100000");
    assert_eq!(q("select count(*) from pgbench_branches"), "1");

    for mode in ["simple", "extended", "prepared"] {
        for select_only in [false, true] {
            let what = format!(
                "pgbench -M {mode}{} -c 16 -j 2 -T 5",
                if select_only { " -S" } else { "" }
            );
            let mut c = pg_command("pgbench", port);
            // -n: no VACUUM/TRUNCATE of the history before each run, so the balance
            // invariant below spans all runs.
            c.args(["-n", "-M", mode, "-c", "16", "-j", "2", "-T", "5"]);
            if select_only {
                c.arg("-S");
            }
            c.arg(APP_DB);
            let r = run(c, Duration::from_secs(60));
            assert_eq!(
                r.code,
                Some(0),
                "{}\nproxy log:\n{}",
                r.describe(&what),
                proxy.log_tail(30)
            );
            let out = format!("{}\n{}", r.stdout, r.stderr);
            let failed = pgbench_value(&out, "number of failed transactions")
                .unwrap_or_else(|| panic!("{}", r.describe(&format!("{what}: no failure count"))));
            assert!(
                failed.starts_with("0 "),
                "{}",
                r.describe(&format!("{what}: failed transactions"))
            );
            let processed: u64 = pgbench_value(&out, "number of transactions actually processed")
                .and_then(|v| {
                    v.split(|c: char| !c.is_ascii_digit())
                        .next()
                        .map(String::from)
                })
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            assert!(processed > 0, "{}", r.describe(&what));
            let tps: f64 = out
                .lines()
                .find(|l| l.starts_with("tps = "))
                .and_then(|l| l["tps = ".len()..].split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            assert!(tps > 0.0, "{}", r.describe(&what));
            assert!(
                !out.contains("aborted") && !out.contains("ERROR"),
                "{}",
                r.describe(&what)
            );
            eprintln!("{what}: {processed} transactions, {tps:.0} tps");
        }
        // TPC-B keeps the balances consistent: every transaction adds the same delta to one
        // account, teller and branch and logs it in the history.
        let sums = q(
            "select (select sum(abalance) from pgbench_accounts)::text || ' ' || \
                        (select sum(tbalance) from pgbench_tellers)::text || ' ' || \
                        (select sum(bbalance) from pgbench_branches)::text || ' ' || \
                        (select coalesce(sum(delta), 0) from pgbench_history)::text",
        );
        let parts: Vec<&str> = sums.split(' ').collect();
        assert_eq!(parts.len(), 4, "{sums}");
        assert!(
            parts.iter().all(|p| *p == parts[0]),
            "after -M {mode}: balances disagree (accounts, tellers, branches, history): {sums}"
        );
    }
}

// ----------------------------------------------------------------------------------------
// Python drivers
// ----------------------------------------------------------------------------------------

#[test]
fn psycopg3_prepared_and_pipeline() {
    let cluster = shared_cluster();
    venv_python();
    run_py(
        "psycopg_client.py",
        cluster.primary().port(),
        "(control: directly against the primary)",
        Duration::from_secs(90),
    );
    let proxy = ready_proxy();
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("libpq-trace.txt");
    let r = run(
        {
            let mut c = Command::new(venv_python());
            c.arg(py_script("psycopg_client.py"))
                .arg(dsn(proxy.port()))
                .env("PYTHONUNBUFFERED", "1")
                .env("PSYCOPG_TRACE_FILE", &trace);
            c
        },
        Duration::from_secs(90),
    );
    let last = r.stdout.lines().last().unwrap_or("").trim().to_string();
    assert!(
        r.code == Some(0) && last == "ok",
        "{}\n--- end of the libpq protocol trace ---\n{}\nproxy log:\n{}",
        r.describe("psycopg_client.py through the proxy"),
        tail(&std::fs::read_to_string(&trace).unwrap_or_default(), 60),
        proxy.log_tail(40)
    );
}

#[test]
fn psycopg3_statements_after_schema_changes_and_closes() {
    let cluster = shared_cluster();
    venv_python();
    let script = "psycopg_statements.py";
    let limit = Duration::from_secs(90);
    run_py_with(
        script,
        cluster.primary().port(),
        &["--alone"],
        "(control: directly against the primary)",
        limit,
    );
    // Each proxy serves only this script and sends everything to the primary (with reads
    // split, each read may run on another server, which lists its own statements): what the
    // server lists in pg_prepared_statements must be exactly what a direct connection shows,
    // in both pool modes.
    for mode in ["transaction", "session"] {
        let proxy = start_ready_proxy(support::proxy::ProxyOptions {
            pool_mode: mode.into(),
            extra_tables: "[routing]\nread_write_split = false\n".into(),
            ..Default::default()
        });
        let r = std::panic::catch_unwind(|| {
            run_py_with(script, proxy.port(), &["--alone"], mode, limit)
        });
        if let Err(e) = r {
            eprintln!("proxy log:\n{}", proxy.log_tail(40));
            std::panic::resume_unwind(e);
        }
    }
}

#[test]
fn asyncpg_prepared_copy_and_pool() {
    let cluster = shared_cluster();
    venv_python();
    run_py(
        "asyncpg_client.py",
        cluster.primary().port(),
        "(control: directly against the primary)",
        Duration::from_secs(90),
    );
    let proxy = ready_proxy();
    let r = run(
        {
            let mut c = Command::new(venv_python());
            c.arg(py_script("asyncpg_client.py"))
                .arg(dsn(proxy.port()))
                .env("PYTHONUNBUFFERED", "1");
            c
        },
        Duration::from_secs(90),
    );
    let last = r.stdout.lines().last().unwrap_or("").trim().to_string();
    assert!(
        r.code == Some(0) && last == "ok",
        "{}\nproxy log:\n{}",
        r.describe("asyncpg_client.py through the proxy"),
        proxy.log_tail(40)
    );
}

// ----------------------------------------------------------------------------------------
// pgjdbc
// ----------------------------------------------------------------------------------------

/// Runs tests/java/JdbcClient.java (Java's single-file launcher, Debian's pgjdbc) against
/// 127.0.0.1:`port`; asserts it exits 0 with "ok" as its last line.
fn run_jdbc(port: u16, what: &str) -> Ran {
    let jar = Path::new("/usr/share/java/postgresql.jar");
    assert!(
        jar.exists(),
        "{} is missing: run scripts/deps.sh (installs libpostgresql-jdbc-java)",
        jar.display()
    );
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/java/JdbcClient.java");
    let mut cmd = Command::new("java");
    cmd.arg("-cp")
        .arg(jar)
        .arg(source)
        .args(client_args(port))
        .env("HOME", std::env::temp_dir());
    run_ok(
        cmd,
        Duration::from_secs(180),
        &format!("JdbcClient.java {what}"),
    )
}

/// pgjdbc as applications use it, with server-side prepared statements from the first use
/// (`prepareThreshold=1`: every connection names its statements S_1, S_2, ...), batches,
/// commits and rollbacks, a cursor read with `fetchSize`, errors, metadata, and four
/// connections at once through a pool of two server connections (so statements move).
#[test]
fn pgjdbc_prepared_batches_cursors_and_concurrency() {
    control_then_through_a_small_pool(run_jdbc);
}

// ----------------------------------------------------------------------------------------
// node-postgres and postgres.js
// ----------------------------------------------------------------------------------------

/// Runs tests/node/client.mjs against 127.0.0.1:`port`; asserts it exits 0 with "ok" last.
fn run_node(port: u16, what: &str) -> Ran {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    assert!(
        dir.join("node_modules/pg").exists() && dir.join("node_modules/postgres").exists(),
        "tests/node/node_modules lacks pg or postgres: run scripts/deps.sh (npm ci)"
    );
    let mut cmd = Command::new("node");
    cmd.current_dir(&dir)
        .arg("client.mjs")
        .args(client_args(port));
    run_ok(cmd, Duration::from_secs(120), &format!("client.mjs {what}"))
}

/// node-postgres (simple and parameterized queries, named statements whose one name means
/// different statements on different connections, transactions, errors, a pool) and
/// postgres.js (200 pipelined queries on automatically prepared statements, transactions, a
/// cursor), with more client connections than the pool's two server connections.
#[test]
fn node_postgres_and_postgres_js() {
    control_then_through_a_small_pool(run_node);
}
