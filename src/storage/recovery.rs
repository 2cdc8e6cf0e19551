//! Reading back a round already under way: the bets file and its FINISH records.
//!
//! Every stored row must read back whole, for an agency of the round. A last
//! row without its line end is a write cut short by a crash, never
//! acknowledged: it is cut off. Any other bad row stops the start and leaves
//! the files as they are. The FINISH records must be for the same number of
//! agencies, and each finished agency's total must be its rows in the file.

use super::finishes::{self, FinishRecords};
use super::{BetRows, StorageError, io_error};
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Longest tail without a line end that can be a row cut short: longer than
/// any stored row (two quoted names of 255 bytes and the rest).
const MAX_TORN_ROW_LEN: u64 = 4096;

/// What a round's files held when the server started.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Recovered {
    /// Rows in the bets file.
    pub bets: u64,
    /// Rows of each agency.
    pub per_agency: HashMap<u32, u64>,
    /// Each finished agency's total.
    pub finished: HashMap<u32, u64>,
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
    let meta = file.metadata().map_err(|e| io_error(path, "inspect", e))?;
    let mut recovered = Recovered {
        readable_by_others: meta.permissions().mode() & 0o077 != 0,
        ..Recovered::default()
    };
    scan_rows(path, file, agencies, &mut recovered)?;
    let records = recover_records(path, agencies, &mut recovered)?;
    if recovered.cut_bytes > 0 {
        let len = meta.len() - recovered.cut_bytes;
        file.set_len(len)
            .and_then(|()| file.sync_data())
            .map_err(|e| io_error(path, "cut the last, unfinished row off", e))?;
    }
    Ok((recovered, records))
}

/// Counts every agency's rows, checking each one.
fn scan_rows(
    path: &Path,
    file: &File,
    agencies: u32,
    recovered: &mut Recovered,
) -> Result<(), StorageError> {
    let handle = file.try_clone().map_err(|e| io_error(path, "open", e))?;
    let mut rows = BetRows::between(path, handle, 0, u64::MAX);
    let bad_row = |row: u64, reason: String| StorageError::BadRow {
        path: path.to_path_buf(),
        row,
        reason,
    };
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
        *recovered.per_agency.entry(row.agency).or_default() += 1;
        recovered.bets += 1;
    }
    let tail = rows.unterminated_tail();
    if tail > MAX_TORN_ROW_LEN {
        return Err(bad_row(
            recovered.bets + 1,
            format!("{tail} bytes without a line end: more than a row cut short"),
        ));
    }
    recovered.cut_bytes = tail;
    Ok(())
}

/// Reads the FINISH records beside the bets file, or starts them.
fn recover_records(
    bets_file: &Path,
    agencies: u32,
    recovered: &mut Recovered,
) -> Result<FinishRecords, StorageError> {
    let path = finishes::records_path(bets_file);
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            recovered.records_missing = recovered.bets > 0;
            return FinishRecords::create(&path, agencies);
        }
        Err(e) => return Err(io_error(&path, "read", e)),
    };
    let bad = |line: u64, reason: String| StorageError::BadRecords {
        path: path.clone(),
        line,
        reason,
    };
    // A last line without its line end was cut short while being written: it
    // was never acknowledged.
    let whole = text
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |end| end + 1);
    let text = &text[..whole];
    if text.is_empty() {
        // The header itself was cut short: the records start again.
        std::fs::remove_file(&path).map_err(|e| io_error(&path, "start again", e))?;
        return FinishRecords::create(&path, agencies);
    }
    for (index, line) in text.split(|&b| b == b'\n').enumerate() {
        let number = index as u64 + 1;
        if line.is_empty() && index > 0 {
            continue;
        }
        let line = std::str::from_utf8(line).map_err(|_| bad(number, "not text".into()))?;
        let words: Vec<&str> = line.split(' ').collect();
        match (index, words.as_slice()) {
            (0, ["agencies", count]) => {
                let count: u32 = count
                    .parse()
                    .map_err(|_| bad(number, format!("{line:?} is not a number of agencies")))?;
                if count != agencies {
                    return Err(bad(
                        number,
                        format!(
                            "the round in these files is for {count} agencies, but \
                             SERVER_AGENCIES is {agencies}; set SERVER_AGENCIES={count} to go on \
                             with it, or start a new round with a new SERVER_BETS_FILE"
                        ),
                    ));
                }
            }
            (0, _) => return Err(bad(number, format!("{line:?} is not `agencies N`"))),
            (_, ["finished", agency, total]) => {
                let (Ok(agency), Ok(total)) = (agency.parse::<u32>(), total.parse::<u64>()) else {
                    return Err(bad(
                        number,
                        format!("{line:?} is not `finished AGENCY TOTAL`"),
                    ));
                };
                if !(1..=agencies).contains(&agency) {
                    return Err(bad(
                        number,
                        format!("agency {agency} is not one of 1 to {agencies}"),
                    ));
                }
                let stored = recovered.per_agency.get(&agency).copied().unwrap_or(0);
                if total != stored {
                    return Err(bad(
                        number,
                        format!(
                            "agency {agency} finished with {total} bets, but the bets file \
                             holds {stored} of its bets"
                        ),
                    ));
                }
                recovered.finished.insert(agency, total);
            }
            _ => {
                return Err(bad(
                    number,
                    format!("{line:?} is not `finished AGENCY TOTAL`"),
                ));
            }
        }
    }
    if whole < std::fs::metadata(&path).map_or(0, |m| m.len() as usize) {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| io_error(&path, "open", e))?;
        file.set_len(whole as u64)
            .and_then(|()| file.sync_data())
            .map_err(|e| io_error(&path, "cut the last, unfinished line off", e))?;
    }
    FinishRecords::open(&path)
}
