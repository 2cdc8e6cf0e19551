//! The central lottery server: reads its configuration, starts logging, serves
//! until SIGTERM/SIGINT, and maps the outcome to an exit status.

use lottery::config::{self, ServerConfig};
use lottery::server::Server;
use std::process::ExitCode;

fn main() -> ExitCode {
    if std::env::args().skip(1).any(|a| a == "--help" || a == "-h") {
        println!("{}", ServerConfig::HELP);
        return ExitCode::SUCCESS;
    }
    let config = match ServerConfig::from_env(&config::process_env) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("action: config | result: fail | error: {e}");
            eprintln!("run `server --help` for every setting");
            return ExitCode::from(2);
        }
    };
    lottery::logging::init(config.log_level);
    let server = match Server::bind(config) {
        Ok(server) => server,
        Err(e) => {
            log::error!("action: config | result: fail | error: {e}");
            return ExitCode::from(u8::try_from(e.exit_status()).unwrap_or(1));
        }
    };
    match server.run() {
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
