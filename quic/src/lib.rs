//! The QUIC glue the Turbo server (monoio) and node (tokio) share, with no runtime:
//! datagram sizes, [`batch::Batcher`] (the batched UDP sender), the stream adapter
//! ([`stream`]) and the buffers quiche keeps ([`zc`]). Each driver only feeds packets
//! in, wakes streams, and waits for socket space when the batcher says `WouldBlock`.
#![warn(missing_docs)]

pub mod batch;
#[cfg(feature = "pair")]
pub mod pair;
pub mod stream;
pub mod zc;

pub use zc::{QuicConn, ZcFactory};

/// Largest UDP payload either side sends (quiche's `max_send_udp_payload_size`): what a
/// 1500-byte IPv4 path carries. Each path starts at 1,200 bytes and path MTU discovery
/// ([`configure_paths`]) probes up to this, so a narrower path (IPv6, PPPoE, tunnels)
/// settles lower instead of losing packets.
pub const MAX_SEND_PAYLOAD: usize = 1472;
/// Largest UDP payload either side accepts (quiche's `max_recv_udp_payload_size`).
pub const MAX_RECV_PAYLOAD: usize = 1500;
/// Sets the datagram sizes both ends use, with path MTU discovery on.
pub fn configure_paths(config: &mut quiche::Config) {
    config.set_max_recv_udp_payload_size(MAX_RECV_PAYLOAD);
    config.set_max_send_udp_payload_size(MAX_SEND_PAYLOAD);
    config.discover_pmtu(true);
}

/// The congestion controller both ends can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CongestionControl {
    /// CUBIC (quiche's default). quiche 0.30 does not pace under it: every packet is
    /// due at once.
    #[default]
    Cubic,
    /// BBRv2 (quiche's `bbr2_gcongestion`), which paces: packets carry a send time the
    /// batcher honours ([`batch::Pacer`]).
    Bbr2,
}

impl CongestionControl {
    /// Sets it on `config`.
    pub fn apply(self, config: &mut quiche::Config) {
        let name = match self {
            CongestionControl::Cubic => "cubic",
            CongestionControl::Bbr2 => "bbr2_gcongestion",
        };
        // Both names are quiche's own, so this cannot fail.
        let _ = config.set_cc_algorithm_name(name);
    }
}

/// Most datagrams in one GSO batch (the kernel's own limit is 64).
pub const MAX_SEGMENTS: usize = 64;
