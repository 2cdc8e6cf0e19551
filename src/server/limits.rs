//! What a connection may take of the server: slots, time, and log lines.
//!
//! `Registry` is the set of open connections. It bounds them three ways, so
//! that no one who can reach the port can take what the agencies need: at most
//! `max_connections` in all; of those, at most a quarter that have not yet
//! completed HELLO; and at most `MAX_PER_AGENCY` for one agency. When the
//! share without HELLO is full, a newcomer takes the place of one waiting over
//! `EVICT_AFTER`, chosen to be fair to slow honest peers and hard on floods: it
//! is from the newcomer's own address if it can be (a flood from one address
//! evicts only its own), else from the address holding the most of the share,
//! if that is more than the newcomer's (one holding over half of it gives way
//! at once, however young its connections); silent ones go before ones the
//! peer has sent bytes on, and a
//! connection making progress (a TLS handshake, a HELLO under way) from an
//! address holding no more than half the share is never taken: its HELLO
//! deadline ends it if it stalls. With none to take, the newcomer gets BUSY. `LogLimiter` keeps what one peer's
//! refused requests write to the log to a few lines a second, counting the rest.

use crate::app::locks::lock;
use std::cmp::Reverse;
use std::collections::HashMap;
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Connections one agency may hold at once: its bets connection, a winners
/// query, and room for ones whose close the server has not seen yet.
pub(crate) const MAX_PER_AGENCY: usize = 4;
/// A connection without HELLO this old may make room for a newcomer.
const EVICT_AFTER: Duration = Duration::from_millis(250);
/// Lines of refused requests a peer may cause in a burst, and then per second.
const LOG_BURST: f64 = 10.0;
const LOG_PER_SECOND: f64 = 2.0;
/// Peers the log limiter remembers; past this, quiet ones are forgotten.
const LOG_PEERS: usize = 10_000;

/// Why a new connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Every slot is taken.
    Full,
    /// The share of connections without HELLO is full of recent ones.
    TooManyWithoutHello,
}

impl Refusal {
    pub fn detail(self) -> &'static str {
        match self {
            Refusal::Full => "the server is serving as many connections as it allows; retry later",
            Refusal::TooManyWithoutHello => {
                "too many connections have not sent HELLO yet; retry later"
            }
        }
    }
}

struct Entry {
    peer: SocketAddr,
    tcp: Arc<TcpStream>,
    accepted_at: Instant,
    agency: Option<u32>,
    /// Shut to make room: no longer counted among those without HELLO.
    evicted: bool,
    /// The peer has sent bytes on it (set by its socket).
    heard: Arc<AtomicBool>,
}

impl Entry {
    /// Counted among the connections without HELLO.
    fn waits_for_hello(&self) -> bool {
        self.agency.is_none() && !self.evicted
    }

    fn heard(&self) -> bool {
        self.heard.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
struct State {
    open: HashMap<u64, Entry>,
    without_hello: usize,
    /// Connections without HELLO, per source address.
    without_hello_from: HashMap<IpAddr, usize>,
    per_agency: HashMap<u32, usize>,
}

impl State {
    fn without_hello_from(&self, ip: IpAddr) -> usize {
        self.without_hello_from.get(&ip).copied().unwrap_or(0)
    }

    /// One more (or one fewer) connection without HELLO from `ip`.
    fn count_without_hello(&mut self, ip: IpAddr, more: bool) {
        if more {
            self.without_hello += 1;
            *self.without_hello_from.entry(ip).or_default() += 1;
            return;
        }
        self.without_hello -= 1;
        if let Some(count) = self.without_hello_from.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                self.without_hello_from.remove(&ip);
            }
        }
    }
}

/// The open connections and their limits.
pub(crate) struct Registry {
    state: Mutex<State>,
    max_connections: usize,
    max_without_hello: usize,
    evict_after: Duration,
}

impl Registry {
    pub fn new(max_connections: usize) -> Registry {
        Registry {
            state: Mutex::new(State::default()),
            max_connections,
            max_without_hello: (max_connections / 4).max(1),
            evict_after: EVICT_AFTER,
        }
    }

    /// Admits a new connection, or says why not. Admitting may shut the oldest
    /// connection still without HELLO; its peer is returned.
    pub fn admit(
        &self,
        id: u64,
        peer: SocketAddr,
        tcp: Arc<TcpStream>,
        heard: Arc<AtomicBool>,
    ) -> Result<Option<SocketAddr>, Refusal> {
        let mut state = lock(&self.state);
        if state.open.len() >= self.max_connections {
            return Err(Refusal::Full);
        }
        let mut evicted = None;
        if state.without_hello >= self.max_without_hello {
            let victim = self
                .room_for(&state, peer.ip())
                .ok_or(Refusal::TooManyWithoutHello)?;
            if let Some(entry) = state.open.get_mut(&victim) {
                entry.evicted = true;
                let _ = entry.tcp.shutdown(Shutdown::Both);
                evicted = Some(entry.peer);
                let ip = entry.peer.ip();
                state.count_without_hello(ip, false);
            }
        }
        state.open.insert(
            id,
            Entry {
                peer,
                tcp,
                accepted_at: Instant::now(),
                agency: None,
                evicted: false,
                heard,
            },
        );
        state.count_without_hello(peer.ip(), true);
        Ok(evicted)
    }

    /// The connection without HELLO a newcomer from `newcomer` may take the
    /// place of (see the module doc), if any.
    fn room_for(&self, state: &State, newcomer: IpAddr) -> Option<u64> {
        let own = state.without_hello_from(newcomer);
        let protected_up_to = self.max_without_hello / 2;
        state
            .open
            .iter()
            .filter(|(_, e)| e.waits_for_hello())
            .filter(|(_, e)| {
                let (ip, from) = (e.peer.ip(), state.without_hello_from(e.peer.ip()));
                let fair = ip == newcomer || from > own;
                // An address holding over half the share gives way to others at once.
                let hogging = ip != newcomer && from > protected_up_to;
                let due = hogging || e.accepted_at.elapsed() >= self.evict_after;
                fair && due && !(e.heard() && from <= protected_up_to)
            })
            .min_by_key(|(_, e)| {
                let from = state.without_hello_from(e.peer.ip());
                (
                    e.peer.ip() != newcomer,
                    e.heard(),
                    Reverse(from),
                    e.accepted_at,
                )
            })
            .map(|(&id, _)| id)
    }

    /// Records that connection `id` speaks for `agency`; refused (with the
    /// agency's open connections) when the agency already has `MAX_PER_AGENCY`.
    pub fn authenticate(&self, id: u64, agency: u32) -> Result<(), usize> {
        let mut state = lock(&self.state);
        let open = state.per_agency.get(&agency).copied().unwrap_or(0);
        if open >= MAX_PER_AGENCY {
            return Err(open);
        }
        let Some(entry) = state.open.get_mut(&id) else {
            return Ok(());
        };
        let counted = !entry.evicted;
        let ip = entry.peer.ip();
        entry.agency = Some(agency);
        if counted {
            state.count_without_hello(ip, false);
        }
        *state.per_agency.entry(agency).or_default() += 1;
        Ok(())
    }

    /// Forgets connection `id`, however it ended.
    pub fn remove(&self, id: u64) {
        let mut state = lock(&self.state);
        let Some(entry) = state.open.remove(&id) else {
            return;
        };
        match entry.agency {
            Some(agency) => {
                if let Some(count) = state.per_agency.get_mut(&agency) {
                    *count -= 1;
                    if *count == 0 {
                        state.per_agency.remove(&agency);
                    }
                }
            }
            None if !entry.evicted => state.count_without_hello(entry.peer.ip(), false),
            None => {}
        }
    }

    /// Shuts `how` on every open socket; returns their peers.
    pub fn shut_all(&self, how: Shutdown) -> Vec<SocketAddr> {
        lock(&self.state)
            .open
            .values()
            .map(|entry| {
                // The peer may have closed already; the handler sees it either way.
                let _ = entry.tcp.shutdown(how);
                entry.peer
            })
            .collect()
    }

    pub fn count(&self) -> usize {
        lock(&self.state).open.len()
    }
}

/// Removes a connection from the registry when its handler ends, however it ends.
pub(crate) struct Registration {
    pub registry: Arc<Registry>,
    pub id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.remove(self.id);
    }
}

struct Bucket {
    tokens: f64,
    refilled: Instant,
    suppressed: u64,
}

/// Log lines a peer's refused requests may write: a token bucket per address.
#[derive(Default)]
pub(crate) struct LogLimiter {
    peers: Mutex<HashMap<IpAddr, Bucket>>,
}

impl LogLimiter {
    /// Whether a line about `ip` may be written now: `Some(n)` with the lines
    /// left out since the last one written, or `None` to leave this one out.
    pub fn allow(&self, ip: IpAddr) -> Option<u64> {
        let mut peers = lock(&self.peers);
        let now = Instant::now();
        if peers.len() >= LOG_PEERS && !peers.contains_key(&ip) {
            peers.retain(|_, b| now.duration_since(b.refilled) < Duration::from_secs(60));
            if peers.len() >= LOG_PEERS {
                peers.clear();
            }
        }
        let bucket = peers.entry(ip).or_insert(Bucket {
            tokens: LOG_BURST,
            refilled: now,
            suppressed: 0,
        });
        let elapsed = now.duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * LOG_PER_SECOND).min(LOG_BURST);
        bucket.refilled = now;
        if bucket.tokens < 1.0 {
            bucket.suppressed += 1;
            return None;
        }
        bucket.tokens -= 1.0;
        Some(std::mem::take(&mut bucket.suppressed))
    }
}

/// The end of a rate-limited log line: how many like it were left out.
pub(crate) fn suppressed_note(suppressed: u64) -> String {
    if suppressed == 0 {
        String::new()
    } else {
        format!(" | suprimidas: {suppressed}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn socket() -> (Arc<TcpStream>, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let peer = stream.local_addr().unwrap();
        (Arc::new(stream), peer)
    }

    fn silent() -> Arc<AtomicBool> {
        Arc::new(AtomicBool::new(false))
    }

    fn heard() -> Arc<AtomicBool> {
        Arc::new(AtomicBool::new(true))
    }

    /// A registry of 16 slots (4 without HELLO) that lets any connection
    /// without HELLO make room at once.
    fn impatient() -> Registry {
        Registry {
            evict_after: Duration::ZERO,
            ..Registry::new(16)
        }
    }

    fn from(ip: &str, port: u16) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), port)
    }

    #[test]
    fn a_flood_from_one_address_evicts_only_its_own() {
        let registry = impatient();
        let (tcp, _) = socket();
        let agency = from("127.0.0.1", 1000);
        registry
            .admit(1, agency, Arc::clone(&tcp), silent())
            .unwrap();
        for id in 2..=4 {
            registry
                .admit(
                    id,
                    from("127.0.0.2", 2000 + id as u16),
                    Arc::clone(&tcp),
                    silent(),
                )
                .unwrap();
        }
        // The share is full; the flood's newcomers take the places of its own.
        for id in 5..12 {
            let evicted = registry.admit(
                id,
                from("127.0.0.2", 3000 + id as u16),
                Arc::clone(&tcp),
                silent(),
            );
            assert_eq!(
                evicted.map(|e| e.map(|p| p.ip())),
                Ok(Some(from("127.0.0.2", 0).ip()))
            );
        }
        // A third address takes from the one holding the most.
        let evicted = registry.admit(12, from("127.0.0.3", 1), Arc::clone(&tcp), silent());
        assert_eq!(
            evicted.map(|e| e.map(|p| p.ip())),
            Ok(Some(from("127.0.0.2", 0).ip()))
        );
        registry.authenticate(1, 1).unwrap();
    }

    #[test]
    fn a_connection_making_progress_is_not_evicted_and_silent_ones_go_first() {
        let registry = impatient();
        let (tcp, _) = socket();
        let agency = from("127.0.0.1", 1000);
        registry
            .admit(1, agency, Arc::clone(&tcp), heard())
            .unwrap();
        registry
            .admit(2, from("127.0.0.1", 1001), Arc::clone(&tcp), silent())
            .unwrap();
        registry
            .admit(3, from("127.0.0.2", 1), Arc::clone(&tcp), heard())
            .unwrap();
        registry
            .admit(4, from("127.0.0.2", 2), Arc::clone(&tcp), heard())
            .unwrap();
        // The agency's own address: the silent one goes, the one in progress stays.
        let evicted = registry.admit(5, from("127.0.0.1", 1002), Arc::clone(&tcp), silent());
        assert_eq!(evicted, Ok(Some(from("127.0.0.1", 1001))));
        // Now every connection without HELLO is in progress from an address
        // holding no more than half the share, or silent and newer: 5 goes.
        let evicted = registry.admit(6, from("127.0.0.1", 1003), Arc::clone(&tcp), silent());
        assert_eq!(evicted, Ok(Some(from("127.0.0.1", 1002))));
        // A newcomer from the other address finds nothing it may take.
        assert_eq!(
            registry.admit(7, from("127.0.0.2", 3), Arc::clone(&tcp), silent()),
            Err(Refusal::TooManyWithoutHello)
        );
    }

    #[test]
    fn an_address_holding_over_half_the_share_gives_way_to_another_at_once() {
        // Connections must wait 250 ms before they may be evicted...
        let registry = Registry::new(16);
        let (tcp, _) = socket();
        for id in 1..=4 {
            let peer = from("127.0.0.2", id as u16);
            registry
                .admit(id, peer, Arc::clone(&tcp), silent())
                .unwrap();
        }
        // ...but not by a newcomer from another address when one holds them all.
        let evicted = registry.admit(5, from("127.0.0.1", 1), Arc::clone(&tcp), silent());
        assert_eq!(
            evicted.map(|e| e.map(|p| p.ip())),
            Ok(Some(from("127.0.0.2", 0).ip()))
        );
        // The hogging address's own newcomers still wait their turn.
        assert_eq!(
            registry.admit(6, from("127.0.0.2", 9), Arc::clone(&tcp), silent()),
            Err(Refusal::TooManyWithoutHello)
        );
    }

    #[test]
    fn bytes_alone_do_not_protect_an_address_holding_over_half_the_share() {
        let registry = impatient();
        let (tcp, _) = socket();
        for id in 1..=4 {
            registry
                .admit(id, from("127.0.0.2", id as u16), Arc::clone(&tcp), heard())
                .unwrap();
        }
        let evicted = registry.admit(5, from("127.0.0.2", 5), Arc::clone(&tcp), heard());
        assert_eq!(evicted, Ok(Some(from("127.0.0.2", 1))));
    }

    #[test]
    fn connections_without_hello_get_a_quarter_of_the_slots_and_the_oldest_makes_room() {
        let registry = Registry::new(8);
        let (tcp, peer) = socket();
        registry.admit(1, peer, Arc::clone(&tcp), silent()).unwrap();
        registry.admit(2, peer, Arc::clone(&tcp), silent()).unwrap();
        // The share (2 of 8) is full of recent connections: refused.
        assert_eq!(
            registry.admit(3, peer, Arc::clone(&tcp), silent()),
            Err(Refusal::TooManyWithoutHello)
        );
        // One completes HELLO: its slot no longer counts against the share.
        registry.authenticate(1, 7).unwrap();
        registry.admit(3, peer, Arc::clone(&tcp), silent()).unwrap();
        assert_eq!(registry.count(), 3);
    }

    #[test]
    fn a_newcomer_takes_the_place_of_the_oldest_waiting_long_enough() {
        let registry = Registry {
            evict_after: Duration::ZERO,
            ..Registry::new(8)
        };
        let (first, peer) = socket();
        registry
            .admit(1, peer, Arc::clone(&first), silent())
            .unwrap();
        let (second, _) = socket();
        registry.admit(2, peer, second, silent()).unwrap();
        let (third, _) = socket();
        assert_eq!(registry.admit(3, peer, third, silent()), Ok(Some(peer)));
        // The oldest was shut: its reads end at once.
        let mut byte = [0u8; 1];
        first
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let read = std::io::Read::read(&mut &*first, &mut byte);
        assert!(
            matches!(&read, Ok(0))
                || matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "{read:?}"
        );
        registry.remove(1);
        assert_eq!(registry.count(), 2);
    }

    #[test]
    fn an_agency_may_hold_only_a_few_connections() {
        let registry = Registry::new(100);
        let (tcp, peer) = socket();
        for id in 0..=MAX_PER_AGENCY as u64 {
            registry
                .admit(id, peer, Arc::clone(&tcp), silent())
                .unwrap();
        }
        for id in 0..MAX_PER_AGENCY as u64 {
            registry.authenticate(id, 1).unwrap();
        }
        assert_eq!(
            registry.authenticate(MAX_PER_AGENCY as u64, 1),
            Err(MAX_PER_AGENCY)
        );
        registry.remove(0);
        registry.authenticate(MAX_PER_AGENCY as u64, 1).unwrap();
        assert_eq!(registry.count(), MAX_PER_AGENCY);
    }

    #[test]
    fn every_slot_taken_is_full() {
        let registry = Registry::new(4);
        let (tcp, peer) = socket();
        for id in 0..4 {
            registry
                .admit(id, peer, Arc::clone(&tcp), silent())
                .unwrap();
            registry.authenticate(id, id as u32).unwrap();
        }
        assert_eq!(registry.admit(9, peer, tcp, silent()), Err(Refusal::Full));
    }

    #[test]
    fn a_peer_gets_a_burst_of_lines_then_a_few_a_second_and_the_rest_are_counted() {
        let limiter = LogLimiter::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let written = (0..1000).filter(|_| limiter.allow(ip).is_some()).count();
        assert!(written <= 12, "{written} lines");
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(
            limiter.allow(other),
            Some(0),
            "another peer has its own budget"
        );
    }
}
