//! Every way the server refuses a request of a session, in one table: its
//! ERROR code, its detail for the peer, and its log line. Storage and lottery
//! outcomes become refusals here and nowhere else.

use crate::bet::BetError;
use crate::storage::StorageError;
use crate::wire::ErrorCode;
use crate::wire::digest::Digest;
use log::{error, warn};
use std::net::SocketAddr;

/// Why a request was refused.
#[derive(Debug)]
pub(super) enum Refusal {
    /// HELLO names an agency outside 1..=`agencies`.
    UnknownAgency { agencies: u32 },
    /// HELLO with a token that is not the agency's (never logged).
    WrongToken,
    /// The agency already has `open` connections, as many as it may.
    AgencyBusy { open: usize },
    /// A message that breaks the session rules.
    Session { detail: String },
    /// A bet of a batch of `count` breaks a rule.
    InvalidBet {
        count: usize,
        index: usize,
        reason: BetError,
    },
    /// A batch of `count` that is not the agency's next one.
    OutOfOrder {
        count: usize,
        first: u32,
        expected: u64,
    },
    /// A batch of `count` after the agency's FINISH.
    AgencyFinished { count: usize },
    /// A batch of `count` the disk refused.
    BatchNotStored { count: usize, error: StorageError },
    /// FINISH whose total is not the agency's stored bets.
    CountMismatch { total: u32, stored: u64 },
    /// FINISH whose digest is not that of the agency's stored bets.
    DigestMismatch {
        total: u32,
        sent: Digest,
        stored: Digest,
    },
    /// FINISH the disk refused.
    FinishNotStored(StorageError),
    /// The draw could not read the stored bets.
    DrawFailed(String),
}

impl Refusal {
    /// The ERROR code that answers it.
    pub fn code(&self) -> ErrorCode {
        match self {
            Refusal::UnknownAgency { .. } => ErrorCode::UnknownAgency,
            Refusal::WrongToken | Refusal::Session { .. } => ErrorCode::Unauthorized,
            Refusal::AgencyBusy { .. } => ErrorCode::Busy,
            Refusal::InvalidBet { .. } => ErrorCode::InvalidBet,
            Refusal::OutOfOrder { .. } => ErrorCode::OutOfOrder,
            Refusal::AgencyFinished { .. } => ErrorCode::AgencyFinished,
            Refusal::CountMismatch { .. } => ErrorCode::CountMismatch,
            Refusal::DigestMismatch { .. } => ErrorCode::DigestMismatch,
            Refusal::BatchNotStored { .. }
            | Refusal::FinishNotStored(_)
            | Refusal::DrawFailed(_) => ErrorCode::Storage,
        }
    }

    /// Whether it counts against the peer: a disk that fails is the server's
    /// trouble, not a refusal of the peer.
    pub fn is_the_peers(&self) -> bool {
        self.code() != ErrorCode::Storage
    }

    /// The ERROR's detail, for a person: what happened and what to do.
    pub fn detail(&self, agency: u32) -> String {
        match self {
            Refusal::UnknownAgency { agencies } => {
                format!("agency {agency} is not taking part; agencies are numbered 1 to {agencies}")
            }
            Refusal::WrongToken => format!(
                "the token given for agency {agency} is not its token; set CLI_TOKEN to the \
                 agency's line of the server's SERVER_TOKENS_FILE"
            ),
            Refusal::AgencyBusy { open } => format!(
                "agency {agency} already has {open} connections open, as many as one agency may; \
                 close one, or retry later"
            ),
            Refusal::Session { detail } => detail.clone(),
            Refusal::InvalidBet { index, reason, .. } => {
                format!("bet at index {index} (counting from 0): {reason}")
            }
            Refusal::OutOfOrder { .. }
            | Refusal::AgencyFinished { .. }
            | Refusal::BatchNotStored { .. }
            | Refusal::CountMismatch { .. }
            | Refusal::DigestMismatch { .. }
            | Refusal::FinishNotStored(_)
            | Refusal::DrawFailed(_) => self.state_detail(agency),
        }
    }

    /// The detail of a refusal for the round's state or the disk.
    fn state_detail(&self, agency: u32) -> String {
        match self {
            Refusal::OutOfOrder {
                first, expected, ..
            } => format!(
                "this batch starts at bet {first}, but agency {agency} has {expected} bets \
                 stored; nothing of it was stored: resume from bet {expected} (a HELLO on a \
                 new connection says where)"
            ),
            Refusal::AgencyFinished { .. } => format!(
                "agency {agency} already sent FINISH; its bets are closed and this batch was not stored"
            ),
            Refusal::BatchNotStored { error, .. } => format!(
                "the batch was not stored: {error}; nothing of it was kept, send it again later"
            ),
            Refusal::CountMismatch { total, stored } => format!(
                "FINISH says agency {agency} sent {total} bets, but {stored} of its bets are \
                 stored; nothing was recorded: send the missing bets, or FINISH with {stored}"
            ),
            Refusal::DigestMismatch {
                total,
                sent,
                stored,
            } => format!(
                "FINISH of agency {agency} carries digest {}, but the {total} bets stored \
                 for it have digest {}: the agency's file is not what it sent; nothing was \
                 recorded",
                sent.short(),
                stored.short()
            ),
            Refusal::FinishNotStored(e) => {
                format!("the FINISH was not recorded: {e}; nothing was kept, send it again later")
            }
            Refusal::DrawFailed(reason) => format!(
                "the draw could not read the stored bets: {reason}; it is tried again, ask again later"
            ),
            Refusal::UnknownAgency { .. }
            | Refusal::WrongToken
            | Refusal::AgencyBusy { .. }
            | Refusal::Session { .. }
            | Refusal::InvalidBet { .. } => self.detail(agency),
        }
    }

    /// Whether the refusal is logged whatever the peer's share of the log: the
    /// server's own failures to record a FINISH or to draw.
    pub fn always_logged(&self) -> bool {
        matches!(self, Refusal::FinishNotStored(_) | Refusal::DrawFailed(_))
    }

    /// Logs the refusal. `note` is the log limiter's ending, `None` when this
    /// peer has had its share of the log for now (see `always_logged`).
    pub fn log(&self, peer: SocketAddr, agency: u32, note: Option<&str>) {
        let code = self.code().name();
        let detail = self.detail(agency);
        match self {
            Refusal::FinishNotStored(e) => {
                error!("action: agencia_finalizo | result: fail | agencia: {agency} | error: {e}")
            }
            Refusal::DrawFailed(reason) => error!(
                "action: ganadores_enviados | result: fail | agencia: {agency} | error: {reason}"
            ),
            _ => {
                if let Some(note) = note {
                    self.log_the_peers(peer, agency, code, &detail, note);
                }
            }
        }
    }

    /// The log line of a refusal that counts against the peer.
    fn log_the_peers(&self, peer: SocketAddr, agency: u32, code: &str, detail: &str, note: &str) {
        match self {
            Refusal::UnknownAgency { .. } => warn!(
                "action: agencia_desconocida | result: fail | peer: {peer} | agencia: {agency} | error: {detail}{note}"
            ),
            // The token is never logged, right or wrong.
            Refusal::WrongToken => warn!(
                "action: saludo | result: fail | peer: {peer} | agencia: {agency} | code: UNAUTHORIZED | error: a wrong or missing token{note}"
            ),
            Refusal::AgencyBusy { open } => warn!(
                "action: conexion_rechazada | result: fail | peer: {peer} | agencia: {agency} | error: BUSY | detail: the agency already has {open} connections open{note}"
            ),
            Refusal::Session { .. } => warn!(
                "action: sesion | result: fail | peer: {peer} | agencia: {agency} | code: UNAUTHORIZED | error: {detail}{note}"
            ),
            Refusal::InvalidBet { count, .. }
            | Refusal::OutOfOrder { count, .. }
            | Refusal::AgencyFinished { count }
            | Refusal::BatchNotStored { count, .. } => warn!(
                "action: apuesta_recibida | result: fail | cantidad: {count} | agencia: {agency} | peer: {peer} | code: {code} | error: {detail}{note}"
            ),
            _ => warn!(
                "action: agencia_finalizo | result: fail | agencia: {agency} | peer: {peer} | code: {code} | error: {detail}{note}"
            ),
        }
    }
}
