//! The dashboard for people on small screens and keyboards, in a real headless
//! Chromium: every page (customer's and runner's) fits 360 px without scrolling sideways, and a
//! customer creates a key with the keyboard alone (skip link, then Tab in a sensible
//! order, then Enter).

use crate::browser::{eventually, sign_up};
use crate::fixtures::browser::Browser;
use crate::fixtures::{Net, Options};

const TAB: &str = "\u{E004}";
const ENTER: &str = "\u{E007}";

/// Fails when the page at `path` is wider than the window.
fn fits(b: &Browser, api: &str, path: &str) {
    b.goto(&format!("{api}{path}"));
    let widths = b.js("return [document.documentElement.scrollWidth, window.innerWidth]");
    let (page, window) = (widths[0].as_u64(), widths[1].as_u64());
    assert_eq!(window, Some(360), "the window is 360 px wide");
    assert!(page <= window, "{path} is {page:?} px wide at 360 px");
}

/// What has the focus: its id, else its text.
fn focused(b: &Browser) -> String {
    let v = b.js("const e = document.activeElement; \
         return e.id || (e.textContent || '').trim() || e.tagName");
    v.as_str().unwrap_or_default().to_owned()
}

#[test]
fn the_dashboard_fits_360_px_and_works_from_the_keyboard() {
    let net = Net::start_with(Options {
        node: false,
        ..Options::new("legacy")
    });
    let b = Browser::start();
    b.set_width(360);
    for path in ["/login", "/signup"] {
        fits(&b, &net.api, path);
    }
    sign_up(&b, &net.api, "kim@example.com", false);
    for path in ["/keys", "/buy"] {
        fits(&b, &net.api, path);
    }

    b.goto(&format!("{}/keys", net.api));
    let order: Vec<String> = (0..4)
        .map(|_| {
            b.press(TAB);
            focused(&b)
        })
        .collect();
    assert_eq!(
        order,
        ["Skip to content", "Keys", "Buy credits", "Sign out"],
        "Tab walks the skip link, then the menu"
    );
    b.goto(&format!("{}/keys", net.api));
    b.press(TAB);
    b.press(ENTER);
    assert_eq!(
        focused(&b),
        "main",
        "the skip link moves the focus to the page"
    );
    b.press(TAB);
    assert_eq!(
        focused(&b),
        "name",
        "the next Tab is in the page, past the menu"
    );
    b.press("keyboard");
    b.press(TAB);
    assert_eq!(
        focused(&b),
        "Create key",
        "Tab goes from the name to its button"
    );
    b.press(ENTER);
    let secret = eventually("the key made from the keyboard", || b.text("#secret"));
    assert!(secret.starts_with("tk_"), "{secret}");
    assert_eq!(b.text("td").as_deref(), Some("keyboard"), "named as typed");
    fits(&b, &net.api, "/keys");
    b.screenshot("keys-360px");
    b.assert_no_console_errors();
    b.click_button("Sign out");
    sign_up(&b, &net.api, "ravi@example.com", true);
    b.click_button("Add a node");
    let node = eventually("the new node", || b.text("td code"));
    for path in ["/nodes".to_owned(), format!("/nodes/{node}")] {
        fits(&b, &net.api, &path);
    }
    b.assert_no_console_errors();
}
