//! Batched UDP output for the node's QUIC connection. Packets quiche produces back to
//! back for one destination, of one size (the last may be shorter), leave in one
//! `sendmsg` with UDP generic segmentation offload (`UDP_SEGMENT`, through quinn-udp),
//! up to quiche's send quantum and [`MAX_SEGMENTS`]. For downloads the node is the bulk
//! sender, so this is where most datagrams of a transfer are written.
//!
//! When the kernel refuses a batch (EIO or EINVAL: a device without GSO), quinn-udp stops
//! offering GSO for the socket and the batch goes out again one datagram per call, so no
//! packet is lost to the fallback. `udp_offload = off` sends one datagram per call from
//! the start.

use std::io;
use std::net::SocketAddr;

use quinn_udp::{Transmit, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tracing::{debug, info};

use crate::conn::Conn;

/// Largest UDP payload the node sends (quiche's `max_send_udp_payload_size`).
pub const MAX_SEND_PAYLOAD: usize = 1350;
/// Most datagrams in one GSO batch (the kernel's own limit is 64).
pub const MAX_SEGMENTS: usize = 64;

/// Counters of the batched sender, for `turbo-node status` and tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct UdpCounters {
    /// Datagrams that left in a batch of more than one.
    pub gso_segments: u64,
    /// Batches the kernel refused and that went out again one datagram at a time.
    pub offload_fallbacks: u64,
}

/// The node's batched UDP sender.
pub struct Sender {
    state: UdpSocketState,
    offload: bool,
    buf: Vec<u8>,
    /// What it did so far.
    pub counters: UdpCounters,
}

/// What [`Sender::fill`] gathered; `done` once quiche has nothing more to send.
struct Filled {
    batch: Option<Batch>,
    carry: Option<Batch>,
    done: bool,
}

/// One batch: `count` packets of `segment` bytes (the last may be shorter) to `to`.
struct Batch {
    len: usize,
    segment: usize,
    count: usize,
    to: SocketAddr,
}

impl Sender {
    /// A sender on `socket`; `offload` false sends one datagram per call.
    ///
    /// # Errors
    /// When quinn-udp cannot set up the socket.
    pub fn new(socket: &UdpSocket, offload: bool) -> io::Result<Self> {
        let state = UdpSocketState::new(socket.into())?;
        let offload = offload && state.max_gso_segments() > 1;
        info!(offload, max_segments = state.max_gso_segments(), "udp sender ready");
        Ok(Sender {
            state,
            offload,
            buf: vec![0; MAX_SEGMENTS * MAX_SEND_PAYLOAD],
            counters: UdpCounters::default(),
        })
    }

    fn max_segments(&self) -> usize {
        if self.offload {
            self.state.max_gso_segments().clamp(1, MAX_SEGMENTS)
        } else {
            1
        }
    }

    /// Sends every packet quiche has ready.
    pub async fn flush(&mut self, conn: &Conn, socket: &UdpSocket) {
        loop {
            let quantum = conn.quic.borrow().send_quantum().max(MAX_SEND_PAYLOAD);
            let limit = self.max_segments().min(quantum.div_ceil(MAX_SEND_PAYLOAD));
            let Ok(Filled { batch, carry, done }) = self.fill(conn, limit) else {
                return;
            };
            let Some(batch) = batch else { return };
            self.transmit(socket, 0, &batch).await;
            if let Some(c) = carry {
                self.transmit(socket, batch.len, &c).await;
            }
            if done {
                return;
            }
        }
    }

    /// Fills the buffer with up to `limit` packets of one size for one destination.
    /// A packet that cannot join the batch is returned as a second batch of one.
    fn fill(&mut self, conn: &Conn, limit: usize) -> Result<Filled, ()> {
        let filled = |batch, carry, done| Ok(Filled { batch, carry, done });
        let mut batch: Option<Batch> = None;
        let mut quic = conn.quic.borrow_mut();
        loop {
            let at = batch.as_ref().map_or(0, |b| b.len);
            let room = &mut self.buf[at..at + MAX_SEND_PAYLOAD];
            let (n, to) = match quic.send(room) {
                Ok((n, info)) => (n, info.to),
                Err(quiche::Error::Done) => return filled(batch, None, true),
                Err(e) => {
                    debug!(error = %e, "quic send failed; closing");
                    let _ = quic.close(false, 1, b"internal");
                    return Err(());
                }
            };
            let Some(b) = batch.as_mut() else {
                batch = Some(Batch { len: n, segment: n, count: 1, to });
                if limit == 1 {
                    return filled(batch, None, false);
                }
                continue;
            };
            if to != b.to || n > b.segment {
                let carry = Batch { len: n, segment: n, count: 1, to };
                return filled(batch, Some(carry), false);
            }
            b.len += n;
            b.count += 1;
            if n < b.segment || b.count == limit {
                return filled(batch, None, false);
            }
        }
    }

    /// Writes `batch` (at `offset` in the buffer), waiting for socket space; a refused
    /// GSO batch is resent one datagram at a time.
    async fn transmit(&mut self, socket: &UdpSocket, offset: usize, batch: &Batch) {
        let contents = &self.buf[offset..offset + batch.len];
        let gso = batch.count > 1;
        let t = Transmit {
            destination: batch.to,
            ecn: None,
            contents,
            segment_size: gso.then_some(batch.segment),
            src_ip: None,
        };
        match send(&self.state, socket, &t).await {
            Ok(()) if gso => self.counters.gso_segments += batch.count as u64,
            Ok(()) => {}
            Err(e) if gso => {
                info!(error = %e, "kernel refused a GSO batch: sending its datagrams one by one");
                self.counters.offload_fallbacks += 1;
                // As quinn-udp does for the socket: no more GSO after a refusal.
                self.offload = false;
                for chunk in contents.chunks(batch.segment) {
                    let one = Transmit {
                        segment_size: None,
                        contents: chunk,
                        ..t
                    };
                    if let Err(e) = send(&self.state, socket, &one).await {
                        debug!(error = %e, "udp send failed");
                    }
                }
            }
            Err(e) => debug!(error = %e, "udp send failed"),
        }
    }
}

/// One `sendmsg`, waiting for socket space on `WouldBlock`.
async fn send(state: &UdpSocketState, socket: &UdpSocket, t: &Transmit<'_>) -> io::Result<()> {
    loop {
        let r = socket.try_io(Interest::WRITABLE, || {
            #[cfg(feature = "fault-injection")]
            if t.segment_size.is_some() && crate::fault::refuse_gso() {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            state.try_send(socket.into(), t)
        });
        match r {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => socket.writable().await?,
            other => return other,
        }
    }
}
