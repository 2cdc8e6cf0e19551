//! The winners phase: a new connection per attempt (HELLO, GET_WINNERS) until
//! the draw has happened, the answer checked as it arrives, and never another
//! round's winners: a finished round's WELCOME must name this file's bets.

use super::error::ClientError;
use super::retry::WaitReport;
use super::sending::FileSummary;
use super::{Agency, Deadline};
use crate::text;
use crate::wire::{AgencyStatus, Reply, Request};
use log::{debug, info};

impl Agency {
    /// Asks for the winners on a new connection per attempt until the draw has
    /// happened; NO_WINNERS means ask again after the retry interval. `None`
    /// when the server does not hold this agency's FINISH.
    pub(super) fn ask_for_winners(
        &mut self,
        file: FileSummary,
    ) -> Result<Option<Vec<String>>, ClientError> {
        let deadline = Deadline::new(self.config.timeout);
        let mut report = WaitReport::start();
        self.backoff.reset();
        loop {
            self.check_stop()?;
            let attempt = self.winners_session(file, &deadline);
            self.connector.forget();
            match attempt {
                Ok(WinnersAnswer::Winners(winners)) => return Ok(Some(winners)),
                Ok(WinnersAnswer::NotFinished) => return Ok(None),
                Ok(WinnersAnswer::NotYet) => {
                    match report.due() {
                        Some(waited) => info!(
                            "action: consulta_ganadores | result: in_progress | esperando_s: {} | detail: waiting for the draw, which needs every agency to finish",
                            waited.as_secs()
                        ),
                        None => debug!(
                            "action: consulta_ganadores | result: in_progress | detail: the draw has not happened yet"
                        ),
                    }
                    self.backoff.reset();
                    if deadline.expired() {
                        return Err(ClientError::DrawTimeout {
                            waited: deadline.last_progress.elapsed(),
                            last: None,
                        });
                    }
                    self.sleep(self.backoff.interval())?;
                }
                Err(e) if e.is_transient() => {
                    if deadline.expired() {
                        return Err(ClientError::DrawTimeout {
                            waited: deadline.last_progress.elapsed(),
                            last: Some(Box::new(e)),
                        });
                    }
                    self.pause_after(e, "asking for the winners", &deadline)?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One connection of the winners phase: HELLO, then one GET_WINNERS.
    fn winners_session(
        &mut self,
        file: FileSummary,
        deadline: &Deadline,
    ) -> Result<WinnersAnswer, ClientError> {
        const DURING: &str = "asking for the winners";
        let mut session = self.connector.connect()?;
        let welcome = session.hello(self.config.id, &self.config.token, deadline.at())?;
        self.acked = welcome.stored;
        if welcome.status == AgencyStatus::Sending {
            return Ok(WinnersAnswer::NotFinished);
        }
        // Never another round's winners: the server's bets must be the file's.
        self.check_finished_round(&welcome, file)?;
        let request = Request::GetWinners {
            agency: self.config.id,
        };
        session.send(&request, DURING)?;
        let mut winners = WinnersList::new(welcome.stored);
        loop {
            // The whole answer must come by the deadline, however it trickles in.
            match session.read_reply(deadline.at(), DURING)? {
                Reply::NoWinners if winners.is_empty() => return Ok(WinnersAnswer::NotYet),
                Reply::WinnersPart { documents } => winners.add_part(&documents)?,
                Reply::Winners { documents } => {
                    winners.add_last(&documents)?;
                    return Ok(WinnersAnswer::Winners(winners.documents));
                }
                other => {
                    return Err(ClientError::UnexpectedReply {
                        during: DURING,
                        reply: format!("{other:?}"),
                    });
                }
            }
        }
    }
}

/// How one winners attempt ended.
enum WinnersAnswer {
    Winners(Vec<String>),
    /// The draw has not happened yet.
    NotYet,
    /// The server does not hold this agency's FINISH.
    NotFinished,
}

/// An agency's winners as their parts arrive, checked against the protocol's
/// rules: whole documents of 1 to 10 digits, no empty part, and no more of
/// them than the agency has bets stored (so a server that streams parts
/// forever is refused, not followed).
struct WinnersList {
    documents: Vec<String>,
    parts: usize,
    most: u64,
}

impl WinnersList {
    fn new(stored: u64) -> WinnersList {
        WinnersList {
            documents: Vec::new(),
            parts: 0,
            most: stored,
        }
    }

    fn is_empty(&self) -> bool {
        self.parts == 0
    }

    fn bad(reason: String) -> ClientError {
        ClientError::BadWinners { reason }
    }

    /// A WINNERS_PART: never empty.
    fn add_part(&mut self, payload: &str) -> Result<(), ClientError> {
        if payload.is_empty() {
            return Err(Self::bad("an empty WINNERS_PART".into()));
        }
        self.add(payload)
    }

    /// The final WINNERS: empty only when it is the whole answer (no winners).
    fn add_last(&mut self, payload: &str) -> Result<(), ClientError> {
        if payload.is_empty() {
            if self.parts > 0 {
                return Err(Self::bad("an empty WINNERS after WINNERS_PART".into()));
            }
            return Ok(());
        }
        self.add(payload)
    }

    fn add(&mut self, payload: &str) -> Result<(), ClientError> {
        self.parts += 1;
        for document in payload.split(',') {
            let digits =
                (1..=10).contains(&document.len()) && document.bytes().all(|b| b.is_ascii_digit());
            if !digits {
                return Err(Self::bad(format!(
                    "\"{}\" is not a document of 1 to 10 digits",
                    text::escape(text::truncate_utf8(document, 32))
                )));
            }
            if self.documents.len() as u64 >= self.most {
                return Err(Self::bad(format!(
                    "more winners than the {} bets the server holds of this agency",
                    self.most
                )));
            }
            self.documents.push(document.to_string());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn winner_parts_join_into_documents() {
        let mut none = WinnersList::new(5);
        none.add_last("").unwrap();
        assert!(none.documents.is_empty());
        let mut list = WinnersList::new(5);
        list.add_part("1,22").unwrap();
        list.add_last("3333333333").unwrap();
        assert_eq!(list.documents, ["1", "22", "3333333333"]);
    }

    #[test]
    fn winners_that_break_the_rules_are_refused() {
        let refused = |parts: &[&str], last: &str, stored: u64| {
            let mut list = WinnersList::new(stored);
            let outcome = parts
                .iter()
                .try_for_each(|p| list.add_part(p))
                .and_then(|()| list.add_last(last));
            matches!(outcome, Err(ClientError::BadWinners { .. }))
        };
        assert!(refused(&[""], "1", 9), "an empty part");
        assert!(refused(&["1"], "", 9), "an empty last part after parts");
        assert!(refused(&[], "1,,2", 9), "an empty item");
        assert!(refused(&[], "12a", 9), "not digits");
        assert!(refused(&[], "12345678901", 9), "eleven digits");
        assert!(refused(&[], "1,2,3", 2), "more winners than bets stored");
        assert!(refused(&["1", "2"], "3", 2), "more winners, over parts");
        assert!(!refused(&["1", "2"], "3", 3));
    }
}
