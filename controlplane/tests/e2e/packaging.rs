//! Self-hosting: the systemd units (`packaging/systemd/`), the Debian packages
//! (`scripts/build-deb`), the container files (`Dockerfile`, `compose.yaml`) and the
//! demo script, each checked the way an operator would meet it.
//!
//! Tools a developer machine may lack (systemd-analyze, dpkg-deb, python3-seccomp,
//! python3-yaml) make a test skip with the reason printed; under `CI` (set by
//! `.ci/run`) a missing tool fails the test, since `scripts/setup` installs them all.

mod compose;
mod deb;
mod demo;
mod units;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

use crate::fixtures::netns::in_ci;
use crate::fixtures::wait_for;

/// The workspace root (the checkout).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

/// Whether `program args…` runs and succeeds here; when not, prints why the test is
/// skipped, or fails it under CI.
pub fn have(program: &str, args: &[&str]) -> bool {
    let ok = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            !in_ci(),
            "CI must have `{program} {}` (scripts/setup)",
            args.join(" ")
        );
        eprintln!(
            "skipped: `{program} {}` is unavailable here",
            args.join(" ")
        );
    }
    ok
}

/// A process a test started, its stdout and stderr in `log`; killed when dropped.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with its output in `log`.
    pub fn spawn(mut cmd: Command, log: PathBuf) -> Proc {
        let file = std::fs::File::create(&log).expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("spawn");
        Proc { child, log }
    }

    /// What it wrote so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) on a child this test started and has not reaped.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let child = &mut self.child;
        wait_for("the process to exit after SIGTERM", || {
            child.try_wait().expect("wait")
        })
    }

    /// Waits until `GET {api}/healthz` answers 200; fails at once, with the log, when
    /// the process exited instead.
    pub fn wait_healthy(&mut self, api: &str) {
        let url = format!("{api}/healthz");
        let (child, log) = (&mut self.child, &self.log);
        wait_for(&format!("{url} to answer"), || {
            if let Ok(Some(status)) = child.try_wait() {
                let out = std::fs::read_to_string(log).unwrap_or_default();
                panic!("exited before it was ready ({status}):\n{out}");
            }
            ureq::get(&url).call().ok().filter(|r| r.status() == 200)
        });
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Four free loopback addresses: SOCKS5, HTTP, QUIC and API.
pub fn ports() -> [String; 4] {
    std::array::from_fn(|_| format!("127.0.0.1:{}", crate::fixtures::free_port()))
}

/// `turbo-server run` flags for `ports` with one core and `data` as data directory.
pub fn listen_args(ports: &[String; 4], data: &Path) -> Vec<String> {
    let [socks, http, quic, api] = ports;
    [
        "--socks-listen",
        socks,
        "--http-listen",
        http,
        "--quic-listen",
        quic,
        "--api-listen",
        api,
        "--cores",
        "1",
        "--data-dir",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain(std::iter::once(data.to_string_lossy().into_owned()))
    .collect()
}

/// POSTs `body` to the API at `api` with the admin token in `data`.
pub fn admin_post(
    api: &str,
    data: &Path,
    path: &str,
    body: serde_json::Value,
) -> serde_json::Value {
    let token = std::fs::read_to_string(data.join("admin-token")).expect("admin token");
    ureq::post(&format!("{api}{path}"))
        .set("Authorization", &format!("Bearer {}", token.trim()))
        .send_json(body)
        .expect("API answers")
        .into_json()
        .expect("JSON")
}
