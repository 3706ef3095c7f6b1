//! Logging: the `log` facade with two sinks, stderr and syslog, tagged like
//! ocf-shellfuncs' `ocf_log` (`server(<instance>)[pid]: LEVEL: message`).
//!
//! Pacemaker's executor captures stderr into its own log, and an admin
//! running `crm_resource --force-*` sees it on the terminal; syslog keeps a
//! record wherever the node's journal or rsyslog listens on /dev/log.
//! Neither sink can fail an action: a missing /dev/log or a closed stderr
//! only loses log lines.

use std::io::Write;
use std::sync::Mutex;

use log::{Level, LevelFilter, Log, Metadata, Record};
use syslog::{Facility, Formatter3164, LoggerBackend};

use crate::ocf::Env;

/// The agent's name in log tags: what Pacemaker calls it (`ocf:vmshift:server`).
const AGENT: &str = "server";

type Syslog = syslog::Logger<LoggerBackend, Formatter3164>;

struct OcfLogger {
    tag: String,
    level: LevelFilter,
    syslog: Option<Mutex<Syslog>>,
}

/// Debug lines are on when `HA_debug` is set to anything but 0 (as in
/// ocf-shellfuncs) or when `OCF_TRACE_RA` asks for a trace.
fn debug_wanted(env: &Env) -> bool {
    let on = |k| env.text(k).is_some_and(|v| v != "0");
    on("HA_debug") || on("OCF_TRACE_RA")
}

/// The syslog facility Pacemaker exports (`HA_LOGFACILITY`; crm_resource
/// spells it `HA_logfacility`), `daemon` by default. `none` turns syslog
/// off, as it does for ocf-shellfuncs.
fn facility(env: &Env) -> Option<Facility> {
    let name = ["HA_LOGFACILITY", "HA_logfacility", "PCMK_logfacility"]
        .into_iter()
        .find_map(|k| env.text(k))
        .unwrap_or("daemon");
    if name.eq_ignore_ascii_case("none") {
        return None;
    }
    Some(name.parse().unwrap_or(Facility::LOG_DAEMON))
}

fn process_name(env: &Env) -> String {
    match env.instance() {
        Some(instance) => format!("{AGENT}({instance})"),
        None => AGENT.to_owned(),
    }
}

/// Installs the logger. Called once, first thing; a second call (tests)
/// keeps the first logger.
pub fn init(env: &Env) {
    let process = process_name(env);
    let pid = std::process::id();
    let syslog = facility(env).and_then(|facility| {
        syslog::unix(Formatter3164 {
            facility,
            // Without this the formatter adds the host name, which journald
            // and rsyslog then show twice (rust-syslog PR #80).
            hostname: None,
            process: process.clone(),
            pid,
        })
        .ok()
        .map(Mutex::new)
    });
    let level = if debug_wanted(env) {
        LevelFilter::Debug
    } else {
        LevelFilter::Info
    };
    let logger = OcfLogger {
        tag: format!("{process}[{pid}]"),
        level,
        syslog,
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(level);
    }
}

impl Log for OcfLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = record.level();
        let msg = format!("{}: {}", level.as_str(), record.args());
        let _ = writeln!(std::io::stderr().lock(), "{}: {msg}", self.tag);
        if let Some(Ok(mut s)) = self.syslog.as_ref().map(Mutex::lock) {
            let _ = match level {
                Level::Error => s.err(&msg),
                Level::Warn => s.warning(&msg),
                Level::Info => s.info(&msg),
                Level::Debug | Level::Trace => s.debug(&msg),
            };
        }
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_and_levels() {
        let env: Env = [("OCF_RESOURCE_INSTANCE", "srv1"), ("HA_debug", "1")]
            .into_iter()
            .collect();
        assert_eq!(process_name(&env), "server(srv1)");
        assert!(debug_wanted(&env));
        assert_eq!(process_name(&Env::default()), "server");
        let quiet: Env = [("HA_debug", "0")].into_iter().collect();
        assert!(!debug_wanted(&quiet));
        let trace: Env = [("OCF_TRACE_RA", "1")].into_iter().collect();
        assert!(debug_wanted(&trace));
    }

    #[test]
    fn facility_choice() {
        assert!(matches!(
            facility(&Env::default()),
            Some(Facility::LOG_DAEMON)
        ));
        let none: Env = [("HA_logfacility", "none")].into_iter().collect();
        assert!(facility(&none).is_none());
        let local: Env = [("HA_LOGFACILITY", "local5")].into_iter().collect();
        assert!(matches!(facility(&local), Some(Facility::LOG_LOCAL5)));
    }
}
