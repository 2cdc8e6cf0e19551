//! The central lottery server: reads its configuration, starts logging, serves
//! until SIGTERM/SIGINT, and maps the outcome to an exit status.

use log::{LevelFilter, error, info};
use lottery::{CommandLine, Server, ServerConfig, Shutdown};
use std::process::ExitCode;

/// Exit status of a configuration or start-up error.
const START_FAILED: u8 = 2;

fn main() -> ExitCode {
    lottery::init_logging(LevelFilter::Info);
    match CommandLine::parse(std::env::args_os().skip(1)) {
        CommandLine::Run => {}
        CommandLine::Help => {
            println!("{}", ServerConfig::HELP);
            return ExitCode::SUCCESS;
        }
        CommandLine::Version => {
            println!("server {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        CommandLine::Unknown(argument) => {
            error!(
                "action: config | result: fail | error: unexpected argument {argument:?}; the server takes no arguments, its settings are environment variables (see `server --help`)"
            );
            return ExitCode::from(START_FAILED);
        }
    }
    let config = match ServerConfig::from_env(&lottery::process_env) {
        Ok(config) => config,
        Err(e) => {
            error!(
                "action: config | result: fail | error: {e}; see `server --help` for every setting"
            );
            return ExitCode::from(START_FAILED);
        }
    };
    lottery::set_log_level(config.log_level);
    let server = match Server::bind(config) {
        Ok(server) => server,
        Err(e) => {
            error!("action: config | result: fail | error: {e}");
            return ExitCode::from(e.exit_status());
        }
    };
    let shutdown = Shutdown::new();
    let stop = shutdown.clone();
    let signals = match lottery::on_signal(move |signal| {
        info!("action: shutdown | result: in_progress | signal: {signal}");
        stop.trigger();
    }) {
        Ok(signals) => signals,
        Err(e) => {
            error!(
                "action: config | result: fail | error: could not install the signal handlers: {e}"
            );
            return ExitCode::from(START_FAILED);
        }
    };
    // The signal handlers are in place before `run` logs the ready line.
    let outcome = server.run(shutdown);
    let (handle, thread) = signals;
    handle.close();
    let _ = thread.join();
    match outcome {
        Ok(()) => {
            info!("action: exit | result: success");
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!("action: exit | result: fail | error: {e}");
            ExitCode::from(e.exit_status())
        }
    }
}
