//! One TCP stream with its buffers and its deadline.
//!
//! A `Connection` owns the socket, a bounded read buffer and an outgoing buffer.
//! It turns bytes into messages with the pure decoders of `protocol`, looping over
//! short reads (a message may arrive one byte at a time) and refusing a message
//! from its header as soon as it is too large, so at most one message's worth of
//! unconsumed bytes past the buffer's limit is ever held. A clean close between
//! messages is `Ok(None)`; a close in the middle of a message is an error that
//! says how many bytes were lost. The idle deadline counts from the last complete
//! message, so a peer that trickles bytes forever is still cut off.

use crate::buffer::{ReadBuffer, Refill};
use crate::protocol::{self, ProtocolError, Reply, Request};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Read buffer of a server-side connection: room for eight largest messages, so
/// an agency's pipelined batches come in with few reads (each system call is
/// dear on a virtual machine), at 64 KiB per connection.
pub(crate) const SERVER_READ_BUFFER_LEN: usize = 8 * protocol::MAX_MESSAGE_LEN;
/// Read buffer of a client-side connection: one largest reply (a full WINNERS).
pub(crate) const CLIENT_READ_BUFFER_LEN: usize = protocol::MAX_REPLY_LEN;

/// Why a connection could not deliver a message.
#[derive(Debug)]
pub(crate) enum ConnectionError {
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

/// A TCP stream, its read buffer, its pending output and its idle deadline.
pub(crate) struct Connection {
    stream: TcpStream,
    incoming: ReadBuffer,
    outgoing: Vec<u8>,
    idle_timeout: Duration,
    last_message_at: Instant,
    /// The socket's current mode and read timeout, so that they are only
    /// changed (one system call each) when they must be.
    nonblocking: bool,
    read_timeout: Option<Duration>,
}

impl Connection {
    /// Wraps `stream`; reads are buffered in `buffer_len` bytes, which must hold
    /// the largest message this side receives. Writes time out after `idle_timeout`.
    pub fn new(
        stream: TcpStream,
        buffer_len: usize,
        idle_timeout: Duration,
    ) -> io::Result<Connection> {
        stream.set_write_timeout(Some(idle_timeout))?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            incoming: ReadBuffer::new(buffer_len),
            outgoing: Vec::new(),
            idle_timeout,
            last_message_at: Instant::now(),
            nonblocking: false,
            read_timeout: None,
        })
    }

    fn set_nonblocking(&mut self, nonblocking: bool) -> io::Result<()> {
        if self.nonblocking != nonblocking {
            self.stream.set_nonblocking(nonblocking)?;
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
            self.stream.set_read_timeout(Some(left))?;
            self.read_timeout = Some(left);
        }
        Ok(())
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
        decode: fn(&[u8]) -> protocol::Decoded<T>,
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

    /// The next request already buffered, if a whole one is.
    pub fn next_buffered_request(&mut self) -> Result<Option<Request>, ProtocolError> {
        self.next_buffered(protocol::decode_request)
    }

    /// The next reply already buffered, if a whole one is.
    pub fn next_buffered_reply(&mut self) -> Result<Option<Reply>, ProtocolError> {
        self.next_buffered(protocol::decode_reply)
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
        self.set_nonblocking(until.is_none())?;
        let started = Instant::now();
        loop {
            if let Some(until) = until {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(ConnectionError::TimedOut {
                        waited: started.elapsed(),
                    });
                }
                self.set_read_timeout(left)?;
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

    /// Reads the next whole reply, blocking until `until` at the latest: the
    /// deadline is for the whole message, however slowly its bytes come.
    /// `Ok(None)` when the server closed the stream between messages.
    pub fn read_reply(&mut self, until: Instant) -> Result<Option<Reply>, ConnectionError> {
        loop {
            if let Some(reply) = self.next_buffered(protocol::decode_reply)? {
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
        self.set_nonblocking(false)?;
        let result = self.stream.write_all(&self.outgoing);
        self.outgoing.clear();
        result
    }
}
