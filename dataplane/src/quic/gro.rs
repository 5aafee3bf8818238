//! Batched UDP input for a core's QUIC endpoint: with UDP generic receive offload
//! (`UDP_GRO`, set up through quinn-udp) the kernel hands over up to 64 datagrams of one
//! flow in one `recvmsg`, with their segment size (`stride`); each is split off and
//! routed like a single datagram. Without offload (`udp_offload = "off"` or a kernel
//! without GRO) every call returns one datagram, as before.
//!
//! Readiness comes from monoio (`readable(false)`, a poll on io_uring, the epoll state
//! on the legacy driver); the reads themselves are non-blocking `recvmsg` calls on the
//! same file descriptor.

use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;

use quinn_udp::{RecvMeta, UdpSocketState};
use tracing::warn;

use crate::cores::Core;

/// One GRO read: up to 64 segments of at most a 1500-byte datagram each.
const GRO_BUFFER: usize = 64 * 1500;
/// Most reads per wake-up before yielding to other tasks.
const READS_PER_WAKE: usize = 16;

/// Sets up GRO (and the rest of quinn-udp's socket options) on `socket`.
///
/// # Errors
/// When the socket options cannot be set.
pub(crate) fn socket_state(socket: &impl AsRawFd) -> io::Result<UdpSocketState> {
    // SAFETY: `socket` is borrowed for the call, so its fd stays open.
    let fd = unsafe { BorrowedFd::borrow_raw(socket.as_raw_fd()) };
    UdpSocketState::new((&fd).into())
}

/// Receives datagrams forever through `state`, splitting GRO batches.
pub(crate) async fn recv_loop(core: Rc<Core>, state: Rc<UdpSocketState>) {
    let mut buf = vec![0u8; GRO_BUFFER];
    let mut meta = [RecvMeta::default()];
    loop {
        if let Err(e) = core.quic.socket.readable(false).await {
            warn!(error = %e, "udp readiness failed");
        }
        for _ in 0..READS_PER_WAKE {
            // SAFETY: the endpoint owns the socket for as long as the core runs.
            let fd = unsafe { BorrowedFd::borrow_raw(core.quic.socket.as_raw_fd()) };
            let got = state.recv((&fd).into(), &mut [IoSliceMut::new(&mut buf)], &mut meta);
            match got {
                Ok(_) => dispatch_batch(&core, &mut buf, &meta[0]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    warn!(error = %e, "udp receive failed");
                    break;
                }
            }
        }
    }
}

/// Routes each datagram of one (possibly coalesced) read.
fn dispatch_batch(core: &Rc<Core>, buf: &mut [u8], meta: &RecvMeta) {
    let stride = meta.stride.max(1);
    let data = &mut buf[..meta.len];
    if meta.len > stride {
        let segments = meta.len.div_ceil(stride) as u64;
        core.stats.udp_gro_segments.fetch_add(segments, Relaxed);
    }
    for datagram in data.chunks_mut(stride) {
        super::endpoint::dispatch(core, datagram, meta.addr);
    }
}
