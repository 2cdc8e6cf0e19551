//! One agency: its CSV rows become batches of bets, then FINISH, then the winners.
//!
//! `Agency::run` streams the agency file (`agency_file`, one buffer, rows
//! borrowed from it), checks each row with the same rules as the server (`bet`), packs the
//! valid ones into BETS messages of at most 8192 bytes and sends them on one
//! connection, keeping up to `batches_in_flight` batches ahead of their acks and
//! writing a refilled window with one system call. A row
//! that fails is logged with its line number, skipped and counted. After FINISH
//! and its ack the connection is closed, and the winners are asked for on a new
//! connection per attempt until the draw has happened or the timeout passes.
//!
//! A server at its connection limit answers ERROR BUSY and closes before it
//! reads anything, so nothing sent on that connection was stored: the agency
//! connects again and sends its file from the start, after a pause that grows
//! with each refusal in a row (`busy_pause`).

use crate::agency_file::AgencyFile;
use crate::bet::{BetRef, Date};
use crate::config::ClientConfig;
use crate::connection::{self, Connection, ConnectionError};
use crate::protocol::{self, ErrorCode, Reply, Request};
use crate::shutdown::Shutdown;
use log::{debug, info, warn};
use std::cell::Cell;
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::{Shutdown as SocketShutdown, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Longest single sleep while waiting, so a signal is noticed promptly.
const SLEEP_SLICE_MS: u64 = 50;

/// How far the pause after repeated BUSY refusals grows: the retry interval
/// doubled at most this many times ...
const BUSY_DOUBLINGS: u32 = 5;
/// ... and never past this (unless the retry interval itself is longer).
const BUSY_PAUSE_CAP: Duration = Duration::from_secs(5);

/// Why the agency could not complete its run.
#[derive(Debug)]
pub enum ClientError {
    /// The agency file could not be opened or read.
    DataFile { path: PathBuf, reason: String },
    /// No connection to the server within the timeout.
    Connect {
        address: String,
        waited: Duration,
        reason: String,
    },
    /// The connection failed while `during`.
    Connection {
        during: &'static str,
        source: ConnectionError,
    },
    /// The server closed the connection while `during`.
    ServerClosed { during: &'static str },
    /// The server answered with an ERROR.
    Refused {
        during: &'static str,
        code: ErrorCode,
        detail: String,
    },
    /// The server answered with a message that does not fit the exchange.
    UnexpectedReply { during: &'static str, reply: String },
    /// The draw did not happen within the timeout.
    DrawTimeout { waited: Duration },
    /// SIGTERM or SIGINT arrived.
    Interrupted,
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::DataFile { path, reason } => write!(
                f,
                "could not read the agency file {}: {reason}; check CLI_DATA_FILE",
                path.display()
            ),
            ClientError::Connect {
                address,
                waited,
                reason,
            } => write!(
                f,
                "could not connect to the server at {address} within {} s: {reason}; \
                 is the server running, and is CLI_SERVER_ADDRESS right?",
                waited.as_secs()
            ),
            ClientError::Connection { during, source } => {
                write!(f, "the connection failed while {during}: {source}")
            }
            ClientError::ServerClosed { during } => write!(
                f,
                "the server closed the connection while {during}; it may have stopped or crashed"
            ),
            ClientError::Refused {
                during,
                code,
                detail,
            } => write!(f, "the server refused while {during}: {code}: {detail}"),
            ClientError::UnexpectedReply { during, reply } => {
                write!(f, "unexpected reply while {during}: {reply}")
            }
            ClientError::DrawTimeout { waited } => write!(
                f,
                "the draw did not happen within {} s (CLI_TIMEOUT_S); have all agencies finished?",
                waited.as_secs()
            ),
            ClientError::Interrupted => write!(f, "stopped by a signal"),
        }
    }
}

impl std::error::Error for ClientError {}

impl ClientError {
    /// Whether the server refused the connection for being at its limit.
    fn is_busy(&self) -> bool {
        matches!(
            self,
            ClientError::Refused {
                code: ErrorCode::Busy,
                ..
            }
        )
    }

    /// Whether a query that failed this way may simply be asked again: the
    /// connection was lost or refused as BUSY.
    fn worth_asking_again(&self) -> bool {
        self.is_busy()
            || matches!(
                self,
                ClientError::Connection { .. } | ClientError::ServerClosed { .. }
            )
    }
}

/// What a completed run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Bets the server acknowledged.
    pub bets_sent: u64,
    /// Rows refused by validation and not sent.
    pub invalid_rows: u64,
    /// The agency's winning documents.
    pub winners: Vec<String>,
}

/// A batch being packed: its bets already encoded as a BETS body.
struct Batch {
    body: Vec<u8>,
    count: usize,
}

/// One agency's run against the server.
pub struct Agency {
    config: ClientConfig,
    shutdown: Shutdown,
    /// The socket in use, so a signal can shut it and end a blocked read.
    current: Arc<Mutex<Option<TcpStream>>>,
    /// Bytes written to the server so far, for the summary line (those of
    /// connections refused BUSY included).
    bytes_sent: Cell<u64>,
    /// Replies other than ERROR read on the connection in use: a BUSY is only a
    /// refusal of the whole connection (safe to send again) while this is 0.
    answers_on_connection: Cell<u64>,
    /// State of the generator that spreads the pauses after BUSY.
    jitter: Cell<u64>,
}

impl Agency {
    /// An agency with `config`, stopped early when `shutdown` is triggered.
    pub fn new(config: ClientConfig, shutdown: Shutdown) -> Agency {
        Agency {
            config,
            shutdown,
            current: Arc::new(Mutex::new(None)),
            bytes_sent: Cell::new(0),
            answers_on_connection: Cell::new(0),
            jitter: Cell::new(jitter_seed()),
        }
    }

    /// Returns a function that stops the run from another thread: it sets the
    /// shutdown flag and shuts the socket in use, if any.
    pub fn stopper(&self) -> impl Fn() + Send + 'static {
        let shutdown = self.shutdown.clone();
        let current = Arc::clone(&self.current);
        move || {
            shutdown.trigger();
            if let Some(stream) = current
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
            {
                let _ = stream.shutdown(SocketShutdown::Both);
            }
        }
    }

    /// Sends every valid bet, FINISH, and waits for the winners.
    pub fn run(&self) -> Result<Summary, ClientError> {
        let (bets_sent, invalid_rows) = self.send_file()?;
        let winners = self.ask_for_winners()?;
        info!(
            "action: consulta_ganadores | result: success | cant_ganadores: {}",
            winners.len()
        );
        Ok(Summary {
            bets_sent,
            invalid_rows,
            winners,
        })
    }

    /// Sends the agency file's bets and FINISH on one connection. A connection
    /// the server refuses with BUSY is tried again, from the start of the file,
    /// until the timeout.
    fn send_file(&self) -> Result<(u64, u64), ClientError> {
        let deadline = Instant::now() + self.config.timeout;
        let mut refusals = 0;
        loop {
            let mut reader =
                AgencyFile::open(&self.config.data_file).map_err(|e| ClientError::DataFile {
                    path: self.config.data_file.clone(),
                    reason: e.to_string(),
                })?;
            let mut conn = self.connect(deadline)?;
            let attempt = self.send_bets(&mut reader, &mut conn).and_then(|sent| {
                let (bets_sent, invalid_rows) = sent;
                info!(
                    "action: apuestas_enviadas | result: success | cantidad: {bets_sent} | invalidas: {invalid_rows} | bytes: {}",
                    self.bytes_sent.get()
                );
                self.finish(&mut conn)?;
                Ok(sent)
            });
            let refused_whole = self.answers_on_connection.get() == 0;
            drop(conn);
            self.forget_stream();
            match attempt {
                Err(e) if e.is_busy() && refused_whole && Instant::now() < deadline => {
                    refusals += 1;
                    let pause = self.busy_pause(refusals);
                    warn!(
                        "action: conectar | result: in_progress | error: {e}; sending the file again in {} ms",
                        pause.as_millis()
                    );
                    self.sleep(pause.min(deadline - Instant::now()))?;
                }
                attempt => return attempt,
            }
        }
    }

    /// The pause after the `refusals`-th BUSY in a row (see `busy_pause`).
    fn busy_pause(&self, refusals: u32) -> Duration {
        // xorshift64: cheap, and enough to spread agencies apart.
        let mut state = self.jitter.get();
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        self.jitter.set(state);
        busy_pause(self.config.retry_interval, refusals, state)
    }

    /// Connects, retrying every retry interval until `deadline`.
    fn connect(&self, deadline: Instant) -> Result<Connection, ClientError> {
        let started = Instant::now();
        loop {
            if self.shutdown.is_triggered() {
                return Err(ClientError::Interrupted);
            }
            let error = match TcpStream::connect(self.config.server_address.as_str()) {
                Ok(stream) => {
                    let clone = stream.try_clone();
                    let conn = Connection::new(
                        stream,
                        connection::CLIENT_READ_BUFFER_LEN,
                        self.config.timeout,
                    );
                    match (conn, clone) {
                        (Ok(conn), Ok(clone)) => {
                            *self.current.lock().unwrap_or_else(PoisonError::into_inner) =
                                Some(clone);
                            self.answers_on_connection.set(0);
                            // A signal that arrived just before the socket was registered.
                            if self.shutdown.is_triggered() {
                                return Err(ClientError::Interrupted);
                            }
                            return Ok(conn);
                        }
                        (Err(e), _) | (_, Err(e)) => e,
                    }
                }
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(ClientError::Connect {
                    address: self.config.server_address.clone(),
                    waited: started.elapsed(),
                    reason: error.to_string(),
                });
            }
            debug!(
                "action: conectar | result: in_progress | address: {} | error: {error}",
                self.config.server_address
            );
            self.sleep(self.config.retry_interval.min(deadline - Instant::now()))?;
        }
    }

    fn forget_stream(&self) {
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Sleeps in short slices, ending early with `Interrupted` on a signal.
    fn sleep(&self, total: Duration) -> Result<(), ClientError> {
        let end = Instant::now() + total;
        loop {
            if self.shutdown.is_triggered() {
                return Err(ClientError::Interrupted);
            }
            let now = Instant::now();
            if now >= end {
                return Ok(());
            }
            std::thread::sleep((end - now).min(Duration::from_millis(SLEEP_SLICE_MS)));
        }
    }

    /// Maps a failed read or write: a signal explains it first.
    fn connection_error(&self, during: &'static str, source: ConnectionError) -> ClientError {
        if self.shutdown.is_triggered() {
            ClientError::Interrupted
        } else {
            ClientError::Connection { during, source }
        }
    }

    fn read_reply(
        &self,
        conn: &mut Connection,
        during: &'static str,
    ) -> Result<Reply, ClientError> {
        match conn.read_reply() {
            Ok(Some(reply)) => self.answer(reply, during),
            Ok(None) if self.shutdown.is_triggered() => Err(ClientError::Interrupted),
            Ok(None) => Err(ClientError::ServerClosed { during }),
            Err(e) => Err(self.connection_error(during, e)),
        }
    }

    /// A reply read on the connection in use: an ERROR becomes `Refused`, any
    /// other reply is counted as an answer.
    fn answer(&self, reply: Reply, during: &'static str) -> Result<Reply, ClientError> {
        let reply = refusal_as_error(reply, during)?;
        self.answers_on_connection
            .set(self.answers_on_connection.get() + 1);
        Ok(reply)
    }

    /// Queues a message; it goes out with the next `flush`.
    fn queue(&self, conn: &mut Connection, bytes: &[u8]) {
        conn.queue_bytes(bytes);
        self.bytes_sent
            .set(self.bytes_sent.get() + bytes.len() as u64);
    }

    /// Writes everything queued. When the server closed the connection, the
    /// ERROR it sent before closing (BUSY comes before anything is read) says
    /// more than the failed write, so it is read and returned when it is there.
    fn flush(&self, conn: &mut Connection, during: &'static str) -> Result<(), ClientError> {
        let Err(error) = conn.flush() else {
            return Ok(());
        };
        let closed_by_peer = matches!(
            error.kind(),
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
        );
        if closed_by_peer
            && !self.shutdown.is_triggered()
            && let Ok(Some(reply @ Reply::Error { .. })) = conn.read_reply()
        {
            return refusal_as_error(reply, during).map(|_| ());
        }
        Err(self.connection_error(during, ConnectionError::Io(error)))
    }

    fn send(
        &self,
        conn: &mut Connection,
        bytes: &[u8],
        during: &'static str,
    ) -> Result<(), ClientError> {
        self.queue(conn, bytes);
        self.flush(conn, during)
    }

    /// Streams the file into batches; returns (bets acknowledged, rows refused).
    fn send_bets(
        &self,
        reader: &mut AgencyFile,
        conn: &mut Connection,
    ) -> Result<(u64, u64), ClientError> {
        let today = Date::today_utc();
        let max_count = self
            .config
            .batch_max_amount
            .unwrap_or(usize::from(u16::MAX));
        let mut batch = Batch {
            body: Vec::with_capacity(protocol::MAX_BETS_BODY_LEN),
            count: 0,
        };
        let mut encoded = Vec::with_capacity(1024);
        let mut awaiting_ack: VecDeque<usize> = VecDeque::new();
        let (mut acked, mut invalid) = (0u64, 0u64);
        // Rows (empty lines skipped, as csv skips them) are counted here. A row is
        // one line in any well-formed agency file.
        let mut line: u64 = 0;
        loop {
            if self.shutdown.is_triggered() {
                return Err(ClientError::Interrupted);
            }
            let row = reader.next_row().map_err(|e| ClientError::DataFile {
                path: self.config.data_file.clone(),
                reason: e.to_string(),
            })?;
            let Some(row) = row else {
                break;
            };
            line += 1;
            let bet = match BetRef::from_agency_row(&row, today) {
                Ok(bet) => bet,
                Err(e) => {
                    warn!("action: apuesta_invalida | result: fail | linea: {line} | error: {e}");
                    invalid += 1;
                    continue;
                }
            };
            encoded.clear();
            if let Err(e) = protocol::encode_bet(bet, &mut encoded) {
                warn!("action: apuesta_invalida | result: fail | linea: {line} | error: {e}");
                invalid += 1;
                continue;
            }
            if batch.count > 0
                && (batch.count == max_count
                    || batch.body.len() + encoded.len() > protocol::MAX_BETS_BODY_LEN)
            {
                acked += self.send_batch(conn, &mut batch, &mut awaiting_ack)?;
            }
            batch.body.extend_from_slice(&encoded);
            batch.count += 1;
        }
        if batch.count > 0 {
            acked += self.send_batch(conn, &mut batch, &mut awaiting_ack)?;
        }
        self.flush(conn, SENDING_BATCHES)?;
        while !awaiting_ack.is_empty() {
            acked += self.take_ack(conn, &mut awaiting_ack, true)?.unwrap_or(0);
        }
        Ok((acked, invalid))
    }

    /// Queues a batch. When `batches_in_flight` are already unacknowledged, first
    /// sends everything queued in one write, waits for the oldest ack and takes
    /// every ack that arrived with it: the window then refills with several
    /// batches per write, and the server reads several per system call.
    fn send_batch(
        &self,
        conn: &mut Connection,
        batch: &mut Batch,
        awaiting_ack: &mut VecDeque<usize>,
    ) -> Result<u64, ClientError> {
        let mut acked = 0;
        if awaiting_ack.len() >= self.config.batches_in_flight {
            self.flush(conn, SENDING_BATCHES)?;
            acked += self.take_ack(conn, awaiting_ack, true)?.unwrap_or(0);
            while let Some(count) = self.take_ack(conn, awaiting_ack, false)? {
                acked += count;
            }
        }
        let count = u16::try_from(batch.count).unwrap_or(u16::MAX);
        let message =
            protocol::encode_bets_message(self.config.id, count, &batch.body).map_err(|e| {
                ClientError::UnexpectedReply {
                    during: "packing a batch",
                    reply: e.to_string(),
                }
            })?;
        self.queue(conn, &message);
        debug!(
            "action: apuesta_enviada | result: in_progress | cantidad: {}",
            batch.count
        );
        awaiting_ack.push_back(batch.count);
        batch.body.clear();
        batch.count = 0;
        Ok(acked)
    }

    /// Takes the oldest unacknowledged batch's ack and returns its bet count.
    /// With `wait`, blocks for it; without, takes it only if it is already
    /// buffered (`None` otherwise, or when no batch awaits an ack).
    fn take_ack(
        &self,
        conn: &mut Connection,
        awaiting_ack: &mut VecDeque<usize>,
        wait: bool,
    ) -> Result<Option<u64>, ClientError> {
        const DURING: &str = "waiting for a batch's ack";
        let Some(&expected) = awaiting_ack.front() else {
            return Ok(None);
        };
        let reply = if wait {
            self.read_reply(conn, DURING)?
        } else {
            match conn.next_buffered_reply() {
                Ok(Some(reply)) => self.answer(reply, DURING)?,
                Ok(None) => return Ok(None),
                Err(e) => return Err(self.connection_error(DURING, e.into())),
            }
        };
        awaiting_ack.pop_front();
        match reply {
            Reply::BetsAck { count } if usize::from(count) == expected => {
                debug!("action: apuesta_enviada | result: success | cantidad: {count}");
                Ok(Some(u64::from(count)))
            }
            other => Err(ClientError::UnexpectedReply {
                during: DURING,
                reply: format!("{other:?} (expected BETS_ACK of {expected})"),
            }),
        }
    }

    fn finish(&self, conn: &mut Connection) -> Result<(), ClientError> {
        const DURING: &str = "sending FINISH";
        let agency = self.config.id;
        let bytes =
            Request::Finish { agency }
                .encode()
                .map_err(|e| ClientError::UnexpectedReply {
                    during: DURING,
                    reply: e.to_string(),
                })?;
        self.send(conn, &bytes, DURING)?;
        match self.read_reply(conn, DURING)? {
            Reply::FinishAck { agency: acked } if acked == agency => {
                info!("action: finalizar | result: success | agencia: {agency}");
                Ok(())
            }
            other => Err(ClientError::UnexpectedReply {
                during: DURING,
                reply: format!("{other:?}"),
            }),
        }
    }

    /// Asks for the winners on a new connection per attempt until the draw has
    /// happened; NO_WINNERS means ask again after the retry interval.
    fn ask_for_winners(&self) -> Result<Vec<String>, ClientError> {
        const DURING: &str = "asking for the winners";
        let started = Instant::now();
        let deadline = started + self.config.timeout;
        let request = Request::GetWinners {
            agency: self.config.id,
        }
        .encode()
        .map_err(|e| ClientError::UnexpectedReply {
            during: DURING,
            reply: e.to_string(),
        })?;
        let mut refusals = 0;
        loop {
            let mut conn = self.connect(deadline)?;
            let answer = self.winners_attempt(&mut conn, &request);
            drop(conn);
            self.forget_stream();
            let pause = match answer {
                Ok(Some(parts)) => return Ok(split_documents(&parts)),
                Ok(None) => {
                    debug!(
                        "action: consulta_ganadores | result: in_progress | detail: the draw has not happened yet"
                    );
                    refusals = 0;
                    self.config.retry_interval
                }
                // A query stores nothing, so a connection lost during one (say, reset
                // by an overloaded server) or refused as BUSY is simply asked again,
                // until the deadline.
                Err(e) if e.worth_asking_again() && Instant::now() < deadline => {
                    let pause = if e.is_busy() {
                        refusals += 1;
                        self.busy_pause(refusals)
                    } else {
                        self.config.retry_interval
                    };
                    warn!(
                        "action: consulta_ganadores | result: in_progress | error: {e}; asking again in {} ms",
                        pause.as_millis()
                    );
                    pause
                }
                Err(e) => return Err(e),
            };
            if Instant::now() >= deadline {
                return Err(ClientError::DrawTimeout {
                    waited: started.elapsed(),
                });
            }
            self.sleep(pause.min(deadline - Instant::now()))?;
        }
    }

    /// One GET_WINNERS on `conn`: `Ok(None)` for NO_WINNERS, else the payloads.
    fn winners_attempt(
        &self,
        conn: &mut Connection,
        request: &[u8],
    ) -> Result<Option<Vec<String>>, ClientError> {
        const DURING: &str = "asking for the winners";
        self.send(conn, request, DURING)?;
        let mut parts: Vec<String> = Vec::new();
        loop {
            match self.read_reply(conn, DURING)? {
                Reply::NoWinners if parts.is_empty() => return Ok(None),
                Reply::WinnersPart { documents } => parts.push(documents),
                Reply::Winners { documents } => {
                    parts.push(documents);
                    return Ok(Some(parts));
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

/// Joins the payloads of WINNERS_PART/WINNERS and splits them into documents.
/// What the client is doing while batches go out, for error messages.
const SENDING_BATCHES: &str = "sending a batch";

/// An ERROR reply as the client's error; any other reply as it is.
fn refusal_as_error(reply: Reply, during: &'static str) -> Result<Reply, ClientError> {
    match reply {
        Reply::Error { code, detail } => Err(ClientError::Refused {
            during,
            code,
            detail,
        }),
        reply => Ok(reply),
    }
}

/// The pause after the `refusals`-th BUSY in a row: the retry interval,
/// doubled with each further refusal up to `BUSY_DOUBLINGS` times but not past
/// `BUSY_PAUSE_CAP` (unless the interval itself is longer), less a part of up to
/// a half chosen by `random`. A full server then sees the refused agencies come
/// back a few at a time instead of all of them every interval: a thousand
/// agencies retrying every 100 ms overflowed its accept queue.
fn busy_pause(interval: Duration, refusals: u32, random: u64) -> Duration {
    let doubled = interval.saturating_mul(1 << refusals.saturating_sub(1).min(BUSY_DOUBLINGS));
    let pause = doubled.min(BUSY_PAUSE_CAP.max(interval));
    pause.mul_f64(1.0 - 0.5 * (random % 1024) as f64 / 1024.0)
}

/// A seed that differs between agencies started together: the process id and
/// the clock's nanoseconds (never 0, which the generator would keep).
fn jitter_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (u64::from(std::process::id()) << 32 | u64::from(nanos)) | 1
}

fn split_documents(parts: &[String]) -> Vec<String> {
    parts
        .iter()
        .flat_map(|part| part.split(','))
        .filter(|document| !document.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_after_busy_doubles_up_to_a_cap_and_is_spread() {
        let interval = Duration::from_millis(100);
        let full = |refusals| busy_pause(interval, refusals, 0);
        let ms = |d: Duration| d.as_millis();
        assert_eq!(
            [1, 2, 3, 4, 5, 6, 7, 100].map(|n| ms(full(n))),
            [100, 200, 400, 800, 1600, 3200, 3200, 3200]
        );
        assert_eq!(ms(busy_pause(Duration::from_secs(1), 9, 0)), 5000);
        assert_eq!(ms(busy_pause(Duration::from_secs(8), 9, 0)), 8000);
        // The random part takes off up to (not quite) a half.
        assert_eq!(ms(busy_pause(interval, 1, 512)), 75);
        assert_eq!(ms(busy_pause(interval, 1, 1023)), 50);
        assert_eq!(busy_pause(Duration::ZERO, 3, 7), Duration::ZERO);
    }

    #[test]
    fn winner_parts_join_into_documents() {
        assert_eq!(split_documents(&[String::new()]), Vec::<String>::new());
        assert_eq!(
            split_documents(&["1,2".into(), "3".into()]),
            vec!["1".to_string(), "2".into(), "3".into()]
        );
    }
}
