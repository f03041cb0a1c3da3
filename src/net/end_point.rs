//! `tls-server-end-point` channel binding data (RFC 5929 section 4.1), which SCRAM-SHA-256-PLUS
//! binds a client's proof to: the hash of the server's certificate, with the hash function of
//! the certificate's signature algorithm (SHA-256 in place of MD5 and SHA-1).
//!
//! The signature algorithm is read from the certificate's DER: `Certificate ::= SEQUENCE {
//! tbsCertificate, signatureAlgorithm AlgorithmIdentifier, signatureValue }`, whose
//! `AlgorithmIdentifier` starts with the algorithm's OID. Only that walk is needed.

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
    const SEQUENCE: u8 = 0x30;
    const OID: u8 = 0x06;
    let (SEQUENCE, certificate, _) = tlv(cert)? else {
        return None;
    };
    let (SEQUENCE, _tbs, rest) = tlv(certificate)? else {
        return None;
    };
    let (SEQUENCE, algorithm, _) = tlv(rest)? else {
        return None;
    };
    let (OID, oid, _) = tlv(algorithm)? else {
        return None;
    };
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

/// One DER tag-length-value: (tag, value, what follows).
fn tlv(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, der) = der.split_first()?;
    let (&first, mut der) = der.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let (bytes, rest) = (der.get(..n)?, &der[n..]);
        der = rest;
        bytes.iter().fold(0, |len, &b| (len << 8) | usize::from(b))
    };
    Some((tag, der.get(..len)?, &der[len..]))
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
        // A minimal Certificate: SEQUENCE { SEQUENCE {}, SEQUENCE { OID }, BIT STRING }.
        let with = |oid: &[u8]| {
            let mut alg = vec![0x06, oid.len() as u8];
            alg.extend_from_slice(oid);
            let mut body = vec![0x30, 0x00, 0x30, alg.len() as u8];
            body.extend(alg);
            body.extend([0x03, 0x01, 0x00]);
            let mut der = vec![0x30, body.len() as u8];
            der.extend(body);
            signature_hash(&der)
        };
        let pkcs1 = |x: u8| with(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, x]);
        assert_eq!(pkcs1(0x05), Some(Hash::Sha256), "sha1WithRSAEncryption");
        assert_eq!(pkcs1(0x0b), Some(Hash::Sha256));
        assert_eq!(pkcs1(0x0c), Some(Hash::Sha384));
        assert_eq!(pkcs1(0x0d), Some(Hash::Sha512));
        assert_eq!(pkcs1(0x0a), None, "RSASSA-PSS");
        assert_eq!(
            with(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01]),
            Some(Hash::Sha256),
            "ecdsa-with-SHA1"
        );
        assert_eq!(signature_hash(b"not a certificate"), None);
        assert_eq!(signature_hash(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(signature_hash(&[]), None);
    }
}
