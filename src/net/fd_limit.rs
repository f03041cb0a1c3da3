//! The process's limit on open files, and the share of it client connections may take.
//!
//! Every client connection and every server connection is a file descriptor. Connections that
//! are still logging in (or never will: sockets opened and left silent until
//! `startup_timeout`) must not take the descriptors the pools need to reach the servers: new
//! server connections, the health probes' and cancel requests' would fail with "Too many open
//! files", and logged-in clients with them. So client connections are admitted only up to a
//! share of the limit; past it they are refused as past `max_client_connections`.

/// Descriptors kept for what is neither a client nor a server connection of a pool: the
/// listeners, the HTTP endpoint's connections (up to 128), probes, cancel requests, the log,
/// the runtime's own.
const OTHER: u64 = 256;

/// Raises the soft limit on open files to the hard one, as Go's runtime and many servers do
/// (systemd starts services with 1024 soft and 524288 hard). Returns the soft limit then in
/// force; `None` when it is unlimited or cannot be read.
pub fn raise() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    if lim.rlim_cur < lim.rlim_max {
        let was = lim.rlim_cur;
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            tracing::info!(
                from = was,
                to = lim.rlim_max,
                "raised the open-file limit to its hard limit"
            );
            lim.rlim_cur = lim.rlim_max;
        }
    }
    (lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur)
}

/// How many client connections, logged in or logging in, a limit of `limit` open files leaves
/// room for, when up to `turned_away` more are being refused at any moment: a quarter of the
/// limit stays for server connections, and [`OTHER`] for the rest.
pub fn client_room(limit: Option<u64>, turned_away: usize) -> usize {
    let Some(limit) = limit else {
        return usize::MAX;
    };
    let room = limit - limit / 4;
    usize::try_from(room.saturating_sub(OTHER + turned_away as u64)).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_get_what_the_servers_and_the_rest_leave() {
        assert_eq!(client_room(None, 256), usize::MAX);
        // systemd's soft default: 768 - 256 - 256.
        assert_eq!(client_room(Some(1024), 256), 256);
        assert_eq!(client_room(Some(524_288), 256), 392_704);
        // Too small a limit for any: nobody is let in (and a warning says why).
        assert_eq!(client_room(Some(256), 256), 0);
    }
}
