//! A relay stream: one server-initiated bidirectional QUIC stream, as seen by the
//! relay task of one customer connection.
//!
//! Reads and writes go straight into the connection's quiche state; when quiche has no
//! data or no flow-control credit the task parks its waker in the connection's slot and
//! the driver wakes it. QUIC flow control is therefore the relay's backpressure.
//! Dropping a stream that did not finish cleanly resets it in both directions.

use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Context, Poll};

use super::conn::NodeConn;

/// Application error code for a stream aborted by the customer side.
pub(crate) const RESET_CUSTOMER_ABORT: u64 = 0x1;

/// Why a stream operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum StreamError {
    /// The node connection closed.
    #[error("node connection closed")]
    ConnClosed,
    /// The node reset the stream.
    #[error("node reset the stream (code {0})")]
    Reset(u64),
    /// The node asked us to stop sending.
    #[error("node stopped the stream (code {0})")]
    Stopped(u64),
    /// The node refuses new streams (limit reached or draining).
    #[error("node has no stream capacity")]
    NoCapacity,
    /// Any other quiche error.
    #[error("quic: {0}")]
    Quic(quiche::Error),
}

/// A relay stream bound to its connection.
pub(crate) struct RelayStream {
    conn: Rc<NodeConn>,
    id: u64,
    clean: bool,
}

impl RelayStream {
    /// Opens the next relay stream on `conn`.
    ///
    /// # Errors
    /// [`StreamError::ConnClosed`] or [`StreamError::NoCapacity`].
    pub(crate) fn open(conn: &Rc<NodeConn>) -> Result<Self, StreamError> {
        if conn.is_closed() {
            return Err(StreamError::ConnClosed);
        }
        if !conn.accepts_streams() || conn.quic.borrow().peer_streams_left_bidi() == 0 {
            return Err(StreamError::NoCapacity);
        }
        let id = conn.next_stream_id();
        conn.slots.borrow_mut().insert(id, Default::default());
        Ok(RelayStream {
            conn: conn.clone(),
            id,
            clean: false,
        })
    }

    /// The QUIC stream id.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    fn slot<R>(&self, f: impl FnOnce(&mut super::conn::StreamSlot) -> R) -> Option<R> {
        self.conn.slots.borrow_mut().get_mut(&self.id).map(f)
    }

    fn poll_send(
        &self,
        cx: &mut Context<'_>,
        data: &[u8],
        fin: bool,
    ) -> Poll<Result<usize, StreamError>> {
        if self.conn.is_closed() {
            return Poll::Ready(Err(StreamError::ConnClosed));
        }
        let res = self.conn.quic.borrow_mut().stream_send(self.id, data, fin);
        match res {
            Ok(n) if n > 0 || data.is_empty() => {
                self.conn.flush.notify();
                Poll::Ready(Ok(n))
            }
            Ok(_) | Err(quiche::Error::Done) => {
                // Ask quiche to report the stream writable once any credit opens up.
                let _ = self.conn.quic.borrow_mut().stream_writable(self.id, 1);
                self.slot(|s| s.write = Some(cx.waker().clone()));
                Poll::Pending
            }
            Err(quiche::Error::StreamStopped(code)) => Poll::Ready(Err(StreamError::Stopped(code))),
            Err(e) => Poll::Ready(Err(StreamError::Quic(e))),
        }
    }

    /// Sends all of `data` (and FIN when `fin`), waiting for flow-control credit.
    /// Returns once quiche holds the bytes.
    ///
    /// # Errors
    /// [`StreamError`] when the connection closes or the node stops the stream.
    pub(crate) async fn send_all(&self, data: &[u8], fin: bool) -> Result<(), StreamError> {
        let mut off = 0;
        loop {
            let n = poll_fn(|cx| self.poll_send(cx, &data[off..], fin)).await?;
            off += n;
            if off == data.len() {
                return Ok(());
            }
        }
    }

    /// Waits until the stream can take at least one byte.
    ///
    /// # Errors
    /// [`StreamError`] when the connection closes or the node stops the stream.
    pub(crate) async fn writable(&self) -> Result<(), StreamError> {
        poll_fn(|cx| {
            if self.conn.is_closed() {
                return Poll::Ready(Err(StreamError::ConnClosed));
            }
            let res = self.conn.quic.borrow_mut().stream_writable(self.id, 1);
            match res {
                Ok(true) => Poll::Ready(Ok(())),
                Ok(false) => {
                    self.slot(|s| s.write = Some(cx.waker().clone()));
                    Poll::Pending
                }
                Err(quiche::Error::StreamStopped(code)) => {
                    Poll::Ready(Err(StreamError::Stopped(code)))
                }
                Err(e) => Poll::Ready(Err(StreamError::Quic(e))),
            }
        })
        .await
    }

    /// Receives into `buf`: `(bytes, fin)`. Waits for data.
    ///
    /// # Errors
    /// [`StreamError`] when the connection closes or the node resets the stream.
    pub(crate) async fn recv(&self, buf: &mut [u8]) -> Result<(usize, bool), StreamError> {
        poll_fn(|cx| {
            if self.conn.is_closed() {
                return Poll::Ready(Err(StreamError::ConnClosed));
            }
            let res = self.conn.quic.borrow_mut().stream_recv(self.id, buf);
            match res {
                Ok(r) => {
                    // Reading may open the flow-control window: let the driver send it.
                    self.conn.flush.notify();
                    Poll::Ready(Ok(r))
                }
                Err(quiche::Error::Done) => {
                    self.slot(|s| s.read = Some(cx.waker().clone()));
                    Poll::Pending
                }
                Err(quiche::Error::StreamReset(code)) => Poll::Ready(Err(StreamError::Reset(code))),
                Err(e) => Poll::Ready(Err(StreamError::Quic(e))),
            }
        })
        .await
    }

    /// Resolves (with [`StreamError::ConnClosed`]) when the node connection closes.
    pub(crate) async fn conn_closed(&self) -> StreamError {
        poll_fn(|cx| {
            if self.conn.is_closed() {
                Poll::Ready(StreamError::ConnClosed)
            } else {
                self.slot(|s| s.closed = Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }

    /// What the node reported delivered to the target: `(bytes, done)`.
    pub(crate) fn delivered(&self) -> (u64, bool) {
        self.slot(|s| (s.delivered, s.delivered_done))
            .unwrap_or((0, true))
    }

    /// Waits until the node reports more than `beyond` bytes delivered, or that it is
    /// done, or the connection closes. Returns the report.
    pub(crate) async fn delivery_beyond(&self, beyond: u64) -> (u64, bool) {
        poll_fn(|cx| {
            let (bytes, done) = self.delivered();
            if bytes > beyond || done || self.conn.is_closed() {
                return Poll::Ready((bytes, done || self.conn.is_closed()));
            }
            self.slot(|s| s.delivery = Some(cx.waker().clone()));
            Poll::Pending
        })
        .await
    }

    /// Stops reading (the node is told with STOP_SENDING) but lets what was already
    /// queued upstream, and its FIN, reach the node: dropping the stream then resets
    /// nothing. Used when the key can pay no more.
    pub(crate) fn stop_reading(&mut self) {
        let _ = self.conn.quic.borrow_mut().stream_shutdown(
            self.id,
            quiche::Shutdown::Read,
            RESET_CUSTOMER_ABORT,
        );
        self.conn.flush.notify();
        self.clean = true;
    }

    /// Resets the stream both ways now (the node stops writing to the target and sends
    /// its last delivery report); dropping it later resets nothing more.
    pub(crate) fn abort(&mut self) {
        if !self.clean && !self.conn.is_closed() {
            let mut quic = self.conn.quic.borrow_mut();
            let _ = quic.stream_shutdown(self.id, quiche::Shutdown::Write, RESET_CUSTOMER_ABORT);
            let _ = quic.stream_shutdown(self.id, quiche::Shutdown::Read, RESET_CUSTOMER_ABORT);
            drop(quic);
            self.conn.flush.notify();
        }
        self.clean = true;
    }

    /// Marks the stream as finished cleanly in both directions, so dropping it does not
    /// reset it.
    pub(crate) fn finish(&mut self) {
        self.clean = true;
    }
}

impl Drop for RelayStream {
    fn drop(&mut self) {
        self.conn.slots.borrow_mut().remove(&self.id);
        self.abort();
    }
}
