//! Tests specific to the memory store (the shared store suite runs on it too).

use super::*;

#[tokio::test]
async fn snapshot_keeps_keys_and_nodes_and_returns_leases() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("memory-store.json");
    let store = MemoryStore::with_snapshot(path.clone()).expect("new");
    let (key, secret) = store.create_key("alice", 1000).await.expect("key");
    let (node, token) = store.create_node(None).await.expect("node");
    // A lease outstanding at the snapshot (as after a crash).
    store.change(|t| {
        let k = t.keys.get_mut(&key.id).expect("key");
        k.credits -= 300;
        k.leased += 300;
    });
    store.save().expect("save");
    // Lookups leave the snapshot clean: nothing is rewritten for them.
    store
        .key_by_hash(secrets::hash(&secret))
        .await
        .expect("lookup");
    let written = store.shared.snapshot.as_ref().expect("file").written();
    assert_eq!(store.with(|t| t.generation), written);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let back = MemoryStore::with_snapshot(path).expect("load");
    let k = back
        .key_by_hash(secrets::hash(&secret))
        .await
        .expect("lookup")
        .expect("kept");
    assert_eq!(
        (k.id.as_str(), k.credits, k.leased),
        (key.id.as_str(), 1000, 0)
    );
    let n = back
        .node_by_token_hash(secrets::hash(&token))
        .await
        .expect("lookup")
        .expect("kept");
    assert_eq!(n.id, node.id);
}

#[tokio::test]
async fn admin_writes_are_on_disk_when_they_return() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("memory-store.json");
    let store = MemoryStore::with_snapshot(path.clone()).expect("new");
    let (key, _) = store.create_key("alice", 1000).await.expect("key");
    let (gone, _) = store.create_key("mallory", 5).await.expect("key");
    store.add_credits(&key.id, 24).await.expect("top-up");
    store.revoke_key(&gone.id).await.expect("revoke");
    let (node, _) = store.create_node(None).await.expect("node");
    // No save(): what the calls acknowledged is already in the file.
    let back = MemoryStore::with_snapshot(path).expect("load");
    assert_eq!(back.key(&key.id).await.expect("kept").credits, 1024);
    assert!(back.key(&gone.id).await.expect("kept").revoked);
    assert_eq!(back.list_nodes().await.expect("nodes")[0].id, node.id);
}

/// The usage log survives a restart with the balances it was charged with, and new
/// entries get ids after the old ones: a ledger cursor past them still reads them.
#[tokio::test]
async fn the_usage_log_and_its_ids_survive_a_restart() {
    use std::sync::Arc;
    use turbo_dataplane::control::{LeaseRequest, Usage};

    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("memory-store.json");
    let terms = crate::store::LeaseTerms {
        owner: "s1".into(),
        ttl: std::time::Duration::from_secs(60),
        usage_log: true,
    };
    let request = |key: &str, seq: u64| {
        let node: Arc<str> = "n_1".into();
        let mut usage = Usage::default();
        usage.add(&node, 100, false);
        LeaseRequest {
            key_id: key.into(),
            lease_id: "l_1".into(),
            seq,
            want: 1000,
            usage,
            release: false,
        }
    };
    let store = MemoryStore::with_snapshot(path.clone()).expect("new");
    let (key, _) = store.create_key("alice", 10_000).await.expect("key");
    for seq in 1..=3 {
        store
            .lease(&terms, &request(&key.id, seq))
            .await
            .expect("lease");
    }
    let (_, cursor) = store.usage_since("0", 2).await.expect("read two");
    store.save().expect("save");
    let back = MemoryStore::with_snapshot(path).expect("load");
    let (left, _) = back
        .usage_since(&cursor, 10)
        .await
        .expect("after the cursor");
    assert_eq!(left.iter().map(|e| e.seq).collect::<Vec<_>>(), [3], "kept");
    back.lease(&terms, &request(&key.id, 4))
        .await
        .expect("lease");
    let (next, _) = back
        .usage_since(&cursor, 10)
        .await
        .expect("after the cursor");
    assert_eq!(
        next.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [3, 4],
        "a new entry's id comes after the old ones"
    );
}
