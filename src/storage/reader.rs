//! Reading the bets file back: `BetRows` streams its rows through one fixed
//! buffer, never holding the file in memory and lending each row without
//! allocating (the draw reads millions); `middle_row_end` splits a file in two
//! for two readers.

use super::error::{StorageError, bad_row, io_error};
use super::rows::{self, StoredRow};
use crate::bet::has_won;
use crate::net::buffer::{ReadBuffer, Refill};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Bytes the bets file is read in: large reads keep system calls rare.
pub(super) const READ_BUFFER_LEN: usize = 1 << 20;

/// A row as the draw reads it.
pub(crate) struct DrawRow<'a> {
    pub agency: u32,
    pub number: u16,
    /// The bettor's document, read only for a winning row.
    pub document: Option<&'a [u8]>,
}

/// The rows of a bets file between two byte offsets, in the order they were
/// stored, read through one fixed buffer: memory stays flat whatever the file size.
pub(crate) struct BetRows {
    path: PathBuf,
    file: File,
    buffer: ReadBuffer,
    /// Where the next read starts in the file.
    offset: u64,
    /// Where this reader's part of the file ends.
    to: u64,
    /// Bytes of the buffer's front that the last row lent out and that go at the next call.
    lent: usize,
    at_end: bool,
    /// A read failed or a row outgrew the buffer: no row after it can be trusted.
    stopped: bool,
    /// Rows read so far, to name a bad one (stored rows never span lines).
    rows_read: u64,
    /// Bytes after the last line end, at the end of the file: a row whose write
    /// was cut short, never acknowledged, and not a row.
    #[cfg_attr(not(test), allow(dead_code))]
    unterminated: u64,
}

/// One line of the file, as `BetRows::next_line` found it at the buffer's front.
struct Line {
    /// Bytes of the line without its `\n`.
    len: usize,
}

impl BetRows {
    /// The rows of the whole file at `path`.
    #[cfg(test)]
    pub fn open(path: &Path) -> Result<BetRows, StorageError> {
        let file = File::open(path).map_err(|e| io_error(path, "open", e))?;
        Ok(BetRows::between(path, file, 0, u64::MAX))
    }

    /// The rows stored between byte `from` (the start of a row) and byte `to`
    /// (just past a row end, or past the end of the file) of `file`, which is
    /// the bets file at `path` (named in errors).
    pub fn between(path: &Path, file: File, from: u64, to: u64) -> BetRows {
        BetRows {
            path: path.to_path_buf(),
            file,
            buffer: ReadBuffer::new(READ_BUFFER_LEN),
            offset: from,
            to,
            lent: 0,
            at_end: false,
            stopped: false,
            rows_read: 0,
            unterminated: 0,
        }
    }

    /// Where in the file the row that the next `next_row` returns starts.
    pub fn next_row_start(&self) -> u64 {
        self.offset - (self.buffer.len() - self.lent) as u64
    }

    /// Whether reading stopped for good: a failed read, or a line longer than
    /// any row (nothing after it can be read).
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Once the rows are read: how many bytes follow the last line end.
    #[cfg(test)]
    pub fn unterminated_tail(&self) -> u64 {
        self.unterminated
    }

    /// The next row, borrowed from the read buffer, or why it cannot be read.
    /// A row with bad contents is reported and reading goes on; a failed read
    /// ends the rows.
    pub fn next_row(&mut self) -> Option<Result<StoredRow<'_>, StorageError>> {
        let line = match self.next_line().transpose()? {
            Ok(line) => line,
            Err(e) => return Some(Err(e)),
        };
        self.rows_read += 1;
        let row = rows::parse_row(&self.buffer.unread()[..line.len]);
        Some(row.map_err(|reason| bad_row(&self.path, self.rows_read, reason)))
    }

    /// The next row as the draw reads it: its agency and number, and the whole
    /// row only when it wins (`rows::agency_and_number`, with `parse_row` where
    /// that cannot tell). Errors as `next_row`.
    pub fn next_for_draw(&mut self) -> Option<Result<DrawRow<'_>, StorageError>> {
        let line = match self.next_line().transpose()? {
            Ok(line) => line,
            Err(e) => return Some(Err(e)),
        };
        self.rows_read += 1;
        let bytes = &self.buffer.unread()[..line.len];
        if let Some((agency, number)) = rows::agency_and_number(bytes)
            && !has_won(number)
        {
            return Some(Ok(DrawRow {
                agency,
                number,
                document: None,
            }));
        }
        let row = rows::parse_row(bytes);
        Some(
            row.map(|row| DrawRow {
                agency: row.agency,
                number: row.number,
                document: Some(row.document()),
            })
            .map_err(|reason| bad_row(&self.path, self.rows_read, reason)),
        )
    }

    /// Finds the next line at the front of the buffer, reading more of the file
    /// when the buffer holds no whole line; `None` at the end of the part.
    fn next_line(&mut self) -> Result<Option<Line>, StorageError> {
        self.buffer.consume(self.lent);
        self.lent = 0;
        loop {
            if self.stopped {
                return Ok(None);
            }
            let unread = self.buffer.unread();
            if let Some(len) = memchr::memchr(b'\n', unread) {
                self.lent = len + 1;
                return Ok(Some(Line { len }));
            }
            if self.at_end {
                self.unterminated = unread.len() as u64;
                return Ok(None);
            }
            let (file, offset, to) = (&self.file, self.offset, self.to);
            let refill = self.buffer.refill(|free| {
                let left = usize::try_from(to.saturating_sub(offset)).unwrap_or(usize::MAX);
                let want = free.len().min(left);
                loop {
                    match file.read_at(&mut free[..want], offset) {
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        result => return result,
                    }
                }
            });
            match refill {
                Ok(Refill::Read(0)) => self.at_end = true,
                Ok(Refill::Read(read)) => self.offset += read as u64,
                Ok(Refill::Full) => {
                    self.stopped = true;
                    return Err(bad_row(
                        &self.path,
                        self.rows_read + 1,
                        "longer than any stored row (1 MiB)",
                    ));
                }
                Err(source) => {
                    self.stopped = true;
                    return Err(io_error(&self.path, "read", source));
                }
            }
        }
    }
}

/// Where the row that holds the middle byte of `file` ends (the start of the
/// next row), so that two readers can share the draw; `None` for a file under
/// `min_len` bytes or with no row end from the middle on.
pub(crate) fn middle_row_end(
    path: &Path,
    file: &File,
    min_len: u64,
) -> Result<Option<u64>, StorageError> {
    let len = file
        .metadata()
        .map_err(|e| io_error(path, "inspect", e))?
        .len();
    if len < min_len {
        return Ok(None);
    }
    let mut chunk = vec![0; 64 * 1024];
    let mut at = len / 2;
    loop {
        let read = match file.read_at(&mut chunk, at) {
            Ok(0) => return Ok(None),
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_error(path, "read", e)),
        };
        if let Some(newline) = chunk[..read].iter().position(|&b| b == b'\n') {
            return Ok(Some(at + newline as u64 + 1));
        }
        at += read as u64;
    }
}
