//! The statement corpus in `tests/sql_corpus/`, scored against labels recorded from
//! PostgreSQL 15 (`labels.tsv`: record index, `read`/`write`, SQLSTATE; a statement is a write
//! if it fails with 25006 inside `BEGIN READ ONLY`).
//!
//! Set `SQL_CORPUS_VERBOSE=1` to print every disagreement.

use std::path::PathBuf;

use super::{split_statements, Analysis, Classifier, Reason, Route};

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sql_corpus")
}

/// The corpus's statement file.
pub(crate) fn corpus_statements() -> String {
    std::fs::read_to_string(corpus_dir().join("statements.sql")).expect("corpus")
}

/// Runs a classifier shortcut on each statement and checks that wherever it answers, it
/// answers exactly what the full classifier does. Returns how many it answered.
pub(crate) fn agreeing_answers<'s>(
    shortcut: fn(&[u8]) -> Option<Analysis<'static>>,
    statements: impl IntoIterator<Item = &'s str>,
) -> usize {
    let c = Classifier::new(&[], &[]);
    let mut answered = 0;
    for sql in statements {
        if let Some(a) = shortcut(sql.as_bytes()) {
            assert_eq!(a, c.analyze_full(sql), "{sql:?}");
            answered += 1;
        }
    }
    answered
}

/// `n` statements, each one of `heads` followed by up to 7 of `pieces` (pseudo-random, the
/// same every run): material for checking a shortcut against the full classifier.
pub(crate) fn generated_statements(heads: &[&str], pieces: &[&str], n: usize) -> Vec<String> {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed as usize
    };
    (0..n)
        .map(|_| {
            let mut sql = heads[next() % heads.len()].to_string();
            for _ in 0..next() % 8 {
                sql.push_str(pieces[next() % pieces.len()]);
            }
            sql
        })
        .collect()
}

/// Records of `statements.sql`: separated by lines that are exactly `-- ;;`; records holding
/// only comments/whitespace are skipped.
pub(crate) fn corpus_records(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        if line.trim_end_matches(['\n', '\r']) == "-- ;;" {
            out.push(&text[start..pos]);
            start = pos + line.len();
        }
        pos += line.len();
    }
    out.push(&text[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|r| split_statements(r).next().is_some())
        .collect()
}

/// Statements PostgreSQL accepts in a read-only transaction that the routing contract
/// nevertheless sends to the primary (session state the proxy manages, locks, xids, ...).
fn primary_by_policy(r: Reason) -> bool {
    matches!(
        r,
        Reason::SessionCommand
            | Reason::TransactionControl
            | Reason::Write("LOCK")
            | Reason::Write("ANALYZE")
            | Reason::Write("NOTIFY")
            | Reason::Write("CHECKPOINT")
            | Reason::PrimaryView(_)
            | Reason::WritingFunction(
                "pg_advisory_lock"
                    | "pg_advisory_lock_shared"
                    | "pg_try_advisory_lock"
                    | "pg_try_advisory_lock_shared"
                    | "pg_advisory_xact_lock"
                    | "pg_advisory_xact_lock_shared"
                    | "pg_try_advisory_xact_lock"
                    | "pg_try_advisory_xact_lock_shared"
                    | "txid_current"
                    | "pg_current_xact_id"
                    | "pg_notify"
                    | "currval"
                    | "lastval"
                    | "pg_current_wal_lsn"
                    | "pg_current_wal_insert_lsn"
                    | "pg_current_wal_flush_lsn"
                    | "pg_walfile_name"
                    | "pg_walfile_name_offset"
                    | "pg_cancel_backend"
                    | "pg_terminate_backend"
                    | "pg_reload_conf"
                    | "pg_rotate_logfile"
                    | "pg_stat_reset"
                    | "lo_open"
                    | "lo_export"
            )
    )
}

#[test]
fn corpus_is_well_formed() {
    let text = corpus_statements();
    let recs = corpus_records(&text);
    assert!(recs.len() >= 1000, "only {} records", recs.len());
    let c = Classifier::default();
    for r in &recs {
        let a = c.analyze(r);
        assert_eq!(a.statements, 1, "record is not one statement: {r:?}");
        assert_ne!(a.reason, Reason::Unparsable, "{r:?}");
        assert_ne!(a.reason, Reason::Unrecognized, "{r:?}");
    }
    // the schema splits into statements, none unparsable
    let schema = std::fs::read_to_string(corpus_dir().join("schema.sql")).unwrap();
    let stmts: Vec<_> = split_statements(&schema).collect();
    assert!(stmts.len() > 20);
    for s in stmts {
        assert_ne!(c.analyze(s).reason, Reason::Unparsable, "{s:?}");
        assert_eq!(c.analyze(s).statements, 1, "{s:?}");
    }
}

#[test]
fn corpus_matches_postgres_labels() {
    let text = corpus_statements();
    let labels = std::fs::read_to_string(corpus_dir().join("labels.tsv")).unwrap();
    let recs = corpus_records(&text);
    let labels: Vec<(&str, &str)> = labels
        .lines()
        .map(|l| {
            let mut f = l.split('\t');
            let _idx = f.next();
            (f.next().unwrap_or(""), f.next().unwrap_or(""))
        })
        .collect();
    assert_eq!(recs.len(), labels.len(), "labels.tsv is out of date");
    let verbose = std::env::var_os("SQL_CORPUS_VERBOSE").is_some();
    let c = Classifier::default();
    let (mut writes, mut writes_on_replica) = (0usize, 0usize);
    let (mut reads, mut reads_on_replica, mut policy) = (0usize, 0usize, 0usize);
    let mut report = Vec::new();
    for (r, (label, code)) in recs.iter().zip(&labels) {
        let a = c.analyze(r);
        match *label {
            "write" => {
                writes += 1;
                if a.route == Route::Replica {
                    writes_on_replica += 1;
                    report.push(format!("WRITE ON REPLICA ({code}) {}: {r}", a.reason));
                }
            }
            "read" => {
                reads += 1;
                if a.route == Route::Replica {
                    reads_on_replica += 1;
                } else if primary_by_policy(a.reason) {
                    policy += 1;
                } else {
                    report.push(format!("read on primary ({}): {r}", a.reason));
                }
            }
            other => panic!("unexpected label {other:?} ({code}) for {r:?}"),
        }
    }
    let write_leak = writes_on_replica as f64 / writes.max(1) as f64;
    let read_recall = reads_on_replica as f64 / reads.max(1) as f64;
    if verbose {
        for l in &report {
            eprintln!("{l}");
        }
    }
    eprintln!(
        "corpus: {writes} writes ({writes_on_replica} on replica, {:.2}%), {reads} reads \
         ({reads_on_replica} on replica, {:.2}%; {policy} primary by policy)",
        write_leak * 100.0,
        read_recall * 100.0
    );
    assert!(write_leak <= 0.005, "{}", report.join("\n"));
    assert!(read_recall >= 0.97, "{}", report.join("\n"));
}
