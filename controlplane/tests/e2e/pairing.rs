//! Pairing a node from the browser against a real server, with the real `turbo-node
//! pair`: approved, the node saves its join string, runs, and shows under that
//! runner's account; denied or expired, it says so and gets nothing; a spent code
//! finds nothing; and 10,000 guessed codes from one runner are stopped by the rate
//! limit with none accepted, while another runner still approves their own.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::fixtures::web::WebClient;
use crate::fixtures::{bin, Net, Options};

const PASSWORD: &str = "correct horse battery";

/// A running `turbo-node pair`, after it printed its code.
struct Pairing {
    child: Child,
    /// The rest of its standard output (kept open: it prints more).
    stdout: std::io::Lines<BufReader<std::process::ChildStdout>>,
    /// `/pair?code=…`.
    page: String,
    code: String,
    config: PathBuf,
}

impl Pairing {
    fn start(net: &Net, dir: &Path, name: &str) -> Pairing {
        Pairing::start_with(net, dir, name, &[])
    }

    /// Starts `turbo-node pair` with `flags` (the join flags it saves).
    fn start_with(net: &Net, dir: &Path, name: &str, flags: &[&str]) -> Pairing {
        let config = dir.join(format!("{name}.toml"));
        let mut child = Command::new(bin("turbo-node"))
            .args(["pair", "--no-open", "--server", &net.api])
            .args(flags)
            .env("TURBO_NODE_CONFIG", &config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn turbo-node pair");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut page = String::new();
        let code = loop {
            let line = lines
                .next()
                .expect("turbo-node pair printed its code")
                .expect("line");
            if let Some(at) = line.find(&format!("{}/pair?code=", net.api)) {
                page = line[at + net.api.len()..].trim().to_owned();
            }
            if let Some(rest) = line.split("check the code ").nth(1) {
                break rest.trim_end_matches('.').to_owned();
            }
        };
        assert!(page.ends_with(&code), "{page} {code}");
        Pairing {
            child,
            stdout: lines,
            page,
            code,
            config,
        }
    }

    /// Waits for the command to end: whether it succeeded (and said "paired"), and
    /// what it said on stderr.
    fn finish(mut self) -> (bool, String, PathBuf) {
        let said: Vec<String> = self.stdout.by_ref().map_while(Result::ok).collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            assert!(Instant::now() < deadline, "turbo-node pair did not end");
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut err = String::new();
        std::io::Read::read_to_string(&mut self.child.stderr.take().expect("stderr"), &mut err)
            .expect("stderr");
        let paired = said.iter().any(|l| l == "paired");
        assert_eq!(status.success(), paired, "{said:?} {err}");
        (status.success(), err, self.config)
    }
}

fn runner(net: &Net, email: &str) -> WebClient {
    let mut c = WebClient::new(&net.api);
    c.sign_up(email, PASSWORD, "runner");
    c
}

fn node_net(config: &str) -> Net {
    Net::start_with(Options {
        node: false,
        config: config.into(),
        ..Options::new("legacy")
    })
}

#[test]
fn a_node_pairs_from_the_browser_and_joins_its_runner() {
    let mut net = node_net("");
    let dir = tempfile::tempdir().expect("dir");
    let mut carol = runner(&net, "carol@example.com");
    // The join flags are saved with the join string: the node below runs from the
    // file alone, and reaches the loopback echo target only through `--allow-cidr`.
    let flags = ["--allow-cidr", "127.0.0.0/8", "--max-streams", "64"];
    let pairing = Pairing::start_with(&net, dir.path(), "desk", &flags);
    let page = carol.get(&pairing.page);
    assert_eq!(page.status, 200, "{}", page.body);
    let hostname = whoami::hostname().expect("hostname");
    assert!(
        page.body
            .contains(&format!("<dd id=\"hostname\">{hostname}</dd>")),
        "{}",
        page.body
    );
    assert!(page.body.contains("id=\"country\""), "the country row");
    let (code, page_path) = (pairing.code.clone(), pairing.page.clone());
    let approved = carol.submit(&page_path, "/pair/approve", &[("code", &code)]);
    assert_eq!(approved.status, 200);
    assert!(approved.body.contains("Approved"), "{}", approved.body);
    let (ok, err, config) = pairing.finish();
    assert!(ok, "turbo-node pair succeeded: {err}");
    let saved = std::fs::read_to_string(&config).expect("node.toml written");
    let join = saved
        .lines()
        .find_map(|l| l.strip_prefix("join = \""))
        .expect("a join line")
        .trim_end_matches('"')
        .to_owned();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&config)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "owner-only");
    }
    assert_eq!(
        carol.get(&page_path).status,
        404,
        "a spent code finds nothing"
    );

    let nodes = carol.get("/nodes");
    let at = nodes.body.find("<code>n_").expect("the node is carol's") + "<code>".len();
    let id = nodes.body[at..at + nodes.body[at..].find('<').expect("end")].to_owned();
    assert!(saved.contains("allow_cidrs = [\"127.0.0.0/8\"]"), "{saved}");
    assert!(saved.contains("max_streams = 64"), "{saved}");
    assert!(join.starts_with("turbo://"), "{saved}");
    let node = Command::new(bin("turbo-node"))
        .arg("run")
        .env("TURBO_NODE_CONFIG", &config)
        .env("TURBO_NODE_STATE", net.node_state(&id))
        .stdin(Stdio::null())
        .spawn()
        .expect("turbo-node run");
    net.nodes.push((id.clone(), node));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !carol
        .get("/nodes")
        .body
        .contains(&format!("data-online=\"{id}\">online"))
    {
        assert!(Instant::now() < deadline, "the paired node came online");
        std::thread::sleep(Duration::from_millis(100));
    }
    let dave = runner(&net, "dave@example.com").get("/nodes");
    assert!(!dave.body.contains(&id), "not dave's");
    net.echo_once(crate::fixtures::targets::echo().port());
}

#[test]
fn denied_expired_and_guessed_codes_get_nothing() {
    let net = node_net("pair_code_ttl = \"4s\"\n");
    let dir = tempfile::tempdir().expect("dir");
    let mut carol = runner(&net, "carol@example.com");

    let denied = Pairing::start(&net, dir.path(), "denied");
    let (page, code) = (denied.page.clone(), denied.code.clone());
    let answer = carol.submit(&page, "/pair/deny", &[("code", &code)]);
    assert!(answer.body.contains("Denied"), "{}", answer.body);
    let (ok, err, config) = denied.finish();
    assert!(!ok && err.contains("denied"), "{err}");
    assert!(!config.exists(), "nothing saved");

    let expired = Pairing::start(&net, dir.path(), "expired");
    let page = expired.page.clone();
    let (ok, err, config) = expired.finish();
    assert!(!ok && err.contains("expired"), "{err}");
    assert!(!config.exists(), "nothing saved");
    assert_eq!(
        carol.get(&page).status,
        404,
        "an expired code finds nothing"
    );

    let poll = ureq::post(&format!("{}/api/pair/poll", net.api))
        .send_json(serde_json::json!({"device_code": "made-up"}));
    let Err(ureq::Error::Status(400, r)) = poll else {
        panic!("an unknown device code is refused");
    };
    let body: serde_json::Value = r.into_json().expect("json");
    assert_eq!(body["error"], "expired_token");
}

/// 10,000 guesses from one runner while a real request waits: 20 find nothing, the
/// rest are refused, none is accepted; the real request's runner still approves it.
/// (The default code lifetime: the guesses take longer than a short test TTL on a
/// busy machine.)
#[test]
fn guesses_are_stopped() {
    let net = node_net("");
    let dir = tempfile::tempdir().expect("dir");
    let mut carol = runner(&net, "carol@example.com");
    let real = Pairing::start(&net, dir.path(), "real");
    let mut mallory = runner(&net, "mallory@example.com");
    let mut statuses = std::collections::BTreeMap::new();
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for _ in 0..10_000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let letters: String = (0..8)
            .map(|i| char::from(b"BCDFGHJKLMNPQRSTVWXZ"[((seed >> (i * 5)) % 20) as usize]))
            .collect();
        let status = mallory.get(&format!("/pair?code={letters}")).status;
        *statuses.entry(status).or_insert(0u32) += 1;
    }
    assert_eq!(statuses.get(&200), None, "no guess accepted: {statuses:?}");
    assert_eq!(statuses.get(&404), Some(&20), "{statuses:?}");
    assert_eq!(statuses.get(&429), Some(&9_980), "{statuses:?}");
    let (page, code) = (real.page.clone(), real.code.clone());
    let approved = carol.submit(&page, "/pair/approve", &[("code", &code)]);
    assert!(approved.body.contains("Approved"), "{}", approved.body);
    let (ok, err, _) = real.finish();
    assert!(ok, "{err}");
}
