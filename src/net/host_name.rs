//! A client's host name for `hba_file` lines that name hosts, verified as PostgreSQL verifies
//! it: the name a reverse lookup of the client's address gives (`getnameinfo`, a name
//! required), confirmed by a forward lookup of that name giving the address back. The forward
//! lookup is made only when the name matches a line (a client's own reverse zone cannot make
//! the proxy resolve names no line asks about). Looked up at each login that needs it, on
//! tokio's blocking threads (the system resolver blocks): at most [`MAX_LOOKUPS`] at once and
//! each within [`LOOKUP_TIMEOUT`]; a lookup refused or timed out gives no name, so host-name
//! lines do not match and the walk goes on, as after a failed lookup in PostgreSQL.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::auth::hba::unmapped;

/// Lookups running at once, at most (each holds a blocking thread).
pub const MAX_LOOKUPS: usize = 32;

/// How long one lookup may take (glibc's resolver retries for longer).
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

static LOOKUPS: Semaphore = Semaphore::const_new(MAX_LOOKUPS);

/// What is known of a client's host name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostName {
    /// The reverse lookup gave this name; the forward lookup has not been made yet.
    Reversed(String),
    /// The reverse lookup gave this name, and the forward lookup of it gave the address back.
    Verified(String),
    /// The reverse lookup gave this name, but the forward lookup did not give the address.
    Unconfirmed(String),
    /// No name (the reason: none registered, the lookup failed, timed out or was refused).
    Unknown(String),
}

/// The reverse lookup: [`HostName::Reversed`] or [`HostName::Unknown`].
pub async fn reverse(ip: IpAddr) -> HostName {
    let ip = unmapped(ip);
    match blocking(move || reverse_blocking(ip)).await {
        Ok(name) => HostName::Reversed(name),
        Err(why) => HostName::Unknown(why),
    }
}

/// The forward lookup of `name`: [`HostName::Verified`] when it gives `ip`, else
/// [`HostName::Unconfirmed`].
pub async fn confirm(name: String, ip: IpAddr) -> HostName {
    let ip = unmapped(ip);
    let query = name.clone();
    let addrs = blocking(move || {
        (query.as_str(), 0)
            .to_socket_addrs()
            .map(|a| a.map(|a| unmapped(a.ip())).collect::<Vec<_>>())
            .map_err(|e| e.to_string())
    })
    .await;
    match addrs {
        Ok(addrs) if addrs.contains(&ip) => HostName::Verified(name),
        _ => HostName::Unconfirmed(name),
    }
}

/// Runs `f` on a blocking thread, within the bounds above.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let permit = LOOKUPS
        .try_acquire()
        .map_err(|_| format!("more than {MAX_LOOKUPS} host-name lookups at once"))?;
    let task = tokio::task::spawn_blocking(move || {
        // (Held until the resolver returns, even after the login stopped waiting.)
        let _permit = permit;
        f()
    });
    match tokio::time::timeout(LOOKUP_TIMEOUT, task).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {LOOKUP_TIMEOUT:?}")),
    }
}

/// `getnameinfo` with `NI_NAMEREQD`: the name, or why there is none.
fn reverse_blocking(ip: IpAddr) -> Result<String, String> {
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

/// `text` as the system reads a numeric address (`getaddrinfo` with `AI_NUMERICHOST`, as
/// PostgreSQL reads `pg_hba.conf`'s): also `127.1`, octal and hexadecimal parts, a scope
/// (`fe80::1%lo`, dropped). `None`: not a numeric address (so a host name).
pub fn numeric_address(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse() {
        return Some(ip);
    }
    let c = std::ffi::CString::new(text).ok()?;
    // SAFETY: a zeroed addrinfo is a valid hints value (no flags, any family).
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_flags = libc::AI_NUMERICHOST;
    hints.ai_socktype = libc::SOCK_STREAM;
    let mut res: *mut libc::addrinfo = std::ptr::null_mut();
    // SAFETY: `c` is NUL-terminated; getaddrinfo sets `res` to a list it allocated when it
    // returns 0 (freed below), and never resolves a name with AI_NUMERICHOST.
    let rc = unsafe { libc::getaddrinfo(c.as_ptr(), std::ptr::null(), &hints, &mut res) };
    if rc != 0 || res.is_null() {
        return None;
    }
    // SAFETY: `res` is the list's first node; its ai_addr points at a sockaddr of the family
    // it names.
    let ip = unsafe { super::interfaces::ip_of((*res).ai_addr) };
    // SAFETY: `res` came from getaddrinfo and is freed once.
    unsafe { libc::freeaddrinfo(res) };
    ip
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_loopback_address_is_localhost_both_ways() {
        // /etc/hosts names 127.0.0.1 `localhost` on every Debian system.
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(reverse(ip).await, HostName::Reversed("localhost".into()));
        assert_eq!(
            reverse("::ffff:127.0.0.1".parse().unwrap()).await,
            HostName::Reversed("localhost".into())
        );
        assert_eq!(
            confirm("localhost".into(), ip).await,
            HostName::Verified("localhost".into())
        );
        // A name that does not lead back to the client's address is not its name.
        assert_eq!(
            confirm("localhost".into(), "192.0.2.7".parse().unwrap()).await,
            HostName::Unconfirmed("localhost".into())
        );
        assert_eq!(
            confirm("no-such-host.invalid".into(), ip).await,
            HostName::Unconfirmed("no-such-host.invalid".into())
        );
        // TEST-NET-1 has no name.
        assert!(matches!(
            reverse("192.0.2.7".parse().unwrap()).await,
            HostName::Unknown(_)
        ));
    }

    #[test]
    fn numeric_addresses_are_read_as_the_system_reads_them() {
        let ip = |s: &str| numeric_address(s).map(|a| a.to_string());
        assert_eq!(ip("10.1.2.3").as_deref(), Some("10.1.2.3"));
        assert_eq!(ip("127.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(ip("010.0.0.1").as_deref(), Some("8.0.0.1"));
        assert_eq!(ip("0x7f.0.0.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(ip("fe80::1%lo").as_deref(), Some("fe80::1"));
        assert_eq!(ip("::1").as_deref(), Some("::1"));
        assert_eq!(ip("db.example.com"), None);
        assert_eq!(ip("10.0.0.256"), None);
    }
}
