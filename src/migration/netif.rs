//! Network interfaces: which local interface holds an address, whether it
//! is up, and whether an address is this node's own. The migration-network
//! check needs them to tell a route through a dead link from a usable one,
//! and a peer address from one that would send the copy back to ourselves.

use std::net::IpAddr;

use nix::ifaddrs::getifaddrs;
use nix::net::if_::InterfaceFlags;

/// A local interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iface {
    pub name: String,
    /// Administratively up and with carrier (IFF_UP and IFF_RUNNING): a
    /// veth whose peer is down is up but has no carrier, and the kernel
    /// keeps routing through it.
    pub up: bool,
}

/// The first local interface address equal to `addr`, as (interface
/// name, flags), if any. An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`)
/// is matched as the IPv4 address it stands for: a dual-stack socket sends
/// to that one. None also when the interfaces cannot be listed.
fn holding(addr: IpAddr) -> Option<(String, InterfaceFlags)> {
    let addr = addr.to_canonical();
    getifaddrs().ok()?.find_map(|ifa| {
        let a = ifa.address?;
        let ip = match (a.as_sockaddr_in(), a.as_sockaddr_in6()) {
            (Some(v4), _) => IpAddr::V4(v4.ip()),
            (_, Some(v6)) => IpAddr::V6(v6.ip()),
            _ => return None,
        };
        (ip == addr).then_some((ifa.interface_name, ifa.flags))
    })
}

/// The interface that holds `addr`, if any.
pub fn interface_of(addr: IpAddr) -> Option<Iface> {
    holding(addr).map(|(name, flags)| Iface {
        name,
        up: flags.contains(InterfaceFlags::IFF_UP | InterfaceFlags::IFF_RUNNING),
    })
}

/// Whether a local interface holds `addr`: a peer name that resolves to
/// one of this node's own addresses would send the copy to ourselves.
/// False when the interfaces cannot be listed: the route and connect
/// checks still stand between such an address and the copy.
pub fn is_local(addr: IpAddr) -> bool {
    holding(addr).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

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
