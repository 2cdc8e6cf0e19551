//! The bets file as a file: opened (or created, mode 0600) only when it is a
//! regular file, locked for one server, its directory entry made durable, and
//! appended to in whole batches that a failed write never leaves half written.

use super::error::{StorageError, io_error};
use crate::files::{PRIVATE_FILE_MODE, not_a_file};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The directory holding `path` (`.` for a bare file name).
fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Makes a new file's directory entry durable.
pub(super) fn sync_directory_of(path: &Path) -> Result<(), StorageError> {
    File::open(parent_of(path))
        .and_then(|dir| dir.sync_all())
        .map_err(|e| io_error(path, "sync the directory of", e))
}

/// `Ok` for a regular file; the error names what `path` is instead.
fn refuse_non_file(path: &Path, file_type: std::fs::FileType) -> Result<(), StorageError> {
    match not_a_file(file_type) {
        None => Ok(()),
        Some(kind) => Err(StorageError::NotAFile {
            path: path.to_path_buf(),
            kind,
        }),
    }
}

/// Opens (or creates, with mode 0600) a file of the round for reading and
/// appending; only a regular file is accepted.
pub(super) fn open_round_file(path: &Path) -> Result<File, StorageError> {
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
pub(super) fn open_for_reading(path: &Path) -> Result<File, StorageError> {
    // Looked at before opening: opening a FIFO could wait for a peer.
    let meta = std::fs::metadata(path).map_err(|e| io_error(path, "open", e))?;
    refuse_non_file(path, meta.file_type())?;
    File::open(path).map_err(|e| io_error(path, "open", e))
}

/// Takes the file for this process: a second server on it is refused.
pub(super) fn lock_for_this_server(path: &Path, file: &File) -> Result<(), StorageError> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => Err(StorageError::Locked {
            path: path.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(io_error(path, "lock", e)),
    }
}

/// The bets file being appended to: every write lands at its real end, and the
/// file only ever ends in whole rows.
pub(super) struct AppendFile {
    /// Opened for appending, so every write lands at the file's real end.
    file: File,
    /// Bytes of the file, all whole rows.
    len: u64,
    /// Bytes ever appended by writes that succeeded: names every batch uniquely.
    appended: u64,
    /// A failed write may have left bytes past `len` that a cut could not remove.
    needs_cut: bool,
}

impl AppendFile {
    pub fn new(file: File, len: u64) -> AppendFile {
        AppendFile {
            file,
            len,
            appended: 0,
            needs_cut: false,
        }
    }

    /// The open file, for a handle of its own.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Bytes ever appended.
    pub fn appended(&self) -> u64 {
        self.appended
    }

    /// Bytes of the file, all whole rows.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Writes `bytes` in one write at the file's end and returns the position,
    /// in bytes ever appended, just past them. On a failed write the file is
    /// cut back to its length before them (or, if even that fails, before the
    /// next append); the error says what failed.
    pub fn append(&mut self, bytes: &[u8]) -> Result<u64, (&'static str, io::Error)> {
        if self.needs_cut {
            self.file.set_len(self.len).map_err(|e| ("cut back", e))?;
            self.needs_cut = false;
        }
        // The file's real end, checked before the write it is the start of.
        let at = self.file.metadata().map_err(|e| ("inspect", e))?.len();
        if let Err(e) = self.file.write_all(bytes) {
            self.needs_cut = self.file.set_len(at).is_err();
            self.len = at;
            return Err(("write to", e));
        }
        self.len = at + bytes.len() as u64;
        self.appended += bytes.len() as u64;
        Ok(self.appended)
    }
}
