//! Bulk download with curl: direct, through SOCKS5 (`socks5h`), and through HTTP
//! CONNECT, interleaved run by run; the median of each path is reported.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use crate::net::Network;
use crate::target::serve_body;
use crate::topology::Topology;

/// One row of the result table.
#[derive(Debug, Clone)]
pub struct Row {
    /// Path name.
    pub path: &'static str,
    /// Median throughput, MiB/s.
    pub mib_s: f64,
    /// Relay CPU (server + node) per GB, seconds; `None` for direct.
    pub cpu_s_per_gb: Option<f64>,
}

fn curl_download(url: &str, proxy: Option<(&str, bool)>) -> Result<(f64, u64)> {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{speed_download} %{size_download}",
    ]);
    if let Some((proxy, tunnel)) = proxy {
        cmd.args(["-x", proxy]);
        if tunnel {
            cmd.arg("--proxytunnel");
        }
    }
    let out = cmd.arg(url).output().context("run curl")?;
    if !out.status.success() {
        bail!("curl failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace();
    let speed: f64 = it.next().context("speed")?.parse()?;
    let size: u64 = it.next().context("size")?.parse()?;
    Ok((speed, size))
}

/// The median of `v` (the upper one for an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs the download comparison; curl runs on the entry side, the body server on the
/// exit side of `topology`.
///
/// # Errors
/// When a process cannot start or a download fails or is short.
pub fn run(
    bin_dir: &Path,
    size_mb: usize,
    runs: usize,
    cores: usize,
    topology: &Topology,
) -> Result<Vec<Row>> {
    let size = size_mb << 20;
    let body: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    let target = serve_body(topology, Arc::new(body))?;
    let net = Network::start(bin_dir, cores, topology)?;
    let url = format!("http://{target}/blob");
    let socks = format!("socks5h://bench:{}@{}", net.key, net.socks);
    let http = format!("http://bench:{}@{}", net.key, net.http);
    let paths: [(&'static str, Option<(&str, bool)>); 3] = [
        ("direct", None),
        ("turbo socks5h", Some((&socks, false))),
        ("turbo http connect", Some((&http, true))),
    ];
    let mut speeds = vec![Vec::new(); paths.len()];
    let mut cpu = vec![0.0f64; paths.len()];
    let mut bytes = vec![0u64; paths.len()];
    for _ in 0..runs {
        for (i, (_, proxy)) in paths.iter().enumerate() {
            let before = net.cpu_seconds();
            let (speed, got) = curl_download(&url, *proxy)?;
            if got != size as u64 {
                bail!("short download: {got} of {size} bytes");
            }
            cpu[i] += net.cpu_seconds() - before;
            bytes[i] += got;
            speeds[i].push(speed / f64::from(1 << 20));
        }
    }
    Ok(paths
        .iter()
        .enumerate()
        .map(|(i, (name, proxy))| Row {
            path: name,
            mib_s: median(speeds[i].clone()),
            cpu_s_per_gb: proxy.map(|_| cpu[i] / (bytes[i] as f64 / 1e9)),
        })
        .collect())
}

/// Renders rows as a markdown table with ratios to the first (direct) row.
pub fn table(rows: &[Row]) -> String {
    let base = rows.first().map_or(1.0, |r| r.mib_s);
    let mut out =
        String::from("| path | MiB/s (median) | vs direct | relay CPU s/GB |\n|---|---|---|---|\n");
    for r in rows {
        let cpu = r.cpu_s_per_gb.map_or("—".to_owned(), |c| format!("{c:.2}"));
        out.push_str(&format!(
            "| {} | {:.0} | {:.2}× | {} |\n",
            r.path,
            r.mib_s,
            r.mib_s / base,
            cpu
        ));
    }
    out
}
