//! What can go wrong with a round's files: `StorageError`, whose `Display`
//! names the file and says what to do.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

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
    /// The FINISH records' path is not a regular file.
    RecordsNotAFile { path: PathBuf, kind: &'static str },
    /// The bets file was deleted or replaced at its path while the server ran.
    Replaced { path: PathBuf },
    /// A flush to disk failed: nothing more is stored on this file.
    FlushFailed { path: PathBuf, reason: String },
    /// The stop was requested while the round was being read back.
    Interrupted { path: PathBuf, rows: u64 },
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

impl StorageError {
    /// The file the error is about.
    pub fn path(&self) -> &std::path::Path {
        match self {
            StorageError::Io { path, .. }
            | StorageError::NoDirectory { path }
            | StorageError::NotAFile { path, .. }
            | StorageError::RecordsNotAFile { path, .. }
            | StorageError::Replaced { path }
            | StorageError::FlushFailed { path, .. }
            | StorageError::Interrupted { path, .. }
            | StorageError::Locked { path }
            | StorageError::BadRow { path, .. }
            | StorageError::BadRecords { path, .. } => path,
        }
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Every error names its file, escaped: a path comes from outside.
        let path = crate::text::shown(self.path());
        match self {
            StorageError::Io { action, source, .. } => {
                write!(f, "could not {action} {path}: {source}")
            }
            StorageError::NoDirectory { .. } => write!(
                f,
                "the directory of the bets file {path} does not exist; create it, or point \
                 SERVER_BETS_FILE at a file in a directory that exists"
            ),
            StorageError::NotAFile { kind, .. } => write!(
                f,
                "the bets file {path} is a {kind}, not a regular file; point SERVER_BETS_FILE at a \
                 regular file (a new one starts a new round)"
            ),
            StorageError::RecordsNotAFile { kind, .. } => write!(
                f,
                "the FINISH records {path} are a {kind}, not a regular file; move it away (the \
                 round's records are a regular file beside the bets file)"
            ),
            StorageError::FlushFailed { reason, .. } => write!(
                f,
                "could not flush {path} to disk ({reason}); after a failed flush what the disk holds \
                 is unknown, so nothing more is acknowledged and the server stops: start it \
                 again on the same file, which recovers from what the disk holds"
            ),
            StorageError::Interrupted { rows, .. } => write!(
                f,
                "stopped while reading the round of {path} back ({rows} rows read); nothing was \
                 changed, and the next start reads it again"
            ),
            StorageError::Replaced { .. } => write!(
                f,
                "the bets file {path} was deleted or replaced while the server ran, so its acks \
                 could no longer be kept; nothing more is stored: stop the server, put the \
                 round's file back, and start it again"
            ),
            StorageError::Locked { .. } => write!(
                f,
                "the bets file {path} is in use by another server; stop that server first, or \
                 point SERVER_BETS_FILE at another file"
            ),
            StorageError::BadRow { row, reason, .. } => write!(
                f,
                "line {row} of the bets file {path} cannot be read: {reason}; the file was left as \
                 it is: repair or move it, or start a new round with a new SERVER_BETS_FILE"
            ),
            StorageError::BadRecords { line, reason, .. } => write!(
                f,
                "line {line} of the FINISH records {path}: {reason}; the files were left as they are"
            ),
        }
    }
}

// `Display` already shows the underlying I/O error, so it is not also a `source`.
impl std::error::Error for StorageError {}

/// An I/O failure on the file at `path`.
pub(crate) fn io_error(path: &Path, action: &'static str, source: io::Error) -> StorageError {
    StorageError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Row `row` of the bets file at `path` cannot be read, for `reason`.
pub(crate) fn bad_row(path: &Path, row: u64, reason: &str) -> StorageError {
    StorageError::BadRow {
        path: path.to_path_buf(),
        row,
        reason: reason.to_string(),
    }
}
