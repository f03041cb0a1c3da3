//! `ident_file`: user-name maps in PostgreSQL's `pg_ident.conf` format, for `hba_file` lines
//! with `map=`. Such a `peer` or `cert` line lets in a client whose operating-system user (or
//! certificate common name) a line of the map pairs with the user it asked for, instead of
//! requiring the two to be equal.
//!
//! Each line is `MAPNAME SYSTEM-USERNAME DATABASE-USERNAME`, as in PostgreSQL 15: a system user
//! name starting with `/`, quoted or not (quoted, it may hold commas and spaces), is a regular
//! expression (matched anywhere unless anchored), whose
//! first parenthesized group replaces the first `\1` in the database user name. Names are
//! compared case-sensitively. The file is read at start and on every reload.

use std::path::Path;

use super::conf_file::{fields, logical_lines};

/// How a line matches the system user name.
#[derive(Debug, Clone)]
enum System {
    Name(String),
    Regex(regex::Regex),
}

#[derive(Debug, Clone)]
struct Line {
    map: String,
    system: System,
    user: String,
}

impl PartialEq for Line {
    fn eq(&self, other: &Line) -> bool {
        let text = |s: &System| match s {
            System::Name(n) => format!("n{n}"),
            System::Regex(r) => format!("r{}", r.as_str()),
        };
        self.map == other.map
            && self.user == other.user
            && text(&self.system) == text(&other.system)
    }
}

/// The parsed file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct IdentMap {
    lines: Vec<Line>,
}

impl IdentMap {
    /// Reads the file at `path`; the error names the line (1-based; 0 when the file itself
    /// cannot be read) and what is wrong.
    pub fn read(path: &Path) -> Result<IdentMap, (usize, String)> {
        let text = std::fs::read_to_string(path).map_err(|e| (0, e.to_string()))?;
        Self::parse(&text)
    }

    /// Reads a file's text.
    pub fn parse(text: &str) -> Result<IdentMap, (usize, String)> {
        let mut lines = Vec::new();
        for (n, text) in logical_lines(text) {
            let f = fields(&text).map_err(|m| (n, m))?;
            if f.is_empty() {
                continue;
            }
            let one = |i: usize, what: &str| -> Result<String, (usize, String)> {
                match f.get(i).map(Vec::as_slice) {
                    Some([t]) => Ok(t.text.clone()),
                    Some(_) => Err((n, format!("{what} cannot be a list"))),
                    None => Err((n, "missing entry at end of line".into())),
                }
            };
            let map = one(0, "the map name")?;
            let system = one(1, "the system user name")?;
            let user = one(2, "the database user name")?;
            if f.len() > 3 {
                return Err((n, "extra entry at end of line".into()));
            }
            let system = match system.strip_prefix('/') {
                Some(re) => System::Regex(
                    regex::Regex::new(re)
                        .map_err(|e| (n, format!("invalid regular expression \"{re}\": {e}")))?,
                ),
                None => System::Name(system),
            };
            if let System::Regex(r) = &system {
                if user.contains("\\1") && r.captures_len() < 2 {
                    return Err((
                        n,
                        format!(
                            "regular expression \"{}\" has no subexpressions as requested by backreference in \"{user}\"",
                            r.as_str()
                        ),
                    ));
                }
            }
            lines.push(Line { map, system, user });
        }
        Ok(IdentMap { lines })
    }

    /// Whether the map named `map` has a line letting the system user `system` log in as
    /// the database user `user` (cut to 63 bytes, as PostgreSQL compares it). A line whose
    /// expression matches without its group while the user name asks for `\1` ends the
    /// search, refused, as in PostgreSQL.
    pub fn permits(&self, map: &str, system: &str, user: &str) -> bool {
        let user = super::hba::cut(user);
        for l in self.lines.iter().filter(|l| l.map == map) {
            let ok = match &l.system {
                System::Name(n) => n == system && l.user.as_bytes() == user,
                System::Regex(r) => match r.captures(system) {
                    Some(c) if l.user.contains("\\1") => match c.get(1) {
                        Some(g) => l.user.replacen("\\1", g.as_str(), 1).as_bytes() == user,
                        None => {
                            tracing::info!(
                                map,
                                regex = r.as_str(),
                                "the expression matched without its group, which the user name needs"
                            );
                            return false;
                        }
                    },
                    Some(_) => l.user.as_bytes() == user,
                    None => false,
                },
            };
            if ok {
                return true;
            }
        }
        false
    }

    /// Whether a map of this name has any line (an `hba_file` line naming one that has none
    /// lets nobody in, which is worth a warning).
    pub fn has_map(&self, map: &str) -> bool {
        self.lines.iter().any(|l| l.map == map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_regular_expressions_map_system_users_to_roles() {
        let m = IdentMap::parse(
            "# MAPNAME  SYSTEM-USERNAME       PG-USERNAME\n\
             ops        root                  postgres\n\
             ops        alice                 alice\n\
             ops        alice                 report\n\
             \"web map\" /^(.*)@example\\.com$  \\1\n\
             web        /^svc-                app\n\
             web        \"Bob Smith\"         bob # a quoted name\n\
             dn         \"/^CN=([a-z]+),O=Ex$\" \\1\n",
        )
        .unwrap();
        assert!(m.permits("ops", "root", "postgres"));
        assert!(m.permits("ops", "alice", "alice"));
        assert!(m.permits("ops", "alice", "report"));
        // Only the pairs listed, only in their own map, case-sensitively.
        assert!(!m.permits("ops", "root", "alice"));
        assert!(!m.permits("ops", "Root", "postgres"));
        assert!(!m.permits("web", "root", "postgres"));
        assert!(!m.permits("nomap", "alice", "alice"));
        // A group of the expression replaces \1.
        assert!(m.permits("web map", "carol@example.com", "carol"));
        assert!(!m.permits("web map", "carol@example.com", "dave"));
        assert!(!m.permits("web map", "carol@example.org", "carol"));
        // Unanchored at the end: any name starting svc-.
        assert!(m.permits("web", "svc-batch", "app"));
        assert!(!m.permits("web", "xsvc-batch", "app"));
        assert!(m.permits("web", "Bob Smith", "bob"));
        assert!(m.has_map("web map") && !m.has_map("nomap"));
        // A quoted expression may hold commas.
        assert!(m.permits("dn", "CN=carol,O=Ex", "carol"));
    }

    #[test]
    fn a_group_that_took_no_part_ends_the_search_refused() {
        let m = IdentMap::parse("m /^(x)?y$ \\1admin\nm y yadmin\nm /^z$ \\1\n").unwrap_err();
        assert!(m.1.contains("no subexpressions"), "{m:?}");
        let m = IdentMap::parse("m /^(x)?y$ \\1admin\nm y admin\n").unwrap();
        assert!(m.permits("m", "xy", "xadmin"));
        // PostgreSQL stops at the first line's error: the second line is not tried.
        assert!(!m.permits("m", "y", "admin"));
        // Names are compared as PostgreSQL cuts them.
        let long = "r".repeat(63);
        let m = IdentMap::parse(&format!("m alice {long}\n")).unwrap();
        assert!(m.permits("m", "alice", &format!("{long}xyz")));
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            ("ops root", "missing entry"),
            ("ops root postgres extra", "extra entry"),
            ("ops /a( postgres", "invalid regular expression"),
            ("ops /^a \\1", "no subexpressions"),
            ("ops a,b postgres", "cannot be a list"),
        ];
        for (text, want) in cases {
            let (line, msg) = IdentMap::parse(&format!("# x\n{text}\n")).unwrap_err();
            assert_eq!(line, 2, "{text}");
            assert!(msg.contains(want), "{text}: {msg}");
        }
    }
}
