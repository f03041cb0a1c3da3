//! Who may log in from where: the `hba_file` line that decides a client's method (PostgreSQL's
//! refusals when none does, or it says `reject`), and the `peer` method's check of the
//! operating-system user at the other end of the unix socket.

use super::Fatal;
use crate::app::App;
use crate::auth::hba::{self, Hba, Method};
use crate::auth::ident::{IdentMap, NeedsRoles};
use crate::config::Loaded;
use crate::net::host_name::{self, HostName};
use crate::net::interfaces::Interface;
use crate::net::listener::Peer;
use crate::net::Stream;

/// The `hba_file` line for this client. FATAL 28000 with PostgreSQL's messages when no line
/// matches or the line says `reject`. The client's role membership is read from a server, and
/// its host name looked up, only when a line reached needs it (`+role`, `samerole`; a host
/// name).
pub(super) async fn decide(
    app: &App,
    config: &Loaded,
    hba: &Hba,
    stream: &Stream,
    from: Peer,
    user: &str,
    database: &str,
) -> Result<hba::Decision, Fatal> {
    let addr = match from {
        Peer::Tcp(a) => Some(a.ip()),
        Peer::Unix => None,
    };
    // What the walk asks for, looked up once each.
    let mut roles: Option<Vec<String>> = None;
    let mut host: Option<HostName> = None;
    let decision = loop {
        let client = hba::Client {
            addr,
            tls: stream.is_tls(),
            user,
            database,
            roles: roles.as_deref(),
            host_name: host.as_ref(),
        };
        match hba.decide(&client, &local_interfaces) {
            Ok(d) => break d,
            Err(hba::Needs::Roles) => roles = Some(roles_of(app, config, user).await?),
            Err(hba::Needs::HostName) => {
                let ip = addr.expect("host name lines match TCP clients only");
                host = Some(host_name::reverse(ip).await);
            }
            Err(hba::Needs::HostConfirmed) => {
                let ip = addr.expect("host name lines match TCP clients only");
                host = Some(match host.take() {
                    Some(HostName::Reversed(name)) => host_name::confirm(name, ip).await,
                    // (Asked only after a reversed name matched a line.)
                    other => other.unwrap_or_else(|| HostName::Unknown("no name".into())),
                });
            }
        }
    };
    let rejected_by = match decision {
        Some(d) if d.method != Method::Reject => return Ok(d),
        d => d.map(|d| d.at),
    };
    app.metrics.rejected("hba");
    let from = addr.map_or("[local]".to_owned(), |a| hba::unmapped(a).to_string());
    let encryption = if stream.is_tls() {
        "SSL encryption"
    } else {
        "no encryption"
    };
    // (PostgreSQL tells the host-name lookup's outcome in the error's detail; here the log.)
    let what = match rejected_by {
        Some(line) => {
            tracing::info!(line = %line, host_name = ?host, "hba_file rejects the login");
            "pg_hba.conf rejects connection"
        }
        None => {
            tracing::info!(host_name = ?host, "no hba_file line for the login");
            "no pg_hba.conf entry"
        }
    };
    Err(Fatal::new(
        "28000",
        format!(
            "{what} for host \"{from}\", user \"{user}\", database \"{database}\", {encryption}"
        ),
    ))
}

/// This host's addresses (`samehost`, `samenet`); none when they cannot be read, which
/// PostgreSQL logs and treats the same way.
fn local_interfaces() -> Vec<Interface> {
    crate::net::interfaces::interfaces().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "hba_file: error enumerating network interfaces");
        Vec::new()
    })
}

/// Whether the `ident_file` map `map` lets the system user `system` log in as `user` (logged
/// when it does not, as PostgreSQL logs it). The user's role membership is read only when a
/// `+role` line of the map is reached (FATAL 57P03 when it cannot be).
pub(super) async fn mapped(
    app: &App,
    config: &Loaded,
    (ident, map): (&IdentMap, &str),
    system: &str,
    user: &str,
) -> Result<bool, Fatal> {
    let mut roles: Option<Vec<String>> = None;
    let ok = loop {
        match ident.permits(map, system, user, roles.as_deref()) {
            Ok(ok) => break ok,
            Err(NeedsRoles) => roles = Some(roles_of(app, config, user).await?),
        }
    };
    if !ok {
        tracing::info!(
            map,
            system_user = system,
            user,
            "no match in usermap for the user authenticated as the system user"
        );
    }
    Ok(ok)
}

/// The roles `user` is a member of, as PostgreSQL looks the role up: the name cut to 63 bytes
/// (cut inside a character, it names no role).
async fn roles_of(app: &App, config: &Loaded, user: &str) -> Result<Vec<String>, Fatal> {
    match std::str::from_utf8(hba::cut(user)) {
        Ok(name) => app.memberships.of(app, config, name).await,
        Err(_) => Ok(Vec::new()),
    }
}

/// `peer`: the operating-system user at the other end of the socket must be `user`, or the
/// line's `map=` must pair the two.
pub(super) async fn check_peer(
    app: &App,
    config: &Loaded,
    stream: &Stream,
    user: &str,
    map: Option<(&IdentMap, &str)>,
) -> Result<(), Fatal> {
    let failed = || {
        Fatal::new(
            "28000",
            format!("Peer authentication failed for user \"{user}\""),
        )
    };
    let Stream::Unix(s) = stream else {
        return Err(failed());
    };
    let uid = match s.peer_cred() {
        Ok(c) => c.uid(),
        Err(e) => {
            tracing::warn!(error = %e, "peer authentication: cannot read the socket's credentials");
            return Err(failed());
        }
    };
    let Some(os_user) = crate::net::os_user_name(uid) else {
        tracing::warn!(uid, "peer authentication: could not look up local user ID");
        return Err(failed());
    };
    if let Some(map) = map {
        return if mapped(app, config, map, &os_user, user).await? {
            Ok(())
        } else {
            Err(failed())
        };
    }
    if os_user != user {
        tracing::info!(
            user,
            os_user = %os_user,
            "peer authentication: the socket's user is not the user asked for"
        );
        return Err(failed());
    }
    Ok(())
}
