//! Assembling a running `turbo-server`: data directory, certificate, admin token, the
//! data plane on its own core threads, and the control plane plus API on a tokio
//! runtime of their own.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::time::Duration;

use tokio::sync::broadcast;
use turbo_dataplane::control::{control_channel, ControlHandle, KeyEvent, NodeTableHandle};
use turbo_dataplane::known_keys::KnownKeys;
use turbo_dataplane::{
    AuthConfig, BoundAddrs, Dataplane, DataplaneConfig, DataplaneError, DriverChoice, LeaseConfig,
};

use crate::api::{self, ApiState};
use crate::config::ServerConfig;
use crate::geoip::GeoIp;
use crate::metrics::{Metrics, NodeSample, Sources};
use crate::money::Money;
use crate::scoring::Weights;
use crate::service::{ControlPlane, ControlSettings};
use crate::store::{AnyStore, LeaseTerms, StoreError};
use crate::tls::{self, TlsError};

/// The store's kind for logs (its URL may hold a password).
fn store_kind(spec: &str) -> &'static str {
    if spec == "memory" {
        "memory"
    } else if crate::store::redis::events::is_cluster(spec) {
        "redis-cluster"
    } else {
        "redis"
    }
}

/// Start-up failures of the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A file or directory under the data directory could not be created or read.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// `public_addr` is not `host:port`.
    #[error("public_addr {0:?} must be host:port")]
    PublicAddr(String),
    /// The certificate could not be loaded or generated.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The control-plane runtime could not start.
    #[error("control-plane runtime: {0}")]
    Runtime(std::io::Error),
    /// The data plane could not start.
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    /// The GeoIP database could not be opened.
    #[error("GeoIP database {path}: {reason}")]
    GeoIp {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The store could not be opened (Redis unreachable).
    #[error("opening the store: {0}")]
    Store(#[from] StoreError),
    /// The ledger could not be reached or set up.
    #[error("ledger: {0}")]
    Ledger(turbo_ledger::LedgerError),
    /// The USDC gateway could not start (chain unreachable, wrong chain, no token).
    #[error("payments: {0}")]
    Payments(turbo_chain::ChainError),
    /// The dashboard's account store could not be opened.
    #[error("accounts: {0}")]
    Accounts(crate::accounts::AccountError),
    /// The API listener could not be bound.
    #[error("binding API on {addr}: {source}")]
    ApiBind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ServerError + '_ {
    move |source| ServerError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A running server.
pub struct Server {
    /// The control plane (for in-process callers such as the demo).
    pub control: Arc<ControlPlane<AnyStore>>,
    /// The API address.
    pub api: SocketAddr,
    /// Data-plane addresses.
    pub addrs: BoundAddrs,
    /// The API state (join string inputs).
    pub api_state: Arc<ApiState<AnyStore>>,
    dataplane: Dataplane,
    runtime: tokio::runtime::Runtime,
}

/// Reads `DATA_DIR/admin-token`, creating it (owner-only) when missing.
fn admin_token(data_dir: &Path) -> Result<String, ServerError> {
    let path = data_dir.join("admin-token");
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => {
            tracing::info!(path = %path.display(), "using the admin token saved earlier");
            return Ok(t.trim().to_owned());
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&path)(e)),
    }
    let token = crate::secrets::generate("adm");
    tls::write_private(&path, token.as_bytes()).map_err(io_err(&path))?;
    tracing::info!(path = %path.display(), "generated an admin token");
    Ok(token)
}

/// The stateless-reset key saved in the data directory (created on first run), so a
/// restarted server can still reset its old connections.
fn stateless_reset_key(data_dir: &Path) -> Result<turbo_dataplane::ResetKey, ServerError> {
    let path = data_dir.join("stateless-reset.key");
    match std::fs::read_to_string(&path) {
        Ok(t) => {
            if let Some(bytes) = hex::decode(t.trim())
                .ok()
                .and_then(|v| <[u8; 32]>::try_from(v).ok())
            {
                return Ok(turbo_dataplane::ResetKey::new(bytes));
            }
            tracing::warn!(path = %path.display(), "unreadable stateless-reset key: generating a new one");
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&path)(e)),
    }
    let bytes: [u8; 32] = rand::random();
    std::fs::create_dir_all(data_dir).map_err(io_err(data_dir))?;
    tls::write_private(&path, hex::encode(bytes).as_bytes()).map_err(io_err(&path))?;
    Ok(turbo_dataplane::ResetKey::new(bytes))
}

/// Connects the money ledger and starts its feeder when `cfg.ledger` names one.
fn start_money(
    runtime: &tokio::runtime::Runtime,
    cfg: &ServerConfig,
    control: &Arc<ControlPlane<AnyStore>>,
    server_id: &Arc<str>,
    nodes: turbo_dataplane::control::NodeTableHandle,
) -> Result<Option<Arc<Money>>, ServerError> {
    let Some(url) = &cfg.ledger else {
        tracing::info!("no ledger (--ledger postgres://...): money features are off");
        return Ok(None);
    };
    let money = runtime
        .block_on(Money::connect(
            url,
            &cfg.rewards,
            cfg.payout_threshold_nano_usd,
            cfg.data_dir.join("payouts.csv"),
            server_id.clone(),
        ))
        .map_err(ServerError::Ledger)?;
    let money = Arc::new(money);
    runtime.spawn(crate::money::run(money.clone(), control.clone(), nodes));
    Ok(Some(money))
}

/// Serves the API and dashboard, with each request's client address (sign-up and
/// pairing limits count per address).
async fn serve_api(listener: tokio::net::TcpListener, router: axum::Router) {
    let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    if let Err(e) = axum::serve(listener, service).await {
        tracing::error!(error = %e, "API server failed");
    }
}

/// Opens the live bus (presence and the dashboard's feed) and the pairing requests
/// next to the store, and starts this server's presence reporter.
fn start_live(
    runtime: &tokio::runtime::Runtime,
    cfg: &ServerConfig,
    control: &Arc<ControlPlane<AnyStore>>,
    server_id: &Arc<str>,
) -> Result<(Arc<crate::live::LiveBus>, Arc<crate::pairing::Pairings>), ServerError> {
    let live = runtime
        .block_on(crate::live::LiveBus::open(&cfg.store))
        .map_err(ServerError::Store)?;
    let live = Arc::new(live);
    control.set_live(live.clone());
    runtime.spawn(crate::live::report::run(
        control.clone(),
        live.clone(),
        server_id.clone(),
    ));
    let pairings = runtime
        .block_on(crate::pairing::Pairings::open(&cfg.store))
        .map_err(|e| ServerError::Store(StoreError::Unavailable(e.to_string())))?;
    Ok((live, Arc::new(pairings)))
}

impl Server {
    /// Starts everything described by `cfg` (already validated).
    ///
    /// # Errors
    /// When the data directory, certificate, listeners or runtime cannot be set up.
    pub fn start(cfg: &ServerConfig) -> Result<Server, ServerError> {
        std::fs::create_dir_all(&cfg.data_dir).map_err(io_err(&cfg.data_dir))?;
        let admin_token = match &cfg.admin_token {
            Some(t) => t.clone(),
            None => admin_token(&cfg.data_dir)?,
        };
        let (host, port) = public_host_port(cfg)?;
        let cert = certificate(cfg, &host)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("turbo-control")
            .enable_all()
            .build()
            .map_err(ServerError::Runtime)?;
        let server_id: Arc<str> = format!("s{:08x}", rand::random::<u32>()).into();
        let links = PlaneLinks::new();
        let (control, handle) = start_control_plane(&runtime, cfg, &server_id, &links)?;
        let money = start_money(&runtime, cfg, &control, &server_id, links.table.clone())?;
        let (live, pairings) = start_live(&runtime, cfg, &control, &server_id)?;
        let payments =
            crate::payments::start(cfg, money.as_deref(), control.store.clone(), live.clone());
        let payments = runtime.block_on(payments).map_err(ServerError::Payments)?;
        let site_key = crate::detect::start(&runtime, cfg, &control)?;
        let fleet = crate::fleet::announce::start(&runtime, cfg, &control, &server_id, cert.pin)?;
        let mut dp_config = dataplane_config(cfg, &cert, &server_id, links.known_keys)?;
        (dp_config.site_key, dp_config.servers) = (site_key, fleet.servers());
        let dataplane = Dataplane::start(dp_config, handle, links.table, &links.key_events)?;
        control.set_metrics(Arc::new(metrics(&dataplane, &control)));
        if let Some(m) = &money {
            let _ = m.stats.set(dataplane.stats());
        }
        let api_state = Arc::new(ApiState {
            control: control.clone(),
            admin_token,
            public_host: host.clone(),
            public_port: port,
            pin: cert.pin,
            metrics_per_node: cfg.metrics_per_node,
            money,
            payments,
            accounts: runtime.block_on(open_accounts(cfg))?,
            secure_cookies: cfg.web_secure_cookies,
            proxy_http: customer_addr(cfg.http_listen, &host),
            proxy_socks: customer_addr(cfg.socks_listen, &host),
            price_per_gb: price_per_gb(cfg),
            live,
            pairings,
            pair_ttl: cfg.pair_code_ttl,
            detect_defaults: cfg.detect.clone(),
            fleet,
        });
        let money = api_state.money.clone();
        let proxy = dataplane.addrs().http;
        crate::canary::start(&runtime, cfg, &control, money, proxy, &server_id)?;
        let (api_addr, listener) = bind_api(&runtime, cfg)?;
        spawn_housekeeping(&runtime, cfg, &control, &dataplane);
        runtime.spawn(serve_api(listener, api::router(api_state.clone())));
        let addrs = dataplane.addrs();
        tracing::info!(
            api = %api_addr,
            socks = ?addrs.socks,
            http = ?addrs.http,
            quic = %addrs.quic,
            store = store_kind(&cfg.store),
            server_id = %server_id,
            "turbo-server listening"
        );
        Ok(Server {
            control,
            api: api_addr,
            addrs,
            api_state,
            dataplane,
            runtime,
        })
    }

    /// Runs `f` on the control-plane runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// Stops the data plane (which settles its credit leases with the still-running
    /// control plane), then the control plane.
    pub fn shutdown(self) {
        self.runtime.block_on(self.api_state.fleet.drain());
        self.dataplane.shutdown();
        self.control.store.save();
        self.runtime
            .shutdown_timeout(std::time::Duration::from_secs(1));
    }
}

/// `public_addr` split into host (brackets removed) and port.
fn public_host_port(cfg: &ServerConfig) -> Result<(String, u16), ServerError> {
    let public = cfg.public_addr();
    public
        .rsplit_once(':')
        .and_then(|(h, p)| {
            Some((
                h.trim_matches(['[', ']']).to_owned(),
                p.parse::<u16>().ok()?,
            ))
        })
        .ok_or_else(|| ServerError::PublicAddr(public.clone()))
}

/// The dashboard's accounts, on the same backend as the store.
async fn open_accounts(
    cfg: &ServerConfig,
) -> Result<Arc<dyn crate::accounts::AccountStore>, ServerError> {
    use crate::accounts::{memory::MemoryAccounts, redis::RedisAccounts};
    let accounts: Arc<dyn crate::accounts::AccountStore> = if cfg.store == "memory" {
        let path = cfg.data_dir.join("accounts.json");
        Arc::new(MemoryAccounts::open(Some(path)).map_err(ServerError::Accounts)?)
    } else {
        Arc::new(
            RedisAccounts::connect(&cfg.store)
                .await
                .map_err(ServerError::Accounts)?,
        )
    };
    Ok(accounts)
}

/// The configured price per GB, as the buy page shows it (`1`, `0.5`).
fn price_per_gb(cfg: &ServerConfig) -> String {
    cfg.price_usd_per_gb
        .nano()
        .map(turbo_chain::amount::format_usd)
        .unwrap_or_default()
}

/// Where customers reach a proxy listener: its address, with the public host when it
/// listens on every interface.
fn customer_addr(listen: std::net::SocketAddr, public_host: &str) -> String {
    if listen.ip().is_unspecified() {
        format!("{public_host}:{}", listen.port())
    } else {
        listen.to_string()
    }
}

/// The configured certificate, or one generated for loopback and the public host.
fn certificate(cfg: &ServerConfig, host: &str) -> Result<tls::ServerCert, ServerError> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if !names.iter().any(|n| n == host) {
        names.push(host.to_owned());
    }
    let configured = cfg.tls_cert.clone().zip(cfg.tls_key.clone());
    Ok(tls::load_or_generate(&cfg.data_dir, configured, &names)?)
}

/// What the control plane and the data plane share: the routing table the control
/// plane publishes nodes into, the key events it broadcasts to the cores, and the
/// keys the cores may admit without asking.
struct PlaneLinks {
    table: NodeTableHandle,
    key_events: broadcast::Sender<KeyEvent>,
    known_keys: KnownKeys,
}

impl PlaneLinks {
    fn new() -> Self {
        PlaneLinks {
            table: NodeTableHandle::default(),
            key_events: broadcast::channel(4096).0,
            known_keys: KnownKeys::default(),
        }
    }
}

/// Control-plane wiring: opens the store and the GeoIP database, builds the control
/// plane on `runtime` and starts its tasks. Returns it with the handle the data plane
/// sends its requests through.
fn start_control_plane(
    runtime: &tokio::runtime::Runtime,
    cfg: &ServerConfig,
    server_id: &Arc<str>,
    links: &PlaneLinks,
) -> Result<(Arc<ControlPlane<AnyStore>>, ControlHandle), ServerError> {
    let store = runtime.block_on(AnyStore::open_in(&cfg.store, Some(&cfg.data_dir)))?;
    let geoip = match &cfg.geoip {
        Some(path) => Some(Arc::new(GeoIp::open(path).map_err(|e| {
            ServerError::GeoIp {
                path: path.clone(),
                reason: e.to_string(),
            }
        })?)),
        None => None,
    };
    let control = Arc::new(ControlPlane::new(
        Arc::new(store),
        links.table.clone(),
        links.key_events.clone(),
        ControlSettings {
            lease: LeaseTerms {
                owner: server_id.to_string(),
                ttl: cfg.lease_ttl,
                usage_log: cfg.ledger.is_some(),
            },
            stream_max_len: cfg.stream_max_len,
            weights: Weights {
                latency: cfg.score_latency_weight,
                reliability: cfg.score_reliability_weight,
            },
            geoip,
            known_keys: links.known_keys.clone(),
            network_limit: crate::netlimit::NetworkLimit {
                per_network: cfg.nodes_per_network,
                strict: cfg.nodes_per_network_strict,
            },
        },
    ));
    let (handle, rx) = control_channel();
    runtime.spawn(control.clone().serve(rx));
    runtime.spawn(control.clone().forward_key_events());
    runtime.spawn(control.clone().rescore_nodes(Duration::from_secs(1)));
    runtime.spawn(
        control
            .clone()
            .reclaim_leases((cfg.lease_ttl / 4).max(Duration::from_millis(250))),
    );
    Ok((control, handle))
}

/// Data-plane wiring: the cores' configuration from `cfg`.
fn dataplane_config(
    cfg: &ServerConfig,
    cert: &tls::ServerCert,
    server_id: &Arc<str>,
    known_keys: KnownKeys,
) -> Result<DataplaneConfig, ServerError> {
    let driver = match cfg.driver.as_str() {
        "io_uring" => DriverChoice::IoUring,
        "legacy" => DriverChoice::Legacy,
        _ => DriverChoice::Auto,
    };
    Ok(DataplaneConfig {
        socks_listen: Some(cfg.socks_listen),
        http_listen: Some(cfg.http_listen),
        quic_listen: cfg.quic_listen,
        cores: cfg.effective_cores(),
        driver,
        cert_chain: cert.cert.clone(),
        private_key: cert.key.clone(),
        handshake_timeout: cfg.handshake_timeout,
        connect_timeout: cfg.connect_timeout,
        node_liveness: cfg.node_liveness,
        http_limits: turbo_proto::http::HttpLimits {
            max_head_bytes: cfg.http_max_head_bytes,
            max_headers: cfg.http_max_headers,
        },
        shutdown_grace: cfg.shutdown_grace,
        quic_retry_threshold: cfg.quic_retry_threshold,
        stateless_reset_key: stateless_reset_key(&cfg.data_dir)?,
        udp_offload: cfg.udp_offload == crate::config::UdpOffload::Auto,
        congestion_control: cfg.congestion_control.into(),
        site_key: turbo_dataplane::site::SiteKey::random(),
        servers: Default::default(),
        limits: connection_limits(cfg),
        auth: AuthConfig {
            ttl: cfg.auth_cache_ttl,
            negative_ttl: cfg.auth_negative_ttl,
            fail_limit: cfg.auth_fail_limit,
            fail_window: cfg.auth_fail_window,
            known_keys,
        },
        node_policy: turbo_proto::wire::control::NodePolicy {
            ports: cfg.node_block_ports.clone(),
            nets: cfg.node_block_cidrs.clone(),
            domains: cfg.node_block_domains.clone(),
        },
        lease: LeaseConfig {
            server_id: server_id.clone(),
            checkpoint: cfg.lease_checkpoint,
            idle_release: cfg.lease_idle_release,
        },
    })
}

/// The data plane's customer-connection limits.
fn connection_limits(cfg: &ServerConfig) -> turbo_dataplane::limits::ConnLimits {
    turbo_dataplane::limits::ConnLimits {
        max_conns: cfg.max_connections,
        max_conns_per_listener: cfg.max_connections_per_listener,
        max_conns_per_key: cfg.max_connections_per_key,
        new_conns_per_key_per_sec: cfg.new_connections_per_key_per_sec,
        idle_timeout: cfg.relay_idle_timeout,
        stall_timeout: cfg.relay_stall_timeout,
        connection_cost: cfg.connection_cost,
        key_node_share: cfg.key_node_share,
        key_idle_tunnels: cfg.key_idle_tunnels,
        idle_tunnel_timeout: cfg.idle_tunnel_timeout,
        site_new_conns_per_sec: cfg.site_new_connections_per_sec,
    }
}

/// The metrics, reading the data plane's counters and the control plane's nodes at
/// scrape time.
fn metrics(dataplane: &Dataplane, control: &Arc<ControlPlane<AnyStore>>) -> Metrics {
    let (c1, c2) = (control.clone(), control.clone());
    Metrics::new(Sources {
        stats: dataplane.stats(),
        gate: dataplane.gate(),
        store_errors: Box::new(move || crate::store::Store::errors(&*c1.store)),
        nodes: Arc::new(move || {
            c2.live_nodes()
                .into_iter()
                .map(|(id, n)| NodeSample {
                    id: id.to_string(),
                    country: n.country.map(|c| c.to_string()).unwrap_or_default(),
                    score: n.score,
                    active_streams: n.active.load(std::sync::atomic::Ordering::Relaxed),
                    bytes_carried: c2.registry.bytes_carried(&id),
                })
                .collect()
        }),
    })
}

/// Binds the API listener; returns its address (port 0 resolved) and the listener.
fn bind_api(
    runtime: &tokio::runtime::Runtime,
    cfg: &ServerConfig,
) -> Result<(SocketAddr, tokio::net::TcpListener), ServerError> {
    runtime
        .block_on(tokio::net::TcpListener::bind(cfg.api_listen))
        .and_then(|l| Ok((l.local_addr()?, l)))
        .map_err(|source| ServerError::ApiBind {
            addr: cfg.api_listen,
            source,
        })
}

/// Background tasks: the store snapshot every second, and the memory watermark that
/// closes the data plane's gate under overload.
fn spawn_housekeeping(
    runtime: &tokio::runtime::Runtime,
    cfg: &ServerConfig,
    control: &ControlPlane<AnyStore>,
    dataplane: &Dataplane,
) {
    // Balance changes from leases; admin writes are durable before they answer.
    let store = control.store.clone();
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tick.tick().await;
            let store = store.clone();
            let _ = tokio::task::spawn_blocking(move || store.save()).await;
        }
    });
    if let Some(mark) = crate::overload::watermark(cfg.overload_memory_bytes) {
        runtime.spawn(crate::overload::watch(dataplane.gate(), mark));
    }
}

/// Waits for SIGINT or SIGTERM.
pub fn wait_for_signal() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let Ok(rt) = rt else { return };
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    });
}
