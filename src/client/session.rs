//! Talking to the server: `Connector` opens connections (plain or TLS) that a
//! stop request can cut, and `Session` is one connection with the client's
//! error mapping: HELLO and its WELCOME, requests out, replies in, and every
//! failure turned into the `ClientError` that says what happened.

use super::error::{ClientError, TlsFailure};
use super::retry::WaitReport;
use crate::app::client_settings::ClientConfig;
use crate::app::locks::lock;
use crate::app::shutdown::Shutdown;
use crate::net::connection::{self, Connection, ConnectionError};
use crate::net::tls;
use crate::net::transport::{Stream, TlsSide};
use crate::wire::digest::Digest;
use crate::wire::{AgencyStatus, PROTOCOL_VERSION, ProtocolError, Reply, Request};
use log::info;
use std::io;
use std::net::{Shutdown as SocketShutdown, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest wait for one connection attempt to be accepted.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The socket in use, shared with the stop request's waker, which shuts it to
/// end a blocked read.
type CurrentSocket = Arc<Mutex<Option<Arc<TcpStream>>>>;

/// What a WELCOME said.
pub(super) struct Welcome {
    pub stored: u64,
    pub status: AgencyStatus,
    pub digest: Digest,
}

/// Opens the agency's connections to the server.
pub(super) struct Connector {
    address: String,
    timeout: Duration,
    tls: Option<TlsSide>,
    shutdown: Shutdown,
    current: CurrentSocket,
    /// Reports failed connection attempts in a row every few seconds.
    connecting: Option<WaitReport>,
    /// Bytes written to the server so far, over every connection.
    bytes_sent: Arc<AtomicU64>,
}

impl Connector {
    /// A connector for `config`'s server; a stop request on `shutdown` shuts
    /// the connection in use, so a blocked read ends at once.
    pub fn new(config: &ClientConfig, shutdown: Shutdown) -> Connector {
        let current: CurrentSocket = Arc::new(Mutex::new(None));
        let socket = Arc::clone(&current);
        shutdown.on_trigger(move || {
            if let Some(stream) = lock(&socket).as_ref() {
                let _ = stream.shutdown(SocketShutdown::Both);
            }
        });
        Connector {
            address: config.server_address.clone(),
            timeout: config.timeout,
            tls: None,
            shutdown,
            current,
            connecting: None,
            bytes_sent: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Reads the TLS settings, when CLI_TLS_CA is set: from then on every
    /// connection is TLS.
    pub fn use_tls(&mut self, config: &ClientConfig) -> Result<(), ClientError> {
        let Some(ca) = &config.tls_ca else {
            return Ok(());
        };
        let client = tls::client_config(ca).map_err(ClientError::TlsSetup)?;
        let name = match &config.tls_server_name {
            Some(name) => name.clone(),
            None => host_of(&config.server_address).to_string(),
        };
        let name = tls::server_name(&name).map_err(ClientError::TlsSetup)?;
        self.tls = Some(TlsSide::Client(client, name));
        Ok(())
    }

    /// Bytes written to the server so far.
    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent.load(Ordering::Relaxed)
    }

    /// One connection attempt, registered so that a stop request can shut it.
    pub fn connect(&mut self) -> Result<Session, ClientError> {
        self.check_stop()?;
        let report = self.connecting.get_or_insert_with(WaitReport::start);
        let stream = open_stream(&self.address).map_err(|source| {
            if let Some(waited) = report.due() {
                info!(
                    "action: conectar | result: in_progress | address: {} | esperando_s: {} | error: {source}",
                    self.address,
                    waited.as_secs()
                );
            }
            ClientError::Connect {
                address: self.address.clone(),
                waited: Duration::ZERO,
                source,
            }
        })?;
        self.connecting = None;
        let tcp = Arc::new(stream);
        *lock(&self.current) = Some(Arc::clone(&tcp));
        let stream = Stream::new(tcp, self.tls.as_ref())
            .map_err(|e| ClientError::Tls(TlsFailure::Session(e)))?;
        let conn = Connection::new(stream, connection::CLIENT_READ_BUFFER_LEN, self.timeout);
        // A stop requested just before the socket was registered: its waker
        // found nothing to shut.
        self.check_stop()?;
        let conn = conn.map_err(|e| ClientError::Connection {
            during: "connecting",
            source: ConnectionError::Io(e),
        })?;
        Ok(Session {
            conn,
            tls: self.tls.is_some(),
            shutdown: self.shutdown.clone(),
            bytes_sent: Arc::clone(&self.bytes_sent),
        })
    }

    /// Shuts the connection in use, if any.
    pub fn forget(&self) {
        if let Some(stream) = lock(&self.current).take() {
            let _ = stream.shutdown(SocketShutdown::Both);
        }
    }

    fn check_stop(&self) -> Result<(), ClientError> {
        match self.shutdown.is_triggered() {
            true => Err(stopped()),
            false => Ok(()),
        }
    }
}

/// The stop request, as an error; the agency fills in its counts.
pub(super) fn stopped() -> ClientError {
    ClientError::Interrupted { acked: 0, read: 0 }
}

/// One connection to the server.
pub(super) struct Session {
    conn: Connection,
    tls: bool,
    shutdown: Shutdown,
    bytes_sent: Arc<AtomicU64>,
}

impl Session {
    /// HELLO for `agency` with `token`, and its WELCOME.
    pub fn hello(
        &mut self,
        agency: u32,
        token: &str,
        until: Instant,
    ) -> Result<Welcome, ClientError> {
        const DURING: &str = "saying HELLO";
        let hello = Request::Hello {
            version: PROTOCOL_VERSION,
            agency,
            token: token.as_bytes().to_vec(),
        };
        self.send(&hello, DURING)?;
        match self.read_reply(until, DURING)? {
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

    /// Encodes and sends `request` at once.
    pub fn send(&mut self, request: &Request, during: &'static str) -> Result<(), ClientError> {
        let bytes = request
            .encode()
            .map_err(|source| ClientError::Encoding { during, source })?;
        self.queue(&bytes);
        self.flush(during)
    }

    /// Queues a message; it goes out with the next `flush`.
    pub fn queue(&mut self, bytes: &[u8]) {
        self.conn.queue_bytes(bytes);
        self.bytes_sent
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
    }

    /// Writes everything queued. When the server closed the connection, the
    /// ERROR it sent before closing (BUSY comes before anything is read) says
    /// more than the failed write, so it is read and returned when it is there.
    pub fn flush(&mut self, during: &'static str) -> Result<(), ClientError> {
        let Err(error) = self.conn.flush() else {
            return Ok(());
        };
        let closed_by_peer = matches!(
            error.kind(),
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
        );
        let soon = Instant::now() + Duration::from_secs(1);
        if closed_by_peer
            && !self.shutdown.is_triggered()
            && let Ok(Some(reply @ Reply::Error { .. })) = self.conn.read_reply(soon)
        {
            return refusal_as_error(reply, during).map(|_| ());
        }
        Err(self.connection_error(during, ConnectionError::Io(error)))
    }

    /// Reads the next reply by `until`: an ERROR becomes `Refused`.
    pub fn read_reply(
        &mut self,
        until: Instant,
        during: &'static str,
    ) -> Result<Reply, ClientError> {
        match self.conn.read_reply(until) {
            Ok(Some(reply)) => refusal_as_error(reply, during),
            Ok(None) if self.shutdown.is_triggered() => Err(stopped()),
            Ok(None) => Err(ClientError::ServerClosed { during }),
            Err(e) => Err(self.connection_error(during, e)),
        }
    }

    /// The next reply if a whole one is already buffered.
    pub fn buffered_reply(&mut self, during: &'static str) -> Result<Option<Reply>, ClientError> {
        match self.conn.next_buffered_reply() {
            Ok(Some(reply)) => refusal_as_error(reply, during).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(self.connection_error(during, e.into())),
        }
    }

    /// Maps a failed read or write: a stop request explains it first; a TLS
    /// failure, or TLS where plain was expected, will not mend by retrying.
    fn connection_error(&self, during: &'static str, source: ConnectionError) -> ClientError {
        if self.shutdown.is_triggered() {
            return stopped();
        }
        match source {
            ConnectionError::Io(e) if self.tls && e.kind() == io::ErrorKind::InvalidData => {
                ClientError::Tls(TlsFailure::Stream(e))
            }
            ConnectionError::Protocol(ProtocolError::UnknownMessage { id })
                if !self.tls && looks_like_tls(id) =>
            {
                ClientError::Tls(TlsFailure::ServerSpeaksTls)
            }
            source => ClientError::Connection { during, source },
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_records_are_told_from_messages_and_hosts_from_addresses() {
        assert!(looks_like_tls(0x1503) && looks_like_tls(0x1603));
        assert!(!looks_like_tls(0x0002) && !looks_like_tls(0x00FF) && !looks_like_tls(0x1601));
        assert_eq!(host_of("127.0.0.1:12345"), "127.0.0.1");
        assert_eq!(host_of("localhost:1"), "localhost");
        assert_eq!(host_of("[::1]:12345"), "::1");
    }
}
