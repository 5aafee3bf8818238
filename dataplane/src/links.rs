//! The handles every part of a core holds in common with the other cores: its index,
//! the settings, the control-plane link, the node routes, the connection limits and the
//! counters. `QuicCore` and `RelayCore` each carry one (and reach its fields through
//! `Deref`).

use std::sync::Arc;

use crate::config::DataplaneConfig;
use crate::control::{ControlHandle, NodeTableHandle};
use crate::limits::Gate;
use crate::stats::Stats;

/// What one core shares with the others.
#[derive(Clone)]
pub(crate) struct CoreLinks {
    /// This core's index.
    pub(crate) index: usize,
    /// Data-plane settings.
    pub(crate) cfg: Arc<DataplaneConfig>,
    /// Link to the control plane.
    pub(crate) control: ControlHandle,
    /// Current node routes.
    pub(crate) nodes: NodeTableHandle,
    /// Connection limits, fair shares and their counters.
    pub(crate) gate: Arc<Gate>,
    /// Counters shared by all cores.
    pub(crate) stats: Arc<Stats>,
}
