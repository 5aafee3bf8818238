//! Authentication latency: the time from TCP connect to the SOCKS5 auth reply, with a
//! cold cache (a key no core has seen, so the core asks the control plane, which asks
//! the store) and a warm one (a key the core answered before), on the memory store and
//! on Redis.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Result};
use hdrhistogram::Histogram;

use crate::net::Network;
use crate::topology::Topology;

/// Latency of one kind of authentication.
pub struct Row {
    /// `memory` or `redis`.
    pub store: &'static str,
    /// `cold` or `warm`.
    pub cache: &'static str,
    /// Samples.
    pub samples: u64,
    /// Median, microseconds.
    pub p50_us: u64,
    /// 99th percentile, microseconds.
    pub p99_us: u64,
}

/// One SOCKS5 greeting + username/password exchange; returns its duration.
fn authenticate(proxy: &str, key: &str) -> Result<std::time::Duration> {
    let started = Instant::now();
    let mut s = TcpStream::connect(proxy)?;
    s.set_nodelay(true)?;
    s.write_all(&[5, 1, 2])?;
    let mut m = [0u8; 2];
    s.read_exact(&mut m)?;
    let mut auth = vec![1, 5];
    auth.extend_from_slice(b"bench");
    auth.push(key.len() as u8);
    auth.extend_from_slice(key.as_bytes());
    s.write_all(&auth)?;
    let mut st = [0u8; 2];
    s.read_exact(&mut st)?;
    let took = started.elapsed();
    if st[1] != 0 {
        bail!("authentication refused ({})", st[1]);
    }
    Ok(took)
}

fn row(store: &'static str, cache: &'static str, h: &Histogram<u64>) -> Row {
    Row {
        store,
        cache,
        samples: h.len(),
        p50_us: h.value_at_quantile(0.5),
        p99_us: h.value_at_quantile(0.99),
    }
}

/// Measures `samples` cold and warm authentications on each store.
///
/// # Errors
/// When a process does not start or an authentication fails.
pub fn run(bin_dir: &Path, samples: usize, cores: usize, topology: &Topology) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (store, redis) in [("memory", false), ("redis", true)] {
        let net = Network::start_on(bin_dir, cores, redis, topology)?;
        let keys: Vec<String> = (0..samples)
            .map(|_| net.create_key("1GB"))
            .collect::<Result<_>>()?;
        let mut cold = Histogram::<u64>::new(3)?;
        for key in &keys {
            cold.record(authenticate(&net.socks, key)?.as_micros() as u64)?;
        }
        let mut warm = Histogram::<u64>::new(3)?;
        // Two rounds first so every core has answered the key once.
        for _ in 0..cores * 4 {
            authenticate(&net.socks, &net.key)?;
        }
        for _ in 0..samples {
            warm.record(authenticate(&net.socks, &net.key)?.as_micros() as u64)?;
        }
        rows.push(row(store, "cold", &cold));
        rows.push(row(store, "warm", &warm));
    }
    Ok(rows)
}

/// A markdown table of `rows`.
pub fn table(rows: &[Row]) -> String {
    let mut out =
        String::from("| store | cache | samples | p50 | p99 |\n|---|---|---:|---:|---:|\n");
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} µs | {} µs |\n",
            r.store, r.cache, r.samples, r.p50_us, r.p99_us
        ));
    }
    out
}
