//! migrate_to on the source: live-migrates the domain to the target
//! Pacemaker names, bounded by its own timeout.
//!
//! The job is polled, and aborted a margin before the deadline (or once it
//! has made no progress for `migration_progress_timeout`) with the guest
//! left running on the source, unless it is in post-copy, which
//! libvirt cannot abort: the guest then already runs on the target, and
//! that is what is reported. A post-copy whose connection breaks is
//! resumed over a new one until the deadline. A migrate_to that Pacemaker
//! has to kill instead makes it assume the server may run on both nodes
//! (`unpack_migrate_to_failure`), and the default recovery is then to stop
//! it everywhere.

use std::time::{Duration, Instant};

use log::{info, warn};

use crate::error::{chain, hv_err, Error};
use crate::hypervisor::wait::wait_running;
use crate::hypervisor::{
    self, mib, DomainState, Hypervisor, JobProgress, Migration, MigrationRequest, Postcopy, Qemu,
    Status,
};
use crate::migration::converge::{qemu_limit_ms, Decision, Ladder, Step};
use crate::migration::network::{Choice, Net};
use crate::migration::{bandwidth, choose_network, request, CopyEstimate};
use crate::moves::{MoveState, Tracker};
use crate::ocf::{AutoConverge, Budget, OcfRc, Outcome, Params};
use crate::peer::Target;
use crate::preflight::{self, Needs};
use crate::records::Records;
use crate::storage;

/// How often the migration's result is waited for between checks.
const POLL: Duration = Duration::from_millis(250);

/// How often progress is logged while the RAM is copied.
const PROGRESS_EVERY: Duration = Duration::from_secs(3);

/// The pause between attempts to resume a broken post-copy: a link that is
/// down refuses at once (no route), and each attempt costs both libvirtds
/// a prepare phase.
const RESUME_EVERY: Duration = Duration::from_secs(1);

/// The time an attempt to resume needs before the deadline: a refused one
/// takes both libvirtds about 1.7 s (prepare on the target, connect, abort)
/// on the lab. One begun later would outlive migrate_to inside libvirtd and
/// hold the domain's job lock on both nodes while Pacemaker stops and
/// starts the server.
const RESUME_ROOM: Duration = Duration::from_secs(3);

/// Whether the domain is seen on `side` of a post-copy here. A state that
/// cannot be read counts as no: the caller goes on as without a post-copy.
fn in_postcopy(local: &dyn Hypervisor, name: &str, side: Postcopy) -> bool {
    local.postcopy(name).ok().flatten() == Some(side)
}

/// A state that could not be read (libvirtd gone quiet) says so.
fn state_text(state: Option<DomainState>) -> String {
    state.map_or_else(|| "unknown".to_owned(), |s| s.to_string())
}

/// `network node-b.mn (10.251.1.2), 2.31 s, downtime 171 ms, 90.3 MiB at 312 MiB/s`
/// How a move went, with the downtime measured beside the one allowed at
/// the end (raised by the policy, or the admin's `migration_downtime`):
/// QEMU's limit is an estimate, and the switchover adds device state and
/// libvirt's resume to the last pages.
fn result_line(
    choice: &Choice,
    took: Duration,
    done: Option<&JobProgress>,
    allowed_ms: u64,
) -> String {
    let network = match choice.address {
        Some(a) => format!("migration network {} ({a})", choice.candidate),
        None => format!("fallback {} ({choice})", choice.target),
    };
    let mut line = format!("over {network} in {:.2} s", took.as_secs_f64());
    if let Some(d) = done {
        line.push_str(&d.result());
    }
    line.push_str(&format!(" (downtime allowed {allowed_ms} ms)"));
    line
}

/// migrate_to: live-migrates the domain to `to` (its libvirtd bounded by
/// the preflight budget); `net` chooses the network.
pub fn migrate_to(
    local: &dyn Hypervisor,
    to: &Target,
    net: &dyn Net,
    p: &Params,
    deadline: &Budget,
    records: &Records,
) -> Result<Outcome, Error> {
    let (peer, target) = (to.hv, to.node);
    let name = p.name.as_str();
    let mut phases = Phases::since(deadline);
    let abort_at = deadline.earlier_by(deadline.abort_reserve());
    follow_earlier_migration(local, name, target, abort_at, deadline)?;
    let Status {
        state: here,
        postcopy,
        ..
    } = local
        .status(name)
        .map_err(hv_err("get the state of", name))?;
    phases.mark("local");
    if postcopy == Some(Postcopy::Failed) {
        // An earlier move's post-copy broke and was not resumed: no new
        // migration can start from here, and monitor says 1 on both nodes.
        return Err(Error::PostcopyFailed {
            name: name.into(),
            state: here,
        });
    }
    let there = peer.state(name).map_err(|source| Error::Peer {
        node: target.into(),
        source,
    });
    phases.mark("peer");
    // The paused source of a post-copy no longer runs the guest either.
    if !here.is_active() || postcopy == Some(Postcopy::Outgoing) {
        // A repeated migrate_to after a migration that worked.
        return match there? {
            s if s.is_active() => Ok(Outcome::new(
                OcfRc::Success,
                format!("domain {name} already runs on {target} ({s}), not here ({here})"),
            )),
            s => Err(Error::NotRunningAnywhere {
                name: name.into(),
                here,
                target: target.into(),
                there: s,
            }),
        };
    }
    match there? {
        s if s.is_active() => {
            return Err(Error::ActiveOnBoth {
                name: name.into(),
                target: target.into(),
                there: s,
            })
        }
        _ => {}
    }

    // Refused here, a layout that would lose writes leaves the guest
    // running and untouched; libvirt would find some of it only after the
    // target's QEMU is started, some of it never.
    let xml = local.xml(name).map_err(hv_err("get the XML of", name))?;
    let disks = storage::decide(&xml, p.migration_storage)?;
    for line in storage::describe(&disks) {
        info!("disk {line}");
    }
    let copy_disks = storage::copied(&disks);
    if !copy_disks.is_empty() {
        check_copy_fits(local, name, &xml, &copy_disks, p.migration_speed, abort_at)?;
    }
    phases.mark("disks");
    // What the target lacks is refused as well before the guest is
    // touched: libvirt finds a missing network or emulator only as it
    // starts the target's QEMU, a short memory perhaps never.
    let needs = Needs::of(&xml)?;
    let checks = preflight::checks(peer, &needs, p.start_resources, Some(name));
    for c in &checks {
        match &c.result {
            Ok(found) => info!("{target}: {}: {found} ({:.1?})", c.what, c.took),
            Err(why) => warn!("{target}: {} {why} ({:.1?})", c.what, c.took),
        }
    }
    if let Some((what, why)) = preflight::first_failure(&checks) {
        return Err(Error::TargetNotReady {
            node: target.into(),
            what,
            why,
        });
    }
    phases.mark("preflight");
    let choice = choose_network(net, p, target, deadline);
    info!("migration network: {choice}");
    phases.mark("network");
    let mut req = request(p, target, &choice, copy_disks, needs.memory.unwrap_or(0));
    let progress_timeout = deadline.progress_timeout(p.migration_progress_timeout);
    let mut ladder = Ladder::new(
        p.migration_downtime,
        p.migration_downtime_max,
        p.migration_postcopy,
    )
    .restart_throttled(p.migration_auto_converge == AutoConverge::Stalled)
    .progress_timeout(progress_timeout);
    // The downtime limit is a QEMU migration parameter that holds for the
    // next migration: set before the copy starts, not seconds into it as
    // VirtualDomain does.
    local
        .set_max_downtime(name, ladder.qemu_limit_ms())
        .map_err(hv_err("set the maximum downtime of", name))?;
    info!("migrating {name} to {target}: {}", request_line(&req, p));
    // What `vmshift watch` shows beside libvirt's progress, until this
    // function returns.
    let tracker = Tracker::begin(
        records,
        name,
        MoveState {
            target: target.to_owned(),
            network: choice.to_string(),
            deadline_ms: MoveState::deadline_in(deadline.remaining()),
            downtime_ms: req.max_downtime_ms,
            step: "pre-copy".into(),
        },
    );
    phases.mark("downtime");
    let t0 = Instant::now();
    let mut migration = local.migrate(name, &req).map_err(hv_err("migrate", name))?;
    let policy = Policy {
        local,
        name,
        abort_at,
        deadline,
        tracker: &tracker,
    };
    let mut next_report = t0 + PROGRESS_EVERY;
    let mut disks_behind = false;
    // Set when the zero-progress rule ends the copy: the poll after it
    // aborts, as the deadline would.
    let mut stalled = None;
    let result = loop {
        if let Some(r) = migration.wait(POLL) {
            break r;
        }
        let now = Instant::now();
        if now >= abort_at || stalled.is_some() {
            let end = Ended {
                name,
                target,
                t0,
                disks_behind,
                stalled,
                migration: &migration,
                deadline,
            };
            // libvirt refuses to abort a post-copy, and the guest already
            // runs on the target: the copy can only be seen through.
            if in_postcopy(local, name, Postcopy::Outgoing) {
                match see_postcopy_through(&end) {
                    Some(r) => break r,
                    None => return Ok(postcopy_unfinished(local, name, target, t0)),
                }
            }
            match abort(local, &end) {
                // It completed while being aborted: a migration that worked.
                Some(Ok(())) => break Ok(()),
                ended => return timed_out(local, peer, &end, ended),
            }
        }
        // Sampled every poll: the policy needs to see every iteration.
        let Ok(Some(job)) = local.job(name) else {
            continue;
        };
        if now >= next_report {
            next_report = now + PROGRESS_EVERY;
            info!("migration of {name} to {target}: {job}");
        }
        // Neither more downtime nor throttled vCPUs nor post-copy helps a
        // disk mirror that the guest's writes keep ahead of: the ladder
        // takes no step while the disks are copied.
        disks_behind = job.copying_disks();
        let decision = ladder
            .observe(&job)
            .or_else(|| ladder.no_progress(&job, now));
        let Some(Decision { step, why }) = decision else {
            continue;
        };
        let why = format!("{why} ({job})");
        match policy.take(step, &why, &mut req, &mut migration, &job, &mut ladder)? {
            Next::Copy => {}
            Next::Ended(r) => break r,
            Next::Abort => stalled = progress_timeout,
        }
    };
    let result = match result {
        Err(e) => match resume_broken_postcopy(local, name, target, &req, e, deadline) {
            Some(r) => r,
            None => return Ok(postcopy_unfinished(local, name, target, t0)),
        },
        ok => ok,
    };
    let took = t0.elapsed();
    phases.mark("migrate");
    match result {
        Ok(()) => {
            let done = local.completed_job(name).ok().flatten();
            phases.mark("statistics");
            info!("phases: {phases}");
            Ok(Outcome::new(
                OcfRc::Success,
                format!(
                    "{name} migrated to {target} {}",
                    result_line(&choice, took, done.as_ref(), ladder.downtime_ms())
                ),
            ))
        }
        Err(e) => failed(local, peer, name, target, &disks, e),
    }
}

/// Where a move's time went, step by step, for the log's `phases:` line
/// (`make bench` reads it): `setup` is the process up to here (parameters,
/// budget, backends built), `local` this node's libvirtd asked (libvirt.so
/// loaded and connected on the first call), `peer` the target's connected
/// and asked, `disks` and `preflight` the checks, `network` the `.mn`
/// lookup and probe, `downtime` QEMU's limit set, `migrate` libvirt's
/// migration from the call to its end, `statistics` the completed job read.
struct Phases {
    last: Instant,
    took: Vec<(&'static str, Duration)>,
}

impl Phases {
    fn since(budget: &Budget) -> Phases {
        Phases {
            last: Instant::now(),
            took: vec![("setup", budget.elapsed())],
        }
    }

    /// Ends the step `phase`, begun where the last one ended.
    fn mark(&mut self, phase: &'static str) {
        let now = Instant::now();
        self.took.push((phase, now - self.last));
        self.last = now;
    }
}

/// `setup 0.4 ms, local 3.1 ms, ..., migrate 912.0 ms, statistics 0.8 ms`
impl std::fmt::Display for Phases {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        for (i, (phase, took)) in self.took.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{phase} {:.1} ms", took.as_secs_f64() * 1000.0)?;
        }
        Ok(())
    }
}

/// A storage copy must end before the abort point: aborted there, the
/// disks' copy is lost and the move is only later and louder. With a
/// bandwidth cap the copy's time is known before it starts (disks and RAM
/// over the capped link), and a move that cannot fit is refused at once
/// with the numbers.
fn check_copy_fits(
    local: &dyn Hypervisor,
    name: &str,
    xml: &str,
    copy_disks: &[String],
    mib_s: u64,
    abort_at: Instant,
) -> Result<(), Error> {
    let mut disk_bytes = 0;
    for d in copy_disks {
        disk_bytes += local
            .disk_allocation(name, d)
            .map_err(hv_err("get the disk size of", name))?;
    }
    let CopyEstimate { bytes, time } = CopyEstimate::new(xml, disk_bytes, mib_s);
    let left = abort_at.saturating_duration_since(Instant::now());
    match time {
        Some(need) if need > left => Err(Error::CopyTooLong {
            mib: bytes >> 20,
            mib_s,
            need,
            left,
        }),
        Some(need) => {
            info!("storage copy: {:.1} MiB of disks and the RAM, {:.1} MiB in all at {mib_s} MiB/s, about {need:.1?} of the {left:.1?} left", mib(disk_bytes), mib(bytes));
            Ok(())
        }
        None => {
            info!("storage copy: {:.1} MiB of disks and the RAM, {:.1} MiB in all, no migration_speed to estimate its time from; {left:.1?} left", mib(disk_bytes), mib(bytes));
            Ok(())
        }
    }
}

/// `control qemu+tls://node-b/system, data tcp://10.251.11.2 (TLS as
/// node-b.mn), 2 connections, bandwidth unlimited, downtime 300 ms (QEMU's
/// limit 150 ms; up to 1200 ms), post-copy allowed`
fn request_line(req: &MigrationRequest, p: &Params) -> String {
    let mut line = format!("control {}, data {}", req.dconn_uri, req.data_uri);
    if let Some(host) = &req.tls_host {
        line.push_str(&format!(" (TLS as {host})"));
    }
    if req.parallel > 1 {
        line.push_str(&format!(", {} connections", req.parallel));
    }
    line.push_str(&format!(
        ", bandwidth {}, downtime {} ms (QEMU's limit {} ms; up to {} ms)",
        bandwidth(req.bandwidth),
        req.max_downtime_ms,
        qemu_limit_ms(req.max_downtime_ms),
        p.migration_downtime_max
    ));
    if req.auto_converge {
        line.push_str(", auto-converge");
    }
    if let Some(cache) = req.xbzrle_cache {
        line.push_str(&format!(", XBZRLE ({:.0} MiB cache)", mib(cache)));
    }
    if req.postcopy {
        line.push_str(", post-copy allowed");
    }
    if !req.copy_disks.is_empty() {
        line.push_str(&format!(", copying disks {}", req.copy_disks.join(" ")));
    }
    line
}

/// Carries out the convergence policy's steps for one migration.
struct Policy<'a> {
    local: &'a dyn Hypervisor,
    name: &'a str,
    abort_at: Instant,
    deadline: &'a Budget,
    tracker: &'a Tracker<'a>,
}

impl Policy<'_> {
    /// Takes `step` (and the one after it, when a restart cannot be made).
    fn take(
        &self,
        step: Step,
        why: &str,
        req: &mut MigrationRequest,
        migration: &mut Migration,
        job: &JobProgress,
        ladder: &mut Ladder,
    ) -> Result<Next, Error> {
        let (local, name) = (self.local, self.name);
        let mut step = Some(step);
        while let Some(s) = step.take() {
            match s {
                Step::Downtime { from_ms, to_ms } => {
                    info!("convergence: {why}: allowing {to_ms} ms of downtime instead of {from_ms} ms (QEMU's limit {} ms)", ladder.qemu_limit_ms());
                    self.tracker.step("more downtime", to_ms);
                    if let Err(e) = local.set_max_downtime(name, ladder.qemu_limit_ms()) {
                        warn!("could not raise the downtime: {}", chain(&e));
                    }
                }
                Step::AutoConverge => {
                    info!("convergence: {why}: more downtime alone does not suffice; restarting the copy with auto-converge and {} ms of downtime", ladder.downtime_ms());
                    req.auto_converge = true;
                    self.tracker.step("auto-converge", ladder.downtime_ms());
                    let restart = restart(
                        local,
                        name,
                        req,
                        migration,
                        job,
                        ladder.qemu_limit_ms(),
                        self.abort_at,
                    );
                    match restart.map_err(hv_err("migrate", name))? {
                        Restart::Started(m) => {
                            *migration = m;
                            ladder.restarted();
                        }
                        Restart::Ended(r) => return Ok(Next::Ended(r)),
                        Restart::NotNow(reason) => {
                            req.auto_converge = false;
                            info!("convergence: no restart with auto-converge: {reason}");
                            step = Some(ladder.last_resort());
                        }
                    }
                }
                Step::PostCopy => {
                    warn!("convergence: {why}: switching to post-copy (migration_postcopy=true); until the copy ends, a failure of either node or of the link loses the guest");
                    self.tracker.step("post-copy", ladder.downtime_ms());
                    if let Err(e) = local.start_postcopy(name) {
                        warn!("could not switch to post-copy: {}", chain(&e));
                    }
                }
                Step::GiveUp => {
                    info!("convergence: {why}: nothing left to try (migration_postcopy=false); the copy goes on and is aborted {:.0?} before the deadline if it does not end", self.deadline.abort_reserve());
                    self.tracker.step(
                        "nothing left to try: aborted before the deadline",
                        ladder.downtime_ms(),
                    );
                }
                Step::Abort => {
                    warn!("convergence: {why}: aborting the copy now, not at the deadline");
                    self.tracker
                        .step("no progress: aborted", ladder.downtime_ms());
                    return Ok(Next::Abort);
                }
            }
        }
        Ok(Next::Copy)
    }
}

/// What the copy does after a policy step.
enum Next {
    /// It goes on.
    Copy,
    /// It ended meanwhile (found done by a restart's abort): its result.
    Ended(Result<(), hypervisor::Error>),
    /// The zero-progress rule ends it: abort it now.
    Abort,
}

/// What [`restart`] did.
enum Restart {
    /// A new copy runs, with auto-converge.
    Started(Migration),
    /// The copy ended while it was being aborted: its result.
    Ended(Result<(), hypervisor::Error>),
    /// The copy goes on as it is, for this reason.
    NotNow(String),
}

/// Aborts the running copy and starts it again as `req` asks (with
/// auto-converge): libvirt sets QEMU's migration capabilities only when a
/// migration starts. Only done when a full copy still fits before
/// `abort_at` at the bandwidth measured so far, twice over (the first pass,
/// then the iterations while the throttle rises): otherwise the restart
/// would only trade a converging chance for a certain abort. The new
/// copy gets QEMU's downtime limit `limit_ms` again.
fn restart(
    local: &dyn Hypervisor,
    name: &str,
    req: &MigrationRequest,
    migration: &Migration,
    job: &JobProgress,
    limit_ms: u64,
    abort_at: Instant,
) -> Result<Restart, hypervisor::Error> {
    let needed = match (job.data_total, job.mem_bps) {
        (Some(total), Some(bps)) if bps > 0 => {
            Duration::from_secs_f64(2.0 * total as f64 / bps as f64)
        }
        _ => return Ok(Restart::NotNow("libvirt reports no bandwidth".into())),
    };
    let left = abort_at.saturating_duration_since(Instant::now());
    if needed > left {
        return Ok(Restart::NotNow(format!(
            "a new copy needs about {needed:.0?}, {left:.0?} are left before the abort"
        )));
    }
    if let Err(e) = local.abort_job(name) {
        return Ok(Restart::NotNow(format!("abort failed: {}", chain(&e))));
    }
    let Some(ended) = migration.wait_until(abort_at) else {
        return Ok(Restart::NotNow("the aborted copy did not end".into()));
    };
    match (ended, local.state(name)) {
        // The guest stays here and runs: an aborted pre-copy resumes it.
        (Err(_), Ok(DomainState::Running)) => {}
        // It finished after all, or the guest is not running here: the
        // result decides as for any migration.
        (ended, _) => return Ok(Restart::Ended(ended)),
    }
    // libvirt restores the migration parameters it found when the aborted
    // job began: the raised downtime must be set again.
    local.set_max_downtime(name, limit_ms)?;
    local.migrate(name, req).map(Restart::Started)
}

/// A migration job may still run from an earlier migrate_to that Pacemaker
/// killed: the source libvirtd drives a peer-to-peer migration on its own.
/// A retried migrate_to follows that job to its end instead of failing
/// next to it ("domain has an active job"), then decides from where the
/// guest runs. A job that does not end in time is aborted like our own.
fn follow_earlier_migration(
    local: &dyn Hypervisor,
    name: &str,
    target: &str,
    abort_at: Instant,
    deadline: &Budget,
) -> Result<(), Error> {
    let t0 = Instant::now();
    let mut logged = false;
    while let Ok(Some(job)) = local.job(name) {
        if !job.migration_out {
            return Ok(());
        }
        if !logged {
            info!(
                "domain {name} is already migrating ({job}): following that migration (an earlier migrate_to was killed?)"
            );
            logged = true;
        }
        if Instant::now() >= abort_at {
            // Past the switch to post-copy the guest runs on the target and
            // libvirt cannot abort: migrate_to goes on from where it runs.
            if in_postcopy(local, name, Postcopy::Outgoing) {
                warn!("the earlier migration of {name} is in post-copy after {:.1?}: the guest runs on {target}", t0.elapsed());
                return Ok(());
            }
            warn!(
                "the earlier migration of {name} did not end in {:.1?}; aborting it",
                t0.elapsed()
            );
            if let Err(e) = local.abort_job(name) {
                warn!("abort failed: {}", chain(&e));
            }
            let here = wait_running(local, name, deadline.at()).ok();
            warn!(
                "the earlier migration of {name} to {target} was aborted after {:.1?} (job ended: {})",
                t0.elapsed(),
                !matches!(local.job(name), Ok(Some(_)))
            );
            return Err(Error::MigrationTimedOut {
                name: name.into(),
                target: target.into(),
                here: state_text(here),
            });
        }
        std::thread::sleep(POLL);
    }
    if logged {
        info!(
            "the earlier migration of {name} ended after {:.1?}",
            t0.elapsed()
        );
    }
    Ok(())
}

/// The migration ended with an error: say where the guest runs now.
fn failed(
    local: &dyn Hypervisor,
    peer: &dyn Hypervisor,
    name: &str,
    target: &str,
    disks: &[storage::Decision],
    e: hypervisor::Error,
) -> Result<Outcome, Error> {
    let (here, postcopy) = local
        .status(name)
        .map_or((None, None), |s| (Some(s.state), s.postcopy));
    if let (Some(state), Some(Postcopy::Failed)) = (here, postcopy) {
        warn!(
            "live migration of {name} to {target} failed in post-copy: {}",
            chain(&e)
        );
        return Err(Error::PostcopyFailed {
            name: name.into(),
            state,
        });
    }
    if !here.is_some_and(DomainState::is_active) {
        // libvirt can report an error after the guest has moved (e.g. in
        // the confirm phase); what counts is where it runs now.
        if let Ok(s) = peer.state(name) {
            if s.is_active() {
                warn!(
                    "libvirt reported {}, but {name} runs on {target}",
                    chain(&e)
                );
                return Ok(Outcome::new(
                    OcfRc::Success,
                    format!(
                        "domain {name} runs on {target} ({s}) despite: {}",
                        chain(&e)
                    ),
                ));
            }
        }
    }
    // A disk the target cannot open (a shared path missing there, a
    // storage export it cannot reach) fails the move in libvirt's prepare
    // phase, before any RAM is copied: the disk leads the reason, where
    // libvirt's words would push its path past Pacemaker's 128 bytes.
    let text = chain(&e);
    if let Some(d) = disks.iter().find(|d| d.named_in(&text)) {
        warn!(
            "live migration of {name} to {target} failed, {} here: {text}",
            state_text(here)
        );
        return Err(Error::DiskUnusable {
            disk: d.target.clone(),
            path: d.source.to_string(),
            node: target.into(),
            source: e,
        });
    }
    Err(Error::MigrationFailed {
        name: name.into(),
        target: target.into(),
        here: state_text(here),
        source: e,
    })
}

/// The deadline is near, or the copy made no progress: abort the job and
/// wait for libvirt to give up. Returns the migration's result, if it ended
/// before the deadline.
fn abort(local: &dyn Hypervisor, end: &Ended) -> Option<Result<(), hypervisor::Error>> {
    let &Ended {
        name,
        target,
        t0,
        migration,
        deadline,
        ..
    } = end;
    let progress = local.job(name).ok().flatten();
    let why = match end.stalled {
        Some(quiet) => format!("no progress for {} s", quiet.as_secs()),
        None => "before the deadline".into(),
    };
    warn!(
        "migration of {name} to {target} not done after {:.1?} ({}); aborting it: {why}",
        t0.elapsed(),
        progress
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default()
    );
    if let Err(e) = local.abort_job(name) {
        warn!("abort failed: {}", chain(&e));
    }
    migration.wait_until(deadline.at())
}

/// The abort point came during post-copy: waits for the last pages until
/// just before the deadline (the copy's progress is read once more after).
/// Returns the migration's result, if it ended by then.
fn see_postcopy_through(end: &Ended) -> Option<Result<(), hypervisor::Error>> {
    let target = end.target;
    warn!(
        "migration of {} to {target} is in post-copy after {:.1?}: the guest runs on {target} and the copy cannot be aborted; waiting for the pages still here",
        end.name,
        end.t0.elapsed()
    );
    end.migration.wait_until(end.deadline.earlier_by(POLL * 4))
}

/// The deadline came during post-copy. The guest runs on the target, so
/// that is what Pacemaker is told: a failure here would make it stop the
/// server on both nodes, killing the guest mid-copy. migrate_from and stop
/// on this node wait for the rest of the copy.
fn postcopy_unfinished(local: &dyn Hypervisor, name: &str, target: &str, t0: Instant) -> Outcome {
    let left = local
        .job(name)
        .ok()
        .flatten()
        .map(|j| format!(" ({j})"))
        .unwrap_or_default();
    warn!("post-copy of {name} to {target} not done when migrate_to must return{left}");
    Outcome::new(
        OcfRc::Success,
        format!(
            "domain {name} runs on {target} after {:.1?}; post-copy still copies its memory from here{left}",
            t0.elapsed()
        ),
    )
}

/// A migration that ended with `broke` in post-copy's "failed" state (the
/// connection between the QEMUs broke; libvirt paused the guest on both
/// nodes, its memory split between them) is resumed over a new connection
/// (VIR_MIGRATE_POSTCOPY_RESUME), every RESUME_EVERY until just before the
/// deadline: a link that comes back in time saves the guest, where giving
/// up means Pacemaker stops it on both nodes and boots it again. Returns
/// the migration's result (`broke` for any other failure), or None if a
/// resumed copy still runs at the deadline.
fn resume_broken_postcopy(
    local: &dyn Hypervisor,
    name: &str,
    target: &str,
    req: &MigrationRequest,
    broke: hypervisor::Error,
    deadline: &Budget,
) -> Option<Result<(), hypervisor::Error>> {
    let until = deadline.earlier_by(POLL * 4);
    let resume = MigrationRequest {
        postcopy_resume: true,
        ..req.clone()
    };
    let t0 = Instant::now();
    let mut last = broke;
    for attempt in 1.. {
        if Instant::now() + RESUME_ROOM >= until || !in_postcopy(local, name, Postcopy::Failed) {
            break;
        }
        if attempt == 1 {
            warn!(
                "post-copy of {name} to {target} broke ({}): the guest waits on both nodes, its memory split between them; resuming the copy over a new connection, for up to {:.1?}",
                chain(&last),
                until.saturating_duration_since(Instant::now())
            );
        } else {
            warn!(
                "resuming the post-copy of {name} failed ({}); attempt {attempt}",
                chain(&last)
            );
        }
        match local.migrate(name, &resume).map(|m| m.wait_until(until)) {
            Ok(Some(Ok(()))) => {
                info!(
                    "post-copy of {name} resumed after {:.1?} and done",
                    t0.elapsed()
                );
                return Some(Ok(()));
            }
            Ok(Some(Err(e))) | Err(e) => last = e,
            // The resumed copy still runs: the guest's pages flow again.
            Ok(None) if in_postcopy(local, name, Postcopy::Outgoing) => return None,
            Ok(None) => {
                warn!("resuming the post-copy of {name}: attempt {attempt} still runs in libvirt at the deadline");
                break;
            }
        }
        std::thread::sleep(RESUME_EVERY.min(until.saturating_duration_since(Instant::now())));
    }
    Some(Err(last))
}

/// The aborted migration did not complete: report where the guest is. An
/// aborted pre-copy leaves it running here. A copy already in post-copy
/// cannot be aborted (the guest runs on the target): the truth is then
/// that it moved, whatever libvirt said.
fn timed_out(
    local: &dyn Hypervisor,
    peer: &dyn Hypervisor,
    end: &Ended,
    ended: Option<Result<(), hypervisor::Error>>,
) -> Result<Outcome, Error> {
    let &Ended {
        name,
        target,
        t0,
        disks_behind,
        deadline,
        ..
    } = end;
    let here = wait_running(local, name, deadline.at()).ok();
    // No state before the deadline: the QEMU process still tells.
    let here_text = match (here, local.qemu(name)) {
        (None, Qemu::Alive(pid)) => format!("QEMU pid {pid} alive"),
        (here, _) => state_text(here),
    };
    if here != Some(DomainState::Running) {
        if let Ok(s) = peer.state(name) {
            if s == DomainState::Running {
                return Ok(Outcome::new(
                    OcfRc::Success,
                    format!(
                        "domain {name} runs on {target} ({s}) although its migration was aborted after {:.1?} (here: {here_text})",
                        t0.elapsed(),
                    ),
                ));
            }
        }
    }
    warn!(
        "migration of {name} to {target} aborted after {:.1?} (the copy ended: {}); here: {here_text}",
        t0.elapsed(),
        ended.is_some()
    );
    if let Some(quiet) = end.stalled {
        return Err(Error::MigrationStalled {
            name: name.into(),
            target: target.into(),
            quiet,
            here: here_text,
        });
    }
    if disks_behind {
        warn!("the disk copy of {name} stayed behind the guest's writes for {:.1?}, and the RAM copy waits for it: a higher migration_speed, a longer migrate_to timeout or a quieter guest lets it catch up", t0.elapsed());
        return Err(Error::DiskCopyBehind {
            name: name.into(),
            target: target.into(),
            here: here_text,
        });
    }
    Err(Error::MigrationTimedOut {
        name: name.into(),
        target: target.into(),
        here: here_text,
    })
}

/// The migration a deadline cut off, as `abort`, `see_postcopy_through`
/// and `timed_out` report it.
struct Ended<'a> {
    name: &'a str,
    target: &'a str,
    t0: Instant,
    /// The last sample still had the disks copied and the RAM waiting.
    disks_behind: bool,
    /// Cut off by the zero-progress rule after this long without progress,
    /// not by the deadline.
    stalled: Option<Duration>,
    migration: &'a Migration,
    deadline: &'a Budget,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::fake::{timeout, Fake};
    use crate::hypervisor::{Presence, Resource};
    use crate::migration::network::Error as NetError;
    use crate::testing::{assert_contains, assert_starts};

    /// No migration network: every move falls back to the base name.
    struct NoMn;

    impl Net for NoMn {
        fn resolve(&self, _: &str, _: Duration) -> Result<Vec<std::net::IpAddr>, NetError> {
            Err(NetError::NoAddress)
        }
        fn route(&self, _: std::net::IpAddr) -> Result<String, NetError> {
            Ok("mn0".into())
        }
        fn connect(&self, _: std::net::SocketAddr, _: Duration) -> Result<(), NetError> {
            Ok(())
        }
    }

    /// The guest running here, not on node-b.
    fn source() -> (Fake, Fake) {
        (
            Fake::new(&[DomainState::Running]),
            Fake::new(&[DomainState::Shutoff]),
        )
    }

    fn move_with(
        local: &Fake,
        peer: &Fake,
        extra: &[(&str, &str)],
        secs: u64,
    ) -> Result<Outcome, Error> {
        let deadline = Budget::new(Duration::from_secs(secs));
        let records = Records::none();
        let to = Target {
            node: "node-b",
            hv: peer,
        };
        migrate_to(local, &to, &NoMn, &Params::vm1(extra), &deadline, &records)
    }

    /// A pre-copy sample: pass `iteration`, `left_mib` still to copy of
    /// 128 MiB, at 100 MiB/s.
    fn pass(iteration: u64, left_mib: u64) -> Option<JobProgress> {
        Some(JobProgress {
            iteration: Some(iteration),
            data_remaining: Some(left_mib << 20),
            data_total: Some(128 << 20),
            mem_bps: Some(100 << 20),
            migration_out: true,
            ..JobProgress::default()
        })
    }

    /// The guest here, its copy making no progress: `passes` pre-copy
    /// passes each leaving `left_mib`, the samples kept across a restart.
    fn stalled(passes: u64, left_mib: u64) -> (Fake, Fake) {
        let (mut local, peer) = source();
        local.abort_keeps_jobs = true;
        // No earlier job before the move; then one pass per poll.
        *local.jobs.borrow_mut() = [None]
            .into_iter()
            .chain((1..=passes).map(|i| pass(i, left_mib)))
            .collect();
        (local, peer)
    }

    #[test]
    fn phases_are_said_in_order_each_with_its_time() {
        let mut phases = Phases::since(&Budget::new(Duration::from_secs(60)));
        phases.mark("local");
        std::thread::sleep(Duration::from_millis(20));
        phases.mark("migrate");
        let line = phases.to_string();
        let parts: Vec<_> = line.split(", ").collect();
        assert_eq!(parts.len(), 3, "{line}");
        assert!(parts[0].starts_with("setup ") && parts[1].starts_with("local "));
        let ms: f64 = parts[2]
            .strip_prefix("migrate ")
            .and_then(|t| t.strip_suffix(" ms"))
            .and_then(|t| t.parse().ok())
            .unwrap();
        assert!(ms >= 20.0, "{line}");
    }

    #[test]
    fn a_move_that_completes_is_0_and_says_how() {
        let (local, peer) = source();
        *local.migrations.borrow_mut() = vec![Some(Ok(()))];
        let out = move_with(&local, &peer, &[], 20).unwrap();
        assert_eq!(out.rc, OcfRc::Success);
        assert_contains(&out.reason, "vm1 migrated to node-b over fallback node-b");
        assert_eq!(local.calls(), ["downtime 150", "migrate"]);
    }

    /// The guest with one disk, a file on no shared filesystem: copied.
    fn with_local_disk(local: &Fake) {
        *local.xml.borrow_mut() = "<domain><name>vm1</name><memory unit='MiB'>128</memory>\
            <devices><disk type='file' device='disk'><source file='/nonexistent/vm1.img'/>\
            <target dev='vda'/></disk></devices></domain>"
            .into();
    }

    #[test]
    fn a_local_disk_is_copied_when_its_copy_fits_and_refused_when_not() {
        let (local, peer) = source();
        with_local_disk(&local);
        *local.migrations.borrow_mut() = vec![Some(Ok(()))];
        let speed = [("OCF_RESKEY_migration_speed", "100")];
        assert_eq!(
            move_with(&local, &peer, &speed, 20).unwrap().rc,
            OcfRc::Success
        );
        assert_eq!(local.calls(), ["downtime 150", "migrate copying vda"]);
        // 2 GiB of disk and 128 MiB of RAM at 100 MiB/s: 22 s, and a 20 s
        // timeout has 15 s before its abort point.
        let (mut local, peer) = source();
        with_local_disk(&local);
        local.disk_bytes = 2 << 30;
        let e = move_with(&local, &peer, &speed, 20).unwrap_err();
        assert_starts(
            e.to_string(),
            "copying 2176 MiB at 100 MiB/s takes 22s, migrate_to has 15s",
        );
        assert!(local.calls().is_empty(), "{:?}", local.calls());
        // shared refuses the local file before anything is asked of libvirt.
        let (local, peer) = source();
        with_local_disk(&local);
        let shared = [("OCF_RESKEY_migration_storage", "shared")];
        let e = move_with(&local, &peer, &shared, 20).unwrap_err();
        assert!(
            matches!(e, Error::Storage(_)) && e.rc() == OcfRc::ErrGeneric,
            "{e}"
        );
        assert!(local.calls().is_empty(), "{:?}", local.calls());
    }

    #[test]
    fn a_target_without_the_servers_network_is_refused_before_the_move() {
        let (local, peer) = source();
        *local.xml.borrow_mut() = "<domain><name>vm1</name><devices>\
            <interface type='network'><source network='lan'/></interface></devices></domain>"
            .into();
        let e = move_with(&local, &peer, &[], 20).unwrap_err();
        assert_eq!(
            e.to_string(),
            "node-b: network lan is not defined; not moved"
        );
        assert_eq!(e.rc(), OcfRc::ErrGeneric);
        assert!(local.calls().is_empty(), "{:?}", local.calls());
        // Defined but inactive: refused, or started with start_resources.
        *peer.resources.borrow_mut() = vec![(Resource::Network, "lan".into(), Presence::Inactive)];
        let e = move_with(&local, &peer, &[], 20).unwrap_err();
        assert_eq!(
            e.to_string(),
            "node-b: network lan is inactive; see start_resources; not moved"
        );
        *local.migrations.borrow_mut() = vec![Some(Ok(()))];
        let start = [("OCF_RESKEY_start_resources", "true")];
        assert_eq!(
            move_with(&local, &peer, &start, 20).unwrap().rc,
            OcfRc::Success
        );
        assert_eq!(peer.calls(), ["activate network lan"]);
        assert_eq!(local.calls(), ["downtime 150", "migrate"]);
        // Another domain of the same name there: libvirt would refuse it.
        *peer.definition.borrow_mut() =
            Some("<domain><name>vm1</name><uuid>other</uuid></domain>".into());
        let e = move_with(&local, &peer, &[], 20).unwrap_err();
        assert_starts(
            e.to_string(),
            "node-b: the definition of vm1 has another UUID",
        );
    }

    #[test]
    fn a_move_that_fails_with_the_guest_here_is_1() {
        let (local, peer) = source();
        *local.migrations.borrow_mut() = vec![Some(Err(()))];
        let e = move_with(&local, &peer, &[], 20).unwrap_err();
        assert!(matches!(e, Error::MigrationFailed { .. }), "{e}");
        assert_eq!(e.rc(), OcfRc::ErrGeneric);
    }

    #[test]
    fn a_move_libvirt_fails_after_the_guest_moved_is_0() {
        // Seen running here before the move, shut off after it; running on
        // node-b by then.
        let local = Fake::new(&[DomainState::Running, DomainState::Shutoff]);
        let peer = Fake::new(&[DomainState::Shutoff, DomainState::Running]);
        *local.migrations.borrow_mut() = vec![Some(Err(()))];
        let out = move_with(&local, &peer, &[], 20).unwrap();
        assert_eq!(out.rc, OcfRc::Success);
        assert!(out.reason.contains("runs on node-b"), "{}", out.reason);
    }

    #[test]
    fn a_move_at_its_abort_point_is_aborted_and_the_guest_stays() {
        let (local, peer) = source();
        let t = Instant::now();
        // 4 s: the abort point (3 s before the deadline) has come at once.
        let e = move_with(&local, &peer, &[], 4).unwrap_err();
        assert!(matches!(e, Error::MigrationTimedOut { .. }), "{e}");
        assert!(e.to_string().contains("here running"), "{e}");
        assert_eq!(local.calls(), ["downtime 150", "migrate", "abort"]);
        assert!(t.elapsed() < Duration::from_secs(4));
    }

    #[test]
    fn a_move_that_completes_while_aborted_is_0() {
        let (mut local, peer) = source();
        local.abort_completes = true;
        let out = move_with(&local, &peer, &[], 4).unwrap();
        assert_eq!(out.rc, OcfRc::Success);
        assert_eq!(local.calls(), ["downtime 150", "migrate", "abort"]);
    }

    #[test]
    fn a_retried_migrate_to_follows_the_earlier_job_first() {
        let (local, peer) = source();
        *local.jobs.borrow_mut() = vec![pass(3, 40), pass(4, 20), None];
        *local.migrations.borrow_mut() = vec![Some(Ok(()))];
        let out = move_with(&local, &peer, &[], 20).unwrap();
        assert_eq!(out.rc, OcfRc::Success);
        assert_eq!(local.calls(), ["downtime 150", "migrate"]);
    }

    #[test]
    fn a_copy_that_stalls_climbs_the_ladder_then_is_aborted() {
        // 30 MiB left take 300 ms: the freeze raised to what that needs (a
        // QEMU limit a quarter over it, 375 ms), then the max, QEMU getting
        // half of each; then, by default (auto-converge from the start),
        // nothing left (no post-copy allowed): aborted in time. With
        // `stalled`, the copy restarts with auto-converge first.
        let climb = ["downtime 150", "migrate", "downtime 375", "downtime 600"];
        let restart = ["abort", "downtime 600", "migrate"];
        for (mode, restarted) in [("always", false), ("stalled", true)] {
            let (local, peer) = stalled(40, 30);
            let extra = [("OCF_RESKEY_migration_auto_converge", mode)];
            let e = move_with(&local, &peer, &extra, 12).unwrap_err();
            assert!(matches!(e, Error::MigrationTimedOut { .. }), "{e}");
            let mut want: Vec<&str> = climb.to_vec();
            if restarted {
                want.extend(restart);
            }
            want.push("abort");
            assert_eq!(local.calls(), want, "{mode}");
        }
    }

    #[test]
    fn a_copy_that_moves_nothing_is_aborted_after_the_progress_timeout() {
        // One pass that never drains: a link that carries nothing. The
        // deadline is 20 s away; 2 s without progress end the copy.
        let (local, peer) = stalled(1, 30);
        let t0 = Instant::now();
        let extra = [("OCF_RESKEY_migration_progress_timeout", "2")];
        let e = move_with(&local, &peer, &extra, 20).unwrap_err();
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        assert_eq!(
            e.to_string(),
            "migration of vm1 to node-b stuck for 2 s; aborted, here running"
        );
        assert_eq!(e.rc(), OcfRc::ErrGeneric);
        assert_eq!(local.calls(), ["downtime 150", "migrate", "abort"]);
    }

    #[test]
    fn a_disk_copy_that_stays_behind_takes_no_ram_step_and_says_so() {
        let (local, peer) = source();
        // The mirror copies on, the guest's writes keep it from being in
        // step, the RAM copy never begins: samples a stalled RAM copy
        // would climb the ladder on.
        *local.jobs.borrow_mut() = [None]
            .into_iter()
            .chain((1..=60).map(|i| {
                Some(JobProgress {
                    disk_processed: Some(i << 20),
                    mem_processed: Some(0),
                    ..pass(i, 30).unwrap()
                })
            }))
            .collect();
        let e = move_with(&local, &peer, &[], 12).unwrap_err();
        assert!(matches!(e, Error::DiskCopyBehind { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            "disk copy to node-b lagged vm1's writes; aborted, here running"
        );
        assert_eq!(local.calls(), ["downtime 150", "migrate", "abort"]);
    }

    #[test]
    fn a_deadline_in_post_copy_reports_the_guest_on_the_target() {
        let (local, peer) = stalled(60, 100);
        let out = move_with(
            &local,
            &peer,
            &[("OCF_RESKEY_migration_postcopy", "true")],
            14,
        )
        .unwrap();
        assert_eq!(out.rc, OcfRc::Success);
        assert_contains(&out.reason, "post-copy still copies");
        let calls = local.calls();
        assert_eq!(
            calls.last().map(String::as_str),
            Some("postcopy"),
            "{calls:?}"
        );
        assert!(
            !calls[calls.len() - 3..].contains(&"abort".to_owned()),
            "{calls:?}"
        );
    }

    #[test]
    fn lines() {
        let p = JobProgress {
            data_remaining: Some(45 << 20),
            data_total: Some(128 << 20),
            mem_bps: Some(310 << 20),
            iteration: Some(2),
            ..JobProgress::default()
        };
        assert_eq!(
            p.to_string(),
            "45.0 MiB of 128.0 MiB left, 310 MiB/s, iteration 2"
        );
    }

    /// A post-copy that broke with `Timeout { what: "the copy" }`, resumed
    /// on `f` within a `secs` timeout.
    fn resume(f: &Fake, secs: u64) -> Option<Result<(), hypervisor::Error>> {
        let req = MigrationRequest {
            dconn_uri: "qemu+tcp://node-b/system".into(),
            data_uri: "tcp://10.251.11.2".into(),
            bandwidth: 1,
            max_downtime_ms: 300,
            parallel: 1,
            tls_host: None,
            auto_converge: false,
            xbzrle_cache: None,
            postcopy: true,
            postcopy_resume: false,
            copy_disks: Vec::new(),
            disks_port: None,
        };
        let broke = timeout("the copy");
        let deadline = Budget::new(Duration::from_secs(secs));
        resume_broken_postcopy(f, "vm1", "node-b", &req, broke, &deadline)
    }

    fn broken_postcopy(then: &[Option<Postcopy>]) -> Fake {
        let f = Fake::new(&[DomainState::Paused]);
        *f.postcopy.borrow_mut() = [&[Some(Postcopy::Failed)], then].concat();
        f
    }

    #[test]
    fn a_broken_post_copy_is_resumed_until_the_link_is_back() {
        let f = broken_postcopy(&[]);
        *f.migrations.borrow_mut() = vec![Some(Err(())), Some(Ok(()))];
        assert!(matches!(resume(&f, 10), Some(Ok(()))));
        assert_eq!(f.calls(), ["migrate (resume)"; 2]);
    }

    #[test]
    fn other_failures_are_not_resumed() {
        let f = Fake::new(&[DomainState::Running]);
        let r = resume(&f, 10);
        assert!(
            matches!(&r, Some(Err(e)) if e.to_string().contains("the copy")),
            "{r:?}"
        );
        assert!(f.calls().is_empty());
    }

    #[test]
    fn a_resumed_copy_still_running_at_the_deadline_has_moved_the_guest() {
        let f = broken_postcopy(&[Some(Postcopy::Outgoing)]);
        *f.migrations.borrow_mut() = vec![None];
        assert!(resume(&f, 6).is_none());
    }

    #[test]
    fn resuming_ends_before_the_deadline_with_the_last_error() {
        let t0 = Instant::now();
        let f = broken_postcopy(&[]);
        *f.migrations.borrow_mut() = vec![Some(Err(())); 4];
        let r = resume(&f, 6);
        assert!(
            matches!(&r, Some(Err(e)) if e.to_string().contains("migrate")),
            "{r:?}"
        );
        // No attempt begins without the room to end before the deadline.
        assert_eq!(f.calls(), ["migrate (resume)"]);
        assert!(t0.elapsed() < Duration::from_secs(5));
        // An attempt still connecting at the deadline has not resumed it.
        let f = broken_postcopy(&[]);
        *f.migrations.borrow_mut() = vec![None];
        assert!(matches!(resume(&f, 6), Some(Err(_))));
    }
}
