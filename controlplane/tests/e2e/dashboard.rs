//! The dashboard's accounts and their boundaries, over real HTTP: a customer never
//! sees or revokes another customer's keys, a runner another runner's nodes, and roles
//! keep to their pages; forms without their CSRF token are refused with 403; 20 wrong
//! passwords lock sign-in for that email (and only that one), and ten sign-ups lock
//! sign-up for that address (and only that one); session cookies carry
//! HttpOnly, SameSite=Lax and, when configured, Secure; `users create` prints a
//! one-time password that signs in.

use crate::fixtures::web::WebClient;
use crate::fixtures::{Net, Options};

const PASSWORD: &str = "correct horse battery";

fn net() -> Net {
    Net::start_with(Options {
        node: false,
        ..Options::new("legacy")
    })
}

/// The id of the key a `/keys` page just created (the first `k_…` id shown).
fn created_key_id(body: &str) -> String {
    let at = body.find("<code>k_").expect("a key id on the page") + "<code>".len();
    body[at..at + body[at..].find('<').expect("end")].to_owned()
}

#[test]
fn customers_and_runners_see_only_their_own() {
    let net = net();
    let mut alice = WebClient::new(&net.api);
    let mut bob = WebClient::new(&net.api);
    alice.sign_up("alice@example.com", PASSWORD, "customer");
    bob.sign_up("bob@example.com", PASSWORD, "customer");
    let created = alice.submit("/keys", "/keys", &[("name", "scraper")]);
    assert_eq!(created.status, 200);
    assert!(created.body.contains("tk_"), "the key is shown once");
    let id = created_key_id(&created.body);
    let again = alice.get("/keys");
    assert!(
        again.body.contains(&id) && !again.body.contains("tk_"),
        "shown once only"
    );

    let bobs = bob.get("/keys");
    assert!(!bobs.body.contains(&id), "bob does not see alice's key");
    let csrf = bobs.csrf().expect("csrf");
    let revoke = bob.post(&format!("/keys/{id}/revoke"), &[("csrf", &csrf)]);
    assert_eq!(revoke.status, 404, "another's key is not there");
    assert_eq!(net.api_get(&format!("/api/keys/{id}"))["revoked"], false);
    let own = alice.submit("/keys", &format!("/keys/{id}/revoke"), &[]);
    assert_eq!(own.status, 303);
    assert_eq!(net.api_get(&format!("/api/keys/{id}"))["revoked"], true);

    let mut carol = WebClient::new(&net.api);
    let mut dave = WebClient::new(&net.api);
    carol.sign_up("carol@example.com", PASSWORD, "runner");
    dave.sign_up("dave@example.com", PASSWORD, "runner");
    let added = carol.submit("/nodes", "/nodes", &[]);
    assert!(
        added.body.contains("turbo-node run --join "),
        "{}",
        added.body
    );
    let node = {
        let at = added.body.find("<code>n_").expect("node id") + "<code>".len();
        added.body[at..at + added.body[at..].find('<').expect("end")].to_owned()
    };
    assert!(
        !dave.get("/nodes").body.contains(&node),
        "dave does not see carol's node"
    );
    for path in ["/keys", "/admin"] {
        assert_eq!(carol.get(path).status, 403, "a runner on {path}");
    }
    for path in ["/nodes", "/admin"] {
        assert_eq!(alice.get(path).status, 403, "a customer on {path}");
    }
    let mut stranger = WebClient::new(&net.api);
    for path in ["/keys", "/nodes", "/admin", "/events"] {
        let p = stranger.get(path);
        assert_eq!(
            (p.status, p.location.as_deref()),
            (303, Some("/login")),
            "{path}"
        );
    }
}

#[test]
fn forms_without_their_csrf_token_are_refused() {
    let net = net();
    let mut alice = WebClient::new(&net.api);
    alice.sign_up("alice@example.com", PASSWORD, "customer");
    assert_eq!(alice.post("/keys", &[("name", "x")]).status, 403);
    assert_eq!(
        alice
            .post("/keys", &[("name", "x"), ("csrf", "forged")])
            .status,
        403
    );
    assert_eq!(alice.post("/logout", &[]).status, 403);
    assert!(
        !alice.get("/keys").body.contains("<code>k_"),
        "no key was made"
    );
    let mut anon = WebClient::new(&net.api);
    let page = anon.post(
        "/signup",
        &[
            ("email", "x@example.com"),
            ("password", PASSWORD),
            ("csrf", "forged"),
        ],
    );
    assert_eq!(page.status, 403, "sign-up without the form cookie");
    let page = anon.post(
        "/login",
        &[("email", "alice@example.com"), ("password", PASSWORD)],
    );
    assert_eq!(page.status, 403, "sign-in without a token");
}

#[test]
fn twenty_wrong_passwords_lock_that_email() {
    let net = net();
    let mut alice = WebClient::new(&net.api);
    alice.sign_up("alice@example.com", PASSWORD, "customer");
    let mut bob = WebClient::new(&net.api);
    bob.sign_up("bob@example.com", PASSWORD, "customer");
    let mut attacker = WebClient::new(&net.api);
    for i in 0..20 {
        let page = attacker.sign_in("alice@example.com", &format!("guess number {i}"));
        assert_eq!(page.status, 401, "attempt {i}");
        assert!(page.body.contains("wrong email or password"));
    }
    let locked = attacker.sign_in("alice@example.com", PASSWORD);
    assert_eq!(locked.status, 429, "locked even with the right password");
    let mut fresh = WebClient::new(&net.api);
    assert_eq!(fresh.sign_in("Alice@Example.com", PASSWORD).status, 429);
    let mut other = WebClient::new(&net.api);
    let page = other.sign_in("bob@example.com", PASSWORD);
    assert_eq!(
        (page.status, page.location.as_deref()),
        (303, Some("/keys"))
    );
}

#[test]
fn a_flood_of_sign_ups_from_one_address_is_throttled() {
    let net = net();
    for i in 0..10 {
        let mut c = WebClient::new(&net.api);
        c.sign_up(&format!("user{i}@example.com"), PASSWORD, "customer");
    }
    let mut eleventh = WebClient::new(&net.api);
    let csrf = eleventh.get("/signup").csrf().expect("csrf");
    let page = eleventh.post(
        "/signup",
        &[
            ("email", "user10@example.com"),
            ("password", PASSWORD),
            ("csrf", &csrf),
        ],
    );
    assert_eq!(page.status, 429, "the 11th sign-up from 127.0.0.1");
    assert!(page.body.contains("too many sign-ups"), "{}", page.body);
    let mut old = WebClient::new(&net.api);
    assert_eq!(
        old.sign_in("user0@example.com", PASSWORD).status,
        303,
        "signing in is not throttled by sign-ups"
    );
    // Another address may still sign up.
    let jar = tempfile::NamedTempFile::new().expect("jar");
    let jar = jar.path().to_str().expect("path");
    let form = crate::fixtures::curl(&["-s", "-c", jar, "-b", jar, &format!("{}/signup", net.api)]);
    let body = String::from_utf8_lossy(&form.stdout);
    let field = "name=\"csrf\" value=\"";
    let at = body.find(field).expect("csrf") + field.len();
    let csrf = &body[at..at + body[at..].find('"').expect("end")];
    let fields = format!("email=other%40example.com&password=correct+horse+battery&csrf={csrf}");
    let code = crate::fixtures::curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-c",
        jar,
        "-b",
        jar,
        "--interface",
        "127.0.0.2",
        "-d",
        &fields,
        &format!("{}/signup", net.api),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&code.stdout),
        "303",
        "from 127.0.0.2"
    );
}

#[test]
fn session_cookies_carry_their_flags() {
    let net = net();
    let mut alice = WebClient::new(&net.api);
    let page = alice.sign_up("alice@example.com", PASSWORD, "customer");
    let session = page
        .set_cookies
        .iter()
        .find(|c| c.starts_with("turbo_session="))
        .expect("a session cookie");
    for flag in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(session.contains(flag), "{flag} in {session}");
    }
    assert!(!session.contains("Secure"), "plain HTTP: no Secure");
    let out = alice.submit("/keys", "/logout", &[]);
    assert_eq!(out.location.as_deref(), Some("/login"));
    assert_eq!(alice.get("/keys").status, 303, "signed out");

    let secure = Net::start_with(Options {
        node: false,
        config: "web_secure_cookies = true\n".into(),
        ..Options::new("legacy")
    });
    let mut bob = WebClient::new(&secure.api);
    let page = bob.sign_up("bob@example.com", PASSWORD, "customer");
    assert!(
        page.set_cookies.iter().all(|c| c.contains("; Secure")),
        "{:?}",
        page.set_cookies
    );
}

#[test]
fn users_create_prints_a_one_time_password_that_signs_in() {
    let net = net();
    let out = net.cli(&[
        "users",
        "create",
        "--email",
        "ops@example.com",
        "--role",
        "admin",
    ]);
    let password = out.split_whitespace().last().expect("a last word");
    assert_eq!(password.len(), 20, "{out}");
    let mut ops = WebClient::new(&net.api);
    let page = ops.sign_in("ops@example.com", password);
    assert_eq!(
        (page.status, page.location.as_deref()),
        (303, Some("/admin"))
    );
    let admin = ops.get("/admin");
    assert_eq!(admin.status, 200);
    assert!(admin.body.contains("<title>Network · Turbo</title>"));
    assert!(admin.body.contains("ops@example.com"), "the users list");
    assert!(admin.body.contains(&net.key_id), "the keys list");
    let listed = net.api_get("/api/users");
    assert_eq!(listed[0]["email"], "ops@example.com");
    assert!(
        listed[0].get("password_hash").is_none(),
        "no hashes in the API"
    );
}

#[test]
fn pages_are_small_titled_and_locked_down() {
    let net = net();
    let mut alice = WebClient::new(&net.api);
    let assets: usize = ["/static/app.css", "/static/live.js"]
        .iter()
        .map(|p| alice.get(p).body.len())
        .sum();
    let mut pages = vec![alice.get("/signup"), alice.get("/login")];
    alice.sign_up("alice@example.com", PASSWORD, "customer");
    pages.push(alice.submit("/keys", "/keys", &[("name", "k")]));
    let mut carol = WebClient::new(&net.api);
    carol.sign_up("carol@example.com", PASSWORD, "runner");
    pages.push(carol.submit("/nodes", "/nodes", &[]));
    for page in &pages {
        assert_eq!(page.status, 200);
        let title = page.body.find("<title>").map(|i| &page.body[i..i + 40]);
        assert!(
            title.is_some_and(|t| t.contains(" · Turbo</title>")),
            "{title:?}"
        );
        assert!(page.body.contains("<html lang=\"en\">"));
        assert!(page
            .body
            .contains("name=\"viewport\" content=\"width=device-width"));
        assert!(
            !page.body.contains("http://")
                || page.body.contains("user:tk_")
                || page.body.contains("turbo://"),
            "no off-site assets"
        );
        assert!(
            page.body.len() + assets < 150_000,
            "{} bytes",
            page.body.len() + assets
        );
    }
    let raw = ureq::get(&format!("{}/keys", net.api))
        .call()
        .expect("redirect followed to login");
    let csp = raw.header("content-security-policy").expect("a CSP header");
    assert!(csp.contains("default-src 'self'"), "{csp}");
}

#[test]
fn a_runner_sets_the_payout_address_of_their_own_node_only() {
    let pg = crate::fixtures::postgres::Postgres::start();
    let rt = crate::payments::runtime();
    let ledger_url = rt.block_on(pg.database());
    let net = Net::start_with(Options {
        node: false,
        config: format!("ledger = \"{ledger_url}\"\n"),
        ..Options::new("legacy")
    });
    let mut carol = WebClient::new(&net.api);
    carol.sign_up("carol@example.com", PASSWORD, "runner");
    let added = carol.submit("/nodes", "/nodes", &[]);
    let at = added.body.find("<code>n_").expect("node id") + "<code>".len();
    let node = added.body[at..at + added.body[at..].find('<').expect("end")].to_owned();
    let page = carol.get(&format!("/nodes/{node}"));
    assert_eq!(page.status, 200);
    for text in [
        "Earnings",
        "Paid out",
        "No rewarded day yet",
        "No payouts yet",
        "$20.00",
    ] {
        assert!(page.body.contains(text), "{text} on the node page");
    }
    let address = "0x00000000000000000000000000000000000000aa";
    let set = carol.submit(
        &format!("/nodes/{node}"),
        &format!("/nodes/{node}/payout"),
        &[("payout_address", address), ("payout_threshold", "50")],
    );
    assert_eq!(set.status, 303);
    assert_eq!(
        net.api_get(&format!("/api/nodes/{node}"))["payout_address"],
        address
    );
    own_threshold_holds_payouts(&net, &rt, &ledger_url, &mut carol, &node);

    let mut dave = WebClient::new(&net.api);
    dave.sign_up("dave@example.com", PASSWORD, "runner");
    assert_eq!(dave.get(&format!("/nodes/{node}")).status, 404);
    let csrf = dave.get("/nodes").csrf().expect("csrf");
    let hijack = dave.post(
        &format!("/nodes/{node}/payout"),
        &[("payout_address", "0xdave"), ("csrf", &csrf)],
    );
    assert_eq!(hijack.status, 404, "not his node");
    assert_eq!(
        net.api_get(&format!("/api/nodes/{node}"))["payout_address"],
        address
    );
}

/// With $25 earned, a node whose runner asked for $50 at a time is not paid yet; with
/// the server's $20 it is. A threshold under the server's is refused. An operator's
/// hold stops the payout, shows its reason to the admin and the runner, and its
/// release makes the same balance payable again.
fn own_threshold_holds_payouts(
    net: &Net,
    rt: &tokio::runtime::Runtime,
    ledger_url: &str,
    carol: &mut WebClient,
    node: &str,
) {
    let page = carol.get(&format!("/nodes/{node}"));
    assert!(page.body.contains("value=\"50\""), "the threshold shows");
    let ledger = rt
        .block_on(turbo_ledger::Ledger::connect(ledger_url))
        .expect("ledger");
    let reward = crate::fixtures::evm::reward_posting(node, 25_000_000_000);
    rt.block_on(ledger.post(&reward)).expect("reward");
    let dry = || net.api_post("/api/payouts/run", serde_json::json!({"dry_run": true}));
    assert_eq!(
        dry()["planned"],
        serde_json::json!([]),
        "held at the runner's $50"
    );
    let address = "0x00000000000000000000000000000000000000aa";
    let low = carol.submit(
        &format!("/nodes/{node}"),
        &format!("/nodes/{node}/payout"),
        &[("payout_address", address), ("payout_threshold", "5")],
    );
    assert_eq!(low.status, 400, "under the server's $20");
    let reset = carol.submit(
        &format!("/nodes/{node}"),
        &format!("/nodes/{node}/payout"),
        &[("payout_address", address), ("payout_threshold", "")],
    );
    assert_eq!(reset.status, 303);
    let planned = dry()["planned"].clone();
    assert_eq!(
        planned[0]["node"], node,
        "paid from the server's $20: {planned}"
    );
    let held = net.api_post(
        &format!("/api/nodes/{node}/hold"),
        serde_json::json!({"reason": "altered a canary"}),
    );
    assert_eq!(held["new"], true);
    assert_eq!(dry()["planned"], serde_json::json!([]), "held: not paid");
    let admin_view = net.api_get(&format!("/api/nodes/{node}"));
    assert_eq!(admin_view["hold"]["reason"], "altered a canary");
    let page = carol.get(&format!("/nodes/{node}")).body;
    assert!(
        page.contains("Held: altered a canary"),
        "the runner is told why"
    );
    let released = net.api_post(&format!("/api/nodes/{node}/release"), serde_json::json!({}));
    assert_eq!(released["released"], true);
    assert_eq!(dry()["planned"][0]["node"], node, "payable again");
}

#[test]
fn a_session_works_on_every_server_of_one_redis() {
    let redis = crate::fixtures::redis::Redis::start();
    let opts = Options {
        node: false,
        ..Options::redis("legacy", &redis)
    };
    let a = Net::start_with(opts.clone());
    let b = a.peer_with(opts);
    let mut on_a = WebClient::new(&a.api);
    on_a.sign_up("alice@example.com", PASSWORD, "customer");
    let created = on_a.submit("/keys", "/keys", &[("name", "shared")]);
    let id = created_key_id(&created.body);
    let mut on_b = WebClient::new(&b.api);
    on_b.cookies = on_a.cookies.clone();
    let page = on_b.get("/keys");
    assert_eq!(
        page.status, 200,
        "the session made on one server works on the other"
    );
    assert!(page.body.contains(&id), "the same keys");
    let mut again = WebClient::new(&b.api);
    let signed_in = again.sign_in("alice@example.com", PASSWORD);
    assert_eq!(
        signed_in.location.as_deref(),
        Some("/keys"),
        "the account is shared"
    );
}
