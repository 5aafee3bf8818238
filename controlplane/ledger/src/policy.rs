//! The reward policy: what a runner earns for the bytes their node carried, and the
//! bonuses on top. Pure integer arithmetic, no database.
//!
//! - **Base**: `nano_usd_per_gb` per 10⁹ bytes. A day's bytes times the rate rarely
//!   comes to whole nano-USD; what is left over (in byte·nano-USD/GB units, below 10⁹)
//!   is carried to the node's next day, never rounded away.
//! - **Stability bonus**: a per-mille of the day's base, from the node's measured uptime
//!   over the last 7 days (the best tier whose threshold it reaches).
//! - **Streak bonus**: a per-mille of the day's base per consecutive day the node was
//!   online with real traffic, from `streak_min_days` on, up to a cap.
//!
//! Every rate is in the versioned policy row a reward transaction refers to.

use serde::{Deserialize, Serialize};

/// Bytes in a GB (decimal, as runners are paid).
pub const BYTES_PER_GB: i128 = 1_000_000_000;

/// One stability tier: uptime at or above `min_uptime_permille` over 7 days earns
/// `bonus_permille` of the day's base.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StabilityTier {
    /// Uptime threshold, in thousandths of the 7 days.
    pub min_uptime_permille: u32,
    /// Bonus, in thousandths of the day's base.
    pub bonus_permille: u32,
}

/// The rates runners are paid at. Every field has a default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RewardPolicy {
    /// nano-USD per GB carried. Defaults to 100,000,000 ($0.10).
    pub nano_usd_per_gb: i64,
    /// Stability tiers, any order. Defaults to 99% → +10%, 95% → +5%, 90% → +2%.
    pub stability_tiers: Vec<StabilityTier>,
    /// Consecutive days online with traffic before the streak bonus starts. Defaults
    /// to 3.
    pub streak_min_days: u32,
    /// Streak bonus per day from then on, in thousandths of the day's base. Defaults to
    /// 10 (1%).
    pub streak_bonus_permille_per_day: u32,
    /// Largest streak bonus, in thousandths. Defaults to 100 (10%).
    pub streak_max_bonus_permille: u32,
}

impl Default for RewardPolicy {
    fn default() -> Self {
        let tier = |min_uptime_permille, bonus_permille| StabilityTier {
            min_uptime_permille,
            bonus_permille,
        };
        RewardPolicy {
            nano_usd_per_gb: 100_000_000,
            stability_tiers: vec![tier(990, 100), tier(950, 50), tier(900, 20)],
            streak_min_days: 3,
            streak_bonus_permille_per_day: 10,
            streak_max_bonus_permille: 100,
        }
    }
}

/// Why a policy is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The rate per GB is zero, negative, or over $1,000/GB.
    #[error("nano_usd_per_gb must be between 1 and 10^12, not {0}")]
    Rate(i64),
    /// A tier's threshold is over 1000‰ or its bonus over 1000‰.
    #[error("stability tier {0:?} is out of range (both per-mille values at most 1000)")]
    Tier(StabilityTier),
    /// A streak per-mille is over 1000‰, or the streak never starts.
    #[error("streak bonus out of range: at most 1000 per mille, starting after 1 to 366 days")]
    Streak,
}

/// What a node earns for one day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DayReward {
    /// For the bytes carried, in nano-USD.
    pub base_nano: i64,
    /// Stability bonus, in nano-USD.
    pub stability_nano: i64,
    /// Streak bonus, in nano-USD.
    pub streak_nano: i64,
    /// The remainder carried to the next day (byte·nano-USD/GB units, below 10⁹).
    pub carry_after: i64,
}

impl RewardPolicy {
    /// Checks every rate is in range.
    ///
    /// # Errors
    /// [`PolicyError`] naming the first bad field.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if !(1..=1_000_000_000_000).contains(&self.nano_usd_per_gb) {
            return Err(PolicyError::Rate(self.nano_usd_per_gb));
        }
        if let Some(t) = self
            .stability_tiers
            .iter()
            .find(|t| t.min_uptime_permille > 1000 || t.bonus_permille > 1000)
        {
            return Err(PolicyError::Tier(*t));
        }
        let streak_ok = (1..=366).contains(&self.streak_min_days)
            && self.streak_bonus_permille_per_day <= 1000
            && self.streak_max_bonus_permille <= 1000;
        if !streak_ok {
            return Err(PolicyError::Streak);
        }
        Ok(())
    }

    /// The base for `carried` bytes with `carry` left from before: (nano-USD, carry
    /// after).
    pub fn base(&self, carried: i64, carry: i64) -> (i64, i64) {
        let units = i128::from(carried.max(0)) * i128::from(self.nano_usd_per_gb)
            + i128::from(carry.max(0));
        let nano = i64::try_from(units / BYTES_PER_GB).unwrap_or(i64::MAX);
        (nano, (units % BYTES_PER_GB) as i64)
    }

    /// The stability bonus rate for `uptime_permille` over 7 days.
    pub fn stability_permille(&self, uptime_permille: u32) -> u32 {
        self.stability_tiers
            .iter()
            .filter(|t| uptime_permille >= t.min_uptime_permille)
            .map(|t| t.bonus_permille)
            .max()
            .unwrap_or(0)
    }

    /// The streak bonus rate after `streak_days` consecutive days (today included).
    pub fn streak_permille(&self, streak_days: u32) -> u32 {
        if streak_days < self.streak_min_days {
            return 0;
        }
        let days = streak_days - self.streak_min_days + 1;
        days.saturating_mul(self.streak_bonus_permille_per_day)
            .min(self.streak_max_bonus_permille)
    }

    /// A day's reward for `carried` bytes, with `carry` from the day before, the
    /// node's uptime over the last 7 days and its streak.
    pub fn day(
        &self,
        carried: i64,
        carry: i64,
        uptime_permille: u32,
        streak_days: u32,
    ) -> DayReward {
        let (base_nano, carry_after) = self.base(carried, carry);
        let share = |permille: u32| {
            i64::try_from(i128::from(base_nano) * i128::from(permille) / 1000).unwrap_or(i64::MAX)
        };
        DayReward {
            base_nano,
            stability_nano: share(self.stability_permille(uptime_permille)),
            streak_nano: share(self.streak_permille(streak_days)),
            carry_after,
        }
    }
}

#[cfg(test)]
mod tests;
