//! The agency client's settings: its table of variables and `ClientConfig`,
//! read from them.

use super::settings::{
    ConfigError, Fallback, LOG_LEVELS, LOG_PREFIX, Setting, help_table, parse_in_range,
    parse_log_level,
};
use super::startup::Lookup;
use crate::wire::MAX_TOKEN_LEN;
use log::LevelFilter;
use std::path::PathBuf;
use std::time::Duration;

/// Batches an agency keeps ahead of their acks: 64 of up to 8 KiB, 512 KiB per
/// agency. Every batch waits for an fsync, and batches that arrive together share
/// one (group commit), so more in flight means fewer, larger fsyncs, and on a
/// virtual disk their count costs more than their size. 64 is also the most the
/// server holds unacknowledged per connection before it syncs.
pub const DEFAULT_BATCHES_IN_FLIGHT: &str = "64";

const CLI_ID: Setting = Setting {
    name: "CLI_ID",
    help: "agency number, 1 or more",
    expected: "the agency number, a whole number of 1 or more",
    fallback: Fallback::Required,
};
const CLI_SERVER_ADDRESS: Setting = Setting {
    name: "CLI_SERVER_ADDRESS",
    help: "server host:port",
    expected: "HOST:PORT, such as 127.0.0.1:12345 (no scheme, no path)",
    fallback: Fallback::Text("127.0.0.1:12345"),
};
const CLI_DATA_FILE: Setting = Setting {
    name: "CLI_DATA_FILE",
    help: "the agency's CSV file",
    expected: "a file path",
    fallback: Fallback::Derived("data/agency-{CLI_ID}.csv"),
};
const CLI_BATCH_MAXAMOUNT: Setting = Setting {
    name: "CLI_BATCH_MAXAMOUNT",
    help: "most bets per batch (1..=65535); a batch never exceeds\n8192 bytes whatever this is",
    expected: "a whole number from 1 to 65535",
    fallback: Fallback::Derived("as many as fit"),
};
const CLI_BATCHES_IN_FLIGHT: Setting = Setting {
    name: "CLI_BATCHES_IN_FLIGHT",
    help: "batches sent before waiting for their acks (1..=1024)",
    expected: "a whole number from 1 to 1024",
    fallback: Fallback::Text(DEFAULT_BATCHES_IN_FLIGHT),
};
const CLI_RETRY_INTERVAL_MS: Setting = Setting {
    name: "CLI_RETRY_INTERVAL_MS",
    help: "pause between winners queries and connection attempts",
    expected: "milliseconds from 1 to 600000",
    fallback: Fallback::Text("100"),
};
const CLI_TIMEOUT_S: Setting = Setting {
    name: "CLI_TIMEOUT_S",
    help: "give up after this long without progress",
    expected: "seconds from 1 to 86400",
    fallback: Fallback::Text("300"),
};
const CLI_LOG_LEVEL: Setting = Setting {
    name: "CLI_LOG_LEVEL",
    help: "OFF, ERROR, WARN, INFO, DEBUG, TRACE",
    expected: LOG_LEVELS,
    fallback: Fallback::Text("INFO"),
};
const CLI_TOKEN: Setting = Setting {
    name: "CLI_TOKEN",
    help: "the agency's token (its line of the server's\nSERVER_TOKENS_FILE)",
    expected: "the agency's token: 1 to 255 printable ASCII characters, no spaces",
    fallback: Fallback::Off("no token"),
};
const CLI_TLS_CA: Setting = Setting {
    name: "CLI_TLS_CA",
    help: "PEM CA (or the server's self-signed certificate); set,\nthe client speaks TLS and verifies the server",
    expected: "a PEM file path",
    fallback: Fallback::Off("plain TCP"),
};
const CLI_TLS_SERVER_NAME: Setting = Setting {
    name: "CLI_TLS_SERVER_NAME",
    help: "the name the server's certificate carries",
    expected: "a host name or IP address",
    fallback: Fallback::Derived("the host part of CLI_SERVER_ADDRESS"),
};

/// Every variable the client reads, in the order `--help` shows them.
const SETTINGS: [&Setting; 12] = [
    &CLI_ID,
    &CLI_SERVER_ADDRESS,
    &CLI_DATA_FILE,
    &CLI_BATCH_MAXAMOUNT,
    &CLI_BATCHES_IN_FLIGHT,
    &CLI_RETRY_INTERVAL_MS,
    &CLI_TIMEOUT_S,
    &CLI_LOG_LEVEL,
    &LOG_PREFIX,
    &CLI_TOKEN,
    &CLI_TLS_CA,
    &CLI_TLS_SERVER_NAME,
];

/// One agency client's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// The agency number, 1 or more.
    pub id: u32,
    /// Sent in HELLO: the agency's token (empty when the server needs none).
    pub token: String,
    /// The CA (or the server's self-signed certificate) to trust; with it the
    /// client speaks TLS.
    pub tls_ca: Option<PathBuf>,
    /// The name the server's certificate must carry; `None` for the host part of
    /// `server_address`.
    pub tls_server_name: Option<String>,
    pub server_address: String,
    pub data_file: PathBuf,
    /// Most bets per batch; `None` packs as many as fit in 8192 bytes.
    pub batch_max_amount: Option<usize>,
    /// Batches sent ahead of their acks (1 sends one and waits for its ack).
    pub batches_in_flight: usize,
    pub retry_interval: Duration,
    /// Give up waiting for the server or the draw after this long.
    pub timeout: Duration,
    pub log_level: LevelFilter,
}

impl ClientConfig {
    /// What `client --help` prints.
    pub fn help() -> String {
        format!(
            "client: one lottery agency. Sends the bets of its CSV file
(first_name,last_name,document,birthdate,number; no header) to the server, says
it has finished, then asks for its winners until the draw has happened.

Configuration (environment variables):
{}
CLI_TIMEOUT_S counts from the last progress (a WELCOME, an ack): a server that
restarts within it costs nothing; run again, the client goes on where it stopped.

Exit status: 0 when the winners were received, 1 if any bet was invalid or the
server refused or failed, 2 for a configuration error, 130 or 143 when SIGINT or
SIGTERM stopped it before the winners arrived (run it again to go on).",
            help_table(&SETTINGS)
        )
    }

    /// Reads the settings; only CLI_ID is required.
    pub fn from_env(env: Lookup<'_>) -> Result<ClientConfig, ConfigError> {
        let id = CLI_ID.value(env, parse_in_range(1, u32::MAX))?;
        Ok(ClientConfig {
            id,
            token: read_token(env)?.unwrap_or_default(),
            tls_ca: CLI_TLS_CA.read(env, |t| Some(PathBuf::from(t)))?,
            tls_server_name: CLI_TLS_SERVER_NAME.read(env, |t| Some(t.to_string()))?,
            server_address: CLI_SERVER_ADDRESS.value(env, parse_address)?,
            data_file: CLI_DATA_FILE
                .read(env, |t| Some(PathBuf::from(t)))?
                .unwrap_or_else(|| PathBuf::from(format!("data/agency-{id}.csv"))),
            batch_max_amount: CLI_BATCH_MAXAMOUNT.read(env, parse_in_range(1, 65_535))?,
            batches_in_flight: CLI_BATCHES_IN_FLIGHT.value(env, parse_in_range(1, 1024))?,
            retry_interval: Duration::from_millis(
                CLI_RETRY_INTERVAL_MS.value(env, parse_in_range(1, 600_000))?,
            ),
            timeout: Duration::from_secs(CLI_TIMEOUT_S.value(env, parse_in_range(1, 86_400))?),
            log_level: CLI_LOG_LEVEL.value(env, parse_log_level)?,
        })
    }

    /// The key-value part of the client's `action: config` log line.
    pub fn describe(&self) -> String {
        format!(
            "id: {} | server_address: {} | data_file: {} | batch_max_amount: {} | \
             batches_in_flight: {} | retry_interval_ms: {} | timeout_s: {} | log_level: {} | \
             token: {} | tls: {}",
            self.id,
            crate::text::escape(&self.server_address),
            crate::text::shown(&self.data_file),
            self.batch_max_amount
                .map_or_else(|| "auto".to_string(), |n| n.to_string()),
            self.batches_in_flight,
            self.retry_interval.as_millis(),
            self.timeout.as_secs(),
            self.log_level,
            if self.token.is_empty() { "none" } else { "set" },
            if self.tls_ca.is_some() { "on" } else { "off" }
        )
    }
}

/// `host:port` with a host and a port from 1 to 65535; a scheme or a path
/// (`http://host:port/`) is not an address.
fn parse_address(text: &str) -> Option<String> {
    let (host, port) = text.rsplit_once(':')?;
    let port_ok = port.parse::<u16>().is_ok_and(|p| p > 0);
    let host_ok = !host.is_empty() && !host.contains('/');
    (host_ok && port_ok).then(|| text.to_string())
}

/// `CLI_TOKEN`: printable ASCII without spaces, at most `MAX_TOKEN_LEN` bytes.
/// Its value is never shown, not even in the error.
fn read_token(env: Lookup<'_>) -> Result<Option<String>, ConfigError> {
    let invalid = ConfigError::InvalidSecret {
        variable: CLI_TOKEN.name,
        expected: CLI_TOKEN.expected,
    };
    let Some(raw) = env(CLI_TOKEN.name) else {
        return Ok(None);
    };
    let text = raw.into_string().map_err(|_| invalid.clone())?;
    if text.is_empty() {
        return Ok(None);
    }
    if text.len() > MAX_TOKEN_LEN || !text.bytes().all(|b| (0x21..=0x7E).contains(&b)) {
        return Err(invalid);
    }
    Ok(Some(text))
}
