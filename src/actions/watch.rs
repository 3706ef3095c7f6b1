//! watch (not an OCF action): follows a running migration of the server
//! on this node, whoever started it (Pacemaker or an admin), until it
//! ends, and changes nothing. On the source it shows libvirt's progress
//! beside what migrate_to's record says (the policy's step, the downtime
//! allowed, the time left before its deadline); on the target, that the
//! copy is arriving and then whether the server runs here.

use std::io::Write;
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::error::{hv_err, Error};
use crate::hypervisor::{mib, DomainState, Hypervisor, JobProgress, Postcopy};
use crate::moves::{self, MoveState};
use crate::ocf::{short, Budget, OcfRc, Outcome};
use crate::records::Records;

/// How long watch waits for a migration to begin: the admin starts it
/// beside a `crm_resource --move` that Pacemaker acts on within seconds.
const BEGIN_WAIT: Duration = Duration::from_secs(10);

/// Where the lines go: on a terminal one line redrawn in place, elsewhere
/// (a log, a pipe) one line per second.
pub struct Screen<'a> {
    pub out: &'a mut dyn Write,
    pub terminal: bool,
}

impl Screen<'_> {
    fn show(&mut self, line: &str) {
        // A closed pipe ends nothing: the move is not ours to stop.
        let _ = if self.terminal {
            write!(self.out, "\r\x1b[2K{line}")
        } else {
            writeln!(self.out, "{line}")
        };
        let _ = self.out.flush();
    }

    fn end(&mut self) {
        if self.terminal {
            let _ = writeln!(self.out);
        }
    }
}

/// Which side of a move this node is.
enum Side {
    Source,
    Target,
}

pub fn watch(
    hv: &dyn Hypervisor,
    records: &Records,
    name: &str,
    deadline: &Budget,
    screen: &mut Screen,
) -> Result<Outcome, Error> {
    let tick = if screen.terminal {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(1)
    };
    let begin_by = Instant::now() + BEGIN_WAIT.min(deadline.remaining());
    let mut side = None;
    let mut last: Option<MoveState> = None;
    loop {
        let status = hv.status(name).map_err(hv_err("get the state of", name))?;
        // libvirt has no job statistics for a domain that is not running
        // (one that left, or has not arrived yet), and keeps a migration's
        // for the source ("available only on the source host").
        let job = match hv.job(name) {
            _ if !status.state.is_active() => None,
            Ok(job) => job,
            Err(_) if status.migrating && !matches!(side, Some(Side::Source)) => None,
            Err(e) => return Err(hv_err("get the job of", name)(e)),
        };
        match (&side, job.as_ref()) {
            (_, Some(j)) if j.migration_out => {
                side = Some(Side::Source);
                last = moves::read(records, name).or(last);
                screen.show(&source_line(j, last.as_ref()));
            }
            (None | Some(Side::Target), _) if status.migrating => {
                side = Some(Side::Target);
                screen.show(&format!(
                    "{name}: incoming migration, the copy arriving here (its progress shows on the source)"
                ));
            }
            (Some(Side::Source), _) => {
                screen.end();
                return source_ended(hv, name, last.as_ref(), status.state, status.postcopy);
            }
            (Some(Side::Target), _) => {
                screen.end();
                return target_ended(name, status.state);
            }
            (None, _) if Instant::now() >= begin_by => return Ok(none_runs(name, status.state)),
            (None, _) => {}
        }
        if deadline.remaining() < tick {
            screen.end();
            if side.is_none() {
                return Ok(none_runs(name, status.state));
            }
            return Ok(Outcome::new(
                OcfRc::ErrGeneric,
                format!(
                    "the migration of {} still runs; stopped watching it",
                    short(name)
                ),
            ));
        }
        sleep(tick);
    }
}

fn none_runs(name: &str, state: DomainState) -> Outcome {
    Outcome::new(
        OcfRc::ErrGeneric,
        format!(
            "no migration of {} runs on this node ({state})",
            short(name)
        ),
    )
}

/// `copied 512.0 MiB, 45.0 MiB of 128.0 MiB left, 310 MiB/s, iteration 2
/// | pre-copy, downtime 300 ms allowed | to node-b, 83 s left`
fn source_line(j: &JobProgress, record: Option<&MoveState>) -> String {
    let mut line = format!("copied {:.1} MiB, {j}", mib(j.data_processed.unwrap_or(0)));
    if let Some(r) = record {
        line.push_str(&format!(
            " | {}, downtime {} ms allowed | to {}, {:.0?} left",
            r.step,
            r.downtime_ms,
            r.target,
            r.left()
        ));
    }
    line
}

/// The job is gone from the source: the guest left (0, with libvirt's
/// completed statistics) or it still runs here (1).
fn source_ended(
    hv: &dyn Hypervisor,
    name: &str,
    record: Option<&MoveState>,
    state: DomainState,
    postcopy: Option<Postcopy>,
) -> Result<Outcome, Error> {
    let to = record.map_or_else(|| "the target".to_owned(), |r| r.target.clone());
    if state.is_active() && postcopy != Some(Postcopy::Outgoing) {
        let step = record.map_or(String::new(), |r| format!(" (last step: {})", r.step));
        return Ok(Outcome::new(
            OcfRc::ErrGeneric,
            format!(
                "the migration of {} to {to} ended and it still runs here ({state}){step}",
                short(name)
            ),
        ));
    }
    let mut line = format!("{name} migrated to {to}");
    if let Some(r) = record {
        line.push_str(&format!(" over {}", r.network));
    }
    if let Ok(Some(done)) = hv.completed_job(name) {
        line.push_str(&done.result());
    }
    Ok(Outcome::new(OcfRc::Success, line))
}

/// The incoming copy ended: the server runs here (0) or did not arrive (1).
fn target_ended(name: &str, state: DomainState) -> Result<Outcome, Error> {
    if state.is_active() {
        Ok(Outcome::new(
            OcfRc::Success,
            format!("{name} arrived and runs here ({state})"),
        ))
    } else {
        Ok(Outcome::new(
            OcfRc::ErrGeneric,
            format!(
                "the incoming migration of {} ended without it ({state})",
                short(name)
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::fake::Fake;
    use crate::moves::Tracker;
    use crate::testing::assert_starts;

    fn pass(left_mib: u64) -> Option<JobProgress> {
        Some(JobProgress {
            data_processed: Some(64 << 20),
            data_remaining: Some(left_mib << 20),
            data_total: Some(128 << 20),
            mem_bps: Some(100 << 20),
            iteration: Some(2),
            migration_out: true,
            ..JobProgress::default()
        })
    }

    /// Runs watch on `hv` with a terminal screen; its outcome and output.
    fn run(hv: &Fake, records: &Records, secs: u64) -> (Outcome, String) {
        let mut out = Vec::new();
        let mut screen = Screen {
            out: &mut out,
            terminal: true,
        };
        let budget = Budget::new(Duration::from_secs(secs));
        let o = watch(hv, records, "vm1", &budget, &mut screen).unwrap();
        (o, String::from_utf8(out).unwrap())
    }

    #[test]
    fn a_move_is_followed_on_the_source_to_its_end() {
        let dir = std::env::temp_dir().join(format!("vmshift-watch-{}", std::process::id()));
        let records = Records::new(&dir);
        let state = MoveState::to_node_b(Duration::from_secs(100));
        let tracker = Tracker::begin(&records, "vm1", state);
        tracker.step("more downtime", 600);
        let hv = Fake::new(&[
            DomainState::Running,
            DomainState::Running,
            DomainState::Shutoff,
        ]);
        *hv.jobs.borrow_mut() = vec![pass(40), pass(10), None];
        let (o, out) = run(&hv, &records, 20);
        assert_eq!(o.rc, OcfRc::Success, "{}", o.reason);
        assert_eq!(
            o.reason,
            "vm1 migrated to node-b over node-b.mn (10.0.0.2) usable"
        );
        assert!(out.contains("copied 64.0 MiB, 10.0 MiB of 128.0 MiB left, 100 MiB/s, iteration 2 | more downtime, downtime 600 ms allowed | to node-b, "), "{out}");
        assert!(out.contains("\r\x1b[2K"), "redrawn in place: {out:?}");
        // It changed nothing.
        assert!(hv.calls().is_empty(), "{:?}", hv.calls());
        drop(tracker);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_move_that_ends_with_the_guest_here_is_1() {
        let hv = Fake::new(&[DomainState::Running]);
        *hv.jobs.borrow_mut() = vec![pass(40), None];
        let (o, _) = run(&hv, &Records::none(), 20);
        assert_eq!(o.rc, OcfRc::ErrGeneric);
        assert_starts(
            &o.reason,
            "the migration of vm1 to the target ended and it still runs here",
        );
    }

    #[test]
    fn on_the_target_it_waits_for_the_arrival() {
        let hv = Fake::new(&[
            DomainState::Paused,
            DomainState::Paused,
            DomainState::Running,
        ]);
        *hv.migrating.borrow_mut() = vec![true, true, false];
        let (o, out) = run(&hv, &Records::none(), 20);
        assert_eq!(
            (o.rc, o.reason.as_str()),
            (OcfRc::Success, "vm1 arrived and runs here (running)")
        );
        assert!(out.contains("incoming migration"), "{out}");
    }

    #[test]
    fn without_a_migration_it_says_so() {
        let hv = Fake::new(&[DomainState::Running]);
        let (o, _) = run(&hv, &Records::none(), 2);
        assert_eq!(o.rc, OcfRc::ErrGeneric);
        assert_eq!(o.reason, "no migration of vm1 runs on this node (running)");
    }
}
