//! `turbo-node pair`: joins a runner's account from the browser, in the shape of the
//! OAuth 2.0 device authorization grant (the protocol is
//! [`turbo_proto::pairing`]). The node asks the server for a code, prints the page to
//! approve it at (and opens it on a desktop), polls, and returns the join string once
//! the runner approved.
//!
//! The join string holds the node's token, so it only travels over HTTPS (with the
//! system-independent webpki roots) or plain HTTP to this machine (`127.0.0.0/8`,
//! `::1`, `localhost`), for a server on the same host.

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use turbo_proto::pairing::{Next, PairingFailure, PollAnswer, Poller};

/// Why pairing stopped.
#[derive(Debug, thiserror::Error)]
pub enum PairError {
    /// The server URL is not `https://` (or plain `http://` to this machine).
    #[error("--server must be an https:// URL (or http:// to this machine): {0}")]
    Insecure(String),
    /// The server could not be reached or answered an error.
    #[error("pairing with {url} failed: {why}")]
    Http {
        /// What was called.
        url: String,
        /// What went wrong.
        why: String,
    },
    /// The server answered something that is not the pairing protocol.
    #[error("the server's pairing answer is malformed: {0}")]
    Malformed(String),
    /// Denied or expired.
    #[error(transparent)]
    Failed(#[from] PairingFailure),
}

/// Whether `url` may carry a node token: HTTPS, or HTTP to a loopback host.
pub fn secure_enough(url: &str) -> bool {
    if url.starts_with("https://") {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// What this machine says of itself: hostname and OS.
fn device() -> Value {
    let hostname = whoami::hostname().unwrap_or_else(|_| "unknown".into());
    let os = format!(
        "{} ({})",
        whoami::distro().unwrap_or_else(|_| std::env::consts::OS.into()),
        std::env::consts::ARCH
    );
    json!({"hostname": hostname, "os": os})
}

fn post(agent: &ureq::Agent, url: &str, body: &Value) -> Result<Value, PairError> {
    let failed = |why: String| PairError::Http {
        url: url.to_owned(),
        why,
    };
    match agent.post(url).send_json(body) {
        Ok(r) => r.into_json().map_err(|e| failed(e.to_string())),
        // Poll answers come as 400 with an RFC 8628 error code.
        Err(ureq::Error::Status(400, r)) => r.into_json().map_err(|e| failed(e.to_string())),
        Err(ureq::Error::Status(code, r)) => {
            let body: Value = r.into_json().unwrap_or_default();
            let why = body["error_description"]
                .as_str()
                .unwrap_or("no reason given");
            Err(failed(format!("HTTP {code}: {why}")))
        }
        Err(e) => Err(failed(e.to_string())),
    }
}

/// Reads one poll's answer.
fn answer(body: &Value) -> Result<PollAnswer, PairError> {
    if let Some(join) = body["join"].as_str() {
        return Ok(PollAnswer::Paired(join.to_owned()));
    }
    let code = body["error"].as_str().unwrap_or_default();
    PollAnswer::from_error_code(code).ok_or_else(|| PairError::Malformed(body.to_string()))
}

/// Opens `url` in the desktop's browser, if there is a desktop; never fails.
pub(crate) fn open_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") {
        Some(("open", vec![url]))
    } else if cfg!(windows) {
        Some(("cmd", vec!["/C", "start", "", url]))
    } else if std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some()
    {
        Some(("xdg-open", vec![url]))
    } else {
        None
    };
    if let Some((program, args)) = opener {
        let _ = std::process::Command::new(program)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
}

/// Pairs with the server at `server`, telling the runner what to do on `out`; the join
/// string once approved.
///
/// # Errors
/// [`PairError`].
pub fn pair(server: &str, open: bool, out: &mut impl Write) -> Result<String, PairError> {
    let server = server.trim_end_matches('/');
    if !secure_enough(server) {
        return Err(PairError::Insecure(server.to_owned()));
    }
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(15))
        .redirects(0)
        .build();
    let started = Instant::now();
    let start = post(&agent, &format!("{server}/api/pair/start"), &device())?;
    let field = |name: &str| {
        start[name]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| PairError::Malformed(format!("no {name}")))
    };
    let (device_code, user_code) = (field("device_code")?, field("user_code")?);
    let page = format!("{server}{}", field("verification_uri_complete")?);
    let secs = |name: &str| Duration::from_secs(start[name].as_u64().unwrap_or(5));
    let mut poller = Poller::new(secs("interval"), secs("expires_in"));
    let _ = writeln!(out, "To add this machine to your account, open\n  {page}\nsign in, and check the code {user_code}.");
    let _ = out.flush();
    if open {
        open_browser(&page);
    }
    let poll_url = format!("{server}/api/pair/poll");
    let mut next = poller.first();
    loop {
        match next {
            Next::PollIn(wait) => std::thread::sleep(wait),
            Next::Done(join) => return Ok(join),
            Next::Failed(f) => return Err(f.into()),
        }
        let body = post(&agent, &poll_url, &json!({"device_code": device_code}))?;
        next = poller.on_answer(answer(&body)?, started.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_travel_only_over_tls_or_to_this_machine() {
        for ok in [
            "https://turbo.example.com",
            "http://127.0.0.1:8080",
            "http://localhost:8080/",
            "http://[::1]:8080",
        ] {
            assert!(secure_enough(ok), "{ok}");
        }
        for bad in [
            "http://turbo.example.com",
            "http://192.168.1.5:8080",
            "http://127.0.0.1.evil.com",
            "ftp://127.0.0.1",
            "127.0.0.1:8080",
        ] {
            assert!(!secure_enough(bad), "{bad}");
        }
    }

    #[test]
    fn answers_read() {
        assert_eq!(
            answer(&json!({"join": "turbo://t@h:1"})).ok(),
            Some(PollAnswer::Paired("turbo://t@h:1".into()))
        );
        assert_eq!(
            answer(&json!({"error": "access_denied"})).ok(),
            Some(PollAnswer::Denied)
        );
        assert!(answer(&json!({"error": "teapot"})).is_err());
    }
}
