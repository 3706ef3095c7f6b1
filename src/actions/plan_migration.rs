//! plan-migration: the admin's dry run of a migration; changes nothing.

use std::io::Write;

use crate::error::Error;
use crate::migration::network::{self, Net};
use crate::migration::{bandwidth, request};
use crate::ocf::{OcfRc, Outcome, Params};

/// plan-migration: prints what migrate_to would do, and changes nothing.
pub fn plan_migration(net: &dyn Net, p: &Params, target: &str) -> Result<Outcome, Error> {
    let choice = network::choose(
        net,
        target,
        &p.migration_network_suffix,
        p.migration_transport,
    );
    let mut out = format!(
        "migration of {} to {target}\n  candidate: {}\n  addresses: {}\n",
        p.name,
        choice.candidate,
        if choice.addresses.is_empty() {
            "(none)".to_owned()
        } else {
            choice
                .addresses
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    for c in &choice.checks {
        let (ok, text) = match &c.result {
            Ok(t) => ("ok", t),
            Err(t) => ("FAILED", t),
        };
        out.push_str(&format!(
            "  check: {:<32} {ok}: {text} ({:.1?})\n",
            c.what, c.took
        ));
    }
    let req = request(p, target, &choice);
    let tls = req
        .tls_host
        .as_ref()
        .map(|h| format!(", TLS checked against {h}"))
        .unwrap_or_default();
    out.push_str(&format!(
        "  decision: {choice}\n  control: {} (source libvirtd to target libvirtd)\n  data: {} (QEMU's RAM copy{tls})\n  connections: {}, bandwidth: {}\n  downtime: {} ms, raised up to {} ms if the copy stalls, then auto-converge, {}\n",
        req.dconn_uri,
        req.data_uri,
        req.parallel,
        bandwidth(req.bandwidth),
        req.max_downtime_ms,
        p.migration_downtime_max,
        if req.postcopy {
            "then post-copy"
        } else {
            "no post-copy"
        }
    ));
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
    Ok(Outcome::new(
        OcfRc::Success,
        format!("planned (nothing changed): {choice}"),
    ))
}
