//! The `options` startup parameter: command-line switches for the server process, read the way
//! PostgreSQL reads them for a client (`process_postgres_switches` with a non-postmaster
//! context): `-c name=value`, `--name=value`, and the short switches that stand for a setting
//! (`-e` for `DateStyle = euro`, `-fs` for `enable_seqscan = off`, `-S 4MB` for `work_mem`, ...).
//! Switches only the postmaster may use (`-D`, `-E`, `-j`, `-r`, `-v`, `-b`) and the ignored ones
//! (`-C`, `-n`, `-T`) take no effect, as on the server.

/// Switches that take an argument (PostgreSQL's getopt string `B:bC:c:D:d:EeFf:h:ijk:lN:nOPp:r:S:sTt:v:W:-:`).
const WITH_ARGUMENT: &str = "BCcDdfhkNprStvW-";
/// Switches without one.
const WITHOUT_ARGUMENT: &str = "bEeFijlnOPsT";

/// Splits `options` into arguments as PostgreSQL's `pg_split_opts` does: C-locale whitespace
/// separates them and a backslash takes the next character as it is.
fn split(options: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut chars = options.chars();
    let mut in_arg = false;
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                cur.push(n);
                in_arg = true;
            }
        } else if matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r') {
            if in_arg {
                args.push(std::mem::take(&mut cur));
                in_arg = false;
            }
        } else {
            cur.push(c);
            in_arg = true;
        }
    }
    if in_arg {
        args.push(cur);
    }
    args
}

/// The settings `options` makes, in order, as (name, value). An error is the message
/// PostgreSQL gives (SQLSTATE 42601 for all of them). Like PostgreSQL, it stops at the first
/// bad switch and names the argument before getopt's position at that point, in the order
/// glibc's getopt has moved the arguments to by then (those that are not switches go behind
/// the switches read so far).
pub fn parse_options(options: &str) -> Result<Vec<(String, String)>, String> {
    let bad = |arg: &str| format!("invalid command-line argument for server process: {arg}");
    let mut out = Vec::new();
    // The first and the latest argument that is not a switch.
    let mut strays: Option<(String, String)> = None;
    // The latest argument read as a switch or a switch's value.
    let mut read = "postgres".to_owned();
    let mut args = split(options).into_iter();
    while let Some(arg) = args.next() {
        if arg == "--" {
            // getopt's end of switches: whatever follows is not one.
            if strays.is_none() {
                strays = args.next().map(|a| (a.clone(), a));
            }
            break;
        }
        let Some(cluster) = arg.strip_prefix('-').filter(|s| !s.is_empty()) else {
            // getopt moves arguments that are not switches to the end and reads on.
            match &mut strays {
                Some((_, latest)) => *latest = arg,
                None => strays = Some((arg.clone(), arg)),
            }
            continue;
        };
        for (i, flag) in cluster.char_indices() {
            let rest = &cluster[i + flag.len_utf8()..];
            if WITHOUT_ARGUMENT.contains(flag) {
                switch(flag, "", &mut out)?;
                if rest.is_empty() {
                    read.clone_from(&arg);
                }
                continue;
            }
            if !WITH_ARGUMENT.contains(flag) {
                // getopt has moved past the word only when the switch ends it.
                return Err(if rest.is_empty() {
                    bad(&arg)
                } else {
                    bad(strays.as_ref().map_or(&read, |(_, latest)| latest))
                });
            }
            let value = if rest.is_empty() {
                read = args.next().ok_or_else(|| bad(&arg))?;
                read.clone()
            } else {
                read.clone_from(&arg);
                rest.to_owned()
            };
            if !switch(flag, &value, &mut out)? {
                return Err(bad(&read));
            }
            break;
        }
    }
    match strays {
        Some((first, _)) => Err(bad(&first)),
        None => Ok(out),
    }
}

/// Adds what one switch sets to `out`. `Ok(false)`: an argument the switch does not take.
fn switch(flag: char, arg: &str, out: &mut Vec<(String, String)>) -> Result<bool, String> {
    let mut set = |name: &str, value: &str| out.push((name.to_owned(), value.to_owned()));
    match flag {
        'B' => set("shared_buffers", arg),
        'c' | '-' => {
            let Some((name, value)) = arg.split_once('=') else {
                return Err(if flag == '-' {
                    format!("--{arg} requires a value")
                } else {
                    format!("-c {arg} requires a value")
                });
            };
            set(&name.replace('-', "_"), value);
        }
        'd' => debug(arg, out),
        'e' => set("datestyle", "euro"),
        'F' => set("fsync", "false"),
        'f' => {
            let name = match arg.chars().next() {
                Some('s') => "enable_seqscan",
                Some('i') => "enable_indexscan",
                Some('o') => "enable_indexonlyscan",
                Some('b') => "enable_bitmapscan",
                Some('t') => "enable_tidscan",
                Some('n') => "enable_nestloop",
                Some('m') => "enable_mergejoin",
                Some('h') => "enable_hashjoin",
                _ => return Ok(false),
            };
            set(name, "false");
        }
        'h' => set("listen_addresses", arg),
        'i' => set("listen_addresses", "*"),
        'k' => set("unix_socket_directories", arg),
        'l' => set("ssl", "true"),
        'N' => set("max_connections", arg),
        'O' => set("allow_system_table_mods", "true"),
        'P' => set("ignore_system_indexes", "true"),
        'p' => set("port", arg),
        'S' => set("work_mem", arg),
        's' => set("log_statement_stats", "true"),
        't' => {
            let name = match arg.as_bytes() {
                [b'p', b'a', ..] => "log_parser_stats",
                [b'p', b'l', ..] => "log_planner_stats",
                [b'e', ..] => "log_executor_stats",
                _ => return Ok(false),
            };
            set(name, "true");
        }
        'W' => set("post_auth_delay", arg),
        // Postmaster only (-b, -D, -E, -j, -r, -v) or ignored (-C, -n, -T).
        _ => {}
    }
    Ok(true)
}

/// `-d N`: PostgreSQL's `set_debug_options` outside the postmaster (N read as `atoi` does).
fn debug(arg: &str, out: &mut Vec<(String, String)>) {
    let level = atoi(arg);
    let mut set = |name: &str, value: &str| out.push((name.to_owned(), value.to_owned()));
    if level > 0 {
        set("log_min_messages", &format!("debug{level}"));
    } else {
        set("log_min_messages", "notice");
    }
    for (from, name, value) in [
        (2, "log_statement", "all"),
        (3, "debug_print_parse", "true"),
        (4, "debug_print_plan", "true"),
        (5, "debug_print_rewritten", "true"),
    ] {
        if level >= from {
            set(name, value);
        }
    }
}

/// C's `atoi`: leading whitespace, an optional sign, then digits as far as they go; 0 without.
fn atoi(s: &str) -> i64 {
    let s = s.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
    let (negative, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let n = digits
        .bytes()
        .take_while(u8::is_ascii_digit)
        .take(12)
        .fold(0i64, |n, d| n * 10 + i64::from(d - b'0'));
    if negative {
        -n
    } else {
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn settings_by_name() {
        assert_eq!(
            parse_options("-c search_path=a,b --statement-timeout=5s -cwork_mem=4MB").unwrap(),
            pairs(&[
                ("search_path", "a,b"),
                ("statement_timeout", "5s"),
                ("work_mem", "4MB")
            ])
        );
        assert_eq!(
            parse_options(r"-c application_name=a\ b").unwrap(),
            pairs(&[("application_name", "a b")])
        );
        // Only C-locale whitespace separates: a no-break space is part of the value.
        assert_eq!(
            parse_options("-c application_name=a\u{a0}b\x0b-cwork_mem=1MB").unwrap(),
            pairs(&[("application_name", "a\u{a0}b"), ("work_mem", "1MB")])
        );
        assert_eq!(
            parse_options("-c foo").unwrap_err(),
            "-c foo requires a value"
        );
        assert_eq!(
            parse_options("--foo").unwrap_err(),
            "--foo requires a value"
        );
    }

    #[test]
    fn short_switches_stand_for_settings() {
        assert_eq!(
            parse_options("-e -fs -fh -S 2048 -P -s -tpa -t ex -W0").unwrap(),
            pairs(&[
                ("datestyle", "euro"),
                ("enable_seqscan", "false"),
                ("enable_hashjoin", "false"),
                ("work_mem", "2048"),
                ("ignore_system_indexes", "true"),
                ("log_statement_stats", "true"),
                ("log_parser_stats", "true"),
                ("log_executor_stats", "true"),
                ("post_auth_delay", "0")
            ])
        );
        // Grouped as getopt groups them; an argument may follow in the same word.
        assert_eq!(
            parse_options("-eOS64kB").unwrap(),
            pairs(&[
                ("datestyle", "euro"),
                ("allow_system_table_mods", "true"),
                ("work_mem", "64kB")
            ])
        );
        assert_eq!(
            parse_options("-d 3").unwrap(),
            pairs(&[
                ("log_min_messages", "debug3"),
                ("log_statement", "all"),
                ("debug_print_parse", "true")
            ])
        );
        assert_eq!(
            parse_options("-d x").unwrap(),
            pairs(&[("log_min_messages", "notice")])
        );
        // Postmaster-only and ignored switches take their argument and set nothing.
        assert_eq!(
            parse_options("-D /tmp -E -j -r out -v 2 -b -C x -n -T -e").unwrap(),
            pairs(&[("datestyle", "euro")])
        );
    }

    #[test]
    fn bad_switches_fail_as_on_the_server() {
        for (options, named) in [
            ("-x", "-x"),
            ("-fq", "-fq"),
            ("-f q", "q"),
            ("-tzz", "-tzz"),
            ("-S", "-S"),
            ("-e -c", "-c"),
            ("-ex", "-ex"),
            ("stray -x", "-x"),
            // An unknown switch inside a word: the argument before it, after getopt's moves.
            ("-xe", "postgres"),
            ("-e -xe", "-e"),
            ("-e a -xe", "a"),
            ("-e -S 1 -xe", "1"),
            // Arguments that are not switches: the first one.
            ("stray -e other", "stray"),
            ("-e -- -fs", "-fs"),
            ("a -e -- -fs", "a"),
            ("- -e", "-"),
        ] {
            assert_eq!(
                parse_options(options).unwrap_err(),
                format!("invalid command-line argument for server process: {named}"),
                "{options}"
            );
        }
        assert_eq!(
            parse_options("-e --").unwrap(),
            pairs(&[("datestyle", "euro")])
        );
    }

    #[test]
    fn atoi_reads_like_c() {
        for (s, n) in [
            ("3", 3),
            (" 12x", 12),
            ("-4", -4),
            ("+2", 2),
            ("", 0),
            ("x1", 0),
        ] {
            assert_eq!(atoi(s), n, "{s:?}");
        }
    }
}
