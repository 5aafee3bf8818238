//! The USDC gateway in the server: the config keys checked at start-up, the key
//! balances payments are credited to (the store, once per payment), and the loop that
//! follows the chain, delivers webhooks and settles on-chain payouts (with
//! `treasury_key_file`). Payments need the ledger; without `chain_rpc` they are off,
//! and say so.

use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::Address;
use turbo_chain::payout::{load_treasury_key, ChainPayouts};
use turbo_chain::rpc::Chain;
use turbo_chain::webhook::{self, WebhookConfig};
use turbo_chain::xpub::DepositKeys;
use turbo_chain::{ChainError, CreditSink, Gateway, GatewayConfig};

use crate::config::ServerConfig;
use crate::live::{LiveBus, LiveEvent};
use crate::money::Money;
use crate::store::Store;

/// How often the chain is followed and due webhooks are sent.
const TICK: Duration = Duration::from_secs(1);

/// Checks the payment keys of `cfg`: `(field, reason)` for the first bad one.
pub(crate) fn validate(cfg: &ServerConfig) -> Result<(), (&'static str, String)> {
    if let Err(e) = cfg.price_usd_per_gb.nano() {
        return Err(("price_usd_per_gb", e.to_string()));
    }
    if cfg.webhook_url.is_some() && cfg.webhook_secret.as_deref().is_none_or(str::is_empty) {
        return Err(("webhook_secret", "required with webhook_url".into()));
    }
    let Some(rpc) = &cfg.chain_rpc else {
        if cfg.treasury_key_file.is_some() {
            return Err((
                "treasury_key_file",
                "on-chain payouts need chain_rpc".into(),
            ));
        }
        return Ok(());
    };
    if !turbo_chain::rpc::is_rpc_url(rpc) {
        return Err((
            "chain_rpc",
            "must be an http://, https://, ws:// or wss:// URL".into(),
        ));
    }
    if cfg.ledger.is_none() {
        return Err(("chain_rpc", "payments need the ledger (--ledger)".into()));
    }
    if cfg.confirmations == 0 {
        return Err(("confirmations", "must be at least 1".into()));
    }
    match &cfg.usdc_contract {
        None => return Err(("usdc_contract", "required with chain_rpc".into())),
        Some(a) if Address::from_str(a).is_err() => {
            return Err(("usdc_contract", "must be a 0x… address".into()))
        }
        Some(_) => {}
    }
    match &cfg.deposit_xpub {
        None => Err(("deposit_xpub", "required with chain_rpc".into())),
        Some(x) => DepositKeys::parse(x)
            .map(drop)
            .map_err(|e| ("deposit_xpub", e.to_string())),
    }
}

/// Key balances in the store: a payment's bytes are added once per payment.
struct StoreCredits<S>(Arc<S>);

impl<S: Store> CreditSink for StoreCredits<S> {
    fn add_once<'a>(
        &'a self,
        key_id: &'a str,
        bytes: u64,
        op: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            self.0
                .add_credits_once(key_id, bytes, op)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        })
    }
}

/// Starts the gateway when `cfg.chain_rpc` is set (the config was validated), and,
/// with `treasury_key_file`, the on-chain payout sink `money` pays through.
///
/// # Errors
/// When the chain cannot be reached, is not `chain_id`, the token does not answer, or
/// the treasury key is unusable.
pub(crate) async fn start<S: Store>(
    cfg: &ServerConfig,
    money: Option<&Money>,
    store: Arc<S>,
    live: Arc<LiveBus>,
) -> Result<Option<Arc<Gateway>>, ChainError> {
    let (Some(rpc), Some(money)) = (&cfg.chain_rpc, money) else {
        tracing::info!("no chain_rpc: payments (invoices, USDC) are off");
        return Ok(None);
    };
    let token = cfg
        .usdc_contract
        .as_deref()
        .and_then(|a| Address::from_str(a).ok())
        .unwrap_or_default();
    let deposit = DepositKeys::parse(cfg.deposit_xpub.as_deref().unwrap_or_default())?;
    let config = GatewayConfig {
        chain_id: cfg.chain_id,
        token,
        confirmations: cfg.confirmations,
        price_nano_per_gb: cfg.price_usd_per_gb.nano()?,
        deposit,
    };
    let ledger = &money.ledger;
    let chain = Chain::connect(rpc, token, None).await?;
    let payouts = match &cfg.treasury_key_file {
        Some(path) => {
            let key = load_treasury_key(path)?;
            let payouts = ChainPayouts::new(
                chain.clone(),
                ledger.pool().clone(),
                cfg.chain_id,
                cfg.confirmations,
                key,
            )
            .await?;
            tracing::info!(treasury = %payouts.sender(), "payouts go on chain");
            let payouts = Arc::new(payouts);
            let _ = money.chain_payouts.set(payouts.clone());
            Some(payouts)
        }
        None => None,
    };
    let gateway =
        Gateway::start(chain, ledger.clone(), config, Arc::new(StoreCredits(store))).await?;
    let gateway = Arc::new(gateway);
    let hooks = match (&cfg.webhook_url, &cfg.webhook_secret) {
        (Some(url), Some(secret)) => Some(WebhookConfig {
            url: url.clone(),
            secret: secret.clone(),
            first_retry: Duration::from_secs(1),
        }),
        _ => None,
    };
    tokio::spawn(run(gateway.clone(), ledger.clone(), hooks, payouts, live));
    tracing::info!(chain_id = cfg.chain_id, %token, decimals = gateway.decimals(), "payments on");
    Ok(Some(gateway))
}

/// Follows the chain (publishing invoices whose status changed), delivers webhooks
/// and settles submitted payouts, every
/// [`TICK`], for as long as the server runs; a failed pass is logged and the next one
/// picks up where it stopped.
async fn run(
    gateway: Arc<Gateway>,
    ledger: turbo_ledger::Ledger,
    hooks: Option<WebhookConfig>,
    payouts: Option<Arc<ChainPayouts>>,
    live: Arc<LiveBus>,
) {
    let http = reqwest::Client::new();
    let mut every = tokio::time::interval(TICK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        match gateway.tick().await {
            Ok(r) => {
                if r.blocks > 0 || r.credited > 0 {
                    tracing::debug!(?r, "chain followed");
                }
                for id in r.changed_invoices {
                    if let Err(e) = live.publish(&LiveEvent::Invoice(id)).await {
                        tracing::debug!(error = %e, "invoice change not published");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "following the chain failed"),
        }
        if let Some(hooks) = &hooks {
            if let Err(e) = webhook::deliver_due(ledger.pool(), hooks, &http).await {
                tracing::warn!(error = %e, "webhook delivery failed");
            }
        }
        if let Some(payouts) = &payouts {
            match ledger.settle_open_payouts(&**payouts).await {
                Ok(Some(o)) if o.confirmed + o.voided > 0 => {
                    tracing::info!(
                        confirmed = o.confirmed,
                        voided = o.voided,
                        pending = o.pending,
                        "payouts settled"
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "settling payouts failed"),
            }
        }
    }
}
