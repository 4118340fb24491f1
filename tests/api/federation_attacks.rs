//! The attack table of a sign-in through an identity provider: ID tokens forged every way a
//! hostile provider (tests/support/hostile_op.rs, a stub labelled as such) can forge them,
//! and callbacks replayed, carried to another browser, finished twice on two instances, or
//! carrying another flow's code. Each must end on a page that signs nobody in.

use crate::support::app::*;
use crate::support::browser::{Browser, Html};
use crate::support::hostile_op::{Attack, HostileOp};
use crate::support::oidc::through_op;
use reqwest::StatusCode;
use serde_json::json;

const CLIENT: &str = "portcullis-evil";

async fn spawn(backend: Backend, stub: &HostileOp) -> TestApp {
    let config = format!(
        "[[identity_providers]]\nid = \"evil\"\nname = \"Evil\"\nkind = \"oidc\"\nissuer = \"{}\"\n\
         client_id = \"{CLIENT}\"\nclient_secret = \"s\"\nauto_create = true\n",
        stub.issuer
    );
    let app = TestApp::spawn(backend, &config).await;
    let mut s = stub.state.lock().unwrap();
    s.claims
        .insert("email".into(), json!("mallory@evil.example"));
    s.claims.insert("email_verified".into(), json!(true));
    drop(s);
    app
}

/// A flow through the stub from a fresh browser: the gateway's answer to the callback.
async fn attempt(app: &TestApp) -> (Browser, Html) {
    let browser = Browser::new(&app.url(""));
    let (page, _) = through_op(&browser, "/auth/oidc/evil/start", "unused").await;
    (browser, page)
}

/// The callback URL of a flow started by `browser` (the stub's redirect, not yet followed).
async fn callback_url(browser: &Browser) -> String {
    let start = browser.get("/auth/oidc/evil/start").await;
    assert_eq!(start.status, StatusCode::SEE_OTHER, "{}", start.body);
    let authorize = browser.get(start.location()).await;
    assert_eq!(authorize.status, StatusCode::FOUND, "{}", authorize.body);
    authorize.location().to_owned()
}

fn signed_in(browser: &Browser) -> bool {
    browser.cookie("portcullis").is_some() || browser.cookie("portcullis_refresh").is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_forged_id_token_is_refused_with_a_page() {
    let table = [
        Attack::WrongIssuer,
        Attack::WrongAudience,
        Attack::ForeignAzp,
        Attack::MissingAzp,
        Attack::WrongNonce,
        Attack::MissingNonce,
        Attack::Expired,
        Attack::IssuedInTheFuture,
        Attack::AlgNone,
        Attack::HmacWithPublicKey,
        Attack::UnknownKid,
        Attack::OtherProvidersKey,
        Attack::TamperedSignature,
    ];
    for backend in backends() {
        let stub = HostileOp::start(CLIENT).await;
        let app = spawn(backend, &stub).await;
        // The control: the same stub's sound token signs in.
        stub.attack(Attack::None);
        let (browser, page) = attempt(&app).await;
        assert_eq!(
            page.status,
            StatusCode::OK,
            "{backend:?} control: {}",
            page.body
        );
        assert!(
            signed_in(&browser),
            "{backend:?}: the control did not sign in"
        );
        for attack in table {
            stub.attack(attack);
            let (browser, page) = attempt(&app).await;
            assert_eq!(
                page.status,
                StatusCode::UNAUTHORIZED,
                "{backend:?} {attack:?}: {}",
                page.body
            );
            assert!(
                page.body.contains("could not be verified"),
                "{backend:?} {attack:?}: {}",
                page.body
            );
            assert!(!signed_in(&browser), "{backend:?} {attack:?} signed in");
        }
        // Only the forged accounts' owner exists: one account, made by the control.
        let users = app.store().await.list_users().await.unwrap();
        assert_eq!(users.len(), 1, "{backend:?}");
        // Every token request carried the S256 PKCE verifier of its authorization request.
        let s = stub.state.lock().unwrap();
        assert_eq!(s.token_requests.len(), table.len() + 1);
        assert!(
            s.token_requests.iter().all(|(_, pkce)| *pkce),
            "{:?}",
            s.token_requests
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_key_refetches_the_jwks_at_most_once_per_floor() {
    let stub = HostileOp::start(CLIENT).await;
    let app = spawn(Backend::Embedded, &stub).await;
    stub.attack(Attack::None);
    let _ = attempt(&app).await;
    let fetched = stub.state.lock().unwrap().jwks_fetches;
    stub.attack(Attack::UnknownKid);
    for _ in 0..3 {
        let (_, page) = attempt(&app).await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{}", page.body);
    }
    // The first unknown kid may refetch (the cache is fresh from discovery, inside the
    // floor, so not even that); three in a row never fetch three times.
    let after = stub.state.lock().unwrap().jwks_fetches;
    assert!(
        after - fetched <= 1,
        "JWKS fetched {} times",
        after - fetched
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_error_with_markup_is_shown_as_text() {
    for backend in backends() {
        let stub = HostileOp::start(CLIENT).await;
        let app = spawn(backend, &stub).await;
        stub.attack(Attack::ErrorWithMarkup);
        for lang in ["en", "ru"] {
            let browser = Browser::new(&app.url(""));
            let (page, _) =
                through_op(&browser, &format!("/auth/oidc/evil/start?lang={lang}"), "x").await;
            assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
            assert!(!page.body.contains("<script>alert"), "{}", page.body);
            assert!(!page.body.contains("<img src=x"), "{}", page.body);
            assert!(page.body.contains("&lt;script&gt;"), "{}", page.body);
            // The language links keep no part of the authorization response.
            for param in [
                "state=",
                "?error=",
                "&amp;error=",
                "error_description=",
                "iss=",
            ] {
                assert!(!page.body.contains(param), "{param}: {}", page.body);
            }
            assert!(page.body.contains("callback?lang="), "{}", page.body);
            let said = if lang == "en" {
                "refused the sign-in"
            } else {
                "отказал во входе"
            };
            assert!(page.body.contains(said), "{lang}: {}", page.body);
            assert!(!signed_in(&browser));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_works_once_for_the_browser_that_started_it() {
    for backend in backends() {
        let stub = HostileOp::start(CLIENT).await;
        let app = spawn(backend, &stub).await;
        stub.attack(Attack::None);

        // Replayed: the second use of a callback finds nothing.
        let browser = Browser::new(&app.url(""));
        let callback = callback_url(&browser).await;
        let binding = || browser.cookie_for("/auth/oidc/evil/callback", "portcullis_federation");
        assert!(binding().is_some());
        let first = browser.get(&callback).await;
        assert_eq!(
            first.status,
            StatusCode::SEE_OTHER,
            "{backend:?}: {}",
            first.body
        );
        // The finished flow's binding cookie is gone.
        assert_eq!(binding(), None);
        let replayed = Browser::new(&app.url(""));
        let again = browser.get(&callback).await;
        assert_eq!(again.status, StatusCode::BAD_REQUEST, "{}", again.body);
        assert!(
            again.body.contains("was not started in this browser"),
            "{}",
            again.body
        );

        // Another browser: without the binding cookie of the one that started it.
        let victim = Browser::new(&app.url(""));
        let callback = callback_url(&victim).await;
        let stolen = replayed.get(&callback).await;
        assert_eq!(stolen.status, StatusCode::BAD_REQUEST, "{}", stolen.body);
        assert!(!signed_in(&replayed));

        // Another flow's code under this flow's state: the provider refuses the used code.
        let browser = Browser::new(&app.url(""));
        let used = callback_url(&browser).await;
        assert_eq!(browser.get(&used).await.status, StatusCode::SEE_OTHER);
        let fresh = Browser::new(&app.url(""));
        let callback = callback_url(&fresh).await;
        let code_of = |url: &str| {
            reqwest::Url::parse(url)
                .unwrap()
                .query_pairs()
                .find(|(k, _)| k == "code")
                .map(|(_, v)| v.into_owned())
                .unwrap()
        };
        let swapped = callback.replace(&code_of(&callback), &code_of(&used));
        let page = fresh.get(&swapped).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
        assert!(page.body.contains("invalid_grant"), "{}", page.body);
        assert!(!signed_in(&fresh));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_finished_on_two_instances_at_once_signs_in_once() {
    for backend in backends() {
        let stub = HostileOp::start(CLIENT).await;
        let app = spawn(backend, &stub).await;
        stub.attack(Attack::None);
        let peer = app.spawn_peer();
        for _ in 0..5 {
            let browser = Browser::new(&app.url(""));
            let callback = callback_url(&browser).await;
            // The same callback, at this instance and (shared pair) at the peer at once.
            let other = match backend {
                Backend::Shared => callback.replace(&app.url(""), &peer.url()),
                Backend::Embedded => callback.clone(),
            };
            let (a, b) = tokio::join!(browser.get(&callback), browser.get(&other));
            let won = [a.status, b.status]
                .iter()
                .filter(|s| **s == StatusCode::SEE_OTHER)
                .count();
            assert_eq!(won, 1, "{backend:?}: {} / {}", a.status, b.status);
            assert!([a.status, b.status].contains(&StatusCode::BAD_REQUEST));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_started_on_one_instance_finishes_on_another() {
    // Only the shared pair shares the session backend between instances.
    if !backends().contains(&Backend::Shared) {
        eprintln!("skipped: no shared backend pair configured");
        return;
    }
    let stub = HostileOp::start(CLIENT).await;
    let app = spawn(Backend::Shared, &stub).await;
    stub.attack(Attack::None);
    let peer = app.spawn_peer();
    let browser = Browser::new(&app.url(""));
    let callback = callback_url(&browser).await;
    let finished = browser
        .get(&callback.replace(&app.url(""), &peer.url()))
        .await;
    assert_eq!(finished.status, StatusCode::SEE_OTHER, "{}", finished.body);
    assert!(signed_in(&browser));
}
