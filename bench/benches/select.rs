//! `cargo bench -p turbo-bench --bench select`: nanoseconds per node pick from the
//! route table at 10, 1,000 and 100,000 nodes, globally and within one country.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use turbo_dataplane::control::ConnRef;
use turbo_dataplane::routes::{NodeRoute, NodeTable};
use turbo_proto::params::CountryCode;

const COUNTRIES: [&str; 8] = ["US", "DE", "FR", "GB", "JP", "BR", "IN", "CA"];

fn table(n: usize) -> NodeTable {
    let routes = (0..n)
        .map(|i| NodeRoute {
            node_id: format!("n_{i:016x}").into(),
            country: CountryCode::parse(COUNTRIES[i % COUNTRIES.len()]).ok(),
            conns: Arc::new([ConnRef {
                core: i % 4,
                serial: i as u64,
            }]),
            weight: 0.2 + (i % 97) as f64 / 97.0,
            score: 0.5,
            max_streams: 1024,
            active: Arc::default(),
            earnings: Arc::default(),
        })
        .collect();
    NodeTable::new(routes)
}

fn ns_per_pick(t: &NodeTable, country: Option<CountryCode>) -> f64 {
    let picks = 2_000_000u64;
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let started = Instant::now();
    for _ in 0..picks {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        black_box(t.choose(country, x, &[]).ok());
    }
    started.elapsed().as_nanos() as f64 / picks as f64
}

fn main() {
    println!("| nodes | any country | one country |\n|---:|---:|---:|");
    for n in [10, 1_000, 100_000] {
        let t = table(n);
        let de = CountryCode::parse("DE").ok();
        let (all, one) = (ns_per_pick(&t, None), ns_per_pick(&t, de));
        println!("| {n} | {all:.1} ns | {one:.1} ns |");
    }
}
