//! The build script of `turbo-server` and `turbo-node` (both name this file as their
//! `build`): stamps `--version` with the git commit it was built from
//! (`TURBO_GIT_COMMIT`: `git rev-parse --short HEAD`, or `unknown` outside git, e.g.
//! a source tarball or a Docker build without `.git`).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rustc-env=TURBO_GIT_COMMIT={}", commit());
    // Rebuild when HEAD moves: a checkout (HEAD) or a commit (the branch's ref file,
    // or packed-refs once git packs it). Outside git, only this script is watched.
    println!("cargo:rerun-if-changed=../build/version.rs");
    for path in ["HEAD", &symbolic_head(), "packed-refs"] {
        if let Some(p) = git(&["rev-parse", "--git-path", path]) {
            let p = PathBuf::from(p);
            if p.exists() {
                println!("cargo:rerun-if-changed={}", p.display());
            }
        }
    }
}

/// The short commit hash, or `unknown`.
fn commit() -> String {
    git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".to_owned())
}

/// The ref HEAD points at (`refs/heads/main`), or `HEAD` when detached.
fn symbolic_head() -> String {
    git(&["symbolic-ref", "-q", "HEAD"]).unwrap_or_else(|| "HEAD".to_owned())
}

/// `git ARGS` run in this crate's directory: its trimmed output, if it succeeded.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
}
