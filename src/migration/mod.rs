//! What a live migration asks of libvirt, before any convergence step: the
//! request built from the parameters, the chosen network and the peer's
//! URI. The network choice ([`network`], [`netif`]) and the convergence
//! policy ([`converge`]) live beside it.

pub mod converge;
pub mod netif;
pub mod network;

use std::time::Duration;

use crate::hypervisor::MigrationRequest;
use crate::ocf::{Budget, Params, Transport};
use crate::peer::peer_uri;
use crate::storage;
use network::{Choice, Net};

/// The network a move to `target` takes, from the parameters (the `.mn`
/// suffix, the transport, the port) within the action's budget.
pub fn choose_network(net: &dyn Net, p: &Params, target: &str, budget: &Budget) -> Choice {
    network::choose(
        net,
        target,
        &p.migration_network_suffix,
        p.migration_transport,
        p.migration_port,
        budget,
    )
}

/// The migration libvirt is asked for, before any convergence step.
pub fn request(
    p: &Params,
    target: &str,
    choice: &Choice,
    copy_disks: Vec<String>,
) -> MigrationRequest {
    MigrationRequest {
        dconn_uri: peer_uri(p, target),
        data_uri: choice.data_uri(),
        bandwidth: p.migration_speed,
        max_downtime_ms: p.migration_downtime,
        parallel: p.migration_parallel,
        // tls encrypts the RAM copy as well as the control channel.
        tls_host: (p.migration_transport == Transport::Tls).then(|| choice.host().to_owned()),
        auto_converge: false,
        postcopy: p.migration_postcopy,
        postcopy_resume: false,
        copy_disks,
        disks_port: p.migration_port.for_disks(),
    }
}

/// What a storage migration sends over the capped link: the disks it
/// mirrors and the RAM, each at least once.
pub struct CopyEstimate {
    /// The copied disks' allocated bytes and the guest's RAM.
    pub bytes: u64,
    /// The time `bytes` take at `migration_speed`; None without a cap:
    /// nothing to estimate from before the copy runs.
    pub time: Option<Duration>,
}

impl CopyEstimate {
    pub fn new(xml: &str, disk_bytes: u64, mib_s: u64) -> CopyEstimate {
        let bytes = disk_bytes + storage::memory_bytes(xml).unwrap_or(0);
        CopyEstimate {
            bytes,
            time: (mib_s > 0).then(|| Duration::from_secs_f64(bytes as f64 / (mib_s << 20) as f64)),
        }
    }
}

/// `migration_speed` for people: 0 is libvirt's "no cap".
pub fn bandwidth(mib_s: u64) -> String {
    match mib_s {
        0 => "unlimited".to_owned(),
        b => format!("{b} MiB/s"),
    }
}
