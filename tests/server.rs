//! The server's behaviour over real TCP, in-process on port 0: the stored rows,
//! the draw and its waiters, long winner lists, slow, broken and hostile peers,
//! and many agencies at once.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

#[test]
fn stored_rows_match_the_reference_format() {
    let server = TestServer::start(1, &[]);
    let (mut stream, _, _) = session(server.port, 1);
    let bets = vec![
        bet_bytes(b"Ana", b"O\"Brien, Jr", b"123", b"2000-01-01", 42),
        bet_bytes("José".as_bytes(), b"Ruiz", b"7", b"1999-12-31", 7574),
    ];
    assert_eq!(
        exchange(&mut stream, &bets_message(1, 0, 2, &bets)),
        Wire::BetsAck(2)
    );
    let text = std::fs::read_to_string(&server.bets_file).unwrap();
    assert_eq!(
        text,
        "1,Ana,\"O\"\"Brien, Jr\",123,2000-01-01,42\r\n1,José,Ruiz,7,1999-12-31,7574\r\n"
    );
}

#[test]
fn welcome_and_no_winners_have_exactly_the_documented_bytes() {
    let server = TestServer::start(2, &[("SERVER_DRAW_WAIT_MS", "0")]);
    let mut stream = connect(server.port);
    stream.write_all(&hello_message(1, ANY_TOKEN)).unwrap();
    let mut welcome = [0u8; 39];
    stream.read_exact(&mut welcome).unwrap();
    // No bets yet: stored 0, status 0, and the digest of nothing (e3b0c442…).
    let mut expected = vec![0x00, 0x0A, 0, 0, 0, 0, 0];
    expected.extend_from_slice(&no_bets());
    assert_eq!(welcome[..], expected[..], "exactly the WELCOME bytes");
    assert_eq!(&welcome[7..11], &[0xe3, 0xb0, 0xc4, 0x42]);
    stream.write_all(&get_winners_message(1)).unwrap();
    let mut reply = [0u8; 2];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(reply, [0x00, 0x06], "exactly the NO_WINNERS bytes");
    assert_eq!(
        exchange(&mut stream, &get_winners_message(1)),
        Wire::NoWinners
    );
}

#[test]
fn a_repeated_finish_is_acked_and_does_not_count_toward_the_draw() {
    let server = TestServer::start(2, &[("SERVER_DRAW_WAIT_MS", "0")]);
    let (mut stream, _, _) = session(server.port, 1);
    let bets = [good_bet("111", 7574)];
    assert_eq!(
        exchange(&mut stream, &bets_message(1, 0, 1, &bets)),
        Wire::BetsAck(1)
    );
    assert_eq!(
        exchange(&mut stream, &finish_of(1, &bets)),
        Wire::FinishAck(1, digest_of(&bets))
    );
    assert_eq!(
        exchange(&mut stream, &finish_of(1, &bets)),
        Wire::FinishAck(1, digest_of(&bets))
    );
    assert_eq!(
        exchange(&mut stream, &get_winners_message(1)),
        Wire::NoWinners
    );
    let (mut other, _, _) = session(server.port, 2);
    assert_eq!(
        exchange(&mut other, &finish_of(2, &[])),
        Wire::FinishAck(2, no_bets())
    );
    assert_eq!(fetch_winners(server.port, 1), vec!["111".to_string()]);
    assert_eq!(fetch_winners(server.port, 2), Vec::<String>::new());
}

#[test]
fn a_waiting_get_winners_is_woken_by_the_draw() {
    // The draw wait is far longer than the test may take: a WINNERS (not a
    // NO_WINNERS after the wait) proves the waiter was woken by the draw.
    let server = TestServer::start(1, &[("SERVER_DRAW_WAIT_MS", "3600000")]);
    let (mut waiter, _, _) = session(server.port, 1);
    waiter.write_all(&get_winners_message(1)).unwrap();
    let (mut stream, _, _) = session(server.port, 1);
    let bets = [good_bet("42", 7574)];
    assert_eq!(
        exchange(&mut stream, &bets_message(1, 0, 1, &bets)),
        Wire::BetsAck(1)
    );
    assert_eq!(
        exchange(&mut stream, &finish_of(1, &bets)),
        Wire::FinishAck(1, digest_of(&bets))
    );
    assert_eq!(read_wire(&mut waiter), Wire::Winners("42".into()));
}

#[test]
fn winner_lists_over_64_kib_arrive_in_parts_of_whole_documents() {
    // 7000 winners of 10 digits: 76,999 bytes joined, so at least two messages.
    let server = TestServer::start(1, &[("SERVER_DRAW_WAIT_MS", "3600000")]);
    let (mut stream, _, _) = session(server.port, 1);
    let mut expected = Vec::new();
    let mut sent = Vec::new();
    for batch in 0..70u32 {
        let documents: Vec<String> = (0..100u32)
            .map(|i| format!("{:010}", batch * 100 + i + 1_000_000_000))
            .collect();
        expected.extend(documents.iter().cloned());
        sent.extend(good_bets(&documents, 7574));
        let message = batch_of(1, batch * 100, &documents, 7574);
        assert_eq!(exchange(&mut stream, &message), Wire::BetsAck(100));
    }
    assert_eq!(
        exchange(&mut stream, &finish_of(1, &sent)),
        Wire::FinishAck(1, digest_of(&sent))
    );
    let (mut stream, _, _) = session(server.port, 1);
    stream.write_all(&get_winners_message(1)).unwrap();
    let mut parts = Vec::new();
    loop {
        match read_wire(&mut stream) {
            Wire::WinnersPart(p) => {
                assert!(!p.is_empty() && !p.starts_with(',') && !p.ends_with(','));
                parts.push(p);
            }
            Wire::Winners(p) => {
                assert!(!p.is_empty(), "the final WINNERS after parts is not empty");
                parts.push(p);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(parts.len() >= 2);
    assert!(parts.iter().all(|p| p.len() <= 65_535));
    assert_eq!(parts.join(","), expected.join(","));
}

#[test]
fn a_client_writing_one_byte_at_a_time_gets_the_same_answers() {
    let server = TestServer::start(1, &[("SERVER_DRAW_WAIT_MS", "3600000")]);
    let mut stream = connect(server.port);
    let mut trickle = |bytes: &[u8]| {
        for b in bytes {
            stream.write_all(&[*b]).unwrap();
        }
        read_wire(&mut stream)
    };
    assert_eq!(
        trickle(&hello_message(1, ANY_TOKEN)),
        Wire::Welcome(0, 0, no_bets())
    );
    let bets = [good_bet("31", 7574), good_bet("32", 5)];
    assert_eq!(trickle(&bets_message(1, 0, 2, &bets)), Wire::BetsAck(2));
    assert_eq!(
        trickle(&finish_of(1, &bets)),
        Wire::FinishAck(1, digest_of(&bets))
    );
    assert_eq!(trickle(&get_winners_message(1)), Wire::Winners("31".into()));
    assert_eq!(server.stored_rows().len(), 2);
}

#[test]
fn a_client_that_disconnects_mid_message_stores_nothing() {
    let mut server = TestServer::start(1, &[]);
    let batch = bets_message(
        1,
        0,
        3,
        &[good_bet("1", 1), good_bet("2", 2), good_bet("3", 3)],
    );
    for cut in [1, 9, 10, 14, batch.len() / 2, batch.len() - 1] {
        let (mut stream, _, _) = session(server.port, 1);
        stream.write_all(&batch[..cut]).unwrap();
    }
    // The server still serves a whole batch, and only that one is stored.
    let (mut stream, _, _) = session(server.port, 1);
    assert_eq!(exchange(&mut stream, &batch), Wire::BetsAck(3));
    // Stopping joins every handler: the cut connections are all done with.
    server.stop();
    assert_eq!(server.stored_rows().len(), 3);
}

#[test]
fn a_slowloris_is_closed_by_the_idle_deadline_and_never_delays_others() {
    // Long enough that serving another client (milliseconds) cannot outlast it.
    let idle = Duration::from_secs(6);
    let server = TestServer::start(1, &[("SERVER_IDLE_TIMEOUT_MS", "6000")]);
    let (mut slow, _, _) = session(server.port, 1);
    // A BETS header promising a body that never completes, a byte every 100 ms.
    let header = [0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0x10, 0x00];
    let mut reader = slow.try_clone().unwrap();
    let trickler = std::thread::spawn(move || {
        let started = Instant::now();
        for i in 0.. {
            let byte = header.get(i).copied().unwrap_or(b'x');
            if slow.write_all(&[byte]).is_err() || started.elapsed() > HANG {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let started = Instant::now();
    // Another client is served while the slow one is still open: its ack comes
    // back, then the slow connection is seen still open.
    let (mut other, _, _) = session(server.port, 1);
    assert_eq!(
        exchange(&mut other, &bets_message(1, 0, 1, &[good_bet("7", 7)])),
        Wire::BetsAck(1)
    );
    reader.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let still_open =
        matches!(reader.read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    assert!(
        still_open,
        "the other client was served only after the slow one was closed"
    );
    reader.set_nonblocking(false).unwrap();
    // The slow one is closed, though bytes kept coming, once the deadline passed.
    assert_closed(&mut reader);
    assert!(started.elapsed() >= idle - Duration::from_millis(200));
    trickler.join().unwrap();
    assert_eq!(server.stored_rows().len(), 1);
}

#[test]
fn fifty_agencies_at_once_store_every_row_whole_and_get_their_winners() {
    let data = tempfile::tempdir().unwrap();
    let expected = write_agency_files(data.path(), 50, 400);
    let server = TestServer::start(50, &[]);
    let outcomes = run_agencies(50, &server.address(), data.path());
    for (index, outcome) in outcomes.into_iter().enumerate() {
        let summary = outcome.unwrap_or_else(|e| panic!("agency {}: {e}", index + 1));
        assert_eq!(summary.bets_sent, 400);
        assert_eq!(summary.winners, expected[index], "agency {}", index + 1);
    }
    let text = std::fs::read_to_string(&server.bets_file).unwrap();
    assert!(text.ends_with("\r\n"));
    let mut per_agency = vec![0usize; 51];
    for row in text.lines() {
        let fields: Vec<&str> = row.split(',').collect();
        assert_eq!(fields.len(), 6, "a torn or interleaved row: {row:?}");
        per_agency[fields[0].parse::<usize>().expect("agency column")] += 1;
    }
    assert!(per_agency[1..].iter().all(|&n| n == 400));
}

#[test]
fn random_bytes_from_many_connections_never_bring_the_server_down() {
    // Agency 777 is one the random bytes will not plausibly finish.
    let mut server = TestServer::start(1000, &[("SERVER_IDLE_TIMEOUT_MS", "300")]);
    let mut next = seeded(0xDEAD_BEEF_CAFE_F00D);
    let hello = hello_message(1, ANY_TOKEN);
    let seeds = [
        [hello.clone(), bets_message(1, 0, 1, &[good_bet("1", 1)])].concat(),
        [hello.clone(), finish_of(1, &[good_bet("1", 1)])].concat(),
        [hello, get_winners_message(1)].concat(),
    ];
    for round in 0..200 {
        let mut bytes = if round % 2 == 0 {
            seeds[(next() % 3) as usize].clone()
        } else {
            (0..next() % 200).map(|_| next() as u8).collect()
        };
        for _ in 0..next() % 4 {
            if !bytes.is_empty() {
                let at = (next() % bytes.len() as u64) as usize;
                bytes[at] = next() as u8;
            }
        }
        let mut stream = connect(server.port);
        let _ = stream.write_all(&bytes);
        let _ = stream.shutdown(Shutdown::Write);
        let mut sink = Vec::new();
        let _ = stream.read_to_end(&mut sink);
    }
    let (mut stream, stored, _) = session(server.port, 777);
    assert_eq!(
        exchange(
            &mut stream,
            &bets_message(777, stored, 1, &[good_bet("99", 7574)])
        ),
        Wire::BetsAck(1)
    );
    // A clean stop joins every handler: none of them panicked.
    server.stop();
}
