//! Turbo's load-testing harness. It starts real release binaries (`turbo-server`,
//! `turbo-node`) and target servers on loopback, or across a veth pair between two
//! network namespaces (`--net veth`), drives load with real clients, and
//! reports every figure next to the same workload over a direct connection, measured
//! in the same run (absolute numbers drift on shared machines; ratios do not).

pub mod auth;
pub mod conditions;
pub mod curl;
pub mod detect;
pub mod detect_report;
pub mod fanin;
pub mod figure;
pub mod measure;
pub mod net;
pub mod peers;
pub mod plot;
pub mod redis_cluster;
pub mod report;
pub mod setns;
pub mod single;
pub mod socks;
pub mod suite;
pub mod target;
pub mod topology;
pub mod veth;
pub mod workload;
