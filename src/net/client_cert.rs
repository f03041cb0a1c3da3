//! The certificate a client presented in its TLS handshake when `[tls] ca` asks for one:
//! verified there against the configured authorities (and revocation lists), and read here
//! for the names it gives: its subject's first common name, which `auth = "cert"` and
//! `client_cert = "verify-full"` compare with the user name, as PostgreSQL's `cert` method
//! and `clientcert=verify-full` do, and its whole subject as PostgreSQL prints it for
//! `clientname=DN` (RFC 2253, as OpenSSL's `X509_NAME_print_ex` with `XN_FLAG_RFC2253`
//! without escaping non-ASCII characters).

use std::fmt::Write;

use x509_parser::der_parser::asn1_rs::Tag;
use x509_parser::prelude::{AttributeTypeAndValue, FromDer, X509Certificate, X509Name};

/// A verified client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// The subject's first common name, when it has one as a string.
    pub cn: Option<String>,
    /// The subject in RFC 2253 form (`CN=app,O=Example,C=US`), when every value in it can be
    /// printed.
    pub dn: Option<String>,
}

impl ClientCert {
    /// Reads an end-entity certificate (DER) that the handshake verified.
    pub fn from_der(der: &[u8]) -> ClientCert {
        let Ok((_, c)) = X509Certificate::from_der(der) else {
            return ClientCert { cn: None, dn: None };
        };
        let cn = c
            .subject()
            .iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .map(str::to_owned);
        ClientCert {
            cn,
            dn: rfc2253(c.subject()),
        }
    }
}

/// OpenSSL's short names of the attribute types it knows in subjects (the others it prints
/// as dotted numbers, with the value's DER in hex).
fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.4" => "SN",
        "2.5.4.5" => "serialNumber",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "street",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.12" => "title",
        "2.5.4.13" => "description",
        "2.5.4.15" => "businessCategory",
        "2.5.4.17" => "postalCode",
        "2.5.4.42" => "GN",
        "2.5.4.43" => "initials",
        "2.5.4.44" => "generationQualifier",
        "2.5.4.46" => "dnQualifier",
        "2.5.4.65" => "pseudonym",
        "0.9.2342.19200300.100.1.1" => "UID",
        "0.9.2342.19200300.100.1.25" => "DC",
        "1.2.840.113549.1.9.1" => "emailAddress",
        _ => return None,
    })
}

/// The subject as RFC 2253 prints it: the last RDN first, RDNs separated by `,`, the values
/// of one RDN by `+`. `None` when a value is of a type this does not print (such a
/// certificate's DN then matches nothing).
fn rfc2253(name: &X509Name) -> Option<String> {
    let mut out = String::new();
    for (i, rdn) in name
        .iter()
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .enumerate()
    {
        if i > 0 {
            out.push(',');
        }
        for (j, attr) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            attribute(&mut out, attr)?;
        }
    }
    Some(out)
}

/// `TYPE=value`, escaped as RFC 2253 asks; an unknown type as `1.2.3=#<DER in hex>`.
fn attribute(out: &mut String, attr: &AttributeTypeAndValue) -> Option<()> {
    let value = attr.attr_value();
    let oid = attr.attr_type().to_id_string();
    let text = match value.tag() {
        Tag::Utf8String
        | Tag::PrintableString
        | Tag::Ia5String
        | Tag::NumericString
        | Tag::VisibleString => std::str::from_utf8(value.data).ok()?.to_owned(),
        // Latin-1, as OpenSSL reads it.
        Tag::T61String => value.data.iter().map(|&b| char::from(b)).collect(),
        Tag::BmpString => {
            let units: Vec<u16> = value
                .data
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).ok()?
        }
        _ => return None,
    };
    match short_name(&oid) {
        Some(sn) => {
            out.push_str(sn);
            out.push('=');
            escape(out, &text);
        }
        None => {
            // The whole DER of the value: tag, length, contents.
            let _ = write!(out, "{oid}=#{:02X}", value.tag().0);
            let len = value.data.len();
            match len {
                0..=127 => {
                    let _ = write!(out, "{len:02X}");
                }
                128..=255 => {
                    let _ = write!(out, "81{len:02X}");
                }
                _ => {
                    let _ = write!(out, "82{:04X}", u16::try_from(len).ok()?);
                }
            }
            for b in value.data {
                let _ = write!(out, "{b:02X}");
            }
        }
    }
    Some(())
}

/// RFC 2253 escaping as OpenSSL does it: `,+"\<>;` behind a backslash, a leading `#` or
/// space and a trailing space too, control characters as `\XX`; other characters as they
/// are.
fn escape(out: &mut String, text: &str) {
    let last = text.chars().count().saturating_sub(1);
    for (i, c) in text.chars().enumerate() {
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\{:02X}", c as u32);
            }
            c => out.push(c),
        }
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

    #[test]
    fn the_subject_prints_as_rfc_2253_with_the_last_name_first() {
        use rcgen::DnType::*;
        let c = ClientCert::from_der(&cert_with(&[
            (CountryName, "US"),
            (OrganizationName, "Acme, Inc."),
            (OrganizationalUnitName, "#ops <eu>"),
            (CommonName, " app; \"x\"+y "),
        ]));
        assert_eq!(
            c.dn.as_deref(),
            Some("CN=\\ app\\; \\\"x\\\"\\+y\\ ,OU=\\#ops \\<eu\\>,O=Acme\\, Inc.,C=US")
        );
        let c = ClientCert::from_der(&cert_with(&[
            (
                CustomDnType(vec![0, 9, 2342, 19200300, 100, 1, 25]),
                "example",
            ),
            (CustomDnType(vec![1, 2, 3, 4]), "abc"),
            (CommonName, "zoë"),
        ]));
        assert_eq!(
            c.dn.as_deref(),
            Some("CN=zoë,1.2.3.4=#0C03616263,DC=example")
        );
    }
}
