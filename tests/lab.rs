//! Black-box tests of the `vmshift` binary against real libvirtd and real
//! QEMU guests, in the project's two-host lab (`tests/lab/lab.sh`: two
//! network namespaces, one libvirtd each, node-a and node-b).
//!
//! They need root and a running lab, so they are `#[ignore]`d for a plain
//! `cargo test`; `tests/lab/run-tests.sh` (run by `make test`) brings the lab
//! up, runs them one at a time with `--ignored`, and tears the lab down.
//! Each test uses its own domain names and removes its domains when it ends,
//! even when it fails.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::thread::sleep;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_vmshift");

/// The binary where any user can run it: ocf-tester runs meta-data as
/// `nobody`, and the build tree may sit in a directory only root can enter.
/// The copy lives in the lab's state directory, which `lab.sh down` removes.
fn shared_bin() -> &'static Path {
    static BIN_COPY: OnceLock<PathBuf> = OnceLock::new();
    BIN_COPY.get_or_init(|| {
        let lab_dir = Path::new("/tmp/vmshift-lab");
        let dir = lab_dir.join("bin");
        std::fs::create_dir_all(&dir).expect("lab state dir (lab up?)");
        for d in [lab_dir, &dir] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let bin = dir.join("vmshift");
        std::fs::copy(BIN, &bin).expect("copy the binary");
        bin
    })
}

fn lab_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lab/lab.sh")
}

/// `lab.sh ARGS...`, which must succeed; returns its stdout.
fn lab(args: &[&str]) -> String {
    let o = Command::new("bash")
        .arg(lab_script())
        .args(args)
        .output()
        .expect("run lab.sh");
    assert!(
        o.status.success(),
        "lab.sh {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

/// `virsh -c qemu:///system ARGS` on a node; Err with stderr on failure.
fn virsh(node: &str, args: &[&str]) -> Result<String, String> {
    let o = Command::new("bash")
        .arg(lab_script())
        .args(["exec", node, "virsh", "-q", "-c", "qemu:///system"])
        .args(args)
        .output()
        .expect("run virsh");
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).trim().to_owned())
    }
}

fn domstate(node: &str, name: &str) -> String {
    virsh(node, &["domstate", name]).unwrap_or_else(|e| format!("error: {e}"))
}

/// What one agent call did.
struct Call {
    rc: i32,
    stderr: String,
    took: Duration,
}

impl Call {
    fn reason(&self) -> Option<&str> {
        self.stderr
            .lines()
            .find_map(|l| l.strip_prefix("ocf-exit-reason:"))
    }
}

/// Runs the agent "on" a node the way Pacemaker does: the action as the
/// only argument, the parameters in the environment.
fn agent(node: &str, action: &str, env: &[(&str, &str)]) -> Call {
    let t = Instant::now();
    let o: Output = Command::new("bash")
        .arg(lab_script())
        .args(["exec", node, BIN, action])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("OCF_ROOT", "/usr/lib/ocf")
        .env("OCF_RESOURCE_INSTANCE", "lab-rsc")
        .env("HA_LOGFACILITY", "none")
        .env("OCF_RESKEY_CRM_meta_timeout", "20000")
        .envs(env.iter().copied())
        .output()
        .expect("run the agent");
    let call = Call {
        rc: o.status.code().expect("the agent exited (not killed)"),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        took: t.elapsed(),
    };
    // The contract: every non-zero exit prints exactly one reason line.
    let reasons = call
        .stderr
        .lines()
        .filter(|l| l.starts_with("ocf-exit-reason:"))
        .count();
    assert_eq!(
        reasons,
        usize::from(call.rc != 0),
        "{action} on {node}:\n{}",
        call.stderr
    );
    eprintln!(
        "[{node}] {action} -> {} in {:.1?} {}",
        call.rc,
        call.took,
        call.reason().unwrap_or("")
    );
    call
}

/// A guest for one test: its XML is written to a file, and it is
/// destroyed and undefined on both nodes when the test ends, pass or fail.
struct Guest {
    name: String,
    config: PathBuf,
}

impl Guest {
    fn new(name: &str, acpi: bool) -> Guest {
        let xml = lab(&["xml", name, if acpi { "acpi=1" } else { "acpi=0" }]);
        let config = std::env::temp_dir().join(format!("vmshift-lab-{name}.xml"));
        std::fs::write(&config, xml).expect("write guest XML");
        let g = Guest {
            name: name.to_owned(),
            config,
        };
        g.cleanup();
        // The serial file is appended to: drop ticks of an earlier run.
        for node in ["a", "b"] {
            let _ = std::fs::remove_file(lab(&["serial", node, name]));
        }
        g
    }

    fn name_env(&self) -> (&str, &str) {
        ("OCF_RESKEY_name", &self.name)
    }

    fn config_env(&self) -> (&str, &str) {
        ("OCF_RESKEY_config", self.config.to_str().unwrap())
    }

    fn params(&self) -> Vec<(&str, &str)> {
        vec![self.name_env(), self.config_env()]
    }

    /// Defines the guest on a node (without starting it).
    fn define(&self, node: &str) {
        virsh(node, &["define", self.config.to_str().unwrap()]).expect("virsh define");
    }

    fn serial(&self, node: &str) -> String {
        std::fs::read_to_string(lab(&["serial", node, &self.name])).unwrap_or_default()
    }

    /// The last heartbeat tick the guest printed on a node.
    fn last_tick(&self, node: &str) -> Option<u64> {
        self.serial(node)
            .lines()
            .filter_map(|l| l.strip_prefix("lab-guest tick="))
            .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
            .next_back()
    }

    /// Waits until the guest's init prints heartbeats (its ACPI handler is
    /// loaded by then).
    fn wait_heartbeat(&self, node: &str) -> u64 {
        self.wait_tick_after(node, 0)
    }

    /// Waits for a heartbeat tick above `after`: the guest is alive and
    /// kept its state (a rebooted guest counts from 1 again). A TCG guest
    /// on a busy 2-core machine can take 10 s of wall time per few ticks.
    fn wait_tick_after(&self, node: &str, after: u64) -> u64 {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(t) = self.last_tick(node).filter(|&t| t > after) {
                return t;
            }
            assert!(
                Instant::now() < until,
                "{}: no heartbeat after tick {after} on {node}",
                self.name
            );
            sleep(Duration::from_millis(250));
        }
    }

    fn cleanup(&self) {
        for node in ["a", "b"] {
            let _ = virsh(node, &["destroy", &self.name]);
            let _ = virsh(node, &["undefine", &self.name]);
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        self.cleanup();
        let _ = std::fs::remove_file(&self.config);
    }
}

/// Sends a signal to a node's libvirtd; `Stopped` sends SIGCONT when the
/// test ends, pass or fail, so later tests find a working daemon.
fn signal_libvirtd(node: &str, sig: i32) {
    let pid: i32 = lab(&["libvirtd-pid", node]).parse().expect("libvirtd pid");
    // SAFETY: kill(2) with a pid the lab recorded for its own libvirtd and
    // a valid signal number; it has no memory-safety preconditions.
    let r = unsafe { libc::kill(pid, sig) };
    assert_eq!(r, 0, "kill -{sig} {pid}");
}

struct Stopped(&'static str);

impl Stopped {
    fn new(node: &'static str) -> Stopped {
        signal_libvirtd(node, libc::SIGSTOP);
        Stopped(node)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        signal_libvirtd(self.0, libc::SIGCONT);
    }
}

#[test]
#[ignore = "needs the lab: make test"]
fn probes_on_both_nodes() {
    let g = Guest::new("t-probe", true);
    let probe = [g.name_env(), ("OCF_RESKEY_CRM_meta_interval", "0")];
    assert_eq!(agent("a", "monitor", &probe).rc, 7, "not defined anywhere");
    assert_eq!(agent("b", "monitor", &probe).rc, 7);
    assert_eq!(agent("a", "start", &g.params()).rc, 0);
    assert_eq!(agent("a", "monitor", &probe).rc, 0);
    let other = agent("b", "monitor", &probe);
    assert_eq!(other.rc, 7, "the peer must report stopped");
    g.define("b");
    assert_eq!(agent("b", "monitor", &probe).rc, 7, "defined but shut off");
}

#[test]
#[ignore = "needs the lab: make test"]
fn start_stop_monitor_are_idempotent() {
    let g = Guest::new("t-idem", true);
    let p = g.params();
    assert_eq!(agent("a", "stop", &p).rc, 0, "stop of an unknown domain");
    assert_eq!(agent("a", "monitor", &p).rc, 7);
    assert_eq!(agent("a", "start", &p).rc, 0);
    assert_eq!(domstate("a", &g.name), "running");
    let again = agent("a", "start", &p);
    assert_eq!(again.rc, 0, "starting a running server succeeds");
    assert!(
        again.took < Duration::from_secs(2),
        "at once: {:?}",
        again.took
    );
    assert_eq!(agent("a", "monitor", &p).rc, 0);
    g.wait_heartbeat("a");
    assert_eq!(agent("a", "stop", &p).rc, 0);
    assert_eq!(agent("a", "monitor", &p).rc, 7);
    assert_eq!(agent("a", "stop", &p).rc, 0, "stopping a stopped server");
    assert_eq!(agent("a", "monitor", &p).rc, 7);
    // Defined now: start works without config too.
    assert_eq!(agent("a", "start", &[g.name_env()]).rc, 0);
    assert_eq!(agent("a", "monitor", &p).rc, 0);
}

#[test]
#[ignore = "needs the lab: make test"]
fn start_defines_from_config_and_turns_autostart_off() {
    let g = Guest::new("t-autostart", true);
    g.define("a");
    virsh("a", &["autostart", &g.name]).expect("autostart on");
    let c = agent("a", "start", &g.params());
    assert_eq!(c.rc, 0);
    assert!(c.stderr.contains("autostart off"), "{}", c.stderr);
    let info = virsh("a", &["dominfo", &g.name]).unwrap();
    assert!(
        info.lines()
            .any(|l| l.starts_with("Autostart:") && l.ends_with("disable")),
        "{info}"
    );
    // Unknown on node-b and no config: not installed there (5), not fatal.
    let c = agent("b", "start", &[g.name_env()]);
    assert_eq!(c.rc, 5, "{}", c.stderr);
}

#[test]
#[ignore = "needs the lab: make test"]
fn graceful_stop_of_a_guest_that_honours_acpi() {
    let g = Guest::new("t-acpi", true);
    assert_eq!(agent("a", "start", &g.params()).rc, 0);
    g.wait_heartbeat("a");
    let c = agent("a", "stop", &g.params());
    assert_eq!(c.rc, 0);
    assert!(c.stderr.contains("gracefully"), "{}", c.stderr);
    assert!(c.took < Duration::from_secs(10), "{:?}", c.took);
    assert!(g.serial("a").contains("ACPI power button"));
    assert_eq!(domstate("a", &g.name), "shut off");
}

#[test]
#[ignore = "needs the lab: make test"]
fn force_stop_destroys_at_once() {
    let g = Guest::new("t-force", true);
    assert_eq!(agent("a", "start", &g.params()).rc, 0);
    g.wait_heartbeat("a");
    let mut p = g.params();
    p.push(("OCF_RESKEY_force_stop", "true"));
    let c = agent("a", "stop", &p);
    assert_eq!(c.rc, 0);
    assert!(c.took < Duration::from_secs(6), "{:?}", c.took);
    assert!(!g.serial("a").contains("ACPI power button"));
    assert_eq!(domstate("a", &g.name), "shut off");
}

#[test]
#[ignore = "needs the lab: make test"]
fn stop_of_a_guest_that_ignores_acpi_returns_in_time() {
    let g = Guest::new("t-noacpi", false);
    assert_eq!(agent("a", "start", &g.params()).rc, 0);
    g.wait_heartbeat("a");
    let c = agent("a", "stop", &g.params());
    assert_eq!(c.rc, 0, "{}", c.stderr);
    assert!(c.stderr.contains("ignored ACPI"), "{}", c.stderr);
    assert!(
        c.took < Duration::from_secs(20),
        "timeout 20 s: {:?}",
        c.took
    );
    assert_eq!(domstate("a", &g.name), "shut off");
}

#[test]
#[ignore = "needs the lab: make test"]
fn monitor_with_libvirtd_stopped_returns_in_time_and_not_7() {
    let g = Guest::new("t-sigstop", true);
    assert_eq!(agent("a", "start", &g.params()).rc, 0);
    let p = [g.name_env(), ("OCF_RESKEY_CRM_meta_timeout", "8000")];
    {
        let _stopped = Stopped::new("a");
        let c = agent("a", "monitor", &p);
        assert!(c.took < Duration::from_secs(8), "{:?}", c.took);
        assert_eq!(c.rc, 0, "QEMU lives: running, {}", c.stderr);
        let probe = [p[0], p[1], ("OCF_RESKEY_CRM_meta_interval", "0")];
        assert_eq!(agent("a", "monitor", &probe).rc, 0);
        // start and stop cannot act, and say so before the deadline.
        let s = agent("a", "stop", &p);
        assert_eq!(s.rc, 1);
        assert!(s.took < Duration::from_secs(8), "{:?}", s.took);
        let s = agent("a", "start", &p);
        assert_eq!(s.rc, 1);
        assert!(s.took < Duration::from_secs(8), "{:?}", s.took);
        // The peer's libvirtd is not involved.
        assert_eq!(agent("b", "monitor", &p).rc, 7);
    }
    assert_eq!(agent("a", "monitor", &p).rc, 0);
}

#[test]
#[ignore = "needs the lab: make test"]
fn monitor_with_libvirtd_killed_keeps_the_guest_and_is_not_7() {
    let g = Guest::new("t-killed", true);
    assert_eq!(agent("a", "start", &g.params()).rc, 0);
    let before = g.wait_heartbeat("a");
    let qemu = lab(&["qemu-pid", "a", &g.name]);
    assert!(!qemu.is_empty(), "qemu pid file");
    signal_libvirtd("a", libc::SIGKILL);
    let c = agent("a", "monitor", &[g.name_env()]);
    assert_eq!(c.rc, 0, "{}", c.stderr);
    assert!(c.took < Duration::from_secs(5), "{:?}", c.took);
    // The guest kept running: its heartbeat goes on.
    g.wait_tick_after("a", before);
    assert_eq!(lab(&["qemu-pid", "a", &g.name]), qemu);
    lab(&["revive", "a"]);
    assert_eq!(agent("a", "monitor", &[g.name_env()]).rc, 0);
    assert_eq!(domstate("a", &g.name), "running");
}

#[test]
#[ignore = "needs the lab: make test"]
fn bad_parameters_give_6_with_a_reason() {
    for (k, v) in [
        ("OCF_RESKEY_migration_transport", "carrier-pigeon"),
        ("OCF_RESKEY_migration_speed", "fast"),
        ("OCF_RESKEY_name", "a/b"),
    ] {
        let c = agent("a", "start", &[("OCF_RESKEY_name", "t-bad"), (k, v)]);
        assert_eq!(c.rc, 6, "{k}={v}");
        assert!(c.reason().is_some());
        let c = agent("a", "validate-all", &[("OCF_RESKEY_name", "t-bad"), (k, v)]);
        assert_eq!(c.rc, 6, "{k}={v}");
    }
    let c = agent("a", "start", &[]);
    assert_eq!(c.rc, 6);
    assert!(c.reason().unwrap().contains("name"));
}

#[test]
#[ignore = "needs the lab: make test"]
fn ocf_tester_passes() {
    let g = Guest::new("t-ocft", true);
    let o = Command::new("bash")
        .arg(lab_script())
        .args([
            "exec",
            "a",
            "timeout",
            "180",
            "ocf-tester",
            "-v",
            "-n",
            "t-ocft",
        ])
        .args(["-o", "name=t-ocft", "-o"])
        .arg(format!("config={}", g.config.display()))
        .arg(shared_bin())
        .env("HA_LOGFACILITY", "none")
        .output()
        .expect("ocf-tester");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.contains("passed all tests"),
        "ocf-tester rc {:?}\n{out}\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Registers the binary as ocf:vmshift:server for crm_resource, and
/// removes the registration when the test ends.
struct Registered(PathBuf);

impl Registered {
    fn new() -> Registered {
        let dir = Path::new("/usr/lib/ocf/resource.d/vmshift");
        let path = dir.join("server");
        assert!(
            !path.exists() || std::fs::read_link(&path).is_ok_and(|t| t == shared_bin()),
            "{} exists and is not this build: remove it (or the package) first",
            path.display()
        );
        std::fs::create_dir_all(dir).unwrap();
        let _ = std::fs::remove_file(&path);
        std::os::unix::fs::symlink(shared_bin(), &path).unwrap();
        Registered(path)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let _ = std::fs::remove_dir(self.0.parent().unwrap());
    }
}

#[test]
#[ignore = "needs the lab: make test"]
fn crm_resource_force_actions() {
    let g = Guest::new("t-crm", true);
    let _reg = Registered::new();
    let crm = |op: &str, opts: &[String]| -> i32 {
        let mut cmd = Command::new("bash");
        cmd.arg(lab_script())
            .args(["exec", "a", "crm_resource", op])
            .args([
                "--class",
                "ocf",
                "--provider",
                "vmshift",
                "--agent",
                "server",
            ]);
        for o in opts {
            cmd.args(["--option", o]);
        }
        let o = cmd.output().expect("crm_resource");
        let code = o.status.code().unwrap();
        eprintln!(
            "crm_resource {op} -> {code}\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        code
    };
    let opts = [
        format!("name={}", g.name),
        format!("config={}", g.config.display()),
    ];
    assert_eq!(crm("--validate", &opts), 0);
    assert_eq!(
        crm("--validate", &[opts[0].clone(), "migration_speed=x".into()]),
        6
    );
    assert_eq!(crm("--force-check", &opts), 7);
    assert_eq!(crm("--force-start", &opts), 0);
    assert_eq!(crm("--force-check", &opts), 0);
    assert_eq!(domstate("a", &g.name), "running");
    assert_eq!(crm("--force-stop", &opts), 0);
    assert_eq!(crm("--force-check", &opts), 7);
    assert_eq!(crm("--force-stop", &opts), 0);
}
