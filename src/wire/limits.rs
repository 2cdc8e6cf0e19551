//! The protocol's numbers: its version, the message ids, and the size of every
//! message and field, each with the layout it comes from.

use super::digest::DIGEST_LEN;
use super::error::ProtocolError;

/// No message may be longer than this, id and lengths included (WINNERS and
/// WINNERS_PART excepted: they are bounded by their u16 length).
pub(crate) const MAX_MESSAGE_LEN: usize = 8192;
/// BETS header: id (2) · agency (4) · first (4) · count (2) · body_len (2).
pub(crate) const BETS_HEADER_LEN: usize = 14;
/// The protocol version this code speaks, as HELLO carries it.
pub(crate) const PROTOCOL_VERSION: u16 = 3;
/// HELLO header: id (2) · version (2) · agency (4) · token length (2).
pub(super) const HELLO_HEADER_LEN: usize = 10;
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
pub(super) const MIN_ENCODED_BET_LEN: usize = 4 * 2 + 2;
/// GET_WINNERS: id (2) · agency (4).
pub(super) const GET_WINNERS_LEN: usize = 6;
/// FINISH: id (2) · agency (4) · total (4) · digest (32).
pub(super) const FINISH_LEN: usize = 10 + DIGEST_LEN;
/// WELCOME: id (2) · stored (4) · status (1) · digest (32).
pub(super) const WELCOME_LEN: usize = 7 + DIGEST_LEN;
/// FINISH_ACK: id (2) · agency (4) · digest (32).
pub(super) const FINISH_ACK_LEN: usize = 6 + DIGEST_LEN;

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

/// `len` if a message of that many bytes is within `MAX_MESSAGE_LEN`.
pub(super) fn within_limit(len: usize) -> Result<usize, ProtocolError> {
    if len > MAX_MESSAGE_LEN {
        return Err(ProtocolError::TooLarge {
            len,
            limit: MAX_MESSAGE_LEN,
        });
    }
    Ok(len)
}
