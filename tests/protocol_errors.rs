//! Every protocol error, one test each, against the server in-process: the
//! documented code, a detail for a person, the connection closed or still
//! usable as PROTOCOL.md says, and nothing of a refused message stored.

mod common;

use common::*;
use std::net::TcpStream;

/// The connection still works: a good batch is stored and acked on it.
fn assert_still_open(stream: &mut TcpStream, agency: u32, document: &str) {
    assert_eq!(
        exchange(stream, &bets_message(agency, 1, &[good_bet(document, 1)])),
        Wire::BetsAck(1),
        "the connection stays usable after this error"
    );
}

/// `bytes` on a new connection get ERROR `code` and a close; nothing is stored.
fn refused_and_closed(bytes: &[u8], code: u16) {
    let server = TestServer::start(2, &[]);
    let mut stream = connect(server.port);
    let detail = expect_error(exchange(&mut stream, bytes), code);
    assert!(!detail.is_empty(), "a detail for a person");
    assert_closed(&mut stream);
    // The server still serves others, and stored nothing of the refused bytes.
    let mut other = connect(server.port);
    assert_still_open(&mut other, 1, "999");
    assert_eq!(server.stored_rows().len(), 1);
}

macro_rules! closing_case {
    ($name:ident, $bytes:expr, $code:expr) => {
        #[test]
        fn $name() {
            refused_and_closed(&$bytes, $code);
        }
    };
}

closing_case!(
    an_unknown_message_id_is_unknown_message,
    [0x12, 0x34, 0, 0, 0, 1],
    code::UNKNOWN_MESSAGE
);
closing_case!(
    a_reply_id_sent_as_a_request_is_unknown_message,
    [0, 2, 0, 1],
    code::UNKNOWN_MESSAGE
);
closing_case!(
    a_message_declared_over_8192_bytes_is_too_large,
    [0, 1, 0, 0, 0, 1, 0, 1, 0x1F, 0xF7],
    code::TOO_LARGE
);
closing_case!(
    a_count_that_does_not_match_the_body_is_malformed,
    {
        let mut bytes = bets_message(1, 2, &[good_bet("1", 1)]);
        bytes[7] = 2;
        bytes
    },
    code::MALFORMED
);
closing_case!(
    bad_utf8_in_a_name_is_malformed,
    bets_message(
        1,
        1,
        &[bet_bytes(b"\xC3\x28", b"Gil", b"1", b"2000-01-01", 1)]
    ),
    code::MALFORMED
);
closing_case!(
    a_count_of_zero_is_malformed,
    bets_message(1, 0, &[]),
    code::MALFORMED
);
closing_case!(
    trailing_bytes_after_the_bets_are_malformed,
    {
        let mut bytes = bets_message(1, 1, &[good_bet("1", 1), vec![0xAB]]);
        bytes[7] = 1;
        bytes
    },
    code::MALFORMED
);

/// A batch whose second bet is `bad` is refused whole, its index named, and the
/// connection stays usable.
fn invalid_bet(bad: Vec<u8>) {
    let server = TestServer::start(1, &[]);
    let mut stream = connect(server.port);
    let batch = bets_message(1, 2, &[good_bet("5", 7574), bad]);
    let detail = expect_error(exchange(&mut stream, &batch), code::INVALID_BET);
    assert!(detail.contains("index 1"), "{detail}");
    assert_still_open(&mut stream, 1, "100");
    assert_eq!(
        server.stored_rows().len(),
        1,
        "none of the refused batch is stored"
    );
}

macro_rules! invalid_bet_case {
    ($name:ident, $first:expr, $last:expr, $document:expr, $birthdate:expr, $number:expr) => {
        #[test]
        fn $name() {
            invalid_bet(bet_bytes($first, $last, $document, $birthdate, $number));
        }
    };
}

invalid_bet_case!(
    an_empty_first_name_is_an_invalid_bet,
    b"",
    b"Gil",
    b"1",
    b"2000-01-01",
    1
);
invalid_bet_case!(
    a_blank_last_name_is_an_invalid_bet,
    b"Ana",
    b"   ",
    b"1",
    b"2000-01-01",
    1
);
invalid_bet_case!(
    a_control_character_is_an_invalid_bet,
    b"A\nna",
    b"Gil",
    b"1",
    b"2000-01-01",
    1
);
invalid_bet_case!(
    a_name_over_255_bytes_is_an_invalid_bet,
    &[b'a'; 256],
    b"Gil",
    b"1",
    b"2000-01-01",
    1
);
invalid_bet_case!(
    an_11_digit_document_is_an_invalid_bet,
    b"Ana",
    b"Gil",
    b"12345678901",
    b"2000-01-01",
    1
);
invalid_bet_case!(
    a_document_with_a_letter_is_an_invalid_bet,
    b"Ana",
    b"Gil",
    b"12a",
    b"2000-01-01",
    1
);
invalid_bet_case!(
    february_29_of_a_common_year_is_an_invalid_bet,
    b"Ana",
    b"Gil",
    b"1",
    b"2023-02-29",
    1
);
invalid_bet_case!(
    a_future_birthdate_is_an_invalid_bet,
    b"Ana",
    b"Gil",
    b"1",
    b"2999-01-01",
    1
);
invalid_bet_case!(
    a_birthdate_before_1900_is_an_invalid_bet,
    b"Ana",
    b"Gil",
    b"1",
    b"1899-12-31",
    1
);
invalid_bet_case!(
    a_birthdate_not_in_iso_form_is_an_invalid_bet,
    b"Ana",
    b"Gil",
    b"1",
    b"01/02/2000",
    1
);
invalid_bet_case!(
    number_10000_is_an_invalid_bet,
    b"Ana",
    b"Gil",
    b"1",
    b"2000-01-01",
    10_000
);

/// `request` names an agency outside 1..=N: UNKNOWN_AGENCY, connection open.
fn unknown_agency(request: Vec<u8>) {
    let server = TestServer::start(6, &[]);
    let mut stream = connect(server.port);
    let detail = expect_error(exchange(&mut stream, &request), code::UNKNOWN_AGENCY);
    assert!(detail.contains("1 to 6"), "{detail}");
    assert_still_open(&mut stream, 6, "101");
    assert_eq!(server.stored_rows().len(), 1);
}

#[test]
fn bets_from_agency_7_of_6_are_unknown_agency() {
    unknown_agency(bets_message(7, 1, &[good_bet("1", 1)]));
}

#[test]
fn bets_from_agency_0_are_unknown_agency() {
    unknown_agency(bets_message(0, 1, &[good_bet("1", 1)]));
}

#[test]
fn finish_from_an_unknown_agency_is_unknown_agency() {
    unknown_agency(finish_message(99));
}

#[test]
fn get_winners_of_an_unknown_agency_is_unknown_agency() {
    unknown_agency(get_winners_message(0));
}

#[test]
fn bets_after_finish_are_agency_finished_and_the_connection_stays_open() {
    let server = TestServer::start(2, &[]);
    let mut stream = connect(server.port);
    assert_eq!(
        exchange(&mut stream, &finish_message(1)),
        Wire::FinishAck(1)
    );
    let detail = expect_error(
        exchange(&mut stream, &bets_message(1, 1, &[good_bet("102", 7574)])),
        code::AGENCY_FINISHED,
    );
    assert!(detail.contains("FINISH"), "{detail}");
    // Still open: a GET_WINNERS is answered (the draw is not due yet).
    assert_eq!(
        exchange(&mut stream, &get_winners_message(1)),
        Wire::NoWinners
    );
    assert!(server.stored_rows().is_empty());
}

#[test]
fn an_unknown_agency_is_reported_before_a_bad_bet() {
    let server = TestServer::start(6, &[]);
    let mut stream = connect(server.port);
    let both = bets_message(42, 1, &[bet_bytes(b"", b"", b"x", b"y", 10_000)]);
    expect_error(exchange(&mut stream, &both), code::UNKNOWN_AGENCY);
}

#[test]
fn a_bad_bet_is_reported_before_a_finished_agency() {
    let server = TestServer::start(2, &[]);
    let mut stream = connect(server.port);
    assert_eq!(
        exchange(&mut stream, &finish_message(1)),
        Wire::FinishAck(1)
    );
    let both = bets_message(1, 1, &[bet_bytes(b"", b"Gil", b"1", b"2000-01-01", 1)]);
    expect_error(exchange(&mut stream, &both), code::INVALID_BET);
}
