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
