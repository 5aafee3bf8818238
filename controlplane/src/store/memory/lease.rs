//! The memory store's lease logic, one atomic step under the tables' mutex, as the
//! Redis lease script: book the usage (lease first, then credits, then overdraft),
//! log it for the ledger, then grant more or release.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use turbo_dataplane::control::{LeaseAnswer, LeaseRequest, Usage};

use super::{Lease, LeaseStatus, Tables};
use crate::store::{
    grant_size, now_unix, KeyRecord, LeaseTerms, NodeRecord, StoreError, UsageEntry,
};

pub(super) fn lease_in(
    t: &mut Tables,
    terms: &LeaseTerms,
    req: &LeaseRequest,
) -> Result<LeaseAnswer, StoreError> {
    let key_id = req.key_id.to_string();
    let Tables {
        keys,
        nodes,
        leases,
        usage_log,
        usage_next,
        ..
    } = t;
    let key = keys
        .get_mut(&key_id)
        .ok_or_else(|| StoreError::NotFound(key_id.clone()))?;
    let lease = leases.get_mut(&*req.lease_id);
    if let Some(l) = &lease {
        if req.seq <= l.seq {
            // A replay: answer as the first time, change nothing.
            return Ok(LeaseAnswer {
                granted: l.last_granted,
                held: l.amount,
                credits: key.credits,
                revoked: key.revoked,
                ended: l.status == LeaseStatus::Ended,
            });
        }
    }
    let ended = lease
        .as_ref()
        .is_some_and(|l| l.status == LeaseStatus::Ended);
    let held = lease.as_ref().map_or(0, |l| l.amount);
    let held = book_usage(key, nodes, &req.usage, held);
    if terms.usage_log {
        log_usage(usage_log, usage_next, terms, req);
    }
    let (status, amount, granted) = if req.release || ended {
        (LeaseStatus::Ended, return_held(key, held), 0)
    } else {
        let granted = grant_more(key, req.want);
        (LeaseStatus::Live, held.saturating_add(granted), granted)
    };
    leases.insert(
        req.lease_id.to_string(),
        Lease {
            key_id,
            amount,
            seq: req.seq,
            last_granted: granted,
            status,
            expires: Instant::now() + terms.ttl,
        },
    );
    Ok(LeaseAnswer {
        granted,
        held: amount,
        credits: key.credits,
        revoked: key.revoked,
        ended,
    })
}

/// Appends each node's share of an applied checkpoint to the usage log.
fn log_usage(
    log: &mut VecDeque<(u64, UsageEntry)>,
    next: &mut u64,
    terms: &LeaseTerms,
    req: &LeaseRequest,
) {
    let minute = (now_unix() / 60) as i64;
    for u in &req.usage.nodes {
        *next = (*next).max(1);
        log.push_back((
            *next,
            UsageEntry {
                owner: terms.owner.clone(),
                lease: req.lease_id.to_string(),
                seq: req.seq,
                node: u.node.to_string(),
                key_id: req.key_id.to_string(),
                minute,
                up: u.up,
                down: u.down,
                connections: u.connections,
            },
        ));
        *next += 1;
    }
}

/// Charges `usage` to the lease first (it holds `held`), then to the key's credits, and
/// beyond them to its overdraft; adds the traffic to the key's and the nodes' counters.
/// Returns what the lease still holds.
fn book_usage(
    key: &mut KeyRecord,
    nodes: &mut HashMap<String, NodeRecord>,
    usage: &Usage,
    held: u64,
) -> u64 {
    let spent = usage.bytes();
    let from_lease = spent.min(held);
    key.leased = key.leased.saturating_sub(from_lease);
    let rest = spent - from_lease;
    let charged = rest.min(key.credits);
    key.credits -= charged;
    key.overdraft = key.overdraft.saturating_add(rest - charged);
    key.bytes_up = key.bytes_up.saturating_add(usage.up);
    key.bytes_down = key.bytes_down.saturating_add(usage.down);
    key.connections = key.connections.saturating_add(usage.connections);
    for u in &usage.nodes {
        if let Some(n) = nodes.get_mut(&*u.node) {
            n.bytes_carried = n.bytes_carried.saturating_add(u.bytes());
        }
    }
    held - from_lease
}

/// Ends a lease: what it still holds goes back to the key's credits. Returns the
/// lease's new amount, 0.
fn return_held(key: &mut KeyRecord, held: u64) -> u64 {
    key.credits = key.credits.saturating_add(held);
    key.leased = key.leased.saturating_sub(held);
    0
}

/// Moves a fresh grant (none for a revoked key) from the key's credits to its leased
/// amount. Returns the grant.
fn grant_more(key: &mut KeyRecord, want: u64) -> u64 {
    let granted = if key.revoked {
        0
    } else {
        grant_size(want, key.credits)
    };
    key.credits -= granted;
    key.leased = key.leased.saturating_add(granted);
    granted
}
