//! `turbo-server` configuration: a serde TOML file, overridden by command-line flags and
//! their `TURBO_*` environment twins, validated once at start-up.

pub mod check;
pub(crate) mod durations;
mod transport;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use durations::humantime_serde_compat;
pub(crate) use durations::optional_duration;
use serde::{Deserialize, Serialize};
pub use transport::{CongestionControl, UdpOffload};

/// Configuration problems found at start-up.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for this schema.
    #[error("parsing {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: toml::de::Error,
    },
    /// A value is out of range or unsupported.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The setting.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// Server settings. Every field can be set in the TOML file, by flag, or by env var.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// SOCKS5 listener. Defaults to `0.0.0.0:1080`.
    pub socks_listen: SocketAddr,
    /// HTTP proxy listener. Defaults to `0.0.0.0:8080`.
    pub http_listen: SocketAddr,
    /// UDP address nodes dial (QUIC). Defaults to `0.0.0.0:8443`.
    pub quic_listen: SocketAddr,
    /// Admin/API listener. Defaults to `127.0.0.1:9090`.
    pub api_listen: SocketAddr,
    /// Where the certificate, key and admin token live. Defaults to `./turbo-data`.
    pub data_dir: PathBuf,
    /// Store backend: `memory` (embedded, lost on exit), `redis://host:port/db` (one
    /// Redis shared by every server pointing at it) or
    /// `redis-cluster://host:port[,host:port…]` (a Redis Cluster's seed nodes).
    /// Defaults to `memory`.
    pub store: String,
    /// Data-plane cores; 0 means one per available CPU. Defaults to `0`.
    pub cores: usize,
    /// monoio driver: `auto`, `io_uring` or `legacy`. Defaults to `auto`.
    pub driver: String,
    /// Admin bearer token. Defaults to one generated into `DATA_DIR/admin-token`.
    pub admin_token: Option<String>,
    /// `host:port` that invites tell nodes to dial. Defaults to `quic_listen`, with an
    /// unspecified IP replaced by `127.0.0.1`.
    pub public_addr: Option<String>,
    /// PEM certificate chain. Defaults to a self-signed one generated in `data_dir`.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`. Defaults to the generated one.
    pub tls_key: Option<PathBuf>,
    /// Time a customer has to finish the SOCKS5/HTTP handshake. Defaults to `10s`.
    #[serde(with = "humantime_serde_compat")]
    pub handshake_timeout: Duration,
    /// Most customer connections open on the server (0: no limit); beyond it new ones
    /// get HTTP 503 / are closed at once. Defaults to `100000`.
    pub max_connections: usize,
    /// Most customer connections open per listener (SOCKS5, HTTP). Defaults to `100000`.
    pub max_connections_per_listener: usize,
    /// Most tunnels one key may hold open (SOCKS5 0x02, HTTP 429). Defaults to `2000`.
    pub max_connections_per_key: u32,
    /// New tunnels one key may open per second, with a one-second burst (SOCKS5 0x02,
    /// HTTP 429). Defaults to `500`.
    pub new_connections_per_key_per_sec: u32,
    /// New tunnels per second to one site (registrable domain, or IPv4 /24 / IPv6
    /// /48) from all customers together, per server; 0 for no cap. Defaults to `1000`.
    pub site_new_connections_per_sec: u32,
    /// Share of one node's stream limit (`max_streams`) one key may hold, at least one
    /// stream; `0` or `1` disables it. Routing skips nodes where the key holds its
    /// share; when every eligible node is at it, SOCKS5 0x02 / HTTP 429
    /// `key_node_share`. Defaults to `0.25`.
    pub key_node_share: f64,
    /// Tunnels that moved no byte since their node connected that one key may hold
    /// (`0`: no cap); beyond, new tunnels get SOCKS5 0x02 / HTTP 429
    /// `key_idle_tunnels`. Defaults to `64`.
    pub key_idle_tunnels: u32,
    /// A tunnel that moved no byte is cut after this long while its node has 90% of
    /// its streams or more in use (the relay idle timeout applies otherwise). Defaults
    /// to `30s`.
    #[serde(with = "humantime_serde_compat")]
    pub idle_tunnel_timeout: Duration,
    /// On SIGTERM/SIGINT the listeners close, nodes are told the server drains, and open
    /// tunnels may finish for this long before they are cut. Defaults to `30s`.
    #[serde(with = "humantime_serde_compat")]
    pub shutdown_grace: Duration,
    /// A tunnel with no byte either way for this long is closed. Defaults to `300s`.
    #[serde(with = "humantime_serde_compat")]
    pub relay_idle_timeout: Duration,
    /// A tunnel direction that holds bytes it cannot pass on for this long (the customer
    /// stopped reading, or the node stopped accepting or reporting deliveries) is cut,
    /// well before the idle timeout (a stall longer than `relay_idle_timeout` is cut as
    /// idle first). Defaults to `30s`.
    #[serde(with = "humantime_serde_compat")]
    pub relay_stall_timeout: Duration,
    /// Bytes of credit every tunnel the node opens costs on top of its traffic, credited
    /// to the node like traffic (dialing is work too). Defaults to `1000`.
    pub connection_cost: u64,
    /// UDP offload on the node socket: `"auto"` receives node datagrams in GRO batches
    /// where the kernel offers it, `"off"` reads one datagram per call. Defaults to
    /// `"auto"`.
    pub udp_offload: UdpOffload,
    /// Congestion control of node connections (the server sends uploads): `"cubic"`,
    /// or `"bbr2"`, which paces packets over the round trip. Defaults to `"cubic"`.
    pub congestion_control: CongestionControl,
    /// Resident memory above which new customer connections are refused (open ones
    /// carry on) until it falls under 90% of it. `0` means 75% of the memory available
    /// (cgroup limit, else RAM). Defaults to `0`.
    pub overload_memory_bytes: u64,
    /// Node connections handshaking on one core beyond which a new one must first prove
    /// its address with a QUIC Retry (`0`: always). Defaults to `64`.
    pub quic_retry_threshold: usize,
    /// Largest HTTP request head (431 beyond). Defaults to `16384`.
    pub http_max_head_bytes: usize,
    /// Most header lines in an HTTP request head (431 beyond). Defaults to `100`.
    pub http_max_headers: usize,
    /// Time a node has to resolve and connect to a target. Defaults to `10s`.
    #[serde(with = "humantime_serde_compat")]
    pub connect_timeout: Duration,
    /// A silent node is dropped after this long. Defaults to `5s` (at most `60s`).
    #[serde(with = "humantime_serde_compat")]
    pub node_liveness: Duration,
    /// A credit lease not renewed for this long is reclaimed (the crash bound in time).
    /// Defaults to `30s`.
    #[serde(with = "humantime_serde_compat")]
    pub lease_ttl: Duration,
    /// Cores report usage at least this often while it accrues. Defaults to `1s`.
    #[serde(with = "humantime_serde_compat")]
    pub lease_checkpoint: Duration,
    /// A lease unused this long goes back to its key. Defaults to `5s`.
    #[serde(with = "humantime_serde_compat")]
    pub lease_idle_release: Duration,
    /// A known key is trusted by a core this long without asking (revocations still
    /// apply at once). Defaults to `30s`.
    #[serde(with = "humantime_serde_compat")]
    pub auth_cache_ttl: Duration,
    /// An unknown key is refused by a core this long without asking. Defaults to `5s`.
    #[serde(with = "humantime_serde_compat")]
    pub auth_negative_ttl: Duration,
    /// Failed authentications one source IP, or one username, may make per window and
    /// core before it is locked out: then a presented key is refused without a lookup
    /// unless it exists (a key the core has seen valid, or one whose hash tag is among
    /// the store's keys), so a valid key is never refused for someone else's failures.
    /// The lockout lasts one window and doubles with each repeat, up to 64 windows.
    /// Defaults to `20`.
    pub auth_fail_limit: u32,
    /// The window of `auth_fail_limit`. Defaults to `60s`.
    #[serde(with = "humantime_serde_compat")]
    pub auth_fail_window: Duration,
    /// Approximate length cap of the `turbo:conns` feature stream. Defaults to `1000000`.
    pub stream_max_len: u64,
    /// Weight of the latency score L in a node's score. Defaults to `0.6`.
    pub score_latency_weight: f64,
    /// Weight of the reliability score R in a node's score. Defaults to `0.4`.
    pub score_reliability_weight: f64,
    /// Ports every node must refuse, on top of its own policy. Defaults to none.
    pub node_block_ports: Vec<u16>,
    /// CIDR ranges every node must refuse (beating a runner's `--allow-cidr`).
    /// Defaults to none.
    pub node_block_cidrs: Vec<String>,
    /// Domains (and their subdomains) every node must refuse. Defaults to none.
    pub node_block_domains: Vec<String>,
    /// MaxMind-format country database deciding node countries from their public IP.
    /// Defaults to none: the node's declared country is used, marked unverified.
    pub geoip: Option<PathBuf>,
    /// PostgreSQL URL of the money ledger (`postgres://user@host:port/db`). Defaults to
    /// none: the server runs without money features (no ledger, rewards or payouts).
    pub ledger: Option<String>,
    /// The reward policy: rate per GB and bonuses. Defaults to $0.10/GB, stability
    /// +10%/+5%/+2% at 99%/95%/90% uptime over 7 days, streak +1% a day from the third
    /// consecutive day online with traffic, at most +10%.
    pub rewards: turbo_ledger::RewardPolicy,
    /// Abuse detection: the `[detect]` table ([`crate::detect::DetectConfig`]).
    /// Defaults to on, with its own defaults.
    pub detect: crate::detect::DetectConfig,
    /// Smallest payout, in nano-USD. Defaults to `20000000000` ($20).
    pub payout_threshold_nano_usd: i64,
    /// JSON-RPC URL of the chain USDC payments arrive on (`http(s)://` or `ws(s)://`).
    /// Defaults to none: payments are off (invoices answer 503).
    pub chain_rpc: Option<String>,
    /// The chain's id, checked against `chain_rpc` at start-up. Defaults to `1`.
    pub chain_id: u64,
    /// Address of the USDC (ERC-20) contract; its decimals are read from it. Defaults
    /// to none (required with `chain_rpc`).
    pub usdc_contract: Option<String>,
    /// Confirmations a payment needs before it is credited. Defaults to `12`.
    pub confirmations: u64,
    /// Price customers pay per GB, in dollars (`1.0`), locked into each invoice.
    /// Defaults to `1.0`.
    pub price_usd_per_gb: UsdAmount,
    /// Account-level BIP-32 extended public key (`xpub…`) deposit addresses are
    /// derived from (child `0/i` for invoice `i`). Defaults to none (required with
    /// `chain_rpc`).
    pub deposit_xpub: Option<String>,
    /// File holding the treasury's private key (64 hex digits, mode 0600): with
    /// `chain_rpc`, payouts are ERC-20 transfers of the token from this key. Defaults
    /// to none: payouts are written to `DATA_DIR/payouts.csv` for an operator to pay.
    pub treasury_key_file: Option<PathBuf>,
    /// URL every invoice status change is POSTed to. Defaults to none.
    pub webhook_url: Option<String>,
    /// Secret webhook signatures are keyed with. Defaults to none (required with
    /// `webhook_url`).
    pub webhook_secret: Option<String>,
    /// Show the per-node series of `/metrics` (node ids with their bytes, scores and
    /// countries) without the admin token. Defaults to `false`: only a scrape with the
    /// admin bearer token sees them; the aggregate series are public.
    pub metrics_per_node: bool,
    /// Mark the dashboard's cookies `Secure`: set it when browsers reach the API
    /// through HTTPS (a TLS proxy in front of `api_listen`). Defaults to `false`.
    pub web_secure_cookies: bool,
    /// URLs every node is checked against ([`crate::canary`]), each with its content's
    /// SHA-256 or without (then the content is what two nodes agree on). Defaults to
    /// none: canaries are off.
    pub canaries: Vec<crate::canary::CanaryTarget>,
    /// How often every node fetches every canary. Defaults to `10m`.
    #[serde(with = "humantime_serde_compat")]
    pub canary_every: Duration,
    /// Connected nodes admitted per network (public IPv4 address or IPv6 /64), across
    /// accounts and servers; 0 for no limit. Defaults to `1`.
    pub nodes_per_network: u32,
    /// Count loopback and private addresses too (labs and tests). Defaults to `false`:
    /// they are exempt.
    pub nodes_per_network_strict: bool,
    /// How long a node's pairing code (`turbo-node pair`) waits for approval in the
    /// dashboard. Defaults to `10m`.
    #[serde(with = "humantime_serde_compat")]
    pub pair_code_ttl: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            socks_listen: ([0, 0, 0, 0], 1080).into(),
            http_listen: ([0, 0, 0, 0], 8080).into(),
            quic_listen: ([0, 0, 0, 0], 8443).into(),
            api_listen: ([127, 0, 0, 1], 9090).into(),
            data_dir: PathBuf::from("turbo-data"),
            store: "memory".to_owned(),
            cores: 0,
            driver: "auto".to_owned(),
            admin_token: None,
            public_addr: None,
            tls_cert: None,
            tls_key: None,
            handshake_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            max_connections: 100_000,
            max_connections_per_listener: 100_000,
            max_connections_per_key: 2_000,
            new_connections_per_key_per_sec: 500,
            site_new_connections_per_sec: 1_000,
            key_node_share: 0.25,
            key_idle_tunnels: 64,
            idle_tunnel_timeout: Duration::from_secs(30),
            relay_idle_timeout: Duration::from_secs(300),
            relay_stall_timeout: Duration::from_secs(30),
            connection_cost: 1000,
            udp_offload: UdpOffload::Auto,
            congestion_control: CongestionControl::Cubic,
            shutdown_grace: Duration::from_secs(30),
            overload_memory_bytes: 0,
            quic_retry_threshold: 64,
            http_max_head_bytes: 16 * 1024,
            http_max_headers: 100,
            node_liveness: Duration::from_secs(5),
            lease_ttl: Duration::from_secs(30),
            lease_checkpoint: Duration::from_secs(1),
            lease_idle_release: Duration::from_secs(5),
            auth_cache_ttl: Duration::from_secs(30),
            auth_negative_ttl: Duration::from_secs(5),
            auth_fail_limit: 20,
            auth_fail_window: Duration::from_secs(60),
            stream_max_len: 1_000_000,
            score_latency_weight: 0.6,
            score_reliability_weight: 0.4,
            geoip: None,
            metrics_per_node: false,
            web_secure_cookies: false,
            pair_code_ttl: crate::pairing::api::DEFAULT_TTL,
            canaries: Vec::new(),
            canary_every: Duration::from_secs(600),
            nodes_per_network: 1,
            nodes_per_network_strict: false,
            ledger: None,
            rewards: turbo_ledger::RewardPolicy::default(),
            detect: crate::detect::DetectConfig::default(),
            payout_threshold_nano_usd: 20_000_000_000,
            chain_rpc: None,
            chain_id: 1,
            usdc_contract: None,
            confirmations: 12,
            price_usd_per_gb: UsdAmount::Text("1.0".into()),
            deposit_xpub: None,
            treasury_key_file: None,
            webhook_url: None,
            webhook_secret: None,
            node_block_ports: Vec::new(),
            node_block_cidrs: Vec::new(),
            node_block_domains: Vec::new(),
        }
    }
}

/// Durations as humantime strings (`"5s"`, `"250ms"`).
/// A [`ConfigError::Invalid`] for `field`.
fn invalid(field: &'static str, reason: &str) -> Result<(), ConfigError> {
    Err(ConfigError::Invalid {
        field,
        reason: reason.to_owned(),
    })
}

impl ServerConfig {
    /// Reads a TOML file.
    ///
    /// # Errors
    /// [`ConfigError::Read`] or [`ConfigError::Parse`].
    pub fn from_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// Checks every value.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first bad setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let redis = [
            "redis://",
            "rediss://",
            "redis-cluster://",
            "rediss-cluster://",
        ];
        if self.store != "memory" && !redis.iter().any(|s| self.store.starts_with(s)) {
            return invalid(
                "store",
                "must be `memory`, a redis:// URL or redis-cluster://host:port,… seeds",
            );
        }
        if let Some(url) = &self.ledger {
            if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
                return invalid("ledger", "must be a postgres:// URL");
            }
        }
        if let Err(e) = self.rewards.validate() {
            return invalid("rewards", &e.to_string());
        }
        if let Err(e) = self.detect.validate() {
            return invalid("detect", &e);
        }
        if self.payout_threshold_nano_usd < 1 {
            return invalid("payout_threshold_nano_usd", "must be positive");
        }
        if let Err((field, reason)) = crate::payments::validate(self) {
            return invalid(field, &reason);
        }
        if self.relay_idle_timeout < Duration::from_secs(1) {
            return invalid("relay_idle_timeout", "must be at least 1s");
        }
        if self.relay_stall_timeout < Duration::from_secs(1) {
            return invalid("relay_stall_timeout", "must be at least 1s");
        }
        if self.connection_cost > 1 << 30 {
            return invalid("connection_cost", "must be at most 1 GiB");
        }
        if !(0.0..=1.0).contains(&self.key_node_share) {
            return invalid("key_node_share", "must be between 0 and 1");
        }
        if self.idle_tunnel_timeout < Duration::from_secs(1) {
            return invalid("idle_tunnel_timeout", "must be at least 1s");
        }
        if !(256..=1 << 20).contains(&self.http_max_head_bytes) {
            return invalid("http_max_head_bytes", "must be between 256 and 1048576");
        }
        if !(8..=10_000).contains(&self.http_max_headers) {
            return invalid("http_max_headers", "must be between 8 and 10000");
        }
        if !self
            .canaries
            .iter()
            .all(crate::canary::CanaryTarget::is_valid)
        {
            return invalid(
                "canaries",
                "each needs an http(s):// url and, if any, a 64-hex-digit sha256 and \
                 takes of at most 10s",
            );
        }
        if self.canary_every < Duration::from_secs(1) {
            return invalid("canary_every", "must be at least 1s");
        }
        if self.pair_code_ttl < Duration::from_secs(1)
            || self.pair_code_ttl > Duration::from_secs(3600)
        {
            return invalid("pair_code_ttl", "must be from 1s to 1h");
        }
        if self.lease_checkpoint.is_zero() || self.lease_checkpoint * 3 > self.lease_ttl {
            return invalid(
                "lease_checkpoint",
                "must be positive and at most a third of lease_ttl",
            );
        }
        self.validate_nodes()
    }

    /// Checks the node-facing values: policies, scoring, liveness, the driver and TLS.
    fn validate_nodes(&self) -> Result<(), ConfigError> {
        if let Some(bad) = self
            .node_block_cidrs
            .iter()
            .find(|c| c.parse::<ipnet::IpNet>().is_err())
        {
            return invalid("node_block_cidrs", &format!("{bad:?} is not a CIDR range"));
        }
        let limit = turbo_proto::wire::control::MAX_POLICY_ENTRIES;
        if self.node_block_ports.len() > limit
            || self.node_block_cidrs.len() > limit
            || self.node_block_domains.len() > limit
            || self
                .node_block_domains
                .iter()
                .any(|d| d.is_empty() || d.len() > 253)
        {
            return invalid(
                "node_block_*",
                "at most 64 entries each, domains of 1 to 253 bytes",
            );
        }
        let (wl, wr) = (self.score_latency_weight, self.score_reliability_weight);
        if !(0.0..=1.0).contains(&wl) || !(0.0..=1.0).contains(&wr) || wl + wr <= 0.0 {
            return invalid("score weights", "each in [0, 1], not both zero");
        }
        if self.lease_idle_release.is_zero() || self.auth_fail_window.is_zero() {
            return invalid("lease_idle_release/auth_fail_window", "must be positive");
        }
        if !matches!(self.driver.as_str(), "auto" | "io_uring" | "legacy") {
            return invalid("driver", "must be auto, io_uring or legacy");
        }
        if self.cores > 255 {
            return invalid("cores", "at most 255");
        }
        if self.node_liveness < Duration::from_millis(500)
            || self.node_liveness > Duration::from_secs(60)
        {
            return invalid("node_liveness", "must be between 500ms and 60s");
        }
        if self.handshake_timeout.is_zero() || self.connect_timeout.is_zero() {
            return invalid("timeouts", "must be positive");
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return invalid("tls_cert/tls_key", "set both or neither");
        }
        if let Some(t) = &self.admin_token {
            if t.len() < 8 {
                return invalid("admin_token", "at least 8 characters");
            }
        }
        Ok(())
    }

    /// The address invites point nodes at.
    pub fn public_addr(&self) -> String {
        if let Some(a) = &self.public_addr {
            return a.clone();
        }
        let mut addr = self.quic_listen;
        if addr.ip().is_unspecified() {
            addr.set_ip([127, 0, 0, 1].into());
        }
        addr.to_string()
    }

    /// Cores to run.
    pub fn effective_cores(&self) -> usize {
        if self.cores == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            self.cores
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        ServerConfig::default().validate().expect("valid");
        assert_eq!(ServerConfig::default().public_addr(), "127.0.0.1:8443");
    }

    #[test]
    fn toml_overrides_and_validation() {
        let c: ServerConfig = toml::from_str(
            "socks_listen = \"127.0.0.1:1999\"\nnode_liveness = \"2s\"\nstore = \"memory\"",
        )
        .expect("parse");
        assert_eq!(c.socks_listen.port(), 1999);
        assert_eq!(c.node_liveness, Duration::from_secs(2));
        assert!(toml::from_str::<ServerConfig>("nope = 1").is_err());
        let bad = ServerConfig {
            store: "postgres://x".into(),
            ..Default::default()
        };
        assert!(bad.validate().is_err());
        let redis = ServerConfig {
            store: "redis://127.0.0.1:6379/0".into(),
            ..Default::default()
        };
        redis.validate().expect("redis urls are accepted");
        let bad = ServerConfig {
            lease_ttl: Duration::from_secs(2),
            ..Default::default()
        };
        assert!(bad.validate().is_err(), "checkpoint must fit the ttl");
        let bad = ServerConfig {
            node_liveness: Duration::from_secs(120),
            ..Default::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn canary_timings_parse_and_are_bounded() {
        let table = |takes: &str| {
            format!("[[canaries]]\nurl = \"http://c.example/\"\ntakes = \"{takes}\"\n")
        };
        let ok: ServerConfig = toml::from_str(&table("300ms")).expect("parse");
        assert_eq!(ok.canaries[0].takes, Some(Duration::from_millis(300)));
        ok.validate().expect("300ms is fine");
        let slow: ServerConfig = toml::from_str(&table("11s")).expect("parse");
        assert!(slow.validate().is_err(), "longer than a fetch may wait");
        assert!(toml::from_str::<ServerConfig>(&table("soon")).is_err());
    }
}

/// A dollar amount in the config: a TOML number (`1.0`) or string (`"1.0"`), read as
/// a decimal (the number through its shortest exact text), never as a float.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum UsdAmount {
    /// `"1.0"`.
    Text(String),
    /// `1.0`.
    Number(f64),
}

impl UsdAmount {
    /// The amount in nano-USD.
    ///
    /// # Errors
    /// What is wrong with the amount.
    pub fn nano(&self) -> Result<i64, turbo_chain::amount::AmountError> {
        match self {
            UsdAmount::Text(t) => turbo_chain::amount::parse_usd(t),
            UsdAmount::Number(n) => turbo_chain::amount::parse_usd(&n.to_string()),
        }
    }
}
