//! `AuthenticationMD5Password`: checking the client's response.

use ::md5::{Digest, Md5};

use super::constant_time_eq;
use super::secret::StoredPassword;

/// Checks the response to an `AuthenticationMD5Password` challenge with `salt`.
///
/// `client_response` is the `PasswordMessage` payload without its trailing NUL; a correct one is
/// `"md5" + md5hex(md5hex(password + user) + salt)`. With a clear-text stored password the inner
/// hash is computed here, with an md5 stored hash it is used directly, and a SCRAM verifier can
/// never satisfy an md5 challenge (`false`). The comparison is constant-time.
pub fn md5_challenge_response_ok(
    stored: &StoredPassword,
    user: &str,
    salt: [u8; 4],
    client_response: &[u8],
) -> bool {
    let inner_hex = match stored {
        // No password (a `[[users]]` entry without one): nothing proves it.
        StoredPassword::Plain(password) if password.is_empty() => return false,
        StoredPassword::Plain(password) => {
            let mut md5 = Md5::new();
            md5.update(password.as_bytes());
            md5.update(user.as_bytes());
            hex(&md5.finalize())
        }
        StoredPassword::Md5(hash) => hash.to_ascii_lowercase(),
        StoredPassword::Scram(_) => return false,
    };
    let expected = md5_response(&inner_hex, salt);
    constant_time_eq(expected.as_bytes(), client_response)
}

/// The response to an md5 challenge with `salt` from the stored hash's 32 hex digits
/// (md5hex(password + user)): `"md5" + md5hex(inner_hex + salt)`. This is how the proxy answers
/// a server for a role whose password it knows only as an md5 hash.
pub fn md5_response(inner_hex: &str, salt: [u8; 4]) -> String {
    let mut md5 = Md5::new();
    md5.update(inner_hex.as_bytes());
    md5.update(salt);
    format!("md5{}", hex(&md5.finalize()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}
