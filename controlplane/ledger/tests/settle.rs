//! Usage settlement against a real PostgreSQL: records delivered twice count once,
//! four settlers racing over the same records settle each exactly once, a second pass
//! changes nothing, and bytes billed to keys equal bytes carried by nodes, to the byte,
//! in the ledger and in the per-minute table.

mod fixtures;

use fixtures::Postgres;
use turbo_ledger::{AccountRef, Asset, Ledger, UsageRecord};

const RECORDS: i64 = 1200;

fn records() -> Vec<UsageRecord> {
    (0..RECORDS)
        .map(|i| UsageRecord {
            server: format!("s{}", i % 2),
            lease: format!("lease{}", i % 37),
            seq: i,
            node: format!("n{}", i % 5),
            key_id: format!("k{}", i % 3),
            minute: 29_000_000 + i % 4,
            up: (i * 7919) % 5000,
            down: (i * 104_729) % 90_000 + 1,
            conns: i % 2,
        })
        .collect()
}

async fn sum_accounts(ledger: &Ledger, prefix: &str, n: usize) -> i64 {
    let mut total = 0;
    for i in 0..n {
        let account = match prefix {
            "k" => AccountRef::key(&format!("k{i}"), Asset::Bytes),
            _ => AccountRef::node(&format!("n{i}"), Asset::Bytes),
        };
        total += ledger.balance(&account).await.expect("balance");
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn usage_is_settled_exactly_once() {
    let pg = Postgres::start();
    let url = pg.database().await;
    let ledger = Ledger::connect(&url).await.expect("ledger");
    let all = records();
    let relayed: i64 = all.iter().map(|r| r.up + r.down).sum();
    // Delivered in chunks, then every chunk again (a retried checkpoint).
    let mut new = 0;
    for chunk in all.chunks(100) {
        new += ledger.record_usage(chunk).await.expect("record");
    }
    for chunk in all.chunks(70) {
        new += ledger.record_usage(chunk).await.expect("record again");
    }
    assert_eq!(new, RECORDS as u64, "a record delivered twice counts once");
    // Four settlers race over the same records in batches of 50.
    let mut settlers = Vec::new();
    for _ in 0..4 {
        let ledger = ledger.clone();
        settlers.push(tokio::spawn(async move {
            let (mut records, mut bytes) = (0u64, 0u64);
            loop {
                let s = ledger.settle(50).await?;
                if s.records == 0 {
                    return Ok::<_, turbo_ledger::LedgerError>((records, bytes));
                }
                records += s.records;
                bytes += s.bytes;
            }
        }));
    }
    let (mut settled, mut bytes) = (0, 0);
    for s in settlers {
        let (r, b) = s.await.expect("settler").expect("settle");
        settled += r;
        bytes += b;
    }
    assert_eq!(settled, RECORDS as u64, "every record settled once");
    assert_eq!(bytes, relayed as u64);
    // A second pass changes nothing.
    assert_eq!(ledger.settle(1000).await.expect("again").records, 0);
    let billed = -sum_accounts(&ledger, "k", 3).await;
    let carried = sum_accounts(&ledger, "n", 5).await;
    assert_eq!(
        (billed, carried),
        (relayed, relayed),
        "billed = carried, to the byte"
    );
    let audit = ledger.audit().await.expect("audit");
    assert!(audit.is_sound(), "{audit:?}");
    // The per-minute table holds the same bytes.
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT (sum(up) + sum(down))::bigint, sum(conns)::bigint FROM usage_minute",
            &[],
        )
        .await
        .expect("minutes");
    let conns: i64 = all.iter().map(|r| r.conns).sum();
    assert_eq!(
        (row.get::<_, i64>(0), row.get::<_, i64>(1)),
        (relayed, conns)
    );
}
