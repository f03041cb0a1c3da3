//! This host's network addresses and their masks, for `hba_file`'s `samehost` and `samenet`,
//! read at each login that reaches such a line (as PostgreSQL reads them): an address added
//! since the start counts at once.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One address of a network interface, with its netmask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interface {
    pub addr: IpAddr,
    pub mask: IpAddr,
}

/// Every IPv4 and IPv6 address of this host's interfaces (`getifaddrs`).
pub fn interfaces() -> io::Result<Vec<Interface>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs sets `head` to a list it allocated, or fails and leaves it alone.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut p = head;
    while !p.is_null() {
        // SAFETY: `p` is a node of the list getifaddrs made, freed only below; its address
        // and netmask pointers are null or point at sockaddrs of the family they name.
        let (addr, mask, next) = unsafe {
            let ifa = &*p;
            (ip_of(ifa.ifa_addr), ip_of(ifa.ifa_netmask), ifa.ifa_next)
        };
        if let (Some(addr), Some(mask)) = (addr, mask) {
            out.push(Interface { addr, mask });
        }
        p = next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once; nothing points into it now.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// The IP address in a sockaddr, if it is an IPv4 or IPv6 one.
///
/// # Safety
/// `sa` is null or points at a sockaddr whose `sa_family` tells its real type.
unsafe fn ip_of(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    match i32::from((*sa).sa_family) {
        libc::AF_INET => {
            let sin = &*(sa as *const libc::sockaddr_in);
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                sin.sin_addr.s_addr,
            ))))
        }
        libc::AF_INET6 => {
            let sin6 = &*(sa as *const libc::sockaddr_in6);
            Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loopback_interface_is_listed_with_its_mask() {
        let all = interfaces().unwrap();
        let lo = all
            .iter()
            .find(|i| i.addr == IpAddr::V4(Ipv4Addr::LOCALHOST))
            .unwrap_or_else(|| panic!("no 127.0.0.1 in {all:?}"));
        assert_eq!(lo.mask, IpAddr::V4(Ipv4Addr::new(255, 0, 0, 0)));
    }
}
