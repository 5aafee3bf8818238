//! What a runner sees: a node's earnings, bonuses, payouts and what is available, and
//! its last days itemised.

use serde::Serialize;

use crate::{AccountRef, Asset, Ledger, LedgerError};

/// Days listed in [`Earnings::days`].
const DAYS_SHOWN: i64 = 31;

/// One rewarded day of one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DayEarnings {
    /// Days since the Unix epoch (UTC).
    pub day: i64,
    /// Bytes rewarded.
    pub carried_bytes: i64,
    /// Base pay, nano-USD.
    pub base_nano_usd: i64,
    /// Stability and streak bonuses, nano-USD.
    pub bonus_nano_usd: i64,
}

/// A node's money.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Earnings {
    /// Base pay ever earned.
    pub earned_nano: i64,
    /// Bonuses ever earned.
    pub bonus_nano: i64,
    /// Paid out (confirmed payouts).
    pub paid_nano: i64,
    /// On the node's account now (not reserved for a payout).
    pub available_nano: i64,
    /// The last days with rewards, newest first.
    pub days: Vec<DayEarnings>,
    /// An open hold: the earnings stay, unpaid, until it is released.
    pub hold: Option<crate::Hold>,
}

/// One payout of a node, as a runner sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PayoutView {
    /// The payout's id.
    pub id: i64,
    /// nano-USD.
    pub amount_nano: i64,
    /// `reserved`, `submitted`, `confirmed` or `voided`.
    pub status: String,
    /// The sink's reference (the transaction hash on chain).
    pub reference: Option<String>,
    /// Unix seconds.
    pub created_unix: i64,
}

impl Ledger {
    /// `node`'s last 50 payouts, newest first.
    ///
    /// # Errors
    /// Database errors.
    pub async fn payouts_of(&self, node: &str) -> Result<Vec<PayoutView>, LedgerError> {
        let rows = self
            .pool
            .get()
            .await?
            .query(
                "SELECT id, amount_nano, status, reference,
                        extract(epoch FROM created_at)::bigint
                 FROM payouts WHERE node = $1 ORDER BY id DESC LIMIT 50",
                &[&node],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| PayoutView {
                id: r.get(0),
                amount_nano: r.get(1),
                status: r.get(2),
                reference: r.get(3),
                created_unix: r.get(4),
            })
            .collect())
    }

    /// `node`'s earnings.
    ///
    /// # Errors
    /// Database errors.
    pub async fn earnings(&self, node: &str) -> Result<Earnings, LedgerError> {
        let available = self
            .balance(&AccountRef::node(node, Asset::NanoUsd))
            .await?;
        let client = self.pool.get().await?;
        let totals = client
            .query_one(
                "SELECT coalesce(sum(base_nano), 0)::bigint,
                        coalesce(sum(stability_nano + streak_nano), 0)::bigint
                 FROM reward_days WHERE node = $1",
                &[&node],
            )
            .await?;
        let paid: i64 = client
            .query_one(
                "SELECT coalesce(sum(amount_nano), 0)::bigint FROM payouts
                 WHERE node = $1 AND status = 'confirmed'",
                &[&node],
            )
            .await?
            .get(0);
        let days = client
            .query(
                "SELECT day, max(carried_bytes), sum(base_nano)::bigint,
                        sum(stability_nano + streak_nano)::bigint
                 FROM reward_days WHERE node = $1 GROUP BY day ORDER BY day DESC LIMIT $2",
                &[&node, &DAYS_SHOWN],
            )
            .await?
            .iter()
            .map(|r| DayEarnings {
                day: r.get(0),
                carried_bytes: r.get(1),
                base_nano_usd: r.get(2),
                bonus_nano_usd: r.get(3),
            })
            .collect();
        drop(client);
        Ok(Earnings {
            earned_nano: totals.get(0),
            bonus_nano: totals.get(1),
            paid_nano: paid,
            available_nano: available,
            days,
            hold: self.hold_of(node).await?,
        })
    }

    /// `node`'s earnings today (an estimate at the base rate of `policy` until the
    /// day's rewards are posted) and this calendar month (UTC, today included), in
    /// nano-USD.
    ///
    /// # Errors
    /// Database errors.
    pub async fn period_earnings(
        &self,
        node: &str,
        today: i64,
        policy: &crate::RewardPolicy,
    ) -> Result<(u64, u64), LedgerError> {
        let client = self.pool.get().await?;
        let posted: i64 = client
            .query_one(
                "SELECT coalesce(sum(base_nano + stability_nano + streak_nano), 0)::bigint
                 FROM reward_days WHERE node = $1 AND day >= $2 AND day < $3",
                &[&node, &month_start(today), &today],
            )
            .await?
            .get(0);
        let carried: i64 = client
            .query_one(
                "SELECT coalesce(sum(up + down), 0)::bigint FROM usage_minute
                 WHERE node = $1 AND minute >= $2",
                &[&node, &(today * 1440)],
            )
            .await?
            .get(0);
        let today_nano = policy.base(carried, 0).0.max(0) as u64;
        Ok((today_nano, posted.max(0) as u64 + today_nano))
    }

    /// Bytes `node` carried today and this calendar month (UTC, today included), as
    /// the settled usage records them.
    ///
    /// # Errors
    /// Database errors.
    pub async fn node_bytes(&self, node: &str, today: i64) -> Result<(u64, u64), LedgerError> {
        let row = self
            .pool
            .get()
            .await?
            .query_one(
                "SELECT coalesce(sum(up + down) FILTER (WHERE minute >= $2), 0)::bigint,
                        coalesce(sum(up + down), 0)::bigint
                 FROM usage_minute WHERE node = $1 AND minute >= $3",
                &[&node, &(today * 1440), &(month_start(today) * 1440)],
            )
            .await?;
        let bytes = |i: usize| u64::try_from(row.get::<_, i64>(i)).unwrap_or(0);
        Ok((bytes(0), bytes(1)))
    }

    /// Bytes per second the whole network carried over the `minutes` whole minutes
    /// before `now_minute` (minutes since the Unix epoch), as the settled usage
    /// records them.
    ///
    /// # Errors
    /// Database errors.
    pub async fn throughput(&self, now_minute: i64, minutes: i64) -> Result<u64, LedgerError> {
        let minutes = minutes.max(1);
        let bytes: i64 = self
            .pool
            .get()
            .await?
            .query_one(
                "SELECT coalesce(sum(up + down), 0)::bigint FROM usage_minute
                 WHERE minute >= $1 AND minute < $2",
                &[&(now_minute - minutes), &now_minute],
            )
            .await?
            .get(0);
        Ok(u64::try_from(bytes / (minutes * 60)).unwrap_or(0))
    }

    /// `key_id`'s usage per minute and node, for minutes in `from..to` (minutes since
    /// the Unix epoch), at most 10,000 rows.
    ///
    /// # Errors
    /// Database errors.
    pub async fn key_usage(
        &self,
        key_id: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<serde_json::Value>, LedgerError> {
        let rows = self
            .pool
            .get()
            .await?
            .query(
                "SELECT minute, node, up, down, conns FROM usage_minute
                 WHERE key_id = $1 AND minute >= $2 AND minute < $3
                 ORDER BY minute, node LIMIT 10000",
                &[&key_id, &from, &to],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "minute": r.get::<_, i64>(0),
                    "node": r.get::<_, String>(1),
                    "up": r.get::<_, i64>(2),
                    "down": r.get::<_, i64>(3),
                    "conns": r.get::<_, i64>(4),
                })
            })
            .collect())
    }
}

/// The first day (days since the Unix epoch) of the UTC calendar month holding `day`.
pub fn month_start(day: i64) -> i64 {
    let (_, _, dom) = civil(day);
    day - (dom - 1)
}

/// (year, month, day of month) of `day` days since 1970-01-01, proleptic Gregorian
/// (the days-to-civil algorithm: eras of 400 years, years starting in March).
pub fn civil(day: i64) -> (i64, i64, i64) {
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let dom = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, dom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_days() {
        // (days since the epoch, (year, month, day))
        let cases = [
            (0, (1970, 1, 1)),
            (31, (1970, 2, 1)),
            (59, (1970, 3, 1)),
            (11_016, (2000, 2, 29)),
            (20_425, (2025, 12, 3)),
            (20_790, (2026, 12, 3)),
            (-1, (1969, 12, 31)),
        ];
        for (day, ymd) in cases {
            assert_eq!(civil(day), ymd, "day {day}");
        }
        assert_eq!(month_start(20_790), 20_788);
        assert_eq!(month_start(20_788), 20_788);
        assert_eq!(month_start(59), 59);
    }
}
