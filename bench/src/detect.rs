//! The abuse detector's evaluation: real customers through a real server and node to
//! loopback sites (each on its own 127.0.S.1, so each is its own site), normal ones
//! (browsing-like, API-like) and labelled abuse (credential stuffing, port scanning,
//! SMTP, a scraping burst, a key shared by hundreds of sessions, slow exfiltration).
//! After a warm-up that trains the model, the abuse starts at once; the report gives,
//! per pattern, the windows flagged (precision and recall over the key's windows with
//! traffic), the first action and how long it took, and the false-positive rate on the
//! normal customers.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::socks::{self, Auth};

/// What one evaluation run does.
#[derive(Debug, Clone)]
pub struct Eval {
    /// The detector's window (the server must be configured with [`Eval::server_toml`]).
    pub window: Duration,
    /// Windows of normal traffic before the abuse starts.
    pub warmup_windows: u32,
    /// Windows the abuse runs.
    pub attack_windows: u32,
    /// Browsing-like customers.
    pub browsing: usize,
    /// API-like customers.
    pub api: usize,
    /// Judge by the model alone (the server's hard rules off).
    pub model_only: bool,
}

impl Eval {
    /// A run that fits in a test: 2 s windows, 8 of warm-up, 4 of abuse.
    pub fn quick() -> Eval {
        Eval {
            window: Duration::from_secs(2),
            warmup_windows: 8,
            attack_windows: 4,
            browsing: 12,
            api: 6,
            model_only: false,
        }
    }

    /// The server's `[detect]` table for this run: short windows, thresholds scaled
    /// to the generator's rates.
    pub fn server_toml(&self) -> String {
        let ms = self.window.as_millis();
        format!(
            "[detect]\nwindow = \"{ms}ms\"\ngrace = \"{}ms\"\nmin_history = 100\n\
             stuffing_per_min = 600.0\nburst_per_sec = 30.0\nshared_sessions = 40\n\
             exfil_bytes_per_min = 1048576\nthrottle_bytes_per_sec = {THROTTLE_BYTES}\nrules = {}\n",
            ms / 4,
            !self.model_only
        )
    }
}

/// The kinds of customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pattern {
    /// Pages of a few connections to varied sites, with pauses.
    Browsing,
    /// Small requests to one API at a steady pace.
    Api,
    /// Many small POST-shaped exchanges to one login site, identical answers.
    Stuffing,
    /// Connections to a hundred ports of one host.
    PortScan,
    /// Connections to port 25.
    Smtp,
    /// Browsing during the warm-up, then many parallel fetches.
    ScrapingBurst,
    /// Every connection with a new sticky session.
    SharedKey,
    /// Long uploads with almost nothing back.
    Exfiltration,
}

impl Pattern {
    /// Normal customers are not abuse.
    pub fn is_abuse(self) -> bool {
        !matches!(self, Pattern::Browsing | Pattern::Api)
    }

    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Pattern::Browsing => "normal browsing",
            Pattern::Api => "normal API",
            Pattern::Stuffing => "credential stuffing",
            Pattern::PortScan => "port scan",
            Pattern::Smtp => "SMTP",
            Pattern::ScrapingBurst => "scraping burst",
            Pattern::SharedKey => "shared key",
            Pattern::Exfiltration => "slow exfiltration",
        }
    }
}

/// The sites: `127.0.S.1:PORT`.
#[derive(Debug, Clone)]
pub struct Sites {
    /// Browsing targets.
    pub web: Vec<SocketAddr>,
    /// The API.
    pub api: SocketAddr,
    /// The login form.
    pub login: SocketAddr,
    /// Takes uploads.
    pub sink: SocketAddr,
    /// Answers [`BULK`] bytes (for byte limits).
    pub bulk: SocketAddr,
}

/// The byte limit of a throttle in the evaluation.
pub const THROTTLE_BYTES: usize = 128 * 1024;

/// What the bulk site answers.
pub const BULK: usize = 384 * 1024;

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Serves `answer(request)` on `ip`: reads a request up to a blank line (or EOF), writes
/// what `answer` gives, closes.
fn serve(ip: [u8; 4], answer: fn(usize) -> usize) -> Result<SocketAddr> {
    let listener =
        TcpListener::bind(SocketAddr::from((ip, 0))).with_context(|| format!("bind {ip:?}"))?;
    let addr = listener.local_addr()?;
    thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            thread::spawn(move || answer_one(conn, answer));
        }
    });
    Ok(addr)
}

fn answer_one(mut conn: TcpStream, answer: fn(usize) -> usize) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let (mut buf, mut got) = ([0u8; 16 * 1024], Vec::new());
    while let Ok(n) = conn.read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if got.ends_with(b"\r\n\r\n") {
            break;
        }
    }
    let size = answer(got.len());
    let _ = conn.write_all(&vec![b'x'; size]);
}

fn random(lo: usize, hi: usize) -> usize {
    lo + (rand_u64() as usize) % (hi - lo).max(1)
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(unix_ms());
    h.finish()
}

/// Starts the sites.
///
/// # Errors
/// When a loopback address cannot be bound.
pub fn start_sites() -> Result<Sites> {
    let web = (10..18)
        .map(|s| serve([127, 0, s, 1], |_| random(2_000, 60_000)))
        .collect::<Result<Vec<_>>>()?;
    Ok(Sites {
        web,
        api: serve([127, 0, 20, 1], |_| random(200, 3_000))?,
        login: serve([127, 0, 30, 1], |_| 250)?,
        sink: serve([127, 0, 40, 1], |_| 2)?,
        bulk: serve([127, 0, 41, 1], |_| BULK)?,
    })
}

/// One customer's key, id and what it did.
struct Customer {
    pattern: Pattern,
    key_id: String,
    auth: Auth,
    /// Windows (Unix ms / window) in which it completed an exchange.
    windows: Mutex<BTreeSet<u64>>,
}

/// One exchange: connect through the proxy, send `up` bytes (ending in a blank line),
/// read the answer to its end. Returns the bytes read.
fn exchange(proxy: SocketAddr, auth: &Auth, target: SocketAddr, up: usize) -> Result<usize> {
    let mut s = socks::connect(proxy, Some(auth), target)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req = vec![b'p'; up.saturating_sub(4)];
    req.extend_from_slice(b"\r\n\r\n");
    s.write_all(&req)?;
    let mut got = Vec::new();
    s.read_to_end(&mut got)?;
    Ok(got.len())
}

/// Where customers send traffic and when the abuse starts.
struct Ctx {
    proxy: SocketAddr,
    sites: Sites,
    window_ms: u64,
    attack_from_ms: u64,
    stop: AtomicBool,
}

impl Ctx {
    fn attacking(&self) -> bool {
        unix_ms() >= self.attack_from_ms
    }

    fn pause(&self, ms: u64) {
        thread::sleep(Duration::from_millis(ms));
    }

    /// Runs `step` until the run stops (abuse only once the attack started), noting
    /// the windows in which an exchange completed.
    /// The scraper's first thread browses during the warm-up; every other abuse
    /// thread waits for the attack.
    fn drive(&self, c: &Customer, thread: usize, mut step: impl FnMut(&Ctx, &Auth) -> Option<u64>) {
        let waits = c.pattern.is_abuse() && !(c.pattern == Pattern::ScrapingBurst && thread == 0);
        while !self.stop.load(Relaxed) {
            if waits && !self.attacking() {
                self.pause(50);
                continue;
            }
            match step(self, &c.auth) {
                Some(pause) => {
                    let w = unix_ms() / self.window_ms;
                    c.windows
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(w);
                    self.pause(pause);
                }
                None => self.pause(20),
            }
        }
    }
}

fn browse(ctx: &Ctx, auth: &Auth) -> Option<u64> {
    let site = ctx.sites.web[random(0, ctx.sites.web.len())];
    let mut ok = false;
    for _ in 0..random(1, 4) {
        ok |= exchange(ctx.proxy, auth, site, random(300, 700)).is_ok();
    }
    ok.then(|| random(150, 700) as u64)
}

fn call_api(ctx: &Ctx, auth: &Auth) -> Option<u64> {
    let ok = exchange(ctx.proxy, auth, ctx.sites.api, random(150, 600)).is_ok();
    ok.then(|| random(150, 400) as u64)
}

fn stuff(ctx: &Ctx, auth: &Auth) -> Option<u64> {
    let ok = exchange(ctx.proxy, auth, ctx.sites.login, random(400, 600)).is_ok();
    ok.then_some(25)
}

/// Tries the next port of the scanned host; a refused port is what a scan sees.
fn scan(ctx: &Ctx, auth: &Auth, port: &mut u16) -> Option<u64> {
    *port = if *port >= 2100 { 2000 } else { *port + 1 };
    let target = SocketAddr::from(([127, 0, 50, 1], *port));
    let _ = socks::connect(ctx.proxy, Some(auth), target);
    Some(25)
}

fn smtp(ctx: &Ctx, auth: &Auth) -> Option<u64> {
    let _ = socks::connect(
        ctx.proxy,
        Some(auth),
        SocketAddr::from(([127, 0, 60, 1], 25)),
    );
    Some(200)
}

fn scrape(ctx: &Ctx, auth: &Auth) -> Option<u64> {
    if !ctx.attacking() {
        return browse(ctx, auth);
    }
    let site = ctx.sites.web[random(0, ctx.sites.web.len())];
    exchange(ctx.proxy, auth, site, 400).ok().map(|_| 10)
}

fn share(ctx: &Ctx, auth: &Auth) -> Option<u64> {
    let auth = Auth {
        user: format!("bench-session-s{}", rand_u64() % 1_000_000),
        pass: auth.pass.clone(),
    };
    let site = ctx.sites.web[random(0, ctx.sites.web.len())];
    exchange(ctx.proxy, &auth, site, 400).ok().map(|_| 20)
}

/// One upload connection of about 1.5 s at about 100 KB/s.
fn exfiltrate(ctx: &Ctx, auth: &Auth) -> Option<u64> {
    let mut s = socks::connect(ctx.proxy, Some(auth), ctx.sites.sink).ok()?;
    for _ in 0..15 {
        s.write_all(&[b'e'; 10_000]).ok()?;
        ctx.pause(100);
    }
    s.write_all(b"\r\n\r\n").ok()?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).ok()?;
    Some(0)
}

/// Each pattern's customers and threads: (pattern, threads).
fn mix(e: &Eval) -> Vec<(Pattern, usize)> {
    let mut m = vec![(Pattern::Browsing, 1); e.browsing];
    m.extend(vec![(Pattern::Api, 1); e.api]);
    m.extend([
        (Pattern::Stuffing, 1),
        (Pattern::PortScan, 1),
        (Pattern::Smtp, 1),
        (Pattern::ScrapingBurst, 8),
        (Pattern::SharedKey, 1),
        (Pattern::Exfiltration, 1),
    ]);
    m
}

fn customer_loop(ctx: &Ctx, c: &Customer, thread: usize) {
    match c.pattern {
        Pattern::Browsing => ctx.drive(c, thread, browse),
        Pattern::Api => ctx.drive(c, thread, call_api),
        Pattern::Stuffing => ctx.drive(c, thread, stuff),
        Pattern::PortScan => {
            let mut port = 2000;
            ctx.drive(c, thread, |ctx, a| scan(ctx, a, &mut port));
        }
        Pattern::Smtp => ctx.drive(c, thread, smtp),
        Pattern::ScrapingBurst => ctx.drive(c, thread, scrape),
        Pattern::SharedKey => ctx.drive(c, thread, share),
        Pattern::Exfiltration => ctx.drive(c, thread, exfiltrate),
    }
}

/// The API a run talks to.
#[derive(Debug, Clone)]
pub struct Api {
    /// Base URL.
    pub base: String,
    /// Admin token.
    pub token: String,
}

impl Api {
    fn create_key(&self) -> Result<(String, String)> {
        let v: Value = ureq::post(&format!("{}/api/keys", self.base))
            .set("Authorization", &format!("Bearer {}", self.token))
            .send_json(serde_json::json!({"name": "detect", "credits": "100GB"}))?
            .into_json()?;
        let field = |f: &str| v[f].as_str().map(str::to_owned).context("key field");
        Ok((field("id")?, field("key")?))
    }

    /// Waits until every window that started before `until_ms` has been scored.
    ///
    /// # Errors
    /// When that takes longer than `patience`.
    pub fn wait_scored(&self, until_ms: u64, patience: Duration) -> Result<()> {
        let deadline = std::time::Instant::now() + patience;
        loop {
            let v: Value = ureq::get(&format!("{}/api/detector", self.base))
                .set("Authorization", &format!("Bearer {}", self.token))
                .call()?
                .into_json()?;
            if v["scored_before_ms"].as_u64().unwrap_or(0) >= until_ms {
                return Ok(());
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "the detector did not score the last windows: {v}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every verdict.
    ///
    /// # Errors
    /// When the API does not answer.
    pub fn verdicts(&self) -> Result<Vec<Value>> {
        let v: Value = ureq::get(&format!("{}/api/verdicts", self.base))
            .set("Authorization", &format!("Bearer {}", self.token))
            .call()?
            .into_json()?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }
}

/// One customer as a run saw it.
pub struct Seen {
    /// What it did.
    pub pattern: Pattern,
    /// Its key's id.
    pub key_id: String,
    /// Its key.
    pub secret: String,
    /// Windows (Unix ms / window) in which it completed an exchange.
    pub windows: BTreeSet<u64>,
}

/// What a run saw: every customer and every verdict.
pub struct Outcome {
    /// The customers.
    pub customers: Vec<Seen>,
    /// The sites they reached.
    pub sites: Sites,
    /// The verdicts, as the API lists them.
    pub verdicts: Vec<Value>,
    /// When the abuse started, Unix ms.
    pub attack_from_ms: u64,
    /// The window, ms.
    pub window_ms: u64,
}

/// Runs the evaluation against the proxy at `proxy` (SOCKS5) and its API.
///
/// # Errors
/// When the sites cannot start or the API refuses.
pub fn run(proxy: SocketAddr, api: &Api, e: &Eval) -> Result<Outcome> {
    let sites = start_sites()?;
    let window_ms = e.window.as_millis() as u64;
    let mut customers = Vec::new();
    for (pattern, threads) in mix(e) {
        let (key_id, pass) = api.create_key()?;
        let user = "bench".to_owned();
        let c = Arc::new(Customer {
            pattern,
            key_id,
            auth: Auth { user, pass },
            windows: Mutex::default(),
        });
        customers.push((c, threads));
    }
    // The attack starts on a window boundary after the warm-up.
    let start = unix_ms() / window_ms * window_ms + window_ms;
    let attack_from_ms = start + u64::from(e.warmup_windows) * window_ms;
    let end_ms = attack_from_ms + u64::from(e.attack_windows) * window_ms;
    let ctx = Arc::new(Ctx {
        proxy,
        sites: sites.clone(),
        window_ms,
        attack_from_ms,
        stop: AtomicBool::new(false),
    });
    let mut handles = Vec::new();
    for (c, threads) in &customers {
        for t in 0..*threads {
            let (ctx, c) = (ctx.clone(), c.clone());
            handles.push(thread::spawn(move || customer_loop(&ctx, &c, t)));
        }
    }
    thread::sleep(Duration::from_millis(end_ms.saturating_sub(unix_ms())));
    ctx.stop.store(true, Relaxed);
    for h in handles {
        let _ = h.join();
    }
    // Connections that ended after the run belong to the window after it.
    api.wait_scored(end_ms + window_ms, e.window * 10)?;
    let customers = customers
        .iter()
        .map(|(c, _)| Seen {
            pattern: c.pattern,
            key_id: c.key_id.clone(),
            secret: c.auth.pass.clone(),
            windows: c.windows.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        })
        .collect();
    Ok(Outcome {
        customers,
        sites,
        verdicts: api.verdicts()?,
        attack_from_ms,
        window_ms,
    })
}
