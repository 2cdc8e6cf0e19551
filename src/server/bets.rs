//! BETS: a batch checked bet by bet, then appended whole if it is the agency's
//! next one (acked once on disk), acked again without storing if it was stored
//! before, or refused with nothing of it stored.

use super::handler::{Handler, Served, Stop};
use super::outbox::PendingAck;
use super::refusal::Refusal;
use crate::bet::calendar::Date;
use crate::bet::{BetRef, ValidBet};
use crate::storage::Append;
use crate::wire::BetBatch;
use log::{debug, log_enabled};

impl Handler {
    /// Validates and stores `agency`'s batch numbered from `first`.
    pub(super) fn bets(
        &mut self,
        agency: u32,
        first: u32,
        batch: &BetBatch,
    ) -> Result<Served, Stop> {
        let count = batch.len();
        let today = Date::today_utc();
        let mut bets: Vec<ValidBet<'_>> = Vec::with_capacity(count);
        for (index, bet) in batch.bets().enumerate() {
            let valid = BetRef::validate(bet, today).map_err(|reason| Refusal::InvalidBet {
                count,
                index,
                reason,
            })?;
            bets.push(valid);
        }
        let appended = self.context.store.append_batch(
            agency,
            u64::from(first),
            &bets,
            batch.body(),
            &mut self.rows,
        );
        let (appended, repeated) = match appended {
            Ok(Append::Stored(appended)) => (appended, false),
            Ok(Append::AlreadyStored(appended)) => {
                debug!(
                    "action: apuesta_repetida | result: success | cantidad: {count} | agencia: {agency} | primera: {first}"
                );
                (appended, true)
            }
            Ok(Append::OutOfOrder { expected }) => {
                return Err(Refusal::OutOfOrder {
                    count,
                    first,
                    expected,
                }
                .into());
            }
            Ok(Append::Finished) => return Err(Refusal::AgencyFinished { count }.into()),
            Err(error) => return Err(Refusal::BatchNotStored { count, error }.into()),
        };
        if !repeated && log_enabled!(log::Level::Debug) {
            for bet in &bets {
                debug!(
                    "action: apuesta_almacenada | result: success | dni: {} | numero: {}",
                    String::from_utf8_lossy(bet.document),
                    bet.number
                );
            }
        }
        self.outbox.ack(PendingAck {
            appended,
            agency,
            // The decoder read `count` from a u16, so it fits.
            count: u16::try_from(count).unwrap_or(u16::MAX),
            repeated,
        });
        Ok(Served::Progress)
    }
}
