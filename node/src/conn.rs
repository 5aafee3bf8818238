//! The node's QUIC connection as its tasks share it on one thread: the shared stream
//! adapter of `turbo_quic` ([`Conn`], [`StreamIo`]) with the node's own per-connection
//! state ([`Driver`]). The connection's driver loop ([`crate::session`]) feeds packets
//! in and wakes streams; streams kick the driver when they queued data. QUIC flow
//! control is the relay's backpressure.

use std::cell::{Cell, RefCell};

use tokio::sync::Notify;
use turbo_proto::wire::control::ControlMessage;
use turbo_quic::stream::{Kick, Shared, Stream};

pub use turbo_quic::stream::StreamError;

/// Application error code for a stream aborted by the node (target reset, error).
pub const RESET_TARGET_ABORT: u64 = 0x2;

/// The connection shared by its driver loop and the relay tasks.
pub type Conn = Shared<Driver>;

/// A relay task's handle on one stream. Dropped without `finish`, it resets the stream
/// both ways with [`RESET_TARGET_ABORT`].
pub type StreamIo = Stream<Driver>;

/// Opens the handle of server stream `id`.
pub fn stream(conn: &std::rc::Rc<Conn>, id: u64) -> StreamIo {
    Stream::new(conn.clone(), id, RESET_TARGET_ABORT)
}

/// What the node keeps per connection besides quiche, and how tasks reach its driver.
#[derive(Default)]
pub struct Driver {
    /// Wakes the connection's driver loop.
    pub wake: Notify,
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
    /// Control messages from relay tasks, sent by the driver loop.
    pub outbox: RefCell<Vec<u8>>,
}

impl Kick for Driver {
    fn kick(&self) {
        self.wake.notify_one();
    }
}

impl Driver {
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
}
