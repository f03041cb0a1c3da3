//! Unit tests of the per-database volatile-function lists (catalog.rs).

use super::*;

/// A function read from the catalog: `settings` when its body changes settings (with the
/// custom names it names), `state` when it keeps state, `calls` the functions it calls.
fn func(name: &str, settings: Option<&[&str]>, state: bool, calls: &[&str]) -> Function {
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
    Function {
        name: name.into(),
        volatile: true,
        settings: settings.map(strings),
        state,
        computes_name: false,
        pin: None,
        calls: strings(calls),
        oid: 0,
    }
}

fn plain(name: &str) -> Function {
    func(name, None, false, &[])
}

fn primary() -> Server {
    Server::Primary
}

/// A read of `functions` on the primary, due at schema `epoch` and time `now`.
fn read(f: &DbFunctions, epoch: u64, now: u64, functions: Vec<Function>) {
    let r = f.begin_read(epoch, now, primary).expect("a read due");
    f.finish_read(Some(functions), r);
}

#[test]
fn reads_are_due_first_after_a_schema_change_and_when_old() {
    let f = DbFunctions::default();
    assert!(!f.calls_volatile(b"SELECT 1", &[]));
    let r = f.begin_read(0, 1_000, primary).unwrap();
    assert!(
        f.begin_read(0, 1_000, primary).is_none(),
        "one reader at a time"
    );
    f.finish_read(Some(vec![plain("f")]), r);
    assert!(f.begin_read(0, 2_000, primary).is_none(), "fresh");
    assert!(f.calls_volatile(b"SELECT f(1)", &[]));
    assert!(!f.calls_volatile(b"SELECT g(1)", &[]));
    assert!(!f.calls_volatile(b"SELECT f(1)", &["f".into()]));
    assert!(!f.calls_volatile(b"SELECT f(1)", &["public.f".into()]));
    let r = f
        .begin_read(1, 2_000, primary)
        .expect("a schema change since");
    f.finish_read(None, r);
    assert!(
        f.begin_read(1, 2_500, primary).is_none(),
        "a failed read is not retried at once"
    );
    let r = f.begin_read(1, 3_001, primary).expect("but after a while");
    f.finish_read(Some(vec![]), r);
    assert!(f.begin_read(1, 3_001 + MAX_AGE_MS, primary).is_none());
    let r = f.begin_read(1, 3_002 + MAX_AGE_MS, primary).expect("old");
    f.finish_read(Some(vec![]), r);
}

#[test]
fn a_due_read_waits_for_a_server_with_what_the_primary_had_then() {
    let f = DbFunctions::default();
    let replica = |replayed, primary| {
        move || Server::Replica {
            replayed,
            primary: Some(primary),
        }
    };
    // The first read runs wherever its checkout landed, on a replica behind too...
    let r = f
        .begin_read(0, 1_000, replica(100, 200))
        .expect("a first read");
    f.finish_read(Some(vec![plain("old")]), r);
    assert!(f.calls_volatile(b"SELECT old()", &[]));
    // ...but is due again soon, and then read only where the primary's position when it
    // fell due again, 300, was replayed (not the first read's 200: a replica paused at 200
    // since would read the list without what was created after).
    assert!(f.begin_read(0, 1_500, primary).is_none(), "not at once");
    assert!(
        f.begin_read(0, 2_001, replica(200, 300)).is_none(),
        "behind what the primary had when it fell due again"
    );
    let r = f
        .begin_read(0, 2_001, replica(300, 350))
        .expect("caught up");
    f.finish_read(Some(vec![plain("old"), plain("new")]), r);
    assert!(
        f.begin_read(0, 2_001 + MAX_AGE_MS, primary).is_none(),
        "fresh"
    );
    // Old: a replica paused at 300 since does not read it, however often it is checked
    // out; one that replayed 400, the primary's position when it fell due, does, though
    // the primary moved on since.
    let due = 2_002 + MAX_AGE_MS;
    assert!(f.begin_read(0, due, replica(300, 400)).is_none());
    assert!(f.begin_read(0, due + 5_000, replica(300, 900)).is_none());
    let r = f
        .begin_read(0, due + 5_000, replica(400, 900))
        .expect("caught up");
    f.finish_read(None, r);
    assert!(
        f.begin_read(0, due + 5_500, primary).is_none(),
        "a failed read is not retried at once"
    );
    assert!(f.begin_read(0, due + 6_001, replica(300, 1_000)).is_none());
    let r = f
        .begin_read(0, due + 6_001, replica(450, 1_000))
        .expect("caught up");
    f.finish_read(Some(vec![plain("new")]), r);
    assert!(!f.calls_volatile(b"SELECT old()", &[]), "dropped since");
    // The primary reads it whenever it is due; the position wanted is the one at the time.
    let r = f
        .begin_read(1, due + 6_002, primary)
        .expect("a schema change");
    f.finish_read(Some(vec![]), r);
    let due = due + 6_003 + MAX_AGE_MS;
    assert!(f.begin_read(1, due, replica(900, 1_500)).is_none());
    assert!(f.begin_read(1, due, replica(1_500, 1_500)).is_some());
}

#[test]
fn without_a_primary_seen_a_replica_reads_once_its_position_is_known() {
    let f = DbFunctions::default();
    let replica = |replayed| {
        move || Server::Replica {
            replayed,
            primary: None,
        }
    };
    let r = f.begin_read(0, 10, replica(0)).expect("a first read");
    f.finish_read(Some(vec![]), r);
    assert!(
        f.begin_read(0, 1_011, replica(0)).is_none(),
        "position unknown"
    );
    assert!(f.begin_read(0, 1_011, replica(5)).is_some());
}

#[test]
fn created_functions_survive_reads_of_the_catalog() {
    let f = DbFunctions::default();
    f.add_created(vec![plain("made_here")]);
    read(&f, 0, 10, vec![]);
    assert!(f.calls_volatile(b"SELECT made_here()", &[]));
    let r = f
        .begin_read(1, 20, primary)
        .expect("a schema change is read at once");
    f.finish_read(Some(vec![plain("other")]), r);
    assert!(f.calls_volatile(b"SELECT made_here()", &[]));
    assert!(f.calls_volatile(b"SELECT other()", &[]));
    assert!(!f.calls_volatile(b"SELECT made_here", &[]), "not a call");
}

#[test]
fn calls_of_functions_that_change_the_session_are_found() {
    let f = DbFunctions::default();
    read(
        &f,
        0,
        10,
        vec![
            plain("plain"),
            func("tenant", Some(&["app.tenant"]), false, &[]),
            func("path", Some(&[]), false, &[]),
            func("tenant", Some(&["app.user", "app.tenant"]), false, &[]),
            func("scratch", None, true, &[]),
        ],
    );
    let calls = |text: &[u8]| f.session_calls(text);
    assert_eq!(calls(b"SELECT plain(1)"), None);
    assert_eq!(calls(b"SELECT tenant"), None, "not a call");
    let c = calls(b"SELECT s.tenant(1)").unwrap();
    assert!(c.settings && !c.state);
    assert_eq!(c.names, ["app.tenant", "app.user"]);
    let c = calls(b"SELECT path()").unwrap();
    assert!(c.settings && c.names.is_empty());
    assert!(f.calls_volatile(b"SELECT path()", &[]));
    let c = calls(b"SELECT scratch(), plain()").unwrap();
    assert!(c.state && !c.settings);
    f.add_created(vec![func("made", Some(&["app.m"]), false, &[])]);
    assert_eq!(calls(b"SELECT made(), plain()").unwrap().names, ["app.m"]);
    read(&f, 1, 20, vec![]);
    assert_eq!(calls(b"SELECT made()").unwrap().names, ["app.m"], "kept");
    assert_eq!(calls(b"SELECT tenant(1)"), None, "dropped");
}

#[test]
fn a_function_has_the_effects_of_the_functions_it_calls() {
    let f = DbFunctions::default();
    read(
        &f,
        0,
        10,
        vec![
            // Callers listed before their callees: the order does not matter.
            func("login", None, false, &["lower", "mid"]),
            func("mid", None, false, &["set_tenant", "scratch"]),
            func("set_tenant", Some(&["app.tenant"]), false, &["set_config"]),
            func("scratch", None, true, &[]),
            func("loop_a", None, false, &["loop_b", "loop_a"]),
            func("loop_b", None, false, &["loop_a"]),
            func("unrelated", None, false, &["lower"]),
        ],
    );
    let c = f.session_calls(b"SELECT login('x')").unwrap();
    assert!(c.settings && c.state);
    assert_eq!(f.oid_calls(16_500), None, "no OIDs read");
    assert_eq!(c.names, ["app.tenant"]);
    let c = f.session_calls(b"SELECT mid('x')").unwrap();
    assert!(c.settings && c.state);
    assert_eq!(
        f.session_calls(b"SELECT loop_a()"),
        None,
        "recursion without effects"
    );
    assert_eq!(f.session_calls(b"SELECT unrelated()"), None);
    // A function created through switchyard that calls a known one, and one that a known
    // caller calls but which was unknown until created.
    f.add_created(vec![
        func("outer", None, false, &["login"]),
        func("loop_b", Some(&["app.b"]), false, &["loop_a"]),
    ]);
    assert_eq!(
        f.session_calls(b"SELECT outer()").unwrap().names,
        ["app.tenant"]
    );
    assert_eq!(
        f.session_calls(b"SELECT loop_a()").unwrap().names,
        ["app.b"]
    );
}

#[test]
fn function_calls_by_oid_have_the_effects_of_the_function() {
    let f = DbFunctions::default();
    read(
        &f,
        0,
        10,
        vec![
            Function {
                oid: 16_401,
                ..func("tenant", Some(&["app.tenant"]), false, &[])
            },
            Function {
                oid: 16_402,
                ..plain("plain")
            },
        ],
    );
    assert_eq!(f.oid_calls(16_401).unwrap().names, ["app.tenant"]);
    assert_eq!(f.oid_calls(16_402), None);
    assert_eq!(f.oid_calls(16_403), None);
}

/// A function whose body pins its caller for good (a named dblink connection, a backup, a
/// replication origin) pins the callers of its callers too, with its reason.
#[test]
fn a_function_that_pins_pins_its_callers() {
    let f = DbFunctions::default();
    let pins = |name: &str, pin: PinReason, calls: &[&str]| Function {
        pin: Some(pin),
        ..func(name, None, false, calls)
    };
    read(
        &f,
        0,
        10,
        vec![
            func("login", None, false, &["myconn", "lower"]),
            pins("myconn", PinReason::Dblink, &["dblink_connect"]),
            pins("backup", PinReason::ServerSession, &["pg_backup_start"]),
            Function {
                oid: 16_410,
                ..func("tagged", Some(&["app.t"]), false, &["backup"])
            },
        ],
    );
    let c = f.session_calls(b"SELECT login()").unwrap();
    assert_eq!(c.pin, Some(PinReason::Dblink));
    assert!(!c.settings && !c.state);
    assert_eq!(c.effects(), Effects::PIN);
    let c = f.oid_calls(16_410).unwrap();
    assert_eq!(c.pin, Some(PinReason::ServerSession));
    assert_eq!(c.effects(), Effects::SETTINGS | Effects::PIN);
    assert_eq!(f.session_calls(b"SELECT lower('x')"), None);
    // Created through switchyard: known at once.
    f.add_created(vec![func("outer", None, false, &["backup"])]);
    assert_eq!(
        f.session_calls(b"SELECT outer()").unwrap().pin,
        Some(PinReason::ServerSession)
    );
}

/// A function declared STABLE or IMMUTABLE is listed only when its body may change the session
/// (PostgreSQL lets it call `set_config` or take a session advisory lock) or calls one that
/// does: a call of it then runs on the primary, as a volatile function's does, and has its
/// effects. Others stay off the list: their calls may run on replicas.
#[test]
fn a_stable_function_that_changes_the_session_is_treated_as_volatile() {
    let f = DbFunctions::default();
    let stable = |name: &str, state: bool, calls: &[&str]| Function {
        volatile: false,
        ..func(name, None, state, calls)
    };
    read(
        &f,
        0,
        10,
        vec![
            stable("lockw", true, &["pg_advisory_lock"]),
            stable("wraps", false, &["lockw", "lower"]),
            stable("report", false, &["format"]),
            plain("w"),
        ],
    );
    for sql in ["SELECT lockw()", "SELECT wraps()", "SELECT w()"] {
        assert!(f.calls_volatile(sql.as_bytes(), &[]), "{sql}");
    }
    assert!(!f.calls_volatile(b"SELECT report('t')", &[]));
    assert_eq!(
        f.session_calls(b"SELECT wraps()").unwrap().effects(),
        Effects::STATE
    );
    assert_eq!(f.session_calls(b"SELECT report('t'), w()"), None);
    assert!(!f.calls_volatile(b"SELECT lockw()", &["lockw".into()]));
}
