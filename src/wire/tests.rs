//! The codec's tests: exact bytes, round trips, and hostile input.

use super::digest::Digest;
use super::limits::MAX_WINNERS_PAYLOAD_LEN;
use super::*;
use crate::bet::{Bet, BetRef};

fn bet(first: &str, number: u16) -> Bet {
    Bet {
        first_name: first.into(),
        last_name: "Pérez".into(),
        document: "12345678".into(),
        birthdate: "1990-05-17".into(),
        number,
    }
}

/// The tests' seeded generator (repeatable random input): the next `u64`.
fn seeded(seed: u64) -> impl FnMut() -> u64 {
    let mut rng = fastrand::Rng::with_seed(seed);
    move || rng.u64(..)
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

/// The reason of a `Malformed` decoding of `bytes`; panics on anything else.
fn malformed_reason(bytes: &[u8]) -> String {
    match decode_request(bytes) {
        Err(ProtocolError::Malformed(reason)) => reason,
        other => panic!("expected MALFORMED for {bytes:?}, got {other:?}"),
    }
}

/// A BETS of one good bet, as bytes to damage.
fn one_bet_message() -> Vec<u8> {
    Request::Bets {
        agency: 1,
        first: 0,
        batch: BetBatch::new(&[bet("Ana", 1)]).unwrap(),
    }
    .encode()
    .unwrap()
}

#[test]
fn a_batch_of_count_0_is_malformed() {
    let count_zero = [0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
    assert_eq!(malformed_reason(&count_zero), "BETS with count 0");
}

#[test]
fn bytes_after_the_last_bet_are_malformed() {
    let mut trailing = one_bet_message();
    trailing.push(0);
    trailing[13] += 1;
    assert_eq!(malformed_reason(&trailing), "1 trailing bytes after 1 bets");
}

#[test]
fn a_field_that_is_not_utf8_is_malformed_by_the_batch_check() {
    let mut bad_utf8 = one_bet_message();
    bad_utf8[16] = 0xFF;
    // The decoder reads the lengths; the text check names the field.
    let Ok(Some((Request::Bets { batch, .. }, _))) = decode_request(&bad_utf8) else {
        panic!("the lengths add up");
    };
    assert_eq!(
        batch.check_text(),
        Err(ProtocolError::Malformed(
            "first_name is not valid UTF-8".into()
        ))
    );
    let good = one_bet_message();
    let Ok(Some((Request::Bets { batch, .. }, _))) = decode_request(&good) else {
        panic!("a good batch decodes");
    };
    assert_eq!(batch.check_text(), Ok(()));
}

#[test]
fn ids_of_no_request_are_unknown_messages() {
    assert_eq!(
        decode_request(&[0, 0x0B]),
        Err(ProtocolError::UnknownMessage { id: 0x0B })
    );
    // A reply's id is not a request's.
    assert_eq!(
        decode_request(&[0, 2, 0, 0]),
        Err(ProtocolError::UnknownMessage { id: 2 })
    );
}

#[test]
fn a_batch_numbered_past_the_last_bet_number_is_malformed() {
    let past_the_end = [0, 1, 0, 0, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF, 0, 1, 0, 10];
    assert_eq!(
        malformed_reason(&past_the_end),
        "BETS numbered from 4294967295 with 1 bets runs past the last bet number"
    );
}

#[test]
fn a_token_over_255_bytes_is_malformed_from_the_header_alone() {
    assert_eq!(
        malformed_reason(&[0, 9, 0, 3, 0, 0, 0, 1, 1, 0]),
        "a HELLO token of 256 bytes is over the limit of 255"
    );
}

#[test]
fn a_token_that_is_not_utf8_is_malformed() {
    assert_eq!(
        malformed_reason(&[0, 9, 0, 3, 0, 0, 0, 1, 0, 1, 0xFF]),
        "token is not valid UTF-8"
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
    let mut next = seeded(0x0123_4567_89AB_CDEF);
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
    let mut next = seeded(0x9E37_79B9_7F4A_7C15);
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
    let mut next = seeded(0x0BAD_C0DE_DEAD_BEEF);
    let seeds: Vec<Vec<u8>> = every_reply().iter().map(|r| r.encode().unwrap()).collect();
    for round in 0..20_000 {
        let bytes = mutated(&mut next, &seeds, round, 80);
        if let Ok(Some((reply, used))) = decode_reply(&bytes) {
            assert!(used <= bytes.len() && used <= MAX_REPLY_LEN);
            assert_eq!(reply.encode().unwrap(), bytes[..used]);
        }
    }
}

#[test]
fn a_valid_bet_encodes_to_the_same_bytes_unchecked_as_checked() {
    let mut rng = fastrand::Rng::with_seed(0x00E7_C0DE_0000_0001);
    let letters = ["a", "Z", " ", "ñ", "É", "ß", "'", "-", "Ω", "語"];
    let mut text = |max: usize| {
        let mut s = String::from("N");
        while s.len() < max && rng.u8(..8) != 0 {
            s.push_str(letters[rng.usize(..letters.len())]);
        }
        s
    };
    let (mut checked, mut unchecked) = (Vec::new(), Vec::new());
    let mut room = [0xAA; MAX_VALID_BET_LEN + 1];
    for round in 0..5_000 {
        let bet = Bet {
            first_name: text(if round % 7 == 0 { 253 } else { 20 }),
            last_name: text(if round % 11 == 0 { 253 } else { 12 }),
            document: "1234567890"[..1 + round % 10].into(),
            birthdate: format!("{}-02-{:02}", 1900 + round % 120, 1 + round % 28),
            number: (round % 10_000) as u16,
        };
        let valid = bet.valid();
        encode_bet(*valid, &mut checked).unwrap();
        let len = write_valid_bet(&valid, &mut room);
        unchecked.extend_from_slice(&room[..len]);
        assert_eq!(unchecked, checked, "{bet:?}");
        // Nothing past the bet is written.
        assert!(room[len..].iter().all(|&b| b == 0xAA), "{bet:?}");
        room.fill(0xAA);
    }
    assert!(checked.len() > 100_000);
    // Without the room for the longest valid bet, nothing is written.
    assert_eq!(write_valid_bet(&bet("Ana", 1).valid(), &mut [0; 10]), 0);
}
