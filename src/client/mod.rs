//! One agency: its CSV rows become numbered batches of bets, then FINISH, then
//! the winners, and a lost connection or a restarted server costs nothing.
//!
//! Every connection starts with HELLO; the server's WELCOME says how many of
//! this agency's bets it holds (`stored`) and whether its FINISH is recorded.
//! The agency's bets are its valid CSV rows in file order, numbered from 0, so
//! the client reads its file again, skips the first `stored` valid rows and
//! sends the rest in BETS messages numbered by their first bet (`sending`,
//! `batching`), keeping up to `batches_in_flight` ahead of their acks. Then
//! FINISH with the total, and the winners asked for on a new connection per
//! attempt (`winners`). Connections and their errors are `session`'s. A lost,
//! reset or refused connection, or an OUT_OF_ORDER, is opened again after a
//! growing pause (`retry`) and resumed from WELCOME: a batch sent twice is
//! stored once by the server.
//!
//! The client gives up after `CLI_TIMEOUT_S` without progress: while sending,
//! progress is a WELCOME or an ack; while waiting for the draw, only the winners.
//!
//! Content is checked, not only counts (protocol version 3): before it skips the
//! `stored` bets a WELCOME names, the client hashes its own first `stored` valid
//! bets, and a digest other than WELCOME's (or a file with fewer valid bets, or a
//! finished round of another total) means the server holds another round for
//! this agency: the client sends nothing more and stops. FINISH carries the
//! digest of all its bets, and FINISH_ACK must return it: the agency's receipt.

pub(crate) mod agency_file;
pub(crate) mod batching;
mod error;
pub(crate) mod retry;
mod sending;
mod session;
mod winners;

pub use error::ClientError;

use crate::app::client_settings::ClientConfig;
use crate::app::shutdown::Shutdown;
use crate::bet::calendar::Date;
use agency_file::AgencyFile;
use log::{info, warn};
use retry::Backoff;
use sending::FileSummary;
use session::{Connector, stopped};
use std::time::{Duration, Instant};

/// Longest single sleep while waiting, so a stop request is noticed promptly.
const SLEEP_SLICE_MS: u64 = 50;
/// FINISHes sent again when the server, asked for the winners, says the
/// agency's FINISH is not recorded (a server whose records were lost).
const MAX_FINISHES: u32 = 3;

/// What a completed run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// This agency's bets the server holds (from this run or earlier ones).
    pub bets_sent: u64,
    /// Rows refused by validation and not sent.
    pub invalid_rows: u64,
    /// The agency's winning documents, in the order the server stored them.
    pub winners: Vec<String>,
}

/// When the client gives up: `timeout` after the last progress.
struct Deadline {
    timeout: Duration,
    last_progress: Instant,
}

impl Deadline {
    fn new(timeout: Duration) -> Deadline {
        Deadline {
            timeout,
            last_progress: Instant::now(),
        }
    }

    fn progress(&mut self) {
        self.last_progress = Instant::now();
    }

    fn at(&self) -> Instant {
        self.last_progress + self.timeout
    }

    fn expired(&self) -> bool {
        Instant::now() >= self.at()
    }
}

/// One agency's run against the server.
pub struct Agency {
    config: ClientConfig,
    shutdown: Shutdown,
    connector: Connector,
    backoff: Backoff,
    /// The date every row is judged against: one for the whole run, so the
    /// agency's numbering of its valid rows never changes.
    today: Date,
    /// The agency's valid rows and their digest, once a pass has read its file
    /// to the end.
    file: Option<FileSummary>,
    invalid_rows: u64,
    /// Invalid rows are logged once: lines up to this one have been.
    logged_through_line: u64,
    /// Bets the server holds, as last known.
    acked: u64,
    /// Valid rows read so far, for the stop's summary.
    read: u64,
}

impl Agency {
    /// An agency with `config`, stopped early when `shutdown` is triggered.
    pub fn new(config: ClientConfig, shutdown: Shutdown) -> Agency {
        Agency {
            backoff: Backoff::new(config.retry_interval, retry::seed()),
            connector: Connector::new(&config, shutdown.clone()),
            config,
            shutdown,
            today: Date::today_utc(),
            file: None,
            invalid_rows: 0,
            logged_through_line: 0,
            acked: 0,
            read: 0,
        }
    }

    /// Sends every valid bet not yet stored, FINISH, and waits for the winners.
    pub fn run(mut self) -> Result<Summary, ClientError> {
        match self.rounds() {
            Ok(winners) => Ok(Summary {
                bets_sent: self.acked,
                invalid_rows: self.invalid_rows,
                winners,
            }),
            // Wherever the stop was noticed, the agency knows the counts.
            Err(ClientError::Interrupted { .. }) => Err(self.interrupted()),
            Err(e) => Err(e),
        }
    }

    /// The bets phase, then the winners; again (up to `MAX_FINISHES` times) if
    /// the server lost the agency's FINISH.
    fn rounds(&mut self) -> Result<Vec<String>, ClientError> {
        // Read once before anything else: a missing file or unusable TLS
        // settings are start-up errors.
        self.connector.use_tls(&self.config)?;
        self.open_data_file()?;
        let mut rounds = 0;
        let winners = loop {
            let file = self.send_bets()?;
            match self.ask_for_winners(file)? {
                Some(winners) => break winners,
                // The server does not hold this agency's FINISH (its records
                // were lost): send it again, but not forever.
                None if rounds < MAX_FINISHES => rounds += 1,
                None => {
                    return Err(ClientError::UnexpectedReply {
                        during: "asking for the winners",
                        reply: format!(
                            "after {MAX_FINISHES} acknowledged FINISHes, the server still says \
                             this agency has not finished"
                        ),
                    });
                }
            }
        };
        info!(
            "action: consulta_ganadores | result: success | cant_ganadores: {}",
            winners.len()
        );
        Ok(winners)
    }

    fn open_data_file(&self) -> Result<AgencyFile, ClientError> {
        AgencyFile::open(&self.config.data_file).map_err(|source| ClientError::DataFile {
            path: self.config.data_file.clone(),
            source,
        })
    }

    fn reading_error(&self, source: std::io::Error) -> ClientError {
        ClientError::ReadingDataFile {
            path: self.config.data_file.clone(),
            source,
        }
    }

    fn interrupted(&self) -> ClientError {
        ClientError::Interrupted {
            acked: self.acked,
            read: self.read.max(self.acked),
        }
    }

    fn check_stop(&self) -> Result<(), ClientError> {
        match self.shutdown.is_triggered() {
            true => Err(stopped()),
            false => Ok(()),
        }
    }

    /// The pause before the next connection after `error`, logged; gives up
    /// when the deadline has passed.
    fn pause_after(
        &mut self,
        error: ClientError,
        during: &str,
        deadline: &Deadline,
    ) -> Result<(), ClientError> {
        let waited = deadline.last_progress.elapsed();
        if deadline.expired() {
            return Err(match error {
                ClientError::Connect {
                    address, source, ..
                } => ClientError::Connect {
                    address,
                    waited,
                    source,
                },
                other => ClientError::NoProgress {
                    waited,
                    last: Box::new(other),
                },
            });
        }
        let pause = self.backoff.after_refusal();
        match error {
            // Nothing listening yet: reported every few seconds, not every try.
            ClientError::Connect { .. } => {}
            _ => warn!(
                "action: conectar | result: in_progress | error: {error} | detail: {during}: connecting again in {} ms",
                pause.as_millis()
            ),
        }
        self.sleep(pause.min(deadline.at().saturating_duration_since(Instant::now())))
    }

    /// Sleeps in short slices, ending early on a stop request.
    fn sleep(&self, total: Duration) -> Result<(), ClientError> {
        let end = Instant::now() + total;
        loop {
            self.check_stop()?;
            let now = Instant::now();
            if now >= end {
                return Ok(());
            }
            std::thread::sleep((end - now).min(Duration::from_millis(SLEEP_SLICE_MS)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_counts_from_the_last_progress() {
        let mut deadline = Deadline::new(Duration::from_secs(3600));
        assert!(!deadline.expired());
        let before = deadline.at();
        deadline.progress();
        assert!(deadline.at() >= before);
        assert!(Deadline::new(Duration::ZERO).expired());
    }
}
