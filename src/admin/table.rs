//! Result sets of the admin console: typed columns, rows of optional text values, and their
//! encoding as RowDescription and DataRow in text or binary format.

use bytes::{BufMut, BytesMut};

use crate::protocol::encode;

/// A column's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Text,
    Int8,
    Bool,
}

impl Type {
    /// The PostgreSQL type oid.
    fn oid(self) -> i32 {
        match self {
            Type::Text => 25,
            Type::Int8 => 20,
            Type::Bool => 16,
        }
    }

    /// The binary format's length, or -1 for a variable one.
    fn size(self) -> i16 {
        match self {
            Type::Text => -1,
            Type::Int8 => 8,
            Type::Bool => 1,
        }
    }
}

/// A column: name and type.
pub type Column = (&'static str, Type);

/// A value in its text form (`t`/`f` for booleans), or NULL.
pub type Value = Option<String>;

/// Text of an integer column.
pub fn int(n: impl Into<i64>) -> Value {
    Some(n.into().to_string())
}

/// Text of a boolean column.
pub fn boolean(b: bool) -> Value {
    Some(if b { "t" } else { "f" }.to_owned())
}

/// Text of a text column.
pub fn text(s: impl Into<String>) -> Value {
    Some(s.into())
}

/// Result formats as a Bind message gives them: none (all text), one for all columns, or one
/// per column. Returns each column's format (true: binary), or an error message.
pub fn formats(codes: &[i16], columns: usize) -> Result<Vec<bool>, (&'static str, String)> {
    // (SQLSTATEs as PostgreSQL's: a code it does not know is an invalid parameter value, a
    // count that fits no rule a protocol violation.)
    let binary = |c: i16| match c {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(("22023", format!("unsupported format code: {c}"))),
    };
    match codes {
        [] => Ok(vec![false; columns]),
        [one] => Ok(vec![binary(*one)?; columns]),
        many if many.len() == columns => many.iter().map(|c| binary(*c)).collect(),
        many => Err((
            "08P01",
            format!(
                "bind message has {} result formats but query has {columns} columns",
                many.len()
            ),
        )),
    }
}

/// RowDescription of `columns` in `formats` (see [`formats`]).
pub fn row_description(out: &mut BytesMut, columns: &[Column], formats: &[bool]) {
    encode::message(out, b'T', |b| {
        b.put_i16(columns.len() as i16);
        for (i, (name, ty)) in columns.iter().enumerate() {
            b.put_slice(name.as_bytes());
            b.put_u8(0);
            b.put_i32(0); // table oid
            b.put_i16(0); // column number
            b.put_i32(ty.oid());
            b.put_i16(ty.size());
            b.put_i32(-1); // type modifier
            b.put_i16(i16::from(formats.get(i).copied().unwrap_or(false)));
        }
    });
}

/// DataRow of `row` (text forms, see [`Value`]) in `formats`.
pub fn data_row(out: &mut BytesMut, columns: &[Column], row: &[Value], formats: &[bool]) {
    encode::message(out, b'D', |b| {
        b.put_i16(row.len() as i16);
        for (i, v) in row.iter().enumerate() {
            let Some(v) = v else {
                b.put_i32(-1);
                continue;
            };
            let binary = formats.get(i).copied().unwrap_or(false);
            match (binary, columns.get(i).map(|c| c.1)) {
                (true, Some(Type::Int8)) => {
                    b.put_i32(8);
                    b.put_i64(v.parse().unwrap_or_default());
                }
                (true, Some(Type::Bool)) => {
                    b.put_i32(1);
                    b.put_u8(u8::from(v == "t"));
                }
                // Text, and every type in text format: the text form.
                _ => {
                    b.put_i32(v.len() as i32);
                    b.put_slice(v.as_bytes());
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const COLUMNS: &[Column] = &[("n", Type::Int8), ("b", Type::Bool), ("s", Type::Text)];

    #[test]
    fn formats_follow_the_bind_message_rules() {
        assert_eq!(formats(&[], 3), Ok(vec![false; 3]));
        assert_eq!(formats(&[1], 3), Ok(vec![true; 3]));
        assert_eq!(formats(&[0, 1, 0], 3), Ok(vec![false, true, false]));
        let (code, message) = formats(&[0, 1], 3).unwrap_err();
        assert_eq!(code, "08P01");
        assert!(message.contains("3 columns"), "{message}");
        let (code, message) = formats(&[2], 3).unwrap_err();
        assert_eq!(code, "22023");
        assert!(message.contains("format code: 2"), "{message}");
    }

    #[test]
    fn rows_encode_in_text_and_binary() {
        let row = [int(-2i64), boolean(true), text("ab")];
        let mut out = BytesMut::new();
        data_row(&mut out, COLUMNS, &row, &[false; 3]);
        assert_eq!(
            &out[..],
            b"D\0\0\0\x17\0\x03\0\0\0\x02-2\0\0\0\x01t\0\0\0\x02ab"
        );
        out.clear();
        data_row(&mut out, COLUMNS, &row, &[true; 3]);
        let mut want = b"D\0\0\0\x1d\0\x03\0\0\0\x08".to_vec();
        want.extend_from_slice(&(-2i64).to_be_bytes());
        want.extend_from_slice(b"\0\0\0\x01\x01\0\0\0\x02ab");
        assert_eq!(&out[..], &want[..]);
        out.clear();
        data_row(&mut out, COLUMNS, &[None, None, None], &[true; 3]);
        assert_eq!(
            &out[..],
            b"D\0\0\0\x12\0\x03\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"
        );
    }

    #[test]
    fn row_description_names_types_and_formats() {
        let mut out = BytesMut::new();
        row_description(&mut out, COLUMNS, &[false, true, false]);
        // n: int8 (20), size 8, text format; b: bool (16), size 1, binary.
        assert_eq!(&out[..7], b"T\0\0\0\x42\0\x03");
        assert_eq!(&out[7..9], b"n\0");
        assert_eq!(
            &out[9..27],
            b"\0\0\0\0\0\0\0\0\0\x14\0\x08\xff\xff\xff\xff\0\0"
        );
        assert_eq!(&out[27..29], b"b\0");
        assert_eq!(
            &out[29..47],
            b"\0\0\0\0\0\0\0\0\0\x10\0\x01\xff\xff\xff\xff\0\x01"
        );
    }
}
