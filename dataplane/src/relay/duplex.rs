//! The two directions of one relay joined: the head the customer sent first, then the
//! upload and download pumps side by side, watched for an idle tunnel, a closed node
//! connection and a revoked key, with upstream bytes billed as the node reports them
//! delivered. Generic over the stream's driver and the customer's socket, so unit tests
//! run it over the in-memory pair.

use std::pin::pin;
use std::time::{Duration, Instant};

use monoio::io::AsyncWriteRent;
use turbo_proto::http_body::{BodyEnd, ResponseEnd};
use turbo_quic::stream::Kick;

use super::counters::Counters;
use super::plan::{RelayError, Stalled};
use super::pumps::{frame_down, pump_down, pump_up, write_down, CustomerRead};
use super::settle::bill_deliveries;
use crate::pool::BufPool;
use crate::quic::stream::RelayStream;
use crate::signal::{join_or_abort, Signal};

/// What the pumps of one relay take from its core and plan.
pub(super) struct PumpSetup<'a> {
    /// Buffers for both directions.
    pub(super) pool: &'a BufPool,
    /// How long either side may hold the relay up before it is [`RelayError::Stalled`].
    pub(super) stall: Duration,
    /// How long no byte may move before the relay ends as idle.
    pub(super) idle_timeout: Duration,
    /// Upstream bytes sent before the pumps start (a plain-HTTP request head).
    pub(super) pending: &'a [u8],
    /// Plain HTTP: where the request's body ends.
    pub(super) body: Option<BodyEnd>,
}

/// How often a tunnel that never moved a byte checks its node's pressure (and whether
/// its idle grace is over).
const PRESSURE_RECHECK: Duration = crate::fairshare::IDLE_GRACE;
/// Resolves once no byte has moved either way for `timeout`, or, for a tunnel that
/// never moved a byte, for the shorter idle-tunnel timeout while its node is under
/// pressure ([`crate::fairshare`]; checked every [`PRESSURE_RECHECK`]).
async fn idle_watch(
    counters: &Counters<'_>,
    opened: Instant,
    timeout: std::time::Duration,
) -> RelayError {
    loop {
        let idle = counters.idle_for(opened);
        if idle >= crate::fairshare::IDLE_GRACE {
            counters.count_idle();
        }
        let (limit, recheck) = match counters.idle_cut_after() {
            Some(Some(cut)) if cut < timeout => (cut, PRESSURE_RECHECK),
            Some(_) => (timeout, PRESSURE_RECHECK),
            None => (timeout, timeout),
        };
        if idle >= limit {
            if limit < timeout {
                counters.note_pressure_cut();
            }
            return RelayError::Idle(limit);
        }
        monoio::time::sleep((limit - idle).min(recheck)).await;
    }
}

/// Moves bytes both ways until both directions finished or the relay aborts. A
/// plain-HTTP relay ends once its response is complete.
pub(super) async fn relay_both_ways<K: Kick>(
    setup: PumpSetup<'_>,
    rs: &RelayStream<K>,
    (rd, wr): (&mut impl CustomerRead, &mut impl AsyncWriteRent),
    (mut extra, fin, response): (Vec<u8>, bool, &mut Option<ResponseEnd>),
    counters: &Counters<'_>,
) -> Result<(), RelayError> {
    let account = counters.account;
    let PumpSetup {
        pool,
        stall,
        idle_timeout,
        pending,
        body,
    } = setup;
    if !pending.is_empty() {
        let n = pending.len();
        account.take_exact(n).await?;
        counters.add_up_head(n);
        monoio::time::timeout(stall, rs.send_all(pending, false))
            .await
            .map_err(|_| RelayError::Stalled(Stalled::Node))??;
    }
    let (insert_at, done) = frame_down(response, &mut extra)?;
    if !extra.is_empty() {
        let n = extra.len();
        account.take_exact(n).await?;
        counters.add_down(n);
        write_down(wr, extra, insert_at).await.0?;
    }
    let response_done = Signal::default();
    // Pinned in place (never moved), so the idle tunnel's state holds each pump once.
    let down = pin!(async {
        if fin || done {
            wr.shutdown().await?;
        } else {
            pump_down(rs, wr, pool, counters, (stall, &mut *response)).await?;
        }
        if response.as_ref().is_some_and(ResponseEnd::is_done) {
            response_done.notify();
        }
        Ok(())
    });
    let up = pin!(async {
        monoio::select! {
            r = pump_up(rs, rd, pool, counters, (stall, body)) => r,
            () = response_done.wait() => Ok(()),
        }
    });
    let opened = Instant::now();
    let watch = pin!(async {
        monoio::select! {
            e = rs.conn_closed() => RelayError::from(e),
            e = idle_watch(counters, opened, idle_timeout) => e,
            e = account.closed() => {
                counters.halt(e);
                std::future::pending::<RelayError>().await
            }
            never = bill_deliveries(rs, counters) => match never {},
        }
    });
    join_or_abort(up, down, watch).await
}
