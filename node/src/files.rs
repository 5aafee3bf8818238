//! Where the node keeps its files: the config (`node.toml`, written by `turbo-node
//! join`) in the platform's config directory, and state (usage counters, the status
//! socket) in its data directory. Both are owner-only: 0700 directories and 0600 files
//! on Unix; on Windows they live under the user's profile, which only the user can read.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The platform's directories for turbo-node, or `None` without a home directory.
pub fn dirs() -> Option<directories::ProjectDirs> {
    directories::ProjectDirs::from("net", "turbo", "turbo-node")
}

/// `node.toml` in the config directory (overridable with `TURBO_NODE_CONFIG`).
pub fn config_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TURBO_NODE_CONFIG") {
        return Some(PathBuf::from(p));
    }
    dirs().map(|d| d.config_dir().join("node.toml"))
}

/// The state directory (overridable with `TURBO_NODE_STATE`).
pub fn state_dir() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TURBO_NODE_STATE") {
        return Some(PathBuf::from(p));
    }
    dirs().map(|d| d.data_local_dir().to_owned())
}

/// Creates `dir` (and parents) readable by the owner only.
///
/// # Errors
/// When it cannot be created.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Writes `data` to `path` atomically (temp file + rename), owner-only.
///
/// # Errors
/// When the directory or file cannot be written.
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        private_dir(parent)?;
    }
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}
