//! The central lottery server: reads its configuration, starts logging, serves
//! until SIGTERM/SIGINT, and maps the outcome to an exit status.

use lottery::{Server, ServerConfig, Shutdown};
use std::process::ExitCode;

fn main() -> ExitCode {
    if std::env::args().skip(1).any(|a| a == "--help" || a == "-h") {
        println!("{}", ServerConfig::HELP);
        return ExitCode::SUCCESS;
    }
    let config = match ServerConfig::from_env(&lottery::process_env) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("action: config | result: fail | error: {e}");
            eprintln!("run `server --help` for every setting");
            return ExitCode::from(2);
        }
    };
    lottery::init_logging(config.log_level);
    let server = match Server::bind(config) {
        Ok(server) => server,
        Err(e) => {
            log::error!("action: config | result: fail | error: {e}");
            return ExitCode::from(e.exit_status());
        }
    };
    let shutdown = Shutdown::new();
    let stop = shutdown.clone();
    let signals = match lottery::on_signal(move |signal| {
        log::info!("action: shutdown | result: in_progress | signal: {signal}");
        stop.trigger();
    }) {
        Ok(signals) => signals,
        Err(e) => {
            log::error!(
                "action: config | result: fail | error: could not install the signal handlers: {e}"
            );
            return ExitCode::from(2);
        }
    };
    // The signal handlers are in place before `run` logs the ready line.
    let outcome = server.run(shutdown);
    let (handle, thread) = signals;
    handle.close();
    let _ = thread.join();
    match outcome {
        Ok(()) => {
            log::info!("action: exit | result: success");
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::error!("action: exit | result: fail | error: {e}");
            ExitCode::FAILURE
        }
    }
}
