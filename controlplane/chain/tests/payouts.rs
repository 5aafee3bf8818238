//! Runner payouts on a real local EVM (anvil) and PostgreSQL: a batch pays three
//! runners once, with the gas booked as its own leg; a payout process SIGKILLed after
//! its transfers were submitted, or in the middle of the batch, and started again pays
//! nobody twice; a transfer that can never land (its nonce spent elsewhere) is voided
//! and the money goes back to the runner; a treasury key file others can read is
//! refused.

mod fixtures;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use fixtures::{Evm, Postgres};
use serde::{Deserialize, Serialize};
use turbo_chain::payout::{load_treasury_key, ChainPayouts, TreasuryError};
use turbo_chain::rpc::Chain;
use turbo_ledger::{AccountRef, Asset, Ledger, LedgerError, Platform};

const USD: i64 = 1_000_000_000;
/// One dollar in the test token's units (6 decimals).
const UNITS: u64 = 1_000_000;
const CONFIRMATIONS: u64 = 2;
const WORKER_ENV: &str = "TURBO_TEST_PAYOUT_WORKER";

/// What the payout worker process needs.
#[derive(Serialize, Deserialize)]
struct Job {
    ledger: String,
    rpc: String,
    token: Address,
    key_file: String,
    addresses: BTreeMap<String, String>,
}

struct Setup {
    evm: Evm,
    _pg: Postgres,
    ledger: Ledger,
    _dir: tempfile::TempDir,
    job: Job,
    /// (node, address, nano-USD earned).
    runners: Vec<(String, Address, i64)>,
}

/// A ledger where three runners earned $21.50, $30 and $45.000000999 (the last one's
/// sub-micro-dollar stays on the node), a treasury with gas and $1,000 of the token,
/// and anvil mining only when told to (transactions wait in its mempool).
async fn setup() -> Setup {
    let pg = Postgres::start();
    let url = pg.database().await;
    let ledger = Ledger::connect(&url).await.expect("ledger");
    let evm = Evm::start().await;
    let treasury = PrivateKeySigner::random();
    let _: serde_json::Value = evm
        .provider
        .raw_request(
            "anvil_setBalance".into(),
            (treasury.address(), U256::from(10u128.pow(20))),
        )
        .await
        .expect("fund the treasury with gas");
    evm.mint(treasury.address(), 1_000 * UNITS).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("treasury.key");
    write_owner_only(&key_file, &hex::encode(treasury.to_bytes()));
    let mut runners = Vec::new();
    for (node, earned) in [
        ("n1", 21 * USD + USD / 2),
        ("n2", 30 * USD),
        ("n3", 45 * USD + 999),
    ] {
        earn(&ledger, node, earned).await;
        runners.push((
            node.to_owned(),
            PrivateKeySigner::random().address(),
            earned,
        ));
    }
    let _: serde_json::Value = evm
        .provider
        .raw_request("evm_setAutomine".into(), (false,))
        .await
        .expect("automine off");
    let job = Job {
        ledger: url,
        rpc: evm.url.clone(),
        token: evm.token,
        key_file: key_file.to_string_lossy().into_owned(),
        addresses: runners
            .iter()
            .map(|(n, a, _)| (n.clone(), a.to_string()))
            .collect(),
    };
    Setup {
        evm,
        _pg: pg,
        ledger,
        _dir: dir,
        job,
        runners,
    }
}

fn write_owner_only(path: &Path, text: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .expect("key file");
    f.write_all(text.as_bytes()).expect("write key");
}

/// Books `nano` of rewards to `node`.
async fn earn(ledger: &Ledger, node: &str, nano: i64) {
    ledger
        .post(&fixtures::reward_posting(node, nano))
        .await
        .expect("reward");
}

/// The payout sink, as a (re)started server builds it.
async fn sink(job: &Job, ledger: &Ledger) -> ChainPayouts {
    let chain = Chain::connect(&job.rpc, job.token, None)
        .await
        .expect("chain");
    let key = load_treasury_key(Path::new(&job.key_file)).expect("treasury key");
    ChainPayouts::new(chain, ledger.pool().clone(), 31337, CONFIRMATIONS, key)
        .await
        .expect("sink")
}

impl Setup {
    async fn token_balance(&self, who: Address) -> U256 {
        let chain = Chain::connect(&self.evm.url, self.evm.token, None)
            .await
            .expect("chain");
        chain.balance_of(who).await.expect("balance")
    }

    async fn mine(&self, n: u64) {
        self.evm.mine(n).await;
    }

    /// Counts of the ledger's payouts by status.
    async fn payouts(&self) -> BTreeMap<String, i64> {
        let client = self.ledger.pool().get().await.expect("db");
        let rows = client
            .query("SELECT status, count(*) FROM payouts GROUP BY status", &[])
            .await
            .expect("payouts");
        rows.iter().map(|r| (r.get(0), r.get(1))).collect()
    }

    async fn signed_transactions(&self) -> i64 {
        let client = self.ledger.pool().get().await.expect("db");
        client
            .query_one("SELECT count(*) FROM chain_payouts", &[])
            .await
            .expect("count")
            .get(0)
    }

    async fn platform(&self, which: Platform, asset: Asset) -> i64 {
        self.ledger
            .balance(&AccountRef::platform(which, asset))
            .await
            .expect("balance")
    }

    /// Every runner holds exactly what it earned, in whole micro-dollars, once; the
    /// ledger agrees, books the gas the receipts show, and sums to zero.
    async fn assert_paid_once(&self) {
        let mut total = 0;
        for (node, address, earned) in &self.runners {
            let paid = earned - earned % 1000;
            let units = U256::from(paid / 1000);
            assert_eq!(
                self.token_balance(*address).await,
                units,
                "{node} paid once"
            );
            let left = self
                .ledger
                .balance(&AccountRef::node(node, Asset::NanoUsd))
                .await
                .expect("node");
            assert_eq!(left, earned - paid, "{node}: only the dust stays");
            total += paid;
        }
        assert_eq!(
            self.platform(Platform::PaidOut, Asset::NanoUsd).await,
            total
        );
        assert_eq!(
            self.platform(Platform::PayoutClearing, Asset::NanoUsd)
                .await,
            0
        );
        assert_eq!(
            self.platform(Platform::Fees, Asset::GasWei).await,
            self.gas_of_confirmed().await,
            "the gas booked is the gas the receipts show"
        );
        let audit = self.ledger.audit().await.expect("audit");
        assert!(audit.is_sound(), "{audit:?}");
    }

    async fn gas_of_confirmed(&self) -> i64 {
        let client = self.ledger.pool().get().await.expect("db");
        let rows = client
            .query(
                "SELECT reference FROM payouts WHERE status = 'confirmed'",
                &[],
            )
            .await
            .expect("refs");
        let mut gas = 0i64;
        for r in rows {
            let hash: B256 = r.get::<_, &str>(0).parse().expect("tx hash");
            let receipt = self
                .evm
                .provider
                .get_transaction_receipt(hash)
                .await
                .expect("receipt")
                .expect("mined");
            gas += i64::try_from(u128::from(receipt.gas_used) * receipt.effective_gas_price)
                .expect("gas");
        }
        gas
    }

    /// Starts the payout worker process on this setup.
    fn spawn_worker(&self) -> Child {
        Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", "payout_worker", "--ignored", "--nocapture"])
            .env(WORKER_ENV, serde_json::to_string(&self.job).expect("job"))
            .spawn()
            .expect("spawn the worker")
    }

    /// SIGKILLs `worker` as soon as `ready` holds (polled every millisecond).
    async fn kill_when(&self, mut worker: Child, what: &str, ready: impl AsyncCheck) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ready.check(self).await {
            assert!(Instant::now() < deadline, "the worker never got to {what}");
            if let Ok(Some(status)) = worker.try_wait() {
                panic!("the worker exited ({status}) before {what}");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        worker.kill().expect("SIGKILL the worker");
        worker.wait().expect("reap the worker");
    }

    /// A payout run as a restarted server does it. A killed worker's lock goes with
    /// its connection, which PostgreSQL may notice a moment after the kill: until then
    /// the run is refused as running.
    async fn run(&self) -> turbo_ledger::PayoutRun {
        let sink = sink(&self.job, &self.ledger).await;
        let gate = self.ledger.reconcile(None).await.expect("reconcile");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let run = self
                .ledger
                .run_payouts(&gate, 20 * USD, &self.job.addresses, &sink, false)
                .await;
            match run {
                Err(LedgerError::PayoutRunning) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                other => return other.expect("payout run"),
            }
        }
    }
}

/// A condition the kill waits for.
trait AsyncCheck {
    async fn check(&self, s: &Setup) -> bool;
}

/// The worker submitted all three payouts.
struct AllSubmitted;
impl AsyncCheck for AllSubmitted {
    async fn check(&self, s: &Setup) -> bool {
        s.payouts().await.get("submitted") == Some(&3)
    }
}

/// The worker signed its first transfer.
struct FirstSigned;
impl AsyncCheck for FirstSigned {
    async fn check(&self, s: &Setup) -> bool {
        s.signed_transactions().await >= 1
    }
}

/// The process a test kills: runs payouts on the job in `TURBO_TEST_PAYOUT_WORKER`,
/// then waits to be killed. Ignored in normal runs; the tests start it.
#[tokio::test]
#[ignore = "the payout worker process that the tests below start and SIGKILL"]
async fn payout_worker() {
    let Ok(job) = std::env::var(WORKER_ENV) else {
        return;
    };
    let job: Job = serde_json::from_str(&job).expect("job");
    let ledger = Ledger::connect(&job.ledger).await.expect("ledger");
    let sink = sink(&job, &ledger).await;
    let gate = ledger.reconcile(None).await.expect("reconcile");
    ledger
        .run_payouts(&gate, 20 * USD, &job.addresses, &sink, false)
        .await
        .expect("payout run");
    std::future::pending::<()>().await;
}

#[tokio::test]
async fn a_batch_pays_three_runners_once_with_the_gas_booked() {
    let s = setup().await;
    let run = s.run().await;
    assert_eq!(run.planned.len(), 3, "{run:?}");
    assert_eq!(
        (run.confirmed, run.pending),
        (0, 3),
        "nothing is mined yet: {run:?}"
    );
    s.mine(1).await;
    let sink = sink(&s.job, &s.ledger).await;
    let open = s.ledger.settle_open_payouts(&sink).await.expect("settle");
    assert_eq!(open.map(|o| o.pending), Some(3), "one block deep of two");
    s.mine(1).await;
    let open = s.ledger.settle_open_payouts(&sink).await.expect("settle");
    assert_eq!(open.map(|o| (o.confirmed, o.pending)), Some((3, 0)));
    s.assert_paid_once().await;
    assert!(s.platform(Platform::Fees, Asset::GasWei).await > 0);
    let again = s.run().await;
    assert!(again.planned.is_empty(), "nothing left: {again:?}");
    s.mine(3).await;
    s.assert_paid_once().await;
}

#[tokio::test]
async fn a_payer_killed_after_submitting_pays_nobody_twice() {
    let s = setup().await;
    let worker = s.spawn_worker();
    s.kill_when(worker, "submit all three", AllSubmitted).await;
    // The restarted server re-broadcasts the same signed transfers and pays no one
    // anew: their money is in clearing, not on the nodes.
    let run = s.run().await;
    assert!(run.planned.is_empty(), "{run:?}");
    assert_eq!(run.pending, 3);
    s.mine(CONFIRMATIONS).await;
    let run = s.run().await;
    assert_eq!((run.confirmed, run.resolved), (3, 3), "{run:?}");
    s.assert_paid_once().await;
    assert_eq!(s.signed_transactions().await, 3, "no transfer signed twice");
}

#[tokio::test]
async fn a_payer_killed_mid_batch_pays_nobody_twice() {
    let s = setup().await;
    let worker = s.spawn_worker();
    s.kill_when(worker, "sign its first transfer", FirstSigned)
        .await;
    let first = s.run().await;
    s.mine(CONFIRMATIONS).await;
    let second = s.run().await;
    assert!(second.planned.is_empty(), "{first:?} then {second:?}");
    assert_eq!(s.payouts().await.get("confirmed"), Some(&3));
    s.assert_paid_once().await;
}

#[tokio::test]
async fn a_transfer_whose_nonce_is_spent_elsewhere_is_voided() {
    let s = setup().await;
    let run = s.run().await;
    assert_eq!(run.pending, 3);
    // The operator's wallet replaces every pending transfer: the same nonces, a
    // higher fee, a transfer of nothing to itself. Only the replacements are mined.
    let key = load_treasury_key(Path::new(&s.job.key_file)).expect("key");
    let treasury = key.address();
    let _: serde_json::Value = s
        .evm
        .provider
        .raw_request("anvil_dropAllTransactions".into(), ())
        .await
        .expect("drop the mempool");
    let _: serde_json::Value = s
        .evm
        .provider
        .raw_request("anvil_impersonateAccount".into(), (treasury,))
        .await
        .expect("impersonate");
    for nonce in 0..3u64 {
        let tx = TransactionRequest::default()
            .with_from(treasury)
            .with_to(treasury)
            .with_nonce(nonce)
            .with_value(U256::ZERO);
        let _ = s.evm.provider.send_transaction(tx).await.expect("replace");
    }
    s.mine(CONFIRMATIONS).await;
    let sink = sink(&s.job, &s.ledger).await;
    let open = s.ledger.settle_open_payouts(&sink).await.expect("settle");
    assert_eq!(open.map(|o| (o.voided, o.confirmed)), Some((3, 0)));
    for (node, address, earned) in &s.runners {
        assert_eq!(s.token_balance(*address).await, U256::ZERO, "{node}");
        let back = s
            .ledger
            .balance(&AccountRef::node(node, Asset::NanoUsd))
            .await
            .expect("node");
        assert_eq!(back, *earned, "{node}: the money is back");
    }
    assert_eq!(s.platform(Platform::PaidOut, Asset::NanoUsd).await, 0);
    assert!(s.ledger.audit().await.expect("audit").is_sound());
    // The next run pays them for real, on new nonces.
    let _: serde_json::Value = s
        .evm
        .provider
        .raw_request("evm_setAutomine".into(), (true,))
        .await
        .expect("automine on");
    let _ = s.run().await;
    s.mine(CONFIRMATIONS).await;
    let _ = s.run().await;
    s.assert_paid_once().await;
}

#[test]
fn a_treasury_key_others_can_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("treasury.key");
    let key = PrivateKeySigner::random();
    write_owner_only(&path, &format!("0x{}\n", hex::encode(key.to_bytes())));
    assert_eq!(
        load_treasury_key(&path).expect("owner-only key").address(),
        key.address()
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    assert!(matches!(
        load_treasury_key(&path),
        Err(TreasuryError::Permissions(_, 0o644))
    ));
    write_owner_only(&dir.path().join("short.key"), "0x1234");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    assert!(matches!(
        load_treasury_key(&dir.path().join("short.key")),
        Err(TreasuryError::NotAKey(_))
    ));
}
