//! The byte stream under a connection: plain TCP, or TLS over it.
//!
//! `Socket` is the TCP stream with a deadline on its reads: every read is given
//! only the time left, so a peer that trickles bytes (or TLS records) cannot
//! stretch a wait past its deadline. The stream itself is shared (`Arc`) with
//! the server's registry, which shuts it at the orderly stop, so a connection
//! costs one file descriptor. `Stream` is that socket as it is, or inside a
//! rustls session (one per connection, driven by the connection's own thread).

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, ServerConnection, StreamOwned};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A TCP stream whose reads end by a deadline.
pub(crate) struct Socket {
    tcp: Arc<TcpStream>,
    /// Reads fail with `TimedOut` once this instant has passed.
    deadline: Option<Instant>,
    /// The socket's current mode and read timeout, so that each is changed
    /// (one system call) only when it must be.
    nonblocking: bool,
    read_timeout: Option<Duration>,
    /// Set once the first bytes arrive from the peer (see `tell_when_heard`).
    heard: Option<Arc<AtomicBool>>,
}

impl Socket {
    pub fn new(tcp: Arc<TcpStream>) -> Socket {
        Socket {
            tcp,
            deadline: None,
            nonblocking: false,
            read_timeout: None,
            heard: None,
        }
    }

    /// Sets `heard` when the first bytes arrive from the peer, so that others
    /// can tell a peer making progress (a TLS handshake, a HELLO under way)
    /// from a silent one.
    pub fn tell_when_heard(&mut self, heard: Arc<AtomicBool>) {
        self.heard = Some(heard);
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// Reads after this end with `TimedOut`; `None` lets them block.
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    pub fn set_nonblocking(&mut self, nonblocking: bool) -> io::Result<()> {
        if self.nonblocking != nonblocking {
            self.tcp.set_nonblocking(nonblocking)?;
            self.nonblocking = nonblocking;
        }
        Ok(())
    }

    /// Makes a blocking read return by `left` from now. A shorter timeout than
    /// needed only costs an extra turn of the caller's loop, so the one already
    /// set is kept while it is no longer than `left` and not far shorter.
    fn set_read_timeout(&mut self, left: Duration) -> io::Result<()> {
        let keep = self
            .read_timeout
            .is_some_and(|set| set <= left && set >= left / 2);
        if !keep {
            self.tcp.set_read_timeout(Some(left))?;
            self.read_timeout = Some(left);
        }
        Ok(())
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(deadline) = self.deadline
            && !self.nonblocking
        {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::from(io::ErrorKind::TimedOut));
            }
            self.set_read_timeout(left)?;
        }
        let read = (&*self.tcp).read(buf)?;
        if read > 0
            && let Some(heard) = self.heard.take()
        {
            heard.store(true, Ordering::Relaxed);
        }
        Ok(read)
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self.tcp).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        (&*self.tcp).flush()
    }
}

/// Which side of TLS a stream speaks, with that side's settings.
pub(crate) enum TlsSide {
    Server(Arc<rustls::ServerConfig>),
    /// The CA to trust and the name the server's certificate must carry.
    Client(Arc<rustls::ClientConfig>, ServerName<'static>),
}

/// A connection's bytes: plain, or inside TLS.
pub(crate) enum Stream {
    Plain(Socket),
    TlsServer(Box<StreamOwned<ServerConnection, Socket>>),
    TlsClient(Box<StreamOwned<ClientConnection, Socket>>),
}

impl Stream {
    /// The one way a stream is made: `tcp` as it is (`tls` is `None`), or
    /// inside a new TLS session of that side.
    pub fn new(tcp: Arc<TcpStream>, tls: Option<&TlsSide>) -> Result<Stream, rustls::Error> {
        let socket = Socket::new(tcp);
        Ok(match tls {
            None => Stream::Plain(socket),
            Some(TlsSide::Server(config)) => {
                let session = ServerConnection::new(Arc::clone(config))?;
                Stream::TlsServer(Box::new(StreamOwned::new(session, socket)))
            }
            Some(TlsSide::Client(config, name)) => {
                let session = ClientConnection::new(Arc::clone(config), name.clone())?;
                Stream::TlsClient(Box::new(StreamOwned::new(session, socket)))
            }
        })
    }

    pub fn socket(&mut self) -> &mut Socket {
        match self {
            Stream::Plain(socket) => socket,
            Stream::TlsServer(tls) => &mut tls.sock,
            Stream::TlsClient(tls) => &mut tls.sock,
        }
    }

    /// Whether a TLS handshake is still under way (never for plain streams).
    pub fn is_handshaking(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::TlsServer(tls) => tls.conn.is_handshaking(),
            Stream::TlsClient(tls) => tls.conn.is_handshaking(),
        }
    }

    /// Tells a TLS peer that nothing more will be written (TLS's close_notify),
    /// so that it can tell the end of the stream from a cut.
    pub fn close_notify(&mut self) {
        match self {
            Stream::Plain(_) => {}
            Stream::TlsServer(tls) => {
                tls.conn.send_close_notify();
                let _ = tls.conn.complete_io(&mut tls.sock);
            }
            Stream::TlsClient(tls) => {
                tls.conn.send_close_notify();
                let _ = tls.conn.complete_io(&mut tls.sock);
            }
        }
    }

    /// Runs the TLS handshake to its end (nothing for a plain stream).
    pub fn complete_handshake(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(_) => Ok(()),
            Stream::TlsServer(tls) => {
                while tls.conn.is_handshaking() {
                    tls.conn.complete_io(&mut tls.sock)?;
                }
                Ok(())
            }
            Stream::TlsClient(tls) => {
                while tls.conn.is_handshaking() {
                    tls.conn.complete_io(&mut tls.sock)?;
                }
                Ok(())
            }
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = match self {
            Stream::Plain(socket) => socket.read(buf),
            Stream::TlsServer(tls) => tls.read(buf),
            Stream::TlsClient(tls) => tls.read(buf),
        };
        match read {
            // A peer that closes without TLS's close_notify has closed all the same.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
            other => other,
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(socket) => socket.write(buf),
            Stream::TlsServer(tls) => tls.write(buf),
            Stream::TlsClient(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(socket) => socket.flush(),
            Stream::TlsServer(tls) => tls.flush(),
            Stream::TlsClient(tls) => tls.flush(),
        }
    }
}
