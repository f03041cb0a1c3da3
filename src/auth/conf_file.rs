//! The file format PostgreSQL's `pg_hba.conf` and `pg_ident.conf` share, as PostgreSQL 16
//! reads it: lines (a backslash at the very end joins the next), whitespace-separated fields,
//! each a comma-separated list of tokens, double quotes, `#` comments, `@file` inclusion of a
//! list of names, and the `include`, `include_if_exists` and `include_dir` records that put
//! another file's lines in place of their own.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How deep `@file` inclusions and `include` records may nest together (a file including
/// itself is refused, not followed), as in PostgreSQL.
const MAX_INCLUDE_DEPTH: usize = 10;

/// One token of a field, and whether it starts with a double quote (then it is never a
/// keyword, `@file` or `+role`; `al"l"` is the keyword, as in PostgreSQL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Token {
    pub(super) text: String,
    pub(super) quoted: bool,
}

/// Where a line is: its number in its file, the file when it is not the configured one (but
/// one it includes), and the configured file's line that leads there (the line itself, or
/// the `include` record that brought its file in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct At {
    pub line: usize,
    pub file: Option<Arc<Path>>,
    pub top: usize,
}

impl At {
    /// `FILE:LINE`, with `configured` as the name of the configured file.
    pub fn in_file(&self, configured: &str) -> String {
        match &self.file {
            Some(f) => format!("{}:{}", f.display(), self.line),
            None => format!("{configured}:{}", self.line),
        }
    }
}

/// The line's number, preceded by its file when it is an included one.
impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) => write!(f, "{}:{}", file.display(), self.line),
            None => write!(f, "{}", self.line),
        }
    }
}

/// A line of fields, `@file`s expanded, with where it is.
#[derive(Debug)]
pub(super) struct Record {
    pub(super) at: At,
    pub(super) fields: Vec<Vec<Token>>,
}

impl Record {
    /// An error about this line, as the readers report them: the configured file's line,
    /// and the message, preceded by the included file's name and line when it is in one.
    pub(super) fn error(&self, m: impl Into<String>) -> (usize, String) {
        let m = m.into();
        match &self.at.file {
            Some(f) => (
                self.at.top,
                format!("{}:{}: {m}", f.display(), self.at.line),
            ),
            None => (self.at.top, m),
        }
    }
}

/// A regular expression from a token starting with `/` (the rest), matched anywhere in a
/// name unless anchored. Compared by its text.
#[derive(Debug, Clone)]
pub(super) struct Pattern(regex::bytes::Regex);

impl Pattern {
    pub(super) fn new(re: &str) -> Result<Pattern, String> {
        regex::bytes::Regex::new(re)
            .map(Pattern)
            .map_err(|e| format!("invalid regular expression \"{re}\": {e}"))
    }

    pub(super) fn is_match(&self, name: &[u8]) -> bool {
        self.0.is_match(name)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Eq for Pattern {}

/// The records of the file at `path`. The error names the file's line (0: the file itself
/// cannot be read) and what is wrong.
pub(super) fn read(path: &Path) -> Result<Vec<Record>, (usize, String)> {
    let text = std::fs::read_to_string(path).map_err(|e| (0, e.to_string()))?;
    parse(&text, parent(path))
}

/// The records of a configured file's text, with relative paths from `dir`.
pub(super) fn parse(text: &str, dir: &Path) -> Result<Vec<Record>, (usize, String)> {
    let mut out = Vec::new();
    records(text, dir, None, 0, &mut out)?;
    Ok(out)
}

fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

/// The records of one file's text into `out`: `file` is `None` for the configured file,
/// `depth` how many inclusions led here. An error inside an included file is reported at
/// the line of this file that includes it, naming where it is.
fn records(
    text: &str,
    dir: &Path,
    file: Option<&Arc<Path>>,
    depth: usize,
    out: &mut Vec<Record>,
) -> Result<(), (usize, String)> {
    for (n, line) in logical_lines(text) {
        let f = fields(&line).map_err(|m| (n, m))?;
        let f = f
            .iter()
            .map(|field| expand(field, dir, depth))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|m| (n, m))?;
        if f.is_empty() {
            continue;
        }
        // `include FILE` and the like: a line of two fields starting with the keyword, as
        // PostgreSQL recognises them (quoted or not).
        let directive = match f.as_slice() {
            [kw, target] => match kw[0].text.as_str() {
                k @ ("include" | "include_if_exists" | "include_dir") => {
                    Some((k, target[0].text.as_str()))
                }
                _ => None,
            },
            _ => None,
        };
        let Some((kind, target)) = directive else {
            out.push(Record {
                at: At {
                    line: n,
                    file: file.cloned(),
                    top: n,
                },
                fields: f,
            });
            continue;
        };
        let first = out.len();
        include(kind, &dir.join(target), depth + 1, out).map_err(|m| (n, m))?;
        for r in &mut out[first..] {
            r.at.top = n;
        }
    }
    Ok(())
}

/// Follows an `include`, `include_if_exists` or `include_dir` record.
fn include(kind: &str, path: &Path, depth: usize, out: &mut Vec<Record>) -> Result<(), String> {
    match kind {
        "include_dir" => {
            for file in conf_files(path)? {
                include_file(&file, depth, false, out)?;
            }
            Ok(())
        }
        k => include_file(path, depth, k == "include_if_exists", out),
    }
}

/// Puts the records of the file at `path` in `out`; a missing one is skipped (and logged)
/// when `missing_ok`.
fn include_file(
    path: &Path,
    depth: usize,
    missing_ok: bool,
    out: &mut Vec<Record>,
) -> Result<(), String> {
    let text = match open(path, depth) {
        Err(e) if missing_ok && e.kind() == std::io::ErrorKind::NotFound => {
            tracing::info!(file = %path.display(), "skipping missing authentication file");
            return Ok(());
        }
        r => r.map_err(|e| format!("could not open file \"{}\": {e}", path.display()))?,
    };
    let file: Arc<Path> = Arc::from(path);
    records(&text, parent(path), Some(&file), depth, out)
        .map_err(|(n, m)| format!("{}:{n}: {m}", path.display()))
}

/// The text of an included file, refused past the nesting limit.
fn open(path: &Path, depth: usize) -> std::io::Result<String> {
    if depth > MAX_INCLUDE_DEPTH {
        return Err(std::io::Error::other("maximum nesting depth exceeded"));
    }
    std::fs::read_to_string(path)
}

/// The files `include_dir` includes, as PostgreSQL picks them: those in the directory whose
/// names end in `.conf` and do not start with `.`, directories left out, in byte order.
fn conf_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("could not open directory \"{}\": {e}", dir.display()))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry =
            entry.map_err(|e| format!("could not read directory \"{}\": {e}", dir.display()))?;
        let name = entry.file_name();
        let name = name.as_encoded_bytes();
        if name.len() < 6 || name[0] == b'.' || !name.ends_with(b".conf") {
            continue;
        }
        let path = entry.path();
        let meta = std::fs::metadata(&path)
            .map_err(|e| format!("could not stat file \"{}\": {e}", path.display()))?;
        if !meta.is_dir() {
            out.push(path);
        }
    }
    out.sort_by(|a, b| {
        a.as_os_str()
            .as_encoded_bytes()
            .cmp(b.as_os_str().as_encoded_bytes())
    });
    Ok(out)
}

/// Splits a line into fields, each a list of comma-separated tokens, as PostgreSQL does:
/// whitespace separates fields, a comma continues the list (whitespace may follow it), double
/// quotes keep whitespace, commas and `#` (`""` inside quotes is one `"`), `#` outside quotes
/// starts a comment.
pub(super) fn fields(line: &str) -> Result<Vec<Vec<Token>>, String> {
    let mut out: Vec<Vec<Token>> = Vec::new();
    let mut chars = line.chars().peekable();
    let mut list: Vec<Token> = Vec::new();
    loop {
        while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            chars.next();
        }
        match chars.peek() {
            None | Some('#') => break,
            _ => {}
        }
        let mut tok = Token {
            text: String::new(),
            quoted: false,
        };
        let mut in_quote = false;
        let mut comma = false;
        let mut first = true;
        while let Some(&c) = chars.peek() {
            if !in_quote && (c.is_ascii_whitespace() || c == '#') {
                break;
            }
            chars.next();
            let at_start = std::mem::replace(&mut first, false);
            match c {
                ',' if !in_quote => {
                    comma = true;
                    break;
                }
                '"' if in_quote && chars.peek() == Some(&'"') => {
                    chars.next();
                    tok.text.push('"');
                }
                '"' => {
                    in_quote = !in_quote;
                    tok.quoted |= at_start;
                }
                c => tok.text.push(c),
            }
        }
        if in_quote {
            return Err("unterminated quoted string".into());
        }
        list.push(tok);
        if !comma {
            out.push(std::mem::take(&mut list));
        }
    }
    if !list.is_empty() {
        return Err("a list ends with a comma".into());
    }
    Ok(out)
}

/// The file's lines as PostgreSQL reads them, each with its (1-based) number: a backslash at
/// the very end joins the next line, comments and quotes included.
pub(super) fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((i, first)) = lines.next() {
        let mut line = first.to_owned();
        while line.ends_with('\\') {
            line.pop();
            match lines.next() {
                Some((_, more)) => line.push_str(more),
                None => break,
            }
        }
        out.push((i + 1, line));
    }
    out
}

/// A field with each unquoted `@file` replaced by the names in that file.
fn expand(field: &[Token], dir: &Path, depth: usize) -> Result<Vec<Token>, String> {
    let mut out = Vec::with_capacity(field.len());
    for t in field {
        match t.text.strip_prefix('@') {
            Some(name) if !t.quoted && !name.is_empty() => {
                out.extend(included(&dir.join(name), depth + 1)?);
            }
            _ => out.push(t.clone()),
        }
    }
    Ok(out)
}

/// The names in an `@file`, as PostgreSQL reads one: every token of every line (its own
/// `include` records followed), separated by whitespace or commas, quoted or not, `#`
/// comments; its own `@file`s relative to its directory.
fn included(path: &Path, depth: usize) -> Result<Vec<Token>, String> {
    let text = open(path, depth)
        .map_err(|e| format!("could not open file \"{}\": {e}", path.display()))?;
    let mut lines = Vec::new();
    let file: Arc<Path> = Arc::from(path);
    records(&text, parent(path), Some(&file), depth, &mut lines)
        .map_err(|(n, m)| format!("{}:{n}: {m}", path.display()))?;
    Ok(lines.into_iter().flat_map(|r| r.fields).flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(records: &[Record]) -> Vec<String> {
        records
            .iter()
            .map(|r| {
                r.fields
                    .iter()
                    .map(|f| {
                        f.iter()
                            .map(|t| t.text.as_str())
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    }

    #[test]
    fn include_records_put_other_files_lines_in_their_place() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::create_dir(p.join("conf.d")).unwrap();
        std::fs::create_dir(p.join("conf.d/sub.conf")).unwrap();
        std::fs::write(p.join("conf.d/20-b.conf"), "b 2\n").unwrap();
        std::fs::write(p.join("conf.d/10-a.conf"), "a 1\ninclude ../names.conf\n").unwrap();
        std::fs::write(p.join("conf.d/.hidden.conf"), "hidden x\n").unwrap();
        std::fs::write(p.join("conf.d/notes.txt"), "txt x\n").unwrap();
        std::fs::write(p.join("conf.d/C.conf"), "c 3\n").unwrap();
        std::fs::write(p.join("names.conf"), "n @list\n").unwrap();
        std::fs::write(p.join("list"), "x, y\ninclude more\n").unwrap();
        std::fs::write(p.join("more"), "z\n").unwrap();
        let r = parse(
            "first 0\n\
             include_dir conf.d\n\
             include_if_exists missing.conf\n\
             \"include\" names.conf\n\
             include a b # three fields: not a record\n\
             last 9\n",
            p,
        )
        .unwrap();
        // In byte order (digits before capitals); hidden files, other suffixes and
        // directories left out. An @file follows its own include records.
        assert_eq!(
            texts(&r),
            [
                "first 0",
                "a 1",
                "n x,y,z",
                "b 2",
                "c 3",
                "n x,y,z",
                "include a b",
                "last 9"
            ]
        );
        let at: Vec<String> = r.iter().map(|r| r.at.in_file("top")).collect();
        assert_eq!(at[0], "top:1");
        assert_eq!(at[1], format!("{}:1", p.join("conf.d/10-a.conf").display()));
        assert_eq!(
            at[2],
            format!("{}:1", p.join("conf.d/../names.conf").display())
        );
        assert_eq!(at[7], "top:6");
        // Lines from included files are reported at the configured file's record.
        assert_eq!(r[1].at.top, 2);
        assert_eq!(r[2].at.top, 2);
        assert_eq!(r[5].at.top, 4);
        let (line, m) = r[3].error("bad");
        assert_eq!(line, 2);
        assert_eq!(
            m,
            format!("{}:1: bad", p.join("conf.d/20-b.conf").display())
        );
        assert_eq!(r[0].error("bad"), (1, "bad".to_owned()));
    }

    #[test]
    fn include_errors_name_the_file_and_line() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::write(p.join("bad.conf"), "ok\n\"open\n").unwrap();
        std::fs::write(p.join("loop.conf"), "include loop.conf\n").unwrap();
        std::fs::write(p.join("at_loop"), "@at_loop\n").unwrap();
        let cases = [
            ("include nothere.conf", "could not open file"),
            ("include_dir nodir", "could not open directory"),
            ("include bad.conf", "bad.conf:2: unterminated quoted string"),
            ("include loop.conf", "maximum nesting depth exceeded"),
            ("x @at_loop", "maximum nesting depth exceeded"),
        ];
        for (text, want) in cases {
            let (line, m) = parse(&format!("# c\n{text}\n"), p).unwrap_err();
            assert_eq!(line, 2, "{text}");
            assert!(m.contains(want), "{text}: {m}");
        }
        // Ten levels are allowed, the eleventh is not.
        for i in 1..=11 {
            std::fs::write(p.join(format!("l{i}")), format!("include l{}\n", i + 1)).unwrap();
        }
        std::fs::write(p.join("l10"), "deep 10\n").unwrap();
        assert_eq!(texts(&parse("include l1\n", p).unwrap()), ["deep 10"]);
        std::fs::write(p.join("l10"), "include l11\n").unwrap();
        std::fs::write(p.join("l11"), "deep 11\n").unwrap();
        let (_, m) = parse("include l1\n", p).unwrap_err();
        assert!(m.contains("maximum nesting depth"), "{m}");
    }
}
