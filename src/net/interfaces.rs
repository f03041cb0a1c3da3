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
        if let Some(addr) = addr {
            out.push(Interface {
                addr,
                mask: usable_mask(addr, mask),
            });
        }
        p = next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once; nothing points into it now.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// The interface's mask as PostgreSQL takes it: none, one of another family, or all zeros
/// (which would make every address "the same network") count as the address alone.
fn usable_mask(addr: IpAddr, mask: Option<IpAddr>) -> IpAddr {
    match (addr, mask) {
        (IpAddr::V4(_), Some(m @ IpAddr::V4(v4))) if !v4.is_unspecified() => m,
        (IpAddr::V6(_), Some(m @ IpAddr::V6(v6))) if !v6.is_unspecified() => m,
        (IpAddr::V4(_), _) => IpAddr::V4(Ipv4Addr::BROADCAST),
        (IpAddr::V6(_), _) => IpAddr::V6(Ipv6Addr::from(u128::MAX)),
    }
}

/// The IP address in a sockaddr, if it is an IPv4 or IPv6 one.
///
/// # Safety
/// `sa` is null or points at a sockaddr whose `sa_family` tells its real type.
pub(super) unsafe fn ip_of(sa: *const libc::sockaddr) -> Option<IpAddr> {
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

    #[test]
    fn masks_that_would_match_everything_count_as_the_address_alone() {
        let v4 = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        let ones4 = IpAddr::V4(Ipv4Addr::BROADCAST);
        let ones6 = IpAddr::V6(Ipv6Addr::from(u128::MAX));
        let m16 = IpAddr::V4(Ipv4Addr::new(255, 255, 0, 0));
        assert_eq!(usable_mask(v4, Some(m16)), m16);
        assert_eq!(usable_mask(v4, None), ones4);
        assert_eq!(
            usable_mask(v4, Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED))),
            ones4
        );
        assert_eq!(usable_mask(v4, Some(ones6)), ones4);
        assert_eq!(
            usable_mask(v6, Some(IpAddr::V6(Ipv6Addr::UNSPECIFIED))),
            ones6
        );
        assert_eq!(usable_mask(v6, Some(m16)), ones6);
    }
}
