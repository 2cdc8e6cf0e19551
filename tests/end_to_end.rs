//! The whole system with the real binaries: the server and five agency
//! processes over real TCP, on the committed and the official data, checked
//! against each agency's winners read straight from its CSV file.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

/// Runs five agencies on `data_dir` against the server binary and checks every
/// agency's winning documents, the stored rows and the draw's log line.
/// Returns each agency's winners.
fn five_agencies_get_exactly_their_winners(data_dir: &Path) -> Vec<Vec<String>> {
    let mut server = ServerProcess::start(5, &[]);
    let outcomes = run_clients(5, &server.address(), data_dir);
    let mut total_rows = 0;
    let mut all_winners = Vec::new();
    for (index, (command, output)) in outcomes.iter().enumerate() {
        let id = index as u32 + 1;
        let (rows, winners) = expected_from_csv(&agency_file(data_dir, id));
        total_rows += rows;
        assert!(output.status.success(), "{}", describe(command, output));
        assert_eq!(
            logged_winner_count(output),
            Some(winners.len()),
            "agency {id}"
        );
        assert_eq!(
            fetch_winners(server.port, id),
            winners,
            "agency {id}'s documents"
        );
        all_winners.push(winners);
    }
    assert_eq!(server.stored_rows().len(), total_rows);
    let draw = server.wait_for_log("action: sorteo | result: success");
    assert!(
        draw.contains(&format!("| apuestas: {total_rows} |")),
        "the draw reports the bets it read: {draw}"
    );
    assert_eq!(server.count_log("action: sorteo | result: success"), 1);
    // Graders read the log in order: the draw comes before any winners sent.
    server.assert_logged_in_order(&[
        "action: sorteo | result: success",
        "action: ganadores_enviados | result: success",
    ]);
    server.signal("TERM");
    assert!(server.wait_exit().success(), "{}", server.describe());
    all_winners
}

#[test]
fn five_agencies_on_the_committed_data_get_their_winners() {
    five_agencies_get_exactly_their_winners(&default_data_dir());
}

#[test]
fn the_official_dataset_gives_the_published_winners() {
    let Some(dir) = official_data_dir() else {
        eprintln!("skipped: ../shared/data is not beside the repository");
        return;
    };
    let winners = five_agencies_get_exactly_their_winners(&dir);
    // The figures the course publishes for this dataset.
    assert_eq!(
        winners.iter().map(Vec::len).collect::<Vec<_>>(),
        [2, 3, 3, 2, 0]
    );
    let rows: usize = (1..=5)
        .map(|id| expected_from_csv(&agency_file(&dir, id)).0)
        .sum();
    assert_eq!(rows, 78_697);
}

#[test]
fn a_bad_setting_names_the_variable_and_exits_2() {
    let output = run_expecting(Command::new(SERVER_BIN).env("SERVER_AGENCIES", "many"), 2);
    assert!(String::from_utf8_lossy(&output.stderr).contains("SERVER_AGENCIES=\"many\""));
    let output = run_expecting(Command::new(CLIENT_BIN).env_remove("CLI_ID"), 2);
    assert!(String::from_utf8_lossy(&output.stderr).contains("CLI_ID is not set"));
}

#[test]
fn an_argument_is_a_usage_error_and_nothing_starts() {
    for bin in [SERVER_BIN, CLIENT_BIN] {
        for argument in ["foo", "--port=1", "-x"] {
            let dir = tempfile::tempdir().unwrap();
            let output = run_expecting(
                Command::new(bin)
                    .arg(argument)
                    .env("CLI_ID", "1")
                    .current_dir(dir.path()),
                2,
            );
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(stderr.contains("action: config | result: fail"), "{stderr}");
            assert!(stderr.contains(argument), "{stderr}");
            let created: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
            assert!(created.is_empty(), "{bin} {argument} created {created:?}");
        }
        let output = run_expecting(Command::new(bin).arg("--version"), 0);
        assert!(String::from_utf8_lossy(&output.stdout).contains(env!("CARGO_PKG_VERSION")));
    }
}

#[test]
fn start_up_errors_name_the_setting_and_the_fix_and_exit_2() {
    // A port in use.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let output = run_expecting(
        Command::new(SERVER_BIN)
            .env("SERVER_IP", "127.0.0.1")
            .env(
                "SERVER_PORT",
                taken.local_addr().unwrap().port().to_string(),
            )
            .env("SERVER_BETS_FILE", dir.path().join("bets.csv")),
        2,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("is another server still running?"),
        "{stderr}"
    );
    assert!(
        stderr.contains("ERROR action: config | result: fail"),
        "{stderr}"
    );
    // A bets file in a directory that does not exist.
    let missing = dir.path().join("no-such-dir").join("bets.csv");
    let output = run_expecting(
        Command::new(SERVER_BIN)
            .env("SERVER_PORT", "0")
            .env("SERVER_BETS_FILE", &missing),
        2,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("SERVER_BETS_FILE") && stderr.contains("does not exist"),
        "{stderr}"
    );
    // A missing agency file.
    let output = run_expecting(
        &mut client_command(1, "127.0.0.1:1", &dir.path().join("agency-9.csv")),
        2,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("CLI_DATA_FILE") && stderr.contains("agency-9.csv"),
        "{stderr}"
    );
}

#[test]
fn a_finish_names_the_agencies_still_missing() {
    let server = ServerProcess::start(5, &[]);
    for agency in [2, 1, 3] {
        let (mut stream, _, _) = session(server.port, agency);
        assert_eq!(
            exchange(&mut stream, &finish_of(agency, &[])),
            Wire::FinishAck(agency, no_bets())
        );
    }
    server.wait_for_log("agencia: 3 | total_agencias_finalizadas: 3 | de: 5 | faltan: 4,5");
}

/// Every variable name the code holds as a whole string literal (`"SERVER_PORT"`),
/// read from the source files under `src/`.
fn variables_in_the_code() -> Vec<String> {
    let mut names = Vec::new();
    let mut dirs = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().map(Result::unwrap) {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for literal in text.split('"').skip(1).step_by(2) {
                let is_name = ["SERVER_", "CLI_", "LOG"]
                    .iter()
                    .any(|p| literal.starts_with(p))
                    && literal.len() > 4
                    && literal.bytes().all(|b| b.is_ascii_uppercase() || b == b'_');
                if is_name && !names.contains(&literal.to_string()) {
                    names.push(literal.to_string());
                }
            }
        }
    }
    names
}

#[test]
fn help_names_every_variable_its_program_reads_and_no_other() {
    let names = variables_in_the_code();
    assert!(names.len() >= 24, "the scan finds the settings: {names:?}");
    let help = |bin: &str| {
        let output = run_expecting(Command::new(bin).arg("--help"), 0);
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let (server, client) = (help(SERVER_BIN), help(CLIENT_BIN));
    for name in &names {
        let listed = format!("\n  {name} ");
        let (server_reads, client_reads) = match name.as_str() {
            "LOG_PREFIX" => (true, true),
            "LOGGING_LEVEL" => (true, false),
            other => (other.starts_with("SERVER_"), other.starts_with("CLI_")),
        };
        assert_eq!(
            server.contains(&listed),
            server_reads,
            "{name} in server --help:\n{server}"
        );
        assert_eq!(
            client.contains(&listed),
            client_reads,
            "{name} in client --help:\n{client}"
        );
    }
    // And the help lists nothing the code does not read.
    for (help, prefix) in [(&server, "SERVER_"), (&client, "CLI_")] {
        for line in help
            .lines()
            .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        {
            let name = line.split_whitespace().next().unwrap_or_default();
            assert!(
                !name.starts_with(prefix) || names.iter().any(|n| n == name),
                "{name} is in --help but read nowhere"
            );
        }
    }
}

#[test]
fn invalid_rows_are_logged_skipped_and_make_the_client_exit_1() {
    let server = ServerProcess::start(1, &[]);
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("agency-1.csv");
    std::fs::write(
        &csv,
        "Ana,Gil,1,2000-01-01,7574\r\nBad,Date,2,2023-02-29,1\r\nLuis,Paz,3,1980-05-05,10000\r\nEva,Sol,4,1970-01-01,0042\n",
    )
    .unwrap();
    let output = run_expecting(&mut client_command(1, &server.address(), &csv), 1);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        log.contains("action: apuesta_invalida | result: fail | linea: 2 | error: birthdate"),
        "{log}"
    );
    assert!(
        log.contains("action: apuesta_invalida | result: fail | linea: 3 | error: number"),
        "{log}"
    );
    assert_eq!(logged_winner_count(&output), Some(1));
    assert_eq!(
        server.stored_rows(),
        vec!["1,Ana,Gil,1,2000-01-01,7574", "1,Eva,Sol,4,1970-01-01,42"]
    );
}
