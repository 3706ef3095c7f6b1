//! Writes the vmshift(8) man page to stdout. It is generated from the same
//! clap command as `--help` and from the parameters in `ocf-metadata.xml`,
//! so the three cannot drift apart. Packaging runs
//! `cargo run --example mangen > vmshift.8`.

use std::io::Write;

use clap_mangen::roff::{bold, italic, roman, Roff};
use clap_mangen::Man;

fn main() -> std::io::Result<()> {
    let cmd = vmshift::cli::command();
    let man = Man::new(cmd)
        .section("8")
        .manual("System Administration")
        .source(format!("vmshift {}", env!("CARGO_PKG_VERSION")));
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;

    let mut actions = Roff::new();
    actions.control("SH", ["ACTIONS"]);
    for a in vmshift::actions::Action::ALL {
        actions
            .control("TP", [])
            .text([bold(a.name())])
            .text([roman(vmshift::cli::about(a))]);
    }
    actions.to_writer(&mut out)?;

    let mut params = Roff::new();
    params.control("SH", ["PARAMETERS"]).text([roman(
        "Pacemaker passes each parameter as OCF_RESKEY_<name>; by hand, the same \
         parameter is the flag --<name> (underscores or dashes).",
    )]);
    for p in vmshift::ocf::param_docs() {
        let default = p
            .default
            .map_or(String::new(), |d| format!(", default {d}"));
        params
            .control("TP", [])
            .text([
                bold(p.name),
                roman(" ("),
                italic(p.content_type),
                roman(format!("{default})")),
            ])
            .text([roman(
                p.longdesc.split_whitespace().collect::<Vec<_>>().join(" "),
            )]);
    }
    params.to_writer(&mut out)?;

    let mut codes = Roff::new();
    codes.control("SH", ["EXIT STATUS"]);
    for (code, what) in vmshift::cli::EXIT_CODES {
        codes
            .control("TP", [])
            .text([bold(code.to_string())])
            .text([roman(what)]);
    }
    codes
        .control("PP", [])
        .text([roman(vmshift::cli::EXIT_REASON_NOTE)]);
    codes.control("SH", ["EXAMPLES"]);
    for e in vmshift::cli::EXAMPLES {
        codes.control("PP", []).text([bold(e)]);
    }
    codes.to_writer(&mut out)?;
    man.render_version_section(&mut out)?;
    let mut see = Roff::new();
    see.control("SH", ["SEE ALSO"]).text([roman(
        "crm_resource(8), ocf-tester(8), virsh(1), pcs(8), crm(8)",
    )]);
    see.to_writer(&mut out)?;
    std::io::stdout().lock().write_all(&out)
}
