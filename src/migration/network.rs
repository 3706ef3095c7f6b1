//! The migration-network choice: where the RAM copy of a live migration
//! goes. The target's short name plus the suffix (`node-b` → `node-b.mn`)
//! is looked up with the system resolver; the first address, in the
//! resolver's order, that is *usable* carries the copy, and otherwise the
//! copy falls back to the target's base host name, the name Pacemaker gave.
//!
//! Usable means: not loopback, unspecified, multicast or broadcast (also
//! as IPv4-mapped IPv6), not IPv6 link-local, and not an address of this
//! node; the kernel routes to it through an interface that is up; the peer
//! answers a TCP connect at the libvirt transport's port; and the start of
//! QEMU's migration port range is not filtered on the way. All addresses
//! are checked at once against one deadline, so the checks cost at most
//! about a second after the lookup, however many addresses the name has. Anvil's agent
//! accepts any private address that answers ssh, and VirtualDomain checks
//! nothing (it fails the migration instead); a dead migration link must
//! cost a second or two, not the migration.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

use crate::bounded::{on_worker, Unanswered};
use crate::ocf::{Budget, MigrationPort, Transport};
use crate::preflight::Check;

/// Where libvirt's QEMU driver keeps its settings, the migration port
/// range among them.
pub const QEMU_CONF: &str = "/etc/libvirt/qemu.conf";

/// The incoming-migration port range a qemu.conf sets
/// (`migration_port_min`, `migration_port_max`; libvirt's defaults,
/// 49152 and 49215, where it says nothing).
pub fn qemu_conf_ports(conf: &str) -> (u16, u16) {
    let value = |key: &str| {
        conf.lines()
            .filter_map(|l| l.split('#').next()?.split_once('='))
            .filter(|(k, _)| k.trim() == key)
            .filter_map(|(_, v)| v.trim().parse().ok())
            .next_back()
    };
    (
        value("migration_port_min").unwrap_or(49152),
        value("migration_port_max").unwrap_or(49215),
    )
}

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

/// A data URI for QEMU's migration stream to `host` (an IPv6 address in
/// brackets), with the port when `migration_port` names one.
fn tcp_uri(host: &str, port: Option<u16>) -> String {
    match port {
        Some(p) => format!("tcp://{host}:{p}"),
        None => format!("tcp://{host}"),
    }
}

/// Why an address can never carry the copy, whatever the network says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A common /etc/hosts mistake (`127.0.1.1 node-b.mn`).
    #[error("a loopback address")]
    Loopback,
    #[error("the unspecified address")]
    Unspecified,
    #[error("a multicast address")]
    Multicast,
    #[error("the broadcast address")]
    Broadcast,
    /// getaddrinfo gives a link-local address its zone (scope id), but the
    /// `tcp://` data URI carries only the address, so QEMU could not tell
    /// which link to use.
    #[error("IPv6 link-local, and QEMU's tcp:// URI cannot carry its zone")]
    LinkLocal,
    #[error("an address of this node: the copy would go to ourselves")]
    Local,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no address")]
    NoAddress,
    #[error("lookup failed")]
    Lookup(#[source] io::Error),
    #[error("lookup took longer than {0:?}")]
    LookupTimeout(Duration),
    #[error("{addr} is {why}")]
    Unusable { addr: IpAddr, why: Refusal },
    #[error("no route to {0}")]
    NoRoute(IpAddr, #[source] io::Error),
    #[error("the route to {addr} leaves through {iface}, which is down")]
    InterfaceDown { addr: IpAddr, iface: String },
    #[error("nothing answers on {0}")]
    Connect(SocketAddr, #[source] io::Error),
    #[error("QEMU's migration port {} does not answer on {} (filtered?)", .0.port(), .0.ip())]
    QemuPort(SocketAddr, #[source] io::Error),
    #[error("the probe's budget ran out")]
    Budget,
    #[error("cannot start a thread")]
    Thread(#[source] io::Error),
}

/// The system's view of names, routes and peers; faked in unit tests. The
/// addresses of a name are checked on threads of their own, hence `Sync`.
pub trait Net: Sync {
    /// All addresses of `host` (IPv4 and IPv6), within `timeout`.
    fn resolve(&self, host: &str, timeout: Duration) -> Result<Vec<IpAddr>, Error>;
    /// The interface the kernel would send to `addr` through, if it is up.
    fn route(&self, addr: IpAddr) -> Result<String, Error>;
    /// A TCP connect to `addr`, within `timeout`; a failure is
    /// `Error::Connect` with the system's error, whose kind tells a refused
    /// connection from one that timed out.
    fn connect(&self, addr: SocketAddr, timeout: Duration) -> Result<(), Error>;
    /// Whether a local interface holds `addr`. The system's answer unless
    /// overridden: it only reads this node's interface list.
    fn is_local(&self, addr: IpAddr) -> bool {
        super::netif::is_local(addr)
    }
}

/// The real thing: getaddrinfo, the kernel's routing table, TCP.
pub struct SystemNet;

impl Net for SystemNet {
    fn resolve(&self, host: &str, timeout: Duration) -> Result<Vec<IpAddr>, Error> {
        // getaddrinfo blocks for as long as the resolver likes; it runs on
        // a thread that is abandoned when `timeout` passes.
        let name = host.to_owned();
        let lookup = on_worker("resolve", Instant::now() + timeout, move || {
            (name.as_str(), 0)
                .to_socket_addrs()
                .map(|it| it.map(|sa| sa.ip()).collect::<Vec<_>>())
        });
        match lookup {
            Ok(Ok(mut addrs)) => {
                addrs.dedup();
                if addrs.is_empty() {
                    Err(Error::NoAddress)
                } else {
                    Ok(addrs)
                }
            }
            Ok(Err(e)) => Err(Error::Lookup(e)),
            Err(Unanswered::NoThread(e)) => Err(Error::Thread(e)),
            Err(Unanswered::Late) => Err(Error::LookupTimeout(timeout)),
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
        match super::netif::interface_of(local) {
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
    /// Where the target's QEMU listens (`migration_port`).
    pub port: MigrationPort,
}

impl Choice {
    /// The data URI for the RAM copy.
    pub fn data_uri(&self) -> String {
        let host = match self.address {
            Some(IpAddr::V6(a)) => format!("[{a}]"),
            Some(a) => a.to_string(),
            None => self.target.clone(),
        };
        tcp_uri(&host, self.port.in_uri())
    }

    /// The host name the data URI stands for: the name the target's
    /// certificate must carry when the copy is encrypted.
    pub fn host(&self) -> &str {
        match self.address {
            Some(_) => &self.candidate,
            None => &self.target,
        }
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

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let r = f();
    (r, t.elapsed())
}

/// Why `a` can never be a peer's migration address, if it cannot. An
/// IPv4-mapped address (`::ffff:127.0.0.1`) is judged as the IPv4 address
/// a dual-stack socket would really send to. IPv4 link-local (169.254/16)
/// stays allowed: it needs no zone.
fn refusal(a: IpAddr) -> Option<Refusal> {
    let v4 = match a {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4,
            None if v6.is_loopback() => return Some(Refusal::Loopback),
            None if v6.is_unspecified() => return Some(Refusal::Unspecified),
            None if v6.is_multicast() => return Some(Refusal::Multicast),
            None if v6.is_unicast_link_local() => return Some(Refusal::LinkLocal),
            None => return None,
        },
    };
    if v4.is_loopback() {
        Some(Refusal::Loopback)
    } else if v4.is_unspecified() {
        Some(Refusal::Unspecified)
    } else if v4.is_multicast() {
        Some(Refusal::Multicast)
    } else if v4.is_broadcast() {
        Some(Refusal::Broadcast)
    } else {
        None
    }
}

/// Chooses the migration network for a migration to `target`.
///
/// The addresses are probed side by side, each on a thread of its own,
/// against one deadline, the budget's network step after the lookup (as
/// long as the lookup itself may take); the first usable one
/// in the resolver's order wins, even when a later one answered sooner.
/// A connect cannot be abandoned, so this returns when every probe has
/// ended: a dead address beside a live one costs the budget, once.
pub fn choose(
    net: &dyn Net,
    target: &str,
    suffix: &str,
    transport: Transport,
    qemu_port: MigrationPort,
    budget: &Budget,
) -> Choice {
    let candidate = candidate(target, suffix);
    let mut choice = Choice {
        candidate: candidate.clone(),
        addresses: Vec::new(),
        checks: Vec::new(),
        address: None,
        target: target.to_owned(),
        fallback_reason: None,
        port: qemu_port,
    };
    let (resolved, took) = timed(|| net.resolve(&candidate, budget.network_step()));
    choice.checks.push(check(
        format!("resolve {candidate}"),
        resolved.as_ref().map(|a| {
            a.iter()
                .map(IpAddr::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        }),
        took,
    ));
    let addrs = match resolved {
        Ok(a) => a,
        Err(e) => {
            choice.fallback_reason = Some(crate::error::chain(&e));
            return choice;
        }
    };
    let port = transport_port(transport);
    let deadline = Instant::now() + budget.network_step();
    let probes: Vec<(Result<(), Error>, Vec<Check>)> = std::thread::scope(|s| {
        let started: Vec<_> = addrs
            .iter()
            .map(|&addr| {
                std::thread::Builder::new()
                    .name("probe".into())
                    .spawn_scoped(s, move || {
                        let mut checks = Vec::new();
                        let ports = (port, qemu_port.probed());
                        let r = probe(net, addr, ports, deadline, &mut checks);
                        (r, checks)
                    })
            })
            .collect();
        started
            .into_iter()
            .zip(&addrs)
            .map(|(thread, addr)| match thread {
                Ok(t) => t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
                Err(e) => {
                    let e = Error::Thread(e);
                    let failed = check(format!("probe {addr}"), Err(&e), Duration::ZERO);
                    (Err(e), vec![failed])
                }
            })
            .collect()
    });
    let mut last_problem = None;
    for (&addr, (r, checks)) in addrs.iter().zip(probes) {
        choice.checks.extend(checks);
        match r {
            Ok(()) => {
                choice.address.get_or_insert(addr);
            }
            Err(e) => last_problem = Some(crate::error::chain(&e)),
        }
    }
    if choice.address.is_none() {
        choice.fallback_reason = last_problem;
    }
    choice.addresses = addrs;
    choice
}

/// A check as the dry run and the log show it.
fn check(what: String, result: Result<String, &Error>, took: Duration) -> Check {
    Check {
        what,
        result: result.map_err(|e| crate::error::chain(e)),
        took,
    }
}

/// Runs one check of a probe, records it, and passes its failure on.
fn step(
    checks: &mut Vec<Check>,
    what: String,
    f: impl FnOnce() -> Result<String, Error>,
) -> Result<(), Error> {
    let (r, took) = timed(f);
    checks.push(check(what, r.as_ref().cloned(), took));
    r.map(drop)
}

/// The usability checks of one address, each recorded, until the first
/// that fails; the connects share `deadline` with the other addresses'.
fn probe(
    net: &dyn Net,
    addr: IpAddr,
    (port, qemu): (u16, u16),
    deadline: Instant,
    checks: &mut Vec<Check>,
) -> Result<(), Error> {
    let unusable = |why| Error::Unusable { addr, why };
    step(checks, format!("kind of {addr}"), || match refusal(addr) {
        Some(why) => Err(unusable(why)),
        None => Ok("unicast".into()),
    })?;
    step(checks, format!("{addr} is not local"), || {
        if net.is_local(addr) {
            Err(unusable(Refusal::Local))
        } else {
            Ok("held by no local interface".into())
        }
    })?;
    step(checks, format!("route to {addr}"), || {
        net.route(addr).map(|i| format!("via {i}"))
    })?;
    let sa = SocketAddr::new(addr, port);
    step(checks, format!("TCP connect {sa}"), || {
        connect_by(net, sa, deadline).map(|()| "answered".into())
    })?;
    let qemu = SocketAddr::new(addr, qemu);
    step(checks, format!("QEMU port {qemu}"), || {
        qemu_port(net, qemu, deadline)
    })
}

/// A connect to `sa` within what is left until `deadline`.
fn connect_by(net: &dyn Net, sa: SocketAddr, deadline: Instant) -> Result<(), Error> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(Error::Budget);
    }
    net.connect(sa, left)
}

/// Whether the path to QEMU's migration port range is open: the target's
/// libvirtd gives the incoming migration a port of that range only when
/// the migration starts, so the control port answering proves nothing
/// about it. Nothing listens there before, so a refused connect (the host
/// answered with a reset) shows an open path as well as an answer does; a
/// timeout (a firewall dropping the range), an unreachable host or network
/// (a firewall's ICMP reject) or any other failure is taken as filtered.
///
/// A firewall that rejects with a TCP reset cannot be told from an open
/// path, and only one port is tried ([`MigrationPort::probed`]), not a
/// whole range.
fn qemu_port(net: &dyn Net, sa: SocketAddr, deadline: Instant) -> Result<String, Error> {
    match connect_by(net, sa, deadline) {
        Ok(()) => Ok("answered".into()),
        Err(Error::Connect(_, e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
            Ok("refused: the path is open".into())
        }
        Err(Error::Connect(_, e)) => Err(Error::QemuPort(sa, e)),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ocf::budget::NETWORK_STEP;
    use crate::testing::assert_contains;
    use std::collections::HashMap;

    /// A migrate_to budget whose network steps get all of NETWORK_STEP.
    fn budget() -> Budget {
        Budget::new(Duration::from_secs(60))
    }

    /// Names, routes, local addresses and peers from tables.
    #[derive(Default)]
    struct FakeNet {
        names: HashMap<&'static str, Vec<IpAddr>>,
        hang: bool,
        /// How long every route lookup takes.
        route_delay: Duration,
        down: Vec<IpAddr>,
        unrouted: Vec<IpAddr>,
        local: Vec<IpAddr>,
        /// How long a peer takes to answer a connect (none: at once); a
        /// connect whose timeout comes first times out when it runs out.
        latency: HashMap<IpAddr, Duration>,
        listening: Vec<SocketAddr>,
        /// How connects to these fail; elsewhere, QEMU's port refuses (as
        /// on a host with nothing listening there) and others time out.
        failing: HashMap<SocketAddr, io::ErrorKind>,
    }

    impl Net for FakeNet {
        fn resolve(&self, host: &str, timeout: Duration) -> Result<Vec<IpAddr>, Error> {
            if self.hang {
                return Err(Error::LookupTimeout(timeout));
            }
            self.names.get(host).cloned().ok_or(Error::NoAddress)
        }
        fn route(&self, addr: IpAddr) -> Result<String, Error> {
            std::thread::sleep(self.route_delay);
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
        fn connect(&self, addr: SocketAddr, timeout: Duration) -> Result<(), Error> {
            let fail = |kind: io::ErrorKind| Err(Error::Connect(addr, kind.into()));
            let latency = self.latency.get(&addr.ip()).copied().unwrap_or_default();
            if latency > timeout {
                std::thread::sleep(timeout);
                return fail(io::ErrorKind::TimedOut);
            }
            std::thread::sleep(latency);
            if self.listening.contains(&addr) {
                Ok(())
            } else if let Some(&kind) = self.failing.get(&addr) {
                fail(kind)
            } else if addr.port() == MigrationPort::Default.probed() {
                fail(io::ErrorKind::ConnectionRefused)
            } else {
                fail(io::ErrorKind::TimedOut)
            }
        }
        fn is_local(&self, addr: IpAddr) -> bool {
            self.local.contains(&addr)
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// `node-b.mn` resolving to `addrs`, each listening on libvirtd's TCP port.
    fn listening_on(addrs: &[&str]) -> FakeNet {
        let addrs: Vec<IpAddr> = addrs.iter().map(|a| ip(a)).collect();
        FakeNet {
            listening: addrs.iter().map(|&a| SocketAddr::new(a, 16509)).collect(),
            names: [("node-b.mn", addrs)].into(),
            ..Default::default()
        }
    }

    #[test]
    fn candidate_uses_the_first_label() {
        assert_eq!(candidate("node-b", ".mn"), "node-b.mn");
        assert_eq!(candidate("node-b.example.com", ".mn"), "node-b.mn");
        assert_eq!(candidate("node-b", "-mig"), "node-b-mig");
    }

    /// A move to node-b with the default `.mn` suffix and port.
    fn choose_b(net: &dyn Net, transport: Transport) -> Choice {
        choose(
            net,
            "node-b",
            ".mn",
            transport,
            MigrationPort::Default,
            &budget(),
        )
    }

    #[test]
    fn uris() {
        let choice = |address: Option<&str>, port| Choice {
            candidate: "node-b.mn".into(),
            addresses: Vec::new(),
            checks: Vec::new(),
            address: address.map(ip),
            target: "node-b".into(),
            fallback_reason: None,
            port,
        };
        let fixed = MigrationPort::Fixed(49300);
        assert_eq!(
            choice(Some("10.0.0.2"), MigrationPort::Default).data_uri(),
            "tcp://10.0.0.2"
        );
        assert_eq!(
            choice(Some("fd00::2"), fixed).data_uri(),
            "tcp://[fd00::2]:49300"
        );
        assert_eq!(choice(None, fixed).data_uri(), "tcp://node-b:49300");
        let range = MigrationPort::Range(49152, 49215);
        assert_eq!(choice(None, range).data_uri(), "tcp://node-b");
        assert_eq!(transport_port(Transport::Tcp), 16509);
    }

    #[test]
    fn qemu_conf_ranges() {
        assert_eq!(qemu_conf_ports("#migration_port_min = 1\n"), (49152, 49215));
        let set = "migration_port_min = 50000 # firewall\nmigration_port_max=50009\n";
        assert_eq!(qemu_conf_ports(set), (50000, 50009));
    }

    #[test]
    fn a_fixed_migration_port_is_the_one_probed() {
        let net = FakeNet {
            listening: vec![sa("10.251.1.2:16509"), sa("10.251.1.2:49300")],
            ..listening_on(&["10.251.1.2"])
        };
        let port = MigrationPort::Fixed(49300);
        let c = choose(&net, "node-b", ".mn", Transport::Tcp, port, &budget());
        let last = c.checks.last().unwrap();
        assert_eq!(last.what, "QEMU port 10.251.1.2:49300");
        assert_eq!(c.data_uri(), "tcp://10.251.1.2:49300");
    }

    #[test]
    fn usable_address_is_chosen() {
        let net = listening_on(&["10.251.1.2"]);
        let c = choose_b(&net, Transport::Tcp);
        assert_eq!(c.address, Some(ip("10.251.1.2")));
        assert_eq!(c.data_uri(), "tcp://10.251.1.2");
        assert_eq!(c.to_string(), "node-b.mn (10.251.1.2) usable");
        let what: Vec<&str> = c.checks.iter().map(|c| c.what.as_str()).collect();
        assert_eq!(
            what,
            [
                "resolve node-b.mn",
                "kind of 10.251.1.2",
                "10.251.1.2 is not local",
                "route to 10.251.1.2",
                "TCP connect 10.251.1.2:16509",
                "QEMU port 10.251.1.2:49215",
            ]
        );
        assert!(c.checks.iter().all(|c| c.result.is_ok()), "{c:?}");
    }

    #[test]
    fn second_address_when_the_first_is_dead() {
        let net = FakeNet {
            names: [("node-b.mn", vec![ip("fd00::2"), ip("10.251.1.2")])].into(),
            listening: vec![sa("10.251.1.2:22")],
            ..Default::default()
        };
        let c = choose_b(&net, Transport::Ssh);
        assert_eq!(c.address, Some(ip("10.251.1.2")));
    }

    #[test]
    fn fallbacks_say_why() {
        // `node-b.mn` resolves to `a` alone, and nothing answers there.
        let only = |a: &str| FakeNet {
            names: [("node-b.mn", vec![ip(a)])].into(),
            ..Default::default()
        };
        // libvirtd answers on `a`, but `spoil` makes the address unusable.
        let spoilt = |a: &str, spoil: fn(&mut FakeNet, IpAddr)| {
            let mut net = listening_on(&[a]);
            spoil(&mut net, ip(a));
            net
        };
        let hang = FakeNet {
            hang: true,
            ..Default::default()
        };
        let mut filtered = listening_on(&["10.251.1.2"]);
        filtered.failing = [(sa("10.251.1.2:49215"), io::ErrorKind::TimedOut)].into();
        let cases: Vec<(FakeNet, &str)> = vec![
            (FakeNet::default(), "no address"),
            (hang, "lookup took longer"),
            (only("127.0.1.1"), "127.0.1.1 is a loopback address"),
            (
                only("::ffff:127.0.1.1"),
                "::ffff:127.0.1.1 is a loopback address",
            ),
            (
                only("fe80::2"),
                "fe80::2 is IPv6 link-local, and QEMU's tcp:// URI cannot carry its zone",
            ),
            (
                spoilt("10.251.1.1", |n, a| n.local = vec![a]),
                "10.251.1.1 is an address of this node: the copy would go to ourselves",
            ),
            (
                spoilt("10.251.1.2", |n, a| n.unrouted = vec![a]),
                "no route to 10.251.1.2",
            ),
            (spoilt("10.251.1.2", |n, a| n.down = vec![a]), "is down"),
            (only("10.251.1.2"), "nothing answers on 10.251.1.2:16509"),
            (
                filtered,
                "QEMU's migration port 49215 does not answer on 10.251.1.2 (filtered?)",
            ),
        ];
        for (net, why) in cases {
            let c = choose_b(&net, Transport::Tcp);
            assert_eq!(c.address, None);
            assert_eq!(c.data_uri(), "tcp://node-b");
            let line = c.to_string();
            assert!(line.contains(why), "{line}");
            assert!(line.ends_with("falling back to node-b"), "{line}");
            let failed = &c.checks.last().unwrap().result;
            assert!(failed.as_ref().is_err_and(|e| e.contains(why)), "{c:?}");
        }
    }

    #[test]
    fn address_kinds() {
        for refused in [
            "127.0.0.1",
            "::1",
            "0.0.0.0",
            "::",
            "224.0.0.1",
            "ff02::1",
            "255.255.255.255",
            "::ffff:127.0.0.1",
            "::ffff:127.255.255.254",
            "::ffff:0.0.0.0",
            "::ffff:239.1.2.3",
            "::ffff:255.255.255.255",
            "fe80::1",
            "febf:ffff::1",
        ] {
            assert!(refusal(ip(refused)).is_some(), "{refused}");
        }
        for allowed in [
            "10.251.1.2",
            "169.254.7.2",
            "::ffff:10.251.1.2",
            "::ffff:169.254.7.2",
            "fd00::2",
            "fec0::2",
            "2001:db8::2",
        ] {
            assert_eq!(refusal(ip(allowed)), None, "{allowed}");
        }
        assert_eq!(refusal(ip("::ffff:127.0.0.1")), Some(Refusal::Loopback));
        assert_eq!(refusal(ip("fe80::1")), Some(Refusal::LinkLocal));
    }

    #[test]
    fn qemu_port_refused_or_answering_is_open_and_anything_else_is_not() {
        let addr = "10.251.1.2:49215";
        let open = FakeNet {
            listening: vec![sa("10.251.1.2:16509"), sa(addr)],
            ..listening_on(&["10.251.1.2"])
        };
        let c = choose_b(&open, Transport::Tcp);
        assert_eq!(c.address, Some(ip("10.251.1.2")));
        assert_eq!(c.checks.last().unwrap().result, Ok("answered".into()));
        let refused = listening_on(&["10.251.1.2"]);
        let c = choose_b(&refused, Transport::Tcp);
        assert_eq!(c.address, Some(ip("10.251.1.2")));
        assert_eq!(
            c.checks.last().unwrap().result,
            Ok("refused: the path is open".into())
        );
        for kind in [
            io::ErrorKind::TimedOut,
            io::ErrorKind::HostUnreachable,
            io::ErrorKind::NetworkUnreachable,
        ] {
            let net = FakeNet {
                failing: [(sa(addr), kind)].into(),
                ..listening_on(&["10.251.1.2"])
            };
            let c = choose_b(&net, Transport::Tcp);
            assert_eq!(c.address, None, "{kind:?}");
            let last = c.checks.last().unwrap();
            assert_eq!(last.what, "QEMU port 10.251.1.2:49215");
            let why = last.result.as_ref().unwrap_err();
            assert!(why.contains("(filtered?): "), "{why}");
            assert!(why.ends_with(&io::Error::from(kind).to_string()), "{why}");
        }
    }

    /// Elapsed time of a choice, with its result.
    fn timed_choice(net: &FakeNet) -> (Choice, Duration) {
        timed(|| choose_b(net, Transport::Tcp))
    }

    const SIX: [&str; 6] = [
        "10.251.1.2",
        "10.251.2.2",
        "10.251.3.2",
        "fd00:1::2",
        "fd00:2::2",
        "fd00:3::2",
    ];

    /// A choice among SIX addresses that each answer a connect after
    /// `latency`: it ends within one budget, without an address.
    fn six_answering_after(latency: Duration) -> Choice {
        let net = FakeNet {
            latency: SIX.iter().map(|a| (ip(a), latency)).collect(),
            ..listening_on(&SIX)
        };
        let (c, took) = timed_choice(&net);
        assert!(took < Duration::from_millis(1300), "{took:?}");
        assert_eq!(c.address, None);
        c
    }

    /// The checks of `c` that are `step`s, each of which failed.
    fn failed_steps<'c>(c: &'c Choice, step: &str) -> Vec<&'c Check> {
        let steps: Vec<&Check> = c
            .checks
            .iter()
            .filter(|c| c.what.starts_with(step))
            .collect();
        assert!(steps.iter().all(|c| c.result.is_err()), "{steps:?}");
        steps
    }

    #[test]
    fn six_silent_addresses_cost_one_budget() {
        let c = six_answering_after(Duration::MAX);
        let connects = failed_steps(&c, "TCP connect");
        assert_eq!(connects.len(), 6);
        for check in connects {
            assert!(check.took >= NETWORK_STEP / 2, "{check:?}");
            assert!(check.took < Duration::from_millis(1300), "{check:?}");
        }
        assert_contains(c.to_string(), "nothing answers on [fd00:3::2]:16509");
    }

    #[test]
    fn the_qemu_port_gets_only_what_is_left() {
        // Each control connect answers after 800 ms, leaving the QEMU
        // port 200 ms: too little for a peer that takes 800 ms.
        let c = six_answering_after(Duration::from_millis(800));
        assert_eq!(failed_steps(&c, "QEMU port").len(), 6);
    }

    #[test]
    fn the_resolver_order_wins_within_the_budget() {
        let slow_first = |first: Duration| FakeNet {
            latency: [(ip("fd00::2"), first)].into(),
            ..listening_on(&["fd00::2", "10.251.1.2"])
        };
        // Answering after 300 ms (twice: control and QEMU port), the first
        // address still beats the second, which answers at once.
        let (c, took) = timed_choice(&slow_first(Duration::from_millis(300)));
        assert_eq!(c.address, Some(ip("fd00::2")));
        assert!(took >= Duration::from_millis(600), "{took:?}");
        // Too slow for the budget: the second carries the copy.
        let (c, took) = timed_choice(&slow_first(Duration::from_secs(3)));
        assert_eq!(c.address, Some(ip("10.251.1.2")));
        assert!(took < Duration::from_millis(1300), "{took:?}");
        assert!(c
            .checks
            .iter()
            .any(|c| c.what == "TCP connect [fd00::2]:16509"
                && c.result
                    .as_ref()
                    .is_err_and(|e| e.contains("nothing answers"))));
    }

    #[test]
    fn a_spent_budget_is_reported() {
        let net = FakeNet {
            route_delay: NETWORK_STEP + Duration::from_millis(50),
            ..listening_on(&["10.251.1.2", "10.251.2.2"])
        };
        let (c, took) = timed_choice(&net);
        assert!(took < Duration::from_millis(1300), "{took:?}");
        assert_eq!(c.address, None);
        assert!(c.to_string().contains("the probe's budget ran out"), "{c}");
    }

    #[test]
    fn a_short_action_gives_the_network_steps_less() {
        let net = FakeNet {
            latency: SIX.iter().map(|a| (ip(a), Duration::MAX)).collect(),
            ..listening_on(&SIX)
        };
        // 4 s: about 3 s left, so each step gets an eighth of it.
        let short = Budget::new(Duration::from_secs(4));
        let (c, took) = timed(|| {
            choose(
                &net,
                "node-b",
                ".mn",
                Transport::Tcp,
                MigrationPort::Default,
                &short,
            )
        });
        assert_eq!(c.address, None);
        assert!(took < Duration::from_millis(600), "{took:?}");
    }

    #[test]
    fn system_net_on_loopback() {
        let net = SystemNet;
        assert!(net.resolve("localhost", NETWORK_STEP).is_ok());
        assert!(net.route(ip("127.0.0.1")).is_ok());
        assert!(net.is_local(ip("127.0.0.1")));
        assert!(!net.is_local(ip("192.0.2.77")));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let sa = listener.local_addr().unwrap();
        assert!(net.connect(sa, NETWORK_STEP).is_ok());
        drop(listener);
        let refused = net.connect(sa, NETWORK_STEP);
        assert!(
            matches!(&refused, Err(Error::Connect(_, e)) if e.kind() == io::ErrorKind::ConnectionRefused),
            "{refused:?}"
        );
    }
}
