//! The server: the listening socket, the accept loop, who is let in, and the
//! orderly stop.
//!
//! `Server::bind` opens the round's files (continuing a round they hold), the
//! access rules (`auth`), TLS if configured, and the socket; `Server::run`
//! serves until the `Shutdown` it is given is triggered (the binary triggers it
//! on SIGTERM or SIGINT, tests directly). Each admitted connection gets its own
//! OS thread running a `Handler`. The `Registry` (`limits`) bounds connections
//! in all, those without HELLO, and those of one agency; a connection it
//! refuses gets ERROR BUSY from the accept loop itself (or, inside TLS, from
//! one refusing thread), so the number of threads stays bounded.
//!
//! Stopping: the trigger connects to our own address so the blocked `accept`
//! returns. The accept loop then closes the listener, shuts the read side of
//! every open socket (their handlers answer ERROR SHUTTING_DOWN and end), wakes
//! the draw waiters, joins every handler thread and flushes the bets file,
//! logging each step.

pub(crate) mod auth;
mod bets;
pub(crate) mod draw;
mod finish;
pub(crate) mod handler;
mod hello;
pub(crate) mod limits;
mod listener;
pub(crate) mod lottery;
mod outbox;
mod refusal;
pub(crate) mod verify;
mod winners;

use crate::app::server_settings::ServerConfig;
use crate::app::shutdown::Shutdown;
use crate::app::startup::START_FAILED;
use crate::net::tls::{self, TlsError};
use crate::net::transport::TlsSide;
use crate::server::auth::{Access, Tokens, TokensError};
use crate::server::handler::Context;
use crate::server::limits::{LogLimiter, Registry};
use crate::server::lottery::Lottery;
use crate::storage::{BetStore, Recovered, StorageError};
use listener::{TlsRefuser, descriptors_for_connections, listen};
use log::{error, info, warn};
use std::fmt;
use std::io;
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, Shutdown as SocketShutdown, SocketAddr, TcpListener, TcpStream,
};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// After the stop starts, how long handlers get to finish their current request
/// before their sockets are shut in both directions.
const SHUTDOWN_GRACE_MS: u64 = 500;
/// Exit status after a failed flush to disk: restart on the same file.
pub const FLUSH_FAILED: u8 = 3;

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
    /// The tokens file cannot be used.
    Tokens(TokensError),
    /// The TLS certificate or key cannot be used.
    Tls(TlsError),
    /// Connection threads panicked (a bug); the server stopped in order anyway.
    HandlersPanicked { count: usize },
    /// The stop was requested while the round was read back: nothing was
    /// changed, and a clean stop's status (0) follows.
    Stopped,
    /// A flush of the bets file failed: the server acknowledged nothing more
    /// and stopped in order; a restart on the same file recovers from the disk.
    FlushFailed(StorageError),
}

impl ServerError {
    /// Whether the server never started serving (logged as a configuration
    /// failure); else it failed while running.
    pub fn is_start_failure(&self) -> bool {
        !matches!(
            self,
            ServerError::HandlersPanicked { .. }
                | ServerError::Stopped
                | ServerError::FlushFailed(_)
        )
    }

    /// The process exit status for this error: 2 for anything that stops the
    /// server from starting (the user must change the configuration or
    /// environment), 3 when the disk refused a flush while serving, 1 for any
    /// other failure while serving.
    pub fn exit_status(&self) -> u8 {
        match self {
            ServerError::HandlersPanicked { .. } => 1,
            ServerError::Stopped => 0,
            ServerError::FlushFailed(_) => FLUSH_FAILED,
            _ => START_FAILED,
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
            ServerError::Tokens(e) => write!(f, "{e}"),
            ServerError::Tls(e) => write!(f, "{e}"),
            ServerError::HandlersPanicked { count } => write!(
                f,
                "{count} connection threads panicked; this is a bug, please report it with the log"
            ),
            ServerError::FlushFailed(e) => write!(f, "{e}"),
            ServerError::Stopped => write!(
                f,
                "stopped while reading the round back; nothing was changed, and the next start \
                 reads it again"
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

/// A bound server, ready to `run`.
pub struct Server {
    listener: TcpListener,
    config: ServerConfig,
    context: Arc<Context>,
    registry: Arc<Registry>,
    tls: Option<TlsSide>,
}
/// Who may open a session: the tokens file's agencies, else loopback peers only.
fn access_of(config: &ServerConfig) -> Result<Access, ServerError> {
    let Some(path) = &config.tokens_file else {
        return Ok(Access::LoopbackOnly);
    };
    let (tokens, readable) = Tokens::load(path, config.agencies).map_err(ServerError::Tokens)?;
    if readable {
        warn!(
            "action: config | result: in_progress | path: {} | detail: the tokens file can be read by other users; run chmod 600 on it",
            crate::text::shown(path)
        );
    }
    Ok(Access::Tokens(tokens))
}

/// The TLS side of the server, when a certificate and key are configured.
fn tls_of(config: &ServerConfig) -> Result<Option<TlsSide>, ServerError> {
    let Some((cert, key)) = &config.tls else {
        return Ok(None);
    };
    if std::fs::metadata(key).is_ok_and(|meta| crate::files::open_to_others(&meta)) {
        warn!(
            "action: config | result: in_progress | path: {} | detail: the TLS private key can be read by other users; run chmod 600 on it",
            crate::text::shown(key)
        );
    }
    let server = tls::server_config(cert, key).map_err(ServerError::Tls)?;
    Ok(Some(TlsSide::Server(server)))
}

/// Lowers the connection limit to what the open-files limit allows.
fn limit_connections_to_descriptors(config: &mut ServerConfig) {
    let allowed = descriptors_for_connections();
    if config.max_connections as u64 > allowed {
        warn!(
            "action: config | result: in_progress | detail: SERVER_MAX_CONNECTIONS lowered from {} to {allowed}, what the open-files limit allows (raise it with ulimit -n)",
            config.max_connections
        );
        config.max_connections = usize::try_from(allowed).unwrap_or(usize::MAX);
    }
}

/// Says what a resumed round held, and warns of what the user should know.
fn log_recovery(store: &BetStore, recovered: &Recovered) {
    if recovered.is_resumed() {
        info!(
            "action: ronda_recuperada | result: success | apuestas: {} | agencias_finalizadas: {} | bytes_cortados: {} | path: {}",
            recovered.bets,
            recovered.finished.len(),
            recovered.cut_bytes,
            crate::text::shown(store.path())
        );
    }
    if let Some(damaged) = &recovered.damaged {
        warn!(
            "action: ronda_recuperada | result: in_progress | path: {} | linea: {} | bytes: {} | guardado_en: {} | detail: the bets file ended in a damaged tail ({}), with no good row after it: it was cut off and kept aside, is not counted, and its agencies send those bets again",
            crate::text::shown(store.path()),
            damaged.line,
            damaged.bytes,
            crate::text::shown(&damaged.saved_to),
            crate::text::escape(&damaged.reason)
        );
    }
    if recovered.records_cut_bytes > 0 {
        warn!(
            "action: ronda_recuperada | result: in_progress | path: {} | bytes_cortados: {} | detail: the last FINISH record was cut short while being written (it was never acknowledged): it was cut off, and its agency sends FINISH again",
            crate::text::shown(&store.records_path()),
            recovered.records_cut_bytes
        );
    }
    if recovered.records_missing {
        warn!(
            "action: ronda_recuperada | result: in_progress | path: {} | detail: no FINISH records were beside the bets file; they start anew, and agencies that had finished send FINISH again",
            crate::text::shown(&store.records_path())
        );
    }
    if recovered.readable_by_others {
        warn!(
            "action: config | result: in_progress | path: {} | detail: the bets file holds personal data and other users can read it; run chmod 600 on it",
            crate::text::shown(store.path())
        );
    }
}

impl Server {
    /// Reads the access rules and TLS settings, opens the bets file (continuing
    /// the round it holds, if any) and the listening socket. When every agency
    /// of a resumed round had finished, the draw is held again here, before
    /// any agency is served.
    pub fn bind(config: ServerConfig) -> Result<Server, ServerError> {
        Server::bind_until(config, &Shutdown::new())
    }

    /// `bind`, stopping early (`ServerError::Stopped`) when `shutdown` is
    /// triggered while a round is read back: a long start can be stopped.
    pub fn bind_until(
        mut config: ServerConfig,
        shutdown: &Shutdown,
    ) -> Result<Server, ServerError> {
        let access = access_of(&config)?;
        let tls = tls_of(&config)?;
        limit_connections_to_descriptors(&mut config);
        let keep_going = || !shutdown.is_triggered();
        let opened = BetStore::open_until(&config.bets_file, config.agencies, &keep_going);
        let (store, recovered) = match opened {
            Err(StorageError::Interrupted { .. }) => return Err(ServerError::Stopped),
            other => other?,
        };
        log_recovery(&store, &recovered);
        let address = SocketAddr::new(config.ip, config.port);
        let listener = listen(address).map_err(|source| ServerError::Bind { address, source })?;
        let lottery = Lottery::new(config.agencies, recovered.finished.keys().copied());
        let store = Arc::new(store);
        if recovered.finished.len() == config.agencies as usize {
            info!(
                "action: sorteo | result: in_progress | detail: every agency of the round read back had finished: drawing before serving"
            );
        }
        lottery.hold_draw_if_due(&store, &keep_going);
        if shutdown.is_triggered() {
            return Err(ServerError::Stopped);
        }
        let registry = Arc::new(Registry::new(config.max_connections));
        let context = Arc::new(Context {
            lottery,
            store,
            access,
            registry: Arc::clone(&registry),
            log_limiter: LogLimiter::default(),
            draw_wait: config.draw_wait,
            hello_timeout: config.hello_timeout,
        });
        Ok(Server {
            listener,
            config,
            context,
            registry,
            tls,
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
        info!(
            "action: config | result: success | {}",
            self.config.describe(wake_address.port())
        );
        if matches!(self.context.access, Access::LoopbackOnly) {
            warn!(
                "action: config | result: in_progress | autenticacion: solo_loopback | detail: no SERVER_TOKENS_FILE: any token is accepted, so only peers on this machine (127.0.0.0/8, ::1) are served; set SERVER_TOKENS_FILE to serve agencies elsewhere"
            );
        }
        let refuser = self.tls.as_ref().and_then(TlsRefuser::start);
        let handlers = self.accept_until(&shutdown, refuser.as_ref());
        drop(refuser);
        let store = Arc::clone(&self.context.store);
        let panicked = self.stop(handlers);
        if let Some(e) = store.poisoned() {
            return Err(ServerError::FlushFailed(e));
        }
        match panicked {
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

    /// Stops in order; returns how many handler threads had panicked.
    fn stop(self, handlers: Vec<JoinHandle<()>>) -> usize {
        let Server {
            listener,
            context,
            registry,
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
        for peer in registry.shut_all(SocketShutdown::Read) {
            info!("action: close_connection | result: success | peer: {peer}");
        }
        context.lottery.begin_shutdown();
        let grace_end = Instant::now() + Duration::from_millis(SHUTDOWN_GRACE_MS);
        while handlers.iter().any(|h| !h.is_finished()) && Instant::now() < grace_end {
            std::thread::sleep(Duration::from_millis(5));
        }
        // Anyone still blocked (say, writing to a peer that does not read) is cut off.
        registry.shut_all(SocketShutdown::Both);
        let panicked = handlers
            .into_iter()
            .map(JoinHandle::join)
            .filter(Result::is_err)
            .count();
        if panicked > 0 {
            error!("action: close_connection | result: fail | handler_panics: {panicked}");
        }
        match context.store.close() {
            Ok(()) => info!(
                "action: close_bets_file | result: success | path: {}",
                crate::text::shown(context.store.path())
            ),
            Err(e) => error!("action: close_bets_file | result: fail | error: {e}"),
        }
        info!("action: shutdown | result: success");
        panicked
    }
}
