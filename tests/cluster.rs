//! Pacemaker in the loop: a real two-node Pacemaker/Corosync cluster
//! (`tests/cluster/cluster.sh`: two network namespaces, corosync +
//! pacemakerd + libvirtd per node) runs servers with `ocf:vmshift:server`
//! and live-migrates them when an admin asks (`crm_resource --move`), when
//! a node goes into standby, and when the migration link is down.
//!
//! They need root and a running cluster, so they are `#[ignore]`d for a
//! plain `cargo test`; `tests/cluster/run-tests.sh` (`make cluster-test`)
//! brings the cluster up, runs them one at a time with `--ignored`, and
//! tears it down. Each test creates its own resource (and guest) and
//! removes both when it ends, pass or fail.
//!
//! Every test checks the guest itself, not only exit codes: the guest
//! prints `lab-guest tick=N` once a second on its serial console, so a
//! live migration shows as ticks going on on the target with no new
//! `lab-guest: start` line, and a restart as a new boot.
//!
//! `VMSHIFT_SOAK_ROUNDS` (default 10) sets the number of round trips of
//! `round_trips_without_restarts_or_failures`.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::Console;

const BIN: &str = env!("CARGO_BIN_EXE_vmshift");

/// The lab's state directory (cluster.sh's `L`).
const STATE: &str = "/tmp/vmshift-cluster";

/// The guest's RAM is 128 MiB; a full copy is well above this.
const COPY_BYTES: u64 = 48 << 20;

/// How long a move may take, from the request to the server running on
/// the target (a TCG guest on a busy 2-core machine: generous).
const MOVE_WAIT: Duration = Duration::from_secs(120);

/// The agent under test: this build, or `VMSHIFT_BIN` (e.g. a release or
/// packaged build) when set.
fn agent_bin() -> String {
    std::env::var("VMSHIFT_BIN").unwrap_or_else(|_| BIN.to_owned())
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cluster/cluster.sh")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim().to_owned()
}

/// `cluster.sh ARGS...`, which must succeed; returns its stdout. The
/// first call registers the agent under test (`cluster.sh register`).
fn cluster(args: &[&str]) -> String {
    static REGISTERED: OnceLock<()> = OnceLock::new();
    REGISTERED.get_or_init(|| {
        let o = Command::new("bash")
            .arg(script())
            .arg("register")
            .env("VMSHIFT_BIN", agent_bin())
            .output()
            .expect("run cluster.sh register");
        assert!(
            o.status.success(),
            "cluster.sh register (cluster up?): {}",
            text(&o.stderr)
        );
    });
    let o = Command::new("bash")
        .arg(script())
        .args(args)
        .output()
        .expect("run cluster.sh");
    assert!(
        o.status.success(),
        "cluster.sh {args:?}: {}",
        text(&o.stderr)
    );
    text(&o.stdout)
}

/// Runs a command "on" a node (`cluster.sh exec`).
fn on(node: &str, args: &[&str]) -> Output {
    Command::new("bash")
        .arg(script())
        .args(["exec", node])
        .args(args)
        .output()
        .expect("run cluster.sh exec")
}

/// Like [`on`], and the command must succeed; returns its stdout.
fn on_ok(node: &str, args: &[&str]) -> String {
    let o = on(node, args);
    assert!(
        o.status.success(),
        "node-{node}: {args:?}: rc {:?}\n{}\n{}",
        o.status.code(),
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

/// The cluster's nodes (cluster.sh keeps them in its state dir: `a b`,
/// or `a b c` for the three-node tests).
fn all_nodes() -> &'static [&'static str] {
    static NODES: OnceLock<Vec<&'static str>> = OnceLock::new();
    NODES.get_or_init(|| {
        let up = std::fs::read_to_string(format!("{STATE}/nodes")).unwrap_or_default();
        let up: Vec<&str> = up.split_whitespace().collect();
        let nodes: Vec<_> = ["a", "b", "c"]
            .into_iter()
            .filter(|n| up.contains(n))
            .collect();
        if nodes.is_empty() {
            vec!["a", "b"]
        } else {
            nodes
        }
    })
}

/// Every node but `node`.
fn others(node: &str) -> Vec<&'static str> {
    all_nodes().iter().copied().filter(|n| *n != node).collect()
}

/// The other node of the two-node cluster.
fn peer(node: &str) -> &'static str {
    if node == "a" {
        "b"
    } else {
        "a"
    }
}

/// `node-a` -> `a`
fn short(uname: &str) -> &str {
    uname.strip_prefix("node-").unwrap_or(uname)
}

/// Evaluates an XPath expression (use `string()`/`count()`) on a document.
fn xpath(xml: &str, expr: &str) -> String {
    let mut child = Command::new("xmllint")
        .args(["--xpath", expr, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("xmllint");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(xml.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    text(&o.stdout)
}

/// `crm_mon -1 -X` (asked on node-a, whose Pacemaker is never disturbed).
fn crm_mon_xml() -> String {
    on_ok("a", &["crm_mon", "-1", "-X"])
}

/// `crm_mon -1`, as an admin reads it.
fn crm_mon_text() -> String {
    on_ok("a", &["crm_mon", "-1"])
}

/// Waits until the cluster has nothing left to do (`crm_resource --wait`).
fn settle() {
    on_ok("a", &["crm_resource", "--wait", "-T", "240s"]);
}

/// Where QEMU of `name` lives on a node, from libvirt's pid file (works
/// while that node's libvirtd is stopped).
fn qemu_alive(node: &str, name: &str) -> bool {
    live_qemu(node, name).is_some()
}

/// The pid of the live QEMU of `name` on a node, from libvirt's pid file.
fn live_qemu(node: &str, name: &str) -> Option<String> {
    let pidfile = format!("{STATE}/{node}/fs/run/libvirt/qemu/{name}.pid");
    let pid = std::fs::read_to_string(pidfile).ok()?.trim().to_owned();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&cmdline)
        .contains(&format!("guest={name},"))
        .then_some(pid)
}

/// `virsh -c qemu:///system ARGS` on a node, bounded (a test may have
/// frozen that node's libvirtd).
fn virsh(node: &str, args: &[&str]) -> Output {
    let cmd = ["timeout", "20", "virsh", "-q", "-c", "qemu:///system"];
    on(node, &[&cmd[..], args].concat())
}

/// Whether a node's libvirtd lists the domain as running.
fn libvirt_running(node: &str, name: &str) -> bool {
    let o = virsh(node, &["list", "--state-running", "--name"]);
    assert!(
        o.status.success(),
        "node-{node}: virsh list: {}",
        text(&o.stderr)
    );
    text(&o.stdout).lines().any(|l| l.trim() == name)
}

/// Bytes sent through a cluster-lab interface so far.
fn tx_bytes(node: &str, iface: &str) -> u64 {
    common::netns_tx_bytes(&format!("vc-{node}"), iface)
}

/// A node's pacemaker.log: its length now, and what was written since.
struct LogMark {
    path: String,
    at: usize,
}

impl LogMark {
    fn new(node: &str) -> LogMark {
        let path = cluster(&["log", node]);
        let at = std::fs::read(&path).map(|b| b.len()).unwrap_or(0);
        LogMark { path, at }
    }

    fn since(&self) -> String {
        let all = std::fs::read(&self.path).unwrap_or_default();
        String::from_utf8_lossy(&all[self.at.min(all.len())..]).into_owned()
    }
}

/// The operations a test's resource gets.
#[derive(Clone, Copy)]
struct Ops {
    start: u32,
    stop: u32,
    migrate_to: u32,
    migrate_from: u32,
}

/// The recommended configuration (README): start/stop 90 s,
/// migrate_to 120 s, migrate_from 60 s.
/// Short operations for a hung node: the calls Pacemaker makes there end
/// in reasonable time (the agent gives up a margin before each).
const SHORT_OPS: Ops = Ops {
    start: 30,
    stop: 30,
    migrate_to: 30,
    migrate_from: 30,
};

const OPS: Ops = Ops {
    start: 90,
    stop: 90,
    migrate_to: 120,
    migrate_from: 60,
};

/// A cluster resource `ocf:vmshift:server` whose guest has the same name.
/// Dropping it stops the server, deletes the resource and its constraints,
/// and removes the domain from both nodes.
struct Server {
    id: String,
    config: PathBuf,
}

impl Server {
    fn create(id: &str, ops: Ops) -> Server {
        Server::create_with(id, ops, &[])
    }

    /// With instance attributes added to the defaults, or replacing them.
    fn create_with(id: &str, ops: Ops, params: &[(&str, &str)]) -> Server {
        Server::create_on(id, ops, params, &[])
    }

    /// And with `cluster.sh xml` knobs for its guest (`disk=local`...; a
    /// shared disk with the write journal by default).
    fn create_on(id: &str, ops: Ops, params: &[(&str, &str)], knobs: &[&str]) -> Server {
        let config = PathBuf::from(format!("{STATE}/{id}.xml"));
        let s = Server {
            id: id.to_owned(),
            config,
        };
        s.remove_domains();
        let xml = cluster(&[&["xml", id], knobs].concat());
        std::fs::write(&s.config, xml).expect("write the guest XML");
        let timeouts =
            [ops.start, ops.stop, ops.migrate_to, ops.migrate_from].map(|t| t.to_string());
        // migration_transport is left to the agent's default, ssh, as on
        // most clusters (the lab's sshd on each node, root by key); the
        // test's params come after the defaults and replace them.
        let attrs: Vec<String> = [
            ("name", s.id.as_str()),
            ("config", &s.config.to_string_lossy()),
        ]
        .iter()
        .chain(params)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
        let head = ["primitive", id, "vmshift:server"];
        let args: Vec<&str> = head
            .into_iter()
            .chain(timeouts.iter().map(String::as_str))
            .chain(attrs.iter().map(String::as_str))
            .collect();
        let xml = cluster(&args);
        on_ok("a", &["cibadmin", "-C", "-o", "resources", "-X", &xml]);
        s
    }

    /// The nodes the cluster says the server is active on.
    fn nodes(&self) -> Vec<String> {
        let xml = crm_mon_xml();
        let r = format!("//resources/resource[@id='{}']", self.id);
        let n: usize = xpath(&xml, &format!("count({r}/node)")).parse().unwrap();
        (1..=n)
            .map(|i| short(&xpath(&xml, &format!("string({r}/node[{i}]/@name)"))).to_owned())
            .collect()
    }

    fn role(&self) -> String {
        xpath(
            &crm_mon_xml(),
            &format!("string(//resources/resource[@id='{}']/@role)", self.id),
        )
    }

    /// Waits until the cluster runs the server (Started) on exactly one
    /// node, `want` if given; returns that node.
    fn wait_started(&self, want: Option<&str>, within: Duration) -> String {
        self.wait_started_on(|n| want.is_none_or(|w| n == w), within)
    }

    /// Waits until the cluster runs the server (Started) on exactly one
    /// node, one that `ok` takes; returns that node.
    fn wait_started_on(&self, ok: impl Fn(&str) -> bool, within: Duration) -> String {
        let until = Instant::now() + within;
        loop {
            let nodes = self.nodes();
            if nodes.len() == 1 && ok(&nodes[0]) && self.role() == "Started" {
                return nodes[0].clone();
            }
            assert!(
                Instant::now() < until,
                "{} not started where wanted after {within:?}: on {nodes:?}\n{}",
                self.id,
                crm_mon_text()
            );
            sleep(Duration::from_millis(300));
        }
    }

    /// Failed actions of this resource in `crm_mon -1 -X`:
    /// (task, node, exit reason, exec ms).
    fn failures(&self) -> Vec<(String, String, String, u64)> {
        let xml = crm_mon_xml();
        let f = format!("//failures/failure[starts-with(@op_key, '{}_')]", self.id);
        let n: usize = xpath(&xml, &format!("count({f})")).parse().unwrap();
        (1..=n)
            .map(|i| {
                let a = |attr: &str| xpath(&xml, &format!("string(({f})[{i}]/@{attr})"));
                (
                    a("task"),
                    short(&a("node")).to_owned(),
                    a("exitreason"),
                    a("exec").parse().unwrap_or(0),
                )
            })
            .collect()
    }

    /// After a failed move from `from` (the cluster recovers by stopping
    /// the server on both nodes): the move constraint cleared, the server
    /// runs on one node only, booted once more since `boots`, with a
    /// heartbeat after its new start line. Returns the node.
    fn restarted_once(&self, from: &str, boots: usize) -> String {
        settle();
        on_ok(from, &["crm_resource", "--clear", "-r", &self.id]);
        settle();
        let now = self.wait_started(None, MOVE_WAIT);
        assert!(libvirt_running(&now, &self.id));
        for other in others(&now) {
            assert!(
                !qemu_alive(other, &self.id),
                "{} also on node-{other}",
                self.id
            );
        }
        // The restarted guest prints its start line a few seconds after
        // QEMU starts (a TCG boot).
        let until = Instant::now() + Duration::from_secs(90);
        while self.all_boots() == boots && Instant::now() < until {
            sleep(Duration::from_millis(500));
        }
        assert_eq!(
            self.all_boots(),
            boots + 1,
            "restarted once:\n{}",
            crm_mon_text()
        );
        // And it runs: a heartbeat after its start line.
        let ticking = || {
            let serial = self.serial(&now);
            serial
                .rsplit("lab-guest: start")
                .next()
                .is_some_and(|since| since.contains("lab-guest tick="))
        };
        while !ticking() {
            assert!(Instant::now() < until, "no heartbeat after the restart");
            sleep(Duration::from_millis(500));
        }
        // Power pulled and booted again: no acknowledged write lost.
        self.journal_goes_on(&now);
        now
    }

    /// Exactly one node's libvirtd runs the domain, and it is `node`; the
    /// cluster agrees, and has no failed action for it.
    fn assert_only_on(&self, node: &str) {
        assert!(libvirt_running(node, &self.id), "not running on {node}");
        for other in others(node) {
            assert!(
                !libvirt_running(other, &self.id),
                "{} also runs on node-{other}",
                self.id
            );
        }
        assert_eq!(self.nodes(), vec![node.to_owned()], "{}", crm_mon_text());
        assert_eq!(self.failures(), vec![], "{}", crm_mon_text());
    }

    /// Asks the cluster to stop the server (target-role Stopped) and waits
    /// until it has, for at most 120 s.
    fn stop(&self) {
        let id = self.id.as_str();
        let _ = on(
            "a",
            &[
                "crm_resource",
                "-r",
                id,
                "--meta",
                "-p",
                "target-role",
                "-v",
                "Stopped",
            ],
        );
        let _ = on("a", &["crm_resource", "--wait", "-T", "120s"]);
    }

    fn remove_domains(&self) {
        for &node in all_nodes() {
            for cmd in ["destroy", "undefine"] {
                let _ = virsh(node, &[cmd, &self.id]);
            }
            // The serial file is appended to: drop the ticks of earlier runs.
            if let Ok(p) = Command::new("bash")
                .arg(script())
                .args(["serial", node, &self.id])
                .output()
            {
                let _ = std::fs::remove_file(text(&p.stdout));
            }
        }
    }
}

impl common::Console for Server {
    fn name(&self) -> &str {
        &self.id
    }

    fn serial_path(&self, node: &str) -> PathBuf {
        PathBuf::from(cluster(&["serial", node, &self.id]))
    }

    fn disk_path(&self, node: &str) -> PathBuf {
        PathBuf::from(cluster(&["disk", &self.id, node]))
    }

    fn nodes(&self) -> Vec<&'static str> {
        all_nodes().to_vec()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let id = self.id.as_str();
        self.stop();
        let _ = on("a", &["crm_resource", "--clear", "-r", id]);
        let _ = on("a", &["crm_resource", "--cleanup", "-r", id]);
        let _ = on(
            "a",
            &[
                "cibadmin",
                "-D",
                "-o",
                "resources",
                "-X",
                &format!("<primitive id=\"{id}\"/>"),
            ],
        );
        let _ = on("a", &["crm_resource", "--wait", "-T", "60s"]);
        self.remove_domains();
        let _ = std::fs::remove_file(&self.config);
    }
}

/// What one move did.
struct Move {
    /// From the request to the server Started on the target only.
    took: Duration,
    /// Bytes the source sent over the migration link and the back-channel.
    mn_bytes: u64,
    bc_bytes: u64,
    /// The source's and the target's pacemaker.log during the move.
    src_log: String,
    tgt_log: String,
}

impl Move {
    /// The agent's result line of migrate_to (`... migrated to node-b over
    /// migration network node-b.mn (10.253.1.2) in 2.36 s, downtime ...`).
    fn result_line(&self) -> &str {
        self.src_log
            .lines()
            .find(|l| l.contains("migrate_to:") && l.contains(" migrated to "))
            .map_or("(no result line)", |l| {
                let l = l.split("migrate_to: ").nth(1).unwrap_or(l);
                l.split(" -> ").next().unwrap_or(l)
            })
    }
}

/// A live move of the server from `from` to `to`, started by `trigger`
/// (an admin's `crm_resource --move`, a standby...). Checks that the
/// cluster migrated it (migrate_to on the source, migrate_from on the
/// target, neither start nor stop on the target), that exactly one node
/// runs it afterwards, and that the guest went on: its heartbeat continues
/// on the target and it did not boot again.
fn live_move(s: &Server, from: &str, to: &str, trigger: impl FnOnce()) -> Move {
    live_move_away(s, from, Some(to), trigger).1
}

/// [`live_move`] to `to`, or, with None, to wherever the cluster puts the
/// server; returns that node with the move.
fn live_move_away(
    s: &Server,
    from: &str,
    to: Option<&str>,
    trigger: impl FnOnce(),
) -> (String, Move) {
    let id = s.id.as_str();
    let tick = s.wait_heartbeat(from);
    let boots = s.all_boots();
    let marks: Vec<_> = all_nodes().iter().map(|n| (*n, LogMark::new(n))).collect();
    let since = |node: &str| marks.iter().find(|(n, _)| *n == node).unwrap().1.since();
    let (mn0, bc0) = (
        tx_bytes(from, &format!("vc-{from}-mn")),
        tx_bytes(from, &format!("vc-{from}-bc")),
    );
    let t0 = Instant::now();
    trigger();
    let to = s.wait_started_on(|n| n != from && to.is_none_or(|w| n == w), MOVE_WAIT);
    let took = t0.elapsed();
    settle();
    let m = Move {
        took,
        mn_bytes: tx_bytes(from, &format!("vc-{from}-mn")) - mn0,
        bc_bytes: tx_bytes(from, &format!("vc-{from}-bc")) - bc0,
        src_log: since(from),
        tgt_log: since(&to),
    };
    let to = to.as_str();
    let result = |op: &str, node: &str| format!("Result of {op} operation for {id} on node-{node}");
    assert!(
        m.src_log
            .contains(&format!("{}: ok", result("migrate_to", from))),
        "no migrate_to on node-{from}:\n{}",
        m.src_log
    );
    assert!(
        m.tgt_log
            .contains(&format!("{}: ok", result("migrate_from", to))),
        "no migrate_from on node-{to}:\n{}",
        m.tgt_log
    );
    for (log, node) in [(&m.tgt_log, to), (&m.src_log, from)] {
        assert!(
            !log.contains(&result("start", node)),
            "start on node-{node}: not a live migration"
        );
    }
    assert!(
        !m.tgt_log.contains(&result("stop", to)),
        "stop on the target node-{to}"
    );
    s.assert_only_on(to);
    let now = s.wait_tick_after(to, tick);
    assert_eq!(
        s.all_boots(),
        boots,
        "{id} booted again on the way to node-{to}"
    );
    eprintln!(
        "[{id}] node-{from} -> node-{to} in {:.1?} (ticks {tick} -> {now}); {} MiB over -mn, {} MiB over -bc; {}",
        m.took,
        m.mn_bytes >> 20,
        m.bc_bytes >> 20,
        m.result_line()
    );
    (to.to_owned(), m)
}

/// `crm_resource --move` to `to`, then `--clear`, as an admin does.
fn admin_move(s: &Server, from: &str, to: &str) -> Move {
    let m = live_move(s, from, to, || request_move(s, from, to));
    on_ok(from, &["crm_resource", "--clear", "-r", &s.id]);
    settle();
    s.assert_only_on(to);
    m
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

// ---------------------------------------------------------------- tests

#[test]
#[ignore = "needs the cluster lab: make cluster-test"]
fn cluster_starts_the_server_and_probes_report_7_elsewhere() {
    let s = Server::create("srv-probe", OPS);
    let t0 = Instant::now();
    let node = s.wait_started(None, Duration::from_secs(120));
    let other = peer(&node);
    eprintln!(
        "[srv-probe] Started on node-{node} after {:.1?}",
        t0.elapsed()
    );
    s.assert_only_on(&node);
    // The probe on the other node: rc 7, in its log and in the CIB.
    let log = std::fs::read_to_string(cluster(&["log", other])).unwrap();
    let probe = format!("Result of probe operation for srv-probe on node-{other}: not running");
    let line = log
        .lines()
        .find(|l| l.contains(&probe))
        .unwrap_or_else(|| panic!("no '{probe}' in node-{other}'s log"));
    assert!(line.ends_with("rc=7"), "{line}");
    let status = on_ok("a", &["cibadmin", "-Q", "-o", "status"]);
    let last = format!(
        "//node_state[@uname='node-{other}']//lrm_resource[@id='srv-probe']/lrm_rsc_op[@id='srv-probe_last_0']"
    );
    assert_eq!(
        xpath(&status, &format!("string({last}/@operation)")),
        "monitor"
    );
    assert_eq!(xpath(&status, &format!("string({last}/@interval)")), "0");
    assert_eq!(xpath(&status, &format!("string({last}/@rc-code)")), "7");
    // The guest runs where the cluster says, and only there.
    let tick = s.wait_heartbeat(&node);
    assert_eq!(s.all_boots(), 1);
    assert!(s.serial(other).is_empty(), "output on node-{other}");
    eprintln!("[srv-probe] heartbeat tick {tick} on node-{node}");
}

#[test]
#[ignore = "needs the cluster lab: make cluster-test"]
fn admin_move_live_migrates_over_the_migration_link() {
    let s = Server::create("srv-move", OPS);
    let from = s.wait_started(None, Duration::from_secs(120));
    let to = peer(&from);
    let m = admin_move(&s, &from, to);
    assert!(
        m.mn_bytes > COPY_BYTES && m.bc_bytes < COPY_BYTES / 4,
        "mn {} bc {}",
        m.mn_bytes,
        m.bc_bytes
    );
    let line = m.result_line();
    let network = format!("migrated to node-{to} over migration network node-{to}.mn");
    for word in [network.as_str(), "downtime", "MiB copied"] {
        assert!(line.contains(word), "{word}: {line}");
    }
    // And back.
    let back = admin_move(&s, to, &from);
    assert!(back.mn_bytes > COPY_BYTES && back.bc_bytes < COPY_BYTES / 4);
    assert_eq!(s.all_boots(), 1);
}

/// A server whose disk is a plain image on each node's own filesystem (no
/// shared storage, as on a small cluster without a SAN): Pacemaker's moves
/// copy it with the RAM over the migration link, both ways, the guest
/// writing all along; once the cluster has stopped it, the image on the
/// node it ran on last holds every write the guest acknowledged.
#[test]
#[ignore = "needs the cluster lab: make cluster-test"]
fn a_server_on_local_disks_moves_with_its_disk_both_ways() {
    moves_both_ways_keeping_every_write(Server::create_on("srv-local", OPS, &[], &["disk=local"]));
}

/// A server whose disk is an NBD export that qemu-nbd serves in the
/// storage namespace (as Ceph or an NBD server on a storage network):
/// libvirt treats it as shared, so Pacemaker's moves copy only the RAM,
/// and the export holds every write the guest acknowledged.
#[test]
#[ignore = "needs the cluster lab: make cluster-test"]
fn a_server_on_a_network_disk_moves_both_ways() {
    moves_both_ways_keeping_every_write(Server::create_on("srv-nbd", OPS, &[], &["disk=nbd"]));
}

/// Moves the server there and back under Pacemaker (the RAM, and a local
/// disk with it, over the migration link), then stops it and checks its
/// journal on the node it ran on last.
fn moves_both_ways_keeping_every_write(s: Server) {
    let from = s.wait_started(None, Duration::from_secs(120));
    let to = peer(&from);
    for (a, b) in [(from.as_str(), to), (to, from.as_str())] {
        let m = admin_move(&s, a, b);
        assert!(
            m.mn_bytes > COPY_BYTES && m.bc_bytes < COPY_BYTES / 4,
            "mn {} bc {}",
            m.mn_bytes,
            m.bc_bytes
        );
        assert!(m.result_line().contains(&format!("migrated to node-{b}")));
    }
    s.stop();
    assert!(!qemu_alive("a", &s.id) && !qemu_alive("b", &s.id));
    s.check_journal(&from, false);
    assert_eq!(s.all_boots(), 1);
}

/// A server whose moves may use post-copy, over a copy capped at 1 MiB/s,
/// with 20 s for migrate_to and migrate_from.
fn postcopy_server(id: &str) -> Server {
    let ops = Ops {
        migrate_to: 20,
        migrate_from: 20,
        ..OPS
    };
    let params = [("migration_postcopy", "true"), ("migration_speed", "1")];
    Server::create_with(id, ops, &params)
}

/// An admin's `crm_resource --move`, switched to post-copy (`virsh
/// migrate-postcopy`) as soon as QEMU's copy has begun (refused before).
fn move_in_postcopy(s: &Server, from: &str, to: &str) {
    let node = format!("node-{to}");
    on_ok(from, &["crm_resource", "--move", "-r", &s.id, "-N", &node]);
    let until = Instant::now() + Duration::from_secs(60);
    while !virsh(from, &["migrate-postcopy", &s.id]).status.success() {
        assert!(
            Instant::now() < until,
            "no migration to switch to post-copy"
        );
        sleep(Duration::from_millis(250));
    }
}

/// The migration link of a move from `from` fails (see
/// [`common::LinkDown::with_reset`]) until the returned guard is dropped.
fn break_migration_link(from: &str) -> common::LinkDown {
    let iface = if from == "a" { "vc-a-mn" } else { "vc-b-mn" };
    common::LinkDown::with_reset(
        format!("vc-{from}"),
        iface,
        ["vc-a", "vc-b"],
        "10.253.1.0/24",
    )
}

#[test]
#[ignore = "needs the cluster lab: make cluster-test"]
fn a_move_whose_post_copy_outlasts_migrate_to_ends_without_failures() {
    // Post-copy allowed, the copy capped at 1 MiB/s, and the admin
    // switches the move to post-copy (`virsh migrate-postcopy`) as soon as
    // it runs: the last 100 MiB take about a minute, longer than
    // migrate_to's and migrate_from's 20 s. Pacemaker's sequence
    // (migrate_to, migrate_from, stop on the source) must end the move
    // with no failed action and the guest's memory intact.
    postcopy_move_ends_well("srv-postcopy", &["post-copy still copies"], |_| {});
}

/// A post-copy move of a new server `id`, switched as soon as it runs,
/// `meanwhile` done to the source's node after the switch: it ends with the
/// guest on the target, never booted again, no failed action, and the
/// source's log saying each of `said`.
fn postcopy_move_ends_well(id: &str, said: &[&str], meanwhile: impl FnOnce(&str)) {
    let s = postcopy_server(id);
    let from = s.wait_started(None, Duration::from_secs(120));
    let to = peer(&from);
    let m = live_move(&s, &from, to, || {
        move_in_postcopy(&s, &from, to);
        meanwhile(&from);
    });
    on_ok(&from, &["crm_resource", "--clear", "-r", &s.id]);
    for want in said {
        assert!(m.src_log.contains(want), "{want}:\n{}", m.src_log);
    }
    settle();
    s.assert_only_on(to);
    assert_eq!(s.all_boots(), 1);
    assert!(s.failures().is_empty(), "{}", crm_mon_text());
}

#[test]
#[ignore = "needs the cluster lab: make cluster-test"]
fn a_move_whose_post_copy_link_fails_and_comes_back_ends_without_failures() {
    // As above, but 2 s into the post-copy the migration link fails, and
    // it is back 4 s later: migrate_to resumes the copy over a new
    // connection within its 20 s, and the move ends as if nothing had
    // happened: no failed action, no new boot, the heartbeat goes on.
    postcopy_move_ends_well("srv-pc-resume", &["broke (", "resuming the copy"], |from| {
        sleep(Duration::from_secs(2));
        let _down = break_migration_link(from);
        sleep(Duration::from_secs(4));
    });
}

#[test]
#[ignore = "needs the cluster lab: make cluster-test"]
fn a_broken_post_copy_is_restarted_once_and_never_runs_twice() {
    // As above, but the migration link stays down: the guest's memory is
    // split and it can run on neither node. migrate_to tries to resume the
    // copy until its 20 s are up, then fails with that reason, and
    // Pacemaker's recovery stops the server on both nodes (at once: a
    // guest without all its memory cannot shut down gracefully) and starts
    // it again: one new boot, on one node.
    let s = postcopy_server("srv-pc-broken");
    let from = s.wait_started(None, Duration::from_secs(120));
    let to = peer(&from);
    s.wait_heartbeat(&from);
    let boots = s.all_boots();
    let logs = [LogMark::new("a"), LogMark::new("b")];
    move_in_postcopy(&s, &from, to);
    sleep(Duration::from_secs(2));
    let _down = break_migration_link(&from);
    let _now = s.restarted_once(&from, boots);
    let log = logs.iter().map(LogMark::since).collect::<String>();
    for want in [
        "post-copy of srv-pc-broken failed",
        "resuming the post-copy of srv-pc-broken failed",
        "destroyed (its post-copy had failed)",
    ] {
        assert!(log.contains(want), "{want}:\n{log}");
    }
    let failed: Vec<_> = s.failures().into_iter().map(|f| f.0).collect();
    assert_eq!(failed, ["migrate_to"], "{}", crm_mon_text());
}

#[test]
#[ignore = "needs the cluster lab: make cluster-test"]
fn exit_reasons_reach_crm_mon_whole_with_what_failed_first() {
    // A start that fails on both nodes (the config file is missing: 5),
    // for a domain with a long non-ASCII name and a long path whose end
    // has an `é` before the reason's closing quote: what the admin reads
    // in `crm_mon --output-as=xml` is vmshift's reason, whole (Pacemaker
    // keeps 128 bytes), with what failed first, and each node tried the
    // start once. Pacemaker 2.1.5 stops XML-escaping at the first
    // non-ASCII byte; a raw quote after one made it restart the resource
    // in a loop (700 starts in 30 s) and keep no reason, so the agent
    // spells such text out as `\u{e9}`. (Pacemaker records no exit
    // reason for a failed migrate_to in crm_mon, seen in the broken
    // post-copy test: the failure shows there without one.)
    let name = format!("srv-reason-{}", "é".repeat(60));
    let path = format!("/nonexistent/{}é/vm.xml", "p".repeat(120));
    let logs = [LogMark::new("a"), LogMark::new("b")];
    let s = Server::create_with(
        "srv-reason",
        OPS,
        &[("name", name.as_str()), ("config", path.as_str())],
    );
    let until = Instant::now() + Duration::from_secs(90);
    let mut failures = s.failures();
    while failures.len() < 2 && Instant::now() < until {
        sleep(Duration::from_millis(500));
        failures = s.failures();
    }
    assert_eq!(failures.len(), 2, "{}", crm_mon_text());
    for (task, node, reason, _) in &failures {
        assert_eq!(task, "start", "{}", crm_mon_text());
        // crm_mon shows the reason entity-escaped once more than the CIB.
        let reason = reason.replace("&quot;", "\"").replace("&amp;", "&");
        assert!(
            reason.starts_with("config \"...")
                && reason.contains(r#"p\u{e9}/vm.xml" is not readable"#),
            "node-{node}: {reason}"
        );
        assert!(reason.len() <= 128, "node-{node}: {} bytes", reason.len());
    }
    // No second try on either node: rc 5 bans the server from the node.
    // (The executor logs each start's output once, the controller once more.)
    sleep(Duration::from_secs(5));
    for (node, log) in ["a", "b"].iter().zip(&logs) {
        let tries = log
            .since()
            .lines()
            .filter(|l| l.contains("(log_op_output)") && l.contains("ERROR: start: config"))
            .count();
        assert_eq!(tries, 1, "node-{node} tried the start {tries} times");
    }
}

#[test]
#[ignore = "needs the cluster lab: make cluster-test"]
fn tls_moves_go_both_ways_under_pacemaker() {
    // migration_transport=tls as the README sets it up: libvirtd's TLS
    // listener for the control channel and QEMU's native TLS for the RAM
    // copy, both with the lab CA's certificates, the copy on the migration
    // link (the lab test captures that link and sees only TLS records).
    let s = Server::create_with("srv-tls", OPS, &[("migration_transport", "tls")]);
    let home = s.wait_started(None, Duration::from_secs(120));
    let away = peer(&home);
    for (from, to) in [(home.as_str(), away), (away, home.as_str())] {
        let m = admin_move(&s, from, to);
        assert!(m.mn_bytes > COPY_BYTES && m.bc_bytes < COPY_BYTES / 4);
        let plan = format!("control qemu+tls://node-{to}/system, data tcp://");
        let tls_as = format!("(TLS as node-{to}.mn)");
        for want in [plan.as_str(), tls_as.as_str()] {
            assert!(m.src_log.contains(want), "{want}:\n{}", m.src_log);
        }
    }
    assert_eq!(s.all_boots(), 1);
}

#[test]
#[ignore = "needs the cluster lab: make cluster-test"]
fn round_trips_without_restarts_or_failures() {
    let rounds: usize = std::env::var("VMSHIFT_SOAK_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let logs = [LogMark::new("a"), LogMark::new("b")];
    let s = Server::create("srv-rounds", OPS);
    let home = s.wait_started(None, Duration::from_secs(120));
    let away = peer(&home);
    let mut times = Vec::new();
    for round in 1..=rounds {
        for (from, to) in [(home.as_str(), away), (away, home.as_str())] {
            let m = admin_move(&s, from, to);
            assert!(
                m.mn_bytes > COPY_BYTES,
                "round {round}: {} bytes over -mn",
                m.mn_bytes
            );
            times.push(m.took);
        }
        assert_eq!(s.all_boots(), 1, "round {round}: the guest restarted");
        eprintln!("[srv-rounds] round {round}/{rounds} done");
    }
    // No restart, no failure, one node: also in Pacemaker's own words.
    let xml = crm_mon_xml();
    let fails = xpath(
        &xml,
        "string(//node_history//resource_history[@id='srv-rounds']/@fail-count)",
    );
    assert!(fails.is_empty() || fails == "0", "fail-count {fails}");
    for (node, mark) in ["a", "b"].into_iter().zip(&logs) {
        let starts = mark
            .since()
            .matches(&format!(
                "Result of start operation for srv-rounds on node-{node}"
            ))
            .count();
        assert_eq!(starts, usize::from(node == home), "starts on node-{node}");
    }
    let max = *times.iter().max().unwrap();
    eprintln!(
        "[srv-rounds] {} moves: median {:.1?}, max {max:.1?}, guest ticking, 1 boot",
        times.len(),
        median(&mut times)
    );
}

#[test]
#[ignore = "needs the cluster lab: make cluster-test"]
fn standby_evacuates_two_servers_at_once_by_live_migration() {
    let s1 = Server::create("srv-standby", OPS);
    let from = s1.wait_started(None, Duration::from_secs(120));
    let to = peer(&from);
    let s2 = Server::create("srv-standby2", OPS);
    if s2.wait_started(None, Duration::from_secs(120)) != from {
        admin_move(&s2, to, &from);
    }
    // Both moves may run at once: migration-limit bounds the moves per
    // node (unbounded by default), here to the two.
    let _limit = ClusterOption::set("migration-limit", "2");
    for s in [&s1, &s2] {
        s.wait_heartbeat(&from);
    }
    let uname = format!("node-{from}");
    // A failed test still takes the node out of standby.
    let standby = Standby(uname.clone());
    let is_standby = || {
        xpath(
            &crm_mon_xml(),
            &format!("string(//nodes/node[@name='{uname}']/@standby)"),
        )
    };
    let (src, tgt) = (LogMark::new(&from), LogMark::new(to));
    standby.set("on");
    for s in [&s1, &s2] {
        s.wait_started(Some(to), MOVE_WAIT);
    }
    settle();
    assert_eq!(is_standby(), "true");
    let (src, tgt) = (src.since(), tgt.since());
    for s in [&s1, &s2] {
        let ok = format!("Result of migrate_to operation for {} on {uname}: ok", s.id);
        assert!(src.contains(&ok), "{ok}:\n{src}");
        // Live: migrate_from on the target, never a start there.
        let start = format!("Result of start operation for {} on node-{to}", s.id);
        assert!(!tgt.contains(&start), "a restart, not a live move:\n{tgt}");
    }
    // At once: both moves began before either ended, as the source's
    // executor ran them (the DC words its "Initiating" line differently
    // when the source is the DC itself, and a remote DC's log interleaves
    // the two nodes' confirmations).
    let at = |what: &str| {
        src.find(what)
            .unwrap_or_else(|| panic!("no '{what}' in the source's log:\n{src}"))
    };
    let began = [&s1, &s2].map(|s| at(&format!("executing - rsc:{} action:migrate_to", s.id)));
    let ended = [&s1, &s2].map(|s| {
        at(&format!(
            "Result of migrate_to operation for {} on {uname}: ok",
            s.id
        ))
    });
    assert!(
        began.iter().max() < ended.iter().min(),
        "one after the other:\n{src}"
    );
    standby.set("off");
    settle();
    assert_eq!(is_standby(), "false");
    // Back from standby, the servers stay where they are (stickiness),
    // each still in its first boot.
    for s in [&s1, &s2] {
        s.assert_only_on(to);
        let tick = s.last_tick(to).unwrap_or(0);
        s.wait_tick_after(to, tick);
        assert_eq!(s.all_boots(), 1);
    }
}

/// A node out of standby when the test ends, pass or fail.
struct Standby(String);

impl Standby {
    /// `on` or `off`.
    fn set(&self, value: &str) {
        Capacity::attribute(&["--node", self.0.as_str()], "standby", Some(value));
    }
}

impl Drop for Standby {
    fn drop(&mut self) {
        self.set("off");
    }
}

/// A cluster option set for one test, deleted when it ends, pass or fail.
struct ClusterOption(&'static str);

impl ClusterOption {
    fn set(name: &'static str, value: &str) -> ClusterOption {
        Capacity::attribute(&["--type", "crm_config"], name, Some(value));
        ClusterOption(name)
    }
}

impl Drop for ClusterOption {
    fn drop(&mut self) {
        Capacity::attribute(&["--type", "crm_config"], self.0, None);
    }
}

#[test]
#[ignore = "needs the cluster lab: make cluster-test"]
fn migration_link_down_falls_back_to_the_back_channel() {
    let s = Server::create("srv-linkdown", OPS);
    let first = s.wait_started(None, Duration::from_secs(120));
    {
        // vc-a-mn down: a move from node-a has no route to node-b.mn, and a
        // move to node-a finds node-a.mn unreachable. Both fall back.
        let _down = common::LinkDown::in_netns("vc-a".into(), "vc-a-mn");
        for (from, to) in [
            (first.as_str(), peer(&first)),
            (peer(&first), first.as_str()),
        ] {
            let m = admin_move(&s, from, to);
            assert!(
                m.src_log.contains(&format!("falling back to node-{to}")),
                "{}",
                m.src_log
            );
            assert!(
                m.result_line().contains(&format!("fallback node-{to}")),
                "{}",
                m.result_line()
            );
            assert!(
                m.bc_bytes > COPY_BYTES && m.mn_bytes < COPY_BYTES / 4,
                "mn {} bc {}",
                m.mn_bytes,
                m.bc_bytes
            );
        }
    }
    // The link is back: the next move uses it again.
    let m = admin_move(&s, &first, peer(&first));
    assert!(m.mn_bytes > COPY_BYTES, "mn {}", m.mn_bytes);
    assert!(!m.src_log.contains("falling back"), "{}", m.src_log);
    assert_eq!(s.all_boots(), 1);
}

/// SIGSTOPs a node's libvirtd; SIGCONT when dropped, pass or fail.
struct Stopped(i32);

impl Stopped {
    fn new(node: &str) -> Stopped {
        let pid: i32 = cluster(&["libvirtd-pid", node]).parse().expect("pid");
        // SAFETY: kill(2) on the pid the lab recorded for its own libvirtd,
        // with a valid signal; no memory is involved.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

#[test]
#[ignore = "needs the cluster lab: make cluster-test"]
fn hung_target_libvirtd_fails_the_move_fast_and_never_runs_twice() {
    let s = Server::create("srv-hung", SHORT_OPS);
    let src = s.wait_started(None, Duration::from_secs(120));
    let tgt = peer(&src);
    s.wait_heartbeat(&src);
    let boots = s.all_boots();
    let log = LogMark::new(&src);
    {
        let _stopped = Stopped::new(tgt);
        let t0 = Instant::now();
        on_ok(
            "a",
            &[
                "crm_resource",
                "--move",
                "-r",
                "srv-hung",
                "-N",
                &format!("node-{tgt}"),
            ],
        );
        // migrate_to fails, well before its 30 s timeout.
        let until = Instant::now() + Duration::from_secs(60);
        let failed = loop {
            if let Some(f) = s
                .failures()
                .into_iter()
                .find(|f| f.0 == "migrate_to" && f.1 == src)
            {
                break f;
            }
            assert!(
                Instant::now() < until,
                "no failed migrate_to:\n{}",
                crm_mon_text()
            );
            assert!(
                !(qemu_alive("a", "srv-hung") && qemu_alive("b", "srv-hung")),
                "QEMU on both nodes"
            );
            sleep(Duration::from_millis(300));
        };
        eprintln!(
            "[srv-hung] migrate_to failed after {} ms ({:.1?} after the request)",
            failed.3,
            t0.elapsed()
        );
        assert!(failed.3 < 20_000, "migrate_to took {} ms", failed.3);
        let mon = crm_mon_text();
        assert!(
            mon.contains(&format!(
                "srv-hung migrate_to on node-{src} returned 'error'"
            )),
            "{mon}"
        );
        // The agent's exit reason, as the source's controller recorded it.
        // (Pacemaker 2.1.5 stores no exit reason for migrate_to/migrate_from
        // in the CIB, so crm_mon's failed action shows none.)
        let src_log = log.since();
        let reason = src_log
            .lines()
            .find(|l| {
                l.contains(&format!(
                    "Result of migrate_to operation for srv-hung on node-{src}: error ("
                ))
            })
            .unwrap_or_else(|| panic!("no migrate_to result in node-{src}'s log:\n{src_log}"));
        assert!(
            reason.contains(&format!("cannot ask node-{tgt} about the domain"))
                && reason.contains("did not answer"),
            "{reason}"
        );
        // Pacemaker now recovers ("might be active on 2 nodes"): it stops
        // the server everywhere, fails to start it on the hung node and
        // starts it on the source again. At no time does QEMU run on both
        // nodes, and in the end it runs on the source only.
        let until = Instant::now() + Duration::from_secs(300);
        loop {
            assert!(
                !(qemu_alive("a", "srv-hung") && qemu_alive("b", "srv-hung")),
                "QEMU on both nodes:\n{}",
                crm_mon_text()
            );
            if s.nodes() == vec![src.clone()]
                && s.role() == "Started"
                && on("a", &["crm_resource", "--wait", "-T", "1s"])
                    .status
                    .success()
            {
                break;
            }
            assert!(Instant::now() < until, "not settled:\n{}", crm_mon_text());
            sleep(Duration::from_millis(500));
        }
        assert!(qemu_alive(&src, "srv-hung") && !qemu_alive(tgt, "srv-hung"));
        let tick = s.last_tick(&src).unwrap_or(0);
        s.wait_tick_after(&src, tick);
        eprintln!(
            "[srv-hung] settled {:.1?} after the request: runs on node-{src} only; \
             the guest was restarted {} time(s) by Pacemaker's recovery\n{}",
            t0.elapsed(),
            s.all_boots() - boots,
            crm_mon_text()
        );
    }
    // libvirtd continued: clean up, and the move works, live.
    on_ok("a", &["crm_resource", "--clear", "-r", "srv-hung"]);
    on_ok("a", &["crm_resource", "--cleanup", "-r", "srv-hung"]);
    settle();
    s.wait_started(Some(&src), Duration::from_secs(60));
    assert_eq!(s.failures(), vec![]);
    let boots = s.all_boots();
    admin_move(&s, &src, tgt);
    assert_eq!(s.all_boots(), boots);
}

#[test]
#[ignore = "needs the cluster lab: make cluster-test"]
fn force_check_is_0_on_the_active_node_and_7_on_the_other() {
    let s = Server::create("srv-check", OPS);
    let node = s.wait_started(None, Duration::from_secs(120));
    s.wait_heartbeat(&node);
    for (n, want) in [(node.as_str(), 0), (peer(&node), 7)] {
        let o = on(n, &["crm_resource", "--force-check", "-r", "srv-check"]);
        eprintln!(
            "[srv-check] node-{n}: {}{}",
            text(&o.stdout),
            text(&o.stderr)
        );
        assert_eq!(o.status.code(), Some(want), "force-check on node-{n}");
    }
    s.assert_only_on(&node);
}

/// The pid of the agent running `action` for resource `id`, found in the
/// process table by its arguments and its OCF_RESOURCE_INSTANCE: the test
/// freezes this process, which Pacemaker started, and nothing else.
fn agent_pid(action: &str, id: &str) -> Option<i32> {
    let instance = format!("OCF_RESOURCE_INSTANCE={id}");
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| {
            let read = |f: &str| std::fs::read(format!("/proc/{pid}/{f}")).unwrap_or_default();
            let cmdline = read("cmdline");
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            args.len() >= 2
                && args[0].ends_with(b"/server")
                && args[1] == action.as_bytes()
                && read("environ")
                    .split(|&b| b == 0)
                    .any(|v| v == instance.as_bytes())
        })
}

#[test]
#[ignore = "needs the cluster lab: make cluster-test"]
fn a_migrate_to_pacemaker_kills_is_stopped_on_both_nodes_and_runs_once() {
    // Pacemaker SIGKILLs a migrate_to at its timeout. libvirt's
    // peer-to-peer job goes on without the agent, and Pacemaker, taking
    // the server for active on both nodes, stops it on both: the source
    // still copies, the target holds the paused incoming copy, and
    // libvirt's job lock refuses a shutdown for 30 s. Both stops must
    // succeed in time (a failed stop is a fence), and the server must then
    // run once. The agent is frozen (SIGSTOP) mid-copy so that only
    // Pacemaker's kill can end it, as with an agent stuck past its time.
    let ops = Ops {
        migrate_to: 20,
        ..OPS
    };
    let s = Server::create_with("srv-killed", ops, &[("migration_speed", "5")]);
    let from = s.wait_started(None, Duration::from_secs(120));
    let to = peer(&from);
    s.wait_heartbeat(&from);
    let boots = s.all_boots();
    let logs = [LogMark::new("a"), LogMark::new("b")];
    let node_to = format!("node-{to}");
    on_ok(
        &from,
        &["crm_resource", "--move", "-r", &s.id, "-N", &node_to],
    );
    // The copy has begun once the target holds the incoming domain.
    let until = Instant::now() + Duration::from_secs(60);
    let incoming = || text(&virsh(to, &["domstate", &s.id]).stdout).trim() == "paused";
    while !incoming() {
        assert!(Instant::now() < until, "no incoming copy on node-{to}");
        sleep(Duration::from_millis(200));
    }
    let pid = agent_pid("migrate_to", &s.id).expect("the agent's migrate_to");
    // SAFETY: kill(2) with the pid of the agent Pacemaker runs for this
    // test's resource, found above; no memory is involved.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    s.restarted_once(&from, boots);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "Pacemaker killed the frozen agent"
    );
    let log = logs.iter().map(LogMark::since).collect::<String>();
    for node in ["a", "b"] {
        let stop = format!("Result of stop operation for {} on node-{node}: ok", s.id);
        assert!(log.contains(&stop), "{stop}:\n{log}");
    }
    assert!(!log.contains("state change lock"), "{log}");
    // Only the killed migrate_to failed: no failed stop (a fence on a
    // cluster with fencing), and the server runs once, booted once more.
    let failed: Vec<_> = s.failures().into_iter().map(|f| f.0).collect();
    assert_eq!(failed, ["migrate_to"], "{}", crm_mon_text());
}

/// Node capacity for `placement-strategy=utilization`, taken back (the
/// strategy first, then each node's attributes) when the test ends, pass
/// or fail.
struct Capacity;

impl Capacity {
    fn set(nodes: &[(&str, &str, &str)]) -> Capacity {
        for &(node, cpu, mem) in nodes {
            Capacity::node(node, "cpu", Some(cpu));
            Capacity::node(node, "host_memory", Some(mem));
        }
        Capacity::attribute(
            &["--type", "crm_config"],
            "placement-strategy",
            Some("utilization"),
        );
        Capacity
    }

    /// Sets (or, with None, deletes) a node's utilization attribute.
    fn node(node: &str, attr: &str, value: Option<&str>) {
        let uname = format!("node-{node}");
        Capacity::attribute(&["--node", &uname, "--utilization"], attr, value);
    }

    /// `crm_attribute WHERE --name NAME --update VALUE`, or `--delete`
    /// (which, run from a Drop, must not panic: its failure is ignored).
    fn attribute(place: &[&str], name: &str, value: Option<&str>) {
        let mut args = [&["crm_attribute"], place, &["--name", name]].concat();
        match value {
            Some(v) => {
                args.extend(["--update", v]);
                on_ok("a", &args);
            }
            None => {
                args.push("--delete");
                let _ = on("a", &args);
            }
        }
    }
}

impl Drop for Capacity {
    fn drop(&mut self) {
        Capacity::attribute(&["--type", "crm_config"], "placement-strategy", None);
        for node in ["a", "b"] {
            for attr in ["cpu", "host_memory"] {
                Capacity::node(node, attr, None);
            }
        }
    }
}

/// autoset_utilization_cpu and _host_memory (on by default): start writes
/// the server's vCPUs and memory as its utilization; with
/// placement-strategy=utilization, Pacemaker then refuses to move it to a
/// node without the capacity (it keeps running where it is), and moves it
/// live once that node has room.
#[test]
#[ignore = "needs the cluster lab: make cluster-test"]
fn utilization_from_the_definition_keeps_the_server_off_a_node_without_room() {
    let s = Server::create("srv-util", OPS);
    let from = s.wait_started(None, Duration::from_secs(120));
    // Started is before the guest has booted: its boot is counted below.
    s.wait_heartbeat(&from);
    let to = peer(&from);
    let xml = std::fs::read_to_string(&s.config).unwrap();
    let mem = xml
        .split("<memory unit='MiB'>")
        .nth(1)
        .and_then(|m| m.split('<').next())
        .expect("the guest's memory")
        .to_owned();
    let get = |attr: &str| {
        let o = on(
            "a",
            &[
                "crm_resource",
                "--quiet",
                "--utilization",
                "--resource",
                &s.id,
                "--get-parameter",
                attr,
            ],
        );
        text(&o.stdout).trim().to_owned()
    };
    let until = Instant::now() + Duration::from_secs(30);
    while (get("cpu"), get("host_memory")) != ("1".to_owned(), mem.clone()) {
        assert!(
            Instant::now() < until,
            "utilization: cpu {:?} host_memory {:?}",
            get("cpu"),
            get("host_memory")
        );
        sleep(Duration::from_millis(500));
    }
    let _capacity = Capacity::set(&[(&from, "4", "4096"), (to, "0", "4096")]);
    settle();
    on_ok(
        &from,
        &[
            "crm_resource",
            "--move",
            "-r",
            &s.id,
            "-N",
            &format!("node-{to}"),
        ],
    );
    settle();
    sleep(Duration::from_secs(3));
    assert_eq!(s.nodes(), vec![from.clone()], "{}", crm_mon_text());
    assert_eq!(s.role(), "Started");
    assert_eq!(s.all_boots(), 1);
    // Room on the target: the move it was asked for happens, live.
    let m = live_move(&s, &from, to, || Capacity::node(to, "cpu", Some("4")));
    assert!(m.mn_bytes > COPY_BYTES, "a live move: {} bytes", m.mn_bytes);
    on_ok(&from, &["crm_resource", "--clear", "-r", &s.id]);
    settle();
    s.assert_only_on(to);
}

/// A failed move costs no restart with the option the README recommends,
/// `multiple-active=block`: the target's libvirtd hangs, migrate_to fails
/// fast with the guest untouched on the source, and Pacemaker, which now
/// assumes the server may run on both nodes, leaves it alone (blocked)
/// instead of stopping it on both and booting it again. The same QEMU
/// runs on, its heartbeat going; once the admin has cleared the move and
/// cleaned up, the cluster manages it again where it runs. (Pacemaker
/// 2.1.5's stop_unexpected stops the source instead, taking the move's
/// target for the expected node: a restart all the same.)
#[test]
#[ignore = "needs the cluster lab: make cluster-test"]
fn a_failed_move_costs_no_restart_with_multiple_active_block() {
    failed_move_costs_no_restart("srv-block", &[], |s, src, tgt| {
        let hung = Stopped::new(tgt);
        request_move(s, src, tgt);
        Box::new(hung)
    });
}

/// The same when the migration link dies in the middle of the copy (the
/// copy capped at 5 MiB/s, so that it is still running 3 s in): libvirt's
/// migration fails with the connection, migrate_to says so with the guest
/// running on the source, and the blocked resource is not restarted.
#[test]
#[ignore = "needs the cluster lab: make cluster-test"]
fn a_move_whose_link_dies_mid_copy_costs_no_restart_with_multiple_active_block() {
    let speed = [("migration_speed", "5")];
    failed_move_costs_no_restart("srv-block-link", &speed, |s, src, tgt| {
        request_move(s, src, tgt);
        let sent = tx_bytes(src, &format!("vc-{src}-mn"));
        let until = Instant::now() + Duration::from_secs(30);
        while tx_bytes(src, &format!("vc-{src}-mn")) < sent + (8 << 20) {
            assert!(Instant::now() < until, "no copy on the migration link");
            sleep(Duration::from_millis(100));
        }
        Box::new(break_migration_link(src))
    });
}

/// `crm_resource --move` of `s` from `src` to `tgt`.
fn request_move(s: &Server, src: &str, tgt: &str) {
    on_ok(
        src,
        &[
            "crm_resource",
            "--move",
            "-r",
            &s.id,
            "-N",
            &format!("node-{tgt}"),
        ],
    );
}

/// A server `id` (with `params`) under `multiple-active=block` whose move
/// `fail` requests and makes fail (what it returns is kept until the
/// cluster is seen leaving the server alone): one failed migrate_to, the
/// resource blocked, the same QEMU running on the source with its
/// heartbeat and journal, and after `--clear` and `--cleanup` the cluster
/// manages it there again, never booted again.
fn failed_move_costs_no_restart(
    id: &str,
    params: &[(&str, &str)],
    fail: impl FnOnce(&Server, &str, &str) -> Box<dyn std::any::Any>,
) {
    let s = Server::create_with(id, SHORT_OPS, params);
    let src = s.wait_started(None, Duration::from_secs(120));
    let tgt = peer(&src);
    on_ok(
        "a",
        &[
            "crm_resource",
            "--resource",
            &s.id,
            "--meta",
            "--set-parameter",
            "multiple-active",
            "--parameter-value",
            "block",
        ],
    );
    settle();
    s.wait_heartbeat(&src);
    let qemu = live_qemu(&src, &s.id).expect("QEMU on the source");
    let boots = s.all_boots();
    {
        let _fault = fail(&s, &src, tgt);
        let until = Instant::now() + Duration::from_secs(60);
        while !s.failures().iter().any(|f| f.0 == "migrate_to") {
            assert!(
                Instant::now() < until,
                "no failed migrate_to:\n{}",
                crm_mon_text()
            );
            sleep(Duration::from_millis(300));
        }
        // Blocked: nothing more is done to it while the fault lasts.
        sleep(Duration::from_secs(15));
        let mon = crm_mon_text();
        assert!(mon.contains("blocked"), "{mon}");
        assert_eq!(live_qemu(&src, &s.id), Some(qemu.clone()), "{mon}");
        assert!(!qemu_alive(tgt, &s.id));
        let tick = s.last_tick(&src).unwrap_or(0);
        s.wait_tick_after(&src, tick);
    }
    on_ok("a", &["crm_resource", "--clear", "-r", &s.id]);
    on_ok("a", &["crm_resource", "--cleanup", "-r", &s.id]);
    settle();
    assert_eq!(s.wait_started(Some(&src), MOVE_WAIT), src);
    s.assert_only_on(&src);
    assert_eq!(live_qemu(&src, &s.id), Some(qemu), "the same QEMU runs on");
    let tick = s.last_tick(&src).unwrap_or(0);
    s.wait_tick_after(&src, tick);
    assert_eq!(s.all_boots(), boots, "booted again");
}

// ------------------------------------------------- three nodes (VC_NODES="a b c")

/// The three-node tests run on a cluster of node-a, node-b and node-c
/// (`VC_NODES="a b c" cluster.sh up`; run-tests.sh brings one up after the
/// two-node tests).
fn three_nodes() -> [&'static str; 3] {
    match all_nodes() {
        &[a, b, c] => [a, b, c],
        n => panic!("needs the three-node cluster (VC_NODES=\"a b c\"), not {n:?}"),
    }
}

#[test]
#[ignore = "needs the three-node cluster lab: make cluster-test"]
fn three_nodes_a_server_goes_round_every_node_live() {
    let nodes = three_nodes();
    let s = Server::create("srv-ring", OPS);
    let home = s.wait_started(None, Duration::from_secs(120));
    let at = nodes.iter().position(|n| *n == home).unwrap();
    // home -> next -> the third -> home: each move over its target's own
    // migration network, the guest in its first boot all the way.
    let mut from = home.clone();
    for step in 1..=3 {
        let to = nodes[(at + step) % 3];
        let m = admin_move(&s, &from, to);
        assert!(m.mn_bytes > COPY_BYTES, "mn {}", m.mn_bytes);
        let network = format!("migrated to node-{to} over migration network node-{to}.mn");
        assert!(m.result_line().contains(&network), "{}", m.result_line());
        from = to.to_owned();
    }
    assert_eq!(from, home);
    assert_eq!(s.all_boots(), 1);
}

#[test]
#[ignore = "needs the three-node cluster lab: make cluster-test"]
fn three_nodes_standby_moves_the_server_live_to_one_of_the_others() {
    three_nodes();
    let s = Server::create("srv-standby3", OPS);
    let from = s.wait_started(None, Duration::from_secs(120));
    let uname = format!("node-{from}");
    let standby = Standby(uname.clone());
    let (to, _) = live_move_away(&s, &from, None, || standby.set("on"));
    assert!(others(&from).contains(&to.as_str()), "on {to}");
    standby.set("off");
    settle();
    // Back from standby, it stays where it went (stickiness).
    s.assert_only_on(&to);
    assert_eq!(s.all_boots(), 1);
}

#[test]
#[ignore = "needs the three-node cluster lab: make cluster-test"]
fn three_nodes_start_is_refused_while_the_server_runs_on_the_third() {
    let [a, b, c] = three_nodes();
    let s = Server::create("srv-third", OPS);
    let home = s.wait_started(None, Duration::from_secs(120));
    if home != c {
        admin_move(&s, &home, c);
    }
    s.wait_heartbeat(c);
    // An admin forces a start on node-a: the agent asks node-b and node-c
    // (crm_node -l, no `peer` set), and node-c runs it.
    let force_start = || {
        let t0 = Instant::now();
        let o = on(
            a,
            &["crm_resource", "--force-start", "-r", &s.id, "--force"],
        );
        (o, t0.elapsed())
    };
    let refused = |o: &Output| {
        let said = format!("{}\n{}", text(&o.stdout), text(&o.stderr));
        assert_ne!(o.status.code(), Some(0), "started on node-{a}:\n{said}");
        assert!(said.contains("already runs on node-c"), "{said}");
        assert!(!qemu_alive(a, &s.id), "a second copy on node-{a}");
    };
    let (o, took) = force_start();
    refused(&o);
    eprintln!("[srv-third] start on node-{a} refused in {took:.1?}");
    // node-b's libvirtd hung: node-c's answer refuses the start at once,
    // without waiting out node-b's (bounded) question.
    {
        let _hung = Stopped::new(b);
        let (o, took) = force_start();
        refused(&o);
        // node-b's question would take the preflight budget, 15 s.
        assert!(took < Duration::from_secs(5), "{took:?}");
        eprintln!("[srv-third] with node-{b} hung, refused in {took:.1?}");
    }
    s.assert_only_on(c);
    let tick = s.last_tick(c).unwrap_or(0);
    s.wait_tick_after(c, tick);
    assert_eq!(s.all_boots(), 1);
}
