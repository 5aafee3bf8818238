//! The node's QUIC connection as its tasks share it on one thread: the quiche state,
//! per-stream wakers, and [`StreamIo`], a relay task's handle on one stream. The
//! session driver feeds packets in and wakes streams; streams poke the driver when they
//! queued data. QUIC flow control is the relay's backpressure.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

use tokio::sync::Notify;
use turbo_proto::wire::control::ControlMessage;

/// Application error code for a stream aborted by the node (target reset, error).
pub const RESET_TARGET_ABORT: u64 = 0x2;

#[derive(Default)]
struct Slot {
    read: Option<Waker>,
    write: Option<Waker>,
    closed: Option<Waker>,
}

/// Why a stream operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The QUIC connection closed.
    #[error("connection closed")]
    ConnClosed,
    /// The server reset the stream.
    #[error("stream reset by server (code {0})")]
    Reset(u64),
    /// The server stopped reading the stream.
    #[error("stream stopped by server (code {0})")]
    Stopped(u64),
    /// Another quiche error.
    #[error("quic: {0}")]
    Quic(quiche::Error),
}

/// Shared connection state.
pub struct Conn {
    /// quiche. Never borrowed across an await.
    pub quic: RefCell<quiche::Connection>,
    slots: RefCell<HashMap<u64, Slot>>,
    /// Wakes the session driver.
    pub wake: Notify,
    closed: Cell<bool>,
    /// Refusing new streams (shutting down).
    pub draining: Cell<bool>,
    /// Relay streams open now.
    pub active: Cell<u64>,
    /// Relay streams accepted in total.
    pub total: Cell<u64>,
    /// Bytes received from targets.
    pub from_targets: Cell<u64>,
    /// Bytes sent to targets.
    pub to_targets: Cell<u64>,
    /// Control messages from relay tasks, sent by the session driver.
    pub outbox: RefCell<Vec<u8>>,
}

impl Conn {
    /// Wraps a fresh connection.
    pub fn new(quic: quiche::Connection) -> Self {
        Conn {
            quic: RefCell::new(quic),
            slots: RefCell::new(HashMap::new()),
            wake: Notify::new(),
            closed: Cell::new(false),
            draining: Cell::new(false),
            active: Cell::new(0),
            total: Cell::new(0),
            from_targets: Cell::new(0),
            to_targets: Cell::new(0),
            outbox: RefCell::new(Vec::new()),
        }
    }

    /// Tells the server how many bytes of relay stream `stream` reached the target
    /// (`done`: no more will). The server bills uploads by these reports.
    pub fn report_delivered(&self, stream: u64, bytes: u64, done: bool) {
        ControlMessage::Delivered {
            stream,
            bytes,
            done,
        }
        .encode(&mut self.outbox.borrow_mut());
        self.wake.notify_one();
    }

    /// Whether the connection is gone.
    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Wakes streams quiche reports readable or writable.
    pub fn wake_ready(&self) {
        let quic = self.quic.borrow();
        let mut slots = self.slots.borrow_mut();
        for id in quic.readable() {
            if let Some(w) = slots.get_mut(&id).and_then(|s| s.read.take()) {
                w.wake();
            }
        }
        for id in quic.writable() {
            if let Some(w) = slots.get_mut(&id).and_then(|s| s.write.take()) {
                w.wake();
            }
        }
    }

    /// Marks the connection closed and wakes every stream.
    pub fn mark_closed(&self) {
        if self.closed.replace(true) {
            return;
        }
        for s in self.slots.borrow_mut().values_mut() {
            for w in [s.read.take(), s.write.take(), s.closed.take()]
                .into_iter()
                .flatten()
            {
                w.wake();
            }
        }
    }

    /// Whether a stream id already has a relay task.
    pub fn has_stream(&self, id: u64) -> bool {
        self.slots.borrow().contains_key(&id)
    }
}

/// A relay task's handle on one stream. Dropped without [`StreamIo::finish`], it resets
/// the stream both ways.
pub struct StreamIo {
    conn: Rc<Conn>,
    id: u64,
    clean: bool,
}

impl StreamIo {
    /// Registers stream `id`.
    pub fn new(conn: Rc<Conn>, id: u64) -> Self {
        conn.slots.borrow_mut().insert(id, Slot::default());
        StreamIo {
            conn,
            id,
            clean: false,
        }
    }

    fn park(&self, f: impl FnOnce(&mut Slot)) {
        if let Some(s) = self.conn.slots.borrow_mut().get_mut(&self.id) {
            f(s);
        }
    }

    /// Receives into `buf`: `(bytes, fin)`.
    ///
    /// # Errors
    /// [`StreamError`].
    pub async fn recv(&self, buf: &mut [u8]) -> Result<(usize, bool), StreamError> {
        poll_fn(|cx| {
            if self.conn.is_closed() {
                return Poll::Ready(Err(StreamError::ConnClosed));
            }
            let res = self.conn.quic.borrow_mut().stream_recv(self.id, buf);
            match res {
                Ok(r) => {
                    self.conn.wake.notify_one();
                    Poll::Ready(Ok(r))
                }
                Err(quiche::Error::Done) => {
                    self.park(|s| s.read = Some(cx.waker().clone()));
                    Poll::Pending
                }
                Err(quiche::Error::StreamReset(c)) => Poll::Ready(Err(StreamError::Reset(c))),
                Err(e) => Poll::Ready(Err(StreamError::Quic(e))),
            }
        })
        .await
    }

    /// Waits until `recv` has something to return (data, FIN, a reset) without taking
    /// a buffer meanwhile.
    ///
    /// # Errors
    /// [`StreamError::ConnClosed`].
    pub async fn readable(&self) -> Result<(), StreamError> {
        poll_fn(|cx| {
            if self.conn.is_closed() {
                return Poll::Ready(Err(StreamError::ConnClosed));
            }
            let q = self.conn.quic.borrow();
            // A reset queues an empty final buffer, so it reads as readable; a stream
            // quiche no longer has reads as finished.
            if q.stream_readable(self.id) || q.stream_finished(self.id) {
                return Poll::Ready(Ok(()));
            }
            drop(q);
            self.park(|s| s.read = Some(cx.waker().clone()));
            Poll::Pending
        })
        .await
    }

    /// Waits for send credit.
    ///
    /// # Errors
    /// [`StreamError`].
    pub async fn writable(&self) -> Result<(), StreamError> {
        poll_fn(|cx| {
            if self.conn.is_closed() {
                return Poll::Ready(Err(StreamError::ConnClosed));
            }
            let res = self.conn.quic.borrow_mut().stream_writable(self.id, 1);
            match res {
                Ok(true) => Poll::Ready(Ok(())),
                Ok(false) => {
                    self.park(|s| s.write = Some(cx.waker().clone()));
                    Poll::Pending
                }
                Err(quiche::Error::StreamStopped(c)) => Poll::Ready(Err(StreamError::Stopped(c))),
                Err(e) => Poll::Ready(Err(StreamError::Quic(e))),
            }
        })
        .await
    }

    /// Sends all of `data`, then FIN if `fin`.
    ///
    /// # Errors
    /// [`StreamError`].
    pub async fn send_all(&self, data: &[u8], fin: bool) -> Result<(), StreamError> {
        let mut off = 0;
        loop {
            let n = poll_fn(|cx| {
                if self.conn.is_closed() {
                    return Poll::Ready(Err(StreamError::ConnClosed));
                }
                let rest = &data[off..];
                let res = self.conn.quic.borrow_mut().stream_send(self.id, rest, fin);
                match res {
                    Ok(n) if n > 0 || rest.is_empty() => {
                        self.conn.wake.notify_one();
                        Poll::Ready(Ok(n))
                    }
                    Ok(_) | Err(quiche::Error::Done) => {
                        let _ = self.conn.quic.borrow_mut().stream_writable(self.id, 1);
                        self.park(|s| s.write = Some(cx.waker().clone()));
                        Poll::Pending
                    }
                    Err(quiche::Error::StreamStopped(c)) => {
                        Poll::Ready(Err(StreamError::Stopped(c)))
                    }
                    Err(e) => Poll::Ready(Err(StreamError::Quic(e))),
                }
            })
            .await?;
            off += n;
            if off == data.len() {
                return Ok(());
            }
        }
    }

    /// Resolves when the connection closes.
    pub async fn conn_closed(&self) -> StreamError {
        poll_fn(|cx| {
            if self.conn.is_closed() {
                Poll::Ready(StreamError::ConnClosed)
            } else {
                self.park(|s| s.closed = Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }

    /// The stream ended cleanly: do not reset it on drop.
    pub fn finish(&mut self) {
        self.clean = true;
    }
}

impl Drop for StreamIo {
    fn drop(&mut self) {
        self.conn.slots.borrow_mut().remove(&self.id);
        if !self.clean && !self.conn.is_closed() {
            let mut q = self.conn.quic.borrow_mut();
            let _ = q.stream_shutdown(self.id, quiche::Shutdown::Write, RESET_TARGET_ABORT);
            let _ = q.stream_shutdown(self.id, quiche::Shutdown::Read, RESET_TARGET_ABORT);
            drop(q);
            self.conn.wake.notify_one();
        }
    }
}
