//! The FINISH records of a round: a small text file beside the bets file.
//!
//! ```text
//! agencies 5
//! finished 3 2000 5d41402abc4b2a76b9719d911017c592ae1e7a3c8f2f0d8e2b6e6a1f0c3e4d5a
//! finished 1 1998 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
//! ```
//!
//! The first line is the round's number of agencies; then one line per agency
//! whose FINISH is recorded, with its total and the digest of its bets (64 hex
//! digits). A line is appended and flushed to disk before the FINISH is
//! acknowledged. Reading them back is `recovery`'s job.

use super::{PRIVATE_FILE_MODE, StorageError, io_error, sync_directory_of};
use crate::wire::digest::Digest;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Where the FINISH records of the bets file at `bets_file` are.
pub(crate) fn records_path(bets_file: &Path) -> PathBuf {
    let mut name = bets_file.as_os_str().to_owned();
    name.push(".finished");
    PathBuf::from(name)
}

/// The first line of the records: the round's number of agencies.
pub(crate) fn header_line(agencies: u32) -> String {
    format!("agencies {agencies}\n")
}

/// The line that records `agency`'s FINISH with `total` bets of `digest`.
pub(crate) fn finish_line(agency: u32, total: u64, digest: &Digest) -> String {
    format!("finished {agency} {total} {digest}\n")
}

/// The records file, open for appending.
pub(crate) struct FinishRecords {
    path: PathBuf,
    file: File,
}

impl FinishRecords {
    /// Opens the records file at `path`, which recovery has read and checked.
    pub fn open(path: &Path) -> Result<FinishRecords, StorageError> {
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| io_error(path, "open", e))?;
        Ok(FinishRecords {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Creates the records file of a new round (mode 0600), durably.
    pub fn create(path: &Path, agencies: u32) -> Result<FinishRecords, StorageError> {
        let mut file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(PRIVATE_FILE_MODE)
            .open(path)
            .map_err(|e| io_error(path, "create", e))?;
        file.write_all(header_line(agencies).as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(|e| io_error(path, "write", e))?;
        sync_directory_of(path)?;
        Ok(FinishRecords {
            path: path.to_path_buf(),
            file,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `agency`'s FINISH and flushes it to disk. A failed write is cut
    /// back off, so the file ends in whole lines.
    pub fn append(&mut self, agency: u32, total: u64, digest: &Digest) -> Result<(), StorageError> {
        let len = self
            .file
            .metadata()
            .map_err(|e| io_error(&self.path, "inspect", e))?
            .len();
        let line = finish_line(agency, total, digest);
        let written = self
            .file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            let _ = self.file.set_len(len);
            return Err(io_error(&self.path, "write", e));
        }
        Ok(())
    }
}
