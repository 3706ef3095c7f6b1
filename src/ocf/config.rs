//! The `config` file: read only when it is a small regular file root owns
//! and nobody else may write, within a time budget, and passed on only
//! when its root element is `<domain>`.

use std::time::{Duration, Instant};

use super::params::{ConfigProblem, ParamError, Params, MAX_CONFIG_BYTES};
use crate::bounded::{on_worker, Unanswered};

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
            let refused = |why| ParamError::ConfigRefused {
                path: path.clone(),
                why,
            };
            match on_worker("config", Instant::now() + budget, move || {
                read_config_file(&owned)
            }) {
                Ok(Ok(xml)) => match domain_doc(&xml) {
                    Ok(_) => Ok(xml),
                    Err(why) => Err(ParamError::ConfigNotDomain {
                        path: path.clone(),
                        why,
                    }),
                },
                Ok(Err(ReadError::Io(source))) | Err(Unanswered::NoThread(source)) => {
                    Err(ParamError::ConfigUnreadable {
                        path: path.clone(),
                        source,
                    })
                }
                Ok(Err(ReadError::Refused(why))) => Err(refused(why)),
                Err(Unanswered::Late) => Err(refused(ConfigProblem::Slow(budget))),
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

/// The `<name>` of a domain XML, once the document is shown to be one:
/// well-formed, with `<domain>` as its root element. That keeps a file that
/// is something else (a key, /etc/shadow) from reaching libvirt, whose
/// parse errors quote the offending line; the reason never quotes it.
fn domain_doc(xml: &str) -> Result<Option<String>, &'static str> {
    let doc = roxmltree::Document::parse(xml).map_err(|_| "it is not well-formed XML")?;
    let root = doc.root_element();
    if !root.has_tag_name("domain") {
        return Err("its root element is not <domain>");
    }
    Ok(root
        .children()
        .find(|n| n.has_tag_name("name"))
        .and_then(|n| n.text())
        .map(|t| t.trim().to_owned()))
}

/// A config that names another domain is refused: start would define and
/// boot that one.
pub fn check_name(name: &str, xml: &str) -> Result<(), ParamError> {
    match domain_doc(xml).ok().flatten() {
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
            "<domain type='kvm'/>",
            "<?xml version='1.0'?>\n<!-- made by hand -->\n<domain><name>a</name></domain>",
            "\u{feff}  <domain\n type='qemu'></domain>",
        ] {
            assert!(domain_doc(xml).is_ok(), "{xml:?}");
        }
        for xml in [
            "root:$6$secret:19000::::::",
            "<domains/>",
            "<network/>",
            "<!-- <domain> -->",
            "<domain><memory>oops</domain>",
            "",
        ] {
            assert!(domain_doc(xml).is_err(), "{xml:?}");
        }
    }

    #[test]
    fn config_naming_another_domain_is_refused() {
        assert_eq!(
            domain_doc("<domain><x><name>y</name></x><name> a&amp;b </name></domain>"),
            Ok(Some("a&b".into()))
        );
        let e = check_name("vm1", "<domain><name>vm2</name></domain>").unwrap_err();
        assert_eq!(e.rc(), OcfRc::ErrConfigured);
    }
}
