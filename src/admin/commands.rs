//! The admin console's language: what a query text asks for, and the columns of each answer.
//! Pure: executing a command is [`super::console`]'s job.

use super::table::{Column, Type};

/// One console command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `SHOW ...`.
    Show(Show),
    /// `RELOAD`: re-read the configuration file (as SIGHUP does).
    Reload,
    /// `KILL pid`: end the client that was given this process id.
    Kill(i32),
    /// `KILL db`: pause the database, end its clients, close its server connections.
    KillDatabase(String),
    /// `DISABLE db`: refuse new logins to the database.
    Disable(String),
    /// `ENABLE db`: accept them again.
    Enable(String),
    /// `PAUSE [db]`: new transactions (of every database, or of `db`) wait; returns once the
    /// open ones have ended.
    Pause(Option<String>),
    /// `RESUME [db]`: the waiting transactions go on (all of them, or `db`'s).
    Resume(Option<String>),
    /// `SHUTDOWN`: what SIGTERM does (stop accepting, let open transactions finish).
    Shutdown,
    /// `RECONNECT [db]`: replace every server connection (of `db`): idle ones now, others
    /// when released.
    Reconnect(Option<String>),
    /// `WAIT_CLOSE [db]`: returns once the connections a `RECONNECT` (of `db`) marked are
    /// closed.
    WaitClose(Option<String>),
    /// `SET ...`: accepted and ignored (drivers send settings when they connect).
    Set,
    /// Nothing (an empty query).
    Empty,
}

/// What `SHOW` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    Help,
    Version,
    Backends,
    Pools,
    Clients,
    Servers,
    Config,
}

/// A command the console refuses, with its SQLSTATE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandError {
    pub code: &'static str,
    pub message: String,
}

impl CommandError {
    pub fn new(code: &'static str, message: impl Into<String>) -> CommandError {
        CommandError {
            code,
            message: message.into(),
        }
    }
}

/// The commands, for `SHOW HELP` and error messages: (syntax, what it does).
pub const HELP: &[(&str, &str)] = &[
    ("SHOW HELP", "this list"),
    ("SHOW VERSION", "switchyard's version"),
    (
        "SHOW BACKENDS",
        "servers: role, health, timeline, lag, traffic",
    ),
    (
        "SHOW POOLS",
        "server connection pools and their waiting clients",
    ),
    (
        "SHOW CLIENTS",
        "client connections and the server each uses now",
    ),
    (
        "SHOW SERVERS",
        "server connections: idle, or serving a client",
    ),
    ("SHOW CONFIG", "the configuration in effect"),
    (
        "RELOAD",
        "re-read the configuration file, as SIGHUP does (admin users)",
    ),
    (
        "KILL pid",
        "end the client given that process id (admin users)",
    ),
    (
        "KILL db",
        "pause db, end its clients and close its server connections; RESUME db lets clients in again (admin users)",
    ),
    (
        "DISABLE db",
        "refuse new logins to db; its connected clients go on (admin users)",
    ),
    ("ENABLE db", "accept logins to db again (admin users)"),
    (
        "PAUSE [db]",
        "hold new transactions and logins (of every database, or of db) until RESUME; returns once the open transactions ended (admin users)",
    ),
    (
        "RESUME [db]",
        "let the held transactions go on (all, or db's) (admin users)",
    ),
    (
        "RECONNECT [db]",
        "close every server connection (of db), idle ones now and the others when released (admin users)",
    ),
    (
        "WAIT_CLOSE [db]",
        "return once the server connections RECONNECT marked (of db) are closed (admin users)",
    ),
    (
        "SHUTDOWN",
        "stop accepting clients and close once open transactions end, as SIGTERM does (admin users)",
    ),
];

/// The statements of a query text, split at semicolons and with comments removed, as SQL
/// reads them (not inside a quoted name: `"a;b"`, `"a--b"`); empty statements are dropped.
pub fn statements(text: &str) -> Vec<String> {
    crate::sql::split_statements(text)
        .map(|s| {
            let mut out = String::with_capacity(s.len());
            let mut at = 0;
            for c in crate::sql::Lexer::new(s).filter(|t| t.is_comment()) {
                out.push_str(&s[at..c.offset]);
                out.push(' ');
                at = c.end();
            }
            out.push_str(&s[at..]);
            out.trim().to_owned()
        })
        .filter(|s| !s.is_empty())
        .collect()
}

/// The words of a statement: split at whitespace, but not inside double quotes (a database
/// named `"my db"`).
fn words(statement: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted) = (None, false);
    for (i, c) in statement.char_indices() {
        if c.is_whitespace() && !quoted {
            if let Some(s) = start.take() {
                out.push(&statement[s..i]);
            }
            continue;
        }
        quoted ^= c == '"';
        start.get_or_insert(i);
    }
    if let Some(s) = start {
        out.push(&statement[s..]);
    }
    out
}

/// Parses one statement (as [`statements`] returns them; `""` is [`Command::Empty`]).
pub fn parse(statement: &str) -> Result<Command, CommandError> {
    let words = words(statement);
    let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
    let upper: Vec<&str> = upper.iter().map(String::as_str).collect();
    if upper.first() != Some(&"SET") {
        // Quoted names as PostgreSQL's lexer takes them: closed, and not empty.
        if statement.matches('"').count() % 2 == 1 {
            return Err(CommandError::new(
                "42601",
                format!(
                    "unterminated quoted identifier in \"{}\"",
                    statement.chars().take(60).collect::<String>()
                ),
            ));
        }
        if words.contains(&"\"\"") {
            return Err(CommandError::new(
                "42601",
                "zero-length delimited identifier at or near \"\"\"\"",
            ));
        }
    }
    match upper.as_slice() {
        [] => Ok(Command::Empty),
        ["SHOW", what] => match *what {
            "HELP" => Ok(Command::Show(Show::Help)),
            "VERSION" => Ok(Command::Show(Show::Version)),
            "BACKENDS" => Ok(Command::Show(Show::Backends)),
            "POOLS" => Ok(Command::Show(Show::Pools)),
            "CLIENTS" => Ok(Command::Show(Show::Clients)),
            "SERVERS" => Ok(Command::Show(Show::Servers)),
            "CONFIG" => Ok(Command::Show(Show::Config)),
            _ => Err(CommandError::new(
                "42704",
                format!(
                    "unrecognized SHOW item \"{}\": SHOW HELP lists the commands",
                    database(words[1])
                ),
            )),
        },
        ["RELOAD"] => Ok(Command::Reload),
        ["PAUSE"] => Ok(Command::Pause(None)),
        ["PAUSE", _] => Ok(Command::Pause(Some(database(words[1])))),
        ["RESUME"] => Ok(Command::Resume(None)),
        ["RESUME", _] => Ok(Command::Resume(Some(database(words[1])))),
        ["SHUTDOWN"] => Ok(Command::Shutdown),
        ["RECONNECT"] => Ok(Command::Reconnect(None)),
        ["RECONNECT", _] => Ok(Command::Reconnect(Some(database(words[1])))),
        ["WAIT_CLOSE"] => Ok(Command::WaitClose(None)),
        ["WAIT_CLOSE", _] => Ok(Command::WaitClose(Some(database(words[1])))),
        // A number is a client's process id; a database named like one is written in quotes.
        // Anything else starting like a number is a mistyped process id, not a database.
        ["KILL", _] => match words[1].parse::<i32>() {
            Ok(pid) => Ok(Command::Kill(pid)),
            Err(_)
                if words[1].starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '+') =>
            {
                Err(CommandError::new(
                    "42601",
                    format!(
                        "KILL takes a client's process id or a database name, not \"{}\"",
                        words[1]
                    ),
                ))
            }
            Err(_) => Ok(Command::KillDatabase(database(words[1]))),
        },
        ["DISABLE", _] => Ok(Command::Disable(database(words[1]))),
        ["ENABLE", _] => Ok(Command::Enable(database(words[1]))),
        ["KILL" | "DISABLE" | "ENABLE"] => Err(CommandError::new(
            "42601",
            format!(
                "{} takes a database name{}",
                upper[0],
                if upper[0] == "KILL" {
                    " or a client's process id"
                } else {
                    ""
                }
            ),
        )),
        ["SET", ..] => Ok(Command::Set),
        _ => Err(CommandError::new(
            "42601",
            format!(
                "unrecognized admin console command \"{}\": SHOW HELP lists the commands",
                statement.chars().take(60).collect::<String>()
            ),
        )),
    }
}

/// A database name as a command gives it: as written, or in double quotes.
fn database(word: &str) -> String {
    word.strip_prefix('"')
        .and_then(|w| w.strip_suffix('"'))
        .unwrap_or(word)
        .replace("\"\"", "\"")
}

impl Command {
    /// Whether a stats user (who may only look) may run it.
    pub fn only_looks(&self) -> bool {
        matches!(self, Command::Show(_) | Command::Set | Command::Empty)
    }

    /// The columns of its result; `None` for a command that returns no rows.
    pub fn columns(&self) -> Option<&'static [Column]> {
        use Type::{Bool, Int8, Text};
        let Command::Show(show) = self else {
            return None;
        };
        Some(match show {
            Show::Help => &[("command", Text), ("description", Text)],
            Show::Version => &[("version", Text)],
            Show::Config => &[("setting", Text)],
            Show::Backends => &[
                ("name", Text),
                ("address", Text),
                ("role", Text),
                ("up", Bool),
                ("elected", Bool),
                ("weight", Int8),
                ("timeline", Int8),
                ("lsn", Text),
                ("lag_bytes", Int8),
                ("lag_ms", Int8),
                ("replay_paused", Bool),
                ("outstanding", Int8),
                ("transactions", Int8),
                ("queries", Int8),
                ("server_connects", Int8),
                ("server_connect_errors", Int8),
                ("pool_waits", Int8),
                ("probe_error", Text),
            ],
            Show::Pools => &[
                ("backend", Text),
                ("user", Text),
                ("database", Text),
                ("size", Int8),
                ("in_use", Int8),
                ("idle", Int8),
                ("opening", Int8),
                ("waiting", Int8),
                ("server_full", Bool),
                ("paused", Bool),
                ("disabled", Bool),
            ],
            Show::Clients => &[
                ("pid", Int8),
                ("user", Text),
                ("database", Text),
                ("address", Text),
                ("port", Int8),
                ("tls", Bool),
                ("application_name", Text),
                ("state", Text),
                ("backend", Text),
                ("server_pid", Int8),
                ("connected_seconds", Int8),
            ],
            Show::Servers => &[
                ("backend", Text),
                ("user", Text),
                ("database", Text),
                ("pid", Int8),
                ("state", Text),
                ("client_pid", Int8),
                ("age_seconds", Int8),
                ("idle_seconds", Int8),
            ],
        })
    }

    /// The CommandComplete tag of a command without rows.
    pub fn tag(&self) -> &'static str {
        match self {
            Command::Show(_) => "SHOW",
            Command::Reload => "RELOAD",
            Command::Kill(_) | Command::KillDatabase(_) => "KILL",
            Command::Disable(_) => "DISABLE",
            Command::Enable(_) => "ENABLE",
            Command::Pause(_) => "PAUSE",
            Command::Resume(_) => "RESUME",
            Command::Shutdown => "SHUTDOWN",
            Command::Reconnect(_) => "RECONNECT",
            Command::WaitClose(_) => "WAIT_CLOSE",
            Command::Set => "SET",
            Command::Empty => "",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_at_semicolons_without_comments_or_empty_ones() {
        assert_eq!(statements("SHOW POOLS"), vec!["SHOW POOLS"]);
        assert_eq!(
            statements(" show pools ;SHOW clients;; "),
            vec!["show pools", "SHOW clients"]
        );
        assert_eq!(
            statements("-- a comment\nSHOW VERSION -- trailing\n;"),
            vec!["SHOW VERSION"]
        );
        assert!(statements("").is_empty());
        assert!(statements(" ; ;\n").is_empty());
        assert!(statements("-- only a comment").is_empty());
        assert_eq!(statements("SHOW\n  POOLS"), vec!["SHOW\n  POOLS"]);
        // Not inside a quoted name; block comments too.
        assert_eq!(
            statements("KILL \"a;b\"; DISABLE \"a--b\" /* why */ -- now"),
            vec!["KILL \"a;b\"", "DISABLE \"a--b\""]
        );
    }

    #[test]
    fn quoted_database_names_are_one_word() {
        assert_eq!(
            parse("PAUSE \"my db\""),
            Ok(Command::Pause(Some("my db".into())))
        );
        assert_eq!(
            parse("disable  \"a--b\""),
            Ok(Command::Disable("a--b".into()))
        );
        assert_eq!(
            parse("KILL \"say \"\"hi\"\" ;\""),
            Ok(Command::KillDatabase("say \"hi\" ;".into()))
        );
        assert_eq!(parse("KILL \"a\" b").unwrap_err().code, "42601");
        // Unterminated or empty: refused as PostgreSQL's lexer refuses them.
        for bad in ["KILL \"abc", "PAUSE \"a\"\"b", "KILL \"\"", "RESUME \"\""] {
            assert_eq!(parse(bad).unwrap_err().code, "42601", "{bad}");
        }
        let e = parse("SHOW \"pools\"").unwrap_err();
        assert_eq!(e.code, "42704");
        assert!(e.message.contains("item \"pools\""), "{}", e.message);
        assert_eq!(parse("SET application_name = 'a\"b'"), Ok(Command::Set));
    }

    #[test]
    fn commands_parse_case_insensitively() {
        assert_eq!(parse("show Pools"), Ok(Command::Show(Show::Pools)));
        assert_eq!(parse("SHOW  HELP"), Ok(Command::Show(Show::Help)));
        assert_eq!(parse("reload"), Ok(Command::Reload));
        assert_eq!(parse("KILL 4194305"), Ok(Command::Kill(4194305)));
        assert_eq!(parse("SET extra_float_digits = 3"), Ok(Command::Set));
        assert_eq!(parse(""), Ok(Command::Empty));
        for show in [
            "HELP", "VERSION", "BACKENDS", "POOLS", "CLIENTS", "SERVERS", "CONFIG",
        ] {
            let c = parse(&format!("SHOW {show}")).unwrap();
            assert!(c.columns().is_some() && c.only_looks(), "{show}");
            let documented = HELP
                .iter()
                .any(|(syntax, _)| *syntax == format!("SHOW {show}"));
            assert!(documented, "SHOW {show} is missing from HELP");
        }
    }

    #[test]
    fn bad_commands_get_the_sqlstate_postgresql_would_use() {
        assert_eq!(parse("SHOW nothing").unwrap_err().code, "42704");
        assert_eq!(parse("KILL").unwrap_err().code, "42601");
        assert_eq!(parse("KILL a b").unwrap_err().code, "42601");
        assert_eq!(parse("KILL 12x").unwrap_err().code, "42601");
        assert_eq!(parse("KILL 99999999999").unwrap_err().code, "42601");
        assert_eq!(parse("KILL -").unwrap_err().code, "42601");
        assert_eq!(parse("DISABLE").unwrap_err().code, "42601");
        assert_eq!(parse("enable").unwrap_err().code, "42601");
        assert_eq!(parse("SELECT 1").unwrap_err().code, "42601");
        assert_eq!(parse("SHOW POOLS now").unwrap_err().code, "42601");
        let e = parse("DROP TABLE x").unwrap_err();
        assert!(e.message.contains("SHOW HELP"), "{}", e.message);
    }

    #[test]
    fn only_show_set_and_nothing_are_for_stats_users() {
        assert!(!Command::Reload.only_looks());
        assert!(!Command::Kill(1).only_looks());
        assert!(!Command::Pause(None).only_looks() && !Command::Resume(None).only_looks());
        assert!(!Command::Shutdown.only_looks() && !Command::Reconnect(None).only_looks());
        assert!(!Command::WaitClose(None).only_looks());
        assert_eq!(parse("Reconnect"), Ok(Command::Reconnect(None)));
        assert_eq!(
            parse("RECONNECT app"),
            Ok(Command::Reconnect(Some("app".into())))
        );
        assert_eq!(parse("wait_close"), Ok(Command::WaitClose(None)));
        assert_eq!(
            parse("WAIT_CLOSE app"),
            Ok(Command::WaitClose(Some("app".into())))
        );
        assert_eq!(parse("shutdown"), Ok(Command::Shutdown));
        assert_eq!(parse("pause"), Ok(Command::Pause(None)));
        assert_eq!(parse("Resume"), Ok(Command::Resume(None)));
        assert_eq!(parse("PAUSE app"), Ok(Command::Pause(Some("app".into()))));
        assert_eq!(
            parse("resume \"Mixed\"\"Case\""),
            Ok(Command::Resume(Some("Mixed\"Case".into())))
        );
        assert!(parse("PAUSE a b").is_err());
        assert_eq!(parse("kill app"), Ok(Command::KillDatabase("app".into())));
        assert_eq!(
            parse("KILL \"42\""),
            Ok(Command::KillDatabase("42".into())),
            "a database named like a number, quoted"
        );
        assert_eq!(parse("Disable app"), Ok(Command::Disable("app".into())));
        assert_eq!(parse("ENABLE \"App\""), Ok(Command::Enable("App".into())));
        for c in [
            Command::KillDatabase("app".into()),
            Command::Disable("app".into()),
            Command::Enable("app".into()),
        ] {
            assert!(!c.only_looks() && c.columns().is_none(), "{c:?}");
            let documented = HELP.iter().any(|(syntax, _)| syntax.starts_with(c.tag()));
            assert!(documented, "{c:?} is missing from HELP");
        }
        assert_eq!(parse("RELOAD now").unwrap_err().code, "42601");
        assert!(Command::Set.only_looks());
        assert!(Command::Reload.columns().is_none());
        assert_eq!(Command::Reload.tag(), "RELOAD");
    }
}
