//! Proxied traffic: every request checked (JWT + live session), identity forwarded only when
//! earned, spoofed identity never passed on, revocations honoured at once and across instances.

use std::time::{Duration, Instant};

use crate::support::app::*;
use crate::support::{EchoUpstream, echoed_header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn routes(upstream: &str) -> String {
    let route = |name: &str, prefix: &str, policy: &str, roles: &str| {
        format!(
            "[[routes]]\nname = \"{name}\"\npath_prefix = \"{prefix}\"\nupstream = \"{upstream}\"\npolicy = \"{policy}\"\nroles = [{roles}]\n"
        )
    };
    [
        route("public", "/public", "public", ""),
        route("app", "/app", "authenticated", ""),
        route("secure", "/secure", "two_factor", ""),
        route("admin", "/admin", "authenticated", "\"admin\", \"ops\""),
        route("closed", "/closed", "deny", ""),
    ]
    .concat()
}

async fn proxied(
    app: &TestApp,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut request = app.http.get(app.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let r = request.send().await.unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    (status, headers, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn each_policy_lets_through_only_what_it_should() {
    for backend in backends() {
        let up = EchoUpstream::start().await;
        let app = TestApp::spawn(backend, &routes(&up.url())).await;
        app.verified_user("pol@example.com").await;
        let t = app.login("pol@example.com").await;

        let (s, _, echo) = proxied(&app, "/public/x", None).await;
        assert_eq!(s, StatusCode::OK, "{backend:?}");
        assert!(
            echoed_header(&echo, "x-user-id").is_empty(),
            "no identity on an anonymous public request"
        );

        let (s, h, body) = proxied(&app, "/app/x", None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert_eq!(h["www-authenticate"], "Bearer");
        assert_eq!(body["success"], false);
        assert_eq!(body["code"], "authentication_required");

        let (s, _, echo) = proxied(&app, "/app/x", Some(&t.access)).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(
            echoed_header(&echo, "x-user-email"),
            vec!["pol@example.com"]
        );

        let (s, _, body) = proxied(&app, "/secure/x", Some(&t.access)).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        assert_eq!(body["code"], "two_factor_required");

        let (s, _, body) = proxied(&app, "/admin/x", Some(&t.access)).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        assert_eq!(body["code"], "forbidden_role");

        let (s, _, _) = proxied(&app, "/closed/x", Some(&t.access)).await;
        assert_eq!(s, StatusCode::FORBIDDEN);

        crate::support::metrics_containing(
            &app.gw.admin_url(),
            &[
                "portcullis_auth_decisions_total{outcome=\"denied\",reason=\"no_credentials\",route=\"app\"} 1",
                "portcullis_auth_decisions_total{outcome=\"allowed\",reason=\"allowed\",route=\"app\"} 1",
                "portcullis_auth_decisions_total{outcome=\"denied\",reason=\"two_factor_required\",route=\"secure\"} 1",
                "portcullis_auth_decisions_total{outcome=\"denied\",reason=\"forbidden_role\",route=\"admin\"} 1",
            ],
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn roles_are_any_of() {
    let up = EchoUpstream::start().await;
    let app = TestApp::spawn(Backend::Embedded, &routes(&up.url())).await;
    app.verified_user("ops@example.com").await;
    portcullis::store::admin::run_user_command(
        &*app.store().await,
        portcullis::store::admin::UserCommand::GrantRole {
            email: "ops@example.com".into(),
            role: "ops".into(),
        },
    )
    .await
    .unwrap();
    let t = app.login("ops@example.com").await;
    let (s, _, echo) = proxied(&app, "/admin/panel", Some(&t.access)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(echoed_header(&echo, "x-user-roles"), vec!["ops"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_upstream_receives_the_real_identity_and_a_verifiable_assertion() {
    for backend in backends() {
        let up = EchoUpstream::start().await;
        let app = TestApp::spawn(backend, &routes(&up.url())).await;
        app.verified_user("who@example.com").await;
        let t = app.login("who@example.com").await;
        let user_id = t.body["data"]["user"]["id"].as_str().unwrap().to_string();
        let (_, _, echo) = proxied(&app, "/app/me", Some(&t.access)).await;
        assert_eq!(echoed_header(&echo, "x-user-id"), vec![user_id.clone()]);
        assert_eq!(
            echoed_header(&echo, "x-user-email"),
            vec!["who@example.com"]
        );
        assert_eq!(echoed_header(&echo, "x-user-roles"), vec![""]);
        let sid = echoed_header(&echo, "x-session-id");
        assert_eq!(sid.len(), 1);

        // The assertion verifies with the published JWKS, checked with ed25519-dalek directly.
        let assertion = echoed_header(&echo, "x-identity-assertion");
        assert_eq!(assertion.len(), 1, "{echo}");
        let (header, claims) = verify_with_jwks(&app, &assertion[0]).await;
        assert_eq!(header["alg"], "EdDSA");
        assert_eq!(claims["sub"], user_id);
        assert_eq!(claims["sid"], sid[0]);
        assert_eq!(claims["email"], "who@example.com");
        assert_eq!(claims["aud"], "portcullis-upstream");
        let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
        assert!(lifetime > 0 && lifetime <= 300, "{lifetime}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn spoofed_identity_headers_are_removed_on_every_route() {
    let up = EchoUpstream::start().await;
    let app = TestApp::spawn(Backend::Embedded, &routes(&up.url())).await;
    app.verified_user("spoof@example.com").await;
    let t = app.login("spoof@example.com").await;
    let spoofs = [
        ("X-User-Id", "00000000-0000-0000-0000-000000000000"),
        ("x-user-id", "second-copy"),
        ("X_User_Id", "underscore"),
        ("X-USER-EMAIL", "ceo@example.com"),
        ("x_user_roles", "admin"),
        ("X-User-Roles", "admin"),
        ("X-Session-Id", "forged"),
        ("X-Identity-Assertion", "forged.jwt.value"),
    ];
    for (path, token) in [("/public/p", None), ("/app/p", Some(t.access.as_str()))] {
        let mut request = app.http.get(app.url(path));
        for (name, value) in spoofs {
            request = request.header(name, value);
        }
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let echo: Value = request.send().await.unwrap().json().await.unwrap();
        for forbidden in [
            "admin",
            "ceo@example.com",
            "forged",
            "forged.jwt.value",
            "second-copy",
            "underscore",
            "00000000-0000-0000-0000-000000000000",
        ] {
            let leaked = echo["headers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|h| h[1] == forbidden);
            assert!(
                !leaked,
                "{path}: spoofed value {forbidden} reached the upstream: {echo}"
            );
        }
        for name in ["x_user_id", "x_user_roles"] {
            assert!(echoed_header(&echo, name).is_empty(), "{path}: {name}");
        }
        if token.is_some() {
            assert_eq!(
                echoed_header(&echo, "x-user-email"),
                vec!["spoof@example.com"]
            );
            assert_eq!(echoed_header(&echo, "x-user-id").len(), 1);
        } else {
            assert!(echoed_header(&echo, "x-user-id").is_empty());
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_tokens_never_reach_the_upstream() {
    let up = EchoUpstream::start().await;
    let app = TestApp::spawn(Backend::Embedded, &routes(&up.url())).await;
    app.verified_user("f@example.com").await;
    let t = app.login("f@example.com").await;
    let parts: Vec<&str> = t.access.split('.').collect();
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        parts[1]
    );
    let truncated = t.access[..t.access.len() - 4].to_string();
    for token in [none, truncated, "garbage".to_string(), "a.b.c".to_string()] {
        let (s, _, body) = proxied(&app, "/app/x", Some(&token)).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{token}");
        assert_eq!(body["code"], "invalid_token");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_and_eviction_refuse_the_old_token_at_once() {
    for backend in backends() {
        let up = EchoUpstream::start().await;
        let app = TestApp::spawn(backend, &routes(&up.url())).await;
        app.verified_user("rev@example.com").await;
        let first = app.login("rev@example.com").await;
        assert_eq!(
            proxied(&app, "/app/x", Some(&first.access)).await.0,
            StatusCode::OK
        );
        app.post_as(&first.access, "/api/auth/logout", json!({}))
            .await;
        let (s, _, body) = proxied(&app, "/app/x", Some(&first.access)).await;
        assert_eq!(
            s,
            StatusCode::UNAUTHORIZED,
            "{backend:?}: logged-out token still passes"
        );
        assert_eq!(body["code"], "session_ended");

        let mut sessions = Vec::new();
        for _ in 0..5 {
            let t = app.login("rev@example.com").await;
            assert_eq!(
                proxied(&app, "/app/x", Some(&t.access)).await.0,
                StatusCode::OK
            );
            sessions.push(t);
        }
        app.login("rev@example.com").await; // evicts sessions[0]
        assert_eq!(
            proxied(&app, "/app/x", Some(&sessions[0].access)).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            proxied(&app, "/app/x", Some(&sessions[1].access)).await.0,
            StatusCode::OK
        );

        app.post_as(&sessions[1].access, "/api/auth/logout-all", json!({}))
            .await;
        for t in &sessions[1..] {
            assert_eq!(
                proxied(&app, "/app/x", Some(&t.access)).await.0,
                StatusCode::UNAUTHORIZED
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_logout_on_one_instance_holds_on_another_within_a_second() {
    if !backends().contains(&Backend::Shared) {
        return; // needs PostgreSQL and Redis (mandatory under CI=true)
    }
    let up = EchoUpstream::start().await;
    let a = TestApp::spawn(Backend::Shared, &routes(&up.url())).await;
    let b = a.spawn_peer();
    a.verified_user("two@example.com").await;
    let t = a.login("two@example.com").await;
    let via_b = |token: String| {
        let http = a.http.clone();
        let url = format!("{}/app/x", b.url());
        async move {
            http.get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(
        via_b(t.access.clone()).await,
        StatusCode::OK,
        "B accepts A's session (and caches it)"
    );
    assert_eq!(via_b(t.access.clone()).await, StatusCode::OK);

    a.post_as(&t.access, "/api/auth/logout", json!({})).await;
    let started = Instant::now();
    loop {
        if via_b(t.access.clone()).await == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "instance B still accepts a token logged out on A"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // And the other way round, for logout-all.
    let t2 = a.login("two@example.com").await;
    assert_eq!(via_b(t2.access.clone()).await, StatusCode::OK);
    let r = a
        .http
        .post(format!("{}/api/auth/logout-all", b.url()))
        .bearer_auth(&t2.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let started = Instant::now();
    loop {
        let s = a
            .http
            .get(a.url("/app/x"))
            .bearer_auth(&t2.access)
            .send()
            .await
            .unwrap()
            .status();
        if s == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "instance A still accepts after logout-all on B"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn method_query_and_body_pass_through_authenticated_routes() {
    let up = EchoUpstream::start().await;
    let app = TestApp::spawn(Backend::Embedded, &routes(&up.url())).await;
    app.verified_user("pass@example.com").await;
    let t = app.login("pass@example.com").await;
    let body = "x".repeat(200_000);
    let r = app
        .http
        .patch(app.url("/app/items/7?sort=desc&q=a%20b"))
        .bearer_auth(&t.access)
        .header("content-type", "application/octet-stream")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let echo: Value = r.json().await.unwrap();
    assert_eq!(echo["method"], "PATCH");
    assert_eq!(echo["path"], "/app/items/7");
    assert_eq!(echo["query"], "sort=desc&q=a%20b");
    assert_eq!(echo["body"].as_str().unwrap().len(), body.len());
    let r = app
        .http
        .get(app.url("/app/status/418"))
        .bearer_auth(&t.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 418);
}

#[tokio::test(flavor = "multi_thread")]
async fn keep_alive_survives_401s() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = EchoUpstream::start().await;
    let app = TestApp::spawn(Backend::Embedded, &routes(&up.url())).await;
    let mut s = tokio::net::TcpStream::connect(app.gw.addr).await.unwrap();
    for _ in 0..3 {
        s.write_all(b"GET /app/x HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).await.unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.starts_with("HTTP/1.1 401"), "{text}");
        assert!(
            !text.to_ascii_lowercase().contains("connection: close"),
            "{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn browsers_are_sent_to_the_login_page_with_a_same_site_return_url() {
    let up = EchoUpstream::start().await;
    let app = TestApp::spawn_with(Backend::Embedded, &routes(&up.url()), |c| {
        c.server.login_url = "/login".into();
    })
    .await;
    let r = app
        .http
        .get(app.url("/app/page?x=1"))
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(
        r.headers()["location"],
        "/login?return_to=%2Fapp%2Fpage%3Fx%3D1"
    );
    // API clients still get 401 JSON.
    let r = app
        .http
        .get(app.url("/app/page"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // A crafted path cannot make the login page redirect off-site.
    let r = app
        .http
        .get(format!("{}//evil.example/app", app.gw.url()))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    if r.status() == StatusCode::FOUND {
        let location = r.headers()["location"].to_str().unwrap().to_string();
        assert!(!location.contains("evil.example"), "{location}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_session_cookie_authenticates_browsers() {
    let up = EchoUpstream::start().await;
    let app = TestApp::spawn(Backend::Embedded, &routes(&up.url())).await;
    app.verified_user("cookie@example.com").await;
    let r = app
        .http
        .post(app.url("/api/auth/login"))
        .json(&json!({"email": "cookie@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.starts_with("portcullis="), "{cookie}");
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attr), "{attr} missing: {cookie}");
    }
    let pair = cookie.split(';').next().unwrap().to_string();
    let r = app
        .http
        .get(app.url("/app/x"))
        .header("cookie", format!("theme=dark; {pair}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let echo: Value = r.json().await.unwrap();
    assert_eq!(
        echoed_header(&echo, "x-user-email"),
        vec!["cookie@example.com"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn forward_auth_answers_with_identity_headers_or_401() {
    for backend in backends() {
        let app = TestApp::spawn(backend, "").await;
        app.verified_user("fa@example.com").await;
        let t = app.login("fa@example.com").await;
        let r = app
            .http
            .get(app.url("/api/auth/verify"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let r = app
            .http
            .get(app.url("/api/auth/verify"))
            .bearer_auth(&t.access)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{backend:?}");
        assert_eq!(r.headers()["x-user-email"], "fa@example.com");
        assert!(r.headers().contains_key("x-user-id"));
        assert!(r.headers().contains_key("x-identity-assertion"));
        let r = app
            .http
            .get(app.url("/api/auth/verify?roles=admin"))
            .bearer_auth(&t.access)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let r = app
            .http
            .get(app.url("/api/auth/verify?two_factor=true"))
            .bearer_auth(&t.access)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        app.post_as(&t.access, "/api/auth/logout", json!({})).await;
        let r = app
            .http
            .get(app.url("/api/auth/verify"))
            .bearer_auth(&t.access)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_upgrades_pass_through_authenticated_routes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = EchoUpstream::start().await;
    let app = TestApp::spawn(Backend::Embedded, &routes(&up.url())).await;
    app.verified_user("ws@example.com").await;
    let t = app.login("ws@example.com").await;

    async fn handshake(
        addr: std::net::SocketAddr,
        token: Option<&str>,
    ) -> (tokio::net::TcpStream, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "GET /app/socket HTTP/1.1\r\nHost: t\r\n{auth}Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        s.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if s.read(&mut byte).await.unwrap() == 0 {
                break;
            }
            head.push(byte[0]);
        }
        (s, String::from_utf8_lossy(&head).into_owned())
    }

    let (_, head) = handshake(app.gw.addr, None).await;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");

    let (mut s, head) = handshake(app.gw.addr, Some(&t.access)).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    for message in [&b"hello over the socket"[..], &[0u8, 1, 2, 255, 254][..]] {
        s.write_all(message).await.unwrap();
        let mut back = vec![0u8; message.len()];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(back, message);
    }
}
