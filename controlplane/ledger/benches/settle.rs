//! How fast one PostgreSQL takes usage in: records recorded per second (batches of
//! 1,000, as a server's checkpoint flusher sends them) and records settled per second
//! (batches of 20,000) into ledger postings and per-minute rows. Starts a throwaway
//! cluster (as the tests do); prints the median of three runs with their range.
//!
//! `cargo bench -p turbo-ledger --bench settle` (goal: ≥ 20,000 settled records/s).

#[path = "../tests/fixtures/mod.rs"]
mod fixtures;

use std::time::Instant;

use turbo_ledger::{Ledger, UsageRecord};

const RECORDS: i64 = 100_000;
const RUNS: usize = 3;

fn records(run: usize) -> Vec<UsageRecord> {
    (0..RECORDS)
        .map(|i| UsageRecord {
            server: format!("s{}", i % 4),
            lease: format!("r{run}-l{}", i % 500),
            seq: i,
            node: format!("n{}", i % 200),
            key_id: format!("k{}", i % 50),
            minute: 29_000_000 + i % 60,
            up: i % 5000,
            down: (i * 7) % 90_000 + 1,
            conns: 1,
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let pg = fixtures::Postgres::start();
    let (mut recorded, mut settled) = (Vec::new(), Vec::new());
    for run in 0..RUNS {
        let ledger = Ledger::connect(&pg.database().await).await?;
        let batch = records(run);
        let t = Instant::now();
        for chunk in batch.chunks(1000) {
            ledger.record_usage(chunk).await?;
        }
        recorded.push(RECORDS as f64 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        let mut n = 0;
        loop {
            let s = ledger.settle(20_000).await?;
            if s.records == 0 {
                break;
            }
            n += s.records;
        }
        anyhow::ensure!(n == RECORDS as u64, "settled {n} of {RECORDS}");
        settled.push(RECORDS as f64 / t.elapsed().as_secs_f64());
        anyhow::ensure!(ledger.audit().await?.is_sound(), "ledger unsound");
    }
    for (what, v) in [("recorded", recorded), ("settled", settled)] {
        let (m, lo, hi) = median(v);
        println!("usage records {what}: {m:.0}/s ({lo:.0}–{hi:.0}, {RUNS} runs of {RECORDS})");
    }
    Ok(())
}
