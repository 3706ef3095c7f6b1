//! When an action must be done by: one deadline per action, from
//! Pacemaker's `CRM_meta_timeout`.

use std::time::{Duration, Instant};

/// When an action must be done by. Pacemaker SIGKILLs the agent's process
/// group when `CRM_meta_timeout` runs out, and a killed action is worse
/// than a failed one (a killed migrate_to makes Pacemaker assume the server
/// runs on both nodes), so every wait ends at `deadline`, a margin before
/// the timeout.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    start: Instant,
    at: Instant,
    timeout: Duration,
}

impl Deadline {
    /// The margin kept before Pacemaker's timeout: a tenth of it, at least
    /// 1 s and at most 5 s (time to log, print the reason and exit).
    pub fn new(timeout: Duration) -> Self {
        let margin = (timeout / 10).clamp(Duration::from_secs(1), Duration::from_secs(5));
        let start = Instant::now();
        let budget = timeout.saturating_sub(margin).max(timeout / 2);
        Deadline {
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

    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    pub fn expired(&self) -> bool {
        Instant::now() >= self.at
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// The same deadline, `reserve` earlier: stop ends its graceful phase
    /// here so that destroy still fits before the real deadline.
    pub fn earlier_by(&self, reserve: Duration) -> Instant {
        self.at
            .checked_sub(reserve)
            .map_or(self.start, |t| t.max(self.start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_keeps_a_margin() {
        let d = Deadline::new(Duration::from_secs(20));
        let r = d.remaining();
        assert!(r <= Duration::from_secs(18) && r > Duration::from_secs(17));
        let d = Deadline::new(Duration::from_secs(600));
        assert!(d.remaining() > Duration::from_secs(594));
        // Never less than half the timeout, even for tiny timeouts.
        let d = Deadline::new(Duration::from_millis(1000));
        assert!(d.remaining() > Duration::from_millis(400));
        assert!(d.earlier_by(Duration::from_secs(100)) <= Instant::now());
    }
}
