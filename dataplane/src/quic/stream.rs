//! A relay stream: one server-initiated bidirectional QUIC stream, as seen by the
//! relay task of one customer connection. The stream I/O is `turbo_quic`'s shared
//! adapter (the node runs the same code), reached through `Deref`; this adds opening on
//! a node connection and the node's delivery reports. Dropping a stream that did not
//! finish cleanly resets it in both directions.

use std::rc::Rc;

use turbo_quic::stream::{Kick, Stream};

use super::conn::{Delivery, NodeConn};
use crate::signal::Signal;

pub(crate) use turbo_quic::stream::StreamError;

/// Application error code for a stream aborted by the customer side.
pub(crate) const RESET_CUSTOMER_ABORT: u64 = 0x1;

/// A relay stream bound to its connection. `K` wakes the connection's driver: the
/// core's [`Signal`], or the in-memory pair's in unit tests.
pub(crate) struct RelayStream<K: Kick = Signal> {
    io: Stream<K, Delivery>,
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
}

impl<K: Kick> RelayStream<K> {
    /// The relay stream `id` on `streams`, already open (the in-memory pair's server
    /// end in unit tests).
    #[cfg(test)]
    pub(crate) fn on(streams: Rc<turbo_quic::stream::Shared<K, Delivery>>, id: u64) -> Self {
        RelayStream {
            io: Stream::new(streams, id, RESET_CUSTOMER_ABORT),
        }
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
}

/// The stream I/O itself (receive, send, readiness, `stop_reading`, `abort`, `finish`)
/// is the shared adapter's.
impl<K: Kick> std::ops::Deref for RelayStream<K> {
    type Target = Stream<K, Delivery>;

    fn deref(&self) -> &Self::Target {
        &self.io
    }
}

impl<K: Kick> std::ops::DerefMut for RelayStream<K> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.io
    }
}
