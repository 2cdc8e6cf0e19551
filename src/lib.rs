//! A national-lottery bet collection system.
//!
//! N agencies stream their bets to a central server over a binary TCP protocol.
//! The server stores every batch durably (on disk before it is acknowledged),
//! holds the draw once every agency has said it finished, and answers each
//! agency with the documents (DNI) of its own winners.
//!
//! Data flows one way: bytes → [`protocol`] (messages) → domain ([`bet`],
//! [`lottery`]) → [`storage`] (the bets file). No module reaches back up:
//! `storage` knows nothing of sockets, `protocol` nothing of files.
//!
//! | module | owns |
//! |---|---|
//! | [`protocol`] | message ids, layouts, error codes, pure encode/decode |
//! | [`connection`] | a socket with bounded buffers, short-read loops, the idle deadline |
//! | [`bet`] | a bet and its validation rules, calendar dates, agency CSV rows |
//! | [`storage`] | the bets file: `store_bets` (append + group-commit fsync), `load_bets`, `has_won`; its row format in `storage/rows.rs` |
//! | [`lottery`] | shared state behind `Arc<Mutex<..>>` + `Condvar`: finishes, the draw barrier |
//! | [`server`] | accept loop, connection limit, per-connection handler, orderly stop |
//! | [`agency_file`] | an agency's CSV file: plain rows split in place, quoted ones through `csv` |
//! | [`client`] | one agency: CSV rows → batches → BETS; FINISH; GET_WINNERS with retries |
//! | [`config`] | settings from environment variables; errors name the variable |
//! | [`shutdown`] | SIGTERM/SIGINT → a flag and a wake-up call |
//! | [`logging`] | the `action: NAME \| result: ...` log line format |

pub mod agency_file;
pub mod bet;
pub mod client;
pub mod config;
pub mod connection;
pub mod logging;
pub mod lottery;
pub mod protocol;
pub mod server;
pub mod shutdown;
pub mod storage;
