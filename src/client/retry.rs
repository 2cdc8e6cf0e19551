//! When the client tries again: the pause after a refused or lost connection.
//!
//! After ERROR BUSY the pause doubles with each refusal in a row, up to a cap,
//! less a random part of up to a half, so that a full server sees the refused
//! agencies come back a few at a time instead of all at once every interval (a
//! thousand agencies retrying every 100 ms overflowed a server's accept queue).

use std::time::{Duration, Instant};

/// How far the pause grows: the retry interval doubled at most this many times ...
const DOUBLINGS: u32 = 5;
/// ... and never past this (unless the retry interval itself is longer).
const PAUSE_CAP: Duration = Duration::from_secs(5);

/// The retry policy of one agency.
pub(crate) struct Backoff {
    interval: Duration,
    /// Refusals in a row since the last progress.
    refusals: u32,
    /// State of the xorshift generator that spreads the pauses.
    random: u64,
}

impl Backoff {
    /// A policy around `interval`, spread by `seed` (never 0 in effect).
    pub fn new(interval: Duration, seed: u64) -> Backoff {
        Backoff {
            interval,
            refusals: 0,
            random: seed | 1,
        }
    }

    /// The plain retry interval: between NO_WINNERS answers and connection attempts.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The pause after one more refusal (or loss) in a row.
    pub fn after_refusal(&mut self) -> Duration {
        self.refusals = self.refusals.saturating_add(1);
        // xorshift64: cheap, and enough to spread agencies apart.
        self.random ^= self.random << 13;
        self.random ^= self.random >> 7;
        self.random ^= self.random << 17;
        pause(self.interval, self.refusals, self.random)
    }

    /// Something worked: the next refusal starts from the plain interval again.
    pub fn reset(&mut self) {
        self.refusals = 0;
    }
}

/// The pause after the `refusals`-th refusal in a row, `random` choosing the
/// part taken off.
fn pause(interval: Duration, refusals: u32, random: u64) -> Duration {
    let doubled = interval.saturating_mul(1 << refusals.saturating_sub(1).min(DOUBLINGS));
    let pause = doubled.min(PAUSE_CAP.max(interval));
    pause.mul_f64(1.0 - 0.5 * (random % 1024) as f64 / 1024.0)
}

/// How often a long wait says that it is still waiting.
const WAIT_REPORT_EVERY: Duration = Duration::from_secs(5);

/// When to tell the user that a wait goes on: every `WAIT_REPORT_EVERY`.
pub(crate) struct WaitReport {
    started: Instant,
    next: Instant,
}

impl WaitReport {
    /// A wait starting now.
    pub fn start() -> WaitReport {
        let now = Instant::now();
        WaitReport {
            started: now,
            next: now + WAIT_REPORT_EVERY,
        }
    }

    /// How long the wait has lasted, when it is time to say so again.
    pub fn due(&mut self) -> Option<Duration> {
        let now = Instant::now();
        if now < self.next {
            return None;
        }
        self.next = now + WAIT_REPORT_EVERY;
        Some(now - self.started)
    }
}

/// A seed that differs between agencies started together: the process id and
/// the clock's nanoseconds.
pub(crate) fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    u64::from(std::process::id()) << 32 | u64::from(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_doubles_up_to_a_cap_and_is_spread() {
        let interval = Duration::from_millis(100);
        let full = |refusals| pause(interval, refusals, 0).as_millis();
        assert_eq!(
            [1, 2, 3, 4, 5, 6, 7, 100].map(full),
            [100, 200, 400, 800, 1600, 3200, 3200, 3200]
        );
        assert_eq!(pause(Duration::from_secs(1), 9, 0).as_millis(), 5000);
        assert_eq!(pause(Duration::from_secs(8), 9, 0).as_millis(), 8000);
        // The random part takes off up to (not quite) a half.
        assert_eq!(pause(interval, 1, 512).as_millis(), 75);
        assert_eq!(pause(interval, 1, 1023).as_millis(), 50);
        assert_eq!(pause(Duration::ZERO, 3, 7), Duration::ZERO);
    }

    #[test]
    fn progress_resets_the_growth() {
        let mut backoff = Backoff::new(Duration::from_millis(100), 42);
        let first = backoff.after_refusal();
        for _ in 0..5 {
            backoff.after_refusal();
        }
        assert!(backoff.after_refusal() > first);
        backoff.reset();
        assert!(backoff.after_refusal() <= Duration::from_millis(100));
    }
}
