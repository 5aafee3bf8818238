//! Counters the cores keep for `/metrics`: plain relaxed atomics, touched per connection
//! or per auth decision, never per byte. The control plane reads and exports them.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

use crate::control::AuthDenied;

/// Data-plane counters shared by every core.
#[derive(Debug, Default)]
pub struct Stats {
    /// Refusals: unknown or revoked key.
    pub auth_bad_key: AtomicU64,
    /// Refusals: no credits left.
    pub auth_no_credits: AtomicU64,
    /// Refusals: invalid username parameters.
    pub auth_bad_params: AtomicU64,
    /// Refusals: the control plane could not decide.
    pub auth_unavailable: AtomicU64,
    /// Refusals: too many failures from the source address.
    pub auth_rate_limited: AtomicU64,
    /// Auth answers served from a core's cache.
    pub auth_cache_hits: AtomicU64,
    /// Auth questions sent to the control plane.
    pub auth_cache_misses: AtomicU64,
    /// Auth questions that joined a lookup already in flight.
    pub auth_cache_coalesced: AtomicU64,
    /// Customer handshakes that failed before authentication finished.
    pub handshake_failures: AtomicU64,
    /// Connections closed because their key ran dry or was revoked.
    pub credit_closes: AtomicU64,
    /// Datagrams received in GRO batches of more than one.
    pub udp_gro_segments: AtomicU64,
    /// Datagrams sent in GSO batches of more than one.
    pub udp_gso_segments: AtomicU64,
    /// GSO batches the kernel refused (then sent one datagram at a time).
    pub udp_offload_fallbacks: AtomicU64,
    /// Customer connections moved to another core because the node had no connection
    /// (lane) on the core that accepted them.
    pub relay_handoffs: AtomicU64,
    /// Bytes billed to keys (traffic and connection costs), as the relays book them:
    /// what the usage checkpoints report once they are flushed.
    pub billed_bytes: AtomicU64,
    /// Target failures another node did not reproduce (it connected).
    pub refusals_disputed: AtomicU64,
    /// Target failures another node reproduced.
    pub refusals_confirmed: AtomicU64,
}

impl Stats {
    /// Counts one refusal.
    pub fn auth_failure(&self, denied: &AuthDenied) {
        let counter = match denied {
            AuthDenied::BadKey => &self.auth_bad_key,
            AuthDenied::NoCredits => &self.auth_no_credits,
            AuthDenied::BadParams(_) => &self.auth_bad_params,
            AuthDenied::Unavailable => &self.auth_unavailable,
            AuthDenied::RateLimited => &self.auth_rate_limited,
        };
        counter.fetch_add(1, Relaxed);
    }

    /// Refusals by reason, for export.
    pub fn auth_failures(&self) -> [(&'static str, u64); 5] {
        [
            ("bad_key", self.auth_bad_key.load(Relaxed)),
            ("no_credits", self.auth_no_credits.load(Relaxed)),
            ("bad_params", self.auth_bad_params.load(Relaxed)),
            ("unavailable", self.auth_unavailable.load(Relaxed)),
            ("rate_limited", self.auth_rate_limited.load(Relaxed)),
        ]
    }
}
