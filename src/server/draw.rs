//! The draw: which stored bets win, and each agency's winners.
//!
//! `compute_winners` streams the bets file back and keeps, for each agency, the
//! documents of its bets that won (`has_won`: the number 7574), in the order
//! they were stored. A large file is read by two threads, one half each, and
//! their lists joined in file order, because the draw waits on parsing rows.
//! A long draw logs its progress about once a second and stops early when
//! asked (a SIGTERM while the server starts, or while it serves).

use crate::bet::has_won;
use crate::storage::{self, BetRows, StorageError};
use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Files smaller than this are read by one thread.
const PARALLEL_DRAW_MIN_BYTES: u64 = 4 << 20;
/// Rows a reader reads between two looks at the stop request and the clock.
const ROWS_PER_CHECK: u64 = 16_384;

/// Whether the draw may go on; `false` stops it early.
pub(crate) type KeepGoing<'a> = &'a (dyn Fn() -> bool + Sync);

/// Each agency's winning documents, in the order the bets were stored. A list is
/// kept as WINNERS carries it, comma-separated in one `String`: about ten bytes
/// per winner rather than a `String` each, and a GET_WINNERS copies nothing.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Winners {
    lists: HashMap<u32, AgencyWinners>,
    total: usize,
    /// Stored bets the draw read.
    bets: u64,
}

/// One agency's winners.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct AgencyWinners {
    /// The documents, comma-separated.
    pub documents: String,
    pub count: usize,
}

impl Winners {
    /// Adds a winning document of `agency`.
    fn add(&mut self, agency: u32, document: &[u8]) {
        let list = self.lists.entry(agency).or_default();
        if list.count > 0 {
            list.documents.push(',');
        }
        // `parse_row` let only ASCII digits through as a document.
        list.documents
            .extend(document.iter().copied().map(char::from));
        list.count += 1;
        self.total += 1;
    }

    /// Adds the winners of rows stored after ours, keeping the stored order.
    fn append(&mut self, later: Winners) {
        for (agency, list) in later.lists {
            let ours = self.lists.entry(agency).or_default();
            if ours.count > 0 && list.count > 0 {
                ours.documents.push(',');
            }
            ours.documents.push_str(&list.documents);
            ours.count += list.count;
        }
        self.total += later.total;
        self.bets += later.bets;
    }

    /// `agency`'s winners (an empty list if it has none).
    pub fn of(&self, agency: u32) -> &AgencyWinners {
        static NONE: AgencyWinners = AgencyWinners {
            documents: String::new(),
            count: 0,
        };
        self.lists.get(&agency).unwrap_or(&NONE)
    }

    /// Winners of every agency.
    pub fn total(&self) -> usize {
        self.total
    }

    /// How many stored bets the draw read.
    pub fn bets(&self) -> u64 {
        self.bets
    }
}

/// Reads the bets file at `path` through `file` and keeps each agency's
/// winners; `StorageError::Interrupted` once `keep_going` says stop.
pub(crate) fn compute_winners(
    path: &Path,
    file: &File,
    keep_going: KeepGoing<'_>,
) -> Result<Winners, StorageError> {
    let io_error = |e| StorageError::Io {
        action: "read",
        path: path.to_path_buf(),
        source: e,
    };
    let progress = Progress {
        path,
        keep_going,
        rows: AtomicU64::new(0),
        started: Instant::now(),
        reported: AtomicU64::new(0),
    };
    let reader = |from, to| -> Result<Winners, StorageError> {
        let handle = file.try_clone().map_err(io_error)?;
        winners_between(BetRows::between(path, handle, from, to), &progress)
    };
    let Some(middle) = storage::middle_row_end(path, file, PARALLEL_DRAW_MIN_BYTES)? else {
        return reader(0, u64::MAX);
    };
    std::thread::scope(|scope| {
        let second_half = std::thread::Builder::new()
            .name("draw-2".into())
            .spawn_scoped(scope, || reader(middle, u64::MAX));
        // Without a second thread, one reader does it all.
        let Ok(second_half) = second_half else {
            return reader(0, u64::MAX);
        };
        let mut winners = reader(0, middle)?;
        let second = second_half.join().unwrap_or_else(|_| {
            Err(io_error(std::io::Error::other(
                "the reader of the second half stopped",
            )))
        });
        match second {
            Ok(later) => {
                winners.append(later);
                Ok(winners)
            }
            // Its rows are numbered from the middle: number them in the file.
            Err(StorageError::BadRow { path, row, reason }) => Err(StorageError::BadRow {
                path,
                row: row + winners.bets,
                reason,
            }),
            Err(e) => Err(e),
        }
    })
}

/// The progress of one draw, shared by its readers.
struct Progress<'a> {
    path: &'a Path,
    keep_going: KeepGoing<'a>,
    /// Rows read by every reader, counted at their checks.
    rows: AtomicU64,
    started: Instant,
    /// Whole seconds since `started` already reported.
    reported: AtomicU64,
}

impl Progress<'_> {
    /// A reader read `ROWS_PER_CHECK` more rows: stop if asked, and log the
    /// rows read once a second (one reader logs each second).
    fn check(&self) -> Result<(), StorageError> {
        let rows = self.rows.fetch_add(ROWS_PER_CHECK, Ordering::Relaxed) + ROWS_PER_CHECK;
        if !(self.keep_going)() {
            return Err(StorageError::Interrupted {
                path: self.path.to_path_buf(),
                rows,
            });
        }
        let seconds = self.started.elapsed().as_secs();
        let reported = self.reported.load(Ordering::Relaxed);
        if seconds > reported
            && self
                .reported
                .compare_exchange(reported, seconds, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            log::info!("action: sorteo | result: in_progress | filas_leidas: {rows}");
        }
        Ok(())
    }
}

/// The winners among the rows of one reader.
fn winners_between(mut rows: BetRows, progress: &Progress<'_>) -> Result<Winners, StorageError> {
    let mut winners = Winners::default();
    let mut until_check = ROWS_PER_CHECK;
    while let Some(row) = rows.next_for_draw() {
        let row = row?;
        winners.bets += 1;
        until_check -= 1;
        if until_check == 0 {
            until_check = ROWS_PER_CHECK;
            progress.check()?;
        }
        if let Some(document) = row.document
            && has_won(row.number)
        {
            winners.add(row.agency, document);
        }
    }
    Ok(winners)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of 5 agencies, every 7th a winner, `count` of them.
    fn bets_file_text(count: usize) -> (String, HashMap<u32, Vec<String>>) {
        let mut text = String::new();
        let mut expected: HashMap<u32, Vec<String>> = HashMap::new();
        for i in 0..count {
            let agency = (i % 5) as u32 + 1;
            let number = if i % 7 == 0 { 7574 } else { i % 7000 };
            text.push_str(&format!(
                "{agency},Nombre {i},Apellido,{i},2000-01-01,{number}\r\n"
            ));
            if number == 7574 {
                expected.entry(agency).or_default().push(i.to_string());
            }
        }
        (text, expected)
    }

    fn draw(path: &Path) -> Result<Winners, StorageError> {
        compute_winners(path, &File::open(path).unwrap(), &|| true)
    }

    #[test]
    fn winners_are_the_bets_on_7574_of_each_agency_in_stored_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bets.csv");
        std::fs::write(
            &path,
            "1,A,B,11,2000-01-01,7574\r\n2,A,B,22,2000-01-01,7573\r\n1,A,B,33,2000-01-01,7574\r\n",
        )
        .unwrap();
        let winners = draw(&path).unwrap();
        assert_eq!((winners.bets(), winners.total()), (3, 2));
        assert_eq!(
            winners.of(1),
            &AgencyWinners {
                documents: "11,33".into(),
                count: 2
            }
        );
        assert_eq!(winners.of(2), &AgencyWinners::default());
    }

    #[test]
    fn a_large_file_is_drawn_by_two_readers_in_stored_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bets.csv");
        let rows = 200_000; // about 8 MiB: over the two-reader threshold
        let (text, expected) = bets_file_text(rows);
        assert!(text.len() as u64 > PARALLEL_DRAW_MIN_BYTES);
        std::fs::write(&path, &text).unwrap();
        let file = File::open(&path).unwrap();
        assert!(
            storage::middle_row_end(&path, &file, PARALLEL_DRAW_MIN_BYTES)
                .unwrap()
                .is_some()
        );
        let winners = draw(&path).unwrap();
        assert_eq!(winners.bets(), rows as u64);
        assert_eq!(
            winners.total(),
            expected.values().map(Vec::len).sum::<usize>()
        );
        for agency in 1..=5 {
            assert_eq!(
                winners.of(agency).documents,
                expected[&agency].join(","),
                "agency {agency}"
            );
        }
    }

    #[test]
    fn a_bad_row_in_the_second_half_is_named_by_its_line_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bets.csv");
        let (mut text, _) = bets_file_text(200_000);
        let bad_line = 150_001;
        let cut = text.match_indices("\r\n").nth(bad_line - 2).unwrap().0 + 2;
        text.insert(cut, 'x');
        std::fs::write(&path, &text).unwrap();
        match draw(&path) {
            Err(StorageError::BadRow { row, .. }) => assert_eq!(row, bad_line as u64),
            other => panic!("expected a bad row, got {other:?}"),
        }
    }
}
