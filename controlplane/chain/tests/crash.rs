//! Crediting under SIGKILL: six invoices paid and confirmed are credited by a
//! follower process that is SIGKILLed as soon as it credited the first, started again
//! and SIGKILLed after the third, and then replaced by a follower that finishes. Each
//! payment is in the ledger once and applied to the key's balance once, whatever the
//! kill interrupted.
//!
//! The key balances live in a directory (one file per applied operation, written by
//! rename), standing in for the store's once-per-operation add across processes.

mod fixtures;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bip32::{Prefix, XPrv};
use fixtures::{Evm, Postgres};
use serde::{Deserialize, Serialize};
use turbo_chain::rpc::Chain;
use turbo_chain::xpub::DepositKeys;
use turbo_chain::{CreditSink, Gateway, GatewayConfig};
use turbo_ledger::{AccountRef, Asset, Ledger};

const USD: i64 = 1_000_000_000;
const UNITS: u64 = 1_000_000;
const INVOICES: usize = 6;
const WORKER_ENV: &str = "TURBO_TEST_FOLLOWER_WORKER";

/// What the follower process needs.
#[derive(Serialize, Deserialize, Clone)]
struct Job {
    ledger: String,
    rpc: String,
    token: alloy::primitives::Address,
    credits: PathBuf,
}

/// Key balances as files: `<dir>/<op>` holds `<key> <bytes>`.
struct FileCredits(PathBuf);

impl FileCredits {
    /// (key, bytes) of every applied operation.
    fn applied(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.0).expect("credits dir").flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue; // a write the kill interrupted before its rename
            }
            let text = std::fs::read_to_string(entry.path()).expect("credit");
            let (key, bytes) = text.split_once(' ').expect("key bytes");
            out.push((key.to_owned(), bytes.parse().expect("bytes")));
        }
        out
    }
}

impl CreditSink for FileCredits {
    fn add_once<'a>(
        &'a self,
        key_id: &'a str,
        bytes: u64,
        op: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            let name = op.replace(':', "_");
            let path = self.0.join(&name);
            if path.exists() {
                return Ok(());
            }
            let tmp = self.0.join(format!(".{name}.{}", std::process::id()));
            std::fs::write(&tmp, format!("{key_id} {bytes}")).map_err(|e| e.to_string())?;
            std::fs::rename(&tmp, &path).map_err(|e| e.to_string())
        })
    }
}

fn xpub() -> String {
    let path = "m/44'/60'/0'".parse().expect("path");
    let account = XPrv::derive_from_path(&[7u8; 64], &path).expect("account key");
    account.public_key().to_string(Prefix::XPUB)
}

async fn gateway(job: &Job) -> Gateway {
    let ledger = Ledger::connect(&job.ledger).await.expect("ledger");
    let chain = Chain::connect(&job.rpc, job.token, None)
        .await
        .expect("chain");
    let config = GatewayConfig {
        chain_id: 31337,
        token: job.token,
        confirmations: 2,
        price_nano_per_gb: USD,
        deposit: DepositKeys::parse(&xpub()).expect("xpub"),
    };
    let credits = Arc::new(FileCredits(job.credits.clone()));
    Gateway::start(chain, ledger, config, credits)
        .await
        .expect("gateway")
}

/// The process the test kills: follows the chain until it is killed. Ignored in
/// normal runs; the test starts it.
#[tokio::test]
#[ignore = "the follower process that the crash test starts and SIGKILLs"]
async fn follower_worker() {
    let Ok(job) = std::env::var(WORKER_ENV) else {
        return;
    };
    let job: Job = serde_json::from_str(&job).expect("job");
    let gateway = gateway(&job).await;
    loop {
        gateway.tick().await.expect("tick");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn spawn_worker(job: &Job) -> Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "follower_worker", "--ignored", "--nocapture"])
        .env(WORKER_ENV, serde_json::to_string(job).expect("job"))
        .spawn()
        .expect("spawn the follower")
}

/// Payments posted to the ledger so far.
async fn posted(ledger: &Ledger) -> i64 {
    let client = ledger.pool().get().await.expect("db");
    client
        .query_one(
            "SELECT count(*) FROM chain_payments WHERE credited_bytes IS NOT NULL",
            &[],
        )
        .await
        .expect("count")
        .get(0)
}

/// SIGKILLs `worker` once `at_least` payments are posted.
async fn kill_at(mut worker: Child, ledger: &Ledger, at_least: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while posted(ledger).await < at_least {
        assert!(
            Instant::now() < deadline,
            "the follower never posted {at_least}"
        );
        if let Ok(Some(status)) = worker.try_wait() {
            panic!("the follower exited ({status})");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    worker.kill().expect("SIGKILL");
    worker.wait().expect("reap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_are_credited_once_across_kills() {
    let pg = Postgres::start();
    let evm = Evm::start().await;
    let payer = evm.accounts[1];
    evm.mint(payer, 1_000 * UNITS).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let job = Job {
        ledger: pg.database().await,
        rpc: evm.url.clone(),
        token: evm.token,
        credits: dir.path().to_owned(),
    };
    // The first start records the head: the invoices are made after it.
    let gateway = gateway(&job).await;
    let mut expected = 0;
    for i in 0..INVOICES {
        let usd = 5 + i as i64;
        let inv = gateway
            .create_invoice("k1", usd * USD, None)
            .await
            .expect("invoice");
        let address = inv.address.parse().expect("address");
        evm.pay(payer, address, usd as u64 * UNITS).await;
        expected += usd * USD; // $1/GB: a dollar buys 10^9 bytes
    }
    evm.mine(2).await;
    let ledger = Ledger::connect(&job.ledger).await.expect("ledger");
    kill_at(spawn_worker(&job), &ledger, 1).await;
    kill_at(spawn_worker(&job), &ledger, 3).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while posted(&ledger).await < INVOICES as i64 {
        assert!(Instant::now() < deadline, "not all payments were credited");
        gateway.tick().await.expect("tick");
    }
    gateway
        .tick()
        .await
        .expect("a pass that applies what is still pending");
    let credits = FileCredits(job.credits.clone());
    let applied = credits.applied();
    assert_eq!(applied.len(), INVOICES, "one balance add per payment");
    let total: u64 = applied.iter().map(|(_, b)| b).sum();
    assert_eq!(total, expected as u64, "the key's balance, once");
    let in_ledger = ledger
        .balance(&AccountRef::key("k1", Asset::Bytes))
        .await
        .expect("balance");
    assert_eq!(in_ledger, expected, "the ledger, once");
    assert!(ledger.audit().await.expect("audit").is_sound());
}
