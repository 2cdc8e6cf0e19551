//! Reading back a round already under way: the bets file and its FINISH records.
//!
//! The bets file is flushed to disk first: rows a killed server wrote but never
//! flushed are made durable before any of them counts as stored. Every stored
//! row must then read back whole, for an agency of the round; each agency's
//! digest is rebuilt from its rows. A last row without its line end is a write
//! cut short by a crash, never acknowledged: it is cut off. Any other bad row
//! stops the start and leaves the files as they are. The FINISH records must be
//! for the same number of agencies, and each finished agency's total and digest
//! must be those of its rows, so a round whose rows were changed, added or
//! removed after its FINISH never starts again. `audit` reads the same files
//! without changing anything.

use super::error::{StorageError, io_error};
use super::finishes::{self, FinishRecords, Record, RecordsRead, bad_records, read_records};
use super::reader::BetRows;
use crate::bet;
use crate::files::open_to_others;
use crate::wire::digest::{Digest, Hasher};
use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

/// Longest tail without a line end that can be a row cut short: longer than
/// any stored row (two quoted names of 255 bytes and the rest).
const MAX_TORN_ROW_LEN: u64 = 4096;

/// One agency's rows in the bets file.
#[derive(Debug, Clone, Default)]
pub(crate) struct AgencyRows {
    pub count: u64,
    /// The digest of its rows so far (their wire encoding, in file order).
    pub hash: Hasher,
    /// Its rows that win the draw.
    pub winners: u64,
}

/// What a round's files held when the server started.
#[derive(Debug, Default, Clone)]
pub(crate) struct Recovered {
    /// Rows in the bets file.
    pub bets: u64,
    /// Rows of each agency.
    pub per_agency: HashMap<u32, AgencyRows>,
    /// Each finished agency's total and digest.
    pub finished: HashMap<u32, (u64, Digest)>,
    /// Bytes of a last row cut short, cut off the bets file.
    pub cut_bytes: u64,
    /// The bets file held rows but no FINISH records were beside it: they were
    /// started anew, and agencies that had finished will send FINISH again.
    pub records_missing: bool,
    /// The bets file can be read by other users than the server's.
    pub readable_by_others: bool,
}

impl Recovered {
    /// Whether the files held anything of a round.
    pub fn is_resumed(&self) -> bool {
        self.bets > 0 || !self.finished.is_empty()
    }
}

/// Reads back the bets file at `path` (open as `file`, locked) and its FINISH
/// records, for a round of `agencies` agencies.
pub(super) fn recover(
    path: &Path,
    file: &File,
    agencies: u32,
) -> Result<(Recovered, FinishRecords), StorageError> {
    // What a killed server wrote but never flushed is in the page cache only:
    // flushed now, before a row of it is counted, promised or finished upon.
    file.sync_all()
        .map_err(|e| io_error(path, "flush to disk", e))?;
    let meta = file.metadata().map_err(|e| io_error(path, "inspect", e))?;
    let mut recovered = Recovered {
        readable_by_others: open_to_others(&meta),
        ..Recovered::default()
    };
    let tail = scan_rows(path, file, agencies, &mut recovered)?;
    if tail > MAX_TORN_ROW_LEN {
        return Err(StorageError::BadRow {
            path: path.to_path_buf(),
            row: recovered.bets + 1,
            reason: format!("{tail} bytes without a line end: more than a row cut short"),
        });
    }
    recovered.cut_bytes = tail;
    let records = recover_records(path, agencies, &mut recovered)?;
    if recovered.cut_bytes > 0 {
        let len = meta.len() - recovered.cut_bytes;
        file.set_len(len)
            .and_then(|()| file.sync_data())
            .map_err(|e| io_error(path, "cut the last, unfinished row off", e))?;
    }
    Ok((recovered, records))
}

/// Counts and hashes every agency's rows, checking each one. Returns how many
/// bytes follow the last line end.
pub(super) fn scan_rows(
    path: &Path,
    file: &File,
    agencies: u32,
    recovered: &mut Recovered,
) -> Result<u64, StorageError> {
    let handle = file.try_clone().map_err(|e| io_error(path, "open", e))?;
    let mut rows = BetRows::between(path, handle, 0, u64::MAX);
    let bad_row = |row: u64, reason: String| StorageError::BadRow {
        path: path.to_path_buf(),
        row,
        reason,
    };
    let mut encoded = Vec::with_capacity(1024);
    while let Some(row) = rows.next_row() {
        let row = row?;
        let line = recovered.bets + 1;
        row.check_names()
            .map_err(|reason| bad_row(line, reason.to_string()))?;
        if !(1..=agencies).contains(&row.agency) {
            return Err(bad_row(
                line,
                format!(
                    "agency {} is not one of the round's agencies, 1 to {agencies} \
                     (SERVER_AGENCIES)",
                    row.agency
                ),
            ));
        }
        encoded.clear();
        row.encode_wire(&mut encoded)
            .map_err(|reason| bad_row(line, reason.to_string()))?;
        let agency = recovered.per_agency.entry(row.agency).or_default();
        agency.count += 1;
        agency.hash.update(&encoded);
        agency.winners += u64::from(bet::has_won(row.number));
        recovered.bets += 1;
    }
    Ok(rows.unterminated_tail())
}

/// Why a FINISH record does not match its agency's rows, or `None` when it does.
pub(super) fn mismatch(record: &Record, rows: Option<&AgencyRows>) -> Option<String> {
    let (stored, digest) = rows.map_or((0, Digest::of_nothing()), |r| (r.count, r.hash.digest()));
    let agency = record.agency;
    if record.total != stored {
        return Some(format!(
            "agency {agency} finished with {} bets, but the bets file holds {stored} of its \
             bets: its rows were changed after its FINISH",
            record.total
        ));
    }
    (record.digest != digest).then(|| {
        format!(
            "agency {agency} finished with bets of digest {}, but its rows in the bets file \
             have digest {}: its rows were changed after its FINISH",
            record.digest.short(),
            digest.short()
        )
    })
}

/// Reads the FINISH records beside the bets file, or starts them.
fn recover_records(
    bets_file: &Path,
    agencies: u32,
    recovered: &mut Recovered,
) -> Result<FinishRecords, StorageError> {
    let path = finishes::records_path(bets_file);
    let (records, whole_len, file_len) = match read_records(&path, agencies)? {
        RecordsRead::Missing => {
            recovered.records_missing = recovered.bets > 0;
            return FinishRecords::create(&path, agencies);
        }
        RecordsRead::HeaderTorn => {
            std::fs::remove_file(&path).map_err(|e| io_error(&path, "start again", e))?;
            return FinishRecords::create(&path, agencies);
        }
        RecordsRead::Read {
            records,
            whole_len,
            file_len,
        } => (records, whole_len, file_len),
    };
    for record in &records {
        if let Some(reason) = mismatch(record, recovered.per_agency.get(&record.agency)) {
            return Err(bad_records(&path, record.line, reason));
        }
        recovered
            .finished
            .insert(record.agency, (record.total, record.digest));
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| io_error(&path, "open", e))?;
    if whole_len < file_len {
        file.set_len(whole_len)
            .map_err(|e| io_error(&path, "cut the last, unfinished line off", e))?;
    }
    // Like the rows, the records count only once they are on disk.
    file.sync_all()
        .map_err(|e| io_error(&path, "flush to disk", e))?;
    FinishRecords::open(&path)
}
