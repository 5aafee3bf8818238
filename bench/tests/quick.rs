//! The harness's quick mode on the workspace's debug binaries: every workload
//! completes through every installed path (bytes received equal to bytes sent — the
//! workloads check that themselves), on loopback and, as root, across a veth pair, and
//! the report obeys the sanity rules of [`assert_sane`]. No timing threshold.

use turbo_bench::figure::{Figure, Sample};
use turbo_bench::suite::Report;

/// Whether `peer` must have a figure in `row`: direct has no relay CPU nor relay
/// memory, microsocks is one process (no entry/exit split), fan-in is Turbo's alone.
fn applies(row: &turbo_bench::suite::Row, peer: &str) -> bool {
    let relay_only = row.metric.contains("CPU") || row.workload.starts_with("idle tunnels");
    let split = row.metric.contains("exit") || row.metric.starts_with("entry");
    let skip = (peer == "direct" && relay_only)
        || (peer == "microsocks" && split)
        || (row.workload.starts_with("node fan-in") && peer != "turbo");
    !skip
}

/// The sanity rules every report obeys, whatever the machine: every figure keeps its
/// runs and its spread; no measured value is zero, negative or not finite (memory per
/// item included); CPU without a value says it was too short to measure, memory
/// without one says it was unstable, and no ratio comes from a figure without a value.
fn assert_sane(report: &Report, dir: &std::path::Path) {
    let runs = report.config.runs;
    assert!(report.peers.contains(&"direct") && report.peers.contains(&"turbo"));
    assert!(!report.rows.is_empty());
    let c = &report.conditions;
    assert!(
        c.cores > 0 && !c.kernel.is_empty() && !c.load_during.is_empty(),
        "{c:?}"
    );
    for row in &report.rows {
        let what = format!("{} / {}", row.workload, row.metric);
        let once = row.workload.starts_with("idle") || row.workload.starts_with("node fan-in");
        for peer in report.peers.iter().filter(|p| applies(row, p)) {
            let samples = &row.samples[peer];
            assert_eq!(samples.len(), if once { 1 } else { runs }, "{peer}: {what}");
            for s in samples {
                if let Sample::Value(v) = s {
                    assert!(v.is_finite() && *v > 0.0, "{peer}: {what}: run {v}");
                }
            }
            match &row.figures[peer] {
                Figure::Measured {
                    median,
                    min,
                    max,
                    runs: n,
                } => {
                    assert!(
                        *min > 0.0 && min <= median && median <= max,
                        "{peer}: {what}"
                    );
                    assert_eq!(*n, samples.len());
                }
                Figure::Unmeasured { reason, .. } => {
                    let ok = (row.metric.contains("CPU")
                        && reason.starts_with("too short to measure"))
                        || (row.metric.starts_with("RSS") || row.metric.contains("RSS/node"))
                            && reason.starts_with("unstable");
                    assert!(ok, "{peer}: {what}: no figure: {reason}");
                }
            }
        }
        if let Some(x) = row.turbo_vs_best {
            assert!(x.is_finite() && x > 0.0, "{what}: ratio {x}");
            for p in ["turbo", "microsocks", "shadowsocks-rust"] {
                let f = row.figures.get(p);
                assert!(
                    f.is_none_or(|f| f.median().is_some()),
                    "{what}: a ratio from {p}'s {f:?}"
                );
            }
        }
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).expect("json"))
            .expect("report.json parses");
    assert!(json["conditions"]["cpu_model"].is_string());
    for row in json["rows"].as_array().expect("rows") {
        let samples = row["samples"].as_object().expect("samples");
        for (peer, runs) in samples {
            assert!(!runs.as_array().expect("runs").is_empty(), "{peer}: {row}");
            assert!(row["figures"][peer].is_object(), "{peer}: {row}");
        }
    }
    assert!(!report.markdown().contains("0.00×"));
}

#[test]
fn quick_suite_completes_with_sane_figures() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cfg = turbo_bench::suite::Config::quick(root.join("target/debug"));
    let out = tempfile::tempdir().expect("dir");
    let report = turbo_bench::suite::run_and_report(&cfg, out.path()).expect("suite");
    assert_sane(&report, out.path());
}

/// The quick suite across the veth pair (`--net veth`): every path still works across
/// the link, Turbo batches with GSO, and no frame on the link averages above the MTU
/// (the batches are cut before the link). Needs root, `ip` and `ethtool`: skipped
/// without them.
#[test]
fn quick_suite_over_veth_segments_batches() {
    let root_user = std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:\t0\t")));
    let tools = ["ip", "ethtool", "sysctl"]
        .iter()
        .all(|t| std::process::Command::new(t).arg("-V").output().is_ok());
    if !root_user || !tools {
        eprintln!("skipped: needs root, iproute2, ethtool and procps");
        return;
    }
    let veth = turbo_bench::veth::Veth::create().expect("veth pair");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cfg = turbo_bench::suite::Config::quick(root.join("target/debug"));
    cfg.net = veth.topology();
    let out = tempfile::tempdir().expect("dir");
    let report = turbo_bench::suite::run_and_report(&cfg, out.path()).expect("suite");
    assert_sane(&report, out.path());
    let wire = report.wire.expect("link counters");
    for (frames, bytes) in [
        (wire.to_exit_frames, wire.to_exit_bytes),
        (wire.to_entry_frames, wire.to_entry_bytes),
    ] {
        assert!(frames > 0 && bytes / frames <= 1514, "{wire:?}");
    }
    let offload = report.offload.expect("offload counters");
    assert!(offload.node_gso_segments > 0, "{offload:?}");
    assert_eq!(offload.node_fallbacks + offload.server_fallbacks, 0);
    drop(veth);
}
