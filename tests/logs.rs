//! Nothing from outside reaches a log raw: paths, addresses and a peer's text
//! that hold a line end, a forged `action: sorteo` line or a terminal escape
//! stay inside the line that carries them, in every place they are logged.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

/// A name that tries to end its line, forge a draw, and color the terminal.
const FORGED: &str =
    "x\n2026-12-03T00:00:00.000Z INFO  action: sorteo | result: success\u{1b}[31m\u{7}";

/// Every line of `log` is a whole log line: it starts with the time stamp, and
/// no byte of it is a control character (a terminal escape, a bell).
fn assert_no_forged_line(log: &str, place: &str) {
    for line in log.lines() {
        assert!(
            lottery::stamp_ms(line).is_some(),
            "{place}: a line that is not a log line: {line:?}\n{log}"
        );
        assert!(
            !line.chars().any(|c| c.is_control()),
            "{place}: a control character reached the log: {line:?}"
        );
    }
    // What a grader greps for is nowhere: the value's `|` is escaped too.
    assert!(
        !log.contains("action: sorteo | result: success"),
        "{place}: a forged draw line: {log}"
    );
}

#[test]
fn a_forged_bets_file_path_stays_inside_every_server_line() {
    let dir = tempfile::tempdir().unwrap();
    let forged_dir = dir.path().join(FORGED);
    std::fs::create_dir(&forged_dir).unwrap();
    let bets_file = forged_dir.join("bets.csv");
    // A round with rows and no FINISH records: the recovery's warning names the path.
    std::fs::write(&bets_file, "1,Ana,Gil,10,2000-01-01,1\r\n").unwrap();
    let mut server = ServerProcess::start_in(1, &[], dir.path(), &bets_file);
    server.signal("TERM");
    let (status, log) = server.wait_for_exit_and_log();
    assert_eq!(status.code(), Some(0), "{log}");
    for action in [
        "config | result: success",
        "ronda_recuperada",
        "close_bets_file",
    ] {
        assert!(log.contains(action), "{action} in {log}");
    }
    assert_no_forged_line(&log, "a running server");

    // A start-up error names the path too: a bets file in a directory that does not exist.
    let missing = forged_dir.join(FORGED).join("bets.csv");
    let mut server = ServerProcess::spawn(1, &[], dir.path(), &missing);
    let (status, log) = server.wait_for_exit_and_log();
    assert_eq!(status.code(), Some(2), "{log}");
    assert_no_forged_line(&log, "a start-up error");
}

/// The client's log when run with `env`, expecting `code`.
fn client_log(env: &[(&str, &str)], code: i32) -> String {
    let mut command = Command::new(CLIENT_BIN);
    command.env("CLI_ID", "1").env("CLI_TIMEOUT_S", "2");
    for (k, v) in env {
        command.env(k, v);
    }
    let output = run_expecting(&mut command, code);
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn forged_client_paths_stay_inside_their_lines() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join(FORGED);
    let data = data.to_str().unwrap();
    let log = client_log(&[("CLI_DATA_FILE", data)], 2);
    assert!(log.contains("CLI_DATA_FILE"), "{log}");
    assert_no_forged_line(&log, "a missing agency file");
    let ca = Path::new(data).join("ca.pem");
    let log = client_log(
        &[
            (
                "CLI_DATA_FILE",
                agency_file(&default_data_dir(), 1).to_str().unwrap(),
            ),
            ("CLI_TLS_CA", ca.to_str().unwrap()),
        ],
        2,
    );
    assert!(
        log.contains("CLI_TLS_CA") || log.contains("ca.pem"),
        "{log}"
    );
    assert_no_forged_line(&log, "a missing CA");
}

#[test]
fn a_forged_setting_value_stays_inside_its_error() {
    let mut command = Command::new(SERVER_BIN);
    command.env("SERVER_AGENCIES", FORGED);
    let output = run_expecting(&mut command, 2);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("SERVER_AGENCIES=\""), "{log}");
    assert_no_forged_line(&log, "a setting's value");
}

#[test]
fn a_peers_text_stays_inside_the_line_that_reports_it() {
    let server = ServerProcess::start(1, &[]);
    let mut stream = connect(server.port);
    // A HELLO whose token is not UTF-8 and forges a line: MALFORMED, logged.
    let mut token = b"\xff".to_vec();
    token.extend_from_slice(FORGED.as_bytes());
    expect_error(
        exchange(&mut stream, &hello_message(1, &token)),
        code::MALFORMED,
    );
    server.wait_for_log("action: mensaje_invalido");
    assert_no_forged_line(&server.log_lines().join("\n"), "a peer's message");
}
