//! meta-data: the embedded document, byte for byte.

use crate::error::Error;
use crate::ocf::{OcfRc, Outcome, METADATA};

/// meta-data: the embedded document, byte for byte, and nothing else on
/// stdout. It reads no parameter and touches no libvirt (ocf-tester runs
/// it as `nobody`). A closed stdout is not an error worth a non-zero code.
pub fn meta_data() -> Result<Outcome, Error> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out
        .write_all(METADATA.as_bytes())
        .and_then(|()| out.flush());
    Ok(Outcome::new(OcfRc::Success, "meta-data printed"))
}
