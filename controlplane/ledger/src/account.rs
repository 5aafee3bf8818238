//! Who holds money or traffic: accounts named by a code (`key:…`, `node:…`,
//! `platform:…`) and an asset.

use std::fmt;

/// What an account counts. Both are integers, never fractions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Asset {
    /// Traffic, in bytes.
    Bytes,
    /// Money, in nano-USD (10⁻⁹ USD).
    NanoUsd,
    /// The chain's native coin spent as gas, in wei (10⁻¹⁸ ETH). Booked as it was
    /// spent, never converted: its dollar value depends on a price the ledger does not
    /// keep. An account holds at most 2⁶³ − 1 wei (about 9.2 ETH).
    GasWei,
}

impl Asset {
    /// The name stored in the database.
    pub fn name(self) -> &'static str {
        match self {
            Asset::Bytes => "bytes",
            Asset::NanoUsd => "nano_usd",
            Asset::GasWei => "gas_wei",
        }
    }
}

impl fmt::Display for Asset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The platform's own accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Platform {
    /// What customers paid for traffic.
    Revenue,
    /// What runners earned (rewards and bonuses).
    RewardsExpense,
    /// Fees the platform keeps or pays (chain gas, processor fees).
    Fees,
    /// Payouts reserved and not yet confirmed.
    PayoutClearing,
    /// Money that arrived from the chain and is not yet credited.
    ChainInflow,
    /// The counterpart of traffic: bytes billed to keys are carried by nodes.
    Traffic,
    /// Money paid out to runners (confirmed payouts).
    PaidOut,
    /// The payout wallet: the gas it spent (against [`Platform::Fees`]).
    Treasury,
}

impl Platform {
    fn name(self) -> &'static str {
        match self {
            Platform::Revenue => "revenue",
            Platform::RewardsExpense => "rewards_expense",
            Platform::Fees => "fees",
            Platform::PayoutClearing => "payout_clearing",
            Platform::ChainInflow => "chain_inflow",
            Platform::Traffic => "traffic",
            Platform::PaidOut => "paid_out",
            Platform::Treasury => "treasury",
        }
    }
}

/// One account: its owner and asset.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AccountRef {
    code: String,
    /// What it counts.
    pub asset: Asset,
}

impl AccountRef {
    /// The account of customer key `key_id`.
    pub fn key(key_id: &str, asset: Asset) -> Self {
        AccountRef {
            code: format!("key:{key_id}"),
            asset,
        }
    }

    /// The account of node `node_id`.
    pub fn node(node_id: &str, asset: Asset) -> Self {
        AccountRef {
            code: format!("node:{node_id}"),
            asset,
        }
    }

    /// A platform account.
    pub fn platform(which: Platform, asset: Asset) -> Self {
        AccountRef {
            code: format!("platform:{}", which.name()),
            asset,
        }
    }

    /// The code stored in the database (`key:…`, `node:…`, `platform:…`).
    pub fn code(&self) -> &str {
        &self.code
    }
}
