//! The server: the listening socket, the accept loop, the connection limit, and
//! the orderly stop.
//!
//! `Server::bind` opens the socket and the bets file; `Server::run` serves until
//! the `Shutdown` it is given is triggered (the binary triggers it on SIGTERM or
//! SIGINT, tests directly). Each accepted connection gets its own OS thread
//! running a `Handler` (`handler`). Beyond `max_connections` open connections a
//! new one gets ERROR BUSY and is closed by the accept loop itself, so the number
//! of threads stays bounded.
//!
//! Stopping: the trigger connects to our own address so the blocked `accept`
//! returns. The accept loop then closes the listener, shuts the read side of
//! every open socket (their handlers answer ERROR SHUTTING_DOWN and end), wakes
//! the draw waiters, joins every handler thread and flushes the bets file,
//! logging each step.

use crate::config::ServerConfig;
use crate::connection::{self, Connection};
use crate::draw;
use crate::handler::Handler;
use crate::locks::lock;
use crate::lottery::Lottery;
use crate::protocol::{ErrorCode, Reply};
use crate::shutdown::Shutdown;
use crate::storage::{BetStore, Recovered, StorageError};
use log::{error, info, warn};
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, Shutdown as SocketShutdown, SocketAddr, TcpListener, TcpStream,
};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Stack of a connection thread: handlers keep little on the stack.
const HANDLER_STACK_BYTES: usize = 256 * 1024;
/// After the stop starts, how long handlers get to finish their current request
/// before their sockets are shut in both directions.
const SHUTDOWN_GRACE_MS: u64 = 500;
/// Longest pause of the accept loop after repeated accept errors (e.g. out of fds).
const MAX_ACCEPT_BACKOFF_MS: u64 = 1000;
/// Connections the kernel completes and queues for `accept`. std's
/// `TcpListener::bind` fixes it at 128, which a thousand agencies starting at
/// once overflowed (dropped handshakes, then a reset connection mid-ingest). The
/// kernel caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: i32 = 4096;

/// Why the server could not start or had to stop.
#[derive(Debug)]
pub enum ServerError {
    /// The listening socket could not be opened.
    Bind {
        address: SocketAddr,
        source: io::Error,
    },
    /// The round's files could not be opened or read back.
    Storage(StorageError),
    /// Connection threads panicked (a bug); the server stopped in order anyway.
    HandlersPanicked { count: usize },
}

impl ServerError {
    /// The process exit status for this error: 2 for anything that stops the
    /// server from starting (the user must change the configuration or
    /// environment), 1 for a failure while serving.
    pub fn exit_status(&self) -> u8 {
        match self {
            ServerError::HandlersPanicked { .. } => 1,
            _ => 2,
        }
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::Bind { address, source } if source.kind() == io::ErrorKind::AddrInUse => {
                write!(
                    f,
                    "could not listen on {address}: the port is in use; is another server still \
                     running? Stop it, or pick another SERVER_PORT (0 picks a free one)"
                )
            }
            ServerError::Bind { address, source } => write!(
                f,
                "could not listen on {address}: {source}; pick another SERVER_PORT \
                 (0 for any free port) or SERVER_IP"
            ),
            ServerError::Storage(e) => write!(f, "{e}"),
            ServerError::HandlersPanicked { count } => write!(
                f,
                "{count} connection threads panicked; this is a bug, please report it with the log"
            ),
        }
    }
}

// `Display` already shows the inner error, so it is not also a `source`.
impl std::error::Error for ServerError {}

impl From<StorageError> for ServerError {
    fn from(e: StorageError) -> Self {
        ServerError::Storage(e)
    }
}

/// The open connections, so the stop can reach their sockets. Its size is the
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
    open: Arc<OpenConnections>,
}

/// Says what a resumed round held, and warns of what the user should know.
fn log_recovery(store: &BetStore, recovered: &Recovered) {
    if recovered.is_resumed() {
        info!(
            "action: ronda_recuperada | result: success | apuestas: {} | agencias_finalizadas: {} | bytes_cortados: {} | path: {}",
            recovered.bets,
            recovered.finished.len(),
            recovered.cut_bytes,
            store.path().display()
        );
    }
    if recovered.records_missing {
        warn!(
            "action: ronda_recuperada | result: in_progress | path: {} | detail: no FINISH records were beside the bets file; they start anew, and agencies that had finished send FINISH again",
            store.records_path().display()
        );
    }
    if recovered.readable_by_others {
        warn!(
            "action: config | result: in_progress | path: {} | detail: the bets file holds personal data and other users can read it; run chmod 600 on it",
            store.path().display()
        );
    }
}

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
    /// Opens the bets file (continuing the round it holds, if any) and the
    /// listening socket. When every agency of a resumed round had finished,
    /// the draw is held again here, before any agency is served.
    pub fn bind(config: ServerConfig) -> Result<Server, ServerError> {
        let (store, recovered) = BetStore::open(&config.bets_file, config.agencies)?;
        log_recovery(&store, &recovered);
        let address = SocketAddr::new(config.ip, config.port);
        let listener = listen(address).map_err(|source| ServerError::Bind { address, source })?;
        let lottery = Lottery::new(config.agencies, recovered.finished.keys().copied());
        let store = Arc::new(store);
        if lottery.claim_draw() {
            lottery.hold_draw(|| draw::compute_winners(store.path(), &store.reader()?));
        }
        Ok(Server {
            listener,
            lottery,
            config,
            store,
            open: Arc::new(OpenConnections::default()),
        })
    }

    /// The address actually bound (its port is the real one when 0 was asked).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Logs `action: config | result: success` (the server is ready from then
    /// on), serves until `shutdown` is triggered, then stops in order. Returns
    /// once every connection thread has ended and the bets file is flushed.
    pub fn run(self, shutdown: Shutdown) -> Result<(), ServerError> {
        let wake_address = self.wake_address();
        shutdown.on_trigger(move || {
            // Unblock accept(): it returns with this connection and sees the flag.
            if let Err(e) = TcpStream::connect_timeout(&wake_address, Duration::from_secs(1)) {
                warn!(
                    "action: shutdown | result: in_progress | detail: could not wake the accept loop: {e}"
                );
            }
        });
        let port = wake_address.port();
        info!(
            "action: config | result: success | {}",
            self.config.describe(port)
        );
        let handlers = self.accept_until(&shutdown);
        match self.stop(handlers) {
            0 => Ok(()),
            count => Err(ServerError::HandlersPanicked { count }),
        }
    }

    /// Where to connect to reach our own listener: loopback in place of "any".
    fn wake_address(&self) -> SocketAddr {
        let mut address = self
            .listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::new(self.config.ip, self.config.port));
        match address.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => address.set_ip(Ipv4Addr::LOCALHOST.into()),
            IpAddr::V6(ip) if ip.is_unspecified() => address.set_ip(Ipv6Addr::LOCALHOST.into()),
            _ => {}
        }
        address
    }

    fn accept_until(&self, shutdown: &Shutdown) -> Vec<JoinHandle<()>> {
        let mut handlers: Vec<JoinHandle<()>> = Vec::new();
        let mut next_id: u64 = 0;
        let mut backoff = Duration::from_millis(10);
        loop {
            let accepted = self.listener.accept();
            if shutdown.is_triggered() {
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
            match self.spawn_handler(next_id, stream, peer, shutdown) {
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
        shutdown: &Shutdown,
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
        let handler = Handler::new(
            connection,
            peer,
            self.lottery.clone(),
            Arc::clone(&self.store),
            shutdown.clone(),
            self.config.draw_wait,
        );
        std::thread::Builder::new()
            .name(format!("conn-{id}"))
            .stack_size(HANDLER_STACK_BYTES)
            .spawn(move || {
                let _registration = registration;
                handler.run();
            })
    }

    /// Stops in order; returns how many handler threads had panicked.
    fn stop(self, handlers: Vec<JoinHandle<()>>) -> usize {
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
        let panicked = handlers
            .into_iter()
            .map(JoinHandle::join)
            .filter(Result::is_err)
            .count();
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
        panicked
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
