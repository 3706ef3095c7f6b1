//! QEMU processes seen without libvirtd: which live process runs a domain,
//! from libvirt's pid file and from the process table, matched exactly as
//! libvirt names the domain on QEMU's command line; and the kill that
//! `force_stop` allows when libvirtd is hung.
//!
//! Every /proc read runs on a worker thread bounded in time: reading the
//! command line of a process in D state waits for its memory-map lock,
//! possibly forever. A scan that does not finish is "unknown", never
//! "gone".

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::bounded::on_worker;
use crate::hypervisor::Qemu;

/// How long the process table may take to read: a few hundred small files
/// on a healthy host take a few milliseconds.
pub const PROC_BUDGET: Duration = Duration::from_secs(1);

/// How long a QEMU gets between SIGTERM and SIGKILL: what libvirt's own
/// destroy gives it (virProcessKillPainfully waits 10 s; a hung libvirtd
/// leaves less time, so a third of that).
const TERM_GRACE: Duration = Duration::from_secs(3);

/// Where libvirt's QEMU driver keeps `<name>.pid` for this URI. Only the
/// privileged driver has a fixed place (`/run/libvirt/qemu`).
pub fn pid_dir(uri: &str) -> Option<PathBuf> {
    let system = matches!(uri, "qemu:///system" | "qemu+unix:///system");
    system.then(|| PathBuf::from("/run/libvirt/qemu"))
}

/// The domain's QEMU process for `uri`, found within `budget`.
pub fn find(uri: &str, name: &str, budget: Duration) -> Qemu {
    let Some(dir) = pid_dir(uri) else {
        return Qemu::Unseen;
    };
    let name = name.to_owned();
    match on_worker("proc", Instant::now() + budget, move || {
        find_now(&dir, &name)
    })
    .ok()
    {
        Some(Some(pid)) => Qemu::Alive(pid),
        Some(None) => Qemu::Gone,
        None => Qemu::Unreadable(format!(
            "/proc did not answer in {budget:?} (a process in D state?)"
        )),
    }
}

/// Kills QEMU `pid` of domain `name`: SIGTERM, then SIGKILL, through a
/// pidfd so that a pid reused after QEMU exits is never signalled. Ok once
/// the process is gone; Err with why by `until`.
pub fn kill(name: &str, pid: u32, until: Instant) -> Result<(), String> {
    let name = name.to_owned();
    let budget = until.saturating_duration_since(Instant::now());
    on_worker("kill", until, move || kill_now(&name, pid, until))
        .unwrap_or_else(|_| Err(format!("QEMU pid {pid} could not be killed in {budget:?}")))
}

fn find_now(dir: &Path, name: &str) -> Option<u32> {
    // libvirt's pid file is the quick answer, once its directory is shown
    // to be the live daemon's; it is only a hint either way: the process
    // it names must still run this domain, and without it the process
    // table decides.
    let from_file = trusted_pid_dir(dir)
        .and_then(|()| {
            std::fs::read_to_string(dir.join(format!("{name}.pid"))).map_err(|e| e.to_string())
        })
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|&pid| runs_domain(pid, name));
    from_file.or_else(|| scan(name))
}

/// libvirt's pid directory can be trusted when it is root's, nobody else
/// can write to it, and the driver.pid libvirt's QEMU driver writes into
/// it names a live libvirtd or virtqemud: a stale copy, or one another
/// user prepared, is ignored.
fn trusted_pid_dir(dir: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !meta.is_dir() || meta.uid() != 0 || meta.mode() & 0o022 != 0 {
        return Err(format!("{} is not root's alone", dir.display()));
    }
    let daemon = std::fs::read_to_string(dir.join("driver.pid"))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .ok_or("no driver.pid")?;
    let comm = std::fs::read_to_string(format!("/proc/{daemon}/comm")).unwrap_or_default();
    match comm.trim() {
        "libvirtd" | "virtqemud" => Ok(()),
        _ => Err(format!("driver.pid {daemon} is not a live libvirt daemon")),
    }
}

/// The first live QEMU process of this network namespace that runs the
/// domain. libvirt starts QEMU in its own network namespace; a QEMU in
/// another one (a container's, or the other node's in the project's lab)
/// belongs to another libvirtd.
fn scan(name: &str) -> Option<u32> {
    let own_net = net_ns(Path::new("/proc/self"));
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .find(|&pid| {
            net_ns(Path::new(&format!("/proc/{pid}"))) == own_net && runs_domain(pid, name)
        })
}

fn net_ns(proc_dir: &Path) -> Option<u64> {
    std::fs::metadata(proc_dir.join("ns/net"))
        .ok()
        .map(|m| m.ino())
}

/// Whether `pid` is a live (not zombie) QEMU process whose command line
/// names domain `name`. Only processes whose command name is QEMU's have
/// their command line read, so that an unrelated process in D state cannot
/// stall the scan.
fn runs_domain(pid: u32, name: &str) -> bool {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let Ok(stat) = std::fs::read_to_string(proc.join("stat")) else {
        return false;
    };
    // The command name is in parentheses and may itself contain spaces or
    // parentheses; the state follows the last ')' (proc(5)).
    let Some((head, rest)) = stat.rsplit_once(')') else {
        return false;
    };
    let comm = head.split_once('(').map_or("", |(_, c)| c);
    let live = rest
        .split_whitespace()
        .next()
        .is_some_and(|state| state != "Z" && state != "X");
    // qemu-system-<arch> (15 characters kept of it), RHEL's qemu-kvm.
    if !live || !comm.starts_with("qemu") {
        return false;
    }
    std::fs::read(proc.join("cmdline")).is_ok_and(|c| names_domain(&c, name))
}

/// Whether a NUL-separated command line carries `-name guest=<name>,...`
/// for exactly `name`: libvirt writes the option with commas in the name
/// doubled (qemuBuildNameCommandLine, virQEMUBuildBufferEscapeComma), and
/// QEMU's option parser ends the value at the first single comma.
fn names_domain(cmdline: &[u8], name: &str) -> bool {
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    args.windows(2)
        .filter(|w| w[0] == b"-name")
        .any(|w| guest_name(w[1]).as_deref() == Some(name.as_bytes()))
}

/// The `guest=` value of a QEMU `-name` argument, unescaped.
fn guest_name(value: &[u8]) -> Option<Vec<u8>> {
    let rest = value.strip_prefix(b"guest=")?;
    let mut out = Vec::with_capacity(rest.len());
    let mut bytes = rest.iter().copied().peekable();
    while let Some(b) = bytes.next() {
        // ",," is a comma of the value; a single ',' ends it.
        if b == b',' && bytes.next_if_eq(&b',').is_none() {
            break;
        }
        out.push(b);
    }
    Some(out)
}

fn kill_now(name: &str, pid: u32, until: Instant) -> Result<(), String> {
    let Ok(raw) = libc::pid_t::try_from(pid) else {
        return Err(format!("pid {pid} out of range"));
    };
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new file
    // descriptor or -1; no pointers are involved.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, raw, 0) };
    if fd < 0 {
        // ESRCH: it is gone already.
        return match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::ESRCH) => Ok(()),
            _ => Err(format!(
                "pidfd_open({pid}): {}",
                std::io::Error::last_os_error()
            )),
        };
    }
    let fd = fd as libc::c_int;
    // Checked after the pidfd pins the process: the pid cannot be reused
    // for another process between this check and the signals.
    let result = if runs_domain(pid, name) {
        signal(fd, libc::SIGTERM);
        if exited(fd, (Instant::now() + TERM_GRACE).min(until)) {
            Ok(())
        } else {
            signal(fd, libc::SIGKILL);
            if exited(fd, until) {
                Ok(())
            } else {
                Err(format!("QEMU pid {pid} survives SIGKILL (D state?)"))
            }
        }
    } else {
        Ok(())
    };
    // SAFETY: `fd` is the pidfd opened above, owned here and closed once.
    unsafe { libc::close(fd) };
    result
}

fn signal(fd: libc::c_int, sig: libc::c_int) {
    // SAFETY: pidfd_send_signal(2) with a pidfd we own, a valid signal
    // number, a null siginfo (allowed: as kill(2)) and flags 0.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd,
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
}

/// Waits until the process behind pidfd `fd` has exited (the pidfd becomes
/// readable), or `until`.
fn exited(fd: libc::c_int, until: Instant) -> bool {
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(left.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid pollfd for the duration of the call.
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        if r > 0 {
            return true;
        }
        if r == 0 || left.is_zero() {
            return false;
        }
        // EINTR: poll again for the time left.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmdline(args: &[&str]) -> Vec<u8> {
        args.iter().flat_map(|a| a.bytes().chain([0])).collect()
    }

    #[test]
    fn names_are_matched_as_qemu_parses_them() {
        let c = cmdline(&[
            "/usr/bin/qemu-system-x86_64",
            "-name",
            "guest=a,,b,debug-threads=on",
        ]);
        assert!(names_domain(&c, "a,b"));
        // The old prefix test took "guest=a," for domain "a".
        assert!(!names_domain(&c, "a"));
        assert!(!names_domain(&c, "a,b,debug-threads=on"));
        for name in ["srv 01", "it's \"quoted\"", "sérveur-日本", "x=y"] {
            let arg = format!("guest={},debug-threads=on", name.replace(',', ",,"));
            let c = cmdline(&["qemu-system-x86_64", "-name", &arg]);
            assert!(names_domain(&c, name), "{name}");
            assert!(!names_domain(&c, &format!("{name}x")), "{name}");
        }
        // The name of the option must be -name itself.
        let c = cmdline(&["qemu", "-other", "guest=vm1,x"]);
        assert!(!names_domain(&c, "vm1"));
        let c = cmdline(&["qemu", "-name", "guest=vm1"]);
        assert!(names_domain(&c, "vm1"));
    }

    #[test]
    fn own_process_is_not_a_qemu_guest() {
        assert!(!runs_domain(std::process::id(), "vm1"));
        assert!(!runs_domain(u32::MAX, "vm1"));
    }

    #[test]
    fn other_uris_are_unseen_not_gone() {
        assert_eq!(
            find("qemu+tcp://node-b/system", "vm1", PROC_BUDGET),
            Qemu::Unseen
        );
        assert_eq!(
            find("qemu:///system", "vmshift-no-such-domain", PROC_BUDGET),
            Qemu::Gone
        );
    }

    #[test]
    fn a_gone_pid_is_killed_at_once() {
        let until = Instant::now() + Duration::from_secs(2);
        // A child that has been reaped: its pid is free.
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        assert_eq!(kill("vm1", pid, until), Ok(()));
        // A live process that is not the domain's QEMU is left alone.
        let mut c = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        assert_eq!(kill("vm1", c.id(), until), Ok(()));
        assert!(c.try_wait().unwrap().is_none(), "sleep was not signalled");
        c.kill().unwrap();
        c.wait().unwrap();
    }
}
