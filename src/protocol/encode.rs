//! Encoders for the messages the proxy itself writes: backend messages to clients (which
//! `postgres-protocol` does not encode) and rewritten frontend messages to servers.

use bytes::{BufMut, BytesMut};

use super::TxnStatus;

/// Writes one typed message: tag, length placeholder, body from `f`, then patches the length.
pub fn message(buf: &mut BytesMut, tag: u8, f: impl FnOnce(&mut BytesMut)) {
    buf.put_u8(tag);
    let at = buf.len();
    buf.put_i32(0);
    f(buf);
    let len = (buf.len() - at) as i32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn cstr(buf: &mut BytesMut, s: &[u8]) {
    buf.put_slice(s);
    buf.put_u8(0);
}

/// ErrorResponse (or NoticeResponse with `tag = b'N'`) with severity, SQLSTATE and message.
pub fn error_fields(buf: &mut BytesMut, tag: u8, severity: &str, code: &str, msg: &str) {
    error_with(buf, tag, severity, code, msg, &[]);
}

/// [`error_fields`] with more fields (`(field type, value)`: `b'R'` for the routine, ...).
pub fn error_with(
    buf: &mut BytesMut,
    tag: u8,
    severity: &str,
    code: &str,
    msg: &str,
    extra: &[(u8, &str)],
) {
    message(buf, tag, |b| {
        b.put_u8(b'S');
        cstr(b, severity.as_bytes());
        b.put_u8(b'V');
        cstr(b, severity.as_bytes());
        b.put_u8(b'C');
        cstr(b, code.as_bytes());
        b.put_u8(b'M');
        cstr(b, msg.as_bytes());
        for (t, v) in extra {
            b.put_u8(*t);
            cstr(b, v.as_bytes());
        }
        b.put_u8(0);
    });
}

/// ErrorResponse.
pub fn error(buf: &mut BytesMut, severity: &str, code: &str, msg: &str) {
    error_fields(buf, b'E', severity, code, msg);
}

/// AuthenticationOk.
pub fn auth_ok(buf: &mut BytesMut) {
    message(buf, b'R', |b| b.put_i32(0));
}

/// AuthenticationCleartextPassword.
pub fn auth_cleartext(buf: &mut BytesMut) {
    message(buf, b'R', |b| b.put_i32(3));
}

/// AuthenticationMD5Password with its salt.
pub fn auth_md5(buf: &mut BytesMut, salt: [u8; 4]) {
    message(buf, b'R', |b| {
        b.put_i32(5);
        b.put_slice(&salt);
    });
}

/// AuthenticationSASL listing mechanisms (`mechanisms` is the NUL-separated, NUL-ended list).
pub fn auth_sasl(buf: &mut BytesMut, mechanisms: &[u8]) {
    message(buf, b'R', |b| {
        b.put_i32(10);
        b.put_slice(mechanisms);
    });
}

/// AuthenticationSASLContinue.
pub fn auth_sasl_continue(buf: &mut BytesMut, data: &[u8]) {
    message(buf, b'R', |b| {
        b.put_i32(11);
        b.put_slice(data);
    });
}

/// AuthenticationSASLFinal.
pub fn auth_sasl_final(buf: &mut BytesMut, data: &[u8]) {
    message(buf, b'R', |b| {
        b.put_i32(12);
        b.put_slice(data);
    });
}

/// ParameterStatus.
pub fn parameter_status(buf: &mut BytesMut, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
    message(buf, b'S', |b| {
        cstr(b, name.as_ref());
        cstr(b, value.as_ref());
    });
}

/// BackendKeyData.
pub fn backend_key_data(buf: &mut BytesMut, pid: i32, secret: i32) {
    message(buf, b'K', |b| {
        b.put_i32(pid);
        b.put_i32(secret);
    });
}

/// ReadyForQuery.
pub fn ready_for_query(buf: &mut BytesMut, status: TxnStatus) {
    message(buf, b'Z', |b| b.put_u8(status.byte()));
}

/// CommandComplete with a command tag such as `DEALLOCATE`.
pub fn command_complete(buf: &mut BytesMut, tag: &str) {
    message(buf, b'C', |b| cstr(b, tag.as_bytes()));
}

/// NegotiateProtocolVersion: the newest minor version supported and the unrecognised options.
pub fn negotiate_protocol_version(buf: &mut BytesMut, minor: i32, unrecognized: &[&str]) {
    message(buf, b'v', |b| {
        b.put_i32(minor);
        b.put_i32(unrecognized.len() as i32);
        for o in unrecognized {
            cstr(b, o.as_bytes());
        }
    });
}

/// An empty-bodied message such as ParseComplete (`1`), BindComplete (`2`), CloseComplete (`3`).
pub fn empty(buf: &mut BytesMut, tag: u8) {
    message(buf, tag, |_| {});
}

/// A Bind message naming `statement` instead of the client's name; `rest` is everything after
/// the client's statement name (formats, parameters, result formats), copied as is.
pub fn bind_renamed(buf: &mut BytesMut, portal: &[u8], statement: &[u8], rest: &[u8]) {
    message(buf, b'B', |b| {
        cstr(b, portal);
        cstr(b, statement);
        b.put_slice(rest);
    });
}

/// A Describe or Close (`tag`) of kind `S`/`P` with a (possibly rewritten) name.
pub fn describe_or_close(buf: &mut BytesMut, tag: u8, kind: u8, name: &[u8]) {
    message(buf, tag, |b| {
        b.put_u8(kind);
        cstr(b, name);
    });
}

/// A Parse message; `types` is the raw parameter-type section (Int16 count + Int32 OIDs).
pub fn parse(buf: &mut BytesMut, name: &[u8], query: &[u8], types: &[u8]) {
    message(buf, b'P', |b| {
        cstr(b, name);
        cstr(b, query);
        b.put_slice(types);
    });
}

/// RowDescription of text columns.
pub fn row_description_text(buf: &mut BytesMut, names: &[&str]) {
    message(buf, b'T', |b| {
        b.put_i16(names.len() as i16);
        for n in names {
            cstr(b, n.as_bytes());
            b.put_i32(0); // table oid
            b.put_i16(0); // column number
            b.put_i32(25); // text
            b.put_i16(-1);
            b.put_i32(-1);
            b.put_i16(0); // text format
        }
    });
}

/// DataRow of text values.
pub fn data_row_text(buf: &mut BytesMut, values: &[&str]) {
    message(buf, b'D', |b| {
        b.put_i16(values.len() as i16);
        for v in values {
            b.put_i32(v.len() as i32);
            b.put_slice(v.as_bytes());
        }
    });
}

/// A simple Query message.
pub fn query(buf: &mut BytesMut, sql: &str) {
    message(buf, b'Q', |b| cstr(b, sql.as_bytes()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_known_bytes() {
        let mut b = BytesMut::new();
        ready_for_query(&mut b, TxnStatus::Idle);
        assert_eq!(&b[..], b"Z\0\0\0\x05I");
        b.clear();
        auth_ok(&mut b);
        assert_eq!(&b[..], b"R\0\0\0\x08\0\0\0\0");
        b.clear();
        empty(&mut b, b'1');
        assert_eq!(&b[..], b"1\0\0\0\x04");
        b.clear();
        parameter_status(&mut b, "a", "b");
        assert_eq!(&b[..], b"S\0\0\0\x08a\0b\0");
        b.clear();
        command_complete(&mut b, "SET");
        assert_eq!(&b[..], b"C\0\0\0\x08SET\0");
        b.clear();
        bind_renamed(&mut b, b"", b"s1", b"\0\0\0\0\0\0");
        assert_eq!(&b[..], b"B\0\0\0\x0e\0s1\0\0\0\0\0\0\0");
        b.clear();
        query(&mut b, "select 1");
        assert_eq!(&b[..], b"Q\0\0\0\x0dselect 1\0");
    }

    #[test]
    fn error_round_trips_through_parser() {
        let mut b = BytesMut::new();
        error(
            &mut b,
            "FATAL",
            "28P01",
            "password authentication failed for user \"x\"",
        );
        let f = super::super::ErrorFields::parse(&b[5..]);
        assert_eq!(f.severity, "FATAL");
        assert_eq!(f.code, "28P01");
        assert_eq!(f.message, "password authentication failed for user \"x\"");
        assert_eq!(
            b.len(),
            1 + i32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize
        );
    }
}
