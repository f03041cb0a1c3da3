//! The admin console's extended query protocol: Parse, Bind, Describe, Execute and Close on
//! the console's own statements and portals (its commands take no parameters).

use bytes::BufMut;

use super::commands::{self, Command, CommandError};
use super::console::Console;
use super::table;
use crate::protocol::encode;
use crate::protocol::frame::{read_cstr, read_i16, read_i32};
use crate::protocol::tag;

/// Prepared statements and portals one console connection may keep.
const MAX_NAMED: usize = 1000;

impl Console<'_> {
    /// Parse: the statement is parsed now and run at each Execute of a portal bound to it.
    pub(super) fn parse(&mut self, body: &[u8]) -> Result<(), CommandError> {
        let malformed = || CommandError::new("08P01", "invalid Parse message");
        let (name, rest) = read_cstr(body).ok_or_else(malformed)?;
        let (query, _types) = read_cstr(rest).ok_or_else(malformed)?;
        let text = std::str::from_utf8(query).map_err(|_| {
            CommandError::new("22021", "invalid byte sequence for encoding \"UTF8\"")
        })?;
        let cmd = match commands::statements(text).as_slice() {
            [] => Command::Empty,
            [one] => commands::parse(one)?,
            _ => {
                return Err(CommandError::new(
                    "42601",
                    "cannot insert multiple commands into a prepared statement",
                ))
            }
        };
        if !name.is_empty() {
            if self.statements.contains_key(name) {
                return Err(CommandError::new(
                    "42P05",
                    format!(
                        "prepared statement \"{}\" already exists",
                        String::from_utf8_lossy(name)
                    ),
                ));
            }
            if self.statements.len() >= MAX_NAMED {
                return Err(too_many());
            }
        }
        self.statements.insert(name.to_vec(), cmd);
        encode::empty(&mut self.out, tag::PARSE_COMPLETE);
        Ok(())
    }

    pub(super) fn bind(&mut self, body: &[u8]) -> Result<(), CommandError> {
        let malformed = || CommandError::new("08P01", "invalid Bind message");
        let (portal, rest) = read_cstr(body).ok_or_else(malformed)?;
        let (statement, rest) = read_cstr(rest).ok_or_else(malformed)?;
        let cmd = self
            .statements
            .get(statement)
            .ok_or_else(|| no_statement(statement))?
            .clone();
        let (params, result_formats) = bind_shape(rest).ok_or_else(malformed)?;
        if params > 0 {
            return Err(CommandError::new(
                "08P01",
                format!(
                    "bind message supplies {params} parameters, but prepared statement \"{}\" requires 0",
                    String::from_utf8_lossy(statement)
                ),
            ));
        }
        let columns = cmd.columns().map_or(0, <[_]>::len);
        let formats = table::formats(&result_formats, columns)
            .map_err(|(code, m)| CommandError::new(code, m))?;
        if !portal.is_empty() {
            // As PostgreSQL: the unnamed portal is replaced, a named one must not exist.
            if self.portals.contains_key(portal) {
                return Err(CommandError::new(
                    "42P03",
                    format!(
                        "cursor \"{}\" already exists",
                        String::from_utf8_lossy(portal)
                    ),
                ));
            }
            if self.portals.len() >= MAX_NAMED {
                return Err(too_many());
            }
        }
        self.portals.insert(portal.to_vec(), (cmd, formats));
        encode::empty(&mut self.out, tag::BIND_COMPLETE);
        Ok(())
    }

    pub(super) fn describe(&mut self, body: &[u8]) -> Result<(), CommandError> {
        let (kind, name) = kind_and_name(body, "Describe")?;
        let (cmd, formats) = match kind {
            b'S' => {
                let cmd = self
                    .statements
                    .get(name)
                    .ok_or_else(|| no_statement(name))?
                    .clone();
                // No parameters, then the columns in text format.
                encode::message(&mut self.out, tag::PARAMETER_DESCRIPTION, |b| b.put_i16(0));
                (cmd, Vec::new())
            }
            b'P' => self
                .portals
                .get(name)
                .cloned()
                .ok_or_else(|| no_portal(name))?,
            other => {
                return Err(CommandError::new(
                    "08P01",
                    format!("invalid DESCRIBE message subtype {other}"),
                ))
            }
        };
        match cmd.columns() {
            Some(columns) => table::row_description(&mut self.out, columns, &formats),
            None => encode::empty(&mut self.out, tag::NO_DATA),
        }
        Ok(())
    }

    /// Execute: all rows at once (the console's results are small; a row limit is ignored).
    pub(super) async fn execute(&mut self, body: &[u8]) -> Result<(), CommandError> {
        let (name, _max_rows) = read_cstr(body)
            .and_then(|(n, r)| Some((n, read_i32(r)?.0)))
            .ok_or_else(|| CommandError::new("08P01", "invalid Execute message"))?;
        let (cmd, formats) = self
            .portals
            .get(name)
            .cloned()
            .ok_or_else(|| no_portal(name))?;
        let outcome = self.run(&cmd).await?;
        if self.ended {
            return Ok(());
        }
        self.complete(&cmd, outcome, &formats);
        Ok(())
    }

    pub(super) fn close(&mut self, body: &[u8]) -> Result<(), CommandError> {
        let (kind, name) = kind_and_name(body, "Close")?;
        // Closing what does not exist is not an error.
        match kind {
            b'S' => drop(self.statements.remove(name)),
            b'P' => drop(self.portals.remove(name)),
            other => {
                return Err(CommandError::new(
                    "08P01",
                    format!("invalid CLOSE message subtype {other}"),
                ))
            }
        }
        encode::empty(&mut self.out, tag::CLOSE_COMPLETE);
        Ok(())
    }
}

/// The parameter count and result format codes of a Bind message after its two names.
fn bind_shape(rest: &[u8]) -> Option<(usize, Vec<i16>)> {
    let (n, mut b) = read_i16(rest)?;
    for _ in 0..n.max(0) {
        b = read_i16(b)?.1;
    }
    let (params, mut b) = read_i16(b)?;
    for _ in 0..params.max(0) {
        let (len, r) = read_i32(b)?;
        b = r.get(usize::try_from(len).unwrap_or(0)..)?;
    }
    let (n, mut b) = read_i16(b)?;
    let mut formats = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n.max(0) {
        let (f, r) = read_i16(b)?;
        formats.push(f);
        b = r;
    }
    Some((params.max(0) as usize, formats))
}

/// The body of a Describe or Close message: `S` or `P`, then a name (NUL-terminated). A
/// name with a NUL inside, or none at its end, is refused as PostgreSQL refuses it (08P01
/// "invalid message format": the string read ends before the message does).
fn kind_and_name<'a>(body: &'a [u8], message: &str) -> Result<(u8, &'a [u8]), CommandError> {
    let (&kind, name) = body
        .split_first()
        .ok_or_else(|| CommandError::new("08P01", format!("invalid {message} message")))?;
    match name.strip_suffix(&[0]) {
        Some(name) if !name.contains(&0) => Ok((kind, name)),
        _ => Err(CommandError::new("08P01", "invalid message format")),
    }
}

fn no_statement(name: &[u8]) -> CommandError {
    CommandError::new(
        "26000",
        format!(
            "prepared statement \"{}\" does not exist",
            String::from_utf8_lossy(name)
        ),
    )
}

fn no_portal(name: &[u8]) -> CommandError {
    CommandError::new(
        "34000",
        format!(
            "portal \"{}\" does not exist",
            String::from_utf8_lossy(name)
        ),
    )
}

fn too_many() -> CommandError {
    CommandError::new(
        "53400",
        format!("the admin console keeps at most {MAX_NAMED} prepared statements and portals"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_shape_reads_parameters_and_result_formats() {
        // No parameter formats, no parameters, one result format (binary).
        assert_eq!(bind_shape(b"\0\0\0\0\0\x01\0\x01"), Some((0, vec![1])));
        // One parameter format, two parameters (one NULL), no result formats.
        let msg = b"\0\x01\0\0\0\x02\0\0\0\x011\xff\xff\xff\xff\0\0";
        assert_eq!(bind_shape(msg), Some((2, vec![])));
        assert_eq!(bind_shape(b"\0\0\0\x01\0\0\0\x05ab"), None);
        assert_eq!(bind_shape(b""), None);
    }
}
