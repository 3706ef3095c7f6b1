//! The convergence policy of a live migration: what migrate_to does when
//! the RAM copy does not catch up with the guest. A pure state machine fed
//! with libvirt's job-progress samples, so every decision is unit-tested
//! without QEMU.
//!
//! Pre-copy ends when what is left to copy fits in QEMU's downtime limit at
//! the measured bandwidth; the ladder speaks of the freeze the guest may
//! see, and QEMU gets half of it ([`qemu_limit_ms`]). A guest that
//! dirties memory about as fast as the link copies it never gets there,
//! and QEMU iterates until someone gives up. The ladder, one rung after each [`STALLS`] pre-copy iterations
//! without progress:
//!
//! 1. double the allowed downtime, up to `migration_downtime_max` (what
//!    Proxmox does in its migration loop);
//! 2. auto-converge, with `migration_auto_converge=stalled` only: QEMU
//!    throttles the vCPUs until the copy catches up. libvirt sets QEMU's
//!    migration capabilities only when a migration starts, so the caller
//!    aborts the running copy (the guest keeps running here) and starts a
//!    new one with it. By default (`always`) the first copy has it already
//!    and this rung is skipped. Iterations where QEMU raises the throttle
//!    do not count as stalls;
//! 3. post-copy, only when `migration_postcopy` allows it;
//! 4. nothing left: the copy goes on and migrate_to aborts it before its
//!    deadline.
//!
//! Beside the ladder, a clock (`migration_progress_timeout`, see
//! [`Ladder::no_progress`]): a copy that has not come closer to its end for
//! that long (a link that carries nothing, or passes that leave as much as
//! before while no rung is left to try) is ended at once, by the last rung
//! (post-copy) or an abort, instead of at the deadline.

use std::time::{Duration, Instant};

use crate::hypervisor::{mib, JobProgress};

/// Iterations without progress before the next rung. One iteration can be
/// unlucky (a burst of guest writes); three in a row is a trend.
pub const STALLS: u32 = 3;

/// An iteration made progress when what it left is below 90 % of the best
/// so far: less than that is noise in the guest's write pattern.
fn progressed(peak: u64, best: u64) -> bool {
    peak < best / 10 * 9
}

/// QEMU's downtime limit for a freeze of at most `freeze_ms`: half of it.
/// QEMU switches over once the RAM left fits in its limit at the bandwidth
/// it measured (`threshold_size` in its migration.c); the freeze the guest
/// sees adds the device state, its load on the target and libvirt's resume
/// there, and the last pages, sent with the guest stopped, can go slower
/// than measured. On the lab's 2 cores they did: a 200 ms limit froze the
/// guest for up to 341 ms (1.7 times), 3 of 41 moves over 300 ms in one
/// bench run, 2 of 20 with a busy loop per core in another; a 300 ms limit
/// froze 6 of 20 loaded moves for 307-438 ms. Half keeps the worst seen
/// (1.7 times) within the freeze.
pub fn qemu_limit_ms(freeze_ms: u64) -> u64 {
    freeze_ms - freeze_ms / 2
}

/// The freeze under which QEMU's limit is at least `limit_ms`.
fn freeze_for(limit_ms: u64) -> u64 {
    limit_ms.saturating_mul(2)
}

/// What the caller should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Set the allowed downtime to this many milliseconds.
    Downtime { from_ms: u64, to_ms: u64 },
    /// Restart the migration with auto-converge and the largest downtime
    /// ([`Ladder::downtime_ms`] says so from here on).
    AutoConverge,
    /// Switch the running migration to post-copy.
    PostCopy,
    /// Nothing left to try: let the deadline decide.
    GiveUp,
    /// No progress for `migration_progress_timeout` and nothing left to
    /// try: abort the copy now.
    Abort,
}

/// A step and the numbers that triggered it, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub step: Step,
    pub why: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rung {
    Downtime,
    Throttled,
    Done,
}

/// The policy's state for one migrate_to.
#[derive(Debug)]
pub struct Ladder {
    downtime_ms: u64,
    max_ms: u64,
    postcopy: bool,
    /// The auto-converge rung: restart the copy with it.
    restart_throttled: bool,
    rung: Rung,
    /// The iteration being watched and the most it had left to copy: the
    /// peak is what the previous pass let the guest dirty.
    iteration: Option<(u64, u64)>,
    /// The smallest peak so far.
    best: Option<u64>,
    /// What the last sample had left.
    left: u64,
    stalls: u32,
    /// auto-converge's throttle at the last iteration boundary.
    throttle_pct: u64,
    /// `migration_progress_timeout`; None: off.
    progress_timeout: Option<Duration>,
    /// The copy came closer to its end since [`Ladder::no_progress`] last
    /// looked, or changed (a rung, a restart): its clock starts again.
    progressed: bool,
    /// When the clock last started.
    since: Option<Instant>,
}

impl Ladder {
    pub fn new(downtime_ms: u64, max_ms: u64, postcopy: bool) -> Ladder {
        Ladder {
            downtime_ms,
            max_ms: max_ms.max(downtime_ms),
            postcopy,
            restart_throttled: true,
            rung: Rung::Downtime,
            iteration: None,
            best: None,
            left: 0,
            stalls: 0,
            throttle_pct: 0,
            progress_timeout: None,
            progressed: false,
            since: None,
        }
    }

    /// The zero-progress rule's time ([`Ladder::no_progress`]); None: off.
    pub fn progress_timeout(mut self, timeout: Option<Duration>) -> Ladder {
        self.progress_timeout = timeout;
        self
    }

    /// Whether the auto-converge rung is taken: not when the copy has
    /// auto-converge from its start, nor when it may not have it at all.
    pub fn restart_throttled(mut self, restart: bool) -> Ladder {
        self.restart_throttled = restart;
        self
    }

    /// The freeze currently allowed.
    pub fn downtime_ms(&self) -> u64 {
        self.downtime_ms
    }

    /// QEMU's downtime limit for the freeze currently allowed.
    pub fn qemu_limit_ms(&self) -> u64 {
        qemu_limit_ms(self.downtime_ms)
    }

    /// Feeds one sample of the running job; returns a step when an
    /// iteration ended and the trend asks for one. Samples without an
    /// iteration count or a remaining size (not a pre-copy migration, or
    /// an older QEMU) are ignored: the policy then never steps in. So is
    /// iteration 0, the setup before the first pass, which has nothing
    /// left to copy yet. Neither is a sample while the disks are copied
    /// first: no RAM step helps a disk mirror, and the RAM copy's clock
    /// starts when it begins.
    pub fn observe(&mut self, p: &JobProgress) -> Option<Decision> {
        if p.copying_disks() {
            self.progressed = true;
            return None;
        }
        let (iteration, left) = (p.iteration.filter(|&i| i > 0)?, p.data_remaining?);
        let (watched, peak) = match self.iteration {
            Some((i, peak)) if i == iteration => {
                // Pages sent in a pass that began below the best are
                // progress: a long pass of a large guest is not a stall.
                let peak = peak.max(left);
                if left < self.left && self.best.is_none_or(|b| progressed(peak, b)) {
                    self.progressed = true;
                }
                self.iteration = Some((i, peak));
                self.left = left;
                return None;
            }
            Some(finished) => finished,
            None => {
                self.iteration = Some((iteration, left));
                self.left = left;
                return None;
            }
        };
        self.iteration = Some((iteration, left));
        self.left = left;
        let best = match self.best {
            Some(best) if !progressed(peak, best) => best,
            _ => {
                self.best = Some(peak);
                self.stalls = 0;
                self.progressed = true;
                return None;
            }
        };
        // Under auto-converge, QEMU raises the throttle at the iterations
        // where the copy falls behind: while it still rises, QEMU is
        // still working on it, and the iteration is not a stall.
        let throttle = p.throttle_pct.unwrap_or(0);
        let throttle_rose = throttle > self.throttle_pct;
        self.throttle_pct = throttle;
        self.progressed |= throttle_rose;
        if self.rung == Rung::Done || throttle_rose {
            return None;
        }
        self.stalls += 1;
        if self.stalls < STALLS {
            return None;
        }
        let mut why = format!(
            "iteration {watched} left {:.1} MiB to copy, not below 90 % of the best {:.1} MiB for {} iterations",
            mib(peak),
            mib(best),
            self.stalls
        );
        // The time copying this much would take at the measured
        // bandwidth: a downtime rung whose QEMU limit cannot reach it is
        // skipped.
        let needed_ms = p
            .mem_bps
            .filter(|&bps| bps > 0)
            .map(|bps| peak.saturating_mul(1000) / bps);
        if let Some(ms) = needed_ms {
            why.push_str(&format!("; copying that takes about {ms} ms"));
        }
        // The next rung is judged on its own progress, and gets its own
        // time to show it.
        self.stalls = 0;
        self.best = None;
        self.progressed = true;
        let step = match self.rung {
            Rung::Downtime
                if self.downtime_ms < self.max_ms
                    && needed_ms.is_none_or(|ms| ms <= qemu_limit_ms(self.max_ms)) =>
            {
                // Doubled, or straight to a QEMU limit of what the copy
                // needs plus a quarter (the bandwidth is an estimate),
                // within the max.
                let from_ms = self.downtime_ms;
                let wanted = needed_ms.map_or(0, |ms| freeze_for(ms.saturating_mul(5) / 4));
                self.downtime_ms = from_ms.saturating_mul(2).max(wanted).min(self.max_ms);
                Step::Downtime {
                    from_ms,
                    to_ms: self.downtime_ms,
                }
            }
            Rung::Downtime if self.restart_throttled => {
                // The throttle has less to win with the largest freeze
                // the admin allows.
                self.rung = Rung::Throttled;
                self.downtime_ms = self.max_ms;
                Step::AutoConverge
            }
            Rung::Downtime | Rung::Throttled | Rung::Done => self.last_resort(),
        };
        Some(Decision { step, why })
    }

    /// The last rung: after auto-converge, or at once when the restart
    /// with auto-converge could not be made (no time left for a new copy),
    /// since the copy has stalled already.
    pub fn last_resort(&mut self) -> Step {
        self.rung = Rung::Done;
        if self.postcopy {
            Step::PostCopy
        } else {
            Step::GiveUp
        }
    }

    /// A new migration started (after [`Step::AutoConverge`]): its
    /// iterations count from 1 again.
    pub fn restarted(&mut self) {
        self.iteration = None;
        self.best = None;
        self.stalls = 0;
        self.throttle_pct = 0;
        self.progressed = true;
    }

    /// The zero-progress rule, asked after each [`Ladder::observe`] at
    /// `now`: when the copy has not come closer to its end for
    /// `migration_progress_timeout`, the last rung at once (post-copy when
    /// allowed, else [`Step::Abort`]) instead of waiting for the deadline.
    /// Closer means a pass that leaves less than the best one before it
    /// (as the ladder judges), pages sent in a pass that began below it,
    /// or a rising throttle; every rung and restart starts the clock
    /// again. Raw `data_remaining` is no measure: it drains to almost
    /// nothing in every pass, a stalled copy's too (the flaw of Nova's
    /// watermark, which it deprecated for false aborts). Samples without a
    /// remaining size cannot be judged and never end a copy, nor does
    /// anything once in post-copy, which ends by itself.
    pub fn no_progress(&mut self, p: &JobProgress, now: Instant) -> Option<Decision> {
        let timeout = self.progress_timeout?;
        p.data_remaining?;
        if self.rung == Rung::Done && self.postcopy {
            return None;
        }
        let since = match self.since {
            Some(since) if !self.progressed => since,
            _ => {
                self.progressed = false;
                self.since = Some(now);
                return None;
            }
        };
        let quiet = now.saturating_duration_since(since);
        if quiet < timeout {
            return None;
        }
        // It ends the copy, once.
        self.progress_timeout = None;
        let step = match self.last_resort() {
            Step::GiveUp => Step::Abort,
            step => step,
        };
        let why = format!(
            "no progress for {:.0} s (migration_progress_timeout={})",
            quiet.as_secs_f64(),
            timeout.as_secs()
        );
        Some(Decision { step, why })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn sample(iteration: u64, left_mib: u64) -> JobProgress {
        JobProgress {
            iteration: Some(iteration),
            data_remaining: Some(left_mib * MIB),
            ..JobProgress::default()
        }
    }

    /// Feeds one sample per iteration (each with `left` MiB at its start)
    /// and returns the steps taken.
    fn run(ladder: &mut Ladder, first: u64, lefts: &[u64]) -> Vec<Step> {
        lefts
            .iter()
            .zip(first..)
            .filter_map(|(&left, i)| ladder.observe(&sample(i, left)))
            .map(|d| d.step)
            .collect()
    }

    #[test]
    fn a_converging_copy_is_left_alone() {
        let mut l = Ladder::new(300, 1200, false);
        assert_eq!(run(&mut l, 1, &[128, 40, 20, 9, 4, 2]), vec![]);
        assert_eq!(l.downtime_ms(), 300);
    }

    #[test]
    fn a_copy_throttled_from_its_start_is_never_restarted() {
        let mut l = Ladder::new(1200, 1200, true).restart_throttled(false);
        // The throttle rising is QEMU at work; once it stops, more downtime
        // is all that is left before post-copy.
        let throttled = |i: u64, pct: u64| JobProgress {
            throttle_pct: Some(pct),
            ..sample(i, 32)
        };
        assert_eq!(run(&mut l, 1, &[128, 32]), vec![]);
        for (i, pct) in [(3, 30), (4, 50), (5, 70), (6, 90)] {
            assert_eq!(l.observe(&throttled(i, pct)), None);
        }
        let steps: Vec<Step> = (7..11)
            .filter_map(|i| l.observe(&throttled(i, 99)).map(|d| d.step))
            .collect();
        assert_eq!(steps, vec![Step::PostCopy]);
    }

    #[test]
    fn setup_and_a_rising_throttle_are_not_stalls() {
        let mut l = Ladder::new(1200, 1200, false);
        // Iteration 0 (setup) has 0 left: it must not become the best.
        assert_eq!(l.observe(&sample(0, 0)), None);
        assert_eq!(run(&mut l, 1, &[128, 32, 32, 32, 32]), vec![]);
        assert_eq!(run(&mut l, 6, &[32]), vec![Step::AutoConverge]);
        l.restarted();
        // The throttle rises at every iteration: QEMU is still at work.
        let throttled = |i: u64, pct: u64| JobProgress {
            throttle_pct: Some(pct),
            ..sample(i, 32)
        };
        for (i, pct) in [(1, 0), (2, 0), (3, 30), (4, 50), (5, 70), (6, 90), (7, 99)] {
            assert_eq!(l.observe(&throttled(i, pct)), None, "iteration {i}");
        }
        // At its ceiling and still no gain: three stalls and out.
        let steps: Vec<_> = (8..12)
            .filter_map(|i| l.observe(&throttled(i, 99)))
            .map(|d| d.step)
            .collect();
        assert_eq!(steps, vec![Step::GiveUp]);
    }

    #[test]
    fn no_iteration_count_means_no_policy() {
        let mut l = Ladder::new(300, 1200, true);
        let p = JobProgress {
            data_remaining: Some(30 * MIB),
            ..JobProgress::default()
        };
        assert!((0..50).all(|_| l.observe(&p).is_none()));
    }

    #[test]
    fn samples_within_an_iteration_keep_its_peak() {
        let mut l = Ladder::new(300, 1200, false);
        // Iteration 2 starts at 30 MiB and drains; only its peak counts.
        for (i, left) in [(1, 128), (2, 30), (2, 10), (2, 1)] {
            assert_eq!(l.observe(&sample(i, left)), None);
        }
        // Iterations 3..5 each start at 30 MiB again: stalled.
        let steps: Vec<_> = [(3, 30), (3, 2), (4, 30), (5, 30), (6, 30)]
            .into_iter()
            .filter_map(|(i, left)| l.observe(&sample(i, left)))
            .collect();
        assert_eq!(steps.len(), 1, "{steps:?}");
        assert_eq!(
            steps[0].step,
            Step::Downtime {
                from_ms: 300,
                to_ms: 600
            }
        );
        assert!(steps[0].why.contains("30.0 MiB"), "{}", steps[0].why);
    }

    #[test]
    fn the_whole_ladder_without_postcopy() {
        let mut l = Ladder::new(300, 1000, false);
        // A guest that never lets the copy shrink below 32 MiB: a step
        // every fourth iteration (one to set the best, three stalls).
        let flat = [32; 40];
        let steps = run(&mut l, 1, &flat[..13]);
        assert_eq!(
            steps,
            vec![
                Step::Downtime {
                    from_ms: 300,
                    to_ms: 600
                },
                Step::Downtime {
                    from_ms: 600,
                    to_ms: 1000
                },
                Step::AutoConverge,
            ]
        );
        l.restarted();
        assert_eq!(run(&mut l, 1, &flat), vec![Step::GiveUp]);
        // After giving up, nothing more.
        assert_eq!(run(&mut l, 100, &flat), vec![]);
    }

    #[test]
    fn postcopy_is_the_last_rung_only_when_allowed() {
        let mut l = Ladder::new(1200, 1200, true);
        let flat = [32; 40];
        assert_eq!(run(&mut l, 1, &flat[..5]), vec![Step::AutoConverge]);
        l.restarted();
        assert_eq!(run(&mut l, 1, &flat), vec![Step::PostCopy]);

        // No time for the restart: post-copy at once, and only once.
        let mut l = Ladder::new(1200, 1200, true);
        assert_eq!(run(&mut l, 1, &flat[..5]), vec![Step::AutoConverge]);
        assert_eq!(l.last_resort(), Step::PostCopy);
        assert_eq!(run(&mut l, 6, &flat), vec![]);
    }

    #[test]
    fn progress_resets_the_count() {
        let mut l = Ladder::new(300, 1200, false);
        // Two stalls, then a real gain, then two stalls: no step yet.
        assert_eq!(run(&mut l, 1, &[128, 32, 32, 32, 20, 20, 20]), vec![]);
        assert_eq!(
            run(&mut l, 8, &[20, 20]),
            vec![Step::Downtime {
                from_ms: 300,
                to_ms: 600
            }]
        );
    }

    #[test]
    fn the_bandwidth_decides_how_far_the_downtime_goes() {
        let at = |i: u64, left: u64, mib_s: u64| JobProgress {
            mem_bps: Some(mib_s * MIB),
            ..sample(i, left)
        };
        // 32 MiB at 64 MiB/s: 500 ms needed, a QEMU limit of 625 ms
        // asked (not 600, double the freeze), so a freeze of 1250 ms.
        let mut l = Ladder::new(300, 2000, false);
        let d = (1..7).find_map(|i| l.observe(&at(i, 32, 64))).unwrap();
        assert_eq!(
            d.step,
            Step::Downtime {
                from_ms: 300,
                to_ms: 1250
            }
        );
        assert_eq!(l.qemu_limit_ms(), 625);
        assert!(d.why.contains("about 500 ms"), "{}", d.why);
        // 32 MiB at 16 MiB/s: 2 s needed, beyond the QEMU limit of the
        // 1200 ms ceiling (600 ms), so the downtime rungs are skipped.
        let mut l = Ladder::new(300, 1200, false);
        let d = (1..7).find_map(|i| l.observe(&at(i, 32, 16))).unwrap();
        assert_eq!(d.step, Step::AutoConverge);
        assert_eq!(l.downtime_ms(), 1200);
    }

    #[test]
    fn qemu_gets_half_of_the_freeze() {
        assert_eq!(qemu_limit_ms(300), 150);
        assert_eq!(qemu_limit_ms(123), 62);
        assert_eq!(qemu_limit_ms(1), 1);
        for limit in [1, 200, 625, 1_333_333] {
            assert!(qemu_limit_ms(freeze_for(limit)) >= limit, "{limit}");
        }
    }

    /// Feeds `(second, sample)` pairs as migrate_to does (the ladder, then
    /// its clock) and returns the steps taken, each with its second.
    fn timed(l: &mut Ladder, samples: &[(u64, JobProgress)]) -> Vec<(u64, Step)> {
        let t0 = Instant::now();
        samples
            .iter()
            .filter_map(|(at, p)| {
                let now = t0 + Duration::from_secs(*at);
                let d = l.observe(p).or_else(|| l.no_progress(p, now))?;
                Some((*at, d.step))
            })
            .collect()
    }

    fn clocked(postcopy: bool, secs: u64) -> Ladder {
        Ladder::new(300, 1200, postcopy)
            .restart_throttled(false)
            .progress_timeout(Some(Duration::from_secs(secs)))
    }

    #[test]
    fn a_copy_over_a_link_that_carries_nothing_is_aborted_after_the_timeout() {
        let mut l = clocked(false, 10);
        // The first pass drains to 80 MiB by second 2, then nothing moves.
        let samples: Vec<_> = [100, 90, 80]
            .into_iter()
            .chain([80; 20])
            .enumerate()
            .map(|(at, left)| (at as u64, sample(1, left)))
            .collect();
        let steps = timed(&mut l, &samples);
        assert_eq!(steps, vec![(12, Step::Abort)]);
    }

    #[test]
    fn a_long_first_pass_is_progress_however_long_it_takes() {
        let mut l = clocked(false, 5);
        let samples: Vec<_> = (0..120).map(|at| (at, sample(1, 4000 - at * 30))).collect();
        assert_eq!(timed(&mut l, &samples), vec![]);
    }

    #[test]
    fn a_guest_that_outruns_the_link_is_ended_once_no_rung_is_left() {
        let mut l = clocked(false, 6);
        // A pass a second, each leaving 32 MiB: a rung every fourth pass
        // (each starting the clock again), then nothing left to try; six
        // seconds later, the abort instead of the wait for the deadline.
        let samples: Vec<_> = (1..40).map(|i| (i, sample(i, 32))).collect();
        let steps = timed(&mut l, &samples);
        let up = |from_ms, to_ms| Step::Downtime { from_ms, to_ms };
        assert_eq!(
            steps,
            vec![
                (5, up(300, 600)),
                (9, up(600, 1200)),
                (13, Step::GiveUp),
                (20, Step::Abort)
            ]
        );
    }

    #[test]
    fn with_post_copy_allowed_the_clock_switches_to_it_once() {
        let mut l = clocked(true, 2);
        let samples: Vec<_> = (1..30).map(|i| (i, sample(i, 32))).collect();
        assert_eq!(timed(&mut l, &samples), vec![(4, Step::PostCopy)]);
    }

    #[test]
    fn a_rising_throttle_and_the_disk_copy_are_not_time_without_progress() {
        let mut l = clocked(false, 3);
        let throttled = |i: u64| JobProgress {
            throttle_pct: Some(i * 5),
            ..sample(i, 32)
        };
        let samples: Vec<_> = (1..20).map(|i| (i, throttled(i))).collect();
        assert_eq!(timed(&mut l, &samples), vec![]);

        // Disks first for a minute: the RAM copy's clock starts after.
        let mut l = clocked(false, 3);
        let disks = JobProgress {
            disk_processed: Some(1 << 20),
            mem_processed: Some(0),
            ..sample(1, 128)
        };
        let mut samples: Vec<_> = (0..60).map(|at| (at, disks.clone())).collect();
        samples.extend((60..70).map(|at| (at, sample(1, 128 - (at - 60)))));
        samples.extend((70..80).map(|at| (at, sample(1, 118))));
        assert_eq!(timed(&mut l, &samples), vec![(73, Step::Abort)]);
    }

    #[test]
    fn the_clock_is_off_at_0_and_blind_without_a_remaining_size() {
        let flat: Vec<_> = (1..60).map(|i| (i, sample(1, 32))).collect();
        let mut off = Ladder::new(300, 1200, false);
        assert_eq!(timed(&mut off, &flat), vec![]);
        let mut blind = clocked(false, 2);
        let unknown = JobProgress {
            data_remaining: None,
            ..sample(1, 32)
        };
        let samples: Vec<_> = (1..60).map(|i| (i, unknown.clone())).collect();
        assert_eq!(timed(&mut blind, &samples), vec![]);
    }

    #[test]
    fn ceiling_never_below_start() {
        let mut l = Ladder::new(500, 100, false);
        assert_eq!(l.downtime_ms(), 500);
        assert_eq!(run(&mut l, 1, &[32; 6]), vec![Step::AutoConverge]);
    }
}
