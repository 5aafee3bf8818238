//! Key schema v2 of the Redis store: the names of every key, cluster-safe.
//!
//! A customer key's state lives in one of [`BUCKETS`] buckets, chosen from its id. Every
//! name of a bucket carries the bucket's hash tag (`{bNN}`), so the lease script, which
//! touches the key, its lease, the bucket's live-lease set and the bucket's usage log,
//! stays in one Redis Cluster slot. Buckets rather than one tag per key: the usage log
//! and the expired-lease index must be few enough for the ledger and the reclaimers to
//! scan (a tag per key would need a log per key), and 64 buckets spread over a
//! cluster's masters as evenly as slots do.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `turbo:{bNN}:key:{id}` | hash | `name`, `hash` (hex SHA-256 of the secret), `credits` (unleased balance), `leased`, `bytes_up`, `bytes_down`, `connections`, `overdraft`, `revoked` (0/1), `created`, `op:…` markers of applied payments |
//! | `turbo:{bNN}:lease:{lease id}` | hash | `key`, `owner`, `amount` (credit held), `seq`, `granted` (last grant), `status` (`live`/`ended`), `expires` (Unix ms); kept an hour after its TTL so retries stay idempotent |
//! | `turbo:{bNN}:leases` | sorted set | the bucket's live lease ids scored by expiry (Unix ms); live servers share the buckets out to reclaim |
//! | `turbo:{bNN}:usage` | stream | the bucket's usage log: one entry per node per applied checkpoint (`owner`, `lease`, `seq`, `node`, `key`, `minute`, `up`, `down`, `conns`); the ledger reads every bucket's log after a composite cursor and trims it |
//! | `turbo:keyhash:{sha256 hex}` | string | the key id (lookup by the hash of a high-entropy secret) |
//! | `turbo:keys` | set | every key id |
//! | `turbo:node:{id}` | hash | `hash`, `bytes_carried` (a display counter, added after each applied checkpoint; the ledger's usage records are the exact count), `created`, `payout`, `payout_min` (nano-USD; 0 for the server's), `revoked` (0/1) |
//! | `turbo:nodehash:{sha256 hex}` | string | the node id |
//! | `turbo:nodes` | set | every node id |
//! | `turbo:session:{key id}:{session}` | string | the node a sticky session is pinned to, with the session's TTL |
//! | `turbo:conns` | stream | one feature record per closed connection, `XADD … MAXLEN ~` |
//! | `turbo:schema` | string | `2` once the store is on this schema ([`super::migrate`]) |
//! | `turbo:events` | pub/sub channel | `revoke {id}`, `credit {id}`, `create {tag}`, `revoke-node {id}`, `policy {id} {rules}` |
//!
//! Writes that span names of several slots (creating a key: its hash, the id set and
//! the secret lookup) are separate commands, ordered so that a crash between them
//! leaves nothing usable half-made: the lookup by secret is written last.

/// How many buckets key state is spread over.
pub const BUCKETS: u32 = 64;

/// The schema version this build reads and writes.
pub const VERSION: &str = "2";

/// Where the schema version is kept.
pub const VERSION_KEY: &str = "turbo:schema";

/// The bucket of key `id` (FNV-1a of its bytes; stable across builds and machines).
pub fn bucket(id: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % BUCKETS
}

/// The hash-tagged prefix of bucket `b`: `turbo:{b07}`.
pub fn prefix(b: u32) -> String {
    format!("turbo:{{b{b:02}}}")
}

/// Key `id`'s hash.
pub fn key(id: &str) -> String {
    format!("{}:key:{id}", prefix(bucket(id)))
}

/// The hash of lease `lease` of key `key_id`.
pub fn lease(key_id: &str, lease: &str) -> String {
    format!("{}:lease:{lease}", prefix(bucket(key_id)))
}

/// Bucket `b`'s live leases by expiry.
pub fn leases(b: u32) -> String {
    format!("{}:leases", prefix(b))
}

/// Bucket `b`'s usage log.
pub fn usage(b: u32) -> String {
    format!("{}:usage", prefix(b))
}

/// Node `id`'s hash.
pub fn node(id: &str) -> String {
    format!("turbo:node:{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_and_its_leases_share_a_hash_tag() {
        let tag = |name: &str| {
            let open = name.find('{').expect("tag");
            name[open..=name.find('}').expect("tag end")].to_owned()
        };
        let b = bucket("k_0123456789abcdef");
        let all = [
            key("k_0123456789abcdef"),
            lease("k_0123456789abcdef", "7/3/12"),
            leases(b),
            usage(b),
        ];
        assert!(all.iter().all(|n| tag(n) == tag(&all[0])), "{all:?}");
    }

    #[test]
    fn buckets_spread_and_stay_put() {
        let mut seen = [0u32; BUCKETS as usize];
        for i in 0..6400 {
            seen[bucket(&format!("k_{i:016x}")) as usize] += 1;
        }
        assert!(seen.iter().all(|n| (50..=150).contains(n)), "{seen:?}");
        // The bucket of an id never changes across builds (stored data depends on
        // it): FNV-1a, computed independently.
        assert_eq!(bucket("k_0123456789abcdef"), 35);
        assert_eq!(prefix(7), "turbo:{b07}");
    }
}
