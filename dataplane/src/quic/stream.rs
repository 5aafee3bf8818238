//! A relay stream: one server-initiated bidirectional QUIC stream, as seen by the
//! relay task of one customer connection. The stream I/O is `turbo_quic`'s shared
//! adapter (the node runs the same code); this adds opening on a node connection and
//! the node's delivery reports. Dropping a stream that did not finish cleanly resets it
//! in both directions.

use std::rc::Rc;

use bytes::Bytes;
use turbo_quic::stream::Stream;

use super::conn::{Delivery, NodeConn};
use crate::signal::Signal;

pub(crate) use turbo_quic::stream::StreamError;

/// Application error code for a stream aborted by the customer side.
pub(crate) const RESET_CUSTOMER_ABORT: u64 = 0x1;

/// A relay stream bound to its connection.
pub(crate) struct RelayStream {
    io: Stream<Signal, Delivery>,
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
        let io = Stream::new(conn.streams.clone(), id, RESET_CUSTOMER_ABORT);
        Ok(RelayStream { io })
    }

    /// The QUIC stream id.
    pub(crate) fn id(&self) -> u64 {
        self.io.id()
    }

    /// Sends all of `data` (and FIN when `fin`), waiting for flow-control credit.
    ///
    /// # Errors
    /// [`StreamError`] when the connection closes or the node stops the stream.
    pub(crate) async fn send_all(&self, data: &[u8], fin: bool) -> Result<(), StreamError> {
        self.io.send_all(data, fin).await
    }

    /// Sends all of `data` without copying it into quiche.
    ///
    /// # Errors
    /// [`StreamError`] when the connection closes or the node stops the stream.
    pub(crate) async fn send_owned(&self, data: Bytes) -> Result<(), StreamError> {
        self.io.send_owned(data, false).await
    }

    /// Waits until the stream can take at least one byte.
    ///
    /// # Errors
    /// [`StreamError`] when the connection closes or the node stops the stream.
    pub(crate) async fn writable(&self) -> Result<(), StreamError> {
        self.io.writable().await
    }

    /// Waits until a receive has something to return, holding no buffer.
    ///
    /// # Errors
    /// [`StreamError::ConnClosed`].
    pub(crate) async fn readable(&self) -> Result<(), StreamError> {
        self.io.readable().await
    }

    /// Receives into `buf`: `(bytes, fin)`. Waits for data.
    ///
    /// # Errors
    /// [`StreamError`] when the connection closes or the node resets the stream.
    pub(crate) async fn recv(&self, buf: &mut [u8]) -> Result<(usize, bool), StreamError> {
        self.io.recv(buf).await
    }

    /// Appends up to `buf`'s spare capacity, without zeroing it: `(bytes, fin)`.
    ///
    /// # Errors
    /// [`StreamError`] when the connection closes or the node resets the stream.
    pub(crate) async fn recv_into(&self, buf: &mut Vec<u8>) -> Result<(usize, bool), StreamError> {
        self.io.recv_into(buf).await
    }

    /// Resolves (with [`StreamError::ConnClosed`]) when the node connection closes.
    pub(crate) async fn conn_closed(&self) -> StreamError {
        self.io.conn_closed().await
    }

    /// What the node reported delivered to the target: `(bytes, done)`.
    pub(crate) fn delivered(&self) -> (u64, bool) {
        self.io
            .shared()
            .with_slot(self.io.id(), |s| (s.extra.bytes, s.extra.done))
            .unwrap_or((0, true))
    }

    /// Waits until the node reports more than `beyond` bytes delivered, or that it is
    /// done, or the connection closes. Returns the report.
    pub(crate) async fn delivery_beyond(&self, beyond: u64) -> (u64, bool) {
        let report = self
            .io
            .event(|d| (d.bytes > beyond || d.done).then_some((d.bytes, d.done)))
            .await;
        // The connection closed: no more reports will come.
        report.unwrap_or_else(|| (self.delivered().0, true))
    }

    /// Stops reading (the node is told with STOP_SENDING) but lets what was already
    /// queued upstream, and its FIN, reach the node: dropping the stream then resets
    /// nothing. Used when the key can pay no more.
    pub(crate) fn stop_reading(&mut self) {
        self.io.stop_reading();
    }

    /// Resets the stream both ways now (the node stops writing to the target and sends
    /// its last delivery report); dropping it later resets nothing more.
    pub(crate) fn abort(&mut self) {
        self.io.abort();
    }

    /// Marks the stream as finished cleanly in both directions, so dropping it does not
    /// reset it.
    pub(crate) fn finish(&mut self) {
        self.io.finish();
    }
}
