//! Network interfaces: which local interface holds an address, whether it
//! is up, and whether an address is this node's own. The migration-network
//! check needs them to tell a route through a dead link from a usable one,
//! and a peer address from one that would send the copy back to ourselves.

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

/// One address of a local interface: what the walk in `holding` shows.
struct Entry<'a> {
    name: &'a CStr,
    flags: libc::c_uint,
}

/// Applies `f` to the first local interface address equal to `addr`, if
/// any. An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`) is matched as the
/// IPv4 address it stands for: a dual-stack socket sends to that one.
/// None also when the interfaces cannot be listed.
fn holding<T>(addr: IpAddr, f: impl FnOnce(&Entry<'_>) -> T) -> Option<T> {
    let addr = addr.to_canonical();
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
        // stays valid until freeifaddrs below (`entry` and its borrowed
        // name do not outlive this iteration); its `ifa_addr` is null or a
        // sockaddr of its family, and `ifa_name` a NUL-terminated string.
        let (ip, entry, next) = unsafe {
            let ifa = &*cur;
            (
                sockaddr_ip(ifa.ifa_addr),
                Entry {
                    name: CStr::from_ptr(ifa.ifa_name),
                    flags: ifa.ifa_flags,
                },
                ifa.ifa_next,
            )
        };
        if ip == Some(addr) {
            found = Some(f(&entry));
            break;
        }
        cur = next;
    }
    // SAFETY: `list` came from a successful getifaddrs and is freed once;
    // nothing borrowed from it is left.
    unsafe { libc::freeifaddrs(list) };
    found
}

/// The interface that holds `addr`, if any.
pub fn interface_of(addr: IpAddr) -> Option<Iface> {
    holding(addr, |e| {
        let up = libc::IFF_UP as libc::c_uint | libc::IFF_RUNNING as libc::c_uint;
        Iface {
            name: e.name.to_string_lossy().into_owned(),
            up: e.flags & up == up,
        }
    })
}

/// Whether a local interface holds `addr`: a peer name that resolves to
/// one of this node's own addresses would send the copy to ourselves.
/// False when the interfaces cannot be listed: the route and connect
/// checks still stand between such an address and the copy.
pub fn is_local(addr: IpAddr) -> bool {
    holding(addr, |_| ()).is_some()
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

    #[test]
    fn local_addresses() {
        assert!(is_local(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert!(is_local("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!is_local("192.0.2.77".parse().unwrap()));
        assert!(!is_local("2001:db8::77".parse().unwrap()));
    }
}
