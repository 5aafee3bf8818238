//! Customer connections: the front ends (SOCKS5, HTTP proxy) that authenticate a
//! request and learn its target, then the hand-off to the core that owns the chosen
//! node's QUIC connection.

mod handshake;
mod http;
mod socks;

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;
use tracing::{debug, field, Instrument, Span};

use self::handshake::{Handshake, HandshakeError};
use crate::auth::AuthCache;
use crate::frontend::{Frontend, ReplyKind};
use crate::relay::core::RelayCore;
use crate::relay::{self, RelayJob, RelayPlan};

/// Serves one accepted customer connection to the end of its handshake, then relays it
/// here or hands it to the core that owns its node.
pub(crate) async fn serve(
    core: Rc<RelayCore>,
    auth: Rc<AuthCache>,
    mut stream: TcpStream,
    peer: SocketAddr,
    frontend: Frontend,
) {
    let span = tracing::debug_span!(
        "customer",
        %peer,
        ?frontend,
        key = field::Empty,
        target = field::Empty,
        node = field::Empty
    );
    async move {
        let started = Instant::now();
        let conn_slot = match core.gate.admit_conn(frontend) {
            Ok(slot) => slot,
            Err(status) => {
                // SOCKS5 has no way to refuse before the greeting: close at once.
                if frontend == Frontend::Http {
                    let _ = stream
                        .write_all(ReplyKind::HttpConnect.failure(status, ""))
                        .await;
                }
                debug!(reason = status.reason(), "connection limit");
                return;
            }
        };
        let _ = stream.set_nodelay(true);
        let Some(hs) = handshake(&core, &auth, &mut stream, peer, frontend).await else {
            return;
        };
        let span = Span::current();
        span.record("key", &*hs.grant.key_id);
        span.record("target", field::display(&hs.target));
        let Some(plan) = plan_relay(&core, &mut stream, hs, started, conn_slot).await else {
            return;
        };
        span.record("node", &*plan.route.node_id);
        let job = RelayJob { stream, plan };
        let owner = job
            .plan
            .route
            .conn_for(core.index)
            .map_or(core.index, |c| c.core);
        if owner == core.index {
            relay::run(core, job).await;
        } else {
            // Move the connection to the node's core.
            core.hand_off(owner, job);
        }
    }
    .instrument(span)
    .await
}

/// Runs the front end's handshake under the handshake timeout; `None` once the
/// customer has been answered with why it failed.
async fn handshake(
    core: &RelayCore,
    auth: &AuthCache,
    stream: &mut TcpStream,
    peer: SocketAddr,
    frontend: Frontend,
) -> Option<Handshake> {
    let handshake = async {
        match frontend {
            Frontend::Socks => socks::handshake(core, auth, stream, peer).await,
            Frontend::Http => http::handshake(core, auth, stream, peer).await,
        }
    };
    // Boxed: the handshake's state is freed before the relay starts, so a long-lived
    // tunnel does not carry it.
    let handshake = Box::pin(monoio::time::timeout(core.cfg.handshake_timeout, handshake));
    match handshake.await {
        Ok(Ok(hs)) => Some(hs),
        Ok(Err(e)) => {
            debug!(error = %e, "handshake failed");
            None
        }
        Err(_) => {
            core.gate
                .counters
                .handshake_timeout
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if frontend == Frontend::Http {
                let resp = turbo_proto::http::response(
                    408,
                    Some(&turbo_proto::status::proxy_status_value(
                        "http_request_error",
                        "handshake timeout",
                    )),
                    &[],
                );
                let _ = stream.write_all(resp).await;
            }
            debug!(error = %HandshakeError::Timeout, "handshake failed");
            None
        }
    }
}

/// Admits the key (its connection limit, its share of idle tunnels) and picks a node;
/// `None` once the customer has been told why not.
async fn plan_relay(
    core: &RelayCore,
    stream: &mut TcpStream,
    hs: Handshake,
    started: Instant,
    conn_slot: crate::limits::ConnSlot,
) -> Option<RelayPlan> {
    let key_slot = match core.gate.admit_key(&hs.grant.key_id) {
        Ok(slot) => slot,
        Err(status) => {
            let _ = stream.write_all(hs.reply.failure(status, "")).await;
            debug!(reason = status.reason(), "key connection limit");
            return None;
        }
    };
    let site = core.cfg.site_key.site(&hs.target);
    if let Err(refusal) = core.gate.policies.check(&hs.grant.key_id, site, unix_ms()) {
        let counter = if refusal.status == turbo_proto::RelayStatus::TargetCapped {
            &core.gate.counters.site_cap
        } else {
            &core.gate.counters.verdicts
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _ = stream
            .write_all(hs.reply.failure(refusal.status, &refusal.detail))
            .await;
        debug!(reason = %refusal.detail, "refused by policy");
        return None;
    }
    if let Err(why) = core.gate.fair.check_idle(&hs.grant.key_id) {
        core.gate.count_share_refusal(why);
        let failure = hs.reply.failure(why.status(), &why.to_string());
        let _ = stream.write_all(failure).await;
        debug!(reason = %why, "key share");
        return None;
    }
    let picked = match relay::pick_route(core, &hs.grant, &[]).await {
        Ok(p) => p,
        Err(why) => {
            let (status, detail) = relay::no_route_status(why);
            let _ = stream.write_all(hs.reply.failure(status, detail)).await;
            debug!(reason = status.reason(), "no node available");
            return None;
        }
    };
    Some(RelayPlan {
        reply: hs.reply,
        target: hs.target,
        pending: hs.pending,
        body: hs.body,
        response: hs.response,
        grant: hs.grant,
        route: picked.route,
        tried: Vec::new(),
        moved: picked.moved,
        challenge: None,
        span: Span::current(),
        started,
        _slots: (conn_slot, key_slot),
    })
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
