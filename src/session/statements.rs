//! Named prepared statements across server connections.
//!
//! A client's `Parse` of a named statement is interned proxy-wide by (query, parameter types):
//! identical statements from any client share one server-side name (`_sy<id>`), so JDBC's
//! `S_1` from two clients never clash, and a server connection that already has a statement
//! prepared is not asked to prepare it again. Each server connection records which ids it has;
//! a client's Bind or Describe on a connection that lacks one prepares it there first.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Prefix of proxy-wide statement names; client names with it are refused as unknown.
pub const PREFIX: &[u8] = b"_sy";

/// One interned statement.
#[derive(Debug)]
pub struct Statement {
    /// Proxy-wide id.
    pub id: u64,
    /// The server-side name, `_sy<id>`.
    pub server_name: Bytes,
    /// Query text (without the NUL).
    pub query: Bytes,
    /// The raw parameter-type section of Parse (Int16 count, Int32 OIDs).
    pub types: Bytes,
    /// Whether it is a read by classification, and its routing hint (classified once).
    pub route: std::sync::OnceLock<(bool, Option<crate::sql::Route>)>,
}

/// The proxy-wide registry; looked up only when a client parses a named statement.
#[derive(Default)]
pub struct Registry {
    /// Keyed by (query, parameter types, search_path at Parse time).
    map: Mutex<HashMap<(Bytes, Bytes, Bytes), Arc<Statement>>>,
    next: AtomicU64,
}

impl Registry {
    /// The interned statement for (query, types) parsed under `search_path`: the same text
    /// under another search_path may name other tables, so it is another statement.
    pub fn intern(&self, query: &[u8], types: &[u8], search_path: &[u8]) -> Arc<Statement> {
        let key = (
            Bytes::copy_from_slice(query),
            Bytes::copy_from_slice(types),
            Bytes::copy_from_slice(search_path),
        );
        let mut map = self.map.lock().expect("registry");
        if let Some(s) = map.get(&key) {
            return s.clone();
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let s = Arc::new(Statement {
            id,
            server_name: Bytes::from(format!("_sy{id}")),
            query: Bytes::copy_from_slice(query),
            types: Bytes::copy_from_slice(types),
            route: std::sync::OnceLock::new(),
        });
        map.insert(key, s.clone());
        s
    }

    /// Number of interned statements.
    pub fn len(&self) -> usize {
        self.map.lock().expect("registry").len()
    }

    /// Whether none are interned.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Splits a Parse body into (name, query, types section).
pub fn split_parse(body: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let (name, rest) = crate::protocol::read_cstr(body)?;
    let (query, types) = crate::protocol::read_cstr(rest)?;
    Some((name, query, types))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_shares_identical_statements() {
        let r = Registry::default();
        let a = r.intern(b"select $1", b"\0\x01\0\0\0\x17", b"");
        let b = r.intern(b"select $1", b"\0\x01\0\0\0\x17", b"");
        let c = r.intern(b"select $1", b"\0\0", b"");
        let d = r.intern(b"select $1", b"\0\0", b"tenant_a");
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, c.id);
        assert_ne!(c.id, d.id);
        assert_eq!(&a.server_name[..], format!("_sy{}", a.id).as_bytes());
        assert_eq!(r.len(), 3);
    }

    #[test]
    fn parse_body_split() {
        assert_eq!(
            split_parse(b"s1\0select 1\0\0\0"),
            Some((&b"s1"[..], &b"select 1"[..], &b"\0\0"[..]))
        );
        assert_eq!(split_parse(b"s1\0select 1"), None);
    }
}
