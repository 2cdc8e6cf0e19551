//! The wire protocol, version 3: every message as a Rust value, and its exact bytes.
//!
//! This folder owns the message ids, the error codes, the size limits and the
//! pure encode/decode functions (`&[u8]` in, a message or a `ProtocolError` out):
//! `request` (agency → server), `reply` (server → agency), `fields` (the cursor
//! and field codecs both use), `digest` (SHA-256 of an agency's bets, the seal).
//! It does no I/O: `net::connection` moves the bytes, and decoding never panics on
//! any input, whatever its length. Integers are big-endian; a `str16` is a u16
//! byte length followed by that many bytes of UTF-8.

pub(crate) mod digest;
mod error;
mod fields;
mod limits;
mod reply;
mod request;
#[cfg(test)]
mod tests;

pub use error::ErrorCode;
pub(crate) use error::ProtocolError;
pub(crate) use fields::Decoded;
pub(crate) use limits::{
    MAX_BETS_BODY_LEN, MAX_MESSAGE_LEN, MAX_REPLY_LEN, MAX_TOKEN_LEN, PROTOCOL_VERSION,
};
pub(crate) use reply::{AgencyStatus, Reply, decode_reply, winners_replies};
#[cfg(test)]
pub(crate) use request::encode_bet;
pub(crate) use request::{
    BetBatch, MAX_VALID_BET_LEN, Request, decode_first_request, decode_request,
    encode_bets_message, encoded_len, write_valid_bet,
};
