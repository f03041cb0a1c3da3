//! Client side of SCRAM-SHA-256 run from a verifier's keys, or from a password whose keys are
//! derived once per salt and iteration count.
//!
//! A role looked up with `auth_query` has only its verifier on the proxy
//! (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`). When one of its clients proves
//! its password to the proxy, the proof gives away the ClientKey (proof XOR ClientSignature),
//! and ClientKey with ServerKey is all a SCRAM client needs: the proof it sends is
//! ClientKey XOR HMAC(H(ClientKey), AuthMessage), and it checks the server with
//! HMAC(ServerKey, AuthMessage). The password never has to be known. (PgBouncer logs in the
//! same way.)
//!
//! The keys are bound to the verifier's salt and iteration count: a server offering others has
//! a new password for the role, and the exchange stops there.
//!
//! With a password, the keys come from the salt and iteration count the server sends. A server
//! keeps them until the role's password changes, so [`DerivedKeys`] keeps the last ones: the
//! 4,096 HMACs of the derivation (milliseconds of the event loop's thread) are paid once per
//! pool, not at every server connection.

use std::fmt;
use std::sync::{Arc, Mutex};

// The most SCRAM iterations a server may ask for (keys are derived once per password and
// salt, on the event loop).
use super::secret::MAX_ITERATIONS;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha2::{Digest, Sha256};

use super::secret::{client_key, hmac_sha256, salted_password, server_key};
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

impl ScramKeys {
    /// The keys of `password` for a verifier with `salt` and `iterations`.
    pub fn from_password(password: &str, salt: &[u8], iterations: u32) -> ScramKeys {
        let salted = salted_password(password, salt, iterations);
        ScramKeys {
            iterations,
            salt: salt.to_vec(),
            client_key: client_key(&salted),
            server_key: server_key(&salted),
        }
    }
}

/// The keys a password last gave, shared by the exchanges of one pool.
#[derive(Clone, Default)]
pub struct DerivedKeys {
    last: Arc<Mutex<Option<ScramKeys>>>,
    derivations: Arc<std::sync::atomic::AtomicUsize>,
    /// Held while keys are derived ahead of an exchange: connections opened together wait
    /// for one derivation rather than each making its own.
    deriving: Arc<tokio::sync::Mutex<()>>,
}

impl fmt::Debug for DerivedKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DerivedKeys")
            .field("derivations", &self.derivations())
            .finish_non_exhaustive()
    }
}

impl DerivedKeys {
    /// The keys of `password` for `salt` and `iterations`, derived only when they differ from
    /// the last ones (the lock is not held while deriving).
    fn get(&self, password: &str, salt: &[u8], iterations: u32) -> ScramKeys {
        if let Some(k) = self.last.lock().expect("keys").as_ref() {
            if k.salt == salt && k.iterations == iterations {
                return k.clone();
            }
        }
        let keys = ScramKeys::from_password(password, salt, iterations);
        self.derivations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *self.last.lock().expect("keys") = Some(keys.clone());
        keys
    }

    /// Whether the keys for `salt` and `iterations` are the ones kept.
    fn has(&self, salt: &[u8], iterations: u32) -> bool {
        self.last
            .lock()
            .expect("keys")
            .as_ref()
            .is_some_and(|k| k.salt == salt && k.iterations == iterations)
    }

    /// How many derivations were made (tests).
    pub fn derivations(&self) -> usize {
        self.derivations.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Where an exchange's keys come from.
enum Source {
    /// Known keys, bound to their salt and iteration count.
    Keys(ScramKeys),
    /// A password: keys for whatever salt and iteration count the server sends.
    Password(String, DerivedKeys),
}

enum State {
    /// client-first-message not produced yet.
    Initial,
    /// client-first-message sent; waiting for server-first-message.
    SentFirst { first_bare: String },
    /// client-final-message sent; the server's signature it must send.
    SentFinal { server_signature: [u8; 32] },
    /// Failed (or between two steps).
    Finished,
    /// The server proved it knows the ServerKey (and, bound, that it saw our certificate
    /// hash).
    Verified,
}

/// What the exchange says about channel binding (RFC 5802's gs2 header), as libpq decides it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Binding {
    /// `n`: no TLS, or no binding data for the server's certificate.
    #[default]
    None,
    /// `y`: over TLS, but the server did not offer SCRAM-SHA-256-PLUS. A server that did
    /// (the offer was tampered with) refuses the login.
    NotOffered,
    /// `p=tls-server-end-point`: SCRAM-SHA-256-PLUS, bound to this hash of the server's
    /// certificate. A man in the middle holding another certificate cannot pass the proof on.
    EndPoint(Vec<u8>),
}

impl Binding {
    /// How a client over a connection (`tls`, its server certificate giving `end_point`, or
    /// none for a signature algorithm without a hash: Ed25519, RSA-PSS) binds to a server
    /// offering `plus`, unless binding is `disabled`: the mechanism's name and the binding,
    /// or why the login must stop. As libpq decides: a PLUS offer over a connection that is
    /// not encrypted, or that cannot be bound, is what a man in the middle relaying the
    /// exchange to the real server would show, so it fails the login rather than fall back
    /// to an unbound one.
    pub fn choose(
        tls: bool,
        disabled: bool,
        end_point: Option<Vec<u8>>,
        plus: bool,
    ) -> Result<(&'static str, Binding), &'static str> {
        match (tls, plus, end_point) {
            (false, true, _) => Err(
                "the server offered SCRAM-SHA-256-PLUS authentication over a connection that is \
                 not encrypted",
            ),
            (false, false, _) => Ok(("SCRAM-SHA-256", Binding::None)),
            (true, _, _) if disabled => Ok(("SCRAM-SHA-256", Binding::None)),
            (true, false, _) => Ok(("SCRAM-SHA-256", Binding::NotOffered)),
            (true, true, Some(hash)) => Ok(("SCRAM-SHA-256-PLUS", Binding::EndPoint(hash))),
            (true, true, None) => Err(
                "the server offered SCRAM-SHA-256-PLUS, but its certificate's signature \
                 algorithm gives no channel-binding hash; with channel_binding = \"disable\" \
                 the login is not bound",
            ),
        }
    }

    fn gs2_header(&self) -> &'static str {
        match self {
            Binding::None => "n,,",
            Binding::NotOffered => "y,,",
            Binding::EndPoint(_) => "p=tls-server-end-point,,",
        }
    }
}

/// One SCRAM-SHA-256 exchange with a server, from [`ScramKeys`] or a password, with the
/// channel binding of [`with_binding`](Self::with_binding) (none by default).
pub struct ScramKeysClient {
    source: Source,
    nonce: String,
    state: State,
    binding: Binding,
}

impl ScramKeysClient {
    /// Starts an exchange with a random client nonce.
    pub fn new(keys: ScramKeys) -> Self {
        Self::with_nonce(keys, super::scram::random_nonce())
    }

    /// Starts an exchange with a given client nonce (printable, no comma).
    pub fn with_nonce(keys: ScramKeys, nonce: String) -> Self {
        ScramKeysClient {
            source: Source::Keys(keys),
            nonce,
            state: State::Initial,
            binding: Binding::None,
        }
    }

    /// Starts an exchange from a password, its keys taken from (or derived into) `derived`.
    pub fn from_password(password: &str, derived: DerivedKeys) -> Self {
        ScramKeysClient {
            source: Source::Password(password.to_owned(), derived),
            nonce: super::scram::random_nonce(),
            state: State::Initial,
            binding: Binding::None,
        }
    }

    /// Binds the exchange as `binding` says (see [`Binding::choose`]).
    pub fn with_binding(mut self, binding: Binding) -> Self {
        self.binding = binding;
        self
    }

    /// client-first-message, the data of the `SASLInitialResponse`. The user name is empty:
    /// PostgreSQL takes the startup packet's.
    pub fn client_first(&mut self) -> Vec<u8> {
        let first_bare = format!("n=,r={}", self.nonce);
        let message = format!("{}{first_bare}", self.binding.gs2_header()).into_bytes();
        self.state = State::SentFirst { first_bare };
        message
    }

    /// The derivation [`server_first`](Self::server_first) would make for `data` (keys of the
    /// password for a salt and iteration count not derived yet), to run off the event loop
    /// first: up to a million HMACs for a verifier a role's owner chose. `None` when there is
    /// nothing to derive (known keys, keys derived before, a message `server_first` refuses).
    pub fn derivation(&self, data: &[u8]) -> Option<impl FnOnce() + Send + 'static> {
        let Source::Password(password, derived) = &self.source else {
            return None;
        };
        let text = std::str::from_utf8(data).ok()?;
        let (mut salt, mut iterations) = (None, None);
        for attribute in text.split(',') {
            match attribute.split_once('=') {
                Some(("s", v)) => salt = STANDARD.decode(v).ok(),
                Some(("i", v)) => iterations = v.parse::<u32>().ok(),
                _ => {}
            }
        }
        let (salt, iterations) = (salt?, iterations?);
        if !(1..=MAX_ITERATIONS).contains(&iterations) || derived.has(&salt, iterations) {
            return None;
        }
        let (password, derived) = (password.clone(), derived.clone());
        Some(move || {
            derived.get(&password, &salt, iterations);
        })
    }

    /// Runs [`derivation`](Self::derivation) for `data` on a blocking thread, one at a time
    /// per pool (the others then find the keys derived).
    pub async fn derive_ahead(&self, data: &[u8]) {
        let Source::Password(_, derived) = &self.source else {
            return;
        };
        if self.derivation(data).is_none() {
            return;
        }
        let _one = derived.deriving.lock().await;
        if let Some(derive) = self.derivation(data) {
            let _ = tokio::task::spawn_blocking(derive).await;
        }
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
        if !(1..=MAX_ITERATIONS).contains(&iterations) {
            // Deriving the keys runs on the event loop every client shares: a server (or a man
            // in the middle before TLS is verified) asking for billions would stall them all.
            return Err(AuthError::Malformed(
                "server iteration count is 0 or above 1,000,000",
            ));
        }
        let keys = match &self.source {
            Source::Keys(k) if k.salt == salt && k.iterations == iterations => k.clone(),
            // Another verifier: the role's password changed since the keys were learned.
            Source::Keys(_) => return Err(AuthError::WrongPassword),
            Source::Password(password, derived) => derived.get(password, &salt, iterations),
        };
        // c=: the gs2 header again, and for PLUS the binding data.
        let mut cbind = self.binding.gs2_header().as_bytes().to_vec();
        if let Binding::EndPoint(hash) = &self.binding {
            cbind.extend_from_slice(hash);
        }
        let without_proof = format!("c={},r={nonce}", STANDARD.encode(cbind));
        let auth_message: [&[u8]; 5] = [
            first_bare.as_bytes(),
            b",",
            data,
            b",",
            without_proof.as_bytes(),
        ];
        let stored_key: [u8; 32] = Sha256::digest(keys.client_key).into();
        let mut proof = hmac_sha256(&stored_key, &auth_message);
        for (p, k) in proof.iter_mut().zip(keys.client_key.iter()) {
            *p ^= k;
        }
        self.state = State::SentFinal {
            server_signature: hmac_sha256(&keys.server_key, &auth_message),
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
        self.state = State::Verified;
        Ok(())
    }

    /// Whether the exchange is complete and bound to the server's certificate: the server
    /// signed the binding data of the certificate this client saw (`channel_binding =
    /// "require"` accepts nothing less).
    pub fn bound(&self) -> bool {
        matches!(self.state, State::Verified) && matches!(self.binding, Binding::EndPoint(_))
    }
}
