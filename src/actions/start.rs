//! start: define from `config` when unknown here (again when the file
//! changed), never libvirt's autostart, never a second copy beside the
//! peer's, boot, wait, the definition compared with the peer's.

use std::time::{Duration, Instant};

use log::{debug, info, warn};

use crate::definition::Definitions;
use crate::error::{chain, hv_err, Error};
use crate::hypervisor::wait::{ensure_no_autostart, wait_running};
use crate::hypervisor::{DomainState, ErrorKind, Hypervisor};
use crate::ocf::{config, Budget, OcfRc, Outcome, Params};
use crate::peer::Peers;
use crate::preflight::{self, Needs};
use crate::storage;

/// Refuses to boot a server that runs on another node: two copies of one
/// server write to the same disks. Every peer is asked at once, and the
/// first that runs it refuses the start without waiting for the others;
/// one that cannot be asked is logged and left to Pacemaker's probes (they
/// run on every node before a start).
fn check_peers(peers: &mut Peers, name: &str) -> Result<(), Error> {
    if let Some(why) = &peers.unknown {
        warn!("cannot tell every other node ({why}); relying on Pacemaker's probes");
    }
    let asked = name.to_owned();
    let states = peers.ask_until(
        move |peer| peer.hv.state(&asked),
        |state| state.as_ref().is_ok_and(|s| s.is_active()),
    );
    for (peer, state) in peers.known.iter().zip(states) {
        let node = &peer.node;
        match state {
            Ok(state) if state.is_active() => {
                return Err(Error::RunningOnPeer {
                    name: name.into(),
                    peer: node.clone(),
                    state,
                })
            }
            Ok(state) => debug!("domain {name} on {node}: {state}"),
            Err(e) => warn!(
                "cannot ask {node} whether domain {name} runs there ({}); relying on Pacemaker's probes",
                chain(&e)
            ),
        }
    }
    Ok(())
}

/// A disk missing on this node (a LUN not mapped here, a DRBD device not
/// up, an image not copied) is this node's problem (5: Pacemaker starts
/// the server on another node), said with its path, not QEMU's error after
/// libvirt has half started it. A domain XML that cannot be read (`xml`
/// None or not parsed) leaves the question to libvirt's start.
fn check_disks(xml: Option<&str>, deadline: &Budget) -> Result<(), Error> {
    let Some(disks) = xml.and_then(|xml| storage::disks(xml).ok()) else {
        return Ok(());
    };
    match storage::first_missing(&disks, deadline.config_read()) {
        Some(d) => Err(Error::DiskMissing {
            disk: d.target,
            path: d.source.to_string(),
        }),
        None => Ok(()),
    }
}

/// What the domain needs from this node (its networks, bridges and pools,
/// an emulator for its machine, memory for its RAM), checked before the
/// boot: missing, it is this node's problem (5), said by name instead of
/// QEMU's error. An inactive network or pool is started with
/// `start_resources`. A domain XML that cannot be read leaves the
/// question to libvirt's start.
fn check_node<H: Hypervisor>(
    hv: &H,
    xml: Option<&str>,
    start_resources: bool,
) -> Result<(), Error> {
    let Some(needs) = xml.and_then(|xml| Needs::of(xml).ok()) else {
        return Ok(());
    };
    let checks = preflight::checks(hv, &needs, start_resources, None);
    for c in &checks {
        debug!("this node: {}: {:?} ({:.1?})", c.what, c.result, c.took);
    }
    match preflight::first_failure(&checks) {
        Some((what, why)) => Err(Error::NodeNotReady { what, why }),
        None => Ok(()),
    }
}

/// The pause before a start refused for a held job lock is tried again:
/// libvirt waited 30 s already; this only keeps a refusal that comes at
/// once from turning into a busy loop.
const BUSY_PAUSE: Duration = Duration::from_millis(500);

/// Asks libvirt to boot the domain. A call that another call's job lock
/// kept waiting is made again while it still fits: a migration API call
/// that an earlier action left running in libvirtd (migrate_to returned at
/// its deadline while libvirt's resume of a broken post-copy still ran)
/// holds the domain for a while after the stop that destroyed it, and
/// Pacemaker's recovery start comes at once. Failing that start on both
/// nodes would leave the server down.
fn boot<H: Hypervisor>(hv: &H, name: &str, deadline: &Budget) -> Result<(), Error> {
    let t0 = Instant::now();
    loop {
        let t = Instant::now();
        let e = match hv.start(name) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        match e.kind() {
            // Started by someone else in between: libvirt says it is active.
            ErrorKind::InvalidState => {
                debug!("domain {name}: start refused ({e}); checking its state");
                return Ok(());
            }
            ErrorKind::Busy if deadline.fits_again(t.elapsed() + BUSY_PAUSE) => {
                warn!(
                    "domain {name}: start waited {:.0?} for another call ({e}); trying again, {:.0?} left",
                    t.elapsed(),
                    deadline.remaining()
                );
                std::thread::sleep(BUSY_PAUSE);
            }
            ErrorKind::Busy => {
                return Err(Error::Busy {
                    what: "start",
                    name: name.into(),
                    waited: t0.elapsed(),
                    source: e,
                })
            }
            _ => return Err(hv_err("start", name)(e)),
        }
    }
}

/// start: 0 once the domain runs (at once if it already does).
pub fn start<H: Hypervisor>(
    hv: &H,
    p: &Params,
    deadline: &Budget,
    defs: &Definitions,
    peers: &mut Peers,
) -> Result<Outcome, Error> {
    let name = p.name.as_str();
    let mut state = hv.state(name).map_err(hv_err("get the state of", name))?;
    let defined_before = state != DomainState::Undefined;
    if state == DomainState::Undefined {
        let xml = match p.read_config(deadline.config_read()) {
            None => return Err(Error::NotDefined { name: name.into() }),
            Some(xml) => xml?,
        };
        config::check_name(name, &xml)?;
        hv.define(&xml).map_err(|source| {
            match (&p.config, source.kind() == ErrorKind::BadConfig) {
                (Some(path), true) => Error::BadConfig {
                    path: path.clone(),
                    problem: source.first_line(),
                },
                _ => hv_err("define", name)(source),
            }
        })?;
        defs.defined_from_config(name, &xml);
        info!(
            "domain {name}: defined from {}",
            p.config.as_deref().unwrap_or_else(|| "".as_ref()).display()
        );
        state = hv.state(name).map_err(hv_err("get the state of", name))?;
    }
    ensure_no_autostart(hv, name).map_err(hv_err("turn autostart off for", name))?;
    if state.is_active() {
        return Ok(Outcome::new(
            OcfRc::Success,
            format!("domain {name} is already active ({state})"),
        ));
    }
    if state == DomainState::Crashed {
        // A crashed domain kept by on_crash=preserve still holds its QEMU;
        // libvirt refuses to boot it until it is destroyed.
        info!("domain {name} is crashed: destroying it before the start");
        hv.destroy(name).map_err(hv_err("destroy", name))?;
    }
    check_peers(peers, name)?;
    if defined_before {
        defs.config_if_changed(hv, p, deadline.config_read());
    }
    // One read of the definition serves both checks.
    let xml = hv.xml(name).ok();
    check_disks(xml.as_deref(), deadline)?;
    check_node(hv, xml.as_deref(), p.start_resources)?;
    let t0 = Instant::now();
    boot(hv, name, deadline)?;
    let state = wait_running(hv, name, deadline.at()).map_err(hv_err("get the state of", name))?;
    if state != DomainState::Running {
        return Err(Error::NotStarted {
            name: name.into(),
            state,
            waited: t0.elapsed(),
        });
    }
    let took = t0.elapsed();
    defs.now(hv, name, Some(peers));
    Ok(Outcome::new(
        OcfRc::Success,
        format!("domain {name} started in {took:.1?}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::fake::Fake;
    use crate::hypervisor::{Presence, Resource};
    use crate::testing::{assert_contains, assert_starts};

    /// start with `extra` parameters and a `secs` timeout among `peers`.
    fn start_among(
        f: &Fake,
        peers: &mut Peers,
        extra: &[(&str, &str)],
        secs: u64,
    ) -> Result<Outcome, Error> {
        let budget = Budget::new(Duration::from_secs(secs));
        start(f, &Params::vm1(extra), &budget, &Definitions::none(), peers)
    }

    /// [`start_among`] with no peer known.
    fn start_alone(f: &Fake, extra: &[(&str, &str)], secs: u64) -> Result<Outcome, Error> {
        start_among(f, &mut Peers::unknown("test".into()), extra, secs)
    }

    #[test]
    fn start_defines_from_config_and_turns_autostart_off() {
        let dir = std::env::temp_dir().join(format!("vmshift-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("vm1.xml");
        std::fs::write(&cfg, "<domain type='qemu'><name>vm1</name></domain>").unwrap();
        let f = Fake::new(&[DomainState::Undefined]);
        f.autostart.set(true);
        let out = start_alone(&f, &[("OCF_RESKEY_config", cfg.to_str().unwrap())], 20).unwrap();
        assert_eq!(out.rc, OcfRc::Success);
        assert_eq!(f.calls(), ["define", "autostart off", "start"]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_start_on_a_node_without_what_the_server_needs_is_5_and_boots_nothing() {
        let f = Fake::new(&[DomainState::Shutoff]);
        *f.xml.borrow_mut() = "<domain type='qemu'><name>vm1</name><devices>\
            <interface type='bridge'><source bridge='br0'/></interface>\
            <interface type='network'><source network='lan'/></interface></devices></domain>"
            .into();
        let run = |f: &Fake, extra: &[(&str, &str)]| start_alone(f, extra, 20);
        let e = run(&f, &[]).unwrap_err();
        assert_eq!(e.to_string(), "this node: bridge br0 is missing");
        assert_eq!(e.rc(), OcfRc::ErrInstalled);
        // The bridge up, the network inactive: started only when asked.
        *f.resources.borrow_mut() = vec![
            (Resource::Bridge, "br0".into(), Presence::Active),
            (Resource::Network, "lan".into(), Presence::Inactive),
        ];
        let e = run(&f, &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "this node: network lan is inactive; see start_resources"
        );
        assert!(!f.calls().contains(&"start".to_owned()), "{:?}", f.calls());
        let out = run(&f, &[("OCF_RESKEY_start_resources", "true")]).unwrap();
        assert_eq!(out.rc, OcfRc::Success);
        assert!(
            f.calls()
                .ends_with(&["activate network lan".into(), "start".into()]),
            "{:?}",
            f.calls()
        );
    }

    #[test]
    fn a_start_kept_waiting_by_another_call_is_tried_again_while_it_fits() {
        let f = Fake::new(&[DomainState::Shutoff]);
        f.start_busy.set(2);
        assert_eq!(start_alone(&f, &[], 20).unwrap().rc, OcfRc::Success);
        assert_eq!(f.calls(), ["start", "start", "start"]);
        // No time for another whole wait: the reason names the holder.
        let f = Fake::new(&[DomainState::Shutoff]);
        f.start_busy.set(1);
        let e = start_alone(&f, &[], 6).unwrap_err();
        assert!(matches!(e, Error::Busy { what: "start", .. }), "{e}");
        assert_eq!(e.rc(), OcfRc::ErrGeneric);
        let reason = chain(&e);
        assert_starts(&reason, "cannot start domain vm1 for ");
        assert_contains(&reason, "held by monitor=remoteDispatch");
        assert_eq!(f.calls(), ["start"]);
    }

    #[test]
    fn a_disk_missing_here_is_5_with_its_path_and_nothing_is_booted() {
        let f = Fake::new(&[DomainState::Shutoff]);
        *f.xml.borrow_mut() = "<domain><name>vm1</name><devices><disk type='block' device='disk'>\
            <source dev='/dev/nonexistent-lun'/><target dev='vda'/></disk></devices></domain>"
            .into();
        let e = start_alone(&f, &[], 20).unwrap_err();
        assert_eq!(e.rc(), OcfRc::ErrInstalled);
        assert_eq!(
            e.to_string(),
            "disk vda \"/dev/nonexistent-lun\" is missing on this node"
        );
        assert!(f.calls().is_empty(), "{:?}", f.calls());
    }

    /// A peer per state, shut off, running...; None: it cannot be asked.
    fn peers(states: &[Option<DomainState>]) -> Peers {
        let fakes = states
            .iter()
            .map(|state| state.map_or_else(Fake::unreachable, |s| Fake::new(&[s])))
            .collect();
        Peers::of_fakes(fakes)
    }

    #[test]
    fn start_refuses_a_server_running_on_any_other_node() {
        let f = Fake::new(&[DomainState::Shutoff]);
        let run = |peers: &mut Peers| start_among(&f, peers, &[], 20);
        let (off, on) = (Some(DomainState::Shutoff), Some(DomainState::Running));
        let e = run(&mut peers(&[off, on])).unwrap_err();
        assert!(matches!(e, Error::RunningOnPeer { .. }), "{e}");
        assert!(chain(&e).contains("already runs on node-c"), "{e}");
        assert!(f.calls().is_empty(), "nothing booted");
        // A peer that cannot be asked does not block the start.
        let out = run(&mut peers(&[None, off])).unwrap();
        assert_eq!(out.rc, OcfRc::Success);
    }

    #[test]
    fn start_unknown_domain_without_config_is_not_installed() {
        let e = start_alone(&Fake::new(&[DomainState::Undefined]), &[], 20);
        assert_eq!(e.unwrap_err().rc(), OcfRc::ErrInstalled);
    }

    #[test]
    fn start_running_domain_is_success_at_once() {
        let f = Fake::new(&[DomainState::Running]);
        assert_eq!(start_alone(&f, &[], 20).unwrap().rc, OcfRc::Success);
        assert!(f.calls().is_empty());
    }
}
