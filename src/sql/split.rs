//! Statement splitting: a stream of the significant tokens of one statement.
//!
//! A statement ends at a `;` that is outside parentheses and outside a `BEGIN ... END` block of
//! a `CREATE [OR REPLACE] {FUNCTION|PROCEDURE}` statement (SQL-standard function bodies,
//! `BEGIN ATOMIC ... END`), using the same heuristic as psql.

use super::lexer::{Lexer, Token, TokenKind};

/// A significant (non-comment) token and its parenthesis nesting depth within the statement.
/// Parentheses themselves carry the depth outside them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct STok<'a> {
    pub tok: Token<'a>,
    pub depth: u32,
}

impl<'a> std::ops::Deref for STok<'a> {
    type Target = Token<'a>;
    #[inline]
    fn deref(&self) -> &Token<'a> {
        &self.tok
    }
}

/// Iterator over the significant tokens of the statement that starts at a given offset.
/// Clone it to look ahead.
#[derive(Debug, Clone)]
pub(crate) struct Stmt<'a> {
    lx: Lexer<'a>,
    depth: u32,
    begin_depth: u32,
    ident_count: u32,
    idents: [u8; 4],
    /// An unterminated construct or unbalanced parentheses were seen.
    pub unparsable: bool,
    done: bool,
    /// The statement ran to the end of the input (no terminating `;`).
    pub eof: bool,
    /// Offset just past the terminating `;` (or the input length).
    pub end: usize,
    /// Offset of the first token (comments included), if any.
    pub first: Option<usize>,
    /// Offset just past the last token (comments included) before the terminator.
    pub last_end: usize,
    /// Number of significant tokens yielded so far.
    pub count: u32,
}

impl<'a> Stmt<'a> {
    pub fn new(src: &'a str, pos: usize) -> Self {
        Stmt {
            lx: Lexer::at(src, pos),
            depth: 0,
            begin_depth: 0,
            ident_count: 0,
            idents: [0; 4],
            unparsable: false,
            done: false,
            eof: false,
            end: pos,
            first: None,
            last_end: pos,
            count: 0,
        }
    }

    /// The next significant token without consuming it.
    #[inline]
    pub fn peek(&self) -> Option<STok<'a>> {
        self.clone().next()
    }

    /// Consume the rest of the statement.
    pub fn drain(&mut self) {
        while self.next().is_some() {}
    }

    #[inline]
    fn note(&mut self, t: &Token<'a>) {
        if self.first.is_none() {
            self.first = Some(t.offset);
        }
        self.last_end = t.end();
    }

    /// psql's heuristic for `BEGIN ... END` blocks in `CREATE FUNCTION/PROCEDURE`.
    #[inline]
    fn track_ident(&mut self, t: &Token<'a>) {
        let s = t.text;
        if (self.ident_count as usize) < self.idents.len() {
            let tagged = s.eq_ignore_ascii_case("create")
                || s.eq_ignore_ascii_case("function")
                || s.eq_ignore_ascii_case("procedure")
                || s.eq_ignore_ascii_case("or")
                || s.eq_ignore_ascii_case("replace");
            if tagged {
                self.idents[self.ident_count as usize] = s.as_bytes()[0] | 0x20;
            }
        }
        self.ident_count = self.ident_count.saturating_add(1);
        let id = &self.idents;
        if id[0] == b'c'
            && (id[1] == b'f'
                || id[1] == b'p'
                || (id[1] == b'o' && id[2] == b'r' && (id[3] == b'f' || id[3] == b'p')))
            && self.depth == 0
        {
            if s.eq_ignore_ascii_case("begin") {
                self.begin_depth += 1;
            } else if s.eq_ignore_ascii_case("case") {
                if self.begin_depth >= 1 {
                    self.begin_depth += 1;
                }
            } else if s.eq_ignore_ascii_case("end") && self.begin_depth > 0 {
                self.begin_depth -= 1;
            }
        }
    }
}

impl<'a> Iterator for Stmt<'a> {
    type Item = STok<'a>;

    fn next(&mut self) -> Option<STok<'a>> {
        if self.done {
            return None;
        }
        loop {
            let Some(tok) = self.lx.next() else {
                self.done = true;
                self.eof = true;
                self.end = self.lx.src().len();
                if self.depth != 0 {
                    self.unparsable = true;
                }
                return None;
            };
            match tok.kind {
                TokenKind::LineComment | TokenKind::BlockComment => {
                    self.note(&tok);
                    continue;
                }
                TokenKind::Unterminated(_) => {
                    self.note(&tok);
                    self.unparsable = true;
                    self.done = true;
                    self.eof = true;
                    self.end = self.lx.src().len();
                    return None;
                }
                TokenKind::Punct => {
                    let depth = self.depth;
                    match tok.text.as_bytes()[0] {
                        b';' if self.depth == 0 && self.begin_depth == 0 => {
                            self.done = true;
                            self.end = tok.end();
                            if self.depth != 0 {
                                self.unparsable = true;
                            }
                            return None;
                        }
                        b'(' => self.depth += 1,
                        b')' => {
                            if self.depth == 0 {
                                self.unparsable = true;
                            } else {
                                self.depth -= 1;
                            }
                            self.note(&tok);
                            self.count += 1;
                            return Some(STok {
                                tok,
                                depth: self.depth,
                            });
                        }
                        _ => {}
                    }
                    self.note(&tok);
                    self.count += 1;
                    return Some(STok { tok, depth });
                }
                TokenKind::Ident => {
                    self.track_ident(&tok);
                }
                _ => {}
            }
            self.note(&tok);
            self.count += 1;
            return Some(STok {
                tok,
                depth: self.depth,
            });
        }
    }
}

/// Split `sql` into statements on top-level `;`, using the lexer (so `;` inside strings,
/// comments, quoted identifiers, dollar-quoted bodies, parentheses and `BEGIN ATOMIC ... END`
/// bodies does not split). Each item is the statement's text without the terminating `;`,
/// trimmed, with leading comments kept. Statements consisting only of whitespace and comments
/// are skipped. An unterminated construct runs to the end of the input.
pub fn split_statements(sql: &str) -> impl Iterator<Item = &str> {
    let mut pos = 0usize;
    let mut finished = false;
    std::iter::from_fn(move || loop {
        if finished {
            return None;
        }
        let mut st = Stmt::new(sql, pos);
        st.drain();
        finished = st.eof || st.end <= pos;
        pos = st.end;
        if st.count > 0 || st.unparsable {
            let from = st.first.unwrap_or(pos);
            return Some(sql[from..st.last_end.max(from)].trim());
        }
    })
}
