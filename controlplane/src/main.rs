//! `turbo-server`: runs the Turbo server (data plane + control plane), a one-command
//! demo, and the operator's client commands for the HTTP API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use turbo_controlplane::cli::RunArgs;
use turbo_controlplane::config::check::ConfigCmd;
use turbo_controlplane::config::ServerConfig;
use turbo_controlplane::server::{wait_for_signal, Server};
use turbo_controlplane::store::Store;

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
#[command(
    name = "turbo-server",
    version = VERSION,
    about = "Turbo proxy server: customers in over SOCKS5/HTTP, out through nodes over QUIC"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server.
    Run(RunArgs),
    /// Run a complete network on loopback: server, one local node, a demo key and a
    /// local target, then print a curl line to try.
    Demo(RunArgs),
    /// Check a configuration: `config check --config FILE` validates it and prints
    /// every effective value with its source.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// Manage customer API keys through the HTTP API.
    Keys {
        #[command(subcommand)]
        cmd: KeysCmd,
    },
    /// Manage nodes through the HTTP API.
    Nodes {
        #[command(subcommand)]
        cmd: NodesCmd,
    },
    /// The money ledger (a server started with --ledger).
    Ledger {
        #[command(subcommand)]
        cmd: LedgerCmd,
    },
    /// Runner payouts (a server started with --ledger).
    Payouts {
        #[command(subcommand)]
        cmd: PayoutsCmd,
    },
    /// USDC invoices (a server with chain_rpc).
    Invoices {
        #[command(subcommand)]
        cmd: InvoicesCmd,
    },
    /// Dashboard accounts.
    Users {
        #[command(subcommand)]
        cmd: UsersCmd,
    },
    /// The abuse detector's verdicts.
    Verdicts {
        #[command(subcommand)]
        cmd: VerdictsCmd,
    },
    /// The Redis store itself.
    Store {
        #[command(subcommand)]
        cmd: StoreCmd,
    },
}

#[derive(Subcommand)]
enum StoreCmd {
    /// Moves a Redis store from key schema v1 to v2 (cluster-safe); prints what moved
    /// (JSON). Stop every server first; safe to run again after a crash.
    Migrate {
        /// The store: redis://host:port/db (schema v1 lives on one Redis).
        #[arg(long, env = "TURBO_STORE")]
        store: String,
        /// Count what would move; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Prints the store's key schema version.
    Version {
        /// The store: redis://host:port/db or redis-cluster://host:port,….
        #[arg(long, env = "TURBO_STORE")]
        store: String,
    },
}

#[derive(Subcommand)]
enum VerdictsCmd {
    /// Every verdict kept, newest first (JSON).
    List {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Ends a verdict now and restores its key's service; prints it (JSON).
    Lift {
        /// The verdict's id (`v_…`).
        id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Subcommand)]
enum UsersCmd {
    /// Make an account; prints its id, email and role, and a one-time password as the
    /// last word.
    Create {
        /// Its email (sign-in name).
        #[arg(long)]
        email: String,
        /// What it may do.
        #[arg(long, value_enum)]
        role: turbo_controlplane::accounts::Role,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// List accounts (JSON).
    List {
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Subcommand)]
enum InvoicesCmd {
    /// Make an invoice crediting a key; prints it (JSON), with its deposit address and
    /// an EIP-681 payment URI.
    Create {
        /// The key to credit.
        #[arg(long)]
        key: String,
        /// Dollars, as a decimal (25, 9.99).
        #[arg(long)]
        usd: String,
        /// Seconds the invoice stays open [default: 3600].
        #[arg(long)]
        ttl_seconds: Option<i64>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Print an invoice (JSON) with its current status.
    Show {
        /// The invoice id.
        id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Subcommand)]
enum LedgerCmd {
    /// Feed and settle usage, then print the reconciliation (JSON); exits 1 when it is
    /// not ok.
    Reconcile {
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Subcommand)]
enum PayoutsCmd {
    /// Pay every node over the threshold into the server's payouts.csv (refused while
    /// the ledger does not reconcile).
    Run {
        /// Only print what would be paid.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
}

/// Where a client command finds the API.
#[derive(Args)]
struct ApiArgs {
    /// API base URL.
    #[arg(long, env = "TURBO_API", default_value = "http://127.0.0.1:9090")]
    api: String,
    /// Admin token (else read from DATA_DIR/admin-token).
    #[arg(long, env = "TURBO_ADMIN_TOKEN")]
    admin_token: Option<String>,
    /// Data directory holding admin-token.
    #[arg(long, env = "TURBO_DATA_DIR", default_value = "turbo-data")]
    data_dir: PathBuf,
}

impl ApiArgs {
    fn token(&self) -> Result<String> {
        if let Some(t) = &self.admin_token {
            return Ok(t.clone());
        }
        let path = self.data_dir.join("admin-token");
        Ok(std::fs::read_to_string(&path)
            .with_context(|| format!("no --admin-token and cannot read {}", path.display()))?
            .trim()
            .to_owned())
    }

    fn post(&self, path: &str, body: serde_json::Value) -> Result<serde_json::Value> {
        let req = ureq::post(&format!("{}{path}", self.api.trim_end_matches('/')))
            .set("Authorization", &format!("Bearer {}", self.token()?));
        Self::answer(req.send_json(body))
    }

    fn get(&self, path: &str) -> Result<serde_json::Value> {
        let req = ureq::get(&format!("{}{path}", self.api.trim_end_matches('/')))
            .set("Authorization", &format!("Bearer {}", self.token()?));
        Self::answer(req.call())
    }

    fn answer(resp: Result<ureq::Response, ureq::Error>) -> Result<serde_json::Value> {
        match resp {
            Ok(r) => Ok(r.into_json()?),
            Err(ureq::Error::Status(code, r)) => {
                bail!(
                    "API answered {code}: {}",
                    r.into_string().unwrap_or_default()
                )
            }
            Err(e) => bail!("API unreachable: {e}"),
        }
    }
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Create a key; prints only the key.
    Create {
        /// Label.
        #[arg(long)]
        name: String,
        /// Credits, e.g. 10GB, 1.5GiB or bytes.
        #[arg(long)]
        credits: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// List keys with balances and usage (JSON lines).
    List {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Show one key's balance and usage (JSON).
    Show {
        /// Key id (`k_…`).
        id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Add credits to a key; every server sharing the store sees it at once.
    TopUp {
        /// Key id (`k_…`).
        id: String,
        /// Credits to add, e.g. 10GB.
        #[arg(long)]
        credits: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Revoke a key; every server closes its connections.
    Revoke {
        /// Key id (`k_…`).
        id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Subcommand)]
enum NodesCmd {
    /// Create a node invite; prints only the join string.
    Invite {
        /// Where the runner is paid (only the operator sets it, never the node).
        #[arg(long)]
        payout_address: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Show one node: identity, payout address, revoked, connection (JSON).
    Show {
        /// Node id (`n_…`).
        id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Set where a node's runner is paid.
    Payout {
        /// Node id (`n_…`).
        id: String,
        /// The payout address.
        address: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Revoke a node's token; every server closes its connection at once and refuses
    /// the token afterwards.
    Revoke {
        /// Node id (`n_…`).
        id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

fn main() -> Result<()> {
    turbo_telemetry::init();
    let matches = Cli::command().get_matches();
    match Cli::from_arg_matches(&matches)
        .unwrap_or_else(|e| e.exit())
        .cmd
    {
        Cmd::Run(args) => {
            let cfg = args.load(ServerConfig::default())?;
            if args.check_config {
                println!("configuration ok");
                return Ok(());
            }
            let server = Server::start(&cfg)?;
            wait_for_signal();
            tracing::info!("shutting down");
            server.shutdown();
        }
        Cmd::Demo(args) => demo(args)?,
        Cmd::Config { cmd } => turbo_controlplane::config::check::run(&cmd, &matches)?,
        Cmd::Keys {
            cmd: KeysCmd::Create { name, credits, api },
        } => {
            turbo_controlplane::size::parse_size(&credits)?;
            let v = api.post(
                "/api/keys",
                serde_json::json!({"name": name, "credits": credits}),
            )?;
            println!("{}", v["key"].as_str().context("no key in answer")?);
        }
        Cmd::Keys {
            cmd: KeysCmd::List { api },
        } => {
            for k in api.get("/api/keys")?.as_array().context("no list")? {
                println!("{k}");
            }
        }
        Cmd::Keys {
            cmd: KeysCmd::Show { id, api },
        } => println!("{}", api.get(&format!("/api/keys/{id}"))?),
        Cmd::Keys {
            cmd: KeysCmd::TopUp { id, credits, api },
        } => {
            turbo_controlplane::size::parse_size(&credits)?;
            let v = api.post(
                &format!("/api/keys/{id}/credits"),
                serde_json::json!({ "credits": credits }),
            )?;
            println!("{v}");
        }
        Cmd::Keys {
            cmd: KeysCmd::Revoke { id, api },
        } => println!(
            "{}",
            api.post(&format!("/api/keys/{id}/revoke"), serde_json::Value::Null)?
        ),
        Cmd::Nodes { cmd } => nodes(cmd)?,
        Cmd::Ledger {
            cmd: LedgerCmd::Reconcile { api },
        } => {
            let v = api.get("/api/ledger/reconcile")?;
            println!("{v}");
            if v["ok"] != serde_json::Value::Bool(true) {
                std::process::exit(1);
            }
        }
        Cmd::Invoices { cmd } => invoices(cmd)?,
        Cmd::Users { cmd } => users(cmd)?,
        Cmd::Verdicts { cmd } => verdicts(cmd)?,
        Cmd::Store { cmd } => store(cmd)?,
        Cmd::Payouts {
            cmd: PayoutsCmd::Run { dry_run, api },
        } => {
            let body = serde_json::json!({ "dry_run": dry_run });
            println!("{}", api.post("/api/payouts/run", body)?);
        }
    }
    Ok(())
}

/// `turbo-server store …`: straight to Redis, no server needed.
fn store(cmd: StoreCmd) -> Result<()> {
    use turbo_controlplane::store::RedisStore;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cmd {
            StoreCmd::Migrate { store, dry_run } => {
                let redis = RedisStore::connect_any_schema(&store).await?;
                let done = redis.migrate_v1(dry_run).await?;
                println!("{}", serde_json::to_string(&done)?);
            }
            StoreCmd::Version { store } => {
                let redis = RedisStore::connect_any_schema(&store).await?;
                println!("{}", redis.schema_version().await?);
            }
        }
        Ok(())
    })
}

/// `turbo-server verdicts …`.
fn verdicts(cmd: VerdictsCmd) -> Result<()> {
    match cmd {
        VerdictsCmd::List { api } => println!("{}", api.get("/api/verdicts")?),
        VerdictsCmd::Lift { id, api } => println!(
            "{}",
            api.post(&format!("/api/verdicts/{id}/lift"), serde_json::json!({}))?
        ),
    }
    Ok(())
}

/// `turbo-server users …`.
fn users(cmd: UsersCmd) -> Result<()> {
    match cmd {
        UsersCmd::Create { email, role, api } => {
            let body = serde_json::json!({ "email": email, "role": role.as_str() });
            let v = api.post("/api/users", body)?;
            let field = |f: &str| v[f].as_str().unwrap_or_default().to_owned();
            println!(
                "created {} {} ({}); one-time password: {}",
                field("role"),
                field("email"),
                field("id"),
                field("password")
            );
        }
        UsersCmd::List { api } => println!("{}", api.get("/api/users")?),
    }
    Ok(())
}

/// `turbo-server invoices …`.
fn invoices(cmd: InvoicesCmd) -> Result<()> {
    match cmd {
        InvoicesCmd::Create {
            key,
            usd,
            ttl_seconds,
            api,
        } => {
            let body = serde_json::json!({ "key_id": key, "usd": usd, "ttl_seconds": ttl_seconds });
            println!("{}", api.post("/api/invoices", body)?);
        }
        InvoicesCmd::Show { id, api } => println!("{}", api.get(&format!("/api/invoices/{id}"))?),
    }
    Ok(())
}

/// `turbo-server nodes …`.
fn nodes(cmd: NodesCmd) -> Result<()> {
    match cmd {
        NodesCmd::Invite {
            payout_address,
            api,
        } => {
            let body = serde_json::json!({ "payout_address": payout_address });
            let v = api.post("/api/nodes/invite", body)?;
            println!("{}", v["join"].as_str().context("no join in answer")?);
        }
        NodesCmd::Show { id, api } => println!("{}", api.get(&format!("/api/nodes/{id}"))?),
        NodesCmd::Payout { id, address, api } => {
            let body = serde_json::json!({ "payout_address": address });
            println!("{}", api.post(&format!("/api/nodes/{id}/payout"), body)?);
        }
        NodesCmd::Revoke { id, api } => println!(
            "{}",
            api.post(&format!("/api/nodes/{id}/revoke"), serde_json::Value::Null)?
        ),
    }
    Ok(())
}

/// The demo: everything on loopback, one command.
fn demo(args: RunArgs) -> Result<()> {
    let base = ServerConfig {
        socks_listen: ([127, 0, 0, 1], 1080).into(),
        http_listen: ([127, 0, 0, 1], 8080).into(),
        quic_listen: ([127, 0, 0, 1], 8443).into(),
        data_dir: PathBuf::from("turbo-demo"),
        ..ServerConfig::default()
    };
    let cfg = args.load(base)?;
    let server = Server::start(&cfg)?;
    let store = server.control.store.clone();
    let (_, key) = server.block_on(async { store.create_key("demo", 10_000_000_000).await })?;
    let (_, token) = server.block_on(async { store.create_node(None).await })?;
    let st = &server.api_state;
    let join = turbo_proto::join::JoinString {
        token,
        host: st.public_host.clone(),
        port: st.public_port,
        pin: Some(st.pin),
    };
    let mut node_cfg = turbo_node::NodeConfig::new(join);
    node_cfg.allow_cidrs = vec!["127.0.0.0/8".parse()?, "::1/128".parse()?];
    let node = turbo_node::spawn(node_cfg)?;
    let target = serve_hello()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while server.control.live_nodes().is_empty() {
        if std::time::Instant::now() > deadline {
            bail!("the demo node did not connect within 15s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (socks, http) = (server.addrs.socks, server.addrs.http);
    println!("\nTurbo demo is running: server, one node, a key with 10 GB of credits.");
    println!("Try (Ctrl-C to stop):\n");
    if let Some(s) = socks {
        println!("  curl -x socks5h://demo:{key}@{s} http://{target}/");
    }
    if let Some(h) = http {
        println!("  curl -x http://demo:{key}@{h} http://{target}/");
    }
    println!(
        "\nDashboard: http://{}/signup (sign up as a customer or a runner)",
        server.api
    );
    println!(
        "API: http://{} (admin token in {}/admin-token)\n",
        server.api,
        cfg.data_dir.display()
    );
    wait_for_signal();
    node.shutdown();
    server.shutdown();
    Ok(())
}

/// A tiny local web page, so the demo works without internet access.
fn serve_hello() -> Result<SocketAddr> {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf);
                let body = "Hello from the Turbo demo target: this page came through a node.\n";
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    Ok(addr)
}
