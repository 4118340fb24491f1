//! The audit trail as an account's owner writes it over the API: sign-ins that fail and
//! succeed, a password change and the end of every session, each with its actor, subject
//! and outcome, and never a secret.

use std::time::{Duration, Instant};

use portcullis::domain::Email;
use portcullis::store::{Actor, AuditEvent, AuditFilter, AuditOutcome, UserStore};
use reqwest::StatusCode;
use serde_json::json;

use crate::support::app::*;

const WRONG: &str = "Wr0ng-Guess-Pass!";
const NEW_PASSWORD: &str = "N3w-Secret-Pass!";

/// The trail's events, newest first, once `kinds` are all there (they are written in the
/// background, after the answer); panics after five seconds.
async fn events_with(store: &dyn UserStore, kinds: &[&str]) -> Vec<AuditEvent> {
    let started = Instant::now();
    loop {
        let filter = AuditFilter {
            limit: 1000,
            ..AuditFilter::default()
        };
        let events = store.audit_events(&filter).await.unwrap();
        if kinds.iter().all(|k| events.iter().any(|e| e.kind == *k)) {
            return events;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "missing some of {kinds:?}: {events:#?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sign_ins_a_password_change_and_logout_all_are_audited_without_secrets() {
    for backend in backends() {
        let app = TestApp::spawn(backend, "").await;
        app.verified_user("ada@example.com").await;
        let wrong = json!({"email": "ada@example.com", "password": WRONG});
        let r = app.post("/api/auth/login", wrong).await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "{backend:?}: {}",
            r.body
        );
        let tokens = app.login("ada@example.com").await;
        let change = json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD});
        let r = app
            .post_as(&tokens.access, "/api/auth/change-password", change)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{backend:?}: {}", r.body);
        let r = app
            .post_as(&tokens.access, "/api/auth/logout-all", json!({}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{backend:?}: {}", r.body);

        let store = app.store().await;
        let ada = store
            .find_by_email(&Email::parse("ada@example.com").unwrap())
            .await
            .unwrap()
            .unwrap();
        let kinds = [
            "registration",
            "email_verification",
            "sign_in",
            "password_change",
            "logout_all",
        ];
        let events = events_with(&*store, &kinds).await;
        assert!(
            events.iter().all(|e| e.subject == Some(ada.id)),
            "{backend:?}: {events:#?}"
        );
        let one = |kind: &str, outcome: AuditOutcome| {
            events
                .iter()
                .find(|e| e.kind == kind && e.outcome == outcome)
                .unwrap_or_else(|| panic!("{backend:?}: no {kind} {outcome:?}: {events:#?}"))
        };
        let failed = one("sign_in", AuditOutcome::Failure);
        assert_eq!(
            failed.actor,
            Actor::Anonymous,
            "the guesser is nobody known"
        );
        assert_eq!(failed.detail, "wrong_password");
        assert_eq!(failed.client_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(failed.subject_email.as_deref(), Some("ada@example.com"));
        let signed_in = one("sign_in", AuditOutcome::Success);
        assert_eq!(signed_in.actor, Actor::User(ada.id));
        // Both are written in the background after their answers, so their order in the
        // trail is not the order of the requests: only that both are there is asserted.
        let changed = one("password_change", AuditOutcome::Success);
        assert_eq!(changed.actor, Actor::User(ada.id));
        assert_eq!(changed.client_ip.as_deref(), Some("127.0.0.1"));
        let ended = one("logout_all", AuditOutcome::Success);
        assert_eq!(ended.actor, Actor::User(ada.id));
        assert_eq!(ended.client_ip.as_deref(), Some("127.0.0.1"));

        let verification = app.mail_to("ada@example.com").await.token();
        let everything = format!("{events:?}");
        let secrets = [
            PASSWORD,
            WRONG,
            NEW_PASSWORD,
            &tokens.access,
            &tokens.refresh,
        ];
        for secret in secrets.into_iter().chain(verification.as_deref()) {
            assert!(
                !everything.contains(secret),
                "{backend:?}: a secret in the trail: {everything}"
            );
        }
        assert!(!everything.contains(&ada.password_hash), "{backend:?}");
    }
}

/// A change of names and a refresh token presented after its successor was used (reuse:
/// the session ends) are in the trail: the change by its owner, the reuse by nobody known,
/// refused, about the session's account.
#[tokio::test(flavor = "multi_thread")]
async fn a_name_change_and_a_refresh_token_reuse_are_audited() {
    for backend in backends() {
        let app = TestApp::spawn(backend, "").await;
        app.verified_user("ada@example.com").await;
        let tokens = app.login("ada@example.com").await;
        let r = app
            .call(
                reqwest::Method::PATCH,
                "/api/auth/profile",
                Some(&tokens.access),
                Some(json!({"first_name": "Augusta"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{backend:?}: {}", r.body);
        let refresh = |token: String| {
            let app = &app;
            async move {
                app.post("/api/auth/refresh-token", json!({"refresh_token": token}))
                    .await
            }
        };
        let second = refresh(tokens.refresh.clone()).await;
        assert_eq!(second.status, StatusCode::OK, "{}", second.body);
        let third = refresh(crate::support::app::tokens_of(&second.body).refresh).await;
        assert_eq!(third.status, StatusCode::OK, "{}", third.body);
        let reused = refresh(tokens.refresh.clone()).await;
        assert_eq!(reused.code(), "refresh_token_reused", "{}", reused.body);

        let store = app.store().await;
        let ada = store
            .find_by_email(&Email::parse("ada@example.com").unwrap())
            .await
            .unwrap()
            .unwrap();
        let events = events_with(&*store, &["profile_update", "refresh_reuse"]).await;
        let of = |kind: &str| events.iter().find(|e| e.kind == kind).unwrap();
        let named = of("profile_update");
        assert_eq!(named.actor, Actor::User(ada.id));
        assert_eq!(named.subject, Some(ada.id));
        let reuse = of("refresh_reuse");
        assert_eq!(reuse.actor, Actor::Anonymous);
        assert_eq!(reuse.outcome, AuditOutcome::Refused);
        assert_eq!(reuse.subject, Some(ada.id));
        assert_eq!(reuse.subject_email.as_deref(), Some("ada@example.com"));
        assert_eq!(reuse.client_ip.as_deref(), Some("127.0.0.1"));
        let everything = format!("{events:?}");
        assert!(!everything.contains(&tokens.refresh), "{backend:?}");
    }
}
