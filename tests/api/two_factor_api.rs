//! Two-factor stories over HTTP, with TOTP codes computed by hand in `support::otp`
//! (RFC 6238, SHA-1, 6 digits, 30 s) as an authenticator app would, not by the code under test.

use crate::support::app::*;
use crate::support::otp::{base32_decode, totp};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn amr_of(access: &str) -> Value {
    let claims = access.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
    claims["amr"].clone()
}

async fn login_with(app: &TestApp, email: &str, code: Option<&str>) -> Answer {
    let mut body = json!({"email": email, "password": PASSWORD});
    if let Some(code) = code {
        body["two_factor_code"] = json!(code);
    }
    app.post("/api/auth/login", body).await
}

#[tokio::test(flavor = "multi_thread")]
async fn setup_gives_a_secret_a_uri_and_a_png_qr_code() {
    let app = TestApp::spawn(Backend::Embedded, "").await;
    app.register("unverified@example.com").await;
    let t = app.login("unverified@example.com").await;
    let r = app
        .post_as(&t.access, "/api/auth/setup-2fa", json!({}))
        .await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "an unverified email cannot set up 2FA"
    );

    app.verified_user("qr+me@example.com").await;
    let t = app.login("qr+me@example.com").await;
    let r = app
        .post_as(&t.access, "/api/auth/setup-2fa", json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let data = &r.body["data"];
    let secret = data["secret"].as_str().unwrap();
    assert_eq!(base32_decode(secret).len(), 20, "160-bit secret");
    let url = data["otpauth_url"].as_str().unwrap();
    assert!(url.starts_with("otpauth://totp/"), "{url}");
    assert!(url.contains(&format!("secret={secret}")), "{url}");
    assert!(url.contains("issuer=Portcullis"), "{url}");
    let qr = data["qr_code"].as_str().unwrap();
    let png = STANDARD
        .decode(
            qr.strip_prefix("data:image/png;base64,")
                .expect("a PNG data URL"),
        )
        .unwrap();
    let image = image::load_from_memory_with_format(&png, image::ImageFormat::Png)
        .expect("a decodable PNG");
    assert!(image.width() > 20 && image.height() > 20);

    let profile = app.get_as(&t.access, "/api/auth/profile").await;
    assert_eq!(
        profile.body["data"]["user"]["two_factor_enabled"], false,
        "setup alone enables nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_whole_two_factor_lifecycle() {
    for backend in backends() {
        let app = TestApp::spawn(backend, "").await;
        let email = "otp@example.com";
        app.verified_user(email).await;
        let t = app.login(email).await;
        let setup = app
            .post_as(&t.access, "/api/auth/setup-2fa", json!({}))
            .await;
        let secret = setup.body["data"]["secret"].as_str().unwrap().to_string();

        let wrong = app
            .post_as(
                &t.access,
                "/api/auth/enable-2fa",
                json!({"secret": secret, "token": "000000", "password": PASSWORD}),
            )
            .await;
        let wrong_ok = totp(&secret, 0) == "000000";
        if !wrong_ok {
            assert_eq!(
                wrong.status,
                StatusCode::BAD_REQUEST,
                "{backend:?}: {}",
                wrong.body
            );
        }
        let r = app
            .post_as(
                &t.access,
                "/api/auth/enable-2fa",
                json!({"secret": secret, "token": totp(&secret, 0), "password": PASSWORD}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{backend:?}: {}", r.body);
        let codes: Vec<String> = r.body["data"]["recovery_codes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect();
        assert_eq!(codes.len(), 10);
        let enabled_mail = app.mail_to(email).await;
        assert!(enabled_mail.subject().is_some());

        // The stored secret is sealed, not the plaintext.
        let user = app
            .store()
            .await
            .find_by_email(&email.parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        let stored = user.two_factor_secret.clone().expect("a stored secret");
        let raw = base32_decode(&secret);
        assert!(
            !stored.windows(raw.len()).any(|w| w == raw.as_slice()),
            "plaintext secret stored"
        );
        assert!(!String::from_utf8_lossy(&stored).contains(&secret));

        let r = login_with(&app, email, None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.code(), "two_factor_required");
        let r = login_with(&app, email, Some("12345x")).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.code(), "invalid_credentials");

        let code = totp(&secret, 1);
        let r = login_with(&app, email, Some(&code)).await;
        assert_eq!(r.status, StatusCode::OK, "{backend:?}: {}", r.body);
        let with_otp = tokens_of(&r.body);
        assert_eq!(amr_of(&with_otp.access), json!(["pwd", "otp"]));
        let replay = login_with(&app, email, Some(&code)).await;
        assert_eq!(replay.status, StatusCode::UNAUTHORIZED, "a code works once");
        // A right code used again is told apart from a wrong one (only a right code can
        // be found replayed, so this says nothing a guess could use).
        assert_eq!(replay.code(), "code_replayed", "{}", replay.body);
        assert_eq!(
            replay.body["message"],
            "This code was just used; wait for the next one."
        );

        let r = login_with(&app, email, Some(&codes[0])).await;
        assert_eq!(r.status, StatusCode::OK, "recovery code: {}", r.body);
        assert_eq!(amr_of(&tokens_of(&r.body).access), json!(["pwd", "otp"]));
        let r = login_with(&app, email, Some(&codes[0].to_uppercase())).await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "a recovery code works once"
        );

        let r = app
            .post_as(
                &with_otp.access,
                "/api/auth/disable-2fa",
                json!({"password": "Wr0ng-Password!"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        let r = app
            .post_as(
                &with_otp.access,
                "/api/auth/disable-2fa",
                json!({"password": PASSWORD}),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "the password alone does not turn 2FA off"
        );
        let r = app
            .post_as(
                &with_otp.access,
                "/api/auth/disable-2fa",
                json!({"password": PASSWORD, "two_factor_code": codes[1]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let r = login_with(&app, email, None).await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "2FA off: the password alone works again"
        );
        let user = app
            .store()
            .await
            .find_by_email(&email.parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert!(user.two_factor_secret.is_none());
        assert!(!user.two_factor_enabled);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_factor_routes_need_a_two_factor_session() {
    let up = crate::support::EchoUpstream::start().await;
    let routes = format!(
        "[[routes]]\nname = \"vault\"\npath_prefix = \"/vault\"\nupstream = \"{}\"\npolicy = \"two_factor\"\n",
        up.url()
    );
    let app = TestApp::spawn(Backend::Embedded, &routes).await;
    let email = "vault@example.com";
    app.verified_user(email).await;
    let plain = app.login(email).await;
    let setup = app
        .post_as(&plain.access, "/api/auth/setup-2fa", json!({}))
        .await;
    let secret = setup.body["data"]["secret"].as_str().unwrap().to_string();
    app.post_as(
        &plain.access,
        "/api/auth/enable-2fa",
        json!({"secret": secret, "token": totp(&secret, 0), "password": PASSWORD}),
    )
    .await;
    let r = app
        .http
        .get(app.url("/vault/x"))
        .bearer_auth(&plain.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = login_with(&app, email, Some(&totp(&secret, 1))).await;
    let strong = tokens_of(&r.body);
    let r = app
        .http
        .get(app.url("/vault/x"))
        .bearer_auth(&strong.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_codes_count_toward_lockout() {
    let app = TestApp::spawn(Backend::Embedded, "").await;
    let email = "brute@example.com";
    app.verified_user(email).await;
    let t = app.login(email).await;
    let setup = app
        .post_as(&t.access, "/api/auth/setup-2fa", json!({}))
        .await;
    let secret = setup.body["data"]["secret"].as_str().unwrap().to_string();
    app.post_as(
        &t.access,
        "/api/auth/enable-2fa",
        json!({"secret": secret, "token": totp(&secret, 0), "password": PASSWORD}),
    )
    .await;
    let valid: Vec<String> = (-1..=1).map(|o| totp(&secret, o)).collect();
    let mut wrong = Vec::new();
    let mut n = 0u32;
    while wrong.len() < 5 {
        let candidate = format!("{:06}", 123_456 + n);
        n += 1;
        if !valid.contains(&candidate) {
            wrong.push(candidate);
        }
    }
    for code in &wrong {
        assert_eq!(
            login_with(&app, email, Some(code)).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    let r = login_with(&app, email, Some(&totp(&secret, 1))).await;
    assert_eq!(r.status, StatusCode::LOCKED, "{}", r.body);
}
