//! What each node remembers between actions, in [`STATE_DIR`]: the
//! definition of a server it last compared with the peer's, the hash of the
//! `config` file it last defined from, the utilization it last wrote. One
//! small file per server and kind, each written whole.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;

use log::warn;

/// A tmpfs, emptied at boot, when nothing has been compared or written
/// yet. Root's alone (0700, files 0600): a definition holds its graphics
/// passwords, as /etc/libvirt/qemu does.
pub const STATE_DIR: &str = "/run/vmshift";

/// Makes `dir` and its missing parents, root's alone (0700), as
/// [`STATE_DIR`] and what is kept in it must be; an existing one is left as
/// it is.
pub fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// The records in one directory.
pub struct Records {
    /// None (tests of actions): nothing recorded.
    dir: Option<PathBuf>,
}

impl Records {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Records {
            dir: Some(dir.into()),
        }
    }

    /// Records nothing and remembers nothing.
    #[cfg(test)]
    pub fn none() -> Self {
        Records { dir: None }
    }

    fn file(&self, name: &str, kind: &str) -> Option<PathBuf> {
        // libvirt names may hold any character but '/'; the file name
        // keeps [A-Za-z0-9._-] and writes the rest as %XX.
        let mut file = String::new();
        for b in name.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' => file.push(b as char),
                b'.' if !file.is_empty() => file.push('.'),
                _ => file.push_str(&format!("%{b:02X}")),
            }
        }
        Some(self.dir.as_ref()?.join(format!("{file}.{kind}")))
    }

    /// Forgets a record (one that was never written is no error).
    pub fn remove(&self, name: &str, kind: &str) {
        if let Some(path) = self.file(name, kind) {
            let _ = std::fs::remove_file(path);
        }
    }

    pub fn last(&self, name: &str, kind: &str) -> Option<String> {
        std::fs::read_to_string(self.file(name, kind)?).ok()
    }

    /// Written whole (a temporary file renamed over the record): a record
    /// is the old one or the new one, never half of either.
    pub fn keep(&self, name: &str, kind: &str, text: &str) {
        let (Some(dir), Some(path)) = (&self.dir, self.file(name, kind)) else {
            return;
        };
        let tmp = path.with_extension(format!("{kind}.new"));
        let written = private_dir(dir)
            .and_then(|()| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)
            })
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            warn!(
                "cannot keep the {kind} record of {name} in {}: {e}",
                dir.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn record_names_are_file_names() {
        let r = Records::new(STATE_DIR);
        assert_eq!(
            r.file("../x y", "definition").unwrap(),
            Path::new("/run/vmshift/%2E.%2Fx%20y.definition")
        );
        assert_eq!(
            r.file("srv.1", "config").unwrap(),
            Path::new("/run/vmshift/srv.1.config")
        );
    }
}
