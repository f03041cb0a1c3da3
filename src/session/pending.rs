//! The queue of responses a session still expects from its server connection, in order.
//!
//! Every message sent to the server that produces a response gets an entry. Entries say what to
//! do with the response: relay it, swallow it (the proxy's own setup messages), or collect it
//! (reading settings back). Synthetic entries stand for responses the proxy produces itself
//! (e.g. ParseComplete for a statement already prepared on this connection) and are emitted
//! when they reach the front, so the client sees responses in exactly the order it asked.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;

use super::statements::Statement;

use crate::protocol::{tag, TxnStatus};

/// Which request message an entry answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Parse,
    Bind,
    Describe,
    Execute,
    Close,
    Sync,
    /// A simple Query (ends with ReadyForQuery).
    Query,
    /// A FunctionCall (ends with ReadyForQuery).
    FunctionCall,
}

impl Kind {
    /// Whether this kind belongs to the extended protocol (an error skips to the next Sync).
    fn extended(self) -> bool {
        !matches!(self, Kind::Sync | Kind::Query | Kind::FunctionCall)
    }

    /// Whether a server message with `t` completes this entry.
    fn completed_by(self, t: u8) -> bool {
        match self {
            Kind::Parse => t == tag::PARSE_COMPLETE,
            Kind::Bind => t == tag::BIND_COMPLETE,
            Kind::Close => t == tag::CLOSE_COMPLETE,
            Kind::Describe => t == tag::ROW_DESCRIPTION || t == tag::NO_DATA,
            Kind::Execute => matches!(
                t,
                tag::COMMAND_COMPLETE | tag::EMPTY_QUERY | tag::PORTAL_SUSPENDED
            ),
            Kind::Sync | Kind::Query | Kind::FunctionCall => t == tag::READY_FOR_QUERY,
        }
    }
}

/// What to do with the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Relay to the client.
    Forward,
    /// Drop (the proxy sent the request on its own); errors still reach the client.
    Swallow,
    /// Drop, collecting data rows (reading settings back).
    Capture,
    /// Drop, errors included: putting startup values back after a RESET (it fails harmlessly
    /// in an aborted transaction), or a message sent to fail on purpose.
    Restore,
}

/// Bookkeeping when an entry completes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hook {
    None,
    /// A Parse of statement `id` (recorded as prepared when sent): on error it is not
    /// prepared after all, and the client's `name` (if not empty) is forgotten.
    Parse {
        id: u64,
        name: Bytes,
    },
    /// Hold this request's ReadyForQuery until the restore query queued behind it is done,
    /// so the client gets its ParameterStatus messages first, as from a direct connection.
    HoldReady,
    /// A Sync the client sent after ending a COPY (the server answers it; Syncs sent while
    /// the server was receiving COPY data are ignored by it).
    AfterCopyEnd,
    /// A Parse of the unnamed statement: the client's own (`client`, also its Close of it), or
    /// the proxy putting the client's back. If an error makes the server skip it, the server's
    /// unnamed statement is not the client's (and, for the client's own, the client's is the
    /// one before, see `Session::give_unnamed_back`).
    UnnamedParse {
        client: bool,
        /// The client's unnamed-statement sequence number the Parse was made under: a later
        /// unnamed Parse (in a later pipelined batch) is not undone by this one's skip.
        seq: u64,
    },
    /// The client's unnamed Parse `seq` that failed itself (its error answers it): PostgreSQL
    /// dropped the unnamed statement before parsing the new one, so there is none now (see
    /// `Session::give_unnamed_back` for one skipped instead).
    UnnamedParseFailed {
        seq: u64,
    },
    /// A synthetic ParseComplete for the client's statement `name`, already prepared on the
    /// connection as `id`: if an error skips it, the client's Parse did not happen.
    CachedParse {
        id: u64,
        name: Bytes,
    },
    /// The client's Describe of statement `id`, whose row shape is not recorded yet: its
    /// answer is (see [`Matched::shape_of`]).
    Shape {
        id: u64,
    },
    /// The proxy's Sync after preparing the statement a SQL `EXECUTE` in the Query behind it
    /// runs (see `forward_execute`).
    ReprepareSync,
    /// That Query, after that preparing failed: the client has the Parse's error, so the
    /// Query's own (26000, about the statement's shared name) is dropped.
    SkipError,
    /// The Close of an evicted statement: if an error before it makes the server skip it, the
    /// statement is still on the connection (see `Prepared::orphan`).
    Evicted {
        id: u64,
    },
    /// A Close of the client's statement `name` (forgotten when the Close was read), sent to
    /// the server under its shared name too (`on_server`) or answered by the proxy: if an
    /// error before it in the batch makes the server skip it, the statement is still the
    /// client's, and still prepared on the connection (unless the Parse that made it failed
    /// too: [`Pending::forget_closes`]).
    Closed {
        name: Bytes,
        statement: ClosedStatement,
        on_server: bool,
    },
    /// The proxy's Sync that ends an extended batch on a replica right after the statement
    /// that ends its read-only transaction: what the client sends after it in the batch is
    /// routed afresh (see `Session::split_after_block_end`). Its ReadyForQuery is not relayed;
    /// an error before it makes the proxy skip the rest of the client's batch, as the server
    /// would have.
    SplitSync,
    /// The first part of a simple Query split after the statement that ends a read-only
    /// transaction on a replica (see `Session::split_query_after_block_end`): its
    /// ReadyForQuery is the client's only if it fails (then the rest is not run).
    SplitFirst,
    /// That part, after an error: its ReadyForQuery goes to the client, and the rest of the
    /// Query is dropped.
    SplitFailed,
}

/// The statement a [`Hook::Closed`] gives back (compared by identity).
#[derive(Debug, Clone)]
pub struct ClosedStatement(pub Arc<Statement>);

impl PartialEq for ClosedStatement {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for ClosedStatement {}

/// One expected response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// A response from the server. `copy_ended`: the client ended the COPY FROM STDIN this
    /// request may start before the server said it began (see [`Pending::end_copy_ahead`]).
    Server {
        kind: Kind,
        mode: Mode,
        hook: Hook,
        copy_ended: bool,
    },
    /// Bytes the proxy emits in place of a server response (with what to undo if an earlier
    /// error skips it).
    Synthetic(Bytes, Hook),
}

/// The outcome of matching a server message against the queue (small and `Copy`: it is made
/// for every server message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Matched {
    /// Relay the message to the client.
    pub forward: bool,
    /// Collect it (a data row of a capture).
    pub capture: bool,
    /// The entry that completed with it, for the session to act on.
    pub completed: Option<(Kind, Mode)>,
    /// That entry's hook was [`Hook::HoldReady`].
    pub hold_ready: bool,
    /// That entry's hook was [`Hook::Shape`]: the message is statement `id`'s row shape.
    pub shape_of: Option<u64>,
    /// An error skipped entries: their hooks are waiting in [`Pending::take_skipped`].
    pub skipped: bool,
    /// The mode of the entry the message belonged to.
    pub mode: Mode,
    /// An error arrived in an extended-protocol batch whose Sync has not been sent: the server
    /// now discards messages until that Sync.
    pub awaiting_sync: bool,
    /// The message says a COPY FROM STDIN began that the client has already ended.
    pub copy_ended: bool,
    /// The ReadyForQuery of the first part of a split Query that failed: the rest of that
    /// Query is not to run.
    pub split_failed: bool,
    /// The ReadyForQuery of the first part of a split request that did not fail: the rest
    /// of that request, still the client's, comes next.
    pub split_done: bool,
}

/// The queue.
#[derive(Debug, Default)]
pub struct Pending {
    q: VecDeque<Expect>,
    /// Hooks of entries the last error skipped.
    skipped: Vec<Hook>,
    /// Bytes of the synthetic entries queued (the relay stops reading a client whose
    /// answers pile up here, as it does when they pile up unsent).
    synthetic_bytes: usize,
    /// Parse entries queued.
    parses: usize,
    /// Entries whose hook names one of the client's statements (see [`Hook::names`]): while
    /// there are none, a Bind of a named statement need not look through the queue.
    named: usize,
}

impl Hook {
    /// Whether the hook is about one of the client's named statements: what
    /// [`Pending::name_unsettled`] and [`Pending::parse_outstanding`] look for.
    fn names(&self) -> bool {
        match self {
            Hook::Parse { name, .. } => !name.is_empty(),
            Hook::CachedParse { .. } | Hook::Closed { .. } => true,
            _ => false,
        }
    }
}

impl Pending {
    /// Appends an expected server response.
    pub fn expect(&mut self, kind: Kind, mode: Mode, hook: Hook) {
        self.parses += usize::from(kind == Kind::Parse);
        self.named += usize::from(hook.names());
        self.q.push_back(Expect::Server {
            kind,
            mode,
            hook,
            copy_ended: false,
        });
    }

    /// Appends a synthetic response.
    pub fn synthetic(&mut self, bytes: Bytes, hook: Hook) {
        self.synthetic_bytes += bytes.len();
        self.named += usize::from(hook.names());
        self.q.push_back(Expect::Synthetic(bytes, hook));
    }

    /// Whether a Parse of the client's statement `name` awaits its answer (or the
    /// ParseComplete the proxy gave for it from the connection's statements: an error before
    /// it undoes that one too).
    pub fn parse_outstanding(&self, name: &[u8]) -> bool {
        self.named > 0
            && self.q.iter().any(|e| match e {
                Expect::Server {
                    hook: Hook::Parse { name: n, .. },
                    ..
                }
                | Expect::Synthetic(_, Hook::CachedParse { name: n, .. }) => {
                    super::statements::same_name(n, name)
                }
                _ => false,
            })
    }

    /// Whether a Parse or Close of the client's statement `name` awaits its answer in a batch
    /// that has ended (a Sync, Query or FunctionCall queued behind it): an error in that batch
    /// may still make the server skip it, so a later batch cannot know yet whether the name
    /// is taken.
    pub fn name_unsettled(&self, name: &[u8]) -> bool {
        // (Checked for every Bind of a named statement: a long pipeline of them must not
        // make each one read the whole queue.)
        if self.named == 0 {
            return false;
        }
        let mut seen = false;
        for e in &self.q {
            let ends_batch = match e {
                Expect::Server { kind, .. } => !kind.extended(),
                Expect::Synthetic(b, _) => has_ready(b),
            };
            if seen && ends_batch {
                return true;
            }
            let (Expect::Server { hook, .. } | Expect::Synthetic(_, hook)) = e;
            seen |= match hook {
                Hook::Parse { name: n, .. }
                | Hook::CachedParse { name: n, .. }
                | Hook::Closed { name: n, .. } => super::statements::same_name(n, name),
                _ => false,
            };
        }
        false
    }

    /// The Parse of the client's statement `name` (`id`) was skipped: the client's statement
    /// never existed, so a Close of it queued since gives the name nothing back when skipped
    /// in turn. `on_connection`: the server has the shared statement all the same (the
    /// proxy answered the Parse from the connection's statements), so a skipped Close sent to
    /// it leaves it there, to be closed later as an evicted one is.
    pub fn forget_closes(&mut self, name: &[u8], id: u64, on_connection: bool) {
        for e in &mut self.q {
            let (Expect::Server { hook, .. } | Expect::Synthetic(_, hook)) = e;
            if let Hook::Closed {
                name: n,
                statement,
                on_server,
            } = hook
            {
                if super::statements::same_name(n, name) && statement.0.id == id {
                    self.named -= 1;
                    *hook = if *on_server && on_connection {
                        Hook::Evicted { id }
                    } else {
                        Hook::None
                    };
                }
            }
        }
    }

    /// Whether the last Parse whose hook `is` matches awaits its answer, with something that
    /// may fail before it in its batch and the batch already ended (a Sync, Query or
    /// FunctionCall queued after it): an error there may still make the server skip it, so
    /// what is sent after that end cannot count on it. A Parse first in its batch (the
    /// proxy's Closes aside, which cannot fail) is skipped only if it fails itself. Costs
    /// nothing unless Parses are queued (pipelined requests), and is read from the back: a
    /// pipeline of unnamed Parse/Bind pairs finds its Parse at once.
    pub fn parse_unsettled(&self, is: impl Fn(&Hook) -> bool) -> bool {
        if self.parses == 0 {
            return false;
        }
        let mut before = self.q.iter().rev().filter_map(|e| match e {
            Expect::Server {
                kind, mode, hook, ..
            } => Some((*kind, *mode, hook)),
            Expect::Synthetic(..) => None,
        });
        // The last such Parse, and whether its batch ended behind it.
        let mut ended = false;
        loop {
            match before.next() {
                None => return false,
                Some((Kind::Parse, _, hook)) if is(hook) => break,
                Some((kind, _, _)) => ended |= !kind.extended(),
            }
        }
        // Whether something before it in its batch may fail.
        ended
            && before
                .take_while(|(kind, _, _)| kind.extended())
                .any(|(kind, mode, _)| !(kind == Kind::Close && mode == Mode::Swallow))
    }

    /// Whether any Parse awaits its answer.
    pub fn parses_queued(&self) -> bool {
        self.parses > 0
    }

    /// Whether the last Parse whose hook `is` matches awaits its answer in a batch that has
    /// ended (a Sync, Query or FunctionCall queued after it): it may still fail, on its own or
    /// after an error before it, and what is sent after that end cannot count on it. Read
    /// from the back, as [`parse_unsettled`](Self::parse_unsettled).
    pub fn parse_answer_due(&self, is: impl Fn(&Hook) -> bool) -> bool {
        if self.parses == 0 {
            return false;
        }
        let mut ended = false;
        for e in self.q.iter().rev() {
            if let Expect::Server { kind, hook, .. } = e {
                if *kind == Kind::Parse && is(hook) {
                    return ended;
                }
                ended |= !kind.extended();
            }
        }
        false
    }

    /// Bytes of the answers the proxy made itself that wait behind the server's.
    pub fn synthetic_bytes(&self) -> usize {
        self.synthetic_bytes
    }

    /// Nothing outstanding.
    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    /// ReadyForQuery messages the server owes for what was sent (the proxy's own queries
    /// included): a request queued now is answered by the one after them.
    pub fn readies_due(&self) -> usize {
        self.q
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    Expect::Server {
                        kind: Kind::Sync | Kind::Query | Kind::FunctionCall,
                        ..
                    }
                )
            })
            .count()
    }

    /// Entries outstanding.
    pub fn len(&self) -> usize {
        self.q.len()
    }

    /// Removes and returns synthetic entries at the front.
    pub fn pop_synthetic(&mut self) -> Option<Bytes> {
        match self.q.front() {
            Some(Expect::Synthetic(..)) => match self.q.pop_front() {
                Some(Expect::Synthetic(b, hook)) => {
                    self.synthetic_bytes -= b.len();
                    self.named -= usize::from(hook.names());
                    Some(b)
                }
                _ => unreachable!(),
            },
            _ => None,
        }
    }

    /// The kind of the entry a server message now belongs to.
    pub fn front_kind(&self) -> Option<Kind> {
        match self.q.front() {
            Some(Expect::Server { kind, .. }) => Some(*kind),
            _ => None,
        }
    }

    /// The mode of the entry a server message now belongs to.
    pub fn front_mode(&self) -> Mode {
        match self.q.front() {
            Some(Expect::Server { mode, .. }) => *mode,
            _ => Mode::Forward,
        }
    }

    /// The kind of the last entry (to know whether an unfinished extended batch is open).
    pub fn last_kind(&self) -> Option<Kind> {
        // Only the client's own requests count: the proxy's setup and read-back queries are
        // not part of what the client has asked for.
        self.q.iter().rev().find_map(|e| match e {
            Expect::Server {
                kind,
                mode: Mode::Forward,
                ..
            } => Some(*kind),
            _ => None,
        })
    }

    /// Whether a client request is still waiting for responses (as opposed to only the
    /// proxy's own queries).
    pub fn client_waiting(&self) -> bool {
        self.q.iter().any(|e| {
            matches!(
                e,
                Expect::Server {
                    mode: Mode::Forward,
                    ..
                } | Expect::Synthetic(..)
            )
        })
    }

    /// Matches one server message (synthetic entries must have been popped first).
    pub fn on_server(&mut self, t: u8) -> Matched {
        let mut m = Matched {
            forward: true,
            capture: false,
            completed: None,
            hold_ready: false,
            shape_of: None,
            skipped: false,
            mode: Mode::Forward,
            awaiting_sync: false,
            copy_ended: false,
            split_failed: false,
            split_done: false,
        };
        let Some(Expect::Server {
            kind,
            mode,
            copy_ended,
            ..
        }) = self.q.front()
        else {
            // Asynchronous message (notice, notification, parameter status) or protocol noise.
            return m;
        };
        let (kind, mode, copy_ended) = (*kind, *mode, *copy_ended);
        m.mode = mode;
        if t == tag::ERROR_RESPONSE {
            if let Some(Expect::Server {
                hook: hook @ Hook::SkipError,
                ..
            }) = self.q.front_mut()
            {
                *hook = Hook::None;
                m.forward = false;
                return m;
            }
            if let Some(Expect::Server {
                hook: hook @ Hook::SplitFirst,
                ..
            }) = self.q.front_mut()
            {
                *hook = Hook::SplitFailed;
            }
            if let Some(Expect::Server {
                kind: Kind::Parse,
                hook: hook @ Hook::UnnamedParse { client: true, .. },
                ..
            }) = self.q.front_mut()
            {
                // The client's unnamed Parse failed (rather than being skipped).
                if let Hook::UnnamedParse { seq, .. } = *hook {
                    *hook = Hook::UnnamedParseFailed { seq };
                }
            }
            // Errors always reach the client, except answers to the proxy's own queries and
            // to what it sent to fail.
            m.forward = mode == Mode::Forward || (kind.extended() && mode != Mode::Restore);
            if kind.extended() {
                // The server skips everything up to the next Sync; synthetic answers queued in
                // that stretch must not be sent either.
                while let Some(e) = self.q.front() {
                    if matches!(
                        e,
                        Expect::Server {
                            kind: Kind::Sync,
                            ..
                        }
                    ) {
                        break;
                    }
                    match self.q.pop_front() {
                        Some(Expect::Server { kind, hook, .. }) => {
                            self.parses -= usize::from(kind == Kind::Parse);
                            self.named -= usize::from(hook.names());
                            self.skipped.push(hook);
                        }
                        Some(Expect::Synthetic(b, hook)) => {
                            self.synthetic_bytes -= b.len();
                            self.named -= usize::from(hook.names());
                            self.skipped.push(hook);
                        }
                        None => {}
                    }
                    m.skipped = true;
                }
                // No Sync sent yet: the server ignores what the client sends until its Sync.
                // Nor has the client's been, when the proxy's Sync split its batch.
                m.awaiting_sync = self.q.is_empty()
                    || matches!(
                        self.q.front(),
                        Some(Expect::Server {
                            hook: Hook::SplitSync,
                            ..
                        })
                    );
                if let Some(Expect::Server {
                    hook: Hook::ReprepareSync,
                    ..
                }) = self.q.front()
                {
                    if let Some(Expect::Server {
                        kind: Kind::Query,
                        hook: hook @ Hook::None,
                        ..
                    }) = self.q.get_mut(1)
                    {
                        *hook = Hook::SkipError;
                    }
                }
            }
            return m;
        }
        // The client must know the server's reported parameters whoever changed them.
        if t == tag::COPY_IN_RESPONSE && matches!(kind, Kind::Execute | Kind::Query) {
            // COPY FROM STDIN: the server ignores Syncs until the copy ends, so the ones sent
            // with the Execute, or after the Query before its CopyInResponse arrived, get no
            // ReadyForQuery.
            self.drop_syncs_ignored_by_copy();
            m.copy_ended = copy_ended;
        }
        // A notification is the client's whatever query it arrives during (the server sends
        // pending ones when it goes idle, i.e. just before the proxy's own query's
        // ReadyForQuery too).
        m.forward =
            mode == Mode::Forward || t == tag::PARAMETER_STATUS || t == tag::NOTIFICATION_RESPONSE;
        m.capture = mode == Mode::Capture && t == tag::DATA_ROW;
        if kind.completed_by(t) {
            if let Some(Expect::Server {
                kind, mode, hook, ..
            }) = self.q.pop_front()
            {
                self.parses -= usize::from(kind == Kind::Parse);
                self.named -= usize::from(hook.names());
                m.completed = Some((kind, mode));
                m.hold_ready = matches!(hook, Hook::HoldReady);
                // (The client's ReadyForQuery comes with the rest of its batch, or Query.)
                m.forward &= !matches!(hook, Hook::SplitFirst | Hook::SplitSync);
                m.split_failed = matches!(hook, Hook::SplitFailed);
                m.split_done = matches!(hook, Hook::SplitFirst | Hook::SplitSync);
                if let Hook::Shape { id } = hook {
                    m.shape_of = Some(id);
                }
            }
        } else if t == tag::PARAMETER_DESCRIPTION {
            // The parameter types, ahead of the row shape in a Describe's answer.
            if let Some(Expect::Server {
                hook: Hook::Shape { id },
                ..
            }) = self.q.front()
            {
                m.shape_of = Some(*id);
            }
        }
        m
    }

    /// The client ended a COPY FROM STDIN (CopyDone, CopyFail) that the server has not said
    /// began: the copy of its latest request, if that turns out to start one. (Its data and
    /// end sent right behind the request, before the CopyInResponse came back.)
    pub fn end_copy_ahead(&mut self) {
        let latest = self.q.iter_mut().rev().find_map(|e| match e {
            Expect::Server {
                kind: Kind::Query | Kind::Execute,
                mode: Mode::Forward,
                copy_ended,
                ..
            } => Some(copy_ended),
            _ => None,
        });
        if let Some(ended) = latest {
            *ended = true;
        }
    }

    /// Whether a Sync the client sent after ending its copy is queued right behind the
    /// request at the front (the Syncs the server ignored dropped): the batch is over.
    pub fn synced_after_copy(&self) -> bool {
        self.q
            .iter()
            .skip(1)
            .find(|e| !matches!(e, Expect::Synthetic(..)))
            .is_some_and(|e| {
                matches!(
                    e,
                    Expect::Server {
                        kind: Kind::Sync,
                        ..
                    }
                )
            })
    }

    /// The hooks of the entries errors skipped since the last call.
    pub fn take_skipped(&mut self) -> Vec<Hook> {
        std::mem::take(&mut self.skipped)
    }

    /// Drops the client's Syncs right behind the request that started a COPY FROM STDIN:
    /// the server ignores Syncs during the copy. Anything else the client sent ends the copy
    /// (a CopyDone or CopyFail marks the Syncs after it, and any other message fails the
    /// copy), so every Sync from there on is answered. (A Sync that puts the startup settings
    /// back is one after the copy's end: see `RestoreAfterCopy`.)
    fn drop_syncs_ignored_by_copy(&mut self) {
        let mut i = 1;
        while i < self.q.len() {
            match &self.q[i] {
                Expect::Synthetic(..) => i += 1,
                Expect::Server {
                    kind: Kind::Sync,
                    mode: Mode::Forward,
                    hook,
                    ..
                } if !matches!(hook, Hook::AfterCopyEnd | Hook::HoldReady) => {
                    if let Some(Expect::Server { hook, .. }) = self.q.remove(i) {
                        self.named -= usize::from(hook.names());
                    }
                }
                _ => break,
            }
        }
    }

    /// How many simple queries the proxy sent on its own are queued, when nothing else is (no
    /// client request waits for an answer).
    pub fn own_queries_only(&self) -> Option<usize> {
        self.q.iter().try_fold(0, |n, e| match e {
            Expect::Server {
                kind: Kind::Query,
                mode,
                ..
            } if *mode != Mode::Forward => Some(n + 1),
            _ => None,
        })
    }

    /// Empties the queue (server lost); returns how many ReadyForQuery the client still awaits
    /// (those of its requests the proxy was to answer itself included).
    /// Which parts of a split request are in flight: (the proxy's Sync that split the
    /// client's extended batch is the last thing sent, the first part of a split Query is
    /// not answered yet).
    pub fn splits(&self) -> (bool, bool) {
        let split_sync = matches!(
            self.q.back(),
            Some(Expect::Server {
                hook: Hook::SplitSync,
                ..
            })
        );
        let split_query = self.q.iter().any(|e| {
            matches!(
                e,
                Expect::Server {
                    hook: Hook::SplitFirst | Hook::SplitFailed,
                    ..
                }
            )
        });
        (split_sync, split_query)
    }

    pub fn abandon(&mut self) -> usize {
        let n = self
            .q
            .iter()
            .filter(|e| match e {
                Expect::Server {
                    kind: Kind::Sync | Kind::Query | Kind::FunctionCall,
                    mode: Mode::Forward,
                    ..
                } => true,
                Expect::Synthetic(b, _) => has_ready(b),
                _ => false,
            })
            .count();
        self.q.clear();
        self.synthetic_bytes = 0;
        self.parses = 0;
        self.named = 0;
        n
    }
}

/// Offsets of the ReadyForQuery messages in `bytes` (whole backend messages).
fn ready_offsets(bytes: &[u8]) -> impl Iterator<Item = usize> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        while let Ok(Some(h)) = crate::protocol::Header::peek(bytes.get(at..)?, usize::MAX) {
            let start = at;
            at += h.frame_len;
            if h.tag == tag::READY_FOR_QUERY && at <= bytes.len() {
                return Some(start);
            }
        }
        None
    })
}

/// Whether `bytes` (whole backend messages) include a ReadyForQuery.
fn has_ready(bytes: &[u8]) -> bool {
    ready_offsets(bytes).next().is_some()
}

/// Sets the status of the ReadyForQuery messages in `bytes`: a request the proxy answered
/// while others were in flight reports the status those left, known only when it is sent.
pub fn restamp_ready(bytes: &mut [u8], status: TxnStatus) {
    let mut at = 0;
    loop {
        let Some(i) = ready_offsets(&bytes[at..]).next() else {
            return;
        };
        // A ReadyForQuery is 6 bytes: tag, length 5, status.
        bytes[at + i + 5] = status.byte();
        at += i + 6;
    }
}

#[cfg(test)]
#[path = "pending_tests.rs"]
mod tests;
