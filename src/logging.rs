//! Logging: the `log` facade with two sinks, stderr and syslog, tagged like
//! ocf-shellfuncs' `ocf_log` (`server(<instance>)[pid]: LEVEL: message`),
//! the escaping that keeps every record on one line ([`sanitize`]), and the
//! syslog worker thread that [`finish`] waits for at the end of an action.
//!
//! Pacemaker's executor captures stderr into its own log, and an admin
//! running `crm_resource --force-*` sees it on the terminal; syslog keeps a
//! record wherever the node's journal or rsyslog listens on /dev/log.
//! Neither sink can fail or stall an action: a missing /dev/log or a closed
//! stderr only loses log lines, and a /dev/log that stops reading (a stuck
//! journald or rsyslog) only blocks the syslog worker, never the caller.

use std::borrow::Cow;
use std::io::Write;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use log::{Level, LevelFilter, Log, Metadata, Record};
use syslog::{Facility, Formatter3164, LoggerBackend};

use crate::ocf::Env;

/// The agent's name in log tags: what Pacemaker calls it (`ocf:vmshift:server`).
const AGENT: &str = "server";

/// Lines waiting for the syslog worker. Far more than one action logs, so
/// only a /dev/log that has stopped reading ever fills it.
const QUEUE: usize = 256;

/// How often [`Sink::finish`] retries while the queue is full.
const FULL_RETRY: Duration = Duration::from_millis(5);

type Syslog = syslog::Logger<LoggerBackend, Formatter3164>;

/// The installed logger, static so that [`finish`] can reach its sink.
static LOGGER: OnceLock<OcfLogger> = OnceLock::new();

struct OcfLogger {
    tag: String,
    level: LevelFilter,
    syslog: Option<Sink>,
}

/// What the syslog worker is asked to do, in queue order.
enum Job {
    Line(Level, String),
    /// Answer once every line queued before this one has been written.
    Flush(SyncSender<()>),
}

/// The caller's end of the syslog worker: a bounded queue that never blocks.
/// The worker owns the connection to /dev/log, so both a connect and a
/// send that block (a full datagram queue, a stream socket's full backlog)
/// stall only that thread.
struct Sink {
    jobs: SyncSender<Job>,
}

impl Sink {
    /// Starts the worker, which first opens its syslog connection with
    /// `connect`. None when the thread cannot be started.
    fn start(connect: impl FnOnce() -> Option<Syslog> + Send + 'static) -> Option<Sink> {
        let (jobs, queue) = mpsc::sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("syslog".to_owned())
            .spawn(move || work(connect, queue))
            .ok()?;
        Some(Sink { jobs })
    }

    /// Queues `line`, or drops it when the queue is full or the worker is
    /// gone (no syslog to connect to): stderr has it either way.
    fn send(&self, level: Level, line: String) {
        let _ = self.jobs.try_send(Job::Line(level, line));
    }

    /// Waits at most `within` for the worker to write every line queued so
    /// far. A full queue is retried until `within` has passed rather than
    /// given up at once: a worker that is still connecting empties it soon.
    fn finish(&self, within: Duration) {
        // Elapsed time rather than a deadline: `now + within` would panic
        // for a `within` too large to add.
        let start = Instant::now();
        let (done, written) = mpsc::sync_channel(1);
        let mut job = Job::Flush(done);
        loop {
            match self.jobs.try_send(job) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) if start.elapsed() < within => {
                    job = back;
                    std::thread::sleep(FULL_RETRY);
                }
                Err(_) => return,
            }
        }
        let _ = written.recv_timeout(within.saturating_sub(start.elapsed()));
    }
}

/// The syslog worker's loop. Without a connection it ends at once, so that
/// callers drop their lines instead of queueing them for nobody.
fn work(connect: impl FnOnce() -> Option<Syslog>, queue: Receiver<Job>) {
    let Some(mut syslog) = connect() else {
        return;
    };
    for job in queue {
        match job {
            Job::Line(level, line) => {
                let _ = match level {
                    Level::Error => syslog.err(&line),
                    Level::Warn => syslog.warning(&line),
                    Level::Info => syslog.info(&line),
                    Level::Debug | Level::Trace => syslog.debug(&line),
                };
            }
            // The reply channel has room for this one answer, so it never
            // blocks; a finish that has timed out no longer listens.
            Job::Flush(done) => {
                let _ = done.try_send(());
            }
        }
    }
}

/// Waits at most `within` for syslog to have been handed every line logged
/// so far; main calls it once, at the end of the action. A stuck /dev/log
/// costs the action `within` and the lines still queued, nothing more.
pub fn finish(within: Duration) {
    if let Some(sink) = LOGGER.get().and_then(|logger| logger.syslog.as_ref()) {
        sink.finish(within);
    }
}

/// `s` with control characters escaped, so that one record is one line:
/// `\n`, `\r` and `\t` as those escapes, any other control character (ESC,
/// DEL, C1) as `\u{..}`; printable text, non-ASCII included, stays as it
/// is. Pacemaker's executor takes the last stderr line *starting with*
/// `ocf-exit-reason:` as the exit reason, so a domain name or libvirt
/// message with an embedded newline could otherwise forge one, and a
/// terminal escape could rewrite an admin's screen. Borrowed when nothing
/// needs escaping.
pub fn sanitize(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.extend(c.escape_unicode()),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `s` as it may go to Pacemaker on stderr (log lines and the exit
/// reason): [`sanitize`]d, and with its non-ASCII characters written as
/// `\u{..}` when one of them comes before a character XML escapes
/// (`"`, `'`, `<`, `>`, `&`). Pacemaker 2.1.5's `crm_xml_escape` (Debian 12) stops escaping at the
/// first byte pair with the high bit set (`break` where later versions
/// `continue`), so a `"`, `<` or `&` after an `é` reaches its controller
/// raw inside an attribute. The controller's XML parse then fails, it
/// records a digest of mangled parameters, and it clears the fail count
/// and starts the resource again, in a loop: 700 failed starts in 30 s in
/// the cluster lab. Text without such a pair stays as it is (syslog always
/// gets it as it is).
pub fn for_pacemaker(s: &str) -> Cow<'_, str> {
    xml_safe(sanitize(s))
}

/// The second half of [`for_pacemaker`], for text already [`sanitize`]d.
fn xml_safe(clean: Cow<'_, str>) -> Cow<'_, str> {
    let Some(first) = clean.find(|c: char| !c.is_ascii()) else {
        return clean;
    };
    if !clean[first..].contains(['"', '\'', '<', '>', '&']) {
        return clean;
    }
    let mut out = String::with_capacity(clean.len() + 16);
    for c in clean.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            out.extend(c.escape_unicode());
        }
    }
    Cow::Owned(out)
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

/// `server(<instance>)`, escaped: it heads every stderr line and is the
/// syslog tag, and the instance name comes from the environment.
fn process_name(env: &Env) -> String {
    match env.instance() {
        Some(instance) => format!("{AGENT}({})", sanitize(instance)),
        None => AGENT.to_owned(),
    }
}

fn formatter(facility: Facility, process: String) -> Formatter3164 {
    Formatter3164 {
        facility,
        // Without this the formatter adds the host name, which journald
        // and rsyslog then show twice (rust-syslog PR #80).
        hostname: None,
        process,
        pid: std::process::id(),
    }
}

impl OcfLogger {
    fn new(env: &Env) -> OcfLogger {
        let process = process_name(env);
        let syslog = facility(env).and_then(|facility| {
            let formatter = formatter(facility, process.clone());
            Sink::start(move || syslog::unix(formatter).ok())
        });
        let level = if debug_wanted(env) {
            LevelFilter::Debug
        } else {
            LevelFilter::Info
        };
        OcfLogger {
            tag: format!("{process}[{}]", std::process::id()),
            level,
            syslog,
        }
    }
}

/// Installs the logger. Called once, first thing; a second call (tests)
/// keeps the first logger.
pub fn init(env: &Env) {
    let logger = LOGGER.get_or_init(|| OcfLogger::new(env));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(logger.level);
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
        let raw = format!("{}: {}", level.as_str(), record.args());
        let line = match sanitize(&raw) {
            Cow::Borrowed(_) => raw,
            Cow::Owned(escaped) => escaped,
        };
        // The tag and the line are sanitized already.
        let out = xml_safe(Cow::Owned(format!("{}: {line}", self.tag)));
        let _ = writeln!(std::io::stderr().lock(), "{out}");
        if let Some(sink) = &self.syslog {
            sink.send(level, line);
        }
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;
    use std::path::PathBuf;

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
        let forged: Env = [("OCF_RESOURCE_INSTANCE", "a\nb")].into_iter().collect();
        assert_eq!(process_name(&forged), "server(a\\nb)");
    }

    #[test]
    fn for_pacemaker_spells_non_ascii_out_only_before_an_xml_special() {
        for (raw, shown) in [
            ("vm-é is running", "vm-é is running"),
            (
                r#"config "/etc/vm.xml" unreadable"#,
                r#"config "/etc/vm.xml" unreadable"#,
            ),
            (r#"vm-é: config "/x""#, r#"vm-\u{e9}: config "/x""#),
            ("vm-日 & vm-b", r"vm-\u{65e5} & vm-b"),
            ("a \"b\" then é", "a \"b\" then é"),
            ("é<\n", r"\u{e9}<\n"),
        ] {
            assert_eq!(for_pacemaker(raw), shown, "{raw}");
        }
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

    #[test]
    fn sanitize_keeps_one_record_on_one_line() {
        let forged = sanitize("vm1\nocf-exit-reason:all is well\r\n");
        assert_eq!(forged, "vm1\\nocf-exit-reason:all is well\\r\\n");
        assert_eq!(forged.lines().count(), 1);
        assert_eq!(sanitize("\x1b[2Jgone"), "\\u{1b}[2Jgone");
        assert_eq!(sanitize("a\tb"), "a\\tb");
        assert_eq!(sanitize("\0\x7f\u{85}"), "\\u{0}\\u{7f}\\u{85}");
        assert_eq!(sanitize("vm-é-日本\\n"), "vm-é-日本\\n");
        for clean in ["", "plain text", "é 日本", "back\\slash"] {
            assert!(matches!(sanitize(clean), Cow::Borrowed(s) if s == clean));
        }
    }

    /// A fresh directory for one test's sockets.
    fn socket_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vmshift-log-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A sink whose worker sends to the datagram socket at `path`.
    fn sink_to(path: PathBuf) -> Sink {
        let formatter = formatter(Facility::LOG_DAEMON, "server(test)".to_owned());
        Sink::start(move || syslog::unix_custom(formatter, path).ok()).unwrap()
    }

    #[test]
    fn stuck_dev_log_blocks_no_caller() {
        let dir = socket_dir("stuck");
        let path = dir.join("log");
        // Bound and never read: journald or rsyslog that has stopped.
        let dev_log = UnixDatagram::bind(&path).unwrap();
        let filler = UnixDatagram::unbound().unwrap();
        filler.connect(&path).unwrap();
        filler.set_nonblocking(true).unwrap();
        let mut queued = 0;
        loop {
            match filler.send(b"<30>filler") {
                Ok(_) => queued += 1,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("filling the socket: {e}"),
            }
            assert!(queued < 100_000, "the socket never filled up");
        }
        let sink = sink_to(path);
        // 100 lines find room in the queue; the next QUEUE fill it and the
        // rest are dropped. Either way finish gives up after `within`.
        for count in [100, QUEUE] {
            let start = Instant::now();
            for i in 0..count {
                sink.send(Level::Info, format!("INFO: line {i}"));
            }
            let sent = start.elapsed();
            assert!(sent < Duration::from_millis(100), "{count} lines: {sent:?}");

            let start = Instant::now();
            sink.finish(Duration::from_millis(200));
            let waited = start.elapsed();
            // At least `within`: the worker really is stuck in send.
            assert!(waited >= Duration::from_millis(200), "{count}: {waited:?}");
            assert!(waited < Duration::from_millis(250), "{count}: {waited:?}");
        }
        // Closing the socket wakes the worker's send with an error.
        drop(dev_log);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn finish_waits_for_lines_queued_before_it() {
        let dir = socket_dir("read");
        let path = dir.join("log");
        let dev_log = UnixDatagram::bind(&path).unwrap();
        let sink = sink_to(path);
        let lines = [
            (Level::Info, "INFO: one"),
            (Level::Warn, "WARN: two"),
            (Level::Error, "ERROR: three"),
        ];
        for (level, line) in lines {
            sink.send(level, line.to_owned());
        }
        sink.finish(Duration::from_secs(10));
        dev_log.set_nonblocking(true).unwrap();
        let mut got = vec![];
        let mut buf = [0; 512];
        while let Ok(n) = dev_log.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        assert_eq!(got.len(), lines.len(), "{got:?}");
        let pid = std::process::id();
        // daemon is facility 3: priority 3 * 8 + severity.
        for ((priority, (_, line)), sent) in ["<30>", "<28>", "<27>"].iter().zip(lines).zip(&got) {
            assert!(sent.starts_with(priority), "{sent}");
            assert!(
                sent.ends_with(&format!(" server(test)[{pid}]: {line}")),
                "{sent}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn no_syslog_to_connect_to() {
        let sink = Sink::start(|| None).unwrap();
        let start = Instant::now();
        for _ in 0..2 * QUEUE {
            sink.send(Level::Error, "ERROR: lost".to_owned());
        }
        sink.finish(Duration::from_secs(10));
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
    }
}
