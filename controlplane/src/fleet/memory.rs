//! The in-process [`super::Fleet`]: one server's own announcement, in a map.

use std::collections::HashMap;
use std::sync::Mutex;

use super::Announcement;

/// Announcements in memory.
#[derive(Default)]
pub struct MemoryFleet {
    servers: Mutex<HashMap<String, Announcement>>,
}

impl MemoryFleet {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, Announcement>) -> R) -> R {
        f(&mut self.servers.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub(super) fn announce(&self, a: &Announcement) {
        self.with(|m| m.insert(a.id.clone(), a.clone()));
    }

    pub(super) fn all(&self) -> Vec<Announcement> {
        self.with(|m| m.values().cloned().collect())
    }

    pub(super) fn sweep(&self, before_ms: u64) -> u64 {
        self.with(|m| {
            let n = m.len();
            m.retain(|_, a| a.until_ms >= before_ms);
            (n - m.len()) as u64
        })
    }
}
