//! vmshift: the OCF resource agent `ocf:vmshift:server` for libvirt/QEMU
//! servers on a Pacemaker cluster of two or more nodes.
//!
//! Modules, from the top down (every import points down):
//! [`cli`] (argv to an action), [`actions`] (one file per OCF action, and
//! the only place that builds backends), [`migration`] (the request, the
//! network choice, the convergence policy), [`definition`] (one definition
//! on every node), [`peer`] (the other nodes, their URIs, one question put
//! to all at once), [`utilization`] (Pacemaker's utilization from the
//! definition), [`cluster`] (what Pacemaker says), [`error`] (the agent's
//! error, its exit code and reason), [`preflight`] (what a node must have
//! before a server runs there), [`storage`] (a domain's disks: which a move
//! copies, which it refuses), [`logging`], [`ocf`] (the contract with
//! Pacemaker: exit codes, parameters, budget, meta-data), [`libvirt`] (the
//! real backend, the only module that names `virt`), [`moves`] (what a
//! running migrate_to keeps for `vmshift watch`), [`ssh`] (the ssh that
//! qemu+ssh connections to peers run: one shared connection per peer),
//! [`uri`] (host names and libvirt URIs), [`hypervisor`] (the traits and
//! their types), [`records`] (the small files kept in /run/vmshift),
//! [`bounded`] (a blocking call on a worker thread, waited for until an
//! instant), and, in test builds, [`testing`] (shared assertions).

pub mod actions;
pub(crate) mod bounded;
pub mod cli;
pub(crate) mod cluster;
pub(crate) mod definition;
pub(crate) mod error;
pub(crate) mod hypervisor;
pub(crate) mod libvirt;
pub(crate) mod logging;
pub mod migration;
pub(crate) mod moves;
pub mod ocf;
pub mod peer;
pub(crate) mod preflight;
pub(crate) mod records;
pub(crate) mod ssh;
pub(crate) mod storage;
#[cfg(test)]
pub(crate) mod testing;
pub mod uri;
pub(crate) mod utilization;

use std::ffi::OsString;
use std::io::Write;

use crate::actions::Action;
use crate::cli::Request;
use crate::ocf::{Env, OcfRc, Outcome};

/// Runs the agent for `args` and `env` and returns the exit code. Every
/// non-zero code goes out with one `ocf-exit-reason:` line on stderr, which
/// Pacemaker shows in `crm_mon`.
pub fn main_with(args: Vec<OsString>, env: Env) -> u8 {
    // libvirt runs this binary as its ssh for the peers' URIs.
    if args.first().is_some_and(|a| ssh::invoked_as_ssh(a)) {
        return ssh::exec(args.into_iter().skip(1));
    }
    logging::init(&env);
    let prefix = env
        .text("OCF_EXIT_REASON_PREFIX")
        .unwrap_or("ocf-exit-reason:")
        .to_owned();
    let (name, outcome) = match cli::parse(args, env) {
        Request::Print(text) => {
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
            return OcfRc::Success as u8;
        }
        Request::Exit(outcome) => ("vmshift", outcome),
        Request::Run(action, env) => (action.name(), actions::run(action, &env)),
    };
    let Outcome { rc, reason } = outcome;
    // One line per action saying what it decided and why; meta-data decides
    // nothing, and Pacemaker asks for it often.
    if name == Action::MetaData.name() {
        log::debug!("{name}: {reason} -> {rc}");
    } else if rc == OcfRc::Success || rc == OcfRc::NotRunning {
        log::info!("{name}: {reason} -> {rc}");
    } else {
        log::error!("{name}: {reason} -> {rc}");
    }
    if rc != OcfRc::Success {
        let _ = writeln!(
            std::io::stderr().lock(),
            "{prefix}{}",
            ocf::exit_reason(&logging::for_pacemaker(&reason))
        );
    }
    // Syslog's queue gets a moment to drain; a stuck /dev/log costs this
    // much and no more.
    logging::finish(std::time::Duration::from_millis(300));
    rc as u8
}

/// Makes a panic end the process with OCF_ERR_GENERIC and a reason instead
/// of Rust's exit code 101, which Pacemaker would read as an unknown error.
/// Only the main thread's panic ends the action: a libvirt worker thread
/// that panics has already been given up on or returns an error.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let main = std::thread::current().name() == Some("main");
        let _ = writeln!(
            std::io::stderr().lock(),
            "{}{}",
            if main { "ocf-exit-reason:" } else { "" },
            ocf::exit_reason(&logging::for_pacemaker(&format!("internal error: {info}")))
        );
        if main {
            std::process::exit(OcfRc::ErrGeneric as i32);
        }
    }));
}
