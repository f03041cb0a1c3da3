//! An allocation-free lexer for PostgreSQL's SQL dialect.
//!
//! [`Lexer`] is an iterator of [`Token`]s that borrow from the input. It follows the rules of
//! PostgreSQL's own scanner (`src/backend/parser/scan.l`) closely enough to find statement
//! boundaries, keywords and function names reliably:
//!
//! * whitespace is skipped; comments (`-- ...` and nested `/* /* */ */`) are yielded as tokens so
//!   that callers can look at leading hints, and otherwise ignored;
//! * quoted identifiers `"a""b"` and `U&"..."`;
//! * string constants `'it''s'`, escape strings `E'\''`, `U&'...'`, bit strings `B'...'`, hex
//!   strings `X'...'`, national strings `N'...'` and dollar-quoted strings `$$...$$` /
//!   `$tag$...$tag$` (a `$` followed by digits is a parameter such as `$1`, and a `$` inside an
//!   identifier such as `a$b` belongs to the identifier);
//! * numbers (decimal, with fraction and exponent, `0x`/`0o`/`0b` prefixes, `_` separators);
//! * operators (sequences of operator characters, never swallowing a following `--` or `/*`),
//!   and the punctuation `( ) , ; [ ] . :` (with `::` and `:=` as operators);
//! * identifiers and keywords; [`Token::is_kw`] compares case-insensitively without allocating.
//!
//! Standard-conforming strings are assumed (the default since PostgreSQL 9.1): a backslash is
//! an ordinary character in `'...'` and only escapes in `E'...'`.
//!
//! An unterminated comment, quoted identifier or string does not panic: the lexer yields a
//! single [`TokenKind::Unterminated`] token covering the rest of the input and then stops.

use std::borrow::Cow;

/// The flavour of a string constant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrKind {
    /// `'...'`
    Standard,
    /// `E'...'` (backslash escapes)
    Escape,
    /// `U&'...'`
    Unicode,
    /// `B'...'`
    Bit,
    /// `X'...'`
    Hex,
    /// `N'...'`
    National,
    /// `$$...$$` or `$tag$...$tag$`
    Dollar,
}

/// Which construct was left open at the end of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unterminated {
    BlockComment,
    QuotedIdent,
    String,
    DollarString,
}

/// The kind of a [`Token`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// An unquoted identifier or keyword.
    Ident,
    /// A quoted identifier, `"..."` or `U&"..."`.
    QuotedIdent,
    /// A string constant.
    String(StrKind),
    /// A numeric constant.
    Number,
    /// A positional parameter, `$1`.
    Param,
    /// An operator: a run of `+ - * / < > = ~ ! @ # % ^ & | ` ?`, or `::`, `:=`.
    Operator,
    /// One of `( ) , ; [ ] . :`.
    Punct,
    /// `-- ...` up to (not including) the end of the line.
    LineComment,
    /// `/* ... */`, possibly nested.
    BlockComment,
    /// An unterminated construct; the token covers the rest of the input.
    Unterminated(Unterminated),
    /// Any other character (a lone `$`, a backslash, `{`, ...).
    Other,
}

/// A token: its kind, the exact text it covers and where that text starts in the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token<'a> {
    pub kind: TokenKind,
    pub text: &'a str,
    pub offset: usize,
}

impl<'a> Token<'a> {
    /// Byte offset just past the token.
    #[inline]
    pub fn end(&self) -> usize {
        self.offset + self.text.len()
    }

    /// Whether this is the unquoted keyword/identifier `kw` (ASCII case-insensitive).
    /// `kw` should be given in lower case.
    #[inline]
    pub fn is_kw(&self, kw: &str) -> bool {
        self.kind == TokenKind::Ident && self.text.eq_ignore_ascii_case(kw)
    }

    /// Whether this is the punctuation character `c`.
    #[inline]
    pub fn is_punct(&self, c: u8) -> bool {
        self.kind == TokenKind::Punct && self.text.as_bytes()[0] == c
    }

    /// Whether this is a comment.
    #[inline]
    pub fn is_comment(&self) -> bool {
        matches!(self.kind, TokenKind::LineComment | TokenKind::BlockComment)
    }

    /// Whether this is an identifier, quoted or not.
    #[inline]
    pub fn is_name(&self) -> bool {
        matches!(self.kind, TokenKind::Ident | TokenKind::QuotedIdent)
    }

    /// The identifier this token denotes, per SQL rules: unquoted identifiers are folded to
    /// lower case (ASCII only, as PostgreSQL does for multi-byte encodings), quoted identifiers
    /// lose their quotes and have `""` collapsed. Borrows unless folding/unescaping is needed.
    /// `U&"..."` identifiers are returned with their escapes undecoded.
    pub fn ident_value(&self) -> Option<Cow<'a, str>> {
        match self.kind {
            TokenKind::Ident => {
                if self.text.bytes().any(|b| b.is_ascii_uppercase()) {
                    Some(Cow::Owned(self.text.to_ascii_lowercase()))
                } else {
                    Some(Cow::Borrowed(self.text))
                }
            }
            TokenKind::QuotedIdent => Some(undouble(quoted_body(self.text), '"')),
            _ => None,
        }
    }

    /// Whether this identifier token denotes `name` (given in lower case for unquoted
    /// comparisons): unquoted identifiers compare case-insensitively, quoted ones exactly.
    pub fn name_eq(&self, name: &str) -> bool {
        match self.kind {
            TokenKind::Ident => self.text.eq_ignore_ascii_case(name),
            TokenKind::QuotedIdent => {
                let body = quoted_body(self.text);
                if !body.contains("\"\"") {
                    body == name
                } else {
                    undouble(body, '"') == name
                }
            }
            _ => false,
        }
    }

    /// The value of a string constant (quotes removed, `''` collapsed, simple backslash escapes
    /// of `E'...'` decoded; `U&'...'` escapes are left undecoded). Borrows when possible.
    pub fn string_value(&self) -> Option<Cow<'a, str>> {
        let TokenKind::String(k) = self.kind else {
            return None;
        };
        Some(match k {
            StrKind::Dollar => {
                // $tag$body$tag$
                let t = self.text;
                let tag_len = t[1..].find('$').map(|i| i + 2).unwrap_or(t.len());
                Cow::Borrowed(&t[tag_len..t.len() - tag_len])
            }
            StrKind::Escape => unescape_e(quoted_body(self.text)),
            _ => undouble(quoted_body(self.text), '\''),
        })
    }
}

/// The text between the first and the last quote character of a quoted token (string or
/// identifier, with any `E`/`U&`/`B`/`X`/`N` prefix).
fn quoted_body(text: &str) -> &str {
    let b = text.as_bytes();
    let open = b.iter().position(|&c| c == b'\'' || c == b'"').unwrap_or(0);
    let q = b[open];
    let close = b.iter().rposition(|&c| c == q).unwrap_or(b.len());
    if close > open {
        &text[open + 1..close]
    } else {
        ""
    }
}

fn undouble(body: &str, q: char) -> Cow<'_, str> {
    let mut pair = [0u8; 2];
    q.encode_utf8(&mut pair[..1]);
    pair[1] = pair[0];
    let pair = std::str::from_utf8(&pair).unwrap_or("''");
    if body.contains(pair) {
        Cow::Owned(body.replace(pair, &pair[..1]))
    } else {
        Cow::Borrowed(body)
    }
}

fn unescape_e(body: &str) -> Cow<'_, str> {
    if !body.contains('\\') && !body.contains("''") {
        return Cow::Borrowed(body);
    }
    let mut out = String::with_capacity(body.len());
    let mut it = body.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '\\' => match it.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some('b') => out.push('\u{8}'),
                Some('f') => out.push('\u{c}'),
                Some(o) => out.push(o),
                None => {}
            },
            '\'' => {
                if it.peek() == Some(&'\'') {
                    it.next();
                }
                out.push('\'');
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

const SPACE: u8 = 1;
const IDENT_START: u8 = 2;
const IDENT_CONT: u8 = 4;
const OP_CHAR: u8 = 8;

/// Character classes of every byte (PostgreSQL's scan.l: `space`, `ident_start`,
/// `ident_cont`, `op_chars`; all bytes >= 0x80 are identifier characters).
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let mut c = 0;
        if matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c) {
            c |= SPACE;
        }
        if b.is_ascii_alphabetic() || b == b'_' || b >= 0x80 {
            c |= IDENT_START | IDENT_CONT;
        }
        if b.is_ascii_digit() || b == b'$' {
            c |= IDENT_CONT;
        }
        if matches!(
            b,
            b'~' | b'!'
                | b'@'
                | b'#'
                | b'^'
                | b'&'
                | b'|'
                | b'`'
                | b'?'
                | b'+'
                | b'-'
                | b'*'
                | b'/'
                | b'%'
                | b'<'
                | b'>'
                | b'='
        ) {
            c |= OP_CHAR;
        }
        t[i] = c;
        i += 1;
    }
    t
};

#[inline(always)]
fn is_space(b: u8) -> bool {
    CLASS[b as usize] & SPACE != 0
}

#[inline(always)]
pub(crate) fn is_ident_start(b: u8) -> bool {
    CLASS[b as usize] & IDENT_START != 0
}

#[inline(always)]
fn is_ident_cont(b: u8) -> bool {
    CLASS[b as usize] & IDENT_CONT != 0
}

#[inline(always)]
fn is_op_char(b: u8) -> bool {
    CLASS[b as usize] & OP_CHAR != 0
}

/// The tokens of a text other than comments, looked at one by one with a few ahead: read from
/// the lexer only as far as looked at, so that a text of millions of tokens (a Query of many
/// statements) is never held as a list of them.
pub struct Ahead<'a> {
    lexer: Lexer<'a>,
    buf: std::collections::VecDeque<Token<'a>>,
}

impl<'a> Ahead<'a> {
    pub fn new(src: &'a str) -> Self {
        Ahead {
            lexer: Lexer::new(src),
            buf: std::collections::VecDeque::new(),
        }
    }

    /// The token `k` places after the current one (0: the current one).
    pub fn at(&mut self, k: usize) -> Option<Token<'a>> {
        while self.buf.len() <= k {
            let t = self.lexer.by_ref().find(|t| !t.is_comment())?;
            self.buf.push_back(t);
        }
        Some(self.buf[k])
    }

    /// Moves on to the next token.
    pub fn advance(&mut self) {
        if self.buf.pop_front().is_none() {
            let _ = self.lexer.by_ref().find(|t| !t.is_comment());
        }
    }
}

/// The lexer: an iterator of tokens over a SQL string. Cheap to clone (for look-ahead).
#[derive(Debug, Clone)]
pub struct Lexer<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    pub fn new(src: &'a str) -> Self {
        Lexer { src, pos: 0 }
    }

    /// A lexer starting at byte offset `pos` (which must be a token boundary).
    pub fn at(src: &'a str, pos: usize) -> Self {
        Lexer {
            src,
            pos: pos.min(src.len()),
        }
    }

    /// The byte offset of the next unread character.
    #[inline]
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// The whole input.
    #[inline]
    pub fn src(&self) -> &'a str {
        self.src
    }

    /// End of a quoted run starting after the opening quote at `i`; `backslash` enables `\x`
    /// escapes. Returns the offset past the closing quote, or `None` if unterminated.
    #[inline]
    fn scan_quoted(b: &[u8], mut i: usize, q: u8, backslash: bool) -> Option<usize> {
        while i < b.len() {
            let c = b[i];
            if c == q {
                if i + 1 < b.len() && b[i + 1] == q {
                    i += 2;
                    continue;
                }
                return Some(i + 1);
            }
            if backslash && c == b'\\' {
                i += 2;
                continue;
            }
            i += 1;
        }
        None
    }

    fn string_token(b: &[u8], quote: usize, k: StrKind) -> (TokenKind, usize) {
        match Self::scan_quoted(b, quote + 1, b'\'', k == StrKind::Escape) {
            Some(end) => (TokenKind::String(k), end),
            None => (TokenKind::Unterminated(Unterminated::String), b.len()),
        }
    }

    fn number_end(b: &[u8], mut i: usize) -> usize {
        let n = b.len();
        if b[i] == b'0'
            && i + 2 < n
            && matches!(b[i + 1], b'x' | b'X' | b'o' | b'O' | b'b' | b'B')
            && (b[i + 2].is_ascii_hexdigit() || b[i + 2] == b'_')
        {
            i += 2;
            while i < n && (b[i].is_ascii_hexdigit() || b[i] == b'_') {
                i += 1;
            }
            return i;
        }
        while i < n && (b[i].is_ascii_digit() || b[i] == b'_') {
            i += 1;
        }
        // fraction, but not `1..2` (PL/pgSQL ranges)
        if i < n && b[i] == b'.' && !(i + 1 < n && b[i + 1] == b'.') {
            i += 1;
            while i < n && (b[i].is_ascii_digit() || b[i] == b'_') {
                i += 1;
            }
        }
        if i < n && (b[i] == b'e' || b[i] == b'E') {
            let mut j = i + 1;
            if j < n && (b[j] == b'+' || b[j] == b'-') {
                j += 1;
            }
            if j < n && b[j].is_ascii_digit() {
                while j < n && b[j].is_ascii_digit() {
                    j += 1;
                }
                i = j;
            }
        }
        i
    }
}

impl<'a> Iterator for Lexer<'a> {
    type Item = Token<'a>;

    #[inline(always)]
    fn next(&mut self) -> Option<Token<'a>> {
        let b = self.src.as_bytes();
        let n = b.len();
        let mut i = self.pos;
        while i < n && is_space(b[i]) {
            i += 1;
        }
        if i >= n {
            self.pos = n;
            return None;
        }
        let start = i;
        let c = b[i];
        let next = if i + 1 < n { b[i + 1] } else { 0 };
        let (kind, end) = match c {
            b'-' if next == b'-' => {
                let mut j = i + 2;
                while j < n && b[j] != b'\n' && b[j] != b'\r' {
                    j += 1;
                }
                (TokenKind::LineComment, j)
            }
            b'/' if next == b'*' => {
                let mut depth = 1u32;
                let mut j = i + 2;
                let mut end = None;
                while j < n {
                    if b[j] == b'/' && j + 1 < n && b[j + 1] == b'*' {
                        depth += 1;
                        j += 2;
                    } else if b[j] == b'*' && j + 1 < n && b[j + 1] == b'/' {
                        depth -= 1;
                        j += 2;
                        if depth == 0 {
                            end = Some(j);
                            break;
                        }
                    } else {
                        j += 1;
                    }
                }
                match end {
                    Some(e) => (TokenKind::BlockComment, e),
                    None => (TokenKind::Unterminated(Unterminated::BlockComment), n),
                }
            }
            b'\'' => Self::string_token(b, i, StrKind::Standard),
            b'"' => match Self::scan_quoted(b, i + 1, b'"', false) {
                Some(e) => (TokenKind::QuotedIdent, e),
                None => (TokenKind::Unterminated(Unterminated::QuotedIdent), n),
            },
            b'$' => {
                if next.is_ascii_digit() {
                    let mut j = i + 1;
                    while j < n && b[j].is_ascii_digit() {
                        j += 1;
                    }
                    (TokenKind::Param, j)
                } else {
                    // $tag$ where tag = [A-Za-z\x80-\xff_][A-Za-z\x80-\xff_0-9]*, or $$
                    let mut j = i + 1;
                    let mut ok = false;
                    if j < n && b[j] == b'$' {
                        ok = true;
                    } else if j < n && is_ident_start(b[j]) {
                        j += 1;
                        while j < n && (is_ident_cont(b[j]) && b[j] != b'$') {
                            j += 1;
                        }
                        ok = j < n && b[j] == b'$';
                    }
                    if ok {
                        let delim = &self.src[i..=j];
                        match self.src[j + 1..].find(delim) {
                            Some(k) => {
                                (TokenKind::String(StrKind::Dollar), j + 1 + k + delim.len())
                            }
                            None => (TokenKind::Unterminated(Unterminated::DollarString), n),
                        }
                    } else {
                        (TokenKind::Other, i + 1)
                    }
                }
            }
            b'0'..=b'9' => (TokenKind::Number, Self::number_end(b, i)),
            b'.' if next.is_ascii_digit() => {
                let mut j = i + 1;
                while j < n && (b[j].is_ascii_digit() || b[j] == b'_') {
                    j += 1;
                }
                if j < n && (b[j] == b'e' || b[j] == b'E') {
                    let mut k = j + 1;
                    if k < n && (b[k] == b'+' || b[k] == b'-') {
                        k += 1;
                    }
                    if k < n && b[k].is_ascii_digit() {
                        while k < n && b[k].is_ascii_digit() {
                            k += 1;
                        }
                        j = k;
                    }
                }
                (TokenKind::Number, j)
            }
            b'(' | b')' | b',' | b';' | b'[' | b']' | b'.' => (TokenKind::Punct, i + 1),
            b':' => {
                if next == b':' || next == b'=' {
                    (TokenKind::Operator, i + 2)
                } else {
                    (TokenKind::Punct, i + 1)
                }
            }
            c if is_op_char(c) => {
                let mut j = i + 1;
                while j < n && is_op_char(b[j]) {
                    // a comment start ends the operator
                    if (b[j] == b'-' && j + 1 < n && b[j + 1] == b'-')
                        || (b[j] == b'/' && j + 1 < n && b[j + 1] == b'*')
                    {
                        break;
                    }
                    j += 1;
                }
                (TokenKind::Operator, j)
            }
            c if is_ident_start(c) => {
                let lc = c | 0x20;
                if next == b'\'' && matches!(lc, b'e' | b'b' | b'x' | b'n') {
                    let k = match lc {
                        b'e' => StrKind::Escape,
                        b'b' => StrKind::Bit,
                        b'x' => StrKind::Hex,
                        _ => StrKind::National,
                    };
                    Self::string_token(b, i + 1, k)
                } else if lc == b'u' && next == b'&' && i + 2 < n && b[i + 2] == b'\'' {
                    Self::string_token(b, i + 2, StrKind::Unicode)
                } else if lc == b'u' && next == b'&' && i + 2 < n && b[i + 2] == b'"' {
                    match Self::scan_quoted(b, i + 3, b'"', false) {
                        Some(e) => (TokenKind::QuotedIdent, e),
                        None => (TokenKind::Unterminated(Unterminated::QuotedIdent), n),
                    }
                } else {
                    let mut j = i + 1;
                    while j < n && is_ident_cont(b[j]) {
                        j += 1;
                    }
                    (TokenKind::Ident, j)
                }
            }
            _ => {
                // Any other ASCII byte (non-ASCII bytes start identifiers).
                (TokenKind::Other, i + 1)
            }
        };
        self.pos = end;
        Some(Token {
            kind,
            text: &self.src[start..end],
            offset: start,
        })
    }
}
