//! `server --verify`: an auditor's read-only check of a round's files.
//!
//! It reads the bets file and its FINISH records as recovery does, but takes
//! no lock and changes nothing, so it works while a server holds the round. It
//! prints, for each agency, its stored bets, their digest, whether it finished
//! (and whether its record matches its rows) and its winners, then the seal.

use crate::app::server_settings::ServerConfig;
use crate::app::startup::START_FAILED;
use crate::storage::{self, Audit};
use crate::text;
use log::error;

/// A FINISH record does not match its agency's rows.
const TAMPERED: u8 = 1;

/// Audits the round of `config`'s bets file and prints what it found on
/// standard output. Returns the exit status: 0 consistent, 1 a FINISH record
/// does not match its rows, 2 the files cannot be read or parsed.
pub fn verify_round(config: &ServerConfig) -> u8 {
    let path = &config.bets_file;
    let audit = match storage::audit(path, config.agencies) {
        Ok(audit) => audit,
        Err(e) => {
            error!("action: verificar | result: fail | error: {e}");
            return START_FAILED;
        }
    };
    print!("{}", report(&audit, &text::shown(path).to_string()));
    match audit.tampered() {
        Some(_) => TAMPERED,
        None => 0,
    }
}

/// The audit as a person reads it: one line per agency, the seal, the verdict.
fn report(audit: &Audit, path: &str) -> String {
    let mut out = format!("round: {path} ({} agencies)\n", audit.agencies.len());
    for agency in &audit.agencies {
        let finished = match &agency.record {
            None => "no".to_string(),
            Some((record, None)) => format!("yes (record line {}, matches)", record.line),
            Some((record, Some(_))) => format!(
                "yes (record line {}: {} bets, digest {}), DOES NOT MATCH",
                record.line,
                record.total,
                record.digest.short()
            ),
        };
        out.push_str(&format!(
            "agency {}: bets: {} | digest: {} | finished: {finished} | winners: {}\n",
            agency.agency, agency.bets, agency.digest, agency.winners
        ));
    }
    match audit.seal {
        Some(seal) => out.push_str(&format!("seal: {seal}\n")),
        None => out.push_str("seal: none (not every agency has finished)\n"),
    }
    match audit.tampered() {
        Some(agency) => {
            let (record, reason) = agency.record.as_ref().map_or((0, ""), |(record, reason)| {
                (record.line, reason.as_deref().unwrap_or_default())
            });
            out.push_str(&format!(
                "result: TAMPERED: agency {} (FINISH record line {record}): {reason}\n",
                agency.agency
            ));
        }
        None => out.push_str("result: consistent\n"),
    }
    out
}
