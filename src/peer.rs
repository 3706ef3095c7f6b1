//! The other nodes: which they are (the `peer` parameter, or Pacemaker's
//! `crm_node`), each checked as a host name before anything reaches for
//! it, the URI its libvirtd is reached by, and a question put to all of
//! them at once.

use crate::cluster;
use crate::error::{chain, Error};
use crate::hypervisor::Hypervisor;
use crate::ocf::{Budget, Env, Params, Transport};
use crate::uri;

/// One other node and its libvirtd.
pub struct Peer {
    pub node: String,
    pub hv: Box<dyn Hypervisor + Send>,
}

/// The node a move goes to, and its libvirtd: what migrate_to and
/// plan-migration are about.
pub struct Target<'a> {
    pub node: &'a str,
    pub hv: &'a dyn Hypervisor,
}

/// The other nodes, as start, stop and monitor see them: those whose
/// libvirtd can be asked, and why the list may lack some (the cluster's
/// node list could not be read, or a name in it is no host name).
pub struct Peers {
    pub known: Vec<Peer>,
    pub unknown: Option<String>,
}

impl Peers {
    /// The `peer` parameter's nodes, or Pacemaker's; `connect` gives the
    /// backend for a node whose name has been checked.
    pub fn find(
        env: &Env,
        p: &Params,
        deadline: &Budget,
        connect: impl Fn(&str) -> Box<dyn Hypervisor + Send>,
    ) -> Peers {
        let nodes = if p.peer.is_empty() {
            let budget = deadline.preflight().min(deadline.remaining());
            match cluster::peers_from_pacemaker(env, budget) {
                Ok(nodes) => nodes,
                Err(e) => return Peers::unknown(chain(&e)),
            }
        } else {
            // A resource's parameters are the same on every node, so the
            // list may well name this one.
            let own = own_names(env);
            p.peer
                .iter()
                .filter(|n| !names_this_node(n, &own))
                .cloned()
                .collect()
        };
        let mut unknown = None;
        let mut known = Vec::new();
        for node in nodes {
            match checked_node(&node) {
                Ok(()) => known.push(Peer {
                    hv: connect(&node),
                    node,
                }),
                Err(e) => unknown = Some(chain(&e)),
            }
        }
        Peers { known, unknown }
    }

    pub fn unknown(why: String) -> Peers {
        Peers {
            known: Vec::new(),
            unknown: Some(why),
        }
    }

    /// `ask` put to every known peer at once, each in its own thread, so
    /// that peers which do not answer cost one wait (each call is bounded
    /// by its backend), not one per node; the answers in `known`'s order.
    pub fn ask<T: Send + 'static>(
        &mut self,
        ask: impl Fn(&Peer) -> T + Send + Sync + 'static,
    ) -> Vec<T> {
        self.ask_until(ask, |_| false)
    }

    /// As [`Peers::ask`], but done at the first answer that is
    /// `decisive` (a server running on one node refuses the start, whatever
    /// a hung one would say): the answers so far, that one among them, and
    /// `known` keeps only the peers that gave them; the others' threads
    /// are left to end on their own, bounded, or with the process.
    pub fn ask_until<T: Send + 'static>(
        &mut self,
        ask: impl Fn(&Peer) -> T + Send + Sync + 'static,
        decisive: impl Fn(&T) -> bool,
    ) -> Vec<T> {
        let ask = std::sync::Arc::new(ask);
        let (tx, rx) = std::sync::mpsc::channel();
        let mut answered: Vec<Option<(Peer, T)>> = Vec::new();
        for (i, peer) in std::mem::take(&mut self.known).into_iter().enumerate() {
            let (ask, tx) = (ask.clone(), tx.clone());
            std::thread::spawn(move || {
                let answer = ask(&peer);
                let _ = tx.send((i, peer, answer));
            });
            answered.push(None);
        }
        // Ends when every thread has sent (or died: its peer is then no
        // longer known).
        drop(tx);
        for (i, peer, answer) in rx {
            let done = decisive(&answer);
            answered[i] = Some((peer, answer));
            if done {
                break;
            }
        }
        let (known, answers) = answered.into_iter().flatten().unzip();
        self.known = known;
        answers
    }
}

#[cfg(test)]
impl Peers {
    /// node-b, node-c, ... in order, each the next of `fakes`.
    pub fn of_fakes(fakes: Vec<crate::hypervisor::fake::Fake>) -> Peers {
        let known = fakes
            .into_iter()
            .zip(["node-b", "node-c", "node-d"])
            .map(|(f, node)| Peer {
                node: node.into(),
                hv: Box::new(f),
            })
            .collect();
        Peers {
            known,
            unknown: None,
        }
    }
}

/// This node's names: Pacemaker's for it (when Pacemaker calls) and its
/// host name.
fn own_names(env: &Env) -> Vec<String> {
    let pacemaker = env.text("OCF_RESKEY_CRM_meta_on_node").map(str::to_owned);
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok());
    pacemaker.into_iter().chain(host).collect()
}

/// Whether `node` is one of `own`: the same name, or the same first label
/// of two host names (`node-a` and `node-a.example.com`; never of two
/// addresses, where a first "label" means nothing).
fn names_this_node(node: &str, own: &[String]) -> bool {
    let is_name = |n: &str| n.bytes().any(|b| b.is_ascii_alphabetic()) && !n.contains(':');
    let label = |n: &str| n.split('.').next().unwrap_or(n).to_ascii_lowercase();
    own.iter().any(|me| {
        me.eq_ignore_ascii_case(node) || (is_name(node) && is_name(me) && label(node) == label(me))
    })
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
/// query; over ssh, once the agent runs an action, `?command=` names the
/// ssh that shares one connection per peer ([`crate::ssh`]). The control
/// channel goes to the base name: it stays on the back-channel. `node`
/// must have passed [`crate::uri::check_host`].
pub fn peer_uri(p: &Params, node: &str) -> String {
    uri::peer_uri(
        &p.local_uri,
        p.migration_transport.as_str(),
        p.migration_user.as_deref(),
        node,
        (p.migration_transport == Transport::Ssh)
            .then(crate::ssh::command)
            .flatten(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::fake::Fake;
    use crate::hypervisor::DomainState;
    use std::time::{Duration, Instant};

    /// The peers `Peers::find` finds for vm1 with these parameters, each
    /// a fake where vm1 is shut off.
    fn found(pairs: &[(&str, &str)]) -> Peers {
        let env = Env::reskeys(&[&[("name", "vm1")], pairs].concat());
        let p = Params::from_env(&env).unwrap();
        let connect = |_: &str| -> Box<dyn Hypervisor + Send> {
            Box::new(Fake::new(&[DomainState::Shutoff]))
        };
        Peers::find(&env, &p, &Budget::new(Duration::from_secs(20)), connect)
    }

    #[test]
    fn this_node_is_no_peer_of_itself() {
        let own = ["node-a".to_owned(), "node-a.example.com".to_owned()];
        for me in ["node-a", "NODE-A", "node-a.example.com", "node-a.lan"] {
            assert!(names_this_node(me, &own), "{me}");
        }
        for other in ["node-b", "node-ab", "10.0.0.1", "[fd00::1]"] {
            assert!(!names_this_node(other, &own), "{other}");
        }
        let by_address = ["10.0.0.1".to_owned()];
        assert!(!names_this_node("10.0.0.2", &by_address));
        let peers = found(&[
            ("peer", "node-a,node-b,node-c"),
            ("CRM_meta_on_node", "node-b"),
        ]);
        let nodes: Vec<_> = peers.known.iter().map(|p| p.node.as_str()).collect();
        assert!(!nodes.contains(&"node-b"), "{nodes:?}");
        assert!(nodes.contains(&"node-c"), "{nodes:?}");
    }

    #[test]
    fn a_decisive_answer_does_not_wait_for_a_slow_peer() {
        let mut peers = found(&[("peer", "node-b,node-c,node-d")]);
        let t = Instant::now();
        let asked = peers.ask_until(
            |peer| {
                if peer.node == "node-b" {
                    std::thread::sleep(Duration::from_secs(2));
                }
                peer.node.clone()
            },
            |node| node == "node-c",
        );
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        assert!(asked.contains(&"node-c".to_owned()), "{asked:?}");
        assert!(!asked.contains(&"node-b".to_owned()), "{asked:?}");
        let known: Vec<_> = peers.known.iter().map(|p| p.node.clone()).collect();
        assert_eq!(known, asked, "known keeps the peers that answered");
    }

    #[test]
    fn every_peer_is_asked_at_once_and_answers_in_order() {
        let mut peers = found(&[("peer", "node-b,node-c,node-d")]);
        assert!(peers.unknown.is_none());
        let t = Instant::now();
        let asked = peers.ask(|peer| {
            std::thread::sleep(Duration::from_millis(300));
            peer.node.clone()
        });
        assert_eq!(asked, ["node-b", "node-c", "node-d"]);
        assert!(
            t.elapsed() < Duration::from_millis(600),
            "{:?}",
            t.elapsed()
        );
    }

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
