//! `compose.yaml` and the `Dockerfile`: no Docker engine runs on the test machines, so
//! the compose file is validated against the Compose schema by `docker compose
//! config` (or Debian's `docker-compose`), and its structure is checked here: the
//! server starts after healthy Redis and PostgreSQL, uses both, keeps its state in a
//! volume, is health-checked on `/healthz`, and publishes the dashboard on loopback.

use std::process::Command;

use serde_json::Value;

use super::{have, repo};
use crate::fixtures::netns::in_ci;

/// `compose.yaml` as JSON (through PyYAML).
fn compose() -> Option<Value> {
    let script = "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)";
    if !have("/usr/bin/python3", &["-c", "import yaml"]) {
        return None;
    }
    let out = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .arg(repo().join("compose.yaml"))
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("JSON"))
}

#[test]
fn compose_file_passes_the_compose_schema() {
    let file = repo().join("compose.yaml");
    let attempts: [&[&str]; 2] = [&["docker", "compose"], &["docker-compose"]];
    for cmd in attempts {
        let (program, pre) = cmd.split_first().expect("program");
        let probe = Command::new(program).args(pre).arg("version").output();
        if !probe.is_ok_and(|o| o.status.success()) {
            continue;
        }
        let out = Command::new(program)
            .args(pre)
            .arg("-f")
            .arg(&file)
            .args(["config", "-q"])
            .output()
            .expect("compose config");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    assert!(!in_ci(), "CI must have docker-compose (scripts/setup)");
    eprintln!("skipped: neither `docker compose` nor `docker-compose` is here");
}

#[test]
fn compose_runs_the_server_with_redis_and_postgres() {
    let Some(c) = compose() else { return };
    let s = &c["services"];
    let turbo = &s["turbo"];
    assert_eq!(turbo["build"], ".");
    for dep in ["redis", "postgres"] {
        assert_eq!(
            turbo["depends_on"][dep]["condition"], "service_healthy",
            "{dep}"
        );
        assert!(
            s[dep]["healthcheck"]["test"].is_array(),
            "{dep} health check"
        );
    }
    let env = &turbo["environment"];
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    assert!(text(&env["TURBO_STORE"]).starts_with("redis://redis:6379/"));
    assert!(text(&env["TURBO_LEDGER"]).contains("@postgres:5432/turbo"));
    assert_eq!(env["TURBO_API_LISTEN"], "0.0.0.0:9090");
    let health = turbo["healthcheck"]["test"].to_string();
    assert!(health.contains("http://127.0.0.1:9090/healthz"), "{health}");
    let ports: Vec<String> = turbo["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(text)
        .collect();
    for p in [
        "1080:1080/tcp",
        "8080:8080/tcp",
        "8443:8443/udp",
        "127.0.0.1:9090:9090/tcp",
    ] {
        assert!(ports.iter().any(|q| q == p), "{p} in {ports:?}");
    }
    // Every named volume a service mounts is declared, and the state has one.
    let declared = c["volumes"].as_object().expect("volumes");
    for (name, svc) in s.as_object().expect("services") {
        for v in svc["volumes"].as_array().into_iter().flatten() {
            let source = text(v).split(':').next().unwrap_or_default().to_owned();
            assert!(declared.contains_key(&source), "{name}: volume {source}");
        }
    }
    assert!(turbo["volumes"].to_string().contains(":/var/lib/turbo"));
}

#[test]
fn dockerfile_builds_with_the_toolchain_and_runs_unprivileged() {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(froms.len(), 2, "multi-stage: {froms:?}");
    // The build stage uses the Rust release this machine builds with.
    let rustc = Command::new("rustc")
        .arg("--version")
        .output()
        .expect("rustc");
    let version = String::from_utf8_lossy(&rustc.stdout).into_owned();
    let minor: String = version
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .split('.')
        .take(2)
        .collect::<Vec<_>>()
        .join(".");
    assert!(
        froms[0].starts_with(&format!("FROM rust:{minor}-")),
        "{} vs {version}",
        froms[0]
    );
    assert!(froms[1].contains("-slim"), "slim run stage: {}", froms[1]);
    let run_stage = &text[text.rfind("\nFROM ").expect("run stage")..];
    let user = run_stage
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "));
    assert!(
        user.is_some_and(|u| u != "root" && u != "0"),
        "non-root USER"
    );
    assert!(run_stage.contains("COPY packaging/etc/server.toml /etc/turbo/server.toml"));
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).expect(".dockerignore");
    assert!(
        ignore.lines().any(|l| l == "target/"),
        "the build context leaves out target/"
    );
}
