//! Batched UDP output. Packets quiche produces back to back for one destination, of one
//! size (the last may be shorter), leave in one `sendmsg` with UDP generic segmentation
//! offload (`UDP_SEGMENT`, through quinn-udp), up to quiche's send quantum and
//! [`MAX_SEGMENTS`](crate::MAX_SEGMENTS).
//!
//! The batcher is runtime-free: [`Batcher::flush`] sends what it can and returns
//! `WouldBlock` when the socket is full, keeping the unsent batch; the driver waits for
//! the socket to become writable (tokio `try_io`/`writable`, monoio `writable`) and calls
//! it again. When the kernel refuses a batch (EIO or EINVAL: a device without GSO),
//! quinn-udp stops offering GSO on the socket and the batch goes out again one datagram
//! per call, so no packet is lost to the fallback.
//!
//! Pacing: quiche stamps each packet with the time it should leave (`SendInfo.at`,
//! spread over the RTT by its pacer). A packet due more than [`PACING_HORIZON`] from
//! now is not sent with the batch: it waits in its connection's [`Pacer`], and
//! [`Batcher::flush`] returns when to call again (the driver sleeps until then). So a
//! congestion window leaves as a train of batches instead of one burst.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use quinn_udp::{Transmit, UdpSockRef, UdpSocketState};
use tracing::{debug, info};

use crate::{MAX_SEGMENTS, MAX_SEND_PAYLOAD};

/// Packets due sooner than this leave with the batch being built: about the timer
/// granularity of the runtimes that drive the batcher (1 ms).
pub const PACING_HORIZON: Duration = Duration::from_millis(1);

/// One connection's packet that quiche built ahead of its send time.
#[derive(Default)]
pub struct Pacer {
    /// The packet, its destination and when it is due; the buffer is kept for reuse.
    held: Option<(Instant, SocketAddr)>,
    packet: Vec<u8>,
    /// Packets held back so far.
    pub paced: u64,
}

impl Pacer {
    /// When the held packet is due, if one is held.
    pub fn due(&self) -> Option<Instant> {
        self.held.map(|(at, _)| at)
    }
}

/// What a batcher did so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Datagrams that left in a batch of more than one.
    pub gso_segments: u64,
    /// Batches the kernel refused and that went out again one datagram at a time.
    pub offload_fallbacks: u64,
}

/// `count` packets of `segment` bytes (the last may be shorter) at `offset`, for `to`.
#[derive(Debug, Clone, Copy)]
struct Batch {
    offset: usize,
    len: usize,
    segment: usize,
    count: usize,
    to: SocketAddr,
}

/// A batched UDP sender for one socket.
pub struct Batcher {
    state: UdpSocketState,
    offload: bool,
    buf: Vec<u8>,
    /// Batches built but not yet sent (at most two: a batch and a packet that could not
    /// join it).
    pending: Vec<Batch>,
    /// Test builds only: every GSO send fails as if the kernel refused it.
    pub simulate_gso_refusal: bool,
    /// What it did so far.
    pub counters: Counters,
}

impl Batcher {
    /// A batcher for `socket`; `offload` false sends one datagram per call. quinn-udp
    /// sets the socket up (non-blocking, and UDP GRO where the kernel has it).
    ///
    /// # Errors
    /// When quinn-udp cannot set up the socket.
    pub fn new<S: ?Sized>(socket: &S, offload: bool) -> io::Result<Self>
    where
        for<'a> UdpSockRef<'a>: From<&'a S>,
    {
        let state = UdpSocketState::new(socket.into())?;
        let offload = offload && state.max_gso_segments() > 1;
        info!(
            offload,
            max_segments = state.max_gso_segments(),
            "udp sender ready"
        );
        Ok(Batcher {
            state,
            offload,
            buf: vec![0; MAX_SEGMENTS * MAX_SEND_PAYLOAD],
            pending: Vec::with_capacity(2),
            simulate_gso_refusal: false,
            counters: Counters::default(),
        })
    }

    /// The quinn-udp state, for receiving on the same socket.
    pub fn state(&self) -> &UdpSocketState {
        &self.state
    }

    fn limit(&self, conn: &crate::QuicConn) -> usize {
        if !self.offload {
            return 1;
        }
        let quantum = conn.send_quantum().max(MAX_SEND_PAYLOAD);
        self.state
            .max_gso_segments()
            .clamp(1, MAX_SEGMENTS)
            .min(quantum.div_ceil(MAX_SEND_PAYLOAD))
    }

    /// Sends every packet `conn` has ready and due, in batches. Returns when the
    /// packet `pacer` holds is due, if quiche built one ahead of its time: call again
    /// then (or sooner, when something else happens).
    ///
    /// # Errors
    /// `WouldBlock` when the socket is full: wait until it is writable and call again
    /// (the unsent batch is kept). Other send errors are logged and dropped, as QUIC
    /// recovers lost packets.
    pub fn flush<S: ?Sized>(
        &mut self,
        conn: &mut crate::QuicConn,
        pacer: &mut Pacer,
        socket: &S,
    ) -> io::Result<Option<Instant>>
    where
        for<'a> UdpSockRef<'a>: From<&'a S>,
    {
        loop {
            self.send_pending(socket)?;
            let limit = self.limit(conn);
            let fill = self.fill(conn, pacer, limit, Instant::now() + PACING_HORIZON);
            match fill {
                Fill::More => {}
                Fill::Done | Fill::Paced => {
                    self.send_pending(socket)?;
                    return Ok(pacer.due());
                }
            }
        }
    }

    /// Starts a batch with the packet `pacer` holds, if it is due by `horizon`.
    /// Returns the buffer offset after it, or `None` when it must wait.
    fn release_held(&mut self, pacer: &mut Pacer, horizon: Instant) -> Option<usize> {
        let Some((at, to)) = pacer.held else {
            return Some(0);
        };
        if at > horizon {
            return None;
        }
        let len = pacer.packet.len();
        self.buf[..len].copy_from_slice(&pacer.packet);
        pacer.held = None;
        self.pending.push(Batch {
            offset: 0,
            len,
            segment: len,
            count: 1,
            to,
        });
        Some(len)
    }

    /// Sends the pending batches, oldest first.
    fn send_pending<S: ?Sized>(&mut self, socket: &S) -> io::Result<()>
    where
        for<'a> UdpSockRef<'a>: From<&'a S>,
    {
        while let Some(&batch) = self.pending.first() {
            self.transmit(socket, batch)?;
            self.pending.remove(0);
        }
        Ok(())
    }

    /// Builds up to `limit` packets of one size for one destination into the buffer,
    /// starting with the held packet when it is due; a packet due after `horizon` is
    /// moved into `pacer` and ends the batch.
    fn fill(
        &mut self,
        conn: &mut crate::QuicConn,
        pacer: &mut Pacer,
        limit: usize,
        horizon: Instant,
    ) -> Fill {
        let Some(mut at) = self.release_held(pacer, horizon) else {
            return Fill::Paced;
        };
        if at > 0 && limit == 1 {
            return Fill::More;
        }
        loop {
            let room = &mut self.buf[at..at + MAX_SEND_PAYLOAD];
            let (n, to) = match conn.send(room) {
                Ok((n, info)) if info.at > horizon => {
                    pacer.packet.clear();
                    pacer.packet.extend_from_slice(&room[..n]);
                    pacer.held = Some((info.at, info.to));
                    pacer.paced += 1;
                    return Fill::Paced;
                }
                Ok((n, info)) => (n, info.to),
                Err(quiche::Error::Done) => return Fill::Done,
                Err(e) => {
                    debug!(error = %e, "quic send failed; closing");
                    let _ = conn.close(false, 1, b"internal");
                    return Fill::Done;
                }
            };
            let fresh = Batch {
                offset: at,
                len: n,
                segment: n,
                count: 1,
                to,
            };
            let Some(b) = self.pending.last_mut() else {
                self.pending.push(fresh);
                at += n;
                if limit == 1 {
                    return Fill::More;
                }
                continue;
            };
            if to != b.to || n > b.segment {
                self.pending.push(fresh);
                return Fill::More;
            }
            b.len += n;
            b.count += 1;
            at += n;
            if n < b.segment || b.count == limit {
                return Fill::More;
            }
        }
    }

    /// One `sendmsg` for `batch`; a refused GSO batch is resent one datagram at a time.
    fn transmit<S: ?Sized>(&mut self, socket: &S, batch: Batch) -> io::Result<()>
    where
        for<'a> UdpSockRef<'a>: From<&'a S>,
    {
        let contents = &self.buf[batch.offset..batch.offset + batch.len];
        let gso = batch.count > 1;
        let t = Transmit {
            destination: batch.to,
            ecn: None,
            contents,
            segment_size: gso.then_some(batch.segment),
            src_ip: None,
        };
        let sent = if gso && self.simulate_gso_refusal {
            Err(io::Error::from_raw_os_error(EIO))
        } else {
            self.state.try_send(socket.into(), &t)
        };
        match sent {
            Ok(()) => {
                if gso {
                    self.counters.gso_segments += batch.count as u64;
                }
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(e),
            Err(e) if gso => {
                info!(error = %e, "kernel refused a GSO batch: sending its datagrams one by one");
                self.counters.offload_fallbacks += 1;
                // As quinn-udp does for the socket: no more GSO after a refusal.
                self.offload = false;
                self.split(batch);
                self.transmit(socket, self.pending[0])
            }
            Err(e) => {
                debug!(error = %e, "udp send failed");
                Ok(())
            }
        }
    }

    /// Replaces the first pending batch by one batch per datagram.
    fn split(&mut self, batch: Batch) {
        let singles = (0..batch.count).map(|i| {
            let offset = batch.offset + i * batch.segment;
            let len = batch.segment.min(batch.offset + batch.len - offset);
            Batch {
                offset,
                len,
                segment: len,
                count: 1,
                to: batch.to,
            }
        });
        let rest: Vec<Batch> = self.pending.drain(1..).collect();
        self.pending.clear();
        self.pending.extend(singles);
        self.pending.extend(rest);
    }
}

/// `EIO` on Linux, for the simulated refusal.
const EIO: i32 = 5;

/// What [`Batcher::fill`] left.
enum Fill {
    /// A batch is pending and quiche may have more.
    More,
    /// quiche has nothing more to send.
    Done,
    /// The next packet is held in the connection's [`Pacer`] until it is due.
    Paced,
}
