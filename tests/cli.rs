//! Black-box tests of the `vmshift` binary that need no libvirtd: the OCF
//! contract (exit codes, exit reasons, meta-data) as Pacemaker and
//! ocf-tester see it. Backend states come from libvirt's in-process
//! `test:///default` driver, which starts every connection with one running
//! domain called "test".

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_vmshift");

/// Runs the binary with a clean environment plus `env`.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HA_LOGFACILITY", "none")
        .envs(env.iter().copied())
        .output()
        .expect("run vmshift")
}

fn rc(o: &Output) -> i32 {
    o.status.code().expect("exited, not killed")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every non-zero exit carries exactly one `ocf-exit-reason:` line; a zero
/// exit carries none.
fn assert_reason(o: &Output) {
    let n = stderr(o)
        .lines()
        .filter(|l| l.starts_with("ocf-exit-reason:"))
        .count();
    let want = usize::from(rc(o) != 0);
    assert_eq!(n, want, "rc {} stderr:\n{}", rc(o), stderr(o));
}

fn check(args: &[&str], env: &[(&str, &str)], want: i32) -> Output {
    let o = run(args, env);
    assert_eq!(rc(&o), want, "{args:?} {env:?}\nstderr:\n{}", stderr(&o));
    assert_reason(&o);
    o
}

const TEST: &[(&str, &str)] = &[
    ("OCF_RESKEY_hypervisor", "test:///default"),
    ("OCF_RESKEY_CRM_meta_timeout", "5000"),
];

#[test]
fn meta_data_is_the_committed_document() {
    let o = check(&["meta-data"], &[], 0);
    let file = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("ocf-metadata.xml"))
        .expect("read ocf-metadata.xml");
    assert_eq!(o.stdout, file);
    assert!(String::from_utf8_lossy(&o.stdout)
        .contains("<!DOCTYPE resource-agent SYSTEM \"ra-api-1.dtd\">"));
}

#[test]
fn meta_data_validates_against_dtd_and_rng() {
    let xml = Path::new(env!("CARGO_MANIFEST_DIR")).join("ocf-metadata.xml");
    let dir = "/usr/share/resource-agents";
    // What ocf-tester does: the agent's output piped into `xmllint --valid -`
    // run in the DTD's directory, so "ra-api-1.dtd" resolves there.
    let meta = run(&["meta-data"], &[]).stdout;
    let mut child = Command::new("xmllint")
        .args(["--noout", "--valid", "-"])
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("xmllint (libxml2-utils) is installed");
    child.stdin.take().unwrap().write_all(&meta).unwrap();
    let dtd = child.wait_with_output().unwrap();
    assert!(dtd.status.success(), "{}", stderr(&dtd));
    let rng = Command::new("xmllint")
        .args(["--noout", "--relaxng", "metadata.rng"])
        .arg(&xml)
        .current_dir(dir)
        .output()
        .expect("xmllint");
    assert!(rng.status.success(), "{}", stderr(&rng));
}

#[test]
fn usage_and_unknown_actions() {
    check(&[], &[], 2);
    for a in ["promote", "demote", "reload", "notify-me"] {
        check(&[a], TEST, 3);
    }
    check(&["usage"], &[], 0);
    check(&["help"], &[], 0);
    let o = check(&["--help"], &[], 0);
    let help = String::from_utf8_lossy(&o.stdout);
    for word in [
        "migrate_to",
        "validate-all",
        "Exit codes",
        "ocf-exit-reason",
    ] {
        assert!(help.contains(word), "--help lacks {word}");
    }
    let o = check(&["stop", "--help"], &[], 0);
    assert!(String::from_utf8_lossy(&o.stdout).contains("--force-stop"));
}

#[test]
fn validate_all() {
    check(&["validate-all"], &[("OCF_RESKEY_name", "vm1")], 0);
    check(&["validate-all"], &[], 6);
    for (k, v) in [
        ("OCF_RESKEY_migration_speed", "fast"),
        ("OCF_RESKEY_migration_transport", "rsh"),
        ("OCF_RESKEY_migration_downtime", "-5"),
        ("OCF_RESKEY_force_stop", "perhaps"),
        ("OCF_RESKEY_name", "a/b"),
    ] {
        let o = check(&["validate-all"], &[("OCF_RESKEY_name", "vm1"), (k, v)], 6);
        let param = k.trim_start_matches("OCF_RESKEY_");
        assert!(stderr(&o).contains(param), "{k}: {}", stderr(&o));
    }
    check(
        &["validate-all"],
        &[
            ("OCF_RESKEY_name", "vm1"),
            ("OCF_RESKEY_config", "/nonexistent/vm1.xml"),
        ],
        5,
    );
    // Every rejected parameter is explained, each on a line of its own in
    // the log; the exit reason (128 bytes in crm_mon) counts them and
    // leads with a configuration error (6) rather than this node's (5).
    let o = check(
        &["validate-all"],
        &[
            ("OCF_RESKEY_name", "vm1"),
            ("OCF_RESKEY_migration_speed", "fast"),
            ("OCF_RESKEY_force_stop", "perhaps"),
            ("OCF_RESKEY_config", "/nonexistent/vm1.xml"),
        ],
        6,
    );
    let err = stderr(&o);
    let log_lines = err
        .lines()
        .filter(|l| l.contains("ERROR: validate-all: ") && !l.contains(" -> 6"))
        .count();
    assert_eq!(log_lines, 3, "{err}");
    let reason = err
        .lines()
        .find(|l| l.starts_with("ocf-exit-reason:"))
        .unwrap();
    assert!(
        reason.starts_with("ocf-exit-reason:3 problems, first: migration_speed="),
        "{reason}"
    );
    assert!(reason.len() <= "ocf-exit-reason:".len() + 128, "{reason}");
    for word in ["migration_speed", "force_stop", "config"] {
        assert!(err.contains(word), "{err}");
    }
}

#[test]
fn flags_mirror_parameters() {
    check(&["validate-all", "--name", "vm1"], &[], 0);
    check(
        &["validate-all", "--name", "vm1", "--migration-speed", "x"],
        &[],
        6,
    );
    // A flag the action does not know is the admin's typo: exit 2 naming
    // it, never a run with the other flags silently dropped (here the
    // environment's valid name would have made it 0).
    let o = check(
        &["validate-all", "--name", "x/y", "--nonsense"],
        &[("OCF_RESKEY_name", "vm1")],
        2,
    );
    assert!(stderr(&o).contains("'--nonsense'"), "{}", stderr(&o));
}

#[test]
fn stop_of_a_name_no_domain_can_have_is_0_not_a_fence() {
    // A failed stop gets the node fenced; libvirt refuses each of these
    // names, so nothing by them can run. No libvirt is asked (the URI
    // points nowhere).
    let nowhere = (
        "OCF_RESKEY_hypervisor",
        "qemu+unix:///system?socket=/nonexistent",
    );
    for name in ["", "a/b", "a\nb", &"x".repeat(248)] {
        let o = check(&["stop"], &[("OCF_RESKEY_name", name), nowhere], 0);
        assert!(
            stderr(&o).contains("no such domain can be running"),
            "{}",
            stderr(&o)
        );
    }
    let o = Command::new(BIN)
        .arg("stop")
        .env_clear()
        .env("HA_LOGFACILITY", "none")
        .env("OCF_RESKEY_name", std::ffi::OsStr::from_bytes(b"vm\xff1"))
        .output()
        .unwrap();
    assert_eq!(rc(&o), 0, "{}", stderr(&o));
    // start and validate-all still refuse them (6).
    check(&["validate-all"], &[("OCF_RESKEY_name", "a/b")], 6);
}

#[test]
fn monitor_maps_libvirt_states() {
    let with = |name| [TEST, &[("OCF_RESKEY_name", name)]].concat();
    check(&["monitor"], &with("test"), 0);
    check(&["status"], &with("test"), 0);
    check(&["monitor"], &with("no-such-domain"), 7);
    // Stopping something that is not there succeeds (OCF: idempotent stop).
    check(&["stop"], &with("no-such-domain"), 0);
    // start of an unknown domain without config: not installed here.
    check(&["start"], &with("no-such-domain"), 5);
    check(&["start"], &with("test"), 0);
}

#[test]
fn unreachable_libvirt_is_an_error_not_stopped() {
    let env = [
        ("OCF_RESKEY_name", "vm1"),
        (
            "OCF_RESKEY_hypervisor",
            "qemu+unix:///system?socket=/nonexistent/libvirt-sock",
        ),
    ];
    let o = check(&["monitor"], &env, 1);
    assert!(stderr(&o).contains("cannot connect"), "{}", stderr(&o));
    check(&["start"], &env, 1);
}

#[test]
fn libvirt_so_is_loaded_only_when_an_action_calls_libvirt() {
    // The dynamic loader lists every library it maps (ld.so(8), LD_DEBUG).
    let loads_libvirt = |args: &[&str], env: &[(&str, &str)]| {
        let o = run(args, &[env, &[("LD_DEBUG", "files")]].concat());
        stderr(&o).contains("file=libvirt.so.0")
    };
    assert!(!loads_libvirt(&["meta-data"], &[]));
    assert!(!loads_libvirt(
        &["validate-all"],
        &[("OCF_RESKEY_name", "vm1")]
    ));
    let test = [TEST, &[("OCF_RESKEY_name", "test")]].concat();
    assert!(loads_libvirt(&["monitor"], &test));
}

#[test]
fn without_libvirt_so_actions_say_not_installed() {
    // Hides libvirt.so.0 in a private mount namespace; needs root.
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root for a private mount namespace");
        return;
    }
    let lib = std::fs::canonicalize("/lib/x86_64-linux-gnu/libvirt.so.0").unwrap();
    let hidden = |action: &str| {
        Command::new("unshare")
            .args([
                "-m",
                "sh",
                "-c",
                r#"mount --bind /dev/null "$1" && shift && exec "$@""#,
            ])
            .args(["sh", lib.to_str().unwrap(), BIN, action])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HA_LOGFACILITY", "none")
            .env("OCF_RESKEY_name", "vm1")
            .env("OCF_RESKEY_hypervisor", "test:///default")
            .output()
            .unwrap()
    };
    let o = hidden("start");
    assert_eq!(rc(&o), 5, "{}", stderr(&o));
    assert_reason(&o);
    assert!(
        stderr(&o).contains("cannot load libvirt.so.0"),
        "{}",
        stderr(&o)
    );
    // meta-data needs no libvirt at all.
    assert_eq!(rc(&hidden("meta-data")), 0);
}

#[test]
fn migration_without_a_target_says_so() {
    // ocf-tester calls migrate_to without a target.
    let o = check(&["migrate_to"], &[("OCF_RESKEY_name", "vm1")], 1);
    assert!(stderr(&o).contains("no migration target"), "{}", stderr(&o));
    check(&["plan-migration", "--name", "vm1"], &[], 1);
    check(&["migrate_to"], &[], 6);
}

#[test]
fn plan_migration_changes_nothing_and_explains() {
    // No lab here: node-b.mn does not resolve, so the plan falls back.
    let o = check(
        &[
            "plan-migration",
            "--name",
            "vm1",
            "--target",
            "vmshift-no-such-node.invalid",
            "--migration-transport",
            "tcp",
        ],
        &[],
        0,
    );
    let out = String::from_utf8_lossy(&o.stdout);
    for want in [
        "candidate: vmshift-no-such-node.mn",
        "check: resolve vmshift-no-such-node.mn",
        "falling back to vmshift-no-such-node.invalid",
        "control: qemu+tcp://vmshift-no-such-node.invalid/system",
        "data: tcp://vmshift-no-such-node.invalid",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
}

#[test]
fn hostile_values_are_refused_without_a_shell() {
    for v in ["vm1; rm -rf /", "$(touch /tmp/x)", "a\nb", "`id`", "\"'"] {
        let o = run(
            &["validate-all"],
            &[("OCF_RESKEY_name", "vm1"), ("OCF_RESKEY_migration_user", v)],
        );
        assert_eq!(rc(&o), 6, "{v:?}");
        assert_reason(&o);
    }
    let o = Command::new(BIN)
        .arg("validate-all")
        .env_clear()
        .env("OCF_RESKEY_name", std::ffi::OsStr::from_bytes(b"vm\xff1"))
        .output()
        .unwrap();
    assert_eq!(rc(&o), 6);
    assert_reason(&o);
}

/// ocf-tester runs meta-data as `nobody`: it must need no privilege. (The
/// test itself runs as root, as `make test` does, to drop to `nobody`; the
/// binary is copied out of the build tree, which `nobody` may not reach.)
#[test]
fn meta_data_as_nobody() {
    let dir = std::env::temp_dir().join(format!("vmshift-nobody-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.join("vmshift");
    std::fs::copy(BIN, &bin).unwrap();
    let o = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(&bin)
        .arg("meta-data")
        .env_clear()
        .output()
        .expect("setpriv (util-linux)");
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(o.stdout.starts_with(b"<?xml"));
}

#[test]
fn config_must_be_a_small_regular_root_file_and_is_never_quoted() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root (files owned by root and by nobody)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("vmshift-cli-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = |n: &str| dir.join(n);
    let fifo = path("fifo.xml");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let world = path("world.xml");
    std::fs::write(&world, "<domain><name>vm1</name></domain>").unwrap();
    std::fs::set_permissions(&world, std::fs::Permissions::from_mode(0o666)).unwrap();
    let theirs = path("theirs.xml");
    std::fs::write(&theirs, "<domain><name>vm1</name></domain>").unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), None).unwrap();
    let big = path("big.xml");
    std::fs::write(&big, vec![b' '; (4 << 20) + 1]).unwrap();
    let secret = path("shadow");
    std::fs::write(&secret, "root:$6$SECRETHASH:19000:0:99999:7:::\n").unwrap();
    let dir_s = dir.to_str().unwrap();
    for (cfg, rc_want, says) in [
        (fifo.to_str().unwrap(), 5, "FIFO"),
        (dir_s, 5, "directory"),
        ("/dev/null", 5, "device"),
        (world.to_str().unwrap(), 5, "others may write"),
        (theirs.to_str().unwrap(), 5, "uid 65534"),
        (big.to_str().unwrap(), 5, "larger than 4 MiB"),
        (secret.to_str().unwrap(), 6, "not a domain XML"),
    ] {
        let t = std::time::Instant::now();
        let o = check(
            &["validate-all"],
            &[("OCF_RESKEY_name", "vm1"), ("OCF_RESKEY_config", cfg)],
            rc_want,
        );
        let err = stderr(&o);
        assert!(err.contains(says), "{cfg}: {err}");
        assert!(!err.contains("SECRETHASH"), "{cfg}: {err}");
        assert!(t.elapsed() < std::time::Duration::from_secs(3), "{cfg}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_libvirt_function_the_binary_calls_is_a_trampoline() {
    // libvirt.so.0 is bound at first use (src/libvirt/load.rs): the binary
    // neither lists it nor leaves a libvirt symbol to the dynamic loader.
    // A function `virt` calls that the trampoline list misses would be
    // taken from libvirt.so.0 by the linker again, and show here.
    let tool = |cmd: &str, args: &[&str]| {
        let o = Command::new(cmd).args(args).arg(BIN).output();
        o.ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let (Some(dynamic), Some(undefined)) = (
        tool("readelf", &["-d"]),
        tool("nm", &["-D", "--undefined-only"]),
    ) else {
        eprintln!("skipped: readelf or nm missing");
        return;
    };
    assert!(!dynamic.contains("libvirt"), "{dynamic}");
    let libvirt: Vec<_> = undefined
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .filter(|s| s.starts_with("vir"))
        .collect();
    assert!(libvirt.is_empty(), "left to the loader: {libvirt:?}");
    let defined = tool("nm", &["--defined-only"]).unwrap_or_default();
    for f in [
        "virConnectOpen",
        "virDomainMigrateToURI3",
        "virDomainGetState",
    ] {
        assert!(
            defined.lines().any(|l| l.ends_with(&format!(" {f}"))),
            "{f} is not a trampoline"
        );
    }
}

#[test]
fn run_as_vmshift_ssh_it_is_ssh_sharing_one_connection_per_peer() {
    // libvirt runs the peer URI's `command=/run/vmshift/vmshift-ssh` (a link
    // to the binary) with ssh's arguments. The binary then runs `ssh`, found
    // on PATH, here a script that prints its arguments: the sharing options
    // first (ssh keeps the first value of an option, so they win over
    // ssh_config), libvirt's arguments after them, untouched. Not as root,
    // /run/vmshift/ssh cannot be made and ssh runs without sharing.
    let dir = std::env::temp_dir().join(format!("vmshift-ssh-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("vmshift-ssh");
    std::os::unix::fs::symlink(BIN, &link).unwrap();
    let ssh = dir.join("ssh");
    std::fs::write(&ssh, "#!/bin/sh\nprintf '%s\\n' \"$@\"\nexit 3\n").unwrap();
    std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o755)).unwrap();
    let made = [Path::new("/run/vmshift"), Path::new("/run/vmshift/ssh")].map(|d| !d.exists());
    let libvirts = [
        "-T",
        "-e",
        "none",
        "--",
        "node-b",
        "sh",
        "-c",
        "virt-ssh-helper 'x'",
    ];
    let out = Command::new(&link)
        .args(libvirts)
        .env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", dir.display()))
        .output()
        .unwrap();
    let args: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    // ssh's exit code comes back: the binary is ssh now, not the agent.
    assert_eq!(rc(&out), 3, "{}", stderr(&out));
    let root = is_root();
    let sharing = [
        "-o",
        "ControlMaster=auto",
        "-o",
        "ControlPath=/run/vmshift/ssh/%C",
        "-o",
        "ControlPersist=60",
        "-o",
        "ServerAliveInterval=5",
        "-o",
        "ServerAliveCountMax=3",
    ];
    let want: Vec<&str> = if root { &sharing[..] } else { &[] }
        .iter()
        .chain(&libvirts)
        .copied()
        .collect();
    assert_eq!(args, want, "{}", stderr(&out));
    if root {
        let m = std::fs::metadata("/run/vmshift/ssh").unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o700);
    } else {
        assert!(
            stderr(&out).contains("not sharing the connection"),
            "{}",
            stderr(&out)
        );
    }
    for (d, made) in [("/run/vmshift/ssh", made[1]), ("/run/vmshift", made[0])] {
        if made {
            let _ = std::fs::remove_dir(d);
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}
