//! The sign-in portal over real HTTP: a browser-like client with a cookie jar against the
//! gateway in-process, a real echo upstream and a real SMTP sink.

use std::time::Duration;

use crate::support::EchoUpstream;
use crate::support::app::*;
use crate::support::authenticator::SoftAuthenticator;
use crate::support::browser::{Browser, Html, unescape, urlencode};
use crate::support::otp::totp;
use reqwest::StatusCode;
use serde_json::json;

fn routes(upstream: &str) -> String {
    format!(
        "[[routes]]\nname = \"app\"\npath_prefix = \"/app\"\nupstream = \"{upstream}\"\npolicy = \"authenticated\"\n\
         [[routes]]\nname = \"public\"\npath_prefix = \"/\"\nupstream = \"{upstream}\"\npolicy = \"public\"\n"
    )
}

/// The echo upstream's JSON of a proxied answer.
fn echo_of(page: &Html) -> serde_json::Value {
    serde_json::from_str(&page.body).unwrap_or_else(|_| panic!("not an echo: {}", page.body))
}

async fn spawn(backend: Backend, up: &EchoUpstream) -> TestApp {
    TestApp::spawn(backend, &routes(&up.url())).await
}

/// Registers through the form and follows the mailed link; returns the browser.
async fn register_and_verify(app: &TestApp, browser: &Browser, email: &str) {
    let page = browser.get("/auth/register").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let done = browser
        .post(
            "/auth/register",
            &[
                ("csrf_token", &page.csrf()),
                ("first_name", "Ada"),
                ("last_name", "Lovelace"),
                ("email", email),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(done.body.contains("Check your mail"), "{}", done.body);
    let link = app.mail_to(email).await.link().expect("a link in the mail");
    let path = link
        .strip_prefix(&app.gw.url())
        .unwrap_or_else(|| panic!("{link} is not on the gateway"));
    assert!(path.starts_with("/auth/verify-email?token="), "{path}");
    let confirm = browser.get(path).await;
    assert_eq!(confirm.status, StatusCode::OK, "{}", confirm.body);
    let verified = browser
        .post(
            "/auth/verify-email",
            &[
                ("csrf_token", &confirm.csrf()),
                ("token", &confirm.input("token").unwrap()),
            ],
        )
        .await;
    assert_eq!(verified.status, StatusCode::OK, "{}", verified.body);
    assert!(
        verified.body.contains("Email address confirmed"),
        "{}",
        verified.body
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_browser_registers_signs_in_reaches_the_app_and_signs_out() {
    let up = EchoUpstream::start().await;
    for backend in backends() {
        let app = spawn(backend, &up).await;
        let browser = Browser::new(&app.gw.url());

        let refused = browser.get("/app/page?x=1").await;
        assert_eq!(refused.status, StatusCode::FOUND, "{backend:?}");
        assert_eq!(
            refused.location(),
            "/auth/login?return_to=%2Fapp%2Fpage%3Fx%3D1"
        );
        let login = browser.get(refused.location()).await;
        assert_eq!(login.status, StatusCode::OK);
        assert_eq!(login.input("return_to").as_deref(), Some("/app/page?x=1"));

        register_and_verify(&app, &browser, "ada@example.com").await;
        let signed_in = browser
            .sign_in("ada@example.com", PASSWORD, "/app/page?x=1")
            .await;
        assert_eq!(
            signed_in.status,
            StatusCode::SEE_OTHER,
            "{}",
            signed_in.body
        );
        assert_eq!(signed_in.location(), "/app/page?x=1");
        let cookies = signed_in.set_cookies().join("\n");
        assert!(cookies.contains("portcullis="), "{cookies}");
        assert!(
            cookies.contains("portcullis_refresh=") && cookies.contains("HttpOnly"),
            "{cookies}"
        );

        let page = browser.get("/app/page?x=1").await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let echo = echo_of(&page);
        assert_eq!(
            crate::support::echoed_header(&echo, "x-user-email"),
            ["ada@example.com"]
        );
        // The gateway's cookies stay at the gateway.
        let forwarded = crate::support::echoed_header(&echo, "cookie").join("; ");
        assert!(!forwarded.contains("portcullis"), "{forwarded}");

        let account = browser.get("/auth/account").await;
        assert_eq!(account.status, StatusCode::OK, "{}", account.body);
        assert!(account.body.contains("ada@example.com"));
        assert!(account.body.contains("this browser"));

        let confirm = browser.get("/auth/logout").await;
        assert_eq!(confirm.status, StatusCode::OK);
        let access = browser.cookie("portcullis").expect("access cookie");
        let out = browser
            .post("/auth/logout", &[("csrf_token", &confirm.csrf())])
            .await;
        assert_eq!(out.status, StatusCode::OK, "{}", out.body);
        assert!(out.body.contains("You are signed out"));
        assert_eq!(browser.cookie("portcullis"), None);
        assert_eq!(browser.cookie("portcullis_refresh"), None);
        // The old access token is dead at once, not only forgotten by this browser.
        let r = app
            .http
            .get(app.url("/app/page"))
            .header("cookie", format!("portcullis={access}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{backend:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn forms_without_a_valid_token_or_from_another_site_are_refused() {
    let up = EchoUpstream::start().await;
    let app = spawn(Backend::Embedded, &up).await;
    let browser = Browser::new(&app.gw.url());
    let page = browser.get("/auth/login").await;
    let token = page.csrf();
    let fields = |csrf: &'static str| {
        vec![
            ("email", "a@example.com"),
            ("password", "x"),
            ("csrf_token", csrf),
        ]
    };
    let token: &'static str = Box::leak(token.into_boxed_str());

    for (what, form, headers) in [
        ("no token", fields("")[..2].to_vec(), vec![]),
        ("an empty token", fields(""), vec![]),
        (
            "a forged token",
            fields("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
            vec![],
        ),
        (
            "another site's page",
            fields(token),
            vec![("origin", "https://evil.example")],
        ),
        ("an opaque origin", fields(token), vec![("origin", "null")]),
        (
            "a cross-site fetch",
            fields(token),
            vec![("sec-fetch-site", "cross-site")],
        ),
        (
            "a sibling site",
            fields(token),
            vec![("sec-fetch-site", "same-site")],
        ),
    ] {
        let r = browser.post_with("/auth/login", &form, &headers).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{what}: {}", r.body);
        assert!(r.body.contains("reload the page"), "{what}: {}", r.body);
    }
    // A browser without the cookie (the token was copied from someone else's page).
    let stranger = Browser::new(&app.gw.url());
    let r = stranger.post("/auth/login", &fields(token)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);

    // With the token and this site's origin the form is read (and the password is wrong).
    let own_origin = app.gw.url();
    let r = browser
        .post_with(
            "/auth/login",
            &fields(token),
            &[
                ("origin", own_origin.as_str()),
                ("sec-fetch-site", "same-origin"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    assert!(
        r.body
            .contains("The email address or password is not right"),
        "{}",
        r.body
    );
    assert!(r.body.contains("role=\"alert\""), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn sign_in_returns_only_to_this_site() {
    let up = EchoUpstream::start().await;
    let app = spawn(Backend::Embedded, &up).await;
    app.verified_user("ret@example.com").await;
    for (return_to, expected) in [
        ("/app/x?y=1", "/app/x?y=1"),
        ("//evil.example/x", "/auth/account"),
        ("https://evil.example/x", "/auth/account"),
        ("/\\evil.example", "/auth/account"),
        ("javascript:alert(1)", "/auth/account"),
    ] {
        let browser = Browser::new(&app.gw.url());
        let r = browser
            .sign_in("ret@example.com", PASSWORD, return_to)
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{return_to}: {}", r.body);
        assert_eq!(r.location(), expected, "{return_to}");
        // Already signed in: the sign-in page sends the browser straight on, just as safely.
        let again = browser
            .get(&format!("/auth/login?return_to={}", urlencode(return_to)))
            .await;
        assert_eq!(again.status, StatusCode::SEE_OTHER, "{return_to}");
        assert_eq!(again.location(), expected, "{return_to}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_access_cookie_is_renewed_from_the_refresh_cookie() {
    let up = EchoUpstream::start().await;
    for backend in backends() {
        // Two seconds, not one: `exp` counts whole seconds and is exclusive, so a one-second
        // token issued late in a second may be dead before a loaded machine uses it.
        let app = TestApp::spawn_with(backend, &routes(&up.url()), |c| {
            c.tokens.access_ttl = "2s".parse().unwrap();
        })
        .await;
        app.verified_user("renew@example.com").await;
        let browser = Browser::new(&app.gw.url());
        let r = browser.sign_in("renew@example.com", PASSWORD, "/app").await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
        let first_refresh = browser
            .cookie("portcullis_refresh")
            .expect("refresh cookie");

        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(
            browser.cookie("portcullis"),
            None,
            "the access cookie expired"
        );
        let page = browser.get("/app/after-expiry").await;
        assert_eq!(page.status, StatusCode::OK, "{backend:?}: {}", page.body);
        let echo = echo_of(&page);
        assert_eq!(
            crate::support::echoed_header(&echo, "x-user-email"),
            ["renew@example.com"]
        );
        assert!(
            crate::support::echoed_header(&echo, "cookie")
                .join("")
                .is_empty()
        );
        let renewed = page.set_cookies().join("\n");
        assert!(renewed.contains("portcullis="), "{renewed}");
        assert!(renewed.contains("portcullis_refresh="), "{renewed}");
        let second_refresh = browser.cookie("portcullis_refresh").expect("rotated");
        assert_ne!(first_refresh, second_refresh, "the refresh token rotates");
        // API clients (no browser cookies) are unaffected and a POST goes on as well.
        let posted = browser
            .http
            .post(app.url("/app/form"))
            .header("accept", "text/html")
            .body("a=1")
            .send()
            .await
            .unwrap();
        assert_eq!(posted.status(), StatusCode::OK);

        // The rotated-out token presented again (after the grace for concurrent tabs) is
        // taken for a stolen one: the whole session ends, this browser's cookies too.
        tokio::time::sleep(Duration::from_millis(5200)).await;
        let thief = app
            .http
            .get(app.url("/app/stolen"))
            .header("accept", "application/json")
            .header("cookie", format!("portcullis_refresh={first_refresh}"))
            .send()
            .await
            .unwrap();
        assert_eq!(thief.status(), StatusCode::UNAUTHORIZED, "{backend:?}");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let after = browser.get("/app/after-theft").await;
        assert_eq!(
            after.status,
            StatusCode::FOUND,
            "{backend:?}: {}",
            after.body
        );
        assert!(after.location().starts_with("/auth/login?return_to="));
    }
}

/// A page acts through the API with the browser's access token; one about to expire is
/// renewed first, so a form is never refused because the token died while it was answered.
#[tokio::test(flavor = "multi_thread")]
async fn pages_renew_an_access_cookie_about_to_expire_and_keep_a_fresh_one() {
    let up = EchoUpstream::start().await;
    for (ttl, renews) in [("5s", true), ("15m", false)] {
        let app = TestApp::spawn_with(Backend::Embedded, &routes(&up.url()), |c| {
            c.tokens.access_ttl = ttl.parse().unwrap();
        })
        .await;
        app.verified_user("margin@example.com").await;
        let browser = Browser::new(&app.gw.url());
        let r = browser
            .sign_in("margin@example.com", PASSWORD, "/app")
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
        let access = browser.cookie("portcullis").expect("access cookie");
        let page = browser.get("/auth/account").await;
        assert_eq!(page.status, StatusCode::OK, "{ttl}: {}", page.body);
        assert!(page.body.contains("margin@example.com"), "{}", page.body);
        let set = page.set_cookies().join("\n");
        assert_eq!(set.contains("portcullis_refresh="), renews, "{ttl}: {set}");
        assert_eq!(
            browser.cookie("portcullis").expect("access cookie") != access,
            renews,
            "{ttl}"
        );
        // The renewed cookies work for the next form as well.
        let again = browser.get("/auth/account").await;
        assert_eq!(again.status, StatusCode::OK, "{ttl}: {}", again.body);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_follow_accept_language_and_the_chosen_language() {
    let up = EchoUpstream::start().await;
    let app = spawn(Backend::Embedded, &up).await;
    let browser = Browser::new(&app.gw.url());
    let ru = browser
        .get_with(
            "/auth/login",
            &[("accept-language", "ru-RU,ru;q=0.9,en;q=0.5")],
        )
        .await;
    assert!(ru.body.contains("<html lang=\"ru\">"), "{}", ru.body);
    assert!(ru.body.contains("Войти"), "{}", ru.body);
    assert_eq!(ru.headers["content-language"], "ru");
    let en = browser
        .get_with("/auth/login", &[("accept-language", "de-DE,en-GB;q=0.8")])
        .await;
    assert!(en.body.contains("<html lang=\"en\">"));
    assert!(en.body.contains("Sign in"));
    // Every page links to itself in every language; choosing one is remembered.
    assert!(en.body.contains("hreflang=\"ru\""), "{}", en.body);
    let chosen = browser
        .get_with("/auth/register?lang=ru", &[("accept-language", "en")])
        .await;
    assert!(chosen.body.contains("<html lang=\"ru\">"));
    assert!(
        chosen
            .set_cookies()
            .iter()
            .any(|c| c.starts_with("portcullis_lang=ru"))
    );
    let later = browser
        .get_with("/auth/forgot-password", &[("accept-language", "en")])
        .await;
    assert!(later.body.contains("<html lang=\"ru\">"), "{}", later.body);
    // API messages are translated too.
    let r = browser
        .post(
            "/auth/register",
            &[
                ("csrf_token", &later.csrf()),
                ("email", "short@example.com"),
                ("password", "short"),
                ("first_name", "A"),
                ("last_name", "B"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.body
            .contains("Пароль должен содержать не меньше 10 символов."),
        "{}",
        r.body
    );
    assert!(
        r.body
            .contains("aria-describedby=\"password-error password-hint\""),
        "{}",
        r.body
    );
    assert!(r.body.contains("<title>Ошибка:"), "{}", r.body);
    // A field's message names the field in the page's language.
    let r = browser
        .post(
            "/auth/register",
            &[
                ("csrf_token", &later.csrf()),
                ("email", "named@example.com"),
                ("password", PASSWORD),
                ("first_name", " "),
                ("last_name", "B"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("Заполните поле «Имя»."), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_never_tell_whether_an_address_has_an_account() {
    let up = EchoUpstream::start().await;
    let app = spawn(Backend::Embedded, &up).await;
    app.verified_user("known@example.com").await;
    let browser = Browser::new(&app.gw.url());
    let mut answers = Vec::new();
    for email in ["known@example.com", "unknown@example.com"] {
        let page = browser.get("/auth/forgot-password").await;
        let r = browser
            .post(
                "/auth/forgot-password",
                &[("csrf_token", &page.csrf()), ("email", email)],
            )
            .await;
        answers.push((r.status, r.body));
    }
    assert_eq!(answers[0], answers[1]);
    let mut answers = Vec::new();
    for email in ["known@example.com", "brand-new@example.com"] {
        let page = browser.get("/auth/register").await;
        let r = browser
            .post(
                "/auth/register",
                &[
                    ("csrf_token", &page.csrf()),
                    ("email", email),
                    ("password", PASSWORD),
                    ("first_name", "Ada"),
                    ("last_name", "Lovelace"),
                ],
            )
            .await;
        answers.push((r.status, r.body));
    }
    assert_eq!(answers[0], answers[1]);
    let mut answers = Vec::new();
    for email in ["known@example.com", "nobody@example.com"] {
        let r = browser.sign_in(email, "Wrong-passw0rd!", "/").await;
        answers.push((r.status, r.body.replace(email, "EMAIL")));
    }
    // The forms differ only in their fresh CSRF token.
    let strip = |s: &str| {
        s.lines()
            .filter(|l| !l.contains("csrf_token"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(answers[0].0, answers[1].0);
    assert_eq!(strip(&answers[0].1), strip(&answers[1].1));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_form_locks_the_account_like_the_api() {
    let up = EchoUpstream::start().await;
    let app = spawn(Backend::Embedded, &up).await;
    app.verified_user("lock@example.com").await;
    let browser = Browser::new(&app.gw.url());
    for _ in 0..5 {
        let r = browser
            .sign_in("lock@example.com", "Wrong-passw0rd!", "/")
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let r = browser.sign_in("lock@example.com", PASSWORD, "/").await;
    assert_eq!(r.status, StatusCode::LOCKED, "{}", r.body);
    assert!(r.body.contains("this account is locked"), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn sign_in_is_rate_limited_like_the_api() {
    let up = EchoUpstream::start().await;
    let app = TestApp::spawn_with(Backend::Embedded, &routes(&up.url()), |c| {
        c.rate_limits.login = Some("2/15m".parse().unwrap());
    })
    .await;
    let browser = Browser::new(&app.gw.url());
    for _ in 0..2 {
        let r = browser
            .sign_in("rl@example.com", "Wrong-passw0rd!", "/")
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let r = browser
        .sign_in("rl@example.com", "Wrong-passw0rd!", "/")
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    assert!(r.body.contains("Too many attempts"), "{}", r.body);
    assert!(r.headers.contains_key("retry-after"), "{:?}", r.headers);
    // The API shares the count.
    let api = app
        .post(
            "/api/auth/login",
            json!({"email": "rl@example.com", "password": "x"}),
        )
        .await;
    assert_eq!(api.status, StatusCode::TOO_MANY_REQUESTS);
}

/// The registration and forgotten-password forms count against the limits of the API's
/// endpoints they stand for (`register`, `password_reset`), shared with the API.
#[tokio::test(flavor = "multi_thread")]
async fn registration_and_reset_requests_are_rate_limited_like_the_api() {
    let up = EchoUpstream::start().await;
    let app = TestApp::spawn_with(Backend::Embedded, &routes(&up.url()), |c| {
        c.rate_limits.register = Some("1/15m".parse().unwrap());
        c.rate_limits.password_reset = Some("1/15m".parse().unwrap());
    })
    .await;
    let browser = Browser::new(&app.gw.url());
    for (path, fields, api_path, api_body) in [
        (
            "/auth/register",
            vec![
                ("email", "rl@example.com"),
                ("password", PASSWORD),
                ("first_name", "Ada"),
                ("last_name", "Lovelace"),
            ],
            "/api/auth/register",
            json!({"email": "rl2@example.com", "password": PASSWORD, "first_name": "A", "last_name": "B"}),
        ),
        (
            "/auth/forgot-password",
            vec![("email", "rl@example.com")],
            "/api/auth/request-password-reset",
            json!({"email": "rl@example.com"}),
        ),
    ] {
        let mut answers = Vec::new();
        for _ in 0..2 {
            let page = browser.get(path).await;
            let csrf = page.csrf();
            let mut form = vec![("csrf_token", csrf.as_str())];
            form.extend(fields.iter().copied());
            answers.push(browser.post(path, &form).await);
        }
        assert_eq!(answers[0].status, StatusCode::OK, "{}", answers[0].body);
        let refused = &answers[1];
        assert_eq!(
            refused.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{path}: {}",
            refused.body
        );
        assert!(
            refused.body.contains("Too many attempts"),
            "{}",
            refused.body
        );
        assert!(
            refused.headers.contains_key("retry-after"),
            "{path}: {:?}",
            refused.headers
        );
        // The API shares the count.
        let api = app.post(api_path, api_body).await;
        assert_eq!(api.status, StatusCode::TOO_MANY_REQUESTS, "{api_path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_factor_set_up_and_sign_in_through_the_pages() {
    let up = EchoUpstream::start().await;
    let app = spawn(Backend::Embedded, &up).await;
    app.verified_user("otp@example.com").await;
    let browser = Browser::new(&app.gw.url());
    assert_eq!(
        browser
            .sign_in("otp@example.com", PASSWORD, "/")
            .await
            .status,
        StatusCode::SEE_OTHER
    );
    let account = browser.get("/auth/account").await;
    let setup = browser
        .post(
            "/auth/account/2fa/setup",
            &[("csrf_token", &account.csrf())],
        )
        .await;
    assert_eq!(setup.status, StatusCode::OK, "{}", setup.body);
    assert!(
        crate::support::browser::unescape(&setup.body).contains("src=\"data:image/png;base64,"),
        "{}",
        setup.body
    );
    let secret = setup.input("secret").expect("secret");
    // A wrong code keeps the same secret and says what is wrong, next to the field.
    let wrong = browser
        .post(
            "/auth/account/2fa/enable",
            &[
                ("csrf_token", &setup.csrf()),
                ("secret", &secret),
                ("token", "000000"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST, "{}", wrong.body);
    assert_eq!(wrong.input("secret").as_deref(), Some(secret.as_str()));
    assert!(wrong.body.contains("id=\"token-error\""), "{}", wrong.body);
    let enabled = browser
        .post(
            "/auth/account/2fa/enable",
            &[
                ("csrf_token", &setup.csrf()),
                ("secret", &secret),
                ("token", &totp(&secret, 0)),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(enabled.status, StatusCode::OK, "{}", enabled.body);
    assert_eq!(enabled.headers["cache-control"], "no-store");
    let codes = enabled.body.matches("<li><code>").count();
    assert_eq!(codes, 10, "{}", enabled.body);

    let second = Browser::new(&app.gw.url());
    let step = second.sign_in("otp@example.com", PASSWORD, "/app").await;
    assert_eq!(step.status, StatusCode::OK, "{}", step.body);
    assert!(step.body.contains("autocomplete=\"one-time-code\""));
    assert!(step.body.contains("inputmode=\"numeric\""));
    let ticket = step.input("login_ticket").expect("ticket");
    assert!(
        !step.body.contains(PASSWORD),
        "the password is sealed, not echoed"
    );
    let wrong = second
        .post(
            "/auth/login",
            &[
                ("csrf_token", &step.csrf()),
                ("login_ticket", &ticket),
                ("two_factor_code", "000000"),
                ("return_to", "/app"),
            ],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{}", wrong.body);
    assert!(
        wrong.body.contains("two_factor_code-error"),
        "{}",
        wrong.body
    );
    // A pending step is used once: the used ticket is refused, the fresh one works.
    let reused = second
        .post(
            "/auth/login",
            &[
                ("csrf_token", &step.csrf()),
                ("login_ticket", &ticket),
                ("two_factor_code", &totp(&secret, 1)),
            ],
        )
        .await;
    assert_eq!(reused.status, StatusCode::BAD_REQUEST, "{}", reused.body);
    let ticket = wrong.input("login_ticket").expect("a fresh ticket");
    // The code of the next step: the one used to enable 2FA cannot be replayed.
    let done = second
        .post(
            "/auth/login",
            &[
                ("csrf_token", &step.csrf()),
                ("login_ticket", &ticket),
                ("two_factor_code", &totp(&secret, 1)),
                ("return_to", "/app"),
            ],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(done.location(), "/app");
    // The same code again, in Russian: the page says it was just used, not that it is wrong.
    let third = Browser::new(&app.gw.url());
    third.get("/auth/login?lang=ru").await;
    let step = third.sign_in("otp@example.com", PASSWORD, "/app").await;
    let replayed = third
        .post(
            "/auth/login",
            &[
                ("csrf_token", &step.csrf()),
                ("login_ticket", &step.input("login_ticket").expect("ticket")),
                ("two_factor_code", &totp(&secret, 1)),
            ],
        )
        .await;
    assert_eq!(
        replayed.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        replayed.body
    );
    assert!(
        replayed
            .body
            .contains("Этот код только что использован; дождитесь следующего."),
        "{}",
        replayed.body
    );
    // A tampered ticket is refused without a word about the account (with the token the
    // sign-in gave this browser: the one before it is refused).
    let fresh = second.get("/auth/logout").await;
    let forged = second
        .post(
            "/auth/login",
            &[
                ("csrf_token", &fresh.csrf()),
                ("login_ticket", "AAAA"),
                ("two_factor_code", "123456"),
            ],
        )
        .await;
    assert_eq!(forged.status, StatusCode::BAD_REQUEST);

    // Turning the factor off takes the factor too: the password alone is not enough.
    let recovery = enabled
        .body
        .split("<li><code>")
        .nth(1)
        .and_then(|rest| rest.split("</code>").next())
        .expect("a recovery code")
        .to_owned();
    let account = second.get("/auth/account").await;
    assert!(account.body.contains("id=\"disable_two_factor_code\""));
    let refused = second
        .post(
            "/auth/account/2fa/disable",
            &[("csrf_token", &account.csrf()), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    assert!(
        refused.body.contains("disable_two_factor_code-error"),
        "{}",
        refused.body
    );
    let account = second.get("/auth/account").await;
    let off = second
        .post(
            "/auth/account/2fa/disable",
            &[
                ("csrf_token", &account.csrf()),
                ("password", PASSWORD),
                ("two_factor_code", &recovery),
            ],
        )
        .await;
    assert_eq!(off.status, StatusCode::SEE_OTHER, "{}", off.body);
    let account = second.get("/auth/account").await;
    assert!(
        account.body.contains("account/2fa/setup\"") && !account.body.contains("2fa/disable"),
        "{}",
        account.body
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_account_page_revokes_another_session_and_changes_the_profile() {
    let up = EchoUpstream::start().await;
    let app = spawn(Backend::Embedded, &up).await;
    app.verified_user("acct@example.com").await;
    let other = app.login("acct@example.com").await;
    let browser = Browser::new(&app.gw.url());
    browser.sign_in("acct@example.com", PASSWORD, "/").await;
    let account = browser.get("/auth/account").await;
    assert_eq!(account.status, StatusCode::OK);
    let session_id = account
        .input("session_id")
        .expect("a revoke button for the other session");
    let revoked = browser
        .post(
            "/auth/account/sessions/revoke",
            &[("csrf_token", &account.csrf()), ("session_id", &session_id)],
        )
        .await;
    assert_eq!(revoked.status, StatusCode::SEE_OTHER, "{}", revoked.body);
    assert_eq!(revoked.location(), "/auth/account?done=session");
    let r = app.get_as(&other.access, "/api/auth/profile").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let after = browser.get(revoked.location()).await;
    assert!(
        after.body.contains("That device has been signed out"),
        "{}",
        after.body
    );
    assert_eq!(after.input("session_id"), None);

    let bad = browser
        .post(
            "/auth/account/profile",
            &[
                ("csrf_token", &after.csrf()),
                ("first_name", ""),
                ("last_name", "X"),
            ],
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    assert!(bad.body.contains("id=\"first_name-error\""), "{}", bad.body);
    let good = browser
        .post(
            "/auth/account/profile",
            &[
                ("csrf_token", &after.csrf()),
                ("first_name", "Augusta"),
                ("last_name", "King"),
            ],
        )
        .await;
    assert_eq!(good.status, StatusCode::SEE_OTHER);
    let shown = browser.get("/auth/account").await;
    assert!(shown.body.contains("value=\"Augusta\""), "{}", shown.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forgotten_password_is_reset_from_the_mailed_link() {
    let up = EchoUpstream::start().await;
    let app = spawn(Backend::Embedded, &up).await;
    app.verified_user("reset@example.com").await;
    let browser = Browser::new(&app.gw.url());
    let page = browser.get("/auth/forgot-password").await;
    browser
        .post(
            "/auth/forgot-password",
            &[("csrf_token", &page.csrf()), ("email", "reset@example.com")],
        )
        .await;
    let link = app.mail_to("reset@example.com").await.link().unwrap();
    let path = link.strip_prefix(&app.gw.url()).unwrap().to_owned();
    assert!(path.starts_with("/auth/reset-password?token="), "{path}");
    let form = browser.get(&path).await;
    assert_eq!(form.status, StatusCode::OK);
    let token = form.input("token").unwrap();
    let weak = browser
        .post(
            "/auth/reset-password",
            &[
                ("csrf_token", &form.csrf()),
                ("token", &token),
                ("password", "weak"),
            ],
        )
        .await;
    assert_eq!(weak.status, StatusCode::BAD_REQUEST);
    assert!(weak.body.contains("id=\"password-error\""), "{}", weak.body);
    let new_password = "Quiet-Meadow-Ferry-42";
    let done = browser
        .post(
            "/auth/reset-password",
            &[
                ("csrf_token", &form.csrf()),
                ("token", &token),
                ("password", new_password),
            ],
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    // The reset signed this browser out: its CSRF token changed with it.
    let fresh = browser.get("/auth/forgot-password").await;
    let again = browser
        .post(
            "/auth/reset-password",
            &[
                ("csrf_token", &fresh.csrf()),
                ("token", &token),
                ("password", new_password),
            ],
        )
        .await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST, "a link works once");
    let r = browser
        .sign_in("reset@example.com", new_password, "/app")
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_carry_a_strict_policy_and_the_portal_cannot_be_shadowed() {
    let up = EchoUpstream::start().await;
    let app = spawn(Backend::Embedded, &up).await;
    let browser = Browser::new(&app.gw.url());
    let page = browser.get("/auth/login").await;
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    // No passkeys here: the only script is the portal's own show-password toggle, no
    // fetches, nothing inline.
    assert!(
        !csp.contains("unsafe-inline")
            && csp.contains("script-src 'self';")
            && !csp.contains("connect-src"),
        "{csp}"
    );
    assert_eq!(page.headers["cache-control"], "no-store");
    assert_eq!(page.body.matches("<script").count(), 1);
    assert!(
        unescape(&page.body).contains("<script src=\"/auth/password.js\" defer></script>"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("style="), "no inline styles");
    let css = browser.get("/auth/portal.css").await;
    assert_eq!(css.status, StatusCode::OK);
    assert!(
        css.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    // Non-canonical spellings reach the portal, not the catch-all route.
    let dotted = browser.get("/app/../auth/./login").await;
    assert_eq!(dotted.status, StatusCode::OK);
    assert!(dotted.body.contains("csrf_token"));
    assert_eq!(
        browser.get("/auth/nope").await.status,
        StatusCode::NOT_FOUND
    );
    let err = portcullis::config::Config::load_from(
        std::path::Path::new("t.toml"),
        "[[routes]]\npath_prefix = \"/auth/x\"\nupstream = \"http://127.0.0.1:1\"\n",
        Vec::new(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("routes[0].path_prefix"), "{err}");
}

/// The value of `attribute` in the first tag of `page` that starts `tag_start`.
fn attribute_of(page: &Html, tag_start: &str, attribute: &str) -> String {
    let tag = &page.body[page
        .body
        .find(tag_start)
        .unwrap_or_else(|| panic!("{tag_start}"))..];
    let tag = &tag[..tag.find('>').expect("tag ends")];
    let start = tag.find(&format!("{attribute}=\"")).expect("attribute") + attribute.len() + 2;
    unescape(&tag[start..start + tag[start..].find('"').expect("quoted")])
}

/// `/favicon.ico`, the icon and the logo a signed-out page links to are answered by the
/// gateway from the portal's own files, without a session, even where a catch-all route
/// would hand them to an upstream (which would echo them back as JSON here).
#[tokio::test(flavor = "multi_thread")]
async fn the_icon_and_logo_are_answered_locally_without_a_session() {
    let up = EchoUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let logo = dir.path().join("logo.png");
    let logo_bytes = b"\x89PNG\r\n\x1a\n a logo".to_vec();
    std::fs::write(&logo, &logo_bytes).unwrap();
    let app = TestApp::spawn_with(Backend::Embedded, &routes(&up.url()), |c| {
        c.portal.logo_file = logo.display().to_string();
    })
    .await;
    let browser = Browser::new(&app.gw.url());
    // The catch-all route reaches the upstream, which echoes JSON.
    assert!(echo_of(&browser.get("/elsewhere").await).is_object());

    let icon = browser.get("/favicon.ico").await;
    assert_eq!(icon.status, StatusCode::OK);
    assert_eq!(icon.headers["content-type"], "image/svg+xml");
    assert_eq!(icon.headers["cache-control"], "public, max-age=86400");
    assert!(icon.body.starts_with("<svg"), "{}", icon.body);
    let posted = browser.post("/favicon.ico", &[]).await;
    assert_eq!(posted.status, StatusCode::METHOD_NOT_ALLOWED);

    let page = browser.get("/auth/login").await;
    let icon_href = attribute_of(&page, "<link rel=\"icon\"", "href");
    let logo_src = attribute_of(&page, "<img class=\"logo\"", "src");
    assert!(
        icon_href.starts_with("/auth/static/favicon-"),
        "{icon_href}"
    );
    assert!(logo_src.starts_with("/auth/static/logo-"), "{logo_src}");
    let linked_icon = browser.get(&icon_href).await;
    assert_eq!(linked_icon.status, StatusCode::OK);
    assert_eq!(linked_icon.body, icon.body);
    assert!(
        linked_icon.headers["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    let served = app.http.get(app.url(&logo_src)).send().await.expect("logo");
    assert_eq!(served.status(), StatusCode::OK);
    assert_eq!(served.headers()["content-type"], "image/png");
    assert!(served.headers().contains_key("content-security-policy"));
    assert_eq!(served.bytes().await.unwrap().to_vec(), logo_bytes);
    // Another name under the same folder is no image.
    let stale = browser.get("/auth/static/logo-0000000000000000.png").await;
    assert_eq!(stale.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn mails_go_out_in_the_language_of_the_page() {
    let up = EchoUpstream::start().await;
    let app = spawn(Backend::Embedded, &up).await;
    let browser = Browser::new(&app.gw.url());
    let page = browser
        .get_with("/auth/register?lang=ru", &[("accept-language", "en")])
        .await;
    let r = browser
        .post_with(
            "/auth/register",
            &[
                ("csrf_token", &page.csrf()),
                ("first_name", "Ада"),
                ("last_name", "Лавлейс"),
                ("email", "ada.ru@example.com"),
                ("password", PASSWORD),
            ],
            &[("sec-fetch-site", "same-origin"), ("accept-language", "en")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(
        r.body.contains("Проверьте почту"),
        "the chosen language holds: {}",
        r.body
    );
    let mail = app.mail_to("ada.ru@example.com").await;
    assert_eq!(
        mail.subject().as_deref(),
        Some("Portcullis: Подтвердите адрес электронной почты")
    );
    let text = mail.text_body().unwrap();
    assert!(text.contains("Здравствуйте, Ада!"), "{text}");
    assert!(text.contains("24 часа"), "{text}");
    assert!(mail.link().unwrap().contains("/auth/verify-email?token="));
    // Later mails follow the language registered in, whatever a client asks for.
    let r = app
        .http
        .post(app.url("/api/auth/request-password-reset"))
        .header("accept-language", "en-GB")
        .json(&json!({"email": "ada.ru@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let mail = app.mail_to("ada.ru@example.com").await;
    assert_eq!(mail.subject().as_deref(), Some("Portcullis: Сброс пароля"));
    assert!(mail.text_body().unwrap().contains("1 час"));
    // An account registered through the API follows the request's language.
    let r = app
        .http
        .post(app.url("/api/auth/register"))
        .header("accept-language", "ru")
        .json(&json!({"email": "api.ru@example.com", "password": PASSWORD,
            "first_name": "Пётр", "last_name": "Иванов"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let mail = app.mail_to("api.ru@example.com").await;
    assert_eq!(
        mail.subject().as_deref(),
        Some("Portcullis: Подтвердите адрес электронной почты")
    );
    app.register("api.en@example.com").await;
    let mail = app.mail_to("api.en@example.com").await;
    assert_eq!(
        mail.subject().as_deref(),
        Some("Portcullis: Confirm your email address")
    );

    // Picking a language on a page while signed in moves the mails to it.
    app.verified_user("switch@example.com").await;
    let browser = Browser::new(&app.gw.url());
    browser.sign_in("switch@example.com", PASSWORD, "/").await;
    let account = browser.get("/auth/account?lang=ru").await;
    assert!(
        account.body.contains("Ваша учётная запись"),
        "{}",
        account.body
    );
    app.post(
        "/api/auth/request-password-reset",
        json!({"email": "switch@example.com"}),
    )
    .await;
    let mail = app.mail_to("switch@example.com").await;
    assert_eq!(mail.subject().as_deref(), Some("Portcullis: Сброс пароля"));
}

/// Signs in by hand (no cookie jar: the cookies are `Secure`, and this is plain HTTP).
async fn sign_in_by_hand(app: &TestApp, email: &str) -> Vec<String> {
    let page = app.http.get(app.url("/auth/login")).send().await.unwrap();
    let set: Vec<String> = page
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let csrf_cookie = set
        .iter()
        .find_map(|c| c.split(';').next())
        .expect("a CSRF cookie")
        .to_owned();
    let body = Html {
        status: page.status(),
        headers: page.headers().clone(),
        body: page.text().await.unwrap(),
    };
    let r = app
        .http
        .post(app.url("/auth/login"))
        .header("cookie", csrf_cookie)
        .header("sec-fetch-site", "same-origin")
        .form(&[
            ("csrf_token", body.csrf().as_str()),
            ("email", email),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let mut cookies = set;
    cookies.extend(
        r.headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned()),
    );
    cookies
}

#[tokio::test(flavor = "multi_thread")]
async fn over_https_every_cookie_is_host_prefixed_and_a_shared_domain_makes_them_secure_prefixed() {
    let up = EchoUpstream::start().await;
    let app = TestApp::spawn_with(Backend::Embedded, &routes(&up.url()), |c| {
        c.server.public_url = "https://auth.example.test".parse().unwrap();
    })
    .await;
    app.verified_user("tls@example.com").await;
    let page = app.http.get(app.url("/auth/login")).send().await.unwrap();
    assert_eq!(
        page.headers()["strict-transport-security"],
        "max-age=31536000"
    );
    let cookies = sign_in_by_hand(&app, "tls@example.com").await;
    for prefix in [
        "__Host-portcullis_csrf=",
        "__Host-portcullis=",
        "__Host-portcullis_refresh=",
    ] {
        let cookie = cookies
            .iter()
            .find(|c| c.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in {cookies:?}"));
        assert!(cookie.contains("; Secure"), "{cookie}");
        assert!(cookie.contains("; HttpOnly"), "{cookie}");
        assert!(cookie.contains("; Path=/"), "{cookie}");
        assert!(!cookie.contains("Domain="), "{cookie}");
    }

    let shared = TestApp::spawn_with(Backend::Embedded, &routes(&up.url()), |c| {
        c.server.public_url = "https://auth.example.test".parse().unwrap();
        c.sessions.cookie_domain = "example.test".into();
    })
    .await;
    shared.verified_user("shared@example.com").await;
    let cookies = sign_in_by_hand(&shared, "shared@example.com").await;
    for prefix in ["__Secure-portcullis=", "__Secure-portcullis_refresh="] {
        let cookie = cookies
            .iter()
            .find(|c| c.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in {cookies:?}"));
        assert!(cookie.contains("; Domain=example.test"), "{cookie}");
        assert!(cookie.contains("; Secure"), "{cookie}");
    }
    // The CSRF cookie stays on the portal's own host.
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("__Host-portcullis_csrf="))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn passkeys_are_added_and_used_through_the_portal_forms() {
    for backend in backends() {
        let up = EchoUpstream::start().await;
        let app = TestApp::spawn_with(backend, &routes(&up.url()), |c| {
            c.server.public_url = format!("http://localhost:{}", c.server.listen.port())
                .parse()
                .unwrap();
        })
        .await;
        let origin = app.gw.app.config.server.public_url.clone();
        let email = "portal.passkey@example.com";
        app.verified_user(email).await;
        let browser = Browser::new(&origin);
        let r = browser.sign_in(email, PASSWORD, "/auth/account").await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);

        // The page loads the one script, from the portal, under a policy without inline code.
        let account = browser.get("/auth/account").await;
        assert!(
            account.body.contains("id=\"passkeys-heading\""),
            "{}",
            account.body
        );
        let csp = account.headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        assert_eq!(
            account.body.matches("<script").count(),
            2,
            "passkeys and password"
        );
        assert!(
            unescape(&account.body).contains("<script src=\"/auth/passkeys.js\" defer></script>"),
            "{}",
            account.body
        );
        let script = browser.get("/auth/passkeys.js").await;
        assert_eq!(script.status, StatusCode::OK);
        assert!(
            script.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/javascript")
        );
        assert!(script.body.contains("navigator.credentials"));

        // Adding: the password first, then the authenticator's answer.
        let wrong = browser
            .post(
                "/auth/account/passkeys/add",
                &[
                    ("csrf_token", &account.csrf()),
                    ("name", "Laptop"),
                    ("password", "Wr0ng-pass!"),
                ],
            )
            .await;
        assert_eq!(wrong.status, StatusCode::BAD_REQUEST, "{backend:?}");
        assert!(
            wrong.body.contains("id=\"passkey_password-error\""),
            "{}",
            wrong.body
        );
        let add = browser
            .post(
                "/auth/account/passkeys/add",
                &[
                    ("csrf_token", &account.csrf()),
                    ("name", "Laptop"),
                    ("password", PASSWORD),
                ],
            )
            .await;
        assert_eq!(add.status, StatusCode::OK, "{}", add.body);
        let mut key = SoftAuthenticator::new();
        let credential = key.create(&add.data_options(), &origin);
        let done = browser
            .post(
                "/auth/account/passkeys/register",
                &[
                    ("csrf_token", &add.csrf()),
                    ("ceremony_id", &add.input("ceremony_id").unwrap()),
                    ("name", &add.input("name").unwrap()),
                    ("credential", &credential.to_string()),
                ],
            )
            .await;
        assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
        assert_eq!(done.location(), "/auth/account?done=passkey_added");
        let account = browser.get("/auth/account?done=passkey_added").await;
        assert!(account.body.contains("Your passkey has been added."));
        assert!(account.body.contains("<h3>Laptop</h3>"), "{}", account.body);

        // The password, then the passkey as the second step.
        let second = Browser::new(&origin);
        let step = second.sign_in(email, PASSWORD, "/app/x").await;
        assert_eq!(step.status, StatusCode::OK, "{}", step.body);
        assert!(
            step.body.contains("data-passkey=\"second-factor\""),
            "{}",
            step.body
        );
        assert!(
            !step.body.contains("id=\"two_factor_code\""),
            "no TOTP on this account"
        );
        let answer = key.get(&step.data_options(), &origin);
        let signed_in = second
            .post(
                "/auth/login",
                &[
                    ("csrf_token", &step.csrf()),
                    ("return_to", "/app/x"),
                    ("login_ticket", &step.input("login_ticket").unwrap()),
                    ("passkey_ceremony", &step.input("passkey_ceremony").unwrap()),
                    ("passkey_credential", &answer.to_string()),
                ],
            )
            .await;
        assert_eq!(
            signed_in.status,
            StatusCode::SEE_OTHER,
            "{}",
            signed_in.body
        );
        assert_eq!(signed_in.location(), "/app/x");
        let echo = echo_of(&second.get("/app/x").await);
        assert_eq!(
            crate::support::echoed_header(&echo, "x-user-email"),
            vec![email]
        );

        // No password at all: the options come from the API, the answer goes to the form.
        let third = Browser::new(&origin);
        let login = third.get("/auth/login").await;
        assert!(login.body.contains("autocomplete=\"username webauthn\""));
        let options = app
            .post("/api/auth/passkeys/login/options", json!({}))
            .await;
        let answer = key.get(&options.body["data"]["options"], &origin);
        let signed_in = third
            .post(
                "/auth/login/passkey",
                &[
                    ("csrf_token", &login.csrf()),
                    ("return_to", "/app/y"),
                    (
                        "ceremony_id",
                        options.body["data"]["ceremony_id"].as_str().unwrap(),
                    ),
                    ("credential", &answer.to_string()),
                ],
            )
            .await;
        assert_eq!(
            signed_in.status,
            StatusCode::SEE_OTHER,
            "{}",
            signed_in.body
        );
        assert_eq!(signed_in.location(), "/app/y");
        // The same answer again is refused on the sign-in page (with the CSRF token the
        // sign-in gave this browser).
        let fresh = third.get("/auth/logout").await;
        let again = third
            .post(
                "/auth/login/passkey",
                &[
                    ("csrf_token", &fresh.csrf()),
                    (
                        "ceremony_id",
                        options.body["data"]["ceremony_id"].as_str().unwrap(),
                    ),
                    ("credential", &answer.to_string()),
                ],
            )
            .await;
        assert_eq!(again.status, StatusCode::BAD_REQUEST);
        assert!(
            again.body.contains("The passkey could not be used"),
            "{}",
            again.body
        );

        // Renamed, then removed with the password.
        let account = browser.get("/auth/account").await;
        let id = account.input("passkey_id").expect("a passkey id");
        let renamed = browser
            .post(
                "/auth/account/passkeys/rename",
                &[
                    ("csrf_token", &account.csrf()),
                    ("passkey_id", &id),
                    ("name", "Old laptop"),
                ],
            )
            .await;
        assert_eq!(renamed.location(), "/auth/account?done=passkey_renamed");
        let removed = browser
            .post(
                "/auth/account/passkeys/remove",
                &[
                    ("csrf_token", &account.csrf()),
                    ("passkey_id", &id),
                    ("password", PASSWORD),
                ],
            )
            .await;
        assert_eq!(
            removed.location(),
            "/auth/account?done=passkey_removed",
            "{}",
            removed.body
        );
        let account = browser.get("/auth/account").await;
        assert!(account.body.contains("You have no passkeys yet."));
    }
}

/// The deactivation form: the password is the step-up (a missing or wrong one is named next
/// to the form's field, and a wrong one counts), and a right one ends every session.
#[tokio::test]
async fn the_account_page_deactivates_only_with_the_password() {
    let up = EchoUpstream::start().await;
    let app = spawn(Backend::Embedded, &up).await;
    app.verified_user("leaving@example.com").await;
    let other = app.login("leaving@example.com").await;
    let browser = Browser::new(&app.gw.url());
    browser.sign_in("leaving@example.com", PASSWORD, "/").await;
    for (password, message) in [
        ("", "Password is required."),
        ("Wrong-Password-9", "Password is incorrect."),
    ] {
        let account = browser.get("/auth/account").await;
        let refused = browser
            .post(
                "/auth/account/deactivate",
                &[("csrf_token", &account.csrf()), ("password", password)],
            )
            .await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
        assert!(
            refused.body.contains("id=\"deactivate_password-error\""),
            "{password:?}: {}",
            refused.body
        );
        assert!(
            refused.body.contains(message),
            "{password:?}: {}",
            refused.body
        );
    }
    let account = browser.get("/auth/account").await;
    let done = browser
        .post(
            "/auth/account/deactivate",
            &[("csrf_token", &account.csrf()), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(done.body.contains("Account deactivated"), "{}", done.body);
    let r = app.get_as(&other.access, "/api/auth/profile").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "every session ended");
    let again = browser.sign_in("leaving@example.com", PASSWORD, "/").await;
    assert_eq!(again.status, StatusCode::FORBIDDEN, "{}", again.body);
}

/// With sign-up closed or by invitation, the sign-up page has no form and says why, in
/// every language, and the sign-in page links to no sign-up; a domain outside the list gets
/// the reason on the form.
#[tokio::test(flavor = "multi_thread")]
async fn the_sign_up_page_follows_the_registration_policy() {
    let cases = [
        (
            "closed",
            "accounts are created by an administrator",
            "учётные записи создаёт администратор",
        ),
        (
            "invite",
            "Sign-up here is by invitation only",
            "Регистрация здесь только по приглашению",
        ),
    ];
    for (mode, english, russian) in cases {
        let app = TestApp::spawn(
            Backend::Embedded,
            &format!("[registration]\nmode = \"{mode}\"\n"),
        )
        .await;
        let browser = Browser::new(&app.gw.url());
        for (language, text) in [("en", english), ("ru", russian)] {
            let page = browser
                .get_with(&format!("/auth/register?lang={language}"), &[])
                .await;
            assert_eq!(page.status, StatusCode::OK, "{}", page.body);
            assert!(page.body.contains(text), "{mode} {language}: {}", page.body);
            assert!(
                !page.body.contains("name=\"password\""),
                "{mode}: a form: {}",
                page.body
            );
            let login = browser.get(&format!("/auth/login?lang={language}")).await;
            assert!(login.body.contains("name=\"password\""), "{}", login.body);
            assert!(
                !login.body.contains("/auth/register"),
                "{mode} {language}: {}",
                login.body
            );
        }
        // A form posted anyway (an old tab) is refused, and says why.
        let page = browser.get("/auth/login?lang=en").await;
        let r = browser
            .post(
                "/auth/register",
                &[
                    ("csrf_token", &page.csrf()),
                    ("first_name", "Ada"),
                    ("last_name", "Lovelace"),
                    ("email", "ada@example.com"),
                    ("password", PASSWORD),
                ],
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
        assert!(r.body.contains("Ask an administrator"), "{}", r.body);
        assert!(app.store().await.list_users().await.unwrap().is_empty());
    }

    let app = TestApp::spawn(
        Backend::Embedded,
        "[registration]\nmode = \"domains\"\nallowed_domains = [\"example.com\"]\n",
    )
    .await;
    let browser = Browser::new(&app.gw.url());
    let login = browser.get("/auth/login").await;
    assert!(
        unescape(&login.body).contains("/auth/register"),
        "{}",
        login.body
    );
    let page = browser.get("/auth/register?lang=ru").await;
    assert!(page.body.contains("name=\"password\""), "{}", page.body);
    let r = browser
        .post(
            "/auth/register",
            &[
                ("csrf_token", &page.csrf()),
                ("first_name", "Ada"),
                ("last_name", "Lovelace"),
                ("email", "ada@elsewhere.test"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(
        r.body
            .contains("Регистрация для этого адреса электронной почты закрыта"),
        "{}",
        r.body
    );
    assert!(app.store().await.list_users().await.unwrap().is_empty());
}

/// The mailed invitation opens a page that shows its address (not editable) and takes the
/// names and a password; the account is then signed into; a used or unknown link gets one
/// page that does not say which. Sign-up by oneself stays closed (`invite` mode).
#[tokio::test(flavor = "multi_thread")]
async fn an_invitation_is_accepted_on_its_page() {
    let up = EchoUpstream::start().await;
    for backend in backends() {
        let config = format!("[registration]\nmode = \"invite\"\n{}", routes(&up.url()));
        let app = TestApp::spawn(backend, &config).await;
        let invite = |email: &'static str| {
            let accounts = std::sync::Arc::clone(&app.gw.app);
            async move {
                let email = portcullis::domain::Email::parse(email).unwrap();
                accounts
                    .accounts
                    .invite(email, &["ops".to_owned()], None, "en")
                    .await
                    .unwrap()
            }
        };
        invite("page@example.com").await;
        let link = app.mail_to("page@example.com").await.link().unwrap();
        let path = link.strip_prefix(&app.gw.url()).unwrap().to_owned();
        assert!(path.starts_with("/auth/invitation?token="), "{path}");
        let browser = Browser::new(&app.gw.url());
        let form = browser.get(&path).await;
        assert_eq!(form.status, StatusCode::OK, "{}", form.body);
        assert!(
            form.body.contains("value=\"page@example.com\" readonly"),
            "{}",
            form.body
        );
        let token = form.input("token").unwrap();
        let post = |password: &'static str, csrf: String| {
            let (browser, token) = (&browser, token.clone());
            async move {
                browser
                    .post(
                        "/auth/invitation",
                        &[
                            ("csrf_token", csrf.as_str()),
                            ("token", &token),
                            ("first_name", "Page"),
                            ("last_name", "Invitee"),
                            ("password", password),
                        ],
                    )
                    .await
            }
        };
        let weak = post("weak", form.csrf()).await;
        assert_eq!(weak.status, StatusCode::BAD_REQUEST);
        assert!(weak.body.contains("id=\"password-error\""), "{}", weak.body);
        assert!(weak.body.contains("page@example.com"), "{}", weak.body);
        let done = post(PASSWORD, form.csrf()).await;
        assert_eq!(done.status, StatusCode::OK, "{}", done.body);
        assert!(done.body.contains("Account created"), "{}", done.body);
        let again = post(PASSWORD, form.csrf()).await;
        assert_eq!(again.status, StatusCode::BAD_REQUEST);
        assert!(
            again.body.contains("This invitation does not work"),
            "{}",
            again.body
        );
        let unknown = browser
            .get(&format!("/auth/invitation?token={}", "A".repeat(43)))
            .await;
        assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
        assert!(unknown.body.contains("This invitation does not work"));

        let r = browser.sign_in("page@example.com", PASSWORD, "/app").await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);

        invite("russian@example.com").await;
        let link = app.mail_to("russian@example.com").await.link().unwrap();
        let path = link.strip_prefix(&app.gw.url()).unwrap().to_owned();
        let ru = Browser::new(&app.gw.url())
            .get(&format!("{path}&lang=ru"))
            .await;
        assert_eq!(ru.status, StatusCode::OK);
        assert!(ru.body.contains("Создать учётную запись"), "{}", ru.body);
    }
}

/// An invitee may choose a passkey instead of a password: the invitation's page leads to
/// the passkey page (names checked first), the answer creates the account — address proven,
/// roles granted, the passkey its first — and that passkey alone signs in. The ceremony
/// belongs to its invitation: another invitation's token cannot finish it, a finished one
/// cannot be finished again, and no password works on the account.
#[tokio::test(flavor = "multi_thread")]
async fn an_invitation_is_accepted_with_a_passkey() {
    for backend in backends() {
        let up = EchoUpstream::start().await;
        let config = format!("[registration]\nmode = \"invite\"\n{}", routes(&up.url()));
        let app = TestApp::spawn_with(backend, &config, |c| {
            c.server.public_url = format!("http://localhost:{}", c.server.listen.port())
                .parse()
                .unwrap();
        })
        .await;
        let origin = app.gw.app.config.server.public_url.origin().to_owned();
        let invite = |email: &'static str| {
            let accounts = std::sync::Arc::clone(&app.gw.app);
            async move {
                let email = portcullis::domain::Email::parse(email).unwrap();
                let roles = ["ops".to_owned()];
                accounts
                    .accounts
                    .invite(email, &roles, None, "en")
                    .await
                    .unwrap()
            }
        };
        invite("key@example.com").await;
        invite("other@example.com").await;
        let other_token = app.mail_to("other@example.com").await.token().unwrap();
        let link = app.mail_to("key@example.com").await.link().unwrap();
        let path = link.strip_prefix(&origin).unwrap().to_owned();
        let browser = Browser::new(&origin);
        let form = browser.get(&path).await;
        assert!(
            form.body.contains("/invitation/passkey\" formnovalidate"),
            "{}",
            form.body
        );
        let token = form.input("token").unwrap();
        let begin = |first: &'static str, csrf: String| {
            let (browser, token) = (&browser, token.clone());
            async move {
                let fields = [
                    ("csrf_token", csrf.as_str()),
                    ("token", token.as_str()),
                    ("first_name", first),
                    ("last_name", "Key"),
                    ("password", ""),
                ];
                browser.post("/auth/invitation/passkey", &fields).await
            }
        };
        let blank = begin("", form.csrf()).await;
        assert_eq!(blank.status, StatusCode::BAD_REQUEST, "{}", blank.body);
        assert!(
            blank.body.contains("id=\"first_name-error\""),
            "{}",
            blank.body
        );
        let page = begin("Pass", form.csrf()).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        assert!(
            page.body.contains("data-passkey=\"register\""),
            "{}",
            page.body
        );
        let mut key = SoftAuthenticator::new();
        let credential = key.create(&page.data_options(), &origin).to_string();
        let finish = |token: String, csrf: String| {
            let (browser, credential) = (&browser, credential.clone());
            let ceremony = page.input("ceremony_id").unwrap();
            async move {
                let fields = [
                    ("csrf_token", csrf.as_str()),
                    ("token", token.as_str()),
                    ("ceremony_id", ceremony.as_str()),
                    ("first_name", "Pass"),
                    ("last_name", "Key"),
                    ("credential", credential.as_str()),
                ];
                browser
                    .post("/auth/invitation/passkey/finish", &fields)
                    .await
            }
        };
        let stolen = finish(other_token.clone(), page.csrf()).await;
        assert_eq!(stolen.status, StatusCode::BAD_REQUEST, "{}", stolen.body);
        assert!(app.store().await.list_users().await.unwrap().is_empty());
        // The refused attempt spent the ceremony: a fresh one is begun (with a fresh key,
        // so the one that will sign in is the one stored).
        let page = begin("Pass", form.csrf()).await;
        let mut key = SoftAuthenticator::new();
        let credential = key.create(&page.data_options(), &origin).to_string();
        let fields = [
            ("csrf_token", page.csrf()),
            ("token", token.clone()),
            ("ceremony_id", page.input("ceremony_id").unwrap()),
            ("first_name", "Pass".to_owned()),
            ("last_name", "Key".to_owned()),
            ("credential", credential.clone()),
        ];
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let done = browser
            .post("/auth/invitation/passkey/finish", &fields)
            .await;
        assert_eq!(done.status, StatusCode::OK, "{}", done.body);
        assert!(
            done.body.contains("Sign in with your passkey"),
            "{}",
            done.body
        );
        let again = browser
            .post("/auth/invitation/passkey/finish", &fields)
            .await;
        assert_eq!(again.status, StatusCode::BAD_REQUEST, "{}", again.body);

        let store = app.store().await;
        let email = portcullis::domain::Email::parse("key@example.com").unwrap();
        let user = store.find_by_email(&email).await.unwrap().unwrap();
        assert!(user.is_verified);
        assert_eq!(user.roles, vec!["ops"]);
        assert_eq!(user.first_name, "Pass");
        let passkeys = store.list_passkeys(user.id).await.unwrap();
        assert_eq!(passkeys.len(), 1);
        assert_eq!(passkeys[0].name, "My passkey");
        let tried = app
            .post(
                "/api/auth/login",
                json!({"email": "key@example.com", "password": ""}),
            )
            .await;
        assert_ne!(tried.status, StatusCode::OK, "no password works");

        // The passkey alone signs in.
        let options = app
            .post("/api/auth/passkeys/login/options", json!({}))
            .await;
        let answer = key.get(&options.body["data"]["options"], &origin);
        let signed_in = app
            .post(
                "/api/auth/passkeys/login",
                json!({
                    "ceremony_id": options.body["data"]["ceremony_id"],
                    "credential": answer,
                }),
            )
            .await;
        assert_eq!(signed_in.status, StatusCode::OK, "{}", signed_in.body);
    }
}

/// An invited address someone signed up with first: the invitation page says so (409), in
/// the page's language, instead of a failure; nothing is created.
#[tokio::test(flavor = "multi_thread")]
async fn an_invitation_for_a_taken_address_says_so() {
    for backend in backends() {
        let app = TestApp::spawn(backend, "").await;
        let email = portcullis::domain::Email::parse("taken@example.com").unwrap();
        let accounts = std::sync::Arc::clone(&app.gw.app);
        accounts
            .accounts
            .invite(email, &[], None, "en")
            .await
            .unwrap();
        let link = app.mail_to("taken@example.com").await.link().unwrap();
        let r = app.register("taken@example.com").await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let origin = app.gw.app.config.server.public_url.origin().to_owned();
        let path = link.strip_prefix(&origin).unwrap().to_owned();
        let browser = Browser::new(&app.gw.url());
        let form = browser.get(&path).await;
        let fields = [
            ("csrf_token", form.csrf()),
            ("token", form.input("token").unwrap()),
            ("first_name", "Tak".to_owned()),
            ("last_name", "En".to_owned()),
            ("password", PASSWORD.to_owned()),
        ];
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = browser.post("/auth/invitation", &fields).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{backend:?}: {}", r.body);
        assert!(
            r.body.contains("This address already has an account"),
            "{}",
            r.body
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sign_in_link_after_verifying_keeps_where_registration_began() {
    let up = EchoUpstream::start().await;
    let app = spawn(Backend::Embedded, &up).await;
    let browser = Browser::new(&app.gw.url());
    let page = browser
        .get("/auth/register?return_to=%2Fapp%2Freport")
        .await;
    let done = browser
        .post(
            "/auth/register",
            &[
                ("csrf_token", &page.csrf()),
                ("first_name", "Ada"),
                ("last_name", "Lovelace"),
                ("email", "back@example.com"),
                ("password", PASSWORD),
                ("return_to", "/app/report"),
            ],
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    let link = app
        .mail_to("back@example.com")
        .await
        .link()
        .expect("a link");
    assert!(link.contains("return_to=%2Fapp%2Freport"), "{link}");
    let path = link
        .split_once("/auth/")
        .map(|(_, p)| format!("/auth/{p}"))
        .unwrap();
    let confirm = browser.get(&path).await;
    assert_eq!(confirm.status, StatusCode::OK, "{}", confirm.body);
    let verified = browser
        .post(
            "/auth/verify-email",
            &[
                ("csrf_token", &confirm.csrf()),
                ("token", &confirm.input("token").expect("token")),
                ("return_to", &confirm.input("return_to").expect("return_to")),
            ],
        )
        .await;
    assert_eq!(verified.status, StatusCode::OK, "{}", verified.body);
    assert!(
        unescape(&verified.body).contains("/auth/login?return_to=%2Fapp%2Freport"),
        "{}",
        verified.body
    );
    // A return_to the portal would not follow is dropped, not carried.
    let elsewhere = browser.get("/auth/verify-email?token=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA&return_to=https%3A%2F%2Fevil.example%2F").await;
    assert!(elsewhere.input("return_to").is_none(), "{}", elsewhere.body);
}
