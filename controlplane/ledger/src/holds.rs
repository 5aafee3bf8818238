//! Holds: a node suspected of fraud (by its server's checks, or an operator) keeps its
//! earnings on its account, but is not paid while held. A hold is a ledger state, not
//! a deletion: releasing it makes the same balance payable again, and every hold stays
//! on record with its reason.

use serde::Serialize;

use crate::{Ledger, LedgerError};

/// An open hold on a node's earnings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hold {
    /// Why, as the runner and the admin are told.
    pub reason: String,
    /// Unix seconds.
    pub since: i64,
}

impl Ledger {
    /// Holds `node`'s earnings for `reason`; `false` when a hold is open already (its
    /// first reason stands).
    ///
    /// # Errors
    /// Database errors.
    pub async fn hold(&self, node: &str, reason: &str) -> Result<bool, LedgerError> {
        let n = self
            .pool
            .get()
            .await?
            .execute(
                "INSERT INTO node_holds (node, reason) VALUES ($1, $2)
                 ON CONFLICT (node) WHERE released_at IS NULL DO NOTHING",
                &[&node, &reason],
            )
            .await?;
        if n == 1 {
            tracing::warn!(node, reason, "earnings held");
        }
        Ok(n == 1)
    }

    /// Releases `node`'s open hold; whether there was one.
    ///
    /// # Errors
    /// Database errors.
    pub async fn release_hold(&self, node: &str) -> Result<bool, LedgerError> {
        let n = self
            .pool
            .get()
            .await?
            .execute(
                "UPDATE node_holds SET released_at = now() WHERE node = $1 AND released_at IS NULL",
                &[&node],
            )
            .await?;
        Ok(n == 1)
    }

    /// `node`'s open hold, if any.
    ///
    /// # Errors
    /// Database errors.
    pub async fn hold_of(&self, node: &str) -> Result<Option<Hold>, LedgerError> {
        let row = self
            .pool
            .get()
            .await?
            .query_opt(
                "SELECT reason, extract(epoch FROM held_at)::bigint FROM node_holds
                 WHERE node = $1 AND released_at IS NULL",
                &[&node],
            )
            .await?;
        Ok(row.map(|r| Hold {
            reason: r.get(0),
            since: r.get(1),
        }))
    }

    /// Every node with an open hold, and why.
    ///
    /// # Errors
    /// Database errors.
    pub async fn held_nodes(
        &self,
    ) -> Result<std::collections::HashMap<String, String>, LedgerError> {
        let rows = self
            .pool
            .get()
            .await?
            .query(
                "SELECT node, reason FROM node_holds WHERE released_at IS NULL",
                &[],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}
