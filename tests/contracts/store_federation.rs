//! The identity providers' part of the `UserStore` conformance suite, on SQLite and, when
//! `PORTCULLIS_TEST_POSTGRES_URL` is set, PostgreSQL: a reset that proves an address removes
//! whatever the account's first registrant planted (and one of a proven address removes
//! nothing); `role_mapping` grants only what an account lacks and takes back only what it
//! granted.

use std::sync::Arc;

use portcullis::domain::{Email, PasskeyId, UserId};
use portcullis::store::{
    NewLinkedIdentity, NewUser, PasswordReset, StoredPasskey, User, UserStore, connect,
};

use crate::support::db::{self, TestDb};

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = super::TestDb::sqlite();
                    super::$name(&db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = super::TestDb::postgres().await else {
                        eprintln!("skipped: {} is not set", super::db::POSTGRES_URL_VAR);
                        return;
                    };
                    super::$name(&db).await;
                }
            )*
        }
    };
}

conformance!(
    a_reset_that_proves_an_address_removes_what_its_first_registrant_planted,
    role_mapping_grants_only_what_is_lacking_and_takes_back_only_what_it_granted,
);

async fn open(db: &TestDb) -> Arc<dyn UserStore> {
    let url = db.url().parse().unwrap();
    connect(&url, 5).await.unwrap()
}

async fn user(store: &dyn UserStore, address: &str) -> User {
    store
        .create_user(NewUser {
            email: Email::parse(address).unwrap(),
            password_hash: "$2b$12$placeholder.hash.for.tests".into(),
            first_name: "Ada".into(),
            last_name: "Lovelace".into(),
            language: String::new(),
        })
        .await
        .unwrap()
}

fn identity(user: UserId, subject: &str) -> NewLinkedIdentity {
    NewLinkedIdentity {
        user_id: user,
        provider: "idp".into(),
        subject: subject.into(),
        email: String::new(),
    }
}

fn passkey(user: UserId, credential_id: &str) -> StoredPasskey {
    StoredPasskey {
        id: PasskeyId::random(),
        user_id: user,
        credential_id: credential_id.into(),
        name: "key".into(),
        credential: "{}".into(),
        sign_count: 0,
        backup_eligible: false,
        backup_state: false,
        created_at: chrono::Utc::now(),
        last_used_at: None,
    }
}

/// What a first registrant may have planted on an account.
#[derive(Clone, Copy, Debug)]
enum Planted {
    Identity,
    MappedRole,
    Passkey,
    Totp,
}

async fn plant(store: &dyn UserStore, user: UserId, what: Planted, n: usize) {
    match what {
        Planted::Identity => {
            let eve = identity(user, &format!("eve-{n}"));
            assert!(store.link_identity(&eve).await.unwrap());
        }
        Planted::MappedRole => {
            let eve = identity(user, &format!("eve-{n}"));
            assert!(store.link_identity(&eve).await.unwrap());
            let given = ["staff".to_owned()];
            let mapped = store
                .apply_role_mapping(user, "idp", &eve.subject, &given)
                .await
                .unwrap();
            assert_eq!(mapped.granted, ["staff"]);
        }
        Planted::Passkey => {
            let key = passkey(user, &format!("cred-{n}"));
            assert!(store.add_passkey(&key).await.unwrap());
        }
        Planted::Totp => {
            store
                .set_two_factor(user, Some(b"ciphertext".to_vec()))
                .await
                .unwrap();
            let codes = ["h1".to_owned(), "h2".to_owned()];
            store.replace_recovery_codes(user, &codes).await.unwrap();
        }
    }
}

/// What is left of each planted thing: (identities, roles, passkeys, TOTP on).
async fn left(store: &dyn UserStore, user: UserId) -> (usize, Vec<String>, usize, bool) {
    let account = store.find_by_id(user).await.unwrap().unwrap();
    (
        store.linked_identities(user).await.unwrap().len(),
        account.roles,
        store.list_passkeys(user).await.unwrap().len(),
        account.two_factor_enabled || account.two_factor_secret.is_some(),
    )
}

async fn a_reset_that_proves_an_address_removes_what_its_first_registrant_planted(db: &TestDb) {
    let store = open(db).await;
    let table = [
        Planted::Identity,
        Planted::MappedRole,
        Planted::Passkey,
        Planted::Totp,
    ];
    for (n, what) in table.into_iter().enumerate() {
        for verified_before in [false, true] {
            let case = format!("{what:?} verified_before={verified_before}");
            let account = user(&*store, &format!("owner-{n}-{verified_before}@example.com")).await;
            if verified_before {
                store.mark_verified(account.id).await.unwrap();
            }
            // A role granted otherwise: never the first registrant's, always kept.
            store.grant_role(account.id, "ops").await.unwrap();
            plant(
                &*store,
                account.id,
                what,
                n * 2 + usize::from(verified_before),
            )
            .await;
            let before = left(&*store, account.id).await;
            let reset = store
                .reset_password(account.id, "$2b$12$owner")
                .await
                .unwrap();
            let after = left(&*store, account.id).await;
            let reloaded = store.find_by_id(account.id).await.unwrap().unwrap();
            assert!(reloaded.is_verified, "{case}");
            assert_eq!(reloaded.password_hash, "$2b$12$owner", "{case}");
            if verified_before {
                assert_eq!(reset, PasswordReset::default(), "{case}");
                assert_eq!(after, before, "{case}: nothing removed");
                continue;
            }
            assert!(reset.proved_address, "{case}");
            assert_eq!(after, (0, vec!["ops".to_owned()], 0, false), "{case}");
            let expected = match what {
                Planted::Identity => (1, 0, false, 0, vec![]),
                Planted::MappedRole => (1, 0, false, 0, vec!["staff".to_owned()]),
                Planted::Passkey => (0, 1, false, 0, vec![]),
                Planted::Totp => (0, 0, true, 2, vec![]),
            };
            let got = (
                reset.identities,
                reset.passkeys,
                reset.totp,
                reset.recovery_codes,
                reset.mapped_roles.clone(),
            );
            assert_eq!(got, expected, "{case}");
            assert!(
                reset
                    .note()
                    .unwrap()
                    .starts_with("the address was unproven")
            );
            // A second reset finds the address proven: nothing more goes.
            let again = store
                .reset_password(account.id, "$2b$12$again")
                .await
                .unwrap();
            assert_eq!(again, PasswordReset::default(), "{case}");
        }
    }
}

async fn role_mapping_grants_only_what_is_lacking_and_takes_back_only_what_it_granted(db: &TestDb) {
    let store = open(db).await;
    let ann = user(&*store, "ann@example.com").await;
    assert!(store.link_identity(&identity(ann.id, "ann")).await.unwrap());
    // Held before the mapping gave it (an operator's grant): never recorded as mapped.
    store.grant_role(ann.id, "admin").await.unwrap();
    let roles = |r: &[&str]| r.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let apply = |given: Vec<String>| {
        let store = Arc::clone(&store);
        async move {
            store
                .apply_role_mapping(ann.id, "idp", "ann", &given)
                .await
                .unwrap()
        }
    };
    let first = apply(roles(&["admin", "staff"])).await;
    assert_eq!((first.granted, first.revoked), (roles(&["staff"]), vec![]));
    let linked = store.linked_identities(ann.id).await.unwrap();
    assert_eq!(linked[0].mapped_roles, ["staff"]);
    // The groups go: only the mapped role is taken back; the operator's admin stays.
    let second = apply(vec![]).await;
    assert_eq!(
        (second.granted, second.revoked),
        (vec![], roles(&["staff"]))
    );
    assert_eq!(
        store.find_by_id(ann.id).await.unwrap().unwrap().roles,
        ["admin"]
    );
    assert!(
        store.linked_identities(ann.id).await.unwrap()[0]
            .mapped_roles
            .is_empty()
    );
    // Nothing given, nothing recorded: nothing changes.
    assert!(!apply(vec![]).await.changed());

    // A mapped role an operator then grants on purpose is theirs: the mapping keeps off it.
    let third = apply(roles(&["staff"])).await;
    assert_eq!(third.granted, ["staff"]);
    assert!(!store.grant_role(ann.id, "staff").await.unwrap());
    assert!(
        store.linked_identities(ann.id).await.unwrap()[0]
            .mapped_roles
            .is_empty()
    );
    assert!(!apply(vec![]).await.changed());
    assert_eq!(
        store.find_by_id(ann.id).await.unwrap().unwrap().roles,
        ["admin", "staff"]
    );

    // Another account's identity changes nothing here.
    let bob = user(&*store, "bob@example.com").await;
    let other = store
        .apply_role_mapping(bob.id, "idp", "ann", &roles(&["staff"]))
        .await
        .unwrap();
    assert!(!other.changed());
    assert!(
        store
            .find_by_id(bob.id)
            .await
            .unwrap()
            .unwrap()
            .roles
            .is_empty()
    );
}
