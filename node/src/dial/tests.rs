//! The destination-policy table: every forbidden range and form, as a literal and as a
//! name (through a resolver the test controls), next to public addresses and the exact
//! `--allow-cidr` ranges.

use std::collections::HashMap;
use std::net::IpAddr;

use super::*;

/// A resolver answering from a fixed table.
struct Table(HashMap<&'static str, Vec<IpAddr>>);

impl Resolve for Table {
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + 'a>> {
        Box::pin(async move {
            self.0
                .get(host)
                .map(|ips| ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect())
                .ok_or_else(|| std::io::Error::new(ErrorKind::NotFound, "no such name"))
        })
    }
}

/// (literal address, expected: true = allowed).
const LITERALS: &[(&str, bool)] = &[
    ("127.0.0.1", false),
    ("127.255.255.254", false),
    ("0.0.0.0", false),
    ("10.0.0.1", false),
    ("10.255.255.255", false),
    ("172.16.0.1", false),
    ("172.31.255.254", false),
    ("192.168.1.1", false),
    ("100.64.0.1", false),
    ("100.127.255.254", false),
    ("169.254.169.254", false),
    ("169.254.1.1", false),
    ("224.0.0.1", false),
    ("239.255.255.250", false),
    ("255.255.255.255", false),
    ("240.0.0.1", false),
    ("::1", false),
    ("::", false),
    ("fc00::1", false),
    ("fd12:3456::1", false),
    ("fe80::1", false),
    ("ff02::1", false),
    ("::ffff:10.0.0.1", false),
    ("::ffff:127.0.0.1", false),
    ("::ffff:169.254.169.254", false),
    ("::ffff:192.168.0.1", false),
    ("::ffff:0:10.0.0.1", false),
    ("64:ff9b::10.0.0.1", false),
    ("64:ff9b::127.0.0.1", false),
    ("::10.0.0.1", false),
    ("2002:0a00:0001::1", false),
    ("2002:a9fe:a9fe::1", false),
    ("192.0.2.1", false),
    ("2001:db8::1", false),
    ("198.18.0.1", false),
    // Public: allowed.
    ("93.184.216.34", true),
    ("1.1.1.1", true),
    ("8.8.8.8", true),
    ("2606:4700:4700::1111", true),
    ("::ffff:93.184.216.34", true),
    ("64:ff9b::1.1.1.1", true),
    ("172.32.0.1", true),
    ("100.128.0.1", true),
    ("192.169.0.1", true),
];

fn resolver() -> Table {
    let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
    let mut t = HashMap::new();
    for (lit, _) in LITERALS {
        // Every literal also as a name: n-<index>.test resolves to it.
        let name: &'static str =
            Box::leak(format!("n-{lit}.test").replace(':', "-").into_boxed_str());
        t.insert(name, vec![ip(lit)]);
    }
    t.insert("metadata.google.internal", vec![ip("169.254.169.254")]);
    t.insert("rebind.test", vec![ip("93.184.216.34"), ip("10.0.0.7")]);
    t.insert("mixed6.test", vec![ip("2606:4700::1"), ip("fd00::7")]);
    t.insert("public.test", vec![ip("93.184.216.34"), ip("2606:4700::1")]);
    t.insert("lab.test", vec![ip("10.1.2.3")]);
    Table(t)
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(5)
}

async fn allowed(policy: &DestinationPolicy, target: TargetAddr) -> Result<(), DialError> {
    resolve_checked(&target, deadline(), policy, &resolver())
        .await
        .map(|_| ())
}

#[tokio::test]
async fn every_forbidden_form_is_refused_as_literal_and_as_name() {
    let policy = DestinationPolicy::default();
    let mut checked = 0;
    for (lit, ok) in LITERALS {
        let ip: IpAddr = lit.parse().expect("ip");
        let as_ip = allowed(&policy, TargetAddr::Ip(SocketAddr::new(ip, 443))).await;
        let name = format!("n-{lit}.test").replace(':', "-");
        let as_name = allowed(&policy, TargetAddr::domain(&name, 443).expect("name")).await;
        for (form, result) in [("literal", &as_ip), ("name", &as_name)] {
            match (ok, result) {
                (true, Ok(())) => {}
                (false, Err(DialError::Refused(_))) => {}
                _ => panic!("{lit} as {form}: expected allowed={ok}, got {result:?}"),
            }
            checked += 1;
        }
    }
    // Names with several answers are refused if any answer is forbidden.
    for name in ["metadata.google.internal", "rebind.test", "mixed6.test"] {
        let r = allowed(&policy, TargetAddr::domain(name, 80).expect("n")).await;
        assert!(matches!(r, Err(DialError::Refused(_))), "{name}: {r:?}");
        checked += 1;
    }
    assert!(
        allowed(&policy, TargetAddr::domain("public.test", 80).expect("n"))
            .await
            .is_ok()
    );
    let missing = allowed(&policy, TargetAddr::domain("nx.test", 80).expect("n")).await;
    assert!(matches!(&missing, Err(DialError::Dns { host, .. }) if host == "nx.test"));
    assert_eq!(
        missing.err().map(|e| e.status()),
        Some(RelayStatus::DnsFailure)
    );
    checked += 2;
    println!("policy table: {checked} targets checked");
    assert!(checked >= 80);
}

#[tokio::test]
async fn allow_cidr_opens_exactly_its_range_and_server_rules_only_tighten() {
    let policy = DestinationPolicy::new(vec!["10.1.0.0/16".parse().expect("net")]);
    let at = |s: &str| TargetAddr::Ip(s.parse().expect("addr"));
    assert!(allowed(&policy, at("10.1.2.3:80")).await.is_ok());
    assert!(allowed(&policy, at("[::ffff:10.1.2.3]:80")).await.is_ok());
    assert!(
        allowed(&policy, TargetAddr::domain("lab.test", 80).expect("n"))
            .await
            .is_ok()
    );
    assert!(
        allowed(&policy, at("10.2.0.1:80")).await.is_err(),
        "just outside the range"
    );
    assert!(
        allowed(&policy, at("10.1.2.3:25")).await.is_err(),
        "SMTP stays blocked"
    );
    policy.set_server_rules(crate::guard::ServerRules {
        ports: vec![8080],
        nets: vec!["10.1.2.0/24".parse().expect("net")],
        domains: vec!["Blocked.Example".into()],
    });
    assert!(
        allowed(&policy, at("10.1.2.3:80")).await.is_err(),
        "server beats allow-cidr"
    );
    assert!(allowed(&policy, at("10.1.3.3:80")).await.is_ok());
    assert!(allowed(&policy, at("93.184.216.34:8080")).await.is_err());
    for host in ["blocked.example", "www.blocked.example.", "BLOCKED.example"] {
        let r = allowed(&policy, TargetAddr::domain(host, 443).expect("n")).await;
        assert!(matches!(r, Err(DialError::Refused(_))), "{host}");
    }
    assert!(
        allowed(
            &policy,
            TargetAddr::domain("notblocked.example", 443).expect("n")
        )
        .await
        .is_err_and(|e| e.status() == RelayStatus::DnsFailure),
        "a suffix match needs a dot"
    );
}

#[tokio::test]
async fn runner_blocks_and_own_addresses() {
    let policy = DestinationPolicy::default()
        .block_ports(&[6667])
        .block_domains(&["casino.test".into()])
        .deny_local(vec!["93.184.216.34".parse().expect("ip")]);
    let at = |s: &str| TargetAddr::Ip(s.parse().expect("addr"));
    assert!(allowed(&policy, at("1.1.1.1:6667")).await.is_err());
    assert!(allowed(&policy, at("1.1.1.1:465")).await.is_err());
    assert!(allowed(&policy, at("1.1.1.1:587")).await.is_err());
    assert!(
        allowed(&policy, at("93.184.216.34:443")).await.is_err(),
        "own public address"
    );
    assert!(
        allowed(&policy, TargetAddr::domain("x.casino.test", 80).expect("n"))
            .await
            .is_err()
    );
    assert!(allowed(&policy, at("1.1.1.1:443")).await.is_ok());
    let own = crate::guard::local_addresses();
    assert!(
        own.iter().any(|ip| ip.is_loopback()),
        "interfaces include loopback: {own:?}"
    );
}

#[test]
fn families_alternate() {
    let a = |s: &str| s.parse::<SocketAddr>().expect("a");
    let got = interleave(vec![
        a("[2001::1]:1"),
        a("[2001::2]:1"),
        a("1.1.1.1:1"),
        a("[2001::3]:1"),
        a("2.2.2.2:1"),
    ]);
    assert_eq!(
        got,
        vec![
            a("[2001::1]:1"),
            a("1.1.1.1:1"),
            a("[2001::2]:1"),
            a("2.2.2.2:1"),
            a("[2001::3]:1")
        ]
    );
}

#[tokio::test]
async fn happy_eyeballs_skips_a_dead_address() {
    // ::1 refuses (nothing listens on that port over IPv6), 127.0.0.1 accepts.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("a").port();
    let addrs = vec![
        SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], port)),
        SocketAddr::from(([127, 0, 0, 1], port)),
    ];
    let s = connect_racing(addrs, deadline())
        .await
        .expect("connects over IPv4");
    assert!(s.peer_addr().expect("peer").is_ipv4());
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = closed.local_addr().expect("a");
    drop(closed);
    let err = connect_racing(vec![dead], deadline()).await.err();
    assert!(matches!(&err, Some(DialError::Connect { addr, .. }) if *addr == dead));
    assert_eq!(
        err.as_ref().map(DialError::status),
        Some(RelayStatus::ConnectionRefused)
    );
    assert_eq!(err.map(|e| e.blame()), Some(Blame::Target));
}

#[tokio::test]
async fn errors_keep_their_messages_and_statuses() {
    let policy = DestinationPolicy::default();
    let refused = allowed(&policy, TargetAddr::Ip("10.0.0.1:80".parse().expect("a")))
        .await
        .expect_err("private");
    assert_eq!(refused.status(), RelayStatus::RefusedByPolicy);
    assert_eq!(refused.blame(), Blame::Policy);
    // The server is told the policy's own words.
    match &refused {
        DialError::Refused(denied) => assert_eq!(refused.to_string(), denied.to_string()),
        other => panic!("{other:?}"),
    }
    let timeout = DialError::ConnectTimeout { attempts: 2 };
    assert_eq!(timeout.to_string(), "connect timed out");
    assert_eq!(timeout.status(), RelayStatus::Timeout);
    let dns = DialError::DnsTimeout {
        host: "a.test".into(),
    };
    assert_eq!(
        (dns.to_string(), dns.status()),
        ("DNS timeout".into(), RelayStatus::Timeout)
    );
    let empty = DialError::NoAddresses {
        host: "a.test".into(),
    };
    assert_eq!(
        (empty.to_string(), empty.status()),
        ("no addresses".into(), RelayStatus::DnsFailure)
    );
    let none = DialError::NoAddress;
    assert_eq!(
        (none.to_string(), none.status(), none.blame()),
        (
            "no address tried".into(),
            RelayStatus::GeneralFailure,
            Blame::Internal
        )
    );
    let dead: SocketAddr = "127.0.0.1:9".parse().expect("a");
    let connect = DialError::Connect {
        addr: dead,
        source: std::io::Error::from(ErrorKind::ConnectionRefused),
    };
    assert!(
        connect.to_string().starts_with("127.0.0.1:9: "),
        "{connect}"
    );
    let emfile = DialError::Connect {
        addr: dead,
        source: std::io::Error::other("too many open files"),
    };
    assert_eq!(
        (emfile.status(), emfile.blame()),
        (RelayStatus::GeneralFailure, Blame::Internal)
    );
}

#[test]
fn maps_io_errors() {
    let e = std::io::Error::from(ErrorKind::ConnectionRefused);
    assert_eq!(status_of(&e), RelayStatus::ConnectionRefused);
    assert_eq!(
        status_of(&std::io::Error::from_raw_os_error(101)),
        RelayStatus::NetworkUnreachable
    );
    assert_eq!(
        status_of(&std::io::Error::other("x")),
        RelayStatus::GeneralFailure
    );
}
