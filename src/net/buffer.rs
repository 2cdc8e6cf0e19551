//! The one read buffer behind every reader in the crate: a connection's socket,
//! the bets file read back, and an agency's CSV file.
//!
//! Bytes come in at the end, whole items (messages, rows) are taken from the
//! front, and whatever is left of an incomplete item moves to the front before
//! the next read. The capacity is fixed when the buffer is made, so a reader
//! never holds more than that, whatever its input.

use std::io;

/// A fixed-size buffer of bytes read and not yet used.
pub(crate) struct ReadBuffer {
    bytes: Vec<u8>,
    /// `bytes[start..end]` are read and not yet consumed.
    start: usize,
    end: usize,
}

/// What `ReadBuffer::refill` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refill {
    /// This many new bytes arrived; 0 means the input has ended.
    Read(usize),
    /// The unread bytes fill the whole buffer: nothing more can be read until
    /// some are consumed. For a reader of whole items, the item is too large.
    Full,
}

impl ReadBuffer {
    /// An empty buffer that holds at most `capacity` bytes.
    pub fn new(capacity: usize) -> ReadBuffer {
        ReadBuffer {
            bytes: vec![0; capacity],
            start: 0,
            end: 0,
        }
    }

    /// The bytes read and not yet consumed.
    #[inline]
    pub fn unread(&self) -> &[u8] {
        &self.bytes[self.start..self.end]
    }

    /// How many bytes are read and not yet consumed.
    #[inline]
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Whether every byte read has been consumed.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Marks the first `count` unread bytes as used (all of them if fewer).
    #[inline]
    pub fn consume(&mut self, count: usize) {
        self.start = (self.start + count).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads more bytes after the unread ones with `read`, which is given the
    /// free space and returns how much it filled (0 at the end of the input).
    /// The unread bytes move to the front first when the end of the buffer is reached.
    pub fn refill(
        &mut self,
        read: impl FnOnce(&mut [u8]) -> io::Result<usize>,
    ) -> io::Result<Refill> {
        if self.end == self.bytes.len() && self.start > 0 {
            self.bytes.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.bytes.len() {
            return Ok(Refill::Full);
        }
        let free = &mut self.bytes[self.end..];
        let room = free.len();
        let read = read(free)?;
        // A reader that claims more than it was given is a bug; never trust it.
        self.end += read.min(room);
        Ok(Refill::Read(read.min(room)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(buffer: &mut ReadBuffer, bytes: &[u8]) -> Refill {
        buffer
            .refill(|free| {
                let n = bytes.len().min(free.len());
                free[..n].copy_from_slice(&bytes[..n]);
                Ok(n)
            })
            .unwrap()
    }

    #[test]
    fn unread_bytes_move_to_the_front_to_make_room() {
        let mut buffer = ReadBuffer::new(8);
        assert_eq!(feed(&mut buffer, b"abcdefgh"), Refill::Read(8));
        assert_eq!(feed(&mut buffer, b"x"), Refill::Full);
        buffer.consume(5);
        assert_eq!(buffer.unread(), b"fgh");
        assert_eq!(feed(&mut buffer, b"ijklmnop"), Refill::Read(5));
        assert_eq!(buffer.unread(), b"fghijklm");
        buffer.consume(100);
        assert!(buffer.is_empty());
        assert_eq!(feed(&mut buffer, b""), Refill::Read(0));
    }

    #[test]
    fn a_reader_claiming_more_than_the_room_is_not_believed() {
        let mut buffer = ReadBuffer::new(4);
        assert_eq!(buffer.refill(|_| Ok(99)).unwrap(), Refill::Read(4));
        assert_eq!(buffer.len(), 4);
    }
}
