//! Property tests over the input layer: whatever Pacemaker or an admin puts
//! in `OCF_RESKEY_*` and on the command line (spaces, quotes, `;`, `$()`,
//! newlines, very long strings, bytes that are not UTF-8), the agent never
//! panics and always answers with a documented OCF code and a reason.
//! Actions that would reach libvirt are not run here; their parameter
//! checks are the same ones validate-all makes.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use proptest::prelude::*;
use vmshift::actions::{self, Action};
use vmshift::cli::{self, Request};
use vmshift::migration::network::{candidate, choose, Net};
use vmshift::ocf::{Budget, Env, MigrationPort, OcfRc, Params, Transport, PARAM_NAMES};
use vmshift::peer::peer_uri;
use vmshift::uri::check_host;

/// Values that have broken shell agents, and arbitrary bytes.
fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"vm1; rm -rf /".to_vec()),
        Just(b"$(reboot)".to_vec()),
        Just(b"`id`".to_vec()),
        Just(b"a\nb".to_vec()),
        Just(b"\"'\\".to_vec()),
        Just(vec![b'x'; 10_000]),
        Just(vec![0xff, 0xfe, b'a']),
        "[ -~]{0,40}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>().prop_filter("no NUL", |b| *b != 0), 0..64),
    ]
}

fn env() -> impl Strategy<Value = Env> {
    proptest::collection::vec(
        (proptest::sample::select(PARAM_NAMES.to_vec()), value()),
        0..8,
    )
    .prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(k, v)| (format!("OCF_RESKEY_{k}"), OsString::from_vec(v)))
            .collect()
    })
}

const DOCUMENTED: [OcfRc; 7] = [
    OcfRc::Success,
    OcfRc::ErrGeneric,
    OcfRc::ErrArgs,
    OcfRc::ErrUnimplemented,
    OcfRc::ErrInstalled,
    OcfRc::ErrConfigured,
    OcfRc::NotRunning,
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn validate_all_answers_with_a_documented_code(env in env()) {
        let out = actions::run(Action::ValidateAll, &env);
        prop_assert!(DOCUMENTED.contains(&out.rc));
        prop_assert!(out.rc == OcfRc::Success || !out.reason.is_empty());
        // validate-all and the other actions agree on what is valid.
        prop_assert_eq!(out.rc == OcfRc::Success || out.rc == OcfRc::ErrInstalled,
            Params::from_env(&env).is_ok());
    }

    #[test]
    fn any_command_line_parses_to_a_documented_answer(
        words in proptest::collection::vec(prop_oneof![
            proptest::sample::select(vec![
                "start", "stop", "monitor", "migrate_to", "meta-data", "validate-all",
                "plan-migration", "--name", "--migration-speed", "--help", "--target", "-x",
            ]).prop_map(String::from),
            "[ -~]{0,12}",
        ], 0..6),
    ) {
        let args: Vec<OsString> = std::iter::once("vmshift".to_owned())
            .chain(words)
            .map(OsString::from)
            .collect();
        match cli::parse(args, Env::default()) {
            Request::Run(action, _) => prop_assert!(Action::ALL.contains(&action)),
            Request::Print(text) => prop_assert!(!text.is_empty()),
            Request::Exit(o) => {
                prop_assert!([OcfRc::ErrArgs, OcfRc::ErrUnimplemented].contains(&o.rc));
                prop_assert!(!o.reason.is_empty());
            }
        }
    }

    #[test]
    fn peer_uris_carry_no_query_whatever_the_input(
        host in prop_oneof!["[ -~]{0,40}", "[a-z0-9.-]{1,30}"],
        suffix in "[ -~]{0,10}",
        local in prop_oneof![
            "[ -~]{0,40}",
            "qemu(\\+(unix|ssh|tcp|tls|ext))?://[a-z.@-]{0,10}/system(\\?[a-z_]{1,8}=[ -~]{0,10}){0,2}",
        ],
    ) {
        let c = candidate(&host, &suffix);
        prop_assert!(c.ends_with(&suffix));
        // Only what passes the checks is ever put together; what is put
        // together then names one host and runs nothing.
        let env: Env = [
            ("OCF_RESKEY_name", "vm1"),
            ("OCF_RESKEY_hypervisor", local.as_str()),
            ("OCF_RESKEY_migration_user", "root"),
        ]
        .into_iter()
        .collect();
        if let (Ok(p), Ok(())) = (Params::from_env(&env), check_host(&host)) {
            let u = peer_uri(&p, &host);
            prop_assert!(u.contains(&format!("+ssh://root@{host}/")), "{}", u);
            prop_assert!(!u.contains(['?', '#', '%', ';', ' ']), "{}", u);
        }
    }

    #[test]
    fn the_network_choice_never_panics(target in "[a-z0-9.-]{0,30}") {
        struct NoNet;
        impl Net for NoNet {
            fn resolve(&self, _: &str, _: std::time::Duration)
                -> Result<Vec<std::net::IpAddr>, vmshift::migration::network::Error> {
                Err(vmshift::migration::network::Error::NoAddress)
            }
            fn route(&self, _: std::net::IpAddr) -> Result<String, vmshift::migration::network::Error> {
                Ok("lo".into())
            }
            fn connect(&self, _: std::net::SocketAddr, _: std::time::Duration)
                -> Result<(), vmshift::migration::network::Error> {
                Ok(())
            }
        }
        let budget = Budget::new(std::time::Duration::from_secs(20));
        let choice = choose(&NoNet, &target, ".mn", Transport::Tcp, MigrationPort::Default, &budget);
        prop_assert!(choice.address.is_none());
        prop_assert!(choice.to_string().contains("falling back"));
    }
}
