use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use rand::{Rng, SeedableRng};

use super::*;

// --- helpers -------------------------------------------------------------------------------

/// Runs a full exchange with postgres-protocol's client; returns the server's result for
/// client-final and, on success, whether the client accepted server-final.
fn exchange(
    server: &mut ScramServer,
    client_password: &str,
    binding: ChannelBinding,
) -> Result<bool, AuthError> {
    exchange_as(server, SCRAM_SHA_256, client_password, binding)
}

/// [`exchange`] with the client choosing `mechanism`.
fn exchange_as(
    server: &mut ScramServer,
    mechanism: &str,
    client_password: &str,
    binding: ChannelBinding,
) -> Result<bool, AuthError> {
    let mut client = ScramSha256::new(client_password.as_bytes(), binding);
    // Go through the SASLInitialResponse framing like the proxy will.
    let body = sasl_initial_body(mechanism, Some(client.message()));
    let (mechanism, data) = parse_sasl_initial(&body)?;
    let server_first = server.client_first(mechanism, data.expect("initial data"))?;
    client
        .update(&server_first)
        .expect("client accepts server-first");
    let server_final = server.client_final(client.message())?;
    Ok(client.finish(&server_final).is_ok())
}

fn sasl_initial_body(mechanism: &str, data: Option<&[u8]>) -> Vec<u8> {
    let mut body = mechanism.as_bytes().to_vec();
    body.push(0);
    match data {
        Some(data) => {
            body.extend_from_slice(&(data.len() as i32).to_be_bytes());
            body.extend_from_slice(data);
        }
        None => body.extend_from_slice(&(-1i32).to_be_bytes()),
    }
    body
}

/// A server that has accepted a well-formed client-first with client nonce "abc" and gs2
/// header `n,,`; returns it and the nonce client-final must echo.
fn server_after_first() -> (ScramServer, String) {
    let secret = ScramSecret::from_password("pw", b"salt", 16);
    let mut server = ScramServer::with_nonce(secret, "SERVERNONCE");
    let first = server.client_first(SCRAM_SHA_256, b"n,,n=,r=abc").unwrap();
    assert!(first.starts_with(b"r=abcSERVERNONCE,s="));
    (server, "abcSERVERNONCE".to_owned())
}

fn assert_exchange_refused(result: Result<Vec<u8>, AuthError>, what: &str) -> AuthError {
    match result {
        Ok(out) => panic!(
            "{what}: accepted, returned {:?}",
            String::from_utf8_lossy(&out)
        ),
        Err(e) => {
            assert_ne!(e, AuthError::WrongPassword, "{what}: a password failure");
            e
        }
    }
}

// --- RFC 7677 test vector ------------------------------------------------------------------

const RFC_SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
const RFC_CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
const RFC_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
const RFC_SERVER_FIRST: &str =
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
const RFC_CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                                p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
const RFC_SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
/// The RFC 7677 credentials ("pencil", salt and i above) in pg_authid form.
const RFC_VERIFIER: &str = "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$\
                            WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:\
                            wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";

fn rfc_secret() -> ScramSecret {
    ScramSecret::from_password("pencil", &STANDARD.decode(RFC_SALT).unwrap(), 4096)
}

#[test]
fn rfc7677_exchange_exact() {
    let mut server = ScramServer::with_nonce(rfc_secret(), RFC_SERVER_NONCE);
    let server_first = server
        .client_first(SCRAM_SHA_256, RFC_CLIENT_FIRST.as_bytes())
        .unwrap();
    assert_eq!(String::from_utf8(server_first).unwrap(), RFC_SERVER_FIRST);
    let server_final = server.client_final(RFC_CLIENT_FINAL.as_bytes()).unwrap();
    assert_eq!(String::from_utf8(server_final).unwrap(), RFC_SERVER_FINAL);
}

#[test]
fn rfc7677_exchange_from_parsed_verifier() {
    let secret = ScramSecret::parse(RFC_VERIFIER).unwrap();
    assert_eq!(secret, rfc_secret());
    assert_eq!(rfc_secret().to_string(), RFC_VERIFIER);
    let mut server = ScramServer::with_nonce(secret, RFC_SERVER_NONCE);
    server
        .client_first(SCRAM_SHA_256, RFC_CLIENT_FIRST.as_bytes())
        .unwrap();
    let server_final = server.client_final(RFC_CLIENT_FINAL.as_bytes()).unwrap();
    assert_eq!(server_final, RFC_SERVER_FINAL.as_bytes());
}

#[test]
fn rfc7677_wrong_password() {
    let secret = ScramSecret::from_password("pencil2", &STANDARD.decode(RFC_SALT).unwrap(), 4096);
    let mut server = ScramServer::with_nonce(secret, RFC_SERVER_NONCE);
    server
        .client_first(SCRAM_SHA_256, RFC_CLIENT_FIRST.as_bytes())
        .unwrap();
    let err = server
        .client_final(RFC_CLIENT_FINAL.as_bytes())
        .unwrap_err();
    assert_eq!(err, AuthError::WrongPassword);
    assert!(!err.is_protocol_violation());
}

#[test]
fn rfc7677_tampered_proof_is_wrong_password() {
    let mut server = ScramServer::with_nonce(rfc_secret(), RFC_SERVER_NONCE);
    server
        .client_first(SCRAM_SHA_256, RFC_CLIENT_FIRST.as_bytes())
        .unwrap();
    let tampered = RFC_CLIENT_FINAL.replace("p=dHzb", "p=dHzc");
    assert_eq!(
        server.client_final(tampered.as_bytes()),
        Err(AuthError::WrongPassword)
    );
}

// --- round trips with postgres-protocol's client -----------------------------------------

#[test]
fn client_round_trip_correct_password() {
    for binding in [ChannelBinding::unsupported(), ChannelBinding::unrequested()] {
        let mut server = ScramServer::new(ScramSecret::generate("s3cret pass"));
        assert_eq!(exchange(&mut server, "s3cret pass", binding), Ok(true));
    }
}

#[test]
fn client_round_trip_wrong_password() {
    for binding in [ChannelBinding::unsupported(), ChannelBinding::unrequested()] {
        let mut server = ScramServer::new(ScramSecret::generate("s3cret pass"));
        let err = exchange(&mut server, "s3cret pasS", binding).unwrap_err();
        assert_eq!(err, AuthError::WrongPassword);
        assert!(!err.is_protocol_violation());
    }
}

#[test]
fn client_round_trip_from_stored_forms() {
    let plain = StoredPassword::parse("hunter2");
    assert!(matches!(plain, StoredPassword::Plain(ref p) if p == "hunter2"));
    let secret = plain.scram_secret().unwrap();
    let mut server = ScramServer::new(secret.clone());
    assert_eq!(
        exchange(&mut server, "hunter2", ChannelBinding::unsupported()),
        Ok(true)
    );

    // The verifier text round-trips and still authenticates.
    let stored = StoredPassword::parse(&secret.to_string());
    assert_eq!(stored, StoredPassword::Scram(secret.clone()));
    let mut server = ScramServer::new(stored.scram_secret().unwrap());
    assert_eq!(
        exchange(&mut server, "hunter2", ChannelBinding::unsupported()),
        Ok(true)
    );
    let mut server = ScramServer::new(stored.scram_secret().unwrap());
    assert_eq!(
        exchange(&mut server, "hunter3", ChannelBinding::unsupported()),
        Err(AuthError::WrongPassword)
    );
}

#[test]
fn client_round_trip_non_ascii_nfkc_password() {
    // Already NFKC and without mapped characters: SASLprep leaves it unchanged, so the raw
    // bytes are right.
    let password = "pässwörd-ñ";
    let mut server = ScramServer::new(ScramSecret::generate(password));
    assert_eq!(
        exchange(&mut server, password, ChannelBinding::unsupported()),
        Ok(true)
    );
}

#[test]
fn generate_uses_random_salt_and_defaults() {
    let a = ScramSecret::generate("x");
    let b = ScramSecret::generate("x");
    assert_eq!(a.iterations, 4096);
    assert_eq!(a.salt.len(), 16);
    assert_ne!(a.salt, b.salt);
    assert_ne!(a.stored_key, b.stored_key);
    assert_eq!(a, ScramSecret::from_password("x", &a.salt, 4096));
}

#[test]
fn server_nonces_are_random_and_well_formed() {
    let mut seen = std::collections::HashSet::new();
    for _ in 0..20 {
        let mut server = ScramServer::new(rfc_secret());
        let first = server.client_first(SCRAM_SHA_256, b"n,,n=,r=abc").unwrap();
        let first = String::from_utf8(first).unwrap();
        let nonce = first
            .strip_prefix("r=abc")
            .unwrap()
            .split(',')
            .next()
            .unwrap();
        assert_eq!(nonce.len(), 24); // 18 bytes, base64
        assert_eq!(STANDARD.decode(nonce).unwrap().len(), 18);
        assert!(seen.insert(nonce.to_owned()));
    }
}

#[test]
fn username_in_client_first_is_ignored() {
    // Any user name is accepted (even non-UTF-8); the AuthMessage uses the bare message
    // verbatim, which the RFC vector (n=user) and the client round trips (n=) both check.
    let mut server = ScramServer::with_nonce(rfc_secret(), "X");
    assert!(server
        .client_first(SCRAM_SHA_256, b"n,,n=some=2Cother\xff,r=abc")
        .is_ok());
}

#[test]
fn mechanisms_payload() {
    let server = ScramServer::new(rfc_secret());
    assert_eq!(server.mechanisms(), b"SCRAM-SHA-256\0\0");
    let server = server.with_channel_binding(Some(std::sync::Arc::from(&b"hash"[..])));
    assert_eq!(
        server.mechanisms(),
        b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0"
    );
}

// --- channel binding (SCRAM-SHA-256-PLUS over TLS) -------------------------------------------

fn bound_server(end_point: &[u8]) -> ScramServer {
    ScramServer::new(ScramSecret::generate("s3cret pass"))
        .with_channel_binding(Some(std::sync::Arc::from(end_point)))
}

#[test]
fn plus_binds_the_proof_to_the_certificate_the_client_saw() {
    let ours = [7u8; 32];
    let plus = || ChannelBinding::tls_server_end_point(ours.to_vec());
    assert_eq!(
        exchange_as(
            &mut bound_server(&ours),
            SCRAM_SHA_256_PLUS,
            "s3cret pass",
            plus()
        ),
        Ok(true)
    );
    // A client that saw another certificate (a man in the middle terminated its TLS).
    let theirs = ChannelBinding::tls_server_end_point(vec![8u8; 32]);
    assert_eq!(
        exchange_as(
            &mut bound_server(&ours),
            SCRAM_SHA_256_PLUS,
            "s3cret pass",
            theirs
        ),
        Err(AuthError::ChannelBindingMismatch)
    );
    // The password still counts.
    assert_eq!(
        exchange_as(
            &mut bound_server(&ours),
            SCRAM_SHA_256_PLUS,
            "wrong",
            plus()
        ),
        Err(AuthError::WrongPassword)
    );
    // A client without channel binding support may still use SCRAM-SHA-256 over TLS.
    assert_eq!(
        exchange(
            &mut bound_server(&ours),
            "s3cret pass",
            ChannelBinding::unsupported()
        ),
        Ok(true)
    );
    // A mock exchange offers and checks the same, then fails on the proof.
    let mut mock = ScramServer::new_mock("nobody", b"k")
        .with_channel_binding(Some(std::sync::Arc::from(&ours[..])));
    assert_eq!(mock.mechanisms(), b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0");
    assert_eq!(
        exchange_as(&mut mock, SCRAM_SHA_256_PLUS, "s3cret pass", plus()),
        Err(AuthError::WrongPassword)
    );
}

#[test]
fn channel_binding_negotiation_errors_are_refused() {
    let ours = [7u8; 32];
    let cases: &[(&str, &[u8], AuthError)] = &[
        // PLUS without binding data.
        (
            SCRAM_SHA_256_PLUS,
            b"n,,n=,r=abc",
            AuthError::ChannelBindingRequired,
        ),
        (
            SCRAM_SHA_256_PLUS,
            b"y,,n=,r=abc",
            AuthError::ChannelBindingRequired,
        ),
        // Over TLS, "y" means PLUS was removed from the offer on the way.
        (
            SCRAM_SHA_256,
            b"y,,n=,r=abc",
            AuthError::ChannelBindingDowngrade,
        ),
        // Binding data with the mechanism that has none.
        (
            SCRAM_SHA_256,
            b"p=tls-server-end-point,,n=,r=abc",
            AuthError::ChannelBindingNotSupported,
        ),
        (
            SCRAM_SHA_256_PLUS,
            b"p=tls-unique,,n=,r=abc",
            AuthError::UnsupportedChannelBinding("tls-unique".into()),
        ),
    ];
    for (mechanism, first, expected) in cases {
        let what = format!("{mechanism} {:?}", String::from_utf8_lossy(first));
        let err = bound_server(&ours)
            .client_first(mechanism, first)
            .unwrap_err();
        assert_eq!(&err, expected, "{what}");
        let code = match expected {
            AuthError::ChannelBindingDowngrade => "28000",
            _ => "08P01",
        };
        assert_eq!(err.sqlstate(), code, "{what}");
    }
    for first in [&b"p=,,n=,r=abc"[..], b"p,,n=,r=abc"] {
        let err = bound_server(&ours)
            .client_first(SCRAM_SHA_256_PLUS, first)
            .unwrap_err();
        assert!(matches!(err, AuthError::Malformed(_)), "{err:?}");
    }
    // Without TLS, PLUS is not offered and cannot be chosen.
    let err = ScramServer::new(rfc_secret())
        .client_first(SCRAM_SHA_256_PLUS, b"p=tls-server-end-point,,n=,r=abc")
        .unwrap_err();
    assert_eq!(
        err,
        AuthError::UnsupportedMechanism(SCRAM_SHA_256_PLUS.into())
    );
}

// --- mock exchange ---------------------------------------------------------------------------

fn server_first_of(server: &mut ScramServer) -> String {
    String::from_utf8(server.client_first(SCRAM_SHA_256, b"n,,n=,r=abc").unwrap()).unwrap()
}

fn salt_of(server_first: &str) -> &str {
    server_first
        .split(',')
        .find_map(|a| a.strip_prefix("s="))
        .unwrap()
}

#[test]
fn mock_looks_normal_then_fails() {
    let key = b"per-process secret";
    let mut mock = ScramServer::new_mock("nobody", key);
    let first = server_first_of(&mut mock);
    assert!(first.starts_with("r=abc"));
    assert!(first.ends_with(",i=4096"));
    assert_eq!(STANDARD.decode(salt_of(&first)).unwrap().len(), 16);

    // Deterministic per (user, secret), different across users and secrets.
    let again = server_first_of(&mut ScramServer::new_mock("nobody", key));
    assert_eq!(salt_of(&first), salt_of(&again));
    assert_ne!(first, again); // fresh nonce each time
    let other = server_first_of(&mut ScramServer::new_mock("somebody", key));
    assert_ne!(salt_of(&first), salt_of(&other));
    let other_key = server_first_of(&mut ScramServer::new_mock("nobody", b"other"));
    assert_ne!(salt_of(&first), salt_of(&other_key));

    // A full client exchange ends in WrongPassword, whatever the password.
    for password in ["", "nobody", "password"] {
        let mut mock = ScramServer::new_mock("nobody", key);
        assert_eq!(
            exchange(&mut mock, password, ChannelBinding::unsupported()),
            Err(AuthError::WrongPassword)
        );
    }
}

#[test]
fn mock_validates_messages_like_a_real_exchange() {
    let mut mock = ScramServer::new_mock("nobody", b"k");
    assert_eq!(
        mock.client_first(SCRAM_SHA_256, b"p=tls-server-end-point,,n=,r=abc"),
        Err(AuthError::ChannelBindingNotSupported)
    );
    let mut mock = ScramServer::new_mock("nobody", b"k");
    server_first_of(&mut mock);
    assert_eq!(
        mock.client_final(b"c=biws,r=abcWRONG,p=AAAA"),
        Err(AuthError::NonceMismatch)
    );
}

// --- malformed input -----------------------------------------------------------------------

#[test]
fn client_first_malformed() {
    let cases: &[(&[u8], Option<AuthError>)] = &[
        (b"", None),
        (b"n", None),
        (b"n,", None),
        (b"n,,", None),
        (b"x,,n=,r=abc", None),
        (b"nn,n=,r=abc", None),
        (b"n,x,n=,r=abc", None),
        (b"n,,r=abc", None),
        (b"n,,n=", None),
        (b"n,,n=,", None),
        (b"n,,n=,r=", None),
        (b"n,,n=user", None),
        (b"n,,n=,x=abc", None),
        (b"n,,n=,r=ab c", None),
        (b"n,,n=,r=ab\x7f", None),
        (b"n,,n=,r=\xc3\xa9", None),
        (b"n,,n=,r=\xff\xfe", None),
        (b"n,,n=,r=abc\0", None),
        (b"\0,,n=,r=abc", None),
        (b"n,,n=,rr=abc", None),
        (b"n,,\xff", None),
        (b"\xff\xfe\xfd", None),
        (
            b"p=tls-server-end-point,,n=,r=abc",
            Some(AuthError::ChannelBindingNotSupported),
        ),
        (b"p", None),
        (b"n,a=admin,n=,r=abc", Some(AuthError::AuthzidNotSupported)),
        (b"y,a=,n=,r=abc", Some(AuthError::AuthzidNotSupported)),
        (b"n,,m=ext,n=,r=abc", Some(AuthError::UnsupportedExtension)),
        (b"n,,n=,r=abc,", None),
        (b"n,,n=,r=abc,x=ext,", None),
        (b"n,,n=,r=abc,x", None),
        (b"n,,n=,r=abc,1=x", None),
    ];
    for (input, expected) in cases {
        let mut server = ScramServer::new(rfc_secret());
        let what = format!("client-first {:?}", String::from_utf8_lossy(input));
        let err = assert_exchange_refused(server.client_first(SCRAM_SHA_256, input), &what);
        match expected {
            Some(expected) => assert_eq!(&err, expected, "{what}"),
            None => assert!(matches!(err, AuthError::Malformed(_)), "{what}: {err:?}"),
        }
        // The exchange is over.
        assert_eq!(
            server.client_final(b"c=biws,r=abc,p=AAAA"),
            Err(AuthError::InvalidState)
        );
    }
}

#[test]
fn client_first_wrong_mechanism() {
    for mechanism in ["SCRAM-SHA-256-PLUS", "PLAIN", "", "scram-sha-256"] {
        let mut server = ScramServer::new(rfc_secret());
        let err = server.client_first(mechanism, b"n,,n=,r=abc").unwrap_err();
        assert_eq!(err, AuthError::UnsupportedMechanism(mechanism.to_owned()));
        assert!(err.is_protocol_violation());
    }
    let long = "é".repeat(1000);
    let err = ScramServer::new(rfc_secret())
        .client_first(&long, b"n,,n=,r=abc")
        .unwrap_err();
    assert_eq!(err, AuthError::UnsupportedMechanism("é".repeat(64)));
}

#[test]
fn client_final_malformed() {
    let (_, nonce) = server_after_first();
    let good_proof = STANDARD.encode([0u8; 32]);
    let owned = |s: String| s.into_bytes();
    let cases: Vec<(Vec<u8>, Option<AuthError>)> = vec![
        (b"".to_vec(), None),
        (b"c".to_vec(), None),
        (b"c=biws".to_vec(), None),
        (b"c=biws,".to_vec(), None),
        (owned(format!("c=biws,r={nonce}")), None),
        (owned(format!("c=biws,r={nonce},")), None),
        (owned(format!("c=biws,r={nonce},p=")), None),
        (owned(format!("c=biws,r={nonce},p=!!!!")), None),
        (owned(format!("c=biws,r={nonce},p=AAAA")), None),
        (
            owned(format!("c=biws,r={nonce},p={}", STANDARD.encode([0u8; 33]))),
            None,
        ),
        (owned(format!("c=biws,r={nonce},p={good_proof},x=1")), None),
        (owned(format!("c=biws,r={nonce},p={good_proof}\0")), None),
        (owned(format!("c=biws,r={nonce},,p={good_proof}")), None),
        (owned(format!("r={nonce},c=biws,p={good_proof}")), None),
        (owned(format!("c=biws,p={good_proof}")), None),
        (b"\xff\xfe\xfd".to_vec(), None),
        (
            [format!("c=biws,r={nonce},p=").as_bytes(), b"\xc3\xa9\xff"].concat(),
            None,
        ),
        (
            owned(format!("c=biws,r=abc,p={good_proof}")),
            Some(AuthError::NonceMismatch),
        ),
        (
            owned(format!("c=biws,r={nonce}X,p={good_proof}")),
            Some(AuthError::NonceMismatch),
        ),
        (
            owned(format!("c=biws,r=,p={good_proof}")),
            Some(AuthError::NonceMismatch),
        ),
        (
            [b"c=biws,r=", nonce.as_bytes(), b"\xff,p=AAAA"].concat(),
            Some(AuthError::NonceMismatch),
        ),
        (owned(format!("c=eSws,r={nonce},p={good_proof}")), None),
        (owned(format!("c=,r={nonce},p={good_proof}")), None),
        (
            owned(format!(
                "c=cD10bHMtc2VydmVyLWVuZC1wb2ludCws,r={nonce},p={good_proof}"
            )),
            None,
        ),
        (owned(format!("c=biws,r={nonce},x=ext")), None),
        (owned(format!("c=biws,r={nonce},x,p={good_proof}")), None),
    ];
    for (input, expected) in cases {
        let (mut server, _) = server_after_first();
        let what = format!("client-final {:?}", String::from_utf8_lossy(&input));
        let err = assert_exchange_refused(server.client_final(&input), &what);
        match expected {
            Some(expected) => assert_eq!(err, expected, "{what}"),
            None => assert!(matches!(err, AuthError::Malformed(_)), "{what}: {err:?}"),
        }
        assert_eq!(server.client_final(&input), Err(AuthError::InvalidState));
    }

    // Well-formed but wrong proof is a password failure, not a protocol error.
    let (mut server, _) = server_after_first();
    assert_eq!(
        server.client_final(format!("c=biws,r={nonce},p={good_proof}").as_bytes()),
        Err(AuthError::WrongPassword)
    );
}

#[test]
fn y_flag_requires_matching_c_attribute() {
    let secret = ScramSecret::from_password("pw", b"salt", 16);
    let mut server = ScramServer::with_nonce(secret, "S");
    server.client_first(SCRAM_SHA_256, b"y,,n=,r=abc").unwrap();
    let proof = STANDARD.encode([0u8; 32]);
    assert_eq!(
        server.client_final(format!("c=biws,r=abcS,p={proof}").as_bytes()),
        Err(AuthError::Malformed(
            "unexpected SCRAM channel-binding attribute in client-final-message"
        ))
    );
}

#[test]
fn steps_out_of_order() {
    let mut server = ScramServer::new(rfc_secret());
    assert_eq!(
        server.client_final(b"c=biws,r=abc,p=AAAA"),
        Err(AuthError::InvalidState)
    );
    assert!(AuthError::InvalidState.is_protocol_violation());
    // A new server after a successful exchange refuses further steps.
    let mut server = ScramServer::with_nonce(rfc_secret(), RFC_SERVER_NONCE);
    server
        .client_first(SCRAM_SHA_256, RFC_CLIENT_FIRST.as_bytes())
        .unwrap();
    assert_eq!(
        server.client_first(SCRAM_SHA_256, RFC_CLIENT_FIRST.as_bytes()),
        Err(AuthError::InvalidState)
    );
    let mut server = ScramServer::with_nonce(rfc_secret(), RFC_SERVER_NONCE);
    server
        .client_first(SCRAM_SHA_256, RFC_CLIENT_FIRST.as_bytes())
        .unwrap();
    server.client_final(RFC_CLIENT_FINAL.as_bytes()).unwrap();
    assert_eq!(
        server.client_final(RFC_CLIENT_FINAL.as_bytes()),
        Err(AuthError::InvalidState)
    );
}

#[test]
fn sasl_initial_parsing() {
    let body = sasl_initial_body("SCRAM-SHA-256", Some(b"n,,n=,r=abc"));
    assert_eq!(
        parse_sasl_initial(&body),
        Ok(("SCRAM-SHA-256", Some(&b"n,,n=,r=abc"[..])))
    );
    let body = sasl_initial_body("SCRAM-SHA-256", None);
    assert_eq!(parse_sasl_initial(&body), Ok(("SCRAM-SHA-256", None)));
    let body = sasl_initial_body("SCRAM-SHA-256", Some(b""));
    assert_eq!(
        parse_sasl_initial(&body),
        Ok(("SCRAM-SHA-256", Some(&b""[..])))
    );

    let mut bad: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"SCRAM-SHA-256".to_vec(),
        b"SCRAM-SHA-256\0".to_vec(),
        b"SCRAM-SHA-256\0\0\0\0".to_vec(),
        b"\xff\0\0\0\0\0".to_vec(),
        [b"SCRAM-SHA-256\0".as_slice(), &(-2i32).to_be_bytes()].concat(),
        [b"SCRAM-SHA-256\0".as_slice(), &i32::MIN.to_be_bytes()].concat(),
        [b"SCRAM-SHA-256\0".as_slice(), &(-1i32).to_be_bytes(), b"x"].concat(),
        [b"SCRAM-SHA-256\0".as_slice(), &5i32.to_be_bytes(), b"abcd"].concat(),
        [b"SCRAM-SHA-256\0".as_slice(), &3i32.to_be_bytes(), b"abcd"].concat(),
        [b"SCRAM-SHA-256\0".as_slice(), &i32::MAX.to_be_bytes()].concat(),
    ];
    // Every truncation of a valid body except the full one is malformed.
    let full = sasl_initial_body("SCRAM-SHA-256", Some(b"n,,n=,r=abc"));
    bad.extend((0..full.len()).map(|n| full[..n].to_vec()));
    for body in bad {
        let err = parse_sasl_initial(&body).unwrap_err();
        assert!(err.is_protocol_violation(), "{body:?}");
    }

    // Empty data (as a SASLResponse answering the empty challenge may carry) is a malformed
    // client-first.
    let err = ScramServer::new(rfc_secret())
        .client_first(SCRAM_SHA_256, b"")
        .unwrap_err();
    assert!(matches!(err, AuthError::Malformed(_)));
    // The mechanism is checked on its own, before there is data.
    let server = ScramServer::new(rfc_secret());
    assert_eq!(server.select(SCRAM_SHA_256), Ok(false));
    assert!(matches!(
        server.select(SCRAM_SHA_256_PLUS),
        Err(AuthError::UnsupportedMechanism(_))
    ));
}

#[test]
fn no_panics_on_mutated_messages() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5ca1ab1e);
    let secret = ScramSecret::from_password("pencil", b"salt", 2);
    let client_first = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO".to_vec();
    let client_final = format!(
        "c=biws,r=rOprNGfwEbeRWgbNEkqOSN,p={}",
        STANDARD.encode([7u8; 32])
    )
    .into_bytes();
    let alphabet = b",=abcnprymxyz\0\xff\xc3/+AZ09";
    let mutate = |rng: &mut rand::rngs::StdRng, msg: &[u8]| -> Vec<u8> {
        let mut m = msg.to_vec();
        for _ in 0..rng.gen_range(1..4) {
            match rng.gen_range(0..4) {
                0 if !m.is_empty() => {
                    let i = rng.gen_range(0..m.len());
                    m[i] = alphabet[rng.gen_range(0..alphabet.len())];
                }
                1 if !m.is_empty() => {
                    let i = rng.gen_range(0..m.len());
                    m.remove(i);
                }
                2 => {
                    let i = rng.gen_range(0..=m.len());
                    m.insert(i, alphabet[rng.gen_range(0..alphabet.len())]);
                }
                _ => m.truncate(rng.gen_range(0..=m.len())),
            }
        }
        m
    };
    for _ in 0..5000 {
        let mut server = ScramServer::with_nonce(secret.clone(), "SN");
        let first = mutate(&mut rng, &client_first);
        if server.client_first(SCRAM_SHA_256, &first).is_err() {
            continue;
        }
        let fin = mutate(&mut rng, &client_final);
        let _ = server.client_final(&fin);
        let _ = parse_sasl_initial(&fin);
    }
    for _ in 0..2000 {
        let (mut server, _) = server_after_first();
        let len = rng.gen_range(0..64);
        let junk: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        assert!(server.client_final(&junk).is_err());
        let _ = parse_sasl_initial(&junk);
        let mut server = ScramServer::new(secret.clone());
        let _ = server.client_first(SCRAM_SHA_256, &junk);
    }
}

// --- stored password formats --------------------------------------------------------------

#[test]
fn stored_password_parse() {
    let md5 = "md5".to_owned() + &"0123456789abcdef".repeat(2);
    assert_eq!(
        StoredPassword::parse(&md5),
        StoredPassword::Md5("0123456789abcdef".repeat(2))
    );
    assert_eq!(
        StoredPassword::parse(&md5.to_ascii_uppercase().replacen("MD5", "md5", 1)),
        StoredPassword::Md5("0123456789abcdef".repeat(2))
    );
    for plain in [
        "",
        "md5",
        "MD50123456789abcdef0123456789abcdef", // the prefix is case-sensitive
        "md50123456789abcdef0123456789abcde",
        "md50123456789abcdef0123456789abcdef0",
        "md50123456789abcdef0123456789abcdeg",
        "password",
        "SCRAM-SHA-256$",
        "SCRAM-SHA-256$4096:c2FsdA==$",
        "SCRAM-SHA-256$0:c2FsdA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "SCRAM-SHA-256$-1:c2FsdA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "SCRAM-SHA-256$+1:c2FsdA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "SCRAM-SHA-256$99999999999:c2FsdA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "SCRAM-SHA-256$4096:c2FsdA=$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "SCRAM-SHA-256$4096:c2FsdA==$AAAA:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "SCRAM-SHA-256$4096:c2FsdA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=x",
        "SCRAM-SHA-256$4096:c2FsdA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "scram-sha-256$4096:c2FsdA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    ] {
        assert_eq!(
            StoredPassword::parse(plain),
            StoredPassword::Plain(plain.to_owned()),
            "{plain:?}"
        );
    }

    let scram = "SCRAM-SHA-256$4096:c2FsdA==$AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=:\
                 ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
    let StoredPassword::Scram(secret) = StoredPassword::parse(scram) else {
        panic!("not recognised as SCRAM");
    };
    assert_eq!(secret.iterations, 4096);
    assert_eq!(secret.salt, b"salt");
    assert_eq!(secret.stored_key, core::array::from_fn(|i| i as u8 + 1));
    assert_eq!(secret.server_key, core::array::from_fn(|i| i as u8 + 32));
    assert_eq!(secret.to_string(), scram);
    assert_eq!(
        ScramSecret::parse(&secret.to_string()),
        Some(secret.clone())
    );
    assert_eq!(
        StoredPassword::parse(scram).scram_secret(),
        Some(secret.clone())
    );
    assert_eq!(StoredPassword::parse(&md5).scram_secret(), None);
    // An empty password is none (an `[auth_query]` answer, an `hba_file` user): no verifier
    // for it, so no SCRAM proof of '' is accepted.
    assert_eq!(StoredPassword::parse("").scram_secret(), None);
    assert!(StoredPassword::parse("x").scram_secret().is_some());

    // Generated secrets round-trip through the text form.
    for password in ["", "a", "pässwörd", "with:colon$and$dollar"] {
        let secret = ScramSecret::generate(password);
        assert_eq!(
            ScramSecret::parse(&secret.to_string()),
            Some(secret.clone())
        );
        assert_eq!(
            StoredPassword::parse(&secret.to_string()),
            StoredPassword::Scram(secret)
        );
    }
}

#[test]
fn debug_redacts_secrets() {
    let secret = ScramSecret::from_password("pencil", b"salt", 2);
    let printed = format!(
        "{:?} {:?} {:?}",
        StoredPassword::Plain("pencil".into()),
        StoredPassword::Md5("0123456789abcdef0123456789abcdef".into()),
        StoredPassword::Scram(secret.clone())
    );
    assert!(!printed.contains("pencil"), "{printed}");
    assert!(!printed.contains("0123456789abcdef"), "{printed}");
    assert!(
        !printed.contains(&STANDARD.encode(secret.stored_key)),
        "{printed}"
    );
    assert!(
        !printed.contains(&STANDARD.encode(secret.server_key)),
        "{printed}"
    );
}

// --- md5 -------------------------------------------------------------------------------------

#[test]
fn md5_plain_and_hashed() {
    let user = "md5_user";
    let password = "password";
    let salt = [0x2a, 0x3d, 0x8f, 0xe0];
    let response = md5_hash(user.as_bytes(), password.as_bytes(), salt);
    assert_eq!(response, "md562af4dd09bbb41884907a838a3233294");

    let plain = StoredPassword::Plain(password.into());
    assert!(md5_challenge_response_ok(
        &plain,
        user,
        salt,
        response.as_bytes()
    ));

    // pg_authid form: "md5" + md5hex(password + user).
    let stored_md5 = {
        use ::md5::{Digest, Md5};
        let digest = Md5::digest(format!("{password}{user}").as_bytes());
        format!(
            "md5{}",
            digest
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        )
    };
    let hashed = StoredPassword::parse(&stored_md5);
    assert!(matches!(hashed, StoredPassword::Md5(_)));
    assert!(md5_challenge_response_ok(
        &hashed,
        user,
        salt,
        response.as_bytes()
    ));
    let hashed_upper = StoredPassword::parse(&("md5".to_owned() + &stored_md5[3..].to_uppercase()));
    assert!(md5_challenge_response_ok(
        &hashed_upper,
        user,
        salt,
        response.as_bytes()
    ));

    // With a clear-text password the user name is part of the hash; an md5 hash has its user
    // baked in (as in PostgreSQL, it is only valid for the role it was computed for).
    assert!(!md5_challenge_response_ok(
        &plain,
        "other",
        salt,
        response.as_bytes()
    ));

    for stored in [&plain, &hashed] {
        // Wrong password or salt; malformed responses.
        let wrong = md5_hash(user.as_bytes(), b"passwordx", salt);
        assert!(!md5_challenge_response_ok(
            stored,
            user,
            salt,
            wrong.as_bytes()
        ));
        assert!(!md5_challenge_response_ok(
            stored,
            user,
            [0, 0, 0, 0],
            response.as_bytes()
        ));
        assert!(!md5_challenge_response_ok(stored, user, salt, b""));
        assert!(!md5_challenge_response_ok(
            stored,
            user,
            salt,
            &response.as_bytes()[..34]
        ));
        assert!(!md5_challenge_response_ok(
            stored,
            user,
            salt,
            format!("{response}\0").as_bytes()
        ));
        assert!(!md5_challenge_response_ok(
            stored,
            user,
            salt,
            response.to_uppercase().as_bytes()
        ));
        assert!(!md5_challenge_response_ok(stored, user, salt, b"\xff\xfe"));
        // Sending the stored hash itself (pass-the-hash of the outer form) does not work.
        assert!(!md5_challenge_response_ok(
            stored,
            user,
            salt,
            stored_md5.as_bytes()
        ));
    }

    // A SCRAM verifier can never answer an md5 challenge.
    let scram = StoredPassword::Scram(ScramSecret::from_password(password, b"salt", 2));
    assert!(!md5_challenge_response_ok(
        &scram,
        user,
        salt,
        response.as_bytes()
    ));
}

#[test]
fn md5_non_ascii_password_and_user() {
    let salt = [1, 2, 3, 4];
    let response = md5_hash("üser".as_bytes(), "pässword".as_bytes(), salt);
    assert!(md5_challenge_response_ok(
        &StoredPassword::Plain("pässword".into()),
        "üser",
        salt,
        response.as_bytes()
    ));
}

/// The SQLSTATEs PostgreSQL 15 answers the same refusals with (checked against its
/// auth-scram.c and a real server).
#[test]
fn error_classification() {
    assert_eq!(AuthError::WrongPassword.sqlstate(), "28P01");
    assert!(!AuthError::WrongPassword.is_protocol_violation());
    for (e, code) in [
        (AuthError::UnsupportedMechanism("x".into()), "08P01"),
        (AuthError::ChannelBindingNotSupported, "08P01"),
        (AuthError::ChannelBindingRequired, "08P01"),
        (AuthError::ChannelBindingDowngrade, "28000"),
        (AuthError::UnsupportedChannelBinding("x".into()), "08P01"),
        (AuthError::ChannelBindingMismatch, "28000"),
        (AuthError::AuthzidNotSupported, "0A000"),
        (AuthError::UnsupportedExtension, "0A000"),
        (AuthError::NonceMismatch, "08P01"),
        (AuthError::Malformed("x"), "08P01"),
        (AuthError::InvalidState, "08P01"),
    ] {
        assert_eq!(e.sqlstate(), code, "{e:?}");
        assert_eq!(e.is_protocol_violation(), code == "08P01", "{e:?}");
        assert!(!e.to_string().is_empty());
    }
    assert_eq!(
        AuthError::AuthzidNotSupported.to_string(),
        "client uses authorization identity, but it is not supported"
    );
    assert_eq!(
        AuthError::UnsupportedExtension.to_string(),
        "client requires an unsupported SCRAM extension"
    );
}

// --- logging in to a server from a client's proof (auth_query) ------------------------------

/// A client logs in with `password` against `secret`; returns the keys its proof gave away.
fn proven_keys(secret: &ScramSecret, password: &str) -> Option<ScramKeys> {
    let mut server = ScramServer::new(secret.clone());
    exchange(&mut server, password, ChannelBinding::unsupported()).ok()?;
    server.proven_keys()
}

/// Runs a [`ScramKeysClient`] against a server holding `secret`: the server's verdict, and the
/// client's on the server's signature.
fn client_exchange(
    client: ScramKeysClient,
    secret: &ScramSecret,
) -> Result<Result<(), AuthError>, AuthError> {
    exchange_with(client, ScramServer::new(secret.clone()), SCRAM_SHA_256)
}

/// [`client_exchange`] against `server`, the client naming `mechanism`.
fn exchange_with(
    mut client: ScramKeysClient,
    mut server: ScramServer,
    mechanism: &str,
) -> Result<Result<(), AuthError>, AuthError> {
    let first = client.client_first();
    let server_first = server.client_first(mechanism, &first)?;
    let client_final = match client.server_first(&server_first) {
        Ok(f) => f,
        Err(e) => return Ok(Err(e)),
    };
    let server_final = server.client_final(&client_final)?;
    Ok(client.server_final(&server_final))
}

/// [`client_exchange`] from known keys.
fn keys_exchange(keys: ScramKeys, secret: ScramSecret) -> Result<Result<(), AuthError>, AuthError> {
    client_exchange(ScramKeysClient::new(keys), &secret)
}

#[test]
fn a_proof_gives_the_keys_to_log_in_to_a_server_with() {
    let secret = ScramSecret::generate("s3cret pass");
    let keys = proven_keys(&secret, "s3cret pass").expect("the right password logs in");
    assert_eq!(
        (keys.iterations, &keys.salt),
        (secret.iterations, &secret.salt)
    );
    assert_eq!(keys.server_key, secret.server_key);
    // The recovered ClientKey is the password's: H(ClientKey) = StoredKey.
    use sha2::Digest;
    assert_eq!(
        <[u8; 32]>::from(sha2::Sha256::digest(keys.client_key)),
        secret.stored_key
    );
    // With them, the proxy logs in to another server holding the same verifier (as
    // PostgreSQL's is), and accepts that server's signature.
    assert_eq!(keys_exchange(keys.clone(), secret.clone()), Ok(Ok(())));
    // A wrong password proves nothing, and a mock exchange never does.
    assert_eq!(proven_keys(&secret, "s3cret pasS"), None);
    let mut mock = ScramServer::new_mock("nobody", b"proxy secret");
    assert!(exchange(&mut mock, "anything", ChannelBinding::unsupported()).is_err());
    assert_eq!(mock.proven_keys(), None);
}

#[test]
fn keys_of_another_password_do_not_log_in() {
    let secret = ScramSecret::generate("old password");
    let keys = proven_keys(&secret, "old password").unwrap();
    // The role's password changed: a new salt, and the client stops before sending a proof.
    let changed = ScramSecret::generate("new password");
    assert_eq!(
        keys_exchange(keys.clone(), changed),
        Ok(Err(AuthError::WrongPassword))
    );
    // Same salt and iterations, another password: the server refuses the proof.
    let same_salt = ScramSecret::from_password("new password", &secret.salt, secret.iterations);
    assert_eq!(
        keys_exchange(keys.clone(), same_salt),
        Err(AuthError::WrongPassword)
    );
    // A server that does not know the ServerKey is refused by the client.
    let mut forged = secret.clone();
    forged.server_key[0] ^= 1;
    assert_eq!(
        keys_exchange(keys, forged),
        Ok(Err(AuthError::WrongPassword))
    );
}

#[test]
fn keys_client_rejects_bad_server_messages() {
    let secret = ScramSecret::from_password("pw", b"salt", 16);
    let keys = proven_keys(&secret, "pw").unwrap();
    let salt = STANDARD.encode(b"salt");
    for (server_first, what) in [
        (
            format!("r=XYZ,s={salt},i=16"),
            "a nonce that does not extend the client's",
        ),
        ("r=abc,s=***,i=16".to_string(), "bad base64 salt"),
        (format!("r=abcdef,s={salt}"), "no iteration count"),
        (format!("r=abcdef,s={salt},i=x"), "a bad iteration count"),
        (
            format!("r=abcdef,s={salt},i=4000000000"),
            "billions of iterations",
        ),
        (format!("r=abcdef,s={salt},i=0"), "no iterations"),
        (
            format!("m=ext,r=abcdef,s={salt},i=16"),
            "a mandatory extension",
        ),
        ("\u{ff}".to_string(), "not UTF-8 (as bytes below)"),
    ] {
        let mut client = ScramKeysClient::with_nonce(keys.clone(), "abc".into());
        client.client_first();
        let data: &[u8] = if server_first == "\u{ff}" {
            &[0xff]
        } else {
            server_first.as_bytes()
        };
        assert!(client.server_first(data).is_err(), "{what}: accepted");
        // The exchange is over after an error.
        assert_eq!(
            client.server_final(b"v=AAAA"),
            Err(AuthError::InvalidState),
            "{what}"
        );
    }
    // The nonce must be extended, not merely repeated.
    let mut client = ScramKeysClient::with_nonce(keys.clone(), "abc".into());
    assert_eq!(client.client_first(), b"n,,n=,r=abc".to_vec());
    assert_eq!(
        client.server_first(format!("r=abc,s={salt},i=16").as_bytes()),
        Err(AuthError::NonceMismatch)
    );
    // A server error in server-final is a failed login.
    let mut client = ScramKeysClient::with_nonce(keys, "abc".into());
    client.client_first();
    client
        .server_first(format!("r=abcdef,s={salt},i=16").as_bytes())
        .unwrap();
    assert_eq!(
        client.server_final(b"e=invalid-proof"),
        Err(AuthError::WrongPassword)
    );
}

#[test]
fn md5_response_from_the_stored_hash_is_the_clients() {
    // A server's md5 challenge answered from the stored hash alone equals libpq's answer from
    // the password.
    use ::md5::{Digest, Md5};
    let inner: String = Md5::digest(b"secretalice")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let StoredPassword::Md5(hex) = StoredPassword::parse(&format!("md5{inner}")) else {
        panic!("md5 form not recognised")
    };
    for salt in [[1, 2, 3, 4], [0xff, 0, 0x7f, 9]] {
        assert_eq!(
            md5_response(&hex, salt),
            md5_hash(b"alice", b"secret", salt)
        );
    }
}

/// [`client_exchange`] from a password.
fn password_exchange(
    password: &str,
    derived: &DerivedKeys,
    secret: &ScramSecret,
) -> Result<Result<(), AuthError>, AuthError> {
    client_exchange(
        ScramKeysClient::from_password(password, derived.clone()),
        secret,
    )
}

/// The derivation a server-first-message needs is handed out to run elsewhere (off the event
/// loop), once: the exchange then uses its keys without deriving them again.
#[test]
fn a_password_clients_derivation_runs_apart_from_the_exchange() {
    let derived = DerivedKeys::default();
    let secret = ScramSecret::generate("pool password");
    let mut server = ScramServer::new(secret.clone());
    let mut client = ScramKeysClient::from_password("pool password", derived.clone());
    let first = client.client_first();
    let server_first = server.client_first(SCRAM_SHA_256, &first).unwrap();
    let derive = client.derivation(&server_first).expect("keys to derive");
    std::thread::spawn(derive).join().unwrap();
    assert_eq!(derived.derivations(), 1);
    assert!(
        client.derivation(&server_first).is_none(),
        "derived already"
    );
    let client_final = client.server_first(&server_first).unwrap();
    let server_final = server.client_final(&client_final).unwrap();
    assert_eq!(client.server_final(&server_final), Ok(()));
    assert_eq!(derived.derivations(), 1, "the exchange derived them again");
    // Connections opened together wait for one derivation.
    let derived = DerivedKeys::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut clients: Vec<_> = (0..4)
            .map(|_| ScramKeysClient::from_password("pool password", derived.clone()))
            .collect();
        let firsts: Vec<_> = clients
            .iter_mut()
            .map(|c| {
                let first = c.client_first();
                ScramServer::new(secret.clone())
                    .client_first(SCRAM_SHA_256, &first)
                    .unwrap()
            })
            .collect();
        let ahead = clients.iter().zip(&firsts).map(|(c, f)| c.derive_ahead(f));
        futures_util::future::join_all(ahead).await;
    });
    assert_eq!(derived.derivations(), 1, "four connections, one derivation");
    // Known keys need no derivation.
    let keys = ScramKeysClient::new(ScramKeys::from_password(
        "pool password",
        &secret.salt,
        secret.iterations,
    ));
    assert!(keys.derivation(&server_first).is_none());
}

#[test]
fn a_password_client_derives_its_keys_once_per_verifier() {
    let derived = DerivedKeys::default();
    let secret = ScramSecret::generate("pool password");
    for _ in 0..5 {
        assert_eq!(
            password_exchange("pool password", &derived, &secret),
            Ok(Ok(()))
        );
    }
    assert_eq!(derived.derivations(), 1, "one derivation for five logins");
    // The role's password changed on the server (new salt): derived again, once.
    let changed = ScramSecret::generate("pool password");
    for _ in 0..3 {
        assert_eq!(
            password_exchange("pool password", &derived, &changed),
            Ok(Ok(()))
        );
    }
    assert_eq!(derived.derivations(), 2);
    // A wrong password is refused by the server, cached keys or not.
    assert_eq!(
        password_exchange("pool passworD", &DerivedKeys::default(), &secret),
        Err(AuthError::WrongPassword)
    );
    // The keys are what a verifier holds: H(ClientKey) = StoredKey.
    use sha2::Digest;
    let keys = ScramKeys::from_password("pool password", &secret.salt, secret.iterations);
    assert_eq!(
        <[u8; 32]>::from(sha2::Sha256::digest(keys.client_key)),
        secret.stored_key
    );
    assert_eq!(keys.server_key, secret.server_key);
}

#[test]
fn saslprep_applies_as_in_postgresql() {
    // A soft hyphen is mapped to nothing and a no-break space to a space: libpq (and
    // postgres-protocol's client) send the prepared password's proof.
    let secret = ScramSecret::generate("pass\u{00AD}word\u{00A0}x");
    let mut server = ScramServer::new(secret.clone());
    assert_eq!(
        exchange(&mut server, "password x", ChannelBinding::unsupported()),
        Ok(true)
    );
    assert_eq!(
        password_exchange("password x", &DerivedKeys::default(), &secret),
        Ok(Ok(()))
    );
    // A clear-text password checked against one configured in clear text (hba `password`)
    // is compared after SASLprep too: PostgreSQL keeps a verifier of it.
    let stored = StoredPassword::parse("pa\u{00AD}ss\u{2168}");
    assert!(stored.matches_cleartext("u", "passIX"));
    assert!(stored.matches_cleartext("u", "pa\u{00AD}ss\u{2168}"));
    assert!(!stored.matches_cleartext("u", "passIx"));
    assert!(StoredPassword::parse("tab\tpass").matches_cleartext("u", "tab\tpass"));
    // Where SASLprep fails (a control character), the raw bytes count, as in PostgreSQL.
    let secret = ScramSecret::generate("tab\tpass");
    let mut server = ScramServer::new(secret.clone());
    assert_eq!(
        exchange(&mut server, "tab\tpass", ChannelBinding::unsupported()),
        Ok(true)
    );
}

/// [`client_exchange`] against a server that offers SCRAM-SHA-256-PLUS for `server_end_point`
/// (`None`: no TLS), the client using `mechanism` and `binding`.
fn bound_client_exchange(
    mechanism: &str,
    binding: scram_client::Binding,
    server_end_point: Option<&[u8]>,
) -> Result<Result<(), AuthError>, AuthError> {
    let server = ScramServer::new(ScramSecret::generate("pw"))
        .with_channel_binding(server_end_point.map(Into::into));
    let client = ScramKeysClient::from_password("pw", DerivedKeys::default()).with_binding(binding);
    exchange_with(client, server, mechanism)
}

/// A client is `bound` only after the server verified an exchange bound to its certificate.
#[test]
fn only_a_complete_plus_exchange_is_bound() {
    use scram_client::Binding;
    let cert = [5u8; 32];
    for (binding, mechanism, offered, bound) in [
        (
            Binding::EndPoint(cert.to_vec()),
            "SCRAM-SHA-256-PLUS",
            Some(&cert[..]),
            true,
        ),
        (Binding::NotOffered, "SCRAM-SHA-256", None, false),
        (Binding::None, "SCRAM-SHA-256", Some(&cert[..]), false),
    ] {
        let mut server = ScramServer::new(ScramSecret::generate("pw"))
            .with_channel_binding(offered.map(Into::into));
        let mut client =
            ScramKeysClient::from_password("pw", DerivedKeys::default()).with_binding(binding);
        let first = client.client_first();
        let server_first = server.client_first(mechanism, &first).unwrap();
        let client_final = client.server_first(&server_first).unwrap();
        assert!(
            !client.bound(),
            "{mechanism}: bound before the server's proof"
        );
        let server_final = server.client_final(&client_final).unwrap();
        client.server_final(&server_final).unwrap();
        assert_eq!(client.bound(), bound, "{mechanism}");
    }
}

#[test]
fn the_keys_client_binds_to_the_certificate_it_saw() {
    use scram_client::Binding;
    let cert = [5u8; 32];
    // Over TLS, with the hash, to a server offering PLUS: bound, and the server checks it.
    let (mechanism, binding) = Binding::choose(true, false, Some(cert.to_vec()), true).unwrap();
    assert_eq!(mechanism, "SCRAM-SHA-256-PLUS");
    assert_eq!(
        bound_client_exchange(mechanism, binding, Some(&cert)),
        Ok(Ok(()))
    );
    // A man in the middle: the client saw another certificate than the server has.
    assert_eq!(
        bound_client_exchange(
            "SCRAM-SHA-256-PLUS",
            Binding::EndPoint(vec![6u8; 32]),
            Some(&cert)
        ),
        Err(AuthError::ChannelBindingMismatch)
    );
    // Over TLS to a server that offers no PLUS: `y`. Had the server offered it (the offer was
    // cut on the way), it refuses.
    let (mechanism, binding) = Binding::choose(true, false, Some(cert.to_vec()), false).unwrap();
    assert_eq!(
        (mechanism, &binding),
        ("SCRAM-SHA-256", &Binding::NotOffered)
    );
    assert_eq!(
        bound_client_exchange(mechanism, binding.clone(), None),
        Ok(Ok(()))
    );
    assert_eq!(
        bound_client_exchange(mechanism, binding, Some(&cert)),
        Err(AuthError::ChannelBindingDowngrade)
    );
    // No TLS, or binding disabled: `n`, which any server takes.
    for (tls, disabled, plus) in [
        (false, false, false),
        (true, true, true),
        (true, true, false),
    ] {
        let (mechanism, binding) = Binding::choose(tls, disabled, None, plus).unwrap();
        assert_eq!((mechanism, &binding), ("SCRAM-SHA-256", &Binding::None));
        assert_eq!(
            bound_client_exchange(mechanism, binding, plus.then_some(&cert[..])),
            Ok(Ok(()))
        );
    }
    // A PLUS offer that cannot be bound (no TLS: stripped; no hash for the certificate:
    // Ed25519) fails the login, as libpq fails it, even with binding disabled over no TLS.
    for (tls, disabled) in [(false, false), (false, true), (true, false)] {
        assert!(Binding::choose(tls, disabled, None, true).is_err());
    }
}

#[test]
fn a_password_client_refuses_an_iteration_count_it_cannot_afford() {
    let derived = DerivedKeys::default();
    let salt = STANDARD.encode(b"salt");
    for i in ["4000000000", "1000001", "0"] {
        let mut client = ScramKeysClient::from_password("pw", derived.clone());
        let first = String::from_utf8(client.client_first()).unwrap();
        let nonce = first.rsplit("r=").next().unwrap().to_string();
        let server_first = format!("r={nonce}server,s={salt},i={i}");
        assert!(
            matches!(
                client.server_first(server_first.as_bytes()),
                Err(AuthError::Malformed(_))
            ),
            "i={i} accepted"
        );
    }
    assert_eq!(derived.derivations(), 0, "no keys were derived");
}

#[test]
fn cleartext_passwords_match_every_stored_form() {
    let user = "alice";
    let inner = format!(
        "md5{}",
        md5::hex(&{
            use ::md5::{Digest, Md5};
            let mut h = Md5::new();
            h.update(b"s3cret");
            h.update(user.as_bytes());
            h.finalize()
        })
    );
    let scram = ScramSecret::from_password("s3cret", b"salty", 16).to_string();
    for stored in ["s3cret", inner.as_str(), scram.as_str()] {
        let s = StoredPassword::parse(stored);
        assert!(s.matches_cleartext(user, "s3cret"), "{s:?}");
        assert!(!s.matches_cleartext(user, "s3cres"), "{s:?}");
        assert!(!s.matches_cleartext(user, ""), "{s:?}");
    }
    // No password stored (a passwordless `[[users]]` entry): nothing matches, not even "".
    let none = StoredPassword::parse("");
    assert!(!none.matches_cleartext(user, ""));
    assert!(!md5::md5_challenge_response_ok(
        &none,
        user,
        [1, 2, 3, 4],
        md5::md5_response(
            &md5::hex(&{
                use ::md5::{Digest, Md5};
                let mut h = Md5::new();
                h.update(user.as_bytes());
                h.finalize()
            }),
            [1, 2, 3, 4]
        )
        .as_bytes()
    ));
    // An md5 hash is salted with the user name.
    assert!(!StoredPassword::parse(&inner).matches_cleartext("bob", "s3cret"));
}

#[test]
fn the_running_user_has_a_name() {
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    let name = crate::net::os_user_name(uid).expect("a name");
    assert!(!name.is_empty());
    assert_eq!(crate::net::os_user_name(0).as_deref(), Some("root"));
    assert_eq!(crate::net::os_user_name(4_000_000_000), None);
}

/// Optional extension attributes after the nonce, in client-first and client-final, are
/// skipped as PostgreSQL skips them (RFC 5802: unknown attributes are ignored); those in
/// client-final are part of what the proof covers.
#[test]
fn optional_extensions_are_skipped() {
    use crate::auth::secret::{hmac_sha256, salted_password};
    use sha2::{Digest, Sha256};
    let secret = ScramSecret::from_password("pw", b"salt", 16);
    let mut server = ScramServer::with_nonce(secret, "SERVERNONCE");
    let server_first = server
        .client_first(SCRAM_SHA_256, b"n,,n=,r=abc,x=one,y=two")
        .expect("client-first with extensions");
    let without_proof = "c=biws,r=abcSERVERNONCE,z=three";
    let salted = salted_password("pw", b"salt", 16);
    let client_key = hmac_sha256(&salted, &[b"Client Key"]);
    let stored_key: [u8; 32] = Sha256::digest(client_key).into();
    let signature = hmac_sha256(
        &stored_key,
        &[
            b"n=,r=abc,x=one,y=two",
            b",",
            &server_first,
            b",",
            without_proof.as_bytes(),
        ],
    );
    let proof: Vec<u8> = client_key
        .iter()
        .zip(signature)
        .map(|(k, s)| k ^ s)
        .collect();
    let final_message = format!("{without_proof},p={}", STANDARD.encode(proof));
    let server_final = server
        .client_final(final_message.as_bytes())
        .expect("client-final with an extension, proven");
    assert!(server_final.starts_with(b"v="));
}
