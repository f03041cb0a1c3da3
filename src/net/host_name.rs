//! A client's host name for `hba_file` lines that name hosts, verified as PostgreSQL verifies
//! it: the name a reverse lookup of the client's address gives (`getnameinfo`, a name
//! required), if a forward lookup of that name gives the address back. Looked up at each
//! login that reaches such a line, on tokio's blocking threads (the system resolver blocks);
//! the login's `startup_timeout` bounds the wait.

use std::net::{IpAddr, SocketAddr};

/// How the lookup of a client's host name ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostName {
    /// The reverse lookup gave this name, and the forward lookup of it gave the address back.
    Verified(String),
    /// The reverse lookup gave this name, but the forward lookup did not give the address.
    Unconfirmed(String),
    /// No name (or the lookup failed: the reason).
    Unknown(String),
}

impl HostName {
    /// The name lines may match: only a verified one.
    pub fn verified(&self) -> Option<&str> {
        match self {
            HostName::Verified(n) => Some(n),
            _ => None,
        }
    }
}

/// Looks up `ip`'s host name and confirms it.
pub async fn look_up(ip: IpAddr) -> HostName {
    let ip = crate::auth::hba::unmapped(ip);
    let name = match tokio::task::spawn_blocking(move || reverse(ip)).await {
        Ok(Ok(name)) => name,
        Ok(Err(why)) => return HostName::Unknown(why),
        Err(e) => return HostName::Unknown(e.to_string()),
    };
    let confirmed = match tokio::net::lookup_host((name.as_str(), 0)).await {
        Ok(mut addrs) => addrs.any(|a| crate::auth::hba::unmapped(a.ip()) == ip),
        Err(_) => false,
    };
    if confirmed {
        HostName::Verified(name)
    } else {
        HostName::Unconfirmed(name)
    }
}

/// `getnameinfo` with `NI_NAMEREQD`: the name, or why there is none.
fn reverse(ip: IpAddr) -> Result<String, String> {
    let sa = socket2::SockAddr::from(SocketAddr::new(ip, 0));
    let mut host = [0 as libc::c_char; libc::NI_MAXHOST as usize];
    // SAFETY: `sa` is a valid sockaddr of the length given; getnameinfo writes at most
    // `host.len()` bytes into `host`, NUL-terminated on success, and nothing else.
    let rc = unsafe {
        libc::getnameinfo(
            sa.as_ptr().cast(),
            sa.len(),
            host.as_mut_ptr(),
            host.len() as libc::socklen_t,
            std::ptr::null_mut(),
            0,
            libc::NI_NAMEREQD,
        )
    };
    if rc != 0 {
        // SAFETY: gai_strerror returns a static NUL-terminated string for any code.
        let why = unsafe { std::ffi::CStr::from_ptr(libc::gai_strerror(rc)) };
        return Err(why.to_string_lossy().into_owned());
    }
    // SAFETY: on success `host` holds a NUL-terminated string.
    let name = unsafe { std::ffi::CStr::from_ptr(host.as_ptr()) };
    Ok(name.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_loopback_address_is_localhost_both_ways() {
        // /etc/hosts names 127.0.0.1 `localhost` on every Debian system.
        assert_eq!(
            look_up("127.0.0.1".parse().unwrap()).await,
            HostName::Verified("localhost".into())
        );
        assert_eq!(
            look_up("::ffff:127.0.0.1".parse().unwrap())
                .await
                .verified(),
            Some("localhost")
        );
    }
}
