//! Reading a process's CPU time and memory from `/proc`, at a resolution the figures
//! can trust.
//!
//! CPU comes from the process's CPU clock (`clock_getcpuclockid` + `clock_gettime`:
//! the kernel's nanosecond `sum_exec_runtime` over every thread, exited ones
//! included — microsocks runs a thread per connection, and a per-thread sum loses
//! each one's time when it exits), else from `/proc/PID/task/*/schedstat` (the same
//! nanoseconds, per live thread, summed), else from `utime + stime` ticks in
//! `/proc/PID/stat`. A CPU difference below [`Cpu::floor_ns`]
//! (many times the source's resolution) is not a figure: callers report it as "too
//! short to measure".
//!
//! Memory comes from `VmRSS` in `/proc/PID/status` and `Pss` in
//! `/proc/PID/smaps_rollup`. [`settle`] waits, in a bounded loop, until the RSS stops
//! moving, so a per-item cost is a difference of two steady states.

use std::time::{Duration, Instant};

/// Where a CPU reading came from.
/// Ordered from finest to coarsest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum CpuSource {
    /// The process CPU clock, nanoseconds, every thread that ever ran.
    ProcessClock,
    /// `/proc/PID/task/*/schedstat`, nanoseconds, live threads only.
    Schedstat,
    /// `/proc/PID/stat` `utime + stime`, clock ticks (10 ms at 100 Hz).
    Ticks,
}

/// CPU time a set of processes has used so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Cpu {
    /// Nanoseconds on CPU.
    pub ns: u64,
    /// The coarsest source among the processes read.
    pub source: CpuSource,
}

impl Cpu {
    /// Nothing used yet, at the finest source.
    pub const ZERO: Cpu = Cpu {
        ns: 0,
        source: CpuSource::ProcessClock,
    };

    /// The smallest difference reported as a figure: 20 ms for the nanosecond sources
    /// (schedstat lags a running thread by at most one scheduler tick, 1–4 ms), 100
    /// ticks (1 s) for `/proc/PID/stat`.
    pub fn floor_ns(self) -> u64 {
        match self.source {
            CpuSource::ProcessClock | CpuSource::Schedstat => 20_000_000,
            CpuSource::Ticks => 100 * tick_ns(),
        }
    }

    /// The sum of two readings (of different processes), at the coarser source.
    pub fn plus(self, other: Cpu) -> Cpu {
        Cpu {
            ns: self.ns + other.ns,
            source: self.source.max(other.source),
        }
    }

    /// CPU used between `earlier` and this reading.
    pub fn since(self, earlier: Cpu) -> Cpu {
        Cpu {
            ns: self.ns.saturating_sub(earlier.ns),
            ..self.plus(earlier)
        }
    }
}

fn tick_ns() -> u64 {
    // SAFETY: sysconf reads a constant; no memory is passed.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    1_000_000_000 / if hz > 0 { hz as u64 } else { 100 }
}

/// CPU used so far by every thread of `pid` (zero where nothing can be read).
pub fn cpu(pid: u32) -> Cpu {
    if let Some(ns) = process_clock(pid) {
        return Cpu {
            ns,
            source: CpuSource::ProcessClock,
        };
    }
    schedstat(pid).map_or_else(
        || Cpu {
            ns: ticks(pid) * tick_ns(),
            source: CpuSource::Ticks,
        },
        |ns| Cpu {
            ns,
            source: CpuSource::Schedstat,
        },
    )
}

/// `pid`'s CPU clock, nanoseconds.
fn process_clock(pid: u32) -> Option<u64> {
    let mut clock: libc::clockid_t = 0;
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: both calls write only into the valid locals passed to them.
    let ok = unsafe {
        libc::clock_getcpuclockid(libc::pid_t::try_from(pid).ok()?, &mut clock) == 0
            && libc::clock_gettime(clock, &mut ts) == 0
    };
    ok.then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// The sum over `/proc/PID/task/*/schedstat` of the first field.
fn schedstat(pid: u32) -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let path = task.ok()?.path().join("schedstat");
        // A thread that exits between the listing and the read simply drops out.
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// utime + stime of `pid`, clock ticks.
fn ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the parenthesised command name; utime and stime are 14th and 15th.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    [11, 12]
        .iter()
        .filter_map(|i| f.get(*i)?.parse::<u64>().ok())
        .sum()
}

/// One memory reading of a process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Mem {
    /// Resident set size, bytes.
    pub rss: u64,
    /// Proportional set size, bytes (shared pages split among their users); `None`
    /// where `smaps_rollup` cannot be read.
    pub pss: Option<u64>,
}

/// `VmRSS` and `Pss` of `pid` (RSS 0 where /proc is unavailable).
pub fn mem(pid: u32) -> Mem {
    let field = |file: &str, name: &str| -> Option<u64> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
        let line = text.lines().find(|l| l.starts_with(name))?;
        Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
    };
    Mem {
        rss: field("status", "VmRSS:").unwrap_or(0),
        pss: field("smaps_rollup", "Pss:"),
    }
}

/// A steady-state memory reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Settled {
    /// The last reading.
    pub mem: Mem,
    /// Whether the RSS held still (within [`STILL_BYTES`]) over the last readings.
    pub stable: bool,
    /// Spread of RSS over the readings that count, bytes.
    pub wobble: u64,
}

/// RSS readings within this many bytes of each other count as still.
pub const STILL_BYTES: u64 = 64 << 10;

/// Reads `pid`'s memory every 100 ms until four readings in a row lie within
/// [`STILL_BYTES`] of each other, or three seconds pass (then `stable` is false).
/// This is the one wait in the harness that is not a synchronisation: memory has no
/// event to wait for.
pub fn settle(pid: u32) -> Settled {
    const STEP: Duration = Duration::from_millis(100);
    const WINDOW: usize = 4;
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut seen = vec![mem(pid)];
    loop {
        let last = &seen[seen.len().saturating_sub(WINDOW)..];
        let lo = last.iter().map(|m| m.rss).min().unwrap_or(0);
        let hi = last.iter().map(|m| m.rss).max().unwrap_or(0);
        let full = last.len() == WINDOW;
        if (full && hi - lo <= STILL_BYTES) || Instant::now() >= deadline {
            return Settled {
                mem: *seen.last().expect("one reading at least"),
                stable: full && hi - lo <= STILL_BYTES,
                wobble: hi - lo,
            };
        }
        std::thread::sleep(STEP);
        seen.push(mem(pid));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_is_read_in_nanoseconds_and_grows() {
        let a = cpu(std::process::id());
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let b = cpu(std::process::id());
        assert_eq!(b.source, CpuSource::ProcessClock);
        assert!(b.since(a).ns > 0);
        let pid = std::process::id();
        let (clock, stat) = (process_clock(pid), schedstat(pid));
        assert!(clock.zip(stat).is_some_and(|(c, s)| c + 1_000_000_000 >= s));
    }

    #[test]
    fn exited_threads_still_count() {
        let before = cpu(std::process::id());
        std::thread::spawn(|| {
            let t = std::time::Instant::now();
            while t.elapsed() < Duration::from_millis(60) {
                std::hint::black_box(0u64);
            }
        })
        .join()
        .expect("spin");
        let used = cpu(std::process::id()).since(before);
        assert!(used.ns >= 40_000_000, "{used:?}");
    }

    #[test]
    fn own_memory_settles() {
        let s = settle(std::process::id());
        assert!(s.mem.rss > 0);
        assert!(s.stable, "{s:?}");
    }
}
