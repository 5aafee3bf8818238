//! The node's batched UDP I/O on tokio: output through the shared
//! [`turbo_quic::batch::Batcher`] (GSO through quinn-udp; for downloads the node is the
//! bulk sender), and input through the same quinn-udp state, which turns UDP GRO on:
//! every read may hold several datagrams of one segment size, split here.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;

use quinn_udp::RecvMeta;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use turbo_quic::batch::{Batcher, Pacer};

use crate::conn::Conn;

/// A batcher for the node's socket (`offload` false: one datagram per call).
///
/// # Errors
/// When quinn-udp cannot set up the socket.
pub fn batcher(socket: &UdpSocket, offload: bool) -> io::Result<Batcher> {
    #[allow(unused_mut)]
    let mut b = Batcher::new(socket, offload)?;
    #[cfg(feature = "fault-injection")]
    {
        b.simulate_gso_refusal = crate::fault::refuse_gso();
        crate::fault::kernel_refuses_gso(socket);
    }
    Ok(b)
}

/// Sends every packet quiche has ready and due, waiting for socket space when it is
/// full. Returns when the packet `pacer` holds back is due, if any.
pub async fn flush(
    conn: &Conn,
    socket: &UdpSocket,
    batcher: &mut Batcher,
    pacer: &mut Pacer,
) -> Option<std::time::Instant> {
    loop {
        let sent = socket.try_io(Interest::WRITABLE, || {
            batcher.flush(&mut conn.quic.borrow_mut(), pacer, socket)
        });
        match sent {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if socket.writable().await.is_err() {
                    return pacer.due();
                }
            }
            Ok(due) => return due,
            Err(_) => return pacer.due(),
        }
    }
}

/// Size of the receive buffer: one GRO batch of 64 datagrams.
pub const RECV_BUFFER: usize = turbo_quic::MAX_SEGMENTS * turbo_quic::MAX_RECV_PAYLOAD;
/// Most reads per wake-up.
const READS_PER_WAKE: usize = 16;

/// Feeds quiche every datagram queued on `socket` (at most [`READS_PER_WAKE`] reads),
/// splitting GRO batches by their segment size.
pub fn recv_ready(
    conn: &Conn,
    socket: &UdpSocket,
    batcher: &Batcher,
    buf: &mut [u8],
    local: SocketAddr,
) {
    let mut meta = [RecvMeta::default()];
    for _ in 0..READS_PER_WAKE {
        let read = socket.try_io(Interest::READABLE, || {
            batcher
                .state()
                .recv(socket.into(), &mut [IoSliceMut::new(buf)], &mut meta)
        });
        if read.is_err() {
            return;
        }
        let m = &meta[0];
        let info = quiche::RecvInfo {
            from: m.addr,
            to: local,
        };
        for datagram in buf[..m.len].chunks_mut(m.stride.max(1)) {
            let _ = conn.quic.borrow_mut().recv(datagram, info);
        }
    }
}
