//! A national-lottery bet collection system (TP0, exercise 7 of the distributed
//! systems course).
//!
//! N agencies stream their bets to a central server over a binary TCP protocol.
//! The server stores every batch durably (on disk before it is acknowledged),
//! holds the draw once every agency has said it finished, and answers each
//! agency with the documents (DNI) of its own winners.
//!
//! Data flows one way: bytes → `wire` (messages) → domain (`bet`, the server's
//! lottery) → `storage` (the round's files). The folders are the floor plan,
//! and this table is the one map of it (the README and docs/design.md point here):
//!
//! | folder | owns |
//! |---|---|
//! | `wire/` | the protocol: ids and limits, `ErrorCode`, requests, replies, field codecs, digests and the seal (pure, no I/O) |
//! | `net/` | the read buffer, the stream (plain TCP or TLS, one constructor), TLS settings, `Connection` (whole messages, deadlines) |
//! | `bet/` | a bet's rules and `ValidBet`, the winning number; names (the plain rule and its fast path); dates |
//! | `server/` | bind, run, stop; the listener; the handler loop and its outbox; one file per request kind; the refusals table; limits; tokens; the lottery state and barrier; the draw; `--verify` |
//! | `storage/` | `BetStore`: the file, the ledger and the group commit; rows; the reader; FINISH records; recovery; the audit |
//! | `client/` | `Agency::run` and `ClientError`; the session (connect, HELLO, error mapping); the bets phase; the winners phase; the agency file; batching; retry |
//! | `app/` | the settings tables and start-up, the stop request and signals, the log line, poison-tolerant locks |
//! | `text.rs`, `files.rs` | shared by every side: escaping, cutting and digits of text from outside; what a file is and who may read it |
//!
//! `server/` and `client/` never import each other; both stand on `wire`, `net`,
//! `bet` and `app`, and the server on `storage`. No child module reaches back
//! into its folder's `mod.rs` for helpers.
//!
//! The public API is what the two binaries, the examples and the integration
//! tests use: `Server`, `Agency`, their configurations, `Shutdown` and the log
//! helpers.
#![forbid(unsafe_code)]

mod app;
mod bet;
mod client;
mod files;
mod net;
mod server;
mod storage;
mod text;
mod wire;

pub use app::client_settings::ClientConfig;
pub use app::logging::{init as init_logging, set_level as set_log_level, stamp_ms};
pub use app::server_settings::ServerConfig;
pub use app::settings::ConfigError;
pub use app::shutdown::{Shutdown, on_signal};
pub use app::startup::{Lookup, START_FAILED, start_up};
pub use bet::calendar::is_leap_year;
pub use client::{Agency, ClientError, Summary};
pub use net::tls::TlsError;
pub use server::auth::TokensError;
pub use server::verify::verify_round;
pub use server::{Server, ServerError};
pub use storage::StorageError;
pub use wire::ErrorCode;
