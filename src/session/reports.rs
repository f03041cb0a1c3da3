//! The ParameterStatus messages a client gets, as PostgreSQL 14 and later send them: one per
//! reported setting whose value changed since the client was last told, just before the
//! ReadyForQuery that ends the request.
//!
//! A pooled client hears from several server connections, and the proxy's own queries run on
//! them too: a `RESET ALL` reports the connection's default for `client_encoding`, and the
//! query that puts the client's startup value back right behind it reports that value again.
//! Each change is kept until the client's ReadyForQuery goes out, and only the values that
//! differ from what the client knows reach it, so it sees what a direct connection would show.

use bytes::BytesMut;

use crate::protocol::{encode, read_cstr};

/// A setting's name and value, as a ParameterStatus carries them.
type Report = (Box<[u8]>, Box<[u8]>);

#[derive(Debug, Default)]
pub struct Reports {
    /// What the client was told last, per setting.
    told: Vec<Report>,
    /// Values the servers reported since, not yet told (the latest per setting).
    changed: Vec<Report>,
}

impl Reports {
    /// The client was greeted with `params`.
    pub fn greeted(params: &[(String, String)]) -> Reports {
        Reports {
            told: params
                .iter()
                .map(|(k, v)| (k.as_bytes().into(), v.as_bytes().into()))
                .collect(),
            changed: Vec::new(),
        }
    }

    /// A server reported a value (a ParameterStatus body: name, value).
    pub fn note(&mut self, body: &[u8]) {
        let Some((name, rest)) = read_cstr(body) else {
            return;
        };
        let value = read_cstr(rest).map_or(rest, |v| v.0);
        match self.changed.iter_mut().find(|(k, _)| **k == *name) {
            Some((_, v)) => *v = value.into(),
            None => self.changed.push((name.into(), value.into())),
        }
    }

    /// Whether any value waits to be told.
    pub fn pending(&self) -> bool {
        !self.changed.is_empty()
    }

    /// Encodes a ParameterStatus for each reported value that differs from what the client
    /// was told (to go just before its ReadyForQuery).
    pub fn tell(&mut self, out: &mut BytesMut) {
        for (name, value) in self.changed.drain(..) {
            match self.told.iter_mut().find(|(k, _)| *k == name) {
                Some((_, v)) if *v == value => continue,
                Some((_, v)) => *v = value.clone(),
                None => self.told.push((name.clone(), value.clone())),
            }
            encode::parameter_status(out, &name, &value);
        }
    }

    /// The connection that reported them is gone before the client's ReadyForQuery: the
    /// client never hears of them (nor would it have from its own server).
    pub fn forget(&mut self) {
        self.changed.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{tag, Header};

    fn body(name: &str, value: &str) -> Vec<u8> {
        format!("{name}\0{value}\0").into_bytes()
    }

    fn told(r: &mut Reports) -> Vec<(String, String)> {
        let mut out = BytesMut::new();
        r.tell(&mut out);
        let mut seen = Vec::new();
        while let Ok(Some(h)) = Header::peek(&out, usize::MAX) {
            assert_eq!(h.tag, tag::PARAMETER_STATUS);
            let (k, rest) = read_cstr(&out[5..h.frame_len]).unwrap();
            let (v, _) = read_cstr(rest).unwrap();
            seen.push((
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            ));
            let _ = out.split_to(h.frame_len);
        }
        seen
    }

    #[test]
    fn only_changes_that_last_are_told() {
        let mut r = Reports::greeted(&[
            ("client_encoding".into(), "UTF8".into()),
            ("DateStyle".into(), "ISO, MDY".into()),
        ]);
        // RESET ALL reports the connection's default, the restore the startup value.
        r.note(&body("client_encoding", "LATIN1"));
        r.note(&body("DateStyle", "ISO, MDY"));
        r.note(&body("client_encoding", "UTF8"));
        assert!(r.pending());
        assert!(told(&mut r).is_empty());
        assert!(!r.pending());
        // A real change is told once, and a new setting too.
        r.note(&body("DateStyle", "SQL, DMY"));
        r.note(&body("application_name", "x"));
        assert_eq!(
            told(&mut r),
            [
                ("DateStyle".into(), "SQL, DMY".into()),
                ("application_name".into(), "x".into())
            ]
        );
        r.note(&body("DateStyle", "SQL, DMY"));
        assert!(told(&mut r).is_empty());
        // What a lost connection reported is not told.
        r.note(&body("DateStyle", "ISO, MDY"));
        r.forget();
        assert!(told(&mut r).is_empty());
        // A malformed body is ignored.
        r.note(b"no terminator");
        assert!(!r.pending());
    }
}
