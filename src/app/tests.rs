//! The settings' tests: defaults, errors that name the fix, the command line, the help.

use super::client_settings::ClientConfig;
use super::server_settings::ServerConfig;
use super::settings::ConfigError;
use super::startup::CommandLine;
use log::LevelFilter;
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

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
    for bad in [
        "127.0.0.1:",
        ":12345",
        "localhost",
        "host:99999",
        "http://127.0.0.1:1234",
        "127.0.0.1:1234/",
    ] {
        let pairs = [("CLI_ID", "1"), ("CLI_SERVER_ADDRESS", bad)];
        let env = env_of(&pairs);
        let error = ClientConfig::from_env(&env).expect_err(bad).to_string();
        assert!(
            error.contains("HOST:PORT, such as 127.0.0.1:12345"),
            "{error}"
        );
    }
    let config = ClientConfig::from_env(&env_of(&[("CLI_ID", "3")])).unwrap();
    assert_eq!(config.data_file, PathBuf::from("data/agency-3.csv"));
    assert_eq!(config.batch_max_amount, None);
    assert_eq!(config.timeout, Duration::from_secs(300));
}

#[test]
fn the_help_lists_every_setting_with_its_default() {
    let server = ServerConfig::help();
    for line in [
        "  SERVER_PORT             port to listen on; 0 picks a free one",
        "[default: 12345]",
        "[default: 2 x SERVER_AGENCIES + 64, at least 256]",
        "[unset: only loopback peers (127.0.0.0/8, ::1) are served]",
        "  LOG_PREFIX",
        "an existing one continues its round",
    ] {
        assert!(server.contains(line), "{line:?} in:\n{server}");
    }
    let client = ClientConfig::help();
    assert!(
        client.contains("  CLI_ID                  agency number, 1 or more\n"),
        "{client}"
    );
    assert!(
        client.contains("[required]") && client.contains("[default: 64]"),
        "{client}"
    );
}
