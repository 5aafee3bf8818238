//! Batched UDP input for a core's QUIC endpoint: with UDP generic receive offload
//! (`UDP_GRO`, set up through quinn-udp) the kernel hands over up to 64 datagrams of one
//! flow in one `recvmsg`, with their segment size (`stride`); each is split off and
//! routed like a single datagram. Without offload (`udp_offload = "off"` or a kernel
//! without GRO) every call returns one datagram, as before.
//!
//! Readiness comes from monoio (`readable(false)`, a poll on io_uring, the epoll state
//! on the legacy driver); the reads themselves are non-blocking `recvmsg` calls on the
//! same file descriptor.

use std::io;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;

use quinn_udp::RecvMeta;
use tracing::warn;

use super::core::QuicCore;

/// One GRO read: up to 64 segments of at most a 1500-byte datagram each.
const GRO_BUFFER: usize = 64 * 1500;
/// Most reads per wake-up before yielding to other tasks.
const READS_PER_WAKE: usize = 16;

/// Receives datagrams forever through the endpoint's quinn-udp state, splitting GRO
/// batches.
pub(crate) async fn recv_loop(core: Rc<QuicCore>) {
    let mut buf = vec![0u8; GRO_BUFFER];
    let mut meta = [RecvMeta::default()];
    loop {
        if let Err(e) = core.quic.socket.readable(false).await {
            warn!(error = %e, "udp readiness failed");
        }
        for _ in 0..READS_PER_WAKE {
            match core.quic.recv(&mut buf, &mut meta) {
                Ok(_) => dispatch_batch(&core, &mut buf, &meta[0]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    warn!(error = %e, "udp receive failed");
                    break;
                }
            }
        }
        let sent = core.quic.take_counters();
        core.stats
            .udp_gso_segments
            .fetch_add(sent.gso_segments, Relaxed);
        core.stats
            .udp_offload_fallbacks
            .fetch_add(sent.offload_fallbacks, Relaxed);
    }
}

/// Routes each datagram of one (possibly coalesced) read.
fn dispatch_batch(core: &Rc<QuicCore>, buf: &mut [u8], meta: &RecvMeta) {
    let stride = meta.stride.max(1);
    let data = &mut buf[..meta.len];
    if meta.len > stride {
        let segments = meta.len.div_ceil(stride) as u64;
        core.stats.udp_gro_segments.fetch_add(segments, Relaxed);
    }
    for datagram in data.chunks_mut(stride) {
        super::dispatch::dispatch(core, datagram, meta.addr);
    }
}
