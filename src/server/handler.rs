//! One connection's handler: reads requests, answers each in order.
//!
//! The loop reads a request, applies the session rules (HELLO first, then
//! every message for the same agency) and hands it to its kind's function
//! (`hello`, `bets`, `finish`, `winners`, one file each). A function either
//! serves the request or returns a `Refusal`, which `refuse` answers in one
//! place: the log line, the ERROR, and the count of refusals in a row.
//!
//! Every answer goes through the `Outbox`. The handler sends it when it is
//! about to wait (for input, or on the draw) and when it holds
//! `MAX_PENDING_BATCHES` acks: batches that arrive together are made durable
//! by one shared `fsync`, and a client with several batches in flight pays for
//! one disk flush, not one per batch.

use super::auth::Access;
use super::limits::{LogLimiter, Registry, suppressed_note};
use super::lottery::Lottery;
use super::outbox::Outbox;
use super::refusal::Refusal;
use crate::app::shutdown::Shutdown;
use crate::net::connection::{Connection, ConnectionError, Fill};
use crate::storage::{BetStore, RowBuffer};
use crate::wire::{ErrorCode, ProtocolError, Reply, Request};
use log::{debug, info, warn};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Batches a connection may append before it must stop reading and acknowledge them.
const MAX_PENDING_BATCHES: usize = 64;

/// Refused requests in a row (bad bets, out of order, ...) after which the
/// connection is closed: its peer is not listening to the answers.
const MAX_REFUSED_IN_A_ROW: u32 = 8;

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
pub(super) type Next = Result<(), Ending>;

/// How a request that was not refused went.
pub(super) enum Served {
    /// The peer made progress: its refusals in a row start again from zero.
    Progress,
    /// Answered without progress (the draw has not happened yet).
    Waiting,
}

/// Why a request's function stopped short of serving it.
pub(super) enum Stop {
    Refused(Refusal),
    Ending(Ending),
}

impl From<Refusal> for Stop {
    fn from(refusal: Refusal) -> Stop {
        Stop::Refused(refusal)
    }
}

impl From<Ending> for Stop {
    fn from(ending: Ending) -> Stop {
        Stop::Ending(ending)
    }
}

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

/// Serves one connection.
pub(crate) struct Handler {
    pub(super) id: u64,
    pub(super) conn: Connection,
    pub(super) peer: SocketAddr,
    pub(super) context: Arc<Context>,
    shutdown: Shutdown,
    accepted_at: Instant,
    /// The agency this connection speaks for, once its HELLO is accepted.
    pub(super) session: Option<u32>,
    /// What is left of this connection's time to wait on the draw.
    pub(super) draw_wait_left: Duration,
    refused_in_a_row: u32,
    pub(super) outbox: Outbox,
    /// Room for the rows of this connection's batches, kept between them.
    pub(super) rows: RowBuffer,
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
            rows: RowBuffer::default(),
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
            let Some(request) = self.next_request()? else {
                return Ok(());
            };
            self.handle(request)?;
            if self.outbox.acks() >= MAX_PENDING_BATCHES {
                self.send_outbox()?;
            }
        }
    }

    /// Sends everything owed; a failed write ends the connection.
    pub(super) fn send_outbox(&mut self) -> Next {
        let sent = self
            .outbox
            .send(&mut self.conn, &self.context.store, self.peer);
        self.stop_if_the_file_failed();
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

    /// Holds the draw if every agency has finished and nobody holds it yet; a
    /// shutdown stops it early.
    pub(super) fn hold_draw_if_due(&self) {
        let keep_going = || !self.shutdown.is_triggered();
        self.context
            .lottery
            .hold_draw_if_due(&self.context.store, &keep_going);
    }

    /// After a failed flush nothing more can be acknowledged: the server stops
    /// (its exit status says why), and a restart recovers from the disk.
    fn stop_if_the_file_failed(&self) {
        if self.context.store.poisoned().is_some() && !self.shutdown.is_triggered() {
            self.shutdown.trigger();
        }
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

    /// The next request: one already buffered; else, while acks are owed,
    /// what is already on the socket; else, with everything owed sent, what
    /// arrives by the idle deadline (or, before HELLO, the HELLO deadline).
    /// `None` when the peer closed between messages.
    fn next_request(&mut self) -> Result<Option<Request>, Ending> {
        let before_hello = self.session.is_none();
        loop {
            match self.conn.next_buffered_request(before_hello) {
                Ok(Some(request)) => return Ok(Some(request)),
                Ok(None) => {}
                Err(e) => return Err(self.refuse_message(&e)),
            }
            if self.outbox.acks() > 0 && matches!(self.conn.fill(None), Ok(Fill::Data)) {
                continue;
            }
            self.send_outbox()?;
            let deadline = match self.session {
                Some(_) => self.conn.idle_deadline(),
                None => self.conn.idle_deadline().min(self.hello_deadline()),
            };
            let handshaking = self.conn.is_handshaking();
            match self.conn.read_request(before_hello, deadline) {
                Ok(None) if self.shutdown.is_triggered() => return Err(Ending::ShuttingDown),
                Ok(request) => return Ok(request),
                Err(ConnectionError::Protocol(e)) => return Err(self.refuse_message(&e)),
                Err(_) if self.shutdown.is_triggered() => return Err(Ending::ShuttingDown),
                Err(e) => return Err(self.broken(&e, handshaking)),
            }
        }
    }

    /// Logs a connection that idled out or failed (a TLS handshake, a reset).
    fn broken(&self, e: &ConnectionError, handshaking: bool) -> Ending {
        let Some(note) = self.may_log() else {
            return Ending::Failed;
        };
        let peer = self.peer;
        match (e, self.session) {
            (ConnectionError::TimedOut { .. }, None) => info!(
                "action: conexion_inactiva | result: fail | peer: {peer} | waited_ms: {} | bytes_descartados: {} | detail: no HELLO within SERVER_HELLO_TIMEOUT_MS{note}",
                Instant::now()
                    .saturating_duration_since(self.accepted_at)
                    .as_millis(),
                self.conn.buffered()
            ),
            (ConnectionError::TimedOut { .. }, Some(agency)) => info!(
                "action: conexion_inactiva | result: fail | peer: {peer} | agencia: {agency} | idle_ms: {} | bytes_descartados: {}{note}",
                self.conn.idle_timeout().as_millis(),
                self.conn.buffered()
            ),
            _ if handshaking => warn!(
                "action: tls | result: fail | peer: {peer} | error: {e} | detail: the TLS handshake failed; does the peer speak TLS (the client needs CLI_TLS_CA)?{note}"
            ),
            _ => info!("action: conexion_cortada | result: fail | peer: {peer} | error: {e}{note}"),
        }
        Ending::Failed
    }

    /// Answers one request.
    fn handle(&mut self, request: Request) -> Next {
        let agency = request.agency();
        let answered = self.answer(agency, &request);
        // Parsing comes before every other refusal, and a batch's text is
        // checked for UTF-8 only here: a batch whose bets all pass the rules is
        // UTF-8 already (names by their rule, the rest as ASCII digits and dates).
        if let (Err(Stop::Refused(_)), Request::Bets { batch, .. }) = (&answered, &request)
            && let Err(e) = batch.check_text()
        {
            return Err(self.refuse_message(&e));
        }
        match answered {
            Ok(Served::Progress) => {
                self.refused_in_a_row = 0;
                Ok(())
            }
            Ok(Served::Waiting) => Ok(()),
            Err(Stop::Ending(ending)) => Err(ending),
            Err(Stop::Refused(refusal)) => self.refuse(agency, refusal),
        }
    }

    /// The session rules first (HELLO opens it, every later message speaks for
    /// its agency), then the request itself.
    fn answer(&mut self, agency: u32, request: &Request) -> Result<Served, Stop> {
        match (self.session, request) {
            (None, Request::Hello { agency, token, .. }) => self.hello(*agency, token),
            (None, _) => Err(Stop::Refused(Refusal::Session {
                detail: "the connection must start with HELLO naming its agency".into(),
            })),
            (Some(session), Request::Hello { .. }) => Err(Stop::Refused(Refusal::Session {
                detail: format!(
                    "this connection already sent HELLO for agency {session}; open a new \
                     connection for another HELLO (agency {agency})"
                ),
            })),
            (Some(session), _) if agency != session => Err(Stop::Refused(Refusal::Session {
                detail: format!(
                    "this connection speaks for agency {session}, not for agency {agency}"
                ),
            })),
            (Some(_), Request::Bets { first, batch, .. }) => self.bets(agency, *first, batch),
            (Some(_), Request::Finish { total, digest, .. }) => {
                self.finish(agency, *total, *digest)
            }
            (Some(_), Request::GetWinners { .. }) => self.winners(agency),
        }
    }

    /// Answers a refusal: its log line (within the peer's share of the log),
    /// its ERROR, and the connection closed when the code says so or when the
    /// peer has been refused `MAX_REFUSED_IN_A_ROW` times in a row.
    fn refuse(&mut self, agency: u32, refusal: Refusal) -> Next {
        let note = match refusal.always_logged() {
            true => Some(String::new()),
            false => self.may_log(),
        };
        refusal.log(self.peer, agency, note.as_deref());
        let code = refusal.code();
        self.outbox
            .reply(Reply::error(code, &refusal.detail(agency)));
        if code.closes_connection() {
            return Err(Ending::Refused);
        }
        if !refusal.is_the_peers() {
            self.stop_if_the_file_failed();
            return Ok(());
        }
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
}
