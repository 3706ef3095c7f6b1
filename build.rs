//! Link settings for the agent binary.

use std::path::PathBuf;

fn main() {
    // src/libvirt/load.rs defines libvirt's functions as trampolines. The
    // linker exports a binary's symbols that a shared library on its link
    // line refers to, and libvirt.so.0 is on it (virt-sys asks for it):
    // exported, the trampolines would interpose on libvirt's calls to its
    // own API once it is loaded. Nothing in the binary is meant for export.
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let script = out.join("export-nothing.map");
    std::fs::write(&script, "{ local: *; };\n").expect("OUT_DIR is writable");
    println!(
        "cargo:rustc-link-arg-bins=-Wl,--version-script={}",
        script.display()
    );
    println!("cargo:rerun-if-changed=build.rs");
}
