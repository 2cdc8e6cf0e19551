//! Shared helpers of the integration tests: the server in-process on port 0, the
//! real binaries in temporary directories, agency data, and the wire protocol
//! spoken with hand-built bytes (as PROTOCOL.md lays them out, independent of
//! the crate's own codec).
#![allow(dead_code, unused_imports)] // each test file uses its own subset

mod data;
mod fake;
mod inprocess;
mod process;
mod proxy;
mod tls;
mod wire;

pub use data::*;
pub use fake::*;
pub use inprocess::*;
pub use process::*;
pub use proxy::*;
pub use tls::*;
pub use wire::*;

use std::time::{Duration, Instant};

/// How long a test waits for something that should happen at once before it
/// calls it a hang: generous, because it only guards against hanging forever.
pub const HANG: Duration = Duration::from_secs(60);

/// Waits until `found` returns something, checking every 10 ms, for at most `HANG`.
pub fn wait_until<T>(what: &str, mut found: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + HANG;
    loop {
        if let Some(value) = found() {
            return value;
        }
        assert!(Instant::now() < end, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}
