//! Daily rewards. For a day (UTC, days since the Unix epoch) every node that carried
//! bytes is credited, from the rewards-expense account, with its base pay and its
//! stability and streak bonuses: one posting each, keyed by node, day and the bytes
//! rewarded, referring to the policy version it was computed under. The day's
//! remainder goes to the node's carry, in the same transaction. Running a day again
//! posts nothing; running it after late usage arrived rewards only the late bytes.

use crate::policy::RewardPolicy;
use crate::posting::post_in;
use crate::{AccountRef, Asset, Ledger, LedgerError, Leg, Platform, Posting};

/// Seconds in a day.
const DAY_SECONDS: i64 = 86_400;
/// Days the stability bonus looks back over (today included).
const STABILITY_DAYS: i64 = 7;
/// Longest streak looked for.
const MAX_STREAK_DAYS: i64 = 400;

/// What one [`Ledger::reward_day`] call posted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rewarded {
    /// Nodes credited now.
    pub nodes: u64,
    /// Base pay posted, in nano-USD.
    pub base_nano: i64,
    /// Stability bonuses posted.
    pub stability_nano: i64,
    /// Streak bonuses posted.
    pub streak_nano: i64,
}

/// One node's day, as the database has it.
struct NodeDay<'a> {
    node: &'a str,
    day: i64,
    carried: i64,
}

impl Ledger {
    /// Records that `node` was online `online_seconds` on `day`; the larger of this and
    /// what was recorded before stays (reports are cumulative, and may repeat).
    ///
    /// # Errors
    /// [`LedgerError::Malformed`] for seconds outside a day; database errors.
    pub async fn record_uptime(
        &self,
        node: &str,
        day: i64,
        online_seconds: i64,
    ) -> Result<(), LedgerError> {
        if !(0..=DAY_SECONDS).contains(&online_seconds) {
            return Err(LedgerError::Malformed {
                key: format!("uptime:{node}:{day}"),
                why: "online seconds outside 0..=86400",
            });
        }
        self.pool
            .get()
            .await?
            .execute(
                "INSERT INTO node_days (node, day, online_seconds) VALUES ($1, $2, $3)
                 ON CONFLICT (node, day) DO UPDATE
                 SET online_seconds = greatest(node_days.online_seconds, EXCLUDED.online_seconds)",
                &[&node, &day, &online_seconds],
            )
            .await?;
        Ok(())
    }

    /// The version of `policy`: the latest one when it is the same, else a new one.
    ///
    /// # Errors
    /// [`LedgerError::Policy`] for out-of-range rates; database errors.
    pub async fn adopt_policy(&self, policy: &RewardPolicy) -> Result<i32, LedgerError> {
        policy.validate()?;
        let text = serde_json::to_string(policy).map_err(|_| LedgerError::Malformed {
            key: "policy".into(),
            why: "unserializable policy",
        })?;
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute("LOCK TABLE reward_policies IN EXCLUSIVE MODE", &[])
            .await?;
        let latest = tx
            .query_opt(
                "SELECT version, policy FROM reward_policies ORDER BY version DESC LIMIT 1",
                &[],
            )
            .await?;
        if let Some(row) = latest.filter(|r| r.get::<_, String>(1) == text) {
            return Ok(row.get(0));
        }
        let version: i32 = tx
            .query_one(
                "INSERT INTO reward_policies (policy) VALUES ($1) RETURNING version",
                &[&text],
            )
            .await?
            .get(0);
        tx.commit().await?;
        Ok(version)
    }

    /// The policy stored as `version`.
    ///
    /// # Errors
    /// [`LedgerError::UnknownPolicy`]; database errors.
    pub async fn policy(&self, version: i32) -> Result<RewardPolicy, LedgerError> {
        let row = self
            .pool
            .get()
            .await?
            .query_opt(
                "SELECT policy FROM reward_policies WHERE version = $1",
                &[&version],
            )
            .await?
            .ok_or(LedgerError::UnknownPolicy(version))?;
        serde_json::from_str(&row.get::<_, String>(0))
            .map_err(|_| LedgerError::UnknownPolicy(version))
    }

    /// Rewards every node that carried bytes on `day` under policy `version`.
    ///
    /// # Errors
    /// Database errors; what was posted before the error stays posted, and running the
    /// day again completes it.
    pub async fn reward_day(&self, day: i64, version: i32) -> Result<Rewarded, LedgerError> {
        let policy = self.policy(version).await?;
        let rows = self
            .pool
            .get()
            .await?
            .query(
                // Only nodes with bytes not rewarded yet: a day run again costs one
                // query, not a transaction per node.
                "SELECT u.node, u.carried FROM (
                     SELECT node, sum(up + down)::bigint AS carried FROM usage_minute
                     WHERE minute >= $1 AND minute < $2 GROUP BY node) u
                 WHERE u.carried > coalesce((SELECT max(r.carried_bytes) FROM reward_days r
                                            WHERE r.node = u.node AND r.day = $3), 0)
                 ORDER BY u.node",
                &[&(day * 1440), &((day + 1) * 1440), &day],
            )
            .await?;
        let mut total = Rewarded::default();
        for r in rows {
            let node: String = r.get(0);
            let nd = NodeDay {
                node: &node,
                day,
                carried: r.get(1),
            };
            if let Some(posted) = self.reward_node(&nd, &policy, version).await? {
                total.nodes += 1;
                total.base_nano += posted.base_nano;
                total.stability_nano += posted.stability_nano;
                total.streak_nano += posted.streak_nano;
            }
        }
        Ok(total)
    }

    /// Rewards one node's day (the bytes not rewarded yet), in one transaction.
    async fn reward_node(
        &self,
        nd: &NodeDay<'_>,
        policy: &RewardPolicy,
        version: i32,
    ) -> Result<Option<Rewarded>, LedgerError> {
        let (uptime, streak) = self.standing(nd).await?;
        let node_account = AccountRef::node(nd.node, Asset::NanoUsd);
        let expense = AccountRef::platform(Platform::RewardsExpense, Asset::NanoUsd);
        let pay = |amount: i64| {
            vec![
                Leg {
                    account: expense.clone(),
                    amount: -amount,
                },
                Leg {
                    account: node_account.clone(),
                    amount,
                },
            ]
        };
        let ids = self.ensure_accounts(&pay(1)).await?;
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "INSERT INTO reward_carry (node, carry) VALUES ($1, 0) ON CONFLICT DO NOTHING",
            &[&nd.node],
        )
        .await?;
        let carry: i64 = tx
            .query_one(
                "SELECT carry FROM reward_carry WHERE node = $1 FOR UPDATE",
                &[&nd.node],
            )
            .await?
            .get(0);
        let rewarded: i64 = tx
            .query_one(
                "SELECT coalesce(max(carried_bytes), 0) FROM reward_days WHERE node = $1 AND day = $2",
                &[&nd.node, &nd.day],
            )
            .await?
            .get(0);
        let delta = nd.carried - rewarded;
        if delta <= 0 {
            return Ok(None);
        }
        let reward = policy.day(delta, carry, uptime, streak);
        post_parts(&tx, nd, &reward, version, &pay, &ids).await?;
        tx.execute(
            "INSERT INTO reward_days (node, day, carried_bytes, policy, base_nano, stability_nano, streak_nano)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[&nd.node, &nd.day, &nd.carried, &version, &reward.base_nano, &reward.stability_nano, &reward.streak_nano],
        )
        .await?;
        tx.execute(
            "UPDATE reward_carry SET carry = $2 WHERE node = $1",
            &[&nd.node, &reward.carry_after],
        )
        .await?;
        tx.commit().await?;
        Ok(Some(Rewarded {
            nodes: 1,
            base_nano: reward.base_nano,
            stability_nano: reward.stability_nano,
            streak_nano: reward.streak_nano,
        }))
    }

    /// The node's uptime over the 7 days ending `nd.day` (per mille) and its streak of
    /// consecutive days online with traffic, ending that day.
    async fn standing(&self, nd: &NodeDay<'_>) -> Result<(u32, u32), LedgerError> {
        let client = self.pool.get().await?;
        let online: i64 = client
            .query_one(
                "SELECT coalesce(sum(online_seconds), 0)::bigint FROM node_days
                 WHERE node = $1 AND day > $2::bigint - $3::bigint AND day <= $2",
                &[&nd.node, &nd.day, &STABILITY_DAYS],
            )
            .await?
            .get(0);
        let uptime = (online * 1000 / (STABILITY_DAYS * DAY_SECONDS)).clamp(0, 1000) as u32;
        let days = client
            .query(
                "SELECT d.day FROM node_days d
                 WHERE d.node = $1 AND d.day <= $2 AND d.day > $2::bigint - $3::bigint AND d.online_seconds > 0
                   AND EXISTS (SELECT 1 FROM usage_minute u WHERE u.node = d.node
                               AND u.minute >= d.day * 1440 AND u.minute < d.day * 1440 + 1440
                               AND u.up + u.down > 0)
                 ORDER BY d.day DESC",
                &[&nd.node, &nd.day, &MAX_STREAK_DAYS],
            )
            .await?;
        let streak = days
            .iter()
            .map(|r| r.get::<_, i64>(0))
            .zip((0..).map(|back| nd.day - back))
            .take_while(|(day, expected)| day == expected)
            .count() as u32;
        Ok((uptime, streak))
    }
}

/// Posts a day's base and bonuses, each its own posting under the policy `version`.
async fn post_parts(
    tx: &tokio_postgres::Transaction<'_>,
    nd: &NodeDay<'_>,
    reward: &crate::DayReward,
    version: i32,
    pay: &impl Fn(i64) -> Vec<Leg>,
    ids: &crate::posting::AccountIds,
) -> Result<(), LedgerError> {
    let parts = [
        ("base", reward.base_nano),
        ("stability", reward.stability_nano),
        ("streak", reward.streak_nano),
    ];
    for (part, amount) in parts.into_iter().filter(|(_, a)| *a > 0) {
        let posting = Posting {
            key: format!("reward:{}:{}:{}:{part}", nd.node, nd.day, nd.carried),
            kind: format!("reward_{part}"),
            legs: pay(amount),
        };
        if let Some(id) = post_in(tx, &posting, ids).await? {
            tx.execute(
                "UPDATE transactions SET policy = $2 WHERE id = $1",
                &[&id, &version],
            )
            .await?;
        }
    }
    Ok(())
}
