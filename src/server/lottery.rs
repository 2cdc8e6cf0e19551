//! The lottery's shared state and the draw barrier.
//!
//! `Lottery` is the state every connection thread shares (behind an `Arc`):
//! which agencies have finished and the draw's outcome. The barrier is a
//! `Condvar` with a predicate, not `std::sync::Barrier`, because waiters must
//! time out (GET_WINNERS answers NO_WINNERS after a bounded wait) and wake at
//! shutdown. Locks are held only inside the small methods here, never across
//! socket or disk I/O.
//!
//! The draw is held by whichever thread claims it once every agency has
//! finished (`claim_draw`): it runs the draw it is given, logs the outcome and
//! only then wakes every waiting GET_WINNERS, so the draw's log line comes
//! before any winners are sent. A draw that failed (say, out of file
//! descriptors) may be claimed again after a pause: it is never failed for good.

use crate::app::locks::{lock, wait_timeout_while};
use crate::server::draw::{self, Winners};
use crate::storage::{BetStore, StorageError};
use crate::wire::digest::Digest;
use log::{error, info};
use std::collections::BTreeSet;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The least time between a failed draw and the next try.
const DRAW_RETRY_PAUSE: Duration = Duration::from_secs(1);
/// Agencies shown by number in a FINISH's log line; the rest are counted.
const MISSING_SHOWN: usize = 10;

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
}

/// The answer to a GET_WINNERS.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WinnersAnswer {
    /// The draw happened; these are every agency's winners.
    Drawn(Arc<Winners>),
    /// The draw has not happened within the wait.
    NotYet,
    /// The last try of the draw could not read the bets file; it will be tried again.
    Failed(String),
    /// The server is stopping.
    ShuttingDown,
}

/// The shared lottery: cheap to clone, all locking inside.
#[derive(Clone)]
pub(crate) struct Lottery {
    shared: Arc<Shared>,
}

struct Shared {
    agencies: u32,
    state: Mutex<State>,
    /// Signalled when a draw ends (held or failed) or shutdown begins.
    drawn: Condvar,
}

struct State {
    finished: BTreeSet<u32>,
    /// No agency below this one is missing: where the search for them starts.
    first_missing: u32,
    draw: Draw,
    shutting_down: bool,
}

enum Draw {
    NotYet,
    Running,
    Done(Arc<Winners>),
    Failed { reason: String, at: Instant },
}

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

impl Lottery {
    /// A lottery waiting on `agencies` agencies (numbered 1..=agencies), of
    /// which those in `finished` have already finished (a round resumed).
    pub fn new(agencies: u32, finished: impl IntoIterator<Item = u32>) -> Lottery {
        Lottery {
            shared: Arc::new(Shared {
                agencies,
                state: Mutex::new(State {
                    finished: finished.into_iter().collect(),
                    first_missing: 1,
                    draw: Draw::NotYet,
                    shutting_down: false,
                }),
                drawn: Condvar::new(),
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

    /// Records that `agency` finished (its FINISH is on disk). Idempotent.
    pub fn record_finished(&self, agency: u32) -> FinishOutcome {
        let mut state = self.lock();
        let first_time = state.finished.insert(agency);
        FinishOutcome {
            first_time,
            finished_count: state.finished.len(),
            missing: missing_agencies(&mut state, self.shared.agencies),
        }
    }

    /// Whether the draw has happened.
    pub fn is_drawn(&self) -> bool {
        matches!(self.lock().draw, Draw::Done(_))
    }

    /// Whether the caller must hold the draw now: every agency has finished and
    /// the draw has neither happened, nor is under way, nor failed less than
    /// `DRAW_RETRY_PAUSE` ago. A `true` is given to one caller only; it must
    /// then call `hold_draw`.
    pub fn claim_draw(&self) -> bool {
        let mut state = self.lock();
        let all_in = state.finished.len() == self.shared.agencies as usize;
        let due = match &state.draw {
            Draw::NotYet => true,
            Draw::Failed { at, .. } => at.elapsed() >= DRAW_RETRY_PAUSE,
            Draw::Running | Draw::Done(_) => false,
        };
        let claimed = all_in && due && !state.shutting_down;
        if claimed {
            state.draw = Draw::Running;
        }
        claimed
    }

    /// Holds the draw if every agency has finished and it is due (the first
    /// time, or again after a failure): the one way the server draws, from
    /// the bets `store` holds, sealed with its FINISH records.
    pub fn hold_draw_if_due(&self, store: &BetStore, keep_going: draw::KeepGoing<'_>) {
        if self.claim_draw() {
            self.hold_draw(store.seal(), || {
                draw::compute_winners(store.path(), &store.reader()?, keep_going)
            });
        }
    }

    /// Holds the draw the caller claimed: runs `draw` (which reads the stored
    /// bets back), logs its outcome with the round's `seal`, then publishes it
    /// to every waiting GET_WINNERS.
    pub fn hold_draw(
        &self,
        seal: Option<Digest>,
        draw: impl FnOnce() -> Result<Winners, StorageError>,
    ) {
        let started = Instant::now();
        let result = draw().map(Arc::new);
        // Every FINISH is recorded once the draw is claimed, so there is a seal.
        let seal = seal.map_or_else(|| "none".to_string(), |seal| seal.to_string());
        match &result {
            Ok(winners) => info!(
                "action: sorteo | result: success | agencias: {} | apuestas: {} | ganadores: {} | draw_ms: {} | sello: {seal}",
                self.agencies(),
                winners.bets(),
                winners.total(),
                started.elapsed().as_millis()
            ),
            Err(e @ StorageError::Interrupted { .. }) => {
                info!("action: sorteo | result: fail | error: {e} | detail: the server is stopping")
            }
            Err(e) => error!(
                "action: sorteo | result: fail | error: {e} | detail: the draw is tried again on the next FINISH or GET_WINNERS"
            ),
        }
        let mut state = self.lock();
        state.draw = match result {
            Ok(winners) => Draw::Done(winners),
            Err(e) => Draw::Failed {
                reason: e.to_string(),
                at: Instant::now(),
            },
        };
        drop(state);
        self.shared.drawn.notify_all();
    }

    /// The draw's winners, waiting up to `wait` for a draw to end.
    pub fn wait_for_winners(&self, wait: Duration) -> WinnersAnswer {
        let state = wait_timeout_while(&self.shared.drawn, self.lock(), wait, |s| {
            !s.shutting_down && !matches!(s.draw, Draw::Done(_) | Draw::Failed { .. })
        });
        match &state.draw {
            Draw::Done(winners) => WinnersAnswer::Drawn(Arc::clone(winners)),
            _ if state.shutting_down => WinnersAnswer::ShuttingDown,
            Draw::Failed { reason, .. } => WinnersAnswer::Failed(reason.clone()),
            _ => WinnersAnswer::NotYet,
        }
    }

    /// Starts shutting down: every waiter wakes, and no draw is claimed.
    pub fn begin_shutdown(&self) {
        self.lock().shutting_down = true;
        self.shared.drawn.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_finish_is_not_counted_and_the_draw_is_claimed_once() {
        let lottery = Lottery::new(2, []);
        let first = lottery.record_finished(1);
        assert_eq!(
            first,
            FinishOutcome {
                first_time: true,
                finished_count: 1,
                missing: "2".into(),
            }
        );
        assert!(!lottery.record_finished(1).first_time);
        assert!(!lottery.claim_draw());
        lottery.record_finished(2);
        assert!(lottery.claim_draw());
        assert!(!lottery.claim_draw(), "one caller holds it");
        lottery.hold_draw(None, || Ok(Winners::default()));
        assert!(lottery.is_drawn());
        assert!(!lottery.claim_draw());
    }

    #[test]
    fn a_resumed_round_starts_with_its_finished_agencies() {
        let lottery = Lottery::new(3, [1, 3]);
        assert_eq!(lottery.record_finished(2).missing, "-");
        assert!(lottery.claim_draw());
    }

    #[test]
    fn a_failed_draw_is_claimed_again_after_the_pause() {
        let lottery = Lottery::new(1, [1]);
        assert!(lottery.claim_draw());
        lottery.hold_draw(None, || Err(StorageError::NoDirectory { path: "x".into() }));
        assert!(matches!(
            lottery.wait_for_winners(Duration::ZERO),
            WinnersAnswer::Failed(_)
        ));
        assert!(!lottery.claim_draw(), "not within the pause");
        let until = Instant::now() + Duration::from_secs(30);
        while !lottery.claim_draw() {
            assert!(Instant::now() < until, "the draw was never claimed again");
            std::thread::sleep(Duration::from_millis(50));
        }
        lottery.hold_draw(None, || Ok(Winners::default()));
        assert!(lottery.is_drawn());
    }

    #[test]
    fn a_finish_says_which_agencies_are_still_missing() {
        let lottery = Lottery::new(5, []);
        assert_eq!(lottery.record_finished(2).missing, "1,3,4,5");
        assert_eq!(lottery.record_finished(1).missing, "3,4,5");
        lottery.record_finished(3);
        assert_eq!(lottery.record_finished(5).missing, "4");
        assert_eq!(lottery.record_finished(4).missing, "-");
        let many = Lottery::new(1000, []);
        assert_eq!(
            many.record_finished(1).missing,
            "2,3,4,5,6,7,8,9,10,11,... (+989 more)"
        );
    }

    #[test]
    fn waiting_for_winners_times_out_before_the_draw_and_wakes_at_shutdown() {
        let lottery = Lottery::new(1, []);
        assert_eq!(
            lottery.wait_for_winners(Duration::from_millis(10)),
            WinnersAnswer::NotYet
        );
        let waiter = {
            let lottery = lottery.clone();
            std::thread::spawn(move || lottery.wait_for_winners(Duration::from_secs(600)))
        };
        lottery.begin_shutdown();
        assert_eq!(waiter.join().unwrap(), WinnersAnswer::ShuttingDown);
        assert!(!lottery.claim_draw());
    }

    #[test]
    fn a_waiting_get_winners_is_woken_by_the_draw() {
        let lottery = Lottery::new(1, []);
        let waiter = {
            let lottery = lottery.clone();
            std::thread::spawn(move || lottery.wait_for_winners(Duration::from_secs(600)))
        };
        lottery.record_finished(1);
        assert!(lottery.claim_draw());
        lottery.hold_draw(None, || Ok(Winners::default()));
        // A 600 s wait that ends with the winners was woken by the draw.
        assert_eq!(
            waiter.join().unwrap(),
            WinnersAnswer::Drawn(Arc::new(Winners::default()))
        );
    }
}
