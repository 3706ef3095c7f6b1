//! Monitor's questions asked in libvirtd's own RPC protocol, without
//! libvirt.so.0: open `qemu:///system`, look the domain up by name, read its
//! state and reason, or its persistent definition (which monitor compares
//! with the one it saw last). The protocol is libvirt's public wire format
//! (src/rpc/virnetprotocol.x, src/remote/remote_protocol.x: XDR over the
//! daemon's UNIX socket), the one every libvirt client speaks; procedure
//! numbers in it never change meaning.
//!
//! Why: a process that loads libvirt.so.0 maps and binds 57 libraries
//! before it can ask anything, about 20 ms and 15 MiB per run, while the
//! question itself takes a millisecond. Pacemaker asks it for every server
//! every monitor interval. Everything else the agent does goes through the
//! `virt` crate; so does this question when the URI is not the local system
//! driver, or when libvirtd asks for SASL, which only libvirt.so speaks.
//!
//! The invariants this hand-written client relies on, each checked where
//! it is used:
//! * It only ever speaks to the local system driver's read-write UNIX
//!   socket, as root: no TLS, no SASL (refused, handed to libvirt.so), no
//!   remote host; `qemu:///system` is the only URI it opens.
//! * One connection per action, kept between its questions (the state,
//!   then the definition), and dropped with the action or when a
//!   question fails or is abandoned; calls strictly one after another: a
//!   reply is the next message with this program, REPLY type, the call's
//!   serial and procedure; anything else (an event, a keepalive) is
//!   skipped, never answered.
//! * A message's length is read before its body and must lie between the
//!   28-byte header and [`MAX_REPLY`]: a confused or hostile peer cannot
//!   make it allocate more.
//! * Every read is bounded from outside: the question runs on a worker
//!   ([`crate::bounded`]) waited for until the monitor's budget, and is
//!   abandoned, never joined, when libvirtd does not answer.
//! * XDR strings and arrays are read with their declared length against
//!   what is left of the message (no read past its end).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use virt::sys;

use super::qemu_proc;
use super::state::{observed, UNDEFINED};
use crate::bounded::on_worker;
use crate::hypervisor::{Error as HvError, ErrorKind, Observe, Qemu, Status};

/// The only URI asked directly: the local privileged QEMU driver, the
/// agent's default. Other URIs (a `?socket=`, another transport, a session
/// daemon) go through libvirt.so, which knows all their rules.
const SYSTEM_URI: &str = "qemu:///system";

/// remote_protocol.x: REMOTE_PROGRAM, REMOTE_PROTOCOL_VERSION.
const PROGRAM: u32 = 0x2000_8086;
const VERSION: u32 = 1;
/// A remote_procedure number (remote_protocol.x); the constants below are
/// the ones this client calls, under their names there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Procedure(u32);
const REMOTE_PROC_CONNECT_OPEN: Procedure = Procedure(1);
const REMOTE_PROC_DOMAIN_GET_XML_DESC: Procedure = Procedure(14);
const REMOTE_PROC_DOMAIN_LOOKUP_BY_NAME: Procedure = Procedure(23);
const REMOTE_PROC_AUTH_LIST: Procedure = Procedure(66);
const REMOTE_PROC_AUTH_POLKIT: Procedure = Procedure(70);
const REMOTE_PROC_DOMAIN_GET_STATE: Procedure = Procedure(212);
/// virnetprotocol.x: virNetMessageType CALL/REPLY, virNetMessageStatus.
const CALL: u32 = 0;
const REPLY: u32 = 1;
const STATUS_OK: u32 = 0;
/// remote_auth_type (1 is SASL).
const AUTH_NONE: i32 = 0;
const AUTH_POLKIT: i32 = 2;
/// Replies to these calls are a few hundred bytes, a domain's XML a few
/// dozen KiB; libvirt's own limit is far larger, but nothing this client
/// asks can need more.
const MAX_REPLY: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}", socket.display())]
    Connect {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("connection to libvirtd lost")]
    Io(#[from] std::io::Error),
    #[error("malformed reply ({0})")]
    Malformed(&'static str),
    /// libvirtd's virNetMessageError: its virErrorNumber and message.
    #[error("{message}")]
    Remote { code: i32, message: String },
    #[error("libvirtd asks for an authentication only libvirt.so speaks (SASL)")]
    Sasl,
}

impl Error {
    /// libvirtd could not be reached or went away: the state is unknown.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Error::Connect { .. } | Error::Io(_))
    }
}

/// XDR encoding (RFC 4506) of the few types the calls use.
#[derive(Default)]
struct Xdr(Vec<u8>);

impl Xdr {
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// A string: length, bytes, zero padding to a multiple of 4.
    fn string(mut self, s: &str) -> Self {
        self = self.u32(s.len() as u32);
        self.0.extend_from_slice(s.as_bytes());
        self.0.resize(self.0.len().next_multiple_of(4), 0);
        self
    }
    fn opaque16(mut self, b: &[u8; 16]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
}

/// XDR decoding of a reply's payload.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], Error> {
        if self.0.len() < n {
            return Err(Error::Malformed("short reply"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u32(&mut self) -> Result<u32, Error> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn i32(&mut self) -> Result<i32, Error> {
        self.u32().map(|v| v as i32)
    }
    fn string(&mut self) -> Result<String, Error> {
        let n = self.u32()? as usize;
        let padded = n.next_multiple_of(4);
        let b = self.take(padded)?;
        Ok(String::from_utf8_lossy(&b[..n]).into_owned())
    }
    /// XDR's optional-data (`type *`): a boolean, then the value if true.
    fn opt_string(&mut self) -> Result<Option<String>, Error> {
        match self.u32()? {
            0 => Ok(None),
            _ => self.string().map(Some),
        }
    }
    /// The header after the length: program, version, procedure, type,
    /// serial, status.
    fn header(&mut self) -> Result<[u32; 6], Error> {
        let mut h = [0; 6];
        for x in &mut h {
            *x = self.u32()?;
        }
        Ok(h)
    }
    fn opaque16(&mut self) -> Result<[u8; 16], Error> {
        let mut b = [0; 16];
        b.copy_from_slice(self.take(16)?);
        Ok(b)
    }
}

/// One message on the wire (virnetprotocol.x): its length, the header
/// (program, version, procedure, type, serial, status), the payload.
fn frame(proc_: Procedure, kind: u32, serial: u32, status: u32, payload: &[u8]) -> Vec<u8> {
    let mut msg = Xdr::default()
        .u32((28 + payload.len()) as u32)
        .u32(PROGRAM)
        .u32(VERSION)
        .u32(proc_.0)
        .u32(kind)
        .u32(serial)
        .u32(status)
        .0;
    msg.extend_from_slice(payload);
    msg
}

/// remote_nonnull_domain: how the protocol names a domain.
struct DomainRef {
    name: String,
    uuid: [u8; 16],
    id: i32,
}

/// One client connection, kept for the questions of one action and then
/// dropped: libvirtd drops a client whose socket closes, as for any client
/// that exits.
struct Client {
    sock: UnixStream,
    serial: u32,
}

impl Client {
    /// Sends one call and returns its reply's payload. Other messages on
    /// the connection (events, keepalives) are skipped: this client asks
    /// for neither, so none is expected.
    fn call(&mut self, proc_: Procedure, args: Xdr) -> Result<Vec<u8>, Error> {
        self.serial += 1;
        let msg = frame(proc_, CALL, self.serial, STATUS_OK, &args.0);
        self.sock.write_all(&msg)?;
        loop {
            let mut len = [0; 4];
            self.sock.read_exact(&mut len)?;
            let len = u32::from_be_bytes(len) as usize;
            if !(28..=MAX_REPLY).contains(&len) {
                return Err(Error::Malformed("message length"));
            }
            let mut body = vec![0; len - 4];
            self.sock.read_exact(&mut body)?;
            let mut r = Reader(&body);
            let [prog, _vers, got_proc, kind, serial, status] = r.header()?;
            if prog != PROGRAM || kind != REPLY || serial != self.serial || got_proc != proc_.0 {
                continue;
            }
            if status != STATUS_OK {
                // virNetMessageError starts with code, domain, message.
                let code = r.i32()?;
                let _domain = r.i32()?;
                let message = r.opt_string()?.unwrap_or_default();
                return Err(Error::Remote { code, message });
            }
            return Ok(r.0.to_vec());
        }
    }

    /// Connects and opens the system QEMU driver, authenticating as
    /// libvirt's remote driver does: libvirtd lets root in on the UNIX
    /// socket without asking (its AUTH_LIST answer turns polkit into none
    /// for uid 0), others through polkit; SASL is left to libvirt.so.
    fn open(socket: &Path) -> Result<Client, StepError> {
        let sock = UnixStream::connect(socket).map_err(|source| {
            step("connect")(Error::Connect {
                socket: socket.to_owned(),
                source,
            })
        })?;
        let mut c = Client { sock, serial: 0 };
        let auth = c
            .call(REMOTE_PROC_AUTH_LIST, Xdr::default())
            .map_err(step("auth"))?;
        let mut r = Reader(&auth);
        let types = (0..r.u32().map_err(step("auth"))?)
            .map(|_| r.i32())
            .collect::<Result<Vec<_>, _>>()
            .map_err(step("auth"))?;
        if !types.is_empty() && !types.contains(&AUTH_NONE) {
            if !types.contains(&AUTH_POLKIT) {
                // SASL, or a kind newer than this client: libvirt.so
                // speaks them.
                return Err(step("auth")(Error::Sasl));
            }
            c.call(REMOTE_PROC_AUTH_POLKIT, Xdr::default())
                .map_err(step("polkit auth"))?;
        }
        // remote_connect_open_args: remote_string name (optional), flags.
        let args = Xdr::default().u32(1).string(SYSTEM_URI).u32(0);
        c.call(REMOTE_PROC_CONNECT_OPEN, args)
            .map_err(step("open"))?;
        Ok(c)
    }

    /// The domain, or None if libvirtd does not know it (VIR_ERR_NO_DOMAIN).
    fn lookup(&mut self, name: &str) -> Result<Option<DomainRef>, Error> {
        let reply = match self.call(
            REMOTE_PROC_DOMAIN_LOOKUP_BY_NAME,
            Xdr::default().string(name),
        ) {
            Err(Error::Remote { code, .. }) if code == sys::VIR_ERR_NO_DOMAIN as i32 => {
                return Ok(None)
            }
            r => r?,
        };
        let mut r = Reader(&reply);
        Ok(Some(DomainRef {
            name: r.string()?,
            uuid: r.opaque16()?,
            id: r.i32()?,
        }))
    }

    /// virDomainGetState's state and reason.
    fn state(&mut self, dom: &DomainRef) -> Result<(i32, i32), Error> {
        let args = Xdr::default()
            .string(&dom.name)
            .opaque16(&dom.uuid)
            .u32(dom.id as u32)
            .u32(0);
        let reply = self.call(REMOTE_PROC_DOMAIN_GET_STATE, args)?;
        let mut r = Reader(&reply);
        Ok((r.i32()?, r.i32()?))
    }

    /// virDomainGetXMLDesc of the persistent definition, with its secrets.
    fn definition(&mut self, dom: &DomainRef) -> Result<String, Error> {
        let flags = sys::VIR_DOMAIN_XML_INACTIVE | sys::VIR_DOMAIN_XML_SECURE;
        let args = Xdr::default()
            .string(&dom.name)
            .opaque16(&dom.uuid)
            .u32(dom.id as u32)
            .u32(flags);
        let reply = self.call(REMOTE_PROC_DOMAIN_GET_XML_DESC, args)?;
        Reader(&reply).string()
    }
}

/// A call of the exchange that failed, and why.
#[derive(Debug, thiserror::Error)]
#[error("libvirtd's RPC {what} failed")]
pub struct StepError {
    what: &'static str,
    #[source]
    source: Error,
}

fn step(what: &'static str) -> impl FnOnce(Error) -> StepError {
    move |source| StepError { what, source }
}

impl From<StepError> for HvError {
    fn from(e: StepError) -> Self {
        let kind = if e.source.is_unreachable() {
            ErrorKind::Unreachable
        } else {
            ErrorKind::Other
        };
        HvError::new(kind, e)
    }
}

/// The UNIX socket libvirt's client would use for `qemu:///system`
/// (remote_sockets.c, remoteGetUNIXSocket): `remote_mode` in
/// /etc/libvirt/libvirt.conf if set, else the modular daemon's socket if
/// it exists, else the monolithic libvirtd's.
fn system_socket() -> PathBuf {
    let direct = PathBuf::from("/var/run/libvirt/virtqemud-sock");
    let legacy = PathBuf::from("/var/run/libvirt/libvirt-sock");
    let conf = std::fs::read_to_string("/etc/libvirt/libvirt.conf").unwrap_or_default();
    match remote_mode(&conf) {
        Some("legacy") => legacy,
        Some("direct") => direct,
        _ if direct.exists() => direct,
        _ => legacy,
    }
}

/// The value of libvirt.conf's `remote_mode = "..."`, if set.
fn remote_mode(conf: &str) -> Option<&str> {
    conf.lines().find_map(|line| {
        let (key, value) = line.split('#').next()?.split_once('=')?;
        (key.trim() == "remote_mode").then(|| value.trim().trim_matches('"'))
    })
}

/// Monitor's view of the local system QEMU driver, asked directly.
pub struct Rpc {
    socket: PathBuf,
    deadline: Instant,
    /// The question ends this long after it is asked (within the deadline).
    ask_budget: Duration,
    /// Who asks instead when libvirtd wants SASL, which only libvirt.so
    /// speaks.
    fallback: Box<dyn Observe>,
    /// The connection of the last question that was answered, with the
    /// domain it looked up: the next question about it asks there.
    kept: std::cell::Cell<Option<Kept>>,
}

/// A connection kept between questions: the domain name it looked up and
/// what libvirtd answered (None: no such domain).
type Kept = (Client, String, Option<DomainRef>);

impl Rpc {
    /// For `uri` if it is the local system QEMU driver, else None (ask
    /// through libvirt.so).
    pub fn for_uri(
        uri: &str,
        deadline: Instant,
        ask_budget: Duration,
        fallback: impl FnOnce() -> Box<dyn Observe>,
    ) -> Option<Rpc> {
        (uri == SYSTEM_URI).then(|| Rpc {
            socket: system_socket(),
            deadline,
            ask_budget,
            fallback: fallback(),
            kept: std::cell::Cell::new(None),
        })
    }
}

/// What one question to libvirtd came to.
enum Asked<T> {
    /// The answer; None when libvirtd does not know the domain.
    Got(Option<T>),
    /// libvirtd wants SASL: libvirt.so must ask.
    Sasl,
    Failed(HvError),
}

impl Rpc {
    /// Asks `f` of the domain, within the question's budget, on the kept
    /// connection or (the first question) a new one that looks it up.
    fn ask<T: Send + 'static>(
        &self,
        what: &'static str,
        name: &str,
        f: fn(&mut Client, &DomainRef) -> Result<T, Error>,
    ) -> Asked<T> {
        let (socket, owned) = (self.socket.clone(), name.to_owned());
        let until = (Instant::now() + self.ask_budget).min(self.deadline);
        let kept = self.kept.take().filter(|(_, n, _)| *n == owned);
        let got = on_worker(what, until, move || {
            let (mut c, dom) = match kept {
                Some((c, _, dom)) => (c, dom),
                None => {
                    let mut c = Client::open(&socket)?;
                    let dom = c.lookup(&owned).map_err(step("lookup"))?;
                    (c, dom)
                }
            };
            let answer = match &dom {
                Some(d) => Some(f(&mut c, d).map_err(step(what))?),
                None => None,
            };
            Ok((answer, (c, owned, dom)))
        });
        match got {
            Ok(Ok((answer, kept))) => {
                self.kept.set(Some(kept));
                Asked::Got(answer)
            }
            Ok(Err(StepError {
                source: Error::Sasl,
                ..
            })) => Asked::Sasl,
            Ok(Err(e)) => Asked::Failed(e.into()),
            Err(_) => Asked::Failed(HvError::new(
                ErrorKind::Timeout,
                format!("libvirtd did not answer {what} in time"),
            )),
        }
    }
}

impl Observe for Rpc {
    fn status(&self, name: &str) -> Result<Status, HvError> {
        match self.ask("get state", name, Client::state) {
            Asked::Got(Some((state, reason))) => Ok(observed(state, reason)),
            Asked::Got(None) => Ok(UNDEFINED),
            Asked::Sasl => self.fallback.status(name),
            Asked::Failed(e) => Err(e),
        }
    }

    fn definition(&self, name: &str) -> Result<Option<String>, HvError> {
        match self.ask("get the definition", name, Client::definition) {
            Asked::Got(xml) => Ok(xml),
            Asked::Sasl => self.fallback.definition(name),
            Asked::Failed(e) => Err(e),
        }
    }

    fn qemu(&self, name: &str) -> Qemu {
        let left = self.deadline.saturating_duration_since(Instant::now());
        qemu_proc::find(SYSTEM_URI, name, qemu_proc::PROC_BUDGET.min(left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::{DomainState, Postcopy};

    #[test]
    fn strings_are_padded_to_four_bytes_and_read_back() {
        for s in ["", "a", "vm1", "abcd", "vm-with-a-long-name"] {
            let x = Xdr::default().string(s).u32(7);
            assert_eq!(x.0.len() % 4, 0, "{s:?}");
            let mut r = Reader(&x.0);
            assert_eq!(r.string().unwrap(), s);
            assert_eq!(r.u32().unwrap(), 7);
            assert!(r.0.is_empty());
        }
    }

    #[test]
    fn a_short_reply_is_an_error_not_a_panic() {
        let x = Xdr::default().u32(40).0;
        assert!(matches!(Reader(&x).string(), Err(Error::Malformed(_))));
        assert!(matches!(Reader(&[0, 0]).u32(), Err(Error::Malformed(_))));
        assert_eq!(Reader(&[0, 0, 0, 0]).opt_string().unwrap(), None);
    }

    #[test]
    fn remote_mode_is_read_from_libvirt_conf() {
        assert_eq!(remote_mode(""), None);
        assert_eq!(remote_mode("#remote_mode = \"legacy\"\n"), None);
        assert_eq!(
            remote_mode("uri_default = \"qemu:///system\"\nremote_mode = \"legacy\" # x\n"),
            Some("legacy")
        );
        assert_eq!(remote_mode("remote_mode=\"direct\""), Some("direct"));
    }

    #[test]
    fn only_the_local_system_driver_is_asked_directly() {
        let d = Instant::now();
        let fake =
            || -> Box<dyn Observe> { Box::new(crate::hypervisor::fake::Fake::unreachable()) };
        assert!(Rpc::for_uri("qemu:///system", d, Duration::from_secs(1), fake).is_some());
        for uri in [
            "qemu+unix:///system?socket=/tmp/s",
            "qemu+ssh://node-b/system",
            "qemu:///session",
            "test:///default",
        ] {
            assert!(
                Rpc::for_uri(uri, d, Duration::from_secs(1), fake).is_none(),
                "{uri}"
            );
        }
    }

    /// A libvirtd that answers each call from `reply(proc, args)`: Ok
    /// payload, or Err((code, message)) as a virNetMessageError. Before
    /// each reply it sends an event message the client must skip.
    fn libvirtd(
        reply: impl Fn(Procedure, &[u8]) -> Result<Vec<u8>, (i32, &'static str)> + Send + 'static,
    ) -> (Rpc, std::sync::mpsc::Receiver<Vec<Procedure>>) {
        let dir = std::env::temp_dir().join(format!("vmshift-rpc-{}-{}", std::process::id(), {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        }));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut procs = vec![];
            loop {
                let mut len = [0; 4];
                if s.read_exact(&mut len).is_err() {
                    break;
                }
                let mut body = vec![0; u32::from_be_bytes(len) as usize - 4];
                s.read_exact(&mut body).unwrap();
                let mut r = Reader(&body);
                let [_, _, number, _, serial, _] = r.header().unwrap();
                let proc_ = Procedure(number);
                procs.push(proc_);
                let send = |s: &mut UnixStream, kind, status, payload: Vec<u8>| {
                    s.write_all(&frame(proc_, kind, serial, status, &payload))
                        .unwrap();
                };
                // An event (virNetMessageType MESSAGE) first.
                send(&mut s, 2, STATUS_OK, vec![]);
                match reply(proc_, r.0) {
                    Ok(p) => send(&mut s, REPLY, STATUS_OK, p),
                    Err((code, msg)) => {
                        let e = Xdr::default().u32(code as u32).u32(10).u32(1).string(msg);
                        send(&mut s, REPLY, 1, e.0)
                    }
                }
            }
            let _ = tx.send(procs);
            let _ = std::fs::remove_dir_all(dir);
        });
        let rpc = Rpc {
            socket,
            deadline: Instant::now() + Duration::from_secs(5),
            ask_budget: Duration::from_secs(5),
            fallback: Box::new(crate::hypervisor::fake::Fake::unreachable()),
            kept: Default::default(),
        };
        (rpc, rx)
    }

    /// Drops `rpc`, which closes its kept connection, and checks what the
    /// fake libvirtd was asked: the calls that open a connection and find
    /// the domain, then `then`.
    fn asked_after_open(
        rpc: Rpc,
        procs: std::sync::mpsc::Receiver<Vec<Procedure>>,
        then: &[Procedure],
    ) {
        drop(rpc);
        let open = [
            REMOTE_PROC_AUTH_LIST,
            REMOTE_PROC_CONNECT_OPEN,
            REMOTE_PROC_DOMAIN_LOOKUP_BY_NAME,
        ];
        assert_eq!(procs.recv().unwrap(), [&open[..], then].concat());
    }

    fn domain(name: &str) -> Vec<u8> {
        Xdr::default().string(name).opaque16(&[7; 16]).u32(3).0
    }

    #[test]
    fn asks_auth_open_lookup_and_state_and_reads_the_answer() {
        let (rpc, procs) = libvirtd(|proc_, args| match proc_ {
            REMOTE_PROC_AUTH_LIST => Ok(Xdr::default().u32(1).u32(AUTH_NONE as u32).0),
            REMOTE_PROC_CONNECT_OPEN => {
                assert_eq!(args, Xdr::default().u32(1).string(SYSTEM_URI).u32(0).0);
                Ok(vec![])
            }
            REMOTE_PROC_DOMAIN_LOOKUP_BY_NAME => Ok(domain("vm1")),
            REMOTE_PROC_DOMAIN_GET_STATE => {
                assert_eq!(args, &[domain("vm1"), vec![0; 4]].concat()[..]);
                let (s, r) = (sys::VIR_DOMAIN_PAUSED, sys::VIR_DOMAIN_PAUSED_POSTCOPY);
                Ok(Xdr::default().u32(s).u32(r).0)
            }
            _ => Err((1, "unexpected")),
        });
        let got = rpc.status("vm1").unwrap();
        assert_eq!(
            (got.state, got.postcopy, got.migrating),
            (DomainState::Paused, Some(Postcopy::Outgoing), false)
        );
        asked_after_open(rpc, procs, &[REMOTE_PROC_DOMAIN_GET_STATE]);
    }

    #[test]
    fn reads_the_persistent_definition_with_its_secrets() {
        let (rpc, procs) = libvirtd(|proc_, args| match proc_ {
            REMOTE_PROC_AUTH_LIST => Ok(Xdr::default().u32(0).0),
            REMOTE_PROC_CONNECT_OPEN => Ok(vec![]),
            REMOTE_PROC_DOMAIN_LOOKUP_BY_NAME => Ok(domain("vm1")),
            REMOTE_PROC_DOMAIN_GET_XML_DESC => {
                let flags = sys::VIR_DOMAIN_XML_INACTIVE | sys::VIR_DOMAIN_XML_SECURE;
                assert_eq!(
                    args,
                    &[domain("vm1"), flags.to_be_bytes().to_vec()].concat()[..]
                );
                Ok(Xdr::default().string("<domain/>").0)
            }
            REMOTE_PROC_DOMAIN_GET_STATE => {
                Ok(Xdr::default().u32(sys::VIR_DOMAIN_RUNNING).u32(1).0)
            }
            _ => Err((1, "unexpected")),
        });
        // monitor's two questions: one connection, one lookup.
        assert_eq!(rpc.state("vm1").unwrap(), DomainState::Running);
        assert_eq!(rpc.definition("vm1").unwrap().as_deref(), Some("<domain/>"));
        let then = [
            REMOTE_PROC_DOMAIN_GET_STATE,
            REMOTE_PROC_DOMAIN_GET_XML_DESC,
        ];
        asked_after_open(rpc, procs, &then);
    }

    #[test]
    fn an_unknown_domain_is_undefined_and_other_errors_say_why() {
        let (rpc, _) = libvirtd(|proc_, _| match proc_ {
            REMOTE_PROC_AUTH_LIST => Ok(Xdr::default().u32(0).0),
            REMOTE_PROC_CONNECT_OPEN => Ok(vec![]),
            _ => Err((sys::VIR_ERR_NO_DOMAIN as i32, "Domain not found")),
        });
        assert_eq!(rpc.state("vm1").unwrap(), DomainState::Undefined);
        let (rpc, _) = libvirtd(|proc_, _| match proc_ {
            REMOTE_PROC_AUTH_LIST => Ok(Xdr::default().u32(0).0),
            _ => Err((1, "internal error: no driver")),
        });
        let e = rpc.state("vm1").unwrap_err();
        assert!(!e.is_unreachable(), "{e:?}");
        assert_eq!(e.to_string(), "libvirtd's RPC open failed");
        assert_eq!(
            std::error::Error::source(&e).unwrap().to_string(),
            "internal error: no driver"
        );
    }

    #[test]
    fn polkit_is_asked_when_libvirtd_wants_it() {
        let (rpc, procs) = libvirtd(|proc_, _| match proc_ {
            REMOTE_PROC_AUTH_LIST => Ok(Xdr::default().u32(1).u32(AUTH_POLKIT as u32).0),
            REMOTE_PROC_AUTH_POLKIT => Ok(Xdr::default().u32(1).0),
            REMOTE_PROC_CONNECT_OPEN => Ok(vec![]),
            REMOTE_PROC_DOMAIN_LOOKUP_BY_NAME => Ok(domain("vm1")),
            _ => Ok(Xdr::default().u32(sys::VIR_DOMAIN_RUNNING).u32(1).0),
        });
        assert_eq!(rpc.state("vm1").unwrap(), DomainState::Running);
        // Dropped, it closes the kept connection, and the fake libvirtd
        // reports what it was asked.
        drop(rpc);
        assert_eq!(
            procs.recv().unwrap(),
            [
                REMOTE_PROC_AUTH_LIST,
                REMOTE_PROC_AUTH_POLKIT,
                REMOTE_PROC_CONNECT_OPEN,
                REMOTE_PROC_DOMAIN_LOOKUP_BY_NAME,
                REMOTE_PROC_DOMAIN_GET_STATE
            ]
        );
    }

    #[test]
    fn sasl_is_left_to_the_fallback() {
        let (mut rpc, _) = libvirtd(|proc_, _| match proc_ {
            REMOTE_PROC_AUTH_LIST => Ok(Xdr::default().u32(1).u32(1).0),
            _ => Err((1, "unexpected")),
        });
        rpc.fallback = Box::new(crate::hypervisor::fake::Fake::new(&[DomainState::Paused]));
        assert_eq!(rpc.state("vm1").unwrap(), DomainState::Paused);
    }

    #[test]
    fn a_missing_socket_is_unreachable() {
        let rpc = Rpc {
            socket: PathBuf::from("/nonexistent/libvirt-sock"),
            deadline: Instant::now() + Duration::from_secs(5),
            ask_budget: Duration::from_secs(5),
            fallback: Box::new(crate::hypervisor::fake::Fake::unreachable()),
            kept: Default::default(),
        };
        let e = rpc.state("vm1").unwrap_err();
        assert!(e.is_unreachable(), "{e:?}");
    }
}
