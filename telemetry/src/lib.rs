//! The tracing set-up every Turbo binary starts with (`turbo-server`, `turbo-node`):
//! human-readable lines on stderr, filtered by `RUST_LOG` (default `info`, so the hot
//! path stays silent). Libraries only emit events; the binaries call [`init`] once.
#![warn(missing_docs)]

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber: `fmt` lines to stderr, filtered by `RUST_LOG`, or
/// at `info` when it is unset or invalid.
///
/// # Panics
/// When a global subscriber is already set (call it once, first thing in `main`).
pub fn init() {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
}
