//! `turbo-node`: the runner's daemon. It dials the Turbo server over QUIC (outbound
//! only, so it works behind NAT), proves who it is with its node token, and serves each
//! relay stream the server opens by connecting to the target, after checking the
//! destination against a policy that protects the runner's own network.
//!
//! Single-threaded by design (a tokio current-thread runtime and a `LocalSet`): a node
//! moves one home connection's worth of traffic and must stay small.
#![warn(missing_docs)]

pub mod autostart;
pub mod config_file;
pub mod conn;
pub mod connection;
pub mod dial;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod files;
pub mod guard;
pub mod limit;
pub mod pair;
pub mod pool;
pub mod relay;
pub mod retry;
pub mod servers;
pub mod status;
pub mod tray;
pub mod udp;
pub mod usage;

use std::future::Future;
use std::path::PathBuf;
use std::pin::pin;
use std::rc::Rc;
use std::time::Duration;

use tracing::{info, warn, Instrument};
use turbo_proto::join::JoinString;

/// Everything a node needs to run.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Server address, node token and certificate pin.
    pub join: JoinString,
    /// CA file to verify the server with, when the join string has no pin.
    pub ca_file: Option<PathBuf>,
    /// Ranges the policy lets through despite the defaults (labs and tests).
    pub allow_cidrs: Vec<ipnet::IpNet>,
    /// Declared country (ISO 3166-1 alpha-2).
    pub country: Option<String>,
    /// Most relay streams at once.
    pub max_streams: u32,
    /// On shutdown, how long open streams may finish.
    pub shutdown_grace: Duration,
    /// Local address the QUIC socket binds (multi-homed hosts, labs); port 0 is any.
    pub bind: Option<std::net::IpAddr>,
    /// Where the runner wants to be paid.
    pub payout_address: Option<String>,
    /// Bandwidth cap per direction, bytes per second.
    pub max_rate: Option<u64>,
    /// Batch UDP sends with GSO where the kernel offers it (`--udp-offload auto`).
    pub udp_offload: bool,
    /// Most QUIC connections (lanes) to the server; the server asks for one per core.
    pub max_lanes: u8,
    /// The congestion controller (the node sends downloads).
    pub congestion_control: turbo_quic::CongestionControl,
    /// Monthly data cap, bytes.
    pub monthly_cap: Option<u64>,
    /// Extra blocked ports.
    pub block_ports: Vec<u16>,
    /// Blocked domains (and subdomains).
    pub block_domains: Vec<String>,
    /// Where usage counters and the status socket live (`None`: not kept).
    pub state_dir: Option<PathBuf>,
}

/// What the lanes' connections, the relays and the status socket share.
pub struct Shared {
    /// The destination policy.
    pub policy: guard::DestinationPolicy,
    /// The bandwidth caps.
    pub limits: limit::Limits,
    /// Byte counters and the monthly cap.
    pub usage: Rc<usage::Usage>,
    /// What `turbo-node status` shows.
    pub status: Rc<status::Status>,
    /// Relay buffers, taken only while bytes move.
    pub pool: pool::BufPool,
    /// The network's server list, as a server last sent it.
    pub fleet: std::cell::RefCell<Option<Vec<turbo_proto::wire::control::ServerInfo>>>,
    /// Signalled when the list changes, a server drains or a slot goes down or up.
    pub fleet_changed: tokio::sync::Notify,
}

impl NodeConfig {
    /// Defaults: no CA file, no allowed ranges, no country, 1024 streams, no grace, the
    /// unspecified local address, GSO on, as many lanes as the server asks for.
    pub fn new(join: JoinString) -> Self {
        NodeConfig {
            join,
            ca_file: None,
            allow_cidrs: Vec::new(),
            country: None,
            max_streams: 1024,
            shutdown_grace: Duration::ZERO,
            bind: None,
            payout_address: None,
            max_rate: None,
            udp_offload: true,
            max_lanes: u8::MAX,
            congestion_control: turbo_quic::CongestionControl::Cubic,
            monthly_cap: None,
            block_ports: Vec::new(),
            block_domains: Vec::new(),
            state_dir: None,
        }
    }
}

/// Fatal node errors (everything else is retried).
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Neither a pin nor a CA file: the server could not be verified.
    #[error("no way to verify the server: the join string has no pin and no --ca-file was given")]
    NoTrustAnchor,
    /// The server's certificate does not match the pin.
    #[error("server certificate does not match the pinned hash: refusing to talk to it")]
    PinMismatch,
    /// The server refused the token.
    #[error("server rejected this node: {0}")]
    Rejected(String),
    /// The server sent something that is not the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The server address did not resolve.
    #[error("cannot resolve server {0}")]
    Resolve(String),
    /// A socket failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// quiche refused the configuration or connection.
    #[error("quic: {0}")]
    Quic(#[from] quiche::Error),
}

impl NodeError {
    /// Whether reconnecting could help.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            NodeError::NoTrustAnchor | NodeError::PinMismatch | NodeError::Rejected(_)
        )
    }
}

/// Runs the node until `shutdown` resolves or a fatal error, reconnecting with
/// jittered backoff. Must run inside a [`tokio::task::LocalSet`] on a current-thread
/// runtime.
///
/// # Errors
/// Fatal errors only ([`NodeError::is_fatal`]).
pub async fn run(config: NodeConfig, shutdown: impl Future<Output = ()>) -> Result<(), NodeError> {
    for net in &config.allow_cidrs {
        warn!(range = %net, "destination policy: explicitly allowing this range");
    }
    let policy = guard::DestinationPolicy::new(config.allow_cidrs.clone())
        .block_ports(&config.block_ports)
        .block_domains(&config.block_domains)
        .deny_local(guard::local_addresses());
    let usage = Rc::new(usage::Usage::load(
        config.state_dir.as_ref().map(|d| d.join("usage.json")),
        config.monthly_cap,
    ));
    let status = Rc::new(status::Status::default());
    status.state.set("connecting");
    *status.server.borrow_mut() = config.join.server_addr();
    let shared = Rc::new(Shared {
        policy,
        limits: limit::Limits::symmetric(config.max_rate),
        usage: usage.clone(),
        status: status.clone(),
        pool: pool::BufPool::default(),
        fleet: std::cell::RefCell::new(None),
        fleet_changed: tokio::sync::Notify::new(),
    });
    let mut tasks = Vec::new();
    if let Some(dir) = &config.state_dir {
        tasks.push(tokio::task::spawn_local(status::serve(
            status::socket_path(dir),
            status.clone(),
            usage.clone(),
        )));
        let usage = usage.clone();
        tasks.push(tokio::task::spawn_local(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                usage.save();
            }
        }));
    }
    let result = run_until_shutdown(&config, &shared, shutdown).await;
    for t in tasks {
        t.abort();
    }
    usage.save();
    result
}

/// Runs the lanes until `shutdown`. Paused by the runner (status socket), the lanes
/// drain and stay closed until resumed.
async fn run_until_shutdown(
    config: &NodeConfig,
    shared: &Rc<Shared>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), NodeError> {
    let mut shutdown = pin!(shutdown);
    let shut = std::cell::Cell::new(false);
    let status = &shared.status;
    loop {
        let stop = async {
            tokio::select! {
                _ = shutdown.as_mut() => shut.set(true),
                _ = status.until_paused(true) => {}
            }
        };
        servers::run(config, shared, stop).await?;
        if shut.get() {
            return Ok(());
        }
        status.state.set("paused");
        tracing::info!("paused: connections drained");
        tokio::select! {
            _ = shutdown.as_mut() => return Ok(()),
            _ = status.until_paused(false) => tracing::info!("resumed"),
        }
    }
}

/// Runs lane 0 of `slot`'s server, then, once the slot carries its first stream, one
/// more lane per server core the server says it has, until shutdown (every lane
/// drains) or a fatal error on any lane.
pub(crate) async fn run_lanes(
    config: Rc<NodeConfig>,
    shared: &Rc<Shared>,
    slot: Rc<servers::Slot>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), NodeError> {
    // This run's id, which every lane's hello carries (the wire calls it the session).
    let session = rand::random::<u64>() >> 2;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut lanes = tokio::task::JoinSet::new();
    let mut opened = 0u8;
    let mut shutdown = pin!(shutdown);
    loop {
        while opened < wanted_lanes(&config, &slot) && !*stop.borrow() {
            let lane = connection::Lane {
                session,
                index: opened,
            };
            lanes.spawn_local(run_lane(
                config.clone(),
                shared.clone(),
                (slot.clone(), lane),
                stopped.clone(),
            ));
            opened += 1;
            tracing::debug!(lane = lane.index, "lane opened");
        }
        tokio::select! {
            _ = shutdown.as_mut(), if !*stop.borrow() => {
                let _ = stop.send(true);
            }
            _ = slot.lanes_changed.notified() => {}
            done = lanes.join_next() => match done {
                None => return Ok(()),
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => {
                    lanes.abort_all();
                    return Err(e);
                }
                Some(Err(e)) => warn!(error = %e, "lane task failed"),
            },
        }
    }
}

/// Lanes to keep: one until the slot carries its first stream, then what the server
/// asked for, within `--max-lanes`.
fn wanted_lanes(config: &NodeConfig, slot: &servers::Slot) -> u8 {
    if !slot.carrying.get() {
        return 1;
    }
    slot.lanes.get().min(config.max_lanes).max(1)
}

/// One lane's connections, one after another, reconnecting with jittered backoff,
/// until `stop` is set, the server no longer wants this lane, or a fatal error.
async fn run_lane(
    config: Rc<NodeConfig>,
    shared: Rc<Shared>,
    (slot, lane): (Rc<servers::Slot>, connection::Lane),
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), NodeError> {
    let mut backoff = retry::Backoff::default();
    let first = lane.index == 0;
    let set_state = |s: &'static str| {
        // "connecting" only while no lane, to any server, is admitted.
        if first && (s != "connecting" || !shared.status.any_connected()) {
            shared.status.state.set(s);
        }
    };
    let mut stopped = pin!(async move {
        let _ = stop.wait_for(|s| *s).await;
    });
    loop {
        if lane.index >= wanted_lanes(&config, &slot) {
            return Ok(());
        }
        if shared.usage.capped() {
            set_state("capped");
            // Check again hourly: the cap lifts when the month turns.
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(3600)) => continue,
                _ = stopped.as_mut() => return Ok(()),
            }
        }
        set_state("connecting");
        let span = tracing::info_span!("lane", server = %slot.addr, index = lane.index);
        let connection =
            connection::run(&config, &shared, &slot, lane, &mut stopped).instrument(span);
        match connection.await {
            Ok(connection::ConnectionEnd::Shutdown) => return Ok(()),
            Ok(connection::ConnectionEnd::Capped) => continue,
            Ok(connection::ConnectionEnd::Lost { welcomed }) => {
                if welcomed {
                    backoff.reset();
                }
            }
            Err(e) if e.is_fatal() => {
                shared.status.state.set("rejected");
                return Err(e);
            }
            Err(e) => warn!(lane = lane.index, error = %e, "connection failed"),
        }
        set_state("connecting");
        let delay = backoff.next_delay();
        info!(lane = lane.index, ?delay, "reconnecting");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopped.as_mut() => return Ok(()),
        }
    }
}

/// A node running on its own thread.
pub struct NodeHandle {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<Result<(), NodeError>>,
}

/// Starts a node on its own thread with its own runtime.
///
/// # Errors
/// When the thread or runtime cannot be created.
pub fn spawn(config: NodeConfig) -> std::io::Result<NodeHandle> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let thread = std::thread::Builder::new()
        .name("turbo-node".into())
        .spawn(move || {
            let local = tokio::task::LocalSet::new();
            local.block_on(
                &rt,
                run(config, async {
                    let _ = stopped.await;
                }),
            )
        })?;
    Ok(NodeHandle { stop, thread })
}

impl NodeHandle {
    /// Triggers a graceful shutdown and waits for the node to finish.
    pub fn shutdown(self) {
        let _ = self.stop.send(());
        match self.thread.join() {
            Ok(Err(e)) => warn!(error = %e, "node ended with an error"),
            Err(_) => warn!("node thread panicked"),
            Ok(Ok(())) => {}
        }
    }
}
