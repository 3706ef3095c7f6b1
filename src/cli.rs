//! The command line: `vmshift <action> [--param value ...]`.
//!
//! Pacemaker calls `server <action>` with parameters in `OCF_RESKEY_*` and
//! no other argument; an admin may pass the same parameters as flags, which
//! then take precedence. A flag the action does not know is the admin's
//! typo: the call ends with exit 2 naming it, rather than running with the
//! other flags dropped and `OCF_RESKEY_*` deciding behind the admin's back.
//! A missing action is 2 as well, an unknown one 3 (OCF_ERR_UNIMPLEMENTED).
//! None of these can reach Pacemaker, which passes the action alone.

use std::ffi::OsString;

use clap::{Arg, ArgAction, ArgMatches, Command};

use crate::actions::Action;
use crate::ocf::{param_docs, short, short_text, Env, OcfRc, Outcome};

/// The exit codes as `--help` and the man page explain them.
pub const EXIT_CODES: [(u8, &str); 7] = [
    (0, "success; monitor: the server is active here"),
    (
        1,
        "generic error: e.g. libvirtd does not answer and no QEMU of the server lives, \
         start did not finish before the deadline or found the server running on the \
         peer, stop could not stop it, a migration \
         failed or was aborted at its deadline (the server still runs on the source)",
    ),
    (2, "usage: no action given"),
    (3, "unknown action"),
    (
        5,
        "not installed here: the domain is unknown and no config is set, config is \
         unreadable, or libvirt.so.0 cannot be loaded",
    ),
    (6, "not configured: a parameter is missing or invalid"),
    (
        7,
        "monitor: the server is cleanly stopped here (shut off or not defined)",
    ),
];

pub const EXIT_REASON_NOTE: &str =
    "Every non-zero exit prints one line 'ocf-exit-reason:<why>' on stderr.";

/// Examples for `--help` and the man page.
pub const EXAMPLES: [&str; 5] = [
    "vmshift monitor --name vm1",
    "vmshift start --name vm1 --config /etc/vmshift/vm1.xml",
    "vmshift plan-migration --name vm1 --target node-b",
    "OCF_RESKEY_name=vm1 OCF_RESKEY_CRM_meta_timeout=90000 vmshift stop",
    "crm_resource --force-check --class ocf --provider vmshift --agent server --option name=vm1",
];

fn after_help() -> String {
    let mut text = String::from("Exit codes (OCF):\n");
    for (code, what) in EXIT_CODES {
        // Wrapped by hand at 80 columns: clap wraps only its own help.
        let mut line = format!("  {code} ");
        for word in what.split(' ') {
            if line.len() + 1 + word.len() > 80 {
                text.push_str(&line);
                text.push('\n');
                line = "    ".to_owned();
            }
            line.push(' ');
            line.push_str(word);
        }
        text.push_str(&line);
        text.push('\n');
    }
    text.push_str(&format!("\n{EXIT_REASON_NOTE}\n\nExamples:\n"));
    for e in EXAMPLES {
        text.push_str(&format!("  {e}\n"));
    }
    text
}

/// One line on what an action does (`--help`, the man page).
pub fn about(action: Action) -> &'static str {
    match action {
        Action::Start => "Boot the server on this node (define it from --config if unknown here)",
        Action::Stop => "Shut the server down (ACPI, then destroy before the deadline)",
        Action::Monitor => "Report whether the server is active on this node (0) or stopped (7)",
        Action::Status => "Same as monitor",
        Action::MigrateTo => "Live-migrate the server to the migration target (--target)",
        Action::MigrateFrom => "Confirm the server arrived on this node",
        Action::MetaData => "Print the OCF meta-data XML",
        Action::ValidateAll => "Check the parameters without touching the server",
        Action::PlanMigration => {
            "Dry run: show the migration network check and the URIs migrate_to would use"
        }
        Action::Watch => {
            "Follow a running migration of the server on this node until it ends (changes nothing)"
        }
    }
}

/// The flag that mirrors an OCF parameter: `migration_speed` is
/// `--migration-speed`, and `--migration_speed` is accepted too.
fn param_args() -> Vec<Arg> {
    let mut args: Vec<Arg> = param_docs()
        .into_iter()
        .map(|d| {
            let long = d.name.replace('_', "-");
            let help = match d.default {
                Some(def) => format!("{} [default: {def}]", d.shortdesc),
                None => d.shortdesc.to_owned(),
            };
            let arg = Arg::new(d.name)
                .long(long.clone())
                .value_name("VALUE")
                .action(ArgAction::Set)
                .help(help);
            if long == d.name {
                arg
            } else {
                arg.alias(d.name)
            }
        })
        .collect();
    args.push(
        Arg::new("target")
            .long("target")
            .value_name("NODE")
            .action(ArgAction::Set)
            .help("The migration target node, as OCF_RESKEY_CRM_meta_migrate_target"),
    );
    args.push(
        Arg::new("timeout")
            .long("timeout")
            .value_name("MS")
            .action(ArgAction::Set)
            .help("The action's deadline in ms, as OCF_RESKEY_CRM_meta_timeout [default: 20000]"),
    );
    args
}

/// The whole command line: every action, for the help and for `usage`.
pub fn command() -> Command {
    command_of(&Action::ALL).subcommand(Command::new("usage").about("Print this help"))
}

/// The command line with the subcommands of `actions` only. A call that
/// names its action, as Pacemaker's always do, gets that one: building
/// the other nine subcommands with their ~40 flags each was half of a
/// monitor's page faults (perf: 100 of 200) and a millisecond of its time.
fn command_of(actions: &[Action]) -> Command {
    let mut cmd = Command::new("vmshift")
        .version(env!("CARGO_PKG_VERSION"))
        .about("OCF resource agent ocf:vmshift:server: runs and live-migrates a libvirt/QEMU server")
        .long_about(
            "OCF resource agent ocf:vmshift:server: runs and live-migrates a libvirt/QEMU server.\n\n\
             Pacemaker runs it as /usr/lib/ocf/resource.d/vmshift/server <action> with the \
             parameters in OCF_RESKEY_<name>. The same actions work by hand, with the \
             parameters as flags (flags win over the environment).",
        )
        .after_help(after_help())
        .subcommand_required(false)
        .disable_help_subcommand(false);
    for &action in actions {
        let sub = Command::new(action.name()).about(about(action));
        let sub = match action {
            Action::MetaData => sub,
            _ => sub.args(param_args()).after_help(after_help()),
        };
        cmd = cmd.subcommand(sub);
    }
    cmd
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Request {
    Run(Action, Env),
    /// Print this text on stdout and exit 0 (help, version).
    Print(String),
    /// End with this outcome without running anything.
    Exit(Outcome),
}

/// Copies the parameter flags into the environment, where the action reads
/// them exactly as it reads Pacemaker's.
fn apply_flags(m: &ArgMatches, env: &mut Env) {
    // meta-data has no flags: `try_get_one` answers Err for it where
    // `get_one` would panic.
    let flag = |id: &str| m.try_get_one::<String>(id).ok().flatten();
    for d in param_docs() {
        if let Some(v) = flag(d.name) {
            env.set(format!("OCF_RESKEY_{}", d.name), v);
        }
    }
    if let Some(v) = flag("timeout") {
        env.set("OCF_RESKEY_CRM_meta_timeout", v);
    }
    if let Some(v) = flag("target") {
        env.set("OCF_RESKEY_CRM_meta_migrate_target", v);
    }
}

pub fn parse(args: Vec<OsString>, mut env: Env) -> Request {
    let first = args.get(1).map(|a| a.to_string_lossy().into_owned());
    let Some(first) = first else {
        return Request::Exit(Outcome::new(
            OcfRc::ErrArgs,
            "no action given; see vmshift --help",
        ));
    };
    if first == "usage" {
        return Request::Print(command().render_long_help().to_string());
    }
    let action = Action::from_name(&first);
    if action.is_none() && !first.starts_with('-') && first != "help" {
        return Request::Exit(Outcome::new(
            OcfRc::ErrUnimplemented,
            format!("unknown action \"{}\"", short(&first)),
        ));
    }
    let cmd = match action {
        Some(action) => command_of(&[action]),
        None => command(),
    };
    match cmd.try_get_matches_from(&args) {
        Ok(m) => match (action, m.subcommand()) {
            (Some(action), Some((_, sub))) => {
                apply_flags(sub, &mut env);
                Request::Run(action, env)
            }
            _ => Request::Print(command().render_long_help().to_string()),
        },
        Err(e) => match (e.kind(), action) {
            (clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion, _) => {
                Request::Print(e.render().to_string())
            }
            (_, action) => Request::Exit(Outcome::new(
                OcfRc::ErrArgs,
                format!(
                    "{}; see vmshift {}--help",
                    short_text(&clap_problem(&e)),
                    action.map(|a| format!("{} ", a.name())).unwrap_or_default()
                ),
            )),
        },
    }
}

/// clap's own first line of an error (`unexpected argument '--nmae'
/// found`), without its "error: " prefix and its usage and tips.
fn clap_problem(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let first = text.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::assert_contains;

    fn args(a: &[&str]) -> Vec<OsString> {
        std::iter::once("vmshift")
            .chain(a.iter().copied())
            .map(OsString::from)
            .collect()
    }

    fn run_env(a: &[&str]) -> (Action, Env) {
        match parse(args(a), Env::default()) {
            Request::Run(action, env) => (action, env),
            other => panic!("{a:?}: {other:?}"),
        }
    }

    #[test]
    fn clap_command_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn flags_become_parameters() {
        let (action, env) = run_env(&[
            "start",
            "--name",
            "vm1",
            "--migration-speed",
            "5",
            "--force_stop",
            "true",
            "--timeout",
            "9000",
        ]);
        assert_eq!(action, Action::Start);
        assert_eq!(env.reskey("name").unwrap(), Some("vm1"));
        assert_eq!(env.reskey("migration_speed").unwrap(), Some("5"));
        assert_eq!(env.reskey("force_stop").unwrap(), Some("true"));
        assert_eq!(env.timeout(), std::time::Duration::from_secs(9));
    }

    #[test]
    fn a_bad_flag_is_an_error_that_names_it() {
        for (a, named) in [
            (&["stop", "--name", "vm1", "--nmae", "vm2"][..], "--nmae"),
            (&["monitor", "--bogus", "x"], "--bogus"),
            (&["migrate_to", "node-b"], "node-b"),
            (&["meta-data", "--name", "x"], "--name"),
        ] {
            match parse(args(a), Env::default()) {
                Request::Exit(o) => {
                    assert_eq!(o.rc, OcfRc::ErrArgs, "{a:?}");
                    assert!(o.reason.contains(named), "{a:?}: {}", o.reason);
                    assert_contains(&o.reason, &format!("vmshift {} --help", a[0]));
                }
                other => panic!("{a:?}: {other:?}"),
            }
        }
        // Long words still give a reason Pacemaker keeps whole.
        let long = format!("--{}", "é".repeat(200));
        for a in [vec!["stop", long.as_str()], vec![&long[2..]], vec![]] {
            if let Request::Exit(o) = parse(args(&a), Env::default()) {
                assert!(
                    o.reason.len() <= crate::ocf::EXIT_REASON_MAX,
                    "{}",
                    o.reason
                );
            } else {
                panic!("{a:?}");
            }
        }
        // What Pacemaker passes: the action alone.
        let (action, env) = run_env(&["meta-data"]);
        assert_eq!(action, Action::MetaData);
        assert_eq!(env.reskey("name").unwrap(), None);
    }

    #[test]
    fn exits() {
        let rc = |a: &[&str]| match parse(args(a), Env::default()) {
            Request::Exit(o) => Some(o.rc),
            Request::Print(_) => Some(OcfRc::Success),
            Request::Run(..) => None,
        };
        assert_eq!(rc(&[]), Some(OcfRc::ErrArgs));
        assert_eq!(rc(&["promote"]), Some(OcfRc::ErrUnimplemented));
        assert_eq!(rc(&["reload"]), Some(OcfRc::ErrUnimplemented));
        assert_eq!(rc(&["usage"]), Some(OcfRc::Success));
        assert_eq!(rc(&["help"]), Some(OcfRc::Success));
        assert_eq!(rc(&["--help"]), Some(OcfRc::Success));
        assert_eq!(rc(&["start", "--help"]), Some(OcfRc::Success));
        assert_eq!(rc(&["--version"]), Some(OcfRc::Success));
        assert_eq!(rc(&["--frobnicate"]), Some(OcfRc::ErrArgs));
    }
}
