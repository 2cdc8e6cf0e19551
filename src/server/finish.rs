//! FINISH: recorded only for exactly the bets stored (their count, then their
//! digest), on disk before FINISH_ACK returns the digest as the agency's
//! receipt; the last agency's FINISH holds the draw.

use super::handler::{Handler, Served, Stop};
use super::refusal::Refusal;
use crate::storage::Finish;
use crate::wire::Reply;
use crate::wire::digest::Digest;
use log::info;

impl Handler {
    /// Records that `agency` finished with `total` bets of `digest`.
    pub(super) fn finish(
        &mut self,
        agency: u32,
        total: u32,
        digest: Digest,
    ) -> Result<Served, Stop> {
        // This agency's batches are acknowledged before its FINISH is.
        self.send_outbox()?;
        let recorded = self
            .context
            .store
            .record_finish(agency, u64::from(total), digest);
        match recorded {
            Ok(Finish::Recorded { first_time }) => {
                let outcome = self.context.lottery.record_finished(agency);
                info!(
                    "action: agencia_finalizo | result: success | agencia: {agency} | total_agencias_finalizadas: {} | de: {} | faltan: {} | recibo: {digest}{}",
                    outcome.finished_count,
                    self.context.lottery.agencies(),
                    outcome.missing,
                    if first_time { "" } else { " | repetido: true" }
                );
                self.outbox.reply(Reply::FinishAck { agency, digest });
                self.send_outbox()?;
                self.hold_draw_if_due();
                Ok(Served::Progress)
            }
            Ok(Finish::CountMismatch { stored }) => {
                Err(Refusal::CountMismatch { total, stored }.into())
            }
            Ok(Finish::DigestMismatch { stored }) => Err(Refusal::DigestMismatch {
                total,
                sent: digest,
                stored,
            }
            .into()),
            Err(e) => Err(Refusal::FinishNotStored(e).into()),
        }
    }
}
