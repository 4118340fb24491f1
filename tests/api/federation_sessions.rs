//! What a provider's sign-in leaves behind and what it may not do: a link finishes only while
//! the session that began it lives; sign-ins, links, unlinks and refusals are in the audit
//! trail with the provider and subject (never a code or the provider's own text); an address
//! that has an account is answered as one that has none; and a provider's session claims no
//! password in its `amr` and opens the admin API only after a local step-up. The provider is
//! the hostile stub (tests/support/hostile_op.rs) sending sound tokens.

use std::time::{Duration, Instant};

use portcullis::store::admin::{UserCommand, run_user_command};
use portcullis::store::{Actor, AuditEvent, AuditFilter, AuditOutcome, UserStore};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::federation_accounts::{CLIENT, assert_as, sign_in, signed_in, spawn, user};
use crate::support::app::*;
use crate::support::browser::{Browser, Html};
use crate::support::hostile_op::{Attack, HostileOp};
use crate::support::oidc::through_op;
use crate::support::otp::totp;

/// The first event `matches` picks, once written (events are written after the answer);
/// panics after five seconds.
async fn event_where(
    store: &dyn UserStore,
    what: &str,
    matches: impl Fn(&AuditEvent) -> bool,
) -> AuditEvent {
    let started = Instant::now();
    loop {
        let filter = AuditFilter {
            limit: 1000,
            ..AuditFilter::default()
        };
        let events = store.audit_events(&filter).await.unwrap();
        if let Some(e) = events.into_iter().find(&matches) {
            return e;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no audit event for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// How the session that began a link ends before the provider answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    /// It does not: the link is made.
    Alive,
    /// "Sign out" in this browser.
    SignedOut,
    /// "Sign out everywhere" on the account page.
    SignedOutEverywhere,
    /// Ended from another device's session list.
    EndedElsewhere,
    /// The operator's `user revoke-sessions` (the admin's revocation takes the same path).
    EndedByOperator,
}

/// Ends `browser`'s session as `ending` says.
async fn end_session(app: &TestApp, browser: &Browser, ending: Ending) {
    match ending {
        Ending::Alive => {}
        Ending::SignedOut => {
            let confirm = browser.get("/auth/logout").await;
            let out = browser
                .post("/auth/logout", &[("csrf_token", &confirm.csrf())])
                .await;
            assert!(
                out.status.is_success() || out.status.is_redirection(),
                "{}",
                out.status
            );
        }
        Ending::SignedOutEverywhere => {
            let account = browser.get("/auth/account").await;
            let out = browser
                .post(
                    "/auth/account/logout-all",
                    &[("csrf_token", &account.csrf())],
                )
                .await;
            assert!(
                out.status.is_success() || out.status.is_redirection(),
                "{}",
                out.status
            );
        }
        Ending::EndedElsewhere => {
            let other = app.login("ada@example.com").await.access;
            let list = app.get_as(&other, "/api/auth/sessions").await;
            let sessions = list.body["data"]["sessions"].as_array().unwrap().clone();
            let browsers = sessions.iter().find(|s| s["current"] == false).unwrap();
            let path = format!("/api/auth/sessions/{}", browsers["id"].as_str().unwrap());
            let ended = app.call(Method::DELETE, &path, Some(&other), None).await;
            assert_eq!(ended.status, StatusCode::OK, "{}", ended.body);
        }
        Ending::EndedByOperator => {
            let command = UserCommand::RevokeSessions {
                email: "ada@example.com".into(),
            };
            run_user_command(&*app.store().await, command)
                .await
                .unwrap();
            // The gateway follows the operator's change within a second.
            let started = Instant::now();
            while browser.get("/auth/account").await.status == StatusCode::OK {
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "still signed in"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Ada, signed in in a browser, starts linking the stub's identity `ada-at-idp`: the
/// browser and the URL at the provider.
async fn start_link(app: &TestApp) -> (Browser, String) {
    let ada = Browser::new(&app.url(""));
    let signed = ada
        .sign_in("ada@example.com", PASSWORD, "/auth/account")
        .await;
    assert_eq!(signed.status, StatusCode::SEE_OTHER, "{}", signed.body);
    let account = ada.get("/auth/account").await;
    let fields = [
        ("csrf_token", account.csrf()),
        ("provider", "idp".to_owned()),
        ("password", PASSWORD.to_owned()),
    ];
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let started = ada.post("/auth/account/identities/link", &fields).await;
    assert_eq!(started.status, StatusCode::SEE_OTHER, "{}", started.body);
    let at_provider = started.location().to_owned();
    (ada, at_provider)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_finishes_only_while_the_session_that_began_it_lives() {
    let endings = [
        Ending::Alive,
        Ending::SignedOut,
        Ending::SignedOutEverywhere,
        Ending::EndedElsewhere,
        Ending::EndedByOperator,
    ];
    for backend in backends() {
        for ending in endings {
            let stub = HostileOp::start(CLIENT).await;
            let app = spawn(backend, &stub, "", "").await;
            app.verified_user("ada@example.com").await;
            let ada_id = user(&app, "ada@example.com").await.unwrap().id;
            assert_as(
                &stub,
                "ada-at-idp",
                json!({"email": "ada@idp.example", "email_verified": true}),
            );
            let (browser, at_provider) = start_link(&app).await;
            end_session(&app, &browser, ending).await;
            let (page, url) = through_op(&browser, &at_provider, "unused").await;
            let store = app.store().await;
            let linked = store.linked_identities(ada_id).await.unwrap();
            let case = format!("{backend:?} {ending:?}");
            let event = event_where(&*store, &case, |e| e.kind == "identity_link").await;
            assert_eq!(event.actor, Actor::User(ada_id), "{case}");
            assert_eq!(event.subject, Some(ada_id), "{case}");
            if ending == Ending::Alive {
                assert!(url.contains("done=identity_linked"), "{case}: {url}");
                assert_eq!(linked.len(), 1, "{case}");
                assert_eq!(event.outcome, AuditOutcome::Success, "{case}");
                assert_eq!(
                    event.detail, "provider idp, subject ada-at-idp, from the account page",
                    "{case}"
                );
                continue;
            }
            assert_eq!(page.status, StatusCode::FORBIDDEN, "{case}: {}", page.body);
            assert!(
                page.body.contains("Nothing was linked"),
                "{case}: {}",
                page.body
            );
            assert!(linked.is_empty(), "{case}: {linked:?}");
            assert_eq!(event.outcome, AuditOutcome::Refused, "{case}");
            assert_eq!(
                event.detail,
                "provider idp, subject ada-at-idp: the session that started the link has ended",
                "{case}"
            );
        }
    }
}

/// One refused sign-in of the audit table: what the stub asserts (or how it attacks), and
/// the outcome and note the trail records.
struct Refusal {
    name: &'static str,
    subject: &'static str,
    claims: Value,
    attack: Attack,
    outcome: AuditOutcome,
    note: &'static str,
}

fn refusal(
    name: &'static str,
    subject: &'static str,
    claims: Value,
    note: &'static str,
) -> Refusal {
    Refusal {
        name,
        subject,
        claims,
        attack: Attack::None,
        outcome: AuditOutcome::Refused,
        note,
    }
}

fn refusals() -> Vec<Refusal> {
    let verified = |email: &str| json!({"email": email, "email_verified": true});
    vec![
        refusal(
            "not allowed",
            "eve",
            verified("eve@other.example"),
            "provider idp, subject eve: not in allowed_domains or allowed_groups",
        ),
        refusal(
            "address taken",
            "mallory",
            verified("taken@example.com"),
            "provider idp, subject mallory: the address has an account not linked to it",
        ),
        refusal(
            "deactivated",
            "dora",
            verified("dora@example.com"),
            "provider idp, subject dora: account deactivated",
        ),
        Refusal {
            attack: Attack::ErrorWithMarkup,
            outcome: AuditOutcome::Failure,
            ..refusal(
                "provider error",
                "x",
                verified("x@example.com"),
                "provider idp: the provider answered with an error",
            )
        },
        Refusal {
            attack: Attack::WrongIssuer,
            outcome: AuditOutcome::Failure,
            ..refusal(
                "wrong issuer",
                "x",
                verified("x@example.com"),
                "provider idp: the answer failed the iss check",
            )
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ins_and_refusals_are_audited_with_the_provider_and_subject() {
    for backend in backends() {
        let stub = HostileOp::start(CLIENT).await;
        let keys = "auto_create = true\nallowed_domains = [\"example.com\"]";
        let app = spawn(backend, &stub, keys, "").await;
        let store = app.store().await;
        assert_eq!(
            app.register("taken@example.com").await.status,
            StatusCode::CREATED
        );

        // A first sign-in makes the account and signs in: both name provider and subject.
        assert_as(
            &stub,
            "dora",
            json!({"email": "dora@example.com", "email_verified": true, "amr": ["pwd", "x<b>"]}),
        );
        let (browser, page) = sign_in(&app).await;
        assert_eq!(page.status, StatusCode::OK, "{backend:?}: {}", page.body);
        assert!(signed_in(&browser));
        let dora = user(&app, "dora@example.com").await.unwrap();
        let made = event_where(&*store, "registration", |e| e.kind == "registration").await;
        assert_eq!(made.detail, "through provider idp, subject dora");
        assert_eq!(made.subject, Some(dora.id));
        let signed = event_where(&*store, "sign-in", |e| {
            e.kind == "sign_in" && e.subject == Some(dora.id)
        })
        .await;
        assert_eq!(signed.outcome, AuditOutcome::Success);
        assert_eq!(signed.detail, "provider idp, subject dora, amr pwd");
        let command = UserCommand::Deactivate {
            email: "dora@example.com".into(),
        };
        run_user_command(&*store, command).await.unwrap();

        for case in refusals() {
            let name = format!("{backend:?} {}", case.name);
            stub.attack(case.attack);
            assert_as(&stub, case.subject, case.claims.clone());
            let before = newest(&*store).await;
            let (browser, page) = sign_in(&app).await;
            assert!(page.status.is_client_error(), "{name}: {}", page.status);
            assert!(!signed_in(&browser), "{name}");
            let event = event_where(&*store, &name, |e| e.id > before && e.kind == "sign_in").await;
            assert_eq!(event.outcome, case.outcome, "{name}");
            assert_eq!(event.detail, case.note, "{name}");
            assert_eq!(event.actor, Actor::Anonymous, "{name}");
            assert_eq!(event.client_ip.as_deref(), Some("127.0.0.1"), "{name}");
            let concerned = (case.name == "deactivated").then_some(dora.id);
            assert_eq!(event.subject, concerned, "{name}");
            for secret in ["code-", "state", "<", "access_denied", "denied"] {
                assert!(!event.detail.contains(secret), "{name}: {}", event.detail);
            }
        }
    }
}

/// The newest event's id (0 when none).
async fn newest(store: &dyn UserStore) -> i64 {
    let filter = AuditFilter {
        limit: 1,
        ..AuditFilter::default()
    };
    let events = store.audit_events(&filter).await.unwrap();
    events.first().map_or(0, |e| e.id)
}

/// The page of a refused sign-in in `language`, from a fresh browser.
async fn refused_page(app: &TestApp, language: &str) -> Html {
    let browser = Browser::new(&app.url(""));
    let url = reqwest::Url::parse(&app.url("/")).unwrap();
    browser
        .jar
        .add_cookie_str(&format!("portcullis_lang={language}"), &url);
    let (page, _) = through_op(&browser, "/auth/oidc/idp/start", "unused").await;
    assert!(!signed_in(&browser));
    page
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_that_has_an_account_is_answered_as_one_that_has_none() {
    // (auto_create, link_by_verified_email, the address has an account, it is verified)
    let cases = [
        (false, false, false, false),
        (false, false, true, true),
        (true, false, true, false),
        (true, false, true, true),
        (true, true, true, false),
    ];
    let sentences = [
        ("en", "If you already have an account here"),
        ("ru", "Если у вас уже есть учётная запись здесь"),
    ];
    for backend in backends() {
        for (language, sentence) in sentences {
            let mut first: Option<String> = None;
            for (auto_create, linking, exists, verified) in cases {
                let case = format!(
                    "{backend:?} {language} auto_create={auto_create} linking={linking} exists={exists} verified={verified}"
                );
                let stub = HostileOp::start(CLIENT).await;
                let keys =
                    format!("auto_create = {auto_create}\nlink_by_verified_email = {linking}");
                let app = spawn(backend, &stub, &keys, "").await;
                match (exists, verified) {
                    (true, true) => app.verified_user("ada@example.com").await,
                    (true, false) => {
                        assert_eq!(
                            app.register("ada@example.com").await.status,
                            StatusCode::CREATED
                        )
                    }
                    _ => {}
                }
                assert_as(
                    &stub,
                    "someone",
                    json!({"email": "ada@example.com", "email_verified": true}),
                );
                let page = refused_page(&app, language).await;
                assert_eq!(page.status, StatusCode::FORBIDDEN, "{case}: {}", page.body);
                assert!(page.body.contains(sentence), "{case}: {}", page.body);
                // The page's own words (the language switch links back with the query).
                let main = main_of(&page);
                match &first {
                    None => first = Some(main),
                    Some(first) => assert_eq!(&main, first, "{case}"),
                }
            }
        }
    }
}

/// The page's `<main>` element.
fn main_of(page: &Html) -> String {
    let start = page.body.find("<main").expect("a main element");
    let end = page.body.find("</main>").expect("its end");
    page.body[start..end].to_owned()
}

/// The claims of an access token (its signature checked against the JWKS).
async fn claims_of(app: &TestApp, token: &str) -> Value {
    verify_with_jwks(app, token).await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_providers_session_claims_no_password_and_opens_the_admin_api_only_after_a_step_up() {
    // (trust_provider_mfa, the provider's amr, the access token's amr at sign-in)
    let cases = [
        (true, json!(["pwd", "mfa"]), json!(["mfa"])),
        (true, json!(["pwd"]), json!([])),
        (false, json!(["pwd", "otp", "mfa"]), json!([])),
        (false, json!([]), json!([])),
    ];
    for backend in backends() {
        for (trust, amr, claimed) in cases.clone() {
            let case = format!("{backend:?} trust={trust} amr={amr}");
            let stub = HostileOp::start(CLIENT).await;
            let keys = format!("trust_provider_mfa = {trust}");
            let app = spawn(backend, &stub, &keys, "").await;
            app.verified_user("root@example.com").await;
            app.grant_role("root@example.com", "admin").await;
            let (secret, _) = app.enable_totp("root@example.com").await;
            let root = user(&app, "root@example.com").await.unwrap();
            let identity = portcullis::store::NewLinkedIdentity {
                user_id: root.id,
                provider: "idp".into(),
                subject: "root-at-idp".into(),
                email: "root@idp.example".into(),
            };
            assert!(app.store().await.link_identity(&identity).await.unwrap());
            assert_as(
                &stub,
                "root-at-idp",
                json!({"email": "root@idp.example", "email_verified": true, "amr": amr}),
            );
            let (browser, page) = sign_in(&app).await;
            assert_eq!(page.status, StatusCode::OK, "{case}: {}", page.body);
            let token = browser.cookie("portcullis").expect("an access token");
            assert_eq!(claims_of(&app, &token).await["amr"], claimed, "{case}");

            let users = app.get_as(&token, "/api/admin/users").await;
            assert_eq!(
                users.status,
                StatusCode::FORBIDDEN,
                "{case}: {}",
                users.body
            );
            assert_eq!(users.code(), "step_up_required", "{case}");

            let code = totp(&secret, 0);
            let proven = app
                .post_as(&token, "/api/admin/step-up", json!({"code": code}))
                .await;
            assert_eq!(proven.status, StatusCode::OK, "{case}: {}", proven.body);
            let users = app.get_as(&token, "/api/admin/users").await;
            assert_eq!(users.status, StatusCode::OK, "{case}: {}", users.body);
            let detail = app
                .get_as(&token, &format!("/api/admin/users/{}", root.id))
                .await;
            let sessions = detail.body["data"]["sessions"].as_array().unwrap();
            let session = sessions.iter().find(|s| s["current"] == true).unwrap();
            assert_eq!(session["provider"], "idp", "{case}: {}", detail.body);
            assert!(session["second_factor_at"].is_string(), "{case}");
            let local = sessions.iter().find(|s| s["current"] == false).unwrap();
            assert!(local["provider"].is_null(), "{case}: {}", detail.body);
        }
    }
}
