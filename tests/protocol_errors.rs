//! Every protocol error and every rule of protocol version 3, one test each,
//! against the server in-process: the documented code, a detail for a person,
//! the connection closed or still usable as PROTOCOL.md says, and nothing of a
//! refused message stored.

mod common;

use common::*;
use std::net::TcpStream;

/// The connection still works: the agency's next batch is stored and acked on it.
fn assert_still_open(stream: &mut TcpStream, agency: u32, first: u32, document: &str) {
    assert_eq!(
        exchange(
            stream,
            &bets_message(agency, first, 1, &[good_bet(document, 1)])
        ),
        Wire::BetsAck(1),
        "the connection stays usable after this error"
    );
}

/// `bytes`, sent by agency 1 after its HELLO (or with no HELLO at all), get
/// ERROR `code` and a close; nothing is stored and the server serves others.
fn refused_and_closed(hello_first: bool, bytes: &[u8], code: u16) -> String {
    let server = TestServer::start(2, &[]);
    let mut stream = if hello_first {
        session(server.port, 1).0
    } else {
        connect(server.port)
    };
    let detail = expect_error(exchange(&mut stream, bytes), code);
    assert!(!detail.is_empty(), "a detail for a person");
    assert_closed(&mut stream);
    let (mut other, _, _) = session(server.port, 2);
    assert_still_open(&mut other, 2, 0, "999");
    assert_eq!(server.stored_rows().len(), 1);
    detail
}

macro_rules! closing_case {
    ($name:ident, $hello_first:expr, $bytes:expr, $code:expr) => {
        #[test]
        fn $name() {
            refused_and_closed($hello_first, &$bytes, $code);
        }
    };
}

closing_case!(
    an_unknown_message_id_is_unknown_message,
    true,
    [0x12, 0x34, 0, 0, 0, 1],
    code::UNKNOWN_MESSAGE
);
closing_case!(
    a_reply_id_sent_as_a_request_is_unknown_message,
    true,
    [0, 0x0A, 0, 1],
    code::UNKNOWN_MESSAGE
);
closing_case!(
    a_message_declared_over_8192_bytes_is_too_large,
    true,
    [0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0x1F, 0xF3],
    code::TOO_LARGE
);
closing_case!(
    a_count_that_does_not_match_the_body_is_malformed,
    true,
    {
        let mut bytes = bets_message(1, 0, 2, &[good_bet("1", 1)]);
        bytes[11] = 2;
        bytes
    },
    code::MALFORMED
);
closing_case!(
    bad_utf8_in_a_name_is_malformed,
    true,
    bets_message(
        1,
        0,
        1,
        &[bet_bytes(b"\xC3\x28", b"Gil", b"1", b"2000-01-01", 1)]
    ),
    code::MALFORMED
);
closing_case!(
    a_count_of_zero_is_malformed,
    true,
    bets_message(1, 0, 0, &[]),
    code::MALFORMED
);
closing_case!(
    trailing_bytes_after_the_bets_are_malformed,
    true,
    {
        let mut bytes = bets_message(1, 0, 1, &[good_bet("1", 1), vec![0xAB]]);
        bytes[11] = 1;
        bytes
    },
    code::MALFORMED
);
closing_case!(
    a_batch_numbered_past_the_last_bet_number_is_malformed,
    true,
    bets_message(1, u32::MAX, 1, &[good_bet("1", 1)]),
    code::MALFORMED
);
closing_case!(
    a_token_over_255_bytes_is_malformed,
    false,
    hello_message(1, &[b'x'; 256]),
    code::MALFORMED
);
closing_case!(
    a_token_that_is_not_utf8_is_malformed,
    false,
    hello_message(1, b"\xFF\xFE"),
    code::MALFORMED
);
closing_case!(
    a_malformed_message_before_hello_is_malformed_not_unauthorized,
    false,
    bets_message(1, 0, 0, &[]),
    code::MALFORMED
);
closing_case!(
    bets_with_text_that_is_not_utf8_before_hello_are_malformed_not_unauthorized,
    false,
    bets_message(
        1,
        0,
        1,
        &[bet_bytes(b"\xff", b"Gil", b"1", b"2000-01-01", 1)]
    ),
    code::MALFORMED
);
closing_case!(
    a_field_that_is_not_utf8_after_an_invalid_bet_is_malformed,
    true,
    bets_message(
        1,
        0,
        2,
        &[
            bet_bytes(b"Ana", b"Gil", b"1", b"2000-01-01", 10_000),
            bet_bytes(b"Ana", b"Gil", b"1", b"2000-01-\xc3", 1)
        ]
    ),
    code::MALFORMED
);
closing_case!(
    an_out_of_order_batch_with_text_that_is_not_utf8_is_malformed,
    true,
    bets_message(
        1,
        7,
        1,
        &[bet_bytes(b"Ana", b"\xc3\x28", b"1", b"2000-01-01", 1)]
    ),
    code::MALFORMED
);
closing_case!(
    bets_before_hello_are_unauthorized,
    false,
    bets_message(1, 0, 1, &[good_bet("1", 1)]),
    code::UNAUTHORIZED
);
closing_case!(
    finish_before_hello_is_unauthorized,
    false,
    finish_of(1, &[]),
    code::UNAUTHORIZED
);
closing_case!(
    get_winners_before_hello_is_unauthorized,
    false,
    get_winners_message(1),
    code::UNAUTHORIZED
);
closing_case!(
    a_second_hello_is_unauthorized,
    true,
    hello_message(1, ANY_TOKEN),
    code::UNAUTHORIZED
);
closing_case!(
    bets_naming_another_agency_are_unauthorized,
    true,
    bets_message(2, 0, 1, &[good_bet("1", 1)]),
    code::UNAUTHORIZED
);
closing_case!(
    a_finish_naming_another_agency_is_unauthorized,
    true,
    finish_of(2, &[]),
    code::UNAUTHORIZED
);
closing_case!(
    a_second_hello_of_another_version_is_unauthorized_not_a_version_error,
    true,
    hello_of_version(2, 1, ANY_TOKEN),
    code::UNAUTHORIZED
);

/// A version-2 HELLO: id, u32 agency, str16 token (no version).
fn version_2_hello(agency: u32, token: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 9];
    out.extend_from_slice(&agency.to_be_bytes());
    out.extend_from_slice(&u16::try_from(token.len()).unwrap().to_be_bytes());
    out.extend_from_slice(token);
    out
}

#[test]
fn a_version_2_hello_gets_unsupported_version_and_is_closed() {
    let detail = refused_and_closed(
        false,
        &version_2_hello(1, ANY_TOKEN),
        code::UNSUPPORTED_VERSION,
    );
    assert!(
        detail.contains("version 0") && detail.contains("version 3"),
        "both versions: {detail}"
    );
    assert!(detail.contains("version-2 client"), "{detail}");
    assert!(detail.contains("update the agency client"), "{detail}");
}

#[test]
fn a_hello_of_another_version_is_refused_from_its_first_four_bytes() {
    let server = TestServer::start(1, &[]);
    for version in [2u16, 4, 0xFFFF] {
        // Only the id and the version: the answer may not wait for the rest.
        let mut stream = connect(server.port);
        let partial = &hello_of_version(version, 1, ANY_TOKEN)[..4];
        let detail = expect_error(exchange(&mut stream, partial), code::UNSUPPORTED_VERSION);
        assert!(
            detail.contains(&format!("version {version}")) && detail.contains("version 3"),
            "{detail}"
        );
        assert_closed(&mut stream);
    }
    // Before any other check of it: a version-4 HELLO declaring a huge token.
    let mut stream = connect(server.port);
    let huge = [0, 9, 0, 4, 0, 0, 0, 1, 0xFF, 0xFF];
    expect_error(exchange(&mut stream, &huge), code::UNSUPPORTED_VERSION);
    session(server.port, 1);
}
closing_case!(
    get_winners_naming_another_agency_is_unauthorized,
    true,
    get_winners_message(2),
    code::UNAUTHORIZED
);

#[test]
fn a_hello_from_an_agency_not_taking_part_is_unknown_agency_and_closes() {
    for agency in [0, 3, u32::MAX] {
        let detail = refused_and_closed(
            false,
            &hello_message(agency, ANY_TOKEN),
            code::UNKNOWN_AGENCY,
        );
        assert!(detail.contains("1 to 2"), "{detail}");
    }
}

#[test]
fn an_unknown_agency_is_reported_before_a_bad_token() {
    // Without tokens any token is accepted; an unknown agency is still refused first.
    refused_and_closed(false, &hello_message(9, b""), code::UNKNOWN_AGENCY);
}

/// A batch whose second bet is `bad` is refused whole, its index named, and the
/// connection stays usable.
fn invalid_bet(bad: Vec<u8>) {
    let server = TestServer::start(1, &[]);
    let (mut stream, _, _) = session(server.port, 1);
    let batch = bets_message(1, 0, 2, &[good_bet("5", 7574), bad]);
    let detail = expect_error(exchange(&mut stream, &batch), code::INVALID_BET);
    assert!(detail.contains("index 1"), "{detail}");
    assert_still_open(&mut stream, 1, 0, "100");
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

#[test]
fn bets_after_finish_are_agency_finished_and_the_connection_stays_open() {
    let server = TestServer::start(2, &[]);
    let (mut stream, _, _) = session(server.port, 1);
    assert_eq!(
        exchange(&mut stream, &finish_of(1, &[])),
        Wire::FinishAck(1, no_bets())
    );
    let detail = expect_error(
        exchange(
            &mut stream,
            &bets_message(1, 0, 1, &[good_bet("102", 7574)]),
        ),
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
fn a_bad_bet_is_reported_before_a_finished_agency() {
    let server = TestServer::start(2, &[]);
    let (mut stream, _, _) = session(server.port, 1);
    assert_eq!(
        exchange(&mut stream, &finish_of(1, &[])),
        Wire::FinishAck(1, no_bets())
    );
    let both = bets_message(1, 0, 1, &[bet_bytes(b"", b"Gil", b"1", b"2000-01-01", 1)]);
    expect_error(exchange(&mut stream, &both), code::INVALID_BET);
}

#[test]
fn a_batch_sent_again_after_it_was_stored_is_acked_and_stored_once() {
    let server = TestServer::start(1, &[]);
    let documents: Vec<String> = (0..5).map(|i| format!("{i}")).collect();
    let (mut stream, _, _) = session(server.port, 1);
    assert_eq!(
        exchange(&mut stream, &batch_of(1, 0, &documents, 1)),
        Wire::BetsAck(5)
    );
    // The same batch, on the same connection and on a new one after a "lost" ack.
    assert_eq!(
        exchange(&mut stream, &batch_of(1, 0, &documents, 1)),
        Wire::BetsAck(5)
    );
    let (mut again, stored, status) = session(server.port, 1);
    assert_eq!((stored, status), (5, 0));
    assert_eq!(
        exchange(&mut again, &batch_of(1, 0, &documents[..3], 1)),
        Wire::BetsAck(3)
    );
    assert_eq!(server.stored_rows().len(), 5);
}

#[test]
fn a_gap_is_out_of_order_names_the_expected_bet_and_stores_nothing() {
    let server = TestServer::start(1, &[]);
    let (mut stream, _, _) = session(server.port, 1);
    assert_eq!(
        exchange(&mut stream, &batch_of(1, 0, &["1".into(), "2".into()], 1)),
        Wire::BetsAck(2)
    );
    let detail = expect_error(
        exchange(&mut stream, &batch_of(1, 5, &["6".into()], 1)),
        code::OUT_OF_ORDER,
    );
    assert!(detail.contains("bet 2"), "{detail}");
    assert_still_open(&mut stream, 1, 2, "3");
    assert_eq!(server.stored_rows().len(), 3);
}

#[test]
fn an_overlap_is_out_of_order_and_stores_nothing() {
    let server = TestServer::start(1, &[]);
    let (mut stream, _, _) = session(server.port, 1);
    let three: Vec<String> = (0..3).map(|i| i.to_string()).collect();
    assert_eq!(
        exchange(&mut stream, &batch_of(1, 0, &three, 1)),
        Wire::BetsAck(3)
    );
    expect_error(
        exchange(&mut stream, &batch_of(1, 2, &three, 1)),
        code::OUT_OF_ORDER,
    );
    assert_eq!(server.stored_rows().len(), 3);
}

#[test]
fn a_bad_bet_is_reported_before_out_of_order() {
    let server = TestServer::start(1, &[]);
    let (mut stream, _, _) = session(server.port, 1);
    let both = bets_message(
        1,
        7,
        1,
        &[bet_bytes(b"Ana", b"Gil", b"x", b"2000-01-01", 1)],
    );
    expect_error(exchange(&mut stream, &both), code::INVALID_BET);
}

#[test]
fn a_finish_with_a_wrong_total_is_count_mismatch_and_does_not_count() {
    let server = TestServer::start(1, &[("SERVER_DRAW_WAIT_MS", "0")]);
    let (mut stream, _, _) = session(server.port, 1);
    assert_eq!(
        exchange(&mut stream, &batch_of(1, 0, &["7".into()], 7574)),
        Wire::BetsAck(1)
    );
    let bets = [good_bet("7", 7574)];
    // A wrong total is judged before the digest, whatever the digest.
    let detail = expect_error(
        exchange(&mut stream, &finish_message(1, 2, [0; 32])),
        code::COUNT_MISMATCH,
    );
    assert!(
        detail.contains("sent 2 bets") && detail.contains("but 1 of its bets"),
        "both numbers: {detail}"
    );
    // Not counted: the draw (one agency) has not happened.
    assert_eq!(
        exchange(&mut stream, &get_winners_message(1)),
        Wire::NoWinners
    );
    let (_, stored, status) = session(server.port, 1);
    assert_eq!((stored, status), (1, 0));
    // The right total is recorded, and the draw follows.
    assert_eq!(
        exchange(&mut stream, &finish_of(1, &bets)),
        Wire::FinishAck(1, digest_of(&bets))
    );
    assert_eq!(fetch_winners(server.port, 1), vec!["7".to_string()]);
}

#[test]
fn a_finish_with_the_right_total_but_another_digest_is_digest_mismatch_and_records_nothing() {
    let server = TestServer::start(1, &[("SERVER_DRAW_WAIT_MS", "0")]);
    let (mut stream, _, _) = session(server.port, 1);
    let stored = [good_bet("7", 7574), good_bet("8", 1)];
    assert_eq!(
        exchange(&mut stream, &bets_message(1, 0, 2, &stored)),
        Wire::BetsAck(2)
    );
    // The agency's file holds other bets than it sent: same count, other content.
    let other = [good_bet("7", 7574), good_bet("9", 1)];
    let detail = expect_error(
        exchange(&mut stream, &finish_of(1, &other)),
        code::DIGEST_MISMATCH,
    );
    let (theirs, ours) = (hex(&digest_of(&other)), hex(&digest_of(&stored)));
    assert!(
        detail.contains(&theirs[..8]) && detail.contains(&ours[..8]),
        "both digests' first 8 hex digits: {detail}"
    );
    // Nothing recorded: still sending, no draw; the connection stays open.
    assert_eq!(
        exchange(&mut stream, &get_winners_message(1)),
        Wire::NoWinners
    );
    let (_, stored_count, status) = session(server.port, 1);
    assert_eq!((stored_count, status), (2, 0));
    assert_eq!(
        exchange(&mut stream, &finish_of(1, &stored)),
        Wire::FinishAck(1, digest_of(&stored))
    );
    assert_eq!(fetch_winners(server.port, 1), vec!["7".to_string()]);
    // A repeated FINISH that differs from the record gets the same refusal.
    let (mut again, _, _) = session(server.port, 1);
    expect_error(
        exchange(&mut again, &finish_of(1, &other)),
        code::DIGEST_MISMATCH,
    );
}

#[test]
fn welcome_reports_the_stored_bets_and_where_the_round_stands() {
    let server = TestServer::start(2, &[("SERVER_DRAW_WAIT_MS", "0")]);
    assert_eq!(session(server.port, 1).1, 0);
    let (mut stream, _, _) = session(server.port, 1);
    let documents: Vec<String> = (0..4).map(|i| i.to_string()).collect();
    let bets = good_bets(&documents, 1);
    assert_eq!(
        exchange(&mut stream, &batch_of(1, 0, &documents[..1], 1)),
        Wire::BetsAck(1)
    );
    assert_eq!(
        exchange(&mut stream, &batch_of(1, 1, &documents[1..], 1)),
        Wire::BetsAck(3)
    );
    let welcome = |agency| exchange(&mut connect(server.port), &hello_message(agency, ANY_TOKEN));
    // The digest of the stored bets, whatever batches carried them.
    assert_eq!(welcome(1), Wire::Welcome(4, 0, digest_of(&bets)));
    assert_eq!(
        exchange(&mut stream, &finish_of(1, &bets)),
        Wire::FinishAck(1, digest_of(&bets))
    );
    assert_eq!(
        welcome(1),
        Wire::Welcome(4, 1, digest_of(&bets)),
        "finished, not drawn"
    );
    let (mut other, _, _) = session(server.port, 2);
    assert_eq!(
        exchange(&mut other, &finish_of(2, &[])),
        Wire::FinishAck(2, no_bets())
    );
    fetch_winners(server.port, 2);
    assert_eq!(welcome(1), Wire::Welcome(4, 2, digest_of(&bets)), "drawn");
    assert_eq!(welcome(2), Wire::Welcome(0, 2, no_bets()));
}
