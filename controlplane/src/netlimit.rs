//! One node per network. The server decides from the address it sees (never from what
//! a node says): at most `nodes_per_network` connected nodes per public IPv4 address
//! and per IPv6 /64, across accounts, and across servers through the live bus
//! ([`crate::live`]): a node's claim on its network is refreshed by its server while
//! it is connected and lapses [`CLAIM_TTL`] after that server stops. Loopback and
//! private peers (labs, tests, the demo) are exempt unless the limit is strict.

use std::net::IpAddr;
use std::time::Duration;

use crate::live::LiveBus;
use crate::store::StoreError;

/// How long a claim lasts without a refresh.
pub const CLAIM_TTL: Duration = Duration::from_secs(15);
/// How long a refusal stays visible to the runner (dashboard).
pub const REFUSAL_TTL: Duration = Duration::from_secs(120);
/// What a refused runner is told.
pub const REFUSED: &str = "another node already runs on this network";

/// The limit, from the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetworkLimit {
    /// Nodes admitted per network (0: no limit).
    pub per_network: u32,
    /// Count loopback and private peers too.
    pub strict: bool,
}

fn exempt(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

/// The network `ip` counts against (`v4:a.b.c.d` or `v6:xxxx:xxxx:xxxx:xxxx::/64`),
/// or `None` when it is exempt.
pub fn network_of(ip: IpAddr, strict: bool) -> Option<String> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    if !strict && exempt(ip) {
        return None;
    }
    Some(match ip {
        IpAddr::V4(v4) => format!("v4:{v4}"),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("v6:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    })
}

impl NetworkLimit {
    /// Claims (or refreshes) `node`'s place on the network of `ip`: whether it may be
    /// connected. A refused node is noted for its runner's pages.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn claim(
        &self,
        bus: &LiveBus,
        ip: IpAddr,
        node: &str,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let Some(network) = network_of(ip, self.strict).filter(|_| self.per_network > 0) else {
            return Ok(true);
        };
        let claim = crate::live::NetworkClaim {
            network: &network,
            node,
            limit: self.per_network,
            now_ms,
            expires_ms: now_ms + CLAIM_TTL.as_millis() as u64,
        };
        let admitted = bus.claim_network(&claim).await?;
        if !admitted {
            tracing::info!(node, %network, "node refused: its network has its nodes");
            bus.note_refusal(node, REFUSED, REFUSAL_TTL).await?;
            let event = crate::live::LiveEvent::Node {
                id: node.to_owned(),
                online: false,
            };
            bus.publish(&event).await?;
        }
        Ok(admitted)
    }

    /// Gives up `node`'s place on the network of `ip` (it disconnected from `server`),
    /// unless another server holds the node (a node keeps two servers): that server
    /// keeps refreshing the claim.
    pub async fn release(&self, bus: &LiveBus, ip: IpAddr, node: &str, server: &str) {
        if let Some(network) = network_of(ip, self.strict) {
            let ids = [node.to_owned()];
            let now = crate::store::now_unix();
            let holders = bus.presence(Some(&ids), now).await.unwrap_or_default();
            if holders
                .get(node)
                .is_some_and(|p| p.server.split(',').any(|s| s != server))
            {
                tracing::debug!(node, "network claim kept: the node is on another server");
                return;
            }
            if let Err(e) = bus.release_network(&network, node).await {
                tracing::debug!(error = %e, node, "network claim not released; it lapses");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(ip: &str, strict: bool) -> Option<String> {
        network_of(ip.parse().expect("ip"), strict)
    }

    #[test]
    fn networks_are_addresses_and_slash_64s() {
        assert_eq!(net("203.0.113.9", false).as_deref(), Some("v4:203.0.113.9"));
        assert_eq!(
            net("2001:db8:1:2:aaaa::1", false),
            net("2001:db8:1:2:ffff::9", false),
            "one /64"
        );
        assert_ne!(net("2001:db8:1:2::1", false), net("2001:db8:1:3::1", false));
        assert_eq!(net("::ffff:203.0.113.9", false), net("203.0.113.9", false));
        for exempt in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.4",
            "172.16.0.1",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
        ] {
            assert_eq!(net(exempt, false), None, "{exempt}");
            assert!(net(exempt, true).is_some(), "{exempt} counts when strict");
        }
    }
}
