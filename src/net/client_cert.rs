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
        // (An empty name is none: PostgreSQL refuses "no user name" for it.)
        let cn = c
            .subject()
            .iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .filter(|s| !s.is_empty())
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
        "1.2.840.113549.1.9.2" => "unstructuredName",
        "0.9.2342.19200300.100.1.3" => "mail",
        "2.5.4.16" => "postalAddress",
        "2.5.4.20" => "telephoneNumber",
        "2.5.4.41" => "name",
        "2.5.4.45" => "x500UniqueIdentifier",
        "2.5.4.72" => "role",
        "2.5.4.97" => "organizationIdentifier",
        "1.3.6.1.4.1.311.60.2.1.1" => "jurisdictionL",
        "1.3.6.1.4.1.311.60.2.1.2" => "jurisdictionST",
        "1.3.6.1.4.1.311.60.2.1.3" => "jurisdictionC",
        _ => return None,
    })
}

/// The subject as PostgreSQL prints it (`X509_NAME_print_ex` with `XN_FLAG_RFC2253`): the
/// entries in reverse order (the values of a multi-valued RDN too), RDNs separated by `,`,
/// the values of one by `+`. `None` when it is empty, or a value cannot be printed (such a
/// certificate's DN then matches nothing).
fn rfc2253(name: &X509Name) -> Option<String> {
    let entries: Vec<(usize, &AttributeTypeAndValue)> = name
        .iter()
        .enumerate()
        .flat_map(|(i, rdn)| rdn.iter().map(move |a| (i, a)))
        .collect();
    let mut out = String::new();
    let mut previous = None;
    for (rdn, attr) in entries.into_iter().rev() {
        if let Some(p) = previous {
            out.push(if p == rdn { '+' } else { ',' });
        }
        previous = Some(rdn);
        attribute(&mut out, attr)?;
    }
    Some(out).filter(|s| !s.is_empty())
}

/// `TYPE=value`, escaped as RFC 2253 asks; a type OpenSSL has no name for, or a value that is
/// not a string, as OpenSSL dumps it: `1.2.3=#<DER in hex>`.
fn attribute(out: &mut String, attr: &AttributeTypeAndValue) -> Option<()> {
    let value = attr.attr_value();
    let oid = attr.attr_type().to_id_string();
    let data = value.data;
    let text: Option<String> = match value.tag() {
        Tag::Utf8String => Some(std::str::from_utf8(data).ok()?.to_owned()),
        // One byte per character, read as Latin-1, as OpenSSL reads them.
        Tag::PrintableString
        | Tag::Ia5String
        | Tag::NumericString
        | Tag::VisibleString
        | Tag::T61String => Some(data.iter().map(|&b| char::from(b)).collect()),
        Tag::BmpString => {
            let units: Vec<u16> = data
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            Some(String::from_utf16(&units).ok()?)
        }
        Tag::UniversalString => Some(
            data.chunks_exact(4)
                .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect::<Option<String>>()?,
        ),
        _ => None,
    };
    match short_name(&oid) {
        Some(sn) => out.push_str(sn),
        None => out.push_str(&oid),
    }
    out.push('=');
    match text.filter(|_| short_name(&oid).is_some()) {
        Some(text) => escape(out, &text),
        None => {
            // The whole DER of the value: tag, length, contents.
            let _ = write!(out, "#{:02X}", value.tag().0);
            match data.len() {
                len @ 0..=127 => {
                    let _ = write!(out, "{len:02X}");
                }
                len @ 128..=255 => {
                    let _ = write!(out, "81{len:02X}");
                }
                len => {
                    let _ = write!(out, "82{:04X}", u16::try_from(len).ok()?);
                }
            }
            for b in data {
                let _ = write!(out, "{b:02X}");
            }
        }
    }
    Some(())
}

/// RFC 2253 escaping as OpenSSL does it for PostgreSQL: `,+"\\<>;` behind a backslash, a
/// leading `#` or space and a trailing space too (a value of one character only the
/// latter), control characters and every byte of a non-ASCII character as `\\XX`.
fn escape(out: &mut String, text: &str) {
    let count = text.chars().count();
    for (i, c) in text.chars().enumerate() {
        let first = i == 0 && count > 1;
        let last = i + 1 == count;
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' => {
                out.push('\\');
                out.push(c);
            }
            '#' if first => out.push_str("\\#"),
            ' ' if first || last => out.push_str("\\ "),
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\{:02X}", c as u32);
            }
            c if c.is_ascii() => out.push(c),
            c => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "\\{b:02X}");
                }
            }
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
            Some("CN=zo\\C3\\AB,1.2.3.4=#0C03616263,DC=example")
        );
        // (Expected strings from `openssl x509 -noout -subject -nameopt RFC2253`.)
        let c = ClientCert::from_der(&cert_with(&[
            (OrganizationName, "Ex"),
            (CommonName, "zoë"),
            (OrganizationalUnitName, "#"),
            (CustomDnType(vec![2, 5, 4, 97]), "VATDE-1"),
        ]));
        assert_eq!(
            c.dn.as_deref(),
            Some("organizationIdentifier=VATDE-1,OU=#,CN=zo\\C3\\AB,O=Ex")
        );
        // A multi-valued RDN (rcgen makes none: the DER by hand), O=Ex then CN=a+UID=b: its
        // values reversed too.
        let oid_cn = [0x06, 0x03, 0x55, 0x04, 0x03];
        let oid_o = [0x06, 0x03, 0x55, 0x04, 0x0A];
        let oid_uid = [
            0x06, 0x0A, 0x09, 0x92, 0x26, 0x89, 0x93, 0xF2, 0x2C, 0x64, 0x01, 0x01,
        ];
        let atv = |oid: &[u8], v: &[u8]| {
            let mut x = vec![0x30, (oid.len() + 2 + v.len()) as u8];
            x.extend_from_slice(oid);
            x.extend_from_slice(&[0x0C, v.len() as u8]);
            x.extend_from_slice(v);
            x
        };
        let set = |items: &[Vec<u8>]| {
            let body: Vec<u8> = items.concat();
            let mut x = vec![0x31, body.len() as u8];
            x.extend(body);
            x
        };
        let rdns = [
            set(&[atv(&oid_o, b"Ex")]),
            set(&[atv(&oid_cn, b"a"), atv(&oid_uid, b"b")]),
        ]
        .concat();
        let mut der = vec![0x30, rdns.len() as u8];
        der.extend(rdns);
        let (_, name) = X509Name::from_der(&der).unwrap();
        assert_eq!(rfc2253(&name).as_deref(), Some("UID=b+CN=a,O=Ex"));
        // No subject: no name at all.
        let c = ClientCert::from_der(&cert_with(&[]));
        assert_eq!((c.cn, c.dn), (None, None));
    }
}
