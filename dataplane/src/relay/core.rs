//! What a core's relays work with: the handles they need (settings, control plane,
//! node table, limits, counters, credit accounts, buffers, this core's QUIC side) and a
//! channel to every other core's relays, for customer connections whose node lives
//! there.

use std::rc::Rc;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::plan::RelayJob;
use crate::account::Accounts;
use crate::links::CoreLinks;
use crate::pool::BufPool;
use crate::quic::core::QuicCore;

/// A customer connection on its way to another core.
pub(crate) type Handoff = Box<RelayJob<std::net::TcpStream>>;

/// Sending side of a core's hand-off inbox.
pub(crate) type HandoffSender = mpsc::UnboundedSender<Handoff>;

/// One core's relays. Shared by the core's customer tasks through `Rc`.
pub(crate) struct RelayCore {
    /// What the core shares with the others.
    pub(crate) links: CoreLinks,
    /// This core's credit accounts.
    pub(crate) accounts: Accounts,
    /// This core's relay buffers.
    pub(crate) pool: BufPool,
    /// This core's QUIC side, where the node connections are.
    pub(crate) quic: Rc<QuicCore>,
    /// Every core's hand-off inbox, by index.
    pub(crate) handoffs: Arc<[HandoffSender]>,
}

impl std::ops::Deref for RelayCore {
    type Target = CoreLinks;
    fn deref(&self) -> &CoreLinks {
        &self.links
    }
}

impl RelayCore {
    /// Moves a customer connection to core `owner`. A core that is gone is shutting
    /// down; the connection is closed by its drop.
    pub(crate) fn hand_off(&self, owner: usize, job: RelayJob<monoio::net::TcpStream>) {
        self.stats
            .relay_handoffs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let job = job.map_stream(crate::sys::into_std_stream);
        if let Some(tx) = self.handoffs.get(owner) {
            let _ = tx.send(Box::new(job));
        }
    }
}
