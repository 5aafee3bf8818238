//! What this node relayed today and this month (UTC), kept across restarts in the
//! state directory, and the runner's monthly data cap.

use std::cell::Cell;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A UTC calendar day: (year, month 1-12, day 1-31).
pub type Day = (i64, u32, u32);

/// The UTC calendar day `unix_secs` falls on.
pub fn day_of(unix_secs: u64) -> Day {
    // Days since 1970-01-01 to a proleptic Gregorian date (era-based conversion).
    let z = (unix_secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn today() -> Day {
    day_of(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    )
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Saved {
    day: (i64, u32, u32),
    today: u64,
    month: u64,
}

/// Byte counters by day and month.
#[derive(Debug)]
pub struct Usage {
    path: Option<PathBuf>,
    day: Cell<Day>,
    today: Cell<u64>,
    month: Cell<u64>,
    cap: Option<u64>,
}

impl Usage {
    /// Counters saved at `path` (if any, and if still this month), with a monthly cap.
    pub fn load(path: Option<PathBuf>, cap: Option<u64>) -> Self {
        let saved: Saved = path
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let u = Usage {
            path,
            day: Cell::new(saved.day),
            today: Cell::new(saved.today),
            month: Cell::new(saved.month),
            cap,
        };
        u.roll(today());
        u
    }

    fn roll(&self, now: Day) {
        let was = self.day.get();
        if (was.0, was.1) != (now.0, now.1) {
            self.month.set(0);
        }
        if was != now {
            self.today.set(0);
            self.day.set(now);
        }
    }

    /// Counts `n` relayed bytes.
    pub fn add(&self, n: u64) {
        self.roll(today());
        self.today.set(self.today.get() + n);
        self.month.set(self.month.get() + n);
    }

    /// Bytes today and this month.
    pub fn totals(&self) -> (u64, u64) {
        self.roll(today());
        (self.today.get(), self.month.get())
    }

    /// The monthly cap, if any.
    pub fn cap(&self) -> Option<u64> {
        self.cap
    }

    /// Whether this month's bytes reached the cap.
    pub fn capped(&self) -> bool {
        self.cap.is_some_and(|c| self.totals().1 >= c)
    }

    /// Writes the counters (owner-only) to the state file.
    pub fn save(&self) {
        let Some(path) = &self.path else { return };
        let saved = Saved {
            day: self.day.get(),
            today: self.today.get(),
            month: self.month.get(),
        };
        if let Ok(text) = serde_json::to_string(&saved) {
            let _ = crate::files::write_private(path, text.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar() {
        assert_eq!(day_of(0), (1970, 1, 1));
        assert_eq!(day_of(951_782_400), (2000, 2, 29));
        assert_eq!(day_of(1_795_564_800), (2026, 11, 25));
        assert_eq!(day_of(1_798_761_599), (2026, 12, 31));
        assert_eq!(day_of(1_798_761_600), (2027, 1, 1));
    }

    #[test]
    fn counts_caps_and_persists() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("usage.json");
        let u = Usage::load(Some(path.clone()), Some(1000));
        u.add(600);
        assert!(!u.capped());
        u.add(400);
        assert!(u.capped());
        u.save();
        let again = Usage::load(Some(path), Some(2000));
        assert_eq!(again.totals(), (1000, 1000));
        assert!(!again.capped());
    }
}
