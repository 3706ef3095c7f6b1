//! What a node must have before a server runs there, asked of that node's
//! libvirtd before anything is started: the networks, bridges and storage
//! pools the domain XML names (active, or started when `start_resources`
//! is set), an emulator that runs its machine, memory for its RAM, and, on
//! a migration target, a definition of the same domain if it has one.
//! migrate_to asks the target and start this node, so that a move or a
//! boot fails with what is missing instead of QEMU's error after libvirt
//! has half begun; plan-migration prints every answer.

use std::time::{Duration, Instant};

use crate::hypervisor::{mib, Error, Hypervisor, Machine, Presence, Resource};
use crate::storage::{self, child};

/// One step of a check, for the dry run and the log: what was asked, and
/// the answer (Ok: what was found; Err: why it will not do, as a predicate
/// of `what`).
#[derive(Debug)]
pub struct Check {
    pub what: String,
    pub result: Result<String, String>,
    pub took: Duration,
}

/// Memory kept beside the guest's RAM: QEMU's own (its code, device
/// buffers, page tables) and some for the host.
pub const MEMORY_MARGIN: u64 = 256 << 20;

/// What a domain XML needs from the node it runs on.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Needs {
    pub uuid: Option<String>,
    /// In document order, each once.
    pub resources: Vec<(Resource, String)>,
    pub machine: Machine,
    /// The guest's RAM (`<memory>`).
    pub memory: Option<u64>,
    /// Its writable disks, which a definition on a migration target must
    /// have too.
    pub disks: Vec<storage::Disk>,
}

impl Needs {
    pub fn of(xml: &str) -> Result<Needs, storage::Error> {
        let doc =
            roxmltree::Document::parse(xml).map_err(|e| storage::Error::Xml(e.to_string()))?;
        let dom = doc.root_element();
        let devices = || dom.children().filter(|n| n.has_tag_name("devices"));
        let mut resources = Vec::new();
        let mut add = |r: Resource, name: Option<&str>| {
            if let Some(name) = name {
                if !resources.iter().any(|(k, n)| *k == r && n == name) {
                    resources.push((r, name.to_owned()));
                }
            }
        };
        for dev in devices().flat_map(|d| d.children()) {
            let source = child(dev, "source");
            let attr = |a| source.and_then(|s| s.attribute(a));
            match (dev.tag_name().name(), dev.attribute("type")) {
                // A running domain's XML shows a network's interface as the
                // kind it got (type='bridge' for a bridge-mode network),
                // its network still named: the network is what the
                // target needs, its bridge is the network's.
                ("interface", Some("network" | "bridge" | "direct"))
                    if attr("network").is_some() =>
                {
                    add(Resource::Network, attr("network"))
                }
                ("interface", Some("bridge")) => add(Resource::Bridge, attr("bridge")),
                ("disk", Some("volume")) => add(Resource::Pool, attr("pool")),
                _ => {}
            }
        }
        let os_type = child(dom, "os").and_then(|os| child(os, "type"));
        let text = |n: Option<roxmltree::Node<'_, '_>>| {
            n.and_then(|n| n.text()).map(|t| t.trim().to_owned())
        };
        Ok(Needs {
            uuid: text(child(dom, "uuid")),
            resources,
            machine: Machine {
                emulator: text(devices().find_map(|d| child(d, "emulator"))),
                arch: os_type.and_then(|t| t.attribute("arch")).map(str::to_owned),
                machine: os_type
                    .and_then(|t| t.attribute("machine"))
                    .map(str::to_owned),
                virt_type: dom.attribute("type").map(str::to_owned),
            },
            memory: storage::memory_bytes(xml),
            disks: storage::disks(xml)?,
        })
    }
}

/// The checks of a node for a domain with `needs`. `activate`: start an
/// inactive network or pool there (`start_resources`; never in a dry run).
/// `same_domain`: on a migration target, the domain's name: a definition
/// there must have the same UUID and disks (libvirt refuses an
/// incoming domain whose UUID differs, and a failover would boot the
/// other disks).
pub fn checks(
    hv: &dyn Hypervisor,
    needs: &Needs,
    activate: bool,
    same_domain: Option<&str>,
) -> Vec<Check> {
    let mut out = Vec::new();
    for (kind, name) in &needs.resources {
        out.push(timed(format!("{kind} {name}"), || {
            resource(hv, *kind, name, activate)
        }));
    }
    out.push(timed(machine_text(&needs.machine), || {
        hv.supports(&needs.machine)
            .map(|()| "runs here".to_owned())
            .map_err(|e| format!("cannot run here: {}", e.first_line()))
    }));
    if let Some(ram) = needs.memory {
        out.push(timed("memory".into(), || {
            let need = ram + MEMORY_MARGIN;
            let have = hv.available_memory().map_err(|e| format!("unknown: {}", e.first_line()))?;
            let (have, need) = (mib(have), mib(need));
            if have >= need {
                Ok(format!(
                    "{have:.0} MiB free or reclaimable, {need:.0} MiB needed ({:.0} MiB RAM and {:.0} MiB for QEMU)",
                    mib(ram),
                    mib(MEMORY_MARGIN)
                ))
            } else {
                Err(format!("is short: {have:.0} MiB, {need:.0} MiB needed"))
            }
        }));
    }
    if let Some(name) = same_domain {
        out.push(timed(format!("the definition of {name}"), || {
            definition(hv, name, needs)
        }));
    }
    out
}

/// The first check that failed: `what` and why.
pub fn first_failure(checks: &[Check]) -> Option<(String, String)> {
    checks.iter().find_map(|c| {
        c.result
            .as_ref()
            .err()
            .map(|why| (c.what.clone(), why.clone()))
    })
}

fn timed(what: String, f: impl FnOnce() -> Result<String, String>) -> Check {
    let t0 = Instant::now();
    let result = f();
    Check {
        what,
        result,
        took: t0.elapsed(),
    }
}

/// `emulator /usr/bin/qemu-system-x86_64 (qemu, x86_64, pc-i440fx-10.0)`
fn machine_text(m: &Machine) -> String {
    let parts: Vec<&str> = [&m.virt_type, &m.arch, &m.machine]
        .into_iter()
        .filter_map(|p| p.as_deref())
        .collect();
    format!(
        "emulator {} ({})",
        m.emulator.as_deref().unwrap_or("(libvirt's default)"),
        parts.join(", ")
    )
}

fn resource(
    hv: &dyn Hypervisor,
    kind: Resource,
    name: &str,
    activate: bool,
) -> Result<String, String> {
    let unknown = |e: Error| format!("unknown: {}", e.first_line());
    match hv.presence(kind, name).map_err(unknown)? {
        Presence::Active => Ok("active".into()),
        Presence::Missing if kind == Resource::Bridge => Err("is missing".into()),
        Presence::Missing => Err("is not defined".into()),
        // libvirt reads a bridge's operstate, which stays "down" until a
        // port is up: an empty host-only bridge, whose first port is the
        // guest's tap, works. Only a missing bridge fails the start.
        Presence::Inactive if kind == Resource::Bridge => {
            Ok("present, without carrier (no port up yet)".into())
        }
        Presence::Inactive if activate => hv
            .activate(kind, name)
            .map(|()| "was inactive: started (start_resources)".to_owned())
            .map_err(|e| format!("is inactive and did not start: {}", e.first_line())),
        Presence::Inactive => Err("is inactive; see start_resources".into()),
    }
}

fn definition(hv: &dyn Hypervisor, name: &str, here: &Needs) -> Result<String, String> {
    let Some(xml) = hv
        .definition(name)
        .map_err(|e| format!("unknown: {}", e.first_line()))?
    else {
        return Ok("none yet (the move defines it)".into());
    };
    let there = Needs::of(&xml).map_err(|e| format!("unreadable: {e}"))?;
    if there.uuid != here.uuid {
        return Err(format!(
            "has another UUID ({} there, {} here)",
            there.uuid.as_deref().unwrap_or("none"),
            here.uuid.as_deref().unwrap_or("none")
        ));
    }
    // `vda /var/lib/libvirt/images/vm1.img`: a target dev has no space.
    let disks = |n: &Needs| {
        n.disks
            .iter()
            .map(|d| format!("{} {}", d.target, d.source))
            .collect::<Vec<_>>()
    };
    let (theirs, ours) = (disks(&there), disks(here));
    if theirs != ours {
        return Err(format!(
            "has other disks ({} there, {} here)",
            theirs.join(", "),
            ours.join(", ")
        ));
    }
    Ok("the same domain and disks".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::fake::Fake;
    use crate::hypervisor::DomainState;
    use crate::testing::assert_starts;

    const XML: &str = "<domain type='qemu'><name>vm1</name><uuid>u-1</uuid>\
        <memory unit='MiB'>128</memory>\
        <os><type arch='x86_64' machine='pc'>hvm</type></os><devices>\
        <emulator>/usr/bin/qemu-system-x86_64</emulator>\
        <disk type='file' device='disk'><source file='/img/vm1.img'/><target dev='vda'/></disk>\
        <disk type='volume' device='disk'><source pool='p1' volume='v'/><target dev='vdb'/></disk>\
        <interface type='network'><source network='lan'/></interface>\
        <interface type='bridge'><source bridge='br0'/></interface>\
        <interface type='network'><source network='lan'/></interface>\
        <interface type='bridge'><source network='lan' bridge='virbr9'/></interface>\
        </devices></domain>";

    fn node(resources: &[(Resource, &str, Presence)]) -> Fake {
        let f = Fake::new(&[DomainState::Undefined]);
        *f.resources.borrow_mut() = resources
            .iter()
            .map(|&(k, n, p)| (k, n.to_owned(), p))
            .collect();
        f
    }

    fn all_there() -> Fake {
        node(&[
            (Resource::Network, "lan", Presence::Active),
            (Resource::Bridge, "br0", Presence::Active),
            (Resource::Pool, "p1", Presence::Active),
        ])
    }

    fn failure(f: &Fake, activate: bool, same: bool) -> Option<(String, String)> {
        let needs = Needs::of(XML).unwrap();
        first_failure(&checks(f, &needs, activate, same.then_some("vm1")))
    }

    #[test]
    fn needs_come_from_the_xml_each_once() {
        let n = Needs::of(XML).unwrap();
        assert_eq!(
            n.resources,
            [
                (Resource::Pool, "p1".to_owned()),
                (Resource::Network, "lan".to_owned()),
                (Resource::Bridge, "br0".to_owned()),
            ]
        );
        assert_eq!(n.uuid.as_deref(), Some("u-1"));
        assert_eq!(n.memory, Some(128 << 20));
        assert_eq!(
            machine_text(&n.machine),
            "emulator /usr/bin/qemu-system-x86_64 (qemu, x86_64, pc)"
        );
    }

    #[test]
    fn a_node_with_everything_passes() {
        assert_eq!(failure(&all_there(), false, true), None);
    }

    #[test]
    fn what_is_missing_is_named() {
        let f = node(&[(Resource::Bridge, "br0", Presence::Active)]);
        assert_eq!(
            failure(&f, false, false),
            Some(("storage pool p1".into(), "is not defined".into()))
        );
        let f = node(&[
            (Resource::Pool, "p1", Presence::Active),
            (Resource::Network, "lan", Presence::Active),
            (Resource::Bridge, "br0", Presence::Inactive),
        ]);
        assert_eq!(failure(&f, true, false), None, "an empty bridge works");
        let mut f = all_there();
        f.unsupported = Some("no emulator".into());
        let (what, why) = failure(&f, false, false).unwrap();
        assert_starts(&what, "emulator /usr/bin/qemu-system-x86_64");
        assert_eq!(why, "cannot run here: no emulator");
        let mut f = all_there();
        f.memory_bytes = 300 << 20;
        let (what, why) = failure(&f, false, false).unwrap();
        assert_eq!(what, "memory");
        assert_eq!(why, "is short: 300 MiB, 384 MiB needed");
    }

    #[test]
    fn inactive_networks_and_pools_start_only_when_asked() {
        let f = node(&[
            (Resource::Pool, "p1", Presence::Inactive),
            (Resource::Network, "lan", Presence::Inactive),
            (Resource::Bridge, "br0", Presence::Active),
        ]);
        assert_eq!(
            failure(&f, false, false).unwrap().1,
            "is inactive; see start_resources"
        );
        assert!(f.calls().is_empty());
        assert_eq!(failure(&f, true, false), None);
        assert_eq!(
            f.calls(),
            ["activate storage pool p1", "activate network lan"]
        );
    }

    #[test]
    fn a_definition_there_must_be_the_same_domain() {
        let f = all_there();
        *f.definition.borrow_mut() = Some(XML.replace("u-1", "u-2"));
        let (what, why) = failure(&f, false, true).unwrap();
        assert_eq!(what, "the definition of vm1");
        assert_eq!(why, "has another UUID (u-2 there, u-1 here)");
        *f.definition.borrow_mut() = Some(XML.replace("/img/vm1.img", "/img/old.img"));
        let (_, why) = failure(&f, false, true).unwrap();
        assert_starts(&why, "has other disks (vda /img/old.img");
        *f.definition.borrow_mut() = Some(XML.into());
        assert_eq!(failure(&f, false, true), None);
    }
}
