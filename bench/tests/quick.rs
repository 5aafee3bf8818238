//! The harness's quick mode on the workspace's debug binaries: every workload
//! completes through every installed path, with sane figures (non-zero, bytes received
//! equal to bytes sent — the workloads check that themselves), on loopback and, as root,
//! across a veth pair. No timing threshold.

#[test]
fn quick_suite_completes_with_sane_figures() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cfg = turbo_bench::suite::Config::quick(root.join("target/debug"));
    let out = tempfile::tempdir().expect("dir");
    let report = turbo_bench::suite::run_and_report(&cfg, out.path()).expect("suite");
    assert!(report.peers.contains(&"direct") && report.peers.contains(&"turbo"));
    assert!(out.path().join("report.json").exists());
    assert!(!report.rows.is_empty());
    for row in &report.rows {
        for peer in &report.peers {
            let applies = *peer != "direct"
                || !(row.metric.contains("CPU") || row.workload.starts_with("idle tunnels"));
            // microsocks is one process: it has no exit-side row, nor a split of its CPU.
            let turbo_only = row.workload.starts_with("node fan-in");
            if !applies
                || (*peer == "microsocks"
                    && (row.metric.contains("exit") || row.metric.starts_with("entry")))
                || (turbo_only && *peer != "turbo")
            {
                continue;
            }
            let v = row.values.get(peer).copied();
            // CPU comes in 10 ms ticks and a quick run may take less; RSS may even
            // shrink. Throughput, rates and latencies must be positive.
            let coarse = row.metric.contains("CPU") || row.workload.starts_with("idle tunnels");
            assert!(
                v.is_some_and(|v| v.is_finite()
                    && (v > 0.0 || (coarse && v >= 0.0) || row.workload.starts_with("idle"))),
                "{peer}: {} / {} = {v:?}",
                row.workload,
                row.metric
            );
        }
    }
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
    assert!(report.peers.contains(&"direct") && report.peers.contains(&"turbo"));
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
