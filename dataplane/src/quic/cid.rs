//! Server connection IDs that name their owning core.
//!
//! Byte 0 of every connection ID this server issues is the index of the core that owns
//! the connection; the rest is random. A BPF program on the SO_REUSEPORT group
//! ([`crate::sockets`]) delivers each datagram to the socket of the core its connection
//! ID names, so a node's packets stay on the owning core even after its NAT rebinds,
//! and a node's lane `k` (which picks a first byte of `k` for its Initial) lands on
//! core `k`. Where that program can't be attached the kernel's hash decides, and a core
//! that receives another's datagram reads byte 0 and forwards it to the owner.

/// Length of server-issued connection IDs.
pub(crate) const CID_LEN: usize = 16;

/// A fresh connection ID owned by `core`.
pub(crate) fn generate(core: usize) -> [u8; CID_LEN] {
    let mut cid: [u8; CID_LEN] = rand::random();
    cid[0] = core as u8;
    cid
}

/// The core that owns `dcid`, if it is one of ours.
pub(crate) fn owner(dcid: &[u8], cores: usize) -> Option<usize> {
    if dcid.len() != CID_LEN {
        return None;
    }
    let core = usize::from(dcid[0]);
    (core < cores).then_some(core)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_round_trip() {
        for core in 0..8 {
            assert_eq!(owner(&generate(core), 8), Some(core));
        }
        assert_eq!(owner(&generate(9), 8), None);
        assert_eq!(owner(&[0u8; 8], 8), None);
    }
}
