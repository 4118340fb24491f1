//! Forward-auth (`/api/auth/verify`) spoken to directly: it fails closed on any query it
//! does not know, decides every method like GET, and never renews (the portal does).

use crate::support::app::*;
use crate::support::browser::Browser;
use reqwest::{Method, StatusCode};

/// Queries forward-auth does not take, and the key its 400 must name.
const UNDOCUMENTED: &[(&str, &str)] = &[
    ("two_factor=True", "two_factor"),
    ("two_factor=TRUE", "two_factor"),
    ("two_factor=yes", "two_factor"),
    ("two_factor=on", "two_factor"),
    ("two_factor=1", "two_factor"),
    ("two_factor=0", "two_factor"),
    ("two_factor=2", "two_factor"),
    ("two_factor=", "two_factor"),
    ("two_factor", "two_factor"),
    ("two_factor=%74RUE", "two_factor"),
    ("%74wo_factor=True", "two_factor"),
    ("verified=yes", "verified"),
    ("verified=1", "verified"),
    ("verified=FALSE", "verified"),
    ("two-factor=true", "two-factor"),
    ("twofactor=true", "twofactor"),
    ("Two_Factor=true", "Two_Factor"),
    ("%54wo_factor=true", "Two_factor"),
    ("two_factor%20=true", "two_factor "),
    ("role=admin", "role"),
    ("Roles=admin", "Roles"),
    ("roles[]=admin", "roles[]"),
    ("roles%5B%5D=admin", "roles[]"),
    ("roles[0]=admin", "roles[0]"),
    ("verify=true", "verify"),
    ("=true", ""),
    ("two_factor=true&two_factor=true", "two_factor"),
    ("two_factor=false&%74wo_factor=true", "two_factor"),
    ("verified=true&verified=false", "verified"),
    ("roles=admin&roles=ops", "roles"),
    ("roles=", "roles"),
    ("roles", "roles"),
    ("roles=admin,,ops", "roles"),
    ("roles=,admin", "roles"),
    ("roles=admin,", "roles"),
    ("roles=%20,admin", "roles"),
];

/// Every method a client or proxy may ask with (TRACE is refused by the gateway for every
/// path, with 405).
const METHODS: &[&str] = &["GET", "HEAD", "OPTIONS", "POST", "PUT", "DELETE", "PATCH"];

async fn verify(app: &TestApp, method: &str, query: &str, token: Option<&str>) -> Answer {
    let path = if query.is_empty() {
        "/api/auth/verify".to_owned()
    } else {
        format!("/api/auth/verify?{query}")
    };
    app.call(method.parse().unwrap(), &path, token, None).await
}

#[tokio::test(flavor = "multi_thread")]
async fn undocumented_keys_and_values_are_400_naming_the_key() {
    let app = TestApp::spawn(Backend::Embedded, "").await;
    app.verified_user("query@example.com").await;
    let t = app.login("query@example.com").await;
    for (query, key) in UNDOCUMENTED {
        for token in [Some(t.access.as_str()), None] {
            let r = verify(&app, "GET", query, token).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}: {}", r.body);
            assert_eq!(r.code(), "validation_error", "{query}");
            assert_eq!(r.body["errors"][0]["field"], *key, "{query}: {}", r.body);
            assert!(r.headers.get("x-user-id").is_none(), "{query}");
        }
        let r = verify(&app, "OPTIONS", query, Some(&t.access)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "OPTIONS {query}");
    }
    // An unknown key is named, but only its first 32 characters.
    let long = "x".repeat(5000);
    let r = verify(&app, "GET", &format!("{long}=true"), Some(&t.access)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let field = r.body["errors"][0]["field"].as_str().unwrap();
    assert_eq!(field.chars().count(), 33, "{field}");
    assert!(!r.body.to_string().contains(&"x".repeat(40)));
}

#[tokio::test(flavor = "multi_thread")]
async fn documented_queries_are_decoded_and_enforced() {
    let app = TestApp::spawn(Backend::Embedded, "").await;
    app.verified_user("plain@example.com").await;
    let t = app.login("plain@example.com").await;
    let cases: &[(&str, StatusCode)] = &[
        ("", StatusCode::OK),
        ("two_factor=false", StatusCode::OK),
        ("verified=true", StatusCode::OK),
        ("verified=false&two_factor=false", StatusCode::OK),
        ("two_factor=true", StatusCode::FORBIDDEN),
        // Percent-decoded, then compared: the same requirement, enforced.
        ("%74wo_factor=true", StatusCode::FORBIDDEN),
        ("two_factor=%74rue", StatusCode::FORBIDDEN),
        ("roles=admin", StatusCode::FORBIDDEN),
        ("roles=admin,%20ops", StatusCode::FORBIDDEN),
        ("&&two_factor=true&", StatusCode::FORBIDDEN),
    ];
    for (query, status) in cases {
        let r = verify(&app, "GET", query, Some(&t.access)).await;
        assert_eq!(r.status, *status, "{query}: {}", r.body);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_method_is_decided_like_get() {
    for backend in backends() {
        let app = TestApp::spawn(
            backend,
            "[cors]\nallowed_origins = [\"https://app.example.com\"]\nallow_credentials = true\n",
        )
        .await;
        app.verified_user("methods@example.com").await;
        let t = app.login("methods@example.com").await;
        for method in METHODS {
            for query in ["", "roles=admin", "two_factor=true"] {
                let r = verify(&app, method, query, None).await;
                assert_eq!(
                    r.status,
                    StatusCode::UNAUTHORIZED,
                    "{backend:?} {method} ?{query}"
                );
            }
            let r = verify(&app, method, "", Some(&t.access)).await;
            assert_eq!(r.status, StatusCode::OK, "{backend:?} {method}");
            assert_eq!(r.headers["x-user-email"], "methods@example.com");
            for query in [
                "roles=admin",
                "two_factor=true",
                "roles=admin&two_factor=true",
            ] {
                let r = verify(&app, method, query, Some(&t.access)).await;
                assert_eq!(
                    r.status,
                    StatusCode::FORBIDDEN,
                    "{backend:?} {method} ?{query}"
                );
                assert!(r.headers.get("x-user-id").is_none());
            }
        }
        // A CORS preflight from an allowed origin is no way around it either.
        let r = app
            .http
            .request(Method::OPTIONS, app.url("/api/auth/verify?roles=admin"))
            .header("origin", "https://app.example.com")
            .header("access-control-request-method", "GET")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{backend:?}");
        let r = app
            .call(Method::TRACE, "/api/auth/verify", Some(&t.access), None)
            .await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    }
}

/// A browser whose access cookie is gone but whose refresh cookie is good: forward-auth says
/// 401 and leaves the refresh token alone; the portal's sign-in page renews it and sends the
/// browser back.
#[tokio::test(flavor = "multi_thread")]
async fn forward_auth_never_renews_and_the_sign_in_page_does() {
    for backend in backends() {
        let app = TestApp::spawn(backend, "").await;
        app.verified_user("renew@example.com").await;
        let t = app.login("renew@example.com").await;
        let refresh_only = format!("portcullis_refresh={}", t.refresh);
        for method in ["GET", "HEAD", "OPTIONS"] {
            let r = app
                .http
                .request(method.parse().unwrap(), app.url("/api/auth/verify"))
                .header("cookie", &refresh_only)
                .header("accept", "text/html")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{backend:?} {method}");
            assert!(
                r.headers().get("set-cookie").is_none(),
                "{backend:?} {method}"
            );
        }
        let browser = Browser::new(&app.gw.url());
        let url = app.gw.url().parse().unwrap();
        browser
            .jar
            .add_cookie_str(&format!("{refresh_only}; Path=/"), &url);
        let page = browser.get("/auth/login?return_to=/app/page").await;
        assert!(page.status.is_redirection(), "{backend:?}: {}", page.body);
        assert_eq!(page.location(), "/app/page");
        let access = browser.cookie("portcullis").expect("renewed access cookie");
        let r = app.get_as(&access, "/api/auth/verify").await;
        assert_eq!(r.status, StatusCode::OK, "{backend:?}");
        // The token forward-auth saw was never rotated; the portal's rotation was the one
        // use, so the session is live and nothing was taken for a theft.
        assert_eq!(app.gw.app.metrics.refresh_reuse.get(), 0, "{backend:?}");
        let r = app.get_as(&access, "/api/auth/sessions").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
}

/// The routes forward-auth decides by when a trusted proxy describes the original request.
fn rule_routes() -> String {
    let route = |name: &str, host: &str, prefix: &str, rest: &str| {
        format!(
            "[[routes]]\nname = \"{name}\"\nhost = \"{host}\"\npath_prefix = \"{prefix}\"\n\
             upstream = \"http://127.0.0.1:9\"\n{rest}\n"
        )
    };
    [
        route("open", "", "/open", "policy = \"public\""),
        route("readonly", "", "/readonly", "methods = [\"GET\", \"HEAD\"]"),
        route("lan", "", "/lan", "networks = [\"10.0.0.0/8\"]"),
        route("ops", "", "/ops", "roles = [\"ops\"]"),
        route("tenants", "*.apps.example", "/", "policy = \"deny\""),
    ]
    .concat()
}

/// Query, described method/host/URI, extra headers, token, status and code.
type DescribedCase<'a> = (
    &'a str,
    [Option<&'a str>; 3],
    &'a [(&'a str, &'a str)],
    Option<&'a str>,
    u16,
    &'a str,
);

/// A forward-auth call describing `method host uri` (`None` leaves a header out), with
/// extra headers and, when given, a token.
async fn described(
    app: &TestApp,
    query: &str,
    original: [Option<&str>; 3],
    extra: &[(&str, &str)],
    token: Option<&str>,
) -> Answer {
    let path = format!("/api/auth/verify{query}");
    let mut request = app.http.get(app.url(&path));
    for (name, value) in ["x-forwarded-method", "x-forwarded-host", "x-forwarded-uri"]
        .into_iter()
        .zip(original)
    {
        if let Some(value) = value {
            request = request.header(name, value);
        }
    }
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let r = request.send().await.unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let body = r.json().await.unwrap_or(serde_json::Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trusted_proxys_original_request_is_decided_by_the_route_table() {
    for backend in backends() {
        let app = TestApp::spawn_with(backend, &rule_routes(), |c| {
            c.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        })
        .await;
        app.verified_user("fa-rules@example.com").await;
        let t = app.login("fa-rules@example.com").await;
        let token = Some(t.access.as_str());
        let host = Some("app.example");
        let lan = [("x-forwarded-for", "10.1.2.3")];
        let away = [("x-forwarded-for", "192.0.2.1")];
        #[rustfmt::skip]
        let cases: &[DescribedCase] = &[
            ("", [Some("GET"), host, Some("/open/x")], &[], None, 200, ""),
            // The query stays a stricter extra: a public route asked for a second factor.
            ("?two_factor=true", [Some("GET"), host, Some("/open/x")], &[], None, 401, "authentication_required"),
            ("", [Some("GET"), host, Some("/readonly")], &[], token, 200, ""),
            ("", [Some("HEAD"), host, Some("/readonly")], &[], token, 200, ""),
            ("", [Some("POST"), host, Some("/readonly")], &[], token, 405, "method_not_allowed"),
            ("", [Some("GET"), host, Some("/lan/x")], &lan, token, 200, ""),
            ("", [Some("GET"), host, Some("/lan/x")], &away, token, 403, "forbidden_network"),
            ("", [Some("GET"), host, Some("/ops")], &[], token, 403, "forbidden_role"),
            // Canonicalised as a proxied request: dot segments, escapes and case.
            ("", [Some("GET"), host, Some("/open/../ops")], &[], token, 403, "forbidden_role"),
            ("", [Some("GET"), host, Some("/open/%2e%2e/ops?x=1")], &[], token, 403, "forbidden_role"),
            ("", [Some("GET"), host, Some("/open%2Fx")], &[], token, 400, "encoded_slash"),
            ("", [Some("GET"), host, Some("/open\\x")], &[], token, 400, "invalid_path"),
            ("", [Some("GET"), host, Some("/OPS")], &[], token, 400, "ambiguous_path"),
            ("", [Some("GET"), host, Some("open")], &[], token, 400, "invalid_forwarded_request"),
            // The host is X-Forwarded-Host's: a target in absolute form (or `*`) is refused,
            // whatever host it names.
            ("", [Some("GET"), host, Some("http://x/open")], &[], token, 400, "invalid_forwarded_request"),
            ("", [Some("GET"), Some("x"), Some("http://app.example/ops")], &[], token, 400, "invalid_forwarded_request"),
            ("", [Some("OPTIONS"), host, Some("*")], &[], token, 400, "invalid_forwarded_request"),
            ("", [Some("GET"), Some("app.example:99999"), Some("/open")], &[], token, 400, "invalid_host"),
            ("", [Some("GET"), Some("a, b"), Some("/open")], &[], token, 400, "invalid_host"),
            // Hosts as routes see them.
            ("", [Some("GET"), Some("x.apps.example"), Some("/open")], &[], token, 403, "forbidden"),
            ("", [Some("GET"), Some("apps.example"), Some("/open")], &[], None, 200, ""),
            // No route: the query alone decides, as without a description.
            ("", [Some("GET"), host, Some("/elsewhere")], &[], None, 401, "authentication_required"),
            ("", [Some("GET"), host, Some("/elsewhere")], &[], token, 200, ""),
            // A description is whole or refused.
            ("", [None, host, Some("/open")], &[], token, 400, "invalid_forwarded_request"),
            ("", [Some("GET"), None, Some("/open")], &[], token, 400, "invalid_forwarded_request"),
            ("", [Some("GET"), host, None], &[], token, 400, "invalid_forwarded_request"),
            ("", [Some("G ET"), host, Some("/open")], &[], token, 400, "invalid_forwarded_request"),
            ("", [Some("GET"), host, Some("/open")], &[("x-forwarded-proto", "gopher")], token, 400, "invalid_forwarded_request"),
        ];
        for (query, original, extra, token, status, code) in cases {
            let r = described(&app, query, *original, extra, *token).await;
            let what = format!("{backend:?} {query} {original:?} {extra:?}");
            assert_eq!(r.status.as_u16(), *status, "{what}: {}", r.body);
            if !code.is_empty() {
                assert_eq!(r.code(), *code, "{what}: {}", r.body);
            }
        }
        let r = described(
            &app,
            "",
            [Some("DELETE"), host, Some("/readonly")],
            &[],
            token,
        )
        .await;
        assert_eq!(r.headers["allow"], "GET, HEAD");
        // The answer for a public route carries no identity; one for a named route does.
        let r = described(&app, "", [Some("GET"), host, Some("/open")], &[], token).await;
        assert!(r.headers.get("x-user-id").is_none());
        let r = described(&app, "", [Some("GET"), host, Some("/lan")], &lan, token).await;
        assert_eq!(r.headers["x-user-email"], "fa-rules@example.com");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_untrusted_peers_description_is_ignored() {
    for backend in backends() {
        // No trusted proxies: the test client is a client like any other.
        let app = TestApp::spawn(backend, &rule_routes()).await;
        app.verified_user("fa-spoof@example.com").await;
        let t = app.login("fa-spoof@example.com").await;
        let host = Some("app.example");
        // A public route named by a client does not open anything...
        let r = described(&app, "", [Some("GET"), host, Some("/open")], &[], None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{backend:?}");
        // ...a route's conditions it names are not applied either: the query decides.
        for uri in ["/ops", "/lan", "/OPS", "/open%2Fx"] {
            let r = described(
                &app,
                "",
                [Some("POST"), host, Some(uri)],
                &[],
                Some(&t.access),
            )
            .await;
            assert_eq!(r.status, StatusCode::OK, "{backend:?} {uri}: {}", r.body);
        }
        let r = described(&app, "", [None, None, Some("/open")], &[], None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
}
