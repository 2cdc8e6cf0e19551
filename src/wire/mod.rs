//! The wire protocol, version 3: every message as a Rust value, and its exact bytes.
//!
//! This module owns the message ids, the error codes, the size limits and the
//! pure encode/decode functions (`&[u8]` in, a message or a `ProtocolError` out).
//! It does no I/O: `connection` moves the bytes, and decoding never panics on any
//! input, whatever its length. Integers are big-endian; a `str16` is a u16 byte
//! length followed by that many bytes of UTF-8.

pub(crate) mod digest;

#[cfg(test)]
use crate::bet::Bet;
use crate::bet::BetRef;
use crate::text::truncate_utf8;
use crate::wire::digest::{DIGEST_LEN, Digest};
use std::fmt;

/// No message may be longer than this, id and lengths included (WINNERS and
/// WINNERS_PART excepted: they are bounded by their u16 length).
pub(crate) const MAX_MESSAGE_LEN: usize = 8192;
/// BETS header: id (2) · agency (4) · first (4) · count (2) · body_len (2).
pub(crate) const BETS_HEADER_LEN: usize = 14;
/// The protocol version this code speaks, as HELLO carries it.
pub(crate) const PROTOCOL_VERSION: u16 = 3;
/// HELLO header: id (2) · version (2) · agency (4) · token length (2).
const HELLO_HEADER_LEN: usize = 10;
/// Longest HELLO token.
pub(crate) const MAX_TOKEN_LEN: usize = 255;
/// Largest BETS body that keeps the message within `MAX_MESSAGE_LEN`.
pub(crate) const MAX_BETS_BODY_LEN: usize = MAX_MESSAGE_LEN - BETS_HEADER_LEN;
/// Largest WINNERS / WINNERS_PART payload.
pub(crate) const MAX_WINNERS_PAYLOAD_LEN: usize = u16::MAX as usize;
/// Largest reply on the wire: a WINNERS with a full payload.
pub(crate) const MAX_REPLY_LEN: usize = 4 + MAX_WINNERS_PAYLOAD_LEN;
/// ERROR details are cut to this many bytes (on a character boundary).
pub(crate) const MAX_ERROR_DETAIL_LEN: usize = 1024;
/// Smallest encoded bet: four empty str16 and the number.
const MIN_ENCODED_BET_LEN: usize = 4 * 2 + 2;
/// GET_WINNERS: id (2) · agency (4).
const GET_WINNERS_LEN: usize = 6;
/// FINISH: id (2) · agency (4) · total (4) · digest (32).
const FINISH_LEN: usize = 10 + DIGEST_LEN;
/// WELCOME: id (2) · stored (4) · status (1) · digest (32).
const WELCOME_LEN: usize = 7 + DIGEST_LEN;
/// FINISH_ACK: id (2) · agency (4) · digest (32).
const FINISH_ACK_LEN: usize = 6 + DIGEST_LEN;

/// Message ids, as they appear in the first two bytes of every message.
pub(crate) mod id {
    pub(crate) const BETS: u16 = 0x0001;
    pub(crate) const BETS_ACK: u16 = 0x0002;
    pub(crate) const FINISH: u16 = 0x0003;
    pub(crate) const FINISH_ACK: u16 = 0x0004;
    pub(crate) const GET_WINNERS: u16 = 0x0005;
    pub(crate) const NO_WINNERS: u16 = 0x0006;
    pub(crate) const WINNERS: u16 = 0x0007;
    pub(crate) const WINNERS_PART: u16 = 0x0008;
    pub(crate) const HELLO: u16 = 0x0009;
    pub(crate) const WELCOME: u16 = 0x000A;
    pub(crate) const ERROR: u16 = 0x00FF;
}

/// A message from an agency to the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Request {
    /// Opens a session for `agency`: the first message of every connection.
    Hello {
        version: u16,
        agency: u32,
        token: Vec<u8>,
    },
    /// A batch of bets numbered from `first`, stored all or nothing.
    Bets {
        agency: u32,
        first: u32,
        batch: BetBatch,
    },
    /// The agency has sent all its bets: `total` of them, whose digest is `digest`.
    Finish {
        agency: u32,
        total: u32,
        digest: Digest,
    },
    /// The agency asks for its winners.
    GetWinners { agency: u32 },
}

/// The bets of a BETS message, kept as their encoded body (one allocation per
/// batch, none per bet). Only the decoder and `BetBatch::new` make one, so the
/// body always holds exactly `count` well-formed bets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BetBatch {
    count: u16,
    body: Vec<u8>,
}

impl BetBatch {
    /// Encodes `bets` into a batch; an error if they do not fit one message.
    #[cfg(test)]
    pub fn new(bets: &[Bet]) -> Result<BetBatch, ProtocolError> {
        let count = u16::try_from(bets.len())
            .map_err(|_| malformed(format!("{} bets do not fit a u16 count", bets.len())))?;
        let mut body = Vec::new();
        for bet in bets {
            encode_bet(bet.as_ref(), &mut body)?;
        }
        Ok(BetBatch { count, body })
    }

    /// How many bets the batch holds.
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    /// The batch's wire encoding: its bets, each as the digest hashes it.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The bets, borrowed from the body.
    pub fn bets(&self) -> impl Iterator<Item = BetRef<'_>> {
        let mut fields = Fields::new(&self.body);
        // The body was checked when the batch was made (its text is UTF-8), so
        // no read fails; were one to, the bets would end there rather than panic.
        (0..self.count).map_while(move |_| read_bet(&mut fields, false).ok())
    }
}

/// A message from the server to an agency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    /// Answers HELLO: the agency's bets on disk, their digest, and where its
    /// round stands.
    Welcome {
        stored: u32,
        status: AgencyStatus,
        digest: Digest,
    },
    /// The batch of `count` bets is on disk.
    BetsAck { count: u16 },
    /// The agency's FINISH is recorded; `digest` is its receipt.
    FinishAck { agency: u32, digest: Digest },
    /// The draw has not happened yet: ask again later.
    NoWinners,
    /// The last (or only) part of the agency's winners: documents joined by `,`.
    Winners { documents: String },
    /// A part of a long winners list; more parts follow, then a `Winners`.
    WinnersPart { documents: String },
    /// The request was refused; `detail` is for a person.
    Error { code: ErrorCode, detail: String },
}

/// Where an agency's round stands, as WELCOME tells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AgencyStatus {
    /// The agency is still sending its bets.
    Sending = 0,
    /// Its FINISH is recorded; the draw has not happened.
    Finished = 1,
    /// The draw happened.
    Drawn = 2,
}

impl AgencyStatus {
    fn from_u8(value: u8) -> Option<AgencyStatus> {
        [
            AgencyStatus::Sending,
            AgencyStatus::Finished,
            AgencyStatus::Drawn,
        ]
        .into_iter()
        .find(|status| *status as u8 == value)
    }
}

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
pub(crate) enum ProtocolError {
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

fn malformed(reason: impl Into<String>) -> ProtocolError {
    ProtocolError::Malformed(reason.into())
}

/// A cursor over the bytes of one whole message. Running past the end is
/// `Malformed`, because the caller has already checked that the message is complete.
struct Fields<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Fields<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Fields { bytes, pos: 0 }
    }

    fn take(&mut self, len: usize, what: &str) -> Result<&'a [u8], ProtocolError> {
        match self.bytes.get(self.pos..self.pos.saturating_add(len)) {
            Some(slice) => {
                self.pos += len;
                Ok(slice)
            }
            None => Err(self.short(len, what)),
        }
    }

    #[cold]
    fn short(&self, len: usize, what: &str) -> ProtocolError {
        malformed(format!(
            "{what} needs {len} bytes but only {} remain",
            self.bytes.len() - self.pos
        ))
    }

    fn u16(&mut self, what: &str) -> Result<u16, ProtocolError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &str) -> Result<u32, ProtocolError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A str16 field's bytes; with `check_text`, they must be UTF-8.
    fn text16(&mut self, what: &str, check_text: bool) -> Result<&'a [u8], ProtocolError> {
        let len = usize::from(self.u16(what)?);
        let bytes = self.take(len, what)?;
        if check_text && std::str::from_utf8(bytes).is_err() {
            return Err(malformed(format!("{what} is not valid UTF-8")));
        }
        Ok(bytes)
    }

    fn str16(&mut self, what: &str) -> Result<&'a str, ProtocolError> {
        let bytes = self.text16(what, false)?;
        std::str::from_utf8(bytes).map_err(|_| malformed(format!("{what} is not valid UTF-8")))
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn digest(&mut self, what: &str) -> Result<Digest, ProtocolError> {
        let mut out = [0u8; DIGEST_LEN];
        out.copy_from_slice(self.take(DIGEST_LEN, what)?);
        Ok(Digest(out))
    }
}

fn peek_u16(buf: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*buf.get(at)?, *buf.get(at + 1)?]))
}

fn peek_u32(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

/// What a decoder returns: `Ok(None)` while more bytes are needed, else the
/// message and how many bytes it used.
pub(crate) type Decoded<T> = Result<Option<(T, usize)>, ProtocolError>;

/// Length of the request at the start of `buf`, as soon as its header tells it:
/// `Ok(None)` while the header is incomplete; an error as soon as the id or the
/// declared size is wrong, so an oversized message is refused before its body is
/// read. Size is judged first, then the header's other fields.
pub(crate) fn request_len(buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
    let Some(message_id) = peek_u16(buf, 0) else {
        return Ok(None);
    };
    match message_id {
        id::HELLO => {
            let Some(token_len) = peek_u16(buf, 8) else {
                return Ok(None);
            };
            let len = within_limit(HELLO_HEADER_LEN + usize::from(token_len))?;
            if usize::from(token_len) > MAX_TOKEN_LEN {
                return Err(malformed(format!(
                    "a HELLO token of {token_len} bytes is over the limit of {MAX_TOKEN_LEN}"
                )));
            }
            Ok(Some(len))
        }
        id::BETS => {
            let (Some(count), Some(body_len)) = (peek_u16(buf, 10), peek_u16(buf, 12)) else {
                return Ok(None);
            };
            let len = within_limit(BETS_HEADER_LEN + usize::from(body_len))?;
            if count == 0 {
                return Err(malformed("BETS with count 0"));
            }
            let first = peek_u32(buf, 6).unwrap_or(0);
            if first.checked_add(u32::from(count)).is_none() {
                return Err(malformed(format!(
                    "BETS numbered from {first} with {count} bets runs past the last bet number"
                )));
            }
            Ok(Some(len))
        }
        id::FINISH => Ok(Some(FINISH_LEN)),
        id::GET_WINNERS => Ok(Some(GET_WINNERS_LEN)),
        other => Err(ProtocolError::UnknownMessage { id: other }),
    }
}

fn within_limit(len: usize) -> Result<usize, ProtocolError> {
    if len > MAX_MESSAGE_LEN {
        return Err(ProtocolError::TooLarge {
            len,
            limit: MAX_MESSAGE_LEN,
        });
    }
    Ok(len)
}

/// On a connection without a HELLO yet: a HELLO of another version is refused
/// as soon as its version's two bytes are in, before any other check of it
/// (an old client's HELLO has another layout, so nothing else of it can be read).
pub(crate) fn check_hello_version(buf: &[u8]) -> Result<(), ProtocolError> {
    match (peek_u16(buf, 0), peek_u16(buf, 2)) {
        (Some(id::HELLO), Some(version)) if version != PROTOCOL_VERSION => {
            Err(ProtocolError::UnsupportedVersion { version })
        }
        _ => Ok(()),
    }
}

/// Decodes the first request of a connection (see `check_hello_version`).
pub(crate) fn decode_first_request(buf: &[u8]) -> Decoded<Request> {
    check_hello_version(buf)?;
    decode_request(buf)
}

/// Decodes the request at the start of `buf`: `Ok(None)` if more bytes are
/// needed, else the request and how many bytes it used.
pub(crate) fn decode_request(buf: &[u8]) -> Decoded<Request> {
    let Some(len) = request_len(buf)? else {
        return Ok(None);
    };
    if buf.len() < len {
        return Ok(None);
    }
    let mut fields = Fields::new(&buf[..len]);
    let message_id = fields.u16("message id")?;
    if message_id == id::HELLO {
        let version = fields.u16("version")?;
        let agency = fields.u32("agency")?;
        let token = fields.str16("token")?.as_bytes().to_vec();
        let hello = Request::Hello {
            version,
            agency,
            token,
        };
        return Ok(Some((hello, len)));
    }
    let agency = fields.u32("agency")?;
    let request = match message_id {
        id::BETS => {
            let first = fields.u32("first")?;
            let count = fields.u16("count")?;
            let _body_len = fields.u16("body_len")?;
            Request::Bets {
                agency,
                first,
                batch: decode_bets(&mut fields, count)?,
            }
        }
        id::FINISH => Request::Finish {
            agency,
            total: fields.u32("total")?,
            digest: fields.digest("digest")?,
        },
        _ => Request::GetWinners { agency },
    };
    Ok(Some((request, len)))
}

fn decode_bets(body: &mut Fields<'_>, count: u16) -> Result<BetBatch, ProtocolError> {
    let start = body.pos;
    let bets = usize::from(count);
    if bets * MIN_ENCODED_BET_LEN > body.remaining() {
        return Err(malformed(format!(
            "count {bets} bets cannot fit in a body of {} bytes",
            body.remaining()
        )));
    }
    for _ in 0..bets {
        read_bet(body, true)?;
    }
    if body.remaining() != 0 {
        return Err(malformed(format!(
            "{} trailing bytes after {bets} bets",
            body.remaining()
        )));
    }
    Ok(BetBatch {
        count,
        body: body.bytes[start..].to_vec(),
    })
}

/// Reads one bet; `check_text` (UTF-8) is off only for a `BetBatch`'s own body,
/// which was checked when the batch was decoded.
fn read_bet<'a>(body: &mut Fields<'a>, check_text: bool) -> Result<BetRef<'a>, ProtocolError> {
    Ok(BetRef {
        first_name: body.text16("first_name", check_text)?,
        last_name: body.text16("last_name", check_text)?,
        document: body.text16("document", check_text)?,
        birthdate: body.text16("birthdate", check_text)?,
        number: body.u16("number")?,
    })
}

fn put_str16(out: &mut Vec<u8>, text: &[u8], what: &str) -> Result<(), ProtocolError> {
    let len = u16::try_from(text.len()).map_err(|_| {
        malformed(format!(
            "{what} of {} bytes does not fit a str16",
            text.len()
        ))
    })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(text);
    Ok(())
}

/// Appends one bet's wire form to a BETS body.
pub(crate) fn encode_bet(bet: BetRef<'_>, body: &mut Vec<u8>) -> Result<(), ProtocolError> {
    put_str16(body, bet.first_name, "first_name")?;
    put_str16(body, bet.last_name, "last_name")?;
    put_str16(body, bet.document, "document")?;
    put_str16(body, bet.birthdate, "birthdate")?;
    body.extend_from_slice(&bet.number.to_be_bytes());
    Ok(())
}

/// Wraps an already encoded body of `count` bets, numbered from `first`, into
/// a whole BETS message.
pub(crate) fn encode_bets_message(
    agency: u32,
    first: u32,
    count: u16,
    body: &[u8],
) -> Result<Vec<u8>, ProtocolError> {
    let len = within_limit(BETS_HEADER_LEN + body.len())?;
    let body_len = u16::try_from(body.len()).map_err(|_| malformed("body too long"))?;
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&id::BETS.to_be_bytes());
    out.extend_from_slice(&agency.to_be_bytes());
    out.extend_from_slice(&first.to_be_bytes());
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(&body_len.to_be_bytes());
    out.extend_from_slice(body);
    Ok(out)
}

impl Request {
    /// The agency the request speaks for.
    pub fn agency(&self) -> u32 {
        match self {
            Request::Hello { agency, .. }
            | Request::Bets { agency, .. }
            | Request::Finish { agency, .. }
            | Request::GetWinners { agency } => *agency,
        }
    }

    /// The request's bytes; an error if it breaks a size limit.
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        let mut out = Vec::with_capacity(16);
        match self {
            Request::Hello {
                version,
                agency,
                token,
            } => {
                if token.len() > MAX_TOKEN_LEN {
                    return Err(ProtocolError::TooLarge {
                        len: token.len(),
                        limit: MAX_TOKEN_LEN,
                    });
                }
                out.extend_from_slice(&id::HELLO.to_be_bytes());
                out.extend_from_slice(&version.to_be_bytes());
                out.extend_from_slice(&agency.to_be_bytes());
                put_str16(&mut out, token, "token")?;
            }
            Request::Bets {
                agency,
                first,
                batch,
            } => return encode_bets_message(*agency, *first, batch.count, &batch.body),
            Request::Finish {
                agency,
                total,
                digest,
            } => {
                out.extend_from_slice(&id::FINISH.to_be_bytes());
                out.extend_from_slice(&agency.to_be_bytes());
                out.extend_from_slice(&total.to_be_bytes());
                out.extend_from_slice(&digest.0);
            }
            Request::GetWinners { agency } => {
                out.extend_from_slice(&id::GET_WINNERS.to_be_bytes());
                out.extend_from_slice(&agency.to_be_bytes());
            }
        }
        Ok(out)
    }
}

impl Reply {
    /// An ERROR reply, its detail cut to `MAX_ERROR_DETAIL_LEN` bytes.
    pub fn error(code: ErrorCode, detail: &str) -> Reply {
        Reply::Error {
            code,
            detail: truncate_utf8(detail, MAX_ERROR_DETAIL_LEN).to_string(),
        }
    }

    /// The reply's bytes; an error if a payload or detail is over its limit.
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        let mut out = Vec::with_capacity(WELCOME_LEN);
        let fixed: Vec<u8>;
        let (message_id, rest): (u16, &[u8]) = match self {
            Reply::Welcome {
                stored,
                status,
                digest,
            } => {
                fixed = [&stored.to_be_bytes()[..], &[*status as u8], &digest.0].concat();
                (id::WELCOME, &fixed)
            }
            Reply::BetsAck { count } => (id::BETS_ACK, &count.to_be_bytes()),
            Reply::FinishAck { agency, digest } => {
                fixed = [&agency.to_be_bytes()[..], &digest.0].concat();
                (id::FINISH_ACK, &fixed)
            }
            Reply::NoWinners => (id::NO_WINNERS, &[]),
            Reply::Winners { documents } => (id::WINNERS, documents.as_bytes()),
            Reply::WinnersPart { documents } => (id::WINNERS_PART, documents.as_bytes()),
            Reply::Error { code, detail } => {
                if detail.len() > MAX_ERROR_DETAIL_LEN {
                    return Err(ProtocolError::TooLarge {
                        len: detail.len(),
                        limit: MAX_ERROR_DETAIL_LEN,
                    });
                }
                out.extend_from_slice(&id::ERROR.to_be_bytes());
                out.extend_from_slice(&code.as_u16().to_be_bytes());
                put_str16(&mut out, detail.as_bytes(), "detail")?;
                return Ok(out);
            }
        };
        out.extend_from_slice(&message_id.to_be_bytes());
        if matches!(self, Reply::Winners { .. } | Reply::WinnersPart { .. }) {
            let len = u16::try_from(rest.len()).map_err(|_| ProtocolError::TooLarge {
                len: rest.len(),
                limit: MAX_WINNERS_PAYLOAD_LEN,
            })?;
            out.extend_from_slice(&len.to_be_bytes());
        }
        out.extend_from_slice(rest);
        Ok(out)
    }
}

/// Decodes the reply at the start of `buf`: `Ok(None)` if more bytes are needed,
/// else the reply and how many bytes it used.
pub(crate) fn decode_reply(buf: &[u8]) -> Decoded<Reply> {
    let Some(message_id) = peek_u16(buf, 0) else {
        return Ok(None);
    };
    let len = match message_id {
        id::WELCOME => WELCOME_LEN,
        id::BETS_ACK => 4,
        id::FINISH_ACK => FINISH_ACK_LEN,
        id::NO_WINNERS => 2,
        id::WINNERS | id::WINNERS_PART => match peek_u16(buf, 2) {
            Some(payload_len) => 4 + usize::from(payload_len),
            None => return Ok(None),
        },
        id::ERROR => match peek_u16(buf, 4) {
            Some(detail_len) if usize::from(detail_len) > MAX_ERROR_DETAIL_LEN => {
                return Err(ProtocolError::TooLarge {
                    len: usize::from(detail_len),
                    limit: MAX_ERROR_DETAIL_LEN,
                });
            }
            Some(detail_len) => 6 + usize::from(detail_len),
            None => return Ok(None),
        },
        other => return Err(ProtocolError::UnknownMessage { id: other }),
    };
    if buf.len() < len {
        return Ok(None);
    }
    let mut fields = Fields::new(&buf[..len]);
    fields.u16("message id")?;
    let reply = match message_id {
        id::WELCOME => {
            let stored = fields.u32("stored")?;
            let raw = fields.take(1, "status")?[0];
            let status = AgencyStatus::from_u8(raw)
                .ok_or_else(|| malformed(format!("unknown agency status {raw}")))?;
            Reply::Welcome {
                stored,
                status,
                digest: fields.digest("digest")?,
            }
        }
        id::BETS_ACK => Reply::BetsAck {
            count: fields.u16("count")?,
        },
        id::FINISH_ACK => Reply::FinishAck {
            agency: fields.u32("agency")?,
            digest: fields.digest("digest")?,
        },
        id::NO_WINNERS => Reply::NoWinners,
        id::WINNERS => Reply::Winners {
            documents: fields.str16("winners payload")?.to_string(),
        },
        id::WINNERS_PART => Reply::WinnersPart {
            documents: fields.str16("winners payload")?.to_string(),
        },
        _ => {
            let raw = fields.u16("error code")?;
            let code = ErrorCode::from_u16(raw)
                .ok_or_else(|| malformed(format!("unknown error code {raw}")))?;
            Reply::Error {
                code,
                detail: fields.str16("detail")?.to_string(),
            }
        }
    };
    Ok(Some((reply, len)))
}

/// The replies that carry an agency's winners, given as one comma-separated
/// list: one WINNERS when it fits in `MAX_WINNERS_PAYLOAD_LEN` bytes, else
/// WINNERS_PART messages of whole documents (cut at a comma, which is dropped)
/// and a final, non-empty WINNERS.
pub(crate) fn winners_replies(documents: &str) -> Vec<Reply> {
    let mut replies = Vec::new();
    let mut rest = documents;
    while rest.len() > MAX_WINNERS_PAYLOAD_LEN {
        // The last comma that keeps the part within the limit. Documents are at
        // most ten digits, so there is one; were there none, the whole first
        // document would go out and its encoding would report it too large.
        let bytes = rest.as_bytes();
        let cut = bytes[..=MAX_WINNERS_PAYLOAD_LEN]
            .iter()
            .rposition(|&b| b == b',')
            .or_else(|| bytes.iter().position(|&b| b == b','))
            .unwrap_or(rest.len());
        replies.push(Reply::WinnersPart {
            documents: rest[..cut].to_string(),
        });
        rest = rest.get(cut + 1..).unwrap_or_default();
    }
    replies.push(Reply::Winners {
        documents: rest.to_string(),
    });
    replies
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bet(first: &str, number: u16) -> Bet {
        Bet {
            first_name: first.into(),
            last_name: "Pérez".into(),
            document: "12345678".into(),
            birthdate: "1990-05-17".into(),
            number,
        }
    }

    /// A seeded xorshift generator: repeatable random tests without a dependency.
    fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        }
    }

    /// A random test input: every other round one of `seeds`, else up to
    /// `max_random` random bytes; then up to three bytes overwritten.
    fn mutated(
        next: &mut impl FnMut() -> u64,
        seeds: &[Vec<u8>],
        round: usize,
        max_random: u64,
    ) -> Vec<u8> {
        let mut bytes = if round.is_multiple_of(2) {
            seeds[(next() % seeds.len() as u64) as usize].clone()
        } else {
            (0..(next() % max_random)).map(|_| next() as u8).collect()
        };
        for _ in 0..(next() % 4) {
            if bytes.is_empty() {
                break;
            }
            let at = (next() % bytes.len() as u64) as usize;
            bytes[at] = next() as u8;
        }
        bytes
    }

    fn every_request() -> Vec<Request> {
        vec![
            Request::Hello {
                version: PROTOCOL_VERSION,
                agency: 2,
                token: b"a-token-of-agency-2".to_vec(),
            },
            Request::Hello {
                version: PROTOCOL_VERSION,
                agency: 7,
                token: Vec::new(),
            },
            Request::Bets {
                agency: 3,
                first: 1_000_000,
                batch: BetBatch::new(&[bet("Ana", 7574), bet("José Ñ", 0)]).unwrap(),
            },
            Request::Finish {
                agency: 1,
                total: 78_697,
                digest: Digest([7; 32]),
            },
            Request::GetWinners {
                agency: 0xDEAD_BEEF,
            },
        ]
    }

    fn every_reply() -> Vec<Reply> {
        vec![
            Reply::Welcome {
                stored: 4_000_000_000,
                status: AgencyStatus::Sending,
                digest: Digest([1; 32]),
            },
            Reply::Welcome {
                stored: 0,
                status: AgencyStatus::Drawn,
                digest: Digest::of_nothing(),
            },
            Reply::BetsAck { count: 150 },
            Reply::FinishAck {
                agency: 5,
                digest: Digest([9; 32]),
            },
            Reply::NoWinners,
            Reply::Winners {
                documents: "30904465,21689196".into(),
            },
            Reply::Winners {
                documents: String::new(),
            },
            Reply::WinnersPart {
                documents: "1,2".into(),
            },
            Reply::error(ErrorCode::InvalidBet, "bet at index 0: number 10000"),
        ]
    }

    #[test]
    fn a_decoded_batch_lends_back_exactly_its_bets() {
        let bets = vec![
            bet("Ana", 7574),
            bet("José Ñandú", 0),
            bet("O'Neil, \"x\"", 9999),
        ];
        let bytes = Request::Bets {
            agency: 9,
            first: 5,
            batch: BetBatch::new(&bets).unwrap(),
        }
        .encode()
        .unwrap();
        let Ok(Some((
            Request::Bets {
                agency,
                first,
                batch,
            },
            used,
        ))) = decode_request(&bytes)
        else {
            panic!("a BETS message did not decode");
        };
        assert_eq!((agency, first, used, batch.len()), (9, 5, bytes.len(), 3));
        let lent: Vec<BetRef> = batch.bets().collect();
        assert_eq!(lent, bets.iter().map(Bet::as_ref).collect::<Vec<_>>());
        assert_eq!(BetBatch::new(&[]).unwrap().len(), 0);
    }

    #[test]
    fn requests_have_the_exact_documented_bytes() {
        let digest = Digest([0xAB; 32]);
        let mut finish = vec![0, 3, 0, 0, 0, 2, 1, 2, 3, 4];
        finish.extend_from_slice(&[0xAB; 32]);
        assert_eq!(
            Request::Finish {
                agency: 2,
                total: 0x0102_0304,
                digest,
            }
            .encode()
            .unwrap(),
            finish
        );
        assert_eq!(
            Request::Hello {
                version: 3,
                agency: 1,
                token: b"tok".to_vec()
            }
            .encode()
            .unwrap(),
            [0, 9, 0, 3, 0, 0, 0, 1, 0, 3, b't', b'o', b'k']
        );
        assert_eq!(
            Request::GetWinners { agency: 258 }.encode().unwrap(),
            [0, 5, 0, 0, 1, 2]
        );
        let one = Bet {
            first_name: "A".into(),
            last_name: "B".into(),
            document: "1".into(),
            birthdate: "2000-01-01".into(),
            number: 0x1D96,
        };
        let bytes = Request::Bets {
            agency: 1,
            first: 256,
            batch: BetBatch::new(&[one]).unwrap(),
        }
        .encode()
        .unwrap();
        let mut expected = vec![0, 1, 0, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 23];
        expected.extend_from_slice(&[0, 1, b'A', 0, 1, b'B', 0, 1, b'1', 0, 10]);
        expected.extend_from_slice(b"2000-01-01");
        expected.extend_from_slice(&[0x1D, 0x96]);
        assert_eq!(bytes, expected);
    }

    #[test]
    fn replies_have_the_exact_documented_bytes() {
        let enc = |r: Reply| r.encode().unwrap();
        assert_eq!(enc(Reply::BetsAck { count: 258 }), [0, 2, 1, 2]);
        let digest = Digest([0xCD; 32]);
        let mut welcome = vec![0, 0x0A, 0, 0, 1, 2, 1];
        welcome.extend_from_slice(&[0xCD; 32]);
        assert_eq!(
            enc(Reply::Welcome {
                stored: 258,
                status: AgencyStatus::Finished,
                digest,
            }),
            welcome
        );
        let mut finish_ack = vec![0, 4, 0, 0, 0, 7];
        finish_ack.extend_from_slice(&[0xCD; 32]);
        assert_eq!(enc(Reply::FinishAck { agency: 7, digest }), finish_ack);
        assert_eq!(enc(Reply::NoWinners), [0, 6]);
        assert_eq!(
            enc(Reply::Winners {
                documents: "1,22".into()
            }),
            [0, 7, 0, 4, b'1', b',', b'2', b'2']
        );
        assert_eq!(
            enc(Reply::error(ErrorCode::Busy, "no")),
            [0, 0xFF, 0, 8, 0, 2, b'n', b'o']
        );
    }

    #[test]
    fn every_request_round_trips() {
        for request in every_request() {
            let bytes = request.encode().unwrap();
            assert_eq!(
                decode_request(&bytes).unwrap(),
                Some((request.clone(), bytes.len()))
            );
        }
    }

    #[test]
    fn every_reply_round_trips() {
        for reply in every_reply() {
            let bytes = reply.encode().unwrap();
            assert_eq!(
                decode_reply(&bytes).unwrap(),
                Some((reply.clone(), bytes.len()))
            );
        }
    }

    #[test]
    fn every_truncated_prefix_is_incomplete_or_an_error_never_a_panic() {
        for request in every_request() {
            let bytes = request.encode().unwrap();
            for cut in 0..bytes.len() {
                assert_eq!(
                    decode_request(&bytes[..cut]),
                    Ok(None),
                    "{request:?} cut {cut}"
                );
            }
        }
        for reply in every_reply() {
            let bytes = reply.encode().unwrap();
            for cut in 0..bytes.len() {
                assert_eq!(decode_reply(&bytes[..cut]), Ok(None), "{reply:?} cut {cut}");
            }
        }
    }

    #[test]
    fn a_body_cut_short_inside_its_declared_length_is_malformed() {
        // Keep the header's body_len but lie about a string length inside.
        let mut bytes = Request::Bets {
            agency: 1,
            first: 0,
            batch: BetBatch::new(&[bet("Ana", 1)]).unwrap(),
        }
        .encode()
        .unwrap();
        bytes[15] = 200; // first_name length far past the body
        assert!(matches!(
            decode_request(&bytes),
            Err(ProtocolError::Malformed(_))
        ));
    }

    #[test]
    fn size_is_checked_from_the_header_before_the_body_arrives() {
        let header = [0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0x1F, 0xF3]; // body_len 8179
        assert_eq!(
            decode_request(&header),
            Err(ProtocolError::TooLarge {
                len: 8193,
                limit: 8192
            })
        );
        let at_limit = [0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0x1F, 0xF2]; // body_len 8178
        assert_eq!(decode_request(&at_limit), Ok(None));
        // Size comes before the count: a too large BETS of count 0 is TOO_LARGE.
        let both = [0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF];
        assert!(matches!(
            decode_request(&both),
            Err(ProtocolError::TooLarge { .. })
        ));
    }

    #[test]
    fn count_zero_trailing_bytes_bad_utf8_and_unknown_ids_are_refused() {
        let count_zero = [0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(matches!(
            decode_request(&count_zero),
            Err(ProtocolError::Malformed(_))
        ));

        let mut trailing = Request::Bets {
            agency: 1,
            first: 0,
            batch: BetBatch::new(&[bet("Ana", 1)]).unwrap(),
        }
        .encode()
        .unwrap();
        trailing.push(0);
        trailing[13] += 1;
        assert!(matches!(
            decode_request(&trailing),
            Err(ProtocolError::Malformed(_))
        ));

        let mut bad_utf8 = Request::Bets {
            agency: 1,
            first: 0,
            batch: BetBatch::new(&[bet("Ana", 1)]).unwrap(),
        }
        .encode()
        .unwrap();
        bad_utf8[16] = 0xFF;
        assert!(matches!(
            decode_request(&bad_utf8),
            Err(ProtocolError::Malformed(_))
        ));

        assert_eq!(
            decode_request(&[0, 0x0B]),
            Err(ProtocolError::UnknownMessage { id: 0x0B })
        );
        // A batch whose numbers would run past u32::MAX.
        let past_the_end = [0, 1, 0, 0, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF, 0, 1, 0, 10];
        assert!(matches!(
            decode_request(&past_the_end),
            Err(ProtocolError::Malformed(_))
        ));
        // A token over 255 bytes, from the header alone.
        assert!(matches!(
            decode_request(&[0, 9, 0, 3, 0, 0, 0, 1, 1, 0]),
            Err(ProtocolError::Malformed(_))
        ));
        // A token that is not UTF-8.
        assert!(matches!(
            decode_request(&[0, 9, 0, 3, 0, 0, 0, 1, 0, 1, 0xFF]),
            Err(ProtocolError::Malformed(_))
        ));
        assert_eq!(
            decode_request(&[0, 2, 0, 0]),
            Err(ProtocolError::UnknownMessage { id: 2 })
        );
    }

    #[test]
    fn a_first_hello_of_another_version_is_refused_from_its_first_four_bytes() {
        // A version-2 HELLO: its agency's high half reads as version 0.
        assert_eq!(
            decode_first_request(&[0, 9, 0, 0]),
            Err(ProtocolError::UnsupportedVersion { version: 0 })
        );
        assert_eq!(
            decode_first_request(&[0, 9, 0, 2, 0xFF]),
            Err(ProtocolError::UnsupportedVersion { version: 2 })
        );
        // Before the version is in, nothing is decided; version 3 goes on.
        assert_eq!(decode_first_request(&[0, 9, 0]), Ok(None));
        assert_eq!(decode_first_request(&[0, 9, 0, 3, 0, 0]), Ok(None));
        // The version comes before size: a huge token of version 4 is still a version error.
        assert_eq!(
            decode_first_request(&[0, 9, 0, 4, 0, 0, 0, 1, 0xFF, 0xFF]),
            Err(ProtocolError::UnsupportedVersion { version: 4 })
        );
        let v0 = ProtocolError::UnsupportedVersion { version: 0 }.to_string();
        assert!(
            v0.contains("version 0") && v0.contains("version-2 client"),
            "{v0}"
        );
        assert!(v0.contains("version 3") && v0.contains("update the agency client"));
        // Later in a connection a HELLO is judged by the session rules, not here.
        assert!(matches!(
            decode_request(&[0, 9, 0, 2, 0, 0, 0, 1, 0, 0]),
            Ok(Some((Request::Hello { version: 2, .. }, 10)))
        ));
        assert_eq!(ErrorCode::from_u16(14), Some(ErrorCode::UnsupportedVersion));
        assert!(ErrorCode::UnsupportedVersion.closes_connection());
        assert!(!ErrorCode::DigestMismatch.closes_connection());
    }

    #[test]
    fn a_huge_count_in_a_small_body_is_refused_without_allocating_it() {
        let bytes = [
            0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0xFF, 0xFF, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        assert!(matches!(
            decode_request(&bytes),
            Err(ProtocolError::Malformed(_))
        ));
    }

    #[test]
    fn error_details_are_cut_on_a_character_boundary() {
        let long = "ñ".repeat(600); // 1200 bytes
        let Reply::Error { detail, .. } = Reply::error(ErrorCode::Storage, &long) else {
            panic!("Reply::error builds an Error");
        };
        assert_eq!(detail.len(), 1024);
        assert!(detail.chars().all(|c| c == 'ñ'));
    }

    #[test]
    fn short_winner_lists_are_one_message_and_long_ones_split_on_whole_documents() {
        assert_eq!(
            winners_replies(""),
            vec![Reply::Winners {
                documents: String::new()
            }]
        );
        let few: Vec<String> = vec!["1".into(), "22".into()];
        assert_eq!(
            winners_replies(&few.join(",")),
            vec![Reply::Winners {
                documents: "1,22".into()
            }]
        );

        // 10-digit documents: 5957 of them and their commas are 65,526 bytes, one
        // message; one more is 65,537 bytes, two.
        let docs: Vec<String> = (0..5957u64).map(|i| format!("{:010}", i)).collect();
        assert_eq!(winners_replies(&docs.join(",")).len(), 1);
        let docs: Vec<String> = (0..5958u64).map(|i| format!("{:010}", i)).collect();
        assert_eq!(winners_replies(&docs.join(",")).len(), 2);

        let docs: Vec<String> = (0..20_000u64).map(|i| format!("{:010}", i)).collect();
        let replies = winners_replies(&docs.join(","));
        assert!(replies.len() > 1);
        let mut joined = Vec::new();
        for (index, reply) in replies.iter().enumerate() {
            let (Reply::WinnersPart { documents } | Reply::Winners { documents }) = reply else {
                panic!("only winners replies are built");
            };
            assert_eq!(
                matches!(reply, Reply::Winners { .. }),
                index == replies.len() - 1
            );
            assert!(!documents.is_empty() && documents.len() <= MAX_WINNERS_PAYLOAD_LEN);
            assert!(!documents.starts_with(',') && !documents.ends_with(','));
            assert!(reply.encode().is_ok());
            joined.push(documents.clone());
        }
        assert_eq!(joined.join(","), docs.join(","));
    }

    #[test]
    fn a_stream_fed_in_random_chunks_never_holds_more_than_one_message_unparsed() {
        // Decode a long random stream the way a connection does: append a chunk,
        // take every whole message, stop at the first error. While a message is
        // incomplete, fewer than MAX_MESSAGE_LEN bytes of it are ever buffered.
        let mut next = xorshift(0x0123_4567_89AB_CDEF);
        let good: Vec<u8> = every_request()
            .iter()
            .flat_map(|r| r.encode().unwrap())
            .collect();
        for _ in 0..300 {
            let mut stream = good.repeat(1 + (next() % 20) as usize);
            for _ in 0..next() % 3 {
                let at = (next() % stream.len() as u64) as usize;
                stream[at] = next() as u8;
            }
            let mut buffer: Vec<u8> = Vec::new();
            let mut offset = 0;
            'feed: while offset < stream.len() {
                let chunk = (1 + next() % 700) as usize;
                let end = (offset + chunk).min(stream.len());
                buffer.extend_from_slice(&stream[offset..end]);
                offset = end;
                loop {
                    match decode_request(&buffer) {
                        Ok(Some((_, used))) => {
                            buffer.drain(..used);
                        }
                        Ok(None) => {
                            assert!(buffer.len() < MAX_MESSAGE_LEN);
                            break;
                        }
                        Err(_) => break 'feed,
                    }
                }
            }
        }
    }

    #[test]
    fn seeded_random_and_mutated_streams_never_panic() {
        let mut next = xorshift(0x9E37_79B9_7F4A_7C15);
        let seeds: Vec<Vec<u8>> = every_request()
            .iter()
            .map(|r| r.encode().unwrap())
            .collect();
        for round in 0..20_000 {
            let bytes = mutated(&mut next, &seeds, round, 64);
            if let Ok(Some((request, used))) = decode_request(&bytes) {
                assert!(used <= bytes.len() && used <= MAX_MESSAGE_LEN);
                // Whatever decodes must encode back to the bytes it came from.
                assert_eq!(request.encode().unwrap(), bytes[..used]);
            }
            let _ = decode_reply(&bytes);
        }
    }

    #[test]
    fn seeded_mutated_replies_never_panic_and_stay_within_their_bound() {
        let mut next = xorshift(0x0BAD_C0DE_DEAD_BEEF);
        let seeds: Vec<Vec<u8>> = every_reply().iter().map(|r| r.encode().unwrap()).collect();
        for round in 0..20_000 {
            let bytes = mutated(&mut next, &seeds, round, 80);
            if let Ok(Some((reply, used))) = decode_reply(&bytes) {
                assert!(used <= bytes.len() && used <= MAX_REPLY_LEN);
                assert_eq!(reply.encode().unwrap(), bytes[..used]);
            }
        }
    }
}
