//! Framing: every message after startup is a type byte, a big-endian `i32` length that counts
//! itself but not the type byte, and a body.

/// Bytes of a regular message header: type byte plus length.
pub const HEADER_LEN: usize = 5;

/// The header of a regular (typed) message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The message type byte.
    pub tag: u8,
    /// Whole frame length including the type byte (`1 + declared length`).
    pub frame_len: usize,
}

/// Why a header is unacceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The declared length is below 4 (it must at least count itself).
    #[error("invalid message length {0}")]
    BadLength(i64),
    /// The declared length exceeds what the proxy accepts for this message.
    #[error("message of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge { len: usize, limit: usize },
}

impl Header {
    /// Reads a header from the start of `buf`; `Ok(None)` when fewer than five bytes are there.
    /// `limit` bounds the frame length so a hostile length cannot make the proxy buffer gigabytes.
    pub fn peek(buf: &[u8], limit: usize) -> Result<Option<Header>, FrameError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let declared = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
        if declared < 4 {
            return Err(FrameError::BadLength(declared as i64));
        }
        let frame_len = declared as usize + 1;
        if frame_len > limit {
            return Err(FrameError::TooLarge {
                len: frame_len,
                limit,
            });
        }
        Ok(Some(Header {
            tag: buf[0],
            frame_len,
        }))
    }

    /// Body length (frame minus header).
    pub fn body_len(&self) -> usize {
        self.frame_len - HEADER_LEN
    }
}

/// Splits a NUL-terminated string off the front of `buf`: returns the string and the rest.
pub fn read_cstr(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = buf.iter().position(|&b| b == 0)?;
    Some((&buf[..nul], &buf[nul + 1..]))
}

/// Reads a big-endian `i32` off the front of `buf`.
pub fn read_i32(buf: &[u8]) -> Option<(i32, &[u8])> {
    if buf.len() < 4 {
        return None;
    }
    Some((
        i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]),
        &buf[4..],
    ))
}

/// Reads a big-endian `i16` off the front of `buf`.
pub fn read_i16(buf: &[u8]) -> Option<(i16, &[u8])> {
    if buf.len() < 2 {
        return None;
    }
    Some((i16::from_be_bytes([buf[0], buf[1]]), &buf[2..]))
}

/// Parameter `n` (1-based) of a Bind message, from `rest` (the message after the portal and
/// statement names): its format code (0 text, 1 binary) and value (`None` for NULL). `None`
/// when the message has no such parameter or is malformed.
pub fn bind_param(rest: &[u8], n: usize) -> Option<(i16, Option<&[u8]>)> {
    let (formats, mut b) = read_i16(rest)?;
    let formats = usize::try_from(formats).ok()?;
    let mut format = 0;
    for i in 1..=formats {
        let (f, r) = read_i16(b)?;
        if formats == 1 || i == n {
            format = f;
        }
        b = r;
    }
    let (params, mut b) = read_i16(b)?;
    if n == 0 || n > usize::try_from(params).ok()? {
        return None;
    }
    for i in 1..=n {
        let (len, r) = read_i32(b)?;
        let value = match usize::try_from(len) {
            Ok(len) => Some(r.get(..len)?),
            Err(_) => None,
        };
        if i == n {
            return Some((format, value));
        }
        b = &r[value.map_or(0, <[u8]>::len)..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peek_needs_five_bytes() {
        assert_eq!(Header::peek(b"Z\0\0\0", 100), Ok(None));
        assert_eq!(
            Header::peek(b"Z\0\0\0\x05I", 100),
            Ok(Some(Header {
                tag: b'Z',
                frame_len: 6
            }))
        );
    }

    #[test]
    fn peek_rejects_bad_and_huge_lengths() {
        assert_eq!(
            Header::peek(b"Q\0\0\0\x03", 100),
            Err(FrameError::BadLength(3))
        );
        assert_eq!(
            Header::peek(b"Q\xff\xff\xff\xff", 100),
            Err(FrameError::BadLength(-1))
        );
        assert_eq!(
            Header::peek(b"Q\x7f\xff\xff\xff", 1 << 20),
            Err(FrameError::TooLarge {
                len: 0x8000_0000,
                limit: 1 << 20
            })
        );
    }

    #[test]
    fn cstr_and_ints() {
        assert_eq!(read_cstr(b"ab\0cd"), Some((&b"ab"[..], &b"cd"[..])));
        assert_eq!(read_cstr(b"ab"), None);
        assert_eq!(read_i32(b"\0\0\x01\x00x"), Some((256, &b"x"[..])));
        assert_eq!(read_i16(b"\xff\xff"), Some((-1, &b""[..])));
        assert_eq!(read_i16(b"\x01"), None);
    }
}
