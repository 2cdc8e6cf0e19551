//! The bets file: durable appends, streaming reads, and the winning rule.
//!
//! This module owns the file on disk. `BetStore::append` writes a whole batch as
//! rows (their byte format is `rows`: `agency,first_name,last_name,document,
//! birthdate,number\r\n`, as the reference `store_bets` writes them) and
//! `BetStore::sync` makes it durable; `store_bets` does both. Batches written at
//! the same time share one `fsync` (group commit): the first waiter syncs for
//! everyone written so far, the others wait on a `Condvar` for its result. A batch
//! that fails to be written, or whose `fsync` fails, is cut back off the file, so
//! the file only ever ends in whole rows of batches that were (or are about to
//! be) acknowledged.
//!
//! `BetRows` streams the rows back through one fixed buffer; it never holds the
//! file in memory, and lends each row without allocating (the draw reads
//! millions). This module knows nothing of sockets.

mod rows;

pub(crate) use rows::StoredRow;

use crate::bet::ValidBet;
use crate::buffer::{ReadBuffer, Refill};
use crate::locks::{lock, wait_while};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

/// What went wrong with the bets file. `Display` names the file and what to do.
#[derive(Debug)]
pub enum StorageError {
    /// An I/O operation on the file failed.
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// The file already holds bets from an earlier run.
    NotEmpty { path: PathBuf, len: u64 },
    /// The directory the file should be in does not exist.
    NoDirectory { path: PathBuf },
    /// A stored row cannot be read back.
    BadRow {
        path: PathBuf,
        row: u64,
        reason: String,
    },
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::Io {
                action,
                path,
                source,
            } => write!(
                f,
                "could not {action} the bets file {}: {source}",
                path.display()
            ),
            StorageError::NoDirectory { path } => write!(
                f,
                "the directory of the bets file {} does not exist; create it, or point \
                 SERVER_BETS_FILE at a file in a directory that exists",
                path.display()
            ),
            StorageError::NotEmpty { path, len } => write!(
                f,
                "the bets file {} already holds {len} bytes of bets from an earlier run; \
                 move it away or point SERVER_BETS_FILE at a new file (stored bets are never \
                 overwritten)",
                path.display()
            ),
            StorageError::BadRow { path, row, reason } => write!(
                f,
                "row {row} of the bets file {} cannot be read: {reason}",
                path.display()
            ),
        }
    }
}

// `Display` already shows the underlying I/O error, so it is not also a `source`.
impl std::error::Error for StorageError {}

/// A batch that `append` wrote and `sync` has yet to make durable.
#[derive(Debug, Clone, Copy)]
#[must_use = "a batch is not durable until it is synced"]
pub(crate) struct Appended {
    /// Position, in bytes ever appended, just past this batch.
    end: u64,
}

/// The bets file, shared by every connection thread.
pub(crate) struct BetStore {
    path: PathBuf,
    writer: Mutex<Writer>,
    commit: Mutex<CommitState>,
    committed: Condvar,
    /// A second handle on the same file, so an `fsync` runs without the writer lock.
    sync_handle: File,
}

struct Writer {
    file: File,
    /// Bytes of the file, all whole rows.
    len: u64,
    /// Bytes ever appended, including those later cut off: names every batch uniquely.
    appended: u64,
    /// A failed write may have left bytes past `len` that a cut could not remove.
    needs_cut: bool,
}

struct CommitState {
    /// Every batch whose `end` is at most this is resolved: durable or failed.
    resolved: u64,
    /// File length as of the last successful sync.
    durable_len: u64,
    /// A thread is running `fsync` now.
    syncing: bool,
    /// Ranges `(after, through]` of appended positions whose batches were cut off.
    failed: Vec<(u64, u64)>,
    /// Why the last failed range failed, for the batches in it.
    last_failure: String,
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// An I/O failure on the bets file at `path`.
fn io_error(path: &Path, action: &'static str, source: io::Error) -> StorageError {
    StorageError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

impl BetStore {
    /// Opens `path` for a new draw, creating it if needed. Refuses a file that
    /// already holds bets: old bets are never appended to nor overwritten.
    pub fn create(path: &Path) -> Result<BetStore, StorageError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| match parent_of(path).exists() {
                false => StorageError::NoDirectory {
                    path: path.to_path_buf(),
                },
                true => io_error(path, "open", e),
            })?;
        let len = file
            .metadata()
            .map_err(|e| io_error(path, "inspect", e))?
            .len();
        if len > 0 {
            return Err(StorageError::NotEmpty {
                path: path.to_path_buf(),
                len,
            });
        }
        // The file's own entry must survive a crash too: sync the directory once.
        File::open(parent_of(path))
            .and_then(|dir| dir.sync_all())
            .map_err(|e| io_error(path, "sync the directory of", e))?;
        let sync_handle = file.try_clone().map_err(|e| io_error(path, "open", e))?;
        Ok(BetStore {
            path: path.to_path_buf(),
            writer: Mutex::new(Writer {
                file,
                len: 0,
                appended: 0,
                needs_cut: false,
            }),
            commit: Mutex::new(CommitState {
                resolved: 0,
                durable_len: 0,
                syncing: false,
                failed: Vec::new(),
                last_failure: String::new(),
            }),
            committed: Condvar::new(),
            sync_handle,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A handle to read the file back from its start.
    pub fn reader(&self) -> Result<File, StorageError> {
        File::open(&self.path).map_err(|e| self.io_error("open", e))
    }

    fn io_error(&self, action: &'static str, source: io::Error) -> StorageError {
        io_error(&self.path, action, source)
    }

    /// Stores a batch: appends its rows and waits until they are on disk. On error
    /// nothing of the batch is left in the file.
    #[cfg(test)]
    pub fn store_bets(&self, agency: u32, bets: &[ValidBet<'_>]) -> Result<(), StorageError> {
        let appended = self.append(agency, bets)?;
        self.sync(appended)
    }

    /// Appends a batch's rows in one write, without waiting for the disk. On a
    /// failed write the file is cut back to its length before the batch.
    pub fn append(&self, agency: u32, bets: &[ValidBet<'_>]) -> Result<Appended, StorageError> {
        // A batch of one message's worth of bets makes somewhat more than 8 KiB
        // of rows (the agency and separators are added): one allocation, no growth.
        let mut bytes = Vec::with_capacity(16 * 1024);
        rows::write_rows(&mut bytes, agency, bets);
        let rows_len = bytes.len() as u64;
        let mut writer = lock(&self.writer);
        if writer.needs_cut {
            let len = writer.len;
            writer
                .file
                .set_len(len)
                .map_err(|e| self.io_error("cut back", e))?;
            writer.needs_cut = false;
        }
        let at = writer.len;
        if let Err(e) = writer.file.write_all_at(&bytes, at) {
            // Cut off whatever part of the batch reached the file; if even that fails,
            // the next append retries the cut before writing.
            writer.needs_cut = writer.file.set_len(at).is_err();
            return Err(self.io_error("write to", e));
        }
        writer.len += rows_len;
        writer.appended += rows_len;
        Ok(Appended {
            end: writer.appended,
        })
    }

    /// Waits until an appended batch is on disk. Batches appended meanwhile by
    /// other threads share the same `fsync`. If the `fsync` fails, every batch not
    /// yet durable is cut off the file and gets the error.
    pub fn sync(&self, appended: Appended) -> Result<(), StorageError> {
        let mut state = lock(&self.commit);
        loop {
            if appended.end <= state.resolved {
                return match state
                    .failed
                    .iter()
                    .any(|&(after, through)| after < appended.end && appended.end <= through)
                {
                    false => Ok(()),
                    true => Err(self.io_error(
                        "flush to disk",
                        io::Error::other(state.last_failure.clone()),
                    )),
                };
            }
            if state.syncing {
                state = wait_while(&self.committed, state, |s| s.syncing);
                continue;
            }
            state.syncing = true;
            drop(state);
            let (target, target_len) = {
                let writer = lock(&self.writer);
                (writer.appended, writer.len)
            };
            let result = self.sync_handle.sync_data();
            state = lock(&self.commit);
            match result {
                Ok(()) => {
                    state.resolved = state.resolved.max(target);
                    state.durable_len = target_len;
                }
                Err(e) => self.cut_back_to_durable(&mut state, e),
            }
            state.syncing = false;
            self.committed.notify_all();
        }
    }

    /// After a failed `fsync`: nothing past the last durable length can be trusted
    /// to reach the disk, and none of it was acknowledged, so cut it all off.
    fn cut_back_to_durable(&self, state: &mut CommitState, error: io::Error) {
        let mut writer = lock(&self.writer);
        let keep = state.durable_len;
        writer.needs_cut = writer.file.set_len(keep).is_err();
        writer.len = keep;
        state.failed.push((state.resolved, writer.appended));
        state.resolved = writer.appended;
        state.last_failure = error.to_string();
    }

    /// Called when the server stops: flushes to disk whatever was appended and
    /// not yet synced (normally nothing: every batch is synced before its ack),
    /// so a slow disk does not delay the stop for no reason.
    pub fn close(&self) -> Result<(), StorageError> {
        let appended = lock(&self.writer).appended;
        if lock(&self.commit).resolved >= appended {
            return Ok(());
        }
        self.sync(Appended { end: appended })
    }
}

/// Bytes the bets file is read in: large reads keep system calls rare.
const READ_BUFFER_LEN: usize = 1 << 20;

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
        }
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
            if let Some(len) = unread.iter().position(|&b| b == b'\n') {
                self.lent = len + 1;
                return Ok(Some(Line { len }));
            }
            if self.at_end {
                if unread.is_empty() {
                    return Ok(None);
                }
                self.lent = unread.len();
                return Ok(Some(Line { len: unread.len() }));
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

fn bad_row(path: &Path, row: u64, reason: &str) -> StorageError {
    StorageError::BadRow {
        path: path.to_path_buf(),
        row,
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bet::Bet;
    use std::sync::Arc;

    fn bet(first: &str, document: &str, number: u16) -> Bet {
        Bet {
            first_name: first.into(),
            last_name: "Gómez".into(),
            document: document.into(),
            birthdate: "1985-12-01".into(),
            number,
        }
    }

    fn store(store: &BetStore, agency: u32, bets: &[Bet]) {
        let valid: Vec<ValidBet> = bets.iter().map(Bet::valid).collect();
        store.store_bets(agency, &valid).unwrap();
    }

    /// Every row of the file as (agency, bet).
    fn read_all(path: &Path) -> Vec<(u32, Bet)> {
        let mut rows = BetRows::open(path).unwrap();
        let mut all = Vec::new();
        while let Some(row) = rows.next_row() {
            let row = row.unwrap();
            all.push((row.agency, row.to_bet().unwrap()));
        }
        all
    }

    #[test]
    fn stored_bets_load_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bets.csv");
        let bets = BetStore::create(&path).unwrap();
        let batch = vec![bet("Ana", "1", 7574), bet("Luis, \"el\"", "2", 1)];
        store(&bets, 2, &batch);
        store(&bets, 5, &[bet("Eva", "3", 7574)]);
        bets.close().unwrap();
        let rows = read_all(&path);
        assert_eq!(
            rows,
            vec![
                (2, batch[0].clone()),
                (2, batch[1].clone()),
                (5, bet("Eva", "3", 7574))
            ]
        );
    }

    #[test]
    fn rows_across_read_buffer_boundaries_are_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bets.csv");
        let bets = BetStore::create(&path).unwrap();
        // About 2.5 read buffers of rows of varying length, so rows straddle the
        // boundaries at different offsets.
        let rows_total = 60_000u32;
        for chunk in (0..rows_total).collect::<Vec<_>>().chunks(1000) {
            let batch: Vec<Bet> = chunk
                .iter()
                .map(|&i| {
                    bet(
                        &"N".repeat(1 + (i % 7) as usize),
                        &i.to_string(),
                        (i % 10_000) as u16,
                    )
                })
                .collect();
            store(&bets, u32::MAX, &batch);
        }
        bets.close().unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() > 2 * READ_BUFFER_LEN as u64);

        let mut reader = BetRows::open(&path).unwrap();
        let mut seen = 0u32;
        while let Some(row) = reader.next_row() {
            let row = row.unwrap();
            assert_eq!(row.document(), seen.to_string().as_bytes());
            assert_eq!(u32::from(row.number), seen % 10_000);
            seen += 1;
        }
        assert_eq!(seen, rows_total);
    }

    #[test]
    fn a_last_row_without_line_end_counts_and_an_endless_row_stops_reading() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bets.csv");
        std::fs::write(&path, "1,A,B,1,2000-01-01,7574\r\n2,A,B,2,2000-01-01,7574").unwrap();
        let rows = read_all(&path);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].1.document, "2");

        std::fs::write(&path, vec![b'1'; READ_BUFFER_LEN + 10]).unwrap();
        let mut rows = BetRows::open(&path).unwrap();
        let error = rows.next_row().unwrap().unwrap_err();
        assert!(error.to_string().contains("longer than"), "{error}");
        assert!(rows.next_row().is_none());
    }

    #[test]
    fn a_file_holding_bets_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bets.csv");
        std::fs::write(&path, "1,A,B,1,2000-01-01,1\r\n").unwrap();
        let error = BetStore::create(&path).err().unwrap();
        assert!(matches!(error, StorageError::NotEmpty { len: 22, .. }));
        assert!(error.to_string().contains("SERVER_BETS_FILE"));
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "1,A,B,1,2000-01-01,1\r\n"
        );
    }

    #[test]
    fn concurrent_batches_are_whole_rows_and_all_durable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bets.csv");
        let bets = Arc::new(BetStore::create(&path).unwrap());
        let threads: Vec<_> = (1..=8u32)
            .map(|agency| {
                let bets = Arc::clone(&bets);
                std::thread::spawn(move || {
                    for round in 0..20u16 {
                        let batch: Vec<Bet> = (0..30u16)
                            .map(|i| bet("Ana María", &format!("{agency}{round:02}{i:02}"), i))
                            .collect();
                        store(&bets, agency, &batch);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let rows = read_all(&path);
        assert_eq!(rows.len(), 8 * 20 * 30);
        // Each batch's 30 rows are contiguous: batches never interleave.
        for chunk in rows.chunks(30) {
            assert!(chunk.iter().all(|r| r.0 == chunk[0].0));
            assert!(
                chunk
                    .iter()
                    .enumerate()
                    .all(|(i, r)| usize::from(r.1.number) == i)
            );
        }
    }

    #[test]
    fn a_bad_stored_row_is_reported_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bets.csv");
        std::fs::write(
            &path,
            "1,A,B,1,2000-01-01,1\r\nx,A,B,1,2000-01-01,1\r\n1,A,B\r\n",
        )
        .unwrap();
        let mut rows = BetRows::open(&path).unwrap();
        assert!(rows.next_row().unwrap().is_ok());
        assert!(matches!(
            rows.next_row(),
            Some(Err(StorageError::BadRow { row: 2, .. }))
        ));
        assert!(matches!(
            rows.next_row(),
            Some(Err(StorageError::BadRow { row: 3, .. }))
        ));
        assert!(rows.next_row().is_none());
    }
}
