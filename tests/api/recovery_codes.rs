//! Recovery codes after two-factor authentication is on: how many are left, and new ones
//! behind the step-up, over the API and through the account page's forms (English and
//! Russian). TOTP codes come from `support::otp`, as an authenticator app computes them.

use std::time::Duration;

use crate::support::app::*;
use crate::support::browser::{Browser, Html};
use crate::support::otp::totp;
use portcullis::auth::totp::hash_recovery_code;
use portcullis::store::{AuditEvent, AuditFilter, AuditKind, User};
use reqwest::StatusCode;
use serde_json::json;

const REGENERATE: &str = "/api/auth/2fa/recovery-codes";

async fn account(app: &TestApp, email: &str) -> User {
    let store = app.store().await;
    let user = store.find_by_email(&email.parse().unwrap()).await.unwrap();
    user.unwrap_or_else(|| panic!("no account {email}"))
}

/// `recovery_codes_remaining` as the profile answers it to the holder of `access`.
async fn remaining(app: &TestApp, access: &str) -> u64 {
    let profile = app.get_as(access, "/api/auth/profile").await;
    assert_eq!(profile.status, StatusCode::OK, "{}", profile.body);
    let user = &profile.body["data"]["user"];
    user["recovery_codes_remaining"]
        .as_u64()
        .unwrap_or_else(|| panic!("no recovery_codes_remaining in {user}"))
}

/// Signs in with the password and `code` (TOTP or recovery); the answer as sent.
async fn sign_in_with(app: &TestApp, email: &str, code: &str) -> Answer {
    let body = json!({"email": email, "password": PASSWORD, "two_factor_code": code});
    app.post("/api/auth/login", body).await
}

/// The recovery codes a page lists (`<li><code>…</code>`).
fn codes_on(page: &Html) -> Vec<String> {
    page.body
        .split("<li><code>")
        .skip(1)
        .filter_map(|rest| rest.split("</code>").next())
        .map(str::to_owned)
        .collect()
}

/// The audit trail's `kind` events about `email`, once there is one (they are written
/// after the answer).
async fn audited(app: &TestApp, kind: AuditKind, email: &str) -> Vec<AuditEvent> {
    let store = app.store().await;
    let filter = AuditFilter {
        kind: Some(kind),
        email: Some(email.parse().unwrap()),
        limit: 10,
        ..AuditFilter::default()
    };
    for _ in 0..100 {
        let events = store.audit_events(&filter).await.unwrap();
        if !events.is_empty() {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no {kind} event for {email}");
}

#[tokio::test(flavor = "multi_thread")]
async fn recovery_codes_are_counted_and_replaced_behind_the_step_up() {
    for backend in backends() {
        let app = TestApp::spawn(backend, "").await;
        let email = "keys@example.com";
        app.verified_user(email).await;
        let (secret, old) = app.enable_totp(email).await;
        let signed = sign_in_with(&app, email, &totp(&secret, 0)).await;
        assert_eq!(
            signed.status,
            StatusCode::OK,
            "{backend:?}: {}",
            signed.body
        );
        let access = tokens_of(&signed.body).access;
        assert_eq!(remaining(&app, &access).await, 10, "{backend:?}");

        // A recovery code used to sign in is one fewer.
        let signed = sign_in_with(&app, email, &old[0]).await;
        assert_eq!(
            signed.status,
            StatusCode::OK,
            "{backend:?}: {}",
            signed.body
        );
        let access = tokens_of(&signed.body).access;
        assert_eq!(remaining(&app, &access).await, 9, "{backend:?}");

        // No code at all: named, and no guess counted.
        let r = app
            .post_as(&access, REGENERATE, json!({"password": PASSWORD}))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{backend:?}: {}", r.body);
        assert_eq!(
            r.body["errors"][0]["field"], "two_factor_code",
            "{}",
            r.body
        );
        assert_eq!(account(&app, email).await.failed_login_attempts, 0);

        // A wrong code: refused, counted against the lockout, and nothing replaced.
        let body = json!({"password": PASSWORD, "two_factor_code": "abcd-efgh-jkmn"});
        let r = app.post_as(&access, REGENERATE, body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{backend:?}: {}", r.body);
        assert_eq!(
            r.body["errors"][0]["field"], "two_factor_code",
            "{}",
            r.body
        );
        assert_eq!(
            account(&app, email).await.failed_login_attempts,
            1,
            "{backend:?}: a wrong code is a guess"
        );
        assert_eq!(remaining(&app, &access).await, 9, "{backend:?}");

        // A wrong password with a right code: refused on the password, the code kept.
        let body = json!({"password": "Wr0ng-Password!", "two_factor_code": old[1]});
        let r = app.post_as(&access, REGENERATE, body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{backend:?}: {}", r.body);
        assert_eq!(r.body["errors"][0]["field"], "password", "{}", r.body);

        // The right code: ten new codes, once.
        let body = json!({"password": PASSWORD, "two_factor_code": old[1]});
        let r = app.post_as(&access, REGENERATE, body).await;
        assert_eq!(r.status, StatusCode::OK, "{backend:?}: {}", r.body);
        let new: Vec<String> = r.body["data"]["recovery_codes"]
            .as_array()
            .expect("recovery codes")
            .iter()
            .map(|c| c.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(new.len(), 10, "{}", r.body);
        assert!(new.iter().all(|c| !old.contains(c)), "new codes are new");
        assert_eq!(remaining(&app, &access).await, 10, "{backend:?}");
        let notice = app
            .smtp
            .wait_for(
                |m| {
                    m.subject()
                        .is_some_and(|s| s.contains("New recovery codes"))
                },
                Duration::from_secs(10),
            )
            .await
            .expect("a notice of the new codes");
        let text = notice.text_body().unwrap_or_default();
        assert!(
            new.iter().all(|c| !text.contains(c.as_str())),
            "the mail never carries the codes: {text}"
        );
        let events = audited(&app, AuditKind::RecoveryCodesRegenerate, email).await;
        assert!(
            events.iter().all(|e| new
                .iter()
                .chain(&old)
                .all(|c| !e.detail.contains(c.as_str()))),
            "the trail never holds a code: {events:?}"
        );

        // The old codes, used or not, stop working; the new ones work, once each.
        for code in [&old[0], &old[2], &old[9]] {
            let r = sign_in_with(&app, email, code).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{backend:?}: {code}");
        }
        let r = sign_in_with(&app, email, &new[0]).await;
        assert_eq!(r.status, StatusCode::OK, "{backend:?}: {}", r.body);
        let access = tokens_of(&r.body).access;
        assert_eq!(remaining(&app, &access).await, 9, "{backend:?}");
        let r = sign_in_with(&app, email, &new[0]).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "a new code works once");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn new_recovery_codes_need_two_factor_on_and_a_signed_in_caller() {
    for backend in backends() {
        let app = TestApp::spawn(backend, "").await;
        let email = "plain@example.com";
        app.verified_user(email).await;
        let access = app.login(email).await.access;
        assert_eq!(remaining(&app, &access).await, 0, "{backend:?}");

        let body = json!({"password": PASSWORD, "two_factor_code": "123456"});
        let r = app.post_as(&access, REGENERATE, body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{backend:?}: {}", r.body);
        assert_eq!(r.code(), "two_factor_not_enabled", "{}", r.body);
        assert_eq!(
            account(&app, email).await.failed_login_attempts,
            0,
            "nothing was checked, so nothing was counted"
        );

        let r = app.post(REGENERATE, body.clone()).await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "{backend:?}: {}",
            r.body
        );
        let r = app.post_as("not-a-token", REGENERATE, body).await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "{backend:?}: {}",
            r.body
        );
        let r = app.get_as(&access, REGENERATE).await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{backend:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_codes_for_new_recovery_codes_lock_the_account() {
    let app = TestApp::spawn(Backend::Embedded, "").await;
    let email = "guess@example.com";
    app.verified_user(email).await;
    let (secret, _) = app.enable_totp(email).await;
    let signed = sign_in_with(&app, email, &totp(&secret, 0)).await;
    let access = tokens_of(&signed.body).access;
    for n in 0..5 {
        let code = format!("wxyz-wxyz-wx{n:02}");
        let body = json!({"password": PASSWORD, "two_factor_code": code});
        let r = app.post_as(&access, REGENERATE, body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "guess {n}: {}", r.body);
    }
    let body = json!({"password": PASSWORD, "two_factor_code": totp(&secret, 1)});
    let r = app.post_as(&access, REGENERATE, body).await;
    assert_eq!(r.status, StatusCode::LOCKED, "{}", r.body);
}

/// Signs `browser` in with the password and `code` through both steps of the page.
async fn sign_in_page(browser: &Browser, email: &str, code: &str) {
    let step = browser.sign_in(email, PASSWORD, "/auth/account").await;
    assert_eq!(step.status, StatusCode::OK, "{}", step.body);
    let done = browser
        .post(
            "/auth/login",
            &[
                ("csrf_token", &step.csrf()),
                ("login_ticket", &step.input("login_ticket").expect("ticket")),
                ("two_factor_code", code),
                ("return_to", "/auth/account"),
            ],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
}

/// The account page's sentence about the codes left, with its class when it warns.
fn codes_left_line(page: &Html) -> String {
    let start = page
        .body
        .find("<p id=\"recovery-codes-left\"")
        .unwrap_or_else(|| panic!("no count of recovery codes in {}", page.body));
    let end = page.body[start..].find("</p>").expect("a closed paragraph") + start;
    page.body[start..end].to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_account_page_counts_the_codes_left_and_makes_new_ones() {
    for backend in backends() {
        let app = TestApp::spawn(backend, "").await;
        let email = "page@example.com";
        app.verified_user(email).await;
        let (_, old) = app.enable_totp(email).await;
        let user = account(&app, email).await;
        let browser = Browser::new(&app.gw.url());
        sign_in_page(&browser, email, &old[0]).await;

        let page = browser.get("/auth/account?lang=en").await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let line = codes_left_line(&page);
        assert!(line.ends_with(">9 recovery codes left."), "{line}");
        assert!(!line.contains("warning"), "{line}");
        assert!(page.body.contains("for=\"recovery_two_factor_code\""));
        assert!(page.body.contains("/account/2fa/recovery-codes\""));

        // A wrong code: the account page again, the problem next to the field.
        let wrong = browser
            .post(
                "/auth/account/2fa/recovery-codes",
                &[
                    ("csrf_token", &page.csrf()),
                    ("password", PASSWORD),
                    ("two_factor_code", "abcd-efgh-jkmn"),
                ],
            )
            .await;
        assert_eq!(wrong.status, StatusCode::BAD_REQUEST, "{}", wrong.body);
        assert!(
            wrong.body.contains("id=\"recovery_two_factor_code-error\"")
                && wrong
                    .body
                    .contains("Two-factor code is not a current code or an unused recovery code."),
            "{}",
            wrong.body
        );
        // The same in Russian, on the page in Russian.
        let page = browser.get("/auth/account?lang=ru").await;
        assert!(codes_left_line(&page).ends_with(">Осталось 9 резервных кодов."));
        let wrong = browser
            .post(
                "/auth/account/2fa/recovery-codes",
                &[
                    ("csrf_token", &page.csrf()),
                    ("password", PASSWORD),
                    ("two_factor_code", "abcd-efgh-jkmn"),
                ],
            )
            .await;
        assert_eq!(wrong.status, StatusCode::BAD_REQUEST, "{}", wrong.body);
        assert!(
            wrong.body.contains(
                "Это не текущий код из приложения и не один из неиспользованных резервных кодов."
            ),
            "{}",
            wrong.body
        );
        // Without a code: the form names the field, in the page's language.
        let blank = browser
            .post(
                "/auth/account/2fa/recovery-codes",
                &[("csrf_token", &wrong.csrf()), ("password", PASSWORD)],
            )
            .await;
        assert_eq!(blank.status, StatusCode::BAD_REQUEST, "{}", blank.body);
        assert!(
            blank.body.contains("Заполните поле «Код подтверждения»."),
            "{}",
            blank.body
        );

        // The right code: the new codes, once, on the recovery codes page in Russian.
        let made = browser
            .post(
                "/auth/account/2fa/recovery-codes",
                &[
                    ("csrf_token", &blank.csrf()),
                    ("password", PASSWORD),
                    ("two_factor_code", &old[1]),
                ],
            )
            .await;
        assert_eq!(made.status, StatusCode::OK, "{}", made.body);
        assert_eq!(made.headers["cache-control"], "no-store");
        assert!(
            made.body.contains("Ваши новые резервные коды"),
            "{}",
            made.body
        );
        let new = codes_on(&made);
        assert_eq!(new.len(), 10, "{}", made.body);
        assert!(new.iter().all(|c| !old.contains(c)));
        let r = sign_in_with(&app, email, &old[2]).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "the old codes are gone");

        // The count in both languages, with each plural form, warning at three or fewer.
        let store = app.store().await;
        let table: [(usize, &str, &str, bool); 6] = [
            (
                10,
                "10 recovery codes left.",
                "Осталось 10 резервных кодов.",
                false,
            ),
            (
                4,
                "4 recovery codes left.",
                "Осталось 4 резервных кода.",
                false,
            ),
            (
                3,
                "3 recovery codes left.",
                "Осталось 3 резервных кода.",
                true,
            ),
            (
                2,
                "2 recovery codes left.",
                "Осталось 2 резервных кода.",
                true,
            ),
            (1, "1 recovery code left.", "Остался 1 резервный код.", true),
            (
                0,
                "0 recovery codes left.",
                "Осталось 0 резервных кодов.",
                true,
            ),
        ];
        let mut used = 0;
        for (left, english, russian, warns) in table {
            // Spend codes as a sign-in does, until `left` remain.
            while 10 - used > left {
                let hash = hash_recovery_code(user.id, &new[used]);
                assert!(store.consume_recovery_code(user.id, &hash).await.unwrap());
                used += 1;
            }
            // None left is told as such, not as "a few".
            for (lang, expected, few, none) in [
                ("en", english, "Only a few are left", "Make new ones:"),
                ("ru", russian, "Их осталось мало", "Создайте новые:"),
            ] {
                let page = browser.get(&format!("/auth/account?lang={lang}")).await;
                let line = codes_left_line(&page);
                assert!(
                    line.contains(&format!(">{expected}")),
                    "{lang} {left}: {line}"
                );
                assert_eq!(line.contains("class=\"warning\""), warns, "{line}");
                assert_eq!(line.contains(few), warns && left > 0, "{line}");
                assert_eq!(line.contains(none), left == 0, "{line}");
            }
        }
    }
}
