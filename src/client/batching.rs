//! The agency's side of the bets exchange, without sockets: packing valid bets
//! into BETS bodies, and the window of batches sent ahead of their acks.
//!
//! Both are plain values changed through `&mut self`, so the client's loop is a
//! few calls on them and they are tested here byte for byte.

use crate::bet::ValidBet;
use crate::wire;
use std::collections::VecDeque;
use std::fmt;

/// A batch ready to go: the index of its first bet, its count and its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Batch {
    /// The agency's number of its first bet (0 for the first bet of the file).
    pub first: u64,
    pub count: u16,
    pub body: Vec<u8>,
}

// A valid bet always fits an empty batch, so `push` never has a bet it cannot place.
const _: () = assert!(wire::MAX_VALID_BET_LEN <= wire::MAX_BETS_BODY_LEN);

/// Packs bets, in order, into bodies that fit one BETS message.
pub(crate) struct Batcher {
    max_count: usize,
    /// The batch being packed is `body[..filled]`; the buffer has room for a
    /// whole message and one more bet, so every bet is written in place.
    body: Vec<u8>,
    filled: usize,
    count: usize,
    /// The number of the next bet pushed.
    next: u64,
}

impl Batcher {
    /// A batcher whose batches hold at most `max_count` bets (and never more
    /// than fit in one message); the first bet pushed is number `first`.
    pub fn new(max_count: usize, first: u64) -> Batcher {
        Batcher {
            max_count: max_count.clamp(1, usize::from(u16::MAX)),
            body: vec![0; wire::MAX_BETS_BODY_LEN + wire::MAX_VALID_BET_LEN],
            filled: 0,
            count: 0,
            next: first,
        }
    }

    /// Adds a bet. When it does not fit the batch being packed, that batch is
    /// returned whole and the bet starts the next one (a valid bet always
    /// fits an empty batch: it is a small fraction of a message).
    pub fn push(&mut self, bet: &ValidBet<'_>) -> Option<Batch> {
        let len = wire::encoded_len(**bet);
        let full = self.count == self.max_count || self.filled + len > wire::MAX_BETS_BODY_LEN;
        let done = if self.count > 0 && full {
            self.take()
        } else {
            None
        };
        // `filled` is at most a message's body, so the room is there.
        self.filled += wire::write_valid_bet(bet, &mut self.body[self.filled..]);
        self.count += 1;
        done
    }

    /// The batch being packed, if it holds any bet.
    pub fn take(&mut self) -> Option<Batch> {
        if self.count == 0 {
            return None;
        }
        let count = u16::try_from(self.count).unwrap_or(u16::MAX);
        let batch = Batch {
            first: self.next,
            count,
            body: self.body[..self.filled].to_vec(),
        };
        self.next += u64::from(count);
        self.count = 0;
        self.filled = 0;
        Some(batch)
    }
}

/// What was wrong with an ack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AckError {
    /// An ack arrived with no batch waiting for one.
    Unexpected { count: u16 },
    /// The ack's count is not the oldest waiting batch's.
    WrongCount { count: u16, expected: u16 },
}

impl fmt::Display for AckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AckError::Unexpected { count } => {
                write!(
                    f,
                    "an ack of {count} bets arrived with no batch waiting for one"
                )
            }
            AckError::WrongCount { count, expected } => write!(
                f,
                "an ack of {count} bets arrived for a batch of {expected}"
            ),
        }
    }
}

/// Batches sent and not yet acknowledged, oldest first.
pub(crate) struct AckWindow {
    limit: usize,
    waiting: VecDeque<(u64, u16)>,
}

impl AckWindow {
    /// A window of at most `limit` batches (at least 1).
    pub fn new(limit: usize) -> AckWindow {
        AckWindow {
            limit: limit.max(1),
            waiting: VecDeque::new(),
        }
    }

    /// Whether another batch must wait for an ack first.
    pub fn is_full(&self) -> bool {
        self.waiting.len() >= self.limit
    }

    /// Whether no batch waits for its ack.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Records a batch as sent.
    pub fn sent(&mut self, batch: &Batch) {
        self.waiting.push_back((batch.first, batch.count));
    }

    /// Takes an ack for the oldest waiting batch.
    pub fn ack(&mut self, count: u16) -> Result<(), AckError> {
        let Some(&(_, expected)) = self.waiting.front() else {
            return Err(AckError::Unexpected { count });
        };
        if count != expected {
            return Err(AckError::WrongCount { count, expected });
        }
        self.waiting.pop_front();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bet::Bet;

    fn bet(document: &str) -> Bet {
        Bet {
            first_name: "Ana".into(),
            last_name: "Gil".into(),
            document: document.into(),
            birthdate: "2000-01-01".into(),
            number: 1,
        }
    }

    #[test]
    fn batches_hold_at_most_max_count_bets_numbered_in_order() {
        let bets: Vec<Bet> = (0..7).map(|i| bet(&i.to_string())).collect();
        let mut batcher = Batcher::new(3, 10);
        let mut batches = Vec::new();
        for b in &bets {
            batches.extend(batcher.push(&b.valid()));
        }
        batches.extend(batcher.take());
        let shape: Vec<(u64, u16)> = batches.iter().map(|b| (b.first, b.count)).collect();
        assert_eq!(shape, [(10, 3), (13, 3), (16, 1)]);
        let mut one = Vec::new();
        wire::encode_bet(*bets[6].valid(), &mut one).unwrap();
        assert_eq!(batches[0].body.len(), 3 * one.len());
        assert_eq!(batches[2].body, one);
        assert_eq!(batcher.take(), None);
    }

    #[test]
    fn a_batch_never_outgrows_one_message() {
        let mut long = bet("1");
        long.first_name = "N".repeat(255);
        long.last_name = "A".repeat(255);
        let mut batcher = Batcher::new(usize::MAX, 0);
        let mut batches = Vec::new();
        for _ in 0..100 {
            batches.extend(batcher.push(&long.valid()));
        }
        batches.extend(batcher.take());
        assert!(batches.len() > 1);
        assert!(
            batches
                .iter()
                .all(|b| b.body.len() <= wire::MAX_BETS_BODY_LEN)
        );
        assert_eq!(batches.iter().map(|b| u64::from(b.count)).sum::<u64>(), 100);
    }

    #[test]
    fn acks_must_come_in_order_with_their_batch_count() {
        let mut window = AckWindow::new(2);
        let batch = |first, count| Batch {
            first,
            count,
            body: Vec::new(),
        };
        window.sent(&batch(0, 5));
        assert!(!window.is_full());
        window.sent(&batch(5, 3));
        assert!(window.is_full());
        assert_eq!(
            window.ack(3),
            Err(AckError::WrongCount {
                count: 3,
                expected: 5
            })
        );
        assert_eq!(window.ack(5), Ok(()));
        assert_eq!(window.ack(3), Ok(()));
        assert!(window.is_empty());
        assert_eq!(window.ack(1), Err(AckError::Unexpected { count: 1 }));
    }
}
