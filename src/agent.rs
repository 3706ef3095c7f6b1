//! The agent's actions: what start, stop, monitor and validate-all decide,
//! written against the [`Hypervisor`] trait and bounded by the action's
//! [`Deadline`].

use std::thread::sleep;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use crate::cluster;
use crate::hypervisor::wait::{ensure_no_autostart, wait_state, wait_status};
use crate::hypervisor::{
    self, DomainState, ErrorKind, Hypervisor, Observe, Postcopy, Qemu, Status,
};
use crate::libvirt::{rpc::Rpc, Libvirt};
use crate::migrate;
use crate::migration_net::SystemNet;
use crate::ocf::{
    config, short, short_path, short_text, Deadline, Env, OcfRc, Outcome, ParamError, Params,
    CONFIG_BUDGET, METADATA,
};
use crate::uri;

/// The OCF actions this agent knows (Pacemaker's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Stop,
    Monitor,
    /// An alias of monitor kept for old tools (OCF 1.0 `status`).
    Status,
    MigrateTo,
    MigrateFrom,
    MetaData,
    ValidateAll,
    /// Not an OCF action: the admin's dry run of a migration.
    PlanMigration,
}

impl Action {
    pub const ALL: [Action; 9] = [
        Action::Start,
        Action::Stop,
        Action::Monitor,
        Action::Status,
        Action::MigrateTo,
        Action::MigrateFrom,
        Action::MetaData,
        Action::ValidateAll,
        Action::PlanMigration,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Monitor => "monitor",
            Action::Status => "status",
            Action::MigrateTo => "migrate_to",
            Action::MigrateFrom => "migrate_from",
            Action::MetaData => "meta-data",
            Action::ValidateAll => "validate-all",
            Action::PlanMigration => "plan-migration",
        }
    }

    pub fn from_name(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.name() == name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // Each message is the exit reason Pacemaker shows (it keeps 128 bytes):
    // what failed first, names through `short`, the long story in the log.
    #[error(transparent)]
    Param(#[from] ParamError),
    #[error("domain {} is not defined on this node and no config is set", short(.name))]
    NotDefined { name: String },
    #[error("cannot {what} domain {}", short(.name))]
    Libvirt {
        what: &'static str,
        name: String,
        #[source]
        source: hypervisor::Error,
    },
    #[error("domain {} is {state}, not running, {waited:.1?} after start", short(.name))]
    NotStarted {
        name: String,
        state: DomainState,
        waited: Duration,
    },
    #[error("domain {} is still {state} after destroy", short(.name))]
    StillActive { name: String, state: DomainState },
    #[error("domain {} still in post-copy after {waited:.1?}: stopping it here would kill the guest on the target", short(.name))]
    PostcopyRunning { name: String, waited: Duration },
    #[error("post-copy of {} failed ({state} here): virsh migrate --postcopy-resume, or restart it", short(.name))]
    PostcopyFailed { name: String, state: DomainState },
    #[error("libvirtd does not answer and QEMU pid {pid} of domain {} still runs", short(.name))]
    QemuAlive {
        name: String,
        pid: u32,
        #[source]
        source: hypervisor::Error,
    },
    #[error("QEMU pid {pid} of domain {} still runs, though libvirt says {state}", short(.name))]
    QemuUnknownToLibvirt {
        name: String,
        state: DomainState,
        pid: u32,
    },
    #[error("cannot tell whether a QEMU of domain {} runs: {why}", short(.name))]
    QemuUnreadable { name: String, why: String },
    #[error("QEMU pid {pid} of domain {} survived SIGKILL", short(.name))]
    QemuSurvived { name: String, pid: u32 },
    #[error("config {} is not a valid domain XML: {}", short_path(.path), short_text(.problem))]
    BadConfig {
        path: std::path::PathBuf,
        problem: String,
    },
    #[error("domain {} already runs on {} ({state}): not starting a second copy", short(.name), short(.peer))]
    RunningOnPeer {
        name: String,
        peer: String,
        state: DomainState,
    },
    #[error("no migration target (OCF_RESKEY_CRM_meta_migrate_target, --target) given")]
    NoTarget,
    #[error("node name \"{}\" cannot be a host in a libvirt URI", short(.node))]
    BadNode {
        node: String,
        #[source]
        source: uri::HostError,
    },
    #[error("cannot ask {} about the domain", short(.node))]
    Peer {
        node: String,
        #[source]
        source: hypervisor::Error,
    },
    #[error("domain {} runs neither here ({here}) nor on {} ({there})", short(.name), short(.target))]
    NotRunningAnywhere {
        name: String,
        here: DomainState,
        target: String,
        there: DomainState,
    },
    #[error("domain {} is active here and on {} ({there}): not migrating", short(.name), short(.target))]
    ActiveOnBoth {
        name: String,
        target: String,
        there: DomainState,
    },
    #[error("live migration of {} to {} failed, domain here: {here}", short(.name), short(.target))]
    MigrationFailed {
        name: String,
        target: String,
        here: String,
        #[source]
        source: hypervisor::Error,
    },
    #[error("migration of {} to {} did not finish; aborted, here {here}", short(.name), short(.target))]
    MigrationTimedOut {
        name: String,
        target: String,
        here: String,
    },
    #[error("domain {} did not arrive from {}: {state} here after {waited:.1?}", short(.name), short(.from))]
    NotArrived {
        name: String,
        from: String,
        state: DomainState,
        waited: Duration,
    },
}

impl Error {
    pub fn rc(&self) -> OcfRc {
        match self {
            Error::Param(e) => e.rc(),
            // Unknown here but maybe defined on the peer: a node-local
            // problem (5 bans only this node; 6 would stop it everywhere).
            Error::NotDefined { .. } => OcfRc::ErrInstalled,
            // libvirt.so.0 missing or too old on this node (OCF: "a
            // required component is missing"): the same, node-local.
            Error::Libvirt { source, .. } | Error::Peer { source, .. }
                if source.kind() == ErrorKind::NotInstalled =>
            {
                OcfRc::ErrInstalled
            }
            Error::BadConfig { .. } => OcfRc::ErrConfigured,
            // Everything else is soft: Pacemaker may recover in place or
            // move; none of it proves the configuration wrong everywhere.
            Error::Libvirt { .. }
            | Error::NotStarted { .. }
            | Error::StillActive { .. }
            | Error::PostcopyRunning { .. }
            | Error::PostcopyFailed { .. }
            | Error::QemuAlive { .. }
            | Error::QemuUnknownToLibvirt { .. }
            | Error::QemuUnreadable { .. }
            | Error::QemuSurvived { .. }
            | Error::RunningOnPeer { .. }
            | Error::NoTarget
            | Error::BadNode { .. }
            | Error::Peer { .. }
            | Error::NotRunningAnywhere { .. }
            | Error::ActiveOnBoth { .. }
            | Error::MigrationFailed { .. }
            | Error::MigrationTimedOut { .. }
            | Error::NotArrived { .. } => OcfRc::ErrGeneric,
        }
    }
}

/// The error and its sources on one line, each cause once (the messages
/// do not repeat their source; see cloud-hypervisor's error-chain rule).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(c.to_string().trim());
        cause = c.source();
    }
    text
}

impl From<Error> for Outcome {
    fn from(e: Error) -> Self {
        Outcome::new(e.rc(), chain(&e))
    }
}

/// How often a state is polled while waiting for it to change.
const POLL: Duration = Duration::from_millis(200);

/// How often stop presses the ACPI power button again: a guest that is
/// still booting (no ACPI handler loaded yet) misses the first press.
const ACPI_REPEAT: Duration = Duration::from_secs(3);

/// The time stop keeps for destroy after the graceful phase: libvirt's
/// destroy sends SIGTERM, waits up to 10 s, then SIGKILLs (virDomainDestroy),
/// so a quarter of the timeout, between 2 s and 15 s.
fn destroy_reserve(timeout: Duration) -> Duration {
    (timeout / 4).clamp(Duration::from_secs(2), Duration::from_secs(15))
}

/// Runs one action with the parameters in `env`.
pub fn run(action: Action, env: &Env) -> Outcome {
    let deadline = Deadline::new(env.timeout());
    let result = match action {
        Action::MetaData => print_metadata(),
        Action::ValidateAll => validate_all(env, &deadline),
        Action::Start => Params::from_env(env).map_err(Error::from).and_then(|p| {
            let hv = Libvirt::new(&p.hypervisor, deadline.at());
            let peer = Peer::find(env, &p, &deadline);
            start(&hv, &peer, &p, &deadline)
        }),
        Action::Stop => match lenient(env) {
            Ok(p) => {
                let hv = Libvirt::new(&p.hypervisor, deadline.at());
                let ask = stop_ask_budget(deadline.timeout());
                let probe = Libvirt::new(&p.hypervisor, deadline.at()).per_call(ask);
                stop(&hv, &probe, &p, &deadline)
            }
            // A failed stop gets the node fenced: a name no libvirt domain
            // can have names nothing that could run here.
            Err(Error::Param(e)) if e.name_is_impossible() => Ok(Outcome::new(
                OcfRc::Success,
                format!("{}: no such domain can be running", chain(&e)),
            )),
            Err(e) => Err(e),
        },
        Action::Monitor | Action::Status => lenient(env).and_then(|p| {
            let ask = monitor_ask_budget(deadline.timeout());
            // Asked without loading libvirt.so when the URI allows it.
            match Rpc::for_uri(&p.hypervisor, deadline.at(), ask) {
                Some(rpc) => monitor(&rpc, &p),
                None => monitor(
                    &Libvirt::new(&p.hypervisor, deadline.at()).per_call(ask),
                    &p,
                ),
            }
        }),
        Action::MigrateTo => Params::from_env(env).map_err(Error::from).and_then(|p| {
            let target = migration_target(env)?;
            let hv = Libvirt::new(&p.hypervisor, deadline.at());
            let peer = peer_libvirt(&p, target, &deadline);
            migrate::migrate_to(&hv, &peer, &SystemNet, &p, target, &deadline)
        }),
        Action::MigrateFrom => Params::from_env(env).map_err(Error::from).and_then(|p| {
            let hv = Libvirt::new(&p.hypervisor, deadline.at());
            let source = env.text("OCF_RESKEY_CRM_meta_migrate_source");
            migrate::migrate_from(&hv, &p, source, &deadline)
        }),
        Action::PlanMigration => Params::from_env(env)
            .map_err(Error::from)
            .and_then(|p| migrate::plan(&SystemNet, &p, migration_target(env)?)),
    };
    result.unwrap_or_else(Outcome::from)
}

/// Pacemaker's migration target (`CRM_meta_migrate_target`), checked as a
/// host name before anything reaches for it: it goes into the peer's
/// libvirt URI, where a `?command=` would make libvirt run a program.
fn migration_target(env: &Env) -> Result<&str, Error> {
    let target = env
        .text("OCF_RESKEY_CRM_meta_migrate_target")
        .ok_or(Error::NoTarget)?;
    checked_node(target)?;
    Ok(target)
}

fn checked_node(node: &str) -> Result<(), Error> {
    uri::check_host(node).map_err(|source| Error::BadNode {
        node: node.into(),
        source,
    })
}

/// meta-data: the embedded document, byte for byte, and nothing else on
/// stdout. It reads no parameter and touches no libvirt (ocf-tester runs
/// it as `nobody`). A closed stdout is not an error worth a non-zero code.
fn print_metadata() -> Result<Outcome, Error> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out
        .write_all(METADATA.as_bytes())
        .and_then(|()| out.flush());
    Ok(Outcome::new(OcfRc::Success, "meta-data printed"))
}

/// Parameters for stop and monitor: invalid optional parameters are logged
/// and replaced by their defaults. A stop that fails over a typo in, say,
/// `migration_speed` would get the node fenced for nothing.
fn lenient(env: &Env) -> Result<Params, Error> {
    let (params, problems) = Params::from_env_lenient(env)?;
    for p in problems {
        warn!("ignoring an invalid parameter for this action: {p}");
    }
    Ok(params)
}

/// validate-all: syntax of every parameter (6), then what this node must
/// have (5: `config` readable). It does not contact libvirt: validation
/// must answer even where libvirtd is down, as `crm_resource --validate`
/// is used to debug exactly that.
pub fn validate_all(env: &Env, deadline: &Deadline) -> Result<Outcome, Error> {
    let (p, problems) = Params::from_env_lenient(env)?;
    // Every rejected parameter is named, one log line each, so an admin
    // running `crm_resource --validate` fixes them all in one go.
    let mut errors: Vec<Error> = problems.into_iter().map(Error::from).collect();
    if let Some(xml) = p.read_config(config_budget(deadline)) {
        match xml {
            Ok(xml) => errors.extend(config::check_name(&p.name, &xml).err().map(Error::from)),
            Err(e) => errors.push(e.into()),
        }
    }
    if errors.is_empty() {
        return Ok(Outcome::new(OcfRc::Success, "parameters are valid"));
    }
    for e in &errors {
        log::error!("validate-all: {}", chain(e));
    }
    // A configuration error anywhere (6) outranks this node's problem (5),
    // and leads the reason: Pacemaker shows its first 128 bytes, the log
    // has every problem.
    errors.sort_by_key(|e| e.rc() != OcfRc::ErrConfigured);
    let rc = errors[0].rc();
    let mut reason = chain(&errors[0]);
    if errors.len() > 1 {
        reason = format!("{} problems, first: {reason}", errors.len());
    }
    Ok(Outcome::new(rc, reason))
}

fn config_budget(deadline: &Deadline) -> Duration {
    CONFIG_BUDGET.min(deadline.remaining())
}

pub(crate) fn hv_err(what: &'static str, name: &str) -> impl FnOnce(hypervisor::Error) -> Error {
    let name = name.to_owned();
    move |source| Error::Libvirt { what, name, source }
}

/// The other node, as start sees it: its libvirtd, or why it cannot be
/// asked.
pub enum Peer {
    Known {
        node: String,
        hv: Box<dyn Hypervisor>,
    },
    Unknown(String),
}

impl Peer {
    /// The `peer` parameter, or Pacemaker's answer.
    pub fn find(env: &Env, p: &Params, deadline: &Deadline) -> Peer {
        let budget = migrate::preflight_budget(deadline.timeout());
        let node = match &p.peer {
            Some(n) => n.clone(),
            None => match cluster::peer_from_pacemaker(env, budget.min(deadline.remaining())) {
                Ok(n) => n,
                Err(e) => return Peer::Unknown(chain(&e)),
            },
        };
        if let Err(e) = checked_node(&node) {
            return Peer::Unknown(chain(&e));
        }
        let hv = Box::new(peer_libvirt(p, &node, deadline));
        Peer::Known { node, hv }
    }
}

/// The peer node's libvirtd, reached like a migration target
/// (`qemu+<migration_transport>://...`), each call given the migration
/// pre-flight budget: a hung peer must cost an answer early, not the whole
/// action, and a live one can still be asked after a long migration.
/// `node` has passed [`checked_node`].
fn peer_libvirt(p: &Params, node: &str, deadline: &Deadline) -> Libvirt {
    Libvirt::new(&migrate::peer_uri(p, node), deadline.at())
        .per_call(migrate::preflight_budget(deadline.timeout()))
}

/// Refuses to boot a server that runs on the peer: two copies of one
/// server write to the same disks. A peer that cannot be asked is logged
/// and left to Pacemaker's probes (they run on every node before a start).
fn check_peer(peer: &Peer, name: &str) -> Result<(), Error> {
    match peer {
        Peer::Unknown(why) => {
            warn!("cannot tell which node is the peer ({why}); relying on Pacemaker's probes");
            Ok(())
        }
        Peer::Known { node, hv } => match hv.state(name) {
            Ok(state) if state.is_active() => Err(Error::RunningOnPeer {
                name: name.into(),
                peer: node.clone(),
                state,
            }),
            Ok(state) => {
                debug!("domain {name} on {node}: {state}");
                Ok(())
            }
            Err(e) => {
                warn!(
                    "cannot ask {node} whether domain {name} runs there ({}); relying on Pacemaker's probes",
                    chain(&e)
                );
                Ok(())
            }
        },
    }
}

/// start: 0 once the domain runs (at once if it already does).
pub fn start<H: Hypervisor>(
    hv: &H,
    peer: &Peer,
    p: &Params,
    deadline: &Deadline,
) -> Result<Outcome, Error> {
    let name = p.name.as_str();
    let mut state = hv.state(name).map_err(hv_err("get the state of", name))?;
    if state == DomainState::Undefined {
        let xml = match p.read_config(config_budget(deadline)) {
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
    check_peer(peer, name)?;
    let t0 = Instant::now();
    if let Err(e) = hv.start(name) {
        // Started by someone else in between: libvirt says it is active.
        if e.kind() != ErrorKind::InvalidState {
            return Err(hv_err("start", name)(e));
        }
        debug!("domain {name}: start refused ({e}); checking its state");
    }
    let state = wait_state(hv, name, deadline.at(), |s| s == DomainState::Running)
        .map_err(hv_err("get the state of", name))?;
    if state != DomainState::Running {
        return Err(Error::NotStarted {
            name: name.into(),
            state,
            waited: t0.elapsed(),
        });
    }
    Ok(Outcome::new(
        OcfRc::Success,
        format!("domain {name} started in {:.1?}", t0.elapsed()),
    ))
}

/// stop: 0 once no QEMU of the domain runs here; graceful ACPI shutdown
/// first (unless `force_stop`), destroy early enough to return before the
/// deadline (VirtualDomain's model: graceful until timeout − reserve).
/// `probe` asks libvirtd the first question within a shorter budget, so a
/// hung libvirtd leaves time to make sure of the QEMU process.
pub fn stop<H: Hypervisor>(
    hv: &H,
    probe: &dyn Observe,
    p: &Params,
    deadline: &Deadline,
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
        let graceful_end = deadline.earlier_by(destroy_reserve(deadline.timeout()));
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
            state = wait_state(hv, name, graceful_end.min(next_press), |s| !s.is_active())
                .map_err(hv_err("get the state of", name))?;
        }
        if !state.is_active() {
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
    let state = wait_state(hv, name, deadline.at(), |s| {
        !s.is_active() && s != DomainState::Crashed
    })
    .map_err(hv_err("get the state of", name))?;
    if state.is_active() || state == DomainState::Crashed {
        return Err(Error::StillActive {
            name: name.into(),
            state,
        });
    }
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
    deadline: &Deadline,
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
    let until = Instant::now() + abort_wait(deadline.timeout()).min(deadline.remaining());
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

/// How long stop waits for an aborted migration to end: libvirt cancels a
/// copy in about a second, 2 s on a busy host with the link cut; an eighth
/// of the timeout, 2 s to 10 s.
fn abort_wait(timeout: Duration) -> Duration {
    (timeout / 8).clamp(Duration::from_secs(2), Duration::from_secs(10))
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
        Qemu::Gone | Qemu::Unseen => Ok(Outcome::new(
            OcfRc::Success,
            format!("domain {name} is already stopped ({state})"),
        )),
        Qemu::Alive(pid) if p.force_stop => kill_qemu(hv, name, pid, "libvirt reports it {state}"),
        Qemu::Alive(pid) => Err(Error::QemuUnknownToLibvirt {
            name: name.into(),
            state,
            pid,
        }),
        Qemu::Unreadable(why) => Err(Error::QemuUnreadable {
            name: name.into(),
            why,
        }),
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

/// How long monitor waits for libvirtd's answer: min(2 s, a quarter of its
/// timeout). A hung libvirtd then costs a monitor two seconds, and the QEMU
/// process decides, instead of the whole timeout.
pub fn monitor_ask_budget(timeout: Duration) -> Duration {
    (timeout / 4).min(Duration::from_secs(2))
}

/// How long stop waits for libvirtd's first answer: a quarter of its
/// timeout, 2 s to 15 s, so that a hung libvirtd leaves most of the budget
/// for making sure of (or, with force_stop, killing) the QEMU process.
pub fn stop_ask_budget(timeout: Duration) -> Duration {
    (timeout / 4).clamp(Duration::from_secs(2), Duration::from_secs(15))
}

/// monitor (and probes, which follow the same rule): 0 while the domain is
/// active, 7 when it is shut off or not defined, 1 when it crashed or its
/// state cannot be known. Never 7 while a QEMU process of the domain lives
/// on this node: Pacemaker would start it elsewhere, and it would run twice.
/// The one exception is the paused source of a running post-copy: the
/// guest already runs on the target, and a 0 here as well would make a
/// probe see it active on both nodes, whose default recovery stops both.
/// A failed post-copy is 1 on either side: the guest cannot run until the
/// copy is resumed by hand, and a 0 would hide a hung server.
pub fn monitor<H: Observe>(hv: &H, p: &Params) -> Result<Outcome, Error> {
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
    match hv.qemu(name) {
        Qemu::Alive(pid) => Err(Error::QemuUnknownToLibvirt {
            name: name.into(),
            state,
            pid,
        }),
        Qemu::Unreadable(why) => Err(Error::QemuUnreadable {
            name: name.into(),
            why,
        }),
        Qemu::Gone | Qemu::Unseen => Ok(Outcome::new(
            OcfRc::NotRunning,
            format!("domain {} is {state}", short(name)),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::fake::{timeout, Fake};

    fn params(extra: &[(&str, &str)]) -> Params {
        let env: Env = [("OCF_RESKEY_name", "vm1")]
            .into_iter()
            .chain(extra.iter().copied())
            .collect();
        Params::from_env(&env).unwrap()
    }

    fn deadline(secs: u64) -> Deadline {
        Deadline::new(Duration::from_secs(secs))
    }

    #[test]
    fn monitor_maps_states() {
        let p = params(&[]);
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
            assert_eq!(monitor(&Fake::new(&[s]), &p).unwrap().rc, rc, "{s}");
        }
    }

    #[test]
    fn monitor_never_says_stopped_while_qemu_lives() {
        let p = params(&[]);
        let f = Fake::new(&[DomainState::Undefined]);
        f.pid.set(Some(42));
        let e = monitor(&f, &p).unwrap_err();
        assert!(
            matches!(e, Error::QemuUnknownToLibvirt { pid: 42, .. }),
            "{e}"
        );
        assert_eq!(e.rc(), OcfRc::ErrGeneric);
        // A process table that cannot be read is not "stopped" either.
        let mut f = Fake::new(&[DomainState::Shutoff]);
        f.qemu_unknown = true;
        assert_eq!(monitor(&f, &p).unwrap_err().rc(), OcfRc::ErrGeneric);
        let f = Fake::unreachable();
        f.pid.set(Some(42));
        assert_eq!(monitor(&f, &p).unwrap().rc, OcfRc::Success);
        let e = monitor(&Fake::unreachable(), &p).unwrap_err();
        assert_eq!(e.rc(), OcfRc::ErrGeneric);
    }

    #[test]
    fn start_defines_from_config_and_turns_autostart_off() {
        let dir = std::env::temp_dir().join(format!("vmshift-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("vm1.xml");
        std::fs::write(&cfg, "<domain type='qemu'><name>vm1</name></domain>").unwrap();
        let p = params(&[("OCF_RESKEY_config", cfg.to_str().unwrap())]);
        let f = Fake::new(&[DomainState::Undefined]);
        f.autostart.set(true);
        let out = start(&f, &Peer::Unknown("test".into()), &p, &deadline(20)).unwrap();
        assert_eq!(out.rc, OcfRc::Success);
        assert_eq!(f.calls(), ["define", "autostart off", "start"]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn start_refuses_a_server_running_on_the_peer() {
        let f = Fake::new(&[DomainState::Shutoff]);
        let peer = Peer::Known {
            node: "node-b".into(),
            hv: Box::new(Fake::new(&[DomainState::Running])),
        };
        let e = start(&f, &peer, &params(&[]), &deadline(20)).unwrap_err();
        assert!(matches!(e, Error::RunningOnPeer { .. }), "{e}");
        assert!(f.calls().is_empty(), "nothing booted");
        // A peer that cannot be asked does not block the start.
        let peer = Peer::Known {
            node: "node-b".into(),
            hv: Box::new(Fake::unreachable()),
        };
        assert_eq!(
            start(&f, &peer, &params(&[]), &deadline(20)).unwrap().rc,
            OcfRc::Success
        );
    }

    #[test]
    fn start_unknown_domain_without_config_is_not_installed() {
        let e = start(
            &Fake::new(&[DomainState::Undefined]),
            &Peer::Unknown("test".into()),
            &params(&[]),
            &deadline(20),
        );
        assert_eq!(e.unwrap_err().rc(), OcfRc::ErrInstalled);
    }

    #[test]
    fn start_running_domain_is_success_at_once() {
        let f = Fake::new(&[DomainState::Running]);
        assert_eq!(
            start(
                &f,
                &Peer::Unknown("test".into()),
                &params(&[]),
                &deadline(20)
            )
            .unwrap()
            .rc,
            OcfRc::Success
        );
        assert!(f.calls().is_empty());
    }

    #[test]
    fn stop_graceful() {
        let f = Fake::new(&[DomainState::Running]);
        let out = stop(&f, &f, &params(&[]), &deadline(20)).unwrap();
        assert_eq!(out.rc, OcfRc::Success);
        assert_eq!(f.calls(), ["shutdown"]);
    }

    #[test]
    fn stop_force_destroys_at_once() {
        let f = Fake::new(&[DomainState::Running]);
        let p = params(&[("OCF_RESKEY_force_stop", "true")]);
        assert_eq!(stop(&f, &f, &p, &deadline(20)).unwrap().rc, OcfRc::Success);
        assert_eq!(f.calls(), ["destroy"]);
    }

    #[test]
    fn stop_destroys_a_guest_ignoring_acpi_before_the_deadline() {
        let mut f = Fake::new(&[DomainState::Running]);
        f.after_shutdown = None;
        // 4 s timeout: deadline at 3 s, destroy reserve 2 s -> 1 s graceful.
        let t = Instant::now();
        let out = stop(&f, &f, &params(&[]), &Deadline::new(Duration::from_secs(4))).unwrap();
        assert_eq!(out.rc, OcfRc::Success);
        assert!(out.reason.contains("ignored ACPI"), "{}", out.reason);
        assert_eq!(f.calls().last(), Some(&"destroy"));
        assert!(t.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn monitor_leaves_a_post_copy_source_to_the_target() {
        let f = Fake::new(&[DomainState::Paused]);
        *f.postcopy.borrow_mut() = vec![Some(Postcopy::Outgoing)];
        assert_eq!(monitor(&f, &params(&[])).unwrap().rc, OcfRc::NotRunning);
        // The target of the same copy runs the guest.
        let f = Fake::new(&[DomainState::Running]);
        *f.postcopy.borrow_mut() = vec![Some(Postcopy::Incoming)];
        assert_eq!(monitor(&f, &params(&[])).unwrap().rc, OcfRc::Success);
        // A broken copy: the guest cannot run on either side.
        for s in [DomainState::Running, DomainState::Paused] {
            let f = Fake::new(&[s]);
            *f.postcopy.borrow_mut() = vec![Some(Postcopy::Failed)];
            let e = monitor(&f, &params(&[])).unwrap_err();
            assert!(matches!(e, Error::PostcopyFailed { .. }), "{e}");
            assert_eq!(e.rc(), OcfRc::ErrGeneric);
        }
    }

    #[test]
    fn stop_waits_for_an_outgoing_post_copy_and_touches_nothing() {
        let f = Fake::new(&[DomainState::Paused, DomainState::Shutoff]);
        *f.postcopy.borrow_mut() = vec![Some(Postcopy::Outgoing), Some(Postcopy::Outgoing), None];
        let out = stop(&f, &f, &params(&[]), &deadline(20)).unwrap();
        assert_eq!(out.rc, OcfRc::Success);
        assert!(f.calls().is_empty(), "{:?}", f.calls());
    }

    #[test]
    fn stop_never_kills_the_source_of_a_post_copy_that_does_not_end() {
        let f = Fake::new(&[DomainState::Paused]);
        *f.postcopy.borrow_mut() = vec![Some(Postcopy::Outgoing)];
        let t = Instant::now();
        let e = stop(&f, &f, &params(&[]), &Deadline::new(Duration::from_secs(2))).unwrap_err();
        assert!(matches!(e, Error::PostcopyRunning { .. }), "{e}");
        assert!(f.calls().is_empty(), "{:?}", f.calls());
        assert!(t.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn stop_destroys_a_failed_post_copy_at_once() {
        for s in [DomainState::Running, DomainState::Paused] {
            let f = Fake::new(&[s]);
            *f.postcopy.borrow_mut() = vec![Some(Postcopy::Failed), None];
            let out = stop(&f, &f, &params(&[]), &deadline(20)).unwrap();
            assert_eq!(out.rc, OcfRc::Success);
            assert_eq!(f.calls(), ["destroy"], "{s}");
            assert!(
                out.reason.contains("post-copy had failed"),
                "{}",
                out.reason
            );
        }
    }

    #[test]
    fn stop_stopped_is_success() {
        for s in [DomainState::Shutoff, DomainState::Undefined] {
            let f = Fake::new(&[s]);
            assert_eq!(
                stop(&f, &f, &params(&[]), &deadline(20)).unwrap().rc,
                OcfRc::Success
            );
            assert!(f.calls().is_empty());
        }
    }

    #[test]
    fn stop_without_libvirt() {
        let p = params(&[]);
        let mut f = Fake::unreachable();
        assert_eq!(stop(&f, &f, &p, &deadline(20)).unwrap().rc, OcfRc::Success);
        f.pid.set(Some(7));
        assert_eq!(
            stop(&f, &f, &p, &deadline(20)).unwrap_err().rc(),
            OcfRc::ErrGeneric
        );
        f.pid.set(None);
        f.qemu_unknown = true;
        assert_eq!(
            stop(&f, &f, &p, &deadline(20)).unwrap_err().rc(),
            OcfRc::ErrGeneric
        );
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
        let out = stop(&f, &f, &params(&[]), &deadline(20)).unwrap();
        assert_eq!(out.rc, OcfRc::Success);
        assert_eq!(f.calls(), ["abort", "shutdown"]);
    }

    #[test]
    fn stop_destroys_a_migration_that_cannot_be_aborted() {
        let mut f = Fake::new(&[DomainState::Running]);
        *f.jobs.borrow_mut() = vec![outgoing_job()];
        f.abort_ignored = true;
        let t = Instant::now();
        let out = stop(&f, &f, &params(&[]), &deadline(16)).unwrap();
        assert_eq!(out.rc, OcfRc::Success);
        assert_eq!(f.calls(), ["abort", "destroy"]);
        assert!(
            out.reason.contains("could not be aborted"),
            "{}",
            out.reason
        );
        assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    }

    #[test]
    fn stop_destroys_an_incoming_copy_at_once() {
        let f = Fake::new(&[DomainState::Paused]);
        *f.migrating.borrow_mut() = vec![true, false];
        let out = stop(&f, &f, &params(&[]), &deadline(20)).unwrap();
        assert_eq!(out.rc, OcfRc::Success);
        assert_eq!(f.calls(), ["destroy"]);
        assert!(out.reason.contains("incoming copy"), "{}", out.reason);
    }

    #[test]
    fn stop_never_says_stopped_while_a_qemu_libvirt_lost_lives() {
        let f = Fake::new(&[DomainState::Shutoff]);
        f.pid.set(Some(42));
        let e = stop(&f, &f, &params(&[]), &deadline(20)).unwrap_err();
        assert!(
            matches!(e, Error::QemuUnknownToLibvirt { pid: 42, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("42"), "{e}");
        // force_stop kills it, and says so.
        let p = params(&[("OCF_RESKEY_force_stop", "true")]);
        let out = stop(&f, &f, &p, &deadline(20)).unwrap();
        assert_eq!(out.rc, OcfRc::Success);
        assert_eq!(f.calls(), ["kill"]);
        assert!(out.reason.contains("pid 42 killed"), "{}", out.reason);
    }

    #[test]
    fn stop_with_libvirtd_hung_kills_the_qemu_only_with_force_stop() {
        let f = Fake::unreachable();
        f.pid.set(Some(7));
        let e = stop(&f, &f, &params(&[]), &deadline(20)).unwrap_err();
        assert!(matches!(e, Error::QemuAlive { pid: 7, .. }), "{e}");
        let p = params(&[("OCF_RESKEY_force_stop", "true")]);
        assert_eq!(stop(&f, &f, &p, &deadline(20)).unwrap().rc, OcfRc::Success);
        assert_eq!(f.calls(), ["kill"]);
    }

    #[test]
    fn budgets_for_the_first_question() {
        let s = Duration::from_secs;
        assert_eq!(monitor_ask_budget(s(10)), Duration::from_millis(2000));
        assert_eq!(monitor_ask_budget(s(4)), s(1));
        assert_eq!(stop_ask_budget(s(20)), s(5));
        assert_eq!(stop_ask_budget(s(4)), s(2));
        assert_eq!(stop_ask_budget(s(600)), s(15));
    }

    /// Which variant an error is: the match has no wildcard, so a new
    /// variant does not compile until the reason test below covers it.
    fn variant(e: &Error) -> usize {
        match e {
            Error::Param(_) => 0,
            Error::NotDefined { .. } => 1,
            Error::Libvirt { .. } => 2,
            Error::NotStarted { .. } => 3,
            Error::StillActive { .. } => 4,
            Error::PostcopyRunning { .. } => 5,
            Error::PostcopyFailed { .. } => 6,
            Error::QemuAlive { .. } => 7,
            Error::QemuUnknownToLibvirt { .. } => 8,
            Error::QemuUnreadable { .. } => 9,
            Error::QemuSurvived { .. } => 10,
            Error::BadConfig { .. } => 11,
            Error::RunningOnPeer { .. } => 12,
            Error::NoTarget => 13,
            Error::BadNode { .. } => 14,
            Error::Peer { .. } => 15,
            Error::NotRunningAnywhere { .. } => 16,
            Error::ActiveOnBoth { .. } => 17,
            Error::MigrationFailed { .. } => 18,
            Error::MigrationTimedOut { .. } => 19,
            Error::NotArrived { .. } => 20,
        }
    }

    /// As [`variant`], for the parameter errors.
    fn param_variant(e: &ParamError) -> usize {
        match e {
            ParamError::MissingName => 0,
            ParamError::NotUtf8 { .. } => 1,
            ParamError::BadName { .. } => 2,
            ParamError::Invalid { .. } => 3,
            ParamError::DowntimeMaxBelowStart { .. } => 4,
            ParamError::PostcopyWithParallel { .. } => 5,
            ParamError::BadUri { .. } => 6,
            ParamError::BadHost { .. } => 7,
            ParamError::BadUser { .. } => 8,
            ParamError::ConfigUnreadable { .. } => 9,
            ParamError::ConfigRefused { .. } => 10,
            ParamError::ConfigNotDomain { .. } => 11,
            ParamError::ConfigNames { .. } => 12,
        }
    }

    /// Every reason vmshift can give Pacemaker, with the longest names,
    /// nodes, paths, states, times and pids there can be (a 247-byte name
    /// of two-byte characters, a 253-byte host name, PID_MAX_LIMIT).
    fn worst_cases() -> Vec<Error> {
        let name = "é".repeat(123);
        let node = [
            "n".repeat(63),
            "o".repeat(63),
            "d".repeat(63),
            "e".repeat(61),
        ]
        .join(".");
        let path = std::path::PathBuf::from(format!("/{}/vm.xml", "p".repeat(4000)));
        let state = DomainState::ShuttingDown;
        let waited = Duration::from_secs(99_999);
        let pid = 4_194_304;
        let lv = || timeout("get completed job stats (a libvirtd that does not answer)");
        let mut all = vec![
            Error::NotDefined { name: name.clone() },
            Error::Param(ParamError::ConfigNames {
                name: name.clone(),
                found: name.clone(),
            }),
            Error::Libvirt {
                what: "set the maximum downtime of",
                name: name.clone(),
                source: lv(),
            },
            Error::NotStarted {
                name: name.clone(),
                state,
                waited,
            },
            Error::StillActive {
                name: name.clone(),
                state,
            },
            Error::PostcopyRunning {
                name: name.clone(),
                waited,
            },
            Error::PostcopyFailed {
                name: name.clone(),
                state,
            },
            Error::QemuAlive {
                name: name.clone(),
                pid,
                source: lv(),
            },
            Error::QemuUnknownToLibvirt {
                name: name.clone(),
                state: DomainState::Undefined,
                pid,
            },
            Error::QemuUnreadable {
                name: name.clone(),
                why: "/proc did not answer in 1s (a process in D state?)".into(),
            },
            Error::QemuSurvived {
                name: name.clone(),
                pid,
            },
            Error::BadConfig {
                path: path.clone(),
                problem: "x".repeat(500),
            },
            Error::RunningOnPeer {
                name: name.clone(),
                peer: node.clone(),
                state,
            },
            Error::NoTarget,
            Error::BadNode {
                node: node.clone() + "?command=/bin/sh",
                source: uri::check_host("a?").unwrap_err(),
            },
            Error::Peer {
                node: node.clone(),
                source: lv(),
            },
            Error::NotRunningAnywhere {
                name: name.clone(),
                here: state,
                target: node.clone(),
                there: state,
            },
            Error::ActiveOnBoth {
                name: name.clone(),
                target: node.clone(),
                there: state,
            },
            Error::MigrationFailed {
                name: name.clone(),
                target: node.clone(),
                here: DomainState::PmSuspended.to_string(),
                source: lv(),
            },
            Error::MigrationTimedOut {
                name: name.clone(),
                target: node.clone(),
                here: format!("QEMU pid {pid} alive"),
            },
            Error::NotArrived {
                name: name.clone(),
                from: node.clone(),
                state,
                waited,
            },
        ];
        // Every parameter error, from the parser itself: each parameter
        // given a long hostile value, every name libvirt refuses, and the
        // config file problems.
        let long = format!("{}?command=/bin/sh;{}", "é".repeat(100), "x".repeat(300));
        for key in crate::ocf::PARAM_NAMES.into_iter().filter(|&k| k != "name") {
            let env: Env = [
                ("OCF_RESKEY_name", "vm1"),
                (&*format!("OCF_RESKEY_{key}"), &*long),
            ]
            .into_iter()
            .collect();
            let (_, problems) = Params::from_env_lenient(&env).unwrap();
            all.extend(problems.into_iter().map(Error::from));
        }
        for bad in [&*"é".repeat(124), "a/b", "a\nb", "a\u{1}b"] {
            let env: Env = [("OCF_RESKEY_name", bad)].into_iter().collect();
            all.push(Params::from_env(&env).unwrap_err().into());
        }
        let mut env: Env = [("OCF_RESKEY_migration_postcopy", "true")]
            .into_iter()
            .collect();
        env.set("OCF_RESKEY_name", "vm1");
        env.set("OCF_RESKEY_migration_parallel", "64");
        env.set("OCF_RESKEY_migration_downtime", "2000000");
        env.set("OCF_RESKEY_migration_downtime_max", "1999999");
        all.extend(
            Params::from_env_lenient(&env)
                .unwrap()
                .1
                .into_iter()
                .map(Error::from),
        );
        all.push(ParamError::MissingName.into());
        all.push(
            ParamError::NotUtf8 {
                name: "migration_network_suffix".into(),
            }
            .into(),
        );
        for why in [
            crate::ocf::ConfigProblem::NotRegular("directory"),
            crate::ocf::ConfigProblem::NotRoot(u32::MAX),
            crate::ocf::ConfigProblem::Writable(0o7777),
            crate::ocf::ConfigProblem::TooLarge,
            crate::ocf::ConfigProblem::Slow(Duration::from_secs(2)),
            crate::ocf::ConfigProblem::NotText,
        ] {
            all.push(
                ParamError::ConfigRefused {
                    path: path.clone(),
                    why,
                }
                .into(),
            );
        }
        all.push(ParamError::ConfigNotDomain { path: path.clone() }.into());
        all.push(
            ParamError::ConfigUnreadable {
                path,
                source: std::io::Error::from_raw_os_error(libc::ENAMETOOLONG),
            }
            .into(),
        );
        all
    }

    #[test]
    fn every_reason_fits_pacemakers_128_bytes_decisive_part_first() {
        let all = worst_cases();
        let mut seen: Vec<usize> = all.iter().map(variant).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(
            seen,
            (0..=20).collect::<Vec<_>>(),
            "a variant has no worst case"
        );
        let mut params = std::collections::BTreeSet::new();
        for e in &all {
            // The message of our own, without its causes, fits whole: what
            // failed is never what Pacemaker cuts off.
            let own = e.to_string();
            assert!(
                own.len() <= crate::ocf::EXIT_REASON_MAX,
                "{} bytes: {own}",
                own.len()
            );
            // With the causes, the printed reason is cut to fit.
            let printed = crate::ocf::exit_reason(&chain(e)).into_owned();
            assert!(printed.len() <= crate::ocf::EXIT_REASON_MAX, "{printed}");
            let lead: String = own.chars().take(40).collect();
            assert!(printed.starts_with(&lead), "{printed}");
            if let Error::Param(p) = e {
                params.insert(param_variant(p));
            }
        }
        assert_eq!(params.len(), 13, "every ParamError variant is covered");
        // The other reasons of a non-zero exit.
        let long = "é".repeat(123);
        let p =
            Params::from_env(&[("OCF_RESKEY_name", long.as_str())].into_iter().collect()).unwrap();
        let f = Fake::new(&[DomainState::Paused]);
        *f.postcopy.borrow_mut() = vec![Some(Postcopy::Outgoing)];
        let f2 = Fake::new(&[DomainState::Crashed]);
        for out in [monitor(&f, &p).unwrap(), monitor(&f2, &p).unwrap()] {
            assert_ne!(out.rc, OcfRc::Success);
            assert!(
                out.reason.len() <= crate::ocf::EXIT_REASON_MAX,
                "{}",
                out.reason
            );
        }
    }

    #[test]
    fn actions_round_trip_names() {
        for a in Action::ALL {
            assert_eq!(Action::from_name(a.name()), Some(a));
        }
        assert_eq!(Action::from_name("promote"), None);
    }
}
