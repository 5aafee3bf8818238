//! One relay stream (one customer tunnel) on the node: read the relay header, dial the
//! target under the destination policy, answer with a typed status, then relay bytes
//! both ways with half-close until both directions finish or either side aborts.

use std::rc::Rc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tracing::{debug, Instrument};
use turbo_proto::wire::relay::{RelayHeader, RelayHeaderReader, RelayReply};
use turbo_proto::wire::window::DELIVERED_EVERY;
use turbo_proto::RelayStatus;

use crate::conn::{Conn, StreamError, StreamIo};
use crate::dial::dial;
use crate::Shared;

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a relay ended early.
#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("stream: {0}")]
    Stream(#[from] StreamError),
    #[error("target io: {0}")]
    Target(#[from] std::io::Error),
}

/// Counts a stream as active for as long as it lives.
struct Active(Rc<Conn>);

impl Active {
    fn new(conn: &Rc<Conn>) -> Self {
        conn.driver.active.set(conn.driver.active.get() + 1);
        conn.driver.total.set(conn.driver.total.get() + 1);
        Active(conn.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0
            .driver
            .active
            .set(self.0.driver.active.get().saturating_sub(1));
        self.0.driver.wake.notify_one();
    }
}

/// Serves relay stream `id` to completion.
pub async fn serve(conn: Rc<Conn>, id: u64, shared: Rc<Shared>, max_streams: u64) {
    let span = tracing::debug_span!("stream", id);
    async move {
        let _active = Active::new(&conn);
        let mut io = crate::conn::stream(&conn, id);
        if conn.driver.draining.get() || conn.driver.active.get() > max_streams || shared.usage.capped() {
            let why = if shared.usage.capped() { "monthly data cap reached" } else { "node busy" };
            refuse(&mut io, RelayStatus::NodeOverloaded, why.into()).await;
            return;
        }
        let (header, extra) = match read_header(&io).await {
            Ok(h) => h,
            Err(Some(msg)) => {
                refuse(&mut io, RelayStatus::BadRequest, msg).await;
                return;
            }
            Err(None) => return,
        };
        #[cfg(feature = "fault-injection")]
        if faulty(&mut io).await {
            return;
        }
        let limit = match header.connect_timeout_ms {
            0 => DEFAULT_CONNECT_TIMEOUT,
            ms => Duration::from_millis(ms),
        };
        let target = match dial(&header.target, limit, &shared.policy, &crate::dial::SystemResolver).await {
            Ok(t) => t,
            Err(e) => {
                let status = e.status();
                debug!(target = %header.target, status = status.reason(), blame = ?e.blame(), msg = %e, "dial failed");
                refuse(&mut io, status, e.to_string()).await;
                return;
            }
        };
        let mut ok = Vec::with_capacity(4);
        RelayReply::ok().encode(&mut ok);
        if io.send_all(&ok, false).await.is_err() {
            return;
        }
        relay(&conn, id, &shared, io, target, &extra).await;
    }
    .instrument(span)
    .await
}

/// Answers with a refusal and ends the stream cleanly.
async fn refuse(io: &mut StreamIo, status: RelayStatus, message: String) {
    let out = refusal(status, message);
    if io.send_all(&out, true).await.is_ok() {
        io.finish();
    }
}

/// Relays stream `id` and its target both ways, starting with `extra` (bytes that came
/// with the header), until both directions end or either side aborts.
async fn relay(
    conn: &Rc<Conn>,
    id: u64,
    shared: &Shared,
    mut io: StreamIo,
    target: tokio::net::TcpStream,
    extra: &[u8],
) {
    let _ = target.set_nodelay(true);
    let (mut rd, mut wr) = target.into_split();
    let delivered = Delivered::new(conn, id);
    let result = async {
        if !extra.is_empty() {
            wr.write_all(extra).await?;
            delivered.add(extra.len() as u64);
            conn.driver.to_targets.set(conn.driver.to_targets.get() + extra.len() as u64);
            shared.usage.add(extra.len() as u64);
        }
        tokio::select! {
            r = async { tokio::try_join!(to_target(&io, &mut wr, &delivered, shared), from_target(&io, &mut rd, conn, shared)) } => r.map(|_| ()),
            e = io.conn_closed() => Err(RelayError::from(e)),
        }
    }
    .await;
    delivered.done();
    match result {
        Ok(()) => io.finish(),
        Err(e) => {
            debug!(error = %e, "relay aborted");
            // RST the target so it sees an abort, not a clean end.
            let _ = socket2::SockRef::from(rd.as_ref()).set_linger(Some(Duration::ZERO));
            // Dropping the write half would shut it down first, and that FIN reads
            // as a clean end: close the socket with the read half alone.
            wr.forget();
        }
    }
}

/// Plays the test fault, if any; `true` when it handled the stream.
#[cfg(feature = "fault-injection")]
async fn faulty(io: &mut StreamIo) -> bool {
    use crate::fault::{current, Fault};
    let reply = match current() {
        Fault::None
        | Fault::GsoEio
        | Fault::GsoKernelRefuses
        | Fault::TamperTls
        | Fault::PadDownload => return false,
        Fault::RefuseAll => refusal(RelayStatus::ConnectionRefused, "connection refused".into()),
        Fault::OkNeverRead | Fault::OkNeverReadHugeWindows => {
            let mut ok = Vec::with_capacity(4);
            RelayReply::ok().encode(&mut ok);
            ok
        }
        Fault::Fabricate => {
            let mut junk = Vec::with_capacity(70_000);
            RelayReply::ok().encode(&mut junk);
            junk.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 65536\r\n\r\n");
            junk.resize(junk.len() + 65_536, b'x');
            junk
        }
        Fault::Replay => {
            let mut copy = Vec::with_capacity(4 + crate::fault::replayed().len());
            RelayReply::ok().encode(&mut copy);
            copy.extend_from_slice(crate::fault::replayed());
            copy
        }
    };
    let done = matches!(
        current(),
        Fault::RefuseAll | Fault::Fabricate | Fault::Replay
    );
    let sent = io.send_all(&reply, done).await.is_ok();
    if sent && done {
        // A clean refusal, exactly as the real node ends one (no reset behind it).
        io.finish();
    } else if sent {
        // Never read: hold the stream until the server gives up on it.
        let _ = io.conn_closed().await;
    }
    true
}

fn refusal(status: RelayStatus, message: String) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + message.len());
    RelayReply { status, message }.encode(&mut out);
    out
}

/// Reads the relay header; `Err(Some(msg))` for a malformed one, `Err(None)` when the
/// stream died first.
async fn read_header(io: &StreamIo) -> Result<(RelayHeader, Vec<u8>), Option<String>> {
    let mut reader = RelayHeaderReader::new();
    let mut buf = [0u8; 2048];
    loop {
        let (n, fin) = io.recv(&mut buf).await.map_err(|_| None)?;
        match reader.feed(&buf[..n], fin) {
            Ok(Some(done)) => return Ok(done),
            Ok(None) => {}
            Err(e) => return Err(Some(e.to_string())),
        }
    }
}

/// Counts the bytes written to the target on one stream and reports them to the server
/// every [`DELIVERED_EVERY`] bytes and once at the end.
struct Delivered<'a> {
    conn: &'a Conn,
    stream: u64,
    bytes: std::cell::Cell<u64>,
    reported: std::cell::Cell<u64>,
    done: std::cell::Cell<bool>,
}

impl<'a> Delivered<'a> {
    fn new(conn: &'a Conn, stream: u64) -> Self {
        Delivered {
            conn,
            stream,
            bytes: Default::default(),
            reported: Default::default(),
            done: Default::default(),
        }
    }

    fn add(&self, n: u64) {
        let total = self.bytes.get() + n;
        self.bytes.set(total);
        if total - self.reported.get() >= DELIVERED_EVERY {
            self.reported.set(total);
            self.conn.driver.report_delivered(self.stream, total, false);
        }
    }

    /// The target-bound direction ended (FIN, error or abort): final report, once.
    fn done(&self) {
        if !self.done.replace(true) {
            self.conn
                .driver
                .report_delivered(self.stream, self.bytes.get(), true);
        }
    }
}

/// Server -> target; stream FIN becomes a TCP half-close.
async fn to_target(
    io: &StreamIo,
    wr: &mut OwnedWriteHalf,
    delivered: &Delivered<'_>,
    shared: &Shared,
) -> Result<(), RelayError> {
    let conn = delivered.conn;
    let result = to_target_loop(io, wr, delivered, conn, shared).await;
    delivered.done();
    result
}

async fn to_target_loop(
    io: &StreamIo,
    wr: &mut OwnedWriteHalf,
    delivered: &Delivered<'_>,
    conn: &Conn,
    shared: &Shared,
) -> Result<(), RelayError> {
    loop {
        io.readable().await?;
        let mut buf = shared.pool.take();
        let moved = async {
            let (n, fin) = io.recv(&mut buf).await?;
            if n > 0 {
                if let Some(cap) = &shared.limits.up {
                    cap.take(n).await;
                }
                wr.write_all(&buf[..n]).await?;
            }
            Ok::<_, RelayError>((n, fin))
        }
        .await;
        shared.pool.put(buf);
        let (n, fin) = moved?;
        if n > 0 {
            delivered.add(n as u64);
            conn.driver
                .to_targets
                .set(conn.driver.to_targets.get() + n as u64);
            shared.usage.add(n as u64);
        }
        if fin {
            wr.shutdown().await?;
            return Ok(());
        }
    }
}

/// Target -> server; read only when the stream has credit and the target has bytes, so
/// an idle tunnel holds no buffer; TCP EOF becomes stream FIN. Each read is handed to
/// quiche as it is (no copy) and freed once the server acknowledged it.
async fn from_target(
    io: &StreamIo,
    rd: &mut OwnedReadHalf,
    conn: &Conn,
    shared: &Shared,
) -> Result<(), RelayError> {
    loop {
        io.writable().await?;
        rd.readable().await?;
        let mut buf = bytes::BytesMut::with_capacity(crate::pool::BUF_SIZE);
        let n = match rd.try_read_buf(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            #[cfg(feature = "fault-injection")]
            if let Some(pad) = crate::fault::download_padding() {
                io.send_all(pad, false).await?;
            }
            io.send_all(&[], true).await?;
            return Ok(());
        }
        if let Some(cap) = &shared.limits.down {
            cap.take(n).await;
        }
        #[cfg(feature = "fault-injection")]
        crate::fault::tamper_download(&mut buf);
        if n >= crate::pool::BUF_SIZE / 4 {
            io.send_owned(buf.freeze(), false).await?;
        } else {
            // A small read is copied, so it never pins a whole buffer in quiche's queue.
            io.send_all(&buf, false).await?;
        }
        conn.driver
            .from_targets
            .set(conn.driver.from_targets.get() + n as u64);
        shared.usage.add(n as u64);
    }
}
