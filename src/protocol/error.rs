//! Views of ErrorResponse / NoticeResponse bodies: a sequence of (field code, C string) pairs.

use super::frame::read_cstr;

/// The fields of an ErrorResponse the proxy looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorFields<'a> {
    /// `S`/`V`: severity (ERROR, FATAL, PANIC).
    pub severity: &'a str,
    /// `C`: SQLSTATE.
    pub code: &'a str,
    /// `M`: primary message.
    pub message: &'a str,
    /// `R`: the server's routine that raised it (not translated, unlike the message).
    pub routine: &'a str,
}

impl<'a> ErrorFields<'a> {
    /// Parses an ErrorResponse body (after the five header bytes). Missing fields stay empty.
    pub fn parse(mut body: &'a [u8]) -> ErrorFields<'a> {
        let mut out = ErrorFields::default();
        while let Some((&field, rest)) = body.split_first() {
            if field == 0 {
                break;
            }
            let Some((value, rest)) = read_cstr(rest) else {
                break;
            };
            let value = std::str::from_utf8(value).unwrap_or("");
            match field {
                b'V' => out.severity = value,
                b'S' if out.severity.is_empty() => out.severity = value,
                b'C' => out.code = value,
                b'M' => out.message = value,
                b'R' => out.routine = value,
                _ => {}
            }
            body = rest;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields() {
        let body = b"SERROR\0VERROR\0C42P01\0Mrelation \"x\" does not exist\0\0";
        let f = ErrorFields::parse(body);
        assert_eq!(f.severity, "ERROR");
        assert_eq!(f.code, "42P01");
        assert_eq!(f.message, "relation \"x\" does not exist");
        assert_eq!(ErrorFields::parse(b"Cxx"), ErrorFields::default());
    }
}
