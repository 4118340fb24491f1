//! The nginx and Caddy configurations of docs/forward-auth.md, read out of the document and
//! run verbatim (only the addresses replaced) against a real nginx and a real Caddy in front
//! of the gateway and an echo upstream standing in for the app.
//!
//! Skipped when the proxy's binary is not installed, except under `CI=true` (`.ci/run`
//! installs both).

use std::net::IpAddr;
use std::time::Duration;

use crate::support::app::*;
use crate::support::browser::{Browser, Html};
use crate::support::caddy::{Caddy, caddy_binary};
use crate::support::nginx::{Nginx, nginx_binary};
use crate::support::{EchoUpstream, echoed_header, free_port};
use portcullis::domain::HumanDuration;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The document the configurations are read from.
const DOC: &str = include_str!("../../docs/forward-auth.md");
/// Where the document's configurations expect Portcullis and the app.
const DOC_PORTCULLIS: &str = "127.0.0.1:8080";
const DOC_APP: &str = "127.0.0.1:3000";
/// The access token's lifetime here: the stories outlive it several times.
const ACCESS_TTL_SECS: u64 = 2;
/// Where the browser's connections come from (the proxies listen on 127.0.0.1).
const BROWSER_ADDRESS: &str = "127.0.0.2";
/// What a client sends to pass for someone else, in every request of the stories.
const SPOOFED: &[(&str, &str)] = &[
    ("x-user-email", "ceo@example.com"),
    ("x-user-roles", "admin"),
    ("remote-user", "ceo"),
    ("remote-email", "ceo@example.com"),
    ("x-forwarded-user", "ceo"),
    ("x-forwarded-email", "ceo@example.com"),
    ("x-auth-request-email", "ceo@example.com"),
    ("x-forwarded-for", "203.0.113.9"),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proxy {
    Nginx,
    Caddy,
}

/// The fenced block after `<!-- forward-auth-test: {name} -->` in the document.
fn documented_config(name: &str) -> &'static str {
    let marker = format!("<!-- forward-auth-test: {name} -->");
    let after = &DOC[DOC
        .find(&marker)
        .unwrap_or_else(|| panic!("docs/forward-auth.md has no {marker}"))
        + marker.len()..];
    let fence = after.find("```").expect("a fenced block after the marker");
    let body = &after[fence..];
    let start = body.find('\n').expect("an info string line") + 1;
    let end = body[start..]
        .find("\n```")
        .expect("the block's closing fence")
        + start;
    &body[start..end]
}

/// `text` with each placeholder (which must occur) replaced, in one pass, so a value that
/// happens to contain another placeholder is left alone.
fn substituted(text: &str, replacements: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    for (placeholder, _) in replacements {
        assert!(
            text.contains(placeholder),
            "the document lacks {placeholder}"
        );
    }
    'outer: while !rest.is_empty() {
        for (placeholder, value) in replacements {
            if let Some(tail) = rest.strip_prefix(placeholder) {
                out.push_str(value);
                rest = tail;
                continue 'outer;
            }
        }
        let mut chars = rest.chars();
        out.extend(chars.next());
        rest = chars.as_str();
    }
    out
}

/// The gateway, the app and a proxy in front configured from the document.
struct Stack {
    app: TestApp,
    _upstream: EchoUpstream,
    _proxy: Box<dyn std::any::Any + Send>,
    /// The proxy's base URL.
    base: String,
}

/// Starts the stack, or `None` when the proxy is not installed (outside CI).
async fn stack(proxy: Proxy, backend: Backend) -> Option<Stack> {
    stack_with(proxy, backend, "").await
}

/// As [`stack`], with `extra` config (routes) for the gateway.
async fn stack_with(proxy: Proxy, backend: Backend, extra: &str) -> Option<Stack> {
    let binary = match proxy {
        Proxy::Nginx => nginx_binary()?,
        Proxy::Caddy => caddy_binary()?,
    };
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let public_url = base.clone();
    let app = TestApp::spawn_with(backend, extra, |c| {
        c.tokens.access_ttl = HumanDuration::from_secs(ACCESS_TTL_SECS);
        c.server.public_url = public_url.parse().unwrap();
        c.server.trusted_proxies = vec!["127.0.0.1/32".parse().expect("CIDR")];
    })
    .await;
    let upstream = EchoUpstream::start().await;
    let addresses = [
        (DOC_PORTCULLIS, app.gw.addr.to_string()),
        (DOC_APP, upstream.addr.to_string()),
    ];
    let running: Box<dyn std::any::Any + Send> = match proxy {
        Proxy::Nginx => {
            let mut replacements = vec![("listen 80;", format!("listen 127.0.0.1:{port};"))];
            replacements.extend(addresses);
            let config = substituted(documented_config("nginx"), &replacements);
            Box::new(Nginx::start_on(&binary, port, &config))
        }
        Proxy::Caddy => {
            let mut replacements = vec![("app.example.com {", format!("{base} {{"))];
            replacements.extend(addresses);
            let config = substituted(documented_config("caddy"), &replacements);
            Box::new(Caddy::start_on(&binary, port, &config))
        }
    };
    Some(Stack {
        app,
        _upstream: upstream,
        _proxy: running,
        base,
    })
}

/// What the app received, from the echo upstream's answer.
fn echo_of(page: &Html) -> Value {
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(
        page.headers.get("x-upstream").map(|v| v.as_bytes()),
        Some(&b"echo"[..]),
        "the app answered: {}",
        page.body
    );
    serde_json::from_str(&page.body).expect("echo JSON")
}

/// The app saw this account and nothing it must not see.
fn assert_app_saw_only(echo: &Value, email: &str) {
    assert_eq!(echoed_header(echo, "x-user-email"), [email], "{echo}");
    assert_eq!(echoed_header(echo, "x-user-id").len(), 1, "{echo}");
    for cookie in echoed_header(echo, "cookie") {
        assert!(
            !cookie.to_ascii_lowercase().contains("portcullis"),
            "the app got a gateway cookie: {echo}"
        );
    }
    for name in [
        "authorization",
        "remote-user",
        "remote-email",
        "x-forwarded-user",
        "x-forwarded-email",
        "x-auth-request-email",
    ] {
        assert!(
            echoed_header(echo, name).is_empty(),
            "{name} reached the app: {echo}"
        );
    }
    let roles = echoed_header(echo, "x-user-roles");
    assert!(roles.iter().all(|r| r.is_empty()), "{echo}");
    assert_eq!(
        echoed_header(echo, "x-forwarded-for"),
        [BROWSER_ADDRESS],
        "{echo}"
    );
}

/// Loads `path` as a browser would, following redirects (at most six); returns the last
/// answer and how many times the browser passed through the sign-in page.
async fn visit(browser: &Browser, path: &str) -> (Html, usize) {
    let mut at = path.to_owned();
    let mut sign_in_visits = 0;
    for _ in 0..6 {
        let page = browser.get_with(&at, SPOOFED).await;
        if !page.status.is_redirection() {
            return (page, sign_in_visits);
        }
        at = page.location().to_owned();
        if at.contains("/auth/login") {
            sign_in_visits += 1;
        }
    }
    panic!("more than six redirects from {path}");
}

/// A browser signs in through the proxy, then keeps using the app over several access
/// lifetimes: every expiry is a round trip through the sign-in page, which renews; the
/// session never ends, no refresh token is reused, and the app sees only the identity.
async fn browser_stays_signed_in(proxy: Proxy, backend: Backend) {
    let Some(s) = stack(proxy, backend).await else {
        return;
    };
    let email = format!("{proxy:?}-{backend:?}@example.com").to_lowercase();
    s.app.verified_user(&email).await;
    let address: IpAddr = BROWSER_ADDRESS.parse().unwrap();
    let browser = Browser::from_address(&s.base, address);
    browser
        .jar
        .add_cookie_str("app_pref=kept; Path=/", &s.base.parse().unwrap());

    // Anonymous: the app is never reached; the browser goes to the sign-in page.
    let (page, _) = visit(&browser, "/page").await;
    assert!(page.body.contains("csrf_token"), "{proxy:?}: {}", page.body);
    let first = browser.get("/page").await;
    assert_eq!(first.status, StatusCode::FOUND, "{proxy:?}");
    assert!(
        first.location().ends_with("/auth/login?return_to=/page"),
        "{proxy:?}: {}",
        first.location()
    );

    let mut fields = vec![("csrf_token", page.csrf())];
    fields.extend([
        ("email", email.clone()),
        ("password", PASSWORD.to_owned()),
        ("return_to", "/page".to_owned()),
    ]);
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let signed_in = browser
        .post_with(
            "/auth/login",
            &fields,
            &[("sec-fetch-site", "same-origin"), SPOOFED[7]],
        )
        .await;
    assert!(signed_in.status.is_redirection(), "{}", signed_in.body);
    assert_eq!(signed_in.location(), "/page");

    let mut renewals = 0;
    for round in 0..4 {
        if round > 0 {
            // Past the access token's lifetime (and its cookie's Max-Age), for certain.
            tokio::time::sleep(Duration::from_secs(ACCESS_TTL_SECS + 1)).await;
        }
        let (page, through_sign_in) = visit(&browser, "/page").await;
        let echo = echo_of(&page);
        assert_app_saw_only(&echo, &email);
        assert!(
            cookie_pairs(&echo).contains(&"app_pref=kept".to_owned()),
            "{echo}"
        );
        renewals += through_sign_in;
    }
    assert!(
        renewals >= 3,
        "{proxy:?}: renewed {renewals} times in 3 expiries"
    );
    assert_eq!(
        s.app.gw.app.metrics.refresh_reuse.get(),
        0,
        "{proxy:?}: a refresh token was reused"
    );

    // One session all along, recorded with the browser's address, not the proxy's or the
    // one the browser claimed.
    let token = browser.cookie("portcullis").expect("access cookie");
    let sessions: Value = s
        .app
        .http
        .get(format!("{}/api/auth/sessions", s.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let list = sessions["data"]["sessions"].as_array().expect("sessions");
    assert_eq!(list.len(), 1, "{sessions}");
    assert_eq!(list[0]["ip"], BROWSER_ADDRESS, "{sessions}");

    // Signed out: back to the sign-in form, never the app.
    let r = s
        .app
        .http
        .post(format!("{}/api/auth/logout", s.base))
        .bearer_auth(&token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (page, _) = visit(&browser, "/page").await;
    assert!(page.headers.get("x-upstream").is_none(), "{}", page.body);
    assert!(page.body.contains("csrf_token"), "{}", page.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn nginx_keeps_a_browser_signed_in_through_renewals_at_the_portal() {
    for backend in backends() {
        browser_stays_signed_in(Proxy::Nginx, backend).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn caddy_keeps_a_browser_signed_in_through_renewals_at_the_portal() {
    for backend in backends() {
        browser_stays_signed_in(Proxy::Caddy, backend).await;
    }
}

/// `Cookie` lines a client may send, and the cookies the app may see of them.
const COOKIE_CASES: &[(&[&str], &[&str])] = &[
    (&["a=1; portcullis=x; b=2"], &["a=1", "b=2"]),
    (&["portcullis=x; b=2"], &["b=2"]),
    (&["a=1; portcullis=x"], &["a=1"]),
    (&["portcullis=x"], &[]),
    (&["a=1;portcullis=x;b=2"], &["a=1", "b=2"]),
    (&["  portcullis =x ;b=2"], &["b=2"]),
    (
        &["PORTCULLIS=x; __Secure-portcullis_refresh=z; portcullis_csrf=w; a=1"],
        &["a=1"],
    ),
    (&["__HOST-Portcullis_Refresh=1;a=2"], &["a=2"]),
    (
        &["a=1; portcullis_refresh=r; b=2; __host-portcullis_csrf=t; c=3"],
        &["a=1", "b=2", "c=3"],
    ),
    (&["a=1, portcullis=x, b=2"], &["a=1", "b=2"]),
    (
        &["myportcullis=1; p=portcullis=2; q=portcullis"],
        &["myportcullis=1", "p=portcullis=2", "q=portcullis"],
    ),
    (
        &["a=1; portcullis=x", "portcullis_refresh=y; b=2"],
        &["a=1", "b=2"],
    ),
    (&["portcullis_lang=en; a=1"], &["a=1"]),
];

/// The app's cookies as pairs, however the proxy joined or split them.
fn cookie_pairs(echo: &Value) -> Vec<String> {
    let mut pairs: Vec<String> = echoed_header(echo, "cookie")
        .iter()
        .flat_map(|line| line.split([';', ',']))
        .map(|pair| pair.trim().to_owned())
        .filter(|pair| !pair.is_empty())
        .collect();
    pairs.sort();
    pairs
}

/// Every spelling and order of the gateway's cookies is taken out before the app; the app's
/// own cookies stay. An API client's `Authorization` does not reach the app either.
async fn proxy_takes_out_credentials(proxy: Proxy) {
    let Some(s) = stack(proxy, Backend::Embedded).await else {
        return;
    };
    s.app.verified_user("cookies@example.com").await;
    let t = s.app.login("cookies@example.com").await;
    for (lines, expected) in COOKIE_CASES {
        let mut request = s
            .app
            .http
            .get(format!("{}/page", s.base))
            .bearer_auth(&t.access);
        for line in *lines {
            request = request.header("cookie", *line);
        }
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{proxy:?} {lines:?}");
        let echo: Value = r.json().await.unwrap();
        let mut expected: Vec<String> = expected.iter().map(|p| p.to_string()).collect();
        expected.sort();
        assert_eq!(cookie_pairs(&echo), expected, "{proxy:?} {lines:?}: {echo}");
        assert!(echoed_header(&echo, "authorization").is_empty(), "{echo}");
        assert_eq!(
            echoed_header(&echo, "x-user-email"),
            ["cookies@example.com"]
        );
    }
    // A gateway cookie name twice (any case, any prefix) means no credentials at all, a
    // Bearer token beside it included: the browser is sent to sign in, the app sees nothing.
    for twins in [
        "PORTCULLIS=x; __Host-portcullis=y; a=1",
        "portcullis_refresh=x; a=1; __Secure-portcullis_refresh=y",
    ] {
        let r = s
            .app
            .http
            .get(format!("{}/page", s.base))
            .bearer_auth(&t.access)
            .header("cookie", twins)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FOUND, "{proxy:?} {twins}");
    }
    // Beyond what a rewrite can follow, nothing of the client's: no credentials reach the
    // app (whether the request is refused or its cookies all go).
    let crowd: Vec<String> = (0..6).map(|i| format!("portcullis=c{i}")).collect();
    let r = s
        .app
        .http
        .get(format!("{}/page", s.base))
        .bearer_auth(&t.access)
        .header("cookie", format!("a=1; {}", crowd.join("; ")))
        .send()
        .await
        .unwrap();
    if r.status() == StatusCode::OK {
        let echo: Value = r.json().await.unwrap();
        assert!(
            cookie_pairs(&echo)
                .iter()
                .all(|p| !p.contains("portcullis")),
            "{proxy:?}: {echo}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn nginx_takes_the_gateways_cookies_and_token_out_before_the_app() {
    proxy_takes_out_credentials(Proxy::Nginx).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn caddy_takes_the_gateways_cookies_and_token_out_before_the_app() {
    proxy_takes_out_credentials(Proxy::Caddy).await;
}

/// The nginx configuration's stricter location: a password-only session is refused there,
/// and methods other than GET are decided alike.
#[tokio::test(flavor = "multi_thread")]
async fn nginx_refuses_a_password_only_session_where_two_factors_are_required() {
    let Some(s) = stack(Proxy::Nginx, Backend::Embedded).await else {
        return;
    };
    s.app.verified_user("admin@example.com").await;
    let t = s.app.login("admin@example.com").await;
    for method in [
        reqwest::Method::GET,
        reqwest::Method::POST,
        reqwest::Method::DELETE,
    ] {
        let r = s
            .app
            .http
            .request(method.clone(), format!("{}/admin/x", s.base))
            .bearer_auth(&t.access)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{method}");
        let r = s
            .app
            .http
            .request(method.clone(), format!("{}/page", s.base))
            .bearer_auth(&t.access)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{method}");
    }
    // Anonymous requests of any method are sent to the sign-in page, never to the app.
    for method in ["GET", "POST", "DELETE", "OPTIONS", "PUT"] {
        let r = s
            .app
            .http
            .request(method.parse().unwrap(), format!("{}/page?x=1", s.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FOUND, "{method}");
        let location = r.headers()["location"].to_str().unwrap();
        assert!(
            location.ends_with("/auth/login?return_to=/page?x=1"),
            "{method}: {location}"
        );
    }
}

/// The names of the gateway's own strip list a client sends in [`proxy_strips_what_the_gateway_strips`]:
/// each entry of `server.strip_headers`' default, a `*` family by the names nginx's
/// configuration lists (nginx cannot remove by prefix) and, for Caddy, any other name too.
fn stripped_names(proxy: Proxy) -> Vec<String> {
    let mut names = Vec::new();
    for entry in portcullis::config::DEFAULT_STRIP_HEADERS {
        match entry.strip_suffix('*') {
            Some(family) => {
                let mut members = vec!["user", "email", "groups"];
                match family {
                    "x-remote-" => members.extend(["group", "uid"]),
                    "remote-" => members.extend(["name", "uid"]),
                    _ => {}
                }
                if proxy == Proxy::Caddy {
                    members.push("anything-else");
                }
                names.extend(members.iter().map(|m| format!("{family}{m}")));
            }
            None => names.push(entry.to_string()),
        }
    }
    names
}

/// Every header the gateway strips on its own routes is stripped by the documented proxies
/// too, on pages with and without a query of their own (Caddy passes a page's query to
/// verify unless `uri` has one); an anonymous browser with a query is sent to sign in.
async fn proxy_strips_what_the_gateway_strips(proxy: Proxy) {
    let Some(s) = stack(proxy, Backend::Embedded).await else {
        return;
    };
    s.app.verified_user("strip@example.com").await;
    let t = s.app.login("strip@example.com").await;
    let names = stripped_names(proxy);
    for target in ["/page", "/page?q=1", "/page?q=1&two_factor=yes&roles=x"] {
        let mut request = s
            .app
            .http
            .get(format!("{}{target}", s.base))
            .bearer_auth(&t.access);
        for name in &names {
            request = request.header(name.as_str(), "spoofed");
        }
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{proxy:?} {target}");
        let echo: Value = r.json().await.unwrap();
        for name in &names {
            assert!(
                echoed_header(&echo, name).is_empty(),
                "{proxy:?} {target}: {name} reached the app: {echo}"
            );
        }
        let anonymous = s
            .app
            .http
            .get(format!("{}{target}", s.base))
            .header("accept", "text/html")
            .send()
            .await
            .unwrap();
        assert_eq!(anonymous.status(), StatusCode::FOUND, "{proxy:?} {target}");
        let location = anonymous.headers()["location"].to_str().unwrap();
        assert!(location.contains("/auth/login?return_to="), "{location}");
    }
    a_refused_bearer_beside_a_cookie_goes_round_no_loop(&s, &t.access).await;
}

/// A browser signed in by cookie that also sends a Bearer token the gateway refuses is sent
/// to the sign-in page once and stays there: the page does not send it back to the app
/// with the same token, round and round.
async fn a_refused_bearer_beside_a_cookie_goes_round_no_loop(s: &Stack, access: &str) {
    let cookie = format!("portcullis={access}");
    let mut at = format!("{}/page", s.base);
    let mut hops = 0;
    let last = loop {
        let r = s
            .app
            .http
            .get(&at)
            .header("accept", "text/html")
            .header("cookie", &cookie)
            .header("authorization", "Bearer garbage")
            .send()
            .await
            .unwrap();
        if !r.status().is_redirection() {
            break r.status();
        }
        hops += 1;
        assert!(hops <= 3, "a redirect loop: {hops} hops, now at {at}");
        let location = r.headers()["location"].to_str().unwrap().to_owned();
        at = if location.starts_with('/') {
            format!("{}{location}", s.base)
        } else {
            location
        };
    };
    assert!(
        last == StatusCode::OK || last == StatusCode::UNAUTHORIZED,
        "{last}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn nginx_strips_what_the_gateway_strips() {
    proxy_strips_what_the_gateway_strips(Proxy::Nginx).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn caddy_strips_what_the_gateway_strips() {
    proxy_strips_what_the_gateway_strips(Proxy::Caddy).await;
}

/// The gateway's routes for [`the_route_table_decides_behind`]: forward-auth finds them
/// from the original request the proxy describes.
const RULES: &str = r#"
[[routes]]
name = "open"
path_prefix = "/open"
upstream = "http://127.0.0.1:9"
policy = "public"

[[routes]]
name = "ops"
path_prefix = "/ops"
upstream = "http://127.0.0.1:9"
roles = ["ops"]

[[routes]]
name = "lan"
path_prefix = "/lan"
upstream = "http://127.0.0.1:9"
networks = ["10.0.0.0/8"]

[[routes]]
name = "here"
path_prefix = "/here"
upstream = "http://127.0.0.1:9"
networks = ["127.0.0.2/32"]
"#;

/// Behind the documented proxy configuration, the gateway's route table decides: a public
/// route lets anonymous browsers through, roles and networks are held to the browser's own
/// address, and a client's own `X-Forwarded-Uri` (naming a public route) changes nothing.
async fn the_route_table_decides_behind(proxy: Proxy) {
    for backend in backends() {
        let Some(s) = stack_with(proxy, backend, RULES).await else {
            return;
        };
        let email = format!("{proxy:?}-rules-{backend:?}@example.com").to_lowercase();
        s.app.verified_user(&email).await;
        let t = s.app.login(&email).await;
        let address: IpAddr = BROWSER_ADDRESS.parse().unwrap();
        let browser = Browser::from_address(&s.base, address);
        let bearer = format!("Bearer {}", t.access);
        let spoof: &[(&str, &str)] = &[
            ("x-forwarded-uri", "/open"),
            ("x-forwarded-method", "GET"),
            ("x-forwarded-host", "127.0.0.1"),
        ];

        // Anonymous: the public route reaches the app, with no identity. (Caddy before 2.7
        // copies its placeholder text for a header the answer lacks: docs/forward-auth.md.)
        let page = browser.get_with("/open/x", spoof).await;
        let echo = echo_of(&page);
        let emails = echoed_header(&echo, "x-user-email");
        assert!(
            emails
                .iter()
                .all(|e| e.is_empty() || e.starts_with("{http.")),
            "{echo}"
        );
        // A client naming the public route in its own headers is still asked to sign in.
        for path in ["/page", "/ops/x"] {
            let page = browser.get_with(path, spoof).await;
            assert_eq!(
                page.status,
                StatusCode::FOUND,
                "{proxy:?} {backend:?} {path}: {}",
                page.body
            );
            assert!(page.location().contains("/auth/login?return_to="), "{path}");
        }
        // A network the browser is not in is refused before anyone is asked to sign in.
        let page = browser.get_with("/lan/x", spoof).await;
        assert_eq!(
            page.status,
            StatusCode::FORBIDDEN,
            "{proxy:?} {backend:?}: {}",
            page.body
        );
        // Signed in: roles and networks decide, on the browser's address nginx saw.
        let mut headers = vec![("authorization", bearer.as_str())];
        headers.extend_from_slice(spoof);
        for (path, status) in [
            ("/page", StatusCode::OK),
            ("/here/x", StatusCode::OK),
            ("/ops/x", StatusCode::FORBIDDEN),
            ("/lan/x", StatusCode::FORBIDDEN),
        ] {
            let page = browser.get_with(path, &headers).await;
            assert_eq!(
                page.status, status,
                "{proxy:?} {backend:?} {path}: {}",
                page.body
            );
            if status == StatusCode::OK {
                assert_eq!(
                    echoed_header(&echo_of(&page), "x-user-email"),
                    [email.as_str()]
                );
            }
        }
        s.app.grant_role(&email, "ops").await;
        let t = s.app.login(&email).await;
        let bearer = format!("Bearer {}", t.access);
        let page = browser
            .get_with("/ops/x", &[("authorization", bearer.as_str())])
            .await;
        assert_eq!(echoed_header(&echo_of(&page), "x-user-roles"), ["ops"]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_route_table_decides_behind_nginx() {
    the_route_table_decides_behind(Proxy::Nginx).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_route_table_decides_behind_caddy() {
    the_route_table_decides_behind(Proxy::Caddy).await;
}
