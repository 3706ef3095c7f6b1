//! The OCF contract: exit codes, the environment Pacemaker hands an agent,
//! the resource parameters, the action deadline and the meta-data document.
//!
//! Everything Pacemaker relies on lives here so that one file can be read
//! against the OCF spec (`ClusterLabs/OCF-spec` ra/1.1) and Pacemaker's
//! `lib/pengine/unpack.c`, which decides what each exit code means.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::uri::{self, HostError, LocalUri, UriError, UserError};

/// The meta-data document, embedded at build time so that `meta-data`
/// prints exactly the bytes of `ocf-metadata.xml` and needs nothing at run
/// time (ocf-tester runs it as `nobody`, with no libvirt anywhere).
pub const METADATA: &str = include_str!("../ocf-metadata.xml");

/// OCF exit codes, with the meaning Pacemaker gives them (unpack.c):
/// 1 is a soft error (recover in place or move), 2..=5 are hard for this
/// node (ban it), 6 is fatal (never start anywhere), 7 is "cleanly stopped".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum OcfRc {
    Success = 0,
    ErrGeneric = 1,
    ErrArgs = 2,
    ErrUnimplemented = 3,
    ErrPerm = 4,
    ErrInstalled = 5,
    ErrConfigured = 6,
    NotRunning = 7,
}

impl OcfRc {
    /// The name ocf-returncodes uses, for log lines.
    pub fn name(self) -> &'static str {
        match self {
            OcfRc::Success => "OCF_SUCCESS",
            OcfRc::ErrGeneric => "OCF_ERR_GENERIC",
            OcfRc::ErrArgs => "OCF_ERR_ARGS",
            OcfRc::ErrUnimplemented => "OCF_ERR_UNIMPLEMENTED",
            OcfRc::ErrPerm => "OCF_ERR_PERM",
            OcfRc::ErrInstalled => "OCF_ERR_INSTALLED",
            OcfRc::ErrConfigured => "OCF_ERR_CONFIGURED",
            OcfRc::NotRunning => "OCF_NOT_RUNNING",
        }
    }
}

impl fmt::Display for OcfRc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", *self as u8, self.name())
    }
}

/// What an action ends with: the exit code and, for every non-zero code,
/// the one-line reason Pacemaker shows in `crm_mon` (`ocf-exit-reason:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub rc: OcfRc,
    pub reason: String,
}

impl Outcome {
    pub fn new(rc: OcfRc, reason: impl Into<String>) -> Self {
        Outcome {
            rc,
            reason: reason.into(),
        }
    }
}

/// Pacemaker keeps the first 128 bytes of an exit reason
/// (EXIT_REASON_MAX_LEN in its services_linux.c): every reason is written
/// to fit, with what failed first, and cut here if a cause makes it longer.
pub const EXIT_REASON_MAX: usize = 128;

/// How much of a domain or node name an exit reason shows: a reason
/// names two of them and a state and still fits in [`EXIT_REASON_MAX`].
const SHORT_NAME: usize = 24;
/// How much of a path an exit reason shows (its end: the file name).
const SHORT_PATH: usize = 40;
/// How much of a libvirt message is quoted inside a reason of ours.
const SHORT_TEXT: usize = 40;

/// The longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary.
fn prefix(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A name as an exit reason shows it: whole when short, else its first
/// [`SHORT_NAME`] bytes and "…" (the log has it whole).
pub fn short(s: &str) -> std::borrow::Cow<'_, str> {
    if s.len() <= SHORT_NAME {
        s.into()
    } else {
        format!("{}…", prefix(s, SHORT_NAME)).into()
    }
}

/// A message quoted inside a reason: its first [`SHORT_TEXT`] bytes.
pub fn short_text(s: &str) -> std::borrow::Cow<'_, str> {
    if s.len() <= SHORT_TEXT {
        s.into()
    } else {
        format!("{}…", prefix(s, SHORT_TEXT)).into()
    }
}

/// A path as an exit reason shows it, quoted: its last [`SHORT_PATH`]
/// bytes when longer, which keep the file name.
pub fn short_path(p: &std::path::Path) -> String {
    let s = p.to_string_lossy();
    if s.len() <= SHORT_PATH {
        return format!("{s:?}");
    }
    let mut start = s.len() - SHORT_PATH;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("\"…{}\"", &s[start..])
}

/// The exit reason as printed: at most [`EXIT_REASON_MAX`] bytes, cut on a
/// character boundary with "…" when a cause made it longer.
pub fn exit_reason(reason: &str) -> std::borrow::Cow<'_, str> {
    if reason.len() <= EXIT_REASON_MAX {
        return reason.into();
    }
    let ellipsis = "…";
    format!(
        "{}{ellipsis}",
        prefix(reason, EXIT_REASON_MAX - ellipsis.len())
    )
    .into()
}

/// `OCF_RESKEY_CRM_meta_timeout` when unset: crm_resource uses 20 s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(20_000);

/// The environment variables an OCF agent reads, captured once. Values stay
/// `OsString` so that non-UTF-8 bytes are refused as a parameter error
/// instead of a panic.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, OsString>,
}

impl Env {
    /// The process environment; only names that are valid UTF-8 can be OCF
    /// variables, so others are skipped.
    pub fn from_process() -> Self {
        std::env::vars_os()
            .filter_map(|(k, v)| k.into_string().ok().map(|k| (k, v)))
            .collect()
    }

    pub fn get(&self, key: &str) -> Option<&OsStr> {
        self.vars.get(key).map(OsString::as_os_str)
    }

    /// A variable as text; unset, empty and non-UTF-8 all read as `None`
    /// here. Use [`Env::reskey`] for parameters, which tells them apart.
    pub fn text(&self, key: &str) -> Option<&str> {
        self.get(key)
            .and_then(OsStr::to_str)
            .filter(|s| !s.is_empty())
    }

    pub fn set(&mut self, key: impl Into<String>, value: impl Into<OsString>) {
        self.vars.insert(key.into(), value.into());
    }

    /// `OCF_RESKEY_<name>`: `Ok(None)` when unset or empty (ocf-shellfuncs
    /// treats empty as unset), an error when the bytes are not UTF-8.
    pub fn reskey(&self, name: &str) -> Result<Option<&str>, ParamError> {
        match self.get(&format!("OCF_RESKEY_{name}")) {
            None => Ok(None),
            Some(v) => match v.to_str() {
                Some("") => Ok(None),
                Some(s) => Ok(Some(s)),
                None => Err(ParamError::NotUtf8 { name: name.into() }),
            },
        }
    }

    /// `OCF_RESOURCE_INSTANCE`, used in log tags.
    pub fn instance(&self) -> Option<&str> {
        self.text("OCF_RESOURCE_INSTANCE")
    }

    /// The action's timeout (`OCF_RESKEY_CRM_meta_timeout`, in ms).
    /// Garbage falls back to the default rather than failing: the timeout is
    /// Pacemaker's, not the admin's, and a deadline is always needed.
    pub fn timeout(&self) -> Duration {
        self.text("OCF_RESKEY_CRM_meta_timeout")
            .and_then(|s| s.trim().parse::<u64>().ok())
            .filter(|&ms| ms > 0)
            .map_or(DEFAULT_TIMEOUT, Duration::from_millis)
    }

    /// A probe is a monitor with `CRM_meta_interval` 0 or unset
    /// (ocf-shellfuncs `ocf_is_probe`).
    pub fn is_probe(&self) -> bool {
        self.text("OCF_RESKEY_CRM_meta_interval")
            .is_none_or(|s| s.trim() == "0")
    }
}

impl<K: Into<String>, V: Into<OsString>> FromIterator<(K, V)> for Env {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Env {
            vars: iter
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }
}

/// When an action must be done by. Pacemaker SIGKILLs the agent's process
/// group when `CRM_meta_timeout` runs out, and a killed action is worse
/// than a failed one (a killed migrate_to makes Pacemaker assume the server
/// runs on both nodes), so every wait ends at `deadline`, a margin before
/// the timeout.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    start: Instant,
    at: Instant,
    timeout: Duration,
}

impl Deadline {
    /// The margin kept before Pacemaker's timeout: a tenth of it, at least
    /// 1 s and at most 5 s (time to log, print the reason and exit).
    pub fn new(timeout: Duration) -> Self {
        let margin = (timeout / 10).clamp(Duration::from_secs(1), Duration::from_secs(5));
        let start = Instant::now();
        let budget = timeout.saturating_sub(margin).max(timeout / 2);
        Deadline {
            start,
            at: start + budget,
            timeout,
        }
    }

    pub fn at(&self) -> Instant {
        self.at
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    pub fn expired(&self) -> bool {
        Instant::now() >= self.at
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// The same deadline, `reserve` earlier: stop ends its graceful phase
    /// here so that destroy still fits before the real deadline.
    pub fn earlier_by(&self, reserve: Duration) -> Instant {
        self.at
            .checked_sub(reserve)
            .map_or(self.start, |t| t.max(self.start))
    }
}

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

/// A parameter that cannot be used. All map to exit 6 (OCF_ERR_CONFIGURED:
/// the configuration itself is wrong, wherever it runs) except an
/// unreadable `config`, which is this node's problem (5).
#[derive(Debug, thiserror::Error)]
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
    #[error("config {} is not a domain XML (its root element is not <domain>)", short_path(.path))]
    ConfigNotDomain { path: PathBuf },
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
    pub migration_postcopy: bool,
    /// TCP connections for the RAM copy; 1 is a single stream.
    pub migration_parallel: u32,
    pub force_stop: bool,
    /// The other node, when given; otherwise asked from Pacemaker.
    pub peer: Option<String>,
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
pub const PARAM_NAMES: [&str; 13] = [
    "name",
    "hypervisor",
    "config",
    "migration_network_suffix",
    "migration_transport",
    "migration_user",
    "migration_speed",
    "migration_downtime",
    "migration_downtime_max",
    "migration_postcopy",
    "migration_parallel",
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
        let mut problems = Vec::new();
        let mut get = |key: &'static str| match env.reskey(key) {
            Ok(v) => v,
            Err(e) => {
                problems.push(e);
                None
            }
        };
        let hypervisor = get("hypervisor");
        let config = get("config");
        let suffix = get("migration_network_suffix");
        let transport = get("migration_transport");
        let user = get("migration_user");
        let speed = get("migration_speed");
        let downtime = get("migration_downtime");
        let downtime_max = get("migration_downtime_max");
        let postcopy = get("migration_postcopy");
        let parallel = get("migration_parallel");
        let force_stop = get("force_stop");
        let peer = get("peer");

        let mut params = Params {
            name: name.to_owned(),
            hypervisor: DEFAULT_HYPERVISOR.to_owned(),
            local_uri: LocalUri::parse(DEFAULT_HYPERVISOR).expect("the default URI parses"),
            config: config.map(PathBuf::from),
            migration_network_suffix: DEFAULT_SUFFIX.to_owned(),
            migration_transport: Transport::Ssh,
            migration_user: None,
            migration_speed: 0,
            migration_downtime: DEFAULT_DOWNTIME_MS,
            migration_downtime_max: DEFAULT_DOWNTIME_MAX_MS,
            migration_postcopy: false,
            migration_parallel: 1,
            force_stop: false,
            peer: None,
        };
        let mut check = |r: Result<(), ParamError>| {
            if let Err(e) = r {
                problems.push(e);
            }
        };
        if let Some(uri) = hypervisor {
            check(match LocalUri::parse(uri) {
                Ok(parsed) => {
                    params.hypervisor = uri.to_owned();
                    params.local_uri = parsed;
                    Ok(())
                }
                Err(source) => Err(ParamError::BadUri {
                    value: uri.into(),
                    source,
                }),
            });
        }
        if let Some(s) = suffix {
            check(if is_hostname_chars(s) {
                params.migration_network_suffix = s.to_owned();
                Ok(())
            } else {
                Err(ParamError::Invalid {
                    name: "migration_network_suffix",
                    value: s.into(),
                    expected: "a suffix such as .mn (letters, digits, '.', '-')",
                })
            });
        }
        if let Some(t) = transport {
            check(
                match t {
                    "ssh" => Ok(Transport::Ssh),
                    "tcp" => Ok(Transport::Tcp),
                    "tls" => Ok(Transport::Tls),
                    _ => Err(ParamError::Invalid {
                        name: "migration_transport",
                        value: t.into(),
                        expected: "ssh, tcp or tls",
                    }),
                }
                .map(|t| params.migration_transport = t),
            );
        }
        if let Some(u) = user {
            // It goes into the peer's qemu+ssh:// URI.
            check(
                uri::check_user(u)
                    .map(|()| params.migration_user = Some(u.to_owned()))
                    .map_err(|source| ParamError::BadUser {
                        value: u.into(),
                        source,
                    }),
            );
        }
        if let Some(s) = speed {
            check(
                parse_u64(
                    "migration_speed",
                    s,
                    0..=MAX_BANDWIDTH_MIB_S,
                    "0 (unlimited) to 8796093022207 MiB/s (libvirt's max)",
                )
                .map(|v| params.migration_speed = v),
            );
        }
        const MS: &str = "milliseconds from 1 to 2000000 (QEMU's limit)";
        if let Some(d) = downtime {
            check(
                parse_u64("migration_downtime", d, 1..=MAX_DOWNTIME_MS, MS)
                    .map(|v| params.migration_downtime = v),
            );
        }
        match downtime_max {
            Some(d) => check(
                parse_u64("migration_downtime_max", d, 1..=MAX_DOWNTIME_MS, MS).and_then(|max| {
                    params.migration_downtime_max = max;
                    if max < params.migration_downtime {
                        Err(ParamError::DowntimeMaxBelowStart {
                            max,
                            start: params.migration_downtime,
                        })
                    } else {
                        Ok(())
                    }
                }),
            ),
            // Only the start was set, above the default ceiling: the
            // ceiling follows it rather than refusing a valid start.
            None => {
                params.migration_downtime_max =
                    params.migration_downtime_max.max(params.migration_downtime)
            }
        }
        if let Some(v) = postcopy {
            check(parse_bool("migration_postcopy", v).map(|v| params.migration_postcopy = v));
        }
        if let Some(v) = parallel {
            check(
                parse_u64(
                    "migration_parallel",
                    v,
                    1..=MAX_PARALLEL,
                    "1 to 64 connections (more only cost threads)",
                )
                .map(|v| params.migration_parallel = v as u32),
            );
        }
        // QEMU (10.0 and older) refuses the postcopy-ram capability next to
        // multifd when the migration starts: a move would fail, and a
        // failed migrate_to costs a restart under Pacemaker's default
        // multiple-active=stop_start. Said here, it shows at validation.
        if params.migration_postcopy && params.migration_parallel > 1 {
            check(Err(ParamError::PostcopyWithParallel {
                parallel: params.migration_parallel,
            }));
        }
        if let Some(f) = force_stop {
            check(parse_bool("force_stop", f).map(|v| params.force_stop = v));
        }
        if let Some(n) = peer {
            // It goes into the peer's libvirt URI as its host.
            check(
                uri::check_host(n)
                    .map(|()| params.peer = Some(n.to_owned()))
                    .map_err(|source| ParamError::BadHost {
                        name: "peer",
                        value: n.into(),
                        source,
                    }),
            );
        }
        Ok((params, problems))
    }

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

/// The most of `config` that is read: a domain XML with dozens of disks
/// and interfaces is well under 1 MiB.
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// How long reading `config` may take at most.
pub const CONFIG_BUDGET: Duration = Duration::from_secs(2);

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

/// One parameter as `ocf-metadata.xml` documents it. The CLI's flags and
/// their help come from here, so `--help` and meta-data cannot disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamDoc {
    pub name: &'static str,
    pub shortdesc: &'static str,
    pub longdesc: &'static str,
    pub content_type: &'static str,
    pub default: Option<&'static str>,
}

/// The text of the first `<tag ...>TEXT</tag>` in `s`.
fn element<'a>(s: &'a str, tag: &str) -> Option<&'a str> {
    let open = s.find(&format!("<{tag}"))?;
    let body = open + s[open..].find('>')? + 1;
    let end = body + s[body..].find(&format!("</{tag}>"))?;
    Some(s[body..end].trim())
}

/// The value of `attr="..."` in `s`.
fn attribute<'a>(s: &'a str, attr: &str) -> Option<&'a str> {
    let key = format!(" {attr}=\"");
    let start = s.find(&key)? + key.len();
    Some(&s[start..start + s[start..].find('"')?])
}

/// The parameters documented in [`METADATA`], in order. The document is
/// ours and fixed at build time (a unit test parses all of it), so a plain
/// scan is enough; no XML parser is linked for it.
pub fn param_docs() -> Vec<ParamDoc> {
    METADATA
        .split("<parameter ")
        .skip(1)
        .filter_map(|p| {
            let p = &p[..p.find("</parameter>")?];
            Some(ParamDoc {
                name: attribute(&format!(" {p}"), "name")
                    .and_then(|n| PARAM_NAMES.into_iter().find(|&k| k == n))?,
                shortdesc: element(p, "shortdesc")?,
                longdesc: element(p, "longdesc")?,
                content_type: p
                    .find("<content")
                    .and_then(|i| attribute(&p[i..], "type"))?,
                default: p
                    .find("<content")
                    .and_then(|i| attribute(&p[i..], "default"))
                    .filter(|d| !d.is_empty()),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStringExt;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs
            .iter()
            .map(|(k, v)| (format!("OCF_RESKEY_{k}"), *v))
            .collect()
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
            ("migration_postcopy", "off"),
            ("migration_parallel", "4"),
            ("force_stop", "yes"),
        ]))
        .unwrap();
        assert_eq!(p.migration_downtime_max, 400);
        assert!(!p.migration_postcopy);
        assert_eq!(p.migration_parallel, 4);
        assert_eq!(p.migration_transport, Transport::Tls);
        assert_eq!(p.migration_user.as_deref(), Some("root"));
        assert_eq!((p.migration_speed, p.migration_downtime), (100, 50));
        assert!(p.force_stop);
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
            ("migration_postcopy", "sometimes"),
            ("migration_parallel", "0"),
            ("migration_parallel", "65"),
            ("migration_transport", "rsh"),
            ("migration_user", "Root;rm"),
            ("migration_network_suffix", ".mn;x"),
            ("force_stop", "maybe"),
            ("peer", "node b"),
            ("peer", "node-b?command=sh"),
            ("peer", "root@node-b"),
            ("hypervisor", "no uri"),
            ("hypervisor", "qemu+ssh://node-b/system?command=/bin/sh"),
            ("hypervisor", "qemu+ext:///system?command=/bin/true"),
            ("hypervisor", "qemu:///system?no_verify=1"),
            ("migration_user", "root@evil"),
        ] {
            let e = Params::from_env(&env(&[("name", "vm1"), (k, v)])).unwrap_err();
            assert_eq!(e.rc(), OcfRc::ErrConfigured, "{k}={v}");
            assert!(e.to_string().contains(k), "{e}");
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
        let p = Params::from_env(&env(&[("name", "vm1"), ("migration_downtime", "2000")])).unwrap();
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
    fn unreadable_config_is_not_installed() {
        let p =
            Params::from_env(&env(&[("name", "vm1"), ("config", "/nonexistent/x.xml")])).unwrap();
        let e = p.read_config(CONFIG_BUDGET).unwrap().unwrap_err();
        assert_eq!(e.rc(), OcfRc::ErrInstalled);
    }

    #[test]
    fn numbers_stop_where_libvirt_and_qemu_stop() {
        let ok = |k: &str, v: &str| Params::from_env(&env(&[("name", "vm1"), (k, v)])).is_ok();
        assert!(ok("migration_speed", "8796093022207"));
        assert!(!ok("migration_speed", "8796093022208"));
        assert!(ok("migration_downtime", "2000000"));
        assert!(!ok("migration_downtime", "2000001"));
        assert!(!ok("migration_downtime_max", "2000001"));
        let e = Params::from_env(&env(&[
            ("name", "vm1"),
            ("migration_speed", "9999999999999"),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("8796093022207"), "{e}");
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
    fn timeout_and_probe() {
        let mut e = Env::default();
        assert_eq!(e.timeout(), DEFAULT_TIMEOUT);
        assert!(e.is_probe());
        e.set("OCF_RESKEY_CRM_meta_timeout", "7000");
        e.set("OCF_RESKEY_CRM_meta_interval", "10000");
        assert_eq!(e.timeout(), Duration::from_secs(7));
        assert!(!e.is_probe());
        e.set("OCF_RESKEY_CRM_meta_timeout", "garbage");
        assert_eq!(e.timeout(), DEFAULT_TIMEOUT);
    }

    #[test]
    fn deadline_keeps_a_margin() {
        let d = Deadline::new(Duration::from_secs(20));
        let r = d.remaining();
        assert!(r <= Duration::from_secs(18) && r > Duration::from_secs(17));
        let d = Deadline::new(Duration::from_secs(600));
        assert!(d.remaining() > Duration::from_secs(594));
        // Never less than half the timeout, even for tiny timeouts.
        let d = Deadline::new(Duration::from_millis(1000));
        assert!(d.remaining() > Duration::from_millis(400));
        assert!(d.earlier_by(Duration::from_secs(100)) <= Instant::now());
    }

    #[test]
    fn metadata_documents_every_parameter_with_our_defaults() {
        let docs = param_docs();
        let names: Vec<_> = docs.iter().map(|d| d.name).collect();
        assert_eq!(names, PARAM_NAMES);
        let default = |n: &str| docs.iter().find(|d| d.name == n).unwrap().default;
        assert_eq!(default("hypervisor"), Some(DEFAULT_HYPERVISOR));
        assert_eq!(default("migration_network_suffix"), Some(DEFAULT_SUFFIX));
        assert_eq!(default("migration_transport"), Some("ssh"));
        assert_eq!(default("migration_speed"), Some("0"));
        assert_eq!(
            default("migration_downtime"),
            Some(DEFAULT_DOWNTIME_MS.to_string().as_str())
        );
        assert_eq!(
            default("migration_downtime_max"),
            Some(DEFAULT_DOWNTIME_MAX_MS.to_string().as_str())
        );
        assert_eq!(default("migration_postcopy"), Some("false"));
        assert_eq!(default("migration_parallel"), Some("1"));
        assert_eq!(default("force_stop"), Some("false"));
        assert_eq!(default("name"), None);
        assert!(docs
            .iter()
            .all(|d| !d.shortdesc.is_empty() && !d.longdesc.is_empty()));
        assert_eq!(docs[6].content_type, "integer");
    }

    #[test]
    fn rc_display() {
        assert_eq!(OcfRc::NotRunning.to_string(), "7 (OCF_NOT_RUNNING)");
    }
}
