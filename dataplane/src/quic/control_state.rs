//! A node connection's control-stream state: the decoder of what the node sent, the
//! output queued for it, and what the server learnt (hello, drain, stats). A leaf: the
//! handling lives in [`super::control_stream`].

use std::time::Instant;

use turbo_proto::wire::control::{ControlDecoder, ControlMessage, NodeStats};

/// Per-connection control-stream state.
#[derive(Default)]
pub(crate) struct ControlStream {
    pub(super) decoder: ControlDecoder,
    pub(super) out: Vec<u8>,
    pub(super) hello_received: bool,
    /// The node announced it is draining: no new streams.
    pub(crate) draining: bool,
    /// The control plane has been told the node is gone.
    pub(crate) gone_reported: bool,
    pub(super) close_after_flush: Option<(u64, &'static [u8])>,
    pub(super) last_rtt_report: Option<Instant>,
    /// The node's own counters (informational only).
    pub(crate) stats: NodeStats,
    /// The node was last told its earnings are held (so a release is told too).
    pub(super) told_held: bool,
    /// The version of the server list last told (0: none yet).
    pub(super) told_servers: u64,
}

impl ControlStream {
    /// Queues `msg` for the node; the connection driver sends it.
    pub(crate) fn queue(&mut self, msg: &ControlMessage) {
        msg.encode(&mut self.out);
    }
}
