//! Server side of SCRAM-SHA-256 (RFC 5802 / RFC 7677) as PostgreSQL runs it.
//!
//! The exchange, with the messages the proxy relays:
//!
//! 1. proxy → `AuthenticationSASL` with [`ScramServer::mechanisms`];
//! 2. client → `SASLInitialResponse`: [`parse_sasl_initial`], then [`ScramServer::client_first`],
//!    whose result goes in `AuthenticationSASLContinue`;
//! 3. client → `SASLResponse`: [`ScramServer::client_final`], whose result goes in
//!    `AuthenticationSASLFinal` (followed by `AuthenticationOk`).
//!
//! Like PostgreSQL: over TLS, SCRAM-SHA-256-PLUS is offered first, with `tls-server-end-point`
//! channel binding ([`ScramServer::with_channel_binding`]): the client's proof then covers the
//! hash of the certificate it saw, so a man in the middle that terminated TLS with another
//! certificate cannot relay the exchange. Without TLS only SCRAM-SHA-256 is offered (and gs2
//! flag `p` is a protocol error); with it, flag `y` (the client would bind but thinks the
//! server cannot) means someone removed PLUS from the offer, and fails. An authorization
//! identity is rejected, and the user name in
//! client-first-message (`n=`) is ignored in favour of the startup user. Optional extension
//! attributes after the nonce are skipped, as PostgreSQL and RFC 5802 skip them; a mandatory
//! one (`m=`) is refused.
//! Any error ends the exchange; later calls fail with [`AuthError::InvalidState`].

use std::mem;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::scram_client::ScramKeys;
use super::secret::{hmac_sha256, ScramSecret, DEFAULT_ITERATIONS, DEFAULT_SALT_LEN};
use super::{constant_time_eq, AuthError};

/// The SASL mechanism name.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";

/// The SASL mechanism name with channel binding.
pub const SCRAM_SHA_256_PLUS: &str = "SCRAM-SHA-256-PLUS";

/// The one channel binding type offered (as PostgreSQL offers only it).
const TLS_SERVER_END_POINT: &[u8] = b"tls-server-end-point";

/// Random bytes in the server nonce (PostgreSQL's `SCRAM_RAW_NONCE_LEN`).
const SERVER_NONCE_LEN: usize = 18;

/// How much of an unexpected mechanism name an error keeps (it comes from the client).
const MAX_MECHANISM_IN_ERROR: usize = 64;

/// Parses the body of a `SASLInitialResponse` message: the mechanism name as a NUL-terminated
/// string, an Int32 length (-1 for no data) and that many bytes of data. No data gives `None`:
/// as PostgreSQL does, the caller then sends an empty `AuthenticationSASLContinue`
/// (after [`ScramServer::select`]) and takes client-first-message from the `SASLResponse`
/// that answers it.
pub fn parse_sasl_initial(body: &[u8]) -> Result<(&str, Option<&[u8]>), AuthError> {
    let nul = body
        .iter()
        .position(|&b| b == 0)
        .ok_or(AuthError::Malformed(
            "SASLInitialResponse mechanism name is not NUL-terminated",
        ))?;
    let mechanism = std::str::from_utf8(&body[..nul]).map_err(|_| {
        AuthError::Malformed("SASLInitialResponse mechanism name is not valid UTF-8")
    })?;
    let (len, data) = body[nul + 1..]
        .split_first_chunk::<4>()
        .ok_or(AuthError::Malformed(
            "SASLInitialResponse is missing the data length",
        ))?;
    let len = i32::from_be_bytes(*len);
    let expected =
        if len == -1 {
            None
        } else {
            Some(usize::try_from(len).map_err(|_| {
                AuthError::Malformed("SASLInitialResponse has a negative data length")
            })?)
        };
    if data.len() != expected.unwrap_or(0) {
        return Err(AuthError::Malformed(
            "SASLInitialResponse data length does not match the message",
        ));
    }
    Ok((mechanism, expected.map(|_| data)))
}

enum State {
    /// Waiting for client-first-message.
    Initial,
    /// server-first-message sent; waiting for client-final-message.
    AwaitingFinal {
        /// What `c=` must carry (base64): the gs2 header of client-first-message, followed by
        /// the channel binding data when the client bound to the channel.
        cbind_input: Vec<u8>,
        /// client-first-message-bare, verbatim (part of AuthMessage).
        client_first_bare: Vec<u8>,
        /// server-first-message, verbatim (part of AuthMessage).
        server_first: String,
        /// client nonce + server nonce, which `r=` must echo.
        nonce: String,
    },
    /// Succeeded or failed; no further steps.
    Finished,
}

/// The server side of one SCRAM-SHA-256 exchange with one client.
pub struct ScramServer {
    secret: ScramSecret,
    server_nonce: String,
    /// Mock exchange for an unknown user: always fails at the proof check.
    doomed: bool,
    state: State,
    /// The ClientKey the client's proof gave away, once it checked out.
    proven: Option<[u8; 32]>,
    /// The connection's `tls-server-end-point` data: SCRAM-SHA-256-PLUS is offered.
    binding: Option<std::sync::Arc<[u8]>>,
}

impl ScramServer {
    /// Starts an exchange checking the client's proof against `secret`, with a fresh random
    /// server nonce (18 random bytes, base64).
    pub fn new(secret: ScramSecret) -> Self {
        Self::build(secret, random_nonce(), false)
    }

    /// Starts a mock exchange for a user that does not exist (or cannot log in this way), so
    /// that the client cannot tell: the salt is derived deterministically from `user` and
    /// `server_secret` (a per-proxy random secret, fixed for the process lifetime or longer), so
    /// repeated attempts see the same salt as they would for a real user; the iteration count is
    /// PostgreSQL's default; messages are validated exactly as for a real user, and
    /// [`client_final`](Self::client_final) always ends with [`AuthError::WrongPassword`] after
    /// doing the same work as a real check.
    pub fn new_mock(user: &str, server_secret: &[u8]) -> Self {
        let derive = |label: &[u8]| hmac_sha256(server_secret, &[label, user.as_bytes()]);
        let salt = derive(b"switchyard scram mock salt\0")[..DEFAULT_SALT_LEN].to_vec();
        let secret = ScramSecret {
            iterations: DEFAULT_ITERATIONS,
            salt,
            stored_key: derive(b"switchyard scram mock stored key\0"),
            server_key: derive(b"switchyard scram mock server key\0"),
        };
        Self::build(secret, random_nonce(), true)
    }

    /// Test-only: a fixed server nonce (for the RFC 7677 test vector).
    #[cfg(test)]
    pub(crate) fn with_nonce(secret: ScramSecret, server_nonce: &str) -> Self {
        Self::build(secret, server_nonce.to_owned(), false)
    }

    fn build(secret: ScramSecret, server_nonce: String, doomed: bool) -> Self {
        ScramServer {
            secret,
            server_nonce,
            doomed,
            state: State::Initial,
            proven: None,
            binding: None,
        }
    }

    /// Offers SCRAM-SHA-256-PLUS bound to `end_point`, the `tls-server-end-point` data of the
    /// certificate the client's TLS connection presented (`None`: not offered).
    pub fn with_channel_binding(mut self, end_point: Option<std::sync::Arc<[u8]>>) -> Self {
        self.binding = end_point;
        self
    }

    /// The body of the `AuthenticationSASL` message (after the Int32 10): the offered mechanism
    /// names, each NUL-terminated, then a terminating NUL; PLUS first when offered, as
    /// PostgreSQL lists them.
    pub fn mechanisms(&self) -> &'static [u8] {
        if self.binding.is_some() {
            b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0"
        } else {
            b"SCRAM-SHA-256\0\0"
        }
    }

    /// Checks the mechanism the client chose: whether it is one offered, and whether it binds
    /// to the channel. PostgreSQL checks it before anything else, also when the
    /// `SASLInitialResponse` carries no data.
    pub fn select(&self, mechanism: &str) -> Result<bool, AuthError> {
        match mechanism {
            SCRAM_SHA_256 => Ok(false),
            SCRAM_SHA_256_PLUS if self.binding.is_some() => Ok(true),
            _ => Err(AuthError::UnsupportedMechanism(
                mechanism.chars().take(MAX_MECHANISM_IN_ERROR).collect(),
            )),
        }
    }

    /// Handles the `SASLInitialResponse` (mechanism and data as returned by
    /// [`parse_sasl_initial`]); returns server-first-message, the body of
    /// `AuthenticationSASLContinue`.
    pub fn client_first(&mut self, mechanism: &str, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        if !matches!(
            mem::replace(&mut self.state, State::Finished),
            State::Initial
        ) {
            return Err(AuthError::InvalidState);
        }
        let plus = self.select(mechanism)?;
        let first = parse_client_first(data)?;
        let mut cbind_input = first.gs2_header.to_vec();
        match (first.cbind, plus) {
            (Cbind::Bound(name), true) if name == TLS_SERVER_END_POINT => {
                cbind_input.extend_from_slice(self.binding.as_deref().unwrap_or_default());
            }
            (Cbind::Bound(name), true) => {
                return Err(AuthError::UnsupportedChannelBinding(
                    String::from_utf8_lossy(name)
                        .chars()
                        .take(MAX_MECHANISM_IN_ERROR)
                        .collect(),
                ))
            }
            (Cbind::Bound(_), false) => return Err(AuthError::ChannelBindingNotSupported),
            (_, true) => return Err(AuthError::ChannelBindingRequired),
            (Cbind::WouldBind, false) if self.binding.is_some() => {
                return Err(AuthError::ChannelBindingDowngrade)
            }
            (Cbind::WouldBind | Cbind::No, false) => {}
        }
        let nonce = format!("{}{}", first.client_nonce, self.server_nonce);
        let server_first = format!(
            "r={},s={},i={}",
            nonce,
            STANDARD.encode(&self.secret.salt),
            self.secret.iterations
        );
        self.state = State::AwaitingFinal {
            cbind_input,
            client_first_bare: first.bare.to_vec(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok(server_first.into_bytes())
    }

    /// Handles the `SASLResponse` carrying client-final-message: checks the channel-binding
    /// echo, the nonce and the proof. Returns server-final-message (`v=<ServerSignature>`), the
    /// body of `AuthenticationSASLFinal`. A proof that does not match (or any proof in a mock
    /// exchange) gives [`AuthError::WrongPassword`].
    pub fn client_final(&mut self, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        let State::AwaitingFinal {
            cbind_input,
            client_first_bare,
            server_first,
            nonce,
        } = mem::replace(&mut self.state, State::Finished)
        else {
            return Err(AuthError::InvalidState);
        };
        check_message(data, "empty client-final-message")?;

        let mut cur = Cursor::new(data);
        let cbind = cur.attribute(b'c', "channel-binding attribute expected")?;
        if cbind != STANDARD.encode(&cbind_input).as_bytes() {
            // A bound client saw another certificate; an unbound one just sent something else
            // than its gs2 header (PostgreSQL answers the two differently).
            return Err(if cbind_input.starts_with(b"p=") {
                AuthError::ChannelBindingMismatch
            } else {
                AuthError::Malformed(
                    "unexpected SCRAM channel-binding attribute in client-final-message",
                )
            });
        }
        cur.expect(b',', "comma expected after channel-binding attribute")?;
        let client_nonce = cur.attribute(b'r', "nonce attribute expected")?;
        if client_nonce != nonce.as_bytes() {
            return Err(AuthError::NonceMismatch);
        }
        cur.expect(b',', "comma expected after nonce")?;
        // Optional extensions before the proof, skipped (they are part of what it proves).
        loop {
            match cur.peek() {
                Some(b'p') => break,
                Some(c) if c.is_ascii_alphabetic() => {
                    cur.any_attribute()?;
                    cur.expect(b',', "proof attribute expected")?;
                }
                _ => return Err(AuthError::Malformed("proof attribute expected")),
            }
        }
        let without_proof = &data[..cur.pos - 1];
        let proof = cur.attribute(b'p', "proof attribute expected")?;
        if !cur.at_end() {
            return Err(AuthError::Malformed(
                "garbage at the end of client-final-message",
            ));
        }
        let proof: [u8; 32] = STANDARD
            .decode(proof)
            .map_err(|_| AuthError::Malformed("proof is not valid base64"))?
            .try_into()
            .map_err(|_| AuthError::Malformed("proof has the wrong length"))?;

        let auth_message: [&[u8]; 5] = [
            &client_first_bare,
            b",",
            server_first.as_bytes(),
            b",",
            without_proof,
        ];
        let client_signature = hmac_sha256(&self.secret.stored_key, &auth_message);
        let mut client_key = proof;
        for (k, s) in client_key.iter_mut().zip(client_signature.iter()) {
            *k ^= s;
        }
        let computed_stored_key = Sha256::digest(client_key);
        let matches = constant_time_eq(&computed_stored_key, &self.secret.stored_key);
        // Computed regardless of the outcome so that a mock exchange costs the same.
        let server_signature = hmac_sha256(&self.secret.server_key, &auth_message);
        if !matches || self.doomed {
            return Err(AuthError::WrongPassword);
        }
        self.proven = Some(client_key);
        Ok(format!("v={}", STANDARD.encode(server_signature)).into_bytes())
    }
}

impl ScramServer {
    /// After a successful exchange, what the proxy needs to log in to a server as this client
    /// without its password: the verifier's salt, iterations and ServerKey, and the ClientKey
    /// recovered from the client's proof (see [`super::scram_client`]).
    pub fn proven_keys(&self) -> Option<ScramKeys> {
        self.proven.map(|client_key| ScramKeys {
            iterations: self.secret.iterations,
            salt: self.secret.salt.clone(),
            client_key,
            server_key: self.secret.server_key,
        })
    }
}

pub(super) fn random_nonce() -> String {
    let mut raw = [0u8; SERVER_NONCE_LEN];
    rand::thread_rng().fill_bytes(&mut raw);
    STANDARD.encode(raw)
}

/// The gs2 channel binding flag of client-first-message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cbind<'a> {
    /// `n`: the client does not bind.
    No,
    /// `y`: the client would bind, but thinks the server cannot.
    WouldBind,
    /// `p=<type>`: the client binds with this type.
    Bound(&'a [u8]),
}

/// The parts of client-first-message the server uses.
struct ClientFirst<'a> {
    cbind: Cbind<'a>,
    gs2_header: &'a [u8],
    bare: &'a [u8],
    client_nonce: &'a str,
}

fn parse_client_first(data: &[u8]) -> Result<ClientFirst<'_>, AuthError> {
    check_message(data, "empty client-first-message")?;
    let mut cur = Cursor::new(data);

    // gs2-header = gs2-cbind-flag "," [ authzid ] ","
    // gs2-cbind-flag = ("p=" cb-name) / "n" / "y"
    let cbind = match cur.next() {
        Some(b'n') => Cbind::No,
        Some(b'y') => Cbind::WouldBind,
        Some(b'p') => {
            cur.expect(b'=', "'=' expected after channel-binding flag p")?;
            let start = cur.pos;
            while cur
                .peek()
                .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            {
                cur.pos += 1;
            }
            if cur.pos == start {
                return Err(AuthError::Malformed("empty channel-binding type"));
            }
            Cbind::Bound(&data[start..cur.pos])
        }
        _ => return Err(AuthError::Malformed("unexpected channel-binding flag")),
    };
    cur.expect(b',', "comma expected after channel-binding flag")?;
    match cur.peek() {
        Some(b',') => cur.pos += 1,
        Some(b'a') => return Err(AuthError::AuthzidNotSupported),
        _ => return Err(AuthError::Malformed("unexpected attribute in gs2 header")),
    }
    let (gs2_header, bare) = data.split_at(cur.pos);

    // client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions]
    if cur.peek() == Some(b'm') {
        return Err(AuthError::UnsupportedExtension);
    }
    // The user name is ignored: the startup packet's user is authenticated (as PostgreSQL does).
    cur.attribute(b'n', "user name attribute expected")?;
    cur.expect(b',', "comma expected after user name")?;
    let client_nonce = cur.attribute(b'r', "nonce attribute expected")?;
    if client_nonce.is_empty() {
        return Err(AuthError::Malformed("empty client nonce"));
    }
    // printable = %x21-2B / %x2D-7E (',' already ends the attribute)
    if !client_nonce.iter().all(|&b| (0x21..=0x7e).contains(&b)) {
        return Err(AuthError::Malformed(
            "non-printable characters in client nonce",
        ));
    }
    let client_nonce = std::str::from_utf8(client_nonce)
        .map_err(|_| AuthError::Malformed("non-printable characters in client nonce"))?;
    // Optional extensions, skipped.
    while cur.peek() == Some(b',') {
        cur.next();
        cur.any_attribute()?;
    }
    if !cur.at_end() {
        return Err(AuthError::Malformed("garbage after client nonce"));
    }
    Ok(ClientFirst {
        cbind,
        gs2_header,
        bare,
        client_nonce,
    })
}

/// Rejects empty messages and embedded NULs (PostgreSQL reads these messages as C strings).
fn check_message(data: &[u8], empty: &'static str) -> Result<(), AuthError> {
    if data.is_empty() {
        return Err(AuthError::Malformed(empty));
    }
    if data.contains(&0) {
        return Err(AuthError::Malformed("NUL byte in SCRAM message"));
    }
    Ok(())
}

/// A read position in a SCRAM message.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(data: &'a [u8]) -> Self {
        Cursor { data, pos: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.data.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    fn at_end(&self) -> bool {
        self.pos >= self.data.len()
    }

    fn expect(&mut self, byte: u8, err: &'static str) -> Result<(), AuthError> {
        if self.next() == Some(byte) {
            Ok(())
        } else {
            Err(AuthError::Malformed(err))
        }
    }

    /// Reads an attribute of any name (a letter) and its value.
    fn any_attribute(&mut self) -> Result<(), AuthError> {
        match self.peek() {
            Some(c) if c.is_ascii_alphabetic() => self.attribute(c, "attribute expected").map(drop),
            _ => Err(AuthError::Malformed("attribute expected")),
        }
    }

    /// Reads `<name>=<value>` and returns the value, which runs to the next ',' or the end.
    fn attribute(&mut self, name: u8, err: &'static str) -> Result<&'a [u8], AuthError> {
        self.expect(name, err)?;
        self.expect(b'=', err)?;
        let rest = self.data.get(self.pos..).unwrap_or_default();
        let len = rest.iter().position(|&b| b == b',').unwrap_or(rest.len());
        self.pos += len;
        Ok(&rest[..len])
    }
}
