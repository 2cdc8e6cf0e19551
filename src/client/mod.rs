//! One agency: its CSV rows become numbered batches of bets, then FINISH, then
//! the winners, and a lost connection or a restarted server costs nothing.
//!
//! Every connection starts with HELLO; the server's WELCOME says how many of
//! this agency's bets it holds (`stored`) and whether its FINISH is recorded.
//! The agency's bets are its valid CSV rows in file order, numbered from 0, so
//! the client reads its file again, skips the first `stored` valid rows and
//! sends the rest in BETS messages numbered by their first bet (`batching`),
//! keeping up to `batches_in_flight` ahead of their acks. Then FINISH with the
//! total, and the winners asked for on a new connection per attempt. A lost,
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
pub(crate) mod retry;

use crate::app::locks::lock;
use crate::app::settings::{ClientConfig, START_FAILED};
use crate::app::shutdown::Shutdown;
use crate::bet::BetRef;
use crate::bet::calendar::Date;
use crate::client::agency_file::AgencyFile;
use crate::client::batching::{AckWindow, Batch, Batcher};
use crate::net::connection::{self, Connection, ConnectionError};
use crate::net::tls::{self, TlsError};
use crate::net::transport::{Socket, Stream};
use crate::text;
use crate::wire::digest::{Digest, Hasher};
use crate::wire::{self, AgencyStatus, ErrorCode, ProtocolError, Reply, Request};
use log::{debug, error, info, warn};
use retry::{Backoff, WaitReport};
use rustls::pki_types::ServerName;
use std::fmt;
use std::io;
use std::net::{Shutdown as SocketShutdown, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest single sleep while waiting, so a stop request is noticed promptly.
const SLEEP_SLICE_MS: u64 = 50;
/// FINISHes sent again when the server, asked for the winners, says the
/// agency's FINISH is not recorded (a server whose records were lost).
const MAX_FINISHES: u32 = 3;
/// Longest wait for one connection attempt to be accepted.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// The server holds another round for this agency than its file: `stored`
    /// bets (its WELCOME), where the file has `in_file` valid bets.
    OtherRound {
        agency: u32,
        stored: u64,
        in_file: u64,
        reason: String,
    },
    /// FINISH_ACK returned another digest than the agency's own.
    BadReceipt { ours: Digest, theirs: Digest },
    /// No progress (a WELCOME, an ack) within the timeout; `last` is the last error.
    NoProgress { waited: Duration, last: String },
    /// The draw did not happen within the timeout; `last` is the last error, if any.
    DrawTimeout {
        waited: Duration,
        last: Option<String>,
    },
    /// The stop was requested before the winners arrived.
    Interrupted { acked: u64, read: u64 },
    /// The server's winners answer breaks the protocol's rules.
    BadWinners { reason: String },
    /// The TLS settings cannot be used (CLI_TLS_CA, CLI_TLS_SERVER_NAME).
    TlsSetup(TlsError),
    /// TLS with the server failed: a certificate that does not verify, or one
    /// side speaking TLS and the other not.
    Tls { reason: String },
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
            } => write!(
                f,
                "the server refused while {during}: {code}: {}",
                text::escape(detail)
            ),
            ClientError::BadWinners { reason } => write!(
                f,
                "the server's answer with the winners is not valid ({reason}); it was refused"
            ),
            ClientError::UnexpectedReply { during, reply } => {
                write!(f, "unexpected reply while {during}: {reply}")
            }
            ClientError::OtherRound {
                agency,
                stored,
                in_file,
                reason,
            } => write!(
                f,
                "the server holds a different round for agency {agency}: it has {stored} of its \
                 bets, the file {in_file} valid ones, and {reason}; use the data file this agency \
                 sent (CLI_DATA_FILE, CLI_ID), or start a new round on the server"
            ),
            ClientError::BadReceipt { ours, theirs } => write!(
                f,
                "the server acknowledged FINISH with digest {}, but this agency's bets have \
                 digest {}: the server did not record the bets this agency sent; no winners are \
                 reported",
                theirs.short(),
                ours.short()
            ),
            ClientError::NoProgress { waited, last } => write!(
                f,
                "no progress for {} s (CLI_TIMEOUT_S); the last error: {last}",
                waited.as_secs()
            ),
            ClientError::DrawTimeout { waited, last } => {
                write!(
                    f,
                    "the draw did not happen within {} s (CLI_TIMEOUT_S); have all agencies finished?",
                    waited.as_secs()
                )?;
                if let Some(last) = last {
                    write!(f, " The last error: {last}")?;
                }
                Ok(())
            }
            ClientError::TlsSetup(e) => write!(f, "{e}"),
            ClientError::Tls { reason } => write!(
                f,
                "TLS with the server failed: {reason}; CLI_TLS_CA must be the CA of the server's \
                 certificate, CLI_TLS_SERVER_NAME a name it carries, and both sides must use TLS \
                 (the server with SERVER_TLS_CERT) or neither"
            ),
            ClientError::Interrupted { acked, read } => write!(
                f,
                "stopped before the winners arrived, with {acked} bets acknowledged of {read} read; \
                 run the client again to go on (nothing is sent twice)"
            ),
        }
    }
}

impl std::error::Error for ClientError {}

impl ClientError {
    /// The process exit status for this error: 2 when the agency cannot even
    /// start (its file), 1 for anything that went wrong in the exchange. (A
    /// stop request is the binary's to map: it knows the signal.)
    pub fn exit_status(&self) -> u8 {
        match self {
            ClientError::DataFile { .. } | ClientError::TlsSetup(_) => START_FAILED,
            _ => 1,
        }
    }

    /// Whether this failure is worth another connection: the server may be
    /// restarting, busy, or the connection was lost; or it asks to resume from
    /// WELCOME. Nothing of what was stored is lost either way.
    fn is_transient(&self) -> bool {
        match self {
            ClientError::Connect { .. }
            | ClientError::Connection { .. }
            | ClientError::ServerClosed { .. } => true,
            ClientError::Refused { code, .. } => matches!(
                code,
                ErrorCode::Busy
                    | ErrorCode::ShuttingDown
                    | ErrorCode::Storage
                    | ErrorCode::OutOfOrder
                    | ErrorCode::AgencyFinished
                    | ErrorCode::CountMismatch
            ),
            _ => false,
        }
    }
}

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

/// The socket in use, shared with the stop request's waker, which shuts it to
/// end a blocked read.
type CurrentSocket = Arc<Mutex<Option<Arc<TcpStream>>>>;

/// What the client needs to speak TLS: whom it trusts, and the server's name.
type TlsSettings = (Arc<rustls::ClientConfig>, ServerName<'static>);

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

/// What a WELCOME said.
struct Welcome {
    stored: u64,
    status: AgencyStatus,
    digest: Digest,
}

/// The agency's file as a whole: its valid bets and their digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileSummary {
    total: u64,
    digest: Digest,
}

/// One agency's run against the server.
pub struct Agency {
    config: ClientConfig,
    shutdown: Shutdown,
    current: CurrentSocket,
    backoff: Backoff,
    /// Reports failed connection attempts in a row every few seconds.
    connecting: Option<WaitReport>,
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
    /// Bytes written to the server so far.
    bytes_sent: u64,
    /// Set once `run` has read the TLS settings, when there are any.
    tls: Option<TlsSettings>,
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
            connecting: None,
            today: Date::today_utc(),
            file: None,
            invalid_rows: 0,
            logged_through_line: 0,
            acked: 0,
            read: 0,
            bytes_sent: 0,
            tls: None,
        }
    }

    /// The TLS settings, when CLI_TLS_CA is set.
    fn tls_settings(&self) -> Result<Option<TlsSettings>, ClientError> {
        let Some(ca) = &self.config.tls_ca else {
            return Ok(None);
        };
        let config = tls::client_config(ca).map_err(ClientError::TlsSetup)?;
        let name = match &self.config.tls_server_name {
            Some(name) => name.clone(),
            None => host_of(&self.config.server_address).to_string(),
        };
        let name = tls::server_name(&name).map_err(ClientError::TlsSetup)?;
        Ok(Some((config, name)))
    }

    /// Sends every valid bet not yet stored, FINISH, and waits for the winners.
    pub fn run(mut self) -> Result<Summary, ClientError> {
        // Read once before anything else: a missing file or unusable TLS
        // settings are start-up errors.
        self.tls = self.tls_settings()?;
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
        Ok(Summary {
            bets_sent: self.acked,
            invalid_rows: self.invalid_rows,
            winners,
        })
    }

    fn open_data_file(&self) -> Result<AgencyFile, ClientError> {
        AgencyFile::open(&self.config.data_file).map_err(|e| ClientError::DataFile {
            path: self.config.data_file.clone(),
            reason: e.to_string(),
        })
    }

    fn reading_error(&self, reason: impl fmt::Display) -> ClientError {
        ClientError::ReadingDataFile {
            path: self.config.data_file.clone(),
            reason: reason.to_string(),
        }
    }

    fn interrupted(&self) -> ClientError {
        ClientError::Interrupted {
            acked: self.acked,
            read: self.read.max(self.acked),
        }
    }

    fn check_stop(&self) -> Result<(), ClientError> {
        if self.shutdown.is_triggered() {
            return Err(self.interrupted());
        }
        Ok(())
    }

    /// The bets phase: connections until the server holds every valid bet and
    /// this agency's FINISH, or the timeout passes without progress. Returns
    /// what the file holds.
    fn send_bets(&mut self) -> Result<FileSummary, ClientError> {
        let mut deadline = Deadline::new(self.config.timeout);
        loop {
            self.check_stop()?;
            let attempt = self.bets_session(&mut deadline);
            self.forget_stream();
            match attempt {
                Ok(file) => return Ok(file),
                Err(e) if e.is_transient() => {
                    self.pause_after(&e, "sending the bets", &deadline)?
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One connection of the bets phase: HELLO, the check that the server's
    /// bets are this file's, the bets not yet stored, FINISH.
    fn bets_session(&mut self, deadline: &mut Deadline) -> Result<FileSummary, ClientError> {
        let mut conn = self.connect()?;
        let welcome = self.hello(&mut conn, deadline.at())?;
        deadline.progress();
        self.backoff.reset();
        self.acked = welcome.stored;
        let sending = welcome.status == AgencyStatus::Sending;
        if !sending && let Some(file) = self.file {
            // The file was read whole already: WELCOME must name all of it.
            self.check_finished_round(&welcome, file)?;
            return Ok(file);
        }
        let file = self.pass_over_file(&mut conn, &welcome, sending, deadline)?;
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
            file.total, self.invalid_rows, self.bytes_sent
        );
        self.finish(&mut conn, file, deadline)?;
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
    fn check_finished_round(
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

    /// The pause before the next connection after `error`, logged; gives up
    /// when the deadline has passed.
    fn pause_after(
        &mut self,
        error: &ClientError,
        during: &str,
        deadline: &Deadline,
    ) -> Result<(), ClientError> {
        let waited = deadline.last_progress.elapsed();
        if deadline.expired() {
            return Err(match error {
                ClientError::Connect {
                    address, reason, ..
                } => ClientError::Connect {
                    address: address.clone(),
                    waited,
                    reason: reason.clone(),
                },
                other => ClientError::NoProgress {
                    waited,
                    last: other.to_string(),
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

    /// One connection attempt, registered so that a stop request can shut it.
    fn connect(&mut self) -> Result<Connection, ClientError> {
        self.check_stop()?;
        let report = self.connecting.get_or_insert_with(WaitReport::start);
        let attempt = open_stream(&self.config.server_address);
        let stream = match attempt {
            Ok(stream) => stream,
            Err(error) => {
                if let Some(waited) = report.due() {
                    info!(
                        "action: conectar | result: in_progress | address: {} | esperando_s: {} | error: {error}",
                        self.config.server_address,
                        waited.as_secs()
                    );
                }
                return Err(ClientError::Connect {
                    address: self.config.server_address.clone(),
                    waited: Duration::ZERO,
                    reason: error.to_string(),
                });
            }
        };
        self.connecting = None;
        let tcp = Arc::new(stream);
        *lock(&self.current) = Some(Arc::clone(&tcp));
        let socket = Socket::new(tcp);
        let stream = match &self.tls {
            Some((config, name)) => {
                let session = rustls::ClientConnection::new(Arc::clone(config), name.clone())
                    .map_err(|e| ClientError::Tls {
                        reason: e.to_string(),
                    })?;
                Stream::TlsClient(Box::new(rustls::StreamOwned::new(session, socket)))
            }
            None => Stream::Plain(socket),
        };
        let conn = Connection::new(
            stream,
            connection::CLIENT_READ_BUFFER_LEN,
            self.config.timeout,
        );
        // A stop requested just before the socket was registered: its waker
        // found nothing to shut.
        self.check_stop()?;
        conn.map_err(|e| ClientError::Connection {
            during: "connecting",
            reason: e.to_string(),
        })
    }

    fn forget_stream(&self) {
        if let Some(stream) = lock(&self.current).take() {
            let _ = stream.shutdown(SocketShutdown::Both);
        }
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

    /// Maps a failed read or write: a stop request explains it first; a TLS
    /// failure, or TLS where plain was expected, will not mend by retrying.
    fn connection_error(&self, during: &'static str, source: ConnectionError) -> ClientError {
        if self.shutdown.is_triggered() {
            return self.interrupted();
        }
        match &source {
            ConnectionError::Io(e)
                if self.tls.is_some() && e.kind() == io::ErrorKind::InvalidData =>
            {
                return ClientError::Tls {
                    reason: e.to_string(),
                };
            }
            ConnectionError::Protocol(ProtocolError::UnknownMessage { id })
                if self.tls.is_none() && looks_like_tls(*id) =>
            {
                return ClientError::Tls {
                    reason: "the server answered in TLS, and CLI_TLS_CA is not set".to_string(),
                };
            }
            _ => {}
        }
        ClientError::Connection {
            during,
            reason: source.to_string(),
        }
    }

    /// Reads the next reply by `until`: an ERROR becomes `Refused`.
    fn read_reply(
        &self,
        conn: &mut Connection,
        until: Instant,
        during: &'static str,
    ) -> Result<Reply, ClientError> {
        match conn.read_reply(until) {
            Ok(Some(reply)) => refusal_as_error(reply, during),
            Ok(None) if self.shutdown.is_triggered() => Err(self.interrupted()),
            Ok(None) => Err(ClientError::ServerClosed { during }),
            Err(e) => Err(self.connection_error(during, e)),
        }
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
        let soon = Instant::now() + Duration::from_secs(1);
        if closed_by_peer
            && !self.shutdown.is_triggered()
            && let Ok(Some(reply @ Reply::Error { .. })) = conn.read_reply(soon)
        {
            return refusal_as_error(reply, during).map(|_| ());
        }
        Err(self.connection_error(during, ConnectionError::Io(error)))
    }

    fn send(
        &mut self,
        conn: &mut Connection,
        request: &Request,
        during: &'static str,
    ) -> Result<(), ClientError> {
        let bytes = request.encode().map_err(|e| ClientError::UnexpectedReply {
            during,
            reply: e.to_string(),
        })?;
        self.queue(conn, &bytes);
        self.flush(conn, during)
    }

    /// HELLO and its WELCOME.
    fn hello(&mut self, conn: &mut Connection, until: Instant) -> Result<Welcome, ClientError> {
        const DURING: &str = "saying HELLO";
        let hello = Request::Hello {
            agency: self.config.id,
            token: self.config.token.clone().into_bytes(),
            version: wire::PROTOCOL_VERSION,
        };
        self.send(conn, &hello, DURING)?;
        match self.read_reply(conn, until, DURING)? {
            Reply::Welcome {
                stored,
                status,
                digest,
            } => Ok(Welcome {
                stored: u64::from(stored),
                status,
                digest,
            }),
            other => Err(ClientError::UnexpectedReply {
                during: DURING,
                reply: format!("{other:?} (expected WELCOME)"),
            }),
        }
    }

    /// Reads the agency file from the start. Its first `welcome.stored` valid
    /// bets are the server's: their digest must be WELCOME's before anything
    /// more is sent, else the server holds another round and the rest of the
    /// file is only counted. With `send`, the bets after them go out in batches
    /// and every ack is awaited. Returns the file's valid bets and their digest.
    fn pass_over_file(
        &mut self,
        conn: &mut Connection,
        welcome: &Welcome,
        send: bool,
        deadline: &mut Deadline,
    ) -> Result<FileSummary, ClientError> {
        let mut reader = self.open_data_file()?;
        let from = welcome.stored;
        if from > 0 && send {
            info!("action: reanudar | result: success | almacenadas: {from}");
        }
        let max_count = self
            .config
            .batch_max_amount
            .unwrap_or(usize::from(u16::MAX));
        let mut batcher = Batcher::new(max_count, from);
        let mut window = AckWindow::new(self.config.batches_in_flight);
        let mut hasher = Hasher::new();
        let mut encoded = Vec::with_capacity(1024);
        // The digest of the file's first `from` valid bets, once they are read:
        // the server's bets must be those before anything more is sent.
        let mut prefix = (from == 0).then(|| hasher.digest());
        let (mut valid, mut invalid) = (0u64, 0u64);
        loop {
            self.check_stop()?;
            let row = reader.next_row().map_err(|e| self.reading_error(e))?;
            let Some(row) = row else {
                break;
            };
            let (line, lines) = (row.line, row.lines);
            let problem = match row.content {
                Ok(fields) => match BetRef::from_agency_row(&fields, self.today) {
                    Ok(bet) => {
                        let sending = send && prefix == Some(welcome.digest);
                        if !sending {
                            // Skipped, or only counted: hashed here, not in a batch.
                            encoded.clear();
                            match wire::encode_bet(*bet, &mut encoded) {
                                Ok(()) => hasher.update(&encoded),
                                Err(e) => {
                                    // Validated bets always fit; were one not to, it is skipped.
                                    invalid += lines;
                                    self.log_invalid_row(line, lines, &e.to_string());
                                    continue;
                                }
                            }
                        }
                        valid += 1;
                        self.read = self.read.max(valid);
                        if valid == from {
                            prefix = Some(hasher.digest());
                        }
                        if !sending {
                            continue;
                        }
                        match batcher.push(&bet) {
                            Ok(Some(batch)) => {
                                hasher.update(&batch.body);
                                self.send_batch(conn, batch, &mut window, deadline)?;
                                continue;
                            }
                            Ok(None) => continue,
                            Err(e) => {
                                // Validated bets always fit; were one not to, it is skipped.
                                valid -= 1;
                                e.to_string()
                            }
                        }
                    }
                    Err(e) => e.to_string(),
                },
                Err(e) => e.to_string(),
            };
            invalid += lines;
            self.log_invalid_row(line, lines, &problem);
        }
        self.invalid_rows = invalid;
        let prefix = match prefix {
            Some(prefix) => prefix,
            None => {
                let reason = "the file has fewer valid bets than the server holds".to_string();
                return Err(self.other_round(welcome, valid, reason));
            }
        };
        if let Some(batch) = batcher.take() {
            hasher.update(&batch.body);
            self.send_batch(conn, batch, &mut window, deadline)?;
        }
        let file = FileSummary {
            total: valid,
            digest: hasher.digest(),
        };
        if prefix != welcome.digest {
            let reason = digest_reason(welcome.digest, prefix);
            return Err(self.other_round(welcome, valid, reason));
        }
        if !send {
            self.check_finished_round(welcome, file)?;
            return Ok(file);
        }
        self.flush(conn, SENDING_BATCHES)?;
        while !window.is_empty() {
            self.take_ack(conn, &mut window, true, deadline)?;
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
        conn: &mut Connection,
        batch: Batch,
        window: &mut AckWindow,
        deadline: &mut Deadline,
    ) -> Result<(), ClientError> {
        if window.is_full() {
            self.flush(conn, SENDING_BATCHES)?;
            self.take_ack(conn, window, true, deadline)?;
            while !window.is_empty() && self.take_ack(conn, window, false, deadline)? {}
        }
        let first = u32::try_from(batch.first).map_err(|_| ClientError::UnexpectedReply {
            during: "packing a batch",
            reply: "over 4,294,967,295 bets: more than the protocol numbers".to_string(),
        })?;
        let message = wire::encode_bets_message(self.config.id, first, batch.count, &batch.body)
            .map_err(|e| ClientError::UnexpectedReply {
                during: "packing a batch",
                reply: e.to_string(),
            })?;
        self.queue(conn, &message);
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
        conn: &mut Connection,
        window: &mut AckWindow,
        wait: bool,
        deadline: &mut Deadline,
    ) -> Result<bool, ClientError> {
        const DURING: &str = "waiting for a batch's ack";
        let reply = if wait {
            self.read_reply(conn, deadline.at(), DURING)?
        } else {
            match conn.next_buffered_reply() {
                Ok(Some(reply)) => refusal_as_error(reply, DURING)?,
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
        self.acked += u64::from(count);
        deadline.progress();
        debug!("action: apuesta_enviada | result: success | cantidad: {count}");
        Ok(true)
    }

    /// FINISH with the file's total and digest; FINISH_ACK must return the
    /// digest (the receipt), which is logged.
    fn finish(
        &mut self,
        conn: &mut Connection,
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
        self.send(conn, &finish, DURING)?;
        match self.read_reply(conn, deadline.at(), DURING)? {
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

    /// Asks for the winners on a new connection per attempt until the draw has
    /// happened; NO_WINNERS means ask again after the retry interval. `None`
    /// when the server does not hold this agency's FINISH.
    fn ask_for_winners(&mut self, file: FileSummary) -> Result<Option<Vec<String>>, ClientError> {
        let deadline = Deadline::new(self.config.timeout);
        let mut report = WaitReport::start();
        self.backoff.reset();
        loop {
            self.check_stop()?;
            let attempt = self.winners_session(file, &deadline);
            self.forget_stream();
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
                            last: Some(e.to_string()),
                        });
                    }
                    self.pause_after(&e, "asking for the winners", &deadline)?;
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
        let mut conn = self.connect()?;
        let welcome = self.hello(&mut conn, deadline.at())?;
        self.acked = welcome.stored;
        if welcome.status == AgencyStatus::Sending {
            return Ok(WinnersAnswer::NotFinished);
        }
        // Never another round's winners: the server's bets must be the file's.
        self.check_finished_round(&welcome, file)?;
        let request = Request::GetWinners {
            agency: self.config.id,
        };
        self.send(&mut conn, &request, DURING)?;
        let mut winners = WinnersList::new(welcome.stored);
        loop {
            // The whole answer must come by the deadline, however it trickles in.
            match self.read_reply(&mut conn, deadline.at(), DURING)? {
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

/// Why a WELCOME's digest shows another round, with both digests' first 8 hex digits.
fn digest_reason(server: Digest, file: Digest) -> String {
    format!(
        "the bets it holds have digest {} where the file's have {}",
        server.short(),
        file.short()
    )
}

/// What the client is doing while batches go out, for error messages.
const SENDING_BATCHES: &str = "sending a batch";

/// Whether a message id is the start of a TLS record (a handshake or an alert).
fn looks_like_tls(id: u16) -> bool {
    matches!(id >> 8, 0x15 | 0x16) && (id & 0xFF) == 0x03
}

/// The host part of `host:port` (without brackets for an IPv6 address).
fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// A TCP connection to `address` (`host:port`), trying each of its addresses.
fn open_stream(address: &str) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the address resolves to nothing");
    for candidate in address.to_socket_addrs()? {
        match TcpStream::connect_timeout(&candidate, CONNECT_TIMEOUT) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}

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
                    text::escape(crate::text::truncate_utf8(document, 32))
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

    #[test]
    fn tls_records_are_told_from_messages_and_hosts_from_addresses() {
        assert!(looks_like_tls(0x1503) && looks_like_tls(0x1603));
        assert!(!looks_like_tls(0x0002) && !looks_like_tls(0x00FF) && !looks_like_tls(0x1601));
        assert_eq!(host_of("127.0.0.1:12345"), "127.0.0.1");
        assert_eq!(host_of("localhost:1"), "localhost");
        assert_eq!(host_of("[::1]:12345"), "::1");
    }

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
