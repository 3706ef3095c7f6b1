//! monitor (and probes): 0 while the domain is active here, 7 when it is
//! cleanly stopped, never 7 while a QEMU of it lives.

use log::warn;

use crate::definition::Definitions;
use crate::error::{chain, hv_err, Error};
use crate::hypervisor::{DomainState, Observe, Postcopy, Qemu};
use crate::ocf::{short, OcfRc, Outcome, Params};

/// monitor (and probes, which follow the same rule): 0 while the domain is
/// active, 7 when it is shut off or not defined, 1 when it crashed or its
/// state cannot be known. Never 7 while a QEMU process of the domain lives
/// on this node: Pacemaker would start it elsewhere, and it would run twice.
/// The one exception is the paused source of a running post-copy: the
/// guest already runs on the target, and a 0 here as well would make a
/// probe see it active on both nodes, whose default recovery stops both.
/// A failed post-copy is 1 on either side: the guest cannot run until the
/// copy is resumed by hand, and a 0 would hide a hung server.
///
/// A server that runs here has its definition compared with the peer's
/// when it changed ([`Definitions::if_changed`]); that never changes the
/// answer.
pub fn monitor<H: Observe>(hv: &H, p: &Params, defs: &Definitions) -> Result<Outcome, Error> {
    let name = p.name.as_str();
    let status = match hv.status(name) {
        Ok(s) => s,
        Err(e) => {
            let e = hv_err("get the state of", name)(e);
            return match hv.qemu(name) {
                // libvirtd restarting or hung says nothing about the guest:
                // its QEMU process is the server, and it is alive.
                Qemu::Alive(pid) => {
                    warn!("{}; QEMU pid {pid} of domain {name} is alive", chain(&e));
                    Ok(Outcome::new(
                        OcfRc::Success,
                        format!(
                            "domain {name} is running (QEMU pid {pid}; libvirtd not answering)"
                        ),
                    ))
                }
                _ => Err(e),
            };
        }
    };
    let state = status.state;
    match status.postcopy {
        Some(Postcopy::Outgoing) => {
            return Ok(Outcome::new(
                OcfRc::NotRunning,
                format!(
                    "domain {} runs on the target of its post-copy; only its unfetched pages are left here",
                    short(name)
                ),
            ))
        }
        Some(Postcopy::Failed) => {
            return Err(Error::PostcopyFailed {
                name: name.into(),
                state,
            })
        }
        _ => {}
    }
    if state.is_active() {
        // In a migration the definitions are the migration's to set
        // (PERSIST_DEST); the first monitor after it compares them.
        if !status.migrating {
            defs.if_changed(hv, name);
        }
        return Ok(Outcome::new(
            OcfRc::Success,
            format!("domain {name} is active ({state})"),
        ));
    }
    if !matches!(state, DomainState::Shutoff | DomainState::Undefined) {
        return Ok(Outcome::new(
            OcfRc::ErrGeneric,
            format!("domain {} is {state}", short(name)),
        ));
    }
    match Error::stopped_but(name, state, hv.qemu(name)) {
        Some(e) => Err(e),
        None => Ok(Outcome::new(
            OcfRc::NotRunning,
            format!("domain {} is {state}", short(name)),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::fake::Fake;

    /// monitor of vm1 with its default parameters, no peer's definition.
    fn monitor_alone(f: &Fake) -> Result<Outcome, Error> {
        monitor(f, &Params::vm1(&[]), &Definitions::none())
    }

    #[test]
    fn monitor_maps_states() {
        for (s, rc) in [
            (DomainState::Running, OcfRc::Success),
            (DomainState::Paused, OcfRc::Success),
            (DomainState::Blocked, OcfRc::Success),
            (DomainState::ShuttingDown, OcfRc::Success),
            (DomainState::PmSuspended, OcfRc::Success),
            (DomainState::Shutoff, OcfRc::NotRunning),
            (DomainState::Undefined, OcfRc::NotRunning),
            (DomainState::Crashed, OcfRc::ErrGeneric),
            (DomainState::NoState, OcfRc::ErrGeneric),
        ] {
            assert_eq!(monitor_alone(&Fake::new(&[s])).unwrap().rc, rc, "{s}");
        }
    }

    #[test]
    fn monitor_never_says_stopped_while_qemu_lives() {
        let f = Fake::new(&[DomainState::Undefined]);
        f.pid.set(Some(42));
        let e = monitor_alone(&f).unwrap_err();
        assert!(
            matches!(e, Error::QemuUnknownToLibvirt { pid: 42, .. }),
            "{e}"
        );
        assert_eq!(e.rc(), OcfRc::ErrGeneric);
        // A process table that cannot be read is not "stopped" either.
        let mut f = Fake::new(&[DomainState::Shutoff]);
        f.qemu_unknown = true;
        assert_eq!(monitor_alone(&f).unwrap_err().rc(), OcfRc::ErrGeneric);
        let f = Fake::unreachable();
        f.pid.set(Some(42));
        assert_eq!(monitor_alone(&f).unwrap().rc, OcfRc::Success);
        let e = monitor_alone(&Fake::unreachable()).unwrap_err();
        assert_eq!(e.rc(), OcfRc::ErrGeneric);
    }

    #[test]
    fn monitor_leaves_a_post_copy_source_to_the_target() {
        let f = Fake::new(&[DomainState::Paused]);
        *f.postcopy.borrow_mut() = vec![Some(Postcopy::Outgoing)];
        assert_eq!(monitor_alone(&f).unwrap().rc, OcfRc::NotRunning);
        // The target of the same copy runs the guest.
        let f = Fake::new(&[DomainState::Running]);
        *f.postcopy.borrow_mut() = vec![Some(Postcopy::Incoming)];
        assert_eq!(monitor_alone(&f).unwrap().rc, OcfRc::Success);
        // A broken copy: the guest cannot run on either side.
        for s in [DomainState::Running, DomainState::Paused] {
            let f = Fake::new(&[s]);
            *f.postcopy.borrow_mut() = vec![Some(Postcopy::Failed)];
            let e = monitor_alone(&f).unwrap_err();
            assert!(matches!(e, Error::PostcopyFailed { .. }), "{e}");
            assert_eq!(e.rc(), OcfRc::ErrGeneric);
        }
    }

    #[test]
    fn monitor_reasons_fit_pacemakers_128_bytes() {
        // The other reasons of a non-zero exit.
        let long = "é".repeat(123);
        let p =
            Params::from_env(&[("OCF_RESKEY_name", long.as_str())].into_iter().collect()).unwrap();
        let f = Fake::new(&[DomainState::Paused]);
        *f.postcopy.borrow_mut() = vec![Some(Postcopy::Outgoing)];
        let f2 = Fake::new(&[DomainState::Crashed]);
        let ask = |f: &Fake| monitor(f, &p, &Definitions::none()).unwrap();
        for out in [ask(&f), ask(&f2)] {
            assert_ne!(out.rc, OcfRc::Success);
            assert!(
                out.reason.len() <= crate::ocf::EXIT_REASON_MAX,
                "{}",
                out.reason
            );
        }
    }
}
