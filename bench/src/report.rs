//! The suite's [`Report`]: rows of figures per path with every run kept, the
//! conditions they were measured under, and its renderings (markdown table,
//! `report.json`, SVG plots). A ratio against the best other proxy is computed only
//! from measured figures.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use crate::conditions::Conditions;
use crate::figure::{Figure, Sample};
use crate::net::Offload;
use crate::peers::PeerKind;
use crate::suite::Config;
use crate::veth::Wire;

/// Whether bigger is better for a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Better {
    /// Throughput, rates.
    Higher,
    /// Latency, CPU, memory.
    Lower,
}

/// One table row: a metric of one workload, every run and the summary per path.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    /// Workload name.
    pub workload: String,
    /// Metric and unit.
    pub metric: String,
    /// Direction of goodness.
    pub better: Better,
    /// Summary per path name (median with min–max, or why there is no figure);
    /// absent where the path was skipped or does not apply.
    pub figures: BTreeMap<&'static str, Figure>,
    /// Every run's sample per path.
    pub samples: BTreeMap<&'static str, Vec<Sample>>,
    /// Turbo against the best other proxy (above 1: Turbo is better); `None` when any
    /// of the figures it would come from is not measured.
    pub turbo_vs_best: Option<f64>,
}

impl Row {
    /// The median of `peer`'s runs, if every run was measured.
    pub fn median(&self, peer: &str) -> Option<f64> {
        self.figures.get(peer)?.median()
    }

    /// Summarises the samples and computes the ratio.
    pub(crate) fn finish(&mut self) {
        self.figures = self
            .samples
            .iter()
            .map(|(p, s)| (*p, Figure::of(s)))
            .collect();
        self.turbo_vs_best = self.vs_best();
    }

    /// Turbo's median against the best proxy peer's (microsocks, shadowsocks), as a
    /// goodness ratio. `None` unless Turbo and every proxy peer in the row is measured.
    fn vs_best(&self) -> Option<f64> {
        let turbo = self.median(PeerKind::Turbo.name())?;
        let mut best: Option<f64> = None;
        for k in [PeerKind::Microsocks, PeerKind::Shadowsocks] {
            let Some(f) = self.figures.get(k.name()) else {
                continue;
            };
            let v = f.median()?;
            best = Some(match (best, self.better) {
                (None, _) => v,
                (Some(b), Better::Higher) => b.max(v),
                (Some(b), Better::Lower) => b.min(v),
            });
        }
        let best = best?;
        let ratio = match self.better {
            Better::Higher => turbo / best,
            Better::Lower => best / turbo,
        };
        (ratio.is_finite() && ratio > 0.0).then_some(ratio)
    }
}

/// One latency distribution: workload, path, and (quantile, µs) points.
pub type Cdf = (String, &'static str, Vec<(f64, u64)>);

/// The suite's result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// The configuration.
    pub config: Config,
    /// The machine and its load before and during the run.
    pub conditions: Conditions,
    /// Paths that ran.
    pub peers: Vec<&'static str>,
    /// Skipped paths, with the command that installs them.
    pub skipped: Vec<(&'static str, String)>,
    /// The rows, in table order.
    pub rows: Vec<Row>,
    /// Latency distributions of the last run: (workload, path, (quantile, µs) points).
    pub cdfs: Vec<Cdf>,
    /// Frames on the veth link after the workloads (veth only).
    pub wire: Option<Wire>,
    /// Turbo's UDP offload counters after the workloads (before node fan-in).
    pub offload: Option<Offload>,
}

/// The lines under a result: which net, the frames on the link, Turbo's offload
/// counters.
pub(crate) fn notes(
    net: &crate::topology::Topology,
    wire: Option<Wire>,
    offload: Option<Offload>,
) -> String {
    let mut out = net.describe() + "\n";
    for line in [wire.map(|w| w.to_string()), offload.map(|o| o.to_string())] {
        out += &line.map_or(String::new(), |l| l + "\n");
    }
    out
}

impl Report {
    /// The markdown table: one column per path (median, then min–max of the runs),
    /// then Turbo against the best other proxy (ratio > 1 means Turbo is better).
    pub fn markdown(&self) -> String {
        let mut out = self.conditions.describe() + "\n\n| workload | metric |";
        for p in &self.peers {
            out += &format!(" {p} |");
        }
        out += " turbo vs best proxy |\n|---|---|";
        for _ in &self.peers {
            out += "---:|";
        }
        out += "---:|\n";
        for r in &self.rows {
            out += &format!("| {} | {} |", r.workload, r.metric);
            for p in &self.peers {
                out += &r
                    .figures
                    .get(p)
                    .map_or(" — |".into(), |f| format!(" {} |", f.cell()));
            }
            let ratio = r.turbo_vs_best.map_or("—".into(), |x| format!("{x:.2}×"));
            out += &format!(" {ratio} |\n");
        }
        out += "\nCells: median (min–max over the runs). CPU below its floor reads \
                'too short to measure' and a memory difference that is negative or \
                unsettled reads 'unstable'; report.json holds every run and the reasons.\n";
        for (p, why) in &self.skipped {
            out += &format!("\n{p}: skipped (not installed: {why})");
        }
        out + "\n" + &notes(&self.config.net, self.wire, self.offload)
    }
}

/// Runs the suite with a progress bar on stderr, prints the table, and writes
/// `report.json` and `report.md` under `out_dir`.
///
/// # Errors
/// As [`crate::suite::run`], or when the files cannot be written.
pub fn run_and_report(cfg: &Config, out_dir: &Path) -> Result<Report> {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(200));
    let report = crate::suite::run(cfg, &|step| bar.set_message(step.to_owned()))?;
    bar.finish_and_clear();
    let table = report.markdown();
    println!("{table}");
    std::fs::create_dir_all(out_dir)?;
    std::fs::write(
        out_dir.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    std::fs::write(out_dir.join("report.md"), &table)?;
    crate::plot::throughput(&report, &out_dir.join("throughput.svg"))?;
    crate::plot::latency_cdfs(&report, &out_dir.join("latency-cdf.svg"))?;
    eprintln!(
        "wrote {0}/report.{{json,md}}, {0}/throughput.svg, {0}/latency-cdf.svg",
        out_dir.display()
    );
    Ok(report)
}
