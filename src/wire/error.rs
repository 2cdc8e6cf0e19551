//! What can go wrong with bytes on the wire: `ProtocolError` (why bytes are not
//! a message) and `ErrorCode` (what an ERROR reply says), with the one mapping
//! from the first to the second.

use super::limits::PROTOCOL_VERSION;
use std::fmt;

/// The error codes of an ERROR reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    Malformed = 1,
    TooLarge = 2,
    UnknownMessage = 3,
    InvalidBet = 4,
    UnknownAgency = 5,
    AgencyFinished = 6,
    Storage = 7,
    Busy = 8,
    ShuttingDown = 9,
    Unauthorized = 10,
    OutOfOrder = 11,
    CountMismatch = 12,
    DigestMismatch = 13,
    UnsupportedVersion = 14,
}

impl ErrorCode {
    const ALL: [ErrorCode; 14] = [
        ErrorCode::Malformed,
        ErrorCode::TooLarge,
        ErrorCode::UnknownMessage,
        ErrorCode::InvalidBet,
        ErrorCode::UnknownAgency,
        ErrorCode::AgencyFinished,
        ErrorCode::Storage,
        ErrorCode::Busy,
        ErrorCode::ShuttingDown,
        ErrorCode::Unauthorized,
        ErrorCode::OutOfOrder,
        ErrorCode::CountMismatch,
        ErrorCode::DigestMismatch,
        ErrorCode::UnsupportedVersion,
    ];

    /// The code as sent on the wire.
    pub fn as_u16(self) -> u16 {
        self as u16
    }

    /// The code for a wire value, if it is one of ours.
    pub fn from_u16(value: u16) -> Option<ErrorCode> {
        Self::ALL.into_iter().find(|code| code.as_u16() == value)
    }

    /// The protocol's name for the code, as logs show it.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::Malformed => "MALFORMED",
            ErrorCode::TooLarge => "TOO_LARGE",
            ErrorCode::UnknownMessage => "UNKNOWN_MESSAGE",
            ErrorCode::InvalidBet => "INVALID_BET",
            ErrorCode::UnknownAgency => "UNKNOWN_AGENCY",
            ErrorCode::AgencyFinished => "AGENCY_FINISHED",
            ErrorCode::Storage => "STORAGE",
            ErrorCode::Busy => "BUSY",
            ErrorCode::ShuttingDown => "SHUTTING_DOWN",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::OutOfOrder => "OUT_OF_ORDER",
            ErrorCode::CountMismatch => "COUNT_MISMATCH",
            ErrorCode::DigestMismatch => "DIGEST_MISMATCH",
            ErrorCode::UnsupportedVersion => "UNSUPPORTED_VERSION",
        }
    }

    /// Whether the server closes the connection after sending this error: the
    /// stream can no longer be trusted to be in step, or the server will not
    /// serve this peer.
    pub fn closes_connection(self) -> bool {
        matches!(
            self,
            ErrorCode::Malformed
                | ErrorCode::TooLarge
                | ErrorCode::UnknownMessage
                | ErrorCode::UnknownAgency
                | ErrorCode::Busy
                | ErrorCode::ShuttingDown
                | ErrorCode::Unauthorized
                | ErrorCode::UnsupportedVersion
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.as_u16())
    }
}

/// Why bytes could not be decoded into a message, or a message not encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProtocolError {
    /// The message would be `len` bytes, over its limit of `limit`.
    TooLarge { len: usize, limit: usize },
    /// The first two bytes are not a message id this side understands.
    UnknownMessage { id: u16 },
    /// The lengths do not add up, a string is not UTF-8, a count is 0...
    Malformed(String),
    /// A HELLO of another protocol version than `PROTOCOL_VERSION`.
    UnsupportedVersion { version: u16 },
}

impl ProtocolError {
    /// The ERROR code that answers this error on the wire.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProtocolError::TooLarge { .. } => ErrorCode::TooLarge,
            ProtocolError::UnknownMessage { .. } => ErrorCode::UnknownMessage,
            ProtocolError::Malformed(_) => ErrorCode::Malformed,
            ProtocolError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::TooLarge { len, limit } => write!(
                f,
                "message of {len} bytes is over the limit of {limit} bytes"
            ),
            ProtocolError::UnknownMessage { id } => write!(f, "unknown message id 0x{id:04X}"),
            ProtocolError::Malformed(reason) => write!(f, "malformed message: {reason}"),
            // A version-2 HELLO starts with its agency's high half, almost always 0.
            ProtocolError::UnsupportedVersion { version: 0 } => write!(
                f,
                "HELLO of protocol version 0, but this server speaks version \
                 {PROTOCOL_VERSION}; it may be a version-2 client (whose HELLO has no version): \
                 update the agency client"
            ),
            ProtocolError::UnsupportedVersion { version } => write!(
                f,
                "HELLO of protocol version {version}, but this server speaks version \
                 {PROTOCOL_VERSION}; update the agency client"
            ),
        }
    }
}

impl std::error::Error for ProtocolError {}

pub(super) fn malformed(reason: impl Into<String>) -> ProtocolError {
    ProtocolError::Malformed(reason.into())
}
