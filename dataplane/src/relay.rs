//! The relay of one customer connection over one QUIC stream, on the core that owns the
//! node's connection: relay header out, node reply in, answer to the customer, then
//! bytes both ways with half-close, until both directions finish or either side aborts.
//!
//! Bytes are counted here, on the server, and reported to the control plane when the
//! connection ends.

use std::cell::Cell;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::io::{
    AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable,
};
use monoio::net::TcpStream;
use tracing::{debug, Span};
use turbo_proto::wire::relay::{RelayHeader, RelayReply, MAX_REPLY_MESSAGE};
use turbo_proto::wire::WireError;
use turbo_proto::{RelayStatus, TargetAddr};

use crate::control::{AuthGrant, NodeRoute, ToControl, UsageRecord};
use crate::cores::Core;
use crate::customer::ReplyKind;
use crate::pool::BufPool;
use crate::quic::stream::{RelayStream, StreamError};
use crate::signal::join_or_abort;

/// Extra time on top of the node's connect timeout before the server gives up waiting
/// for the node's reply.
const REPLY_GRACE: Duration = Duration::from_secs(2);

/// A customer connection ready to be relayed, with everything its relay needs.
pub(crate) struct RelayJob<S> {
    /// The customer socket.
    pub(crate) stream: S,
    /// How to answer the customer.
    pub(crate) reply: ReplyKind,
    /// Where to connect.
    pub(crate) target: TargetAddr,
    /// Bytes to send upstream first.
    pub(crate) pending: Vec<u8>,
    /// Who pays.
    pub(crate) grant: AuthGrant,
    /// Which node connection carries it.
    pub(crate) route: NodeRoute,
    /// The customer connection's span.
    pub(crate) span: Span,
    /// When the customer connected.
    pub(crate) started: Instant,
}

impl<S> RelayJob<S> {
    /// The same job with its socket converted.
    pub(crate) fn map_stream<T>(self, f: impl FnOnce(S) -> T) -> RelayJob<T> {
        RelayJob {
            stream: f(self.stream),
            reply: self.reply,
            target: self.target,
            pending: self.pending,
            grant: self.grant,
            route: self.route,
            span: self.span,
            started: self.started,
        }
    }
}

impl<T, E> RelayJob<Result<T, E>> {
    /// Lifts a failed socket conversion out of the job.
    pub(crate) fn transpose(self) -> Result<RelayJob<T>, E> {
        let RelayJob {
            stream,
            reply,
            target,
            pending,
            grant,
            route,
            span,
            started,
        } = self;
        Ok(RelayJob {
            stream: stream?,
            reply,
            target,
            pending,
            grant,
            route,
            span,
            started,
        })
    }
}

/// Why a relay ended early.
#[derive(Debug, thiserror::Error)]
enum RelayError {
    /// The QUIC stream or connection failed.
    #[error("stream: {0}")]
    Stream(#[from] StreamError),
    /// The customer socket failed (reset, broken pipe).
    #[error("customer io: {0}")]
    Customer(#[from] std::io::Error),
    /// The node's reply was malformed.
    #[error("bad reply from node: {0}")]
    Protocol(#[from] WireError),
    /// The node finished the stream without a reply.
    #[error("node sent no reply")]
    NoReply,
}

/// Byte counters of one relay.
#[derive(Default)]
struct Counters {
    up: Cell<u64>,
    down: Cell<u64>,
}

impl Counters {
    fn add_up(&self, n: usize) {
        self.up.set(self.up.get() + n as u64);
    }
    fn add_down(&self, n: usize) {
        self.down.set(self.down.get() + n as u64);
    }
}

/// Relays `job` to completion and reports its usage.
pub(crate) async fn run(core: Rc<Core>, job: RelayJob<TcpStream>) {
    let counters = Counters::default();
    let RelayJob {
        stream,
        reply,
        target,
        pending,
        grant,
        route,
        started,
        ..
    } = job;
    let outcome = relay(&core, stream, reply, &target, pending, &route, &counters).await;
    let (up, down) = (counters.up.get(), counters.down.get());
    debug!(
        status = outcome.reason(),
        up, down, "customer connection closed"
    );
    core.control.send(ToControl::Usage(UsageRecord {
        key_id: grant.key_id,
        node_id: route.node_id,
        target_port: target.port(),
        bytes_up: up,
        bytes_down: down,
        duration: started.elapsed(),
        outcome,
    }));
}

async fn relay(
    core: &Core,
    mut stream: TcpStream,
    reply: ReplyKind,
    target: &TargetAddr,
    pending: Vec<u8>,
    route: &NodeRoute,
    counters: &Counters,
) -> RelayStatus {
    let fail = |status: RelayStatus, details: &str| reply.failure(status, details);
    let Some(conn) = core.quic.conn(route.conn.serial) else {
        let _ = stream
            .write_all(fail(RelayStatus::NodeGone, "node disconnected"))
            .await;
        return RelayStatus::NodeGone;
    };
    let mut rs = match RelayStream::open(&conn) {
        Ok(rs) => rs,
        Err(e) => {
            let status = match e {
                StreamError::NoCapacity => RelayStatus::NodeOverloaded,
                _ => RelayStatus::NodeGone,
            };
            let _ = stream.write_all(fail(status, &e.to_string())).await;
            return status;
        }
    };
    debug!(stream = rs.id(), "relay stream opened");
    let mut header = Vec::with_capacity(64);
    RelayHeader {
        target: target.clone(),
        connect_timeout_ms: core.cfg.connect_timeout.as_millis() as u64,
        flags: 0,
    }
    .encode(&mut header);
    let sent = async {
        rs.send_all(&header, false).await?;
        rs.send_all(&pending, false).await?;
        counters.add_up(pending.len());
        Ok::<_, StreamError>(())
    };
    if let Err(e) = sent.await {
        let _ = stream
            .write_all(fail(RelayStatus::NodeGone, &e.to_string()))
            .await;
        return RelayStatus::NodeGone;
    }
    let wait = core.cfg.connect_timeout + REPLY_GRACE;
    let (node_reply, extra, fin) = match monoio::time::timeout(wait, read_reply(&rs)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            debug!(error = %e, "no reply from node");
            let _ = stream
                .write_all(fail(RelayStatus::NodeGone, &e.to_string()))
                .await;
            return RelayStatus::NodeGone;
        }
        Err(_) => {
            let _ = stream
                .write_all(fail(RelayStatus::Timeout, "node did not answer"))
                .await;
            return RelayStatus::Timeout;
        }
    };
    if node_reply.status != RelayStatus::Ok {
        let _ = stream
            .write_all(fail(node_reply.status, &node_reply.message))
            .await;
        // Dropping `rs` unfinished resets our half too, so both sides free the stream.
        return node_reply.status;
    }
    if let Some(ok) = reply.success() {
        if stream.write_all(ok).await.0.is_err() {
            return RelayStatus::Ok;
        }
    }
    let fd = stream.as_raw_fd();
    let (mut rd, mut wr) = stream.into_split();
    let res = async {
        if !extra.is_empty() {
            let n = extra.len();
            wr.write_all(extra).await.0?;
            counters.add_down(n);
        }
        let down = async {
            if fin {
                wr.shutdown().await?;
                Ok(())
            } else {
                pump_down(&rs, &mut wr, &core.pool, counters).await
            }
        };
        let up = pump_up(&rs, &mut rd, &core.pool, counters);
        join_or_abort(up, down, async { RelayError::from(rs.conn_closed().await) }).await
    }
    .await;
    match res {
        Ok(()) => rs.finish(),
        Err(e) => {
            debug!(error = %e, "relay aborted");
            // Turn our close into a RST so the customer sees an abort, not a clean end.
            crate::sys::set_abortive_close(fd, &rd);
        }
    }
    RelayStatus::Ok
}

/// Reads the node's [`RelayReply`]; returns it with any payload that followed it and
/// whether the stream already finished.
async fn read_reply(rs: &RelayStream) -> Result<(RelayReply, Vec<u8>, bool), RelayError> {
    let mut acc = Vec::with_capacity(64);
    let mut buf = [0u8; 1024];
    loop {
        let (n, fin) = rs.recv(&mut buf).await?;
        acc.extend_from_slice(&buf[..n]);
        if let Some((reply, used)) = RelayReply::decode(&acc)? {
            return Ok((reply, acc.split_off(used), fin));
        }
        if fin || acc.len() > MAX_REPLY_MESSAGE + 16 {
            return Err(RelayError::NoReply);
        }
    }
}

/// Customer -> node: read only when the stream has credit, so a slow node throttles the
/// customer through TCP instead of growing our buffers.
async fn pump_up(
    rs: &RelayStream,
    rd: &mut OwnedReadHalf<TcpStream>,
    pool: &BufPool,
    counters: &Counters,
) -> Result<(), RelayError> {
    loop {
        rs.writable().await?;
        let (res, buf) = rd.read(pool.empty()).await;
        let n = match res {
            Ok(n) => n,
            Err(e) => {
                pool.put(buf);
                return Err(e.into());
            }
        };
        if n == 0 {
            pool.put(buf);
            rs.send_all(&[], true).await?;
            return Ok(());
        }
        let sent = rs.send_all(&buf[..n], false).await;
        pool.put(buf);
        sent?;
        counters.add_up(n);
    }
}

/// Node -> customer: read from the stream only after the previous write finished, so a
/// slow customer throttles the node through QUIC flow control.
async fn pump_down(
    rs: &RelayStream,
    wr: &mut OwnedWriteHalf<TcpStream>,
    pool: &BufPool,
    counters: &Counters,
) -> Result<(), RelayError> {
    loop {
        let mut buf = pool.full();
        let (n, fin) = match rs.recv(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                pool.put(buf);
                return Err(e.into());
            }
        };
        if n > 0 {
            buf.truncate(n);
            let (res, buf) = wr.write_all(buf).await;
            pool.put(buf);
            res?;
            counters.add_down(n);
        } else {
            pool.put(buf);
        }
        if fin {
            wr.shutdown().await?;
            return Ok(());
        }
    }
}
