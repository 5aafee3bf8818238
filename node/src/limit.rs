//! The runner's bandwidth cap: a token bucket per direction, shared by every stream.
//! A take may go into debt; the taker then sleeps until the debt is repaid, so over
//! any window the bytes moved stay within `burst + rate × window`.

use std::cell::Cell;
use std::time::Duration;

use tokio::time::Instant;

/// One direction's bucket.
#[derive(Debug)]
pub struct RateLimit {
    rate: f64,
    burst: f64,
    tokens: Cell<f64>,
    last: Cell<Instant>,
}

impl RateLimit {
    /// A bucket of `bytes_per_sec`, with a burst of 50 ms worth (at least 16 KiB).
    pub fn new(bytes_per_sec: u64) -> Self {
        let rate = bytes_per_sec.max(1) as f64;
        let burst = (rate / 20.0).max(16.0 * 1024.0);
        RateLimit {
            rate,
            burst,
            tokens: Cell::new(burst),
            last: Cell::new(Instant::now()),
        }
    }

    /// Accounts for `n` bytes, waiting as long as the cap requires.
    pub async fn take(&self, n: usize) {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last.get()).as_secs_f64();
        self.last.set(now);
        let tokens = (self.tokens.get() + elapsed * self.rate).min(self.burst) - n as f64;
        self.tokens.set(tokens);
        if tokens < 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(-tokens / self.rate)).await;
        }
    }
}

/// Both directions' caps; `None` is unlimited.
#[derive(Debug, Default)]
pub struct Limits {
    /// Target -> server.
    pub down: Option<RateLimit>,
    /// Server -> target.
    pub up: Option<RateLimit>,
}

impl Limits {
    /// The same cap each way.
    pub fn symmetric(bytes_per_sec: Option<u64>) -> Self {
        Limits {
            down: bytes_per_sec.map(RateLimit::new),
            up: bytes_per_sec.map(RateLimit::new),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn holds_the_rate() {
        let limit = RateLimit::new(1_000_000);
        let started = Instant::now();
        for _ in 0..100 {
            limit.take(32 * 1024).await;
        }
        let secs = started.elapsed().as_secs_f64();
        let rate = 100.0 * 32.0 * 1024.0 / secs;
        assert!((rate - 1_000_000.0).abs() / 1_000_000.0 < 0.02, "{rate}");
    }
}
