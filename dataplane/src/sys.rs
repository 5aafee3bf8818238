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

/// Turns UDP generic receive offload off on `socket` (quinn-udp turns it on).
///
/// # Errors
/// The OS error of `setsockopt`.
pub(crate) fn disable_gro(socket: &impl std::os::fd::AsRawFd) -> std::io::Result<()> {
    let off: libc::c_int = 0;
    // SAFETY: a valid fd, a pointer to a live c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_UDP,
            libc::UDP_GRO,
            std::ptr::from_ref(&off).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
