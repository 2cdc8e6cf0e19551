//! The wire protocol by hand: message bytes built field by field as PROTOCOL.md
//! lays them out, and replies read back the same way.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Error codes, as PROTOCOL.md numbers them.
pub mod code {
    pub const MALFORMED: u16 = 1;
    pub const TOO_LARGE: u16 = 2;
    pub const UNKNOWN_MESSAGE: u16 = 3;
    pub const INVALID_BET: u16 = 4;
    pub const UNKNOWN_AGENCY: u16 = 5;
    pub const AGENCY_FINISHED: u16 = 6;
    pub const STORAGE: u16 = 7;
    pub const BUSY: u16 = 8;
    pub const SHUTTING_DOWN: u16 = 9;
    pub const UNAUTHORIZED: u16 = 10;
    pub const OUT_OF_ORDER: u16 = 11;
    pub const COUNT_MISMATCH: u16 = 12;
    pub const DIGEST_MISMATCH: u16 = 13;
    pub const UNSUPPORTED_VERSION: u16 = 14;
}

/// The protocol version HELLO carries.
pub const VERSION: u16 = 3;

/// A SHA-256 digest as the wire carries it.
pub type Digest = [u8; 32];

/// The digest of an agency's bets, as PROTOCOL.md defines it: SHA-256 over
/// their wire bytes, concatenated in bet-number order.
pub fn digest_of(bets: &[Vec<u8>]) -> Digest {
    let digest = ring::digest::digest(&ring::digest::SHA256, &bets.concat());
    digest.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// The digest of no bets.
pub fn no_bets() -> Digest {
    digest_of(&[])
}

/// 64 lowercase hex digits, as the logs and records show a digest.
pub fn hex(digest: &Digest) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The token the tests' HELLO carries when the server needs none.
pub const ANY_TOKEN: &[u8] = b"a-token-for-tests";

/// A socket to the server with generous timeouts, so a broken test fails, not hangs.
pub fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the server");
    stream.set_read_timeout(Some(super::HANG)).unwrap();
    stream.set_write_timeout(Some(super::HANG)).unwrap();
    stream
}

fn str16(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&u16::try_from(s.len()).expect("a str16").to_be_bytes());
    out.extend_from_slice(s);
}

/// One bet's wire bytes, from raw field bytes (so tests can send bad UTF-8).
pub fn bet_bytes(
    first: &[u8],
    last: &[u8],
    document: &[u8],
    birthdate: &[u8],
    number: u16,
) -> Vec<u8> {
    let mut out = Vec::new();
    str16(&mut out, first);
    str16(&mut out, last);
    str16(&mut out, document);
    str16(&mut out, birthdate);
    out.extend_from_slice(&number.to_be_bytes());
    out
}

/// A valid bet with this document and number.
pub fn good_bet(document: &str, number: u16) -> Vec<u8> {
    bet_bytes(
        "María José".as_bytes(),
        "Núñez".as_bytes(),
        document.as_bytes(),
        b"1990-02-28",
        number,
    )
}

/// A HELLO of this protocol version for `agency` with `token`.
pub fn hello_message(agency: u32, token: &[u8]) -> Vec<u8> {
    hello_of_version(VERSION, agency, token)
}

/// A HELLO that says it is of protocol `version`.
pub fn hello_of_version(version: u16, agency: u32, token: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 9];
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&agency.to_be_bytes());
    str16(&mut out, token);
    out
}

/// A BETS message numbered from `first`, with an explicit count over the
/// concatenated bet bytes.
pub fn bets_message(agency: u32, first: u32, count: u16, bets: &[Vec<u8>]) -> Vec<u8> {
    let body: Vec<u8> = bets.concat();
    let mut out = vec![0, 1];
    out.extend_from_slice(&agency.to_be_bytes());
    out.extend_from_slice(&first.to_be_bytes());
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(&u16::try_from(body.len()).unwrap_or(u16::MAX).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// One good bet per document, all playing `number`.
pub fn good_bets(documents: &[String], number: u16) -> Vec<Vec<u8>> {
    documents.iter().map(|d| good_bet(d, number)).collect()
}

/// A BETS message numbered from `first` of one good bet per document, all
/// playing `number`.
pub fn batch_of(agency: u32, first: u32, documents: &[String], number: u16) -> Vec<u8> {
    let bets = good_bets(documents, number);
    bets_message(agency, first, u16::try_from(bets.len()).unwrap(), &bets)
}

/// A FINISH of `total` bets whose digest is `digest`.
pub fn finish_message(agency: u32, total: u32, digest: Digest) -> Vec<u8> {
    let mut out = vec![0, 3];
    out.extend_from_slice(&agency.to_be_bytes());
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&digest);
    out
}

/// A FINISH of exactly `bets`: their count and digest.
pub fn finish_of(agency: u32, bets: &[Vec<u8>]) -> Vec<u8> {
    finish_message(agency, u32::try_from(bets.len()).unwrap(), digest_of(bets))
}

pub fn get_winners_message(agency: u32) -> Vec<u8> {
    let mut out = vec![0, 5];
    out.extend_from_slice(&agency.to_be_bytes());
    out
}

/// A reply as read off the wire.
#[derive(Debug, PartialEq, Eq)]
pub enum Wire {
    /// WELCOME: stored, status, digest.
    Welcome(u32, u8, Digest),
    BetsAck(u16),
    /// FINISH_ACK: agency, digest (the receipt).
    FinishAck(u32, Digest),
    NoWinners,
    Winners(String),
    WinnersPart(String),
    Error(u16, String),
    /// The server closed the connection.
    Closed,
}

fn read_exact_or_closed(stream: &mut (impl Read + ?Sized), buf: &mut [u8]) -> bool {
    match stream.read_exact(buf) {
        Ok(()) => true,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
            ) =>
        {
            false
        }
        Err(e) => panic!("reading a reply: {e}"),
    }
}

/// Reads one reply, decoding the bytes by hand as PROTOCOL.md lays them out.
pub fn read_wire(stream: &mut impl Read) -> Wire {
    let mut id = [0u8; 2];
    if !read_exact_or_closed(stream, &mut id) {
        return Wire::Closed;
    }
    let u16_field = |stream: &mut dyn Read| {
        let mut b = [0u8; 2];
        assert!(
            read_exact_or_closed(stream, &mut b),
            "closed inside a reply"
        );
        u16::from_be_bytes(b)
    };
    match u16::from_be_bytes(id) {
        0x0A => {
            let mut b = [0u8; 37];
            assert!(
                read_exact_or_closed(stream, &mut b),
                "closed inside a reply"
            );
            let digest = b[5..].try_into().unwrap();
            Wire::Welcome(u32::from_be_bytes([b[0], b[1], b[2], b[3]]), b[4], digest)
        }
        2 => Wire::BetsAck(u16_field(stream)),
        4 => {
            let mut b = [0u8; 36];
            assert!(
                read_exact_or_closed(stream, &mut b),
                "closed inside a reply"
            );
            let digest = b[4..].try_into().unwrap();
            Wire::FinishAck(u32::from_be_bytes([b[0], b[1], b[2], b[3]]), digest)
        }
        6 => Wire::NoWinners,
        kind @ (7 | 8 | 0xFF) => {
            let code = if kind == 0xFF { u16_field(stream) } else { 0 };
            let len = u16_field(stream);
            let mut payload = vec![0u8; usize::from(len)];
            assert!(
                read_exact_or_closed(stream, &mut payload),
                "closed inside a reply"
            );
            let text = String::from_utf8(payload).expect("UTF-8 payload");
            match kind {
                7 => Wire::Winners(text),
                8 => Wire::WinnersPart(text),
                _ => Wire::Error(code, text),
            }
        }
        other => panic!("unknown reply id {other:#06x}"),
    }
}

/// A connection whose session for `agency` is open: HELLO sent, WELCOME read.
/// Returns it with the WELCOME's stored count and status.
pub fn session(port: u16, agency: u32) -> (TcpStream, u32, u8) {
    let mut stream = connect(port);
    match exchange(&mut stream, &hello_message(agency, ANY_TOKEN)) {
        Wire::Welcome(stored, status, _) => (stream, stored, status),
        other => panic!("expected WELCOME for agency {agency}, got {other:?}"),
    }
}

/// Sends `bytes` and reads one reply.
pub fn exchange<S: Read + Write>(stream: &mut S, bytes: &[u8]) -> Wire {
    stream.write_all(bytes).expect("send");
    read_wire(stream)
}

/// The detail of an ERROR with `code`; panics on any other reply.
pub fn expect_error(reply: Wire, code: u16) -> String {
    match reply {
        Wire::Error(c, detail) if c == code => detail,
        other => panic!("expected ERROR {code}, got {other:?}"),
    }
}

/// The connection was closed by the server: a read gives end of file (or a reset).
pub fn assert_closed(stream: &mut impl Read) {
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => {}
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof
            ) => {}
        other => panic!("expected the server to close the connection, got {other:?}"),
    }
}

/// Reads one agency's whole winners answer (parts and the final WINNERS) on
/// `stream`; `None` for NO_WINNERS.
pub fn read_winners(stream: &mut impl Read) -> Option<Vec<String>> {
    let mut parts = Vec::new();
    loop {
        match read_wire(stream) {
            Wire::NoWinners if parts.is_empty() => return None,
            Wire::WinnersPart(p) => parts.push(p),
            Wire::Winners(p) => {
                parts.push(p);
                let joined = parts.join(",");
                return Some(
                    joined
                        .split(',')
                        .filter(|d| !d.is_empty())
                        .map(str::to_string)
                        .collect(),
                );
            }
            other => panic!("unexpected reply to GET_WINNERS: {other:?}"),
        }
    }
}

/// Asks for an agency's winners on a new connection each time until the draw
/// has happened; returns the documents in the order the server sent them.
pub fn fetch_winners(port: u16, agency: u32) -> Vec<String> {
    super::wait_until(&format!("the winners of agency {agency}"), || {
        let mut stream = connect(port);
        let winners = match exchange(&mut stream, &hello_message(agency, ANY_TOKEN)) {
            Wire::Welcome(..) => {
                stream
                    .write_all(&get_winners_message(agency))
                    .expect("send");
                read_winners(&mut stream)
            }
            // A server at its limit: ask again.
            Wire::Error(code::BUSY, _) => None,
            other => panic!("expected WELCOME for agency {agency}, got {other:?}"),
        };
        if winners.is_none() {
            std::thread::sleep(Duration::from_millis(20));
        }
        winners
    })
}

// The replies as a server sends them, for the fake server (the inverse of `read_wire`).

pub fn welcome(stored: u32, status: u8, digest: Digest) -> Vec<u8> {
    let mut out = vec![0, 0x0A];
    out.extend_from_slice(&stored.to_be_bytes());
    out.push(status);
    out.extend_from_slice(&digest);
    out
}

pub fn bets_ack(count: u16) -> Vec<u8> {
    let mut out = vec![0, 2];
    out.extend_from_slice(&count.to_be_bytes());
    out
}

pub fn finish_ack(agency: u32, digest: Digest) -> Vec<u8> {
    let mut out = vec![0, 4];
    out.extend_from_slice(&agency.to_be_bytes());
    out.extend_from_slice(&digest);
    out
}

fn with_payload(id: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0, id];
    out.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
    out.extend_from_slice(payload);
    out
}

pub fn winners(payload: &str) -> Vec<u8> {
    with_payload(7, payload.as_bytes())
}

pub fn winners_part(payload: &str) -> Vec<u8> {
    with_payload(8, payload.as_bytes())
}

pub fn error_reply(code: u16, detail: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0xFF];
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(&u16::try_from(detail.len()).unwrap().to_be_bytes());
    out.extend_from_slice(detail);
    out
}

/// The count of a BETS message's bets.
pub fn bets_count(message: &[u8]) -> u16 {
    u16::from_be_bytes([message[10], message[11]])
}
