//! The stream adapter both ends share: one QUIC connection driven by one thread, its
//! streams used by many tasks of that thread. Tasks call into the quiche state through
//! [`Stream`]; when quiche has no data or no credit the task parks its waker in the
//! stream's slot, and the connection's driver wakes it ([`Shared::wake_ready`]) after
//! feeding packets in. A task that queued data or freed window kicks the driver
//! ([`Kick`]) so the packets go out. QUIC flow control is therefore the relay's
//! backpressure.
//!
//! No runtime: wakers are `std::task` wakers and the driver is reached through [`Kick`],
//! so the monoio server and the tokio node run the same code.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use bytes::{BufMut, Bytes};

use crate::zc::QuicConn;

/// Wakes the task that drives a connection (sends packets, runs timers).
pub trait Kick {
    /// There is something to send: run the driver soon.
    fn kick(&self);
}

/// Why a stream operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The QUIC connection closed.
    #[error("connection closed")]
    ConnClosed,
    /// The peer reset the stream.
    #[error("stream reset by the peer (code {0})")]
    Reset(u64),
    /// The peer asked us to stop sending.
    #[error("stream stopped by the peer (code {0})")]
    Stopped(u64),
    /// The peer refuses new streams (limit reached or draining).
    #[error("no stream capacity")]
    NoCapacity,
    /// Any other quiche error.
    #[error("quic: {0}")]
    Quic(quiche::Error),
}

/// The wakers of one stream, and what the driver keeps for it (`X`).
#[derive(Default)]
pub struct Slot<X> {
    read: Option<Waker>,
    write: Option<Waker>,
    closed: Option<Waker>,
    /// Woken by the driver's own events (and when the connection closes).
    pub event: Option<Waker>,
    /// Per-stream state of the driver.
    pub extra: X,
}

/// One connection's quiche state and its streams' slots.
pub struct Shared<K, X = ()> {
    /// quiche. Never borrowed across an await.
    pub quic: RefCell<QuicConn>,
    slots: RefCell<HashMap<u64, Slot<X>>>,
    closed: Cell<bool>,
    /// The driver's own state; reaches the driver through [`Kick`].
    pub driver: K,
}

impl<K: Kick, X: Default> Shared<K, X> {
    /// Wraps a fresh connection.
    pub fn new(quic: QuicConn, driver: K) -> Self {
        Shared {
            quic: RefCell::new(quic),
            slots: RefCell::new(HashMap::new()),
            closed: Cell::new(false),
            driver,
        }
    }

    /// Whether the connection is gone (streams fail from then on).
    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Whether stream `id` has a task.
    pub fn has_stream(&self, id: u64) -> bool {
        self.slots.borrow().contains_key(&id)
    }

    /// Runs `f` on stream `id`'s slot, if the stream has a task.
    pub fn with_slot<R>(&self, id: u64, f: impl FnOnce(&mut Slot<X>) -> R) -> Option<R> {
        self.slots.borrow_mut().get_mut(&id).map(f)
    }

    /// Wakes the tasks of streams quiche reports readable or writable, without
    /// allocating.
    pub fn wake_ready(&self) {
        let mut quic = self.quic.borrow_mut();
        let mut slots = self.slots.borrow_mut();
        while let Some(id) = quic.stream_readable_next() {
            if let Some(w) = slots.get_mut(&id).and_then(|s| s.read.take()) {
                w.wake();
            }
        }
        while let Some(id) = quic.stream_writable_next() {
            if let Some(w) = slots.get_mut(&id).and_then(|s| s.write.take()) {
                w.wake();
            }
        }
    }

    /// Marks the connection closed and wakes every stream's task.
    pub fn mark_closed(&self) {
        if self.closed.replace(true) {
            return;
        }
        for s in self.slots.borrow_mut().values_mut() {
            let wakers = [
                s.read.take(),
                s.write.take(),
                s.closed.take(),
                s.event.take(),
            ];
            for w in wakers.into_iter().flatten() {
                w.wake();
            }
        }
    }
}

/// A task's handle on one stream. Dropped before [`Stream::finish`] (or
/// [`Stream::abort`]), it resets the stream both ways with its abort code.
pub struct Stream<K: Kick, X: Default = ()> {
    shared: Rc<Shared<K, X>>,
    id: u64,
    abort_code: u64,
    clean: bool,
}

impl<K: Kick, X: Default> Stream<K, X> {
    /// Registers stream `id`; `abort_code` is the application error code of a reset.
    pub fn new(shared: Rc<Shared<K, X>>, id: u64, abort_code: u64) -> Self {
        shared.slots.borrow_mut().insert(id, Slot::default());
        Stream {
            shared,
            id,
            abort_code,
            clean: false,
        }
    }

    /// The QUIC stream id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The connection.
    pub fn shared(&self) -> &Rc<Shared<K, X>> {
        &self.shared
    }

    fn park(&self, cx: &Context<'_>, pick: impl FnOnce(&mut Slot<X>) -> &mut Option<Waker>) {
        self.shared
            .with_slot(self.id, |s| *pick(s) = Some(cx.waker().clone()));
    }

    fn closed_err(&self) -> Option<Poll<Result<(), StreamError>>> {
        self.shared
            .is_closed()
            .then_some(Poll::Ready(Err(StreamError::ConnClosed)))
    }

    /// Receives into `buf`: `(bytes, fin)`. Waits for data.
    ///
    /// # Errors
    /// [`StreamError`] when the connection closes or the peer resets the stream.
    pub async fn recv(&self, buf: &mut [u8]) -> Result<(usize, bool), StreamError> {
        poll_fn(|cx| self.poll_recv_with(cx, |q, id| q.stream_recv(id, &mut *buf))).await
    }

    /// Appends what the stream holds to `buf`, up to its capacity, without zeroing the
    /// spare capacity first: `(bytes, fin)`. Waits for data.
    ///
    /// # Errors
    /// [`StreamError`] when the connection closes or the peer resets the stream.
    pub async fn recv_into(&self, buf: &mut Vec<u8>) -> Result<(usize, bool), StreamError> {
        poll_fn(|cx| {
            let room = buf.capacity() - buf.len();
            self.poll_recv_with(cx, |q, id| q.stream_recv_buf(id, (&mut *buf).limit(room)))
        })
        .await
    }

    fn poll_recv_with(
        &self,
        cx: &Context<'_>,
        recv: impl FnOnce(&mut QuicConn, u64) -> quiche::Result<(usize, bool)>,
    ) -> Poll<Result<(usize, bool), StreamError>> {
        if self.shared.is_closed() {
            return Poll::Ready(Err(StreamError::ConnClosed));
        }
        let res = recv(&mut self.shared.quic.borrow_mut(), self.id);
        match res {
            Ok(r) => {
                // Reading may open the flow-control window: let the driver send it.
                self.shared.driver.kick();
                Poll::Ready(Ok(r))
            }
            Err(quiche::Error::Done) => {
                self.park(cx, |s| &mut s.read);
                Poll::Pending
            }
            Err(quiche::Error::StreamReset(code)) => Poll::Ready(Err(StreamError::Reset(code))),
            Err(e) => Poll::Ready(Err(StreamError::Quic(e))),
        }
    }

    /// Waits until a receive has something to return (data, FIN, a reset) without
    /// holding a buffer meanwhile.
    ///
    /// # Errors
    /// [`StreamError::ConnClosed`].
    pub async fn readable(&self) -> Result<(), StreamError> {
        poll_fn(|cx| {
            if let Some(closed) = self.closed_err() {
                return closed;
            }
            let q = self.shared.quic.borrow();
            // A reset queues an empty final buffer, so it reads as readable; a stream
            // quiche no longer has reads as finished.
            if q.stream_readable(self.id) || q.stream_finished(self.id) {
                return Poll::Ready(Ok(()));
            }
            drop(q);
            self.park(cx, |s| &mut s.read);
            Poll::Pending
        })
        .await
    }

    /// Waits until the stream can take at least one byte.
    ///
    /// # Errors
    /// [`StreamError`] when the connection closes or the peer stops the stream.
    pub async fn writable(&self) -> Result<(), StreamError> {
        poll_fn(|cx| {
            if let Some(closed) = self.closed_err() {
                return closed;
            }
            let res = self.shared.quic.borrow_mut().stream_writable(self.id, 1);
            match res {
                Ok(true) => Poll::Ready(Ok(())),
                Ok(false) => {
                    self.park(cx, |s| &mut s.write);
                    Poll::Pending
                }
                Err(quiche::Error::StreamStopped(c)) => Poll::Ready(Err(StreamError::Stopped(c))),
                Err(e) => Poll::Ready(Err(StreamError::Quic(e))),
            }
        })
        .await
    }

    /// Sends all of `data` (copied into quiche), then FIN if `fin`, waiting for
    /// flow-control credit. Returns once quiche holds the bytes.
    ///
    /// # Errors
    /// [`StreamError`] when the connection closes or the peer stops the stream.
    pub async fn send_all(&self, data: &[u8], fin: bool) -> Result<(), StreamError> {
        let mut off = 0;
        loop {
            let rest = &data[off..];
            let n = poll_fn(|cx| {
                self.poll_send_with(cx, rest.is_empty(), |q, id| q.stream_send(id, rest, fin))
            })
            .await?;
            off += n;
            if off == data.len() {
                return Ok(());
            }
        }
    }

    /// Sends all of `data` without copying it (quiche keeps the buffer until the peer
    /// acknowledged it), then FIN if `fin`.
    ///
    /// # Errors
    /// [`StreamError`] when the connection closes or the peer stops the stream.
    pub async fn send_owned(&self, data: Bytes, fin: bool) -> Result<(), StreamError> {
        let mut rest = data;
        loop {
            let tail = poll_fn(|cx| {
                let mut tail = None;
                let polled = self.poll_send_with(cx, rest.is_empty(), |q, id| {
                    let (n, left) = q.stream_send_zc(id, rest.clone(), fin)?;
                    tail = left;
                    Ok(n)
                });
                polled.map(|r| r.map(|_| tail))
            })
            .await?;
            match tail {
                Some(left) if !left.is_empty() => rest = left,
                _ => return Ok(()),
            }
        }
    }

    fn poll_send_with(
        &self,
        cx: &Context<'_>,
        empty: bool,
        send: impl FnOnce(&mut QuicConn, u64) -> quiche::Result<usize>,
    ) -> Poll<Result<usize, StreamError>> {
        if self.shared.is_closed() {
            return Poll::Ready(Err(StreamError::ConnClosed));
        }
        let res = send(&mut self.shared.quic.borrow_mut(), self.id);
        match res {
            Ok(n) if n > 0 || empty => {
                self.shared.driver.kick();
                Poll::Ready(Ok(n))
            }
            Ok(_) | Err(quiche::Error::Done) => {
                // Ask quiche to report the stream writable once any credit opens up.
                let _ = self.shared.quic.borrow_mut().stream_writable(self.id, 1);
                self.park(cx, |s| &mut s.write);
                Poll::Pending
            }
            Err(quiche::Error::StreamStopped(code)) => Poll::Ready(Err(StreamError::Stopped(code))),
            Err(e) => Poll::Ready(Err(StreamError::Quic(e))),
        }
    }

    /// Resolves (with [`StreamError::ConnClosed`]) when the connection closes.
    pub async fn conn_closed(&self) -> StreamError {
        poll_fn(|cx| {
            if self.shared.is_closed() {
                Poll::Ready(StreamError::ConnClosed)
            } else {
                self.park(cx, |s| &mut s.closed);
                Poll::Pending
            }
        })
        .await
    }

    /// Waits for the driver's next event on this stream (or the connection's close):
    /// `ready` is checked first and after every wake-up.
    pub async fn event<R>(&self, mut ready: impl FnMut(&X) -> Option<R>) -> Option<R> {
        poll_fn(|cx| {
            let now = self.shared.with_slot(self.id, |s| ready(&s.extra));
            match now {
                Some(Some(r)) => Poll::Ready(Some(r)),
                None => Poll::Ready(None),
                Some(None) if self.shared.is_closed() => Poll::Ready(None),
                Some(None) => {
                    self.park(cx, |s| &mut s.event);
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Stops reading (the peer is told with STOP_SENDING) but lets what was already
    /// queued, and its FIN, reach the peer: dropping the stream then resets nothing.
    pub fn stop_reading(&mut self) {
        let _ = self.shared.quic.borrow_mut().stream_shutdown(
            self.id,
            quiche::Shutdown::Read,
            self.abort_code,
        );
        self.shared.driver.kick();
        self.clean = true;
    }

    /// Resets the stream both ways now; dropping it later resets nothing more.
    pub fn abort(&mut self) {
        if !self.clean && !self.shared.is_closed() {
            let mut q = self.shared.quic.borrow_mut();
            let _ = q.stream_shutdown(self.id, quiche::Shutdown::Write, self.abort_code);
            let _ = q.stream_shutdown(self.id, quiche::Shutdown::Read, self.abort_code);
            drop(q);
            self.shared.driver.kick();
        }
        self.clean = true;
    }

    /// The stream ended cleanly both ways: do not reset it on drop.
    pub fn finish(&mut self) {
        self.clean = true;
    }
}

impl<K: Kick, X: Default> Drop for Stream<K, X> {
    fn drop(&mut self) {
        self.shared.slots.borrow_mut().remove(&self.id);
        self.abort();
    }
}
