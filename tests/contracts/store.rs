//! The `UserStore` conformance suite: every story runs on SQLite, and on PostgreSQL
//! when `PORTCULLIS_TEST_POSTGRES_URL` is set (required under `CI=true`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use portcullis::backend::Backend;
use portcullis::config::StorageUrl;
use portcullis::domain::{Email, UserId};
use portcullis::store::admin::{AdminError, InitialPassword, UserCommand, run_user_command};
use portcullis::store::{
    self, AttemptClaim, AttemptOutcome, FailedLogin, InvitationState, NewInvitation, NewToken,
    NewUser, PasskeyUse, StoreError, StoredPasskey, TokenKind, User, UserChange, UserSearch,
    UserStore, connect,
};

use crate::support::db::{self, Kind, TestDb};

/// Declares each story once per backend: `sqlite::name` and `postgres::name`.
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
    creates_and_finds_users_case_insensitively,
    duplicate_email_in_other_case_is_rejected,
    schema_itself_refuses_case_variants,
    lists_users_oldest_first_with_roles,
    invitations_are_purged_a_month_after_they_stop_working,
    search_pages_through_accounts_by_address_and_name,
    updates_profile_fields_given,
    password_verification_and_activation_change_the_row,
    calls_for_unknown_users_say_not_found,
    roles_grant_and_revoke_are_idempotent,
    failed_logins_lock_the_account_and_success_resets,
    expired_lock_starts_a_fresh_count,
    concurrent_failures_are_all_counted,
    tokens_are_single_use_and_kind_bound,
    expired_token_is_refused,
    concurrent_token_use_succeeds_once,
    invalidate_marks_only_that_kind_used,
    purge_deletes_only_expired_tokens,
    token_purger_task_purges_in_background,
    two_factor_secret_round_trips_and_disable_clears_codes,
    recovery_codes_are_used_once,
    migrations_are_idempotent_and_data_survives_reconnect,
    admin_commands_report_what_they_did,
    concurrent_claims_grant_only_the_allowed_guesses,
    resolutions_decide_the_lock,
    claims_after_an_expired_lock_start_afresh,
    an_account_and_its_token_are_stored_together,
    change_feed_lists_recent_changes_in_order,
    unknown_address_claims_follow_the_account_rule,
    the_registration_language_is_kept,
    passkeys_are_kept_per_user_and_used_only_over_their_counter,
    operators_create_vouched_accounts_and_delete_them_whole,
    invitations_are_used_once_for_their_address_only,
    invitations_expire_are_revoked_and_replaced,
);

/// `url` as `storage.url` would be parsed at load.
fn storage(url: &str) -> StorageUrl {
    url.parse().unwrap_or_else(|e| panic!("storage URL: {e}"))
}

/// The test database as `storage.url`.
fn storage_url(db: &TestDb) -> StorageUrl {
    storage(db.url())
}

async fn open(db: &TestDb) -> Arc<dyn UserStore> {
    connect(&storage_url(db), 5)
        .await
        .unwrap_or_else(|e| panic!("connect to {:?}: {e}", db.kind()))
}

fn email(s: &str) -> Email {
    Email::parse(s).unwrap()
}

fn new_user(address: &str) -> NewUser {
    NewUser {
        email: email(address),
        password_hash: "$2b$12$placeholder.hash.for.tests".into(),
        first_name: "Ada".into(),
        last_name: "Lovelace".into(),
        language: String::new(),
    }
}

async fn reload(store: &dyn UserStore, id: UserId) -> User {
    store.find_by_id(id).await.unwrap().expect("user exists")
}

/// A token hash as the API makes them: SHA-256 hex (here of a random UUID).
fn token_hash() -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(uuid::Uuid::new_v4().as_bytes()))
}

async fn creates_and_finds_users_case_insensitively(db: &TestDb) {
    let store = open(db).await;
    let created = store
        .create_user(new_user("  Alice@Example.COM "))
        .await
        .unwrap();
    assert_eq!(created.email.as_str(), "alice@example.com");
    assert!(!created.is_verified);
    assert!(created.is_active);
    assert!(!created.two_factor_enabled);
    assert_eq!(created.two_factor_secret, None);
    assert_eq!(created.failed_login_attempts, 0);
    assert_eq!(created.locked_until, None);
    assert_eq!(created.last_login, None);
    assert_eq!(created.created_at, created.updated_at);
    assert!(created.roles.is_empty());

    // What comes back from the database equals what create returned, timestamps included.
    let by_email = store
        .find_by_email(&email("ALICE@example.com"))
        .await
        .unwrap()
        .expect("found by upper-case address");
    assert_eq!(by_email, created);
    assert_eq!(reload(store.as_ref(), created.id).await, created);

    assert!(
        store
            .find_by_email(&email("bob@example.com"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.find_by_id(UserId::random()).await.unwrap().is_none());
    store.ping().await.unwrap();
}

async fn the_registration_language_is_kept(db: &TestDb) {
    let store = open(db).await;
    let created = store
        .create_user(NewUser {
            language: "ru".into(),
            ..new_user("ivan@example.com")
        })
        .await
        .unwrap();
    assert_eq!(created.language, "ru");
    assert_eq!(reload(store.as_ref(), created.id).await.language, "ru");
    let unknown = store
        .create_user(new_user("old@example.com"))
        .await
        .unwrap();
    assert_eq!(reload(store.as_ref(), unknown.id).await.language, "");
    store.set_language(unknown.id, "ru").await.unwrap();
    assert_eq!(reload(store.as_ref(), unknown.id).await.language, "ru");
    assert!(matches!(
        store.set_language(UserId::random(), "ru").await,
        Err(StoreError::NotFound)
    ));
}

async fn duplicate_email_in_other_case_is_rejected(db: &TestDb) {
    let store = open(db).await;
    store
        .create_user(new_user("carol@example.com"))
        .await
        .unwrap();
    let again = store.create_user(new_user("Carol@EXAMPLE.com")).await;
    assert!(
        matches!(again, Err(StoreError::DuplicateEmail)),
        "{again:?}"
    );
    assert_eq!(store.list_users().await.unwrap().len(), 1);
}

async fn schema_itself_refuses_case_variants(db: &TestDb) {
    let store = open(db).await;
    let user = store
        .create_user(new_user("dave@example.com"))
        .await
        .unwrap();
    // A writer that bypasses Email (a manual fix-up, a future bug) still cannot add a
    // case variant: SQLite's CHECK or PostgreSQL's unique index on lower(email) stops it.
    let id = match db.kind() {
        Kind::Sqlite => format!("'{}'", UserId::random()),
        Kind::Postgres => format!("'{}'::uuid", UserId::random()),
    };
    let now = match db.kind() {
        Kind::Sqlite => "'2025-01-01T00:00:00.000000Z'",
        Kind::Postgres => "now()",
    };
    let insert = format!(
        "INSERT INTO users (id, email, password_hash, created_at, updated_at) \
         VALUES ({id}, 'DAVE@example.com', 'x', {now}, {now})"
    );
    assert!(db.execute(&insert).await.is_err());
    assert_eq!(db.count_rows("users").await, 1);
    assert!(reload(store.as_ref(), user.id).await.is_active);
}

/// `list_users` oldest first, and `count_users` (the accounts gauge) counting the same
/// accounts, deactivated ones too, until one is deleted.
async fn lists_users_oldest_first_with_roles(db: &TestDb) {
    let store = open(db).await;
    assert!(store.list_users().await.unwrap().is_empty());
    assert_eq!(store.count_users().await.unwrap(), 0);
    let first = store
        .create_user(new_user("first@example.com"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = store
        .create_user(new_user("second@example.com"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let third = store
        .create_user(new_user("third@example.com"))
        .await
        .unwrap();
    store.grant_role(second.id, "zeta").await.unwrap();
    store.grant_role(second.id, "alpha").await.unwrap();
    store.grant_role(third.id, "admin").await.unwrap();

    let users = store.list_users().await.unwrap();
    let ids: Vec<UserId> = users.iter().map(|u| u.id).collect();
    assert_eq!(ids, vec![first.id, second.id, third.id]);
    assert!(users[0].roles.is_empty());
    assert_eq!(users[1].roles, vec!["alpha", "zeta"]);
    assert_eq!(users[2].roles, vec!["admin"]);

    store.set_active(first.id, false).await.unwrap();
    assert_eq!(store.count_users().await.unwrap(), 3);
    assert!(store.delete_user(third.id).await.unwrap());
    assert_eq!(store.count_users().await.unwrap(), 2);
}

/// `search_users`: a case-insensitive substring of the address or a name, in address
/// order, a page at a time after a cursor; `%`, `_` and `\` are plain characters, roles
/// come with each account and the page never exceeds its cap.
async fn search_pages_through_accounts_by_address_and_name(db: &TestDb) {
    let store = open(db).await;
    let mut made = Vec::new();
    for address in [
        "carol@example.com",
        "alice@example.com",
        "bob_x@example.org",
        "dave%@example.net",
        "erin@sub.example.com",
    ] {
        made.push(store.create_user(new_user(address)).await.unwrap());
    }
    let mut named = new_user("zed@example.com");
    named.first_name = "Grace".into();
    named.last_name = "Hopper".into();
    made.push(store.create_user(named).await.unwrap());
    store.grant_role(made[1].id, "admin").await.unwrap();
    store.grant_role(made[1].id, "ops").await.unwrap();

    let search = |text: &str, offset: u32, limit: u32| UserSearch {
        text: text.into(),
        offset,
        limit,
    };
    let addresses = |users: Vec<User>| -> Vec<String> {
        users.into_iter().map(|u| u.email.to_string()).collect()
    };
    let table: &[(&str, u32, u32, &[&str])] = &[
        (
            "",
            0,
            100,
            &[
                "alice@example.com",
                "bob_x@example.org",
                "carol@example.com",
                "dave%@example.net",
                "erin@sub.example.com",
                "zed@example.com",
            ],
        ),
        ("", 0, 2, &["alice@example.com", "bob_x@example.org"]),
        ("", 2, 2, &["carol@example.com", "dave%@example.net"]),
        ("", 6, 2, &[]),
        (
            "EXAMPLE.COM",
            0,
            100,
            &[
                "alice@example.com",
                "carol@example.com",
                "erin@sub.example.com",
                "zed@example.com",
            ],
        ),
        ("_", 0, 100, &["bob_x@example.org"]),
        ("%", 0, 100, &["dave%@example.net"]),
        ("\\", 0, 100, &[]),
        ("hop", 0, 100, &["zed@example.com"]),
        ("  grace ", 0, 100, &["zed@example.com"]),
        ("nobody", 0, 100, &[]),
        ("", 0, 0, &["alice@example.com"]),
    ];
    for (text, after, limit, expected) in table {
        let found = store
            .search_users(&search(text, *after, *limit))
            .await
            .unwrap();
        assert_eq!(
            addresses(found),
            *expected,
            "{text:?} offset {after} limit {limit}"
        );
    }
    let alice = store.search_users(&search("alice", 0, 10)).await.unwrap();
    assert_eq!(alice[0].roles, vec!["admin", "ops"]);
    for i in 0..120 {
        store
            .create_user(new_user(&format!("bulk{i:03}@example.com")))
            .await
            .unwrap();
    }
    let page = store.search_users(&search("", 0, 1000)).await.unwrap();
    assert_eq!(page.len(), store::MAX_USER_PAGE as usize, "capped");
}

async fn updates_profile_fields_given(db: &TestDb) {
    let store = open(db).await;
    let user = store
        .create_user(new_user("erin@example.com"))
        .await
        .unwrap();

    let updated = store
        .update_profile(user.id, Some("Erin".into()), None)
        .await
        .unwrap()
        .expect("user exists");
    assert_eq!(updated.first_name, "Erin");
    assert_eq!(updated.last_name, "Lovelace");
    assert!(updated.updated_at >= user.updated_at);

    store.grant_role(user.id, "editor").await.unwrap();
    let updated = store
        .update_profile(user.id, None, Some("Smith".into()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (updated.first_name.as_str(), updated.last_name.as_str()),
        ("Erin", "Smith")
    );
    assert_eq!(updated.roles, vec!["editor"]);
    assert_eq!(reload(store.as_ref(), user.id).await, updated);

    let missing = store
        .update_profile(UserId::random(), Some("X".into()), None)
        .await
        .unwrap();
    assert!(missing.is_none());
}

async fn password_verification_and_activation_change_the_row(db: &TestDb) {
    let store = open(db).await;
    let user = store
        .create_user(new_user("frank@example.com"))
        .await
        .unwrap();

    store
        .set_password_hash(user.id, "$2b$12$newhash")
        .await
        .unwrap();
    store.mark_verified(user.id).await.unwrap();
    store.set_active(user.id, false).await.unwrap();
    let changed = reload(store.as_ref(), user.id).await;
    assert_eq!(changed.password_hash, "$2b$12$newhash");
    assert!(changed.is_verified);
    assert!(!changed.is_active);

    store.set_active(user.id, true).await.unwrap();
    assert!(reload(store.as_ref(), user.id).await.is_active);

    // A reset: the hash, the proven address and a cleared lockout, together.
    let other = store
        .create_user(new_user("frank-reset@example.com"))
        .await
        .unwrap();
    for _ in 0..3 {
        store
            .record_failed_login(other.id, 3, Duration::from_secs(600))
            .await
            .unwrap();
    }
    assert!(reload(store.as_ref(), other.id).await.is_locked(Utc::now()));
    store
        .reset_password(other.id, "$2b$12$reset")
        .await
        .unwrap();
    let reset = reload(store.as_ref(), other.id).await;
    assert_eq!(reset.password_hash, "$2b$12$reset");
    assert!(reset.is_verified);
    assert_eq!((reset.failed_login_attempts, reset.locked_until), (0, None));
}

async fn calls_for_unknown_users_say_not_found(db: &TestDb) {
    let store = open(db).await;
    let ghost = UserId::random();
    let not_found = |r: Result<(), StoreError>| matches!(r, Err(StoreError::NotFound));
    assert!(not_found(store.set_password_hash(ghost, "h").await));
    assert!(not_found(store.mark_verified(ghost).await));
    assert!(not_found(
        store.reset_password(ghost, "h").await.map(|_| ())
    ));
    assert!(not_found(store.set_active(ghost, false).await));
    assert!(not_found(store.record_successful_login(ghost).await));
    assert!(not_found(store.unlock(ghost).await));
    assert!(not_found(store.set_two_factor(ghost, None).await));
    assert!(not_found(
        store.replace_recovery_codes(ghost, &["a".into()]).await
    ));
    assert!(not_found(
        store
            .create_token(ghost, TokenKind::PasswordReset, &token_hash(), Utc::now())
            .await
    ));
    assert!(matches!(
        store
            .record_failed_login(ghost, 5, Duration::from_secs(60))
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.grant_role(ghost, "admin").await,
        Err(StoreError::NotFound)
    ));
    assert!(!store.revoke_role(ghost, "admin").await.unwrap());
}

async fn roles_grant_and_revoke_are_idempotent(db: &TestDb) {
    let store = open(db).await;
    let user = store
        .create_user(new_user("grace@example.com"))
        .await
        .unwrap();

    assert!(store.grant_role(user.id, "admin").await.unwrap());
    assert!(!store.grant_role(user.id, "admin").await.unwrap());
    assert!(store.grant_role(user.id, "billing").await.unwrap());
    assert_eq!(
        reload(store.as_ref(), user.id).await.roles,
        vec!["admin", "billing"]
    );

    assert!(store.revoke_role(user.id, "admin").await.unwrap());
    assert!(!store.revoke_role(user.id, "admin").await.unwrap());
    assert!(!store.revoke_role(user.id, "never-granted").await.unwrap());
    let after = reload(store.as_ref(), user.id).await;
    assert_eq!(after.roles, vec!["billing"]);
    assert!(after.has_role("billing") && !after.has_role("admin"));
}

async fn failed_logins_lock_the_account_and_success_resets(db: &TestDb) {
    let store = open(db).await;
    let user = store
        .create_user(new_user("heidi@example.com"))
        .await
        .unwrap();
    let lock_for = Duration::from_secs(15 * 60);

    for expected in 1..=2 {
        let f = store
            .record_failed_login(user.id, 3, lock_for)
            .await
            .unwrap();
        assert_eq!(f.attempts, expected);
        assert_eq!(f.locked_until, None);
        assert!(!f.newly_locked);
    }
    let before = Utc::now();
    let third = store
        .record_failed_login(user.id, 3, lock_for)
        .await
        .unwrap();
    assert_eq!(third.attempts, 3);
    assert!(third.newly_locked);
    let until = third.locked_until.expect("locked at the limit");
    assert!(
        until > before + TimeDelta::minutes(14) && until <= Utc::now() + TimeDelta::minutes(15)
    );

    let locked = reload(store.as_ref(), user.id).await;
    assert!(locked.is_locked(Utc::now()));
    assert_eq!(locked.failed_login_attempts, 3);
    assert_eq!(locked.locked_until, Some(until));

    // Failures during the lock are counted but do not extend it.
    let fourth = store
        .record_failed_login(user.id, 3, lock_for)
        .await
        .unwrap();
    assert_eq!(fourth.attempts, 4);
    assert_eq!(fourth.locked_until, Some(until));
    assert!(!fourth.newly_locked);

    store.unlock(user.id).await.unwrap();
    let unlocked = reload(store.as_ref(), user.id).await;
    assert!(!unlocked.is_locked(Utc::now()));
    assert_eq!(unlocked.failed_login_attempts, 0);
    assert_eq!(unlocked.locked_until, None);

    let again = store
        .record_failed_login(user.id, 3, lock_for)
        .await
        .unwrap();
    assert_eq!(again.attempts, 1);

    store.record_successful_login(user.id).await.unwrap();
    let after_success = reload(store.as_ref(), user.id).await;
    assert_eq!(after_success.failed_login_attempts, 0);
    assert_eq!(after_success.locked_until, None);
    let last_login = after_success.last_login.expect("last_login stamped");
    assert!(last_login >= before && last_login <= Utc::now());
}

async fn expired_lock_starts_a_fresh_count(db: &TestDb) {
    let store = open(db).await;
    let user = store
        .create_user(new_user("ivan@example.com"))
        .await
        .unwrap();
    let lock_for = Duration::from_millis(200);

    store
        .record_failed_login(user.id, 2, lock_for)
        .await
        .unwrap();
    let locking = store
        .record_failed_login(user.id, 2, lock_for)
        .await
        .unwrap();
    assert!(locking.newly_locked);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!reload(store.as_ref(), user.id).await.is_locked(Utc::now()));

    let fresh = store
        .record_failed_login(user.id, 2, lock_for)
        .await
        .unwrap();
    assert_eq!(fresh.attempts, 1);
    assert_eq!(fresh.locked_until, None);
    let relocked = store
        .record_failed_login(user.id, 2, lock_for)
        .await
        .unwrap();
    assert_eq!(relocked.attempts, 2);
    assert!(relocked.newly_locked);
}

async fn concurrent_failures_are_all_counted(db: &TestDb) {
    let store = open(db).await;
    let user = store
        .create_user(new_user("judy@example.com"))
        .await
        .unwrap();
    let lock_for = Duration::from_secs(600);

    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.record_failed_login(user.id, 10, lock_for).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap().unwrap());
    }

    // Every failure saw a distinct count: none was lost or double-counted.
    let counts: BTreeSet<u32> = outcomes.iter().map(|f| f.attempts).collect();
    assert_eq!(counts, (1..=20).collect::<BTreeSet<u32>>());
    assert_eq!(outcomes.iter().filter(|f| f.newly_locked).count(), 1);
    let locker = outcomes.iter().find(|f| f.newly_locked).unwrap();
    assert_eq!(locker.attempts, 10);
    assert_eq!(
        reload(store.as_ref(), user.id).await.failed_login_attempts,
        20
    );
}

async fn tokens_are_single_use_and_kind_bound(db: &TestDb) {
    let store = open(db).await;
    let user = store
        .create_user(new_user("ken@example.com"))
        .await
        .unwrap();
    let in_a_day = Utc::now() + TimeDelta::hours(24);
    let verify = token_hash();
    let reset = token_hash();
    store
        .create_token(user.id, TokenKind::EmailVerification, &verify, in_a_day)
        .await
        .unwrap();
    store
        .create_token(user.id, TokenKind::PasswordReset, &reset, in_a_day)
        .await
        .unwrap();

    // The wrong kind does not use the token up.
    assert_eq!(
        store
            .consume_token(TokenKind::PasswordReset, &verify)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .consume_token(TokenKind::EmailVerification, &verify)
            .await
            .unwrap(),
        Some(user.id)
    );
    assert_eq!(
        store
            .consume_token(TokenKind::EmailVerification, &verify)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .consume_token(TokenKind::PasswordReset, &reset)
            .await
            .unwrap(),
        Some(user.id)
    );
    assert_eq!(
        store
            .consume_token(TokenKind::PasswordReset, &reset)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .consume_token(TokenKind::PasswordReset, &token_hash())
            .await
            .unwrap(),
        None
    );

    // The same hash cannot be stored twice.
    assert!(
        store
            .create_token(user.id, TokenKind::PasswordReset, &reset, in_a_day)
            .await
            .is_err()
    );
}

async fn expired_token_is_refused(db: &TestDb) {
    let store = open(db).await;
    let user = store
        .create_user(new_user("liam@example.com"))
        .await
        .unwrap();
    let expired = token_hash();
    store
        .create_token(
            user.id,
            TokenKind::EmailVerification,
            &expired,
            Utc::now() - TimeDelta::seconds(1),
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .consume_token(TokenKind::EmailVerification, &expired)
            .await
            .unwrap(),
        None
    );

    let short = token_hash();
    store
        .create_token(
            user.id,
            TokenKind::EmailVerification,
            &short,
            Utc::now() + TimeDelta::milliseconds(200),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        store
            .consume_token(TokenKind::EmailVerification, &short)
            .await
            .unwrap(),
        None
    );
}

async fn concurrent_token_use_succeeds_once(db: &TestDb) {
    let store = open(db).await;
    let user = store
        .create_user(new_user("mia@example.com"))
        .await
        .unwrap();
    let hash = token_hash();
    store
        .create_token(
            user.id,
            TokenKind::PasswordReset,
            &hash,
            Utc::now() + TimeDelta::hours(1),
        )
        .await
        .unwrap();
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let store = Arc::clone(&store);
            let hash = hash.clone();
            tokio::spawn(async move { store.consume_token(TokenKind::PasswordReset, &hash).await })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        if let Some(id) = task.await.unwrap().unwrap() {
            assert_eq!(id, user.id);
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
}

async fn invalidate_marks_only_that_kind_used(db: &TestDb) {
    let store = open(db).await;
    let user = store
        .create_user(new_user("noah@example.com"))
        .await
        .unwrap();
    let other = store
        .create_user(new_user("olga@example.com"))
        .await
        .unwrap();
    let later = Utc::now() + TimeDelta::hours(1);
    let (v1, v2, r1, o1) = (token_hash(), token_hash(), token_hash(), token_hash());
    store
        .create_token(user.id, TokenKind::EmailVerification, &v1, later)
        .await
        .unwrap();
    store
        .create_token(user.id, TokenKind::EmailVerification, &v2, later)
        .await
        .unwrap();
    store
        .create_token(user.id, TokenKind::PasswordReset, &r1, later)
        .await
        .unwrap();
    store
        .create_token(other.id, TokenKind::EmailVerification, &o1, later)
        .await
        .unwrap();

    assert_eq!(
        store
            .invalidate_tokens(user.id, TokenKind::EmailVerification)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .invalidate_tokens(user.id, TokenKind::EmailVerification)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .consume_token(TokenKind::EmailVerification, &v1)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .consume_token(TokenKind::EmailVerification, &v2)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .consume_token(TokenKind::PasswordReset, &r1)
            .await
            .unwrap(),
        Some(user.id)
    );
    assert_eq!(
        store
            .consume_token(TokenKind::EmailVerification, &o1)
            .await
            .unwrap(),
        Some(other.id)
    );
}

async fn purge_deletes_only_expired_tokens(db: &TestDb) {
    let store = open(db).await;
    let user = store
        .create_user(new_user("pia@example.com"))
        .await
        .unwrap();
    let past = Utc::now() - TimeDelta::minutes(1);
    let future = Utc::now() + TimeDelta::hours(1);
    let (expired, expired_used, live, live_used) =
        (token_hash(), token_hash(), token_hash(), token_hash());
    store
        .create_token(user.id, TokenKind::PasswordReset, &expired, past)
        .await
        .unwrap();
    store
        .create_token(user.id, TokenKind::PasswordReset, &expired_used, past)
        .await
        .unwrap();
    store
        .create_token(user.id, TokenKind::EmailVerification, &live, future)
        .await
        .unwrap();
    store
        .create_token(user.id, TokenKind::EmailVerification, &live_used, future)
        .await
        .unwrap();
    store
        .invalidate_tokens(user.id, TokenKind::PasswordReset)
        .await
        .unwrap();
    assert_eq!(
        store
            .consume_token(TokenKind::EmailVerification, &live_used)
            .await
            .unwrap(),
        Some(user.id)
    );

    assert_eq!(store.purge_expired_tokens().await.unwrap(), 2);
    assert_eq!(store.purge_expired_tokens().await.unwrap(), 0);
    assert_eq!(db.count_rows("verification_tokens").await, 2);
    assert_eq!(
        store
            .consume_token(TokenKind::EmailVerification, &live)
            .await
            .unwrap(),
        Some(user.id)
    );
}

async fn token_purger_task_purges_in_background(db: &TestDb) {
    let store = open(db).await;
    let user = store
        .create_user(new_user("quinn@example.com"))
        .await
        .unwrap();
    let past = Utc::now() - TimeDelta::minutes(1);
    store
        .create_token(user.id, TokenKind::PasswordReset, &token_hash(), past)
        .await
        .unwrap();
    assert_eq!(db.count_rows("verification_tokens").await, 1);

    let purger = store::spawn_token_purger(
        &Backend::current().unwrap(),
        Arc::clone(&store),
        Duration::from_secs(3600),
        None,
    );
    let mut remaining = 1;
    for _ in 0..100 {
        remaining = db.count_rows("verification_tokens").await;
        if remaining == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    purger.abort();
    assert_eq!(
        remaining, 0,
        "the purger's first run removes expired tokens"
    );
}

async fn two_factor_secret_round_trips_and_disable_clears_codes(db: &TestDb) {
    let store = open(db).await;
    let user = store
        .create_user(new_user("rosa@example.com"))
        .await
        .unwrap();
    let secret: Vec<u8> = (0..=255).collect(); // every byte value, as ciphertext may hold

    store
        .set_two_factor(user.id, Some(secret.clone()))
        .await
        .unwrap();
    let enabled = reload(store.as_ref(), user.id).await;
    assert!(enabled.two_factor_enabled);
    assert_eq!(
        enabled.two_factor_secret.as_deref(),
        Some(secret.as_slice())
    );

    store
        .replace_recovery_codes(user.id, &["code-a".into(), "code-b".into()])
        .await
        .unwrap();
    assert_eq!(db.count_rows("recovery_codes").await, 2);

    store.set_two_factor(user.id, None).await.unwrap();
    let disabled = reload(store.as_ref(), user.id).await;
    assert!(!disabled.two_factor_enabled);
    assert_eq!(disabled.two_factor_secret, None);
    assert_eq!(db.count_rows("recovery_codes").await, 0);
    assert!(
        !store
            .consume_recovery_code(user.id, "code-a")
            .await
            .unwrap()
    );
}

async fn recovery_codes_are_used_once(db: &TestDb) {
    let store = open(db).await;
    let user = store
        .create_user(new_user("sam@example.com"))
        .await
        .unwrap();
    let other = store
        .create_user(new_user("tess@example.com"))
        .await
        .unwrap();
    let codes: Vec<String> = ["h1", "h2", "h3", "h2"].map(String::from).to_vec();
    store.replace_recovery_codes(user.id, &codes).await.unwrap();
    store
        .replace_recovery_codes(other.id, &["h1".into()])
        .await
        .unwrap();
    let unused = |id| {
        let store = Arc::clone(&store);
        async move { store.count_unused_recovery_codes(id).await.unwrap() }
    };
    assert_eq!(unused(user.id).await, 3, "duplicates collapse");
    assert_eq!(unused(other.id).await, 1);

    assert!(store.consume_recovery_code(user.id, "h2").await.unwrap());
    assert!(!store.consume_recovery_code(user.id, "h2").await.unwrap());
    assert_eq!(unused(user.id).await, 2, "a used code is no longer counted");
    assert_eq!(unused(other.id).await, 1, "another user's count stays");
    assert!(
        !store
            .consume_recovery_code(user.id, "unknown")
            .await
            .unwrap()
    );
    // Another user's code is not this user's.
    assert!(store.consume_recovery_code(other.id, "h1").await.unwrap());
    assert!(store.consume_recovery_code(user.id, "h1").await.unwrap());

    // Concurrent attempts with the same code: exactly one wins.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.consume_recovery_code(user.id, "h3").await })
        })
        .collect();
    let mut wins = 0;
    for task in tasks {
        wins += usize::from(task.await.unwrap().unwrap());
    }
    assert_eq!(wins, 1);

    // Replacing invalidates the old set.
    store
        .replace_recovery_codes(user.id, &["n1".into()])
        .await
        .unwrap();
    store
        .replace_recovery_codes(user.id, &["n2".into()])
        .await
        .unwrap();
    assert_eq!(
        unused(user.id).await,
        1,
        "a replacement counts only its own"
    );
    assert!(!store.consume_recovery_code(user.id, "n1").await.unwrap());
    assert!(store.consume_recovery_code(user.id, "n2").await.unwrap());
    assert_eq!(unused(user.id).await, 0);
    assert_eq!(
        unused(UserId::random()).await,
        0,
        "an unknown account has none"
    );
}

async fn migrations_are_idempotent_and_data_survives_reconnect(db: &TestDb) {
    store::migrate(&storage_url(db)).await.unwrap();
    let first = open(db).await;
    let user = first
        .create_user(new_user("uma@example.com"))
        .await
        .unwrap();
    drop(first);

    store::migrate(&storage_url(db)).await.unwrap();
    let second = open(db).await;
    second.ping().await.unwrap();
    assert_eq!(reload(second.as_ref(), user.id).await, user);

    // Several instances starting at once against one database.
    let url = storage_url(db);
    let (a, b) = tokio::join!(connect(&url, 2), connect(&url, 2));
    assert!(a.is_ok() && b.is_ok(), "{:?} {:?}", a.err(), b.err());
}

async fn admin_commands_report_what_they_did(db: &TestDb) {
    let store = open(db).await;
    let s = store.as_ref();
    let vera = store
        .create_user(new_user("vera@example.com"))
        .await
        .unwrap();
    let walt = store
        .create_user(new_user("walt@example.com"))
        .await
        .unwrap();
    let run = |cmd| run_user_command(s, cmd);
    let grant = |email: &str, role: &str| UserCommand::GrantRole {
        email: email.into(),
        role: role.into(),
    };

    assert_eq!(
        run(grant("Vera@Example.com", "admin")).await.unwrap(),
        "granted role admin to vera@example.com"
    );
    assert_eq!(
        run(grant("vera@example.com", "admin")).await.unwrap(),
        "vera@example.com already has role admin"
    );
    run(grant("vera@example.com", "billing")).await.unwrap();
    assert_eq!(
        run(UserCommand::RevokeRole {
            email: "vera@example.com".into(),
            role: "billing".into()
        })
        .await
        .unwrap(),
        "revoked role billing from vera@example.com"
    );
    assert_eq!(
        run(UserCommand::RevokeRole {
            email: "vera@example.com".into(),
            role: "billing".into()
        })
        .await
        .unwrap(),
        "vera@example.com does not have role billing"
    );

    assert_eq!(
        run(UserCommand::Deactivate {
            email: "walt@example.com".into()
        })
        .await
        .unwrap(),
        "deactivated walt@example.com"
    );
    assert!(!reload(s, walt.id).await.is_active);
    assert_eq!(
        run(UserCommand::Deactivate {
            email: "walt@example.com".into()
        })
        .await
        .unwrap(),
        "walt@example.com is already deactivated"
    );

    for _ in 0..3 {
        store
            .record_failed_login(vera.id, 3, Duration::from_secs(600))
            .await
            .unwrap();
    }
    store.mark_verified(vera.id).await.unwrap();
    let table = run(UserCommand::List { json: false }).await.unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "ID", "EMAIL", "VERIFIED", "ACTIVE", "2FA", "LOCKED", "ROLES"
        ]
    );
    let vera_line: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(vera_line[0], vera.id.to_string());
    assert_eq!(&vera_line[1..5], ["vera@example.com", "yes", "yes", "no"]);
    assert_eq!(vera_line[5], "until");
    assert_eq!(vera_line.last(), Some(&"admin"));
    let walt_line: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(
        &walt_line[1..],
        ["walt@example.com", "no", "no", "no", "no", "-"]
    );
    assert_eq!(lines[3], "2 users");
    // Columns line up: every email starts at the same offset.
    let offset = lines[0].find("EMAIL").unwrap();
    assert_eq!(lines[1].find("vera@"), Some(offset));
    assert_eq!(lines[2].find("walt@"), Some(offset));

    let unlocked = run(UserCommand::Unlock {
        email: "vera@example.com".into(),
    })
    .await
    .unwrap();
    assert!(
        unlocked.starts_with("unlocked vera@example.com (was locked until ")
            && unlocked.ends_with(" after 3 failed attempts)"),
        "{unlocked}"
    );
    assert!(!reload(s, vera.id).await.is_locked(Utc::now()));
    assert_eq!(
        run(UserCommand::Unlock {
            email: "vera@example.com".into()
        })
        .await
        .unwrap(),
        "vera@example.com was not locked; failed attempts reset (was 0)"
    );
    assert_eq!(
        run(UserCommand::Activate {
            email: "walt@example.com".into()
        })
        .await
        .unwrap(),
        "activated walt@example.com"
    );
    assert!(reload(s, walt.id).await.is_active);

    assert!(matches!(
        run(UserCommand::Activate { email: "nobody@example.com".into() }).await,
        Err(AdminError::NoSuchUser(e)) if e.as_str() == "nobody@example.com"
    ));
    assert!(matches!(
        run(UserCommand::Unlock {
            email: "not an email".into()
        })
        .await,
        Err(AdminError::InvalidEmail { .. })
    ));
    assert!(matches!(
        run(grant("vera@example.com", "a,b")).await,
        Err(AdminError::InvalidRole(_))
    ));
    assert_eq!(reload(s, vera.id).await.roles, vec!["admin"]);
}

/// Looks up every id from a fresh multi-thread runtime on its own OS thread, within a
/// deadline (a connection tied to a runtime that is idle or gone would hang or fail).
fn find_all_from_another_runtime(store: &Arc<dyn UserStore>, ids: &[UserId]) -> usize {
    let store = Arc::clone(store);
    let ids = ids.to_vec();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let lookups = async {
                let mut found = 0;
                for id in ids {
                    found += usize::from(store.find_by_id(id).await.unwrap().is_some());
                }
                store.ping().await.unwrap();
                found
            };
            tokio::time::timeout(Duration::from_secs(20), lookups)
                .await
                .expect("store calls from another runtime hung")
        })
    })
    .join()
    .unwrap()
}

/// The gateway builds the store on a dedicated runtime and calls it from others
/// (Pingora's). A calling runtime that is busy, idle or gone must not break or stall
/// the calls made from elsewhere.
fn store_built_on_one_runtime_serves_others(kind: Kind) {
    let backend = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let Some(db) = backend.block_on(TestDb::of(kind)) else {
        eprintln!("skipped: {} is not set", db::POSTGRES_URL_VAR);
        return;
    };
    let store = backend.block_on(connect(&storage_url(&db), 4)).unwrap();

    // A single-threaded caller issues enough concurrent calls to make the pool grow.
    let caller = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ids = caller.block_on(async {
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    store
                        .create_user(new_user(&format!("user{i}@example.com")))
                        .await
                        .map(|u| u.id)
                })
            })
            .collect();
        let mut ids = Vec::new();
        for task in tasks {
            ids.push(task.await.unwrap().unwrap());
        }
        ids
    });

    // That caller now sits idle (nothing drives it), then goes away entirely; other
    // runtimes keep working in both cases.
    assert_eq!(find_all_from_another_runtime(&store, &ids), 16);
    drop(caller);
    assert_eq!(find_all_from_another_runtime(&store, &ids), 16);

    drop(store);
    drop(db);
    drop(backend);
}

#[test]
fn sqlite_store_built_on_one_runtime_serves_others() {
    store_built_on_one_runtime_serves_others(Kind::Sqlite);
}

#[test]
fn postgres_store_built_on_one_runtime_serves_others() {
    store_built_on_one_runtime_serves_others(Kind::Postgres);
}

#[tokio::test]
async fn unreachable_postgres_is_unavailable() {
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    let result = connect(
        &storage("postgres://portcullis:secret-pw@127.0.0.1:1/portcullis"),
        2,
    )
    .await;
    match result {
        Err(StoreError::Unavailable(message)) => {
            assert!(!message.contains("secret-pw"), "{message}");
        }
        Err(other) => panic!("expected Unavailable, got {other:?}"),
        Ok(_) => panic!("connected to a closed port"),
    }
}

#[tokio::test]
async fn unsupported_url_is_refused() {
    let err = "mysql://root:hunter2@localhost/db"
        .parse::<StorageUrl>()
        .unwrap_err();
    assert!(err.contains("neither sqlite"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[tokio::test]
async fn in_memory_sqlite_keeps_data_across_calls() {
    let store = connect(&storage("sqlite::memory:"), 3).await.unwrap();
    let user = store
        .create_user(new_user("xena@example.com"))
        .await
        .unwrap();
    for _ in 0..5 {
        assert!(store.find_by_id(user.id).await.unwrap().is_some());
    }
}

/// 20 claims at once for one account with a threshold of 5.
async fn twenty_claims_at_once(store: &Arc<dyn UserStore>, user: UserId) -> Vec<AttemptClaim> {
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let store = Arc::clone(store);
            tokio::spawn(async move { store.claim_login_attempt(user, 5, LOCK_FOR).await })
        })
        .collect();
    let mut claims = Vec::new();
    for task in tasks {
        claims.push(task.await.unwrap().unwrap());
    }
    claims
}

const LOCK_FOR: Duration = Duration::from_secs(600);

/// Resolves `n` granted guesses of `user` at once with `outcome`.
async fn resolve_at_once(
    store: &Arc<dyn UserStore>,
    user: UserId,
    outcome: AttemptOutcome,
    n: usize,
) -> Vec<FailedLogin> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let store = Arc::clone(store);
            tokio::spawn(async move {
                store
                    .resolve_login_attempt(user, outcome, 5, LOCK_FOR)
                    .await
            })
        })
        .collect();
    let mut done = Vec::new();
    for task in tasks {
        done.push(task.await.unwrap().unwrap());
    }
    done
}

async fn concurrent_claims_grant_only_the_allowed_guesses(db: &TestDb) {
    let store = open(db).await;
    let user = store
        .create_user(new_user("claims@example.com"))
        .await
        .unwrap();
    // Right guesses: five are checked at a time, the rest are told to wait; none locks,
    // and once they are resolved there is room again.
    for round in 0..2 {
        let claims = twenty_claims_at_once(&store, user.id).await;
        let granted: BTreeSet<u32> = claims
            .iter()
            .filter_map(|c| match c {
                AttemptClaim::Granted { attempt, .. } => Some(*attempt),
                _ => None,
            })
            .collect();
        assert_eq!(granted, (1..=5).collect::<BTreeSet<u32>>(), "round {round}");
        let busy = claims.iter().filter(|c| **c == AttemptClaim::Busy).count();
        assert_eq!(busy, 15, "round {round}: {claims:?}");
        assert!(
            !reload(store.as_ref(), user.id)
                .await
                .is_locked(chrono::Utc::now())
        );
        let done = resolve_at_once(&store, user.id, AttemptOutcome::Right, 5).await;
        assert!(done.iter().all(|d| !d.newly_locked && d.attempts == 0));
    }
    // Wrong guesses: five are checked, and the fifth failure locks, exactly once.
    twenty_claims_at_once(&store, user.id).await;
    let done = resolve_at_once(&store, user.id, AttemptOutcome::Wrong, 5).await;
    assert_eq!(done.iter().filter(|d| d.newly_locked).count(), 1);
    let reloaded = reload(store.as_ref(), user.id).await;
    assert_eq!(reloaded.failed_login_attempts, 5);
    assert!(reloaded.is_locked(chrono::Utc::now()));
    let claims = twenty_claims_at_once(&store, user.id).await;
    assert!(
        claims
            .iter()
            .all(|c| matches!(c, AttemptClaim::Locked { until } if *until > chrono::Utc::now()))
    );

    // A success clears it all.
    store.record_successful_login(user.id).await.unwrap();
    assert_eq!(
        store
            .claim_login_attempt(user.id, 5, LOCK_FOR)
            .await
            .unwrap(),
        AttemptClaim::Granted {
            attempt: 1,
            last: false
        }
    );
    for call in [
        store
            .claim_login_attempt(UserId::random(), 5, LOCK_FOR)
            .await
            .map(drop),
        store
            .resolve_login_attempt(UserId::random(), AttemptOutcome::Wrong, 5, LOCK_FOR)
            .await
            .map(drop),
    ] {
        assert!(matches!(call, Err(StoreError::NotFound)));
    }
}

async fn resolutions_decide_the_lock(db: &TestDb) {
    let store = open(db).await;
    let user = store
        .create_user(new_user("release@example.com"))
        .await
        .unwrap();
    for n in 1..=3 {
        let claim = store
            .claim_login_attempt(user.id, 3, LOCK_FOR)
            .await
            .unwrap();
        assert_eq!(
            claim,
            AttemptClaim::Granted {
                attempt: n,
                last: n == 3
            }
        );
    }
    assert_eq!(
        store
            .claim_login_attempt(user.id, 3, LOCK_FOR)
            .await
            .unwrap(),
        AttemptClaim::Busy,
        "the threshold is full of guesses in flight, none wrong yet"
    );
    assert!(
        !reload(store.as_ref(), user.id)
            .await
            .is_locked(chrono::Utc::now())
    );
    // Given back: room for one more, and still no failure.
    store
        .resolve_login_attempt(user.id, AttemptOutcome::NotAGuess, 3, LOCK_FOR)
        .await
        .unwrap();
    assert_eq!(
        reload(store.as_ref(), user.id).await.failed_login_attempts,
        0
    );
    assert!(matches!(
        store
            .claim_login_attempt(user.id, 3, LOCK_FOR)
            .await
            .unwrap(),
        AttemptClaim::Granted { attempt: 3, .. }
    ));
    let mut locked = Vec::new();
    for _ in 0..3 {
        let done = store
            .resolve_login_attempt(user.id, AttemptOutcome::Wrong, 3, LOCK_FOR)
            .await
            .unwrap();
        locked.push(done.newly_locked);
    }
    assert_eq!(locked, [false, false, true]);
    let after = reload(store.as_ref(), user.id).await;
    assert_eq!(after.failed_login_attempts, 3);
    assert!(after.is_locked(chrono::Utc::now()));
}

async fn claims_after_an_expired_lock_start_afresh(db: &TestDb) {
    let store = open(db).await;
    let user = store
        .create_user(new_user("expired-claim@example.com"))
        .await
        .unwrap();
    let brief = Duration::from_millis(200);
    store.claim_login_attempt(user.id, 1, brief).await.unwrap();
    let done = store
        .resolve_login_attempt(user.id, AttemptOutcome::Wrong, 1, brief)
        .await
        .unwrap();
    assert!(done.newly_locked);
    assert!(matches!(
        store.claim_login_attempt(user.id, 1, brief).await.unwrap(),
        AttemptClaim::Locked { .. }
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        store.claim_login_attempt(user.id, 2, brief).await.unwrap(),
        AttemptClaim::Granted {
            attempt: 1,
            last: false
        }
    );
}

async fn an_account_and_its_token_are_stored_together(db: &TestDb) {
    let store = open(db).await;
    let token = |hash: &str| NewToken {
        kind: TokenKind::EmailVerification,
        token_hash: hash.to_owned(),
        expires_at: Utc::now() + chrono::Duration::hours(1),
    };
    let first = token_hash();
    let user = store
        .create_user_with_token(new_user("together@example.com"), token(&first))
        .await
        .unwrap();
    assert_eq!(
        reload(store.as_ref(), user.id).await.email.as_str(),
        "together@example.com"
    );
    // A duplicate address stores neither the account nor its token.
    let second = token_hash();
    assert!(matches!(
        store
            .create_user_with_token(new_user("TOGETHER@example.com"), token(&second))
            .await,
        Err(StoreError::DuplicateEmail)
    ));
    assert_eq!(db.count_rows("users").await, 1);
    assert_eq!(db.count_rows("verification_tokens").await, 1);
    // A token that cannot be stored (its hash is taken) leaves no account behind.
    assert!(
        store
            .create_user_with_token(new_user("alone@example.com"), token(&first))
            .await
            .is_err()
    );
    assert_eq!(db.count_rows("users").await, 1);
    assert!(
        store
            .find_by_email(&Email::parse("alone@example.com").unwrap())
            .await
            .unwrap()
            .is_none()
    );
    // Replacing: the new token works, the old one no longer; for no user, NotFound.
    let third = token_hash();
    store.replace_token(user.id, token(&third)).await.unwrap();
    let kind = TokenKind::EmailVerification;
    assert_eq!(store.consume_token(kind, &first).await.unwrap(), None);
    assert_eq!(
        store.consume_token(kind, &third).await.unwrap(),
        Some(user.id)
    );
    assert!(matches!(
        store
            .replace_token(UserId::random(), token(&token_hash()))
            .await,
        Err(StoreError::NotFound)
    ));

    // Proving the address: the token, the flag and the change feed together, once.
    let reset = token_hash();
    let reset_token = NewToken {
        kind: TokenKind::PasswordReset,
        ..token(&reset)
    };
    store.replace_token(user.id, reset_token).await.unwrap();
    assert_eq!(
        store.verify_address(&reset).await.unwrap(),
        None,
        "another kind"
    );
    let fourth = token_hash();
    store.replace_token(user.id, token(&fourth)).await.unwrap();
    assert!(!reload(store.as_ref(), user.id).await.is_verified);
    assert_eq!(store.verify_address(&fourth).await.unwrap(), Some(user.id));
    assert!(reload(store.as_ref(), user.id).await.is_verified);
    let feed = store.recent_user_changes().await.unwrap();
    assert!(
        feed.iter()
            .any(|e| e.user_id == user.id && e.change == UserChange::Updated)
    );
    assert_eq!(
        store.verify_address(&fourth).await.unwrap(),
        None,
        "used up"
    );
}

async fn change_feed_lists_recent_changes_in_order(db: &TestDb) {
    let store = open(db).await;
    let a = store
        .create_user(new_user("feed-a@example.com"))
        .await
        .unwrap();
    let b = store
        .create_user(new_user("feed-b@example.com"))
        .await
        .unwrap();
    assert!(store.recent_user_changes().await.unwrap().is_empty());
    store
        .record_user_change(a.id, UserChange::Updated)
        .await
        .unwrap();
    store
        .record_user_change(b.id, UserChange::SessionsEnded)
        .await
        .unwrap();
    let events = store.recent_user_changes().await.unwrap();
    assert_eq!(events.len(), 2);
    assert!(events[0].id < events[1].id);
    let age = Utc::now() - events[1].changed_at;
    assert!(
        age.num_seconds().abs() < 5,
        "changed_at by the database's clock: {age}"
    );
    assert_eq!(
        (events[0].user_id, events[0].change),
        (a.id, UserChange::Updated)
    );
    assert_eq!(
        (events[1].user_id, events[1].change),
        (b.id, UserChange::SessionsEnded)
    );
    // Recent entries are kept; only old ones are purged.
    assert_eq!(store.purge_user_changes().await.unwrap(), 0);
    assert_eq!(store.recent_user_changes().await.unwrap().len(), 2);

    // Operator commands write to the feed.
    store.grant_role(a.id, "ops").await.unwrap();
    run_user_command(
        store.as_ref(),
        UserCommand::RevokeRole {
            email: "feed-a@example.com".into(),
            role: "ops".into(),
        },
    )
    .await
    .unwrap();
    let events = store.recent_user_changes().await.unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(events[2].user_id, a.id);
}

async fn unknown_address_claims_follow_the_account_rule(db: &TestDb) {
    let store = open(db).await;
    let key = "a".repeat(64);
    let lock_for = Duration::from_millis(300);
    let claim_all = || {
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let store = Arc::clone(&store);
                let key = key.clone();
                tokio::spawn(async move {
                    store
                        .claim_unknown_login_attempt(&key, 5, lock_for)
                        .await
                        .unwrap()
                })
            })
            .collect();
        futures_util::future::join_all(tasks)
    };
    let mut granted = BTreeSet::new();
    let mut busy = 0;
    for claim in claim_all().await {
        match claim.unwrap() {
            AttemptClaim::Granted { attempt, .. } => {
                granted.insert(attempt);
            }
            AttemptClaim::Busy => busy += 1,
            AttemptClaim::Locked { .. } => panic!("locked before any guess was found wrong"),
        }
    }
    assert_eq!(granted, (1..=5).collect::<BTreeSet<u32>>());
    assert_eq!(busy, 15);
    let mut newly_locked = 0;
    for _ in 0..5 {
        let done = store
            .resolve_unknown_login_attempt(&key, 5, lock_for)
            .await
            .unwrap();
        newly_locked += usize::from(done.newly_locked);
    }
    assert_eq!(newly_locked, 1);
    for claim in claim_all().await {
        assert!(matches!(claim.unwrap(), AttemptClaim::Locked { .. }));
    }
    // Other addresses are counted apart.
    assert_eq!(
        store
            .claim_unknown_login_attempt(&"b".repeat(64), 5, lock_for)
            .await
            .unwrap(),
        AttemptClaim::Granted {
            attempt: 1,
            last: false
        }
    );
    // An expired lock starts a fresh series, as for an account.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        store
            .claim_unknown_login_attempt(&key, 5, lock_for)
            .await
            .unwrap(),
        AttemptClaim::Granted {
            attempt: 1,
            last: false
        }
    );
    // Counts in use are not purged.
    assert_eq!(store.purge_unknown_login_attempts().await.unwrap(), 0);
}

fn passkey(user: UserId, credential_id: &str, name: &str) -> StoredPasskey {
    StoredPasskey {
        id: portcullis::domain::PasskeyId::random(),
        user_id: user,
        credential_id: credential_id.into(),
        name: name.into(),
        credential: format!("{{\"cred\":\"{credential_id}\"}}"),
        sign_count: 3,
        backup_eligible: true,
        backup_state: false,
        created_at: {
            use chrono::DurationRound;
            Utc::now()
                .duration_trunc(TimeDelta::microseconds(1))
                .unwrap()
        },
        last_used_at: None,
    }
}

async fn passkeys_are_kept_per_user_and_used_only_over_their_counter(db: &TestDb) {
    let store = open(db).await;
    let ada = store
        .create_user(new_user("ada@example.com"))
        .await
        .unwrap();
    let bob = store
        .create_user(new_user("bob@example.com"))
        .await
        .unwrap();
    let laptop = passkey(ada.id, "cred-laptop", "Laptop");
    let phone = passkey(ada.id, "cred-phone", "Phone");
    assert!(store.add_passkey(&laptop).await.unwrap());
    assert!(store.add_passkey(&phone).await.unwrap());
    // A credential id belongs to one account only.
    assert!(
        !store
            .add_passkey(&passkey(bob.id, "cred-laptop", "Stolen"))
            .await
            .unwrap()
    );
    assert!(matches!(
        store
            .add_passkey(&passkey(UserId::random(), "cred-x", "Nobody"))
            .await,
        Err(StoreError::NotFound)
    ));

    let listed = store.list_passkeys(ada.id).await.unwrap();
    assert_eq!(
        listed,
        vec![laptop.clone(), phone.clone()],
        "oldest first, as stored"
    );
    assert!(store.list_passkeys(bob.id).await.unwrap().is_empty());
    assert_eq!(
        store.find_passkey("cred-phone").await.unwrap(),
        Some(phone.clone())
    );
    assert_eq!(store.find_passkey("cred-none").await.unwrap(), None);

    // Only the owner renames or removes.
    assert!(
        !store
            .rename_passkey(bob.id, phone.id, "Mine")
            .await
            .unwrap()
    );
    assert!(
        store
            .rename_passkey(ada.id, phone.id, "Work phone")
            .await
            .unwrap()
    );
    assert!(!store.remove_passkey(bob.id, phone.id).await.unwrap());

    // A use is recorded over the counter it was checked against, once.
    let used = PasskeyUse {
        id: laptop.id,
        previous_sign_count: 3,
        sign_count: 4,
        backup_state: true,
        credential: "{\"cred\":\"updated\"}".into(),
    };
    assert!(store.record_passkey_use(&used).await.unwrap());
    assert!(
        !store.record_passkey_use(&used).await.unwrap(),
        "the counter moved on"
    );
    let laptop_now = store.find_passkey("cred-laptop").await.unwrap().unwrap();
    assert_eq!(laptop_now.sign_count, 4);
    assert!(laptop_now.backup_state && laptop_now.backup_eligible);
    assert_eq!(laptop_now.credential, "{\"cred\":\"updated\"}");
    assert!(laptop_now.last_used_at.is_some());

    assert!(store.remove_passkey(ada.id, phone.id).await.unwrap());
    assert!(!store.remove_passkey(ada.id, phone.id).await.unwrap());
    assert_eq!(store.list_passkeys(ada.id).await.unwrap().len(), 1);

    // The operator's 2FA reset removes passkeys too.
    let report = run_user_command(
        store.as_ref(),
        UserCommand::ResetTwoFactor {
            email: "ada@example.com".into(),
        },
    )
    .await
    .unwrap();
    assert!(report.contains("1 passkey removed"), "{report}");
    assert!(store.list_passkeys(ada.id).await.unwrap().is_empty());
}

/// `user create` stores a proven address and its roles in one step; `user delete` takes the
/// account and everything hanging from it, and writes the feed entry that ends its sessions.
async fn operators_create_vouched_accounts_and_delete_them_whole(db: &TestDb) {
    let store = open(db).await;
    let s = store.as_ref();
    let create = |address: &str, roles: &[&str]| UserCommand::Create {
        email: address.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        password: InitialPassword::Unusable("$2b$04$unusable.hash.for.tests".into()),
    };
    let out = run_user_command(s, create("Nora@Example.com", &["staff", "ops", "staff"]))
        .await
        .unwrap();
    assert!(out.starts_with("created nora@example.com"), "{out}");
    assert!(out.contains("Forgot password"), "{out}");
    let nora = store
        .find_by_email(&email("nora@example.com"))
        .await
        .unwrap()
        .expect("created");
    assert!(nora.is_verified && nora.is_active);
    assert_eq!(nora.roles, ["ops", "staff"]);
    assert_eq!(nora.password_hash, "$2b$04$unusable.hash.for.tests");

    let taken = run_user_command(s, create("NORA@example.com", &[])).await;
    assert!(matches!(taken, Err(AdminError::Taken(_))), "{taken:?}");
    let bad_role = run_user_command(s, create("role@example.com", &["a,b"])).await;
    assert!(
        matches!(bad_role, Err(AdminError::InvalidRole(_))),
        "{bad_role:?}"
    );
    assert!(
        s.find_by_email(&email("role@example.com"))
            .await
            .unwrap()
            .is_none(),
        "a refused role creates nothing"
    );

    // Everything an account holds goes with it.
    s.set_two_factor(nora.id, Some(vec![1, 2, 3]))
        .await
        .unwrap();
    s.replace_recovery_codes(nora.id, &["code-hash".into()])
        .await
        .unwrap();
    s.create_token(
        nora.id,
        TokenKind::PasswordReset,
        &token_hash(),
        Utc::now() + TimeDelta::hours(1),
    )
    .await
    .unwrap();
    assert!(
        s.add_passkey(&passkey(nora.id, "nora-key", "Key"))
            .await
            .unwrap()
    );
    let keep = s.create_user(new_user("keep@example.com")).await.unwrap();
    s.grant_role(keep.id, "staff").await.unwrap();

    let out = run_user_command(
        s,
        UserCommand::RevokeSessions {
            email: "nora@example.com".into(),
        },
    )
    .await
    .unwrap();
    assert_eq!(out, "ending every session of nora@example.com");
    let out = run_user_command(
        s,
        UserCommand::Delete {
            email: "Nora@example.com".into(),
        },
    )
    .await
    .unwrap();
    assert!(out.starts_with("deleted nora@example.com"), "{out}");
    assert!(s.find_by_id(nora.id).await.unwrap().is_none());
    // `keep` holds one role and nothing else.
    for (table, kept) in [
        ("user_roles", 1),
        ("verification_tokens", 0),
        ("recovery_codes", 0),
        ("passkeys", 0),
    ] {
        let left = db.scalar(&format!("SELECT COUNT(*) FROM {table}")).await;
        assert_eq!(left, kept, "{table} keeps rows of the deleted account");
    }
    assert_eq!(
        reload(s, keep.id).await.roles,
        ["staff"],
        "others keep theirs"
    );
    let ended: Vec<UserChange> = s
        .recent_user_changes()
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.user_id == nora.id)
        .map(|e| e.change)
        .collect();
    assert_eq!(
        ended,
        [UserChange::SessionsEnded, UserChange::SessionsEnded]
    );

    let gone = run_user_command(
        s,
        UserCommand::Delete {
            email: "nora@example.com".into(),
        },
    )
    .await;
    assert!(matches!(gone, Err(AdminError::NoSuchUser(_))), "{gone:?}");
}

fn invitation(address: &str, hash: &str, roles: &[&str], ttl: TimeDelta) -> NewInvitation {
    NewInvitation {
        email: email(address),
        token_hash: hash.to_owned(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        created_by: None,
        expires_at: Utc::now() + ttl,
    }
}

/// Ten uses of one invitation at once make one account, verified, with the roles; another
/// address, or an address already taken, spends nothing.
async fn invitations_are_used_once_for_their_address_only(db: &TestDb) {
    let store = open(db).await;
    let hash = token_hash();
    let made = store
        .create_invitation(invitation(
            "inv@example.com",
            &hash,
            &["ops", "admin"],
            TimeDelta::days(7),
        ))
        .await
        .unwrap();
    assert_eq!(made.roles, vec!["admin", "ops"]);
    assert_eq!(
        store.find_invitation(&hash).await.unwrap().unwrap().id,
        made.id
    );
    let other = store
        .accept_invitation(&hash, new_user("other@example.com"))
        .await
        .unwrap();
    assert!(other.is_none(), "another address");
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let (store, hash) = (Arc::clone(&store), hash.clone());
            tokio::spawn(async move {
                store
                    .accept_invitation(&hash, new_user("inv@example.com"))
                    .await
            })
        })
        .collect();
    let mut created = Vec::new();
    for task in tasks {
        if let Some(user) = task.await.unwrap().unwrap() {
            created.push(user);
        }
    }
    assert_eq!(created.len(), 1);
    let user = reload(&*store, created[0].id).await;
    assert!(user.is_verified);
    assert_eq!(user.roles, vec!["admin", "ops"]);
    assert!(store.find_invitation(&hash).await.unwrap().is_none());
    let listed = store.list_invitations().await.unwrap();
    assert_eq!(listed[0].state(Utc::now()), InvitationState::Used);

    // A taken address leaves the invitation usable (for once the account is gone).
    let second = token_hash();
    store
        .create_invitation(invitation(
            "inv@example.com",
            &second,
            &[],
            TimeDelta::days(7),
        ))
        .await
        .unwrap();
    let taken = store
        .accept_invitation(&second, new_user("inv@example.com"))
        .await;
    assert!(
        matches!(taken, Err(StoreError::DuplicateEmail)),
        "{taken:?}"
    );
    assert!(store.find_invitation(&second).await.unwrap().is_some());

    // Deleting the account revokes it: a pending link must not bring the account back.
    let holder = store
        .find_by_email(&email("inv@example.com"))
        .await
        .unwrap()
        .expect("the account");
    assert!(store.delete_user(holder.id).await.unwrap());
    assert!(store.find_invitation(&second).await.unwrap().is_none());
    let after = store
        .accept_invitation(&second, new_user("inv@example.com"))
        .await;
    assert!(after.unwrap().is_none(), "revoked with the account");
}

/// `purge_invitations` deletes what expired more than `INVITATION_RETENTION` ago, used or
/// not, and keeps what is pending or expired recently.
async fn invitations_are_purged_a_month_after_they_stop_working(db: &TestDb) {
    let store = open(db).await;
    let days = TimeDelta::days;
    for (address, ttl) in [
        ("old@example.com", days(-31)),
        ("recent@example.com", days(-29)),
        ("pending@example.com", days(7)),
    ] {
        store
            .create_invitation(invitation(address, &token_hash(), &[], ttl))
            .await
            .unwrap();
    }
    assert_eq!(store.purge_invitations().await.unwrap(), 1);
    let mut left: Vec<String> = store
        .list_invitations()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.email.to_string())
        .collect();
    left.sort();
    assert_eq!(left, ["pending@example.com", "recent@example.com"]);
    assert_eq!(store.purge_invitations().await.unwrap(), 0);
}

async fn invitations_expire_are_revoked_and_replaced(db: &TestDb) {
    let store = open(db).await;
    let expired = token_hash();
    store
        .create_invitation(invitation(
            "old@example.com",
            &expired,
            &[],
            TimeDelta::seconds(-1),
        ))
        .await
        .unwrap();
    assert!(store.find_invitation(&expired).await.unwrap().is_none());
    let used = store
        .accept_invitation(&expired, new_user("old@example.com"))
        .await;
    assert!(used.unwrap().is_none(), "expired");

    let (first, second) = (token_hash(), token_hash());
    for hash in [&first, &second] {
        store
            .create_invitation(invitation("new@example.com", hash, &[], TimeDelta::days(1)))
            .await
            .unwrap();
    }
    assert!(
        store.find_invitation(&first).await.unwrap().is_none(),
        "replaced"
    );
    assert!(store.find_invitation(&second).await.unwrap().is_some());
    assert_eq!(
        store
            .revoke_invitations(&email("new@example.com"))
            .await
            .unwrap(),
        1
    );
    let revoked = store
        .accept_invitation(&second, new_user("new@example.com"))
        .await;
    assert!(revoked.unwrap().is_none(), "revoked");
    let states: Vec<_> = store
        .list_invitations()
        .await
        .unwrap()
        .iter()
        .map(|i| i.state(Utc::now()))
        .collect();
    assert_eq!(
        states,
        [
            InvitationState::Revoked,
            InvitationState::Revoked,
            InvitationState::Expired
        ]
    );
    assert!(store.list_users().await.unwrap().is_empty());
}
