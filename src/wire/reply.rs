//! The messages from the server to an agency: WELCOME, BETS_ACK, FINISH_ACK,
//! NO_WINNERS, WINNERS (in parts when long) and ERROR, their exact bytes both ways.

use super::digest::Digest;
use super::error::{ErrorCode, ProtocolError, malformed};
use super::fields::{Decoded, Fields, peek_u16, put_str16};
use super::limits::{
    FINISH_ACK_LEN, MAX_ERROR_DETAIL_LEN, MAX_WINNERS_PAYLOAD_LEN, WELCOME_LEN, id,
};
use crate::text::truncate_utf8;

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
    let Some(len) = reply_len(buf)? else {
        return Ok(None);
    };
    if buf.len() < len {
        return Ok(None);
    }
    let mut fields = Fields::new(&buf[..len]);
    let message_id = fields.u16("message id")?;
    Ok(Some((read_reply(message_id, &mut fields)?, len)))
}

/// Length of the reply at the start of `buf`, as soon as its header tells it;
/// an unknown id or an ERROR detail over its limit is refused from the header.
fn reply_len(buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
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
    Ok(Some(len))
}

/// The fields of a whole reply of `message_id`, after its id.
fn read_reply(message_id: u16, fields: &mut Fields<'_>) -> Result<Reply, ProtocolError> {
    Ok(match message_id {
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
    })
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
