//! The server and the agency run in the test's own process: started on port 0,
//! stopped through their `Shutdown`, their threads joined.

use lottery::{Agency, ClientConfig, ClientError, Server, ServerConfig, Shutdown, Summary};
use std::collections::HashMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

/// A configuration lookup over `defaults`, overridden by `env`.
fn lookup(defaults: &[(&str, String)], env: &[(&str, &str)]) -> HashMap<String, OsString> {
    let mut map: HashMap<String, OsString> = defaults
        .iter()
        .map(|(k, v)| (k.to_string(), OsString::from(v)))
        .collect();
    for (k, v) in env {
        map.insert(k.to_string(), OsString::from(v));
    }
    map
}

/// A server running in a thread of the test; stopped and joined when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    pub port: u16,
    pub bets_file: PathBuf,
    shutdown: Shutdown,
    thread: Option<JoinHandle<Result<(), lottery::ServerError>>>,
    _dir: Option<tempfile::TempDir>,
}

impl TestServer {
    /// A server for `agencies` agencies on 127.0.0.1, port 0, a bets file in a
    /// new temporary directory and a 200 ms draw wait; `env` overrides settings.
    pub fn start(agencies: u32, env: &[(&str, &str)]) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let bets_file = dir.path().join("bets.csv");
        let mut server = TestServer::start_with_file(agencies, env, &bets_file);
        server._dir = Some(dir);
        server
    }

    /// As `start`, with the bets file at `bets_file`.
    pub fn start_with_file(agencies: u32, env: &[(&str, &str)], bets_file: &Path) -> TestServer {
        let defaults = [
            ("SERVER_IP", "127.0.0.1".to_string()),
            ("SERVER_PORT", "0".to_string()),
            ("SERVER_AGENCIES", agencies.to_string()),
            ("SERVER_BETS_FILE", bets_file.display().to_string()),
            ("SERVER_DRAW_WAIT_MS", "200".to_string()),
        ];
        let map = lookup(&defaults, env);
        let config = ServerConfig::from_env(&|name| map.get(name).cloned())
            .expect("a valid server configuration");
        let server = Server::bind(config).expect("the server binds");
        let addr = server.local_addr().expect("a bound address");
        let shutdown = Shutdown::new();
        let stop = shutdown.clone();
        let thread = std::thread::spawn(move || server.run(stop));
        TestServer {
            addr,
            port: addr.port(),
            bets_file: bets_file.to_path_buf(),
            shutdown,
            thread: Some(thread),
            _dir: None,
        }
    }

    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Requests the stop and waits for `run` to return: every connection
    /// thread joined, the bets file flushed. Its files stay until it is dropped.
    pub fn stop(&mut self) {
        self.shutdown.trigger();
        if let Some(thread) = self.thread.take() {
            let outcome = thread.join().expect("the server thread does not panic");
            outcome.expect("the server stops cleanly");
        }
    }

    /// The bets file's rows (lines without their terminator).
    pub fn stored_rows(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.bets_file).unwrap_or_default();
        text.lines().map(str::to_string).collect()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.stop();
        } else {
            self.shutdown.trigger();
        }
    }
}

/// Runs agency `id` in the test's process against `address` with `data_file`;
/// `env` overrides settings (a 20 ms retry interval and a 60 s timeout by default).
pub fn run_agency(
    id: u32,
    address: &str,
    data_file: &Path,
    env: &[(&str, &str)],
) -> Result<Summary, ClientError> {
    Agency::new(agency_config(id, address, data_file, env), Shutdown::new()).run()
}

pub fn agency_config(
    id: u32,
    address: &str,
    data_file: &Path,
    env: &[(&str, &str)],
) -> ClientConfig {
    let defaults = [
        ("CLI_ID", id.to_string()),
        ("CLI_SERVER_ADDRESS", address.to_string()),
        ("CLI_DATA_FILE", data_file.display().to_string()),
        ("CLI_RETRY_INTERVAL_MS", "20".to_string()),
        ("CLI_TIMEOUT_S", "60".to_string()),
    ];
    let map = lookup(&defaults, env);
    ClientConfig::from_env(&|name| map.get(name).cloned()).expect("a valid client configuration")
}

/// Runs agencies 1..=n in threads of the test, each on `data_dir/agency-{id}.csv`.
pub fn run_agencies(n: u32, address: &str, data_dir: &Path) -> Vec<Result<Summary, ClientError>> {
    let threads: Vec<_> = (1..=n)
        .map(|id| {
            let (address, file) = (address.to_string(), super::agency_file(data_dir, id));
            std::thread::spawn(move || run_agency(id, &address, &file, &[]))
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("an agency thread does not panic"))
        .collect()
}
