//! One definition on every node. The node where the server runs holds the
//! definition that counts: it is what runs, and what every live migration
//! carries to the target anyway (VIR_MIGRATE_PERSIST_DEST). start and stop
//! compare it with the peer's each time, monitor when it changed here since
//! this node last compared it (a copy kept in [`crate::records::STATE_DIR`]); a difference
//! is copied to the peer through libvirt (`sync_definition`, virDomainDefineXML
//! on the peer's libvirtd, never ssh) or reported, once per change. With
//! `config` the file is the definition on each node: start and
//! migrate_from define from it again when it changed, and say what that
//! changed.

use std::path::Path;
use std::time::Duration;

use log::{debug, info, warn};

use crate::error::chain;
use crate::hypervisor::{mib, Hypervisor, Observe};
use crate::ocf::{config, Params};
use crate::peer::{Peer, Peers};
use crate::preflight::Needs;
use crate::records::Records;
use crate::storage::child;
use crate::utilization::Utilization;

/// What is done with a definition that differs on the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Define this node's on the peer.
    Copy,
    /// Only say so, with why nothing is copied.
    Report(&'static str),
}

impl Policy {
    pub fn of(p: &Params) -> Policy {
        if p.config.is_some() {
            Policy::Report("each node defines it from config")
        } else if p.sync_definition {
            Policy::Copy
        } else {
            Policy::Report("sync_definition is off")
        }
    }
}

/// How a comparison with the peer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compared {
    Same,
    Copied,
    /// Different, and left so (reported).
    Differs,
    /// The peer's definition could not be read.
    Unknown,
}

/// The records in [`STATE_DIR`], and how a definition is kept in step.
pub struct Definitions<'a> {
    records: Records,
    policy: Policy,
    /// The peers, found only when a comparison is due.
    peers: &'a dyn Fn() -> Peers,
    /// Pacemaker's utilization, which follows the definition.
    util: Utilization<'a>,
}

const DEFINITION: &str = "definition";
const CONFIG: &str = "config";

impl<'a> Definitions<'a> {
    pub fn new(
        records: Records,
        policy: Policy,
        peers: &'a dyn Fn() -> Peers,
        util: Utilization<'a>,
    ) -> Self {
        Definitions {
            records,
            util,
            policy,
            peers,
        }
    }

    /// monitor of a server that runs here: its utilization kept in step
    /// ([`Utilization::update`], a record read when nothing changed) and
    /// its definition compared with
    /// the peers' when it is not the one this node compared last (a change
    /// made here, or the first monitor since boot or since it arrived), so
    /// that a difference is copied or said once, not every interval.
    pub fn if_changed(&self, hv: &dyn Observe, name: &str) -> Option<Vec<Compared>> {
        let here = hv.definition(name).ok().flatten()?;
        self.util.update(name, &here);
        let last = self.records.last(name, DEFINITION);
        if last.as_deref() == Some(here.as_str()) {
            return None;
        }
        if let Some(last) = last {
            info!(
                "the definition of {name} changed here: {}",
                differences(&last, &here, "before", "now").join(", ")
            );
        }
        Some(self.compare(&here, name, &mut (self.peers)()))
    }

    /// start and stop of a server that runs (ran) here: its definition
    /// compared with the peers' now. `peers`: those the action has found
    /// already, if any.
    pub fn now(
        &self,
        hv: &dyn Observe,
        name: &str,
        peers: Option<&mut Peers>,
    ) -> Option<Vec<Compared>> {
        let here = match hv.definition(name) {
            Ok(Some(xml)) => xml,
            Ok(None) => return None,
            Err(e) => {
                warn!(
                    "cannot read the definition of {name} to compare it with the peer's: {}",
                    e.first_line()
                );
                return None;
            }
        };
        self.util.update(name, &here);
        Some(match peers {
            Some(peers) => self.compare(&here, name, peers),
            None => self.compare(&here, name, &mut (self.peers)()),
        })
    }

    /// `here` compared with every peer's definition at once and, with
    /// [`Policy::Copy`], defined where they differ; recorded as compared
    /// whatever the outcome (what went wrong is logged once, and the next
    /// stop or start tries again). Never fails the action. One outcome per
    /// known peer, and `Unknown` for those that could not be found.
    fn compare(&self, here: &str, name: &str, peers: &mut Peers) -> Vec<Compared> {
        let (policy, xml, domain) = (self.policy, here.to_owned(), name.to_owned());
        let mut compared = peers.ask(move |peer| compare_with(&xml, &domain, peer, policy));
        if let Some(why) = &peers.unknown {
            warn!("cannot compare the definition of {name} with every other node's ({why})");
            compared.push(Compared::Unknown);
        }
        self.records.keep(name, DEFINITION, here);
        compared
    }

    /// With `config`, for a domain already defined here: defined again
    /// from the file (read within `budget`) when it is not the one this
    /// node defined from last. A file that cannot be read or is not this
    /// domain's leaves the definition libvirt has, with a warning: the
    /// server still starts (or keeps running) as it was.
    pub fn config_if_changed(&self, hv: &dyn Hypervisor, p: &Params, budget: Duration) {
        let (Some(path), Some(read)) = (&p.config, p.read_config(budget)) else {
            return;
        };
        match read.and_then(|xml| config::check_name(&p.name, &xml).map(|()| xml)) {
            Ok(xml) => self.redefine_from(hv, &p.name, path, &xml),
            Err(e) => warn!(
                "domain {}: {}; keeping the definition libvirt has",
                p.name,
                chain(&e)
            ),
        }
    }

    /// The domain defined from `xml` (the file's text) when the file is
    /// not the one this node defined from last, and what that changed
    /// said. A definition libvirt refuses is logged and the one it has
    /// kept.
    fn redefine_from(&self, hv: &dyn Hypervisor, name: &str, path: &Path, xml: &str) {
        if self.records.last(name, CONFIG).as_deref() == Some(config_hash(xml).as_str()) {
            return;
        }
        let before = hv.definition(name).ok().flatten();
        if let Err(e) = hv.define(xml) {
            warn!(
                "domain {name}: {} not defined again, its definition kept: {}",
                path.display(),
                e.first_line()
            );
            return;
        }
        self.defined_from_config(name, xml);
        let after = hv.definition(name).ok().flatten();
        match (before, after) {
            (Some(b), Some(a)) if a != b => info!(
                "domain {name}: defined again from {} (the file changed: {})",
                path.display(),
                differences(&b, &a, "before", "now").join(", ")
            ),
            _ => debug!("domain {name}: {} defines it as it was", path.display()),
        }
    }

    /// Records that the domain was defined from the file's text `xml`.
    pub fn defined_from_config(&self, name: &str, xml: &str) {
        self.records.keep(name, CONFIG, &config_hash(xml));
    }
}

#[cfg(test)]
impl Definitions<'static> {
    /// For tests of actions on a fake without a definition: no records
    /// written, no peer.
    pub fn none() -> Self {
        fn no_peer() -> Peers {
            unreachable!("this test has no peer")
        }
        Definitions {
            records: Records::none(),
            util: Utilization::off(),
            policy: Policy::Copy,
            peers: &no_peer,
        }
    }
}

fn compare_with(here: &str, name: &str, peer: &Peer, policy: Policy) -> Compared {
    let Peer { node, hv } = peer;
    let there = match hv.definition(name) {
        Ok(there) => there,
        Err(e) => {
            warn!(
                "cannot compare the definition of {name} with {node}'s: {}",
                e.first_line()
            );
            return Compared::Unknown;
        }
    };
    let on_node = format!("on {node}");
    let diffs = match &there {
        Some(there) => differences(here, there, "here", &on_node),
        None => vec![format!("{node} has none")],
    };
    if diffs.is_empty() {
        debug!("the definition of {name} is the same on {node}");
        return Compared::Same;
    }
    let said = diffs.join(", ");
    let why_not = match (policy, hv.state(name)) {
        (Policy::Report(why), _) => why.to_owned(),
        // A domain active there runs twice: that is monitor's and the
        // admin's business; its next boot's definition is not changed
        // behind its back.
        (Policy::Copy, Ok(state)) if state.is_active() => format!("the domain is {state} there"),
        (Policy::Copy, Err(e)) => format!("its state there is unknown: {}", e.first_line()),
        (Policy::Copy, Ok(_)) => match hv.define(here) {
            Ok(_) => {
                info!("copied the definition of {name} to {node} ({said})");
                return Compared::Copied;
            }
            Err(e) => format!("defining it there failed: {}", e.first_line()),
        },
    };
    warn!("the definition of {name} differs {on_node}: {said}; not copied: {why_not}");
    Compared::Differs
}

/// What an admin compares between two definitions: memory, vCPUs, disks
/// and interfaces.
#[derive(Debug, PartialEq, Eq)]
struct Summary {
    memory: String,
    vcpus: String,
    disks: String,
    interfaces: String,
}

fn summary(xml: &str) -> Option<Summary> {
    let needs = Needs::of(xml).ok()?;
    let doc = roxmltree::Document::parse(xml).ok()?;
    let dom = doc.root_element();
    let interfaces: Vec<String> = dom
        .children()
        .filter(|n| n.has_tag_name("devices"))
        .flat_map(|d| d.children().filter(|n| n.has_tag_name("interface")))
        .map(|i| {
            let mac = child(i, "mac").and_then(|m| m.attribute("address"));
            let source = child(i, "source").and_then(|s| {
                ["network", "bridge", "dev"]
                    .into_iter()
                    .find_map(|a| s.attribute(a))
            });
            format!("{} {}", mac.unwrap_or("(no MAC)"), source.unwrap_or("?"))
        })
        .collect();
    let list = |v: Vec<String>| {
        if v.is_empty() {
            "none".to_owned()
        } else {
            v.join(" + ")
        }
    };
    Some(Summary {
        memory: needs
            .memory
            .map_or("?".into(), |m| format!("{:.0} MiB", mib(m))),
        vcpus: child(dom, "vcpu")
            .and_then(|v| v.text())
            .map_or("?".into(), |t| t.trim().to_owned()),
        disks: list(
            needs
                .disks
                .iter()
                .map(|d| format!("{} {}", d.target, d.source))
                .collect(),
        ),
        interfaces: list(interfaces),
    })
}

/// What differs between definitions `a` and `b`, each said as
/// "memory 256 MiB here, 128 MiB on node-b" (`la`, `lb` name the sides);
/// empty when the two are the same.
pub fn differences(a: &str, b: &str, la: &str, lb: &str) -> Vec<String> {
    if a == b {
        return Vec::new();
    }
    let (Some(sa), Some(sb)) = (summary(a), summary(b)) else {
        return vec!["the XML (unreadable on one side)".into()];
    };
    let mut out: Vec<String> = [
        ("memory", &sa.memory, &sb.memory),
        ("vCPUs", &sa.vcpus, &sb.vcpus),
        ("disks", &sa.disks, &sb.disks),
        ("interfaces", &sa.interfaces, &sb.interfaces),
    ]
    .into_iter()
    .filter(|(_, x, y)| x != y)
    .map(|(what, x, y)| format!("{what} {x} {la}, {y} {lb}"))
    .collect();
    if out.is_empty() {
        out.push("settings other than memory, vCPUs, disks and interfaces".into());
    }
    out
}

/// plan-migration's line on this node's and the target's definitions.
pub fn side_by_side(local: &dyn Observe, peer: &dyn Observe, name: &str, node: &str) -> String {
    match (local.definition(name), peer.definition(name)) {
        (Ok(Some(here)), Ok(Some(there))) => {
            let diffs = differences(&here, &there, "here", &format!("on {node}"));
            if diffs.is_empty() {
                "the same on both nodes".into()
            } else {
                format!(
                    "differ: {}; the move gives {node} this node's",
                    diffs.join(", ")
                )
            }
        }
        (Ok(Some(_)), Ok(None)) => format!("{node} has none; the move defines it there"),
        (Ok(None), _) => "none here (a transient domain)".into(),
        (Err(e), _) | (_, Err(e)) => format!("unknown: {}", e.first_line()),
    }
}

fn config_hash(xml: &str) -> String {
    format!("{:016x}", fnv1a(xml.as_bytes()))
}

/// FNV-1a, 64 bits: a record of which file was defined, stable across
/// builds (std's hashers are not), not a defence against anyone (the file
/// is root's).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::fake::Fake;
    use crate::hypervisor::DomainState;

    const XML: &str = "<domain type='qemu'><name>vm1</name><uuid>u-1</uuid>\
        <memory unit='KiB'>131072</memory><vcpu>1</vcpu><devices>\
        <disk type='file' device='disk'><source file='/img/vm1.img'/><target dev='vda'/></disk>\
        <interface type='network'><mac address='52:54:00:00:00:01'/><source network='lan'/></interface>\
        </devices></domain>";

    fn bigger() -> String {
        XML.replace("131072", "262144")
            .replace("<vcpu>1", "<vcpu>2")
    }

    fn dir() -> std::path::PathBuf {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        std::env::temp_dir().join(format!("vmshift-defs-{}-{n}", std::process::id()))
    }

    fn peer_with(f: Fake) -> Peers {
        Peers::of_fakes(vec![f])
    }

    #[test]
    fn differences_name_what_an_admin_compares() {
        assert!(differences(XML, XML, "here", "there").is_empty());
        assert_eq!(
            differences(&bigger(), XML, "here", "on node-b"),
            [
                "memory 256 MiB here, 128 MiB on node-b",
                "vCPUs 2 here, 1 on node-b"
            ]
        );
        let other_lan = XML.replace("'lan'", "'wan'");
        assert_eq!(
            differences(XML, &other_lan, "before", "now"),
            ["interfaces 52:54:00:00:00:01 lan before, 52:54:00:00:00:01 wan now"]
        );
        let clock = XML.replace("</devices>", "</devices><clock offset='utc'/>");
        assert_eq!(
            differences(XML, &clock, "a", "b"),
            ["settings other than memory, vCPUs, disks and interfaces"]
        );
    }

    #[test]
    fn a_change_here_is_copied_to_the_peer_once() {
        let dir = dir();
        let here = Fake::new(&[DomainState::Running]);
        *here.definition.borrow_mut() = Some(XML.into());
        let copies = std::cell::Cell::new(0);
        let find = || {
            copies.set(copies.get() + 1);
            let b = Fake::new(&[DomainState::Shutoff]);
            *b.definition.borrow_mut() = Some(XML.into());
            peer_with(b)
        };
        let defs = Definitions::new(Records::new(&dir), Policy::Copy, &find, Utilization::off());
        // First seen: compared (the same), then quiet.
        assert_eq!(defs.if_changed(&here, "vm1"), Some(vec![Compared::Same]));
        assert_eq!(defs.if_changed(&here, "vm1"), None);
        *here.definition.borrow_mut() = Some(bigger());
        assert_eq!(defs.if_changed(&here, "vm1"), Some(vec![Compared::Copied]));
        assert_eq!(defs.if_changed(&here, "vm1"), None);
        assert_eq!(
            copies.get(),
            2,
            "the peer is found only when a comparison is due"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_peer_gets_the_definition_unless_it_runs_there_or_sync_is_off() {
        let dir = dir();
        let here = Fake::new(&[DomainState::Running]);
        *here.definition.borrow_mut() = Some(bigger());
        let none = || -> Peers { unreachable!() };
        let b = Fake::new(&[DomainState::Shutoff]);
        *b.definition.borrow_mut() = Some(XML.into());
        let mut peer = peer_with(b);
        let copy = Definitions::new(Records::new(&dir), Policy::Copy, &none, Utilization::off());
        assert_eq!(
            copy.now(&here, "vm1", Some(&mut peer)),
            Some(vec![Compared::Copied])
        );
        assert_eq!(peer.known[0].hv.definition("vm1").unwrap(), Some(bigger()));
        // Active there: left alone.
        let b = Fake::new(&[DomainState::Running]);
        *b.definition.borrow_mut() = Some(XML.into());
        let mut running = peer_with(b);
        assert_eq!(
            copy.now(&here, "vm1", Some(&mut running)),
            Some(vec![Compared::Differs])
        );
        // None there: defined there.
        let mut empty = peer_with(Fake::new(&[DomainState::Undefined]));
        assert_eq!(
            copy.now(&here, "vm1", Some(&mut empty)),
            Some(vec![Compared::Copied])
        );
        // Each of several peers on its own: copied where it is off, left
        // where it runs, and a node that could not be found said.
        let (c, d) = (
            Fake::new(&[DomainState::Shutoff]),
            Fake::new(&[DomainState::Running]),
        );
        *d.definition.borrow_mut() = Some(XML.into());
        let mut two = Peers::of_fakes(vec![c, d]);
        two.unknown = Some("node-d?x is no host name".into());
        assert_eq!(
            copy.now(&here, "vm1", Some(&mut two)),
            Some(vec![Compared::Copied, Compared::Differs, Compared::Unknown])
        );
        assert_eq!(two.known[0].hv.definition("vm1").unwrap(), Some(bigger()));
        assert_eq!(two.known[1].hv.definition("vm1").unwrap(), Some(XML.into()));
        let report = Definitions::new(
            Records::new(&dir),
            Policy::Report("sync_definition is off"),
            &none,
            Utilization::off(),
        );
        let b = Fake::new(&[DomainState::Shutoff]);
        *b.definition.borrow_mut() = Some(XML.into());
        assert_eq!(
            report.now(&here, "vm1", Some(&mut peer_with(b))),
            Some(vec![Compared::Differs])
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn config_is_defined_again_only_when_the_file_changed() {
        let dir = dir();
        let none = || -> Peers { unreachable!() };
        let defs = Definitions::new(Records::new(&dir), Policy::Copy, &none, Utilization::off());
        let hv = Fake::new(&[DomainState::Shutoff]);
        let path = Path::new("/etc/vmshift/vm1.xml");
        defs.redefine_from(&hv, "vm1", path, XML);
        defs.redefine_from(&hv, "vm1", path, XML);
        assert_eq!(hv.calls(), ["define"]);
        defs.redefine_from(&hv, "vm1", path, &bigger());
        assert_eq!(hv.calls(), ["define", "define"]);
        assert_eq!(hv.definition("vm1").unwrap(), Some(bigger()));
        assert_eq!(hv.state("vm1").unwrap(), DomainState::Shutoff);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
