//! Round trips of every control message, and the decoder on split and bad input.

use super::*;

fn samples() -> Vec<ControlMessage> {
    vec![
        ControlMessage::Hello(Hello {
            version: 1,
            token: "tok_abc".into(),
            agent: "turbo-node/0.1.0".into(),
            country: Some("DE".into()),
            payout_address: None,
            max_streams: 512,
            lane: None,
        }),
        ControlMessage::Hello(Hello {
            version: 1,
            token: "tok_abc".into(),
            agent: "turbo-node/0.2.0".into(),
            country: None,
            payout_address: None,
            max_streams: 64,
            lane: Some(Lane {
                session: u64::MAX >> 2,
                index: 3,
            }),
        }),
        ControlMessage::Welcome(Welcome {
            version: 1,
            node_id: "n-1".into(),
            ping_interval_ms: 1000,
            liveness_timeout_ms: 5000,
            lanes: 4,
        }),
        ControlMessage::Reject {
            code: RejectCode::BadToken,
            message: "unknown token".into(),
        },
        ControlMessage::Ping { seq: 7 },
        ControlMessage::Pong { seq: 1 << 40 },
        ControlMessage::Stats(NodeStats {
            active_streams: 3,
            total_streams: 90,
            bytes_from_targets: 1 << 33,
            bytes_to_targets: 12,
        }),
        ControlMessage::Drain { grace_ms: 30_000 },
        ControlMessage::Policy(NodePolicy {
            ports: vec![25, 6667],
            nets: vec!["203.0.113.0/24".into()],
            domains: vec!["blocked.example".into()],
        }),
        ControlMessage::Score { milli: 875 },
        ControlMessage::Earnings {
            today_nano: 12_345,
            month_nano: 1 << 40,
        },
        ControlMessage::Held {
            reason: "canary http://c.example/: other content".into(),
        },
        ControlMessage::Held {
            reason: String::new(),
        },
        ControlMessage::Delivered {
            stream: 13,
            bytes: 1 << 40,
            done: true,
        },
        ControlMessage::Servers(vec![
            server("s0000beef", "turbo-1.example:8443", false),
            server("s0000cafe", "[2001:db8::1]:8443", true),
            ServerInfo {
                sender: true,
                ..server("s0000f00d", "10.0.0.1:1", true)
            },
        ]),
        ControlMessage::Servers(Vec::new()),
    ]
}

fn server(id: &str, addr: &str, draining: bool) -> ServerInfo {
    ServerInfo {
        id: id.into(),
        addr: addr.into(),
        pin: [id.len() as u8; 32],
        draining,
        sender: false,
    }
}

#[test]
fn the_longest_server_list_fits_one_frame_and_more_is_cut() {
    let long = |c: char, n: usize| std::iter::repeat_n(c, n).collect::<String>();
    let entry = server(&long('s', 40), &long('h', 200), false);
    let mut wire = Vec::new();
    ControlMessage::Servers(vec![entry; MAX_SERVERS + 5]).encode(&mut wire);
    let mut dec = ControlDecoder::new();
    dec.push(&wire);
    match dec.next_message() {
        Ok(Some(ControlMessage::Servers(list))) => {
            assert_eq!(list.len(), MAX_SERVERS);
            assert_eq!(list[0].id.len(), servers::MAX_SERVER_ID);
            assert_eq!(list[0].addr.len(), servers::MAX_SERVER_ADDR);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_server_list_claiming_too_many_entries_is_refused() {
    let mut body = Vec::new();
    put_varint(&mut body, MAX_SERVERS as u64 + 1);
    let mut wire = vec![T_SERVERS];
    put_bytes(&mut wire, &body);
    let mut dec = ControlDecoder::new();
    dec.push(&wire);
    assert!(dec.next_message().is_err());
    // A cut-off pin is truncation, not a panic.
    let mut body = Vec::new();
    put_varint(&mut body, 1);
    put_bytes(&mut body, b"s1");
    put_bytes(&mut body, b"h:1");
    body.extend_from_slice(&[7; 31]);
    let mut wire = vec![T_SERVERS];
    put_bytes(&mut wire, &body);
    let mut dec = ControlDecoder::new();
    dec.push(&wire);
    assert_eq!(dec.next_message(), Err(WireError::Truncated("server pin")));
}

#[test]
fn oversized_policies_are_refused() {
    let mut body = Vec::new();
    put_varint(&mut body, 65);
    let mut wire = vec![T_POLICY];
    put_bytes(&mut wire, &body);
    let mut dec = ControlDecoder::new();
    dec.push(&wire);
    assert!(dec.next_message().is_err());
}

#[test]
fn round_trip_one_byte_at_a_time() {
    let mut wire = Vec::new();
    for m in samples() {
        m.encode(&mut wire);
    }
    let mut dec = ControlDecoder::new();
    let mut got = Vec::new();
    for b in &wire {
        dec.push(std::slice::from_ref(b));
        while let Some(m) = dec.next_message().unwrap() {
            got.push(m);
        }
    }
    assert_eq!(got, samples());
}

#[test]
fn messages_from_single_lane_builds_still_decode() {
    // A hello without the lane fields and a welcome without the lane count, as
    // nodes and servers from before lanes encode them.
    let mut hello = vec![T_HELLO];
    put_bytes(&mut hello, &[1, 3, b't', b'o', b'k', 0, 0, 0, 8]);
    let mut welcome = vec![T_WELCOME];
    put_bytes(&mut welcome, &[WIRE_VERSION, 1, b'n', 10, 20]);
    let mut dec = ControlDecoder::new();
    dec.push(&hello);
    dec.push(&welcome);
    match dec.next_message() {
        Ok(Some(ControlMessage::Hello(h))) => {
            assert_eq!((h.lane, h.max_streams), (None, 8));
        }
        other => panic!("{other:?}"),
    }
    match dec.next_message() {
        Ok(Some(ControlMessage::Welcome(w))) => assert_eq!(w.lanes, 1),
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_frames_are_skipped() {
    let mut wire = vec![200, 3, 1, 2, 3];
    ControlMessage::Ping { seq: 1 }.encode(&mut wire);
    let mut dec = ControlDecoder::new();
    dec.push(&wire);
    assert_eq!(
        dec.next_message().unwrap(),
        Some(ControlMessage::Unknown { kind: 200 })
    );
    assert_eq!(
        dec.next_message().unwrap(),
        Some(ControlMessage::Ping { seq: 1 })
    );
}

#[test]
fn oversized_frame_is_refused_before_buffering() {
    let mut wire = vec![T_HELLO];
    put_varint(&mut wire, 1 << 20);
    let mut dec = ControlDecoder::new();
    dec.push(&wire);
    assert!(matches!(dec.next_message(), Err(WireError::TooLong { .. })));
}

#[test]
fn truncated_body_is_an_error() {
    let mut wire = vec![T_PING];
    put_bytes(&mut wire, &[]);
    let mut dec = ControlDecoder::new();
    dec.push(&wire);
    assert_eq!(dec.next_message(), Err(WireError::Truncated("ping seq")));
}
