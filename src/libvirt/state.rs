//! virDomainGetState's answer as the agent reads it, whichever client
//! asked (libvirt.so in [`super`], or the direct RPC client): the state,
//! the side of a post-copy, and whether libvirt paused it for a migration.

use std::os::raw::c_int;

use virt::domain::{DomainState as VirtState, DomainStateEnum};
use virt::sys;

use crate::hypervisor::{DomainState, Postcopy, Status};

/// virDomainGetState's state and reason during a post-copy migration: the
/// source is paused and the target runs, both with reason post-copy
/// (`virsh domstate --reason`). The `_FAILED` reasons mean the copy broke.
fn postcopy_side(state: c_int, reason: c_int) -> Option<Postcopy> {
    let (state, reason) = (u32::try_from(state).ok()?, u32::try_from(reason).ok()?);
    match (state, reason) {
        (sys::VIR_DOMAIN_PAUSED, sys::VIR_DOMAIN_PAUSED_POSTCOPY) => Some(Postcopy::Outgoing),
        (sys::VIR_DOMAIN_RUNNING, sys::VIR_DOMAIN_RUNNING_POSTCOPY) => Some(Postcopy::Incoming),
        (sys::VIR_DOMAIN_PAUSED, sys::VIR_DOMAIN_PAUSED_POSTCOPY_FAILED)
        | (sys::VIR_DOMAIN_RUNNING, sys::VIR_DOMAIN_RUNNING_POSTCOPY_FAILED) => {
            Some(Postcopy::Failed)
        }
        _ => None,
    }
}

/// virDomainGetState's answer as the agent reads it, whichever client
/// asked.
pub fn observed(state: c_int, reason: c_int) -> Status {
    Status {
        state: map_state(DomainStateEnum::from_raw(state as sys::virDomainState)),
        postcopy: postcopy_side(state, reason),
        // An incoming domain is "paused (starting up)" while its QEMU
        // starts (half a second, more on a loaded host), then "paused
        // (migrating)": in both, no guest code has run here yet.
        migrating: u32::try_from(state) == Ok(sys::VIR_DOMAIN_PAUSED)
            && [
                sys::VIR_DOMAIN_PAUSED_MIGRATION,
                sys::VIR_DOMAIN_PAUSED_STARTING_UP,
            ]
            .map(Ok)
            .contains(&u32::try_from(reason)),
    }
}

/// A domain libvirt does not know (VIR_ERR_NO_DOMAIN).
pub const UNDEFINED: Status = Status {
    state: DomainState::Undefined,
    postcopy: None,
    migrating: false,
};

fn map_state(s: DomainStateEnum) -> DomainState {
    match s {
        virt::enumutil::Enum::Known(k) => match k {
            VirtState::NoState => DomainState::NoState,
            VirtState::Running => DomainState::Running,
            VirtState::Blocked => DomainState::Blocked,
            VirtState::Paused => DomainState::Paused,
            VirtState::Shutdown => DomainState::ShuttingDown,
            VirtState::Shutoff => DomainState::Shutoff,
            VirtState::Crashed => DomainState::Crashed,
            VirtState::PMSuspended => DomainState::PmSuspended,
        },
        virt::enumutil::Enum::Unknown(_) => DomainState::NoState,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_incoming_copy_is_migrating_from_its_first_moment() {
        let paused = sys::VIR_DOMAIN_PAUSED as c_int;
        for reason in [
            sys::VIR_DOMAIN_PAUSED_MIGRATION,
            sys::VIR_DOMAIN_PAUSED_STARTING_UP,
        ] {
            assert!(observed(paused, reason as c_int).migrating, "{reason}");
        }
        for reason in [sys::VIR_DOMAIN_PAUSED_USER, sys::VIR_DOMAIN_PAUSED_POSTCOPY] {
            assert!(!observed(paused, reason as c_int).migrating, "{reason}");
        }
        let running = sys::VIR_DOMAIN_RUNNING as c_int;
        assert!(!observed(running, sys::VIR_DOMAIN_RUNNING_MIGRATED as c_int).migrating);
    }

    #[test]
    fn postcopy_sides_follow_virsh_domstate_reason() {
        let side = |s: u32, r: u32| postcopy_side(s as i32, r as i32);
        // paused (post-copy) | running (post-copy)
        assert_eq!(
            side(sys::VIR_DOMAIN_PAUSED, sys::VIR_DOMAIN_PAUSED_POSTCOPY),
            Some(Postcopy::Outgoing)
        );
        assert_eq!(
            side(sys::VIR_DOMAIN_RUNNING, sys::VIR_DOMAIN_RUNNING_POSTCOPY),
            Some(Postcopy::Incoming)
        );
        // A broken copy, on either side.
        for (s, r) in [
            (
                sys::VIR_DOMAIN_PAUSED,
                sys::VIR_DOMAIN_PAUSED_POSTCOPY_FAILED,
            ),
            (
                sys::VIR_DOMAIN_RUNNING,
                sys::VIR_DOMAIN_RUNNING_POSTCOPY_FAILED,
            ),
        ] {
            assert_eq!(side(s, r), Some(Postcopy::Failed), "{s} {r}");
        }
        // A plain pause, a migrated guest, and libvirt's -1.
        for (s, r) in [
            (sys::VIR_DOMAIN_PAUSED, sys::VIR_DOMAIN_PAUSED_USER),
            (sys::VIR_DOMAIN_RUNNING, sys::VIR_DOMAIN_RUNNING_MIGRATED),
        ] {
            assert_eq!(side(s, r), None, "{s} {r}");
        }
        assert_eq!(postcopy_side(-1, -1), None);
    }
}
