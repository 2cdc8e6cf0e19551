//! HELLO: opens a session for an agency of the round, with its token and a
//! place among its connections; WELCOME says where its round stands, every bet
//! it counts already on disk, with their digest.

use super::handler::{Handler, Served, Stop};
use super::refusal::Refusal;
use crate::wire::{AgencyStatus, Reply};
use log::debug;

impl Handler {
    /// Opens the session for `agency`, or says why not.
    pub(super) fn hello(&mut self, agency: u32, token: &[u8]) -> Result<Served, Stop> {
        let lottery = &self.context.lottery;
        if !lottery.knows_agency(agency) {
            let agencies = lottery.agencies();
            return Err(Refusal::UnknownAgency { agencies }.into());
        }
        if !self.context.access.accepts(agency, token) {
            return Err(Refusal::WrongToken.into());
        }
        if let Err(open) = self.context.registry.authenticate(self.id, agency) {
            return Err(Refusal::AgencyBusy { open }.into());
        }
        let durable = self.context.store.durable_state(agency);
        let status = if self.context.lottery.is_drawn() {
            AgencyStatus::Drawn
        } else if durable.finished {
            AgencyStatus::Finished
        } else {
            AgencyStatus::Sending
        };
        debug!(
            "action: saludo | result: success | peer: {} | agencia: {agency} | almacenadas: {} | estado: {}",
            self.peer, durable.stored, status as u8
        );
        self.session = Some(agency);
        self.outbox.reply(Reply::Welcome {
            // An agency's bets are numbered by a u32, so its count fits one.
            stored: u32::try_from(durable.stored).unwrap_or(u32::MAX),
            status,
            digest: durable.digest,
        });
        Ok(Served::Progress)
    }
}
