//! One lottery agency: reads its configuration, starts logging, sends its bets,
//! waits for its winners, and maps the outcome to an exit status.

use lottery::{Agency, ClientConfig, ClientError, Shutdown};
use std::process::ExitCode;

fn main() -> ExitCode {
    if std::env::args().skip(1).any(|a| a == "--help" || a == "-h") {
        println!("{}", ClientConfig::HELP);
        return ExitCode::SUCCESS;
    }
    let config = match ClientConfig::from_env(&lottery::process_env) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("action: config | result: fail | error: {e}");
            eprintln!("run `client --help` for every setting");
            return ExitCode::from(2);
        }
    };
    lottery::init_logging(config.log_level);
    log::info!("action: config | result: success | {}", config.describe());

    let shutdown = Shutdown::new();
    let stop = shutdown.clone();
    let signals = lottery::on_signal(move |signal| {
        log::info!("action: shutdown | result: in_progress | signal: {signal}");
        stop.trigger();
    });
    if let Err(e) = &signals {
        log::warn!(
            "action: config | result: fail | error: could not install the signal handlers: {e}"
        );
    }

    let status = match Agency::new(config, shutdown).run() {
        Ok(summary) if summary.invalid_rows > 0 => {
            log::error!(
                "action: exit | result: fail | apuestas_invalidas: {} | detail: the invalid rows logged above were not sent",
                summary.invalid_rows
            );
            ExitCode::FAILURE
        }
        Ok(_) => {
            log::info!("action: exit | result: success");
            ExitCode::SUCCESS
        }
        Err(ClientError::Interrupted) => {
            log::info!("action: shutdown | result: success | detail: socket closed");
            log::info!("action: exit | result: success");
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::error!("action: exit | result: fail | error: {e}");
            ExitCode::FAILURE
        }
    };
    if let Ok((handle, thread)) = signals {
        handle.close();
        let _ = thread.join();
    }
    status
}
