//! The overload manager: once a second it reads this process's resident memory and,
//! above the watermark, tells the data plane to refuse new customer connections (HTTP
//! 503 / SOCKS5 close, counted as `turbo_limit_hits_total{limit="memory"}`) while open
//! tunnels carry on. Below 90% of the watermark it accepts again. The default watermark
//! is 75% of the memory available to the process (the cgroup limit, else RAM).

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};
use turbo_dataplane::limits::Gate;

/// Resident set size of this process, bytes.
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

/// Memory this process may use: the cgroup v2 limit, else physical RAM.
fn memory_available() -> Option<u64> {
    if let Ok(max) = std::fs::read_to_string("/sys/fs/cgroup/memory.max") {
        if let Ok(v) = max.trim().parse::<u64>() {
            return Some(v);
        }
    }
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = info
        .lines()
        .find(|l| l.starts_with("MemTotal:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// The watermark for a configured value (0: the default).
pub fn watermark(configured: u64) -> Option<u64> {
    if configured > 0 {
        return Some(configured);
    }
    memory_available().map(|m| m / 4 * 3)
}

/// Watches memory until the runtime stops.
pub async fn watch(gate: Arc<Gate>, watermark: u64) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Some(rss) = rss_bytes() else { return };
        let over = gate.overloaded();
        if !over && rss > watermark {
            warn!(
                rss,
                watermark, "memory over the watermark: refusing new connections"
            );
            gate.set_overloaded(true);
        } else if over && rss < watermark / 10 * 9 {
            info!(
                rss,
                watermark, "memory back under the watermark: accepting again"
            );
            gate.set_overloaded(false);
        }
    }
}
