//! The untyped first message of a connection: StartupMessage, SSLRequest, GSSENCRequest or
//! CancelRequest, all framed as a length followed by a 32-bit code.

use super::frame::{read_cstr, read_i32};

/// PostgreSQL's own bound on a startup packet (`MAX_STARTUP_PACKET_LENGTH`).
pub const MAX_STARTUP_LEN: usize = 10_000;
/// Protocol 3.0.
pub const PROTOCOL_3_0: i32 = 196_608;
const SSL_REQUEST_CODE: i32 = 80_877_103;
/// An SSLRequest packet whole (length 8, code 80877103), as a client sends it.
pub const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
const GSSENC_REQUEST: i32 = 80_877_104;
const CANCEL_REQUEST: i32 = 80_877_102;

/// A parsed first message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Initial {
    /// The client asks for TLS; answer `S` or `N`.
    SslRequest,
    /// The client asks for GSSAPI encryption; answer `G` or `N`.
    GssEncRequest,
    /// Out-of-band cancel of the query running on connection `pid`.
    Cancel { pid: i32, secret: i32 },
    /// A StartupMessage.
    Startup(Startup),
}

/// A StartupMessage: protocol version and the parameters in the order sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Startup {
    /// Major protocol version (3 for every supported client).
    pub major: u16,
    /// Minor protocol version; above 0 is answered with NegotiateProtocolVersion.
    pub minor: u16,
    /// Name/value pairs exactly as sent (`user`, `database`, `options`, GUCs, `_pq_.*`).
    pub params: Vec<(String, String)>,
}

impl Startup {
    /// The value of a parameter, if sent (the last one, when sent twice: PostgreSQL takes
    /// the last).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A boolean as PostgreSQL's `parse_bool` reads it: `true`/`false`, `yes`/`no`, `on`/`off`,
/// `1`/`0`, any unambiguous prefix of those words, in any case (`None`: not a boolean).
pub fn parse_bool(value: &str) -> Option<bool> {
    let v = value.to_ascii_lowercase();
    if v.is_empty() {
        return None;
    }
    match v.as_str() {
        "1" => return Some(true),
        "0" => return Some(false),
        // "o" alone could be on or off.
        "o" => return None,
        _ => {}
    }
    for (word, b) in [
        ("true", true),
        ("false", false),
        ("yes", true),
        ("no", false),
    ] {
        if word.starts_with(&v) {
            return Some(b);
        }
    }
    if v.len() >= 2 && "off".starts_with(&v) {
        return Some(false);
    }
    (v == "on").then_some(true)
}

/// Why a first message is unacceptable; each maps to a FATAL the proxy sends back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartupError {
    #[error("invalid length of startup packet")]
    BadLength,
    #[error("unsupported frontend protocol {0}.{1}: server supports 3.0 to 3.0")]
    UnsupportedProtocol(u16, u16),
    #[error("invalid startup packet layout: expected terminator as last byte")]
    Malformed,
    #[error("invalid byte sequence in startup packet")]
    NotUtf8,
}

/// The declared length of a startup packet from its first four bytes, validated.
pub fn declared_len(first4: [u8; 4]) -> Result<usize, StartupError> {
    let len = i32::from_be_bytes(first4);
    if !(8..=MAX_STARTUP_LEN as i32).contains(&len) {
        return Err(StartupError::BadLength);
    }
    Ok(len as usize)
}

/// Parses a whole first message (`packet` includes the four length bytes).
pub fn parse(packet: &[u8]) -> Result<Initial, StartupError> {
    let (_, body) = read_i32(packet).ok_or(StartupError::BadLength)?;
    let (code, rest) = read_i32(body).ok_or(StartupError::BadLength)?;
    match code {
        SSL_REQUEST_CODE => Ok(Initial::SslRequest),
        GSSENC_REQUEST => Ok(Initial::GssEncRequest),
        CANCEL_REQUEST => {
            let (pid, rest) = read_i32(rest).ok_or(StartupError::BadLength)?;
            let (secret, rest) = read_i32(rest).ok_or(StartupError::BadLength)?;
            // Exactly 16 bytes, as PostgreSQL takes it (the keys switchyard hands out are 4
            // bytes: a longer packet cancels nothing).
            if !rest.is_empty() {
                return Err(StartupError::BadLength);
            }
            Ok(Initial::Cancel { pid, secret })
        }
        _ => {
            let major = (code >> 16) as u16;
            let minor = (code & 0xffff) as u16;
            if major != 3 {
                return Err(StartupError::UnsupportedProtocol(major, minor));
            }
            let params = parse_params(rest)?;
            Ok(Initial::Startup(Startup {
                major,
                minor,
                params,
            }))
        }
    }
}

fn parse_params(mut rest: &[u8]) -> Result<Vec<(String, String)>, StartupError> {
    let mut params = Vec::new();
    loop {
        let (name, after) = read_cstr(rest).ok_or(StartupError::Malformed)?;
        if name.is_empty() {
            if !after.is_empty() {
                return Err(StartupError::Malformed);
            }
            return Ok(params);
        }
        let (value, after) = read_cstr(after).ok_or(StartupError::Malformed)?;
        let name = std::str::from_utf8(name).map_err(|_| StartupError::NotUtf8)?;
        let value = std::str::from_utf8(value).map_err(|_| StartupError::NotUtf8)?;
        params.push((name.to_owned(), value.to_owned()));
        rest = after;
    }
}

/// A user or database name as PostgreSQL keeps it: its first 63 bytes (`NAMEDATALEN - 1`),
/// cut at a character boundary.
pub fn name_cut(s: &str) -> &str {
    let mut end = s.len().min(63);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parameter_sent_twice_has_its_last_value() {
        let s = Startup {
            major: 3,
            minor: 0,
            params: vec![
                ("user".into(), "a".into()),
                ("database".into(), "x".into()),
                ("user".into(), "b".into()),
            ],
        };
        assert_eq!(
            (s.param("user"), s.param("database")),
            (Some("b"), Some("x"))
        );
        assert_eq!(s.param("options"), None);
    }

    #[test]
    fn booleans_are_read_as_postgresql_reads_them() {
        for (v, b) in [
            ("true", Some(true)),
            ("T", Some(true)),
            ("yes", Some(true)),
            ("on", Some(true)),
            ("1", Some(true)),
            ("FALSE", Some(false)),
            ("n", Some(false)),
            ("of", Some(false)),
            ("off", Some(false)),
            ("0", Some(false)),
            ("o", None),
            ("database", None),
            ("", None),
            (" true", None),
            ("10", None),
        ] {
            assert_eq!(parse_bool(v), b, "{v:?}");
        }
    }

    fn packet(code: i32, body: &[u8]) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&((8 + body.len()) as i32).to_be_bytes());
        p.extend_from_slice(&code.to_be_bytes());
        p.extend_from_slice(body);
        p
    }

    #[test]
    fn startup_params() {
        let p = packet(PROTOCOL_3_0, b"user\0app\0database\0db\0\0");
        let Initial::Startup(s) = parse(&p).unwrap() else {
            panic!()
        };
        assert_eq!((s.major, s.minor), (3, 0));
        assert_eq!(s.param("user"), Some("app"));
        assert_eq!(s.param("database"), Some("db"));
        assert_eq!(s.param("x"), None);
    }

    #[test]
    fn special_requests() {
        assert_eq!(
            parse(&packet(SSL_REQUEST_CODE, b"")),
            Ok(Initial::SslRequest)
        );
        assert_eq!(parse(&SSL_REQUEST), Ok(Initial::SslRequest));
        assert_eq!(
            parse(&packet(GSSENC_REQUEST, b"")),
            Ok(Initial::GssEncRequest)
        );
        let mut body = 7i32.to_be_bytes().to_vec();
        body.extend_from_slice(&9i32.to_be_bytes());
        assert_eq!(
            parse(&packet(CANCEL_REQUEST, &body)),
            Ok(Initial::Cancel { pid: 7, secret: 9 })
        );
        body.extend_from_slice(&0i32.to_be_bytes());
        assert_eq!(
            parse(&packet(CANCEL_REQUEST, &body)),
            Err(StartupError::BadLength),
            "a cancel request of 20 bytes"
        );
    }

    #[test]
    fn bad_packets() {
        assert_eq!(
            parse(&packet(2 << 16, b"\0")),
            Err(StartupError::UnsupportedProtocol(2, 0))
        );
        assert_eq!(
            parse(&packet(PROTOCOL_3_0, b"user\0app")),
            Err(StartupError::Malformed)
        );
        assert_eq!(
            parse(&packet(PROTOCOL_3_0, b"user\0app\0\0x")),
            Err(StartupError::Malformed)
        );
        assert_eq!(
            parse(&packet(PROTOCOL_3_0, b"us\xffer\0a\0\0")),
            Err(StartupError::NotUtf8)
        );
        assert_eq!(
            declared_len(3i32.to_be_bytes()),
            Err(StartupError::BadLength)
        );
        assert_eq!(
            declared_len(i32::MAX.to_be_bytes()),
            Err(StartupError::BadLength)
        );
        assert_eq!(declared_len(8i32.to_be_bytes()), Ok(8));
    }

    #[test]
    fn names_are_cut_to_63_bytes() {
        let long = "u".repeat(70);
        assert_eq!(name_cut(&long), &long[..63]);
        assert_eq!(name_cut("app"), "app");
        // (A character is not split.)
        let s = format!("{}é", "a".repeat(62));
        assert_eq!(name_cut(&s), &s[..62]);
    }
}
