//! The money features, on when the server has a ledger (`--ledger postgres://…`):
//! a feeder that moves the store's usage log into the ledger exactly once and settles
//! it, node uptime and daily rewards, and what the API's money routes call
//! (reconciliation, payouts, earnings, usage). Without a ledger none of this runs and
//! those routes answer 503.
//!
//! - **Feed**: every second the feeder reads the usage log after its cursor, records
//!   the entries and moves the cursor in one ledger transaction (a feeder killed
//!   half-way reads the same entries again; two servers feeding one ledger take turns
//!   through the cursor), trims the log, and settles.
//! - **Uptime**: each tick adds the elapsed seconds to every node connected to this
//!   server, per UTC day; every minute they are written to the ledger, which keeps the
//!   largest report.
//! - **Rewards**: every minute, after the uptime, the last 7 UTC days are rewarded
//!   (idempotent: a rewarded day posts nothing again, late usage is rewarded alone, and
//!   a day the server was down for is rewarded when it is back).
//! - **Earnings**: every 10 s each connected node's earnings are read into its route,
//!   and its core sends them to the node with its score.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use turbo_chain::payout::ChainPayouts;
use turbo_dataplane::control::NodeTableHandle;
use turbo_ledger::{
    AccountRef, Asset, CsvSink, Ledger, LedgerError, PayoutRun, Reconciliation, RewardPolicy,
    UsageRecord,
};

use crate::store::{Store, StoreError, UsageEntry};

/// The feeder's name in the ledger (one cursor shared by every server on one store).
const FEEDER: &str = "store-usage-log";
/// Entries read per feeder round.
const FEED_BATCH: usize = 5_000;
/// Records settled per ledger transaction.
const SETTLE_BATCH: i64 = 20_000;
/// How often the feeder runs.
const TICK: Duration = Duration::from_secs(1);
/// How often connected nodes' earnings are read for their status (in ticks): two
/// small queries per connected node.
const EARNINGS_EVERY: u64 = 10;
/// How often uptime is written and the previous days rewarded (in ticks).
const BOOKKEEPING_EVERY: u64 = 60;
/// Days back that are rewarded if they were not yet.
const REWARD_LOOKBACK_DAYS: i64 = 7;

/// Why a money operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MoneyError {
    /// The ledger failed (or refused, e.g. payouts on a ledger that does not reconcile).
    #[error("{0}")]
    Ledger(#[from] LedgerError),
    /// The store failed.
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// The money side of a running server.
pub struct Money {
    /// The ledger.
    pub ledger: Ledger,
    /// The reward policy's version in the ledger.
    pub policy_version: i32,
    /// Smallest payout, in nano-USD.
    pub payout_threshold_nano: i64,
    /// The reward policy (today's earnings are estimated at its base rate).
    pub policy: RewardPolicy,
    /// Where payouts are written for an operator to pay.
    pub payout_csv: PathBuf,
    /// This server's id (the owner of its leases and usage records).
    pub server_id: Arc<str>,
    /// The data plane's counters, for the bytes this server billed (set once the data
    /// plane runs).
    pub stats: std::sync::OnceLock<Arc<turbo_dataplane::stats::Stats>>,
    /// The on-chain payout sink (set when payments start with a treasury key); without
    /// it payouts go to [`Money::payout_csv`].
    pub chain_payouts: std::sync::OnceLock<Arc<ChainPayouts>>,
}

impl Money {
    /// Connects to the ledger at `url` and adopts `policy`.
    ///
    /// # Errors
    /// [`LedgerError`] when the ledger is unreachable or the policy out of range.
    pub async fn connect(
        url: &str,
        policy: &RewardPolicy,
        payout_threshold_nano: i64,
        payout_csv: PathBuf,
        server_id: Arc<str>,
    ) -> Result<Money, LedgerError> {
        let ledger = Ledger::connect(url).await?;
        let policy_version = ledger.adopt_policy(policy).await?;
        tracing::info!(policy_version, "ledger connected: money features on");
        Ok(Money {
            ledger,
            policy_version,
            policy: policy.clone(),
            payout_threshold_nano,
            payout_csv,
            server_id,
            stats: std::sync::OnceLock::new(),
            chain_payouts: std::sync::OnceLock::new(),
        })
    }

    /// Moves usage log entries into the ledger until the log is drained; returns how
    /// many were taken.
    ///
    /// # Errors
    /// [`MoneyError`]; what was recorded stays recorded.
    pub async fn feed<S: Store>(&self, store: &S) -> Result<u64, MoneyError> {
        let mut taken = 0;
        loop {
            let from = self.ledger.feed_cursor(FEEDER).await?;
            let (entries, to) = store.usage_since(&from, FEED_BATCH).await?;
            if entries.is_empty() {
                return Ok(taken);
            }
            let records: Vec<UsageRecord> = entries.iter().map(record).collect();
            if self.ledger.record_fed(FEEDER, &from, &to, &records).await? {
                taken += records.len() as u64;
                store.usage_trim(&to).await?;
            }
        }
    }

    /// Settles everything recorded.
    ///
    /// # Errors
    /// [`LedgerError`].
    pub async fn settle(&self) -> Result<u64, LedgerError> {
        let mut settled = 0;
        loop {
            let s = self.ledger.settle(SETTLE_BATCH).await?;
            if s.records == 0 {
                return Ok(settled);
            }
            settled += s.records;
        }
    }

    /// Feeds, settles and reconciles, against the bytes this server's relays billed
    /// since it started (its own count, which the usage checkpoints must match once
    /// flushed, open tunnels included).
    ///
    /// # Errors
    /// [`MoneyError`].
    pub async fn reconcile<S: Store>(&self, store: &S) -> Result<Reconciliation, MoneyError> {
        self.feed(store).await?;
        self.settle().await?;
        let relayed = self.stats.get().map_or(0, |s| s.billed_bytes.load(Relaxed));
        Ok(self
            .ledger
            .reconcile_server(&self.server_id, relayed)
            .await?)
    }

    /// Runs (or, dry, plans) payouts to every node with a payout address, on chain or
    /// into the CSV file, after a fresh reconciliation. A node whose runner set a
    /// higher threshold than the server's is paid once its balance reaches that one.
    ///
    /// # Errors
    /// [`MoneyError`], including a ledger that does not reconcile.
    pub async fn payouts<S: Store>(
        &self,
        store: &S,
        dry_run: bool,
    ) -> Result<PayoutRun, MoneyError> {
        let gate = self.reconcile(store).await?;
        let threshold = self.payout_threshold_nano;
        let mut addresses = BTreeMap::new();
        for node in store.list_nodes().await? {
            let Some(address) = node.payout_address else {
                continue;
            };
            // A runner who asked to be paid in larger sums waits until they are due.
            if let Some(own) = node.payout_threshold_nano.filter(|t| *t > threshold) {
                let account =
                    turbo_ledger::AccountRef::node(&node.id, turbo_ledger::Asset::NanoUsd);
                if self.ledger.balance(&account).await? < own {
                    continue;
                }
            }
            addresses.insert(node.id, address);
        }
        let run = match self.chain_payouts.get() {
            Some(chain) => {
                self.ledger
                    .run_payouts(&gate, threshold, &addresses, &**chain, dry_run)
                    .await?
            }
            None => {
                let sink = CsvSink {
                    path: self.payout_csv.clone(),
                };
                self.ledger
                    .run_payouts(&gate, threshold, &addresses, &sink, dry_run)
                    .await?
            }
        };
        Ok(run)
    }

    /// A node's bytes and money.
    ///
    /// # Errors
    /// [`LedgerError`].
    pub async fn earnings(&self, node: &str) -> Result<serde_json::Value, LedgerError> {
        let carried = self
            .ledger
            .balance(&AccountRef::node(node, Asset::Bytes))
            .await?;
        let e = self.ledger.earnings(node).await?;
        Ok(serde_json::json!({
            "node": node,
            "carried_bytes": carried,
            "earned_nano_usd": e.earned_nano,
            "bonus_nano_usd": e.bonus_nano,
            "paid_nano_usd": e.paid_nano,
            "available_nano_usd": e.available_nano,
            "days": e.days,
            "hold": e.hold,
        }))
    }
}

/// The ledger's record of one usage log entry.
fn record(e: &UsageEntry) -> UsageRecord {
    let signed = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    UsageRecord {
        server: e.owner.clone(),
        lease: e.lease.clone(),
        seq: signed(e.seq),
        node: e.node.clone(),
        key_id: e.key_id.clone(),
        minute: e.minute,
        up: signed(e.up),
        down: signed(e.down),
        conns: signed(e.connections),
    }
}

/// Runs the feeder, uptime and rewards until the process ends. Every 10 s it holds
/// the suspects the registry found ([`crate::integrity`]) and tells it which nodes
/// are held, and why.
pub async fn run<S: Store>(
    money: Arc<Money>,
    control: Arc<crate::service::ControlPlane<S>>,
    nodes: NodeTableHandle,
) {
    let (store, registry) = (&control.store, &control.registry);
    let mut uptime: HashMap<(Arc<str>, i64), i64> = HashMap::new();
    let mut last = Instant::now();
    for tick in 0u64.. {
        tokio::time::sleep(TICK).await;
        let elapsed = last.elapsed().as_secs_f64().round() as i64;
        last = Instant::now();
        if let Err(e) = money.feed(&**store).await {
            tracing::warn!(error = %e, "usage feed failed; retrying");
        }
        if let Err(e) = money.settle().await {
            tracing::warn!(error = %e, "settlement failed; retrying");
        }
        let day = (crate::store::now_unix() / 86_400) as i64;
        for id in nodes.load().node_ids() {
            let seconds = uptime.entry((id, day)).or_default();
            *seconds = (*seconds + elapsed).min(86_400);
        }
        if tick % BOOKKEEPING_EVERY == 0 {
            // Yesterday's last uptime goes in before yesterday is rewarded.
            for ((id, d), seconds) in &uptime {
                if let Err(e) = money.ledger.record_uptime(id, *d, *seconds).await {
                    tracing::debug!(error = %e, "uptime not recorded");
                }
            }
            uptime.retain(|(_, d), _| *d >= day);
            // The last week, not only yesterday: a day this server was down for is
            // rewarded when it is back (days already rewarded post nothing).
            for back in 1..=REWARD_LOOKBACK_DAYS {
                let done = money.ledger.reward_day(day - back, money.policy_version);
                if let Err(e) = done.await {
                    tracing::warn!(error = %e, "rewards failed; retrying");
                }
            }
        }
        if tick % EARNINGS_EVERY == 0 {
            report_earnings(&money, &nodes, day).await;
            for (node, why) in registry.take_suspects() {
                if let Err(e) = money.ledger.hold(&node, &why).await {
                    tracing::warn!(node, error = %e, "could not hold a suspect's earnings yet");
                    registry.hold_later(node, why);
                }
            }
            match money.ledger.held_nodes().await {
                Ok(holds) => registry.set_holds(holds),
                Err(e) => tracing::debug!(error = %e, "holds not read"),
            }
        }
    }
}

/// Reads every connected node's earnings into its route, whence its core tells it.
async fn report_earnings(money: &Money, nodes: &NodeTableHandle, day: i64) {
    let table = nodes.load_full();
    for route in table.routes() {
        match money
            .ledger
            .period_earnings(&route.node_id, day, &money.policy)
            .await
        {
            Ok((today, month)) => {
                let e = &route.earnings;
                e.today_nano.store(today, Relaxed);
                e.month_nano.store(month, Relaxed);
                e.known.store(true, Relaxed);
            }
            Err(e) => tracing::debug!(error = %e, "earnings not read"),
        }
    }
}
