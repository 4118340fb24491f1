//! One value per cookie name, or none. A page on a sibling host can plant cookies under the
//! gateway's names (`Domain=` the parent, a longer `Path`), and the browser then sends them
//! beside the gateway's own: a request carrying one of the gateway's cookie names twice has
//! no credentials on every way in (the proxy, forward-auth, the portal), and the answer
//! clears every copy it can reach. Also: the names and scopes the gateway sets, the CSRF
//! token's rotation at sign-in and sign-out, which origins are the portal's own, and where
//! `return_to` may lead.

use reqwest::StatusCode;
use reqwest::header::HeaderMap;

use crate::support::app::*;
use crate::support::browser::{Browser, urlencode};
use crate::support::webdriver::{self, ChromeDriver};
use crate::support::{EchoUpstream, in_ci};

fn routes(upstream: &str) -> String {
    format!(
        "[[routes]]\nname = \"app\"\npath_prefix = \"/app\"\nupstream = \"{upstream}\"\npolicy = \"authenticated\"\n"
    )
}

/// A way into the gateway that reads the browser's cookies.
#[derive(Clone, Copy, Debug)]
enum WayIn {
    /// A browser navigating to a protected page: sent to sign in.
    ProxyBrowser,
    /// An API client on a protected route, with a valid Bearer token besides: 401.
    ProxyBearer,
    /// nginx's `auth_request` subrequest: 401.
    Verify,
    /// The portal's account page: sent to sign in.
    Portal,
}

const WAYS_IN: [WayIn; 4] = [
    WayIn::ProxyBrowser,
    WayIn::ProxyBearer,
    WayIn::Verify,
    WayIn::Portal,
];

/// Sends `cookie_lines` (each its own `Cookie` header) the way `way` does; returns the status,
/// the headers and the body.
async fn send(
    app: &TestApp,
    way: WayIn,
    cookie_lines: &[String],
    bearer: &str,
) -> (StatusCode, HeaderMap, String) {
    let (path, accept) = match way {
        WayIn::ProxyBrowser => ("/app/deep/page?x=1", "text/html"),
        WayIn::ProxyBearer => ("/app/deep/page?x=1", "application/json"),
        WayIn::Verify => ("/api/auth/verify", "application/json"),
        WayIn::Portal => ("/auth/account", "text/html"),
    };
    let mut request = app.http.get(app.url(path)).header("accept", accept);
    for line in cookie_lines {
        request = request.header("cookie", line);
    }
    if matches!(way, WayIn::ProxyBearer) {
        request = request.bearer_auth(bearer);
    }
    let r = request.send().await.expect("request sent");
    let status = r.status();
    let headers = r.headers().clone();
    (status, headers, r.text().await.unwrap_or_default())
}

fn set_cookies(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_owned)
        .collect()
}

/// The names of the gateway's cookie pairs in `lines`, as written.
fn names_in(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .flat_map(|l| l.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .map(|(name, _)| name.trim().to_owned())
        .filter(|name| {
            let bare = name.to_ascii_lowercase();
            let bare = bare
                .strip_prefix("__host-")
                .or_else(|| bare.strip_prefix("__secure-"))
                .unwrap_or(&bare);
            ["portcullis", "portcullis_refresh", "portcullis_csrf"].contains(&bare)
        })
        .collect()
}

/// Asserts that the answer to `way` is anonymous: nothing reached the upstream and no
/// identity was told.
fn assert_anonymous(what: &str, way: WayIn, status: StatusCode, headers: &HeaderMap, body: &str) {
    let context = format!("{what} via {way:?}: {status} {headers:?} {body}");
    assert!(
        headers.get("x-upstream").is_none(),
        "reached the upstream: {context}"
    );
    assert!(headers.get("x-user-id").is_none(), "an identity: {context}");
    assert!(!body.contains("x-user-email"), "an identity: {context}");
    let location = headers
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match way {
        WayIn::ProxyBrowser => {
            assert_eq!(status, StatusCode::FOUND, "{context}");
            assert!(
                location.starts_with("/auth/login?return_to=%2Fapp%2Fdeep%2Fpage"),
                "{context}"
            );
        }
        WayIn::ProxyBearer | WayIn::Verify => {
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{context}")
        }
        WayIn::Portal => {
            assert_eq!(status, StatusCode::SEE_OTHER, "{context}");
            assert!(location.starts_with("/auth/login?"), "{context}");
        }
    }
}

/// Asserts that every gateway name in `lines` is cleared: the host-only cookie at `/`, and
/// for each of `domains`, at `/`, the portal's `/auth` and the request's own path prefixes
/// (on the proxy `/app`, `/app/`, `/app/deep`; on the portal `/auth/`, `/auth/account`;
/// forward-auth's page is unknown).
fn assert_cleared(what: &str, way: WayIn, lines: &[String], set: &[String], domains: &[&str]) {
    let paths: &[&str] = match way {
        WayIn::ProxyBrowser | WayIn::ProxyBearer => &["/", "/auth", "/app", "/app/", "/app/deep"],
        WayIn::Portal => &["/", "/auth", "/auth/", "/auth/account"],
        WayIn::Verify => &["/", "/auth"],
    };
    let has = |line: &str| {
        set.iter()
            .any(|c| c == line || *c == format!("{line}; Secure"))
    };
    for name in names_in(lines) {
        let own = format!("{name}=; Path=/; Max-Age=0");
        assert!(has(&own), "{what} via {way:?}: no {own} in {set:#?}");
        if name.to_ascii_lowercase().starts_with("__host-") {
            assert!(
                !set.iter()
                    .any(|c| c.starts_with(&format!("{name}=")) && c.contains("Domain=")),
                "{what} via {way:?}: a __Host- cookie has no domain: {set:#?}"
            );
            continue;
        }
        for domain in domains {
            for path in paths {
                let scoped = format!("{name}=; Path={path}; Max-Age=0; Domain={domain}");
                assert!(has(&scoped), "{what} via {way:?}: no {scoped} in {set:#?}");
            }
        }
    }
}

/// The table of requests carrying a gateway cookie twice, for a victim's tokens `v` and an
/// attacker's `x`, with the names the gateway uses (`access`, `refresh`).
fn tossed_cases(v: &Tokens, x: &Tokens, access: &str, refresh: &str) -> Vec<(String, Vec<String>)> {
    let (va, vr, xa, xr) = (&v.access, &v.refresh, &x.access, &x.refresh);
    let upper = access.to_ascii_uppercase();
    vec![
        (
            "a longer-path access cookie first".into(),
            vec![format!("{access}={xa}; {access}={va}")],
        ),
        (
            "the gateway's own access cookie first".into(),
            vec![format!("{access}={va}; {access}={xa}")],
        ),
        (
            "a planted refresh cookie beside the victim's, the access cookie expired".into(),
            vec![format!("{refresh}={xr}; {refresh}={vr}")],
        ),
        (
            "a planted refresh cookie beside a live access cookie".into(),
            vec![format!("{refresh}={xr}; {access}={va}; {refresh}={vr}")],
        ),
        (
            "the access cookie in another letter case".into(),
            vec![format!("{upper}={xa}; {access}={va}")],
        ),
        (
            "a __Host- twin of the access cookie".into(),
            vec![format!(
                "__Host-portcullis={xa}; portcullis={va}; {access}={va}"
            )],
        ),
        (
            "a __Secure- twin of the refresh cookie".into(),
            vec![format!(
                "__Secure-portcullis_refresh={xr}; portcullis_refresh={vr}; {access}={va}"
            )],
        ),
        (
            "two CSRF cookies beside a live access cookie".into(),
            vec![format!(
                "portcullis_csrf=a; {access}={va}; Portcullis_CSRF=b"
            )],
        ),
        (
            "copies on two Cookie lines".into(),
            vec![
                format!("{access}={xa}"),
                format!("theme=dark; {access}={va}"),
            ],
        ),
        (
            "an empty copy beside the victim's".into(),
            vec![format!("{access}=; {access}={va}")],
        ),
    ]
}

/// Runs every case of [`tossed_cases`] through every way in, after a control that proves the
/// victim's single cookie does authenticate.
async fn each_tossed_request_is_anonymous_and_cleared(app: &TestApp, domains: &[&str]) {
    let victim = "victim@example.com";
    let attacker = "attacker@example.com";
    app.verified_user(victim).await;
    app.verified_user(attacker).await;
    let v = app.login(victim).await;
    let x = app.login(attacker).await;
    let rules = app.gw.app.access.cookies();
    let (access, refresh) = (rules.access, rules.refresh);

    let control = vec![format!("{access}={}", v.access)];
    let (status, headers, body) = send(app, WayIn::ProxyBrowser, &control, "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains(victim), "the control authenticates: {body}");
    assert!(headers.get("x-upstream").is_some());

    for (what, lines) in tossed_cases(&v, &x, access, refresh) {
        for way in WAYS_IN {
            let (status, headers, body) = send(app, way, &lines, &v.access).await;
            assert_anonymous(&what, way, status, &headers, &body);
            assert!(!body.contains(attacker), "{what} via {way:?}: {body}");
            assert_cleared(&what, way, &lines, &set_cookies(&headers), domains);
        }
    }
    // Nothing above ended or rotated the victim's session.
    let r = app.get_as(&v.access, "/api/auth/profile").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_cookie_sent_twice_is_no_credentials_anywhere_and_every_copy_is_cleared() {
    let up = EchoUpstream::start().await;
    for backend in backends() {
        let app = TestApp::spawn(backend, &routes(&up.url())).await;
        each_tossed_request_is_anonymous_and_cleared(&app, &[]).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn copies_are_cleared_on_the_shared_domain_and_every_parent_of_the_host() {
    let up = EchoUpstream::start().await;
    let app = TestApp::spawn_with(Backend::Embedded, &routes(&up.url()), |c| {
        c.server.public_url = format!("http://auth.sso.example.test:{}", c.server.listen.port())
            .parse()
            .unwrap();
        c.sessions.cookie_domain = "example.test".into();
    })
    .await;
    each_tossed_request_is_anonymous_and_cleared(
        &app,
        &["example.test", "auth.sso.example.test", "sso.example.test"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn over_https_only_the_host_prefixed_names_count_and_twins_are_cleared() {
    let up = EchoUpstream::start().await;
    let app = TestApp::spawn_with(Backend::Embedded, &routes(&up.url()), |c| {
        c.server.public_url = "https://auth.example.test".parse().unwrap();
    })
    .await;
    let rules = app.gw.app.access.cookies();
    assert_eq!(
        [rules.access, rules.refresh, rules.csrf],
        [
            "__Host-portcullis",
            "__Host-portcullis_refresh",
            "__Host-portcullis_csrf"
        ]
    );
    each_tossed_request_is_anonymous_and_cleared(&app, &["auth.example.test", "example.test"])
        .await;
    // A sibling can set the unprefixed name, never the gateway's: alone it is nobody.
    let x = app.login("attacker@example.com").await;
    for name in ["portcullis", "__Secure-portcullis", "__HOST-portcullis"] {
        let lines = vec![format!("{name}={}", x.access)];
        let (status, headers, body) = send(&app, WayIn::Verify, &lines, "").await;
        assert_anonymous(name, WayIn::Verify, status, &headers, &body);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_csrf_token_changes_at_sign_in_and_sign_out_and_the_old_one_is_refused() {
    let up = EchoUpstream::start().await;
    let app = TestApp::spawn(Backend::Embedded, &routes(&up.url())).await;
    app.verified_user("rotate@example.com").await;
    let browser = Browser::new(&app.gw.url());
    let before = browser.get("/auth/login").await;
    let (cookie_before, token_before) = (browser.cookie("portcullis_csrf").unwrap(), before.csrf());

    // Sign-in: a new cookie, and the token learnt before it no longer fits.
    let signed_in = browser
        .post(
            "/auth/login",
            &[
                ("csrf_token", &token_before),
                ("email", "rotate@example.com"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(
        signed_in.status,
        StatusCode::SEE_OTHER,
        "{}",
        signed_in.body
    );
    let cookie_after = browser.cookie("portcullis_csrf").unwrap();
    assert_ne!(cookie_after, cookie_before, "{:?}", signed_in.set_cookies());
    let old = browser
        .post("/auth/logout", &[("csrf_token", &token_before)])
        .await;
    assert_eq!(old.status, StatusCode::FORBIDDEN, "{}", old.body);
    assert!(browser.cookie("portcullis").is_some(), "still signed in");

    // Sign-out with the new token: another new cookie, and that token is refused after.
    let account = browser.get("/auth/account").await;
    assert_eq!(account.status, StatusCode::OK, "{}", account.body);
    let token_signed_in = account.csrf();
    assert_ne!(token_signed_in, token_before);
    let out = browser
        .post("/auth/logout", &[("csrf_token", &token_signed_in)])
        .await;
    assert_eq!(out.status, StatusCode::OK, "{}", out.body);
    let cookie_out = browser.cookie("portcullis_csrf").unwrap();
    assert_ne!(cookie_out, cookie_after);
    let stale = browser
        .post(
            "/auth/login",
            &[
                ("csrf_token", &token_signed_in),
                ("email", "rotate@example.com"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(stale.status, StatusCode::FORBIDDEN, "{}", stale.body);
    assert_eq!(browser.cookie("portcullis"), None, "not signed in by it");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_origin_is_the_portals_own_only_when_it_is_the_public_url_or_an_allowed_host() {
    let up = EchoUpstream::start().await;
    let app = TestApp::spawn_with(Backend::Embedded, &routes(&up.url()), |c| {
        c.server.public_url = format!("http://auth.example.test:{}", c.server.listen.port())
            .parse()
            .unwrap();
        c.portal.allowed_return_hosts = vec!["app.example.test:8443".into()];
    })
    .await;
    let public = app.gw.app.config.server.public_url.clone();
    let port = app.gw.app.config.server.listen.port();
    let browser = Browser::new(&app.gw.url());
    let page = browser.get("/auth/login").await;
    let token = page.csrf();
    let form = [
        ("csrf_token", token.as_str()),
        ("email", "nobody@example.com"),
        ("password", "wrong-password"),
    ];
    let evil_host = format!("evil.example.test:{port}");
    let evil_origin = format!("http://{evil_host}");
    let gateway_host = app.gw.url().trim_start_matches("http://").to_owned();
    let gateway_origin = app.gw.url();
    for (what, host, origin, own) in [
        (
            "the request's own Host",
            evil_host.as_str(),
            evil_origin.as_str(),
            false,
        ),
        (
            "the listener's address as Host",
            gateway_host.as_str(),
            gateway_origin.as_str(),
            false,
        ),
        ("public_url", gateway_host.as_str(), public.as_str(), true),
        (
            "public_url, another Host",
            evil_host.as_str(),
            public.as_str(),
            true,
        ),
        (
            "an allowed host and its port",
            evil_host.as_str(),
            "http://app.example.test:8443",
            true,
        ),
        (
            "an allowed host, no port",
            gateway_host.as_str(),
            "http://app.example.test",
            false,
        ),
        (
            "an allowed host, https",
            gateway_host.as_str(),
            "https://app.example.test:8443",
            false,
        ),
        (
            "public_url's host, https",
            gateway_host.as_str(),
            "https://auth.example.test",
            false,
        ),
    ] {
        let r = browser
            .post_with(
                "/auth/login",
                &form,
                &[
                    ("host", host),
                    ("origin", origin),
                    ("sec-fetch-site", "same-origin"),
                ],
            )
            .await;
        if own {
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}: {}", r.body);
        } else {
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{what}: {}", r.body);
            assert!(r.body.contains("reload the page"), "{what}: {}", r.body);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn return_to_keeps_the_scheme_and_port_of_public_url_or_of_an_allowed_host() {
    let up = EchoUpstream::start().await;
    let app = TestApp::spawn_with(Backend::Embedded, &routes(&up.url()), |c| {
        c.server.public_url = "https://auth.example.test".parse().unwrap();
        c.portal.allowed_return_hosts = vec![
            "app.example.test".into(),
            "api.example.test:8443".into(),
            "xn--bcher-kva.example.test".into(),
        ];
    })
    .await;
    let accepted = [
        ("/app/x?y=1", "/app/x?y=1"),
        ("https://auth.example.test/x", "https://auth.example.test/x"),
        (
            "https://auth.example.test:443/x",
            "https://auth.example.test/x",
        ),
        ("https://AUTH.Example.TEST/x", "https://auth.example.test/x"),
        ("HTTPS://app.example.test/x", "https://app.example.test/x"),
        (
            "https://app.example.test:443/x",
            "https://app.example.test/x",
        ),
        (
            "https://app.example.test:0443/x",
            "https://app.example.test/x",
        ),
        (
            "https://api.example.test:8443/x",
            "https://api.example.test:8443/x",
        ),
        (
            "https://xn--bcher-kva.example.test/",
            "https://xn--bcher-kva.example.test/",
        ),
        (
            "https://XN--BCHER-KVA.example.test/",
            "https://xn--bcher-kva.example.test/",
        ),
    ];
    let refused = [
        "http://auth.example.test/x",
        "http://app.example.test/x",
        "http://app.example.test:443/x",
        "http://api.example.test:8443/x",
        "https://auth.example.test:8443/x",
        "https://app.example.test:8443/x",
        "https://app.example.test:80/x",
        "https://api.example.test/x",
        "https://api.example.test:443/x",
        "https://api.example.test:8444/x",
        "https://user@app.example.test/x",
        "https://user:pw@app.example.test/x",
        "https://app.example.test@evil.example/x",
        "https://evil.example\\@app.example.test/x",
        "https://evil.example\\.app.example.test/x",
        "https://app.example.test.evil.example/x",
        "https://bücher.example.test/",
        "https://evil.example/x",
        "//evil.example/x",
        "///evil.example/x",
        "/\\evil.example/x",
        "\\\\evil.example/x",
        "https:/\\evil.example/x",
        "https:evil.example/x",
        "ftp://app.example.test/x",
        "javascript:alert(1)",
    ];
    for (input, expected) in accepted {
        let page = app
            .http
            .get(app.url(&format!("/auth/login?return_to={}", urlencode(input))))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let field = hidden_return_to(&page);
        assert_eq!(field, expected, "{input}");
    }
    for input in refused {
        let page = app
            .http
            .get(app.url(&format!("/auth/login?return_to={}", urlencode(input))))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(hidden_return_to(&page), "", "{input}");
    }
}

/// The `return_to` the sign-in form carries on (what the portal accepted), `""` for none.
fn hidden_return_to(page: &str) -> String {
    let html = crate::support::browser::Html {
        status: StatusCode::OK,
        headers: HeaderMap::new(),
        body: page.to_owned(),
    };
    html.input("return_to").unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn after_sign_in_the_browser_goes_only_where_return_to_may_lead() {
    let up = EchoUpstream::start().await;
    let app = TestApp::spawn_with(Backend::Embedded, &routes(&up.url()), |c| {
        c.portal.allowed_return_hosts = vec!["app.example.test:8443".into()];
    })
    .await;
    app.verified_user("return@example.com").await;
    let public = app.gw.app.config.server.public_url.clone();
    let own = format!("{public}/app/y");
    for (input, location) in [
        (
            "http://app.example.test:8443/x",
            "http://app.example.test:8443/x",
        ),
        ("https://app.example.test:8443/x", "/auth/account"),
        ("http://app.example.test/x", "/auth/account"),
        ("http://app.example.test:80/x", "/auth/account"),
        (own.as_str(), own.as_str()),
    ] {
        let browser = Browser::new(&app.gw.url());
        let r = browser.sign_in("return@example.com", PASSWORD, input).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{input}: {}", r.body);
        assert_eq!(r.location(), location, "{input}");
    }
}

/// A sibling host's page: answers `GET {path}` with a page that sets the `Set-Cookie` lines
/// listed for that path (404 for any other path).
struct Planter {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Planter {
    async fn start(pages: Vec<(&'static str, Vec<String>)>) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the sibling host");
        let port = listener.local_addr().expect("address").port();
        let pages = std::sync::Arc::new(pages);
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let pages = pages.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let line = String::from_utf8_lossy(&head);
                    let path = line.split(' ').nth(1).unwrap_or("").to_owned();
                    let page = pages.iter().find(|(p, _)| *p == path);
                    let mut answer = match page {
                        Some(_) => "HTTP/1.1 200 OK\r\n".to_owned(),
                        None => "HTTP/1.1 404 Not Found\r\n".to_owned(),
                    };
                    for cookie in page.map(|(_, c)| c.as_slice()).unwrap_or(&[]) {
                        answer.push_str(&format!("Set-Cookie: {cookie}\r\n"));
                    }
                    let body = "<!DOCTYPE html><title>sibling</title><p>planted</p>";
                    answer.push_str(&format!(
                        "Content-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    ));
                    let _ = stream.write_all(answer.as_bytes()).await;
                });
            }
        });
        Self { port, task }
    }
}

impl Drop for Planter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// After a sibling host planted cookies: the app the browser reaches shows the victim or
/// nobody (the sign-in page), never the attacker; and no planted value is left in the
/// browser. Signs the victim in again when it was signed out.
async fn victim_stays_themselves(
    browser: &webdriver::Browser,
    base: &str,
    victim: &str,
    attacker: &Tokens,
    attacker_email: &str,
) {
    browser.goto(&format!("{base}/app/home")).await;
    let url = browser.url().await;
    let source = browser.source().await;
    assert!(
        !source.contains(attacker_email),
        "the attacker's identity: {source}"
    );
    if url.contains("/app/home") {
        assert!(source.contains(victim), "{url}: {source}");
    } else {
        assert!(url.contains("/auth/login"), "{url}: {source}");
    }
    for cookie in browser.all_cookies().await {
        let value = cookie["value"].as_str().unwrap_or("");
        assert!(
            value != attacker.access && value != attacker.refresh,
            "a planted cookie is left: {cookie}"
        );
    }
    if !url.contains("/app/home") {
        browser.type_into("#email", victim).await;
        browser.type_into("#password", PASSWORD).await;
        browser.click("form button[type=submit]").await;
        browser.wait_for_url("/app/home").await;
    }
    let source = browser.source().await;
    assert!(
        source.contains("x-user-email") && source.contains(victim),
        "{source}"
    );
    assert!(!source.contains(attacker_email), "{source}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cookies_a_sibling_host_plants_never_sign_the_victim_in_as_the_attacker_in_chromium() {
    if !webdriver::available() {
        assert!(!in_ci(), "CI=true but chromium or chromedriver is missing");
        eprintln!("skipped: chromium and chromedriver are not installed");
        return;
    }
    let up = EchoUpstream::start().await;
    let app = TestApp::spawn_with(Backend::Embedded, &routes(&up.url()), |c| {
        c.server.public_url = format!("http://victim.example.test:{}", c.server.listen.port())
            .parse()
            .unwrap();
    })
    .await;
    let base = app.gw.app.config.server.public_url.clone();
    let (victim, attacker_email) = ("victim@example.com", "attacker@example.com");
    app.verified_user(victim).await;
    app.verified_user(attacker_email).await;
    // The attacker's own, valid sign-in: what it plants in the victim's browser.
    let attacker = app.login(attacker_email).await;
    let planted_at = |path: &str, name: &str, value: &str| {
        format!("{name}={value}; Domain=example.test; Path={path}; Max-Age=600; SameSite=Lax")
    };
    let planted = |name: &str, value: &str| planted_at("/app", name, value);
    let evil = Planter::start(vec![
        (
            "/both",
            vec![
                planted("portcullis", &attacker.access),
                planted("portcullis_refresh", &attacker.refresh),
            ],
        ),
        (
            "/refresh",
            vec![planted("portcullis_refresh", &attacker.refresh)],
        ),
        (
            "/portal-refresh",
            vec![planted_at("/auth", "portcullis_refresh", &attacker.refresh)],
        ),
    ])
    .await;
    let evil_base = format!("http://evil.example.test:{}", evil.port);
    let driver = ChromeDriver::start().await;
    let browser = driver
        .session_with(
            "en-US",
            &[
                "--host-resolver-rules=MAP victim.example.test 127.0.0.1, MAP evil.example.test 127.0.0.1".into(),
                "--disable-features=HttpsUpgrades".into(),
            ],
        )
        .await;

    // The victim signs in; the app sees the victim.
    browser.goto(&format!("{base}/app/home")).await;
    browser.wait_for_url("/auth/login").await;
    browser.type_into("#email", victim).await;
    browser.type_into("#password", PASSWORD).await;
    browser.click("form button[type=submit]").await;
    browser.wait_for_url("/app/home").await;
    assert!(browser.source().await.contains(victim));

    // A sibling page plants an access and a refresh cookie for the whole parent domain,
    // on a longer path than the gateway's: Chromium sends them first.
    browser.goto(&format!("{evil_base}/both")).await;
    let jar = browser.all_cookies().await;
    assert!(
        jar.iter().any(|c| c["value"] == attacker.access.as_str()
            && c["domain"]
                .as_str()
                .is_some_and(|d| d.ends_with("example.test"))),
        "the sibling could not plant: {jar:#?}"
    );
    victim_stays_themselves(&browser, &base, victim, &attacker, attacker_email).await;

    // The victim's access cookie has expired; a planted refresh cookie waits beside theirs.
    browser.delete_cookie("portcullis").await;
    browser.goto(&format!("{evil_base}/refresh")).await;
    victim_stays_themselves(&browser, &base, victim, &attacker, attacker_email).await;

    // The same on the portal's path, where a browser whose access expired is renewed.
    browser.delete_cookie("portcullis").await;
    browser.goto(&format!("{evil_base}/portal-refresh")).await;
    browser.goto(&format!("{base}/auth/account")).await;
    let source = browser.source().await;
    assert!(!source.contains(attacker_email), "{source}");
    victim_stays_themselves(&browser, &base, victim, &attacker, attacker_email).await;

    // The attacker's session was never used on the victim's behalf: it is still its own.
    let r = app.get_as(&attacker.access, "/api/auth/profile").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    browser.quit().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sign_in_clears_other_spellings_of_the_names_it_sets() {
    let up = EchoUpstream::start().await;
    let app = TestApp::spawn_with(Backend::Embedded, &routes(&up.url()), |c| {
        c.server.public_url = "https://auth.example.test".parse().unwrap();
    })
    .await;
    app.verified_user("upgrade@example.com").await;
    let page = app.http.get(app.url("/auth/login")).send().await.unwrap();
    let csrf_cookie = set_cookies(page.headers())
        .into_iter()
        .find_map(|c| c.split(';').next().map(str::to_owned))
        .expect("a CSRF cookie");
    assert!(
        csrf_cookie.starts_with("__Host-portcullis_csrf="),
        "{csrf_cookie}"
    );
    let token = crate::support::browser::Html {
        status: page.status(),
        headers: page.headers().clone(),
        body: page.text().await.unwrap(),
    }
    .csrf();
    // A refresh cookie under the name an earlier version used, one in another letter case.
    for stray in ["__Secure-portcullis_refresh", "__host-Portcullis"] {
        let r = app
            .http
            .post(app.url("/auth/login"))
            .header("cookie", format!("{csrf_cookie}; {stray}=old"))
            .header("sec-fetch-site", "same-origin")
            .form(&[
                ("csrf_token", token.as_str()),
                ("email", "upgrade@example.com"),
                ("password", PASSWORD),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{stray}");
        let set = set_cookies(r.headers());
        let cleared = format!("{stray}=; Path=/; Max-Age=0; Secure");
        assert!(set.contains(&cleared), "{stray}: {set:#?}");
        assert!(
            set.iter()
                .any(|c| c.starts_with("__Host-portcullis_refresh=") && !c.contains("Max-Age=0")),
            "{stray}: {set:#?}"
        );
    }
}

/// `Authorization` of another scheme (`Basic`, `Negotiate`, an empty value) is the
/// application's credential: the session cookie stays in charge, and a route that forwards
/// the client's `Authorization` passes it on. A Bearer token is judged alone, and a browser
/// whose token fails is told so (401) rather than sent to sign in, which would bring it back
/// with the same token, round and round. The account API, which reads only Bearer, also
/// counts a gateway cookie sent twice as no credentials.
#[tokio::test(flavor = "multi_thread")]
async fn another_authorization_scheme_leaves_the_cookie_in_charge_and_a_bearer_is_judged_alone() {
    let up = EchoUpstream::start().await;
    let extra = format!(
        "{}[[routes]]\nname = \"fwd\"\npath_prefix = \"/fwd\"\nupstream = \"{}\"\n\
         policy = \"authenticated\"\nforward_authorization = true\n",
        routes(&up.url()),
        up.url()
    );
    for backend in backends() {
        let app = TestApp::spawn(backend, &extra).await;
        let email = "schemes@example.com";
        app.verified_user(email).await;
        let t = app.login(email).await;
        let access = app.gw.app.access.cookies().access;
        let cookie = format!("{access}={}", t.access);
        let valid = format!("Bearer {}", t.access);
        let cases: &[(&str, &[&str], bool, StatusCode)] = &[
            ("/app/x", &["Basic YTpi"], true, StatusCode::OK),
            ("/app/x", &["Negotiate YWJj"], true, StatusCode::OK),
            ("/app/x", &["Digest username=\"a\""], true, StatusCode::OK),
            ("/app/x", &[""], true, StatusCode::OK),
            ("/fwd/x", &["Basic YTpi"], true, StatusCode::OK),
            ("/api/auth/verify", &["Basic YTpi"], true, StatusCode::OK),
            (
                "/app/x",
                &["Bearer garbage"],
                true,
                StatusCode::UNAUTHORIZED,
            ),
            (
                "/app/x",
                &["bearer garbage"],
                true,
                StatusCode::UNAUTHORIZED,
            ),
            ("/app/x", &["Bearer"], true, StatusCode::UNAUTHORIZED),
            ("/app/x", &[valid.as_str()], false, StatusCode::OK),
            (
                "/app/x",
                &[valid.as_str(), "Basic YTpi"],
                true,
                StatusCode::UNAUTHORIZED,
            ),
            (
                "/api/auth/verify",
                &["Bearer garbage"],
                true,
                StatusCode::UNAUTHORIZED,
            ),
        ];
        for (path, authorizations, with_cookie, expected) in cases {
            let mut request = app.http.get(app.url(path)).header("accept", "text/html");
            for value in *authorizations {
                request = request.header("authorization", *value);
            }
            if *with_cookie {
                request = request.header("cookie", &cookie);
            }
            let r = request.send().await.unwrap();
            let what = format!("{path} {authorizations:?} cookie={with_cookie}");
            assert_eq!(r.status(), *expected, "{what}");
            if *expected != StatusCode::OK || path.starts_with("/api/") {
                continue;
            }
            let body = r.text().await.unwrap();
            assert!(body.contains(email), "{what}: {body}");
            let forwards_own = path.starts_with("/fwd");
            assert_eq!(
                body.contains("YTpi"),
                forwards_own,
                "{what}: the app's own Authorization: {body}"
            );
            assert!(
                !body.contains(&t.access),
                "{what}: our token reached the app"
            );
        }
        let twice = format!("{cookie}; {access}=x");
        let r = app
            .http
            .get(app.url("/api/auth/profile"))
            .bearer_auth(&t.access)
            .header("cookie", twice)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::UNAUTHORIZED,
            "API with a cookie twice"
        );
        let r = app.get_as(&t.access, "/api/auth/profile").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
}
