//! The server's settings: its table of variables and `ServerConfig`, read from them.

use super::settings::{
    ConfigError, Fallback, LOG_LEVELS, LOG_PREFIX, Setting, help_table, parse_in_range,
    parse_log_level,
};
use super::startup::Lookup;
use log::LevelFilter;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The largest `SERVER_MAX_CONNECTIONS`: one thread per connection.
const MAX_CONNECTIONS_LIMIT: usize = 100_000;

const SERVER_IP: Setting = Setting {
    name: "SERVER_IP",
    help: "address to listen on",
    expected: "an IPv4 or IPv6 address such as 0.0.0.0",
    fallback: Fallback::Text("0.0.0.0"),
};
const SERVER_PORT: Setting = Setting {
    name: "SERVER_PORT",
    help: "port to listen on; 0 picks a free one",
    expected: "a port number from 0 to 65535",
    fallback: Fallback::Text("12345"),
};
const SERVER_AGENCIES: Setting = Setting {
    name: "SERVER_AGENCIES",
    help: "agencies taking part (1..=1000000)",
    expected: "a whole number from 1 to 1000000",
    fallback: Fallback::Text("5"),
};
const SERVER_BETS_FILE: Setting = Setting {
    name: "SERVER_BETS_FILE",
    help: "CSV file for the bets: a new file starts a new round,\nan existing one continues its round",
    expected: "a file path",
    fallback: Fallback::Text("./bets.csv"),
};
const LOGGING_LEVEL: Setting = Setting {
    name: "LOGGING_LEVEL",
    help: "OFF, ERROR, WARN, INFO, DEBUG, TRACE",
    expected: LOG_LEVELS,
    fallback: Fallback::Text("INFO"),
};
const SERVER_DRAW_WAIT_MS: Setting = Setting {
    name: "SERVER_DRAW_WAIT_MS",
    help: "how long GET_WINNERS waits for the draw before NO_WINNERS",
    expected: "milliseconds from 0 to 3600000",
    fallback: Fallback::Text("1000"),
};
const SERVER_IDLE_TIMEOUT_MS: Setting = Setting {
    name: "SERVER_IDLE_TIMEOUT_MS",
    help: "close a connection idle this long",
    expected: "milliseconds from 1 to 86400000",
    fallback: Fallback::Text("30000"),
};
const SERVER_MAX_CONNECTIONS: Setting = Setting {
    name: "SERVER_MAX_CONNECTIONS",
    help: "connections served at once; more get ERROR BUSY",
    expected: "a whole number from 1 to 100000",
    fallback: Fallback::Derived("2 x SERVER_AGENCIES + 64, at least 256"),
};
const SERVER_HELLO_TIMEOUT_MS: Setting = Setting {
    name: "SERVER_HELLO_TIMEOUT_MS",
    help: "a new connection must complete HELLO within this",
    expected: "milliseconds from 1 to 3600000",
    fallback: Fallback::Text("5000"),
};
const SERVER_TOKENS_FILE: Setting = Setting {
    name: "SERVER_TOKENS_FILE",
    help: "lines `AGENCY TOKEN`, one per agency",
    expected: "a file path",
    fallback: Fallback::Off("only loopback peers (127.0.0.0/8, ::1) are served"),
};
const SERVER_TLS_CERT: Setting = Setting {
    name: "SERVER_TLS_CERT",
    help: "PEM certificate chain; with SERVER_TLS_KEY, every\nconnection is TLS",
    expected: "a PEM file path",
    fallback: Fallback::Off("plain TCP"),
};
const SERVER_TLS_KEY: Setting = Setting {
    name: "SERVER_TLS_KEY",
    help: "PEM private key of SERVER_TLS_CERT",
    expected: "a PEM file path",
    fallback: Fallback::Off("plain TCP"),
};

/// Every variable the server reads, in the order `--help` shows them.
const SETTINGS: [&Setting; 13] = [
    &SERVER_IP,
    &SERVER_PORT,
    &SERVER_AGENCIES,
    &SERVER_BETS_FILE,
    &LOGGING_LEVEL,
    &LOG_PREFIX,
    &SERVER_DRAW_WAIT_MS,
    &SERVER_IDLE_TIMEOUT_MS,
    &SERVER_MAX_CONNECTIONS,
    &SERVER_HELLO_TIMEOUT_MS,
    &SERVER_TOKENS_FILE,
    &SERVER_TLS_CERT,
    &SERVER_TLS_KEY,
];

/// Room for every agency at once: each holds one connection, and while it polls
/// for the winners may briefly hold a second whose close the server has not
/// seen yet. With fewer slots than agencies, the agencies waiting on the draw
/// fill them and the rest are refused BUSY until a wait ends.
fn default_max_connections(agencies: u32) -> usize {
    (2 * agencies as usize + 64).clamp(256, MAX_CONNECTIONS_LIMIT)
}

/// A path, as it is.
fn path(text: &str) -> Option<PathBuf> {
    Some(PathBuf::from(text))
}

/// Milliseconds from `low` to `high`.
fn millis(low: u64, high: u64) -> impl Fn(&str) -> Option<Duration> {
    move |text| parse_in_range(low, high)(text).map(Duration::from_millis)
}

/// The server's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub ip: IpAddr,
    /// 0 asks the system for a free port.
    pub port: u16,
    pub agencies: u32,
    pub bets_file: PathBuf,
    pub log_level: LevelFilter,
    /// How long a GET_WINNERS may wait on the draw before NO_WINNERS.
    pub draw_wait: Duration,
    /// A connection that completes no message for this long is closed.
    pub idle_timeout: Duration,
    /// Connections served at once; more get ERROR BUSY.
    pub max_connections: usize,
    /// How long a new connection has to complete its HELLO.
    pub hello_timeout: Duration,
    /// One token per agency (`AGENCY TOKEN` lines); without it, loopback peers only.
    pub tokens_file: Option<PathBuf>,
    /// The TLS certificate chain and key (PEM); with both, every connection is TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
}

impl ServerConfig {
    /// What `server --help` prints.
    pub fn help() -> String {
        format!(
            "server: the central lottery server. Agencies send their bets over TCP; once every
agency has finished, the draw is held and each agency can ask for its winners.

Configuration (environment variables, each optional):
{}
`server --verify` audits the round of SERVER_BETS_FILE for SERVER_AGENCIES
agencies instead of serving: read-only, it prints each agency's bets, digest,
finished state and winners, and the round's seal. Exit status 0 consistent, 1 a
FINISH record does not match its rows, 2 the files cannot be read.

Exit status: 0 after a clean stop (SIGTERM or SIGINT), 2 for a configuration or
start-up error, 1 for any other failure.",
            help_table(&SETTINGS)
        )
    }

    /// Reads the settings, every one with its default.
    pub fn from_env(env: Lookup<'_>) -> Result<ServerConfig, ConfigError> {
        let agencies = SERVER_AGENCIES.value(env, parse_in_range(1, 1_000_000))?;
        Ok(ServerConfig {
            ip: SERVER_IP.value(env, |t| t.parse().ok())?,
            port: SERVER_PORT.value(env, |t| t.parse().ok())?,
            agencies,
            bets_file: SERVER_BETS_FILE.value(env, path)?,
            log_level: LOGGING_LEVEL.value(env, parse_log_level)?,
            draw_wait: SERVER_DRAW_WAIT_MS.value(env, millis(0, 3_600_000))?,
            idle_timeout: SERVER_IDLE_TIMEOUT_MS.value(env, millis(1, 86_400_000))?,
            max_connections: SERVER_MAX_CONNECTIONS
                .read(env, parse_in_range(1, MAX_CONNECTIONS_LIMIT))?
                .unwrap_or_else(|| default_max_connections(agencies)),
            hello_timeout: SERVER_HELLO_TIMEOUT_MS.value(env, millis(1, 3_600_000))?,
            tokens_file: SERVER_TOKENS_FILE.read(env, path)?,
            tls: read_tls(env)?,
        })
    }

    /// The key-value part of the `action: config` log line; `port` is the port
    /// actually bound (it differs from the setting when that is 0).
    pub fn describe(&self, port: u16) -> String {
        format!(
            "server_ip: {} | server_port: {port} | agencies: {} | bets_file: {} | \
             logging_level: {} | draw_wait_ms: {} | idle_timeout_ms: {} | max_connections: {} | \
             hello_timeout_ms: {} | autenticacion: {} | tls: {}",
            self.ip,
            self.agencies,
            crate::text::shown(&self.bets_file),
            self.log_level,
            self.draw_wait.as_millis(),
            self.idle_timeout.as_millis(),
            self.max_connections,
            self.hello_timeout.as_millis(),
            if self.tokens_file.is_some() {
                "tokens"
            } else {
                "solo_loopback"
            },
            if self.tls.is_some() { "on" } else { "off" }
        )
    }
}

/// The certificate and key: both, or neither.
fn read_tls(env: Lookup<'_>) -> Result<Option<(PathBuf, PathBuf)>, ConfigError> {
    match (
        SERVER_TLS_CERT.read(env, path)?,
        SERVER_TLS_KEY.read(env, path)?,
    ) {
        (Some(cert), Some(key)) => Ok(Some((cert, key))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(ConfigError::Missing {
            variable: SERVER_TLS_KEY.name,
            expected: "the PEM private key of SERVER_TLS_CERT (or unset both for plain TCP)",
        }),
        (None, Some(_)) => Err(ConfigError::Missing {
            variable: SERVER_TLS_CERT.name,
            expected: "the PEM certificate of SERVER_TLS_KEY (or unset both for plain TCP)",
        }),
    }
}
