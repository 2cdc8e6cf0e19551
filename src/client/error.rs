//! Why an agency could not complete its run: `ClientError`, whose `Display`
//! says what happened and what to do, the exit status each error maps to, and
//! which errors are worth another connection.

use super::agency_file::AgencyFileError;
use crate::app::startup::START_FAILED;
use crate::net::connection::ConnectionError;
use crate::net::tls::TlsError;
use crate::text;
use crate::wire::digest::Digest;
use crate::wire::{ErrorCode, ProtocolError};
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Why TLS with the server failed.
#[derive(Debug)]
pub enum TlsFailure {
    /// The session could not be set up.
    Session(rustls::Error),
    /// The handshake or a record failed: a certificate that does not verify,
    /// or a server that does not speak TLS.
    Stream(io::Error),
    /// The server answered in TLS and this client speaks plain TCP.
    ServerSpeaksTls,
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsFailure::Session(e) => write!(f, "{e}"),
            TlsFailure::Stream(e) => write!(f, "{e}"),
            TlsFailure::ServerSpeaksTls => {
                write!(f, "the server answered in TLS, and CLI_TLS_CA is not set")
            }
        }
    }
}

/// Why the agency could not complete its run.
#[derive(Debug)]
pub enum ClientError {
    /// The agency file could not be opened.
    DataFile {
        path: PathBuf,
        source: AgencyFileError,
    },
    /// Reading the agency file failed part way.
    ReadingDataFile { path: PathBuf, source: io::Error },
    /// No connection to the server within the timeout.
    Connect {
        address: String,
        waited: Duration,
        source: io::Error,
    },
    /// The connection failed while `during`.
    Connection {
        during: &'static str,
        source: ConnectionError,
    },
    /// The server closed the connection while `during`.
    ServerClosed { during: &'static str },
    /// The server answered with an ERROR.
    Refused {
        during: &'static str,
        code: ErrorCode,
        detail: String,
    },
    /// The server answered with a message that does not fit the exchange.
    UnexpectedReply { during: &'static str, reply: String },
    /// A message of this client could not be encoded (a bet or a count over
    /// what the protocol can carry).
    Encoding {
        during: &'static str,
        source: ProtocolError,
    },
    /// The server holds another round for this agency than its file: `stored`
    /// bets (its WELCOME), where the file has `in_file` valid bets.
    OtherRound {
        agency: u32,
        stored: u64,
        in_file: u64,
        reason: String,
    },
    /// FINISH_ACK returned another digest than the agency's own.
    BadReceipt { ours: Digest, theirs: Digest },
    /// No progress (a WELCOME, an ack) within the timeout; `last` is the last error.
    NoProgress {
        waited: Duration,
        last: Box<ClientError>,
    },
    /// The draw did not happen within the timeout; `last` is the last error, if any.
    DrawTimeout {
        waited: Duration,
        last: Option<Box<ClientError>>,
    },
    /// The stop was requested before the winners arrived.
    Interrupted { acked: u64, read: u64 },
    /// The server's winners answer breaks the protocol's rules.
    BadWinners { reason: String },
    /// The TLS settings cannot be used (CLI_TLS_CA, CLI_TLS_SERVER_NAME).
    TlsSetup(TlsError),
    /// TLS with the server failed.
    Tls(TlsFailure),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Each group writes its own variants and answers `None` for the others.
        self.fmt_local(f)
            .or_else(|| self.fmt_exchange(f))
            .or_else(|| self.fmt_round(f))
            .unwrap_or(Ok(()))
    }
}

impl ClientError {
    /// What went wrong on this side: the file, the settings, reaching the server.
    fn fmt_local(&self, f: &mut fmt::Formatter<'_>) -> Option<fmt::Result> {
        Some(match self {
            ClientError::DataFile { path, source } => write!(
                f,
                "could not open the agency file {} (CLI_DATA_FILE): {source}; point CLI_DATA_FILE \
                 at the agency's CSV file",
                crate::text::shown(path)
            ),
            ClientError::ReadingDataFile { path, source } => write!(
                f,
                "reading the agency file {} failed: {source}",
                crate::text::shown(path)
            ),
            ClientError::Connect {
                address,
                waited,
                source,
            } => write!(
                f,
                "could not connect to the server at {address} within {} s: {source}; \
                 is the server running, and is CLI_SERVER_ADDRESS right?",
                waited.as_secs()
            ),
            ClientError::TlsSetup(e) => write!(f, "{e}"),
            ClientError::Tls(failure) => write!(
                f,
                "TLS with the server failed: {failure}; CLI_TLS_CA must be the CA of the server's \
                 certificate, CLI_TLS_SERVER_NAME a name it carries, and both sides must use TLS \
                 (the server with SERVER_TLS_CERT) or neither"
            ),
            ClientError::Interrupted { acked, read } => write!(
                f,
                "stopped before the winners arrived, with {acked} bets acknowledged of {read} read; \
                 run the client again to go on (nothing is sent twice)"
            ),
            _ => return None,
        })
    }

    /// What went wrong in the exchange with the server.
    fn fmt_exchange(&self, f: &mut fmt::Formatter<'_>) -> Option<fmt::Result> {
        Some(match self {
            ClientError::Connection { during, source } => {
                write!(f, "the connection failed while {during}: {source}")
            }
            ClientError::ServerClosed { during } => write!(
                f,
                "the server closed the connection while {during}; it may have stopped or crashed"
            ),
            ClientError::Refused {
                during,
                code,
                detail,
            } => write!(
                f,
                "the server refused while {during}: {code}: {}",
                text::escape(detail)
            ),
            ClientError::UnexpectedReply { during, reply } => {
                write!(f, "unexpected reply while {during}: {reply}")
            }
            ClientError::Encoding { during, source } => {
                write!(f, "could not encode a message while {during}: {source}")
            }
            ClientError::BadWinners { reason } => write!(
                f,
                "the server's answer with the winners is not valid ({reason}); it was refused"
            ),
            _ => return None,
        })
    }

    /// What went wrong with the round itself: another round, a receipt, time.
    fn fmt_round(&self, f: &mut fmt::Formatter<'_>) -> Option<fmt::Result> {
        Some(match self {
            ClientError::OtherRound {
                agency,
                stored,
                in_file,
                reason,
            } => write!(
                f,
                "the server holds a different round for agency {agency}: it has {stored} of its \
                 bets, the file {in_file} valid ones, and {reason}; use the data file this agency \
                 sent (CLI_DATA_FILE, CLI_ID), or start a new round on the server"
            ),
            ClientError::BadReceipt { ours, theirs } => write!(
                f,
                "the server acknowledged FINISH with digest {}, but this agency's bets have \
                 digest {}: the server did not record the bets this agency sent; no winners are \
                 reported",
                theirs.short(),
                ours.short()
            ),
            ClientError::NoProgress { waited, last } => write!(
                f,
                "no progress for {} s (CLI_TIMEOUT_S); the last error: {last}",
                waited.as_secs()
            ),
            ClientError::DrawTimeout { waited, last } => write!(
                f,
                "the draw did not happen within {} s (CLI_TIMEOUT_S); have all agencies finished?{}",
                waited.as_secs(),
                last.as_ref()
                    .map_or(String::new(), |last| format!(" The last error: {last}"))
            ),
            _ => return None,
        })
    }

    /// The process exit status for this error: 2 when the agency cannot even
    /// start (its file), 1 for anything that went wrong in the exchange. (A
    /// stop request is the binary's to map: it knows the signal.)
    pub fn exit_status(&self) -> u8 {
        match self {
            ClientError::DataFile { .. } | ClientError::TlsSetup(_) => START_FAILED,
            _ => 1,
        }
    }

    /// Whether this failure is worth another connection: the server may be
    /// restarting, busy, or the connection was lost; or it asks to resume from
    /// WELCOME. Nothing of what was stored is lost either way.
    pub(super) fn is_transient(&self) -> bool {
        match self {
            // A peer that does not speak the protocol will not learn it by a retry.
            ClientError::Connection {
                source: ConnectionError::Protocol(_),
                ..
            } => false,
            ClientError::Connect { .. }
            | ClientError::Connection { .. }
            | ClientError::ServerClosed { .. } => true,
            ClientError::Refused { code, .. } => matches!(
                code,
                ErrorCode::Busy
                    | ErrorCode::ShuttingDown
                    | ErrorCode::Storage
                    | ErrorCode::OutOfOrder
                    | ErrorCode::AgencyFinished
                    | ErrorCode::CountMismatch
            ),
            _ => false,
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::NoProgress { last, .. } => Some(last.as_ref()),
            ClientError::DrawTimeout { last, .. } => last
                .as_deref()
                .map(|e| e as &(dyn std::error::Error + 'static)),
            _ => None,
        }
    }
}
