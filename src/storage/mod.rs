//! The round's files: the bets file, with durable appends and streaming reads,
//! and the FINISH records beside it.
//!
//! `BetStore::open` takes the bets file for the round: it must be a regular file;
//! it is locked so that no second server writes it; whatever it already holds is
//! read back first (`recovery`), so a round goes on after a crash or a restart.
//! It keeps, per agency, how many bets are stored and how many of those are on
//! disk, which is what makes a batch sent twice stored once: a BETS names the
//! number of its first bet, and only the batch that starts where the agency's
//! stored bets end is appended (`append_batch`).
//!
//! `append_batch` writes a whole batch as rows (their byte format is `rows`:
//! `agency,first_name,last_name,document,birthdate,number\r\n`, as the reference
//! `store_bets` writes them) at the file's real end, and `sync` makes it durable.
//! Batches written at the same time share one `fsync` (group commit): the first
//! waiter syncs for everyone written so far, the others wait on a `Condvar` for
//! its result. A batch that fails to be written, or whose `fsync` fails, is cut
//! back off the file, so the file only ever ends in whole rows of batches that
//! were (or are about to be) acknowledged. `record_finish` writes an agency's
//! FINISH, with its total and digest, durably to the records file (`finishes`).
//!
//! Each agency's digest (protocol version 3) is kept as a running SHA-256 over
//! the bodies of its stored batches, hashed as they are appended, one for the
//! bets appended and one for those on disk; an agency that has sent no bet has
//! none. At start they are rebuilt from the rows (`recovery`).
//!
//! `BetRows` streams the rows back through one fixed buffer; it never holds the
//! file in memory, and lends each row without allocating (the draw reads
//! millions). This module knows nothing of sockets.

mod finishes;
mod recovery;
mod rows;

pub(crate) use recovery::{Audit, Recovered, audit};
pub(crate) use rows::StoredRow;

use crate::bet::ValidBet;
use crate::locks::{lock, wait_while};
use crate::net::buffer::{ReadBuffer, Refill};
use crate::wire::digest::{self, Digest, Hasher};
use finishes::FinishRecords;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

/// Mode of the files created for a round: bettors' names, documents and
/// birthdates are personal data, for the server's user alone.
const PRIVATE_FILE_MODE: u32 = 0o600;

/// What went wrong with the round's files. `Display` names the file and what to do.
#[derive(Debug)]
pub enum StorageError {
    /// An I/O operation on a file failed.
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// The directory the bets file should be in does not exist.
    NoDirectory { path: PathBuf },
    /// The path is not a regular file (a directory, a FIFO, a device...).
    NotAFile { path: PathBuf, kind: &'static str },
    /// Another process (another server) holds the bets file.
    Locked { path: PathBuf },
    /// A stored row cannot be read back.
    BadRow {
        path: PathBuf,
        row: u64,
        reason: String,
    },
    /// The FINISH records do not fit the bets file or the configuration.
    BadRecords {
        path: PathBuf,
        line: u64,
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
            } => write!(f, "could not {action} {}: {source}", path.display()),
            StorageError::NoDirectory { path } => write!(
                f,
                "the directory of the bets file {} does not exist; create it, or point \
                 SERVER_BETS_FILE at a file in a directory that exists",
                path.display()
            ),
            StorageError::NotAFile { path, kind } => write!(
                f,
                "the bets file {} is a {kind}, not a regular file; point SERVER_BETS_FILE at a \
                 regular file (a new one starts a new round)",
                path.display()
            ),
            StorageError::Locked { path } => write!(
                f,
                "the bets file {} is in use by another server; stop that server first, or \
                 point SERVER_BETS_FILE at another file",
                path.display()
            ),
            StorageError::BadRow { path, row, reason } => write!(
                f,
                "line {row} of the bets file {} cannot be read: {reason}; the file was left as \
                 it is: repair or move it, or start a new round with a new SERVER_BETS_FILE",
                path.display()
            ),
            StorageError::BadRecords { path, line, reason } => write!(
                f,
                "line {line} of the FINISH records {}: {reason}; the files were left as they are",
                path.display()
            ),
        }
    }
}

// `Display` already shows the underlying I/O error, so it is not also a `source`.
impl std::error::Error for StorageError {}

/// An I/O failure on the file at `path`.
fn io_error(path: &Path, action: &'static str, source: io::Error) -> StorageError {
    StorageError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Makes a new file's directory entry durable.
fn sync_directory_of(path: &Path) -> Result<(), StorageError> {
    File::open(parent_of(path))
        .and_then(|dir| dir.sync_all())
        .map_err(|e| io_error(path, "sync the directory of", e))
}

/// Opens (or creates, with mode 0600) a file of the round for reading and
/// appending; only a regular file is accepted.
fn open_round_file(path: &Path) -> Result<File, StorageError> {
    // Looked at before opening: opening a FIFO could wait for a peer.
    match std::fs::metadata(path) {
        Ok(meta) => refuse_non_file(path, meta.file_type())?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(path, "inspect", e)),
    }
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(PRIVATE_FILE_MODE)
        .open(path)
        .map_err(|e| match parent_of(path).exists() {
            false => StorageError::NoDirectory {
                path: path.to_path_buf(),
            },
            true => io_error(path, "open", e),
        })?;
    let meta = file.metadata().map_err(|e| io_error(path, "inspect", e))?;
    refuse_non_file(path, meta.file_type())?;
    Ok(file)
}

/// Opens a file of the round for reading only; only a regular file is accepted.
fn open_for_reading(path: &Path) -> Result<File, StorageError> {
    // Looked at before opening: opening a FIFO could wait for a peer.
    let meta = std::fs::metadata(path).map_err(|e| io_error(path, "open", e))?;
    refuse_non_file(path, meta.file_type())?;
    File::open(path).map_err(|e| io_error(path, "open", e))
}

fn refuse_non_file(path: &Path, file_type: std::fs::FileType) -> Result<(), StorageError> {
    use std::os::unix::fs::FileTypeExt;
    let kind = if file_type.is_file() {
        return Ok(());
    } else if file_type.is_dir() {
        "directory"
    } else if file_type.is_fifo() {
        "FIFO (named pipe)"
    } else if file_type.is_char_device() || file_type.is_block_device() {
        "device"
    } else {
        "special file"
    };
    Err(StorageError::NotAFile {
        path: path.to_path_buf(),
        kind,
    })
}

/// A batch that `append_batch` wrote (or found stored) and `sync` has yet to
/// confirm on disk.
#[derive(Debug, Clone, Copy)]
#[must_use = "a batch is not durable until it is synced"]
pub(crate) struct Appended {
    /// Position, in bytes ever appended, just past this batch (or past
    /// everything appended when the batch was found already stored).
    end: u64,
}

/// What `append_batch` did with a batch.
#[derive(Debug)]
pub(crate) enum Append {
    /// The batch started where the agency's stored bets end: it was appended.
    Stored(Appended),
    /// Every bet of the batch was stored before: nothing was written.
    AlreadyStored(Appended),
    /// The batch starts elsewhere: nothing was written; `expected` is the
    /// number its first bet should have.
    OutOfOrder { expected: u64 },
    /// The agency's FINISH is recorded (or being recorded): nothing was written.
    Finished,
}

/// What `record_finish` did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Finish {
    /// The FINISH is on disk; `first_time` is false for a repeat.
    Recorded { first_time: bool },
    /// The total is not the agency's stored bets: nothing was recorded.
    CountMismatch { stored: u64 },
    /// The total is right but the digest is not that of the stored bets (or of
    /// the FINISH recorded before): nothing was recorded.
    DigestMismatch { stored: Digest },
}

/// Where one agency's bets stand in the file.
#[derive(Debug, Default, Clone)]
struct AgencyLedger {
    /// Bets appended, including those not yet on disk.
    stored: u64,
    /// Bets known to be on disk.
    durable: u64,
    /// The digest of the `stored` bets so far; `None` before the first.
    hash: Option<Hasher>,
    /// The same for the `durable` bets.
    durable_hash: Option<Hasher>,
    finish: FinishState,
}

impl AgencyLedger {
    /// The digest of the agency's bets on disk.
    fn durable_digest(&self) -> Digest {
        self.durable_hash
            .as_ref()
            .map_or_else(Digest::of_nothing, Hasher::digest)
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum FinishState {
    #[default]
    Open,
    /// Its FINISH is being written: no new batch may be appended.
    Finishing,
    /// Its FINISH with this total and digest is on disk.
    Finished { total: u64, digest: Digest },
}

/// What the server tells an agency about its bets on disk (WELCOME).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DurableState {
    pub stored: u64,
    pub digest: Digest,
    pub finished: bool,
}

/// Rows appended and not yet on disk, in the order they were appended.
#[derive(Debug)]
struct PendingRows {
    end: u64,
    agency: u32,
    count: u64,
    /// The agency's digest once these rows are in.
    hash: Hasher,
}

/// The bets file of a round, shared by every connection thread.
pub(crate) struct BetStore {
    path: PathBuf,
    writer: Mutex<Writer>,
    commit: Mutex<CommitState>,
    committed: Condvar,
    /// A second handle on the same open file (so under the same lock), so an
    /// `fsync` runs without the writer lock.
    sync_handle: File,
    /// The FINISH records; its lock also puts FINISHes one after another.
    finishes: Mutex<FinishRecords>,
    /// The round's number of agencies, for the seal.
    agencies: u32,
}

struct Writer {
    /// Opened for appending, so every write lands at the file's real end.
    file: File,
    /// Bytes of the file, all whole rows.
    len: u64,
    /// Bytes ever appended, including those later cut off: names every batch uniquely.
    appended: u64,
    /// A failed write may have left bytes past `len` that a cut could not remove.
    needs_cut: bool,
    agencies: HashMap<u32, AgencyLedger>,
    pending: VecDeque<PendingRows>,
}

impl Writer {
    fn agency(&mut self, agency: u32) -> &mut AgencyLedger {
        self.agencies.entry(agency).or_default()
    }

    /// The rows appended through `end` are on disk.
    fn durable_through(&mut self, end: u64) {
        while self.pending.front().is_some_and(|p| p.end <= end) {
            if let Some(rows) = self.pending.pop_front() {
                let ledger = self.agency(rows.agency);
                ledger.durable += rows.count;
                ledger.durable_hash = Some(rows.hash);
            }
        }
    }

    /// Rows not yet on disk were cut off: each agency is back to its durable
    /// count and digest.
    fn forget_pending(&mut self) {
        for rows in std::mem::take(&mut self.pending) {
            let ledger = self.agency(rows.agency);
            ledger.stored = ledger.durable;
            ledger.hash = ledger.durable_hash.clone();
        }
    }
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

impl BetStore {
    /// Takes the bets file at `path` for a round of `agencies` agencies: creates
    /// it (mode 0600) or continues the round it holds, locks it for this
    /// process, and opens the FINISH records beside it. What was recovered is
    /// returned for the server to log.
    pub fn open(path: &Path, agencies: u32) -> Result<(BetStore, Recovered), StorageError> {
        let file = open_round_file(path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StorageError::Locked {
                    path: path.to_path_buf(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_error(path, "lock", e)),
        }
        let (recovered, records) = recovery::recover(path, &file, agencies)?;
        sync_directory_of(path)?;
        let len = file
            .metadata()
            .map_err(|e| io_error(path, "inspect", e))?
            .len();
        let mut ledgers = HashMap::new();
        for (&agency, rows) in &recovered.per_agency {
            ledgers.insert(
                agency,
                AgencyLedger {
                    stored: rows.count,
                    durable: rows.count,
                    hash: Some(rows.hash.clone()),
                    durable_hash: Some(rows.hash.clone()),
                    finish: FinishState::Open,
                },
            );
        }
        for (&agency, &(total, digest)) in &recovered.finished {
            ledgers.entry(agency).or_default().finish = FinishState::Finished { total, digest };
        }
        let sync_handle = file.try_clone().map_err(|e| io_error(path, "open", e))?;
        let store = BetStore {
            path: path.to_path_buf(),
            writer: Mutex::new(Writer {
                file,
                len,
                appended: 0,
                needs_cut: false,
                agencies: ledgers,
                pending: VecDeque::new(),
            }),
            commit: Mutex::new(CommitState {
                resolved: 0,
                durable_len: len,
                syncing: false,
                failed: Vec::new(),
                last_failure: String::new(),
            }),
            committed: Condvar::new(),
            sync_handle,
            finishes: Mutex::new(records),
            agencies,
        };
        Ok((store, recovered))
    }

    /// The bets file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The FINISH records' path.
    pub fn records_path(&self) -> PathBuf {
        lock(&self.finishes).path().to_path_buf()
    }

    /// A handle of its own on the bets file this store opened (so a path renamed
    /// or replaced meanwhile changes nothing), to read it back.
    pub fn reader(&self) -> Result<File, StorageError> {
        lock(&self.writer)
            .file
            .try_clone()
            .map_err(|e| self.io_error("open", e))
    }

    fn io_error(&self, action: &'static str, source: io::Error) -> StorageError {
        io_error(&self.path, action, source)
    }

    /// The agency's bets on disk, their digest, and whether its FINISH is
    /// recorded, once every bet stored so far has been made durable.
    pub fn durable_state(&self, agency: u32) -> DurableState {
        let end = lock(&self.writer).appended;
        // A failed flush cuts what it could not keep: the counts below are what
        // is on disk either way, and the batches concerned get the error.
        let _ = self.sync(Appended { end });
        let writer = lock(&self.writer);
        match writer.agencies.get(&agency) {
            Some(ledger) => DurableState {
                stored: ledger.durable,
                digest: ledger.durable_digest(),
                finished: matches!(ledger.finish, FinishState::Finished { .. }),
            },
            None => DurableState {
                stored: 0,
                digest: Digest::of_nothing(),
                finished: false,
            },
        }
    }

    /// The round's seal, once every agency's FINISH is recorded: SHA-256 over
    /// each agency's number, total and digest, in agency order.
    pub fn seal(&self) -> Option<Digest> {
        let writer = lock(&self.writer);
        let mut finishes = Vec::with_capacity(self.agencies as usize);
        for agency in 1..=self.agencies {
            match writer.agencies.get(&agency).map(|ledger| ledger.finish) {
                Some(FinishState::Finished { total, digest }) => {
                    finishes.push((agency, u32::try_from(total).ok()?, digest));
                }
                _ => return None,
            }
        }
        Some(digest::seal(finishes))
    }

    /// Appends a batch of `agency`'s bets numbered from `first`, in one write at
    /// the file's end, unless it is not the agency's next batch (see `Append`).
    /// `body` is the batch's wire encoding (the BETS body), added to the agency's
    /// digest. Does not wait for the disk: `sync` does. On a failed write the
    /// file is cut back to its length before the batch.
    pub fn append_batch(
        &self,
        agency: u32,
        first: u64,
        bets: &[ValidBet<'_>],
        body: &[u8],
    ) -> Result<Append, StorageError> {
        let count = bets.len() as u64;
        // A batch of one message's worth of bets makes somewhat more than 8 KiB
        // of rows (the agency and separators are added): one allocation, no growth.
        let mut bytes = Vec::with_capacity(16 * 1024);
        rows::write_rows(&mut bytes, agency, bets);
        let mut writer = lock(&self.writer);
        let ledger = writer.agency(agency);
        let (stored, finish) = (ledger.stored, ledger.finish);
        match finish {
            FinishState::Finished { .. } => return Ok(Append::Finished),
            FinishState::Finishing if first + count > stored => {
                return Ok(Append::Finished);
            }
            _ => {}
        }
        if first + count <= stored {
            return Ok(Append::AlreadyStored(Appended {
                end: writer.appended,
            }));
        }
        if first != stored {
            return Ok(Append::OutOfOrder { expected: stored });
        }
        if writer.needs_cut {
            let len = writer.len;
            writer
                .file
                .set_len(len)
                .map_err(|e| self.io_error("cut back", e))?;
            writer.needs_cut = false;
        }
        // The file's real end, checked before the write it is the start of.
        let at = writer
            .file
            .metadata()
            .map_err(|e| self.io_error("inspect", e))?
            .len();
        if let Err(e) = writer.file.write_all(&bytes) {
            // Cut off whatever part of the batch reached the file; if even that
            // fails, the next append retries the cut before writing.
            writer.needs_cut = writer.file.set_len(at).is_err();
            writer.len = at;
            return Err(self.io_error("write to", e));
        }
        writer.len = at + bytes.len() as u64;
        writer.appended += bytes.len() as u64;
        let end = writer.appended;
        let ledger = writer.agency(agency);
        ledger.stored += count;
        let hash = ledger.hash.get_or_insert_with(Hasher::new);
        hash.update(body);
        let hash = hash.clone();
        writer.pending.push_back(PendingRows {
            end,
            agency,
            count,
            hash,
        });
        Ok(Append::Stored(Appended { end }))
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
                    lock(&self.writer).durable_through(target);
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
        writer.forget_pending();
        state.failed.push((state.resolved, writer.appended));
        state.resolved = writer.appended;
        state.last_failure = error.to_string();
    }

    /// Records that `agency` finished with `total` bets whose digest is
    /// `digest`, durably, once every one of its stored bets is on disk. A repeat
    /// with the same total and digest is recorded once; a total other than the
    /// agency's stored bets, or a digest other than theirs, records nothing.
    pub fn record_finish(
        &self,
        agency: u32,
        total: u64,
        digest: Digest,
    ) -> Result<Finish, StorageError> {
        let mut records = lock(&self.finishes);
        {
            let mut writer = lock(&self.writer);
            let ledger = writer.agency(agency);
            if let FinishState::Finished {
                total: recorded,
                digest: recorded_digest,
            } = ledger.finish
            {
                return Ok(judge_finish(
                    (recorded, recorded_digest),
                    (total, digest),
                    Finish::Recorded { first_time: false },
                ));
            }
            if ledger.stored != total {
                return Ok(Finish::CountMismatch {
                    stored: ledger.stored,
                });
            }
            ledger.finish = FinishState::Finishing;
        }
        let outcome = self.write_finish(&mut records, agency, total, digest);
        let mut writer = lock(&self.writer);
        let ledger = writer.agency(agency);
        ledger.finish = match &outcome {
            Ok(Finish::Recorded { .. }) => FinishState::Finished { total, digest },
            _ => FinishState::Open,
        };
        outcome
    }

    /// Makes the agency's bets durable, checks they are all still there and are
    /// the bets of `digest`, and writes its FINISH record.
    fn write_finish(
        &self,
        records: &mut FinishRecords,
        agency: u32,
        total: u64,
        digest: Digest,
    ) -> Result<Finish, StorageError> {
        let end = lock(&self.writer).appended;
        self.sync(Appended { end })?;
        let (durable, durable_digest) = {
            let mut writer = lock(&self.writer);
            let ledger = writer.agency(agency);
            (ledger.durable, ledger.durable_digest())
        };
        let judged = judge_finish(
            (durable, durable_digest),
            (total, digest),
            Finish::Recorded { first_time: true },
        );
        if judged == (Finish::Recorded { first_time: true }) {
            records.append(agency, total, &digest)?;
        }
        Ok(judged)
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

/// A FINISH of `(total, digest)` against what the server holds: the count is
/// judged first, then the digest; `agreed` when both match.
fn judge_finish(held: (u64, Digest), finish: (u64, Digest), agreed: Finish) -> Finish {
    if held.0 != finish.0 {
        Finish::CountMismatch { stored: held.0 }
    } else if held.1 != finish.1 {
        Finish::DigestMismatch { stored: held.1 }
    } else {
        agreed
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
    /// Bytes after the last line end, at the end of the file: a row whose write
    /// was cut short, never acknowledged, and not a row.
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

    /// Once the rows are read: how many bytes follow the last line end.
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
    use std::os::unix::fs::PermissionsExt;
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

    /// The wire encoding of `bets`, as a BETS body holds them.
    fn body_of(bets: &[Bet]) -> Vec<u8> {
        let mut body = Vec::new();
        for bet in bets {
            crate::wire::encode_bet(bet.as_ref(), &mut body).unwrap();
        }
        body
    }

    /// The digest of `bets`, computed apart from the store.
    fn digest_of(bets: &[Bet]) -> Digest {
        let mut hasher = Hasher::new();
        hasher.update(&body_of(bets));
        hasher.digest()
    }

    /// The agency's durable count and whether it finished.
    fn counts(store: &BetStore, agency: u32) -> (u64, bool) {
        let state = store.durable_state(agency);
        (state.stored, state.finished)
    }

    /// Appends `bets` as `agency`'s batch from `first` and waits for the disk.
    fn store(store: &BetStore, agency: u32, first: u64, bets: &[Bet]) -> Append {
        let valid: Vec<ValidBet> = bets.iter().map(Bet::valid).collect();
        let outcome = store
            .append_batch(agency, first, &valid, &body_of(bets))
            .unwrap();
        if let Append::Stored(appended) | Append::AlreadyStored(appended) = &outcome {
            store.sync(*appended).unwrap();
        }
        outcome
    }

    fn bets(documents: std::ops::Range<u32>) -> Vec<Bet> {
        documents.map(|d| bet("Ana", &d.to_string(), 1)).collect()
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

    fn new_store(dir: &tempfile::TempDir, agencies: u32) -> (BetStore, PathBuf) {
        let path = dir.path().join("bets.csv");
        let (store, recovered) = BetStore::open(&path, agencies).unwrap();
        assert!(!recovered.is_resumed());
        (store, path)
    }

    #[test]
    fn stored_bets_load_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (bets_file, path) = new_store(&dir, 5);
        let batch = vec![bet("Ana", "1", 7574), bet("Luis, \"el\"", "2", 1)];
        assert!(matches!(store(&bets_file, 2, 0, &batch), Append::Stored(_)));
        store(&bets_file, 5, 0, &[bet("Eva", "3", 7574)]);
        bets_file.close().unwrap();
        assert_eq!(
            read_all(&path),
            vec![
                (2, batch[0].clone()),
                (2, batch[1].clone()),
                (5, bet("Eva", "3", 7574))
            ]
        );
    }

    #[test]
    fn only_the_batch_that_starts_where_the_stored_bets_end_is_appended() {
        let dir = tempfile::tempdir().unwrap();
        let (bets_file, path) = new_store(&dir, 1);
        assert!(matches!(
            store(&bets_file, 1, 0, &bets(0..10)),
            Append::Stored(_)
        ));
        // Sent again after a lost connection: acked, not stored twice.
        assert!(matches!(
            store(&bets_file, 1, 0, &bets(0..10)),
            Append::AlreadyStored(_)
        ));
        assert!(matches!(
            store(&bets_file, 1, 5, &bets(5..10)),
            Append::AlreadyStored(_)
        ));
        // A gap and an overlap store nothing and say where to resume.
        assert!(matches!(
            store(&bets_file, 1, 11, &bets(11..12)),
            Append::OutOfOrder { expected: 10 }
        ));
        assert!(matches!(
            store(&bets_file, 1, 8, &bets(8..12)),
            Append::OutOfOrder { expected: 10 }
        ));
        assert!(matches!(
            store(&bets_file, 1, 10, &bets(10..12)),
            Append::Stored(_)
        ));
        assert_eq!(counts(&bets_file, 1), (12, false));
        // The batches sent again added nothing to the digest either.
        assert_eq!(bets_file.durable_state(1).digest, digest_of(&bets(0..12)));
        assert_eq!(bets_file.durable_state(2).digest, Digest::of_nothing());
        assert_eq!(read_all(&path).len(), 12);
    }

    #[test]
    fn a_finish_needs_the_stored_total_is_recorded_once_and_closes_the_bets() {
        let dir = tempfile::tempdir().unwrap();
        let (bets_file, path) = new_store(&dir, 2);
        store(&bets_file, 1, 0, &bets(0..3));
        let digest = digest_of(&bets(0..3));
        let other = digest_of(&bets(1..4));
        assert_eq!(
            bets_file.record_finish(1, 4, digest).unwrap(),
            Finish::CountMismatch { stored: 3 }
        );
        // The count is judged before the digest.
        assert_eq!(
            bets_file.record_finish(1, 4, other).unwrap(),
            Finish::CountMismatch { stored: 3 }
        );
        assert_eq!(
            bets_file.record_finish(1, 3, other).unwrap(),
            Finish::DigestMismatch { stored: digest }
        );
        assert_eq!(counts(&bets_file, 1), (3, false));
        assert_eq!(bets_file.seal(), None);
        assert_eq!(
            bets_file.record_finish(1, 3, digest).unwrap(),
            Finish::Recorded { first_time: true }
        );
        assert_eq!(
            bets_file.record_finish(1, 3, digest).unwrap(),
            Finish::Recorded { first_time: false }
        );
        // A repeat that differs from the record is refused, and records nothing.
        assert_eq!(
            bets_file.record_finish(1, 3, other).unwrap(),
            Finish::DigestMismatch { stored: digest }
        );
        assert_eq!(
            bets_file.record_finish(1, 2, digest).unwrap(),
            Finish::CountMismatch { stored: 3 }
        );
        assert_eq!(counts(&bets_file, 1), (3, true));
        assert!(matches!(
            store(&bets_file, 1, 3, &bets(3..4)),
            Append::Finished
        ));
        assert!(matches!(
            store(&bets_file, 1, 0, &bets(0..3)),
            Append::Finished
        ));
        // Agency 2 finishes with no bets: the digest of nothing.
        assert_eq!(
            bets_file.record_finish(2, 0, Digest::of_nothing()).unwrap(),
            Finish::Recorded { first_time: true }
        );
        let records = std::fs::read_to_string(finishes::records_path(&path)).unwrap();
        assert_eq!(
            records,
            format!(
                "agencies 2\nfinished 1 3 {digest}\nfinished 2 0 {}\n",
                Digest::of_nothing()
            )
        );
        assert_eq!(
            bets_file.seal(),
            Some(crate::wire::digest::seal([
                (1, 3, digest),
                (2, 0, Digest::of_nothing())
            ]))
        );
    }

    #[test]
    fn the_files_of_a_round_are_for_the_server_user_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (_bets_file, path) = new_store(&dir, 1);
        for file in [path.clone(), finishes::records_path(&path)] {
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", file.display());
        }
    }

    #[test]
    fn a_restart_continues_the_round_from_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bets.csv");
        {
            let (bets_file, _) = BetStore::open(&path, 3).unwrap();
            store(&bets_file, 1, 0, &bets(0..4));
            store(&bets_file, 2, 0, &bets(10..12));
            assert_eq!(
                bets_file
                    .record_finish(2, 2, digest_of(&bets(10..12)))
                    .unwrap(),
                Finish::Recorded { first_time: true }
            );
        }
        let (bets_file, recovered) = BetStore::open(&path, 3).unwrap();
        assert_eq!(recovered.bets, 6);
        let rows: HashMap<u32, u64> = recovered
            .per_agency
            .iter()
            .map(|(&agency, rows)| (agency, rows.count))
            .collect();
        assert_eq!(rows, HashMap::from([(1, 4), (2, 2)]));
        assert_eq!(
            recovered.finished,
            HashMap::from([(2, (2, digest_of(&bets(10..12))))])
        );
        assert_eq!(counts(&bets_file, 1), (4, false));
        assert_eq!(counts(&bets_file, 2), (2, true));
        // The digests are rebuilt from the rows, names unquoted.
        assert_eq!(bets_file.durable_state(1).digest, digest_of(&bets(0..4)));
        assert_eq!(bets_file.durable_state(2).digest, digest_of(&bets(10..12)));
        assert!(matches!(
            store(&bets_file, 1, 0, &bets(0..4)),
            Append::AlreadyStored(_)
        ));
        assert!(matches!(
            store(&bets_file, 1, 4, &bets(4..5)),
            Append::Stored(_)
        ));
    }

    #[test]
    fn a_last_row_cut_short_is_cut_off_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bets.csv");
        let whole = "1,A,B,1,2000-01-01,7574\r\n1,A,B,2,2000-01-01,1\r\n";
        std::fs::write(&path, format!("{whole}1,A,B,3,2000-01-0")).unwrap();
        let (bets_file, recovered) = BetStore::open(&path, 1).unwrap();
        assert_eq!((recovered.bets, recovered.cut_bytes), (2, 17));
        assert!(recovered.records_missing);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), whole);
        assert!(matches!(
            store(&bets_file, 1, 2, &bets(3..4)),
            Append::Stored(_)
        ));
        assert_eq!(read_all(&path).len(), 3);
    }

    /// Opening `text` as a bets file for `agencies` fails, naming `line`, and
    /// leaves the file as it was.
    fn refused(text: &str, agencies: u32, line: u64) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bets.csv");
        std::fs::write(&path, text).unwrap();
        let error = BetStore::open(&path, agencies)
            .err()
            .expect("the start is refused");
        assert!(
            matches!(error, StorageError::BadRow { row, .. } if row == line),
            "{error}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        error.to_string()
    }

    #[test]
    fn a_bad_row_stops_the_start_naming_its_line_and_touches_nothing() {
        let good = "1,A,B,1,2000-01-01,1\r\n";
        let message = refused(&format!("{good}x,A,B,1,2000-01-01,1\r\n{good}"), 1, 2);
        assert!(
            message.contains("line 2") && message.contains("bets.csv"),
            "{message}"
        );
        refused(&format!("{good}{good}1,\"A,B,1,2000-01-01,1\r\n"), 1, 3);
        let message = refused(&format!("{good}7,A,B,1,2000-01-01,1\r\n"), 5, 2);
        assert!(message.contains("agency 7"), "{message}");
        refused(&format!("{good}\r\n{good}"), 1, 2);
        refused(&format!("{good}{}", "9".repeat(5000)), 1, 2);
    }

    #[test]
    fn finish_records_must_fit_the_round() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bets.csv");
        std::fs::write(&path, "1,A,B,1,2000-01-01,1\r\n").unwrap();
        let records = finishes::records_path(&path);
        let row = Bet {
            first_name: "A".into(),
            last_name: "B".into(),
            document: "1".into(),
            birthdate: "2000-01-01".into(),
            number: 1,
        };
        let digest = digest_of(std::slice::from_ref(&row));
        let other = Digest::of_nothing();
        for (text, wanted) in [
            ("agencies 4\n".to_string(), "SERVER_AGENCIES=4"),
            (
                format!("agencies 5\nfinished 1 2 {digest}\n"),
                "holds 1 of its bets",
            ),
            (
                format!("agencies 5\nfinished 1 1 {other}\n"),
                "digest e3b0c442, but its rows in the bets file have digest",
            ),
            (format!("agencies 5\nfinished 9 0 {other}\n"), "agency 9"),
            (
                "agencies 5\nfinished 1 1\n".to_string(),
                "protocol version 2",
            ),
            ("agencies 5\nwhatever\n".to_string(), "not `finished"),
        ] {
            std::fs::write(&records, &text).unwrap();
            let error = BetStore::open(&path, 5).err().expect("refused").to_string();
            assert!(error.contains(wanted), "{text:?}: {error}");
            assert!(error.contains("line "), "{error}");
            assert_eq!(std::fs::read_to_string(&records).unwrap(), text);
        }
        // A record cut short was never acknowledged: it is cut off.
        let whole = format!("agencies 5\nfinished 1 1 {digest}\n");
        std::fs::write(&records, format!("{whole}finis")).unwrap();
        let (bets_file, recovered) = BetStore::open(&path, 5).unwrap();
        assert_eq!(recovered.finished, HashMap::from([(1, (1, digest))]));
        assert_eq!(counts(&bets_file, 1), (1, true));
        assert_eq!(std::fs::read_to_string(&records).unwrap(), whole);
    }

    #[test]
    fn a_second_store_on_the_same_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_first, path) = new_store(&dir, 1);
        let error = BetStore::open(&path, 1).err().expect("locked");
        assert!(matches!(error, StorageError::Locked { .. }), "{error}");
        assert!(error.to_string().contains("another server"));
    }

    #[test]
    fn only_a_regular_file_is_a_bets_file() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        let mut paths = vec![dir.path().to_path_buf(), PathBuf::from("/dev/null")];
        if made.is_ok_and(|s| s.success()) {
            paths.push(fifo);
        }
        for path in paths {
            let error = BetStore::open(&path, 1).err().expect("refused");
            assert!(
                matches!(error, StorageError::NotAFile { .. }),
                "{}: {error}",
                path.display()
            );
        }
    }

    #[test]
    fn the_draw_reads_the_file_the_store_opened_even_if_the_path_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let (bets_file, path) = new_store(&dir, 1);
        store(&bets_file, 1, 0, &bets(0..3));
        std::fs::rename(&path, dir.path().join("moved.csv")).unwrap();
        std::fs::write(&path, "1,X,Y,9,2000-01-01,1\r\n").unwrap();
        let mut rows = BetRows::between(&path, bets_file.reader().unwrap(), 0, u64::MAX);
        let mut documents = Vec::new();
        while let Some(row) = rows.next_row() {
            documents.push(row.unwrap().document().to_vec());
        }
        assert_eq!(documents, [b"0".to_vec(), b"1".to_vec(), b"2".to_vec()]);
    }

    #[test]
    fn rows_across_read_buffer_boundaries_are_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (bets_file, path) = new_store(&dir, 1);
        // About 2.5 read buffers of rows of varying length, so rows straddle the
        // boundaries at different offsets.
        let rows_total = 60_000u32;
        for start in (0..rows_total).step_by(1000) {
            let batch: Vec<Bet> = (start..start + 1000)
                .map(|i| {
                    bet(
                        &"N".repeat(1 + (i % 7) as usize),
                        &i.to_string(),
                        (i % 10_000) as u16,
                    )
                })
                .collect();
            store(&bets_file, 1, u64::from(start), &batch);
        }
        bets_file.close().unwrap();
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
    fn an_unterminated_tail_is_not_a_row_and_an_endless_row_stops_reading() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bets.csv");
        std::fs::write(&path, "1,A,B,1,2000-01-01,7574\r\n2,A,B,2,2000-01-01,7574").unwrap();
        let mut rows = BetRows::open(&path).unwrap();
        assert!(rows.next_row().unwrap().is_ok());
        assert!(rows.next_row().is_none());
        assert_eq!(rows.unterminated_tail(), 23);

        std::fs::write(&path, vec![b'1'; READ_BUFFER_LEN + 10]).unwrap();
        let mut rows = BetRows::open(&path).unwrap();
        let error = rows.next_row().unwrap().unwrap_err();
        assert!(error.to_string().contains("longer than"), "{error}");
        assert!(rows.next_row().is_none());
    }

    #[test]
    fn concurrent_batches_are_whole_rows_and_all_durable() {
        let dir = tempfile::tempdir().unwrap();
        let (bets_file, path) = new_store(&dir, 8);
        let bets_file = Arc::new(bets_file);
        let threads: Vec<_> = (1..=8u32)
            .map(|agency| {
                let bets_file = Arc::clone(&bets_file);
                std::thread::spawn(move || {
                    for round in 0..20u16 {
                        let batch: Vec<Bet> = (0..30u16)
                            .map(|i| bet("Ana María", &format!("{agency}{round:02}{i:02}"), i))
                            .collect();
                        let first = u64::from(round) * 30;
                        assert!(matches!(
                            store(&bets_file, agency, first, &batch),
                            Append::Stored(_)
                        ));
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
        for agency in 1..=8 {
            assert_eq!(counts(&bets_file, agency), (600, false));
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
