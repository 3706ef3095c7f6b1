//! The agent's error: every way an action can fail, the OCF exit code
//! each one means (Pacemaker's rules, `lib/pengine/unpack.c`), and the one
//! line of reason it gives, its causes appended (the exit reason Pacemaker
//! shows keeps 128 bytes, the log the whole chain).

use std::time::Duration;

use crate::hypervisor::{self, DomainState, ErrorKind, Qemu};
use crate::ocf::{short, short_path, short_text, OcfRc, Outcome, ParamError};
use crate::storage;
use crate::uri;

#[derive(Debug, thiserror::Error)]
#[cfg_attr(test, derive(strum::EnumCount))]
pub enum Error {
    // Each message is the exit reason Pacemaker shows (it keeps 128 bytes):
    // what failed first, names through `short`, the long story in the log.

    // What the admin set: parameters, the config file, node names.
    #[error(transparent)]
    Param(#[from] ParamError),
    #[error(transparent)]
    Storage(#[from] storage::Error),
    #[error("config {} is not a valid domain XML: {}", short_path(.path), short_text(.problem))]
    BadConfig {
        path: std::path::PathBuf,
        problem: String,
    },
    #[error("node name \"{}\" cannot be a host in a libvirt URI", short(.node))]
    BadNode {
        node: String,
        #[source]
        source: uri::HostError,
    },
    #[error("no migration target (OCF_RESKEY_CRM_meta_migrate_target, --target) given")]
    NoTarget,
    // libvirt on this node or a peer.
    #[error("domain {} is not defined on this node and no config is set", short(.name))]
    NotDefined { name: String },
    #[error("cannot {what} domain {}", short(.name))]
    Libvirt {
        what: &'static str,
        name: String,
        #[source]
        source: hypervisor::Error,
    },
    #[error("cannot {what} domain {} for {waited:.0?}", short(.name))]
    Busy {
        what: &'static str,
        name: String,
        waited: Duration,
        #[source]
        source: hypervisor::Error,
    },
    #[error("cannot ask {} about the domain", short(.node))]
    Peer {
        node: String,
        #[source]
        source: hypervisor::Error,
    },
    // start.
    #[error("domain {} is {state}, not running, {waited:.1?} after start", short(.name))]
    NotStarted {
        name: String,
        state: DomainState,
        waited: Duration,
    },
    #[error("domain {} already runs on {} ({state}): not starting a second copy", short(.name), short(.peer))]
    RunningOnPeer {
        name: String,
        peer: String,
        state: DomainState,
    },
    // stop: what it must not do, and what it could not finish.
    #[error("domain {} still in post-copy after {waited:.1?}: stopping it here would kill the guest on the target", short(.name))]
    PostcopyRunning { name: String, waited: Duration },
    #[error("libvirtd does not answer and QEMU pid {pid} of domain {} still runs", short(.name))]
    QemuAlive {
        name: String,
        pid: u32,
        #[source]
        source: hypervisor::Error,
    },
    #[error("post-copy of {} failed ({state} here): virsh migrate --postcopy-resume, or restart it", short(.name))]
    PostcopyFailed { name: String, state: DomainState },
    #[error("QEMU pid {pid} of domain {} still runs, though libvirt says {state}", short(.name))]
    QemuUnknownToLibvirt {
        name: String,
        state: DomainState,
        pid: u32,
    },
    #[error("domain {} is still {state} after destroy", short(.name))]
    StillActive { name: String, state: DomainState },
    #[error("QEMU pid {pid} of domain {} survived SIGKILL", short(.name))]
    QemuSurvived { name: String, pid: u32 },
    #[error("cannot tell whether a QEMU of domain {} runs: {why}", short(.name))]
    QemuUnreadable { name: String, why: String },
    // migrate_to and migrate_from.
    #[error("domain {} runs neither here ({here}) nor on {} ({there})", short(.name), short(.target))]
    NotRunningAnywhere {
        name: String,
        here: DomainState,
        target: String,
        there: DomainState,
    },
    #[error("domain {} is active here and on {} ({there}): not migrating", short(.name), short(.target))]
    ActiveOnBoth {
        name: String,
        target: String,
        there: DomainState,
    },
    #[error("{}: {} {}; not moved", short(.node), short_text(.what), short_text(.why))]
    TargetNotReady {
        node: String,
        what: String,
        why: String,
    },
    #[error("this node: {} {}", short_text(.what), short_text(.why))]
    NodeNotReady { what: String, why: String },
    #[error("copying {mib} MiB at {mib_s} MiB/s takes {need:.0?}, migrate_to has {left:.0?}: raise its timeout or migration_speed")]
    CopyTooLong {
        mib: u64,
        mib_s: u64,
        need: Duration,
        left: Duration,
    },
    #[error("disk {} {} is missing on this node", short(.disk), short_path(.path.as_ref()))]
    DiskMissing { disk: String, path: String },
    #[error("disk {} {} unusable on {}", short(.disk), short_path(.path.as_ref()), short(.node))]
    DiskUnusable {
        disk: String,
        path: String,
        node: String,
        #[source]
        source: hypervisor::Error,
    },
    #[error("live migration of {} to {} failed, domain here: {here}", short(.name), short(.target))]
    MigrationFailed {
        name: String,
        target: String,
        here: String,
        #[source]
        source: hypervisor::Error,
    },
    #[error("migration of {} to {} did not finish; aborted, here {here}", short(.name), short(.target))]
    MigrationTimedOut {
        name: String,
        target: String,
        here: String,
    },
    #[error("migration of {} to {} stuck for {} s; aborted, here {here}", short(.name), short(.target), .quiet.as_secs())]
    MigrationStalled {
        name: String,
        target: String,
        quiet: Duration,
        here: String,
    },
    #[error("disk copy to {} lagged {}'s writes; aborted, here {here}", short(.target), short(.name))]
    DiskCopyBehind {
        name: String,
        target: String,
        here: String,
    },
    #[error("domain {} did not arrive from {}: {state} here after {waited:.1?}", short(.name), short(.from))]
    NotArrived {
        name: String,
        from: String,
        state: DomainState,
        waited: Duration,
    },
}

impl Error {
    /// libvirt says the domain is `state` (stopped): the error that is,
    /// given what the process table shows, if a QEMU of it still runs or
    /// cannot be ruled out. None when nothing of it is left.
    pub fn stopped_but(name: &str, state: DomainState, qemu: Qemu) -> Option<Error> {
        match qemu {
            Qemu::Alive(pid) => Some(Error::QemuUnknownToLibvirt {
                name: name.into(),
                state,
                pid,
            }),
            Qemu::Unreadable(why) => Some(Error::QemuUnreadable {
                name: name.into(),
                why,
            }),
            Qemu::Gone | Qemu::Unseen => None,
        }
    }

    pub fn rc(&self) -> OcfRc {
        match self {
            Error::Param(e) => e.rc(),
            // Unknown here but maybe defined on the peer: a node-local
            // problem (5 bans only this node; 6 would stop it everywhere).
            Error::NotDefined { .. } => OcfRc::ErrInstalled,
            // libvirt.so.0 missing or too old on this node (OCF: "a
            // required component is missing"): the same, node-local.
            Error::Libvirt { source, .. } | Error::Peer { source, .. }
                if source.kind() == ErrorKind::NotInstalled =>
            {
                OcfRc::ErrInstalled
            }
            Error::BadConfig { .. } => OcfRc::ErrConfigured,
            // A disk, network, bridge, pool, emulator or the memory this
            // node lacks: the server may start on another one.
            Error::DiskMissing { .. } | Error::NodeNotReady { .. } => OcfRc::ErrInstalled,
            // Everything else is soft: Pacemaker may recover in place or
            // move; none of it proves the configuration wrong everywhere
            // (a disk layout the move refuses is 1, not 6: the same
            // parameters suit a server with other disks).
            Error::Libvirt { .. }
            | Error::Storage(_)
            | Error::DiskUnusable { .. }
            | Error::CopyTooLong { .. }
            | Error::Busy { .. }
            | Error::NotStarted { .. }
            | Error::StillActive { .. }
            | Error::PostcopyRunning { .. }
            | Error::PostcopyFailed { .. }
            | Error::QemuAlive { .. }
            | Error::QemuUnknownToLibvirt { .. }
            | Error::QemuUnreadable { .. }
            | Error::QemuSurvived { .. }
            | Error::RunningOnPeer { .. }
            | Error::NoTarget
            | Error::BadNode { .. }
            | Error::Peer { .. }
            | Error::NotRunningAnywhere { .. }
            | Error::ActiveOnBoth { .. }
            | Error::MigrationFailed { .. }
            | Error::MigrationTimedOut { .. }
            | Error::MigrationStalled { .. }
            | Error::DiskCopyBehind { .. }
            | Error::TargetNotReady { .. }
            | Error::NotArrived { .. } => OcfRc::ErrGeneric,
        }
    }
}

/// The error and its sources on one line, each cause once (the messages
/// do not repeat their source; see cloud-hypervisor's error-chain rule).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(c.to_string().trim());
        cause = c.source();
    }
    text
}

impl From<Error> for Outcome {
    fn from(e: Error) -> Self {
        Outcome::new(e.rc(), chain(&e))
    }
}

pub(crate) fn hv_err(what: &'static str, name: &str) -> impl FnOnce(hypervisor::Error) -> Error {
    let name = name.to_owned();
    move |source| Error::Libvirt { what, name, source }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::fake::timeout;
    use crate::hypervisor::DomainState;
    use crate::ocf::{Env, Params};
    use std::collections::HashSet;
    use std::mem::discriminant;
    use std::time::Duration;
    use strum::EnumCount;

    /// Every reason vmshift can give Pacemaker, with the longest names,
    /// nodes, paths, states, times and pids there can be (a 247-byte name
    /// of two-byte characters, a 253-byte host name, PID_MAX_LIMIT).
    fn worst_cases() -> Vec<Error> {
        let name = "é".repeat(123);
        let node = [
            "n".repeat(63),
            "o".repeat(63),
            "d".repeat(63),
            "e".repeat(61),
        ]
        .join(".");
        let path = std::path::PathBuf::from(format!("/{}/vm.xml", "p".repeat(4000)));
        let state = DomainState::ShuttingDown;
        let waited = Duration::from_secs(99_999);
        let pid = 4_194_304;
        let lv = || timeout("get completed job stats (a libvirtd that does not answer)");
        let mut all = vec![
            Error::NotDefined { name: name.clone() },
            Error::Param(ParamError::ConfigNames {
                name: name.clone(),
                found: name.clone(),
            }),
            Error::Libvirt {
                what: "set the maximum downtime of",
                name: name.clone(),
                source: lv(),
            },
            Error::NotStarted {
                name: name.clone(),
                state,
                waited,
            },
            Error::Busy {
                what: "start",
                name: name.clone(),
                waited,
                source: hypervisor::Error::new(
                    ErrorKind::Busy,
                    "libvirt start: job lock held by monitor=remoteDispatchDomainMigratePerform3Params",
                ),
            },
            Error::StillActive {
                name: name.clone(),
                state,
            },
            Error::Storage(storage::Error::LocalNotCopied {
                target: name.clone(),
            }),
            Error::Storage(storage::Error::UnsafeCache {
                target: name.clone(),
                cache: "writethrough".into(),
            }),
            Error::Storage(storage::Error::Xml("x".repeat(500))),
            Error::CopyTooLong {
                mib: u64::MAX >> 20,
                mib_s: 1,
                need: Duration::from_secs(u64::MAX >> 20),
                left: waited,
            },
            Error::DiskMissing {
                disk: name.clone(),
                path: path.to_string_lossy().into_owned(),
            },
            Error::DiskUnusable {
                disk: name.clone(),
                path: path.to_string_lossy().into_owned(),
                node: node.clone(),
                source: lv(),
            },
            Error::PostcopyRunning {
                name: name.clone(),
                waited,
            },
            Error::PostcopyFailed {
                name: name.clone(),
                state,
            },
            Error::QemuAlive {
                name: name.clone(),
                pid,
                source: lv(),
            },
            Error::QemuUnknownToLibvirt {
                name: name.clone(),
                state: DomainState::Undefined,
                pid,
            },
            Error::QemuUnreadable {
                name: name.clone(),
                why: "/proc did not answer in 1s (a process in D state?)".into(),
            },
            Error::QemuSurvived {
                name: name.clone(),
                pid,
            },
            Error::BadConfig {
                path: path.clone(),
                problem: "x".repeat(500),
            },
            Error::RunningOnPeer {
                name: name.clone(),
                peer: node.clone(),
                state,
            },
            Error::NoTarget,
            Error::BadNode {
                node: node.clone() + "?command=/bin/sh",
                source: uri::check_host("a?").unwrap_err(),
            },
            Error::Peer {
                node: node.clone(),
                source: lv(),
            },
            Error::NotRunningAnywhere {
                name: name.clone(),
                here: state,
                target: node.clone(),
                there: state,
            },
            Error::ActiveOnBoth {
                name: name.clone(),
                target: node.clone(),
                there: state,
            },
            Error::MigrationFailed {
                name: name.clone(),
                target: node.clone(),
                here: DomainState::PmSuspended.to_string(),
                source: lv(),
            },
            Error::MigrationTimedOut {
                name: name.clone(),
                target: node.clone(),
                here: format!("QEMU pid {pid} alive"),
            },
            Error::MigrationStalled {
                name: name.clone(),
                target: node.clone(),
                quiet: waited,
                here: format!("QEMU pid {pid} alive"),
            },
            Error::DiskCopyBehind {
                name: name.clone(),
                target: node.clone(),
                here: format!("QEMU pid {pid} alive"),
            },
            Error::NotArrived {
                name: name.clone(),
                from: node.clone(),
                state,
                waited,
            },
            Error::TargetNotReady {
                node: node.clone(),
                what: format!("emulator {}", path.display()),
                why: format!("cannot run here: {}", "x".repeat(300)),
            },
            Error::NodeNotReady {
                what: format!("network {name}"),
                why: "is inactive; see start_resources".into(),
            },
        ];
        // Every parameter error, from the parser itself: each parameter
        // given a long hostile value, every name libvirt refuses, and the
        // config file problems.
        let long = format!("{}?command=/bin/sh;{}", "é".repeat(100), "x".repeat(300));
        for key in crate::ocf::PARAM_NAMES.into_iter().filter(|&k| k != "name") {
            let env: Env = [
                ("OCF_RESKEY_name", "vm1"),
                (&*format!("OCF_RESKEY_{key}"), &*long),
            ]
            .into_iter()
            .collect();
            let (_, problems) = Params::from_env_lenient(&env).unwrap();
            all.extend(problems.into_iter().map(Error::from));
        }
        for bad in [&*"é".repeat(124), "a/b", "a\nb", "a\u{1}b"] {
            let env: Env = [("OCF_RESKEY_name", bad)].into_iter().collect();
            all.push(Params::from_env(&env).unwrap_err().into());
        }
        let mut env: Env = [("OCF_RESKEY_migration_postcopy", "true")]
            .into_iter()
            .collect();
        env.set("OCF_RESKEY_name", "vm1");
        env.set("OCF_RESKEY_migration_parallel", "64");
        env.set("OCF_RESKEY_migration_compression", "xbzrle");
        env.set("OCF_RESKEY_migration_downtime", "2000000");
        env.set("OCF_RESKEY_migration_downtime_max", "1999999");
        all.extend(
            Params::from_env_lenient(&env)
                .unwrap()
                .1
                .into_iter()
                .map(Error::from),
        );
        all.push(ParamError::MissingName.into());
        all.push(
            ParamError::NotUtf8 {
                name: "migration_network_suffix".into(),
            }
            .into(),
        );
        for why in [
            crate::ocf::ConfigProblem::NotRegular("directory"),
            crate::ocf::ConfigProblem::NotRoot(u32::MAX),
            crate::ocf::ConfigProblem::Writable(0o7777),
            crate::ocf::ConfigProblem::TooLarge,
            crate::ocf::ConfigProblem::Slow(Duration::from_secs(2)),
            crate::ocf::ConfigProblem::NotText,
        ] {
            all.push(
                ParamError::ConfigRefused {
                    path: path.clone(),
                    why,
                }
                .into(),
            );
        }
        all.push(
            ParamError::ConfigNotDomain {
                path: path.clone(),
                why: "its root element is not <domain>",
            }
            .into(),
        );
        all.push(
            ParamError::ConfigUnreadable {
                path,
                source: std::io::Error::from_raw_os_error(libc::ENAMETOOLONG),
            }
            .into(),
        );
        all
    }

    #[test]
    fn every_reason_fits_pacemakers_128_bytes_decisive_part_first() {
        let all = worst_cases();
        // A new variant fails here until it has a worst case below.
        let seen: HashSet<_> = all.iter().map(discriminant).collect();
        assert_eq!(seen.len(), Error::COUNT, "a variant has no worst case");
        let mut params = HashSet::new();
        for e in &all {
            // The message of our own, without its causes, fits whole: what
            // failed is never what Pacemaker cuts off.
            let own = e.to_string();
            assert!(
                own.len() <= crate::ocf::EXIT_REASON_MAX,
                "{} bytes: {own}",
                own.len()
            );
            // With the causes, the printed reason is cut to fit.
            let printed = crate::ocf::exit_reason(&chain(e)).into_owned();
            assert!(printed.len() <= crate::ocf::EXIT_REASON_MAX, "{printed}");
            let lead: String = own.chars().take(40).collect();
            assert!(printed.starts_with(&lead), "{printed}");
            if let Error::Param(p) = e {
                params.insert(discriminant(p));
            }
        }
        assert_eq!(
            params.len(),
            ParamError::COUNT,
            "a ParamError has no worst case"
        );
    }
}
