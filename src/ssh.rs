//! The ssh that every `qemu+ssh` connection to a peer runs: the agent's
//! own (its checks of the peer) and the one the source libvirtd opens for
//! a migration. They share one ssh connection per peer (OpenSSH's
//! ControlMaster) instead of paying a handshake each.
//!
//! libvirt runs the program a remote URI names in `command=` in place of
//! `ssh`, with ssh's arguments (remote.html "Extra parameters",
//! `virNetSocketNewConnectSSH`). The agent names [`COMMAND`], a link to its
//! own binary that it keeps in /run/vmshift. Run under that name, the binary
//! execs `ssh` with the sharing options put first: ssh keeps the first value
//! it is given for an option, so they win over ssh_config (ssh_config(5)).
//!
//! Measured on the lab: an ssh session to the peer costs 0.26 s with its own
//! handshake and 0.02 s over a shared one; a libvirt connection over
//! `qemu+ssh` 0.36 s and 0.07-0.10 s.
//!
//! The shared connection (the master) is started by the first session and
//! kept [`PERSIST`] after the last one ends, so the moves of a node drain
//! share it. ssh ends it once the peer has not answered for
//! `ServerAliveInterval` × `ServerAliveCountMax`. A session that cannot
//! use a master (none yet, a stale socket, a socket ssh may not create,
//! as under a strict SELinux policy) makes its own connection: ssh's
//! `ControlMaster=auto`.

use std::ffi::{OsStr, OsString};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use log::warn;

use crate::records::{private_dir, STATE_DIR};

/// The name the binary answers to as ssh, and the link libvirt runs.
const NAME: &str = "vmshift-ssh";
pub const COMMAND: &str = "/run/vmshift/vmshift-ssh";
/// The masters' sockets: root's alone, as ssh_config(5) asks of a
/// ControlPath (whoever can connect to it uses the connection).
const SOCKETS: &str = "/run/vmshift/ssh";
/// How long a master outlives its last session.
const PERSIST: &str = "ControlPersist=60";
/// Put before libvirt's arguments. `%C` is a hash of this host, the peer,
/// its port and the user: one master per peer, and a path short enough
/// for a unix socket.
const SHARING: [&str; 10] = [
    "-o",
    "ControlMaster=auto",
    "-o",
    "ControlPath=/run/vmshift/ssh/%C",
    "-o",
    PERSIST,
    "-o",
    "ServerAliveInterval=5",
    "-o",
    "ServerAliveCountMax=3",
];

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Lets [`command`] put the link in place. Called by the actions that run
/// for Pacemaker or the admin; unit tests of the layers below never are,
/// so their URIs carry no `command=` and nothing is written to /run.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// [`COMMAND`], once the link to this binary is in place (made on the
/// first call); None when not enabled or the link cannot be made, and
/// libvirt then runs plain `ssh`.
pub fn command() -> Option<&'static str> {
    static LINKED: OnceLock<bool> = OnceLock::new();
    if !ENABLED.load(Ordering::Relaxed) {
        return None;
    }
    let linked = LINKED.get_or_init(|| match link() {
        Ok(()) => true,
        Err(e) => {
            warn!("ssh connections to peers will not be shared: cannot link {COMMAND}: {e}");
            false
        }
    });
    linked.then_some(COMMAND)
}

/// Points [`COMMAND`] at this binary, replacing a link to another one in
/// one rename: a connection opened meanwhile runs the old or the new.
fn link() -> std::io::Result<()> {
    let exe = std::env::current_exe()?;
    // A binary replaced by an upgrade while it runs is "... (deleted)".
    std::fs::metadata(&exe)?;
    if std::fs::read_link(COMMAND).is_ok_and(|l| l == exe) {
        return Ok(());
    }
    private_dir(Path::new(STATE_DIR))?;
    let tmp = format!("{COMMAND}.{}", std::process::id());
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&exe, &tmp)?;
    std::fs::rename(&tmp, COMMAND).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Whether the binary was run as [`COMMAND`] (by libvirt, as its ssh).
pub fn invoked_as_ssh(argv0: &OsStr) -> bool {
    Path::new(argv0).file_name() == Some(OsStr::new(NAME))
}

/// Runs `ssh` with `args` (libvirt's), sharing the connection where the
/// sockets' directory is safe to use. Returns only when ssh cannot be run,
/// with ssh's own exit code for its errors.
pub fn exec(args: impl IntoIterator<Item = OsString>) -> u8 {
    let mut ssh = std::process::Command::new("ssh");
    match sockets() {
        Ok(()) => {
            ssh.args(SHARING);
        }
        Err(why) => eprintln!("{NAME}: not sharing the connection: {SOCKETS} {why}"),
    }
    let e = ssh.args(args).exec();
    eprintln!("{NAME}: cannot run ssh: {e}");
    255
}

/// Makes [`SOCKETS`] (and [`STATE_DIR`]) if need be; Err unless it is a
/// directory of this user that no one else may enter.
fn sockets() -> Result<(), String> {
    private_dir(Path::new(SOCKETS)).map_err(|e| e.to_string())?;
    let m = std::fs::symlink_metadata(SOCKETS).map_err(|e| e.to_string())?;
    if !m.is_dir() || m.uid() != nix::unistd::geteuid().as_raw() {
        return Err("is not a directory of this user".into());
    }
    if m.permissions().mode() & 0o077 != 0 {
        return Err("is open to others".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_link_and_the_sockets_are_in_the_state_dir() {
        for path in [COMMAND, SOCKETS] {
            assert_eq!(Path::new(path).parent(), Some(Path::new(STATE_DIR)));
        }
        assert!(COMMAND.ends_with(NAME));
        assert!(SHARING.contains(&"ControlPath=/run/vmshift/ssh/%C"));
    }

    #[test]
    fn only_the_link_name_runs_ssh() {
        assert!(invoked_as_ssh(OsStr::new(COMMAND)));
        assert!(invoked_as_ssh(OsStr::new("vmshift-ssh")));
        for other in ["/usr/sbin/vmshift", "server", "ssh", "/run/vmshift-ssh/x"] {
            assert!(!invoked_as_ssh(OsStr::new(other)), "{other}");
        }
    }

    #[test]
    fn nothing_is_linked_unless_enabled() {
        assert_eq!(command(), None);
    }
}
