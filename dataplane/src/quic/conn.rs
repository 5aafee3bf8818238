//! One node's QUIC connection on its owning core: the quiche state, the wakers of the
//! relay streams that ride on it, and the task that drives it (timers, packet output,
//! waking streams).
//!
//! Packets are fed in by the endpoint's receive loop ([`NodeConn::deliver`]), which
//! then signals the driver. Relay tasks call into the quiche state through
//! [`super::stream::RelayStream`], the shared stream adapter of `turbo_quic`
//! ([`Shared`], reached through `Deref`), and signal the driver when they queued data.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use turbo_quic::stream::{Kick, Shared};

use tracing::debug;

use super::control_state::ControlStream;
use crate::signal::Signal;

/// Largest UDP payload the server accepts.
pub(crate) const MAX_DATAGRAM: usize = turbo_quic::MAX_RECV_PAYLOAD;

/// What the node reported delivered on one relay stream.
#[derive(Default)]
pub(crate) struct Delivery {
    /// Upstream bytes the node says it wrote to the target (monotonic).
    pub(crate) bytes: u64,
    /// The node says its target-bound direction ended.
    pub(crate) done: bool,
}

/// The quiche state and relay streams of one node connection; its driver is woken
/// through a [`Signal`].
pub(crate) type Streams = Shared<Signal, Delivery>;

impl Kick for Signal {
    fn kick(&self) {
        self.notify();
    }
}

/// A node connection owned by one core.
pub(crate) struct NodeConn {
    /// Serial number on this core (see [`crate::control::ConnRef`]).
    pub(crate) serial: u64,
    /// quiche and the relay streams; `driver` wakes the driver (packets arrived or
    /// streams queued data).
    pub(crate) streams: Rc<Streams>,
    /// Next server-initiated bidirectional stream id.
    next_stream: Cell<u64>,
    /// The node's id once admitted by the control plane.
    pub(crate) node_id: RefCell<Option<Arc<str>>>,
    /// The node's current address.
    pub(crate) peer: Cell<SocketAddr>,
    /// The control stream (id 0).
    pub(crate) control: RefCell<ControlStream>,
    /// Connection ids routed to this connection by the endpoint.
    pub(crate) cids: RefCell<Vec<Vec<u8>>>,
    /// When the connection was accepted.
    pub(crate) accepted_at: Instant,
    /// Counted in the endpoint's handshaking connections.
    pub(crate) handshaking: Cell<bool>,
    /// The packet pacing holds back, if any.
    pub(super) pacer: RefCell<turbo_quic::batch::Pacer>,
}

impl std::ops::Deref for NodeConn {
    type Target = Streams;

    fn deref(&self) -> &Streams {
        &self.streams
    }
}

impl NodeConn {
    pub(crate) fn new(
        serial: u64,
        quic: turbo_quic::QuicConn,
        peer: SocketAddr,
        cids: Vec<Vec<u8>>,
    ) -> Self {
        NodeConn {
            serial,
            streams: Rc::new(Shared::new(quic, Signal::default())),
            next_stream: Cell::new(1),
            node_id: RefCell::new(None),
            peer: Cell::new(peer),
            control: RefCell::new(ControlStream::default()),
            cids: RefCell::new(cids),
            accepted_at: Instant::now(),
            handshaking: Cell::new(true),
            pacer: RefCell::default(),
        }
    }

    /// Whether the connection may get new streams: open and not draining. Admission is
    /// not checked here: a route to this connection exists only once the control plane
    /// admitted it, which may be a moment before the admission reaches this core (a
    /// listed node must be routable at once), and the node serves relay streams before
    /// its Welcome arrives.
    pub(crate) fn accepts_streams(&self) -> bool {
        !self.is_closed() && !self.control.borrow().draining
    }

    /// Allocates the next relay stream id.
    pub(crate) fn next_stream_id(&self) -> u64 {
        let id = self.next_stream.get();
        self.next_stream.set(id + 4);
        id
    }

    /// Records a node's delivery report for `stream` (reports for streams that are not
    /// open here are ignored; a report can only move forward).
    pub(crate) fn delivered(&self, stream: u64, bytes: u64, done: bool) {
        record_delivery(&self.streams, stream, bytes, done);
    }

    /// Feeds one received datagram to quiche and wakes the driver.
    pub(crate) fn deliver(&self, pkt: &mut [u8], from: SocketAddr, to: SocketAddr) {
        let res = self
            .quic
            .borrow_mut()
            .recv(pkt, quiche::RecvInfo { from, to });
        if let Err(e) = res {
            debug!(error = %e, "dropping undecodable packet");
        }
        self.peer.set(from);
        self.driver.notify();
    }
}

/// Records a node's delivery report for `stream` on `streams` and wakes the relay
/// waiting for it (reports for streams that are not open are ignored; a report can
/// only move forward).
pub(crate) fn record_delivery<K: Kick>(
    streams: &Shared<K, Delivery>,
    stream: u64,
    bytes: u64,
    done: bool,
) {
    streams.with_slot(stream, |slot| {
        slot.extra.bytes = slot.extra.bytes.max(bytes);
        slot.extra.done |= done;
        if let Some(w) = slot.event.take() {
            w.wake();
        }
    });
}
