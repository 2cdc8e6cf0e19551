//! One connection's handler: reads requests, answers each in order.
//!
//! Every answer goes through the `Outbox`, in the order the requests came:
//! a batch's ack waits there for the disk (`BetStore::sync`), and any reply
//! queued after it goes out after it, so a reply can never overtake an ack the
//! connection owes. The handler sends the outbox when it is about to wait (for
//! input, or on the draw) and when it holds `MAX_PENDING_BATCHES` acks: batches
//! that arrive together are made durable by one shared `fsync` (see `storage`),
//! and a client with several batches in flight pays for one disk flush, not one per batch.

use crate::app::shutdown::Shutdown;
use crate::bet::calendar::Date;
use crate::bet::{BetRef, ValidBet};
use crate::net::connection::{Connection, ConnectionError, Fill};
use crate::server::auth::Access;
use crate::server::limits::{LogLimiter, Registry, suppressed_note};
use crate::server::lottery::{Lottery, WinnersAnswer};
use crate::storage::{Append, Appended, BetStore, Finish, StorageError};
use crate::wire::digest::Digest;
use crate::wire::{self, AgencyStatus, BetBatch, ErrorCode, ProtocolError, Reply, Request};
use log::{debug, error, info, log_enabled, warn};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// What every handler shares: the round, who may speak, and the limits.
pub(crate) struct Context {
    pub lottery: Lottery,
    pub store: Arc<BetStore>,
    pub access: Access,
    pub registry: Arc<Registry>,
    pub log_limiter: LogLimiter,
    /// The longest a connection waits on the draw, over all its GET_WINNERS.
    pub draw_wait: Duration,
    /// How long a new connection has to complete HELLO (TLS handshake included).
    pub hello_timeout: Duration,
}

/// Refused requests in a row (bad bets, out of order, ...) after which the
/// connection is closed: its peer is not listening to the answers.
const MAX_REFUSED_IN_A_ROW: u32 = 8;

/// Serves one connection.
pub(crate) struct Handler {
    id: u64,
    conn: Connection,
    peer: SocketAddr,
    context: Arc<Context>,
    shutdown: Shutdown,
    accepted_at: Instant,
    /// The agency this connection speaks for, once its HELLO is accepted.
    session: Option<u32>,
    /// What is left of this connection's time to wait on the draw.
    draw_wait_left: Duration,
    refused_in_a_row: u32,
    outbox: Outbox,
}

impl Handler {
    pub fn new(
        id: u64,
        conn: Connection,
        peer: SocketAddr,
        context: Arc<Context>,
        shutdown: Shutdown,
    ) -> Handler {
        Handler {
            id,
            conn,
            peer,
            draw_wait_left: context.draw_wait,
            context,
            shutdown,
            accepted_at: Instant::now(),
            session: None,
            refused_in_a_row: 0,
            outbox: Outbox::default(),
        }
    }

    /// Serves the connection until it ends.
    pub fn run(mut self) {
        debug!("action: conexion | result: success | peer: {}", self.peer);
        let ending = if self.context.access.serves(self.peer.ip()) {
            match self.serve() {
                Ok(()) => Ending::PeerClosed,
                Err(ending) => ending,
            }
        } else {
            self.refuse_remote_peer()
        };
        if matches!(ending, Ending::ShuttingDown) {
            self.outbox.reply(Reply::error(
                ErrorCode::ShuttingDown,
                "the server is stopping",
            ));
        }
        // Whatever is still owed goes out; the peer may be gone.
        let _ = self.send_outbox();
        self.conn.close();
        debug!(
            "action: conexion_cerrada | result: success | peer: {} | reason: {}",
            self.peer,
            ending.name()
        );
    }

    /// The end of a log line about this peer's refused request, or `None` when
    /// the peer has had its share of the log for now.
    fn may_log(&self) -> Option<String> {
        self.context
            .log_limiter
            .allow(self.peer.ip())
            .map(suppressed_note)
    }

    /// A peer off this machine, and no tokens to tell who it is: UNAUTHORIZED,
    /// without reading anything it sent (inside TLS, once the handshake is done).
    fn refuse_remote_peer(&mut self) -> Ending {
        let detail = "this server has no SERVER_TOKENS_FILE, so it serves only peers on its own \
                      machine; give the server a SERVER_TOKENS_FILE, and each agency its CLI_TOKEN";
        if let Some(note) = self.may_log() {
            warn!(
                "action: acceso | result: fail | peer: {} | code: UNAUTHORIZED | error: not a loopback peer, and no tokens{note}",
                self.peer
            );
        }
        if self.conn.complete_handshake(self.hello_deadline()).is_ok() {
            self.outbox
                .reply(Reply::error(ErrorCode::Unauthorized, detail));
        }
        Ending::Refused
    }

    /// When the connection must have completed HELLO.
    fn hello_deadline(&self) -> Instant {
        self.accepted_at + self.context.hello_timeout
    }

    fn serve(&mut self) -> Next {
        loop {
            if self.shutdown.is_triggered() {
                return Err(Ending::ShuttingDown);
            }
            match self.conn.next_buffered_request(self.session.is_none()) {
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
        let sent = self
            .outbox
            .send(&mut self.conn, &self.context.store, self.peer);
        sent.map_err(|e| {
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
        if let Some(note) = self.may_log() {
            warn!(
                "action: mensaje_invalido | result: fail | peer: {} | code: {} | error: {e}{note}",
                self.peer,
                e.code().name()
            );
        }
        self.outbox.reply(Reply::error(e.code(), &e.to_string()));
        Ending::Refused
    }

    /// Nothing whole is buffered: take in what is already on the socket while
    /// acks are owed; otherwise send what is owed and block for more, until
    /// the idle deadline (or, before HELLO, the HELLO deadline).
    fn wait_for_input(&mut self) -> Next {
        if self.outbox.acks > 0 && matches!(self.conn.fill(None), Ok(Fill::Data)) {
            return Ok(());
        }
        self.send_outbox()?;
        let idle = self.conn.idle_deadline();
        let deadline = match self.session {
            Some(_) => idle,
            None => idle.min(self.hello_deadline()),
        };
        let handshaking = self.conn.is_handshaking();
        match self.conn.fill(Some(deadline)) {
            Ok(Fill::Data | Fill::Nothing) => Ok(()),
            Ok(Fill::Closed) if self.shutdown.is_triggered() => Err(Ending::ShuttingDown),
            Ok(Fill::Closed) => Err(Ending::PeerClosed),
            Err(ConnectionError::Protocol(e)) => Err(self.refuse_message(&e)),
            Err(_) if self.shutdown.is_triggered() => Err(Ending::ShuttingDown),
            Err(ConnectionError::TimedOut { .. }) => {
                if let Some(note) = self.may_log() {
                    let waited = Instant::now().saturating_duration_since(self.accepted_at);
                    match self.session {
                        None => info!(
                            "action: conexion_inactiva | result: fail | peer: {} | waited_ms: {} | bytes_descartados: {} | detail: no HELLO within SERVER_HELLO_TIMEOUT_MS{note}",
                            self.peer,
                            waited.as_millis(),
                            self.conn.buffered()
                        ),
                        Some(agency) => info!(
                            "action: conexion_inactiva | result: fail | peer: {} | agencia: {agency} | idle_ms: {} | bytes_descartados: {}{note}",
                            self.peer,
                            self.conn.idle_timeout().as_millis(),
                            self.conn.buffered()
                        ),
                    }
                }
                Err(Ending::Failed)
            }
            Err(e) => {
                if let Some(note) = self.may_log() {
                    if handshaking {
                        warn!(
                            "action: tls | result: fail | peer: {} | error: {e} | detail: the TLS handshake failed; does the peer speak TLS (the client needs CLI_TLS_CA)?{note}",
                            self.peer
                        );
                    } else {
                        info!(
                            "action: conexion_cortada | result: fail | peer: {} | error: {e}{note}",
                            self.peer
                        );
                    }
                }
                Err(Ending::Failed)
            }
        }
    }

    /// Counts a refused request; too many in a row close the connection.
    fn refused(&mut self) -> Next {
        self.refused_in_a_row += 1;
        if self.refused_in_a_row < MAX_REFUSED_IN_A_ROW {
            return Ok(());
        }
        if let Some(note) = self.may_log() {
            warn!(
                "action: conexion_cerrada | result: fail | peer: {} | detail: {MAX_REFUSED_IN_A_ROW} refused requests in a row{note}",
                self.peer
            );
        }
        Err(Ending::Refused)
    }

    /// Answers one request: the session rules first (HELLO opens it, every
    /// later message speaks for its agency), then the request itself.
    fn handle(&mut self, request: Request) -> Next {
        let agency = match (self.session, &request) {
            (None, Request::Hello { agency, token, .. }) => {
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
            Request::Finish { total, digest, .. } => self.handle_finish(agency, total, digest),
            Request::GetWinners { .. } => self.handle_get_winners(agency),
            // A HELLO never gets here: the session rules above answer it.
            Request::Hello { .. } => Ok(()),
        }
    }

    /// Refuses a message that breaks the session rules: UNAUTHORIZED, and the
    /// connection closes.
    fn refuse_session(&mut self, agency: u32, detail: &str) -> Next {
        if let Some(note) = self.may_log() {
            warn!(
                "action: sesion | result: fail | peer: {} | agencia: {agency} | code: UNAUTHORIZED | error: {detail}{note}",
                self.peer
            );
        }
        self.outbox
            .reply(Reply::error(ErrorCode::Unauthorized, detail));
        Err(Ending::Refused)
    }

    /// Opens the session: the agency must take part; WELCOME says where its
    /// round stands, every bet it counts already on disk.
    fn handle_hello(&mut self, agency: u32, token: &[u8]) -> Next {
        let lottery = &self.context.lottery;
        if !lottery.knows_agency(agency) {
            let detail = format!(
                "agency {agency} is not taking part; agencies are numbered 1 to {}",
                lottery.agencies()
            );
            if let Some(note) = self.may_log() {
                warn!(
                    "action: agencia_desconocida | result: fail | peer: {} | agencia: {agency} | error: {detail}{note}",
                    self.peer
                );
            }
            self.outbox
                .reply(Reply::error(ErrorCode::UnknownAgency, &detail));
            return Err(Ending::Refused);
        }
        if !self.context.access.accepts(agency, token) {
            // The token is never logged, right or wrong.
            if let Some(note) = self.may_log() {
                warn!(
                    "action: saludo | result: fail | peer: {} | agencia: {agency} | code: UNAUTHORIZED | error: a wrong or missing token{note}",
                    self.peer
                );
            }
            let detail = format!(
                "the token given for agency {agency} is not its token; set CLI_TOKEN to the \
                 agency's line of the server's SERVER_TOKENS_FILE"
            );
            self.outbox
                .reply(Reply::error(ErrorCode::Unauthorized, &detail));
            return Err(Ending::Refused);
        }
        if let Err(open) = self.context.registry.authenticate(self.id, agency) {
            if let Some(note) = self.may_log() {
                warn!(
                    "action: conexion_rechazada | result: fail | peer: {} | agencia: {agency} | error: BUSY | detail: the agency already has {open} connections open{note}",
                    self.peer
                );
            }
            let detail = format!(
                "agency {agency} already has {open} connections open, as many as one agency may; \
                 close one, or retry later"
            );
            self.outbox.reply(Reply::error(ErrorCode::Busy, &detail));
            return Err(Ending::Refused);
        }
        let durable = self.context.store.durable_state(agency);
        let stored = durable.stored;
        let status = if self.context.lottery.is_drawn() {
            AgencyStatus::Drawn
        } else if durable.finished {
            AgencyStatus::Finished
        } else {
            AgencyStatus::Sending
        };
        debug!(
            "action: saludo | result: success | peer: {} | agencia: {agency} | almacenadas: {stored} | estado: {}",
            self.peer, status as u8
        );
        self.session = Some(agency);
        self.refused_in_a_row = 0;
        self.outbox.reply(Reply::Welcome {
            // An agency's bets are numbered by a u32, so its count fits one.
            stored: u32::try_from(stored).unwrap_or(u32::MAX),
            status,
            digest: durable.digest,
        });
        Ok(())
    }

    fn refuse_batch(&mut self, agency: u32, count: usize, code: ErrorCode, detail: &str) -> Next {
        if let Some(note) = self.may_log() {
            warn!(
                "action: apuesta_recibida | result: fail | cantidad: {count} | agencia: {agency} | peer: {} | code: {} | error: {detail}{note}",
                self.peer,
                code.name()
            );
        }
        self.outbox.reply(Reply::error(code, detail));
        // A disk that fails is the server's trouble, not a refusal of the peer.
        if code == ErrorCode::Storage {
            return Ok(());
        }
        self.refused()
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
        let appended = match self.context.store.append_batch(
            agency,
            u64::from(first),
            &bets,
            batch.body(),
        ) {
            Ok(Append::Stored(appended)) => appended,
            Ok(Append::AlreadyStored(appended)) => {
                self.refused_in_a_row = 0;
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
        self.refused_in_a_row = 0;
        self.outbox.ack(PendingAck {
            appended,
            agency,
            // The decoder read `count` from a u16, so it fits.
            count: u16::try_from(count).unwrap_or(u16::MAX),
            repeated: false,
        });
        Ok(())
    }

    fn handle_finish(&mut self, agency: u32, total: u32, digest: Digest) -> Next {
        // This agency's batches are acknowledged before its FINISH is.
        self.send_outbox()?;
        let recorded = self
            .context
            .store
            .record_finish(agency, u64::from(total), digest);
        match recorded {
            Ok(Finish::Recorded { first_time }) => {
                self.refused_in_a_row = 0;
                let outcome = self.context.lottery.record_finished(agency);
                info!(
                    "action: agencia_finalizo | result: success | agencia: {agency} | total_agencias_finalizadas: {} | de: {} | faltan: {} | recibo: {digest}{}",
                    outcome.finished_count,
                    self.context.lottery.agencies(),
                    outcome.missing,
                    if first_time { "" } else { " | repetido: true" }
                );
                self.outbox.reply(Reply::FinishAck { agency, digest });
                self.send_outbox()?;
                self.context.lottery.hold_draw_if_due(&self.context.store);
            }
            Ok(Finish::CountMismatch { stored }) => {
                let detail = format!(
                    "FINISH says agency {agency} sent {total} bets, but {stored} of its bets are \
                     stored; nothing was recorded: send the missing bets, or FINISH with {stored}"
                );
                return self.refuse_finish(agency, ErrorCode::CountMismatch, &detail);
            }
            Ok(Finish::DigestMismatch { stored }) => {
                let detail = format!(
                    "FINISH of agency {agency} carries digest {}, but the {total} bets stored \
                     for it have digest {}: the agency's file is not what it sent; nothing was \
                     recorded",
                    digest.short(),
                    stored.short()
                );
                return self.refuse_finish(agency, ErrorCode::DigestMismatch, &detail);
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

    /// Refuses a FINISH that does not match the stored bets: nothing recorded.
    fn refuse_finish(&mut self, agency: u32, code: ErrorCode, detail: &str) -> Next {
        if let Some(note) = self.may_log() {
            warn!(
                "action: agencia_finalizo | result: fail | agencia: {agency} | peer: {} | code: {} | error: {detail}{note}",
                self.peer,
                code.name()
            );
        }
        self.outbox.reply(Reply::error(code, detail));
        self.refused()
    }

    fn handle_get_winners(&mut self, agency: u32) -> Next {
        // Nothing owed waits while this request waits on the draw.
        self.send_outbox()?;
        self.context.lottery.hold_draw_if_due(&self.context.store);
        // One wait at a time, and no more in all than SERVER_DRAW_WAIT_MS: a
        // request already followed by others (pipelined) is answered at once.
        let wait = if self.conn.buffered() > 0 {
            Duration::ZERO
        } else {
            self.draw_wait_left
        };
        let waiting = Instant::now();
        let answer = self.context.lottery.wait_for_winners(wait);
        self.draw_wait_left = self.draw_wait_left.saturating_sub(waiting.elapsed());
        match answer {
            WinnersAnswer::Drawn(winners) => {
                let list = winners.of(agency);
                for reply in wire::winners_replies(&list.documents) {
                    self.outbox.reply(reply);
                }
                info!(
                    "action: ganadores_enviados | result: success | agencia: {agency} | cant_ganadores: {}",
                    list.count
                );
                self.refused_in_a_row = 0;
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
