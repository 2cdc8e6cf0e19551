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

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::Io {
                action,
                path,
                source,
            } => write!(
                f,
                "could not {action} {}: {source}",
                crate::text::shown(path)
            ),
            StorageError::NoDirectory { path } => write!(
                f,
                "the directory of the bets file {} does not exist; create it, or point \
                 SERVER_BETS_FILE at a file in a directory that exists",
                crate::text::shown(path)
            ),
            StorageError::NotAFile { path, kind } => write!(
                f,
                "the bets file {} is a {kind}, not a regular file; point SERVER_BETS_FILE at a \
                 regular file (a new one starts a new round)",
                crate::text::shown(path)
            ),
            StorageError::RecordsNotAFile { path, kind } => write!(
                f,
                "the FINISH records {} are a {kind}, not a regular file; move it away (the \
                 round's records are a regular file beside the bets file)",
                crate::text::shown(path)
            ),
            StorageError::FlushFailed { path, reason } => write!(
                f,
                "could not flush {} to disk ({reason}); after a failed flush what the disk holds \
                 is unknown, so nothing more is acknowledged and the server stops: start it \
                 again on the same file, which recovers from what the disk holds",
                crate::text::shown(path)
            ),
            StorageError::Interrupted { path, rows } => write!(
                f,
                "stopped while reading the round of {} back ({rows} rows read); nothing was \
                 changed, and the next start reads it again",
                crate::text::shown(path)
            ),
            StorageError::Replaced { path } => write!(
                f,
                "the bets file {} was deleted or replaced while the server ran, so its acks \
                 could no longer be kept; nothing more is stored: stop the server, put the \
                 round's file back, and start it again",
                crate::text::shown(path)
            ),
            StorageError::Locked { path } => write!(
                f,
                "the bets file {} is in use by another server; stop that server first, or \
                 point SERVER_BETS_FILE at another file",
                crate::text::shown(path)
            ),
            StorageError::BadRow { path, row, reason } => write!(
                f,
                "line {row} of the bets file {} cannot be read: {reason}; the file was left as \
                 it is: repair or move it, or start a new round with a new SERVER_BETS_FILE",
                crate::text::shown(path)
            ),
            StorageError::BadRecords { path, line, reason } => write!(
                f,
                "line {line} of the FINISH records {}: {reason}; the files were left as they are",
                crate::text::shown(path)
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
