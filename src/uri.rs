//! What may go into a libvirt connection URI: node names (the `peer`
//! parameter, `CRM_meta_migrate_target`, `crm_node -l`) as URI hosts, ssh
//! user names (`migration_user`), the local `hypervisor` URI, and the peer
//! URI built from them.
//!
//! libvirt reads more than a host from a remote URI: its query parameters
//! (https://libvirt.org/uri.html, remote.html "Extra parameters"; parsed in
//! `src/remote/remote_driver.c` `doRemoteOpen`) make it run a program
//! (`command=`, `netcat=`, transport `ext`), connect elsewhere (`socket=`,
//! `name=`, `proxy=`) or skip checks (`no_verify=`, `known_hosts_verify=`).
//! So every piece is checked against a narrow allow-list here, and the peer
//! URI carries no query but the agent's own `command=` (a fixed path, see
//! `crate::ssh`).

use std::net::Ipv6Addr;

/// RFC 1123 2.1 (with RFC 1035 2.3.4): a name of at most 253 characters,
/// each label at most 63.
const MAX_HOST_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;
/// useradd's limit on a user name.
const MAX_USER_LEN: usize = 32;

/// Why a node name cannot be a URI host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("is empty")]
    Empty,
    #[error("contains {0:?}")]
    Char(char),
    #[error("longer than 253 characters")]
    TooLong,
    #[error("ends with '.'")]
    TrailingDot,
    #[error("empty label")]
    EmptyLabel,
    #[error("label longer than 63")]
    LongLabel,
    #[error("label starts or ends with '-'")]
    Hyphen,
    #[error("IPv6 address without '[' ']'")]
    BareIpv6,
    #[error("not an IPv6 address inside '[' ']'")]
    BadIpv6,
    #[error("IPv6 zone ('%') not allowed")]
    Zone,
}

/// A node name usable as the host of a URI: an RFC 1123 host name (which
/// covers an IPv4 literal) or an IPv6 literal in brackets (RFC 3986 3.2.2).
///
/// A trailing dot (`node-b.`) is refused: it names the same node under a
/// second spelling, which ssh's known_hosts and a TLS certificate's name
/// check would not match. An IPv6 zone (`[fe80::1%eth0]`) is refused: it
/// is only meaningful on this host and '%' would be decoded by libvirt.
pub fn check_host(s: &str) -> Result<(), HostError> {
    if let Some(inner) = s.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or(HostError::BadIpv6)?;
        if inner.contains('%') {
            return Err(HostError::Zone);
        }
        return inner
            .parse::<Ipv6Addr>()
            .map(drop)
            .map_err(|_| HostError::BadIpv6);
    }
    if s.is_empty() {
        return Err(HostError::Empty);
    }
    if let Some(c) = s
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || c == '.' || c == '-'))
    {
        // Said as such: "contains ':'" would not tell what to write.
        return Err(if s.parse::<Ipv6Addr>().is_ok() {
            HostError::BareIpv6
        } else {
            HostError::Char(c)
        });
    }
    if s.len() > MAX_HOST_LEN {
        return Err(HostError::TooLong);
    }
    if s.ends_with('.') {
        return Err(HostError::TrailingDot);
    }
    for label in s.split('.') {
        if label.is_empty() {
            return Err(HostError::EmptyLabel);
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(HostError::LongLabel);
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(HostError::Hyphen);
        }
    }
    Ok(())
}

/// Why a name cannot be an ssh user name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("is empty")]
    Empty,
    #[error("contains {0:?}")]
    Char(char),
    #[error("starts with {0:?}")]
    Start(char),
    #[error("longer than 32 characters")]
    TooLong,
}

/// A user name for ssh: `[a-z_][a-z0-9_-]*`, at most 32 characters
/// (useradd's default NAME_REGEX and limit). It goes before the '@' of a
/// URI, so nothing that could end it ('@', ':', '/') or start an ssh
/// option ('-') gets in.
pub fn check_user(s: &str) -> Result<(), UserError> {
    let Some(first) = s.chars().next() else {
        return Err(UserError::Empty);
    };
    if let Some(c) = s
        .chars()
        .find(|&c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'))
    {
        return Err(UserError::Char(c));
    }
    if first.is_ascii_digit() || first == '-' {
        return Err(UserError::Start(first));
    }
    if s.len() > MAX_USER_LEN {
        return Err(UserError::TooLong);
    }
    Ok(())
}

/// The transports libvirt's remote driver knows (`remoteDriverTransport`),
/// less `ext`.
const TRANSPORTS: [&str; 6] = ["unix", "tls", "tcp", "ssh", "libssh", "libssh2"];

/// The query keys a `hypervisor` URI may carry; libvirt acts on every
/// other key it knows (`doRemoteOpen`) and passes unknown ones on to the
/// remote end, so anything not listed is refused.
pub const ALLOWED_QUERY_KEYS: [&str; 3] = [
    // The path of this node's libvirtd socket; only on a local URI: over
    // ssh libvirt hands it to a shell on the remote host.
    "socket",
    // Which daemon to reach, libvirtd or the modular one (auto, legacy,
    // direct: remoteDriverMode); the same daemons either way.
    "mode",
    // 1 keeps ssh from asking for a password on a terminal (0 or 1:
    // libvirt reads it as a number); nothing is run or skipped.
    "no_tty",
];

/// Why a `hypervisor` URI cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    #[error("contains {0:?}")]
    Char(char),
    #[error("contains '%' (percent-escapes are refused, not decoded)")]
    Percent,
    #[error("contains '#' (a fragment)")]
    Fragment,
    #[error("not of the form driver[+transport]://[user@][host][:port]/path[?query]")]
    Form,
    #[error("driver {0:?} is not [a-z][a-z0-9]*")]
    Driver(String),
    #[error("transport 'ext' is not allowed (libvirt runs its command= as a program)")]
    Ext,
    #[error("transport {0:?} is not one of unix, tls, tcp, ssh, libssh, libssh2")]
    Transport(String),
    #[error("user {value:?}")]
    User {
        value: String,
        #[source]
        source: UserError,
    },
    #[error("host {value:?}")]
    Host {
        value: String,
        #[source]
        source: HostError,
    },
    #[error("port {0:?} is not a number from 1 to 65535")]
    Port(String),
    #[error("path contains {0:?}")]
    Path(char),
    #[error("query contains ';' (libvirt splits parameters at it too)")]
    Semicolon,
    #[error("query key '{key}' is not allowed{why}; allowed: {}", ALLOWED_QUERY_KEYS.join(", "))]
    Key { key: String, why: &'static str },
    #[error("query key '{0}' given twice")]
    Twice(String),
    #[error("{key}={value:?} is not allowed: expected {expected}")]
    Value {
        key: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("query key 'socket' is only allowed on a local URI (no host, transport unix or none)")]
    RemoteSocket,
}

/// What libvirt does with a query key it knows and this module refuses.
/// libvirt compares keys ignoring case (`STRCASEEQ`), and so does this.
fn refusal(key: &str) -> &'static str {
    match key.to_ascii_lowercase().as_str() {
        "command" => " (libvirt runs it as a program)",
        "netcat" => " (libvirt runs it in a shell on the remote host)",
        "name" => " (libvirt opens it on the remote end instead of the path)",
        "proxy" => " (it picks the program that relays on the remote host)",
        "keyfile" => " (it picks the ssh private key)",
        "known_hosts" | "known_hosts_verify" => " (it decides which host keys are trusted)",
        "no_verify" => " (it turns certificate and host-key checks off)",
        "pkipath" => " (it picks the TLS certificates)",
        "sshauth" | "auth" | "authfile" => " (it picks how to authenticate)",
        "tls_priority" => " (it picks the TLS ciphers)",
        "no_sanity" => " (it skips libvirt's checks)",
        _ => "",
    }
}

/// A path or socket path: RFC 3986 unreserved characters and '/', so that
/// nothing in it is a delimiter, an escape or special to a shell.
fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-' | '~')
}

/// The local `hypervisor` URI, parsed:
/// `driver[+transport]://[user@][host][:port]/path[?k=v&k=v]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalUri {
    pub driver: String,
    pub transport: Option<String>,
    pub user: Option<String>,
    /// As written; an IPv6 literal keeps its brackets.
    pub host: Option<String>,
    pub port: Option<u16>,
    /// From the first '/' after the authority, at least "/".
    pub path: String,
    /// In order, as written: '%' is refused rather than decoded.
    pub query: Vec<(String, String)>,
}

impl LocalUri {
    /// Parses and checks a `hypervisor` URI. Only printable ASCII is
    /// accepted, and no '%' anywhere: libvirt (libxml2) decodes escapes
    /// after splitting, so a checked `%3B` would reach it as ';'.
    pub fn parse(s: &str) -> Result<LocalUri, UriError> {
        if let Some(c) = s.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(UriError::Char(c));
        }
        if s.contains('%') {
            return Err(UriError::Percent);
        }
        if s.contains('#') {
            return Err(UriError::Fragment);
        }
        let (scheme, rest) = s.split_once("://").ok_or(UriError::Form)?;
        let (driver, transport) = match scheme.split_once('+') {
            Some((d, t)) => (d, Some(t)),
            None => (scheme, None),
        };
        if !driver.starts_with(|c: char| c.is_ascii_lowercase())
            || !driver
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        {
            return Err(UriError::Driver(driver.into()));
        }
        match transport {
            Some("ext") => return Err(UriError::Ext),
            Some(t) if !TRANSPORTS.contains(&t) => return Err(UriError::Transport(t.into())),
            _ => {}
        }
        let slash = rest.find('/').ok_or(UriError::Form)?;
        let (authority, path_query) = rest.split_at(slash);
        let (path, query) = match path_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_query, None),
        };
        if let Some(c) = path.chars().find(|&c| !is_path_char(c)) {
            return Err(UriError::Path(c));
        }

        let (user, hostport) = match authority.split_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        if let Some(u) = user {
            check_user(u).map_err(|source| UriError::User {
                value: u.into(),
                source,
            })?;
        }
        // A ':' inside brackets belongs to the IPv6 address.
        let colon = match hostport.find(']') {
            Some(end) if hostport.starts_with('[') => hostport[end..].find(':').map(|i| end + i),
            _ => hostport.find(':'),
        };
        let (host, port) = match colon {
            Some(i) => (&hostport[..i], Some(&hostport[i + 1..])),
            None => (hostport, None),
        };
        if !host.is_empty() {
            check_host(host).map_err(|source| UriError::Host {
                value: host.into(),
                source,
            })?;
        }
        let port = port
            .map(|p| match p.parse::<u16>() {
                // u16's parser would take "+22".
                Ok(n) if n != 0 && !p.starts_with('+') => Ok(n),
                _ => Err(UriError::Port(p.into())),
            })
            .transpose()?;

        // Without a transport, a host makes libvirt go over TLS.
        let local = match transport {
            None => host.is_empty(),
            Some(t) => t == "unix",
        };
        let query = match query {
            Some(q) => parse_query(q, local)?,
            None => Vec::new(),
        };
        Ok(LocalUri {
            driver: driver.into(),
            transport: transport.map(Into::into),
            user: user.map(Into::into),
            host: (!host.is_empty()).then(|| host.into()),
            port,
            path: path.into(),
            query,
        })
    }
}

/// The query, split as libvirt's `virURIParseParams` does ('&', empty
/// sections skipped, no '=' means an empty value) and checked against
/// [`ALLOWED_QUERY_KEYS`]. `local` says the connection stays on this node.
fn parse_query(q: &str, local: bool) -> Result<Vec<(String, String)>, UriError> {
    // virURIParseParams falls back to ';' as a separator when no '&' is
    // left; refusing it keeps one reading of the query.
    if q.contains(';') {
        return Err(UriError::Semicolon);
    }
    let mut out: Vec<(String, String)> = Vec::new();
    for section in q.split('&').filter(|s| !s.is_empty()) {
        let (key, value) = section.split_once('=').unwrap_or((section, ""));
        let bad = |key: &'static str, expected| UriError::Value {
            key,
            value: value.into(),
            expected,
        };
        match key {
            "socket" if !local => return Err(UriError::RemoteSocket),
            "socket" => {
                if !value.starts_with('/') || !value.chars().all(is_path_char) {
                    return Err(bad(
                        "socket",
                        "an absolute path of letters, digits and / . _ - ~",
                    ));
                }
            }
            "mode" => {
                if !matches!(value, "auto" | "legacy" | "direct") {
                    return Err(bad("mode", "auto, legacy or direct"));
                }
            }
            "no_tty" => {
                if !matches!(value, "0" | "1") {
                    return Err(bad("no_tty", "0 or 1"));
                }
            }
            _ => {
                return Err(UriError::Key {
                    key: key.into(),
                    why: refusal(key),
                })
            }
        }
        // libvirt keeps the last of a repeated key; one is clearer.
        if out.iter().any(|(k, _)| k == key) {
            return Err(UriError::Twice(key.into()));
        }
        out.push((key.into(), value.into()));
    }
    Ok(out)
}

/// The URI this node's libvirtd uses to reach the peer's:
/// `{driver}+{transport}://[user@]{host}{path}` (`qemu:///system`, ssh,
/// root, node-b → `qemu+ssh://root@node-b/system`). The local URI's host,
/// port and query are dropped: the query's keys are for this node's
/// connection, and on a remote one libvirt would act on them. The user
/// goes in for ssh only (tcp and tls would read it as a SASL name), and so
/// does `ssh`, the program libvirt runs as ssh (`?command=`).
/// `host` and `user` must have passed [`check_host`] and [`check_user`].
pub fn peer_uri(
    local: &LocalUri,
    transport: &str,
    user: Option<&str>,
    host: &str,
    ssh: Option<&str>,
) -> String {
    debug_assert!(matches!(transport, "ssh" | "tcp" | "tls"), "{transport:?}");
    debug_assert!(check_host(host).is_ok(), "unchecked host {host:?}");
    debug_assert!(
        user.is_none_or(|u| check_user(u).is_ok()),
        "unchecked user {user:?}"
    );
    debug_assert!(
        ssh.is_none_or(|c| c.starts_with('/') && c.chars().all(is_path_char)),
        "{ssh:?}"
    );
    let (user, query) = match (transport, user, ssh) {
        ("ssh", u, c) => (
            u.map(|u| format!("{u}@")).unwrap_or_default(),
            c.map(|c| format!("?command={c}")).unwrap_or_default(),
        ),
        _ => Default::default(),
    };
    format!(
        "{}+{transport}://{user}{host}{}{query}",
        local.driver, local.path
    )
}

/// `uri` as messages show it: without the `?command=` [`peer_uri`] adds,
/// which is the same on every node and would push the cause past the 128
/// characters of an exit reason Pacemaker keeps.
pub fn shown(uri: &str) -> &str {
    uri.split_once("?command=").map_or(uri, |(u, _)| u)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> LocalUri {
        LocalUri::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn refused(s: &str) -> UriError {
        LocalUri::parse(s).expect_err(s)
    }

    /// The message with its sources, as `agent::chain` shows it.
    fn text(e: &UriError) -> String {
        match std::error::Error::source(e) {
            Some(c) => format!("{e}: {c}"),
            None => e.to_string(),
        }
    }

    #[test]
    fn accepted_forms() {
        let u = parse("qemu:///system");
        assert_eq!(
            u,
            LocalUri {
                driver: "qemu".into(),
                transport: None,
                user: None,
                host: None,
                port: None,
                path: "/system".into(),
                query: vec![],
            }
        );
        assert_eq!(
            parse("qemu+unix:///system").transport.as_deref(),
            Some("unix")
        );
        let u = parse("qemu+unix:///system?socket=/path/sock");
        assert_eq!(u.query, [("socket".into(), "/path/sock".into())]);
        let u = parse("qemu+tcp://localhost/system");
        assert_eq!(
            (u.transport.as_deref(), u.host.as_deref()),
            (Some("tcp"), Some("localhost"))
        );
        assert_eq!(
            parse("qemu://host-a/system").host.as_deref(),
            Some("host-a")
        );
        assert_eq!(parse("test:///default").driver, "test");
        assert_eq!(parse("qemu:///session").path, "/session");
        let u = parse("qemu+ssh://root@[fd00::2]:2222/system?mode=direct&no_tty=1");
        assert_eq!(u.user.as_deref(), Some("root"));
        assert_eq!(u.host.as_deref(), Some("[fd00::2]"));
        assert_eq!(u.port, Some(2222));
        assert_eq!(
            u.query,
            [
                ("mode".into(), "direct".into()),
                ("no_tty".into(), "1".into())
            ]
        );
        assert_eq!(parse("qemu:///system?socket=/run/x").query.len(), 1);
    }

    #[test]
    fn dangerous_queries_are_refused() {
        for (uri, key) in [
            ("qemu+ssh://node-b/system?command=/bin/sh", "command"),
            ("qemu+ssh://node-b/system?netcat=x", "netcat"),
            ("qemu+ssh://node-b/system?keyfile=/root/.ssh/id", "keyfile"),
            ("qemu+ssh://node-b/system?no_verify=1", "no_verify"),
            ("qemu:///system?COMMAND=x", "COMMAND"),
            ("qemu:///system?mode=auto&name=qemu:///session", "name"),
        ] {
            let e = refused(uri);
            assert!(
                matches!(&e, UriError::Key { key: k, .. } if k == key),
                "{uri}: {e}"
            );
            assert!(e.to_string().contains(&format!("'{key}'")), "{e}");
        }
        assert_eq!(
            refused("qemu+ssh://node-b/system?command=/bin/sh").to_string(),
            "query key 'command' is not allowed (libvirt runs it as a program); \
             allowed: socket, mode, no_tty"
        );
        for uri in [
            "qemu+ssh://node-b/system?socket=/x",
            "qemu+libssh2://node-b/system?socket=/x",
            "qemu://node-b/system?socket=/x",
        ] {
            assert_eq!(refused(uri), UriError::RemoteSocket, "{uri}");
        }
        assert_eq!(
            refused("qemu+ext:///system?command=/bin/true"),
            UriError::Ext
        );
        assert_eq!(
            refused("qemu+unix:///system?socket=/a;command=/b"),
            UriError::Semicolon
        );
        assert_eq!(
            refused("qemu:///system?socket=/a%26command=/b"),
            UriError::Percent
        );
        assert_eq!(
            refused("qemu:///system?mode=auto&mode=direct"),
            UriError::Twice("mode".into())
        );
        for uri in [
            "qemu:///system?mode=x",
            "qemu:///system?no_tty=yes",
            "qemu:///system?socket=run/x",
            "qemu:///system?socket=/run/$(x)",
        ] {
            assert!(matches!(refused(uri), UriError::Value { .. }), "{uri}");
        }
    }

    #[test]
    fn malformed_uris_are_refused() {
        assert_eq!(refused("qemu:///system#frag"), UriError::Fragment);
        assert_eq!(refused("qemu:///sys tem"), UriError::Char(' '));
        assert_eq!(refused("qemu:///system\n"), UriError::Char('\n'));
        assert_eq!(refused("no uri"), UriError::Char(' '));
        assert_eq!(refused("qemu:system"), UriError::Form);
        assert_eq!(refused("qemu://node-b"), UriError::Form);
        assert_eq!(refused("Qemu:///system"), UriError::Driver("Qemu".into()));
        assert_eq!(
            refused("qemu+rsh:///system"),
            UriError::Transport("rsh".into())
        );
        assert_eq!(refused("qemu:///sys:tem"), UriError::Path(':'));
        for port in ["", "0", "+22", "65536", "x"] {
            let uri = format!("qemu+tcp://node-b:{port}/system");
            assert_eq!(refused(&uri), UriError::Port(port.into()), "{uri}");
        }
        assert_eq!(
            text(&refused("qemu+ssh://node-b;rm/system")),
            "host \"node-b;rm\": contains ';'"
        );
        assert_eq!(
            text(&refused("qemu+ssh://Root@node-b/system")),
            "user \"Root\": contains 'R'"
        );
    }

    #[test]
    fn hosts() {
        for ok in [
            "node-b",
            "Node-B.example.com",
            "10.251.11.2",
            "a",
            "[fd00::2]",
            "[::1]",
            &format!("{}.b", "a".repeat(63)),
        ] {
            assert_eq!(check_host(ok), Ok(()), "{ok}");
        }
        // A shell's, a URI's or ssh's own characters, and `_` (not in a
        // DNS host name), wherever they stand.
        for (bad, c) in [
            ("node-b;rm", ';'),
            ("node b", ' '),
            ("node-b?x", '?'),
            ("root@node-b", '@'),
            ("node_b", '_'),
            ("node/b", '/'),
            ("node:b", ':'),
        ] {
            assert_eq!(check_host(bad), Err(HostError::Char(c)), "{bad:?}");
        }
        let long = vec!["a".repeat(63); 4].join(".");
        for (bad, why) in [
            ("-node", HostError::Hyphen),
            ("node-", HostError::Hyphen),
            ("a..b", HostError::EmptyLabel),
            (".a", HostError::EmptyLabel),
            ("node-b.", HostError::TrailingDot),
            ("", HostError::Empty),
            (&"a".repeat(64), HostError::LongLabel),
            (&long, HostError::TooLong),
            ("[fe80::1%eth0]", HostError::Zone),
            ("fd00::2", HostError::BareIpv6),
            ("[fd00::2", HostError::BadIpv6),
            ("[node-b]", HostError::BadIpv6),
        ] {
            assert_eq!(check_host(bad), Err(why), "{bad:?}");
        }
        assert_eq!(HostError::Char('?').to_string(), "contains '?'");
        assert_eq!(HostError::LongLabel.to_string(), "label longer than 63");
    }

    #[test]
    fn users() {
        for ok in ["root", "_x", "migr-1", &"a".repeat(32)] {
            assert_eq!(check_user(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("Root", UserError::Char('R')),
            ("root@x", UserError::Char('@')),
            ("a:b", UserError::Char(':')),
            ("-oProxyCommand", UserError::Char('P')),
            ("-x", UserError::Start('-')),
            ("1x", UserError::Start('1')),
            ("", UserError::Empty),
            (&"a".repeat(33), UserError::TooLong),
        ] {
            assert_eq!(check_user(bad), Err(why), "{bad:?}");
        }
    }

    #[test]
    fn peer_uris() {
        // (the local URI, transport, user, peer host, ssh) -> the peer's URI
        let ssh = Some("/run/vmshift/vmshift-ssh");
        #[rustfmt::skip]
        let cases = [
            ("qemu:///system", "ssh", Some("root"), "node-b", None, "qemu+ssh://root@node-b/system"),
            ("qemu:///system", "tcp", Some("root"), "node-b", ssh, "qemu+tcp://node-b/system"),
            ("qemu+unix:///system", "tls", None, "node-b", ssh, "qemu+tls://node-b/system"),
            ("qemu://host-a:16514/system", "tcp", None, "node-b", None, "qemu+tcp://node-b/system"),
            ("qemu+unix:///system?socket=/run/x", "ssh", None, "node-b", None, "qemu+ssh://node-b/system"),
            ("qemu+unix:///system?socket=/run/x", "ssh", None, "node-b", ssh,
                "qemu+ssh://node-b/system?command=/run/vmshift/vmshift-ssh"),
            ("qemu:///system", "ssh", Some("root"), "[fd00::2]", ssh,
                "qemu+ssh://root@[fd00::2]/system?command=/run/vmshift/vmshift-ssh"),
            ("test:///default", "tls", None, "10.0.0.2", None, "test+tls://10.0.0.2/default"),
        ];
        for (local, transport, user, host, ssh, want) in cases {
            let uri = peer_uri(&parse(local), transport, user, host, ssh);
            assert_eq!(uri, want, "{local}");
            assert_eq!(shown(&uri), want.split('?').next().unwrap());
        }
        assert_eq!(
            shown("qemu:///system?socket=/x"),
            "qemu:///system?socket=/x"
        );
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "unchecked host")]
    fn peer_uri_wants_a_checked_host() {
        peer_uri(
            &parse("qemu:///system"),
            "ssh",
            None,
            "node-b/x?command=y",
            None,
        );
    }
}
