//! A verdict's byte limit on one core: the key's tunnels here share a token bucket
//! (a burst of one second's worth), paid into before each chunk goes on.

use std::time::{Duration, Instant};

use super::Account;

impl Account {
    /// Limits this core's tunnels of the key to `bytes_per_sec` until `until_unix_ms`
    /// (`None`: no limit). A burst of one second's worth is allowed.
    pub(crate) fn set_pace(&self, limit: Option<(f64, u64)>) {
        if self.pace.get().is_none() {
            let rate = limit.map_or(0.0, |(r, _)| r);
            self.bucket.set((rate, Instant::now()));
        }
        self.pace.set(limit);
    }

    /// Waits as long as `n` more bytes need under the pace, if one is in force.
    pub(super) async fn keep_pace(&self, n: usize) {
        let Some((rate, until)) = self.pace.get() else {
            return;
        };
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        if now_ms >= until || rate <= 0.0 {
            self.pace.set(None);
            return;
        }
        let (tokens, last) = self.bucket.get();
        let now = Instant::now();
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * rate).min(rate) - n as f64;
        self.bucket.set((tokens, now));
        if tokens < 0.0 {
            monoio::time::sleep(Duration::from_secs_f64(-tokens / rate)).await;
        }
    }
}
