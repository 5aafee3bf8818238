//! Key and node records read back from their Redis hashes.

use crate::secrets::SecretHash;
use crate::store::{KeyRecord, NodeRecord};

fn field<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

/// A counter field: an integer, or (written by an older script) a float such as
/// `1e+17`; 0 when absent or unreadable, never negative.
fn num(fields: &[(String, String)], name: &str) -> u64 {
    let v = field(fields, name);
    v.parse::<u64>()
        .or_else(|_| v.parse::<i64>().map(|n| n.max(0) as u64))
        .or_else(|_| {
            v.parse::<f64>()
                .map(|f| if f.is_finite() { f.max(0.0) as u64 } else { 0 })
        })
        .unwrap_or(0)
}

fn parse_hash(hex_hash: &str) -> SecretHash {
    let mut out = [0u8; 32];
    if let Ok(bytes) = hex::decode(hex_hash) {
        if bytes.len() == 32 {
            out.copy_from_slice(&bytes);
        }
    }
    out
}

pub(super) fn parse_key(id: &str, f: &[(String, String)]) -> Option<KeyRecord> {
    if f.is_empty() {
        return None;
    }
    Some(KeyRecord {
        id: id.to_owned(),
        name: field(f, "name").to_owned(),
        credits: num(f, "credits"),
        leased: num(f, "leased"),
        bytes_up: num(f, "bytes_up"),
        bytes_down: num(f, "bytes_down"),
        connections: num(f, "connections"),
        overdraft: num(f, "overdraft"),
        revoked: field(f, "revoked") == "1",
        created_unix: num(f, "created"),
        hash: parse_hash(field(f, "hash")),
    })
}

pub(super) fn parse_node(id: &str, f: &[(String, String)]) -> Option<NodeRecord> {
    if f.is_empty() {
        return None;
    }
    Some(NodeRecord {
        id: id.to_owned(),
        bytes_carried: num(f, "bytes_carried"),
        payout_address: Some(field(f, "payout").to_owned()).filter(|p| !p.is_empty()),
        payout_threshold_nano: field(f, "payout_min").parse().ok().filter(|t| *t > 0),
        revoked: field(f, "revoked") == "1",
        created_unix: num(f, "created"),
        hash: parse_hash(field(f, "hash")),
    })
}
