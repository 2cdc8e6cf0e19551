//! The central lottery server: reads its configuration, starts logging, serves
//! until SIGTERM/SIGINT, and maps the outcome to an exit status.

use log::{LevelFilter, error, info};
use lottery::{Server, ServerConfig, ServerError, Shutdown};
use std::process::ExitCode;

fn main() -> ExitCode {
    lottery::init_logging(LevelFilter::Info);
    let (config, verify) = match lottery::start_up(
        "server",
        &ServerConfig::help(),
        ServerConfig::from_env,
        true,
    ) {
        Ok(started) => started,
        Err(status) => return status,
    };
    lottery::set_log_level(config.log_level);
    if verify {
        return ExitCode::from(lottery::verify_round(&config));
    }
    // The signal handlers come first: a long start (a large round read back)
    // can be stopped too.
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
            return ExitCode::from(lottery::START_FAILED);
        }
    };
    let outcome = Server::bind_until(config, &shutdown).and_then(|server| server.run(shutdown));
    let (handle, thread) = signals;
    handle.close();
    let _ = thread.join();
    match outcome {
        Ok(()) => {
            info!("action: exit | result: success");
            ExitCode::SUCCESS
        }
        Err(e @ ServerError::Stopped) => {
            info!("action: shutdown | result: success | detail: {e}");
            info!("action: exit | result: success");
            ExitCode::SUCCESS
        }
        Err(e) if e.is_start_failure() => {
            error!("action: config | result: fail | error: {e}");
            ExitCode::from(e.exit_status())
        }
        Err(e) => {
            error!("action: exit | result: fail | error: {e}");
            ExitCode::from(e.exit_status())
        }
    }
}
