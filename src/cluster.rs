//! What the agent asks Pacemaker: which node is the peer. start uses it to
//! make sure the server does not already run there before booting it.
//!
//! The answer comes from `crm_node` (run directly, never through a shell),
//! bounded in time: Pacemaker's tools block while the cluster is starting.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::ocf::Env;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot run crm_node")]
    Spawn(#[source] std::io::Error),
    #[error("crm_node {args} did not answer within {timeout:?}")]
    Timeout { args: String, timeout: Duration },
    #[error("crm_node {args} failed: {stderr}")]
    Failed { args: String, stderr: String },
    #[error("this cluster has {0} other nodes, not one")]
    NotTwoNodes(usize),
}

/// Runs `crm_node ARGS`, killing it if it takes longer than `timeout`.
fn crm_node(args: &[&str], timeout: Duration) -> Result<String, Error> {
    let mut child = Command::new("crm_node")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(Error::Spawn)?;
    let until = Instant::now() + timeout;
    let status = loop {
        match child.try_wait().map_err(Error::Spawn)? {
            Some(status) => break status,
            None if Instant::now() >= until => {
                // Our own child, by its handle: never by name.
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Timeout {
                    args: args.join(" "),
                    timeout,
                });
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    if status.success() {
        Ok(out)
    } else {
        Err(Error::Failed {
            args: args.join(" "),
            stderr: err.trim().to_owned(),
        })
    }
}

/// The node names in `crm_node -l` output (`<id> <name> <state>` lines).
fn parse_nodes(list: &str) -> Vec<String> {
    list.lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(str::to_owned)
        .collect()
}

/// The other node of a two-node cluster, as Pacemaker knows it.
pub fn peer_from_pacemaker(env: &Env, timeout: Duration) -> Result<String, Error> {
    let nodes = parse_nodes(&crm_node(&["-l"], timeout)?);
    let me = match env.text("OCF_RESKEY_CRM_meta_on_node") {
        Some(n) => n.to_owned(),
        None => crm_node(&["-n"], timeout)?.trim().to_owned(),
    };
    let others: Vec<_> = nodes.into_iter().filter(|n| *n != me).collect();
    match others.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(Error::NotTwoNodes(others.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_list() {
        let out = "1 node-a member\n2 node-b member\n";
        assert_eq!(parse_nodes(out), ["node-a", "node-b"]);
        assert!(parse_nodes("").is_empty());
    }

    #[test]
    fn without_a_cluster_it_fails_in_time() {
        let env: Env = [("OCF_RESKEY_CRM_meta_on_node", "node-a")]
            .into_iter()
            .collect();
        let t = Instant::now();
        assert!(peer_from_pacemaker(&env, Duration::from_secs(3)).is_err());
        assert!(t.elapsed() < Duration::from_secs(4));
    }
}
