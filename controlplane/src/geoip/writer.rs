//! A minimal MaxMind DB writer for tests: an IPv6 search tree (IPv4 networks live under
//! `::/96`), 24-bit records, and one `{"country": {"iso_code": …}}` record per network.
//! Written from the MaxMind DB format specification (version 2.0).

use std::io::Write;
use std::path::Path;

use ipnet::IpNet;

/// A value of the MaxMind DB data section.
enum Value<'a> {
    Str(&'a str),
    U16(u16),
    U32(u32),
    U64(u64),
    Map(Vec<(&'a str, Value<'a>)>),
    Array(Vec<Value<'a>>),
}

/// Writes a control byte for `kind` (1..=15) and `size`, then any size extension.
fn control(out: &mut Vec<u8>, kind: u8, size: usize) {
    let (low, ext): (u8, Vec<u8>) = match size {
        0..=28 => (size as u8, vec![]),
        29..=284 => (29, vec![(size - 29) as u8]),
        285..=65_820 => (30, ((size - 285) as u16).to_be_bytes().to_vec()),
        _ => (31, ((size - 65_821) as u32).to_be_bytes()[1..].to_vec()),
    };
    if kind <= 7 {
        out.push((kind << 5) | low);
    } else {
        out.push(low);
        out.push(kind - 7);
    }
    out.extend_from_slice(&ext);
}

fn uint(out: &mut Vec<u8>, kind: u8, v: u64) {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    control(out, kind, 8 - skip);
    out.extend_from_slice(&bytes[skip..]);
}

fn encode(out: &mut Vec<u8>, v: &Value<'_>) {
    match v {
        Value::Str(s) => {
            control(out, 2, s.len());
            out.extend_from_slice(s.as_bytes());
        }
        Value::U16(n) => uint(out, 5, u64::from(*n)),
        Value::U32(n) => uint(out, 6, u64::from(*n)),
        Value::U64(n) => uint(out, 9, *n),
        Value::Map(pairs) => {
            control(out, 7, pairs.len());
            for (k, v) in pairs {
                encode(out, &Value::Str(k));
                encode(out, v);
            }
        }
        Value::Array(items) => {
            control(out, 11, items.len());
            for v in items {
                encode(out, v);
            }
        }
    }
}

/// A binary trie node: each side is empty, a child node, or a data offset.
#[derive(Clone, Copy)]
enum Slot {
    Empty,
    Node(usize),
    Data(usize),
}

/// The 128 bits of `net`'s address (IPv4 under `::/96`) and its prefix length in that
/// space.
fn bits(net: &IpNet) -> (u128, u8) {
    match net {
        IpNet::V4(n) => (u128::from(u32::from(n.network())), 96 + n.prefix_len()),
        IpNet::V6(n) => (u128::from(n.network()), n.prefix_len()),
    }
}

/// Writes a country database mapping each network to its ISO code.
///
/// # Errors
/// When the file cannot be written.
pub fn write_country_db(path: &Path, entries: &[(IpNet, &str)]) -> std::io::Result<()> {
    let mut data = Vec::new();
    let mut nodes: Vec<[Slot; 2]> = vec![[Slot::Empty; 2]];
    for (net, code) in entries {
        let offset = data.len();
        encode(
            &mut data,
            &Value::Map(vec![(
                "country",
                Value::Map(vec![("iso_code", Value::Str(code))]),
            )]),
        );
        let (addr, len) = bits(net);
        let mut node = 0;
        for depth in 0..len {
            let bit = ((addr >> (127 - depth)) & 1) as usize;
            if depth + 1 == len {
                nodes[node][bit] = Slot::Data(offset);
                break;
            }
            node = match nodes[node][bit] {
                Slot::Node(n) => n,
                _ => {
                    nodes.push([Slot::Empty; 2]);
                    let n = nodes.len() - 1;
                    nodes[node][bit] = Slot::Node(n);
                    n
                }
            };
        }
    }
    let count = nodes.len();
    let mut out = Vec::with_capacity(count * 6 + data.len() + 256);
    for node in &nodes {
        for slot in node {
            let record = match *slot {
                Slot::Empty => count,
                Slot::Node(n) => n,
                Slot::Data(offset) => count + 16 + offset,
            } as u32;
            out.extend_from_slice(&record.to_be_bytes()[1..]);
        }
    }
    out.extend_from_slice(&[0u8; 16]);
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
    let epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    encode(
        &mut out,
        &Value::Map(vec![
            ("binary_format_major_version", Value::U16(2)),
            ("binary_format_minor_version", Value::U16(0)),
            ("build_epoch", Value::U64(epoch)),
            ("database_type", Value::Str("GeoIP2-Country")),
            (
                "description",
                Value::Map(vec![("en", Value::Str("Turbo test database"))]),
            ),
            ("ip_version", Value::U16(6)),
            ("languages", Value::Array(vec![Value::Str("en")])),
            ("node_count", Value::U32(count as u32)),
            ("record_size", Value::U16(24)),
        ]),
    );
    std::fs::File::create(path)?.write_all(&out)
}
