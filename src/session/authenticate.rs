//! Authentication of a client against the configured users (or a role's server password,
//! looked up with `[auth_query]`), by the `hba_file` line or the user's `auth` method.

use std::sync::Arc;

use bytes::BytesMut;

use super::access;
use super::lookup;
use super::settings::Settings;
use super::startup::requested_database;
use super::Fatal;
use crate::app::App;
use crate::auth::hba::{self, Method};
use crate::auth::ident::IdentMap;
use crate::auth::{self, ScramServer, ServerCredential, StoredPassword};
use crate::config::{AuthMethod, ClientCertMode, Loaded, User};
use crate::net::listener::Peer;
use crate::net::tls::TlsPeer;
use crate::net::{self, Stream};
use crate::protocol::options;
use crate::protocol::startup::{self, Startup};
use crate::protocol::{encode, tag};

/// What the startup phase produced.
pub struct Login {
    /// The authenticated user.
    pub user: Arc<User>,
    /// The database asked for.
    pub database: String,
    /// Settings from the startup packet (including `options`).
    pub startup: Settings,
}

/// Validates the startup packet and authenticates the client.
pub async fn authenticate(
    app: &App,
    stream: &mut Stream,
    buf: &mut BytesMut,
    s: &Startup,
    peer: TlsPeer,
    from: Peer,
) -> Result<Login, Fatal> {
    let mut out = BytesMut::new();
    let unsupported: Vec<&str> = s
        .params
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| k.starts_with("_pq_."))
        .collect();
    if s.minor > 0 || !unsupported.is_empty() {
        // The field is the newest protocol version supported (3.0), as PostgreSQL sends it.
        encode::negotiate_protocol_version(&mut out, 3 << 16, &unsupported);
    }
    // Names cut to what PostgreSQL keeps of them (63 bytes), as it cuts them before anything
    // else: a longer name logs in as its first 63 bytes.
    let user_name = s.param("user").filter(|u| !u.is_empty()).ok_or_else(|| {
        Fatal::new(
            "28000",
            "no PostgreSQL user name specified in startup packet",
        )
    })?;
    let user_name = startup::name_cut(user_name);
    // As PostgreSQL reads it: a boolean, or `database` (logical replication).
    match s.param("replication").map(|r| (r, startup::parse_bool(r))) {
        None | Some((_, Some(false))) => {}
        Some((_, Some(true))) => {
            return Err(Fatal::new(
                "0A000",
                "switchyard does not proxy replication connections",
            ))
        }
        Some(("database", None)) => {
            return Err(Fatal::new(
                "0A000",
                "switchyard does not proxy replication connections",
            ))
        }
        Some((r, None)) => {
            return Err(Fatal::new(
                "22023",
                format!("invalid value for parameter \"replication\": \"{r}\""),
            ))
        }
    }
    let database = requested_database(s).unwrap_or(user_name).to_owned();
    let config = app.config.load_full();
    // As PostgreSQL: the host-based rules before the startup options are applied.
    let hba = match &config.hba {
        Some(hba) => {
            Some(access::decide(app, &config, hba, stream, from, user_name, &database).await?)
        }
        None => None,
    };
    let hba_method = hba.as_ref().map(|d| d.method);
    // PostgreSQL applies `options` switches first and then the startup parameters, so a
    // parameter given both ways takes the startup parameter's value.
    let options = match s.param("options") {
        Some(opts) => options::parse_options(opts).map_err(|m| Fatal::new("42601", m))?,
        None => Vec::new(),
    };
    let settings = Settings::from_startup(
        options.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        s.params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    )
    .map_err(|m| Fatal::new("42704", m))?;
    let configured = config.users.get(user_name).cloned();
    // Client certificates first, as PostgreSQL checks `clientcert` before the method.
    let cert_auth = match hba_method {
        Some(m) => m == Method::Cert,
        None => configured
            .as_ref()
            .is_some_and(|u| u.config.auth == AuthMethod::Cert),
    };
    // Not on the unix socket, which is never encrypted (as `clientcert` is an option of
    // PostgreSQL's `hostssl` lines only).
    let client_cert = config
        .tls
        .as_ref()
        .filter(|_| !stream.is_unix())
        .map_or(ClientCertMode::Optional, |t| t.client_cert);
    // An `hba_file` line's `clientcert=` adds to it (its lines are `hostssl` ones).
    let client_cert = match hba.as_ref().and_then(|d| d.clientcert) {
        Some(hba::CertCheck::VerifyFull) => ClientCertMode::VerifyFull,
        Some(hba::CertCheck::VerifyCa) if client_cert == ClientCertMode::Optional => {
            ClientCertMode::VerifyCa
        }
        _ => client_cert,
    };
    if (cert_auth || client_cert != ClientCertMode::Optional) && peer.cert.is_none() {
        app.metrics.rejected("client_cert");
        return Err(Fatal::new(
            "28000",
            "connection requires a valid client certificate",
        ));
    }
    // A role not in [[users]]: its password as the servers have it (auth_query), if on.
    let looked_up = match (&configured, &config.config.auth_query) {
        (None, Some(query)) => lookup::password(app, &config, query, user_name).await?,
        _ => None,
    };
    let stored = configured
        .as_ref()
        .map(|u| &u.stored)
        .or(looked_up.as_ref());
    let check = match (hba_method, &configured, stored) {
        (Some(Method::Trust | Method::Cert), _, _) => Check::Trust,
        (Some(Method::Peer), _, _) => {
            let map = usermap(&config, hba.as_ref());
            access::check_peer(app, &config, stream, user_name, map).await?;
            Check::Trust
        }
        (Some(Method::Password), _, stored) => Check::Cleartext(stored),
        // md5 with a password stored as a SCRAM verifier runs SCRAM, as in PostgreSQL.
        (Some(Method::Md5), _, Some(s @ (StoredPassword::Md5(_) | StoredPassword::Plain(_)))) => {
            Check::Md5(s)
        }
        (Some(_), Some(u), _) => Check::Scram(u.scram.clone()),
        (Some(_), None, s) => Check::Scram(looked_up_verifier(s).await),
        (None, Some(u), _) => match u.config.auth {
            AuthMethod::Trust | AuthMethod::Cert => Check::Trust,
            AuthMethod::Md5 => Check::Md5(&u.stored),
            AuthMethod::ScramSha256 => Check::Scram(u.scram.clone()),
        },
        (None, None, Some(stored @ StoredPassword::Md5(_))) => Check::Md5(stored),
        (None, None, Some(stored)) => Check::Scram(looked_up_verifier(Some(stored)).await),
        (None, None, None) => Check::Scram(None),
    };
    let failed = || {
        Fatal::new(
            "28P01",
            format!("password authentication failed for user \"{user_name}\""),
        )
    };
    let limit = 8192;
    let mut proven = None;
    let mut cleartext = None;
    // How PostgreSQL words a failure of this method (`auth_failed`), for the certificate check
    // after it.
    let method_failed = match (&check, hba_method) {
        (Check::Trust, Some(Method::Peer)) => Fatal::new(
            "28000",
            format!("Peer authentication failed for user \"{user_name}\""),
        ),
        (Check::Trust, _) => Fatal::new(
            "28000",
            format!("\"trust\" authentication failed for user \"{user_name}\""),
        ),
        _ => failed(),
    };
    match check {
        Check::Trust => {}
        Check::Cleartext(stored) => {
            encode::auth_cleartext(&mut out);
            send(stream, &mut out).await?;
            let body = read_password(stream, buf, limit).await?;
            let given = password_of(&body)?;
            // (Stored passwords are text: a password that is not UTF-8 matches none.)
            let given = std::str::from_utf8(given).map_err(|_| failed())?;
            if !cleartext_matches(stored, user_name, given).await {
                return Err(failed());
            }
            cleartext = Some(given.to_owned());
        }
        Check::Md5(stored) => {
            let salt: [u8; 4] = rand::random();
            encode::auth_md5(&mut out, salt);
            send(stream, &mut out).await?;
            let body = read_password(stream, buf, limit).await?;
            let response = password_of(&body)?;
            if !auth::md5_challenge_response_ok(stored, user_name, salt, response) {
                return Err(failed());
            }
        }
        Check::Scram(secret) => {
            let scram = match secret {
                Some(secret) => ScramServer::new(secret),
                None => ScramServer::new_mock(user_name, &app.mock_secret),
            };
            let mut scram = scram.with_channel_binding(peer.end_point.clone());
            encode::auth_sasl(&mut out, scram.mechanisms());
            send(stream, &mut out).await?;
            let body = read_password(stream, buf, limit).await?;
            let (mechanism, data) =
                auth::parse_sasl_initial(&body).map_err(|e| scram_fatal(e, user_name))?;
            let later;
            let data = match data {
                Some(data) => data,
                None => {
                    // No initial response: an empty challenge, answered with what it would
                    // have carried (PostgreSQL's `scram_exchange`).
                    scram
                        .select(mechanism)
                        .map_err(|e| scram_fatal(e, user_name))?;
                    encode::auth_sasl_continue(&mut out, &[]);
                    send(stream, &mut out).await?;
                    later = read_password(stream, buf, limit).await?;
                    &later[..]
                }
            };
            let first = scram
                .client_first(mechanism, data)
                .map_err(|e| scram_fatal(e, user_name))?;
            encode::auth_sasl_continue(&mut out, &first);
            send(stream, &mut out).await?;
            let body = read_password(stream, buf, limit).await?;
            let last = scram
                .client_final(&body)
                .map_err(|e| scram_fatal(e, user_name))?;
            encode::auth_sasl_final(&mut out, &last);
            proven = scram.proven_keys();
        }
    }
    if cert_auth || client_cert == ClientCertMode::VerifyFull {
        // The subject's common name, or its whole DN on an `hba_file` line with
        // `clientname=DN`, for that line's own check (`cert`, `clientcert=verify-full`; not
        // `[tls] client_cert`'s).
        let by_dn = hba.as_ref().is_some_and(|d| {
            d.clientname == hba::CertName::Dn
                && (cert_auth || d.clientcert == Some(hba::CertCheck::VerifyFull))
        });
        let name = peer.cert.as_ref().and_then(|c| {
            if by_dn {
                c.dn.as_deref()
            } else {
                c.cn.as_deref()
            }
        });
        // A `cert` line's `map=` pairs names; otherwise the name must be the user's.
        let named = match (name, usermap(&config, hba.as_ref()).filter(|_| cert_auth)) {
            (Some(name), Some(map)) => access::mapped(app, &config, map, name, user_name).await?,
            (name, _) => name == Some(user_name),
        };
        if !named {
            tracing::warn!(
                user = user_name,
                certificate_name = ?name,
                clientname = if by_dn { "DN" } else { "CN" },
                "the client certificate's name is not the user name"
            );
            app.metrics.rejected("client_cert");
            if cert_auth {
                return Err(Fatal::new(
                    "28000",
                    format!("certificate authentication failed for user \"{user_name}\""),
                ));
            }
            // As PostgreSQL: the mismatch is for the log; the client learns only that its
            // login failed, as it would for a wrong password (telling the two apart would
            // confirm the password to a holder of any certificate from the authority).
            tracing::warn!(
                user = user_name,
                "certificate validation (clientcert=verify-full) failed: name mismatch"
            );
            return Err(method_failed);
        }
    }
    let user = match (configured, looked_up) {
        (Some(u), _) => u,
        (None, Some(stored)) => {
            // The servers take what the client proved: the password's SCRAM keys, its md5
            // hash, or a clear-text password the lookup returned.
            let server = match (&stored, proven) {
                _ if cleartext.is_some() => {
                    ServerCredential::Password(cleartext.take().unwrap_or_default())
                }
                (StoredPassword::Plain(p), _) => ServerCredential::Password(p.clone()),
                (StoredPassword::Md5(hex), _) => ServerCredential::Md5(hex.clone()),
                (StoredPassword::Scram(_), Some(keys)) => ServerCredential::Scram(keys),
                // Let in without a SCRAM exchange (an `hba_file` trust, peer or cert line):
                // the verifier cannot answer the servers.
                (StoredPassword::Scram(_), None) if hba_method.is_some() => {
                    return Err(Fatal::new(
                        "28000",
                        format!(
                            "switchyard cannot log in to the servers as \"{user_name}\": [auth_query] returned a SCRAM verifier, which only a SCRAM login can use"
                        ),
                    ))
                }
                (StoredPassword::Scram(_), None) => return Err(failed()),
            };
            let user = Arc::new(User::looked_up(user_name, stored, server));
            app.pools.learn(user.clone());
            user
        }
        // Let in by an `hba_file` line without a password: said as PostgreSQL says it.
        (None, None)
            if matches!(
                hba_method,
                Some(Method::Trust | Method::Peer | Method::Cert)
            ) =>
        {
            return Err(Fatal::new(
                "28000",
                format!("role \"{user_name}\" does not exist"),
            ))
        }
        (None, None) => return Err(failed()),
    };
    encode::auth_ok(&mut out);
    send(stream, &mut out).await?;
    Ok(Login {
        user,
        database,
        startup: settings,
    })
}

/// How a client proves who it is.
enum Check<'a> {
    /// No exchange (`trust`, `peer`, and `cert`, whose certificate is checked on its own).
    Trust,
    /// The password in clear text, checked against this one (none: always refused).
    Cleartext(Option<&'a StoredPassword>),
    /// An md5 challenge, checked against this password.
    Md5(&'a StoredPassword),
    /// A SCRAM-SHA-256 exchange with this verifier; a mock one that fails without.
    Scram(Option<auth::ScramSecret>),
}

fn scram_fatal(e: auth::AuthError, user: &str) -> Fatal {
    match e.sqlstate() {
        "28P01" => Fatal::new(
            "28P01",
            format!("password authentication failed for user \"{user}\""),
        ),
        code => Fatal::new(code, e.to_string()),
    }
}

async fn send(stream: &mut Stream, out: &mut BytesMut) -> Result<(), Fatal> {
    net::send_all(stream, out).await.map_err(Fatal::Io)?;
    out.clear();
    Ok(())
}

/// Reads a PasswordMessage-family message (`p`) and returns its body.
async fn read_password(
    stream: &mut Stream,
    buf: &mut BytesMut,
    limit: usize,
) -> Result<BytesMut, Fatal> {
    let (t, mut frame) =
        net::read_message(stream, buf, limit)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::InvalidData => Fatal::protocol(e.to_string()),
                _ => Fatal::Io(e),
            })?;
    if t != tag::PASSWORD {
        return Err(Fatal::protocol(format!(
            "expected password response, got message type {:?}",
            t as char
        )));
    }
    Ok(frame.split_off(5))
}

/// The `ident_file` map the deciding `hba_file` line names (`map=`), with the file.
fn usermap<'a>(
    config: &'a Loaded,
    hba: Option<&'a hba::Decision>,
) -> Option<(&'a IdentMap, &'a str)> {
    let map = hba?.map.as_deref()?;
    Some((config.ident.as_deref()?, map))
}

/// Whether `given`, a password sent in clear text, is the one `stored`. Against a SCRAM
/// verifier that takes its key derivation, as many rounds as the verifier says: run off the
/// event loop (every other client waits on it otherwise), and refused past
/// [`MAX_ITERATIONS`](crate::auth::secret::MAX_ITERATIONS) (a role can store any count with
/// `ALTER ROLE ... PASSWORD 'SCRAM-SHA-256$2000000000:...'`, and each login attempt would
/// cost minutes of CPU).
/// The password of a password packet (clear text or an md5 answer), read as PostgreSQL reads
/// one: a single NUL-terminated string (else 08P01), not empty (PostgreSQL refuses an empty
/// password whatever is stored).
fn password_of(body: &[u8]) -> Result<&[u8], Fatal> {
    let given = body
        .strip_suffix(&[0])
        .filter(|p| !p.contains(&0))
        .ok_or_else(|| Fatal::protocol("invalid password packet size"))?;
    if given.is_empty() {
        return Err(Fatal::new("28P01", "empty password returned by client"));
    }
    Ok(given)
}

async fn cleartext_matches(stored: Option<&StoredPassword>, user: &str, given: &str) -> bool {
    use crate::auth::secret::MAX_ITERATIONS;
    match stored {
        None => false,
        Some(StoredPassword::Scram(s)) if s.iterations > MAX_ITERATIONS => {
            tracing::warn!(
                user,
                iterations = s.iterations,
                max = MAX_ITERATIONS,
                "the role's SCRAM verifier asks for more iterations than switchyard derives: password login refused"
            );
            false
        }
        Some(s @ StoredPassword::Scram(_)) => {
            let (s, user, given) = (s.clone(), user.to_owned(), given.to_owned());
            tokio::task::spawn_blocking(move || s.matches_cleartext(&user, &given))
                .await
                .unwrap_or(false)
        }
        Some(s) => s.matches_cleartext(user, given),
    }
}

/// The SCRAM verifier for a password `[auth_query]` looked up. One in clear text (a role
/// from before SCRAM, a custom query) is derived anew at each login, [`DEFAULT_ITERATIONS`]
/// HMACs: off the event loop, where a stream of logins for such a role would hold up every
/// other client.
///
/// [`DEFAULT_ITERATIONS`]: crate::auth::secret::DEFAULT_ITERATIONS
async fn looked_up_verifier(stored: Option<&StoredPassword>) -> Option<auth::ScramSecret> {
    match stored? {
        StoredPassword::Plain(p) if !p.is_empty() => {
            let p = p.clone();
            tokio::task::spawn_blocking(move || auth::ScramSecret::generate(&p))
                .await
                .ok()
        }
        s => s.scram_secret(),
    }
}

#[cfg(test)]
mod cleartext_tests {
    use super::*;
    use crate::auth::secret::ScramSecret;

    #[tokio::test]
    async fn cleartext_against_a_scram_verifier() {
        let v = |i: u32| StoredPassword::Scram(ScramSecret::from_password("pw", b"salt", i));
        assert!(cleartext_matches(Some(&v(4096)), "u", "pw").await);
        assert!(!cleartext_matches(Some(&v(4096)), "u", "other").await);
        assert!(!cleartext_matches(None, "u", "pw").await);
        // A verifier asking for two billion rounds is refused at once, not derived.
        let mut huge = ScramSecret::from_password("pw", b"salt", 1);
        huge.iterations = 2_000_000_000;
        let huge = StoredPassword::Scram(huge);
        let check = cleartext_matches(Some(&huge), "u", "pw");
        let r = tokio::time::timeout(std::time::Duration::from_secs(5), check).await;
        assert_eq!(r, Ok(false));
    }
}
