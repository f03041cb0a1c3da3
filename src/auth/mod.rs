//! Client authentication: the pure (no I/O) half of the proxy authenticating its clients.
//!
//! * [`secret`]: the password forms PostgreSQL keeps in `pg_authid` ([`StoredPassword`]) and the
//!   SCRAM-SHA-256 verifier ([`ScramSecret`]).
//! * [`md5`]: checking an `AuthenticationMD5Password` challenge response.
//! * [`scram`]: the server side of a SCRAM-SHA-256 exchange ([`ScramServer`]), including the
//!   "mock" exchange run for unknown users so that user names cannot be enumerated.
//! * [`scram_client`]: the client side of SCRAM-SHA-256 from a verifier's keys, to log in to
//!   servers as a role looked up with `auth_query` ([`ScramKeysClient`]).
//! * [`ServerCredential`]: what the proxy logs in to servers with.
//!
//! Nothing in here panics on client input. Every failure is an [`AuthError`], answered with the
//! SQLSTATE PostgreSQL answers it with ([`AuthError::sqlstate`]): a failed password check
//! (28P01) only ever as `password authentication failed for user "X"`, the others with their
//! text.

mod conf_file;
pub mod hba;
pub mod ident;
pub mod md5;
pub mod scram;
pub mod scram_client;
pub mod secret;

#[cfg(test)]
mod tests;

pub use self::md5::{md5_challenge_response_ok, md5_response};
pub use self::scram::{parse_sasl_initial, ScramServer, SCRAM_SHA_256, SCRAM_SHA_256_PLUS};
pub use self::scram_client::{DerivedKeys, ScramKeys, ScramKeysClient};
pub use self::secret::{ScramSecret, ServerCredential, StoredPassword};

/// Why an authentication attempt failed. For the log only; see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The client's proof (or md5 response) did not match the stored secret, or the user does
    /// not exist (mock exchange).
    #[error("password does not match")]
    WrongPassword,
    /// The client picked a SASL mechanism the proxy did not offer (the name is truncated).
    #[error("client selected an invalid SASL authentication mechanism {0:?}")]
    UnsupportedMechanism(String),
    /// The client sent channel binding data (`p=` gs2 flag) with SCRAM-SHA-256, or over a
    /// connection without TLS.
    #[error("the client selected SCRAM-SHA-256 without channel binding, but the SCRAM message includes channel binding data")]
    ChannelBindingNotSupported,
    /// The client selected SCRAM-SHA-256-PLUS, but sent no channel binding data.
    #[error("the client selected SCRAM-SHA-256-PLUS, but the SCRAM message does not include channel binding data")]
    ChannelBindingRequired,
    /// gs2 flag `y` over TLS: the client would bind but was told the server cannot (PLUS was
    /// removed from the offer on the way).
    #[error("SCRAM channel binding negotiation error: the client supports SCRAM channel binding but thinks the server does not, and this server does support it")]
    ChannelBindingDowngrade,
    /// A channel binding type other than `tls-server-end-point`.
    #[error("unsupported SCRAM channel-binding type {0:?}")]
    UnsupportedChannelBinding(String),
    /// The `c=` attribute of a bound client's client-final-message does not match its gs2
    /// header and the channel binding data: the certificate it saw is not switchyard's. (An
    /// unbound client's wrong `c=` is [`AuthError::Malformed`], as in PostgreSQL.)
    #[error("SCRAM channel binding check failed")]
    ChannelBindingMismatch,
    /// The client sent an authorization identity (`a=`), which PostgreSQL does not support.
    #[error("client uses authorization identity, but it is not supported")]
    AuthzidNotSupported,
    /// The client sent a mandatory SCRAM extension (`m=`).
    #[error("client requires an unsupported SCRAM extension")]
    UnsupportedExtension,
    /// The nonce in client-final-message is not the one the server sent.
    #[error("SCRAM nonce mismatch")]
    NonceMismatch,
    /// A SASL/SCRAM message does not follow the grammar.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// A SCRAM step was called out of order (or after the exchange ended / failed).
    #[error("SCRAM exchange step called out of order")]
    InvalidState,
}

impl AuthError {
    /// The SQLSTATE the client is told, as PostgreSQL 15 answers the same exchange: 28P01 for
    /// a failed password check; 28000 when channel binding fails (the certificate a bound
    /// client saw is not switchyard's, or PLUS was cut from the offer on the way); 0A000 for
    /// what PostgreSQL does not support (an authorization identity, a mandatory extension);
    /// 08P01 (protocol violation) for the rest.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            AuthError::WrongPassword => "28P01",
            AuthError::ChannelBindingMismatch | AuthError::ChannelBindingDowngrade => "28000",
            AuthError::AuthzidNotSupported | AuthError::UnsupportedExtension => "0A000",
            AuthError::UnsupportedMechanism(_)
            | AuthError::ChannelBindingNotSupported
            | AuthError::ChannelBindingRequired
            | AuthError::UnsupportedChannelBinding(_)
            | AuthError::NonceMismatch
            | AuthError::Malformed(_)
            | AuthError::InvalidState => "08P01",
        }
    }

    /// Whether this is a protocol violation (SQLSTATE 08P01).
    pub fn is_protocol_violation(&self) -> bool {
        self.sqlstate() == "08P01"
    }
}

/// Compares two byte strings without an early exit on the first difference. The lengths are
/// not secret (a mismatch returns at once).
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}
