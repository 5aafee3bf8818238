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
