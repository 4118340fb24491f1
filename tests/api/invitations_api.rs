//! Invitation stories over HTTP: an address let in with roles by a single-use mailed link,
//! whatever `[registration]` says.

use std::time::Duration;

use crate::support::app::*;
use portcullis::domain::Email;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Invites `email` with `roles` through the instance's core; the token's text.
async fn invite(app: &TestApp, email: &str, roles: &[&str]) -> String {
    let roles: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
    let (_, token) = app
        .gw
        .app
        .accounts
        .invite(Email::parse(email).unwrap(), &roles, None, "en")
        .await
        .expect("invited");
    token
}

fn answer(token: &str) -> Value {
    json!({"token": token, "password": PASSWORD, "first_name": "Ivy", "last_name": "Invitee"})
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invitation_makes_a_verified_account_with_its_roles_once() {
    for backend in backends() {
        let app = TestApp::spawn(backend, "").await;
        invite(&app, "Ivy@Example.com", &["ops", "billing"]).await;
        let mail = app.mail_to("ivy@example.com").await;
        let link = mail.link().expect("a link");
        assert!(link.contains("/auth/invitation?token="), "{link}");
        let token = mail.token().expect("token");

        let r = app
            .post("/api/auth/accept-invitation", answer(&token))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{backend:?}: {}", r.body);
        let user = &r.body["data"]["user"];
        assert_eq!(user["email"], "ivy@example.com");
        assert_eq!(user["is_verified"], true);
        assert_eq!(user["roles"], json!(["billing", "ops"]));

        let again = app
            .post("/api/auth/accept-invitation", answer(&token))
            .await;
        assert_eq!(again.status, StatusCode::BAD_REQUEST, "{}", again.body);
        assert_eq!(again.code(), "invalid_token");

        let tokens = app.login("ivy@example.com").await;
        let profile = app.get_as(&tokens.access, "/api/auth/profile").await;
        assert_eq!(profile.body["data"]["user"]["is_verified"], true);
        assert_eq!(
            profile.body["data"]["user"]["roles"],
            json!(["billing", "ops"])
        );
        // The store keeps the token's hash, never its text.
        if let Some(db) = &app.db {
            assert_eq!(db.count_rows("invitations").await, 1);
        }
        let listed = app.gw.app.accounts.list_invitations().await.unwrap();
        assert!(listed[0].used_at.is_some());

        // Both ends are in the audit trail (written in the background), never the token.
        let store = app.store().await;
        let filter = portcullis::store::AuditFilter {
            email: Some(Email::parse("ivy@example.com").unwrap()),
            limit: 100,
            ..Default::default()
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let events = loop {
            let events = store.audit_events(&filter).await.unwrap();
            let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
            if kinds.contains(&"invitation_create") && kinds.contains(&"invitation_accept") {
                break events;
            }
            assert!(std::time::Instant::now() < deadline, "{kinds:?}");
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        };
        for event in &events {
            assert!(!event.detail.contains(&token), "{event:?}");
            if event.kind.starts_with("invitation_") {
                assert!(event.detail.contains("ops"), "{event:?}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_uses_at_once_on_two_instances_make_one_account() {
    for backend in backends() {
        let app = TestApp::spawn(backend, "").await;
        let peer = app.spawn_peer();
        for round in 0..3 {
            let email = format!("race{round}@example.com");
            let token = invite(&app, &email, &["ops"]).await;
            let here = app.post("/api/auth/accept-invitation", answer(&token));
            let there = app
                .http
                .post(format!("{}/api/auth/accept-invitation", peer.url()))
                .json(&answer(&token))
                .send();
            let (here, there) = tokio::join!(here, there);
            let there = there.expect("peer answers").status();
            let statuses = [here.status, there];
            let created = statuses
                .iter()
                .filter(|s| **s == StatusCode::CREATED)
                .count();
            assert_eq!(created, 1, "{backend:?}: {statuses:?} {}", here.body);
            assert!(
                statuses.contains(&StatusCode::BAD_REQUEST),
                "{backend:?}: {statuses:?}"
            );
        }
        let users = app.store().await.list_users().await.unwrap();
        assert_eq!(users.len(), 3, "{backend:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_revoked_and_unknown_invitations_get_one_answer() {
    for backend in backends() {
        let app = TestApp::spawn(backend, "[registration]\ninvitation_ttl = \"1s\"\n").await;
        let expired = invite(&app, "late@example.com", &[]).await;
        tokio::time::sleep(Duration::from_millis(1300)).await;
        let revoked = invite(&app, "gone@example.com", &[]).await;
        let gone = Email::parse("gone@example.com").unwrap();
        assert_eq!(
            app.gw.app.accounts.revoke_invitation(&gone).await.unwrap(),
            1
        );
        let unknown = "A".repeat(43);
        for token in [expired.as_str(), revoked.as_str(), unknown.as_str(), "bad"] {
            let r = app.post("/api/auth/accept-invitation", answer(token)).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{backend:?}: {}", r.body);
            assert_eq!(r.code(), "invalid_token", "{}", r.body);
        }
        assert!(app.store().await.list_users().await.unwrap().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invitation_is_for_its_address_only() {
    for backend in backends() {
        let app = TestApp::spawn(backend, "").await;
        let token = invite(&app, "meant@example.com", &[]).await;
        let mut other = answer(&token);
        other["email"] = json!("someone-else@example.com");
        let r = app.post("/api/auth/accept-invitation", other).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{backend:?}: {}", r.body);
        assert_eq!(r.code(), "validation_error");
        assert_eq!(r.body["errors"][0]["field"], "email", "{}", r.body);
        assert!(app.store().await.list_users().await.unwrap().is_empty());

        // Still usable, and only for its own address.
        let mut same = answer(&token);
        same["email"] = json!("Meant@Example.com");
        let r = app.post("/api/auth/accept-invitation", same).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        assert_eq!(r.body["data"]["user"]["email"], "meant@example.com");

        // An address with an account cannot be invited.
        let taken = app
            .gw
            .app
            .accounts
            .invite(Email::parse("meant@example.com").unwrap(), &[], None, "en")
            .await;
        assert!(taken.is_err());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn invite_and_closed_modes_refuse_sign_up_but_take_invitations() {
    for backend in backends() {
        for mode in ["invite", "closed"] {
            let config = format!("[registration]\nmode = \"{mode}\"\n");
            let app = TestApp::spawn(backend, &config).await;
            let r = app.register("walk-in@example.com").await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{mode}: {}", r.body);
            let token = invite(&app, "guest@example.com", &[]).await;
            let r = app
                .post("/api/auth/accept-invitation", answer(&token))
                .await;
            assert_eq!(
                r.status,
                StatusCode::CREATED,
                "{backend:?} {mode}: {}",
                r.body
            );
            app.login("guest@example.com").await;
        }
    }
}
