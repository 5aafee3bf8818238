//! The workloads, each run against one [`Peer`]: bulk transfer, connection rate,
//! latency under open-loop load, and idle tunnels. Every byte sent is checked against
//! the bytes received; failures are counted, never hidden.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use hdrhistogram::Histogram;

use crate::figure::{per_item, Sample};
use crate::measure::{self, Cpu};
use crate::peers::{Peer, Role};
use crate::target::{pattern, PATTERN_LEN};
use crate::topology::Topology;

/// Direction of a bulk transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Direction {
    /// Target to client.
    Download,
    /// Client to target.
    Upload,
}

/// Result of a bulk transfer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Bulk {
    /// Bytes moved (checked end to end).
    pub bytes: u64,
    /// Throughput, MiB/s.
    pub mib_s: f64,
    /// CPU used by the relaying processes during the run (none for direct).
    pub cpu: Cpu,
    /// Of that, the entry process's (Turbo's server, sslocal).
    pub entry_cpu: Cpu,
    /// Of that, the exit process's (Turbo's node, ssserver).
    pub exit_cpu: Cpu,
}

impl Bulk {
    /// Relay CPU seconds per GB moved, or why it is too short to measure.
    pub fn cpu_per_gb(&self) -> Sample {
        crate::figure::cpu_per_gb(self.cpu, self.bytes)
    }

    /// The entry process's CPU seconds per GB.
    pub fn entry_cpu_per_gb(&self) -> Sample {
        crate::figure::cpu_per_gb(self.entry_cpu, self.bytes)
    }

    /// The exit process's CPU seconds per GB.
    pub fn exit_cpu_per_gb(&self) -> Sample {
        crate::figure::cpu_per_gb(self.exit_cpu, self.bytes)
    }
}

/// Moves `total` bytes over `conns` parallel connections in `dir`.
///
/// # Errors
/// A failed connection or a byte count that does not match.
pub fn bulk(
    peer: &Peer,
    source: SocketAddr,
    sink: SocketAddr,
    dir: Direction,
    conns: usize,
    total: u64,
) -> Result<Bulk> {
    let per_conn = total / conns as u64;
    let (entry0, exit0) = (peer.cpu_of(Role::Entry), peer.cpu_of(Role::Exit));
    let started = Instant::now();
    let moved: Vec<Result<u64>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..conns)
            .map(|_| {
                s.spawn(move || match dir {
                    Direction::Download => download(peer, source, per_conn),
                    Direction::Upload => upload(peer, sink, per_conn),
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bulk thread"))
            .collect()
    });
    let secs = started.elapsed().as_secs_f64();
    let entry_cpu = peer.cpu_of(Role::Entry).since(entry0);
    let exit_cpu = peer.cpu_of(Role::Exit).since(exit0);
    let mut bytes = 0;
    for m in moved {
        bytes += m?;
    }
    ensure!(
        bytes == per_conn * conns as u64,
        "moved {bytes} of {}",
        per_conn * conns as u64
    );
    Ok(Bulk {
        bytes,
        mib_s: bytes as f64 / secs / (1 << 20) as f64,
        cpu: entry_cpu.plus(exit_cpu),
        entry_cpu,
        exit_cpu,
    })
}

fn download(peer: &Peer, source: SocketAddr, n: u64) -> Result<u64> {
    let mut s = peer.connect(source).context("connect")?;
    s.write_all(&n.to_le_bytes())?;
    let expect = pattern();
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    loop {
        let k = s.read(&mut buf)?;
        if k == 0 {
            break;
        }
        // Spot-check content: the first byte of each read against the pattern.
        ensure!(
            buf[0] == expect[(got % PATTERN_LEN as u64) as usize],
            "corrupted stream at {got}"
        );
        got += k as u64;
    }
    ensure!(got == n, "downloaded {got} of {n}");
    Ok(got)
}

fn upload(peer: &Peer, sink: SocketAddr, n: u64) -> Result<u64> {
    let mut s = peer.connect(sink).context("connect")?;
    s.write_all(&n.to_le_bytes())?;
    let chunk = vec![0x5au8; 256 * 1024];
    let mut left = n;
    while left > 0 {
        let k = left.min(chunk.len() as u64) as usize;
        s.write_all(&chunk[..k])?;
        left -= k as u64;
    }
    let mut count = [0u8; 8];
    s.read_exact(&mut count)?;
    let got = u64::from_le_bytes(count);
    ensure!(got == n, "target received {got} of {n}");
    Ok(got)
}

/// Latency percentiles, microseconds.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 99th.
    pub p99: u64,
    /// 99.9th.
    pub p999: u64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Self {
        Percentiles {
            p50: h.value_at_quantile(0.5),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
        }
    }
}

/// Result of a connection-rate or latency run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rate {
    /// Completed connections per second.
    pub conns_per_s: f64,
    /// Completed connections.
    pub completed: u64,
    /// Failed connections.
    pub failed: u64,
    /// Time to the echoed first byte (closed loop) or request latency from its
    /// scheduled start (open loop).
    pub latency_us: Percentiles,
    /// The latency distribution: (quantile, µs) points for a CDF plot.
    pub cdf: Vec<(f64, u64)>,
}

impl Rate {
    /// The figures of a run that started at `started`, with its merged histogram.
    fn from_run(started: Instant, h: &Histogram<u64>, failed: u64) -> Self {
        Rate {
            conns_per_s: h.len() as f64 / started.elapsed().as_secs_f64(),
            completed: h.len(),
            failed,
            latency_us: Percentiles::of(h),
            cdf: cdf_points(h),
        }
    }
}

/// (quantile, value) points from 1% to 99.99%.
fn cdf_points(h: &Histogram<u64>) -> Vec<(f64, u64)> {
    (1..100)
        .map(|i| f64::from(i) / 100.0)
        .chain([0.995, 0.999, 0.9999])
        .map(|q| (q, h.value_at_quantile(q)))
        .collect()
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

/// One request: connect (with the SOCKS5 handshake), send 64 bytes, read them back,
/// close. Returns the time to the first echoed byte.
fn echo_once(peer: &Peer, echo: SocketAddr) -> Result<Duration> {
    let started = Instant::now();
    let mut s = peer.connect(echo)?;
    let msg = [0x42u8; 64];
    s.write_all(&msg)?;
    let mut back = [0u8; 64];
    s.read_exact(&mut back[..1])?;
    let ttfb = started.elapsed();
    s.read_exact(&mut back[1..])?;
    ensure!(back == msg, "echo mismatch");
    Ok(ttfb)
}

/// Closed loop: `concurrency` clients repeat [`echo_once`] for `duration`.
///
/// # Errors
/// Never for failed requests (they are counted); only for harness faults.
pub fn conn_rate(
    peer: &Peer,
    echo: SocketAddr,
    concurrency: usize,
    duration: Duration,
) -> Result<Rate> {
    let stop = AtomicBool::new(false);
    let failed = AtomicU64::new(0);
    let total = Mutex::new(histogram());
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..concurrency {
            s.spawn(|| {
                let mut h = histogram();
                while !stop.load(Ordering::Relaxed) {
                    match echo_once(peer, echo) {
                        Ok(t) => h.saturating_record(t.as_micros() as u64),
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                total.lock().expect("lock").add(&h).expect("same bounds");
            });
        }
        std::thread::sleep(duration);
        stop.store(true, Ordering::Relaxed);
    });
    Ok(Rate::from_run(
        started,
        &total.into_inner().expect("lock"),
        failed.into_inner(),
    ))
}

/// Open loop: requests start on a fixed schedule of `rate` per second for
/// `duration`, whatever the previous ones did; each latency counts from its scheduled
/// start (no coordinated omission).
///
/// # Errors
/// Only for harness faults.
pub fn open_loop(
    peer: &Peer,
    echo: SocketAddr,
    rate: f64,
    duration: Duration,
    workers: usize,
) -> Result<Rate> {
    let n = (rate * duration.as_secs_f64()).max(1.0) as u64;
    let next = AtomicU64::new(0);
    let failed = AtomicU64::new(0);
    let total = Mutex::new(histogram());
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                let mut h = histogram();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let due = started + Duration::from_secs_f64(i as f64 / rate);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    match echo_once(peer, echo) {
                        Ok(_) => h.saturating_record(due.elapsed().as_micros() as u64),
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                total.lock().expect("lock").add(&h).expect("same bounds");
            });
        }
    });
    Ok(Rate::from_run(
        started,
        &total.into_inner().expect("lock"),
        failed.into_inner(),
    ))
}

/// Result of the idle-tunnel workload.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Idle {
    /// Tunnels opened and held.
    pub tunnels: usize,
    /// RSS growth per tunnel per relaying process: a difference of steady states,
    /// or why there is none.
    pub rss_per_tunnel: Vec<(Role, Sample)>,
}

impl Idle {
    /// The growth per tunnel over every relaying process: the sum, or the first
    /// reason one of them has no figure.
    pub fn total(&self) -> Sample {
        let mut sum = 0.0;
        for (_, s) in &self.rss_per_tunnel {
            match s {
                Sample::Value(v) => sum += v,
                Sample::Unmeasured(why) => return Sample::Unmeasured(why.clone()),
            }
        }
        Sample::Value(sum)
    }
}

/// Opens `n` tunnels to a holding target on `net`'s exit side, keeps them all open, and
/// reads each relaying process's RSS growth between two steady states: settled before
/// the first tunnel, and settled again while all `n` are still held.
///
/// # Errors
/// A tunnel that cannot be opened, or the target not seeing all of them.
pub fn idle_tunnels(peer: &Peer, net: &Topology, n: usize) -> Result<Idle> {
    let (hold, held) = crate::target::hold(net)?;
    let pids = peer.pids();
    let before: Vec<_> = pids.iter().map(|(_, p)| measure::settle(*p)).collect();
    let mut tunnels = Vec::with_capacity(n);
    for i in 0..n {
        tunnels.push(peer.connect(hold).with_context(|| format!("tunnel {i}"))?);
    }
    crate::net::wait_for("the target to hold every tunnel", || {
        (held.lock().ok()?.len() == n).then_some(())
    })?;
    let rss_per_tunnel = pids
        .iter()
        .zip(before)
        .map(|((r, p), b)| (*r, per_item(b, measure::settle(*p), n)))
        .collect();
    drop(tunnels);
    held.lock().expect("lock").clear();
    Ok(Idle {
        tunnels: n,
        rss_per_tunnel,
    })
}
