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
//! batches still being stored, runs the draw it is given (`draw`), logs its
//! outcome and only then wakes every waiting GET_WINNERS, so the draw's log line
//! comes before any winners are sent.

use crate::draw::Winners;
use crate::locks::{lock, wait_timeout_while, wait_while};
use crate::storage::StorageError;
use log::{error, info};
use std::collections::BTreeSet;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Agencies shown by number in a FINISH's log line; the rest are counted.
const MISSING_SHOWN: usize = 10;

/// The agencies of 1..=`agencies` not finished yet, as the log shows them:
/// `4,5`, or `7,9,12,... (+990 more)`; `-` when none is missing.
fn missing_agencies(state: &mut State, agencies: u32) -> String {
    while state.first_missing <= agencies && state.finished.contains(&state.first_missing) {
        state.first_missing += 1;
    }
    let missing_count = agencies as usize - state.finished.len();
    if missing_count == 0 {
        return "-".to_string();
    }
    let shown: Vec<String> = (state.first_missing..=agencies)
        .filter(|agency| !state.finished.contains(agency))
        .take(MISSING_SHOWN)
        .map(|agency| agency.to_string())
        .collect();
    match missing_count - shown.len() {
        0 => shown.join(","),
        more => format!("{},... (+{more} more)", shown.join(",")),
    }
}

/// The shared lottery: cheap to clone, all locking inside.
#[derive(Clone)]
pub(crate) struct Lottery {
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
    /// No agency below this one is missing: where the search for them starts.
    first_missing: u32,
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
pub(crate) struct FinishOutcome {
    /// False for a repeated FINISH from the same agency.
    pub first_time: bool,
    /// Distinct agencies finished so far.
    pub finished_count: usize,
    /// The agencies not finished yet, for a person: the first few numbers,
    /// and how many more there are.
    pub missing: String,
    /// This FINISH completed the set: the caller must now run the draw.
    pub draw_due: bool,
}

/// The answer to a GET_WINNERS.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WinnersAnswer {
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
pub(crate) enum BatchRefusal {
    /// The agency already sent FINISH.
    AgencyFinished,
    /// The server is stopping.
    ShuttingDown,
}

/// Held while a batch is being stored; the draw waits until none are left.
pub(crate) struct BatchPermit {
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
                    first_missing: 1,
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

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.shared.state)
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
            missing: missing_agencies(&mut state, self.shared.agencies),
            draw_due,
        }
    }

    /// Holds the draw: waits for batches still being made durable, runs `draw`
    /// (which reads the stored bets back), logs its outcome, then publishes it to
    /// every waiting GET_WINNERS. Call it only when `finish` said `draw_due`.
    pub fn hold_draw(&self, draw: impl FnOnce() -> Result<Winners, StorageError>) {
        let started = Instant::now();
        self.wait_for_stored_batches();
        let reading = Instant::now();
        let result = draw().map(Arc::new);
        match &result {
            Ok(winners) => info!(
                "action: sorteo | result: success | agencias: {} | apuestas: {} | ganadores: {} | draw_ms: {} | total_ms: {}",
                self.agencies(),
                winners.bets(),
                winners.total(),
                reading.elapsed().as_millis(),
                started.elapsed().as_millis()
            ),
            Err(e) => error!("action: sorteo | result: fail | error: {e}"),
        }
        let mut state = self.lock();
        state.draw = match result {
            Ok(winners) => Draw::Done(winners),
            Err(e) => Draw::Failed(e.to_string()),
        };
        drop(state);
        self.shared.drawn.notify_all();
    }

    fn wait_for_stored_batches(&self) {
        let mut state = self.lock();
        state.draw_waiting = true;
        let mut state = wait_while(&self.shared.batch_done, state, |s| s.batches_in_flight > 0);
        state.draw_waiting = false;
    }

    /// The draw's winners, waiting up to `wait` for the draw.
    pub fn wait_for_winners(&self, wait: Duration) -> WinnersAnswer {
        let state = wait_timeout_while(&self.shared.drawn, self.lock(), wait, |s| {
            !s.shutting_down && !matches!(s.draw, Draw::Done(_) | Draw::Failed(_))
        });
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn a_repeated_finish_is_not_counted_and_the_draw_is_due_exactly_once() {
        let lottery = Lottery::new(2);
        let first = lottery.finish(1);
        assert_eq!(
            first,
            FinishOutcome {
                first_time: true,
                finished_count: 1,
                missing: "2".into(),
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
    fn a_finish_says_which_agencies_are_still_missing() {
        let lottery = Lottery::new(5);
        assert_eq!(lottery.finish(2).missing, "1,3,4,5");
        assert_eq!(lottery.finish(1).missing, "3,4,5");
        lottery.finish(3);
        assert_eq!(lottery.finish(5).missing, "4");
        assert_eq!(lottery.finish(4).missing, "-");
        let many = Lottery::new(1000);
        assert_eq!(
            many.finish(1).missing,
            "2,3,4,5,6,7,8,9,10,11,... (+989 more)"
        );
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
        let lottery = Lottery::new(2);
        let permit = lottery.begin_batch(2).unwrap();
        let waiter = {
            let lottery = lottery.clone();
            std::thread::spawn(move || lottery.wait_for_winners(Duration::from_secs(60)))
        };
        lottery.finish(1);
        assert!(lottery.finish(2).draw_due);
        let released = Arc::new(AtomicBool::new(false));
        let drawer = {
            let (lottery, released) = (lottery.clone(), Arc::clone(&released));
            std::thread::spawn(move || {
                lottery.hold_draw(|| {
                    assert!(
                        released.load(Ordering::SeqCst),
                        "the draw ran before the batch ended"
                    );
                    Ok(Winners::default())
                })
            })
        };
        // The drawer is waiting for the batch in flight: now end it.
        let until = Instant::now() + Duration::from_secs(30);
        while !lottery.lock().draw_waiting {
            assert!(
                Instant::now() < until,
                "the draw never waited for the batch"
            );
            std::thread::yield_now();
        }
        released.store(true, Ordering::SeqCst);
        drop(permit);
        drawer
            .join()
            .expect("the draw waited for the batch in flight");
        assert_eq!(
            waiter.join().unwrap(),
            WinnersAnswer::Drawn(Arc::new(Winners::default()))
        );
    }
}
