//! After the pumps: upstream bytes are billed as the node reports them delivered, the
//! credit of what it never delivered is given back, and an aborted relay is counted by
//! cause (a node that accepted nothing is held against its score).

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tracing::debug;
use turbo_proto::RelayStatus;

use super::core::RelayCore;
use super::counters::Counters;
use super::plan::{RelayError, RelayPlan, Stalled};
use crate::control::{AttemptRecord, ToControl};
use crate::quic::stream::RelayStream;
use turbo_quic::stream::Kick;

/// How long a relay waits, after both directions ended, for the node's last delivery
/// report before it gives back the credit of upstream bytes never reported delivered.
pub(super) const DELIVERY_GRACE: Duration = Duration::from_secs(2);

/// Bills upstream bytes as the node reports them delivered, for as long as the relay
/// runs.
pub(super) async fn bill_deliveries<K: Kick>(
    rs: &RelayStream<K>,
    counters: &Counters<'_>,
) -> std::convert::Infallible {
    let mut seen = 0;
    loop {
        let (delivered, done) = rs.delivery_beyond(seen).await;
        counters.delivered_up_to(delivered);
        seen = delivered;
        if done {
            return std::future::pending().await;
        }
    }
}

/// Waits (at most `grace`, [`DELIVERY_GRACE`] in service) for the node to report the
/// rest of the upload, bills what it reported, and gives back the credit of what it
/// never delivered.
pub(super) async fn settle_upload<K: Kick>(
    rs: &RelayStream<K>,
    counters: &Counters<'_>,
    grace: Duration,
) {
    let sent = counters.sent_up.get();
    if sent > counters.up.get() {
        let last = monoio::time::timeout(grace, rs.delivery_beyond(sent - 1)).await;
        let (delivered, _) = last.unwrap_or_else(|_| rs.delivered());
        counters.delivered_up_to(delivered);
    }
    let refund = counters.undelivered_up();
    if refund > 0 {
        debug!(
            refund,
            "upstream bytes never reported delivered: not billed"
        );
        counters.account.give_back(refund as usize);
    }
}

/// Counts an aborted relay by cause; a node that accepted nothing it was sent for the
/// stall timeout is held against its score.
pub(super) fn count_abort(
    core: &RelayCore,
    plan: &RelayPlan,
    rs: &RelayStream,
    counters: &Counters<'_>,
    e: &RelayError,
) {
    let limits = &core.gate.counters;
    match e {
        RelayError::Idle(_) => {
            limits.idle_timeout.fetch_add(1, Relaxed);
        }
        RelayError::Stalled(Stalled::Customer) => {
            limits.stalled_customer.fetch_add(1, Relaxed);
        }
        RelayError::Stalled(Stalled::Node) => {
            limits.stalled_node.fetch_add(1, Relaxed);
            if rs.delivered().0 == 0 && counters.sent_up.get() > 0 {
                core.control.send(ToControl::Attempt(AttemptRecord {
                    node_id: plan.route.node_id.clone(),
                    status: RelayStatus::NodeGone,
                    time_to_reply: None,
                }));
            }
        }
        _ => {}
    }
}
