//! The resource parameters: one check per parameter, each refusal a
//! [`ParamError`] that names the parameter, and the lenient reading stop
//! and monitor use.

use std::path::PathBuf;
use std::time::Duration;

use super::{short, short_path, Env, OcfRc};
use crate::uri::{self, HostError, LocalUri, UriError, UserError};

/// How this node's libvirtd reaches the peer's (`qemu+<transport>://`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Ssh,
    Tcp,
    Tls,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Ssh => "ssh",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
}

/// Where the target's QEMU listens for the copy (`migration_port`), so a
/// firewall can open exactly that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationPort {
    /// The target's libvirtd picks a free port of its qemu.conf range
    /// (`migration_port_min`/`_max`, 49152-49215 unless changed).
    Default,
    /// This port, in the migrate URI (libvirt then takes no port from its
    /// range); a copied disk's NBD export listens on the next one
    /// (VIR_MIGRATE_PARAM_DISKS_PORT). One move into a node at a time: a
    /// second QEMU cannot listen on the same port.
    Fixed(u16),
    /// The range the admin set in the target's qemu.conf: libvirt picks
    /// a free port of it for each incoming move, so moves may overlap.
    Range(u16, u16),
}

impl MigrationPort {
    /// The port the `.mn` probe tries: nothing listens there before a
    /// move, so a refused connect shows an open path. Of a range, the last
    /// port: libvirt hands out the lowest free one, so the probe's connect
    /// lands in another incoming QEMU only when the range is nearly full.
    pub fn probed(self) -> u16 {
        match self {
            MigrationPort::Default => 49215,
            MigrationPort::Fixed(p) => p,
            MigrationPort::Range(_, last) => last,
        }
    }

    /// The port the migrate URI names, if any.
    pub fn in_uri(self) -> Option<u16> {
        match self {
            MigrationPort::Fixed(p) => Some(p),
            _ => None,
        }
    }

    /// The port of the NBD export a disk copy uses, if vmshift names it.
    pub fn for_disks(self) -> Option<u16> {
        self.in_uri().map(|p| p + 1)
    }
}

impl std::fmt::Display for MigrationPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MigrationPort::Default => f.write_str("the target's qemu.conf range"),
            MigrationPort::Fixed(p) => write!(f, "port {p} (disks {})", p + 1),
            MigrationPort::Range(a, b) => write!(f, "ports {a}-{b}"),
        }
    }
}

/// When QEMU may slow the guest's vCPUs so that a copy the guest outpaces
/// converges (`migration_auto_converge`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoConverge {
    /// From the first copy: QEMU throttles only once the guest dirties
    /// memory faster than half the copy rate, so a guest that converges
    /// anyway is never slowed, and no copy is made twice.
    Always,
    /// Only after more downtime did not suffice, by restarting the copy.
    Stalled,
    Never,
}

/// Whether QEMU compresses the RAM copy (`migration_compression`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// XBZRLE where `migration_speed` caps a single stream: the link, not
    /// the CPU, is the limit there.
    Auto,
    /// XBZRLE: pages sent again go as their difference from the last copy.
    Xbzrle,
    None,
}

/// Which disks a live migration copies (`migration_storage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// The disks on a node's own filesystem; the rest is shared.
    Auto,
    /// None: every disk must be one both nodes see.
    Shared,
    /// Every writable disk but network disks.
    Copy,
}

impl Storage {
    pub fn as_str(self) -> &'static str {
        match self {
            Storage::Auto => "auto",
            Storage::Shared => "shared",
            Storage::Copy => "copy",
        }
    }
}

/// A parameter that cannot be used. All map to exit 6 (OCF_ERR_CONFIGURED:
/// the configuration itself is wrong, wherever it runs) except an
/// unreadable `config`, which is this node's problem (5).
#[derive(Debug, thiserror::Error)]
#[cfg_attr(test, derive(strum::EnumCount))]
pub enum ParamError {
    #[error("parameter 'name' is required (the libvirt domain name)")]
    MissingName,
    #[error("parameter '{name}' is not valid UTF-8")]
    NotUtf8 { name: String },
    #[error("name \"{}\" cannot be a libvirt domain name: {why}", short(.value))]
    BadName { value: String, why: &'static str },
    #[error("{name}=\"{}\" is not valid: expected {expected}", short(.value))]
    Invalid {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("migration_downtime_max={max} is below migration_downtime={start}")]
    DowntimeMaxBelowStart { max: u64, start: u64 },
    #[error("migration_compression=xbzrle and migration_parallel={parallel} exclude each other: QEMU refuses XBZRLE with multifd")]
    XbzrleWithParallel { parallel: u32 },
    #[error("migration_postcopy=true and migration_parallel={parallel} exclude each other: QEMU refuses post-copy with multifd")]
    PostcopyWithParallel { parallel: u32 },
    #[error("hypervisor=\"{}\" is refused", short(.value))]
    BadUri {
        value: String,
        #[source]
        source: UriError,
    },
    #[error("{name}=\"{}\" cannot be a node's host name", short(.value))]
    BadHost {
        name: &'static str,
        value: String,
        #[source]
        source: HostError,
    },
    #[error("migration_user=\"{}\" cannot be a user name", short(.value))]
    BadUser {
        value: String,
        #[source]
        source: UserError,
    },
    #[error("config {} is not readable", short_path(.path))]
    ConfigUnreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {} is refused: {why}", short_path(.path))]
    ConfigRefused { path: PathBuf, why: ConfigProblem },
    #[error("config names domain \"{}\", not \"{}\"", short(.found), short(.name))]
    ConfigNames { name: String, found: String },
    #[error("config {} is not a domain XML: {why}", short_path(.path))]
    ConfigNotDomain { path: PathBuf, why: &'static str },
}

impl ParamError {
    /// The `name` parameter is missing or one no libvirt domain can have
    /// ([`check_name`] follows libvirt's own rule): nothing by that name
    /// can run on this node.
    pub fn name_is_impossible(&self) -> bool {
        match self {
            ParamError::MissingName | ParamError::BadName { .. } => true,
            ParamError::NotUtf8 { name } => name == "name",
            _ => false,
        }
    }

    pub fn rc(&self) -> OcfRc {
        match self {
            // The file on this node: another node's may be fine (5 bans
            // only this one). What it says is wrong everywhere (6).
            ParamError::ConfigUnreadable { .. } | ParamError::ConfigRefused { .. } => {
                OcfRc::ErrInstalled
            }
            _ => OcfRc::ErrConfigured,
        }
    }
}

/// The resource parameters (the names are a contract with every CIB that
/// uses this agent; `ocf-metadata.xml` documents each one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    pub name: String,
    /// The local libvirt URI, as given and as parsed.
    pub hypervisor: String,
    pub local_uri: LocalUri,
    pub config: Option<PathBuf>,
    pub migration_network_suffix: String,
    pub migration_transport: Transport,
    pub migration_user: Option<String>,
    /// MiB/s; 0 means unlimited.
    pub migration_speed: u64,
    /// Milliseconds: the downtime a migration starts with.
    pub migration_downtime: u64,
    /// Milliseconds: the most the convergence policy may raise it to.
    pub migration_downtime_max: u64,
    /// Seconds a copy may go without progress before it is ended; 0 is
    /// off, unset a share of migrate_to's timeout (`Budget::progress_timeout`).
    pub migration_progress_timeout: Option<u64>,
    pub migration_postcopy: bool,
    pub migration_auto_converge: AutoConverge,
    pub migration_compression: Compression,
    /// TCP connections for the RAM copy; 1 is a single stream.
    pub migration_parallel: u32,
    pub migration_storage: Storage,
    pub migration_port: MigrationPort,
    /// Start an inactive network or pool the server needs.
    pub start_resources: bool,
    /// Copy this node's definition to the peer when they differ (not with
    /// `config`).
    pub sync_definition: bool,
    /// Write the vCPU count as the resource's `cpu` utilization.
    pub autoset_utilization_cpu: bool,
    /// Write the memory in MiB as its `host_memory` utilization.
    pub autoset_utilization_host_memory: bool,
    pub force_stop: bool,
    /// The other nodes, when given; otherwise asked from Pacemaker.
    pub peer: Vec<String>,
}

pub const DEFAULT_HYPERVISOR: &str = "qemu:///system";
pub const DEFAULT_SUFFIX: &str = ".mn";
pub const DEFAULT_DOWNTIME_MS: u64 = 300;
pub const DEFAULT_DOWNTIME_MAX_MS: u64 = 1200;
/// QEMU's multifd-channels allows up to 255; beyond a few dozen, more
/// streams only cost threads on both hosts.
const MAX_PARALLEL: u64 = 64;
/// libvirt refuses a migration bandwidth above QEMU_DOMAIN_MIG_BANDWIDTH_MAX
/// (INT64_MAX bytes/s in MiB/s): every move would fail at its start.
const MAX_BANDWIDTH_MIB_S: u64 = (i64::MAX as u64) / (1024 * 1024);
/// QEMU refuses a downtime limit above 2000 s (MAX_MIGRATE_DOWNTIME_SECONDS).
const MAX_DOWNTIME_MS: u64 = 2_000_000;

/// Parameter names in meta-data order; the CLI mirrors them as flags.
pub const PARAM_NAMES: [&str; 22] = [
    "name",
    "hypervisor",
    "config",
    "migration_network_suffix",
    "migration_transport",
    "migration_user",
    "migration_speed",
    "migration_downtime",
    "migration_downtime_max",
    "migration_progress_timeout",
    "migration_postcopy",
    "migration_auto_converge",
    "migration_compression",
    "migration_parallel",
    "migration_storage",
    "migration_port",
    "start_resources",
    "sync_definition",
    "autoset_utilization_cpu",
    "autoset_utilization_host_memory",
    "force_stop",
    "peer",
];

/// libvirt saves a domain as `<name>.xml`, written through `<name>.xml.new`
/// (virFileRewrite), so a name must leave room for ".xml.new" in NAME_MAX
/// (255): "File name too long" above 247 bytes.
const MAX_NAME_LEN: usize = 247;

/// The names libvirt accepts, exactly: a name it refuses cannot be a
/// domain on any node, which is what lets stop answer 0 for it. libvirt
/// refuses '/' and '\n' in a name (virDomainDefParseXML), and a domain XML
/// cannot carry the other C0 controls but tab and carriage return (XML
/// 1.0's Char production); DEL, C1 controls and '\r' are valid names.
fn check_name(value: &str) -> Result<(), ParamError> {
    let bad = |why| {
        Err(ParamError::BadName {
            value: value.into(),
            why,
        })
    };
    if value.len() > MAX_NAME_LEN {
        bad("longer than 247 bytes (libvirt stores <name>.xml.new)")
    } else if value.contains('/') {
        bad("contains '/'")
    } else if value.contains('\n') {
        bad("contains a newline")
    } else if value.chars().any(|c| c < ' ' && c != '\t' && c != '\r') {
        bad("contains a control character XML cannot carry")
    } else {
        Ok(())
    }
}

/// `ocf_is_true` in ocf-shellfuncs accepts these spellings.
fn parse_bool(name: &'static str, value: &str) -> Result<bool, ParamError> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "yes" | "true" | "on" => Ok(true),
        "0" | "no" | "false" | "off" => Ok(false),
        _ => Err(ParamError::Invalid {
            name,
            value: value.into(),
            expected: "a boolean (true/false, yes/no, 1/0, on/off)",
        }),
    }
}

/// A whole number in `range`; `expected` says what is accepted.
fn parse_u64(
    name: &'static str,
    value: &str,
    range: std::ops::RangeInclusive<u64>,
    expected: &'static str,
) -> Result<u64, ParamError> {
    value
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|v| range.contains(v))
        .ok_or_else(|| ParamError::Invalid {
            name,
            value: value.into(),
            expected,
        })
}

/// One of a parameter's spellings, exactly as meta-data lists them.
fn parse_choice<T: Copy>(
    name: &'static str,
    value: &str,
    choices: &[(&str, T)],
    expected: &'static str,
) -> Result<T, ParamError> {
    choices
        .iter()
        .find_map(|&(spelling, t)| (spelling == value).then_some(t))
        .ok_or_else(|| ParamError::Invalid {
            name,
            value: value.into(),
            expected,
        })
}

/// A host-name fragment: what DNS labels and /etc/hosts allow.
fn is_hostname_chars(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
}
impl Params {
    /// Reads and checks every parameter. The first problem found is
    /// returned; `validate-all`, `start` and the migrations refuse to run
    /// with it.
    pub fn from_env(env: &Env) -> Result<Params, ParamError> {
        let (params, problems) = Self::from_env_lenient(env)?;
        match problems.into_iter().next() {
            Some(problem) => Err(problem),
            None => Ok(params),
        }
    }

    /// Reads the parameters, substituting the default for each invalid
    /// optional one and returning the problems beside them. `stop` and
    /// `monitor` use this: a typo in, say, `migration_speed` must not make
    /// a stop fail, since a failed stop gets the node fenced. Only a
    /// missing or impossible `name` is an error here.
    pub fn from_env_lenient(env: &Env) -> Result<(Params, Vec<ParamError>), ParamError> {
        let name = env.reskey("name")?.ok_or(ParamError::MissingName)?;
        check_name(name)?;
        let mut params = Params::defaults(name);
        let mut problems = Vec::new();
        for (key, parse) in PARSERS {
            match env.reskey(key) {
                Ok(Some(value)) => problems.extend(parse(&mut params, value).err()),
                Ok(None) => {}
                Err(e) => problems.push(e),
            }
        }
        // Only the start was set, above the default ceiling: the ceiling
        // follows it rather than refusing a valid start.
        if !matches!(env.reskey("migration_downtime_max"), Ok(Some(_))) {
            params.migration_downtime_max =
                params.migration_downtime_max.max(params.migration_downtime);
        }
        // QEMU (10.0 and older) refuses the postcopy-ram capability next to
        // multifd when the migration starts: a move would fail, and a
        // failed migrate_to costs a restart under Pacemaker's default
        // multiple-active=stop_start. Said here, it shows at validation.
        if params.migration_postcopy && params.migration_parallel > 1 {
            problems.push(ParamError::PostcopyWithParallel {
                parallel: params.migration_parallel,
            });
        }
        // QEMU refuses the xbzrle capability next to multifd in the same
        // way (migrate_caps_check).
        if params.migration_compression == Compression::Xbzrle && params.migration_parallel > 1 {
            problems.push(ParamError::XbzrleWithParallel {
                parallel: params.migration_parallel,
            });
        }
        Ok((params, problems))
    }

    /// Every optional parameter at its default.
    fn defaults(name: &str) -> Params {
        Params {
            name: name.to_owned(),
            hypervisor: DEFAULT_HYPERVISOR.to_owned(),
            local_uri: LocalUri::parse(DEFAULT_HYPERVISOR).expect("the default URI parses"),
            config: None,
            migration_network_suffix: DEFAULT_SUFFIX.to_owned(),
            migration_transport: Transport::Ssh,
            migration_user: None,
            migration_speed: 0,
            migration_downtime: DEFAULT_DOWNTIME_MS,
            migration_downtime_max: DEFAULT_DOWNTIME_MAX_MS,
            migration_progress_timeout: None,
            migration_postcopy: false,
            migration_auto_converge: AutoConverge::Always,
            migration_compression: Compression::Auto,
            migration_parallel: 1,
            migration_storage: Storage::Auto,
            migration_port: MigrationPort::Default,
            start_resources: false,
            sync_definition: true,
            autoset_utilization_cpu: true,
            autoset_utilization_host_memory: true,
            force_stop: false,
            peer: Vec::new(),
        }
    }
}

/// A boolean parameter's PARSERS entry: the field of the same name, in any
/// of OCF's spellings (parse_bool).
macro_rules! flag {
    ($field:ident) => {
        (stringify!($field), |p: &mut Params, v: &str| {
            p.$field = parse_bool(stringify!($field), v)?;
            Ok(())
        })
    };
}

/// A parameter spelled one of three ways, each one value of its type; the
/// error lists the spellings.
macro_rules! choice {
    ($field:ident: $a:literal => $va:expr, $b:literal => $vb:expr, $c:literal => $vc:expr) => {
        (stringify!($field), |p: &mut Params, v: &str| {
            let choices = [($a, $va), ($b, $vb), ($c, $vc)];
            let expected = concat!($a, ", ", $b, " or ", $c);
            p.$field = parse_choice(stringify!($field), v, &choices, expected)?;
            Ok(())
        })
    };
}

/// One parser per optional parameter, in meta-data order (a parameter may
/// rely on the ones before it: the downtime ceiling on the start).
type Parser = fn(&mut Params, &str) -> Result<(), ParamError>;
const PARSERS: [(&str, Parser); 21] = [
    ("hypervisor", hypervisor),
    ("config", config),
    ("migration_network_suffix", migration_network_suffix),
    choice!(migration_transport:
        "ssh" => Transport::Ssh,
        "tcp" => Transport::Tcp,
        "tls" => Transport::Tls
    ),
    ("migration_user", migration_user),
    ("migration_speed", migration_speed),
    ("migration_downtime", migration_downtime),
    ("migration_downtime_max", migration_downtime_max),
    ("migration_progress_timeout", migration_progress_timeout),
    flag!(migration_postcopy),
    choice!(migration_auto_converge:
        "always" => AutoConverge::Always,
        "stalled" => AutoConverge::Stalled,
        "never" => AutoConverge::Never
    ),
    choice!(migration_compression:
        "auto" => Compression::Auto,
        "xbzrle" => Compression::Xbzrle,
        "none" => Compression::None
    ),
    ("migration_parallel", migration_parallel),
    choice!(migration_storage:
        "auto" => Storage::Auto,
        "shared" => Storage::Shared,
        "copy" => Storage::Copy
    ),
    ("migration_port", migration_port),
    flag!(start_resources),
    flag!(sync_definition),
    flag!(autoset_utilization_cpu),
    flag!(autoset_utilization_host_memory),
    flag!(force_stop),
    ("peer", peer),
];

fn hypervisor(p: &mut Params, v: &str) -> Result<(), ParamError> {
    p.local_uri = LocalUri::parse(v).map_err(|source| ParamError::BadUri {
        value: v.into(),
        source,
    })?;
    p.hypervisor = v.to_owned();
    Ok(())
}

fn config(p: &mut Params, v: &str) -> Result<(), ParamError> {
    // What the file must be is checked when it is read (config.rs).
    p.config = Some(PathBuf::from(v));
    Ok(())
}

fn migration_network_suffix(p: &mut Params, v: &str) -> Result<(), ParamError> {
    if !is_hostname_chars(v) {
        return Err(ParamError::Invalid {
            name: "migration_network_suffix",
            value: v.into(),
            expected: "a suffix such as .mn (letters, digits, '.', '-')",
        });
    }
    p.migration_network_suffix = v.to_owned();
    Ok(())
}

/// `N` or `N-M`, unprivileged ports only (QEMU runs as the qemu user on
/// many distributions and could not bind below 1024); a single port
/// leaves the next one for a copied disk's NBD export.
fn migration_port(p: &mut Params, v: &str) -> Result<(), ParamError> {
    let invalid = || ParamError::Invalid {
        name: "migration_port",
        value: v.into(),
        expected: "a port 1024-65534 or a range such as 49152-49215",
    };
    let port = |s: &str| {
        s.trim()
            .parse::<u16>()
            .ok()
            .filter(|&n| n >= 1024)
            .ok_or_else(invalid)
    };
    p.migration_port = match v.split_once('-') {
        None => match port(v)? {
            65535 => return Err(invalid()),
            n => MigrationPort::Fixed(n),
        },
        Some((a, b)) => match (port(a)?, port(b)?) {
            (a, b) if a < b => MigrationPort::Range(a, b),
            (a, b) if a == b && a < 65535 => MigrationPort::Fixed(a),
            _ => return Err(invalid()),
        },
    };
    Ok(())
}

/// It goes into the peer's qemu+ssh:// URI.
fn migration_user(p: &mut Params, v: &str) -> Result<(), ParamError> {
    uri::check_user(v).map_err(|source| ParamError::BadUser {
        value: v.into(),
        source,
    })?;
    p.migration_user = Some(v.to_owned());
    Ok(())
}

fn migration_speed(p: &mut Params, v: &str) -> Result<(), ParamError> {
    p.migration_speed = parse_u64(
        "migration_speed",
        v,
        0..=MAX_BANDWIDTH_MIB_S,
        "0 (unlimited) to 8796093022207 MiB/s (libvirt's max)",
    )?;
    Ok(())
}

const MS: &str = "milliseconds from 1 to 2000000 (QEMU's limit)";

fn migration_downtime(p: &mut Params, v: &str) -> Result<(), ParamError> {
    p.migration_downtime = parse_u64("migration_downtime", v, 1..=MAX_DOWNTIME_MS, MS)?;
    Ok(())
}

fn migration_downtime_max(p: &mut Params, v: &str) -> Result<(), ParamError> {
    let max = parse_u64("migration_downtime_max", v, 1..=MAX_DOWNTIME_MS, MS)?;
    p.migration_downtime_max = max;
    if max < p.migration_downtime {
        return Err(ParamError::DowntimeMaxBelowStart {
            max,
            start: p.migration_downtime,
        });
    }
    Ok(())
}

/// A day: beyond any migrate_to timeout a cluster runs with.
const MAX_PROGRESS_TIMEOUT_S: u64 = 86_400;

fn migration_progress_timeout(p: &mut Params, v: &str) -> Result<(), ParamError> {
    p.migration_progress_timeout = Some(parse_u64(
        "migration_progress_timeout",
        v,
        0..=MAX_PROGRESS_TIMEOUT_S,
        "seconds from 0 (off) to 86400",
    )?);
    Ok(())
}

fn migration_parallel(p: &mut Params, v: &str) -> Result<(), ParamError> {
    let n = parse_u64(
        "migration_parallel",
        v,
        1..=MAX_PARALLEL,
        "1 to 64 connections (more only cost threads)",
    )?;
    p.migration_parallel = u32::try_from(n).unwrap_or(1);
    Ok(())
}

/// The other nodes, separated by commas; each goes into a peer's libvirt
/// URI as its host.
fn peer(p: &mut Params, v: &str) -> Result<(), ParamError> {
    p.peer = v
        .split(',')
        .map(|node| {
            let node = node.trim();
            uri::check_host(node).map_err(|source| ParamError::BadHost {
                name: "peer",
                value: v.into(),
                source,
            })?;
            Ok(node.to_owned())
        })
        .collect::<Result<_, _>>()?;
    Ok(())
}

/// The most of `config` that is read: a domain XML with dozens of disks
/// and interfaces is well under 1 MiB.
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// Why a `config` file is not read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigProblem {
    #[error("it is a {0}, not a regular file")]
    NotRegular(&'static str),
    #[error("it is owned by uid {0}, not root")]
    NotRoot(u32),
    #[error("others may write to it (mode {0:o})")]
    Writable(u32),
    #[error("it is larger than {} MiB", MAX_CONFIG_BYTES >> 20)]
    TooLarge,
    #[error("reading it took longer than {0:?}")]
    Slow(Duration),
    #[error("it is not UTF-8 text")]
    NotText,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::reskeys(pairs)
    }

    /// vm1's parameters with `key` set to `value`.
    fn vm1_with(key: &str, value: &str) -> Result<Params, ParamError> {
        Params::from_env(&env(&[("name", "vm1"), (key, value)]))
    }

    #[test]
    fn one_parser_per_parameter_in_meta_data_order() {
        let names: Vec<_> = PARSERS.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, PARAM_NAMES[1..]);
    }

    #[test]
    fn defaults() {
        let p = Params::from_env(&env(&[("name", "vm1")])).unwrap();
        assert_eq!(p.name, "vm1");
        assert_eq!(p.hypervisor, "qemu:///system");
        assert_eq!(p.migration_network_suffix, ".mn");
        assert_eq!(p.migration_transport, Transport::Ssh);
        assert_eq!(p.migration_speed, 0);
        assert_eq!(p.migration_downtime, 300);
        assert_eq!(p.migration_downtime_max, 1200);
        assert!(!p.migration_postcopy);
        assert_eq!(p.migration_parallel, 1);
        assert!(!p.force_stop);
        assert_eq!(p.config, None);
    }

    #[test]
    fn peer_is_a_list_of_nodes() {
        let peers = |v| vm1_with("peer", v).unwrap().peer;
        assert_eq!(peers("node-b"), ["node-b"]);
        assert_eq!(
            peers("node-b, node-c,[fd00::3]"),
            ["node-b", "node-c", "[fd00::3]"]
        );
        assert!(peers("").is_empty());
    }

    #[test]
    fn all_parameters() {
        let p = Params::from_env(&env(&[
            ("name", "srv 01"),
            ("hypervisor", "qemu+tcp://localhost/system"),
            ("config", "/etc/vm.xml"),
            ("migration_network_suffix", ".mig"),
            ("migration_transport", "tls"),
            ("migration_user", "root"),
            ("migration_speed", "100"),
            ("migration_downtime", "50"),
            ("migration_downtime_max", "400"),
            ("migration_progress_timeout", "45"),
            ("migration_postcopy", "off"),
            ("migration_parallel", "4"),
            ("force_stop", "yes"),
        ]))
        .unwrap();
        assert_eq!(p.migration_downtime_max, 400);
        assert_eq!(p.migration_progress_timeout, Some(45));
        assert!(!p.migration_postcopy);
        assert_eq!(p.migration_parallel, 4);
        assert_eq!(p.migration_transport, Transport::Tls);
        assert_eq!(p.migration_user.as_deref(), Some("root"));
        assert_eq!((p.migration_speed, p.migration_downtime), (100, 50));
        assert!(p.force_stop);
    }

    #[test]
    fn migration_port_is_a_port_or_a_range() {
        let port = |v| vm1_with("migration_port", v).unwrap().migration_port;
        assert_eq!(port("49152"), MigrationPort::Fixed(49152));
        assert_eq!(port("49300-49300"), MigrationPort::Fixed(49300));
        assert_eq!(port("49152-49215"), MigrationPort::Range(49152, 49215));
        assert_eq!(port("49152").for_disks(), Some(49153));
        assert_eq!(port("49152-49215").probed(), 49215);
        assert_eq!(port("49152-49215").in_uri(), None);
        let default = Params::from_env(&env(&[("name", "vm1")])).unwrap();
        assert_eq!(default.migration_port.probed(), 49215);
    }

    #[test]
    fn missing_and_bad_names() {
        assert!(matches!(
            Params::from_env(&env(&[])),
            Err(ParamError::MissingName)
        ));
        assert!(matches!(
            Params::from_env(&env(&[("name", "")])),
            Err(ParamError::MissingName)
        ));
        for bad in ["a/b", "a\nb", "a\u{1}b", &"x".repeat(248)] {
            let e = Params::from_env(&env(&[("name", bad)])).unwrap_err();
            assert!(matches!(e, ParamError::BadName { .. }), "{bad:?}: {e}");
            assert_eq!(e.rc(), OcfRc::ErrConfigured);
            assert!(e.name_is_impossible());
        }
        // What libvirt 9.0 accepts (tried with virsh define in the lab).
        for good in [
            "a\tb",
            "a\rb",
            "a\u{7f}b",
            "a\u{85}b",
            "srv 01, \"q\" 'é'",
            &"x".repeat(247),
        ] {
            assert!(
                Params::from_env(&env(&[("name", good)])).is_ok(),
                "{good:?}"
            );
        }
    }

    #[test]
    fn invalid_values_are_configuration_errors() {
        for (k, v) in [
            ("migration_speed", "fast"),
            ("migration_speed", "-1"),
            ("migration_downtime", "0"),
            ("migration_downtime_max", "0"),
            ("migration_progress_timeout", "30s"),
            ("migration_postcopy", "sometimes"),
            ("migration_auto_converge", "sometimes"),
            ("migration_compression", "zstd"),
            ("migration_parallel", "0"),
            ("migration_parallel", "65"),
            ("migration_port", "80"),
            ("migration_port", "65535"),
            ("migration_port", "49215-49152"),
            ("migration_port", "49152-"),
            ("migration_port", "port"),
            ("migration_transport", "rsh"),
            ("migration_user", "Root;rm"),
            ("migration_network_suffix", ".mn;x"),
            ("force_stop", "maybe"),
            ("peer", "node b"),
            ("peer", "node-b?command=sh"),
            ("peer", "root@node-b"),
            ("peer", "node-b,,node-c"),
            ("peer", "node-b,node-c?command=sh"),
            ("hypervisor", "no uri"),
            ("hypervisor", "qemu+ssh://node-b/system?command=/bin/sh"),
            ("hypervisor", "qemu+ext:///system?command=/bin/true"),
            ("hypervisor", "qemu:///system?no_verify=1"),
            ("migration_user", "root@evil"),
        ] {
            let e = vm1_with(k, v).unwrap_err();
            assert_eq!(e.rc(), OcfRc::ErrConfigured, "{k}={v}");
            assert!(e.to_string().contains(k), "{e}");
        }
    }

    #[test]
    fn a_choice_that_is_none_of_its_spellings_lists_them() {
        for (k, v, expected) in [
            ("migration_transport", "rsh", "expected ssh, tcp or tls"),
            (
                "migration_auto_converge",
                "x",
                "expected always, stalled or never",
            ),
            (
                "migration_compression",
                "zstd",
                "expected auto, xbzrle or none",
            ),
            ("migration_storage", "nfs", "expected auto, shared or copy"),
        ] {
            let e = vm1_with(k, v).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("{k}=\"{v}\" is not valid: {expected}")
            );
        }
    }

    #[test]
    fn downtime_ceiling_is_at_least_the_start() {
        let e = Params::from_env(&env(&[
            ("name", "vm1"),
            ("migration_downtime", "500"),
            ("migration_downtime_max", "400"),
        ]))
        .unwrap_err();
        assert_eq!(e.rc(), OcfRc::ErrConfigured);
        assert!(e.to_string().contains("migration_downtime_max=400"), "{e}");
        // A start above the default ceiling alone raises the ceiling.
        let p = vm1_with("migration_downtime", "2000").unwrap();
        assert_eq!(p.migration_downtime_max, 2000);
    }

    #[test]
    fn postcopy_and_parallel_exclude_each_other() {
        let both = [
            ("name", "vm1"),
            ("migration_postcopy", "true"),
            ("migration_parallel", "2"),
        ];
        let e = Params::from_env(&env(&both)).unwrap_err();
        assert!(
            matches!(e, ParamError::PostcopyWithParallel { parallel: 2 }),
            "{e}"
        );
        assert_eq!(e.rc(), OcfRc::ErrConfigured);
        let p = Params::from_env(&env(&both[..2])).unwrap();
        assert!(p.migration_postcopy);
        assert!(Params::from_env(&env(&[both[0], both[2]])).is_ok());
    }

    #[test]
    fn xbzrle_is_asked_for_alone_or_chosen_only_for_a_capped_single_stream() {
        let e = Params::from_env(&env(&[
            ("name", "vm1"),
            ("migration_compression", "xbzrle"),
            ("migration_parallel", "2"),
        ]))
        .unwrap_err();
        assert!(
            matches!(e, ParamError::XbzrleWithParallel { parallel: 2 }),
            "{e}"
        );
        let p = vm1_with("migration_parallel", "2").unwrap();
        assert_eq!(p.migration_compression, Compression::Auto);
        assert_eq!(p.migration_auto_converge, AutoConverge::Always);
        let p = Params::from_env(&env(&[
            ("name", "vm1"),
            ("migration_auto_converge", "stalled"),
            ("migration_compression", "none"),
        ]))
        .unwrap();
        assert_eq!(p.migration_auto_converge, AutoConverge::Stalled);
        assert_eq!(p.migration_compression, Compression::None);
    }

    #[test]
    fn lenient_keeps_defaults_and_reports() {
        let (p, problems) =
            Params::from_env_lenient(&env(&[("name", "vm1"), ("migration_speed", "x")])).unwrap();
        assert_eq!(p.migration_speed, 0);
        assert_eq!(problems.len(), 1);
    }

    #[test]
    fn non_utf8_is_refused() {
        let mut e = env(&[("name", "vm1")]);
        e.set(
            "OCF_RESKEY_migration_user",
            OsString::from_vec(vec![0xff, 0xfe]),
        );
        assert!(matches!(
            Params::from_env(&e),
            Err(ParamError::NotUtf8 { name }) if name == "migration_user"
        ));
    }

    #[test]
    fn numbers_stop_where_libvirt_and_qemu_stop() {
        let ok = |k: &str, v: &str| vm1_with(k, v).is_ok();
        assert!(ok("migration_speed", "8796093022207"));
        assert!(!ok("migration_speed", "8796093022208"));
        assert!(ok("migration_downtime", "2000000"));
        assert!(!ok("migration_downtime", "2000001"));
        assert!(!ok("migration_downtime_max", "2000001"));
        assert!(ok("migration_progress_timeout", "0"));
        assert!(ok("migration_progress_timeout", "86400"));
        assert!(!ok("migration_progress_timeout", "86401"));
        let e = Params::from_env(&env(&[
            ("name", "vm1"),
            ("migration_speed", "9999999999999"),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("8796093022207"), "{e}");
    }
}
