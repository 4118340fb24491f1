//! The protocol checks of a sign-in through an identity provider, each as a table: RFC 9207's
//! `iss` on the authorization response (the hostile stub of tests/support/hostile_op.rs and
//! the real `oidc-provider`, which sends it); `sub` held to OpenID Connect Core §2 and GitHub's
//! id to a positive integer; `amr` compared exactly; the claim types real providers send;
//! every endpoint a discovery document names; one discovery fetch for many first uses; and
//! `allowed_domains` for identities without a verified address, new or already linked.

use crate::support::app::*;
use crate::support::browser::{Browser, Html};
use crate::support::github_stub::GithubStub;
use crate::support::hostile_op::{Attack, HostileOp};
use crate::support::oidc::{TestOp, through_op, through_op_until};
use portcullis::domain::Email;
use reqwest::StatusCode;
use serde_json::{Value, json};

const CLIENT: &str = "portcullis-proto";
/// The sentence of the "provider's answer was not valid" page, in English and Russian.
const INVALID_ANSWER: [&str; 2] = ["answered something that is not valid", "недопустимый ответ"];

/// An oidc provider `id` at `stub`, with `keys`.
fn provider(id: &str, stub: &HostileOp, keys: &str) -> String {
    format!(
        "[[identity_providers]]\nid = \"{id}\"\nname = \"{id}\"\nkind = \"oidc\"\nissuer = \"{}\"\n\
         client_id = \"{CLIENT}\"\nclient_secret = \"s\"\n{keys}\n",
        stub.issuer
    )
}

async fn spawn(backend: Backend, stub: &HostileOp, keys: &str, before: &str) -> TestApp {
    stub.attack(Attack::None);
    let config = format!("{before}\n{}", provider("idp", stub, keys));
    TestApp::spawn(backend, &config).await
}

/// The stub's next identity: its subject and claims (a `sub` among them overrides it).
fn assert_as(stub: &HostileOp, subject: &str, claims: Value) {
    let mut s = stub.state.lock().unwrap();
    s.subject = subject.to_owned();
    s.claims = claims.as_object().cloned().unwrap_or_default();
}

/// A sign-in through provider `id` from a fresh browser: the browser and the gateway's answer.
async fn sign_in_at(app: &TestApp, id: &str) -> (Browser, Html) {
    let browser = Browser::new(&app.url(""));
    let (page, _) = through_op(&browser, &format!("/auth/oidc/{id}/start"), "unused").await;
    (browser, page)
}

fn signed_in(browser: &Browser) -> bool {
    browser.cookie("portcullis_refresh").is_some()
}

async fn user(app: &TestApp, email: &str) -> Option<portcullis::store::User> {
    app.store()
        .await
        .find_by_email(&Email::parse(email).unwrap())
        .await
        .unwrap()
}

/// The callback a flow through the stub comes back with (not yet followed).
async fn callback_url(browser: &Browser) -> String {
    let start = browser.get("/auth/oidc/idp/start").await;
    assert_eq!(start.status, StatusCode::SEE_OTHER, "{}", start.body);
    let authorize = browser.get(start.location()).await;
    assert_eq!(authorize.status, StatusCode::FOUND, "{}", authorize.body);
    authorize.location().to_owned()
}

/// `url` with its `iss` parameters taken out and `iss` (if any) appended.
fn with_iss(url: &str, iss: Option<&str>) -> String {
    let mut url = reqwest::Url::parse(url).unwrap();
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != "iss")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    url.query_pairs_mut().clear().extend_pairs(&kept);
    if let Some(iss) = iss {
        url.query_pairs_mut().append_pair("iss", iss);
    }
    url.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authorization_response_from_another_issuer_is_refused_before_its_code_is_used() {
    for backend in backends() {
        for advertised in [false, true] {
            let stub = HostileOp::start(CLIENT).await;
            if advertised {
                stub.state.lock().unwrap().discovery.insert(
                    "authorization_response_iss_parameter_supported".into(),
                    json!(true),
                );
            }
            let app = spawn(backend, &stub, "auto_create = true", "").await;
            assert_as(
                &stub,
                "iss-user",
                json!({"email": "iss@example.com", "email_verified": true}),
            );
            let issuer = stub.issuer.clone();
            // (the callback's iss, whether it signs in)
            let table: Vec<(Option<String>, bool)> = vec![
                (Some(issuer.clone()), true),
                (None, !advertised),
                (Some(format!("{issuer}/")), false),
                (Some(issuer.to_uppercase()), false),
                (Some("http://127.0.0.1:1".into()), false),
                (Some(String::new()), false),
                (Some(format!("{issuer}\u{0}")), false),
            ];
            for (iss, signs_in) in table {
                let case = format!("{backend:?} advertised={advertised} iss={iss:?}");
                let browser = Browser::new(&app.url(""));
                let callback = with_iss(&callback_url(&browser).await, iss.as_deref());
                let exchanges = stub.state.lock().unwrap().token_requests.len();
                let page = browser.get(&callback).await;
                let exchanged = stub.state.lock().unwrap().token_requests.len() - exchanges;
                if signs_in {
                    assert_eq!(page.status, StatusCode::SEE_OTHER, "{case}: {}", page.body);
                    assert!(signed_in(&browser), "{case}");
                } else {
                    assert_eq!(
                        page.status,
                        StatusCode::UNAUTHORIZED,
                        "{case}: {}",
                        page.body
                    );
                    assert!(
                        page.body.contains("could not be verified"),
                        "{case}: {}",
                        page.body
                    );
                    assert!(!signed_in(&browser), "{case}");
                    assert_eq!(exchanged, 0, "{case}: the code was exchanged");
                }
            }
            // An `iss` (or `state`) sent twice: one checked and the other used is no option.
            for twice in ["iss", "state"] {
                let browser = Browser::new(&app.url(""));
                let callback = with_iss(&callback_url(&browser).await, Some(&issuer));
                let url = reqwest::Url::parse(&callback).unwrap();
                let value = url
                    .query_pairs()
                    .find(|(k, _)| k == twice)
                    .map(|(_, v)| v.into_owned())
                    .unwrap();
                let mut doubled = url.clone();
                doubled.query_pairs_mut().append_pair(twice, &value);
                let page = browser.get(doubled.as_str()).await;
                assert_eq!(
                    page.status,
                    StatusCode::BAD_REQUEST,
                    "{twice}: {}",
                    page.body
                );
                assert!(!signed_in(&browser));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_providers_iss_is_checked() {
    for backend in backends() {
        let Some(mut op) = TestOp::reserve() else {
            return;
        };
        let config = format!(
            "[[identity_providers]]\nid = \"corp\"\nname = \"Corp\"\nkind = \"oidc\"\nissuer = \"{}\"\n\
             client_id = \"portcullis-corp\"\nclient_secret = \"op-secret\"\nauto_create = true\n",
            op.issuer
        );
        let app = TestApp::spawn(backend, &config).await;
        let redirect = app.url("/auth/oidc/corp/callback");
        op.start(
            &[("portcullis-corp", "op-secret", &redirect)],
            json!({"alice": {"email": "alice@corp.example", "email_verified": true}}),
        );
        // oidc-provider sends `iss` and says so in its discovery document (RFC 9207).
        let issuer = op.issuer.clone();
        let table = [
            (None, StatusCode::UNAUTHORIZED),
            (
                Some("http://127.0.0.1:1".to_owned()),
                StatusCode::UNAUTHORIZED,
            ),
            (Some(format!("{issuer}/")), StatusCode::UNAUTHORIZED),
            (Some(issuer.clone()), StatusCode::SEE_OTHER),
        ];
        for (iss, want) in table {
            let browser = Browser::new(&app.url(""));
            let (_, callback) = through_op_until(&browser, "/auth/oidc/corp/start", "alice", |u| {
                u.starts_with(&redirect)
            })
            .await;
            let sent = reqwest::Url::parse(&callback)
                .unwrap()
                .query_pairs()
                .find(|(k, _)| k == "iss")
                .map(|(_, v)| v.into_owned());
            assert_eq!(sent.as_deref(), Some(issuer.as_str()), "the OP sends iss");
            let page = browser.get(&with_iss(&callback, iss.as_deref())).await;
            assert_eq!(page.status, want, "{backend:?} iss={iss:?}: {}", page.body);
            assert_eq!(signed_in(&browser), want == StatusCode::SEE_OTHER);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_outside_openid_connect_core_is_refused_and_nothing_is_stored() {
    let table = [
        (json!(""), false),
        (json!("x".repeat(256)), false),
        (json!("émile"), false),
        (json!("a\u{0}b"), false),
        (json!("a\nb"), false),
        (json!("\u{202e}evil"), false),
        (json!(12345), false),
        (json!(["a"]), false),
        (json!("x".repeat(255)), true),
        (json!("Case Sensitive|sub"), true),
    ];
    for backend in backends() {
        let stub = HostileOp::start(CLIENT).await;
        let app = spawn(backend, &stub, "auto_create = true", "").await;
        for (i, (sub, ok)) in table.iter().enumerate() {
            let email = format!("sub{i}@example.com");
            assert_as(
                &stub,
                "ignored",
                json!({"sub": sub, "email": email, "email_verified": true}),
            );
            let (browser, page) = sign_in_at(&app, "idp").await;
            let case = format!("{backend:?} sub={sub}");
            if *ok {
                assert_eq!(page.status, StatusCode::OK, "{case}: {}", page.body);
                let made = user(&app, &email).await.expect("made");
                let linked = app.store().await.linked_identities(made.id).await.unwrap();
                assert_eq!(Some(linked[0].subject.as_str()), sub.as_str(), "{case}");
            } else {
                assert_eq!(
                    page.status,
                    StatusCode::BAD_GATEWAY,
                    "{case}: {}",
                    page.body
                );
                assert!(
                    page.body.contains(INVALID_ANSWER[0]),
                    "{case}: {}",
                    page.body
                );
                assert!(!signed_in(&browser), "{case}");
                assert!(user(&app, &email).await.is_none(), "{case}: stored");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_id_that_is_not_a_positive_integer_is_refused() {
    for backend in backends() {
        let stub = GithubStub::start("gh-secret").await;
        let config = format!(
            "[[identity_providers]]\nid = \"github\"\nname = \"GitHub\"\nkind = \"github\"\n\
             client_id = \"Iv1.stub\"\nclient_secret = \"gh-secret\"\nauto_create = true\n\
             web_url = \"{base}\"\napi_url = \"{base}/api/v3\"\n",
            base = stub.base
        );
        let app = TestApp::spawn(backend, &config).await;
        let table = [
            (json!(0), false),
            (json!(-5), false),
            (json!("583231"), false),
            (json!(1.5), false),
            (Value::Null, false),
            (json!(583231), true),
        ];
        for (i, (id, ok)) in table.into_iter().enumerate() {
            let email = format!("gh{i}@github.example");
            {
                let mut s = stub.state.lock().unwrap();
                s.user = json!({"id": id, "login": "octocat"});
                s.emails = json!([{"email": email, "primary": true, "verified": true}]);
            }
            let (browser, page) = sign_in_at(&app, "github").await;
            let case = format!("{backend:?} id={id}");
            if ok {
                assert_eq!(page.status, StatusCode::OK, "{case}: {}", page.body);
            } else {
                assert_eq!(
                    page.status,
                    StatusCode::BAD_GATEWAY,
                    "{case}: {}",
                    page.body
                );
                assert!(
                    page.body.contains(INVALID_ANSWER[0]),
                    "{case}: {}",
                    page.body
                );
                assert!(!signed_in(&browser));
                assert!(user(&app, &email).await.is_none(), "{case}: stored");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_of_the_types_real_providers_send_are_understood_and_impossible_ones_reported() {
    // (claims, Some(verified) when understood — a verified address signs in, an unverified
    // one is refused an account — None when the answer is refused as not valid)
    let table = [
        (json!({"email_verified": true}), Some(true)),
        (json!({"email_verified": "true"}), Some(true)),
        (json!({"email_verified": "false"}), Some(false)),
        (json!({"email_verified": false}), Some(false)),
        (json!({"email_verified": "yes"}), None),
        (json!({"email_verified": 1}), None),
        (json!({"email_verified": true, "exp": "tomorrow"}), None),
        (json!({"email_verified": true, "given_name": 7}), None),
        (json!({"email_verified": true, "amr": "mfa"}), None),
    ];
    for backend in backends() {
        let stub = HostileOp::start(CLIENT).await;
        let app = spawn(backend, &stub, "auto_create = true", "").await;
        for (i, (claims, want)) in table.iter().enumerate() {
            let email = format!("types{i}@example.com");
            let mut claims = claims.clone();
            claims["email"] = json!(email);
            assert_as(&stub, &format!("types-{i}"), claims.clone());
            let lang = if i % 2 == 0 { "en" } else { "ru" };
            let browser = Browser::new(&app.url(""));
            let start = format!("/auth/oidc/idp/start?lang={lang}");
            let (page, _) = through_op(&browser, &start, "unused").await;
            let case = format!("{backend:?} {claims}");
            match want {
                Some(true) => {
                    assert_eq!(page.status, StatusCode::OK, "{case}: {}", page.body);
                    let made = user(&app, &email).await.expect("made");
                    assert!(made.is_verified, "{case}");
                }
                Some(false) => {
                    assert_eq!(page.status, StatusCode::FORBIDDEN, "{case}: {}", page.body);
                    let said = [
                        "has not confirmed your email address",
                        "не подтвердил ваш адрес",
                    ][usize::from(lang == "ru")];
                    assert!(page.body.contains(said), "{case}: {}", page.body);
                    assert!(user(&app, &email).await.is_none(), "{case}: stored");
                }
                None => {
                    assert_eq!(
                        page.status,
                        StatusCode::BAD_GATEWAY,
                        "{case}: {}",
                        page.body
                    );
                    let said = INVALID_ANSWER[usize::from(lang == "ru")];
                    assert!(page.body.contains(said), "{case}: {}", page.body);
                    assert!(!page.body.contains("could not be reached"), "{case}");
                    assert!(!signed_in(&browser), "{case}");
                    assert!(user(&app, &email).await.is_none(), "{case}: stored");
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amr_values_are_compared_exactly() {
    // amr → whether a two_factor route takes the provider's word (trust_provider_mfa = true)
    let table = [
        (json!(["pwd", "mfa"]), true),
        (json!(["pwd", "hwk"]), true),
        (json!(["hwk"]), false),
        (json!(["sms"]), false),
        (json!(["MFA"]), false),
        (json!(["Mfa"]), false),
        (json!(["OTP"]), false),
        (json!(["mfa "]), false),
        (json!([" mfa"]), false),
        (json!(["pwd"]), false),
        (json!([]), false),
    ];
    for backend in backends() {
        let upstream = crate::support::EchoUpstream::start().await;
        let stub = HostileOp::start(CLIENT).await;
        let route = format!(
            "[[routes]]\nname = \"secure\"\npath_prefix = \"/secure\"\nupstream = \"{}\"\npolicy = \"two_factor\"\n",
            upstream.url()
        );
        let keys = "auto_create = true\ntrust_provider_mfa = true";
        let app = spawn(backend, &stub, keys, &route).await;
        for (i, (amr, passes)) in table.iter().enumerate() {
            assert_as(
                &stub,
                &format!("amr-{i}"),
                json!({"email": format!("amr{i}@example.com"), "email_verified": true, "amr": amr}),
            );
            let (browser, page) = sign_in_at(&app, "idp").await;
            assert_eq!(page.status, StatusCode::OK, "{amr}: {}", page.body);
            let secure = browser.get("/secure/x").await;
            assert_eq!(
                secure.status == StatusCode::OK,
                *passes,
                "{backend:?} amr={amr}: {}",
                secure.status
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovery_document_naming_an_unsound_endpoint_disables_its_provider() {
    // (the document's field, its value): each refused before anything it names is fetched.
    let table: Vec<(&str, Value)> = vec![
        ("authorization_endpoint", json!("javascript:alert(1)")),
        (
            "authorization_endpoint",
            json!("http://idp.example.com/authorize"),
        ),
        ("token_endpoint", json!("data:text/html,<b>x</b>")),
        ("token_endpoint", json!("ftp://idp.example.com/token")),
        ("jwks_uri", json!("/jwks")),
        ("jwks_uri", json!("https://user@idp.example.com/jwks")),
        (
            "userinfo_endpoint",
            json!("https://user:pw@idp.example.com/userinfo"),
        ),
        ("end_session_endpoint", json!("javascript:alert(2)")),
        (
            "authorization_endpoint",
            json!("https://idp.example.com/a#fragment"),
        ),
        ("authorization_endpoint", Value::Null),
        ("issuer", json!("http://127.0.0.1:1")),
    ];
    let mut stubs = Vec::new();
    let mut config = String::new();
    for (i, (field, value)) in table.iter().enumerate() {
        let stub = HostileOp::start(CLIENT).await;
        stub.state
            .lock()
            .unwrap()
            .discovery
            .insert((*field).to_owned(), value.clone());
        config.push_str(&provider(&format!("p{i}"), &stub, ""));
        stubs.push(stub);
    }
    // The same document with a trailing slash on its issuer is another issuer.
    let slash = HostileOp::start(CLIENT).await;
    let named = format!("{}/", slash.issuer);
    slash
        .state
        .lock()
        .unwrap()
        .discovery
        .insert("issuer".into(), json!(named));
    config.push_str(&provider("slash", &slash, ""));
    let control = HostileOp::start(CLIENT).await;
    config.push_str(&provider("control", &control, ""));
    let app = TestApp::spawn(Backend::Embedded, &config).await;

    let ids = (0..table.len())
        .map(|i| format!("p{i}"))
        .chain(["slash".to_owned()]);
    for (id, stub) in ids.zip(stubs.iter().chain([&slash])) {
        for lang in ["en", "ru"] {
            let browser = Browser::new(&app.url(""));
            let page = browser
                .get(&format!("/auth/oidc/{id}/start?lang={lang}"))
                .await;
            let case = format!("{id} {:?}", stub.state.lock().unwrap().discovery);
            assert_eq!(
                page.status,
                StatusCode::BAD_GATEWAY,
                "{case}: {}",
                page.body
            );
            let said = INVALID_ANSWER[usize::from(lang == "ru")];
            assert!(page.body.contains(said), "{case}: {}", page.body);
        }
        assert_eq!(stub.state.lock().unwrap().jwks_fetches, 0, "{id}");
    }
    let browser = Browser::new(&app.url(""));
    let page = browser.get("/auth/oidc/control/start").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert!(page.location().starts_with(&control.issuer));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_first_sign_ins_at_once_fetch_discovery_once() {
    for backend in backends() {
        let stub = HostileOp::start(CLIENT).await;
        stub.state.lock().unwrap().discovery_delay = std::time::Duration::from_millis(400);
        let app = spawn(backend, &stub, "", "").await;
        let browsers: Vec<Browser> = (0..8).map(|_| Browser::new(&app.url(""))).collect();
        let starts = browsers.iter().map(|b| b.get("/auth/oidc/idp/start"));
        let pages = futures_util::future::join_all(starts).await;
        for page in &pages {
            assert_eq!(
                page.status,
                StatusCode::SEE_OTHER,
                "{backend:?}: {}",
                page.body
            );
        }
        let s = stub.state.lock().unwrap();
        assert_eq!(s.discovery_fetches, 1, "{backend:?}");
        assert_eq!(s.jwks_fetches, 1, "{backend:?}");
    }
}

/// `allowed_domains` over an oidc identity: (claims, admitted), first for new identities,
/// then for one already linked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_domains_refuse_an_identity_without_a_verified_address_new_or_linked() {
    let new = [
        (
            json!({"email": "a@corp.example", "email_verified": false}),
            false,
        ),
        (
            json!({"email": "a@corp.example", "email_verified": "false"}),
            false,
        ),
        (json!({"email": "a@corp.example"}), false),
        (json!({"email_verified": true}), false),
        (json!({}), false),
        (
            json!({"email": "a@evil.example", "email_verified": true}),
            false,
        ),
        (
            json!({"email": "a@corp.example.evil.example", "email_verified": true}),
            false,
        ),
        (
            json!({"email": "a@corp.example", "email_verified": true}),
            true,
        ),
    ];
    let linked = [
        json!({"email": "a@corp.example", "email_verified": false}),
        json!({"email_verified": true}),
        json!({}),
        json!({"email": "a@evil.example", "email_verified": true}),
    ];
    for backend in backends() {
        let stub = HostileOp::start(CLIENT).await;
        let keys = "auto_create = true\nallowed_domains = [\"corp.example\"]";
        let app = spawn(backend, &stub, keys, "").await;
        for (i, (claims, admitted)) in new.iter().enumerate() {
            let subject = if *admitted {
                "linked".to_owned()
            } else {
                format!("new-{i}")
            };
            assert_as(&stub, &subject, claims.clone());
            let (browser, page) = sign_in_at(&app, "idp").await;
            let want = if *admitted {
                StatusCode::OK
            } else {
                StatusCode::FORBIDDEN
            };
            assert_eq!(page.status, want, "{backend:?} new {claims}: {}", page.body);
            assert_eq!(signed_in(&browser), *admitted);
        }
        assert_eq!(app.store().await.list_users().await.unwrap().len(), 1);
        for claims in linked.clone() {
            assert_as(&stub, "linked", claims.clone());
            let (browser, page) = sign_in_at(&app, "idp").await;
            assert_eq!(
                page.status,
                StatusCode::FORBIDDEN,
                "{backend:?} linked {claims}: {}",
                page.body
            );
            assert!(!signed_in(&browser));
        }
    }
}

/// The same for `kind = "github"` (its local stub): the primary address decides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_domains_hold_for_github_identities_new_or_linked() {
    let primary = |email: &str, verified: bool| json!([{"email": email, "primary": true, "verified": verified}]);
    let new = [
        (1, primary("a@corp.example", false), false),
        (2, json!([]), false),
        (3, primary("a@evil.example", true), false),
        (
            4,
            json!([
                {"email": "a@evil.example", "primary": true, "verified": true},
                {"email": "b@corp.example", "primary": false, "verified": true},
            ]),
            false,
        ),
        (9, primary("a@corp.example", true), true),
    ];
    let linked = [
        primary("a@corp.example", false),
        json!([]),
        primary("a@evil.example", true),
    ];
    for backend in backends() {
        let stub = GithubStub::start("gh-secret").await;
        let config = format!(
            "[[identity_providers]]\nid = \"github\"\nname = \"GitHub\"\nkind = \"github\"\n\
             client_id = \"Iv1.stub\"\nclient_secret = \"gh-secret\"\nauto_create = true\n\
             allowed_domains = [\"corp.example\"]\nweb_url = \"{base}\"\napi_url = \"{base}/api/v3\"\n",
            base = stub.base
        );
        let app = TestApp::spawn(backend, &config).await;
        let cases = new
            .iter()
            .map(|(id, emails, ok)| (*id, emails.clone(), *ok))
            .chain(linked.iter().map(|emails| (9, emails.clone(), false)));
        for (id, emails, admitted) in cases {
            {
                let mut s = stub.state.lock().unwrap();
                s.user = json!({"id": id, "login": "octocat"});
                s.emails = emails.clone();
            }
            let (browser, page) = sign_in_at(&app, "github").await;
            let want = if admitted {
                StatusCode::OK
            } else {
                StatusCode::FORBIDDEN
            };
            assert_eq!(
                page.status, want,
                "{backend:?} id={id} {emails}: {}",
                page.body
            );
            assert_eq!(signed_in(&browser), admitted);
        }
        assert_eq!(app.store().await.list_users().await.unwrap().len(), 1);
    }
}
