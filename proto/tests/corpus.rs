//! Replays every seed in `fuzz/corpus/<target>/` through the same checks the fuzz
//! targets run (no panic; chunked input gives the same result as one-shot input).

mod harness;

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    entries.sort();
    assert!(!entries.is_empty(), "empty corpus {}", dir.display());
    for path in entries {
        let data = std::fs::read(&path).expect("corpus file");
        let result = std::panic::catch_unwind(|| check(&data));
        assert!(result.is_ok(), "{} failed", path.display());
    }
}

#[test]
fn socks5_corpus() {
    replay("socks5", harness::socks5);
}

#[test]
fn http_head_corpus() {
    replay("http_head", harness::http_head);
}

#[test]
fn http_body_corpus() {
    replay("http_body", harness::http_body);
}

#[test]
fn username_corpus() {
    replay("username", harness::username);
}

#[test]
fn relay_header_corpus() {
    replay("relay_header", harness::relay_header);
}

#[test]
fn relay_stream_corpus() {
    replay("relay_stream", harness::relay_stream);
}

#[test]
fn control_corpus() {
    replay("control", harness::control);
}

/// Regenerates the binary seeds (relay headers, control frames) from the encoders.
/// Runs only with `TURBO_WRITE_CORPUS=1`.
#[test]
fn write_binary_seeds() {
    use turbo_proto::wire::control::{
        ControlMessage, Hello, NodeStats, RejectCode, ServerInfo, Welcome,
    };
    use turbo_proto::wire::relay::{RelayHeader, RelayReply};
    use turbo_proto::{RelayStatus, TargetAddr};

    if std::env::var_os("TURBO_WRITE_CORPUS").is_none() {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join(name), bytes).expect("write seed");
    };

    let headers = [
        (
            "v4",
            TargetAddr::Ip("93.184.216.34:443".parse().expect("addr")),
        ),
        (
            "v6",
            TargetAddr::Ip("[2001:db8::1]:80".parse().expect("addr")),
        ),
        (
            "domain",
            TargetAddr::Domain {
                host: "example.com".into(),
                port: 8443,
            },
        ),
    ];
    for (name, target) in headers {
        let mut out = Vec::new();
        RelayHeader {
            target,
            connect_timeout_ms: 10_000,
            flags: 0,
        }
        .encode(&mut out);
        write("relay_header", &format!("header_{name}"), &out);
    }
    for (name, status, message) in [
        ("ok", RelayStatus::Ok, ""),
        ("dns", RelayStatus::DnsFailure, "no such host"),
        (
            "refused",
            RelayStatus::ConnectionRefused,
            "connection refused",
        ),
    ] {
        let mut out = Vec::new();
        RelayReply {
            status,
            message: message.into(),
        }
        .encode(&mut out);
        write("relay_header", &format!("reply_{name}"), &out);
    }

    let messages = [
        (
            "hello",
            ControlMessage::Hello(Hello {
                version: 1,
                token: "tok_abc".into(),
                agent: "turbo-node/0.1.0".into(),
                country: Some("DE".into()),
                payout_address: None,
                max_streams: 512,
                lane: None,
            }),
        ),
        (
            "welcome",
            ControlMessage::Welcome(Welcome {
                version: 1,
                node_id: "node-1".into(),
                ping_interval_ms: 15_000,
                liveness_timeout_ms: 45_000,
                lanes: 2,
            }),
        ),
        (
            "reject",
            ControlMessage::Reject {
                code: RejectCode::BadToken,
                message: "unknown token".into(),
            },
        ),
        ("ping", ControlMessage::Ping { seq: 7 }),
        ("pong", ControlMessage::Pong { seq: 7 }),
        (
            "stats",
            ControlMessage::Stats(NodeStats {
                active_streams: 3,
                total_streams: 100,
                bytes_from_targets: 1 << 20,
                bytes_to_targets: 4096,
            }),
        ),
        ("drain", ControlMessage::Drain { grace_ms: 30_000 }),
        (
            "servers",
            ControlMessage::Servers(vec![ServerInfo {
                id: "s0000beef".into(),
                addr: "turbo-2.example:8443".into(),
                pin: [0xab; 32],
                draining: false,
                sender: true,
            }]),
        ),
    ];
    let mut stream = Vec::new();
    for (name, m) in &messages {
        let mut out = Vec::new();
        m.encode(&mut out);
        stream.extend_from_slice(&out);
        write("control", name, &out);
    }
    write("control", "stream", &stream);
}

/// A small deterministic mutation pass over the seeds (bit flips, inserts, deletes,
/// splices, truncation), so `cargo test` catches what a short fuzz run would.
#[test]
fn mutated_seeds() {
    const ROUNDS: usize = 2000;
    type Check = fn(&[u8]);
    let targets: [(&str, Check); 6] = [
        ("socks5", harness::socks5),
        ("http_head", harness::http_head),
        ("http_body", harness::http_body),
        ("username", harness::username),
        ("relay_header", harness::relay_header),
        ("control", harness::control),
    ];
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut rnd = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state as usize
    };
    for (target, check) in targets {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target);
        let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
            .expect("corpus dir")
            .map(|e| std::fs::read(e.expect("entry").path()).expect("seed"))
            .collect();
        seeds.sort();
        for _ in 0..ROUNDS {
            let mut d = seeds[rnd() % seeds.len()].clone();
            for _ in 0..1 + rnd() % 4 {
                let pos = rnd() % (d.len() + 1);
                match rnd() % 5 {
                    0 if pos < d.len() => d[pos] ^= 1 << (rnd() % 8),
                    1 => d.insert(pos, rnd() as u8),
                    2 if pos < d.len() => {
                        d.remove(pos);
                    }
                    3 => {
                        let other = &seeds[rnd() % seeds.len()];
                        let from = rnd() % (other.len() + 1);
                        d.splice(pos..pos, other[from..].iter().copied());
                    }
                    _ => d.truncate(pos),
                }
            }
            let result = std::panic::catch_unwind(|| check(&d));
            assert!(result.is_ok(), "{target}: {d:?}");
        }
    }
}

#[test]
fn pairing_corpus() {
    replay("pairing", harness::pairing);
}
