//! TLS materials, loaded once per configuration load (a reload picks up renewed certificate
//! files): the acceptor clients negotiate with (`[tls]`), and the connector towards servers
//! with the certificate checks of `[server_tls]`'s mode, as libpq's `sslmode` means them.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{ClientCert, Stream};
use crate::config::{ChannelBinding, ClientCertMode, ClientTlsMode, ServerTlsMode, TlsConfig};

/// The ALPN protocol PostgreSQL 17 names its protocol with (older peers ignore it).
const ALPN: &[u8] = b"postgresql";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Which of `[tls]`'s (or `[server_tls]`'s) files an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFile {
    Cert,
    Key,
    Ca,
    Crl,
}

/// What clients may or must negotiate.
pub struct ClientTls {
    /// Whether plain connections are still accepted.
    pub mode: ClientTlsMode,
    /// Which clients must present a certificate (`Optional` also without `ca`).
    pub client_cert: ClientCertMode,
    acceptor: tokio_rustls::TlsAcceptor,
    /// The certificate's `tls-server-end-point` channel binding data (see end_point.rs);
    /// `None`: SCRAM-SHA-256-PLUS is not offered.
    pub end_point: Option<Arc<[u8]>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("mode", &self.mode)
            .field("client_cert", &self.client_cert)
            .finish()
    }
}

/// What a client's TLS handshake established (the default: no TLS).
#[derive(Debug, Clone, Default)]
pub struct TlsPeer {
    /// The channel binding data of switchyard's certificate (`None`: no binding offered).
    pub end_point: Option<Arc<[u8]>>,
    /// The certificate the client presented, verified against `[tls] ca`.
    pub cert: Option<ClientCert>,
    /// The client named PostgreSQL's protocol in ALPN (a direct TLS connection must).
    pub alpn: bool,
}

impl ClientTls {
    /// Loads the certificate chain and key, and the client authorities and revocation lists
    /// when given (PEM files). The error says which file and why.
    pub fn load(t: &TlsConfig) -> Result<ClientTls, (TlsFile, String)> {
        let (cert, key) = (t.cert.get_ref(), t.key.get_ref());
        let chain = read_chain(cert).map_err(|m| (TlsFile::Cert, m))?;
        let end_point = super::end_point::tls_server_end_point(&chain[0]).map(Arc::from);
        let key_der = read_key(key).map_err(|m| (TlsFile::Key, m))?;
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| (TlsFile::Cert, e.to_string()))?;
        let builder = match &t.ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let roots = read_roots(ca.get_ref()).map_err(|m| (TlsFile::Ca, m))?;
                let mut verifier =
                    rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider())
                        // A client without a certificate gets through the handshake and is
                        // refused at login, with a FATAL that says why, where one is needed.
                        .allow_unauthenticated();
                if let Some(crl) = &t.crl {
                    let path = crl.get_ref();
                    let crls = CertificateRevocationListDer::pem_file_iter(path)
                        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                        .map_err(|e| {
                            (
                                TlsFile::Crl,
                                format!("cannot read revocation lists from {path:?}: {e}"),
                            )
                        })?;
                    if crls.is_empty() {
                        return Err((TlsFile::Crl, format!("{path:?} holds no PEM X509 CRL")));
                    }
                    // A list past its next update is not to be trusted: as PostgreSQL (OpenSSL)
                    // does, every certificate is refused until a fresh list is in place.
                    verifier = verifier.with_crls(crls).enforce_revocation_expiration();
                }
                let verifier = verifier.build().map_err(|e| match e {
                    rustls::server::VerifierBuilderError::InvalidCrl(e) => {
                        (TlsFile::Crl, format!("an unusable revocation list: {e:?}"))
                    }
                    e => (TlsFile::Ca, format!("{:?}: {e}", ca.get_ref())),
                })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let leaf = chain[0].clone();
        let mut config = builder
            .with_single_cert(chain, key_der)
            .map_err(|e| refused_pair(cert, key, &leaf, e))?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        // No session resumption, as in PostgreSQL: a resumed session carries the client
        // certificate of its first handshake without checking it again (its expiry, a CRL
        // read since), so every handshake is a full one.
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(ClientTls {
            mode: t.mode,
            client_cert: t.client_cert,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            end_point,
        })
    }

    /// Runs the server side of the handshake on a client that sent SSLRequest and got `S`, or
    /// that began with its ClientHello (direct TLS).
    pub async fn accept(&self, tcp: TcpStream) -> std::io::Result<(Stream, TlsPeer)> {
        let s = self.acceptor.accept(tcp).await?;
        let peer = TlsPeer {
            end_point: self.end_point.clone(),
            cert: s
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| ClientCert::from_der(c)),
            alpn: s.get_ref().1.alpn_protocol() == Some(ALPN),
        };
        Ok((
            Stream::Tls(Box::new(tokio_rustls::TlsStream::Server(s))),
            peer,
        ))
    }
}

/// A PEM certificate chain (at least one certificate).
fn read_chain(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("cannot read certificates from {path:?}: {e}"))?;
    if chain.is_empty() {
        return Err(format!("{path:?} holds no PEM certificate"));
    }
    Ok(chain)
}

fn read_key(path: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("cannot read a private key from {path:?}: {e}"))
}

/// Certificate authorities from a PEM file (at least one).
fn read_roots(path: &str) -> Result<Arc<rustls::RootCertStore>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in read_chain(path)? {
        roots
            .add(c)
            .map_err(|e| format!("{path:?} holds an unusable certificate: {e}"))?;
    }
    Ok(Arc::new(roots))
}

/// How the proxy opens server connections.
pub struct ServerTls {
    /// libpq's `sslmode` meaning.
    pub mode: ServerTlsMode,
    /// `None` when the mode is `disable`.
    config: Option<Arc<rustls::ClientConfig>>,
    /// Whether SCRAM logins over TLS bind to the server's certificate (`Disable` when the
    /// mode is `disable`).
    pub channel_binding: ChannelBinding,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("mode", &self.mode)
            .finish()
    }
}

impl Default for ServerTls {
    fn default() -> ServerTls {
        ServerTls::load(ServerTlsMode::default(), None, None).expect("no files to read")
    }
}

/// Why a server connection could not be encrypted.
#[derive(Debug, thiserror::Error)]
pub enum TlsConnectError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the server does not support TLS, and [server_tls] mode {0:?} requires it")]
    Unsupported(ServerTlsMode),
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
    /// `channel_binding = "require"`, and the server's login was not bound.
    #[error("channel binding required, but {0}")]
    Unbound(&'static str),
    /// The server offered a bound login that cannot be made (see `Binding::choose`).
    #[error("{0}")]
    Unbindable(&'static str),
}

impl ServerTls {
    /// Builds the connector for `mode`; `ca` (PEM file) holds the roots that the
    /// `verify-ca` and `verify-full` modes check the server's certificate against, and
    /// `identity` the (certificate chain, key) files presented to servers that ask.
    pub fn load(
        mode: ServerTlsMode,
        ca: Option<&str>,
        identity: Option<(&str, &str)>,
    ) -> Result<ServerTls, (TlsFile, String)> {
        let verifier: Arc<dyn ServerCertVerifier> = match mode {
            ServerTlsMode::Disable => {
                return Ok(ServerTls {
                    mode,
                    config: None,
                    channel_binding: ChannelBinding::Disable,
                })
            }
            ServerTlsMode::Prefer | ServerTlsMode::Require => Arc::new(Unverified(provider())),
            ServerTlsMode::VerifyCa | ServerTlsMode::VerifyFull => {
                let ca = ca.ok_or_else(|| {
                    (
                        TlsFile::Ca,
                        "needs `ca`, the certificate authorities to check against".to_owned(),
                    )
                })?;
                let roots = read_roots(ca).map_err(|m| (TlsFile::Ca, m))?;
                let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider())
                    .build()
                    .map_err(|e| (TlsFile::Ca, e.to_string()))?;
                if mode == ServerTlsMode::VerifyCa {
                    Arc::new(AnyName(webpki))
                } else {
                    webpki
                }
            }
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| (TlsFile::Ca, e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = read_chain(cert).map_err(|m| (TlsFile::Cert, m))?;
                let key_der = read_key(key).map_err(|m| (TlsFile::Key, m))?;
                let leaf = chain[0].clone();
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| refused_pair(cert, key, &leaf, e))?
            }
        };
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(ServerTls {
            mode,
            config: Some(Arc::new(config)),
            channel_binding: ChannelBinding::Prefer,
        })
    }

    /// Asks the server for TLS on a fresh connection (SSLRequest) and runs the handshake, or
    /// goes on unencrypted where the mode allows it. `host` is the address's host part (the
    /// name `verify-full` checks).
    pub async fn connect(&self, mut tcp: TcpStream, host: &str) -> Result<Stream, TlsConnectError> {
        let Some(config) = &self.config else {
            return Ok(Stream::Plain(tcp));
        };
        tcp.write_all(&crate::protocol::startup::SSL_REQUEST)
            .await?;
        // Exactly one byte: anything the server sent after it would not be authenticated
        // by the handshake (CVE-2021-23222).
        match tcp.read_u8().await? {
            b'S' => {}
            b'N' if self.mode == ServerTlsMode::Prefer => return Ok(Stream::Plain(tcp)),
            b'N' => return Err(TlsConnectError::Unsupported(self.mode)),
            other => {
                return Err(TlsConnectError::Io(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("unexpected answer {:?} to SSLRequest", other as char),
                )))
            }
        }
        let name = server_name(host)?;
        let s = tokio_rustls::TlsConnector::from(config.clone())
            .connect(name, tcp)
            .await
            .map_err(TlsConnectError::Handshake)?;
        Ok(Stream::Tls(Box::new(tokio_rustls::TlsStream::Client(s))))
    }

    /// [`ServerTls::connect`], and for `prefer`, libpq's fallback: when the handshake itself
    /// fails (a server whose TLS rustls cannot speak), a new connection from `reopen` goes on
    /// unencrypted, with a warning. Returns the stream and whether it fell back.
    pub async fn connect_or_fall_back<F, Fut>(
        &self,
        tcp: TcpStream,
        host: &str,
        reopen: F,
    ) -> Result<(Stream, bool), TlsConnectError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = std::io::Result<TcpStream>>,
    {
        match self.connect(tcp, host).await {
            Ok(s) => Ok((s, false)),
            Err(TlsConnectError::Handshake(e)) if self.mode == ServerTlsMode::Prefer => {
                tracing::warn!(
                    host,
                    error = %e,
                    "TLS handshake failed: going on without TLS ([server_tls] mode prefer)"
                );
                Ok((Stream::Plain(reopen().await?), true))
            }
            Err(e) => Err(e),
        }
    }
}

/// The host part of a backend address as a TLS server name.
fn server_name(host: &str) -> std::io::Result<ServerName<'static>> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned()).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{host:?} is not a valid TLS server name: {e}"),
        )
    })
}

/// `prefer` and `require`: encryption without authentication of the server, as libpq does
/// without a root certificate. The handshake's signatures are still checked.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a configured authority; the name is not checked.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Why rustls refused a certificate and its key: an X.509 v1 certificate (which webpki, and
/// so rustls, never accepts: what `openssl x509 -req` makes without `-extfile`) is named as
/// such; anything else is taken for a key that does not fit.
fn refused_pair(
    cert: &str,
    key: &str,
    leaf: &rustls::pki_types::CertificateDer<'_>,
    e: rustls::Error,
) -> (TlsFile, String) {
    if is_x509_v1(leaf) {
        return (
            TlsFile::Cert,
            format!(
                "{cert:?} is an X.509 v1 certificate; switchyard needs v3 (issue it with \
                 extensions: openssl x509 -req ... -extfile with basicConstraints=CA:FALSE and \
                 subjectAltName=...): {e}"
            ),
        );
    }
    (
        TlsFile::Key,
        format!("{key:?} does not fit the certificate: {e}"),
    )
}

/// Whether `der` is an X.509 v1 certificate: its TBSCertificate does not begin with the
/// `[0] EXPLICIT` version field (v2 and v3 have it).
fn is_x509_v1(der: &[u8]) -> bool {
    /// The contents of the DER SEQUENCE at the start of `d`.
    fn sequence(d: &[u8]) -> Option<&[u8]> {
        let (&tag, rest) = d.split_first()?;
        let (&first, rest) = rest.split_first()?;
        if tag != 0x30 {
            return None;
        }
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let (bytes, rest) = rest.split_at(n);
            let len = bytes.iter().fold(0usize, |a, &b| (a << 8) | usize::from(b));
            (len, rest)
        };
        rest.get(..len)
    }
    sequence(der)
        .and_then(sequence)
        .and_then(|tbs| tbs.first())
        .is_some_and(|&tag| tag != 0xa0)
}
