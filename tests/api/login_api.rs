//! Login and session stories over HTTP: tokens, lockout, refresh rotation, logout, eviction.

use std::time::Duration;

use crate::support::app::*;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn login_returns_tokens_verifiable_with_the_jwks() {
    for backend in backends() {
        let app = TestApp::spawn(backend, "").await;
        app.verified_user("jwt@example.com").await;
        let r = app
            .post(
                "/api/auth/login",
                json!({"email": "JWT@example.com", "password": PASSWORD}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{backend:?}: {}", r.body);
        let data = &r.body["data"];
        assert_eq!(data["user"]["email"], "jwt@example.com");
        assert_eq!(data["user"]["is_verified"], true);
        let t = &data["tokens"];
        assert_eq!(t["token_type"], "Bearer");
        assert_eq!(t["expires_in"], 900);
        let refresh_in = t["refresh_expires_in"].as_i64().unwrap();
        assert!(
            (7 * 86400 - 60..=7 * 86400).contains(&refresh_in),
            "{refresh_in}"
        );

        let (header, claims) = verify_with_jwks(&app, t["access_token"].as_str().unwrap()).await;
        assert!(header["kid"].is_string());
        assert_eq!(claims["sub"], data["user"]["id"]);
        assert_eq!(claims["iss"], "portcullis");
        assert_eq!(claims["amr"], json!(["pwd"]));
        for claim in ["sid", "iat", "exp", "jti"] {
            assert!(claims.get(claim).is_some(), "{claim}");
        }
        assert_eq!(
            claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
            900
        );

        let r = app
            .post(
                "/api/auth/login",
                json!({"email": "jwt@example.com", "password": PASSWORD, "remember_me": true}),
            )
            .await;
        let refresh_in = r.body["data"]["tokens"]["refresh_expires_in"]
            .as_i64()
            .unwrap();
        assert!(
            (30 * 86400 - 60..=30 * 86400).contains(&refresh_in),
            "remember_me: {refresh_in}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_email_and_wrong_password_look_the_same() {
    let app = TestApp::spawn(Backend::Embedded, "").await;
    app.verified_user("same@example.com").await;
    let wrong = app
        .post(
            "/api/auth/login",
            json!({"email": "same@example.com", "password": "Wr0ng-Password!"}),
        )
        .await;
    let unknown = app
        .post(
            "/api/auth/login",
            json!({"email": "ghost@example.com", "password": "Wr0ng-Password!"}),
        )
        .await;
    let malformed = app
        .post(
            "/api/auth/login",
            json!({"email": "not an email", "password": "x"}),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.status, unknown.status);
    assert_eq!(wrong.body, unknown.body);
    assert_eq!(wrong.body, malformed.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn lockout_refuses_even_the_right_password_until_unlocked() {
    for backend in backends() {
        let app = TestApp::spawn(backend, "").await;
        app.verified_user("lock@example.com").await;
        for i in 1..=5 {
            let r = app
                .post(
                    "/api/auth/login",
                    json!({"email": "lock@example.com", "password": "Wr0ng-Password!"}),
                )
                .await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "attempt {i}");
        }
        let r = app
            .post(
                "/api/auth/login",
                json!({"email": "lock@example.com", "password": PASSWORD}),
            )
            .await;
        assert_eq!(r.status, StatusCode::LOCKED, "{backend:?}: {}", r.body);
        assert_eq!(r.code(), "account_locked");

        let out = portcullis::store::admin::run_user_command(
            &*app.store().await,
            portcullis::store::admin::UserCommand::Unlock {
                email: "lock@example.com".into(),
            },
        )
        .await
        .unwrap();
        assert!(!out.is_empty());
        app.login("lock@example.com").await;
        crate::support::metrics_containing(&app.gw.admin_url(), &["portcullis_lockouts_total 1"])
            .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn success_resets_the_failure_count() {
    let app = TestApp::spawn(Backend::Embedded, "").await;
    app.verified_user("reset-count@example.com").await;
    for _ in 0..4 {
        app.post(
            "/api/auth/login",
            json!({"email": "reset-count@example.com", "password": "Wr0ng-Password!"}),
        )
        .await;
    }
    app.login("reset-count@example.com").await;
    for _ in 0..4 {
        app.post(
            "/api/auth/login",
            json!({"email": "reset-count@example.com", "password": "Wr0ng-Password!"}),
        )
        .await;
    }
    app.login("reset-count@example.com").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deactivated_accounts_get_403() {
    let app = TestApp::spawn(Backend::Embedded, "").await;
    app.verified_user("gone@example.com").await;
    let t = app.login("gone@example.com").await;
    let wrong = app
        .post_as(
            &t.access,
            "/api/auth/deactivate",
            json!({"password": "Wr0ng-Password!"}),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST);
    let r = app
        .post_as(
            &t.access,
            "/api/auth/deactivate",
            json!({"password": PASSWORD}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        app.get_as(&t.access, "/api/auth/profile").await.status,
        StatusCode::UNAUTHORIZED
    );
    let r = app
        .post(
            "/api/auth/login",
            json!({"email": "gone@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.code(), "account_deactivated");
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_rotates_and_reuse_ends_the_session() {
    for backend in backends() {
        let app = TestApp::spawn(backend, "").await;
        app.verified_user("rot@example.com").await;
        let first = app.login("rot@example.com").await;

        let r = app
            .post(
                "/api/auth/refresh-token",
                json!({"refresh_token": first.refresh}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{backend:?}: {}", r.body);
        let second = tokens_of(&r.body);
        assert_ne!(second.refresh, first.refresh);
        assert_eq!(
            app.get_as(&second.access, "/api/auth/profile").await.status,
            StatusCode::OK
        );

        // Concurrent duplicates within the grace window get the same answer.
        let dup = app
            .post(
                "/api/auth/refresh-token",
                json!({"refresh_token": first.refresh}),
            )
            .await;
        assert_eq!(dup.status, StatusCode::OK, "grace window: {}", dup.body);
        assert_eq!(tokens_of(&dup.body).refresh, second.refresh);

        let r = app
            .post(
                "/api/auth/refresh-token",
                json!({"refresh_token": second.refresh}),
            )
            .await;
        let third = tokens_of(&r.body);
        // The first token again, after the chain moved on twice: theft. The session ends.
        let stolen = app
            .post(
                "/api/auth/refresh-token",
                json!({"refresh_token": first.refresh}),
            )
            .await;
        assert_eq!(stolen.status, StatusCode::UNAUTHORIZED);
        assert_eq!(stolen.code(), "refresh_token_reused");
        assert_eq!(
            app.get_as(&third.access, "/api/auth/profile").await.status,
            StatusCode::UNAUTHORIZED
        );
        let r = app
            .post(
                "/api/auth/refresh-token",
                json!({"refresh_token": third.refresh}),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        crate::support::metrics_containing(
            &app.gw.admin_url(),
            &["portcullis_refresh_token_reuse_total 1"],
        )
        .await;

        for junk in ["", "abc", "x.y", &"a".repeat(300)] {
            let r = app
                .post("/api/auth/refresh-token", json!({"refresh_token": junk}))
                .await;
            assert!(
                matches!(r.status, StatusCode::UNAUTHORIZED | StatusCode::BAD_REQUEST),
                "{junk}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_and_logout_all_end_sessions_at_once() {
    for backend in backends() {
        let app = TestApp::spawn(backend, "").await;
        app.verified_user("out@example.com").await;
        let a = app.login("out@example.com").await;
        let b = app.login("out@example.com").await;
        let c = app.login("out@example.com").await;

        assert_eq!(
            app.post_as(&a.access, "/api/auth/logout", json!({}))
                .await
                .status,
            StatusCode::OK
        );
        let r = app.get_as(&a.access, "/api/auth/profile").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.code(), "session_ended");
        let r = app
            .post(
                "/api/auth/refresh-token",
                json!({"refresh_token": a.refresh}),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            app.get_as(&b.access, "/api/auth/profile").await.status,
            StatusCode::OK
        );

        let r = app
            .post_as(&b.access, "/api/auth/logout-all", json!({}))
            .await;
        assert_eq!(r.status, StatusCode::OK);
        for t in [&b, &c] {
            assert_eq!(
                app.get_as(&t.access, "/api/auth/profile").await.status,
                StatusCode::UNAUTHORIZED
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sixth_login_evicts_the_oldest_session() {
    for backend in backends() {
        let app = TestApp::spawn(backend, "").await;
        app.verified_user("cap@example.com").await;
        let mut sessions = Vec::new();
        for _ in 0..6 {
            sessions.push(app.login("cap@example.com").await);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            app.get_as(&sessions[0].access, "/api/auth/profile")
                .await
                .status,
            StatusCode::UNAUTHORIZED
        );
        for t in &sessions[1..] {
            assert_eq!(
                app.get_as(&t.access, "/api/auth/profile").await.status,
                StatusCode::OK
            );
        }
        let list = app.get_as(&sessions[5].access, "/api/auth/sessions").await;
        let listed = list.body["data"]["sessions"].as_array().unwrap();
        assert_eq!(listed.len(), 5, "{backend:?}");
        assert_eq!(listed.iter().filter(|s| s["current"] == true).count(), 1);
        for s in listed {
            for key in [
                "id",
                "created_at",
                "last_seen_at",
                "ip",
                "user_agent",
                "current",
            ] {
                assert!(s.get(key).is_some(), "{key}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_right_logins_all_succeed_within_the_session_cap() {
    for backend in backends() {
        // A real bcrypt cost, so that the logins overlap while their passwords are checked.
        let app = TestApp::spawn_with(backend, "", |c| c.passwords.bcrypt_cost = 10).await;
        app.verified_user("many@example.com").await;
        let body = json!({"email": "many@example.com", "password": PASSWORD});
        // The logins queue for the bounded bcrypt pool: on a loaded machine in a debug build
        // the last one waits longer than the harness client's 10 s, so this one waits more.
        let patient = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(120))
            .build()
            .unwrap();
        let logins = (0..20).map(|_| async {
            let r = patient
                .post(app.url("/api/auth/login"))
                .json(&body)
                .send()
                .await
                .expect("an answer");
            (
                r.status(),
                r.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        });
        let answers = futures_util::future::join_all(logins).await;
        for (i, (status, body)) in answers.iter().enumerate() {
            assert_eq!(*status, StatusCode::OK, "{backend:?} login {i}: {body}");
        }
        // At most `sessions.max_per_user` sessions live: the others were evicted.
        let cap = app.gw.app.config.sessions.max_per_user;
        let mut live = Vec::new();
        for (_, body) in &answers {
            let tokens = tokens_of(body);
            if app.get_as(&tokens.access, "/api/auth/profile").await.status == StatusCode::OK {
                live.push(tokens);
            }
        }
        assert_eq!(live.len(), cap, "{backend:?}");
        let list = app.get_as(&live[0].access, "/api/auth/sessions").await;
        assert_eq!(
            list.body["data"]["sessions"].as_array().map(Vec::len),
            Some(cap)
        );
        // The account is not locked, and wrong guesses still lock it.
        let user = app
            .store()
            .await
            .find_by_email(&portcullis::domain::Email::parse("many@example.com").unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((user.failed_login_attempts, user.locked_until), (0, None));
        for i in 1..=5 {
            let r = app
                .post(
                    "/api/auth/login",
                    json!({"email": "many@example.com", "password": "Wr0ng-Password!"}),
                )
                .await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{backend:?} wrong {i}");
        }
        let r = app.post("/api/auth/login", body).await;
        assert_eq!(r.status, StatusCode::LOCKED, "{backend:?}: {}", r.body);
    }
}

/// One password in two Unicode forms (RFC 8265 OpaqueString compares them in NFC, with
/// non-ASCII spaces as U+0020).
const NFC: &str = "Caf\u{e9}-S3cure!";
const NFD: &str = "Cafe\u{301}-S3cure!";

/// A password as typed at login, and the status it must get.
type Typed = (&'static str, StatusCode);

async fn login_status(app: &TestApp, email: &str, password: &str) -> StatusCode {
    app.post(
        "/api/auth/login",
        json!({"email": email, "password": password}),
    )
    .await
    .status
}

#[tokio::test(flavor = "multi_thread")]
async fn a_password_logs_in_whatever_its_unicode_form() {
    let cases: &[(&str, &str, &[Typed])] = &[
        ("nfc", NFC, &[(NFD, StatusCode::OK), (NFC, StatusCode::OK)]),
        ("nfd", NFD, &[(NFC, StatusCode::OK), (NFD, StatusCode::OK)]),
        (
            "nbsp",
            "Corr3ct\u{a0}Horse!",
            &[
                ("Corr3ct Horse!", StatusCode::OK),
                ("Corr3ct\u{3000}Horse!", StatusCode::OK),
            ],
        ),
        (
            "wrong",
            NFC,
            &[
                ("Cafe\u{301}-S3cure?", StatusCode::UNAUTHORIZED),
                ("Caf\u{e8}-S3cure!", StatusCode::UNAUTHORIZED),
            ],
        ),
    ];
    for backend in backends() {
        let app = TestApp::spawn(backend, "").await;
        for (name, registered, typed) in cases {
            let email = format!("{name}@example.com");
            let r = app
                .post(
                    "/api/auth/register",
                    json!({"email": email, "password": registered, "first_name": "A", "last_name": "B"}),
                )
                .await;
            assert_eq!(
                r.status,
                StatusCode::CREATED,
                "{backend:?} {name}: {}",
                r.body
            );
            for (password, expected) in *typed {
                let status = login_status(&app, &email, password).await;
                assert_eq!(status, *expected, "{backend:?} {name}: {password:?}");
            }
        }
        // The step-up of change-password compares the same way, and sets an NFC hash.
        let token = app.login_with("nfc@example.com", NFD).await;
        let r = app
            .post_as(
                &token,
                "/api/auth/change-password",
                json!({"current_password": NFD, "new_password": "N\u{e9}w-S3cure!"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{backend:?}: {}", r.body);
        let status = login_status(&app, "nfc@example.com", "Ne\u{301}w-S3cure!").await;
        assert_eq!(status, StatusCode::OK, "{backend:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hash_of_the_raw_typed_form_verifies_once_and_is_replaced() {
    for backend in backends() {
        let app = TestApp::spawn(backend, "").await;
        app.verified_user("legacy@example.com").await;
        let store = app.store().await;
        let email = portcullis::domain::Email::parse("legacy@example.com").unwrap();
        let user = store.find_by_email(&email).await.unwrap().unwrap();
        // As stored before passwords were normalised: bcrypt of the raw NFD bytes.
        let legacy = bcrypt::hash(NFD, 4).unwrap();
        store.set_password_hash(user.id, &legacy).await.unwrap();
        assert_eq!(
            login_status(&app, "legacy@example.com", NFC).await,
            StatusCode::UNAUTHORIZED,
            "{backend:?}: the old hash knows only the form as typed"
        );
        assert_eq!(
            login_status(&app, "legacy@example.com", NFD).await,
            StatusCode::OK
        );
        let renewed = store
            .find_by_email(&email)
            .await
            .unwrap()
            .unwrap()
            .password_hash;
        assert_ne!(renewed, legacy, "{backend:?}: rehashed at the first login");
        assert_eq!(
            app.gw.app.hasher.check(NFC, &renewed).await.unwrap(),
            portcullis::auth::Verified::Match,
            "{backend:?}: the new hash is of the NFC form"
        );
        for password in [NFC, NFD] {
            let status = login_status(&app, "legacy@example.com", password).await;
            assert_eq!(status, StatusCode::OK, "{backend:?} {password:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_can_end_only_their_own_sessions() {
    for backend in backends() {
        let app = TestApp::spawn(backend, "").await;
        app.verified_user("mine@example.com").await;
        app.verified_user("theirs@example.com").await;
        let mine = app.login("mine@example.com").await;
        let other_device = app.login("mine@example.com").await;
        let theirs = app.login("theirs@example.com").await;

        let their_sessions = app.get_as(&theirs.access, "/api/auth/sessions").await;
        let their_id = their_sessions.body["data"]["sessions"][0]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let r = app
            .call(
                reqwest::Method::DELETE,
                &format!("/api/auth/sessions/{their_id}"),
                Some(&mine.access),
                None,
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::NOT_FOUND,
            "someone else's session is not mine to end"
        );
        assert_eq!(
            app.get_as(&theirs.access, "/api/auth/profile").await.status,
            StatusCode::OK
        );

        let list = app.get_as(&mine.access, "/api/auth/sessions").await;
        let other_id = list.body["data"]["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["current"] == false)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let r = app
            .call(
                reqwest::Method::DELETE,
                &format!("/api/auth/sessions/{other_id}"),
                Some(&mine.access),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(
            app.get_as(&other_device.access, "/api/auth/profile")
                .await
                .status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            app.get_as(&mine.access, "/api/auth/profile").await.status,
            StatusCode::OK
        );
        let r = app
            .call(
                reqwest::Method::DELETE,
                "/api/auth/sessions/not-a-session-id",
                Some(&mine.access),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn change_password_ends_the_other_sessions() {
    let app = TestApp::spawn(Backend::Embedded, "").await;
    app.verified_user("chg@example.com").await;
    let here = app.login("chg@example.com").await;
    let there = app.login("chg@example.com").await;
    let r = app
        .post_as(
            &here.access,
            "/api/auth/change-password",
            json!({"current_password": "Wr0ng-Password!", "new_password": "N3w-Passw0rd!!"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = app
        .post_as(
            &here.access,
            "/api/auth/change-password",
            json!({"current_password": PASSWORD, "new_password": "N3w-Passw0rd!!"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        app.get_as(&here.access, "/api/auth/profile").await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.get_as(&there.access, "/api/auth/profile").await.status,
        StatusCode::UNAUTHORIZED
    );
    let r = app
        .post(
            "/api/auth/login",
            json!({"email": "chg@example.com", "password": "N3w-Passw0rd!!"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_and_confused_tokens_are_refused() {
    let app = TestApp::spawn(Backend::Embedded, "").await;
    app.verified_user("forge@example.com").await;
    let real = app.login("forge@example.com").await;
    let parts: Vec<&str> = real.access.split('.').collect();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());

    // alg: none
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        parts[1]
    );
    // HS256 signed with the public key bytes from the JWKS
    let jwks: Value = app
        .http
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let x = URL_SAFE_NO_PAD
        .decode(jwks["keys"][0]["x"].as_str().unwrap())
        .unwrap();
    let hs = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&x),
    )
    .unwrap();
    // Signed by another Ed25519 key with the right kid
    let other = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": jwks["keys"][0]["kid"]});
    let signing_input = format!("{}.{}", b64(&header), parts[1]);
    use ed25519_dalek::Signer;
    let forged = format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(other.sign(signing_input.as_bytes()).to_bytes())
    );
    // Tampered claims with the original signature
    let mut elevated = claims.clone();
    elevated["amr"] = json!(["pwd", "otp"]);
    let tampered = format!("{}.{}.{}", parts[0], b64(&elevated), parts[2]);
    // Expired: issued by the gateway's own key ring, long ago
    let (expired, _) = app
        .gw
        .app
        .keys
        .issue_access(
            claims["sub"].as_str().unwrap(),
            claims["sid"].as_str().unwrap(),
            &["pwd"],
            Duration::from_secs(1),
        )
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;

    for (name, token) in [
        ("none", none),
        ("hs256", hs),
        ("other key", forged),
        ("tampered", tampered),
        ("expired", expired),
    ] {
        let r = app.get_as(&token, "/api/auth/profile").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{name} accepted");
    }
    assert_eq!(
        app.get_as(&real.access, "/api/auth/profile").await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn new_device_login_sends_a_notification() {
    let app = TestApp::spawn(Backend::Embedded, "").await;
    app.verified_user("dev@example.com").await;
    app.login("dev@example.com").await; // first login ever: no notification
    let login_from = |ua: &'static str| {
        let app = &app;
        async move {
            app.http
                .post(app.url("/api/auth/login"))
                .header("user-agent", ua)
                .json(&json!({"email": "dev@example.com", "password": PASSWORD}))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    // The mail names the device the header describes, never the header's own text.
    const FIREFOX: &str =
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0 <b>Click</b>";
    assert_eq!(login_from(FIREFOX).await, StatusCode::OK);
    let mail = app
        .smtp
        .wait_for(
            |m| m.text_body().is_some_and(|t| t.contains("Firefox · Linux")),
            Duration::from_secs(10),
        )
        .await;
    let mail = mail.expect("login notification mailed");
    assert!(!mail.text_body().unwrap().contains("Click"));
    let before = app.smtp.count();
    assert_eq!(login_from(FIREFOX).await, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        app.smtp.count(),
        before,
        "a known device is not announced again"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_outage_fails_closed_and_recovers_by_itself() {
    let Some(redis) = crate::support::redis::TestRedis::start().await else {
        return; // Redis variants are off outside CI when no URL is given.
    };
    let relay = crate::support::redis::Relay::start(redis.address().await).await;
    let via = redis.url_via(relay.addr);
    let prefix = redis.prefix.clone();
    let app = TestApp::spawn_with(Backend::Embedded, "", move |c| {
        c.sessions.url = via;
        c.sessions.key_prefix = prefix;
    })
    .await;
    app.verified_user("outage@example.com").await;
    let t = app.login("outage@example.com").await;

    relay.take_down();
    let r = app.get_as(&t.access, "/api/auth/profile").await;
    assert_eq!(
        r.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "fail closed: {}",
        r.body
    );
    assert_eq!(r.code(), "service_unavailable");
    let r = app
        .post(
            "/api/auth/login",
            json!({"email": "outage@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    let health = app
        .http
        .get(format!("{}/health", app.gw.admin_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::SERVICE_UNAVAILABLE);
    let report: Value = health.json().await.unwrap();
    assert_eq!(report["checks"]["storage"], "ok");
    assert_eq!(report["checks"]["sessions"]["status"], "down");

    relay.bring_up();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let r = app.get_as(&t.access, "/api/auth/profile").await;
        if r.status == StatusCode::OK {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never recovered: {} {}",
            r.status,
            r.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let health = app
        .http
        .get(format!("{}/health", app.gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    redis.clean().await;
}
