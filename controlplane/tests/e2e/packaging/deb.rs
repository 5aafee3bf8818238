//! The Debian packages: `scripts/build-deb` packs the binaries built here (the debug
//! ones, to keep the suite fast: the script's `--bin-dir`), dpkg installs them into a
//! throwaway root (`--root`, maintainer scripts run outside a chroot with
//! `DPKG_ROOT` set, as dpkg does for such roots), and the installed server starts
//! from the packaged config and answers `/healthz`. An edited conffile survives a
//! reinstall; a purge removes it and the state.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::{have, ports, repo, Proc};
use crate::fixtures::bin;

/// Runs `scripts/build-deb` on the binaries next to `turbo-server`; the two packages.
fn build(out: &Path) -> Vec<PathBuf> {
    let bins = bin("turbo-server").parent().expect("bin dir").to_owned();
    let res = Command::new(repo().join("scripts/build-deb"))
        .args(["--profile", "dev", "--bin-dir"])
        .arg(&bins)
        .arg("--out")
        .arg(out)
        .output()
        .expect("scripts/build-deb");
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let debs: Vec<PathBuf> = String::from_utf8_lossy(&res.stdout)
        .lines()
        .map(PathBuf::from)
        .collect();
    assert_eq!(debs.len(), 2, "{debs:?}");
    debs
}

/// `dpkg --root ROOT ARGS`, run as dpkg would run for an image build.
fn dpkg(root: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new("dpkg");
    cmd.arg(format!("--root={}", root.display()))
        .args(["--force-script-chrootless", "--log=/dev/null"]);
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        cmd.arg("--force-not-root");
    }
    let out = cmd.args(args).output().expect("dpkg");
    assert!(
        out.status.success(),
        "dpkg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// An empty dpkg database in `root` that knows the host's copies of the packages
/// `debs` depend on (libc6 and friends), so dpkg checks the Depends for real.
fn empty_root(root: &Path, debs: &[PathBuf]) {
    let admin = root.join("var/lib/dpkg");
    for d in ["info", "updates"] {
        std::fs::create_dir_all(admin.join(d)).expect("mkdir");
    }
    let mut names = Vec::new();
    for deb in debs {
        let out = Command::new("dpkg-deb")
            .args(["-f"])
            .arg(deb)
            .arg("Depends")
            .output();
        let depends = String::from_utf8_lossy(&out.expect("dpkg-deb -f").stdout).into_owned();
        for dep in depends.split(',') {
            let name = dep.split_whitespace().next().unwrap_or_default().to_owned();
            if !name.is_empty() && !names.contains(&name) {
                names.push(name);
            }
        }
    }
    let status = Command::new("dpkg-query").arg("-s").args(&names).output();
    let status = status.expect("dpkg-query");
    assert!(status.status.success(), "host lacks one of {names:?}");
    std::fs::write(admin.join("status"), status.stdout).expect("status");
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("installed")
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn packages_install_into_a_throwaway_root_and_serve() {
    if !have("dpkg-deb", &["--version"]) || !have("dpkg-shlibdeps", &["--version"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let debs = build(&dir.path().join("debs"));
    let root = dir.path().join("root");
    empty_root(&root, &debs);
    let paths: Vec<String> = debs
        .iter()
        .map(|d| d.to_string_lossy().into_owned())
        .collect();
    let mut install = vec!["-i"];
    install.extend(paths.iter().map(String::as_str));
    dpkg(&root, &install);

    assert_eq!(mode(&root.join("etc/turbo/server.env")), 0o600);
    assert_eq!(mode(&root.join("etc/turbo-node")), 0o700);
    assert!(root
        .join("lib/systemd/system/turbo-server.service")
        .exists());
    assert!(root.join("lib/systemd/system/turbo-node.service").exists());
    let conffiles = std::fs::read_to_string(root.join("var/lib/dpkg/info/turbo-server.conffiles"));
    assert_eq!(
        conffiles.expect("conffiles"),
        "/etc/turbo/server.toml\n/etc/turbo/server.env\n"
    );
    for name in ["turbo-server", "turbo-node"] {
        let out = Command::new(root.join("usr/bin").join(name))
            .arg("--version")
            .output()
            .expect("--version");
        let version = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(version.starts_with(&format!("{name} 0.")), "{version}");
        assert!(version.trim_end().ends_with(')'), "{version}");
    }

    serve_from_the_packaged_config(&root, dir.path());
    edited_config_survives_reinstall_and_purge_removes_it(&root, &paths[0]);
}

/// The installed server, on the packaged config with its listeners and state moved
/// by `TURBO_*` variables (the unit's StateDirectory is `/var/lib/turbo`; here it is
/// inside the root): `config check` names those sources, and the server serves.
fn serve_from_the_packaged_config(root: &Path, dir: &Path) {
    let ports = ports();
    let env = [
        ("TURBO_SOCKS_LISTEN", ports[0].clone()),
        ("TURBO_HTTP_LISTEN", ports[1].clone()),
        ("TURBO_QUIC_LISTEN", ports[2].clone()),
        ("TURBO_API_LISTEN", ports[3].clone()),
        (
            "TURBO_DATA_DIR",
            root.join("var/lib/turbo").to_string_lossy().into_owned(),
        ),
        ("TURBO_CORES", "1".to_owned()),
    ];
    let server = |args: &[&str]| {
        let mut cmd = Command::new(root.join("usr/bin/turbo-server"));
        cmd.args(args)
            .arg("--config")
            .arg(root.join("etc/turbo/server.toml"))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("NO_COLOR", "1");
        cmd
    };
    let out = server(&["config", "check"]).output().expect("config check");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |key: &str| {
        report
            .lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        line("api_listen").ends_with("# env TURBO_API_LISTEN"),
        "{report}"
    );
    assert!(
        line("data_dir").ends_with("# env TURBO_DATA_DIR"),
        "{report}"
    );
    assert!(line("store").ends_with("# default"), "{report}");

    let mut proc = Proc::spawn(server(&["run"]), dir.join("packaged.log"));
    proc.wait_healthy(&format!("http://{}", ports[3]));
    assert!(root.join("var/lib/turbo/admin-token").exists());
    let status = proc.terminate();
    assert!(
        status.success(),
        "SIGTERM drains and exits 0: {status}\n{}",
        proc.output()
    );
}

/// dpkg keeps an edited conffile when the package is installed again, and removes
/// it (and the state directory, through postrm) on purge.
fn edited_config_survives_reinstall_and_purge_removes_it(root: &Path, server_deb: &str) {
    let config = root.join("etc/turbo/server.toml");
    let edited = std::fs::read_to_string(&config).expect("config") + "cores = 1\n";
    std::fs::write(&config, &edited).expect("edit");
    dpkg(root, &["--force-confold", "-i", server_deb]);
    assert_eq!(std::fs::read_to_string(&config).expect("config"), edited);
    assert!(!root.join("etc/turbo/server.toml.dpkg-dist").exists());

    dpkg(root, &["--purge", "turbo-server"]);
    assert!(!config.exists(), "purge removes the conffile");
    assert!(
        !root.join("var/lib/turbo").exists(),
        "purge removes the state"
    );
    assert!(root.join("usr/bin/turbo-node").exists(), "turbo-node stays");
}

/// Every setting the packaged server.toml shows commented out is a real one with a
/// valid example: uncommented, the file passes `config check`, from the file.
#[test]
fn packaged_config_comments_name_real_settings() {
    let text = std::fs::read_to_string(repo().join("packaging/etc/server.toml")).expect("toml");
    let is_setting = |l: &str| {
        l.split_once(" = ").is_some_and(|(k, _)| {
            !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        })
    };
    let mut keys = Vec::new();
    let uncommented: String = text
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(setting) if is_setting(setting) => {
                keys.push(setting.split(" = ").next().unwrap_or_default().to_owned());
                format!("{setting}\n")
            }
            _ => format!("{l}\n"),
        })
        .collect();
    assert!(keys.len() >= 20, "{keys:?}");
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("server.toml");
    std::fs::write(&file, uncommented).expect("write");
    let out = Command::new(bin("turbo-server"))
        .args(["config", "check", "--config"])
        .arg(&file)
        .output()
        .expect("config check");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for key in keys {
        let line = report.lines().find(|l| l.starts_with(&format!("{key} = ")));
        assert!(
            line.is_some_and(|l| l.ends_with("# file")),
            "{key}: {report}"
        );
    }
}
