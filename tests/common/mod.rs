//! Shared helpers of the integration tests: start the real `server` and `client`
//! binaries on ephemeral ports in temporary directories, collect their logs, and
//! speak the wire protocol with hand-built bytes.
#![allow(dead_code)] // each test file uses its own subset

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Tests of one file run side by side, except those with a deadline on how fast
/// the server or a client reacts: each of those runs alone. On 2 cores, a 2 s
/// deadline kept while a dozen other servers and clients ingest at once measures
/// the test run's load, not the program.
static DEADLINES: RwLock<()> = RwLock::new(());

/// Held for the whole of a test with a deadline: no other test of its file runs meanwhile.
pub fn alone() -> RwLockWriteGuard<'static, ()> {
    DEADLINES.write().unwrap_or_else(PoisonError::into_inner)
}

/// Held for the whole of any other test: such tests share the machine, but never
/// with a test that has a deadline.
pub fn side_by_side() -> RwLockReadGuard<'static, ()> {
    DEADLINES.read().unwrap_or_else(PoisonError::into_inner)
}

/// Adds up the time the machine's host kept every process of the test from
/// running. A deadline on a program's reaction allows its bound plus these
/// pauses: on this project's 2-core virtual machine a 20 ms sleep has taken
/// 0.7, 1.7 and 3.1 s, and a deadline that counts such a pause times the host,
/// not the program. A thread sleeps 5 ms at a time; each wake-up more than 20 ms
/// late counts its lateness. A program that sleeps leaves this thread's wake-ups
/// on time, so its own slowness does not register; one that spins on both cores
/// could make them late (not measured here).
pub struct HostPauses {
    paused_us: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HostPauses {
    pub fn start() -> HostPauses {
        let paused_us = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (total, stopped) = (Arc::clone(&paused_us), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            const NAP: Duration = Duration::from_millis(5);
            const JITTER: Duration = Duration::from_millis(20);
            while !stopped.load(Ordering::Relaxed) {
                let before = Instant::now();
                std::thread::sleep(NAP);
                let late = before.elapsed().saturating_sub(NAP);
                if late > JITTER {
                    let late_us = u64::try_from(late.as_micros()).unwrap_or(u64::MAX);
                    total.fetch_add(late_us, Ordering::Relaxed);
                }
            }
        });
        HostPauses {
            paused_us,
            stop,
            thread: Some(thread),
        }
    }

    /// The pauses so far.
    pub fn so_far(&self) -> Duration {
        Duration::from_micros(self.paused_us.load(Ordering::Relaxed))
    }

    /// Whether `took` is within `bound` plus the pauses so far.
    pub fn allow(&self, took: Duration, bound: Duration) -> bool {
        took < bound + self.so_far()
    }

    /// Asserts that `took` is within `bound` plus the pauses so far.
    pub fn assert_within(&self, took: Duration, bound: Duration, what: &str) {
        assert!(
            self.allow(took, bound),
            "{what} took {took:?}: over {bound:?} plus the host's pauses meanwhile ({:?})",
            self.so_far()
        );
    }
}

impl Drop for HostPauses {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub const SERVER_BIN: &str = env!("CARGO_BIN_EXE_server");
pub const CLIENT_BIN: &str = env!("CARGO_BIN_EXE_client");

/// The committed default dataset.
pub fn default_data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data")
}

/// The official course dataset, when it sits beside the repository.
pub fn official_data_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    dir.join("agency-1.csv").exists().then_some(dir)
}

/// A running server, killed when dropped.
pub struct ServerProcess {
    pub child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub bets_file: PathBuf,
    /// The server's standard error. A file, not a pipe: a pipe that the test
    /// reads late fills up and blocks the server's next log line, which then
    /// shows as a pause of the server's own.
    log_file: PathBuf,
}

impl ServerProcess {
    /// Starts the server with `agencies` agencies, a port of 0 and a bets file in a
    /// new temporary directory; `env` adds or overrides variables.
    pub fn start(agencies: u32, env: &[(&str, &str)]) -> ServerProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        let bets_file = dir.path().join("bets.csv");
        Self::start_with_file(agencies, env, dir, bets_file)
    }

    pub fn start_with_file(
        agencies: u32,
        env: &[(&str, &str)],
        dir: tempfile::TempDir,
        bets_file: PathBuf,
    ) -> ServerProcess {
        let log_file = dir.path().join("server.log");
        let mut command = Command::new(SERVER_BIN);
        command
            .env("SERVER_PORT", "0")
            .env("SERVER_IP", "127.0.0.1")
            .env("SERVER_AGENCIES", agencies.to_string())
            .env("SERVER_BETS_FILE", &bets_file)
            .env("SERVER_DRAW_WAIT_MS", "200")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_file).expect("create the server's log file"));
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().expect("start the server binary");
        let mut server = ServerProcess {
            child,
            port: 0,
            dir,
            bets_file,
            log_file,
        };
        let line = server
            .wait_for_log("action: config | result: success", Duration::from_secs(10))
            .unwrap_or_else(|| panic!("the server did not start; log:\n{}", server.log_text()));
        server.port = line
            .split("server_port: ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|p| p.parse().ok())
            .expect("the config line shows the port");
        server
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every whole log line so far.
    pub fn log_lines(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.log_file).unwrap_or_default();
        // A line still being written has no newline yet.
        let whole = text.rfind('\n').map_or("", |end| &text[..end]);
        whole.lines().map(str::to_string).collect()
    }

    pub fn log_text(&self) -> String {
        self.log_lines().join("\n")
    }

    /// Lines containing `needle`.
    pub fn count_log(&self, needle: &str) -> usize {
        self.log_lines()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Waits until a line containing `needle` appears; returns it.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Option<String> {
        self.wait_for(timeout, |lines| {
            lines.iter().find(|l| l.contains(needle)).cloned()
        })
    }

    /// Waits up to `timeout` for `count` lines containing `needle`.
    pub fn wait_for_count(&self, needle: &str, count: usize, timeout: Duration) -> bool {
        self.wait_for(timeout, |lines| {
            (lines.iter().filter(|l| l.contains(needle)).count() >= count).then_some(())
        })
        .is_some()
    }

    /// Polls the log every 10 ms until `found` returns something or `timeout` passes.
    fn wait_for<T>(&self, timeout: Duration, found: impl Fn(&[String]) -> Option<T>) -> Option<T> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(value) = found(&self.log_lines()) {
                return Some(value);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends a signal (by name, as `kill -s` takes it) to the server.
    pub fn signal(&self, name: &str) {
        signal_pid(self.pid(), name);
    }

    /// Waits for the server to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_child(&mut self.child, timeout)
    }

    /// The bets file's rows (lines without their terminator).
    pub fn stored_rows(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.bets_file).unwrap_or_default();
        text.lines().map(str::to_string).collect()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends signal `name` (`TERM`, `INT` or `KILL`) to process `pid` with one system
/// call. Starting a `kill` process instead would count its start, up to seconds
/// on a loaded machine, against the deadlines measured from the signal.
pub fn signal_pid(pid: u32, name: &str) {
    use rustix::process::{Pid, Signal, kill_process};
    let signal = match name {
        "TERM" => Signal::TERM,
        "INT" => Signal::INT,
        "KILL" => Signal::KILL,
        other => panic!("no such signal in these tests: {other}"),
    };
    let target = i32::try_from(pid).ok().and_then(Pid::from_raw);
    let target = target.unwrap_or_else(|| panic!("not a process id: {pid}"));
    kill_process(target, signal).unwrap_or_else(|e| panic!("kill -s {name} {pid}: {e}"));
}

pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The client command for agency `id` against `address`, with `data_file`.
pub fn client_command(id: u32, address: &str, data_file: &Path) -> Command {
    let mut command = Command::new(CLIENT_BIN);
    command
        .env("CLI_ID", id.to_string())
        .env("CLI_SERVER_ADDRESS", address)
        .env("CLI_DATA_FILE", data_file)
        .env("CLI_RETRY_INTERVAL_MS", "20")
        .env("CLI_TIMEOUT_S", "60")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Runs agencies 1..=n in parallel, each on `data_dir/agency-{id}.csv`.
pub fn run_clients(n: u32, address: &str, data_dir: &Path) -> Vec<Output> {
    let children: Vec<Child> = (1..=n)
        .map(|id| {
            client_command(id, address, &data_dir.join(format!("agency-{id}.csv")))
                .spawn()
                .expect("start the client binary")
        })
        .collect();
    children
        .into_iter()
        .map(|c| c.wait_with_output().expect("client output"))
        .collect()
}

/// The winner count a client logged in its `consulta_ganadores` success line.
pub fn logged_winner_count(output: &Output) -> Option<usize> {
    let log = String::from_utf8_lossy(&output.stderr);
    log.lines()
        .find(|l| l.contains("action: consulta_ganadores | result: success"))
        .and_then(|l| l.split("cant_ganadores: ").nth(1))
        .and_then(|n| n.trim().parse().ok())
}

/// Counts, straight from an agency CSV, the rows and the bets on 7574.
/// Independent of the crate's own parsing: the files have no quoted fields.
pub fn count_csv(path: &Path) -> (usize, usize) {
    let text = std::fs::read_to_string(path).expect("read agency csv");
    let rows: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let winners = rows
        .iter()
        .filter(|l| {
            l.trim_end()
                .rsplit(',')
                .next()
                .and_then(|n| n.parse::<u32>().ok())
                == Some(7574)
        })
        .count();
    (rows.len(), winners)
}

// ---- raw protocol ------------------------------------------------------------

/// A socket to the server with generous timeouts so a broken test fails, not hangs.
pub fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the server");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

fn str16(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// One bet's wire bytes, from raw field bytes (so tests can send bad UTF-8).
pub fn bet_bytes(
    first: &[u8],
    last: &[u8],
    document: &[u8],
    birthdate: &[u8],
    number: u16,
) -> Vec<u8> {
    let mut out = Vec::new();
    str16(&mut out, first);
    str16(&mut out, last);
    str16(&mut out, document);
    str16(&mut out, birthdate);
    out.extend_from_slice(&number.to_be_bytes());
    out
}

/// A valid bet with this document and number.
pub fn good_bet(document: &str, number: u16) -> Vec<u8> {
    bet_bytes(
        "María José".as_bytes(),
        "Núñez".as_bytes(),
        document.as_bytes(),
        b"1990-02-28",
        number,
    )
}

/// A BETS message with an explicit count over the concatenated bet bytes.
pub fn bets_message(agency: u32, count: u16, bets: &[Vec<u8>]) -> Vec<u8> {
    let body: Vec<u8> = bets.concat();
    let mut out = vec![0, 1];
    out.extend_from_slice(&agency.to_be_bytes());
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

pub fn finish_message(agency: u32) -> Vec<u8> {
    let mut out = vec![0, 3];
    out.extend_from_slice(&agency.to_be_bytes());
    out
}

pub fn get_winners_message(agency: u32) -> Vec<u8> {
    let mut out = vec![0, 5];
    out.extend_from_slice(&agency.to_be_bytes());
    out
}

/// A reply as read off the wire.
#[derive(Debug, PartialEq, Eq)]
pub enum Wire {
    BetsAck(u16),
    FinishAck(u32),
    NoWinners,
    Winners(String),
    WinnersPart(String),
    Error(u16, String),
    /// The server closed the connection.
    Closed,
}

fn read_exact_or_closed(stream: &mut TcpStream, buf: &mut [u8]) -> bool {
    match stream.read_exact(buf) {
        Ok(()) => true,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
            ) =>
        {
            false
        }
        Err(e) => panic!("reading a reply: {e}"),
    }
}

/// Reads one reply, decoding the bytes by hand as PROTOCOL.md lays them out.
pub fn read_wire(stream: &mut TcpStream) -> Wire {
    let mut id = [0u8; 2];
    if !read_exact_or_closed(stream, &mut id) {
        return Wire::Closed;
    }
    let u16_field = |stream: &mut TcpStream| {
        let mut b = [0u8; 2];
        assert!(
            read_exact_or_closed(stream, &mut b),
            "closed inside a reply"
        );
        u16::from_be_bytes(b)
    };
    match u16::from_be_bytes(id) {
        2 => Wire::BetsAck(u16_field(stream)),
        4 => {
            let mut b = [0u8; 4];
            assert!(read_exact_or_closed(stream, &mut b));
            Wire::FinishAck(u32::from_be_bytes(b))
        }
        6 => Wire::NoWinners,
        kind @ (7 | 8 | 0xFF) => {
            let code = if kind == 0xFF { u16_field(stream) } else { 0 };
            let len = u16_field(stream);
            let mut payload = vec![0u8; usize::from(len)];
            assert!(read_exact_or_closed(stream, &mut payload));
            let text = String::from_utf8(payload).expect("UTF-8 payload");
            match kind {
                7 => Wire::Winners(text),
                8 => Wire::WinnersPart(text),
                _ => Wire::Error(code, text),
            }
        }
        other => panic!("unknown reply id {other:#06x}"),
    }
}

/// Sends `bytes` and reads one reply.
pub fn exchange(stream: &mut TcpStream, bytes: &[u8]) -> Wire {
    stream.write_all(bytes).expect("send");
    read_wire(stream)
}

/// Asks for an agency's winners on a new connection until the draw has
/// happened; returns the joined documents.
pub fn fetch_winners(port: u16, agency: u32) -> Vec<String> {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let mut stream = connect(port);
        let mut parts = Vec::new();
        loop {
            match exchange_or_read(
                &mut stream,
                parts.is_empty().then(|| get_winners_message(agency)),
            ) {
                Wire::NoWinners => break,
                Wire::WinnersPart(p) => parts.push(p),
                Wire::Winners(p) => {
                    parts.push(p);
                    return parts
                        .join(",")
                        .split(',')
                        .filter(|d| !d.is_empty())
                        .map(str::to_string)
                        .collect();
                }
                other => panic!("unexpected reply to GET_WINNERS: {other:?}"),
            }
        }
        assert!(Instant::now() < end, "the draw never happened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn exchange_or_read(stream: &mut TcpStream, request: Option<Vec<u8>>) -> Wire {
    match request {
        Some(bytes) => exchange(stream, &bytes),
        None => read_wire(stream),
    }
}

/// Error codes, as PROTOCOL.md numbers them.
pub mod code {
    pub const MALFORMED: u16 = 1;
    pub const TOO_LARGE: u16 = 2;
    pub const UNKNOWN_MESSAGE: u16 = 3;
    pub const INVALID_BET: u16 = 4;
    pub const UNKNOWN_AGENCY: u16 = 5;
    pub const AGENCY_FINISHED: u16 = 6;
    pub const STORAGE: u16 = 7;
    pub const BUSY: u16 = 8;
    pub const SHUTTING_DOWN: u16 = 9;
}

/// A seeded xorshift generator: repeatable random data without a dependency.
pub fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

/// Writes `agencies` agency CSV files of `bets_each` rows into `dir` (CRLF, no
/// header) from a fixed-seed generator; returns each agency's 7574 count.
pub fn write_agency_files(dir: &Path, agencies: u32, bets_each: usize) -> Vec<usize> {
    let mut next = xorshift(0x2545_F491_4F6C_DD1D);
    (1..=agencies)
        .map(|agency| {
            let mut text = String::with_capacity(bets_each * 48);
            let mut winners = 0;
            for row in 0..bets_each {
                let number = if next().is_multiple_of(50) {
                    7574
                } else {
                    next() % 10_000
                };
                winners += usize::from(number == 7574);
                text.push_str(&format!(
                    "Agustín {agency},Peña,{}{row},19{:02}-0{}-1{},{number}\r\n",
                    agency,
                    next() % 100,
                    1 + next() % 9,
                    next() % 10
                ));
            }
            std::fs::write(dir.join(format!("agency-{agency}.csv")), text).expect("write csv");
            winners
        })
        .collect()
}

/// The server's thread count, from /proc.
pub fn thread_count(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("Threads line")
}
