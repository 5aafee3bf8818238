//! `turbo-node`: the runner's daemon.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use turbo_node::NodeConfig;
use turbo_proto::join::JoinString;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(version, about = "Turbo node: share your connection, safely, and earn")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Connect to the server and relay customer traffic until stopped.
    Run(RunArgs),
}

#[derive(Args)]
struct RunArgs {
    /// Join string from the operator (`turbo://TOKEN@host:port?pin=…`).
    #[arg(long, env = "TURBO_JOIN", hide_env_values = true)]
    join: String,
    /// Let the node reach this otherwise-forbidden range (labs and tests only).
    #[arg(long = "allow-cidr", env = "TURBO_ALLOW_CIDR", value_delimiter = ',')]
    allow_cidr: Vec<ipnet::IpNet>,
    /// CA file to verify the server with, when the join string has no pin.
    #[arg(long, env = "TURBO_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Country to declare (ISO 3166-1 alpha-2); the server may verify it.
    #[arg(long, env = "TURBO_COUNTRY")]
    country: Option<String>,
    /// Most relay streams at once.
    #[arg(long, env = "TURBO_MAX_STREAMS", default_value_t = 1024)]
    max_streams: u32,
    /// On SIGINT/SIGTERM, how long open streams may finish (e.g. 5s).
    #[arg(long, env = "TURBO_SHUTDOWN_GRACE", default_value = "0s")]
    shutdown_grace: humantime::Duration,
    /// Local IP the QUIC socket binds to [default: any].
    #[arg(long, env = "TURBO_BIND")]
    bind: Option<std::net::IpAddr>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let Cmd::Run(args) = Cli::parse().cmd;
    let join = JoinString::parse(&args.join).context("invalid --join")?;
    let mut config = NodeConfig::new(join);
    config.allow_cidrs = args.allow_cidr;
    config.ca_file = args.ca_file;
    config.country = args.country;
    config.max_streams = args.max_streams;
    config.shutdown_grace = args.shutdown_grace.into();
    config.bind = args.bind;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, turbo_node::run(config, stop_signal()))?;
    Ok(())
}

async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
