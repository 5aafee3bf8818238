//! The few raw socket operations monoio does not expose. Each unsafe block borrows an
//! fd that the caller proves is open for the duration of the call.

use std::os::fd::{BorrowedFd, RawFd};

/// Makes the next close of a socket send a TCP RST instead of a FIN (SO_LINGER 0), so
/// that an abort on one side of a relay is visible as an abort on the other.
///
/// `owner` must be the object that owns `fd`; borrowing it keeps the fd open.
pub(crate) fn set_abortive_close<T>(fd: RawFd, owner: &T) {
    let _ = owner;
    // SAFETY: `owner` owns `fd` and is borrowed for this call, so the fd is open and
    // stays open until we return; BorrowedFd never closes it.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let _ = socket2::SockRef::from(&fd).set_linger(Some(std::time::Duration::ZERO));
}

/// Releases a monoio stream from this core's driver as a std stream, so that another
/// core can adopt it. Must not have IO in flight (true between handshake and relay).
pub(crate) fn into_std_stream(stream: monoio::net::TcpStream) -> std::net::TcpStream {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let fd = stream.into_raw_fd();
    // SAFETY: into_raw_fd deregistered the fd and gave up ownership of it to us; it is
    // open and no one else will close it.
    unsafe { std::net::TcpStream::from_raw_fd(fd) }
}

/// Sends one datagram without going through the runtime: UDP sends almost never block,
/// so a direct non-blocking `sendto` saves a driver round trip per packet. Returns
/// `WouldBlock` when the socket buffer is full; the caller then awaits the runtime.
pub(crate) fn try_send_to(
    socket: &impl std::os::fd::AsRawFd,
    buf: &[u8],
    to: std::net::SocketAddr,
) -> std::io::Result<usize> {
    let fd = socket.as_raw_fd();
    // SAFETY: `socket` is borrowed, so `fd` is open for this call; BorrowedFd never
    // closes it.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    socket2::SockRef::from(&fd).send_to_with_flags(buf, &to.into(), libc::MSG_DONTWAIT)
}

/// Receives one datagram if one is queued, without going through the runtime; used to
/// drain a burst after the runtime reported the first packet. `WouldBlock` when empty.
pub(crate) fn try_recv_from(
    socket: &impl std::os::fd::AsRawFd,
    buf: &mut [u8],
) -> std::io::Result<(usize, std::net::SocketAddr)> {
    let fd = socket.as_raw_fd();
    // SAFETY: `socket` is borrowed, so `fd` is open for this call; BorrowedFd never
    // closes it.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    // SAFETY: recv_from_with_flags only writes initialised bytes into the slice it is
    // given; viewing our initialised buffer as MaybeUninit is sound.
    let uninit = unsafe {
        std::slice::from_raw_parts_mut(
            buf.as_mut_ptr().cast::<std::mem::MaybeUninit<u8>>(),
            buf.len(),
        )
    };
    let (n, addr) = socket2::SockRef::from(&fd).recv_from_with_flags(uninit, libc::MSG_DONTWAIT)?;
    let addr = addr
        .as_socket()
        .ok_or_else(|| std::io::Error::other("non-IP source address"))?;
    Ok((n, addr))
}
