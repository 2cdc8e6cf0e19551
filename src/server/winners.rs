//! GET_WINNERS: the agency's winners once the draw has happened (in parts when
//! long), NO_WINNERS before it after a bounded wait, and never anyone else's.

use super::handler::{Ending, Handler, Served, Stop};
use super::lottery::WinnersAnswer;
use super::refusal::Refusal;
use crate::wire::{self, Reply};
use log::{debug, info};
use std::time::{Duration, Instant};

impl Handler {
    /// Answers `agency`'s GET_WINNERS, waiting on the draw for what is left of
    /// this connection's `SERVER_DRAW_WAIT_MS`.
    pub(super) fn winners(&mut self, agency: u32) -> Result<Served, Stop> {
        // Nothing owed waits while this request waits on the draw.
        self.send_outbox()?;
        self.hold_draw_if_due();
        // One wait at a time, and no more in all than SERVER_DRAW_WAIT_MS: a
        // request already followed by others (pipelined) is answered at once.
        let wait = if self.conn.buffered() > 0 {
            Duration::ZERO
        } else {
            self.draw_wait_left
        };
        let waiting = Instant::now();
        let answer = self.context.lottery.wait_for_winners(wait);
        self.draw_wait_left = self.draw_wait_left.saturating_sub(waiting.elapsed());
        match answer {
            WinnersAnswer::Drawn(winners) => {
                let list = winners.of(agency);
                for reply in wire::winners_replies(&list.documents) {
                    self.outbox.reply(reply);
                }
                info!(
                    "action: ganadores_enviados | result: success | agencia: {agency} | cant_ganadores: {}",
                    list.count
                );
                Ok(Served::Progress)
            }
            WinnersAnswer::NotYet => {
                debug!(
                    "action: ganadores_enviados | result: in_progress | agencia: {agency} | detail: draw not held yet"
                );
                self.outbox.reply(Reply::NoWinners);
                Ok(Served::Waiting)
            }
            WinnersAnswer::Failed(reason) => Err(Refusal::DrawFailed(reason).into()),
            WinnersAnswer::ShuttingDown => Err(Ending::ShuttingDown.into()),
        }
    }
}
