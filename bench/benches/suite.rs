//! `cargo bench -p turbo-bench`: the standard load suite (every workload through direct
//! TCP, microsocks, shadowsocks-rust and Turbo) on release binaries. Build them first:
//! `cargo build --release --bins`; install the peers with `scripts/install-peers`.
//! `TURBO_BENCH_QUICK=1` runs the quick mode.

fn main() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let bins = root.join("target/release");
    let cfg = if std::env::var_os("TURBO_BENCH_QUICK").is_some() {
        turbo_bench::suite::Config::quick(bins)
    } else {
        turbo_bench::suite::Config::full(bins)
    };
    turbo_bench::suite::run_and_report(&cfg, &root.join("target/turbo-bench"))?;
    Ok(())
}
