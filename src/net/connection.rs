//! One connection with its buffers and its deadlines.
//!
//! A `Connection` owns the stream (plain or TLS, see `transport`), a bounded
//! read buffer and an outgoing buffer.
//! It turns bytes into messages with the pure decoders of `protocol`, looping over
//! short reads (a message may arrive one byte at a time) and refusing a message
//! from its header as soon as it is too large, so at most one message's worth of
//! unconsumed bytes past the buffer's limit is ever held. A clean close between
//! messages is `Ok(None)`; a close in the middle of a message is an error that
//! says how many bytes were lost. The idle deadline counts from the last complete
//! message, so a peer that trickles bytes forever is still cut off.

use crate::net::buffer::{ReadBuffer, Refill};
use crate::net::transport::Stream;
use crate::wire::{self, ProtocolError, Reply, Request};
use std::fmt;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

/// Read buffer of a server-side connection: room for eight largest messages, so
/// an agency's pipelined batches come in with few reads (each system call is
/// dear on a virtual machine), at 64 KiB per connection.
pub(crate) const SERVER_READ_BUFFER_LEN: usize = 8 * wire::MAX_MESSAGE_LEN;
/// Read buffer of a client-side connection: one largest reply (a full WINNERS).
pub(crate) const CLIENT_READ_BUFFER_LEN: usize = wire::MAX_REPLY_LEN;

/// Why a connection could not deliver a message.
#[derive(Debug)]
pub enum ConnectionError {
    /// The bytes do not form a valid message.
    Protocol(ProtocolError),
    /// The peer closed the stream in the middle of a message.
    ClosedMidMessage { buffered: usize },
    /// No complete message arrived by the deadline.
    TimedOut { waited: Duration },
    /// The socket failed.
    Io(io::Error),
}

impl fmt::Display for ConnectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectionError::Protocol(e) => write!(f, "{e}"),
            ConnectionError::ClosedMidMessage { buffered } => write!(
                f,
                "the peer closed the connection in the middle of a message \
                 ({buffered} bytes of it discarded)"
            ),
            ConnectionError::TimedOut { waited } => {
                write!(f, "no complete message within {} ms", waited.as_millis())
            }
            ConnectionError::Io(e) => write!(f, "socket error: {e}"),
        }
    }
}

// `Display` already shows the inner error, so it is not also a `source`.
impl std::error::Error for ConnectionError {}

impl From<ProtocolError> for ConnectionError {
    fn from(e: ProtocolError) -> Self {
        ConnectionError::Protocol(e)
    }
}

impl From<io::Error> for ConnectionError {
    fn from(e: io::Error) -> Self {
        ConnectionError::Io(e)
    }
}

/// What one read into the buffer brought.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Fill {
    /// New bytes are buffered.
    Data,
    /// Nothing is waiting on the socket right now (non-blocking reads only).
    Nothing,
    /// The peer closed the stream between messages.
    Closed,
}

/// A stream, its read buffer, its pending output and its idle deadline.
pub(crate) struct Connection {
    stream: Stream,
    incoming: ReadBuffer,
    outgoing: Vec<u8>,
    idle_timeout: Duration,
    last_message_at: Instant,
}

impl Connection {
    /// Wraps `stream`; reads are buffered in `buffer_len` bytes, which must hold
    /// the largest message this side receives. Writes time out after
    /// `idle_timeout`, and no read ever waits longer than that either.
    pub fn new(
        stream: Stream,
        buffer_len: usize,
        idle_timeout: Duration,
    ) -> io::Result<Connection> {
        let mut stream = stream;
        let tcp = stream.socket().tcp();
        tcp.set_write_timeout(Some(idle_timeout))?;
        tcp.set_read_timeout(Some(idle_timeout))?;
        tcp.set_nodelay(true)?;
        Ok(Connection {
            stream,
            incoming: ReadBuffer::new(buffer_len),
            outgoing: Vec::new(),
            idle_timeout,
            last_message_at: Instant::now(),
        })
    }

    /// Whether a TLS handshake is still under way.
    pub fn is_handshaking(&self) -> bool {
        self.stream.is_handshaking()
    }

    /// Ends the stream in order: inside TLS, the close_notify (not after a
    /// handshake that never completed: there is no session to close).
    pub fn close(&mut self) {
        if self.stream.is_handshaking() || self.stream.socket().set_nonblocking(false).is_err() {
            return;
        }
        self.stream
            .socket()
            .set_deadline(Some(Instant::now() + Duration::from_secs(1)));
        self.stream.close_notify();
    }

    /// Completes the TLS handshake (nothing for plain TCP) by `until`.
    pub fn complete_handshake(&mut self, until: Instant) -> io::Result<()> {
        self.stream.socket().set_nonblocking(false)?;
        self.stream.socket().set_deadline(Some(until));
        let result = self.stream.complete_handshake();
        self.stream.socket().set_deadline(None);
        result
    }

    /// How long the peer may go without completing a message.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// Bytes received that do not yet make a whole message.
    pub fn buffered(&self) -> usize {
        self.incoming.len()
    }

    /// Decodes the next message already in the buffer, without touching the socket.
    fn next_buffered<T>(
        &mut self,
        decode: fn(&[u8]) -> wire::Decoded<T>,
    ) -> Result<Option<T>, ProtocolError> {
        match decode(self.incoming.unread())? {
            Some((message, used)) => {
                self.incoming.consume(used);
                self.last_message_at = Instant::now();
                Ok(Some(message))
            }
            None => Ok(None),
        }
    }

    /// The next request already buffered, if a whole one is. `before_hello`:
    /// the connection has no session yet, so a HELLO of another protocol
    /// version is refused as soon as its version is in.
    pub fn next_buffered_request(
        &mut self,
        before_hello: bool,
    ) -> Result<Option<Request>, ProtocolError> {
        match before_hello {
            true => self.next_buffered(wire::decode_first_request),
            false => self.next_buffered(wire::decode_request),
        }
    }

    /// The next reply already buffered, if a whole one is.
    pub fn next_buffered_reply(&mut self) -> Result<Option<Reply>, ProtocolError> {
        self.next_buffered(wire::decode_reply)
    }

    /// When the idle deadline passes: the idle timeout after the last complete
    /// message (or after the connection was made).
    pub fn idle_deadline(&self) -> Instant {
        self.last_message_at + self.idle_timeout
    }

    /// Reads more bytes from the socket. With `until`, blocks until bytes
    /// arrive, the peer closes, or that instant passes; without, takes only what
    /// is already there. A close with part of a message buffered is an error.
    pub fn fill(&mut self, until: Option<Instant>) -> Result<Fill, ConnectionError> {
        self.stream.socket().set_nonblocking(until.is_none())?;
        self.stream.socket().set_deadline(until);
        let started = Instant::now();
        loop {
            if let Some(until) = until
                && Instant::now() >= until
            {
                return Err(ConnectionError::TimedOut {
                    waited: started.elapsed(),
                });
            }
            let stream = &mut self.stream;
            match self.incoming.refill(|free| stream.read(free)) {
                // The decoders refuse anything larger than the buffer from its
                // header, so a full buffer means a message larger than this side accepts.
                Ok(Refill::Full) => {
                    let limit = self.incoming.len();
                    return Err(ProtocolError::TooLarge {
                        len: limit + 1,
                        limit,
                    }
                    .into());
                }
                Ok(Refill::Read(0)) if !self.incoming.is_empty() => {
                    return Err(ConnectionError::ClosedMidMessage {
                        buffered: self.incoming.len(),
                    });
                }
                Ok(Refill::Read(0)) => return Ok(Fill::Closed),
                Ok(Refill::Read(_)) => return Ok(Fill::Data),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if until.is_none() && e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(Fill::Nothing);
                }
                // A read timeout shows as WouldBlock or TimedOut; the loop's
                // deadline check says whether the deadline has passed.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Reads the next whole request, blocking until `until` at the latest: the
    /// deadline is for the whole message, however slowly its bytes come.
    /// `Ok(None)` when the peer closed the stream between messages; `before_hello`
    /// as for `next_buffered_request`.
    pub fn read_request(
        &mut self,
        before_hello: bool,
        until: Instant,
    ) -> Result<Option<Request>, ConnectionError> {
        loop {
            if let Some(request) = self.next_buffered_request(before_hello)? {
                return Ok(Some(request));
            }
            if self.fill(Some(until))? == Fill::Closed {
                return Ok(None);
            }
        }
    }

    /// Reads the next whole reply, blocking until `until` at the latest: the
    /// deadline is for the whole message, however slowly its bytes come.
    /// `Ok(None)` when the server closed the stream between messages.
    pub fn read_reply(&mut self, until: Instant) -> Result<Option<Reply>, ConnectionError> {
        loop {
            if let Some(reply) = self.next_buffered(wire::decode_reply)? {
                return Ok(Some(reply));
            }
            if self.fill(Some(until))? == Fill::Closed {
                return Ok(None);
            }
        }
    }

    /// Queues a reply; it goes out with the next `flush`.
    pub fn queue_reply(&mut self, reply: &Reply) -> Result<(), ProtocolError> {
        self.outgoing.extend_from_slice(&reply.encode()?);
        Ok(())
    }

    /// Queues raw message bytes; they go out with the next `flush`.
    pub fn queue_bytes(&mut self, bytes: &[u8]) {
        self.outgoing.extend_from_slice(bytes);
    }

    /// Writes everything queued, looping over short writes (blocking, up to the
    /// write timeout, even if the last read did not block).
    pub fn flush(&mut self) -> io::Result<()> {
        if self.outgoing.is_empty() {
            return Ok(());
        }
        self.stream.socket().set_nonblocking(false)?;
        // A write in TLS may read too (the handshake): it waits no longer than a write.
        let write_deadline = Instant::now() + self.idle_timeout;
        self.stream.socket().set_deadline(Some(write_deadline));
        let result = self
            .stream
            .write_all(&self.outgoing)
            .and_then(|()| self.stream.flush());
        self.outgoing.clear();
        result
    }
}
