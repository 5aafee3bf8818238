//! The memory store's snapshot file (`DATA_DIR/memory-store.json`, owner-only): keys
//! and node identities with their secrets' hashes.
//!
//! A write is crash-safe and durable when it returns: the JSON goes to a temporary file
//! that is fsync'd, renamed over the old snapshot, and the directory is fsync'd so the
//! rename itself survives a power cut. Writers are serialised and numbered by the
//! store's change generation, so a snapshot never goes back in time and concurrent
//! callers that wait for the same change share one write.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{KeyRecord, NodeRecord};

/// What the snapshot file holds: records with their secrets' hashes (hex).
#[derive(serde::Serialize, serde::Deserialize, Default)]
pub(super) struct Snapshot {
    /// (hash hex, key).
    pub(super) keys: Vec<(String, KeyRecord)>,
    /// (hash hex, node).
    pub(super) nodes: Vec<(String, NodeRecord)>,
    /// The usage log not yet taken by the ledger: (id, entry). Kept with the balances it
    /// was charged with, so a restart neither loses it nor reuses its ids.
    #[serde(default)]
    pub(super) usage_log: Vec<(u64, super::UsageEntry)>,
    /// The id of the next usage log entry.
    #[serde(default)]
    pub(super) usage_next: u64,
    /// Operations [`super::Store::add_credits_once`] applied.
    #[serde(default)]
    pub(super) credit_ops: Vec<String>,
}

/// A snapshot file and the newest change generation known to be on disk.
pub(super) struct SnapshotFile {
    path: PathBuf,
    written: Mutex<u64>,
}

impl SnapshotFile {
    /// Opens `path`: its snapshot (empty when there is no file yet) counts as
    /// generation 0.
    ///
    /// # Errors
    /// When the file exists but cannot be read or parsed.
    pub(super) fn open(path: PathBuf) -> std::io::Result<(SnapshotFile, Snapshot)> {
        let snap = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Snapshot::default(),
            Err(e) => return Err(e),
        };
        let file = SnapshotFile {
            path,
            written: Mutex::new(0),
        };
        Ok((file, snap))
    }

    /// Makes sure generation `upto` is on disk: returns at once when a write already
    /// covered it, else writes what `capture` returns (its generation and contents,
    /// taken now, so it includes `upto`). Blocks on file IO.
    ///
    /// # Errors
    /// When the file cannot be written; the generation is then not marked written.
    pub(super) fn write_through(
        &self,
        upto: u64,
        capture: impl FnOnce() -> (u64, Snapshot),
    ) -> std::io::Result<()> {
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        if *written >= upto {
            return Ok(());
        }
        let (generation, snap) = capture();
        let bytes = serde_json::to_vec(&snap).map_err(std::io::Error::other)?;
        write_durably(&self.path, &bytes)?;
        *written = generation;
        Ok(())
    }

    /// The newest generation on disk.
    #[cfg(test)]
    pub(super) fn written(&self) -> u64 {
        *self.written.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Replaces `path` with `bytes` (owner-only) atomically and durably: temp file, fsync,
/// rename, fsync of the directory.
fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("json.tmp");
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}
