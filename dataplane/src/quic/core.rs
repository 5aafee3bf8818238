//! What a core's QUIC side works with: its endpoint, and the handles it needs from the
//! rest of the server (settings, the control plane, the node table, the limits and
//! counters, and a channel to every other core's QUIC side for datagrams that arrive on
//! the wrong core).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::conn::NodeConn;
use super::endpoint::QuicEndpoint;
use crate::control::{ConnRef, ToControl};
use crate::links::CoreLinks;

/// A datagram that arrived on another core than the one owning its connection.
pub(crate) struct ForwardedDatagram {
    /// The datagram.
    pub(crate) data: Vec<u8>,
    /// Its source.
    pub(crate) from: SocketAddr,
}

/// Sending side of a core's forwarded-datagram inbox.
pub(crate) type DatagramSender = mpsc::UnboundedSender<ForwardedDatagram>;

/// One core's QUIC side. Shared by the core's connection drivers through `Rc`.
pub(crate) struct QuicCore {
    /// What the core shares with the others.
    pub(crate) links: CoreLinks,
    /// This core's endpoint.
    pub(crate) quic: QuicEndpoint,
    /// Every core's forwarded-datagram inbox, by index.
    pub(crate) forward: Arc<[DatagramSender]>,
}

impl std::ops::Deref for QuicCore {
    type Target = CoreLinks;
    fn deref(&self) -> &CoreLinks {
        &self.links
    }
}

impl QuicCore {
    /// Number of cores.
    pub(crate) fn cores(&self) -> usize {
        self.forward.len()
    }

    /// Passes a datagram to the core that owns its connection. A core that is gone is
    /// shutting down; the datagram is dropped.
    pub(crate) fn forward_to(&self, core: usize, data: Vec<u8>, from: SocketAddr) {
        if let Some(tx) = self.forward.get(core) {
            let _ = tx.send(ForwardedDatagram { data, from });
        }
    }

    /// Tells the control plane that a node connection can no longer take streams.
    pub(crate) fn forget_node(&self, conn: &NodeConn) {
        let node_id = conn.node_id.borrow().clone();
        let mut cs = conn.control.borrow_mut();
        if let (Some(node_id), false) = (node_id, cs.gone_reported) {
            cs.gone_reported = true;
            self.control.send(ToControl::NodeGone {
                node_id,
                conn: ConnRef {
                    core: self.index,
                    serial: conn.serial,
                },
            });
        }
    }
}
