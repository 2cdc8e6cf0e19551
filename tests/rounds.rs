//! Rounds that prove themselves (protocol version 3): an agency never resumes or
//! reports a round that is not its file's, receipts and the seal tie the logs to
//! the bets, a round whose files were changed after the fact does not start
//! again, `server --verify` audits a round read-only, and a restarted server
//! flushes what it finds before it counts a row.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The bets of an agency file written by `write_agency_files`, as the wire
/// carries them (its rows have no quotes, so a comma ends every field).
fn file_bets(path: &Path) -> Vec<Vec<u8>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            let number = f[4].parse().unwrap();
            bet_bytes(
                f[0].as_bytes(),
                f[1].as_bytes(),
                f[2].as_bytes(),
                f[3].as_bytes(),
                number,
            )
        })
        .collect()
}

/// The 64 hex digits after `key: ` in a log line.
fn logged_digest(line: &str, key: &str) -> String {
    let start = line
        .find(&format!("{key}: "))
        .unwrap_or_else(|| panic!("no {key} in {line}"))
        + key.len()
        + 2;
    line[start..start + 64].to_string()
}

/// A client for agency 1 on `data`, with a short timeout.
fn client(address: &str, data: &Path) -> Command {
    let mut command = client_command(1, address, data);
    command.env("CLI_TIMEOUT_S", "5");
    command
}

#[test]
fn a_client_resumed_against_another_rounds_bets_exits_1_and_sends_nothing() {
    let server = TestServer::start(1, &[]);
    // The server holds two bets of agency 1 that are not its file's.
    let (mut stream, _, _) = session(server.port, 1);
    let theirs = [good_bet("1", 1), good_bet("2", 7574)];
    assert_eq!(
        exchange(&mut stream, &bets_message(1, 0, 2, &theirs)),
        Wire::BetsAck(2)
    );
    let dir = tempfile::tempdir().unwrap();
    write_agency_files(dir.path(), 1, 5);
    let data = agency_file(dir.path(), 1);
    let output = run_expecting(&mut client(&server.address(), &data), 1);
    let log = stderr(&output);
    assert!(
        log.contains("action: reanudar | result: fail | agencia: 1 | almacenadas: 2 | en_archivo: 5 | error: the server holds a different round for agency 1"),
        "{log}"
    );
    let ours = hex(&digest_of(&file_bets(&data)[..2]));
    assert!(
        log.contains(&hex(&digest_of(&theirs))[..8]) && log.contains(&ours[..8]),
        "both digests: {log}"
    );
    assert!(
        log.contains("CLI_DATA_FILE, CLI_ID") && log.contains("new round"),
        "{log}"
    );
    assert!(
        !log.contains("consulta_ganadores | result: success"),
        "{log}"
    );
    assert_eq!(server.stored_rows().len(), 2, "nothing more was stored");
}

/// Runs the client against a fake server whose every WELCOME is `welcome`;
/// returns the client's log and the ids of every message it sent.
fn against_welcome(welcome_bytes: Vec<u8>, rows: usize) -> (String, Vec<u16>) {
    let dir = tempfile::tempdir().unwrap();
    write_agency_files(dir.path(), 1, rows);
    let server = FakeServer::start(move |mut exchange| {
        while exchange.read_request().is_some() {
            if !exchange.send(&welcome_bytes) {
                return;
            }
        }
    });
    let output = run_expecting(
        &mut client(&server.address(), &agency_file(dir.path(), 1)),
        1,
    );
    let sent = server
        .received
        .lock()
        .unwrap()
        .iter()
        .map(|(id, _)| *id)
        .collect();
    (stderr(&output), sent)
}

#[test]
fn a_server_holding_more_bets_than_the_file_is_another_round() {
    let (log, sent) = against_welcome(welcome(50, 0, no_bets()), 10);
    assert!(
        log.contains("almacenadas: 50 | en_archivo: 10") && log.contains("fewer valid bets"),
        "{log}"
    );
    assert_eq!(sent, vec![0x0009], "only its HELLO");
}

#[test]
fn a_finished_round_of_another_total_is_never_reported_as_this_files() {
    // The server's 10 bets are the file's first 10, but the file has 12: the
    // finished round is not this file's, and its winners are not reported.
    let dir = tempfile::tempdir().unwrap();
    write_agency_files(dir.path(), 1, 12);
    let first_ten = digest_of(&file_bets(&agency_file(dir.path(), 1))[..10]);
    for status in [1, 2] {
        let (log, sent) = against_welcome(welcome(10, status, first_ten), 12);
        assert!(
            log.contains("almacenadas: 10 | en_archivo: 12")
                && log.contains("finished with 10 bets"),
            "{log}"
        );
        assert_eq!(sent, vec![0x0009], "no GET_WINNERS");
    }
}

#[test]
fn a_receipt_other_than_the_agencys_digest_ends_the_run_without_winners() {
    let dir = tempfile::tempdir().unwrap();
    write_agency_files(dir.path(), 1, 3);
    let server = FakeServer::start(|mut exchange| {
        while let Some((id, message)) = exchange.read_request() {
            let reply = match id {
                0x0009 => welcome(0, 0, no_bets()),
                0x0001 => bets_ack(bets_count(&message)),
                0x0003 => finish_ack(1, [7; 32]),
                _ => winners("1"),
            };
            if !exchange.send(&reply) {
                return;
            }
        }
    });
    let output = run_expecting(
        &mut client(&server.address(), &agency_file(dir.path(), 1)),
        1,
    );
    let log = stderr(&output);
    assert!(
        log.contains("acknowledged FINISH with digest 07070707") && log.contains("no winners"),
        "{log}"
    );
    assert!(!log.contains("consulta_ganadores"), "{log}");
    let ids: Vec<u16> = server
        .received
        .lock()
        .unwrap()
        .iter()
        .map(|(id, _)| *id)
        .collect();
    assert!(!ids.contains(&0x0005), "no GET_WINNERS: {ids:?}");
}

/// Runs a round of `agencies` agencies of `rows` bets each with the real
/// binaries in `dir`; returns the server's log lines and the clients' outputs.
fn finished_round(dir: &Path, agencies: u32, rows: usize) -> (PathBuf, Vec<String>, Vec<Output>) {
    let data = dir.join("data");
    std::fs::create_dir(&data).unwrap();
    write_agency_files(&data, agencies, rows);
    let bets_file = dir.join("bets.csv");
    let mut server = ServerProcess::start_in(agencies, &[], dir, &bets_file);
    let outputs: Vec<Output> = run_clients(agencies, &server.address(), &data)
        .into_iter()
        .map(|(command, output)| {
            assert!(output.status.success(), "{}", describe(&command, &output));
            output
        })
        .collect();
    server.wait_for_log("action: sorteo | result: success");
    server.signal("TERM");
    assert!(server.wait_exit().success());
    (bets_file, server.log_lines(), outputs)
}

#[test]
fn receipts_and_the_seal_tie_every_log_to_the_bets() {
    let dir = tempfile::tempdir().unwrap();
    let (_, log, outputs) = finished_round(dir.path(), 3, 40);
    let mut finishes = Vec::new();
    for (index, output) in outputs.iter().enumerate() {
        let agency = index as u32 + 1;
        let bets = file_bets(&agency_file(&dir.path().join("data"), agency));
        let client_log = stderr(output);
        let line = client_log
            .lines()
            .find(|l| l.contains("action: finalizar | result: success"))
            .unwrap_or_else(|| panic!("agency {agency} logs its receipt: {client_log}"));
        assert!(
            line.contains(&format!("agencia: {agency} | total: 40 | recibo: ")),
            "{line}"
        );
        assert_eq!(
            logged_digest(line, "recibo"),
            hex(&digest_of(&bets)),
            "{line}"
        );
        let server_line = log
            .iter()
            .find(|l| {
                l.contains(&format!(
                    "agencia_finalizo | result: success | agencia: {agency} |"
                ))
            })
            .expect("the server logs the FINISH");
        assert_eq!(logged_digest(server_line, "recibo"), hex(&digest_of(&bets)));
        finishes.push((agency, 40u32, digest_of(&bets)));
    }
    // The seal, as PROTOCOL.md defines it, computed apart from the server.
    let mut sealed = Vec::new();
    for (agency, total, digest) in &finishes {
        sealed.extend_from_slice(&agency.to_be_bytes());
        sealed.extend_from_slice(&total.to_be_bytes());
        sealed.extend_from_slice(digest);
    }
    let seal = hex(&digest_of(&[sealed]));
    let draw = log
        .iter()
        .find(|l| l.contains("action: sorteo | result: success"))
        .unwrap();
    assert_eq!(logged_digest(draw, "sello"), seal, "{draw}");
}

/// Runs `server --verify` on `bets_file` for `agencies` agencies.
fn verify(bets_file: &Path, agencies: u32, code: i32) -> String {
    let output = run_expecting(
        Command::new(SERVER_BIN)
            .arg("--verify")
            .env("SERVER_BETS_FILE", bets_file)
            .env("SERVER_AGENCIES", agencies.to_string()),
        code,
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        stderr(&output)
    )
}

#[test]
fn a_row_edited_after_the_round_stops_the_start_and_verify_names_the_agency() {
    let dir = tempfile::tempdir().unwrap();
    let (bets_file, log, _) = finished_round(dir.path(), 2, 30);
    let draw = log
        .iter()
        .find(|l| l.contains("sorteo | result: success"))
        .unwrap();
    let seal = logged_digest(draw, "sello");

    // The auditor's view of the intact round: consistent, the same seal.
    let report = verify(&bets_file, 2, 0);
    assert!(report.contains(&format!("seal: {seal}")), "{report}");
    assert!(report.contains("result: consistent"), "{report}");
    assert!(report.contains("agency 2: bets: 30 |"), "{report}");

    // One row of agency 2 edited to the winning number: same count, other content.
    let text = std::fs::read_to_string(&bets_file).unwrap();
    let at = text.find("\n2,").unwrap() + 1;
    let end = at + text[at..].find('\r').unwrap();
    let comma = text[..end].rfind(',').unwrap();
    let edited = format!("{}7574{}", &text[..comma + 1], &text[end..]);
    assert_ne!(edited, text);
    std::fs::write(&bets_file, &edited).unwrap();
    let records = PathBuf::from(format!("{}.finished", bets_file.display()));
    let records_text = std::fs::read(&records).unwrap();

    // Agency 2's record is on the line after the header that its FINISH came in.
    let line = 1 + String::from_utf8_lossy(&records_text)
        .lines()
        .position(|l| l.starts_with("finished 2 "))
        .unwrap();

    let mut server = ServerProcess::spawn(2, &[], dir.path(), &bets_file);
    let (status, log) = server.wait_for_exit_and_log();
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(
        log.contains(&format!("line {line} of the FINISH records"))
            && log.contains("agency 2 finished with bets of digest"),
        "names the agency and the record's line: {log}"
    );
    assert_eq!(log.matches(" digest ").count(), 2, "both digests: {log}");
    assert_eq!(
        std::fs::read_to_string(&bets_file).unwrap(),
        edited,
        "files left as they were"
    );
    assert_eq!(std::fs::read(&records).unwrap(), records_text);

    let report = verify(&bets_file, 2, 1);
    assert!(
        report.contains(&format!(
            "result: TAMPERED: agency 2 (FINISH record line {line})"
        )),
        "{report}"
    );
    assert!(
        report.contains("agency 1: bets: 30 |") && report.contains("seal: none"),
        "{report}"
    );
    assert_eq!(
        std::fs::read_to_string(&bets_file).unwrap(),
        edited,
        "verify changes nothing"
    );
    assert_eq!(std::fs::read(&records).unwrap(), records_text);
}

#[test]
fn verify_works_beside_a_running_server_and_refuses_what_it_cannot_read() {
    let server = ServerProcess::start(2, &[]);
    let (mut stream, _, _) = session(server.port, 1);
    let bets = [good_bet("5", 7574)];
    assert_eq!(
        exchange(&mut stream, &bets_message(1, 0, 1, &bets)),
        Wire::BetsAck(1)
    );
    let report = verify(&server.bets_file, 2, 0);
    assert!(
        report.contains(&format!(
            "agency 1: bets: 1 | digest: {} | finished: no | winners: 1",
            hex(&digest_of(&bets))
        )),
        "{report}"
    );
    assert!(
        report.contains("agency 2: bets: 0") && report.contains("seal: none"),
        "{report}"
    );
    // Another number of agencies than the round's, and no file at all: exit 2.
    let report = verify(&server.bets_file, 3, 2);
    assert!(report.contains("SERVER_AGENCIES"), "{report}");
    let missing = server.bets_file.with_file_name("none.csv");
    let report = verify(&missing, 2, 2);
    assert!(report.contains("none.csv"), "{report}");
    assert!(!missing.exists(), "verify creates nothing");
}

#[test]
fn a_restarted_server_flushes_the_bets_file_before_it_counts_a_row() {
    if Command::new("strace").arg("-V").output().is_err() {
        eprintln!("skipped: strace is not installed (the CI installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bets_file = dir.path().join("bets.csv");
    std::fs::write(&bets_file, "1,Ana,Gil,10,2000-01-01,7574\r\n").unwrap();
    let trace = dir.path().join("trace");
    // strace names each descriptor's file (-y). First the auditor:
    run_expecting(
        Command::new("strace")
            .args(["-f", "-y", "-e", "trace=fsync,fdatasync,pread64", "-o"])
            .arg(&trace)
            .arg(SERVER_BIN)
            .arg("--verify")
            .env("SERVER_BETS_FILE", &bets_file)
            .env("SERVER_AGENCIES", "1"),
        0,
    );
    // --verify reads, and writes or flushes nothing.
    let verify_trace = std::fs::read_to_string(&trace).unwrap();
    assert!(verify_trace.contains("pread64("), "{verify_trace}");
    assert!(!verify_trace.contains("sync("), "{verify_trace}");
    // The server itself, under strace from its first instruction.
    let mut under_strace = Command::new("strace");
    under_strace
        .args(["-f", "-y", "-e", "trace=fsync,fdatasync,pread64", "-o"])
        .arg(&trace)
        .arg(SERVER_BIN)
        .env("SERVER_BETS_FILE", &bets_file)
        .env("SERVER_AGENCIES", "1")
        .env("SERVER_IP", "127.0.0.1")
        .env("SERVER_PORT", "0")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("server.log")).unwrap());
    let mut child = under_strace.spawn().unwrap();
    wait_until("the traced server to be ready", || {
        let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
        log.contains("action: config | result: success")
            .then_some(())
    });
    // The server is strace's child: stopped itself, so that strace ends with it.
    let children = format!("/proc/{0}/task/{0}/children", child.id());
    let server_pid: u32 = std::fs::read_to_string(children)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    signal_pid(server_pid, "TERM");
    assert!(wait_child(&mut child).is_some_and(|status| status.success()));
    let calls = std::fs::read_to_string(&trace).unwrap();
    let on_bets = |call: &str| {
        calls
            .lines()
            .position(|l| l.contains(&format!("{call}(")) && l.contains("bets.csv>"))
    };
    let flushed = on_bets("fsync").or_else(|| on_bets("fdatasync"));
    let read = on_bets("pread64");
    assert!(
        flushed.is_some() && read.is_some() && flushed < read,
        "the bets file is flushed before its first row is read:\n{calls}"
    );
}
