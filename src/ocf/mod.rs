//! The OCF contract: exit codes, the environment Pacemaker hands an agent,
//! and the exit reason Pacemaker shows; the parameters ([`params`], the
//! `config` file in [`config`]), each action's time budget ([`budget`])
//! and the meta-data document ([`metadata`]) live beside it.
//!
//! Everything Pacemaker relies on lives here so that one folder can be read
//! against the OCF spec (`ClusterLabs/OCF-spec` ra/1.1) and Pacemaker's
//! `lib/pengine/unpack.c`, which decides what each exit code means.

pub mod budget;
pub mod config;
pub mod metadata;
pub mod params;

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::time::Duration;

pub use budget::Budget;
pub use config::CONFIG_BUDGET;
pub use metadata::{param_docs, ParamDoc, METADATA};
pub use params::{
    AutoConverge, Compression, ConfigProblem, MigrationPort, ParamError, Params, Storage,
    Transport, MAX_CONFIG_BYTES, PARAM_NAMES,
};

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

/// What an elided name, path or reason shows where its part left out was.
/// ASCII: see `logging::for_pacemaker` for what a non-ASCII character
/// before a quote does to Pacemaker 2.1.5.
const ELLIPSIS: &str = "...";

/// The longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary.
fn prefix(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `s` whole when it has at most `limit` bytes, else its first `keep`
/// bytes (cut on a character boundary) and [`ELLIPSIS`].
fn elide(s: &str, limit: usize, keep: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= limit {
        s.into()
    } else {
        format!("{}{ELLIPSIS}", prefix(s, keep)).into()
    }
}

/// A name as an exit reason shows it: whole when short, else its first
/// [`SHORT_NAME`] bytes and "..." (the log has it whole).
pub fn short(s: &str) -> std::borrow::Cow<'_, str> {
    elide(s, SHORT_NAME, SHORT_NAME)
}

/// A message quoted inside a reason: its first [`SHORT_TEXT`] bytes.
pub fn short_text(s: &str) -> std::borrow::Cow<'_, str> {
    elide(s, SHORT_TEXT, SHORT_TEXT)
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
    format!("\"{ELLIPSIS}{}\"", &s[start..])
}

/// The exit reason as printed: at most [`EXIT_REASON_MAX`] bytes, cut on a
/// character boundary with "..." when a cause made it longer.
pub fn exit_reason(reason: &str) -> std::borrow::Cow<'_, str> {
    elide(reason, EXIT_REASON_MAX, EXIT_REASON_MAX - ELLIPSIS.len())
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
        self.timeout_or(DEFAULT_TIMEOUT)
    }

    /// The timeout given, else `default`.
    pub fn timeout_or(&self, default: Duration) -> Duration {
        self.text("OCF_RESKEY_CRM_meta_timeout")
            .and_then(|s| s.trim().parse::<u64>().ok())
            .filter(|&ms| ms > 0)
            .map_or(default, Duration::from_millis)
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

/// Environments and parameters for unit tests.
#[cfg(test)]
impl Env {
    /// `OCF_RESKEY_<k>=<v>` for each pair.
    pub fn reskeys(pairs: &[(&str, &str)]) -> Env {
        pairs
            .iter()
            .map(|(k, v)| (format!("OCF_RESKEY_{k}"), *v))
            .collect()
    }
}

#[cfg(test)]
impl Params {
    /// Domain vm1's parameters, with the environment variables `extra`.
    pub fn vm1(extra: &[(&str, &str)]) -> Params {
        let env: Env = [("OCF_RESKEY_name", "vm1")]
            .into_iter()
            .chain(extra.iter().copied())
            .collect();
        Params::from_env(&env).expect("valid test parameters")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_from_pacemaker() {
        let mut e = Env::default();
        assert_eq!(e.timeout(), DEFAULT_TIMEOUT);
        e.set("OCF_RESKEY_CRM_meta_timeout", "7000");
        e.set("OCF_RESKEY_CRM_meta_interval", "10000");
        assert_eq!(e.timeout(), Duration::from_secs(7));
        e.set("OCF_RESKEY_CRM_meta_timeout", "garbage");
        assert_eq!(e.timeout(), DEFAULT_TIMEOUT);
    }

    #[test]
    fn rc_display() {
        assert_eq!(OcfRc::NotRunning.to_string(), "7 (OCF_NOT_RUNNING)");
    }
}
