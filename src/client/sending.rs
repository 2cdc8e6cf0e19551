//! The bets phase: one connection for HELLO, the bets the server does not hold
//! yet, and FINISH with the file's total and digest.
//!
//! The agency's bets are its valid CSV rows in file order, numbered from 0.
//! Each connection reads the file again (`FilePass`): the first `stored` valid
//! bets, which WELCOME says the server holds, are hashed and must have
//! WELCOME's digest before anything more is sent; the rest go out in BETS
//! messages numbered by their first bet, up to `batches_in_flight` ahead of
//! their acks. FINISH_ACK returns the digest, the agency's receipt.

use super::batching::{AckWindow, Batch, Batcher};
use super::error::ClientError;
use super::session::{Session, Welcome};
use super::{Agency, Deadline};
use crate::bet::{BetRef, ValidBet};
use crate::wire::digest::{Digest, Hasher};
use crate::wire::{self, AgencyStatus, ProtocolError, Reply, Request};
use log::{debug, error, info, warn};

/// What the client is doing while batches go out, for error messages.
const SENDING_BATCHES: &str = "sending a batch";

/// The agency's file as a whole: its valid bets and their digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FileSummary {
    pub total: u64,
    pub digest: Digest,
}

/// One read of the agency file: the valid bets counted and hashed in order,
/// the server's share checked, the rest packed into batches when sending.
struct FilePass {
    /// The bets the server holds, and their digest (WELCOME's).
    from: u64,
    expected: Digest,
    send: bool,
    hasher: Hasher,
    /// One bet's wire form, hashed alone when it is not sent.
    encoded: [u8; wire::MAX_VALID_BET_LEN],
    batcher: Batcher,
    window: AckWindow,
    valid: u64,
    invalid: u64,
    /// The digest of the file's first `from` valid bets, once they are read.
    prefix: Option<Digest>,
    /// Whether the bets read now go to the server: only once the server's
    /// share was found to be the file's (kept, not compared at every bet).
    sending: bool,
}

impl FilePass {
    fn new(welcome: &Welcome, send: bool, max_count: usize, in_flight: usize) -> FilePass {
        let hasher = Hasher::new();
        let prefix = (welcome.stored == 0).then(|| hasher.digest());
        FilePass {
            sending: send && prefix == Some(welcome.digest),
            from: welcome.stored,
            expected: welcome.digest,
            send,
            prefix,
            hasher,
            encoded: [0; wire::MAX_VALID_BET_LEN],
            batcher: Batcher::new(max_count, welcome.stored),
            window: AckWindow::new(in_flight),
            valid: 0,
            invalid: 0,
        }
    }

    /// Counts and hashes a valid bet; returns a full batch to send, if one is.
    fn take(&mut self, bet: &ValidBet<'_>) -> Option<Batch> {
        self.valid += 1;
        if self.sending {
            let batch = self.batcher.push(bet);
            if let Some(batch) = &batch {
                self.hasher.update(&batch.body);
            }
            return batch;
        }
        // Skipped (the server holds it) or only counted: hashed here.
        let len = wire::write_valid_bet(bet, &mut self.encoded);
        self.hasher.update(&self.encoded[..len]);
        if self.valid == self.from {
            let prefix = self.hasher.digest();
            self.prefix = Some(prefix);
            self.sending = self.send && prefix == self.expected;
        }
        None
    }

    /// The batch being packed, if any, hashed.
    fn last_batch(&mut self) -> Option<Batch> {
        let batch = self.batcher.take()?;
        self.hasher.update(&batch.body);
        Some(batch)
    }
}

impl Agency {
    /// The bets phase: connections until the server holds every valid bet and
    /// this agency's FINISH, or the timeout passes without progress. Returns
    /// what the file holds.
    pub(super) fn send_bets(&mut self) -> Result<FileSummary, ClientError> {
        let mut deadline = Deadline::new(self.config.timeout);
        loop {
            self.check_stop()?;
            let attempt = self.bets_session(&mut deadline);
            self.connector.forget();
            match attempt {
                Ok(file) => return Ok(file),
                Err(e) if e.is_transient() => self.pause_after(e, "sending the bets", &deadline)?,
                Err(e) => return Err(e),
            }
        }
    }

    /// One connection of the bets phase: HELLO, the check that the server's
    /// bets are this file's, the bets not yet stored, FINISH.
    fn bets_session(&mut self, deadline: &mut Deadline) -> Result<FileSummary, ClientError> {
        let mut session = self.connector.connect()?;
        let welcome = session.hello(self.config.id, &self.config.token, deadline.at())?;
        deadline.progress();
        self.backoff.reset();
        self.acked = welcome.stored;
        let sending = welcome.status == AgencyStatus::Sending;
        if !sending && let Some(file) = self.file {
            // The file was read whole already: WELCOME must name all of it.
            self.check_finished_round(&welcome, file)?;
            return Ok(file);
        }
        let file = self.pass_over_file(&mut session, &welcome, sending, deadline)?;
        self.file = Some(file);
        if !sending {
            debug!(
                "action: reanudar | result: success | almacenadas: {} | detail: FINISH already recorded",
                welcome.stored
            );
            return Ok(file);
        }
        info!(
            "action: apuestas_enviadas | result: success | cantidad: {} | invalidas: {} | bytes: {}",
            file.total,
            self.invalid_rows,
            self.connector.bytes_sent()
        );
        self.finish(&mut session, file, deadline)?;
        deadline.progress();
        Ok(file)
    }

    /// The error for a server that holds another round for this agency, logged
    /// with both counts: nothing more is sent.
    fn other_round(&self, welcome: &Welcome, in_file: u64, reason: String) -> ClientError {
        let error = ClientError::OtherRound {
            agency: self.config.id,
            stored: welcome.stored,
            in_file,
            reason,
        };
        error!(
            "action: reanudar | result: fail | agencia: {} | almacenadas: {} | en_archivo: {in_file} | error: {error}",
            self.config.id, welcome.stored
        );
        error
    }

    /// A WELCOME of a finished round must name every valid bet of the file,
    /// with the file's digest.
    pub(super) fn check_finished_round(
        &self,
        welcome: &Welcome,
        file: FileSummary,
    ) -> Result<(), ClientError> {
        if welcome.stored != file.total {
            let reason = format!(
                "its round is finished with {} bets where the file has {}",
                welcome.stored, file.total
            );
            return Err(self.other_round(welcome, file.total, reason));
        }
        if welcome.digest != file.digest {
            let reason = digest_reason(welcome.digest, file.digest);
            return Err(self.other_round(welcome, file.total, reason));
        }
        Ok(())
    }

    /// Reads the agency file from the start (see `FilePass`): with `send`, the
    /// bets after the server's go out and every ack is awaited. Returns the
    /// file's valid bets and their digest.
    fn pass_over_file(
        &mut self,
        session: &mut Session,
        welcome: &Welcome,
        send: bool,
        deadline: &mut Deadline,
    ) -> Result<FileSummary, ClientError> {
        let mut reader = self.open_data_file()?;
        if welcome.stored > 0 && send {
            info!(
                "action: reanudar | result: success | almacenadas: {}",
                welcome.stored
            );
        }
        let max_count = self
            .config
            .batch_max_amount
            .unwrap_or(usize::from(u16::MAX));
        let mut pass = FilePass::new(welcome, send, max_count, self.config.batches_in_flight);
        loop {
            self.check_stop()?;
            let Some(row) = reader.next_row().map_err(|e| self.reading_error(e))? else {
                break;
            };
            let problem = match &row.content {
                Ok(fields) => match BetRef::from_agency_row(fields, self.today) {
                    Ok(bet) => {
                        let batch = pass.take(&bet);
                        self.read = self.read.max(pass.valid);
                        if let Some(batch) = batch {
                            self.send_batch(session, batch, &mut pass.window, deadline)?;
                        }
                        continue;
                    }
                    Err(e) => e.to_string(),
                },
                Err(e) => e.to_string(),
            };
            pass.invalid += row.lines;
            self.log_invalid_row(row.line, row.lines, &problem);
        }
        self.end_pass(session, welcome, pass, deadline)
    }

    /// After the file's last row: the server's share must have been found and
    /// be the file's; the last batch goes out and every ack is awaited.
    fn end_pass(
        &mut self,
        session: &mut Session,
        welcome: &Welcome,
        mut pass: FilePass,
        deadline: &mut Deadline,
    ) -> Result<FileSummary, ClientError> {
        self.invalid_rows = pass.invalid;
        let Some(prefix) = pass.prefix else {
            let reason = "the file has fewer valid bets than the server holds".to_string();
            return Err(self.other_round(welcome, pass.valid, reason));
        };
        if let Some(batch) = pass.last_batch() {
            self.send_batch(session, batch, &mut pass.window, deadline)?;
        }
        let file = FileSummary {
            total: pass.valid,
            digest: pass.hasher.digest(),
        };
        if prefix != welcome.digest {
            let reason = digest_reason(welcome.digest, prefix);
            return Err(self.other_round(welcome, file.total, reason));
        }
        if !pass.send {
            self.check_finished_round(welcome, file)?;
            return Ok(file);
        }
        session.flush(SENDING_BATCHES)?;
        while !pass.window.is_empty() {
            self.take_ack(session, &mut pass.window, true, deadline)?;
        }
        Ok(file)
    }

    /// Logs an invalid row once, however many passes read it.
    fn log_invalid_row(&mut self, line: u64, lines: u64, problem: &str) {
        if line > self.logged_through_line {
            if lines > 1 {
                warn!(
                    "action: apuesta_invalida | result: fail | linea: {line} | lineas: {lines} | error: {problem}"
                );
            } else {
                warn!("action: apuesta_invalida | result: fail | linea: {line} | error: {problem}");
            }
        }
        self.logged_through_line = self.logged_through_line.max(line + lines - 1);
    }

    /// Queues a batch. When the window is full, first sends everything queued in
    /// one write, waits for the oldest ack and takes every ack that arrived with
    /// it: the window then refills with several batches per write, and the server
    /// reads several per system call.
    fn send_batch(
        &mut self,
        session: &mut Session,
        batch: Batch,
        window: &mut AckWindow,
        deadline: &mut Deadline,
    ) -> Result<(), ClientError> {
        const DURING: &str = "packing a batch";
        if window.is_full() {
            session.flush(SENDING_BATCHES)?;
            self.take_ack(session, window, true, deadline)?;
            while !window.is_empty() && self.take_ack(session, window, false, deadline)? {}
        }
        let first = u32::try_from(batch.first).map_err(|_| ClientError::Encoding {
            during: DURING,
            source: ProtocolError::Malformed(
                "over 4,294,967,295 bets: more than the protocol numbers".to_string(),
            ),
        })?;
        let message = wire::encode_bets_message(self.config.id, first, batch.count, &batch.body)
            .map_err(|source| ClientError::Encoding {
                during: DURING,
                source,
            })?;
        session.queue(&message);
        debug!(
            "action: apuesta_enviada | result: in_progress | primera: {} | cantidad: {}",
            batch.first, batch.count
        );
        window.sent(&batch);
        Ok(())
    }

    /// Takes the oldest waiting batch's ack. With `wait`, blocks for it; without,
    /// takes it only if it is already buffered. Returns whether one was taken.
    fn take_ack(
        &mut self,
        session: &mut Session,
        window: &mut AckWindow,
        wait: bool,
        deadline: &mut Deadline,
    ) -> Result<bool, ClientError> {
        const DURING: &str = "waiting for a batch's ack";
        let reply = if wait {
            session.read_reply(deadline.at(), DURING)?
        } else {
            match session.buffered_reply(DURING)? {
                Some(reply) => reply,
                None => return Ok(false),
            }
        };
        let Reply::BetsAck { count } = reply else {
            return Err(ClientError::UnexpectedReply {
                during: DURING,
                reply: format!("{reply:?} (expected BETS_ACK)"),
            });
        };
        window
            .ack(count)
            .map_err(|e| ClientError::UnexpectedReply {
                during: DURING,
                reply: e.to_string(),
            })?;
        self.acked += u64::from(count);
        deadline.progress();
        debug!("action: apuesta_enviada | result: success | cantidad: {count}");
        Ok(true)
    }

    /// FINISH with the file's total and digest; FINISH_ACK must return the
    /// digest (the receipt), which is logged.
    fn finish(
        &mut self,
        session: &mut Session,
        file: FileSummary,
        deadline: &Deadline,
    ) -> Result<(), ClientError> {
        const DURING: &str = "sending FINISH";
        let agency = self.config.id;
        let total = u32::try_from(file.total).unwrap_or(u32::MAX);
        let finish = Request::Finish {
            agency,
            total,
            digest: file.digest,
        };
        session.send(&finish, DURING)?;
        match session.read_reply(deadline.at(), DURING)? {
            Reply::FinishAck {
                agency: acked,
                digest,
            } if acked == agency => {
                if digest != file.digest {
                    return Err(ClientError::BadReceipt {
                        ours: file.digest,
                        theirs: digest,
                    });
                }
                info!(
                    "action: finalizar | result: success | agencia: {agency} | total: {total} | recibo: {digest}"
                );
                Ok(())
            }
            other => Err(ClientError::UnexpectedReply {
                during: DURING,
                reply: format!("{other:?}"),
            }),
        }
    }
}

/// Why a WELCOME's digest shows another round, with both digests' first 8 hex digits.
fn digest_reason(server: Digest, file: Digest) -> String {
    format!(
        "the bets it holds have digest {} where the file's have {}",
        server.short(),
        file.short()
    )
}
