//! migrate_from on the target: 0 once the domain has arrived here, within
//! the deadline; a post-copy is waited for, a failed one said.

use std::time::{Duration, Instant};

use log::warn;

use crate::definition::Definitions;
use crate::error::{hv_err, Error};
use crate::hypervisor::wait::{ensure_no_autostart, wait_status};
use crate::hypervisor::{DomainState, Hypervisor, Postcopy, Status};
use crate::ocf::{Budget, OcfRc, Outcome, Params};

/// How long migrate_from waits for a domain that is not even paused here:
/// after a successful migrate_to it already runs, so a missing domain is
/// not going to appear.
const ARRIVAL_GRACE: Duration = Duration::from_secs(5);

/// Whether the domain has arrived here: it runs, or it is paused for
/// another reason than the migration (libvirt keeps a guest that was paused
/// before the move paused on the target, reason "user").
fn arrived(s: Status) -> bool {
    s.state == DomainState::Running
        || (s.state == DomainState::Paused && !s.migrating && s.postcopy.is_none())
}

/// migrate_from: 0 once the domain runs here (or arrived paused, as it was
/// paused on the source), within the deadline. With `config`, the
/// definition it arrived with is replaced by the file's when the file
/// changed (its next boot uses it; not while a post-copy still runs).
pub fn migrate_from(
    hv: &dyn Hypervisor,
    p: &Params,
    source: Option<&str>,
    deadline: &Budget,
    defs: &Definitions,
) -> Result<Outcome, Error> {
    let name = p.name.as_str();
    let source = source.unwrap_or("the source");
    let t0 = Instant::now();
    let grace = t0 + ARRIVAL_GRACE;
    // Arrived: done. Paused for the migration or otherwise active: still
    // arriving, keep waiting. Nothing here after the grace period: it is
    // not coming.
    let status = wait_status(hv, name, deadline.at(), |s| {
        arrived(s) || (!s.state.is_active() && Instant::now() >= grace)
    })
    .map_err(hv_err("get the state of", name))?;
    let state = status.state;
    if !arrived(status) {
        return Err(Error::NotArrived {
            name: name.into(),
            from: source.into(),
            state,
            waited: t0.elapsed(),
        });
    }
    ensure_no_autostart(hv, name).map_err(hv_err("turn autostart off for", name))?;
    // In post-copy the guest runs here while part of its memory is still
    // on the source: wait for the rest, so that the stop Pacemaker runs on
    // the source next finds the copy done. Past the deadline the guest
    // still runs here, which is what migrate_from reports.
    // A state that cannot be read now says nothing of a post-copy: the
    // guest was seen running here.
    match wait_status(hv, name, deadline.at(), |s| {
        s.postcopy != Some(Postcopy::Incoming)
    })
    .ok()
    .and_then(|s| s.postcopy)
    {
        Some(Postcopy::Incoming) => {
            warn!("domain {name} runs here, but post-copy still fetches its memory from {source}");
            return Ok(Outcome::new(
                OcfRc::Success,
                format!("domain {name} arrived from {source} and runs here; post-copy still fetches its memory from there"),
            ));
        }
        Some(Postcopy::Failed) => {
            return Err(Error::PostcopyFailed {
                name: name.into(),
                state,
            })
        }
        _ => {}
    }
    // The migration job is over: the definition is libvirt's to replace.
    defs.config_if_changed(hv, p, deadline.config_read());
    let downtime = hv
        .completed_job(name)
        .ok()
        .flatten()
        .and_then(|j| j.downtime_ms)
        .map(|ms| format!(", downtime {ms} ms"))
        .unwrap_or_default();
    let how = if state == DomainState::Paused {
        "is paused here, as it was on the source"
    } else {
        "runs here"
    };
    Ok(Outcome::new(
        OcfRc::Success,
        format!("domain {name} arrived from {source} and {how}{downtime}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::fake::Fake;

    #[test]
    fn a_guest_paused_before_the_move_arrives_paused() {
        let p = Params::from_env(&[("OCF_RESKEY_name", "vm1")].into_iter().collect()).unwrap();
        // Paused for the incoming copy first, then paused as on the source.
        let f = Fake::new(&[DomainState::Paused]);
        *f.migrating.borrow_mut() = vec![true, true, false];
        let t = Instant::now();
        let out = migrate_from(
            &f,
            &p,
            Some("node-a"),
            &Budget::new(Duration::from_secs(20)),
            &Definitions::none(),
        )
        .unwrap();
        assert_eq!(out.rc, OcfRc::Success);
        assert!(out.reason.contains("paused here"), "{}", out.reason);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }
}
