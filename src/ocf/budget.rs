//! One time budget per action, built once from Pacemaker's
//! `CRM_meta_timeout`: the deadline every wait ends at, and every wait an
//! action makes on the way there (the first question to libvirtd, the
//! peer's pre-flight, the graceful phase of stop, the abort point of a
//! migration and the time kept after it). Nothing else computes a margin.

use std::time::{Duration, Instant};

use super::config::CONFIG_BUDGET;

/// The longest either step of the migration-network choice may take: the
/// name lookup (getaddrinfo has no timeout of its own; resolv.conf's
/// default is 5 s per try and server), and the checks of all the resolved
/// addresses together (side by side against one deadline). A dead
/// migration link must cost a second or two, not the migration.
pub const NETWORK_STEP: Duration = Duration::from_secs(1);

/// The least time without progress an unset `migration_progress_timeout`
/// allows a copy ([`Budget::progress_timeout`]).
pub const PROGRESS_TIMEOUT_MIN: Duration = Duration::from_secs(20);

/// When an action must be done by. Pacemaker SIGKILLs the agent's process
/// group when `CRM_meta_timeout` runs out, and a killed action is worse
/// than a failed one (a killed migrate_to makes Pacemaker assume the server
/// runs on both nodes), so every wait ends at `deadline`, a margin before
/// the timeout.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    start: Instant,
    at: Instant,
    timeout: Duration,
}

impl Budget {
    /// The margin kept before Pacemaker's timeout: a tenth of it, at least
    /// 1 s and at most 5 s (time to log, print the reason and exit).
    pub fn new(timeout: Duration) -> Self {
        let margin = (timeout / 10).clamp(Duration::from_secs(1), Duration::from_secs(5));
        let start = Instant::now();
        let budget = timeout.saturating_sub(margin).max(timeout / 2);
        Budget {
            start,
            at: start + budget,
            timeout,
        }
    }

    pub fn at(&self) -> Instant {
        self.at
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Since the action began (the budget is built first thing).
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    /// The same deadline, `reserve` earlier: stop ends its graceful phase
    /// here so that destroy still fits before the real deadline.
    pub fn earlier_by(&self, reserve: Duration) -> Instant {
        self.at
            .checked_sub(reserve)
            .map_or(self.start, |t| t.max(self.start))
    }

    /// The time stop keeps for destroy after the graceful phase: libvirt's
    /// destroy sends SIGTERM, waits up to 10 s, then SIGKILLs (virDomainDestroy),
    /// so a quarter of the timeout, between 2 s and 15 s.
    pub fn destroy_reserve(&self) -> Duration {
        (self.timeout / 4).clamp(Duration::from_secs(2), Duration::from_secs(15))
    }

    /// How long stop waits for an aborted migration to end: libvirt cancels a
    /// copy in about a second, 2 s on a busy host with the link cut; an eighth
    /// of the timeout, 2 s to 10 s.
    pub fn abort_wait(&self) -> Duration {
        (self.timeout / 8).clamp(Duration::from_secs(2), Duration::from_secs(10))
    }

    /// How long monitor waits for libvirtd's answer: min(2 s, a quarter of its
    /// timeout). A hung libvirtd then costs a monitor two seconds, and the QEMU
    /// process decides, instead of the whole timeout.
    pub fn monitor_ask(&self) -> Duration {
        (self.timeout / 4).min(Duration::from_secs(2))
    }

    /// How long stop waits for libvirtd's first answer: a quarter of its
    /// timeout, 2 s to 15 s, so that a hung libvirtd leaves most of the budget
    /// for making sure of (or, with force_stop, killing) the QEMU process.
    pub fn stop_ask(&self) -> Duration {
        (self.timeout / 4).clamp(Duration::from_secs(2), Duration::from_secs(15))
    }

    /// The time kept after aborting a migration to see it end and to confirm
    /// the guest still runs here: an eighth of the timeout, 3 s to 10 s. With
    /// the migration link cut, libvirt needs about 2 s on a busy host to
    /// cancel the copy and drop the target's incoming domain.
    pub fn abort_reserve(&self) -> Duration {
        (self.timeout / 8).clamp(Duration::from_secs(3), Duration::from_secs(10))
    }

    /// How long a migration's copy may go without progress before
    /// migrate_to ends it (`migration_progress_timeout`, in seconds; 0 is
    /// off). Unset: a quarter of the timeout, at least 20 s, so that a copy
    /// that stopped getting anywhere (a migration link that carries nothing,
    /// or a guest that outruns it once no rung is left) costs a quarter of
    /// the wait for the deadline, and a first pass or a throttle that needs
    /// a moment is never cut short.
    pub fn progress_timeout(&self, set_s: Option<u64>) -> Option<Duration> {
        match set_s {
            Some(0) => None,
            Some(s) => Some(Duration::from_secs(s)),
            None => Some((self.timeout / 4).max(PROGRESS_TIMEOUT_MIN)),
        }
    }

    /// How long the target's libvirtd may take to answer before the migration
    /// starts: a quarter of the timeout, 3 s to 15 s. A hung target must cost
    /// a clear error early, not the whole migrate_to budget.
    pub fn preflight(&self) -> Duration {
        (self.timeout / 4).clamp(Duration::from_secs(3), Duration::from_secs(15))
    }

    /// Each call of a Pacemaker tool that only informs the cluster
    /// (`crm_resource --utilization`): a tenth of the timeout, 1 to 5 s,
    /// never more than what is left. The CIB answers in milliseconds; a
    /// cluster that does not must not cost the monitor its answer.
    pub fn cluster_call(&self) -> Duration {
        (self.timeout / 10)
            .clamp(Duration::from_secs(1), Duration::from_secs(5))
            .min(self.remaining() / 4)
    }

    /// Whether a call refused after `took` because another call held the
    /// domain (libvirt waits 30 s for its job lock) may be made again: only
    /// while the same wait and a boot (5 s) still fit before the deadline.
    /// A call the deadline cut off would go on in libvirtd and boot the
    /// server after start had reported failure.
    pub fn fits_again(&self, took: Duration) -> bool {
        self.remaining() > took + Duration::from_secs(5)
    }

    /// How long each step of the migration-network choice may take:
    /// [`NETWORK_STEP`], and never more than an eighth of what is left, so
    /// that both steps leave the migration three quarters of it.
    pub fn network_step(&self) -> Duration {
        NETWORK_STEP.min(self.remaining() / 8)
    }

    /// How long reading `config` may take: [`CONFIG_BUDGET`], within the
    /// deadline.
    pub fn config_read(&self) -> Duration {
        CONFIG_BUDGET.min(self.remaining())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_network_steps_take_a_second_or_an_eighth_of_what_is_left() {
        assert_eq!(
            Budget::new(Duration::from_secs(60)).network_step(),
            NETWORK_STEP
        );
        let short = Budget::new(Duration::from_secs(4)).network_step();
        assert!(short <= Duration::from_millis(375) && short > Duration::from_millis(300));
    }

    #[test]
    fn the_deadline_keeps_a_margin() {
        let d = Budget::new(Duration::from_secs(20));
        let r = d.remaining();
        assert!(r <= Duration::from_secs(18) && r > Duration::from_secs(17));
        let d = Budget::new(Duration::from_secs(600));
        assert!(d.remaining() > Duration::from_secs(594));
        // Never less than half the timeout, even for tiny timeouts.
        let d = Budget::new(Duration::from_millis(1000));
        assert!(d.remaining() > Duration::from_millis(400));
        assert!(d.earlier_by(Duration::from_secs(100)) <= Instant::now());
    }

    #[test]
    fn budgets_for_the_first_question() {
        let s = Duration::from_secs;
        let b = |t| Budget::new(s(t));
        assert_eq!(b(10).monitor_ask(), Duration::from_millis(2000));
        assert_eq!(b(4).monitor_ask(), s(1));
        assert_eq!(b(20).stop_ask(), s(5));
        assert_eq!(b(4).stop_ask(), s(2));
        assert_eq!(b(600).stop_ask(), s(15));
    }

    #[test]
    fn a_copy_without_progress_is_ended_after_a_quarter_of_the_timeout() {
        let s = Duration::from_secs;
        let b = |t| Budget::new(s(t));
        assert_eq!(b(300).progress_timeout(None), Some(s(75)));
        assert_eq!(b(120).progress_timeout(None), Some(s(30)));
        assert_eq!(b(40).progress_timeout(None), Some(s(20)));
        assert_eq!(b(300).progress_timeout(Some(10)), Some(s(10)));
        assert_eq!(b(300).progress_timeout(Some(0)), None);
    }

    /// At the smallest and the largest timeouts, every action ends before
    /// its deadline with time left to print its reason, and each wait it
    /// is handed fits in what it has.
    #[test]
    fn the_waits_add_up_at_every_timeout() {
        for ms in [
            1_000, 2_000, 4_000, 10_000, 20_000, 120_000, 600_000, 86_400_000,
        ] {
            let t = Duration::from_millis(ms);
            let b = Budget::new(t);
            let whole = b.at - b.start;
            // The margin: at least half a second, at most 5 s.
            let margin = t - whole;
            assert!(margin >= Duration::from_millis(500), "{t:?}: {margin:?}");
            assert!(margin <= Duration::from_secs(5), "{t:?}");
            // monitor: one question, then the process table (1 s).
            assert!(b.monitor_ask() <= whole, "{t:?}");
            // stop: the first question and the destroy reserve both fit;
            // the graceful phase ends where the reserve begins, never
            // before the action started.
            assert!(b.stop_ask() <= b.timeout / 2 || ms < 8_000, "{t:?}");
            assert!(b.earlier_by(b.destroy_reserve()) >= b.start);
            assert!(b.earlier_by(b.destroy_reserve()) <= b.at);
            // migrate_to: from the abort point, the reserve reaches the
            // deadline exactly; the pre-flight and the network checks
            // (1 s lookup + 1 s probes) come before the abort point from
            // the timeouts a migration is run with (README: 120 s).
            let abort_at = b.earlier_by(b.abort_reserve());
            assert!(abort_at <= b.at && abort_at >= b.start, "{t:?}");
            if ms >= 20_000 {
                let before_abort = abort_at - b.start;
                assert!(
                    b.preflight() + Duration::from_secs(2) < before_abort,
                    "{t:?}"
                );
            }
            assert!(b.config_read() <= whole);
        }
    }
}
