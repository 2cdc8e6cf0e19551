//! Only the agency itself: tokens, loopback-only without them, TLS, and the
//! limits that keep anyone who can reach the port from denying service to the
//! agencies.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Writes a tokens file for agencies 1..=`agencies` (mode 0600); returns it
/// with each agency's token (index 0 is agency 1's).
fn tokens_file(dir: &Path, agencies: u32) -> (PathBuf, Vec<String>) {
    let path = dir.join("tokens");
    let tokens: Vec<String> = (1..=agencies)
        .map(|a| {
            format!(
                "secret-token-of-agency-{a}-{:x}",
                seeded(u64::from(a) * 7919)()
            )
        })
        .collect();
    let text: String = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| format!("{} {t}\n", i + 1))
        .collect();
    std::fs::write(&path, format!("# the agencies' tokens\n{text}")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    (path, tokens)
}

fn hello_with(port: u16, agency: u32, token: &str) -> (TcpStream, Wire) {
    let mut stream = connect(port);
    let reply = exchange(&mut stream, &hello_message(agency, token.as_bytes()));
    (stream, reply)
}

#[test]
fn only_an_agencys_own_token_opens_its_session_and_no_token_is_ever_logged() {
    let dir = tempfile::tempdir().unwrap();
    let (file, tokens) = tokens_file(dir.path(), 2);
    let file = file.display().to_string();
    let server = ServerProcess::start(2, &[("SERVER_TOKENS_FILE", &file)]);
    assert!(matches!(
        hello_with(server.port, 1, &tokens[0]).1,
        Wire::Welcome(0, 0, _)
    ));
    for (agency, token) in [
        (1, tokens[1].as_str()),
        (1, ""),
        (2, "x".repeat(40).as_str()),
    ] {
        let (mut stream, reply) = hello_with(server.port, agency, token);
        let detail = expect_error(reply, code::UNAUTHORIZED);
        assert!(detail.contains("CLI_TOKEN"), "{detail}");
        assert_closed(&mut stream);
    }
    server.wait_for_count("action: saludo | result: fail", 3);
    let log = server.log_lines().join("\n");
    assert!(
        log.contains("| peer: 127.0.0.1:") && log.contains("| agencia: 1 |"),
        "{log}"
    );
    assert!(log.contains("autenticacion: tokens"), "{log}");
    for token in &tokens {
        assert!(
            !log.contains(token.as_str()),
            "a token reached the log:\n{log}"
        );
    }
}

#[test]
fn a_forged_finish_is_refused_and_the_real_agencies_complete() {
    let dir = tempfile::tempdir().unwrap();
    let (file, tokens) = tokens_file(dir.path(), 5);
    let file = file.display().to_string();
    let server = ServerProcess::start(5, &[("SERVER_TOKENS_FILE", &file)]);
    for agency in 1..=5 {
        // A FINISH with no session, then one after a HELLO with a guessed token.
        let mut stream = connect(server.port);
        let detail = expect_error(
            exchange(&mut stream, &finish_of(agency, &[])),
            code::UNAUTHORIZED,
        );
        eprintln!("forged FINISH for agency {agency}: UNAUTHORIZED: {detail}");
        let (mut stream, reply) = hello_with(server.port, agency, "guessed-token-0000");
        expect_error(reply, code::UNAUTHORIZED);
        assert_eq!(read_wire(&mut stream), Wire::Closed);
    }
    assert_eq!(
        server.count_log("action: agencia_finalizo"),
        0,
        "{}",
        server.describe()
    );
    let data = default_data_dir();
    let clients: Vec<_> = (1..=5u32)
        .map(|id| {
            let token = [("CLI_TOKEN", tokens[id as usize - 1].as_str())];
            spawn_agency(id, &server.address(), &data, &token)
        })
        .collect();
    let counts: Vec<usize> = (1..=5)
        .map(|id| expected_from_csv(&agency_file(&data, id)).1.len())
        .collect();
    assert_agencies_got(clients, &counts);
    let draw = server.wait_for_log("action: sorteo | result: success");
    assert!(draw.contains("| apuestas: 10000 |"), "{draw}");
}

#[test]
fn a_bad_tokens_file_stops_the_start_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens");
    let good = "0123456789abcdef0123";
    for (text, wanted) in [
        (format!("1 {good}\n2 short\n"), "line 2"),
        (format!("1 {good}\n1 {good}x\n"), "line 2"),
        (format!("1 {good}\n"), "no token for agency 2"),
        (format!("1 {good}\n2 {good} extra\n"), "line 2"),
        // One token for two agencies would let one speak as the other.
        (
            format!("1 {good}\n2 {good}\n"),
            "agency 2 has the same token as agency 1",
        ),
    ] {
        std::fs::write(&path, &text).unwrap();
        let mut server = ServerProcess::spawn(
            2,
            &[("SERVER_TOKENS_FILE", path.to_str().unwrap())],
            dir.path(),
            &dir.path().join("bets.csv"),
        );
        let (status, log) = server.wait_for_exit_and_log();
        assert_eq!(status.code(), Some(2), "{text:?}: {log}");
        assert!(
            log.contains(wanted) && log.contains("SERVER_TOKENS_FILE"),
            "{text:?}: {log}"
        );
        assert!(!log.contains(good), "a token reached the log: {log}");
    }
    // Readable by others: it starts, with a warning.
    std::fs::write(&path, format!("1 {good}\n2 {good}x\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let server = ServerProcess::start(2, &[("SERVER_TOKENS_FILE", path.to_str().unwrap())]);
    server.wait_for_log("the tokens file can be read by other users");
}

/// A network namespace with a veth pair to this host: the host end is
/// `10.231.N.1`, the namespace end `10.231.N.2`. Removed when dropped.
struct Namespace {
    name: String,
    host_ip: String,
}

impl Namespace {
    fn create() -> Option<Namespace> {
        let id = std::process::id() % 250;
        let name = format!("lt{}", std::process::id());
        let (host, inside) = (format!("vh{id}"), format!("vn{id}"));
        let host_ip = format!("10.231.{id}.1");
        let steps: Vec<Vec<String>> = vec![
            vec!["netns".into(), "add".into(), name.clone()],
            vec![
                "link".into(),
                "add".into(),
                host.clone(),
                "type".into(),
                "veth".into(),
                "peer".into(),
                "name".into(),
                inside.clone(),
            ],
            vec![
                "link".into(),
                "set".into(),
                inside.clone(),
                "netns".into(),
                name.clone(),
            ],
            vec![
                "addr".into(),
                "add".into(),
                format!("{host_ip}/30"),
                "dev".into(),
                host.clone(),
            ],
            vec!["link".into(), "set".into(), host.clone(), "up".into()],
            vec![
                "-n".into(),
                name.clone(),
                "addr".into(),
                "add".into(),
                format!("10.231.{id}.2/30"),
                "dev".into(),
                inside.clone(),
            ],
            vec![
                "-n".into(),
                name.clone(),
                "link".into(),
                "set".into(),
                inside,
                "up".into(),
            ],
            vec![
                "-n".into(),
                name.clone(),
                "link".into(),
                "set".into(),
                "lo".into(),
                "up".into(),
            ],
        ];
        let namespace = Namespace { name, host_ip };
        for step in steps {
            let ok = Command::new("ip")
                .args(&step)
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return None;
            }
        }
        Some(namespace)
    }

    /// `program` run inside the namespace.
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The client command for agency 1 run inside `namespace`, against `address`.
fn client_in(namespace: &Namespace, address: &str, data_file: &Path) -> Command {
    let mut command = namespace.command(CLIENT_BIN);
    command
        .env("CLI_ID", "1")
        .env("CLI_SERVER_ADDRESS", address)
        .env("CLI_DATA_FILE", data_file)
        .env("CLI_RETRY_INTERVAL_MS", "20")
        .env("CLI_TIMEOUT_S", "30");
    command
}

#[test]
fn without_tokens_a_peer_off_this_machine_is_refused_and_with_them_it_is_served() {
    let Some(namespace) = Namespace::create() else {
        eprintln!("skipped: cannot make a network namespace here (needs root and iproute2)");
        return;
    };
    let data = agency_file(&default_data_dir(), 1);
    let server = ServerProcess::start(1, &[("SERVER_IP", "0.0.0.0")]);
    server.wait_for_log("action: config | result: in_progress | autenticacion: solo_loopback");
    let address = format!("{}:{}", namespace.host_ip, server.port);
    let output = run_expecting(&mut client_in(&namespace, &address, &data), 1);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        log.contains("UNAUTHORIZED") && log.contains("SERVER_TOKENS_FILE"),
        "{log}"
    );
    let refusal = server.wait_for_log("action: acceso | result: fail");
    assert!(refusal.contains("peer: 10.231."), "{refusal}");
    assert!(server.stored_rows().is_empty());

    let dir = tempfile::tempdir().unwrap();
    let (file, tokens) = tokens_file(dir.path(), 1);
    let server = ServerProcess::start(
        1,
        &[
            ("SERVER_IP", "0.0.0.0"),
            ("SERVER_TOKENS_FILE", file.to_str().unwrap()),
        ],
    );
    let address = format!("{}:{}", namespace.host_ip, server.port);
    let mut command = client_in(&namespace, &address, &data);
    command.env("CLI_TOKEN", &tokens[0]);
    let output = run_expecting(&mut command, 0);
    let (rows, winners) = expected_from_csv(&data);
    assert_eq!(logged_winner_count(&output), Some(winners.len()));
    assert_eq!(server.stored_rows().len(), rows);
}

/// The server settings of `certs` as `ServerProcess::start` takes them.
fn tls_env(certs: &Certificates) -> Vec<(&'static str, String)> {
    certs.server_env().to_vec()
}

fn as_env<'a>(pairs: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    pairs.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[test]
fn a_round_over_tls_gives_every_agency_its_winners() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certificates::generate(dir.path(), "round");
    let env = tls_env(&certs);
    let server = ServerProcess::start(3, &as_env(&env));
    assert_eq!(server.count_log("| tls: on"), 1, "{}", server.describe());
    let data = default_data_dir();
    let ca = certs.ca.display().to_string();
    let clients: Vec<_> = (1..=3u32)
        .map(|id| spawn_agency(id, &server.address(), &data, &[("CLI_TLS_CA", &ca)]))
        .collect();
    let counts: Vec<usize> = (1..=3)
        .map(|id| expected_from_csv(&agency_file(&data, id)).1.len())
        .collect();
    assert_agencies_got(clients, &counts);
}

/// A client of agency 1 that must fail (exit 1) long before its own timeout,
/// with a message containing `wanted`.
fn fails_clearly(mut command: Command, wanted: &str) {
    command.env("CLI_TIMEOUT_S", "600");
    let output = run_expecting(&mut command, 1);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("action: exit | result: fail"), "{log}");
    assert!(log.contains(wanted), "{wanted:?} in:\n{log}");
}

#[test]
fn a_plain_client_against_a_tls_server_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certificates::generate(dir.path(), "plain");
    let server = ServerProcess::start(1, &as_env(&tls_env(&certs)));
    let data = agency_file(&default_data_dir(), 1);
    fails_clearly(client_command(1, &server.address(), &data), "CLI_TLS_CA");
    server.wait_for_log("action: tls | result: fail");
}

#[test]
fn a_tls_client_against_a_plain_server_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certificates::generate(dir.path(), "tls");
    let server = ServerProcess::start(1, &[]);
    let mut command = client_command(1, &server.address(), &agency_file(&default_data_dir(), 1));
    command.env("CLI_TLS_CA", &certs.ca);
    fails_clearly(command, "TLS with the server failed");
}

#[test]
fn a_certificate_that_does_not_verify_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let served = Certificates::generate(dir.path(), "served");
    let other = Certificates::generate(dir.path(), "other");
    let server = ServerProcess::start(1, &as_env(&tls_env(&served)));
    let data = agency_file(&default_data_dir(), 1);
    let mut wrong_ca = client_command(1, &server.address(), &data);
    wrong_ca.env("CLI_TLS_CA", &other.ca);
    fails_clearly(wrong_ca, "certificate");
    let mut wrong_name = client_command(1, &server.address(), &data);
    wrong_name
        .env("CLI_TLS_CA", &served.ca)
        .env("CLI_TLS_SERVER_NAME", "elsewhere.example");
    fails_clearly(wrong_name, "certificate");
}

#[test]
fn the_limits_and_the_orderly_stop_hold_inside_tls() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certificates::generate(dir.path(), "limits");
    let mut env = tls_env(&certs);
    env.push(("SERVER_MAX_CONNECTIONS", "4".to_string()));
    env.push(("SERVER_HELLO_TIMEOUT_MS", "1000".to_string()));
    env.push(("SERVER_IDLE_TIMEOUT_MS", "600000".to_string()));
    env.push(("SERVER_DRAW_WAIT_MS", "600000".to_string()));
    let mut server = ServerProcess::start(2, &as_env(&env));
    // The size limit: a header declaring more than 8192 bytes.
    let mut tls = tls_connect(server.port, &certs.ca);
    assert!(matches!(
        exchange(&mut tls, &hello_message(1, ANY_TOKEN)),
        Wire::Welcome(0, 0, _)
    ));
    let too_large = [0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0x1F, 0xF3];
    expect_error(exchange(&mut tls, &too_large), code::TOO_LARGE);
    assert_closed(&mut tls);
    // The HELLO deadline: a TLS session that says nothing is closed.
    let mut silent = tls_connect(server.port, &certs.ca);
    silent
        .conn
        .complete_io(&mut silent.sock)
        .expect("the handshake");
    assert_closed(&mut silent);
    // BUSY, said inside TLS: four sessions hold every slot.
    let mut held: Vec<TlsStream> = (0..4)
        .map(|i| {
            let mut tls = tls_connect(server.port, &certs.ca);
            let agency = 1 + i % 2;
            assert!(matches!(
                exchange(&mut tls, &hello_message(agency, ANY_TOKEN)),
                Wire::Welcome(..)
            ));
            tls
        })
        .collect();
    let mut refused = tls_connect(server.port, &certs.ca);
    expect_error(read_wire(&mut refused), code::BUSY);
    // The orderly stop: a session waiting on the draw (or about to) hears
    // SHUTTING_DOWN either way.
    held[0].write_all(&get_winners_message(1)).unwrap();
    held[0].flush().unwrap();
    server.signal("TERM");
    expect_error(read_wire(&mut held[0]), code::SHUTTING_DOWN);
    assert_eq!(server.wait_exit().code(), Some(0), "{}", server.describe());
}

#[test]
fn a_connection_must_say_hello_in_time() {
    let server = TestServer::start(
        1,
        &[
            ("SERVER_HELLO_TIMEOUT_MS", "500"),
            ("SERVER_IDLE_TIMEOUT_MS", "600000"),
        ],
    );
    // Closed (not timed out: that would fail `assert_closed`), and by the HELLO
    // deadline, since the idle one is ten minutes away.
    let mut silent = connect(server.port);
    assert_closed(&mut silent);
    // After HELLO the idle timeout (long here) is what counts.
    let (mut session, _, _) = session(server.port, 1);
    session
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut byte = [0u8; 1];
    let read = session.read(&mut byte);
    assert!(
        matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the session stays open: {read:?}"
    );
}

#[test]
fn an_agency_may_hold_only_a_few_connections() {
    let server = TestServer::start(1, &[]);
    let held: Vec<TcpStream> = (0..4).map(|_| session(server.port, 1).0).collect();
    let (mut fifth, reply) = hello_with(server.port, 1, "any");
    let detail = expect_error(reply, code::BUSY);
    assert!(
        detail.contains("agency 1 already has 4 connections"),
        "{detail}"
    );
    assert_closed(&mut fifth);
    drop(held);
    wait_until("a slot of agency 1 to free up", || {
        matches!(hello_with(server.port, 1, "any").1, Wire::Welcome(..)).then_some(())
    });
}

#[test]
fn pipelined_get_winners_wait_at_most_once_in_all() {
    // A 2 s draw wait: a thousand pipelined requests waiting 2 s each would take
    // over half an hour; they are answered within a few seconds.
    let server = TestServer::start(2, &[("SERVER_DRAW_WAIT_MS", "2000")]);
    let (mut stream, _, _) = session(server.port, 1);
    let started = Instant::now();
    stream
        .write_all(&get_winners_message(1).repeat(1000))
        .unwrap();
    for _ in 0..1000 {
        assert_eq!(read_wire(&mut stream), Wire::NoWinners);
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_connection_that_keeps_being_refused_is_closed() {
    let server = TestServer::start(1, &[]);
    let (mut stream, _, _) = session(server.port, 1);
    let bad = bets_message(1, 0, 1, &[bet_bytes(b"", b"Gil", b"1", b"2000-01-01", 1)]);
    stream.write_all(&bad.repeat(20)).unwrap();
    for _ in 0..8 {
        expect_error(read_wire(&mut stream), code::INVALID_BET);
    }
    assert_closed(&mut stream);
}

#[test]
fn twenty_thousand_refused_requests_from_one_peer_add_a_few_lines_to_the_log() {
    let server = ServerProcess::start(1, &[]);
    let before = server.log_lines().len();
    let bad = bets_message(1, 0, 1, &[bet_bytes(b"", b"Gil", b"1", b"2000-01-01", 1)]);
    let mut sent = 0;
    while sent < 20_000 {
        let (mut stream, _, _) = session(server.port, 1);
        let _ = stream.write_all(&bad.repeat(100));
        sent += 100;
        let mut sink = Vec::new();
        let _ = stream.read_to_end(&mut sink);
    }
    let added = server.log_lines().len() - before;
    eprintln!("20,000 refused requests added {added} log lines");
    assert!(added < 300, "{added} lines:\n{}", server.describe());
}

#[test]
fn unauthenticated_floods_and_a_stolen_token_do_not_keep_the_agencies_from_the_draw() {
    let dir = tempfile::tempdir().unwrap();
    let (file, tokens) = tokens_file(dir.path(), 5);
    let data = tempfile::tempdir().unwrap();
    let winners = write_agency_files(data.path(), 5, 2000);
    let server = ServerProcess::start(5, &[("SERVER_TOKENS_FILE", file.to_str().unwrap())]);
    let port = server.port;
    // Agency 1 has sent its bets and finished; its token is then stolen.
    let agency_one = client_command(1, &server.address(), &agency_file(data.path(), 1))
        .env("CLI_TOKEN", &tokens[0])
        .spawn()
        .unwrap();
    server.wait_for_log("agencia: 1 | total_agencias_finalizadas: 1");
    let stop = Arc::new(AtomicBool::new(false));
    let mut attackers = Vec::new();
    for _ in 0..300 {
        let stop = Arc::clone(&stop);
        attackers.push(std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
                    continue;
                };
                // A HELLO with a 255-byte token, a byte every 200 ms: it would
                // take 52 s to complete.
                let hello = hello_message(1, &[b'x'; 255]);
                for byte in hello {
                    if stop.load(Ordering::SeqCst) || stream.write_all(&[byte]).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }));
    }
    for _ in 0..50 {
        let (stop, token) = (Arc::clone(&stop), tokens[0].clone());
        attackers.push(std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
                    continue;
                };
                let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
                let mut request = hello_message(1, token.as_bytes());
                request.extend(get_winners_message(1).repeat(1000));
                let _ = stream.write_all(&request);
                let mut sink = [0u8; 4096];
                while !stop.load(Ordering::SeqCst)
                    && matches!(stream.read(&mut sink), Ok(n) if n > 0)
                {}
                std::thread::sleep(Duration::from_millis(20));
            }
        }));
    }
    // The share of connections without HELLO is full: newcomers are refused
    // or take the places of the oldest.
    server.wait_for_log("action: conexion_rechazada");
    let started = Instant::now();
    let clients: Vec<_> = (2..=5u32)
        .map(|id| {
            let token = [("CLI_TOKEN", tokens[id as usize - 1].as_str())];
            spawn_agency(id, &server.address(), data.path(), &token)
        })
        .collect();
    let counts: Vec<usize> = winners[1..].iter().map(Vec::len).collect();
    assert_agencies_got(clients, &counts);
    let took = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    for attacker in attackers {
        attacker.join().unwrap();
    }
    let output = output_of(agency_one);
    eprintln!(
        "under attack, agencies 2-5 finished in {:.1} s; BUSY refusals logged: {}, evictions logged: {}; agency 1 exited {}",
        took.as_secs_f64(),
        server.count_log("conexion_rechazada"),
        server.count_log("conexion_desalojada"),
        output.status
    );
    for (index, expected) in winners.iter().enumerate() {
        assert_eq!(
            &fetch_winners_with(port, index as u32 + 1, &tokens[index]),
            expected
        );
    }
}

/// `fetch_winners` with the agency's token.
fn fetch_winners_with(port: u16, agency: u32, token: &str) -> Vec<String> {
    wait_until(&format!("the winners of agency {agency}"), || {
        let (mut stream, reply) = hello_with(port, agency, token);
        if !matches!(reply, Wire::Welcome(..)) {
            std::thread::sleep(Duration::from_millis(50));
            return None;
        }
        stream.write_all(&get_winners_message(agency)).unwrap();
        read_winners(&mut stream)
    })
}

#[test]
fn the_server_raises_its_open_files_limit_and_keeps_connections_within_it() {
    let dir = tempfile::tempdir().unwrap();
    let bets = dir.path().join("bets.csv");
    let log = dir.path().join("server.log");
    let mut child = Command::new("prlimit")
        .args(["--nofile=100:100", "--", SERVER_BIN])
        .env("SERVER_PORT", "0")
        .env("SERVER_IP", "127.0.0.1")
        .env("SERVER_BETS_FILE", &bets)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("run prlimit");
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let config = wait_until("the server to be ready", || {
        read_log()
            .lines()
            .find(|l| l.contains("action: config | result: success"))
            .map(str::to_string)
    });
    assert!(config.contains("max_connections: 36"), "{config}");
    assert!(
        read_log().contains("SERVER_MAX_CONNECTIONS lowered from 256 to 36"),
        "{}",
        read_log()
    );
    let _ = child.kill();
    let _ = child.wait();

    let mut child = Command::new("prlimit")
        .args(["--nofile=128:4096", "--", SERVER_BIN])
        .env("SERVER_PORT", "0")
        .env("SERVER_IP", "127.0.0.1")
        .env("SERVER_BETS_FILE", dir.path().join("bets2.csv"))
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("run prlimit");
    wait_until("the server to be ready", || {
        read_log()
            .contains("action: config | result: success")
            .then_some(())
    });
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert_eq!(line.split_whitespace().nth(3), Some("4096"), "{line}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_tls_key_other_users_can_read_is_warned_of() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certificates::generate(dir.path(), "open-key");
    std::fs::set_permissions(&certs.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let env = certs.server_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = ServerProcess::start(1, &env);
    let line = server.wait_for_log("the TLS private key can be read by other users");
    assert!(
        line.contains("WARN") && line.contains("chmod 600"),
        "{line}"
    );
}

#[test]
fn a_client_facing_a_peer_that_does_not_speak_the_protocol_stops_at_once_naming_why() {
    // An HTTP server's answer: "HTTP/1.1 ..." starts with the bytes 0x48 0x54.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let answering = std::thread::spawn(move || {
        for stream in listener.incoming().take(1) {
            let mut stream = stream.unwrap();
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let started = Instant::now();
    let mut client = client_command(1, &address, &agency_file(&default_data_dir(), 1));
    client.env("CLI_TIMEOUT_S", "600");
    let output = run_expecting(&mut client, 1);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("unknown message id 0x4854"), "{log}");
    // Not retried for its timeout (ten minutes): the first answer settles it.
    assert!(!log.contains("connecting again"), "{log}");
    assert!(started.elapsed() < Duration::from_secs(60), "{log}");
    answering.join().unwrap();
}
