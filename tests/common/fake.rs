//! A scripted fake server, to drive the client through answers no real
//! server gives: each connection runs a script that reads the client's
//! messages (by their documented layouts) and writes whatever bytes it likes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Every message the fake server received: its id and its bytes.
pub type Received = Arc<Mutex<Vec<(u16, Vec<u8>)>>>;

/// One connection of the fake server, as its script sees it.
pub struct Exchange {
    pub stream: TcpStream,
    /// Which connection this is, from 0.
    pub index: usize,
    received: Received,
}

impl Exchange {
    /// Reads one client message: its id and its whole bytes. `None` when the
    /// client closed or sent something this reader does not know.
    pub fn read_request(&mut self) -> Option<(u16, Vec<u8>)> {
        let mut header = vec![0u8; 2];
        self.stream.read_exact(&mut header).ok()?;
        let id = u16::from_be_bytes([header[0], header[1]]);
        let (fixed, length_at) = match id {
            0x0009 => (10, Some(8)),
            0x0001 => (14, Some(12)),
            0x0003 => (42, None),
            0x0005 => (6, None),
            _ => return None,
        };
        header.resize(fixed, 0);
        self.stream.read_exact(&mut header[2..]).ok()?;
        if let Some(at) = length_at {
            let len = usize::from(u16::from_be_bytes([header[at], header[at + 1]]));
            let mut rest = vec![0u8; len];
            self.stream.read_exact(&mut rest).ok()?;
            header.extend(rest);
        }
        if let Ok(mut received) = self.received.lock() {
            received.push((id, header.clone()));
        }
        Some((id, header))
    }

    /// Writes `bytes`; false once the client is gone.
    pub fn send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok()
    }
}

/// The fake server; stopped when dropped.
pub struct FakeServer {
    pub addr: SocketAddr,
    pub received: Received,
    pub connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeServer {
    /// Serves every connection with `script`, each in a thread of its own.
    pub fn start(script: impl Fn(Exchange) + Send + Sync + 'static) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake server");
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let script = Arc::new(script);
        let (seen, count, stopping) = (
            Arc::clone(&received),
            Arc::clone(&connections),
            Arc::clone(&stop),
        );
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let index = count.fetch_add(1, Ordering::SeqCst);
                let exchange = Exchange {
                    stream,
                    index,
                    received: Arc::clone(&seen),
                };
                let script = Arc::clone(&script);
                std::thread::spawn(move || script(exchange));
            }
        });
        FakeServer {
            addr,
            received,
            connections,
            stop,
            thread: Some(thread),
        }
    }

    pub fn address(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
