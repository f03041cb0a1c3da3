//! `ident_file`: user-name maps in PostgreSQL's `pg_ident.conf` format, for `hba_file` lines
//! with `map=`. Such a `peer` or `cert` line lets in a client whose operating-system user (or
//! certificate name) a line of the map pairs with the user it asked for, instead of
//! requiring the two to be equal.
//!
//! Each line is `MAPNAME SYSTEM-USERNAME DATABASE-USERNAME`, as in PostgreSQL 16. A name
//! starting with `/`, quoted or not (quoted, it may hold commas and spaces), is a regular
//! expression, matched anywhere unless anchored. The system user name's first parenthesized
//! group replaces the first `\1` in a plain database user name. The database user name may
//! also be `all` (any user) or `+role` (the members of a role, read from the servers' catalog
//! as for `hba_file`). Names are compared case-sensitively. `@file` and `include` records work
//! as in `hba_file`. The file is read at start and on every reload.

use std::path::Path;

use super::conf_file::{self, Pattern, Record};

/// How a line matches the system user name.
#[derive(Debug, Clone)]
enum System {
    Name(String),
    Regex(regex::Regex),
}

/// How a line matches the database user name.
#[derive(Debug, Clone, PartialEq)]
enum User {
    /// A name; `\1` in it is replaced by the system user's expression's group.
    Name(String),
    All,
    /// The members of a role, directly or through other roles.
    Member(String),
    Regex(Pattern),
}

#[derive(Debug, Clone)]
struct Line {
    map: String,
    system: System,
    user: User,
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

/// [`IdentMap::permits`] reached a `+role` line: it needs the roles the user is a member of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeedsRoles;

impl IdentMap {
    /// Reads the file at `path`; the error names the line (1-based; 0 when the file itself
    /// cannot be read; for a line of an included file, the record including it, the message
    /// naming the file and line) and what is wrong.
    pub fn read(path: &Path) -> Result<IdentMap, (usize, String)> {
        Self::from_records(conf_file::read(path)?)
    }

    /// Reads a file's text (`@file`s and included files relative to the current directory).
    pub fn parse(text: &str) -> Result<IdentMap, (usize, String)> {
        Self::from_records(conf_file::parse(text, Path::new("."))?)
    }

    fn from_records(records: Vec<Record>) -> Result<IdentMap, (usize, String)> {
        let lines = records
            .iter()
            .map(|r| Self::line(r).map_err(|m| r.error(m)))
            .collect::<Result<_, _>>()?;
        Ok(IdentMap { lines })
    }

    fn line(r: &Record) -> Result<Line, String> {
        let f = &r.fields;
        let one = |i: usize, what: &str| match f.get(i).map(Vec::as_slice) {
            Some([t]) => Ok(t),
            Some(_) => Err(format!("{what} cannot be a list")),
            None => Err("missing entry at end of line".to_owned()),
        };
        let map = one(0, "the map name")?.text.clone();
        let system = one(1, "the system user name")?;
        let user = one(2, "the database user name")?;
        if f.len() > 3 {
            return Err("extra entry at end of line".into());
        }
        let system = match system.text.strip_prefix('/') {
            Some(re) => System::Regex(
                regex::Regex::new(re)
                    .map_err(|e| format!("invalid regular expression \"{re}\": {e}"))?,
            ),
            None => System::Name(system.text.clone()),
        };
        let user = match (user.text.as_str(), user.quoted) {
            (u, _) if u.starts_with('/') => User::Regex(Pattern::new(&u[1..])?),
            ("all", false) => User::All,
            (u, false) if u.starts_with('+') => User::Member(u[1..].to_owned()),
            (u, _) => User::Name(u.to_owned()),
        };
        if let (System::Regex(r), User::Name(u)) = (&system, &user) {
            if u.contains("\\1") && r.captures_len() < 2 {
                return Err(format!(
                    "regular expression \"{}\" has no subexpressions as requested by backreference in \"{u}\"",
                    r.as_str()
                ));
            }
        }
        Ok(Line { map, system, user })
    }

    /// Whether the map named `map` has a line letting the system user `system` log in as
    /// the database user `user` (cut to 63 bytes, as PostgreSQL compares it). `roles`: the
    /// roles `user` is a member of, itself included; `Err` when a `+role` line is reached
    /// without them (ask again with them). A line whose expression matches without its group
    /// while the user name asks for `\1` ends the search, refused, as in PostgreSQL.
    pub fn permits(
        &self,
        map: &str,
        system: &str,
        user: &str,
        roles: Option<&[String]>,
    ) -> Result<bool, NeedsRoles> {
        let user = super::hba::cut(user);
        for l in self.lines.iter().filter(|l| l.map == map) {
            // The `\1` of a plain name, replaced; `None`: the system user does not match.
            let name = match &l.system {
                System::Name(n) if n == system => None,
                System::Name(_) => continue,
                System::Regex(r) => match r.captures(system) {
                    None => continue,
                    Some(c) => match &l.user {
                        User::Name(u) if u.contains("\\1") => match c.get(1) {
                            Some(g) => Some(u.replacen("\\1", g.as_str(), 1)),
                            None => {
                                tracing::info!(
                                    map,
                                    regex = r.as_str(),
                                    "the expression matched without its group, which the user name needs"
                                );
                                return Ok(false);
                            }
                        },
                        _ => None,
                    },
                },
            };
            let ok = match (&l.user, name) {
                (_, Some(n)) => n.as_bytes() == user,
                (User::Name(n), None) => n.as_bytes() == user,
                (User::All, None) => true,
                (User::Regex(p), None) => p.is_match(user),
                // (A `+role` longer than a name can be is no role's.)
                (User::Member(role), None) => roles
                    .ok_or(NeedsRoles)?
                    .iter()
                    .any(|r| r.as_bytes() == role.as_bytes()),
            };
            if ok {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether some line's database user is a `+role` (its logins may read role membership).
    pub fn uses_roles(&self) -> bool {
        self.lines.iter().any(|l| matches!(l.user, User::Member(_)))
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

    fn ok(m: &IdentMap, map: &str, system: &str, user: &str) -> bool {
        m.permits(map, system, user, None).unwrap()
    }

    #[test]
    fn all_role_members_and_expressions_match_database_user_names() {
        let m = IdentMap::parse(
            "any   admin      all\n\
             ops   /^(dba)-   +\\1staff\n\
             ops   carol      \"+literal\"\n\
             ops   carol      \"all\"\n\
             rx    /^svc-(.*)$  /^app_\n\
             rx    bob        \"/_ro$\"\n",
        )
        .unwrap();
        assert!(ok(&m, "any", "admin", "whoever"));
        assert!(!ok(&m, "any", "admin2", "whoever"));
        // `+role` needs the user's roles; `\1` is not replaced in it (a role named so).
        assert_eq!(m.permits("ops", "dba-x", "alice", None), Err(NeedsRoles));
        let roles = ["alice".to_owned(), "\\1staff".to_owned()];
        assert_eq!(m.permits("ops", "dba-x", "alice", Some(&roles)), Ok(true));
        let roles = ["alice".to_owned(), "dbastaff".to_owned()];
        assert_eq!(m.permits("ops", "dba-x", "alice", Some(&roles)), Ok(false));
        // Quoted, `+` and `all` are names.
        assert!(ok(&m, "ops", "carol", "+literal"));
        assert!(ok(&m, "ops", "carol", "all"));
        assert!(!ok(&m, "ops", "carol", "dave"));
        // A database user expression, anywhere unless anchored; quoted too.
        assert!(ok(&m, "rx", "svc-batch", "app_reports"));
        assert!(!ok(&m, "rx", "svc-batch", "reports_app"));
        assert!(ok(&m, "rx", "bob", "sales_ro"));
        assert!(!ok(&m, "rx", "bob", "sales_rw"));
        // Lines before a `+role` line decide without the roles.
        let m = IdentMap::parse("m alice alice\nm alice +ops\n").unwrap();
        assert_eq!(m.permits("m", "alice", "alice", None), Ok(true));
        assert_eq!(m.permits("m", "alice", "bob", None), Err(NeedsRoles));
        assert_eq!(m.permits("m", "carol", "bob", None), Ok(false));
        assert!(m.uses_roles() && !IdentMap::parse("m a all\n").unwrap().uses_roles());
    }

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
        assert!(ok(&m, "ops", "root", "postgres"));
        assert!(ok(&m, "ops", "alice", "alice"));
        assert!(ok(&m, "ops", "alice", "report"));
        // Only the pairs listed, only in their own map, case-sensitively.
        assert!(!ok(&m, "ops", "root", "alice"));
        assert!(!ok(&m, "ops", "Root", "postgres"));
        assert!(!ok(&m, "web", "root", "postgres"));
        assert!(!ok(&m, "nomap", "alice", "alice"));
        // A group of the expression replaces \1.
        assert!(ok(&m, "web map", "carol@example.com", "carol"));
        assert!(!ok(&m, "web map", "carol@example.com", "dave"));
        assert!(!ok(&m, "web map", "carol@example.org", "carol"));
        // Unanchored at the end: any name starting svc-.
        assert!(ok(&m, "web", "svc-batch", "app"));
        assert!(!ok(&m, "web", "xsvc-batch", "app"));
        assert!(ok(&m, "web", "Bob Smith", "bob"));
        assert!(m.has_map("web map") && !m.has_map("nomap"));
        // A quoted expression may hold commas.
        assert!(ok(&m, "dn", "CN=carol,O=Ex", "carol"));
    }

    #[test]
    fn a_group_that_took_no_part_ends_the_search_refused() {
        let m = IdentMap::parse("m /^(x)?y$ \\1admin\nm y yadmin\nm /^z$ \\1\n").unwrap_err();
        assert!(m.1.contains("no subexpressions"), "{m:?}");
        let m = IdentMap::parse("m /^(x)?y$ \\1admin\nm y admin\n").unwrap();
        assert!(ok(&m, "m", "xy", "xadmin"));
        // PostgreSQL stops at the first line's error: the second line is not tried.
        assert!(!ok(&m, "m", "y", "admin"));
        // Names are compared as PostgreSQL cuts them.
        let long = "r".repeat(63);
        let m = IdentMap::parse(&format!("m alice {long}\n")).unwrap();
        assert!(ok(&m, "m", "alice", &format!("{long}xyz")));
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
