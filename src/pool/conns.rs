//! A pool's connections and the policy that picks one: the idle list with its affinity
//! ([`Conns::take`]), the count of connections being opened, and the registry of open
//! sockets a backend declared down is severed through.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::full::Full;
use super::ServerConn;

/// A pool's connections: idle ones, and the socket of every open one (so that a backend the
/// monitor declared down can have every in-flight request on it failed at once, instead of
/// each waiting for TCP to notice). Sockets are registered when a connection opens and removed
/// when it closes, so checkout and checkin only move a pointer.
#[derive(Default)]
pub(super) struct Conns {
    /// Boxed so a checkout or checkin moves a pointer, not the whole connection state.
    #[allow(clippy::vec_box)]
    pub(super) idle: Vec<Box<ServerConn>>,
    /// Each open connection's socket.
    pub(super) sockets: HashMap<RawFd, Socket>,
    /// Connections being opened (counted against the pool size with `sockets`).
    pub(super) opening: usize,
    /// How many times the pool was severed: a connection whose opening began before the
    /// latest sever is not registered (it may reach a server declared down or fenced).
    pub(super) severs: u64,
    /// The server refused a new connection for want of slots (53300: `max_connections`, or
    /// the role's or the database's connection limit): for a while, checkouts take the
    /// pool's idle connections or wait for one to come back, and one at a time tries to open
    /// another now and then (full.rs).
    pub(super) full: Option<Full>,
    /// Woken when, with `full` set, a connection comes back idle, opens or closes.
    pub(super) returned: Arc<Notify>,
}

/// An open connection's registration.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Socket {
    /// When it was opened ([`clock`] milliseconds).
    pub(super) opened: u64,
    /// Its server process's id and cancel secret.
    pub(super) key: (i32, i32),
}

/// What a checkout is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// A client's request.
    Request,
    /// A client's login, whose process id will be the server process's (see
    /// [`Conns::take`]).
    Login,
    /// The login of a session-mode client that must get a server session nobody used
    /// (`session_reuse = false`): a connection that never served a client, or a new one.
    OwnSession,
}

/// What checkout does when the client's own connection is not idle.
pub(super) enum Take {
    /// This idle connection.
    Idle(Box<ServerConn>),
    /// Close this idle connection, which served other clients, to make room for a new one
    /// ([`Use::OwnSession`] in a pool at its size), then look again.
    Replace(Box<ServerConn>),
    /// Open a new connection (the caller holds an [`Opening`] slot).
    Open,
    /// The server has no slot left and nothing is idle: wait for a connection to come back
    /// (see [`Conns::returned`]), at most until this time ([`clock`] ms), then look again.
    Wait(u64),
}

impl Conns {
    /// Picks a connection for `owner` (0: nobody in particular). With `affinity`: its own idle
    /// one; else the most recently used idle one that no connected client owns; else a new
    /// one while the pool has room; else the idle one unused the longest (its client is the
    /// least likely to be back soon). Without: the most recently used idle one, whoever used
    /// it (its server process is the likeliest to still be in the CPU's caches), else a new
    /// one. For a [`Use::Login`], a free connection whose process id was given
    /// to a client before comes after a new one, and among those the one given out longest
    /// ago. For a [`Use::OwnSession`], only a connection that never served a client will do:
    /// else a new one, made room for by closing an idle one when the pool is at its size (a
    /// pool's connections may have served transaction-mode clients before a reload made
    /// its clients session-mode ones: their sequence state, statistics and the like are not
    /// reset).
    pub(super) fn take(&mut self, owner: u64, size: usize, use_: Use, affinity: bool) -> Take {
        match use_ {
            Use::Request => {}
            Use::Login => return self.take_for_login(size),
            Use::OwnSession => return self.take_unused(size),
        }
        let pick = if affinity {
            self.own_or_free(owner)
        } else {
            self.idle.len().checked_sub(1)
        };
        if let Some(i) = pick {
            return Take::Idle(self.idle.remove(i));
        }
        if self.idle.is_empty() || self.sockets.len() + self.opening < size {
            if let Some(t) = self.open_or_wait() {
                return t;
            }
        }
        Take::Idle(self.idle.remove(0))
    }

    /// The index of `owner`'s own idle connection, else of the most recently used one that no
    /// connected client owns.
    fn own_or_free(&self, owner: u64) -> Option<usize> {
        let mut free = None;
        for (i, c) in self.idle.iter().enumerate().rev() {
            if owner != 0 && c.owner == owner {
                return Some(i);
            }
            if c.owner == 0 && free.is_none() {
                free = Some(i);
                if owner == 0 {
                    break;
                }
            }
        }
        free
    }

    fn take_unused(&mut self, size: usize) -> Take {
        let unused = |c: &ServerConn| c.owner == 0 && c.told == 0 && c.holder.is_none();
        if let Some(i) = self.idle.iter().rposition(|c| unused(c)) {
            return Take::Idle(self.idle.remove(i));
        }
        if self.idle.is_empty() || self.sockets.len() + self.opening < size {
            if let Some(t) = self.open_or_wait() {
                return t;
            }
        }
        // The one unused the longest.
        Take::Replace(self.idle.remove(0))
    }

    fn take_for_login(&mut self, size: usize) -> Take {
        if let Some(i) = self.idle.iter().rposition(|c| c.owner == 0 && c.told == 0) {
            return Take::Idle(self.idle.remove(i));
        }
        if self.idle.is_empty() || self.sockets.len() + self.opening < size {
            if let Some(t) = self.open_or_wait() {
                return t;
            }
        }
        let oldest = self
            .idle
            .iter()
            .enumerate()
            .filter(|(_, c)| c.owner == 0)
            .min_by_key(|(_, c)| c.told)
            .map_or(0, |(i, _)| i);
        Take::Idle(self.idle.remove(oldest))
    }
}

/// A connection being opened; holds its place in the pool's count until it is registered.
pub(super) struct Opening(pub(super) Arc<Mutex<Conns>>);

impl Drop for Opening {
    fn drop(&mut self) {
        if let Ok(mut c) = self.0.lock() {
            c.opening -= 1;
        }
    }
}

/// Registration of an open connection's socket; removed when the connection is dropped.
pub struct SocketGuard {
    pub(super) conns: Arc<Mutex<Conns>>,
    pub(super) fd: RawFd,
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        if let Ok(mut c) = self.conns.lock() {
            c.sockets.remove(&self.fd);
            c.slot_freed(false);
        }
    }
}
