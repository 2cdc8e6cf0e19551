//! The whole system end to end: the real server and clients over real TCP.

mod common;

use common::*;
use std::time::Duration;

/// Runs five agencies on `data_dir` and checks every agency's winners against
/// counts made straight from the CSV files, and the stored row count.
fn five_agencies_get_exactly_their_winners(data_dir: &std::path::Path) {
    let mut server = ServerProcess::start(5, &[]);
    let outputs = run_clients(5, &server.address(), data_dir);

    let mut total_rows = 0;
    for (index, output) in outputs.iter().enumerate() {
        let id = index + 1;
        let (rows, winners) = count_csv(&data_dir.join(format!("agency-{id}.csv")));
        total_rows += rows;
        assert!(
            output.status.success(),
            "client {id} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(logged_winner_count(output), Some(winners), "agency {id}");
    }
    assert_eq!(server.stored_rows().len(), total_rows);
    let draw = server
        .wait_for_log("action: sorteo | result: success", Duration::from_secs(5))
        .expect("the draw is logged");
    assert!(
        draw.contains(&format!("| apuestas: {total_rows} |")),
        "the draw reports the bets it read: {draw}"
    );
    assert_eq!(server.count_log("action: sorteo | result: success"), 1);
    for id in 1..=5u32 {
        let (_, winners) = count_csv(&data_dir.join(format!("agency-{id}.csv")));
        assert_eq!(fetch_winners(server.port, id).len(), winners, "agency {id}");
    }

    server.signal("TERM");
    let status = server
        .wait_exit(Duration::from_secs(30))
        .expect("server exits");
    assert!(status.success());
}

#[test]
fn five_agencies_on_the_committed_data_get_their_winners() {
    let _shared = side_by_side();
    five_agencies_get_exactly_their_winners(&default_data_dir());
}

#[test]
fn the_official_dataset_gives_every_agency_its_winners() {
    let _shared = side_by_side();
    let Some(dir) = official_data_dir() else {
        eprintln!("skipped: ../shared/data is not beside the repository");
        return;
    };
    five_agencies_get_exactly_their_winners(&dir);
    // The figures the course publishes for this dataset.
    let counts: Vec<(usize, usize)> = (1..=5)
        .map(|id| count_csv(&dir.join(format!("agency-{id}.csv"))))
        .collect();
    assert_eq!(counts.iter().map(|c| c.0).sum::<usize>(), 78_697);
}

#[test]
fn stored_rows_match_the_reference_format() {
    let _shared = side_by_side();
    let server = ServerProcess::start(1, &[]);
    let mut stream = connect(server.port);
    let bets = vec![
        bet_bytes(b"Ana", b"O\"Brien, Jr", b"123", b"2000-01-01", 42),
        bet_bytes("José".as_bytes(), b"Ruiz", b"7", b"1999-12-31", 7574),
    ];
    assert_eq!(
        exchange(&mut stream, &bets_message(1, 2, &bets)),
        Wire::BetsAck(2)
    );
    let text = std::fs::read_to_string(&server.bets_file).unwrap();
    assert_eq!(
        text,
        "1,Ana,\"O\"\"Brien, Jr\",123,2000-01-01,42\r\n1,José,Ruiz,7,1999-12-31,7574\r\n"
    );
}

#[test]
fn get_winners_before_the_draw_is_no_winners() {
    let _shared = side_by_side();
    let server = ServerProcess::start(2, &[("SERVER_DRAW_WAIT_MS", "50")]);
    let mut stream = connect(server.port);
    stream.write_all_checked(&get_winners_message(1));
    let mut reply = [0u8; 2];
    std::io::Read::read_exact(&mut stream, &mut reply).unwrap();
    assert_eq!(reply, [0x00, 0x06], "exactly the NO_WINNERS bytes");
    // The connection stays usable.
    assert_eq!(
        exchange(&mut stream, &get_winners_message(2)),
        Wire::NoWinners
    );
}

#[test]
fn a_second_finish_from_the_same_agency_does_not_trigger_the_draw() {
    let _shared = side_by_side();
    let server = ServerProcess::start(2, &[("SERVER_DRAW_WAIT_MS", "50")]);
    let mut stream = connect(server.port);
    assert_eq!(
        exchange(&mut stream, &bets_message(1, 1, &[good_bet("111", 7574)])),
        Wire::BetsAck(1)
    );
    assert_eq!(
        exchange(&mut stream, &finish_message(1)),
        Wire::FinishAck(1)
    );
    assert_eq!(
        exchange(&mut stream, &finish_message(1)),
        Wire::FinishAck(1)
    );
    assert_eq!(
        exchange(&mut stream, &get_winners_message(1)),
        Wire::NoWinners
    );
    assert_eq!(server.count_log("action: sorteo"), 0);
    assert!(
        server
            .log_lines()
            .iter()
            .any(|l| l.contains("agencia: 1 | total_agencias_finalizadas: 1 | repetido: true")),
        "the repeat is logged and not counted:\n{}",
        server.log_text()
    );

    assert_eq!(
        exchange(&mut stream, &finish_message(2)),
        Wire::FinishAck(2)
    );
    // The draw runs after FINISH_ACK; ask until it has happened.
    assert_eq!(fetch_winners(server.port, 1), vec!["111".to_string()]);
    assert_eq!(
        exchange(&mut stream, &get_winners_message(2)),
        Wire::Winners(String::new())
    );
    // The log line reaches us through a pipe, possibly after the replies.
    server
        .wait_for_log("action: sorteo | result: success", Duration::from_secs(5))
        .expect("the draw is logged");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(server.count_log("action: sorteo | result: success"), 1);
}

#[test]
fn a_waiting_get_winners_is_answered_as_soon_as_the_draw_happens() {
    let _alone = alone();
    let server = ServerProcess::start(1, &[("SERVER_DRAW_WAIT_MS", "10000")]);
    let pauses = HostPauses::start();
    let port = server.port;
    let waiter = std::thread::spawn(move || {
        let mut stream = connect(port);
        let started = std::time::Instant::now();
        let reply = exchange(&mut stream, &get_winners_message(1));
        (reply, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(200));
    let mut stream = connect(server.port);
    assert_eq!(
        exchange(&mut stream, &finish_message(1)),
        Wire::FinishAck(1)
    );
    let (reply, waited) = waiter.join().unwrap();
    assert_eq!(reply, Wire::Winners(String::new()));
    // The draw wait is 10 s: an answer within 5 s came from the draw.
    pauses.assert_within(waited, Duration::from_secs(5), "the answer after the draw");
}

#[test]
fn winner_lists_over_64_kib_arrive_in_parts() {
    let _shared = side_by_side();
    // 7000 winners of 10 digits: 76,999 bytes joined, so at least two messages.
    // A long draw wait: the GET_WINNERS below may arrive while the draw still runs.
    let server = ServerProcess::start(1, &[("SERVER_DRAW_WAIT_MS", "30000")]);
    let mut stream = connect(server.port);
    let mut expected = Vec::new();
    for batch in 0..70u32 {
        let bets: Vec<Vec<u8>> = (0..100u32)
            .map(|i| {
                let document = format!("{:010}", batch * 100 + i + 1_000_000_000);
                expected.push(document.clone());
                good_bet(&document, 7574)
            })
            .collect();
        assert_eq!(
            exchange(&mut stream, &bets_message(1, 100, &bets)),
            Wire::BetsAck(100)
        );
    }
    assert_eq!(
        exchange(&mut stream, &finish_message(1)),
        Wire::FinishAck(1)
    );

    let mut stream = connect(server.port);
    stream.write_all_checked(&get_winners_message(1));
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
fn a_bets_file_with_bets_in_it_stops_the_server_from_starting() {
    let _shared = side_by_side();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bets.csv");
    std::fs::write(&path, "1,Ana,Gil,1,2000-01-01,1\r\n").unwrap();
    let output = std::process::Command::new(SERVER_BIN)
        .env("SERVER_PORT", "0")
        .env("SERVER_BETS_FILE", &path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "1,Ana,Gil,1,2000-01-01,1\r\n"
    );
}

#[test]
fn bad_configuration_names_the_variable_and_exits_2() {
    let _shared = side_by_side();
    let output = std::process::Command::new(SERVER_BIN)
        .env("SERVER_AGENCIES", "many")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("SERVER_AGENCIES=\"many\""));

    let output = std::process::Command::new(CLIENT_BIN)
        .env_remove("CLI_ID")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("CLI_ID is not set"));

    for bin in [SERVER_BIN, CLIENT_BIN] {
        let output = std::process::Command::new(bin)
            .arg("--help")
            .output()
            .unwrap();
        assert!(output.status.success());
        assert!(String::from_utf8_lossy(&output.stdout).contains("Configuration"));
    }
}

#[test]
fn invalid_rows_are_logged_skipped_and_make_the_client_exit_1() {
    let _shared = side_by_side();
    let server = ServerProcess::start(1, &[]);
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("agency-1.csv");
    std::fs::write(
        &csv,
        "Ana,Gil,1,2000-01-01,7574\r\nBad,Date,2,2023-02-29,1\r\nLuis,Paz,3,1980-05-05,10000\r\nEva,Sol,4,1970-01-01,0042\n",
    )
    .unwrap();
    let output = client_command(1, &server.address(), &csv).output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{log}");
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
        vec![
            "1,Ana,Gil,1,2000-01-01,7574".to_string(),
            "1,Eva,Sol,4,1970-01-01,42".to_string()
        ]
    );
}

trait WriteAllChecked {
    fn write_all_checked(&mut self, bytes: &[u8]);
}

impl WriteAllChecked for std::net::TcpStream {
    fn write_all_checked(&mut self, bytes: &[u8]) {
        std::io::Write::write_all(self, bytes).expect("send");
    }
}
