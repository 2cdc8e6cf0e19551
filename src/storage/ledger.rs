//! Where each agency's bets stand: how many are stored and how many of those
//! are on disk, their digests, and its FINISH. This is what makes a batch sent
//! twice stored once: a BETS names the number of its first bet, and only the
//! batch that starts where the agency's stored bets end is appended.
//!
//! Each agency's digest (protocol version 3) is a running SHA-256 over the
//! bodies of its appended batches, hashed as they are appended, with a second
//! one for the batches on disk: each pending batch carries the hash after it,
//! so an agency's durable count and digest always go together. An agency that
//! has sent no bet has no hash state.

use crate::wire::digest::{self, Digest, Hasher};
use std::collections::{HashMap, VecDeque};

/// Where one agency's bets stand in the file.
#[derive(Debug, Default, Clone)]
struct AgencyLedger {
    /// Bets appended, including those not yet on disk.
    stored: u64,
    /// Bets known to be on disk.
    durable: u64,
    /// The digest of the `stored` bets so far; `None` before the first.
    hash: Option<Hasher>,
    /// The same for the `durable` bets.
    durable_hash: Option<Hasher>,
    finish: FinishState,
}

impl AgencyLedger {
    /// The digest of the agency's bets on disk.
    fn durable_digest(&self) -> Digest {
        self.durable_hash
            .as_ref()
            .map_or_else(Digest::of_nothing, Hasher::digest)
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum FinishState {
    #[default]
    Open,
    /// Its FINISH is being written: no new batch may be appended.
    Finishing,
    /// Its FINISH with this total and digest is on disk.
    Finished { total: u64, digest: Digest },
}

/// What the server tells an agency about its bets on disk (WELCOME).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DurableState {
    pub stored: u64,
    pub digest: Digest,
    pub finished: bool,
}

/// Whether a batch is to be appended, decided before anything is written.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Admission {
    /// It starts where the agency's stored bets end: append it.
    Append,
    /// Every bet of it was stored before: nothing to write.
    AlreadyStored,
    /// It starts elsewhere; `expected` is the number its first bet should have.
    OutOfOrder { expected: u64 },
    /// The agency's FINISH is recorded (or being recorded).
    Finished,
}

/// What a FINISH meets.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Finish {
    /// The FINISH is on disk; `first_time` is false for a repeat.
    Recorded { first_time: bool },
    /// The total is not the agency's stored bets: nothing was recorded.
    CountMismatch { stored: u64 },
    /// The total is right but the digest is not that of the stored bets (or of
    /// the FINISH recorded before): nothing was recorded.
    DigestMismatch { stored: Digest },
}

/// A FINISH of `(total, digest)` against what the server holds: the count is
/// judged first, then the digest; `agreed` when both match.
pub(super) fn judge_finish(held: (u64, Digest), finish: (u64, Digest), agreed: Finish) -> Finish {
    if held.0 != finish.0 {
        Finish::CountMismatch { stored: held.0 }
    } else if held.1 != finish.1 {
        Finish::DigestMismatch { stored: held.1 }
    } else {
        agreed
    }
}

/// Rows appended and not yet on disk, in the order they were appended.
#[derive(Debug)]
struct PendingRows {
    end: u64,
    agency: u32,
    count: u64,
    /// The agency's digest once these rows are in.
    hash: Hasher,
}

/// Every agency's standing, and the batches not yet on disk.
#[derive(Debug, Default)]
pub(super) struct Ledger {
    agencies: HashMap<u32, AgencyLedger>,
    pending: VecDeque<PendingRows>,
}

impl Ledger {
    /// The ledger of a round read back: each agency's rows (all on disk) and
    /// their digest, and the FINISHes recorded.
    pub fn recovered(
        rows: impl IntoIterator<Item = (u32, u64, Hasher)>,
        finished: impl IntoIterator<Item = (u32, u64, Digest)>,
    ) -> Ledger {
        let mut ledger = Ledger::default();
        for (agency, count, hash) in rows {
            ledger.agencies.insert(
                agency,
                AgencyLedger {
                    stored: count,
                    durable: count,
                    hash: Some(hash.clone()),
                    durable_hash: Some(hash),
                    finish: FinishState::Open,
                },
            );
        }
        for (agency, total, digest) in finished {
            ledger.agency(agency).finish = FinishState::Finished { total, digest };
        }
        ledger
    }

    fn agency(&mut self, agency: u32) -> &mut AgencyLedger {
        self.agencies.entry(agency).or_default()
    }

    /// Whether `agency`'s batch of `count` bets numbered from `first` is to be
    /// appended (see `Admission`).
    pub fn admit(&mut self, agency: u32, first: u64, count: u64) -> Admission {
        let ledger = self.agency(agency);
        let (stored, finish) = (ledger.stored, ledger.finish);
        match finish {
            FinishState::Finished { .. } => return Admission::Finished,
            FinishState::Finishing if first + count > stored => return Admission::Finished,
            _ => {}
        }
        if first + count <= stored {
            Admission::AlreadyStored
        } else if first != stored {
            Admission::OutOfOrder { expected: stored }
        } else {
            Admission::Append
        }
    }

    /// `agency`'s batch of `count` bets, encoded as `body`, was appended
    /// through position `end`.
    pub fn appended(&mut self, agency: u32, count: u64, body: &[u8], end: u64) {
        let ledger = self.agency(agency);
        ledger.stored += count;
        let hash = ledger.hash.get_or_insert_with(Hasher::new);
        hash.update(body);
        let hash = hash.clone();
        self.pending.push_back(PendingRows {
            end,
            agency,
            count,
            hash,
        });
    }

    /// The rows appended through `end` are on disk.
    pub fn durable_through(&mut self, end: u64) {
        while self.pending.front().is_some_and(|p| p.end <= end) {
            if let Some(rows) = self.pending.pop_front() {
                let ledger = self.agency(rows.agency);
                ledger.durable += rows.count;
                ledger.durable_hash = Some(rows.hash);
            }
        }
    }

    /// The agency's bets on disk, their digest and whether it finished.
    pub fn durable_state(&self, agency: u32) -> DurableState {
        match self.agencies.get(&agency) {
            Some(ledger) => DurableState {
                stored: ledger.durable,
                digest: ledger.durable_digest(),
                finished: matches!(ledger.finish, FinishState::Finished { .. }),
            },
            None => DurableState {
                stored: 0,
                digest: Digest::of_nothing(),
                finished: false,
            },
        }
    }

    /// The round's seal once agencies 1..=`agencies` have all finished.
    pub fn seal(&self, agencies: u32) -> Option<Digest> {
        let mut finishes = Vec::with_capacity(agencies as usize);
        for agency in 1..=agencies {
            match self.agencies.get(&agency).map(|ledger| ledger.finish) {
                Some(FinishState::Finished { total, digest }) => {
                    finishes.push((agency, u32::try_from(total).ok()?, digest));
                }
                _ => return None,
            }
        }
        Some(digest::seal(finishes))
    }

    /// Starts `agency`'s FINISH of `total` bets of `digest`: a repeat is judged
    /// against the record, a first one against the stored count; `None` when
    /// it goes on to be written (no batch may be appended meanwhile).
    pub fn begin_finish(&mut self, agency: u32, total: u64, digest: Digest) -> Option<Finish> {
        let ledger = self.agency(agency);
        if let FinishState::Finished {
            total: recorded,
            digest: recorded_digest,
        } = ledger.finish
        {
            let repeat = Finish::Recorded { first_time: false };
            return Some(judge_finish(
                (recorded, recorded_digest),
                (total, digest),
                repeat,
            ));
        }
        if ledger.stored != total {
            return Some(Finish::CountMismatch {
                stored: ledger.stored,
            });
        }
        ledger.finish = FinishState::Finishing;
        None
    }

    /// Ends the FINISH `begin_finish` started: recorded, or open again.
    pub fn end_finish(&mut self, agency: u32, recorded: Option<(u64, Digest)>) {
        self.agency(agency).finish = match recorded {
            Some((total, digest)) => FinishState::Finished { total, digest },
            None => FinishState::Open,
        };
    }
}
