//! A relay stream: one server-initiated bidirectional QUIC stream, as seen by the
//! relay task of one customer connection. The stream I/O is `turbo_quic`'s shared
//! adapter (the node runs the same code), reached through `Deref`; this adds opening on
//! a node connection and the node's delivery reports. Dropping a stream that did not
//! finish cleanly resets it in both directions.

use std::rc::Rc;

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
impl std::ops::Deref for RelayStream {
    type Target = Stream<Signal, Delivery>;

    fn deref(&self) -> &Self::Target {
        &self.io
    }
}

impl std::ops::DerefMut for RelayStream {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.io
    }
}
