//! What a live migration asks of libvirt, before any convergence step: the
//! request built from the parameters, the chosen network and the peer's
//! URI. The network choice ([`network`], [`netif`]) and the convergence
//! policy ([`converge`]) live beside it.

pub mod converge;
pub mod netif;
pub mod network;

use std::time::Duration;

use crate::hypervisor::MigrationRequest;
use crate::ocf::{AutoConverge, Budget, Compression, Params, Transport};
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
    ram_bytes: u64,
) -> MigrationRequest {
    MigrationRequest {
        dconn_uri: peer_uri(p, target),
        data_uri: choice.data_uri(),
        bandwidth: p.migration_speed,
        max_downtime_ms: p.migration_downtime,
        parallel: p.migration_parallel,
        // tls encrypts the RAM copy as well as the control channel.
        tls_host: (p.migration_transport == Transport::Tls).then(|| choice.host().to_owned()),
        auto_converge: p.migration_auto_converge == AutoConverge::Always,
        xbzrle_cache: xbzrle_cache(p, ram_bytes),
        postcopy: p.migration_postcopy,
        postcopy_resume: false,
        copy_disks,
        disks_port: p.migration_port.for_disks(),
    }
}

/// XBZRLE's cache: a quarter of the guest's RAM, within 32-512 MiB. It
/// lives on the source host for the move; a page dirtied again is sent as
/// its difference only while its last copy is still in the cache.
fn xbzrle_cache(p: &Params, ram_bytes: u64) -> Option<u64> {
    let wanted = match p.migration_compression {
        Compression::Xbzrle => true,
        // The admin's cap says the link, not the CPU, is the limit; QEMU
        // refuses XBZRLE next to multifd.
        Compression::Auto => p.migration_speed > 0 && p.migration_parallel <= 1,
        Compression::None => false,
    };
    wanted.then(|| (ram_bytes / 4).clamp(32 << 20, 512 << 20))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xbzrle_where_the_cap_makes_the_link_the_limit() {
        const MIB: u64 = 1 << 20;
        let cache = |extra: &[(&str, &str)], ram_mib: u64| {
            xbzrle_cache(&Params::vm1(extra), ram_mib * MIB).map(|b| b / MIB)
        };
        let capped = ("OCF_RESKEY_migration_speed", "16");
        assert_eq!(cache(&[capped], 128), Some(32));
        assert_eq!(cache(&[capped], 1024), Some(256));
        assert_eq!(cache(&[capped], 65536), Some(512));
        assert_eq!(cache(&[], 1024), None, "no cap: the CPU may be the limit");
        let parallel = ("OCF_RESKEY_migration_parallel", "2");
        assert_eq!(
            cache(&[capped, parallel], 1024),
            None,
            "QEMU refuses it with multifd"
        );
        let on = ("OCF_RESKEY_migration_compression", "xbzrle");
        assert_eq!(cache(&[on], 1024), Some(256));
        let off = ("OCF_RESKEY_migration_compression", "none");
        assert_eq!(cache(&[capped, off], 1024), None);
    }
}
