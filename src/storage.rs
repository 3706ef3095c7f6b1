//! Which of a domain's disks a live migration copies, and which layouts it
//! refuses before the guest is touched.
//!
//! A disk is shared when both nodes see the same data at its source: a
//! network disk (NBD, RBD, iSCSI, Gluster), a block device (a SAN LUN, a
//! DRBD device), a file on a network or cluster filesystem. A file on the
//! node's own filesystem is local: without a copy the target would boot the
//! guest on its own, stale image. Local disks are copied by libvirt's
//! storage migration (NON_SHARED_DISK with `migrate_disks`: QEMU mirrors
//! them to an NBD server of the target QEMU, on the host of the migration
//! URI, so over the same network as the RAM). A disk that is not copied
//! must not keep writes in the host's page cache (cache other than `none`
//! or `directsync`): the target would read the disk before the source's
//! cache reached it, which libvirt calls unsafe (VIR_ERR_MIGRATE_UNSAFE).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::bounded::on_worker;
use crate::ocf::{short, short_text, Storage};

/// Where a disk's data comes from (`<disk type=...>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    Block(PathBuf),
    /// `protocol:name`, as `<source protocol= name=>` says, and its
    /// servers (`<host name= port=>`, as `host:port`).
    Network(String, Vec<String>),
    /// `pool/volume` of a libvirt storage pool.
    Volume(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(p) | Source::Block(p) => write!(f, "{}", p.display()),
            Source::Network(n, _) | Source::Volume(n) => f.write_str(n),
        }
    }
}

/// One writable disk of the domain, with a source (CD-ROMs, read-only and
/// empty drives have nothing to copy and nothing to lose).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// The guest's name for it (`<target dev='vda'>`), what libvirt's
    /// `migrate_disks` lists.
    pub target: String,
    pub source: Source,
    /// `<driver cache=...>`; None is QEMU's default, writeback.
    pub cache: Option<String>,
    /// `<shareable/>`: several guests use it at once, so it is never copied.
    pub shareable: bool,
}

/// The first child element of `n` named `tag`.
pub(crate) fn child<'a, 'i>(
    n: roxmltree::Node<'a, 'i>,
    tag: &str,
) -> Option<roxmltree::Node<'a, 'i>> {
    n.children().find(|c| c.has_tag_name(tag))
}

/// The writable disks of a domain XML, in document order.
pub fn disks(xml: &str) -> Result<Vec<Disk>, Error> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| Error::Xml(e.to_string()))?;
    let devices = doc
        .root_element()
        .children()
        .filter(|n| n.has_tag_name("devices"));
    Ok(devices
        .flat_map(|d| d.children().filter(|n| n.has_tag_name("disk")))
        .filter(|d| matches!(d.attribute("device"), None | Some("disk" | "lun")))
        .filter(|d| child(*d, "readonly").is_none())
        .filter_map(|d| {
            let src = child(d, "source")?;
            let source = match d.attribute("type")? {
                "file" => Source::File(src.attribute("file")?.into()),
                "block" => Source::Block(src.attribute("dev")?.into()),
                "network" => Source::Network(
                    format!(
                        "{}:{}",
                        src.attribute("protocol").unwrap_or("?"),
                        src.attribute("name").unwrap_or_default()
                    ),
                    src.children()
                        .filter(|h| h.has_tag_name("host"))
                        .filter_map(|h| {
                            let host = h.attribute("name")?;
                            Some(match h.attribute("port") {
                                Some(port) => format!("{host}:{port}"),
                                None => host.to_owned(),
                            })
                        })
                        .collect(),
                ),
                "volume" => Source::Volume(format!(
                    "{}/{}",
                    src.attribute("pool")?,
                    src.attribute("volume")?
                )),
                _ => return None,
            };
            Some(Disk {
                target: child(d, "target")?.attribute("dev")?.to_owned(),
                source,
                cache: child(d, "driver")
                    .and_then(|n| n.attribute("cache"))
                    .map(str::to_owned),
                shareable: child(d, "shareable").is_some(),
            })
        })
        .collect())
}

/// The domain's memory in bytes (`<memory unit=...>`, KiB by default), what
/// a live migration copies besides the disks.
pub fn memory_bytes(xml: &str) -> Option<u64> {
    let doc = roxmltree::Document::parse(xml).ok()?;
    let mem = child(doc.root_element(), "memory")?;
    let n: u64 = mem.text()?.trim().parse().ok()?;
    // libvirt's scaled integers (virScaleInteger): powers of 1024 for
    // the binary and the one-letter units, of 1000 for KB, MB...
    let scale: u64 = match mem.attribute("unit").unwrap_or("KiB") {
        "b" | "bytes" => 1,
        "KB" => 1000,
        "k" | "K" | "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "M" | "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "G" | "GiB" => 1 << 30,
        "T" | "TiB" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(scale)
}

/// What the move does with one disk, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub target: String,
    pub source: Source,
    pub copy: bool,
    pub why: &'static str,
}

impl Decision {
    /// Whether an error's text is about this disk: it names the disk's
    /// path, or one of its network servers (QEMU says "Failed to connect
    /// to 'host:port'" for an NBD server it cannot reach).
    pub fn named_in(&self, text: &str) -> bool {
        match &self.source {
            Source::Network(_, hosts) => hosts.iter().any(|h| text.contains(h.as_str())),
            s => text.contains(&s.to_string()),
        }
    }
}

/// A layout the move refuses before it starts (the guest keeps running
/// here, untouched), or a domain XML that cannot be read. Each reason names
/// the disk first, then the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("the domain XML cannot be parsed: {}", short_text(.0))]
    Xml(String),
    #[error("disk {} is a local file: migration_storage=shared would not copy it; set auto or copy", short(.target))]
    LocalNotCopied { target: String },
    #[error("disk {} is shared but cache={cache} can lose writes: set cache='none' or migration_storage=copy", short(.target))]
    UnsafeCache { target: String, cache: String },
}

/// Decides every disk under `mode`. `shared_fs` tells whether a file's
/// filesystem is one both nodes see.
pub fn plan(
    disks: &[Disk],
    mode: Storage,
    shared_fs: impl Fn(&Path) -> bool,
) -> Result<Vec<Decision>, Error> {
    disks
        .iter()
        .map(|d| {
            let (copy, why) = match (&d.source, mode) {
                _ if d.shareable => (false, "shareable: used by other guests at once"),
                (Source::Network(..), _) => (false, "a network disk both nodes reach"),
                (Source::File(p), _) if shared_fs(p) => {
                    (false, "a file on a network or cluster filesystem")
                }
                (Source::File(_), Storage::Shared) => {
                    return Err(Error::LocalNotCopied {
                        target: d.target.clone(),
                    })
                }
                (Source::File(_), _) => (true, "a file on this node's filesystem"),
                (_, Storage::Copy) => (true, "migration_storage=copy"),
                (Source::Block(_), _) => (false, "a block device, taken as shared"),
                (Source::Volume(_), _) => (false, "a storage pool volume, taken as shared"),
            };
            let safe = matches!(d.cache.as_deref(), Some("none" | "directsync"));
            if !copy && !safe {
                return Err(Error::UnsafeCache {
                    target: d.target.clone(),
                    cache: d.cache.clone().unwrap_or_else(|| "writeback".into()),
                });
            }
            Ok(Decision {
                target: d.target.clone(),
                source: d.source.clone(),
                copy,
                why,
            })
        })
        .collect()
}

/// The first of `disks` whose file or device does not exist on this node,
/// looked for within `budget` (on a worker thread: a path on a hung network
/// filesystem must not hold the action). None when all are there, or when
/// the look took too long (then libvirt's own start says what is wrong).
pub fn first_missing(disks: &[Disk], budget: Duration) -> Option<Disk> {
    let disks = disks.to_vec();
    on_worker("disks", Instant::now() + budget, move || {
        disks.into_iter().find(|d| match &d.source {
            Source::File(p) | Source::Block(p) => !p.exists(),
            Source::Network(..) | Source::Volume(_) => false,
        })
    })
    .ok()
    .flatten()
}

/// [`plan`] for the disks of a domain XML, on this node's filesystems.
pub fn decide(xml: &str, mode: Storage) -> Result<Vec<Decision>, Error> {
    plan(&disks(xml)?, mode, on_shared_fs)
}

/// The disks `plan` copies, as libvirt's `migrate_disks` lists them.
pub fn copied(plan: &[Decision]) -> Vec<String> {
    plan.iter()
        .filter(|d| d.copy)
        .map(|d| d.target.clone())
        .collect()
}

/// Filesystems whose files both nodes see (statfs f_type, from
/// linux/magic.h and the filesystems' own headers): NFS, SMB/CIFS, Ceph,
/// GFS2, OCFS2, AFS, GPFS, Lustre. libvirt's virFileIsSharedFS knows the
/// same list.
const SHARED_FS_MAGIC: [i64; 10] = [
    0x6969,      // NFS_SUPER_MAGIC
    0xff53_4d42, // CIFS_MAGIC_NUMBER
    0xfe53_4d42, // SMB2_MAGIC_NUMBER
    0x517b,      // SMB_SUPER_MAGIC
    0x00c3_6400, // CEPH_SUPER_MAGIC
    0x0116_1970, // GFS2_MAGIC
    0x7461_636f, // OCFS2_SUPER_MAGIC
    0x5346_414f, // AFS_SUPER_MAGIC
    0x4750_4653, // GPFS_SUPER_MAGIC
    0x0bd0_0bd0, // LUSTRE_SUPER_MAGIC
];

/// Whether the file at `path` is on a filesystem both nodes see. One that
/// cannot be asked counts as local: copying a shared disk costs time,
/// not copying a local one loses the guest's writes.
pub fn on_shared_fs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| SHARED_FS_MAGIC.contains(&s.filesystem_type().0))
        .unwrap_or(false)
}

/// One line per disk for the log and plan-migration: `vda
/// /var/lib/libvirt/images/srv.img: copied (a file on this node's
/// filesystem)`.
pub fn describe(plan: &[Decision]) -> Vec<String> {
    plan.iter()
        .map(|d| {
            let what = if d.copy { "copied" } else { "shared" };
            format!("{} {}: {what} ({})", d.target, d.source, d.why)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::assert_starts;

    const XML: &str = "<domain type='kvm'><name>srv</name><devices>
      <disk type='file' device='disk'><driver name='qemu' type='raw' cache='none'/>
        <source file='/var/lib/libvirt/images/srv.img'/><target dev='vda' bus='virtio'/></disk>
      <disk type='block' device='disk'><driver name='qemu' type='raw' cache='none'/>
        <source dev='/dev/drbd0'/><target dev='vdb' bus='virtio'/></disk>
      <disk type='network' device='disk'><driver name='qemu' type='raw'/>
        <source protocol='nbd' name='srv'><host name='storage' port='10809'/></source>
        <target dev='vdc' bus='virtio'/></disk>
      <disk type='file' device='cdrom'><source file='/iso/install.iso'/><target dev='sda'/></disk>
      <disk type='file' device='disk'><source file='/ro.img'/><target dev='vdd'/><readonly/></disk>
      <disk type='block' device='disk'><target dev='vde'/></disk>
    </devices></domain>";

    fn local(_: &Path) -> bool {
        false
    }

    #[test]
    fn only_writable_disks_with_a_source_are_listed() {
        let d = disks(XML).unwrap();
        let targets: Vec<_> = d.iter().map(|d| d.target.as_str()).collect();
        assert_eq!(targets, ["vda", "vdb", "vdc"]);
        assert_eq!(
            d[2].source,
            Source::Network("nbd:srv".into(), vec!["storage:10809".into()])
        );
        assert_eq!(d[2].cache, None);
    }

    #[test]
    fn auto_copies_local_files_and_keeps_block_devices() {
        let d = &disks(XML).unwrap()[..2];
        let p = plan(d, Storage::Auto, local).unwrap();
        assert_eq!(copied(&p), ["vda"]);
        assert!(!p[1].copy);
        // The same file on NFS is shared.
        let p = plan(d, Storage::Auto, |_| true).unwrap();
        assert!(copied(&p).is_empty());
        // copy takes the block device too.
        let p = plan(d, Storage::Copy, local).unwrap();
        assert_eq!(copied(&p), ["vda", "vdb"]);
    }

    #[test]
    fn unsafe_layouts_are_refused_with_the_disk_first() {
        let d = disks(XML).unwrap();
        let e = plan(&d[..1], Storage::Shared, local).unwrap_err();
        assert_starts(e.to_string(), "disk vda is a local file: ");
        // A network disk with QEMU's default cache (writeback).
        let e = plan(&d, Storage::Auto, local).unwrap_err();
        assert_eq!(
            e,
            Error::UnsafeCache {
                target: "vdc".into(),
                cache: "writeback".into()
            }
        );
        assert!(e.to_string().len() <= crate::ocf::EXIT_REASON_MAX, "{e}");
        // Copied, the cache mode does not matter.
        let mut d = d[..1].to_vec();
        d[0].cache = Some("writeback".into());
        assert!(plan(&d, Storage::Auto, local).is_ok());
    }

    #[test]
    fn a_disk_whose_path_is_not_here_is_found() {
        let mut d = disks(XML).unwrap();
        d.truncate(1);
        let budget = Duration::from_secs(2);
        assert_eq!(first_missing(&d, budget).unwrap().target, "vda");
        d[0].source = Source::File("/".into());
        assert_eq!(first_missing(&d, budget), None);
    }

    #[test]
    fn an_error_names_a_disk_by_its_path_or_its_server() {
        let p = plan(&disks(XML).unwrap()[..2], Storage::Auto, local).unwrap();
        let e = "Cannot access storage file '/dev/drbd0' (as uid:0, gid:0): No such file";
        assert!(!p[0].named_in(e) && p[1].named_in(e));
        let mut net = disks(XML).unwrap()[2].clone();
        net.cache = Some("none".into());
        let p = plan(&[net], Storage::Auto, local).unwrap();
        assert!(p[0].named_in("Failed to connect to 'storage:10809': No route to host"));
        assert!(!p[0].named_in("Failed to connect to 'other:10809'"));
    }

    #[test]
    fn memory_is_read_in_libvirts_units() {
        let xml = |m: &str| format!("<domain><name>x</name>{m}</domain>");
        assert_eq!(
            memory_bytes(&xml("<memory>131072</memory>")),
            Some(128 << 20)
        );
        assert_eq!(
            memory_bytes(&xml("<memory unit='MiB'>128</memory>")),
            Some(128 << 20)
        );
        assert_eq!(
            memory_bytes(&xml("<memory unit='GB'>1</memory>")),
            Some(1_000_000_000)
        );
        assert_eq!(memory_bytes(&xml("")), None);
    }

    #[test]
    fn a_local_filesystem_is_not_shared() {
        assert!(!on_shared_fs(Path::new("/")));
        assert!(!on_shared_fs(Path::new("/nonexistent/x.img")));
    }
}
