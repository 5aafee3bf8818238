//! The config's transport choices: batched UDP and the congestion controller.

use serde::{Deserialize, Serialize};

/// `udp_offload` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum UdpOffload {
    /// GRO (and GSO) where the kernel offers it.
    #[default]
    Auto,
    /// One datagram per system call.
    Off,
}

/// `congestion_control` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CongestionControl {
    /// CUBIC, unpaced (quiche 0.30 paces under BBRv2 only).
    #[default]
    Cubic,
    /// BBRv2, paced.
    Bbr2,
}

impl From<CongestionControl> for turbo_quic::CongestionControl {
    fn from(c: CongestionControl) -> Self {
        match c {
            CongestionControl::Cubic => turbo_quic::CongestionControl::Cubic,
            CongestionControl::Bbr2 => turbo_quic::CongestionControl::Bbr2,
        }
    }
}
