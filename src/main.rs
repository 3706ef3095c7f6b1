//! The `vmshift` binary: Pacemaker runs it as
//! `/usr/lib/ocf/resource.d/vmshift/server <action>`. All logic lives in the
//! library; this only turns its answer into the process exit code.

use std::process::ExitCode;

fn main() -> ExitCode {
    vmshift::install_panic_hook();
    let env = vmshift::ocf::Env::from_process();
    ExitCode::from(vmshift::main_with(std::env::args_os().collect(), env))
}
