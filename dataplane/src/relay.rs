//! The relay of one customer connection over one QUIC stream, on the core that owns the
//! node's connection: relay header out, node reply in, answer to the customer, then
//! bytes both ways with half-close, until both directions finish or either side aborts.
//!
//! Bytes are counted here, on the server, and reported to the control plane when the
//! connection ends.

use std::cell::Cell;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::io::{
    AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable,
};
use monoio::net::TcpStream;
use tracing::{debug, Span};
use turbo_proto::wire::relay::{RelayHeader, RelayReply, MAX_REPLY_MESSAGE};
use turbo_proto::wire::WireError;
use turbo_proto::{RelayStatus, TargetAddr};

use crate::account::{Account, Exhausted};
use crate::control::{AuthGrant, ConnRecord, NodeRoute, ToControl};
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
    /// The key cannot pay for more bytes.
    #[error("credit: {0}")]
    Credit(#[from] Exhausted),
}

/// What one relay moved, counted on the server: bytes and reads each way, and the
/// gaps between reads (for the feature record).
struct Counters<'a> {
    account: &'a Account,
    node: &'a Arc<str>,
    up: Cell<u64>,
    down: Cell<u64>,
    reads_up: Cell<u64>,
    reads_down: Cell<u64>,
    last_read: Cell<Option<Instant>>,
    gaps: Cell<u64>,
    gap_sum_us: Cell<f64>,
    gap_sq_sum_us: Cell<f64>,
    gap_max_us: Cell<u64>,
    started: Instant,
    connected_after: Cell<Option<Duration>>,
    /// Set when the key cannot pay any more: both pumps stop at their next read, after
    /// finishing any write of bytes already paid for.
    halted: Cell<Option<Exhausted>>,
    halt: tokio::sync::Notify,
}

impl<'a> Counters<'a> {
    fn new(account: &'a Account, node: &'a Arc<str>, started: Instant) -> Self {
        Counters {
            started,
            halted: Cell::new(None),
            halt: tokio::sync::Notify::new(),
            account,
            node,
            up: Cell::new(0),
            down: Cell::new(0),
            reads_up: Cell::new(0),
            reads_down: Cell::new(0),
            last_read: Cell::new(None),
            gaps: Cell::new(0),
            gap_sum_us: Cell::new(0.0),
            gap_sq_sum_us: Cell::new(0.0),
            gap_max_us: Cell::new(0),
            connected_after: Cell::new(None),
        }
    }

    fn read(&self, n: usize, upstream: bool) {
        let (bytes, reads) = if upstream {
            (&self.up, &self.reads_up)
        } else {
            (&self.down, &self.reads_down)
        };
        bytes.set(bytes.get() + n as u64);
        reads.set(reads.get() + 1);
        self.account.spent(self.node, n, upstream);
        let now = Instant::now();
        if let Some(prev) = self.last_read.replace(Some(now)) {
            let gap = now.duration_since(prev).as_micros() as u64;
            self.gaps.set(self.gaps.get() + 1);
            self.gap_sum_us.set(self.gap_sum_us.get() + gap as f64);
            self.gap_sq_sum_us
                .set(self.gap_sq_sum_us.get() + (gap as f64) * (gap as f64));
            self.gap_max_us.set(self.gap_max_us.get().max(gap));
        }
    }

    /// Stops both pumps (at their next read) because the key cannot pay.
    fn halt(&self, why: Exhausted) {
        if self.halted.get().is_none() {
            self.halted.set(Some(why));
        }
        self.halt.notify_waiters();
    }

    /// Resolves once [`Counters::halt`] was called.
    async fn halted(&self) {
        loop {
            let wait = self.halt.notified();
            if self.halted.get().is_some() {
                return;
            }
            wait.await;
        }
    }

    fn add_up(&self, n: usize) {
        self.read(n, true);
    }

    fn add_down(&self, n: usize) {
        self.read(n, false);
    }

    /// Mean and standard deviation of the gaps between reads, in microseconds.
    fn gap_stats(&self) -> (u64, u64) {
        let n = self.gaps.get();
        if n == 0 {
            return (0, 0);
        }
        let mean = self.gap_sum_us.get() / n as f64;
        let var = (self.gap_sq_sum_us.get() / n as f64 - mean * mean).max(0.0);
        (mean as u64, var.sqrt() as u64)
    }
}

/// Relays `job` to completion and reports its usage.
pub(crate) async fn run(core: Rc<Core>, job: RelayJob<TcpStream>) {
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
    let account = core.accounts.attach(&core, &grant.key_id);
    let counters = Counters::new(&account, &route.node_id, started);
    let outcome = relay(&core, stream, reply, &target, pending, &route, &counters).await;
    let (up, down) = (counters.up.get(), counters.down.get());
    debug!(
        status = outcome.reason(),
        up, down, "customer connection closed"
    );
    let (gap_mean_us, gap_std_us) = counters.gap_stats();
    let started_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
        .saturating_sub(started.elapsed().as_millis() as u64);
    core.control.send(ToControl::ConnClosed(ConnRecord {
        key_id: grant.key_id,
        node_id: route.node_id.clone(),
        frontend: reply.frontend(),
        target_port: target.port(),
        started_unix_ms,
        duration: started.elapsed(),
        time_to_connect: counters.connected_after.get(),
        bytes_up: up,
        bytes_down: down,
        reads_up: counters.reads_up.get(),
        reads_down: counters.reads_down.get(),
        gap_mean_us,
        gap_max_us: counters.gap_max_us.get(),
        gap_std_us,
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
    counters: &Counters<'_>,
) -> RelayStatus {
    let fail = |status: RelayStatus, details: &str| reply.failure(status, details);
    let account = counters.account;
    let paid = async {
        account.ready().await?;
        account.take_exact(pending.len()).await
    };
    if let Err(e) = paid.await {
        let status = credit_status(e);
        let _ = stream.write_all(fail(status, &e.to_string())).await;
        return status;
    }
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
        if !pending.is_empty() {
            counters.add_up(pending.len());
        }
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
    counters
        .connected_after
        .set(Some(counters.started.elapsed()));
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
            account.take_exact(n).await?;
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
        let watch = async {
            monoio::select! {
                e = rs.conn_closed() => RelayError::from(e),
                e = account.closed() => {
                    counters.halt(e);
                    std::future::pending::<RelayError>().await
                }
            }
        };
        join_or_abort(up, down, watch).await
    }
    .await;
    match (res, counters.halted.get()) {
        (Ok(()), None) => rs.finish(),
        (Ok(()), Some(why)) => {
            // Dropping the unfinished stream resets it; the customer gets a FIN after
            // every byte it paid for.
            debug!(reason = %why, "relay stopped: key cannot pay");
            core.stats
                .credit_closes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        (Err(e), _) => {
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

fn credit_status(e: Exhausted) -> RelayStatus {
    match e {
        Exhausted::NoCredits => RelayStatus::NoCredits,
        Exhausted::Revoked => RelayStatus::KeyRevoked,
        Exhausted::Unavailable => RelayStatus::CreditUnavailable,
    }
}

/// Customer -> node: read only when the stream has credit, so a slow node throttles the
/// customer through TCP instead of growing our buffers. What was read is paid for before
/// it is forwarded; bytes the key cannot pay for are never sent, and the pump stops.
async fn pump_up(
    rs: &RelayStream,
    rd: &mut OwnedReadHalf<TcpStream>,
    pool: &BufPool,
    counters: &Counters<'_>,
) -> Result<(), RelayError> {
    loop {
        monoio::select! {
            r = rs.writable() => r?,
            _ = counters.halted() => return Ok(()),
        }
        let (res, buf) = monoio::select! {
            r = rd.read(pool.empty()) => r,
            _ = counters.halted() => return Ok(()),
        };
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
        let (paid, exhausted) = counters.account.pay(n).await;
        if paid > 0 {
            counters.add_up(paid);
            let sent = rs.send_all(&buf[..paid], false).await;
            if let Err(e) = sent {
                pool.put(buf);
                return Err(e.into());
            }
        }
        pool.put(buf);
        if let Some(why) = exhausted {
            counters.halt(why);
            return Ok(());
        }
    }
}

/// Node -> customer: read from the stream only after the previous write finished, so a
/// slow customer throttles the node through QUIC flow control. What was read is paid for
/// before it is written; bytes the key cannot pay for are never delivered, and the pump
/// stops.
async fn pump_down(
    rs: &RelayStream,
    wr: &mut OwnedWriteHalf<TcpStream>,
    pool: &BufPool,
    counters: &Counters<'_>,
) -> Result<(), RelayError> {
    loop {
        let mut buf = pool.full();
        let received = monoio::select! {
            r = rs.recv(&mut buf) => Some(r),
            _ = counters.halted() => None,
        };
        let Some(received) = received else {
            pool.put(buf);
            return Ok(());
        };
        let (n, fin) = match received {
            Ok(r) => r,
            Err(e) => {
                pool.put(buf);
                return Err(e.into());
            }
        };
        if n > 0 {
            let (paid, exhausted) = counters.account.pay(n).await;
            if paid > 0 {
                counters.add_down(paid);
                buf.truncate(paid);
                let (res, buf) = wr.write_all(buf).await;
                pool.put(buf);
                res?;
            } else {
                pool.put(buf);
            }
            if let Some(why) = exhausted {
                counters.halt(why);
                return Ok(());
            }
        } else {
            pool.put(buf);
        }
        if fin {
            wr.shutdown().await?;
            return Ok(());
        }
    }
}
