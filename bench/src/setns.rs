//! The syscalls `--net veth` needs that std does not wrap, and every `unsafe` block they
//! take: moving the calling thread into a network namespace (`setns`), and blocking the
//! termination signals so that one thread can wait for them (`pthread_sigmask`,
//! `sigwait`) and remove the namespaces before the process exits, and killing what
//! still runs inside them.

use std::fs::File;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Moves the calling thread, and only it, into the network namespace bound at `path`
/// (`/var/run/netns/NAME`, or a `/proc/…/ns/net` file). Threads it spawns afterwards
/// start there, and sockets it creates belong there for their whole life, whichever
/// thread later uses them.
///
/// # Errors
/// When `path` cannot be opened or the kernel refuses (not root, not a namespace).
pub fn enter(path: &Path) -> io::Result<()> {
    enter_file(&File::open(path)?)
}

/// Like [`enter`], for an open namespace file.
///
/// # Errors
/// When the kernel refuses.
pub fn enter_file(ns: &File) -> io::Result<()> {
    // SAFETY: `ns` is an open file descriptor for the whole call, and setns reads no
    // memory of this process; it only changes the calling thread's namespace.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// SIGINT, SIGTERM and SIGHUP.
fn termination_set() -> libc::sigset_t {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set it points to; sigaddset then only
    // writes into that initialised set, with valid signal numbers.
    unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(set.as_mut_ptr(), sig);
        }
        set.assume_init()
    }
}

/// Blocks SIGINT, SIGTERM and SIGHUP on the calling thread and on every thread it
/// spawns afterwards, so that they queue for [`wait_termination`]. Child processes do
/// not inherit the block: std resets the signal mask before it runs a program.
///
/// Call it before any other thread exists; a thread spawned earlier still dies of the
/// default action.
///
/// # Errors
/// When the kernel refuses the mask.
pub fn block_termination() -> io::Result<()> {
    let set = termination_set();
    // SAFETY: `set` is an initialised sigset_t that lives across the call; the old mask
    // is not asked for (null).
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Waits until one of the signals blocked by [`block_termination`] arrives; returns
/// its number.
///
/// # Errors
/// When sigwait fails.
pub fn wait_termination() -> io::Result<i32> {
    let set = termination_set();
    let mut sig = 0;
    // SAFETY: `set` and `sig` are valid for the call; sigwait writes one int to `sig`.
    let rc = unsafe { libc::sigwait(&set, &mut sig) };
    if rc == 0 {
        Ok(sig)
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Sends SIGKILL to `pid`, ignoring failure (it may be gone already).
pub fn kill(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill takes two integers and touches no memory of this process.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}
