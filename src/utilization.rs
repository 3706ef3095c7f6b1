//! Pacemaker utilization from the server's definition, as VirtualDomain's
//! `autoset_utilization_cpu` and `autoset_utilization_host_memory` do: the
//! resource's `cpu` is its vCPU count and `host_memory` its memory in MiB,
//! so that with `placement-strategy=utilization` Pacemaker places it only
//! on a node with room for it. Written with `crm_resource --utilization`
//! only when a value changed (the values last written are recorded per
//! node), each call bounded, never failing the action.

#[cfg(test)]
use std::time::Duration;

use log::{debug, info, warn};

use crate::cluster;
use crate::ocf::{Budget, Env, Params};
use crate::records::Records;
use crate::storage::{child, memory_bytes};

/// Who writes the utilization, and how.
pub struct Utilization<'a> {
    /// The Pacemaker resource; None when no cluster called the agent.
    rsc: Option<&'a str>,
    cpu: bool,
    host_memory: bool,
    records: Records,
    /// The action's, which bounds each `crm_resource` call
    /// ([`Budget::cluster_call`]).
    budget: Budget,
    /// Ask the cluster even when the record says the values are written
    /// (start: the resource may have been created anew since).
    always: bool,
}

const UTILIZATION: &str = "utilization";

impl<'a> Utilization<'a> {
    /// For an action Pacemaker runs: it passes `crm_feature_set` to every
    /// agent action (an admin's `vmshift start` in a shell has none, and
    /// writes nothing).
    pub fn new(env: &'a Env, p: &Params, records: Records, budget: Budget, always: bool) -> Self {
        let rsc = env
            .text("OCF_RESKEY_crm_feature_set")
            .and(env.instance())
            .filter(|r| !r.is_empty());
        Utilization {
            rsc,
            cpu: p.autoset_utilization_cpu,
            host_memory: p.autoset_utilization_host_memory,
            records,
            budget,
            always,
        }
    }

    /// Writes nothing.
    #[cfg(test)]
    pub fn off() -> Utilization<'static> {
        Utilization {
            rsc: None,
            cpu: false,
            host_memory: false,
            records: Records::none(),
            budget: Budget::new(Duration::from_secs(20)),
            always: false,
        }
    }

    /// The utilization of server `name` from its definition `xml`, written
    /// where it is not what this node wrote last.
    pub fn update(&self, name: &str, xml: &str) {
        let Some(rsc) = self.rsc else { return };
        let wanted = self.wanted(xml);
        if wanted.is_empty() {
            return;
        }
        let said = wanted
            .iter()
            .map(|(a, v)| format!("{a}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
        if !self.always && self.records.last(name, UTILIZATION).as_deref() == Some(&said) {
            return;
        }
        for (attr, value) in &wanted {
            match cluster::utilization(rsc, attr, self.budget.cluster_call()) {
                Ok(Some(v)) if v == *value => continue,
                Ok(_) => {}
                Err(e) => {
                    // Without the CIB (a cluster starting, a node leaving)
                    // there is no one to tell; the next monitor tries again.
                    debug!(
                        "utilization of {rsc} not updated: {}",
                        crate::error::chain(&e)
                    );
                    return;
                }
            }
            if let Err(e) = cluster::set_utilization(rsc, attr, value, self.budget.cluster_call()) {
                warn!(
                    "cannot set the utilization {attr}={value} of {rsc}: {}",
                    crate::error::chain(&e)
                );
                return;
            }
            info!("utilization of {rsc}: {attr}={value}");
        }
        self.records.keep(name, UTILIZATION, &said);
    }

    /// The attributes this server should have, from its definition: the
    /// vCPUs it boots with (`<vcpu current>`, else the count) and its
    /// memory in whole MiB (`<memory>`, as VirtualDomain's dominfo).
    fn wanted(&self, xml: &str) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.cpu {
            let vcpus = roxmltree::Document::parse(xml).ok().and_then(|doc| {
                let v = child(doc.root_element(), "vcpu")?;
                let n = v.attribute("current").or(v.text())?;
                n.trim().parse::<u32>().ok()
            });
            out.extend(vcpus.map(|n| ("cpu", n.to_string())));
        }
        if self.host_memory {
            out.extend(memory_bytes(xml).map(|b| ("host_memory", (b >> 20).to_string())));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_values_come_from_the_definition() {
        let u = Utilization {
            cpu: true,
            host_memory: true,
            ..Utilization::off()
        };
        let xml = "<domain><name>vm1</name><memory unit='KiB'>524288</memory>\
            <vcpu placement='static' current='2'>4</vcpu></domain>";
        assert_eq!(
            u.wanted(xml),
            [("cpu", "2".to_owned()), ("host_memory", "512".to_owned())]
        );
        let plain = "<domain><memory unit='GiB'>1</memory><vcpu>3</vcpu></domain>";
        assert_eq!(
            u.wanted(plain),
            [("cpu", "3".to_owned()), ("host_memory", "1024".to_owned())]
        );
        let cpu_only = Utilization {
            cpu: true,
            ..Utilization::off()
        };
        assert_eq!(cpu_only.wanted(plain), [("cpu", "3".to_owned())]);
    }

    #[test]
    fn nothing_is_written_outside_a_cluster() {
        let env: Env = [("OCF_RESOURCE_INSTANCE", "srv1")].into_iter().collect();
        let p = Params::vm1(&[]);
        let budget = Budget::new(Duration::from_secs(20));
        let util = |env| Utilization::new(env, &p, Records::none(), budget, true);
        let u = util(&env);
        assert_eq!(u.rsc, None, "no crm_feature_set: not Pacemaker calling");
        let env: Env = [
            ("OCF_RESOURCE_INSTANCE", "srv1"),
            ("OCF_RESKEY_crm_feature_set", "3.16.2"),
        ]
        .into_iter()
        .collect();
        let u = util(&env);
        assert_eq!(u.rsc, Some("srv1"));
        assert!(u.cpu && u.host_memory, "on by default, as VirtualDomain's");
    }
}
