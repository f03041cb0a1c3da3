//! Unit tests of the queue of expected server responses (pending.rs).

use super::*;

#[test]
fn answers_made_by_the_proxy_are_counted_until_sent_or_skipped() {
    let mut p = Pending::default();
    p.expect(Kind::Execute, Mode::Forward, Hook::None);
    p.synthetic(Bytes::from_static(b"abc"), Hook::None);
    p.expect(Kind::Sync, Mode::Forward, Hook::None);
    p.synthetic(Bytes::from_static(b"de"), Hook::None);
    assert_eq!(p.synthetic_bytes(), 5);
    // An error skips the first (up to the Sync).
    let m = p.on_server(tag::ERROR_RESPONSE);
    assert!(m.skipped);
    assert_eq!(p.synthetic_bytes(), 2);
    p.on_server(tag::READY_FOR_QUERY);
    assert_eq!(p.pop_synthetic().as_deref(), Some(&b"de"[..]));
    assert_eq!(p.synthetic_bytes(), 0);
    p.synthetic(Bytes::from_static(b"x"), Hook::None);
    p.abandon();
    assert_eq!(p.synthetic_bytes(), 0);
}

/// `parse_unsettled` read front to back, as it was written first: the reference the
/// back-to-front reading must agree with.
fn unsettled_from_the_front(p: &Pending, is: impl Fn(&Hook) -> bool) -> bool {
    let (mut fallible, mut unsettled, mut found) = (false, false, false);
    for e in &p.q {
        let Expect::Server {
            kind, mode, hook, ..
        } = e
        else {
            continue;
        };
        if *kind == Kind::Parse && is(hook) {
            found = fallible;
            unsettled = false;
        } else if !kind.extended() {
            unsettled |= found;
            fallible = false;
            continue;
        }
        if !(*kind == Kind::Close && *mode == Mode::Swallow) {
            fallible = true;
        }
    }
    unsettled
}

#[test]
fn a_close_behind_a_skipped_parse_gives_the_name_nothing_back() {
    let reg = crate::session::statements::Registry::default();
    let stmt = reg.intern(b"select 1", b"", b"");
    let closed = |on_server| Hook::Closed {
        name: Bytes::from_static(b"s1"),
        statement: ClosedStatement(stmt.clone()),
        on_server,
    };
    for (on_server, on_connection, left) in [
        (true, false, Hook::None),
        (false, true, Hook::None),
        (true, true, Hook::Evicted { id: stmt.id }),
    ] {
        let mut p = Pending::default();
        p.expect(Kind::Close, Mode::Forward, closed(on_server));
        p.forget_closes(b"s2", stmt.id, on_connection);
        p.forget_closes(b"s1", stmt.id + 1, on_connection);
        assert!(matches!(
            &p.q[0],
            Expect::Server {
                hook: Hook::Closed { .. },
                ..
            }
        ));
        p.forget_closes(b"s1", stmt.id, on_connection);
        assert!(
            matches!(&p.q[0], Expect::Server { hook, .. } if *hook == left),
            "{on_server} {on_connection}: {p:?}"
        );
    }
}

#[test]
fn unsettled_reads_the_same_from_the_back() {
    let kinds = [
        Kind::Parse,
        Kind::Bind,
        Kind::Execute,
        Kind::Close,
        Kind::Sync,
        Kind::Query,
    ];
    let mut seed = 0x2545_f491_u64;
    let mut next = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for _ in 0..5000 {
        let mut p = Pending::default();
        for _ in 0..next(12) {
            if next(8) == 0 {
                p.synthetic(Bytes::from_static(b"x"), Hook::None);
                continue;
            }
            let kind = kinds[next(kinds.len() as u64) as usize];
            let mode = if next(2) == 0 {
                Mode::Swallow
            } else {
                Mode::Forward
            };
            let hook = if kind == Kind::Parse {
                Hook::Parse {
                    id: next(3),
                    name: Bytes::new(),
                }
            } else {
                Hook::None
            };
            p.expect(kind, mode, hook);
        }
        for id in 0..3 {
            let is = |h: &Hook| matches!(h, Hook::Parse { id: i, .. } if *i == id);
            assert_eq!(
                p.parse_unsettled(is),
                unsettled_from_the_front(&p, is),
                "{p:?}"
            );
        }
    }
}

/// The count `name_unsettled` skips its scan by, counted afresh.
fn named_recount(p: &Pending) -> usize {
    p.q.iter()
        .filter(|e| {
            let (Expect::Server { hook, .. } | Expect::Synthetic(_, hook)) = e;
            hook.names()
        })
        .count()
}

#[test]
fn the_count_of_named_hooks_follows_the_queue() {
    let reg = crate::session::statements::Registry::default();
    let stmt = reg.intern(b"select 1", b"", b"");
    let s1 = || Bytes::from_static(b"s1");
    let mut seed = 0x9e37_79b9_u64;
    let mut next = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for _ in 0..2000 {
        let mut p = Pending::default();
        for _ in 0..next(16) {
            let hook = match next(6) {
                0 => Hook::Parse {
                    id: stmt.id,
                    name: s1(),
                },
                1 => Hook::Parse {
                    id: stmt.id,
                    name: Bytes::new(),
                },
                2 => Hook::CachedParse {
                    id: stmt.id,
                    name: s1(),
                },
                3 => Hook::Closed {
                    name: s1(),
                    statement: ClosedStatement(stmt.clone()),
                    on_server: next(2) == 0,
                },
                _ => Hook::None,
            };
            match next(7) {
                0 => p.synthetic(Bytes::from_static(b"1\0\0\0\x04"), hook),
                1 => p.expect(Kind::Sync, Mode::Forward, hook),
                2 => p.expect(Kind::Close, Mode::Forward, hook),
                3 => p.expect(Kind::Bind, Mode::Forward, hook),
                _ => p.expect(Kind::Parse, Mode::Forward, hook),
            }
        }
        // Answers, errors, skipped Parses and a copy's ignored Syncs take entries away.
        while !p.is_empty() {
            assert_eq!(p.named, named_recount(&p), "{p:?}");
            if p.pop_synthetic().is_some() {
                continue;
            }
            match next(5) {
                0 => p.on_server(tag::ERROR_RESPONSE),
                1 => {
                    p.forget_closes(b"s1", stmt.id, next(2) == 0);
                    continue;
                }
                2 => p.on_server(tag::COPY_IN_RESPONSE),
                _ => match p.front_kind() {
                    Some(Kind::Parse) => p.on_server(tag::PARSE_COMPLETE),
                    Some(Kind::Bind) => p.on_server(tag::BIND_COMPLETE),
                    Some(Kind::Close) => p.on_server(tag::CLOSE_COMPLETE),
                    _ => p.on_server(tag::READY_FOR_QUERY),
                },
            };
            p.take_skipped();
        }
        assert_eq!(p.named, 0);
        assert!(!p.name_unsettled(b"s1"));
    }
}

#[test]
fn a_parse_is_unsettled_only_behind_the_end_of_its_batch() {
    let parse = |id| Hook::Parse {
        id,
        name: Bytes::new(),
    };
    let is7 = |h: &Hook| matches!(h, Hook::Parse { id: 7, .. });
    let mut p = Pending::default();
    p.expect(Kind::Execute, Mode::Forward, Hook::None);
    p.expect(Kind::Parse, Mode::Swallow, parse(7));
    p.expect(Kind::Bind, Mode::Forward, Hook::None);
    assert!(!p.parse_unsettled(is7), "in the same batch");
    p.expect(Kind::Sync, Mode::Forward, Hook::None);
    assert!(p.parse_unsettled(is7), "its batch ended");
    assert!(!p.parse_unsettled(|h| matches!(h, Hook::Parse { id: 8, .. })));
    p.expect(Kind::Close, Mode::Swallow, Hook::None);
    p.expect(Kind::Parse, Mode::Swallow, parse(7));
    p.expect(Kind::Bind, Mode::Forward, Hook::None);
    assert!(!p.parse_unsettled(is7), "prepared again in this batch");
    p.expect(Kind::Sync, Mode::Forward, Hook::None);
    assert!(
        !p.parse_unsettled(is7),
        "first in its batch: only its own failure skips it (no re-parse in every batch)"
    );
    for t in *b"C12Z312Z" {
        p.on_server(t);
    }
    assert!(p.is_empty(), "{p:?}");
    assert_eq!(p.parses, 0, "{p:?}");
}

#[test]
fn restamp_sets_the_status_of_every_ready_for_query() {
    use crate::protocol::encode;
    let mut b = bytes::BytesMut::new();
    encode::command_complete(&mut b, "SET");
    encode::ready_for_query(&mut b, TxnStatus::Idle);
    encode::command_complete(&mut b, "Z\0\0\0\u{5}I");
    encode::ready_for_query(&mut b, TxnStatus::Idle);
    let before = b.clone();
    restamp_ready(&mut b, TxnStatus::InTransaction);
    // Only the two status bytes change (CommandComplete "SET" is 9 bytes), not the bytes
    // inside the second CommandComplete that look like a ReadyForQuery.
    let changed: Vec<usize> = (0..b.len()).filter(|&i| b[i] != before[i]).collect();
    assert_eq!(changed, [14, b.len() - 1]);
    assert!(changed.iter().all(|&i| b[i] == b'T'));
}

#[test]
fn extended_batch_completes_in_order() {
    let mut p = Pending::default();
    p.expect(
        Kind::Parse,
        Mode::Forward,
        Hook::Parse {
            id: 7,
            name: Bytes::new(),
        },
    );
    p.expect(Kind::Bind, Mode::Forward, Hook::None);
    p.expect(Kind::Execute, Mode::Forward, Hook::None);
    p.expect(Kind::Sync, Mode::Forward, Hook::None);
    let m = p.on_server(b'1');
    assert_eq!(m.completed, Some((Kind::Parse, Mode::Forward)));
    assert!(!m.hold_ready && !m.skipped);
    assert!(p.on_server(b'2').completed.is_some());
    assert!(p.on_server(b'D').completed.is_none());
    assert!(p.on_server(b'C').completed.is_some());
    assert!(p.on_server(b'Z').completed.is_some());
    assert!(p.is_empty());
}

#[test]
fn abandon_counts_the_ready_for_query_of_local_answers() {
    let mut p = Pending::default();
    p.expect(Kind::Query, Mode::Forward, Hook::None);
    p.expect(Kind::Query, Mode::Swallow, Hook::None);
    // A locally answered query (CommandComplete "DEALLOCATE", ReadyForQuery).
    let mut local = bytes::BytesMut::new();
    crate::protocol::encode::command_complete(&mut local, "DEALLOCATE");
    crate::protocol::encode::ready_for_query(&mut local, crate::protocol::TxnStatus::Idle);
    p.synthetic(local.freeze(), Hook::None);
    // A synthetic ParseComplete owes no ReadyForQuery of its own.
    p.synthetic(Bytes::from_static(b"1\0\0\0\x04"), Hook::None);
    p.expect(Kind::Sync, Mode::Forward, Hook::None);
    assert_eq!(p.abandon(), 3);
    assert!(p.is_empty());
}

#[test]
fn error_skips_to_sync_and_drops_synthetics() {
    let mut p = Pending::default();
    p.expect(
        Kind::Parse,
        Mode::Forward,
        Hook::Parse {
            id: 1,
            name: Bytes::from_static(b"s1"),
        },
    );
    let cached = Hook::CachedParse {
        id: 2,
        name: Bytes::from_static(b"s2"),
    };
    p.synthetic(Bytes::from_static(b"1"), cached.clone());
    p.expect(Kind::Execute, Mode::Forward, Hook::None);
    p.expect(Kind::Sync, Mode::Forward, Hook::None);
    p.expect(Kind::Query, Mode::Forward, Hook::None);
    let m = p.on_server(b'E');
    assert!(m.forward && m.skipped);
    // The synthetic answer's hook is among the skipped: its Parse did not happen either.
    assert_eq!(
        p.take_skipped(),
        vec![
            Hook::Parse {
                id: 1,
                name: Bytes::from_static(b"s1")
            },
            cached,
            Hook::None
        ]
    );
    assert_eq!(p.len(), 2);
    assert!(p.pop_synthetic().is_none());
    assert!(p.on_server(b'Z').completed.is_some());
    // A simple query keeps its entry through an error until ReadyForQuery.
    assert!(p.on_server(b'E').forward);
    assert_eq!(p.len(), 1);
    assert!(p.on_server(b'Z').completed.is_some());
}

#[test]
fn swallowed_and_captured() {
    let mut p = Pending::default();
    p.expect(Kind::Query, Mode::Swallow, Hook::None);
    p.expect(Kind::Query, Mode::Capture, Hook::None);
    assert!(
        p.on_server(b'S').forward,
        "parameter status always reaches the client"
    );
    assert!(
        p.on_server(b'A').forward,
        "a notification is the client's even during the proxy's own query"
    );
    assert!(
        !p.on_server(b'N').forward,
        "the proxy's query's notices are not"
    );
    assert!(!p.on_server(b'C').forward);
    assert!(
        !p.on_server(b'E').forward,
        "errors of the proxy's own simple queries are dropped"
    );
    assert!(!p.on_server(b'Z').forward);
    let m = p.on_server(b'D');
    assert!(!m.forward && m.capture);
    assert_eq!(
        p.on_server(b'Z').completed.map(|c| c.1),
        Some(Mode::Capture)
    );
    // Injected extended messages: errors reach the client.
    p.expect(
        Kind::Parse,
        Mode::Swallow,
        Hook::Parse {
            id: 1,
            name: Bytes::new(),
        },
    );
    p.expect(Kind::Bind, Mode::Forward, Hook::None);
    p.expect(Kind::Sync, Mode::Forward, Hook::None);
    assert!(p.on_server(b'E').forward);
    assert_eq!(p.front_mode(), Mode::Forward);
}

#[test]
fn copy_in_drops_the_syncs_the_server_ignores() {
    let mut p = Pending::default();
    p.expect(Kind::Bind, Mode::Forward, Hook::None);
    p.expect(Kind::Execute, Mode::Forward, Hook::None);
    p.expect(Kind::Sync, Mode::Forward, Hook::None);
    p.expect(Kind::Sync, Mode::Forward, Hook::AfterCopyEnd);
    p.on_server(b'2');
    p.on_server(b'G');
    assert_eq!(p.len(), 2);
    assert!(p.on_server(b'C').completed.is_some());
    assert!(p.on_server(b'Z').completed.is_some());
    assert!(p.is_empty());
}

#[test]
fn a_simple_query_copy_drops_the_syncs_sent_before_its_end() {
    let mut p = Pending::default();
    p.expect(Kind::Query, Mode::Forward, Hook::None);
    p.expect(Kind::Sync, Mode::Forward, Hook::None);
    p.expect(Kind::Sync, Mode::Forward, Hook::AfterCopyEnd);
    p.on_server(b'G');
    assert_eq!(p.len(), 2);
    assert!(p.on_server(b'C').completed.is_none());
    assert!(p.on_server(b'Z').completed.is_some());
    assert!(p.on_server(b'Z').completed.is_some());
    assert!(p.is_empty());
}

#[test]
fn only_the_syncs_right_behind_a_copy_are_dropped() {
    // Query(COPY) pipelined with CopyData/CopyDone and a later request: the Syncs behind
    // that request are answered.
    let mut p = Pending::default();
    p.expect(Kind::Query, Mode::Forward, Hook::None);
    p.expect(Kind::Parse, Mode::Forward, Hook::None);
    p.expect(Kind::Bind, Mode::Forward, Hook::None);
    p.expect(Kind::Execute, Mode::Forward, Hook::None);
    p.expect(Kind::Sync, Mode::Forward, Hook::None);
    p.expect(Kind::Sync, Mode::Swallow, Hook::None);
    p.expect(Kind::Query, Mode::Forward, Hook::None);
    p.on_server(b'G');
    assert_eq!(p.len(), 7);
    // An Execute's COPY, then a Query and a Sync after the copy.
    let mut p = Pending::default();
    p.expect(Kind::Execute, Mode::Forward, Hook::None);
    p.expect(Kind::Sync, Mode::Forward, Hook::None);
    p.expect(Kind::Sync, Mode::Forward, Hook::None);
    p.expect(Kind::Query, Mode::Forward, Hook::None);
    p.expect(Kind::Sync, Mode::Forward, Hook::None);
    p.on_server(b'G');
    assert_eq!(p.len(), 3);
    // The proxy's own Sync right behind is kept.
    let mut p = Pending::default();
    p.expect(Kind::Query, Mode::Forward, Hook::None);
    p.expect(Kind::Sync, Mode::Swallow, Hook::None);
    p.on_server(b'G');
    assert_eq!(p.len(), 2);
}

#[test]
fn abandon_counts_ready_for_query_owed() {
    let mut p = Pending::default();
    p.expect(Kind::Query, Mode::Swallow, Hook::None);
    p.expect(Kind::Bind, Mode::Forward, Hook::None);
    p.expect(Kind::Sync, Mode::Forward, Hook::None);
    p.expect(Kind::Query, Mode::Forward, Hook::None);
    assert_eq!(p.abandon(), 2);
    assert!(p.is_empty());
}
