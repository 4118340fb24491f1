//! Every portal page on a phone and at night: in headless Chromium at 320, 390 and 1280 px,
//! in the light and the dark colour scheme (emulated through the DevTools protocol), in
//! English and Russian, no page is wider than the window and axe-core finds no violation
//! at all (contrast included, so the dark scheme's accent is checked too).
//!
//! One browser per width and scheme walks every page: the signed-out ones, the sign-in's
//! second step, the account page with two sessions and a passkey, the refusal page, the
//! console's pages, and a second factor's setup.

use crate::portal_browser::{axe_source, check_no_violations, screenshot, sign_in};
use crate::support::EchoUpstream;
use crate::support::app::*;
use crate::support::in_ci;
use crate::support::webdriver::{self, Browser, ChromeDriver};
use serde_json::json;

/// A window width and a colour scheme.
#[derive(Clone, Copy)]
struct View {
    width: u32,
    dark: bool,
}

impl std::fmt::Display for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.dark { "dark" } else { "light" };
        write!(f, "{} px, {scheme}", self.width)
    }
}

/// Where the walk goes, and the administrator's recovery codes (one per sign-in).
struct Site {
    base: String,
    root_id: String,
    codes: Vec<String>,
}

const LANGUAGES: [&str; 2] = ["en", "ru"];

/// A browser of `view`'s width and scheme (a desktop viewport of that width: a phone's
/// browser would zoom out of a page too wide rather than scroll it, hiding the fault).
async fn open(driver: &ChromeDriver, view: View, language: &str) -> Browser {
    let browser = driver.session(language).await;
    browser
        .cdp(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": view.width, "height": 900, "deviceScaleFactor": 1, "mobile": false}),
        )
        .await;
    let scheme = if view.dark { "dark" } else { "light" };
    browser
        .cdp(
            "Emulation.setEmulatedMedia",
            json!({"features": [{"name": "prefers-color-scheme", "value": scheme}]}),
        )
        .await;
    browser
}

/// The page in the browser fits its window, is in `lang` and `view`'s scheme, and axe-core
/// finds nothing on it.
async fn fits(browser: &Browser, axe: &str, view: View, lang: &str, page: &str) {
    let name = format!("{page} ({lang}, {view})");
    let m = browser
        .execute(
            "return {scroll: document.documentElement.scrollWidth, inner: window.innerWidth,
                     dark: matchMedia('(prefers-color-scheme: dark)').matches,
                     lang: document.documentElement.lang};",
            json!([]),
        )
        .await;
    assert_eq!(m["inner"], view.width, "{name}: {m}");
    assert_eq!(m["dark"], view.dark, "{name}: {m}");
    assert_eq!(m["lang"], lang, "{name}: {m}");
    let scroll = m["scroll"].as_u64().expect("scrollWidth");
    if scroll > u64::from(view.width) {
        let wide = browser
            .execute(
                "return Array.from(document.querySelectorAll('body *'))
                     .filter(e => e.getBoundingClientRect().right > window.innerWidth)
                     .slice(0, 8).map(e => e.tagName + '.' + e.className + '#' + e.id + ' '
                         + Math.round(e.getBoundingClientRect().right));",
                json!([]),
            )
            .await;
        panic!("{name}: the page is {scroll} px wide; beyond the window: {wide}");
    }
    check_no_violations(browser, axe, &name).await;
}

/// `path` in `lang`: the language is chosen on the page (`?lang=`), as a person would.
fn in_language(base: &str, path: &str, lang: &str) -> String {
    let join = if path.contains('?') { '&' } else { '?' };
    format!("{base}{path}{join}lang={lang}")
}

async fn walk_signed_out(browser: &Browser, axe: &str, view: View, base: &str) {
    for lang in LANGUAGES {
        for (path, name) in [
            ("/auth/login", "sign-in"),
            ("/auth/register", "registration"),
            ("/auth/forgot-password", "forgotten password"),
            ("/auth/reset-password?token=spent", "reset link"),
            ("/auth/verify-email?token=spent", "verification link"),
            ("/auth/invitation?token=spent", "invitation"),
            ("/auth/nowhere", "not found"),
        ] {
            browser.goto(&in_language(base, path, lang)).await;
            browser.find("main h1").await;
            fits(browser, axe, view, lang, name).await;
        }
    }
}

/// Signs the administrator in through both steps, checking the second one on the way.
async fn sign_in_with_code(browser: &Browser, axe: &str, view: View, site: &Site, code: &str) {
    browser
        .goto(&in_language(&site.base, "/auth/login", "en"))
        .await;
    sign_in(browser, "root@example.com").await;
    browser.find("#two_factor_code").await;
    fits(browser, axe, view, "en", "second step").await;
    browser.type_into("#two_factor_code", code).await;
    browser
        .click("form:not([data-passkey]) button[type=submit]")
        .await;
    browser.wait_for_url("/auth/account").await;
}

async fn walk_signed_in(browser: &Browser, axe: &str, view: View, site: &Site) {
    let admin_user = format!("/auth/admin/users/{}", site.root_id);
    for lang in LANGUAGES {
        // Proxied pages do not read `?lang=`: the cookie this choice sets speaks for them.
        browser
            .goto(&in_language(&site.base, "/auth/account", lang))
            .await;
        for (path, name, ready) in [
            ("/auth/account", "account", "#sessions-heading"),
            ("/auth/logout", "sign-out", "main form"),
            ("/ops/page", "refusal", "main h1"),
            ("/auth/admin", "console: users", "#users-heading"),
            (admin_user.as_str(), "console: account", "#sessions-caption"),
            (
                "/auth/admin/invitations",
                "console: invitations",
                "#invite-heading",
            ),
            (
                "/auth/admin/audit",
                "console: audit trail",
                "#events-caption",
            ),
            (
                "/auth/admin/step-up?return_to=%2Fauth%2Fadmin",
                "console: step-up",
                "#two_factor_code",
            ),
        ] {
            browser.goto(&format!("{}{path}", site.base)).await;
            browser.find(ready).await;
            fits(browser, axe, view, lang, name).await;
        }
    }
    browser
        .goto(&in_language(&site.base, "/auth/account", "en"))
        .await;
    let cards = browser
        .execute(
            "return Array.from(document.querySelectorAll('ul.sessions > li'))
                 .map(li => li.querySelector('h3').textContent + ' | '
                     + li.querySelector('time').getAttribute('datetime'));",
            json!([]),
        )
        .await;
    let cards = cards.as_array().expect("cards");
    assert!(cards.len() >= 2, "{cards:?}");
    // The browser and system, never the raw User-Agent; the exact time in `datetime`. (The
    // set-up's own API sign-in sends no User-Agent: an unknown device.)
    let text = |c: &serde_json::Value| c.as_str().unwrap_or("").to_owned();
    let chromes = cards
        .iter()
        .map(text)
        .filter(|c| c.starts_with("Chrome on Linux"));
    assert!(chromes.count() >= 2, "{cards:?}");
    for card in cards.iter().map(text) {
        assert!(
            !card.contains("Mozilla") && card.ends_with('Z'),
            "{cards:?}"
        );
    }
    if view.width == 390 {
        let scheme = if view.dark { "dark" } else { "light" };
        browser
            .execute(
                "document.getElementById('sessions-heading').scrollIntoView();",
                json!([]),
            )
            .await;
        screenshot(browser, &format!("account-phone-{scheme}-en")).await;
    }
}

/// The second factor's pages of an account without one: the offer, then the setup.
async fn walk_second_factor_setup(browser: &Browser, axe: &str, view: View, base: &str) {
    browser.goto(&in_language(base, "/auth/login", "en")).await;
    sign_in(browser, "plain@example.com").await;
    browser.wait_for_url("/auth/account").await;
    for lang in LANGUAGES {
        browser
            .goto(&in_language(base, "/auth/account", lang))
            .await;
        browser.goto(&format!("{base}/secure/page")).await;
        browser.wait_for_url("/auth/second-factor").await;
        fits(browser, axe, view, lang, "second factor offered").await;
        browser.click("main form button[type=submit]").await;
        browser.find("#secret").await;
        fits(browser, axe, view, lang, "second factor set-up").await;
    }
}

/// A passkey on the administrator's account, added through the account page.
async fn add_passkey(driver: &ChromeDriver, site: &Site) {
    let browser = driver.session("en-US").await;
    browser.add_virtual_authenticator().await;
    browser.goto(&format!("{}/auth/login", site.base)).await;
    sign_in(&browser, "root@example.com").await;
    browser.type_into("#two_factor_code", &site.codes[0]).await;
    browser
        .click("form:not([data-passkey]) button[type=submit]")
        .await;
    browser.wait_for_url("/auth/account").await;
    browser.type_into("#passkey_name", "Laptop").await;
    browser.type_into("#passkey_password", PASSWORD).await;
    browser
        .type_into("#passkey_two_factor_code", &site.codes[1])
        .await;
    browser
        .click("form[action='/auth/account/passkeys/add'] button[type=submit]")
        .await;
    browser
        .find("form[data-passkey=register]:not([hidden])")
        .await;
    browser.click("[data-passkey-start]").await;
    browser.wait_for_url("done=passkey_added").await;
    browser.quit().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_portal_page_fits_a_phone_and_reads_in_both_schemes_in_chromium() {
    if !webdriver::available() {
        assert!(!in_ci(), "CI=true but chromium or chromedriver is missing");
        eprintln!("skipped: chromium and chromedriver are not installed");
        return;
    }
    let axe = axe_source();
    let up = EchoUpstream::start().await;
    let u = up.url();
    // Browsers allow WebAuthn on http only for localhost: the gateway is reached by name.
    let app = TestApp::spawn_with(
        Backend::Embedded,
        &format!(
            "[[routes]]\nname = \"ops\"\npath_prefix = \"/ops\"\nupstream = \"{u}\"\n\
             policy = \"authenticated\"\nroles = [\"ops\"]\n\
             [[routes]]\nname = \"secure\"\npath_prefix = \"/secure\"\nupstream = \"{u}\"\n\
             policy = \"two_factor\"\n"
        ),
        |c| {
            c.server.public_url = format!("http://localhost:{}", c.server.listen.port())
                .parse()
                .unwrap()
        },
    )
    .await;
    let base = app.gw.app.config.server.public_url.to_string();
    app.verified_user("root@example.com").await;
    app.grant_role("root@example.com", "admin").await;
    let (_, codes) = app.enable_totp("root@example.com").await;
    app.verified_user("plain@example.com").await;
    let root = app
        .store()
        .await
        .find_by_email(&"root@example.com".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let site = Site {
        base: base.trim_end_matches('/').to_owned(),
        root_id: root.id.to_string(),
        codes,
    };
    let driver = ChromeDriver::start().await;
    add_passkey(&driver, &site).await;
    let views = [
        (320, false),
        (390, false),
        (390, true),
        (1280, true),
        (320, true),
        (1280, false),
    ];
    for (i, (width, dark)) in views.into_iter().enumerate() {
        let view = View { width, dark };
        let browser = open(&driver, view, "en-US").await;
        walk_signed_out(&browser, &axe, view, &site.base).await;
        sign_in_with_code(&browser, &axe, view, &site, &site.codes[2 + i]).await;
        walk_signed_in(&browser, &axe, view, &site).await;
        browser.quit().await;
        let plain = open(&driver, view, "en-US").await;
        walk_second_factor_setup(&plain, &axe, view, &site.base).await;
        plain.quit().await;
    }
}
