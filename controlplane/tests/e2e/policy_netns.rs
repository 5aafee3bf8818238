//! The destination policy end to end, through the real server and node, inside a
//! network namespace that has only loopback. The namespace's `lo` also carries private,
//! CGNAT, metadata and ULA addresses, and a target listens on all of them: a broken
//! policy would connect (and the target would count it) but could never send a packet
//! off the machine. Names resolve through the namespace's hosts file, with the node's
//! system resolver.

use std::process::Command;
use std::sync::atomic::Ordering;

use crate::fixtures::netns::Netns;
use crate::fixtures::socks::{self, Connect};
use crate::fixtures::{targets, Net, Options};

/// Addresses put on the namespace's loopback, so that reaching them would succeed.
const LOCAL_ADDRS: &[&str] = &[
    "10.0.0.1/32",
    "172.16.5.4/32",
    "192.168.1.10/32",
    "100.64.0.1/32",
    "169.254.169.254/32",
    "fd00::1/128",
];

/// Names for the hosts file: (name, address).
const HOSTS: &[(&str, &str)] = &[
    ("router.lan", "10.0.0.1"),
    ("nas.lan", "192.168.1.10"),
    ("corp.lan", "172.16.5.4"),
    ("cgnat.test", "100.64.0.1"),
    ("metadata.test", "169.254.169.254"),
    ("loopback.test", "127.0.0.1"),
    ("ula.test", "fd00::1"),
    ("allowed.test", "127.0.0.2"),
];

/// Forbidden literals: every range and form of the policy, as the customer sends them.
const FORBIDDEN_LITERALS: &[&str] = &[
    "127.0.0.1",
    "::1",
    "0.0.0.0",
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.10",
    "100.64.0.1",
    "169.254.169.254",
    "fd00::1",
    "fe80::1",
    "::ffff:10.0.0.1",
    "::ffff:127.0.0.1",
    "64:ff9b::a00:1",
    "224.0.0.1",
    "255.255.255.255",
];

/// The only range the node opens.
const ALLOWED: &str = "127.0.0.2/32";

fn policy_refuses_inside_a_loopback_only_namespace() {
    let Some(ns) = Netns::create(LOCAL_ADDRS, HOSTS) else {
        return;
    };
    let prefix = ns.exec_prefix();
    ns.run(move || {
        let (port, seen) = targets::counting_everywhere();
        let mut opts = Options::new("io_uring");
        opts.allow = vec![ALLOWED];
        opts.node_prefix = prefix;
        let net = Net::start_with(opts);

        let forbidden_names = HOSTS
            .iter()
            .map(|(h, _)| *h)
            .filter(|h| *h != "allowed.test");
        let mut refused = 0;
        for host in FORBIDDEN_LITERALS.iter().copied().chain(forbidden_names) {
            match socks::connect(net.socks, "e2e", &net.key, host, port) {
                Connect::Refused(code) => {
                    assert_eq!(
                        code, 2,
                        "{host}: SOCKS5 reply 0x02 (not allowed by ruleset)"
                    )
                }
                other => panic!("{host}: expected refusal, got {other:?}"),
            }
            refused += 1;
        }
        assert_eq!(
            seen.load(Ordering::SeqCst),
            0,
            "a forbidden target saw a connection"
        );

        for host in ["10.0.0.1", "metadata.test", "[fd00::1]"] {
            let out = Command::new("curl")
                .args(["-sS", "--max-time", "20", "-o", "/dev/null", "-D", "-"])
                .args(["-x", &net.proxy_url("http")])
                .arg(format!("http://{host}:{port}/"))
                .output()
                .expect("curl");
            let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
            assert!(head.starts_with("http/1.1 403"), "{host}: {head}");
            assert!(
                head.contains("proxy-status:") && head.contains("error=destination_ip_prohibited"),
                "{host}: {head}"
            );
        }
        assert_eq!(
            seen.load(Ordering::SeqCst),
            0,
            "a forbidden target saw a connection"
        );

        // The exact --allow-cidr range is reachable, as a literal and as a name.
        for host in ["127.0.0.2", "allowed.test"] {
            match socks::connect(net.socks, "e2e", &net.key, host, port) {
                Connect::Open(_) => {}
                other => panic!("{host} is allowed: {other:?}"),
            }
        }
        crate::fixtures::wait_for("the allowed connections to arrive", || {
            (seen.load(Ordering::SeqCst) == 2).then_some(())
        });
        println!("policy: {refused} forbidden targets refused with 0x02, 3 with 403, 2 allowed");
    });
}

#[test]
fn policy_end_to_end_in_a_namespace() {
    policy_refuses_inside_a_loopback_only_namespace();
}
