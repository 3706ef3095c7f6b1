//! validate-all: every parameter checked, and the config file, without
//! libvirtd.

use log::warn;

use crate::error::{chain, Error};
use crate::migration::network::{qemu_conf_ports, QEMU_CONF};
use crate::ocf::{config, Budget, Env, MigrationPort, OcfRc, Outcome, Params};
use crate::storage;

/// validate-all: syntax of every parameter (6), then what this node must
/// have (5: `config` readable). It does not contact libvirt: validation
/// must answer even where libvirtd is down, as `crm_resource --validate`
/// is used to debug exactly that.
pub fn validate_all(env: &Env, deadline: &Budget) -> Result<Outcome, Error> {
    let (p, problems) = Params::from_env_lenient(env)?;
    // Every rejected parameter is named, one log line each, so an admin
    // running `crm_resource --validate` fixes them all in one go.
    let mut errors: Vec<Error> = problems.into_iter().map(Error::from).collect();
    if let Some(xml) = p.read_config(deadline.config_read()) {
        match xml {
            Ok(xml) => {
                errors.extend(config::check_name(&p.name, &xml).err().map(Error::from));
                // A disk layout migrate_to would refuse is said now; it is
                // a warning, not a failure: the server starts and runs,
                // only its live migration would be refused.
                match storage::decide(&xml, p.migration_storage) {
                    Err(e) => warn!("validate-all: live migration would be refused: {e}"),
                    // A disk each node keeps its own copy of is only as
                    // new there as the last move: a failover (the server
                    // started on the other node after this one died) boots
                    // that old copy.
                    Ok(disks) => {
                        let copied = storage::copied(&disks);
                        if !copied.is_empty() {
                            warn!("validate-all: disks {} are copied on each move, not replicated: a failover start on the other node boots the copy of the last move", copied.join(" "));
                        }
                    }
                }
            }
            Err(e) => errors.push(e.into()),
        }
    }
    if let MigrationPort::Range(first, last) = p.migration_port {
        // The range is the target's qemu.conf's to keep: vmshift only
        // probes it. The nodes are configured alike, so this node's file
        // says what the others probably hold.
        let conf = std::fs::read_to_string(QEMU_CONF).unwrap_or_default();
        let (min, max) = qemu_conf_ports(&conf);
        if (min, max) != (first, last) {
            warn!("validate-all: migration_port={first}-{last} but {QEMU_CONF} here gives QEMU {min}-{max} (migration_port_min/max): set the same range on every node, or the firewall drops the moves");
        }
    }
    if errors.is_empty() {
        return Ok(Outcome::new(OcfRc::Success, "parameters are valid"));
    }
    for e in &errors {
        log::error!("validate-all: {}", chain(e));
    }
    // A configuration error anywhere (6) outranks this node's problem (5),
    // and leads the reason: Pacemaker shows its first 128 bytes, the log
    // has every problem.
    errors.sort_by_key(|e| e.rc() != OcfRc::ErrConfigured);
    let rc = errors[0].rc();
    let mut reason = chain(&errors[0]);
    if errors.len() > 1 {
        reason = format!("{} problems, first: {reason}", errors.len());
    }
    Ok(Outcome::new(rc, reason))
}
