//! End-to-end tests: real `turbo-server` and `turbo-node` processes, real targets and
//! real clients (curl, a raw SOCKS5 client) on loopback. Every data-path test runs
//! under both monoio drivers.

#![allow(unreachable_pub, dead_code, clippy::unwrap_used)]

mod fixtures;

mod abuse;
mod accessible;
mod admin_limits;
mod browser;
mod canaries;
mod credits;
mod dashboard;
mod data_path;
mod demo;
mod detection;
mod disputes;
mod drain;
mod durability;
mod failures;
mod fair_share;
mod hostile_peers;
mod http_keepalive;
mod integrity;
mod join_routable;
mod lanes;
mod ledger;
mod limits;
mod live;
mod lockouts;
mod malformed;
mod many_servers;
mod nat_rebind;
mod node_controls;
mod node_faults;
mod node_identity;
mod node_loss;
mod one_per_network;
mod packaging;
mod pairing;
mod payments;
mod policy_netns;
mod redis_cluster;
mod routing;
mod soak;
mod tray;
mod udp_offload;

/// Declares `$name` as a test under each driver: `io_uring::$name` and
/// `legacy::$name`, calling `$body(driver)`.
#[macro_export]
macro_rules! both_drivers {
    ($($name:ident),* $(,)?) => {
        mod io_uring {
            $( #[test] fn $name() { super::$name("io_uring") } )*
        }
        mod legacy {
            $( #[test] fn $name() { super::$name("legacy") } )*
        }
    };
}
