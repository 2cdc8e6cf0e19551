//! The messages from an agency to the server: HELLO, BETS, FINISH and
//! GET_WINNERS, their exact bytes both ways, and the header checks that refuse
//! a message (too large, an unknown id, another protocol version) before its body.
//!
//! Bets are read by `read_bet_fast` (one bounds check per field, an ASCII-first
//! UTF-8 check, no error built), which stands beside the plain `read_bet`: a
//! bet the fast reader refuses is read again by the plain one, which names what
//! is wrong. It saves about two hundred instructions per bet (docs/benchmarks.md);
//! a seeded differential test keeps the two in agreement.

use super::digest::Digest;
use super::error::{ProtocolError, malformed};
use super::fields::{Decoded, Fields, peek_u16, peek_u32, put_str16};
use super::limits::{
    BETS_HEADER_LEN, FINISH_LEN, GET_WINNERS_LEN, HELLO_HEADER_LEN, MAX_TOKEN_LEN,
    MIN_ENCODED_BET_LEN, PROTOCOL_VERSION, id, within_limit,
};
#[cfg(test)]
use crate::bet::Bet;
use crate::bet::{BetRef, MAX_DOCUMENT_LEN, MAX_NAME_LEN, ValidBet};
use crate::text::copy_short;

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

    /// Whether every text field is UTF-8; else the `Malformed` error naming the
    /// first that is not. The decoder checks only the batch's lengths: a batch
    /// whose bets pass the rules is UTF-8 already, so this runs only before a
    /// batch is refused (parsing comes first, so a refusal may be MALFORMED).
    pub fn check_text(&self) -> Result<(), ProtocolError> {
        let mut fields = Fields::new(&self.body);
        for _ in 0..self.count {
            read_bet(&mut fields, true)?;
        }
        Ok(())
    }

    /// The bets, borrowed from the body.
    pub fn bets(&self) -> impl Iterator<Item = BetRef<'_>> {
        let mut at = 0;
        // The body's lengths were checked when the batch was made, so no read
        // fails; were one to, the bets would end there rather than panic.
        (0..self.count).map_while(move |_| read_bet_fast(&self.body, &mut at, false))
    }
}

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
    // Lengths only: the text's UTF-8 is checked by the rules a stored bet
    // passes, or by `BetBatch::check_text` before any refusal.
    match skip_bets(body.bytes, body.pos, bets) {
        Some(end) => body.pos = end,
        // The plain reader names what is wrong.
        None => {
            for _ in 0..bets {
                read_bet(body, false)?;
            }
        }
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

/// `read_bet` for the bet at `body[*at..]`, without building an error: `None`
/// wherever the plain reader fails. On success `at` moves past the bet.
fn read_bet_fast<'a>(body: &'a [u8], at: &mut usize, check_text: bool) -> Option<BetRef<'a>> {
    let mut pos = *at;
    let first_name = str16_at(body, &mut pos, check_text)?;
    let last_name = str16_at(body, &mut pos, check_text)?;
    let document = str16_at(body, &mut pos, check_text)?;
    let birthdate = str16_at(body, &mut pos, check_text)?;
    let number = u16::from_be_bytes([*body.get(pos)?, *body.get(pos + 1)?]);
    *at = pos + 2;
    Some(BetRef {
        first_name,
        last_name,
        document,
        birthdate,
        number,
    })
}

/// Where `count` bets starting at `body[at..]` end, by their lengths alone;
/// `None` where `read_bet` would fail (a seeded differential test checks it).
fn skip_bets(body: &[u8], mut at: usize, count: usize) -> Option<usize> {
    for _ in 0..count {
        for _ in 0..4 {
            let len = u16::from_be_bytes([*body.get(at)?, *body.get(at + 1)?]);
            at += 2 + usize::from(len);
        }
        // The number, and the last field's bytes, must be there.
        at += 2;
        if at > body.len() {
            return None;
        }
    }
    Some(at)
}

/// The str16 at `body[*pos..]` (UTF-8 with `check_text`), moving `pos` past it.
fn str16_at<'a>(body: &'a [u8], pos: &mut usize, check_text: bool) -> Option<&'a [u8]> {
    let len = usize::from(u16::from_be_bytes([*body.get(*pos)?, *body.get(*pos + 1)?]));
    let bytes = body.get(*pos + 2..*pos + 2 + len)?;
    if check_text && !crate::text::is_utf8(bytes) {
        return None;
    }
    *pos += 2 + len;
    Some(bytes)
}

/// Bytes of one bet's wire form: four str16 and the number.
pub(crate) fn encoded_len(bet: BetRef<'_>) -> usize {
    8 + bet.first_name.len() + bet.last_name.len() + bet.document.len() + bet.birthdate.len() + 2
}

/// Appends one bet's wire form to a BETS body. A field over 65,535 bytes is
/// an error naming it (and nothing is appended). The plain version of
/// `encode_valid_bet`, for a bet of any shape (the tests build messages with it).
#[cfg(test)]
pub(crate) fn encode_bet(bet: BetRef<'_>, body: &mut Vec<u8>) -> Result<(), ProtocolError> {
    let fields = [
        (bet.first_name, "first_name"),
        (bet.last_name, "last_name"),
        (bet.document, "document"),
        (bet.birthdate, "birthdate"),
    ];
    body.reserve(encoded_len(bet));
    let before = body.len();
    for (text, what) in fields {
        if let Err(e) = put_str16(body, text, what) {
            body.truncate(before);
            return Err(e);
        }
    }
    body.extend_from_slice(&bet.number.to_be_bytes());
    Ok(())
}

/// Bytes of the longest valid bet's wire form: four str16 and the number.
pub(crate) const MAX_VALID_BET_LEN: usize = 4 * 2 + 2 * MAX_NAME_LEN + MAX_DOCUMENT_LEN + 10 + 2;

/// Writes a valid bet's wire form at the start of `out` and returns its
/// length (at most `MAX_VALID_BET_LEN`); if `out` is too short for it, nothing
/// is written and the length is 0. `encode_bet` without its checks, which a
/// `ValidBet` has passed (its fields are far shorter than a str16's limit),
/// written in place with short copies (`copy_short`) instead of growing a
/// vector field by field: it saves the clients about 100 instructions per bet.
pub(crate) fn write_valid_bet(bet: &ValidBet<'_>, out: &mut [u8]) -> usize {
    let len = encoded_len(**bet);
    let Some(out) = out.get_mut(..len) else {
        return 0;
    };
    let mut at = 0;
    for text in [bet.first_name, bet.last_name, bet.document, bet.birthdate] {
        let end = at + 2 + text.len();
        // At most MAX_NAME_LEN bytes (a valid bet's longest field): a u16.
        out[at..at + 2].copy_from_slice(&(text.len() as u16).to_be_bytes());
        copy_short(&mut out[at + 2..end], text);
        at = end;
    }
    out[at..].copy_from_slice(&bet.number.to_be_bytes());
    len
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Seeded bodies of a few bets, some damaged: a length, a byte of text
    /// (bad UTF-8, non-ASCII), or cut short.
    fn bodies() -> Vec<Vec<u8>> {
        let mut rng = fastrand::Rng::with_seed(0x00FA_57BE_7000);
        let names: [&[u8]; 6] = [
            b"Ana",
            "José Ñandú".as_bytes(),
            b"",
            "李".as_bytes(),
            b"O'Neil, \"x\"",
            b"\xc3",
        ];
        (0..5_000)
            .map(|_| {
                let mut body = Vec::new();
                for _ in 0..rng.usize(1..4) {
                    for _ in 0..2 {
                        let name = names[rng.usize(..names.len())];
                        body.extend_from_slice(&(name.len() as u16).to_be_bytes());
                        body.extend_from_slice(name);
                    }
                    for field in [&b"30904465"[..], b"1999-03-17"] {
                        body.extend_from_slice(&(field.len() as u16).to_be_bytes());
                        body.extend_from_slice(field);
                    }
                    body.extend_from_slice(&rng.u16(..).to_be_bytes());
                }
                for _ in 0..rng.usize(..3) {
                    if !body.is_empty() {
                        let at = rng.usize(..body.len());
                        body[at] = rng.u8(..);
                    }
                }
                body.truncate(body.len() - rng.usize(..=body.len().min(3)));
                body
            })
            .collect()
    }

    #[test]
    fn the_fast_bet_reader_agrees_with_the_plain_one() {
        let (mut read, mut refused) = (0, 0);
        for body in bodies() {
            for check_text in [true, false] {
                let (mut fast_at, mut plain) = (0, Fields::new(&body));
                loop {
                    let fast = read_bet_fast(&body, &mut fast_at, check_text);
                    match (fast, read_bet(&mut plain, check_text)) {
                        (Some(fast), Ok(slow)) => {
                            assert_eq!((fast, fast_at), (slow, plain.pos), "{body:?}");
                            read += 1;
                        }
                        (None, Err(_)) => {
                            refused += 1;
                            break;
                        }
                        (fast, slow) => panic!("{body:?}: fast {fast:?}, plain {slow:?}"),
                    }
                }
            }
        }
        assert!(
            read > 5_000 && refused > 1_000,
            "both sides exercised: {read} read, {refused} refused"
        );
    }
}
