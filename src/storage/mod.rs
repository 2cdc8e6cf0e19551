//! The round's files: the bets file, with durable appends and streaming reads,
//! and the FINISH records beside it.
//!
//! `BetStore` is three pieces behind one API: the file (`file`: open, lock,
//! append whole batches), the ledger (`ledger`: each agency's stored and
//! durable bets, digests and FINISH) and the group commit (`commit`: batches
//! written together share one `fsync`). `BetStore::open` takes the bets file
//! for the round: a regular file, locked so that no second server writes it;
//! whatever it already holds is read back first (`recovery`), so a round goes
//! on after a crash or a restart.
//!
//! `append_batch` writes a whole batch as rows (`rows`: `agency,first_name,
//! last_name,document,birthdate,number\r\n`, as the reference `store_bets`
//! writes them) at the file's real end, and `sync` makes it durable. A batch
//! that fails to be written, or whose `fsync` fails, is cut back off the file,
//! so the file only ever ends in whole rows of batches that were (or are about
//! to be) acknowledged. `record_finish` writes an agency's FINISH, with its
//! total and digest, durably to the records file (`finishes`). `reader` streams
//! the rows back; `audit` reads a round without changing it. This module knows
//! nothing of sockets.

mod audit;
mod commit;
mod error;
mod file;
mod finishes;
mod ledger;
mod reader;
mod recovery;
mod rows;
#[cfg(test)]
mod tests;

pub(crate) use audit::{Audit, audit};
pub use error::StorageError;
pub(crate) use ledger::{DurableState, Finish};
pub(crate) use reader::{BetRows, middle_row_end};
pub(crate) use recovery::Recovered;
pub(crate) use rows::RowBuffer;

use crate::app::locks::lock;
use crate::bet::ValidBet;
use crate::wire::digest::Digest;
use commit::{Appender, GroupCommit};
use error::io_error;
use file::AppendFile;
use finishes::FinishRecords;
use ledger::{Admission, Ledger, judge_finish};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

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

/// The file being appended to and the ledger of what it holds, changed together.
struct Writer {
    file: AppendFile,
    ledger: Ledger,
}

impl Appender for Mutex<Writer> {
    fn position(&self) -> (u64, u64) {
        let writer = lock(self);
        (writer.file.appended(), writer.file.len())
    }

    fn durable_through(&self, end: u64) {
        lock(self).ledger.durable_through(end);
    }
}

/// The bets file of a round, shared by every connection thread.
pub(crate) struct BetStore {
    path: PathBuf,
    /// The round's number of agencies, for the seal.
    agencies: u32,
    writer: Mutex<Writer>,
    commit: GroupCommit,
    /// The FINISH records; its lock also puts FINISHes one after another.
    finishes: Mutex<FinishRecords>,
    /// The bets file's identity (device, inode) when it was opened.
    identity: (u64, u64),
    /// The file at the path is no longer the one this store writes: nothing
    /// more is acknowledged (an ack would promise bets another file holds).
    replaced: AtomicBool,
    /// Every batch through this end was on disk when the file was last found
    /// in place: its ack needs no look of its own (one per flush, not per batch).
    checked_through: AtomicU64,
    /// The failed flush was logged.
    poison_logged: AtomicBool,
}

impl BetStore {
    /// Takes the bets file at `path` for a round of `agencies` agencies: creates
    /// it (mode 0600) or continues the round it holds, locks it for this
    /// process, and opens the FINISH records beside it. What was recovered is
    /// returned for the server to log.
    #[cfg(test)]
    pub fn open(path: &Path, agencies: u32) -> Result<(BetStore, Recovered), StorageError> {
        BetStore::open_until(path, agencies, &|| true)
    }

    /// `open`, reading a round back only while `keep_going` says so (checked
    /// as the rows are read, with their progress logged about once a second):
    /// else `StorageError::Interrupted`, and the files are as they were.
    pub fn open_until(
        path: &Path,
        agencies: u32,
        keep_going: &dyn Fn() -> bool,
    ) -> Result<(BetStore, Recovered), StorageError> {
        let file = file::open_round_file(path)?;
        file::lock_for_this_server(path, &file)?;
        let (recovered, records) = recovery::recover(path, &file, agencies, keep_going)?;
        file::sync_directory_of(path)?;
        let len = file
            .metadata()
            .map_err(|e| io_error(path, "inspect", e))?
            .len();
        let ledger = Ledger::recovered(
            recovered
                .per_agency
                .iter()
                .map(|(&agency, rows)| (agency, rows.count, rows.hash.clone())),
            recovered
                .finished
                .iter()
                .map(|(&agency, &(total, digest))| (agency, total, digest)),
        );
        let handle = file.try_clone().map_err(|e| io_error(path, "open", e))?;
        let identity = {
            use std::os::unix::fs::MetadataExt;
            let meta = file.metadata().map_err(|e| io_error(path, "inspect", e))?;
            (meta.dev(), meta.ino())
        };
        let store = BetStore {
            path: path.to_path_buf(),
            agencies,
            identity,
            replaced: AtomicBool::new(false),
            checked_through: AtomicU64::new(0),
            poison_logged: AtomicBool::new(false),
            writer: Mutex::new(Writer {
                file: AppendFile::new(file, len),
                ledger,
            }),
            commit: GroupCommit::new(handle, len),
            finishes: Mutex::new(records),
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
            .file()
            .try_clone()
            .map_err(|e| io_error(&self.path, "open", e))
    }

    /// Everything appended so far, as one batch to sync.
    fn everything(&self) -> Appended {
        Appended {
            end: lock(&self.writer).file.appended(),
        }
    }

    /// The agency's bets on disk, their digest, and whether its FINISH is
    /// recorded, once every bet stored so far has been made durable.
    pub fn durable_state(&self, agency: u32) -> DurableState {
        // A failed flush cuts what it could not keep: the counts below are what
        // is on disk either way, and the batches concerned get the error.
        let _ = self.sync(self.everything());
        lock(&self.writer).ledger.durable_state(agency)
    }

    /// The round's seal, once every agency's FINISH is recorded: SHA-256 over
    /// each agency's number, total and digest, in agency order.
    pub fn seal(&self) -> Option<Digest> {
        lock(&self.writer).ledger.seal(self.agencies)
    }

    /// Appends a batch of `agency`'s bets numbered from `first`, in one write at
    /// the file's end, unless it is not the agency's next batch (see `Append`).
    /// `body` is the batch's wire encoding (the BETS body), added to the agency's
    /// digest; its rows are written in `rows`, the caller's room for them. Does
    /// not wait for the disk: `sync` does. On a failed write the file is cut
    /// back to its length before the batch.
    pub fn append_batch(
        &self,
        agency: u32,
        first: u64,
        bets: &[ValidBet<'_>],
        body: &[u8],
        rows: &mut RowBuffer,
    ) -> Result<Append, StorageError> {
        if self.replaced.load(Ordering::Relaxed) {
            return Err(self.replaced_error());
        }
        if let Some(reason) = self.commit.poisoned() {
            return Err(self.poisoned_error(reason));
        }
        let count = bets.len() as u64;
        let bytes = rows.write(agency, bets);
        let mut writer = lock(&self.writer);
        match writer.ledger.admit(agency, first, count) {
            Admission::Append => {}
            Admission::AlreadyStored => {
                let end = writer.file.appended();
                return Ok(Append::AlreadyStored(Appended { end }));
            }
            Admission::OutOfOrder { expected } => return Ok(Append::OutOfOrder { expected }),
            Admission::Finished => return Ok(Append::Finished),
        }
        let end = writer
            .file
            .append(bytes)
            .map_err(|(action, e)| io_error(&self.path, action, e))?;
        writer.ledger.appended(agency, count, body, end);
        Ok(Append::Stored(Appended { end }))
    }

    /// Waits until an appended batch is on disk. Batches appended meanwhile by
    /// other threads share the same `fsync`. If the `fsync` fails, every batch not
    /// yet durable is cut off the file and gets the error.
    /// The file is then looked at (`check_in_place`) unless it was found in
    /// place after this batch was on disk already.
    pub fn sync(&self, appended: Appended) -> Result<(), StorageError> {
        let resolved = self
            .commit
            .sync(appended.end, &self.writer)
            .map_err(|reason| self.poisoned_error(reason))?;
        if appended.end <= self.checked_through.load(Ordering::Acquire) {
            return match self.replaced.load(Ordering::Relaxed) {
                true => Err(self.replaced_error()),
                false => Ok(()),
            };
        }
        self.check_in_place()?;
        // Every batch resolved before the look was on disk when it was made.
        self.checked_through.fetch_max(resolved, Ordering::Release);
        Ok(())
    }

    /// Why nothing more is stored, once a flush failed; `None` before.
    pub fn poisoned(&self) -> Option<StorageError> {
        self.commit
            .poisoned()
            .map(|reason| self.poisoned_error(reason))
    }

    /// The error of every batch after a failed flush; logged the first time.
    fn poisoned_error(&self, reason: String) -> StorageError {
        let error = StorageError::FlushFailed {
            path: self.path.clone(),
            reason,
        };
        if !self.poison_logged.swap(true, Ordering::Relaxed) {
            log::error!(
                "action: almacenar | result: fail | path: {} | error: {error}",
                crate::text::shown(&self.path)
            );
        }
        error
    }

    /// Whether the file at the bets file's path is still the one this store
    /// writes (not deleted, renamed away or replaced); once it is not, never
    /// again, and it is logged once.
    fn check_in_place(&self) -> Result<(), StorageError> {
        use Ordering;
        use std::os::unix::fs::MetadataExt;
        if self.replaced.load(Ordering::Relaxed) {
            return Err(self.replaced_error());
        }
        let in_place = std::fs::metadata(&self.path)
            .is_ok_and(|meta| (meta.dev(), meta.ino()) == self.identity && meta.nlink() > 0);
        if in_place {
            return Ok(());
        }
        if !self.replaced.swap(true, Ordering::Relaxed) {
            log::error!(
                "action: almacenar | result: fail | path: {} | error: {}",
                crate::text::shown(&self.path),
                self.replaced_error()
            );
        }
        Err(self.replaced_error())
    }

    fn replaced_error(&self) -> StorageError {
        StorageError::Replaced {
            path: self.path.clone(),
        }
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
        if let Some(judged) = lock(&self.writer)
            .ledger
            .begin_finish(agency, total, digest)
        {
            return Ok(judged);
        }
        let outcome = self.write_finish(&mut records, agency, total, digest);
        let recorded = matches!(outcome, Ok(Finish::Recorded { .. })).then_some((total, digest));
        lock(&self.writer).ledger.end_finish(agency, recorded);
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
        self.sync(self.everything())?;
        let durable = lock(&self.writer).ledger.durable_state(agency);
        let judged = judge_finish(
            (durable.stored, durable.digest),
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
        let everything = self.everything();
        if self.commit.is_resolved(everything.end) {
            return Ok(());
        }
        self.sync(everything)
    }
}
