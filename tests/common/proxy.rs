//! A TCP proxy that cuts every connection: it forwards bytes between a client
//! and the server until a random number of them has crossed, then closes both
//! sides, in whichever direction the budget ran out; and one that delays every
//! byte, as a long network path would.

use super::seeded;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// A proxy's accept loop: each connection to `addr` is paired with one to
/// the upstream server and handed to the proxy's own forwarding. Stopped when
/// dropped.
struct AcceptLoop {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl AcceptLoop {
    /// `forward(client, server, client again, server again)` for every pair:
    /// a clone of each side, so each direction can run on a thread of its own.
    fn start(
        upstream: SocketAddr,
        forward: impl Fn(TcpStream, TcpStream, TcpStream, TcpStream) + Send + 'static,
    ) -> AcceptLoop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let (Ok(c1), Ok(s1)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                forward(client, server, c1, s1);
            }
        });
        AcceptLoop {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for AcceptLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A running proxy that cuts connections; stopped when dropped.
pub struct CuttingProxy {
    pub addr: SocketAddr,
    /// Connections cut before either side closed them.
    pub cuts: Arc<AtomicU64>,
    _accepting: AcceptLoop,
}

impl CuttingProxy {
    /// Forwards to `upstream`; each connection gets a budget of 1 to
    /// `max_bytes` bytes (drawn from `seed`) before it is cut.
    pub fn start(upstream: SocketAddr, max_bytes: u64, seed: u64) -> CuttingProxy {
        let cuts = Arc::new(AtomicU64::new(0));
        let random = Mutex::new(seeded(seed));
        let cut_count = Arc::clone(&cuts);
        let accepting = AcceptLoop::start(upstream, move |client, server, c1, s1| {
            let budget = 1 + random.lock().map_or(1, |mut next| next() % max_bytes);
            let left = Arc::new(AtomicU64::new(budget));
            let (left2, cuts1, cuts2) = (
                Arc::clone(&left),
                Arc::clone(&cut_count),
                Arc::clone(&cut_count),
            );
            std::thread::spawn(move || pipe(client, server, &left, &cuts1));
            std::thread::spawn(move || pipe(s1, c1, &left2, &cuts2));
        });
        CuttingProxy {
            addr: accepting.addr,
            cuts,
            _accepting: accepting,
        }
    }
}

/// Copies `from` to `to` while the shared budget lasts, then shuts both down.
fn pipe(mut from: TcpStream, mut to: TcpStream, left: &AtomicU64, cuts: &AtomicU64) {
    let mut buffer = [0u8; 4096];
    while let Ok(read) = from.read(&mut buffer) {
        if read == 0 {
            break;
        }
        let before = left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| {
                Some(l.saturating_sub(read as u64))
            })
            .unwrap_or(0);
        let pass = (before as usize).min(read);
        if to.write_all(&buffer[..pass]).is_err() {
            break;
        }
        if pass < read {
            cuts.fetch_add(1, Ordering::SeqCst);
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// A TCP proxy that delays every byte by the same time in each direction, as
/// a long network path would: a slow but honest peer. Stopped when dropped.
pub struct DelayProxy {
    pub addr: SocketAddr,
    _accepting: AcceptLoop,
}

impl DelayProxy {
    /// Forwards to `upstream`, each chunk `delay` after it arrived.
    pub fn start(upstream: SocketAddr, delay: std::time::Duration) -> DelayProxy {
        let accepting = AcceptLoop::start(upstream, move |client, server, c1, s1| {
            std::thread::spawn(move || delayed_pipe(client, server, delay));
            std::thread::spawn(move || delayed_pipe(s1, c1, delay));
        });
        DelayProxy {
            addr: accepting.addr,
            _accepting: accepting,
        }
    }
}

/// Copies `from` to `to`, each chunk `delay` after it was read, in order.
fn delayed_pipe(mut from: TcpStream, mut to: TcpStream, delay: std::time::Duration) {
    let (sender, receiver) = std::sync::mpsc::channel::<(std::time::Instant, Vec<u8>)>();
    let writer = std::thread::spawn(move || {
        for (due, chunk) in receiver {
            std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
    let mut buffer = [0u8; 16384];
    while let Ok(read) = from.read(&mut buffer) {
        let due = std::time::Instant::now() + delay;
        if read == 0 || sender.send((due, buffer[..read].to_vec())).is_err() {
            break;
        }
    }
    drop(sender);
    let _ = writer.join();
    let _ = from.shutdown(Shutdown::Both);
}
