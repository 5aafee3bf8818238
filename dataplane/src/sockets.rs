//! Binding of the SO_REUSEPORT sockets each core owns. All cores bind the same
//! address; when the configured port is 0, the first bind picks it and the others
//! reuse it, so `--socks-listen 127.0.0.1:0` works.
//!
//! The QUIC sockets are steered by connection ID rather than by the kernel's 4-tuple
//! hash: a classic BPF program on the SO_REUSEPORT group hands each datagram to the
//! socket of the core that byte 0 of its destination connection ID names
//! ([`crate::quic`]'s connection IDs; a node's lane `k` picks a first byte of `k` for
//! its own Initial). Every packet of a connection then lands on its owning core, even
//! after a NAT rebinding, and a node's lanes spread one per core.

use std::net::{SocketAddr, TcpListener, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

use crate::config::DataplaneError;

const LISTEN_BACKLOG: i32 = 4096;
const UDP_BUFFER: usize = 8 * 1024 * 1024;

fn new_socket(addr: SocketAddr, ty: Type, proto: Protocol) -> std::io::Result<Socket> {
    let sock = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    if addr.is_ipv6() {
        sock.set_only_v6(false).ok();
    }
    sock.set_reuse_address(true)?;
    #[cfg(unix)]
    sock.set_reuse_port(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    Ok(sock)
}

fn bound(sock: &Socket, requested: SocketAddr) -> SocketAddr {
    sock.local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .unwrap_or(requested)
}

/// Binds `count` TCP listeners on `addr`, one per core.
///
/// # Errors
/// [`DataplaneError::Bind`] with the OS error.
pub(crate) fn tcp_listeners(
    addr: SocketAddr,
    count: usize,
) -> Result<(Vec<TcpListener>, SocketAddr), DataplaneError> {
    let mut out = Vec::with_capacity(count);
    let mut actual = addr;
    for _ in 0..count {
        let sock = new_socket(actual, Type::STREAM, Protocol::TCP)
            .and_then(|s| {
                s.set_nodelay(true)?;
                s.listen(LISTEN_BACKLOG)?;
                Ok(s)
            })
            .map_err(|source| DataplaneError::Bind { addr, source })?;
        actual = bound(&sock, actual);
        out.push(sock.into());
    }
    Ok((out, actual))
}

/// Binds `count` UDP sockets on `addr`, one per core.
///
/// # Errors
/// [`DataplaneError::Bind`] with the OS error.
pub(crate) fn udp_sockets(
    addr: SocketAddr,
    count: usize,
) -> Result<(Vec<UdpSocket>, SocketAddr), DataplaneError> {
    let mut out = Vec::with_capacity(count);
    let mut actual = addr;
    for _ in 0..count {
        let sock = new_socket(actual, Type::DGRAM, Protocol::UDP)
            .map_err(|source| DataplaneError::Bind { addr, source })?;
        // Larger buffers absorb bursts; the kernel caps them at rmem_max/wmem_max.
        sock.set_recv_buffer_size(UDP_BUFFER).ok();
        sock.set_send_buffer_size(UDP_BUFFER).ok();
        actual = bound(&sock, actual);
        out.push(sock);
    }
    if count > 1 {
        if let Err(e) = steer_by_connection_id(&out[0], count) {
            tracing::warn!(error = %e, "QUIC datagrams stay on the kernel's hash: no steering by connection ID");
        }
    }
    Ok((out.into_iter().map(Into::into).collect(), actual))
}

/// `SO_ATTACH_REUSEPORT_CBPF` (asm-generic/socket.h; not exported by `libc` for glibc).
#[cfg(target_os = "linux")]
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;

/// Attaches to `sock`'s SO_REUSEPORT group a program that picks socket
/// `dcid[0] % count`: the sockets were bound in core order, so that is the core the
/// connection ID names. The program sees the UDP payload: a long header (bit 0x80 of
/// byte 0) carries the destination ID from byte 6, a short header from byte 1. A
/// datagram too short to read aborts the program, and the kernel falls back to its hash.
///
/// # Errors
/// The `setsockopt` error (an old kernel, or not Linux).
pub(crate) fn steer_by_connection_id(sock: &Socket, count: usize) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let op = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter {
            code: code as u16,
            jt,
            jf,
            k,
        };
        let load_byte = libc::BPF_LD | libc::BPF_B | libc::BPF_ABS;
        let mut program = [
            op(load_byte, 0, 0, 0),
            op(libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K, 0, 2, 0x80),
            op(load_byte, 0, 0, 6),
            op(libc::BPF_JMP | libc::BPF_JA, 0, 0, 1),
            op(load_byte, 0, 0, 1),
            op(
                libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K,
                0,
                0,
                count as u32,
            ),
            op(libc::BPF_RET | libc::BPF_A, 0, 0, 0),
        ];
        let fprog = libc::sock_fprog {
            len: program.len() as u16,
            filter: program.as_mut_ptr(),
        };
        // SAFETY: `fprog` points at `program`, which outlives the call; the kernel
        // copies the program.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_ATTACH_REUSEPORT_CBPF,
                std::ptr::from_ref(&fprog).cast(),
                std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (sock, count);
        Err(std::io::ErrorKind::Unsupported.into())
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A short-header and a long-header datagram whose connection ID names `core`.
    fn datagrams(core: u8) -> [Vec<u8>; 2] {
        let mut short = vec![0x40, core];
        short.extend_from_slice(&[7; 30]);
        let mut long = vec![0xc0, 0, 0, 0, 1, 16, core];
        long.extend_from_slice(&[9; 40]);
        [short, long]
    }

    #[test]
    fn datagrams_reach_the_socket_their_connection_id_names() {
        let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let (socks, addr) = udp_sockets(any, 3).expect("bind");
        for s in &socks {
            s.set_nonblocking(false).expect("blocking");
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
        }
        // Several client sockets, so the kernel's 4-tuple hash alone would scatter them.
        for (i, core) in [0u8, 1, 2, 4, 1, 0, 2].into_iter().enumerate() {
            for dgram in datagrams(core) {
                let client = UdpSocket::bind(any).expect("client");
                client.send_to(&dgram, addr).expect("send");
                let owner = usize::from(core) % socks.len();
                let mut buf = [0u8; 64];
                let (n, _) = socks[owner].recv_from(&mut buf).expect("owner receives");
                assert_eq!(&buf[..n], &dgram[..], "datagram {i}");
            }
        }
        for s in &socks {
            s.set_nonblocking(true).expect("nonblocking");
            let mut buf = [0u8; 64];
            assert!(s.recv_from(&mut buf).is_err(), "nothing went astray");
        }
    }
}
