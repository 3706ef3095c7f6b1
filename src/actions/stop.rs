//! stop: 0 only once no QEMU of the domain lives here; graceful first,
//! destroy in time, a running migration ended first, a hung libvirtd or one
//! that lost its QEMU told apart, force_stop's kill.

use std::thread::sleep;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use crate::definition::Definitions;
use crate::error::{chain, hv_err, Error};
use crate::hypervisor::wait::{wait_status, POLL};
use crate::hypervisor::{
    self, DomainState, ErrorKind, Hypervisor, Observe, Postcopy, Qemu, Status,
};
use crate::ocf::{Budget, OcfRc, Outcome, Params};

/// How often stop presses the ACPI power button again: a guest that is
/// still booting (no ACPI handler loaded yet) misses the first press.
const ACPI_REPEAT: Duration = Duration::from_secs(3);

/// stop: 0 once no QEMU of the domain runs here; graceful ACPI shutdown
/// first (unless `force_stop`), destroy early enough to return before the
/// deadline (VirtualDomain's model: graceful until timeout − reserve).
/// `probe` asks libvirtd the first question within a shorter budget, so a
/// hung libvirtd leaves time to make sure of the QEMU process.
///
/// A domain that ran here and was stopped has its definition compared with
/// the peer's afterwards ([`Definitions::now`]): a failover then boots what
/// ran here. That never fails the stop.
pub fn stop<H: Hypervisor>(
    hv: &H,
    probe: &dyn Observe,
    p: &Params,
    deadline: &Budget,
    defs: &Definitions,
) -> Result<Outcome, Error> {
    let name = p.name.as_str();
    // Every running domain has a live QEMU process; with none, nothing of
    // the server is left here and libvirtd need not be asked. This keeps a
    // stop on a node whose libvirtd is down or hung from waiting for it
    // (recovery after a failed move runs stop on both nodes).
    if hv.qemu(name) == Qemu::Gone {
        return Ok(Outcome::new(
            OcfRc::Success,
            format!("domain {name} is not running here (no QEMU process)"),
        ));
    }
    let status = match probe.status(name) {
        Ok(s) => s,
        Err(e) if e.is_unreachable() => return stop_without_libvirt(hv, p, e),
        Err(e) => return Err(hv_err("get the state of", name)(e)),
    };
    let t0 = Instant::now();
    // The source of a post-copy (paused, reason post-copy) holds pages the
    // guest on the target still lacks: shutting it down or destroying it
    // would kill the guest there, and libvirt's migration job blocks both
    // until the copy ends anyway. Pacemaker runs this stop right after
    // migrate_from, so wait for the copy; libvirt then shuts this side off.
    let status = if status.postcopy == Some(Postcopy::Outgoing) {
        info!("domain {name} is the source of a post-copy: waiting for the copy to end");
        let outgoing = |p| p == Some(Postcopy::Outgoing);
        match wait_status(hv, name, deadline.at(), |s| !outgoing(s.postcopy))
            .map_err(hv_err("get the state of", name))?
        {
            s if outgoing(s.postcopy) => {
                return Err(Error::PostcopyRunning {
                    name: name.into(),
                    waited: t0.elapsed(),
                })
            }
            seen => seen,
        }
    } else {
        status
    };
    let (status, destroy_now) = end_migration(hv, name, status, deadline)?;
    let state = status.state;
    if !state.is_active() && state != DomainState::Crashed && state != DomainState::NoState {
        return stopped_per_libvirt(hv, p, state);
    }
    let mut how = "destroyed";
    // ACPI only reaches a guest that runs; a crashed or stateless one is
    // destroyed at once, and so is one whose post-copy failed: with part
    // of its memory on the other node it cannot act on the button, and
    // waiting for it would only delay the restart.
    let graceful = !p.force_stop
        && destroy_now.is_none()
        && state.is_active()
        && status.postcopy != Some(Postcopy::Failed);
    if status.postcopy == Some(Postcopy::Failed) {
        how = "destroyed (its post-copy had failed)";
    }
    if let Some(why) = destroy_now {
        how = why;
    }
    if graceful {
        let graceful_end = deadline.earlier_by(deadline.destroy_reserve());
        let mut state = state;
        let mut next_press = Instant::now();
        while state.is_active() && Instant::now() < graceful_end {
            if Instant::now() >= next_press {
                match hv.shutdown(name) {
                    Ok(()) => debug!("domain {name}: ACPI shutdown requested"),
                    Err(e) if e.kind() == ErrorKind::InvalidState => {}
                    Err(e) => return Err(hv_err("shut down", name)(e)),
                }
                next_press = Instant::now() + ACPI_REPEAT;
            }
            state = wait_status(hv, name, graceful_end.min(next_press), |s| {
                !s.state.is_active()
            })
            .map_err(hv_err("get the state of", name))?
            .state;
        }
        if !state.is_active() {
            defs.now(hv, name, None);
            return Ok(Outcome::new(
                OcfRc::Success,
                format!("domain {name} shut down gracefully in {:.1?}", t0.elapsed()),
            ));
        }
        warn!(
            "domain {name} did not shut down within {:.1?}; destroying it to stop before the deadline",
            t0.elapsed()
        );
        how = "destroyed after the guest ignored ACPI shutdown";
    }
    match hv.destroy(name) {
        Ok(()) => {}
        // Already gone by itself between the check and the destroy.
        Err(e) if e.kind() == ErrorKind::InvalidState => {}
        Err(e) => return Err(hv_err("destroy", name)(e)),
    }
    let state = wait_status(hv, name, deadline.at(), |s| {
        !s.state.is_active() && s.state != DomainState::Crashed
    })
    .map_err(hv_err("get the state of", name))?
    .state;
    if state.is_active() || state == DomainState::Crashed {
        return Err(Error::StillActive {
            name: name.into(),
            state,
        });
    }
    defs.now(hv, name, None);
    Ok(Outcome::new(
        OcfRc::Success,
        format!("domain {name} {how} in {:.1?}", t0.elapsed()),
    ))
}

/// A migration of the domain may still run when stop comes: Pacemaker
/// killed migrate_to at its timeout, libvirt's peer-to-peer job goes on,
/// and Pacemaker now stops the server on both nodes. libvirt's job lock
/// then refuses a shutdown for 30 s ("cannot acquire state change lock"),
/// while destroy and abort are allowed during a migration job. The source's
/// outgoing copy is aborted (an aborted pre-copy resumes the guest here,
/// which then stops as usual); the target's incoming copy holds no guest
/// yet and is destroyed at once. Returns the status after that and, when
/// the domain must be destroyed without a graceful phase, why.
fn end_migration<H: Hypervisor>(
    hv: &H,
    name: &str,
    status: Status,
    deadline: &Budget,
) -> Result<(Status, Option<&'static str>), Error> {
    // Only the source has job statistics ("migration statistics are
    // available only on the source host" on the target).
    let outgoing = matches!(hv.job(name), Ok(Some(j)) if j.migration_out);
    if !outgoing {
        let why = status
            .migrating
            .then_some("destroyed (the incoming copy of a migration that did not finish)");
        return Ok((status, why));
    }
    info!("domain {name} is migrating out: aborting the migration before stopping it");
    if let Err(e) = hv.abort_job(name) {
        warn!("abort failed: {}", chain(&e));
    }
    let until = Instant::now() + deadline.abort_wait().min(deadline.remaining());
    while matches!(hv.job(name), Ok(Some(_))) && Instant::now() < until {
        sleep(POLL);
    }
    let status = hv.status(name).map_err(hv_err("get the state of", name))?;
    if matches!(hv.job(name), Ok(Some(_))) {
        return Ok((
            status,
            Some("destroyed (its migration could not be aborted)"),
        ));
    }
    Ok((status, None))
}

/// libvirt says the domain is stopped (`state`): true only when no QEMU
/// process of it lives here. One that libvirt lost track of (a libvirtd
/// restarted without its state, a QEMU started by hand under the domain's
/// name) still runs the server: stop fails with its pid, or kills it with
/// `force_stop`.
fn stopped_per_libvirt<H: Hypervisor>(
    hv: &H,
    p: &Params,
    state: DomainState,
) -> Result<Outcome, Error> {
    let name = p.name.as_str();
    match hv.qemu(name) {
        Qemu::Alive(pid) if p.force_stop => {
            kill_qemu(hv, name, pid, &format!("libvirt reports it {state}"))
        }
        qemu => match Error::stopped_but(name, state, qemu) {
            Some(e) => Err(e),
            None => Ok(Outcome::new(
                OcfRc::Success,
                format!("domain {name} is already stopped ({state})"),
            )),
        },
    }
}

/// force_stop's last resort: kill the domain's verified QEMU process
/// without libvirtd, then make sure it is gone.
fn kill_qemu<H: Hypervisor>(hv: &H, name: &str, pid: u32, why: &str) -> Result<Outcome, Error> {
    warn!("domain {name}: killing its QEMU pid {pid} directly ({why}; force_stop=true)");
    hv.kill_qemu(name, pid)
        .map_err(hv_err("kill the QEMU of", name))?;
    match hv.qemu(name) {
        Qemu::Gone | Qemu::Unseen => Ok(Outcome::new(
            OcfRc::Success,
            format!("domain {name}: QEMU pid {pid} killed ({why}; force_stop=true)"),
        )),
        Qemu::Alive(pid) => Err(Error::QemuSurvived {
            name: name.into(),
            pid,
        }),
        Qemu::Unreadable(why) => Err(Error::QemuUnreadable {
            name: name.into(),
            why,
        }),
    }
}

/// stop while libvirtd cannot be asked: success only when no QEMU process
/// of the domain lives on this node (then nothing of the server is left
/// here, which is what a stop must guarantee); with `force_stop`, the
/// verified QEMU process is killed.
fn stop_without_libvirt<H: Hypervisor>(
    hv: &H,
    p: &Params,
    e: hypervisor::Error,
) -> Result<Outcome, Error> {
    let name = p.name.as_str();
    match hv.qemu(name) {
        Qemu::Alive(pid) if p.force_stop => kill_qemu(hv, name, pid, "libvirtd does not answer"),
        Qemu::Alive(pid) => Err(Error::QemuAlive {
            name: name.into(),
            pid,
            source: e,
        }),
        Qemu::Gone => Ok(Outcome::new(
            OcfRc::Success,
            format!("libvirtd does not answer ({e}), but no QEMU process of domain {name} lives on this node"),
        )),
        Qemu::Unreadable(why) => {
            warn!("domain {name}: {why}");
            Err(hv_err("get the state of", name)(e))
        }
        Qemu::Unseen => Err(hv_err("get the state of", name)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::fake::Fake;
    use crate::testing::assert_contains;

    fn stop_with(f: &Fake, extra: &[(&str, &str)], secs: u64) -> Result<Outcome, Error> {
        stop(
            f,
            f,
            &Params::vm1(extra),
            &Budget::new(Duration::from_secs(secs)),
            &Definitions::none(),
        )
    }

    /// [`stop_with`], which must succeed.
    #[track_caller]
    fn stopped(f: &Fake, extra: &[(&str, &str)], secs: u64) -> Outcome {
        let out = stop_with(f, extra, secs).unwrap();
        assert_eq!(out.rc, OcfRc::Success, "{}", out.reason);
        out
    }

    /// [`stopped`] with a `secs` timeout, which must end within `limit`.
    #[track_caller]
    fn stopped_within(f: &Fake, secs: u64, limit: Duration) -> Outcome {
        let t = Instant::now();
        let out = stopped(f, &[], secs);
        assert!(t.elapsed() < limit, "{:?}", t.elapsed());
        out
    }

    #[test]
    fn stop_graceful() {
        let f = Fake::new(&[DomainState::Running]);
        stopped(&f, &[], 20);
        assert_eq!(f.calls(), ["shutdown"]);
    }

    #[test]
    fn stop_force_destroys_at_once() {
        let f = Fake::new(&[DomainState::Running]);
        let force = [("OCF_RESKEY_force_stop", "true")];
        stopped(&f, &force, 20);
        assert_eq!(f.calls(), ["destroy"]);
    }

    #[test]
    fn stop_destroys_a_guest_ignoring_acpi_before_the_deadline() {
        let mut f = Fake::new(&[DomainState::Running]);
        f.after_shutdown = None;
        // 4 s timeout: deadline at 3 s, destroy reserve 2 s -> 1 s graceful.
        let out = stopped_within(&f, 4, Duration::from_secs(3));
        assert_contains(&out.reason, "ignored ACPI");
        assert_eq!(f.calls().last().map(String::as_str), Some("destroy"));
    }

    #[test]
    fn stop_waits_for_an_outgoing_post_copy_and_touches_nothing() {
        let f = Fake::new(&[DomainState::Paused, DomainState::Shutoff]);
        *f.postcopy.borrow_mut() = vec![Some(Postcopy::Outgoing), Some(Postcopy::Outgoing), None];
        stopped(&f, &[], 20);
        assert!(f.calls().is_empty(), "{:?}", f.calls());
    }

    #[test]
    fn stop_never_kills_the_source_of_a_post_copy_that_does_not_end() {
        let f = Fake::new(&[DomainState::Paused]);
        *f.postcopy.borrow_mut() = vec![Some(Postcopy::Outgoing)];
        let t = Instant::now();
        let e = stop_with(&f, &[], 2).unwrap_err();
        assert!(matches!(e, Error::PostcopyRunning { .. }), "{e}");
        assert!(f.calls().is_empty(), "{:?}", f.calls());
        assert!(t.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn stop_destroys_a_failed_post_copy_at_once() {
        for s in [DomainState::Running, DomainState::Paused] {
            let f = Fake::new(&[s]);
            *f.postcopy.borrow_mut() = vec![Some(Postcopy::Failed), None];
            let out = stopped(&f, &[], 20);
            assert_eq!(f.calls(), ["destroy"], "{s}");
            assert_contains(&out.reason, "post-copy had failed");
        }
    }

    #[test]
    fn stop_stopped_is_success() {
        for s in [DomainState::Shutoff, DomainState::Undefined] {
            let f = Fake::new(&[s]);
            assert_eq!(stop_with(&f, &[], 20).unwrap().rc, OcfRc::Success);
            assert!(f.calls().is_empty());
        }
    }

    #[test]
    fn stop_without_libvirt() {
        let mut f = Fake::unreachable();
        assert_eq!(stop_with(&f, &[], 20).unwrap().rc, OcfRc::Success);
        f.pid.set(Some(7));
        assert_eq!(stop_with(&f, &[], 20).unwrap_err().rc(), OcfRc::ErrGeneric);
        f.pid.set(None);
        f.qemu_unknown = true;
        assert_eq!(stop_with(&f, &[], 20).unwrap_err().rc(), OcfRc::ErrGeneric);
    }

    fn outgoing_job() -> Option<hypervisor::JobProgress> {
        Some(hypervisor::JobProgress {
            migration_out: true,
            ..Default::default()
        })
    }

    #[test]
    fn stop_aborts_an_outgoing_migration_then_shuts_down() {
        let f = Fake::new(&[DomainState::Running]);
        *f.jobs.borrow_mut() = vec![outgoing_job()];
        stopped(&f, &[], 20);
        assert_eq!(f.calls(), ["abort", "shutdown"]);
    }

    #[test]
    fn stop_destroys_a_migration_that_cannot_be_aborted() {
        let mut f = Fake::new(&[DomainState::Running]);
        *f.jobs.borrow_mut() = vec![outgoing_job()];
        f.abort_ignored = true;
        let out = stopped_within(&f, 16, Duration::from_secs(4));
        assert_eq!(f.calls(), ["abort", "destroy"]);
        assert_contains(&out.reason, "could not be aborted");
    }

    #[test]
    fn stop_destroys_an_incoming_copy_at_once() {
        let f = Fake::new(&[DomainState::Paused]);
        *f.migrating.borrow_mut() = vec![true, false];
        let out = stopped(&f, &[], 20);
        assert_eq!(f.calls(), ["destroy"]);
        assert!(out.reason.contains("incoming copy"), "{}", out.reason);
    }

    #[test]
    fn stop_never_says_stopped_while_a_qemu_libvirt_lost_lives() {
        let f = Fake::new(&[DomainState::Shutoff]);
        f.pid.set(Some(42));
        let e = stop_with(&f, &[], 20).unwrap_err();
        assert!(
            matches!(e, Error::QemuUnknownToLibvirt { pid: 42, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("42"), "{e}");
        // force_stop kills it, and says so.
        let out = stopped(&f, &[("OCF_RESKEY_force_stop", "true")], 20);
        assert_eq!(f.calls(), ["kill"]);
        assert_contains(&out.reason, "pid 42 killed (libvirt reports it shut off");
    }

    #[test]
    fn stop_with_libvirtd_hung_kills_the_qemu_only_with_force_stop() {
        let f = Fake::unreachable();
        f.pid.set(Some(7));
        let e = stop_with(&f, &[], 20).unwrap_err();
        assert!(matches!(e, Error::QemuAlive { pid: 7, .. }), "{e}");
        let force = [("OCF_RESKEY_force_stop", "true")];
        stopped(&f, &force, 20);
        assert_eq!(f.calls(), ["kill"]);
    }
}
