//! Faults: a full disk, a client with no server or whose server is killed, a
//! server at its connection limit, and a flood of connections.

mod common;

use common::*;
use std::io::Write;
use std::net::TcpStream;
use std::process::Command;

/// Mounts a tmpfs of `kib` KiB at `dir`; `None` where this machine does not allow it.
fn mount_tiny_tmpfs(dir: &std::path::Path, kib: u32) -> Option<()> {
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
        .arg(dir)
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?;
    status.success().then_some(())
}

struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_answers_storage_keeps_serving_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let mount_point = dir.path().join("tiny");
    std::fs::create_dir(&mount_point).unwrap();
    if mount_tiny_tmpfs(&mount_point, 64).is_none() {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    }
    let _unmount = Unmount(mount_point.clone());
    let bets_file = mount_point.join("bets.csv");
    let server = TestServer::start_with_file(1, &[], &bets_file);
    let (mut stream, _, _) = session(server.port, 1);
    let batch = |first: u32| {
        let documents: Vec<String> = (1000 + first..1100 + first)
            .map(|i| i.to_string())
            .collect();
        batch_of(1, first, &documents, 1)
    };
    assert_eq!(exchange(&mut stream, &batch(0)), Wire::BetsAck(100));
    let stored_len = std::fs::metadata(&bets_file).unwrap().len();

    // Fill the rest of the tmpfs.
    let filler = mount_point.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    while file.write_all(&[b'x'; 1024]).is_ok() {}
    drop(file);

    let detail = expect_error(exchange(&mut stream, &batch(100)), code::STORAGE);
    assert!(detail.contains("not stored"), "{detail}");
    assert_eq!(
        std::fs::metadata(&bets_file).unwrap().len(),
        stored_len,
        "no partial row is left behind"
    );

    // Space comes back: the same connection stores the next batch.
    std::fs::remove_file(&filler).unwrap();
    // The refused batch was not stored: the agency's next batch is the same one.
    assert_eq!(exchange(&mut stream, &batch(100)), Wire::BetsAck(100));
    let rows = server.stored_rows();
    assert_eq!(rows.len(), 200);
}

#[test]
fn a_client_with_nothing_listening_fails_clearly_after_its_timeout() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    // CLI_TIMEOUT_S=1: the client gives up long before the test's own limit.
    let mut command = client_command(
        1,
        &format!("127.0.0.1:{port}"),
        &agency_file(&default_data_dir(), 1),
    );
    command.env("CLI_TIMEOUT_S", "1");
    let child = command.spawn().unwrap();
    let (status, log) = exit_and_log(child);
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("could not connect to the server"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn a_client_whose_server_is_killed_mid_run_fails_clearly() {
    let data = tempfile::tempdir().unwrap();
    write_agency_files(data.path(), 1, 60_000);
    let mut server = ServerProcess::start(1, &[]);
    let client = client_command(1, &server.address(), &agency_file(data.path(), 1))
        .env("CLI_TIMEOUT_S", "2")
        .env("CLI_BATCHES_IN_FLIGHT", "1")
        .spawn()
        .unwrap();
    server.wait_for_log("action: apuesta_recibida | result: success");
    server.signal("KILL");
    server.wait_exit();
    let (status, log) = exit_and_log(client);
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("action: exit | result: fail | error:"),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn a_connection_flood_gets_busy_and_threads_return_to_baseline() {
    let server = ServerProcess::start(8, &[("SERVER_MAX_CONNECTIONS", "8")]);
    let baseline = thread_count(server.pid());
    // Eight agencies hold every slot, each with its session open.
    let mut held: Vec<TcpStream> = (1..=8)
        .map(|agency| session(server.port, agency).0)
        .collect();
    wait_for_threads(server.pid(), baseline + 8);
    let mut excess: Vec<TcpStream> = (0..12).map(|_| connect(server.port)).collect();
    for stream in &mut excess {
        let detail = expect_error(read_wire(stream), code::BUSY);
        assert!(detail.contains("retry"), "{detail}");
        assert_closed(stream);
    }
    // The eight held connections are served.
    for (index, stream) in held.iter_mut().enumerate() {
        let agency = index as u32 + 1;
        assert_eq!(
            exchange(stream, &get_winners_message(agency)),
            Wire::NoWinners
        );
    }
    drop(held);
    drop(excess);
    wait_for_threads(server.pid(), baseline);
}

#[test]
fn agencies_refused_as_busy_connect_again_and_nothing_is_stored_twice() {
    let data = tempfile::tempdir().unwrap();
    // Over 64 batches each, so the client's first write is more than one window
    // and may fail on the closed socket before the BUSY is read.
    let winners = write_agency_files(data.path(), 2, 20_000);
    let server = ServerProcess::start(2, &[("SERVER_MAX_CONNECTIONS", "1")]);
    // This connection takes the only slot; a served query proves it is counted.
    let (mut holder, _, _) = session(server.port, 1);
    assert_eq!(
        exchange(&mut holder, &get_winners_message(1)),
        Wire::NoWinners
    );
    let mut first_command = client_command(1, &server.address(), &agency_file(data.path(), 1));
    let first = first_command.spawn().unwrap();
    server.wait_for_count("conexion_rechazada", 2);
    drop(holder);
    // Agency 2 now competes for the one slot with agency 1; either may be
    // refused BUSY again, in either phase.
    let mut second_command = client_command(2, &server.address(), &agency_file(data.path(), 2));
    let second = second_command.spawn().unwrap();
    for (index, (command, child)) in [(first_command, first), (second_command, second)]
        .into_iter()
        .enumerate()
    {
        let output = output_of(child);
        assert!(output.status.success(), "{}", describe(&command, &output));
        assert_eq!(logged_winner_count(&output), Some(winners[index].len()));
        if index == 0 {
            let log = String::from_utf8_lossy(&output.stderr);
            assert!(
                log.contains("action: conectar | result: in_progress") && log.contains("BUSY"),
                "agency 1 logs that it was refused and connects again:\n{log}"
            );
        }
        assert_eq!(fetch_winners(server.port, index as u32 + 1), winners[index]);
    }
    let rows = server.stored_rows();
    let distinct: std::collections::HashSet<&String> = rows.iter().collect();
    assert_eq!(
        (rows.len(), distinct.len()),
        (40_000, 40_000),
        "every bet stored once"
    );
    assert_eq!(server.count_log("action: sorteo | result: success"), 1);
}
