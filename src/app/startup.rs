//! The start of both programs: the command line (`--help`, `--version`, the
//! server's `--verify`, anything else refused) and the configuration read from
//! the process environment, with any error logged and mapped to exit status 2.

use super::settings::ConfigError;
use log::error;
use std::ffi::OsString;
use std::process::ExitCode;

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
