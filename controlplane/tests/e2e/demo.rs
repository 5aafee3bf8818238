//! The README's demo command works as printed: `turbo-server demo` comes up on its
//! own and its curl line fetches the demo page through the embedded node.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::fixtures::{bin, free_port};

#[test]
fn demo_prints_a_working_curl_line() {
    let dir = tempfile::tempdir().expect("tmp");
    let port = |_| format!("127.0.0.1:{}", free_port());
    let mut demo = Command::new(bin("turbo-server"))
        .arg("demo")
        .args(["--socks-listen", &port(0), "--http-listen", &port(1)])
        .args(["--quic-listen", &port(2), "--api-listen", &port(3)])
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn demo");
    let stdout = demo.stdout.take().expect("stdout");
    let line = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.trim_start().starts_with("curl -x socks5h://"))
        .expect("demo printed a curl line");
    let args: Vec<&str> = line.split_whitespace().skip(1).collect();
    let out = Command::new("curl")
        .arg("-sS")
        .args(&args)
        .output()
        .expect("curl");
    let _ = demo.kill();
    let _ = demo.wait();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("came through a node"));
}
