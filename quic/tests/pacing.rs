//! Pacing through the batcher, on real UDP sockets between a quiche client and server:
//! with the server's pacing rate capped, packets due beyond the horizon wait in the
//! connection's `Pacer`, `flush` says when to come back, and every byte still arrives
//! intact, no sooner than the rate allows.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use turbo_quic::batch::{Batcher, Pacer};
use turbo_quic::{QuicConn, ZcFactory};

/// The server's pacing cap: quiche takes it in Mbit/s (8 Mbit/s = 1 MB/s).
const RATE_MBITS: u64 = 8;
/// The same in bytes per second.
const RATE: u64 = RATE_MBITS * 1_000_000 / 8;
const BYTES: usize = 200_000;

fn config(server: bool) -> quiche::Config {
    let mut c = quiche::Config::new(quiche::PROTOCOL_VERSION).expect("config");
    c.set_application_protos(&[b"pacing-test"]).expect("alpn");
    c.verify_peer(false);
    c.set_initial_max_data(10 << 20);
    c.set_initial_max_stream_data_bidi_local(10 << 20);
    c.set_initial_max_stream_data_bidi_remote(10 << 20);
    c.set_initial_max_streams_bidi(4);
    c.set_max_idle_timeout(10_000);
    if server {
        turbo_quic::pair::load_self_signed(&mut c);
        // quiche 0.30 paces under BBRv2 only: its CUBIC sends every packet "now".
        c.set_cc_algorithm_name("bbr2_gcongestion").expect("bbr2");
        c.set_max_pacing_rate(RATE_MBITS);
    }
    c
}

struct End {
    sock: UdpSocket,
    addr: SocketAddr,
    conn: Option<QuicConn>,
    batcher: Batcher,
    pacer: Pacer,
}

impl End {
    fn new() -> End {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = sock.local_addr().expect("addr");
        let batcher = Batcher::new(&sock, true).expect("batcher");
        End {
            sock,
            addr,
            conn: None,
            batcher,
            pacer: Pacer::default(),
        }
    }

    fn flush(&mut self) -> Option<Instant> {
        let conn = self.conn.as_mut().expect("conn");
        self.batcher
            .flush(conn, &mut self.pacer, &self.sock)
            .unwrap_or(None)
    }

    /// Feeds every queued datagram to the connection, split by GRO stride (accepting
    /// the connection first on the server side).
    fn receive(&mut self, mut server_config: Option<&mut quiche::Config>) {
        let mut buf = vec![0u8; 65_536];
        let mut meta = [quinn_udp::RecvMeta::default()];
        loop {
            let bufs = &mut [std::io::IoSliceMut::new(&mut buf)];
            if self
                .batcher
                .state()
                .recv((&self.sock).into(), bufs, &mut meta)
                .is_err()
            {
                return;
            }
            let (len, stride, from) = (meta[0].len, meta[0].stride.max(1), meta[0].addr);
            if self.conn.is_none() {
                let cfg = server_config.as_deref_mut().expect("server config");
                self.conn = Some(
                    quiche::accept_with_buf_factory::<ZcFactory>(
                        &quiche::ConnectionId::from_ref(&[7u8; 16]),
                        None,
                        self.addr,
                        from,
                        cfg,
                    )
                    .expect("accept"),
                );
            }
            let info = quiche::RecvInfo {
                from,
                to: self.addr,
            };
            let conn = self.conn.as_mut().expect("conn");
            for datagram in buf[..len].chunks_mut(stride) {
                let _ = conn.recv(datagram, info);
            }
        }
    }
}

#[test]
fn paced_packets_wait_for_their_time_and_all_arrive() {
    let mut server_cfg = config(true);
    let mut client_cfg = config(false);
    let (mut server, mut client) = (End::new(), End::new());
    for e in [&server, &client] {
        e.sock.set_nonblocking(true).expect("nonblocking");
    }
    client.conn = Some(
        quiche::connect_with_buffer_factory::<ZcFactory>(
            Some("localhost"),
            &quiche::ConnectionId::from_ref(&[9u8; 16]),
            client.addr,
            server.addr,
            &mut client_cfg,
        )
        .expect("connect"),
    );
    // The client opens stream 0; the server answers with BYTES on it.
    let payload: Vec<u8> = (0..BYTES).map(|i| (i % 251) as u8).collect();
    let (mut sent, mut got) = (0usize, Vec::with_capacity(BYTES));
    let mut asked = false;
    let mut started: Option<Instant> = None;
    let mut returned_due = 0u32;
    let deadline = Instant::now() + Duration::from_secs(8);
    while got.len() < BYTES {
        if Instant::now() >= deadline {
            let s = server.conn.as_mut().expect("server");
            panic!(
                "transfer stalled at {}: sent {sent}, server {:?} timeout {:?} due {:?} writable {:?}",
                got.len(),
                s.stats(),
                s.timeout(),
                server.pacer.due(),
                s.stream_capacity(0)
            );
        }
        let c = client.conn.as_mut().expect("client");
        if c.is_established() && !asked {
            c.stream_send(0, b"go", false).expect("ask");
            asked = true;
        }
        let mut buf = [0u8; 65_536];
        while let Ok((n, _)) = c.stream_recv(0, &mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
        let client_due = client.flush();
        let mut server_due = None;
        if let Some(s) = server.conn.as_mut() {
            while s.stream_recv(0, &mut buf).is_ok() {
                started.get_or_insert_with(Instant::now);
            }
            if started.is_some() && sent < BYTES {
                sent += s.stream_send(0, &payload[sent..], false).unwrap_or(0);
            }
            server_due = server.flush();
            if server_due.is_some() {
                returned_due += 1;
            }
        }
        let timers = [
            client_due,
            server_due,
            client.conn.as_ref().and_then(|c| c.timeout_instant()),
            server.conn.as_ref().and_then(|c| c.timeout_instant()),
        ];
        // Wait for the next timer or datagram (at most 200 µs between polls).
        let next = timers.into_iter().flatten().min();
        let nap = next.map_or(Duration::from_micros(200), |t| {
            t.saturating_duration_since(Instant::now())
                .min(Duration::from_micros(200))
        });
        std::thread::sleep(nap);
        for end in [&mut client, &mut server] {
            if let Some(c) = end.conn.as_mut() {
                if c.timeout_instant().is_some_and(|t| t <= Instant::now()) {
                    c.on_timeout();
                }
            }
        }
        server.receive(Some(&mut server_cfg));
        client.receive(None);
    }
    let took = started.expect("started").elapsed();
    assert_eq!(got, payload, "every byte, in order");
    assert!(server.pacer.paced > 0, "no packet was held back");
    assert!(returned_due > 0, "flush never said when to come back");
    // Past the initial burst the rate holds: a lower bound, which load can't break.
    let floor = Duration::from_secs_f64((BYTES as f64 / 2.0) / RATE as f64);
    assert!(took >= floor, "{BYTES} B at {RATE} B/s in {took:?}");
    println!(
        "{BYTES} B in {took:?}; {} packets held back by pacing",
        server.pacer.paced
    );
}
