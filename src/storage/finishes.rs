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
//! acknowledged. `read_records` parses them back, changing nothing; what they
//! must match is `recovery`'s job.

use super::error::{StorageError, io_error};
use super::file::sync_directory_of;
use crate::files::PRIVATE_FILE_MODE;
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

/// One FINISH record as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    /// Its line in the records file.
    pub line: u64,
    pub agency: u32,
    pub total: u64,
    pub digest: Digest,
}

/// The records file as read, changing nothing.
pub(super) enum RecordsRead {
    Missing,
    /// Not even the header line is whole: the file was cut short while created.
    HeaderTorn,
    Read {
        records: Vec<Record>,
        /// Bytes of whole lines; a last line without its line end lies past them.
        whole_len: u64,
        file_len: u64,
    },
}

pub(super) fn bad_records(path: &Path, line: u64, reason: String) -> StorageError {
    StorageError::BadRecords {
        path: path.to_path_buf(),
        line,
        reason,
    }
}

/// Reads and parses the FINISH records at `path`, changing nothing: the header
/// must be for `agencies` agencies, and every whole line a record of an agency
/// of the round (a last line without its line end was cut short while being
/// written, never acknowledged, and is left out).
pub(super) fn read_records(path: &Path, agencies: u32) -> Result<RecordsRead, StorageError> {
    // Looked at before reading: reading a FIFO would wait for a writer.
    match std::fs::metadata(path) {
        Ok(meta) => {
            if let Some(kind) = crate::files::not_a_file(meta.file_type()) {
                return Err(StorageError::RecordsNotAFile {
                    path: path.to_path_buf(),
                    kind,
                });
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RecordsRead::Missing),
        Err(e) => return Err(io_error(path, "inspect", e)),
    }
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RecordsRead::Missing),
        Err(e) => return Err(io_error(path, "read", e)),
    };
    let whole = text
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |end| end + 1);
    if whole == 0 {
        return Ok(RecordsRead::HeaderTorn);
    }
    let mut records: Vec<Record> = Vec::new();
    for (index, line) in text[..whole - 1].split(|&b| b == b'\n').enumerate() {
        let number = index as u64 + 1;
        let parsed = match std::str::from_utf8(line) {
            Err(_) => Err("not text".to_string()),
            Ok(line) if index == 0 => parse_header(line, agencies).map(|()| None),
            Ok(line) => parse_record(line, number, agencies, &records).map(Some),
        };
        match parsed {
            Ok(record) => records.extend(record),
            Err(reason) => return Err(bad_records(path, number, reason)),
        }
    }
    Ok(RecordsRead::Read {
        records,
        whole_len: whole as u64,
        file_len: text.len() as u64,
    })
}

/// Checks the header line: `agencies N`, for the configured N.
fn parse_header(line: &str, agencies: u32) -> Result<(), String> {
    let Some(count) = line.strip_prefix("agencies ") else {
        return Err(format!("{line:?} is not `agencies N`"));
    };
    let count: u32 = count
        .parse()
        .map_err(|_| format!("{line:?} is not a number of agencies"))?;
    if count != agencies {
        return Err(format!(
            "the round in these files is for {count} agencies, but SERVER_AGENCIES is \
             {agencies}; set SERVER_AGENCIES={count} to go on with it, or start a new round \
             with a new SERVER_BETS_FILE"
        ));
    }
    Ok(())
}

/// Parses the record on line `number`: `finished AGENCY TOTAL DIGEST`, for an
/// agency of the round, and the same as any `earlier` record of that agency.
fn parse_record(
    line: &str,
    number: u64,
    agencies: u32,
    earlier: &[Record],
) -> Result<Record, String> {
    let not_a_record = || format!("{line:?} is not `finished AGENCY TOTAL DIGEST`");
    let words: Vec<&str> = line.split(' ').collect();
    let (agency, total, digest) = match words.as_slice() {
        ["finished", agency, total, digest] => (agency, total, digest),
        ["finished", _, _] => {
            return Err(format!(
                "{line:?} has no digest: these records are of protocol version 2; finish that \
                 round with the programs it began with, or start a new round with a new \
                 SERVER_BETS_FILE"
            ));
        }
        _ => return Err(not_a_record()),
    };
    let (Ok(agency), Ok(total), Some(digest)) = (
        agency.parse::<u32>(),
        total.parse::<u64>(),
        Digest::from_hex(digest),
    ) else {
        return Err(not_a_record());
    };
    if !(1..=agencies).contains(&agency) {
        return Err(format!("agency {agency} is not one of 1 to {agencies}"));
    }
    if let Some(before) = earlier.iter().find(|r| r.agency == agency)
        && (before.total, before.digest) != (total, digest)
    {
        return Err(format!(
            "agency {agency} is recorded again with another total or digest than on line {}",
            before.line
        ));
    }
    Ok(Record {
        line: number,
        agency,
        total,
        digest,
    })
}
