//! Shared helpers of the lab tests (`tests/lab.rs`, `tests/faults.rs`, and
//! the guest console checks of `tests/cluster.rs`):
//! running the agent "on" a lab node, guests with a heartbeat, and guards
//! that undo what a test did to the lab (a stopped libvirtd, a link set
//! down, an edited hosts file) even when the test fails.
// Each test crate uses a different subset of these helpers.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::thread::sleep;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_vmshift");

/// The binary where any user can run it: ocf-tester runs meta-data as
/// `nobody`, and the build tree may sit in a directory only root can enter.
/// The copy lives in the lab's state directory, which `lab.sh down` removes.
pub fn shared_bin() -> &'static Path {
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

pub fn lab_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lab/lab.sh")
}

/// Runs `cmd` on a lab node (its namespaces); true if it succeeded.
pub fn lab_ok(node: &str, cmd: &[&str]) -> bool {
    Command::new("bash")
        .arg(lab_script())
        .args(["exec", node])
        .args(cmd)
        .status()
        .is_ok_and(|s| s.success())
}

/// `lab.sh ARGS...`, which must succeed; returns its stdout.
pub fn lab(args: &[&str]) -> String {
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

/// `virsh define` or `net-define` (`command`) of `xml` on a node, through
/// a file `stem` in the temp dir that is gone again when virsh returns
/// (virsh reads it once; a test leaves nothing behind).
pub fn virsh_define(node: &str, command: &str, stem: &str, xml: &str) -> Result<String, String> {
    let file = std::env::temp_dir().join(format!("vmshift-lab-{stem}.xml"));
    std::fs::write(&file, xml).expect("write XML for virsh");
    let r = virsh(node, &[command, file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);
    r
}

/// `virsh -c qemu:///system ARGS` on a node; Err with stderr on failure.
pub fn virsh(node: &str, args: &[&str]) -> Result<String, String> {
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

pub fn domstate(node: &str, name: &str) -> String {
    virsh(node, &["domstate", name]).unwrap_or_else(|e| format!("error: {e}"))
}

/// What one agent call did.
pub struct Call {
    pub rc: i32,
    pub stderr: String,
    pub took: Duration,
}

impl Call {
    pub fn reason(&self) -> Option<&str> {
        self.stderr
            .lines()
            .find_map(|l| l.strip_prefix("ocf-exit-reason:"))
    }

    /// What the action said it decided, whatever its exit code: the last
    /// `<action>: <why> -> <rc>` log line (a 0 has no exit reason).
    pub fn said(&self) -> &str {
        self.stderr
            .lines()
            .rev()
            .find_map(|l| {
                let (_, rest) = l.split_once(": INFO: ").or(l.split_once(": ERROR: "))?;
                rest.contains(" -> ").then_some(rest)
            })
            .unwrap_or("")
    }
}

/// Runs the agent "on" a node the way Pacemaker does: the action as the
/// only argument, the parameters in the environment.
pub fn agent(node: &str, action: &str, env: &[(&str, &str)]) -> Call {
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
pub struct Guest {
    pub name: String,
    pub config: PathBuf,
}

impl Guest {
    pub fn new(name: &str, acpi: bool) -> Guest {
        Guest::with(name, &[if acpi { "acpi=1" } else { "acpi=0" }])
    }

    /// A guest with `lab.sh xml` knobs (its disk: `disk=shared|local|nbd`),
    /// started on node-a by the agent, its write journal acknowledging
    /// writes: where every storage test begins.
    pub fn journaling(name: &str, knobs: &[&str]) -> Guest {
        let g = Guest::with(name, knobs);
        assert_eq!(agent("a", "start", &g.params()).rc, 0);
        g.wait_heartbeat("a");
        assert!(g.has_journal(), "no journal: {}", g.serial("a"));
        g.wait_disk_ack_after("a", Some((0, 20)));
        g
    }

    /// Stops the guest on `node` (destroy: no clean shutdown helps the
    /// journal) once it acknowledged one more write, and checks the image
    /// there: every acknowledged write of this boot is on it, and the guest
    /// booted once in all. Returns that last write, as (gen, seq).
    pub fn end_with_whole_journal(&self, node: &str) -> (u64, u64) {
        let last = self.wait_disk_ack_after(node, None);
        virsh(node, &["destroy", &self.name]).expect("virsh destroy");
        let summary = self.check_journal(node, false);
        assert!(
            summary.contains(&format!("journal gen={}:", last.0)),
            "{summary}"
        );
        assert_eq!(self.all_boots(), 1);
        last
    }

    /// A guest with `lab.sh xml` knobs (`dirty_mb=48`, `rate_mbs=64`...).
    pub fn with(name: &str, knobs: &[&str]) -> Guest {
        let xml = lab(&[&["xml", name], knobs].concat());
        let config = std::env::temp_dir().join(format!("vmshift-lab-{name}.xml"));
        std::fs::write(&config, xml).expect("write guest XML");
        let g = Guest {
            name: name.to_owned(),
            config,
        };
        // A daemon an earlier failed test left dead comes back first.
        for node in ["a", "b"] {
            lab(&["revive", node]);
        }
        g.cleanup();
        // The serial file is appended to: drop ticks of an earlier run.
        for node in ["a", "b"] {
            g.clear_serial(node);
        }
        g
    }

    pub fn name_env(&self) -> (&str, &str) {
        ("OCF_RESKEY_name", &self.name)
    }

    pub fn config_env(&self) -> (&str, &str) {
        ("OCF_RESKEY_config", self.config.to_str().unwrap())
    }

    pub fn params(&self) -> Vec<(&str, &str)> {
        vec![self.name_env(), self.config_env()]
    }

    /// Defines the guest on a node (without starting it).
    pub fn define(&self, node: &str) {
        virsh(node, &["define", self.config.to_str().unwrap()]).expect("virsh define");
    }

    pub fn cleanup(&self) {
        for node in ["a", "b"] {
            let _ = virsh(node, &["destroy", &self.name]);
            let _ = virsh(node, &["undefine", &self.name]);
        }
    }
}

impl Console for Guest {
    fn name(&self) -> &str {
        &self.name
    }

    fn serial_path(&self, node: &str) -> PathBuf {
        PathBuf::from(lab(&["serial", node, &self.name]))
    }

    fn disk_path(&self, node: &str) -> PathBuf {
        PathBuf::from(lab(&["disk", &self.name, node]))
    }
}

/// [`wait_until`] `found` gives a value, and that value; past `within` the
/// test fails with `missing()`.
fn poll_for<T>(
    within: Duration,
    missing: impl Fn() -> String,
    mut found: impl FnMut() -> Option<T>,
) -> T {
    let mut value = None;
    wait_until(within, || {
        value = found();
        value.is_some()
    });
    value.unwrap_or_else(|| panic!("{}", missing()))
}

/// What a lab guest prints on its serial console on each node
/// (tests/lab/guest-init.c), the same in both labs: its heartbeat, its
/// boots, and the disk journal's acknowledged writes, with the checks built
/// on them. A lab `Guest` and a cluster server say where their serial logs
/// and disk images are.
pub trait Console {
    fn name(&self) -> &str;
    /// The host path of the guest's serial log on `node`.
    fn serial_path(&self, node: &str) -> PathBuf;
    /// The host path of the guest's disk image as `node` sees it (its own
    /// for a local disk, else the shared one).
    fn disk_path(&self, node: &str) -> PathBuf;
    /// The nodes the guest may run on.
    fn nodes(&self) -> Vec<&'static str> {
        vec!["a", "b"]
    }

    fn serial(&self, node: &str) -> String {
        std::fs::read_to_string(self.serial_path(node)).unwrap_or_default()
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
        self.tick_after(node, 0)
    }

    /// Waits for a heartbeat tick above `after`: the guest is alive and
    /// kept its state (a rebooted guest counts from 1 again). With a disk
    /// (every lab guest but `disk=none`), the guest also goes on writing on
    /// `node` and no write it acknowledged anywhere is lost: every check
    /// that a guest survived a move or a fault checks its disk too.
    fn wait_tick_after(&self, node: &str, after: u64) -> u64 {
        let tick = self.tick_after(node, after);
        self.journal_goes_on(node);
        tick
    }

    /// With a disk: the journal acknowledges a write on `node` newer than
    /// any acknowledged on either node so far, and the image holds every
    /// acknowledged write.
    fn journal_goes_on(&self, node: &str) {
        if self.has_journal() {
            let acked = self
                .nodes()
                .iter()
                .filter_map(|n| self.last_disk_ack(n))
                .max();
            self.wait_disk_ack_after(node, acked);
            self.check_journal(node, true);
        }
    }

    /// A TCG guest on a busy 2-core machine can take 10-20 s of wall time
    /// for its first tick.
    fn tick_after(&self, node: &str, after: u64) -> u64 {
        poll_for(
            Duration::from_secs(90),
            || {
                format!(
                    "{}: no heartbeat after tick {after} on node-{node}",
                    self.name()
                )
            },
            || self.last_tick(node).filter(|&t| t > after),
        )
    }

    /// The last write the guest's disk journal acknowledged on a node
    /// (`lab-guest disk gen=G seq=N`), as (gen, seq).
    fn last_disk_ack(&self, node: &str) -> Option<(u64, u64)> {
        self.serial(node)
            .lines()
            .filter_map(|l| l.strip_prefix("lab-guest disk gen="))
            .filter_map(|rest| {
                let (gen, seq) = rest.split_once(" seq=")?;
                Some((gen.parse().ok()?, seq.parse().ok()?))
            })
            .next_back()
    }

    /// How many MiB the guest's bulk writer (`disk_mbs=N`) had written on
    /// a node by its last report.
    fn last_bulk_mib(&self, node: &str) -> Option<u64> {
        self.serial(node)
            .lines()
            .filter_map(|l| l.strip_prefix("lab-guest bulk mib="))
            .filter_map(|m| m.trim().parse().ok())
            .next_back()
    }

    /// Waits until the bulk writer reports more than `after` MiB on `node`:
    /// it goes on writing there.
    fn wait_bulk_after(&self, node: &str, after: Option<u64>) -> u64 {
        poll_for(
            Duration::from_secs(30),
            || {
                format!(
                    "{}: no bulk write after {after:?} MiB on node-{node}",
                    self.name()
                )
            },
            || self.last_bulk_mib(node).filter(|&m| Some(m) > after),
        )
    }

    /// Whether the guest keeps a write journal (it has a disk).
    fn has_journal(&self) -> bool {
        self.nodes()
            .iter()
            .any(|n| self.serial(n).contains("lab-guest: disk journal on"))
    }

    /// Waits until the journal acknowledges a write on `node` after
    /// `after`: the guest goes on writing there.
    fn wait_disk_ack_after(&self, node: &str, after: Option<(u64, u64)>) -> (u64, u64) {
        poll_for(
            Duration::from_secs(60),
            || {
                format!(
                    "{}: no journal write after {after:?} on node-{node}",
                    self.name()
                )
            },
            || self.last_disk_ack(node).filter(|&a| Some(a) > after),
        )
    }

    /// `tests/lab/journal-check.py` over the guest's disk image on `node`
    /// and its serial logs on every node: no acknowledged write lost, every
    /// slot whole. `live`: the guest still runs (one write may be in
    /// flight). Returns the checker's summary line.
    fn check_journal(&self, node: &str, live: bool) -> String {
        let (ok, out) = journal_check(&self.disk_path(node), &self.serials(), live);
        assert!(ok, "{}: {out}", self.name());
        eprintln!("   {out}");
        out
    }

    /// The host paths of the guest's serial logs on every node.
    fn serials(&self) -> Vec<PathBuf> {
        self.nodes().iter().map(|n| self.serial_path(n)).collect()
    }

    /// Forgets the guest's serial log on a node, so that after a restart
    /// `wait_heartbeat` waits for the new boot's ticks, not the old ones.
    fn clear_serial(&self, node: &str) {
        let _ = std::fs::remove_file(self.serial_path(node));
    }

    /// How many times the guest booted on a node (since its serial log
    /// was last cleared).
    fn boots(&self, node: &str) -> usize {
        self.serial(node).matches("lab-guest: start").count()
    }

    /// How many times it booted on both nodes.
    fn all_boots(&self) -> usize {
        self.nodes().iter().map(|n| self.boots(n)).sum()
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        self.cleanup();
        let _ = std::fs::remove_file(&self.config);
    }
}

/// `tests/lab/journal-check.py IMAGE SERIALS...`: whether it passed, and
/// what it printed.
pub fn journal_check(image: &Path, serials: &[PathBuf], live: bool) -> (bool, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lab/journal-check.py");
    let o = Command::new("python3")
        .arg(script)
        .args(live.then_some("--live"))
        .arg(image)
        .args(serials)
        .output()
        .expect("run journal-check.py");
    let out = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    let err = String::from_utf8_lossy(&o.stderr);
    (o.status.success(), format!("{out}{err}"))
}

/// The pid of the QEMU process libvirt runs for `name` on a node, if any
/// (`lab.sh qemu-pid`: libvirt's pid file, checked against the process).
pub fn qemu_pid(node: &str, name: &str) -> Option<u32> {
    lab(&["qemu-pid", node, name]).parse().ok()
}

/// Polls `done` every 250 ms until it holds or `within` has passed;
/// returns whether it held.
pub fn wait_until(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + within;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        sleep(Duration::from_millis(250));
    }
}

/// `plan-migration` of domain `name` to `target`, run on a node over the
/// tcp transport; it must succeed (`ok`) or be refused (exit 1). Returns
/// its stdout.
pub fn plan_migration(node: &str, name: &str, target: &str, ok: bool) -> String {
    let o = Command::new("bash")
        .arg(lab_script())
        .args(["exec", node, BIN, "plan-migration", "--name", name])
        .args(["--target", target, "--migration-transport", "tcp"])
        .output()
        .expect("run plan-migration");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(
        o.status.code(),
        Some(if ok { 0 } else { 1 }),
        "plan-migration: {out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// The `decision:` line of a plan-migration output.
pub fn plan_decision(plan: &str) -> String {
    plan.lines()
        .find(|l| l.contains("decision:"))
        .unwrap_or_else(|| panic!("no decision in: {plan}"))
        .trim()
        .to_owned()
}

/// Sends a signal to a node's libvirtd; `Stopped` sends SIGCONT when the
/// test ends, pass or fail, so later tests find a working daemon.
pub fn signal_libvirtd(node: &str, sig: i32) {
    let pid: i32 = lab(&["libvirtd-pid", node]).parse().expect("libvirtd pid");
    // SAFETY: kill(2) with a pid the lab recorded for its own libvirtd and
    // a valid signal number; it has no memory-safety preconditions.
    let r = unsafe { libc::kill(pid, sig) };
    assert_eq!(r, 0, "kill -{sig} {pid}");
}

/// Restarts a node's libvirtd (keeping its guests) when the test ends, for
/// tests that kill or terminate it.
pub struct Revive(pub &'static str);

impl Drop for Revive {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(lab_script())
            .args(["revive", self.0])
            .status();
    }
}

pub struct Stopped(&'static str);

impl Stopped {
    pub fn new(node: &'static str) -> Stopped {
        signal_libvirtd(node, libc::SIGSTOP);
        Stopped(node)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        signal_libvirtd(self.0, libc::SIGCONT);
    }
}

/// Registers the binary as ocf:vmshift:server for crm_resource, and
/// removes the registration when the test ends.
pub struct Registered(PathBuf);

impl Registered {
    pub fn new() -> Registered {
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

/// Bytes sent through an interface of a network namespace so far
/// (`/proc/net/dev` as seen from inside it).
pub fn netns_tx_bytes(netns: &str, iface: &str) -> u64 {
    let o = Command::new("ip")
        .args(["netns", "exec", netns, "cat", "/proc/net/dev"])
        .output()
        .expect("ip netns exec");
    let text = String::from_utf8_lossy(&o.stdout);
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{iface}:")))
        .unwrap_or_else(|| panic!("{iface} not in /proc/net/dev of {netns}"));
    // After "iface:", 8 receive counters, then transmit bytes.
    line.split(':')
        .nth(1)
        .unwrap()
        .split_whitespace()
        .nth(8)
        .unwrap()
        .parse()
        .unwrap()
}

/// Bytes sent through a project-lab interface so far.
pub fn tx_bytes(node: &str, iface: &str) -> u64 {
    netns_tx_bytes(&format!("vs-{node}"), iface)
}

pub fn peer(node: &str) -> &'static str {
    if node == "a" {
        "b"
    } else {
        "a"
    }
}

/// The environment Pacemaker gives migrate_to and migrate_from.
pub fn migration_env<'a>(
    g: &'a Guest,
    from: &str,
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let (source, target) = if from == "a" {
        ("node-a", "node-b")
    } else {
        ("node-b", "node-a")
    };
    let mut env = vec![
        g.name_env(),
        ("OCF_RESKEY_migration_transport", "tcp"),
        ("OCF_RESKEY_CRM_meta_migrate_source", source),
        ("OCF_RESKEY_CRM_meta_migrate_target", target),
    ];
    env.extend_from_slice(extra);
    env
}

/// What one move did, with the bytes each link carried.
pub struct Move {
    pub to: Call,
    pub mn_bytes: u64,
    pub bc_bytes: u64,
}

/// One move the way Pacemaker makes it: migrate_to on the source, then
/// migrate_from on the target; both must succeed and the guest must go on
/// (its heartbeat continues on the target, no second boot).
pub fn migrate(g: &Guest, from: &str, extra: &[(&str, &str)]) -> Move {
    let to = peer(from);
    let tick = g.wait_heartbeat(from);
    let boots_before = g.boots(to);
    let (mn0, bc0) = (
        tx_bytes(from, &format!("vs-{from}-mn")),
        tx_bytes(from, &format!("vs-{from}-bc")),
    );
    let env = migration_env(g, from, extra);
    let c = agent(from, "migrate_to", &env);
    assert_eq!(c.rc, 0, "migrate_to:\n{}", c.stderr);
    let mn_bytes = tx_bytes(from, &format!("vs-{from}-mn")) - mn0;
    let bc_bytes = tx_bytes(from, &format!("vs-{from}-bc")) - bc0;
    let f = agent(to, "migrate_from", &env);
    assert_eq!(f.rc, 0, "migrate_from:\n{}", f.stderr);
    assert_eq!(domstate(to, &g.name), "running");
    assert_eq!(
        domstate(from, &g.name),
        "shut off",
        "both nodes keep the definition"
    );
    // The guest kept its memory and its disk: the tick counter and the
    // journal go on on the target, and it never booted there.
    g.wait_tick_after(to, tick);
    assert_eq!(
        g.boots(to),
        boots_before,
        "{}: rebooted on node-{to}",
        g.name
    );
    eprintln!(
        "   copy: {} MiB over the migration link, {} MiB over the back-channel",
        mn_bytes >> 20,
        bc_bytes >> 20
    );
    Move {
        to: c,
        mn_bytes,
        bc_bytes,
    }
}

/// The guest's RAM is 128 MiB; a full copy is well above this.
pub const COPY_BYTES: u64 = 48 << 20;

/// Sets a link of a network namespace down until the end of the test.
pub struct LinkDown {
    netns: String,
    iface: &'static str,
}

impl LinkDown {
    /// A link of the project lab's node (`vs-<node>`).
    pub fn new(node: &str, iface: &'static str) -> LinkDown {
        LinkDown::in_netns(format!("vs-{node}"), iface)
    }

    pub fn in_netns(netns: String, iface: &'static str) -> LinkDown {
        let s = Command::new("ip")
            .args(["-n", &netns, "link", "set", iface, "down"])
            .status()
            .unwrap();
        assert!(s.success());
        LinkDown { netns, iface }
    }

    /// The link fails under a move: it goes down, and both ends lose their
    /// connections on it at once (`ss -K` closes every TCP socket to
    /// `subnet` in each of `ends`, as a reset from a failing switch would).
    pub fn with_reset(
        netns: String,
        iface: &'static str,
        ends: [&str; 2],
        subnet: &str,
    ) -> LinkDown {
        let down = LinkDown::in_netns(netns, iface);
        for end in ends {
            let s = Command::new("ip")
                .args(["netns", "exec", end, "ss", "-K", "dst", subnet])
                .output()
                .unwrap();
            assert!(s.status.success(), "ss -K in {end}");
        }
        down
    }
}

impl Drop for LinkDown {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["-n", &self.netns, "link", "set", self.iface, "up"])
            .status();
    }
}

/// A migrate_to from node-a that failed (1) within `within` with an exit
/// reason that begins `reason`, and left the guest running there with no
/// job, and not running on node-b.
pub fn assert_refused_untouched(g: &Guest, c: &Call, within: Duration, reason: &str) {
    assert_eq!(c.rc, 1, "{}", c.stderr);
    assert!(c.took < within, "took {:?}", c.took);
    assert!(
        c.stderr.contains(&format!("ocf-exit-reason:{reason}")),
        "{}",
        c.stderr
    );
    assert_eq!(domstate("a", &g.name), "running");
    assert_ne!(domstate("b", &g.name), "running");
    assert_no_job("a", &g.name);
}

/// No migration job is left on a node, and no incoming copy of the guest.
pub fn assert_no_job(node: &str, name: &str) {
    let info = virsh(node, &["domjobinfo", name]).unwrap_or_default();
    assert!(
        info.is_empty()
            || info
                .lines()
                .any(|l| l.starts_with("Job type:") && l.contains("None")),
        "node-{node}: {info}"
    );
}

/// Replaces a file in a node's private /etc until the end of the test,
/// then writes the old content back. Reads and writes go through the node's
/// own view: a file created behind the overlay's back (in its upper dir)
/// is not seen by a mounted overlay that already looked the name up.
pub struct NodeFile {
    node: String,
    path: String,
    saved: String,
}

fn node_write(node: &str, path: &str, content: &str) {
    use std::io::Write;
    let mut child = Command::new("bash")
        .arg(lab_script())
        .args(["exec", node, "tee", path])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("tee in the node");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(content.as_bytes())
        .unwrap();
    assert!(
        child.wait().unwrap().success(),
        "write {path} on node-{node}"
    );
}

impl NodeFile {
    pub fn write(node: &str, name: &str, content: &str) -> NodeFile {
        let path = format!("/etc/{name}");
        let saved = lab(&["exec", node, "cat", &path]) + "\n";
        node_write(node, &path, content);
        NodeFile {
            node: node.to_owned(),
            path,
            saved,
        }
    }

    /// The node's hosts file with `name` pointing at `addr` (or removed).
    pub fn hosts(node: &str, name: &str, addr: Option<&str>) -> NodeFile {
        NodeFile::hosts_all(node, name, addr.as_slice())
    }

    /// The node's hosts file with `name` on one line per address, in this
    /// order (none: removed).
    pub fn hosts_all(node: &str, name: &str, addrs: &[&str]) -> NodeFile {
        let now = lab(&["exec", node, "cat", "/etc/hosts"]);
        let mut kept: String = now
            .lines()
            .filter(|l| l.split_whitespace().nth(1) != Some(name))
            .map(|l| format!("{l}\n"))
            .collect();
        for a in addrs {
            kept.push_str(&format!("{a} {name}\n"));
        }
        NodeFile::write(node, "hosts", &kept)
    }
}

impl Drop for NodeFile {
    fn drop(&mut self) {
        node_write(&self.node, &self.path, &self.saved);
    }
}

/// The agent started "on" a node and left running, so a test can act while
/// it works (and kill it, as Pacemaker does when an action times out).
pub struct Running {
    pub child: std::process::Child,
    started: Instant,
}

impl Running {
    pub fn start(node: &str, action: &str, env: &[(&str, &str)]) -> Running {
        let ns = lab(&["libvirtd-pid", node]);
        // nsenter without a pid namespace execs the agent itself: the
        // child's pid is the agent's.
        let child = Command::new("nsenter")
            .args(["-t", &ns, "-n", "-m", "-u", "--", BIN, action])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HA_LOGFACILITY", "none")
            .env("OCF_RESOURCE_INSTANCE", "lab-rsc")
            .env("OCF_RESKEY_CRM_meta_timeout", "20000")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start the agent");
        Running {
            child,
            started: Instant::now(),
        }
    }

    pub fn wait(self) -> Call {
        let o = self.child.wait_with_output().expect("wait for the agent");
        let call = Call {
            rc: o.status.code().unwrap_or(-1),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            took: self.started.elapsed(),
        };
        eprintln!(
            "[bg] -> {} in {:.1?} {}",
            call.rc,
            call.took,
            call.reason().unwrap_or("")
        );
        call
    }
}

/// What the RAM copy looks like on the wire: `tests/lab/sniff.py` runs on
/// a node's end of a link while a test migrates, and reports each
/// connection to a QEMU migration port with its first payload bytes.
pub struct Sniffer {
    child: Option<std::process::Child>,
    stop: PathBuf,
}

/// One connection the sniffer saw: the client's first bytes (hex) and a
/// lower bound of the payload it carried.
#[derive(Debug)]
pub struct Stream {
    /// The port it went to.
    pub port: u16,
    pub first: String,
    pub bytes: u64,
}

/// A plain QEMU migration stream opens with "QEVM", a multifd channel
/// with 0x11223344, a TLS one with a handshake record.
pub const QEMU_MAGIC: &str = "5145564d";
pub const MULTIFD_MAGIC: &str = "11223344";
pub const TLS_HANDSHAKE: &str = "1603";

impl Sniffer {
    pub fn start(node: &str, iface: &str) -> Sniffer {
        Sniffer::on_ports(node, iface, "49152-49215")
    }

    /// Watches the ports `range` (`FIRST-LAST`) instead of the lab's
    /// migration range.
    pub fn on_ports(node: &str, iface: &str, range: &str) -> Sniffer {
        use std::io::{BufRead, BufReader};
        let stop = std::env::temp_dir().join(format!("vmshift-sniff-{node}-{iface}.stop"));
        let _ = std::fs::remove_file(&stop);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lab/sniff.py");
        let mut child = Command::new("bash")
            .arg(lab_script())
            .args(["exec", node, "python3"])
            .arg(script)
            .arg(iface)
            .arg(&stop)
            .arg(range)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start sniff.py");
        // Capturing once it says so.
        let mut line = String::new();
        BufReader::new(child.stderr.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "sniff.py: {line}");
        Sniffer {
            child: Some(child),
            stop,
        }
    }

    /// Stops the capture and returns the migration connections seen.
    pub fn finish(mut self) -> Vec<Stream> {
        std::fs::write(&self.stop, "").unwrap();
        let out = self
            .child
            .take()
            .unwrap()
            .wait_with_output()
            .expect("wait for sniff.py");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let port = f.next()?.rsplit(':').next()?.parse().ok()?;
                Some(Stream {
                    port,
                    first: f.next()?.to_owned(),
                    bytes: f.next()?.parse().ok()?,
                })
            })
            .collect()
    }
}

impl Drop for Sniffer {
    fn drop(&mut self) {
        // A failed test still ends the capture (sniff.py also gives up
        // after 300 s on its own).
        let _ = std::fs::write(&self.stop, "");
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(&self.stop);
    }
}

/// Waits until no migration job is left on either node (a job the agent
/// left behind, finishing or being cancelled by libvirt).
pub fn wait_jobs_gone(name: &str, within: Duration) {
    let until = Instant::now() + within;
    let busy = |node| {
        virsh(node, &["domjobinfo", name])
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("Job type:") && !l.contains("None"))
    };
    while (busy("a") || busy("b")) && Instant::now() < until {
        sleep(Duration::from_millis(250));
    }
}

/// The nodes where the guest is active (running or paused).
pub fn active_on(name: &str) -> Vec<&'static str> {
    ["a", "b"]
        .into_iter()
        .filter(|n| ["running", "paused"].contains(&domstate(n, name).as_str()))
        .collect()
}

/// The fault-test invariant: the server runs on exactly one node, its
/// definition is intact there, and its heartbeat goes on. Returns the node.
pub fn assert_runs_once(g: &Guest) -> &'static str {
    let until = Instant::now() + Duration::from_secs(20);
    let mut on = active_on(&g.name);
    // A target's leftover paused incoming copy is dropped by libvirt.
    while on.len() != 1 && Instant::now() < until {
        sleep(Duration::from_millis(250));
        on = active_on(&g.name);
    }
    assert_eq!(on.len(), 1, "{} active on {on:?}", g.name);
    let node = on[0];
    assert_eq!(domstate(node, &g.name), "running");
    let info = virsh(node, &["dominfo", &g.name]).unwrap();
    assert!(
        info.lines()
            .any(|l| l.starts_with("Persistent:") && l.ends_with("yes")),
        "{info}"
    );
    let tick = g.last_tick(node).unwrap_or(0);
    g.wait_tick_after(node, tick);
    node
}

/// One fault case for RELIABILITY.md: what was done, what the agent did,
/// and whether the test passed. Written to target/reliability/ when the
/// test ends; `tests/lab/reliability-report.sh` turns the files into the
/// report.
pub struct Case {
    id: &'static str,
    fault: &'static str,
    behaviour: &'static str,
    evidence: Vec<String>,
    passed: bool,
}

impl Case {
    pub fn new(id: &'static str, fault: &'static str, behaviour: &'static str) -> Case {
        Case {
            id,
            fault,
            behaviour,
            evidence: Vec::new(),
            passed: false,
        }
    }

    pub fn note(&mut self, text: impl Into<String>) {
        self.evidence.push(text.into());
    }

    /// Notes an agent call: exit code, time, and reason.
    pub fn call(&mut self, what: &str, c: &Call) {
        self.note(format!(
            "{what}: exit {} in {:.1} s{}",
            c.rc,
            c.took.as_secs_f64(),
            c.reason()
                .or(Some(c.said()).filter(|s| !s.is_empty()))
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ));
    }

    pub fn pass(mut self) {
        self.passed = true;
    }
}

impl Drop for Case {
    fn drop(&mut self) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/reliability");
        let _ = std::fs::create_dir_all(&dir);
        let one_line = |s: &str| s.replace(['\n', '|'], " ");
        let text = format!(
            "fault={}\nbehaviour={}\nresult={}\nevidence={}\n",
            one_line(self.fault),
            one_line(self.behaviour),
            if self.passed { "PASS" } else { "FAIL" },
            self.evidence
                .iter()
                .map(|e| one_line(e))
                .collect::<Vec<_>>()
                .join("; ")
        );
        let _ = std::fs::write(dir.join(format!("{}.case", self.id)), text);
    }
}
