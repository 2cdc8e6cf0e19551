//! The client trusts no server and no file: a scripted fake server answers
//! what no real server would, and agency files are huge, broken or not files
//! at all; the client ends each with a clear message, bounded memory, and
//! nothing from outside reaching its log raw.

mod common;

use common::*;
use std::path::Path;
use std::process::{Child, Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

/// Peak memory a client may use, whatever it is fed.
const PEAK_LIMIT_KIB: u64 = 16 * 1024;

/// Runs `command` to its end, sampling its peak memory meanwhile; returns its
/// output and the highest VmHWM seen (KiB).
fn run_sampled(command: &mut Command) -> (Output, u64) {
    let mut child = command.spawn().expect("start the client");
    let mut peak = 0;
    let end = std::time::Instant::now() + HANG;
    while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < end {
        peak = peak.max(peak_memory_kib(child.id()).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = child.kill();
    (child.wait_with_output().unwrap(), peak)
}

fn client_against(address: &str, data: &Path) -> Command {
    let mut command = client_command(1, address, data);
    command.env("CLI_TIMEOUT_S", "3");
    command
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A data file of `rows` valid bets.
fn data_file(dir: &Path, rows: usize) -> std::path::PathBuf {
    write_agency_files(dir, 1, rows);
    agency_file(dir, 1)
}

/// A fake server that takes the bets (acking each batch) and FINISH, then
/// answers every GET_WINNERS with `answer`.
fn fake_round(answer: impl Fn(&mut Exchange, u32) + Send + Sync + 'static) -> FakeServer {
    let stored = Arc::new(AtomicU32::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    // The bodies of the batches taken, for WELCOME's digest.
    let bodies = Arc::new(std::sync::Mutex::new(Vec::new()));
    FakeServer::start(move |mut exchange| {
        while let Some((id, message)) = exchange.read_request() {
            let reply = match id {
                0x0009 => welcome(
                    stored.load(Ordering::SeqCst),
                    u8::from(finished.load(Ordering::SeqCst)),
                    digest_of(&[bodies.lock().unwrap().clone()]),
                ),
                0x0001 => {
                    let count = bets_count(&message);
                    stored.fetch_add(u32::from(count), Ordering::SeqCst);
                    bodies.lock().unwrap().extend_from_slice(&message[14..]);
                    bets_ack(count)
                }
                0x0003 => {
                    finished.store(true, Ordering::SeqCst);
                    // The FINISH's own digest back: the receipt.
                    finish_ack(1, message[10..42].try_into().unwrap())
                }
                _ => {
                    answer(&mut exchange, stored.load(Ordering::SeqCst));
                    return;
                }
            };
            if !exchange.send(&reply) {
                return;
            }
        }
    })
}

#[test]
fn a_server_streaming_winners_forever_is_refused_with_memory_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_file(dir.path(), 60_000);
    let server = fake_round(|exchange, _| {
        // Parts of 10-digit documents, 6,000 to a part, without end.
        let part = winners_part(&vec!["1234567890"; 5957].join(","));
        while exchange.send(&part) {}
    });
    let (output, peak) = run_sampled(&mut client_against(&server.address(), &data));
    let log = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{log}");
    assert!(log.contains("more winners than the 60000 bets"), "{log}");
    eprintln!("endless WINNERS_PART: client peak {peak} KiB");
    assert!(peak > 0 && peak < PEAK_LIMIT_KIB, "peak {peak} KiB");
}

fn refused_winners(answer: Vec<u8>, wanted: &str) {
    let dir = tempfile::tempdir().unwrap();
    let data = data_file(dir.path(), 10);
    let server = fake_round(move |exchange, _| {
        exchange.send(&answer);
    });
    let output = run_expecting(&mut client_against(&server.address(), &data), 1);
    let log = stderr(&output);
    assert!(log.contains(wanted), "{wanted:?} in:\n{log}");
}

#[test]
fn an_empty_winners_part_is_refused() {
    refused_winners(
        [winners_part(""), winners("1")].concat(),
        "an empty WINNERS_PART",
    );
}

#[test]
fn a_winner_that_is_not_a_document_is_refused() {
    refused_winners(winners("12,abc"), "is not a document of 1 to 10 digits");
}

#[test]
fn a_list_longer_than_the_bets_stored_is_refused() {
    let list: Vec<String> = (0..11).map(|i| i.to_string()).collect();
    refused_winners(winners(&list.join(",")), "more winners than the 10 bets");
}

#[test]
fn an_error_detail_over_the_limit_is_refused() {
    refused_winners(error_reply(7, &[b'x'; 5000]), "over the limit");
}

#[test]
fn garbage_ids_are_refused() {
    refused_winners(vec![0x77, 0x77, 0, 0, 0, 0], "unknown message id 0x7777");
}

#[test]
fn an_ack_with_the_wrong_count_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_file(dir.path(), 10);
    let server = FakeServer::start(|mut exchange| {
        while let Some((id, message)) = exchange.read_request() {
            let reply = match id {
                0x0009 => welcome(0, 0, no_bets()),
                _ => bets_ack(bets_count(&message) + 1),
            };
            if !exchange.send(&reply) {
                return;
            }
        }
    });
    let output = run_expecting(&mut client_against(&server.address(), &data), 1);
    assert!(
        stderr(&output).contains("an ack of 11 bets arrived for a batch of 10"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn an_error_detail_cannot_forge_a_log_line_or_reach_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_file(dir.path(), 10);
    let forged = b"no\n2026-12-02T00:00:00.000Z INFO  action: consulta_ganadores | result: success | cant_ganadores: 999\x1b[31m\x1b]0;owned\x07";
    let server = FakeServer::start(move |mut exchange| {
        while let Some((id, _)) = exchange.read_request() {
            let reply = match id {
                0x0009 => welcome(0, 0, no_bets()),
                _ => error_reply(4, forged),
            };
            if !exchange.send(&reply) {
                return;
            }
        }
    });
    let output = run_expecting(&mut client_against(&server.address(), &data), 1);
    let log = stderr(&output);
    assert!(
        !log.bytes().any(|b| b == 0x1b || b == 0x07),
        "raw escapes reached the log:\n{log}"
    );
    assert!(
        !log.lines()
            .any(|l| l.contains("action: consulta_ganadores | result: success")),
        "a forged line:\n{log}"
    );
    assert!(log.contains("\\u{1b}[31m"), "{log}");
}

#[test]
fn a_reply_that_never_ends_ends_the_wait_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_file(dir.path(), 10);
    let server = fake_round(|exchange, _| {
        // A WINNERS of 65,535 bytes, a digit every 100 ms: it would take 2 hours.
        if !exchange.send(&[0, 7, 0xFF, 0xFF]) {
            return;
        }
        while exchange.send(b"1") {
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let output = run_expecting(&mut client_against(&server.address(), &data), 1);
    let log = stderr(&output);
    assert!(log.contains("the draw did not happen within 3 s"), "{log}");
    assert!(log.contains("no complete message within"), "{log}");
}

#[test]
fn a_server_answering_busy_forever_is_given_up_on_after_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_file(dir.path(), 10);
    let server = FakeServer::start(|mut exchange| {
        exchange.send(&error_reply(8, b"retry later"));
    });
    let output = run_expecting(&mut client_against(&server.address(), &data), 1);
    let log = stderr(&output);
    assert!(
        log.contains("no progress for 3 s") && log.contains("BUSY"),
        "{log}"
    );
    assert!(
        server.connections.load(Ordering::SeqCst) > 1,
        "it tried again"
    );
}

/// Runs agency 1 on `file` against a real server of two agencies (the draw
/// never comes), waits until its FINISH is recorded, and returns its peak
/// memory and log. The file is read whole before FINISH, so the peak is known.
fn read_through_real_server(file: &Path) -> (u64, String, ServerProcess) {
    let server = ServerProcess::start(2, &[]);
    let child: Child = client_command(1, &server.address(), file)
        .env("CLI_TIMEOUT_S", "600")
        .spawn()
        .unwrap();
    server.wait_for_log("agencia: 1 | total_agencias_finalizadas: 1");
    let peak = peak_memory_kib(child.id()).unwrap_or(0);
    signal_pid(child.id(), "TERM");
    let (_, log) = exit_and_log(child);
    (peak, log, server)
}

#[test]
fn a_line_of_50_mib_is_skipped_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agency-1.csv");
    let mut text = b"Ana,Gil,1,2000-01-01,7574\r\n".to_vec();
    text.extend(std::iter::repeat_n(b'x', 50 << 20));
    text.extend(b"\r\nEva,Sol,2,2000-01-01,1\r\n");
    std::fs::write(&path, text).unwrap();
    let (peak, log, server) = read_through_real_server(&path);
    eprintln!("a 50 MiB line: client peak {peak} KiB");
    assert!(peak > 0 && peak < PEAK_LIMIT_KIB, "peak {peak} KiB");
    assert!(
        log.contains("linea: 2 | error: the row is longer than 4096 bytes"),
        "{log}"
    );
    assert_eq!(server.stored_rows().len(), 2);
}

#[test]
fn a_file_of_a_gigabyte_is_read_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agency-1.csv");
    // Sparse: a gigabyte of zeros that takes no disk.
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(1 << 30).unwrap();
    drop(file);
    let (peak, log, _server) = read_through_real_server(&path);
    eprintln!("a 1 GiB file: client peak {peak} KiB");
    assert!(peak > 0 && peak < PEAK_LIMIT_KIB, "peak {peak} KiB");
    assert!(log.contains("linea: 1 | error: the row is longer"), "{log}");
}

#[test]
fn an_unclosed_quote_is_reported_where_it_opened_with_the_lines_it_took() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agency-1.csv");
    let mut text = String::from("\"Ana,Gil,1,2000-01-01,7574\r\n");
    for i in 0..100 {
        text.push_str(&format!("Row{i},X,{i},2000-01-01,1\r\n"));
    }
    std::fs::write(&path, text).unwrap();
    let (peak, log, server) = read_through_real_server(&path);
    assert!(peak < PEAK_LIMIT_KIB, "peak {peak} KiB");
    assert!(
        log.contains("linea: 1 | lineas: 101 | error: a quote opened on this line"),
        "{log}"
    );
    assert!(log.contains("invalidas: 101"), "{log}");
    assert!(server.stored_rows().is_empty());
}

#[test]
fn a_byte_order_mark_is_not_part_of_the_first_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agency-1.csv");
    std::fs::write(&path, "\u{feff}Ana,Gil,1,2000-01-01,1\r\n").unwrap();
    let (_, _, server) = read_through_real_server(&path);
    assert_eq!(server.stored_rows(), ["1,Ana,Gil,1,2000-01-01,1"]);
}

#[test]
fn cr_only_and_mixed_line_ends_are_rows_and_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agency-1.csv");
    std::fs::write(
        &path,
        "Ana,Gil,1,2000-01-01,1\rEva,Sol,2,2000-01-01,2\nLuis,Paz,3,2000-01-01,3\r\nBad,Row,x,2000-01-01,4\rMía,Ruiz,5,2000-01-01,5",
    )
    .unwrap();
    let (_, log, server) = read_through_real_server(&path);
    assert!(log.contains("linea: 4 | error: document"), "{log}");
    let documents: Vec<String> = server
        .stored_rows()
        .iter()
        .map(|r| r.split(',').nth(3).unwrap().to_string())
        .collect();
    assert_eq!(documents, ["1", "2", "3", "5"]);
}

#[test]
fn a_device_or_a_directory_is_not_an_agency_file() {
    let dir = tempfile::tempdir().unwrap();
    for (path, kind) in [
        (Path::new("/dev/zero"), "device"),
        (dir.path(), "directory"),
    ] {
        let (output, peak) = run_sampled(&mut client_against("127.0.0.1:1", path));
        let log = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{log}");
        assert!(log.contains(kind) && log.contains("CLI_DATA_FILE"), "{log}");
        assert!(peak < PEAK_LIMIT_KIB);
    }
}
