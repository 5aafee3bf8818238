//! `scripts/demo` keeps its data out of the checkout: run (with a turbo-server
//! already built, `TURBO_DEMO_BIN`) and stopped in a git checkout of its own, it
//! leaves `git status --porcelain` empty, and its data is in
//! `$XDG_STATE_HOME/turbo-demo`, which it prints.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use super::{have, ports, repo, Proc};
use crate::fixtures::{bin, curl};

/// `git ARGS` in `dir`; its stdout.
fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Sends each line of `from` that starts with `prefix` (after blanks), and keeps reading the
/// rest so that the writer never blocks on a full pipe.
fn first_line_then_drain(
    from: impl std::io::Read + Send + 'static,
    prefix: &'static str,
) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            if line.trim_start().starts_with(prefix) {
                let _ = tx.send(line);
            }
        }
    });
    rx
}

#[test]
fn demo_script_leaves_the_checkout_clean() {
    if !have("git", &["--version"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let checkout = dir.path().join("checkout");
    std::fs::create_dir_all(checkout.join("scripts")).expect("mkdir");
    for f in ["scripts/demo", ".gitignore"] {
        std::fs::copy(repo().join(f), checkout.join(f)).expect("copy");
    }
    git(&checkout, &["init", "-q"]);
    git(&checkout, &["add", "."]);
    git(&checkout, &["commit", "-q", "-m", "demo"]);

    let state = dir.path().join("state");
    let [socks, http, quic, api] = ports();
    let mut cmd = Command::new(checkout.join("scripts/demo"));
    cmd.args(["--socks-listen", &socks, "--http-listen", &http])
        .args(["--quic-listen", &quic, "--api-listen", &api])
        .env("TURBO_DEMO_BIN", bin("turbo-server"))
        .env("XDG_STATE_HOME", &state)
        .env_remove("TURBO_DEMO_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("scripts/demo");
    let curl_line =
        first_line_then_drain(child.stdout.take().expect("stdout"), "curl -x socks5h://");
    let said = first_line_then_drain(child.stderr.take().expect("stderr"), "demo: data in ");
    let mut demo = Proc {
        child,
        log: dir.path().join("demo.log"),
    };
    let said = said.recv().expect("the script says where the data goes");
    let data = state.join("turbo-demo");
    assert_eq!(said, format!("demo: data in {}", data.display()));
    let line = curl_line.recv().expect("demo printed a curl line");
    let curl_args: Vec<&str> = line.split_whitespace().skip(1).collect();
    let out = curl(&curl_args);
    assert!(String::from_utf8_lossy(&out.stdout).contains("came through a node"));
    assert!(
        demo.terminate().success(),
        "the demo stops cleanly on SIGTERM"
    );

    assert!(
        data.join("admin-token").exists(),
        "data went to {}",
        data.display()
    );
    assert_eq!(git(&checkout, &["status", "--porcelain", "--ignored"]), "");
}
