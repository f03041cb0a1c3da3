//! The statement corpus (`tests/sql_corpus/`) labelled by PostgreSQL itself, then classified by
//! `switchyard classify`.
//!
//! Labels: `schema.sql` is loaded into a fresh database on a real server, then each corpus
//! statement runs alone as `BEGIN READ ONLY` / statement / `ROLLBACK` (three round trips on
//! one connection). It is a write if PostgreSQL refuses it with SQLSTATE 25006, a read if it
//! succeeds; any other error leaves it unlabelled (not counted).
//!
//! Classification: the `switchyard classify` binary with every labelled statement as an
//! argument; the library's `Classifier::default()` must agree with it.
//!
//! Contract: at most 0.5 % of writes are routed to a replica, at least 97 % of reads are, over
//! at least 1,000 labelled statements. Misclassified statements are printed.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use support::*;
use switchyard::sql::{split_statements, Classifier, Route};
use tokio_postgres::Client;

const DB: &str = "corpus";
/// Longest a single corpus statement may take before the connection is replaced.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sql_corpus")
}

/// The records of `statements.sql`: separated by lines that are exactly `-- ;;`; records that
/// hold only comments or whitespace are dropped.
fn records(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.split_inclusive('\n') {
        if line.trim_end_matches(['\n', '\r']) == "-- ;;" {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push_str(line);
        }
    }
    out.push(cur);
    out.into_iter()
        .map(|r| r.trim().to_string())
        .filter(|r| split_statements(r).next().is_some())
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    Read,
    Write,
}

/// What PostgreSQL said about one statement in a read-only transaction.
enum Outcome {
    Label(Label),
    /// Failed with another SQLSTATE, or not at all answerable: not counted.
    Skipped(String),
}

async fn connect(cs: &str) -> Client {
    let (client, conn) = tokio::time::timeout(
        Duration::from_secs(20),
        tokio_postgres::connect(cs, tokio_postgres::NoTls),
    )
    .await
    .expect("connecting to the labelling server timed out")
    .unwrap_or_else(|e| panic!("connecting to the labelling server: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
        .batch_execute(&format!(
            "SET statement_timeout = '{}s'; SET lock_timeout = '5s'",
            STATEMENT_TIMEOUT.as_secs() - 2
        ))
        .await
        .expect("session settings");
    client
}

fn is_copy(stmt: &str) -> bool {
    // Leading comments are part of some records.
    let mut s = stmt.trim_start();
    loop {
        if let Some(rest) = s.strip_prefix("--") {
            s = rest
                .split_once('\n')
                .map(|(_, r)| r)
                .unwrap_or("")
                .trim_start();
        } else if let Some(rest) = s.strip_prefix("/*") {
            s = rest
                .split_once("*/")
                .map(|(_, r)| r)
                .unwrap_or("")
                .trim_start();
        } else {
            break;
        }
    }
    s.get(..4).is_some_and(|w| w.eq_ignore_ascii_case("copy"))
}

/// Runs `sql` as one simple query, bounded by [`STATEMENT_TIMEOUT`].
async fn run(c: &Client, sql: &str) -> Result<Result<(), tokio_postgres::Error>, ()> {
    match tokio::time::timeout(STATEMENT_TIMEOUT, c.simple_query(sql)).await {
        Ok(r) => Ok(r.map(|_| ())),
        Err(_) => Err(()),
    }
}

/// Labels one statement: `BEGIN READ ONLY`, the statement, `ROLLBACK`, in separate round
/// trips. Replaces the connection if it got stuck or broke.
async fn label(client: &mut Client, cs: &str, stmt: &str) -> Outcome {
    match run(client, "BEGIN READ ONLY").await {
        Ok(Ok(())) => {}
        other => {
            *client = connect(cs).await;
            let ok = matches!(other, Ok(Ok(()))) || run(client, "BEGIN READ ONLY").await.is_ok();
            assert!(ok, "BEGIN READ ONLY failed twice");
        }
    }
    let outcome = match run(client, stmt).await {
        Ok(Ok(())) => Outcome::Label(Label::Read),
        Ok(Err(e)) => match e.code() {
            Some(code) if code.code() == "25006" => Outcome::Label(Label::Write),
            Some(code) => Outcome::Skipped(format!("{}: {e}", code.code())),
            // COPY ... TO STDOUT: the server started sending data, so it passed the read-only
            // checks (tokio-postgres' simple_query does not take copy data and says so).
            None if is_copy(stmt) && e.to_string().contains("unexpected message") => {
                Outcome::Label(Label::Read)
            }
            None => Outcome::Skipped(format!("{e}")),
        },
        Err(()) => Outcome::Skipped(format!("no answer within {STATEMENT_TIMEOUT:?}")),
    };
    match run(client, "ROLLBACK").await {
        Ok(Ok(())) if !client.is_closed() => {}
        _ => *client = connect(cs).await,
    }
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_routing_matches_postgres_read_only_behaviour() {
    let t0 = Instant::now();
    let dir = corpus_dir();
    let text = std::fs::read_to_string(dir.join("statements.sql")).expect("statements.sql");
    let schema = std::fs::read_to_string(dir.join("schema.sql")).expect("schema.sql");
    let recs = records(&text);
    assert!(
        recs.len() >= 1000,
        "the corpus has only {} statements",
        recs.len()
    );

    // A server of our own (no replica needed): a fresh database with the corpus schema.
    let cluster = tokio::task::spawn_blocking(|| {
        let c = own_cluster(0);
        c.primary()
            .psql(&format!("CREATE DATABASE {DB}"))
            .expect("CREATE DATABASE");
        c
    })
    .await
    .unwrap();
    let cs = cluster
        .primary()
        .conn_string(SUPERUSER, SUPERUSER_PASSWORD, DB);
    let mut client = connect(&cs).await;
    for stmt in split_statements(&schema) {
        tokio::time::timeout(Duration::from_secs(60), client.batch_execute(stmt))
            .await
            .unwrap_or_else(|_| panic!("schema statement timed out: {stmt}"))
            .unwrap_or_else(|e| panic!("schema statement failed: {e}\n{stmt}"));
    }
    let loaded = t0.elapsed();

    // Label every statement with PostgreSQL.
    let mut labelled: Vec<(usize, Label)> = Vec::new();
    let mut skipped: Vec<(usize, String)> = Vec::new();
    for (i, r) in recs.iter().enumerate() {
        match label(&mut client, &cs, r).await {
            Outcome::Label(l) => labelled.push((i, l)),
            Outcome::Skipped(why) => skipped.push((i, why)),
        }
    }
    let labelled_in = t0.elapsed() - loaded;

    // Classify the labelled statements with the binary (one process, one argument each).
    let args: Vec<&str> = labelled.iter().map(|&(i, _)| recs[i].as_str()).collect();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("classify")
        .arg("--")
        .args(&args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running switchyard classify");
    assert!(
        out.status.success(),
        "switchyard classify failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("classify output is UTF-8");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        args.len(),
        "switchyard classify printed {} lines for {} statements",
        lines.len(),
        args.len()
    );
    let lib = Classifier::default();

    let (mut writes, mut writes_on_replica) = (0usize, 0usize);
    let (mut reads, mut reads_on_replica) = (0usize, 0usize);
    let mut leaks = Vec::new();
    let mut missed = Vec::new();
    let mut disagreements = Vec::new();
    let mut missed_reasons: BTreeMap<String, usize> = BTreeMap::new();
    for ((i, l), line) in labelled.iter().zip(&lines) {
        let stmt = &recs[*i];
        let (route, reason) = line
            .split_once('\t')
            .unwrap_or_else(|| panic!("unexpected classify output line {line:?}"));
        let route = match route {
            "replica" => Route::Replica,
            "primary" => Route::Primary,
            other => panic!("unexpected route {other:?} in {line:?}"),
        };
        let a = lib.analyze(stmt);
        if a.route != route || a.reason.to_string() != reason {
            disagreements.push(format!(
                "binary: {route} ({reason}), library: {} ({}): {stmt}",
                a.route, a.reason
            ));
        }
        match l {
            Label::Write => {
                writes += 1;
                if route == Route::Replica {
                    writes_on_replica += 1;
                    leaks.push(format!("  [{i}] ({reason}) {stmt}"));
                }
            }
            Label::Read => {
                reads += 1;
                if route == Route::Replica {
                    reads_on_replica += 1;
                } else {
                    *missed_reasons.entry(reason.to_string()).or_insert(0) += 1;
                    missed.push(format!("  [{i}] ({reason}) {stmt}"));
                }
            }
        }
    }

    // Informational: where our labels differ from the recorded ones (another server version).
    let recorded = std::fs::read_to_string(dir.join("labels.tsv")).unwrap_or_default();
    let recorded: Vec<&str> = recorded
        .lines()
        .map(|l| l.split('\t').nth(1).unwrap_or(""))
        .collect();
    if recorded.len() == recs.len() {
        for &(i, l) in &labelled {
            let ours = if l == Label::Write { "write" } else { "read" };
            if recorded[i] != ours {
                eprintln!(
                    "label differs from labels.tsv ({} there, {ours} here): {}",
                    recorded[i], recs[i]
                );
            }
        }
    }

    let leak = writes_on_replica as f64 / writes.max(1) as f64;
    let recall = reads_on_replica as f64 / reads.max(1) as f64;
    eprintln!(
        "corpus: {} statements, {} labelled ({writes} writes, {reads} reads), {} skipped; \
         schema loaded in {loaded:?}, labelled in {labelled_in:?}",
        recs.len(),
        labelled.len(),
        skipped.len()
    );
    eprintln!(
        "writes routed to a replica: {writes_on_replica}/{writes} ({:.2}%); reads routed to a \
         replica: {reads_on_replica}/{reads} ({:.2}%)",
        leak * 100.0,
        recall * 100.0
    );
    if !skipped.is_empty() {
        eprintln!("skipped (neither success nor 25006):");
        for (i, why) in &skipped {
            eprintln!("  [{i}] {why}: {}", recs[*i]);
        }
    }
    if !leaks.is_empty() {
        eprintln!("WRITES ROUTED TO A REPLICA:\n{}", leaks.join("\n"));
    }
    if !missed.is_empty() {
        eprintln!(
            "reads routed to the primary (by reason: {missed_reasons:?}):\n{}",
            missed.join("\n")
        );
    }

    assert!(
        disagreements.is_empty(),
        "`switchyard classify` and Classifier::default() disagree:\n{}",
        disagreements.join("\n")
    );
    assert!(
        labelled.len() >= 1000,
        "only {} statements could be labelled (need 1000)",
        labelled.len()
    );
    assert!(writes > 0 && reads > 0, "{writes} writes, {reads} reads");
    assert!(
        leak <= 0.005,
        "{writes_on_replica} of {writes} writes ({:.2}%) would run on a replica (at most 0.5% \
         allowed):\n{}",
        leak * 100.0,
        leaks.join("\n")
    );
    assert!(
        recall >= 0.97,
        "only {reads_on_replica} of {reads} reads ({:.2}%) would run on a replica (at least 97% \
         required):\n{}",
        recall * 100.0,
        missed.join("\n")
    );
    drop(client);
    drop(cluster);
}

#[test]
fn corpus_records_are_split_as_documented() {
    let text = "-- header\n-- ;;\nSELECT 1\n-- ;;\n\n-- only a comment\n-- ;;\nSELECT ';'\n\
                -- ;;\n-- a comment first\nINSERT INTO t VALUES (1)\n";
    let r = records(text);
    assert_eq!(
        r,
        vec![
            "SELECT 1".to_string(),
            "SELECT ';'".to_string(),
            "-- a comment first\nINSERT INTO t VALUES (1)".to_string()
        ]
    );
    assert!(is_copy("COPY t TO STDOUT"));
    assert!(is_copy("/* c */ -- x\n copy t to stdout"));
    assert!(!is_copy("SELECT 'copy'"));
}
