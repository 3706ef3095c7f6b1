//! Waiting on a domain through the [`Observe`] and [`Hypervisor`] traits:
//! polling its status until a condition holds or an instant passes, and
//! making sure libvirt will not start a cluster-managed server by itself.

use std::thread::sleep;
use std::time::{Duration, Instant};

use log::info;

use super::{DomainState, Error, Hypervisor, Status};

/// How often a state is polled while waiting for it to change.
pub const POLL: Duration = Duration::from_millis(200);

/// Polls the domain's status until `done` holds or `until` passes; returns
/// the last seen.
pub fn wait_status<H: Hypervisor + ?Sized>(
    hv: &H,
    name: &str,
    until: Instant,
    done: impl Fn(Status) -> bool,
) -> Result<Status, Error> {
    loop {
        let status = hv.status(name)?;
        if done(status) || Instant::now() + POLL > until {
            return Ok(status);
        }
        sleep(POLL);
    }
}

/// [`wait_status`] until the domain runs; returns the last state seen.
pub fn wait_running<H: Hypervisor + ?Sized>(
    hv: &H,
    name: &str,
    until: Instant,
) -> Result<DomainState, Error> {
    wait_status(hv, name, until, |s| s.state == DomainState::Running).map(|s| s.state)
}

/// A cluster-managed server must never be started by libvirtd itself when
/// it (re)starts: it would then run twice.
pub fn ensure_no_autostart<H: Hypervisor + ?Sized>(hv: &H, name: &str) -> Result<(), Error> {
    if hv.autostart(name)? {
        hv.disable_autostart(name)?;
        info!("domain {name}: turned libvirt autostart off (Pacemaker starts this server)");
    }
    Ok(())
}
