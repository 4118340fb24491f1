//! Passkey stories over HTTP with a software authenticator (`support::authenticator`,
//! p256 + CBOR written for the tests, not the relying-party library under test): adding,
//! listing, renaming and removing passkeys, a passkey as the second factor, passwordless
//! sign-in, and what is refused (a cloned authenticator, a reused or foreign ceremony, no
//! user verification). Every story runs on SQLite + memory and, when configured,
//! PostgreSQL + Redis, where a ceremony begun on one instance is finished on another.

use crate::support::app::*;
use crate::support::authenticator::SoftAuthenticator;
use crate::support::browser::{Browser, Html, unescape};
use crate::support::{EchoUpstream, echoed_header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A gateway whose public URL is `http://localhost:<port>`, so passkeys are on, with a
/// `two_factor` route to an echo upstream under `/secure`.
async fn spawn(backend: Backend, upstream: &EchoUpstream) -> TestApp {
    let routes = format!(
        "[[routes]]\nname = \"secure\"\npath_prefix = \"/secure\"\nupstream = \"{}\"\npolicy = \"two_factor\"\n",
        upstream.url()
    );
    TestApp::spawn_with(backend, &routes, |c| {
        c.server.public_url = format!("http://localhost:{}", c.server.listen.port())
            .parse()
            .unwrap();
    })
    .await
}

/// The origin a browser on the public URL would report.
fn origin(app: &TestApp) -> String {
    app.gw.app.config.server.public_url.to_string()
}

fn amr_of(access: &str) -> Value {
    let claims = access.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
    claims["amr"].clone()
}

/// Adds a passkey named `name` to the account of `token` and returns its id.
async fn add_passkey(
    app: &TestApp,
    token: &str,
    authenticator: &mut SoftAuthenticator,
    name: &str,
) -> String {
    let r = app
        .post_as(
            token,
            "/api/auth/passkeys/register/options",
            json!({"password": PASSWORD}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let data = &r.body["data"];
    let options = &data["options"];
    assert_eq!(
        options["publicKey"]["authenticatorSelection"]["residentKey"],
        "required"
    );
    assert_eq!(
        options["publicKey"]["authenticatorSelection"]["userVerification"],
        "required"
    );
    let credential = authenticator.create(options, &origin(app));
    let r = app
        .post_as(
            token,
            "/api/auth/passkeys/register",
            json!({"ceremony_id": data["ceremony_id"], "name": name, "credential": credential}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["data"]["passkey"]["name"], name);
    r.body["data"]["passkey"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A passwordless sign-in: options, the authenticator's answer, the finish.
async fn passwordless(app: &TestApp, authenticator: &mut SoftAuthenticator) -> Answer {
    let r = app
        .post("/api/auth/passkeys/login/options", json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let data = &r.body["data"];
    assert_eq!(data["options"]["mediation"], "conditional");
    let credential = authenticator.get(&data["options"], &origin(app));
    app.post(
        "/api/auth/passkeys/login",
        json!({"ceremony_id": data["ceremony_id"], "credential": credential}),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn passkeys_are_off_when_the_public_url_is_an_ip_address() {
    let app = TestApp::spawn(Backend::Embedded, "").await;
    let r = app
        .post("/api/auth/passkeys/login/options", json!({}))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    assert_eq!(r.code(), "passkeys_disabled");
    app.verified_user("ip@example.com").await;
    let t = app.login("ip@example.com").await;
    let r = app.get_as(&t.access, "/api/auth/passkeys").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["data"]["enabled"], false);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_adds_lists_renames_and_removes_passkeys() {
    for backend in backends() {
        let up = EchoUpstream::start().await;
        let app = spawn(backend, &up).await;
        let email = "keys@example.com";
        app.verified_user(email).await;
        let t = app.login(email).await;

        let r = app
            .post_as(&t.access, "/api/auth/passkeys/register/options", json!({}))
            .await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "the password is required"
        );
        assert_eq!(r.body["errors"][0]["field"], "password");
        let r = app
            .post_as(
                &t.access,
                "/api/auth/passkeys/register/options",
                json!({"password": "Wr0ng-password!"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{backend:?}");

        let mut laptop = SoftAuthenticator::new();
        let mut phone = SoftAuthenticator::new();
        let laptop_id = add_passkey(&app, &t.access, &mut laptop, "Laptop").await;
        let added = app
            .smtp
            .wait_for(
                |m| {
                    m.subject().as_deref()
                        == Some("Portcullis: A passkey was added to your account")
                },
                std::time::Duration::from_secs(10),
            )
            .await
            .expect("a mail about the new passkey");
        let text = added.text_body().unwrap_or_default();
        assert!(text.contains("\"Laptop\""), "{text}");
        let phone_id = add_passkey(&app, &t.access, &mut phone, "Phone").await;

        let r = app.get_as(&t.access, "/api/auth/passkeys").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body["data"]["enabled"], true);
        let names: Vec<&str> = r.body["data"]["passkeys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["Laptop", "Phone"]);

        let r = app
            .call(
                reqwest::Method::PATCH,
                &format!("/api/auth/passkeys/{phone_id}"),
                Some(&t.access),
                Some(json!({"name": "Work phone"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["data"]["passkey"]["name"], "Work phone");

        let r = app
            .call(
                reqwest::Method::DELETE,
                &format!("/api/auth/passkeys/{laptop_id}"),
                Some(&t.access),
                Some(json!({})),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "removal needs the password"
        );
        let r = app
            .call(
                reqwest::Method::DELETE,
                &format!("/api/auth/passkeys/{laptop_id}"),
                Some(&t.access),
                Some(json!({"password": PASSWORD})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        app.smtp
            .wait_for(
                |m| {
                    m.subject().as_deref()
                        == Some("Portcullis: A passkey was removed from your account")
                },
                std::time::Duration::from_secs(10),
            )
            .await
            .expect("a mail about the removed passkey");
        let r = app.get_as(&t.access, "/api/auth/passkeys").await;
        assert_eq!(r.body["data"]["passkeys"].as_array().unwrap().len(), 1);
        let r = app
            .call(
                reqwest::Method::DELETE,
                &format!("/api/auth/passkeys/{laptop_id}"),
                Some(&t.access),
                Some(json!({"password": PASSWORD})),
            )
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);

        crate::support::metrics_containing(
            &app.gw.admin_url(),
            &[
                "portcullis_passkey_events_total{event=\"registered\",reason=\"ok\"} 2",
                "portcullis_passkey_events_total{event=\"removed\",reason=\"ok\"} 1",
            ],
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn another_users_token_cannot_finish_or_touch_a_passkey() {
    let up = EchoUpstream::start().await;
    let app = spawn(Backend::Embedded, &up).await;
    app.verified_user("owner@example.com").await;
    app.verified_user("other@example.com").await;
    let owner = app.login("owner@example.com").await;
    let other = app.login("other@example.com").await;
    let r = app
        .post_as(
            &owner.access,
            "/api/auth/passkeys/register/options",
            json!({"password": PASSWORD}),
        )
        .await;
    let data = &r.body["data"];
    let credential = SoftAuthenticator::new().create(&data["options"], &origin(&app));
    let r = app
        .post_as(
            &other.access,
            "/api/auth/passkeys/register",
            json!({"ceremony_id": data["ceremony_id"], "name": "Mine", "credential": credential}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "ceremony_invalid");

    let mut key = SoftAuthenticator::new();
    let id = add_passkey(&app, &owner.access, &mut key, "Key").await;
    let r = app
        .call(
            reqwest::Method::PATCH,
            &format!("/api/auth/passkeys/{id}"),
            Some(&other.access),
            Some(json!({"name": "Stolen"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_passkey_is_the_second_factor_after_the_password() {
    for backend in backends() {
        let up = EchoUpstream::start().await;
        let app = spawn(backend, &up).await;
        let email = "second@example.com";
        app.verified_user(email).await;
        let t = app.login(email).await;
        let mut key = SoftAuthenticator::new();
        add_passkey(&app, &t.access, &mut key, "Key").await;

        let r = app
            .post(
                "/api/auth/login",
                json!({"email": email, "password": PASSWORD}),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{backend:?}");
        assert_eq!(r.code(), "two_factor_required");
        assert_eq!(r.body["data"]["methods"], json!(["passkey"]));
        let challenge = &r.body["data"]["passkey"];
        let credential = key.get(&challenge["options"], &origin(&app));
        let r = app
            .post(
                "/api/auth/login",
                json!({"email": email, "password": PASSWORD,
                       "passkey": {"ceremony_id": challenge["ceremony_id"], "credential": credential}}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let tokens = tokens_of(&r.body);
        assert_eq!(amr_of(&tokens.access), json!(["pwd", "hwk"]));

        let r = app
            .http
            .get(app.url("/secure/x"))
            .bearer_auth(&tokens.access)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "a two_factor route lets it through"
        );
        let echo: Value = r.json().await.unwrap();
        assert_eq!(echoed_header(&echo, "x-user-email"), vec![email]);

        // A refresh keeps what the login proved.
        let r = app
            .post(
                "/api/auth/refresh-token",
                json!({"refresh_token": tokens.refresh}),
            )
            .await;
        assert_eq!(amr_of(&tokens_of(&r.body).access), json!(["pwd", "hwk"]));

        // The same answer again (a replayed challenge) is refused and counted.
        let r = app
            .post(
                "/api/auth/login",
                json!({"email": email, "password": PASSWORD,
                       "passkey": {"ceremony_id": challenge["ceremony_id"], "credential": credential}}),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.code(), "invalid_credentials");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn totp_users_may_use_a_passkey_instead_of_the_code() {
    let up = EchoUpstream::start().await;
    let app = spawn(Backend::Embedded, &up).await;
    let email = "both@example.com";
    app.verified_user(email).await;
    let t = app.login(email).await;
    let r = app
        .post_as(&t.access, "/api/auth/setup-2fa", json!({}))
        .await;
    let secret = r.body["data"]["secret"].as_str().unwrap().to_string();
    let r = app
        .post_as(
            &t.access,
            "/api/auth/enable-2fa",
            json!({"secret": secret, "token": crate::support::otp::totp(&secret, 0), "password": PASSWORD}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let recovery: Vec<String> = r.body["data"]["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    let r = app
        .post(
            "/api/auth/login",
            json!({"email": email, "password": PASSWORD}),
        )
        .await;
    assert_eq!(r.body["data"]["methods"], json!(["totp"]));
    let r = app
        .post(
            "/api/auth/login",
            json!({"email": email, "password": PASSWORD, "two_factor_code": recovery[0]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let t = tokens_of(&r.body);

    let r = app
        .post_as(
            &t.access,
            "/api/auth/passkeys/register/options",
            json!({"password": PASSWORD}),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "with TOTP on, the step-up needs a code"
    );
    assert_eq!(r.body["errors"][0]["field"], "two_factor_code");
    let r = app
        .post_as(
            &t.access,
            "/api/auth/passkeys/register/options",
            json!({"password": PASSWORD, "two_factor_code": recovery[1]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let mut key = SoftAuthenticator::new();
    let credential = key.create(&r.body["data"]["options"], &origin(&app));
    let r = app
        .post_as(
            &t.access,
            "/api/auth/passkeys/register",
            json!({"ceremony_id": r.body["data"]["ceremony_id"], "name": "Key", "credential": credential}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);

    let r = app
        .post(
            "/api/auth/login",
            json!({"email": email, "password": PASSWORD}),
        )
        .await;
    assert_eq!(r.code(), "two_factor_required");
    assert_eq!(r.body["data"]["methods"], json!(["totp", "passkey"]));
    let challenge = &r.body["data"]["passkey"];
    let credential = key.get(&challenge["options"], &origin(&app));
    let r = app
        .post(
            "/api/auth/login",
            json!({"email": email, "password": PASSWORD,
                   "passkey": {"ceremony_id": challenge["ceremony_id"], "credential": credential}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(amr_of(&tokens_of(&r.body).access), json!(["pwd", "hwk"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_passkey_alone_signs_in_as_two_factors() {
    for backend in backends() {
        let up = EchoUpstream::start().await;
        let app = spawn(backend, &up).await;
        let email = "nopassword@example.com";
        app.verified_user(email).await;
        let t = app.login(email).await;
        let mut key = SoftAuthenticator::new();
        add_passkey(&app, &t.access, &mut key, "Key").await;

        let r = passwordless(&app, &mut key).await;
        assert_eq!(r.status, StatusCode::OK, "{backend:?}: {}", r.body);
        assert_eq!(r.body["data"]["user"]["email"], email);
        let tokens = tokens_of(&r.body);
        assert_eq!(amr_of(&tokens.access), json!(["hwk", "mfa"]));
        let r = app
            .http
            .get(app.url("/secure/x"))
            .bearer_auth(&tokens.access)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let r = app.get_as(&tokens.access, "/api/auth/passkeys").await;
        assert!(
            r.body["data"]["passkeys"][0]["last_used_at"].is_string(),
            "{}",
            r.body
        );
        crate::support::metrics_containing(
            &app.gw.admin_url(),
            &["portcullis_passkey_events_total{event=\"used\",reason=\"ok\"} 1"],
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cloned_authenticator_is_refused_and_logged() {
    for backend in backends() {
        let up = EchoUpstream::start().await;
        let app = spawn(backend, &up).await;
        let email = "clone@example.com";
        app.verified_user(email).await;
        let t = app.login(email).await;
        let mut original = SoftAuthenticator::new();
        add_passkey(&app, &t.access, &mut original, "Key").await;
        let mut clone = original.clone();

        let r = passwordless(&app, &mut original).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let r = passwordless(&app, &mut original).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        // The clone's counter (1) is behind the stored one (2).
        let r = passwordless(&app, &mut clone).await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "{backend:?}: {}",
            r.body
        );
        assert_eq!(r.code(), "passkey_refused");
        crate::support::metrics_containing(
            &app.gw.admin_url(),
            &["portcullis_passkey_events_total{event=\"refused\",reason=\"counter_regression\"} 1"],
        )
        .await;
        // The original goes on working.
        let r = passwordless(&app, &mut original).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ceremony_is_finished_once() {
    for backend in backends() {
        let up = EchoUpstream::start().await;
        let app = spawn(backend, &up).await;
        let email = "once@example.com";
        app.verified_user(email).await;
        let t = app.login(email).await;
        let mut key = SoftAuthenticator::new();
        add_passkey(&app, &t.access, &mut key, "Key").await;

        let r = app
            .post("/api/auth/passkeys/login/options", json!({}))
            .await;
        let data = r.body["data"].clone();
        let credential = key.get(&data["options"], &origin(&app));
        let body = json!({"ceremony_id": data["ceremony_id"], "credential": credential});
        let r = app.post("/api/auth/passkeys/login", body.clone()).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let r = app.post("/api/auth/passkeys/login", body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{backend:?}");
        assert_eq!(r.code(), "ceremony_invalid");

        let r = app
            .post(
                "/api/auth/passkeys/login",
                json!({"ceremony_id": "nope", "credential": {}}),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(r.code(), "validation_error");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn passwordless_needs_user_verification_and_failures_count_towards_the_lock() {
    let up = EchoUpstream::start().await;
    let app = spawn(Backend::Embedded, &up).await;
    let email = "presence@example.com";
    app.verified_user(email).await;
    let t = app.login(email).await;
    let mut key = SoftAuthenticator::new();
    add_passkey(&app, &t.access, &mut key, "Key").await;
    key.verifies_user = false;
    let max = app.gw.app.config.lockout.max_failed_attempts;
    for _ in 0..max {
        let r = passwordless(&app, &mut key).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
        assert_eq!(r.code(), "passkey_refused");
    }
    key.verifies_user = true;
    let r = passwordless(&app, &mut key).await;
    assert_eq!(r.status, StatusCode::LOCKED, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ceremony_begun_on_one_instance_is_finished_on_another() {
    for backend in backends() {
        if backend != Backend::Shared {
            continue;
        }
        let up = EchoUpstream::start().await;
        let app = spawn(backend, &up).await;
        let peer = app.spawn_peer();
        let email = "roaming@example.com";
        app.verified_user(email).await;
        let t = app.login(email).await;
        let mut key = SoftAuthenticator::new();
        add_passkey(&app, &t.access, &mut key, "Key").await;

        let r = app
            .post("/api/auth/passkeys/login/options", json!({}))
            .await;
        let data = &r.body["data"];
        let credential = key.get(&data["options"], &origin(&app));
        let r = app
            .http
            .post(format!("{}/api/auth/passkeys/login", peer.url()))
            .json(&json!({"ceremony_id": data["ceremony_id"], "credential": credential}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let body: Value = r.json().await.unwrap();
        assert_eq!(amr_of(&tokens_of(&body).access), json!(["hwk", "mfa"]));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_passkeys_of_an_account_cannot_share_a_name() {
    let up = EchoUpstream::start().await;
    let app = spawn(Backend::Embedded, &up).await;
    app.verified_user("names@example.com").await;
    let t = app.login("names@example.com").await;
    let mut laptop = SoftAuthenticator::new();
    let mut phone = SoftAuthenticator::new();
    add_passkey(&app, &t.access, &mut laptop, "Laptop").await;
    let phone_id = add_passkey(&app, &t.access, &mut phone, "Phone").await;

    // Adding: the same name in another case, with spaces around it, is taken.
    let options = app
        .post_as(
            &t.access,
            "/api/auth/passkeys/register/options",
            json!({"password": PASSWORD}),
        )
        .await;
    let data = &options.body["data"];
    let mut tablet = SoftAuthenticator::new();
    let credential = tablet.create(&data["options"], &origin(&app));
    let body =
        json!({"ceremony_id": data["ceremony_id"], "name": "  lAPTOP ", "credential": credential});
    let r = app
        .post_as(&t.access, "/api/auth/passkeys/register", body)
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(r.code(), "passkey_name_taken");
    assert_eq!(r.body["errors"][0]["field"], "name");
    // The ceremony was not spent: another name finishes it.
    let body =
        json!({"ceremony_id": data["ceremony_id"], "name": "Tablet", "credential": credential});
    let r = app
        .post_as(&t.access, "/api/auth/passkeys/register", body)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);

    // Renaming: onto another's name is refused; a passkey keeps (or recases) its own.
    let path = format!("/api/auth/passkeys/{phone_id}");
    let rename = |name: &'static str| {
        let body = Some(json!({"name": name}));
        app.call(reqwest::Method::PATCH, &path, Some(&t.access), body)
    };
    let r = rename("tablet").await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(r.code(), "passkey_name_taken");
    assert_eq!(rename("PHONE").await.status, StatusCode::OK);

    // The portal's forms say it beside the name field, in the page's language.
    let english = r.body["errors"][0]["message"].as_str().unwrap().to_owned();
    let russian = russian_message(&english);
    let browser = Browser::new(&origin(&app));
    let step = browser
        .sign_in("names@example.com", PASSWORD, "/auth/account")
        .await;
    assert_eq!(
        step.status,
        StatusCode::OK,
        "a passkey is the second step: {}",
        step.body
    );
    let answer = laptop.get(&step.data_options(), &origin(&app)).to_string();
    let ticket = step.input("login_ticket").unwrap();
    let ceremony = step.input("passkey_ceremony").unwrap();
    let second = [
        ("return_to", "/auth/account"),
        ("login_ticket", ticket.as_str()),
        ("passkey_ceremony", ceremony.as_str()),
        ("passkey_credential", answer.as_str()),
    ];
    let r = post_form(&browser, &step, "/auth/login", &second).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let account = browser.get("/auth/account?lang=ru").await;
    let fields = [("name", " lAPTOP "), ("password", PASSWORD)];
    let add = post_form(&browser, &account, "/auth/account/passkeys/add", &fields).await;
    let phone = [("passkey_id", phone_id.as_str()), ("name", "tablet")];
    let renamed = post_form(&browser, &account, "/auth/account/passkeys/rename", &phone).await;
    let rename_field = format!("rename_{phone_id}");
    for (page, field) in [(add, "passkey_name"), (renamed, rename_field.as_str())] {
        assert_eq!(page.status, StatusCode::CONFLICT, "{}", page.body);
        let body = unescape(&page.body);
        let error = format!("id=\"{field}-error\"><li>{russian}</li>");
        assert!(body.contains(&error), "{error:?} in {body}");
        assert!(
            !body.contains(&english),
            "no English on a Russian page: {body}"
        );
    }
}

/// The Russian catalogue's translation of the API message `english`.
fn russian_message(english: &str) -> String {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/config/portal/locales/ru.toml");
    let table: toml::Table = std::fs::read_to_string(file).unwrap().parse().unwrap();
    let text = table["messages"].get(english).and_then(|v| v.as_str());
    text.unwrap_or_else(|| panic!("no translation of {english:?}"))
        .to_owned()
}

/// Posts a form of the account page `page` (its CSRF token added) to `path`.
async fn post_form(browser: &Browser, page: &Html, path: &str, fields: &[(&str, &str)]) -> Html {
    let csrf = page.csrf();
    let mut form = vec![("csrf_token", csrf.as_str())];
    form.extend_from_slice(fields);
    browser.post(path, &form).await
}
