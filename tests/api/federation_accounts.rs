//! What an identity from a provider means for local accounts: joining an existing account by
//! address only when both sides call it verified and the provider allows it; the provider's
//! `allowed_domains`, `allowed_groups` and `role_mapping`; `[registration]` for the accounts
//! it makes. The provider is the hostile stub (tests/support/hostile_op.rs) sending sound
//! tokens with the claims each case needs.

use crate::support::app::*;
use crate::support::browser::{Browser, Html};
use crate::support::hostile_op::{Attack, HostileOp};
use crate::support::oidc::through_op;
use portcullis::domain::{Email, UserId};
use portcullis::store::{Actor, AuditEvent, AuditFilter, AuditOutcome, UserStore};
use reqwest::StatusCode;
use serde_json::{Value, json};

pub(crate) const CLIENT: &str = "portcullis-idp";

pub(crate) async fn spawn(backend: Backend, stub: &HostileOp, keys: &str, before: &str) -> TestApp {
    let config = format!(
        "{before}\n[[identity_providers]]\nid = \"idp\"\nname = \"IdP\"\nkind = \"oidc\"\nissuer = \"{}\"\n\
         client_id = \"{CLIENT}\"\nclient_secret = \"s\"\n{keys}\n",
        stub.issuer
    );
    stub.attack(Attack::None);
    TestApp::spawn(backend, &config).await
}

/// The stub's next identity: its subject and claims.
pub(crate) fn assert_as(stub: &HostileOp, subject: &str, claims: Value) {
    let mut s = stub.state.lock().unwrap();
    s.subject = subject.to_owned();
    s.claims = claims.as_object().cloned().unwrap_or_default();
}

/// A sign-in through the stub from a fresh browser: the browser and the gateway's answer.
pub(crate) async fn sign_in(app: &TestApp) -> (Browser, Html) {
    let browser = Browser::new(&app.url(""));
    let (page, _) = through_op(&browser, "/auth/oidc/idp/start", "unused").await;
    (browser, page)
}

pub(crate) fn signed_in(browser: &Browser) -> bool {
    browser.cookie("portcullis_refresh").is_some()
}

pub(crate) async fn user(app: &TestApp, email: &str) -> Option<portcullis::store::User> {
    app.store()
        .await
        .find_by_email(&Email::parse(email).unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_joins_an_existing_account_only_when_linking_is_on_and_both_sides_verified() {
    // (link_by_verified_email, the provider's email_verified, the local account verified)
    let cases = [
        (false, true, true, false),
        (true, false, true, false),
        (true, true, false, false),
        (true, true, true, true),
    ];
    for backend in backends() {
        for (linking, provider_verified, local_verified, joins) in cases {
            let stub = HostileOp::start(CLIENT).await;
            let keys = format!("auto_create = true\nlink_by_verified_email = {linking}");
            let app = spawn(backend, &stub, &keys, "").await;
            let case = format!(
                "{backend:?} linking={linking} provider={provider_verified} local={local_verified}"
            );
            if local_verified {
                app.verified_user("ada@example.com").await;
            } else {
                assert_eq!(
                    app.register("ada@example.com").await.status,
                    StatusCode::CREATED
                );
            }
            assert_as(
                &stub,
                "attacker-sub",
                json!({"email": "ada@example.com", "email_verified": provider_verified}),
            );
            let (browser, page) = sign_in(&app).await;
            let local = user(&app, "ada@example.com").await.unwrap();
            let linked = app.store().await.linked_identities(local.id).await.unwrap();
            if joins {
                assert_eq!(page.status, StatusCode::OK, "{case}: {}", page.body);
                assert!(signed_in(&browser), "{case}");
                assert_eq!(linked.len(), 1, "{case}");
                let event = audited(&*app.store().await, "identity_link", local.id).await;
                assert_eq!(
                    event.detail, "provider idp, subject attacker-sub, by verified address",
                    "{case}"
                );
            } else {
                // Answered as if the address had no account (the page tells nothing).
                // An address the provider does not vouch for is refused before any lookup.
                let said = if provider_verified {
                    "If you already have an account here"
                } else {
                    "has not confirmed your email address"
                };
                assert_eq!(page.status, StatusCode::FORBIDDEN, "{case}: {}", page.body);
                assert!(page.body.contains(said), "{case}: {}", page.body);
                assert!(!signed_in(&browser), "{case}");
                assert!(linked.is_empty(), "{case}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_domains_and_groups_admit_and_role_mapping_sets_roles_at_each_sign_in() {
    for backend in backends() {
        let stub = HostileOp::start(CLIENT).await;
        let keys = "auto_create = true\nallowed_domains = [\"corp.example\"]\nallowed_groups = [\"staff\", \"admins\"]\n\
                    groups_claim = \"roles_of\"\nrole_mapping = { admins = \"admin\", staff = \"staff\" }";
        let app = spawn(backend, &stub, keys, "").await;
        let refused = [
            json!({"email": "eve@other.example", "email_verified": true, "roles_of": ["staff"]}),
            json!({"email": "eve@corp.example", "email_verified": false, "roles_of": ["staff"]}),
            json!({"email": "eve@corp.example", "email_verified": true, "roles_of": ["guests"]}),
            json!({"email": "eve@corp.example", "email_verified": true}),
        ];
        for claims in refused {
            assert_as(&stub, "eve", claims.clone());
            let (browser, page) = sign_in(&app).await;
            assert_eq!(
                page.status,
                StatusCode::FORBIDDEN,
                "{backend:?} {claims}: {}",
                page.body
            );
            assert!(
                page.body.contains("not allowed to sign in here"),
                "{}",
                page.body
            );
            assert!(!signed_in(&browser));
        }
        assert!(user(&app, "eve@corp.example").await.is_none());

        assert_as(
            &stub,
            "ann",
            json!({"email": "ann@corp.example", "email_verified": true, "roles_of": ["staff", "admins"]}),
        );
        let (browser, page) = sign_in(&app).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        assert!(signed_in(&browser));
        let ann = user(&app, "ann@corp.example").await.unwrap();
        assert_eq!(ann.roles, ["admin", "staff"], "{backend:?}");
        assert!(ann.is_verified);
        // A role granted otherwise stays; a mapped role the groups no longer give goes.
        app.store().await.grant_role(ann.id, "ops").await.unwrap();
        assert_as(
            &stub,
            "ann",
            json!({"email": "ann@corp.example", "email_verified": true, "roles_of": ["staff"]}),
        );
        let (_, page) = sign_in(&app).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let ann = user(&app, "ann@corp.example").await.unwrap();
        assert_eq!(ann.roles, ["ops", "staff"], "{backend:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_made_at_a_first_sign_in_follow_the_registration_policy() {
    for backend in backends() {
        // Without auto_create: a page explains, no account.
        let stub = HostileOp::start(CLIENT).await;
        let app = spawn(backend, &stub, "", "").await;
        assert_as(
            &stub,
            "s1",
            json!({"email": "new@example.com", "email_verified": true}),
        );
        let (_, page) = sign_in(&app).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
        assert!(
            page.body.contains("If you already have an account here"),
            "{}",
            page.body
        );
        assert!(user(&app, "new@example.com").await.is_none());

        // Invitations only: refused.
        let stub = HostileOp::start(CLIENT).await;
        let app = spawn(
            backend,
            &stub,
            "auto_create = true",
            "[registration]\nmode = \"invite\"\n",
        )
        .await;
        assert_as(
            &stub,
            "s2",
            json!({"email": "new@example.com", "email_verified": true}),
        );
        let (_, page) = sign_in(&app).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
        assert!(page.body.contains("by invitation only"), "{}", page.body);
        assert!(user(&app, "new@example.com").await.is_none());

        // Some domains: the others refused; an unverified address makes an unverified account.
        let stub = HostileOp::start(CLIENT).await;
        let app = spawn(
            backend,
            &stub,
            "auto_create = true",
            "[registration]\nmode = \"domains\"\nallowed_domains = [\"ok.example\"]\n",
        )
        .await;
        assert_as(
            &stub,
            "s3",
            json!({"email": "bob@bad.example", "email_verified": true}),
        );
        let (_, page) = sign_in(&app).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
        assert!(user(&app, "bob@bad.example").await.is_none());
        assert_as(
            &stub,
            "s4",
            json!({"email": "amy@ok.example", "email_verified": false}),
        );
        // The provider does not vouch for the address: no account is made under it.
        let (browser, page) = sign_in(&app).await;
        assert_eq!(
            page.status,
            StatusCode::FORBIDDEN,
            "{backend:?}: {}",
            page.body
        );
        assert!(
            page.body.contains("has not confirmed your email address"),
            "{}",
            page.body
        );
        assert!(!signed_in(&browser));
        assert!(user(&app, "amy@ok.example").await.is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_is_linked_and_unlinked_from_the_account_page_after_a_step_up() {
    for backend in backends() {
        let stub = HostileOp::start(CLIENT).await;
        let app = spawn(backend, &stub, "", "").await;
        app.verified_user("ada@example.com").await;
        assert_as(
            &stub,
            "ada-at-idp",
            json!({"email": "ada@idp.example", "email_verified": true}),
        );
        let ada = Browser::new(&app.url(""));
        let signed = ada
            .sign_in("ada@example.com", PASSWORD, "/auth/account")
            .await;
        assert_eq!(signed.status, StatusCode::SEE_OTHER, "{}", signed.body);
        let account = ada.get("/auth/account").await;
        assert!(account.body.contains("Link IdP"), "{}", account.body);

        // A wrong password starts nothing.
        let wrong = ada
            .post(
                "/auth/account/identities/link",
                &[
                    ("csrf_token", &account.csrf()),
                    ("provider", "idp"),
                    ("password", "wrong"),
                ],
            )
            .await;
        assert!(
            wrong.status.is_client_error(),
            "{backend:?}: {}",
            wrong.status
        );
        assert_eq!(stub.state.lock().unwrap().token_requests.len(), 0);

        let account = ada.get("/auth/account").await;
        let started = ada
            .post(
                "/auth/account/identities/link",
                &[
                    ("csrf_token", &account.csrf()),
                    ("provider", "idp"),
                    ("password", PASSWORD),
                ],
            )
            .await;
        assert_eq!(started.status, StatusCode::SEE_OTHER, "{}", started.body);
        assert!(
            started.location().starts_with(&stub.issuer),
            "{}",
            started.location()
        );
        let (page, url) = through_op(&ada, started.location(), "unused").await;
        assert!(url.contains("done=identity_linked"), "{url}");
        assert!(page.body.contains("has been linked"), "{}", page.body);
        assert!(page.body.contains("ada@idp.example"), "{}", page.body);

        // The identity now signs in to Ada's account.
        let (browser, page) = sign_in(&app).await;
        assert_eq!(page.status, StatusCode::OK, "{backend:?}: {}", page.body);
        assert!(signed_in(&browser));
        assert!(page.body.contains("ada@example.com"), "{}", page.body);

        // Another account cannot take it.
        app.verified_user("bob@example.com").await;
        let bob = Browser::new(&app.url(""));
        bob.sign_in("bob@example.com", PASSWORD, "/auth/account")
            .await;
        let account = bob.get("/auth/account").await;
        let started = bob
            .post(
                "/auth/account/identities/link",
                &[
                    ("csrf_token", &account.csrf()),
                    ("provider", "idp"),
                    ("password", PASSWORD),
                ],
            )
            .await;
        let (page, _) = through_op(&bob, started.location(), "unused").await;
        assert_eq!(page.status, StatusCode::CONFLICT, "{}", page.body);
        let store = app.store().await;
        let bob_id = user(&app, "bob@example.com").await.unwrap().id;
        let refused = audited(&*store, "identity_link", bob_id).await;
        assert_eq!(refused.outcome, AuditOutcome::Refused);
        assert_eq!(
            refused.detail,
            "provider idp, subject ada-at-idp: linked to another account"
        );

        // Unlinking takes the password too; then the identity signs in nowhere.
        let account = ada.get("/auth/account").await;
        let fields = |password: &'static str, csrf: String| {
            vec![
                ("csrf_token".to_owned(), csrf),
                ("provider".to_owned(), "idp".to_owned()),
                ("subject".to_owned(), "ada-at-idp".to_owned()),
                ("password".to_owned(), password.to_owned()),
            ]
        };
        let wrong = fields("wrong", account.csrf());
        let wrong: Vec<(&str, &str)> = wrong
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let refused = ada.post("/auth/account/identities/unlink", &wrong).await;
        assert!(refused.status.is_client_error(), "{}", refused.status);
        let ada_user = user(&app, "ada@example.com").await.unwrap();
        assert_eq!(
            app.store()
                .await
                .linked_identities(ada_user.id)
                .await
                .unwrap()
                .len(),
            1
        );
        let account = ada.get("/auth/account").await;
        let right = fields(PASSWORD, account.csrf());
        let right: Vec<(&str, &str)> = right
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let done = ada.post("/auth/account/identities/unlink", &right).await;
        assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
        assert!(done.location().contains("done=identity_unlinked"));
        assert!(
            app.store()
                .await
                .linked_identities(ada_user.id)
                .await
                .unwrap()
                .is_empty()
        );
        let (_, page) = sign_in(&app).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);

        // The link and the unlink are their own audit kinds, with provider and subject.
        let linked = audited(&*store, "identity_link", ada_user.id).await;
        assert_eq!(linked.outcome, AuditOutcome::Success, "{backend:?}");
        assert_eq!(
            linked.detail,
            "provider idp, subject ada-at-idp, from the account page"
        );
        let unlinked = audited(&*store, "identity_unlink", ada_user.id).await;
        assert_eq!(unlinked.actor, Actor::User(ada_user.id));
        assert_eq!(unlinked.detail, "provider idp, subject ada-at-idp");
        assert_eq!(unlinked.client_ip.as_deref(), Some("127.0.0.1"));
    }
}

/// The newest event of `kind` whose actor is `user`, once written (events are written
/// after the answer); panics after five seconds.
async fn audited(store: &dyn UserStore, kind: &str, user: UserId) -> AuditEvent {
    let started = std::time::Instant::now();
    loop {
        let filter = AuditFilter {
            limit: 1000,
            ..AuditFilter::default()
        };
        let events = store.audit_events(&filter).await.unwrap();
        if let Some(e) = events
            .into_iter()
            .find(|e| e.kind == kind && e.actor == Actor::User(user))
        {
            return e;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "no {kind} event"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_providers_second_factor_counts_only_when_trusted() {
    // (trust_provider_mfa, amr) → whether a two_factor route lets the session through
    let cases = [
        (false, json!(["pwd", "mfa"]), false),
        (true, json!(["pwd"]), false),
        (true, json!(["pwd", "otp", "mfa"]), true),
    ];
    for backend in backends() {
        for (trust, amr, passes) in cases.clone() {
            let upstream = crate::support::EchoUpstream::start().await;
            let stub = HostileOp::start(CLIENT).await;
            let keys = format!("auto_create = true\ntrust_provider_mfa = {trust}");
            let route = format!(
                "[[routes]]\nname = \"secure\"\npath_prefix = \"/secure\"\nupstream = \"{}\"\npolicy = \"two_factor\"\n",
                upstream.url()
            );
            let app = spawn(backend, &stub, &keys, &route).await;
            assert_as(
                &stub,
                "mfa-user",
                json!({"email": "m@example.com", "email_verified": true, "amr": amr}),
            );
            let (browser, page) = sign_in(&app).await;
            assert_eq!(page.status, StatusCode::OK, "{}", page.body);
            assert!(signed_in(&browser));
            let secure = browser.get("/secure/x").await;
            assert_eq!(
                secure.status == StatusCode::OK,
                passes,
                "{backend:?} trust={trust} amr={amr}: {} {}",
                secure.status,
                secure.body
            );
        }
    }
}

/// An account whose own address is not proven links no identity: one registered under
/// someone else's address must not collect a way in its owner cannot see.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_with_an_unproven_address_links_no_identity() {
    for backend in backends() {
        let stub = HostileOp::start(CLIENT).await;
        let app = spawn(backend, &stub, "", "").await;
        assert_eq!(
            app.register("unproven@example.com").await.status,
            StatusCode::CREATED
        );
        let browser = Browser::new(&app.url(""));
        let signed = browser
            .sign_in("unproven@example.com", PASSWORD, "/auth/account")
            .await;
        assert_eq!(signed.status, StatusCode::SEE_OTHER, "{}", signed.body);
        let account = browser.get("/auth/account").await;
        let refused = browser
            .post(
                "/auth/account/identities/link",
                &[
                    ("csrf_token", &account.csrf()),
                    ("provider", "idp"),
                    ("password", PASSWORD),
                ],
            )
            .await;
        assert_eq!(
            refused.status,
            StatusCode::FORBIDDEN,
            "{backend:?}: {}",
            refused.body
        );
        assert!(
            refused.body.contains("Confirm your email address first"),
            "{}",
            refused.body
        );
        let local = user(&app, "unproven@example.com").await.unwrap();
        assert!(
            app.store()
                .await
                .linked_identities(local.id)
                .await
                .unwrap()
                .is_empty()
        );
    }
}

/// The reauthentication page offers the providers too, keeping `return_to`: an account made
/// at a first sign-in has no password to prove itself with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reauthentication_page_offers_the_providers() {
    for backend in backends() {
        let stub = HostileOp::start(CLIENT).await;
        let app = spawn(backend, &stub, "auto_create = true", "").await;
        assert_as(
            &stub,
            "fed-only",
            json!({"email": "fed@example.com", "email_verified": true}),
        );
        let (browser, page) = sign_in(&app).await;
        assert!(signed_in(&browser), "{backend:?}: {}", page.body);
        let page = browser
            .get("/auth/reauthenticate?return_to=%2Fbilling%2Fx")
            .await;
        assert_eq!(page.status, StatusCode::OK, "{backend:?}: {}", page.body);
        assert!(
            page.body
                .contains("/auth/oidc/idp/start?return_to=%2Fbilling%2Fx")
                || page
                    .body
                    .contains("&#x2f;auth&#x2f;oidc&#x2f;idp&#x2f;start?return_to=%2Fbilling%2Fx"),
            "{}",
            page.body
        );
    }
}
