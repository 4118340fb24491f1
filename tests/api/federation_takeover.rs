//! The pre-registration takeover through an address a provider did not vouch for, and
//! `role_mapping` beside roles granted otherwise. A first sign-in makes no account under an
//! address its provider does not call verified; whatever the first registrant of an unproven
//! address planted on its account (a linked identity, a passkey, TOTP) does not survive the
//! address's owner proving the mailbox with a reset; the reset of an account whose address
//! was proven removes none of it. A mapping grants only the roles an account lacks and takes
//! back only those it granted, each audited.

use crate::federation::{SECRET, provider, redirect_uri, routes};
use crate::federation_accounts::{CLIENT, assert_as, sign_in, signed_in, spawn, user};
use crate::support::EchoUpstream;
use crate::support::app::*;
use crate::support::browser::Browser;
use crate::support::hostile_op::HostileOp;
use crate::support::oidc::{TestOp, through_op};
use portcullis::domain::{PasskeyId, UserId};
use portcullis::store::{Actor, AuditEvent, AuditFilter, StoredPasskey, UserStore};
use reqwest::StatusCode;
use serde_json::json;

const NEW_PASSWORD: &str = "Owner-Passw0rd!";

/// The events of `kind` about `user`, oldest first, once `want` of them are written.
async fn events(store: &dyn UserStore, kind: &str, user: UserId, want: usize) -> Vec<AuditEvent> {
    let started = std::time::Instant::now();
    loop {
        let filter = AuditFilter {
            limit: 1000,
            ..AuditFilter::default()
        };
        let mut found: Vec<AuditEvent> = store
            .audit_events(&filter)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == kind && e.subject == Some(user))
            .collect();
        if found.len() >= want {
            found.reverse();
            return found;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{want} {kind} events expected, {} written",
            found.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

/// The address's owner asks for a reset and sets a password with the mailed link.
async fn owner_resets(app: &TestApp, email: &str) {
    let r = app
        .post("/api/auth/request-password-reset", json!({"email": email}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    owner_uses_reset_mail(app, email).await;
}

/// The owner uses the reset link in the next mail to `email`.
async fn owner_uses_reset_mail(app: &TestApp, email: &str) {
    let token = app.mail_to(email).await.token().expect("a reset link");
    let r = app
        .post(
            "/api/auth/reset-password",
            json!({"token": token, "password": NEW_PASSWORD}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owners_reset_ends_a_takeover_through_an_address_a_real_provider_did_not_vouch_for() {
    for backend in backends() {
        let Some(mut op) = TestOp::reserve() else {
            return;
        };
        let upstream = EchoUpstream::start().await;
        let config = format!(
            "{}{}",
            routes(&upstream.url()),
            provider("corp", "Corp SSO", &op.issuer, "auto_create = true"),
        );
        let app = TestApp::spawn(backend, &config).await;
        op.start(
            &[("portcullis-corp", SECRET, &redirect_uri(&app, "corp"))],
            json!({"eve": {"email": "victim@example.com", "email_verified": false}}),
        );
        let attacker = || async {
            let browser = Browser::new(&app.url(""));
            let (page, _) = through_op(&browser, "/auth/oidc/corp/start", "eve").await;
            (browser, page)
        };
        // The provider does not vouch for the address: no account is made under it, so
        // there is nothing for the owner to take back.
        let (browser, page) = attacker().await;
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
        assert!(!signed_in(&browser), "{backend:?}");
        assert!(user(&app, "victim@example.com").await.is_none());
        let store = app.store().await;
        let filter = AuditFilter {
            limit: 1000,
            ..AuditFilter::default()
        };
        let started = std::time::Instant::now();
        let mut refused = false;
        while !refused && started.elapsed() < std::time::Duration::from_secs(5) {
            refused = store
                .audit_events(&filter)
                .await
                .unwrap()
                .iter()
                .any(|e| e.detail.contains("the provider did not verify the address"));
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        assert!(refused, "{backend:?}: the refusal is in the audit trail");
        // The owner signs up as anyone would.
        let r = app.register("victim@example.com").await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
}

/// An account whose address is unproven, linked to the stub provider's `subject`.
async fn plant_unproven_account(app: &TestApp, email: &str, subject: &str) {
    let store = app.store().await;
    let new = portcullis::store::NewUser {
        email: portcullis::domain::Email::parse(email).unwrap(),
        password_hash: "$2b$04$unusableunusableunusableunusableunusableunusableunusa".into(),
        first_name: String::new(),
        last_name: String::new(),
        language: String::new(),
    };
    let id = UserId::random();
    let identity = portcullis::store::NewLinkedIdentity {
        user_id: id,
        provider: "idp".into(),
        subject: subject.into(),
        email: email.into(),
    };
    store
        .create_linked_user(new, false, &identity)
        .await
        .unwrap();
}

fn passkey(user: UserId) -> StoredPasskey {
    StoredPasskey {
        id: PasskeyId::random(),
        user_id: user,
        credential_id: format!("cred-{user}"),
        name: "planted".into(),
        credential: "{}".into(),
        sign_count: 0,
        backup_eligible: false,
        backup_state: false,
        created_at: chrono::Utc::now(),
        last_used_at: None,
    }
}

/// What the first registrant planted beside the identity that made the account.
#[derive(Clone, Copy, Debug)]
enum Planted {
    IdentityOnly,
    Passkey,
    Totp,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_removes_what_the_first_registrant_planted_only_when_it_proves_the_address() {
    let planted = [Planted::IdentityOnly, Planted::Passkey, Planted::Totp];
    for backend in backends() {
        for (n, what) in planted.into_iter().enumerate() {
            for vouched in [false, true] {
                let case = format!("{backend:?} {what:?} provider_verified={vouched}");
                let stub = HostileOp::start(CLIENT).await;
                let app = spawn(backend, &stub, "auto_create = true", "").await;
                let email = format!("owner{n}@example.com");
                let claims = |verified: bool| json!({"email": email, "email_verified": verified});
                if vouched {
                    assert_as(&stub, "first", claims(true));
                    let (browser, page) = sign_in(&app).await;
                    assert_eq!(page.status, StatusCode::OK, "{case}: {}", page.body);
                    assert!(signed_in(&browser), "{case}");
                } else {
                    // Such an account is no longer made by a sign-in; one an earlier version
                    // made (or one made by hand) is planted in the store.
                    plant_unproven_account(&app, &email, "first").await;
                }
                let account = user(&app, &email).await.unwrap();
                assert_eq!(account.is_verified, vouched, "{case}");
                let store = app.store().await;
                match what {
                    Planted::IdentityOnly => {}
                    Planted::Passkey => {
                        assert!(store.add_passkey(&passkey(account.id)).await.unwrap())
                    }
                    Planted::Totp => {
                        store
                            .set_two_factor(account.id, Some(b"sealed".to_vec()))
                            .await
                            .unwrap();
                        store
                            .replace_recovery_codes(account.id, &["c1".into()])
                            .await
                            .unwrap();
                    }
                }
                if !vouched {
                    // The identity's later word that the address is verified proves nothing
                    // here: the account stays unproven, so the owner's reset still clears it.
                    assert_as(&stub, "first", claims(true));
                    let (browser, _) = sign_in(&app).await;
                    assert!(signed_in(&browser), "{case}");
                    assert!(!user(&app, &email).await.unwrap().is_verified, "{case}");
                }

                owner_resets(&app, &email).await;
                let after = user(&app, &email).await.unwrap();
                assert!(after.is_verified, "{case}");
                let identities = store.linked_identities(account.id).await.unwrap().len();
                let passkeys = store.list_passkeys(account.id).await.unwrap().len();
                let totp = after.two_factor_enabled || after.two_factor_secret.is_some();
                let kept = vouched;
                assert_eq!(identities, usize::from(kept), "{case}");
                let had_passkey = matches!(what, Planted::Passkey);
                assert_eq!(passkeys, usize::from(kept && had_passkey), "{case}");
                assert_eq!(totp, kept && matches!(what, Planted::Totp), "{case}");

                assert_as(&stub, "first", claims(true));
                let (browser, page) = sign_in(&app).await;
                assert_eq!(signed_in(&browser), kept, "{case}: {}", page.body);
                let reset = &events(&*store, "password_reset", account.id, 1).await[0];
                assert_eq!(reset.actor, Actor::User(account.id));
                assert_eq!(
                    reset.detail.contains("the address was unproven"),
                    !kept,
                    "{case}: {}",
                    reset.detail
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_mapping_keeps_roles_granted_otherwise_and_audits_its_own() {
    for backend in backends() {
        let stub = HostileOp::start(CLIENT).await;
        let keys = "auto_create = true\ngroups_claim = \"groups\"\n\
                    role_mapping = { admins = \"admin\", staff = \"staff\" }";
        let app = spawn(backend, &stub, keys, "").await;
        let claims = |groups: &[&str]| json!({"email": "ann@corp.example", "email_verified": true, "groups": groups});
        assert_as(&stub, "ann", claims(&[]));
        let (_, page) = sign_in(&app).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        // The red team's case: an operator makes ann an admin; a sign-in whose groups do
        // not include admins leaves that alone.
        app.grant_role("ann@corp.example", "admin").await;
        for groups in [&[][..], &["staff"][..], &["admins"][..], &[][..]] {
            assert_as(&stub, "ann", claims(groups));
            let (_, page) = sign_in(&app).await;
            assert_eq!(page.status, StatusCode::OK, "{}", page.body);
            let ann = user(&app, "ann@corp.example").await.unwrap();
            assert!(
                ann.roles.contains(&"admin".to_owned()),
                "{backend:?} {groups:?}"
            );
            let has_staff = ann.roles.contains(&"staff".to_owned());
            assert_eq!(has_staff, groups == ["staff"], "{backend:?} {groups:?}");
        }
        // The mapping's own grant and revocation of staff are audited, naming the provider;
        // the operator's admin was neither mapped nor taken.
        let ann = user(&app, "ann@corp.example").await.unwrap();
        let store = app.store().await;
        let granted = events(&*store, "role_grant", ann.id, 2).await;
        let details: Vec<(&str, Actor)> = granted
            .iter()
            .map(|e| (e.detail.as_str(), e.actor))
            .collect();
        assert_eq!(
            details,
            [
                ("admin", Actor::Operator),
                (
                    "staff, by role_mapping of provider idp, subject ann",
                    Actor::User(ann.id)
                ),
            ],
            "{backend:?}"
        );
        let revoked = events(&*store, "role_revoke", ann.id, 1).await;
        assert_eq!(revoked.len(), 1, "{backend:?}");
        assert_eq!(
            revoked[0].detail,
            "staff, by role_mapping of provider idp, subject ann"
        );
    }
}
