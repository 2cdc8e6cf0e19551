//! The listener: the listening socket, the accept loop, and admission. Each
//! accepted connection gets a slot in the `Registry` and a thread of its own,
//! or ERROR BUSY (inside TLS from one thread of its own, since BUSY must be
//! said after a handshake the accept loop cannot wait for).

use super::Server;
use super::handler::Handler;
use super::limits::{Refusal, Registration, suppressed_note};
use crate::app::shutdown::Shutdown;
use crate::net::connection::{self, Connection};
use crate::net::transport::{Stream, TlsSide};
use crate::wire::{ErrorCode, Reply};
use log::{error, warn};
use socket2::{Domain, Protocol, Socket as RawSocket, Type};
use std::io::{self, Read, Write};
use std::net::{Shutdown as SocketShutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Stack of a connection thread: handlers keep little on the stack.
const HANDLER_STACK_BYTES: usize = 256 * 1024;
/// Longest pause of the accept loop after repeated accept errors (e.g. out of fds).
const MAX_ACCEPT_BACKOFF_MS: u64 = 1000;
/// Connections the kernel completes and queues for `accept`. std's
/// `TcpListener::bind` fixes it at 128, which a thousand agencies starting at
/// once overflowed (dropped handshakes, then a reset connection mid-ingest). The
/// kernel caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: i32 = 4096;
/// File descriptors kept for what is not a connection: the round's files, the
/// listener, the draw's readers, the signal pipe.
const RESERVED_DESCRIPTORS: u64 = 64;

/// Refusals inside TLS waiting for the refusing thread; past this they are just closed.
const TLS_REFUSALS_QUEUED: usize = 64;
/// How long a refused TLS peer gets to complete the handshake to hear BUSY.
const TLS_REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);

/// A listening socket on `address`, set up as `TcpListener::bind` does
/// (address reuse, close-on-exec) but with a backlog of `LISTEN_BACKLOG`.
pub(super) fn listen(address: SocketAddr) -> io::Result<TcpListener> {
    let socket = RawSocket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&address.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// Raises the open-files limit to its hard limit and returns the connections
/// the descriptors allow (each connection uses one).
pub(super) fn descriptors_for_connections() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if let Some(hard) = limit.maximum
        && limit.current != Some(hard)
    {
        let raised = Rlimit {
            current: Some(hard),
            maximum: Some(hard),
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            warn!(
                "action: config | result: in_progress | detail: could not raise the open-files limit: {e}"
            );
        }
    }
    let soft = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    soft.saturating_sub(RESERVED_DESCRIPTORS).max(1)
}

impl Server {
    /// Accepts connections until `shutdown` is triggered; returns the threads
    /// of the connections still being served.
    pub(super) fn accept_until(
        &self,
        shutdown: &Shutdown,
        refuser: Option<&TlsRefuser>,
    ) -> Vec<JoinHandle<()>> {
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
            next_id += 1;
            let tcp = Arc::new(stream);
            let heard = Arc::new(AtomicBool::new(false));
            if !self.admit(next_id, &tcp, peer, &heard, refuser) {
                continue;
            }
            let registration = Registration {
                registry: Arc::clone(&self.registry),
                id: next_id,
            };
            match self.spawn_handler(next_id, tcp, heard, peer, shutdown, registration) {
                Ok(handle) => handlers.push(handle),
                Err(e) => error!(
                    "action: conexion | result: fail | peer: {peer} | error: could not start a thread: {e}"
                ),
            }
        }
        handlers
    }

    /// Takes a slot for the new connection `id`, logging a connection it
    /// evicted; or refuses it (BUSY) and says false.
    fn admit(
        &self,
        id: u64,
        tcp: &Arc<TcpStream>,
        peer: SocketAddr,
        heard: &Arc<AtomicBool>,
        refuser: Option<&TlsRefuser>,
    ) -> bool {
        match self
            .registry
            .admit(id, peer, Arc::clone(tcp), Arc::clone(heard))
        {
            Ok(evicted) => {
                if let Some(evicted) = evicted
                    && let Some(suppressed) = self.context.log_limiter.allow(evicted.ip())
                {
                    warn!(
                        "action: conexion_desalojada | result: fail | peer: {evicted} | detail: it had not sent HELLO, and a new connection needed its slot{}",
                        suppressed_note(suppressed)
                    );
                }
                true
            }
            Err(refusal) => {
                if let Some(suppressed) = self.context.log_limiter.allow(peer.ip()) {
                    warn!(
                        "action: conexion_rechazada | result: fail | peer: {peer} | error: BUSY | open_connections: {} | detail: {}{}",
                        self.registry.count(),
                        refusal.detail(),
                        suppressed_note(suppressed)
                    );
                }
                match refuser {
                    Some(refuser) => refuser.refuse(Arc::clone(tcp), refusal),
                    None => refuse_busy(tcp, refusal),
                }
                false
            }
        }
    }

    fn spawn_handler(
        &self,
        id: u64,
        tcp: Arc<TcpStream>,
        heard: Arc<AtomicBool>,
        peer: SocketAddr,
        shutdown: &Shutdown,
        registration: Registration,
    ) -> io::Result<JoinHandle<()>> {
        let mut stream = Stream::new(tcp, self.tls.as_ref()).map_err(io::Error::other)?;
        stream.socket().tell_when_heard(heard);
        let connection = Connection::new(
            stream,
            connection::SERVER_READ_BUFFER_LEN,
            self.config.idle_timeout,
        )?;
        let handler = Handler::new(
            id,
            connection,
            peer,
            Arc::clone(&self.context),
            shutdown.clone(),
        );
        std::thread::Builder::new()
            .name(format!("conn-{id}"))
            .stack_size(HANDLER_STACK_BYTES)
            .spawn(move || {
                let _registration = registration;
                handler.run();
            })
    }
}

/// Answers ERROR BUSY on a plain connection and closes it, without ever
/// blocking the accept loop.
fn refuse_busy(stream: &TcpStream, refusal: Refusal) {
    let Ok(bytes) = Reply::error(ErrorCode::Busy, refusal.detail()).encode() else {
        return;
    };
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    let mut stream = stream;
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

/// Refuses TLS connections in a thread of its own: BUSY must be said inside
/// TLS, after a handshake the accept loop cannot wait for. One thread, a
/// bounded queue; a refusal that does not fit is just closed.
pub(super) struct TlsRefuser {
    queue: Option<SyncSender<(Arc<TcpStream>, Refusal)>>,
    thread: Option<JoinHandle<()>>,
}

impl TlsRefuser {
    pub(super) fn start(tls: &TlsSide) -> Option<TlsRefuser> {
        let TlsSide::Server(config) = tls else {
            return None;
        };
        let tls = TlsSide::Server(Arc::clone(config));
        let (queue, refusals) = std::sync::mpsc::sync_channel(TLS_REFUSALS_QUEUED);
        let thread = std::thread::Builder::new()
            .name("tls-refusals".into())
            .spawn(move || refuse_in_tls(&tls, &refusals))
            .ok();
        Some(TlsRefuser {
            queue: Some(queue),
            thread,
        })
    }

    fn refuse(&self, tcp: Arc<TcpStream>, refusal: Refusal) {
        if let Some(queue) = &self.queue
            && let Err(TrySendError::Full((tcp, _)) | TrySendError::Disconnected((tcp, _))) =
                queue.try_send((tcp, refusal))
        {
            let _ = tcp.shutdown(SocketShutdown::Both);
        }
    }
}

impl Drop for TlsRefuser {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it has answered what is queued.
        self.queue = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn refuse_in_tls(tls: &TlsSide, refusals: &Receiver<(Arc<TcpStream>, Refusal)>) {
    for (tcp, refusal) in refusals {
        let Ok(stream) = Stream::new(Arc::clone(&tcp), Some(tls)) else {
            continue;
        };
        if let Ok(mut conn) = Connection::new(stream, 64, TLS_REFUSAL_TIMEOUT)
            && conn
                .complete_handshake(Instant::now() + TLS_REFUSAL_TIMEOUT)
                .is_ok()
            && conn
                .queue_reply(&Reply::error(ErrorCode::Busy, refusal.detail()))
                .is_ok()
        {
            let _ = conn.flush();
        }
        let _ = tcp.shutdown(SocketShutdown::Both);
    }
}
