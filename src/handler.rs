//! One connection's handler: reads requests, answers each in order.
//!
//! Every answer goes through the `Outbox`, in the order the requests came:
//! a batch's ack waits there for the disk (`BetStore::sync`), and any reply
//! queued after it goes out after it, so a reply can never overtake an ack the
//! connection owes. The handler sends the outbox when it is about to wait (for
//! input, or on the draw) and when it holds `MAX_PENDING_BATCHES` acks: batches
//! that arrive together are made durable by one shared `fsync` (see `storage`),
//! and a client with several batches in flight pays for one disk flush, not one per batch.

use crate::bet::{BetRef, ValidBet};
use crate::calendar::Date;
use crate::connection::{Connection, ConnectionError, Fill};
use crate::draw;
use crate::lottery::{BatchPermit, BatchRefusal, Lottery, WinnersAnswer};
use crate::protocol::{self, BetBatch, ErrorCode, ProtocolError, Reply, Request};
use crate::shutdown::Shutdown;
use crate::storage::{Appended, BetStore, StorageError};
use log::{debug, error, info, log_enabled, warn};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Batches a connection may append before it must stop reading and acknowledge them.
const MAX_PENDING_BATCHES: usize = 64;

/// A batch appended to the file whose ack waits for the shared `fsync`.
struct PendingAck {
    appended: Appended,
    agency: u32,
    count: u16,
    _permit: BatchPermit,
}

/// One answer owed to the peer.
enum Owed {
    Ack(PendingAck),
    Reply(Reply),
}

/// The answers owed to the peer, in the order they are due.
#[derive(Default)]
struct Outbox {
    owed: VecDeque<Owed>,
    acks: usize,
}

impl Outbox {
    fn ack(&mut self, ack: PendingAck) {
        self.acks += 1;
        self.owed.push_back(Owed::Ack(ack));
    }

    fn reply(&mut self, reply: Reply) {
        self.owed.push_back(Owed::Reply(reply));
    }

    /// Makes every owed batch durable (one shared `fsync` for all of them), then
    /// writes every owed answer in order: an ack, or ERROR STORAGE for a batch
    /// the disk refused, and the replies between them.
    fn send(
        &mut self,
        conn: &mut Connection,
        store: &BetStore,
        peer: SocketAddr,
    ) -> io::Result<()> {
        for owed in self.owed.drain(..) {
            let reply = match owed {
                Owed::Reply(reply) => reply,
                Owed::Ack(ack) => match store.sync(ack.appended) {
                    Ok(()) => {
                        info!(
                            "action: apuesta_recibida | result: success | cantidad: {} | agencia: {}",
                            ack.count, ack.agency
                        );
                        Reply::BetsAck { count: ack.count }
                    }
                    Err(e) => {
                        error!(
                            "action: apuesta_recibida | result: fail | cantidad: {} | agencia: {} | error: {e}",
                            ack.count, ack.agency
                        );
                        Reply::error(ErrorCode::Storage, &storage_detail(&e))
                    }
                },
            };
            if let Err(e) = conn.queue_reply(&reply) {
                // Our own replies are built within the limits; say so loudly if not.
                error!("action: responder | result: fail | peer: {peer} | error: {e}");
            }
        }
        self.acks = 0;
        conn.flush()
    }
}

/// How a connection ended; decides the closing log line.
pub(crate) enum Ending {
    /// The peer closed between messages.
    PeerClosed,
    /// The server answered an error that closes the connection.
    Refused,
    /// The server is stopping.
    ShuttingDown,
    /// The connection failed or idled out (already logged).
    Failed,
}

impl Ending {
    fn name(&self) -> &'static str {
        match self {
            Ending::PeerClosed => "peer_closed",
            Ending::Refused => "refused",
            Ending::ShuttingDown => "shutting_down",
            Ending::Failed => "failed",
        }
    }
}

/// What the handler does after a request.
type Next = Result<(), Ending>;

/// Serves one connection.
pub(crate) struct Handler {
    pub conn: Connection,
    pub peer: SocketAddr,
    pub lottery: Lottery,
    pub store: Arc<BetStore>,
    pub shutdown: Shutdown,
    pub draw_wait: Duration,
    outbox: Outbox,
}

impl Handler {
    pub fn new(
        conn: Connection,
        peer: SocketAddr,
        lottery: Lottery,
        store: Arc<BetStore>,
        shutdown: Shutdown,
        draw_wait: Duration,
    ) -> Handler {
        Handler {
            conn,
            peer,
            lottery,
            store,
            shutdown,
            draw_wait,
            outbox: Outbox::default(),
        }
    }

    /// Serves the connection until it ends.
    pub fn run(mut self) {
        debug!("action: conexion | result: success | peer: {}", self.peer);
        let ending = match self.serve() {
            Ok(()) => Ending::PeerClosed,
            Err(ending) => ending,
        };
        if matches!(ending, Ending::ShuttingDown) {
            self.outbox.reply(Reply::error(
                ErrorCode::ShuttingDown,
                "the server is stopping",
            ));
        }
        // Whatever is still owed goes out; the peer may be gone.
        let _ = self.send_outbox();
        debug!(
            "action: conexion_cerrada | result: success | peer: {} | reason: {}",
            self.peer,
            ending.name()
        );
    }

    fn serve(&mut self) -> Next {
        loop {
            if self.shutdown.is_triggered() {
                return Err(Ending::ShuttingDown);
            }
            match self.conn.next_buffered_request() {
                Ok(Some(request)) => self.handle(request)?,
                Ok(None) => self.wait_for_input()?,
                Err(e) => return Err(self.refuse_message(&e)),
            }
            if self.outbox.acks >= MAX_PENDING_BATCHES {
                self.send_outbox()?;
            }
        }
    }

    /// Sends everything owed; a failed write ends the connection.
    fn send_outbox(&mut self) -> Next {
        self.outbox
            .send(&mut self.conn, &self.store, self.peer)
            .map_err(|e| {
                info!(
                    "action: responder | result: fail | peer: {} | error: {e}",
                    self.peer
                );
                if self.shutdown.is_triggered() {
                    Ending::ShuttingDown
                } else {
                    Ending::Failed
                }
            })
    }

    /// Answers bytes that do not form a valid message: log, ERROR, close.
    fn refuse_message(&mut self, e: &ProtocolError) -> Ending {
        warn!(
            "action: mensaje_invalido | result: fail | peer: {} | code: {} | error: {e}",
            self.peer,
            e.code().name()
        );
        self.outbox.reply(Reply::error(e.code(), &e.to_string()));
        Ending::Refused
    }

    /// Nothing whole is buffered: take in what is already on the socket while
    /// acks are owed; otherwise send what is owed and block for more.
    fn wait_for_input(&mut self) -> Next {
        if self.outbox.acks > 0 && matches!(self.conn.fill(false), Ok(Fill::Data)) {
            return Ok(());
        }
        self.send_outbox()?;
        match self.conn.fill(true) {
            Ok(Fill::Data | Fill::Nothing) => Ok(()),
            Ok(Fill::Closed) if self.shutdown.is_triggered() => Err(Ending::ShuttingDown),
            Ok(Fill::Closed) => Err(Ending::PeerClosed),
            Err(ConnectionError::Protocol(e)) => Err(self.refuse_message(&e)),
            Err(_) if self.shutdown.is_triggered() => Err(Ending::ShuttingDown),
            Err(ConnectionError::IdleTimeout { waited }) => {
                info!(
                    "action: conexion_inactiva | result: fail | peer: {} | idle_ms: {} | bytes_descartados: {}",
                    self.peer,
                    waited.as_millis(),
                    self.conn.buffered()
                );
                Err(Ending::Failed)
            }
            Err(e) => {
                info!(
                    "action: conexion_cortada | result: fail | peer: {} | error: {e}",
                    self.peer
                );
                Err(Ending::Failed)
            }
        }
    }

    /// Answers one request.
    fn handle(&mut self, request: Request) -> Next {
        let agency = request.agency();
        if !self.lottery.knows_agency(agency) {
            let detail = format!(
                "agency {agency} is not taking part; agencies are numbered 1 to {}",
                self.lottery.agencies()
            );
            warn!(
                "action: agencia_desconocida | result: fail | peer: {} | agencia: {agency} | error: {detail}",
                self.peer
            );
            self.outbox
                .reply(Reply::error(ErrorCode::UnknownAgency, &detail));
            return Ok(());
        }
        match request {
            Request::Bets { agency, batch } => self.handle_bets(agency, &batch),
            Request::Finish { agency } => self.handle_finish(agency),
            Request::GetWinners { agency } => self.handle_get_winners(agency),
        }
    }

    fn refuse_batch(&mut self, count: usize, code: ErrorCode, detail: &str) -> Next {
        warn!(
            "action: apuesta_recibida | result: fail | cantidad: {count} | peer: {} | code: {} | error: {detail}",
            self.peer,
            code.name()
        );
        self.outbox.reply(Reply::error(code, detail));
        Ok(())
    }

    fn handle_bets(&mut self, agency: u32, batch: &BetBatch) -> Next {
        let count = batch.len();
        let today = Date::today_utc();
        let mut bets: Vec<ValidBet<'_>> = Vec::with_capacity(count);
        for (index, bet) in batch.bets().enumerate() {
            match BetRef::validate(bet, today) {
                Ok(valid) => bets.push(valid),
                Err(reason) => {
                    let detail = format!("bet at index {index} (counting from 0): {reason}");
                    return self.refuse_batch(count, ErrorCode::InvalidBet, &detail);
                }
            }
        }
        let permit = match self.lottery.begin_batch(agency) {
            Ok(permit) => permit,
            Err(BatchRefusal::AgencyFinished) => {
                let detail = format!(
                    "agency {agency} already sent FINISH; its bets are closed and this batch was not stored"
                );
                return self.refuse_batch(count, ErrorCode::AgencyFinished, &detail);
            }
            Err(BatchRefusal::ShuttingDown) => return Err(Ending::ShuttingDown),
        };
        let appended = match self.store.append(agency, &bets) {
            Ok(appended) => appended,
            Err(e) => {
                drop(permit);
                return self.refuse_batch(count, ErrorCode::Storage, &storage_detail(&e));
            }
        };
        if log_enabled!(log::Level::Debug) {
            for bet in &bets {
                debug!(
                    "action: apuesta_almacenada | result: success | dni: {} | numero: {}",
                    String::from_utf8_lossy(bet.document),
                    bet.number
                );
            }
        }
        self.outbox.ack(PendingAck {
            appended,
            agency,
            // The decoder read `count` from a u16, so it fits.
            count: u16::try_from(count).unwrap_or(u16::MAX),
            _permit: permit,
        });
        Ok(())
    }

    fn handle_finish(&mut self, agency: u32) -> Next {
        // This agency's batches are acknowledged before its FINISH is.
        self.send_outbox()?;
        let outcome = self.lottery.finish(agency);
        info!(
            "action: agencia_finalizo | result: success | agencia: {agency} | total_agencias_finalizadas: {} | de: {} | faltan: {}{}",
            outcome.finished_count,
            self.lottery.agencies(),
            outcome.missing,
            if outcome.first_time {
                ""
            } else {
                " | repetido: true"
            }
        );
        self.outbox.reply(Reply::FinishAck { agency });
        self.send_outbox()?;
        if outcome.draw_due {
            let store = Arc::clone(&self.store);
            self.lottery
                .hold_draw(|| draw::compute_winners(store.path(), &store.reader()?));
        }
        Ok(())
    }

    fn handle_get_winners(&mut self, agency: u32) -> Next {
        // Nothing owed waits while this request waits on the draw.
        self.send_outbox()?;
        match self.lottery.wait_for_winners(self.draw_wait) {
            WinnersAnswer::Drawn(winners) => {
                let list = winners.of(agency);
                for reply in protocol::winners_replies(&list.documents) {
                    self.outbox.reply(reply);
                }
                info!(
                    "action: ganadores_enviados | result: success | agencia: {agency} | cant_ganadores: {}",
                    list.count
                );
            }
            WinnersAnswer::NotYet => {
                debug!(
                    "action: ganadores_enviados | result: in_progress | agencia: {agency} | detail: draw not held yet"
                );
                self.outbox.reply(Reply::NoWinners);
            }
            WinnersAnswer::Failed(reason) => {
                error!(
                    "action: ganadores_enviados | result: fail | agencia: {agency} | error: {reason}"
                );
                let detail = format!("the draw could not read the stored bets: {reason}");
                self.outbox.reply(Reply::error(ErrorCode::Storage, &detail));
            }
            WinnersAnswer::ShuttingDown => return Err(Ending::ShuttingDown),
        }
        Ok(())
    }
}

fn storage_detail(e: &StorageError) -> String {
    format!("the batch was not stored: {e}; nothing of it was kept, send it again later")
}
