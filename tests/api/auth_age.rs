//! A route's `max_auth_age` over real connections: a fresh sign-in passes, a stale one is
//! refused (API clients: 401 `reauthentication_required` with RFC 9470's challenge; browsers:
//! the portal's reauthentication page and back), a refresh does not make it fresh, a
//! reauthentication does — in the same session. Forward-auth decides the same, and its
//! `max_auth_age` query parameter only makes the window shorter. The window's edge (exactly
//! `max_auth_age` old, a second either side) is the unit table of `freshness::is_fresh`.

use std::time::Duration;

use crate::support::EchoUpstream;
use crate::support::app::*;
use crate::support::browser::{Browser, urlencode};
use reqwest::StatusCode;
use serde_json::json;

const WINDOW_SECS: u64 = 2;

fn routes(upstream: &str) -> String {
    format!(
        "[[routes]]\nname = \"recent\"\npath_prefix = \"/recent\"\nupstream = \"{upstream}\"\n\
         max_auth_age = \"{WINDOW_SECS}s\"\n\n\
         [[routes]]\nname = \"any-age\"\npath_prefix = \"/open\"\nupstream = \"{upstream}\"\n"
    )
}

/// Waits until a proof made now is older than the window.
async fn outlive_the_window() {
    tokio::time::sleep(Duration::from_millis(WINDOW_SECS * 1000 + 1_100)).await;
}

async fn get(app: &TestApp, path: &str, token: &str) -> Answer {
    app.get_as(token, path).await
}

fn claims(token: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

#[tokio::test(flavor = "multi_thread")]
async fn api_clients_get_401_for_a_stale_sign_in_and_a_refresh_does_not_mend_it() {
    let up = EchoUpstream::start().await;
    for backend in backends() {
        let app = TestApp::spawn(backend, &routes(&up.url())).await;
        let email = "recent@example.com";
        app.verified_user(email).await;
        let tokens = app.login(email).await;
        let first = claims(&tokens.access);
        let auth_time = first["auth_time"].as_i64().expect("auth_time claim");
        assert!((auth_time - first["iat"].as_i64().unwrap()).abs() <= 1);

        // (path, fresh status)
        for path in ["/recent", "/recent/deeper?x=1", "/open"] {
            let r = get(&app, path, &tokens.access).await;
            assert_eq!(
                r.status,
                StatusCode::OK,
                "{backend:?} fresh {path}: {}",
                r.body
            );
        }
        let verify = "/api/auth/verify?max_auth_age=1h";
        assert_eq!(
            get(&app, verify, &tokens.access).await.status,
            StatusCode::OK
        );

        outlive_the_window().await;
        let stale = get(&app, "/recent", &tokens.access).await;
        assert_eq!(stale.status, StatusCode::UNAUTHORIZED, "{}", stale.body);
        assert_eq!(stale.body["code"], "reauthentication_required");
        let challenge = stale.headers["www-authenticate"].to_str().unwrap();
        assert!(
            challenge.contains("error=\"insufficient_user_authentication\"")
                && challenge.contains(&format!("max_age=\"{WINDOW_SECS}\"")),
            "{challenge}"
        );
        let open = get(&app, "/open", &tokens.access).await;
        assert_eq!(open.status, StatusCode::OK, "a route without a window");
        // Forward-auth's window: the query's, and only ever shorter than a route's.
        for (query, status) in [
            ("max_auth_age=1h", StatusCode::OK),
            ("max_auth_age=1s", StatusCode::UNAUTHORIZED),
            ("max_auth_age=0s", StatusCode::BAD_REQUEST),
        ] {
            let r = get(&app, &format!("/api/auth/verify?{query}"), &tokens.access).await;
            assert_eq!(r.status, status, "{backend:?} verify?{query}: {}", r.body);
        }

        // A refresh is no proof: the new token keeps the session's auth_time.
        let refreshed = app
            .post(
                "/api/auth/refresh-token",
                json!({"refresh_token": tokens.refresh}),
            )
            .await;
        assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
        let renewed = tokens_of(&refreshed.body);
        let renewed_claims = claims(&renewed.access);
        assert_eq!(renewed_claims["auth_time"], first["auth_time"]);
        assert_eq!(renewed_claims["sid"], first["sid"]);
        let r = get(&app, "/recent", &renewed.access).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{backend:?} refreshed");
        assert_eq!(r.body["code"], "reauthentication_required");

        // A new sign-in is fresh again.
        let again = app.login(email).await;
        assert_eq!(
            get(&app, "/recent", &again.access).await.status,
            StatusCode::OK
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_browser_proves_itself_again_and_comes_back_in_the_same_session() {
    let up = EchoUpstream::start().await;
    for backend in backends() {
        let app = TestApp::spawn(backend, &routes(&up.url())).await;
        let email = "browser-recent@example.com";
        app.verified_user(email).await;
        let browser = Browser::new(&app.url(""));
        let signed = browser.sign_in(email, PASSWORD, "/recent/page?x=1").await;
        assert!(signed.status.is_redirection(), "{}", signed.body);
        let page = browser.get("/recent/page?x=1").await;
        assert_eq!(page.status, StatusCode::OK, "{backend:?}: {}", page.body);
        let refresh_cookie = browser.cookie("portcullis_refresh");

        outlive_the_window().await;
        let sent = browser.get("/recent/page?x=1").await;
        assert_eq!(sent.status, StatusCode::FOUND, "{backend:?}: {}", sent.body);
        let expected = format!(
            "/auth/reauthenticate?return_to={}",
            urlencode("/recent/page?x=1")
        );
        assert_eq!(sent.location(), expected);

        let form = browser.get(sent.location()).await;
        assert_eq!(form.status, StatusCode::OK, "{}", form.body);
        assert!(form.body.contains("name=\"password\""), "{}", form.body);
        let csrf = form.csrf();
        // A wrong password is one guess refused, on the same form.
        let wrong = browser
            .post(
                "/auth/reauthenticate",
                &[
                    ("csrf_token", &csrf),
                    ("password", "not the password"),
                    ("return_to", "/recent/page?x=1"),
                ],
            )
            .await;
        assert_eq!(wrong.status, StatusCode::BAD_REQUEST, "{}", wrong.body);
        let still = browser.get("/recent/page?x=1").await;
        assert_eq!(still.status, StatusCode::FOUND);
        // An off-site return target is never followed.
        let proven = browser
            .post(
                "/auth/reauthenticate",
                &[
                    ("csrf_token", &csrf),
                    ("password", PASSWORD),
                    ("return_to", "//evil.example/x"),
                ],
            )
            .await;
        assert!(proven.status.is_redirection(), "{}", proven.body);
        assert!(
            !proven.location().contains("evil.example"),
            "{}",
            proven.location()
        );
        assert!(
            !proven
                .set_cookies()
                .iter()
                .any(|c| c.starts_with("portcullis_refresh=")),
            "the same session: the refresh token stays"
        );
        assert_eq!(browser.cookie("portcullis_refresh"), refresh_cookie);
        let back = browser.get("/recent/page?x=1").await;
        assert_eq!(back.status, StatusCode::OK, "{backend:?}: {}", back.body);
    }
}

const REAUTHENTICATE: &str = "/api/auth/reauthenticate";

#[tokio::test(flavor = "multi_thread")]
async fn an_api_client_proves_itself_again_over_the_api_in_the_same_session() {
    let up = EchoUpstream::start().await;
    for backend in backends() {
        let app = TestApp::spawn(backend, &routes(&up.url())).await;
        let email = "api-recent@example.com";
        app.verified_user(email).await;
        let tokens = app.login(email).await;
        let first = claims(&tokens.access);
        outlive_the_window().await;
        let stale = get(&app, "/recent", &tokens.access).await;
        assert_eq!(stale.status, StatusCode::UNAUTHORIZED, "{}", stale.body);
        assert_eq!(stale.body["code"], "reauthentication_required");

        // (body, status, field named): each refused, none a new token.
        for (body, status, field) in [
            (json!({}), StatusCode::BAD_REQUEST, "password"),
            (json!({"password": ""}), StatusCode::BAD_REQUEST, "password"),
            (json!({"password": 7}), StatusCode::BAD_REQUEST, "password"),
            (
                json!({"password": "not it"}),
                StatusCode::BAD_REQUEST,
                "password",
            ),
        ] {
            let r = app
                .post_as(&tokens.access, REAUTHENTICATE, body.clone())
                .await;
            assert_eq!(r.status, status, "{backend:?} {body}: {}", r.body);
            assert_eq!(r.body["errors"][0]["field"], field, "{body}: {}", r.body);
        }
        let anonymous = app
            .post(REAUTHENTICATE, json!({"password": PASSWORD}))
            .await;
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);

        let body = json!({"password": PASSWORD});
        let proven = app.post_as(&tokens.access, REAUTHENTICATE, body).await;
        assert_eq!(
            proven.status,
            StatusCode::OK,
            "{backend:?}: {}",
            proven.body
        );
        let data = &proven.body["data"];
        assert!(data["tokens"].get("refresh_token").is_none(), "{data}");
        assert_eq!(data["tokens"]["token_type"], "Bearer");
        let access = data["tokens"]["access_token"].as_str().expect("a token");
        let renewed = claims(access);
        assert_eq!(renewed["sid"], first["sid"], "the same session");
        assert_eq!(renewed["auth_time"], data["auth_time"]);
        assert!(renewed["auth_time"].as_i64() > first["auth_time"].as_i64());
        let cookie = proven.headers["set-cookie"].to_str().unwrap();
        assert!(
            cookie.starts_with(&format!("portcullis={access};")),
            "{cookie}"
        );

        let r = get(&app, "/recent", access).await;
        assert_eq!(r.status, StatusCode::OK, "{backend:?}: {}", r.body);
        let old = get(&app, "/recent", &tokens.access).await;
        assert_eq!(old.body["code"], "reauthentication_required");
        // The refresh token is the session's still.
        let body = json!({"refresh_token": tokens.refresh});
        let refreshed = app.post("/api/auth/refresh-token", body).await;
        assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_totp_account_reproves_with_its_code_and_wrong_guesses_lock_it() {
    for backend in backends() {
        let app = TestApp::spawn(backend, "").await;
        let email = "api-reauth-totp@example.com";
        app.verified_user(email).await;
        let (secret, _) = app.enable_totp(email).await;
        let login = json!({"email": email, "password": PASSWORD,
            "two_factor_code": crate::support::otp::totp(&secret, 0)});
        let signed = app.post("/api/auth/login", login).await;
        assert_eq!(signed.status, StatusCode::OK, "{}", signed.body);
        let token = tokens_of(&signed.body).access;

        let without_code = json!({"password": PASSWORD});
        let r = app.post_as(&token, REAUTHENTICATE, without_code).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
        assert_eq!(r.body["errors"][0]["field"], "two_factor_code");
        let code = crate::support::otp::totp(&secret, 1);
        let body = json!({"password": PASSWORD, "two_factor_code": code});
        let r = app.post_as(&token, REAUTHENTICATE, body).await;
        assert_eq!(r.status, StatusCode::OK, "{backend:?}: {}", r.body);

        // Wrong passwords and wrong codes are guesses against the lockout (5 by default).
        let wrong = [
            json!({"password": "not it", "two_factor_code": "000000"}),
            json!({"password": PASSWORD, "two_factor_code": "not-a-code"}),
        ];
        for body in wrong.iter().cycle().take(5) {
            let r = app.post_as(&token, REAUTHENTICATE, body.clone()).await;
            assert_eq!(
                r.status,
                StatusCode::BAD_REQUEST,
                "{backend:?} {body}: {}",
                r.body
            );
        }
        let code = crate::support::otp::totp(&secret, 2);
        let body = json!({"password": PASSWORD, "two_factor_code": code});
        let r = app.post_as(&token, REAUTHENTICATE, body).await;
        assert_eq!(r.status, StatusCode::LOCKED, "{backend:?}: {}", r.body);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn reauthentication_counts_against_the_sign_in_limit() {
    let app = TestApp::spawn_with(Backend::Embedded, "", |c| {
        c.rate_limits.login = Some("2/1h".parse().expect("a rate"));
    })
    .await;
    let email = "api-reauth-limit@example.com";
    app.verified_user(email).await;
    let token = app.login(email).await.access;
    let body = json!({"password": PASSWORD});
    let first = app.post_as(&token, REAUTHENTICATE, body.clone()).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let second = app.post_as(&token, REAUTHENTICATE, body).await;
    assert_eq!(
        second.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        second.body
    );
}
