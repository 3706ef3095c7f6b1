//! The libvirt wrapper: the only module that touches the `virt` crate, and
//! the place where its sharp edges are handled.
//!
//! * Every libvirt call runs on a worker thread ([`crate::bounded`]) and is
//!   waited for only until the action's deadline. A libvirtd that is
//!   SIGSTOPped or stuck accepts the socket connection and then never
//!   answers; the RPC client would
//!   block forever, and Pacemaker would kill the agent and fence the node
//!   (resource-agents#546, #385). After one call times out, later calls fail
//!   at once instead of waiting again.
//! * `Domain::state()` in virt 0.5 swallows libvirt's error and reports
//!   `Unknown` for a vanished domain, so states come from `Domain::info()`,
//!   which does return the error.
//! * `Domain::job_stats()` builds a `Vec` from the array libvirt returns,
//!   which is null when there is no job (undefined behaviour): job stats
//!   are read with libvirt's typed-parameter getters instead.
//! * `Connect`'s `Drop` closes the connection with an RPC (it can hang) and
//!   panics if that fails; the connection is left to the process exit.
//! * libvirt.so.0 is loaded by the first connection, not at exec
//!   ([`load`]); monitor asks libvirtd without it ([`rpc`]).

mod load;
pub mod qemu_proc;
pub mod rpc;
mod state;

use std::cell::{Cell, OnceCell};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use virt::connect::Connect;
use virt::domain::MigrateParameters;
use virt::error::ErrorNumber;
use virt::sys;

use state::{observed, UNDEFINED};

use crate::bounded::on_worker;
use crate::hypervisor::{
    Error as HvError, ErrorKind, Hypervisor, JobProgress, Machine, Migration, MigrationRequest,
    Observe, Presence, Qemu, Resource, Status,
};

/// libvirt's own error, shown by its message alone: virt's Display adds
/// the error's codes and domain, which say nothing to an admin. Boxed: it
/// carries a message and codes, and would make every Result large.
#[derive(Debug)]
pub struct Message(Box<virt::error::Error>);

impl std::fmt::Display for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.message().trim())
    }
}

impl std::error::Error for Message {}

impl From<virt::error::Error> for Message {
    fn from(e: virt::error::Error) -> Self {
        Message(Box::new(e))
    }
}

/// What went wrong inside this backend; the traits see it as a
/// [`HvError`] of the right [`ErrorKind`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to libvirt at {}", crate::uri::shown(.uri))]
    Connect {
        uri: String,
        #[source]
        source: Message,
    },
    #[error("libvirtd did not answer {what} in time")]
    Timeout { what: &'static str },
    #[error("libvirt {what} failed")]
    Call {
        what: &'static str,
        #[source]
        source: Message,
    },
    /// libvirt's QEMU driver waited 30 s for the domain's job lock
    /// (QEMU_JOB_WAIT_TIME in src/qemu/qemu_domainjob.c) and gave up
    /// ("cannot acquire state change lock (held by
    /// monitor=remoteDispatchDomainMigratePerform3Params)"): `held_by` is
    /// the call that holds it, as libvirt names it.
    #[error("libvirt {what}: job lock held by {held_by}")]
    Busy { what: &'static str, held_by: String },
    #[error("cannot start a thread for a libvirt call")]
    Thread(#[source] std::io::Error),
    #[error(transparent)]
    Load(&'static load::Error),
}

impl Error {
    fn kind(&self) -> ErrorKind {
        let code = |n| matches!(self, Error::Call { source, .. } if source.0.code().is(n));
        match self {
            Error::Connect { .. } => ErrorKind::Unreachable,
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::Load(_) => ErrorKind::NotInstalled,
            Error::Busy { .. } => ErrorKind::Busy,
            // libvirt answered that the operation does not apply to the
            // domain's current state (e.g. shutdown of a domain that is
            // already off).
            _ if code(ErrorNumber::OperationInvalid) => ErrorKind::InvalidState,
            // libvirt rejected a domain XML: the config file is wrong,
            // wherever it is used.
            _ if [
                ErrorNumber::XmlError,
                ErrorNumber::XmlDetail,
                ErrorNumber::XmlInvalidSchema,
            ]
            .into_iter()
            .any(code) =>
            {
                ErrorKind::BadConfig
            }
            _ => ErrorKind::Other,
        }
    }
}

impl From<Error> for HvError {
    fn from(e: Error) -> Self {
        HvError::new(e.kind(), e)
    }
}

/// A failed libvirt call on a domain. A job-lock timeout is told apart:
/// the call that holds the lock (libvirt names its RPC in parentheses) is
/// what the admin needs to know, and the call may succeed once it ends.
fn call_error(what: &'static str, e: virt::error::Error) -> Error {
    if e.code().is(ErrorNumber::OperationTimeout) {
        let msg = e.message();
        if let Some((_, rest)) = msg.split_once("state change lock") {
            let held_by = rest
                .trim()
                .trim_start_matches("(held by ")
                .trim_end_matches(')')
                .trim();
            let held_by = if held_by.is_empty() {
                "another call".to_owned()
            } else {
                held_by.to_owned()
            };
            return Error::Busy { what, held_by };
        }
    }
    Error::Call {
        what,
        source: e.into(),
    }
}

/// A libvirt call's status return: -1 is failure, with the details in
/// libvirt's per-thread last error.
fn status(rc: std::os::raw::c_int) -> Result<(), virt::error::Error> {
    if rc < 0 {
        Err(virt::error::Error::last_error())
    } else {
        Ok(())
    }
}

/// virDomainGetJobStats, read with libvirt's own typed-parameter getters.
/// virt 0.5's `Domain::job_stats` turns the returned array into a `Vec`
/// with `Vec::from_raw_parts`: when there is no job, libvirt returns a null
/// array, which is undefined behaviour there (debug builds abort with
/// "NonNull::new_unchecked requires that the pointer is non-null"), and
/// the array is freed by Rust's allocator instead of libvirt's. Returns
/// None when the domain has no such job.
fn job_progress(
    dom: &virt::domain::Domain,
    flags: sys::virDomainGetJobStatsFlags,
) -> Result<Option<JobProgress>, virt::error::Error> {
    let mut job_type: std::os::raw::c_int = 0;
    let mut params: sys::virTypedParameterPtr = std::ptr::null_mut();
    let mut nparams: std::os::raw::c_int = 0;
    // SAFETY: `dom` is a live domain handle; libvirt writes the job type,
    // a newly allocated array (or null) and its length into the three
    // out-pointers, which point to valid locals.
    let r = unsafe {
        sys::virDomainGetJobStats(
            dom.as_ptr(),
            &mut job_type,
            &mut params,
            &mut nparams,
            flags,
        )
    };
    status(r)?;
    let ullong = |name: &std::ffi::CStr| {
        let mut v: std::os::raw::c_ulonglong = 0;
        // SAFETY: `params`/`nparams` are what libvirt returned (a null
        // array is allowed with 0); `name` is a NUL-terminated constant;
        // `v` is a valid out-pointer. Returns 1 when found.
        let found = unsafe { sys::virTypedParamsGetULLong(params, nparams, name.as_ptr(), &mut v) };
        (found == 1).then_some(v)
    };
    let int = |name: &std::ffi::CStr| {
        let mut v: std::os::raw::c_int = 0;
        // SAFETY: as for `ullong` above, with an int out-pointer.
        let found = unsafe { sys::virTypedParamsGetInt(params, nparams, name.as_ptr(), &mut v) };
        (found == 1).then_some(v)
    };
    let progress = JobProgress {
        elapsed_ms: ullong(sys::VIR_DOMAIN_JOB_TIME_ELAPSED),
        data_total: ullong(sys::VIR_DOMAIN_JOB_DATA_TOTAL),
        data_processed: ullong(sys::VIR_DOMAIN_JOB_DATA_PROCESSED),
        data_remaining: ullong(sys::VIR_DOMAIN_JOB_DATA_REMAINING),
        mem_bps: ullong(sys::VIR_DOMAIN_JOB_MEMORY_BPS),
        iteration: ullong(sys::VIR_DOMAIN_JOB_MEMORY_ITERATION),
        dirty_rate: ullong(sys::VIR_DOMAIN_JOB_MEMORY_DIRTY_RATE),
        downtime_ms: ullong(sys::VIR_DOMAIN_JOB_DOWNTIME),
        throttle_pct: int(sys::VIR_DOMAIN_JOB_AUTO_CONVERGE_THROTTLE)
            .map(|v| u64::try_from(v).unwrap_or(0)),
        migration_out: int(sys::VIR_DOMAIN_JOB_OPERATION)
            == Some(sys::VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT as i32),
        mem_processed: ullong(sys::VIR_DOMAIN_JOB_MEMORY_PROCESSED),
        disk_processed: ullong(sys::VIR_DOMAIN_JOB_DISK_PROCESSED),
    };
    // SAFETY: frees the array libvirt allocated, once, with libvirt's own
    // allocator; a null array with 0 entries is accepted.
    unsafe { sys::virTypedParamsFree(params, nparams) };
    Ok((job_type != sys::VIR_DOMAIN_JOB_NONE as i32).then_some(progress))
}

/// auto-converge's first throttle and its step, in percent (QEMU's own
/// defaults are 20 and 10). QEMU starts throttling only once the guest has
/// dirtied more than half of what was sent in two periods in a row; from
/// there the throttle starts where it bites and reaches 90 % in four
/// steps, not eight.
const AUTO_CONVERGE_INITIAL_PCT: i32 = 30;
const AUTO_CONVERGE_INCREMENT_PCT: i32 = 20;

/// virDomainMigrateToURI3's flags and typed parameters for a request.
fn flags_and_params(req: &MigrationRequest) -> (sys::virDomainMigrateFlags, MigrateParameters) {
    // Peer-to-peer: the source libvirtd drives the migration and talks
    // to the target itself, so the agent can be killed without
    // orphaning a half-done job on the target (migrate3 refuses
    // PEER2PEER: migrate_to_uri3). PERSIST_DEST without
    // UNDEFINE_SOURCE: both nodes keep the definition, so Pacemaker can
    // start the server on either one after a failover.
    let mut flags = sys::VIR_MIGRATE_LIVE
        | sys::VIR_MIGRATE_PEER2PEER
        | sys::VIR_MIGRATE_PERSIST_DEST
        | sys::VIR_MIGRATE_ABORT_ON_ERROR;
    let mut params = MigrateParameters {
        uri: Some(req.data_uri.clone()),
        bandwidth: (req.bandwidth > 0).then_some(req.bandwidth),
        ..MigrateParameters::default()
    };
    if req.parallel > 1 {
        flags |= sys::VIR_MIGRATE_PARALLEL;
        params.parallel_connections = i32::try_from(req.parallel).ok();
    }
    if let Some(host) = &req.tls_host {
        // Native TLS on the data stream (not TUNNELLED, which would
        // push the RAM through libvirtd). QEMU checks the target's
        // certificate against the host of the data URI, an address
        // when the migration network was chosen: tls.destination names
        // the host the certificate is issued to instead.
        flags |= sys::VIR_MIGRATE_TLS;
        params.tls_destination = Some(host.clone());
    }
    if req.auto_converge {
        flags |= sys::VIR_MIGRATE_AUTO_CONVERGE;
        params.auto_converge_initial = Some(AUTO_CONVERGE_INITIAL_PCT);
        params.auto_converge_increment = Some(AUTO_CONVERGE_INCREMENT_PCT);
    }
    if let Some(cache) = req.xbzrle_cache {
        // Pages sent before go as their difference from the cached copy
        // (QEMU skips XBZRLE itself once in post-copy).
        flags |= sys::VIR_MIGRATE_COMPRESSED;
        params.compression = Some("xbzrle".into());
        params.compression_xbzrle_cache = Some(cache);
    }
    if req.postcopy {
        // Only enables the capability on both sides; the switch itself
        // is virDomainMigrateStartPostCopy, if the policy gets there.
        flags |= sys::VIR_MIGRATE_POSTCOPY;
        // QEMU limits post-copy separately (max-postcopy-bandwidth,
        // unlimited unless set): without this the cap that protects
        // the link's other traffic (corosync, DRBD) would end where
        // post-copy begins. Ganeti sets both for the same reason.
        params.bandwidth_postcopy = params.bandwidth;
    }
    if !req.copy_disks.is_empty() {
        // Only the listed disks are mirrored (QEMU's NBD copy, over the
        // host of `uri`); the shared ones stay as they are. Not INC: the
        // target's image is not a copy of this one's backing chain.
        flags |= sys::VIR_MIGRATE_NON_SHARED_DISK;
        params.migrate_disks = req.copy_disks.clone();
        params.disks_port = req.disks_port.map(i32::from);
    }
    if req.postcopy_resume {
        // libvirt wants the flags of the migration that broke, plus
        // this one (virDomainMigrateToURI3, "post-copy recovery").
        flags |= sys::VIR_MIGRATE_POSTCOPY_RESUME;
    }
    (flags, params)
}

/// A libvirt connection whose every call ends by `deadline`.
pub struct Libvirt {
    uri: String,
    deadline: Instant,
    /// Each call also ends this long after it starts (see `per_call`).
    call_budget: Option<Duration>,
    conn: OnceCell<Arc<Connect>>,
    /// Set once a call has timed out: libvirtd is not answering.
    hung: Cell<bool>,
}

impl Libvirt {
    /// Nothing is opened yet: the connection is made by the first call, so
    /// actions that never need libvirt never wait for it.
    pub fn new(uri: &str, deadline: Instant) -> Self {
        Libvirt {
            uri: uri.to_owned(),
            deadline,
            call_budget: None,
            conn: OnceCell::new(),
            hung: Cell::new(false),
        }
    }

    /// Bounds every call by `budget` as well as by the deadline: a remote
    /// libvirtd that hangs costs one budget (later calls then fail at
    /// once), while one that answers can still be asked at the end of a
    /// long action (where a migrated guest runs).
    pub fn per_call(mut self, budget: Duration) -> Self {
        self.call_budget = Some(budget);
        self
    }

    /// The time the process table may take, within the deadline.
    fn proc_budget(&self) -> Duration {
        qemu_proc::PROC_BUDGET.min(self.deadline.saturating_duration_since(Instant::now()))
    }

    /// Runs `f` on a worker thread and waits for it until the deadline.
    fn bounded<T, F>(&self, what: &'static str, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, Error> + Send + 'static,
    {
        if self.hung.get() {
            return Err(Error::Timeout { what });
        }
        let now = Instant::now();
        let until = self
            .call_budget
            .map_or(self.deadline, |b| (now + b).min(self.deadline));
        let r = on_worker(what, until, f).unwrap_or(Err(Error::Timeout { what }));
        if matches!(r, Err(Error::Timeout { .. })) {
            self.hung.set(true);
        }
        r
    }

    fn connection(&self) -> Result<Arc<Connect>, Error> {
        if let Some(c) = self.conn.get() {
            return Ok(Arc::clone(c));
        }
        let lib = load::load().map_err(Error::Load)?;
        let uri = self.uri.clone();
        let conn = self.bounded("connect", move || {
            lib.open(&uri)
                .map(Arc::new)
                .map_err(|source| Error::Connect {
                    uri,
                    source: source.into(),
                })
        })?;
        Ok(Arc::clone(self.conn.get_or_init(|| conn)))
    }

    /// One bounded call with the connection, as the traits see its error.
    fn on_conn<T, F>(&self, what: &'static str, f: F) -> Result<T, HvError>
    where
        T: Send + 'static,
        F: FnOnce(&Connect) -> Result<T, virt::error::Error> + Send + 'static,
    {
        let conn = self.connection().map_err(HvError::from)?;
        self.bounded(what, move || {
            f(&conn).map_err(|source| call_error(what, source))
        })
        .map_err(HvError::from)
    }

    /// [`Libvirt::with_domain`], as the traits see its error.
    fn call<T, F>(&self, what: &'static str, name: &str, f: F) -> Result<T, HvError>
    where
        T: Send + 'static,
        F: FnOnce(&virt::domain::Domain) -> Result<T, virt::error::Error> + Send + 'static,
    {
        self.with_domain(what, name, f).map_err(HvError::from)
    }

    /// One bounded call with the connection and the named domain.
    fn with_domain<T, F>(&self, what: &'static str, name: &str, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&virt::domain::Domain) -> Result<T, virt::error::Error> + Send + 'static,
    {
        let conn = self.connection()?;
        let name = name.to_owned();
        self.bounded(what, move || {
            conn.lookup_domain_by_name(&name)
                .and_then(|dom| f(&dom))
                .map_err(|source| call_error(what, source))
        })
    }
}

impl Drop for Libvirt {
    fn drop(&mut self) {
        // The agent is a one-shot process: the kernel closes the socket at
        // exit and libvirtd drops a vanished client. An explicit close is
        // an RPC that hangs on a stuck libvirtd, and virt's `Drop` panics
        // when it fails, so the connection is deliberately leaked.
        if let Some(conn) = self.conn.take() {
            std::mem::forget(conn);
        }
    }
}

impl Observe for Libvirt {
    fn status(&self, name: &str) -> Result<Status, HvError> {
        let got = self.with_domain("get state", name, |d| {
            let (mut state, mut reason) = (-1, -1);
            // SAFETY: `d` is a live domain handle for the duration of this
            // closure; libvirt writes one int through each pointer, both of
            // which outlive the call. Called directly because virt 0.5's
            // `Domain::state` drops libvirt's error (a vanished domain
            // would read as an unknown state). Flags must be 0.
            status(unsafe { sys::virDomainGetState(d.as_ptr(), &mut state, &mut reason, 0) })?;
            Ok((state, reason))
        });
        match got {
            Ok((state, reason)) => Ok(observed(state, reason)),
            Err(Error::Call { source, .. }) if source.0.code().is(ErrorNumber::NoDomain) => {
                Ok(UNDEFINED)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn qemu(&self, name: &str) -> Qemu {
        qemu_proc::find(&self.uri, name, self.proc_budget())
    }

    fn definition(&self, name: &str) -> Result<Option<String>, HvError> {
        let got = self.with_domain("get the definition of", name, |d| {
            d.xml_desc(sys::VIR_DOMAIN_XML_INACTIVE | sys::VIR_DOMAIN_XML_SECURE)
        });
        match got {
            Ok(xml) => Ok(Some(xml)),
            Err(Error::Call { source, .. }) if source.0.code().is(ErrorNumber::NoDomain) => {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }
}

impl Hypervisor for Libvirt {
    fn define(&self, xml: &str) -> Result<String, HvError> {
        let xml = xml.to_owned();
        self.on_conn("define", move |c| {
            c.define_domain_xml(&xml).and_then(|d| d.name())
        })
    }

    fn xml(&self, name: &str) -> Result<String, HvError> {
        self.call("get the XML of", name, |d| d.xml_desc(0))
    }

    fn disk_allocation(&self, name: &str, disk: &str) -> Result<u64, HvError> {
        let disk = disk.to_owned();
        self.call("get the disk size of", name, move |d| {
            d.block_info(&disk, 0).map(|b| b.allocation)
        })
    }

    fn start(&self, name: &str) -> Result<(), HvError> {
        self.call("start", name, |d| d.create())
    }

    fn shutdown(&self, name: &str) -> Result<(), HvError> {
        self.call("shutdown", name, |d| d.shutdown())
    }

    fn destroy(&self, name: &str) -> Result<(), HvError> {
        self.call("destroy", name, |d| d.destroy())
    }

    fn autostart(&self, name: &str) -> Result<bool, HvError> {
        self.call("get autostart", name, |d| d.autostart())
    }

    fn disable_autostart(&self, name: &str) -> Result<(), HvError> {
        self.call("disable autostart", name, |d| d.set_autostart(false))
    }

    fn migrate(&self, name: &str, req: &MigrationRequest) -> Result<Migration, HvError> {
        let lib = load::load().map_err(|e| HvError::from(Error::Load(e)))?;
        let (uri, name, req) = (self.uri.clone(), name.to_owned(), req.clone());
        let (tx, rx) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("migrate".into())
            .spawn(move || {
                // A connection of its own: while one thread of this
                // process sat in the migrate RPC, job-stats calls from
                // another thread on the same connection hung now and then
                // (libvirt 9.0's client without an event loop), which
                // would leave the migration impossible to abort.
                let conn = match lib.open(&uri) {
                    Ok(c) => c,
                    Err(source) => {
                        let _ = tx.send(Err(Error::Connect {
                            uri,
                            source: source.into(),
                        }
                        .into()));
                        return;
                    }
                };
                let r = conn.lookup_domain_by_name(&name).and_then(|dom| {
                    let (flags, params) = flags_and_params(&req);
                    dom.migrate_to_uri3(Some(&req.dconn_uri), params, flags)
                });
                let _ = tx.send(r.map_err(|source| {
                    Error::Call {
                        what: "migrate",
                        source: source.into(),
                    }
                    .into()
                }));
                // Leaked like the main connection (see `Drop for Libvirt`).
                std::mem::forget(conn);
            })
            .map_err(|e| HvError::from(Error::Thread(e)))?;
        Ok(Migration::new(rx))
    }

    fn set_max_downtime(&self, name: &str, ms: u64) -> Result<(), HvError> {
        self.call("set the maximum downtime", name, move |d| {
            d.migrate_set_max_downtime(ms, 0)
        })
    }

    fn job(&self, name: &str) -> Result<Option<JobProgress>, HvError> {
        self.call("get job stats", name, |d| job_progress(d, 0))
    }

    fn completed_job(&self, name: &str) -> Result<Option<JobProgress>, HvError> {
        self.call("get completed job stats", name, |d| {
            // KEEP_COMPLETED: without it libvirt deletes the statistics
            // as it returns them, and `virsh domjobinfo --completed` shows
            // the admin nothing after the agent has read the downtime.
            job_progress(
                d,
                sys::VIR_DOMAIN_JOB_STATS_COMPLETED | sys::VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED,
            )
        })
    }

    fn abort_job(&self, name: &str) -> Result<(), HvError> {
        self.call("abort the job of", name, |d| {
            // SAFETY: `d` is a live domain handle for the duration of this
            // closure; virDomainAbortJob only reads it (virt 0.5 has no
            // wrapper for it).
            status(unsafe { sys::virDomainAbortJob(d.as_ptr()) })
        })
    }

    fn start_postcopy(&self, name: &str) -> Result<(), HvError> {
        self.call("switch to post-copy", name, |d| {
            // SAFETY: `d` is a live domain handle for the duration of this
            // closure; virDomainMigrateStartPostCopy only reads it (virt
            // 0.5 has no wrapper for it). Flags must be 0.
            status(unsafe { sys::virDomainMigrateStartPostCopy(d.as_ptr(), 0) })
        })
    }

    fn kill_qemu(&self, name: &str, pid: u32) -> Result<(), HvError> {
        qemu_proc::kill(name, pid, self.deadline).map_err(|e| HvError::new(ErrorKind::Other, e))
    }

    fn presence(&self, what: Resource, name: &str) -> Result<Presence, HvError> {
        let name = name.to_owned();
        let active = self.on_conn("look up a resource", move |c| {
            // Each kind's lookup, and the error libvirt gives for a name it
            // does not know.
            let (active, missing) = match what {
                Resource::Network => (
                    c.lookup_network_by_name(&name).and_then(|n| n.is_active()),
                    ErrorNumber::NoNetwork,
                ),
                Resource::Bridge => (
                    c.lookup_interface_by_name(&name)
                        .and_then(|i| i.is_active()),
                    ErrorNumber::NoInterface,
                ),
                Resource::Pool => (
                    pool(c, &name).and_then(|p| p.is_active()),
                    ErrorNumber::NoStoragePool,
                ),
            };
            match active {
                Err(e) if e.code().is(missing) => Ok(None),
                other => other.map(Some),
            }
        })?;
        Ok(match active {
            Some(true) => Presence::Active,
            Some(false) => Presence::Inactive,
            None => Presence::Missing,
        })
    }

    fn activate(&self, what: Resource, name: &str) -> Result<(), HvError> {
        let name = name.to_owned();
        match what {
            Resource::Network => self.on_conn("start a network", move |c| {
                c.lookup_network_by_name(&name).and_then(|n| n.create())
            }),
            Resource::Pool => self.on_conn("start a storage pool", move |c| {
                pool(c, &name).and_then(|p| p.create(0))
            }),
            Resource::Bridge => Err(HvError::new(
                ErrorKind::Other,
                "a bridge is the host's to bring up, not libvirt's",
            )),
        }
    }

    fn supports(&self, m: &Machine) -> Result<(), HvError> {
        let m = m.clone();
        self.on_conn("get the domain capabilities", move |c| {
            c.domain_capabilities(
                m.emulator.as_deref(),
                m.arch.as_deref(),
                m.machine.as_deref(),
                m.virt_type.as_deref(),
                0,
            )
            .map(drop)
        })
    }

    fn available_memory(&self) -> Result<u64, HvError> {
        self.on_conn("get the node's memory", |c| {
            let kib = node_memory_kib(c)?;
            let get = |f: &str| kib.iter().find(|(n, _)| n == f).map_or(0, |&(_, v)| v);
            Ok((get("free") + get("buffers") + get("cached")) << 10)
        })
    }
}

/// A storage pool by name (virt 0.5 has no wrapper for the lookup). A
/// name with a NUL in it (no XML can carry one) names no pool.
fn pool(c: &Connect, name: &str) -> Result<virt::storage_pool::StoragePool, virt::error::Error> {
    let name = std::ffi::CString::new(name).unwrap_or_default();
    // SAFETY: `c` is a live connection and `name` a NUL-terminated string,
    // both outliving the call; libvirt returns a new reference, or null
    // with its last error set.
    let ptr = unsafe { sys::virStoragePoolLookupByName(c.as_ptr(), name.as_ptr()) };
    if ptr.is_null() {
        return Err(virt::error::Error::last_error());
    }
    // SAFETY: a non-null pointer libvirt just returned, whose reference
    // the wrapper takes over (and frees when dropped).
    Ok(unsafe { virt::storage_pool::StoragePool::from_ptr(ptr) })
}

/// virNodeGetMemoryStats for all cells, as (field, KiB) pairs: "total",
/// "free", "buffers", "cached" on Linux (virt 0.5 has no wrapper).
fn node_memory_kib(c: &Connect) -> Result<Vec<(String, u64)>, virt::error::Error> {
    let cells = sys::VIR_NODE_MEMORY_STATS_ALL_CELLS;
    let mut n: std::os::raw::c_int = 0;
    // SAFETY: a null array with nparams 0 asks for the number of fields,
    // written to `n` (libvirt's documented two-call pattern).
    status(unsafe {
        sys::virNodeGetMemoryStats(c.as_ptr(), cells, std::ptr::null_mut(), &mut n, 0)
    })?;
    let empty = sys::virNodeMemoryStats {
        field: [0; 80],
        value: 0,
    };
    let mut stats = vec![empty; usize::try_from(n).unwrap_or(0)];
    // SAFETY: `stats` holds `n` entries, as libvirt was told; it writes at
    // most that many and sets `n` to the number written.
    status(unsafe {
        sys::virNodeGetMemoryStats(c.as_ptr(), cells, stats.as_mut_ptr(), &mut n, 0)
    })?;
    stats.truncate(usize::try_from(n).unwrap_or(0));
    Ok(stats
        .iter()
        .map(|s| {
            // SAFETY: libvirt NUL-terminates each field name within its
            // 80 bytes (VIR_NODE_MEMORY_STATS_FIELD_LENGTH).
            let field = unsafe { std::ffi::CStr::from_ptr(s.field.as_ptr()) };
            (field.to_string_lossy().into_owned(), s.value)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::DomainState;

    #[test]
    fn the_bandwidth_cap_holds_in_post_copy_too() {
        let req = |bandwidth, postcopy| MigrationRequest {
            dconn_uri: "qemu+tcp://node-b/system".into(),
            data_uri: "tcp://10.251.11.2".into(),
            bandwidth,
            max_downtime_ms: 300,
            parallel: 1,
            tls_host: None,
            auto_converge: false,
            xbzrle_cache: None,
            postcopy,
            postcopy_resume: false,
            copy_disks: Vec::new(),
            disks_port: None,
        };
        let (flags, params) = flags_and_params(&req(8, true));
        assert_ne!(flags & sys::VIR_MIGRATE_POSTCOPY, 0);
        assert_eq!(
            (params.bandwidth, params.bandwidth_postcopy),
            (Some(8), Some(8))
        );
        let (_, params) = flags_and_params(&req(0, true));
        assert_eq!((params.bandwidth, params.bandwidth_postcopy), (None, None));
        let (flags, params) = flags_and_params(&req(8, false));
        assert_eq!(flags & sys::VIR_MIGRATE_POSTCOPY, 0);
        assert_eq!(params.bandwidth_postcopy, None);
    }

    #[test]
    fn unreachable_libvirt_is_an_error_not_a_state() {
        let deadline = Instant::now() + Duration::from_secs(5);
        let lv = Libvirt::new("qemu+unix:///system?socket=/nonexistent/sock", deadline);
        let e = lv.state("vm1").unwrap_err();
        assert!(e.is_unreachable(), "{e:?}");
    }

    #[test]
    fn test_driver_states() {
        let deadline = Instant::now() + Duration::from_secs(5);
        let lv = Libvirt::new("test:///default", deadline);
        assert_eq!(lv.state("test").unwrap(), DomainState::Running);
        assert_eq!(lv.state("nope").unwrap(), DomainState::Undefined);
        lv.destroy("test").unwrap();
        assert_eq!(lv.state("test").unwrap(), DomainState::Shutoff);
        assert_eq!(lv.qemu("test"), Qemu::Unseen);
    }

    #[test]
    fn test_driver_resources() {
        let lv = Libvirt::new("test:///default", Instant::now() + Duration::from_secs(5));
        let at = |what, name| lv.presence(what, name).unwrap();
        assert_eq!(at(Resource::Network, "default"), Presence::Active);
        assert_eq!(at(Resource::Pool, "default-pool"), Presence::Active);
        assert_eq!(at(Resource::Bridge, "eth1"), Presence::Active);
        for what in [Resource::Network, Resource::Pool, Resource::Bridge] {
            assert_eq!(at(what, "nope"), Presence::Missing, "{what}");
        }
        assert_eq!(lv.definition("nope").unwrap(), None);
        assert!(lv
            .definition("test")
            .unwrap()
            .unwrap()
            .contains("<name>test</name>"));
    }

    #[test]
    fn a_call_that_hangs_returns_at_the_deadline() {
        let lv = Libvirt::new(
            "test:///default",
            Instant::now() + Duration::from_millis(200),
        );
        let t = Instant::now();
        let r: Result<(), Error> = lv.bounded("sleep", || {
            std::thread::sleep(Duration::from_secs(5));
            Ok(())
        });
        assert!(matches!(r, Err(Error::Timeout { what: "sleep" })));
        assert!(t.elapsed() < Duration::from_secs(1));
        // Later calls fail at once instead of waiting again.
        assert!(lv.state("test").unwrap_err().is_unreachable());
    }

    #[test]
    fn a_call_budget_bounds_each_call_not_the_connection_life() {
        let lv = Libvirt::new("test:///default", Instant::now() + Duration::from_secs(30))
            .per_call(Duration::from_millis(300));
        // A call that answers within its budget, late in the action (the
        // test driver's state is shared by the tests of this process:
        // "nope" is the domain no test defines).
        std::thread::sleep(Duration::from_millis(400));
        assert_eq!(lv.state("nope").unwrap(), DomainState::Undefined);
        // One that does not is cut at its budget, far before the deadline.
        let t = Instant::now();
        let r: Result<(), Error> = lv.bounded("sleep", || {
            std::thread::sleep(Duration::from_secs(5));
            Ok(())
        });
        assert!(matches!(r, Err(Error::Timeout { what: "sleep" })));
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    }
}
