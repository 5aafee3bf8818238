//! Binding of the SO_REUSEPORT sockets each core owns. All cores bind the same
//! address; when the configured port is 0, the first bind picks it and the others
//! reuse it, so `--socks-listen 127.0.0.1:0` works.

use std::net::{SocketAddr, TcpListener, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

use crate::DataplaneError;

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
        out.push(sock.into());
    }
    Ok((out, actual))
}
