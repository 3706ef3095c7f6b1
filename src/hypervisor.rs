//! The boundary between the agent's decisions and the hypervisor: two small
//! traits the actions are written against (monitor's questions, and the
//! rest), implemented for real by [`crate::libvirt`] and by a fake in unit
//! tests of decision logic.

use std::fmt;

use crate::libvirt::{Error, JobProgress, Migration, MigrationRequest};

/// A domain's state as the agent needs it, mapped from libvirt's
/// `virDomainState`. `Undefined` is libvirt's VIR_ERR_NO_DOMAIN: the domain
/// is not known to this node's libvirtd at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainState {
    NoState,
    Running,
    Blocked,
    Paused,
    ShuttingDown,
    Shutoff,
    Crashed,
    PmSuspended,
    Undefined,
}

impl DomainState {
    /// Active in the OCF sense: a QEMU process holds the guest, so the
    /// server must not be started anywhere else. A paused or suspended
    /// guest is still active, and so is one in the middle of shutting down.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            DomainState::Running
                | DomainState::Blocked
                | DomainState::Paused
                | DomainState::ShuttingDown
                | DomainState::PmSuspended
        )
    }
}

impl fmt::Display for DomainState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The words virsh uses, so log lines read like `virsh domstate`.
        f.write_str(match self {
            DomainState::NoState => "no state",
            DomainState::Running => "running",
            DomainState::Blocked => "blocked",
            DomainState::Paused => "paused",
            DomainState::ShuttingDown => "in shutdown",
            DomainState::Shutoff => "shut off",
            DomainState::Crashed => "crashed",
            DomainState::PmSuspended => "pmsuspended",
            DomainState::Undefined => "not defined",
        })
    }
}

/// Which side of a running post-copy migration this node is: the guest's
/// vCPUs run on the target while the source still holds the pages they
/// have not fetched yet. Neither side can be stopped without losing the
/// guest until the copy ends, and libvirt refuses to abort it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Postcopy {
    /// The source: paused here, reason post-copy.
    Outgoing,
    /// The target: running here, reason post-copy.
    Incoming,
    /// The copy broke (reason post-copy failed, on either side): the
    /// guest's memory is split between the nodes and it cannot run until
    /// `virsh migrate --postcopy-resume` finishes the copy over a working
    /// link.
    Failed,
}

/// What libvirt says of a domain on this node: one question
/// (virDomainGetState's state and reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub state: DomainState,
    /// Its side of a post-copy migration, if it is in one.
    pub postcopy: Option<Postcopy>,
    /// Paused by libvirt for a migration (reason "migrating"): the
    /// incoming copy on a target, or a source at the switchover. A guest
    /// that was paused before the move arrives paused for another reason.
    pub migrating: bool,
}

/// Whether a QEMU process of a domain lives on this node, as the process
/// table (and libvirt's pid file) tell it, without asking libvirtd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Qemu {
    /// This live QEMU process runs the domain.
    Alive(u32),
    /// No QEMU process of the domain lives here.
    Gone,
    /// This URI's QEMU processes are not visible from here (a remote or
    /// session libvirtd): libvirt's answer is all there is.
    Unseen,
    /// The process table did not answer in time: never read as "gone".
    Unreadable(String),
}

/// The questions monitor asks: answered by [`crate::libvirt::rpc`] without
/// loading libvirt.so, and by every [`Hypervisor`]. Every call is bounded
/// by the action's deadline: an implementation returns [`Error::Timeout`]
/// rather than block past it.
pub trait Observe {
    /// The domain's state on this node, its side of a post-copy and
    /// whether libvirt paused it for a migration.
    fn status(&self, name: &str) -> Result<Status, Error>;
    /// The domain's state on this node.
    fn state(&self, name: &str) -> Result<DomainState, Error> {
        self.status(name).map(|s| s.state)
    }
    /// The domain's side of a post-copy migration, if it is in one.
    fn postcopy(&self, name: &str) -> Result<Option<Postcopy>, Error> {
        self.status(name).map(|s| s.postcopy)
    }
    /// The domain's QEMU process on this node, found without asking
    /// libvirtd (for when it is down or hung, or says something else).
    fn qemu(&self, name: &str) -> Qemu;
}

/// What the other actions need from a hypervisor, bounded like
/// [`Observe`].
pub trait Hypervisor: Observe {
    /// Defines the domain persistently from XML; returns the name libvirt
    /// gave it.
    fn define(&self, xml: &str) -> Result<String, Error>;
    /// Boots a defined, inactive domain.
    fn start(&self, name: &str) -> Result<(), Error>;
    /// Asks the guest to shut down (ACPI power button).
    fn shutdown(&self, name: &str) -> Result<(), Error>;
    /// Kills the domain's QEMU process (libvirt: SIGTERM, then SIGKILL).
    fn destroy(&self, name: &str) -> Result<(), Error>;
    /// Whether libvirtd starts the domain by itself when it starts.
    fn autostart(&self, name: &str) -> Result<bool, Error>;
    fn disable_autostart(&self, name: &str) -> Result<(), Error>;
    /// Starts a live migration and returns at once; the migration's result
    /// arrives through the returned handle.
    fn migrate(&self, name: &str, req: &MigrationRequest) -> Result<Migration, Error>;
    /// Sets the freeze the migration may end with.
    fn set_max_downtime(&self, name: &str, ms: u64) -> Result<(), Error>;
    /// The domain's current job, if it has one.
    fn job(&self, name: &str) -> Result<Option<JobProgress>, Error>;
    /// The domain's last completed job, if it has one.
    fn completed_job(&self, name: &str) -> Result<Option<JobProgress>, Error>;
    /// Aborts the domain's current job (a migration: the guest stays here).
    fn abort_job(&self, name: &str) -> Result<(), Error>;
    /// Switches the running migration to post-copy: the guest resumes on
    /// the target and fetches the pages it still lacks from here.
    fn start_postcopy(&self, name: &str) -> Result<(), Error>;
    /// Kills QEMU process `pid` of domain `name` without libvirtd (SIGTERM,
    /// then SIGKILL), if it is still that domain's; Ok once it is gone,
    /// bounded by the deadline.
    fn kill_qemu(&self, name: &str, pid: u32) -> Result<(), Error>;
}
