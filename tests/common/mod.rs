//! Shared helpers of the integration tests: the server in-process on port 0, the
//! real binaries in temporary directories, agency data, and the wire protocol
//! spoken with hand-built bytes (as PROTOCOL.md lays them out, independent of
//! the crate's own codec).
// Each test file is its own crate and uses its own subset of these helpers.
#![allow(dead_code, unused_imports)]

mod data;
mod fake;
mod inprocess;
mod process;
mod proxy;
mod tls;
mod wire;

pub use data::{
    agency_file, default_data_dir, expected_from_csv, official_data_dir, seeded, write_agency_files,
};
pub use fake::{Exchange, FakeServer, Received};
pub use inprocess::{TestServer, agency_config, run_agencies, run_agency};
pub use process::{
    CLIENT_BIN, SERVER_BIN, ServerProcess, assert_agencies_got, client_command, describe,
    exit_and_log, logged_winner_count, output_of, peak_memory_kib, run_clients, run_expecting,
    signal_pid, spawn_agency, thread_count, wait_child, wait_for_threads,
};
pub use proxy::{CuttingProxy, DelayProxy};
pub use tls::{Certificates, TlsStream, tls_connect};
pub use wire::{
    ANY_TOKEN, Digest, VERSION, Wire, assert_closed, batch_of, bet_bytes, bets_ack, bets_count,
    bets_message, code, connect, digest_of, error_reply, exchange, expect_error, fetch_winners,
    finish_ack, finish_message, finish_of, get_winners_message, good_bet, good_bets, hello_message,
    hello_of_version, hex, no_bets, read_winners, read_wire, session, welcome, winners,
    winners_part,
};

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
