//! The `turbo-server run` (and `demo`) flags. Each has a `TURBO_*` environment twin;
//! precedence is flag/env, then the `--config` file, then the defaults.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use crate::config::{ConfigError, ServerConfig};

/// Server flags; each overrides the `--config` file and has a `TURBO_*` twin.
#[derive(Args, Clone, Default)]
pub struct RunArgs {
    /// TOML configuration file.
    #[arg(long, env = "TURBO_CONFIG")]
    pub config: Option<PathBuf>,
    /// SOCKS5 listener [default: 0.0.0.0:1080].
    #[arg(long, env = "TURBO_SOCKS_LISTEN")]
    pub socks_listen: Option<SocketAddr>,
    /// HTTP proxy listener [default: 0.0.0.0:8080].
    #[arg(long, env = "TURBO_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// QUIC (UDP) address nodes dial [default: 0.0.0.0:8443].
    #[arg(long, env = "TURBO_QUIC_LISTEN")]
    pub quic_listen: Option<SocketAddr>,
    /// HTTP API listener [default: 127.0.0.1:9090].
    #[arg(long, env = "TURBO_API_LISTEN")]
    pub api_listen: Option<SocketAddr>,
    /// Data directory: certificate, key, admin token [default: ./turbo-data].
    #[arg(long, env = "TURBO_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Store backend: memory, redis://host:port/db or redis-cluster://host:port,…
    /// (seed nodes) [default: memory].
    #[arg(long, env = "TURBO_STORE")]
    pub store: Option<String>,
    /// Data-plane cores, 0 = all [default: 0].
    #[arg(long, env = "TURBO_CORES")]
    pub cores: Option<usize>,
    /// Admin bearer token [default: generated into DATA_DIR/admin-token].
    #[arg(long, env = "TURBO_ADMIN_TOKEN")]
    pub admin_token: Option<String>,
    /// monoio driver: auto, io_uring or legacy [default: auto].
    #[arg(long, env = "TURBO_DRIVER")]
    pub driver: Option<String>,
    /// host:port written into node invites [default: from --quic-listen].
    #[arg(long, env = "TURBO_PUBLIC_ADDR")]
    pub public_addr: Option<String>,
    /// PEM certificate chain [default: self-signed in DATA_DIR].
    #[arg(long, env = "TURBO_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key [default: generated in DATA_DIR].
    #[arg(long, env = "TURBO_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Drop a silent node after this long, e.g. 5s [default: 5s].
    #[arg(long, env = "TURBO_NODE_LIVENESS")]
    pub node_liveness: Option<humantime::Duration>,
    /// Reclaim a credit lease not renewed for this long, e.g. 30s [default: 30s].
    #[arg(long, env = "TURBO_LEASE_TTL")]
    pub lease_ttl: Option<humantime::Duration>,
    /// MaxMind-format country database for node countries [default: none].
    #[arg(long, env = "TURBO_GEOIP")]
    pub geoip: Option<PathBuf>,
    /// Show per-node series on /metrics without the admin token [default: false].
    #[arg(long, env = "TURBO_METRICS_PER_NODE")]
    pub metrics_per_node: Option<bool>,
    /// Mark dashboard cookies Secure (browsers come over HTTPS) [default: false].
    #[arg(long, env = "TURBO_WEB_SECURE_COOKIES")]
    pub web_secure_cookies: Option<bool>,
    /// Share of a node's streams one key may hold, 0 or 1 = no share [default: 0.25].
    #[arg(long, env = "TURBO_KEY_NODE_SHARE")]
    pub key_node_share: Option<f64>,
    /// Tunnels that moved no byte one key may hold, 0 = no cap [default: 64].
    #[arg(long, env = "TURBO_KEY_IDLE_TUNNELS")]
    pub key_idle_tunnels: Option<u32>,
    /// Cut a tunnel that moved no byte after this long while its node is at 90% of
    /// its streams, e.g. 30s [default: 30s].
    #[arg(long, env = "TURBO_IDLE_TUNNEL_TIMEOUT")]
    pub idle_tunnel_timeout: Option<humantime::Duration>,
    /// Batched UDP on the QUIC socket: auto (GSO/GRO where the kernel has them) or
    /// off [default: auto].
    #[arg(long, env = "TURBO_UDP_OFFLOAD", value_enum)]
    pub udp_offload: Option<crate::config::UdpOffload>,
    /// Congestion control of node connections: cubic, or bbr2 (paced) [default: cubic].
    #[arg(long, env = "TURBO_CONGESTION_CONTROL", value_enum)]
    pub congestion_control: Option<crate::config::CongestionControl>,
    /// PostgreSQL URL of the money ledger, postgres://… [default: none, money
    /// features off].
    #[arg(long, env = "TURBO_LEDGER")]
    pub ledger: Option<String>,
    /// Chain JSON-RPC URL for USDC payments, http(s)://… [default: none, payments
    /// off].
    #[arg(long, env = "TURBO_CHAIN_RPC")]
    pub chain_rpc: Option<String>,
    /// Chain id, checked against --chain-rpc [default: 1].
    #[arg(long, env = "TURBO_CHAIN_ID")]
    pub chain_id: Option<u64>,
    /// USDC (ERC-20) contract address [default: none].
    #[arg(long, env = "TURBO_USDC_CONTRACT")]
    pub usdc_contract: Option<String>,
    /// Confirmations before a payment is credited [default: 12].
    #[arg(long, env = "TURBO_CONFIRMATIONS")]
    pub confirmations: Option<u64>,
    /// Dollars per GB, locked into each invoice [default: 1.0].
    #[arg(long, env = "TURBO_PRICE_USD_PER_GB")]
    pub price_usd_per_gb: Option<String>,
    /// Account-level xpub deposit addresses derive from [default: none].
    #[arg(long, env = "TURBO_DEPOSIT_XPUB")]
    pub deposit_xpub: Option<String>,
    /// Treasury private key file (owner-only) [default: none].
    #[arg(long, env = "TURBO_TREASURY_KEY_FILE")]
    pub treasury_key_file: Option<PathBuf>,
    /// URL invoice status changes are POSTed to [default: none].
    #[arg(long, env = "TURBO_WEBHOOK_URL")]
    pub webhook_url: Option<String>,
    /// Secret webhook signatures are keyed with [default: none].
    #[arg(long, env = "TURBO_WEBHOOK_SECRET")]
    pub webhook_secret: Option<String>,
    /// Validate the configuration and exit.
    #[arg(long)]
    pub check_config: bool,
}

impl RunArgs {
    /// The file named by `--config` (else `base`), overridden by every flag or env
    /// var given, then validated.
    ///
    /// # Errors
    /// [`ConfigError`] when the file cannot be read or parsed, or a value is invalid.
    pub fn load(&self, base: ServerConfig) -> Result<ServerConfig, ConfigError> {
        let mut c = match &self.config {
            Some(path) => ServerConfig::from_file(path)?,
            None => base,
        };
        macro_rules! over {
            ($($f:ident),*) => { $( if let Some(v) = self.$f.clone() { c.$f = v; } )* };
        }
        over!(
            socks_listen,
            http_listen,
            quic_listen,
            api_listen,
            data_dir,
            store,
            cores,
            driver,
            metrics_per_node,
            web_secure_cookies,
            key_node_share,
            key_idle_tunnels,
            udp_offload,
            congestion_control
        );
        if let Some(t) = self.idle_tunnel_timeout {
            c.idle_tunnel_timeout = t.into();
        }
        if self.admin_token.is_some() {
            c.admin_token = self.admin_token.clone();
        }
        if self.public_addr.is_some() {
            c.public_addr = self.public_addr.clone();
        }
        if self.tls_cert.is_some() {
            c.tls_cert = self.tls_cert.clone();
        }
        if self.tls_key.is_some() {
            c.tls_key = self.tls_key.clone();
        }
        if let Some(l) = self.node_liveness {
            c.node_liveness = l.into();
        }
        if self.geoip.is_some() {
            c.geoip = self.geoip.clone();
        }
        macro_rules! some {
            ($($f:ident),*) => { $( if self.$f.is_some() { c.$f = self.$f.clone(); } )* };
        }
        some!(
            chain_rpc,
            usdc_contract,
            deposit_xpub,
            treasury_key_file,
            webhook_url,
            webhook_secret
        );
        if let Some(v) = self.chain_id {
            c.chain_id = v;
        }
        if let Some(v) = self.confirmations {
            c.confirmations = v;
        }
        if let Some(v) = &self.price_usd_per_gb {
            c.price_usd_per_gb = crate::config::UsdAmount::Text(v.clone());
        }
        if self.ledger.is_some() {
            c.ledger = self.ledger.clone();
        }
        if let Some(l) = self.lease_ttl {
            c.lease_ttl = l.into();
        }
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: RunArgs,
    }

    fn parse(argv: &[&str]) -> RunArgs {
        Wrap::parse_from(std::iter::once("turbo-server").chain(argv.iter().copied())).args
    }

    // One test owns every TURBO_* variable, so parallel tests never see them.
    #[test]
    fn flags_and_env_beat_the_file_which_beats_defaults() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("turbo.toml");
        std::fs::write(
            &file,
            "socks_listen = \"127.0.0.1:2000\"\nhttp_listen = \"127.0.0.1:2001\"\ncores = 3\n",
        )
        .expect("write");
        let file = file.to_string_lossy().into_owned();

        let c = parse(&[]).load(ServerConfig::default()).expect("defaults");
        assert_eq!(c.socks_listen, ServerConfig::default().socks_listen);

        let c = parse(&["--config", &file])
            .load(ServerConfig::default())
            .expect("file");
        assert_eq!(
            (c.socks_listen.port(), c.http_listen.port(), c.cores),
            (2000, 2001, 3)
        );
        assert_eq!(c.api_listen, ServerConfig::default().api_listen);

        let c = parse(&[
            "--config",
            &file,
            "--socks-listen",
            "127.0.0.1:3000",
            "--node-liveness",
            "2s",
        ])
        .load(ServerConfig::default())
        .expect("flags");
        assert_eq!((c.socks_listen.port(), c.http_listen.port()), (3000, 2001));
        assert_eq!(c.node_liveness, std::time::Duration::from_secs(2));

        std::env::set_var("TURBO_CORES", "5");
        let env = parse(&["--config", &file]).load(ServerConfig::default());
        let flag = parse(&["--config", &file, "--cores", "7"]).load(ServerConfig::default());
        std::env::remove_var("TURBO_CORES");
        assert_eq!(env.expect("env").cores, 5);
        assert_eq!(flag.expect("flag").cores, 7);
    }

    #[test]
    fn invalid_values_are_refused() {
        let err = parse(&["--store", "mysql://localhost"])
            .load(ServerConfig::default())
            .expect_err("only memory and redis");
        assert!(err.to_string().contains("redis:// URL"));
        parse(&["--store", "redis://127.0.0.1:6379/1"])
            .load(ServerConfig::default())
            .expect("redis urls are accepted");
        assert!(parse(&["--node-liveness", "61s"])
            .load(ServerConfig::default())
            .is_err());
        assert!(parse(&["--key-node-share", "1.5"])
            .load(ServerConfig::default())
            .is_err());
        let c = parse(&["--key-idle-tunnels", "3", "--idle-tunnel-timeout", "2s"])
            .load(ServerConfig::default())
            .expect("fair-share flags");
        assert_eq!(c.key_idle_tunnels, 3);
        assert_eq!(c.idle_tunnel_timeout, std::time::Duration::from_secs(2));
        assert!(parse(&["--driver", "epoll"])
            .load(ServerConfig::default())
            .is_err());
        assert!(parse(&["--tls-cert", "/x.pem"])
            .load(ServerConfig::default())
            .is_err());
    }
}
