//! Batched UDP: downloads (the node is the bulk sender) leave the node in GSO batches,
//! reach the server in GRO batches and stay byte-exact, and when the kernel refuses a batch (EIO, as a device
//! without segmentation offload answers; simulated by the test build `gso-eio`) the
//! datagrams go out one by one and the transfer is still exact. Paced (BBRv2) transfers
//! stay exact too.

use std::process::Command;
use std::sync::Arc;

use crate::fixtures::socks::{self, Connect};
use crate::fixtures::targets::{self, FileServer};
use crate::fixtures::{bin, curl, random_bytes, sha256_hex, Net, Options};

const TWENTY_MB: usize = 20 << 20;

/// `(gso_segments, offload_fallbacks)` from `turbo-node status` of node `id`.
fn udp_counters(net: &Net, id: &str) -> (u64, u64) {
    let out = Command::new(bin("turbo-node"))
        .arg("status")
        .env("TURBO_NODE_STATE", net.node_state(id))
        .output()
        .expect("turbo-node status");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.starts_with("udp offload:"))
        .unwrap_or_else(|| panic!("no udp line in {text}"));
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

/// Downloads 20 MiB through socks5h and checks every byte.
fn download_exact(net: &Net) {
    let body = Arc::new(random_bytes(TWENTY_MB, 42));
    let want = sha256_hex(&body);
    let target = FileServer::start(body);
    let proxy = net.proxy_url("socks5h");
    let url = format!("http://127.0.0.1:{}/f", target.addr.port());
    let out = curl(&["-sS", "-x", &proxy, "-o", "-", &url]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), TWENTY_MB);
    assert_eq!(sha256_hex(&out.stdout), want, "download corrupted");
}

/// Uploads 20 MiB through SOCKS5 to a counting target and checks every byte arrived.
fn upload_exact(net: &Net) {
    use std::io::{Read, Write};
    let data = random_bytes(TWENTY_MB, 43);
    let target = targets::count_until_eof();
    let mut s = match socks::connect(net.socks, "e2e", &net.key, "127.0.0.1", target.port()) {
        Connect::Open(s) => s,
        other => panic!("tunnel refused: {other:?}"),
    };
    // The bound is for a stalled transfer, not a slow one: a loaded 2-core machine once
    // needed more than the fixture's 20 s to drain 20 MiB through a narrow path.
    s.set_read_timeout(Some(std::time::Duration::from_secs(120)))
        .unwrap();
    let started = std::time::Instant::now();
    s.write_all(&data).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut reply = String::new();
    if let Err(e) = s.read_to_string(&mut reply) {
        panic!("no count after {:?}: {e}", started.elapsed());
    }
    assert_eq!(reply.trim(), format!("received {TWENTY_MB} bytes"));
}

fn transfers_travel_in_batches(driver: &'static str) {
    let mut opts = Options::new(driver);
    opts.node = false;
    let mut net = Net::start_with(opts);
    let node = net.add_node(&[]);
    download_exact(&net);
    let (segments, fallbacks) = udp_counters(&net, &node);
    let gro = net.metric("turbo_udp_gro_segments_total");
    println!(
        "20 MiB download: {segments} datagrams left the node in GSO batches, \
         {gro} reached the server in GRO batches"
    );
    assert!(segments > 1000, "the node batched its sends: {segments}");
    assert_eq!(fallbacks, 0);
    assert!(gro > 1000.0, "the server read batches: {gro}");
    // An upload: the server is the bulk sender.
    upload_exact(&net);
    let gso = net.metric("turbo_udp_gso_segments_total");
    println!("20 MiB upload: {gso} datagrams left the server in GSO batches");
    assert!(gso > 1000.0, "the server batched its sends: {gso}");
}

/// Downloads through a faulty node whose GSO sends are refused (`fault`) and checks the
/// fallback: byte-exact, the refusal counted, no batch sent.
fn refusal_falls_back(driver: &'static str, fault: &str) {
    let mut opts = Options::new(driver);
    opts.node = false;
    let mut net = Net::start_with(opts);
    let node = net.add_faulty_node(fault, &[]);
    download_exact(&net);
    let (segments, fallbacks) = udp_counters(&net, &node);
    println!("20 MiB download, {fault}: {fallbacks} fallbacks, {segments} batched");
    assert!(fallbacks >= 1, "the refusal was seen");
    assert_eq!(segments, 0, "no batch got through the refusing kernel");
}

/// The test build answers every GSO send with EIO, as a device without segmentation
/// offload does.
fn refused_gso_falls_back_without_loss(driver: &'static str) {
    refusal_falls_back(driver, "gso-eio");
}

/// The real kernel refuses: the faulty node's socket has UDP checksums off
/// (`SO_NO_CHECK`), so Linux answers every GSO send with EINVAL.
fn kernel_refusal_falls_back_without_loss(driver: &'static str) {
    refusal_falls_back(driver, "gso-kernel-refuses");
}

fn offload_off_sends_one_datagram_per_call(driver: &'static str) {
    let mut opts = Options::new(driver);
    opts.node = false;
    opts.config = "udp_offload = \"off\"\n".into();
    let mut net = Net::start_with(opts);
    let node = net.add_node(&["--udp-offload", "off"]);
    download_exact(&net);
    assert_eq!(udp_counters(&net, &node), (0, 0));
    upload_exact(&net);
    assert_eq!(net.metric("turbo_udp_gro_segments_total"), 0.0);
    assert_eq!(net.metric("turbo_udp_gso_segments_total"), 0.0);
}

/// A path narrower than the largest datagram: in a namespace whose loopback MTU is
/// 1,400 (UDP payloads of at most 1,372 bytes), path MTU discovery settles below its
/// 1,472-byte ceiling instead of losing every full packet, and 20 MiB stay exact.
fn a_narrow_path_settles_lower(driver: &'static str) {
    let Some(ns) = crate::fixtures::netns::Netns::create(&[], &[]) else {
        return;
    };
    let mtu = Command::new("ip")
        .args(["-n", &ns.name, "link", "set", "lo", "mtu", "1400"])
        .status()
        .expect("ip link set mtu");
    assert!(mtu.success(), "lowering the namespace's MTU");
    ns.run(move || {
        let mut opts = Options::new(driver);
        opts.node = false;
        let mut net = Net::start_with(opts);
        net.add_node(&[]);
        download_exact(&net);
        upload_exact(&net);
    });
}

/// BBRv2 on both ends (`congestion_control = "bbr2"`, `--congestion-control bbr2`):
/// quiche paces its packets, the batchers hold those due later, and 20 MiB each way
/// stay exact.
fn paced_bbr2_transfers_stay_exact(driver: &'static str) {
    let mut opts = Options::new(driver);
    opts.node = false;
    opts.config = "congestion_control = \"bbr2\"\n".into();
    let mut net = Net::start_with(opts);
    net.add_node(&["--congestion-control", "bbr2"]);
    download_exact(&net);
    upload_exact(&net);
}

crate::both_drivers!(
    paced_bbr2_transfers_stay_exact,
    a_narrow_path_settles_lower,
    transfers_travel_in_batches,
    refused_gso_falls_back_without_loss,
    kernel_refusal_falls_back_without_loss,
    offload_off_sends_one_datagram_per_call,
);
