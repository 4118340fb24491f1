//! Signing in through `[[identity_providers]]` against a real OpenID Provider
//! (`oidc-provider` from npm, on loopback): the portal's buttons, the provider's own login
//! and consent, the session that follows on a protected route, several providers at once.

use crate::support::EchoUpstream;
use crate::support::app::*;
use crate::support::browser::{Browser, Html, unescape};
use crate::support::oidc::{TestOp, through_op};
use reqwest::StatusCode;
use serde_json::{Value, json};

pub(crate) const SECRET: &str = "op-client-secret-for-tests";

/// A route that needs a session, and the catch-all.
pub(crate) fn routes(upstream: &str) -> String {
    format!(
        "[[routes]]\nname = \"app\"\npath_prefix = \"/app\"\nupstream = \"{upstream}\"\npolicy = \"authenticated\"\n\
         [[routes]]\nname = \"public\"\npath_prefix = \"/\"\nupstream = \"{upstream}\"\npolicy = \"public\"\n"
    )
}

/// One `[[identity_providers]]` entry of kind oidc at `issuer`, with `extra` keys.
pub(crate) fn provider(id: &str, name: &str, issuer: &str, extra: &str) -> String {
    format!(
        "[[identity_providers]]\nid = \"{id}\"\nname = \"{name}\"\nkind = \"oidc\"\nissuer = \"{issuer}\"\n\
         client_id = \"portcullis-{id}\"\nclient_secret = \"{SECRET}\"\n{extra}\n"
    )
}

/// The redirect URI the gateway registers for provider `id`.
pub(crate) fn redirect_uri(app: &TestApp, id: &str) -> String {
    app.url(&format!("/auth/oidc/{id}/callback"))
}

/// The href of the sign-in page's button for provider `id`.
fn button(page: &Html, id: &str) -> String {
    let prefix = format!("/auth/oidc/{id}/start");
    page.body
        .split("href=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(unescape)
        .find(|href| href.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no button for {id}: {}", page.body))
}

/// The echo upstream's JSON of a proxied answer.
fn echo_of(page: &Html) -> Value {
    serde_json::from_str(&page.body).unwrap_or_else(|_| panic!("not an echo: {}", page.body))
}

/// Signs in from a protected route through provider `id` as `login`; the answer of the
/// route afterwards.
async fn sign_in_through(browser: &Browser, id: &str, login: &str, route: &str) -> Html {
    let refused = browser.get(route).await;
    assert!(refused.status.is_redirection(), "{}", refused.body);
    let login_page = browser.get(refused.location()).await;
    assert_eq!(login_page.status, StatusCode::OK, "{}", login_page.body);
    let start = button(&login_page, id);
    let (page, url) = through_op(browser, &start, login).await;
    assert!(url.ends_with(route), "landed on {url}: {}", page.body);
    page
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_sign_in_through_two_real_openid_providers_onto_a_protected_route() {
    for backend in backends() {
        let (Some(mut corp), Some(mut partner)) = (TestOp::reserve(), TestOp::reserve()) else {
            return;
        };
        let upstream = EchoUpstream::start().await;
        let config = format!(
            "{}{}{}",
            routes(&upstream.url()),
            provider("corp", "Corp SSO", &corp.issuer, "auto_create = true"),
            provider("partner", "Partner", &partner.issuer, "auto_create = true"),
        );
        let app = TestApp::spawn(backend, &config).await;
        corp.start(
            &[("portcullis-corp", SECRET, &redirect_uri(&app, "corp"))],
            json!({"alice": {"email": "alice@corp.example", "email_verified": true, "given_name": "Alice"}}),
        );
        partner.start(
            &[("portcullis-partner", SECRET, &redirect_uri(&app, "partner"))],
            json!({"bob": {"email": "bob@partner.example", "email_verified": true}}),
        );

        let alice = Browser::new(&app.url(""));
        let page = sign_in_through(&alice, "corp", "alice", "/app/hello?x=1").await;
        assert_eq!(page.status, StatusCode::OK, "{backend:?}: {}", page.body);
        let echo = echo_of(&page);
        assert_eq!(
            crate::support::echoed_header(&echo, "x-user-email"),
            ["alice@corp.example"],
            "{backend:?}"
        );
        assert_eq!(
            crate::support::echoed_header(&echo, "x-user-email-verified"),
            ["true"]
        );
        // The session is an ordinary one: the account page lists it, and sign-out ends it.
        let account = alice.get("/auth/account").await;
        assert_eq!(account.status, StatusCode::OK, "{}", account.body);
        assert!(account.body.contains("alice@corp.example"));
        // Forward-auth answers for the same session, from its cookie.
        let verdict = alice.get("/api/auth/verify").await;
        assert_eq!(
            verdict.status,
            StatusCode::OK,
            "{backend:?}: {}",
            verdict.body
        );
        assert_eq!(
            verdict
                .headers
                .get("x-user-email")
                .and_then(|v| v.to_str().ok()),
            Some("alice@corp.example")
        );

        let bob = Browser::new(&app.url(""));
        let page = sign_in_through(&bob, "partner", "bob", "/app/other").await;
        assert_eq!(page.status, StatusCode::OK, "{backend:?}: {}", page.body);
        assert_eq!(
            crate::support::echoed_header(&echo_of(&page), "x-user-email"),
            ["bob@partner.example"]
        );

        // A second sign-in of the same identity reaches the same account, not a new one.
        let again = Browser::new(&app.url(""));
        let page = sign_in_through(&again, "corp", "alice", "/app/again").await;
        let echo = echo_of(&page);
        let first_id = crate::support::echoed_header(&echo, "x-user-id");
        let store = app.store().await;
        let user = store
            .find_by_email(&portcullis::domain::Email::parse("alice@corp.example").unwrap())
            .await
            .unwrap()
            .expect("the account made at the first sign-in");
        assert_eq!(first_id, [user.id.to_string()]);
        let linked = store.linked_identities(user.id).await.unwrap();
        assert_eq!(linked.len(), 1);
        assert_eq!(
            (linked[0].provider.as_str(), linked[0].subject.as_str()),
            ("corp", "alice")
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn chromium_signs_in_through_the_real_provider_and_lands_back_on_the_route() {
    use crate::portal_browser::{axe_source, check_accessibility};
    use crate::support::webdriver::{self, ChromeDriver};
    if !webdriver::available() {
        assert!(
            !crate::support::in_ci(),
            "CI=true but chromium or chromedriver is missing"
        );
        eprintln!("skipped: chromium and chromedriver are not installed");
        return;
    }
    for backend in backends() {
        let (Some(mut corp), Some(mut partner)) = (TestOp::reserve(), TestOp::reserve()) else {
            return;
        };
        let axe = axe_source();
        let upstream = EchoUpstream::start().await;
        let config = format!(
            "{}{}{}",
            routes(&upstream.url()),
            provider("corp", "Corp SSO", &corp.issuer, "auto_create = true"),
            provider("partner", "Partner", &partner.issuer, "auto_create = true"),
        );
        let app = TestApp::spawn(backend, &config).await;
        corp.start(
            &[("portcullis-corp", SECRET, &redirect_uri(&app, "corp"))],
            json!({"carol": {"email": "carol@corp.example", "email_verified": true}}),
        );
        partner.start(
            &[("portcullis-partner", SECRET, &redirect_uri(&app, "partner"))],
            json!({}),
        );
        let base = app.gw.url();
        let driver = ChromeDriver::start().await;
        for (language, button_text) in [
            ("en-US", "Sign in with Corp SSO"),
            ("ru-RU", "Войти через Corp SSO"),
        ] {
            let browser = driver.session(language).await;
            browser
                .goto(&format!("{base}/app/hello?from=chromium"))
                .await;
            browser.wait_for_text(button_text).await;
            check_accessibility(&browser, &axe, "sign-in page with providers").await;
            browser.click("a[href*='/oidc/corp/start']").await;
            // The provider's own development login, then its consent.
            browser.wait_for_url(&corp.issuer).await;
            browser.type_into("input[name=login]", "carol").await;
            browser.type_into("input[name=password]", "anything").await;
            browser.click("button[type=submit]").await;
            browser.wait_for_text("Continue").await;
            browser.click("button[type=submit]").await;
            browser.wait_for_url("/app/hello?from=chromium").await;
            browser.wait_for_text("carol@corp.example").await;
            // A callback this browser never started: a page, in its language, no sign-in.
            browser
                .goto(&format!(
                    "{base}/auth/oidc/partner/callback?state=forged&code=forged"
                ))
                .await;
            let refused = if language == "en-US" {
                "was not started in this browser"
            } else {
                "начат не в этом браузере"
            };
            browser.wait_for_text(refused).await;
            check_accessibility(&browser, &axe, "a refused sign-in").await;
            browser.quit().await;
        }
    }
}

/// Whether a new sign-in through `id` meets the provider's login form (its session ended)
/// rather than going straight on.
async fn provider_asks_for_login(browser: &Browser, id: &str) -> bool {
    let mut url = app_url(browser, &format!("/auth/oidc/{id}/start"));
    for _ in 0..10 {
        let page = browser.get(&url).await;
        if page.status.is_redirection() {
            url = reqwest::Url::parse(&url)
                .unwrap()
                .join(page.location())
                .unwrap()
                .to_string();
            continue;
        }
        return !url.starts_with(&browser.base) && page.body.contains("name=\"login\"");
    }
    false
}

fn app_url(browser: &Browser, path: &str) -> String {
    format!("{}{path}", browser.base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_out_signs_out_at_the_provider_when_asked() {
    for backend in backends() {
        let (Some(mut corp), Some(mut partner)) = (TestOp::reserve(), TestOp::reserve()) else {
            return;
        };
        let upstream = EchoUpstream::start().await;
        let config = format!(
            "{}{}{}",
            routes(&upstream.url()),
            provider(
                "corp",
                "Corp SSO",
                &corp.issuer,
                "auto_create = true\nend_session = true"
            ),
            provider("partner", "Partner", &partner.issuer, "auto_create = true"),
        );
        let app = TestApp::spawn(backend, &config).await;
        corp.start(
            &[("portcullis-corp", SECRET, &redirect_uri(&app, "corp"))],
            json!({"alice": {"email": "alice@corp.example", "email_verified": true}}),
        );
        partner.start(
            &[("portcullis-partner", SECRET, &redirect_uri(&app, "partner"))],
            json!({"bob": {"email": "bob@partner.example", "email_verified": true}}),
        );
        let alice = Browser::new(&app.url(""));
        let page = sign_in_through(&alice, "corp", "alice", "/app/hello").await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        // The provider remembers her: no login form the second time.
        assert!(
            !provider_asks_for_login(&alice, "corp").await,
            "{backend:?}"
        );

        let ask = alice.get("/auth/logout").await;
        let out = alice
            .post("/auth/logout", &[("csrf_token", &ask.csrf())])
            .await;
        assert_eq!(
            out.status,
            StatusCode::SEE_OTHER,
            "{backend:?}: {}",
            out.body
        );
        let to = out.location().to_owned();
        assert!(
            to.starts_with(&format!("{}/session/end", corp.issuer)),
            "{to}"
        );
        assert!(to.contains("id_token_hint="), "{to}");
        let (back, url) = through_op(&alice, &to, "alice").await;
        assert!(
            url.starts_with(&app.url("/auth/login")),
            "{url}: {}",
            back.body
        );
        assert!(alice.get("/app/hello").await.status.is_redirection());
        assert!(
            provider_asks_for_login(&alice, "corp").await,
            "{backend:?}: still signed in at the provider"
        );

        // Without end_session, signing out stays here.
        let bob = Browser::new(&app.url(""));
        sign_in_through(&bob, "partner", "bob", "/app/bob").await;
        let ask = bob.get("/auth/logout").await;
        let out = bob
            .post("/auth/logout", &[("csrf_token", &ask.csrf())])
            .await;
        assert_eq!(out.status, StatusCode::OK, "{}", out.body);
    }
}
