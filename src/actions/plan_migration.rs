//! plan-migration: the admin's dry run of a migration; changes nothing.

use std::io::Write;

use crate::definition;
use crate::error::{chain, Error};
use crate::hypervisor::{mib, Hypervisor};
use crate::migration::converge::qemu_limit_ms;
use crate::migration::network::Net;
use crate::migration::{bandwidth, choose_network, request, CopyEstimate};
use crate::ocf::budget::PROGRESS_TIMEOUT_MIN;
use crate::ocf::{AutoConverge, Budget, OcfRc, Outcome, Params};
use crate::peer::Target;
use crate::preflight::{self, Check, Needs};
use crate::storage;

/// plan-migration: prints what migrate_to would do, and changes nothing.
/// A disk layout migrate_to would refuse, or a target that lacks what the
/// server needs, is printed, and is the result.
pub fn plan_migration(
    local: &dyn Hypervisor,
    to: &Target,
    net: &dyn Net,
    p: &Params,
    deadline: &Budget,
) -> Result<Outcome, Error> {
    let (peer, target) = (to.hv, to.node);
    let choice = choose_network(net, p, target, deadline);
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
        push_check(&mut out, "check", c);
    }
    // The disks as migrate_to decides them: what is copied, what is taken
    // as shared, or the refusal migrate_to would give.
    let mut copy_disks = Vec::new();
    let mut refused = None;
    let xml = local.xml(&p.name);
    let ram_bytes = xml.as_deref().ok().and_then(storage::memory_bytes);
    match xml {
        Err(e) => out.push_str(&format!(
            "  disks: cannot read the domain here: {}\n",
            chain(&e)
        )),
        Ok(xml) => match storage::decide(&xml, p.migration_storage) {
            Ok(disks) => {
                if disks.is_empty() {
                    out.push_str("  disks: none\n");
                }
                let mut disk_bytes = 0;
                for (line, d) in storage::describe(&disks).iter().zip(&disks) {
                    let size = match local.disk_allocation(&p.name, &d.target) {
                        Ok(b) => {
                            disk_bytes += if d.copy { b } else { 0 };
                            format!("{:.1} MiB allocated", mib(b))
                        }
                        Err(e) => format!("size unknown: {}", chain(&e)),
                    };
                    out.push_str(&format!("  disk: {line}, {size}\n"));
                }
                // What migrate_to asks the target, never starting anything.
                if let Ok(needs) = Needs::of(&xml) {
                    let checks = preflight::checks(peer, &needs, false, Some(&p.name));
                    for c in &checks {
                        push_check(&mut out, "target", c);
                    }
                    out.push_str(&format!(
                        "  definitions: {}\n",
                        definition::side_by_side(local, peer, &p.name, target)
                    ));
                    refused = preflight::first_failure(&checks).map(|(what, why)| {
                        Error::TargetNotReady {
                            node: target.into(),
                            what,
                            why,
                        }
                    });
                }
                copy_disks = storage::copied(&disks);
                if !copy_disks.is_empty() {
                    let copy = CopyEstimate::new(&xml, disk_bytes, p.migration_speed);
                    out.push_str(&format!(
                        "  storage copy: {:.1} MiB with the RAM, {}\n",
                        mib(copy.bytes),
                        match copy.time {
                            Some(t) => format!("about {t:.1?} at {} MiB/s", p.migration_speed),
                            None => "time not estimated (no migration_speed)".to_owned(),
                        }
                    ));
                }
            }
            Err(e) => {
                out.push_str(&format!("  disks: REFUSED: {e}\n"));
                refused = Some(e.into());
            }
        },
    }
    let req = request(p, target, &choice, copy_disks, ram_bytes.unwrap_or(0));
    let tls = req
        .tls_host
        .as_ref()
        .map(|h| format!(", TLS checked against {h}"))
        .unwrap_or_default();
    out.push_str(&format!(
        "  decision: {choice}\n  control: {} (source libvirtd to target libvirtd)\n  data: {} (QEMU's RAM copy{tls}; the target listens on {})\n  connections: {}, bandwidth: {}\n  downtime: {} ms (QEMU's limit {} ms), raised up to {} ms if the copy stalls, {}, {}\n  compression: {}\n  no progress: {}\n",
        req.dconn_uri,
        req.data_uri,
        p.migration_port,
        req.parallel,
        bandwidth(req.bandwidth),
        req.max_downtime_ms,
        qemu_limit_ms(req.max_downtime_ms),
        p.migration_downtime_max,
        match p.migration_auto_converge {
            AutoConverge::Always => "auto-converge from the start",
            AutoConverge::Stalled => "then a new copy with auto-converge",
            AutoConverge::Never => "no auto-converge",
        },
        if req.postcopy {
            "then post-copy"
        } else {
            "no post-copy"
        },
        match req.xbzrle_cache {
            Some(cache) => format!("XBZRLE, {:.0} MiB cache on this node", mib(cache)),
            None => "none".into(),
        },
        progress_rule(p)
    ));
    if !req.copy_disks.is_empty() {
        out.push_str(&format!(
            "  copied disks: {} (QEMU's NBD mirror to the target, on the data host)\n",
            req.copy_disks.join(" ")
        ));
    }
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
    if let Some(e) = refused {
        return Err(e);
    }
    Ok(Outcome::new(
        OcfRc::Success,
        format!("planned (nothing changed): {choice}"),
    ))
}

/// `  check: connect 10.251.11.2:22 ... ok: ... (1.2ms)`
fn push_check(out: &mut String, label: &str, c: &Check) {
    let (ok, text) = match &c.result {
        Ok(t) => ("ok", t),
        Err(t) => ("FAILED", t),
    };
    out.push_str(&format!(
        "  {label}: {:<32} {ok}: {text} ({:.1?})\n",
        c.what, c.took
    ));
}

/// `migration_progress_timeout` as migrate_to will apply it; its default
/// comes from migrate_to's own timeout, which only that action knows.
fn progress_rule(p: &Params) -> String {
    let then = if p.migration_postcopy {
        "post-copy"
    } else {
        "aborted, the server staying here"
    };
    match p.migration_progress_timeout {
        Some(0) => "never ended early (migration_progress_timeout=0)".into(),
        Some(s) => format!("after {s} s without progress, {then}"),
        None => format!(
            "after a quarter of migrate_to's timeout (at least {} s) without progress, {then}",
            PROGRESS_TIMEOUT_MIN.as_secs()
        ),
    }
}
