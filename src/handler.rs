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
use crate::lottery::{Lottery, WinnersAnswer};
use crate::protocol::{self, AgencyStatus, BetBatch, ErrorCode, ProtocolError, Reply, Request};
use crate::shutdown::Shutdown;
use crate::storage::{Append, Appended, BetStore, Finish, StorageError};
use log::{debug, error, info, log_enabled, warn};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Batches a connection may append before it must stop reading and acknowledge them.
const MAX_PENDING_BATCHES: usize = 64;

/// A batch appended to the file (or found there) whose ack waits for the shared `fsync`.
struct PendingAck {
    appended: Appended,
    agency: u32,
    count: u16,
    /// The batch was stored before: its ack is not logged as a new one.
    repeated: bool,
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
                    Ok(()) if ack.repeated => Reply::BetsAck { count: ack.count },
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
    /// The agency this connection speaks for, once its HELLO is accepted.
    session: Option<u32>,
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
            session: None,
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
        if self.outbox.acks > 0 && matches!(self.conn.fill(None), Ok(Fill::Data)) {
            return Ok(());
        }
        self.send_outbox()?;
        let deadline = self.conn.idle_deadline();
        match self.conn.fill(Some(deadline)) {
            Ok(Fill::Data | Fill::Nothing) => Ok(()),
            Ok(Fill::Closed) if self.shutdown.is_triggered() => Err(Ending::ShuttingDown),
            Ok(Fill::Closed) => Err(Ending::PeerClosed),
            Err(ConnectionError::Protocol(e)) => Err(self.refuse_message(&e)),
            Err(_) if self.shutdown.is_triggered() => Err(Ending::ShuttingDown),
            Err(ConnectionError::TimedOut { .. }) => {
                info!(
                    "action: conexion_inactiva | result: fail | peer: {} | idle_ms: {} | bytes_descartados: {}",
                    self.peer,
                    self.conn.idle_timeout().as_millis(),
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

    /// Answers one request: the session rules first (HELLO opens it, every
    /// later message speaks for its agency), then the request itself.
    fn handle(&mut self, request: Request) -> Next {
        let agency = match (self.session, &request) {
            (None, Request::Hello { agency, token }) => {
                let agency = *agency;
                return self.handle_hello(agency, token);
            }
            (None, _) => {
                return self.refuse_session(
                    request.agency(),
                    "the connection must start with HELLO naming its agency",
                );
            }
            (Some(session), Request::Hello { agency, .. }) => {
                let detail = format!(
                    "this connection already sent HELLO for agency {session}; open a new \
                     connection for another HELLO (agency {agency})"
                );
                return self.refuse_session(*agency, &detail);
            }
            (Some(session), request) if request.agency() != session => {
                let detail = format!(
                    "this connection speaks for agency {session}, not for agency {}",
                    request.agency()
                );
                return self.refuse_session(request.agency(), &detail);
            }
            (Some(session), _) => session,
        };
        match request {
            Request::Bets { first, batch, .. } => self.handle_bets(agency, first, &batch),
            Request::Finish { total, .. } => self.handle_finish(agency, total),
            Request::GetWinners { .. } => self.handle_get_winners(agency),
            // A HELLO never gets here: the session rules above answer it.
            Request::Hello { .. } => Ok(()),
        }
    }

    /// Refuses a message that breaks the session rules: UNAUTHORIZED, and the
    /// connection closes.
    fn refuse_session(&mut self, agency: u32, detail: &str) -> Next {
        warn!(
            "action: sesion | result: fail | peer: {} | agencia: {agency} | code: UNAUTHORIZED | error: {detail}",
            self.peer
        );
        self.outbox
            .reply(Reply::error(ErrorCode::Unauthorized, detail));
        Err(Ending::Refused)
    }

    /// Opens the session: the agency must take part; WELCOME says where its
    /// round stands, every bet it counts already on disk.
    fn handle_hello(&mut self, agency: u32, _token: &[u8]) -> Next {
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
            return Err(Ending::Refused);
        }
        let (stored, finished) = self.store.durable_state(agency);
        let status = if self.lottery.is_drawn() {
            AgencyStatus::Drawn
        } else if finished {
            AgencyStatus::Finished
        } else {
            AgencyStatus::Sending
        };
        debug!(
            "action: saludo | result: success | peer: {} | agencia: {agency} | almacenadas: {stored} | estado: {}",
            self.peer, status as u8
        );
        self.session = Some(agency);
        self.outbox.reply(Reply::Welcome {
            // An agency's bets are numbered by a u32, so its count fits one.
            stored: u32::try_from(stored).unwrap_or(u32::MAX),
            status,
        });
        Ok(())
    }

    fn refuse_batch(&mut self, agency: u32, count: usize, code: ErrorCode, detail: &str) -> Next {
        warn!(
            "action: apuesta_recibida | result: fail | cantidad: {count} | agencia: {agency} | peer: {} | code: {} | error: {detail}",
            self.peer,
            code.name()
        );
        self.outbox.reply(Reply::error(code, detail));
        Ok(())
    }

    fn handle_bets(&mut self, agency: u32, first: u32, batch: &BetBatch) -> Next {
        let count = batch.len();
        let today = Date::today_utc();
        let mut bets: Vec<ValidBet<'_>> = Vec::with_capacity(count);
        for (index, bet) in batch.bets().enumerate() {
            match BetRef::validate(bet, today) {
                Ok(valid) => bets.push(valid),
                Err(reason) => {
                    let detail = format!("bet at index {index} (counting from 0): {reason}");
                    return self.refuse_batch(agency, count, ErrorCode::InvalidBet, &detail);
                }
            }
        }
        let appended = match self.store.append_batch(agency, u64::from(first), &bets) {
            Ok(Append::Stored(appended)) => appended,
            Ok(Append::AlreadyStored(appended)) => {
                debug!(
                    "action: apuesta_repetida | result: success | cantidad: {count} | agencia: {agency} | primera: {first}"
                );
                self.outbox.ack(PendingAck {
                    appended,
                    agency,
                    count: u16::try_from(count).unwrap_or(u16::MAX),
                    repeated: true,
                });
                return Ok(());
            }
            Ok(Append::OutOfOrder { expected }) => {
                let detail = format!(
                    "this batch starts at bet {first}, but agency {agency} has {expected} bets \
                     stored; nothing of it was stored: resume from bet {expected} (a HELLO on a \
                     new connection says where)"
                );
                return self.refuse_batch(agency, count, ErrorCode::OutOfOrder, &detail);
            }
            Ok(Append::Finished) => {
                let detail = format!(
                    "agency {agency} already sent FINISH; its bets are closed and this batch was not stored"
                );
                return self.refuse_batch(agency, count, ErrorCode::AgencyFinished, &detail);
            }
            Err(e) => {
                return self.refuse_batch(agency, count, ErrorCode::Storage, &storage_detail(&e));
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
            repeated: false,
        });
        Ok(())
    }

    fn handle_finish(&mut self, agency: u32, total: u32) -> Next {
        // This agency's batches are acknowledged before its FINISH is.
        self.send_outbox()?;
        match self.store.record_finish(agency, u64::from(total)) {
            Ok(Finish::Recorded { first_time }) => {
                let outcome = self.lottery.record_finished(agency);
                info!(
                    "action: agencia_finalizo | result: success | agencia: {agency} | total_agencias_finalizadas: {} | de: {} | faltan: {}{}",
                    outcome.finished_count,
                    self.lottery.agencies(),
                    outcome.missing,
                    if first_time { "" } else { " | repetido: true" }
                );
                self.outbox.reply(Reply::FinishAck { agency });
                self.send_outbox()?;
                self.hold_draw_if_due();
            }
            Ok(Finish::Mismatch { stored }) => {
                let detail = format!(
                    "FINISH says agency {agency} sent {total} bets, but {stored} of its bets are \
                     stored; nothing was recorded: send the missing bets, or FINISH with {stored}"
                );
                warn!(
                    "action: agencia_finalizo | result: fail | agencia: {agency} | peer: {} | code: COUNT_MISMATCH | error: {detail}",
                    self.peer
                );
                self.outbox
                    .reply(Reply::error(ErrorCode::CountMismatch, &detail));
            }
            Err(e) => {
                error!("action: agencia_finalizo | result: fail | agencia: {agency} | error: {e}");
                let detail = format!(
                    "the FINISH was not recorded: {e}; nothing was kept, send it again later"
                );
                self.outbox.reply(Reply::error(ErrorCode::Storage, &detail));
            }
        }
        Ok(())
    }

    /// Holds the draw if every agency has finished and it is due (the first
    /// time, or again after a failure).
    fn hold_draw_if_due(&self) {
        if self.lottery.claim_draw() {
            let store = Arc::clone(&self.store);
            self.lottery
                .hold_draw(|| draw::compute_winners(store.path(), &store.reader()?));
        }
    }

    fn handle_get_winners(&mut self, agency: u32) -> Next {
        // Nothing owed waits while this request waits on the draw.
        self.send_outbox()?;
        self.hold_draw_if_due();
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
                let detail = format!(
                    "the draw could not read the stored bets: {reason}; it is tried again, ask again later"
                );
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
