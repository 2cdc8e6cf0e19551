//! An auditor's read of a round (`server --verify`): the same reading as
//! recovery, without the lock and without changing, cutting or flushing
//! anything, so it works beside a running server.

use super::error::StorageError;
use super::file::open_for_reading;
use super::finishes::{self, Record, RecordsRead, read_records};
use super::recovery::{Recovered, mismatch, scan_rows};
use crate::wire::digest::{self, Digest};
use std::path::Path;

/// One agency of an audited round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditedAgency {
    pub agency: u32,
    /// Its rows in the bets file, and their digest.
    pub bets: u64,
    pub digest: Digest,
    pub winners: u64,
    /// Its FINISH record, if any, and why it does not match the rows, if it does not.
    pub record: Option<(Record, Option<String>)>,
}

/// What `audit` found in a round's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audit {
    pub agencies: Vec<AuditedAgency>,
    /// The round's seal, when every agency finished and every record matches.
    pub seal: Option<Digest>,
}

impl Audit {
    /// The first agency whose FINISH record does not match its rows.
    pub fn tampered(&self) -> Option<&AuditedAgency> {
        self.agencies
            .iter()
            .find(|a| matches!(&a.record, Some((_, Some(_)))))
    }
}

/// Reads the round of the bets file at `path` for `agencies` agencies without
/// changing anything and without its lock (a server may hold it): a last row
/// without its line end is a batch being written, and is left out. An error
/// when a file cannot be read, a row or record does not parse, or the round's
/// number of agencies is another.
pub(crate) fn audit(path: &Path, agencies: u32) -> Result<Audit, StorageError> {
    let file = open_for_reading(path)?;
    let mut recovered = Recovered::default();
    // A damaged tail is for a restart to move aside; the auditor reports it.
    if let Some((row, reason)) = scan_rows(path, &file, agencies, &mut recovered, &|| true)?.damaged
    {
        return Err(StorageError::BadRow {
            path: path.to_path_buf(),
            row,
            reason,
        });
    }
    let records_path = finishes::records_path(path);
    let records = match read_records(&records_path, agencies)? {
        RecordsRead::Read { records, .. } => records,
        RecordsRead::Missing | RecordsRead::HeaderTorn => Vec::new(),
    };
    let mut audited = Vec::new();
    for agency in 1..=agencies {
        let rows = recovered.per_agency.get(&agency);
        let record = records.iter().find(|r| r.agency == agency).map(|record| {
            let reason = mismatch(record, rows);
            (record.clone(), reason)
        });
        audited.push(AuditedAgency {
            agency,
            bets: rows.map_or(0, |r| r.count),
            digest: rows.map_or_else(Digest::of_nothing, |r| r.hash.digest()),
            winners: rows.map_or(0, |r| r.winners),
            record,
        });
    }
    let sealed = audited
        .iter()
        .map(|a| match &a.record {
            Some((record, None)) => Some((a.agency, u32::try_from(record.total).ok()?, a.digest)),
            _ => None,
        })
        .collect::<Option<Vec<_>>>();
    Ok(Audit {
        agencies: audited,
        seal: sealed.map(digest::seal),
    })
}
