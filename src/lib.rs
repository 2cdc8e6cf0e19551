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
//! | `transport`, `tls` | the stream (TCP with a read deadline, or rustls over it); the PEM settings |
//! | `connection`, `buffer` | whole messages over a bounded buffer, the idle deadline; the one read buffer |
//! | `protocol`, `digest` | message ids, layouts, error codes, pure encode/decode; SHA-256 digests and the seal |
//! | `server`, `limits`, `auth` | accept loop and orderly stop; slots, shares and log rates; tokens and loopback-only |
//! | `handler` | one connection: the session rules, the requests, the outbox that keeps answers in order |
//! | `bet`, `calendar`, `text`, `fastpath` | a bet's rules and `ValidBet`; dates; names and log escaping; the name fast path |
//! | `storage`, `verify` | the round's files: appends with group commit, per-agency numbering and digests, recovery, FINISH records; the read-only audit |
//! | `draw`, `lottery` | the winners, read in two halves; the shared state and the draw barrier |
//! | `agency_file`, `batching`, `retry`, `client` | the agency: its CSV in bounded memory, batches and acks, pauses, the run |
//! | `config`, `shutdown`, `logging`, `locks` | settings; the stop request and signals; the log line; poison-tolerant locks |
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
