//! The QUIC glue the Turbo server (monoio) and node (tokio) share, with no runtime:
//! datagram sizes, [`batch::Batcher`] (the batched UDP sender), the stream adapter
//! ([`stream`]) and the buffers quiche keeps ([`zc`]). Each driver only feeds packets
//! in, wakes streams, and waits for socket space when the batcher says `WouldBlock`.
#![warn(missing_docs)]

pub mod batch;
pub mod stream;
pub mod zc;

pub use zc::{QuicConn, ZcFactory};

/// Largest UDP payload either side sends (quiche's `max_send_udp_payload_size`).
pub const MAX_SEND_PAYLOAD: usize = 1350;
/// Largest UDP payload either side accepts (quiche's `max_recv_udp_payload_size`).
pub const MAX_RECV_PAYLOAD: usize = 1500;
/// Most datagrams in one GSO batch (the kernel's own limit is 64).
pub const MAX_SEGMENTS: usize = 64;
