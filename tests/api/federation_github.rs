//! `kind = "github"` against a local stub of GitHub's documented OAuth and REST endpoints
//! (tests/support/github_stub.rs; GitHub itself is not reachable here).

use crate::support::EchoUpstream;
use crate::support::app::*;
use crate::support::browser::Browser;
use crate::support::github_stub::GithubStub;
use crate::support::oidc::through_op;
use portcullis::domain::Email;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_account_signs_in_by_its_numeric_id_with_its_primary_address() {
    for backend in backends() {
        let stub = GithubStub::start("gh-secret").await;
        let upstream = EchoUpstream::start().await;
        let config = format!(
            "[[routes]]\nname = \"app\"\npath_prefix = \"/app\"\nupstream = \"{}\"\npolicy = \"authenticated\"\n\
             [[identity_providers]]\nid = \"github\"\nname = \"GitHub\"\nkind = \"github\"\n\
             client_id = \"Iv1.stub\"\nclient_secret = \"gh-secret\"\nauto_create = true\n\
             web_url = \"{base}\"\napi_url = \"{base}/api/v3\"\n",
            upstream.url(),
            base = stub.base
        );
        let app = TestApp::spawn(backend, &config).await;
        {
            let mut s = stub.state.lock().unwrap();
            s.user = json!({"id": 583231, "login": "octocat", "name": "Mona Octocat"});
            s.emails = json!([
                {"email": "octo@old.example", "primary": false, "verified": true, "visibility": null},
                {"email": "octocat@github.example", "primary": true, "verified": true, "visibility": "public"},
            ]);
        }
        let browser = Browser::new(&app.url(""));
        let (page, url) = through_op(
            &browser,
            "/auth/oidc/github/start?return_to=%2Fapp%2Fx",
            "unused",
        )
        .await;
        assert!(url.ends_with("/app/x"), "{backend:?} {url}: {}", page.body);
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let echo: serde_json::Value = serde_json::from_str(&page.body).unwrap();
        assert_eq!(
            crate::support::echoed_header(&echo, "x-user-email"),
            ["octocat@github.example"]
        );
        let store = app.store().await;
        let user = store
            .find_by_email(&Email::parse("octocat@github.example").unwrap())
            .await
            .unwrap()
            .unwrap();
        assert!(user.is_verified);
        assert_eq!(
            (user.first_name.as_str(), user.last_name.as_str()),
            ("Mona", "Octocat")
        );
        let linked = store.linked_identities(user.id).await.unwrap();
        assert_eq!(
            linked[0].subject, "583231",
            "the id, not the renameable login"
        );
        assert!(stub.state.lock().unwrap().exchanges.iter().all(|ok| *ok));

        // A renamed login with a new primary address is still the same account.
        {
            let mut s = stub.state.lock().unwrap();
            s.user = json!({"id": 583231, "login": "octocat-renamed"});
            s.emails = json!([{"email": "new@github.example", "primary": true, "verified": false}]);
        }
        let again = Browser::new(&app.url(""));
        let (page, _) =
            through_op(&again, "/auth/oidc/github/start?return_to=%2Fapp%2Fy", "x").await;
        let echo: serde_json::Value = serde_json::from_str(&page.body).unwrap();
        assert_eq!(
            crate::support::echoed_header(&echo, "x-user-id"),
            [user.id.to_string()]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_github_code_is_a_page_not_a_sign_in() {
    let stub = GithubStub::start("the-real-secret").await;
    let config = format!(
        "[[identity_providers]]\nid = \"github\"\nname = \"GitHub\"\nkind = \"github\"\n\
         client_id = \"Iv1.stub\"\nclient_secret = \"a-wrong-secret\"\nauto_create = true\n\
         web_url = \"{base}\"\napi_url = \"{base}/api/v3\"\n",
        base = stub.base
    );
    let app = TestApp::spawn(Backend::Embedded, &config).await;
    let browser = Browser::new(&app.url(""));
    let (page, _) = through_op(&browser, "/auth/oidc/github/start", "x").await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    assert!(page.body.contains("bad_verification_code"), "{}", page.body);
    assert!(browser.cookie("portcullis_refresh").is_none());
}
