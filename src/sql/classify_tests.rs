//! Routing tests: (statement, expected route, expected reason).

use super::{classify_line, Classifier, Route, TxnControl};

const P: Route = Route::Primary;
const R: Route = Route::Replica;

fn check(c: &Classifier, cases: &[(&str, Route, &str)]) {
    let mut failures = Vec::new();
    for &(sql, route, reason) in cases {
        let a = c.analyze(sql);
        if a.route != route || a.reason.to_string() != reason {
            failures.push(format!(
                "{sql:?}: got {} / {:?}, want {} / {:?}",
                a.route,
                a.reason.to_string(),
                route,
                reason
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn reads() {
    check(
        &Classifier::default(),
        &[
            ("SELECT 1", R, "read: SELECT"),
            ("select * from t where a = $1", R, "read: SELECT"),
            ("  SELECT 1 ;  ", R, "read: SELECT"),
            ("(SELECT 1)", R, "read: SELECT"),
            ("((select 1)) union (select 2)", R, "read: SELECT"),
            ("SELECT 1 UNION ALL SELECT 2 INTERSECT SELECT 3 EXCEPT SELECT 4", R, "read: SELECT"),
            ("WITH x AS (SELECT 1) SELECT * FROM x", R, "read: WITH"),
            ("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM r WHERE n < 10) SELECT sum(n) FROM r", R, "read: WITH"),
            ("WITH x AS MATERIALIZED (SELECT 1), y AS NOT MATERIALIZED (SELECT 2) SELECT * FROM x, y", R, "read: WITH"),
            ("WITH RECURSIVE t(n) AS (VALUES (1) UNION ALL SELECT n+1 FROM t WHERE n < 5) SEARCH DEPTH FIRST BY n SET ord SELECT * FROM t", R, "read: WITH"),
            ("VALUES (1, 'a'), (2, 'b')", R, "read: VALUES"),
            ("TABLE t", R, "read: TABLE"),
            ("table s.t order by 1", R, "read: TABLE"),
            (
                "SELECT current_setting('transaction_read_only')",
                P,
                "server role transaction_read_only",
            ),
            (
                "select pg_catalog.current_setting('In_Hot_Standby', true)::bool",
                P,
                "server role in_hot_standby",
            ),
            (
                "SELECT setting FROM pg_settings WHERE name = 'transaction_read_only'",
                P,
                "server role pg_settings",
            ),
            ("SELECT * FROM pg_catalog.pg_settings", P, "server role pg_settings"),
            (
                "SELECT count(*) FROM pg_show_all_settings()",
                P,
                "server role pg_show_all_settings",
            ),
            // Other settings read the same on every server the client's settings are on.
            ("SELECT current_setting('app.tenant')", R, "read: SELECT"),
            ("SELECT current_setting($1)", R, "read: SELECT"),
            ("SELECT * FROM my_settings", R, "read: SELECT"),
            ("SHOW search_path", R, "read: SHOW"),
            ("show all", P, "server role all"),
            ("SELECT 'FOR UPDATE'", R, "read: SELECT"),
            ("SELECT \"for\" FROM t -- FOR UPDATE\n", R, "read: SELECT"),
            ("SELECT 1 /* FOR UPDATE */", R, "read: SELECT"),
            ("SELECT $$ for update $$", R, "read: SELECT"),
            ("SELECT substring('abc' FROM 1 FOR 2)", R, "read: SELECT"),
            ("SELECT substring(x for 2) from t", R, "read: SELECT"),
            ("SELECT overlay('abc' placing 'x' from 2 for 1)", R, "read: SELECT"),
            ("SELECT collation for ('a')", R, "read: SELECT"),
            ("SELECT * FROM t FOR READ ONLY", R, "read: SELECT"),
            ("SELECT 'nextval(1)'", R, "read: SELECT"),
            ("SELECT nextval FROM t", R, "read: SELECT"),
            ("SELECT t.nextval FROM t", R, "read: SELECT"),
            ("SELECT 'INSERT INTO t VALUES (1)'", R, "read: SELECT"),
            ("SELECT \"insert\", \"update\", \"delete\" FROM t", R, "read: SELECT"),
            ("SELECT t.update FROM t", R, "read: SELECT"),
            ("SELECT \"into\" FROM t", R, "read: SELECT"),
            ("SELECT set_config('a.b', 'c', false)", R, "read: SELECT"),
            ("SELECT pg_sleep(0.1)", R, "read: SELECT"),
            ("SELECT count(*), sum(a) FILTER (WHERE b) OVER (PARTITION BY c ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) FROM t", R, "read: SELECT"),
            ("SELECT pg_postmaster_start_time(), now(), current_setting('x'), txid_current_snapshot()", R, "read: SELECT"),
            ("SELECT * FROM t WHERE x IN (SELECT y FROM u WHERE z = E'it\\'s')", R, "read: SELECT"),
            ("SELECT a[1:2], b::text[], c->>'k' FROM t", R, "read: SELECT"),
            ("SELECT * FROM LATERAL generate_series(1, 10) g", R, "read: SELECT"),
            ("SELECT my_func(1)", R, "read: SELECT"),
            ("SELECT lo_get(1), loread(0, 10)", R, "read: SELECT"),
            ("SELECT pg_try_advisory_lockx(1)", R, "read: SELECT"),
            ("SELECT 1; SELECT 2", R, "read: SELECT"),
            ("SELECT 1; /* c */ ; ; SELECT 2;", R, "read: SELECT"),
            ("/* comment */ SELECT 1", R, "read: SELECT"),
            ("-- comment\nSELECT 1", R, "read: SELECT"),
            ("EXPLAIN SELECT 1", R, "read: EXPLAIN"),
            ("EXPLAIN DELETE FROM t", R, "read: EXPLAIN"),
            ("EXPLAIN VERBOSE UPDATE t SET a = 1", R, "read: EXPLAIN"),
            ("EXPLAIN (FORMAT JSON, COSTS off) INSERT INTO t VALUES (1)", R, "read: EXPLAIN"),
            ("EXPLAIN (ANALYZE false) DELETE FROM t", R, "read: EXPLAIN"),
            ("EXPLAIN (ANALYZE off, VERBOSE) DELETE FROM t", R, "read: EXPLAIN"),
            ("EXPLAIN (analyze 0) DELETE FROM t", R, "read: EXPLAIN"),
            ("EXPLAIN SELECT nextval('s')", R, "read: EXPLAIN"),
            ("EXPLAIN SELECT * FROM t FOR UPDATE", R, "read: EXPLAIN"),
            ("EXPLAIN ANALYZE SELECT * FROM t", R, "read: SELECT"),
            ("EXPLAIN ANALYSE VERBOSE SELECT 1", R, "read: SELECT"),
            ("EXPLAIN (ANALYZE, BUFFERS) WITH x AS (SELECT 1) SELECT * FROM x", R, "read: WITH"),
            ("EXPLAIN (ANALYZE true, FORMAT YAML) VALUES (1)", R, "read: VALUES"),
            ("EXPLAIN (\"analyze\") DELETE FROM t", P, "write: DELETE"),
            ("EXPLAIN (\"ANALYZE\") DELETE FROM t", R, "read: EXPLAIN"),
            ("COPY t TO STDOUT", R, "read: COPY"),
            ("copy public.t (a, b) to stdout with (format csv, header)", R, "read: COPY"),
            ("COPY (SELECT * FROM t WHERE a > 1) TO STDOUT WITH CSV", R, "read: COPY"),
            ("COPY (WITH x AS (SELECT 1) SELECT * FROM x) TO STDOUT", R, "read: COPY"),
            ("", R, "empty"),
            ("   ", R, "empty"),
            (";", R, "empty"),
            ("-- just a comment", R, "empty"),
            ("/* c */ ; /* d */", R, "empty"),
        ],
    );
}

#[test]
fn writes_and_primary_reads() {
    check(
        &Classifier::default(),
        &[
            // locking clauses
            ("select * from t for update", P, "locking clause FOR UPDATE"),
            (
                "SELECT * FROM t FOR NO KEY UPDATE",
                P,
                "locking clause FOR NO KEY UPDATE",
            ),
            ("SELECT * FROM t FOR SHARE", P, "locking clause FOR SHARE"),
            (
                "SELECT * FROM t FOR KEY SHARE OF t NOWAIT",
                P,
                "locking clause FOR KEY SHARE",
            ),
            (
                "SELECT * FROM t LIMIT 1 FOR UPDATE SKIP LOCKED",
                P,
                "locking clause FOR UPDATE",
            ),
            (
                "SELECT * FROM (SELECT * FROM t FOR UPDATE) s",
                P,
                "locking clause FOR UPDATE",
            ),
            (
                "WITH x AS (SELECT * FROM t FOR UPDATE) SELECT * FROM x",
                P,
                "locking clause FOR UPDATE",
            ),
            (
                "SELECT * FROM t /* c */ FOR /* c */ UPDATE",
                P,
                "locking clause FOR UPDATE",
            ),
            ("(SELECT * FROM t FOR SHARE)", P, "locking clause FOR SHARE"),
            (
                "SELECT substring(a FROM 1 FOR 2) FROM t FOR UPDATE",
                P,
                "locking clause FOR UPDATE",
            ),
            // SELECT INTO
            ("SELECT * INTO t2 FROM t", P, "SELECT INTO"),
            ("SELECT 1 AS a INTO TEMP t2", P, "SELECT INTO"),
            ("select a into unlogged table t3 from t", P, "SELECT INTO"),
            (
                "WITH x AS (SELECT 1) SELECT * INTO t4 FROM x",
                P,
                "SELECT INTO",
            ),
            // data-modifying CTEs
            (
                "WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x",
                P,
                "data-modifying CTE",
            ),
            (
                "WITH x AS (INSERT INTO t VALUES (1) RETURNING a) SELECT * FROM x",
                P,
                "data-modifying CTE",
            ),
            (
                "WITH x AS (UPDATE t SET a = 1 RETURNING a) SELECT * FROM x",
                P,
                "data-modifying CTE",
            ),
            (
                "with a as (select 1), b as (delete from t) select 1",
                P,
                "data-modifying CTE",
            ),
            (
                "WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x",
                P,
                "write: INSERT",
            ),
            (
                "WITH x AS (SELECT 1) UPDATE t SET a = 1",
                P,
                "write: UPDATE",
            ),
            ("WITH x AS (SELECT 1) DELETE FROM t", P, "write: DELETE"),
            (
                "WITH x AS (SELECT 1) MERGE INTO t USING x ON true WHEN MATCHED THEN DELETE",
                P,
                "write: MERGE",
            ),
            // writing functions
            ("SELECT nextval('s')", P, "writing function nextval"),
            ("SELECT NEXTVAL('s')", P, "writing function nextval"),
            (
                "select pg_catalog.nextval('s')",
                P,
                "writing function nextval",
            ),
            ("SELECT \"nextval\"('s')", P, "writing function nextval"),
            (
                "SELECT \"pg_catalog\".\"setval\"('s', 1)",
                P,
                "writing function setval",
            ),
            ("SELECT nextval ( 's' )", P, "writing function nextval"),
            ("SELECT nextval/* x */('s')", P, "writing function nextval"),
            ("SELECT currval('s')", P, "writing function currval"),
            // The process the client's BackendKeyData names is a primary's.
            ("SELECT pg_backend_pid()", P, "server role pg_backend_pid"),
            // Whether the server is a standby: the session's server is the primary.
            (
                "SELECT pg_is_in_recovery()",
                P,
                "server role pg_is_in_recovery",
            ),
            (
                "SELECT pg_wal_replay_pause()",
                P,
                "writing function pg_wal_replay_pause",
            ),
            (
                "SELECT pg_wal_replay_resume()",
                P,
                "writing function pg_wal_replay_resume",
            ),
            (
                "SHOW transaction_read_only",
                P,
                "server role transaction_read_only",
            ),
            ("show In_Hot_Standby", P, "server role in_hot_standby"),
            ("SHOW ALL", P, "server role all"),
            (
                "SHOW \"transaction_read_only\"",
                P,
                "server role transaction_read_only",
            ),
            ("SHOW search_path", R, "read: SHOW"),
            ("SHOW transaction isolation level", R, "read: SHOW"),
            (
                "SELECT * FROM t WHERE id = nextval('s')",
                P,
                "writing function nextval",
            ),
            ("VALUES (nextval('s'))", P, "writing function nextval"),
            (
                "SELECT pg_advisory_lock(1)",
                P,
                "writing function pg_advisory_lock",
            ),
            (
                "SELECT pg_advisory_xact_lock(1)",
                P,
                "writing function pg_advisory_xact_lock",
            ),
            (
                "SELECT pg_try_advisory_lock_shared(1, 2)",
                P,
                "writing function pg_try_advisory_lock_shared",
            ),
            (
                "SELECT pg_advisory_unlock_all()",
                P,
                "writing function pg_advisory_unlock_all",
            ),
            (
                "SELECT pg_notify('c', 'p')",
                P,
                "writing function pg_notify",
            ),
            ("SELECT lo_create(0)", P, "writing function lo_create"),
            ("SELECT lo_unlink(123)", P, "writing function lo_unlink"),
            ("SELECT txid_current()", P, "writing function txid_current"),
            (
                "SELECT pg_current_xact_id()",
                P,
                "writing function pg_current_xact_id",
            ),
            (
                "SELECT pg_switch_wal()",
                P,
                "writing function pg_switch_wal",
            ),
            (
                "SELECT pg_create_logical_replication_slot('s', 'pgoutput')",
                P,
                "writing function pg_create_logical_replication_slot",
            ),
            (
                "SELECT pg_drop_replication_slot('s')",
                P,
                "writing function pg_drop_replication_slot",
            ),
            (
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity",
                P,
                "writing function pg_terminate_backend",
            ),
            (
                "SELECT pg_cancel_backend(1)",
                P,
                "writing function pg_cancel_backend",
            ),
            (
                "SELECT pg_reload_conf()",
                P,
                "writing function pg_reload_conf",
            ),
            (
                "SELECT pg_stat_reset()",
                P,
                "writing function pg_stat_reset",
            ),
            (
                "SELECT pg_stat_reset_shared('bgwriter')",
                P,
                "writing function pg_stat_reset_shared",
            ),
            (
                "SELECT pg_stat_reset_future_thing()",
                P,
                "writing function pg_stat_reset*",
            ),
            (
                "SELECT pg_backup_start('l')",
                P,
                "writing function pg_backup_start",
            ),
            (
                "SELECT pg_logical_emit_message(true, 'p', 'm')",
                P,
                "writing function pg_logical_emit_message",
            ),
            (
                "SELECT dblink_exec('c', 'delete from t')",
                P,
                "writing function dblink_exec",
            ),
            (
                "SELECT 1 FROM t WHERE EXISTS (SELECT setval('s', 5))",
                P,
                "writing function setval",
            ),
            (
                "COPY (SELECT nextval('s')) TO STDOUT",
                P,
                "writing function nextval",
            ),
            // EXPLAIN ANALYZE of writes
            ("EXPLAIN ANALYZE DELETE FROM t", P, "write: DELETE"),
            (
                "EXPLAIN ANALYZE VERBOSE INSERT INTO t VALUES (1)",
                P,
                "write: INSERT",
            ),
            ("EXPLAIN (ANALYZE) UPDATE t SET a = 1", P, "write: UPDATE"),
            (
                "EXPLAIN (ANALYZE true) UPDATE t SET a = 1",
                P,
                "write: UPDATE",
            ),
            (
                "EXPLAIN (ANALYZE on, BUFFERS) UPDATE t SET a = 1",
                P,
                "write: UPDATE",
            ),
            ("EXPLAIN (ANALYZE 1) UPDATE t SET a = 1", P, "write: UPDATE"),
            (
                "EXPLAIN (FORMAT JSON, ANALYZE) DELETE FROM t",
                P,
                "write: DELETE",
            ),
            ("EXPLAIN (ANALYZE 'true') DELETE FROM t", P, "write: DELETE"),
            (
                "EXPLAIN ANALYZE SELECT nextval('s')",
                P,
                "writing function nextval",
            ),
            (
                "EXPLAIN ANALYZE SELECT * FROM t FOR UPDATE",
                P,
                "locking clause FOR UPDATE",
            ),
            (
                "EXPLAIN ANALYZE WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x",
                P,
                "data-modifying CTE",
            ),
            (
                "EXPLAIN ANALYZE CREATE TABLE t2 AS SELECT 1",
                P,
                "write: CREATE",
            ),
            ("EXPLAIN EXECUTE p(1)", P, "session command"),
            ("EXPLAIN CREATE TABLE t2 AS SELECT 1", P, "write: EXPLAIN"),
            // COPY
            ("COPY t FROM STDIN", P, "write: COPY"),
            ("COPY t (a) FROM STDIN WITH (FORMAT csv)", P, "write: COPY"),
            ("COPY t TO '/tmp/x.csv'", P, "write: COPY"),
            ("COPY t TO PROGRAM 'gzip > /tmp/x'", P, "write: COPY"),
            ("COPY (SELECT 1) TO '/tmp/x'", P, "write: COPY"),
            (
                "COPY (DELETE FROM t RETURNING *) TO STDOUT",
                P,
                "write: COPY",
            ),
            (
                "COPY (INSERT INTO t VALUES (1) RETURNING *) TO STDOUT",
                P,
                "write: COPY",
            ),
            // plain writes
            ("INSERT INTO t VALUES (1)", P, "write: INSERT"),
            ("insert into t select * from u", P, "write: INSERT"),
            (
                "INSERT INTO t VALUES (1) ON CONFLICT (a) DO UPDATE SET b = excluded.b",
                P,
                "write: INSERT",
            ),
            ("UPDATE t SET a = a + 1 WHERE b = $1", P, "write: UPDATE"),
            ("DELETE FROM t WHERE a = 1 RETURNING *", P, "write: DELETE"),
            (
                "MERGE INTO t USING u ON t.a = u.a WHEN MATCHED THEN UPDATE SET b = u.b",
                P,
                "write: MERGE",
            ),
            ("TRUNCATE t", P, "write: TRUNCATE"),
            ("CREATE TABLE t2 (a int)", P, "write: CREATE"),
            ("CREATE TEMP TABLE t2 (a int)", P, "write: CREATE"),
            ("ALTER TABLE t ADD COLUMN c int", P, "write: ALTER"),
            ("DROP TABLE IF EXISTS t2", P, "write: DROP"),
            ("CREATE INDEX ON t (a)", P, "write: CREATE"),
            ("GRANT SELECT ON t TO public", P, "write: GRANT"),
            ("REVOKE ALL ON t FROM public", P, "write: REVOKE"),
            ("COMMENT ON TABLE t IS 'x'", P, "write: COMMENT"),
            ("ANALYZE t", P, "write: ANALYZE"),
            ("VACUUM (VERBOSE) t", P, "write: VACUUM"),
            ("LOCK TABLE t IN ACCESS SHARE MODE", P, "write: LOCK"),
            ("REFRESH MATERIALIZED VIEW mv", P, "write: REFRESH"),
            ("REINDEX TABLE t", P, "write: REINDEX"),
            ("CLUSTER t USING t_pkey", P, "write: CLUSTER"),
            ("CALL p(1)", P, "write: CALL"),
            ("DO $$BEGIN PERFORM 1; END$$", P, "write: DO"),
            ("NOTIFY chan, 'x'", P, "write: NOTIFY"),
            ("CHECKPOINT", P, "write: CHECKPOINT"),
            ("SECURITY LABEL ON TABLE t IS 'x'", P, "write: SECURITY"),
            (
                "IMPORT FOREIGN SCHEMA s FROM SERVER x INTO y",
                P,
                "write: IMPORT",
            ),
            // session and transaction commands
            ("SET search_path = public", P, "session command"),
            ("RESET ALL", P, "session command"),
            ("PREPARE p AS SELECT 1", P, "session command"),
            ("EXECUTE p(1)", P, "session command"),
            ("DEALLOCATE p", P, "session command"),
            ("LISTEN c", P, "session command"),
            ("UNLISTEN *", P, "session command"),
            ("DECLARE c CURSOR FOR SELECT 1", P, "session command"),
            ("FETCH 10 FROM c", P, "session command"),
            ("CLOSE c", P, "session command"),
            ("DISCARD ALL", P, "session command"),
            ("LOAD 'auto_explain'", P, "session command"),
            ("BEGIN", P, "transaction control"),
            ("START TRANSACTION READ ONLY", P, "transaction control"),
            ("COMMIT", P, "transaction control"),
            ("END", P, "transaction control"),
            ("ROLLBACK", P, "transaction control"),
            ("ABORT", P, "transaction control"),
            ("SAVEPOINT a", P, "transaction control"),
            ("RELEASE SAVEPOINT a", P, "transaction control"),
            ("ROLLBACK TO SAVEPOINT a", P, "transaction control"),
            ("PREPARE TRANSACTION 'x'", P, "transaction control"),
            ("COMMIT PREPARED 'x'", P, "transaction control"),
            // views only the primary fills
            (
                "SELECT gid FROM pg_prepared_xacts WHERE database = current_database()",
                P,
                "primary-only view pg_prepared_xacts",
            ),
            (
                "select * from PG_CATALOG.PG_STAT_REPLICATION",
                P,
                "primary-only view pg_stat_replication",
            ),
            ("SELECT replication, application FROM t", R, "read: SELECT"),
            // multi-statement
            (
                "SELECT 1; INSERT INTO t VALUES (1)",
                P,
                "multi-statement with a write",
            ),
            (
                "SELECT 1; SELECT nextval('s')",
                P,
                "multi-statement with a write",
            ),
            ("SELECT 1; SET x = 1", P, "multi-statement with a write"),
            ("INSERT INTO t VALUES (1); SELECT 1", P, "write: INSERT"),
            ("BEGIN; SELECT 1; COMMIT", P, "transaction control"),
            // unparsable
            ("SELECT 'abc", P, "unparsable"),
            ("SELECT \"abc", P, "unparsable"),
            ("SELECT 1 /* open", P, "unparsable"),
            ("SELECT $$abc", P, "unparsable"),
            ("SELECT $x$abc$y$", P, "unparsable"),
            ("SELECT (1", P, "unparsable"),
            ("SELECT 1)", P, "unparsable"),
            ("SELECT 1; SELECT (", P, "unparsable"),
            ("SELECT E'\\'", P, "unparsable"),
            ("/* open", P, "unparsable"),
            // unrecognized
            ("FOO BAR", P, "unrecognized statement"),
            ("42", P, "unrecognized statement"),
            ("(1)", P, "unrecognized statement"),
        ],
    );
}

#[test]
fn hints() {
    let c = Classifier::default();
    let cases: &[(&str, Option<Route>, Route, &str)] = &[
        (
            "/* switchyard:primary */ SELECT 1",
            Some(P),
            P,
            "hint /* switchyard:primary */",
        ),
        (
            "/* switchyard:replica */ INSERT INTO t VALUES (1)",
            Some(R),
            R,
            "hint /* switchyard:replica */",
        ),
        (
            "/*switchyard:primary*/SELECT 1",
            Some(P),
            P,
            "hint /* switchyard:primary */",
        ),
        (
            "/* SwitchYard: Replica */ SELECT 1",
            Some(R),
            R,
            "hint /* switchyard:replica */",
        ),
        (
            "-- switchyard:primary\nSELECT 1",
            Some(P),
            P,
            "hint /* switchyard:primary */",
        ),
        (
            "/* app=x */ /* switchyard:primary */ SELECT 1",
            Some(P),
            P,
            "hint /* switchyard:primary */",
        ),
        (
            "\n  /* switchyard:primary */\n SELECT 1",
            Some(P),
            P,
            "hint /* switchyard:primary */",
        ),
        ("SELECT /* switchyard:primary */ 1", None, R, "read: SELECT"),
        (
            "SELECT 1; /* switchyard:primary */ SELECT 2",
            None,
            R,
            "read: SELECT",
        ),
        (
            "/* switchyard:elsewhere */ SELECT 1",
            None,
            R,
            "read: SELECT",
        ),
        (
            "/* switchyard:primary x */ SELECT 1",
            None,
            R,
            "read: SELECT",
        ),
        (
            "'/* switchyard:primary */' SELECT 1",
            None,
            P,
            "unrecognized statement",
        ),
        (
            "/* switchyard:replica */ SELECT 'x",
            Some(R),
            P,
            "unparsable",
        ),
        ("/* switchyard:primary */", Some(P), R, "empty"),
    ];
    let mut failures = Vec::new();
    for &(sql, hint, route, reason) in cases {
        let a = c.analyze(sql);
        if a.hint != hint || a.route != route || a.reason.to_string() != reason {
            failures.push(format!(
                "{sql:?}: got {:?} {} {:?}, want {:?} {} {:?}",
                a.hint,
                a.route,
                a.reason.to_string(),
                hint,
                route,
                reason
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn configured_functions() {
    let c = Classifier::new(
        &[
            "audit_log".into(),
            "app.bump_counter".into(),
            "\"MixedCase\"".into(),
        ],
        &["nextval".into(), "stats.pg_stat_reset".into()],
    );
    check(
        &c,
        &[
            ("SELECT audit_log('x')", P, "writing function audit_log"),
            (
                "SELECT other.audit_log('x')",
                P,
                "writing function audit_log",
            ),
            (
                "SELECT app.bump_counter(1)",
                P,
                "writing function bump_counter",
            ),
            (
                "SELECT \"app\".bump_counter(1)",
                P,
                "writing function bump_counter",
            ),
            ("SELECT bump_counter(1)", R, "read: SELECT"),
            ("SELECT other.bump_counter(1)", R, "read: SELECT"),
            ("SELECT \"MixedCase\"()", P, "writing function MixedCase"),
            ("SELECT mixedcase()", R, "read: SELECT"),
            // read_functions override the built-in list
            ("SELECT nextval('s')", R, "read: SELECT"),
            ("SELECT stats.pg_stat_reset()", R, "read: SELECT"),
            (
                "SELECT pg_stat_reset()",
                P,
                "writing function pg_stat_reset",
            ),
            ("SELECT setval('s', 1)", P, "writing function setval"),
        ],
    );
}

#[test]
fn classify_line_format() {
    let c = Classifier::default();
    assert_eq!(classify_line(&c, "SELECT 1"), "replica\tread: SELECT");
    assert_eq!(
        classify_line(&c, "select * from t for update"),
        "primary\tlocking clause FOR UPDATE"
    );
    assert_eq!(
        classify_line(&c, "INSERT INTO t VALUES (1)"),
        "primary\twrite: INSERT"
    );
}

#[test]
fn statement_counts() {
    let c = Classifier::default();
    for (sql, n) in [
        ("", 0),
        (";", 0),
        ("SELECT 1", 1),
        ("SELECT 1;", 1),
        ("SELECT 1;;SELECT 2", 2),
        ("SELECT 1; -- c", 1),
        ("BEGIN; SELECT 1; COMMIT;", 3),
        ("SELECT ';'", 1),
    ] {
        assert_eq!(c.analyze(sql).statements, n, "{sql:?}");
    }
}

#[test]
fn builtin_write_list_is_reachable() {
    use super::names::{is_builtin_write, BUILTIN_WRITE_FUNCTIONS};
    for &name in BUILTIN_WRITE_FUNCTIONS {
        assert_eq!(is_builtin_write(name), Some(name), "{name}");
        let sql = format!("SELECT {name}(1)");
        let a = Classifier::default().analyze(&sql);
        assert_eq!(a.route, P, "{sql}");
    }
    for name in [
        "count",
        "sum",
        "coalesce",
        "lower",
        "pg_sleep",
        "pg_last_wal_replay_lsn",
        "lo_get",
        "set_config",
        "now",
        "in",
        "exists",
    ] {
        assert_eq!(is_builtin_write(name), None, "{name}");
    }
}

#[test]
fn transaction_words_are_analysed_as_the_full_classifier_does() {
    let c = Classifier::default();
    for word in ["BEGIN", "COMMIT", "END", "ROLLBACK", "ABORT"] {
        let lower = word.to_lowercase();
        for sql in [
            word.to_string(),
            format!("{word};"),
            format!("  {lower} ;\n"),
            format!("\t{lower}"),
        ] {
            assert_eq!(c.analyze(&sql), c.analyze_full(&sql), "{sql:?}");
            assert_eq!(
                c.analyze_text(sql.as_bytes()),
                c.analyze_full(&sql),
                "{sql:?}"
            );
        }
        // The shortcut answers what the full analysis would, not just anything.
        assert_ne!(c.analyze(word).txn, TxnControl::None, "{word}");
    }
    // Longer statements and other words go the full way.
    for sql in [
        "BEGIN; SELECT 1",
        "BEGIN READ ONLY",
        "END IF",
        "ENDX",
        "COMMIT PREPARED 'x'",
    ] {
        assert_eq!(c.analyze(sql), c.analyze_full(sql), "{sql:?}");
    }
}

/// Text in another client encoding (here LATIN1, where `é` is the single byte 0xe9) is not
/// UTF-8: it is analysed with that byte replaced, as the same statement would be in UTF-8.
#[test]
fn text_in_another_client_encoding_is_analysed_by_its_structure() {
    use super::{Deallocate, Effects, PinReason};
    let c = Classifier::default();
    let a = c.analyze_text(b"UPDATE t SET v = 'caf\xe9'; SELECT 1");
    assert_eq!(
        (a.route, a.reason.to_string().as_str()),
        (P, "write: UPDATE")
    );
    assert_eq!(a.statements, 2);
    let a = c.analyze_text(b"SET application_name = 'caf\xe9'");
    assert!(a.effects.contains(Effects::SETTINGS), "{a:?}");
    let a = c.analyze_text(b"SELECT pg_advisory_lock(1) /* caf\xe9 */");
    assert_eq!(a.pin, Some(PinReason::AdvisoryLock));
    let a = c.analyze_text(b"/* switchyard:primary */ SELECT 'caf\xe9'");
    assert_eq!((a.route, a.hint), (P, Some(P)));
    let a = c.analyze_text(b"DEALLOCATE \"caf\xe9\"");
    assert_eq!(a.deallocate, Some(Deallocate::Name("caf\u{fffd}".into())));
    let a = c.analyze_text(b"SELECT 'caf\xe9' FROM t");
    assert_eq!(
        (a.route, a.reason.to_string().as_str()),
        (R, "read: SELECT")
    ); // The span of an EXECUTE name is one of the text as received (each foreign byte became
       // three in the analysed copy).
    let text = b"/*\xff\xff\xff\xff*/EXECUTE s(1) /* \xe9 */";
    let a = c.analyze_text(text);
    let e = a.execute.expect("an EXECUTE");
    assert_eq!((&*e.name, &text[e.span]), ("s", &b"s"[..]));
    let a = c.analyze_text(b"EXECUTE caf\xe9");
    assert_eq!(a.execute.map(|e| e.span), Some(8..12));
}

/// Which strings only set settings (not writes for read-your-writes).
#[test]
fn only_sets_settings() {
    let c = Classifier::default();
    for sql in [
        "SET search_path = a, public",
        "set application_name to 'x';",
        "SET SESSION statement_timeout = '1s'",
        "SET app.tenant_id = '42'",
        "RESET ALL",
        "RESET work_mem",
    ] {
        assert!(c.analyze(sql).only_sets_settings(), "{sql:?}");
    }
    for sql in [
        "SET x = 1; INSERT INTO t VALUES (1)",
        "UPDATE t SET x = set_config('a.b', 'c', false)",
        "SELECT set_config('a.b', 'c', false)",
        "EXECUTE p",
        "DISCARD ALL",
        "SET ROLE r",
        "SET SESSION AUTHORIZATION r",
        "/* switchyard:primary */ SET a.b = 1",
        "LISTEN c",
        "INSERT INTO t VALUES (1)",
        "SELECT 1",
    ] {
        assert!(!c.analyze(sql).only_sets_settings(), "{sql:?}");
    }
}

/// Which strings are one read only the primary answers (not writes for read-your-writes).
#[test]
fn only_asks_the_primary() {
    // A function the configuration says writes is a write, whatever else it answers.
    let configured = Classifier::new(&["pg_backend_pid".into()], &[]);
    let a = configured.analyze("SELECT pg_backend_pid()");
    assert!(!a.only_asks_the_primary());
    assert_eq!(a.route, Route::Primary);
    assert_eq!(a.reason.to_string(), "writing function pg_backend_pid");
    assert!(configured
        .analyze("SELECT pg_is_in_recovery()")
        .only_asks_the_primary());
    let c = Classifier::default();
    for sql in [
        "SELECT pg_is_in_recovery()",
        "SHOW transaction_read_only",
        "select current_setting('transaction_read_only')",
        "SELECT * FROM pg_locks WHERE NOT granted",
        "SELECT gid FROM pg_prepared_xacts",
        "SELECT name, setting FROM pg_settings",
        "SELECT pg_backend_pid()",
        "SELECT pg_current_wal_lsn()::text",
    ] {
        assert!(c.analyze(sql).only_asks_the_primary(), "{sql:?}");
    }
    for sql in [
        "SELECT pg_is_in_recovery(); INSERT INTO t VALUES (1)",
        "INSERT INTO t SELECT pid FROM pg_locks",
        "SELECT nextval('s')",
        "SELECT pg_backend_pid(), nextval('s')",
        "SELECT nextval('s'), pg_is_in_recovery()",
        "SELECT pg_is_in_recovery() FROM t FOR UPDATE",
        "SELECT 1",
        "/* switchyard:primary */ SELECT pg_is_in_recovery()",
        "SELECT * FROM pg_locks FOR UPDATE",
        "SET x = 1",
    ] {
        assert!(!c.analyze(sql).only_asks_the_primary(), "{sql:?}");
    }
}

/// Which questions can hide no write (a view's or a function's of the database's own).
#[test]
fn plain_questions() {
    use super::names::plain_question;
    for sql in [
        "SHOW transaction_read_only",
        "  show all",
        "SELECT pg_is_in_recovery()",
        "select pg_catalog.pg_backend_pid(), current_setting('transaction_read_only')",
        "SELECT pg_current_wal_lsn()::text",
    ] {
        assert!(plain_question(sql.as_bytes()), "{sql:?}");
    }
    for sql in [
        "SELECT pg_backend_pid(), * FROM v",
        "SELECT * FROM pg_locks",
        "SELECT pg_is_in_recovery(), my_logger()",
        "SELECT pg_is_in_recovery ()",
        "SELECT pg_is_in_recovery() WHERE log_it(1)",
    ] {
        assert!(!plain_question(sql.as_bytes()), "{sql:?}");
    }
}

/// EXPLAIN of an EXPLAIN (which PostgreSQL refuses) is not looked into: nested thousands of
/// times, looking into each level overflowed the stack and aborted the proxy.
#[test]
fn nested_explain_does_not_overflow_the_stack() {
    let c = Classifier::default();
    check(
        &c,
        &[
            (
                "EXPLAIN ANALYZE EXPLAIN ANALYZE SELECT 1",
                P,
                "write: EXPLAIN",
            ),
            ("EXPLAIN (ANALYZE) EXPLAIN SELECT 1", P, "write: EXPLAIN"),
            ("EXPLAIN EXPLAIN SELECT 1", P, "write: EXPLAIN"),
        ],
    );
    let sql = "EXPLAIN ANALYZE ".repeat(300_000) + "SELECT 1";
    // (A thread of its own: the overflow aborts the process, whatever the test harness.)
    let route = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || Classifier::default().analyze(&sql).route)
        .expect("thread")
        .join()
        .expect("no panic");
    assert_eq!(route, P);
}

/// Statements a hot standby refuses though a read-only transaction allows them, and what only
/// the primary answers, in any statement of the string: a read-only transaction they begin
/// runs on the primary.
#[test]
fn primary_only_in_a_read_only_transaction() {
    let c = Classifier::default();
    for sql in [
        "LOCK TABLE t",
        "lock t in share mode",
        "LOCK TABLE ONLY t, u IN SHARE UPDATE EXCLUSIVE MODE NOWAIT",
        "LOCK t IN SHARE ROW EXCLUSIVE MODE",
        "LOCK t IN EXCLUSIVE MODE",
        "LOCK t IN ACCESS EXCLUSIVE MODE",
        "NOTIFY ch",
        "NOTIFY ch, 'payload'",
        "LISTEN ch",
        "PREPARE TRANSACTION 'gid'",
        "CLUSTER t USING t_pkey",
        "REINDEX TABLE t",
        "ANALYZE t",
        "SET TRANSACTION SNAPSHOT '00000003-0000001B-1'",
        "SELECT pg_backend_pid()",
        "SELECT pg_export_snapshot()",
        "SELECT 1; SELECT pg_backend_pid()",
        "SELECT 1; NOTIFY ch",
        "SELECT 1; SELECT * FROM pg_stat_replication",
        "SELECT 1; SHOW transaction_read_only",
        "EXPLAIN ANALYZE SELECT pg_is_in_recovery()",
        "SELECT 'unterminated",
        // A mode a standby refuses, also after other statements of the request.
        "SET TRANSACTION READ WRITE",
        "set local statement_timeout = '5s'; set transaction read write; insert into t values (1)",
        "set local lock_timeout = '1s'; set local transaction_read_only = off",
        "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ; SET TRANSACTION READ WRITE",
        "SET CONSTRAINTS ALL DEFERRED; SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        "SET LOCAL statement_timeout = '5s'; SET transaction_isolation = 'serializable'",
    ] {
        assert!(c.analyze(sql).primary_only, "{sql:?}");
    }
    for sql in [
        "SELECT 1",
        "SELECT a FROM t WHERE b = $1",
        "SELECT 1; SELECT 2",
        "LOCK t IN ACCESS SHARE MODE",
        "LOCK TABLE t IN ROW SHARE MODE",
        "LOCK t IN ROW EXCLUSIVE MODE NOWAIT",
        "UNLISTEN ch",
        "EXPLAIN SELECT pg_backend_pid()",
        "SET TRANSACTION READ ONLY",
        "SET LOCAL statement_timeout = '5s'; SET TRANSACTION READ ONLY",
        "SET transaction_read_only = on",
        "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
        "SAVEPOINT a",
        "INSERT INTO t VALUES (1)",
    ] {
        assert!(!c.analyze(sql).primary_only, "{sql:?}");
    }
}

/// What each server keeps for itself (its replication slots, its locks: the session's are
/// the primary's) is read on the primary, by the full classifier and past the shortcut for
/// plain `SELECT`s.
#[test]
fn per_server_state_is_read_on_the_primary() {
    let slots = "primary-only view pg_replication_slots";
    check(
        &Classifier::default(),
        &[
            ("SELECT slot_name FROM pg_replication_slots", P, slots),
            (
                "select * from PG_CATALOG.pg_replication_slots where active",
                P,
                slots,
            ),
            ("SELECT * FROM pg_locks", P, "primary-only view pg_locks"),
            (
                "SELECT count(*) FROM pg_catalog.pg_locks WHERE locktype = 'advisory'",
                P,
                "primary-only view pg_locks",
            ),
            (
                "SELECT pg_blocking_pids(42)",
                P,
                "server role pg_blocking_pids",
            ),
            (
                "SELECT * FROM pg_lock_status()",
                P,
                "server role pg_lock_status",
            ),
            (
                "SELECT * FROM pg_get_replication_slots()",
                P,
                "server role pg_get_replication_slots",
            ),
            ("SELECT locks FROM t", R, "read: SELECT"),
            ("SELECT my_pg_locks FROM t", R, "read: SELECT"),
            // Named in double quotes, as spelt.
            (
                "SELECT * FROM \"pg_locks\"",
                P,
                "primary-only view pg_locks",
            ),
            (
                "SELECT * FROM pg_catalog.\"pg_stat_replication\"",
                P,
                "primary-only view pg_stat_replication",
            ),
            (
                "SELECT setting FROM \"pg_settings\" WHERE name = 'transaction_read_only'",
                P,
                "server role pg_settings",
            ),
            ("SELECT * FROM \"PG_LOCKS\"", R, "read: SELECT"),
        ],
    );
    for sql in [
        "SELECT slot_name FROM pg_replication_slots",
        "SELECT * FROM pg_locks",
        "SELECT pid FROM pg_catalog.pg_locks WHERE granted",
    ] {
        assert!(
            super::plain::plain_select(sql.as_bytes()).is_none(),
            "{sql}"
        );
    }
}
