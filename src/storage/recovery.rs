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
use super::rows::StoredRow;
use crate::bet;
use crate::bet::calendar::Date;
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
    /// A damaged tail (bad rows with no good row after them) moved aside.
    pub damaged: Option<DamagedTail>,
    /// Bytes of a last FINISH record cut short (never acknowledged), cut off.
    pub records_cut_bytes: u64,
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
    keep_going: &dyn Fn() -> bool,
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
    let scan = scan_rows(path, file, agencies, &mut recovered, keep_going)?;
    let tail = meta.len() - scan.valid_len;
    match scan.damaged {
        // A tail that is more than a row cut short: moved aside, never counted.
        Some((line, reason)) => {
            recovered.damaged = Some(move_aside(path, file, scan.valid_len, line, reason)?);
        }
        None if tail > MAX_TORN_ROW_LEN || holds_nul(path, file, scan.valid_len)? => {
            let reason = format!(
                "{tail} bytes without a line end, more than a row cut short (or NUL bytes, \
                 which the disk, not a write, leaves)"
            );
            let line = recovered.bets + 1;
            recovered.damaged = Some(move_aside(path, file, scan.valid_len, line, reason)?);
        }
        None => recovered.cut_bytes = tail,
    }
    let records = recover_records(path, agencies, &mut recovered)?;
    if recovered.cut_bytes > 0 {
        file.set_len(scan.valid_len)
            .and_then(|()| file.sync_data())
            .map_err(|e| io_error(path, "cut the last, unfinished row off", e))?;
    }
    Ok((recovered, records))
}

/// Whether the file's bytes from `from` on (at most a row's worth) hold a NUL:
/// a write cut short leaves the start of a row, never NULs.
fn holds_nul(path: &Path, file: &File, from: u64) -> Result<bool, StorageError> {
    use std::os::unix::fs::FileExt;
    let mut tail = vec![0u8; MAX_TORN_ROW_LEN as usize];
    let read = file
        .read_at(&mut tail, from)
        .map_err(|e| io_error(path, "read the tail of", e))?;
    Ok(tail[..read].contains(&0))
}

/// A damaged tail that recovery moved aside.
#[derive(Debug, Clone)]
pub(crate) struct DamagedTail {
    /// The line of its first bad row, and what is wrong with it.
    pub line: u64,
    pub reason: String,
    /// Its bytes, now in `saved_to` instead of the bets file.
    pub bytes: u64,
    pub saved_to: std::path::PathBuf,
}

/// Copies the file's bytes from `keep` on to a file of their own beside it
/// (mode 0600, on disk), then cuts them off the bets file: nothing is lost,
/// and nothing of them is counted.
fn move_aside(
    path: &Path,
    file: &File,
    keep: u64,
    line: u64,
    reason: String,
) -> Result<DamagedTail, StorageError> {
    use std::io::{Seek, SeekFrom, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let mut saved_to = path.as_os_str().to_owned();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    saved_to.push(format!(".damaged-{stamp}"));
    let saved_to = std::path::PathBuf::from(saved_to);
    let mut reader = file.try_clone().map_err(|e| io_error(path, "open", e))?;
    reader
        .seek(SeekFrom::Start(keep))
        .map_err(|e| io_error(path, "read the damaged tail of", e))?;
    // Copied through a small buffer: the tail may be as large as the file.
    let bytes = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(crate::files::PRIVATE_FILE_MODE)
        .open(&saved_to)
        .and_then(|mut out| {
            let bytes = std::io::copy(&mut reader, &mut out)?;
            out.flush()?;
            out.sync_all()?;
            Ok(bytes)
        })
        .map_err(|e| io_error(&saved_to, "save the damaged tail to", e))?;
    super::file::sync_directory_of(&saved_to)?;
    file.set_len(keep)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error(path, "cut the damaged tail off", e))?;
    Ok(DamagedTail {
        line,
        reason,
        bytes,
        saved_to,
    })
}

/// Rows read between two looks at the stop request and the clock.
const ROWS_PER_CHECK: u64 = 16_384;

/// The progress of a long read, logged about once a second.
struct Progress {
    last: std::time::Instant,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            last: std::time::Instant::now(),
        }
    }

    fn report(&mut self, rows: u64, at: u64, size: u64) {
        if self.last.elapsed() >= std::time::Duration::from_secs(1) {
            self.last = std::time::Instant::now();
            log::info!(
                "action: ronda_recuperada | result: in_progress | filas_leidas: {rows} | bytes_leidos: {at} | de: {size}"
            );
        }
    }
}

/// What reading the rows back found.
#[derive(Default)]
pub(super) struct Scan {
    /// Bytes of the rows counted, from the file's start.
    pub valid_len: u64,
    /// The first bad row, when no good row follows it: its line and why.
    pub damaged: Option<(u64, String)>,
}

/// Counts and hashes every agency's rows, checking each one with the bet
/// rules. A bad row followed by a good one stops the start; bad rows with
/// nothing good after them are a damaged tail (`Scan::damaged`).
pub(super) fn scan_rows(
    path: &Path,
    file: &File,
    agencies: u32,
    recovered: &mut Recovered,
    keep_going: &dyn Fn() -> bool,
) -> Result<Scan, StorageError> {
    let size = file.metadata().map_or(0, |m| m.len());
    let mut progress = Progress::new();
    let handle = file.try_clone().map_err(|e| io_error(path, "open", e))?;
    let mut rows = BetRows::between(path, handle, 0, u64::MAX);
    let today = Date::today_utc();
    let mut encoded = Vec::with_capacity(1024);
    let mut scan = Scan::default();
    let mut line = 0;
    loop {
        let start = rows.next_row_start();
        if line % ROWS_PER_CHECK == 0 {
            stop_if_asked(path, line, keep_going)?;
            progress.report(line, start, size);
        }
        let Some(row) = rows.next_row() else {
            break;
        };
        line += 1;
        let checked = match row {
            Ok(row) => Ok(row),
            Err(e) => Err(unreadable_row_reason(e, rows.is_stopped())?),
        };
        let row = match checked
            .and_then(|row| check_row(&row, agencies, &mut encoded, today).map(|()| row))
        {
            Ok(row) => row,
            Err(reason) => {
                scan.damaged.get_or_insert((line, reason));
                continue;
            }
        };
        if let Some((bad, reason)) = scan.damaged.take() {
            return Err(StorageError::BadRow {
                path: path.to_path_buf(),
                row: bad,
                reason,
            });
        }
        let agency = recovered.per_agency.entry(row.agency).or_default();
        agency.count += 1;
        agency.hash.update(&encoded);
        agency.winners += u64::from(bet::has_won(row.number));
        recovered.bets += 1;
        scan.valid_len = rows.next_row_start().max(start);
    }
    Ok(scan)
}

/// `Interrupted` once a stop was asked for (`rows` read so far).
fn stop_if_asked(
    path: &Path,
    rows: u64,
    keep_going: &dyn Fn() -> bool,
) -> Result<(), StorageError> {
    if keep_going() {
        return Ok(());
    }
    Err(StorageError::Interrupted {
        path: path.to_path_buf(),
        rows,
    })
}

/// Why a row could not be read, when it may be part of a damaged tail; `Err`
/// when nothing after it can be read (a read that failed, or a line longer
/// than any row), so a damaged tail cannot be told from a bad middle.
fn unreadable_row_reason(
    error: StorageError,
    reader_stopped: bool,
) -> Result<String, StorageError> {
    match error {
        StorageError::BadRow { reason, .. } if !reader_stopped => Ok(reason),
        other => Err(other),
    }
}

/// Why a stored row cannot count: its agency, its columns, or a bet rule.
/// On success `encoded` holds its wire encoding, for the digest.
fn check_row(
    row: &StoredRow<'_>,
    agencies: u32,
    encoded: &mut Vec<u8>,
    today: Date,
) -> Result<(), String> {
    row.check_names().map_err(str::to_string)?;
    if !(1..=agencies).contains(&row.agency) {
        return Err(format!(
            "agency {} is not one of the round's agencies, 1 to {agencies} (SERVER_AGENCIES)",
            row.agency
        ));
    }
    row.check_bet(encoded, today)
        .map_err(|reason| format!("the bet breaks a rule: {reason}"))?;
    // `check_bet` left the encoding in `encoded`; nothing else touched it.
    Ok(())
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
            recovered.records_cut_bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
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
        recovered.records_cut_bytes = file_len - whole_len;
        file.set_len(whole_len)
            .map_err(|e| io_error(&path, "cut the last, unfinished line off", e))?;
    }
    // Like the rows, the records count only once they are on disk.
    file.sync_all()
        .map_err(|e| io_error(&path, "flush to disk", e))?;
    FinishRecords::open(&path)
}
