//! The real binaries, for what only a process shows: signals, exit statuses,
//! log files, and whole runs. A failed expectation prints the command, its exit
//! status and everything it wrote.

use super::{HANG, wait_until};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

pub const SERVER_BIN: &str = env!("CARGO_BIN_EXE_server");
pub const CLIENT_BIN: &str = env!("CARGO_BIN_EXE_client");

/// A command, its exit status, and what it wrote: the message of a failed assertion.
pub fn describe(command: &Command, output: &Output) -> String {
    let mut text = format!("command: {command:?}\nstatus: {}\n", output.status);
    let _ = writeln!(
        text,
        "--- stdout ---\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let _ = writeln!(
        text,
        "--- stderr ---\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    text
}

/// Runs `command` to its end (killed if it runs for `HANG`) and checks its exit code.
pub fn run_expecting(command: &mut Command, code: i32) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("could not run {command:?}: {e}"));
    let finished = wait_child(&mut child).is_some();
    if !finished {
        let _ = child.kill();
    }
    let output = child.wait_with_output().expect("the command's output");
    assert!(
        finished,
        "still running after {HANG:?}:\n{}",
        describe(command, &output)
    );
    assert_eq!(
        output.status.code(),
        Some(code),
        "{}",
        describe(command, &output)
    );
    output
}

/// A running server binary, killed when dropped. Its log goes to a file (a pipe
/// that the test reads late would fill up and block the server's next line).
pub struct ServerProcess {
    pub child: Child,
    pub port: u16,
    pub bets_file: PathBuf,
    pub log_file: PathBuf,
    command: String,
    /// The temporary directory the server runs in, when it owns one.
    _dir: Option<tempfile::TempDir>,
}

impl ServerProcess {
    /// Starts the server for `agencies` agencies on 127.0.0.1, port 0, a bets
    /// file in a new temporary directory and a 200 ms draw wait, and waits
    /// until it is ready.
    pub fn start(agencies: u32, env: &[(&str, &str)]) -> ServerProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        let bets_file = dir.path().join("bets.csv");
        let mut server = Self::start_in(agencies, env, dir.path(), &bets_file);
        server._dir = Some(dir);
        server
    }

    /// As `start`, in `dir` (its log goes there) with the bets file at `bets_file`.
    pub fn start_in(
        agencies: u32,
        env: &[(&str, &str)],
        dir: &Path,
        bets_file: &Path,
    ) -> ServerProcess {
        let mut server = Self::spawn(agencies, env, dir, bets_file);
        let line = server.wait_for_log("action: config | result: success");
        server.port = line
            .split("server_port: ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|p| p.parse().ok())
            .expect("the config line shows the port");
        server
    }

    /// Starts the server in `dir` without waiting for it to be ready.
    pub fn spawn(
        agencies: u32,
        env: &[(&str, &str)],
        dir: &Path,
        bets_file: &Path,
    ) -> ServerProcess {
        let log_file = dir.join(format!(
            "server-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        let mut command = Command::new(SERVER_BIN);
        command
            .env("SERVER_PORT", "0")
            .env("SERVER_IP", "127.0.0.1")
            .env("SERVER_AGENCIES", agencies.to_string())
            .env("SERVER_BETS_FILE", bets_file)
            .env("SERVER_DRAW_WAIT_MS", "200")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_file).expect("create the server's log file"));
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().expect("start the server binary");
        ServerProcess {
            child,
            port: 0,
            bets_file: bets_file.to_path_buf(),
            log_file,
            command: format!("{command:?}"),
            _dir: None,
        }
    }

    /// Waits for the server to exit by itself; returns its status and log.
    pub fn wait_for_exit_and_log(&mut self) -> (ExitStatus, String) {
        let status = self.wait_exit();
        (status, self.log_lines().join("\n"))
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

    /// The command and its log, for a failed assertion.
    pub fn describe(&self) -> String {
        format!(
            "command: {}\n--- server log ---\n{}",
            self.command,
            self.log_lines().join("\n")
        )
    }

    /// Asserts that a line holds each of `needles`, the first such line of each
    /// after that of the one before; returns the log and those lines' indexes.
    pub fn assert_logged_in_order(&self, needles: &[&str]) -> (Vec<String>, Vec<usize>) {
        let lines = self.log_lines();
        let at: Vec<usize> = needles
            .iter()
            .map(|needle| {
                lines
                    .iter()
                    .position(|l| l.contains(needle))
                    .unwrap_or_else(|| panic!("no {needle:?} in the log:\n{}", self.describe()))
            })
            .collect();
        assert!(
            at.windows(2).all(|pair| pair[0] < pair[1]),
            "expected in this order: {needles:?}\n{}",
            self.describe()
        );
        (lines, at)
    }

    /// Lines containing `needle`.
    pub fn count_log(&self, needle: &str) -> usize {
        self.log_lines()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Waits until a line containing `needle` appears; returns it.
    pub fn wait_for_log(&self, needle: &str) -> String {
        self.wait_for_count(needle, 1);
        self.log_lines()
            .into_iter()
            .find(|l| l.contains(needle))
            .unwrap_or_default()
    }

    /// Waits until `count` lines contain `needle`.
    pub fn wait_for_count(&self, needle: &str, count: usize) {
        let end = Instant::now() + HANG;
        while self.count_log(needle) < count {
            assert!(
                Instant::now() < end,
                "no {count} lines with {needle:?}:\n{}",
                self.describe()
            );
            // Gone: no more lines will come.
            assert!(
                !self.has_exited() || self.count_log(needle) >= count,
                "the server exited before {count} lines with {needle:?}:\n{}",
                self.describe()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the process has exited (it is a zombie until waited for).
    fn has_exited(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).map_or(true, |stat| {
            stat.rsplit(") ").next().is_some_and(|s| s.starts_with('Z'))
        })
    }

    /// Sends a signal (`TERM`, `INT` or `KILL`) to the server.
    pub fn signal(&self, name: &str) {
        signal_pid(self.pid(), name);
    }

    /// Waits for the server to exit, for at most `HANG`.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let description = self.describe();
        wait_child(&mut self.child)
            .unwrap_or_else(|| panic!("the server did not exit:\n{description}"))
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

/// Sends signal `name` (`TERM`, `INT` or `KILL`) to process `pid`.
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

/// Waits for `child` to exit, for at most `HANG`; `None` if it did not.
pub fn wait_child(child: &mut Child) -> Option<ExitStatus> {
    let end = Instant::now() + HANG;
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

/// Waits for `child` to exit (for at most `HANG`: then it is killed and the
/// test fails with what it wrote) and returns its output.
pub fn output_of(mut child: Child) -> Output {
    let finished = wait_child(&mut child);
    if finished.is_none() {
        let _ = child.kill();
    }
    let output = child.wait_with_output().expect("the process's output");
    assert!(
        finished.is_some(),
        "still running after {HANG:?}:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Waits for `child` as `output_of` does and returns its exit status and
/// everything it wrote to standard error.
pub fn exit_and_log(child: Child) -> (ExitStatus, String) {
    let output = output_of(child);
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status, log)
}

/// Starts agency `id` on `data_dir/agency-{id}.csv` against `address`, with
/// `env` added; returns the command with its process.
pub fn spawn_agency(
    id: u32,
    address: &str,
    data_dir: &Path,
    env: &[(&str, &str)],
) -> (Command, Child) {
    let mut command = client_command(id, address, &super::agency_file(data_dir, id));
    for (k, v) in env {
        command.env(k, v);
    }
    let child = command.spawn().expect("start the client binary");
    (command, child)
}

/// Every agency's process exits 0 and logs its expected winner count.
pub fn assert_agencies_got(clients: Vec<(Command, Child)>, counts: &[usize]) {
    for ((command, child), expected) in clients.into_iter().zip(counts) {
        let output = output_of(child);
        assert!(output.status.success(), "{}", describe(&command, &output));
        assert_eq!(
            logged_winner_count(&output),
            Some(*expected),
            "{}",
            describe(&command, &output)
        );
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

/// Runs agencies 1..=n as processes in parallel, each on `data_dir/agency-{id}.csv`;
/// returns each command with its output.
pub fn run_clients(n: u32, address: &str, data_dir: &Path) -> Vec<(Command, Output)> {
    let started: Vec<(Command, Child)> = (1..=n)
        .map(|id| {
            let mut command = client_command(id, address, &super::agency_file(data_dir, id));
            let child = command.spawn().expect("start the client binary");
            (command, child)
        })
        .collect();
    started
        .into_iter()
        .map(|(command, child)| (command, output_of(child)))
        .collect()
}

/// The winner count a client logged in its `consulta_ganadores` success line.
pub fn logged_winner_count(output: &Output) -> Option<usize> {
    let log = String::from_utf8_lossy(&output.stderr);
    log.lines()
        .find(|l| l.contains("action: consulta_ganadores | result: success"))
        .and_then(|l| l.split("cant_ganadores: ").nth(1))
        .and_then(|n| n.split_whitespace().next()?.parse().ok())
}

/// A process's thread count, from /proc.
pub fn thread_count(pid: u32) -> usize {
    proc_status_field(pid, "Threads:").expect("a Threads line") as usize
}

/// A process's peak resident memory (VmHWM) in KiB, from /proc.
pub fn peak_memory_kib(pid: u32) -> Option<u64> {
    proc_status_field(pid, "VmHWM:")
}

fn proc_status_field(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Waits until `pid` has `count` threads.
pub fn wait_for_threads(pid: u32, count: usize) {
    wait_until(&format!("{count} threads in process {pid}"), || {
        (thread_count(pid) == count).then_some(())
    });
}
