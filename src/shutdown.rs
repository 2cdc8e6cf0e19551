//! Stopping on SIGTERM or SIGINT.
//!
//! `Shutdown` is a flag that every long loop checks. `on_signal` runs a callback
//! in a dedicated thread the first time SIGTERM or SIGINT arrives: the callback
//! sets the flag and wakes whatever is blocked (the accept loop, open sockets,
//! the draw waiters). Setting the flag alone would not unblock a thread in a
//! blocking call; that is the callback's job, not a socket timeout's.

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

/// A shared "stop now" flag.
#[derive(Clone, Default)]
pub struct Shutdown {
    requested: Arc<AtomicBool>,
}

impl Shutdown {
    /// A flag that is not set.
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Sets the flag; returns whether this call was the one that set it.
    pub fn trigger(&self) -> bool {
        !self.requested.swap(true, Ordering::SeqCst)
    }

    /// Whether shutdown has been requested.
    pub fn is_triggered(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }
}

/// Listens for SIGTERM and SIGINT; calls `on_first` with the signal's name the
/// first time either arrives. Close the returned handle, then join the thread.
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

    #[test]
    fn only_the_first_trigger_reports_setting_the_flag() {
        let shutdown = Shutdown::new();
        assert!(!shutdown.is_triggered());
        let clone = shutdown.clone();
        assert!(clone.trigger());
        assert!(!shutdown.trigger());
        assert!(shutdown.is_triggered());
    }
}
