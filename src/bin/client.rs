//! One lottery agency: reads its configuration, starts logging, sends its bets,
//! waits for its winners, and maps the outcome to an exit status.

use log::{LevelFilter, error, info, warn};
use lottery::{Agency, ClientConfig, ClientError, Shutdown};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

fn main() -> ExitCode {
    lottery::init_logging(LevelFilter::Info);
    let config = match lottery::start_up(
        "client",
        &ClientConfig::help(),
        ClientConfig::from_env,
        false,
    ) {
        Ok((config, _)) => config,
        Err(status) => return status,
    };
    lottery::set_log_level(config.log_level);
    info!("action: config | result: success | {}", config.describe());

    let shutdown = Shutdown::new();
    let stop = shutdown.clone();
    // The signal that stopped the run, for the exit status (128 + its number).
    let stopped_by = Arc::new(AtomicU8::new(0));
    let signal_number = Arc::clone(&stopped_by);
    let signals = lottery::on_signal(move |signal| {
        info!("action: shutdown | result: in_progress | signal: {signal}");
        signal_number.store(if signal == "SIGINT" { 2 } else { 15 }, Ordering::SeqCst);
        stop.trigger();
    });
    if let Err(e) = &signals {
        warn!("action: config | result: fail | error: could not install the signal handlers: {e}");
    }

    let status = match Agency::new(config, shutdown).run() {
        Ok(summary) if summary.invalid_rows > 0 => {
            error!(
                "action: exit | result: fail | apuestas_invalidas: {} | detail: the invalid rows logged above were not sent",
                summary.invalid_rows
            );
            ExitCode::FAILURE
        }
        Ok(_) => {
            info!("action: exit | result: success");
            ExitCode::SUCCESS
        }
        Err(ClientError::Interrupted { acked, read }) => {
            info!("action: shutdown | result: success | detail: socket closed");
            let e = ClientError::Interrupted { acked, read };
            error!(
                "action: exit | result: fail | apuestas_confirmadas: {acked} | apuestas_leidas: {read} | error: {e}"
            );
            ExitCode::from(128 + stopped_by.load(Ordering::SeqCst).max(2))
        }
        Err(e) => {
            error!("action: exit | result: fail | error: {e}");
            ExitCode::from(e.exit_status())
        }
    };
    if let Ok((handle, thread)) = signals {
        handle.close();
        let _ = thread.join();
    }
    status
}
