//! SVG plots of a [`Report`]: throughput bars per bulk workload and path, and latency
//! CDFs per connection workload and path (plotters).

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use crate::suite::Report;

const COLORS: [RGBColor; 4] = [
    RGBColor(90, 90, 90),
    RGBColor(230, 159, 0),
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
];

fn color(report: &Report, peer: &str) -> RGBColor {
    let i = report.peers.iter().position(|p| *p == peer).unwrap_or(0);
    COLORS[i % COLORS.len()]
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("plot: {e:?}")
}

/// Grouped bars: MiB/s of every bulk workload, one bar per path.
///
/// # Errors
/// When the file cannot be written.
pub fn throughput(report: &Report, path: &Path) -> Result<()> {
    let rows: Vec<_> = report.rows.iter().filter(|r| r.metric == "MiB/s").collect();
    let max = rows
        .iter()
        .flat_map(|r| r.figures.values().filter_map(crate::figure::Figure::median))
        .fold(1.0f64, f64::max);
    let n = report.peers.len().max(1) as f64;
    let root = SVGBackend::new(path, (960, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Bulk throughput (MiB/s, median)", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..rows.len() as f64, 0f64..max * 1.1)
        .map_err(err)?;
    let labels: Vec<String> = rows
        .iter()
        .map(|r| r.workload.replace("bulk ", ""))
        .collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(rows.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - i as f64 - 0.5).abs() < 0.01 {
                labels.get(i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc("MiB/s")
        .draw()
        .map_err(err)?;
    for (j, peer) in report.peers.iter().enumerate() {
        let c = color(report, peer);
        let bars = rows.iter().enumerate().filter_map(|(i, r)| {
            let v = r.median(peer)?;
            let x0 = i as f64 + 0.1 + 0.8 * j as f64 / n;
            Some(Rectangle::new([(x0, 0.0), (x0 + 0.8 / n, v)], c.filled()))
        });
        chart
            .draw_series(bars)
            .map_err(err)?
            .label(*peer)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], c.filled()));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// One panel per connection workload: the latency CDF of every path, log-scaled time.
///
/// # Errors
/// When the file cannot be written.
pub fn latency_cdfs(report: &Report, path: &Path) -> Result<()> {
    let mut workloads: Vec<&str> = report.cdfs.iter().map(|(w, _, _)| w.as_str()).collect();
    workloads.dedup();
    let root =
        SVGBackend::new(path, (960, 360 * workloads.len().max(1) as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let panels = root.split_evenly((workloads.len().max(1), 1));
    for (panel, workload) in panels.iter().zip(&workloads) {
        let series: Vec<_> = report
            .cdfs
            .iter()
            .filter(|(w, _, _)| w == workload)
            .collect();
        let max = series
            .iter()
            .flat_map(|(_, _, pts)| pts.iter().map(|(_, v)| *v))
            .max()
            .unwrap_or(1)
            .max(10) as f64;
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("Latency CDF: {workload}"), ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d((1f64..max * 1.2).log_scale(), 0f64..1f64)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("µs")
            .y_desc("quantile")
            .draw()
            .map_err(err)?;
        for (_, peer, pts) in series {
            let c = color(report, peer);
            chart
                .draw_series(LineSeries::new(
                    pts.iter().map(|(q, v)| ((*v).max(1) as f64, *q)),
                    c.stroke_width(2),
                ))
                .map_err(err)?
                .label(*peer)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 15, y)], c.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)
}
