//! The two byte pumps of a relay (customer -> node and node -> customer), and the read
//! of the node's reply. Every byte is paid for from the key's account before it goes on.
//! A plain-HTTP relay carries one request: the up pump stops at the end of its body,
//! and the down pump adds `Connection: close` to the response head.

use std::time::Duration;

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, OwnedReadHalf};
use monoio::net::TcpStream;
use turbo_proto::http_body::{BodyEnd, ResponseEnd, CONNECTION_CLOSE};
use turbo_proto::wire::relay::{RelayReply, MAX_REPLY_MESSAGE};
use turbo_proto::wire::window::MAX_UNDELIVERED;

use super::counters::Counters;
use super::plan::{RelayError, Stalled};
use turbo_quic::stream::Kick;

use crate::pool::{BufPool, CHUNK};
use crate::quic::stream::RelayStream;

/// The customer's read side, as the upload pump needs it: reads, and a wait for
/// readable bytes that holds no buffer. A TCP socket's read half, or an in-memory
/// pipe in unit tests.
pub(crate) trait CustomerRead: AsyncReadRent {
    /// Waits until the customer has bytes, EOF or an error.
    async fn readable(&self) -> std::io::Result<()>;
}

impl CustomerRead for OwnedReadHalf<TcpStream> {
    async fn readable(&self) -> std::io::Result<()> {
        // SAFETY: the split halves share the stream through an `UnsafeCell` on this
        // one thread, exactly as monoio's own halves do for their reads and writes;
        // `readable` only waits on the descriptor's readiness and touches no buffer,
        // and the stream outlives both halves.
        let stream = unsafe { &*self.0.get() };
        stream.readable(false).await
    }
}

/// Reads the node's [`RelayReply`]; returns it with any payload that followed it and
/// whether the stream already finished.
pub(super) async fn read_reply(
    rs: &RelayStream,
) -> Result<(RelayReply, Vec<u8>, bool), RelayError> {
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

/// Customer -> node: read only when the stream has credit and the node has reported
/// delivering all but [`MAX_UNDELIVERED`] of what it was sent, so a slow or lying node
/// throttles the customer through TCP instead of growing our buffers. What was read is
/// paid for before it is forwarded (and billed once delivered); bytes the key cannot
/// pay for are never sent, and the upload ends with a FIN after the last paid byte.
/// Waiting longer than `stall` for the node is [`RelayError::Stalled`]. With `body`
/// (plain HTTP), the pump stops at the end of the request's body: what the customer
/// sends after it is never forwarded or billed.
pub(super) async fn pump_up<K: Kick>(
    rs: &RelayStream<K>,
    rd: &mut impl CustomerRead,
    pool: &BufPool,
    counters: &Counters<'_>,
    (stall, mut body): (Duration, Option<BodyEnd>),
) -> Result<(), RelayError> {
    let node_stalled = |_| RelayError::Stalled(Stalled::Node);
    loop {
        if body.as_ref().is_some_and(BodyEnd::is_done) {
            return Ok(());
        }
        let sent = counters.sent_up.get();
        let ready = async {
            let (delivered, done) = rs.delivered();
            if sent.saturating_sub(delivered) >= MAX_UNDELIVERED {
                if done {
                    return Ok(Gate::NodeDone);
                }
                rs.delivery_beyond(sent - MAX_UNDELIVERED).await;
                return Ok(Gate::Recheck);
            }
            rs.writable().await.map(|()| Gate::Open)
        };
        let gate = monoio::select! {
            r = monoio::time::timeout(stall, ready) => r.map_err(node_stalled)??,
            _ = counters.halted() => return end_upload(rs, stall).await,
        };
        match gate {
            Gate::Open => {}
            Gate::Recheck => continue,
            // The node writes nothing more to the target: the upload is over.
            Gate::NodeDone => return Ok(()),
        }
        // Take a buffer only once the customer has bytes: an idle tunnel holds none.
        let (res, buf) = monoio::select! {
            r = async {
                if let Err(e) = rd.readable().await {
                    return (Err(e), Vec::new());
                }
                rd.read(pool.empty()).await
            } => r,
            _ = counters.halted() => return end_upload(rs, stall).await,
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
            return end_upload(rs, stall).await;
        }
        let n = match body.as_mut().map(|b| b.scan(&buf[..n])) {
            None => n,
            Some(Ok(ours)) => ours,
            Some(Err(e)) => {
                pool.put(buf);
                return Err(e.into());
            }
        };
        counters.note_upload(&buf[..n]);
        let (paid, exhausted) = counters.account.pay(n).await;
        if paid > 0 {
            counters.add_up(paid);
            // Boxed (once per chunk): an idle tunnel's state stays small.
            let sent = Box::pin(monoio::time::timeout(stall, send_up(rs, pool, buf, paid))).await;
            sent.map_err(node_stalled)??;
        } else {
            pool.put(buf);
        }
        if let Some(why) = exhausted {
            counters.halt(why);
            return end_upload(rs, stall).await;
        }
    }
}

/// Reads of at least this many bytes go to quiche without a copy; smaller ones are
/// copied, so a trickle of small reads never pins a whole buffer each in quiche's send
/// queue.
const ZERO_COPY_MIN: usize = CHUNK / 4;

/// Forwards the first `paid` bytes of `buf` upstream: handed over as they are when the
/// read was large, copied (and the buffer reused) when it was small.
async fn send_up<K: Kick>(
    rs: &RelayStream<K>,
    pool: &BufPool,
    mut buf: Vec<u8>,
    paid: usize,
) -> Result<(), RelayError> {
    if paid >= ZERO_COPY_MIN {
        buf.truncate(paid);
        rs.send_owned(bytes::Bytes::from(buf), false).await?;
    } else {
        let sent = rs.send_all(&buf[..paid], false).await;
        pool.put(buf);
        sent?;
    }
    Ok(())
}

/// What the upload may do next.
enum Gate {
    /// The stream has credit and the node keeps up: read from the customer.
    Open,
    /// The node reported progress: check again.
    Recheck,
    /// The node says it will deliver nothing more.
    NodeDone,
}

/// Ends the upload with a FIN after the bytes already queued.
async fn end_upload<K: Kick>(rs: &RelayStream<K>, stall: Duration) -> Result<(), RelayError> {
    monoio::time::timeout(stall, rs.send_all(&[], true))
        .await
        .map_err(|_| RelayError::Stalled(Stalled::Node))??;
    Ok(())
}

/// Node -> customer: read from the stream only after the previous write finished, so a
/// slow customer throttles the node through QUIC flow control. What was read is paid for
/// before it is written; bytes the key cannot pay for are never delivered, and the pump
/// stops. A customer that takes no byte for `stall` is [`RelayError::Stalled`]. With
/// `response` (plain HTTP), the pump stops once the response is complete.
pub(super) async fn pump_down<K: Kick>(
    rs: &RelayStream<K>,
    wr: &mut impl AsyncWriteRent,
    pool: &BufPool,
    counters: &Counters<'_>,
    (stall, response): (Duration, &mut Option<ResponseEnd>),
) -> Result<(), RelayError> {
    loop {
        // Take a buffer only once the node sent bytes: an idle tunnel holds none.
        let ready = monoio::select! {
            r = rs.readable() => Some(r),
            _ = counters.halted() => None,
        };
        match ready {
            None => return Ok(()),
            Some(r) => r?,
        }
        let mut buf = pool.empty();
        let received = monoio::select! {
            r = rs.recv_into(&mut buf) => Some(r),
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
        buf.truncate(n);
        let (insert_at, done) = match frame_down(response, &mut buf) {
            Ok(f) => f,
            Err(e) => {
                pool.put(buf);
                return Err(e);
            }
        };
        let n = buf.len();
        if n > 0 {
            let (paid, exhausted) = counters.account.pay(n).await;
            if paid > 0 {
                counters.add_down(paid);
                buf.truncate(paid);
                let insert_at = insert_at.filter(|&at| at <= paid);
                let written = write_down(wr, buf, insert_at);
                // Boxed (once per chunk): an idle tunnel's state stays small.
                let written = Box::pin(monoio::time::timeout(stall, written)).await;
                let (res, buf) = written.map_err(|_| RelayError::Stalled(Stalled::Customer))?;
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
        if fin || done {
            wr.shutdown().await?;
            return Ok(());
        }
    }
}

/// Plain HTTP: follows the response through `buf`, cutting what lies past its end.
/// Returns where `Connection: close` goes and whether the response is complete.
pub(super) fn frame_down(
    response: &mut Option<ResponseEnd>,
    buf: &mut Vec<u8>,
) -> Result<(Option<usize>, bool), RelayError> {
    let Some(r) = response.as_mut() else {
        return Ok((None, false));
    };
    let fed = r.feed(buf)?;
    buf.truncate(fed.used);
    Ok((fed.insert_at, fed.done))
}

/// Writes `buf` to the customer, with `Connection: close` inserted after `insert_at`
/// bytes (that header is the proxy's: not billed).
pub(super) async fn write_down(
    wr: &mut impl AsyncWriteRent,
    buf: Vec<u8>,
    insert_at: Option<usize>,
) -> (std::io::Result<()>, Vec<u8>) {
    match insert_at {
        None => {
            let (res, buf) = wr.write_all(buf).await;
            (res.map(drop), buf)
        }
        Some(at) => {
            let mut joined = Vec::with_capacity(buf.len() + CONNECTION_CLOSE.len());
            joined.extend_from_slice(&buf[..at]);
            joined.extend_from_slice(CONNECTION_CLOSE);
            joined.extend_from_slice(&buf[at..]);
            let (res, _) = wr.write_all(joined).await;
            (res.map(drop), buf)
        }
    }
}
