//! Session effects, pins, transaction control, DEALLOCATE and switchyard commands.

use std::borrow::Cow;

use super::{Classifier, Deallocate, Effects, PinReason, SwitchyardCommand as Sy, TxnControl as T};

const NONE: Effects = Effects::NONE;
const S: Effects = Effects::SETTINGS;
const PIN: Effects = Effects::PIN;
const DA: Effects = Effects::DISCARD_ALL;
const DEA: Effects = Effects::DEALLOCATE_ALL;
const SCHEMA: Effects = Effects::SCHEMA;
/// A schema change that may still create a temporary object (`search_path` with `pg_temp`).
const SCHEMA_STATE: Effects = Effects::SCHEMA.union(Effects::STATE);
const SEQ: Effects = Effects::SEQUENCE_STATE;

#[test]
fn effects_table() {
    use PinReason::*;
    let cases: &[(&str, Effects, Option<PinReason>)] = &[
        ("SELECT 1", NONE, None),
        ("INSERT INTO t VALUES (1)", NONE, None),
        // sequence state of the session
        ("SELECT currval('s')", SEQ, None),
        ("select LASTVAL()", SEQ, None),
        ("INSERT INTO t VALUES (pg_catalog.currval('s'))", SEQ, None),
        ("SELECT nextval('s')", NONE, None),
        ("SELECT currval FROM t", NONE, None),
        ("SELECT 'currval(1)'", NONE, None),
        ("DISCARD SEQUENCES", Effects::SEQUENCE_RESET, None),
        ("DISCARD TEMP", NONE, None),
        // copy data from the client
        ("COPY t FROM STDIN", Effects::COPY_IN, None),
        (
            "copy t (a, b) from stdin with (format csv)",
            Effects::COPY_IN,
            None,
        ),
        ("COPY t FROM '/tmp/f'", NONE, None),
        ("COPY t TO STDOUT", NONE, None),
        ("COPY (SELECT 'from stdin') TO STDOUT", NONE, None),
        // settings
        ("SET search_path = app, public", S, None),
        ("set session statement_timeout to '5s'", S, None),
        (
            "SET LOCAL statement_timeout = 0",
            Effects::LOCAL_SETTINGS,
            None,
        ),
        ("SET TIME ZONE 'UTC'", S, None),
        ("SET LOCAL TIME ZONE 'UTC'", Effects::LOCAL_SETTINGS, None),
        ("SET NAMES 'UTF8'", S, None),
        ("SET SCHEMA 'app'", S, None),
        // pg_settings's update rule calls set_config
        (
            "UPDATE pg_settings SET setting = 'x' WHERE name = 'search_path'",
            S,
            None,
        ),
        (
            "UPDATE pg_catalog.pg_settings SET setting = 'x' WHERE name = 'role'",
            S,
            None,
        ),
        ("SELECT setting FROM pg_settings", NONE, None),
        ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", NONE, None),
        (
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
            S,
            None,
        ),
        ("SET CONSTRAINTS ALL DEFERRED", NONE, None),
        ("RESET search_path", S, None),
        ("RESET ALL", S | Effects::RESET_ALL, None),
        ("RESET ROLE", S, None),
        ("select set_config('a.b', 'c', false)", S, None),
        // a DO block's body runs like a function's
        (
            "DO $$BEGIN PERFORM set_config('app.t', '1', false); END$$",
            S,
            None,
        ),
        (
            "DO LANGUAGE plpgsql 'BEGIN SET search_path = x; END'",
            S,
            None,
        ),
        ("DO $$BEGIN UPDATE t SET a = 1; END$$", NONE, None),
        (
            "DO $$BEGIN SET LOCAL work_mem = '8MB'; END$$",
            Effects::LOCAL_SETTINGS,
            None,
        ),
        (
            "DO $$BEGIN CREATE TEMP TABLE t (a int); END$$",
            Effects::STATE,
            None,
        ),
        // ... and its calls pin as the client's own would.
        (
            "DO $$BEGIN PERFORM dblink_connect('c1', 'dbname=x'); END$$",
            PIN,
            Some(Dblink),
        ),
        (
            "DO $$BEGIN PERFORM pg_replication_origin_session_setup('o'); END$$",
            PIN,
            Some(ServerSession),
        ),
        (
            "DO $d$BEGIN EXECUTE 'SELECT pg_backup_start(''l'', true)'; END$d$",
            PIN,
            Some(ServerSession),
        ),
        (
            "DO $$BEGIN PERFORM dblink_exec('c1', 'SELECT 1'); END$$",
            NONE,
            None,
        ),
        ("SELECT pg_catalog.set_config('a.b', 'c', true)", S, None),
        ("SELECT \"set_config\"('a', 'b', false)", S, None),
        (
            "UPDATE t SET a = (SELECT set_config('x.y', '1', false))::int",
            S,
            None,
        ),
        ("SELECT 'set_config(1)'", NONE, None),
        ("DISCARD ALL", S | DA | Effects::SEQUENCE_RESET, None),
        ("DISCARD PLANS", NONE, None),
        ("DISCARD TEMP", NONE, None),
        ("DEALLOCATE ALL", DEA, None),
        ("DEALLOCATE PREPARE ALL", DEA, None),
        ("DEALLOCATE p1", NONE, None),
        // pins
        ("CREATE TEMP TABLE tt (a int)", PIN, Some(TempTable)),
        (
            "CREATE TEMPORARY TABLE tt AS SELECT 1",
            PIN,
            Some(TempTable),
        ),
        (
            "create global temporary table tt (a int)",
            PIN,
            Some(TempTable),
        ),
        ("CREATE LOCAL TEMP TABLE tt (a int)", PIN, Some(TempTable)),
        ("CREATE TEMP VIEW v AS SELECT 1", PIN, Some(TempTable)),
        (
            "CREATE OR REPLACE TEMP VIEW v AS SELECT 1",
            PIN,
            Some(TempTable),
        ),
        (
            "CREATE TEMP RECURSIVE VIEW v (n) AS SELECT 1",
            PIN,
            Some(TempTable),
        ),
        ("CREATE TEMP SEQUENCE s", PIN, Some(TempTable)),
        ("CREATE TABLE pg_temp.tt (a int)", PIN, Some(TempTable)),
        ("CREATE TEMP TABLE tt (a int) ON COMMIT DROP", NONE, None),
        (
            "CREATE TEMP TABLE tt (a int) ON COMMIT DELETE ROWS",
            PIN,
            Some(TempTable),
        ),
        ("CREATE TABLE t2 (a int)", SCHEMA_STATE, None),
        ("CREATE TABLE temp (a int)", SCHEMA_STATE, None),
        ("CREATE UNLOGGED TABLE t2 (a int)", SCHEMA_STATE, None),
        ("CREATE TABLE pg_temp_3.t2 (a int)", PIN, Some(TempTable)),
        ("CREATE TABLE \"pg_temp\".t2 (a int)", PIN, Some(TempTable)),
        ("ALTER TABLE t ADD COLUMN b int", SCHEMA, None),
        ("DROP TABLE IF EXISTS t", SCHEMA, None),
        ("DROP TABLE pg_temp.tt", SCHEMA, None),
        ("COMMENT ON TABLE t IS 'x'", NONE, None),
        ("SELECT 1 INTO TEMP tt", PIN, Some(TempTable)),
        (
            "SELECT * INTO TEMPORARY TABLE tt FROM t",
            PIN,
            Some(TempTable),
        ),
        ("SELECT * INTO LOCAL TEMP tt FROM t", PIN, Some(TempTable)),
        ("SELECT * INTO tt FROM t", Effects::STATE, None),
        ("SELECT 1 AS a INTO pg_temp.tt", Effects::STATE, None),
        (
            "EXPLAIN ANALYZE CREATE TEMP TABLE tt AS SELECT 1",
            PIN,
            Some(TempTable),
        ),
        ("SELECT pg_advisory_lock(1)", PIN, Some(AdvisoryLock)),
        ("SELECT pg_advisory_lock_shared(1)", PIN, Some(AdvisoryLock)),
        ("SELECT pg_try_advisory_lock(1, 2)", PIN, Some(AdvisoryLock)),
        (
            "SELECT pg_try_advisory_lock_shared(1)",
            PIN,
            Some(AdvisoryLock),
        ),
        ("SELECT setseed(0.5)", PIN, Some(Seed)),
        ("SELECT pg_catalog.setseed(0.5), random()", PIN, Some(Seed)),
        ("SELECT 'setseed(1)'", NONE, None),
        ("SET seed TO 0.5", S | PIN, Some(Seed)),
        (
            "SET LOCAL seed = 0.25",
            S | PIN | Effects::LOCAL_SETTINGS,
            Some(Seed),
        ),
        ("SELECT pg_advisory_xact_lock(1)", NONE, None),
        ("SELECT pg_try_advisory_xact_lock(1)", NONE, None),
        ("SELECT pg_try_advisory_xact_lock_shared(1)", NONE, None),
        ("SELECT 'pg_advisory_lock(1)'", NONE, None),
        ("EXPLAIN SELECT pg_advisory_lock(1)", NONE, None),
        ("LISTEN chan", PIN, Some(Listen)),
        ("UNLISTEN chan", NONE, None),
        ("PREPARE p (int) AS SELECT $1", PIN, Some(Prepare)),
        ("PREPARE TRANSACTION 'x'", NONE, None),
        ("PREPARE transaction AS SELECT 1", PIN, Some(Prepare)),
        (
            "SELECT pg_backup_start('nightly')",
            PIN,
            Some(ServerSession),
        ),
        (
            "SELECT pg_start_backup('x', false, false)",
            PIN,
            Some(ServerSession),
        ),
        (
            "SELECT pg_replication_origin_session_setup('o')",
            PIN,
            Some(ServerSession),
        ),
        ("SELECT * FROM pg_backup_stop()", NONE, None),
        ("PREPARE transaction (int) AS SELECT $1", PIN, Some(Prepare)),
        (
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
            PIN,
            Some(HoldCursor),
        ),
        (
            "DECLARE c NO SCROLL CURSOR WITH HOLD FOR SELECT 1",
            PIN,
            Some(HoldCursor),
        ),
        ("DECLARE c CURSOR WITHOUT HOLD FOR SELECT 1", NONE, None),
        (
            "DECLARE c CURSOR FOR WITH hold AS (SELECT 1) SELECT * FROM hold",
            NONE,
            None,
        ),
        ("SET ROLE app", S | PIN, Some(Role)),
        ("SET SESSION ROLE app", S | PIN, Some(Role)),
        ("SET LOCAL ROLE app", Effects::LOCAL_SETTINGS, None),
        ("SET SESSION AUTHORIZATION app", S | PIN, Some(Role)),
        ("SET SESSION SESSION AUTHORIZATION app", S | PIN, Some(Role)),
        (
            "SET LOCAL SESSION AUTHORIZATION app",
            Effects::LOCAL_SETTINGS,
            None,
        ),
        ("LOAD 'auto_explain'", PIN, Some(Load)),
        ("SELECT dblink_connect('c', 'dbname=x')", PIN, Some(Dblink)),
        (
            "SELECT public.dblink_connect_u('c', 'dbname=x')",
            PIN,
            Some(Dblink),
        ),
        (
            "SELECT 1 FROM t WHERE dblink_connect('c', 'dbname=x') = 'OK'",
            PIN,
            Some(Dblink),
        ),
        // unions over statements
        (
            "SET a.b = 1; LISTEN c; SELECT pg_advisory_lock(1)",
            S | PIN,
            Some(Listen),
        ),
        // (DISCARD ALL fails in a multi-statement Query: the statements stay.)
        ("DISCARD ALL; SET x = 1", S | Effects::SEQUENCE_RESET, None),
        ("DEALLOCATE ALL; SET x = 1", S | DEA, None),
        (
            "SELECT 1; CREATE TEMP TABLE tt (a int); SET LOCAL x = 1",
            PIN | Effects::LOCAL_SETTINGS,
            Some(TempTable),
        ),
        // strings and comments do not count
        (
            "SELECT 'LISTEN x', $$ SET ROLE x $$ /* LOAD 'x' */",
            NONE,
            None,
        ),
    ];
    let c = Classifier::default();
    let mut failures = Vec::new();
    for &(sql, effects, pin) in cases {
        let a = c.analyze(sql);
        if a.effects != effects || a.pin != pin {
            failures.push(format!(
                "{sql:?}: got {:?} {:?}, want {:?} {:?}",
                a.effects, a.pin, effects, pin
            ));
        }
        assert_eq!(a.pin.is_some(), a.effects.contains(PIN), "{sql:?}");
        // Pinned on a replica, the client's writes would fail there.
        if a.pin.is_some() && a.route != super::Route::Primary {
            failures.push(format!("{sql:?}: pins {:?} on a replica", a.pin));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn pin_labels() {
    let labels: Vec<_> = PinReason::ALL.iter().map(|p| p.as_str()).collect();
    assert_eq!(
        labels,
        [
            "temp_table",
            "advisory_lock",
            "listen",
            "prepare",
            "hold_cursor",
            "role",
            "load",
            "dblink",
            "server_session",
            "seed"
        ]
    );
    let c = Classifier::default();
    assert_eq!(c.analyze("LISTEN x").pin_reason(), Some("listen"));
    assert_eq!(c.analyze("SELECT 1").pin_reason(), None);
}

#[test]
fn effects_flags_api() {
    let e = S | PIN;
    assert!(e.contains(S) && e.contains(PIN) && !e.contains(DA));
    assert!(e.contains(S | PIN));
    assert!(!e.contains(S | DA));
    assert!(e.intersects(S | DA));
    assert!(NONE.is_empty() && !e.is_empty());
    assert_eq!(S.union(DA).bits(), 5);
    let mut m = Effects::empty();
    m.insert(DA);
    m |= S;
    assert_eq!(m, S | DA);
    assert_eq!(format!("{:?}", m), "Effects(SETTINGS | DISCARD_ALL)");
    m.remove(DA);
    assert_eq!(m, S);
    assert_eq!(format!("{:?}", NONE), "Effects(NONE)");
}

#[test]
fn transaction_control() {
    let cases: &[(&str, T)] = &[
        ("SELECT 1", T::None),
        ("BEGIN", T::Begin { read_only: false }),
        ("begin;", T::Begin { read_only: false }),
        ("BEGIN WORK", T::Begin { read_only: false }),
        ("BEGIN TRANSACTION READ ONLY", T::Begin { read_only: true }),
        ("BEGIN READ WRITE", T::Begin { read_only: false }),
        (
            "BEGIN ISOLATION LEVEL READ COMMITTED",
            T::Begin { read_only: false },
        ),
        (
            "BEGIN ISOLATION LEVEL READ COMMITTED, READ ONLY",
            T::Begin { read_only: true },
        ),
        (
            "BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE",
            T::Begin { read_only: true },
        ),
        ("START TRANSACTION", T::Begin { read_only: false }),
        ("start transaction read only", T::Begin { read_only: true }),
        (
            "START TRANSACTION ISOLATION LEVEL REPEATABLE READ",
            T::Begin { read_only: false },
        ),
        ("BEGIN; SELECT 1", T::Begin { read_only: false }),
        ("SELECT 1; BEGIN", T::None),
        ("SET TRANSACTION READ ONLY", T::SetTransactionReadOnly),
        // A standby refuses SERIALIZABLE, read only or not.
        (
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY",
            T::SetTransactionReadWrite,
        ),
        (
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
            T::SetTransactionReadOnly,
        ),
        ("SET TRANSACTION READ WRITE", T::SetTransactionReadWrite),
        (
            "set local transaction read write",
            T::SetTransactionReadWrite,
        ),
        ("SET TRANSACTION ISOLATION LEVEL READ COMMITTED", T::None),
        (
            "SET LOCAL transaction_isolation = 'SERIALIZABLE'",
            T::SetTransactionReadWrite,
        ),
        ("SET transaction_isolation TO 'read committed'", T::None),
        (
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
            T::None,
        ),
        ("SET transaction_read_only = on", T::SetTransactionReadOnly),
        (
            "SET LOCAL transaction_read_only TO 'true'",
            T::SetTransactionReadOnly,
        ),
        (
            "SET transaction_read_only = off",
            T::SetTransactionReadWrite,
        ),
        ("COMMIT", T::Commit),
        ("COMMIT WORK", T::Commit),
        ("COMMIT AND CHAIN", T::Commit),
        ("END", T::Commit),
        ("end transaction", T::Commit),
        ("COMMIT PREPARED 'x'", T::None),
        ("PREPARE TRANSACTION 'x'", T::PrepareTransaction),
        ("PREPARE transaction AS SELECT 1", T::None),
        ("ROLLBACK", T::Rollback),
        ("ROLLBACK WORK", T::Rollback),
        ("ROLLBACK AND NO CHAIN", T::Rollback),
        ("ABORT", T::Rollback),
        ("ROLLBACK TO SAVEPOINT a", T::None),
        ("ROLLBACK TO a", T::None),
        ("ROLLBACK WORK TO SAVEPOINT a", T::None),
        ("ROLLBACK PREPARED 'x'", T::None),
        ("SAVEPOINT a", T::None),
        ("RELEASE SAVEPOINT a", T::None),
        (
            "/* switchyard:primary */ BEGIN",
            T::Begin { read_only: false },
        ),
    ];
    let c = Classifier::default();
    for &(sql, txn) in cases {
        assert_eq!(c.analyze(sql).txn, txn, "{sql:?}");
    }
}

fn b(s: &str) -> Cow<'_, str> {
    Cow::Borrowed(s)
}

#[test]
fn deallocate() {
    let cases: &[(&str, Option<Deallocate<'static>>)] = &[
        ("DEALLOCATE p1", Some(Deallocate::Name(b("p1")))),
        ("deallocate prepare p1;", Some(Deallocate::Name(b("p1")))),
        ("DEALLOCATE MyStmt", Some(Deallocate::Name(b("mystmt")))),
        ("DEALLOCATE \"MyStmt\"", Some(Deallocate::Name(b("MyStmt")))),
        ("DEALLOCATE \"a\"\"b\"", Some(Deallocate::Name(b("a\"b")))),
        ("DEALLOCATE \"all\"", Some(Deallocate::Name(b("all")))),
        ("DEALLOCATE prepare", Some(Deallocate::Name(b("prepare")))),
        ("DEALLOCATE ALL", Some(Deallocate::All)),
        ("DEALLOCATE PREPARE ALL ;", Some(Deallocate::All)),
        ("/* c */ DEALLOCATE all -- bye", Some(Deallocate::All)),
        ("DEALLOCATE p1; SELECT 1", None),
        ("SELECT 1; DEALLOCATE p1", None),
        ("DEALLOCATE p1 p2", None),
        ("DEALLOCATE", None),
        ("DEALLOCATE 'p1'", None),
        ("SELECT 'DEALLOCATE p1'", None),
    ];
    let c = Classifier::default();
    for (sql, want) in cases {
        assert_eq!(&c.analyze(sql).deallocate, want, "{sql:?}");
    }
    // Owned only when folding/unescaping was needed.
    let a = c.analyze("DEALLOCATE p1");
    assert!(matches!(
        a.deallocate,
        Some(Deallocate::Name(Cow::Borrowed("p1")))
    ));
}

#[test]
fn execute() {
    // (SQL, the name, the text at the span)
    let cases: &[(&str, Option<(&str, &str)>)] = &[
        ("EXECUTE foobar", Some(("foobar", "foobar"))),
        ("execute s1 (1, 'a');", Some(("s1", "s1"))),
        (
            "/* switchyard:primary */ EXECUTE MyStmt(1)",
            Some(("mystmt", "MyStmt")),
        ),
        ("EXECUTE \"My\"\"S\"", Some(("My\"S", "\"My\"\"S\""))),
        ("EXECUTE s1; SELECT 1", None),
        ("SELECT 1; EXECUTE s1", None),
        ("EXECUTE", None),
        ("EXECUTE 's1'", None),
        ("EXPLAIN EXECUTE s1", None),
        ("SELECT 'EXECUTE s1'", None),
    ];
    let c = Classifier::default();
    for (sql, want) in cases {
        let got = c.analyze(sql).execute;
        let got = got.as_ref().map(|e| (&*e.name, &sql[e.span.clone()]));
        assert_eq!(got, *want, "{sql:?}");
    }
}

#[test]
fn switchyard_commands() {
    let set = |n: &'static str, v: &'static str| {
        Some(Sy::Set {
            name: b(n),
            value: b(v),
        })
    };
    let cases: &[(&str, Option<Sy<'static>>)] = &[
        ("SET switchyard.route = 'primary'", set("route", "primary")),
        ("SET switchyard.route TO primary", set("route", "primary")),
        ("set SWITCHYARD.ROUTE to PRIMARY;", set("route", "primary")),
        ("SET switchyard.route = 'Replica'", set("route", "Replica")),
        (
            "SET SESSION switchyard.route = replica",
            set("route", "replica"),
        ),
        (
            "SET LOCAL switchyard.route = replica",
            Some(Sy::SetLocal { name: b("route") }),
        ),
        (
            "set local switchyard.consistency to default",
            Some(Sy::SetLocal {
                name: b("consistency"),
            }),
        ),
        ("SET switchyard.max_lag = 5", set("max_lag", "5")),
        ("SET switchyard.note = 'it''s'", set("note", "it's")),
        ("SET switchyard.note = E'a\\'b'", set("note", "a'b")),
        (
            "SET \"switchyard.route\" = 'primary'",
            set("route", "primary"),
        ),
        ("SET \"switchyard\".\"Route\" = \"X\"", set("Route", "X")),
        (
            "/* c */ SET switchyard.route = 'primary' -- c",
            set("route", "primary"),
        ),
        (
            // (Answered with the tag SET, as PostgreSQL answers it.)
            "SET switchyard.route TO DEFAULT",
            set("route", "default"),
        ),
        (
            "RESET switchyard.route",
            Some(Sy::Reset { name: b("route") }),
        ),
        (
            "reset Switchyard.Route;",
            Some(Sy::Reset { name: b("route") }),
        ),
        ("SHOW switchyard.route", Some(Sy::Show { name: b("route") })),
        ("show switchyard.all", Some(Sy::Show { name: b("all") })),
        ("SET switchyard.route = 'primary'; SELECT 1", None),
        ("SET switchyard.route = a, b", None),
        ("SET switchyard = 1", None),
        ("SET search_path = 'switchyard.route'", None),
        ("SET other.route = 'primary'", None),
        ("SHOW switchyard", None),
        ("SHOW switchyard.route extra", None),
        ("SELECT 'SET switchyard.route = 1'", None),
        ("RESET switchyard.route x", None),
    ];
    let c = Classifier::default();
    for (sql, want) in cases {
        assert_eq!(&c.analyze(sql).switchyard, want, "{sql:?}");
    }
    // SET switchyard.* is also a session SET (effects SETTINGS) routed as a session command.
    let a = c.analyze("SET switchyard.route = 'primary'");
    assert!(a.effects.contains(S));
    assert_eq!(a.reason.to_string(), "session command");
    let a = c.analyze("SHOW switchyard.route");
    assert_eq!(a.route, super::Route::Replica);
}

#[test]
fn dropped_database_names() {
    use super::dropped_database as d;
    assert_eq!(d("DROP DATABASE test_x").as_deref(), Some("test_x"));
    assert_eq!(
        d("drop database if exists \"Test X\" WITH (FORCE)").as_deref(),
        Some("Test X")
    );
    assert_eq!(d("DROP DATABASE Mixed").as_deref(), Some("mixed"));
    assert_eq!(d("DROP TABLE t"), None);
    assert_eq!(d("DROP DATABASE"), None);
    assert_eq!(d("DROP DATABASE IF"), None);
}
