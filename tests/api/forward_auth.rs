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
