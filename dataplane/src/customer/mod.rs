//! Customer connections: the front ends (SOCKS5, HTTP proxy) that authenticate a
//! request and learn its target, then the hand-off to the core that owns the chosen
//! node's QUIC connection.

mod http;
mod reply;
mod socks;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;
use tracing::{debug, field, Instrument, Span};
use turbo_proto::TargetAddr;

pub(crate) use reply::ReplyKind;

use crate::control::{AuthDenied, AuthGrant};
use crate::cores::{Core, CoreMsg};
use crate::relay::{self, RelayJob, RelayPlan};

/// Which protocol a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Frontend {
    /// SOCKS5 (RFC 1928/1929).
    Socks,
    /// HTTP proxy (CONNECT and absolute-form).
    Http,
}

/// The result of a successful front-end handshake.
pub(crate) struct Handshake {
    /// Who the customer is.
    pub(crate) grant: AuthGrant,
    /// Where they want to go.
    pub(crate) target: TargetAddr,
    /// How to answer them once the node replies.
    pub(crate) reply: ReplyKind,
    /// Bytes to send upstream before relaying (rewritten HTTP head and what arrived of
    /// its body, or SOCKS5 early data).
    pub(crate) pending: Vec<u8>,
    /// Plain HTTP: where the rest of the request's body ends (nothing after it goes
    /// upstream). `None` relays until the customer closes.
    pub(crate) body: Option<turbo_proto::http_body::BodyEnd>,
    /// Plain HTTP: follows the target's response, to close once it is complete.
    pub(crate) response: Option<turbo_proto::http_body::ResponseEnd>,
}

/// Why a handshake ended without a relay. The customer has already been answered.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    /// The socket failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The customer closed the connection mid-handshake.
    #[error("closed during handshake")]
    Closed,
    /// The SOCKS5 handshake was malformed or refused.
    #[error("socks5: {0}")]
    Socks(#[from] turbo_proto::socks5::Socks5Error),
    /// The HTTP head was malformed.
    #[error("http: {0}")]
    Http(#[from] turbo_proto::http::HttpError),
    /// The HTTP request carried no `Proxy-Authorization`.
    #[error("no credentials")]
    NoCredentials,
    /// The HTTP request's chunked body was malformed.
    #[error("http body: {0}")]
    Body(#[from] turbo_proto::http_body::BodyError),
    /// The control plane refused the credentials.
    #[error("denied: {0}")]
    Denied(#[from] AuthDenied),
    /// The handshake did not finish in time.
    #[error("handshake timed out")]
    Timeout,
}

/// Serves one accepted customer connection to the end of its handshake, then relays it
/// here or hands it to the core that owns its node.
pub(crate) async fn serve(
    core: Rc<Core>,
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
        let handshake = async {
            match frontend {
                Frontend::Socks => socks::handshake(&core, &mut stream, peer).await,
                Frontend::Http => http::handshake(&core, &mut stream, peer).await,
            }
        };
        // Boxed: the handshake's state is freed before the relay starts, so a
        // long-lived tunnel does not carry it.
        let handshake = Box::pin(monoio::time::timeout(core.cfg.handshake_timeout, handshake));
        let hs = match handshake.await {
            Ok(Ok(hs)) => hs,
            Ok(Err(e)) => {
                debug!(error = %e, "handshake failed");
                return;
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
                return;
            }
        };
        let span = Span::current();
        span.record("key", &*hs.grant.key_id);
        span.record("target", field::display(&hs.target));
        let key_slot = match core.gate.admit_key(&hs.grant.key_id) {
            Ok(slot) => slot,
            Err(status) => {
                let _ = stream.write_all(hs.reply.failure(status, "")).await;
                debug!(reason = status.reason(), "key connection limit");
                return;
            }
        };
        if let Err(why) = core.gate.fair.check_idle(&hs.grant.key_id) {
            core.gate.count_share_refusal(why);
            let failure = hs.reply.failure(why.status(), &why.to_string());
            let _ = stream.write_all(failure).await;
            debug!(reason = %why, "key share");
            return;
        }
        let picked = match relay::pick_route(&core, &hs.grant, &[]).await {
            Ok(p) => p,
            Err(why) => {
                let (status, detail) = relay::no_route_status(why);
                let _ = stream.write_all(hs.reply.failure(status, detail)).await;
                debug!(reason = status.reason(), "no node available");
                return;
            }
        };
        span.record("node", &*picked.route.node_id);
        let job = RelayJob {
            stream,
            plan: RelayPlan {
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
                span: span.clone(),
                started,
                _slots: (conn_slot, key_slot),
            },
        };
        let owner = job
            .plan
            .route
            .conn_for(core.index)
            .map_or(core.index, |c| c.core);
        if owner == core.index {
            relay::run(core, job).await;
            return;
        }
        // Move the connection to the node's core.
        core.stats.relay_handoffs.fetch_add(1, Relaxed);
        let job = job.map_stream(crate::sys::into_std_stream);
        core.send_to_core(owner, CoreMsg::Relay(Box::new(job)));
    }
    .instrument(span)
    .await
}
