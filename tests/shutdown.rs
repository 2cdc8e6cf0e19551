//! The orderly stop, with the real binaries: SIGTERM and SIGINT to a server idle,
//! ingesting, or holding agencies that wait on the draw, and to a client.
//!
//! Every timeout the server has is set far longer than the test may last, so a
//! stop that waited for one would fail the fixed bound checked here; the bound
//! itself is generous (seconds), because a stop may finish a disk flush under way.

mod common;

use common::*;
use lottery::stamp_ms;
use std::process::Child;

/// Idle connections and draw waits far longer than any test.
const LONG_TIMEOUTS: [(&str, &str); 2] = [
    ("SERVER_IDLE_TIMEOUT_MS", "600000"),
    ("SERVER_DRAW_WAIT_MS", "600000"),
];
/// The server's own stop, signal to exit line, is well under this.
const STOP_BOUND_MS: u64 = 10_000;

/// The stop after `signal`: exit 0, every step logged in order, and the
/// server's own stop (its log's stamps, from the signal's arrival to its exit
/// line) within `STOP_BOUND_MS`.
fn assert_clean_stop(server: &mut ServerProcess, signal: &str) {
    server.signal(signal);
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(0), "{}", server.describe());
    let received = format!("action: shutdown | result: in_progress | signal: SIG{signal}");
    let (lines, at) = server.assert_logged_in_order(&[
        &received,
        "action: close_listener | result: success",
        "action: close_bets_file | result: success",
        "action: shutdown | result: success",
        "action: exit | result: success",
    ]);
    let (received, exited) = (at[0], at[4]);
    let took = stamp_ms(&lines[exited])
        .zip(stamp_ms(&lines[received]))
        .and_then(|(end, start)| end.checked_sub(start))
        .unwrap_or_else(|| panic!("unreadable log stamps:\n{}", server.describe()));
    assert!(
        took < STOP_BOUND_MS,
        "the stop took {took} ms:\n{}",
        server.describe()
    );
}

#[test]
fn sigterm_and_sigint_stop_an_idle_server_cleanly() {
    for signal in ["TERM", "INT"] {
        let mut server = ServerProcess::start(1, &LONG_TIMEOUTS);
        // An idle connection is open: the stop must not wait for its timeout.
        let _idle = connect(server.port);
        assert_clean_stop(&mut server, signal);
    }
}

#[test]
fn sigterm_during_ingest_keeps_every_acked_batch_whole() {
    stop_during_ingest("TERM");
}

#[test]
fn sigint_during_ingest_keeps_every_acked_batch_whole() {
    stop_during_ingest("INT");
}

fn stop_during_ingest(signal: &str) {
    let data = tempfile::tempdir().unwrap();
    write_agency_files(data.path(), 5, 40_000);
    let mut server = ServerProcess::start(5, &LONG_TIMEOUTS);
    let clients: Vec<Child> = (1..=5)
        .map(|id| {
            client_command(id, &server.address(), &agency_file(data.path(), id))
                // Small batches, one at a time: the ingest lasts past the signal.
                .env("CLI_BATCH_MAXAMOUNT", "10")
                .env("CLI_BATCHES_IN_FLIGHT", "1")
                // With the server gone, they give up after 2 s without progress.
                .env("CLI_TIMEOUT_S", "2")
                .spawn()
                .unwrap()
        })
        .collect();
    // Every agency connected and storing: none is still starting when the
    // server stops (it would retry until its timeout).
    for id in 1..=5 {
        server.wait_for_log(&format!(
            "apuesta_recibida | result: success | cantidad: 10 | agencia: {id}"
        ));
    }
    assert_clean_stop(&mut server, signal);

    let mut interrupted = 0;
    for client in clients {
        let output = output_of(client);
        let log = String::from_utf8_lossy(&output.stderr);
        assert!(!log.contains("panicked"), "{log}");
        if !output.status.success() {
            interrupted += 1;
            assert!(
                log.contains("action: exit | result: fail | error:"),
                "a clear message: {log}"
            );
        }
    }
    assert!(interrupted > 0, "the clients were cut off mid-ingest");

    // Every acknowledged bet is in the file, whole, and nothing else is.
    let acked: usize = server
        .log_lines()
        .iter()
        .filter(|l| l.contains("action: apuesta_recibida | result: success"))
        .filter_map(|l| {
            l.split("cantidad: ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .sum();
    let text = std::fs::read_to_string(&server.bets_file).unwrap();
    assert!(
        text.is_empty() || text.ends_with("\r\n"),
        "the file ends with a whole row"
    );
    assert_eq!(text.lines().count(), acked);
    assert!(text.lines().all(|row| row.split(',').count() == 6));
}

#[test]
fn sigterm_and_sigint_wake_get_winners_waiting_on_the_draw() {
    for signal in ["TERM", "INT"] {
        let mut server = ServerProcess::start(2, &LONG_TIMEOUTS);
        let port = server.port;
        let baseline = thread_count(server.pid());
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                std::thread::spawn(move || {
                    let (mut stream, _, _) = session(port, 1);
                    exchange(&mut stream, &get_winners_message(1))
                })
            })
            .collect();
        // One handler thread per waiter: all three are waiting on the draw.
        wait_for_threads(server.pid(), baseline + 3);
        assert_clean_stop(&mut server, signal);
        // Woken on the draw, or cut off while reading their request: either
        // way the handler answers SHUTTING_DOWN on the still-open write side.
        for waiter in waiters {
            expect_error(waiter.join().unwrap(), code::SHUTTING_DOWN);
        }
        assert_eq!(
            server.count_log("action: close_connection | result: success"),
            3,
            "{}",
            server.describe()
        );
    }
}

#[test]
fn a_signal_before_the_winners_stops_the_client_with_128_plus_its_number() {
    for (signal, status) in [("TERM", 143), ("INT", 130)] {
        // Agency 2 never finishes, so the client keeps asking for the winners.
        let server = ServerProcess::start(2, &LONG_TIMEOUTS);
        let client = client_command(1, &server.address(), &agency_file(&default_data_dir(), 1))
            .env("CLI_TIMEOUT_S", "600")
            .spawn()
            .unwrap();
        server.wait_for_log("agencia: 1 | total_agencias_finalizadas: 1");
        signal_pid(client.id(), signal);
        let (exit, log) = exit_and_log(client);
        assert_eq!(exit.code(), Some(status), "{log}");
        assert!(log.contains("action: shutdown | result: success"), "{log}");
        assert!(
            log.contains(
                "action: exit | result: fail | apuestas_confirmadas: 2000 | apuestas_leidas: 2000"
            ),
            "{log}"
        );
    }
}

#[test]
fn a_long_start_reports_its_progress_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let bets_file = dir.path().join("bets.csv");
    // Enough rows that reading them back takes over a second here.
    let mut text = String::with_capacity(40 << 20);
    for row in 0..1_000_000u32 {
        text.push_str(&format!("1,Ana,Gil,{row},2000-01-01,{}\r\n", row % 10_000));
    }
    std::fs::write(&bets_file, &text).unwrap();
    let mut server = ServerProcess::spawn(1, &[], dir.path(), &bets_file);
    server.wait_for_log("action: ronda_recuperada | result: in_progress | filas_leidas:");
    server.signal("TERM");
    let (status, log) = server.wait_for_exit_and_log();
    if log.contains("action: config | result: success") {
        // The round was read before the signal arrived: an ordinary stop.
        assert_eq!(status.code(), Some(0), "{log}");
        return;
    }
    assert_eq!(status.code(), Some(0), "{log}");
    server.assert_logged_in_order(&[
        "action: shutdown | result: in_progress | signal: SIGTERM",
        "action: shutdown | result: success | detail: stopped while reading the round back",
        "action: exit | result: success",
    ]);
    // Nothing was changed: not a byte, and no FINISH records were made.
    assert!(std::fs::read_to_string(&bets_file).unwrap() == text);
    let mut records = bets_file.into_os_string();
    records.push(".finished");
    assert!(!std::path::Path::new(&records).exists());
}

#[test]
fn a_draw_at_start_reports_itself_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let bets_file = dir.path().join("bets.csv");
    // A finished round of one agency, large enough that drawing it takes a while.
    let rows = 1_000_000u32;
    let mut text = String::with_capacity(40 << 20);
    let mut bets = Vec::with_capacity(rows as usize);
    for row in 0..rows {
        let (document, number) = (row.to_string(), (row % 10_000) as u16);
        text.push_str(&format!("1,Ana,Gil,{document},2000-01-01,{number}\r\n"));
        bets.push(bet_bytes(
            b"Ana",
            b"Gil",
            document.as_bytes(),
            b"2000-01-01",
            number,
        ));
    }
    std::fs::write(&bets_file, &text).unwrap();
    let mut records = bets_file.clone().into_os_string();
    records.push(".finished");
    let records_text = format!("agencies 1\nfinished 1 {rows} {}\n", hex(&digest_of(&bets)));
    std::fs::write(&records, &records_text).unwrap();

    let mut server = ServerProcess::spawn(1, &[], dir.path(), &bets_file);
    server.wait_for_log("action: sorteo | result: in_progress | detail: every agency");
    server.signal("TERM");
    let (status, log) = server.wait_for_exit_and_log();
    assert_eq!(status.code(), Some(0), "{log}");
    if log.contains("action: config | result: success") {
        // The draw ended before the signal arrived: an ordinary stop.
        eprintln!("the draw ended before the signal");
        return;
    }
    server.assert_logged_in_order(&[
        "action: shutdown | result: in_progress | signal: SIGTERM",
        "action: sorteo | result: fail | error: stopped while reading",
        "action: shutdown | result: success",
        "action: exit | result: success",
    ]);
    // Nothing was changed.
    assert!(std::fs::read_to_string(&bets_file).unwrap() == text);
    assert_eq!(std::fs::read_to_string(&records).unwrap(), records_text);
}
