//! Identity an upstream can trust: proven addresses, second-factor changes that need the
//! second factor, lockout that holds under concurrency, answers that tell an attacker
//! nothing, and operator changes that reach running gateways at once. Every story runs on
//! both backend pairs over real HTTP.

use std::time::{Duration, Instant};

use crate::support::app::*;
use crate::support::otp::{totp, wrong_codes};
use crate::support::{EchoUpstream, echoed_header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use serde_json::{Value, json};

use portcullis::store::admin::{InitialPassword, UserCommand, run_user_command};

const WRONG_PASSWORD: &str = "Wr0ng-Password!";

fn routes(upstream: &EchoUpstream) -> String {
    let up = upstream.url();
    format!(
        "[[routes]]\nname = \"app\"\npath_prefix = \"/app\"\nupstream = \"{up}\"\npolicy = \"authenticated\"\n\
         [[routes]]\nname = \"open\"\npath_prefix = \"/open\"\nupstream = \"{up}\"\npolicy = \"authenticated\"\nrequire_verified_email = false\n\
         [[routes]]\nname = \"admin\"\npath_prefix = \"/admin\"\nupstream = \"{up}\"\npolicy = \"authenticated\"\nroles = [\"admin\"]\n\
         [[routes]]\nname = \"pub\"\npath_prefix = \"/pub\"\nupstream = \"{up}\"\npolicy = \"public\"\n"
    )
}

/// The claims of a JWT, unchecked (the tests that need a signature check use the JWKS).
fn claims_of(token: &str) -> Value {
    let part = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("JSON")
}

async fn get(app: &TestApp, token: &str, path: &str, extra: &[(&str, &str)]) -> Answer {
    let mut request = app.http.get(app.url(path)).bearer_auth(token);
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

async fn login_with(app: &TestApp, email: &str, password: &str, code: Option<&str>) -> Answer {
    let mut body = json!({"email": email, "password": password});
    if let Some(code) = code {
        body["two_factor_code"] = json!(code);
    }
    app.post("/api/auth/login", body).await
}

/// Turns 2FA on for a logged-in, verified user; returns the secret and recovery codes.
async fn enable_two_factor(app: &TestApp, access: &str) -> (String, Vec<String>) {
    let setup = app.post_as(access, "/api/auth/setup-2fa", json!({})).await;
    assert_eq!(setup.status, StatusCode::OK, "{}", setup.body);
    let secret = setup.body["data"]["secret"].as_str().unwrap().to_string();
    let r = app
        .post_as(
            access,
            "/api/auth/enable-2fa",
            json!({"secret": secret, "token": totp(&secret, 0), "password": PASSWORD}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let codes = r.body["data"]["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    (secret, codes)
}

/// Polls `path` as `token` until it answers `want`; returns how long that took.
async fn time_until(app: &TestApp, token: &str, path: &str, want: StatusCode) -> Duration {
    let started = Instant::now();
    loop {
        let r = get(app, token, path, &[]).await;
        if r.status == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{path} still answers {} ({})",
            r.status,
            r.body
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The median of a sample, in seconds.
fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[samples.len() / 2]
}

async fn timed_post(app: &TestApp, path: &str, body: Value) -> (StatusCode, f64) {
    let started = Instant::now();
    let r = app.post(path, body).await;
    (r.status, started.elapsed().as_secs_f64())
}

// ------------------------------------------------------------------ verified email

#[tokio::test(flavor = "multi_thread")]
async fn unverified_accounts_are_refused_where_routes_require_a_verified_email() {
    let upstream = EchoUpstream::start().await;
    for backend in backends() {
        let app = TestApp::spawn(backend, &routes(&upstream)).await;
        let email = "unproven@example.com";
        assert_eq!(app.register(email).await.status, StatusCode::CREATED);
        let t = app.login(email).await;

        let r = get(&app, &t.access, "/app/x", &[]).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{backend:?}: {}", r.body);
        assert_eq!(r.code(), "email_unverified");
        // A client presenting its own Bearer token is told why, whatever it accepts
        // (browsers get a page leading to the account page: tests/api/browser_refusals.rs).
        let r = get(&app, &t.access, "/app/x", &[("accept", "text/html")]).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
        assert_eq!(r.code(), "email_unverified");

        // A route that opts out forwards the account, saying the address is unproven, and
        // a client's own copy of that header never reaches the upstream.
        let r = get(
            &app,
            &t.access,
            "/open/x",
            &[
                ("X-User-Email-Verified", "true"),
                ("x_user_email_verified", "true"),
            ],
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(echoed_header(&r.body, "x-user-email-verified"), ["false"]);
        let assertion = echoed_header(&r.body, "x-identity-assertion");
        let (_, claims) = verify_with_jwks(&app, &assertion[0]).await;
        assert_eq!(claims["email_verified"], false);
        assert_eq!(claims["email"], email);

        let r = get(&app, &t.access, "/pub/x", &[]).await;
        assert_eq!(r.status, StatusCode::OK, "public routes are unaffected");

        // Once the address is proven the same session passes at once.
        let token = app
            .mail_to(email)
            .await
            .token()
            .expect("a verification link");
        let r = app
            .post("/api/auth/verify-email", json!({"token": token}))
            .await;
        assert_eq!(r.status, StatusCode::OK);
        let r = get(&app, &t.access, "/app/x", &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{backend:?}: {}", r.body);
        assert_eq!(echoed_header(&r.body, "x-user-email-verified"), ["true"]);
        let assertion = echoed_header(&r.body, "x-identity-assertion");
        let (_, claims) = verify_with_jwks(&app, &assertion[0]).await;
        assert_eq!(claims["email_verified"], true);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn forward_auth_says_whether_the_address_is_proven_and_can_require_it() {
    for backend in backends() {
        let app = TestApp::spawn(backend, "").await;
        let email = "fa-unproven@example.com";
        app.register(email).await;
        let t = app.login(email).await;
        let r = get(&app, &t.access, "/api/auth/verify", &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{backend:?}: {}", r.body);
        assert_eq!(r.headers["x-user-email-verified"], "false");
        let r = get(&app, &t.access, "/api/auth/verify?verified=true", &[]).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(r.code(), "email_unverified");

        app.verified_user("fa-proven@example.com").await;
        let t = app.login("fa-proven@example.com").await;
        let r = get(&app, &t.access, "/api/auth/verify?verified=true", &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.headers["x-user-email-verified"], "true");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn look_alike_addresses_are_one_account() {
    for backend in backends() {
        let app = TestApp::spawn(backend, "").await;
        assert_eq!(
            app.register("alice@example.com").await.status,
            StatusCode::CREATED
        );
        for look_alike in [
            "\u{ff41}lice@example.com",        // full-width a
            "ALICE@\u{ff25}XAMPLE.COM",        // full-width E
            "alice\u{ff20}example\u{ff0e}com", // full-width @ and .
        ] {
            let r = app.register(look_alike).await;
            assert_eq!(r.status, StatusCode::CONFLICT, "{look_alike:?}: {}", r.body);
        }
        // The typed form is mapped to the canonical one, so it names the same account.
        let r = login_with(&app, "\u{ff41}lice@example.com", PASSWORD, None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["data"]["user"]["email"], "alice@example.com");
    }
}

// ------------------------------------------------------------------ second-factor changes

#[tokio::test(flavor = "multi_thread")]
async fn a_second_factor_cannot_be_replaced_or_removed_with_a_token_alone() {
    for backend in backends() {
        let app = TestApp::spawn(backend, "").await;
        let email = "stepup@example.com";
        app.verified_user(email).await;
        let t = app.login(email).await;
        let (secret, codes) = enable_two_factor(&app, &t.access).await;

        let r = app
            .post_as(&t.access, "/api/auth/setup-2fa", json!({}))
            .await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{backend:?}: {}", r.body);
        assert_eq!(r.code(), "two_factor_already_enabled");
        let intruder = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
        let r = app
            .post_as(
                &t.access,
                "/api/auth/enable-2fa",
                json!({"secret": intruder, "token": totp(intruder, 0)}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
        // The password alone is not enough either.
        let r = app
            .post_as(
                &t.access,
                "/api/auth/enable-2fa",
                json!({"secret": intruder, "token": totp(intruder, 0), "password": PASSWORD}),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
        let r = app
            .post_as(
                &t.access,
                "/api/auth/disable-2fa",
                json!({"password": PASSWORD}),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
        assert_eq!(r.body["errors"][0]["field"], "two_factor_code");
        let r = app
            .post_as(
                &t.access,
                "/api/auth/disable-2fa",
                json!({"password": PASSWORD, "two_factor_code": wrong_codes(&secret, 1)[0]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
        // The old factor still works: nothing was replaced. (Codes are accepted once per
        // 30 s step whatever the secret, so the steps used below never repeat.)
        let r = login_with(&app, email, PASSWORD, Some(&codes[0])).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let strong = tokens_of(&r.body);

        // Password and a recovery code replace the second factor.
        let next = "KRUGS4ZANFZSAYJAORSXG5BAONSWG4TF";
        let r = app
            .post_as(
                &strong.access,
                "/api/auth/enable-2fa",
                json!({"secret": next, "token": totp(next, 0), "password": PASSWORD,
                       "two_factor_code": codes[1]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let new_codes = r.body["data"]["recovery_codes"].clone();
        let r = login_with(&app, email, PASSWORD, Some(&totp(&secret, 1))).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "the old factor is gone");
        let r = login_with(&app, email, PASSWORD, Some(&totp(next, 1))).await;
        assert_eq!(r.status, StatusCode::OK, "the new factor works: {}", r.body);
        let fresh = tokens_of(&r.body);
        // Password and a code of the new factor turn it off.
        let r = app
            .post_as(
                &fresh.access,
                "/api/auth/disable-2fa",
                json!({"password": PASSWORD, "two_factor_code": new_codes[0]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn turning_two_factor_on_ends_the_other_sessions() {
    for backend in backends() {
        let app = TestApp::spawn(backend, "").await;
        let email = "others@example.com";
        app.verified_user(email).await;
        let here = app.login(email).await;
        let elsewhere = app.login(email).await;
        enable_two_factor(&app, &here.access).await;
        let r = app.get_as(&elsewhere.access, "/api/auth/profile").await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "{backend:?}: {}",
            r.body
        );
        let r = app
            .post_as(
                &elsewhere.access,
                "/api/auth/disable-2fa",
                json!({"password": PASSWORD}),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        let r = app.get_as(&here.access, "/api/auth/profile").await;
        assert_eq!(r.status, StatusCode::OK, "the session that did it stays");
        assert_eq!(r.body["data"]["user"]["two_factor_enabled"], true);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_can_reset_a_lost_second_factor() {
    let upstream = EchoUpstream::start().await;
    for backend in backends() {
        let app = TestApp::spawn(backend, &routes(&upstream)).await;
        let email = "lost-phone@example.com";
        app.verified_user(email).await;
        let t = app.login(email).await;
        let (secret, codes) = enable_two_factor(&app, &t.access).await;
        let r = login_with(&app, email, PASSWORD, Some(&totp(&secret, 1))).await;
        let strong = tokens_of(&r.body);
        assert_eq!(
            get(&app, &strong.access, "/app/x", &[]).await.status,
            StatusCode::OK
        );

        let cli = portcullis::store::connect(&app.gw.app.config.storage.url, 2)
            .await
            .expect("the CLI opens the database");
        let out = run_user_command(
            &*cli,
            UserCommand::ResetTwoFactor {
                email: email.into(),
            },
        )
        .await
        .unwrap();
        assert!(out.contains("reset two-factor"), "{out}");
        // The user logs in again at once, before the gateway has read the change.
        let r = login_with(&app, email, PASSWORD, None).await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "the password alone works: {}",
            r.body
        );
        let again = tokens_of(&r.body);
        // Every earlier session ends on the running gateway, in memory sessions too; the
        // one started after the reset stays.
        let waited = time_until(&app, &strong.access, "/app/x", StatusCode::UNAUTHORIZED).await;
        assert!(
            waited < Duration::from_secs(1),
            "{backend:?}: took {waited:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            get(&app, &again.access, "/app/x", &[]).await.status,
            StatusCode::OK,
            "{backend:?}: the login after the reset survives"
        );
        let user = app
            .store()
            .await
            .find_by_email(&email.parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert!(!user.two_factor_enabled);
        assert!(user.two_factor_secret.is_none());
        // Turned on again, the old recovery codes are gone for good.
        let t = tokens_of(&r.body);
        let (_, _) = enable_two_factor(&app, &t.access).await;
        let r = login_with(&app, email, PASSWORD, Some(&codes[1])).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    }
}

// ------------------------------------------------------------------ atomic lockout

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_wrong_passwords_gets_only_the_allowed_checks() {
    for backend in backends() {
        let app = TestApp::spawn(backend, "").await;
        let email = "burst@example.com";
        app.verified_user(email).await;
        let burst = (0..20).map(|_| login_with(&app, email, WRONG_PASSWORD, None));
        let answers = futures_util::future::join_all(burst).await;
        let checked = answers
            .iter()
            .filter(|a| a.status == StatusCode::UNAUTHORIZED)
            .count();
        let locked = answers
            .iter()
            .filter(|a| a.status == StatusCode::LOCKED)
            .count();
        assert_eq!(
            checked, 5,
            "{backend:?}: at most max_failed_attempts checks"
        );
        assert_eq!(locked, 15, "{backend:?}");

        // The right password inside a later burst of wrong ones meets the lock.
        let mut burst: Vec<_> = (0..10)
            .map(|_| login_with(&app, email, WRONG_PASSWORD, None))
            .collect();
        burst.insert(5, login_with(&app, email, PASSWORD, None));
        let answers = futures_util::future::join_all(burst).await;
        assert!(
            answers.iter().all(|a| a.status == StatusCode::LOCKED),
            "{backend:?}: {:?}",
            answers.iter().map(|a| a.status).collect::<Vec<_>>()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_wrong_codes_gets_only_the_allowed_checks() {
    for backend in backends() {
        let app = TestApp::spawn(backend, "").await;
        let email = "codes@example.com";
        app.verified_user(email).await;
        let t = app.login(email).await;
        let (secret, _) = enable_two_factor(&app, &t.access).await;
        let wrong = wrong_codes(&secret, 20);
        let burst = wrong
            .iter()
            .map(|code| login_with(&app, email, PASSWORD, Some(code)));
        let answers = futures_util::future::join_all(burst).await;
        let checked = answers
            .iter()
            .filter(|a| a.status == StatusCode::UNAUTHORIZED)
            .count();
        assert_eq!(checked, 5, "{backend:?}");
        let r = login_with(&app, email, PASSWORD, Some(&totp(&secret, 1))).await;
        assert_eq!(r.status, StatusCode::LOCKED, "{}", r.body);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_current_passwords_count_toward_the_lockout() {
    for backend in backends() {
        let app = TestApp::spawn(backend, "").await;
        let email = "stolen-token@example.com";
        app.verified_user(email).await;
        let t = app.login(email).await;
        for _ in 0..3 {
            let r = app
                .post_as(
                    &t.access,
                    "/api/auth/change-password",
                    json!({"current_password": WRONG_PASSWORD, "new_password": "Quiet-Meadow-Ferry-42"}),
                )
                .await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{backend:?}: {}", r.body);
        }
        for _ in 0..2 {
            let r = app
                .post_as(
                    &t.access,
                    "/api/auth/deactivate",
                    json!({"password": WRONG_PASSWORD}),
                )
                .await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
        }
        // Five wrong guesses: the right password is refused everywhere now.
        let r = app
            .post_as(
                &t.access,
                "/api/auth/deactivate",
                json!({"password": PASSWORD}),
            )
            .await;
        assert_eq!(r.status, StatusCode::LOCKED, "{}", r.body);
        assert_eq!(
            login_with(&app, email, PASSWORD, None).await.status,
            StatusCode::LOCKED
        );
    }
}

// ------------------------------------------------------------------ no oracle

#[tokio::test(flavor = "multi_thread")]
async fn unknown_addresses_are_answered_like_real_ones() {
    for backend in backends() {
        let app = TestApp::spawn(backend, "").await;
        app.verified_user("real@example.com").await;
        let mut seen = Vec::new();
        for email in ["real@example.com", "ghost@example.com"] {
            let answers: Vec<(StatusCode, Value)> = {
                let mut out = Vec::new();
                for _ in 0..7 {
                    let r = login_with(&app, email, WRONG_PASSWORD, None).await;
                    out.push((r.status, r.body));
                }
                out
            };
            seen.push(answers);
        }
        assert_eq!(seen[0], seen[1], "{backend:?}: same statuses and bodies");
        let statuses: Vec<_> = seen[0].iter().map(|(s, _)| *s).collect();
        assert_eq!(&statuses[..5], &[StatusCode::UNAUTHORIZED; 5]);
        assert_eq!(&statuses[5..], &[StatusCode::LOCKED; 2]);
        // The address as typed in another form is the same counter.
        let r = login_with(&app, "GHOST@\u{ff45}xample.com", WRONG_PASSWORD, None).await;
        assert_eq!(r.status, StatusCode::LOCKED);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_locked_account_answers_as_slowly_as_a_wrong_password() {
    for backend in backends() {
        // A real cost makes bcrypt the bulk of a login; 20 attempts before the lock leave
        // room for 15 timed wrong passwords on an account that stays unlocked.
        let app = TestApp::spawn_with(backend, "", |c| {
            c.passwords.bcrypt_cost = 8;
            c.lockout.max_failed_attempts = 20;
        })
        .await;
        app.verified_user("slow@example.com").await;
        app.verified_user("locked@example.com").await;
        for _ in 0..20 {
            let body = json!({"email": "locked@example.com", "password": WRONG_PASSWORD});
            timed_post(&app, "/api/auth/login", body).await;
        }
        // Interleaved, so that a change in the machine's load affects all three alike.
        let (mut wrong, mut locked, mut unknown) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..15 {
            let body = json!({"email": "slow@example.com", "password": WRONG_PASSWORD});
            let (status, took) = timed_post(&app, "/api/auth/login", body).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED);
            wrong.push(took);
            let body = json!({"email": "locked@example.com", "password": PASSWORD});
            let (status, took) = timed_post(&app, "/api/auth/login", body).await;
            assert_eq!(status, StatusCode::LOCKED);
            locked.push(took);
            let body = json!({"email": "nobody@example.com", "password": WRONG_PASSWORD});
            let (status, took) = timed_post(&app, "/api/auth/login", body).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED);
            unknown.push(took);
        }
        let wrong = median(wrong);
        for (what, sample) in [("locked", median(locked)), ("unknown", median(unknown))] {
            let ratio = sample / wrong;
            assert!(
                (0.5..=2.0).contains(&ratio),
                "{backend:?}: {what} {sample:.4}s vs wrong password {wrong:.4}s"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_password_reset_request_takes_as_long_for_unknown_addresses() {
    for backend in backends() {
        let app = TestApp::spawn(backend, "").await;
        let email = "resetme@example.com";
        app.verified_user(email).await;
        let mut real = Vec::new();
        let mut unknown = Vec::new();
        for i in 0..15 {
            let body = json!({"email": email});
            let (status, took) = timed_post(&app, "/api/auth/request-password-reset", body).await;
            assert_eq!(status, StatusCode::OK);
            real.push(took);
            let body = json!({"email": format!("nobody{i}@example.com")});
            let (status, took) = timed_post(&app, "/api/auth/request-password-reset", body).await;
            assert_eq!(status, StatusCode::OK);
            unknown.push(took);
        }
        // The fastest of each: both answers do the same work, and the minimum of many runs
        // is what the work costs without the noise of other tests on a busy machine (the
        // lookup and mail of a real address run after the answer, and slow whatever runs
        // next, real or not).
        let fastest = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
        let ratio = fastest(&real) / fastest(&unknown);
        assert!(
            (0.5..=2.0).contains(&ratio),
            "{backend:?}: real {real:?} vs unknown {unknown:?}"
        );
        // The mail still goes out, after the answer.
        assert!(app.mail_to(email).await.token().is_some());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reset_with_a_wrong_token_costs_no_hashing() {
    for backend in backends() {
        let app = TestApp::spawn_with(backend, "", |c| c.passwords.bcrypt_cost = 10).await;
        app.verified_user("hash@example.com").await;
        let mut resets = Vec::new();
        let mut logins = Vec::new();
        for _ in 0..15 {
            let body = json!({"token": "A".repeat(43), "password": "Quiet-Meadow-Ferry-42"});
            let (status, took) = timed_post(&app, "/api/auth/reset-password", body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST);
            resets.push(took);
        }
        for _ in 0..4 {
            let body = json!({"email": "hash@example.com", "password": WRONG_PASSWORD});
            let (status, took) = timed_post(&app, "/api/auth/login", body).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED);
            logins.push(took);
        }
        // A login with a wrong password runs bcrypt once; a reset with an unknown token
        // must cost far less than that.
        let ratio = median(resets) / median(logins);
        assert!(ratio < 0.5, "{backend:?}: ratio {ratio:.3}");
    }
}

// ------------------------------------------------------------------ operator changes

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_role_grant_reaches_a_running_gateway_within_a_second() {
    let upstream = EchoUpstream::start().await;
    for backend in backends() {
        let app = TestApp::spawn(backend, &routes(&upstream)).await;
        let email = "promoted@example.com";
        app.verified_user(email).await;
        let t = app.login(email).await;
        assert_eq!(
            get(&app, &t.access, "/admin/x", &[]).await.status,
            StatusCode::FORBIDDEN
        );
        let peer = (backend == Backend::Shared).then(|| app.spawn_peer());

        let cli = portcullis::store::connect(&app.gw.app.config.storage.url, 2)
            .await
            .expect("the CLI opens the database");
        let command = |cmd| run_user_command(&*cli, cmd);
        command(UserCommand::GrantRole {
            email: email.into(),
            role: "admin".into(),
        })
        .await
        .unwrap();
        let waited = time_until(&app, &t.access, "/admin/x", StatusCode::OK).await;
        assert!(
            waited < Duration::from_secs(1),
            "{backend:?}: took {waited:?}"
        );
        let r = get(&app, &t.access, "/admin/x", &[]).await;
        assert_eq!(echoed_header(&r.body, "x-user-roles"), ["admin"]);
        if let Some(peer) = &peer {
            let r = app
                .http
                .get(format!("{}/admin/x", peer.url()))
                .bearer_auth(&t.access)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK, "the other instance too");
        }

        command(UserCommand::RevokeRole {
            email: email.into(),
            role: "admin".into(),
        })
        .await
        .unwrap();
        let waited = time_until(&app, &t.access, "/admin/x", StatusCode::FORBIDDEN).await;
        assert!(
            waited < Duration::from_secs(1),
            "{backend:?}: took {waited:?}"
        );

        command(UserCommand::Deactivate {
            email: email.into(),
        })
        .await
        .unwrap();
        let waited = time_until(&app, &t.access, "/app/x", StatusCode::UNAUTHORIZED).await;
        assert!(
            waited < Duration::from_secs(1),
            "{backend:?}: took {waited:?}"
        );
        assert_eq!(
            login_with(&app, email, PASSWORD, None).await.status,
            StatusCode::FORBIDDEN
        );

        command(UserCommand::Activate {
            email: email.into(),
        })
        .await
        .unwrap();
        let t = app.login(email).await;
        assert_eq!(
            get(&app, &t.access, "/app/x", &[]).await.status,
            StatusCode::OK,
            "a fresh login after activation passes at once"
        );
    }
}

/// `user create` makes an account that passes verified-only routes with its roles at once;
/// `user revoke-sessions` and `user delete` end its sessions on every instance within a
/// second, whatever the session backend; a deleted account signs in no more.
#[tokio::test(flavor = "multi_thread")]
async fn an_operator_creates_signs_out_and_deletes_an_account() {
    let upstream = EchoUpstream::start().await;
    let hasher = portcullis::auth::password::PasswordHasher::new(4).unwrap();
    for backend in backends() {
        let app = TestApp::spawn(backend, &routes(&upstream)).await;
        let peer = (backend == Backend::Shared).then(|| app.spawn_peer());
        let cli = portcullis::store::connect(&app.gw.app.config.storage.url, 2)
            .await
            .expect("the CLI opens the database");
        let command = |cmd| run_user_command(&*cli, cmd);
        let email = "vouched@example.com";
        command(UserCommand::Create {
            email: email.into(),
            roles: vec!["admin".into()],
            password: InitialPassword::Chosen(hasher.hash(PASSWORD).await.unwrap()),
        })
        .await
        .unwrap();
        let t = app.login(email).await;
        for path in ["/app/x", "/admin/x"] {
            let r = get(&app, &t.access, path, &[]).await;
            assert_eq!(r.status, StatusCode::OK, "{backend:?} {path}: {}", r.body);
        }
        let peer_status = |token: String| {
            let (http, url) = (app.http.clone(), peer.as_ref().map(|p| p.url()));
            async move {
                let url = url?;
                let r = http.get(format!("{url}/app/x")).bearer_auth(token);
                Some(r.send().await.unwrap().status())
            }
        };

        command(UserCommand::RevokeSessions {
            email: email.into(),
        })
        .await
        .unwrap();
        let waited = time_until(&app, &t.access, "/app/x", StatusCode::UNAUTHORIZED).await;
        assert!(
            waited < Duration::from_secs(1),
            "{backend:?}: took {waited:?}"
        );
        if let Some(status) = peer_status(t.access.clone()).await {
            assert_eq!(status, StatusCode::UNAUTHORIZED, "the other instance too");
        }

        let again = app.login(email).await;
        command(UserCommand::Delete {
            email: email.into(),
        })
        .await
        .unwrap();
        let waited = time_until(&app, &again.access, "/app/x", StatusCode::UNAUTHORIZED).await;
        assert!(
            waited < Duration::from_secs(1),
            "{backend:?}: took {waited:?}"
        );
        if let Some(status) = peer_status(again.access.clone()).await {
            assert_eq!(status, StatusCode::UNAUTHORIZED, "the other instance too");
        }
        let r = login_with(&app, email, PASSWORD, None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
        let r = app
            .post(
                "/api/auth/refresh-token",
                json!({"refresh_token": again.refresh}),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
        // The address is free again: it can register afresh.
        assert_eq!(app.register(email).await.status, StatusCode::CREATED);
    }
}

/// Without a password, `user create` leaves an account no password opens, until the user
/// chooses one through the reset mail.
#[tokio::test(flavor = "multi_thread")]
async fn an_account_created_without_a_password_is_opened_by_the_reset_mail() {
    let hasher = portcullis::auth::password::PasswordHasher::new(4).unwrap();
    for backend in backends() {
        let app = TestApp::spawn(backend, "").await;
        let cli = portcullis::store::connect(&app.gw.app.config.storage.url, 2)
            .await
            .expect("the CLI opens the database");
        let email = "nopass@example.com";
        let out = run_user_command(
            &*cli,
            UserCommand::Create {
                email: email.into(),
                roles: Vec::new(),
                password: InitialPassword::Unusable(hasher.hash_of_unknown_secret().await.unwrap()),
            },
        )
        .await
        .unwrap();
        assert!(out.contains("Forgot password"), "{out}");
        for guess in [PASSWORD, "", "!"] {
            let r = login_with(&app, email, guess, None).await;
            assert_ne!(r.status, StatusCode::OK, "{guess:?} opened it: {}", r.body);
        }
        let r = app
            .post("/api/auth/request-password-reset", json!({"email": email}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let token = app.mail_to(email).await.token().expect("a reset link");
        let r = app
            .post(
                "/api/auth/reset-password",
                json!({"token": token, "password": PASSWORD}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        app.login(email).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fresh_login_never_uses_a_stale_cached_account() {
    let upstream = EchoUpstream::start().await;
    for backend in backends() {
        let app = TestApp::spawn(backend, &routes(&upstream)).await;
        let email = "fresh@example.com";
        app.verified_user(email).await;
        let t = app.login(email).await;
        assert_eq!(
            get(&app, &t.access, "/admin/x", &[]).await.status,
            StatusCode::FORBIDDEN
        );
        // A change written straight to the database, with no feed entry: only a new login
        // may notice it at once.
        let store = app.store().await;
        let user = store
            .find_by_email(&email.parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        store.grant_role(user.id, "admin").await.unwrap();
        let t = app.login(email).await;
        let r = get(&app, &t.access, "/admin/x", &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{backend:?}: {}", r.body);
    }
}

// ------------------------------------------------------------------ token and session edges

#[tokio::test(flavor = "multi_thread")]
async fn max_lifetime_caps_every_session() {
    for backend in backends() {
        let app = TestApp::spawn(backend, "[sessions]\nmax_lifetime = \"60s\"\n").await;
        let email = "short@example.com";
        app.verified_user(email).await;
        for remember_me in [false, true] {
            let r = app
                .post(
                    "/api/auth/login",
                    json!({"email": email, "password": PASSWORD, "remember_me": remember_me}),
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            let tokens = &r.body["data"]["tokens"];
            let refresh_expires_in = tokens["refresh_expires_in"].as_i64().unwrap();
            assert!(
                (1..=60).contains(&refresh_expires_in),
                "{backend:?}: {refresh_expires_in}"
            );
            let t = tokens_of(&r.body);
            let sessions = app.get_as(&t.access, "/api/auth/sessions").await;
            let current = sessions.body["data"]["sessions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["current"] == true)
                .cloned()
                .unwrap();
            let created: chrono::DateTime<chrono::Utc> =
                serde_json::from_value(current["created_at"].clone()).unwrap();
            let expires: chrono::DateTime<chrono::Utc> =
                serde_json::from_value(current["expires_at"].clone()).unwrap();
            assert!((expires - created).num_seconds() <= 60);

            let r = app
                .post(
                    "/api/auth/refresh-token",
                    json!({"refresh_token": t.refresh}),
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            let after = r.body["data"]["tokens"]["refresh_expires_in"]
                .as_i64()
                .unwrap();
            assert!(after <= 60, "refresh never extends past the cap: {after}");
            assert!(claims_of(&t.access)["exp"].as_i64().is_some());
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pending_registration_cannot_be_held_against_the_mailbox_owner() {
    let upstream = EchoUpstream::start().await;
    for backend in backends() {
        let app = TestApp::spawn(backend, &routes(&upstream)).await;
        let email = "squatted@example.com";
        // Someone registers an address that is not theirs and keeps a session of it.
        assert_eq!(app.register(email).await.status, StatusCode::CREATED);
        let squatter = app.login(email).await;
        // Its verification mail lands in the owner's mailbox; the owner ignores it.
        let unsolicited = app.mail_to(email).await;
        assert!(unsolicited.token().is_some());

        // The owner registers: the address is taken, and the owner's mailbox gets a link to
        // choose a password, not the first registrant's verification link.
        let again = app
            .post(
                "/api/auth/register",
                json!({"email": email, "password": "Amber-Lantern-Drift-7", "first_name": "Owen", "last_name": "Owner"}),
            )
            .await;
        assert_eq!(again.status, StatusCode::CONFLICT);
        let claim = app.mail_to(email).await;
        let subject = claim.subject().unwrap_or_default();
        assert!(subject.to_lowercase().contains("password"), "{subject}");
        assert!(
            !claim.text_body().unwrap_or_default().contains("Ada"),
            "the first registrant's name is not used"
        );
        let token = claim.token().expect("a reset link");
        let r = app
            .post(
                "/api/auth/reset-password",
                json!({"token": token, "password": "Amber-Lantern-Drift-7"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);

        // The first registrant's session and password are gone; the owner is verified.
        let r = get(&app, &squatter.access, "/app/x", &[]).await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "{backend:?}: {}",
            r.body
        );
        let r = app
            .post(
                "/api/auth/login",
                json!({"email": email, "password": PASSWORD}),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        let r = app
            .post(
                "/api/auth/login",
                json!({"email": email, "password": "Amber-Lantern-Drift-7"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let owner = tokens_of(&r.body);
        let r = get(&app, &owner.access, "/app/x", &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{backend:?}: {}", r.body);
        assert_eq!(echoed_header(&r.body, "x-user-email-verified"), ["true"]);

        // A verified account's address taken again sends no link.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let links = |app: &TestApp| {
            app.smtp
                .messages()
                .iter()
                .filter(|m| m.token().is_some())
                .count()
        };
        let before = links(&app);
        let again = app
            .post(
                "/api/auth/register",
                json!({"email": email, "password": "Amber-Lantern-Drift-7", "first_name": "Eve", "last_name": "E"}),
            )
            .await;
        assert_eq!(again.status, StatusCode::CONFLICT);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(links(&app), before);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_factor_cannot_be_turned_on_with_a_token_alone() {
    for backend in backends() {
        let app = TestApp::spawn(backend, "").await;
        let email = "stolen-token@example.com";
        app.verified_user(email).await;
        let t = app.login(email).await;
        let setup = app
            .post_as(&t.access, "/api/auth/setup-2fa", json!({}))
            .await;
        let secret = setup.body["data"]["secret"].as_str().unwrap().to_string();
        for body in [
            json!({"secret": secret, "token": totp(&secret, 0)}),
            json!({"secret": secret, "token": totp(&secret, 0), "password": "Wr0ng-Pass!"}),
        ] {
            let r = app.post_as(&t.access, "/api/auth/enable-2fa", body).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{backend:?}: {}", r.body);
            assert!(
                r.body["errors"].to_string().contains("password"),
                "{}",
                r.body
            );
        }
        // Still off: the owner signs in with the password alone.
        let r = app
            .post(
                "/api/auth/login",
                json!({"email": email, "password": PASSWORD}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let r = app
            .post_as(
                &t.access,
                "/api/auth/enable-2fa",
                json!({"secret": secret, "token": totp(&secret, 0), "password": PASSWORD}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{backend:?}: {}", r.body);
    }
}
