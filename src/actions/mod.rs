//! The OCF actions, one file each, and [`run`], the only place that builds
//! backends (the local libvirt, the peer's, the system's network) and
//! hands them to an action. No action imports another.

mod meta_data;
mod migrate_from;
mod migrate_to;
mod monitor;
mod plan_migration;
mod start;
mod stop;
mod validate_all;
mod watch;

use log::warn;

use crate::definition::{Definitions, Policy};
use crate::error::{chain, Error};
use crate::libvirt::{rpc::Rpc, Libvirt};
use crate::migration::network::SystemNet;
use crate::ocf::{Budget, Env, OcfRc, Outcome, Params};
use crate::peer::{self, Peers, Target};
use crate::records::{Records, STATE_DIR};
use crate::utilization::Utilization;

/// How long `watch` follows a move when no --timeout is given.
const WATCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The OCF actions this agent knows (Pacemaker's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Stop,
    Monitor,
    /// An alias of monitor kept for old tools (OCF 1.0 `status`).
    Status,
    MigrateTo,
    MigrateFrom,
    MetaData,
    ValidateAll,
    /// Not an OCF action: the admin's dry run of a migration.
    PlanMigration,
    /// Not an OCF action: the admin's view of a migration in progress.
    Watch,
}

impl Action {
    pub const ALL: [Action; 10] = [
        Action::Start,
        Action::Stop,
        Action::Monitor,
        Action::Status,
        Action::MigrateTo,
        Action::MigrateFrom,
        Action::MetaData,
        Action::ValidateAll,
        Action::PlanMigration,
        Action::Watch,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Monitor => "monitor",
            Action::Status => "status",
            Action::MigrateTo => "migrate_to",
            Action::MigrateFrom => "migrate_from",
            Action::MetaData => "meta-data",
            Action::ValidateAll => "validate-all",
            Action::PlanMigration => "plan-migration",
            Action::Watch => "watch",
        }
    }

    pub fn from_name(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.name() == name)
    }
}

/// Runs one action with the parameters in `env`.
pub fn run(action: Action, env: &Env) -> Outcome {
    crate::ssh::enable();
    let deadline = Budget::new(match action {
        // A move may take many minutes: watch follows it for up to a day
        // unless told otherwise (--timeout).
        Action::Watch => env.timeout_or(WATCH_TIMEOUT),
        _ => env.timeout(),
    });
    let result = match action {
        Action::MetaData => meta_data::meta_data(),
        Action::ValidateAll => validate_all::validate_all(env, &deadline),
        Action::Start => Params::from_env(env).map_err(Error::from).and_then(|p| {
            let hv = Libvirt::new(&p.hypervisor, deadline.at());
            let find = || find_peers(env, &p, &deadline);
            let mut peers = find();
            let defs = definitions(env, &p, &deadline, &find, true);
            start::start(&hv, &p, &deadline, &defs, &mut peers)
        }),
        Action::Stop => match lenient(env) {
            Ok(p) => {
                let hv = Libvirt::new(&p.hypervisor, deadline.at());
                let ask = deadline.stop_ask();
                let probe = Libvirt::new(&p.hypervisor, deadline.at()).per_call(ask);
                let find = || find_peers(env, &p, &deadline);
                let defs = definitions(env, &p, &deadline, &find, false);
                stop::stop(&hv, &probe, &p, &deadline, &defs)
            }
            // A failed stop gets the node fenced: a name no libvirt domain
            // can have names nothing that could run here.
            Err(Error::Param(e)) if e.name_is_impossible() => Ok(Outcome::new(
                OcfRc::Success,
                format!("{}: no such domain can be running", chain(&e)),
            )),
            Err(e) => Err(e),
        },
        Action::Monitor | Action::Status => lenient(env).and_then(|p| {
            let ask = deadline.monitor_ask();
            // libvirt.so, connected on first use: only a libvirtd that
            // wants SASL makes the direct client hand the question to it.
            let libvirt = || Libvirt::new(&p.hypervisor, deadline.at()).per_call(ask);
            let find = || find_peers(env, &p, &deadline);
            let defs = definitions(env, &p, &deadline, &find, false);
            // Asked without loading libvirt.so when the URI allows it.
            match Rpc::for_uri(&p.hypervisor, deadline.at(), ask, || Box::new(libvirt())) {
                Some(rpc) => monitor::monitor(&rpc, &p, &defs),
                None => monitor::monitor(&libvirt(), &p, &defs),
            }
        }),
        Action::MigrateTo => Params::from_env(env).map_err(Error::from).and_then(|p| {
            let target = peer::migration_target(env)?;
            let hv = Libvirt::new(&p.hypervisor, deadline.at());
            let peer = peer_libvirt(&p, target, &deadline);
            let to = Target {
                node: target,
                hv: &peer,
            };
            let records = Records::new(STATE_DIR);
            migrate_to::migrate_to(&hv, &to, &SystemNet, &p, &deadline, &records)
        }),
        Action::MigrateFrom => Params::from_env(env).map_err(Error::from).and_then(|p| {
            let hv = Libvirt::new(&p.hypervisor, deadline.at());
            let source = env.text("OCF_RESKEY_CRM_meta_migrate_source");
            let find = || find_peers(env, &p, &deadline);
            let defs = definitions(env, &p, &deadline, &find, false);
            migrate_from::migrate_from(&hv, &p, source, &deadline, &defs)
        }),
        Action::PlanMigration => Params::from_env(env).map_err(Error::from).and_then(|p| {
            let target = peer::migration_target(env)?;
            let hv = Libvirt::new(&p.hypervisor, deadline.at()).per_call(deadline.preflight());
            let peer = peer_libvirt(&p, target, &deadline);
            let to = Target {
                node: target,
                hv: &peer,
            };
            plan_migration::plan_migration(&hv, &to, &SystemNet, &p, &deadline)
        }),
        Action::Watch => lenient(env).and_then(|p| {
            use std::io::IsTerminal;
            let hv = Libvirt::new(&p.hypervisor, deadline.at()).per_call(deadline.monitor_ask());
            let stdout = std::io::stdout();
            let terminal = stdout.is_terminal();
            let mut screen = watch::Screen {
                out: &mut stdout.lock(),
                terminal,
            };
            watch::watch(
                &hv,
                &Records::new(STATE_DIR),
                &p.name,
                &deadline,
                &mut screen,
            )
        }),
    };
    result.unwrap_or_else(Outcome::from)
}

/// Parameters for stop and monitor: invalid optional parameters are logged
/// and replaced by their defaults. A stop that fails over a typo in, say,
/// `migration_speed` would get the node fenced for nothing.
fn lenient(env: &Env) -> Result<Params, Error> {
    let (params, problems) = Params::from_env_lenient(env)?;
    for p in problems {
        warn!("ignoring an invalid parameter for this action: {p}");
    }
    Ok(params)
}

/// The definitions (and the utilization that follows them) as this
/// action keeps them; `fresh`: the utilization is asked of the cluster
/// even when this node wrote it last (start).
fn definitions<'a>(
    env: &'a Env,
    p: &Params,
    deadline: &Budget,
    find: &'a dyn Fn() -> Peers,
    fresh: bool,
) -> Definitions<'a> {
    let util = Utilization::new(env, p, Records::new(STATE_DIR), *deadline, fresh);
    Definitions::new(Records::new(STATE_DIR), Policy::of(p), find, util)
}

/// The other nodes and their libvirtds.
fn find_peers(env: &Env, p: &Params, deadline: &Budget) -> Peers {
    Peers::find(env, p, deadline, |node| {
        Box::new(peer_libvirt(p, node, deadline))
    })
}

/// The peer node's libvirtd, reached like a migration target
/// (`qemu+<migration_transport>://...`), each call given the migration
/// pre-flight budget: a hung peer must cost an answer early, not the whole
/// action, and a live one can still be asked after a long migration.
/// `node` has passed [`checked_node`].
fn peer_libvirt(p: &Params, node: &str, deadline: &Budget) -> Libvirt {
    Libvirt::new(&peer::peer_uri(p, node), deadline.at()).per_call(deadline.preflight())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_round_trip_names() {
        for a in Action::ALL {
            assert_eq!(Action::from_name(a.name()), Some(a));
        }
        assert_eq!(Action::from_name("promote"), None);
    }
}
