//! A call that may block for good, run on a worker thread and waited for
//! only until an instant: a libvirtd that is SIGSTOPped or stuck accepts
//! the socket connection and then never answers, getaddrinfo waits for as
//! long as the resolver likes, and a stat or read of a path on a hung
//! network filesystem (or of a /proc file of a process in D state) never
//! returns. The worker may block; the action does not. Every such call of
//! the agent goes through here.

use std::sync::mpsc;
use std::time::Instant;

/// Why a worker's call gave no answer.
#[derive(Debug)]
pub(crate) enum Unanswered {
    /// No thread could be started.
    NoThread(std::io::Error),
    /// The answer did not come by the instant given; the worker is left to
    /// end on its own.
    Late,
}

/// `f`'s answer if it comes by `until`.
pub(crate) fn on_worker<T: Send + 'static>(
    name: &str,
    until: Instant,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Unanswered> {
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            // The receiver is gone once `until` has passed.
            let _ = tx.send(f());
        })
        .map_err(Unanswered::NoThread)?;
    rx.recv_timeout(until.saturating_duration_since(Instant::now()))
        .map_err(|_| Unanswered::Late)
}
