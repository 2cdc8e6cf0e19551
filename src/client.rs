//! One agency: its CSV rows become batches of bets, then FINISH, then the winners.
//!
//! `Agency::run` streams the agency file (`agency_file`), checks each row with the
//! server's rules (`bet`), packs the valid ones into BETS messages (`batching`)
//! and sends them on one connection, keeping up to `batches_in_flight` batches
//! ahead of their acks and writing a refilled window with one system call. A row
//! that fails is logged with its line number, skipped and counted. After FINISH
//! and its ack the connection is closed, and the winners are asked for on a new
//! connection per attempt until the draw has happened or the timeout passes.
//!
//! A server at its connection limit answers ERROR BUSY and closes before it
//! reads anything, so nothing sent on that connection was stored: the agency
//! connects again and sends its file from the start, after a growing pause
//! (`retry`).

use crate::agency_file::AgencyFile;
use crate::batching::{AckWindow, Batch, Batcher};
use crate::bet::BetRef;
use crate::calendar::Date;
use crate::config::ClientConfig;
use crate::connection::{self, Connection, ConnectionError};
use crate::locks::lock;
use crate::protocol::{self, ErrorCode, Reply, Request};
use crate::retry::{self, Backoff, WaitReport};
use crate::shutdown::Shutdown;
use log::{debug, info, warn};
use std::fmt;
use std::io;
use std::net::{Shutdown as SocketShutdown, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest single sleep while waiting, so a stop request is noticed promptly.
const SLEEP_SLICE_MS: u64 = 50;

/// Why the agency could not complete its run.
#[derive(Debug)]
pub enum ClientError {
    /// The agency file could not be opened.
    DataFile { path: PathBuf, reason: String },
    /// Reading the agency file failed part way.
    ReadingDataFile { path: PathBuf, reason: String },
    /// No connection to the server within the timeout.
    Connect {
        address: String,
        waited: Duration,
        reason: String,
    },
    /// The connection failed while `during`.
    Connection {
        during: &'static str,
        reason: String,
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
    /// The stop was requested (SIGTERM or SIGINT).
    Interrupted,
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::DataFile { path, reason } => write!(
                f,
                "could not open the agency file {} (CLI_DATA_FILE): {reason}; point CLI_DATA_FILE \
                 at the agency's CSV file",
                path.display()
            ),
            ClientError::ReadingDataFile { path, reason } => write!(
                f,
                "reading the agency file {} failed: {reason}",
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
            ClientError::Connection { during, reason } => {
                write!(f, "the connection failed while {during}: {reason}")
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
    /// The process exit status for this error: 2 when the agency cannot even
    /// start (its file), 1 for anything that went wrong in the exchange.
    pub fn exit_status(&self) -> u8 {
        match self {
            ClientError::DataFile { .. } => 2,
            _ => 1,
        }
    }

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
    /// The agency's winning documents, in the order the server stored them.
    pub winners: Vec<String>,
}

/// The socket in use, shared with the stop request's waker, which shuts it to
/// end a blocked read.
type CurrentSocket = Arc<Mutex<Option<TcpStream>>>;

/// One agency's run against the server.
pub struct Agency {
    config: ClientConfig,
    shutdown: Shutdown,
    current: CurrentSocket,
    backoff: Backoff,
    /// Bytes written to the server so far, for the summary line (those of
    /// connections refused BUSY included).
    bytes_sent: u64,
    /// Replies other than ERROR read on the connection in use: a BUSY is only a
    /// refusal of the whole connection (safe to send again) while this is 0.
    answers_on_connection: u64,
}

impl Agency {
    /// An agency with `config`, stopped early when `shutdown` is triggered.
    pub fn new(config: ClientConfig, shutdown: Shutdown) -> Agency {
        let current: CurrentSocket = Arc::new(Mutex::new(None));
        let socket = Arc::clone(&current);
        shutdown.on_trigger(move || {
            if let Some(stream) = lock(&socket).as_ref() {
                let _ = stream.shutdown(SocketShutdown::Both);
            }
        });
        Agency {
            backoff: Backoff::new(config.retry_interval, retry::seed()),
            config,
            shutdown,
            current,
            bytes_sent: 0,
            answers_on_connection: 0,
        }
    }

    /// Sends every valid bet, FINISH, and waits for the winners.
    pub fn run(mut self) -> Result<Summary, ClientError> {
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

    fn data_file_error(&self, reason: impl fmt::Display) -> ClientError {
        ClientError::ReadingDataFile {
            path: self.config.data_file.clone(),
            reason: reason.to_string(),
        }
    }

    /// Opens the agency file; failing to is a start-up error.
    fn open_data_file(&self) -> Result<AgencyFile, ClientError> {
        AgencyFile::open(&self.config.data_file).map_err(|e| ClientError::DataFile {
            path: self.config.data_file.clone(),
            reason: e.to_string(),
        })
    }

    /// Sends the agency file's bets and FINISH on one connection. A connection
    /// the server refuses with BUSY is tried again, from the start of the file,
    /// until the timeout.
    fn send_file(&mut self) -> Result<(u64, u64), ClientError> {
        let deadline = Instant::now() + self.config.timeout;
        loop {
            let mut reader = self.open_data_file()?;
            let mut conn = self.connect(deadline)?;
            let attempt = self.send_bets(&mut reader, &mut conn).and_then(|sent| {
                let (bets_sent, invalid_rows) = sent;
                info!(
                    "action: apuestas_enviadas | result: success | cantidad: {bets_sent} | invalidas: {invalid_rows} | bytes: {}",
                    self.bytes_sent
                );
                self.finish(&mut conn)?;
                Ok(sent)
            });
            let refused_whole = self.answers_on_connection == 0;
            drop(conn);
            self.forget_stream();
            match attempt {
                Err(e) if e.is_busy() && refused_whole && Instant::now() < deadline => {
                    let pause = self.backoff.after_refusal();
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

    /// Connects, retrying every retry interval until `deadline`.
    fn connect(&mut self, deadline: Instant) -> Result<Connection, ClientError> {
        let started = Instant::now();
        let mut report = WaitReport::start();
        loop {
            if self.shutdown.is_triggered() {
                return Err(ClientError::Interrupted);
            }
            let error = match self.open_connection() {
                Ok(conn) => return Ok(conn),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(ClientError::Connect {
                    address: self.config.server_address.clone(),
                    waited: started.elapsed(),
                    reason: error.to_string(),
                });
            }
            match report.due() {
                Some(waited) => info!(
                    "action: conectar | result: in_progress | address: {} | esperando_s: {} | error: {error}",
                    self.config.server_address,
                    waited.as_secs()
                ),
                None => debug!(
                    "action: conectar | result: in_progress | address: {} | error: {error}",
                    self.config.server_address
                ),
            }
            self.sleep(self.backoff.interval().min(deadline - Instant::now()))?;
        }
    }

    /// One connection attempt, registered so that a stop request can shut it.
    fn open_connection(&mut self) -> io::Result<Connection> {
        let stream = TcpStream::connect(self.config.server_address.as_str())?;
        let registered = stream.try_clone()?;
        let conn = Connection::new(
            stream,
            connection::CLIENT_READ_BUFFER_LEN,
            self.config.timeout,
        )?;
        *lock(&self.current) = Some(registered);
        self.answers_on_connection = 0;
        // A stop requested just before the socket was registered: its waker
        // found nothing to shut, so shut it here.
        if self.shutdown.is_triggered() {
            self.forget_stream();
        }
        Ok(conn)
    }

    fn forget_stream(&self) {
        if let Some(stream) = lock(&self.current).take() {
            let _ = stream.shutdown(SocketShutdown::Both);
        }
    }

    /// Sleeps in short slices, ending early with `Interrupted` on a stop request.
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

    /// Maps a failed read or write: a stop request explains it first.
    fn connection_error(&self, during: &'static str, source: ConnectionError) -> ClientError {
        if self.shutdown.is_triggered() {
            ClientError::Interrupted
        } else {
            ClientError::Connection {
                during,
                reason: source.to_string(),
            }
        }
    }

    fn read_reply(
        &mut self,
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
    fn answer(&mut self, reply: Reply, during: &'static str) -> Result<Reply, ClientError> {
        let reply = refusal_as_error(reply, during)?;
        self.answers_on_connection += 1;
        Ok(reply)
    }

    /// Queues a message; it goes out with the next `flush`.
    fn queue(&mut self, conn: &mut Connection, bytes: &[u8]) {
        conn.queue_bytes(bytes);
        self.bytes_sent += bytes.len() as u64;
    }

    /// Writes everything queued. When the server closed the connection, the
    /// ERROR it sent before closing (BUSY comes before anything is read) says
    /// more than the failed write, so it is read and returned when it is there.
    fn flush(&mut self, conn: &mut Connection, during: &'static str) -> Result<(), ClientError> {
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
        &mut self,
        conn: &mut Connection,
        bytes: &[u8],
        during: &'static str,
    ) -> Result<(), ClientError> {
        self.queue(conn, bytes);
        self.flush(conn, during)
    }

    /// Streams the file into batches; returns (bets acknowledged, rows refused).
    fn send_bets(
        &mut self,
        reader: &mut AgencyFile,
        conn: &mut Connection,
    ) -> Result<(u64, u64), ClientError> {
        let today = Date::today_utc();
        let max_count = self
            .config
            .batch_max_amount
            .unwrap_or(usize::from(u16::MAX));
        let mut batcher = Batcher::new(max_count, 0);
        let mut window = AckWindow::new(self.config.batches_in_flight);
        let mut invalid = 0u64;
        loop {
            if self.shutdown.is_triggered() {
                return Err(ClientError::Interrupted);
            }
            let row = reader.next_row().map_err(|e| self.data_file_error(e))?;
            let Some(row) = row else {
                break;
            };
            let line = row.line;
            let problem = match row.content {
                Ok(fields) => match BetRef::from_agency_row(&fields, today) {
                    Ok(bet) => match batcher.push(&bet) {
                        Ok(Some(batch)) => {
                            self.send_batch(conn, batch, &mut window)?;
                            continue;
                        }
                        Ok(None) => continue,
                        Err(e) => e.to_string(),
                    },
                    Err(e) => e.to_string(),
                },
                Err(e) => e.to_string(),
            };
            warn!("action: apuesta_invalida | result: fail | linea: {line} | error: {problem}");
            invalid += 1;
        }
        if let Some(batch) = batcher.take() {
            self.send_batch(conn, batch, &mut window)?;
        }
        self.flush(conn, SENDING_BATCHES)?;
        while !window.is_empty() {
            self.take_ack(conn, &mut window, true)?;
        }
        Ok((window.acked(), invalid))
    }

    /// Queues a batch. When the window is full, first sends everything queued in
    /// one write, waits for the oldest ack and takes every ack that arrived with
    /// it: the window then refills with several batches per write, and the server
    /// reads several per system call.
    fn send_batch(
        &mut self,
        conn: &mut Connection,
        batch: Batch,
        window: &mut AckWindow,
    ) -> Result<(), ClientError> {
        if window.is_full() {
            self.flush(conn, SENDING_BATCHES)?;
            self.take_ack(conn, window, true)?;
            while !window.is_empty() && self.take_ack(conn, window, false)? {}
        }
        let message = protocol::encode_bets_message(self.config.id, batch.count, &batch.body)
            .map_err(|e| ClientError::UnexpectedReply {
                during: "packing a batch",
                reply: e.to_string(),
            })?;
        self.queue(conn, &message);
        debug!(
            "action: apuesta_enviada | result: in_progress | cantidad: {}",
            batch.count
        );
        window.sent(&batch);
        Ok(())
    }

    /// Takes the oldest waiting batch's ack. With `wait`, blocks for it; without,
    /// takes it only if it is already buffered. Returns whether one was taken.
    fn take_ack(
        &mut self,
        conn: &mut Connection,
        window: &mut AckWindow,
        wait: bool,
    ) -> Result<bool, ClientError> {
        const DURING: &str = "waiting for a batch's ack";
        let reply = if wait {
            self.read_reply(conn, DURING)?
        } else {
            match conn.next_buffered_reply() {
                Ok(Some(reply)) => self.answer(reply, DURING)?,
                Ok(None) => return Ok(false),
                Err(e) => return Err(self.connection_error(DURING, e.into())),
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
        debug!("action: apuesta_enviada | result: success | cantidad: {count}");
        Ok(true)
    }

    fn finish(&mut self, conn: &mut Connection) -> Result<(), ClientError> {
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
    fn ask_for_winners(&mut self) -> Result<Vec<String>, ClientError> {
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
        self.backoff.reset();
        let mut report = WaitReport::start();
        loop {
            let mut conn = self.connect(deadline)?;
            let answer = self.winners_attempt(&mut conn, &request);
            drop(conn);
            self.forget_stream();
            let pause = match answer {
                Ok(Some(parts)) => return Ok(split_documents(&parts)),
                Ok(None) => {
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
                    self.backoff.interval()
                }
                // A query stores nothing, so a connection lost during one (say, reset
                // by an overloaded server) or refused as BUSY is simply asked again,
                // until the deadline.
                Err(e) if e.worth_asking_again() && Instant::now() < deadline => {
                    let pause = if e.is_busy() {
                        self.backoff.after_refusal()
                    } else {
                        self.backoff.interval()
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
        &mut self,
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

/// Joins the payloads of WINNERS_PART/WINNERS and splits them into documents.
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
    fn winner_parts_join_into_documents() {
        assert_eq!(split_documents(&[String::new()]), Vec::<String>::new());
        assert_eq!(
            split_documents(&["1,2".into(), "3".into()]),
            vec!["1".to_string(), "2".into(), "3".into()]
        );
    }
}
