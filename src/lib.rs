//! A national-lottery bet collection system (TP0, exercise 7 of the distributed
//! systems course).
//!
//! N agencies stream their bets to a central server over a binary TCP protocol.
//! The server stores every batch durably (on disk before it is acknowledged),
//! holds the draw once every agency has said it finished, and answers each
//! agency with the documents (DNI) of its own winners.
//!
//! Data flows one way: bytes → `protocol` (messages) → domain (`bet`, `lottery`,
//! `draw`) → `storage` (the bets file). No module reaches back up: `storage`
//! knows nothing of sockets, `protocol` nothing of files.
//!
//! | module | owns |
//! |---|---|
//! | `protocol` | message ids, layouts, error codes, pure encode/decode |
//! | `connection` | a socket with bounded buffers, short-read loops, the idle deadline |
//! | `buffer` | the one compact-and-refill read buffer every reader uses |
//! | `bet` | a bet, its rules, and `ValidBet`, the only bet storage accepts |
//! | `calendar`, `text` | dates (the birthdate rule, log stamps); a name's characters |
//! | `storage` | the bets file: append + group-commit fsync, streaming reads; its row format in `storage/rows.rs` |
//! | `draw` | the winning rule and each agency's winners, read in two halves |
//! | `lottery` | shared state behind `Arc<Mutex<..>>` + `Condvar`: finishes, the draw barrier |
//! | `server`, `handler` | accept loop, connection limit, orderly stop; one handler per connection with its outbox |
//! | `agency_file` | an agency's CSV file, row by row, in bounded memory |
//! | `batching`, `retry`, `client` | the agency: bets → batches and their acks; pauses; the run |
//! | `config` | settings from environment variables; errors name the variable |
//! | `shutdown` | the stop request: a flag, wakers, and the signal thread |
//! | `logging`, `locks` | the log line format; poison-tolerant locking |
//!
//! The public API is what the two binaries, the examples and the integration
//! tests use: `Server`, `Agency`, their configurations, `Shutdown` and the log
//! helpers.
#![forbid(unsafe_code)]

mod agency_file;
mod auth;
mod batching;
mod bet;
mod buffer;
mod calendar;
mod client;
mod config;
mod connection;
mod draw;
mod fastpath;
mod handler;
mod limits;
mod locks;
mod logging;
mod lottery;
mod protocol;
mod retry;
mod server;
mod shutdown;
mod storage;
mod text;
mod tls;
mod transport;

pub use auth::TokensError;
pub use calendar::is_leap_year;
pub use client::{Agency, ClientError, Summary};
pub use config::{ClientConfig, CommandLine, ConfigError, Lookup, ServerConfig, process_env};
pub use logging::{init as init_logging, set_level as set_log_level, stamp_ms};
pub use protocol::ErrorCode;
pub use server::{Server, ServerError};
pub use shutdown::{Shutdown, on_signal};
pub use storage::StorageError;
pub use tls::TlsError;
