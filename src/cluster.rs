//! What the agent asks and tells Pacemaker: which nodes are the peers
//! (start uses them to make sure the server does not already run on one
//! before booting it), and the resource's utilization attributes.
//!
//! Pacemaker's tools (`crm_node`, `crm_resource`) are run directly, never
//! through a shell, bounded in time: they block while the cluster is
//! starting.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::ocf::Env;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot run {tool}")]
    Spawn {
        tool: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{cmd} did not answer within {timeout:?}")]
    Timeout { cmd: String, timeout: Duration },
    #[error("{cmd} failed: {stderr}")]
    Failed { cmd: String, stderr: String },
}

/// Runs `tool ARGS`, killing it if it takes longer than `timeout`; its
/// standard output when it succeeds. Both outputs are a few lines, well
/// within a pipe's buffer, so they are read once it has exited.
fn run(tool: &'static str, args: &[&str], timeout: Duration) -> Result<String, Error> {
    let spawn = |source| Error::Spawn { tool, source };
    let cmd = || format!("{tool} {}", args.join(" "));
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn)?;
    let until = Instant::now() + timeout;
    let status = loop {
        match child.try_wait().map_err(spawn)? {
            Some(status) => break status,
            None if Instant::now() >= until => {
                // Our own child, by its handle: never by name.
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Timeout {
                    cmd: cmd(),
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
            cmd: cmd(),
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

/// The other nodes of the cluster, as Pacemaker knows them (`crm_node
/// -l`: every node it has seen, members or not; one that is down simply
/// cannot be asked).
pub fn peers_from_pacemaker(env: &Env, timeout: Duration) -> Result<Vec<String>, Error> {
    let nodes = parse_nodes(&run("crm_node", &["-l"], timeout)?);
    let me = match env.text("OCF_RESKEY_CRM_meta_on_node") {
        Some(n) => n.to_owned(),
        None => run("crm_node", &["-n"], timeout)?.trim().to_owned(),
    };
    Ok(nodes.into_iter().filter(|n| *n != me).collect())
}

/// A utilization attribute of resource `rsc` (`crm_resource
/// --utilization`); None when it is not set. The `--opt=value` form
/// keeps a value that begins with '-' from being read as an option.
pub fn utilization(rsc: &str, attr: &str, timeout: Duration) -> Result<Option<String>, Error> {
    let (r, g) = (
        format!("--resource={rsc}"),
        format!("--get-parameter={attr}"),
    );
    match run(
        "crm_resource",
        &["--quiet", "--utilization", &r, &g],
        timeout,
    ) {
        Ok(v) => Ok(Some(v.trim().to_owned())),
        // Without the CIB it says "Could not connect to the CIB" (as
        // VirtualDomain, which looks for "not connected"); any other
        // failure is an attribute the resource does not have ("No such
        // device or address" in Pacemaker 2.1).
        Err(Error::Failed { stderr, .. }) if !stderr.to_lowercase().contains("connect") => Ok(None),
        Err(e) => Err(e),
    }
}

/// Sets a utilization attribute of resource `rsc` to `value`.
pub fn set_utilization(rsc: &str, attr: &str, value: &str, timeout: Duration) -> Result<(), Error> {
    let r = format!("--resource={rsc}");
    let (p, v) = (
        format!("--set-parameter={attr}"),
        format!("--parameter-value={value}"),
    );
    run("crm_resource", &["--utilization", &r, &p, &v], timeout).map(drop)
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
        assert!(peers_from_pacemaker(&env, Duration::from_secs(3)).is_err());
        assert!(t.elapsed() < Duration::from_secs(4));
    }
}
