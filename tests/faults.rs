//! Fault injection in the two-host lab: an HA agent is judged on its worst
//! day. Every case checks the same invariant: after the fault the server
//! runs on exactly one node, its definition is intact there, its heartbeat
//! goes on, and every agent call returned before its deadline with a
//! truthful exit code. Each case is recorded for RELIABILITY.md.
//!
//! Like `tests/lab.rs`, these need root and the lab; `make test` runs them
//! through `tests/lab/run-tests.sh`.

mod common;

use std::process::Command;
use std::thread::sleep;
use std::time::Duration;

use common::*;

/// A migration slow enough to act in the middle of it: 20 MiB/s for the
/// ~90 MiB the guest's RAM needs takes about 5 s.
const SLOW: (&str, &str) = ("OCF_RESKEY_migration_speed", "20");

/// A DNS server on the node's loopback that reads every query and never
/// answers, as a hung resolver does. Stopped (by its pid) when the test
/// ends.
struct SilentDns(std::process::Child);

impl SilentDns {
    fn start(node: &str) -> SilentDns {
        let child = Command::new("ip")
            .args(["netns", "exec", &format!("vs-{node}"), "python3", "-c"])
            .arg(
                "import socket\n\
                 s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                 s.bind(('127.0.0.53', 53))\n\
                 while True: s.recv(4096)\n",
            )
            .spawn()
            .expect("start the silent DNS server");
        sleep(Duration::from_millis(500));
        SilentDns(child)
    }
}

impl Drop for SilentDns {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn started(name: &str) -> Guest {
    let g = Guest::new(name, true);
    assert_eq!(agent("a", "start", &g.params()).rc, 0);
    g.wait_heartbeat("a");
    g
}

#[test]
#[ignore = "needs the lab: make test"]
fn target_libvirtd_killed_in_the_middle_of_the_copy() {
    let mut case = Case::new(
        "01-target-libvirtd-killed",
        "target libvirtd SIGKILLed 2 s into the RAM copy",
        "the source libvirtd sees the peer connection drop and fails the job; migrate_to reports it with the guest still running on the source",
    );
    let g = started("f-tkill");
    let run = Running::start("a", "migrate_to", &migration_env(&g, "a", &[SLOW]));
    sleep(Duration::from_secs(2));
    let revive = Revive("b");
    signal_libvirtd("b", libc::SIGKILL);
    let c = run.wait();
    case.call("migrate_to", &c);
    assert_eq!(c.rc, 1);
    assert!(c.took < Duration::from_secs(20));
    drop(revive);
    let on = assert_runs_once(&g);
    assert_eq!(on, "a");
    case.note(format!(
        "afterwards: running on node-{on} only, heartbeat continues"
    ));
    let m = agent("b", "monitor", &[g.name_env()]);
    assert_eq!(m.rc, 7, "{}", m.stderr);
    case.call("monitor on node-b", &m);
    case.pass();
}

#[test]
#[ignore = "needs the lab: make test"]
fn migration_link_cut_in_the_middle_of_the_copy() {
    let mut case = Case::new(
        "02-migration-link-cut",
        "migration link set down (ip link set down) 2 s into the RAM copy",
        "the copy stalls; migrate_to aborts the job before its deadline and confirms the guest still runs on the source",
    );
    let g = started("f-linkcut");
    let env = migration_env(&g, "a", &[SLOW, ("OCF_RESKEY_CRM_meta_timeout", "20000")]);
    let run = Running::start("a", "migrate_to", &env);
    sleep(Duration::from_secs(2));
    let c = {
        let _down = LinkDown::new("a", "vs-a-mn");
        run.wait()
    };
    case.call("migrate_to (timeout 20 s)", &c);
    assert_eq!(c.rc, 1);
    assert!(c.took < Duration::from_secs(20), "{:?}", c.took);
    wait_jobs_gone(&g.name, Duration::from_secs(30));
    assert_no_job("a", &g.name);
    let on = assert_runs_once(&g);
    assert_eq!(on, "a");
    case.note(format!(
        "afterwards: running on node-{on} only, no job left"
    ));
    case.pass();
}

#[test]
#[ignore = "needs the lab: make test"]
fn source_libvirtd_stopped_during_migrate_to() {
    let mut case = Case::new(
        "03-source-libvirtd-sigstop-migrate",
        "source libvirtd SIGSTOPped 2 s into migrate_to (timeout 15 s), SIGCONT after the agent returned",
        "the agent cannot poll or abort through a frozen libvirtd: it returns 1 before its deadline saying so; once libvirtd runs again the migration ends on one node",
    );
    let g = started("f-srcstop");
    let env = migration_env(&g, "a", &[SLOW, ("OCF_RESKEY_CRM_meta_timeout", "15000")]);
    let run = Running::start("a", "migrate_to", &env);
    sleep(Duration::from_secs(2));
    let c = {
        let _stopped = Stopped::new("a");
        run.wait()
    };
    case.call("migrate_to (timeout 15 s)", &c);
    assert_eq!(c.rc, 1);
    assert!(c.took < Duration::from_secs(15), "{:?}", c.took);
    wait_jobs_gone(&g.name, Duration::from_secs(60));
    let on = assert_runs_once(&g);
    case.note(format!("after SIGCONT: running on node-{on} only"));
    // Monitors on both nodes tell the truth.
    assert_eq!(agent(on, "monitor", &[g.name_env()]).rc, 0);
    let other = if on == "a" { "b" } else { "a" };
    assert_eq!(agent(other, "monitor", &[g.name_env()]).rc, 7);
    case.pass();
}

#[test]
#[ignore = "needs the lab: make test"]
fn source_libvirtd_stopped_during_stop_and_start() {
    let mut case = Case::new(
        "04-source-libvirtd-sigstop-stop-start",
        "local libvirtd SIGSTOPped during stop (guest running) and during start (guest shut off), timeout 10 s",
        "stop returns 1 before the deadline (libvirtd does not answer and the QEMU process lives: not stopped), and 0 at once when no QEMU process of the guest lives; start returns 1 before the deadline; after SIGCONT both work",
    );
    let g = started("f-stopstart");
    let env = [g.name_env(), ("OCF_RESKEY_CRM_meta_timeout", "10000")];
    {
        let _stopped = Stopped::new("a");
        let c = agent("a", "stop", &env);
        case.call("stop while frozen", &c);
        assert_eq!(c.rc, 1);
        assert!(c.took < Duration::from_secs(10));
        let m = agent("a", "monitor", &env);
        case.call("monitor while frozen", &m);
        assert_eq!(m.rc, 0);
    }
    assert_eq!(assert_runs_once(&g), "a");
    assert_eq!(agent("a", "stop", &env).rc, 0);
    {
        let _stopped = Stopped::new("a");
        // No QEMU process of the guest: stopped, without waiting for the
        // frozen libvirtd (Pacemaker's recovery stops on both nodes).
        let c = agent("a", "stop", &env);
        case.call("stop of the stopped guest while frozen", &c);
        assert_eq!(c.rc, 0);
        assert!(c.took < Duration::from_secs(2), "{:?}", c.took);
        let c = agent("a", "start", &env);
        case.call("start while frozen", &c);
        assert_eq!(c.rc, 1);
        assert!(c.took < Duration::from_secs(10));
    }
    assert_eq!(
        agent("a", "monitor", &env).rc,
        7,
        "not started behind our back"
    );
    assert_eq!(agent("a", "start", &env).rc, 0);
    assert_eq!(assert_runs_once(&g), "a");
    case.pass();
}

#[test]
#[ignore = "needs the lab: make test"]
fn agent_killed_in_the_middle_of_migrate_to() {
    let mut case = Case::new(
        "05-agent-sigkill-migrate",
        "the agent SIGKILLed 2 s into migrate_to (what Pacemaker does on a timeout), then monitor on both nodes and a retried migrate_to",
        "libvirt's peer-to-peer job goes on without the agent; monitors report what runs where; the retried migrate_to follows the job left behind and converges to one running copy",
    );
    let g = started("f-agentkill");
    // Fast enough to converge against the guest's 20 MiB/s of dirtying,
    // slow enough to still be copying 2 s in.
    let env = migration_env(&g, "a", &[("OCF_RESKEY_migration_speed", "40")]);
    let mut run = Running::start("a", "migrate_to", &env);
    sleep(Duration::from_secs(2));
    run.child.kill().expect("kill the agent");
    let _ = run.child.wait();
    case.note("agent killed (SIGKILL) 2 s into the copy");
    let ma = agent("a", "monitor", &[g.name_env()]);
    case.call("monitor on node-a right after", &ma);
    assert_eq!(ma.rc, 0, "still running on the source");
    let retry = agent("a", "migrate_to", &env);
    case.call("retried migrate_to", &retry);
    assert_eq!(retry.rc, 0, "{}", retry.stderr);
    let from = agent("b", "migrate_from", &env);
    assert_eq!(from.rc, 0);
    let on = assert_runs_once(&g);
    assert_eq!(on, "b");
    assert_eq!(agent("a", "monitor", &[g.name_env()]).rc, 7);
    case.note(format!("afterwards: running on node-{on} only"));
    case.pass();
}

#[test]
#[ignore = "needs the lab: make test"]
fn hanging_dns_is_bounded_and_falls_back() {
    let mut case = Case::new(
        "06-dns-hangs",
        "node-b.mn not in /etc/hosts and the node's DNS server never answers",
        "the lookup is cut off after 1 s and the copy falls back to the base name",
    );
    let g = started("f-dns");
    let fast = migrate(&g, "a", &[]).to.took;
    let _hosts = NodeFile::hosts("b", "node-a.mn", None);
    let _dns = SilentDns::start("b");
    let _resolv = NodeFile::write(
        "b",
        "resolv.conf",
        "nameserver 127.0.0.53\noptions timeout:5 attempts:3\n",
    );
    let m = migrate(&g, "b", &[]);
    case.call("migrate_to", &m.to);
    assert!(
        m.to.stderr.contains("lookup took longer than 1s"),
        "{}",
        m.to.stderr
    );
    assert!(m.to.stderr.contains("falling back to node-a"));
    assert!(
        m.to.took < fast + Duration::from_secs(5),
        "{:?} vs {fast:?}",
        m.to.took
    );
    case.note(format!(
        "migrate_to took {:.1} s (over the migration network: {:.1} s)",
        m.to.took.as_secs_f64(),
        fast.as_secs_f64()
    ));
    assert_runs_once(&g);
    case.pass();
}

#[test]
#[ignore = "needs the lab: make test"]
fn mn_address_that_routes_but_does_not_answer() {
    let mut case = Case::new(
        "07-mn-silent-address",
        "node-b.mn resolves to an on-link address where nothing answers",
        "the TCP probe gives up after 1 s and the copy falls back to the base name",
    );
    let g = started("f-silent");
    let _hosts = NodeFile::hosts("a", "node-b.mn", Some("10.251.11.77"));
    let m = migrate(&g, "a", &[]);
    case.call("migrate_to", &m.to);
    assert!(
        m.to.stderr
            .contains("nothing answers on 10.251.11.77:16509"),
        "{}",
        m.to.stderr
    );
    assert!(m.bc_bytes > COPY_BYTES);
    assert_runs_once(&g);
    case.pass();
}

#[test]
#[ignore = "needs the lab: make test"]
fn mn_name_resolving_to_loopback_or_a_public_address() {
    let mut case = Case::new(
        "08-mn-loopback-public",
        "node-b.mn resolves to 127.0.1.1, then to a public address (203.0.113.7, no route in the lab)",
        "neither is usable: loopback is refused outright, the public address has no route; plan-migration and migrate_to fall back",
    );
    let plan = |case: &mut Case, addr: &str, why: &str| {
        let _hosts = NodeFile::hosts("a", "node-b.mn", Some(addr));
        let o = Command::new("bash")
            .arg(lab_script())
            .args([
                "exec",
                "a",
                BIN,
                "plan-migration",
                "--name",
                "x",
                "--target",
                "node-b",
            ])
            .args(["--migration-transport", "tcp"])
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(o.status.success());
        let decision = out
            .lines()
            .find(|l| l.contains("decision:"))
            .unwrap()
            .trim()
            .to_owned();
        assert!(
            decision.contains(why) && decision.contains("falling back to node-b"),
            "{out}"
        );
        case.note(format!("{addr}: {decision}"));
    };
    plan(&mut case, "127.0.1.1", "loopback");
    plan(&mut case, "203.0.113.7", "no route to 203.0.113.7");
    let g = started("f-public");
    let _hosts = NodeFile::hosts("a", "node-b.mn", Some("203.0.113.7"));
    let m = migrate(&g, "a", &[]);
    case.call("migrate_to with the public address", &m.to);
    assert!(m.to.stderr.contains("falling back to node-b"));
    assert_runs_once(&g);
    case.pass();
}

#[test]
#[ignore = "needs the lab: make test"]
fn start_refuses_a_server_running_on_the_peer() {
    let mut case = Case::new(
        "09-start-while-on-peer",
        "start on node-a while the server runs on node-b",
        "start asks the peer's libvirtd (migration_transport, bounded) and refuses with exit 1 and a reason; with a peer that cannot be asked it logs that and relies on Pacemaker's probes",
    );
    let g = Guest::new("f-twice", true);
    assert_eq!(agent("b", "start", &g.params()).rc, 0);
    let mut p = g.params();
    p.extend([
        ("OCF_RESKEY_peer", "node-b"),
        ("OCF_RESKEY_migration_transport", "tcp"),
    ]);
    let c = agent("a", "start", &p);
    case.call("start on node-a (peer node-b)", &c);
    assert_eq!(c.rc, 1);
    assert!(
        c.reason().unwrap().contains("already runs on node-b"),
        "{}",
        c.stderr
    );
    assert_eq!(active_on(&g.name), ["b"]);
    // The peer cannot be asked: logged, and the start goes ahead.
    assert_eq!(agent("b", "stop", &g.params()).rc, 0);
    let mut p = g.params();
    p.extend([
        ("OCF_RESKEY_peer", "node-c"),
        ("OCF_RESKEY_migration_transport", "tcp"),
    ]);
    let c = agent("a", "start", &p);
    case.call("start on node-a (peer node-c unknown)", &c);
    assert_eq!(c.rc, 0);
    assert!(
        c.stderr.contains("relying on Pacemaker's probes"),
        "{}",
        c.stderr
    );
    assert_runs_once(&g);
    case.pass();
}

#[test]
#[ignore = "needs the lab: make test"]
fn libvirtd_restarts_on_both_nodes_keep_monitor_at_0() {
    let mut case = Case::new(
        "10-libvirtd-restarts",
        "both nodes' libvirtd stopped (SIGTERM) and started again while the guest runs, monitor every 0.5 s",
        "while libvirtd is away the QEMU pid file says the guest lives: monitor stays 0 on the running node (7 on the other)",
    );
    let g = started("f-restart");
    let (tx, rx) = std::sync::mpsc::channel();
    let name = g.name.clone();
    let watcher = std::thread::spawn(move || {
        let mut seen = Vec::new();
        while rx.try_recv().is_err() {
            let a = agent("a", "monitor", &[("OCF_RESKEY_name", &name)]);
            seen.push(a.rc);
            sleep(Duration::from_millis(500));
        }
        seen
    });
    for node in ["a", "b"] {
        let _revive = Revive(node);
        signal_libvirtd(node, libc::SIGTERM);
        sleep(Duration::from_secs(3));
    }
    tx.send(()).unwrap();
    let seen = watcher.join().unwrap();
    case.note(format!(
        "{} monitors on node-a, exit codes seen: {:?}",
        seen.len(),
        {
            let mut s = seen.clone();
            s.dedup();
            s
        }
    ));
    assert!(seen.iter().all(|&rc| rc == 0), "{seen:?}");
    assert_eq!(agent("b", "monitor", &[g.name_env()]).rc, 7);
    assert_runs_once(&g);
    case.pass();
}

#[test]
#[ignore = "needs the lab: make test"]
fn unreadable_or_malformed_config() {
    let mut case = Case::new(
        "11-bad-config",
        "start with config pointing at a missing file, then at malformed XML",
        "missing: 5 (not installed on this node); malformed: 6 (invalid everywhere); nothing is defined",
    );
    let c = agent(
        "a",
        "start",
        &[
            ("OCF_RESKEY_name", "f-badcfg"),
            ("OCF_RESKEY_config", "/nonexistent/f-badcfg.xml"),
        ],
    );
    case.call("start, missing config", &c);
    assert_eq!(c.rc, 5);
    let bad = std::env::temp_dir().join("vmshift-f-badcfg.xml");
    std::fs::write(
        &bad,
        "<domain type='qemu'><name>f-badcfg</name><memory>oops</domain>",
    )
    .unwrap();
    let c = agent(
        "a",
        "start",
        &[
            ("OCF_RESKEY_name", "f-badcfg"),
            ("OCF_RESKEY_config", bad.to_str().unwrap()),
        ],
    );
    std::fs::remove_file(&bad).unwrap();
    case.call("start, malformed config", &c);
    assert_eq!(c.rc, 6, "{}", c.stderr);
    assert!(
        virsh("a", &["dominfo", "f-badcfg"]).is_err(),
        "nothing defined"
    );
    case.pass();
}
