//! A call that may block for good, run on a worker thread and waited for
//! only until an instant: a libvirtd that is SIGSTOPped or stuck accepts
//! the socket connection and then never answers, and a /proc read of a
//! process in D state never returns. The worker may block; the action
//! does not. Every blocking call of this backend goes through here.

use std::sync::mpsc;
use std::time::Instant;

/// `f`'s answer if it comes by `until`; None if it does not (or no thread
/// could be started, which the caller reports the same way: no answer).
pub fn on_worker<T: Send + 'static>(
    name: &str,
    until: Instant,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            // The receiver is gone once `until` has passed.
            let _ = tx.send(f());
        })
        .ok()?;
    rx.recv_timeout(until.saturating_duration_since(Instant::now()))
        .ok()
}
