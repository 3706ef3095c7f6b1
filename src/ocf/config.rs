//! The `config` file: read only when it is a small regular file root owns
//! and nobody else may write, within a time budget, and passed on only
//! when its root element is `<domain>`.

use std::time::Duration;

use super::params::{ConfigProblem, ParamError, Params, MAX_CONFIG_BYTES};

impl Params {
    /// The domain XML from `config`, read now within `budget` (a file on a
    /// hung network filesystem must not hold the action). Only a regular
    /// file that root owns and nobody else may write is read, and at most
    /// [`MAX_CONFIG_BYTES`]: libvirt defines whatever it says, as root, and
    /// a FIFO or a device would block or never end. Problems with the file
    /// are this node's (5); a file that is not domain XML is 6, said
    /// without quoting what is in it.
    pub fn read_config(&self, budget: Duration) -> Option<Result<String, ParamError>> {
        self.config.as_ref().map(|path| {
            let owned = path.clone();
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            let spawned = std::thread::Builder::new()
                .name("config".into())
                .spawn(move || {
                    let _ = tx.send(read_config_file(&owned));
                });
            let refused = |why| ParamError::ConfigRefused {
                path: path.clone(),
                why,
            };
            match spawned {
                Err(e) => Err(ParamError::ConfigUnreadable {
                    path: path.clone(),
                    source: e,
                }),
                Ok(_) => match rx.recv_timeout(budget) {
                    Ok(Ok(xml)) if is_domain_xml(&xml) => Ok(xml),
                    Ok(Ok(_)) => Err(ParamError::ConfigNotDomain { path: path.clone() }),
                    Ok(Err(ReadError::Io(source))) => Err(ParamError::ConfigUnreadable {
                        path: path.clone(),
                        source,
                    }),
                    Ok(Err(ReadError::Refused(why))) => Err(refused(why)),
                    Err(_) => Err(refused(ConfigProblem::Slow(budget))),
                },
            }
        })
    }
}

/// How long reading `config` may take at most.
pub const CONFIG_BUDGET: Duration = Duration::from_secs(2);

enum ReadError {
    Io(std::io::Error),
    Refused(ConfigProblem),
}

fn read_config_file(path: &std::path::Path) -> Result<String, ReadError> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a
    // writer; O_NOCTTY: a terminal never becomes ours. The checks are made
    // on the opened file (fstat), so the file read is the file checked.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(ReadError::Io)?;
    let meta = file.metadata().map_err(ReadError::Io)?;
    let kind = meta.file_type();
    let not_regular = if kind.is_dir() {
        Some("directory")
    } else if kind.is_fifo() {
        Some("FIFO")
    } else if kind.is_char_device() || kind.is_block_device() {
        Some("device")
    } else if kind.is_socket() {
        Some("socket")
    } else {
        None
    };
    if let Some(k) = not_regular {
        return Err(ReadError::Refused(ConfigProblem::NotRegular(k)));
    }
    if meta.uid() != 0 {
        return Err(ReadError::Refused(ConfigProblem::NotRoot(meta.uid())));
    }
    if meta.mode() & 0o002 != 0 {
        return Err(ReadError::Refused(ConfigProblem::Writable(
            meta.mode() & 0o7777,
        )));
    }
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ReadError::Refused(ConfigProblem::TooLarge));
    }
    String::from_utf8(bytes).map_err(|_| ReadError::Refused(ConfigProblem::NotText))
}

/// Whether the document's root element is `<domain>`, after an optional
/// XML declaration, comments and whitespace: enough to keep a file that is
/// something else (a key, /etc/shadow) from reaching libvirt, whose parse
/// errors quote the offending line.
fn is_domain_xml(xml: &str) -> bool {
    let mut rest = xml.trim_start_matches('\u{feff}').trim_start();
    loop {
        if let Some(r) = rest.strip_prefix("<?") {
            let Some(end) = r.find("?>") else {
                return false;
            };
            rest = r[end + 2..].trim_start();
        } else if let Some(r) = rest.strip_prefix("<!--") {
            let Some(end) = r.find("-->") else {
                return false;
            };
            rest = r[end + 3..].trim_start();
        } else {
            return rest
                .strip_prefix("<domain")
                .and_then(|r| r.chars().next())
                .is_some_and(|c| c == '>' || c.is_ascii_whitespace());
        }
    }
}

/// The first `<name>` of a domain XML, unescaped: libvirt puts the
/// domain's name there, before any device.
fn domain_name(xml: &str) -> Option<String> {
    let start = xml.find("<name>")? + "<name>".len();
    let len = xml[start..].find("</name>")?;
    let raw = xml[start..start + len].trim();
    Some(
        raw.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

/// A config that names another domain is refused: start would define and
/// boot that one.
pub fn check_name(name: &str, xml: &str) -> Result<(), ParamError> {
    match domain_name(xml) {
        Some(found) if found != name => Err(ParamError::ConfigNames {
            name: name.into(),
            found,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ocf::{Env, OcfRc};

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::reskeys(pairs)
    }

    #[test]
    fn unreadable_config_is_not_installed() {
        let p =
            Params::from_env(&env(&[("name", "vm1"), ("config", "/nonexistent/x.xml")])).unwrap();
        let e = p.read_config(CONFIG_BUDGET).unwrap().unwrap_err();
        assert_eq!(e.rc(), OcfRc::ErrInstalled);
    }

    #[test]
    fn only_domain_xml_is_passed_on() {
        for xml in [
            "<domain type='kvm'>",
            "<?xml version='1.0'?>\n<!-- made by hand -->\n<domain>",
            "\u{feff}  <domain\n type='qemu'>",
        ] {
            assert!(is_domain_xml(xml), "{xml:?}");
        }
        for xml in [
            "root:$6$secret:19000::::::",
            "<domains>",
            "<network>",
            "<!-- <domain>",
            "",
        ] {
            assert!(!is_domain_xml(xml), "{xml:?}");
        }
    }

    #[test]
    fn config_naming_another_domain_is_refused() {
        assert_eq!(
            domain_name("<domain><name>a&amp;b</name><x><name>y</name></x></domain>"),
            Some("a&b".into())
        );
        let e = check_name("vm1", "<domain><name>vm2</name></domain>").unwrap_err();
        assert_eq!(e.rc(), OcfRc::ErrConfigured);
    }
}
