//! Stopping on request: a flag every long loop checks, and the wake-up calls
//! that unblock whatever is waiting.
//!
//! `Shutdown` is owned by the caller of `Server::run` or `Agency::run`: the
//! binaries trigger it from SIGTERM/SIGINT (`on_signal`), tests trigger it
//! directly. Setting a flag alone would not unblock a thread in a blocking call
//! (an `accept`, a read), so whoever blocks registers a waker with `on_trigger`,
//! and `trigger` runs them all: it is not a socket timeout's job.

use crate::app::locks::lock;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

type Waker = Box<dyn Fn() + Send + Sync>;

/// A shared "stop now" request. Clones share it.
#[derive(Clone, Default)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    requested: AtomicBool,
    wakers: Mutex<Vec<Waker>>,
}

impl Shutdown {
    /// A request not yet made.
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Requests the stop and runs every waker; returns whether this call was
    /// the one that made the request.
    pub fn trigger(&self) -> bool {
        let first = !self.inner.requested.swap(true, Ordering::SeqCst);
        if first {
            for wake in lock(&self.inner.wakers).iter() {
                wake();
            }
        }
        first
    }

    /// Whether the stop has been requested.
    pub fn is_triggered(&self) -> bool {
        self.inner.requested.load(Ordering::SeqCst)
    }

    /// Registers `wake`, run when the stop is requested (at once if it already
    /// was). It must not block, and must be harmless if it runs twice.
    pub(crate) fn on_trigger(&self, wake: impl Fn() + Send + Sync + 'static) {
        let mut wakers = lock(&self.inner.wakers);
        // Checked under the lock: `trigger` runs the wakers under it too, so a
        // waker is never both missed and not run.
        if self.is_triggered() {
            wake();
        }
        wakers.push(Box::new(wake));
    }
}

/// Listens for SIGTERM and SIGINT in a thread of its own and calls `on_first`
/// with the signal's name the first time either arrives. Close the returned
/// handle, then join the thread.
pub fn on_signal(
    on_first: impl FnOnce(&'static str) + Send + 'static,
) -> io::Result<(Handle, JoinHandle<()>)> {
    let mut signals = Signals::new([SIGTERM, SIGINT])?;
    let handle = signals.handle();
    let thread = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut on_first = Some(on_first);
            for signal in signals.forever() {
                let name = if signal == SIGINT {
                    "SIGINT"
                } else {
                    "SIGTERM"
                };
                if let Some(callback) = on_first.take() {
                    callback(name);
                }
            }
        })?;
    Ok((handle, thread))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn only_the_first_trigger_reports_the_request_and_wakers_run_once() {
        let shutdown = Shutdown::new();
        let woken = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&woken);
        shutdown.on_trigger(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        assert!(!shutdown.is_triggered());
        let clone = shutdown.clone();
        assert!(clone.trigger());
        assert!(!shutdown.trigger());
        assert!(shutdown.is_triggered());
        assert_eq!(woken.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_waker_registered_after_the_request_runs_at_once() {
        let shutdown = Shutdown::new();
        shutdown.trigger();
        let woken = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&woken);
        shutdown.on_trigger(move || flag.store(true, Ordering::SeqCst));
        assert!(woken.load(Ordering::SeqCst));
    }
}
