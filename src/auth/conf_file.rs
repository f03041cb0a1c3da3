//! The file format PostgreSQL's `pg_hba.conf` and `pg_ident.conf` share, as PostgreSQL 15
//! reads it: lines (a backslash at the very end joins the next), whitespace-separated fields,
//! each a comma-separated list of tokens, double quotes, `#` comments, and `@file`
//! inclusion of a list of names.

use std::path::Path;

/// How deep `@file` inclusions may nest (a file including itself is refused, not followed).
const MAX_INCLUDE_DEPTH: usize = 10;

/// One token of a field, and whether it starts with a double quote (then it is never a
/// keyword, `@file` or `+role`; `al"l"` is the keyword, as in PostgreSQL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Token {
    pub(super) text: String,
    pub(super) quoted: bool,
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

/// A database or user field with each unquoted `@file` replaced by the names in that file.
pub(super) fn expand(field: &[Token], dir: &Path, depth: usize) -> Result<Vec<Token>, String> {
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

/// The names in an `@file`, as PostgreSQL reads one: every token of every line, separated by
/// whitespace or commas, quoted or not, `#` comments; its own `@file`s relative to its
/// directory.
fn included(path: &Path, depth: usize) -> Result<Vec<Token>, String> {
    if depth > MAX_INCLUDE_DEPTH {
        return Err(format!(
            "@{}: more than {MAX_INCLUDE_DEPTH} nested @file inclusions",
            path.display()
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("could not open file \"{}\": {e}", path.display()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for (n, line) in logical_lines(&text) {
        let f = fields(&line).map_err(|m| format!("{}:{n}: {m}", path.display()))?;
        for field in f {
            out.extend(expand(&field, dir, depth)?);
        }
    }
    Ok(out)
}
