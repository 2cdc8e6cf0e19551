//! The lottery's shared state and the draw barrier.
//!
//! `Lottery` is the one piece of state every connection thread shares (behind an
//! `Arc`): which agencies have finished, how many batches are being stored right
//! now, and the draw's outcome. The barrier is a `Condvar` with a predicate, not
//! `std::sync::Barrier`, because waiters must time out (GET_WINNERS answers
//! NO_WINNERS after a bounded wait) and wake at shutdown. Locks are held only
//! inside the small methods here, never across socket or disk I/O.
//!
//! The draw runs once, in the thread whose FINISH completed the set: it waits for
//! batches still being stored, streams the bets file back (`load_bets`), keeps each
//! agency's winners (`has_won`) and wakes every waiting GET_WINNERS.

use crate::storage::{self, StorageError};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Each agency's winning documents, in the order the bets were stored. A list is
/// kept as WINNERS carries it, comma-separated in one `String`: about ten bytes
/// per winner rather than a `String` each, and a GET_WINNERS copies nothing.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Winners {
    lists: HashMap<u32, AgencyWinners>,
    total: usize,
    /// Stored bets the draw read.
    bets: u64,
}

/// One agency's winners.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AgencyWinners {
    /// The documents, comma-separated.
    pub documents: String,
    pub count: usize,
}

impl Winners {
    /// Adds a winning document of `agency`.
    fn add(&mut self, agency: u32, document: &str) {
        let list = self.lists.entry(agency).or_default();
        if list.count > 0 {
            list.documents.push(',');
        }
        list.documents.push_str(document);
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

/// The shared lottery: cheap to clone, all locking inside.
#[derive(Clone)]
pub struct Lottery {
    shared: Arc<Shared>,
}

struct Shared {
    agencies: u32,
    state: Mutex<State>,
    /// Signalled when the draw completes or shutdown begins: wakes GET_WINNERS.
    drawn: Condvar,
    /// Signalled when the last batch in flight ends while the draw waits for it.
    /// Kept apart from `drawn` so that hundreds of waiting GET_WINNERS are not
    /// woken for every stored batch.
    batch_done: Condvar,
}

struct State {
    finished: BTreeSet<u32>,
    batches_in_flight: usize,
    /// The draw is waiting for `batches_in_flight` to reach zero. Without it,
    /// the last batch of every burst would pay a wake-up system call for nobody.
    draw_waiting: bool,
    draw: Draw,
    shutting_down: bool,
}

enum Draw {
    NotYet,
    Running,
    Done(Arc<Winners>),
    Failed(String),
}

/// What a FINISH changed.
#[derive(Debug, PartialEq, Eq)]
pub struct FinishOutcome {
    /// False for a repeated FINISH from the same agency.
    pub first_time: bool,
    /// Distinct agencies finished so far.
    pub finished_count: usize,
    /// This FINISH completed the set: the caller must now run the draw.
    pub draw_due: bool,
}

/// The answer to a GET_WINNERS.
#[derive(Debug, PartialEq, Eq)]
pub enum WinnersAnswer {
    /// The draw happened; these are every agency's winners.
    Drawn(Arc<Winners>),
    /// The draw has not happened within the wait.
    NotYet,
    /// The draw could not read the bets file.
    Failed(String),
    /// The server is stopping.
    ShuttingDown,
}

/// Why a batch may not be stored.
#[derive(Debug, PartialEq, Eq)]
pub enum BatchRefusal {
    /// The agency already sent FINISH.
    AgencyFinished,
    /// The server is stopping.
    ShuttingDown,
}

/// Held while a batch is being stored; the draw waits until none are left.
pub struct BatchPermit {
    lottery: Lottery,
}

impl Drop for BatchPermit {
    fn drop(&mut self) {
        let mut state = self.lottery.lock();
        state.batches_in_flight -= 1;
        let wake_draw = state.batches_in_flight == 0 && state.draw_waiting;
        drop(state);
        if wake_draw {
            self.lottery.shared.batch_done.notify_all();
        }
    }
}

impl Lottery {
    /// A lottery waiting on `agencies` agencies (numbered 1..=agencies).
    pub fn new(agencies: u32) -> Lottery {
        Lottery {
            shared: Arc::new(Shared {
                agencies,
                state: Mutex::new(State {
                    finished: BTreeSet::new(),
                    batches_in_flight: 0,
                    draw_waiting: false,
                    draw: Draw::NotYet,
                    shutting_down: false,
                }),
                drawn: Condvar::new(),
                batch_done: Condvar::new(),
            }),
        }
    }

    /// The state lock. A panic while holding it cannot leave the state half
    /// changed (every method changes it in one step), so a poisoned lock is
    /// still safe to use.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// How many agencies take part.
    pub fn agencies(&self) -> u32 {
        self.shared.agencies
    }

    /// Whether `agency` is one of 1..=N.
    pub fn knows_agency(&self, agency: u32) -> bool {
        (1..=self.shared.agencies).contains(&agency)
    }

    /// Admits a batch from `agency` for storing, unless the agency finished. The
    /// permit must be held until the batch is durable (or has failed).
    pub fn begin_batch(&self, agency: u32) -> Result<BatchPermit, BatchRefusal> {
        let mut state = self.lock();
        if state.shutting_down {
            return Err(BatchRefusal::ShuttingDown);
        }
        if state.finished.contains(&agency) {
            return Err(BatchRefusal::AgencyFinished);
        }
        state.batches_in_flight += 1;
        Ok(BatchPermit {
            lottery: self.clone(),
        })
    }

    /// Records that `agency` finished. Idempotent: a repeated FINISH changes nothing.
    pub fn finish(&self, agency: u32) -> FinishOutcome {
        let mut state = self.lock();
        let first_time = state.finished.insert(agency);
        let finished_count = state.finished.len();
        let all_in = finished_count == self.shared.agencies as usize;
        let draw_due = all_in && matches!(state.draw, Draw::NotYet);
        if draw_due {
            state.draw = Draw::Running;
        }
        FinishOutcome {
            first_time,
            finished_count,
            draw_due,
        }
    }

    /// Runs the draw over the bets file at `bets_file` and publishes the result.
    /// Call it only when `finish` said `draw_due`. Waits first for batches still
    /// being made durable. Returns each agency's winners and how long reading the
    /// file took.
    pub fn hold_draw(&self, bets_file: &Path) -> Result<(Arc<Winners>, Duration), StorageError> {
        self.wait_for_stored_batches();
        let started = Instant::now();
        let result = compute_winners(bets_file).map(Arc::new);
        let took = started.elapsed();
        let mut state = self.lock();
        state.draw = match &result {
            Ok(winners) => Draw::Done(Arc::clone(winners)),
            Err(e) => Draw::Failed(e.to_string()),
        };
        drop(state);
        self.shared.drawn.notify_all();
        result.map(|winners| (winners, took))
    }

    fn wait_for_stored_batches(&self) {
        let mut state = self.lock();
        state.draw_waiting = true;
        let mut state = self
            .shared
            .batch_done
            .wait_while(state, |s| s.batches_in_flight > 0)
            .unwrap_or_else(PoisonError::into_inner);
        state.draw_waiting = false;
    }

    /// The draw's winners, waiting up to `wait` for the draw.
    pub fn wait_for_winners(&self, wait: Duration) -> WinnersAnswer {
        let state = self.lock();
        let (state, _timeout) = self
            .shared
            .drawn
            .wait_timeout_while(state, wait, |s| {
                !s.shutting_down && !matches!(s.draw, Draw::Done(_) | Draw::Failed(_))
            })
            .unwrap_or_else(PoisonError::into_inner);
        match &state.draw {
            Draw::Done(winners) => WinnersAnswer::Drawn(Arc::clone(winners)),
            Draw::Failed(reason) => WinnersAnswer::Failed(reason.clone()),
            _ if state.shutting_down => WinnersAnswer::ShuttingDown,
            _ => WinnersAnswer::NotYet,
        }
    }

    /// Starts shutting down: new batches are refused and every waiter wakes.
    pub fn begin_shutdown(&self) {
        self.lock().shutting_down = true;
        self.shared.drawn.notify_all();
    }
}

/// Streams the bets file and keeps each agency's winning documents.
pub fn compute_winners(bets_file: &Path) -> Result<Winners, StorageError> {
    // Two readers, one per half of the file, when it is large enough for the
    // second thread to pay off (the draw waits on parsing, not on the disk).
    let Some(middle) = storage::middle_row_end(bets_file, PARALLEL_DRAW_MIN_BYTES)? else {
        return winners_between(bets_file, 0, u64::MAX);
    };
    std::thread::scope(|scope| {
        let second_half = std::thread::Builder::new()
            .name("draw-2".into())
            .spawn_scoped(scope, || winners_between(bets_file, middle, u64::MAX));
        let Ok(second_half) = second_half else {
            return winners_between(bets_file, 0, u64::MAX);
        };
        let mut winners = winners_between(bets_file, 0, middle)?;
        let second = second_half.join().unwrap_or_else(|_| {
            Err(StorageError::Io {
                action: "read",
                path: bets_file.to_path_buf(),
                source: std::io::Error::other("the reader of the second half stopped"),
            })
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

/// Files smaller than this are read by one thread.
const PARALLEL_DRAW_MIN_BYTES: u64 = 4 << 20;

/// The winners among the rows stored between bytes `from` and `to`.
fn winners_between(bets_file: &Path, from: u64, to: u64) -> Result<Winners, StorageError> {
    let mut winners = Winners::default();
    let mut rows = storage::load_bets_between(bets_file, from, to)?;
    while let Some(row) = rows.next_row() {
        let row = row?;
        winners.bets += 1;
        if storage::has_won(&row) {
            winners.add(row.agency, row.document());
        }
    }
    Ok(winners)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_finish_is_not_counted_and_the_draw_is_due_exactly_once() {
        let lottery = Lottery::new(2);
        let first = lottery.finish(1);
        assert_eq!(
            first,
            FinishOutcome {
                first_time: true,
                finished_count: 1,
                draw_due: false
            }
        );
        assert!(!lottery.finish(1).first_time);
        assert!(!lottery.finish(1).draw_due);
        assert!(lottery.finish(2).draw_due);
        assert!(!lottery.finish(2).draw_due);
        assert!(!lottery.finish(1).draw_due);
    }

    #[test]
    fn batches_after_finish_are_refused() {
        let lottery = Lottery::new(3);
        assert!(lottery.begin_batch(1).is_ok());
        lottery.finish(1);
        assert_eq!(
            lottery.begin_batch(1).err(),
            Some(BatchRefusal::AgencyFinished)
        );
        assert!(lottery.begin_batch(2).is_ok());
    }

    #[test]
    fn waiting_for_winners_times_out_before_the_draw_and_wakes_at_shutdown() {
        let lottery = Lottery::new(1);
        let started = Instant::now();
        assert_eq!(
            lottery.wait_for_winners(Duration::from_millis(50)),
            WinnersAnswer::NotYet
        );
        assert!(started.elapsed() >= Duration::from_millis(50));

        let waiter = {
            let lottery = lottery.clone();
            std::thread::spawn(move || lottery.wait_for_winners(Duration::from_secs(60)))
        };
        std::thread::sleep(Duration::from_millis(20));
        lottery.begin_shutdown();
        assert_eq!(waiter.join().unwrap(), WinnersAnswer::ShuttingDown);
    }

    #[test]
    fn the_draw_waits_for_batches_in_flight_then_wakes_waiters() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bets.csv");
        std::fs::write(
            &path,
            "1,A,B,11,2000-01-01,7574\r\n2,A,B,22,2000-01-01,1\r\n1,A,B,33,2000-01-01,7574\r\n",
        )
        .unwrap();
        let lottery = Lottery::new(2);
        let permit = lottery.begin_batch(2).unwrap();
        let waiter = {
            let lottery = lottery.clone();
            std::thread::spawn(move || lottery.wait_for_winners(Duration::from_secs(60)))
        };
        lottery.finish(1);
        assert!(lottery.finish(2).draw_due);
        let drawer = {
            let lottery = lottery.clone();
            std::thread::spawn(move || lottery.hold_draw(&path).map(|(w, _)| w.total()))
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!drawer.is_finished(), "the draw must wait for the permit");
        drop(permit);
        assert_eq!(drawer.join().unwrap().unwrap(), 2);
        let WinnersAnswer::Drawn(winners) = waiter.join().unwrap() else {
            panic!("the waiter did not get the draw");
        };
        assert_eq!(
            winners.of(1),
            &AgencyWinners {
                documents: "11,33".into(),
                count: 2
            }
        );
        assert_eq!(winners.of(2), &AgencyWinners::default());
        assert_eq!(
            lottery.wait_for_winners(Duration::ZERO),
            WinnersAnswer::Drawn(winners)
        );
    }

    /// Rows of `agencies` agencies, every 7th a winner, `count` of them.
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

    #[test]
    fn a_large_file_is_drawn_by_two_readers_in_stored_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bets.csv");
        let rows = 200_000; // about 8 MiB: over the two-reader threshold
        let (text, expected) = bets_file_text(rows);
        assert!(text.len() as u64 > PARALLEL_DRAW_MIN_BYTES);
        std::fs::write(&path, &text).unwrap();
        assert!(
            storage::middle_row_end(&path, PARALLEL_DRAW_MIN_BYTES)
                .unwrap()
                .is_some()
        );
        let winners = compute_winners(&path).unwrap();
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
        match compute_winners(&path) {
            Err(StorageError::BadRow { row, .. }) => assert_eq!(row, bad_line as u64),
            other => panic!("expected a bad row, got {other:?}"),
        }
    }
}
