//! `turbo-node`: the runner's daemon. `join` saves the configuration once; `run`
//! needs nothing else; `install` starts it at login; `status` shows what it is doing.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use turbo_node::config_file::NodeFile;
use turbo_node::{files, NodeConfig};
use turbo_proto::join::JoinString;
use turbo_proto::size::parse_size;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `0.1.0 (a1c3677)`: the crate version and the git commit it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("TURBO_GIT_COMMIT"),
    ")"
);

#[derive(Parser)]
#[command(version = VERSION, about = "Turbo node: share your connection, safely, and earn")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Save a join string (and settings) so that `turbo-node run` needs no flags.
    Join {
        /// Join string from the operator (`turbo://TOKEN@host:port?pin=…`).
        join: String,
        #[command(flatten)]
        settings: Settings,
    },
    /// Join a runner's account from the browser: prints a page and a code to approve,
    /// waits, and saves the join string (and settings) as `join` does.
    Pair {
        /// The server's dashboard address, e.g. https://turbo.example.com.
        #[arg(long, env = "TURBO_SERVER")]
        server: String,
        /// Do not open the page in a browser (it is printed either way).
        #[arg(long)]
        no_open: bool,
        #[command(flatten)]
        settings: Settings,
    },
    /// Connect to the server and relay customer traffic until stopped.
    Run(RunArgs),
    /// Start the node at login (systemd user unit, launchd agent or Run key).
    Install,
    /// Stop starting the node at login.
    Uninstall,
    /// Show the running node's state, bytes and score.
    Status,
    /// Drain the running node's connections and keep it offline until `resume`.
    Pause,
    /// Reconnect a paused node.
    Resume,
    /// Show the running node in the desktop's tray (state, today's bytes and
    /// earnings; pause, resume, open the dashboard). Quitting it leaves the node running.
    Tray,
}

/// Settings saved by `join` and overridable on `run`.
#[derive(Args, Clone, Default)]
struct Settings {
    /// Country to declare (ISO 3166-1 alpha-2); the server may verify it.
    #[arg(long, env = "TURBO_COUNTRY")]
    country: Option<String>,
    /// Where you want to be paid. Informational only: servers ignore it, the operator
    /// sets the payout address at invite time (`nodes invite --payout-address`).
    #[arg(long, env = "TURBO_PAYOUT_ADDRESS")]
    payout_address: Option<String>,
    /// Most relay streams at once [default: 1024].
    #[arg(long, env = "TURBO_MAX_STREAMS")]
    max_streams: Option<u32>,
    /// Bandwidth cap per direction, per second, e.g. 5MB.
    #[arg(long, env = "TURBO_MAX_RATE")]
    max_rate: Option<String>,
    /// Monthly data cap, e.g. 200GB: no new streams once reached.
    #[arg(long, env = "TURBO_MONTHLY_CAP")]
    monthly_cap: Option<String>,
    /// Refuse this port too (SMTP 25/465/587 is always refused). Repeatable.
    #[arg(long = "block-port", env = "TURBO_BLOCK_PORT", value_delimiter = ',')]
    block_ports: Vec<u16>,
    /// Refuse this domain and its subdomains. Repeatable.
    #[arg(
        long = "block-domain",
        env = "TURBO_BLOCK_DOMAIN",
        value_delimiter = ','
    )]
    block_domains: Vec<String>,
    /// Let the node reach this otherwise-forbidden range (labs and tests only; server
    /// rules still win). Repeatable.
    #[arg(long = "allow-cidr", env = "TURBO_ALLOW_CIDR", value_delimiter = ',')]
    allow_cidrs: Vec<ipnet::IpNet>,
}

/// `--congestion-control` values.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Congestion {
    /// CUBIC, unpaced.
    Cubic,
    /// BBRv2, paced over the round trip.
    Bbr2,
}

/// `--udp-offload` values.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Offload {
    /// GSO where the kernel offers it.
    Auto,
    /// One datagram per send.
    Off,
}

#[derive(Args)]
struct RunArgs {
    /// Join string [default: the one saved by `turbo-node join`].
    #[arg(long, env = "TURBO_JOIN", hide_env_values = true)]
    join: Option<String>,
    #[command(flatten)]
    settings: Settings,
    /// UDP segmentation offload for QUIC sends: `auto` batches with GSO where the kernel
    /// offers it (and falls back when a device refuses), `off` sends one datagram per
    /// call.
    #[arg(long, env = "TURBO_UDP_OFFLOAD", value_enum, default_value = "auto")]
    udp_offload: Offload,
    /// Most QUIC connections (lanes) to the server. The server asks for one per core,
    /// so that each of its cores relays over a connection of its own [default: as many
    /// as the server asks for].
    #[arg(long, env = "TURBO_MAX_LANES", value_parser = clap::value_parser!(u8).range(1..))]
    max_lanes: Option<u8>,
    /// Congestion control: cubic, or bbr2, which paces packets (the node sends the
    /// downloads) [default: cubic].
    #[arg(
        long,
        env = "TURBO_CONGESTION_CONTROL",
        value_enum,
        default_value = "cubic"
    )]
    congestion_control: Congestion,
    /// CA file to verify the server with, when the join string has no pin.
    #[arg(long, env = "TURBO_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// On SIGINT/SIGTERM, how long open streams may finish (e.g. 5s).
    #[arg(long, env = "TURBO_SHUTDOWN_GRACE", default_value = "0s")]
    shutdown_grace: humantime::Duration,
    /// Local IP the QUIC socket binds to [default: any].
    #[arg(long, env = "TURBO_BIND")]
    bind: Option<std::net::IpAddr>,
    /// State directory: usage counters and the status socket [default: the platform's
    /// data directory].
    #[arg(long, env = "TURBO_NODE_STATE")]
    state_dir: Option<PathBuf>,
}

impl Settings {
    /// These settings over `saved`.
    fn over(self, saved: &NodeFile) -> NodeFile {
        let mut f = saved.clone();
        f.country = self.country.or(f.country);
        f.payout_address = self.payout_address.or(f.payout_address);
        f.max_streams = self.max_streams.or(f.max_streams);
        f.max_rate = self.max_rate.or(f.max_rate);
        f.monthly_cap = self.monthly_cap.or(f.monthly_cap);
        f.block_ports.extend(self.block_ports);
        f.block_domains.extend(self.block_domains);
        f.allow_cidrs
            .extend(self.allow_cidrs.iter().map(ToString::to_string));
        f
    }
}

fn config_path() -> anyhow::Result<PathBuf> {
    files::config_path().context("no home directory: set TURBO_NODE_CONFIG")
}

fn check(f: &NodeFile) -> anyhow::Result<()> {
    JoinString::parse(&f.join).context("invalid join string")?;
    check_settings(f)
}

/// Checks the settings of `f` (all but the join string).
fn check_settings(f: &NodeFile) -> anyhow::Result<()> {
    if let Some(r) = &f.max_rate {
        parse_size(r).context("invalid --max-rate")?;
    }
    if let Some(c) = &f.monthly_cap {
        parse_size(c).context("invalid --monthly-cap")?;
    }
    allowed_ranges(f)?;
    if let Some(p) = &f.payout_address {
        if p.is_empty() || p.len() > 128 || !p.chars().all(|c| c.is_ascii_graphic()) {
            bail!("--payout-address must be 1 to 128 printable ASCII characters");
        }
    }
    Ok(())
}

/// The saved and given `--allow-cidr` ranges, parsed.
fn allowed_ranges(f: &NodeFile) -> anyhow::Result<Vec<ipnet::IpNet>> {
    f.allow_cidrs
        .iter()
        .map(|r| {
            r.parse()
                .with_context(|| format!("invalid --allow-cidr {r:?}"))
        })
        .collect()
}

pub(crate) fn main() -> anyhow::Result<()> {
    turbo_telemetry::init();
    match Cli::parse().cmd {
        Cmd::Join { join, settings } => save_join(join, &settings, None)?,
        Cmd::Pair {
            server,
            no_open,
            settings,
        } => pair(&server, no_open, &settings)?,
        Cmd::Tray => tray()?,
        Cmd::Run(args) => run(args)?,
        Cmd::Install => {
            let exe = std::env::current_exe()?;
            let at = turbo_node::autostart::install(&exe)?;
            println!("turbo-node will start at login ({at})");
        }
        Cmd::Uninstall => {
            turbo_node::autostart::uninstall()?;
            println!("turbo-node will no longer start at login");
        }
        Cmd::Pause => control("pause")?,
        Cmd::Resume => control("resume")?,
        Cmd::Status => {
            let dir = files::state_dir().context("no home directory: set TURBO_NODE_STATE")?;
            let r = turbo_node::status::query(&turbo_node::status::socket_path(&dir))
                .context("turbo-node is not running (no status socket)")?;
            println!("state:          {}", r.state);
            if let Some(why) = &r.refused {
                println!("refused:        {why}");
            }
            println!("server:         {}", r.server);
            println!("node id:        {}", r.node_id.as_deref().unwrap_or("-"));
            println!("today:          {} bytes", r.bytes_today);
            match r.monthly_cap {
                Some(cap) => println!("this month:     {} of {cap} bytes", r.bytes_month),
                None => println!("this month:     {} bytes", r.bytes_month),
            }
            println!("active streams: {}", r.active_streams);
            println!("lanes:          {} connected", r.lanes);
            match r.score {
                Some(s) => println!("score:          {s:.3}"),
                None => println!("score:          not reported yet"),
            }
            match r.earnings_nano {
                Some((today, month)) => println!(
                    "earnings:       {} today, {} this month",
                    usd(today),
                    usd(month)
                ),
                None => println!("earnings:       not reported (the server has no ledger)"),
            }
            if let Some(why) = &r.held {
                println!("held:           earnings unpaid until released: {why}");
            }
            println!(
                "udp offload:    {} datagrams in GSO batches, {} fallbacks",
                r.udp_gso_segments, r.udp_offload_fallbacks
            );
        }
    }
    Ok(())
}

/// `turbo-node pair`: pairs from the browser, then saves as `join` does.
fn pair(server: &str, no_open: bool, settings: &Settings) -> anyhow::Result<()> {
    // Checked before asking for a code, so a bad flag costs no pairing.
    check_settings(&settings.clone().over(&NodeFile::default()))?;
    let join = turbo_node::pair::pair(server, !no_open, &mut std::io::stdout())?;
    println!("paired");
    save_join(
        join,
        settings,
        Some(server.trim_end_matches('/').to_owned()),
    )
}

/// `turbo-node tray`.
fn tray() -> anyhow::Result<()> {
    let dir = files::state_dir().context("no home directory: set TURBO_NODE_STATE")?;
    let dashboard = config_path()
        .ok()
        .and_then(|p| NodeFile::read(&p).ok())
        .and_then(|f| f.dashboard);
    turbo_node::tray::run(turbo_node::tray::TrayConfig {
        socket: turbo_node::status::socket_path(&dir),
        dashboard,
    })?;
    Ok(())
}

/// `turbo-node pause|resume`: `word` to the running node.
fn control(word: &str) -> anyhow::Result<()> {
    let dir = files::state_dir().context("no home directory: set TURBO_NODE_STATE")?;
    let r = turbo_node::status::command(&turbo_node::status::socket_path(&dir), word)
        .context("turbo-node is not running (no status socket)")?;
    println!(
        "{}",
        if r.paused {
            "paused (draining, then offline)"
        } else {
            "resumed"
        }
    );
    Ok(())
}

/// Saves `join` with `settings` (and the dashboard's address, when paired) in
/// `node.toml` (owner-only).
fn save_join(join: String, settings: &Settings, dashboard: Option<String>) -> anyhow::Result<()> {
    let f = settings.clone().over(&NodeFile {
        join,
        dashboard,
        ..Default::default()
    });
    check(&f)?;
    let path = config_path()?;
    f.write(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    println!(
        "saved {} (owner-only); start with: turbo-node run",
        path.display()
    );
    Ok(())
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let saved = match &args.join {
        Some(join) => NodeFile {
            join: join.clone(),
            ..Default::default()
        },
        None => NodeFile::read(&config_path()?).map_err(anyhow::Error::msg)?,
    };
    let f = args.settings.over(&saved);
    check(&f)?;
    let join = JoinString::parse(&f.join).context("invalid join string")?;
    let mut config = NodeConfig::new(join);
    config.allow_cidrs = allowed_ranges(&f)?;
    config.ca_file = args.ca_file;
    config.country = f.country;
    config.payout_address = f.payout_address;
    config.max_streams = f.max_streams.unwrap_or(1024);
    config.max_rate = f.max_rate.as_deref().map(parse_size).transpose()?;
    config.monthly_cap = f.monthly_cap.as_deref().map(parse_size).transpose()?;
    config.block_ports = f.block_ports;
    config.block_domains = f.block_domains;
    config.shutdown_grace = args.shutdown_grace.into();
    config.bind = args.bind;
    config.udp_offload = args.udp_offload == Offload::Auto;
    config.max_lanes = args.max_lanes.unwrap_or(u8::MAX);
    config.congestion_control = match args.congestion_control {
        Congestion::Cubic => turbo_quic::CongestionControl::Cubic,
        Congestion::Bbr2 => turbo_quic::CongestionControl::Bbr2,
    };
    config.state_dir = args.state_dir.or_else(files::state_dir);
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

/// nano-USD as dollars with six decimals (`$0.123456`), truncated.
fn usd(nano: u64) -> String {
    format!(
        "${}.{:06}",
        nano / 1_000_000_000,
        nano % 1_000_000_000 / 1000
    )
}
