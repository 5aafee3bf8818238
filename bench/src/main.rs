//! `turbo-bench`: runs Turbo's load workloads against release binaries, on loopback or
//! across a veth pair between two network namespaces (`--net veth`).

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use turbo_bench::topology::{NetKind, Topology};
use turbo_bench::veth::Veth;

#[derive(Parser)]
#[command(
    version,
    about = "Turbo load-testing harness (loopback or a veth pair)"
)]
struct Cli {
    /// Directory holding release `turbo-server` and `turbo-node`.
    #[arg(long, env = "TURBO_BENCH_BIN_DIR", default_value = "target/release")]
    bin_dir: PathBuf,
    /// Batched UDP (GSO/GRO) in Turbo's server and node: on or off.
    #[arg(long, value_parser = ["on", "off"], default_value = "on")]
    udp_offload: String,
    /// The network between the entry side (clients, Turbo's server, sslocal) and the
    /// exit side (Turbo's node, ssserver, targets). `loopback`: one namespace,
    /// 127.0.0.1, where GSO super-packets cross unsegmented. `veth`: two network
    /// namespaces joined by a veth pair with MTU 1500, segmentation offloads off and GRO
    /// on, so batches are cut into wire-sized frames (needs root, iproute2, ethtool, procps).
    #[arg(long, value_enum, env = "TURBO_BENCH_NET", default_value = "loopback")]
    net: NetKind,
    #[command(subcommand)]
    cmd: Cmd,
}

/// `turbo-bench detect` options.
#[derive(clap::Args)]
struct DetectArgs {
    /// Window length, seconds.
    #[arg(long, default_value_t = 2)]
    window_secs: u64,
    /// Warm-up windows (normal traffic only; the model trains on them).
    #[arg(long, default_value_t = 8)]
    warmup: u32,
    /// Windows of abuse.
    #[arg(long, default_value_t = 4)]
    attack: u32,
    /// Run the server on a private Redis instead of the memory store.
    #[arg(long)]
    redis: bool,
    /// Turn the hard rules off: the model alone judges.
    #[arg(long)]
    model_only: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// The standard suite: every workload through every available path.
    Suite {
        /// Small and fast: every workload once, for CI.
        #[arg(long)]
        quick: bool,
        /// Runs per workload and path (median reported).
        #[arg(long)]
        runs: Option<usize>,
        /// Where report.json and report.md go.
        #[arg(long, default_value = "target/turbo-bench")]
        out: PathBuf,
        /// Refuse to start when the load average is above half the cores or a build
        /// or another bench is running (by default: a loud warning, kept in the
        /// report).
        #[arg(long, env = "TURBO_BENCH_REFUSE_BUSY")]
        refuse_busy: bool,
    },
    /// Bulk download with curl: direct vs SOCKS5 vs HTTP CONNECT through Turbo.
    Curl {
        /// Size of the downloaded body, MiB.
        #[arg(long, default_value_t = 200)]
        size_mb: usize,
        /// Runs per path (median reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Server cores.
        #[arg(long, default_value_t = 2)]
        cores: usize,
    },
    /// One bulk workload through Turbo and shadowsocks-rust, run by run interleaved:
    /// for profiling and quick comparisons (the suite is the reference).
    Bulk {
        /// Parallel connections.
        #[arg(long, default_value_t = 1)]
        conns: usize,
        /// MiB moved per run, over all connections.
        #[arg(long, default_value_t = 512)]
        mib: u64,
        /// Upload instead of download.
        #[arg(long)]
        upload: bool,
        /// Runs per path (median reported).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Server cores.
        #[arg(long, default_value_t = 2)]
        cores: usize,
    },
    /// Idle tunnels held through Turbo and shadowsocks-rust: RSS per tunnel per process.
    Idle {
        /// Tunnels to hold (capped by the file-descriptor limit).
        #[arg(long, default_value_t = 5000)]
        tunnels: usize,
    },
    /// The abuse detector's evaluation: normal and abusive customers through the real
    /// server and node; per-pattern precision, recall and time to first action, and the
    /// false-positive rate on normal customers.
    Detect(DetectArgs),
    /// Authentication latency, cold and warm cache, memory store and Redis.
    Auth {
        /// Authentications per row.
        #[arg(long, default_value_t = 500)]
        samples: usize,
        /// Server cores.
        #[arg(long, default_value_t = 2)]
        cores: usize,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Read by the Turbo server and node this harness starts.
    let offload = if cli.udp_offload == "on" {
        "auto"
    } else {
        "off"
    };
    std::env::set_var("TURBO_UDP_OFFLOAD", offload);
    // Before any thread exists; dropped last, which removes the namespaces.
    let veth = match cli.net {
        NetKind::Loopback => None,
        NetKind::Veth => Some(Veth::create()?),
    };
    let net = veth
        .as_ref()
        .map_or_else(Topology::loopback, Veth::topology);
    match cli.cmd {
        Cmd::Suite {
            quick,
            runs,
            out,
            refuse_busy,
        } => {
            let mut cfg = if quick {
                turbo_bench::suite::Config::quick(cli.bin_dir)
            } else {
                turbo_bench::suite::Config::full(cli.bin_dir)
            };
            cfg.runs = runs.unwrap_or(cfg.runs);
            cfg.net = net;
            cfg.refuse_busy = refuse_busy;
            turbo_bench::suite::run_and_report(&cfg, &out)?;
        }
        Cmd::Curl {
            size_mb,
            runs,
            cores,
        } => {
            let rows = turbo_bench::curl::run(&cli.bin_dir, size_mb, runs, cores, &net)?;
            println!("{}{}", turbo_bench::curl::table(&rows), net.describe());
        }
        Cmd::Bulk {
            conns,
            mib,
            upload,
            runs,
            cores,
        } => {
            let dir = if upload {
                turbo_bench::workload::Direction::Upload
            } else {
                turbo_bench::workload::Direction::Download
            };
            let job = turbo_bench::suite::BulkJob {
                conns,
                bytes: mib << 20,
                dir,
                runs,
                cores,
                net,
            };
            println!("{}", turbo_bench::suite::bulk_only(&cli.bin_dir, &job)?);
        }
        Cmd::Idle { tunnels } => {
            let out = turbo_bench::suite::idle_only(&cli.bin_dir, &net, tunnels)?;
            println!("{out}");
        }
        Cmd::Auth { samples, cores } => {
            let rows = turbo_bench::auth::run(&cli.bin_dir, samples, cores, &net)?;
            println!("{}{}", turbo_bench::auth::table(&rows), net.describe());
        }
        Cmd::Detect(args) => detect(&cli.bin_dir, &args)?,
    }
    Ok(())
}

/// `turbo-bench detect`.
fn detect(bin_dir: &std::path::Path, args: &DetectArgs) -> anyhow::Result<()> {
    let redis = args.redis;
    let eval = &turbo_bench::detect::Eval {
        window: std::time::Duration::from_secs(args.window_secs),
        warmup_windows: args.warmup,
        attack_windows: args.attack,
        model_only: args.model_only,
        ..turbo_bench::detect::Eval::quick()
    };
    use turbo_bench::detect::Api;
    let net = turbo_bench::net::Network::start_configured(
        bin_dir,
        2,
        redis,
        &[],
        &Topology::loopback(),
        &eval.server_toml(),
    )?;
    let api = Api {
        base: net.api.clone(),
        token: net.admin_token.clone(),
    };
    let proxy = net.socks.parse()?;
    let outcome = turbo_bench::detect::run(proxy, &api, eval)?;
    let rows = turbo_bench::detect_report::rows(&outcome);
    println!(
        "{} windows of {} s, abuse from window {}, store {}, {}\n",
        eval.warmup_windows + eval.attack_windows,
        eval.window.as_secs(),
        eval.warmup_windows + 1,
        if redis { "redis" } else { "memory" },
        if eval.model_only {
            "model only (rules off)"
        } else {
            "rules and model"
        }
    );
    println!("{}", turbo_bench::detect_report::table(&rows));
    for (why, n) in turbo_bench::detect_report::false_positive_reasons(&outcome) {
        println!("  flagged normal window: {n} × {why}");
    }
    Ok(())
}
