//! Rate limits through the running gateway: exact boundaries, reset after the window, per-IP
//! counting, X-Forwarded-For only from trusted proxies, and one count across instances.

use std::time::Duration;

use crate::support::EchoUpstream;
use crate::support::app::*;
use portcullis::domain::RateSpec;
use reqwest::StatusCode;
use serde_json::json;

fn rate(limit: u32, ms: u64) -> Option<RateSpec> {
    Some(RateSpec {
        limit,
        window: Duration::from_millis(ms),
    })
}

async fn login_from(app: &TestApp, base: &str, xff: Option<&str>) -> reqwest::Response {
    let mut r = app
        .http
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"email": "nobody@example.com", "password": "Wr0ng-Password!"}));
    if let Some(xff) = xff {
        r = r.header("x-forwarded-for", xff);
    }
    r.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn login_limit_holds_at_its_boundary_and_resets_after_the_window() {
    for backend in backends() {
        let app = TestApp::spawn_with(backend, "", |c| c.rate_limits.login = rate(3, 1500)).await;
        let base = app.gw.url();
        for i in 1..=3 {
            let r = login_from(&app, &base, None).await;
            assert_eq!(
                r.status(),
                StatusCode::UNAUTHORIZED,
                "{backend:?} attempt {i}"
            );
            assert_eq!(r.headers()["ratelimit-limit"], "3");
            assert_eq!(
                r.headers()["ratelimit-remaining"],
                (3 - i).to_string().as_str()
            );
        }
        let r = login_from(&app, &base, None).await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "{backend:?}");
        let retry: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=2).contains(&retry), "{retry}");
        assert!(r.headers().contains_key("ratelimit-reset"));
        assert_eq!(r.headers()["ratelimit-remaining"], "0");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["code"], "rate_limited");
        assert_eq!(body["success"], false);

        // Other endpoints are not under the login limit.
        let r = app
            .post(
                "/api/auth/request-password-reset",
                json!({"email": "a@example.com"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);

        tokio::time::sleep(Duration::from_millis(1600)).await;
        assert_eq!(
            login_from(&app, &base, None).await.status(),
            StatusCode::UNAUTHORIZED,
            "window passed"
        );
        crate::support::metrics_containing(
            &app.gw.admin_url(),
            &["portcullis_rate_limited_total{scope=\"login\"} 1"],
        )
        .await;
    }
}

/// The sign-in page fetches passwordless options on every load: those fetches must not use
/// up the password sign-ins of the address.
#[tokio::test(flavor = "multi_thread")]
async fn passkey_options_do_not_use_up_the_login_limit() {
    let app = TestApp::spawn_with(Backend::Embedded, "", |c| {
        c.server.public_url = format!("http://localhost:{}", c.server.listen.port())
            .parse()
            .unwrap();
        c.rate_limits.login = rate(2, 60_000);
    })
    .await;
    let base = app.gw.url();
    for i in 1..=5 {
        let r = app
            .http
            .post(format!("{base}/api/auth/passkeys/login/options"))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "options {i}");
    }
    for i in 1..=2 {
        let r = login_from(&app, &base, None).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "login {i}");
    }
    let r = login_from(&app, &base, None).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
}

/// A wrong method or a stray path uses no endpoint: only `global` counts it, so probing
/// cannot use up the sign-ins, registrations or reset mails of everyone behind an address.
#[tokio::test(flavor = "multi_thread")]
async fn wrong_methods_use_only_the_global_limit() {
    let app = TestApp::spawn_with(Backend::Embedded, "", |c| {
        c.rate_limits.login = rate(2, 60_000);
        c.rate_limits.register = rate(2, 60_000);
        c.rate_limits.password_reset = rate(2, 60_000);
        c.rate_limits.global = rate(1_000, 60_000);
    })
    .await;
    let base = app.gw.url();
    let probes = [
        (reqwest::Method::GET, "/api/auth/login"),
        (reqwest::Method::GET, "/api/auth/passkeys/login"),
        (reqwest::Method::HEAD, "/api/auth/register"),
        (reqwest::Method::PUT, "/api/auth/register/"),
        (reqwest::Method::DELETE, "/api/auth/request-password-reset/"),
    ];
    for (method, path) in &probes {
        for _ in 0..3 {
            let r = app
                .http
                .request(method.clone(), format!("{base}{path}"))
                .send()
                .await
                .unwrap();
            assert_eq!(
                r.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}"
            );
            assert_eq!(r.headers()["ratelimit-limit"], "1000", "{method} {path}");
        }
    }
    let r = login_from(&app, &base, None).await;
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "the login limit is untouched"
    );
    let r = app.register("probe@example.com").await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "the register limit is untouched"
    );
    let r = app
        .post(
            "/api/auth/request-password-reset",
            json!({"email": "probe@example.com"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "the reset limit is untouched");
}

#[tokio::test(flavor = "multi_thread")]
async fn register_reset_and_global_limits_hold_exactly() {
    let app = TestApp::spawn_with(Backend::Embedded, "", |c| {
        c.rate_limits.register = rate(2, 60_000);
        c.rate_limits.password_reset = rate(2, 60_000);
        c.rate_limits.global = rate(8, 60_000);
    })
    .await;
    assert_eq!(
        app.register("r1@example.com").await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        app.register("r2@example.com").await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        app.register("r3@example.com").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    for _ in 0..2 {
        let r = app
            .post(
                "/api/auth/request-password-reset",
                json!({"email": "r1@example.com"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let r = app
        .post(
            "/api/auth/request-password-reset",
            json!({"email": "r1@example.com"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    // Six requests so far passed the global check (8): two more pass, the next is refused.
    for _ in 0..2 {
        let r = app
            .post("/api/auth/verify-email", json!({"token": "x"}))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
    }
    let r = app
        .post("/api/auth/verify-email", json!({"token": "x"}))
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    // Forward-auth is not under the API's global limit.
    let r = app
        .http
        .get(app.url("/api/auth/verify"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarded_for_counts_only_through_trusted_proxies() {
    // Untrusted: rotating X-Forwarded-For does not escape the limit.
    let app = TestApp::spawn_with(Backend::Embedded, "", |c| {
        c.rate_limits.login = rate(2, 60_000)
    })
    .await;
    let base = app.gw.url();
    for i in 0..2 {
        let r = login_from(&app, &base, Some(&format!("198.51.100.{i}"))).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = login_from(&app, &base, Some("198.51.100.99")).await;
    assert_eq!(
        r.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "spoofed X-Forwarded-For escaped the limit"
    );

    // Trusted: each client behind the proxy has its own count, and the right-most untrusted
    // address is the client (a client-written left part cannot pick someone else's bucket).
    let app = TestApp::spawn_with(Backend::Embedded, "", |c| {
        c.rate_limits.login = rate(2, 60_000);
        c.server.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let base = app.gw.url();
    for _ in 0..2 {
        assert_eq!(
            login_from(&app, &base, Some("203.0.113.1")).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        login_from(&app, &base, Some("203.0.113.1")).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        login_from(&app, &base, Some("203.0.113.2")).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let r = login_from(&app, &base, Some("203.0.113.77, 203.0.113.1")).await;
    assert_eq!(
        r.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the right-most untrusted hop is the client"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn proxied_routes_can_carry_their_own_limit() {
    let up = EchoUpstream::start().await;
    let routes = format!(
        "[[routes]]\nname = \"api\"\npath_prefix = \"/\"\nupstream = \"{}\"\npolicy = \"public\"\nrate_limit = \"3/1s\"\n",
        up.url()
    );
    let app = TestApp::spawn(Backend::Embedded, &routes).await;
    for _ in 0..3 {
        assert_eq!(
            app.http.get(app.url("/x")).send().await.unwrap().status(),
            StatusCode::OK
        );
    }
    let r = app.http.get(app.url("/x")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        app.http.get(app.url("/x")).send().await.unwrap().status(),
        StatusCode::OK
    );
    crate::support::metrics_containing(
        &app.gw.admin_url(),
        &["portcullis_rate_limited_total{scope=\"route:api\"} 1"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_on_one_redis_share_one_count() {
    if !backends().contains(&Backend::Shared) {
        return; // needs PostgreSQL and Redis (mandatory under CI=true)
    }
    let a = TestApp::spawn_with(Backend::Shared, "", |c| {
        c.rate_limits.login = rate(4, 60_000)
    })
    .await;
    let b = a.spawn_peer();
    let (base_a, base_b) = (a.gw.url(), b.url());
    for base in [&base_a, &base_b, &base_a, &base_b] {
        assert_eq!(
            login_from(&a, base, None).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        login_from(&a, &base_b, None).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        login_from(&a, &base_a, None).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}
