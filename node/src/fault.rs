//! Test-only misbehaviour, compiled only with the `fault-injection` feature (the
//! `turbo-node-faulty` binary the end-to-end tests start). The release `turbo-node`
//! never contains this module. The fault is read once from `TURBO_NODE_FAULT`.

use std::sync::OnceLock;

/// How a faulty node misbehaves while following the wire protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Behaves like the real node.
    None,
    /// Answers every relay request "connection refused" without dialing.
    RefuseAll,
    /// Answers "connected" without dialing and never reads the stream.
    OkNeverRead,
    /// As [`Fault::OkNeverRead`], and advertises huge flow-control windows.
    OkNeverReadHugeWindows,
    /// Relays normally, but every UDP send with GSO fails with EIO, as on a device
    /// without segmentation offload.
    GsoEio,
    /// Relays normally on a UDP socket with checksums off (`SO_NO_CHECK`), so the real
    /// kernel refuses every GSO send with EINVAL.
    GsoKernelRefuses,
    /// Answers "connected" without dialing and sends 64 KiB of its own junk (an HTTP
    /// response of `x`s), as a node that fabricates bytes to be paid for them.
    Fabricate,
    /// Answers "connected" without dialing and sends a saved copy of a real answer
    /// (`TURBO_NODE_FAULT=replay:<file>`), as a node that replays a cached canary
    /// instead of reaching the target: right content, too soon.
    Replay,
    /// Relays normally, but corrupts one byte of each TLS handshake record the target
    /// sends first (its ServerHello), as a node that intercepts or garbles TLS: every
    /// customer's handshake fails and they close right after it.
    TamperTls,
    /// Relays normally, but sends 64 KiB of its own after the target's last byte, as
    /// a node that pads downloads to be paid for more.
    PadDownload,
}

impl Fault {
    /// Parses a `TURBO_NODE_FAULT` value.
    pub fn parse(s: &str) -> Option<Fault> {
        Some(match s {
            "" | "none" => Fault::None,
            "refuse-all" => Fault::RefuseAll,
            "ok-never-read" => Fault::OkNeverRead,
            "ok-never-read-huge-windows" => Fault::OkNeverReadHugeWindows,
            "gso-eio" => Fault::GsoEio,
            "gso-kernel-refuses" => Fault::GsoKernelRefuses,
            "fabricate" => Fault::Fabricate,
            r if r.starts_with("replay:") => Fault::Replay,
            "tamper-tls" => Fault::TamperTls,
            "pad-download" => Fault::PadDownload,
            _ => return None,
        })
    }

    /// Whether the node answers "connected" and then never reads.
    pub fn never_reads(self) -> bool {
        matches!(self, Fault::OkNeverRead | Fault::OkNeverReadHugeWindows)
    }
}

/// Whether a GSO send must fail with EIO ([`Fault::GsoEio`]).
pub fn refuse_gso() -> bool {
    current() == Fault::GsoEio
}

/// Makes the kernel refuse GSO on `socket` ([`Fault::GsoKernelRefuses`]): with UDP
/// checksums off, Linux answers every `UDP_SEGMENT` send with EINVAL and still sends
/// single datagrams.
pub fn kernel_refuses_gso(socket: &impl std::os::fd::AsRawFd) {
    if current() != Fault::GsoKernelRefuses {
        return;
    }
    let on: libc::c_int = 1;
    // SAFETY: setsockopt on a descriptor the caller owns, with a c_int option value.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NO_CHECK,
            std::ptr::addr_of!(on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_NO_CHECK: {}", std::io::Error::last_os_error());
}

/// The fault this process runs with (`TURBO_NODE_FAULT`; unknown values abort).
pub fn current() -> Fault {
    static FAULT: OnceLock<Fault> = OnceLock::new();
    *FAULT.get_or_init(|| {
        let raw = std::env::var("TURBO_NODE_FAULT").unwrap_or_default();
        match Fault::parse(&raw) {
            Some(f) => f,
            None => panic!("unknown TURBO_NODE_FAULT {raw:?}"),
        }
    })
}

/// The saved answer [`Fault::Replay`] sends (the file after `replay:`; read once).
pub fn replayed() -> &'static [u8] {
    static SAVED: OnceLock<Vec<u8>> = OnceLock::new();
    SAVED.get_or_init(|| {
        let raw = std::env::var("TURBO_NODE_FAULT").unwrap_or_default();
        let path = raw.strip_prefix("replay:").expect("a replay fault");
        std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"))
    })
}

/// Corrupts a target's first TLS handshake bytes ([`Fault::TamperTls`]): one byte of
/// the ServerHello's random, so the handshake's transcripts disagree.
pub fn tamper_download(buf: &mut [u8]) {
    if current() == Fault::TamperTls && buf.len() > 20 && buf[0] == 0x16 && buf[1] == 0x03 {
        buf[20] ^= 0xff;
    }
}

/// The bytes [`Fault::PadDownload`] adds after the target's last one, if that is the
/// fault.
pub fn download_padding() -> Option<&'static [u8]> {
    static PAD: [u8; 65_536] = [b'x'; 65_536];
    (current() == Fault::PadDownload).then_some(&PAD[..])
}
