//! Exactly-once rounds: whatever crashes or is cut (the server, a client, any
//! connection), every bet is stored once and every agency gets its exact
//! winners; and a restarted server continues the round from its files.

mod common;

use common::*;
use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A port free right now, for a server that must come back on the same one.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The input rows of each agency, as the bets file stores them (agency first).
fn expected_rows(data: &Path, agencies: u32) -> Vec<String> {
    let mut rows = Vec::new();
    for agency in 1..=agencies {
        let text = std::fs::read_to_string(agency_file(data, agency)).unwrap();
        rows.extend(text.lines().map(|l| format!("{agency},{l}")));
    }
    rows
}

/// Compares the stored rows with the input rows as multisets; returns how many
/// were lost and how many stored twice (or more).
fn lost_and_duplicated(stored: &[String], expected: &[String]) -> (usize, usize) {
    let mut counts: HashMap<&str, i64> = HashMap::new();
    for row in expected {
        *counts.entry(row).or_default() += 1;
    }
    let mut unexpected = 0;
    for row in stored {
        match counts.get_mut(row.as_str()) {
            Some(count) => *count -= 1,
            None => unexpected += 1,
        }
    }
    let lost = counts
        .values()
        .filter(|&&c| c > 0)
        .map(|&c| c as usize)
        .sum();
    let twice = counts
        .values()
        .filter(|&&c| c < 0)
        .map(|&c| (-c) as usize)
        .sum::<usize>();
    (lost, twice + unexpected)
}

fn spawn_clients(agencies: u32, address: &str, data: &Path) -> Vec<(Command, Child)> {
    (1..=agencies)
        .map(|id| spawn_agency(id, address, data, &[]))
        .collect()
}

/// Every client exited 0 and logged its exact winner count; every agency's
/// documents are its expected ones.
fn assert_exact_winners(clients: Vec<(Command, Child)>, port: u16, expected: &[Vec<String>]) {
    let counts: Vec<usize> = expected.iter().map(Vec::len).collect();
    assert_agencies_got(clients, &counts);
    for (index, winners) in expected.iter().enumerate() {
        let agency = index as u32 + 1;
        assert_eq!(&fetch_winners(port, agency), winners, "agency {agency}");
    }
}

#[test]
fn killing_the_server_again_and_again_during_an_ingest_loses_and_duplicates_nothing() {
    const AGENCIES: u32 = 5;
    const KILLS: usize = 12;
    let data = tempfile::tempdir().unwrap();
    let winners = write_agency_files(data.path(), AGENCIES, 100_000);
    let expected = expected_rows(data.path(), AGENCIES);
    let dir = tempfile::tempdir().unwrap();
    let bets_file = dir.path().join("bets.csv");
    let port = free_port();
    let port_setting = port.to_string();
    let env = [("SERVER_PORT", port_setting.as_str())];
    let started = Instant::now();
    let mut server = ServerProcess::start_in(AGENCIES, &env, dir.path(), &bets_file);
    let clients = spawn_clients(AGENCIES, &format!("127.0.0.1:{port}"), data.path());
    let mut next = seeded(0x5EED_0FC0_FFEE);
    let mut rows_at_kills = Vec::new();
    for _ in 0..KILLS {
        // Killed once this server has stored a few new batches: mid-ingest
        // whatever the machine's speed (the round has thousands of batches).
        let batches = 1 + (next() % 8) as usize;
        server.wait_for_count("action: apuesta_recibida | result: success", batches);
        server.signal("KILL");
        server.wait_exit();
        rows_at_kills.push(std::fs::read_to_string(&bets_file).map_or(0, |t| t.lines().count()));
        server = ServerProcess::start_in(AGENCIES, &env, dir.path(), &bets_file);
    }
    assert_exact_winners(clients, port, &winners);
    let stored = server.stored_rows();
    let (lost, duplicated) = lost_and_duplicated(&stored, &expected);
    eprintln!(
        "kill loop: {KILLS} kills at {rows_at_kills:?} rows of {}; {} rows stored, {lost} lost, \
         {duplicated} duplicated; {:.1} s",
        expected.len(),
        stored.len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!((lost, duplicated), (0, 0));
    assert_eq!(stored.len(), expected.len());
    assert!(
        rows_at_kills.iter().any(|&r| r > 0 && r < expected.len()),
        "at least one kill came mid-ingest: {rows_at_kills:?}"
    );
    assert_eq!(
        server.count_log("action: sorteo | result: success"),
        1,
        "{}",
        server.describe()
    );
}

#[test]
fn a_client_killed_mid_ingest_and_started_again_stores_every_bet_once() {
    let data = tempfile::tempdir().unwrap();
    let winners = write_agency_files(data.path(), 1, 200_000);
    let expected = expected_rows(data.path(), 1);
    let server = ServerProcess::start(1, &[]);
    let mut first = client_command(1, &server.address(), &agency_file(data.path(), 1))
        .env("CLI_BATCHES_IN_FLIGHT", "4")
        .spawn()
        .unwrap();
    server.wait_for_count("action: apuesta_recibida | result: success", 20);
    signal_pid(first.id(), "KILL");
    wait_child(&mut first).expect("killed");
    let stored_then = server.stored_rows().len();
    assert!(stored_then < expected.len(), "killed mid-ingest");
    let mut again = client_command(1, &server.address(), &agency_file(data.path(), 1));
    let output = run_expecting(&mut again, 0);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        log.contains("action: reanudar | result: success | almacenadas: "),
        "{log}"
    );
    assert_eq!(logged_winner_count(&output), Some(winners[0].len()));
    let stored = server.stored_rows();
    assert_eq!(lost_and_duplicated(&stored, &expected), (0, 0));
}

#[test]
fn a_client_stopped_by_sigterm_goes_on_when_started_again() {
    let data = tempfile::tempdir().unwrap();
    let winners = write_agency_files(data.path(), 1, 100_000);
    let expected = expected_rows(data.path(), 1);
    let server = ServerProcess::start(1, &[]);
    let first = client_command(1, &server.address(), &agency_file(data.path(), 1))
        .env("CLI_BATCHES_IN_FLIGHT", "1")
        .spawn()
        .unwrap();
    server.wait_for_count("action: apuesta_recibida | result: success", 10);
    signal_pid(first.id(), "TERM");
    let output = output_of(first);
    let log = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(143), "{log}");
    assert!(log.contains("apuestas_confirmadas: "), "{log}");
    let output = run_expecting(
        &mut client_command(1, &server.address(), &agency_file(data.path(), 1)),
        0,
    );
    assert_eq!(logged_winner_count(&output), Some(winners[0].len()));
    assert_eq!(
        lost_and_duplicated(&server.stored_rows(), &expected),
        (0, 0)
    );
}

#[test]
fn connections_cut_at_random_points_lose_and_duplicate_nothing() {
    const AGENCIES: u32 = 5;
    let data = tempfile::tempdir().unwrap();
    let winners = write_agency_files(data.path(), AGENCIES, 20_000);
    let expected = expected_rows(data.path(), AGENCIES);
    let server = TestServer::start(AGENCIES, &[]);
    let proxy = CuttingProxy::start(server.addr, 400_000, 0x00C0_7C07);
    let outcomes: Vec<_> = (1..=AGENCIES)
        .map(|id| {
            let (address, file) = (proxy.addr.to_string(), agency_file(data.path(), id));
            std::thread::spawn(move || {
                run_agency(id, &address, &file, &[("CLI_BATCHES_IN_FLIGHT", "8")])
            })
        })
        .collect();
    for (index, outcome) in outcomes.into_iter().enumerate() {
        let summary = outcome
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("agency {}: {e}", index + 1));
        assert_eq!(summary.winners, winners[index], "agency {}", index + 1);
    }
    let cuts = proxy.cuts.load(std::sync::atomic::Ordering::SeqCst);
    assert!(cuts >= 5, "the proxy cut connections: {cuts}");
    assert_eq!(
        lost_and_duplicated(&server.stored_rows(), &expected),
        (0, 0)
    );
}

/// Starts the server on `bets_file` expecting it to refuse (exit 2); returns its log.
fn refused_start(bets_file: &Path, agencies: u32) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::spawn(agencies, &[], dir.path(), bets_file);
    let (status, log) = server.wait_for_exit_and_log();
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(log.contains("action: config | result: fail"), "{log}");
    log
}

#[test]
fn a_row_cut_short_by_a_crash_is_cut_off_and_the_round_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let bets_file = dir.path().join("bets.csv");
    let row = "1,Ana,Gil,10,2000-01-01,7574\r\n";
    std::fs::write(&bets_file, format!("{row}1,Eva,Sol,11,2000-0")).unwrap();
    let server = ServerProcess::start_in(1, &[], dir.path(), &bets_file);
    let line = server.wait_for_log("action: ronda_recuperada | result: success");
    assert!(
        line.contains("apuestas: 1 | agencias_finalizadas: 0 | bytes_cortados: 19"),
        "{line}"
    );
    assert_eq!(std::fs::read_to_string(&bets_file).unwrap(), row);
    let (mut stream, stored, status) = session(server.port, 1);
    assert_eq!((stored, status), (1, 0));
    assert_eq!(
        exchange(&mut stream, &batch_of(1, 1, &["11".into()], 1)),
        Wire::BetsAck(1)
    );
    // The digest covers the recovered row, read back as the bytes it was sent as.
    let bets = [
        bet_bytes(b"Ana", b"Gil", b"10", b"2000-01-01", 7574),
        good_bet("11", 1),
    ];
    assert_eq!(
        exchange(&mut stream, &finish_of(1, &bets)),
        Wire::FinishAck(1, digest_of(&bets))
    );
    assert_eq!(fetch_winners(server.port, 1), vec!["10".to_string()]);
}

#[test]
fn a_corrupt_row_in_the_middle_stops_the_start_and_leaves_the_file_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let bets_file = dir.path().join("bets.csv");
    let text =
        "1,Ana,Gil,10,2000-01-01,1\r\n1,Ana,Gil,1x,2000-01-01,1\r\n1,Eva,Sol,12,2000-01-01,2\r\n";
    std::fs::write(&bets_file, text).unwrap();
    let log = refused_start(&bets_file, 1);
    assert!(
        log.contains("line 2") && log.contains(&bets_file.display().to_string()),
        "{log}"
    );
    assert_eq!(std::fs::read(&bets_file).unwrap(), text.as_bytes());
}

#[test]
fn a_restart_after_the_draw_serves_the_same_winners() {
    let data = tempfile::tempdir().unwrap();
    let winners = write_agency_files(data.path(), 3, 3000);
    let dir = tempfile::tempdir().unwrap();
    let bets_file = dir.path().join("bets.csv");
    let mut server = ServerProcess::start_in(3, &[], dir.path(), &bets_file);
    let clients = spawn_clients(3, &server.address(), data.path());
    assert_exact_winners(clients, server.port, &winners);
    let before = std::fs::read(&bets_file).unwrap();
    server.signal("TERM");
    server.wait_exit();
    let server = ServerProcess::start_in(3, &[], dir.path(), &bets_file);
    // Recovered, drawn again, then ready.
    server.assert_logged_in_order(&[
        "action: ronda_recuperada",
        "action: sorteo | result: success",
        "action: config | result: success",
    ]);
    for (index, expected) in winners.iter().enumerate() {
        assert_eq!(&fetch_winners(server.port, index as u32 + 1), expected);
    }
    // Running the clients again just fetches the winners: nothing is sent.
    let clients = spawn_clients(3, &server.address(), data.path());
    assert_exact_winners(clients, server.port, &winners);
    assert_eq!(std::fs::read(&bets_file).unwrap(), before);
}

#[test]
fn a_second_server_on_the_same_bets_file_is_refused() {
    let first = ServerProcess::start(1, &[]);
    let log = refused_start(&first.bets_file, 1);
    assert!(log.contains("in use by another server"), "{log}");
    assert!(
        log.contains(&first.bets_file.display().to_string()),
        "{log}"
    );
}

#[test]
fn a_fifo_a_device_or_a_directory_is_not_a_bets_file() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let made = Command::new("mkfifo").arg(&fifo).status();
    let mut paths = vec![
        std::path::PathBuf::from("/dev/null"),
        dir.path().to_path_buf(),
    ];
    if made.is_ok_and(|s| s.success()) {
        paths.push(fifo);
    } else {
        eprintln!("skipped the FIFO: mkfifo is not available");
    }
    for path in paths {
        let log = refused_start(&path, 1);
        assert!(
            log.contains("not a regular file"),
            "{}: {log}",
            path.display()
        );
    }
}

#[test]
fn the_round_files_are_created_private_to_the_server_user() {
    use std::os::unix::fs::PermissionsExt;
    let server = ServerProcess::start(1, &[]);
    let mut records = server.bets_file.as_os_str().to_owned();
    records.push(".finished");
    for path in [server.bets_file.clone(), records.into()] {
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", path.display());
    }
}

#[test]
fn a_draw_that_failed_for_want_of_descriptors_succeeds_on_a_later_try() {
    use rustix::process::{Pid, Resource, prlimit};
    let server = ServerProcess::start(1, &[("SERVER_DRAW_WAIT_MS", "0")]);
    let (mut stream, _, _) = session(server.port, 1);
    assert_eq!(
        exchange(&mut stream, &batch_of(1, 0, &["5".into()], 7574)),
        Wire::BetsAck(1)
    );
    let pid = Pid::from_raw(server.pid() as i32);
    let open = std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
        .unwrap()
        .count() as u64;
    // No descriptor left: the draw cannot open its reader.
    let normal = prlimit(pid, Resource::Nofile, open_files_limit(server.pid(), open))
        .expect("lower the server's descriptor limit");
    let bets = [good_bet("5", 7574)];
    assert_eq!(
        exchange(&mut stream, &finish_of(1, &bets)),
        Wire::FinishAck(1, digest_of(&bets))
    );
    server.wait_for_log("action: sorteo | result: fail");
    let detail = expect_error(
        exchange(&mut stream, &get_winners_message(1)),
        code::STORAGE,
    );
    assert!(detail.contains("tried again"), "{detail}");
    prlimit(pid, Resource::Nofile, normal).expect("restore the server's descriptor limit");
    let winners = wait_until("the draw tried again", || {
        stream.write_all_checked(&get_winners_message(1));
        match read_wire(&mut stream) {
            Wire::Winners(documents) => Some(documents),
            Wire::Error(code::STORAGE, _) => {
                std::thread::sleep(Duration::from_millis(100));
                None
            }
            other => panic!("unexpected {other:?}"),
        }
    });
    assert_eq!(winners, "5");
    assert_eq!(server.count_log("action: sorteo | result: success"), 1);
}

/// The server's open-files limit with its soft part set to `soft`, from /proc.
fn open_files_limit(pid: u32, soft: u64) -> rustix::process::Rlimit {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let hard = line.split_whitespace().nth(4).and_then(|h| h.parse().ok());
    rustix::process::Rlimit {
        current: Some(soft),
        maximum: hard,
    }
}

trait WriteAllChecked {
    fn write_all_checked(&mut self, bytes: &[u8]);
}

impl WriteAllChecked for std::net::TcpStream {
    fn write_all_checked(&mut self, bytes: &[u8]) {
        std::io::Write::write_all(self, bytes).expect("send");
    }
}
