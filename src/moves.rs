//! What a move in progress tells `vmshift watch`: while migrate_to runs it
//! keeps a record of the move in [`crate::records::STATE_DIR`] (the target,
//! the network, its deadline, the downtime the policy allows now and the
//! step it took last), and removes it when it ends, whichever way. libvirt
//! knows the copy's progress; only the agent knows its policy and deadline.

use std::cell::RefCell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::records::Records;

const MOVE: &str = "move";

/// One move, as the record says it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MoveState {
    pub target: String,
    /// The network the copy takes (`node-b.mn (10.0.0.2) usable`...).
    pub network: String,
    /// migrate_to's deadline, in ms since the epoch (another process
    /// reads it: an Instant would mean nothing there).
    pub deadline_ms: u64,
    /// The downtime the policy allows now.
    pub downtime_ms: u64,
    /// The policy's last step (`pre-copy` until it takes one).
    pub step: String,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl MoveState {
    /// A deadline `left` from now, as the record keeps it.
    pub fn deadline_in(left: Duration) -> u64 {
        now_ms().saturating_add(u64::try_from(left.as_millis()).unwrap_or(u64::MAX))
    }

    /// Time left until migrate_to's deadline.
    pub fn left(&self) -> Duration {
        Duration::from_millis(self.deadline_ms.saturating_sub(now_ms()))
    }

    fn to_text(&self) -> String {
        format!(
            "target={}\nnetwork={}\ndeadline_ms={}\ndowntime_ms={}\nstep={}\n",
            self.target, self.network, self.deadline_ms, self.downtime_ms, self.step
        )
    }

    fn parse(text: &str) -> MoveState {
        let mut s = MoveState::default();
        for (k, v) in text.lines().filter_map(|l| l.split_once('=')) {
            match k {
                "target" => s.target = v.to_owned(),
                "network" => s.network = v.to_owned(),
                "deadline_ms" => s.deadline_ms = v.parse().unwrap_or(0),
                "downtime_ms" => s.downtime_ms = v.parse().unwrap_or(0),
                "step" => s.step = v.to_owned(),
                _ => {}
            }
        }
        s
    }
}

#[cfg(test)]
impl MoveState {
    /// A move to node-b over its migration network, `left` before its
    /// deadline, not yet stepped up.
    pub fn to_node_b(left: Duration) -> MoveState {
        MoveState {
            target: "node-b".into(),
            network: "node-b.mn (10.0.0.2) usable".into(),
            deadline_ms: MoveState::deadline_in(left),
            downtime_ms: 300,
            step: "pre-copy".into(),
        }
    }
}

/// The record of a server's move.
pub fn read(records: &Records, name: &str) -> Option<MoveState> {
    records.last(name, MOVE).map(|t| MoveState::parse(&t))
}

/// The record migrate_to keeps while its move runs; removed when dropped.
pub struct Tracker<'a> {
    records: &'a Records,
    name: &'a str,
    state: RefCell<MoveState>,
}

impl<'a> Tracker<'a> {
    pub fn begin(records: &'a Records, name: &'a str, state: MoveState) -> Self {
        records.keep(name, MOVE, &state.to_text());
        Tracker {
            records,
            name,
            state: RefCell::new(state),
        }
    }

    /// The policy took `step`, allowing `downtime_ms` from now on.
    pub fn step(&self, step: &str, downtime_ms: u64) {
        let mut s = self.state.borrow_mut();
        s.step = step.to_owned();
        s.downtime_ms = downtime_ms;
        self.records.keep(self.name, MOVE, &s.to_text());
    }
}

impl Drop for Tracker<'_> {
    fn drop(&mut self) {
        self.records.remove(self.name, MOVE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_says_the_move_while_it_runs() {
        let dir = std::env::temp_dir().join(format!("vmshift-moves-{}", std::process::id()));
        let records = Records::new(&dir);
        let state = MoveState::to_node_b(Duration::from_secs(60));
        {
            let t = Tracker::begin(&records, "vm1", state.clone());
            assert_eq!(read(&records, "vm1"), Some(state));
            t.step("downtime raised", 600);
            let now = read(&records, "vm1").unwrap();
            assert_eq!(
                (now.step.as_str(), now.downtime_ms),
                ("downtime raised", 600)
            );
            assert!(now.left() > Duration::from_secs(58));
        }
        assert_eq!(read(&records, "vm1"), None, "removed when the move ends");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
