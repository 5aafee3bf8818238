//! Target failures checked against another node. A node that answers "connection
//! refused", "DNS failure" or "host unreachable" blames the target, and target faults
//! do not count against a node. A node that lies that way would otherwise fail its
//! share of requests for free, so the request is tried once more on another eligible
//! node (same country rules, never one already tried):
//!
//! - the second node connects: the first node's answer is **disputed**. The customer is
//!   served, and the control plane is told ([`ToControl::Disputed`]), which counts the
//!   answer as the node's own failure in its score;
//! - the second node gives a target failure too: the answer is **confirmed** and goes
//!   to the customer. Neither node is held to account.
//!
//! Sticky sessions are not challenged: moving a session to another node (another exit
//! address) on one refusal would break what the customer pinned it for, so the refusal
//! is answered as is. Policy refusals differ by node on purpose and are not challenged;
//! timeouts are not either (a second try would double the customer's wait).

use std::sync::atomic::Ordering::Relaxed;

use tracing::debug;
use turbo_proto::RelayStatus;

use super::core::RelayCore;
use super::plan::{Challenge, RelayPlan};
use crate::control::{DisputeRecord, ToControl};

/// Whether `status` blames the target in a way another node can check.
pub(crate) fn is_disputable(status: RelayStatus) -> bool {
    matches!(
        status,
        RelayStatus::ConnectionRefused | RelayStatus::DnsFailure | RelayStatus::HostUnreachable
    )
}

/// After the plan's node failed with `status`: whether the request goes on to another
/// node. Node faults always may (within the attempt budget); a first disputable target
/// failure may once, as a challenge; a second one confirms the first.
pub(super) fn should_retry(core: &RelayCore, plan: &mut RelayPlan, status: RelayStatus) -> bool {
    if status.is_node_fault() {
        return true;
    }
    if !is_disputable(status) {
        return false;
    }
    if let Some(first) = plan.challenge.take() {
        core.stats.refusals_confirmed.fetch_add(1, Relaxed);
        debug!(first = %first.node_id, second = %plan.route.node_id, status = status.reason(), "target failure confirmed");
        return false;
    }
    if plan.grant.params.session.is_some() {
        return false;
    }
    plan.challenge = Some(Challenge {
        node_id: plan.route.node_id.clone(),
        status,
    });
    true
}

/// The plan's node connected: a pending challenge is upheld, and the node that
/// answered the target failure is reported.
pub(super) fn connected(core: &RelayCore, plan: &mut RelayPlan) {
    let Some(first) = plan.challenge.take() else {
        return;
    };
    core.stats.refusals_disputed.fetch_add(1, Relaxed);
    debug!(node = %first.node_id, by = %plan.route.node_id, status = first.status.reason(), "target failure disputed");
    core.control.send(ToControl::Disputed(DisputeRecord {
        node_id: first.node_id,
        status: first.status,
        disputed_by: plan.route.node_id.clone(),
    }));
}
