//! `node.toml`: what `turbo-node join` saves so that `turbo-node run` needs no flags.
//! Flags given to `run` override it.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The saved node configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct NodeFile {
    /// The join string (holds the node token: the file is owner-only). Required.
    pub join: String,
    /// Declared country (ISO 3166-1 alpha-2). Defaults to none.
    pub country: Option<String>,
    /// Where the runner wants to be paid. Informational only: servers ignore it (the
    /// operator sets it at invite time). Defaults to none.
    pub payout_address: Option<String>,
    /// Most relay streams at once. Defaults to 1024.
    pub max_streams: Option<u32>,
    /// Bandwidth cap per direction, e.g. `5MB` per second. Defaults to none.
    pub max_rate: Option<String>,
    /// Monthly data cap, e.g. `200GB`. Defaults to none.
    pub monthly_cap: Option<String>,
    /// Extra blocked ports. Defaults to none (SMTP is always blocked).
    pub block_ports: Vec<u16>,
    /// Blocked domains (and subdomains). Defaults to none.
    pub block_domains: Vec<String>,
    /// Otherwise-forbidden ranges the node may reach (`--allow-cidr`, labs and tests
    /// only), e.g. `10.9.0.0/16`. Defaults to none.
    pub allow_cidrs: Vec<String>,
    /// The dashboard's address, saved by `turbo-node pair` for the tray's "Open
    /// dashboard". Defaults to none.
    pub dashboard: Option<String>,
}

impl NodeFile {
    /// Reads a saved file.
    ///
    /// # Errors
    /// A message naming the file and the problem.
    pub fn read(path: &Path) -> Result<NodeFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: {e} (run `turbo-node join` first)", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Saves it owner-only.
    ///
    /// # Errors
    /// When it cannot be written.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let text = toml::to_string(self).map_err(std::io::Error::other)?;
        crate::files::write_private(path, text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_owner_only_and_read_back() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("cfg").join("node.toml");
        let f = NodeFile {
            join: "turbo://nt_x@h:1?pin=00".into(),
            country: Some("DE".into()),
            max_rate: Some("5MB".into()),
            block_ports: vec![6667],
            ..Default::default()
        };
        f.write(&path).expect("write");
        assert_eq!(NodeFile::read(&path).expect("read"), f);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            let dmode = std::fs::metadata(path.parent().expect("p"))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(dmode & 0o777, 0o700);
        }
        assert!(NodeFile::read(&dir.path().join("missing.toml")).is_err());
    }
}
