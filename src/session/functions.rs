//! The session's side of [`crate::catalog`]: reading a database's volatile functions on a
//! connection just checked out, and noting the ones a statement it sends creates.

use std::sync::atomic::Ordering;

use super::statements::Statement;
use super::Session;
use crate::catalog::{Calls, Function, Server, VOLATILE_FUNCTIONS_SQL};
use crate::protocol::TxnStatus;
use crate::sql::Effects;

impl Session {
    /// Reads the database's volatile functions on the connection just checked out (from
    /// backend `index`), when the list is due (see [`crate::catalog`]), this server may read
    /// it (the primary, or a replica caught up with it) and no other session is reading it.
    /// Nothing was sent to the connection yet: what the proxy queued for it goes after this
    /// query.
    pub(super) async fn read_functions(&mut self, index: usize) {
        // (Nor for a request sent to another connection after a failure: one whose read
        // failed there would fail again, and the request with it.)
        if self.txn != TxnStatus::Idle || self.retry_attempts > 0 {
            return;
        }
        let epoch = self.app.statements.epoch();
        let now = crate::pool::clock::now_ms();
        let view = &self.current.view;
        let server = || {
            if view.primary == Some(index) {
                Server::Primary
            } else {
                Server::Replica {
                    replayed: view.backends.get(index).map_or(0, |b| b.replay_lsn()),
                    primary: view.primary_lsn,
                }
            }
        };
        let Some(read) = self.functions.begin_read(epoch, now, server) else {
            return;
        };
        let timeout = self.current.config.config.pool.connect_timeout;
        let Some(p) = self.server.as_mut() else {
            self.functions.finish_read(None, read);
            return;
        };
        let functions = match p.conn.simple_query(VOLATILE_FUNCTIONS_SQL, timeout).await {
            Ok(Ok(rows)) => Some(
                rows.into_iter()
                    .filter_map(|r| {
                        let mut cols = r.into_iter();
                        let name = cols.next().flatten()?;
                        let body = cols.next().flatten();
                        let oid = cols.next().flatten().and_then(|o| o.parse().ok());
                        let volatile = cols.next().flatten().is_none_or(|v| v == "v");
                        Some(Function {
                            oid: oid.unwrap_or_default(),
                            ..function(name, body.as_deref(), volatile)
                        })
                    })
                    .collect::<Vec<Function>>(),
            ),
            Ok(Err(e)) => {
                tracing::warn!(parent: &self.span, code = %e.code, error = %e.message, "could not read the database's volatile functions");
                None
            }
            Err(_) => None,
        };
        if let Some(f) = &functions {
            let settings = f.iter().filter(|f| f.settings.is_some()).count();
            tracing::debug!(parent: &self.span, functions = f.len(), settings, "volatile functions read");
        }
        self.functions.finish_read(functions, read);
    }

    /// The session effects of the query text `text` through its calls of the database's
    /// functions: [`Effects::SETTINGS`] when a called function's body may change settings
    /// (the custom setting names those bodies name are noted, to be read back with the
    /// others), [`Effects::STATE`] when one may keep state in the session, [`Effects::PIN`]
    /// when one pins its caller (the client is pinned now, for that reason).
    pub(super) fn function_effects(&mut self, text: &[u8]) -> Effects {
        let calls = self.functions.session_calls(text);
        self.note_calls(calls)
    }

    /// [`function_effects`](Self::function_effects) of calls found already.
    pub(super) fn note_calls(&mut self, calls: Option<Calls>) -> Effects {
        let Some(calls) = calls else {
            return Effects::NONE;
        };
        let effects = calls.effects();
        if calls.settings {
            self.custom_names.extend(calls.names);
        }
        if calls.computes_name {
            self.apply_effects(Effects::NONE, Some(super::settings::COMPUTED_SETTING));
        }
        if let Some(p) = calls.pin {
            self.apply_effects(Effects::NONE, Some(p.as_str()));
        }
        effects
    }

    /// What the calls of the database's functions in statement `s` do to the session
    /// ([`Effects::SETTINGS`], [`Effects::STATE`], [`Effects::PIN`]) with the function list
    /// known now: found again only when the list changed since the statement was last looked
    /// at.
    pub(super) fn statement_calls(&self, s: &Statement) -> Effects {
        if !self.functions.any_effects() {
            return Effects::NONE;
        }
        let generation = self.functions.generation() & (u64::MAX >> 16);
        let cached = s.calls.load(Ordering::Relaxed);
        if cached >> 16 == generation {
            return Effects::from_bits_truncate(cached as u16);
        }
        let effects = self
            .functions
            .session_calls(&s.query)
            .map_or(Effects::NONE, |c| c.effects());
        s.calls.store(
            generation << 16 | u64::from(effects.bits()),
            Ordering::Relaxed,
        );
        effects
    }

    /// The session effects of a FunctionCall of the database's function with OID `oid` (as
    /// [`function_effects`](Self::function_effects) for a call by name).
    pub(super) fn oid_effects(&mut self, oid: u32) -> Effects {
        let calls = self.functions.oid_calls(oid);
        self.note_calls(calls)
    }

    /// Whether the query text `text` calls one of the database's volatile functions not
    /// listed in `routing.read_functions`: then it runs on the primary.
    pub(super) fn calls_volatile(&self, text: &[u8]) -> bool {
        let exempt = &self.current.config.config.routing.read_functions;
        self.functions.calls_volatile(text, exempt)
    }

    /// A statement with a schema change is being sent: the functions it creates as volatile
    /// are known as such from now on (its session's next read may call one).
    pub(super) fn note_created_functions(&self, text: &[u8]) {
        let defined = crate::sql::volatile_functions_defined(&String::from_utf8_lossy(text));
        self.functions.add_created(
            defined
                .into_iter()
                .map(|d| function(d.name, d.body.as_deref(), true))
                .collect(),
        );
    }
}

/// The function `name` (`volatile` or not) with body `body` (when known): whether the body
/// may change settings (and which custom ones it names), keep state in the session or pin its
/// caller, and which functions it calls.
fn function(name: String, body: Option<&str>, volatile: bool) -> Function {
    let (sets, state) = match body {
        Some(b) if volatile => (
            crate::sql::body_sets_settings(b),
            crate::sql::body_keeps_state(b),
        ),
        Some(b) => crate::sql::stable_body_effects(b),
        None => (false, false),
    };
    let settings = body
        .filter(|_| sets)
        .map(super::settings::body_custom_names);
    // (A body computing a setting's name pins its callers, as such a statement does.)
    let computes_name =
        settings.is_some() && body.is_some_and(super::settings::computes_setting_name);
    let pin = body.and_then(crate::sql::body_pin);
    let calls = body.map(crate::sql::called_names).unwrap_or_default();
    Function {
        name,
        volatile,
        settings,
        state,
        computes_name,
        pin,
        calls,
        oid: 0,
    }
}
