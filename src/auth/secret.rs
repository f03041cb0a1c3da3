//! Password secrets in the forms PostgreSQL stores them in `pg_authid.rolpassword`.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Iteration count used by [`ScramSecret::generate`] (PostgreSQL's default,
/// `scram_iterations = 4096`).
pub const DEFAULT_ITERATIONS: u32 = 4096;
/// Salt length used by [`ScramSecret::generate`] (PostgreSQL's `SCRAM_DEFAULT_SALT_LEN`).
pub const DEFAULT_SALT_LEN: usize = 16;

const SCRAM_PREFIX: &str = "SCRAM-SHA-256$";

/// A user's password as configured: clear text, or one of the hashed forms of `pg_authid`.
///
/// `Debug` redacts the secret material.
/// The most SCRAM iterations switchyard derives a key with: for a server that asks for them
/// (PostgreSQL's default is 4,096), or a password sent in clear text checked against a stored
/// verifier.
pub const MAX_ITERATIONS: u32 = 1_000_000;

#[derive(Clone, PartialEq, Eq)]
pub enum StoredPassword {
    /// A clear-text password.
    Plain(String),
    /// `md5` + md5hex(password + user): holds the 32 lowercase hex digits, without the `md5`
    /// prefix.
    Md5(String),
    /// A SCRAM-SHA-256 verifier.
    Scram(ScramSecret),
}

impl StoredPassword {
    /// Recognises the form the way PostgreSQL's `get_password_type` does: `md5` followed by
    /// exactly 32 hex digits is an md5 hash (upper-case digits are accepted and normalised to
    /// lower case, which is what the md5 exchange hashes); a string starting with
    /// `SCRAM-SHA-256$` that parses as a verifier is SCRAM; anything else (including a
    /// malformed verifier) is a clear-text password.
    pub fn parse(s: &str) -> StoredPassword {
        if let Some(hex) = s.strip_prefix("md5") {
            if hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return StoredPassword::Md5(hex.to_ascii_lowercase());
            }
        }
        if s.starts_with(SCRAM_PREFIX) {
            if let Some(secret) = ScramSecret::parse(s) {
                return StoredPassword::Scram(secret);
            }
        }
        StoredPassword::Plain(s.to_owned())
    }

    /// The SCRAM verifier to check a SCRAM-SHA-256 login against: derived with a fresh random
    /// salt for a clear-text password (costly: [`DEFAULT_ITERATIONS`] HMACs, so compute it once
    /// per user and keep it, not once per login), cloned for a SCRAM verifier, and `None` for an
    /// md5 hash (SCRAM cannot be verified from it; offer md5 authentication instead) and for
    /// an empty password, which is no password: PostgreSQL stores none for `''`, and nothing
    /// may prove it.
    pub fn scram_secret(&self) -> Option<ScramSecret> {
        match self {
            StoredPassword::Plain(password) if password.is_empty() => None,
            StoredPassword::Plain(password) => Some(ScramSecret::generate(password)),
            StoredPassword::Md5(_) => None,
            StoredPassword::Scram(secret) => Some(secret.clone()),
        }
    }

    /// Whether `given`, a password sent in clear text (`password` authentication), is this
    /// one: compared as it is, hashed with the user name for an md5 hash, derived with the
    /// verifier's salt and iteration count for SCRAM (as PostgreSQL's `plain_crypt_verify`).
    /// Constant-time in what it compares.
    pub fn matches_cleartext(&self, user: &str, given: &str) -> bool {
        match self {
            // No password (a `[[users]]` entry without one): nothing matches it.
            StoredPassword::Plain(p) if p.is_empty() => false,
            // (After SASLprep, as PostgreSQL compares them: it keeps a SCRAM verifier of the
            // password, which maps `given` the same way.)
            StoredPassword::Plain(p) => {
                let (p, given) = (prepared(p), prepared(given));
                super::constant_time_eq(p.as_bytes(), given.as_bytes())
            }
            StoredPassword::Md5(hex) => {
                use ::md5::{Digest, Md5};
                let mut md5 = Md5::new();
                md5.update(given.as_bytes());
                md5.update(user.as_bytes());
                let got = super::md5::hex(&md5.finalize());
                super::constant_time_eq(got.as_bytes(), hex.as_bytes())
            }
            StoredPassword::Scram(secret) => {
                let derived = ScramSecret::from_password(given, &secret.salt, secret.iterations);
                super::constant_time_eq(&derived.stored_key, &secret.stored_key)
                    && super::constant_time_eq(&derived.server_key, &secret.server_key)
            }
        }
    }
}

impl fmt::Debug for StoredPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoredPassword::Plain(_) => f.write_str("Plain(<redacted>)"),
            StoredPassword::Md5(_) => f.write_str("Md5(<redacted>)"),
            StoredPassword::Scram(secret) => f.debug_tuple("Scram").field(secret).finish(),
        }
    }
}

/// What the proxy logs in to the servers with, as a user. `Debug` redacts the secret.
#[derive(Clone, PartialEq, Eq)]
pub enum ServerCredential {
    /// No password: only servers that trust the user let it in.
    None,
    /// A clear-text password: answers clear-text, md5 and SCRAM requests.
    Password(String),
    /// The 32 hex digits of an md5 hash (md5hex(password + user)): answers md5 requests.
    Md5(String),
    /// SCRAM keys recovered from a client's proof: answer SCRAM-SHA-256 requests.
    Scram(super::ScramKeys),
}

impl ServerCredential {
    /// The credential a clear-text password (when there is one) gives.
    pub fn from_password(password: Option<&str>) -> ServerCredential {
        password.map_or(ServerCredential::None, |p| {
            ServerCredential::Password(p.to_owned())
        })
    }
}

impl fmt::Debug for ServerCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServerCredential::None => "None",
            ServerCredential::Password(_) => "Password(<redacted>)",
            ServerCredential::Md5(_) => "Md5(<redacted>)",
            ServerCredential::Scram(_) => "Scram(<redacted>)",
        })
    }
}

/// A SCRAM-SHA-256 verifier, as stored by PostgreSQL:
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64 fields).
///
/// `Debug` redacts the keys; `Display` prints the PostgreSQL form.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramSecret {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl ScramSecret {
    /// Parses the PostgreSQL verifier form. `None` unless the iteration count is a positive
    /// decimal number, the salt is valid base64 (possibly empty, as PostgreSQL allows) and both keys are valid base64 of
    /// exactly 32 bytes.
    pub fn parse(s: &str) -> Option<ScramSecret> {
        let rest = s.strip_prefix(SCRAM_PREFIX)?;
        let (iter_salt, keys) = rest.split_once('$')?;
        let (iterations, salt) = iter_salt.split_once(':')?;
        let (stored_key, server_key) = keys.split_once(':')?;

        if iterations.is_empty() || !iterations.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let iterations: u32 = iterations.parse().ok()?;
        if iterations == 0 {
            return None;
        }
        let salt = STANDARD.decode(salt).ok()?;
        Some(ScramSecret {
            iterations,
            salt,
            stored_key: decode_key(stored_key)?,
            server_key: decode_key(server_key)?,
        })
    }

    /// Derives the verifier for `password`:
    /// SaltedPassword = Hi(SASLprep(password), salt, iterations),
    /// StoredKey = H(HMAC(SaltedPassword, "Client Key")),
    /// ServerKey = HMAC(SaltedPassword, "Server Key").
    ///
    /// SASLprep as PostgreSQL and libpq run it: the raw bytes when it fails (control
    /// characters, unassigned code points).
    ///
    /// An iteration count of 0 is treated as 1.
    pub fn from_password(password: &str, salt: &[u8], iterations: u32) -> ScramSecret {
        let iterations = iterations.max(1);
        let salted = salted_password(password, salt, iterations);
        ScramSecret {
            iterations,
            salt: salt.to_vec(),
            stored_key: Sha256::digest(client_key(&salted)).into(),
            server_key: server_key(&salted),
        }
    }

    /// Derives a verifier with a random 16-byte salt and 4096 iterations (PostgreSQL's
    /// defaults). Costly by design; call it once per user at configuration load.
    pub fn generate(password: &str) -> ScramSecret {
        let mut salt = [0u8; DEFAULT_SALT_LEN];
        rand::thread_rng().fill_bytes(&mut salt);
        ScramSecret::from_password(password, &salt, DEFAULT_ITERATIONS)
    }
}

impl fmt::Display for ScramSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}:{}${}:{}",
            SCRAM_PREFIX,
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(self.stored_key),
            STANDARD.encode(self.server_key),
        )
    }
}

impl fmt::Debug for ScramSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramSecret")
            .field("iterations", &self.iterations)
            .field("salt", &STANDARD.encode(&self.salt))
            .field("stored_key", &"<redacted>")
            .field("server_key", &"<redacted>")
            .finish()
    }
}

fn decode_key(s: &str) -> Option<[u8; 32]> {
    STANDARD.decode(s).ok()?.try_into().ok()
}

/// The password bytes SCRAM hashes; see the SASLprep limitation on
/// [`ScramSecret::from_password`].
/// SaltedPassword = Hi(SASLprep(password), salt, iterations), SASLprep falling back to the raw
/// bytes where it fails, as PostgreSQL does. Costly by design (`iterations` HMACs).
pub(crate) fn salted_password(password: &str, salt: &[u8], iterations: u32) -> [u8; 32] {
    hi(prepared(password).as_bytes(), salt, iterations.max(1))
}

/// SASLprep of a password, or the password as it is where SASLprep fails, as PostgreSQL
/// prepares one.
fn prepared(password: &str) -> std::borrow::Cow<'_, str> {
    stringprep::saslprep(password).unwrap_or(std::borrow::Cow::Borrowed(password))
}

/// ClientKey = HMAC(SaltedPassword, "Client Key").
pub(crate) fn client_key(salted_password: &[u8; 32]) -> [u8; 32] {
    hmac_sha256(salted_password, &[b"Client Key"])
}

/// ServerKey = HMAC(SaltedPassword, "Server Key").
pub(crate) fn server_key(salted_password: &[u8; 32]) -> [u8; 32] {
    hmac_sha256(salted_password, &[b"Server Key"])
}

/// HMAC-SHA-256 of the concatenation of `parts` under `key`.
pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = new_hmac(key);
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn new_hmac(key: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length (long keys are hashed); this cannot fail.
    <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts any key length")
}

/// RFC 5802 `Hi()`: PBKDF2-HMAC-SHA-256 with a 32-byte output.
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let keyed = new_hmac(password);
    let mut mac = keyed.clone();
    mac.update(salt);
    mac.update(&1u32.to_be_bytes());
    let mut u: [u8; 32] = mac.finalize().into_bytes().into();
    let mut result = u;
    for _ in 1..iterations {
        let mut mac = keyed.clone();
        mac.update(&u);
        u = mac.finalize().into_bytes().into();
        for (r, x) in result.iter_mut().zip(u.iter()) {
            *r ^= x;
        }
    }
    result
}
