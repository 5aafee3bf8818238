//! The server certificate nodes pin. Generated on first run into the data directory
//! (self-signed ECDSA P-256) and reused afterwards; operators may configure real files
//! instead. The pin is the SHA-256 of the leaf certificate's DER.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// TLS setup failures.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Reading or writing a PEM file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Certificate generation failed.
    #[error("generating certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// The certificate file holds no PEM certificate.
    #[error("{0}: no certificate found")]
    NoCertificate(PathBuf),
}

/// Paths of the certificate chain and key, and the leaf pin.
#[derive(Debug, Clone)]
pub struct ServerCert {
    /// PEM chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// SHA-256 of the leaf certificate DER.
    pub pin: [u8; 32],
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes `data` to `path`, readable by the owner only.
///
/// # Errors
/// The OS error.
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)?.write_all(data)
}

/// Uses `configured` files, or the data directory's generated pair (creating it with
/// `hosts` as names on first run).
///
/// # Errors
/// [`TlsError`] on IO or generation failure.
pub fn load_or_generate(
    data_dir: &Path,
    configured: Option<(PathBuf, PathBuf)>,
    hosts: &[String],
) -> Result<ServerCert, TlsError> {
    let (cert, key) = match configured {
        Some(pair) => pair,
        None => {
            let cert = data_dir.join("cert.pem");
            let key = data_dir.join("key.pem");
            if !cert.exists() || !key.exists() {
                let generated = rcgen::generate_simple_self_signed(hosts.to_vec())?;
                write_private(&key, generated.key_pair.serialize_pem().as_bytes())
                    .map_err(io(&key))?;
                std::fs::write(&cert, generated.cert.pem()).map_err(io(&cert))?;
                tracing::info!(cert = %cert.display(), "generated a self-signed server certificate");
            }
            (cert, key)
        }
    };
    let pem = std::fs::read_to_string(&cert).map_err(io(&cert))?;
    let der = first_pem_der(&pem).ok_or_else(|| TlsError::NoCertificate(cert.clone()))?;
    Ok(ServerCert {
        pin: Sha256::digest(&der).into(),
        cert,
        key,
    })
}

fn first_pem_der(pem: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let start = pem.find("-----BEGIN CERTIFICATE-----")? + "-----BEGIN CERTIFICATE-----".len();
    let end = start + pem[start..].find("-----END CERTIFICATE-----")?;
    let b64: String = pem[start..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_and_pins_stably() {
        let dir = tempfile::tempdir().expect("tmp");
        let hosts = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let a = load_or_generate(dir.path(), None, &hosts).expect("gen");
        let b = load_or_generate(dir.path(), None, &hosts).expect("reuse");
        assert_eq!(a.pin, b.pin);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&a.key)
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "key must be owner-only");
        }
    }
}
