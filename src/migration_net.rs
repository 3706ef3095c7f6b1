//! The migration-network choice: where the RAM copy of a live migration
//! goes. The target's short name plus the suffix (`node-b` → `node-b.mn`)
//! is looked up with the system resolver; the first address that is
//! *usable* carries the copy, and otherwise the copy falls back to the
//! target's base host name, the name Pacemaker gave.
//!
//! Usable means: not loopback, unspecified or multicast; the kernel routes
//! to it through an interface that is up; and the peer answers a TCP
//! connect on it at the libvirt transport's port within about a second.
//! Anvil's agent accepts any private address that answers ssh, and
//! VirtualDomain checks nothing (it fails the migration instead); a dead
//! migration link must cost a second or two, not the migration.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::ocf::Transport;

/// How long the name lookup may take: getaddrinfo has no timeout of its
/// own (resolv.conf's default is 5 s per try and server).
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the peer may take to accept the TCP probe.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// libvirtd's port for a transport: ssh's 22, libvirtd's TCP 16509 and
/// TLS 16514 (libvirtd.conf `tcp_port`, `tls_port`).
pub fn transport_port(t: Transport) -> u16 {
    match t {
        Transport::Ssh => 22,
        Transport::Tcp => 16509,
        Transport::Tls => 16514,
    }
}

/// The migration-network name of a node: its first label plus the suffix.
pub fn candidate(target: &str, suffix: &str) -> String {
    let short = target.split('.').next().unwrap_or(target);
    format!("{short}{suffix}")
}

/// A data URI for QEMU's migration stream to `addr` (IPv6 in brackets).
pub fn tcp_uri(addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(a) => format!("tcp://{a}"),
        IpAddr::V6(a) => format!("tcp://[{a}]"),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no address")]
    NoAddress,
    #[error("lookup failed")]
    Lookup(#[source] io::Error),
    #[error("lookup took longer than {0:?}")]
    LookupTimeout(Duration),
    #[error("{0} is a loopback, unspecified or multicast address")]
    NotUnicast(IpAddr),
    #[error("no route to {0}")]
    NoRoute(IpAddr, #[source] io::Error),
    #[error("the route to {addr} leaves through {iface}, which is down")]
    InterfaceDown { addr: IpAddr, iface: String },
    #[error("nothing answers on {0}")]
    Connect(SocketAddr, #[source] io::Error),
    #[error("cannot start a thread for the lookup")]
    Thread(#[source] io::Error),
}

/// The system's view of names, routes and peers; faked in unit tests.
pub trait Net {
    /// All addresses of `host` (IPv4 and IPv6), within `timeout`.
    fn resolve(&self, host: &str, timeout: Duration) -> Result<Vec<IpAddr>, Error>;
    /// The interface the kernel would send to `addr` through, if it is up.
    fn route(&self, addr: IpAddr) -> Result<String, Error>;
    /// A TCP connect to `addr`, within `timeout`.
    fn connect(&self, addr: SocketAddr, timeout: Duration) -> Result<(), Error>;
}

/// The real thing: getaddrinfo, the kernel's routing table, TCP.
pub struct SystemNet;

impl Net for SystemNet {
    fn resolve(&self, host: &str, timeout: Duration) -> Result<Vec<IpAddr>, Error> {
        // getaddrinfo blocks for as long as the resolver likes; it runs on
        // a thread that is abandoned when `timeout` passes.
        let (tx, rx) = mpsc::sync_channel(1);
        let name = host.to_owned();
        std::thread::Builder::new()
            .name("resolve".into())
            .spawn(move || {
                let r = (name.as_str(), 0).to_socket_addrs();
                let _ = tx.send(r.map(|it| it.map(|sa| sa.ip()).collect::<Vec<_>>()));
            })
            .map_err(Error::Thread)?;
        match rx.recv_timeout(timeout) {
            Ok(Ok(mut addrs)) => {
                addrs.dedup();
                if addrs.is_empty() {
                    Err(Error::NoAddress)
                } else {
                    Ok(addrs)
                }
            }
            Ok(Err(e)) => Err(Error::Lookup(e)),
            Err(_) => Err(Error::LookupTimeout(timeout)),
        }
    }

    fn route(&self, addr: IpAddr) -> Result<String, Error> {
        // connect() on a UDP socket sends nothing: the kernel only looks up
        // the route and picks the source address, or fails (ENETUNREACH).
        let bind: SocketAddr = match addr {
            IpAddr::V4(_) => "0.0.0.0:0".parse().expect("literal"),
            IpAddr::V6(_) => "[::]:0".parse().expect("literal"),
        };
        let sock = UdpSocket::bind(bind).map_err(|e| Error::NoRoute(addr, e))?;
        sock.connect(SocketAddr::new(addr, 9))
            .map_err(|e| Error::NoRoute(addr, e))?;
        let local = sock.local_addr().map_err(|e| Error::NoRoute(addr, e))?.ip();
        match crate::netif::interface_of(local) {
            Some(iface) if iface.up => Ok(iface.name),
            Some(iface) => Err(Error::InterfaceDown {
                addr,
                iface: iface.name,
            }),
            None => Ok(format!("source {local}")),
        }
    }

    fn connect(&self, addr: SocketAddr, timeout: Duration) -> Result<(), Error> {
        TcpStream::connect_timeout(&addr, timeout)
            .map(drop)
            .map_err(|e| Error::Connect(addr, e))
    }
}

/// One step of the check, for the dry run and the log.
#[derive(Debug)]
pub struct Check {
    pub what: String,
    pub result: Result<String, String>,
    pub took: Duration,
}

/// Where the RAM copy goes, and why.
#[derive(Debug)]
pub struct Choice {
    /// `node-b.mn`
    pub candidate: String,
    /// What the candidate resolved to (empty when it did not).
    pub addresses: Vec<IpAddr>,
    /// Every check made, in order.
    pub checks: Vec<Check>,
    /// The usable migration-network address, or None for the fallback.
    pub address: Option<IpAddr>,
    /// The target's base name (the fallback destination).
    pub target: String,
    /// Why the fallback was taken.
    pub fallback_reason: Option<String>,
}

impl Choice {
    /// The data URI for the RAM copy.
    pub fn data_uri(&self) -> String {
        match self.address {
            Some(a) => tcp_uri(a),
            None => format!("tcp://{}", self.target),
        }
    }

    /// The host name the data URI stands for: the name the target's
    /// certificate must carry when the copy is encrypted.
    pub fn host(&self) -> &str {
        match self.address {
            Some(_) => &self.candidate,
            None => &self.target,
        }
    }

    pub fn uses_migration_network(&self) -> bool {
        self.address.is_some()
    }
}

impl fmt::Display for Choice {
    /// The log line: `node-b.mn (10.251.1.2) usable` or
    /// `node-b.mn: no address; falling back to node-b`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.address, &self.fallback_reason) {
            (Some(a), _) => write!(f, "{} ({a}) usable", self.candidate),
            (None, reason) => write!(
                f,
                "{}: {}; falling back to {}",
                self.candidate,
                reason.as_deref().unwrap_or("not usable"),
                self.target
            ),
        }
    }
}

fn timed<T>(f: impl FnOnce() -> Result<T, Error>) -> (Result<T, Error>, Duration) {
    let t = Instant::now();
    let r = f();
    (r, t.elapsed())
}

/// Whether an address can be a peer's migration address at all: a name
/// that resolves to loopback (a common /etc/hosts mistake) or to nothing
/// routable would send the copy to ourselves.
fn is_unicast(a: IpAddr) -> bool {
    !(a.is_loopback()
        || a.is_unspecified()
        || a.is_multicast()
        || matches!(a, IpAddr::V4(v4) if v4.is_broadcast()))
}

/// Chooses the migration network for a migration to `target`.
pub fn choose(net: &dyn Net, target: &str, suffix: &str, transport: Transport) -> Choice {
    let candidate = candidate(target, suffix);
    let mut choice = Choice {
        candidate: candidate.clone(),
        addresses: Vec::new(),
        checks: Vec::new(),
        address: None,
        target: target.to_owned(),
        fallback_reason: None,
    };
    let (resolved, took) = timed(|| net.resolve(&candidate, RESOLVE_TIMEOUT));
    choice.checks.push(Check {
        what: format!("resolve {candidate}"),
        result: match &resolved {
            Ok(a) => Ok(a
                .iter()
                .map(IpAddr::to_string)
                .collect::<Vec<_>>()
                .join(", ")),
            Err(e) => Err(crate::agent::chain(e)),
        },
        took,
    });
    let addrs = match resolved {
        Ok(a) => a,
        Err(e) => {
            choice.fallback_reason = Some(crate::agent::chain(&e));
            return choice;
        }
    };
    choice.addresses = addrs.clone();
    let port = transport_port(transport);
    let mut last_problem = None;
    for addr in addrs {
        let problem = match probe(net, addr, port, &mut choice.checks) {
            Ok(()) => {
                choice.address = Some(addr);
                return choice;
            }
            Err(e) => e,
        };
        last_problem = Some(crate::agent::chain(&problem));
    }
    choice.fallback_reason = last_problem;
    choice
}

/// The usability checks of one address, each recorded.
fn probe(net: &dyn Net, addr: IpAddr, port: u16, checks: &mut Vec<Check>) -> Result<(), Error> {
    let mut step = |what: String, r: Result<String, Error>, took: Duration| {
        checks.push(Check {
            what,
            result: r
                .as_ref()
                .map(Clone::clone)
                .map_err(|e| crate::agent::chain(e)),
            took,
        });
        r.map(drop)
    };
    let unicast = if is_unicast(addr) {
        Ok("unicast".to_owned())
    } else {
        Err(Error::NotUnicast(addr))
    };
    step(format!("{addr} is unicast"), unicast, Duration::ZERO)?;
    let (r, took) = timed(|| net.route(addr));
    step(
        format!("route to {addr}"),
        r.map(|i| format!("via {i}")),
        took,
    )?;
    let sa = SocketAddr::new(addr, port);
    let (r, took) = timed(|| net.connect(sa, CONNECT_TIMEOUT));
    step(
        format!("TCP connect {sa}"),
        r.map(|()| "answered".into()),
        took,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Names, routes and listening addresses from tables.
    #[derive(Default)]
    struct FakeNet {
        names: HashMap<&'static str, Vec<IpAddr>>,
        hang: bool,
        down: Vec<IpAddr>,
        unrouted: Vec<IpAddr>,
        listening: Vec<SocketAddr>,
    }

    impl Net for FakeNet {
        fn resolve(&self, host: &str, timeout: Duration) -> Result<Vec<IpAddr>, Error> {
            if self.hang {
                return Err(Error::LookupTimeout(timeout));
            }
            self.names.get(host).cloned().ok_or(Error::NoAddress)
        }
        fn route(&self, addr: IpAddr) -> Result<String, Error> {
            if self.unrouted.contains(&addr) {
                Err(Error::NoRoute(
                    addr,
                    io::ErrorKind::NetworkUnreachable.into(),
                ))
            } else if self.down.contains(&addr) {
                Err(Error::InterfaceDown {
                    addr,
                    iface: "mn0".into(),
                })
            } else {
                Ok("mn0".into())
            }
        }
        fn connect(&self, addr: SocketAddr, _: Duration) -> Result<(), Error> {
            if self.listening.contains(&addr) {
                Ok(())
            } else {
                Err(Error::Connect(addr, io::ErrorKind::TimedOut.into()))
            }
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn candidate_uses_the_first_label() {
        assert_eq!(candidate("node-b", ".mn"), "node-b.mn");
        assert_eq!(candidate("node-b.example.com", ".mn"), "node-b.mn");
        assert_eq!(candidate("node-b", "-mig"), "node-b-mig");
    }

    #[test]
    fn uris() {
        assert_eq!(tcp_uri(ip("10.0.0.2")), "tcp://10.0.0.2");
        assert_eq!(tcp_uri(ip("fd00::2")), "tcp://[fd00::2]");
        assert_eq!(transport_port(Transport::Tcp), 16509);
    }

    #[test]
    fn usable_address_is_chosen() {
        let net = FakeNet {
            names: [("node-b.mn", vec![ip("10.251.1.2")])].into(),
            listening: vec!["10.251.1.2:16509".parse().unwrap()],
            ..Default::default()
        };
        let c = choose(&net, "node-b", ".mn", Transport::Tcp);
        assert_eq!(c.address, Some(ip("10.251.1.2")));
        assert_eq!(c.data_uri(), "tcp://10.251.1.2");
        assert_eq!(c.to_string(), "node-b.mn (10.251.1.2) usable");
        assert_eq!(c.checks.len(), 4);
    }

    #[test]
    fn second_address_when_the_first_is_dead() {
        let net = FakeNet {
            names: [("node-b.mn", vec![ip("fd00::2"), ip("10.251.1.2")])].into(),
            listening: vec!["10.251.1.2:22".parse().unwrap()],
            ..Default::default()
        };
        let c = choose(&net, "node-b", ".mn", Transport::Ssh);
        assert_eq!(c.address, Some(ip("10.251.1.2")));
    }

    #[test]
    fn fallbacks_say_why() {
        let cases: Vec<(FakeNet, &str)> = vec![
            (FakeNet::default(), "no address"),
            (
                FakeNet {
                    hang: true,
                    ..Default::default()
                },
                "lookup took longer",
            ),
            (
                FakeNet {
                    names: [("node-b.mn", vec![ip("127.0.1.1")])].into(),
                    ..Default::default()
                },
                "loopback",
            ),
            (
                FakeNet {
                    names: [("node-b.mn", vec![ip("10.251.1.2")])].into(),
                    unrouted: vec![ip("10.251.1.2")],
                    ..Default::default()
                },
                "no route",
            ),
            (
                FakeNet {
                    names: [("node-b.mn", vec![ip("10.251.1.2")])].into(),
                    down: vec![ip("10.251.1.2")],
                    ..Default::default()
                },
                "is down",
            ),
            (
                FakeNet {
                    names: [("node-b.mn", vec![ip("10.251.1.2")])].into(),
                    ..Default::default()
                },
                "nothing answers",
            ),
        ];
        for (net, why) in cases {
            let c = choose(&net, "node-b", ".mn", Transport::Tcp);
            assert_eq!(c.address, None);
            assert_eq!(c.data_uri(), "tcp://node-b");
            let line = c.to_string();
            assert!(line.contains(why), "{line}");
            assert!(line.ends_with("falling back to node-b"), "{line}");
        }
    }

    #[test]
    fn system_net_on_loopback() {
        let net = SystemNet;
        assert!(net.resolve("localhost", RESOLVE_TIMEOUT).is_ok());
        assert!(net.route(ip("127.0.0.1")).is_ok());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let sa = listener.local_addr().unwrap();
        assert!(net.connect(sa, CONNECT_TIMEOUT).is_ok());
        drop(listener);
        assert!(net.connect(sa, CONNECT_TIMEOUT).is_err());
    }
}
