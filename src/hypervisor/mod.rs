//! The boundary between the agent's decisions and the hypervisor: two small
//! traits the actions are written against (monitor's questions, and the
//! rest) and every type they speak, the error included. It is implemented
//! for real by `crate::libvirt`, which stands below it, and by a scripted
//! fake in unit tests of decision logic ([`fake`]). The waits built on the
//! traits are in [`wait`].

#[cfg(test)]
pub mod fake;
pub mod wait;

use std::fmt;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What kind of failure a hypervisor call had, as the actions tell them
/// apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The hypervisor cannot be reached (not listening, connection refused
    /// or broken).
    Unreachable,
    /// It did not answer in time (hung, or stopped).
    Timeout,
    /// Its client library is missing or unusable on this node.
    NotInstalled,
    /// The operation does not apply to the domain's current state (e.g. a
    /// shutdown of a domain that is already off).
    InvalidState,
    /// It rejected a domain XML.
    BadConfig,
    /// Another call holds the domain (libvirt's job lock) and the
    /// hypervisor gave up waiting for it: the call may succeed later.
    Busy,
    /// Anything else.
    Other,
}

/// A failed hypervisor call: its kind, and what the backend said.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    inner: Box<dyn std::error::Error + Send + Sync>,
}

impl Error {
    pub fn new(
        kind: ErrorKind,
        inner: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error {
            kind,
            inner: inner.into(),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The hypervisor was not reachable or did not answer: the domain's
    /// state is unknown, not "stopped". A client library that cannot be
    /// loaded cannot ask either.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Unreachable | ErrorKind::Timeout | ErrorKind::NotInstalled
        )
    }

    /// The first line of the innermost message: libvirt's XML parser adds
    /// the offending line of the document after it, which must not reach a
    /// log or an exit reason when the document is not what it should be.
    pub fn first_line(&self) -> String {
        let mut last: &dyn std::error::Error = &*self.inner;
        while let Some(s) = last.source() {
            last = s;
        }
        last.to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner.source()
    }
}

/// Progress (or the result) of a domain's migration job, from
/// virDomainGetJobStats. Sizes in bytes, times in ms.
#[derive(Debug, Clone, Default)]
pub struct JobProgress {
    pub elapsed_ms: Option<u64>,
    pub data_total: Option<u64>,
    pub data_processed: Option<u64>,
    pub data_remaining: Option<u64>,
    /// Bytes per second of the RAM copy.
    pub mem_bps: Option<u64>,
    /// Pre-copy iterations so far.
    pub iteration: Option<u64>,
    /// Guest pages dirtied per second.
    pub dirty_rate: Option<u64>,
    /// The freeze at the end, once known.
    pub downtime_ms: Option<u64>,
    /// How much auto-converge slows the guest's vCPUs, in percent.
    pub throttle_pct: Option<u64>,
    /// The job is an outgoing migration (not, say, a dump or a backup).
    pub migration_out: bool,
    /// Bytes of the guest's RAM copied so far.
    pub mem_processed: Option<u64>,
    /// Bytes of the disks copied so far (a storage migration's NBD mirror).
    pub disk_processed: Option<u64>,
}

impl JobProgress {
    /// The job still copies disks and has not begun with the RAM: libvirt
    /// starts the RAM copy only once every disk mirror is in step with the
    /// guest's writes, so none of the RAM's convergence steps applies yet.
    pub fn copying_disks(&self) -> bool {
        self.disk_processed.is_some_and(|d| d > 0) && self.mem_processed.unwrap_or(0) == 0
    }
}

/// `45.0 MiB of 128.0 MiB left, 310 MiB/s, iteration 2`, or while the disks
/// are copied first `copying disks: 12.0 MiB so far, the RAM copy waits for
/// them to be in step`.
impl fmt::Display for JobProgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self;
        let mut parts = Vec::new();
        if p.copying_disks() {
            parts.push(format!(
                "copying disks: {:.1} MiB so far, the RAM copy waits for them to be in step",
                mib(p.disk_processed.unwrap_or(0))
            ));
        } else if let (Some(left), Some(total)) = (p.data_remaining, p.data_total) {
            parts.push(format!(
                "{:.1} MiB of {:.1} MiB left",
                mib(left),
                mib(total)
            ));
        }
        if let Some(bps) = p.mem_bps {
            parts.push(format!("{:.0} MiB/s", mib(bps)));
        }
        if let Some(i) = p.iteration {
            parts.push(format!("iteration {i}"));
        }
        if let Some(d) = p.dirty_rate.filter(|&d| d > 0) {
            parts.push(format!("{d} pages/s dirtied"));
        }
        if let Some(t) = p.throttle_pct.filter(|&t| t > 0) {
            parts.push(format!("vCPUs throttled {t} %"));
        }
        f.write_str(&parts.join(", "))
    }
}

impl JobProgress {
    /// A completed job's result, as the migration's last line says it:
    /// `, downtime 171 ms, 90.3 MiB copied at 312 MiB/s`.
    pub fn result(&self) -> String {
        let mut line = String::new();
        if let Some(ms) = self.downtime_ms {
            line.push_str(&format!(", downtime {ms} ms"));
        }
        if let Some(b) = self.data_processed {
            let secs = self.elapsed_ms.unwrap_or(0) as f64 / 1000.0;
            line.push_str(&format!(", {:.1} MiB copied", mib(b)));
            if secs > 0.0 {
                line.push_str(&format!(" at {:.0} MiB/s", mib(b) / secs));
            }
        }
        line
    }
}

/// Job statistics count bytes; the logs speak MiB.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// What a live migration needs from the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationRequest {
    /// The target's libvirtd, reached by the source libvirtd (peer-to-peer).
    pub dconn_uri: String,
    /// Where QEMU sends the RAM (`tcp://<address>`).
    pub data_uri: String,
    /// MiB/s; 0 = unlimited.
    pub bandwidth: u64,
    /// The freeze allowed when the copy starts (`migration_downtime`), for
    /// the log; QEMU's limit is set from it before the call
    /// (`set_max_downtime`), not with it.
    pub max_downtime_ms: u64,
    /// TCP connections for the RAM copy; above 1, libvirt's PARALLEL.
    pub parallel: u32,
    /// Encrypt the RAM copy with QEMU's native TLS, checking the target's
    /// certificate against this host name.
    pub tls_host: Option<String>,
    /// Let QEMU throttle the vCPUs when the copy falls behind.
    pub auto_converge: bool,
    /// Send pages copied before as their XBZRLE difference, with a cache
    /// of this many bytes on the source; None: uncompressed.
    pub xbzrle_cache: Option<u64>,
    /// Allow a later switch to post-copy ([`Hypervisor::start_postcopy`]).
    pub postcopy: bool,
    /// Resume this migration's broken post-copy over a new connection
    /// instead of starting one.
    pub postcopy_resume: bool,
    /// The disks QEMU copies to the target (their `<target dev>` names):
    /// libvirt's NON_SHARED_DISK with `migrate_disks`. Empty: none.
    pub copy_disks: Vec<String>,
    /// The port of the target's NBD export for `copy_disks`; None: one of
    /// the target's migration port range.
    pub disks_port: Option<u16>,
}

/// A migration in flight: virDomainMigrateToURI3 blocks until the
/// migration ends, so it runs on its own thread and this is its answer.
pub struct Migration {
    rx: mpsc::Receiver<Result<(), Error>>,
}

impl Migration {
    pub fn new(rx: mpsc::Receiver<Result<(), Error>>) -> Self {
        Migration { rx }
    }

    /// The migration's result if it ends by `until`.
    pub fn wait_until(&self, until: Instant) -> Option<Result<(), Error>> {
        self.wait(until.saturating_duration_since(Instant::now()))
    }

    /// The migration's result if it ends within `wait`.
    pub fn wait(&self, wait: Duration) -> Option<Result<(), Error>> {
        match self.rx.recv_timeout(wait) {
            Ok(r) => Some(r),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => Some(Err(Error::new(
                ErrorKind::Other,
                "the migration thread ended without an answer",
            ))),
        }
    }
}

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
    /// Paused by libvirt for a migration (reason "migrating", or "starting
    /// up" as an incoming domain's QEMU starts): the incoming copy on a
    /// target, or a source at the switchover. A guest that was paused
    /// before the move arrives paused for another reason.
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

/// A host resource a domain's XML names, which the node it runs on must
/// have: a libvirt network (`<interface type='network'>`), a bridge
/// (`<interface type='bridge'>`, a host interface) or a storage pool (a
/// `<disk type='volume'>`'s pool).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Network,
    Bridge,
    Pool,
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Resource::Network => "network",
            Resource::Bridge => "bridge",
            Resource::Pool => "storage pool",
        })
    }
}

/// Whether a node has a [`Resource`], and whether it is usable now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Active,
    /// Defined but not started; for a bridge, present without carrier.
    Inactive,
    Missing,
}

/// The emulator a domain asks for: `<emulator>`, and `<os><type arch=
/// machine=>` under `<domain type=>`. What is not set libvirt chooses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Machine {
    pub emulator: Option<String>,
    pub arch: Option<String>,
    pub machine: Option<String>,
    /// `kvm` or `qemu` (TCG).
    pub virt_type: Option<String>,
}

/// The questions monitor asks: answered by the libvirt backend's RPC client without
/// loading libvirt.so, and by every [`Hypervisor`]. Every call is bounded
/// by the action's deadline: an implementation fails with [`ErrorKind::Timeout`]
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
    /// The domain's persistent definition (not the running one), with its
    /// secrets (VIR_DOMAIN_XML_SECURE: a copy defined elsewhere keeps its
    /// graphics passwords); None when this node has none. Never logged.
    fn definition(&self, name: &str) -> Result<Option<String>, Error>;
}

/// What the other actions need from a hypervisor, bounded like
/// [`Observe`].
pub trait Hypervisor: Observe {
    /// Defines the domain persistently from XML; returns the name libvirt
    /// gave it.
    fn define(&self, xml: &str) -> Result<String, Error>;
    /// The domain's XML as it runs (with its disks' sources and cache
    /// modes).
    fn xml(&self, name: &str) -> Result<String, Error>;
    /// Bytes of host storage a disk of the running domain occupies (`disk`
    /// is its `<target dev>`): what a storage copy has to move.
    fn disk_allocation(&self, name: &str, disk: &str) -> Result<u64, Error>;
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
    /// Whether this node has the network, bridge or pool, and whether it is
    /// active.
    fn presence(&self, what: Resource, name: &str) -> Result<Presence, Error>;
    /// Starts an inactive network or pool (a bridge is the host's: Err).
    fn activate(&self, what: Resource, name: &str) -> Result<(), Error>;
    /// Ok when this node's libvirt can run `machine` (its domain
    /// capabilities); the error says what it lacks.
    fn supports(&self, machine: &Machine) -> Result<(), Error>;
    /// Bytes of memory a new guest can have here: free, and what the
    /// kernel can reclaim (buffers and page cache).
    fn available_memory(&self) -> Result<u64, Error>;
}
