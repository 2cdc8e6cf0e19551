//! The answers a connection owes its peer, in the order they are due.
//!
//! A batch's ack waits here for the disk (`BetStore::sync`), and any reply
//! queued after it goes out after it, so a reply can never overtake an ack the
//! connection owes. Sending makes every owed batch durable with one shared
//! `fsync` (group commit), then writes every answer in order.

use super::refusal::Refusal;
use crate::net::connection::Connection;
use crate::storage::{Appended, BetStore};
use crate::wire::Reply;
use log::{error, info};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;

/// A batch appended to the file (or found there) whose ack waits for the shared `fsync`.
pub(super) struct PendingAck {
    pub appended: Appended,
    pub agency: u32,
    pub count: u16,
    /// The batch was stored before: its ack is not logged as a new one.
    pub repeated: bool,
}

/// One answer owed to the peer.
enum Owed {
    Ack(PendingAck),
    Reply(Reply),
}

/// The answers owed to the peer, in the order they are due.
#[derive(Default)]
pub(super) struct Outbox {
    owed: VecDeque<Owed>,
    acks: usize,
}

impl Outbox {
    pub fn ack(&mut self, ack: PendingAck) {
        self.acks += 1;
        self.owed.push_back(Owed::Ack(ack));
    }

    pub fn reply(&mut self, reply: Reply) {
        self.owed.push_back(Owed::Reply(reply));
    }

    /// Acks owed, not yet sent.
    pub fn acks(&self) -> usize {
        self.acks
    }

    /// Makes every owed batch durable (one shared `fsync` for all of them), then
    /// writes every owed answer in order: an ack, or ERROR STORAGE for a batch
    /// the disk refused, and the replies between them.
    pub fn send(
        &mut self,
        conn: &mut Connection,
        store: &BetStore,
        peer: SocketAddr,
    ) -> io::Result<()> {
        for owed in self.owed.drain(..) {
            let reply = match owed {
                Owed::Reply(reply) => reply,
                Owed::Ack(ack) => acknowledge(store, ack),
            };
            if let Err(e) = conn.queue_reply(&reply) {
                // Our own replies are built within the limits; say so loudly if not.
                error!("action: responder | result: fail | peer: {peer} | error: {e}");
            }
        }
        self.acks = 0;
        conn.flush()
    }
}

/// The answer to a batch once the disk has spoken: its ack, or ERROR STORAGE.
fn acknowledge(store: &BetStore, ack: PendingAck) -> Reply {
    match store.sync(ack.appended) {
        Ok(()) if ack.repeated => Reply::BetsAck { count: ack.count },
        Ok(()) => {
            info!(
                "action: apuesta_recibida | result: success | cantidad: {} | agencia: {}",
                ack.count, ack.agency
            );
            Reply::BetsAck { count: ack.count }
        }
        Err(e) => {
            error!(
                "action: apuesta_recibida | result: fail | cantidad: {} | agencia: {} | error: {e}",
                ack.count, ack.agency
            );
            let refusal = Refusal::BatchNotStored {
                count: usize::from(ack.count),
                error: e,
            };
            Reply::error(refusal.code(), &refusal.detail(ack.agency))
        }
    }
}
