//! The certificate a client presented in its TLS handshake when `[tls] ca` asks for one:
//! verified there against the configured authorities (and revocation lists), and read here
//! for the name it gives, its subject's first common name, which `auth = "cert"` and
//! `client_cert = "verify-full"` compare with the user name, as PostgreSQL's `cert` method
//! and `clientcert=verify-full` do.

use x509_parser::prelude::{FromDer, X509Certificate};

/// A verified client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// The subject's first common name, when it has one as a string.
    pub cn: Option<String>,
}

impl ClientCert {
    /// Reads an end-entity certificate (DER) that the handshake verified.
    pub fn from_der(der: &[u8]) -> ClientCert {
        let cn = X509Certificate::from_der(der).ok().and_then(|(_, c)| {
            c.subject()
                .iter_common_name()
                .next()
                .and_then(|a| a.as_str().ok())
                .map(str::to_owned)
        });
        ClientCert { cn }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_with(dn: &[(rcgen::DnType, &str)]) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (t, v) in dn {
            params.distinguished_name.push(t.clone(), *v);
        }
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn the_name_is_the_subjects_common_name() {
        use rcgen::DnType::*;
        let c = ClientCert::from_der(&cert_with(&[
            (OrganizationName, "Example"),
            (CommonName, "app"),
        ]));
        assert_eq!(c.cn.as_deref(), Some("app"));
        let c = ClientCert::from_der(&cert_with(&[(OrganizationName, "Example")]));
        assert_eq!(c.cn, None, "no common name");
        assert_eq!(ClientCert::from_der(b"not a certificate").cn, None);
    }
}
