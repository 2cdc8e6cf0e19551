//! Configuration of both programs, read from environment variables.
//!
//! This module owns every variable's name, default and accepted range, the
//! `--help` texts, and `ConfigError`, whose message names the variable, the value
//! it got and what it accepts. Reading goes through a lookup function so tests can
//! pass their own environment. An empty variable counts as unset.

use crate::wire::MAX_TOKEN_LEN;
use log::{LevelFilter, error};
use std::ffi::OsString;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// What a program's command line asks for. Both programs are configured by
/// environment variables alone, so any other argument is a mistake, refused
/// before anything starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandLine {
    /// No arguments: run.
    Run,
    /// `--help` or `-h`.
    Help,
    /// `--version` or `-V`.
    Version,
    /// `--verify`: the server audits its round's files instead of serving.
    Verify,
    /// Anything else: the first argument not understood.
    Unknown(String),
}

impl CommandLine {
    /// Reads the arguments after the program's name.
    pub fn parse(args: impl IntoIterator<Item = OsString>) -> CommandLine {
        let mut args = args.into_iter();
        let Some(first) = args.next() else {
            return CommandLine::Run;
        };
        let parsed = match first.to_str() {
            Some("--help" | "-h") => CommandLine::Help,
            Some("--version" | "-V") => CommandLine::Version,
            Some("--verify") => CommandLine::Verify,
            _ => return CommandLine::Unknown(first.to_string_lossy().into_owned()),
        };
        match args.next() {
            Some(extra) => CommandLine::Unknown(extra.to_string_lossy().into_owned()),
            None => parsed,
        }
    }
}

/// Exit status of a configuration or start-up error: the user must change the
/// command line, a variable or the environment.
pub const START_FAILED: u8 = 2;

/// The start of both binaries: acts on the command line (help, version or a
/// stray argument), then reads the configuration from the process environment.
/// With `verifies`, the program also takes `--verify`, and the `bool` returned
/// says whether it was given. `Err` is the status to exit with; any error is
/// already logged.
pub fn start_up<C>(
    program: &str,
    help: &str,
    from_env: fn(Lookup<'_>) -> Result<C, ConfigError>,
    verifies: bool,
) -> Result<(C, bool), ExitCode> {
    let mut verify = false;
    match CommandLine::parse(std::env::args_os().skip(1)) {
        CommandLine::Run => {}
        CommandLine::Verify if verifies => verify = true,
        CommandLine::Help => {
            println!("{help}");
            return Err(ExitCode::SUCCESS);
        }
        CommandLine::Version => {
            println!("{program} {}", env!("CARGO_PKG_VERSION"));
            return Err(ExitCode::SUCCESS);
        }
        CommandLine::Verify => {
            error!(
                "action: config | result: fail | error: unexpected argument \"--verify\"; the {program} takes no arguments, its settings are environment variables (see `{program} --help`)"
            );
            return Err(ExitCode::from(START_FAILED));
        }
        CommandLine::Unknown(argument) => {
            error!(
                "action: config | result: fail | error: unexpected argument {argument:?}; the {program} takes no arguments, its settings are environment variables (see `{program} --help`)"
            );
            return Err(ExitCode::from(START_FAILED));
        }
    }
    let config = from_env(&process_env).map_err(|e| {
        error!(
            "action: config | result: fail | error: {e}; see `{program} --help` for every setting"
        );
        ExitCode::from(START_FAILED)
    })?;
    Ok((config, verify))
}

/// Where the configuration comes from: a variable's value, if set.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<OsString>;

/// The process environment, as a `Lookup`.
pub fn process_env(name: &str) -> Option<OsString> {
    std::env::var_os(name)
}

/// A variable with a value the program cannot use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// A required variable is not set.
    Missing {
        variable: &'static str,
        expected: &'static str,
    },
    /// A variable's value is not valid.
    Invalid {
        variable: &'static str,
        value: String,
        expected: &'static str,
        /// Whether unsetting the variable would give a default.
        has_default: bool,
    },
    /// A secret's value is not valid; the value is never shown.
    InvalidSecret {
        variable: &'static str,
        expected: &'static str,
    },
}

impl ConfigError {
    /// The same error, for a variable that has no default.
    fn without_default(self) -> ConfigError {
        match self {
            ConfigError::Invalid {
                variable,
                value,
                expected,
                ..
            } => ConfigError::Invalid {
                variable,
                value,
                expected,
                has_default: false,
            },
            other => other,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Missing { variable, expected } => {
                write!(f, "{variable} is not set; set it to {expected}")
            }
            ConfigError::Invalid {
                variable,
                value,
                expected,
                has_default,
            } => {
                write!(f, "{variable}={value:?} is not valid; set it to {expected}")?;
                if *has_default {
                    write!(f, " (or unset it for the default)")?;
                }
                Ok(())
            }
            ConfigError::InvalidSecret { variable, expected } => {
                write!(
                    f,
                    "{variable} is not valid (its value is not shown); set it to {expected}"
                )
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// Reads `variable` and parses it with `parse`, which returns `None` for a value
/// it refuses; unset (or empty) is `Ok(None)`.
fn read<T>(
    env: Lookup<'_>,
    variable: &'static str,
    expected: &'static str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Option<T>, ConfigError> {
    let Some(raw) = env(variable) else {
        return Ok(None);
    };
    let invalid = |value: String| ConfigError::Invalid {
        variable,
        value,
        expected,
        has_default: true,
    };
    let text = raw
        .into_string()
        .map_err(|raw| invalid(raw.to_string_lossy().into_owned()))?;
    if text.is_empty() {
        return Ok(None);
    }
    parse(text.trim()).map(Some).ok_or_else(|| invalid(text))
}

fn parse_in_range<T: std::str::FromStr + PartialOrd>(
    low: T,
    high: T,
) -> impl Fn(&str) -> Option<T> {
    move |text| text.parse::<T>().ok().filter(|v| *v >= low && *v <= high)
}

fn parse_log_level(text: &str) -> Option<LevelFilter> {
    text.parse::<LevelFilter>().ok()
}

const LOG_LEVELS: &str = "one of OFF, ERROR, WARN, INFO, DEBUG, TRACE";

/// The largest `SERVER_MAX_CONNECTIONS`: one thread per connection.
const MAX_CONNECTIONS_LIMIT: usize = 100_000;

/// Room for every agency at once: each holds one connection, and while it polls
/// for the winners may briefly hold a second whose close the server has not
/// seen yet. With fewer slots than agencies, the agencies waiting on the draw
/// fill them and the rest are refused BUSY until a wait ends.
fn default_max_connections(agencies: u32) -> usize {
    (2 * agencies as usize + 64).clamp(256, MAX_CONNECTIONS_LIMIT)
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
    pub const HELP: &'static str = "\
server: the central lottery server. Agencies send their bets over TCP; once every
agency has finished, the draw is held and each agency can ask for its winners.

Configuration (environment variables, each optional):
  SERVER_IP               address to listen on                 [default: 0.0.0.0]
  SERVER_PORT             port to listen on; 0 picks a free one [default: 12345]
  SERVER_AGENCIES         agencies taking part (1..=1000000)   [default: 5]
  SERVER_BETS_FILE        CSV file for the bets: a new file starts a new round, an
                          existing one continues its round      [default: ./bets.csv]
  LOGGING_LEVEL           OFF, ERROR, WARN, INFO, DEBUG, TRACE  [default: INFO]
  LOG_PREFIX              text that starts every log line (printable ASCII,
                          at most 32 characters)               [default: none]
  SERVER_DRAW_WAIT_MS     how long GET_WINNERS waits for the draw before NO_WINNERS [default: 1000]
  SERVER_IDLE_TIMEOUT_MS  close a connection idle this long    [default: 30000]
  SERVER_MAX_CONNECTIONS  connections served at once; more get ERROR BUSY
                          [default: 2 x SERVER_AGENCIES + 64, at least 256]
  SERVER_HELLO_TIMEOUT_MS a new connection must complete HELLO within this [default: 5000]
  SERVER_TOKENS_FILE      lines `AGENCY TOKEN`, one per agency; unset, the server
                          serves only loopback peers (127.0.0.0/8, ::1) [default: unset]
  SERVER_TLS_CERT         PEM certificate chain; with SERVER_TLS_KEY, every
                          connection is TLS                    [default: unset]
  SERVER_TLS_KEY          PEM private key of SERVER_TLS_CERT   [default: unset]

`server --verify` audits the round of SERVER_BETS_FILE for SERVER_AGENCIES
agencies instead of serving: read-only, it prints each agency's bets, digest,
finished state and winners, and the round's seal. Exit status 0 consistent, 1 a
FINISH record does not match its rows, 2 the files cannot be read.

Exit status: 0 after a clean stop (SIGTERM or SIGINT), 2 for a configuration or
start-up error, 1 for any other failure.";

    /// Reads the settings, every one with its default.
    pub fn from_env(env: Lookup<'_>) -> Result<ServerConfig, ConfigError> {
        let agencies = read(
            env,
            "SERVER_AGENCIES",
            "a whole number from 1 to 1000000",
            parse_in_range(1, 1_000_000),
        )?
        .unwrap_or(5);
        Ok(ServerConfig {
            ip: read(
                env,
                "SERVER_IP",
                "an IPv4 or IPv6 address such as 0.0.0.0",
                |t| t.parse().ok(),
            )?
            .unwrap_or(IpAddr::from([0, 0, 0, 0])),
            port: read(env, "SERVER_PORT", "a port number from 0 to 65535", |t| {
                t.parse().ok()
            })?
            .unwrap_or(12345),
            agencies,
            bets_file: read(env, "SERVER_BETS_FILE", "a file path", |t| {
                Some(PathBuf::from(t))
            })?
            .unwrap_or_else(|| PathBuf::from("./bets.csv")),
            log_level: read(env, "LOGGING_LEVEL", LOG_LEVELS, parse_log_level)?
                .unwrap_or(LevelFilter::Info),
            draw_wait: Duration::from_millis(
                read(
                    env,
                    "SERVER_DRAW_WAIT_MS",
                    "milliseconds from 0 to 3600000",
                    parse_in_range(0, 3_600_000),
                )?
                .unwrap_or(1000),
            ),
            idle_timeout: Duration::from_millis(
                read(
                    env,
                    "SERVER_IDLE_TIMEOUT_MS",
                    "milliseconds from 1 to 86400000",
                    parse_in_range(1, 86_400_000),
                )?
                .unwrap_or(30_000),
            ),
            max_connections: read(
                env,
                "SERVER_MAX_CONNECTIONS",
                "a whole number from 1 to 100000",
                parse_in_range(1, MAX_CONNECTIONS_LIMIT),
            )?
            .unwrap_or_else(|| default_max_connections(agencies)),
            hello_timeout: Duration::from_millis(
                read(
                    env,
                    "SERVER_HELLO_TIMEOUT_MS",
                    "milliseconds from 1 to 3600000",
                    parse_in_range(1, 3_600_000),
                )?
                .unwrap_or(5000),
            ),
            tokens_file: read(env, "SERVER_TOKENS_FILE", "a file path", |t| {
                Some(PathBuf::from(t))
            })?,
            tls: match (
                read(env, "SERVER_TLS_CERT", "a PEM file path", |t| {
                    Some(PathBuf::from(t))
                })?,
                read(env, "SERVER_TLS_KEY", "a PEM file path", |t| {
                    Some(PathBuf::from(t))
                })?,
            ) {
                (Some(cert), Some(key)) => Some((cert, key)),
                (None, None) => None,
                (Some(_), None) => {
                    return Err(ConfigError::Missing {
                        variable: "SERVER_TLS_KEY",
                        expected: "the PEM private key of SERVER_TLS_CERT (or unset both for plain TCP)",
                    });
                }
                (None, Some(_)) => {
                    return Err(ConfigError::Missing {
                        variable: "SERVER_TLS_CERT",
                        expected: "the PEM certificate of SERVER_TLS_KEY (or unset both for plain TCP)",
                    });
                }
            },
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
            crate::text::escape(&self.bets_file.display().to_string()),
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

/// Batches an agency keeps ahead of their acks: 64 of up to 8 KiB, 512 KiB per
/// agency. Every batch waits for an fsync, and batches that arrive together share
/// one (group commit), so more in flight means fewer, larger fsyncs; on a virtual
/// disk their count costs more than their size (440 MB written here with an
/// fdatasync every 256 KiB took 22.9 s, every 2 MiB 6.4 s). 64 is also the most
/// the server holds unacknowledged per connection before it syncs.
pub const DEFAULT_BATCHES_IN_FLIGHT: usize = 64;

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
    pub const HELP: &'static str = "\
client: one lottery agency. Sends the bets of its CSV file
(first_name,last_name,document,birthdate,number; no header) to the server, says
it has finished, then asks for its winners until the draw has happened.

Configuration (environment variables):
  CLI_ID                  agency number, 1 or more             [required]
  CLI_SERVER_ADDRESS      server host:port                     [default: 127.0.0.1:12345]
  CLI_DATA_FILE           the agency's CSV file                [default: data/agency-{CLI_ID}.csv]
  CLI_BATCH_MAXAMOUNT     most bets per batch (1..=65535); a batch never exceeds
                          8192 bytes whatever this is           [default: as many as fit]
  CLI_BATCHES_IN_FLIGHT   batches sent before waiting for their acks (1..=1024) [default: 64]
  CLI_RETRY_INTERVAL_MS   pause between winners queries and connection attempts [default: 100]
  CLI_TIMEOUT_S           give up after this long without progress [default: 300]
  CLI_LOG_LEVEL           OFF, ERROR, WARN, INFO, DEBUG, TRACE  [default: INFO]
  LOG_PREFIX              text that starts every log line (printable ASCII,
                          at most 32 characters)               [default: none]
  CLI_TOKEN               the agency's token (the server's SERVER_TOKENS_FILE line) [default: none]
  CLI_TLS_CA              PEM CA (or the server's self-signed certificate); set, the
                          client speaks TLS and verifies the server [default: unset]
  CLI_TLS_SERVER_NAME     the name the server's certificate carries
                          [default: the host part of CLI_SERVER_ADDRESS]

CLI_TIMEOUT_S counts from the last progress (a WELCOME, an ack): a server that
restarts within it costs nothing; run again, the client goes on where it stopped.

Exit status: 0 when the winners were received, 1 if any bet was invalid or the
server refused or failed, 2 for a configuration error, 130 or 143 when SIGINT or
SIGTERM stopped it before the winners arrived (run it again to go on).";

    /// Reads the settings; only CLI_ID is required.
    pub fn from_env(env: Lookup<'_>) -> Result<ClientConfig, ConfigError> {
        const ID_EXPECTED: &str = "the agency number, a whole number of 1 or more";
        let id = read(env, "CLI_ID", ID_EXPECTED, parse_in_range(1, u32::MAX))
            .map_err(ConfigError::without_default)?
            .ok_or(ConfigError::Missing {
                variable: "CLI_ID",
                expected: ID_EXPECTED,
            })?;
        Ok(ClientConfig {
            id,
            token: read_token(env)?.unwrap_or_default(),
            tls_ca: read(env, "CLI_TLS_CA", "a PEM file path", |t| {
                Some(PathBuf::from(t))
            })?,
            tls_server_name: read(
                env,
                "CLI_TLS_SERVER_NAME",
                "a host name or IP address",
                |t| Some(t.to_string()),
            )?,
            server_address: read(
                env,
                "CLI_SERVER_ADDRESS",
                "host:port, such as 127.0.0.1:12345",
                |t| {
                    let (host, port) = t.rsplit_once(':')?;
                    let port_ok = port.parse::<u16>().is_ok_and(|p| p > 0);
                    (!host.is_empty() && port_ok).then(|| t.to_string())
                },
            )?
            .unwrap_or_else(|| "127.0.0.1:12345".to_string()),
            data_file: read(env, "CLI_DATA_FILE", "a file path", |t| {
                Some(PathBuf::from(t))
            })?
            .unwrap_or_else(|| PathBuf::from(format!("data/agency-{id}.csv"))),
            batch_max_amount: read(
                env,
                "CLI_BATCH_MAXAMOUNT",
                "a whole number from 1 to 65535",
                parse_in_range(1, 65_535),
            )?,
            batches_in_flight: read(
                env,
                "CLI_BATCHES_IN_FLIGHT",
                "a whole number from 1 to 1024",
                parse_in_range(1, 1024),
            )?
            .unwrap_or(DEFAULT_BATCHES_IN_FLIGHT),
            retry_interval: Duration::from_millis(
                read(
                    env,
                    "CLI_RETRY_INTERVAL_MS",
                    "milliseconds from 1 to 600000",
                    parse_in_range(1, 600_000),
                )?
                .unwrap_or(100),
            ),
            timeout: Duration::from_secs(
                read(
                    env,
                    "CLI_TIMEOUT_S",
                    "seconds from 1 to 86400",
                    parse_in_range(1, 86_400),
                )?
                .unwrap_or(300),
            ),
            log_level: read(env, "CLI_LOG_LEVEL", LOG_LEVELS, parse_log_level)?
                .unwrap_or(LevelFilter::Info),
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
            crate::text::escape(&self.data_file.display().to_string()),
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

/// `CLI_TOKEN`: printable ASCII without spaces, at most `MAX_TOKEN_LEN` bytes. Its value is
/// never shown, not even in the error.
fn read_token(env: Lookup<'_>) -> Result<Option<String>, ConfigError> {
    let invalid = ConfigError::InvalidSecret {
        variable: "CLI_TOKEN",
        expected: "the agency's token: 1 to 255 printable ASCII characters, no spaces",
    };
    let Some(raw) = env("CLI_TOKEN") else {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn server_defaults_apply_when_nothing_is_set() {
        let config = ServerConfig::from_env(&env_of(&[])).unwrap();
        assert_eq!(config.port, 12345);
        assert_eq!(config.agencies, 5);
        assert_eq!(config.bets_file, PathBuf::from("./bets.csv"));
        assert_eq!(config.draw_wait, Duration::from_millis(1000));
        assert_eq!(config.idle_timeout, Duration::from_millis(30_000));
        assert_eq!(config.max_connections, 256);
        let many = ServerConfig::from_env(&env_of(&[("SERVER_AGENCIES", "1000")])).unwrap();
        assert_eq!(many.max_connections, 2064);
        let most = ServerConfig::from_env(&env_of(&[("SERVER_AGENCIES", "1000000")])).unwrap();
        assert_eq!(most.max_connections, 100_000);
        let set = ServerConfig::from_env(&env_of(&[
            ("SERVER_AGENCIES", "1000"),
            ("SERVER_MAX_CONNECTIONS", "10"),
        ]))
        .unwrap();
        assert_eq!(set.max_connections, 10);
        assert_eq!(config.log_level, LevelFilter::Info);
    }

    #[test]
    fn a_bad_value_names_the_variable_and_the_fix() {
        let error = ServerConfig::from_env(&env_of(&[("SERVER_AGENCIES", "0")])).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("SERVER_AGENCIES=\"0\""), "{text}");
        assert!(text.contains("1 to 1000000"), "{text}");
        for (var, value) in [
            ("SERVER_PORT", "70000"),
            ("SERVER_IP", "localhost:1"),
            ("LOGGING_LEVEL", "LOUD"),
            ("SERVER_MAX_CONNECTIONS", "-1"),
        ] {
            let error = ServerConfig::from_env(&env_of(&[(var, value)])).unwrap_err();
            assert!(error.to_string().starts_with(var), "{error}");
        }
    }

    #[test]
    fn only_help_and_version_are_understood_on_the_command_line() {
        let parse = |args: &[&str]| CommandLine::parse(args.iter().map(OsString::from));
        assert_eq!(parse(&[]), CommandLine::Run);
        assert_eq!(parse(&["--help"]), CommandLine::Help);
        assert_eq!(parse(&["-h"]), CommandLine::Help);
        assert_eq!(parse(&["--version"]), CommandLine::Version);
        assert_eq!(parse(&["-V"]), CommandLine::Version);
        assert_eq!(parse(&["foo"]), CommandLine::Unknown("foo".into()));
        assert_eq!(parse(&["--help", "x"]), CommandLine::Unknown("x".into()));
        assert_eq!(
            parse(&["--port=1"]),
            CommandLine::Unknown("--port=1".into())
        );
    }

    #[test]
    fn the_client_needs_an_id_and_derives_its_data_file() {
        assert_eq!(
            ClientConfig::from_env(&env_of(&[])).unwrap_err(),
            ConfigError::Missing {
                variable: "CLI_ID",
                expected: "the agency number, a whole number of 1 or more"
            }
        );
        let zero = ClientConfig::from_env(&env_of(&[("CLI_ID", "0")])).unwrap_err();
        assert!(
            !zero.to_string().contains("default"),
            "CLI_ID has no default: {zero}"
        );
        let port = ServerConfig::from_env(&env_of(&[("SERVER_PORT", "x")])).unwrap_err();
        assert!(
            port.to_string().contains("unset it for the default"),
            "{port}"
        );
        for bad in ["127.0.0.1:", ":12345", "localhost", "host:99999"] {
            let pairs = [("CLI_ID", "1"), ("CLI_SERVER_ADDRESS", bad)];
            let env = env_of(&pairs);
            assert!(ClientConfig::from_env(&env).is_err(), "{bad}");
        }
        let config = ClientConfig::from_env(&env_of(&[("CLI_ID", "3")])).unwrap();
        assert_eq!(config.data_file, PathBuf::from("data/agency-3.csv"));
        assert_eq!(config.batch_max_amount, None);
        assert_eq!(config.timeout, Duration::from_secs(300));
    }
}
