//! The server: the accept loop, the connection limit, one handler per connection,
//! and the orderly stop.
//!
//! `Server::bind` opens the socket and the bets file; `Server::run` serves until
//! SIGTERM or SIGINT. Each accepted connection gets its own OS thread running a
//! `Handler`, which turns requests into calls on `Lottery` (state) and `BetStore`
//! (disk) and sends the replies. Beyond `max_connections` open connections a new
//! one gets ERROR BUSY and is closed by the accept loop itself, so the number of
//! threads stays bounded.
//!
//! Pipelined batches: a handler appends each valid batch at once but acknowledges
//! it only when it is about to wait for more input. By then every batch it has
//! appended is made durable by one shared `fsync` (see `storage`), so a client
//! that sends several batches ahead of their acks pays for one disk flush, not one
//! per batch. An ack still always follows its batch reaching the disk.
//!
//! Stopping: the signal thread sets the shutdown flag and connects to our own
//! address so the blocked `accept` returns. The accept loop then closes the
//! listener, wakes the draw waiters, shuts the read side of every open socket
//! (their handlers answer ERROR SHUTTING_DOWN and end), joins every handler
//! thread and flushes the bets file, logging each step.

use crate::bet::{BetRef, Date};
use crate::config::ServerConfig;
use crate::connection::{self, Connection, ConnectionError, Fill};
use crate::lottery::{BatchPermit, BatchRefusal, Lottery, WinnersAnswer};
use crate::protocol::{self, BetBatch, ErrorCode, Reply, Request};
use crate::shutdown::{self, Shutdown};
use crate::storage::{Appended, BetStore, StorageError};
use log::{debug, error, info, log_enabled, warn};
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, Shutdown as SocketShutdown, SocketAddr, TcpListener, TcpStream,
};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Batches a connection may append before it must stop reading and acknowledge them.
const MAX_PENDING_BATCHES: usize = 64;
/// Stack of a connection thread: handlers keep little on the stack.
const HANDLER_STACK_BYTES: usize = 256 * 1024;
/// After shutdown starts, how long handlers get to finish their current request
/// before their sockets are shut in both directions.
const SHUTDOWN_GRACE_MS: u64 = 500;
/// Longest pause of the accept loop after repeated accept errors (e.g. out of fds).
const MAX_ACCEPT_BACKOFF_MS: u64 = 1000;

/// Why the server could not start or had to stop.
#[derive(Debug)]
pub enum ServerError {
    /// The listening socket could not be opened.
    Bind {
        address: SocketAddr,
        source: io::Error,
    },
    /// The bets file could not be opened or is not empty.
    Storage(StorageError),
    /// The signal handlers could not be installed.
    Signals(io::Error),
}

impl ServerError {
    /// The process exit status for this error: 2 for anything that stops the
    /// server from starting (the user must change the configuration or environment).
    pub fn exit_status(&self) -> i32 {
        2
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::Bind { address, source } => write!(
                f,
                "could not listen on {address}: {source}; pick another SERVER_PORT \
                 (0 for any free port) or SERVER_IP"
            ),
            ServerError::Storage(e) => write!(f, "{e}"),
            ServerError::Signals(e) => write!(f, "could not install the signal handlers: {e}"),
        }
    }
}

impl std::error::Error for ServerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ServerError::Bind { source, .. } | ServerError::Signals(source) => Some(source),
            ServerError::Storage(e) => Some(e),
        }
    }
}

impl From<StorageError> for ServerError {
    fn from(e: StorageError) -> Self {
        ServerError::Storage(e)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The registry is a plain map changed in single calls; a panic elsewhere
    // cannot leave it half updated.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The open connections, so shutdown can reach their sockets. Its size is the
/// number of connections being served.
#[derive(Default)]
struct OpenConnections {
    streams: Mutex<HashMap<u64, (SocketAddr, TcpStream)>>,
}

impl OpenConnections {
    fn count(&self) -> usize {
        lock(&self.streams).len()
    }

    fn add(&self, id: u64, peer: SocketAddr, stream: TcpStream) {
        lock(&self.streams).insert(id, (peer, stream));
    }

    fn remove(&self, id: u64) {
        lock(&self.streams).remove(&id);
    }

    /// Shuts `how` on every open socket; returns their peers.
    fn shut_all(&self, how: SocketShutdown) -> Vec<SocketAddr> {
        lock(&self.streams)
            .values()
            .map(|(peer, stream)| {
                // The peer may have closed already; the handler will see it either way.
                let _ = stream.shutdown(how);
                *peer
            })
            .collect()
    }
}

/// Removes a connection from the registry when its handler ends, however it ends.
struct Registration {
    open: Arc<OpenConnections>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.open.remove(self.id);
    }
}

/// A bound server, ready to `run`.
pub struct Server {
    listener: TcpListener,
    config: ServerConfig,
    store: Arc<BetStore>,
    lottery: Lottery,
    shutdown: Shutdown,
    open: Arc<OpenConnections>,
}

/// Connections the kernel completes and queues for `accept`. std's
/// `TcpListener::bind` fixes it at 128: a thousand agencies starting at once
/// overflowed it on a busy 2-core machine (dropped handshakes, then a reset
/// connection mid-ingest). The kernel caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: i32 = 4096;

/// A listening socket on `address`, set up as `TcpListener::bind` does
/// (address reuse, close-on-exec) but with a backlog of `LISTEN_BACKLOG`.
fn listen(address: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&address.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

impl Server {
    /// Opens the listening socket and the bets file (which must be new or empty).
    pub fn bind(config: ServerConfig) -> Result<Server, ServerError> {
        let address = SocketAddr::new(config.ip, config.port);
        let listener = listen(address).map_err(|source| ServerError::Bind { address, source })?;
        let store = BetStore::create(&config.bets_file)?;
        Ok(Server {
            listener,
            lottery: Lottery::new(config.agencies),
            config,
            store: Arc::new(store),
            shutdown: Shutdown::new(),
            open: Arc::new(OpenConnections::default()),
        })
    }

    /// The address actually bound (its port is the real one when 0 was asked).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Installs the signal handlers, logs `action: config | result: success`
    /// (the server is ready from then on), serves until SIGTERM or SIGINT, then
    /// stops in order. Returns once every connection thread has ended and the
    /// bets file is flushed.
    pub fn run(self) -> Result<(), ServerError> {
        let wake_address = self.wake_address().map_err(ServerError::Signals)?;
        let shutdown = self.shutdown.clone();
        let (signals, signal_thread) = shutdown::on_signal(move |signal| {
            info!("action: shutdown | result: in_progress | signal: {signal}");
            shutdown.trigger();
            // Unblock accept(): it returns with this connection and sees the flag.
            if let Err(e) = TcpStream::connect_timeout(&wake_address, Duration::from_secs(1)) {
                warn!("action: shutdown | result: in_progress | detail: could not wake the accept loop: {e}");
            }
        })
        .map_err(ServerError::Signals)?;
        // Logged only now: a client or script that waits for this line (it names
        // the port) may count on the server being ready, SIGTERM included.
        let port = self.local_addr().map_or(self.config.port, |a| a.port());
        info!(
            "action: config | result: success | {}",
            self.config.describe(port)
        );

        let handlers = self.accept_until_shutdown();
        self.stop(handlers);
        signals.close();
        let _ = signal_thread.join();
        Ok(())
    }

    /// Where to connect to reach our own listener: loopback in place of "any".
    fn wake_address(&self) -> io::Result<SocketAddr> {
        let mut address = self.listener.local_addr()?;
        match address.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => address.set_ip(Ipv4Addr::LOCALHOST.into()),
            IpAddr::V6(ip) if ip.is_unspecified() => address.set_ip(Ipv6Addr::LOCALHOST.into()),
            _ => {}
        }
        Ok(address)
    }

    fn accept_until_shutdown(&self) -> Vec<JoinHandle<()>> {
        let mut handlers: Vec<JoinHandle<()>> = Vec::new();
        let mut next_id: u64 = 0;
        let mut backoff = Duration::from_millis(10);
        loop {
            let accepted = self.listener.accept();
            if self.shutdown.is_triggered() {
                break;
            }
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    error!(
                        "action: accept | result: fail | error: {e} | retry_in_ms: {}",
                        backoff.as_millis()
                    );
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_millis(MAX_ACCEPT_BACKOFF_MS));
                    continue;
                }
            };
            backoff = Duration::from_millis(10);
            handlers.retain(|h| !h.is_finished());
            if self.open.count() >= self.config.max_connections {
                warn!(
                    "action: conexion_rechazada | result: fail | peer: {peer} | error: BUSY | open_connections: {}",
                    self.open.count()
                );
                refuse_busy(stream);
                continue;
            }
            next_id += 1;
            match self.spawn_handler(next_id, stream, peer) {
                Ok(handle) => handlers.push(handle),
                Err(e) => error!(
                    "action: conexion | result: fail | peer: {peer} | error: could not start a thread: {e}"
                ),
            }
        }
        handlers
    }

    fn spawn_handler(
        &self,
        id: u64,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> io::Result<JoinHandle<()>> {
        let registry_clone = stream.try_clone()?;
        let connection = Connection::new(
            stream,
            connection::SERVER_READ_BUFFER_LEN,
            self.config.idle_timeout,
        )?;
        self.open.add(id, peer, registry_clone);
        let registration = Registration {
            open: Arc::clone(&self.open),
            id,
        };
        let handler = Handler {
            conn: connection,
            peer,
            lottery: self.lottery.clone(),
            store: Arc::clone(&self.store),
            shutdown: self.shutdown.clone(),
            draw_wait: self.config.draw_wait,
            pending: Vec::new(),
        };
        std::thread::Builder::new()
            .name(format!("conn-{id}"))
            .stack_size(HANDLER_STACK_BYTES)
            .spawn(move || {
                let _registration = registration;
                handler.run();
            })
    }

    fn stop(self, handlers: Vec<JoinHandle<()>>) {
        let Server {
            listener,
            store,
            lottery,
            open,
            ..
        } = self;
        let address = listener.local_addr().ok();
        drop(listener);
        info!(
            "action: close_listener | result: success | address: {}",
            address.map_or_else(|| "unknown".into(), |a| a.to_string())
        );
        // Shut the read side only: each handler finishes its request, answers
        // ERROR SHUTTING_DOWN on the still-open write side, and ends. Sockets
        // first, then the draw waiters: woken first, they could leave the
        // registry before their close is logged.
        for peer in open.shut_all(SocketShutdown::Read) {
            info!("action: close_connection | result: success | peer: {peer}");
        }
        lottery.begin_shutdown();
        let grace_end = Instant::now() + Duration::from_millis(SHUTDOWN_GRACE_MS);
        while handlers.iter().any(|h| !h.is_finished()) && Instant::now() < grace_end {
            std::thread::sleep(Duration::from_millis(5));
        }
        // Anyone still blocked (say, writing to a peer that does not read) is cut off.
        open.shut_all(SocketShutdown::Both);
        let mut panicked = 0;
        for handler in handlers {
            if handler.join().is_err() {
                panicked += 1;
            }
        }
        if panicked > 0 {
            error!("action: close_connection | result: fail | handler_panics: {panicked}");
        }
        match store.close() {
            Ok(()) => info!(
                "action: close_bets_file | result: success | path: {}",
                store.path().display()
            ),
            Err(e) => error!("action: close_bets_file | result: fail | error: {e}"),
        }
        info!("action: shutdown | result: success");
    }
}

/// Answers ERROR BUSY and closes, without ever blocking the accept loop.
fn refuse_busy(mut stream: TcpStream) {
    let Ok(bytes) = Reply::error(
        ErrorCode::Busy,
        "the server is serving as many connections as it allows; retry later",
    )
    .encode() else {
        return;
    };
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    // A fresh socket's send buffer is empty, so this small write completes at once.
    let _ = stream.write_all(&bytes);
    let _ = stream.shutdown(SocketShutdown::Write);
    // Unread input makes close() send a reset, which can destroy the reply in
    // flight: take in whatever the peer already sent.
    let mut sink = [0u8; 1024];
    for _ in 0..8 {
        match stream.read(&mut sink) {
            Ok(n) if n > 0 => continue,
            _ => break,
        }
    }
}

/// A batch appended to the file whose ack waits for the shared `fsync`.
struct PendingBatch {
    appended: Appended,
    agency: u32,
    count: u16,
    _permit: BatchPermit,
}

/// How a connection ended; decides the closing log line.
enum Ending {
    /// The peer closed between messages.
    PeerClosed,
    /// The server answered an error that closes the connection.
    Refused,
    /// The server is stopping.
    ShuttingDown,
    /// The connection failed or idled out (already logged).
    Failed,
}

/// Serves one connection: reads requests, answers each in order.
struct Handler {
    conn: Connection,
    peer: SocketAddr,
    lottery: Lottery,
    store: Arc<BetStore>,
    shutdown: Shutdown,
    draw_wait: Duration,
    pending: Vec<PendingBatch>,
}

impl Handler {
    fn run(mut self) {
        debug!("action: conexion | result: success | peer: {}", self.peer);
        let ending = self.serve();
        if matches!(ending, Ending::ShuttingDown) {
            self.send_final_error(ErrorCode::ShuttingDown, "the server is stopping");
        }
        debug!(
            "action: conexion_cerrada | result: success | peer: {} | reason: {}",
            self.peer,
            match ending {
                Ending::PeerClosed => "peer_closed",
                Ending::Refused => "refused",
                Ending::ShuttingDown => "shutting_down",
                Ending::Failed => "failed",
            }
        );
    }

    fn serve(&mut self) -> Ending {
        loop {
            if self.shutdown.is_triggered() {
                return self.settle().err().unwrap_or(Ending::ShuttingDown);
            }
            let request = match self.conn.next_buffered_request() {
                Ok(Some(request)) => request,
                Ok(None) => match self.wait_for_input() {
                    Ok(()) => continue,
                    Err(ending) => return ending,
                },
                Err(e) => {
                    if let Err(ending) = self.settle() {
                        return ending;
                    }
                    return self.refuse_message(&e);
                }
            };
            if let Err(ending) = self.handle(request) {
                return ending;
            }
        }
    }

    /// Answers bytes that do not form a valid message: log, ERROR, close.
    fn refuse_message(&mut self, e: &protocol::ProtocolError) -> Ending {
        warn!(
            "action: mensaje_invalido | result: fail | peer: {} | code: {} | error: {e}",
            self.peer,
            e.code().name()
        );
        self.send_final_error(e.code(), &e.to_string());
        Ending::Refused
    }

    /// Nothing whole is buffered: take in what is already on the socket while
    /// batches wait for their ack; otherwise ack them and block for more.
    fn wait_for_input(&mut self) -> Result<(), Ending> {
        if !self.pending.is_empty()
            && self.pending.len() < MAX_PENDING_BATCHES
            && matches!(self.conn.fill(false), Ok(Fill::Data))
        {
            return Ok(());
        }
        self.settle()?;
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

    /// Makes every pending batch durable (one shared `fsync`), queues its ack or
    /// its ERROR STORAGE, and sends everything queued.
    fn settle(&mut self) -> Result<(), Ending> {
        for batch in std::mem::take(&mut self.pending) {
            let reply = match self.store.sync(batch.appended) {
                Ok(()) => {
                    info!(
                        "action: apuesta_recibida | result: success | cantidad: {} | agencia: {}",
                        batch.count, batch.agency
                    );
                    Reply::BetsAck { count: batch.count }
                }
                Err(e) => {
                    error!(
                        "action: apuesta_recibida | result: fail | cantidad: {} | agencia: {} | error: {e}",
                        batch.count, batch.agency
                    );
                    Reply::error(ErrorCode::Storage, &storage_detail(&e))
                }
            };
            self.queue(&reply);
        }
        self.flush()
    }

    fn queue(&mut self, reply: &Reply) {
        if let Err(e) = self.conn.queue_reply(reply) {
            // Our own replies are built within the limits; say so loudly if not.
            error!(
                "action: responder | result: fail | peer: {} | error: {e}",
                self.peer
            );
        }
    }

    fn flush(&mut self) -> Result<(), Ending> {
        self.conn.flush().map_err(|e| {
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

    /// Sends a last ERROR before the connection closes; the peer may be gone.
    fn send_final_error(&mut self, code: ErrorCode, detail: &str) {
        self.queue(&Reply::error(code, detail));
        let _ = self.conn.flush();
    }

    /// Answers one request. Error replies go out in order after the acks of
    /// earlier batches; `Err` ends the connection.
    fn handle(&mut self, request: Request) -> Result<(), Ending> {
        let agency = request.agency();
        if !self.lottery.knows_agency(agency) {
            self.settle()?;
            let detail = format!(
                "agency {agency} is not taking part; agencies are numbered 1 to {}",
                self.lottery.agencies()
            );
            warn!(
                "action: agencia_desconocida | result: fail | peer: {} | agencia: {agency} | error: {detail}",
                self.peer
            );
            self.queue(&Reply::error(ErrorCode::UnknownAgency, &detail));
            return self.flush();
        }
        match request {
            Request::Bets { agency, batch } => self.handle_bets(agency, &batch),
            Request::Finish { agency } => self.handle_finish(agency),
            Request::GetWinners { agency } => self.handle_get_winners(agency),
        }
    }

    fn refuse_batch(&mut self, count: usize, code: ErrorCode, detail: &str) -> Result<(), Ending> {
        self.settle()?;
        warn!(
            "action: apuesta_recibida | result: fail | cantidad: {count} | peer: {} | code: {} | error: {detail}",
            self.peer,
            code.name()
        );
        self.queue(&Reply::error(code, detail));
        if code.closes_connection() {
            let _ = self.flush();
            return Err(Ending::Refused);
        }
        self.flush()
    }

    fn handle_bets(&mut self, agency: u32, batch: &BetBatch) -> Result<(), Ending> {
        let count = batch.len();
        let bets: Vec<BetRef<'_>> = batch.bets().collect();
        let today = Date::today_utc();
        if let Some((index, reason)) = bets
            .iter()
            .enumerate()
            .find_map(|(i, bet)| bet.validate(today).err().map(|e| (i, e)))
        {
            let detail = format!("bet at index {index} (counting from 0): {reason}");
            return self.refuse_batch(count, ErrorCode::InvalidBet, &detail);
        }
        let permit = match self.lottery.begin_batch(agency) {
            Ok(permit) => permit,
            Err(BatchRefusal::AgencyFinished) => {
                let detail = format!(
                    "agency {agency} already sent FINISH; its bets are closed and this batch was not stored"
                );
                return self.refuse_batch(count, ErrorCode::AgencyFinished, &detail);
            }
            Err(BatchRefusal::ShuttingDown) => {
                self.settle()?;
                return Err(Ending::ShuttingDown);
            }
        };
        let appended = match self.store.append(agency, bets.iter().copied()) {
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
        self.pending.push(PendingBatch {
            appended,
            agency,
            // The decoder read `count` from a u16, so it fits.
            count: u16::try_from(count).unwrap_or(u16::MAX),
            _permit: permit,
        });
        Ok(())
    }

    fn handle_finish(&mut self, agency: u32) -> Result<(), Ending> {
        self.settle()?;
        let outcome = self.lottery.finish(agency);
        info!(
            "action: agencia_finalizo | result: success | agencia: {agency} | total_agencias_finalizadas: {}{}",
            outcome.finished_count,
            if outcome.first_time {
                ""
            } else {
                " | repetido: true"
            }
        );
        self.queue(&Reply::FinishAck { agency });
        self.flush()?;
        if outcome.draw_due {
            let started = Instant::now();
            match self.lottery.hold_draw(self.store.path()) {
                Ok((winners, reading)) => info!(
                    "action: sorteo | result: success | agencias: {} | apuestas: {} | ganadores: {} | draw_ms: {} | total_ms: {}",
                    self.lottery.agencies(),
                    winners.bets(),
                    winners.total(),
                    reading.as_millis(),
                    started.elapsed().as_millis()
                ),
                Err(e) => error!("action: sorteo | result: fail | error: {e}"),
            }
        }
        Ok(())
    }

    fn handle_get_winners(&mut self, agency: u32) -> Result<(), Ending> {
        self.settle()?;
        match self.lottery.wait_for_winners(self.draw_wait) {
            WinnersAnswer::Drawn(winners) => {
                let list = winners.of(agency);
                for reply in protocol::winners_replies(&list.documents) {
                    self.queue(&reply);
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
                self.queue(&Reply::NoWinners);
            }
            WinnersAnswer::Failed(reason) => {
                error!(
                    "action: ganadores_enviados | result: fail | agencia: {agency} | error: {reason}"
                );
                let detail = format!("the draw could not read the stored bets: {reason}");
                self.queue(&Reply::error(ErrorCode::Storage, &detail));
            }
            WinnersAnswer::ShuttingDown => return Err(Ending::ShuttingDown),
        }
        self.flush()
    }
}

fn storage_detail(e: &StorageError) -> String {
    format!("the batch was not stored: {e}; nothing of it was kept, send it again later")
}
