//! Admission under floods of silent connections: a slow TLS agency behind a
//! long network path is never evicted or refused because of a flood from
//! another address, and TLS agencies sharing their address with a flood still
//! finish. The two tests run one at a time (each floods the machine).

mod common;

use common::*;
use std::collections::VecDeque;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static ONE_FLOOD_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Opens `per_second` silent connections a second from `source` to `server`,
/// each held `held` (or until the server closes it), until dropped.
struct Flood {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Flood {
    fn start(source: [u8; 4], server: SocketAddr, per_second: u32, held: Duration) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let interval = Duration::from_secs(1) / per_second;
            let mut open: VecDeque<(Instant, TcpStream)> = VecDeque::new();
            let mut opened = 0;
            let mut next = Instant::now();
            while !stopping.load(Ordering::SeqCst) {
                if let Some(stream) = connect_from(source, server) {
                    open.push_back((Instant::now(), stream));
                    opened += 1;
                }
                while open.front().is_some_and(|(at, _)| at.elapsed() > held) {
                    open.pop_front();
                }
                next += interval;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            opened
        });
        Flood {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let opened = thread.join().unwrap_or(0);
            eprintln!("the flood opened {opened} connections");
        }
    }
}

/// A TCP connection to `server` from the loopback address `source`.
fn connect_from(source: [u8; 4], server: SocketAddr) -> Option<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).ok()?;
    socket.bind(&SocketAddr::from((source, 0)).into()).ok()?;
    socket.connect(&server.into()).ok()?;
    Some(socket.into())
}

/// Log lines of the server about connections from 127.0.0.1 evicted or refused.
fn local_peers_pushed_out(server: &ServerProcess) -> Vec<String> {
    server
        .log_lines()
        .into_iter()
        .filter(|line| {
            (line.contains("conexion_desalojada") || line.contains("conexion_rechazada"))
                && line.contains("peer: 127.0.0.1:")
        })
        .collect()
}

/// Agency 1's round through `proxy`, over TLS: its time, after checking its winners.
fn round_through(proxy: &DelayProxy, certs: &Certificates, data: &std::path::Path) -> Duration {
    let started = Instant::now();
    let ca = certs.ca.display().to_string();
    let client = spawn_agency(1, &proxy.addr.to_string(), data, &[("CLI_TLS_CA", &ca)]);
    let expected = expected_from_csv(&agency_file(data, 1)).1.len();
    assert_agencies_got(vec![client], &[expected]);
    started.elapsed()
}

#[test]
fn a_slow_tls_agency_is_not_pushed_out_by_a_flood_from_another_address() {
    let _one = ONE_FLOOD_AT_A_TIME.lock();
    let dir = tempfile::tempdir().unwrap();
    let certs = Certificates::generate(dir.path(), "slow");
    let env: Vec<(&str, String)> = certs.server_env().to_vec();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let data = tempfile::tempdir().unwrap();
    write_agency_files(data.path(), 1, 2000);
    let delay = Duration::from_millis(120);

    let quiet = ServerProcess::start(1, &env);
    let quiet_proxy = DelayProxy::start(quiet.address().parse().unwrap(), delay);
    let alone = round_through(&quiet_proxy, &certs, data.path());

    let server = ServerProcess::start(1, &env);
    let address: SocketAddr = server.address().parse().unwrap();
    let proxy = DelayProxy::start(address, delay);
    let flood = Flood::start([127, 0, 0, 2], address, 300, Duration::from_secs(1));
    // The share of connections without HELLO is full of the flood's.
    server.wait_for_log("action: conexion_rechazada");
    let flooded = round_through(&proxy, &certs, data.path());
    drop(flood);
    eprintln!(
        "agency 1 behind 120 ms each way: {} ms alone, {} ms under the flood",
        alone.as_millis(),
        flooded.as_millis()
    );
    assert!(
        server.count_log("peer: 127.0.0.2:") > 0,
        "{}",
        server.describe()
    );
    assert_eq!(local_peers_pushed_out(&server), Vec::<String>::new());
}

#[test]
fn tls_agencies_sharing_their_address_with_a_flood_finish() {
    let _one = ONE_FLOOD_AT_A_TIME.lock();
    let dir = tempfile::tempdir().unwrap();
    let certs = Certificates::generate(dir.path(), "shared");
    let env: Vec<(&str, String)> = certs.server_env().to_vec();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let data = tempfile::tempdir().unwrap();
    let winners = write_agency_files(data.path(), 5, 2000);
    let server = ServerProcess::start(5, &env);
    let address: SocketAddr = server.address().parse().unwrap();
    let flood = Flood::start([127, 0, 0, 1], address, 1000, Duration::from_millis(500));
    server.wait_for_log("action: conexion_rechazada");
    let started = Instant::now();
    let ca = certs.ca.display().to_string();
    let clients: Vec<_> = (1..=5u32)
        .map(|id| spawn_agency(id, &server.address(), data.path(), &[("CLI_TLS_CA", &ca)]))
        .collect();
    let counts: Vec<usize> = winners.iter().map(Vec::len).collect();
    assert_agencies_got(clients, &counts);
    let took = started.elapsed();
    drop(flood);
    eprintln!(
        "five TLS agencies under 1,000 silent connections a second: {} ms",
        took.as_millis()
    );
    // A generous bound: without the fair rules they did not finish in 60 s.
    assert!(took < Duration::from_secs(30), "{took:?}");
}
