//! `[tls]` and `[server_tls]`: their keys checked together and their files read at load, so
//! that a missing or mismatched file stops a start or a reload with a message naming the key.

use std::sync::Arc;

use super::validate::Validator;
use super::*;
use crate::net::tls::{ClientTls, ServerTls, TlsFile};

impl Validator<'_> {
    /// Reads the TLS files now, so that a missing or mismatched file stops a start or a
    /// reload with a message naming the key.
    pub(super) fn validate_tls(
        &self,
        config: &Config,
    ) -> Result<(Option<Arc<ClientTls>>, Arc<ServerTls>), ConfigError> {
        let span = |k: &Option<toml::Spanned<String>>| k.as_ref().map_or(0..0, |k| k.span());
        let tls = match &config.tls {
            None => None,
            Some(t) => {
                if t.ca.is_none() {
                    if t.client_cert != ClientCertMode::Optional {
                        return Err(self.err(
                            self.key_at("tls", "client_cert"),
                            "tls.client_cert",
                            "needs `ca`, the authorities client certificates must chain to".into(),
                        ));
                    }
                    if let Some(crl) = &t.crl {
                        return Err(self.err(crl.span(), "tls.crl", "needs `ca`".into()));
                    }
                }
                Some(Arc::new(ClientTls::load(t).map_err(|(file, m)| {
                    let (span, key) = match file {
                        TlsFile::Cert => (t.cert.span(), "tls.cert"),
                        TlsFile::Key => (t.key.span(), "tls.key"),
                        TlsFile::Ca => (span(&t.ca), "tls.ca"),
                        TlsFile::Crl => (span(&t.crl), "tls.crl"),
                    };
                    self.err(span, key, m)
                })?))
            }
        };
        let st = &config.server_tls;
        if let Some(ca) = &st.ca {
            let unchecked = match st.mode {
                ServerTlsMode::Disable => Some("disable"),
                ServerTlsMode::Prefer => Some("prefer"),
                ServerTlsMode::Require => Some("require"),
                ServerTlsMode::VerifyCa | ServerTlsMode::VerifyFull => None,
            };
            if let Some(mode) = unchecked {
                // libpq's require checks the server against a root certificate it has: an
                // operator who gives one expects it to be used.
                return Err(self.err(
                    ca.span(),
                    "server_tls.ca",
                    format!(
                        "is not checked with mode = \"{mode}\": only \"verify-ca\" and \"verify-full\" check the servers' certificates against it"
                    ),
                ));
            }
        }
        let identity = match (&st.cert, &st.key) {
            (None, None) => None,
            (Some(c), Some(_)) if st.mode == ServerTlsMode::Disable => {
                return Err(self.err(
                    c.span(),
                    "server_tls.cert",
                    "has no use with mode = \"disable\"".into(),
                ));
            }
            (Some(c), Some(k)) => Some((c.get_ref().as_str(), k.get_ref().as_str())),
            (Some(c), None) => {
                return Err(self.err(c.span(), "server_tls.key", "`cert` needs `key`".into()))
            }
            (None, Some(k)) => {
                return Err(self.err(k.span(), "server_tls.cert", "`key` needs `cert`".into()))
            }
        };
        let mut server_tls = ServerTls::load(
            st.mode,
            st.ca.as_ref().map(|c| c.get_ref().as_str()),
            identity,
        )
        .map_err(|(file, m)| match file {
            TlsFile::Cert => self.err(span(&st.cert), "server_tls.cert", m),
            TlsFile::Key => self.err(span(&st.key), "server_tls.key", m),
            TlsFile::Ca if st.ca.is_some() => self.err(span(&st.ca), "server_tls.ca", m),
            _ => self.err(self.key_at("server_tls", "mode"), "server_tls.mode", m),
        })?;
        server_tls.channel_binding = match (st.mode, st.binding()) {
            (ServerTlsMode::Disable, ChannelBinding::Require) => {
                return Err(self.err(
                    st.channel_binding
                        .as_ref()
                        .map_or_else(|| self.key_at("server_tls", "mode"), |b| b.span()),
                    "server_tls.channel_binding",
                    "\"require\" needs TLS: [server_tls] mode is \"disable\"".into(),
                ))
            }
            (ServerTlsMode::Disable, _) => ChannelBinding::Disable,
            (_, binding) => binding,
        };
        Ok((tls, Arc::new(server_tls)))
    }
}
