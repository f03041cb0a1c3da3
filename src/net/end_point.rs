//! `tls-server-end-point` channel binding data (RFC 5929 section 4.1), which SCRAM-SHA-256-PLUS
//! binds a client's proof to: the hash of the server's certificate, with the hash function of
//! the certificate's signature algorithm (SHA-256 in place of MD5 and SHA-1).

use sha2::{Digest, Sha224, Sha256, Sha384, Sha512};

/// Hashes the binding can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hash {
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

/// The binding data of a DER certificate, or `None` when its signature algorithm names no
/// hash (Ed25519, RSASSA-PSS, which keep the hash in parameters) or the DER is not a
/// certificate: then SCRAM-SHA-256-PLUS is not offered.
pub fn tls_server_end_point(cert: &[u8]) -> Option<Vec<u8>> {
    Some(match signature_hash(cert)? {
        Hash::Sha224 => Sha224::digest(cert).to_vec(),
        Hash::Sha256 => Sha256::digest(cert).to_vec(),
        Hash::Sha384 => Sha384::digest(cert).to_vec(),
        Hash::Sha512 => Sha512::digest(cert).to_vec(),
    })
}

/// The hash the binding uses for a certificate with this signature algorithm.
fn signature_hash(cert: &[u8]) -> Option<Hash> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) = X509Certificate::from_der(cert).ok()?;
    hash_for(cert.signature_algorithm.algorithm.as_bytes())
}

/// The hash for a signature algorithm's OID (its DER content bytes).
fn hash_for(oid: &[u8]) -> Option<Hash> {
    // 1.2.840.113549.1.1.x (PKCS #1) and 1.2.840.10045.4.x (ECDSA).
    const PKCS1: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04];
    if let Some(last) = oid.strip_prefix(PKCS1) {
        return match last {
            // md5WithRSA, sha1WithRSA: SHA-256 (RFC 5929).
            [0x04] | [0x05] | [0x0b] => Some(Hash::Sha256),
            [0x0c] => Some(Hash::Sha384),
            [0x0d] => Some(Hash::Sha512),
            [0x0e] => Some(Hash::Sha224),
            _ => None,
        };
    }
    match oid.strip_prefix(ECDSA)? {
        // ecdsa-with-SHA1: SHA-256 (RFC 5929).
        [0x01] | [0x03, 0x02] => Some(Hash::Sha256),
        [0x03, 0x01] => Some(Hash::Sha224),
        [0x03, 0x03] => Some(Hash::Sha384),
        [0x03, 0x04] => Some(Hash::Sha512),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(alg: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let params = rcgen::CertificateParams::new(vec!["db.example".to_owned()]).unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn the_hash_follows_the_signature_algorithm() {
        let p256 = cert(&rcgen::PKCS_ECDSA_P256_SHA256);
        assert_eq!(signature_hash(&p256), Some(Hash::Sha256));
        assert_eq!(
            tls_server_end_point(&p256),
            Some(Sha256::digest(&p256).to_vec())
        );
        let p384 = cert(&rcgen::PKCS_ECDSA_P384_SHA384);
        assert_eq!(signature_hash(&p384), Some(Hash::Sha384));
        assert_eq!(tls_server_end_point(&p384).map(|h| h.len()), Some(48));
        // Ed25519 names no hash: no binding.
        assert_eq!(signature_hash(&cert(&rcgen::PKCS_ED25519)), None);
    }

    #[test]
    fn rsa_oids_and_sha1_map_as_rfc_5929_says() {
        let pkcs1 = |x: u8| hash_for(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, x]);
        assert_eq!(pkcs1(0x05), Some(Hash::Sha256), "sha1WithRSAEncryption");
        assert_eq!(pkcs1(0x0b), Some(Hash::Sha256));
        assert_eq!(pkcs1(0x0c), Some(Hash::Sha384));
        assert_eq!(pkcs1(0x0d), Some(Hash::Sha512));
        assert_eq!(pkcs1(0x0a), None, "RSASSA-PSS");
        assert_eq!(
            hash_for(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01]),
            Some(Hash::Sha256),
            "ecdsa-with-SHA1"
        );
        assert_eq!(signature_hash(b"not a certificate"), None);
        assert_eq!(signature_hash(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(signature_hash(&[]), None);
    }
}
