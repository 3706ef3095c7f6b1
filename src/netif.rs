//! Network interfaces: which local interface holds an address, and whether
//! it is up. The migration-network check needs it to tell a route through
//! a dead link from a usable one.

use std::ffi::CStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A local interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iface {
    pub name: String,
    /// Administratively up and with carrier (IFF_UP and IFF_RUNNING): a
    /// veth whose peer is down is up but has no carrier, and the kernel
    /// keeps routing through it.
    pub up: bool,
}

/// The address in a `sockaddr`, for the IPv4 and IPv6 families.
///
/// # Safety
/// `sa` must be null or point to a valid `sockaddr` whose real size matches
/// its `sa_family` (as getifaddrs(3) guarantees for `ifa_addr`).
unsafe fn sockaddr_ip(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: `sa` is non-null and valid per this function's contract; the
    // family tells which larger struct it really is.
    unsafe {
        match i32::from((*sa).sa_family) {
            libc::AF_INET => {
                let sin = &*sa.cast::<libc::sockaddr_in>();
                Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    sin.sin_addr.s_addr,
                ))))
            }
            libc::AF_INET6 => {
                let sin6 = &*sa.cast::<libc::sockaddr_in6>();
                Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
            }
            _ => None,
        }
    }
}

/// The interface that holds `addr`, if any.
pub fn interface_of(addr: IpAddr) -> Option<Iface> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head into `list` and returns 0, or
    // returns -1 and leaves it untouched; it has no other preconditions.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return None;
    }
    let mut found = None;
    let mut cur = list;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, which
        // stays valid until freeifaddrs below; its `ifa_addr` is null or a
        // sockaddr of its family, and `ifa_name` a NUL-terminated string.
        let (ip, name, flags, next) = unsafe {
            let ifa = &*cur;
            (
                sockaddr_ip(ifa.ifa_addr),
                CStr::from_ptr(ifa.ifa_name).to_string_lossy().into_owned(),
                ifa.ifa_flags,
                ifa.ifa_next,
            )
        };
        if ip == Some(addr) {
            let up = libc::IFF_UP as u32 | libc::IFF_RUNNING as u32;
            found = Some(Iface {
                name,
                up: flags & up == up,
            });
            break;
        }
        cur = next;
    }
    // SAFETY: `list` came from a successful getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_lo_and_up() {
        let lo = interface_of(IpAddr::V4(Ipv4Addr::LOCALHOST)).unwrap();
        assert_eq!(lo.name, "lo");
        assert!(lo.up);
        assert_eq!(interface_of("192.0.2.77".parse().unwrap()), None);
    }
}
