//! The network's live servers, as the control plane last read them from the shared
//! store: each core tells its nodes after the welcome and again whenever the list
//! changes (checked on the node's pings), so that a node can keep connections to two
//! servers. A leaf: the control plane writes it, the control stream reads it.

use std::sync::Arc;

use arc_swap::ArcSwap;
use turbo_proto::wire::control::ServerInfo;

/// One version of the list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerList {
    /// Bumped on every change; 0 is "not known yet" (nothing is sent).
    pub version: u64,
    /// The servers, this one marked as the sender.
    pub servers: Vec<ServerInfo>,
}

/// The list the cores read; the control plane swaps in each new version.
pub type ServerListHandle = Arc<ArcSwap<ServerList>>;

/// Stores `servers` as the next version, unless it equals the current list; whether it
/// changed.
pub fn publish(handle: &ServerListHandle, servers: Vec<ServerInfo>) -> bool {
    let current = handle.load();
    if current.version > 0 && current.servers == servers {
        return false;
    }
    handle.store(Arc::new(ServerList {
        version: current.version + 1,
        servers,
    }));
    true
}
