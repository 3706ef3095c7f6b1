//! The other node: which one it is (the `peer` parameter, or Pacemaker's
//! `crm_node`), checked as a host name before anything reaches for it, and
//! the URI its libvirtd is reached by.

use crate::cluster;
use crate::error::{chain, Error};
use crate::hypervisor::Hypervisor;
use crate::ocf::{Budget, Env, Params};
use crate::uri;

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
    /// The `peer` parameter, or Pacemaker's answer; `connect` gives the
    /// backend for a node whose name has been checked.
    pub fn find(
        env: &Env,
        p: &Params,
        deadline: &Budget,
        connect: impl FnOnce(&str) -> Box<dyn Hypervisor>,
    ) -> Peer {
        let budget = deadline.preflight();
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
        let hv = connect(&node);
        Peer::Known { node, hv }
    }
}

/// Pacemaker's migration target (`CRM_meta_migrate_target`), checked as a
/// host name before anything reaches for it: it goes into the peer's
/// libvirt URI, where a `?command=` would make libvirt run a program.
pub fn migration_target(env: &Env) -> Result<&str, Error> {
    let target = env
        .text("OCF_RESKEY_CRM_meta_migrate_target")
        .ok_or(Error::NoTarget)?;
    checked_node(target)?;
    Ok(target)
}

pub fn checked_node(node: &str) -> Result<(), Error> {
    uri::check_host(node).map_err(|source| Error::BadNode {
        node: node.into(),
        source,
    })
}

/// The URI the source libvirtd uses to reach the target's: the local
/// hypervisor URI with the transport and the target host put in
/// (`qemu:///system` → `qemu+ssh://root@node-b/system`), never the local
/// query. The control channel goes to the base name: it stays on the
/// back-channel. `node` must have passed [`crate::uri::check_host`].
pub fn peer_uri(p: &Params, node: &str) -> String {
    uri::peer_uri(
        &p.local_uri,
        p.migration_transport.as_str(),
        p.migration_user.as_deref(),
        node,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_uris_never_carry_the_local_query() {
        let p = |pairs: &[(&str, &str)]| {
            let env: crate::ocf::Env = [("OCF_RESKEY_name", "vm1")]
                .into_iter()
                .chain(pairs.iter().copied())
                .collect();
            Params::from_env(&env).unwrap()
        };
        let user = ("OCF_RESKEY_migration_user", "root");
        assert_eq!(
            peer_uri(&p(&[user]), "node-b"),
            "qemu+ssh://root@node-b/system"
        );
        let tcp = ("OCF_RESKEY_migration_transport", "tcp");
        assert_eq!(
            peer_uri(&p(&[user, tcp]), "node-b"),
            "qemu+tcp://node-b/system"
        );
        let local = ("OCF_RESKEY_hypervisor", "qemu+unix:///system?socket=/run/x");
        assert_eq!(
            peer_uri(&p(&[local, tcp]), "[fd00::2]"),
            "qemu+tcp://[fd00::2]/system"
        );
    }
}
