//! The relay of one customer connection over one QUIC stream, on the core that owns the
//! node's connection: relay header out, node reply in, answer to the customer, then
//! bytes both ways with half-close, until both directions finish or either side aborts.
//!
//! - **Retries.** When a node fails the attempt itself (gone, full, broken network), the
//!   request moves to another node of the same country, up to [`MAX_ATTEMPTS`] nodes, as
//!   long as no byte has been relayed: the customer's first bytes (an HTTP head) are sent
//!   only after the node said it connected. A target failure (refused, DNS, host
//!   unreachable) is checked once on another node ([`dispute`]); other target faults
//!   are not retried.
//! - **Sessions.** A sticky session asks the control plane for its pinned node; a node
//!   that failed is excluded and the session re-pinned (and the move reported).
//! - **Accounting.** Bytes are counted here, on the server, paid from the key's account
//!   before they go on, and reported when the connection ends.

pub(crate) mod core;
mod counters;
mod dispute;
mod duplex;
mod plan;
mod pumps;
mod settle;
#[cfg(test)]
mod tests;

use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::io::{AsyncWriteRentExt, Splitable};
use monoio::net::TcpStream;
use tracing::{debug, warn, Instrument};
use turbo_proto::wire::relay::RelayHeader;
use turbo_proto::RelayStatus;

use self::core::Handoff;
use self::core::RelayCore;
use self::counters::Counters;
use self::duplex::{relay_both_ways, PumpSetup};
use self::plan::{AttemptError, RelayError};
pub(crate) use self::plan::{RelayJob, RelayPlan};
use self::pumps::read_reply;
#[cfg(test)]
pub(crate) use self::pumps::CustomerRead;
use self::settle::{count_abort, settle_upload, DELIVERY_GRACE};
use crate::account::Exhausted;
use crate::control::{AttemptRecord, AuthGrant, ConnRecord, NoRoute, NodeRoute, ToControl};
use crate::quic::stream::RelayStream;
use turbo_proto::http_body::ResponseEnd;

/// Extra time on top of the node's connect timeout before the server gives up waiting
/// for the node's reply.
const REPLY_GRACE: Duration = Duration::from_secs(2);
/// Most nodes one request is tried on.
pub(crate) const MAX_ATTEMPTS: usize = 3;

/// A node picked for a request.
pub(crate) struct Picked {
    /// Its route.
    pub(crate) route: NodeRoute,
    /// A sticky session moved to it.
    pub(crate) moved: bool,
}

/// Picks the node for `grant`, avoiding `tried`: the session's pinned node when the
/// username asks for a session, else a weighted pick in the requested country.
///
/// # Errors
/// [`NoRoute`] saying why there is none.
pub(crate) async fn pick_route(
    core: &RelayCore,
    grant: &AuthGrant,
    tried: &[Arc<str>],
) -> Result<Picked, NoRoute> {
    let params = &grant.params;
    if let Some(session) = &params.session {
        let ttl = Duration::from_secs(60 * u64::from(params.sesstime_minutes.unwrap_or(10)));
        let pinned = core
            .control
            .session(
                grant.key_id.clone(),
                session.clone(),
                ttl,
                params.country,
                tried.to_vec(),
            )
            .await?;
        let table = core.nodes.load();
        let route = table.get(&pinned.node_id).ok_or(NoRoute::AllBusy)?;
        return Ok(Picked {
            route: route.clone(),
            moved: pinned.moved,
        });
    }
    let table = core.nodes.load();
    let fair = &core.gate.fair;
    let pick = rand::random();
    let route = table
        .choose_where(params.country, pick, tried, |r| {
            fair.has_room(&grant.key_id, r)
        })
        .map_err(|why| {
            // Room left only outside the key's share: say so.
            if why == NoRoute::AllBusy && table.choose(params.country, pick, tried).is_ok() {
                core.gate
                    .count_share_refusal(crate::fairshare::ShareRefusal::NodeShare);
                NoRoute::KeyShare
            } else {
                why
            }
        })?;
    Ok(Picked {
        route: route.clone(),
        moved: false,
    })
}

/// The status a customer sees when no node can be picked.
pub(crate) fn no_route_status(why: NoRoute) -> (RelayStatus, &'static str) {
    match why {
        NoRoute::NoNodes => (RelayStatus::NoNodes, "no_nodes: no node is connected"),
        NoRoute::CountryUnavailable => (
            RelayStatus::CountryUnavailable,
            "country_unavailable: no node in the requested country",
        ),
        NoRoute::AllBusy => (
            RelayStatus::NodeOverloaded,
            "all_busy: every eligible node is full or failed",
        ),
        NoRoute::KeyShare => (
            RelayStatus::KeyConnectionLimit,
            "key_node_share: the key holds its share of every eligible node's streams",
        ),
    }
}

fn credit_status(e: Exhausted) -> RelayStatus {
    match e {
        Exhausted::NoCredits => RelayStatus::NoCredits,
        Exhausted::Revoked => RelayStatus::KeyRevoked,
        Exhausted::Unavailable => RelayStatus::CreditUnavailable,
    }
}

/// Counts a stream as open on its node's route while alive.
struct ActiveStream(Arc<AtomicU32>);

impl ActiveStream {
    fn new(counter: &Arc<AtomicU32>) -> Self {
        counter.fetch_add(1, Relaxed);
        ActiveStream(counter.clone())
    }
}

impl Drop for ActiveStream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// A node that said it connected to the target.
struct Opened {
    rs: RelayStream,
    extra: Vec<u8>,
    fin: bool,
    _active: ActiveStream,
    _share: crate::fairshare::NodeShare,
}

/// Opens a stream on the plan's node and waits for the node's reply.
async fn attempt(core: &RelayCore, plan: &RelayPlan) -> Result<Opened, AttemptError> {
    let route = &plan.route;
    let conn = route
        .conn_for(core.index)
        .filter(|c| c.core == core.index)
        .and_then(|c| core.quic.quic.conn(c.serial))
        .ok_or(AttemptError::NodeDisconnected)?;
    let share = core
        .gate
        .fair
        .claim(&plan.grant.key_id, route)
        .map_err(|why| {
            core.gate.count_share_refusal(why);
            AttemptError::Share(why)
        })?;
    let rs = RelayStream::open(&conn)?;
    let active = ActiveStream::new(&route.active);
    debug!(stream = rs.id(), node = %route.node_id, "relay stream opened");
    let mut header = Vec::with_capacity(64);
    RelayHeader {
        target: plan.target.clone(),
        connect_timeout_ms: core.cfg.connect_timeout.as_millis() as u64,
        flags: 0,
    }
    .encode(&mut header);
    rs.send_all(&header, false).await?;
    let wait = core.cfg.connect_timeout + REPLY_GRACE;
    let (reply, extra, fin) = match monoio::time::timeout(wait, read_reply(&rs)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Err(AttemptError::Reply(e)),
        // The node owes a reply (its own Timeout at the latest) by the connect timeout:
        // silence past it is the node's fault, retried elsewhere and held against it.
        Err(_) => return Err(AttemptError::ReplyTimeout),
    };
    if reply.status != RelayStatus::Ok {
        // Dropping `rs` unfinished resets our half too, so both sides free the stream.
        return Err(AttemptError::Refused {
            status: reply.status,
            message: reply.message,
        });
    }
    Ok(Opened {
        rs,
        extra,
        fin,
        _active: active,
        _share: share,
    })
}

fn report_attempt(core: &RelayCore, plan: &RelayPlan, status: RelayStatus, since: Instant) {
    core.control.send(ToControl::Attempt(AttemptRecord {
        node_id: plan.route.node_id.clone(),
        status,
        time_to_reply: Some(since.elapsed()),
    }));
}

/// The plan's node connected: reports the attempt (and settles a challenged target
/// failure), and starts counting the tunnel's bytes and idleness.
fn connected(core: &RelayCore, plan: &mut RelayPlan, counters: &Counters<'_>, tried_at: Instant) {
    report_attempt(core, plan, RelayStatus::Ok, tried_at);
    dispute::connected(core, plan);
    let idle = core.gate.fair.idle(&plan.grant.key_id, &plan.route);
    counters.idle_until_first_byte(idle);
    counters.carried_by(plan.route.node_id.clone());
    counters.connected_after.set(Some(plan.started.elapsed()));
}

/// Relays `job` to completion (retrying on other nodes while allowed) and reports it.
pub(crate) async fn run(core: Rc<RelayCore>, job: RelayJob<TcpStream>) {
    let RelayJob {
        mut stream,
        mut plan,
    } = job;
    let account = core.accounts.attach(&plan.grant.key_id);
    if core.gate.policies.any() {
        let limit = core.gate.policies.byte_limit(&plan.grant.key_id);
        account.set_pace(core.accounts.core_share(limit));
    }
    if let Err(e) = account.ready().await {
        let status = credit_status(e);
        let _ = stream
            .write_all(plan.reply.failure(status, &e.to_string()))
            .await;
        return;
    }
    let counters = Counters::new(&account);
    let outcome = loop {
        let tried_at = Instant::now();
        // Boxed, like the route pick below: neither is alive while the tunnel relays.
        let failure = match Box::pin(attempt(&core, &plan)).await {
            Ok(opened) => {
                connected(&core, &mut plan, &counters, tried_at);
                break pipe(&core, stream, &plan, opened, &counters).await;
            }
            Err(f) => f,
        };
        let (status, message) = (failure.status(), failure.to_string());
        report_attempt(&core, &plan, status, tried_at);
        debug!(node = %plan.route.node_id, status = status.reason(), %message, "attempt failed");
        let retry = dispute::should_retry(&core, &mut plan, status);
        if !retry || plan.tried.len() + 1 >= MAX_ATTEMPTS {
            let _ = stream.write_all(plan.reply.failure(status, &message)).await;
            break status;
        }
        plan.tried.push(plan.route.node_id.clone());
        match Box::pin(pick_route(&core, &plan.grant, &plan.tried)).await {
            Ok(next) => {
                debug!(from = %plan.route.node_id, to = %next.route.node_id, "retrying on another node");
                plan.route = next.route;
                plan.moved |= next.moved;
                let owner = plan
                    .route
                    .conn_for(core.index)
                    .map_or(core.index, |c| c.core);
                if owner != core.index {
                    core.hand_off(owner, RelayJob { stream, plan });
                    return;
                }
            }
            Err(_) => {
                let _ = stream.write_all(plan.reply.failure(status, &message)).await;
                break status;
            }
        }
    };
    account.connection_done(&plan.route.node_id);
    let (up, down) = (counters.up.get(), counters.down.get());
    debug!(
        status = outcome.reason(),
        up, down, "customer connection closed"
    );
    report_closed(&core, &plan, &counters, outcome);
}

/// Tells the control plane how a customer connection went (its feature record).
fn report_closed(
    core: &RelayCore,
    plan: &RelayPlan,
    counters: &Counters<'_>,
    outcome: RelayStatus,
) {
    let (gap_mean_us, gap_std_us) = counters.gap_stats();
    let (tls, uploaded_after_first) = counters.tls_upload();
    let target_id = core.cfg.site_key.site(&plan.target);
    let session_id = core
        .cfg
        .site_key
        .session(plan.grant.params.session.as_deref());
    let started_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
        .saturating_sub(plan.started.elapsed().as_millis() as u64);
    core.control.send(ToControl::ConnClosed(ConnRecord {
        key_id: plan.grant.key_id.clone(),
        node_id: plan.route.node_id.clone(),
        frontend: plan.reply.frontend(),
        target_port: plan.target.port(),
        target_id,
        session_id,
        started_unix_ms,
        duration: plan.started.elapsed(),
        time_to_connect: counters.connected_after.get(),
        bytes_up: counters.up.get(),
        bytes_down: counters.down.get(),
        reads_up: counters.reads_up.get(),
        reads_down: counters.reads_down.get(),
        gap_mean_us,
        gap_max_us: counters.gap_max_us.get(),
        gap_std_us,
        tls,
        uploaded_after_first,
        outcome,
    }));
}

/// Answers the customer and moves bytes both ways until the relay ends.
async fn pipe(
    core: &RelayCore,
    mut stream: TcpStream,
    plan: &RelayPlan,
    opened: Opened,
    counters: &Counters<'_>,
) -> RelayStatus {
    let Opened {
        mut rs, extra, fin, ..
    } = opened;
    let account = counters.account;
    let cost = core.gate.limits().connection_cost;
    if let Err(e) = account.take_exact(cost as usize).await {
        let _ = stream
            .write_all(plan.reply.failure(credit_status(e), &e.to_string()))
            .await;
        return credit_status(e);
    }
    counters.connection_cost(cost);
    if let Some(ok) = plan
        .reply
        .success(plan.moved.then_some(&*plan.route.node_id))
    {
        if stream.write_all(ok).await.0.is_err() {
            return RelayStatus::Ok;
        }
    }
    let fd = stream.as_raw_fd();
    let (mut rd, mut wr) = stream.into_split();
    let mut response = plan.response.clone();
    let ends = (extra, fin, &mut response);
    let limits = core.gate.limits();
    let setup = PumpSetup {
        pool: &core.pool,
        stall: limits.stall_timeout,
        idle_timeout: limits.idle_timeout,
        pending: &plan.pending,
        body: plan.body.clone(),
    };
    let res = relay_both_ways(setup, &rs, (&mut rd, &mut wr), ends, counters).await;
    let halted = counters.halted.get();
    // A complete plain-HTTP response ends the relay even if the target stays open: the
    // stream is reset (not finished), so the node closes the target connection.
    let cut = response.as_ref().is_some_and(ResponseEnd::is_done);
    match (&res, halted) {
        (Ok(()), None) if cut => rs.abort(),
        (Ok(()), None) => rs.finish(),
        (Ok(()), Some(_)) | (Err(RelayError::Credit(_)), _) => rs.stop_reading(),
        (Err(_), _) => rs.abort(),
    }
    settle_upload(&rs, counters, DELIVERY_GRACE).await;
    match (res, halted) {
        (Ok(()), None) => {}
        (Ok(()), Some(why)) | (Err(RelayError::Credit(why)), _) => {
            // The customer gets a FIN after every byte it paid for; the target gets
            // every upstream byte that was paid for, then a FIN.
            debug!(reason = %why, "relay stopped: key cannot pay");
            core.stats.credit_closes.fetch_add(1, Relaxed);
        }
        (Err(e), _) => {
            count_abort(core, plan, &rs, counters, &e);
            debug!(error = %e, "relay aborted");
            // Turn our close into a RST so the customer sees an abort, not a clean end.
            crate::sys::set_abortive_close(fd, &rd);
            // Close the whole socket: dropping monoio's write half would shut it down
            // first, and that FIN reads as a clean end ("Empty reply from server").
            drop(rd.reunite(wr));
        }
    }
    RelayStatus::Ok
}

/// Adopts the customer connections other cores hand to this one and relays each.
pub(crate) async fn adopt_handoffs(
    core: Rc<RelayCore>,
    mut inbox: tokio::sync::mpsc::UnboundedReceiver<Handoff>,
) {
    while let Some(job) = inbox.recv().await {
        let span = job.plan.span.clone();
        if let Err(e) = job.stream.set_nonblocking(true) {
            warn!(error = %e, "could not adopt handed-off connection");
            continue;
        }
        match (*job)
            .map_stream(monoio::net::TcpStream::from_std)
            .transpose()
        {
            Ok(job) => {
                monoio::spawn(run(core.clone(), job).instrument(span));
            }
            Err(e) => warn!(error = %e, "could not adopt handed-off connection"),
        }
    }
}
