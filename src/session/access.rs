//! Who may log in from where: the `hba_file` line that decides a client's method (PostgreSQL's
//! refusals when none does, or it says `reject`), and the `peer` method's check of the
//! operating-system user at the other end of the unix socket.

use super::Fatal;
use crate::app::App;
use crate::auth::hba::{self, Hba, Method};
use crate::net::listener::Peer;
use crate::net::Stream;

/// The `hba_file` line for this client. FATAL 28000 with PostgreSQL's messages when no line
/// matches or the line says `reject`.
pub(super) fn decide(
    app: &App,
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
    let client = hba::Client {
        addr,
        tls: stream.is_tls(),
        user,
        database,
    };
    let decision = hba.decide(&client);
    if let Some(d) = decision.filter(|d| d.method != Method::Reject) {
        return Ok(d);
    }
    app.metrics.rejected("hba");
    let host = addr.map_or("[local]".to_owned(), |a| hba::unmapped(a).to_string());
    let encryption = if stream.is_tls() {
        "SSL encryption"
    } else {
        "no encryption"
    };
    let what = match decision {
        Some(d) => {
            tracing::info!(line = d.line, "hba_file rejects the login");
            "pg_hba.conf rejects connection"
        }
        None => "no pg_hba.conf entry",
    };
    Err(Fatal::new(
        "28000",
        format!(
            "{what} for host \"{host}\", user \"{user}\", database \"{database}\", {encryption}"
        ),
    ))
}

/// `peer`: the operating-system user at the other end of the socket must be `user`.
pub(super) fn check_peer(stream: &Stream, user: &str) -> Result<(), Fatal> {
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
