//! What a browser sees when the gateway refuses a proxied page, and what an API client sees
//! for the same refusal: a table of refusals × (browser, API clients) × (English, Russian)
//! over real connections; the second-factor step from a refused page and back, with the
//! setup on the way for an account that had none; and the pages with the portal off.

use crate::support::EchoUpstream;
use crate::support::app::*;
use crate::support::browser::{Browser, unescape, urlencode};
use crate::support::free_port;
use crate::support::otp::totp;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;

/// The catalogue text `key` in `lang` (`en`, `ru`), as the pages must show it.
fn text(lang: &str, key: &str) -> String {
    let file = format!(
        "{}/config/portal/locales/{lang}.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    let table: toml::Table = std::fs::read_to_string(file).unwrap().parse().unwrap();
    table[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key}"))
        .to_owned()
}

/// The routes of the table: one per refusal, each on its own prefix.
fn routes(up: &str, down: &str) -> String {
    let route = |name: &str, upstream: &str, rest: &str| {
        format!(
            "[[routes]]\nname = \"{name}\"\npath_prefix = \"/{name}\"\nupstream = \"{upstream}\"\n{rest}\n"
        )
    };
    [
        route("role", up, "policy = \"authenticated\"\nroles = [\"ops\"]"),
        route(
            "user",
            up,
            "policy = \"authenticated\"\nemails = [\"someone-else@example.com\"]",
        ),
        route(
            "net",
            up,
            "policy = \"public\"\nnetworks = [\"10.0.0.0/8\"]",
        ),
        route("method", up, "policy = \"public\"\nmethods = [\"POST\"]"),
        route("denied", up, "policy = \"deny\""),
        route("limited", up, "policy = \"public\"\nrate_limit = \"1/1m\""),
        route("twofa", up, "policy = \"two_factor\""),
        route("signin", up, "policy = \"authenticated\""),
        route("down", down, "policy = \"public\""),
        route("slow", up, "policy = \"public\""),
    ]
    .concat()
}

/// One refusal of the table: the path, the API's status and code, and what a browser gets:
/// a page titled `title` (a catalogue key), or a redirect starting with `location`.
struct Row {
    path: &'static str,
    status: StatusCode,
    code: &'static str,
    signed_in: bool,
    browser: Shown,
}

enum Shown {
    Page(&'static str),
    Redirect(StatusCode, &'static str),
}

fn rows() -> Vec<Row> {
    let row = |path, status, code, signed_in, browser| Row {
        path,
        status,
        code,
        signed_in,
        browser,
    };
    let forbidden = StatusCode::FORBIDDEN;
    vec![
        row(
            "/signin/a?x=1",
            StatusCode::UNAUTHORIZED,
            "authentication_required",
            false,
            Shown::Redirect(
                StatusCode::FOUND,
                "/auth/login?return_to=%2Fsignin%2Fa%3Fx%3D1",
            ),
        ),
        row(
            "/twofa/a",
            forbidden,
            "two_factor_required",
            true,
            Shown::Redirect(
                StatusCode::FOUND,
                "/auth/second-factor?return_to=%2Ftwofa%2Fa",
            ),
        ),
        row(
            "/role/a",
            forbidden,
            "forbidden_role",
            true,
            Shown::Page("refusal_forbidden_title"),
        ),
        row(
            "/user/a",
            forbidden,
            "forbidden_user",
            true,
            Shown::Page("refusal_forbidden_title"),
        ),
        row(
            "/net/a",
            forbidden,
            "forbidden_network",
            false,
            Shown::Page("refusal_network_title"),
        ),
        row(
            "/method/a",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            false,
            Shown::Page("refusal_method_title"),
        ),
        row(
            "/denied/a",
            forbidden,
            "forbidden",
            false,
            Shown::Page("refusal_denied_title"),
        ),
        row(
            "/limited/a",
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            false,
            Shown::Page("refusal_rate_limited_title"),
        ),
        row(
            "/down/a",
            StatusCode::BAD_GATEWAY,
            "upstream_unavailable",
            false,
            Shown::Page("refusal_upstream_down_title"),
        ),
        row(
            "/slow/3000",
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            false,
            Shown::Page("refusal_upstream_timeout_title"),
        ),
    ]
}

/// How a request is sent: as a browser navigating, or as one of the API clients.
#[derive(Clone, Copy, Debug)]
enum Client {
    /// Chromium's navigation headers, the session in its cookie.
    Navigation,
    /// `Accept: application/json`, a Bearer token.
    Json,
    /// A page's `fetch` (`Sec-Fetch-Mode: cors`), the session in its cookie.
    Fetch,
}

const NAVIGATION_ACCEPT: &str =
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8";

async fn send(
    app: &TestApp,
    client: Client,
    lang: &str,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, HeaderMap, String) {
    let accept_language = if lang == "ru" {
        "ru-RU,ru;q=0.9"
    } else {
        "en-US,en;q=0.9"
    };
    let mut request = app
        .http
        .get(app.url(path))
        .header("accept-language", accept_language);
    let cookie = token.map(|t| format!("{}={t}", app.gw.app.cookie_name()));
    request = match client {
        Client::Navigation => request
            .header("accept", NAVIGATION_ACCEPT)
            .header("sec-fetch-mode", "navigate"),
        Client::Json => request.header("accept", "application/json"),
        Client::Fetch => request
            .header("accept", "*/*")
            .header("sec-fetch-mode", "cors"),
    };
    request = match (client, token, cookie) {
        (Client::Json, Some(token), _) => request.bearer_auth(token),
        (_, _, Some(cookie)) => request.header("cookie", cookie),
        _ => request,
    };
    let r = request.send().await.expect("request sent");
    let (status, headers) = (r.status(), r.headers().clone());
    (
        status,
        headers,
        unescape(&r.text().await.unwrap_or_default()),
    )
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The extra headers a refusal keeps, whoever asked: `Retry-After` on 429, `Allow` on 405.
fn check_kept_headers(row: &Row, headers: &HeaderMap, what: &str) {
    if row.status == StatusCode::TOO_MANY_REQUESTS {
        assert!(
            !header(headers, "retry-after").is_empty(),
            "{what}: Retry-After"
        );
    }
    if row.status == StatusCode::METHOD_NOT_ALLOWED {
        assert_eq!(header(headers, "allow"), "POST", "{what}: Allow");
    }
}

fn check_browser(row: &Row, lang: &str, answer: &(StatusCode, HeaderMap, String), what: &str) {
    let (status, headers, body) = answer;
    assert_eq!(header(headers, "cache-control"), "no-store", "{what}");
    match row.browser {
        Shown::Redirect(redirect, location) => {
            assert_eq!(*status, redirect, "{what}: {body}");
            assert_eq!(header(headers, "location"), location, "{what}");
        }
        Shown::Page(title) => {
            assert_eq!(*status, row.status, "{what}: {body}");
            assert!(
                header(headers, "content-type").starts_with("text/html"),
                "{what}"
            );
            assert_eq!(header(headers, "content-language"), lang, "{what}");
            assert!(
                body.contains(&format!("<html lang=\"{lang}\"")),
                "{what}: {body}"
            );
            let title = text(lang, title);
            assert!(body.contains(&title), "{what}: no {title:?} in {body}");
            assert!(
                body.contains("/auth/portal.css"),
                "{what}: the portal's look"
            );
            check_kept_headers(row, headers, what);
        }
    }
}

fn check_api(row: &Row, answer: &(StatusCode, HeaderMap, String), what: &str) {
    let (status, headers, body) = answer;
    assert_eq!(*status, row.status, "{what}: {body}");
    assert!(
        header(headers, "content-type").starts_with("application/json"),
        "{what}"
    );
    let json: serde_json::Value = serde_json::from_str(body).expect("the JSON envelope");
    assert_eq!(json["code"], row.code, "{what}: {body}");
    assert_eq!(json["success"], false, "{what}: {body}");
    check_kept_headers(row, headers, what);
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_are_pages_for_browsers_and_the_envelope_for_api_clients_in_both_languages() {
    let up = EchoUpstream::start().await;
    let down = format!("http://127.0.0.1:{}", free_port());
    for backend in backends() {
        let app = TestApp::spawn_with(backend, &routes(&up.url(), &down), |c| {
            c.server.upstream_timeout = "1s".parse().expect("duration");
        })
        .await;
        app.verified_user("table@example.com").await;
        let token = app.login("table@example.com").await.access;
        // The rate-limited route's one request a minute is spent.
        let (first, _, _) = send(&app, Client::Json, "en", "/limited/a", None).await;
        assert_eq!(first, StatusCode::OK);
        for row in rows() {
            let token = row.signed_in.then_some(token.as_str());
            for lang in ["en", "ru"] {
                let what = format!("{backend:?} {} {lang}", row.path);
                let page = send(&app, Client::Navigation, lang, row.path, token).await;
                check_browser(&row, lang, &page, &format!("{what} navigation"));
                for client in [Client::Json, Client::Fetch] {
                    let answer = send(&app, client, lang, row.path, token).await;
                    check_api(&row, &answer, &format!("{what} {client:?}"));
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unverified_address_gets_a_page_that_leads_to_the_account_page() {
    let up = EchoUpstream::start().await;
    for backend in backends() {
        let app = TestApp::spawn(backend, &routes(&up.url(), &up.url())).await;
        assert_eq!(
            app.register("unproven@example.com").await.status,
            StatusCode::CREATED
        );
        let token = app.login("unproven@example.com").await.access;
        for lang in ["en", "ru"] {
            let (status, headers, body) =
                send(&app, Client::Navigation, lang, "/signin/a", Some(&token)).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{backend:?} {lang}: {body}");
            assert_eq!(header(&headers, "content-language"), lang);
            assert!(
                body.contains(&text(lang, "refusal_unverified_title")),
                "{body}"
            );
            assert!(body.contains("href=\"/auth/account\""), "{body}");
            let answer = send(&app, Client::Json, lang, "/signin/a", Some(&token)).await;
            assert_eq!(answer.0, StatusCode::FORBIDDEN);
            assert!(answer.2.contains("\"email_unverified\""), "{}", answer.2);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_portal_off_browsers_get_a_built_in_page_without_links() {
    let up = EchoUpstream::start().await;
    let down = format!("http://127.0.0.1:{}", free_port());
    let app = TestApp::spawn(
        Backend::Embedded,
        &format!("[portal]\nenabled = false\n{}", routes(&up.url(), &down)),
    )
    .await;
    for (path, status, title) in [
        (
            "/signin/a",
            StatusCode::UNAUTHORIZED,
            "refusal_sign_in_title",
        ),
        ("/denied/a", StatusCode::FORBIDDEN, "refusal_denied_title"),
        (
            "/down/a",
            StatusCode::BAD_GATEWAY,
            "refusal_upstream_down_title",
        ),
    ] {
        for lang in ["en", "ru"] {
            let (got, headers, body) = send(&app, Client::Navigation, lang, path, None).await;
            assert_eq!(got, status, "{path} {lang}: {body}");
            assert_eq!(header(&headers, "content-language"), lang);
            assert!(body.contains(&text(lang, title)), "{path} {lang}: {body}");
            assert!(!body.contains("href="), "{path} {lang}: no links: {body}");
            assert!(!body.contains("/auth/"), "{path} {lang}: no portal: {body}");
        }
    }
}

/// A browser signed in without a second factor reaches a `two_factor` page: it is sent to
/// the step, which offers the setup (the account has none); the code that turns TOTP on
/// proves it in this session, so the page passes and the step sends the browser straight
/// on; a proof on the step still takes a right code (a wrong one first).
#[tokio::test(flavor = "multi_thread")]
async fn a_browser_proves_a_second_factor_on_the_step_and_lands_on_the_page() {
    let up = EchoUpstream::start().await;
    for backend in backends() {
        let app = TestApp::spawn(backend, &routes(&up.url(), &up.url())).await;
        let email = "stepper@example.com";
        app.verified_user(email).await;
        let browser = Browser::new(&app.gw.url());
        let signed = browser.sign_in(email, PASSWORD, "/twofa/page?x=1").await;
        assert_eq!(signed.status, StatusCode::SEE_OTHER, "{}", signed.body);
        assert_eq!(signed.location(), "/twofa/page?x=1");

        let refused = browser.get("/twofa/page?x=1").await;
        assert_eq!(
            refused.status,
            StatusCode::FOUND,
            "{backend:?}: {}",
            refused.body
        );
        let step = refused.location().to_owned();
        assert_eq!(
            step,
            "/auth/second-factor?return_to=%2Ftwofa%2Fpage%3Fx%3D1"
        );

        // No second factor yet: the step offers the setup, which comes back to it.
        let offer = browser.get(&step).await;
        assert_eq!(offer.status, StatusCode::FORBIDDEN, "{}", offer.body);
        let return_to = offer
            .input("return_to")
            .expect("the setup carries return_to");
        assert_eq!(return_to, "/twofa/page?x=1");
        let fields = [
            ("csrf_token", offer.csrf()),
            ("return_to", return_to.clone()),
        ];
        let setup = browser
            .post("/auth/account/2fa/setup", &as_refs(&fields))
            .await;
        assert_eq!(setup.status, StatusCode::OK, "{}", setup.body);
        let secret = setup.input("secret").expect("the secret to scan");
        let fields = [
            ("csrf_token", setup.csrf()),
            ("secret", secret.clone()),
            ("token", totp(&secret, -1)),
            ("password", PASSWORD.to_owned()),
            ("return_to", return_to.clone()),
        ];
        let codes = browser
            .post("/auth/account/2fa/enable", &as_refs(&fields))
            .await;
        assert_eq!(codes.status, StatusCode::OK, "{}", codes.body);
        let continues = format!("href=\"{step}\"");
        assert!(unescape(&codes.body).contains(&continues), "{}", codes.body);

        // The code that turned TOTP on proved it in this session: the page passes, and the
        // step sends the browser straight on.
        let page = browser.get("/twofa/page?x=1").await;
        assert_eq!(page.status, StatusCode::OK, "{backend:?}: {}", page.body);
        assert!(
            page.body.contains("\"/twofa/page\""),
            "the upstream answered: {}",
            page.body
        );
        let on = browser.get(&step).await;
        assert_eq!(on.status, StatusCode::SEE_OTHER, "{}", on.body);
        assert_eq!(on.location(), "/twofa/page?x=1");

        // A proof on the step is still a step-up: a wrong code is refused (and counted), a
        // right one goes on.
        let wrong = [
            ("csrf_token", setup.csrf()),
            ("return_to", return_to.clone()),
            ("two_factor_code", "000000".to_owned()),
        ];
        let again = browser.post("/auth/second-factor", &as_refs(&wrong)).await;
        assert_eq!(again.status, StatusCode::UNAUTHORIZED, "{}", again.body);
        assert!(
            again.body.contains("name=\"two_factor_code\""),
            "{}",
            again.body
        );
        let right = [
            ("csrf_token", again.csrf()),
            ("return_to", return_to.clone()),
            ("two_factor_code", totp(&secret, 0)),
        ];
        let proven = browser.post("/auth/second-factor", &as_refs(&right)).await;
        assert_eq!(proven.status, StatusCode::SEE_OTHER, "{}", proven.body);
        assert_eq!(proven.location(), "/twofa/page?x=1");

        // The step sends nowhere but this site, and never back to itself.
        for (raw, landed) in [
            ("https://evil.example/x", "/auth/account"),
            ("//evil.example/x", "/auth/account"),
            ("/auth/second-factor", "/auth/account"),
            ("/twofa/other", "/twofa/other"),
        ] {
            let r = browser
                .get(&format!("/auth/second-factor?return_to={}", urlencode(raw)))
                .await;
            assert_eq!(r.status, StatusCode::SEE_OTHER, "{raw}: {}", r.body);
            assert_eq!(r.location(), landed, "{raw}");
        }
    }
}

fn as_refs<'a>(fields: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    fields.iter().map(|(k, v)| (*k, v.as_str())).collect()
}
