//! Client side of SCRAM-SHA-256 run from a verifier's keys instead of a password.
//!
//! A role looked up with `auth_query` has only its verifier on the proxy
//! (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`). When one of its clients proves
//! its password to the proxy, the proof gives away the ClientKey (proof XOR ClientSignature),
//! and ClientKey with ServerKey is all a SCRAM client needs: the proof it sends is
//! ClientKey XOR HMAC(H(ClientKey), AuthMessage), and it checks the server with
//! HMAC(ServerKey, AuthMessage). The password never has to be known. (PgBouncer logs in the
//! same way.) A client with a password uses postgres-protocol's `ScramSha256` instead.
//!
//! The keys are bound to the verifier's salt and iteration count: a server offering others has
//! a new password for the role, and the exchange stops there.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha2::{Digest, Sha256};

use super::secret::hmac_sha256;
use super::{constant_time_eq, AuthError};

/// What a SCRAM client needs of a role's secret: the verifier's salt and iteration count, and
/// the ClientKey and ServerKey. `Debug` redacts the keys.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramKeys {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub client_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl fmt::Debug for ScramKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramKeys")
            .field("iterations", &self.iterations)
            .field("salt", &STANDARD.encode(&self.salt))
            .finish_non_exhaustive()
    }
}

enum State {
    /// client-first-message not produced yet.
    Initial,
    /// client-first-message sent; waiting for server-first-message.
    SentFirst { first_bare: String },
    /// client-final-message sent; the server's signature it must send.
    SentFinal { server_signature: [u8; 32] },
    /// Done, or failed.
    Finished,
}

/// One SCRAM-SHA-256 exchange with a server, from [`ScramKeys`]. No channel binding (gs2 `n`).
pub struct ScramKeysClient {
    keys: ScramKeys,
    nonce: String,
    state: State,
}

impl ScramKeysClient {
    /// Starts an exchange with a random client nonce.
    pub fn new(keys: ScramKeys) -> Self {
        Self::with_nonce(keys, super::scram::random_nonce())
    }

    /// Starts an exchange with a given client nonce (printable, no comma).
    pub fn with_nonce(keys: ScramKeys, nonce: String) -> Self {
        ScramKeysClient {
            keys,
            nonce,
            state: State::Initial,
        }
    }

    /// client-first-message, the data of the `SASLInitialResponse`. The user name is empty:
    /// PostgreSQL takes the startup packet's.
    pub fn client_first(&mut self) -> Vec<u8> {
        let first_bare = format!("n=,r={}", self.nonce);
        let message = format!("n,,{first_bare}").into_bytes();
        self.state = State::SentFirst { first_bare };
        message
    }

    /// Takes server-first-message (`AuthenticationSASLContinue`) and returns
    /// client-final-message, the data of the `SASLResponse`.
    pub fn server_first(&mut self, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        let State::SentFirst { first_bare } = std::mem::replace(&mut self.state, State::Finished)
        else {
            return Err(AuthError::InvalidState);
        };
        let server_first = std::str::from_utf8(data)
            .map_err(|_| AuthError::Malformed("server-first-message is not UTF-8"))?;
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for attribute in server_first.split(',') {
            match attribute.split_once('=') {
                Some(("r", v)) => nonce = Some(v),
                Some(("s", v)) => salt = Some(v),
                Some(("i", v)) => iterations = Some(v),
                Some(("m", _)) => return Err(AuthError::UnsupportedExtension),
                _ => {}
            }
        }
        let (Some(nonce), Some(salt), Some(iterations)) = (nonce, salt, iterations) else {
            return Err(AuthError::Malformed(
                "server-first-message lacks the nonce, salt or iteration count",
            ));
        };
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(AuthError::NonceMismatch);
        }
        let salt = STANDARD
            .decode(salt)
            .map_err(|_| AuthError::Malformed("server salt is not valid base64"))?;
        let iterations: u32 = iterations
            .parse()
            .map_err(|_| AuthError::Malformed("server iteration count is not a number"))?;
        if salt != self.keys.salt || iterations != self.keys.iterations {
            // Another verifier: the role's password changed since the keys were learned.
            return Err(AuthError::WrongPassword);
        }
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message: [&[u8]; 5] = [
            first_bare.as_bytes(),
            b",",
            data,
            b",",
            without_proof.as_bytes(),
        ];
        let stored_key: [u8; 32] = Sha256::digest(self.keys.client_key).into();
        let mut proof = hmac_sha256(&stored_key, &auth_message);
        for (p, k) in proof.iter_mut().zip(self.keys.client_key.iter()) {
            *p ^= k;
        }
        self.state = State::SentFinal {
            server_signature: hmac_sha256(&self.keys.server_key, &auth_message),
        };
        Ok(format!("{without_proof},p={}", STANDARD.encode(proof)).into_bytes())
    }

    /// Checks server-final-message (`AuthenticationSASLFinal`): the server must prove it knows
    /// the ServerKey.
    pub fn server_final(&mut self, data: &[u8]) -> Result<(), AuthError> {
        let State::SentFinal { server_signature } =
            std::mem::replace(&mut self.state, State::Finished)
        else {
            return Err(AuthError::InvalidState);
        };
        let text = std::str::from_utf8(data)
            .map_err(|_| AuthError::Malformed("server-final-message is not UTF-8"))?;
        if text.starts_with("e=") {
            return Err(AuthError::WrongPassword);
        }
        let v = text
            .split(',')
            .find_map(|a| a.strip_prefix("v="))
            .ok_or(AuthError::Malformed(
                "server-final-message lacks a verifier",
            ))?;
        let v = STANDARD
            .decode(v)
            .map_err(|_| AuthError::Malformed("server signature is not valid base64"))?;
        if !constant_time_eq(&v, &server_signature) {
            return Err(AuthError::WrongPassword);
        }
        Ok(())
    }
}
