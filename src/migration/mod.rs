//! What a live migration asks of libvirt, before any convergence step: the
//! request built from the parameters, the chosen network and the peer's
//! URI. The network choice ([`network`], [`netif`]) and the convergence
//! policy ([`converge`]) live beside it.

pub mod converge;
pub mod netif;
pub mod network;

use crate::hypervisor::MigrationRequest;
use crate::ocf::{Params, Transport};
use crate::peer::peer_uri;
use network::Choice;

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
    }
}

/// How long copying `bytes` takes at `mib_s` (the disks a storage
/// migration mirrors and the RAM, each sent at least once over the same
/// capped link). None without a cap: nothing to estimate from before the
/// copy runs.
pub fn copy_time(bytes: u64, mib_s: u64) -> Option<std::time::Duration> {
    (mib_s > 0).then(|| std::time::Duration::from_secs_f64(bytes as f64 / (mib_s << 20) as f64))
}

/// `migration_speed` for people: 0 is libvirt's "no cap".
pub fn bandwidth(mib_s: u64) -> String {
    match mib_s {
        0 => "unlimited".to_owned(),
        b => format!("{b} MiB/s"),
    }
}
